/* notifications/topology.c — the example system's topology as data (topology.h). */
#include <string.h>

#include "herald/consumer.h"
#include "herald/relay.h"

#include "integration.h"
#include "topology.h"

#define BY_USERS_RELAY "herald-users (relay)"
#define BY_NOTIF       "herald-notifications"
#define BY_NOTIF_RELAY "herald-notifications (relay)"
#define BY_CONSUMER    "herald-notifications (consumer)"

static const char *const emitted_types[] = {NOTIFICATIONS_EVENT_SENT, NOTIFICATIONS_EVENT_FAILED};

/* Add exchange spec (or, when one of that name is there, add `by` to its declarers: both
 * the users relay and this service declare the users exchange, identically). */
static int add_exchange(notif_topology *t, const hd_exchange_spec *spec, const char *by,
                        const char *by_too, hd_error *err)
{
    for (size_t i = 0; i < t->all.n_exchanges; i++)
        if (strcmp(t->exchanges[i].name, spec->name) == 0) {
            if (by_too != NULL)
                t->exchange_by[i] = by_too;
            return 0;
        }
    if (t->all.n_exchanges == NOTIF_TOPOLOGY_MAX)
        return hd_error_set(err, HD_ERANGE, "topology: more than %d exchanges", NOTIF_TOPOLOGY_MAX);
    t->exchanges[t->all.n_exchanges] = *spec;
    t->exchange_by[t->all.n_exchanges++] = by;
    return 0;
}

static int add_queue(notif_topology *t, const hd_queue_spec *spec, const char *by, hd_error *err)
{
    if (t->all.n_queues == NOTIF_TOPOLOGY_MAX)
        return hd_error_set(err, HD_ERANGE, "topology: more than %d queues", NOTIF_TOPOLOGY_MAX);
    t->queues[t->all.n_queues] = *spec;
    t->queue_by[t->all.n_queues++] = by;
    return 0;
}

static int add_binding(notif_topology *t, const hd_binding_spec *spec, hd_error *err)
{
    if (t->all.n_bindings == NOTIF_TOPOLOGY_MAX)
        return hd_error_set(err, HD_ERANGE, "topology: more than %d bindings", NOTIF_TOPOLOGY_MAX);
    t->bindings[t->all.n_bindings++] = *spec;
    return 0;
}

/* The topic exchange the relay publishes `type` to, into buf; the spec it declares. */
static int relay_exchange(const char *type, char *buf, hd_exchange_spec *spec, hd_error *err)
{
    int rc = hd_relay_exchange_for(type, buf, HD_AMQP_NAME_MAX + 1);
    if (rc < 0)
        return hd_error_set(err, rc, "topology: no exchange for event type '%s'", type);
    /* What the relay declares (relay.h): durable, topic. */
    *spec = (hd_exchange_spec){.name = buf, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    return 0;
}

int notif_topology_policy(const hd_config *cfg, hd_retry_policy *p, hd_error *err)
{
    hd_retry_policy_default(p);
    hd_error why;
    int rc =
        hd_queue_type_parse(hd_config_get(cfg, "HD_QUEUE_TYPE", "classic"), &p->queue_type, &why);
    if (rc < 0)
        return hd_error_set(err, HD_ECONFIG, "HD_QUEUE_TYPE: %s", why.text);
    int64_t v;
    if ((rc = hd_config_get_int(cfg, "HD_DELIVERY_LIMIT", HD_RETRY_DELIVERY_LIMIT_DEFAULT, 1,
                                1000000, &v, err)) < 0)
        return rc;
    p->delivery_limit = v;
    return 0;
}

int notif_topology_make(notif_topology *t, const char *users_exchange, const char *queue,
                        const hd_retry_policy *p, hd_error *err)
{
    memset(t, 0, sizeof *t);
    if (users_exchange == NULL || *users_exchange == '\0' || queue == NULL || *queue == '\0')
        return hd_error_set(err, HD_EINVAL, "topology: the users exchange and queue are required");
    int rc = hd_retry_topology_make(&t->retry, queue, p, err);
    if (rc < 0)
        return rc;
    t->all.exchanges = t->exchanges;
    t->all.queues = t->queues;
    t->all.bindings = t->bindings;

    size_t ntypes;
    const char *const *types = notif_consumed_types(&ntypes);

    /* The users relay's exchange (the topic of the users events), then this service's. */
    hd_exchange_spec ex;
    if ((rc = relay_exchange(types[0], t->relay_exchanges[0], &ex, err)) < 0 ||
        (rc = add_exchange(t, &ex, BY_USERS_RELAY, NULL, err)) < 0)
        return rc;
    hd_exchange_spec users = {.name = users_exchange, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    if ((rc = add_exchange(t, &users, BY_NOTIF, BY_USERS_RELAY ", " BY_NOTIF, err)) < 0)
        return rc;
    const hd_retry_topology *r = &t->retry;
    if ((rc = add_exchange(t, &r->exchange, BY_NOTIF, NULL, err)) < 0)
        return rc;
    if ((rc = relay_exchange(emitted_types[0], t->relay_exchanges[1], &ex, err)) < 0 ||
        (rc = add_exchange(t, &ex, BY_NOTIF_RELAY, NULL, err)) < 0)
        return rc;

    for (size_t i = 0; i < r->t.n_queues; i++)
        if ((rc = add_queue(t, &r->queues[i], BY_NOTIF, err)) < 0)
            return rc;

    /* The consumed part first (t->consumed is its prefix), then the retry tiers'. */
    for (size_t i = 0; i < ntypes; i++) {
        hd_binding_spec b = {.queue = r->n.queue, .exchange = users_exchange, .key = types[i]};
        if ((rc = add_binding(t, &b, err)) < 0)
            return rc;
    }
    t->consumed = (hd_topology){&t->exchanges[1], 1, NULL, 0, t->bindings, ntypes};
    if (strcmp(t->exchanges[0].name, users_exchange) == 0)
        t->consumed.exchanges = &t->exchanges[0];
    for (size_t i = 0; i < r->t.n_bindings; i++)
        if ((rc = add_binding(t, &r->bindings[i], err)) < 0)
            return rc;

    t->publishers[t->n_publishers++] =
        (notif_topology_edge){BY_USERS_RELAY, t->relay_exchanges[0], "publishes users events"};
    t->publishers[t->n_publishers++] = (notif_topology_edge){
        BY_CONSUMER, r->n.retry_exchange, "retries a failure (key: the tier queue)"};
    t->publishers[t->n_publishers++] = (notif_topology_edge){BY_NOTIF_RELAY, t->relay_exchanges[1],
                                                             "publishes notifications events"};
    t->consumers[t->n_consumers++] = (notif_topology_edge){BY_CONSUMER, r->n.queue, "consumes"};
    return 0;
}

int notif_topology_declare(hd_amqp *a, const char *users_exchange, const char *queue,
                           const hd_retry_policy *p, hd_error *err)
{
    notif_topology t;
    int rc = notif_topology_make(&t, users_exchange, queue, p, err);
    if (rc < 0)
        return rc;
    /* The exchange first, the work queue (with its retry topology: hd_retry_declare keeps an
     * existing dead-letter queue of other arguments) before its bindings. */
    hd_topology exchanges = t.consumed;
    exchanges.n_bindings = 0;
    if ((rc = hd_topology_declare(a, &exchanges, err)) < 0)
        return rc;
    if ((rc = hd_consumer_declare(a, queue, p, err)) < 0)
        return rc;
    hd_topology bindings = t.consumed;
    bindings.n_exchanges = 0;
    return hd_topology_declare(a, &bindings, err);
}
