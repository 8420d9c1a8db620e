/* herald/retry.h — the arithmetic of retries: which delay tier, which attempt, when to give up.
 *
 * A message that fails is not retried at once (the cause — a database down, a remote service
 * throttling — is rarely gone a millisecond later) and not forever (a poison message would
 * loop and cost work forever). herald's consumer parks it in a *delay tier*: a queue whose
 * x-message-ttl is the delay and whose dead-letter target is the work queue. When the TTL
 * expires the broker moves the message back and writes the move into the message's `x-death`
 * header: one entry per (queue, reason) with a count. So the attempt number is something the
 * BROKER counted, not a header the consumer increments and could get wrong (a consumer that
 * crashes between "increment" and "ack" would lose the count, or double it).
 *
 *   attempt = 1 + sum(count of x-death entries with reason "expired" whose queue is one of
 *                     this consumer's tier queues)
 *
 * Entries of other queues (the message may have been dead-lettered elsewhere before it
 * reached us) are ignored, and so are other reasons ("rejected", "maxlen", "delivery_limit").
 *
 * The arithmetic is pure: no I/O, no allocation, so it is unit-tested without a broker. The
 * one function of it that reads librabbitmq's types, hd_xdeath_parse(), only walks a table.
 *
 * The last part of this header ("topology") is where the arithmetic meets a broker: the
 * names of a work queue's retry exchange, delay queues and dead-letter queue, and their
 * declaration (hd_retry_declare). The consumer forwards into that topology (consumer.h).
 */
#ifndef HERALD_RETRY_H
#define HERALD_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/error.h"
#include "herald/topology.h" /* HD_AMQP_NAME_MAX */

#ifdef __cplusplus
extern "C" {
#endif

#define HD_RETRY_MAX_TIERS 8

/* How long a dead letter stays in the dead-letter queue when the policy says 0: a day. Long
 * enough for an operator to look at it the same day; not forever, because a dead letter is
 * a full copy of the event, secrets included (a password-reset link whose mail could not be
 * sent), and the broker's disk is not meant as an archive. See hd_retry_declare. */
#define HD_RETRY_DLQ_TTL_DEFAULT_MS (24LL * 3600 * 1000)

/* Quorum topologies (hd_retry_policy.queue_type): the x-delivery-limit of the work queue and
 * the tier queues when the policy says 0. herald's consumer never requeues a failure (it
 * forwards it to a tier and acks), so a delivery comes back only when a consumer died or lost
 * its connection holding it; 20 such returns mean a message that kills its consumer (a poison
 * message), and the queue dead-letters it into the DLQ. 20 is also RabbitMQ 4.0's default,
 * which herald never relies on: it always sets the argument (3.10-3.13 have no default and
 * would redeliver forever). */
#define HD_RETRY_DELIVERY_LIMIT_DEFAULT 20

/* The DLQ's x-delivery-limit on a quorum topology: every `herald-admin dlq list` hands the
 * messages it read back to the queue, which a quorum queue counts as a delivery, and the DLQ,
 * the end of the line, has no dead-letter exchange of its own (RabbitMQ 4.0 would apply 20
 * and then drop them). */
#define HD_RETRY_DLQ_DELIVERY_LIMIT 1000000

/* How a consumer retries. A plain value owned by the caller; nothing to free.
 *   max_attempts  deliveries to the handler before the message is dead-lettered (>= 1;
 *                 1 means "never retry": the first failure goes to the dead-letter queue)
 *   ntiers        number of delay tiers (1..HD_RETRY_MAX_TIERS)
 *   tier_ms       the delay before attempt 2, 3, ... : attempt k+1 waits tier_ms[k-1]; once
 *                 the tiers are used up, the last one repeats. Each delay is a queue TTL, so
 *                 it must be >= 1 ms.
 *   dlq_ttl_ms    the x-message-ttl of the dead-letter queue: 0 = HD_RETRY_DLQ_TTL_DEFAULT_MS
 *                 (a day), negative = none (dead letters are kept until someone removes
 *                 them). Expired dead letters are dropped.
 *   queue_type    classic (default) or quorum, for the work queue, its tiers and its DLQ
 *                 alike (a setting: HD_QUEUE_TYPE). A quorum topology ALWAYS has a delivery
 *                 limit and a dead-letter target on the work queue — x-delivery-limit
 *                 (delivery_limit) and x-dead-letter-exchange "" with routing key the DLQ, so
 *                 that a message past the limit lands in the DLQ (reason "delivery_limit" in
 *                 its x-death) instead of being dropped, which is what a quorum queue does
 *                 past its limit without a DLX — and every dead-lettering (tier -> work queue,
 *                 work queue -> DLQ) is at-least-once (topology.h). See docs/modules/consumer.md,
 *                 "Quorum queues", for what herald relies on across RabbitMQ versions.
 *   delivery_limit quorum only (ignored for classic): 0 = HD_RETRY_DELIVERY_LIMIT_DEFAULT. */
typedef struct hd_retry_policy {
    int max_attempts;
    int ntiers;
    int64_t tier_ms[HD_RETRY_MAX_TIERS];
    int64_t dlq_ttl_ms;
    hd_queue_type queue_type; /* of every queue of the topology: HD_QUEUE_CLASSIC (0, what
                                 hd_retry_policy_default gives) or HD_QUEUE_QUORUM */
    int64_t delivery_limit;   /* quorum only: 0 = HD_RETRY_DELIVERY_LIMIT_DEFAULT */
} hd_retry_policy;

/* Fill p with the default policy: tiers 1 s, 5 s, 30 s and 4 attempts (the first delivery and
 * one retry per tier) — long enough for a restart, short enough to surface a bug the same
 * minute. */
void hd_retry_policy_default(hd_retry_policy *p);

/* 0 when p is usable; HD_ECONFIG with the reason in err otherwise. */
int hd_retry_policy_check(const hd_retry_policy *p, hd_error *err);

/* The tier (0-based index into tier_ms) a message waits in after its attempt `attempt`
 * (1-based) failed: attempt 1 -> tier 0, attempt 2 -> tier 1, ..., then the last tier.
 * Returns HD_EINVAL when attempt < 1. */
int hd_retry_tier(const hd_retry_policy *p, int attempt);

/* The delay in ms before the attempt after `attempt`, i.e. tier_ms[hd_retry_tier(p, attempt)];
 * HD_EINVAL when attempt < 1. */
int64_t hd_retry_delay_ms(const hd_retry_policy *p, int attempt);

/* 1 when a message whose attempt `attempt` just failed must go to the dead-letter queue
 * instead of being retried (attempt >= max_attempts, or attempt < 1: an attempt number
 * that is not one has no tier to wait in), else 0. */
int hd_retry_exhausted(const hd_retry_policy *p, int attempt);

/* One entry of the broker's x-death header, copied out of the message (a plain value: the
 * fixed sizes are the AMQP limits — queue and exchange names are short strings of at most 255
 * bytes). Strings longer than the field are truncated; herald never creates such names. */
typedef struct hd_xdeath {
    char queue[256];    /* the queue the message was dead-lettered from */
    char reason[32];    /* "expired", "rejected", "maxlen" or "delivery_limit" */
    char exchange[256]; /* the exchange it had been published to */
    int64_t count;      /* how many times it died in that queue for that reason */
} hd_xdeath;

/* Attempt number of a delivery from its parsed x-death entries: 1 + the counts of entries
 * whose reason is "expired" and whose queue is one of tier_queues (borrowed, n_tier_queues
 * names). A queue listed twice is still counted once per entry. Never less than 1 and never
 * more than INT_MAX: x-death is a header any publisher can forge, so counts below 1 add
 * nothing and the sum saturates instead of overflowing (a forged huge count gives an
 * attempt past every max_attempts: the message goes to the dead-letter queue). */
int hd_retry_attempt(const hd_xdeath *deaths, size_t ndeaths, const char *const *tier_queues,
                     size_t n_tier_queues);

/* Parse the x-death header out of a message's headers table (borrowed; NULL or a table
 * without x-death gives 0 entries). Copies up to cap entries into out and stores in *n the
 * number copied. Entries beyond cap are dropped: the broker moves the most recent death to
 * the front, and a consumer with more (queue, reason) pairs than cap has a topology problem
 * anyway. Returns 0, or HD_EPROTO when x-death is present but not an array of tables (a
 * client, not the broker, wrote it). */
int hd_xdeath_parse(const amqp_table_t *headers, hd_xdeath *out, size_t cap, size_t *n);

/* Convenience: the name of the delay queue for `delay_ms` in front of work queue `queue`,
 * "<queue>.retry.<delay_ms>ms" (e.g. "orders.retry.5000ms"), written into buf (cap bytes).
 * Naming the queue by its delay means that changing a tier declares a new queue instead of
 * failing on the old queue's different x-message-ttl (PRECONDITION_FAILED).
 * Returns 0, or HD_ERANGE when the name does not fit (or exceeds AMQP's 255 bytes). */
int hd_retry_tier_queue_name(char *buf, size_t cap, const char *queue, int64_t delay_ms);

/* The name of the dead-letter queue of work queue `queue`: "<queue>.dlq". Same contract. */
int hd_retry_dlq_name(char *buf, size_t cap, const char *queue);

/* The name of the retry exchange of work queue `queue`: "<queue>.retry". Same contract. */
int hd_retry_exchange_name(char *buf, size_t cap, const char *queue);

/* ---- topology ------------------------------------------------------------------------- */

/* Every name of the retry topology of one work queue and policy (a plain value):
 *   queue           the work queue itself
 *   retry_exchange  "<queue>.retry", a direct exchange; a retry is published here with the
 *                   name of its tier queue as the routing key
 *   tiers[i]        the delay queue of tier i, "<queue>.retry.<tier_ms[i]>ms" (two tiers with
 *                   the same delay share a queue, so names may repeat)
 *   dlq             "<queue>.dlq", reached through the default exchange */
typedef struct hd_retry_names {
    char queue[HD_AMQP_NAME_MAX + 1];
    char retry_exchange[HD_AMQP_NAME_MAX + 1];
    char dlq[HD_AMQP_NAME_MAX + 1];
    char tiers[HD_RETRY_MAX_TIERS][HD_AMQP_NAME_MAX + 1];
    int ntiers;
} hd_retry_names;

/* Fill *out for work queue `queue` and policy p (NULL = the default policy). Returns 0,
 * HD_EINVAL (no queue name), HD_ECONFIG (bad policy) or HD_ERANGE (a name too long). */
int hd_retry_names_make(const char *queue, const hd_retry_policy *p, hd_retry_names *out,
                        hd_error *err);

/* The specs hd_retry_declare declares, as data (a plain value; t points into the struct
 * itself, so do not copy it): names, the retry exchange, the queues (the work queue first,
 * one per distinct tier, the dead-letter queue last) and the tier bindings. For programs that
 * show or check a topology without a broker (herald-admin topology). */
typedef struct hd_retry_topology {
    hd_retry_names n;
    hd_exchange_spec exchange;
    hd_queue_spec queues[HD_RETRY_MAX_TIERS + 2];
    hd_binding_spec bindings[HD_RETRY_MAX_TIERS];
    hd_topology t;
} hd_retry_topology;

/* Fill *rt for work queue `queue` and policy p (NULL = the default policy). Same errors as
 * hd_retry_names_make. Pure: no broker involved. */
int hd_retry_topology_make(hd_retry_topology *rt, const char *queue, const hd_retry_policy *p,
                           hd_error *err);

/* Declare the work queue `queue` (durable, classic or quorum as p->queue_type), its retry exchange,
 * one delay queue per distinct tier of p (NULL = the default policy) — x-message-ttl the delay,
 * x-dead-letter-exchange "" and x-dead-letter-routing-key `queue`, so that an expired
 * message goes back to the work queue with an x-death entry — the bindings and the
 * dead-letter queue (x-message-ttl p->dlq_ttl_ms, see hd_retry_policy), on connection a's
 * main channel (borrowed). Idempotent. Returns 0, the errors of hd_retry_names_make, or the
 * topology module's (HD_EAMQP with the broker's reason). The work queue's own bindings (to
 * the application's exchanges) are the caller's. hd_consumer_declare is this function.
 *
 * A dead-letter queue that already exists with other arguments (declared before it had a
 * TTL, or with another one) is kept as it is, not an error: the broker cannot change the
 * arguments of an existing queue (it answers 406 PRECONDITION_FAILED), and a service must
 * not refuse to start over its DLQ. To give such a queue its TTL, either set a policy,
 * which applies to existing queues at once (the lower of policy and argument wins):
 *     rabbitmqctl set_policy dlq-ttl '\.dlq$' '{"message-ttl":86400000}' --apply-to queues
 * or delete the queue once it is empty (rabbitmqctl delete_queue orders.dlq) and let the
 * next start declare it. */
int hd_retry_declare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err);

/* Delete everything hd_retry_declare declared (tests and tutorial chapters clean up with it).
 * Keeps going past failures and returns the first. */
int hd_retry_undeclare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_RETRY_H */
