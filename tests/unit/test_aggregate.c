/* Unit tests for herald/aggregate.h: an aggregate root embedded in a user struct. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/aggregate.h"
#include "herald/clock.h"

/* The way an application uses it: the root is the first member. */
struct order {
    hd_aggregate base;
    int items;
    int completed;
};

static int order_complete(struct order *o, hd_error *err)
{
    if (o->items == 0)
        return hd_error_set(err, HD_ESTATE, "cannot complete an empty order");
    o->completed = 1;
    return hd_aggregate_raise(
        &o->base,
        hd_event_new("order.completed", json_pack("{s:s, s:i}", "order_id",
                                                  hd_aggregate_id(&o->base), "items", o->items)));
}

static void init_copies_identity_and_version(void **state)
{
    (void)state;
    struct order o = {0};
    char id[] = "1001";
    assert_hd(HD_OK, hd_aggregate_init(&o.base, "order", id, 7));
    id[0] = 'x';
    assert_string_equal(hd_aggregate_type(&o.base), "order");
    assert_string_equal(hd_aggregate_id(&o.base), "1001");
    assert_int_equal(hd_aggregate_version(&o.base), 7);
    assert_int_equal(hd_aggregate_pending(&o.base), 0);
    /* First-member rule: the root's address is the order's address. */
    assert_ptr_equal((void *)&o.base, (void *)&o);
    assert_ptr_equal((struct order *)&o.base, &o);
    hd_aggregate_release(&o.base);
}

static void init_without_id_generates_a_uuid(void **state)
{
    (void)state;
    hd_aggregate a, b;
    assert_hd(HD_OK, hd_aggregate_init(&a, "order", NULL, 0));
    assert_hd(HD_OK, hd_aggregate_init(&b, "order", NULL, 0));
    assert_true(hd_uuid_valid(hd_aggregate_id(&a)));
    assert_int_equal(hd_aggregate_id(&a)[14], '7'); /* time-ordered: tables are keyed by it */
    assert_string_not_equal(hd_aggregate_id(&a), hd_aggregate_id(&b));
    hd_aggregate_release(&a);
    hd_aggregate_release(&b);
}

static void init_rejects_bad_input(void **state)
{
    (void)state;
    hd_aggregate a;
    assert_hd(HD_EINVAL, hd_aggregate_init(NULL, "order", "1", 0));
    assert_hd(HD_EINVAL, hd_aggregate_init(&a, NULL, "1", 0));
    assert_hd(HD_EINVAL, hd_aggregate_init(&a, "", "1", 0));
    assert_hd(HD_EINVAL, hd_aggregate_init(&a, "order", "", 0));
    assert_hd(HD_EINVAL, hd_aggregate_init(&a, "order", "1", -1));
    hd_aggregate_release(&a); /* harmless after a failed init */
    hd_aggregate_release(NULL);
    assert_null(hd_aggregate_id(NULL));
    assert_int_equal(hd_aggregate_version(NULL), 0);
    assert_int_equal(hd_aggregate_pending(NULL), 0);
}

static void raise_bumps_version_and_stamps_the_event(void **state)
{
    (void)state;
    struct order o = {.items = 2};
    assert_hd(HD_OK, hd_aggregate_init(&o.base, "order", "1001", 4));
    hd_error err;
    assert_hd_err(HD_OK, order_complete(&o, &err), &err);
    assert_int_equal(hd_aggregate_version(&o.base), 5);
    assert_int_equal(hd_aggregate_pending(&o.base), 1);
    const hd_event *ev = o.base.pending.items[0];
    assert_string_equal(hd_event_aggregate_type(ev), "order");
    assert_string_equal(hd_event_aggregate_id(ev), "1001");
    assert_int_equal(hd_event_aggregate_version(ev), 5);
    hd_aggregate_release(&o.base); /* frees the pending event */
}

static void domain_rule_failure_raises_nothing(void **state)
{
    (void)state;
    struct order o = {0};
    assert_hd(HD_OK, hd_aggregate_init(&o.base, "order", "1002", 0));
    hd_error err;
    assert_hd_err(HD_ESTATE, order_complete(&o, &err), &err);
    assert_string_equal(err.text, "cannot complete an empty order");
    assert_int_equal(hd_aggregate_pending(&o.base), 0);
    assert_int_equal(hd_aggregate_version(&o.base), 0);
    assert_false(o.completed);
    hd_aggregate_release(&o.base);
}

static void raise_rejects_null_and_frees_the_event(void **state)
{
    (void)state;
    hd_aggregate a;
    assert_hd(HD_OK, hd_aggregate_init(&a, "order", "1", 0));
    assert_hd(HD_EINVAL, hd_aggregate_raise(&a, NULL));
    assert_hd(HD_EINVAL, hd_aggregate_raise(&a, hd_event_new("", json_object())));
    assert_hd(HD_EINVAL, hd_aggregate_raise(NULL, hd_event_new("x", json_object()))); /* freed */
    assert_int_equal(hd_aggregate_version(&a), 0);
    assert_int_equal(hd_aggregate_pending(&a), 0);
    hd_aggregate_release(&a);
}

static void take_events_hands_over_in_order_and_clears(void **state)
{
    (void)state;
    hd_aggregate a, b;
    assert_hd(HD_OK, hd_aggregate_init(&a, "order", "1", 0));
    assert_hd(HD_OK, hd_aggregate_init(&b, "order", "2", 0));
    const char *types[] = {"order.created", "order.item_added", "order.completed"};
    for (int i = 0; i < 3; i++)
        assert_hd(HD_OK, hd_aggregate_raise(&a, hd_event_new(types[i], json_object())));
    assert_hd(HD_OK, hd_aggregate_raise(&b, hd_event_new("order.created", json_object())));

    hd_event_list taken = {0};
    assert_int_equal(hd_aggregate_take_events(&a, &taken), 3);
    assert_int_equal(hd_aggregate_pending(&a), 0);
    assert_int_equal(hd_aggregate_version(&a), 3); /* taking does not undo */
    for (int i = 0; i < 3; i++) {
        assert_string_equal(hd_event_type(taken.items[i]), types[i]);
        assert_int_equal(hd_event_aggregate_version(taken.items[i]), i + 1);
    }
    /* Taking appends: events of several aggregates collect in one list. */
    assert_int_equal(hd_aggregate_take_events(&b, &taken), 1);
    assert_int_equal(taken.count, 4);
    assert_string_equal(hd_event_aggregate_id(taken.items[3]), "2");
    /* Nothing left: taking again moves nothing. */
    assert_int_equal(hd_aggregate_take_events(&a, &taken), 0);
    assert_hd(HD_EINVAL, hd_aggregate_take_events(NULL, &taken));
    assert_hd(HD_EINVAL, hd_aggregate_take_events(&a, NULL));

    /* The aggregate can be freed: the events are the caller's now. */
    hd_aggregate_release(&a);
    hd_aggregate_release(&b);
    assert_string_equal(hd_event_aggregate_type(taken.items[0]), "order");
    hd_event_list_release(&taken);
}

static void discard_drops_pending_events(void **state)
{
    (void)state;
    hd_aggregate a;
    assert_hd(HD_OK, hd_aggregate_init(&a, "order", "1", 0));
    assert_hd(HD_OK, hd_aggregate_raise(&a, hd_event_new("order.completed", json_object())));
    hd_aggregate_discard_events(&a);
    assert_int_equal(hd_aggregate_pending(&a), 0);
    assert_int_equal(hd_aggregate_version(&a), 1);
    /* Still usable. */
    assert_hd(HD_OK, hd_aggregate_raise(&a, hd_event_new("order.completed", json_object())));
    assert_int_equal(hd_aggregate_version(&a), 2);
    hd_aggregate_discard_events(NULL);
    hd_aggregate_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_copies_identity_and_version),
        cmocka_unit_test(init_without_id_generates_a_uuid),
        cmocka_unit_test(init_rejects_bad_input),
        cmocka_unit_test(raise_bumps_version_and_stamps_the_event),
        cmocka_unit_test(domain_rule_failure_raises_nothing),
        cmocka_unit_test(raise_rejects_null_and_frees_the_event),
        cmocka_unit_test(take_events_hands_over_in_order_and_clears),
        cmocka_unit_test(discard_drops_pending_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
