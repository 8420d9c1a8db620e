/* Integration: herald-admin dlq against a real broker. A consumer whose handler always fails
 * dead-letters poison messages of two kinds after one retry; `dlq list` shows two groups with their
 * counts and leaves the messages where they were; `replay --dry-run` changes nothing; a filtered
 * replay at a rate takes the time the rate says and the messages come back to the work
 * queue with their message id and x-herald-replay-count 1, at attempt 1 (x-death left
 * out: a fresh retry budget); once dead again, a replay past --max-replays is refused and leaves
 * them in the DLQ; purge refuses without --yes and deletes with it. Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "admin/admin.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/config.h"
#include "herald/consumer.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#define TYPE_A "order.placed"
#define TYPE_B "order.cancelled"

typedef struct seen {
    int calls;
    char ids[8][64];
    char replay_count[8][16];
    int attempt[8];
    int has_reason_header[8];
} seen;

typedef struct fixture {
    const char *url;
    char *queue;
    char dlq[HD_AMQP_NAME_MAX + 1];
    hd_retry_policy policy;
    hd_amqp *a;
    hd_publisher *pub;
    hd_config *cfg;
    seen seen;
} fixture;

static fixture F;

/* ---- running the command ---------------------------------------------------------------- */

typedef struct result {
    int rc;
    char *out; /* new */
    char *err; /* new */
    json_t *json;
} result;

static void result_free(result *r)
{
    free(r->out);
    free(r->err);
    json_decref(r->json);
}

/* herald-admin [--json] dlq ARGS... (NULL-terminated). */
static result run(int json, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"dlq";
    va_list ap;
    va_start(ap, json);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    result r = {0};
    size_t on = 0, en = 0;
    admin_io io = {
        .out = open_memstream(&r.out, &on), .err = open_memstream(&r.err, &en), .json = json};
    assert_non_null(io.out);
    assert_non_null(io.err);
    int64_t t0 = hd_clock_ms();
    r.rc = admin_dlq(F.cfg, argc, argv, &io);
    fclose(io.out);
    fclose(io.err);
    fprintf(stderr, "$ herald-admin %sdlq", json ? "--json " : "");
    for (int i = 1; i < argc; i++)
        fprintf(stderr, " %s", argv[i]);
    fprintf(stderr, "   -> %d (%" PRId64 " ms)\n%s%s", r.rc, hd_clock_ms() - t0, r.out, r.err);
    if (json && r.rc != ADMIN_USAGE) {
        json_error_t je;
        r.json = json_loads(r.out, 0, &je);
        if (r.json == NULL)
            fail_msg("not JSON: %s\n%s", je.text, r.out);
    }
    return r;
}

static void iso(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer '%s'", key);
    return json_integer_value(v);
}

static json_t *group_of_type(json_t *doc, const char *type)
{
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(doc, "groups"), i, g)
    {
        if (strcmp(json_string_value(json_object_get(g, "type")), type) == 0)
            return g;
    }
    fail_msg("no group of type %s", type);
    return NULL;
}

/* ---- the broker side -------------------------------------------------------------------- */

static uint32_t depth(const char *queue)
{
    hd_error err;
    hd_queue_info info;
    assert_hd_err(HD_OK, hd_queue_inspect(F.a, queue, &info, &err), &err);
    return info.message_count;
}

/* Wait (briefly) for a queue to reach n ready messages: messages handed back by a closed
 * channel are requeued by the broker, which the next passive declare may beat by a hair. */
static void expect_depth(const char *queue, uint32_t n)
{
    int64_t end = hd_clock_ms() + 3000;
    uint32_t d;
    while ((d = depth(queue)) != n && hd_clock_ms() < end)
        hd_sleep_ms(20);
    if (d != n)
        fail_msg("queue %s holds %u messages, expected %u", queue, d, n);
}

/* One event: a CloudEvents-like JSON body whose "time" (when not NULL) is what `dlq list`
 * shows as seen, or an AMQP timestamp property (when ts > 0), which wins over the body. */
static void publish(const char *type, const char *id, const char *time, uint64_t ts)
{
    hd_error err;
    char body[192];
    if (time != NULL)
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"id\":\"%s\",\"time\":\"%s\"}", type, id,
                 time);
    else
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"id\":\"%s\"}", type, id);
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_TIMESTAMP_FLAG;
    props.timestamp = ts;
    hd_message m = {.exchange = "",
                    .routing_key = F.queue,
                    .body = body,
                    .len = strlen(body),
                    .type = type,
                    .message_id = id,
                    .content_type = "application/json",
                    .raw_properties = ts > 0 ? &props : NULL};
    assert_hd_err(HD_OK, hd_publish_confirmed(F.pub, &m, 5000, &err), &err);
}

static hd_consume_result fail_always(void *ctx, const hd_delivery *d)
{
    seen *s = ctx;
    if (s->calls < 8) {
        snprintf(s->ids[s->calls], sizeof s->ids[0], "%s", d->message_id ? d->message_id : "");
        const char *rc = hd_delivery_header(d, "x-herald-replay-count");
        snprintf(s->replay_count[s->calls], sizeof s->replay_count[0], "%s", rc ? rc : "");
        s->attempt[s->calls] = d->attempt;
        s->has_reason_header[s->calls] = hd_delivery_header(d, HD_HEADER_REASON) != NULL;
    }
    s->calls++;
    if (d->type != NULL && strcmp(d->type, TYPE_A) == 0)
        hd_delivery_reason(d, "no such customer");
    else
        hd_delivery_reason(d, "unknown order");
    return HD_CONSUME_RETRY;
}

/* Consume the work queue with the rejecting handler until the DLQ holds `dead` messages. */
static void dead_letter_until(uint32_t dead)
{
    hd_error err;
    hd_consumer *c = NULL;
    memset(&F.seen, 0, sizeof F.seen);
    hd_consumer_options co = {
        .queue = F.queue, .handler = fail_always, .ctx = &F.seen, .retry = &F.policy};
    assert_hd_err(HD_OK, hd_consumer_open(F.url, &co, &c, &err), &err);
    int64_t end = hd_clock_ms() + 10000;
    while (depth(F.dlq) < dead) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_consumer_poll(c, 50, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    hd_consumer_close(c);
}

static int setup(void **state)
{
    (void)state;
    hd_error err;
    memset(&F, 0, sizeof F);
    F.url = hd_test_require_env("HD_AMQP_URL");
    F.queue = hd_test_unique_name("admin-dlq");
    assert_hd(HD_OK, hd_retry_dlq_name(F.dlq, sizeof F.dlq, F.queue));
    F.policy.max_attempts = 2; /* one retry (an x-death entry), then the DLQ */
    F.policy.ntiers = 1;
    F.policy.tier_ms[0] = 200;
    F.policy.dlq_ttl_ms = -1;
    assert_hd_err(HD_OK, hd_amqp_open(F.url, NULL, &F.a, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(F.a, F.queue, &F.policy, &err), &err);
    assert_hd_err(HD_OK, hd_publisher_new(F.a, NULL, &F.pub, &err), &err);
    F.cfg = hd_config_new_empty();
    assert_non_null(F.cfg);
    assert_int_equal(0, hd_config_set(F.cfg, "HD_AMQP_URL", F.url));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hd_error err;
    hd_publisher_free(F.pub);
    assert_hd_err(HD_OK, hd_consumer_undeclare(F.a, F.queue, &F.policy, &err), &err);
    hd_amqp_close(F.a);
    hd_config_free(F.cfg);
    free(F.queue);
    return 0;
}

/* ---- the story -------------------------------------------------------------------------- */

static void test_list_replay_purge(void **state)
{
    (void)state;
    publish(TYPE_A, "a-1", "2026-01-01T10:00:00Z", 0);
    publish(TYPE_B, "b-1", "2030-01-01T00:00:00Z", 1767261600); /* the property wins */
    publish(TYPE_A, "a-2", "2026-01-01T12:30:00.250+01:00", 0); /* 11:30:00Z */
    publish(TYPE_B, "b-2", NULL, 0);                            /* no time: x-death's */
    publish(TYPE_A, "a-3", "2026-01-01T10:30:00Z", 0);
    dead_letter_until(5);
    expect_depth(F.queue, 0);

    /* list: two groups, and every message still there afterwards. */
    result r = run(0, "list", F.queue, NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_non_null(strstr(r.out, "5 dead letters in 2 groups"));
    result_free(&r);
    r = run(1, "list", F.queue, NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_int_equal(5, jint(r.json, "read"));
    assert_true(json_is_true(json_object_get(r.json, "complete")));
    assert_int_equal(2, json_array_size(json_object_get(r.json, "groups")));
    json_t *ga = group_of_type(r.json, TYPE_A), *gb = group_of_type(r.json, TYPE_B);
    assert_int_equal(3, jint(ga, "count"));
    assert_string_equal("no such customer", json_string_value(json_object_get(ga, "reason")));
    assert_int_equal(2, jint(gb, "count"));
    assert_string_equal("unknown order", json_string_value(json_object_get(gb, "reason")));
    assert_string_equal("2026-01-01T10:00:00Z",
                        json_string_value(json_object_get(ga, "first_seen")));
    assert_string_equal("2026-01-01T11:30:00Z",
                        json_string_value(json_object_get(ga, "last_seen")));
    assert_string_equal("2026-01-01T10:00:00Z",
                        json_string_value(json_object_get(gb, "first_seen")));
    /* b-2 has no time of its own: the time of its x-death entry (its retry, just now). */
    char lo[32], hi[32];
    iso(time(NULL) - 120, lo);
    iso(time(NULL) + 120, hi);
    const char *b_last = json_string_value(json_object_get(gb, "last_seen"));
    assert_non_null(b_last);
    assert_true(strcmp(b_last, lo) > 0 && strcmp(b_last, hi) < 0);
    result_free(&r);
    expect_depth(F.dlq, 5);

    /* --limit bounds what list reads, and says so. */
    r = run(1, "list", F.queue, "--limit", "2", NULL);
    assert_int_equal(2, jint(r.json, "read"));
    assert_true(json_is_false(json_object_get(r.json, "complete")));
    result_free(&r);
    expect_depth(F.dlq, 5);

    /* Dry run: says 3, changes nothing. */
    r = run(1, "replay", F.queue, "--type", TYPE_A, "--dry-run", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_int_equal(3, jint(r.json, "replayed"));
    assert_true(json_is_true(json_object_get(r.json, "dry_run")));
    result_free(&r);
    r = run(0, "replay", F.queue, "--type", TYPE_A, "--dry-run", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_non_null(strstr(r.out, ": 3 would be replayed, 0 refused"));
    result_free(&r);
    expect_depth(F.dlq, 5);
    expect_depth(F.queue, 0);

    /* Replay one group at 5 per second: three messages go at 0, 200 and 400 ms. */
    int64_t t0 = hd_clock_ms();
    r = run(1, "replay", F.queue, "--type", TYPE_A, "--reason", "no such customer", "--rate", "5",
            NULL);
    int64_t took = hd_clock_ms() - t0;
    assert_int_equal(ADMIN_OK, r.rc);
    assert_int_equal(3, jint(r.json, "replayed"));
    assert_int_equal(0, jint(r.json, "refused"));
    result_free(&r);
    assert_true(took >= 390);
    assert_true(took < 3000);
    expect_depth(F.dlq, 2);
    expect_depth(F.queue, 3);

    /* They arrive with their ids, in order, replay count 1, first attempt again. The
     * consumer dead-letters them once more. */
    dead_letter_until(5);
    assert_int_equal(6, F.seen.calls); /* attempt 1 of each, then their retries */
    const char *ids[] = {"a-1", "a-2", "a-3"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(ids[i], F.seen.ids[i]);
        assert_string_equal("1", F.seen.replay_count[i]);
        assert_int_equal(1, F.seen.attempt[i]);
        assert_true(F.seen.has_reason_header[i]);
    }

    /* With --max-replays 1 they have had their replay: refused, left in the DLQ. */
    r = run(1, "replay", F.queue, "--type", TYPE_A, "--max-replays", "1", NULL);
    assert_int_equal(ADMIN_FAILED, r.rc);
    assert_int_equal(0, jint(r.json, "replayed"));
    assert_int_equal(3, jint(r.json, "refused"));
    assert_non_null(strstr(r.err, "3 messages refused"));
    result_free(&r);
    expect_depth(F.dlq, 5);
    expect_depth(F.queue, 0);

    /* Purge: nothing without --yes (and it says how many), then a group, then the rest. */
    r = run(0, "purge", F.queue, "--type", TYPE_B, NULL);
    assert_int_equal(ADMIN_USAGE, r.rc);
    assert_non_null(strstr(r.err, "2 dead letters"));
    result_free(&r);
    expect_depth(F.dlq, 5);
    r = run(1, "purge", F.queue, "--type", TYPE_B, "--yes", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_int_equal(2, jint(r.json, "purged"));
    result_free(&r);
    expect_depth(F.dlq, 3);
    r = run(0, "list", F.queue, NULL);
    assert_non_null(strstr(r.out, "3 dead letters in 1 group"));
    result_free(&r);
    r = run(0, "purge", F.queue, "--yes", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_non_null(strstr(r.out, ".dlq: 3 purged, 0 left of 3 read"));
    result_free(&r);
    expect_depth(F.dlq, 0);
    expect_depth(F.queue, 0);
}

static void test_usage(void **state)
{
    (void)state;
    result r = run(0, "--help", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_non_null(strstr(r.out, "dlq replay"));
    result_free(&r);
    r = run(0, "replay", "--help", NULL);
    assert_int_equal(ADMIN_OK, r.rc);
    assert_non_null(strstr(r.out, "--max-replays"));
    result_free(&r);
    r = run(0, "replay", F.queue, "--rate", "fast", NULL);
    assert_int_equal(ADMIN_USAGE, r.rc);
    result_free(&r);
    r = run(0, "list", NULL);
    assert_int_equal(ADMIN_USAGE, r.rc);
    result_free(&r);
    r = run(0, "list", "no-such-queue-for-herald-admin", NULL);
    assert_int_equal(ADMIN_FAILED, r.rc);
    assert_non_null(strstr(r.err, "no queue"));
    result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_list_replay_purge),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
