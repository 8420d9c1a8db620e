/* Unit tests for the notifications service's domain (src/services/notifications/domain.c):
 * notification types, the Preferences aggregate (defaults, the switches that cannot be
 * turned off, where a mail goes) and the Notification aggregate's life (pending -> sent |
 * failed, skipped) with the events it raises.
 *
 * It links the service's static library (hd_svc_notifications), from which the linker
 * takes domain.o alone: the domain includes no infrastructure header, so no database,
 * broker or mail server here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

#include "notifications/domain.h"

/* The only pending event of agg, taken (the caller frees it). */
static hd_event *take_one(hd_aggregate *agg)
{
    hd_event_list l = {0};
    assert_int_equal(hd_aggregate_take_events(agg, &l), 1);
    hd_event *ev = l.items[0];
    l.items[0] = NULL;
    l.count = 0;
    hd_event_list_release(&l);
    return ev;
}

/* ---- types ------------------------------------------------------------------------------- */

static void test_types_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++) {
        notification_type t;
        assert_hd(0,
                  notification_type_parse(notification_type_name((notification_type)i), &t, NULL));
        assert_int_equal(t, i);
    }
    assert_null(notification_type_name(NOTIFY_TYPE_COUNT));
    hd_error err;
    notification_type t;
    assert_hd(HD_EVALIDATE, notification_type_parse("marketing", &t, &err));
    assert_non_null(strstr(err.text, "'marketing'"));
    /* A value that is not a plain name is not echoed back. */
    assert_hd(HD_EVALIDATE, notification_type_parse("<script>", &t, &err));
    assert_null(strstr(err.text, "<script>"));
    assert_hd(HD_EVALIDATE, notification_type_parse(NULL, &t, &err));
}

static void test_switchable(void **state)
{
    (void)state;
    assert_false(notification_type_switchable(NOTIFY_EMAIL_VERIFICATION));
    assert_false(notification_type_switchable(NOTIFY_PASSWORD_RESET));
    assert_true(notification_type_switchable(NOTIFY_WELCOME));
    assert_true(notification_type_switchable(NOTIFY_SECURITY_ALERT));
}

static void test_value_checks(void **state)
{
    (void)state;
    assert_true(notify_user_id_valid("8f3c2a4e-1b2c-4d5e-8f90-123456789abc"));
    assert_true(notify_user_id_valid("u.1:x_y-z"));
    assert_false(notify_user_id_valid(""));
    assert_false(notify_user_id_valid("a/b"));
    assert_false(notify_user_id_valid("a b"));
    char long_id[NOTIFY_USER_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(notify_user_id_valid(long_id));
    long_id[NOTIFY_USER_ID_MAX] = '\0';
    assert_true(notify_user_id_valid(long_id));

    assert_true(notify_email_valid("ada@example.com"));
    assert_false(notify_email_valid("ada@example"));
    assert_false(notify_email_valid("@example.com"));
    assert_false(notify_email_valid("ada@@example.com"));
    assert_false(notify_email_valid("ada @example.com"));
    assert_false(notify_email_valid("ada@example.com\r\nBcc: x@y.z"));
    assert_false(notify_email_valid("ada@.com"));
    assert_false(notify_email_valid(NULL));
}

/* ---- Preferences ------------------------------------------------------------------------- */

static void test_preferences_defaults_all_on(void **state)
{
    (void)state;
    preferences p;
    assert_hd(0, preferences_defaults(&p, "u1", NULL));
    assert_false(p.stored);
    assert_string_equal(preferences_user_id(&p), "u1");
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        assert_true(preferences_allows(&p, (notification_type)i));
    /* No preferences at all means the defaults too. */
    assert_true(preferences_allows(NULL, NOTIFY_WELCOME));
    preferences_release(&p);

    hd_error err;
    assert_hd(HD_EVALIDATE, preferences_defaults(&p, "bad/id", &err));
    preferences_release(&p); /* harmless on a failed init */
}

static void test_preferences_switch_off_optional(void **state)
{
    (void)state;
    preferences p;
    assert_hd(0, preferences_defaults(&p, "u1", NULL));
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_WELCOME] = 0;
    assert_int_equal(preferences_apply(&p, &c, 1000, NULL), 1);
    assert_true(p.stored);
    assert_int_equal(p.created_at_ms, 1000);
    assert_false(preferences_allows(&p, NOTIFY_WELCOME));
    assert_true(preferences_allows(&p, NOTIFY_SECURITY_ALERT));

    hd_event *ev = take_one(&p.base);
    assert_string_equal(hd_event_type(ev), PREFERENCES_UPDATED);
    json_t *pl = hd_event_payload(ev);
    assert_string_equal(json_string_value(json_object_get(pl, "user_id")), "u1");
    assert_true(json_is_false(json_object_get(json_object_get(pl, "enabled"), "welcome")));
    assert_true(json_is_true(json_object_get(json_object_get(pl, "enabled"), "password_reset")));
    hd_event_free(ev);

    /* The same change again changes nothing and raises nothing. */
    assert_int_equal(preferences_apply(&p, &c, 2000, NULL), 0);
    assert_int_equal(hd_aggregate_pending(&p.base), 0);
    assert_int_equal(p.updated_at_ms, 1000);
    preferences_release(&p);
}

/* The rule: email_verification and password_reset cannot be switched off, and asking is an
 * error (422 at the HTTP layer), all or nothing. */
static void test_preferences_refuse_mandatory_off(void **state)
{
    (void)state;
    notification_type mandatory[] = {NOTIFY_EMAIL_VERIFICATION, NOTIFY_PASSWORD_RESET};
    for (size_t k = 0; k < 2; k++) {
        preferences p;
        assert_hd(0, preferences_defaults(&p, "u1", NULL));
        preferences_change c;
        preferences_change_init(&c);
        c.enabled[NOTIFY_WELCOME] = 0;
        c.enabled[mandatory[k]] = 0;
        hd_error err;
        assert_hd_err(HD_EVALIDATE, preferences_apply(&p, &c, 1000, &err), &err);
        assert_non_null(strstr(err.text, notification_type_name(mandatory[k])));
        assert_non_null(strstr(err.text, "cannot be switched off"));
        /* Nothing changed: not even the welcome switch that came with it. */
        assert_true(preferences_allows(&p, NOTIFY_WELCOME));
        assert_false(p.stored);
        assert_int_equal(hd_aggregate_pending(&p.base), 0);
        preferences_release(&p);
    }
    /* Switching them ON explicitly is fine (and a no-op). */
    preferences p;
    assert_hd(0, preferences_defaults(&p, "u1", NULL));
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_PASSWORD_RESET] = 1;
    assert_int_equal(preferences_apply(&p, &c, 1000, NULL), 1); /* created */
    preferences_release(&p);
}

static void test_preferences_stored_off_still_allows_mandatory(void **state)
{
    (void)state;
    /* A row written by an older release, or by hand, with the switch off: the rule wins. */
    unsigned char off[NOTIFY_TYPE_COUNT] = {0, 0, 0, 0};
    preferences p;
    assert_hd(0, preferences_load(&p, "u1", 3, NULL, off, 1, 2));
    assert_true(preferences_allows(&p, NOTIFY_EMAIL_VERIFICATION));
    assert_true(preferences_allows(&p, NOTIFY_PASSWORD_RESET));
    assert_false(preferences_allows(&p, NOTIFY_WELCOME));
    assert_false(preferences_allows(&p, NOTIFY_SECURITY_ALERT));
    preferences_release(&p);
}

static void test_preferences_recipient(void **state)
{
    (void)state;
    preferences p;
    assert_hd(0, preferences_defaults(&p, "u1", NULL));
    assert_string_equal(preferences_recipient(&p, NOTIFY_WELCOME, "acct@example.com"),
                        "acct@example.com");
    preferences_change c;
    preferences_change_init(&c);
    c.email = "other@example.org";
    assert_int_equal(preferences_apply(&p, &c, 1, NULL), 1);
    assert_string_equal(preferences_recipient(&p, NOTIFY_WELCOME, "acct@example.com"),
                        "other@example.org");
    assert_string_equal(preferences_recipient(&p, NOTIFY_SECURITY_ALERT, "acct@example.com"),
                        "other@example.org");
    /* Verification and reset always go to the account's own address. */
    assert_string_equal(preferences_recipient(&p, NOTIFY_EMAIL_VERIFICATION, "acct@example.com"),
                        "acct@example.com");
    assert_string_equal(preferences_recipient(&p, NOTIFY_PASSWORD_RESET, "acct@example.com"),
                        "acct@example.com");
    /* "" removes the address. */
    c.email = "";
    assert_int_equal(preferences_apply(&p, &c, 2, NULL), 1);
    assert_string_equal(preferences_recipient(&p, NOTIFY_WELCOME, "acct@example.com"),
                        "acct@example.com");
    hd_error err;
    c.email = "not an address";
    assert_hd_err(HD_EVALIDATE, preferences_apply(&p, &c, 3, &err), &err);
    preferences_release(&p);
}

/* ---- Notification ------------------------------------------------------------------------ */

static notification_spec spec_of(notification_type t)
{
    notification_spec s = {.user_id = "u1",
                           .type = t,
                           .recipient = "ada@example.com",
                           .subject = "Hello",
                           .correlation_id = "corr-1",
                           .cause_id = "ev-1"};
    return s;
}

static void test_notification_new_pending_or_skipped(void **state)
{
    (void)state;
    notification_spec s = spec_of(NOTIFY_WELCOME);
    notification n;
    assert_int_equal(notification_new(&n, &s, NULL, 5000, NULL), 1);
    assert_int_equal(n.status, NOTIFY_PENDING);
    assert_true(hd_uuid_valid(notification_id(&n)));
    assert_string_equal(n.subject, "Hello");
    assert_int_equal(n.attempts, 0);
    assert_int_equal(n.created_at_ms, 5000);
    assert_int_equal(hd_aggregate_pending(&n.base), 0);
    assert_false(notification_is_final(&n));
    notification_release(&n);

    preferences p;
    assert_hd(0, preferences_defaults(&p, "u1", NULL));
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_WELCOME] = 0;
    assert_int_equal(preferences_apply(&p, &c, 1, NULL), 1);
    s.subject = NULL; /* a skipped notification needs none */
    assert_int_equal(notification_new(&n, &s, &p, 5000, NULL), 0);
    assert_int_equal(n.status, NOTIFY_SKIPPED);
    assert_null(n.subject);
    assert_true(notification_is_final(&n));
    notification_release(&n);

    /* The same preferences do not stop a verification mail. */
    notification_spec v = spec_of(NOTIFY_EMAIL_VERIFICATION);
    assert_int_equal(notification_new(&n, &v, &p, 5000, NULL), 1);
    notification_release(&n);
    preferences_release(&p);
}

static void test_notification_new_refuses_bad_input(void **state)
{
    (void)state;
    notification n;
    hd_error err;
    notification_spec s = spec_of(NOTIFY_WELCOME);
    s.recipient = "nobody";
    assert_hd_err(HD_EVALIDATE, notification_new(&n, &s, NULL, 1, &err), &err);
    assert_non_null(strstr(err.text, "recipient"));
    s = spec_of(NOTIFY_WELCOME);
    s.user_id = "";
    assert_hd(HD_EVALIDATE, notification_new(&n, &s, NULL, 1, &err));
    s = spec_of(NOTIFY_WELCOME);
    s.subject = "";
    assert_hd(HD_EVALIDATE, notification_new(&n, &s, NULL, 1, &err));
    s = spec_of(NOTIFY_TYPE_COUNT);
    assert_hd(HD_EVALIDATE, notification_new(&n, &s, NULL, 1, &err));
    notification_release(&n); /* harmless */
}

static void test_notification_sent(void **state)
{
    (void)state;
    notification_spec s = spec_of(NOTIFY_EMAIL_VERIFICATION);
    notification n;
    assert_int_equal(notification_new(&n, &s, NULL, 1000, NULL), 1);
    assert_hd(0, notification_record_sent(&n, 2000, NULL));
    assert_int_equal(n.status, NOTIFY_SENT);
    assert_int_equal(n.attempts, 1);
    assert_int_equal(n.sent_at_ms, 2000);
    hd_event *ev = take_one(&n.base);
    assert_string_equal(hd_event_type(ev), NOTIFICATION_SENT);
    assert_string_equal(hd_event_aggregate_id(ev), notification_id(&n));
    json_t *p = hd_event_payload(ev);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "email_verification");
    assert_int_equal(json_integer_value(json_object_get(p, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(p, "sent_at_ms")), 2000);
    assert_string_equal(json_string_value(json_object_get(p, "correlation_id")), "corr-1");
    assert_string_equal(json_string_value(json_object_get(p, "cause_id")), "ev-1");
    assert_null(json_object_get(p, "recipient")); /* no address in events */
    hd_event_free(ev);
    /* Final: nothing more may happen to it. */
    hd_error err;
    assert_hd(HD_ESTATE, notification_record_sent(&n, 3000, &err));
    assert_hd(HD_ESTATE, notification_record_failure(&n, "x", 5, 0, 3000, &err));
    notification_release(&n);
}

static void test_notification_retries_then_fails(void **state)
{
    (void)state;
    notification_spec s = spec_of(NOTIFY_WELCOME);
    notification n;
    assert_int_equal(notification_new(&n, &s, NULL, 1000, NULL), 1);
    assert_int_equal(notification_record_failure(&n, "421 try later", 3, 0, 2000, NULL), 0);
    assert_int_equal(n.status, NOTIFY_PENDING);
    assert_int_equal(n.attempts, 1);
    assert_string_equal(n.last_error, "421 try later");
    assert_int_equal(hd_aggregate_pending(&n.base), 0); /* a retry is not an event */
    assert_int_equal(notification_record_failure(&n, "timeout", 3, 0, 3000, NULL), 0);
    assert_int_equal(notification_record_failure(&n, "550 no such user", 3, 0, 4000, NULL), 1);
    assert_int_equal(n.status, NOTIFY_FAILED);
    assert_int_equal(n.attempts, 3);
    hd_event *ev = take_one(&n.base);
    assert_string_equal(hd_event_type(ev), NOTIFICATION_FAILED);
    json_t *p = hd_event_payload(ev);
    assert_string_equal(json_string_value(json_object_get(p, "last_error")), "550 no such user");
    assert_int_equal(json_integer_value(json_object_get(p, "attempts")), 3);
    assert_int_equal(json_integer_value(json_object_get(p, "failed_at_ms")), 4000);
    hd_event_free(ev);
    notification_release(&n);
}

static void test_notification_permanent_failure_and_error_cut(void **state)
{
    (void)state;
    notification_spec s = spec_of(NOTIFY_WELCOME);
    notification n;
    assert_int_equal(notification_new(&n, &s, NULL, 1000, NULL), 1);
    char reason[NOTIFY_ERROR_MAX + 100];
    memset(reason, 'e', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    assert_int_equal(notification_record_failure(&n, reason, 10, 1, 2000, NULL), 1);
    assert_int_equal(n.status, NOTIFY_FAILED);
    assert_int_equal(n.attempts, 1);
    assert_int_equal(strlen(n.last_error), NOTIFY_ERROR_MAX);
    notification_release(&n);
}

static void test_notification_load(void **state)
{
    (void)state;
    notification_spec s = spec_of(NOTIFY_SECURITY_ALERT);
    s.correlation_id = NULL;
    notification n;
    assert_hd(0, notification_load(&n, "6f1c2a4e-1b2c-4d5e-8f90-123456789abc", 2, &s,
                                   NOTIFY_PENDING, 2, "timeout", 10, 20, 0));
    assert_string_equal(notification_id(&n), "6f1c2a4e-1b2c-4d5e-8f90-123456789abc");
    assert_int_equal(hd_aggregate_version(&n.base), 2);
    assert_int_equal(n.attempts, 2);
    assert_null(n.correlation_id);
    assert_int_equal(notification_record_failure(&n, "again", 3, 0, 30, NULL), 1);
    notification_release(&n);
    notification_release(&n); /* twice is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_round_trip),
        cmocka_unit_test(test_switchable),
        cmocka_unit_test(test_value_checks),
        cmocka_unit_test(test_preferences_defaults_all_on),
        cmocka_unit_test(test_preferences_switch_off_optional),
        cmocka_unit_test(test_preferences_refuse_mandatory_off),
        cmocka_unit_test(test_preferences_stored_off_still_allows_mandatory),
        cmocka_unit_test(test_preferences_recipient),
        cmocka_unit_test(test_notification_new_pending_or_skipped),
        cmocka_unit_test(test_notification_new_refuses_bad_input),
        cmocka_unit_test(test_notification_sent),
        cmocka_unit_test(test_notification_retries_then_fails),
        cmocka_unit_test(test_notification_permanent_failure_and_error_cut),
        cmocka_unit_test(test_notification_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
