/* uow.c — the unit of work; see uow.h. */
#include "herald/uow.h"

#include "herald/dispatcher.h"
#include "herald/scope.h"

#include <stdlib.h>
#include <string.h>

struct hd_uow {
    hd_store *store;           /* borrowed; its transaction is ours */
    hd_dispatcher *dispatcher; /* borrowed; may be NULL */
    hd_aggregate **tracked;    /* borrowed, in tracking order */
    size_t ntracked, captracked;
    hd_tx_scope *scope; /* owned: what lives as long as the unit (hd_uow_attach) */
    int dispatching;    /* inside a handler: the unit must not end under its feet */
};

/* New capacity for an array that is full: doubling keeps appends O(1) amortised. */
static size_t next_cap(size_t cap)
{
    return cap ? cap * 2 : 4;
}

int hd_uow_begin(hd_store *store, hd_dispatcher *dispatcher, hd_uow **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_uow_begin: store and out are required");
    hd_uow *uow = calloc(1, sizeof *uow);
    if (uow == NULL || (uow->scope = hd_tx_scope_new()) == NULL) {
        free(uow);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    int rc = hd_store_begin(store, err);
    if (rc < 0) {
        hd_tx_scope_free(uow->scope);
        free(uow);
        return rc;
    }
    uow->store = store;
    uow->dispatcher = dispatcher;
    *out = uow;
    return HD_OK;
}

hd_store *hd_uow_store(hd_uow *uow)
{
    return uow ? uow->store : NULL;
}

hd_dispatcher *hd_uow_dispatcher(hd_uow *uow)
{
    return uow ? uow->dispatcher : NULL;
}

hd_tx_scope *hd_uow_scope(hd_uow *uow)
{
    return uow ? uow->scope : NULL;
}

int hd_uow_track(hd_uow *uow, hd_aggregate *agg)
{
    if (uow == NULL || agg == NULL)
        return HD_EINVAL;
    for (size_t i = 0; i < uow->ntracked; i++)
        if (uow->tracked[i] == agg)
            return HD_OK;
    if (uow->ntracked == uow->captracked) {
        size_t cap = next_cap(uow->captracked);
        hd_aggregate **p = realloc(uow->tracked, cap * sizeof *p);
        if (p == NULL)
            return HD_ENOMEM;
        uow->tracked = p;
        uow->captracked = cap;
    }
    uow->tracked[uow->ntracked++] = agg;
    return HD_OK;
}

/* One round: take every tracked aggregate's pending events, then dispatch them. Taking
 * all before dispatching any means events raised by handlers wait for the next round, so
 * each round is "the consequences of the previous one" -- easy to reason about and to
 * bound. Returns the number dispatched (0: nothing was pending) or a failure. */
static int dispatch_round(hd_uow *uow, hd_event_list *batch, hd_error *err)
{
    for (size_t i = 0; i < uow->ntracked; i++)
        if (hd_aggregate_take_events(uow->tracked[i], batch) < 0)
            return hd_error_set(err, HD_ENOMEM, "out of memory collecting events");
    if (uow->dispatcher == NULL)
        return (int)batch->count; /* nobody listens: the events are dropped */
    for (size_t i = 0; i < batch->count; i++) {
        int rc = hd_dispatcher_dispatch(uow->dispatcher, uow, batch->items[i], err);
        if (rc < 0)
            return rc;
    }
    return (int)batch->count;
}

int hd_uow_flush(hd_uow *uow, hd_error *err)
{
    if (uow == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_uow_flush: uow is NULL");
    if (uow->dispatching)
        return hd_error_set(err, HD_ESTATE, "a handler cannot flush its own unit of work");
    int total = 0;
    for (int round = 0;; round++) {
        hd_event_list batch = {0};
        uow->dispatching = 1;
        int rc;
        if (round == HD_UOW_MAX_ROUNDS) {
            /* Events still pending after the last allowed round: it would never end. */
            rc = 0;
            for (size_t i = 0; i < uow->ntracked && rc == 0; i++)
                if (hd_aggregate_pending(uow->tracked[i]) > 0)
                    rc = hd_error_set(err, HD_ERANGE,
                                      "handlers still raise events after %d rounds (does "
                                      "an event cause itself?)",
                                      HD_UOW_MAX_ROUNDS);
        } else {
            rc = dispatch_round(uow, &batch, err);
        }
        uow->dispatching = 0;
        hd_event_list_release(&batch);
        if (rc <= 0)
            return rc < 0 ? rc : total;
        total += rc;
    }
}

/* Free the unit: its scope destroys attached objects last-in first-out, as a stack unwinds. */
static void end(hd_uow *uow)
{
    hd_tx_scope_free(uow->scope);
    free(uow->tracked);
    free(uow);
}

static void discard_pending(hd_uow *uow)
{
    for (size_t i = 0; i < uow->ntracked; i++)
        hd_aggregate_discard_events(uow->tracked[i]);
}

int hd_uow_commit(hd_uow *uow, hd_error *err)
{
    if (uow == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_uow_commit: uow is NULL");
    if (uow->dispatching)
        return hd_error_set(err, HD_ESTATE, "a handler cannot commit its own unit of work");
    int rc = hd_uow_flush(uow, err);
    if (rc >= 0) {
        rc = hd_store_commit(uow->store, err); /* rolls back by itself when it fails */
    } else {
        discard_pending(uow);
        hd_store_rollback(uow->store, NULL); /* keep the handler's reason in err */
    }
    end(uow);
    return rc < 0 ? rc : HD_OK;
}

int hd_uow_rollback(hd_uow *uow, hd_error *err)
{
    if (uow == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_uow_rollback: uow is NULL");
    if (uow->dispatching)
        return hd_error_set(err, HD_ESTATE, "a handler cannot roll back its own unit of work");
    discard_pending(uow);
    int rc = hd_store_rollback(uow->store, err);
    end(uow);
    return rc < 0 ? rc : HD_OK;
}

int hd_uow_attach(hd_uow *uow, const void *key, void *obj, void (*destroy)(void *obj))
{
    if (uow == NULL) {
        if (destroy != NULL)
            destroy(obj); /* stolen, also on failure */
        return HD_EINVAL;
    }
    return hd_tx_scope_attach(uow->scope, key, obj, destroy);
}

void *hd_uow_attached(hd_uow *uow, const void *key)
{
    return hd_tx_scope_attached(hd_uow_scope(uow), key);
}
