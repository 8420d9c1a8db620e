/* Unit tests for herald/bus_memory.h (and the lifecycle rules of bus.h every bus shares). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/bus_memory.h"

/* What a handler saw, and what it should answer. */
typedef struct probe {
    int calls;
    int attempts[16];
    char types[16][64];
    char ids[16][64];
    int fail_until; /* answer RETRY while attempt < fail_until */
    int reject;     /* answer REJECT (with a reason) */
    int saw_envelope;
} probe;

static hd_consume_result on_event(void *ctx, const hd_delivery *d)
{
    probe *p = ctx;
    if (p->calls < 16) {
        p->attempts[p->calls] = d->attempt;
        snprintf(p->types[p->calls], sizeof p->types[0], "%s", d->routing_key);
        snprintf(p->ids[p->calls], sizeof p->ids[0], "%s", d->message_id ? d->message_id : "");
    }
    p->calls++;
    if (d->envelope != NULL)
        p->saw_envelope++;
    if (p->reject) {
        hd_delivery_reason(d, "order %s cannot be billed", "o-1");
        return HD_CONSUME_REJECT;
    }
    if (d->attempt < p->fail_until)
        return HD_CONSUME_RETRY;
    return HD_CONSUME_OK;
}

static void send_type(hd_bus *bus, const char *topic, const char *type)
{
    hd_error err;
    hd_envelope *env = hd_envelope_new(type, 1, "/test", json_pack("{s:i}", "n", 1));
    assert_non_null(env);
    assert_hd_err(HD_OK, hd_bus_send(bus, topic, env, &err), &err);
    hd_envelope_free(env);
}

static void routes_by_type_with_a_copy_per_consumer(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = hd_bus_memory_new(NULL);
    assert_non_null(bus);
    assert_string_equal(hd_bus_name(bus), "memory");
    probe email = {0}, audit = {0};
    const char *email_types[] = {"users.user_registered"};
    const char *audit_types[] = {"users.user_registered", "users.user_deleted"};
    assert_hd_err(HD_OK,
                  hd_bus_register(bus, "email", "users", email_types, 1, on_event, &email, &err),
                  &err);
    assert_hd_err(HD_OK,
                  hd_bus_register(bus, "audit", "users", audit_types, 2, on_event, &audit, &err),
                  &err);
    assert_hd_err(HD_OK, hd_bus_startup(bus, &err), &err);

    send_type(bus, "users", "users.user_registered");  /* both */
    send_type(bus, "users", "users.user_deleted");     /* audit only */
    send_type(bus, "users", "users.password_reset");   /* nobody: dropped */
    send_type(bus, "orders", "users.user_registered"); /* other topic: dropped */
    assert_int_equal(hd_bus_memory_dropped(bus), 2);
    assert_int_equal(hd_bus_memory_pending(bus), 3);
    assert_int_equal(email.calls, 0); /* handlers run in poll, never in send */

    assert_int_equal(hd_bus_poll(bus, 0, &err), 3);
    assert_int_equal(email.calls, 1);
    assert_string_equal(email.types[0], "users.user_registered");
    assert_int_equal(email.attempts[0], 1);
    assert_int_equal(audit.calls, 2);
    assert_string_equal(audit.types[0], "users.user_registered");
    assert_string_equal(audit.types[1], "users.user_deleted");
    /* The same event, one copy each: same message id. */
    assert_string_equal(email.ids[0], audit.ids[0]);
    assert_int_equal(strlen(email.ids[0]), 36);
    assert_int_equal(hd_bus_poll(bus, 0, &err), 0);
    assert_int_equal(hd_bus_memory_dead_count(bus), 0);
    hd_bus_free(bus); /* still started: free shuts down first */
}

static void retry_then_ok(void **state)
{
    (void)state;
    hd_error err;
    hd_bus_memory_options o = {.max_attempts = 5};
    hd_bus *bus = hd_bus_memory_new(&o);
    probe p = {.fail_until = 3};
    const char *types[] = {"t"};
    assert_hd(HD_OK, hd_bus_register(bus, "c", "topic", types, 1, on_event, &p, &err));
    assert_hd(HD_OK, hd_bus_startup(bus, &err));
    send_type(bus, "topic", "t");
    /* One attempt per poll: the retry waits at the tail of the queue. */
    assert_int_equal(hd_bus_poll(bus, 0, &err), 1);
    assert_int_equal(hd_bus_memory_pending(bus), 1);
    assert_int_equal(hd_bus_poll(bus, 0, &err), 1);
    assert_int_equal(hd_bus_poll(bus, 0, &err), 1);
    assert_int_equal(hd_bus_poll(bus, 0, &err), 0);
    assert_int_equal(p.calls, 3);
    assert_int_equal(p.attempts[0], 1);
    assert_int_equal(p.attempts[1], 2);
    assert_int_equal(p.attempts[2], 3);
    assert_int_equal(hd_bus_memory_dead_count(bus), 0);
    assert_hd(HD_OK, hd_bus_shutdown(bus, &err));
    hd_bus_free(bus);
}

static void retries_run_out_into_the_dead_letters(void **state)
{
    (void)state;
    hd_error err;
    hd_bus_memory_options o = {.max_attempts = 3};
    hd_bus *bus = hd_bus_memory_new(&o);
    probe p = {.fail_until = 100};
    const char *types[] = {"t"};
    assert_hd(HD_OK, hd_bus_register(bus, "c", "topic", types, 1, on_event, &p, &err));
    assert_hd(HD_OK, hd_bus_startup(bus, &err));
    send_type(bus, "topic", "t");
    for (int i = 0; i < 5; i++)
        assert_true(hd_bus_poll(bus, 0, &err) >= 0);
    assert_int_equal(p.calls, 3); /* never loops forever */
    assert_int_equal(hd_bus_memory_pending(bus), 0);
    assert_int_equal(hd_bus_memory_dead_count(bus), 1);
    const hd_bus_dead_letter *d = hd_bus_memory_dead_letter(bus, 0);
    assert_non_null(d);
    assert_int_equal(d->attempts, 3);
    assert_string_equal(d->reason, "handler failed 3 times");
    assert_string_equal(d->consumer, "c");
    assert_string_equal(d->topic, "topic");
    assert_string_equal(d->type, "t");
    assert_null(hd_bus_memory_dead_letter(bus, 1));
    hd_bus_free(bus);
}

static void reject_goes_straight_to_the_dead_letters(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = hd_bus_memory_new(NULL);
    probe p = {.reject = 1};
    const char *types[] = {"orders.placed"};
    assert_hd(HD_OK, hd_bus_register(bus, "billing", "orders", types, 1, on_event, &p, &err));
    assert_hd(HD_OK, hd_bus_startup(bus, &err));
    send_type(bus, "orders", "orders.placed");
    assert_int_equal(hd_bus_poll(bus, 0, &err), 1);
    assert_int_equal(hd_bus_poll(bus, 0, &err), 0);
    assert_int_equal(p.calls, 1);
    assert_int_equal(hd_bus_memory_dead_count(bus), 1);
    const hd_bus_dead_letter *d = hd_bus_memory_dead_letter(bus, 0);
    assert_int_equal(d->attempts, 1);
    assert_string_equal(d->reason, "order o-1 cannot be billed");
    assert_non_null(strstr((const char *)d->body, "\"type\":\"orders.placed\""));
    assert_int_equal(d->len, strlen((const char *)d->body));
    hd_bus_free(bus);
}

static void undecodable_messages_are_dead_at_once(void **state)
{
    (void)state;
    hd_error err;
    hd_registry *reg = hd_registry_new();
    assert_non_null(reg);
    assert_hd(HD_OK, hd_registry_add(reg, "orders.placed", 1, NULL, NULL));
    hd_bus_memory_options o = {.max_attempts = 3, .registry = reg};
    hd_bus *bus = hd_bus_memory_new(&o);
    probe p = {0};
    const char *types[] = {"orders.placed", "orders.cancelled"};
    assert_hd(HD_OK, hd_bus_register(bus, "billing", "orders", types, 2, on_event, &p, &err));
    assert_hd(HD_OK, hd_bus_startup(bus, &err));

    hd_bus_message junk = {
        .topic = "orders", .type = "orders.placed", .body = "{not json", .len = 9};
    assert_hd(HD_OK, hd_bus_send_raw(bus, &junk, &err));
    send_type(bus, "orders", "orders.cancelled"); /* routed, but not in the registry */
    send_type(bus, "orders", "orders.placed");    /* good */
    assert_int_equal(hd_bus_poll(bus, 0, &err), 3);
    assert_int_equal(p.calls, 1); /* only the good one reached the handler */
    assert_int_equal(p.saw_envelope, 1);
    assert_int_equal(hd_bus_memory_dead_count(bus), 2);
    const hd_bus_dead_letter *d0 = hd_bus_memory_dead_letter(bus, 0);
    const hd_bus_dead_letter *d1 = hd_bus_memory_dead_letter(bus, 1);
    assert_int_equal(d0->attempts, 1);
    assert_true(strncmp(d0->reason, "HD_EJSON: ", 10) == 0);
    assert_int_equal(d1->attempts, 1);
    assert_true(strncmp(d1->reason, "HD_EUNKNOWN: ", 13) == 0);
    assert_null(d0->message_id);
    hd_bus_free(bus);
    hd_registry_free(reg);
}

static void lifecycle_is_enforced(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = hd_bus_memory_new(NULL);
    probe p = {0};
    const char *types[] = {"t"};
    const char *empty[] = {""};
    hd_bus_message m = {.topic = "topic", .type = "t", .body = "{}", .len = 2};

    /* Arguments. */
    assert_hd(HD_EINVAL, hd_bus_register(bus, "", "topic", types, 1, on_event, &p, &err));
    assert_hd(HD_EINVAL, hd_bus_register(bus, "c", "topic", types, 0, on_event, &p, &err));
    assert_hd(HD_EINVAL, hd_bus_register(bus, "c", "topic", empty, 1, on_event, &p, &err));
    assert_hd(HD_EINVAL, hd_bus_register(bus, "c", "topic", types, 1, NULL, &p, &err));

    /* Not started yet. */
    assert_hd_err(HD_ESTATE, hd_bus_send_raw(bus, &m, &err), &err);
    assert_non_null(strstr(err.text, "not started"));
    assert_hd(HD_ESTATE, hd_bus_poll(bus, 0, &err));
    assert_hd(HD_ESTATE, hd_bus_shutdown(bus, &err));
    assert_int_equal(hd_bus_get_state(bus), HD_BUS_NEW);

    assert_hd(HD_OK, hd_bus_register(bus, "c", "topic", types, 1, on_event, &p, &err));
    assert_hd_err(HD_EEXIST, hd_bus_register(bus, "c", "topic", types, 1, on_event, &p, &err),
                  &err);
    /* The same consumer name on another topic is another queue: fine. */
    assert_hd(HD_OK, hd_bus_register(bus, "c", "other", types, 1, on_event, &p, &err));

    assert_hd(HD_OK, hd_bus_startup(bus, &err));
    assert_int_equal(hd_bus_get_state(bus), HD_BUS_STARTED);
    assert_hd(HD_ESTATE, hd_bus_startup(bus, &err));
    assert_hd_err(HD_ESTATE, hd_bus_register(bus, "late", "topic", types, 1, on_event, &p, &err),
                  &err);
    assert_hd(HD_EINVAL, hd_bus_send(bus, "topic", NULL, &err));
    hd_bus_message no_type = {.topic = "topic", .type = "", .body = "{}", .len = 2};
    assert_hd(HD_EINVAL, hd_bus_send_raw(bus, &no_type, &err));
    assert_hd(HD_OK, hd_bus_send_raw(bus, &m, &err));

    assert_hd(HD_OK, hd_bus_shutdown(bus, &err));
    assert_int_equal(hd_bus_get_state(bus), HD_BUS_STOPPED);
    assert_hd(HD_ESTATE, hd_bus_shutdown(bus, &err));
    assert_hd(HD_ESTATE, hd_bus_send_raw(bus, &m, &err));
    assert_hd(HD_ESTATE, hd_bus_poll(bus, 0, &err));
    assert_hd(HD_ESTATE, hd_bus_startup(bus, &err));
    assert_int_equal(p.calls, 0);
    hd_bus_free(bus); /* frees the undelivered message too */
    hd_bus_free(NULL);

    /* The memory accessors answer nothing for NULL. */
    assert_int_equal(hd_bus_memory_dead_count(NULL), 0);
    assert_int_equal(hd_bus_memory_pending(NULL), 0);
    hd_bus_memory_options bad = {.max_attempts = -1};
    assert_null(hd_bus_memory_new(&bad));
}

static hd_stop stop_flag;

static hd_consume_result stop_after_one(void *ctx, const hd_delivery *d)
{
    (void)d;
    ++*(int *)ctx;
    hd_stop_request(&stop_flag);
    return HD_CONSUME_OK;
}

static void run_returns_on_stop(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = hd_bus_memory_new(NULL);
    int calls = 0;
    const char *types[] = {"t"};
    assert_hd(HD_OK, hd_bus_register(bus, "c", "topic", types, 1, stop_after_one, &calls, &err));
    assert_hd(HD_OK, hd_bus_startup(bus, &err));
    send_type(bus, "topic", "t");
    assert_hd(HD_OK, hd_stop_init(&stop_flag, &err));
    assert_hd(HD_OK, hd_bus_run(bus, &stop_flag, &err));
    assert_int_equal(calls, 1);
    hd_bus_free(bus);
    hd_stop_release(&stop_flag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routes_by_type_with_a_copy_per_consumer),
        cmocka_unit_test(retry_then_ok),
        cmocka_unit_test(retries_run_out_into_the_dead_letters),
        cmocka_unit_test(reject_goes_straight_to_the_dead_letters),
        cmocka_unit_test(undecodable_messages_are_dead_at_once),
        cmocka_unit_test(lifecycle_is_enforced),
        cmocka_unit_test(run_returns_on_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
