/* Integration: the outbox relay against a real RabbitMQ, on SQLite (a temp file,
 * synchronous=FULL) and on PostgreSQL. Needs HD_AMQP_URL, HD_PG_URL and HD_SERVERS_CTL.
 *
 * The broker-down test STOPS the broker: run it on a private instance (see
 * docs/testing.md), never on one shared with other runs.
 *
 *  1. Everything appended arrives, once each, with its properties; nothing stays pending
 *     (SQLite and PostgreSQL, 2000 events appended in transactions).
 *  2. Broker down: the relay keeps trying without marking, failing or losing anything;
 *     when the broker is back it catches up.
 *  3. An unroutable event is returned, retried with backoff, parked after max attempts with
 *     its last error; redriven after a queue is bound, it is delivered.
 *  4. Retention purges dispatched rows and keeps parked ones.
 *  5. Two relays on one PostgreSQL outbox deliver each row once.
 *  6. Wake-ups: NOTIFY (PostgreSQL) and the in-process notifier (SQLite) start a cycle at
 *     once, long before the poll interval.
 *  7. Two batches in flight (hd_relay_run): with routable and unroutable rows in both
 *     batches, every routable event is delivered and marked dispatched, every returned one
 *     parked and never marked dispatched; and no aggregate ever has rows in both batches,
 *     although the claim beside a batch in flight would otherwise take their later events
 *     (SQLite and PostgreSQL).
 *  8. Handed rows (SQLite, the in-process notifier; relay.h): the first events of new
 *     aggregates are handed to the relay and taken, their later events wait for claims
 *     behind them; every routable event arrives once and in its aggregate's order, returned
 *     handed rows are retried and parked like claimed ones.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_relay_test.h"
#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

static const hd_amqp_options fast_reconnect = {
    .connect_timeout_ms = 2000, .reconnect_base_ms = 100, .reconnect_cap_ms = 1000};

/* ---- databases --------------------------------------------------------------------------- */

typedef hd_test_db db;

static void sqlite_db(db *d)
{
    hd_test_db_open(d, "relay", 0, "outbox.db?synchronous=full");
}

/* A new database on the test server, so tests never see each other's outbox rows. */
static void pg_db(db *d)
{
    hd_test_db_open(d, "relay", 1, NULL);
}

static void db_drop(db *d)
{
    hd_test_db_drop(d);
}

static hd_store *open_store(const db *d)
{
    hd_error err;
    hd_store *s = NULL;
    assert_hd_err(0, hd_store_open(d->url, &s, &err), &err);
    int rc = hd_outbox_migrate(s, &err);
    assert_true(rc >= 0);
    return s;
}

/* ---- the broker side --------------------------------------------------------------------- */

/* A durable queue bound to the topic exchange `topic` with "#" (declares the exchange as the
 * relay would: durable topic). Returns the queue name (new). */
static char *bind_queue(hd_amqp *a, const char *topic)
{
    hd_error err;
    char *q = hd_test_unique_name("hd-relay-q");
    hd_exchange_spec ex = {.name = topic, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = q, .durable = 1};
    hd_binding_spec bs = {.queue = q, .exchange = topic, .key = "#"};
    assert_hd_err(0, hd_exchange_declare(a, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(a, &qs, NULL, &err), &err);
    assert_hd_err(0, hd_queue_bind(a, &bs, &err), &err);
    return q;
}

static void drop_broker_side(hd_amqp *a, const char *queue, const char *topic)
{
    hd_error err;
    if (queue != NULL)
        assert_hd_err(0, hd_queue_delete(a, queue, NULL, &err), &err);
    assert_hd_err(0, hd_exchange_delete(a, topic, &err), &err);
}

typedef struct received {
    size_t n;        /* messages taken from the queue */
    size_t distinct; /* distinct message ids among them */
    int bad_props;   /* messages whose properties were not what the relay must set */
    int with_trace;  /* messages that carried a traceparent header */
} received;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int header_is(const amqp_basic_properties_t *p, const char *key, const char *value)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0 &&
            e->value.kind == AMQP_FIELD_KIND_UTF8)
            return e->value.value.bytes.len == strlen(value) &&
                   memcmp(e->value.value.bytes.bytes, value, strlen(value)) == 0;
    }
    return 0;
}

/* memmem is a GNU extension; the build is POSIX. */
static int contains(amqp_bytes_t b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= b.len && i <= b.len - n; i++)
        if (memcmp((const char *)b.bytes + i, needle, n) == 0)
            return 1;
    return 0;
}

static int bytes_eq(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

/* Take every message of queue with basic.get (auto-ack) and check what the relay set:
 * persistent, content type, message id = the envelope's id (found in the body), type. */
static received drain_queue(hd_amqp *a, const char *queue, const char *type)
{
    received r = {0};
    size_t cap = 1024;
    char **ids = malloc(cap * sizeof *ids);
    assert_non_null(ids);
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    for (;;) {
        amqp_rpc_reply_t rep = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 1);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "basic.get", &err), &err);
        if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t msg;
        rep = amqp_read_message(st, ch, &msg, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "read message", &err), &err);
        const amqp_basic_properties_t *p = &msg.properties;
        char id[64] = "";
        if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            snprintf(id, sizeof id, "%.*s", (int)p->message_id.len, (char *)p->message_id.bytes);
        char needle[80];
        snprintf(needle, sizeof needle, "\"id\":\"%s\"", id);
        int ok = id[0] != '\0' && p->delivery_mode == 2 &&
                 (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
                 bytes_eq(p->content_type, HD_CLOUDEVENTS_MEDIA_TYPE) &&
                 (p->_flags & AMQP_BASIC_TYPE_FLAG) && bytes_eq(p->type, type) &&
                 contains(msg.body, needle);
        if (!ok)
            r.bad_props++;
        if (header_is(p, "traceparent",
                      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")) {
            r.with_trace++;
            if (!(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) ||
                !bytes_eq(p->correlation_id, "corr-test"))
                r.bad_props++;
        }
        if (r.n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof *ids);
            assert_non_null(ids);
        }
        ids[r.n++] = strdup(id);
        amqp_destroy_message(&msg);
        amqp_maybe_release_buffers(st);
    }
    qsort(ids, r.n, sizeof *ids, cmp_str);
    for (size_t i = 0; i < r.n; i++) {
        if (i == 0 || strcmp(ids[i], ids[i - 1]) != 0)
            r.distinct++;
    }
    for (size_t i = 0; i < r.n; i++)
        free(ids[i]);
    free(ids);
    return r;
}

/* Run cycles until nothing is pending (or fail after timeout_ms). */
static void relay_until_empty(hd_relay *r, hd_store *s, int64_t timeout_ms)
{
    hd_error err;
    int64_t end = hd_clock_ms() + timeout_ms;
    while (hd_test_outbox_pending(s) > 0) {
        int rc = hd_relay_run_once(r, NULL, &err);
        assert_true(rc >= 0 || (fprintf(stderr, "run_once: %s\n", err.text), 0));
        assert_true(hd_clock_ms() < end);
    }
}

/* What on_confirm reported (the publish-to-confirm latency a service puts in a histogram). */
typedef struct latencies {
    uint64_t n;
    double sum, min, max;
} latencies;

static void on_confirm(void *ctx, double seconds)
{
    latencies *l = ctx;
    if (l->n == 0 || seconds < l->min)
        l->min = seconds;
    if (seconds > l->max)
        l->max = seconds;
    l->sum += seconds;
    l->n++;
}

/* ---- 1. everything arrives ----------------------------------------------------------------- */

#define N_EVENTS 2000

static void delivers_everything(db *d)
{
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_store *s = open_store(d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-topic");
    char *queue = bind_queue(a, topic);
    char type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);

    int64_t t0 = hd_clock_ms();
    hd_test_outbox_fill(s, topic, 0, N_EVENTS, 20, 1);
    int64_t t1 = hd_clock_ms();
    assert_int_equal(hd_test_outbox_pending(s), N_EVENTS);

    hd_relay *r = NULL;
    latencies lat = {0};
    hd_relay_options o = {
        .batch = 500, .window = 500, .on_confirm = on_confirm, .on_confirm_ctx = &lat};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    relay_until_empty(r, s, 60000);
    int64_t t2 = hd_clock_ms();
    hd_relay_stats st;
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.confirmed, N_EVENTS);
    /* One latency per confirmed message, each within the time the relay ran, and the
     * totals' sum is the same time in ns. */
    assert_int_equal(lat.n, N_EVENTS);
    assert_true(lat.min >= 0 && lat.max > 0);
    assert_true(lat.max <= (double)(t2 - t1) / 1000.0 + 0.001);
    assert_true(st.confirm_ns > 0);
    double diff = (double)st.confirm_ns / 1e9 - lat.sum;
    assert_true(diff < 1e-3 && diff > -1e-3);
    print_message("    publish-to-confirm: mean %.3f ms, max %.3f ms\n", lat.sum / lat.n * 1000,
                  lat.max * 1000);
    assert_int_equal(st.published, N_EVENTS);
    assert_int_equal(st.returned + st.nacked + st.lost + st.failed, 0);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), N_EVENTS);

    received got = drain_queue(a, queue, type);
    print_message("    %s: %d appended in %lld ms, relayed in %lld ms (%d batches): %zu received, "
                  "%zu distinct, %d with traceparent\n",
                  hd_store_dialect(s), N_EVENTS, (long long)(t1 - t0), (long long)(t2 - t1),
                  (int)st.batches, got.n, got.distinct, got.with_trace);
    assert_int_equal(got.n, N_EVENTS);
    assert_int_equal(got.distinct, N_EVENTS);
    assert_int_equal(got.bad_props, 0);
    assert_int_equal(got.with_trace, (N_EVENTS + 2) / 3);

    hd_relay_free(r);
    drop_broker_side(a, queue, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    free(queue);
    free(topic);
}

static void sqlite_delivers_everything(void **state)
{
    (void)state;
    db d;
    sqlite_db(&d);
    delivers_everything(&d);
    db_drop(&d);
}

static void postgres_delivers_everything(void **state)
{
    (void)state;
    db d;
    pg_db(&d);
    delivers_everything(&d);
    db_drop(&d);
}

/* ---- 2. broker down ------------------------------------------------------------------------ */

static void servers_ctl(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s rabbitmq >/dev/null 2>&1",
             hd_test_require_env("HD_SERVERS_CTL"), verb);
    assert_int_equal(system(cmd), 0);
}

static void broker_down_then_catch_up(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_store *rs = open_store(&d); /* the relay thread's own handle */
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, &fast_reconnect, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, &fast_reconnect, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-down");
    char *queue = bind_queue(a, topic); /* durable: it survives the broker's stop */
    char type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);

    /* A relay that is running and has published (its channel and exchange are set up)... */
    hd_test_runner rn = {0};
    hd_relay_options o = {.batch = 100, .poll_ms = 100};
    assert_hd_err(0, hd_relay_new(rs, pa, &o, &rn.relay, &err), &err);
    hd_test_runner_start(&rn);
    hd_test_outbox_fill(s, topic, 0, 300, 10, 1);
    int64_t end = hd_clock_ms() + 30000;
    while (hd_test_outbox_pending(s) > 0) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(20);
    }

    /* ...loses its broker, while the service keeps writing events. */
    servers_ctl("stop");
    int64_t t_down = hd_clock_ms();
    hd_test_outbox_fill(s, topic, 0, 200, 10, 1);
    hd_sleep_ms(2000);
    assert_int_equal(hd_test_outbox_pending(s), 200);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), 300);
    assert_int_equal(hd_test_outbox_count(s, "attempts > 0 OR parked_at IS NOT NULL"), 0);
    hd_relay_stats st;
    hd_relay_get_stats(rn.relay, &st);
    assert_int_equal(st.confirmed, 300);
    assert_int_equal(st.failed, 0);

    servers_ctl("start");
    int64_t t_up = hd_clock_ms();
    end = t_up + 60000;
    while (hd_test_outbox_pending(s) > 0) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(20);
    }
    int64_t t_done = hd_clock_ms();
    hd_test_runner_stop(&rn);
    assert_hd_err(0, rn.rc, &rn.err);
    hd_relay_get_stats(rn.relay, &st);

    assert_hd_err(0, hd_amqp_reconnect(a, NULL, &err), &err);
    received got = drain_queue(a, queue, type);
    print_message("    broker down %lld ms; caught up %lld ms after it was back (%llu reconnects, "
                  "%llu rows released, %llu lost in flight): %zu received, %zu distinct\n",
                  (long long)(t_up - t_down), (long long)(t_done - t_up),
                  (unsigned long long)st.reconnects, (unsigned long long)st.released,
                  (unsigned long long)st.lost, got.n, got.distinct);
    assert_int_equal(got.distinct, 500); /* the 300 persisted through the stop, + 200 */
    assert_true(got.n >= 500);           /* a message lost in flight may have arrived */
    assert_int_equal(got.bad_props, 0);
    assert_int_equal(hd_test_outbox_count(s, "attempts > 0 OR parked_at IS NOT NULL"), 0);
    assert_true(st.reconnects >= 1);
    assert_int_equal(st.failed, 0);

    hd_relay_free(rn.relay);
    drop_broker_side(a, queue, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(rs);
    hd_store_close(s);
    db_drop(&d);
    free(queue);
    free(topic);
}

/* ---- 3. unroutable: returned, retried, parked, redriven ------------------------------------ */

static void unroutable_is_parked_then_redriven(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-unroutable");
    char type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);
    hd_test_outbox_fill(s, topic, 0, 1, 1,
                        1); /* the relay declares the exchange; no queue is bound */

    hd_relay *r = NULL;
    latencies lat = {0};
    hd_relay_options o = {.max_attempts = 3,
                          .backoff_base_ms = 100,
                          .backoff_cap_ms = 200,
                          .on_confirm = on_confirm,
                          .on_confirm_ctx = &lat};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    int64_t end = hd_clock_ms() + 10000;
    int retried_later = 0;
    while (hd_test_outbox_count(s, "parked_at IS NOT NULL") == 0) {
        assert_true(hd_clock_ms() < end);
        hd_relay_stats c;
        int rc = hd_relay_run_once(r, &c, &err);
        assert_true(rc >= 0);
        if (rc == 0 && hd_test_outbox_count(s, "attempts > 0") == 1)
            retried_later = 1; /* a cycle found the row not yet due: the backoff at work */
        hd_sleep_ms(5);
    }
    hd_relay_stats st;
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.returned, 3);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.parked, 1);
    assert_int_equal(st.confirmed, 0);
    assert_int_equal(lat.n, 0); /* a returned message has no publish-to-confirm latency */
    assert_int_equal(st.confirm_ns, 0);

    hd_rows *rows = NULL;
    assert_hd_err(
        0,
        hd_store_query(s, "SELECT seq, attempts, last_error FROM hd_outbox", NULL, 0, &rows, &err),
        &err);
    int64_t seq = hd_rows_int(rows, 0, 0);
    const char *last_error = hd_rows_text(rows, 0, 2);
    print_message("    parked after %lld attempts (retried after a backoff: %s): %s\n",
                  (long long)hd_rows_int(rows, 0, 1), retried_later ? "yes" : "no", last_error);
    assert_int_equal(hd_rows_int(rows, 0, 1), 3);
    assert_non_null(strstr(last_error, "312 NO_ROUTE"));
    hd_rows_free(rows);

    /* A parked row is never claimed... */
    assert_int_equal(hd_relay_run_once(r, NULL, &err), 0);
    /* ...until an operator fixes the cause (binds a queue) and redrives it. */
    char *queue = bind_queue(a, topic);
    assert_int_equal(hd_outbox_redrive(s, seq, &err), 1);
    assert_int_equal(hd_relay_run_once(r, NULL, &err), 1);
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.confirmed, 1);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), 1);
    received got = drain_queue(a, queue, type);
    assert_int_equal(got.n, 1);

    hd_relay_free(r);
    drop_broker_side(a, queue, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    db_drop(&d);
    free(queue);
    free(topic);
}

/* With no_mandatory an event no queue is bound for is an announcement nobody listens to
 * yet: the broker drops it, and the relay counts it delivered instead of retrying and
 * parking it (the notifications service publishes its own events this way). */
static void unroutable_without_mandatory_counts_as_delivered(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-optional");
    hd_test_outbox_fill(s, topic, 0, 3, 1,
                        1); /* the relay declares the exchange; no queue is bound */

    hd_relay *r = NULL;
    hd_relay_options o = {.max_attempts = 3, .no_mandatory = 1};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    assert_int_equal(hd_relay_run_once(r, NULL, &err), 3);
    hd_relay_stats st;
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.confirmed, 3);
    assert_int_equal(st.returned, 0);
    assert_int_equal(st.parked, 0);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), 3);
    assert_int_equal(hd_test_outbox_count(s, "attempts > 0"), 0);

    hd_relay_free(r);
    drop_broker_side(a, NULL, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    db_drop(&d);
    free(topic);
}

/* With no_declare the topology belongs to someone else. A missing exchange makes the broker
 * close the publishing channel (404): the event fails with that reason, like a nack, and is
 * parked; the connection stays up and the next cycle carries on. */
static void missing_exchange_without_declare_is_parked(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_amqp *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-missing");
    hd_test_outbox_fill(s, topic, 0, 1, 1, 1);

    hd_relay *r = NULL;
    hd_relay_options o = {
        .no_declare = 1, .max_attempts = 2, .backoff_base_ms = 1, .backoff_cap_ms = 1};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    int64_t end = hd_clock_ms() + 10000;
    while (hd_test_outbox_count(s, "parked_at IS NOT NULL") == 0) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_relay_run_once(r, NULL, &err);
        assert_true(rc >= 0 || rc == HD_EAMQP);
        hd_sleep_ms(5);
    }
    assert_true(hd_amqp_is_open(pa)); /* a channel was lost, not the connection */
    hd_rows *rows = NULL;
    assert_hd_err(
        0, hd_store_query(s, "SELECT attempts, last_error FROM hd_outbox", NULL, 0, &rows, &err),
        &err);
    print_message("    parked after %lld attempts: %s\n", (long long)hd_rows_int(rows, 0, 0),
                  hd_rows_text(rows, 0, 1));
    assert_int_equal(hd_rows_int(rows, 0, 0), 2);
    assert_non_null(strstr(hd_rows_text(rows, 0, 1), "404"));
    hd_rows_free(rows);
    hd_relay_stats st;
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.confirmed, 0);
    assert_int_equal(st.parked, 1);

    hd_relay_free(r);
    hd_amqp_close(pa);
    hd_store_close(s);
    db_drop(&d);
    free(topic);
}

/* ---- 4. retention ---------------------------------------------------------------------- */

/* Sensitive rows (a link with a token): the consumer gets the token, the outbox keeps none
 * once the broker confirmed, and the relay purges those rows on their own, shorter,
 * retention. On both stores. */
#define SENSITIVE_TOKEN "5ec1e7700123456789abcdef0123456789abcdef0123456789abcdef5ec1e770"

static void sensitive_rows(db *d)
{
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_store *s = open_store(d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-secret");
    char *queue = bind_queue(a, topic);
    char type[256];
    snprintf(type, sizeof type, "%s.password_reset_requested", topic);
    assert_hd_err(0, hd_store_begin(s, &err), &err);
    for (int k = 0; k < 3; k++) {
        hd_envelope *env =
            hd_envelope_new(type, 1, "/test",
                            json_pack("{s:i, s:s}", "n", k, "reset_link",
                                      "https://app.test/reset?token=" SENSITIVE_TOKEN));
        assert_non_null(env);
        char agg[32];
        snprintf(agg, sizeof agg, "user-%d", k);
        assert_hd_err(0, hd_outbox_append_flags(s, env, "user", agg, HD_OUTBOX_SENSITIVE, &err),
                      &err);
        hd_envelope_free(env);
    }
    assert_hd_err(0, hd_store_commit(s, &err), &err);
    hd_test_outbox_fill(s, topic, 0, 2, 2, 1); /* plain rows, kept for the general retention */
    assert_int_equal(hd_test_outbox_count(s, "payload LIKE '%" SENSITIVE_TOKEN "%'"), 3);

    hd_relay *r = NULL;
    hd_relay_options o = {.sensitive_retention_ms = 1};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    relay_until_empty(r, s, 10000);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), 5);
    /* The broker has the links; the outbox has none. */
    amqp_connection_state_t st = hd_amqp_state(a);
    int with_token = 0, n = 0;
    for (;;) {
        amqp_rpc_reply_t rep = amqp_basic_get(st, hd_amqp_channel(a), amqp_cstring_bytes(queue), 1);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "basic.get", &err), &err);
        if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t msg;
        rep = amqp_read_message(st, hd_amqp_channel(a), &msg, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "read message", &err), &err);
        n++;
        with_token += contains(msg.body, SENSITIVE_TOKEN);
        amqp_destroy_message(&msg);
    }
    assert_int_equal(n, 5);
    assert_int_equal(with_token, 3);
    assert_int_equal(hd_test_outbox_count(s, "payload LIKE '%" SENSITIVE_TOKEN "%'"), 0);
    assert_int_equal(hd_test_outbox_count(s, "headers LIKE '%" SENSITIVE_TOKEN "%'"), 0);
    assert_int_equal(hd_test_outbox_count(s, "sensitive = 1 AND payload = ''"), 3);
    assert_int_equal(hd_test_outbox_count(s, "sensitive = 0 AND payload <> ''"), 2);

    hd_sleep_ms(10); /* older than the sensitive retention of 1 ms, not the week */
    int64_t purged = 0;
    assert_hd_err(0, hd_relay_purge(r, &purged, &err), &err);
    assert_int_equal(purged, 3);
    assert_int_equal(hd_test_outbox_count(s, "1 = 1"), 2);
    assert_int_equal(hd_test_outbox_count(s, "sensitive = 1"), 0);

    hd_relay_free(r);
    drop_broker_side(a, queue, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    free(queue);
    free(topic);
}

static void sqlite_sensitive_rows_are_scrubbed_and_purged_first(void **state)
{
    (void)state;
    db d;
    sqlite_db(&d);
    sensitive_rows(&d);
    db_drop(&d);
}

static void postgres_sensitive_rows_are_scrubbed_and_purged_first(void **state)
{
    (void)state;
    db d;
    pg_db(&d);
    sensitive_rows(&d);
    db_drop(&d);
}

static void retention_purges_dispatched_keeps_parked(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-kept");
    char *lost_topic = hd_test_unique_name("hd-relay-nobody");
    char *queue = bind_queue(a, topic);
    hd_test_outbox_fill(s, topic, 0, 50, 10, 1);
    hd_test_outbox_fill(s, lost_topic, 0, 1, 1, 1); /* no queue: parked at the first failure */

    hd_relay *r = NULL;
    hd_relay_options o = {.max_attempts = 1, .retention_ms = 1};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    relay_until_empty(r, s, 10000);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), 50);
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL"), 1);

    hd_sleep_ms(10); /* older than the retention of 1 ms */
    int64_t purged = 0;
    assert_hd_err(0, hd_relay_purge(r, &purged, &err), &err);
    assert_int_equal(purged, 50);
    assert_int_equal(hd_test_outbox_count(s, "1 = 1"), 1); /* only the parked row is left */
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL"), 1);
    hd_relay_stats st;
    hd_relay_get_stats(r, &st);
    assert_int_equal(st.purged, 50);

    hd_relay_free(r);
    drop_broker_side(a, queue, topic);
    drop_broker_side(a, NULL, lost_topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    db_drop(&d);
    free(queue);
    free(lost_topic);
    free(topic);
}

/* ---- 5. two relays on PostgreSQL ------------------------------------------------------------ */

static void two_relays_deliver_each_row_once(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    pg_db(&d);
    hd_store *s = open_store(&d);
    hd_amqp *a = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-two");
    char *queue = bind_queue(a, topic);
    char type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);
    hd_test_outbox_fill(s, topic, 0, N_EVENTS, 20, 1);

    /* Each relay: its own store connection, its own broker connection, its own thread.
     * Small batches, so that the two really interleave. */
    hd_test_runner rn[2];
    hd_store *rs[2];
    hd_amqp *ra[2];
    for (int i = 0; i < 2; i++) {
        memset(&rn[i], 0, sizeof rn[i]);
        rs[i] = open_store(&d);
        assert_hd_err(0, hd_amqp_open(url, NULL, &ra[i], &err), &err);
        char id[32];
        snprintf(id, sizeof id, "relay-%d", i + 1);
        hd_relay_options o = {.batch = 50, .poll_ms = 50, .relay_id = id, .drain = 1};
        assert_hd_err(0, hd_relay_new(rs[i], ra[i], &o, &rn[i].relay, &err), &err);
    }
    for (int i = 0; i < 2; i++)
        hd_test_runner_start(&rn[i]);
    hd_relay_stats st[2];
    for (int i = 0; i < 2; i++) {
        hd_test_runner_join(&rn[i]);
        assert_hd_err(0, rn[i].rc, &rn[i].err);
        hd_relay_get_stats(rn[i].relay, &st[i]);
    }
    received got = drain_queue(a, queue, type);
    print_message("    relay-1 confirmed %llu, relay-2 confirmed %llu: %zu received, %zu distinct, "
                  "%zu duplicates\n",
                  (unsigned long long)st[0].confirmed, (unsigned long long)st[1].confirmed, got.n,
                  got.distinct, got.n - got.distinct);
    assert_int_equal(hd_test_outbox_pending(s), 0);
    assert_int_equal(st[0].confirmed + st[1].confirmed, N_EVENTS);
    assert_int_equal(got.n, N_EVENTS); /* each row once: no duplicates in normal operation */
    assert_int_equal(got.distinct, N_EVENTS);
    assert_true(st[0].confirmed > 0 && st[1].confirmed > 0);

    for (int i = 0; i < 2; i++) {
        hd_relay_free(rn[i].relay);
        hd_amqp_close(ra[i]);
        hd_store_close(rs[i]);
    }
    drop_broker_side(a, queue, topic);
    hd_amqp_close(a);
    hd_store_close(s);
    db_drop(&d);
    free(queue);
    free(topic);
}

/* ---- 6. wake-ups ---------------------------------------------------------------------------- */

/* With a poll interval of 20 s, an event that arrives within a second arrived because the
 * relay was woken. */
static void wakes_up(db *d, int use_notifier)
{
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_store *s = open_store(d);
    hd_store *rs = open_store(d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-wake");
    char *queue = bind_queue(a, topic);

    hd_outbox_notifier *n = NULL;
    if (use_notifier) {
        n = hd_outbox_notifier_new();
        assert_non_null(n);
        hd_outbox_set_notifier(s, n); /* the writer's handle wakes the relay */
    }
    hd_test_runner rn = {0};
    hd_relay_options o = {.poll_ms = 20000, .notifier = n};
    assert_hd_err(0, hd_relay_new(rs, pa, &o, &rn.relay, &err), &err);
    hd_test_runner_start(&rn);
    hd_sleep_ms(300); /* let it make its first (empty) claim and go to sleep */

    int64_t t0 = hd_clock_ms();
    hd_test_outbox_fill(s, topic, 0, 1, 1, 1);
    if (use_notifier)
        hd_outbox_signal(s); /* what hd_outbox_append_uow does after the commit */
    hd_queue_info info = {0};
    while (info.message_count == 0) {
        assert_true(hd_clock_ms() - t0 < 5000);
        hd_sleep_ms(5);
        assert_hd_err(0, hd_queue_inspect(a, queue, &info, &err), &err);
    }
    int64_t latency = hd_clock_ms() - t0;
    print_message("    %s: event in the queue %lld ms after the commit (poll interval 20 s)\n",
                  use_notifier ? "in-process notifier" : "LISTEN/NOTIFY", (long long)latency);
    assert_true(latency < 2000);

    /* Idle again, waiting with a poll interval of 20 s: a stop must end that wait at once
     * (one poll on the stop token, the notifier's pipe and PostgreSQL's socket), not when
     * the interval or a slice of it runs out. */
    hd_sleep_ms(300);
    int64_t took = hd_test_runner_stop(&rn);
    print_message("    %s: hd_relay_run returned %lld ms after the stop\n",
                  use_notifier ? "in-process notifier" : "LISTEN/NOTIFY", (long long)took);
    assert_true(took < 200);
    assert_hd_err(0, rn.rc, &rn.err);
    if (use_notifier) {
        hd_outbox_set_notifier(s, NULL);
        hd_outbox_notifier_free(n);
    }
    hd_relay_free(rn.relay);
    drop_broker_side(a, queue, topic);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(rs);
    hd_store_close(s);
    free(queue);
    free(topic);
}

static void postgres_notify_wakes_the_relay(void **state)
{
    (void)state;
    db d;
    pg_db(&d);
    wakes_up(&d, 0);
    db_drop(&d);
}

static void notifier_wakes_the_relay(void **state)
{
    (void)state;
    db d;
    sqlite_db(&d);
    wakes_up(&d, 1);
    db_drop(&d);
}

/* ---- 7. two batches in flight --------------------------------------------------------------- */

#define PIPE_BLOCKS 4  /* blocks of PIPE_BATCH aggregates, two events each */
#define PIPE_BATCH  50 /* rows per claim */
#define PIPE_AGGS   (PIPE_BLOCKS * PIPE_BATCH)

/* Whether aggregate agg's first event goes to the topic nobody listens to. */
static int pipe_unroutable(int agg)
{
    return agg % 4 == 0;
}

/* The events of the pipelined test, block by block: the first events of PIPE_BATCH
 * aggregates, then their second events. An aggregate's two events are thus one claim apart:
 * the claim made beside the batch holding the first events would take the second ones, if it
 * did not skip the aggregates leased in that batch. Every fourth first event is of a topic
 * with no queue (returned); second events are all routable. The data says which aggregate
 * and which step, for the order check. */
static void append_pipeline_events(hd_store *s, const char *topic, const char *nowhere)
{
    hd_error err;
    char type[256], lost_type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);
    snprintf(lost_type, sizeof lost_type, "%s.item_added", nowhere);
    for (int block = 0; block < PIPE_BLOCKS; block++) {
        assert_hd_err(0, hd_store_begin(s, &err), &err);
        for (int step = 1; step <= 2; step++) {
            for (int k = 0; k < PIPE_BATCH; k++) {
                int agg = block * PIPE_BATCH + k;
                const char *t = step == 1 && pipe_unroutable(agg) ? lost_type : type;
                hd_envelope *env = hd_envelope_new(
                    t, 1, "/test", json_pack("{s:i, s:i}", "agg", agg, "step", step));
                assert_non_null(env);
                char id[32];
                snprintf(id, sizeof id, "agg-%d", agg);
                assert_hd_err(0, hd_outbox_append(s, env, "item", id, &err), &err);
                hd_envelope_free(env);
            }
        }
        assert_hd_err(0, hd_store_commit(s, &err), &err);
    }
}

typedef struct in_order {
    size_t n;         /* messages taken from the queue */
    size_t distinct;  /* distinct (aggregate, step) among them */
    int out_of_order; /* second events that came before the routable first event */
} in_order;

/* Take every message of queue (basic.get, auto-ack) and check each aggregate's order. */
static in_order drain_in_order(hd_amqp *a, const char *queue)
{
    in_order r = {0};
    static unsigned char seen[PIPE_AGGS][2];
    memset(seen, 0, sizeof seen);
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    for (;;) {
        amqp_rpc_reply_t rep = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 1);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "basic.get", &err), &err);
        if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t msg;
        rep = amqp_read_message(st, ch, &msg, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "read message", &err), &err);
        json_t *body = json_loadb(msg.body.bytes, msg.body.len, 0, NULL);
        json_t *data = json_object_get(body, "data");
        int agg = (int)json_integer_value(json_object_get(data, "agg"));
        int step = (int)json_integer_value(json_object_get(data, "step"));
        assert_true(agg >= 0 && agg < PIPE_AGGS && (step == 1 || step == 2));
        r.n++;
        if (!seen[agg][step - 1]++)
            r.distinct++;
        if (step == 2 && !pipe_unroutable(agg) && !seen[agg][0])
            r.out_of_order++;
        json_decref(body);
        amqp_destroy_message(&msg);
        amqp_maybe_release_buffers(st);
    }
    return r;
}

static void two_batches_in_flight(db *d)
{
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_store *s = open_store(d);
    hd_store *rs = open_store(d); /* the relay thread's own handle */
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-pipe");
    char *nowhere = hd_test_unique_name("hd-relay-pipe-nobody");
    char *queue = bind_queue(a, topic);
    append_pipeline_events(s, topic, nowhere);
    int total = 2 * PIPE_AGGS, returned_rows = 0;
    for (int agg = 0; agg < PIPE_AGGS; agg++)
        returned_rows += pipe_unroutable(agg);

    /* A window of 10: publishing batch k+1 takes a while, and batch k stays leased meanwhile,
     * which the watcher below can see. Two attempts, a short backoff: a returned row is
     * retried (its aggregate's second event waits for it) and parked. */
    hd_test_runner rn = {0};
    hd_relay_options o = {.batch = PIPE_BATCH,
                          .window = 10,
                          .poll_ms = 20,
                          .max_attempts = 2,
                          .backoff_base_ms = 20,
                          .backoff_cap_ms = 50,
                          .drain = 1};
    assert_hd_err(0, hd_relay_new(rs, pa, &o, &rn.relay, &err), &err);
    hd_test_runner_start(&rn);
    /* Watched from another connection while it runs. More rows under a live lease than one
     * claim takes: two batches were in flight at once. An aggregate with rows under two
     * different leases (two claims): the claim beside batch k took a later event of an
     * aggregate whose earlier event is in batch k, and per-aggregate order would be lost
     * if that earlier event were returned. Each query is one snapshot. */
    int64_t most_leased = 0, split = 0;
    int samples = 0;
    int64_t end = hd_clock_ms() + 60000;
    while (hd_test_outbox_pending(s) > 0) {
        assert_true(hd_clock_ms() < end);
        long long now = (long long)hd_time_now_ms();
        char where[512];
        snprintf(where, sizeof where, "dispatched_at IS NULL AND claimed_until > %lld", now);
        int64_t leased = hd_test_outbox_count(s, where);
        if (leased > most_leased)
            most_leased = leased;
        snprintf(where, sizeof where,
                 "seq IN (SELECT b.seq FROM hd_outbox a JOIN hd_outbox b ON a.aggregate_id ="
                 " b.aggregate_id AND a.seq < b.seq WHERE a.dispatched_at IS NULL AND"
                 " b.dispatched_at IS NULL AND a.claimed_until > %lld AND b.claimed_until > %lld"
                 " AND a.claimed_until <> b.claimed_until)",
                 now, now);
        split += hd_test_outbox_count(s, where);
        samples++;
        hd_sleep_ms(1);
    }
    hd_test_runner_join(&rn); /* drain: it returns by itself */
    assert_hd_err(0, rn.rc, &rn.err);
    hd_relay_stats st;
    hd_relay_get_stats(rn.relay, &st);

    in_order got = drain_in_order(a, queue);
    print_message("    %s: %d events (%d unroutable), batch %d: at most %lld rows leased at once, "
                  "%lld split aggregates in %d samples; %llu batches, %llu confirmed, %llu "
                  "returned, %llu parked; %zu received, %zu distinct, %d out of order\n",
                  hd_store_dialect(s), total, returned_rows, PIPE_BATCH, (long long)most_leased,
                  (long long)split, samples, (unsigned long long)st.batches,
                  (unsigned long long)st.confirmed, (unsigned long long)st.returned,
                  (unsigned long long)st.parked, got.n, got.distinct, got.out_of_order);
    assert_true(most_leased > PIPE_BATCH); /* the pipeline was at work */
    assert_int_equal(split, 0);
    assert_int_equal(st.confirmed, total - returned_rows);
    assert_int_equal(st.returned, 2 * returned_rows); /* two attempts each */
    assert_int_equal(st.parked, returned_rows);
    assert_int_equal(st.lost + st.nacked + st.released, 0);
    assert_int_equal(got.n, total - returned_rows);
    assert_int_equal(got.distinct, total - returned_rows);
    assert_int_equal(got.out_of_order, 0);

    /* In the table: the routable rows dispatched, the returned ones parked and never marked
     * dispatched. */
    char lost_type[300];
    snprintf(lost_type, sizeof lost_type, "type = '%s.item_added'", nowhere);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NOT NULL"), total - returned_rows);
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL"), returned_rows);
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL AND dispatched_at IS NOT NULL"),
                     0);
    char parked_lost[400];
    snprintf(parked_lost, sizeof parked_lost, "%s AND parked_at IS NOT NULL", lost_type);
    assert_int_equal(hd_test_outbox_count(s, parked_lost), returned_rows);

    hd_relay_free(rn.relay);
    drop_broker_side(a, queue, topic);
    drop_broker_side(a, NULL, nowhere);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(rs);
    hd_store_close(s);
    free(queue);
    free(nowhere);
    free(topic);
}

static void sqlite_two_batches_in_flight(void **state)
{
    (void)state;
    db d;
    sqlite_db(&d);
    two_batches_in_flight(&d);
    db_drop(&d);
}

static void postgres_two_batches_in_flight(void **state)
{
    (void)state;
    db d;
    pg_db(&d);
    two_batches_in_flight(&d);
    db_drop(&d);
}

/* ---- 8. handed rows ------------------------------------------------------------------------ */

static void handed_rows_keep_each_aggregate_s_order(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    db d;
    sqlite_db(&d);
    hd_store *s = open_store(&d);
    hd_store *rs = open_store(&d);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &pa, &err), &err);
    char *topic = hd_test_unique_name("hd-relay-handed");
    char *nowhere = hd_test_unique_name("hd-relay-handed-nobody");
    char *queue = bind_queue(a, topic);
    int total = 2 * PIPE_AGGS, returned_rows = 0;
    for (int agg = 0; agg < PIPE_AGGS; agg++)
        returned_rows += pipe_unroutable(agg);

    hd_outbox_notifier *n = hd_outbox_notifier_new();
    assert_non_null(n);
    hd_outbox_set_notifier(s, n);
    hd_test_runner rn = {0};
    hd_relay_options o = {.batch = PIPE_BATCH,
                          .window = 10,
                          .poll_ms = 50,
                          .max_attempts = 2,
                          .backoff_base_ms = 20,
                          .backoff_cap_ms = 50,
                          .notifier = n};
    assert_hd_err(0, hd_relay_new(rs, pa, &o, &rn.relay, &err), &err);
    hd_test_runner_start(&rn);
    hd_sleep_ms(300); /* connected, the token offered */
    /* Block by block: the first events of 50 new aggregates (handed), then their second
     * events (their aggregate has a row pending: left for claims). */
    append_pipeline_events(s, topic, nowhere);
    hd_outbox_signal(s);
    int64_t end = hd_clock_ms() + 60000;
    while (hd_test_outbox_pending(s) > 0) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(10);
    }
    hd_test_runner_stop(&rn);
    assert_hd_err(0, rn.rc, &rn.err);
    hd_relay_stats st;
    hd_relay_get_stats(rn.relay, &st);
    in_order got = drain_in_order(a, queue);
    int64_t handed_rows = hd_test_outbox_count(s, "claimed_by LIKE '%/handed-%'");
    print_message("    sqlite: %d events (%d unroutable), %lld appended handed; %llu claimed or "
                  "taken, %llu of them taken handed; %llu confirmed, %llu returned, %llu parked; "
                  "%zu received, %zu distinct, %d out of order\n",
                  total, returned_rows, (long long)handed_rows, (unsigned long long)st.claimed,
                  (unsigned long long)st.handed, (unsigned long long)st.confirmed,
                  (unsigned long long)st.returned, (unsigned long long)st.parked, got.n,
                  got.distinct, got.out_of_order);
    /* The first events were handed and taken; the second ones claimed. */
    assert_int_equal(st.handed, PIPE_AGGS);
    assert_int_equal(handed_rows, PIPE_AGGS - returned_rows); /* a retry's claim renames it */
    assert_int_equal(st.confirmed, total - returned_rows);
    assert_int_equal(st.returned, 2 * returned_rows);
    assert_int_equal(st.parked, returned_rows);
    assert_int_equal(st.lost + st.nacked + st.released, 0);
    assert_int_equal(got.n, total - returned_rows);
    assert_int_equal(got.distinct, total - returned_rows);
    assert_int_equal(got.out_of_order, 0);
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL"), returned_rows);

    /* Stopped: the offer is withdrawn, a row appended now waits for a claim. */
    hd_test_outbox_fill(s, topic, 0, 1, 1, 0);
    assert_int_equal(hd_test_outbox_count(s, "dispatched_at IS NULL AND parked_at IS NULL AND "
                                             "claimed_by IS NULL AND claimed_until = 0"),
                     1);

    hd_outbox_set_notifier(s, NULL);
    hd_outbox_notifier_free(n);
    hd_relay_free(rn.relay);
    drop_broker_side(a, queue, topic);
    drop_broker_side(a, NULL, nowhere);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(rs);
    hd_store_close(s);
    db_drop(&d);
    free(queue);
    free(nowhere);
    free(topic);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sqlite_delivers_everything),
        cmocka_unit_test(postgres_delivers_everything),
        cmocka_unit_test(unroutable_is_parked_then_redriven),
        cmocka_unit_test(unroutable_without_mandatory_counts_as_delivered),
        cmocka_unit_test(missing_exchange_without_declare_is_parked),
        cmocka_unit_test(retention_purges_dispatched_keeps_parked),
        cmocka_unit_test(sqlite_sensitive_rows_are_scrubbed_and_purged_first),
        cmocka_unit_test(postgres_sensitive_rows_are_scrubbed_and_purged_first),
        cmocka_unit_test(two_relays_deliver_each_row_once),
        cmocka_unit_test(postgres_notify_wakes_the_relay),
        cmocka_unit_test(notifier_wakes_the_relay),
        cmocka_unit_test(sqlite_two_batches_in_flight),
        cmocka_unit_test(postgres_two_batches_in_flight),
        cmocka_unit_test(handed_rows_keep_each_aggregate_s_order),
        cmocka_unit_test(broker_down_then_catch_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
