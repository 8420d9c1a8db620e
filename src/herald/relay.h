/* herald/relay.h — the outbox relay: from the outbox table to RabbitMQ, at least once.
 *
 * The outbox (outbox.h) makes "business change + event" one database transaction. Something
 * must then carry the events to the broker, and that something is the relay. One CYCLE of
 * the relay, in this order and for a reason each:
 *
 *   1. CLAIM a batch of due rows, in seq order, with a lease (hd_outbox_claim). The claim
 *      commits at once: no database transaction is ever open while the relay talks to the
 *      broker, so a slow broker never holds row locks or SQLite's write lock.
 *   2. PUBLISH each row as it was stored (the CloudEvents JSON), persistent and mandatory,
 *      on a channel in confirm mode, with a WINDOW of unconfirmed messages in flight
 *      (publisher.h): content-type application/cloudevents+json, message-id = the event id
 *      (what consumers deduplicate on), correlation-id, type = the event type, and the
 *      headers traceparent / causationid when the event has them.
 *   3. WAIT for the fate of every message of the batch: CONFIRMED, NACKED, RETURNED, LOST.
 *   4. MARK, in ONE transaction (one fsync for the whole batch): the confirmed rows
 *      dispatched; the nacked and returned ones failed (hd_outbox_mark_failed: an attempt
 *      counted, the reason kept, the next attempt after a backoff with full jitter, and the
 *      row PARKED after max_attempts); the lost ones released (below).
 *
 * Marking comes last, after the broker's confirm, and never before: a relay that dies
 * between 2 and 4 leaves the rows leased; when the lease runs out another cycle (this
 * relay restarted, or another one) publishes them again. So a crash costs DUPLICATES,
 * never a lost event: at-least-once delivery. Consumers absorb the duplicates with the
 * inbox (inbox.h), keyed by the message id, which never changes on republish.
 *
 * Two batches in flight (hd_relay_run). Done one after the other, the four steps leave the
 * broker idle during claim and mark, and the window of unconfirmed messages drains to zero
 * at the end of every batch. So hd_relay_run overlaps two cycles: it claims and publishes
 * batch k+1 while the broker still confirms batch k, then waits for the last fates of batch
 * k (with a window of one batch they are in once batch k+1 has been handed to the
 * publisher) and marks batch k, in its own transaction, while the broker works on batch
 * k+1. Nothing else changes: a row is marked only after its own fate, no transaction is
 * open while the relay waits, and a dead connection releases the rows of both batches.
 * Three rules keep it that way:
 *   - per-aggregate order: the claim of batch k+1 skips every aggregate with a row leased
 *     in batch k (the claim's own rule: an earlier row of the aggregate is leased), so the
 *     later events of an aggregate wait until its earlier one is marked;
 *   - the lease: batch k is marked after batch k+1 was claimed and published, so the relay
 *     claims beside batch k only while batch k has more than half its lease left (and more
 *     than a confirm timeout); otherwise it finishes batch k first;
 *   - only after a full batch: a short batch means the outbox is nearly empty, and the
 *     relay finishes it before it claims again or waits for work.
 * A crash can now leave two batches leased, so it may cost up to two batches of duplicates.
 * hd_relay_run_once is one whole cycle, steps 1 to 4, as before; options.no_pipeline makes
 * hd_relay_run run such cycles one after the other.
 *
 * Fates, and what the relay does with each:
 *   CONFIRMED  routed and stored by the broker          -> dispatched
 *   RETURNED   no queue bound for its routing key       -> failed (retried with backoff,
 *              (usually a configuration error)              parked after max_attempts)
 *   NACKED     the broker refused it (a full queue...)  -> failed, likewise
 *   LOST       the connection died before the confirm   -> released: claimable again at
 *              (it may or may not be in the queue)          once, no attempt counted; the
 *                                                          relay reconnects with backoff
 *              the broker closed the channel while the  -> failed: the broker refused the
 *              connection stayed up (404: no exchange)      publish, like a nack
 * A broker that is down is not the events' fault: nothing is claimed while the connection
 * is closed, no attempt is counted, and the relay catches up when the broker is back.
 *
 * Where each event goes. By default the exchange is the event's TOPIC: the type up to its
 * first '.' ("users.user_registered" -> exchange "users"; a type without a '.' is its own
 * topic), and the routing key is the whole type, so a consumer binds its queue to the
 * "users" exchange with "users.#" or "users.user_registered" (that is the bus of the
 * seeds: a topic is an exchange, event types are routing keys). The relay DECLARES each
 * topic exchange it uses (durable, type topic) once per connection: declaring is
 * idempotent, and a relay that starts before any consumer must not have its first events
 * refused with 404 NOT_FOUND. An exchange that exists with another type is refused (406)
 * and the events for it fail with that reason, visibly. Set options.exchange to publish
 * every event to one exchange, and options.no_declare when the topology is owned
 * elsewhere (then a missing exchange is a failure with last_error "404 NOT_FOUND ...").
 *
 * Ordering: within one relay, the rows of a batch are published in seq order on one
 * channel, and the claim never takes a row while an earlier row of its aggregate waits for
 * a retry or is leased (to another relay, or in this relay's batch still in flight): per
 * aggregate, consumers see events in the order they were written. Not across aggregates
 * (seq is insertion order, not commit order, on PostgreSQL), and not for a row that was
 * nacked or returned and retried (outbox.h, "Ordering").
 *
 * Several relays may share one outbox on PostgreSQL: claims use FOR UPDATE SKIP LOCKED and
 * leases, so each row goes to one relay at a time. Keep the lease well above the time of
 * two batches and the confirm timeout: a relay that marks after its lease ran out may have
 * been overtaken, and the overtaking relay publishes a duplicate (counted in
 * stats.lease_expired).
 *
 * Waking up (hd_relay_run): on PostgreSQL the relay LISTENs to the outbox's NOTIFY channel
 * and wakes when a transaction that appended rows commits; in one process it waits on an
 * hd_outbox_notifier (options.notifier); otherwise, and always as a fallback, it polls
 * every poll_ms. A full batch is followed by the next claim at once (beside it, see above);
 * the relay waits only after a claim, made with nothing else in flight, came back short.
 * A wake-up by poll_ms alone on SQLite first reads whether a row is due
 * (hd_outbox_has_due) and claims only then: a claim takes SQLite's one write lock even when
 * it finds nothing, and the service's own commits would wait for it every poll_ms.
 *
 * Handed rows (hd_relay_run, SQLite, with options.notifier; outbox.h, "handed rows"): while
 * its connection is open the relay offers a token of its own on the notifier, and the
 * writers of the notifier's stores append their rows already leased to it whenever the
 * aggregate has nothing pending. The relay then TAKES them (one read, hd_outbox_take_handed,
 * from the seq after the last it took) instead of claiming them (a write transaction that
 * reads back, leases and copies the rows). Claims still run, every other batch, for the rows
 * that were not handed (a retry come due, an aggregate's later event, rows written while the
 * offer was withdrawn, handed rows whose lease ran out), and first reads whether anything is
 * due. The offer is withdrawn while the broker is unreachable and when hd_relay_run returns;
 * rows handed just before stay leased and are taken after a reconnect, or claimed once their
 * lease runs out (after a stop: at the next start, up to a lease later). options.no_handoff
 * turns it off.
 *
 * Threads: a relay is used by one thread. Its store and its AMQP connection are borrowed
 * and belong to that thread for the relay's life: give the relay its own store handle
 * (store.h) and its own hd_amqp (the publisher reads every frame of its connection).
 * hd_relay_get_stats alone may be called from any thread (for a metrics endpoint).
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_RELAY_H
#define HERALD_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "herald/amqp.h"
#include "herald/error.h"
#include "herald/log.h"
#include "herald/outbox.h"
#include "herald/stop.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults, used where an option is 0. */
#define HD_RELAY_BATCH_DEFAULT               500
#define HD_RELAY_POLL_MS_DEFAULT             1000
#define HD_RELAY_MAX_ATTEMPTS_DEFAULT        10
#define HD_RELAY_BACKOFF_BASE_DEFAULT        1000                     /* ms */
#define HD_RELAY_BACKOFF_CAP_DEFAULT         (5 * 60 * 1000)          /* ms */
#define HD_RELAY_RETENTION_DEFAULT           (7LL * 24 * 3600 * 1000) /* ms: a week */
#define HD_RELAY_PURGE_EVERY_DEFAULT         60000                    /* ms */
#define HD_RELAY_SENSITIVE_RETENTION_DEFAULT (15LL * 60 * 1000)       /* ms: a quarter of an hour */
#define HD_RELAY_PROGRESS_DEFAULT            5000                     /* ms */
#define HD_RELAY_ID_MAX                      128

/* The publish-to-confirm latency of one message, in seconds: from the moment the relay
 * handed it to the publisher to the moment the relay read its confirm. It measures the
 * broker's confirm path (disk sync of a durable queue, a quorum queue's replication) plus
 * how long the relay took to read the confirm: with two batches in flight, confirms are
 * read while the next batch is claimed and published, so the latency includes that work.
 * Called on the relay's thread, inside hd_relay_run_once / hd_relay_run, once per message
 * and never for returned, nacked or lost ones: keep it short and do not call the relay
 * from it. An hd_histogram_observe (one uncontended lock) is fine. */
typedef void (*hd_relay_latency_fn)(void *ctx, double seconds);

/* Options of hd_relay_new. A zeroed struct (or NULL) means the defaults; strings are copied,
 * so the struct may live on the caller's stack. */
typedef struct hd_relay_options {
    size_t batch;                   /* rows per claim, 1..HD_OUTBOX_BATCH_MAX; 0 = 500 */
    size_t window;                  /* unconfirmed messages in flight; 0 = batch. A window
                                       smaller than the batch makes publish wait for confirms
                                       half-way through the batch */
    int poll_ms;                    /* hd_relay_run: longest sleep when idle; 0 = 1000 */
    int64_t lease_ms;               /* claim lease; 0 = HD_OUTBOX_LEASE_DEFAULT_MS (30 s) */
    int confirm_timeout_ms;         /* give up waiting for a confirm (then the connection is
                                       treated as dead and the rows released); 0 = lease / 3,
                                       at most 30000. Must be below the lease */
    int max_attempts;               /* failed attempts (returned/nacked) before a row is parked;
                                       0 = 10 */
    int64_t backoff_base_ms;        /* retry delay ceiling of the first failure; 0 = 1000 */
    int64_t backoff_cap_ms;         /* largest retry delay; 0 = 300000 (5 min) */
    const char *exchange;           /* NULL or "": each event to its topic exchange (the type
                                       up to the first '.'); else every event to this one */
    int no_declare;                 /* 1: never declare exchanges (the topology exists) */
    int no_mandatory;               /* 1: publish without the mandatory flag: an event no
                                       queue is bound for is dropped by the broker and counts
                                       as delivered (publish/subscribe with no subscriber
                                       yet); 0: it is returned, retried, then parked */
    const char *relay_id;           /* recorded in claimed_by and logs; NULL = "<host>-<pid>" */
    int64_t retention_ms;           /* hd_relay_run purges rows dispatched longer ago than
                                       this; 0 = a week; negative = never purge */
    int64_t sensitive_retention_ms; /* the same for rows appended with HD_OUTBOX_SENSITIVE
                                       (their payload is already scrubbed at dispatch): 0 =
                                       15 min, below the lifetime of any token they carried
                                       (users: reset 1 h, verification 24 h); negative = no
                                       separate purge, they follow retention_ms */
    int64_t purge_every_ms;         /* how often hd_relay_run purges; 0 = 60000 */
    int progress_ms;                /* hd_relay_run logs counts this often (only when something
                                       happened); 0 = 5000; negative = never */
    hd_outbox_notifier *notifier;   /* borrowed, may be NULL: an in-process wake-up the caller
                                       set on the writers' stores (hd_outbox_set_notifier);
                                       this relay must be its only poller */
    hd_logger *logger;              /* borrowed, may be NULL (then the relay logs nothing):
                                       reconnects, failures, parked rows, progress */
    int drain;                      /* 1: hd_relay_run returns once no row is pending (parked
                                       rows do not count): for batch jobs and tests */
    int no_pipeline;                /* 1: hd_relay_run finishes each batch before it claims the
                                       next (one batch in flight, like hd_relay_run_once) */
    int no_handoff;                 /* 1: never offer a token on the notifier: every row waits
                                       for a claim; 0: with a notifier on SQLite, hd_relay_run
                                       takes handed rows (below, "Handed rows") */
    hd_relay_latency_fn on_confirm; /* may be NULL: called once per CONFIRMED message with
                                       the seconds from its publish to its confirm (a
                                       metrics histogram, hd_histogram_observe) */
    void *on_confirm_ctx;           /* borrowed, handed to on_confirm untouched */
} hd_relay_options;

/* What a relay did: per cycle (hd_relay_run_once) or since it was created
 * (hd_relay_get_stats). A plain value. */
typedef struct hd_relay_stats {
    uint64_t cycles;        /* claims made */
    uint64_t batches;       /* claims that returned at least one row */
    uint64_t claimed;       /* rows claimed, or taken handed (below) */
    uint64_t handed;        /* of those, rows taken handed (hd_outbox_take_handed) */
    uint64_t published;     /* messages the broker accepted on the socket */
    uint64_t confirmed;     /* fate CONFIRMED: rows marked dispatched */
    uint64_t returned;      /* fate RETURNED (unroutable) */
    uint64_t nacked;        /* fate NACKED */
    uint64_t lost;          /* fate LOST (connection or channel died before the confirm) */
    uint64_t failed;        /* attempts recorded with hd_outbox_mark_failed */
    uint64_t parked;        /* of those, rows that reached max_attempts and were parked */
    uint64_t released;      /* rows given back unpublished or lost with the connection */
    uint64_t lease_expired; /* batches marked after their lease ran out (duplicates likely) */
    uint64_t reconnects;    /* successful broker reconnects in hd_relay_run */
    uint64_t purged;        /* dispatched rows deleted by retention */
    uint64_t errors;        /* cycles that failed (store errors, broker lost) */
    uint64_t confirm_ns;    /* publish-to-confirm time of the confirmed messages, summed
                               (ns; divide by confirmed for the mean; on_confirm has each) */
} hd_relay_stats;

typedef struct hd_relay hd_relay;

/* The options with every default filled in (out), after checking them: HD_EINVAL with
 * the reason when one is out of range (batch above HD_OUTBOX_BATCH_MAX, window above
 * 1,000,000, a negative time, confirm_timeout_ms not below the lease, a relay id or
 * exchange longer than allowed). in may be NULL. The strings of out are those of in
 * (borrowed), except relay_id, which is left NULL when in had none. */
int hd_relay_options_resolve(const hd_relay_options *in, hd_relay_options *out, hd_error *err);

/* The topic exchange of an event type: the type up to its first '.', or the whole type
 * when it has none ("users.user_registered" -> "users"). Writes it NUL-terminated into
 * out (cap bytes). Returns 0, or HD_EINVAL (NULL or empty type, a type starting with '.':
 * that would be the default exchange) or HD_ERANGE (the name does not fit in cap or is
 * longer than 255 bytes). Pure: no broker involved. */
int hd_relay_exchange_for(const char *type, char *out, size_t cap);

/* A new relay (free with hd_relay_free) draining the outbox of store into the broker of
 * amqp. store and amqp are borrowed: both must outlive the relay, and both are used only
 * by the relay's thread (see "Threads"). The broker connection may be closed when the
 * relay is created (hd_relay_run reconnects it). opts may be NULL. The outbox table must
 * exist (hd_outbox_migrate). Returns 0, or HD_EINVAL (see hd_relay_options_resolve),
 * HD_ENOMEM. *out is NULL on failure. */
int hd_relay_new(hd_store *store, hd_amqp *amqp, const hd_relay_options *opts, hd_relay **out,
                 hd_error *err);

/* Free r (NULL allowed). A relay is between cycles whenever this can be called (both
 * hd_relay_run_once and hd_relay_run return with nothing in flight); rows it claimed and
 * could not mark stay leased until their lease expires.
 * Does not close the store or the connection (they are borrowed). */
void hd_relay_free(hd_relay *r);

/* The relay's id (borrowed from r). */
const char *hd_relay_id(const hd_relay *r);

/* One cycle: claim, publish, wait for the confirms, mark (see the top of this file).
 * cycle (may be NULL) receives the counts of this cycle only; they are also added to the
 * relay's totals. Returns the number of rows claimed (>= 0; 0 = nothing was due), or:
 *   HD_ECLOSED   the broker connection is closed (nothing was claimed) or died during
 *                the cycle (the rows it did not confirm were released, the confirmed ones
 *                marked): hd_amqp_reconnect, then call again
 *   HD_EAMQP     the broker closed the publishing channel while the connection stayed up
 *                (a missing exchange with no_declare): the messages in flight were marked
 *                failed, the rest released; call again (the channel is reopened)
 *   HD_EINVAL    NULL relay
 *   the store's codes (HD_EBUSY, HD_ESTORE, HD_ECONNECT): the claim or the mark failed.
 *                When the mark failed, the rows stay leased and are published again after
 *                the lease: duplicates, never a loss
 * A cycle that published nothing because of a broker refusal of one event (returned,
 * nacked, exchange refused) still succeeds: that event was marked failed. */
int hd_relay_run_once(hd_relay *r, hd_relay_stats *cycle, hd_error *err);

/* Run cycles until stop (borrowed; NULL: forever) is requested, two batches in flight (see
 * "Two batches in flight"; options.no_pipeline: one): a full batch is followed by the next
 * at once; otherwise the relay waits for a wake-up (NOTIFY on PostgreSQL, options.notifier,
 * or poll_ms), in one poll(2) with the stop, so a stop ends that wait at once. A closed
 * broker connection is reconnected with capped exponential backoff (hd_amqp_reconnect) and
 * the relay catches up; a store error is logged and retried after a backoff (both backoffs
 * end at once on a stop); either way the batches in flight are finished (marked or
 * released) first. Dispatched rows older than the retention are purged every
 * purge_every_ms; parked rows are kept. The batches in flight when the stop comes are
 * finished (their rows marked) before returning; nothing new is claimed. With
 * options.drain it also returns once the outbox has no pending row (rows waiting for a
 * retry are waited for).
 * Returns 0 when stopped or drained, or a permanent failure: HD_EAUTH / HD_EURL from the broker,
 * HD_EINVAL. */
int hd_relay_run(hd_relay *r, const hd_stop *stop, hd_error *err);

/* Purge now: delete rows dispatched more than options.retention_ms ago, and sensitive rows
 * dispatched more than options.sensitive_retention_ms ago (parked and pending rows are never
 * deleted). *purged (may be NULL) receives the count. Returns 0 or the store's code; a
 * negative retention skips its purge (both negative: nothing is deleted). */
int hd_relay_purge(hd_relay *r, int64_t *purged, hd_error *err);

/* The totals since hd_relay_new, copied into *out. Thread-safe. */
void hd_relay_get_stats(const hd_relay *r, hd_relay_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_RELAY_H */
