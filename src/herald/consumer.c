/* consumer.c — manual ack, prefetch, retry tiers and the dead-letter queue; see consumer.h. */
#include "herald/consumer.h"

#include "herald/backoff.h"
#include "herald/clock.h"
#include "herald/publisher.h"

#include <inttypes.h>
#include <stddef.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_LIMIT 256
#define XDEATH_MAX  16

/* One received message and everything built from it. The envelope owns the bytes (its own
 * pool), so several slots can be alive at once: that is what a batch needs. */
typedef struct slot {
    amqp_envelope_t env;
    int has_env;
    unsigned gen; /* generation of the consuming connection it arrived on: a delivery
                     tag means nothing on a newer channel */
    amqp_channel_t ch;
    hd_delivery d;
    char *arena; /* NUL-terminated copies of the strings d points to */
    hd_header *headers;
    hd_envelope *decoded; /* d.envelope */
    int undecodable;      /* 1: goes to the DLQ without meeting a handler */
    char reason[HD_REASON_MAX];
} slot;

struct hd_consumer {
    char *queue;
    hd_consumer_options opts;
    hd_retry_policy policy;
    hd_retry_names names;                      /* retry exchange, tier queues, DLQ */
    const char *tier_list[HD_RETRY_MAX_TIERS]; /* names.tiers, as a list */

    hd_amqp *conn;     /* consumes */
    amqp_channel_t ch; /* the consuming channel; 0 = not consuming */
    unsigned ch_gen;
    int cancelled; /* 1: the broker cancelled our subscription on ch (still open): consume
                      again on it (resubscribe) */
    hd_amqp *pub;  /* publishes retries and dead letters, through `publisher` only */
    /* The one confirm state machine (publisher.h), on its own connection: a publisher reads
     * every frame of its connection and would swallow the deliveries of a consumer sharing
     * it, and flow control that blocks a publishing connection must not also block the acks
     * and the prefetch window of the consuming one. It reopens its confirm channel by itself
     * after hd_amqp_reconnect(pub). */
    hd_publisher *publisher;

    size_t batch_max;
    slot *slots; /* batch_max of them */
    hd_consumer_counts counts;
    hd_backoff backoff;
};

/* ---- topology (retry.h declares it) ----------------------------------------------------- */

int hd_consumer_declare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err)
{
    return hd_retry_declare(a, queue, p, err);
}

int hd_consumer_undeclare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err)
{
    return hd_retry_undeclare(a, queue, p, err);
}

/* ---- connections and channels --------------------------------------------------------- */

/* Open the consuming channel: declare (if asked), prefetch, basic.consume. */
static int start_consuming(hd_consumer *c, hd_error *err)
{
    int rc;
    if (c->opts.declare && (rc = hd_consumer_declare(c->conn, c->queue, &c->policy, err)) < 0)
        return rc;
    amqp_channel_t ch;
    if ((rc = hd_amqp_channel_open(c->conn, &ch, err)) < 0)
        return rc;
    amqp_connection_state_t st = hd_amqp_state(c->conn);

    /* The prefetch is per consumer (global = 0): how many unacked deliveries the broker lets
     * this consumer hold before it waits for an ack. */
    uint16_t prefetch = c->opts.prefetch == HD_PREFETCH_UNLIMITED ? 0
                        : c->opts.prefetch == 0                   ? 1
                                                                  : (uint16_t)c->opts.prefetch;
    amqp_basic_qos(st, ch, 0, prefetch, 0);
    if ((rc = hd_amqp_check_reply_on(c->conn, ch, amqp_get_rpc_reply(st), "basic.qos", err)) < 0)
        return rc;

    /* no_ack = 0: manual acknowledgements, the whole point. */
    amqp_basic_consume(st, ch, amqp_cstring_bytes(c->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    char what[HD_AMQP_NAME_MAX + 32];
    snprintf(what, sizeof what, "consume '%s'", c->queue);
    if ((rc = hd_amqp_check_reply_on(c->conn, ch, amqp_get_rpc_reply(st), what, err)) < 0)
        return rc;
    c->ch = ch;
    c->ch_gen = hd_amqp_generation(c->conn);
    c->cancelled = 0;
    return HD_OK;
}

static int consuming(const hd_consumer *c)
{
    return c->ch != 0 && c->ch_gen == hd_amqp_generation(c->conn);
}

/* After a basic.cancel from the broker: redeclare (if asked) and basic.consume again on the
 * same channel, whose unacked deliveries stay valid (consumer.h). A refusal (404: the queue
 * is gone, or its node is down) closes the channel: the caller's backoff and
 * hd_consumer_reconnect start over on a fresh one. */
static int resubscribe(hd_consumer *c, hd_error *err)
{
    int rc;
    if (c->opts.declare && (rc = hd_consumer_declare(c->conn, c->queue, &c->policy, err)) < 0)
        return rc;
    amqp_connection_state_t st = hd_amqp_state(c->conn);
    amqp_basic_consume(st, c->ch, amqp_cstring_bytes(c->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    char what[HD_AMQP_NAME_MAX + 48];
    snprintf(what, sizeof what, "consume '%s' again after a cancel", c->queue);
    if ((rc = hd_amqp_check_reply_on(c->conn, c->ch, amqp_get_rpc_reply(st), what, err)) < 0) {
        c->ch = 0;
        c->cancelled = 0;
        return rc;
    }
    c->cancelled = 0;
    return HD_OK;
}

/* ---- building a delivery -------------------------------------------------------------- */

static const char *put_bytes(char **cur, amqp_bytes_t b)
{
    char *s = *cur;
    if (b.len > 0)
        memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    *cur += b.len + 1;
    return s;
}

/* Text of a scalar header value into *cur (at most 32 bytes), or NULL for kinds shown as
 * nothing (tables, arrays, void). */
static const char *put_scalar(char **cur, const amqp_field_value_t *v)
{
    char *s = *cur;
    int n;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        n = snprintf(s, 32, "%d", v->value.boolean ? 1 : 0);
        break;
    case AMQP_FIELD_KIND_I8:
        n = snprintf(s, 32, "%d", v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        n = snprintf(s, 32, "%u", v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        n = snprintf(s, 32, "%d", v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        n = snprintf(s, 32, "%u", v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        n = snprintf(s, 32, "%" PRId32, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        n = snprintf(s, 32, "%" PRIu32, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        n = snprintf(s, 32, "%" PRId64, v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        n = snprintf(s, 32, "%" PRIu64, v->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
        n = snprintf(s, 32, "%g", (double)v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        n = snprintf(s, 32, "%g", v->value.f64);
        break;
    default:
        return NULL;
    }
    *cur += (n > 31 ? 31 : n) + 1;
    return s;
}

static int is_string(const amqp_field_value_t *v)
{
    return v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES;
}

static void slot_release(slot *s)
{
    if (s->has_env)
        amqp_destroy_envelope(&s->env);
    hd_envelope_free(s->decoded);
    free(s->arena);
    free(s->headers);
    memset(s, 0, sizeof *s);
}

/* The properties of a received message, in a pool of their own sized for them.
 * librabbitmq decodes a delivery's properties into a pool of 4 KiB pages
 * (amqp_consume_message), of which ordinary properties use a few hundred bytes; a window of
 * prefetch deliveries keeps one such page each until it is settled: about 1 MiB of heap at
 * a prefetch of 256 (docs/bench.md, issue 14). The properties stay needed after slot_fill
 * (forward() republishes them with x-death), so they are copied, not dropped: into
 * PROPS_PAGE pages, and the 4 KiB one is freed. On failure (out of memory) the delivery
 * keeps librabbitmq's pool, as before. */
#define PROPS_PAGE 512

static int bytes_clone(amqp_bytes_t *b, amqp_pool_t *pool)
{
    if (b->len == 0)
        return 0;
    void *to = amqp_pool_alloc(pool, b->len);
    if (to == NULL)
        return -1;
    memcpy(to, b->bytes, b->len);
    b->bytes = to;
    return 0;
}

static void shrink_properties(amqp_envelope_t *e)
{
    static const struct {
        amqp_flags_t flag;
        size_t offset;
    } text[] = {
        {AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
        {AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
        {AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
        {AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
        {AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration)},
        {AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
        {AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
        {AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id)},
        {AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
        {AMQP_BASIC_CLUSTER_ID_FLAG, offsetof(amqp_basic_properties_t, cluster_id)},
    };
    amqp_pool_t pool;
    init_amqp_pool(&pool, PROPS_PAGE);
    amqp_basic_properties_t copy = e->message.properties;
    int ok = 1;
    for (size_t i = 0; ok && i < sizeof text / sizeof text[0]; i++)
        if (copy._flags & text[i].flag)
            ok = bytes_clone((amqp_bytes_t *)((char *)&copy + text[i].offset), &pool) == 0;
    if (ok && (copy._flags & AMQP_BASIC_HEADERS_FLAG))
        ok = amqp_table_clone(&e->message.properties.headers, &copy.headers, &pool) ==
             AMQP_STATUS_OK;
    if (!ok) {
        empty_amqp_pool(&pool);
        return;
    }
    empty_amqp_pool(&e->message.pool); /* amqp_destroy_envelope empties the new one */
    e->message.pool = pool;
    e->message.properties = copy;
}

/* Fill s->d from s->env: strings copied and NUL-terminated, headers as text, the attempt
 * from x-death, the envelope decoded when there is a registry. */
static int slot_fill(hd_consumer *c, slot *s, hd_error *err)
{
    const amqp_envelope_t *e = &s->env;
    const amqp_basic_properties_t *p = &e->message.properties;
    const amqp_table_t *h = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;

    /* One allocation for every string: measure first. */
    size_t need = e->exchange.len + e->routing_key.len + 2;
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        need += p->message_id.len + 1;
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        need += p->correlation_id.len + 1;
    if (p->_flags & AMQP_BASIC_TYPE_FLAG)
        need += p->type.len + 1;
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        need += p->content_type.len + 1;
    int nh = h ? h->num_entries : 0;
    for (int i = 0; i < nh; i++)
        need += h->entries[i].key.len + 1 +
                (is_string(&h->entries[i].value) ? h->entries[i].value.value.bytes.len + 1 : 32);
    s->arena = malloc(need);
    s->headers = calloc(nh > 0 ? (size_t)nh : 1, sizeof *s->headers);
    if (s->arena == NULL || s->headers == NULL)
        return hd_error_set(err, HD_ENOMEM, "consumer: delivery of %zu bytes", need);

    char *cur = s->arena;
    hd_delivery *d = &s->d;
    d->body = e->message.body.bytes;
    d->body_len = e->message.body.len;
    d->queue = c->queue;
    d->exchange = put_bytes(&cur, e->exchange);
    d->routing_key = put_bytes(&cur, e->routing_key);
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        d->message_id = put_bytes(&cur, p->message_id);
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        d->correlation_id = put_bytes(&cur, p->correlation_id);
    if (p->_flags & AMQP_BASIC_TYPE_FLAG)
        d->type = put_bytes(&cur, p->type);
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        d->content_type = put_bytes(&cur, p->content_type);
    size_t n = 0;
    for (int i = 0; i < nh; i++) {
        const amqp_table_entry_t *en = &h->entries[i];
        char *mark = cur;
        const char *name = put_bytes(&cur, en->key);
        const char *value = is_string(&en->value) ? put_bytes(&cur, en->value.value.bytes)
                                                  : put_scalar(&cur, &en->value);
        if (value == NULL) {
            cur = mark; /* a table or an array: not shown as text */
            continue;
        }
        s->headers[n].name = name;
        s->headers[n].value = value;
        n++;
    }
    d->headers = s->headers;
    d->n_headers = n;
    d->redelivered = e->redelivered ? 1 : 0;

    /* The attempt number, as the broker counted it (retry.h). A malformed x-death was not
     * written by the broker: count from 1 rather than refuse the message. */
    hd_xdeath deaths[XDEATH_MAX];
    size_t ndeaths = 0;
    if (hd_xdeath_parse(h, deaths, XDEATH_MAX, &ndeaths) < 0)
        ndeaths = 0;
    d->attempt = hd_retry_attempt(deaths, ndeaths, c->tier_list, (size_t)c->policy.ntiers);
    d->reason_buf = s->reason;
    s->reason[0] = '\0';

    if (c->opts.registry != NULL) {
        hd_error derr;
        int rc = hd_envelope_decode(c->opts.registry, d->body, d->body_len, &s->decoded, &derr);
        if (rc < 0) {
            /* Permanent for this message: retrying cannot change its bytes. */
            s->undecodable = 1;
            snprintf(s->reason, sizeof s->reason, "%s: %.200s", hd_err_name(rc), derr.text);
        }
        d->envelope = s->decoded;
    }
    return HD_OK;
}

/* ---- settling ------------------------------------------------------------------------- */

static int ack(hd_consumer *c, const slot *s, int multiple, hd_error *err)
{
    /* A delivery tag belongs to the channel it came on. After a reconnect that channel is
     * gone, the broker has already requeued the message, and acking the old number on the
     * new channel would close it (406 PRECONDITION_FAILED - unknown delivery tag). */
    if (s->gen != hd_amqp_generation(c->conn) || s->ch != c->ch)
        return hd_error_set(err, HD_ECLOSED,
                            "consumer '%s': the channel of delivery %" PRIu64
                            " is gone; the broker redelivers it",
                            c->queue, s->env.delivery_tag);
    int status = amqp_basic_ack(hd_amqp_state(c->conn), c->ch, s->env.delivery_tag, multiple);
    return hd_amqp_check_status(c->conn, status, "basic.ack", err);
}

/* Hand the message back to its queue: what we do when its copy could not be sent. */
static void requeue(hd_consumer *c, const slot *s)
{
    if (s->gen != hd_amqp_generation(c->conn) || s->ch != c->ch || !hd_amqp_is_open(c->conn))
        return; /* the broker requeues it anyway when the channel goes */
    int status = amqp_basic_nack(hd_amqp_state(c->conn), c->ch, s->env.delivery_tag, 0, 1);
    hd_amqp_check_status(c->conn, status, "basic.nack", NULL);
    c->counts.requeued++;
}

static int header_is(const amqp_table_entry_t *e, const char *name)
{
    size_t n = strlen(name);
    return e->key.len == n && memcmp(e->key.bytes, name, n) == 0;
}

/* Republish s (body, properties, headers with x-death) to exchange/routing key through the
 * publisher, and ack it only once the broker confirmed the copy. extra (n_extra entries)
 * replace or add headers. */
static int forward(hd_consumer *c, slot *s, const char *exchange, const char *routing_key,
                   const amqp_table_entry_t *extra, int n_extra, hd_error *err)
{
    const amqp_basic_properties_t *got = &s->env.message.properties;
    amqp_basic_properties_t props = *got;
    /* A per-message TTL would expire the copy again in the tier queue or the DLQ (the broker
     * removes it when it dead-letters, for the same reason). */
    props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;

    /* The headers as received (x-death is an array of tables: it goes as it is), with the
     * extra ones replacing those of the same name. */
    const amqp_table_t *h = (got->_flags & AMQP_BASIC_HEADERS_FLAG) ? &got->headers : NULL;
    int nh = h ? h->num_entries : 0;
    amqp_table_entry_t *entries = malloc(((size_t)nh + (size_t)n_extra + 1) * sizeof *entries);
    if (entries == NULL)
        return hd_error_set(err, HD_ENOMEM, "consumer: headers");
    int n = 0;
    for (int i = 0; i < nh; i++) {
        int replaced = 0;
        for (int k = 0; k < n_extra; k++)
            replaced |= header_is(&h->entries[i], (const char *)extra[k].key.bytes);
        if (!replaced)
            entries[n++] = h->entries[i];
    }
    for (int k = 0; k < n_extra; k++)
        entries[n++] = extra[k];
    amqp_table_t headers = {.num_entries = n, .entries = entries};

    hd_message m = {
        .exchange = exchange,
        .routing_key = routing_key,
        .body = s->env.message.body.bytes,
        .len = s->env.message.body.len,
        /* Mandatory (a missing tier queue or DLQ is RETURNED, not silently dropped), and
         * persistent unless the original was explicitly transient. */
        .flags = (got->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && got->delivery_mode == 1
                     ? HD_MSG_TRANSIENT
                     : 0,
        .raw_headers = n > 0 ? &headers : NULL,
        .raw_properties = &props,
    };

    /* Confirm first, ack second: between the two the message exists twice (at least once),
     * never zero times. Anything but CONFIRMED — NACKED, RETURNED, LOST, or no confirm within
     * confirm_timeout_ms — hands the original back to its queue unacked. After a timeout the
     * copy stays outstanding in the publisher, whose late confirm is matched by number and
     * cannot be taken for the next forward's: the copy may exist (a duplicate, deduplicated
     * by message id), the original is never acked without it. */
    hd_error why;
    int rc = hd_publish_confirmed(c->publisher, &m, -1, &why);
    free(entries);
    if (rc < 0) {
        requeue(c, s);
        return hd_error_set(err, rc, "consumer '%s': %s/%s not forwarded, message requeued: %s%s",
                            c->queue, *exchange ? exchange : "(default)", routing_key, why.text,
                            rc == HD_ERETURNED ? " (is the retry topology declared?)" : "");
    }
    return ack(c, s, 0, err);
}

static amqp_table_entry_t str_entry(const char *key, const char *value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

static int bury(hd_consumer *c, slot *s, const char *reason, hd_error *err)
{
    amqp_table_entry_t extra[3];
    extra[0] = str_entry(HD_HEADER_REASON, reason);
    extra[1].key = amqp_cstring_bytes(HD_HEADER_ATTEMPTS);
    extra[1].value.kind = AMQP_FIELD_KIND_I64;
    extra[1].value.value.i64 = s->d.attempt;
    extra[2] = str_entry(HD_HEADER_QUEUE, c->queue);
    /* Straight into the DLQ through the default exchange (routing key = queue name). */
    int rc = forward(c, s, "", c->names.dlq, extra, 3, err);
    if (rc == 0)
        c->counts.dead++;
    return rc;
}

static int retry_later(hd_consumer *c, slot *s, hd_error *err)
{
    int tier = hd_retry_tier(&c->policy, s->d.attempt);
    /* A tier outside the array (an attempt hd_retry_attempt would never give) must not be
     * used as an index: the message has nowhere to wait, so it is exhausted. */
    if (tier < 0 || tier >= c->policy.ntiers)
        return bury(c, s, "attempt number out of range (forged x-death?)", err);
    int rc = forward(c, s, c->names.retry_exchange, c->names.tiers[tier], NULL, 0, err);
    if (rc == 0)
        c->counts.retried++;
    return rc;
}

/* Act on a handler's verdict for s. */
static int settle(hd_consumer *c, slot *s, hd_consume_result verdict, hd_error *err)
{
    char why[HD_REASON_MAX];
    switch (verdict) {
    case HD_CONSUME_OK: {
        int rc = ack(c, s, 0, err);
        if (rc == 0)
            c->counts.acked++;
        return rc;
    }
    case HD_CONSUME_RETRY:
        if (!hd_retry_exhausted(&c->policy, s->d.attempt))
            return retry_later(c, s, err);
        if (s->reason[0])
            snprintf(why, sizeof why, "%s", s->reason);
        else
            snprintf(why, sizeof why, "handler failed %d times", s->d.attempt);
        return bury(c, s, why, err);
    case HD_CONSUME_REJECT:
    default:
        return bury(c, s, s->reason[0] ? s->reason : "handler rejected", err);
    }
}

/* ---- receiving ------------------------------------------------------------------------ */

/* Wait up to timeout_ms for one delivery into s. 1 = got one, 0 = none, < 0 = failure. */
static int receive(hd_consumer *c, slot *s, int timeout_ms, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(c->conn);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_rpc_reply_t r = amqp_consume_message(st, &s->env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        s->has_env = 1;
        s->gen = hd_amqp_generation(c->conn);
        s->ch = s->env.channel;
        c->counts.delivered++;
        if (s->env.redelivered)
            c->counts.redelivered++;
        shrink_properties(&s->env);
        int rc = slot_fill(c, s, err);
        return rc < 0 ? rc : 1;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        /* Something other than a delivery arrived: read it and see (librabbitmq's
         * documented protocol for amqp_consume_message). */
        amqp_frame_t f;
        int status = amqp_simple_wait_frame(st, &f);
        if (status != AMQP_STATUS_OK)
            return hd_amqp_check_status(c->conn, status, "consume", err);
        if (f.frame_type != AMQP_FRAME_METHOD)
            return 0;
        amqp_method_t *m = &f.payload.method;
        if (m->id == AMQP_CONNECTION_CLOSE_METHOD || m->id == AMQP_CHANNEL_CLOSE_METHOD) {
            if (f.channel == c->ch)
                c->ch = 0;
            return hd_amqp_handle_close(c->conn, f.channel, m, "consume", err);
        }
        if (m->id == AMQP_BASIC_CANCEL_METHOD && f.channel == c->ch) {
            /* The broker cancelled us: the queue was deleted, or a classic queue's node went
             * down (a quorum queue whose leader moves keeps its consumers: the channel
             * follows the new leader). No more deliveries come for this subscription; those
             * already here are settled on this channel, and the next poll subscribes again
             * on it (resubscribe). The cancel needs no reply (the broker sends it with
             * nowait). */
            c->cancelled = 1;
            c->counts.cancelled++;
            return 0;
        }
        return 0;
    }
    int rc = hd_amqp_check_reply_on(c->conn, c->ch, r, "consume", err);
    if (rc < 0)
        c->ch = 0;
    return rc;
}

int hd_consumer_poll(hd_consumer *c, int timeout_ms, hd_error *err)
{
    if (c == NULL)
        return hd_error_set(err, HD_EINVAL, "poll: consumer is NULL");
    if (!hd_amqp_is_open(c->conn))
        return hd_error_set(err, HD_ECLOSED, "consumer '%s': connection is closed", c->queue);
    int rc;
    if (consuming(c) && c->cancelled && (rc = resubscribe(c, err)) < 0)
        return rc;
    if (!consuming(c) && (rc = start_consuming(c, err)) < 0)
        return rc;
    amqp_maybe_release_buffers(hd_amqp_state(c->conn));

    /* The first delivery may be waited for; the rest of a batch only if already here. */
    size_t n = 0;
    rc = receive(c, &c->slots[0], timeout_ms < 0 ? 0 : timeout_ms, err);
    if (rc <= 0) {
        slot_release(&c->slots[0]);
        return rc;
    }
    n = 1;
    while (c->opts.batch_handler != NULL && n < c->batch_max) {
        hd_error e2;
        rc = receive(c, &c->slots[n], 0, &e2);
        if (rc <= 0) {
            slot_release(&c->slots[n]);
            break; /* a failure here shows again on the next poll */
        }
        n++;
    }

    int first = 0;
    hd_error one;
    /* Undecodable messages go aside before any handler sees them. */
    const hd_delivery *good[BATCH_LIMIT];
    slot *good_slots[BATCH_LIMIT];
    size_t ngood = 0;
    for (size_t i = 0; i < n; i++) {
        slot *s = &c->slots[i];
        if (s->undecodable) {
            rc = bury(c, s, s->reason, &one);
            if (rc < 0 && first == 0) {
                first = rc;
                if (err)
                    *err = one;
            }
        } else {
            good[ngood] = &s->d;
            good_slots[ngood++] = s;
        }
    }

    int batched = 0;
    if (c->opts.batch_handler != NULL && ngood > 0) {
        hd_consume_result v = c->opts.batch_handler(c->opts.ctx, good, ngood);
        if (v == HD_CONSUME_OK) {
            /* One ack for the whole window: every tag up to the last is settled at once.
             * Earlier deliveries on this channel are all settled already (dead letters
             * above were acked one by one, after their confirm). */
            rc = ack(c, good_slots[ngood - 1], 1, &one);
            if (rc == 0)
                c->counts.acked += ngood;
            else if (first == 0) {
                first = rc;
                if (err)
                    *err = one;
            }
            batched = 1;
        }
    }
    if (!batched) {
        for (size_t i = 0; i < ngood; i++) {
            slot *s = good_slots[i];
            hd_consume_result v = c->opts.handler(c->opts.ctx, &s->d);
            rc = settle(c, s, v, &one);
            if (rc < 0 && first == 0) {
                first = rc;
                if (err)
                    *err = one;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        slot_release(&c->slots[i]);
    return first < 0 ? first : (int)n;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int hd_consumer_open(const char *url, const hd_consumer_options *opts, hd_consumer **out,
                     hd_error *err)
{
    *out = NULL;
    if (opts == NULL || opts->handler == NULL)
        return hd_error_set(err, HD_EINVAL, "consumer: options with a handler are required");
    if (opts->prefetch < HD_PREFETCH_UNLIMITED || opts->prefetch > 65535)
        return hd_error_set(err, HD_ECONFIG, "consumer: prefetch %d out of 0..65535",
                            opts->prefetch);
    hd_consumer *c = calloc(1, sizeof *c);
    if (c == NULL)
        return hd_error_set(err, HD_ENOMEM, "consumer");
    int rc;
    c->opts = *opts;
    if (opts->retry != NULL)
        c->policy = *opts->retry;
    else
        hd_retry_policy_default(&c->policy);
    c->opts.retry = &c->policy;
    if ((rc = hd_retry_names_make(opts->queue, &c->policy, &c->names, err)) < 0)
        goto fail;
    c->queue = strdup(opts->queue);
    if (c->queue == NULL) {
        rc = hd_error_set(err, HD_ENOMEM, "consumer");
        goto fail;
    }
    c->opts.queue = c->queue;
    for (int i = 0; i < c->policy.ntiers; i++)
        c->tier_list[i] = c->names.tiers[i];

    /* A batch never holds more than the prefetch: the broker would not send more. */
    size_t cap = opts->prefetch > 0 ? (size_t)opts->prefetch : BATCH_LIMIT;
    c->batch_max = opts->batch_handler == NULL ? 1 : opts->batch_max > 0 ? opts->batch_max : cap;
    if (c->batch_max > cap)
        c->batch_max = cap;
    if (c->batch_max > BATCH_LIMIT)
        c->batch_max = BATCH_LIMIT;
    c->slots = calloc(c->batch_max, sizeof *c->slots);
    if (c->slots == NULL) {
        rc = hd_error_set(err, HD_ENOMEM, "consumer");
        goto fail;
    }
    hd_backoff_init(&c->backoff, 100, 5000, (uint64_t)hd_clock_ns());

    hd_amqp_options ao;
    memset(&ao, 0, sizeof ao);
    if (opts->amqp != NULL)
        ao = *opts->amqp;
    if (ao.connection_name == NULL)
        ao.connection_name = "herald consumer";
    if ((rc = hd_amqp_open(url, &ao, &c->conn, err)) < 0)
        goto fail;
    if ((rc = hd_amqp_open(url, &ao, &c->pub, err)) < 0)
        goto fail;
    /* One forward at a time (hd_publish_confirmed), so the window only matters after a
     * timeout: copies whose confirm is late stay in it until settled, and a full window makes
     * the next forward wait for the oldest — back-pressure on a broker that stopped
     * confirming. */
    hd_publisher_options po = {.window = 16,
                               .confirm_timeout_ms =
                                   opts->confirm_timeout_ms > 0 ? opts->confirm_timeout_ms : 10000};
    if ((rc = hd_publisher_new(c->pub, &po, &c->publisher, err)) < 0)
        goto fail;
    if ((rc = start_consuming(c, err)) < 0)
        goto fail;
    c->opts.amqp = NULL; /* the caller's, and only needed above: each hd_amqp keeps a copy */
    *out = c;
    return HD_OK;

fail:
    hd_consumer_close(c);
    return rc;
}

void hd_consumer_close(hd_consumer *c)
{
    if (c == NULL)
        return;
    /* Closing the connections hands every unacked delivery back to the broker. */
    hd_publisher_free(c->publisher);
    hd_amqp_close(c->pub);
    hd_amqp_close(c->conn);
    if (c->slots != NULL)
        for (size_t i = 0; i < c->batch_max; i++)
            slot_release(&c->slots[i]);
    free(c->slots);
    free(c->queue);
    free(c);
}

int hd_consumer_reconnect(hd_consumer *c, const hd_stop *stop, hd_error *err)
{
    int rc;
    if (!hd_amqp_is_open(c->conn)) {
        c->ch = 0;
        if ((rc = hd_amqp_reconnect(c->conn, stop, err)) < 0)
            return rc;
        c->counts.reconnects++;
    }
    if (!hd_amqp_is_open(c->pub)) {
        if ((rc = hd_amqp_reconnect(c->pub, stop, err)) < 0)
            return rc;
    }
    if (!consuming(c))
        return start_consuming(c, err);
    return HD_OK;
}

/* Failures no reconnect can fix. */
static int permanent(int rc)
{
    return rc == HD_EAUTH || rc == HD_EURL || rc == HD_ECONFIG || rc == HD_EINVAL ||
           rc == HD_ENOMEM;
}

int hd_consumer_wait(hd_consumer *c, const hd_stop *stop, int timeout_ms)
{
    if (c == NULL)
        return HD_EINVAL;
    if (hd_stop_requested(stop))
        return HD_EINTR;
    /* Nothing to wait on, or something to do at once: let the poll see it. */
    if (!hd_amqp_is_open(c->conn) || !consuming(c) || c->cancelled || hd_consumer_has_buffered(c))
        return 1;
    struct pollfd fd = {.fd = hd_consumer_fd(c), .events = POLLIN};
    int rc = hd_stop_poll(stop, &fd, 1, timeout_ms);
    return rc > 0 ? 1 : rc;
}

int hd_consumer_run(hd_consumer *c, const hd_stop *stop, hd_error *err)
{
    if (c == NULL)
        return hd_error_set(err, HD_EINVAL, "run: consumer is NULL");
    int wait_ms = c->opts.idle_wait_ms > 0 ? c->opts.idle_wait_ms : 1000;
    unsigned failures = 0;
    while (!hd_stop_requested(stop)) {
        /* Wait on the socket and the stop together, then read what came without blocking:
         * librabbitmq's own wait (amqp_consume_message with a timeout) cannot see the stop. */
        int rc = hd_consumer_wait(c, stop, wait_ms);
        if (rc == HD_EINTR)
            break;
        if (rc > 0)
            rc = hd_consumer_poll(c, 0, err);
        else if (rc < 0)
            hd_error_set(err, rc, "consumer '%s': waiting for a frame failed", c->queue);
        if (rc >= 0) {
            failures = 0;
            continue;
        }
        if (permanent(rc))
            return rc;
        /* A refused retry, a cancelled consumer, a lost connection: wait a little (growing,
         * jittered) so that a broker in trouble is not hammered, then repair what broke. */
        if (hd_stop_wait_ms(stop,
                            hd_backoff_delay(&c->backoff, failures < 16 ? failures++ : failures)))
            break;
        rc = hd_consumer_reconnect(c, stop, err);
        if (rc == HD_EINTR)
            return HD_OK;
        if (rc < 0 && permanent(rc))
            return rc;
    }
    return HD_OK;
}

/* ---- looking in ----------------------------------------------------------------------- */

void hd_consumer_get_counts(const hd_consumer *c, hd_consumer_counts *out)
{
    *out = c->counts;
}

const char *hd_consumer_queue(const hd_consumer *c)
{
    return c->queue;
}

const hd_retry_policy *hd_consumer_policy(const hd_consumer *c)
{
    return &c->policy;
}

int hd_consumer_fd(hd_consumer *c)
{
    return hd_amqp_is_open(c->conn) ? amqp_get_sockfd(hd_amqp_state(c->conn)) : -1;
}

int hd_consumer_has_buffered(hd_consumer *c)
{
    if (!hd_amqp_is_open(c->conn))
        return 0;
    amqp_connection_state_t st = hd_amqp_state(c->conn);
    return amqp_data_in_buffer(st) || amqp_frames_enqueued(st);
}
