/* retention.h — the inbox's dedup window checked against the retry horizon.
 *
 * The inbox (herald/inbox.h) remembers a message id for HD_INBOX_RETENTION, and forgets it
 * after. A copy of a message can still arrive long after the first one: the consumer's retry
 * tiers hold a failing message for the sum of their delays, and a dead letter waits in the
 * dead-letter queue (up to its TTL) until an operator replays it (`herald-admin dlq replay`,
 * which keeps the message id so that the inbox can drop what was already done). If the id
 * was forgotten before the last copy arrives, that copy is new again and its effect (the
 * mail) happens twice. So the service refuses to start with a window shorter than
 *
 *     horizon = sum of the retry delays of attempts 1 .. max_attempts-1   (the tiers)
 *             + the replay allowance: how long a dead letter can wait for its replay
 *               (the dead-letter queue's TTL; a day by default)
 *
 * Known limit: a dead-letter queue without a TTL (dlq_ttl_ms < 0) keeps letters forever, and
 * no finite window covers a replay of any age; the check then counts the default TTL (a day)
 * and a replay older than the window may be processed twice. */
#ifndef NOTIFICATIONS_RETENTION_H
#define NOTIFICATIONS_RETENTION_H

#include <stdint.h>

#include "herald/error.h"
#include "herald/retry.h"

/* The horizon above for policy p (borrowed; NULL: hd_retry_policy_default, what the service's
 * consumer uses), in ms. *retries_ms and *replay_ms (each may be NULL) receive its two parts.
 * Returns the horizon (> 0), or HD_ECONFIG when p is not a usable policy (err says why). */
int64_t notif_retry_horizon_ms(const hd_retry_policy *p, int64_t *retries_ms, int64_t *replay_ms,
                               hd_error *err);

/* 0 when an inbox retention of retention_ms (0: ids are kept forever) covers the horizon of
 * p (as above); else HD_ECONFIG with the arithmetic in err:
 *   "HD_INBOX_RETENTION 1h (3600000 ms) is shorter than retries + replay can take: retries
 *    1s + 5s + 30s = 36000 ms (4 attempts) + replay allowance 86400000 ms (the dead-letter
 *    queue's TTL) = 86436000 ms; ..." */
int notif_inbox_retention_check(int64_t retention_ms, const hd_retry_policy *p, hd_error *err);

#endif /* NOTIFICATIONS_RETENTION_H */
