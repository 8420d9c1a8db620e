/* Integration: what pub/sub does not promise, counted. The same N events go to one
 * subscriber that is DOWN while events [DOWN_FROM, DOWN_TO) are sent, twice:
 *
 *   Redis     hd_bus_send on the Redis pub/sub bus (bus_redis.h) -> the subscriber's bus
 *   RabbitMQ  the transactional outbox (outbox.h) -> the relay (relay.h) -> a durable queue
 *             -> the subscriber's RabbitMQ bus (bus_rabbit.h) -> the inbox (inbox.h)
 *
 * In both, the subscriber's effect is one row per message id, written through the inbox in
 * the transaction that accepts the id (so a redelivery is skipped, never applied twice), and
 * "restarting" the subscriber is what a deploy does: the old bus is freed, a new one made,
 * registered and started. One delivery of the queue flow is handled and then not
 * acknowledged (its handler answers RETRY after its commit, as a crash between commit and
 * ack would leave it): the broker delivers it again and the inbox skips it.
 *
 * Pinned: Redis loses exactly the events sent while the subscriber was down, and its
 * publisher is told nobody heard them (PUBLISH answered 0); the queue flow loses 0 and
 * applies nothing twice. Needs HD_REDIS_URL and HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/bus_rabbit.h"
#include "herald/bus_redis.h"
#include "herald/clock.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

#define N         40
#define DOWN_FROM 15
#define DOWN_TO   27 /* 12 events sent while the subscriber is down */
#define TYPE      "chat.message_posted"

static const char *const effects_schema[] = {
    "CREATE TABLE received (message_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
};

typedef struct subscriber {
    hd_store *store;
    int deliveries;   /* handler calls */
    int skipped;      /* of them, duplicates the inbox skipped */
    int fail_once_at; /* 1-based delivery number to answer RETRY after the commit; 0 = none */
} subscriber;

static int64_t count_rows(hd_store *store, const char *sql)
{
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_query(store, sql, NULL, 0, &rows, &err), &err);
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

/* The subscriber's handler: inbox + effect in one transaction. */
static hd_consume_result on_message(void *ctx, const hd_delivery *d)
{
    subscriber *s = ctx;
    hd_error err;
    s->deliveries++;
    assert_non_null(d->message_id);
    json_error_t jerr;
    json_t *body = json_loadb(d->body, d->body_len, 0, &jerr);
    assert_non_null(body);
    json_int_t seq = json_integer_value(json_object_get(json_object_get(body, "data"), "seq"));
    json_decref(body);

    assert_hd_err(HD_OK, hd_store_begin(s->store, &err), &err);
    int fresh = hd_inbox_accept(s->store, "archive", d->message_id, &err);
    assert_true(fresh >= 0);
    if (fresh == 1) {
        hd_value p[] = {hd_value_text(d->message_id), hd_value_int(seq)};
        assert_hd_err(HD_OK,
                      hd_store_exec(s->store,
                                    "INSERT INTO received(message_id, seq) VALUES ($1, $2)", p, 2,
                                    &err) < 0
                          ? -1
                          : HD_OK,
                      &err);
    } else {
        s->skipped++;
    }
    assert_hd_err(HD_OK, hd_store_commit(s->store, &err), &err);
    if (s->deliveries == s->fail_once_at)
        return HD_CONSUME_RETRY; /* committed, not acknowledged */
    return HD_CONSUME_OK;
}

static void subscriber_open(subscriber *s)
{
    hd_error err;
    memset(s, 0, sizeof *s);
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &s->store, &err), &err);
    assert_true(hd_store_migrate(s->store, "archive", effects_schema, 1, &err) >= 0);
    assert_true(hd_inbox_migrate(s->store, &err) >= 0);
}

static int64_t effects(const subscriber *s)
{
    return count_rows(s->store, "SELECT COUNT(*) FROM received");
}

/* Poll bus until the subscriber has `want` effects, or until 10 s pass; then a little more
 * for anything late (a redelivery, a duplicate). */
static void poll_until(hd_bus *bus, subscriber *s, int64_t want, int settle_ms)
{
    hd_error err;
    int64_t end = hd_clock_ms() + 10000;
    while (effects(s) < want && hd_clock_ms() < end) {
        int rc = hd_bus_poll(bus, 100, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    int64_t settle = hd_clock_ms() + settle_ms;
    while (hd_clock_ms() < settle)
        assert_true(hd_bus_poll(bus, 50, &err) >= 0);
}

static hd_envelope *event(int seq)
{
    hd_envelope *env =
        hd_envelope_new(TYPE, 1, "/chat", json_pack("{s:i, s:s}", "seq", seq, "room", "lobby"));
    assert_non_null(env);
    return env;
}

/* How many of 1..N the subscriber's table lacks (lost) and holds more than once (can only
 * be 0: message_id is its primary key; the inbox is what keeps the insert from failing). */
static void report(const char *name, const subscriber *s, int64_t *lost)
{
    int64_t distinct = count_rows(s->store, "SELECT COUNT(DISTINCT seq) FROM received");
    *lost = N - distinct;
    int64_t dup_effects = effects(s) - distinct;
    printf("    %-8s sent %d, subscriber down for %d of them: received %lld, lost %lld, "
           "duplicate deliveries %d (skipped by the inbox), duplicate effects %lld\n",
           name, N, DOWN_TO - DOWN_FROM, (long long)distinct, (long long)*lost, s->skipped,
           (long long)dup_effects);
    assert_int_equal(dup_effects, 0);
}

static hd_bus *redis_subscriber(const char *url, const char *topic, subscriber *s)
{
    hd_error err;
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &bus, &err), &err);
    const char *types[] = {TYPE};
    assert_hd_err(HD_OK, hd_bus_register(bus, "archive", topic, types, 1, on_message, s, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);
    return bus;
}

static void redis_pubsub_loses_what_is_sent_while_the_subscriber_is_down(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_REDIS_URL");
    char *topic = hd_test_unique_name("chat");
    subscriber s;
    subscriber_open(&s);
    hd_bus *pub = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &pub, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(pub, &err), &err);

    hd_bus *sub = redis_subscriber(url, topic, &s);
    for (int i = 1; i <= N; i++) {
        if (i == DOWN_FROM) {
            /* Everything sent so far is handled, then the subscriber goes away. */
            poll_until(sub, &s, DOWN_FROM - 1, 0);
            hd_bus_free(sub);
            sub = NULL;
        }
        if (i == DOWN_TO) /* back: subscribed again when startup returns */
            sub = redis_subscriber(url, topic, &s);
        hd_envelope *env = event(i);
        assert_hd_err(HD_OK, hd_bus_send(pub, topic, env, &err), &err);
        hd_envelope_free(env);
    }
    poll_until(sub, &s, N - (DOWN_TO - DOWN_FROM), 300);

    int64_t lost;
    report("redis", &s, &lost);
    hd_bus_redis_counts pc;
    hd_bus_redis_get_counts(pub, &pc);
    printf("    redis    the publisher: %llu PUBLISHes accepted, %llu of them heard by nobody\n",
           (unsigned long long)pc.sent, (unsigned long long)pc.sent_unheard);
    assert_int_equal(lost, DOWN_TO - DOWN_FROM); /* exactly the window, silently */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM received WHERE seq >= %d AND seq < %d",
             DOWN_FROM, DOWN_TO);
    assert_int_equal(count_rows(s.store, sql), 0); /* the lost ones are the window's */
    assert_int_equal(pc.sent, N);
    assert_int_equal(pc.sent_unheard, DOWN_TO - DOWN_FROM);
    assert_int_equal(s.skipped, 0); /* and nothing twice: at most once */

    hd_bus_free(sub);
    hd_bus_free(pub);
    hd_store_close(s.store);
    free(topic);
}

static hd_bus *rabbit_subscriber(const char *url, const char *topic, subscriber *s)
{
    hd_error err;
    hd_retry_policy policy = {.max_attempts = 3, .ntiers = 1, .tier_ms = {200}};
    hd_bus_rabbit_options o = {.retry = &policy, .prefetch = 10};
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_rabbit_new(url, &o, &bus, &err), &err);
    const char *types[] = {TYPE};
    assert_hd_err(HD_OK, hd_bus_register(bus, "archive", topic, types, 1, on_message, s, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);
    return bus;
}

/* The producer's side of the queue flow: the event goes into the outbox in the business
 * transaction; the relay carries what is pending to the broker. */
static void produce(hd_store *outbox, hd_relay *relay, int seq)
{
    hd_error err;
    hd_envelope *env = event(seq);
    assert_hd_err(HD_OK, hd_store_begin(outbox, &err), &err);
    assert_hd_err(HD_OK, hd_outbox_append(outbox, env, "room", "lobby", &err), &err);
    assert_hd_err(HD_OK, hd_store_commit(outbox, &err), &err);
    hd_envelope_free(env);
    hd_relay_stats cycle;
    int rc = hd_relay_run_once(relay, &cycle, &err);
    assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    assert_int_equal(cycle.confirmed, 1);
}

static void queue_with_outbox_and_inbox_loses_nothing(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *topic = hd_test_unique_name("chat");
    subscriber s;
    subscriber_open(&s);
    s.fail_once_at = 5;

    hd_store *outbox = NULL;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &outbox, &err), &err);
    assert_true(hd_outbox_migrate(outbox, &err) >= 0);
    hd_amqp *amqp = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &amqp, &err), &err);
    hd_relay_options ro = {.exchange = topic, .retention_ms = -1};
    hd_relay *relay = NULL;
    assert_hd_err(HD_OK, hd_relay_new(outbox, amqp, &ro, &relay, &err), &err);

    /* The first start declares the durable queue "<topic>.archive" and its binding: from
     * then on the broker keeps what arrives for it, subscriber up or not. */
    hd_bus *sub = rabbit_subscriber(url, topic, &s);
    for (int i = 1; i <= N; i++) {
        if (i == DOWN_FROM) {
            poll_until(sub, &s, DOWN_FROM - 1, 0);
            hd_bus_free(sub);
            sub = NULL;
        }
        if (i == DOWN_TO)
            sub = rabbit_subscriber(url, topic, &s);
        produce(outbox, relay, i);
    }
    poll_until(sub, &s, N, 600); /* 600 ms: the RETRY's 200 ms tier, redelivered, skipped */

    int64_t lost;
    report("rabbitmq", &s, &lost);
    int64_t pending = -1;
    assert_hd_err(HD_OK, hd_outbox_depth(outbox, &pending, NULL, NULL, &err), &err);
    assert_int_equal(lost, 0);
    assert_int_equal(effects(&s), N);
    assert_int_equal(pending, 0);
    assert_int_equal(s.skipped, 1);        /* the unacknowledged one came back ... */
    assert_int_equal(s.deliveries, N + 1); /* ... once, and was applied once */

    assert_hd_err(HD_OK, hd_bus_rabbit_undeclare(sub, &err), &err);
    hd_bus_free(sub);
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    (void)hd_exchange_delete(admin, topic, NULL);
    hd_amqp_close(admin);
    hd_relay_free(relay);
    hd_amqp_close(amqp);
    hd_store_close(outbox);
    hd_store_close(s.store);
    free(topic);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* bus_redis.h: a write to a closed connection */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(redis_pubsub_loses_what_is_sent_while_the_subscriber_is_down),
        cmocka_unit_test(queue_with_outbox_and_inbox_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
