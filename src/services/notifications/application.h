/* notifications/application.h — the use cases of the notifications service.
 *
 * A users event becomes an e-mail in three steps, and the order is the whole point:
 *
 *   1. RECORD, in ONE transaction: the inbox row (hd_inbox_accept: a duplicate delivery stops
 *      here and is acked), the user's preferences (a type they switched off is recorded as
 *      skipped), the rendered template (a missing variable REJECTs the message to the
 *      dead-letter queue with the reason), and the notification, PENDING, claimed by this
 *      worker for a lease. COMMIT. The broker's message may be acked from now on: the
 *      database holds the intent, and the message is no longer needed to keep it.
 *   2. SEND, outside any transaction (sender.h says why: a transaction must never wait on a
 *      mail server, and a mail cannot be rolled back).
 *   3. RECORD THE OUTCOME, in a second transaction: sent (and NotificationSent ->
 *      notifications.notification_sent into the outbox), or a failed attempt (attempts + 1,
 *      last_error, the next attempt due after an exponential backoff with full jitter), or,
 *      after the last allowed attempt, failed (and notifications.notification_failed).
 *
 * Group commit. With the consumer's batch mode (consumer.h), a window of deliveries shares
 * step 1 and step 3: one transaction (one fsync) for the inbox rows and notifications of up
 * to a prefetch of messages, one for their outcomes, then one multiple ack. When anything in
 * the window cannot be recorded (a poison message, a database error), the window is rolled
 * back and the consumer hands the messages over one by one (notif_handle_delivery), so only
 * the culprit is rejected or retried.
 *
 * The sweeper (notif_sweep) sends what step 2 did not: retries whose backoff has passed,
 * notifications requested through the API, and — the crash case — notifications committed
 * in step 1 by a process that died before step 3. Those keep their claim until the lease
 * runs out, then the sweeper claims them like any other due row. So no e-mail is lost to a
 * crash at any point:
 *
 *   crash before the commit of step 1   nothing recorded, message not acked: redelivered,
 *                                       and recorded then
 *   crash after it, before the ack      redelivered, the inbox says "duplicate": acked and
 *                                       skipped; the pending row is sent by the sweeper
 *   crash during or after step 2, before step 3's commit
 *                                       the row is still pending: the sweeper sends it
 *                                       AGAIN once the lease runs out. If the first send
 *                                       had reached the mail server, the user gets the
 *                                       mail twice (the same Message-ID, derived from the
 *                                       notification id, so mail clients may fold them).
 *
 * That last line is a choice: at-least-once. The alternative, marking "sent" before
 * sending, turns the same crash into a lost mail, and a lost verification or reset mail is
 * a locked-out user, while a duplicate one is a small annoyance. No protocol can give
 * exactly-once here: the SMTP server is not part of our transaction.
 *
 * users.user_deleted ERASES the user's preferences and notification history, pending
 * notifications included (a mail that was not sent yet is never sent): the service keeps
 * no personal data (addresses, subjects, links) of a user who no longer exists — the right
 * to erasure. The events already emitted carry ids only. A users event for the same user
 * that arrives after the deletion (a retry, out of order) creates a new record; the users
 * service emits nothing for a deleted user, so that needs a delayed retry of an older
 * event, and it is not guarded against.
 *
 * Threads: a notif_app is shared, read-only after notif_app_new (templates, registry,
 * dispatcher, settings) and its metrics are thread-safe. Everything that is per thread — a
 * store handle, a sender (the SMTP sender owns a libcurl handle), a backoff PRNG — is in a
 * notif_worker: one per thread (consumer, sweeper, HTTP), used by one thread at a time.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef NOTIFICATIONS_APPLICATION_H
#define NOTIFICATIONS_APPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "herald/backoff.h"
#include "herald/delivery.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/log.h"
#include "herald/metrics.h"
#include "herald/replica.h"
#include "herald/sender.h"
#include "herald/store.h"
#include "herald/template.h"

#include "domain.h"

/* Defaults of the settings below. */
#define NOTIF_MAX_ATTEMPTS_DEFAULT 5
#define NOTIF_BACKOFF_BASE_DEFAULT 1000   /* ms */
#define NOTIF_BACKOFF_CAP_DEFAULT  300000 /* ms: 5 minutes */
#define NOTIF_LEASE_DEFAULT        60000  /* ms */
#define NOTIF_ORDER_WAIT_DEFAULT   1000   /* ms */
#define NOTIF_DEFERRED_MAX         256    /* deferred event ids a worker remembers */
#define NOTIF_DEFERRED_ID_MAX      64     /* bytes of one, NUL included */
#define NOTIF_HISTORY_LIMIT_MAX    100
#define NOTIF_CURSOR_MAX           (20 + 1 + 36) /* "<ms>.<uuid>" */

typedef struct notif_settings {
    const char *mail_from;      /* From of every mail, and the domain of Message-IDs; required */
    const char *source;         /* CloudEvents source of emitted events; NULL = default */
    int max_attempts;           /* sends before a notification fails for good; 0 = default */
    int64_t backoff_base_ms;    /* ceiling of the first retry delay; 0 = default; < 0: none */
    int64_t backoff_cap_ms;     /* largest retry delay; 0 = default */
    int64_t lease_ms;           /* how long a sender holds a pending notification before the
                                   sweeper may take it; 0 = default. Must exceed the longest
                                   send (the SMTP timeout) by a margin, or a slow send races
                                   the sweeper and the mail goes out twice */
    int64_t order_wait_ms;      /* per-aggregate order (ingest.c): how long an instance waits
                                   for an event's predecessor ("previousid") to be processed
                                   by another instance before it defers the event to a retry
                                   tier; 0 = default; < 0: no order check */
    const char *link_base_urls; /* comma-separated prefixes that every link variable (a name
                                   ending in _link or _url) of a direct request must start
                                   with, each an http(s) URL with a path ("https://app.
                                   example.com/"); NULL or "": a direct request may carry
                                   no link at all */
} notif_settings;

#define NOTIF_LINK_BASES_MAX 8 /* prefixes in link_base_urls */

/* The service's metrics (handles borrowed from an hd_metrics). All may be NULL. */
typedef struct notif_metrics {
    hd_counter *consumed;       /* {event_type}: users events accepted (new) */
    hd_counter *duplicates;     /* deliveries skipped by the inbox */
    hd_counter *rejected;       /* {reason}: messages refused (to the dead-letter queue) */
    hd_counter *sent;           /* {type} */
    hd_counter *failed;         /* {type}: failed for good */
    hd_counter *skipped;        /* {type}: not sent because of the preferences */
    hd_counter *retries;        /* {type}: failed attempts that will be retried */
    hd_counter *erased;         /* users erased */
    hd_counter *order_waits;    /* {outcome}: events whose predecessor was not processed yet
                                   (ingest.c): "waited" for it, or "deferred" to a retry */
    hd_histogram *send_seconds; /* {sender}: time of one send */
} notif_metrics;

/* Register the families of notif_metrics in m (borrowed) and fill *out. Returns 0 or
 * HD_ENOMEM. */
int notif_metrics_register(hd_metrics *m, notif_metrics *out);

/* 0 when list is a usable link_base_urls (see notif_settings: comma-separated http(s)://
 * host/... prefixes, at most NOTIF_LINK_BASES_MAX), else HD_EINVAL with the reason; NULL and
 * "" are usable (no links). For checking a setting before the app exists. */
int notif_link_bases_check(const char *list, hd_error *err);

typedef struct notif_app notif_app;

/* A new application (free with notif_app_free). s is copied; templates (loaded once, at
 * startup) and lg are borrowed and must outlive the app; metrics (copied) may be NULL.
 * Returns 0, HD_EINVAL (a bad setting, with the reason) or HD_ENOMEM. */
int notif_app_new(const notif_settings *s, const hd_templates *templates, hd_logger *lg,
                  const notif_metrics *metrics, notif_app **out, hd_error *err);

/* Free app (NULL allowed) after every worker using it is done. */
void notif_app_free(notif_app *app);

/* Call fn(ctx) whenever a notification becomes due at once (the API recorded one): the
 * sweeper waits on it. ctx borrowed. Set before sharing the app. */
void notif_app_on_due(notif_app *app, void (*fn)(void *ctx), void *ctx);

/* The registry of the users events the app understands (borrowed from app): give it to the
 * consumer so that undecodable messages are dead-lettered before a handler sees them. */
const hd_registry *notif_app_registry(const notif_app *app);

/* The settings in effect, defaults filled in (borrowed). */
const notif_settings *notif_app_settings(const notif_app *app);

/* Create or upgrade every table the service uses: hd_inbox, hd_outbox, its own. Outside a
 * transaction, once at startup. Returns 0 or a code. */
int notif_app_migrate(hd_store *store, hd_error *err);

/* ---- a worker: what one thread brings --------------------------------------------------- */

typedef struct notif_worker {
    notif_app *app;    /* borrowed */
    hd_store *store;   /* borrowed: this thread's */
    hd_sender *sender; /* borrowed: this thread's; may be NULL for a worker that never sends
                          (the HTTP API's) */
    hd_backoff backoff;
    /* borrowed, NULL after notif_worker_init: the router (built over store) of the reads
       that may be stale — notif_prefs_get and notif_history — to a standby. The HTTP
       API's worker sets it; its writes (preferences, direct requests) then record their
       WAL position per user, so a user's next read never misses them (replica.h). Every
       other read, and every read inside a unit of work, stays on store. */
    hd_replica *reads;
    /* With reads: the WAL position of the worker's last write (0: none yet), which the API
       hands to the client (Herald-Read-After), and the one a client handed back for the
       next read (0: none): read-your-writes across instances (replica.h). */
    uint64_t wrote_lsn, min_lsn;
    /* The last events this worker deferred for a missing predecessor (ingest.c): a successor
     * of one of them defers at once instead of waiting for a predecessor that sits in a
     * retry tier. A ring; ids longer than the slot are not remembered (they wait). */
    char deferred[NOTIF_DEFERRED_MAX][NOTIF_DEFERRED_ID_MAX];
    unsigned deferred_next;
} notif_worker;

/* Set w up (its memory is the caller's; nothing to release). */
void notif_worker_init(notif_worker *w, notif_app *app, hd_store *store, hd_sender *sender);

/* ---- consuming users events ------------------------------------------------------------- */

/* The consumer's handlers (hd_consume_fn / hd_consume_batch_fn); ctx is a notif_worker
 * with a sender. The deliveries are decoded with the app's registry when the consumer did
 * not decode them. Verdicts: OK (recorded, or a duplicate; sent or scheduled for retry),
 * REJECT with a reason (undecodable, invalid, a missing template variable: retrying cannot
 * help), RETRY with a reason (the database failed: a later attempt may succeed). The batch
 * handler answers RETRY for a window it could not record as a whole, so that the consumer
 * falls back to one delivery at a time. */
hd_consume_result notif_handle_delivery(void *ctx, const hd_delivery *d);
hd_consume_result notif_handle_batch(void *ctx, const hd_delivery *const *ds, size_t n);

/* ---- the sweeper ------------------------------------------------------------------------ */

/* Claim up to limit pending notifications due at now_ms (0 = the wall clock), send them and
 * record the outcomes. Returns the number claimed (>= 0; 0 = nothing was due) or the
 * store's code. */
int notif_sweep(notif_worker *w, int64_t now_ms, size_t limit, hd_error *err);

/* ---- the HTTP API's use cases ----------------------------------------------------------- */

/* POST /notifications: a notification asked for directly. All borrowed. */
typedef struct notif_request {
    const char *user_id;
    const char *type; /* a notification type's name */
    const char *recipient;
    const json_t *variables;    /* object: the template's variables */
    const char *correlation_id; /* may be NULL */
} notif_request;

/* Record the notification (pending and due now, or skipped by the preferences) and wake the
 * sweeper, which sends it. *out (new on success: notification_release it) is the recorded
 * notification. Returns 1 (pending), 0 (skipped), HD_EVALIDATE (unknown type, a type that
 * is not for direct requests (notification_type_direct), bad user id or recipient, a link
 * variable outside the settings' link_base_urls, a variable the template needs is missing
 * or unusable) or a store code. */
int notif_request_send(notif_worker *w, const notif_request *req, notification *out, hd_error *err);

/* The preferences of user_id into *out (release it): 1 stored, 0 the defaults (never
 * saved), HD_EVALIDATE (bad user id) or a store code. */
int notif_prefs_get(notif_worker *w, const char *user_id, preferences *out, hd_error *err);

/* Create the preferences of user_id from the defaults and change: HD_EEXIST when they
 * exist, HD_EVALIDATE for a refused change. *out (release it) holds the result. */
int notif_prefs_create(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err);

/* Change the preferences of user_id (created from the defaults when absent). Returns 1 when
 * they were created now, 0 when they existed, or a code (HD_ESTATE: a concurrent change). */
int notif_prefs_update(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err);

/* One notification by id into *out (release it). Returns 0, HD_ENOTFOUND or a code. */
int notif_get(notif_worker *w, const char *id, notification *out, hd_error *err);

/* A page of user_id's history, newest first: up to limit (1..NOTIF_HISTORY_LIMIT_MAX)
 * notifications older than cursor (NULL: from the newest) into *list (new array of *n; free
 * with notif_history_free). next_cursor receives the cursor of the next page, "" when this
 * is the last. Returns *n, HD_EVALIDATE (bad user id or cursor), or a code. */
int notif_history(notif_worker *w, const char *user_id, size_t limit, const char *cursor,
                  notification **list, size_t *n, char next_cursor[NOTIF_CURSOR_MAX + 1],
                  hd_error *err);
void notif_history_free(notification *list, size_t n);

#endif /* NOTIFICATIONS_APPLICATION_H */
