/* herald/outbox.h — the transactional outbox.
 *
 * A service that changes its database and then publishes an event to a broker does two
 * writes to two systems, and no transaction spans both. Crash between them and one of two
 * things happens: the change is saved and the event is lost (other services never hear of
 * the new user), or, publishing first, the event goes out and the change is rolled back (a
 * "ghost" event about a user who does not exist). No ordering of the two calls fixes it.
 *
 * The outbox moves the second write into the first system: the event is INSERTed into the
 * table hd_outbox in the same database transaction as the business change, so both are
 * kept or neither is. A relay (another thread or process) reads the table and publishes
 * what it finds, and marks each row dispatched once the broker confirmed it:
 *
 *     hd_store_begin(store, &err);
 *     INSERT INTO users ...;                                   the business change
 *     hd_outbox_append(store, env, "user", user_id, &err);     the event, same transaction
 *     hd_store_commit(store, &err);                            both, or neither
 *
 *     relay:  hd_outbox_claim(store, 100, &opts, &batch, &err);    short transaction
 *             publish each message, wait for the broker's confirms (no transaction open)
 *             hd_outbox_mark_dispatched(store, seqs, n, &err);      short transaction
 *
 * Delivery is AT LEAST ONCE, never at most once: a relay that crashes after publishing and
 * before marking publishes those rows again. Consumers deduplicate on the event id (the
 * inbox, inbox.h); the id is written once, with the row, and never changes.
 *
 * Claiming with a lease. The relay must not hold a transaction open while it waits for the
 * broker (seconds, if the broker is slow; row locks held that long block everybody). So a
 * claim is one short statement that stamps the rows it takes with claimed_by and
 * claimed_until = now + lease, and commits. Rows under a live lease are skipped by other
 * claims; when the lease runs out (the relay died), the rows are claimable again. On
 * PostgreSQL the claim also uses FOR UPDATE SKIP LOCKED, so several relays claiming at the
 * same instant take different rows instead of waiting for each other.
 *
 * Ordering: what is guaranteed, and what is not.
 *   - seq numbers rows in the order they were INSERTed, not the order they COMMITted. On
 *     PostgreSQL two transactions interleave: T1 takes seq 5, T2 takes seq 6 and commits
 *     first; a claim in between sees 6 and not 5, and 6 is published first. No global
 *     order across aggregates is promised, by design: it would need one writer at a time.
 *   - Per aggregate, order holds: two transactions that change the same aggregate are
 *     serialised by the aggregate's own row (its version check or row lock), so the
 *     aggregate's rows get seqs in commit order. A claim takes a row only when no earlier
 *     row of its aggregate is still waiting for a retry or held by another relay's lease,
 *     and returns rows in seq order; a relay that publishes a batch in that order on one
 *     channel keeps the aggregate's order.
 *   - Several relays keep it too: on PostgreSQL claims take turns (a transaction-scoped
 *     advisory lock around the claim statement), so a claim always sees the leases of the
 *     claims before it and never takes an aggregate's event 2 while another relay holds
 *     event 1. Without the turns, two claims at the same instant could split an aggregate
 *     (each checks the other's lease in its own snapshot). Only the claim (a millisecond)
 *     is serialised; publishing and waiting for confirms stay parallel.
 *  - Not covered: a parked row (below) no longer holds its aggregate back (a poison event
 *     must not block it forever); a message nacked inside a confirm window while later
 *     ones are confirmed is retried after them.
 *   - The broker keeps the order of one queue, but SEVERAL CONSUMERS of that queue do not:
 *     event 1 of an aggregate can go to instance A and event 2 to instance B, which may
 *     finish first. So the outbox CHAINS each aggregate's events: hd_outbox_append stamps
 *     the event with the extension attribute "previousid" (HD_OUTBOX_PREVIOUS_ID), the id
 *     of the aggregate's latest row still in the outbox (none for its first event, or
 *     when the earlier rows were purged). A consumer that must apply an aggregate's
 *     events in order checks that previousid is already in its inbox before it applies
 *     an event, and defers the event while it is not (notifications: ingest.c). The chain
 *     names the previous event of the OUTBOX, so the check suits a consumer of every
 *     event type of the aggregate; one that consumes a subset never sees some
 *     predecessors and must not wait for them.
 *
 * Failures: hd_outbox_mark_failed counts an attempt, records the reason and schedules the
 * next one (the relay computes the delay with backoff.h); after max_attempts the row is
 * PARKED: kept, visible, with its last error, and never claimed or purged until an
 * operator calls hd_outbox_redrive. Dispatched rows are deleted by
 * hd_outbox_purge_dispatched after a retention period.
 *
 * Sensitive rows. Some events carry a secret for their one consumer: a verification or a
 * password-reset link holds a token that logs a person in or changes a password. The outbox
 * would keep it readable in clear for the whole retention period (a week by default), for
 * anyone who can read the table or a backup of it. Append such an event with
 * HD_OUTBOX_SENSITIVE (hd_outbox_append_flags): hd_outbox_mark_dispatched then empties its
 * payload ('') in the very UPDATE that marks it (no extra statement), and
 * hd_outbox_purge_sensitive deletes it after a retention of its own, shorter than the
 * token's lifetime (the relay does both; relay.h, sensitive_retention_ms). The metadata
 * (ids, type, times, headers) stays, so the row still answers "was it sent, when?".
 * Known limits: the payload is readable while the row is pending or parked (the relay needs
 * it; a parked row keeps it for hd_outbox_redrive); PostgreSQL keeps the old row version
 * until VACUUM and in its WAL, SQLite keeps freed bytes in the file unless PRAGMA
 * secure_delete is on, and backups taken before the scrub hold the payload. Sealing the
 * payload (encrypting it with a key the database never sees) would cover those too, at the
 * price of a key to manage.
 *
 * Waking the relay: on PostgreSQL a trigger sends NOTIFY hd_outbox (delivered at commit)
 * for every INSERT, and a relay waits with hd_store_pg_wait (store_pg.h). In one process
 * (SQLite) the relay waits on an hd_outbox_notifier set on the writers' store handles
 * (hd_outbox_set_notifier), which hd_outbox_append_uow signals after the unit of work
 * ended. Either way the relay also polls: a wake-up can be missed.
 *
 * Times are epoch milliseconds from the application's clock (hd_time_now_ms), so several
 * relays on several hosts need reasonably synchronised clocks (NTP) for leases to mean the
 * same thing everywhere: keep the lease much longer than any skew.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_OUTBOX_H
#define HERALD_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/store.h"
#include "herald/uow.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_OUTBOX_CHANNEL          "hd_outbox" /* the NOTIFY channel on PostgreSQL */
#define HD_OUTBOX_LEASE_DEFAULT_MS 30000       /* longer than a publish + confirm round */
#define HD_OUTBOX_BATCH_MAX        10000       /* the largest claim */
/* The CloudEvents extension attribute that chains an aggregate's events ("Ordering"). */
#define HD_OUTBOX_PREVIOUS_ID "previousid"

/* Create or upgrade the table hd_outbox (module "outbox" in hd_schema_migrations). Call it
 * once when the service starts, outside a transaction. Returns the number of steps applied
 * (>= 0) or hd_store_migrate's code. */
int hd_outbox_migrate(hd_store *store, hd_error *err);

/* ---- writing: inside the business transaction --------------------------------------- */

/* Append env (borrowed; encoded now) for aggregate (type, id; borrowed, non-empty) to the
 * outbox, in the transaction open on store. There must be one: appending outside it would
 * make the event independent of the business change, which is the bug the outbox exists
 * to prevent. The row stores the encoded envelope (what goes on the wire), its id, type
 * and schema version, and headers (JSON: correlationid, causationid, traceparent when set).
 * The stored envelope gains "previousid" when the aggregate has an earlier row ("Ordering";
 * one indexed lookup per append).
 * Returns 0, or: HD_EINVAL (NULL or empty argument), HD_ESTATE (no transaction open, or it
 * was aborted), HD_EEXIST (an event with this id is already in the outbox: the transaction
 * is now aborted), HD_ENOMEM, or the store's code. */
int hd_outbox_append(hd_store *store, const hd_envelope *env, const char *aggregate_type,
                     const char *aggregate_id, hd_error *err);

/* Flags of hd_outbox_append_flags. */
#define HD_OUTBOX_SENSITIVE                                                                        \
    1u /* the payload holds a secret: scrubbed once dispatched, the row                            \
          purged after the sensitive retention ("Sensitive rows") */

/* hd_outbox_append with flags (0 or HD_OUTBOX_SENSITIVE). Same codes, and HD_EINVAL for an
 * unknown flag. hd_outbox_append(...) is hd_outbox_append_flags(..., 0, err). */
int hd_outbox_append_flags(hd_store *store, const hd_envelope *env, const char *aggregate_type,
                           const char *aggregate_id, unsigned flags, hd_error *err);

/* The same in a unit of work's transaction (hd_uow_store(uow)), and the store's notifier
 * (hd_outbox_set_notifier), if it has one, is signalled (hd_outbox_signal) when the unit
 * ends: after its commit, when the row can be seen, not before. This is what a domain
 * event handler calls. Same codes. */
int hd_outbox_append_uow(hd_uow *uow, const hd_envelope *env, const char *aggregate_type,
                         const char *aggregate_id, hd_error *err);

/* hd_outbox_append_uow with flags, as hd_outbox_append_flags. */
int hd_outbox_append_uow_flags(hd_uow *uow, const hd_envelope *env, const char *aggregate_type,
                               const char *aggregate_id, unsigned flags, hd_error *err);

/* ---- relaying: claim, publish, mark --------------------------------------------------- */

/* One outbox row. Strings are borrowed from the batch that holds it. */
typedef struct hd_outbox_message {
    int64_t seq;                /* position in the outbox; increasing */
    const char *event_id;       /* the envelope's id: consumers deduplicate on it */
    const char *aggregate_type; /* also a natural routing or partition key */
    const char *aggregate_id;
    const char *type;    /* the envelope's type: the routing key on the bus */
    int version;         /* the envelope's schema version */
    const char *payload; /* the CloudEvents JSON to publish, NUL-terminated */
    size_t payload_len;
    const char *headers;   /* JSON object: correlationid, causationid, traceparent */
    int64_t created_at_ms; /* when it was appended */
    int attempts;          /* failed attempts so far */
    int sensitive;         /* 1: appended with HD_OUTBOX_SENSITIVE (never log the payload) */
} hd_outbox_message;

/* The rows of one claim, in seq order. Read-only; free with hd_outbox_batch_free. */
typedef struct hd_outbox_batch {
    size_t count;
    const hd_outbox_message *messages; /* count of them */
    int64_t lease_until_ms;            /* mark them before this, or another relay may */
} hd_outbox_batch;

typedef struct hd_outbox_claim_opts {
    const char *relay_id; /* recorded in claimed_by (diagnostics); NULL: "relay" */
    int64_t lease_ms;     /* 0: HD_OUTBOX_LEASE_DEFAULT_MS */
    int64_t now_ms;       /* 0: the wall clock; tests set it to move time forward */
} hd_outbox_claim_opts;

/* Claim up to limit (1..HD_OUTBOX_BATCH_MAX) rows that are due: not dispatched, not
 * parked, their next attempt time reached, not under another live lease, and with no
 * earlier row of their aggregate held back (see "Ordering" above). They are leased to the
 * caller until now + lease. opts may be NULL (defaults). Must be called OUTSIDE a
 * transaction: the claim commits at once so that no lock outlives it.
 * On success *out is new (free with hd_outbox_batch_free), possibly with 0 messages.
 * Returns the number of messages claimed (>= 0), or HD_EINVAL, HD_ESTATE (a transaction is
 * open), HD_ENOMEM, or the store's code (HD_EBUSY: another writer; try again). */
int hd_outbox_claim(hd_store *store, size_t limit, const hd_outbox_claim_opts *opts,
                    hd_outbox_batch **out, hd_error *err);

/* Free a batch. NULL is fine. */
void hd_outbox_batch_free(hd_outbox_batch *batch);

/* ---- handed rows: an in-process relay without the claim --------------------------------
 *
 * In one process on SQLite, the relay's claim reads back, leases and copies the rows a
 * writer of the same process has just committed, in a write transaction of its own (13 % of
 * herald-notifications' CPU, issue 14). A relay that waits on an hd_outbox_notifier may
 * OFFER a token on it (hd_outbox_notifier_offer): a writer whose store has that notifier
 * then appends the row already leased (claimed_by = the token, claimed_until = now + the
 * lease), in the business change's own transaction, whenever the aggregate has no earlier
 * row still pending (not dispatched and not parked); otherwise the row is appended as
 * always and waits for a claim, behind its aggregate's earlier row. The relay reads its
 * handed rows back with hd_outbox_take_handed, one read and no write, then publishes and
 * marks them as a claimed batch. Why this keeps the outbox's promises:
 *   - per-aggregate order: a row is handed only when nothing of its aggregate is pending,
 *     and its lease holds every later row of the aggregate back from claims, as a claimed
 *     row's does;
 *   - a crash (of the relay, the process, the machine) leaves handed rows leased; when the
 *     lease runs out they are claimable as usual: the cost is the lease's delay and, at
 *     worst, a duplicate, never a loss;
 *   - a relay takes a row only while more than half its lease is left (as it overlaps
 *     batches only then), so a claim never takes a handed row the relay still publishes.
 * SQLite only: there seq is the commit order (one writer at a time), so a relay that
 * remembers the last seq it took cannot skip a row committed later. On PostgreSQL seqs are
 * handed out before commit, in no commit order; offers are ignored there. */

/* Offer token (copied; NULL or "" withdraws the offer) with lease_ms (> 0) on n: from now on
 * the writers of n's stores append handed rows (above). At most HD_OUTBOX_TOKEN_MAX bytes.
 * Thread-safe. Returns 0, or HD_EINVAL (n NULL, token too long, lease_ms <= 0). */
#define HD_OUTBOX_TOKEN_MAX 160
typedef struct hd_outbox_notifier hd_outbox_notifier; /* below: "waking an in-process relay" */
int hd_outbox_notifier_offer(hd_outbox_notifier *n, const char *token, int64_t lease_ms);

/* The rows handed under token (borrowed) with seq > after_seq, in seq order, at most limit
 * (1..HD_OUTBOX_BATCH_MAX): not dispatched, not parked, and with more than half of
 * lease_ms (the lease they were handed with) left at now_ms (0: the wall clock). One read,
 * outside a transaction. *out is new (hd_outbox_batch_free), its lease_until_ms the
 * earliest of the rows'. Returns the number of rows (>= 0), or HD_EINVAL, HD_ESTATE (a
 * transaction is open), HD_ENOMEM, the store's code. */
int hd_outbox_take_handed(hd_store *store, const char *token, int64_t after_seq, size_t limit,
                          int64_t lease_ms, int64_t now_ms, hd_outbox_batch **out, hd_error *err);

/* Give back every row still handed under token (borrowed) and not dispatched or parked:
 * claimable at once, no attempt counted. For a relay that stops with nothing in flight, so
 * that rows handed but not taken need not wait for their lease; a writer that read the
 * offer just before it was withdrawn may still append one more, which waits for its lease.
 * Returns the number of rows given back or a code. */
int hd_outbox_release_handed(hd_store *store, const char *token, hd_error *err);

/* The largest seq the outbox has handed out so far (0: none), for a relay about to offer a
 * token: every row handed under the token comes after it. Returns 0 or the store's code. */
int hd_outbox_last_seq(hd_store *store, int64_t *seq, hd_error *err);

/* Mark rows dispatched (the broker confirmed them): seqs (borrowed) holds n of them. In the
 * caller's transaction if one is open, else in one of its own: all or none are marked.
 * Rows already dispatched are left as they are. The payload of a sensitive row is emptied
 * ('') by the same statement. Returns the number of rows marked now (>= 0) or a code. */
int hd_outbox_mark_dispatched(hd_store *store, const int64_t *seqs, size_t n, hd_error *err);

/* Record a failed attempt at publishing row seq: attempts + 1, last_error = reason
 * (borrowed; may be NULL), lease released. If attempts reaches max_attempts (>= 1) the row
 * is parked; otherwise it is due again retry_in_ms (>= 0) from now.
 * Returns 1 when the row is now parked, 0 when it will be retried, or: HD_ENOTFOUND (no
 * such row waiting: unknown, dispatched or parked already), HD_EINVAL, the store's code. */
int hd_outbox_mark_failed(hd_store *store, int64_t seq, const char *reason, int64_t retry_in_ms,
                          int max_attempts, hd_error *err);

/* Give the lease on rows back without counting an attempt (a relay shutting down, or
 * unable to reach the broker before it tried): they are claimable at once. Returns the
 * number of rows released or a code. */
int hd_outbox_release(hd_store *store, const int64_t *seqs, size_t n, hd_error *err);

/* Un-park row seq, or every parked row when seq is 0: its attempts start again from 0 and
 * it is due now; last_error is kept for the record until the next failure. Returns the
 * number of rows un-parked (0 when seq is not parked) or a code. */
int hd_outbox_redrive(hd_store *store, int64_t seq, hd_error *err);

/* Delete rows dispatched more than older_than_ms (>= 0) ago: the outbox is a queue, not an
 * archive, and a table that only grows slows every claim down. Pending and parked rows are
 * never deleted. Returns the number of rows deleted or a code. */
int hd_outbox_purge_dispatched(hd_store *store, int64_t older_than_ms, hd_error *err);

/* The same for sensitive rows only (HD_OUTBOX_SENSITIVE), with their own, shorter retention:
 * delete those dispatched more than older_than_ms (>= 0) ago. Returns the number of rows
 * deleted or a code. */
int hd_outbox_purge_sensitive(hd_store *store, int64_t older_than_ms, hd_error *err);

/* Whether a claim at now_ms (0: the wall clock) could find a row: one not dispatched, not
 * parked, due and not leased (the per-aggregate hold-back is not checked: a claim may still
 * come back empty). A read: on SQLite in WAL mode it takes no write lock, so a relay that
 * polls an idle outbox leaves the lock to the service's writers. Returns 1, 0 or a code. */
int hd_outbox_has_due(hd_store *store, int64_t now_ms, hd_error *err);

/* Metrics: rows waiting to be dispatched (including leased and retrying ones), the age of
 * the oldest of them in ms (0 when none), and parked rows. Any output may be NULL. Returns
 * 0 or a code. A growing oldest age is the one alarm to set: the relay is not keeping up
 * or not running. */
int hd_outbox_depth(hd_store *store, int64_t *pending, int64_t *oldest_age_ms, int64_t *parked,
                    hd_error *err);

/* ---- operating it: what an admin tool reads and does ---------------------------------- */

/* Counts of one event type (or of the whole outbox: type NULL). A row is in exactly one of
 * the four states: pending (waiting: due now or at its next retry, not leased), leased
 * (claimed by a relay whose lease has not run out: being published right now), parked
 * (failed max_attempts times: waits for an operator) or dispatched (confirmed; kept until
 * the retention deletes it). */
typedef struct hd_outbox_type_stats {
    const char *type; /* the event type (borrowed from the stats); NULL in the total */
    int64_t pending;
    int64_t leased;
    int64_t parked;
    int64_t dispatched;
    int64_t oldest_waiting_age_ms; /* age of the oldest pending or leased row, 0 when none:
                                      the lag, the number to alert on */
} hd_outbox_type_stats;

/* The whole outbox and each event type in it, sorted by type. Read-only; free with
 * hd_outbox_stats_free. */
typedef struct hd_outbox_stats {
    hd_outbox_type_stats total;
    size_t ntypes;
    const hd_outbox_type_stats *types; /* ntypes of them */
} hd_outbox_stats;

/* Read the counts at now_ms (0: the wall clock; a lease is live while claimed_until > now).
 * On success *out is new (free with hd_outbox_stats_free). Returns 0 or HD_EINVAL,
 * HD_ENOMEM, the store's code.
 * Known limit: one GROUP BY over the whole table, dispatched history included (the partial
 * indexes cannot serve the dispatched count): fine for a command an operator runs, too heavy
 * for a metrics scrape every few seconds on a big table (use hd_outbox_depth there). */
int hd_outbox_stats_read(hd_store *store, int64_t now_ms, hd_outbox_stats **out, hd_error *err);

/* Free stats. NULL is fine. */
void hd_outbox_stats_free(hd_outbox_stats *stats);

/* One parked row. Strings are borrowed from the list that holds it. */
typedef struct hd_outbox_parked {
    int64_t seq;
    const char *event_id;
    const char *type;
    const char *aggregate_type;
    const char *aggregate_id;
    int attempts;           /* failed attempts (max_attempts of the relay that parked it) */
    const char *last_error; /* the reason of the last failure; "" when none was recorded */
    int64_t created_at_ms;
    int64_t parked_at_ms;
} hd_outbox_parked;

/* Parked rows in seq order. Read-only; free with hd_outbox_parked_list_free. */
typedef struct hd_outbox_parked_list {
    size_t count;
    const hd_outbox_parked *rows; /* count of them */
} hd_outbox_parked_list;

/* List up to limit (1..HD_OUTBOX_BATCH_MAX) parked rows, of event type `type` (borrowed;
 * NULL: every type), oldest first (seq order). The payload is not read: the list is for
 * people, and a sensitive row's payload must not be shown. On success *out is new (free
 * with hd_outbox_parked_list_free). Returns the number of rows (>= 0) or HD_EINVAL,
 * HD_ENOMEM, the store's code. */
int hd_outbox_list_parked(hd_store *store, const char *type, size_t limit,
                          hd_outbox_parked_list **out, hd_error *err);

/* Free a list. NULL is fine. */
void hd_outbox_parked_list_free(hd_outbox_parked_list *list);

/* Un-park every parked row of event type `type` (borrowed, non-empty), as hd_outbox_redrive
 * does for one row: attempts from 0, due now, last_error kept for the record. Replay after
 * fixing the cause (the exchange or binding that was missing): replayed before, they park
 * again after max_attempts. Returns the number of rows un-parked (>= 0) or HD_EINVAL, the
 * store's code. */
int hd_outbox_redrive_type(hd_store *store, const char *type, hd_error *err);

/* Delete at most limit (>= 1) rows dispatched more than older_than_ms (>= 0) ago, oldest
 * first, in one statement (one short transaction when none is open). A retention job calls
 * it in a loop until it returns less than limit: small batches keep each transaction's locks
 * few and short, so the relay's claims and marks never wait long behind a purge of a week of
 * history (one big DELETE would lock every row it deletes until its commit). Returns the
 * number of rows deleted (>= 0) or HD_EINVAL, the store's code. */
int hd_outbox_purge_dispatched_batch(hd_store *store, int64_t older_than_ms, size_t limit,
                                     hd_error *err);

/* ---- waking an in-process relay ------------------------------------------------------ */

/* A notifier a relay can wait on: a counter of signals (behind a mutex and a condition
 * variable) and a pipe that is readable while a signal has not been taken, so that the
 * relay can poll(2) it together with its stop token and its database socket.
 *     n = hd_outbox_notifier_new();
 *     hd_outbox_set_notifier(writer_store, n);      // each store that appends rows
 *     relay options.notifier = n;                   // the relay waits on it
 *     ...
 *     uint64_t seen = 0;
 *     for (;;) { drain the outbox; hd_outbox_notifier_wait(n, &seen, poll_ms); }
 * A signal that comes while the relay is draining is not lost: the counter moved, so the
 * next wait returns at once. Any number of threads may signal and wait with
 * hd_outbox_notifier_wait; the fd is for ONE poller (taking a signal empties the pipe, so
 * a second poller could sleep through it until its timeout): give each relay its own. */
typedef struct hd_outbox_notifier hd_outbox_notifier;

/* New notifier (free with hd_outbox_notifier_free), NULL when out of memory or file
 * descriptors. */
hd_outbox_notifier *hd_outbox_notifier_new(void);

/* Free it; take it off every store first (hd_outbox_set_notifier(store, NULL)) and stop
 * whatever waits on it. NULL is fine. */
void hd_outbox_notifier_free(hd_outbox_notifier *n);

/* Signal: "rows were committed to the outbox" (notifier is an hd_outbox_notifier *; the
 * void * lets it serve as a plain callback). Thread-safe. NULL is fine. */
void hd_outbox_notifier_signal(void *notifier);

/* Wait up to timeout_ms (negative: no limit; 0: just look) until the counter differs from
 * *seen; then set *seen to it and return 1. Returns 0 on timeout, HD_EINVAL on NULL
 * arguments. A wait that must also end on a stop polls hd_outbox_notifier_fd and
 * hd_stop_fd together (hd_stop_poll), then calls this with timeout 0. */
int hd_outbox_notifier_wait(hd_outbox_notifier *n, uint64_t *seen, int timeout_ms);

/* A file descriptor that is readable (POLLIN) while a signal has not been taken by a wait
 * (hd_outbox_notifier_wait of any caller empties it). Borrowed: do not read or close it.
 * -1 for NULL. */
int hd_outbox_notifier_fd(const hd_outbox_notifier *n);

/* Give store (borrowed) a notifier (borrowed, NULL: none) that hd_outbox_signal(store)
 * signals — and so hd_outbox_append_uow after its unit commits. The notifier belongs to the
 * store handle, not to the process: two services, or two outboxes, in one process do not
 * wake each other's relays. Set it before the handle appends and clear it (NULL) before
 * freeing the notifier; like the store handle itself, from the thread that uses it. NULL
 * store is ignored. */
void hd_outbox_set_notifier(hd_store *store, hd_outbox_notifier *n);

/* The notifier set on store (borrowed), or NULL. */
hd_outbox_notifier *hd_outbox_get_notifier(const hd_store *store);

/* Signal store's notifier, if it has one: "rows were committed to this store's outbox".
 * hd_outbox_append_uow does it after the unit of work ends; call it yourself after
 * committing a transaction in which you used hd_outbox_append directly. Spurious calls are
 * harmless (the relay finds nothing). NULL is fine. */
void hd_outbox_signal(hd_store *store);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_OUTBOX_H */
