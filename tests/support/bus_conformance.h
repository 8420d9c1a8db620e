/* bus_conformance.h — one set of test cases for every integration event bus.
 *
 * bus.h promises the same vocabulary and the same state rules on every implementation: a
 * consumer registers for event types of a topic before startup, each registration gets its
 * own copy of an event of one of its types (once, however many of its types match), an event
 * nobody registered for is dropped without an error, the delivery says the event's type, id
 * and correlation id, raw bytes arrive unchanged, a registry decodes envelopes. Those cases
 * live here, written once against the interface; each program picks its targets:
 *
 *     tests/unit/test_bus_conformance_memory.c     the in-memory bus
 *     tests/integration/test_bus_conformance.c     RabbitMQ (HD_AMQP_URL), Redis (HD_REDIS_URL)
 *
 * What the buses do NOT share is not here: RETRY and REJECT (a delay tier and a dead-letter
 * queue on RabbitMQ, the tail of a FIFO in memory, nothing at all on Redis pub/sub) and what
 * survives a consumer that is down; their own tests cover those.
 *
 * Include after the cmocka prelude (see hd_test.h).
 */
#ifndef HD_BUS_CONFORMANCE_H
#define HD_BUS_CONFORMANCE_H

#include "herald/bus.h"
#include "herald/envelope.h"

typedef struct hd_bus_conf_target {
    const char *name; /* "memory", "rabbitmq", "redis" */
    /* A new bus, not started; registry (borrowed, may be NULL) decodes envelopes. */
    hd_bus *(*make)(void *ctx, const hd_registry *registry);
    /* Delete what the bus left on a shared server (queues, exchanges), before it is freed.
     * May be NULL. */
    void (*cleanup)(void *ctx, hd_bus *bus);
    void *ctx;
} hd_bus_conf_target;

/* Run the cases on target t (each case gets topics no other run uses). Returns the number of
 * failed cases (cmocka). */
int hd_bus_conf_run(const hd_bus_conf_target *t);

#endif
