/* Chapter 06 — bindings.
 *
 * A binding is a rule "queue Q wants the messages of exchange X whose routing key matches
 * K". On a topic exchange K is a pattern of dot-separated words: '*' stands for exactly one
 * word, '#' for zero or more. Bindings are how a consumer subscribes: the producer only names
 * WHAT happened ("users.registered"); each consumer's bindings decide what it hears about.
 *
 * Steps: one topic exchange "events", six queues with their bindings; publish eight routing
 * keys; print the routing table of which queue got which key; then remove the catch-all
 * binding and watch a key fall through to nowhere. Last, the same subscription in the
 * vocabulary of the seeds' integration event bus (herald/bus.h): a TOPIC is an exchange, a
 * CONSUMER is a queue, the EVENT TYPES it registers for are its bindings' routing keys.
 * docs/tutorial/06-bindings.md explains the why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/bus_rabbit.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include "tutorial.h"

#define N_QUEUES 6
#define N_KEYS   8

static const char *labels[N_QUEUES] = {"audit", "users", "userone", "created", "signup", "billing"};
/* Each queue's bindings; a queue may have several. */
static const char *patterns[N_QUEUES][2] = {
    {"#", NULL},                        /* audit: everything */
    {"users.#", "users.registered"},    /* users: all user events (two bindings match
                                           users.registered: it still arrives once) */
    {"users.*", NULL},                  /* userone: "users." and exactly one more word */
    {"*.created", NULL},                /* created: anything created */
    {"users.registered", NULL},         /* signup: one exact key */
    {"orders.paid", "orders.refunded"}, /* billing: two exact keys */
};
static const char *keys[N_KEYS] = {
    "users.registered", "users.deleted", "users.email.verified", "users",
    "orders.created",   "orders.paid",   "orders.refunded",      "payments.card.declined",
};

static char exchange[64];
static char queues[N_QUEUES][64];

/* Empty queue with basic.get and return how many messages it held (-1 on error). */
static int drain(hd_amqp *a, const char *queue, hd_error *err)
{
    amqp_connection_state_t c = hd_amqp_state(a);
    int n = 0;
    for (;;) {
        amqp_basic_get(c, hd_amqp_channel(a), amqp_cstring_bytes(queue), 1);
        amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
        if (hd_amqp_check_reply(a, r, "basic.get", err) < 0)
            return -1;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            return n;
        amqp_message_t msg;
        if (hd_amqp_check_reply(a, amqp_read_message(c, hd_amqp_channel(a), &msg, 0),
                                "read message", err) < 0)
            return -1;
        amqp_destroy_message(&msg);
        n++;
    }
}

/* Publish key, then print one row of the table: how many copies each queue received.
 * Returns the number of queues reached, or -1 on error. */
static int route_row(hd_amqp *a, hd_publisher *pub, const char *key, hd_error *err)
{
    hd_message m = {.exchange = exchange, .routing_key = key, .body = key, .len = strlen(key)};
    int rc = hd_publish_confirmed(pub, &m, 5000, err);
    printf("    %-24s", key);
    if (rc == HD_ERETURNED) {
        printf(" RETURNED: no binding matches\n");
        return 0;
    }
    if (rc < 0)
        return -1;
    int reached = 0;
    for (int q = 0; q < N_QUEUES; q++) {
        int n = drain(a, queues[q], err);
        if (n < 0)
            return -1;
        printf(" %7s", n == 0 ? "." : n == 1 ? "x" : "xx");
        reached += n > 0;
    }
    printf("\n");
    return reached;
}

/* ---- the same with the integration event bus ------------------------------------------- */

#define N_CONSUMERS 3
#define N_EVENTS    4

/* One consumer of the bus: its name, the event types it registers for, what it received. */
typedef struct bus_consumer {
    const char *name;
    const char *types[2];
    size_t n_types;
    char got[N_EVENTS][64];
    int calls;
} bus_consumer;

static bus_consumer consumers[N_CONSUMERS] = {
    {"audit", {"users.#"}, 1, {{0}}, 0},                          /* every user event */
    {"signup", {"users.registered"}, 1, {{0}}, 0},                /* one exact type */
    {"billing", {"orders.paid", "orders.refunded"}, 2, {{0}}, 0}, /* two exact types */
};
static const char *event_types[N_EVENTS] = {"users.registered", "users.deleted", "orders.paid",
                                            "payments.card.declined"};

/* The handler of every consumer: remember the event type (the message's routing key). */
static hd_consume_result on_bus_event(void *ctx, const hd_delivery *d)
{
    bus_consumer *c = ctx;
    if (c->calls < N_EVENTS)
        snprintf(c->got[c->calls], sizeof c->got[0], "%s", d->routing_key);
    c->calls++;
    return HD_CONSUME_OK;
}

/* Register the consumers on a topic, send one event of each type, wait until they have
 * arrived, and print who got what. Returns 0 or 1. */
static int bus_section(const char *url)
{
    char topic[64];
    snprintf(topic, sizeof topic, "tutorial06-%d-users", (int)getpid());
    hd_error err;
    hd_bus *bus = NULL;
    int rc = 1;
    if (hd_bus_rabbit_new(url, NULL, &bus, &err) < 0) {
        fprintf(stderr, "bus: %s\n", err.text);
        return 1;
    }
    printf("[7] the integration event bus (%s): topic '%s' = a topic exchange\n", hd_bus_name(bus),
           topic);
    for (int c = 0; c < N_CONSUMERS; c++) {
        if (hd_bus_register(bus, consumers[c].name, topic, consumers[c].types, consumers[c].n_types,
                            on_bus_event, &consumers[c], &err) < 0) {
            fprintf(stderr, "register: %s\n", err.text);
            goto out;
        }
        /* What startup will declare: queue "<topic>.<consumer>", one binding per type. */
        printf("    consumer %-8s = queue %s.%s <- %s%s%s\n", consumers[c].name, topic,
               consumers[c].name, consumers[c].types[0], consumers[c].n_types > 1 ? ", " : "",
               consumers[c].n_types > 1 ? consumers[c].types[1] : "");
    }
    if (hd_bus_startup(bus, &err) < 0) {
        fprintf(stderr, "startup: %s\n", err.text);
        goto out;
    }

    /* An event's type is its routing key. payments.card.declined: nobody registered for it,
     * so it is dropped, and for a bus (publish/subscribe) that is not an error. */
    printf("[8] send %d events to '%s', each routed by its type\n", N_EVENTS, topic);
    for (int e = 0; e < N_EVENTS; e++) {
        hd_envelope *env =
            hd_envelope_new(event_types[e], 1, "/tutorial06", json_pack("{s:i}", "n", e));
        int sent = env ? hd_bus_send(bus, topic, env, &err) : HD_ENOMEM;
        hd_envelope_free(env);
        if (sent < 0) {
            fprintf(stderr, "send: %s\n", err.text);
            goto out;
        }
    }
    /* 4 deliveries are expected (users.registered twice); then a moment for strays. */
    int64_t deadline = hd_clock_ms() + 10000;
    for (int quiet = 0; quiet < 3 && hd_clock_ms() < deadline;) {
        int n = hd_bus_poll(bus, 200, &err);
        if (n < 0) {
            fprintf(stderr, "poll: %s\n", err.text);
            goto out;
        }
        int total = consumers[0].calls + consumers[1].calls + consumers[2].calls;
        quiet = (total >= 4 && n == 0) ? quiet + 1 : 0;
    }
    printf("[9] who got what:\n");
    for (int e = 0; e < N_EVENTS; e++) {
        printf("    %-24s ->", event_types[e]);
        int reached = 0;
        for (int c = 0; c < N_CONSUMERS; c++)
            for (int i = 0; i < consumers[c].calls && i < N_EVENTS; i++)
                if (strcmp(consumers[c].got[i], event_types[e]) == 0) {
                    printf(" %s", consumers[c].name);
                    reached++;
                }
        printf("%s\n", reached ? "" : " nobody (dropped)");
    }
    rc = 0;
out:
    if (hd_bus_get_state(bus) == HD_BUS_STARTED && hd_bus_shutdown(bus, &err) < 0) {
        fprintf(stderr, "shutdown: %s\n", err.text);
        rc = 1;
    }
    /* A real deployment keeps its queues; a tutorial leaves the broker as it found it. */
    if (hd_bus_rabbit_undeclare(bus, &err) < 0) {
        fprintf(stderr, "undeclare: %s\n", err.text);
        rc = 1;
    } else if (rc == 0) {
        printf("[10] deleted the bus's exchange and its consumers' queues\n");
    }
    hd_bus_free(bus);
    return rc;
}

static void header_row(void)
{
    printf("    %-24s", "routing key");
    for (int q = 0; q < N_QUEUES; q++)
        printf(" %7s", labels[q]);
    printf("\n");
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    snprintf(exchange, sizeof exchange, "tutorial06-%d-events", (int)getpid());
    for (int q = 0; q < N_QUEUES; q++)
        snprintf(queues[q], sizeof queues[q], "tutorial06-%d-%s", (int)getpid(), labels[q]);

    int rc = 1;
    hd_error err;
    hd_amqp *a = NULL, *pa = NULL;
    hd_publisher *pub = NULL;
    if (hd_amqp_open(url, NULL, &a, &err) < 0 || hd_amqp_open(url, NULL, &pa, &err) < 0 ||
        hd_publisher_new(pa, NULL, &pub, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(a));

    /* The topology as data: one exchange, six queues, their bindings. bq[i] remembers
     * which queue binding i belongs to, for printing. */
    hd_exchange_spec ex[] = {{.name = exchange, .type = HD_EXCHANGE_TOPIC}};
    hd_queue_spec qs[N_QUEUES];
    hd_binding_spec bs[2 * N_QUEUES];
    int bq[2 * N_QUEUES];
    size_t n_bindings = 0;
    for (int q = 0; q < N_QUEUES; q++) {
        qs[q] = (hd_queue_spec){.name = queues[q]};
        for (int b = 0; b < 2 && patterns[q][b] != NULL; b++) {
            bq[n_bindings] = q;
            bs[n_bindings++] =
                (hd_binding_spec){.queue = queues[q], .exchange = exchange, .key = patterns[q][b]};
        }
    }
    hd_topology topo = {ex, 1, qs, N_QUEUES, bs, n_bindings};
    if (hd_topology_declare(a, &topo, &err) < 0) {
        fprintf(stderr, "declare: %s\n", err.text);
        goto cleanup;
    }
    printf("[2] topic exchange 'events', %d queues, %zu bindings:\n", N_QUEUES, n_bindings);
    for (size_t i = 0; i < n_bindings; i++)
        printf("    %-8s <- %s\n", labels[bq[i]], bs[i].key);

    /* 3. One message per key; after each, count what every queue received. */
    printf("[3] routing table (x = the queue got one copy, . = nothing):\n");
    header_row();
    int total = 0;
    for (int k = 0; k < N_KEYS; k++) {
        int reached = route_row(a, pub, keys[k], &err);
        if (reached < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
        total += reached;
    }
    printf("[4] %d keys published, %d copies delivered\n", N_KEYS, total);

    /* 5. Without the catch-all, a key that no other pattern matches goes nowhere. */
    if (hd_queue_unbind(a, &bs[0], &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[5] unbound audit <- #; publish payments.card.declined again:\n");
    header_row();
    if (route_row(a, pub, "payments.card.declined", &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    rc = 0;

cleanup:
    if (a != NULL && hd_amqp_is_open(a)) {
        if (hd_topology_delete(a, &topo, &err) < 0) {
            fprintf(stderr, "cleanup: %s\n", err.text);
            rc = 1;
        } else if (rc == 0) {
            printf("[6] deleted the exchange and its %d queues\n", N_QUEUES);
        }
    }
out:
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    if (rc == 0)
        rc = bus_section(url);
    return rc;
}
