/* Integration: the RabbitMQ event bus delivers an event sent to a topic to every consumer
 * registered for its type, drops the types nobody registered for, and dead-letters what a
 * handler rejects. Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/bus_rabbit.h"
#include "herald/clock.h"
#include "herald/topology.h"

typedef struct inbox {
    int calls;
    char types[8][64];
    char ids[8][64];
    int reject;
} inbox;

static hd_consume_result on_event(void *ctx, const hd_delivery *d)
{
    inbox *in = ctx;
    if (in->calls < 8) {
        assert_non_null(d->envelope);
        snprintf(in->types[in->calls], sizeof in->types[0], "%s", hd_envelope_type(d->envelope));
        snprintf(in->ids[in->calls], sizeof in->ids[0], "%s", d->message_id);
        /* The AMQP properties follow the envelope. */
        assert_string_equal(d->message_id, hd_envelope_id(d->envelope));
        assert_string_equal(d->routing_key, hd_envelope_type(d->envelope));
        assert_string_equal(d->content_type, HD_CLOUDEVENTS_MEDIA_TYPE);
    }
    in->calls++;
    if (in->reject) {
        hd_delivery_reason(d, "email address bounced");
        return HD_CONSUME_REJECT;
    }
    return HD_CONSUME_OK;
}

static hd_envelope *event(const char *type)
{
    hd_envelope *env = hd_envelope_new(type, 1, "/users", json_pack("{s:s}", "email", "a@b.c"));
    assert_non_null(env);
    return env;
}

static void bus_delivers_to_each_registered_consumer(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *topic = hd_test_unique_name("users");
    hd_registry *reg = hd_registry_new();
    assert_hd(HD_OK, hd_registry_add(reg, "users.user_registered", 1, NULL, NULL));
    assert_hd(HD_OK, hd_registry_add(reg, "users.user_deleted", 1, NULL, NULL));

    hd_retry_policy policy = {.max_attempts = 2, .ntiers = 1, .tier_ms = {200}};
    hd_bus_rabbit_options o = {.registry = reg, .retry = &policy, .prefetch = 10};
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_rabbit_new(url, &o, &bus, &err), &err);
    assert_string_equal(hd_bus_name(bus), "rabbitmq");

    inbox email = {0}, audit = {0}, bouncer = {.reject = 1};
    const char *email_types[] = {"users.user_registered"};
    const char *audit_types[] = {"users.*"}; /* a topic pattern: every users event */
    const char *bouncer_types[] = {"users.user_deleted"};
    assert_hd_err(
        HD_OK, hd_bus_register(bus, "email", topic, email_types, 1, on_event, &email, &err), &err);
    assert_hd_err(
        HD_OK, hd_bus_register(bus, "audit", topic, audit_types, 1, on_event, &audit, &err), &err);
    assert_hd_err(
        HD_OK, hd_bus_register(bus, "bouncer", topic, bouncer_types, 1, on_event, &bouncer, &err),
        &err);
    assert_hd(HD_ESTATE, hd_bus_poll(bus, 0, &err));
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);

    hd_envelope *registered = event("users.user_registered");
    hd_envelope *deleted = event("users.user_deleted");
    hd_envelope *nobody = event("orders.order_placed");
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, registered, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, deleted, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, nobody, &err), &err); /* dropped, no error */

    int64_t end = hd_clock_ms() + 10000;
    while (email.calls + audit.calls + bouncer.calls < 4) {
        assert_true(hd_clock_ms() < end);
        int rc = hd_bus_poll(bus, 200, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    /* Let anything unexpected arrive. */
    for (int i = 0; i < 3; i++)
        assert_true(hd_bus_poll(bus, 100, &err) >= 0);

    assert_int_equal(email.calls, 1);
    assert_string_equal(email.types[0], "users.user_registered");
    assert_string_equal(email.ids[0], hd_envelope_id(registered));
    assert_int_equal(audit.calls, 2); /* its own copy of both */
    assert_int_equal(bouncer.calls, 1);
    assert_string_equal(bouncer.types[0], "users.user_deleted");

    /* What the bouncer rejected is in its dead-letter queue, nowhere else. */
    hd_consumer *bc = hd_bus_rabbit_consumer(bus, "bouncer", topic);
    assert_non_null(bc);
    hd_consumer_counts n;
    hd_consumer_get_counts(bc, &n);
    assert_int_equal(n.dead, 1);
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    char dlq[300];
    snprintf(dlq, sizeof dlq, "%s.bouncer.dlq", topic);
    hd_queue_info info;
    assert_hd_err(HD_OK, hd_queue_inspect(admin, dlq, &info, &err), &err);
    assert_int_equal(info.message_count, 1);

    assert_hd_err(HD_OK, hd_bus_shutdown(bus, &err), &err);
    assert_null(hd_bus_rabbit_consumer(bus, "bouncer", topic));
    assert_hd(HD_ESTATE, hd_bus_send(bus, topic, registered, &err));
    assert_hd_err(HD_OK, hd_bus_rabbit_undeclare(bus, &err), &err);
    snprintf(dlq, sizeof dlq, "%s.email", topic);
    assert_hd(HD_ENOTFOUND, hd_queue_inspect(admin, dlq, NULL, &err));
    hd_amqp_close(admin);

    hd_envelope_free(registered);
    hd_envelope_free(deleted);
    hd_envelope_free(nobody);
    hd_bus_free(bus);
    hd_registry_free(reg);
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

/* hd_bus_run waits on its consumers' sockets and the stop together: a stop ends an idle
 * wait at once, not at the end of the poll interval. */
static void run_stops_at_once_while_idle(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *topic = hd_test_unique_name("users");
    bus_runner r = {0};
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    assert_hd_err(HD_OK, hd_bus_rabbit_new(url, NULL, &r.bus, &err), &err);
    inbox in = {0};
    const char *types[] = {"users.user_registered"};
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
    assert_hd_err(HD_OK, hd_bus_rabbit_undeclare(r.bus, &err), &err);
    hd_bus_free(r.bus);
    hd_stop_release(&r.stop);
    free(topic);
}

static void bad_url_is_refused_early(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = NULL;
    assert_hd_err(HD_EURL, hd_bus_rabbit_new("http://nope", NULL, &bus, &err), &err);
    assert_null(bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bus_delivers_to_each_registered_consumer),
        cmocka_unit_test(run_stops_at_once_while_idle),
        cmocka_unit_test(bad_url_is_refused_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
