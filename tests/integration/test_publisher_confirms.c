/* Integration tests for herald/publisher.h against the real broker (HD_AMQP_URL): every
 * message of a window gets exactly one fate; unroutable mandatory messages are RETURNED and
 * never CONFIRMED (the broker acks them too); nacks; a channel error reports the messages in
 * flight LOST and the publisher carries on; message properties arrive intact, and so do raw
 * AMQP header tables (nested arrays and tables, as x-death is) and raw properties, which is
 * how the consumer forwards retries and dead letters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_equal.h"
#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#define MAX_SEQ 4096

typedef struct record {
    int fates[4];
    int times[MAX_SEQ];    /* how often each seq got a fate */
    hd_fate fate[MAX_SEQ]; /* the last fate of each seq */
    void *user[MAX_SEQ];
    char reason[256]; /* last non-confirmed reason */
} record;

static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    record *r = ctx;
    r->fates[fate]++;
    if (seq < MAX_SEQ) {
        r->times[seq]++;
        r->fate[seq] = fate;
        r->user[seq] = user;
    }
    if (reason)
        snprintf(r->reason, sizeof r->reason, "%s", reason);
}

typedef struct fixture {
    hd_amqp *a, *pa;
    hd_publisher *pub;
    record *rec;
    char *x, *q;
} fixture;

static fixture *open_fixture(size_t window)
{
    fixture *fx = calloc(1, sizeof *fx);
    fx->rec = calloc(1, sizeof *fx->rec);
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    assert_hd_err(0, hd_amqp_open(url, NULL, &fx->a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &fx->pa, &err), &err);
    hd_publisher_options po = {
        .window = window, .on_fate = on_fate, .ctx = fx->rec, .confirm_timeout_ms = 10000};
    assert_hd_err(0, hd_publisher_new(fx->pa, &po, &fx->pub, &err), &err);
    fx->x = hd_test_unique_name("hd-pub-x");
    fx->q = hd_test_unique_name("hd-pub-q");
    hd_exchange_spec ex = {.name = fx->x, .type = HD_EXCHANGE_DIRECT, .durable = 1};
    hd_queue_spec q = {.name = fx->q, .durable = 1};
    hd_binding_spec b = {.queue = fx->q, .exchange = fx->x, .key = "routed"};
    assert_hd_err(0, hd_exchange_declare(fx->a, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(fx->a, &q, NULL, &err), &err);
    assert_hd_err(0, hd_queue_bind(fx->a, &b, &err), &err);
    return fx;
}

static void close_fixture(fixture *fx)
{
    hd_error err;
    hd_publisher_free(fx->pub);
    assert_hd_err(0, hd_queue_delete(fx->a, fx->q, NULL, &err), &err);
    assert_hd_err(0, hd_exchange_delete(fx->a, fx->x, &err), &err);
    hd_amqp_close(fx->pa);
    hd_amqp_close(fx->a);
    free(fx->x);
    free(fx->q);
    free(fx->rec);
    free(fx);
}

static uint32_t count(fixture *fx)
{
    hd_queue_info info;
    hd_error err;
    assert_hd_err(0, hd_queue_inspect(fx->a, fx->q, &info, &err), &err);
    return info.message_count;
}

static void every_message_of_a_window_of_1000_is_confirmed(void **state)
{
    (void)state;
    fixture *fx = open_fixture(1000);
    hd_error err;
    static int users[1000];
    char body[200];
    memset(body, 'x', sizeof body);
    for (int i = 0; i < 1000; i++) {
        hd_message m = {.exchange = fx->x,
                        .routing_key = "routed",
                        .body = body,
                        .len = sizeof body,
                        .user = &users[i]};
        uint64_t seq = 0;
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, &seq, &err), &err);
        assert_int_equal(seq, (uint64_t)i + 1);
        assert_true(hd_publisher_outstanding(fx->pub) <= 1000);
    }
    assert_hd_err(0, hd_publisher_wait(fx->pub, 20000, &err), &err);
    assert_int_equal(hd_publisher_outstanding(fx->pub), 0);
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED], 1000);
    assert_int_equal(fx->rec->fates[HD_FATE_RETURNED] + fx->rec->fates[HD_FATE_NACKED] +
                         fx->rec->fates[HD_FATE_LOST],
                     0);
    for (int s = 1; s <= 1000; s++) {
        assert_int_equal(fx->rec->times[s], 1); /* exactly one fate each */
        assert_ptr_equal(fx->rec->user[s], &users[s - 1]);
    }
    assert_int_equal(count(fx), 1000);
    close_fixture(fx);
}

static void a_small_window_bounds_what_is_in_flight(void **state)
{
    (void)state;
    fixture *fx = open_fixture(4);
    hd_error err;
    for (int i = 0; i < 200; i++) {
        hd_message m = {.exchange = fx->x, .routing_key = "routed", .body = "b", .len = 1};
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, NULL, &err), &err);
        assert_true(hd_publisher_outstanding(fx->pub) <= 4);
    }
    assert_hd_err(0, hd_publisher_wait(fx->pub, 10000, &err), &err);
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED], 200);
    assert_int_equal(count(fx), 200);
    close_fixture(fx);
}

static void unroutable_mandatory_is_returned_not_confirmed(void **state)
{
    (void)state;
    fixture *fx = open_fixture(100);
    hd_error err;
    /* Interleave routable and unroutable messages in one window: the returns must land on
     * exactly the right sequence numbers, although their acks come as "multiple". */
    for (int i = 1; i <= 60; i++) {
        hd_message m = {.exchange = fx->x,
                        .routing_key = i % 3 == 0 ? "nowhere" : "routed",
                        .body = "b",
                        .len = 1,
                        .message_id = "same-id-on-purpose"};
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, NULL, &err), &err);
    }
    assert_hd_err(0, hd_publisher_wait(fx->pub, 10000, &err), &err);
    for (int s = 1; s <= 60; s++) {
        assert_int_equal(fx->rec->times[s], 1);
        assert_int_equal(fx->rec->fate[s], s % 3 == 0 ? HD_FATE_RETURNED : HD_FATE_CONFIRMED);
    }
    assert_int_equal(fx->rec->fates[HD_FATE_RETURNED], 20);
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED], 40);
    assert_non_null(strstr(fx->rec->reason, "312 NO_ROUTE"));
    assert_int_equal(count(fx), 40);

    /* The one-message helper says the same. */
    hd_message lost = {.exchange = fx->x, .routing_key = "nowhere", .body = "b", .len = 1};
    assert_hd(HD_ERETURNED, hd_publish_confirmed(fx->pub, &lost, 5000, &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "NO_ROUTE"));
    hd_message ok = {.exchange = fx->x, .routing_key = "routed", .body = "b", .len = 1};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &ok, 5000, &err), &err);

    /* Not mandatory: the broker drops it and acks it — "confirmed" and gone. This is why
     * herald publishes mandatory by default. */
    hd_message dropped = {.exchange = fx->x,
                          .routing_key = "nowhere",
                          .body = "b",
                          .len = 1,
                          .flags = HD_MSG_NOT_MANDATORY};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &dropped, 5000, &err), &err);
    assert_int_equal(count(fx), 41);
    close_fixture(fx);
}

static void full_queue_with_reject_publish_nacks(void **state)
{
    (void)state;
    fixture *fx = open_fixture(10);
    hd_error err;
    char *q = hd_test_unique_name("hd-pub-full");
    /* x-overflow is not in hd_queue_spec (herald never wants it): declared raw. */
    amqp_table_entry_t e[2] = {
        {.key = amqp_cstring_bytes("x-max-length"),
         .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 2}},
        {.key = amqp_cstring_bytes("x-overflow"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8,
                   .value.bytes = amqp_cstring_bytes("reject-publish")}},
    };
    amqp_table_t args = {.num_entries = 2, .entries = e};
    amqp_queue_declare(hd_amqp_state(fx->a), hd_amqp_channel(fx->a), amqp_cstring_bytes(q), 0, 0, 0,
                       0, args);
    assert_hd_err(0,
                  hd_amqp_check_reply(fx->a, amqp_get_rpc_reply(hd_amqp_state(fx->a)),
                                      "declare full queue", &err),
                  &err);
    for (int i = 0; i < 5; i++) {
        hd_message m = {.exchange = "", .routing_key = q, .body = "b", .len = 1};
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, NULL, &err), &err);
    }
    assert_hd_err(0, hd_publisher_wait(fx->pub, 10000, &err), &err);
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED], 2);
    assert_int_equal(fx->rec->fates[HD_FATE_NACKED], 3);
    hd_message m = {.exchange = "", .routing_key = q, .body = "b", .len = 1};
    assert_hd(HD_ENACKED, hd_publish_confirmed(fx->pub, &m, 5000, &err));
    assert_hd_err(0, hd_queue_delete(fx->a, q, NULL, &err), &err);
    free(q);
    close_fixture(fx);
}

static void missing_exchange_loses_the_window_and_the_publisher_recovers(void **state)
{
    (void)state;
    fixture *fx = open_fixture(100);
    hd_error err;
    char *missing = hd_test_unique_name("hd-no-such-exchange");
    for (int i = 0; i < 5; i++) {
        hd_message m = {.exchange = fx->x, .routing_key = "routed", .body = "b", .len = 1};
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, NULL, &err), &err);
    }
    hd_message bad = {.exchange = missing, .routing_key = "k", .body = "b", .len = 1};
    assert_hd_err(0, hd_publisher_publish(fx->pub, &bad, NULL, &err), &err);
    /* The broker closes the channel (404); publish is asynchronous, so wait finds out. */
    int rc = hd_publisher_wait(fx->pub, 10000, &err);
    assert_hd(HD_EAMQP, rc);
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "404 NOT_FOUND"));
    assert_int_equal(hd_publisher_outstanding(fx->pub), 0);
    /* The five before it may have been confirmed before the close; the bad one never is. */
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED] + fx->rec->fates[HD_FATE_LOST], 6);
    assert_true(fx->rec->fates[HD_FATE_LOST] >= 1);
    assert_int_equal(fx->rec->fate[6], HD_FATE_LOST);
    assert_true(hd_amqp_is_open(fx->pa)); /* only the channel died */

    /* The next publish opens a new confirm channel; numbering starts again at 1. */
    memset(fx->rec, 0, sizeof *fx->rec);
    hd_message m = {.exchange = fx->x, .routing_key = "routed", .body = "b", .len = 1};
    uint64_t seq = 0;
    assert_hd_err(0, hd_publisher_publish(fx->pub, &m, &seq, &err), &err);
    assert_int_equal(seq, 1);
    assert_hd_err(0, hd_publisher_wait(fx->pub, 10000, &err), &err);
    assert_int_equal(fx->rec->fates[HD_FATE_CONFIRMED], 1);

    /* The one-message helper says why the message was lost: the broker closed the channel. */
    assert_hd(HD_EAMQP, hd_publish_confirmed(fx->pub, &bad, 5000, &err));
    assert_non_null(strstr(err.text, "404 NOT_FOUND"));
    assert_int_equal(fx->rec->fates[HD_FATE_LOST], 1);
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &m, 5000, &err), &err);
    free(missing);
    close_fixture(fx);
}

static int bytes_eq(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

static void properties_arrive_intact(void **state)
{
    (void)state;
    fixture *fx = open_fixture(10);
    hd_error err;
    static const hd_amqp_kv headers[] = {{"tenant", "acme"}, {"schema", "v2"}};
    hd_message m = {.exchange = fx->x,
                    .routing_key = "routed",
                    .body = "{\"a\":1}",
                    .len = 7,
                    .content_type = "application/json",
                    .type = "users.user_registered",
                    .message_id = "m-1",
                    .correlation_id = "c-1",
                    .headers = headers,
                    .n_headers = 2};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &m, 5000, &err), &err);

    amqp_connection_state_t c = hd_amqp_state(fx->a);
    amqp_basic_get(c, hd_amqp_channel(fx->a), amqp_cstring_bytes(fx->q), 1 /* no_ack */);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "basic.get", &err), &err);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t msg;
    r = amqp_read_message(c, hd_amqp_channel(fx->a), &msg, 0);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "read message", &err), &err);
    amqp_basic_properties_t *p = &msg.properties;
    assert_true(bytes_eq(msg.body, "{\"a\":1}"));
    assert_true(bytes_eq(p->content_type, "application/json"));
    assert_true(bytes_eq(p->type, "users.user_registered"));
    assert_true(bytes_eq(p->message_id, "m-1"));
    assert_true(bytes_eq(p->correlation_id, "c-1"));
    assert_int_equal(p->delivery_mode, 2); /* persistent by default */
    int found = 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_table_entry_t *e = &p->headers.entries[i];
        if (bytes_eq(e->key, "tenant"))
            found += bytes_eq(e->value.value.bytes, "acme");
        if (bytes_eq(e->key, "schema"))
            found += bytes_eq(e->value.value.bytes, "v2");
        if (bytes_eq(e->key, "x-herald-seq"))
            found += 10;
    }
    assert_int_equal(found, 12);
    amqp_destroy_message(&msg);
    close_fixture(fx);
}

static const amqp_field_value_t *header(const amqp_table_t *t, const char *key, int *times)
{
    const amqp_field_value_t *found = NULL;
    *times = 0;
    for (int i = 0; i < t->num_entries; i++)
        if (bytes_eq(t->entries[i].key, key)) {
            found = &t->entries[i].value;
            (*times)++;
        }
    return found;
}

#define UTF8(s)                                                                                    \
    {                                                                                              \
        .kind = AMQP_FIELD_KIND_UTF8, .value.bytes = { sizeof(s) - 1, (void *)(s) }                \
    }
#define I64(n)                                                                                     \
    {                                                                                              \
        .kind = AMQP_FIELD_KIND_I64, .value.i64 = (n)                                              \
    }

static void raw_headers_and_properties_arrive_exactly(void **state)
{
    (void)state;
    fixture *fx = open_fixture(10);
    hd_error err;

    /* An x-death-like value: an array of tables holding strings, integers, a timestamp and
     * an array — every nesting the broker uses. */
    amqp_field_value_t keys[1] = {UTF8("orders")};
    amqp_table_entry_t death1[] = {
        {amqp_cstring_bytes("count"), I64(3)},
        {amqp_cstring_bytes("reason"), UTF8("expired")},
        {amqp_cstring_bytes("queue"), UTF8("orders.retry.1000ms")},
        {amqp_cstring_bytes("time"), {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000}},
        {amqp_cstring_bytes("exchange"), UTF8("orders.retry")},
        {amqp_cstring_bytes("routing-keys"),
         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, keys}}},
    };
    amqp_table_entry_t death2[] = {
        {amqp_cstring_bytes("count"), I64(1)},
        {amqp_cstring_bytes("reason"), UTF8("rejected")},
        {amqp_cstring_bytes("queue"), UTF8("elsewhere")},
    };
    amqp_field_value_t deaths[2] = {
        {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {6, death1}},
        {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {3, death2}},
    };
    amqp_table_entry_t deep[] = {
        {amqp_cstring_bytes("pi"), {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 3.25}},
        {amqp_cstring_bytes("on"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}}};
    amqp_table_entry_t nested[] = {
        {amqp_cstring_bytes("deep"), {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {2, deep}}},
        {amqp_cstring_bytes("n"), {.kind = AMQP_FIELD_KIND_I32, .value.i32 = -7}}};
    amqp_table_entry_t raw[] = {
        {amqp_cstring_bytes("x-death"),
         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {2, deaths}}},
        {amqp_cstring_bytes("x-nested"),
         {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {2, nested}}},
        /* replaced by the string header of the same name */
        {amqp_cstring_bytes("tenant"), UTF8("old")},
        /* a number from an earlier publish (a delivery forwarded): replaced by ours */
        {amqp_cstring_bytes("x-herald-seq"), I64(999)},
        {amqp_cstring_bytes("x-attempts"), I64(2)},
    };
    amqp_table_t raw_table = {.num_entries = 5, .entries = raw};

    amqp_table_entry_t ignored[] = {{amqp_cstring_bytes("ignored"), UTF8("yes")}};
    amqp_basic_properties_t base;
    memset(&base, 0, sizeof base);
    base._flags = AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                  AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                  AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG |
                  AMQP_BASIC_DELIVERY_MODE_FLAG;
    base.timestamp = 1700000123;
    base.app_id = amqp_cstring_bytes("billing");
    base.reply_to = amqp_cstring_bytes("replies");
    base.priority = 3;
    base.content_encoding = amqp_cstring_bytes("identity");
    base.message_id = amqp_cstring_bytes("from-base");
    base.type = amqp_cstring_bytes("type-from-base");
    base.headers = (amqp_table_t){1, ignored}; /* raw_properties' headers are not sent */
    base.delivery_mode = 1;                    /* flags decide: persistent */

    static const hd_amqp_kv strings[] = {{"tenant", "new"}};
    hd_message m = {.exchange = fx->x,
                    .routing_key = "routed",
                    .body = "b",
                    .len = 1,
                    .message_id = "overrides-base",
                    .headers = strings,
                    .n_headers = 1,
                    .raw_headers = &raw_table,
                    .raw_properties = &base};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &m, 5000, &err), &err);

    amqp_connection_state_t c = hd_amqp_state(fx->a);
    amqp_basic_get(c, hd_amqp_channel(fx->a), amqp_cstring_bytes(fx->q), 1 /* no_ack */);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "basic.get", &err), &err);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t msg;
    r = amqp_read_message(c, hd_amqp_channel(fx->a), &msg, 0);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "read message", &err), &err);
    const amqp_basic_properties_t *p = &msg.properties;
    assert_true(p->_flags & AMQP_BASIC_HEADERS_FLAG);
    const amqp_table_t *h = &p->headers;
    int times;
    const amqp_field_value_t *v = header(h, "x-death", &times);
    assert_int_equal(times, 1);
    assert_true(hd_test_amqp_field_equal(v, &raw[0].value)); /* nested arrays and tables, exactly */
    v = header(h, "x-nested", &times);
    assert_int_equal(times, 1);
    assert_true(hd_test_amqp_field_equal(v, &raw[1].value));
    v = header(h, "x-attempts", &times);
    assert_int_equal(times, 1);
    assert_true(hd_test_amqp_field_equal(v, &raw[4].value));
    v = header(h, "tenant", &times);
    assert_int_equal(times, 1);
    assert_true(bytes_eq(v->value.bytes, "new"));
    v = header(h, "x-herald-seq", &times);
    assert_int_equal(times, 1);
    assert_int_equal(v->value.i64, 1); /* this publish's number, not the forwarded 999 */
    assert_null(header(h, "ignored", &times));
    assert_int_equal(h->num_entries, 5);

    assert_true(p->_flags & AMQP_BASIC_TIMESTAMP_FLAG);
    assert_int_equal(p->timestamp, 1700000123);
    assert_true(bytes_eq(p->app_id, "billing"));
    assert_true(bytes_eq(p->reply_to, "replies"));
    assert_int_equal(p->priority, 3);
    assert_true(bytes_eq(p->content_encoding, "identity"));
    assert_true(bytes_eq(p->message_id, "overrides-base"));
    assert_true(bytes_eq(p->type, "type-from-base"));
    assert_int_equal(p->delivery_mode, 2);
    amqp_destroy_message(&msg);

    /* A malformed raw table is refused before anything is sent. */
    amqp_table_t broken = {.num_entries = 2, .entries = NULL};
    hd_message bad = {.exchange = fx->x, .routing_key = "routed", .raw_headers = &broken};
    assert_hd(HD_EINVAL, hd_publisher_publish(fx->pub, &bad, NULL, &err));

    /* More raw headers than fit on the stack: all of them arrive. */
    enum { MANY = 100 };
    amqp_table_entry_t many[MANY];
    char names[MANY][16];
    for (int i = 0; i < MANY; i++) {
        snprintf(names[i], sizeof names[i], "h%d", i);
        many[i].key = amqp_cstring_bytes(names[i]);
        many[i].value.kind = AMQP_FIELD_KIND_I64;
        many[i].value.value.i64 = i;
    }
    amqp_table_t many_table = {.num_entries = MANY, .entries = many};
    hd_message big = {.exchange = fx->x, .routing_key = "routed", .raw_headers = &many_table};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &big, 5000, &err), &err);
    amqp_basic_get(c, hd_amqp_channel(fx->a), amqp_cstring_bytes(fx->q), 1);
    r = amqp_get_rpc_reply(c);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "basic.get", &err), &err);
    r = amqp_read_message(c, hd_amqp_channel(fx->a), &msg, 0);
    assert_hd_err(0, hd_amqp_check_reply(fx->a, r, "read message", &err), &err);
    assert_int_equal(msg.properties.headers.num_entries, MANY + 1); /* + x-herald-seq */
    v = header(&msg.properties.headers, "h99", &times);
    assert_int_equal(times, 1);
    assert_int_equal(v->value.i64, 99);
    amqp_destroy_message(&msg);
    close_fixture(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_message_of_a_window_of_1000_is_confirmed),
        cmocka_unit_test(a_small_window_bounds_what_is_in_flight),
        cmocka_unit_test(unroutable_mandatory_is_returned_not_confirmed),
        cmocka_unit_test(full_queue_with_reject_publish_nacks),
        cmocka_unit_test(missing_exchange_loses_the_window_and_the_publisher_recovers),
        cmocka_unit_test(properties_arrive_intact),
        cmocka_unit_test(raw_headers_and_properties_arrive_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
