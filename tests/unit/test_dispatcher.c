/* Unit tests for herald/dispatcher.h: registration, order, wildcard, failures, factories. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/dispatcher.h"
#include "herald/store.h"
#include "herald/uow.h"

/* Handlers append "<name>:<type> " to a shared log, so a test can check who ran, on what,
 * and in which order. */
typedef struct probe {
    const char *name;
    int fail;        /* return this code when non-zero */
    int give_reason; /* fill err when failing */
} probe;

static char shared_log[512];

static int record(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    probe *p = handler;
    size_t used = strlen(shared_log);
    snprintf(shared_log + used, sizeof shared_log - used, "%s:%s ", p->name, hd_event_type(ev));
    if (p->fail)
        return p->give_reason
                   ? hd_error_set(err, p->fail, "%s refused %s", p->name, hd_event_type(ev))
                   : p->fail;
    return HD_OK;
}

static int reset_log(void **state)
{
    (void)state;
    shared_log[0] = '\0';
    return 0;
}

static void register_rejects_bad_input(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    assert_non_null(d);
    probe p = {.name = "p"};
    assert_hd(HD_EINVAL, hd_dispatcher_register(NULL, "x", record, &p));
    assert_hd(HD_EINVAL, hd_dispatcher_register(d, NULL, record, &p));
    assert_hd(HD_EINVAL, hd_dispatcher_register(d, "", record, &p));
    assert_hd(HD_EINVAL, hd_dispatcher_register(d, "x", NULL, &p));
    hd_handler_factory no_handle = {NULL, NULL, NULL};
    assert_hd(HD_EINVAL, hd_dispatcher_register_factory(d, "x", &no_handle, &p));
    /* A destroy without a create would destroy the context: refused. */
    hd_handler_factory destroy_only = {NULL, record, free};
    assert_hd(HD_EINVAL, hd_dispatcher_register_factory(d, "x", &destroy_only, &p));
    assert_hd(HD_EINVAL, hd_dispatcher_register_factory(d, "x", NULL, &p));
    assert_int_equal(hd_dispatcher_count(d, "x"), 0);

    hd_event *ev = hd_event_new("x", json_object());
    assert_hd(HD_EINVAL, hd_dispatcher_dispatch(NULL, NULL, ev, NULL));
    assert_hd(HD_EINVAL, hd_dispatcher_dispatch(d, NULL, NULL, NULL));
    hd_event_free(ev);
    hd_dispatcher_free(d);
    hd_dispatcher_free(NULL);
}

static void dispatch_runs_handlers_of_the_type_in_registration_order(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    probe a = {.name = "a"}, b = {.name = "b"}, c = {.name = "c"};
    assert_hd(HD_OK, hd_dispatcher_register(d, "order.completed", record, &b));
    assert_hd(HD_OK, hd_dispatcher_register(d, "order.cancelled", record, &c));
    assert_hd(HD_OK, hd_dispatcher_register(d, "order.completed", record, &a));
    assert_int_equal(hd_dispatcher_count(d, "order.completed"), 2);
    assert_int_equal(hd_dispatcher_count(d, "order.cancelled"), 1);

    hd_event *ev = hd_event_new("order.completed", json_object());
    hd_error err;
    assert_hd_err(HD_OK, hd_dispatcher_dispatch(d, NULL, ev, &err), &err);
    assert_string_equal(shared_log, "b:order.completed a:order.completed ");
    hd_event_free(ev);
    hd_dispatcher_free(d);
}

static void event_without_handlers_is_not_an_error(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    probe a = {.name = "a"};
    assert_hd(HD_OK, hd_dispatcher_register(d, "order.completed", record, &a));
    hd_event *ev = hd_event_new("order.shipped", json_object());
    assert_hd(HD_OK, hd_dispatcher_dispatch(d, NULL, ev, NULL));
    assert_string_equal(shared_log, "");
    assert_int_equal(hd_dispatcher_count(d, "order.shipped"), 0);
    hd_event_free(ev);
    hd_dispatcher_free(d);
}

static void wildcard_handlers_see_every_event_in_order(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    probe audit = {.name = "audit"}, invoice = {.name = "invoice"}, tail = {.name = "tail"};
    assert_hd(HD_OK, hd_dispatcher_register(d, "*", record, &audit));
    assert_hd(HD_OK, hd_dispatcher_register(d, "order.completed", record, &invoice));
    assert_hd(HD_OK, hd_dispatcher_register(d, "*", record, &tail));
    assert_int_equal(hd_dispatcher_count(d, "order.completed"), 3);
    assert_int_equal(hd_dispatcher_count(d, "anything"), 2);

    hd_event *a = hd_event_new("order.completed", json_object());
    hd_event *b = hd_event_new("user.registered", json_object());
    assert_hd(HD_OK, hd_dispatcher_dispatch(d, NULL, a, NULL));
    assert_hd(HD_OK, hd_dispatcher_dispatch(d, NULL, b, NULL));
    assert_string_equal(shared_log, "audit:order.completed invoice:order.completed "
                                    "tail:order.completed audit:user.registered "
                                    "tail:user.registered ");
    hd_event_free(a);
    hd_event_free(b);
    hd_dispatcher_free(d);
}

static void first_failure_stops_and_returns_its_code_and_reason(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    probe a = {.name = "a"}, b = {.name = "b", .fail = HD_ESTORE, .give_reason = 1},
          c = {.name = "c"};
    hd_dispatcher_register(d, "x", record, &a);
    hd_dispatcher_register(d, "x", record, &b);
    hd_dispatcher_register(d, "x", record, &c);
    hd_event *ev = hd_event_new("x", json_object());
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_ESTORE, hd_dispatcher_dispatch(d, NULL, ev, &err), &err);
    assert_string_equal(shared_log, "a:x b:x "); /* c never ran */
    assert_int_equal(err.code, HD_ESTORE);
    assert_string_equal(err.text, "b refused x");
    /* err may be NULL: the code alone still comes back. */
    assert_hd(HD_ESTORE, hd_dispatcher_dispatch(d, NULL, ev, NULL));
    hd_event_free(ev);
    hd_dispatcher_free(d);
}

static void failure_without_reason_gets_one(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    probe a = {.name = "a"}, b = {.name = "b", .fail = HD_EHANDLER};
    hd_dispatcher_register(d, "x", record, &a);
    hd_dispatcher_register(d, "*", record, &b);
    hd_event *ev = hd_event_new("x", json_object());
    hd_error err;
    assert_hd_err(HD_EHANDLER, hd_dispatcher_dispatch(d, NULL, ev, &err), &err);
    assert_string_equal(err.text, "handler 2 of 'x' failed: handler failed");
    hd_event_free(ev);
    hd_dispatcher_free(d);
}

/* ---- factories ------------------------------------------------------------------------ */

/* The factory's context counts what it made and destroyed. */
typedef struct factory_ctx {
    int created, destroyed, handled;
    int fail_create;
    int make_null;
} factory_ctx;

typedef struct counted_handler {
    factory_ctx *ctx;
    int calls; /* per handler instance: shows whether one instance served several events */
} counted_handler;

static int counted_create(void *ctx, hd_uow *uow, void **handler, hd_error *err)
{
    (void)uow;
    factory_ctx *f = ctx;
    if (f->fail_create)
        return hd_error_set(err, HD_ECONFIG, "no invoice repository configured");
    if (f->make_null) {
        *handler = NULL;
        return HD_OK;
    }
    counted_handler *h = calloc(1, sizeof *h);
    if (h == NULL)
        return HD_ENOMEM;
    h->ctx = f;
    f->created++;
    *handler = h;
    return HD_OK;
}

static int counted_handle(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    (void)ev;
    (void)err;
    counted_handler *h = handler;
    h->calls++;
    h->ctx->handled++;
    return HD_OK;
}

static void counted_destroy(void *handler)
{
    counted_handler *h = handler;
    h->ctx->destroyed++;
    free(h);
}

static const hd_handler_factory counted = {counted_create, counted_handle, counted_destroy};

static void factory_without_uow_makes_a_handler_per_dispatch(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    factory_ctx f = {0};
    assert_hd(HD_OK, hd_dispatcher_register_factory(d, "x", &counted, &f));
    hd_event *ev = hd_event_new("x", json_object());
    assert_hd(HD_OK, hd_dispatcher_dispatch(d, NULL, ev, NULL));
    assert_hd(HD_OK, hd_dispatcher_dispatch(d, NULL, ev, NULL));
    assert_int_equal(f.created, 2);
    assert_int_equal(f.destroyed, 2);
    assert_int_equal(f.handled, 2);
    hd_event_free(ev);
    hd_dispatcher_free(d);
}

static void factory_with_uow_makes_one_handler_for_the_unit(void **state)
{
    (void)state;
    hd_store *s = NULL;
    assert_hd(HD_OK, hd_store_open("sqlite::memory:", &s, NULL));
    hd_dispatcher *d = hd_dispatcher_new();
    factory_ctx f = {0};
    assert_hd(HD_OK, hd_dispatcher_register_factory(d, "x", &counted, &f));
    assert_hd(HD_OK, hd_dispatcher_register_factory(d, "y", &counted, &f));

    for (int unit = 1; unit <= 2; unit++) {
        hd_uow *uow = NULL;
        assert_hd(HD_OK, hd_uow_begin(s, d, &uow, NULL));
        hd_event *x = hd_event_new("x", json_object()), *y = hd_event_new("y", json_object());
        for (int i = 0; i < 3; i++)
            assert_hd(HD_OK, hd_dispatcher_dispatch(d, uow, x, NULL));
        assert_hd(HD_OK, hd_dispatcher_dispatch(d, uow, y, NULL));
        /* One instance per registration and unit: "x" made one, "y" another. */
        assert_int_equal(f.created, 2 * unit);
        assert_int_equal(f.destroyed, 2 * (unit - 1));
        hd_event_free(x);
        hd_event_free(y);
        assert_hd(HD_OK, unit == 1 ? hd_uow_commit(uow, NULL) : hd_uow_rollback(uow, NULL));
        /* The unit's end (commit or rollback) destroyed them. */
        assert_int_equal(f.destroyed, 2 * unit);
    }
    assert_int_equal(f.handled, 8);
    hd_dispatcher_free(d);
    hd_store_close(s);
}

static void factory_failure_is_the_dispatch_failure(void **state)
{
    (void)state;
    hd_dispatcher *d = hd_dispatcher_new();
    factory_ctx f = {.fail_create = 1}, g = {.make_null = 1};
    hd_dispatcher_register_factory(d, "x", &counted, &f);
    hd_dispatcher_register_factory(d, "y", &counted, &g);
    hd_event *x = hd_event_new("x", json_object()), *y = hd_event_new("y", json_object());
    hd_error err;
    assert_hd_err(HD_ECONFIG, hd_dispatcher_dispatch(d, NULL, x, &err), &err);
    assert_string_equal(err.text, "no invoice repository configured");
    assert_hd_err(HD_EHANDLER, hd_dispatcher_dispatch(d, NULL, y, &err), &err);
    assert_non_null(strstr(err.text, "made no handler"));
    assert_int_equal(f.handled + g.handled, 0);
    hd_event_free(x);
    hd_event_free(y);
    hd_dispatcher_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(register_rejects_bad_input, reset_log),
        cmocka_unit_test_setup(dispatch_runs_handlers_of_the_type_in_registration_order, reset_log),
        cmocka_unit_test_setup(event_without_handlers_is_not_an_error, reset_log),
        cmocka_unit_test_setup(wildcard_handlers_see_every_event_in_order, reset_log),
        cmocka_unit_test_setup(first_failure_stops_and_returns_its_code_and_reason, reset_log),
        cmocka_unit_test_setup(failure_without_reason_gets_one, reset_log),
        cmocka_unit_test(factory_without_uow_makes_a_handler_per_dispatch),
        cmocka_unit_test(factory_with_uow_makes_one_handler_for_the_unit),
        cmocka_unit_test(factory_failure_is_the_dispatch_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
