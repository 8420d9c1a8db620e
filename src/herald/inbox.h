/* herald/inbox.h — the inbox: an idempotent consumer.
 *
 * A broker delivers at least once. The relay may publish a row twice (it crashed between
 * publish and mark), and the broker redelivers a message whose ack it never received (the
 * consumer crashed after doing the work, or the connection dropped before the ack
 * arrived). So every consumer sees duplicates, and an effect that must happen once (send
 * the welcome email, credit the account) needs a memory of what was already done.
 *
 * The inbox is that memory: a table of (consumer, message id) pairs, written in the SAME
 * transaction as the handler's effect. Then "effect done" and "message remembered" are one
 * fact, kept or lost together:
 *
 *     hd_store_begin(store, &err);
 *     int fresh = hd_inbox_accept(store, "notifications", message_id, &err);
 *     if (fresh == 1)  run the handler: its writes join this transaction
 *     hd_store_commit(store, &err);     then ack (also when fresh == 0: a duplicate)
 *
 * If the handler fails, rollback removes the inbox row too: the redelivered message is
 * new again and is retried. If the process dies after commit and before the ack, the
 * redelivery finds the row and is acked and skipped. Ack only after the commit returned.
 *
 * Keyed by consumer: one message id is processed once per consumer, and every consumer
 * that shares the database (notifications, audit...) processes it once, independently.
 * The message id is the CloudEvents id (hd_envelope_id), which the producer wrote once,
 * into its outbox, and never changes on republish.
 *
 * Retention: hd_inbox_purge forgets ids received more than older_than_ms ago. It must be
 * LONGER than the longest time a duplicate can still arrive: the broker's redelivery and
 * retry tiers (the largest retry delay times the attempts), plus how long a relay may
 * republish (the outbox lease and its own retries), plus how long a message can wait in a
 * queue while consumers are down. Forget an id sooner and its late duplicate is new again:
 * the effect happens twice. Days, not minutes.
 *
 * Group commit: committing costs one disk flush (an fsync), whatever the transaction holds,
 * and one flush per message caps a consumer at the disk's flush rate (some thousands per
 * second on SQLite FULL; see docs/limits.md, which `make limits` measures on your machine).
 * A consumer with a prefetch window of N messages can accept and handle all N in ONE
 * transaction (hd_inbox_accept_many, then each fresh handler), commit once, then ack all N
 * (AMQP's multiple-ack). If one handler fails, roll back and redo the window one message
 * per transaction, so that only the poison message is retried or dead-lettered.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_INBOX_H
#define HERALD_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create or upgrade the table hd_inbox (module "inbox" in hd_schema_migrations). Call it
 * once at start-up, outside a transaction. Returns the steps applied (>= 0) or a code. */
int hd_inbox_migrate(hd_store *store, hd_error *err);

/* Record that consumer (borrowed, non-empty) received message_id (borrowed, non-empty), in
 * the transaction open on store. Returns 1 when the message is new (run the handler in this
 * transaction), 0 when this consumer already accepted it (a duplicate: commit and ack,
 * do not run the handler), or: HD_EINVAL, HD_ESTATE (no transaction open: the row and the
 * effect must commit together; or it was aborted), the store's code.
 * A duplicate does not abort the transaction (INSERT ... ON CONFLICT DO NOTHING): the
 * answer is in the row count, not in an error. */
int hd_inbox_accept(hd_store *store, const char *consumer, const char *message_id, hd_error *err);

/* Accept n message ids (borrowed) at once, for group commit. fresh (may be NULL) receives
 * fresh[i] = 1 for each new id, 0 for each duplicate (also for an id repeated within ids).
 * Returns the number of new ids (>= 0) or a code; on failure the transaction is aborted and
 * must be rolled back. */
int hd_inbox_accept_many(hd_store *store, const char *consumer, const char *const *message_ids,
                         size_t n, unsigned char *fresh, hd_error *err);

/* Forget ids received more than older_than_ms (>= 0) ago, for every consumer (see
 * "Retention" above). Outside or inside a transaction. Returns the rows deleted or a code. */
/* 1 when message_id was accepted by consumer (committed, or by the transaction open on
 * store), 0 when not (or no longer: purged), or a negative code. For a consumer that applies
 * an aggregate's events in order: it checks that the event's predecessor (outbox.h,
 * "Ordering": the attribute "previousid") is already processed. Runs in or outside a
 * transaction. */
int hd_inbox_seen(hd_store *store, const char *consumer, const char *message_id, hd_error *err);

int hd_inbox_purge(hd_store *store, int64_t older_than_ms, hd_error *err);

/* The same in batches: delete at most limit (>= 1) ids received more than older_than_ms
 * (>= 0) ago, oldest first, in one statement. Call it in a loop until it returns less than
 * limit (hd_outbox_purge_dispatched_batch says why small batches). Returns the rows deleted
 * (>= 0) or HD_EINVAL, the store's code. */
int hd_inbox_purge_batch(hd_store *store, int64_t older_than_ms, size_t limit, hd_error *err);

/* What the inbox of one consumer holds. */
typedef struct hd_inbox_consumer_stats {
    const char *consumer; /* borrowed from the stats */
    int64_t ids;          /* message ids remembered */
    int64_t oldest_ms;    /* received_at of the oldest and the newest (epoch ms) */
    int64_t newest_ms;
} hd_inbox_consumer_stats;

/* Every consumer of the table, sorted by name. Read-only; free with hd_inbox_stats_free. */
typedef struct hd_inbox_stats {
    size_t count;
    const hd_inbox_consumer_stats *consumers; /* count of them */
} hd_inbox_stats;

/* Read the per-consumer counts (one GROUP BY over the table: a command for people, not a
 * metrics scrape). On success *out is new (free with hd_inbox_stats_free). Returns the
 * number of consumers (>= 0) or HD_EINVAL, HD_ENOMEM, the store's code. */
int hd_inbox_stats_read(hd_store *store, hd_inbox_stats **out, hd_error *err);

/* Free stats. NULL is fine. */
void hd_inbox_stats_free(hd_inbox_stats *stats);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_INBOX_H */
