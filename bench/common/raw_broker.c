/* raw_broker.c — see raw_broker.h. */
#include "raw_broker.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/topology.h"
#include "progress.h"

/* ---- setup ---------------------------------------------------------------------------- */

int bench_broker_open(const char *url, hd_amqp **admin, char *version, size_t cap, hd_error *err)
{
    /* No heartbeats: the admin connection idles through whole phases (minutes on a loaded
     * machine), and librabbitmq only answers heartbeats inside a call. With them the broker
     * closed it ("missed heartbeats from client"), the teardown was skipped, and the run's
     * queues stayed behind: its notification_sent sink, still bound to the shared
     * "notifications" exchange, then took (and persisted) every notification_sent of every
     * later run, adding its own cost to their broker CPU per event (issue 14). */
    hd_amqp_options ao = {.connection_name = "bench admin", .heartbeat_s = -1};
    snprintf(version, cap, "?");
    int rc = hd_amqp_open(url, &ao, admin, err);
    if (rc < 0)
        return rc;
    amqp_table_t *props = amqp_get_server_properties(hd_amqp_state(*admin));
    for (int i = 0; props != NULL && i < props->num_entries; i++) {
        const amqp_table_entry_t *e = &props->entries[i];
        if (e->key.len == 7 && memcmp(e->key.bytes, "version", 7) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            snprintf(version, cap, "%.*s", (int)e->value.value.bytes.len,
                     (const char *)e->value.value.bytes.bytes);
    }
    return 0;
}

int bench_broker_declare_exchange(hd_amqp *admin, const char *exchange, hd_error *err)
{
    hd_exchange_spec ex = {.name = exchange, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    return hd_exchange_declare(admin, &ex, err);
}

int bench_broker_declare_queue(hd_amqp *admin, const char *queue, const char *exchange,
                               const char *key, hd_error *err)
{
    return bench_broker_declare_queue_type(admin, queue, exchange, key, HD_QUEUE_CLASSIC, err);
}

int bench_broker_declare_queue_type(hd_amqp *admin, const char *queue, const char *exchange,
                                    const char *key, int type, hd_error *err)
{
    hd_queue_spec qs = {.name = queue, .durable = 1, .type = (hd_queue_type)type};
    hd_binding_spec bs = {.queue = queue, .exchange = exchange, .key = key};
    int rc = hd_queue_declare(admin, &qs, NULL, err);
    return rc < 0 ? rc : hd_queue_bind(admin, &bs, err);
}

int bench_broker_declare_queue_kind(hd_amqp *admin, const char *queue, const char *exchange,
                                    const char *key, const char *kind, hd_error *err)
{
    /* hd_queue_spec has no x-queue-version: the declare is written out here. */
    amqp_table_entry_t e;
    amqp_table_t args = amqp_empty_table;
    if (strcmp(kind, "classic-v2") == 0) {
        e.key = amqp_cstring_bytes("x-queue-version");
        e.value.kind = AMQP_FIELD_KIND_I32;
        e.value.value.i32 = 2;
        args = (amqp_table_t){.num_entries = 1, .entries = &e};
    } else if (strcmp(kind, "quorum") == 0) {
        e.key = amqp_cstring_bytes("x-queue-type");
        e.value.kind = AMQP_FIELD_KIND_UTF8;
        e.value.value.bytes = amqp_cstring_bytes("quorum");
        args = (amqp_table_t){.num_entries = 1, .entries = &e};
    } else if (strcmp(kind, "classic") != 0) {
        return hd_error_set(err, HD_EINVAL, "queue kind '%s': classic, classic-v2 or quorum", kind);
    }
    amqp_connection_state_t st = hd_amqp_state(admin);
    amqp_queue_declare(st, hd_amqp_channel(admin), amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    int rc = hd_amqp_check_reply(admin, amqp_get_rpc_reply(st), "queue.declare", err);
    if (rc < 0)
        return rc;
    hd_binding_spec bs = {.queue = queue, .exchange = exchange, .key = key};
    return hd_queue_bind(admin, &bs, err);
}

long bench_queue_depth(hd_amqp *admin, const char *queue, hd_error *err)
{
    hd_queue_info info;
    if (hd_queue_inspect(admin, queue, &info, err) < 0)
        return -1;
    return (long)info.message_count;
}

void bench_broker_drop(hd_amqp *admin, const char *queue, const char *exchange)
{
    if (admin == NULL || !hd_amqp_is_open(admin))
        return;
    if (queue != NULL)
        hd_queue_delete(admin, queue, NULL, NULL);
    if (exchange != NULL)
        hd_exchange_delete(admin, exchange, NULL);
}

void bench_broker_close(hd_amqp *admin)
{
    hd_amqp_close(admin);
}

/* ---- confirms --------------------------------------------------------------------------- */

int bench_confirms_init(bench_confirms *c, size_t n)
{
    memset(c, 0, sizeof *c);
    c->low = 1;
    c->settled = calloc(n + 1, 1);
    return c->settled == NULL ? HD_ENOMEM : 0;
}

void bench_confirms_free(bench_confirms *c)
{
    free(c->settled);
    c->settled = NULL;
}

void bench_confirm_settle(bench_confirms *c, uint64_t tag, int multiple, int ack, uint64_t next)
{
    if (tag >= next)
        return; /* not ours: ignore rather than write out of bounds */
    uint64_t from = multiple ? c->low : tag;
    for (uint64_t t = from; t <= tag; t++) {
        if (c->settled[t])
            continue;
        c->settled[t] = 1;
        if (ack)
            c->acked++;
        else
            c->nacked++;
    }
    while (c->low < next && c->settled[c->low])
        c->low++;
}

/* ---- what a raw message carries ---------------------------------------------------------- */

void bench_props_init(bench_props *p, bench_shape shape, const char *type)
{
    memset(p, 0, sizeof *p);
    p->shape = shape;
    p->props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p->props.delivery_mode = 2; /* persistent */
    if (shape != BENCH_SHAPE_CLOUDEVENTS) {
        p->props.content_type = amqp_cstring_bytes("application/octet-stream");
        return;
    }
    p->props.content_type = amqp_cstring_bytes(HD_CLOUDEVENTS_MEDIA_TYPE);
    p->props._flags |= AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                       AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    p->props.type = amqp_cstring_bytes(type);
    p->header[0].key = amqp_cstring_bytes("causationid");
    p->header[0].value.kind = AMQP_FIELD_KIND_UTF8;
    p->props.headers.num_entries = 1;
    p->props.headers.entries = p->header;
    p->mandatory = 1;
    bench_props_next(p, 0, 0);
}

/* A version 7 UUID's layout (time-ordered, as herald's ids are), made of salt, k and which. */
static void bench_uuid(char out[40], uint64_t salt, uint64_t k, unsigned which)
{
    snprintf(out, 40, "%08" PRIx32 "-%04x-7%03x-%04x-%012" PRIx64, (uint32_t)(salt >> 16),
             (unsigned)(salt & 0xffff), which & 0xfff, 0x8000u | (unsigned)((k >> 48) & 0x3fff),
             (uint64_t)(k & 0xffffffffffffULL));
}

void bench_props_next(bench_props *p, uint64_t salt, uint64_t k)
{
    if (p->shape != BENCH_SHAPE_CLOUDEVENTS)
        return;
    bench_uuid(p->id, salt, k, 1);
    bench_uuid(p->correlation, salt, k, 2);
    bench_uuid(p->causation, salt, k, 3);
    p->props.message_id = amqp_cstring_bytes(p->id);
    p->props.correlation_id = amqp_cstring_bytes(p->correlation);
    p->header[0].value.value.bytes = amqp_cstring_bytes(p->causation);
}

/* ---- raw publish -------------------------------------------------------------------------- */

int bench_raw_publish(const char *url, const char *exchange, const char *routing_key, size_t n,
                      size_t body_bytes, size_t window, bench_shape shape, bench_span *out,
                      hd_error *err)
{
    hd_amqp *a = NULL;
    hd_amqp_options ao = {.connection_name = "bench raw publish"};
    int rc = hd_amqp_open(url, &ao, &a, err);
    if (rc < 0)
        return rc;
    amqp_channel_t ch = 0;
    char *body = malloc(body_bytes ? body_bytes : 1);
    bench_confirms c;
    if (bench_confirms_init(&c, n) < 0 || body == NULL) {
        rc = hd_error_set(err, HD_ENOMEM, "raw publish");
        goto out;
    }
    memset(body, 'x', body_bytes);
    if ((rc = hd_amqp_channel_open(a, &ch, err)) < 0)
        goto out;
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_confirm_select(st, ch);
    if ((rc = hd_amqp_check_reply_on(a, ch, amqp_get_rpc_reply(st), "confirm.select", err)) < 0) {
        ch = 0;
        goto out;
    }
    bench_props bp;
    bench_props_init(&bp, shape, routing_key);
    uint64_t salt = (uint64_t)hd_clock_ns();
    amqp_bytes_t bytes = {.len = body_bytes, .bytes = body};

    bench_progress pr;
    bench_progress_start(&pr, "raw publish", n);
    bench_span_begin(out);
    uint64_t next = 1; /* delivery tag of the next publish */
    while (c.low <= n) {
        if (next <= n && next - c.low < window) {
            bench_props_next(&bp, salt, next);
            int status = amqp_basic_publish(st, ch, amqp_cstring_bytes(exchange),
                                            amqp_cstring_bytes(routing_key), bp.mandatory, 0,
                                            &bp.props, bytes);
            if ((rc = hd_amqp_check_status(a, status, "raw publish", err)) < 0)
                goto out;
            next++;
            if ((next & 255) == 0)
                bench_progress_tick(&pr, (size_t)(c.acked + c.nacked), NULL);
            continue;
        }
        /* Window full (or everything sent): wait for the next confirm. */
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = BENCH_STALL_MS / 1000, .tv_usec = 0};
        int status = amqp_simple_wait_frame_noblock(st, &f, &tv);
        if ((rc = hd_amqp_check_status(a, status, "wait for confirms", err)) < 0)
            goto out;
        if (f.frame_type == AMQP_FRAME_METHOD && f.channel == ch) {
            amqp_method_t *m = &f.payload.method;
            if (m->id == AMQP_BASIC_ACK_METHOD) {
                const amqp_basic_ack_t *ack = m->decoded;
                bench_confirm_settle(&c, ack->delivery_tag, ack->multiple, 1, next);
            } else if (m->id == AMQP_BASIC_NACK_METHOD) {
                const amqp_basic_nack_t *nack = m->decoded;
                bench_confirm_settle(&c, nack->delivery_tag, nack->multiple, 0, next);
            } else if (m->id == AMQP_BASIC_RETURN_METHOD) {
                rc = hd_error_set(err, HD_EINVAL,
                                  "raw publish: the broker returned a message: nothing is bound "
                                  "to %s with key %s",
                                  exchange, routing_key);
                goto out;
            } else if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
                rc = hd_amqp_handle_close(a, ch, m, "raw publish", err);
                ch = 0;
                goto out;
            }
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            rc = hd_amqp_handle_close(a, f.channel, &f.payload.method, "raw publish", err);
            goto out;
        }
        amqp_maybe_release_buffers(st);
        bench_progress_tick(&pr, (size_t)(c.acked + c.nacked), NULL);
    }
    bench_span_end(out, (size_t)c.acked);
    bench_progress_done(&pr, out);
    if (c.nacked > 0)
        rc = hd_error_set(err, HD_ENACKED, "raw publish: the broker nacked %" PRIu64 " messages",
                          c.nacked);
out:
    if (ch != 0)
        hd_amqp_channel_close(a, ch);
    hd_amqp_close(a);
    bench_confirms_free(&c);
    free(body);
    return rc;
}

/* ---- a plain consumer: what raw consume and the sink share ------------------------------ */

/* Opens a connection named name to url with one channel and basic.qos prefetch into *a and
 * *ch (new: consumer_close them). */
static int consumer_open(const char *url, const char *name, int prefetch, hd_amqp **a,
                         amqp_channel_t *ch, hd_error *err)
{
    hd_amqp_options ao = {.connection_name = name};
    *ch = 0;
    int rc = hd_amqp_open(url, &ao, a, err);
    if (rc < 0)
        return rc;
    amqp_channel_t c = 0;
    if ((rc = hd_amqp_channel_open(*a, &c, err)) < 0)
        return rc;
    amqp_connection_state_t st = hd_amqp_state(*a);
    amqp_basic_qos(st, c, 0, (uint16_t)prefetch, 0);
    if ((rc = hd_amqp_check_reply_on(*a, c, amqp_get_rpc_reply(st), "basic.qos", err)) < 0)
        return rc; /* the channel is gone with the error */
    *ch = c;
    return 0;
}

/* basic.consume of queue on *ch (no-ack off): deliveries start here. */
static int consumer_start(hd_amqp *a, amqp_channel_t *ch, const char *queue, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_basic_consume(st, *ch, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    int rc = hd_amqp_check_reply_on(a, *ch, amqp_get_rpc_reply(st), "basic.consume", err);
    if (rc < 0)
        *ch = 0;
    return rc;
}

/* One step of the loop: waits up to tv for a delivery and acks it alone (the plain consumer
 * loop, not multiple). 1: one acked; 0: nothing within tv; < 0: the connection or the channel
 * failed (err set; *ch is 0 when the broker closed the channel). */
static int consumer_take(hd_amqp *a, amqp_channel_t *ch, struct timeval *tv, const char *what,
                         hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    for (;;) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(st);
        amqp_rpc_reply_t r = amqp_consume_message(st, &env, tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            int status = amqp_basic_ack(st, *ch, env.delivery_tag, 0);
            amqp_destroy_envelope(&env);
            int rc = hd_amqp_check_status(a, status, "basic.ack", err);
            return rc < 0 ? rc : 1;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return 0;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t f;
            int rc = hd_amqp_check_status(a, amqp_simple_wait_frame(st, &f), what, err);
            if (rc < 0)
                return rc;
            if (f.frame_type == AMQP_FRAME_METHOD &&
                (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                 f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
                *ch = 0;
                return hd_amqp_handle_close(a, f.channel, &f.payload.method, what, err);
            }
            continue;
        }
        return hd_amqp_reply_error(r, what, NULL, err);
    }
}

/* Closes what consumer_open opened (a NULL or half-open pair is fine). */
static void consumer_close(hd_amqp *a, amqp_channel_t ch)
{
    if (a != NULL && ch != 0)
        hd_amqp_channel_close(a, ch);
    hd_amqp_close(a);
}

/* ---- raw consume -------------------------------------------------------------------------- */

int bench_raw_consume(const char *url, const char *queue, size_t n, int prefetch, bench_span *out,
                      hd_error *err)
{
    hd_amqp *a = NULL;
    amqp_channel_t ch = 0;
    int rc = consumer_open(url, "bench raw consume", prefetch, &a, &ch, err);
    if (rc < 0)
        goto out;
    bench_progress pr;
    bench_progress_start(&pr, "raw consume", n);
    size_t got = 0;
    bench_span_begin(out); /* basic.consume is where deliveries start: the clock starts before it */
    if ((rc = consumer_start(a, &ch, queue, err)) < 0)
        goto out;
    while (got < n) {
        struct timeval tv = {.tv_sec = BENCH_STALL_MS / 1000, .tv_usec = 0};
        rc = consumer_take(a, &ch, &tv, "raw consume", err);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            rc = hd_error_set(err, HD_ETIMEOUT,
                              "raw consume: nothing for %d s after %zu of %zu messages",
                              BENCH_STALL_MS / 1000, got, n);
            goto out;
        }
        got++;
        if ((got & 255) == 0)
            bench_progress_tick(&pr, got, NULL);
    }
    rc = 0;
    bench_span_end(out, got);
    bench_progress_done(&pr, out);
out:
    consumer_close(a, ch);
    return rc;
}

/* ---- a sink drained while the benchmark runs --------------------------------------------- */

struct bench_sink {
    char *url, *queue;
    int prefetch;
    pthread_t thread;
    atomic_size_t count;
    atomic_int stop;
    int rc;
    hd_error err;
};

static void *sink_main(void *arg)
{
    bench_sink *s = arg;
    hd_amqp *a = NULL;
    amqp_channel_t ch = 0;
    int rc = consumer_open(s->url, "bench sink", s->prefetch, &a, &ch, &s->err);
    if (rc == 0)
        rc = consumer_start(a, &ch, s->queue, &s->err);
    while (rc >= 0 && !atomic_load(&s->stop)) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000}; /* look at the stop flag */
        rc = consumer_take(a, &ch, &tv, "sink", &s->err);
        if (rc > 0)
            atomic_fetch_add(&s->count, 1);
    }
    consumer_close(a, ch);
    s->rc = rc < 0 ? rc : 0;
    return NULL;
}

int bench_sink_start(const char *url, const char *queue, int prefetch, bench_sink **out,
                     hd_error *err)
{
    *out = NULL;
    bench_sink *s = calloc(1, sizeof *s);
    if (s == NULL || (s->url = strdup(url)) == NULL || (s->queue = strdup(queue)) == NULL) {
        if (s != NULL) {
            free(s->url);
            free(s);
        }
        return hd_error_set(err, HD_ENOMEM, "bench sink: out of memory");
    }
    s->prefetch = prefetch;
    atomic_init(&s->count, 0);
    atomic_init(&s->stop, 0);
    if (pthread_create(&s->thread, NULL, sink_main, s) != 0) {
        free(s->url);
        free(s->queue);
        free(s);
        return hd_error_set(err, HD_EIO, "bench sink: cannot start its thread");
    }
    *out = s;
    return 0;
}

size_t bench_sink_count(const bench_sink *s)
{
    return s == NULL ? 0 : atomic_load(&((bench_sink *)s)->count);
}

long bench_sink_stop(bench_sink *s, hd_error *err)
{
    if (s == NULL)
        return 0;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    long n = (long)atomic_load(&s->count);
    if (s->rc < 0)
        n = hd_error_set(err, s->rc, "bench sink: %s (after %ld messages)", s->err.text, n);
    free(s->url);
    free(s->queue);
    free(s);
    return n;
}
