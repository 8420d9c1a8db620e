/* bus_memory.c — the in-memory integration event bus; see bus_memory.h. */
#include "herald/bus_memory.h"

#include "herald/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One queued message: its own copies of everything, so the sender's buffers may go. */
typedef struct mem_msg {
    struct mem_msg *next;
    char *topic;
    char *type;
    char *message_id;
    char *correlation_id;
    char *content_type;
    void *body;
    size_t len;
    int attempt;
} mem_msg;

/* One registration = one queue, "<topic>.<consumer>". */
typedef struct mem_consumer {
    char *name;
    char *topic;
    char *queue;
    char **types;
    size_t n_types;
    hd_consume_fn handler;
    void *ctx;
    mem_msg *head, *tail; /* FIFO */
    size_t count;
} mem_consumer;

typedef struct mem_dead {
    hd_bus_dead_letter pub; /* what hd_bus_memory_dead_letter hands out */
    mem_msg *msg;           /* owns the strings pub points to */
    char *consumer;
    char *reason;
} mem_dead;

typedef struct mem_bus {
    hd_bus base; /* first: an hd_bus * is a mem_bus * */
    hd_bus_memory_options opts;
    mem_consumer *consumers;
    size_t n_consumers;
    mem_dead *dead;
    size_t n_dead;
    size_t dropped;
} mem_bus;

static const hd_bus_methods memory_methods;

static mem_bus *as_mem(const hd_bus *bus)
{
    return (bus != NULL && bus->methods == &memory_methods) ? (mem_bus *)bus : NULL;
}

/* strdup that keeps NULL as NULL; *ok turns 0 when memory runs out. */
static char *dup_or_null(const char *s, int *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = 0;
    return d;
}

static void msg_free(mem_msg *m)
{
    if (m == NULL)
        return;
    free(m->topic);
    free(m->type);
    free(m->message_id);
    free(m->correlation_id);
    free(m->content_type);
    free(m->body);
    free(m);
}

static mem_msg *msg_copy(const hd_bus_message *in)
{
    mem_msg *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    int ok = 1;
    m->topic = dup_or_null(in->topic, &ok);
    m->type = dup_or_null(in->type, &ok);
    m->message_id = dup_or_null(in->message_id, &ok);
    m->correlation_id = dup_or_null(in->correlation_id, &ok);
    m->content_type = dup_or_null(in->content_type, &ok);
    m->len = in->len;
    m->body = malloc(in->len + 1); /* +1: never malloc(0), and a NUL for debuggers */
    if (m->body != NULL) {
        if (in->len > 0)
            memcpy(m->body, in->body, in->len);
        ((char *)m->body)[in->len] = '\0';
    } else {
        ok = 0;
    }
    m->attempt = 1;
    if (!ok) {
        msg_free(m);
        return NULL;
    }
    return m;
}

static void enqueue(mem_consumer *c, mem_msg *m)
{
    m->next = NULL;
    if (c->tail != NULL)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    c->count++;
}

static mem_msg *dequeue(mem_consumer *c)
{
    mem_msg *m = c->head;
    if (m == NULL)
        return NULL;
    c->head = m->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->count--;
    m->next = NULL;
    return m;
}

/* Move m (stolen) to the dead-letter list. Returns 0 or HD_ENOMEM (m is freed then). */
static int bury(mem_bus *b, const mem_consumer *c, mem_msg *m, const char *reason, hd_error *err)
{
    mem_dead *grown = realloc(b->dead, (b->n_dead + 1) * sizeof *grown);
    if (grown == NULL) {
        msg_free(m);
        return hd_error_set(err, HD_ENOMEM, "memory bus: dead-letter list");
    }
    b->dead = grown;
    mem_dead *d = &b->dead[b->n_dead];
    memset(d, 0, sizeof *d);
    d->msg = m;
    d->consumer = strdup(c->name);
    d->reason = strdup(reason);
    if (d->consumer == NULL || d->reason == NULL) {
        free(d->consumer);
        free(d->reason);
        msg_free(m);
        return hd_error_set(err, HD_ENOMEM, "memory bus: dead-letter list");
    }
    d->pub.consumer = d->consumer;
    d->pub.topic = m->topic;
    d->pub.type = m->type;
    d->pub.body = m->body;
    d->pub.len = m->len;
    d->pub.message_id = m->message_id;
    d->pub.reason = d->reason;
    d->pub.attempts = m->attempt;
    b->n_dead++;
    return HD_OK;
}

/* ---- methods -------------------------------------------------------------------------- */

static int mem_add_consumer(hd_bus *bus, const hd_bus_registration *reg, hd_error *err)
{
    mem_bus *b = (mem_bus *)bus;
    for (size_t i = 0; i < b->n_consumers; i++)
        if (strcmp(b->consumers[i].name, reg->consumer) == 0 &&
            strcmp(b->consumers[i].topic, reg->topic) == 0)
            return hd_error_set(err, HD_EEXIST, "consumer '%s' is already registered on '%s'",
                                reg->consumer, reg->topic);
    mem_consumer *grown = realloc(b->consumers, (b->n_consumers + 1) * sizeof *grown);
    if (grown == NULL)
        return hd_error_set(err, HD_ENOMEM, "memory bus: register");
    b->consumers = grown;
    mem_consumer *c = &b->consumers[b->n_consumers];
    memset(c, 0, sizeof *c);
    int ok = 1;
    c->name = dup_or_null(reg->consumer, &ok);
    c->topic = dup_or_null(reg->topic, &ok);
    size_t qlen = strlen(reg->topic) + strlen(reg->consumer) + 2;
    c->queue = malloc(qlen);
    if (c->queue != NULL)
        snprintf(c->queue, qlen, "%s.%s", reg->topic, reg->consumer);
    else
        ok = 0;
    c->types = calloc(reg->n_types, sizeof *c->types);
    if (c->types != NULL) {
        c->n_types = reg->n_types;
        for (size_t i = 0; i < reg->n_types; i++)
            c->types[i] = dup_or_null(reg->types[i], &ok);
    } else {
        ok = 0;
    }
    if (!ok) {
        for (size_t i = 0; i < c->n_types; i++)
            free(c->types[i]);
        free(c->types);
        free(c->queue);
        free(c->topic);
        free(c->name);
        return hd_error_set(err, HD_ENOMEM, "memory bus: register");
    }
    c->handler = reg->handler;
    c->ctx = reg->ctx;
    b->n_consumers++;
    return HD_OK;
}

static int mem_startup(hd_bus *bus, hd_error *err)
{
    return HD_OK; /* nothing to connect to */
}

static int wants(const mem_consumer *c, const char *topic, const char *type)
{
    if (strcmp(c->topic, topic) != 0)
        return 0;
    for (size_t i = 0; i < c->n_types; i++)
        if (strcmp(c->types[i], type) == 0)
            return 1;
    return 0;
}

static int mem_send(hd_bus *bus, const hd_bus_message *msg, hd_error *err)
{
    mem_bus *b = (mem_bus *)bus;
    size_t routed = 0;
    for (size_t i = 0; i < b->n_consumers; i++) {
        mem_consumer *c = &b->consumers[i];
        if (!wants(c, msg->topic, msg->type))
            continue;
        /* Each consumer gets its own copy, as each RabbitMQ queue does. */
        mem_msg *m = msg_copy(msg);
        if (m == NULL)
            return hd_error_set(err, HD_ENOMEM, "memory bus: send");
        enqueue(c, m);
        routed++;
    }
    if (routed == 0)
        b->dropped++;
    return HD_OK;
}

/* Deliver m (stolen) to c's handler and act on the verdict. */
static int deliver(mem_bus *b, mem_consumer *c, mem_msg *m, hd_error *err)
{
    char reason[HD_REASON_MAX] = "";
    hd_envelope *env = NULL;
    if (b->opts.registry != NULL) {
        hd_error derr;
        int rc = hd_envelope_decode(b->opts.registry, m->body, m->len, &env, &derr);
        if (rc < 0) {
            /* Permanent: no retry can fix the bytes. */
            snprintf(reason, sizeof reason, "%s: %.200s", hd_err_name(rc), derr.text);
            return bury(b, c, m, reason, err);
        }
    }
    hd_delivery d = {
        .body = m->body,
        .body_len = m->len,
        .queue = c->queue,
        .exchange = m->topic,
        .routing_key = m->type,
        .message_id = m->message_id,
        .correlation_id = m->correlation_id,
        .type = m->type,
        .content_type = m->content_type,
        .headers = NULL,
        .n_headers = 0,
        .redelivered = 0,
        .attempt = m->attempt,
        .envelope = env,
        .reason_buf = reason,
    };
    hd_consume_result verdict = c->handler(c->ctx, &d);
    hd_envelope_free(env);

    switch (verdict) {
    case HD_CONSUME_OK:
        msg_free(m);
        return HD_OK;
    case HD_CONSUME_RETRY:
        if (m->attempt >= b->opts.max_attempts) {
            if (reason[0] == '\0')
                snprintf(reason, sizeof reason, "handler failed %d times", m->attempt);
            return bury(b, c, m, reason, err);
        }
        m->attempt++;
        enqueue(c, m);
        return HD_OK;
    case HD_CONSUME_REJECT:
    default:
        return bury(b, c, m, reason[0] ? reason : "handler rejected", err);
    }
}

static int mem_poll(hd_bus *bus, int timeout_ms, hd_error *err)
{
    mem_bus *b = (mem_bus *)bus;
    int handled = 0;
    for (size_t i = 0; i < b->n_consumers; i++) {
        mem_consumer *c = &b->consumers[i];
        /* Only what was queued when the poll began: a retry goes to the tail and waits for
         * the next poll, like a message waiting out its delay tier. */
        size_t n = c->count;
        for (size_t k = 0; k < n; k++) {
            int rc = deliver(b, c, dequeue(c), err);
            if (rc < 0)
                return rc;
            handled++;
        }
    }
    /* Nothing can arrive while we wait (one thread), but waiting keeps hd_bus_run from
     * spinning a core. */
    if (handled == 0 && timeout_ms > 0)
        hd_stop_wait_ms(bus->stop, timeout_ms); /* hd_bus_run's stop ends it */
    return handled;
}

static int mem_shutdown(hd_bus *bus, hd_error *err)
{
    return HD_OK; /* queued messages stay: they are still inspectable until free */
}

static void mem_destroy(hd_bus *bus)
{
    mem_bus *b = (mem_bus *)bus;
    for (size_t i = 0; i < b->n_consumers; i++) {
        mem_consumer *c = &b->consumers[i];
        mem_msg *m;
        while ((m = dequeue(c)) != NULL)
            msg_free(m);
        for (size_t k = 0; k < c->n_types; k++)
            free(c->types[k]);
        free(c->types);
        free(c->queue);
        free(c->topic);
        free(c->name);
    }
    free(b->consumers);
    for (size_t i = 0; i < b->n_dead; i++) {
        msg_free(b->dead[i].msg);
        free(b->dead[i].consumer);
        free(b->dead[i].reason);
    }
    free(b->dead);
    free(b);
}

static const hd_bus_methods memory_methods = {
    .name = "memory",
    .add_consumer = mem_add_consumer,
    .startup = mem_startup,
    .send = mem_send,
    .poll = mem_poll,
    .shutdown = mem_shutdown,
    .destroy = mem_destroy,
};

/* ---- public --------------------------------------------------------------------------- */

hd_bus *hd_bus_memory_new(const hd_bus_memory_options *opts)
{
    if (opts != NULL && opts->max_attempts < 0)
        return NULL;
    mem_bus *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->base.methods = &memory_methods;
    b->base.state = HD_BUS_NEW;
    if (opts != NULL)
        b->opts = *opts;
    if (b->opts.max_attempts == 0)
        b->opts.max_attempts = 4;
    return &b->base;
}

size_t hd_bus_memory_dead_count(const hd_bus *bus)
{
    mem_bus *b = as_mem(bus);
    return b ? b->n_dead : 0;
}

const hd_bus_dead_letter *hd_bus_memory_dead_letter(const hd_bus *bus, size_t i)
{
    mem_bus *b = as_mem(bus);
    return (b && i < b->n_dead) ? &b->dead[i].pub : NULL;
}

size_t hd_bus_memory_pending(const hd_bus *bus)
{
    mem_bus *b = as_mem(bus);
    size_t n = 0;
    for (size_t i = 0; b && i < b->n_consumers; i++)
        n += b->consumers[i].count;
    return n;
}

size_t hd_bus_memory_dropped(const hd_bus *bus)
{
    mem_bus *b = as_mem(bus);
    return b ? b->dropped : 0;
}
