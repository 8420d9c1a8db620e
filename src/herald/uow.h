/* herald/uow.h — the unit of work: one business operation, one transaction.
 *
 * A use case ("complete order 1001") changes one aggregate, and the handlers of the events
 * it raises change more (an invoice, an outbox row). Either all of it is stored or none of
 * it: an order marked completed without its invoice is a bug no retry can find. The unit of
 * work is the object that makes that true:
 *
 *     hd_uow_begin(store, dispatcher, &uow, &err)     opens the store transaction
 *     ... load/create aggregates, call their functions, write their rows with
 *         hd_store_exec(hd_uow_store(uow), ...) ...
 *     hd_uow_track(uow, &order->base)                 "collect this aggregate's events"
 *     hd_uow_commit(uow, &err)                        dispatch, then commit -- or roll back
 *
 * hd_uow_commit takes the pending events of every tracked aggregate and dispatches them,
 * in the order raised, aggregates in the order tracked. Handlers run inside the same
 * transaction; they may track more aggregates and raise more events, which are dispatched
 * in the next round, until a round finds none. If a handler fails, or the rounds exceed
 * HD_UOW_MAX_ROUNDS (handlers that raise events forever), or the commit itself fails, the
 * transaction is rolled back: nothing of the unit is kept, and the failure's code and
 * reason are returned.
 *
 * Every hd_uow_begin is paired with exactly one hd_uow_commit or hd_uow_rollback; both end
 * and free the unit of work whatever they return. Aggregates are borrowed: keep them alive
 * until then. After a rollback their in-memory state is stale: load them again.
 *
 * The unit of work is also the scope of per-operation objects (the "request scope" of a
 * dependency-injection container): hd_uow_attach keeps an object until the unit ends, in
 * the unit's hd_tx_scope (herald/scope.h; hd_uow_scope gives it). The dispatcher keeps the
 * handlers made by factories there.
 *
 * A unit of work belongs to one thread. Ownership follows jansson: "new" = the caller owns
 * the result and frees it; "borrowed" = valid while its owner lives and is not modified;
 * "stolen" = the callee takes ownership, also when it fails.
 */
#ifndef HERALD_UOW_H
#define HERALD_UOW_H

#include <stddef.h>

#include "herald/aggregate.h"
#include "herald/error.h"
#include "herald/scope.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_uow hd_uow;
/* The dispatcher is only passed along here: include herald/dispatcher.h to make and fill
 * one. Neither header includes the other; what both need is herald/scope.h. */
typedef struct hd_dispatcher hd_dispatcher;

/* Handler cascades deeper than this are taken for a loop (A raises for B, B for A...). */
#define HD_UOW_MAX_ROUNDS 16

/* Begin a unit of work: opens a transaction on store. store and dispatcher are borrowed and
 * must outlive the unit; dispatcher may be NULL (events are then collected and dropped).
 * On success *out is new: end it with hd_uow_commit or hd_uow_rollback.
 * Returns 0, HD_EINVAL, HD_ENOMEM, or hd_store_begin's code (HD_ESTATE when the store
 * already has a transaction open, HD_EBUSY...). */
int hd_uow_begin(hd_store *store, hd_dispatcher *dispatcher, hd_uow **out, hd_error *err);

/* The unit's store (borrowed), inside its open transaction: write here to be atomic. */
hd_store *hd_uow_store(hd_uow *uow);

/* The unit's dispatcher (borrowed; may be NULL). */
hd_dispatcher *hd_uow_dispatcher(hd_uow *uow);

/* Collect agg's events (now and later ones) in this unit. agg is borrowed: it must stay
 * alive until the unit ends. Tracking the same aggregate twice is harmless. Returns 0,
 * HD_EINVAL, HD_ENOMEM. */
int hd_uow_track(hd_uow *uow, hd_aggregate *agg);

/* Dispatch the pending events now (rounds as in commit) without committing: for a use case
 * that must see the handlers' effects before it goes on. On failure the unit stays open and
 * must be rolled back. Returns the number of events dispatched (>= 0) or the failure. */
int hd_uow_flush(hd_uow *uow, hd_error *err);

/* Dispatch what is pending (see hd_uow_flush), then commit. On any failure the
 * transaction is rolled back and the code returned with its reason in err. Always ends and
 * frees the unit (uow may be NULL: HD_EINVAL). Returns 0 or the failure.
 * Exception: called from inside one of the unit's own handlers, commit, rollback and flush
 * return HD_ESTATE and change nothing (the unit is in use further up the stack). */
int hd_uow_commit(hd_uow *uow, hd_error *err);

/* Roll back: nothing of the unit is kept, and pending events of tracked aggregates are
 * discarded (they did not happen). Always ends and frees the unit. NULL is fine (returns
 * HD_EINVAL). Returns 0 or the store's rollback failure. */
int hd_uow_rollback(hd_uow *uow, hd_error *err);

/* Keep obj until the unit ends, under key (any unique address, e.g. of a static or of a
 * registration). obj is stolen: destroy(obj) runs when the unit ends (after its
 * transaction ended; objects in reverse order of attachment), or at once when attaching
 * fails. destroy may be NULL. Returns 0, HD_EINVAL, HD_EEXIST (key taken), HD_ENOMEM.
 * Same as hd_tx_scope_attach(hd_uow_scope(uow), ...). */
int hd_uow_attach(hd_uow *uow, const void *key, void *obj, void (*destroy)(void *obj));

/* The object attached under key (borrowed), or NULL. */
void *hd_uow_attached(hd_uow *uow, const void *key);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_UOW_H */
