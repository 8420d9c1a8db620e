/* dispatcher.c — event type -> handlers; see dispatcher.h. */
#include "herald/dispatcher.h"

#include "herald/scope.h"

#include <stdlib.h>
#include <string.h>

/* Each registration is its own allocation so that its address never changes: the unit of
 * work's scope keeps factory-made handlers under that address (hd_tx_scope_attach's key). */
typedef struct registration {
    char *type; /* "*" matches every event */
    hd_handler_factory factory;
    void *ctx;
} registration;

struct hd_dispatcher {
    registration **regs; /* in registration order */
    size_t count, cap;
};

hd_dispatcher *hd_dispatcher_new(void)
{
    return calloc(1, sizeof(hd_dispatcher));
}

void hd_dispatcher_free(hd_dispatcher *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->count; i++) {
        free(d->regs[i]->type);
        free(d->regs[i]);
    }
    free(d->regs);
    free(d);
}

int hd_dispatcher_register_factory(hd_dispatcher *d, const char *type,
                                   const hd_handler_factory *factory, void *ctx)
{
    if (d == NULL || type == NULL || *type == '\0' || factory == NULL || factory->handle == NULL ||
        (factory->destroy != NULL && factory->create == NULL))
        return HD_EINVAL;
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        registration **regs = realloc(d->regs, cap * sizeof *regs);
        if (regs == NULL)
            return HD_ENOMEM;
        d->regs = regs;
        d->cap = cap;
    }
    registration *r = calloc(1, sizeof *r);
    if (r == NULL || (r->type = strdup(type)) == NULL) {
        free(r);
        return HD_ENOMEM;
    }
    r->factory = *factory;
    r->ctx = ctx;
    d->regs[d->count++] = r;
    return HD_OK;
}

int hd_dispatcher_register(hd_dispatcher *d, const char *type, hd_handle_fn handle, void *ctx)
{
    hd_handler_factory plain = {NULL, handle, NULL};
    return hd_dispatcher_register_factory(d, type, &plain, ctx);
}

static int matches(const registration *r, const char *type)
{
    return strcmp(r->type, "*") == 0 || strcmp(r->type, type) == 0;
}

size_t hd_dispatcher_count(const hd_dispatcher *d, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; d != NULL && type != NULL && i < d->count; i++)
        n += matches(d->regs[i], type);
    return n;
}

/* The handler object for r: ctx for a plain handler; for a factory, the one made for this
 * unit of work (made now if needed). *temporary is set when the caller must destroy it
 * after use (no unit of work to keep it in). */
static int handler_for(registration *r, hd_uow *uow, void **handler, int *temporary, hd_error *err)
{
    *temporary = 0;
    if (r->factory.create == NULL) {
        *handler = r->ctx;
        return HD_OK;
    }
    hd_tx_scope *scope = hd_uow_scope(uow); /* NULL without a unit of work */
    if (scope != NULL && (*handler = hd_tx_scope_attached(scope, r)) != NULL)
        return HD_OK;
    void *made = NULL;
    int rc = r->factory.create(r->ctx, uow, &made, err);
    if (rc < 0)
        return rc;
    if (made == NULL)
        return hd_error_set(err, HD_EHANDLER, "the factory of a '%s' handler made no handler",
                            r->type);
    if (scope == NULL) {
        *temporary = 1;
    } else {
        rc = hd_tx_scope_attach(scope, r, made, r->factory.destroy); /* destroys made on failure */
        if (rc < 0)
            return hd_error_set(err, rc, "cannot keep a '%s' handler in the unit of work", r->type);
    }
    *handler = made;
    return HD_OK;
}

int hd_dispatcher_dispatch(hd_dispatcher *d, hd_uow *uow, const hd_event *event, hd_error *err)
{
    if (d == NULL || event == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_dispatcher_dispatch: d and event are required");
    const char *type = hd_event_type(event);
    size_t nth = 0;
    for (size_t i = 0; i < d->count; i++) {
        registration *r = d->regs[i];
        if (!matches(r, type))
            continue;
        nth++;
        /* Handlers always get an hd_error, so they need not check for NULL; an empty text
         * afterwards means the handler gave no reason, and we supply one. */
        hd_error why;
        hd_error_clear(&why);
        void *handler;
        int temporary;
        int rc = handler_for(r, uow, &handler, &temporary, &why);
        if (rc >= 0) {
            rc = r->factory.handle(handler, uow, event, &why);
            if (temporary && r->factory.destroy != NULL)
                r->factory.destroy(handler);
        }
        if (rc < 0) {
            if (why.text[0] == '\0')
                return hd_error_set(err, rc, "handler %zu of '%s' failed: %s", nth, type,
                                    hd_strerror(rc));
            return hd_error_set(err, rc, "%s", why.text);
        }
    }
    return HD_OK;
}
