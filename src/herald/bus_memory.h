/* herald/bus_memory.h — the integration event bus inside one process, for unit tests.
 *
 * Code that sends and handles integration events is tested best without a broker: fast,
 * deterministic, nothing to start. This bus keeps the RabbitMQ bus's SEMANTICS and drops its
 * machinery:
 *
 *   - routing by event type: an event reaches the consumers registered for its topic and
 *     type, each in its own FIFO queue ("<topic>.<consumer>", as on RabbitMQ); an event
 *     nobody registered for is dropped (and counted, see hd_bus_memory_dropped)
 *   - a handler's RETRY puts the message back at the END of its queue with attempt + 1, to be
 *     handled by a later poll; there is no delay (time is not modelled: a test that needs
 *     delays belongs with the broker)
 *   - REJECT, an exhausted retry budget, and (with a registry) an undecodable message go to
 *     the dead-letter list with their reason and attempts, where a test can inspect them
 *
 * Everything happens in the thread that calls hd_bus_send / hd_bus_poll: handlers run inside
 * hd_bus_poll, never inside send. Not thread-safe (neither is anything that uses it in a
 * test). Each poll handles the messages that were queued when it started, once each, so a
 * test sees one attempt per poll.
 */
#ifndef HERALD_BUS_MEMORY_H
#define HERALD_BUS_MEMORY_H

#include <stddef.h>

#include "herald/bus.h"
#include "herald/envelope.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_bus_memory_options {
    int max_attempts;            /* deliveries before dead-lettering; 0 = 4 (as
                                    hd_retry_policy_default) */
    const hd_registry *registry; /* borrowed, may be NULL: when set, bodies are decoded as
                                    envelopes (hd_delivery.envelope) and undecodable ones are
                                    dead-lettered at once, as the RabbitMQ bus does */
} hd_bus_memory_options;

/* A new in-memory bus (free with hd_bus_free); opts may be NULL (the defaults) and is copied.
 * NULL when memory runs out or max_attempts is negative. */
hd_bus *hd_bus_memory_new(const hd_bus_memory_options *opts);

/* A message that ended in the dead-letter list. Borrowed from the bus: valid until it is
 * freed. */
typedef struct hd_bus_dead_letter {
    const char *consumer;
    const char *topic;
    const char *type;
    const void *body;
    size_t len;
    const char *message_id; /* NULL when it had none */
    const char *reason;     /* the handler's reason, or the decoder's error */
    int attempts;           /* deliveries it got (1 when rejected at once) */
} hd_bus_dead_letter;

/* Dead letters so far, oldest first; 0 / NULL for a bus that is not an in-memory bus or an
 * index out of range. */
size_t hd_bus_memory_dead_count(const hd_bus *bus);
const hd_bus_dead_letter *hd_bus_memory_dead_letter(const hd_bus *bus, size_t i);

/* Messages waiting in all consumers' queues (retries included). */
size_t hd_bus_memory_pending(const hd_bus *bus);

/* Events sent that matched no registration. */
size_t hd_bus_memory_dropped(const hd_bus *bus);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BUS_MEMORY_H */
