/* Unit tests for herald/clock.h: UUIDs and RFC 3339 time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/clock.h"

/* An id made by gen in a forked child differs from the next one its parent makes, from
 * character `from` on: the child does not reuse the parent's pool of random bytes. */
static void child_and_parent_differ(void (*gen)(char out[HD_UUID_LEN + 1]), size_t from)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c[HD_UUID_LEN + 1];
        gen(c);
        ssize_t w = write(fd[1], c, sizeof c);
        _exit(w == (ssize_t)sizeof c ? 0 : 1);
    }
    char child[HD_UUID_LEN + 1] = {0}, parent[HD_UUID_LEN + 1];
    assert_int_equal(read(fd[0], child, sizeof child), (ssize_t)sizeof child);
    int status;
    waitpid(pid, &status, 0);
    gen(parent);
    assert_string_not_equal(child + from, parent + from);
    close(fd[0]);
    close(fd[1]);
}

static void uuids_are_v4_and_distinct(void **state)
{
    (void)state;
    char a[HD_UUID_LEN + 1], b[HD_UUID_LEN + 1];
    hd_uuid_v4(a);
    hd_uuid_v4(b);
    assert_true(hd_uuid_valid(a));
    assert_int_equal(a[14], '4');
    assert_string_not_equal(a, b);
    assert_false(hd_uuid_valid("not-a-uuid"));
    assert_false(hd_uuid_valid("123e4567-e89b-12d3-a456-42661417400g"));
    assert_false(hd_uuid_valid(NULL));
    assert_true(hd_uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
}

static void uuids_stay_unique_across_many_and_across_fork(void **state)
{
    (void)state;
    /* Many ids from the pool: all v4, variant 1, and distinct (sorted neighbours). */
    enum { N = 3000 };
    static char ids[N][HD_UUID_LEN + 1];
    for (int i = 0; i < N; i++) {
        hd_uuid_v4(ids[i]);
        assert_true(hd_uuid_valid(ids[i]));
        assert_int_equal(ids[i][14], '4');
        assert_non_null(strchr("89ab", ids[i][19]));
    }
    qsort(ids, N, sizeof ids[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);

    /* A child must not hand out the ids its parent's pool would hand out next. */
    child_and_parent_differ(hd_uuid_v4, 0);
}

/* The first 48 bits of a v7 id: its time in milliseconds. */
static int64_t v7_ms(const char *id)
{
    char hex[13];
    memcpy(hex, id, 8);
    memcpy(hex + 8, id + 9, 4);
    hex[12] = '\0';
    return (int64_t)strtoll(hex, NULL, 16);
}

/* A v7 id carries the time it was made, its version and variant, and ids made in later
 * milliseconds sort after (as text: what an index on them sees); many are distinct, and a
 * child's are not its parent's. */
static void uuid_v7_carries_its_time_and_sorts_by_it(void **state)
{
    (void)state;
    char a[HD_UUID_LEN + 1], b[HD_UUID_LEN + 1];
    int64_t before = hd_time_now_ms();
    hd_uuid_v7(a);
    int64_t after = hd_time_now_ms();
    assert_true(hd_uuid_valid(a));
    assert_int_equal(a[14], '7');
    assert_non_null(strchr("89ab", a[19]));
    assert_true(v7_ms(a) >= before && v7_ms(a) <= after);
    struct timespec pause = {0, 2000000}; /* 2 ms: the next id is in a later millisecond */
    nanosleep(&pause, NULL);
    hd_uuid_v7(b);
    assert_true(v7_ms(b) > v7_ms(a));
    assert_true(strcmp(a, b) < 0);

    enum { N = 3000 };
    static char ids[N][HD_UUID_LEN + 1];
    for (int i = 0; i < N; i++) {
        hd_uuid_v7(ids[i]);
        assert_int_equal(ids[i][14], '7');
        assert_non_null(strchr("89ab", ids[i][19]));
        if (i > 0) /* never earlier than the one before (the clock does not step back here) */
            assert_true(v7_ms(ids[i]) >= v7_ms(ids[i - 1]));
    }
    qsort(ids, N, sizeof ids[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);

    child_and_parent_differ(hd_uuid_v7, 14); /* from 14: the part after the time */
}

static void format_and_parse_round_trip(void **state)
{
    (void)state;
    char buf[HD_TIME_LEN + 1];
    hd_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    hd_time_format(1795406706789LL, buf);
    assert_string_equal(buf, "2026-11-23T04:05:06.789Z");
    int64_t ms = 0;
    assert_hd(HD_OK, hd_time_parse(buf, &ms));
    assert_int_equal(ms, 1795406706789LL);
    assert_hd(HD_OK, hd_time_parse("2026-11-23T06:05:06+02:00", &ms));
    assert_int_equal(ms, 1795406706000LL);
    assert_hd(HD_OK, hd_time_parse("2000-02-29T00:00:00.5Z", &ms));
    assert_int_equal(ms, 951782400500LL);
}

/* hd_time_format(ms) is what gmtime_r and snprintf make of ms. */
static void formats_as_snprintf(int64_t ms)
{
    char got[HD_TIME_LEN + 1], want[64];
    hd_time_format(ms, got);
    time_t secs = (time_t)(ms / 1000);
    int rem = (int)(ms % 1000);
    if (rem < 0)
        rem += 1000, secs -= 1;
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem);
    assert_string_equal(got, want);
}

/* The digits written by hand agree with the snprintf they replaced, across days, leap
 * years, negative milliseconds (before 1970) and the years the width can hold. */
static void format_matches_snprintf(void **state)
{
    (void)state;
    const int64_t at[] = {0,        -1,           -999,          -1000,           999,
                          86399999, 951782400500, 1795406706789, -62167219200000, 253402300799999};
    for (size_t i = 0; i < sizeof at / sizeof at[0] + 2000; i++) {
        int64_t ms = i < sizeof at / sizeof at[0]
                         ? at[i]
                         : (int64_t)(i * 7919) * 1234567891LL % 253402300799999LL;
        formats_as_snprintf(ms);
    }
}

/* The same within a day and across the day's edges, where hd_time_format reuses the date
 * it kept for the day (clock.c): steps of a few seconds to a few hours, forwards, then back
 * to an earlier day, then a time before 1970 and one in the same day again. */
static void format_reusing_the_day_matches_snprintf(void **state)
{
    (void)state;
    int64_t ms = 1795406706789LL - 3 * 86400000LL;
    for (int i = 0; i < 3000; i++) {
        int64_t at[] = {ms, 86399999, 86400000, ms - 86400000, -1, ms};
        for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
            if (k > 0 && i % 500 != 0)
                break; /* the jumps now and then, the walk every time */
            formats_as_snprintf(at[k]);
        }
        ms += 1000LL * (1 + (i * 7919) % 7200) + i % 1000;
    }
}

static void parse_rejects_malformed_times(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "2026-11-22",
                         "2026-11-22T03:25:06",
                         "2026-13-01T00:00:00Z",
                         "2026-11-22T03:25:06.Z",
                         "2026-11-22T03:25:06Zjunk",
                         "yesterday",
                         "2026-11-22T03:25:06+0200"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_hd(HD_ETYPE, hd_time_parse(bad[i], NULL));
    assert_hd(HD_ETYPE, hd_time_parse(NULL, NULL));
}

static void clocks_move_forward(void **state)
{
    (void)state;
    int64_t t0 = hd_clock_ns();
    hd_sleep_ms(5);
    assert_true(hd_clock_ns() - t0 >= 5000000);
    assert_true(hd_time_now_ms() > 1700000000000LL);
}

/* A deadline is now + ms on CLOCK_MONOTONIC, its nanoseconds below one second, whatever
 * the milliseconds carry over; 0 and a negative ms give now. */
static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static void deadlines_are_monotonic_now_plus_ms(void **state)
{
    (void)state;
    static const int64_t ms[] = {0, -5, 1, 999, 1000, 1001, 20, 10000, 86400000};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        struct timespec before, d, after;
        clock_gettime(CLOCK_MONOTONIC, &before);
        hd_clock_deadline(&d, ms[i]);
        clock_gettime(CLOCK_MONOTONIC, &after);
        int64_t add = ms[i] > 0 ? ms[i] * 1000000 : 0;
        assert_in_range(d.tv_nsec, 0, 999999999);
        assert_true(ts_ns(&d) >= ts_ns(&before) + add);
        assert_true(ts_ns(&d) <= ts_ns(&after) + add);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uuids_are_v4_and_distinct),
        cmocka_unit_test(uuids_stay_unique_across_many_and_across_fork),
        cmocka_unit_test(uuid_v7_carries_its_time_and_sorts_by_it),
        cmocka_unit_test(format_and_parse_round_trip),
        cmocka_unit_test(format_matches_snprintf),
        cmocka_unit_test(format_reusing_the_day_matches_snprintf),
        cmocka_unit_test(parse_rejects_malformed_times),
        cmocka_unit_test(clocks_move_forward),
        cmocka_unit_test(deadlines_are_monotonic_now_plus_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
