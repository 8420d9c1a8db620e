/* Integration: retry tiers delay as configured, attempts come from x-death, the dead-letter
 * queue gets what fails N times, what the handler rejects and what does not decode — and the
 * queue keeps flowing. Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tiers_delay_then_dead_after_n),
        cmocka_unit_test(retry_then_success),
        cmocka_unit_test(reject_is_dead_at_once),
        cmocka_unit_test(undecodable_messages_skip_the_retries),
        cmocka_unit_test(batch_mode_acks_a_window_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
