/* stream.c — reading a RabbitMQ stream by offset, the offset kept with the effects; see
 * herald/stream.h. */
#include "herald/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "herald/clock.h"

/* ---- declaring ------------------------------------------------------------------------- */

int hd_stream_declare(hd_amqp *a, const hd_stream_spec *spec, hd_error *err)
{
    if (a == NULL || spec == NULL || spec->name == NULL || *spec->name == '\0')
        return hd_error_set(err, HD_EINVAL, "hd_stream_declare: a stream name is required");
    amqp_table_entry_t args[3];
    int n = 0;
    args[n].key = amqp_cstring_bytes("x-queue-type");
    args[n].value.kind = AMQP_FIELD_KIND_UTF8;
    args[n++].value.value.bytes = amqp_cstring_bytes("stream");
    if (spec->max_length_bytes > 0) {
        args[n].key = amqp_cstring_bytes("x-max-length-bytes");
        args[n].value.kind = AMQP_FIELD_KIND_I64;
        args[n++].value.value.i64 = spec->max_length_bytes;
    }
    if (spec->max_age != NULL && *spec->max_age != '\0') {
        args[n].key = amqp_cstring_bytes("x-max-age");
        args[n].value.kind = AMQP_FIELD_KIND_UTF8;
        args[n++].value.value.bytes = amqp_cstring_bytes(spec->max_age);
    }
    amqp_table_t table = {.num_entries = n, .entries = args};
    amqp_connection_state_t st = hd_amqp_state(a);
    /* durable 1, exclusive 0, auto_delete 0: what a stream must be (the broker refuses
     * anything else with 406) */
    amqp_queue_declare(st, hd_amqp_channel(a), amqp_cstring_bytes(spec->name), 0, 1, 0, 0, table);
    char what[300];
    snprintf(what, sizeof what, "declare stream '%s'", spec->name);
    return hd_amqp_check_reply(a, amqp_get_rpc_reply(st), what, err);
}

/* ---- where to start -------------------------------------------------------------------- */

int hd_stream_start_parse(const char *text, hd_stream_start *out, hd_error *err)
{
    if (text == NULL || out == NULL || *text == '\0')
        return hd_error_set(err, HD_EINVAL, "a start is first, last, next, an offset or a time");
    memset(out, 0, sizeof *out);
    if (strcmp(text, "first") == 0) {
        out->from = HD_STREAM_FIRST;
        return 0;
    }
    if (strcmp(text, "last") == 0) {
        out->from = HD_STREAM_LAST;
        return 0;
    }
    if (strcmp(text, "next") == 0) {
        out->from = HD_STREAM_NEXT;
        return 0;
    }
    if (strspn(text, "0123456789") == strlen(text)) {
        /* digits only, overflow checked before each step (no strtoll clamping) */
        int64_t v = 0;
        for (const char *p = text; *p; p++) {
            int d = *p - '0';
            if (v > (INT64_MAX - d) / 10)
                return hd_error_set(err, HD_EINVAL, "offset '%s' is too large", text);
            v = v * 10 + d;
        }
        out->from = HD_STREAM_OFFSET;
        out->offset = v;
        return 0;
    }
    int64_t ms;
    if (hd_time_parse(text, &ms) == 0 && ms >= 0) {
        out->from = HD_STREAM_TIME;
        out->time_ms = ms;
        return 0;
    }
    return hd_error_set(err, HD_EINVAL,
                        "'%s' is not first, last, next, an offset (digits) or an RFC 3339 time",
                        text);
}

/* ---- offsets --------------------------------------------------------------------------- */

/* last_offset, not "offset": OFFSET is a reserved word in PostgreSQL's SQL. */
static const char *const migrations[] = {
    "CREATE TABLE hd_stream_offsets ("
    " consumer TEXT NOT NULL,"
    " stream TEXT NOT NULL,"
    " last_offset BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL,"
    " PRIMARY KEY (consumer, stream))",
};

int hd_stream_offsets_migrate(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_stream_offsets_migrate: store is NULL");
    return hd_store_migrate(store, "stream", migrations, sizeof migrations / sizeof migrations[0],
                            err);
}

static int names_ok(hd_store *store, const char *consumer, const char *stream)
{
    return store != NULL && consumer != NULL && *consumer != '\0' && stream != NULL &&
           *stream != '\0';
}

int hd_stream_offset_load(hd_store *store, const char *consumer, const char *stream,
                          int64_t *offset, hd_error *err)
{
    if (!names_ok(store, consumer, stream) || offset == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_stream_offset_load: bad argument");
    hd_value p[] = {hd_value_text(consumer), hd_value_text(stream)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT last_offset FROM hd_stream_offsets"
                            " WHERE consumer = $1 AND stream = $2",
                            p, 2, &rows, err);
    if (rc < 0)
        return rc;
    *offset = hd_rows_count(rows) > 0 ? hd_rows_int(rows, 0, 0) : -1;
    hd_rows_free(rows);
    return 0;
}

int hd_stream_offset_save(hd_store *store, const char *consumer, const char *stream, int64_t offset,
                          hd_error *err)
{
    if (!names_ok(store, consumer, stream) || offset < 0)
        return hd_error_set(err, HD_EINVAL, "hd_stream_offset_save: bad argument");
    if (!hd_store_in_transaction(store))
        return hd_error_set(err, HD_ESTATE,
                            "hd_stream_offset_save: no transaction open: the offset must "
                            "commit with the effects of its record");
    hd_value p[] = {hd_value_text(consumer), hd_value_text(stream), hd_value_int(offset),
                    hd_value_int(hd_time_now_ms())};
    /* The WHERE of the upsert keeps it moving forward: an older offset changes no row, and
     * the row count says so (SQLite >= 3.24 and PostgreSQL >= 9.5 share the syntax). */
    int rc = hd_store_exec(store,
                           "INSERT INTO hd_stream_offsets (consumer, stream, last_offset,"
                           " updated_at) VALUES ($1, $2, $3, $4)"
                           " ON CONFLICT (consumer, stream) DO UPDATE"
                           " SET last_offset = excluded.last_offset,"
                           " updated_at = excluded.updated_at"
                           " WHERE hd_stream_offsets.last_offset < excluded.last_offset",
                           p, 4, err);
    return rc < 0 ? rc : rc > 0 ? 1 : 0;
}

int hd_stream_offset_reset(hd_store *store, const char *consumer, const char *stream, hd_error *err)
{
    if (!names_ok(store, consumer, stream))
        return hd_error_set(err, HD_EINVAL, "hd_stream_offset_reset: bad argument");
    hd_value p[] = {hd_value_text(consumer), hd_value_text(stream)};
    int rc = hd_store_exec(
        store, "DELETE FROM hd_stream_offsets WHERE consumer = $1 AND stream = $2", p, 2, err);
    return rc < 0 ? rc : rc > 0 ? 1 : 0;
}

/* ---- reading --------------------------------------------------------------------------- */

struct hd_stream_consumer {
    hd_amqp *amqp;
    char *stream;
    char *name;
    hd_store *store;
    hd_stream_handler handler;
    void *ctx;
    int64_t last; /* last offset handled or skipped; -1: none */
    hd_stream_counts counts;
};

/* The x-stream-offset argument of basic.consume for the start (see stream.h). */
static void offset_argument(const hd_stream_start *s, amqp_field_value_t *v)
{
    switch (s->from) {
    case HD_STREAM_OFFSET:
        v->kind = AMQP_FIELD_KIND_I64;
        v->value.i64 = s->offset;
        return;
    case HD_STREAM_TIME:
        /* an AMQP timestamp, in whole seconds: a plain integer would be read as an offset */
        v->kind = AMQP_FIELD_KIND_TIMESTAMP;
        v->value.u64 = (uint64_t)(s->time_ms / 1000);
        return;
    case HD_STREAM_FIRST:
        v->kind = AMQP_FIELD_KIND_UTF8;
        v->value.bytes = amqp_cstring_bytes("first");
        return;
    case HD_STREAM_LAST:
        v->kind = AMQP_FIELD_KIND_UTF8;
        v->value.bytes = amqp_cstring_bytes("last");
        return;
    case HD_STREAM_NEXT:
    default:
        v->kind = AMQP_FIELD_KIND_UTF8;
        v->value.bytes = amqp_cstring_bytes("next");
        return;
    }
}

static int attach(hd_stream_consumer *c, const hd_stream_start *start, int prefetch, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(c->amqp);
    amqp_channel_t ch = hd_amqp_channel(c->amqp);
    /* A prefetch is REQUIRED on a stream (the broker refuses an unlimited consumer): it is
     * the reader's credit, renewed by its acks. */
    amqp_basic_qos(st, ch, 0, (uint16_t)prefetch, 0);
    int rc = hd_amqp_check_reply(c->amqp, amqp_get_rpc_reply(st), "basic.qos", err);
    if (rc < 0)
        return rc;
    amqp_table_entry_t arg = {.key = amqp_cstring_bytes("x-stream-offset")};
    offset_argument(start, &arg.value);
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    /* no_ack 0: manual acks (a stream refuses automatic ones) */
    amqp_basic_consume(st, ch, amqp_cstring_bytes(c->stream), amqp_empty_bytes, 0, 0, 0, args);
    char what[300];
    snprintf(what, sizeof what, "consume stream '%s'", c->stream);
    return hd_amqp_check_reply(c->amqp, amqp_get_rpc_reply(st), what, err);
}

int hd_stream_consumer_open(const char *url, const hd_stream_consumer_options *o,
                            hd_stream_consumer **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (url == NULL || o == NULL || out == NULL || o->handler == NULL ||
        !names_ok(o->store, o->consumer, o->stream) || o->prefetch < 0 || o->prefetch > 65535)
        return hd_error_set(err, HD_EINVAL,
                            "hd_stream_consumer_open: url, stream, consumer, store and handler "
                            "are required; prefetch 0..65535");
    if (hd_store_in_transaction(o->store))
        return hd_error_set(err, HD_ESTATE, "hd_stream_consumer_open: a transaction is open");
    hd_stream_consumer *c = calloc(1, sizeof *c);
    if (c == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    c->stream = strdup(o->stream);
    c->name = strdup(o->consumer);
    c->store = o->store;
    c->handler = o->handler;
    c->ctx = o->ctx;
    if (c->stream == NULL || c->name == NULL) {
        hd_stream_consumer_close(c);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    int rc = hd_stream_offset_load(c->store, c->name, c->stream, &c->last, err);
    hd_stream_start start = o->start;
    if (rc == 0 && c->last >= 0) /* resume after the last record whose effects committed */
        start = (hd_stream_start){.from = HD_STREAM_OFFSET, .offset = c->last + 1};
    hd_amqp_options ao = o->amqp ? *o->amqp : (hd_amqp_options){0};
    if (ao.connection_name == NULL)
        ao.connection_name = "herald stream reader";
    if (rc == 0)
        rc = hd_amqp_open(url, &ao, &c->amqp, err);
    if (rc == 0)
        rc = attach(c, &start, o->prefetch ? o->prefetch : HD_STREAM_PREFETCH_DEFAULT, err);
    if (rc < 0) {
        hd_stream_consumer_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void hd_stream_consumer_close(hd_stream_consumer *c)
{
    if (c == NULL)
        return;
    hd_amqp_close(c->amqp);
    free(c->stream);
    free(c->name);
    free(c);
}

/* A header of the delivery, as a 64-bit integer (any integer kind); 1 when found. */
static int header_int(const amqp_basic_properties_t *p, const char *name, int64_t *out)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != strlen(name) || memcmp(e->key.bytes, name, e->key.len) != 0)
            continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I64:
            *out = e->value.value.i64;
            return 1;
        case AMQP_FIELD_KIND_U64:
        case AMQP_FIELD_KIND_TIMESTAMP:
            *out = (int64_t)e->value.value.u64;
            return 1;
        case AMQP_FIELD_KIND_I32:
            *out = e->value.value.i32;
            return 1;
        case AMQP_FIELD_KIND_U32:
            *out = e->value.value.u32;
            return 1;
        default:
            return 0;
        }
    }
    return 0;
}

/* A property as a new C string (NULL when absent or out of memory). */
static char *prop_text(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t b)
{
    if (!(p->_flags & flag))
        return NULL;
    char *s = malloc(b.len + 1);
    if (s != NULL) {
        memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* Something other than a delivery arrived: a close or a cancel ends the reading. */
static int other_frame(hd_stream_consumer *c, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(c->amqp);
    amqp_frame_t f;
    int status = amqp_simple_wait_frame(st, &f);
    if (status != AMQP_STATUS_OK)
        return hd_amqp_check_status(c->amqp, status, "stream consume", err);
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 0;
    amqp_method_t *m = &f.payload.method;
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD || m->id == AMQP_CHANNEL_CLOSE_METHOD)
        return hd_amqp_handle_close(c->amqp, f.channel, m, "stream consume", err);
    if (m->id == AMQP_BASIC_CANCEL_METHOD)
        return hd_error_set(err, HD_EAMQP, "reader of stream '%s' cancelled by the broker",
                            c->stream);
    return 0;
}

/* BEGIN; save the offset; handler; COMMIT. 1 handled, 0 handled before (skipped), < 0
 * rolled back. */
static int apply(hd_stream_consumer *c, const hd_stream_record *rec, hd_error *err)
{
    int rc = hd_store_begin(c->store, err);
    if (rc < 0)
        return rc;
    /* The stored offset, not only c->last, decides: another reader under the same name
     * (which should not run, but may) must not make this one apply a record twice. */
    int fresh = hd_stream_offset_save(c->store, c->name, c->stream, rec->offset, err);
    rc = fresh;
    if (fresh == 1)
        rc = c->handler(c->ctx, c->store, rec, err);
    if (rc < 0) {
        hd_store_rollback(c->store, NULL);
        return rc;
    }
    rc = hd_store_commit(c->store, err);
    return rc < 0 ? rc : fresh;
}

int hd_stream_consumer_poll(hd_stream_consumer *c, int timeout_ms, hd_error *err)
{
    if (c == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_stream_consumer_poll: NULL consumer");
    if (!hd_amqp_is_open(c->amqp))
        return hd_error_set(err, HD_ECLOSED, "stream '%s': connection is closed", c->stream);
    amqp_connection_state_t st = hd_amqp_state(c->amqp);
    amqp_maybe_release_buffers(st);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_envelope_t env;
    amqp_rpc_reply_t r = amqp_consume_message(st, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
        return other_frame(c, err);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return hd_amqp_check_reply(c->amqp, r, "stream consume", err);
    c->counts.delivered++;
    const amqp_basic_properties_t *p = &env.message.properties;
    int64_t offset;
    if (!header_int(p, "x-stream-offset", &offset)) {
        amqp_destroy_envelope(&env);
        return hd_error_set(err, HD_EPROTO,
                            "'%s' delivered a message without x-stream-offset: not a stream",
                            c->stream);
    }
    int rc = 0;
    if (offset > c->last) { /* else: the start of a chunk, before where we resumed */
        char *rk = malloc(env.routing_key.len + 1);
        char *mid = prop_text(p, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
        char *type = prop_text(p, AMQP_BASIC_TYPE_FLAG, p->type);
        if (rk == NULL) {
            rc = hd_error_set(err, HD_ENOMEM, NULL);
        } else {
            memcpy(rk, env.routing_key.bytes, env.routing_key.len);
            rk[env.routing_key.len] = '\0';
            hd_stream_record rec = {
                .stream = c->stream,
                .offset = offset,
                .body = env.message.body.bytes,
                .body_len = env.message.body.len,
                .routing_key = rk,
                .message_id = mid,
                .type = type,
                .timestamp_ms =
                    (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp * 1000 : 0,
            };
            rc = apply(c, &rec, err);
        }
        free(rk);
        free(mid);
        free(type);
    }
    if (rc >= 0) {
        if (offset > c->last)
            c->last = offset;
        if (rc == 1)
            c->counts.handled++;
        else
            c->counts.skipped++;
        /* Ack after the commit: on a stream it removes nothing, it only gives the reader
         * credit for more records (the prefetch window). */
        int status = amqp_basic_ack(st, env.channel, env.delivery_tag, 0);
        if (status != AMQP_STATUS_OK)
            rc = hd_amqp_check_status(c->amqp, status, "stream ack", err);
    }
    amqp_destroy_envelope(&env);
    return rc;
}

int hd_stream_consumer_run(hd_stream_consumer *c, const hd_stop *stop, int idle_ms, hd_error *err)
{
    int64_t last_record = hd_clock_ms();
    while (stop == NULL || !hd_stop_requested(stop)) {
        uint64_t before = c->counts.delivered;
        int rc = hd_stream_consumer_poll(c, 100, err);
        if (rc < 0)
            return rc;
        int64_t now = hd_clock_ms();
        if (c->counts.delivered != before) /* a skipped record is progress too */
            last_record = now;
        if (idle_ms > 0 && now - last_record >= idle_ms)
            return 0;
    }
    return 0;
}

int64_t hd_stream_consumer_offset(const hd_stream_consumer *c)
{
    return c ? c->last : -1;
}

void hd_stream_consumer_get_counts(const hd_stream_consumer *c, hd_stream_counts *out)
{
    if (c != NULL && out != NULL)
        *out = c->counts;
}
