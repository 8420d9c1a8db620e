/* chat/integration.c — chat.message_posted over an hd_bus, one thread owning the bus
 * (integration.h). */
#include "integration.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/bus_redis.h"
#include "herald/clock.h"
#include "herald/stop.h"

/* One post waiting for the bus thread; lives on the poster's stack. */
typedef struct post {
    struct post *next;
    const chat_message *msg;
    int done, rc;
    hd_error err;
} post;

struct chat_bus {
    hd_bus *bus;
    chat_hub *hub;
    hd_logger *log;
    char consumer[96];
    size_t queue_len;
    pthread_t thread;
    int thread_started;
    hd_stop stop;
    pthread_mutex_t lock; /* guards the queue, stopping and the counts */
    pthread_cond_t sent;  /* a post is done */
    post *head, *tail;
    size_t queued;
    int stopping;
    uint64_t n_sent, n_received, n_rejected;
    uint64_t n_unheard; /* copied from the Redis bus's counts by the bus thread */
};

static hd_consume_result on_message(void *ctx, const hd_delivery *d)
{
    chat_bus *cb = ctx;
    chat_message m;
    hd_error err;
    int rc = chat_message_decode(d->body, d->body_len, &m, &err);
    if (rc == 0 && !chat_hub_has_room(cb->hub, m.room))
        rc = hd_error_set(&err, HD_ENOTFOUND, "message: no room '%s' here", m.room);
    if (rc < 0) {
        pthread_mutex_lock(&cb->lock);
        cb->n_rejected++;
        pthread_mutex_unlock(&cb->lock);
        hd_log_warn(cb->log, d->correlation_id, "chat: message from the bus refused", "error",
                    err.text, NULL);
        hd_delivery_reason(d, "%s", err.text);
        return HD_CONSUME_REJECT;
    }
    pthread_mutex_lock(&cb->lock);
    cb->n_received++;
    pthread_mutex_unlock(&cb->lock);
    chat_hub_deliver(cb->hub, &m);
    return HD_CONSUME_OK;
}

/* Send every queued post; complete each with its result. */
static void send_queued(chat_bus *cb)
{
    pthread_mutex_lock(&cb->lock);
    post *p = cb->head;
    cb->head = cb->tail = NULL;
    cb->queued = 0;
    pthread_mutex_unlock(&cb->lock);
    while (p != NULL) {
        post *next = p->next;
        int rc;
        hd_error err = {0};
        char *body = chat_message_encode(p->msg);
        if (body == NULL) {
            rc = hd_error_set(&err, HD_ENOMEM, "out of memory");
        } else {
            hd_bus_message bm = {.topic = CHAT_TOPIC,
                                 .type = CHAT_EVENT_POSTED,
                                 .body = body,
                                 .len = strlen(body),
                                 .message_id = p->msg->id,
                                 .content_type = "application/json"};
            rc = hd_bus_send_raw(cb->bus, &bm, &err);
            free(body);
        }
        pthread_mutex_lock(&cb->lock);
        if (rc == 0)
            cb->n_sent++;
        p->rc = rc;
        p->err = err;
        p->done = 1;
        pthread_cond_broadcast(&cb->sent);
        pthread_mutex_unlock(&cb->lock);
        p = next;
    }
}

static void *bus_main(void *arg)
{
    chat_bus *cb = arg;
    int64_t backoff_ms = 100;
    while (!hd_stop_requested(&cb->stop)) {
        hd_error err;
        /* Posts are sent between polls; CHAT_BUS_POLL_MS bounds how long one waits. */
        int rc = hd_bus_poll(cb->bus, CHAT_BUS_POLL_MS, &err);
        send_queued(cb);
        /* The bus's counts are read here, in the thread that owns the bus (zeroes for a bus
         * that is not Redis). */
        hd_bus_redis_counts counts;
        hd_bus_redis_get_counts(cb->bus, &counts);
        pthread_mutex_lock(&cb->lock);
        cb->n_unheard = counts.sent_unheard;
        pthread_mutex_unlock(&cb->lock);
        if (rc < 0) {
            hd_log_warn(cb->log, NULL, "chat: bus poll failed", "error", err.text, NULL);
            /* Wait before polling again, but keep answering posts meanwhile (each fails
             * fast, 503, instead of hanging for the whole backoff). */
            int64_t until = hd_clock_ms() + backoff_ms;
            while (hd_clock_ms() < until && !hd_stop_wait_ms(&cb->stop, CHAT_BUS_POLL_MS))
                send_queued(cb);
            backoff_ms = backoff_ms < 5000 ? backoff_ms * 2 : 5000;
        } else {
            backoff_ms = 100;
        }
    }
    /* Fail what is still queued, and refuse what comes now. */
    pthread_mutex_lock(&cb->lock);
    cb->stopping = 1;
    for (post *p = cb->head; p != NULL; p = p->next) {
        p->rc = hd_error_set(&p->err, HD_ESTATE, "the chat is stopping");
        p->done = 1;
    }
    cb->head = cb->tail = NULL;
    pthread_cond_broadcast(&cb->sent);
    pthread_mutex_unlock(&cb->lock);
    return NULL;
}

int chat_bus_start(hd_bus *bus, chat_hub *hub, const char *instance, size_t queue_len,
                   hd_logger *lg, chat_bus **out, hd_error *err)
{
    *out = NULL;
    chat_bus *cb = calloc(1, sizeof *cb);
    if (cb == NULL) {
        hd_bus_free(bus);
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    }
    cb->bus = bus;
    cb->hub = hub;
    cb->log = lg;
    cb->queue_len = queue_len ? queue_len : CHAT_BUS_QUEUE_DEFAULT;
    snprintf(cb->consumer, sizeof cb->consumer, "chat-%s", instance);
    pthread_mutex_init(&cb->lock, NULL);
    pthread_cond_init(&cb->sent, NULL);
    const char *types[] = {CHAT_EVENT_POSTED};
    int rc = hd_stop_init(&cb->stop, err);
    if (rc == 0)
        rc = hd_bus_register(bus, cb->consumer, CHAT_TOPIC, types, 1, on_message, cb, err);
    if (rc == 0)
        rc = hd_bus_startup(bus, err);
    if (rc == 0 && pthread_create(&cb->thread, NULL, bus_main, cb) != 0)
        rc = hd_error_set(err, HD_ENOMEM, "cannot start the bus thread");
    if (rc < 0) {
        chat_bus_stop(cb);
        return rc;
    }
    cb->thread_started = 1;
    *out = cb;
    return 0;
}

int chat_bus_post(chat_bus *cb, const chat_message *m, hd_error *err)
{
    post p = {.msg = m};
    pthread_mutex_lock(&cb->lock);
    if (cb->stopping) {
        pthread_mutex_unlock(&cb->lock);
        return hd_error_set(err, HD_ESTATE, "the chat is stopping");
    }
    if (cb->queued >= cb->queue_len) {
        pthread_mutex_unlock(&cb->lock);
        return hd_error_set(err, HD_EBUSY, "too many messages waiting for the bus");
    }
    if (cb->tail)
        cb->tail->next = &p;
    else
        cb->head = &p;
    cb->tail = &p;
    cb->queued++;
    /* No timeout: the bus thread completes every post it takes, and fails the rest when
     * it stops; the send itself is bounded by the bus implementation's own timeouts. */
    while (!p.done)
        pthread_cond_wait(&cb->sent, &cb->lock);
    pthread_mutex_unlock(&cb->lock);
    if (p.rc < 0 && err != NULL)
        *err = p.err;
    return p.rc;
}

const char *chat_bus_name(const chat_bus *cb)
{
    return hd_bus_name(cb->bus);
}

void chat_bus_get_stats(chat_bus *cb, chat_bus_stats *out)
{
    pthread_mutex_lock(&cb->lock);
    out->sent = cb->n_sent;
    out->received = cb->n_received;
    out->rejected = cb->n_rejected;
    out->sent_unheard = cb->n_unheard;
    pthread_mutex_unlock(&cb->lock);
}

void chat_bus_stop(chat_bus *cb)
{
    if (cb == NULL)
        return;
    hd_stop_request(&cb->stop);
    if (cb->thread_started)
        pthread_join(cb->thread, NULL);
    hd_bus_free(cb->bus); /* shuts down first when started */
    hd_stop_release(&cb->stop);
    pthread_cond_destroy(&cb->sent);
    pthread_mutex_destroy(&cb->lock);
    free(cb);
}
