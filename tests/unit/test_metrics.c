/* Unit tests for herald/metrics.h: registration, updates, the exposition text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/metrics.h"

static char *render(hd_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_hd(HD_OK, hd_metrics_render(m, &text, &len));
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

static void exposition_text_is_exactly_as_expected(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *req = hd_metrics_counter(m, "http_requests_total", "HTTP requests served.",
                                         "method", "route", NULL);
    hd_gauge *depth = hd_metrics_gauge(m, "outbox_depth", "Rows waiting in the outbox.", NULL);
    const double bounds[] = {0.1, 1};
    hd_histogram *lat =
        hd_metrics_histogram(m, "request_seconds", "Time to answer.", bounds, 2, "route", NULL);
    assert_non_null(req);
    assert_non_null(depth);
    assert_non_null(lat);

    /* Registered out of order and updated out of order: the output is sorted anyway. */
    assert_hd(HD_OK, hd_counter_inc(req, (const char *[]){"POST", "/users"}, 1));
    assert_hd(HD_OK, hd_counter_inc(req, (const char *[]){"GET", "/users/{id}"}, 1));
    assert_hd(HD_OK, hd_counter_inc(req, (const char *[]){"GET", "/users/{id}"}, 1));
    assert_hd(HD_OK, hd_gauge_set(depth, NULL, 7));
    /* Binary-exact values, so that the sum prints exactly. */
    assert_hd(HD_OK, hd_histogram_observe(lat, (const char *[]){"/a"}, 0.0625));
    assert_hd(HD_OK, hd_histogram_observe(lat, (const char *[]){"/a"}, 0.5));
    assert_hd(HD_OK, hd_histogram_observe(lat, (const char *[]){"/a"}, 3));

    char *text = render(m);
    assert_string_equal(text, "# HELP http_requests_total HTTP requests served.\n"
                              "# TYPE http_requests_total counter\n"
                              "http_requests_total{method=\"GET\",route=\"/users/{id}\"} 2\n"
                              "http_requests_total{method=\"POST\",route=\"/users\"} 1\n"
                              "# HELP outbox_depth Rows waiting in the outbox.\n"
                              "# TYPE outbox_depth gauge\n"
                              "outbox_depth 7\n"
                              "# HELP request_seconds Time to answer.\n"
                              "# TYPE request_seconds histogram\n"
                              "request_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n"
                              "request_seconds_bucket{route=\"/a\",le=\"1\"} 2\n"
                              "request_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"
                              "request_seconds_sum{route=\"/a\"} 3.5625\n"
                              "request_seconds_count{route=\"/a\"} 3\n");
    /* The same state renders to the same bytes. */
    char *again = render(m);
    assert_string_equal(text, again);
    free(again);
    free(text);
    hd_metrics_free(m);
}

static void unlabelled_metrics_start_at_zero_and_labelled_ones_appear_on_use(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    assert_non_null(hd_metrics_counter(m, "jobs_total", "Jobs.", NULL));
    assert_non_null(hd_metrics_counter(m, "errors_total", "Errors.", "kind", NULL));
    assert_non_null(hd_metrics_histogram(m, "wait_seconds", "Wait.", (const double[]){1}, 1, NULL));
    char *text = render(m);
    assert_string_equal(text, "# HELP jobs_total Jobs.\n"
                              "# TYPE jobs_total counter\n"
                              "jobs_total 0\n"
                              "# HELP wait_seconds Wait.\n"
                              "# TYPE wait_seconds histogram\n"
                              "wait_seconds_bucket{le=\"1\"} 0\n"
                              "wait_seconds_bucket{le=\"+Inf\"} 0\n"
                              "wait_seconds_sum 0\n"
                              "wait_seconds_count 0\n");
    free(text);
    hd_metrics_free(m);

    hd_metrics *empty = hd_metrics_new();
    text = render(empty);
    assert_string_equal(text, "");
    free(text);
    hd_metrics_free(empty);
}

static void histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    const double bounds[] = {1, 2, 4};
    hd_histogram *h = hd_metrics_histogram(m, "size", "Sizes.", bounds, 3, NULL);
    /* 0.5 and 1 (a value equal to a bound belongs to it) in le=1; 1.5 in le=2; none in
     * le=4; 10 and 100 only in +Inf. */
    const double values[] = {0.5, 1, 1.5, 10, 100};
    for (size_t i = 0; i < 5; i++)
        assert_hd(HD_OK, hd_histogram_observe(h, NULL, values[i]));
    char *text = render(m);
    assert_non_null(strstr(text, "size_bucket{le=\"1\"} 2\n"
                                 "size_bucket{le=\"2\"} 3\n"
                                 "size_bucket{le=\"4\"} 3\n"
                                 "size_bucket{le=\"+Inf\"} 5\n"
                                 "size_sum 113\n"
                                 "size_count 5\n"));
    double count, sum;
    assert_hd(HD_OK, hd_histogram_value(h, NULL, &count, &sum));
    assert_true(count == 5 && sum == 113);
    free(text);

    /* The default buckets are the classic latency ones, in seconds. */
    hd_histogram *lat = hd_metrics_histogram(m, "latency_seconds", "Latency.", NULL, 0, NULL);
    assert_hd(HD_OK, hd_histogram_observe(lat, NULL, 0.007));
    text = render(m);
    assert_non_null(strstr(text, "latency_seconds_bucket{le=\"0.005\"} 0\n"
                                 "latency_seconds_bucket{le=\"0.01\"} 1\n"
                                 "latency_seconds_bucket{le=\"0.025\"} 1\n"));
    assert_non_null(strstr(text, "latency_seconds_bucket{le=\"10\"} 1\n"
                                 "latency_seconds_bucket{le=\"+Inf\"} 1\n"
                                 "latency_seconds_sum 0.007\n"));
    free(text);
    hd_metrics_free(m);
}

static void label_values_and_help_are_escaped(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *c =
        hd_metrics_counter(m, "odd_total", "Help with \\ and\nnewline \"kept\".", "v", NULL);
    assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){"back\\slash \"quoted\"\nnext é"}, 1));
    char *text = render(m);
    assert_string_equal(text, "# HELP odd_total Help with \\\\ and\\nnewline \"kept\".\n"
                              "# TYPE odd_total counter\n"
                              "odd_total{v=\"back\\\\slash \\\"quoted\\\"\\nnext é\"} 1\n");
    free(text);
    hd_metrics_free(m);
}

struct depth_source {
    int calls;
    double value;
    int fail;
};

static int outbox_depth(void *ctx, double *out)
{
    struct depth_source *src = ctx;
    src->calls++;
    if (src->fail)
        return HD_ESTORE;
    *out = src->value;
    return HD_OK;
}

static void gauge_callback_is_computed_at_render_time(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_gauge *g = hd_metrics_gauge(m, "outbox_depth", "Rows waiting.", "store", NULL);
    struct depth_source src = {.value = 3};
    assert_hd(HD_OK, hd_gauge_set_func(g, (const char *[]){"sqlite"}, outbox_depth, &src));
    assert_hd(HD_OK, hd_gauge_set(g, (const char *[]){"pg"}, 1));
    assert_int_equal(src.calls, 0); /* nothing runs before a render */

    char *text = render(m);
    assert_string_equal(text, "# HELP outbox_depth Rows waiting.\n"
                              "# TYPE outbox_depth gauge\n"
                              "outbox_depth{store=\"pg\"} 1\n"
                              "outbox_depth{store=\"sqlite\"} 3\n");
    free(text);
    assert_int_equal(src.calls, 1);

    src.value = 42; /* each render asks again */
    text = render(m);
    assert_non_null(strstr(text, "outbox_depth{store=\"sqlite\"} 42\n"));
    free(text);

    /* A failing callback leaves its series out rather than reporting a made-up 0. */
    src.fail = 1;
    text = render(m);
    assert_null(strstr(text, "sqlite"));
    assert_non_null(strstr(text, "outbox_depth{store=\"pg\"} 1\n"));
    free(text);

    src.fail = 0;
    double v;
    assert_hd(HD_OK, hd_gauge_value(g, (const char *[]){"sqlite"}, &v));
    assert_true(v == 42);
    /* Back to a stored value. */
    assert_hd(HD_OK, hd_gauge_set_func(g, (const char *[]){"sqlite"}, NULL, NULL));
    assert_hd(HD_OK, hd_gauge_set(g, (const char *[]){"sqlite"}, 5));
    assert_hd(HD_OK, hd_gauge_value(g, (const char *[]){"sqlite"}, &v));
    assert_true(v == 5);
    hd_metrics_free(m);
}

static void registration_validates_and_deduplicates(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *a = hd_metrics_counter(m, "hits_total", "Hits.", "route", NULL);
    assert_non_null(a);
    /* The same name, kind and labels: the same handle (two modules may share a metric). */
    assert_ptr_equal(hd_metrics_counter(m, "hits_total", "Other help.", "route", NULL), a);
    /* Any other clash is refused. */
    assert_null(hd_metrics_counter(m, "hits_total", "Hits.", "method", NULL));
    assert_null(hd_metrics_gauge(m, "hits_total", "Hits.", "route", NULL));
    /* Invalid names. */
    assert_null(hd_metrics_counter(m, "9lives", "x", NULL));
    assert_null(hd_metrics_counter(m, "has-dash", "x", NULL));
    assert_null(hd_metrics_counter(m, "", "x", NULL));
    assert_null(hd_metrics_counter(m, NULL, "x", NULL));
    assert_non_null(hd_metrics_counter(m, "ns:rule_total", "colons are legal", NULL));
    assert_null(hd_metrics_counter(m, "ok_total", "x", "bad:label", NULL));
    assert_null(hd_metrics_counter(m, "ok_total", "x", "__reserved", NULL));
    assert_null(hd_metrics_counter(m, "ok_total", "x", "a", "a", NULL));
    assert_null(hd_metrics_histogram(m, "h", "x", NULL, 0, "le", NULL));
    /* Buckets must be finite and strictly increasing. */
    assert_null(hd_metrics_histogram(m, "h", "x", (const double[]){1, 1}, 2, NULL));
    assert_null(hd_metrics_histogram(m, "h", "x", (const double[]){2, 1}, 2, NULL));
    assert_null(hd_metrics_histogram(m, "h", "x", (const double[]){1, INFINITY}, 2, NULL));
    assert_null(hd_metrics_counter(NULL, "x_total", "x", NULL));
    hd_metrics_free(m);
}

static void updates_reject_bad_input(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *c = hd_metrics_counter(m, "c_total", "C.", "k", NULL);
    hd_histogram *h = hd_metrics_histogram(m, "h", "H.", NULL, 0, NULL);
    assert_hd(HD_EINVAL, hd_counter_inc(c, (const char *[]){"x"}, -1)); /* counters only rise */
    assert_hd(HD_EINVAL, hd_counter_inc(c, (const char *[]){"x"}, NAN));
    assert_hd(HD_EINVAL, hd_counter_inc(c, NULL, 1));                   /* labels missing */
    assert_hd(HD_EINVAL, hd_counter_inc(c, (const char *[]){NULL}, 1)); /* a NULL value */
    assert_hd(HD_EINVAL, hd_counter_inc(NULL, NULL, 1));
    assert_hd(HD_EINVAL, hd_histogram_observe(h, NULL, NAN));
    assert_hd(HD_EINVAL, hd_metrics_render(NULL, NULL, NULL));
    double v = -1;
    assert_hd(HD_OK, hd_counter_value(c, (const char *[]){"never"}, &v));
    assert_true(v == 0); /* reading does not create a series */
    char *text = render(m);
    assert_null(strstr(text, "never"));
    free(text);
    hd_metrics_free(m);
}

static void numbers_use_the_shortest_exact_form(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_gauge *g = hd_metrics_gauge(m, "g", "G.", "case", NULL);
    hd_gauge_set(g, (const char *[]){"a_tenth"}, 0.1);
    hd_gauge_set(g, (const char *[]){"b_big"}, 1234567);
    hd_gauge_set(g, (const char *[]){"c_tiny"}, 1e-9);
    hd_gauge_set(g, (const char *[]){"d_inf"}, INFINITY);
    hd_gauge_set(g, (const char *[]){"e_neg"}, -2.5);
    hd_gauge_set(g, (const char *[]){"f_huge"}, 1e20);
    hd_gauge_set(g, (const char *[]){"g_nan"}, NAN);
    hd_gauge_inc(g, (const char *[]){"h_incdec"}, 3);
    hd_gauge_dec(g, (const char *[]){"h_incdec"}, 5);
    char *text = render(m);
    assert_string_equal(text, "# HELP g G.\n"
                              "# TYPE g gauge\n"
                              "g{case=\"a_tenth\"} 0.1\n"
                              "g{case=\"b_big\"} 1234567\n"
                              "g{case=\"c_tiny\"} 1e-09\n"
                              "g{case=\"d_inf\"} +Inf\n"
                              "g{case=\"e_neg\"} -2.5\n"
                              "g{case=\"f_huge\"} 1e+20\n"
                              "g{case=\"g_nan\"} NaN\n"
                              "g{case=\"h_incdec\"} -2\n");
    free(text);
    hd_metrics_free(m);
}

#define THREADS    4
#define INCREMENTS 20000

static void *hammer(void *arg)
{
    hd_counter *c = arg;
    for (int i = 0; i < INCREMENTS; i++)
        hd_counter_inc(c, (const char *[]){i % 2 ? "odd" : "even"}, 1);
    return NULL;
}

static void concurrent_updates_are_not_lost(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *c = hd_metrics_counter(m, "n_total", "N.", "parity", NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, c), 0);
    for (int i = 0; i < 10; i++) { /* render while the writers run */
        char *text = NULL;
        assert_hd(HD_OK, hd_metrics_render(m, &text, NULL));
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    double even, odd;
    hd_counter_value(c, (const char *[]){"even"}, &even);
    hd_counter_value(c, (const char *[]){"odd"}, &odd);
    assert_true(even == THREADS * INCREMENTS / 2);
    assert_true(odd == THREADS * INCREMENTS / 2);
    hd_metrics_free(m);
}

/* 500 invented methods used to add 500 series (600 KB of /metrics): past the cap, new
 * combinations fold into one overflow series, the totals stay right, and the folds are
 * counted per family. */
static void series_past_the_cap_fold_into_the_overflow_series(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    assert_non_null(m);
    assert_hd(HD_OK, hd_metrics_set_max_series(m, 3));
    hd_counter *c = hd_metrics_counter(m, "req_total", "Requests.", "method", NULL);
    hd_histogram *h =
        hd_metrics_histogram(m, "lat_seconds", "Latency.", (const double[]){1}, 1, "method", NULL);
    assert_non_null(c);
    assert_non_null(h);
    for (int i = 0; i < 500; i++) {
        char method[16];
        snprintf(method, sizeof method, "M%03d", i);
        assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){method}, 1));
        assert_hd(HD_OK, hd_histogram_observe(h, (const char *[]){method}, 0.5));
    }
    /* an existing series keeps counting after the cap */
    assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){"M001"}, 1));
    double v;
    assert_hd(HD_OK, hd_counter_value(c, (const char *[]){"M001"}, &v));
    assert_true(v == 2);
    assert_hd(HD_OK, hd_counter_value(c, (const char *[]){HD_METRICS_OVERFLOW_VALUE}, &v));
    assert_true(v == 497);
    double count, sum;
    assert_hd(HD_OK,
              hd_histogram_value(h, (const char *[]){HD_METRICS_OVERFLOW_VALUE}, &count, &sum));
    assert_true(count == 497);

    char *text;
    size_t len;
    assert_hd(HD_OK, hd_metrics_render(m, &text, &len));
    assert_true(len < 4096);
    assert_null(strstr(text, "M499"));
    assert_non_null(strstr(text, "req_total{method=\"__overflow__\"} 497\n"));
    assert_non_null(strstr(text, "# TYPE " HD_METRICS_OVERFLOW_FAMILY
                                 " counter\n" HD_METRICS_OVERFLOW_FAMILY
                                 "{family=\"lat_seconds\"} 497\n" HD_METRICS_OVERFLOW_FAMILY
                                 "{family=\"req_total\"} 497\n"));
    free(text);

    /* A callback on the shared overflow series makes no sense: refused. */
    hd_gauge *g = hd_metrics_gauge(m, "g", "G.", "k", NULL);
    for (int i = 0; i < 3; i++)
        assert_hd(HD_OK, hd_gauge_set(g, (const char *[]){i == 0 ? "a" : i == 1 ? "b" : "c"}, 1));
    assert_hd(HD_ERANGE, hd_gauge_set_func(g, (const char *[]){"d"}, NULL, NULL));
    hd_metrics_free(m);

    /* The default cap is documented and in force. */
    m = hd_metrics_new();
    c = hd_metrics_counter(m, "req_total", "Requests.", "method", NULL);
    for (int i = 0; i < HD_METRICS_DEFAULT_MAX_SERIES + 10; i++) {
        char method[16];
        snprintf(method, sizeof method, "M%04d", i);
        assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){method}, 1));
    }
    assert_hd(HD_OK, hd_counter_value(c, (const char *[]){HD_METRICS_OVERFLOW_VALUE}, &v));
    assert_true(v == 10);
    hd_metrics_free(m);
}

/* A label value with bytes that are not UTF-8 (a raw HTTP method) must not make the
 * exposition unparseable: stored with U+FFFD, looked up the same way. */
static void label_values_are_always_valid_utf8(void **state)
{
    (void)state;
    hd_metrics *m = hd_metrics_new();
    hd_counter *c = hd_metrics_counter(m, "req_total", "Requests.", "method", "route", NULL);
    assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){"G\xffT", "/a\xc3"}, 1));
    assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){"G\xffT", "/a\xc3"}, 1));
    assert_hd(HD_OK, hd_counter_inc(c, (const char *[]){"\xed\xa0\x80", "\xc3\xa9"}, 1));
    double v;
    assert_hd(HD_OK, hd_counter_value(c, (const char *[]){"G\xffT", "/a\xc3"}, &v));
    assert_true(v == 2);
    char *text;
    assert_hd(HD_OK, hd_metrics_render(m, &text, NULL));
    assert_true(hd_test_utf8_valid(text));
    assert_non_null(
        strstr(text, "req_total{method=\"G\xef\xbf\xbdT\",route=\"/a\xef\xbf\xbd\"} 2\n"));
    /* a surrogate (ED A0 80) is three bad bytes; a valid "é" is kept */
    assert_non_null(
        strstr(text, "method=\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\",route=\"\xc3\xa9\"}"));
    free(text);
    hd_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exposition_text_is_exactly_as_expected),
        cmocka_unit_test(unlabelled_metrics_start_at_zero_and_labelled_ones_appear_on_use),
        cmocka_unit_test(histogram_buckets_are_cumulative),
        cmocka_unit_test(label_values_and_help_are_escaped),
        cmocka_unit_test(gauge_callback_is_computed_at_render_time),
        cmocka_unit_test(registration_validates_and_deduplicates),
        cmocka_unit_test(updates_reject_bad_input),
        cmocka_unit_test(numbers_use_the_shortest_exact_form),
        cmocka_unit_test(concurrent_updates_are_not_lost),
        cmocka_unit_test(series_past_the_cap_fold_into_the_overflow_series),
        cmocka_unit_test(label_values_are_always_valid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
