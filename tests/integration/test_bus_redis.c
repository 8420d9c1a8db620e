/* Integration: the Redis pub/sub event bus on a real redis-server (HD_REDIS_URL, with AUTH):
 * an event sent to a topic reaches every registration for its type once (exact types and
 * RabbitMQ-style wildcards), types nobody registered for are dropped, a stop ends an idle
 * wait at once, a wrong password and an absent server fail startup with their own codes, a
 * foreign publisher's plain message is delivered as all body, and a subscription cut by the
 * server is made again — losing what was published meanwhile, which is pub/sub's contract —
 * also across a restart of redis-server (HD_SERVERS_CTL). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/bus_redis.h"
#include "herald/clock.h"

typedef struct inbox {
    int calls;
    char types[8][64];
    char ids[8][64];
    char bodies[8][128];
    int reject;
} inbox;

static hd_consume_result on_event(void *ctx, const hd_delivery *d)
{
    inbox *in = ctx;
    if (in->calls < 8) {
        snprintf(in->types[in->calls], sizeof in->types[0], "%s", d->routing_key);
        snprintf(in->ids[in->calls], sizeof in->ids[0], "%s", d->message_id ? d->message_id : "");
        snprintf(in->bodies[in->calls], sizeof in->bodies[0], "%.*s", (int)d->body_len,
                 (const char *)d->body);
        assert_int_equal(d->redelivered, 0);
        assert_int_equal(d->attempt, 1);
        if (d->envelope != NULL) {
            assert_string_equal(d->message_id, hd_envelope_id(d->envelope));
            assert_string_equal(d->routing_key, hd_envelope_type(d->envelope));
            assert_string_equal(d->content_type, HD_CLOUDEVENTS_MEDIA_TYPE);
        }
    }
    in->calls++;
    return in->reject ? HD_CONSUME_REJECT : HD_CONSUME_OK;
}

static hd_envelope *event(const char *type)
{
    hd_envelope *env = hd_envelope_new(type, 1, "/chat", json_pack("{s:s}", "text", "hello"));
    assert_non_null(env);
    return env;
}

/* Poll until `want` handler calls happened (or fail after 5 s), then a little longer so
 * that anything unexpected arrives too. */
static void poll_for(hd_bus *bus, const int *calls, int want)
{
    hd_error err;
    int64_t end = hd_clock_ms() + 5000;
    while (*calls < want) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_bus_poll(bus, 200, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    for (int i = 0; i < 3; i++)
        assert_true(hd_bus_poll(bus, 50, &err) >= 0);
}

static void bus_delivers_to_each_registration_once(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_REDIS_URL");
    char *topic = hd_test_unique_name("chat");
    hd_registry *reg = hd_registry_new();
    assert_hd(HD_OK, hd_registry_add(reg, "chat.message_posted", 1, NULL, NULL));
    assert_hd(HD_OK, hd_registry_add(reg, "chat.room_opened", 1, NULL, NULL));

    hd_bus_redis_options o = {.registry = reg};
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(url, &o, &bus, &err), &err);
    assert_string_equal(hd_bus_name(bus), "redis");

    inbox room = {0}, audit = {0}, both = {0}, bouncer = {.reject = 1};
    const char *room_types[] = {"chat.message_posted"};
    const char *audit_types[] = {"chat.*"};                       /* a wildcard */
    const char *both_types[] = {"chat.message_posted", "chat.#"}; /* exact and wildcard */
    const char *bouncer_types[] = {"chat.room_opened"};
    assert_hd_err(HD_OK, hd_bus_register(bus, "room", topic, room_types, 1, on_event, &room, &err),
                  &err);
    assert_hd_err(
        HD_OK, hd_bus_register(bus, "audit", topic, audit_types, 1, on_event, &audit, &err), &err);
    assert_hd_err(HD_OK, hd_bus_register(bus, "both", topic, both_types, 2, on_event, &both, &err),
                  &err);
    assert_hd_err(
        HD_OK, hd_bus_register(bus, "bouncer", topic, bouncer_types, 1, on_event, &bouncer, &err),
        &err);
    assert_hd(HD_EEXIST, hd_bus_register(bus, "room", topic, room_types, 1, on_event, &room, &err));
    assert_hd(HD_ESTATE, hd_bus_poll(bus, 0, &err));
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);

    hd_envelope *posted = event("chat.message_posted");
    hd_envelope *opened = event("chat.room_opened");
    hd_envelope *nobody = event("orders.order_placed");
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, posted, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, opened, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, nobody, &err), &err); /* dropped, no error */

    /* room 1 + audit 2 + both 2 + bouncer 1 */
    int64_t end = hd_clock_ms() + 5000;
    while (room.calls + audit.calls + both.calls + bouncer.calls < 6) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_bus_poll(bus, 200, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    for (int i = 0; i < 3; i++)
        assert_true(hd_bus_poll(bus, 50, &err) >= 0);

    assert_int_equal(room.calls, 1);
    assert_string_equal(room.types[0], "chat.message_posted");
    assert_string_equal(room.ids[0], hd_envelope_id(posted));
    assert_int_equal(audit.calls, 2); /* its own copy of both */
    assert_int_equal(both.calls, 2);  /* posted once, though two of its types match it */
    assert_int_equal(bouncer.calls, 1);

    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(bus, &n);
    print_message("    counts: sent %llu unheard %llu received %llu delivered %llu handled %llu "
                  "failed %llu\n",
                  (unsigned long long)n.sent, (unsigned long long)n.sent_unheard,
                  (unsigned long long)n.received, (unsigned long long)n.delivered,
                  (unsigned long long)n.handled, (unsigned long long)n.failed);
    assert_int_equal(n.sent, 3);
    /* orders.order_placed reached the connection all the same: a wildcard registration
     * subscribes the topic's pattern "<topic>:*", and the bus filters. Its copies: posted
     * and opened each by SUBSCRIBE and by PSUBSCRIBE, order_placed by PSUBSCRIBE. */
    assert_int_equal(n.sent_unheard, 0);
    assert_int_equal(n.received, 5);
    assert_int_equal(n.delivered, 6);
    assert_int_equal(n.handled, 5);
    assert_int_equal(n.failed, 1); /* the bouncer's REJECT: counted and gone, no DLQ */
    assert_int_equal(n.undecodable, 0);

    assert_hd_err(HD_OK, hd_bus_shutdown(bus, &err), &err);
    assert_hd(HD_ESTATE, hd_bus_send(bus, topic, posted, &err));
    hd_envelope_free(posted);
    hd_envelope_free(opened);
    hd_envelope_free(nobody);
    hd_bus_free(bus);
    hd_registry_free(reg);
    free(topic);
}

/* A raw connection to the test server, authenticated, for what the bus does not do. */
static redisContext *raw_connect(void)
{
    hd_error err;
    hd_bus_redis_url u;
    assert_hd_err(HD_OK, hd_bus_redis_url_parse(hd_test_require_env("HD_REDIS_URL"), &u, &err),
                  &err);
    redisContext *c = redisConnect(u.host, u.port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    if (u.password[0] != '\0') {
        redisReply *r = redisCommand(c, "AUTH %s", u.password);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    return c;
}

/* A message PUBLISHed by something that is not herald (redis-cli, another language) has no
 * frame: it is all body, with no message id; with no registry nothing else is needed. And a
 * malformed frame is counted and dropped. */
static void foreign_messages_are_all_body(void **state)
{
    (void)state;
    hd_error err;
    char *topic = hd_test_unique_name("chat");
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(hd_test_require_env("HD_REDIS_URL"), NULL, &bus, &err),
                  &err);
    inbox in = {0};
    const char *types[] = {"chat.message_posted"};
    assert_hd_err(HD_OK, hd_bus_register(bus, "room", topic, types, 1, on_event, &in, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);

    redisContext *c = raw_connect();
    char channel[256];
    assert_true(hd_bus_redis_channel(topic, "chat.message_posted", channel, sizeof channel) > 0);
    redisReply *r = redisCommand(c, "PUBLISH %s %s", channel, "{\"text\":\"from redis-cli\"}");
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = redisCommand(c, "PUBLISH %s %s", channel, "herald/1\nid has no colon-space\n\nbody");
    assert_non_null(r);
    freeReplyObject(r);
    redisFree(c);

    poll_for(bus, &in.calls, 1);
    assert_int_equal(in.calls, 1);
    assert_string_equal(in.bodies[0], "{\"text\":\"from redis-cli\"}");
    assert_string_equal(in.ids[0], "");
    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(bus, &n);
    assert_int_equal(n.received, 2);
    assert_int_equal(n.undecodable, 1);
    hd_bus_free(bus);
    free(topic);
}

/* Redis cuts the subscriber's connection (CLIENT KILL, as a restart or a network cut would):
 * the bus subscribes again by itself, and what was published while it was not subscribed is
 * gone — the publisher even sees that nobody received it. */
static void cut_subscription_is_made_again_and_loses_the_gap(void **state)
{
    (void)state;
    hd_error err;
    char *topic = hd_test_unique_name("chat");
    hd_bus *sub = NULL, *pub = NULL;
    const char *url = hd_test_require_env("HD_REDIS_URL");
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &sub, &err), &err);
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &pub, &err), &err);
    inbox in = {0};
    const char *types[] = {"chat.message_posted"};
    assert_hd_err(HD_OK, hd_bus_register(sub, "room", topic, types, 1, on_event, &in, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(sub, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(pub, &err), &err);

    hd_envelope *env = event("chat.message_posted");
    assert_hd_err(HD_OK, hd_bus_send(pub, topic, env, &err), &err);
    poll_for(sub, &in.calls, 1);

    redisContext *c = raw_connect();
    redisReply *r = redisCommand(c, "CLIENT KILL TYPE pubsub");
    assert_non_null(r);
    assert_true(r->integer >= 1);
    freeReplyObject(r);
    redisFree(c);
    /* The subscriber is gone; this one reaches nobody. */
    assert_hd_err(HD_OK, hd_bus_send(pub, topic, env, &err), &err);

    /* The next poll notices, subscribes again, and from then on it receives. */
    assert_true(hd_bus_poll(sub, 500, &err) >= 0);
    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(sub, &n);
    assert_int_equal(n.resubscribed, 1);
    assert_hd_err(HD_OK, hd_bus_send(pub, topic, env, &err), &err);
    poll_for(sub, &in.calls, 2);
    assert_int_equal(in.calls, 2); /* 3 sent, the one in the gap lost */
    hd_bus_redis_get_counts(pub, &n);
    assert_int_equal(n.sent, 3);
    assert_int_equal(n.sent_unheard, 1);

    hd_envelope_free(env);
    hd_bus_free(sub);
    hd_bus_free(pub);
    free(topic);
}

typedef struct bus_runner {
    hd_bus *bus;
    hd_stop stop;
    int rc;
    hd_error err;
} bus_runner;

static void *run_bus(void *arg)
{
    bus_runner *r = arg;
    r->rc = hd_bus_run(r->bus, &r->stop, &r->err);
    return NULL;
}

/* hd_bus_run waits on the subscription's socket and the stop together. */
static void run_stops_at_once_while_idle(void **state)
{
    (void)state;
    hd_error err;
    char *topic = hd_test_unique_name("chat");
    bus_runner r = {0};
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    assert_hd_err(HD_OK, hd_bus_redis_new(hd_test_require_env("HD_REDIS_URL"), NULL, &r.bus, &err),
                  &err);
    inbox in = {0};
    const char *types[] = {"chat.message_posted"};
    assert_hd_err(HD_OK, hd_bus_register(r.bus, "idle", topic, types, 1, on_event, &in, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(r.bus, &err), &err);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_bus, &r), 0);
    hd_sleep_ms(300);
    int64_t t0 = hd_clock_ms();
    hd_stop_request(&r.stop);
    pthread_join(t, NULL);
    int64_t took = hd_clock_ms() - t0;
    print_message("    idle bus: hd_bus_run returned %lld ms after the stop\n", (long long)took);
    assert_true(took < 200);
    assert_hd_err(HD_OK, r.rc, &r.err);
    hd_bus_free(r.bus);
    hd_stop_release(&r.stop);
    free(topic);
}

static atomic_int restart_calls; /* count_call's count (the bus thread writes it) */

static hd_consume_result count_call(void *ctx, const hd_delivery *d)
{
    (void)ctx;
    (void)d;
    atomic_fetch_add(&restart_calls, 1);
    return HD_CONSUME_OK;
}

/* redis-server itself restarts ("$HD_SERVERS_CTL" restart redis) under hd_bus_run: the bus
 * waits for it with backoff, subscribes again, and receives what is published afterwards;
 * a stop still ends it at once. */
static void run_survives_a_server_restart(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_REDIS_URL");
    const char *ctl = hd_test_require_env("HD_SERVERS_CTL");
    char *topic = hd_test_unique_name("chat");
    bus_runner r = {0};
    atomic_store(&restart_calls, 0);
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &r.bus, &err), &err);
    const char *types[] = {"chat.message_posted"};
    assert_hd_err(HD_OK, hd_bus_register(r.bus, "room", topic, types, 1, count_call, NULL, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(r.bus, &err), &err);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_bus, &r), 0);

    hd_bus *pub = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &pub, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(pub, &err), &err);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' restart redis >/dev/null 2>&1", ctl);
    assert_int_equal(system(cmd), 0);

    /* The publisher's connection broke too: its first send reconnects by itself. Publish
     * until the subscriber is back and hears one (it cannot hear those before). */
    hd_envelope *env = event("chat.message_posted");
    int64_t t0 = hd_clock_ms();
    int sent = 0;
    while (atomic_load(&restart_calls) == 0) {
        assert_true(hd_clock_ms() - t0 < 20000);
        assert_hd_err(HD_OK, hd_bus_send(pub, topic, env, &err), &err);
        sent++;
        hd_sleep_ms(100);
    }
    print_message("    resubscribed %lld ms after the restart; %d sent until one was heard\n",
                  (long long)(hd_clock_ms() - t0), sent);
    hd_stop_request(&r.stop);
    pthread_join(t, NULL);
    assert_hd_err(HD_OK, r.rc, &r.err);
    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(r.bus, &n);
    assert_int_equal(n.resubscribed, 1);
    hd_envelope_free(env);
    hd_bus_free(pub);
    hd_bus_free(r.bus);
    hd_stop_release(&r.stop);
    free(topic);
}

/* bus_redis.h, "Threads": one thread sends on the bus while another runs it. */
static void one_thread_sends_while_another_runs(void **state)
{
    (void)state;
    hd_error err;
    char *topic = hd_test_unique_name("chat");
    bus_runner r = {0};
    atomic_store(&restart_calls, 0);
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    assert_hd_err(HD_OK, hd_bus_redis_new(hd_test_require_env("HD_REDIS_URL"), NULL, &r.bus, &err),
                  &err);
    const char *types[] = {"chat.message_posted"};
    assert_hd_err(HD_OK, hd_bus_register(r.bus, "room", topic, types, 1, count_call, NULL, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(r.bus, &err), &err);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_bus, &r), 0);
    hd_envelope *env = event("chat.message_posted");
    for (int i = 0; i < 200; i++)
        assert_hd_err(HD_OK, hd_bus_send(r.bus, topic, env, &err), &err);
    int64_t end = hd_clock_ms() + 5000;
    while (atomic_load(&restart_calls) < 200 && hd_clock_ms() < end) {
        hd_bus_redis_counts n; /* read while the bus thread counts */
        hd_bus_redis_get_counts(r.bus, &n);
        hd_sleep_ms(10);
    }
    hd_stop_request(&r.stop);
    pthread_join(t, NULL);
    assert_hd_err(HD_OK, r.rc, &r.err);
    assert_int_equal(atomic_load(&restart_calls), 200);
    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(r.bus, &n);
    assert_int_equal(n.sent, 200);
    assert_int_equal(n.handled, 200);
    hd_envelope_free(env);
    hd_bus_free(r.bus);
    hd_stop_release(&r.stop);
    free(topic);
}

static void wrong_password_and_no_server_fail_startup(void **state)
{
    (void)state;
    hd_error err;
    hd_bus_redis_url u;
    assert_hd_err(HD_OK, hd_bus_redis_url_parse(hd_test_require_env("HD_REDIS_URL"), &u, &err),
                  &err);
    char url[600];
    snprintf(url, sizeof url, "redis://:not-the-password-x9@%s:%d", u.host, u.port);
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(url, NULL, &bus, &err), &err);
    assert_hd(HD_EAUTH, hd_bus_startup(bus, &err));
    assert_null(strstr(err.text, "not-the-password-x9"));
    assert_int_equal(hd_bus_get_state(bus), HD_BUS_NEW);
    hd_bus_free(bus);

    /* Port 1 on loopback: nobody listens there. */
    hd_bus_redis_options o = {.timeout_ms = 1000};
    assert_hd_err(HD_OK, hd_bus_redis_new("redis://:pw@127.0.0.1:1", &o, &bus, &err), &err);
    assert_hd(HD_ECONNECT, hd_bus_startup(bus, &err));
    hd_bus_free(bus);

    assert_hd(HD_EURL, hd_bus_redis_new("amqp://nope", NULL, &bus, &err));
    assert_null(bus);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* bus_redis.h: a write to a closed connection */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bus_delivers_to_each_registration_once),
        cmocka_unit_test(foreign_messages_are_all_body),
        cmocka_unit_test(cut_subscription_is_made_again_and_loses_the_gap),
        cmocka_unit_test(run_stops_at_once_while_idle),
        cmocka_unit_test(run_survives_a_server_restart),
        cmocka_unit_test(one_thread_sends_while_another_runs),
        cmocka_unit_test(wrong_password_and_no_server_fail_startup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
