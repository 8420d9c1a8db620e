/* bus_rabbit.c — the integration event bus on RabbitMQ; see bus_rabbit.h. */
#include "herald/bus_rabbit.h"
#include "herald/bus_internal.h"

#include "herald/clock.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rabbit_reg {
    hd_bus_reg base; /* first: the owned copy of the registration (bus_internal.h) */
    hd_consumer *c;  /* while started */
} rabbit_reg;

typedef struct rabbit_bus {
    hd_bus base; /* first: an hd_bus * is a rabbit_bus * */
    char *url;
    char *connection_name; /* copies of the strings of opts.amqp: startup comes later */
    char *ca_cert_path;
    char *client_cert_path, *client_key_path;
    hd_bus_rabbit_options opts;
    hd_retry_policy policy;
    hd_amqp_options amqp_opts;
    rabbit_reg *regs;
    size_t n_regs;
    hd_amqp *conn; /* sends and declares */
    hd_publisher *pub;
} rabbit_bus;

static const hd_bus_methods rabbit_methods;

static rabbit_bus *as_rabbit(hd_bus *bus)
{
    return (bus != NULL && bus->methods == &rabbit_methods) ? (rabbit_bus *)bus : NULL;
}

/* ---- methods -------------------------------------------------------------------------- */

static int rb_add_consumer(hd_bus *bus, const hd_bus_registration *reg, hd_error *err)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    for (size_t i = 0; i < b->n_regs; i++)
        if (strcmp(b->regs[i].base.consumer, reg->consumer) == 0 &&
            strcmp(b->regs[i].base.topic, reg->topic) == 0)
            return hd_error_set(err, HD_EEXIST, "consumer '%s' is already registered on '%s'",
                                reg->consumer, reg->topic);
    size_t qlen = strlen(reg->topic) + strlen(reg->consumer) + 2;
    if (qlen - 1 > HD_AMQP_NAME_MAX)
        return hd_error_set(err, HD_EINVAL, "queue name '%s.%s' longer than %d bytes", reg->topic,
                            reg->consumer, HD_AMQP_NAME_MAX);
    rabbit_reg *grown = realloc(b->regs, (b->n_regs + 1) * sizeof *grown);
    if (grown == NULL)
        return hd_error_set(err, HD_ENOMEM, "rabbitmq bus: register");
    b->regs = grown;
    rabbit_reg *r = &b->regs[b->n_regs];
    memset(r, 0, sizeof *r);
    int rc = hd_bus_reg_copy(reg, "rabbitmq bus", &r->base, err);
    if (rc < 0)
        return rc;
    b->n_regs++;
    return HD_OK;
}

static int rb_shutdown(hd_bus *bus, hd_error *err)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    /* Consumers first: closing them hands unacked messages back to their queues. */
    for (size_t i = 0; i < b->n_regs; i++) {
        hd_consumer_close(b->regs[i].c);
        b->regs[i].c = NULL;
    }
    hd_publisher_free(b->pub);
    b->pub = NULL;
    hd_amqp_close(b->conn);
    b->conn = NULL;
    return HD_OK;
}

/* The exchange of a topic, the consumer's queue with its retry topology, its bindings. */
static int declare_reg(rabbit_bus *b, const rabbit_reg *r, hd_error *err)
{
    hd_exchange_spec ex = {.name = r->base.topic,
                           .type = b->opts.direct_exchange ? HD_EXCHANGE_DIRECT : HD_EXCHANGE_TOPIC,
                           .durable = 1};
    int rc = hd_exchange_declare(b->conn, &ex, err);
    if (rc < 0)
        return rc;
    if ((rc = hd_consumer_declare(b->conn, r->base.queue, &b->policy, err)) < 0)
        return rc;
    for (size_t i = 0; i < r->base.n_types; i++) {
        hd_binding_spec bind = {
            .queue = r->base.queue, .exchange = r->base.topic, .key = r->base.types[i]};
        if ((rc = hd_queue_bind(b->conn, &bind, err)) < 0)
            return rc;
    }
    return HD_OK;
}

static int rb_startup(hd_bus *bus, hd_error *err)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    int rc = hd_amqp_open(b->url, &b->amqp_opts, &b->conn, err);
    if (rc < 0)
        return rc;
    if ((rc = hd_publisher_new(b->conn, NULL, &b->pub, err)) < 0)
        goto fail;
    for (size_t i = 0; i < b->n_regs; i++) {
        rabbit_reg *r = &b->regs[i];
        if ((rc = declare_reg(b, r, err)) < 0)
            goto fail;
        hd_consumer_options o = {
            .queue = r->base.queue,
            .handler = r->base.handler,
            .ctx = r->base.ctx,
            .prefetch = b->opts.prefetch,
            .retry = &b->policy,
            .registry = b->opts.registry,
            .declare = 1, /* after a reconnect the broker may have lost non-durable state */
            .amqp = &b->amqp_opts,
        };
        if ((rc = hd_consumer_open(b->url, &o, &r->c, err)) < 0)
            goto fail;
    }
    return HD_OK;

fail:
    rb_shutdown(bus, NULL);
    return rc;
}

static int rb_send(hd_bus *bus, const hd_bus_message *msg, hd_error *err)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    /* A producer that lost its connection waits for the broker to come back (with backoff)
     * rather than fail the caller's business operation; the outbox (outbox.h) is the way to
     * decouple the two completely. */
    if (!hd_amqp_is_open(b->conn)) {
        int rc = hd_amqp_reconnect(b->conn, NULL, err);
        if (rc < 0)
            return rc;
    }
    hd_message m = {
        .exchange = msg->topic,
        .routing_key = msg->type,
        .body = msg->body,
        .len = msg->len,
        .content_type = msg->content_type,
        .type = msg->type,
        .message_id = msg->message_id,
        .correlation_id = msg->correlation_id,
        /* Publish/subscribe: an event nobody registered for is not an error. */
        .flags = HD_MSG_NOT_MANDATORY,
    };
    return hd_publish_confirmed(b->pub, &m, -1, err);
}

/* Let every consumer handle what has already arrived. */
static int poll_ready(rabbit_bus *b, int *handled, hd_error *err)
{
    for (size_t i = 0; i < b->n_regs; i++) {
        hd_consumer *c = b->regs[i].c;
        int rc = hd_consumer_poll(c, 0, err);
        if (rc == HD_ECLOSED || rc == HD_EAMQP) {
            /* Repair it (waits for the broker when it is down) and go on: the messages it
             * held come back redelivered. */
            rc = hd_consumer_reconnect(c, b->base.stop, err);
        }
        if (rc < 0)
            return rc;
        *handled += rc;
    }
    return HD_OK;
}

static int rb_poll(hd_bus *bus, int timeout_ms, hd_error *err)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    int handled = 0;
    int rc = poll_ready(b, &handled, err);
    if (rc < 0 || handled > 0 || timeout_ms == 0 || b->n_regs == 0)
        return rc < 0 ? rc : handled;

    /* Nothing yet: sleep on every consumer's socket at once (the libuv way), unless
     * librabbitmq already buffered frames, which the socket would not announce. */
    struct pollfd fds[HD_STOP_POLL_MAX];
    size_t n = 0;
    int buffered = 0;
    for (size_t i = 0; i < b->n_regs && n < HD_STOP_POLL_MAX; i++) {
        buffered |= hd_consumer_has_buffered(b->regs[i].c);
        int fd = hd_consumer_fd(b->regs[i].c);
        if (fd >= 0)
            fds[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    /* With hd_bus_run's stop among them: a stop ends the wait at once. Known limit: past
     * HD_STOP_POLL_MAX consumers the others are only looked at when the wait ends. */
    if (!buffered && n > 0 && hd_stop_poll(bus->stop, fds, n, timeout_ms) == HD_EINTR)
        return handled;
    rc = poll_ready(b, &handled, err);
    return rc < 0 ? rc : handled;
}

static void rb_destroy(hd_bus *bus)
{
    rabbit_bus *b = (rabbit_bus *)bus;
    for (size_t i = 0; i < b->n_regs; i++)
        hd_bus_reg_release(&b->regs[i].base);
    free(b->regs);
    free(b->url);
    free(b->connection_name);
    free(b->ca_cert_path);
    free(b->client_cert_path);
    free(b->client_key_path);
    free(b);
}

static const hd_bus_methods rabbit_methods = {
    .name = "rabbitmq",
    .add_consumer = rb_add_consumer,
    .startup = rb_startup,
    .send = rb_send,
    .poll = rb_poll,
    .shutdown = rb_shutdown,
    .destroy = rb_destroy,
};

/* ---- public --------------------------------------------------------------------------- */

int hd_bus_rabbit_new(const char *url, const hd_bus_rabbit_options *opts, hd_bus **out,
                      hd_error *err)
{
    *out = NULL;
    /* A list of nodes (amqp.h) is as good as one URL: checked now, connected at startup. */
    hd_amqp_url parsed[HD_AMQP_URLS_MAX];
    int rc = hd_amqp_url_list_parse(url, parsed, HD_AMQP_URLS_MAX, err);
    if (rc < 0)
        return rc;
    rabbit_bus *b = calloc(1, sizeof *b);
    if (b == NULL || (b->url = strdup(url)) == NULL) {
        free(b);
        return hd_error_set(err, HD_ENOMEM, "rabbitmq bus");
    }
    b->base.methods = &rabbit_methods;
    b->base.state = HD_BUS_NEW;
    if (opts != NULL)
        b->opts = *opts;
    if (b->opts.retry != NULL)
        b->policy = *b->opts.retry;
    else
        hd_retry_policy_default(&b->policy);
    b->opts.retry = &b->policy;
    if (b->opts.amqp != NULL)
        b->amqp_opts = *b->opts.amqp;
    b->connection_name =
        strdup(b->amqp_opts.connection_name ? b->amqp_opts.connection_name : "herald bus");
    if (b->amqp_opts.ca_cert_path != NULL)
        b->ca_cert_path = strdup(b->amqp_opts.ca_cert_path);
    b->amqp_opts.connection_name = b->connection_name;
    b->amqp_opts.ca_cert_path = b->ca_cert_path;
    if (b->amqp_opts.client_cert_path != NULL)
        b->client_cert_path = strdup(b->amqp_opts.client_cert_path);
    if (b->amqp_opts.client_key_path != NULL)
        b->client_key_path = strdup(b->amqp_opts.client_key_path);
    b->amqp_opts.client_cert_path = b->client_cert_path;
    b->amqp_opts.client_key_path = b->client_key_path;
    b->opts.amqp = &b->amqp_opts;
    if (b->connection_name == NULL ||
        (opts && opts->amqp && opts->amqp->ca_cert_path && b->ca_cert_path == NULL) ||
        (opts && opts->amqp && opts->amqp->client_cert_path && b->client_cert_path == NULL) ||
        (opts && opts->amqp && opts->amqp->client_key_path && b->client_key_path == NULL)) {
        rb_destroy(&b->base);
        return hd_error_set(err, HD_ENOMEM, "rabbitmq bus");
    }
    if ((rc = hd_retry_policy_check(&b->policy, err)) < 0) {
        rb_destroy(&b->base);
        return rc;
    }
    *out = &b->base;
    return HD_OK;
}

int hd_bus_rabbit_undeclare(hd_bus *bus, hd_error *err)
{
    rabbit_bus *b = as_rabbit(bus);
    if (b == NULL)
        return hd_error_set(err, HD_EINVAL, "undeclare: not a RabbitMQ bus");
    hd_amqp *a = b->conn;
    int rc;
    if (a == NULL && (rc = hd_amqp_open(b->url, &b->amqp_opts, &a, err)) < 0)
        return rc;
    int first = 0;
    hd_error one;
    for (size_t i = 0; i < b->n_regs; i++) {
        rc = hd_consumer_undeclare(a, b->regs[i].base.queue, &b->policy, &one);
        if (rc < 0 && first == 0) {
            first = rc;
            if (err)
                *err = one;
        }
        rc = hd_exchange_delete(a, b->regs[i].base.topic, &one);
        if (rc < 0 && first == 0) {
            first = rc;
            if (err)
                *err = one;
        }
    }
    if (a != b->conn)
        hd_amqp_close(a);
    return first;
}

hd_consumer *hd_bus_rabbit_consumer(hd_bus *bus, const char *consumer, const char *topic)
{
    rabbit_bus *b = as_rabbit(bus);
    for (size_t i = 0; b && i < b->n_regs; i++)
        if (strcmp(b->regs[i].base.consumer, consumer) == 0 &&
            strcmp(b->regs[i].base.topic, topic) == 0)
            return b->regs[i].c;
    return NULL;
}
