/* herald/bus.h — the integration event bus: send events to a topic, register consumers.
 *
 * The bus of the Python `events` package herald re-implements (docs/README.md, "The systems
 * herald re-implements"): producers SEND an integration event to a TOPIC; a CONSUMER
 * REGISTERS for some event types of a topic; the bus is STARTED UP before use and SHUT DOWN
 * after. What a topic and a consumer are depends on the technology
 * underneath, so the bus is an interface with two implementations:
 *
 *   RabbitMQ (bus_rabbit.h)  a topic is an exchange; a consumer is a durable queue named
 *                            "<topic>.<consumer>", bound with each event type as routing key;
 *                            each consumer has retry tiers and a dead-letter queue (consumer.h)
 *   in memory (bus_memory.h) the same semantics synchronously, inside one process, for unit
 *                            tests of the code that uses a bus
 *
 * Both route by event type, give every registered consumer its own copy of an event, drop
 * events nobody registered for (publish/subscribe: a producer does not know its consumers),
 * retry a handler that answers RETRY and dead-letter what it REJECTs or keeps failing.
 *
 * The interface is a table of function pointers, the way SQLite hides the operating system
 * behind its VFS: an implementation embeds `hd_bus` as the FIRST member of its own struct and
 * points it at its methods. The hd_bus_* functions below check the lifecycle and then call
 * the method, so every implementation gets the same state rules for free:
 *
 *     new --register*--> startup --send* / poll*--> shutdown --> free
 *
 * register after startup, send or poll before startup or after shutdown, startup twice and
 * shutdown when not started all fail with HD_ESTATE. hd_bus_free works in any state (it
 * shuts down first).
 *
 *     hd_bus *bus = hd_bus_memory_new(NULL);
 *     const char *types[] = {"users.user_registered"};
 *     hd_bus_register(bus, "email", "users", types, 1, on_user_event, &app, &err);
 *     hd_bus_startup(bus, &err);
 *     hd_bus_send(bus, "users", env, &err);
 *     hd_bus_poll(bus, 0, &err);              // on_user_event runs here
 *     hd_bus_free(bus);
 */
#ifndef HERALD_BUS_H
#define HERALD_BUS_H

#include <stddef.h>

#include "herald/delivery.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/stop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_bus hd_bus;

/* One registration: `consumer` receives the events of `types` sent to `topic`. The strings
 * and the array are borrowed for the call (implementations copy them); ctx is kept and
 * handed to handler untouched. */
typedef struct hd_bus_registration {
    const char *consumer;
    const char *topic;
    const char *const *types;
    size_t n_types;
    hd_consume_fn handler;
    void *ctx;
} hd_bus_registration;

/* One event on its way: already encoded. All borrowed for the call. */
typedef struct hd_bus_message {
    const char *topic;
    const char *type; /* the routing key */
    const void *body;
    size_t len;
    const char *message_id;     /* NULL = none */
    const char *correlation_id; /* NULL = none */
    const char *content_type;   /* NULL = none */
} hd_bus_message;

/* The methods of an implementation. Each gets the hd_bus it was installed in; the generic
 * functions have already checked the arguments and the lifecycle state. */
typedef struct hd_bus_methods {
    const char *name; /* "memory", "rabbitmq": for messages */
    int (*add_consumer)(hd_bus *bus, const hd_bus_registration *reg, hd_error *err);
    int (*startup)(hd_bus *bus, hd_error *err);
    int (*send)(hd_bus *bus, const hd_bus_message *msg, hd_error *err);
    /* Deliver what is waiting, waiting at most timeout_ms for something to arrive; return
     * the number of deliveries handled (>= 0) or a negative code. */
    int (*poll)(hd_bus *bus, int timeout_ms, hd_error *err);
    int (*shutdown)(hd_bus *bus, hd_error *err);
    void (*destroy)(hd_bus *bus); /* free everything; called once, after shutdown */
} hd_bus_methods;

typedef enum hd_bus_state { HD_BUS_NEW = 0, HD_BUS_STARTED, HD_BUS_STOPPED } hd_bus_state;

/* The base every implementation embeds first. Implementations set methods and leave state
 * to the generic functions. */
struct hd_bus {
    const hd_bus_methods *methods;
    hd_bus_state state;
    /* Borrowed from hd_bus_run while it runs, else NULL: poll waits on it too (hd_stop_poll,
     * hd_stop_wait_ms), so that a stop ends an idle wait at once. */
    const hd_stop *stop;
};

/* Register `consumer` for `types` (n_types >= 1, non-empty strings) of `topic`, delivered to
 * handler(ctx, delivery). Only before startup: the registrations are the topology the bus
 * builds when it starts. Returns 0, HD_EINVAL, HD_EEXIST (the same consumer registered twice
 * on one topic), HD_ESTATE or HD_ENOMEM. */
int hd_bus_register(hd_bus *bus, const char *consumer, const char *topic, const char *const *types,
                    size_t n_types, hd_consume_fn handler, void *ctx, hd_error *err);

/* Build the topology and start consuming. Returns 0, HD_ESTATE or the implementation's
 * failure (HD_ECONNECT, HD_EAMQP...). */
int hd_bus_startup(hd_bus *bus, hd_error *err);

/* Send env (borrowed) to topic: encoded as CloudEvents JSON, routed by its type, with its id
 * as the message id and its correlation id. An event no consumer registered for is dropped
 * and that is not an error. Returns 0 once the bus owns the event (for RabbitMQ: the broker
 * confirmed it), HD_ESTATE, HD_EINVAL, or the implementation's failure. */
int hd_bus_send(hd_bus *bus, const char *topic, const hd_envelope *env, hd_error *err);

/* Send bytes that are already encoded (a relay forwarding outbox rows, a test sending a
 * malformed body on purpose). msg is borrowed. Same returns as hd_bus_send. */
int hd_bus_send_raw(hd_bus *bus, const hd_bus_message *msg, hd_error *err);

/* Run handlers for what has arrived, waiting at most timeout_ms (0 = do not wait) when
 * nothing has. Returns the number of deliveries handled, HD_ESTATE, or a failure. */
int hd_bus_poll(hd_bus *bus, int timeout_ms, hd_error *err);

/* Poll until stop (borrowed; NULL: forever) is requested — a signal handler or another
 * thread calls hd_stop_request. An idle wait wakes at once on the stop. Returns 0 when
 * stopped, or the first failure the implementation could not recover from. */
int hd_bus_run(hd_bus *bus, const hd_stop *stop, hd_error *err);

/* Stop consuming and release connections; registrations are kept for the record. Returns 0
 * or HD_ESTATE when the bus was not started. */
int hd_bus_shutdown(hd_bus *bus, hd_error *err);

/* Shut down if started, then free the bus (the handlers' ctx pointers are not freed). NULL
 * is fine. */
void hd_bus_free(hd_bus *bus);

/* The state and the implementation's name ("memory", "rabbitmq"). */
hd_bus_state hd_bus_get_state(const hd_bus *bus);
const char *hd_bus_name(const hd_bus *bus);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BUS_H */
