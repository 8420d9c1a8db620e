/* notifications/topology.h — the broker topology of the example system, described once, as
 * data.
 *
 * herald-notifications declares its part from this description at start-up
 * (notif_topology_declare), and herald-admin topology prints and draws the same description,
 * so the picture in docs/topology.svg cannot say something the services do not do.
 *
 * The example system on the broker:
 *
 *   herald-users' relay        publishes users.* events to the topic exchange of their topic
 *                              (hd_relay_exchange_for: "users.user_registered" -> "users")
 *                              and declares that exchange
 *   herald-notifications       declares the users exchange as well (whoever starts first),
 *                              its work queue with the retry topology of the default policy
 *                              (hd_retry_topology_make: retry exchange, one delay queue per
 *                              tier, dead-letter queue) and one binding per consumed type
 *   its relay                  publishes notifications.* to the "notifications" exchange
 *                              (declared by the relay; nothing is bound to it: they are
 *                              announcements, published without mandatory)
 *
 * Known limit: the description uses the default retry policy because that is what the
 * service's consumer uses (hd_consumer_options.retry = NULL); a service that configures
 * another policy must pass it here too.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified.
 */
#ifndef NOTIFICATIONS_TOPOLOGY_H
#define NOTIFICATIONS_TOPOLOGY_H

#include <stddef.h>

#include "herald/amqp.h"
#include "herald/config.h"
#include "herald/error.h"
#include "herald/retry.h"
#include "herald/topology.h"

/* The defaults of HD_USERS_EXCHANGE and HD_NOTIFICATIONS_QUEUE (main.c's settings). */
#define NOTIF_TOPOLOGY_USERS_EXCHANGE "users"
#define NOTIF_TOPOLOGY_QUEUE          "users.notifications"

#define NOTIF_TOPOLOGY_MAX 16

/* Who publishes to an exchange, or consumes a queue (for the picture). */
typedef struct notif_topology_edge {
    const char *program; /* "herald-users (relay)" */
    const char *name;    /* the exchange or queue */
    const char *what;    /* "publishes users.*" */
} notif_topology_edge;

/* The whole example system. A plain value whose pointers point into itself: fill it with
 * notif_topology_make and do not copy it.
 *   all           every exchange, queue and binding, in declaration order
 *   *_by[i]       who declares all.exchanges[i] / all.queues[i] (static strings)
 *   retry         the work queue's retry topology (retry.h); its names say which queue is
 *                 the work queue, which the delay tiers and which the dead-letter queue
 *   consumed      what herald-notifications declares itself besides `retry`: the users
 *                 exchange and the work queue's bindings to it */
typedef struct notif_topology {
    hd_retry_topology retry;
    char relay_exchanges[2][HD_AMQP_NAME_MAX + 1];
    hd_exchange_spec exchanges[NOTIF_TOPOLOGY_MAX];
    const char *exchange_by[NOTIF_TOPOLOGY_MAX];
    hd_queue_spec queues[NOTIF_TOPOLOGY_MAX];
    const char *queue_by[NOTIF_TOPOLOGY_MAX];
    hd_binding_spec bindings[NOTIF_TOPOLOGY_MAX];
    hd_topology all;
    hd_topology consumed;
    notif_topology_edge publishers[4];
    size_t n_publishers;
    notif_topology_edge consumers[4];
    size_t n_consumers;
} notif_topology;

/* Fill *t for the users exchange and work queue names given (borrowed: they must outlive
 * t) and the work queue's retry policy p (borrowed; NULL = the default: classic queues).
 * Returns 0, HD_EINVAL (an empty name) or the errors of hd_retry_topology_make and
 * hd_relay_exchange_for, with the reason in err. Pure: no broker involved. */
int notif_topology_make(notif_topology *t, const char *users_exchange, const char *queue,
                        const hd_retry_policy *p, hd_error *err);

/* The retry policy of the work queue from the settings (cfg borrowed): the default policy
 * (retry.h) with HD_QUEUE_TYPE (classic|quorum, default classic) and HD_DELIVERY_LIMIT (quorum
 * only; default 20, HD_RETRY_DELIVERY_LIMIT_DEFAULT). herald-notifications declares and
 * consumes with it, herald-admin topology shows it. Returns 0 or HD_ECONFIG. */
int notif_topology_policy(const hd_config *cfg, hd_retry_policy *p, hd_error *err);

/* Declare herald-notifications' part of the topology on connection a (borrowed): the users
 * exchange, the work queue with its retry topology (hd_consumer_declare: an existing
 * dead-letter queue with other arguments is kept), and the bindings. Idempotent. Returns 0
 * or the topology module's error. */
int notif_topology_declare(hd_amqp *a, const char *users_exchange, const char *queue,
                           const hd_retry_policy *p, hd_error *err);

#endif /* NOTIFICATIONS_TOPOLOGY_H */
