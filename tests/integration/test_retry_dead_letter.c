/* Integration: retry tiers delay as configured, attempts come from x-death, the dead-letter
 * queue gets what fails N times, what the handler rejects and what does not decode — and the
 * queue keeps flowing. Forwards keep their header tables exactly (nested x-death values
 * included), and a forward that is returned or whose confirm does not come leaves the
 * original unacked (requeued). Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amqp_equal.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/publisher.h"
#include "herald/topology.h"

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct fixture {
    const char *url;
    char *queue;
    hd_retry_policy policy;
    hd_amqp *admin; /* declares, publishes, reads the DLQ */
    hd_publisher *pub;
} fixture;

static void fixture_open(fixture *f, int max_attempts)
{
    hd_error err;
    f->url = hd_test_require_env("HD_AMQP_URL");
    f->queue = hd_test_unique_name("retry");
    memset(&f->policy, 0, sizeof f->policy);
    f->policy.max_attempts = max_attempts;
    f->policy.ntiers = 2;
    f->policy.tier_ms[0] = 200;
    f->policy.tier_ms[1] = 400;
    assert_hd_err(HD_OK, hd_amqp_open(f->url, NULL, &f->admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(f->admin, f->queue, &f->policy, &err), &err);
    assert_hd_err(HD_OK, hd_publisher_new(f->admin, NULL, &f->pub, &err), &err);
}

static void fixture_close(fixture *f)
{
    hd_error err;
    hd_publisher_free(f->pub);
    assert_hd_err(HD_OK, hd_consumer_undeclare(f->admin, f->queue, &f->policy, &err), &err);
    hd_amqp_close(f->admin);
    free(f->queue);
}

static void publish(fixture *f, const char *body, const char *message_id)
{
    hd_error err;
    hd_message m = {.exchange = "",
                    .routing_key = f->queue,
                    .body = body,
                    .len = strlen(body),
                    .message_id = message_id,
                    .content_type = "application/json"};
    assert_hd_err(HD_OK, hd_publish_confirmed(f->pub, &m, 5000, &err), &err);
}

static uint32_t queue_depth(fixture *f, const char *name)
{
    hd_error err;
    hd_queue_info info;
    assert_hd_err(HD_OK, hd_queue_inspect(f->admin, name, &info, &err), &err);
    return info.message_count;
}

/* One dead letter, read with basic.get (auto-ack): its body and the headers herald adds. */
typedef struct dead_letter {
    char body[512];
    char reason[HD_REASON_MAX];
    int64_t attempts;
    char queue[256];
    char message_id[64];
    int has_xdeath;
} dead_letter;

static int table_find(const amqp_table_t *t, const char *key, amqp_field_value_t *out)
{
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, t->entries[i].key.len) == 0) {
            *out = t->entries[i].value;
            return 1;
        }
    return 0;
}

static void copy_text(char *dst, size_t cap, amqp_bytes_t b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

static int dlq_get(fixture *f, dead_letter *out)
{
    hd_error err;
    char dlq[300];
    assert_hd(HD_OK, hd_retry_dlq_name(dlq, sizeof dlq, f->queue));
    amqp_connection_state_t st = hd_amqp_state(f->admin);
    amqp_channel_t ch = hd_amqp_channel(f->admin);
    amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(dlq), 1);
    assert_hd_err(HD_OK, hd_amqp_check_reply(f->admin, r, "basic.get", &err), &err);
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return 0;
    amqp_message_t msg;
    r = amqp_read_message(st, ch, &msg, 0);
    assert_hd_err(HD_OK, hd_amqp_check_reply(f->admin, r, "read message", &err), &err);
    memset(out, 0, sizeof *out);
    copy_text(out->body, sizeof out->body, msg.body);
    if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        copy_text(out->message_id, sizeof out->message_id, msg.properties.message_id);
    amqp_field_value_t v = {0};
    const amqp_table_t *h = &msg.properties.headers;
    assert_true(msg.properties._flags & AMQP_BASIC_HEADERS_FLAG);
    assert_true(table_find(h, HD_HEADER_REASON, &v));
    copy_text(out->reason, sizeof out->reason, v.value.bytes);
    assert_true(table_find(h, HD_HEADER_ATTEMPTS, &v));
    assert_int_equal(v.kind, AMQP_FIELD_KIND_I64);
    out->attempts = v.value.i64;
    assert_true(table_find(h, HD_HEADER_QUEUE, &v));
    copy_text(out->queue, sizeof out->queue, v.value.bytes);
    out->has_xdeath = table_find(h, "x-death", &v);
    amqp_destroy_message(&msg);
    return 1;
}

/* ---- the handler ---------------------------------------------------------------------- */

typedef struct seen {
    int calls;
    int attempts[16];
    int64_t at_ms[16];
    int ok_from_attempt; /* 0 = never OK */
    int reject;
    int good; /* calls that got a decoded envelope */
    char last_type[64];
} seen;

static hd_consume_result handler(void *ctx, const hd_delivery *d)
{
    seen *s = ctx;
    if (s->calls < 16) {
        s->attempts[s->calls] = d->attempt;
        s->at_ms[s->calls] = hd_clock_ms();
    }
    s->calls++;
    if (d->envelope != NULL) {
        s->good++;
        snprintf(s->last_type, sizeof s->last_type, "%s", hd_envelope_type(d->envelope));
        return HD_CONSUME_OK;
    }
    if (s->reject) {
        hd_delivery_reason(d, "no such customer");
        return HD_CONSUME_REJECT;
    }
    if (s->ok_from_attempt > 0 && d->attempt >= s->ok_from_attempt)
        return HD_CONSUME_OK;
    hd_delivery_reason(d, "boom on attempt %d", d->attempt);
    return HD_CONSUME_RETRY;
}

/* Poll until cond(ctx) or timeout. */
static void poll_until(hd_consumer *c, int (*cond)(void *), void *ctx, int64_t timeout_ms)
{
    hd_error err;
    int64_t end = hd_clock_ms() + timeout_ms;
    while (!cond(ctx)) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_consumer_poll(c, 50, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
}

typedef struct until_dead {
    fixture *f;
    uint32_t n;
} until_dead;

static int dlq_has(void *ctx)
{
    until_dead *u = ctx;
    char dlq[300];
    hd_retry_dlq_name(dlq, sizeof dlq, u->f->queue);
    return queue_depth(u->f, dlq) >= u->n;
}

static int calls_reached(void *ctx)
{
    seen *s = ctx;
    return s->calls >= s->ok_from_attempt;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void tiers_delay_then_dead_after_n(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 3);
    hd_error err;
    seen s = {0};
    hd_consumer_options o = {.queue = f.queue, .handler = handler, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    publish(&f, "{\"order\":1}", "m-1");

    until_dead u = {&f, 1};
    poll_until(c, dlq_has, &u, 15000);
    /* Attempts 1, 2, 3 as the broker counted them, never a 4th. */
    assert_int_equal(s.calls, 3);
    assert_int_equal(s.attempts[0], 1);
    assert_int_equal(s.attempts[1], 2);
    assert_int_equal(s.attempts[2], 3);
    /* Each wait at least its tier's TTL. */
    int64_t w1 = s.at_ms[1] - s.at_ms[0], w2 = s.at_ms[2] - s.at_ms[1];
    print_message("waits: %lld ms (tier 200 ms), %lld ms (tier 400 ms)\n", (long long)w1,
                  (long long)w2);
    assert_true(w1 >= 200);
    assert_true(w2 >= 400);

    dead_letter d;
    assert_true(dlq_get(&f, &d));
    assert_string_equal(d.body, "{\"order\":1}");
    assert_string_equal(d.reason, "boom on attempt 3");
    assert_int_equal(d.attempts, 3);
    assert_string_equal(d.queue, f.queue);
    assert_string_equal(d.message_id, "m-1");
    assert_true(d.has_xdeath); /* the history travels with it */
    assert_int_equal(queue_depth(&f, f.queue), 0);

    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.delivered, 3);
    assert_int_equal(n.retried, 2);
    assert_int_equal(n.dead, 1);
    assert_int_equal(n.acked, 0);
    /* Nothing more arrives: no loop. */
    assert_int_equal(hd_consumer_poll(c, 800, &err), 0);
    hd_consumer_close(c);
    fixture_close(&f);
}

static void retry_then_success(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 5);
    hd_error err;
    seen s = {.ok_from_attempt = 2};
    hd_consumer_options o = {.queue = f.queue, .handler = handler, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    publish(&f, "{}", "m-2");
    poll_until(c, calls_reached, &s, 10000);
    assert_int_equal(s.attempts[1], 2);
    assert_int_equal(hd_consumer_poll(c, 600, &err), 0);
    char dlq[300];
    hd_retry_dlq_name(dlq, sizeof dlq, f.queue);
    assert_int_equal(queue_depth(&f, dlq), 0);
    assert_int_equal(queue_depth(&f, f.queue), 0);
    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.acked, 1);
    assert_int_equal(n.retried, 1);
    hd_consumer_close(c);
    fixture_close(&f);
}

static void reject_is_dead_at_once(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 5);
    hd_error err;
    seen s = {.reject = 1};
    hd_consumer_options o = {.queue = f.queue, .handler = handler, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    publish(&f, "{\"customer\":42}", "m-3");
    until_dead u = {&f, 1};
    poll_until(c, dlq_has, &u, 5000);
    assert_int_equal(s.calls, 1);
    dead_letter d;
    assert_true(dlq_get(&f, &d));
    assert_string_equal(d.reason, "no such customer");
    assert_int_equal(d.attempts, 1);
    assert_false(d.has_xdeath);
    hd_consumer_close(c);
    fixture_close(&f);
}

static int good_seen(void *ctx)
{
    return ((seen *)ctx)->good >= 1;
}

static void undecodable_messages_skip_the_retries(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 3);
    hd_error err;
    hd_registry *reg = hd_registry_new();
    assert_non_null(reg);
    assert_hd(HD_OK, hd_registry_add(reg, "orders.placed", 1, NULL, NULL));
    hd_registry_set_max_size(reg, 4096);

    seen s = {0};
    /* Prefetch 1: the poison messages are ahead of the good one in the queue, one at a time;
     * if any of them blocked, the good one would never come. */
    hd_consumer_options o = {.queue = f.queue,
                             .handler = handler,
                             .ctx = &s,
                             .retry = &f.policy,
                             .registry = reg,
                             .prefetch = 1};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);

    publish(&f, "{\"specversion\":\"1.0\",", "bad-json");
    hd_envelope *unknown = hd_envelope_new("orders.exploded", 1, "/test", NULL);
    hd_envelope *v9 = hd_envelope_new("orders.placed", 9, "/test", NULL);
    hd_envelope *good = hd_envelope_new("orders.placed", 1, "/test", json_object());
    char *b1 = NULL, *b2 = NULL, *b3 = NULL;
    assert_hd(HD_OK, hd_envelope_encode(unknown, &b1, NULL, &err));
    assert_hd(HD_OK, hd_envelope_encode(v9, &b2, NULL, &err));
    assert_hd(HD_OK, hd_envelope_encode(good, &b3, NULL, &err));
    publish(&f, b1, "unknown-type");
    publish(&f, b2, "wrong-version");
    char *big = malloc(5000);
    memset(big, ' ', 4999);
    big[0] = '{';
    big[4998] = '}';
    big[4999] = '\0';
    publish(&f, big, "too-big");
    publish(&f, b3, "good");

    poll_until(c, good_seen, &s, 10000);
    assert_int_equal(s.calls, 1); /* the handler met only the good one */
    assert_string_equal(s.last_type, "orders.placed");

    const char *want_ids[] = {"bad-json", "unknown-type", "wrong-version", "too-big"};
    const char *want_codes[] = {"HD_EJSON: ", "HD_EUNKNOWN: ", "HD_EVERSION: ", "HD_ETOOBIG: "};
    for (int i = 0; i < 4; i++) {
        dead_letter d;
        assert_true(dlq_get(&f, &d));
        print_message("dead letter %s: %s\n", d.message_id, d.reason);
        assert_string_equal(d.message_id, want_ids[i]);
        assert_true(strncmp(d.reason, want_codes[i], strlen(want_codes[i])) == 0);
        assert_int_equal(d.attempts, 1);
    }
    assert_int_equal(queue_depth(&f, f.queue), 0);

    free(big);
    free(b1);
    free(b2);
    free(b3);
    hd_envelope_free(unknown);
    hd_envelope_free(v9);
    hd_envelope_free(good);
    hd_consumer_close(c);
    hd_registry_free(reg);
    fixture_close(&f);
}

/* Group commit: a batch handler gets several deliveries and one multiple ack settles them. */
typedef struct batch_seen {
    int batches;
    int messages;
    size_t largest;
} batch_seen;

static hd_consume_result batch_handler(void *ctx, const hd_delivery *const *ds, size_t n)
{
    batch_seen *b = ctx;
    b->batches++;
    b->messages += (int)n;
    if (n > b->largest)
        b->largest = n;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ds[i]->attempt, 1);
    return HD_CONSUME_OK;
}

static hd_consume_result never_called(void *ctx, const hd_delivery *d)
{
    (void)ctx;
    (void)d;
    fail_msg("the single handler should not run when the batch succeeds");
    return HD_CONSUME_OK;
}

static int batch_done(void *ctx)
{
    return ((batch_seen *)ctx)->messages >= 50;
}

static void batch_mode_acks_a_window_at_once(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 3);
    hd_error err;
    for (int i = 0; i < 50; i++)
        publish(&f, "{}", NULL);
    batch_seen b = {0};
    hd_consumer_options o = {.queue = f.queue,
                             .handler = never_called,
                             .ctx = &b,
                             .retry = &f.policy,
                             .prefetch = 20,
                             .batch_handler = batch_handler,
                             .batch_max = 20};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    poll_until(c, batch_done, &b, 10000);
    print_message("50 messages in %d batches, largest %zu\n", b.batches, b.largest);
    assert_int_equal(b.messages, 50);
    assert_true(b.largest > 1);
    assert_true(b.largest <= 20);
    hd_consumer_close(c); /* unacked messages would come back: check that none did */
    assert_int_equal(queue_depth(&f, f.queue), 0);
    fixture_close(&f);
}

/* ---- forwarding: headers as received, and nothing acked without a confirm -------------- */

#define UTF8(s)                                                                                    \
    {                                                                                              \
        .kind = AMQP_FIELD_KIND_UTF8, .value.bytes = { sizeof(s) - 1, (void *)(s) }                \
    }
#define I64(n)                                                                                     \
    {                                                                                              \
        .kind = AMQP_FIELD_KIND_I64, .value.i64 = (n)                                              \
    }

static hd_consume_result retry_always(void *ctx, const hd_delivery *d)
{
    seen *s = ctx;
    if (s->calls < 16)
        s->attempts[s->calls] = d->attempt;
    s->calls++;
    hd_delivery_reason(d, "still failing");
    return HD_CONSUME_RETRY;
}

/* A message that was dead-lettered elsewhere before (an x-death entry of another queue, with
 * an array inside) and carries a nested header of its own goes through a retry tier and into
 * the DLQ: both arrive exactly as sent, next to the broker's new x-death entry. */
static void forwards_keep_table_headers_exactly(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 2);
    hd_error err;

    amqp_field_value_t keys[2] = {UTF8("orders"), UTF8("orders.eu")};
    amqp_table_entry_t earlier[] = {
        {amqp_cstring_bytes("count"), I64(2)},
        {amqp_cstring_bytes("reason"), UTF8("rejected")},
        {amqp_cstring_bytes("queue"), UTF8("elsewhere")},
        {amqp_cstring_bytes("time"), {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000}},
        {amqp_cstring_bytes("exchange"), UTF8("orders")},
        {amqp_cstring_bytes("routing-keys"),
         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {2, keys}}},
    };
    amqp_field_value_t death = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {6, earlier}};
    amqp_table_entry_t hop[] = {
        {amqp_cstring_bytes("service"), UTF8("billing")},
        {amqp_cstring_bytes("ok"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}}};
    amqp_field_value_t hops[1] = {{.kind = AMQP_FIELD_KIND_TABLE, .value.table = {2, hop}}};
    amqp_table_entry_t trace[] = {
        {amqp_cstring_bytes("hops"), {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, hops}}},
        {amqp_cstring_bytes("depth"), I64(1)}};
    amqp_table_entry_t raw[] = {
        {amqp_cstring_bytes("x-death"),
         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, &death}}},
        {amqp_cstring_bytes("x-trace"), {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {2, trace}}},
    };
    amqp_table_t raw_table = {2, raw};
    amqp_basic_properties_t base;
    memset(&base, 0, sizeof base);
    base._flags = AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG;
    base.timestamp = 1700000321;
    base.app_id = amqp_cstring_bytes("orders-app");
    hd_message m = {.exchange = "",
                    .routing_key = f.queue,
                    .body = "{}",
                    .len = 2,
                    .message_id = "m-table",
                    .raw_headers = &raw_table,
                    .raw_properties = &base};
    assert_hd_err(HD_OK, hd_publish_confirmed(f.pub, &m, 5000, &err), &err);

    seen s = {0};
    hd_consumer_options o = {
        .queue = f.queue, .handler = retry_always, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    until_dead u = {&f, 1};
    poll_until(c, dlq_has, &u, 10000);
    assert_int_equal(s.calls, 2);
    assert_int_equal(s.attempts[0], 1); /* the other queue's death is not an attempt */
    assert_int_equal(s.attempts[1], 2); /* the tier's is */
    hd_consumer_close(c);

    char dlq[300];
    hd_retry_dlq_name(dlq, sizeof dlq, f.queue);
    amqp_connection_state_t st = hd_amqp_state(f.admin);
    amqp_channel_t ch = hd_amqp_channel(f.admin);
    amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(dlq), 1);
    assert_hd_err(HD_OK, hd_amqp_check_reply(f.admin, r, "basic.get", &err), &err);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t msg;
    r = amqp_read_message(st, ch, &msg, 0);
    assert_hd_err(HD_OK, hd_amqp_check_reply(f.admin, r, "read message", &err), &err);
    const amqp_basic_properties_t *p = &msg.properties;
    assert_int_equal(p->timestamp, 1700000321);
    assert_int_equal(p->app_id.len, strlen("orders-app"));
    amqp_field_value_t v;
    assert_true(table_find(&p->headers, "x-trace", &v));
    assert_true(hd_test_amqp_field_equal(&v, &raw[1].value));
    assert_true(table_find(&p->headers, "x-death", &v));
    assert_int_equal(v.kind, AMQP_FIELD_KIND_ARRAY);
    /* The broker put the tier's entry in front and kept ours, nested values and all. */
    assert_int_equal(v.value.array.num_entries, 2);
    assert_true(hd_test_amqp_field_equal(&v.value.array.entries[1], &death));
    hd_xdeath parsed[4];
    size_t n = 0;
    assert_hd(HD_OK, hd_xdeath_parse(&p->headers, parsed, 4, &n));
    assert_int_equal(n, 2);
    assert_string_equal(parsed[0].reason, "expired");
    assert_int_equal(parsed[0].count, 1);
    assert_string_equal(parsed[1].queue, "elsewhere");
    int seqs = 0;
    for (int i = 0; i < p->headers.num_entries; i++)
        seqs += p->headers.entries[i].key.len == strlen("x-herald-seq") &&
                memcmp(p->headers.entries[i].key.bytes, "x-herald-seq", 12) == 0;
    assert_int_equal(seqs, 1); /* one publish number, never a pile of them */
    amqp_destroy_message(&msg);
    fixture_close(&f);
}

/* x-death is a header any publisher can write. Counts of our own tier queues that sum past
 * INT64_MAX once made the attempt negative: the consumer then read a routing key from before
 * its tier array and the message never reached the DLQ. Now the sum saturates, the attempt
 * is past max_attempts, and the first failure buries it. */
static void forged_xdeath_goes_to_the_dlq(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 4);
    hd_error err;
    hd_retry_names names;
    assert_hd_err(HD_OK, hd_retry_names_make(f.queue, &f.policy, &names, &err), &err);
    amqp_table_entry_t d0[] = {
        {amqp_cstring_bytes("count"), I64(INT64_MAX)},
        {amqp_cstring_bytes("reason"), UTF8("expired")},
        {amqp_cstring_bytes("queue"), UTF8(names.tiers[0])},
    };
    amqp_table_entry_t d1[] = {
        {amqp_cstring_bytes("count"), I64(INT64_MAX)},
        {amqp_cstring_bytes("reason"), UTF8("expired")},
        {amqp_cstring_bytes("queue"), UTF8(names.tiers[1])},
    };
    amqp_field_value_t deaths[2] = {{.kind = AMQP_FIELD_KIND_TABLE, .value.table = {3, d0}},
                                    {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {3, d1}}};
    amqp_table_entry_t raw[] = {{amqp_cstring_bytes("x-death"),
                                 {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {2, deaths}}}};
    amqp_table_t raw_table = {1, raw};
    hd_message m = {.exchange = "",
                    .routing_key = f.queue,
                    .body = "{}",
                    .len = 2,
                    .message_id = "m-forged",
                    .raw_headers = &raw_table};
    assert_hd_err(HD_OK, hd_publish_confirmed(f.pub, &m, 5000, &err), &err);

    seen s = {0};
    hd_consumer_options o = {
        .queue = f.queue, .handler = retry_always, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    until_dead u = {&f, 1};
    poll_until(c, dlq_has, &u, 10000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.attempts[0], INT_MAX); /* saturated, never negative */
    hd_consumer_close(c);
    dead_letter dl;
    assert_true(dlq_get(&f, &dl));
    assert_string_equal(dl.message_id, "m-forged");
    assert_int_equal(dl.attempts, INT_MAX);
    assert_string_equal(dl.reason, "still failing");
    /* Nothing was left waiting in a tier. */
    assert_int_equal(queue_depth(&f, names.tiers[0]), 0);
    assert_int_equal(queue_depth(&f, names.tiers[1]), 0);
    fixture_close(&f);
}

/* A dead letter the broker returns (the DLQ is gone) is not a dead letter: the original is
 * handed back, unacked, and goes to the DLQ once it exists again. */
static void a_returned_forward_leaves_the_original_unacked(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 3);
    hd_error err;
    char dlq[300];
    hd_retry_dlq_name(dlq, sizeof dlq, f.queue);
    assert_hd_err(HD_OK, hd_queue_delete(f.admin, dlq, NULL, &err), &err);

    seen s = {.reject = 1};
    hd_consumer_options o = {.queue = f.queue, .handler = handler, .ctx = &s, .retry = &f.policy};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(f.url, &o, &c, &err), &err);
    publish(&f, "{\"customer\":7}", "m-returned");
    int rc = 0;
    int64_t end = hd_clock_ms() + 5000;
    while (rc == 0 && hd_clock_ms() < end)
        rc = hd_consumer_poll(c, 100, &err);
    assert_hd(HD_ERETURNED, rc);
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "312 NO_ROUTE"));
    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.dead, 0);
    assert_int_equal(n.acked, 0);
    assert_int_equal(n.requeued, 1);

    /* The DLQ is back: the requeued original now becomes a dead letter. */
    assert_hd_err(HD_OK, hd_consumer_declare(f.admin, f.queue, &f.policy, &err), &err);
    until_dead u = {&f, 1};
    poll_until(c, dlq_has, &u, 5000);
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.dead, 1);
    hd_consumer_close(c);
    assert_int_equal(queue_depth(&f, f.queue), 0);
    dead_letter d;
    assert_true(dlq_get(&f, &d));
    assert_string_equal(d.message_id, "m-returned");
    fixture_close(&f);
}

/* A TCP relay between the consumer and the broker that can hold back what the broker sends on
 * one connection: its confirms then never arrive, while everything else works. */
typedef struct proxy {
    int lfd;
    int port;
    struct sockaddr_in broker;
    atomic_int held; /* index of the connection whose broker->client bytes wait; -1 none */
    atomic_int stop;
    atomic_int accepted;
    pthread_t thread;
} proxy;

#define PROXY_MAX 8

static int write_all(int fd, const char *b, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, (size_t)n);
        if (w <= 0)
            return -1;
        b += w;
        n -= w;
    }
    return 0;
}

static void *proxy_run(void *arg)
{
    proxy *px = arg;
    int cli[PROXY_MAX], srv[PROXY_MAX], n = 0;
    char buf[65536];
    while (!atomic_load(&px->stop)) {
        struct pollfd fds[1 + 2 * PROXY_MAX];
        int nf = 0;
        fds[nf++] = (struct pollfd){.fd = px->lfd, .events = POLLIN};
        int held = atomic_load(&px->held);
        for (int i = 0; i < n; i++) {
            fds[nf++] = (struct pollfd){.fd = cli[i], .events = cli[i] >= 0 ? POLLIN : 0};
            fds[nf++] = (struct pollfd){.fd = srv[i], .events = i == held ? 0 : POLLIN};
        }
        if (poll(fds, (nfds_t)nf, 20) <= 0)
            continue;
        if ((fds[0].revents & POLLIN) && n < PROXY_MAX) {
            int c = accept(px->lfd, NULL, NULL);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (c >= 0 && s >= 0 &&
                connect(s, (struct sockaddr *)&px->broker, sizeof px->broker) == 0) {
                cli[n] = c;
                srv[n] = s;
                n++;
                atomic_fetch_add(&px->accepted, 1);
            }
        }
        for (int i = 0; i < n; i++) {
            struct pollfd *pc = &fds[1 + 2 * i], *ps = &fds[2 + 2 * i];
            if (cli[i] < 0)
                continue;
            ssize_t r = 1;
            if (pc->revents & (POLLIN | POLLHUP | POLLERR)) {
                r = read(cli[i], buf, sizeof buf);
                if (r > 0)
                    r = write_all(srv[i], buf, r) == 0 ? 1 : 0;
            }
            if (r > 0 && (ps->revents & (POLLIN | POLLHUP | POLLERR))) {
                r = read(srv[i], buf, sizeof buf);
                if (r > 0)
                    r = write_all(cli[i], buf, r) == 0 ? 1 : 0;
            }
            if (r <= 0) {
                close(cli[i]);
                close(srv[i]);
                cli[i] = srv[i] = -1;
            }
        }
    }
    for (int i = 0; i < n; i++)
        if (cli[i] >= 0) {
            close(cli[i]);
            close(srv[i]);
        }
    return NULL;
}

/* Start a proxy in front of the broker of url; *proxy_url gets the URL to use instead. */
static void proxy_start(proxy *px, const char *url, char *proxy_url, size_t cap)
{
    hd_amqp_url u;
    hd_error err;
    assert_hd_err(HD_OK, hd_amqp_url_parse(url, &u, &err), &err);
    assert_false(u.tls);
    assert_string_equal(u.vhost, "/"); /* the test servers' */
    memset(px, 0, sizeof *px);
    atomic_init(&px->held, -1);
    atomic_init(&px->stop, 0);
    atomic_init(&px->accepted, 0);
    px->broker.sin_family = AF_INET;
    px->broker.sin_port = htons((uint16_t)u.port);
    assert_int_equal(inet_pton(AF_INET, strcmp(u.host, "localhost") == 0 ? "127.0.0.1" : u.host,
                               &px->broker.sin_addr),
                     1);
    px->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(px->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(px->lfd, 8), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(px->lfd, (struct sockaddr *)&a, &len), 0);
    px->port = ntohs(a.sin_port);
    snprintf(proxy_url, cap, "amqp://%s:%s@127.0.0.1:%d/", u.user, u.password, px->port);
    assert_int_equal(pthread_create(&px->thread, NULL, proxy_run, px), 0);
}

static void proxy_stop(proxy *px)
{
    atomic_store(&px->stop, 1);
    pthread_join(px->thread, NULL);
    close(px->lfd);
}

/* The broker takes the dead letter but its confirm does not come in time: the original must
 * not be acked. When the late confirm does come, it settles that copy and is not taken for
 * the next forward's. */
static void a_forward_without_a_confirm_leaves_the_original_unacked(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, 3);
    hd_error err;
    proxy px;
    char url[600];
    proxy_start(&px, f.url, url, sizeof url);

    seen s = {.reject = 1};
    hd_consumer_options o = {.queue = f.queue,
                             .handler = handler,
                             .ctx = &s,
                             .retry = &f.policy,
                             .confirm_timeout_ms = 300};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &c, &err), &err);
    /* hd_consumer_open connects the consuming connection first, the publishing one second. */
    assert_int_equal(atomic_load(&px.accepted), 2);
    atomic_store(&px.held, 1);

    publish(&f, "{\"customer\":8}", "m-late");
    int rc = 0;
    int64_t end = hd_clock_ms() + 5000;
    while (rc == 0 && hd_clock_ms() < end)
        rc = hd_consumer_poll(c, 100, &err);
    assert_hd(HD_ETIMEOUT, rc);
    print_message("    error: %s\n", err.text);
    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.dead, 0);
    assert_int_equal(n.acked, 0);
    assert_int_equal(n.requeued, 1);

    /* The confirms flow again: the redelivered original is dead-lettered (a second copy: the
     * first was stored, only its confirm was late — at least once, never zero times). */
    atomic_store(&px.held, -1);
    until_dead u = {&f, 2};
    poll_until(c, dlq_has, &u, 5000);
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.dead, 1);
    assert_int_equal(n.delivered, 2);
    hd_consumer_close(c);
    proxy_stop(&px);
    assert_int_equal(queue_depth(&f, f.queue), 0);
    for (int i = 0; i < 2; i++) {
        dead_letter d;
        assert_true(dlq_get(&f, &d));
        assert_string_equal(d.message_id, "m-late");
    }
    fixture_close(&f);
}

/* ---- the dead-letter queue's TTL ---------------------------------------------------- */

/* The broker refuses (406) a declaration whose arguments differ from the queue's, and
 * accepts one that matches: that tells the TTL the DLQ was declared with. */
static int dlq_declared_with_ttl(fixture *f, int64_t ttl_ms)
{
    char dlq[HD_AMQP_NAME_MAX + 1];
    assert_hd(HD_OK, hd_retry_dlq_name(dlq, sizeof dlq, f->queue));
    hd_queue_spec q = {.name = dlq, .durable = 1, .message_ttl_ms = ttl_ms};
    hd_error err;
    int rc = hd_queue_declare(f->admin, &q, NULL, &err);
    if (rc < 0)
        assert_int_equal(hd_amqp_last_reply_code(f->admin), 406);
    return rc == 0;
}

static void the_dlq_has_a_message_ttl(void **state)
{
    (void)state;
    fixture f;
    /* The default: a day. */
    fixture_open(&f, 1);
    assert_false(dlq_declared_with_ttl(&f, 0)); /* no TTL: refused, so it has one */
    assert_true(dlq_declared_with_ttl(&f, HD_RETRY_DLQ_TTL_DEFAULT_MS));
    fixture_close(&f);

    /* A short one: a dead letter is gone once it expired. */
    f.url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    f.queue = hd_test_unique_name("retry-ttl");
    memset(&f.policy, 0, sizeof f.policy);
    f.policy.max_attempts = 1;
    f.policy.ntiers = 1;
    f.policy.tier_ms[0] = 200;
    f.policy.dlq_ttl_ms = 300;
    assert_hd_err(HD_OK, hd_amqp_open(f.url, NULL, &f.admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(f.admin, f.queue, &f.policy, &err), &err);
    assert_hd_err(HD_OK, hd_publisher_new(f.admin, NULL, &f.pub, &err), &err);
    assert_true(dlq_declared_with_ttl(&f, 300));
    char dlq[HD_AMQP_NAME_MAX + 1];
    assert_hd(HD_OK, hd_retry_dlq_name(dlq, sizeof dlq, f.queue));
    hd_message m = {.exchange = "", .routing_key = dlq, .body = "{}", .len = 2};
    assert_hd_err(HD_OK, hd_publish_confirmed(f.pub, &m, 5000, &err), &err);
    assert_int_equal(queue_depth(&f, dlq), 1);
    int64_t t0 = hd_clock_ms();
    while (queue_depth(&f, dlq) != 0 && hd_clock_ms() - t0 < 5000)
        hd_sleep_ms(50);
    assert_int_equal(queue_depth(&f, dlq), 0);
    assert_true(hd_clock_ms() - t0 >= 200);
    fixture_close(&f);

    /* Negative: no TTL at all. */
    f.queue = hd_test_unique_name("retry-ttl");
    f.policy.dlq_ttl_ms = -1;
    assert_hd_err(HD_OK, hd_amqp_open(f.url, NULL, &f.admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(f.admin, f.queue, &f.policy, &err), &err);
    assert_hd_err(HD_OK, hd_publisher_new(f.admin, NULL, &f.pub, &err), &err);
    assert_true(dlq_declared_with_ttl(&f, 0));
    fixture_close(&f);
}

/* A DLQ declared before it had a TTL: the broker cannot change its arguments, and the
 * consumer must still start (retry.h: a policy or a redeclare gives it the TTL). */
static void an_existing_dlq_without_ttl_is_kept(void **state)
{
    (void)state;
    fixture f;
    hd_error err;
    f.url = hd_test_require_env("HD_AMQP_URL");
    f.queue = hd_test_unique_name("retry-old");
    memset(&f.policy, 0, sizeof f.policy);
    f.policy.max_attempts = 2;
    f.policy.ntiers = 1;
    f.policy.tier_ms[0] = 200;
    assert_hd_err(HD_OK, hd_amqp_open(f.url, NULL, &f.admin, &err), &err);
    char dlq[HD_AMQP_NAME_MAX + 1];
    assert_hd(HD_OK, hd_retry_dlq_name(dlq, sizeof dlq, f.queue));
    hd_queue_spec old = {.name = dlq, .durable = 1};
    assert_hd_err(HD_OK, hd_queue_declare(f.admin, &old, NULL, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(f.admin, f.queue, &f.policy, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(f.admin, f.queue, &f.policy, &err), &err);
    assert_hd_err(HD_OK, hd_publisher_new(f.admin, NULL, &f.pub, &err), &err);
    assert_true(dlq_declared_with_ttl(&f, 0)); /* kept as it was */
    publish(&f, "{}", "m-old");                /* and the rest of the topology works */
    assert_int_equal(queue_depth(&f, f.queue), 1);
    fixture_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tiers_delay_then_dead_after_n),
        cmocka_unit_test(retry_then_success),
        cmocka_unit_test(reject_is_dead_at_once),
        cmocka_unit_test(undecodable_messages_skip_the_retries),
        cmocka_unit_test(batch_mode_acks_a_window_at_once),
        cmocka_unit_test(forwards_keep_table_headers_exactly),
        cmocka_unit_test(forged_xdeath_goes_to_the_dlq),
        cmocka_unit_test(a_returned_forward_leaves_the_original_unacked),
        cmocka_unit_test(a_forward_without_a_confirm_leaves_the_original_unacked),
        cmocka_unit_test(the_dlq_has_a_message_ttl),
        cmocka_unit_test(an_existing_dlq_without_ttl_is_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
