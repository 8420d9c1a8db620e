/* Unit tests for herald/retry.h: delay tiers, attempts counted from x-death, giving up. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "hd_test.h"
#include "herald/retry.h"

static hd_retry_policy policy(int max_attempts, int ntiers, const int64_t *ms)
{
    hd_retry_policy p;
    memset(&p, 0, sizeof p);
    p.max_attempts = max_attempts;
    p.ntiers = ntiers;
    for (int i = 0; i < ntiers; i++)
        p.tier_ms[i] = ms[i];
    return p;
}

static void default_policy_is_valid(void **state)
{
    (void)state;
    hd_retry_policy p;
    hd_retry_policy_default(&p);
    assert_hd(HD_OK, hd_retry_policy_check(&p, NULL));
    assert_int_equal(p.ntiers, 3);
    assert_int_equal(p.tier_ms[0], 1000);
    assert_int_equal(p.tier_ms[1], 5000);
    assert_int_equal(p.tier_ms[2], 30000);
    assert_int_equal(p.max_attempts, 4);
}

static void bad_policies_are_refused(void **state)
{
    (void)state;
    hd_error err;
    int64_t ms[] = {100, 0};
    hd_retry_policy p = policy(0, 1, ms);
    assert_hd_err(HD_ECONFIG, hd_retry_policy_check(&p, &err), &err);
    assert_non_null(strstr(err.text, "max_attempts"));
    p = policy(3, 0, ms);
    assert_hd(HD_ECONFIG, hd_retry_policy_check(&p, NULL));
    p = policy(3, 1, ms);
    p.ntiers = HD_RETRY_MAX_TIERS + 1;
    assert_hd(HD_ECONFIG, hd_retry_policy_check(&p, NULL));
    p = policy(3, 2, ms); /* second tier is 0 ms */
    assert_hd_err(HD_ECONFIG, hd_retry_policy_check(&p, &err), &err);
    assert_non_null(strstr(err.text, "tier 1"));
    assert_hd(HD_ECONFIG, hd_retry_policy_check(NULL, NULL));
}

static void tiers_grow_then_repeat_the_last(void **state)
{
    (void)state;
    int64_t ms[] = {1000, 5000, 30000};
    hd_retry_policy p = policy(10, 3, ms);
    assert_int_equal(hd_retry_tier(&p, 1), 0);
    assert_int_equal(hd_retry_tier(&p, 2), 1);
    assert_int_equal(hd_retry_tier(&p, 3), 2);
    assert_int_equal(hd_retry_tier(&p, 4), 2);
    assert_int_equal(hd_retry_tier(&p, 9), 2);
    assert_int_equal(hd_retry_delay_ms(&p, 1), 1000);
    assert_int_equal(hd_retry_delay_ms(&p, 2), 5000);
    assert_int_equal(hd_retry_delay_ms(&p, 7), 30000);
    assert_hd(HD_EINVAL, hd_retry_tier(&p, 0));
    assert_hd(HD_EINVAL, (int)hd_retry_delay_ms(&p, -1));
}

static void dead_after_max_attempts(void **state)
{
    (void)state;
    int64_t ms[] = {200};
    hd_retry_policy p = policy(3, 1, ms);
    assert_false(hd_retry_exhausted(&p, 1));
    assert_false(hd_retry_exhausted(&p, 2));
    assert_true(hd_retry_exhausted(&p, 3));
    assert_true(hd_retry_exhausted(&p, 4));
    p.max_attempts = 1; /* never retry */
    assert_true(hd_retry_exhausted(&p, 1));
}

static hd_xdeath death(const char *queue, const char *reason, int64_t count)
{
    hd_xdeath d;
    memset(&d, 0, sizeof d);
    strcpy(d.queue, queue);
    strcpy(d.reason, reason);
    d.count = count;
    return d;
}

static void attempts_count_only_our_expired_tiers(void **state)
{
    (void)state;
    const char *tiers[] = {"orders.retry.1000ms", "orders.retry.5000ms"};
    assert_int_equal(hd_retry_attempt(NULL, 0, tiers, 2), 1);

    hd_xdeath ds[] = {
        death("orders.retry.5000ms", "expired", 2),
        death("orders.retry.1000ms", "expired", 1),
        death("billing.retry.1000ms", "expired", 7), /* another service's tier */
        death("orders", "rejected", 3),              /* not a delay */
        death("orders.retry.1000ms", "maxlen", 4),   /* dropped, not expired */
    };
    assert_int_equal(hd_retry_attempt(ds, 5, tiers, 2), 1 + 2 + 1);
    /* A name listed twice must not count an entry twice. */
    const char *dup[] = {"orders.retry.1000ms", "orders.retry.1000ms"};
    assert_int_equal(hd_retry_attempt(ds, 5, dup, 2), 1 + 1);
    /* Nonsense counts never lower the attempt below 1. */
    hd_xdeath neg = death("orders.retry.1000ms", "expired", -5);
    assert_int_equal(hd_retry_attempt(&neg, 1, tiers, 2), 1);
}

/* Build the x-death header the way the broker sends it: an array of tables. */
static amqp_table_entry_t entry_str(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static amqp_table_entry_t entry_i64(const char *k, int64_t v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    return e;
}

static void xdeath_is_parsed_from_headers(void **state)
{
    (void)state;
    amqp_table_entry_t d1[] = {entry_i64("count", 2), entry_str("exchange", ""),
                               entry_str("queue", "orders.retry.1000ms"),
                               entry_str("reason", "expired")};
    amqp_table_entry_t d2[4];
    d2[0] = entry_str("reason", "rejected");
    d2[1] = entry_str("queue", "orders");
    d2[2] = entry_str("exchange", "shop");
    d2[3].key = amqp_cstring_bytes("count");
    d2[3].value.kind = AMQP_FIELD_KIND_U8; /* narrowed by some client: still an integer */
    d2[3].value.value.u8 = 1;
    amqp_field_value_t items[2];
    items[0].kind = AMQP_FIELD_KIND_TABLE;
    items[0].value.table.num_entries = 4;
    items[0].value.table.entries = d1;
    items[1].kind = AMQP_FIELD_KIND_TABLE;
    items[1].value.table.num_entries = 4;
    items[1].value.table.entries = d2;
    amqp_table_entry_t h[2];
    h[0] = entry_str("x-herald-note", "unrelated");
    h[1].key = amqp_cstring_bytes("x-death");
    h[1].value.kind = AMQP_FIELD_KIND_ARRAY;
    h[1].value.value.array.num_entries = 2;
    h[1].value.value.array.entries = items;
    amqp_table_t headers = {2, h};

    hd_xdeath out[4];
    size_t n = 99;
    assert_hd(HD_OK, hd_xdeath_parse(&headers, out, 4, &n));
    assert_int_equal(n, 2);
    assert_string_equal(out[0].queue, "orders.retry.1000ms");
    assert_string_equal(out[0].reason, "expired");
    assert_string_equal(out[0].exchange, "");
    assert_int_equal(out[0].count, 2);
    assert_string_equal(out[1].queue, "orders");
    assert_string_equal(out[1].reason, "rejected");
    assert_string_equal(out[1].exchange, "shop");
    assert_int_equal(out[1].count, 1);
    const char *tiers[] = {"orders.retry.1000ms"};
    assert_int_equal(hd_retry_attempt(out, n, tiers, 1), 3);

    /* Capacity 1: the first (most recent) entry only. */
    assert_hd(HD_OK, hd_xdeath_parse(&headers, out, 1, &n));
    assert_int_equal(n, 1);

    /* No headers, no x-death: nothing. */
    assert_hd(HD_OK, hd_xdeath_parse(NULL, out, 4, &n));
    assert_int_equal(n, 0);
    amqp_table_t only_note = {1, h};
    assert_hd(HD_OK, hd_xdeath_parse(&only_note, out, 4, &n));
    assert_int_equal(n, 0);

    /* An x-death that is not an array of tables was not written by the broker. */
    h[1].value.kind = AMQP_FIELD_KIND_UTF8;
    h[1].value.value.bytes = amqp_cstring_bytes("3");
    assert_hd(HD_EPROTO, hd_xdeath_parse(&headers, out, 4, &n));
    h[1].value.kind = AMQP_FIELD_KIND_ARRAY;
    items[1].kind = AMQP_FIELD_KIND_I32;
    assert_hd(HD_EPROTO, hd_xdeath_parse(&headers, out, 4, &n));
}

/* One x-death table entry of the forged header below: queue, reason and a count field of
 * any kind (the forger chooses). */
static void forged_entry(amqp_table_entry_t e[3], const char *queue, amqp_field_value_t count)
{
    e[0] = entry_str("queue", queue);
    e[1] = entry_str("reason", "expired");
    e[2].key = amqp_cstring_bytes("count");
    e[2].value = count;
}

/* x-death comes with the message, and any publisher can write it. Counts that sum past
 * INT64_MAX once made the attempt negative: hd_retry_exhausted said "retry", hd_retry_tier
 * said HD_EINVAL, and the consumer indexed its tier array with that. Now the sum saturates
 * and the message is exhausted: it goes to the DLQ. */
static void forged_xdeath_counts_saturate(void **state)
{
    (void)state;
    int64_t ms[] = {1000, 5000};
    hd_retry_policy p = policy(4, 2, ms);
    const char *tiers[] = {"orders.retry.1000ms", "orders.retry.5000ms"};

    /* Huge counts, parsed from a header as the consumer does. */
    amqp_field_value_t big = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = INT64_MAX};
    amqp_field_value_t ubig = {.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX};
    amqp_field_value_t neg = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = INT64_MIN};
    amqp_field_value_t text = {.kind = AMQP_FIELD_KIND_UTF8,
                               .value.bytes = amqp_cstring_bytes("9999")};
    amqp_field_value_t real = {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 1e300};
    amqp_table_entry_t e[5][3];
    forged_entry(e[0], tiers[0], big);
    forged_entry(e[1], tiers[1], big);
    forged_entry(e[2], tiers[0], ubig);
    forged_entry(e[3], tiers[1], neg);
    forged_entry(e[4], tiers[0], text);
    amqp_field_value_t items[5];
    for (int i = 0; i < 5; i++) {
        items[i].kind = AMQP_FIELD_KIND_TABLE;
        items[i].value.table.num_entries = 3;
        items[i].value.table.entries = e[i];
    }
    amqp_table_entry_t h[1];
    h[0].key = amqp_cstring_bytes("x-death");
    h[0].value.kind = AMQP_FIELD_KIND_ARRAY;
    h[0].value.value.array.num_entries = 5;
    h[0].value.value.array.entries = items;
    amqp_table_t headers = {1, h};
    hd_xdeath out[8];
    size_t n = 0;
    assert_hd(HD_OK, hd_xdeath_parse(&headers, out, 8, &n));
    assert_int_equal(n, 5);
    assert_true(out[2].count == INT64_MAX); /* u64 clamped when parsed */
    assert_int_equal(out[4].count, 0);      /* a string is no count */
    int attempt = hd_retry_attempt(out, n, tiers, 2);
    assert_int_equal(attempt, INT_MAX);
    assert_true(hd_retry_exhausted(&p, attempt));
    int tier = hd_retry_tier(&p, attempt);
    assert_true(tier >= 0 && tier < p.ntiers);

    /* The sum saturates whatever the order: huge after small, small after huge. */
    hd_xdeath ds[] = {
        death(tiers[0], "expired", 3),
        death(tiers[1], "expired", INT64_MAX - 1),
        death(tiers[0], "expired", INT64_MAX),
        death(tiers[1], "expired", 5),
    };
    assert_int_equal(hd_retry_attempt(ds, 4, tiers, 2), INT_MAX);
    assert_int_equal(hd_retry_attempt(ds + 2, 2, tiers, 2), INT_MAX);
    /* Just below the cap stays exact; one more saturates. */
    hd_xdeath edge[] = {death(tiers[0], "expired", INT_MAX - 2), death(tiers[1], "expired", 1)};
    assert_int_equal(hd_retry_attempt(edge, 1, tiers, 2), INT_MAX - 1);
    assert_int_equal(hd_retry_attempt(edge, 2, tiers, 2), INT_MAX);

    /* Negative and zero counts add nothing, even many of them. */
    hd_xdeath negs[] = {death(tiers[0], "expired", INT64_MIN), death(tiers[1], "expired", -1),
                        death(tiers[0], "expired", 0), death(tiers[1], "expired", 2)};
    assert_int_equal(hd_retry_attempt(negs, 4, tiers, 2), 3);

    /* Wrong types inside a well-formed array: no count, a count of another kind, a queue
     * that is a number. None of them counts, none of them fails. */
    amqp_field_value_t num = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 7};
    amqp_table_entry_t w[2][3];
    forged_entry(w[0], tiers[0], text);
    forged_entry(w[1], tiers[0], num);
    w[1][0].value = num; /* "queue": 7 */
    for (int i = 0; i < 2; i++)
        items[i].value.table.entries = w[i];
    h[0].value.value.array.num_entries = 2;
    assert_hd(HD_OK, hd_xdeath_parse(&headers, out, 8, &n));
    assert_int_equal(n, 2);
    assert_int_equal(hd_retry_attempt(out, n, tiers, 2), 1);
    items[0].value.table.entries[2].value = real; /* a float count */
    assert_hd(HD_OK, hd_xdeath_parse(&headers, out, 8, &n));
    assert_int_equal(hd_retry_attempt(out, n, tiers, 2), 1);

    /* Whatever the attempt, the tier is inside the array or the message is exhausted. */
    const int probes[] = {INT_MIN, -22, -1, 0, 1, 2, 3, 4, 5, INT_MAX - 1, INT_MAX};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int t = hd_retry_tier(&p, probes[i]);
        assert_true(hd_retry_exhausted(&p, probes[i]) || (t >= 0 && t < p.ntiers));
    }
    assert_true(hd_retry_exhausted(&p, 0));
    assert_true(hd_retry_exhausted(&p, -1));
}

static void names_follow_the_queue(void **state)
{
    (void)state;
    char buf[300];
    assert_hd(HD_OK, hd_retry_tier_queue_name(buf, sizeof buf, "shop.billing", 5000));
    assert_string_equal(buf, "shop.billing.retry.5000ms");
    assert_hd(HD_OK, hd_retry_dlq_name(buf, sizeof buf, "shop.billing"));
    assert_string_equal(buf, "shop.billing.dlq");
    assert_hd(HD_OK, hd_retry_exchange_name(buf, sizeof buf, "shop.billing"));
    assert_string_equal(buf, "shop.billing.retry");
    char small[8];
    assert_hd(HD_ERANGE, hd_retry_dlq_name(small, sizeof small, "shop.billing"));
    char longq[260];
    memset(longq, 'q', 252);
    longq[252] = '\0';
    assert_hd(HD_ERANGE, hd_retry_dlq_name(buf, sizeof buf, longq)); /* 256 > 255 */
    assert_hd(HD_EINVAL, hd_retry_exchange_name(buf, sizeof buf, NULL));
}

static void topology_names_come_in_one_value(void **state)
{
    (void)state;
    hd_retry_names n;
    hd_error err;
    hd_retry_policy p = {.max_attempts = 3, .ntiers = 3, .tier_ms = {200, 200, 1000}};
    assert_hd(HD_OK, hd_retry_names_make("orders", &p, &n, &err));
    assert_string_equal(n.queue, "orders");
    assert_string_equal(n.retry_exchange, "orders.retry");
    assert_string_equal(n.dlq, "orders.dlq");
    assert_int_equal(n.ntiers, 3);
    assert_string_equal(n.tiers[0], "orders.retry.200ms");
    assert_string_equal(n.tiers[1], "orders.retry.200ms"); /* same delay, same queue */
    assert_string_equal(n.tiers[2], "orders.retry.1000ms");

    assert_hd(HD_OK, hd_retry_names_make("orders", NULL, &n, &err)); /* the default policy */
    assert_int_equal(n.ntiers, 3);
    assert_string_equal(n.tiers[2], "orders.retry.30000ms");

    assert_hd(HD_EINVAL, hd_retry_names_make("", &p, &n, &err));
    assert_hd(HD_EINVAL, hd_retry_names_make(NULL, &p, &n, &err));
    hd_retry_policy bad = {.max_attempts = 0, .ntiers = 1, .tier_ms = {1}};
    assert_hd(HD_ECONFIG, hd_retry_names_make("orders", &bad, &n, &err));
    char longq[252];
    memset(longq, 'q', sizeof longq - 1);
    longq[sizeof longq - 1] = '\0'; /* 251 bytes: "<q>.dlq" fits, "<q>.retry" does not */
    assert_hd(HD_ERANGE, hd_retry_names_make(longq, &p, &n, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_policy_is_valid),
        cmocka_unit_test(bad_policies_are_refused),
        cmocka_unit_test(tiers_grow_then_repeat_the_last),
        cmocka_unit_test(dead_after_max_attempts),
        cmocka_unit_test(attempts_count_only_our_expired_tiers),
        cmocka_unit_test(xdeath_is_parsed_from_headers),
        cmocka_unit_test(forged_xdeath_counts_saturate),
        cmocka_unit_test(names_follow_the_queue),
        cmocka_unit_test(topology_names_come_in_one_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
