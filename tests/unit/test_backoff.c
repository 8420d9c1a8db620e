/* Unit tests for herald/backoff.h: capped exponential backoff with full jitter. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>

#include "hd_test.h"
#include "herald/backoff.h"

static void ceiling_doubles_from_base_up_to_the_cap(void **state)
{
    (void)state;
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 100, 30000, 1));
    const int64_t expected[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
    for (unsigned a = 0; a < sizeof expected / sizeof expected[0]; a++)
        assert_int_equal(hd_backoff_ceiling(&b, a), expected[a]);
}

static void ceiling_never_overflows_for_huge_attempts(void **state)
{
    (void)state;
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 1, INT64_MAX, 1));
    assert_int_equal(hd_backoff_ceiling(&b, 0), 1);
    assert_int_equal(hd_backoff_ceiling(&b, 62), INT64_C(1) << 62);
    assert_int_equal(hd_backoff_ceiling(&b, 63), INT64_MAX);
    assert_int_equal(hd_backoff_ceiling(&b, 64), INT64_MAX);
    assert_int_equal(hd_backoff_ceiling(&b, UINT_MAX), INT64_MAX);
    assert_hd(HD_OK, hd_backoff_init(&b, INT64_MAX / 3, INT64_MAX, 1));
    assert_int_equal(hd_backoff_ceiling(&b, 1), (INT64_MAX / 3) * 2);
    assert_int_equal(hd_backoff_ceiling(&b, 2), INT64_MAX);
    /* a huge delay draw must not overflow either */
    int64_t d = hd_backoff_delay(&b, UINT_MAX);
    assert_true(d >= 0);
}

static void delay_stays_within_zero_and_the_ceiling(void **state)
{
    (void)state;
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 50, 10000, 42));
    for (unsigned a = 0; a < 200; a++) {
        int64_t ceiling = hd_backoff_ceiling(&b, a);
        for (int i = 0; i < 100; i++) {
            int64_t d = hd_backoff_delay(&b, a);
            assert_in_range(d, 0, ceiling);
        }
    }
}

static void cap_is_respected_and_reached(void **state)
{
    (void)state;
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 3, 7, 9));
    int64_t max = 0;
    for (int i = 0; i < 10000; i++) {
        int64_t d = hd_backoff_delay(&b, 30);
        assert_in_range(d, 0, 7);
        if (d > max)
            max = d;
    }
    assert_int_equal(max, 7); /* the bound is inclusive: the cap itself is drawn */
    /* a cap below base makes every ceiling the cap */
    assert_hd(HD_OK, hd_backoff_init(&b, 500, 100, 9));
    assert_int_equal(hd_backoff_ceiling(&b, 0), 100);
}

static void attempt_zero_is_bounded_by_base(void **state)
{
    (void)state;
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 10, 1000, 5));
    int seen[11] = {0};
    for (int i = 0; i < 11000; i++) {
        int64_t d = hd_backoff_delay(&b, 0);
        assert_in_range(d, 0, 10);
        seen[d]++;
    }
    for (int v = 0; v <= 10; v++)
        assert_true(seen[v] > 0); /* every value in [0, base] occurs */
    /* base 0 means "retry at once" */
    assert_hd(HD_OK, hd_backoff_init(&b, 0, 1000, 5));
    assert_int_equal(hd_backoff_ceiling(&b, 10), 0);
    assert_int_equal(hd_backoff_delay(&b, 10), 0);
}

static void same_seed_gives_the_same_sequence(void **state)
{
    (void)state;
    hd_backoff a, b;
    assert_hd(HD_OK, hd_backoff_init(&a, 100, 60000, 12345));
    assert_hd(HD_OK, hd_backoff_init(&b, 100, 60000, 12345));
    for (unsigned i = 0; i < 1000; i++)
        assert_int_equal(hd_backoff_delay(&a, i % 20), hd_backoff_delay(&b, i % 20));
}

static void different_seeds_give_different_sequences(void **state)
{
    (void)state;
    hd_backoff a, b;
    assert_hd(HD_OK, hd_backoff_init(&a, 100, 60000, 1));
    assert_hd(HD_OK, hd_backoff_init(&b, 100, 60000, 2));
    int differ = 0;
    for (int i = 0; i < 100; i++)
        differ += hd_backoff_delay(&a, 10) != hd_backoff_delay(&b, 10);
    assert_true(differ > 90);
    /* seed 0 is a seed like any other */
    assert_hd(HD_OK, hd_backoff_init(&a, 100, 60000, 0));
    int nonzero = 0;
    for (int i = 0; i < 100; i++)
        nonzero += hd_backoff_delay(&a, 10) != 0;
    assert_true(nonzero > 90);
}

static void delays_are_roughly_uniform(void **state)
{
    (void)state;
    /* Uniform on [0, c]: mean c/2, and each tenth of the range gets about a tenth of the
     * draws. 100000 draws put the sample mean within 1% of c/2 by a wide margin (its
     * standard deviation is about 0.1% of c). */
    hd_backoff b;
    assert_hd(HD_OK, hd_backoff_init(&b, 1000, 1000000, 2024));
    const unsigned attempt = 6; /* ceiling 64000 */
    const int64_t c = hd_backoff_ceiling(&b, attempt);
    const int n = 100000;
    double sum = 0;
    int buckets[10] = {0};
    for (int i = 0; i < n; i++) {
        int64_t d = hd_backoff_delay(&b, attempt);
        sum += (double)d;
        buckets[d * 10 / (c + 1)]++;
    }
    double mean = sum / n;
    assert_true(mean > c / 2.0 * 0.99 && mean < c / 2.0 * 1.01);
    for (int k = 0; k < 10; k++)
        assert_in_range(buckets[k], n / 10 * 95 / 100, n / 10 * 105 / 100);
}

static void init_rejects_negative_bounds(void **state)
{
    (void)state;
    hd_backoff b = {7, 8, 9};
    assert_hd(HD_EINVAL, hd_backoff_init(&b, -1, 100, 0));
    assert_hd(HD_EINVAL, hd_backoff_init(&b, 1, -100, 0));
    assert_hd(HD_EINVAL, hd_backoff_init(NULL, 1, 100, 0));
    assert_int_equal(b.base_ms, 7); /* left unchanged */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ceiling_doubles_from_base_up_to_the_cap),
        cmocka_unit_test(ceiling_never_overflows_for_huge_attempts),
        cmocka_unit_test(delay_stays_within_zero_and_the_ceiling),
        cmocka_unit_test(cap_is_respected_and_reached),
        cmocka_unit_test(attempt_zero_is_bounded_by_base),
        cmocka_unit_test(same_seed_gives_the_same_sequence),
        cmocka_unit_test(different_seeds_give_different_sequences),
        cmocka_unit_test(delays_are_roughly_uniform),
        cmocka_unit_test(init_rejects_negative_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
