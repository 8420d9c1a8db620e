/* publisher.c — see publisher.h.
 *
 * The window is a ring of `window` slots indexed by publish number modulo the window. Slots
 * from head_seq to next_seq - 1 are in flight; a slot is settled when its fate is reported,
 * and head_seq moves past settled slots. Confirms may settle slots out of order (a single
 * ack for a later message), so "in flight" is the span head..next, not the count of
 * unsettled slots: the span is what must fit in the ring.
 */
#include "herald/publisher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"

#define HD_PUBLISHER_DEFAULT_WINDOW     256
#define HD_PUBLISHER_MAX_WINDOW         1000000
#define HD_PUBLISHER_DEFAULT_TIMEOUT_MS 30000
#define HD_PUBLISH_HEADERS_MAX          64
/* The header that lets a basic.return (which has no delivery tag) find its publish. */
#define HD_SEQ_HEADER "x-herald-seq"

enum slot_state { SLOT_FREE = 0, SLOT_WAITING, SLOT_RETURNED, SLOT_SETTLED };

typedef struct slot {
    uint64_t seq;
    void *user;
    unsigned char state;  /* enum slot_state */
    uint16_t return_code; /* reply code of the basic.return, when returned */
} slot;

struct hd_publisher {
    hd_amqp *amqp;       /* borrowed */
    amqp_channel_t ch;   /* our confirm-mode channel; 0 = none (closed, to reopen) */
    unsigned generation; /* connection generation ch belongs to */
    size_t window;
    int confirm_timeout_ms;
    hd_fate_fn on_fate;
    void *ctx;

    slot *ring;         /* window slots */
    uint64_t next_seq;  /* number the broker will give the next publish (from 1) */
    uint64_t head_seq;  /* oldest slot not yet settled, or next_seq */
    size_t outstanding; /* slots WAITING or RETURNED */

    /* hd_publish_confirmed watches one publish number for its fate. */
    uint64_t watch_seq;
    int watch_done;
    hd_fate watch_fate;
    char watch_reason[HD_ERROR_TEXT_MAX];
};

const char *hd_fate_name(hd_fate f)
{
    switch (f) {
    case HD_FATE_CONFIRMED:
        return "CONFIRMED";
    case HD_FATE_NACKED:
        return "NACKED";
    case HD_FATE_RETURNED:
        return "RETURNED";
    case HD_FATE_LOST:
        return "LOST";
    }
    return "?";
}

static slot *slot_of(hd_publisher *p, uint64_t seq)
{
    return &p->ring[seq % p->window];
}

/* ---- fates ---------------------------------------------------------------------------- */

static void return_reason(uint16_t code, char *buf, size_t cap)
{
    /* The two reply codes of basic.return in AMQP 0-9-1; RabbitMQ only sends NO_ROUTE
     * (the "immediate" flag that caused NO_CONSUMERS is not supported since 3.0). */
    if (code == 312)
        snprintf(buf, cap, "312 NO_ROUTE");
    else if (code == 313)
        snprintf(buf, cap, "313 NO_CONSUMERS");
    else
        snprintf(buf, cap, "%u returned", code);
}

static void report(hd_publisher *p, slot *s, hd_fate fate, const char *reason)
{
    s->state = SLOT_SETTLED;
    p->outstanding--;
    if (s->seq == p->watch_seq && !p->watch_done) {
        p->watch_done = 1;
        p->watch_fate = fate;
        /* Precision bound: reasons may be longer than the slot; truncation is fine. */
        snprintf(p->watch_reason, sizeof p->watch_reason, "%.*s", (int)sizeof p->watch_reason - 1,
                 reason ? reason : "");
    }
    if (p->on_fate != NULL)
        p->on_fate(p->ctx, s->seq, s->user, fate, reason);
}

static void advance_head(hd_publisher *p)
{
    while (p->head_seq < p->next_seq && slot_of(p, p->head_seq)->state == SLOT_SETTLED) {
        slot_of(p, p->head_seq)->state = SLOT_FREE;
        p->head_seq++;
    }
}

/* A basic.ack or basic.nack for tag (and, when multiple, everything before it). */
static void settle(hd_publisher *p, uint64_t tag, int multiple, int acked)
{
    /* Tag 0 with multiple means "everything so far" (AMQP 0-9-1, basic.ack). */
    if (tag == 0 && multiple)
        tag = p->next_seq - 1;
    if (tag >= p->next_seq || tag < p->head_seq)
        return; /* stale or unknown: nothing in flight has this number */
    uint64_t lo = multiple ? p->head_seq : tag;
    char reason[64];
    for (uint64_t seq = lo; seq <= tag; seq++) {
        slot *s = slot_of(p, seq);
        if (s->seq != seq || (s->state != SLOT_WAITING && s->state != SLOT_RETURNED))
            continue;
        if (s->state == SLOT_RETURNED) {
            /* The broker acks a returned message too: the ack means "dealt with", and the
             * return already told us how. This is the line that keeps an unroutable message
             * from being counted as delivered. */
            return_reason(s->return_code, reason, sizeof reason);
            report(p, s, HD_FATE_RETURNED, reason);
        } else if (acked) {
            report(p, s, HD_FATE_CONFIRMED, NULL);
        } else {
            report(p, s, HD_FATE_NACKED, "nacked by the broker");
        }
    }
    advance_head(p);
}

/* The channel or connection is gone: no confirm will ever come for what is in flight. */
static void lose_all(hd_publisher *p, const char *why)
{
    char reason[HD_ERROR_TEXT_MAX + 32];
    for (uint64_t seq = p->head_seq; seq < p->next_seq; seq++) {
        slot *s = slot_of(p, seq);
        if (s->state == SLOT_RETURNED) {
            /* Its ack is lost, but the return already proved it was not routed. */
            char rr[64];
            return_reason(s->return_code, rr, sizeof rr);
            report(p, s, HD_FATE_RETURNED, rr);
        } else if (s->state == SLOT_WAITING) {
            snprintf(reason, sizeof reason, "unconfirmed when %s", why);
            report(p, s, HD_FATE_LOST, reason);
        }
    }
    advance_head(p);
    p->ch = 0;
}

/* ---- the channel ---------------------------------------------------------------------- */

/* Make sure we have a confirm-mode channel on the current connection. */
static int ensure_channel(hd_publisher *p, hd_error *err)
{
    hd_amqp *a = p->amqp;
    if (p->ch != 0 && p->generation != hd_amqp_generation(a)) {
        /* The connection was re-established under us (by another user of the hd_amqp):
         * our channel and everything in flight on it died with the old one. */
        lose_all(p, "the connection was re-established");
    }
    if (!hd_amqp_is_open(a)) {
        if (p->outstanding > 0)
            lose_all(p, "the connection closed");
        p->ch = 0;
        return hd_error_set(err, HD_ECLOSED, "publish: connection to %s is closed",
                            hd_amqp_url_text(a));
    }
    if (p->ch != 0)
        return 0;

    amqp_channel_t ch;
    int rc = hd_amqp_channel_open(a, &ch, err);
    if (rc < 0)
        return rc;
    amqp_confirm_select(hd_amqp_state(a), ch);
    rc = hd_amqp_check_reply_on(a, ch, amqp_get_rpc_reply(hd_amqp_state(a)), "confirm.select", err);
    if (rc < 0) {
        hd_amqp_channel_close(a, ch);
        return rc;
    }
    p->ch = ch;
    p->generation = hd_amqp_generation(a);
    /* Delivery tags count from 1 on every new channel. */
    p->next_seq = 1;
    p->head_seq = 1;
    return 0;
}

/* ---- reading confirms ----------------------------------------------------------------- */

static uint64_t header_seq(const amqp_basic_properties_t *props)
{
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (e->key.len == strlen(HD_SEQ_HEADER) &&
            memcmp(e->key.bytes, HD_SEQ_HEADER, e->key.len) == 0) {
            /* We send an I64; a broker or plugin re-encoding it might pick another integer
             * kind, so accept them all. */
            switch (e->value.kind) {
            case AMQP_FIELD_KIND_I64:
                return (uint64_t)e->value.value.i64;
            case AMQP_FIELD_KIND_U64:
                return e->value.value.u64;
            case AMQP_FIELD_KIND_I32:
                return (uint64_t)e->value.value.i32;
            case AMQP_FIELD_KIND_U32:
                return e->value.value.u32;
            default:
                return 0;
            }
        }
    }
    return 0;
}

/* basic.return is followed by the returned message (header and body frames). Read it to keep
 * the stream in step, find our number in its headers, and mark that slot. */
static int on_return(hd_publisher *p, const amqp_basic_return_t *ret, hd_error *err)
{
    hd_amqp *a = p->amqp;
    uint16_t code = ret->reply_code;
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(hd_amqp_state(a), p->ch, &msg, 0);
    int rc = hd_amqp_check_reply_on(a, p->ch, r, "read returned message", err);
    if (rc < 0)
        return rc;
    uint64_t seq = header_seq(&msg.properties);
    amqp_destroy_message(&msg);
    if (seq >= p->head_seq && seq < p->next_seq) {
        slot *s = slot_of(p, seq);
        if (s->seq == seq && s->state == SLOT_WAITING) {
            s->state = SLOT_RETURNED;
            s->return_code = code;
        }
    }
    return 0;
}

/* Read and handle one frame, waiting at most timeout_ms (0 = only what has arrived).
 * Returns 0, HD_ETIMEOUT, or a failure after which everything in flight was reported LOST. */
static int read_one(hd_publisher *p, int timeout_ms, hd_error *err)
{
    hd_amqp *a = p->amqp;
    if (!hd_amqp_is_open(a) || p->generation != hd_amqp_generation(a)) {
        lose_all(p, "the connection closed");
        return hd_error_set(err, HD_ECLOSED, "wait for confirms: connection to %s is closed",
                            hd_amqp_url_text(a));
    }
    amqp_connection_state_t conn = hd_amqp_state(a);
    amqp_frame_t frame;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int status = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
    if (status == AMQP_STATUS_TIMEOUT)
        return hd_error_set(err, HD_ETIMEOUT, "no confirm from the broker within %d ms",
                            timeout_ms);
    if (status != AMQP_STATUS_OK) {
        hd_error why;
        int rc = hd_amqp_check_status(a, status, "wait for confirms", &why);
        if (rc == HD_ECLOSED)
            lose_all(p, why.text);
        return hd_error_set(err, rc, "%s", why.text);
    }

    int rc = 0;
    if (frame.frame_type != AMQP_FRAME_METHOD)
        goto done; /* stray content frames of another channel: not ours to read */
    amqp_method_t *m = &frame.payload.method;
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD ||
        (m->id == AMQP_CHANNEL_CLOSE_METHOD && frame.channel == p->ch)) {
        hd_error why;
        rc = hd_amqp_handle_close(a, frame.channel, m, "publisher channel closed by the broker",
                                  &why);
        lose_all(p, why.text);
        rc = hd_error_set(err, rc, "%s", why.text);
        goto done;
    }
    if (frame.channel != p->ch)
        goto done; /* another channel's asynchronous frame: see "Reading frames" in amqp.h */

    switch (m->id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *ack = m->decoded;
        settle(p, ack->delivery_tag, ack->multiple, 1);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *nack = m->decoded;
        settle(p, nack->delivery_tag, nack->multiple, 0);
        break;
    }
    case AMQP_BASIC_RETURN_METHOD:
        rc = on_return(p, m->decoded, err);
        if (rc < 0 && (rc == HD_ECLOSED || rc == HD_EAMQP))
            lose_all(p, err ? err->text : "reading a returned message failed");
        break;
    default:
        break; /* channel.flow and friends: nothing to do for a publisher */
    }
done:
    /* Decoded frames live in the connection's memory pools until released. */
    amqp_maybe_release_buffers(conn);
    return rc;
}

/* Handle every frame that has already arrived, without blocking. */
static int drain_arrived(hd_publisher *p, hd_error *err)
{
    while (p->outstanding > 0 && hd_amqp_is_open(p->amqp) &&
           (amqp_frames_enqueued(hd_amqp_state(p->amqp)) ||
            amqp_data_in_buffer(hd_amqp_state(p->amqp)))) {
        int rc = read_one(p, 0, err);
        if (rc == HD_ETIMEOUT)
            return 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int hd_publisher_new(hd_amqp *a, const hd_publisher_options *opts, hd_publisher **out,
                     hd_error *err)
{
    *out = NULL;
    size_t window = opts && opts->window ? opts->window : HD_PUBLISHER_DEFAULT_WINDOW;
    if (window > HD_PUBLISHER_MAX_WINDOW)
        return hd_error_set(err, HD_EINVAL, "publisher window %zu is above %d", window,
                            HD_PUBLISHER_MAX_WINDOW);
    hd_publisher *p = calloc(1, sizeof *p);
    if (p == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    p->ring = calloc(window, sizeof *p->ring);
    if (p->ring == NULL) {
        free(p);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    p->amqp = a;
    p->window = window;
    p->confirm_timeout_ms = opts && opts->confirm_timeout_ms > 0 ? opts->confirm_timeout_ms
                                                                 : HD_PUBLISHER_DEFAULT_TIMEOUT_MS;
    p->on_fate = opts ? opts->on_fate : NULL;
    p->ctx = opts ? opts->ctx : NULL;
    p->next_seq = p->head_seq = 1;
    int rc = ensure_channel(p, err);
    if (rc < 0) {
        free(p->ring);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void hd_publisher_free(hd_publisher *p)
{
    if (p == NULL)
        return;
    if (p->outstanding > 0)
        lose_all(p, "the publisher was freed");
    if (p->ch != 0 && p->generation == hd_amqp_generation(p->amqp))
        hd_amqp_channel_close(p->amqp, p->ch);
    free(p->ring);
    free(p);
}

size_t hd_publisher_outstanding(const hd_publisher *p)
{
    return p->outstanding;
}

/* ---- publishing ----------------------------------------------------------------------- */

static int check_message(const hd_message *m, hd_error *err)
{
    if (m == NULL)
        return hd_error_set(err, HD_EINVAL, "publish: message is NULL");
    if (m->body == NULL && m->len > 0)
        return hd_error_set(err, HD_EINVAL, "publish: body is NULL but len is %zu", m->len);
    if (m->exchange && strlen(m->exchange) > 255)
        return hd_error_set(err, HD_EINVAL, "publish: exchange name longer than 255 bytes");
    if (m->routing_key && strlen(m->routing_key) > 255)
        return hd_error_set(err, HD_EINVAL, "publish: routing key longer than 255 bytes");
    if (m->n_headers > HD_PUBLISH_HEADERS_MAX)
        return hd_error_set(err, HD_EINVAL, "publish: more than %d headers",
                            HD_PUBLISH_HEADERS_MAX);
    for (size_t i = 0; i < m->n_headers; i++)
        if (m->headers[i].key == NULL || m->headers[i].value == NULL)
            return hd_error_set(err, HD_EINVAL, "publish: header %zu has a NULL key or value", i);
    if (m->raw_headers != NULL && (m->raw_headers->num_entries < 0 ||
                                   (m->raw_headers->num_entries > 0 && !m->raw_headers->entries)))
        return hd_error_set(err, HD_EINVAL, "publish: raw_headers has %d entries at %p",
                            m->raw_headers->num_entries, (void *)m->raw_headers->entries);
    return 0;
}

static int key_is(amqp_bytes_t key, const char *name)
{
    size_t n = strlen(name);
    return key.len == n && (n == 0 || memcmp(key.bytes, name, n) == 0);
}

/* A raw header the message's own headers replace (or the publish number, which is ours). */
static int raw_header_replaced(const hd_message *m, amqp_bytes_t key)
{
    if (key_is(key, HD_SEQ_HEADER))
        return 1;
    for (size_t i = 0; i < m->n_headers; i++)
        if (key_is(key, m->headers[i].key))
            return 1;
    return 0;
}

/* The properties of m's publish. entries has room for every header of m plus the publish
 * number; the table points into it (and, for raw headers, into m's borrowed memory). */
static void build_properties(const hd_message *m, int mandatory, uint64_t seq,
                             amqp_table_entry_t *entries, amqp_basic_properties_t *props)
{
    if (m->raw_properties != NULL) {
        *props = *m->raw_properties;
        props->_flags &= ~AMQP_BASIC_HEADERS_FLAG;
        props->headers = amqp_empty_table;
    } else {
        memset(props, 0, sizeof *props);
    }
    props->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    /* 2 = persistent: written to disk by a durable queue, so it survives a broker restart.
     * Persistence in a non-durable queue is pointless: the queue itself is gone. */
    props->delivery_mode = (m->flags & HD_MSG_TRANSIENT) ? 1 : 2;
    if (m->content_type) {
        props->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        props->content_type = amqp_cstring_bytes(m->content_type);
    }
    if (m->type) {
        props->_flags |= AMQP_BASIC_TYPE_FLAG;
        props->type = amqp_cstring_bytes(m->type);
    }
    if (m->message_id) {
        props->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props->message_id = amqp_cstring_bytes(m->message_id);
    }
    if (m->correlation_id) {
        props->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props->correlation_id = amqp_cstring_bytes(m->correlation_id);
    }
    if (m->expiration) {
        props->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props->expiration = amqp_cstring_bytes(m->expiration);
    }
    int n = 0;
    if (m->raw_headers != NULL)
        for (int i = 0; i < m->raw_headers->num_entries; i++)
            if (!raw_header_replaced(m, m->raw_headers->entries[i].key))
                entries[n++] = m->raw_headers->entries[i]; /* values shared, not copied */
    for (size_t i = 0; i < m->n_headers; i++) {
        entries[n].key = amqp_cstring_bytes(m->headers[i].key);
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n].value.value.bytes = amqp_cstring_bytes(m->headers[i].value);
        n++;
    }
    if (mandatory) {
        entries[n].key = amqp_cstring_bytes(HD_SEQ_HEADER);
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n].value.value.i64 = (int64_t)seq;
        n++;
    }
    if (n > 0) {
        props->_flags |= AMQP_BASIC_HEADERS_FLAG;
        props->headers.num_entries = n;
        props->headers.entries = entries;
    }
}

/* The publish behind hd_publisher_publish; watch = 1 makes hd_publish_confirmed's watch
 * point at this message before anything can settle it. */
static int publish(hd_publisher *p, const hd_message *m, uint64_t *seq_out, int watch,
                   hd_error *err)
{
    int rc;
    if ((rc = check_message(m, err)) < 0)
        return rc;
    if ((rc = ensure_channel(p, err)) < 0)
        return rc;

    /* Window full: read confirms until the oldest message in flight is settled. */
    while (p->next_seq - p->head_seq >= p->window) {
        if ((rc = read_one(p, p->confirm_timeout_ms, err)) < 0)
            return rc;
    }
    if (p->ch == 0 && (rc = ensure_channel(p, err)) < 0)
        return rc;

    int mandatory = !(m->flags & HD_MSG_NOT_MANDATORY);
    uint64_t seq = p->next_seq;

    /* Header entries: on the stack for the common case, on the heap for a large raw table
     * (a forwarded message's headers are whatever its producer and the broker put there). */
    size_t cap = m->n_headers + 1 + (m->raw_headers ? (size_t)m->raw_headers->num_entries : 0);
    amqp_table_entry_t stack_entries[HD_PUBLISH_HEADERS_MAX + 1];
    amqp_table_entry_t *entries = stack_entries;
    if (cap > HD_PUBLISH_HEADERS_MAX + 1 && (entries = malloc(cap * sizeof *entries)) == NULL)
        return hd_error_set(err, HD_ENOMEM, "publish: %zu headers", cap);
    amqp_basic_properties_t props;
    build_properties(m, mandatory, seq, entries, &props);

    amqp_bytes_t body = {.len = m->len, .bytes = (void *)m->body};
    int status = amqp_basic_publish(
        hd_amqp_state(p->amqp), p->ch, amqp_cstring_bytes(m->exchange ? m->exchange : ""),
        amqp_cstring_bytes(m->routing_key ? m->routing_key : ""), mandatory,
        0 /* immediate: unsupported by RabbitMQ */, &props, body);
    if (entries != stack_entries)
        free(entries);
    if (status != AMQP_STATUS_OK) {
        hd_error why;
        rc = hd_amqp_check_status(p->amqp, status, "publish", &why);
        if (rc == HD_ECLOSED)
            lose_all(p, why.text);
        return hd_error_set(err, rc, "%s", why.text);
    }

    if (watch) {
        p->watch_seq = seq;
        p->watch_done = 0;
    }
    slot *s = slot_of(p, seq);
    s->seq = seq;
    s->user = m->user;
    s->state = SLOT_WAITING;
    s->return_code = 0;
    p->next_seq++;
    p->outstanding++;
    if (seq_out != NULL)
        *seq_out = seq;

    /* Settle what has already arrived, so fates are reported early and the window rarely
     * has to block. A failure here concerns earlier messages (now reported LOST); this one
     * was published and is reported LOST with them, so the publish itself succeeded. */
    (void)drain_arrived(p, NULL);
    return 0;
}

int hd_publisher_publish(hd_publisher *p, const hd_message *m, uint64_t *seq_out, hd_error *err)
{
    return publish(p, m, seq_out, 0, err);
}

int hd_publisher_wait(hd_publisher *p, int timeout_ms, hd_error *err)
{
    int rc;
    if (p->outstanding == 0)
        return 0;
    if (timeout_ms == 0) {
        /* Poll: handle what is there, then say whether anything is left. */
        for (;;) {
            rc = read_one(p, 0, err);
            if (rc == HD_ETIMEOUT)
                break;
            if (rc < 0)
                return rc;
            if (p->outstanding == 0)
                return 0;
        }
        return hd_error_set(err, HD_ETIMEOUT, "%zu messages still unconfirmed", p->outstanding);
    }
    int64_t deadline = timeout_ms > 0 ? hd_clock_ms() + timeout_ms : 0;
    while (p->outstanding > 0) {
        int step = p->confirm_timeout_ms;
        if (timeout_ms > 0) {
            int64_t left = deadline - hd_clock_ms();
            if (left <= 0)
                return hd_error_set(err, HD_ETIMEOUT, "%zu messages still unconfirmed after %d ms",
                                    p->outstanding, timeout_ms);
            step = left < step ? (int)left : step;
        }
        rc = read_one(p, step, err);
        if (rc == HD_ETIMEOUT) {
            if (timeout_ms > 0)
                continue; /* the loop head reports the overall timeout */
            return hd_error_set(err, HD_ETIMEOUT,
                                "%zu messages still unconfirmed: no confirm within %d ms",
                                p->outstanding, p->confirm_timeout_ms);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

int hd_publish_confirmed(hd_publisher *p, const hd_message *m, int timeout_ms, hd_error *err)
{
    uint64_t seq;
    int rc = publish(p, m, &seq, 1, err);
    if (rc < 0)
        return rc;
    int limit = timeout_ms >= 0 ? timeout_ms : p->confirm_timeout_ms;
    int64_t deadline = hd_clock_ms() + limit;
    while (!p->watch_done) {
        int64_t left = deadline - hd_clock_ms();
        if (left <= 0) {
            p->watch_seq = 0;
            return hd_error_set(err, HD_ETIMEOUT, "no confirm for message %llu within %d ms",
                                (unsigned long long)seq, limit);
        }
        rc = read_one(p, (int)left, err);
        if (rc < 0 && rc != HD_ETIMEOUT && (!p->watch_done || p->watch_fate == HD_FATE_LOST)) {
            /* Lost with the channel or connection: the code says which (HD_EAMQP for a
             * channel the broker closed, e.g. 404 for a missing exchange; HD_ECLOSED). */
            p->watch_seq = 0;
            return rc;
        }
    }
    p->watch_seq = 0;
    switch (p->watch_fate) {
    case HD_FATE_CONFIRMED:
        return 0;
    case HD_FATE_NACKED:
        return hd_error_set(err, HD_ENACKED, "message %llu: %s", (unsigned long long)seq,
                            p->watch_reason);
    case HD_FATE_RETURNED:
        return hd_error_set(err, HD_ERETURNED,
                            "message %llu returned: %s (exchange '%s', routing key '%s')",
                            (unsigned long long)seq, p->watch_reason,
                            m->exchange ? m->exchange : "", m->routing_key ? m->routing_key : "");
    case HD_FATE_LOST:
        return hd_error_set(err, HD_ECLOSED, "message %llu: %s", (unsigned long long)seq,
                            p->watch_reason);
    }
    return 0;
}
