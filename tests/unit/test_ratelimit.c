/* Unit tests for herald/ratelimit.h: token buckets on a fake clock. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "hd_test.h"
#include "herald/ratelimit.h"

static int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static hd_ratelimit *limiter(double per_second, double burst, size_t max_keys)
{
    hd_ratelimit_options o = {
        .per_second = per_second, .burst = burst, .max_keys = max_keys, .clock_ms = fake_clock};
    hd_ratelimit *rl = NULL;
    assert_hd(HD_OK, hd_ratelimit_new(&o, &rl, NULL));
    return rl;
}

static void burst_then_rate(void **state)
{
    (void)state;
    fake_now = 1000;
    hd_ratelimit *rl = limiter(0.5, 3, 0); /* 30/min, bursts of 3 */
    int64_t wait = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", &wait), 1);
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", &wait), 0);
    assert_int_equal(wait, 2000); /* one token every 2 s */
    fake_now += 1999;
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", &wait), 0);
    assert_int_equal(wait, 1);
    fake_now += 1;
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", &wait), 1);
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", &wait), 0);
    /* another key has its own bucket */
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.2", &wait), 1);
    /* a long pause refills to the burst, no further */
    fake_now += 3600 * 1000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", NULL), 1);
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", NULL), 0);
    /* the clock going backwards takes nothing away and gives nothing */
    fake_now -= 10000;
    assert_int_equal(hd_ratelimit_take(rl, "10.0.0.1", NULL), 0);
    hd_ratelimit_free(rl);
}

/* Past max_keys, new keys share one overflow bucket: memory stays bounded and a flood of
 * fresh keys is still limited; keys already tracked keep their own bucket. */
static void bounded_keys_share_an_overflow_bucket(void **state)
{
    (void)state;
    fake_now = 0;
    hd_ratelimit *rl = limiter(1, 2, 4);
    char key[32];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(hd_ratelimit_take(rl, key, NULL), 1);
    }
    assert_int_equal(hd_ratelimit_keys(rl), 4);
    /* 1000 new keys: only the overflow bucket's 2 tokens are granted */
    int granted = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "new%d", i);
        granted += hd_ratelimit_take(rl, key, NULL);
    }
    assert_int_equal(granted, 2);
    assert_int_equal(hd_ratelimit_keys(rl), 4);
    /* the tracked keys were not hurt */
    assert_int_equal(hd_ratelimit_take(rl, "k0", NULL), 1);
    /* once they refill (and a second passed since the last sweep) they are forgotten and
     * new keys get buckets of their own again */
    fake_now += 5000;
    assert_int_equal(hd_ratelimit_take(rl, "fresh", NULL), 1);
    assert_int_equal(hd_ratelimit_keys(rl), 1);
    hd_ratelimit_free(rl);
}

static void long_keys_are_cut(void **state)
{
    (void)state;
    fake_now = 0;
    hd_ratelimit *rl = limiter(1, 1, 0);
    char a[600], b[600];
    memset(a, 'x', sizeof a - 1);
    a[sizeof a - 1] = '\0';
    memcpy(b, a, sizeof b);
    b[500] = 'y'; /* differs past HD_RATELIMIT_KEY_MAX: the same key */
    assert_int_equal(hd_ratelimit_take(rl, a, NULL), 1);
    assert_int_equal(hd_ratelimit_take(rl, b, NULL), 0);
    hd_ratelimit_free(rl);
}

static void arguments_and_rates(void **state)
{
    (void)state;
    hd_ratelimit *rl = NULL;
    hd_ratelimit_options bad = {.per_second = 0, .burst = 1};
    assert_hd(HD_EINVAL, hd_ratelimit_new(&bad, &rl, NULL));
    bad = (hd_ratelimit_options){.per_second = 1, .burst = 0.5};
    assert_hd(HD_EINVAL, hd_ratelimit_new(&bad, &rl, NULL));
    assert_null(rl);
    assert_hd(HD_EINVAL, hd_ratelimit_take(NULL, "k", NULL));
    double r = 0;
    assert_hd(HD_OK, hd_ratelimit_parse_rate("30/m", &r));
    assert_true(r > 0.4999 && r < 0.5001);
    assert_hd(HD_OK, hd_ratelimit_parse_rate("2/s", &r));
    assert_true(r == 2.0);
    assert_hd(HD_OK, hd_ratelimit_parse_rate("36/h", &r));
    assert_true(r > 0.00999 && r < 0.01001);
    const char *wrong[] = {"", "30", "30/", "30/d", "0/m", "-1/s", "x/s", "30/mm", "nan/s"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++)
        assert_hd(HD_EINVAL, hd_ratelimit_parse_rate(wrong[i], &r));
    hd_ratelimit_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_rate),
        cmocka_unit_test(bounded_keys_share_an_overflow_bucket),
        cmocka_unit_test(long_keys_are_cut),
        cmocka_unit_test(arguments_and_rates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
