/* herald/bus_rabbit.h — the integration event bus on RabbitMQ.
 *
 * The mapping of the Python `events` package's RabbitMQ bus (docs/README.md, "The systems
 * herald re-implements"), made durable and reliable:
 *
 *   topic       a durable exchange named after the topic (type topic by default, so that an
 *               event type registered as "users.*" or "users.#" works as a pattern)
 *   consumer    a durable queue "<topic>.<consumer>", bound to the topic's exchange once per
 *               event type (the routing key), with retry tiers and a dead-letter queue
 *               (consumer.h: "<topic>.<consumer>.retry.<ms>ms", "<topic>.<consumer>.dlq")
 *   send        persistent, confirmed by the broker before hd_bus_send returns; routed by the
 *               event type; an event no queue is bound for is dropped (publish/subscribe: the
 *               producer does not know its consumers)
 *   poll        one hd_consumer per registration (manual ack, prefetch, retries, DLQ); poll
 *               waits on all their sockets at once and runs the handlers that have work
 *
 * Connections: one for sending, and two per registered consumer (consumer.h explains why a
 * consumer publishes its retries on a connection of its own).
 */
#ifndef HERALD_BUS_RABBIT_H
#define HERALD_BUS_RABBIT_H

#include "herald/amqp.h"
#include "herald/bus.h"
#include "herald/consumer.h"
#include "herald/envelope.h"
#include "herald/retry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_bus_rabbit_options {
    int direct_exchange;          /* 1: topics are direct exchanges (exact types only);
                                     0 (default): topic exchanges */
    int prefetch;                 /* per consumer, as hd_consumer_options (0 = 1) */
    const hd_retry_policy *retry; /* copied; NULL = hd_retry_policy_default */
    const hd_registry *registry;  /* borrowed, may be NULL: decode and dead-letter the
                                     undecodable, as hd_consumer_options */
    const hd_amqp_options *amqp;  /* copied; NULL = defaults */
} hd_bus_rabbit_options;

/* A new RabbitMQ bus for url (checked now, connected at startup). opts may be NULL and is
 * copied. *out is new (free with hd_bus_free). Returns 0, HD_EURL or HD_ENOMEM. */
int hd_bus_rabbit_new(const char *url, const hd_bus_rabbit_options *opts, hd_bus **out,
                      hd_error *err);

/* Delete what the registrations declared: every "<topic>.<consumer>" queue with its retry
 * tiers and DLQ, and the topics' exchanges. For tests and tutorial chapters, which must leave
 * a shared broker as they found it; a real deployment keeps its queues. Works in any state
 * (connects for the purpose when the bus is not started). Returns 0 or the first failure. */
int hd_bus_rabbit_undeclare(hd_bus *bus, hd_error *err);

/* The consumer behind registration (consumer, topic) while the bus is started, for its
 * counts; NULL otherwise. Borrowed from the bus. */
hd_consumer *hd_bus_rabbit_consumer(hd_bus *bus, const char *consumer, const char *topic);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BUS_RABBIT_H */
