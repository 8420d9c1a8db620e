/* The notifications service's dedup window against its retry horizon (retention.h): the
 * arithmetic, and the refusal with the arithmetic in the message. Links hd_svc_notifications. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"

#include "notifications/retention.h"

static void horizon_of_the_default_policy_is_its_tiers_plus_a_day(void **state)
{
    (void)state;
    int64_t retries = -1, replay = -1;
    hd_error err;
    hd_error_clear(&err);
    /* Default: 4 attempts, tiers 1 s, 5 s, 30 s; dead letters kept a day. */
    assert_int_equal(notif_retry_horizon_ms(NULL, &retries, &replay, &err), 36000 + 86400000LL);
    assert_int_equal(retries, 36000);
    assert_int_equal(replay, 86400000LL);
    /* The last tier repeats: 6 attempts over tiers 1 s, 10 s = 1 + 10 + 10 + 10 + 10 s. */
    hd_retry_policy p = {
        .max_attempts = 6, .ntiers = 2, .tier_ms = {1000, 10000}, .dlq_ttl_ms = 3600000};
    assert_int_equal(notif_retry_horizon_ms(&p, &retries, &replay, &err), 41000 + 3600000);
    assert_int_equal(retries, 41000);
    /* One attempt: no retry at all, only the replay. */
    p.max_attempts = 1;
    assert_int_equal(notif_retry_horizon_ms(&p, NULL, NULL, &err), 3600000);
    p.max_attempts = 0;
    assert_hd(HD_ECONFIG, (int)notif_retry_horizon_ms(&p, NULL, NULL, NULL));
}

static void retention_shorter_than_the_horizon_is_refused_with_the_arithmetic(void **state)
{
    (void)state;
    hd_error err;
    hd_error_clear(&err);
    assert_hd(HD_OK, notif_inbox_retention_check(168LL * 3600000, NULL, &err)); /* default */
    assert_hd(HD_OK, notif_inbox_retention_check(0, NULL, &err));               /* forever */
    assert_hd(HD_OK, notif_inbox_retention_check(86436000, NULL, &err));        /* exactly */
    assert_hd(HD_ECONFIG, notif_inbox_retention_check(86435999, NULL, NULL));
    assert_hd_err(HD_ECONFIG, notif_inbox_retention_check(3600000, NULL, &err), &err);
    assert_non_null(strstr(err.text, "HD_INBOX_RETENTION 1h is shorter"));
    assert_non_null(strstr(err.text, "retries 1s + 5s + 30s = 36000 ms (4 attempts)"));
    assert_non_null(strstr(err.text, "+ replay allowance 86400000 ms"));
    assert_non_null(strstr(err.text, "= 86436000 ms"));
    assert_non_null(strstr(err.text, "set at least 86436s"));
    /* A policy whose dead letters are kept forever counts the default day (retention.h). */
    hd_retry_policy p = {.max_attempts = 2, .ntiers = 1, .tier_ms = {60000}, .dlq_ttl_ms = -1};
    assert_hd_err(HD_ECONFIG, notif_inbox_retention_check(3600000, &p, &err), &err);
    assert_non_null(strstr(err.text, "retries 1m = 60000 ms (2 attempts)"));
    assert_hd(HD_OK, notif_inbox_retention_check(86460000, &p, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(horizon_of_the_default_policy_is_its_tiers_plus_a_day),
        cmocka_unit_test(retention_shorter_than_the_horizon_is_refused_with_the_arithmetic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
