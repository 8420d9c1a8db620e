/* bus_conformance.c — the bus cases; see bus_conformance.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_conformance.h"
#include "hd_test.h"
#include "herald/clock.h"

#define MAX_SEEN 8

typedef struct seen {
    int calls;
    char types[MAX_SEEN][64];
    char ids[MAX_SEEN][64];
    char corr[MAX_SEEN][64];
    char decoded[MAX_SEEN][64]; /* the envelope's type when the bus decoded one, else "" */
    unsigned char body[MAX_SEEN][64];
    size_t body_len[MAX_SEEN];
} seen;

static hd_consume_result record(void *ctx, const hd_delivery *d)
{
    seen *s = ctx;
    if (s->calls < MAX_SEEN) {
        int i = s->calls;
        snprintf(s->types[i], sizeof s->types[i], "%s", d->routing_key ? d->routing_key : "");
        snprintf(s->ids[i], sizeof s->ids[i], "%s", d->message_id ? d->message_id : "");
        snprintf(s->corr[i], sizeof s->corr[i], "%s", d->correlation_id ? d->correlation_id : "");
        snprintf(s->decoded[i], sizeof s->decoded[i], "%s",
                 d->envelope ? hd_envelope_type(d->envelope) : "");
        s->body_len[i] = d->body_len < sizeof s->body[i] ? d->body_len : sizeof s->body[i];
        memcpy(s->body[i], d->body, s->body_len[i]);
    }
    s->calls++;
    return HD_CONSUME_OK;
}

typedef struct fixture {
    const hd_bus_conf_target *t;
    hd_bus *bus;
    char *topic;
    hd_registry *registry;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->t = *state;
    f->topic = hd_test_unique_name("conf");
    f->registry = hd_registry_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->bus != NULL && f->t->cleanup != NULL)
        f->t->cleanup(f->t->ctx, f->bus);
    hd_bus_free(f->bus);
    hd_registry_free(f->registry);
    free(f->topic);
    free(f);
    return 0;
}

static void make(fixture *f, int with_registry)
{
    f->bus = f->t->make(f->t->ctx, with_registry ? f->registry : NULL);
    assert_non_null(f->bus);
    assert_int_equal(hd_bus_get_state(f->bus), HD_BUS_NEW);
}

/* Poll until the total of calls reaches want (10 s at most), then a little longer so that
 * anything unexpected arrives too. */
static void poll_for(hd_bus *bus, seen *const *all, size_t n, int want)
{
    hd_error err;
    int64_t end = hd_clock_ms() + 10000;
    for (;;) {
        int total = 0;
        for (size_t i = 0; i < n; i++)
            total += all[i]->calls;
        if (total >= want)
            break;
        assert_true(hd_clock_ms() < end);
        int rc = hd_bus_poll(bus, 100, &err);
        assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    }
    int64_t settle = hd_clock_ms() + 300;
    while (hd_clock_ms() < settle)
        assert_true(hd_bus_poll(bus, 50, &err) >= 0);
}

static void state_rules_are_the_same(void **state)
{
    fixture *f = *state;
    hd_error err;
    make(f, 0);
    seen s = {0};
    const char *types[] = {"conf.a"};
    const char *empty[] = {""};
    assert_hd(HD_EINVAL, hd_bus_register(f->bus, "c", f->topic, empty, 1, record, &s, &err));
    assert_hd(HD_EINVAL, hd_bus_register(f->bus, "c", f->topic, types, 0, record, &s, &err));
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "c", f->topic, types, 1, record, &s, &err), &err);
    assert_hd(HD_EEXIST, hd_bus_register(f->bus, "c", f->topic, types, 1, record, &s, &err));
    hd_bus_message m = {.topic = f->topic, .type = "conf.a", .body = "x", .len = 1};
    assert_hd(HD_ESTATE, hd_bus_poll(f->bus, 0, &err));
    assert_hd(HD_ESTATE, hd_bus_send_raw(f->bus, &m, &err));
    assert_hd(HD_ESTATE, hd_bus_shutdown(f->bus, &err));
    assert_hd_err(HD_OK, hd_bus_startup(f->bus, &err), &err);
    assert_int_equal(hd_bus_get_state(f->bus), HD_BUS_STARTED);
    assert_hd(HD_ESTATE, hd_bus_startup(f->bus, &err));
    assert_hd(HD_ESTATE, hd_bus_register(f->bus, "d", f->topic, types, 1, record, &s, &err));
    assert_hd(HD_EINVAL, hd_bus_send_raw(f->bus, &(hd_bus_message){.topic = f->topic}, &err));
    assert_hd_err(HD_OK, hd_bus_shutdown(f->bus, &err), &err);
    assert_int_equal(hd_bus_get_state(f->bus), HD_BUS_STOPPED);
    assert_hd(HD_ESTATE, hd_bus_send_raw(f->bus, &m, &err));
    assert_hd(HD_ESTATE, hd_bus_poll(f->bus, 0, &err));
    assert_hd(HD_ESTATE, hd_bus_shutdown(f->bus, &err));
    assert_int_equal(s.calls, 0);
}

static void each_registration_gets_its_copy(void **state)
{
    fixture *f = *state;
    hd_error err;
    make(f, 0);
    seen a = {0}, b = {0}, c = {0};
    const char *ta[] = {"conf.x"};
    const char *tb[] = {"conf.x", "conf.y"};
    const char *tc[] = {"conf.z"};
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "a", f->topic, ta, 1, record, &a, &err), &err);
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "b", f->topic, tb, 2, record, &b, &err), &err);
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "c", f->topic, tc, 1, record, &c, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(f->bus, &err), &err);

    hd_envelope *x = hd_envelope_new("conf.x", 1, "/conf", json_pack("{s:i}", "n", 1));
    hd_envelope *y = hd_envelope_new("conf.y", 1, "/conf", json_pack("{s:i}", "n", 2));
    hd_envelope *w = hd_envelope_new("conf.w", 1, "/conf", json_pack("{s:i}", "n", 3));
    assert_hd(HD_OK, hd_envelope_set_correlation_id(x, "corr-x"));
    assert_hd_err(HD_OK, hd_bus_send(f->bus, f->topic, x, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(f->bus, f->topic, y, &err), &err);
    assert_hd_err(HD_OK, hd_bus_send(f->bus, f->topic, w, &err), &err); /* nobody: dropped */
    seen *all[] = {&a, &b, &c};
    poll_for(f->bus, all, 3, 3);

    assert_int_equal(a.calls, 1);
    assert_string_equal(a.types[0], "conf.x");
    assert_string_equal(a.ids[0], hd_envelope_id(x));
    assert_string_equal(a.corr[0], "corr-x");
    assert_string_equal(a.decoded[0], ""); /* no registry */
    assert_int_equal(b.calls, 2);          /* its own copy of x, and y */
    assert_int_equal(c.calls, 0);
    hd_envelope_free(x);
    hd_envelope_free(y);
    hd_envelope_free(w);
}

static void raw_bytes_arrive_unchanged(void **state)
{
    fixture *f = *state;
    hd_error err;
    make(f, 0);
    seen s = {0};
    const char *types[] = {"conf.raw"};
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "r", f->topic, types, 1, record, &s, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(f->bus, &err), &err);
    static const unsigned char body[] = {'h', 0, 0xff, '\n', '\n', 'i', 0x80};
    hd_bus_message m = {.topic = f->topic,
                        .type = "conf.raw",
                        .body = body,
                        .len = sizeof body,
                        .message_id = "m-1",
                        .correlation_id = "c-1",
                        .content_type = "application/octet-stream"};
    assert_hd_err(HD_OK, hd_bus_send_raw(f->bus, &m, &err), &err);
    seen *all[] = {&s};
    poll_for(f->bus, all, 1, 1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.body_len[0], sizeof body);
    assert_memory_equal(s.body[0], body, sizeof body);
    assert_string_equal(s.ids[0], "m-1");
    assert_string_equal(s.corr[0], "c-1");
}

static void registry_decodes_envelopes(void **state)
{
    fixture *f = *state;
    hd_error err;
    assert_hd(HD_OK, hd_registry_add(f->registry, "conf.decoded", 1, NULL, NULL));
    make(f, 1);
    seen s = {0};
    const char *types[] = {"conf.decoded"};
    assert_hd_err(HD_OK, hd_bus_register(f->bus, "d", f->topic, types, 1, record, &s, &err), &err);
    assert_hd_err(HD_OK, hd_bus_startup(f->bus, &err), &err);
    hd_envelope *e = hd_envelope_new("conf.decoded", 1, "/conf", json_pack("{s:i}", "n", 1));
    assert_hd_err(HD_OK, hd_bus_send(f->bus, f->topic, e, &err), &err);
    seen *all[] = {&s};
    poll_for(f->bus, all, 1, 1);
    assert_int_equal(s.calls, 1);
    assert_string_equal(s.decoded[0], "conf.decoded");
    assert_string_equal(s.ids[0], hd_envelope_id(e));
    hd_envelope_free(e);
}

int hd_bus_conf_run(const hd_bus_conf_target *t)
{
    void *ts = (void *)t;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(state_rules_are_the_same, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(each_registration_gets_its_copy, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(raw_bytes_arrive_unchanged, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(registry_decodes_envelopes, setup, teardown, ts),
    };
    char group[64];
    snprintf(group, sizeof group, "bus conformance: %s", t->name);
    return _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
