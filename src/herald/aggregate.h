/* herald/aggregate.h — the aggregate root.
 *
 * An aggregate is a cluster of domain objects changed together under one set of rules (an
 * order and its items: "an empty order cannot be completed"). Its root is the only way in:
 * code outside calls the root's functions, the root checks the rules, changes its state and
 * records what happened as domain events. The root does not call the code that reacts to
 * those events (it does not even know it exists); it keeps them as *pending* until the unit
 * of work (uow.h) takes and dispatches them. That is what keeps the domain free of
 * invoices, emails and brokers.
 *
 * C has no classes, so "Order is an AggregateRoot" is written as "struct order begins with
 * an hd_aggregate":
 *
 *     struct order {
 *         hd_aggregate base;   // MUST be the first member
 *         int status;
 *         ...
 *     };
 *
 * C11 (6.7.2.1 §15) guarantees that a pointer to a struct, converted, points to its first
 * member and back. So `&order->base` (or `(hd_aggregate *)order`) can be handed to
 * herald, and a handler that knows the aggregate is an order can convert back with
 * `(struct order *)agg`. This is how libuv's handles and SQLite's VFS objects "inherit".
 *
 * The version counts the events the aggregate has ever raised: a repository stores it with
 * the row and passes it back to hd_aggregate_init when it loads the aggregate, and an UPDATE
 * ... WHERE version = $old can then detect a concurrent change (optimistic locking).
 *
 * hd_aggregate is a plain struct so that it can be embedded; its fields are visible for that
 * reason only: use the functions below to read and change them. An aggregate belongs to one
 * thread at a time.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_AGGREGATE_H
#define HERALD_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_aggregate {
    char *type;            /* "order"; owned copy */
    char *id;              /* owned copy */
    int64_t version;       /* events ever raised, including the pending ones */
    hd_event_list pending; /* raised, not yet taken */
} hd_aggregate;

/* Initialise an aggregate root in place (usually the `base` member of your struct).
 * type is copied and must be non-empty. id is copied; NULL gives a fresh UUID v4 (a new
 * aggregate). version is the version loaded from storage, 0 for a new aggregate. Returns 0,
 * HD_EINVAL (NULL agg, empty type or id, negative version) or HD_ENOMEM. On failure agg is
 * left zeroed, and hd_aggregate_release on it is harmless. */
int hd_aggregate_init(hd_aggregate *agg, const char *type, const char *id, int64_t version);

/* Free what the root owns: its strings and any pending events (never dispatched: an
 * aggregate released before its unit of work committed loses them, by design). The memory
 * of agg itself belongs to the caller. NULL is fine. */
void hd_aggregate_release(hd_aggregate *agg);

/* Getters: borrowed; NULL agg gives NULL / 0. */
const char *hd_aggregate_type(const hd_aggregate *agg);
const char *hd_aggregate_id(const hd_aggregate *agg);
int64_t hd_aggregate_version(const hd_aggregate *agg);
size_t hd_aggregate_pending(const hd_aggregate *agg); /* number of pending events */

/* Record that something happened: event is stolen (also on failure). The version goes up
 * by one and the event is stamped with the aggregate's type, id and new version, then kept
 * as pending. Call it from the aggregate's own functions, after the rules were checked and
 * the state changed: an event says "it happened", never "please do it".
 * Returns 0, HD_EINVAL (NULL agg or event; a NULL event is what a failed hd_event_new
 * returns, so `hd_aggregate_raise(agg, hd_event_new(...))` needs one check), HD_ENOMEM.
 * On failure the version is unchanged. */
int hd_aggregate_raise(hd_aggregate *agg, hd_event *event);

/* Hand the pending events over: they are appended to out, in the order raised, and the
 * aggregate has none pending afterwards. The caller owns them now (new): release the list
 * with hd_event_list_release. The version is unchanged (the events did happen).
 * Returns the number of events moved (>= 0), HD_EINVAL, or HD_ENOMEM (nothing moved). */
int hd_aggregate_take_events(hd_aggregate *agg, hd_event_list *out);

/* Free the pending events without handing them over (the unit of work does this when it
 * rolls back: what was raised did not happen after all). The version is unchanged: an
 * aggregate whose unit of work rolled back is stale and should be loaded again. */
void hd_aggregate_discard_events(hd_aggregate *agg);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_AGGREGATE_H */
