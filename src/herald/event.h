/* herald/event.h — domain events.
 *
 * A domain event is a fact: something of interest that already happened inside one service
 * ("order.completed"). An aggregate raises it; handlers in the same service react to it in
 * the same transaction (see dispatcher.h and uow.h). It never leaves the service as is: an
 * integration event (envelope.h) is the contract other services see.
 *
 * An event carries:
 *   id           a UUID v4, written once, so that anything derived from the event (an
 *                outbox row, an integration event) can point back to it
 *   type         a dotted name, "order.completed"; the dispatcher routes on it
 *   occurred_at  wall-clock time of creation, epoch milliseconds and RFC 3339 UTC
 *   aggregate    type, id and version of the aggregate that raised it (stamped by
 *                hd_aggregate_raise; empty for an event created outside an aggregate)
 *   payload      a JSON object (jansson) with the facts the handlers need: ids and values,
 *                not pointers into live objects, so that the event stays true after the
 *                aggregate changes or is freed
 *
 * Events are immutable once raised: the getters return borrowed data, and the payload must
 * not be modified through the pointer hd_event_payload returns. An event has exactly one
 * owner at a time (no reference count): the aggregate while it is pending, then whoever took
 * it. A handler that wants to keep an event beyond its call makes a copy (hd_event_copy).
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_EVENT_H
#define HERALD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "herald/clock.h"
#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_event hd_event;

/* Create an event of `type` (copied; non-empty) with a fresh UUID v4 and the current time.
 * payload is stolen, also on failure, and must be a JSON object (use json_object() for "no
 * facts"). Returns a new event, or NULL when type is NULL or empty, payload is NULL or not
 * an object, or memory runs out.
 *
 * Because NULL payloads are refused, a failed json_pack() inside the call is caught:
 *     hd_event *ev = hd_event_new("order.completed", json_pack("{s:s}", "order_id", id));
 * and because hd_aggregate_raise() refuses a NULL event, one check covers the chain. */
hd_event *hd_event_new(const char *type, json_t *payload);

/* A deep copy (same id, time, aggregate and an equal payload). Returns new, NULL when event
 * is NULL or memory runs out. */
hd_event *hd_event_copy(const hd_event *event);

/* Free the event and its payload. NULL is fine. */
void hd_event_free(hd_event *event);

/* Getters: borrowed, valid while the event lives. NULL event gives NULL / 0. */
const char *hd_event_id(const hd_event *event); /* UUID, 36 characters */
const char *hd_event_type(const hd_event *event);
int64_t hd_event_occurred_at_ms(const hd_event *event);  /* epoch milliseconds */
const char *hd_event_occurred_at(const hd_event *event); /* RFC 3339 UTC, ms precision */
json_t *hd_event_payload(const hd_event *event);         /* an object; do not modify */

/* The aggregate that raised the event: NULL / NULL / 0 until hd_event_set_aggregate (which
 * hd_aggregate_raise calls) has run. The version is the aggregate's version *after* this
 * event, so the events of one aggregate are numbered 1, 2, 3... */
const char *hd_event_aggregate_type(const hd_event *event);
const char *hd_event_aggregate_id(const hd_event *event);
int64_t hd_event_aggregate_version(const hd_event *event);

/* Stamp the aggregate's identity on the event (type and id copied). Returns 0, HD_EINVAL
 * for NULL arguments, HD_ENOMEM. hd_aggregate_raise calls it; call it yourself only for
 * events you build outside an aggregate. */
int hd_event_set_aggregate(hd_event *event, const char *type, const char *id, int64_t version);

/* The event as one JSON object, for logs, tests and the outbox:
 *     {"id":"...","type":"order.completed","occurred_at":"2026-...Z",
 *      "aggregate_type":"order","aggregate_id":"1001","aggregate_version":1,
 *      "payload":{...}}
 * aggregate_* are null for an event outside an aggregate. Returns a new reference, NULL on
 * NULL event or out of memory. */
json_t *hd_event_to_json(const hd_event *event);

/* ---- a list of events ------------------------------------------------------------------
 * A growable array that OWNS its events. It is a plain struct so it can live on the stack
 * or inside another struct: zero-initialise it (`hd_event_list l = {0};`) or call
 * hd_event_list_init, and always end with hd_event_list_release. Read it directly:
 *     for (size_t i = 0; i < l.count; i++) use(l.items[i]);   (items are borrowed) */
typedef struct hd_event_list {
    hd_event **items;
    size_t count;
    size_t cap;
} hd_event_list;

void hd_event_list_init(hd_event_list *list);

/* Append event (stolen, also on failure: freed then). Returns 0, HD_EINVAL for a NULL list
 * or event, HD_ENOMEM. */
int hd_event_list_push(hd_event_list *list, hd_event *event);

/* Move every event of src to the end of dst, in order; src is left empty (and still
 * usable). Returns 0, HD_EINVAL, or HD_ENOMEM (then nothing moved). */
int hd_event_list_splice(hd_event_list *dst, hd_event_list *src);

/* Free every event and the array; the list is empty (and reusable) afterwards. */
void hd_event_list_release(hd_event_list *list);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_EVENT_H */
