/* herald/dispatcher.h — who reacts to which domain event.
 *
 * The dispatcher is a registry: event type -> handlers, in registration order. It lets an
 * aggregate say "order.completed" without knowing that an invoice, an email or an outbox row
 * follows: those are handlers, registered once at start-up, and adding one touches no
 * domain code.
 *
 * A handler is a function and a context:
 *
 *     static int create_invoice(void *handler, hd_uow *uow, const hd_event *ev,
 *                               hd_error *err);
 *     hd_dispatcher_register(d, "order.completed", create_invoice, &numbering);
 *
 * The function gets the context back as `handler`, the unit of work (hd_uow_store(uow) is
 * the open transaction: what the handler writes commits or rolls back with the business
 * change) and the event (borrowed: valid during the call; hd_event_copy it to keep it).
 * It returns 0, or a negative HD_E* code with a reason in err; the first failure stops the
 * dispatch and the unit of work rolls everything back.
 *
 * Some handlers need state of their own for one unit of work: a repository bound to its
 * transaction, a cache, a counter. The seed's DomainEventHandlerFactory creates a fresh
 * handler object per request for that; here an hd_handler_factory does the same:
 *
 *     create(ctx, uow, &handler, err)   once per unit of work, the first time the handler
 *                                       is needed; ctx is the registration's context
 *     handle(handler, uow, event, err)  for each matching event of that unit of work
 *     destroy(handler)                  when the unit of work ends (commit or rollback)
 *
 * The handlers made live in the unit's transaction scope (herald/scope.h), next to what
 * hd_uow_attach keeps.
 *
 * hd_dispatcher_register is simply a factory without create/destroy, whose handler is ctx.
 *
 * Type "*" registers a handler for every event (auditing, logging, an outbox of all
 * events). Handlers for "*" run in registration order together with the others.
 *
 * Register everything before the first dispatch. After that the dispatcher is only read,
 * so one dispatcher may serve several threads, each with its own units of work.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_DISPATCHER_H
#define HERALD_DISPATCHER_H

#include <stddef.h>

#include "herald/error.h"
#include "herald/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_dispatcher hd_dispatcher;
/* The unit of work (uow.h) is only passed on to handlers here; the one thing the dispatcher
 * needs of it, the scope that keeps factory-made handlers, is herald/scope.h's. */
typedef struct hd_uow hd_uow;

/* Handle one event. handler: the registration's ctx, or what the factory created. uow may
 * be NULL when the dispatcher is used without a unit of work (tests). Return 0 or a
 * negative code, with the reason in err (never NULL here). */
typedef int (*hd_handle_fn)(void *handler, hd_uow *uow, const hd_event *event, hd_error *err);

typedef struct hd_handler_factory {
    /* Make the handler for one unit of work: set *handler (non-NULL) and return 0, or
     * return a negative code with err filled (the dispatch fails with it). */
    int (*create)(void *ctx, hd_uow *uow, void **handler, hd_error *err);
    hd_handle_fn handle; /* required */
    /* Free what create made; may be NULL. */
    void (*destroy)(void *handler);
} hd_handler_factory;

/* A new, empty dispatcher, or NULL when out of memory. */
hd_dispatcher *hd_dispatcher_new(void);

/* Free the dispatcher and its registrations (contexts are borrowed: not freed). NULL is
 * fine. Every unit of work using it must have ended. */
void hd_dispatcher_free(hd_dispatcher *d);

/* Run handle(ctx, uow, event, err) for every event of `type` ("*" for all). type is copied;
 * ctx is borrowed and must outlive the dispatcher. Returns 0, HD_EINVAL, HD_ENOMEM. */
int hd_dispatcher_register(hd_dispatcher *d, const char *type, hd_handle_fn handle, void *ctx);

/* Same with a factory (see above). factory is copied; ctx is borrowed. Returns 0,
 * HD_EINVAL (NULL argument, no handle, or a destroy without a create: it would free ctx),
 * HD_ENOMEM. */
int hd_dispatcher_register_factory(hd_dispatcher *d, const char *type,
                                   const hd_handler_factory *factory, void *ctx);

/* How many handlers an event of `type` would run (its own and "*"). */
size_t hd_dispatcher_count(const hd_dispatcher *d, const char *type);

/* Run the handlers of event's type and the "*" handlers, in registration order. The first
 * failure stops the run and its code is returned, with the handler's reason in err (or
 * "handler N of <type> failed" when it gave none). A handler made by a factory is created
 * on its first use in uow and kept until the unit of work ends; with uow NULL it is created
 * and destroyed around this one call. Returns 0 when every handler succeeded (also when
 * there are none: an event nobody listens to is not an error), HD_EINVAL, or the failure.
 * The unit of work calls this for you; call it yourself in tests. */
int hd_dispatcher_dispatch(hd_dispatcher *d, hd_uow *uow, const hd_event *event, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_DISPATCHER_H */
