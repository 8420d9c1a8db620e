/* raw_chain.h — the broker's raw limit for a two-hop event chain, with librabbitmq alone
 * (no herald code, no database): the same broker operations per event as the example
 * system's notification path, run as a pipeline of three stages on their own threads and
 * connections, all at once:
 *
 *   stage 1 (the users relay)        confirmed publish of n persistent events (key "event"),
 *                                    at most `window` unconfirmed
 *   stage 2 (notifications service)  consume them from queue_in (prefetch, one basic.ack
 *                                    each) and, for each, a confirmed publish of a
 *                                    notification_sent (key "sent"), at most `window`
 *                                    unconfirmed
 *   stage 3 (a subscriber)           consume those from queue_out (prefetch, ack each)
 *
 * Both publishing stages publish with the properties of spec->shape: bare, or those herald's
 * relays put on an event (raw_broker.h, bench_shape), which the broker pays for.
 *
 * rate = n / seconds from the moment every stage is ready (connections open, consumers
 * registered) to stage 3's n-th ack. The caller declares exchange and the two queues: queue_in
 * bound with "event", queue_out with "sent" (both empty). out->probe, when set by the caller,
 * is sampled over the same span. Progress on stderr. HD_ENACKED when the broker nacked any,
 * HD_ETIMEOUT when a stage saw nothing for BENCH_STALL_MS.
 *
 * Paced (rate > 0), it is the broker's latency floor instead: stage 1 publishes event k at
 * start + k / rate, as the latency phase commits, and the times are kept per event —
 * published_ns[k] just before stage 1 publishes it, delivered_ns[k] when stage 2 has it (one
 * consumer of one queue: the k-th delivery is event k). delivered - published is what the
 * broker alone adds between a relay's publish and a service's consume, at that rate on that
 * machine at that moment. */
#ifndef HERALD_BENCH_RAW_CHAIN_H
#define HERALD_BENCH_RAW_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "proc_stats.h"
#include "raw_broker.h"

typedef struct bench_chain_spec {
    const char *url;        /* broker (borrowed) */
    const char *exchange;   /* where both stages publish (borrowed, declared by the caller) */
    const char *queue_in;   /* bound with "event": stage 2 consumes it (borrowed) */
    const char *queue_out;  /* bound with "sent": stage 3 consumes it (borrowed) */
    size_t n;               /* events */
    size_t event_bytes;     /* body of the events */
    size_t sent_bytes;      /* body of the notification_sent messages */
    size_t window;          /* unconfirmed publishes per publishing stage */
    int prefetch;           /* per consuming stage, 1..65535 */
    double rate;            /* events/s stage 1 offers; 0 = as fast as the window allows */
    bench_shape shape;      /* the messages' properties (raw_broker.h); 0 = bare */
    const char *event_type; /* their type property in the CloudEvents shape (borrowed; NULL: */
    const char *sent_type;  /* the routing key) */
    int64_t *published_ns;  /* n entries or NULL (borrowed): hd_clock_ns() of each publish */
    int64_t *delivered_ns;  /* n entries or NULL (borrowed): hd_clock_ns() of stage 2's receipt */
} bench_chain_spec;

/* Runs the chain (spec borrowed). out (borrowed) receives the timing; out->messages is the
 * number of notification_sent messages stage 3 consumed. */
int bench_raw_chain(const bench_chain_spec *spec, bench_span *out, hd_error *err);

#endif
