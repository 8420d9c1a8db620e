/* Unit tests for herald/event.h: domain events and event lists. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/event.h"

static void new_event_has_uuid_type_time_and_payload(void **state)
{
    (void)state;
    int64_t before = hd_time_now_ms();
    json_t *payload = json_pack("{s:s, s:i}", "order_id", "1001", "total", 2699);
    hd_event *ev = hd_event_new("order.completed", payload); /* payload stolen */
    assert_non_null(ev);
    assert_true(hd_uuid_valid(hd_event_id(ev)));
    assert_int_equal(hd_event_id(ev)[14], '7'); /* time-ordered (clock.h) */
    assert_string_equal(hd_event_type(ev), "order.completed");
    assert_true(hd_event_occurred_at_ms(ev) >= before);
    assert_true(hd_event_occurred_at_ms(ev) <= hd_time_now_ms());
    /* The RFC 3339 text is the same instant as the milliseconds. */
    int64_t parsed = 0;
    assert_hd(HD_OK, hd_time_parse(hd_event_occurred_at(ev), &parsed));
    assert_int_equal(parsed, hd_event_occurred_at_ms(ev));
    assert_ptr_equal(hd_event_payload(ev), payload);
    assert_string_equal(json_string_value(json_object_get(hd_event_payload(ev), "order_id")),
                        "1001");
    /* Not raised by an aggregate yet. */
    assert_null(hd_event_aggregate_type(ev));
    assert_null(hd_event_aggregate_id(ev));
    assert_int_equal(hd_event_aggregate_version(ev), 0);
    hd_event_free(ev);
}

static void each_event_gets_its_own_id(void **state)
{
    (void)state;
    hd_event *a = hd_event_new("x", json_object());
    hd_event *b = hd_event_new("x", json_object());
    assert_string_not_equal(hd_event_id(a), hd_event_id(b));
    hd_event_free(a);
    hd_event_free(b);
}

static void new_rejects_bad_input_and_frees_the_payload(void **state)
{
    (void)state;
    /* Each refused payload is freed by hd_event_new (stolen also on failure): valgrind and
     * ASan would report a leak otherwise. */
    assert_null(hd_event_new(NULL, json_object()));
    assert_null(hd_event_new("", json_object()));
    assert_null(hd_event_new("x", json_array()));
    assert_null(hd_event_new("x", json_string("not an object")));
    assert_null(hd_event_new("x", NULL)); /* e.g. a json_pack that failed */
    /* Getters tolerate NULL. */
    assert_null(hd_event_id(NULL));
    assert_null(hd_event_type(NULL));
    assert_null(hd_event_occurred_at(NULL));
    assert_null(hd_event_payload(NULL));
    assert_int_equal(hd_event_occurred_at_ms(NULL), 0);
    assert_null(hd_event_to_json(NULL));
    assert_null(hd_event_copy(NULL));
    hd_event_free(NULL);
}

static void set_aggregate_stamps_a_copy(void **state)
{
    (void)state;
    hd_event *ev = hd_event_new("order.completed", json_object());
    char id[] = "1001";
    assert_hd(HD_OK, hd_event_set_aggregate(ev, "order", id, 3));
    id[0] = '9'; /* copied, so the caller's buffer may change */
    assert_string_equal(hd_event_aggregate_type(ev), "order");
    assert_string_equal(hd_event_aggregate_id(ev), "1001");
    assert_int_equal(hd_event_aggregate_version(ev), 3);
    assert_hd(HD_EINVAL, hd_event_set_aggregate(NULL, "order", "1", 1));
    assert_hd(HD_EINVAL, hd_event_set_aggregate(ev, NULL, "1", 1));
    assert_hd(HD_EINVAL, hd_event_set_aggregate(ev, "order", NULL, 1));
    assert_string_equal(hd_event_aggregate_id(ev), "1001"); /* unchanged by failures */
    hd_event_free(ev);
}

static void to_json_has_every_field(void **state)
{
    (void)state;
    hd_event *ev = hd_event_new("order.completed", json_pack("{s:s}", "order_id", "1001"));
    json_t *j = hd_event_to_json(ev);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), hd_event_id(ev));
    assert_string_equal(json_string_value(json_object_get(j, "type")), "order.completed");
    assert_string_equal(json_string_value(json_object_get(j, "occurred_at")),
                        hd_event_occurred_at(ev));
    assert_true(json_is_null(json_object_get(j, "aggregate_id")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "payload"), "order_id")), "1001");
    json_decref(j);
    /* The event keeps its payload after the JSON is gone. */
    assert_non_null(json_object_get(hd_event_payload(ev), "order_id"));

    hd_event_set_aggregate(ev, "order", "1001", 2);
    j = hd_event_to_json(ev);
    assert_string_equal(json_string_value(json_object_get(j, "aggregate_type")), "order");
    assert_int_equal(json_integer_value(json_object_get(j, "aggregate_version")), 2);
    json_decref(j);
    hd_event_free(ev);
}

static void copy_is_deep_and_equal(void **state)
{
    (void)state;
    hd_event *ev = hd_event_new("order.completed", json_pack("{s:s}", "order_id", "1001"));
    hd_event_set_aggregate(ev, "order", "1001", 1);
    hd_event *cp = hd_event_copy(ev);
    assert_non_null(cp);
    assert_string_equal(hd_event_id(cp), hd_event_id(ev));
    assert_string_equal(hd_event_type(cp), hd_event_type(ev));
    assert_string_equal(hd_event_occurred_at(cp), hd_event_occurred_at(ev));
    assert_int_equal(hd_event_occurred_at_ms(cp), hd_event_occurred_at_ms(ev));
    assert_string_equal(hd_event_aggregate_id(cp), "1001");
    assert_int_equal(hd_event_aggregate_version(cp), 1);
    assert_true(json_equal(hd_event_payload(cp), hd_event_payload(ev)));
    assert_ptr_not_equal(hd_event_payload(cp), hd_event_payload(ev));
    hd_event_free(ev); /* the copy outlives the original */
    assert_string_equal(json_string_value(json_object_get(hd_event_payload(cp), "order_id")),
                        "1001");
    hd_event_free(cp);
}

static void list_owns_appends_and_splices_in_order(void **state)
{
    (void)state;
    hd_event_list a = {0}, b;
    hd_event_list_init(&b);
    const char *types[] = {"a1", "a2", "a3", "a4", "a5", "a6"};
    for (int i = 0; i < 5; i++) /* past the first growth */
        assert_hd(HD_OK, hd_event_list_push(&a, hd_event_new(types[i], json_object())));
    assert_hd(HD_OK, hd_event_list_push(&b, hd_event_new(types[5], json_object())));
    assert_int_equal(a.count, 5);

    assert_hd(HD_OK, hd_event_list_splice(&b, &a)); /* append a to non-empty b */
    assert_int_equal(a.count, 0);
    assert_int_equal(b.count, 6);
    assert_string_equal(hd_event_type(b.items[0]), "a6");
    assert_string_equal(hd_event_type(b.items[1]), "a1");
    assert_string_equal(hd_event_type(b.items[5]), "a5");

    hd_event_list c = {0};
    assert_hd(HD_OK, hd_event_list_splice(&c, &b)); /* into an empty list: handed over */
    assert_int_equal(c.count, 6);
    assert_int_equal(b.count, 0);
    assert_hd(HD_OK, hd_event_list_push(&b, hd_event_new("again", json_object())));

    assert_hd(HD_EINVAL, hd_event_list_push(NULL, hd_event_new("x", json_object())));
    assert_hd(HD_EINVAL, hd_event_list_push(&c, NULL));
    assert_hd(HD_EINVAL, hd_event_list_splice(&c, &c));
    assert_hd(HD_EINVAL, hd_event_list_splice(NULL, &c));

    hd_event_list_release(&a);
    hd_event_list_release(&b);
    hd_event_list_release(&c);
    assert_int_equal(c.count, 0);
    assert_null(c.items);
    hd_event_list_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_event_has_uuid_type_time_and_payload),
        cmocka_unit_test(each_event_gets_its_own_id),
        cmocka_unit_test(new_rejects_bad_input_and_frees_the_payload),
        cmocka_unit_test(set_aggregate_stamps_a_copy),
        cmocka_unit_test(to_json_has_every_field),
        cmocka_unit_test(copy_is_deep_and_equal),
        cmocka_unit_test(list_owns_appends_and_splices_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
