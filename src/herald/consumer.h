/* herald/consumer.h — consuming a queue reliably: prefetch, manual ack, retries, dead letters.
 *
 * Four promises, and how this module keeps them:
 *
 * 1. A message is not lost when its consumer dies. Deliveries are acknowledged MANUALLY, and
 *    only once the handler is done with them. A consumer that dies (or whose connection
 *    closes) while holding a message never acked it, so the broker delivers it again — to
 *    another consumer or to this one after it reconnects — with redelivered = 1.
 *
 * 2. Work is shared fairly. basic.qos sets a PREFETCH: how many unacknowledged messages the
 *    broker lets this consumer hold. With prefetch 1 a slow consumer holds one message and
 *    the others take the rest; with no limit the broker pushes every ready message to
 *    whoever is connected, round-robin, and a slow consumer sits on half the queue.
 *
 * 3. A failure is retried later, not at once and not forever. A handler answering RETRY
 *    gets the message back after a delay that grows with each attempt (retry tiers: 1 s,
 *    5 s, 30 s by default), and after the policy's last attempt the message goes to the
 *    dead-letter queue (DLQ) with the reason. The attempt number comes from the broker's
 *    x-death header (retry.h), so a crash cannot lose or double it.
 *
 * 4. A poison message never blocks the queue. A REJECT, an exhausted retry budget and — when
 *    the consumer has an envelope registry — a body that does not decode (malformed JSON,
 *    unknown type, unsupported version, too big) all move the message aside into the DLQ.
 *    The queue keeps flowing behind it.
 *
 * The topology behind it (hd_consumer_declare declares it; docs/modules/consumer.md has the
 * picture), for a work queue Q and tiers of 1 s and 5 s:
 *
 *   Q                   the work queue (durable)
 *   Q.retry             direct exchange; a retry is published here with the routing key of
 *                       its tier queue
 *   Q.retry.1000ms      x-message-ttl 1000, x-dead-letter-exchange "" and
 *   Q.retry.5000ms      x-dead-letter-routing-key Q: nobody consumes these; when the TTL
 *                       expires the broker dead-letters the message back into Q and adds
 *                       {queue: Q.retry.1000ms, reason: expired, count} to its x-death
 *   Q.dlq               the dead-letter queue; messages keep their headers and gain
 *                       x-herald-reason, x-herald-attempts and x-herald-queue
 *
 * Never lose a message on the way: a retry or a dead letter is published (persistent,
 * mandatory) through an hd_publisher (publisher.h) — the same confirm state machine as the
 * relay's, so a nack, a basic.return, a closed channel and a missing confirm mean the same
 * on both paths — and the original is acked only AFTER the broker confirmed the copy. A
 * crash in between leaves two copies (the original is redelivered): at-least-once, and
 * consumers deduplicate by message id (inbox.h). If the copy is not CONFIRMED (nacked,
 * returned, lost, or no confirm within confirm_timeout_ms), the original is handed back to
 * the queue (nack, requeue) and poll reports the failure. A copy whose confirm was only late
 * may still arrive: a duplicate, never a loss.
 *
 * The republished message keeps its body, properties and headers — x-death included, since
 * that is where the broker keeps its count. This works on the RabbitMQ 3.10 of Debian 12 and
 * on 3.11 to 3.13 (except 3.13.0-3.13.2, rabbitmq-server issue #11331). RabbitMQ 4.0 no
 * longer interprets x-* headers set by clients: there the count restarts at 1 after every
 * republish, so count attempts with a header of your own or a quorum queue's delivery limit.
 *
 * Connections: a consumer owns TWO connections to the same URL, one that consumes and one that
 * publishes retries and dead letters (its hd_publisher's). RabbitMQ blocks a publishing
 * connection under memory pressure (flow control); on a shared connection that would also
 * stop the acks that free the memory. And librabbitmq allows one asynchronous reader per
 * connection (amqp.h): the publisher reading confirms would swallow the deliveries.
 *
 * Threads: a consumer is used by one thread. Run one consumer per thread for parallelism;
 * prefetch spreads the work between them.
 */
#ifndef HERALD_CONSUMER_H
#define HERALD_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "herald/amqp.h"
#include "herald/delivery.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/retry.h"
#include "herald/stop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_consumer hd_consumer;

/* basic.qos prefetch count 0 means "no limit" in AMQP. */
#define HD_PREFETCH_UNLIMITED (-1)

/* Header names a dead letter carries. */
#define HD_HEADER_REASON   "x-herald-reason"   /* text: why it died */
#define HD_HEADER_ATTEMPTS "x-herald-attempts" /* integer: deliveries it got */
#define HD_HEADER_QUEUE    "x-herald-queue"    /* text: the work queue it died in */

typedef struct hd_consumer_options {
    const char *queue;            /* required: the work queue (copied) */
    hd_consume_fn handler;        /* required */
    void *ctx;                    /* handed to the handlers untouched */
    int prefetch;                 /* unacked messages held at most; 0 = 1 (strict fair
                                     dispatch); HD_PREFETCH_UNLIMITED = no limit */
    const hd_retry_policy *retry; /* copied; NULL = hd_retry_policy_default */
    const hd_registry *registry;  /* borrowed, may be NULL: decode bodies as envelopes and
                                     dead-letter the undecodable ones at once */
    int declare;                  /* 1 = declare the topology (hd_consumer_declare) on open
                                     and after every reconnect */
    const hd_amqp_options *amqp;  /* for both connections; NULL = defaults */
    int confirm_timeout_ms;       /* wait for the confirm of a retry/dead letter; 0 = 10000
                                     (the forwarding publisher's confirm_timeout_ms) */

    /* Group commit (optional): with batch_handler set, poll gathers up to batch_max
     * deliveries that have already arrived (bounded by the prefetch) and hands them over in
     * one call; OK acks them all with one multiple ack. See hd_consume_batch_fn. */
    hd_consume_batch_fn batch_handler;
    size_t batch_max; /* 0 = the prefetch (at most 256) */

    int idle_wait_ms; /* hd_consumer_run's longest wait for a frame when idle; a frame or a
                         stop ends it at once; 0 = 1000. Keep it under the heartbeat. */
} hd_consumer_options;

/* What a consumer has done since it was opened (a plain value). */
typedef struct hd_consumer_counts {
    uint64_t delivered;   /* deliveries received */
    uint64_t acked;       /* handled OK */
    uint64_t retried;     /* sent to a delay tier */
    uint64_t dead;        /* sent to the dead-letter queue */
    uint64_t redelivered; /* deliveries that came with redelivered = 1 */
    uint64_t requeued;    /* handed back because a retry/dead letter could not be sent */
    uint64_t reconnects;  /* successful reconnects */
    uint64_t cancelled;   /* basic.cancel from the broker (queue deleted, or its node down),
                             each followed by a new basic.consume on the same channel */
} hd_consumer_counts;

/* ---- topology ------------------------------------------------------------------------- */

/* hd_retry_declare (retry.h), under the consumer's name: declare the work queue `queue`
 * (durable, classic), its retry exchange, one delay queue per distinct tier of p (NULL = the
 * default policy), the bindings and the dead-letter queue, on connection a's main channel
 * (borrowed). Idempotent. Returns 0, HD_ECONFIG (bad policy), HD_ERANGE (a
 * name too long) or the topology module's errors (HD_EAMQP with the broker's reason). The
 * work queue's own bindings (to the application's exchanges) are the caller's. */
int hd_consumer_declare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err);

/* hd_retry_undeclare: delete everything hd_consumer_declare declared (tests and tutorial
 * chapters clean up with it). Keeps going past failures and returns the first. */
int hd_consumer_undeclare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err);

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Connect twice to url (see "Connections"), declare the topology when opts->declare, set the
 * prefetch and start consuming opts->queue with manual acks. *out is new (free with
 * hd_consumer_close). Returns 0, HD_EINVAL/HD_ECONFIG (options), or hd_amqp_open's and the
 * broker's errors (HD_EAMQP with "404 NOT_FOUND" when the queue does not exist). */
int hd_consumer_open(const char *url, const hd_consumer_options *opts, hd_consumer **out,
                     hd_error *err);

/* Close both connections and free. Messages delivered and not acked go back to the queue
 * (the broker redelivers them with redelivered = 1). NULL is fine. */
void hd_consumer_close(hd_consumer *c);

/* ---- consuming ------------------------------------------------------------------------ */

/* Wait at most timeout_ms (0 = only what has arrived) for one delivery (or one batch), run
 * the handler and settle the message(s): ack, retry, dead-letter. Returns the number of
 * deliveries handled (0 when none came in time), or:
 *   HD_ECLOSED  a connection is broken: call hd_consumer_reconnect (unacked messages are
 *               redelivered by the broker)
 *   HD_EAMQP    the broker closed the consuming channel, or refused a retry/dead letter (the
 *               message was requeued), or a re-subscription after a cancel was refused
 *               (the queue is gone and `declare` is off, or its node is down)
 * A basic.cancel from the broker (the queue was deleted; a classic queue whose node went
 * down; hd_amqp advertises consumer_cancel_notify, which librabbitmq 0.11 does not by itself)
 * is not an error: the poll that reads it returns what it handled, and the next poll (or
 * hd_consumer_wait, which returns at once) subscribes again ON THE SAME CHANNEL, redeclaring
 * the queue first when `declare` is set. The channel stays open on purpose: deliveries
 * received before the cancel are still being handled and are acked on it; closing it would
 * hand them back to the queue and have them processed twice. Counted in counts.cancelled.
 *   HD_ENACKED, HD_ERETURNED, HD_ETIMEOUT  a retry/dead letter was not confirmed (the
 *               message was requeued, not acked; back off before the next poll)
 * Handlers run inside this call, in the caller's thread. */
int hd_consumer_poll(hd_consumer *c, int timeout_ms, hd_error *err);

/* Wait up to timeout_ms (negative: no limit) until a frame may be there to read (the
 * consuming socket is readable, or librabbitmq has buffered frames, or the consumer is not
 * consuming and a poll would repair it) or stop (borrowed; may be NULL) is requested,
 * whichever comes first. Reads nothing: follow with hd_consumer_poll(c, 0, err).
 * Returns 1 (poll now), 0 (time ran out), HD_EINTR (stopped), HD_EINVAL or HD_EIO. */
int hd_consumer_wait(hd_consumer *c, const hd_stop *stop, int timeout_ms);

/* Reconnect what is broken (hd_amqp_reconnect: capped exponential backoff with jitter),
 * redeclare when opts->declare, set the prefetch and consume again. Returns 0, HD_EINTR when
 * stop (borrowed; may be NULL) was requested — a backoff sleep ends at once —, or a
 * permanent failure (HD_EAUTH, HD_EURL, the broker refusing the declarations). */
int hd_consumer_reconnect(hd_consumer *c, const hd_stop *stop, hd_error *err);

/* Poll until stop (borrowed; NULL: forever) is requested, reconnecting after connection
 * losses and backing off after refused retries. Idle, it waits on the socket and the stop
 * together (hd_consumer_wait, up to opts->idle_wait_ms): a stop ends the wait at once, not
 * at its timeout. Returns 0 when stopped, or the first permanent failure. */
int hd_consumer_run(hd_consumer *c, const hd_stop *stop, hd_error *err);

/* ---- looking in ----------------------------------------------------------------------- */

void hd_consumer_get_counts(const hd_consumer *c, hd_consumer_counts *out);

/* The work queue's name and the effective retry policy. Borrowed from c. */
const char *hd_consumer_queue(const hd_consumer *c);
const hd_retry_policy *hd_consumer_policy(const hd_consumer *c);

/* The socket of the consuming connection, for poll(2) over several consumers, and whether
 * frames are already buffered in librabbitmq (then do not wait on the socket). */
int hd_consumer_fd(hd_consumer *c);
int hd_consumer_has_buffered(hd_consumer *c);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_CONSUMER_H */
