/* raw_broker.h — the broker's raw limits, with librabbitmq alone (no herald publisher or
 * consumer): the denominators every benchmark compares herald with, measured the same way in
 * all of them. Also the broker setup they share: an admin connection, the server's version,
 * durable declarations, queue depths, teardown.
 *
 *   raw publish   n persistent messages of body_bytes bytes, publisher confirms, at most
 *                 `window` unconfirmed: the broker flushes many at once and confirms them with
 *                 one multiple ack. rate = confirmed messages / seconds from the first publish
 *                 to the last confirm.
 *   raw consume   n messages drained with basic.consume, prefetch `prefetch`, one basic.ack per
 *                 message (the plain consumer loop). The clock starts before basic.consume
 *                 (deliveries start there) and stops at the n-th ack.
 *
 * Both open their own connection (connection names "bench raw publish" / "bench raw
 * consume"), and fail with HD_ETIMEOUT when nothing arrives for BENCH_STALL_MS. */
#ifndef HERALD_BENCH_RAW_BROKER_H
#define HERALD_BENCH_RAW_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/error.h"
#include "proc_stats.h"

#define BENCH_STALL_MS 30000 /* no progress for this long: give up on the phase */

/* ---- setup ---------------------------------------------------------------------------- */

/* Opens an admin connection ("bench admin") to url into *admin (new: bench_broker_close it)
 * and writes the server's "version" property in version (cap bytes; "?" when absent). */
int bench_broker_open(const char *url, hd_amqp **admin, char *version, size_t cap, hd_error *err);

/* A durable topic exchange, as herald's relays declare theirs (so that their own declare is
 * the idempotent no-op it is in production). Names are borrowed. */
int bench_broker_declare_exchange(hd_amqp *admin, const char *exchange, hd_error *err);

/* A durable classic queue bound to exchange (which must exist) with key ("#": everything). */
int bench_broker_declare_queue(hd_amqp *admin, const char *queue, const char *exchange,
                               const char *key, hd_error *err);

/* The same with a queue kind: "classic" (no version argument: the broker's default, version 1
 * on RabbitMQ 3.10 and 3.11), "classic-v2" (x-queue-version 2) or "quorum" (x-queue-type
 * quorum). Names are borrowed. HD_EINVAL for another kind. */
int bench_broker_declare_queue_kind(hd_amqp *admin, const char *queue, const char *exchange,
                                    const char *key, const char *kind, hd_error *err);
/* The same with the queue's type: HD_QUEUE_CLASSIC, or HD_QUEUE_QUORUM (replicated on every
 * node of a cluster, its leader on the node of admin's connection: RabbitMQ's default
 * leader locator is client-local). */
int bench_broker_declare_queue_type(hd_amqp *admin, const char *queue, const char *exchange,
                                    const char *key, int type, hd_error *err);

/* Ready messages in queue, or -1 (err set). */
long bench_queue_depth(hd_amqp *admin, const char *queue, hd_error *err);

/* Deletes queue then exchange (either may be NULL), ignoring errors, when admin is open. */
void bench_broker_drop(hd_amqp *admin, const char *queue, const char *exchange);

/* Closes and frees admin (stolen; NULL is fine). */
void bench_broker_close(hd_amqp *admin);

/* ---- confirms --------------------------------------------------------------------------- */

/* Settled flags by delivery tag, and the lowest tag not settled yet: acks and nacks may be
 * multiple (every unsettled tag up to the tag) or single, in any order. */
typedef struct bench_confirms {
    unsigned char *settled; /* n + 1 flags, tag 1..n (owned) */
    uint64_t low;           /* lowest unsettled tag */
    uint64_t acked, nacked;
} bench_confirms;

/* For tags 1..n: 0, or HD_ENOMEM. */
int bench_confirms_init(bench_confirms *c, size_t n);
void bench_confirms_free(bench_confirms *c);

/* One basic.ack (ack = 1) or basic.nack (ack = 0). next is the tag of the next publish: a tag
 * at or above it is not ours (a broker bug or another channel's) and is ignored rather than
 * written out of bounds. Tags already settled are not counted twice. */
void bench_confirm_settle(bench_confirms *c, uint64_t tag, int multiple, int ack, uint64_t next);

/* ---- what a raw message carries ------------------------------------------------------ */

/* The properties of a raw message, beside its body.
 *   BENCH_SHAPE_BARE         delivery mode 2 and content type application/octet-stream: the
 *                            denominators' messages up to the seventh pass of issue 14,
 *                            still measured and printed beside the like-for-like ones.
 *   BENCH_SHAPE_CLOUDEVENTS  what herald's relays put on every event, so that the broker
 *                            does the same work per message as for herald's (CloudEvents'
 *                            AMQP binding, binary attributes): content type
 *                            application/cloudevents+json, type, a message id and a
 *                            correlation id of 36 characters unique to the message, a
 *                            causationid header of 36 characters, and the mandatory flag.
 *                            Not in it: herald's own x-herald-seq header (how its publisher
 *                            matches a returned message to its publish), whose cost stays on
 *                            herald's side of the ratio.
 * Why it matters: RabbitMQ decodes and stores the properties with the body. On the 2-core VM
 * of docs/bench.md the CloudEvents shape made raw publish 10-20 % slower and cost the broker
 * 25-40 us more CPU a message ("Issue 14, eighth pass"). */
typedef enum { BENCH_SHAPE_BARE = 0, BENCH_SHAPE_CLOUDEVENTS } bench_shape;

/* The properties of one message of a shape, rewritten per message by bench_props_next. Not
 * movable once initialised: props points into it. */
typedef struct bench_props {
    bench_shape shape;
    amqp_basic_properties_t props; /* what to publish with */
    int mandatory;                 /* the basic.publish flag */
    amqp_table_entry_t header[1];
    char id[40], correlation[40], causation[40];
} bench_props;

/* Sets p up for shape; type (borrowed: it must outlive p) becomes the type property. */
void bench_props_init(bench_props *p, bench_shape shape, const char *type);

/* Message k's ids (the CloudEvents shape: distinct for every k and salt; bare: nothing). */
void bench_props_next(bench_props *p, uint64_t salt, uint64_t k);

/* ---- the raw phases ------------------------------------------------------------------- */

/* Raw confirmed publish of n persistent messages (body_bytes of 'x', the properties of shape,
 * type routing_key) to exchange with routing_key. out (borrowed) receives the timing
 * (out->probe, when set by the caller, is sampled over the same span); out->messages is the
 * number confirmed. HD_ENACKED when the broker nacked any, HD_EINVAL when it returned one
 * (unroutable: the caller's binding is missing). Progress on stderr. */
int bench_raw_publish(const char *url, const char *exchange, const char *routing_key, size_t n,
                      size_t body_bytes, size_t window, bench_shape shape, bench_span *out,
                      hd_error *err);

/* Raw consume of n messages from queue, prefetch 1..65535, one basic.ack each. out as above. */
int bench_raw_consume(const char *url, const char *queue, size_t n, int prefetch, bench_span *out,
                      hd_error *err);

/* ---- a sink drained while the benchmark runs --------------------------------------------- */

/* A consumer of queue on a thread of its own (connection "bench sink"): prefetch `prefetch`,
 * one basic.ack per message, the raw consume's loop, until bench_sink_stop. A queue that
 * grows for a whole run costs the broker more per message than one that is drained (its
 * process heap, paging to the message store: bench/broker/README.md), so a benchmark whose
 * raw reference consumes a queue consumes it too. */
typedef struct bench_sink bench_sink;

/* Starts it into *out (new: bench_sink_stop frees it). url and queue are copied. */
int bench_sink_start(const char *url, const char *queue, int prefetch, bench_sink **out,
                     hd_error *err);

/* Messages consumed and acked so far (any thread). */
size_t bench_sink_count(const bench_sink *s);

/* Stops and frees s (stolen; NULL is fine). Returns the messages consumed, or a negative code
 * when the consumer failed (err set: what failed, and after how many). */
long bench_sink_stop(bench_sink *s, hd_error *err);

#endif
