/* herald/topology.h — exchanges, queues and bindings, declared from plain data.
 *
 * Producers publish to an EXCHANGE with a routing key; the exchange copies the message into
 * every QUEUE whose BINDING matches the key; consumers read queues. Which queues match depends
 * on the exchange type:
 *
 *   direct   binding key == routing key              ("user.created" gets "user.created")
 *   fanout   every bound queue, the key is ignored
 *   topic    binding key is a pattern of dot-separated words: '*' matches exactly one word,
 *            '#' zero or more ("user.*" gets "user.created", not "user.email.changed";
 *            "user.#" gets both, and "user")
 *   headers  binding arguments match message headers (x-match = all | any)
 *
 * A message that matches no binding is dropped — or, when published "mandatory", returned
 * to the publisher (see publisher.h).
 *
 * Declarations are idempotent: declaring what already exists with the SAME properties is a
 * no-op, so every program declares the topology it needs at start-up, in any order. Declaring
 * it with DIFFERENT properties (durable vs not, another x-message-ttl...) is refused by the
 * broker with 406 PRECONDITION_FAILED, which closes the channel; these functions report
 * HD_EAMQP with the broker's text and the connection's main channel is reopened, so the
 * connection stays usable. To change a queue's arguments, delete it (or use a new name).
 *
 * The whole topology of an application is data:
 *
 *     static const hd_exchange_spec exchanges[] = {
 *         { .name = "users", .type = HD_EXCHANGE_TOPIC, .durable = 1 },
 *     };
 *     static const hd_queue_spec queues[] = {
 *         { .name = "notifications.user_events", .durable = 1, .type = HD_QUEUE_QUORUM,
 *           .dead_letter_exchange = "users.dlx", .delivery_limit = 5 },
 *     };
 *     static const hd_binding_spec bindings[] = {
 *         { .queue = "notifications.user_events", .exchange = "users", .key = "users.#" },
 *     };
 *     static const hd_topology topo = HD_TOPOLOGY(exchanges, queues, bindings);
 *     rc = hd_topology_declare(amqp, &topo, &err);
 *
 * All functions run on the connection's main channel (hd_amqp_channel). Every string in a
 * spec is borrowed for the duration of the call only.
 */
#ifndef HERALD_TOPOLOGY_H
#define HERALD_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest AMQP name (exchange, queue, routing key) is 255 bytes: a "short string". */
#define HD_AMQP_NAME_MAX 255

typedef enum hd_exchange_type {
    HD_EXCHANGE_DIRECT = 0, /* the zero value: what an omitted .type means */
    HD_EXCHANGE_FANOUT,
    HD_EXCHANGE_TOPIC,
    HD_EXCHANGE_HEADERS
} hd_exchange_type;

/* "direct", "fanout", "topic", "headers"; NULL for an unknown value. Static string. */
const char *hd_exchange_type_name(hd_exchange_type t);

typedef struct hd_exchange_spec {
    const char *name; /* required; names starting with "amq." are reserved */
    hd_exchange_type type;
    int durable;     /* survives a broker restart (the exchange, not its messages) */
    int auto_delete; /* deleted when its last binding is removed */
    int internal;    /* only other exchanges may publish to it */
} hd_exchange_spec;

typedef enum hd_queue_type {
    HD_QUEUE_CLASSIC = 0, /* single node; any flags */
    HD_QUEUE_QUORUM       /* replicated (Raft); must be durable and not exclusive; supports a
                             delivery limit, which is what stops a poison message */
} hd_queue_type;

typedef struct hd_queue_spec {
    const char *name;                 /* NULL or "" = let the broker name it ("amq.gen-..."); such a
                                         queue is usually exclusive */
    int durable;                      /* the queue survives a broker restart (persistent messages in
                                         it do too) */
    int exclusive;                    /* only this connection may use it; deleted when it closes */
    int auto_delete;                  /* deleted when its last consumer cancels */
    hd_queue_type type;               /* x-queue-type */
    const char *dead_letter_exchange; /* x-dead-letter-exchange: where rejected, expired
                                         and over-limit messages go; NULL = dropped */
    const char *dead_letter_routing_key; /* x-dead-letter-routing-key; NULL = keep the key */
    int64_t message_ttl_ms;              /* x-message-ttl; 0 = no TTL (messages never expire) */
    int64_t delivery_limit;              /* x-delivery-limit, quorum only; 0 = none */
    int64_t max_length;                  /* x-max-length in messages; 0 = unbounded */
    int dead_letter_at_least_once;       /* quorum only, with a dead_letter_exchange: 1 =
                                            x-dead-letter-strategy at-least-once (the source keeps
                                            a message until the target queue confirmed it; the
                                            default, at-most-once, loses it if the target is
                                            unreachable at that moment) and, as RabbitMQ requires
                                            for it, x-overflow reject-publish. Since 3.10. */
} hd_queue_spec;

typedef struct hd_binding_spec {
    const char *queue;      /* required */
    const char *exchange;   /* required; "" (the default exchange) cannot be bound */
    const char *key;        /* binding key or topic pattern; NULL = "" */
    const hd_amqp_kv *args; /* headers exchanges: "x-match" and the header values to match;
                               NULL when n_args is 0 */
    size_t n_args;
} hd_binding_spec;

/* A topology: three arrays, declared in that order (exchanges, queues, bindings). */
typedef struct hd_topology {
    const hd_exchange_spec *exchanges;
    size_t n_exchanges;
    const hd_queue_spec *queues;
    size_t n_queues;
    const hd_binding_spec *bindings;
    size_t n_bindings;
} hd_topology;

#define HD_COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
/* Build an hd_topology from three arrays (not pointers: the counts come from sizeof). */
#define HD_TOPOLOGY(ex, qs, bs)                                                                    \
    {                                                                                              \
        (ex), HD_COUNT_OF(ex), (qs), HD_COUNT_OF(qs), (bs), HD_COUNT_OF(bs)                        \
    }

/* What the broker says about a queue after a declare. */
typedef struct hd_queue_info {
    char name[HD_AMQP_NAME_MAX + 1]; /* the name; the generated one for anonymous queues */
    uint32_t message_count;          /* ready messages (not those delivered and unacked) */
    uint32_t consumer_count;
} hd_queue_info;

/* ---- queue arguments, without a broker ------------------------------------------------ */

#define HD_QUEUE_ARGS_MAX 8

/* The x-arguments of a queue declare as an amqp_table_t. Fill with hd_queue_args_init; use
 * args.table. Do not copy the struct: table.entries points into it. The string values
 * borrow the spec's strings. */
typedef struct hd_queue_args {
    amqp_table_entry_t entries[HD_QUEUE_ARGS_MAX];
    amqp_table_t table;
} hd_queue_args;

/* Build the arguments of spec into *args (x-queue-type, x-dead-letter-exchange,
 * x-dead-letter-routing-key, x-message-ttl, x-delivery-limit, x-max-length,
 * x-dead-letter-strategy and x-overflow; only those set). Returns 0, or HD_EINVAL for a combination
 * the broker would refuse anyway, with the reason in err: a quorum queue that is not durable or is
 * exclusive, a delivery limit on a classic queue, a negative number. */
int hd_queue_args_init(hd_queue_args *args, const hd_queue_spec *spec, hd_error *err);

/* "classic" or "quorum" (a setting such as HD_QUEUE_TYPE) into *out; NULL or "" is classic.
 * Returns 0 or HD_ECONFIG naming the accepted values. */
int hd_queue_type_parse(const char *text, hd_queue_type *out, hd_error *err);

/* "classic" or "quorum". Borrowed static string. */
const char *hd_queue_type_name(hd_queue_type t);

/* ---- single declarations --------------------------------------------------------------- */

/* Declare (create or confirm) an exchange. HD_EAMQP if it exists with other properties. */
int hd_exchange_declare(hd_amqp *a, const hd_exchange_spec *spec, hd_error *err);

/* Declare a queue; *info (may be NULL) receives its name and counts. */
int hd_queue_declare(hd_amqp *a, const hd_queue_spec *spec, hd_queue_info *info, hd_error *err);

/* Look at an existing queue without creating it (a passive declare): its counts in *info
 * (may be NULL). HD_ENOTFOUND when there is no such queue. */
int hd_queue_inspect(hd_amqp *a, const char *name, hd_queue_info *info, hd_error *err);

/* Bind a queue to an exchange with spec->key (and spec->args). Binding twice is a no-op. */
int hd_queue_bind(hd_amqp *a, const hd_binding_spec *spec, hd_error *err);

/* Remove a binding (same key and args as the bind). */
int hd_queue_unbind(hd_amqp *a, const hd_binding_spec *spec, hd_error *err);

/* Drop every ready message of a queue; *purged (may be NULL) receives how many. */
int hd_queue_purge(hd_amqp *a, const char *name, uint32_t *purged, hd_error *err);

/* Delete a queue and its messages; *deleted (may be NULL) receives how many messages went
 * with it. Deleting a queue that does not exist is not an error (RabbitMQ answers delete-ok). */
int hd_queue_delete(hd_amqp *a, const char *name, uint32_t *deleted, hd_error *err);

/* Delete an exchange (its bindings go with it). A missing exchange is not an error. */
int hd_exchange_delete(hd_amqp *a, const char *name, hd_error *err);

/* ---- a whole topology ----------------------------------------------------------------- */

/* Declare every exchange, then every queue, then every binding of t. Stops at the first
 * failure; err names the item ("queue 'orders': 406 PRECONDITION_FAILED - ..."). What was
 * declared before the failure stays declared (declarations are not transactional). */
int hd_topology_declare(hd_amqp *a, const hd_topology *t, hd_error *err);

/* Delete the named queues and exchanges of t (bindings go with them), for tests and
 * tutorial chapters that clean up. Anonymous queues are skipped (they die with the
 * connection). Keeps going past failures; returns the first one. */
int hd_topology_delete(hd_amqp *a, const hd_topology *t, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_TOPOLOGY_H */
