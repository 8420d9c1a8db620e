/* Unit tests for herald/replica.h without a server: WAL positions, the routing decision, the
 * bounded read-your-writes table and its floor, and the no-standby path (every read on the
 * primary). The standby itself is tested in tests/integration/test_replica.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/metrics_replica.h"
#include "herald/replica.h"

static void lsn_parses_and_formats_like_postgresql(void **state)
{
    (void)state;
    uint64_t v = 1;
    assert_hd(HD_OK, hd_replica_lsn_parse("0/0", &v));
    assert_true(v == 0);
    assert_hd(HD_OK, hd_replica_lsn_parse("16/B374D848", &v));
    assert_true(v == (UINT64_C(0x16) << 32 | 0xB374D848u));
    char t[HD_REPLICA_LSN_MAX + 1];
    assert_int_equal(hd_replica_lsn_format(v, t), 11);
    assert_string_equal(t, "16/B374D848");
    assert_hd(HD_OK, hd_replica_lsn_parse("FFFFFFFF/FFFFFFFF", &v));
    assert_true(v == UINT64_MAX);
    assert_int_equal(hd_replica_lsn_format(v, t), HD_REPLICA_LSN_MAX);
    assert_string_equal(t, "FFFFFFFF/FFFFFFFF");
    assert_hd(HD_OK, hd_replica_lsn_parse("0/3000148", &v));
    assert_true(v == 0x3000148u);
    /* Positions compare as numbers, not as text: "9/..." < "10/...". */
    uint64_t a, b;
    assert_hd(HD_OK, hd_replica_lsn_parse("9/FFFFFFFF", &a));
    assert_hd(HD_OK, hd_replica_lsn_parse("A/0", &b));
    assert_true(a < b);
    const char *bad[] = {"",     "/",   "1/",          "/1",          "1",    "1/2/3",
                         "1 /2", "g/1", "123456789/0", "0/123456789", "1/2 ", "-1/2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (hd_replica_lsn_parse(bad[i], &v) != HD_EINVAL)
            fail_msg("'%s' parsed", bad[i]);
    assert_hd(HD_EINVAL, hd_replica_lsn_parse(NULL, &v));
}

static void decide_follows_the_rules_in_order(void **state)
{
    (void)state;
    hd_replica_view v = {.configured = 1,
                         .up = 1,
                         .lag_ms = 10,
                         .max_lag_ms = 5000,
                         .replay_lsn = 100,
                         .need_lsn = 0};
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_STANDBY);
    v.need_lsn = 100; /* exactly replayed: the write is there */
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_STANDBY);
    v.need_lsn = 101;
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_OWN_WRITE);
    v.lag_ms = 5000; /* at the limit: still acceptable */
    v.need_lsn = 0;
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_STANDBY);
    v.lag_ms = 5001;
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_LAGGING);
    v.lag_ms = -1; /* unknown is too much */
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_LAGGING);
    v.need_lsn = 1000; /* lag is checked before the own write */
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_LAGGING);
    v.up = 0;
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_DOWN);
    v.configured = 0;
    assert_int_equal(hd_replica_decide(&v), HD_REPLICA_NO_STANDBY);

    assert_string_equal(hd_replica_route_name(HD_REPLICA_STANDBY), "standby");
    assert_string_equal(hd_replica_route_name(HD_REPLICA_NO_STANDBY), "no_standby");
    assert_string_equal(hd_replica_route_name(HD_REPLICA_DOWN), "down");
    assert_string_equal(hd_replica_route_name(HD_REPLICA_LAGGING), "lagging");
    assert_string_equal(hd_replica_route_name(HD_REPLICA_OWN_WRITE), "own_write");
    assert_string_equal(hd_replica_route_name((hd_replica_route)99), "?");
}

static hd_store *memory_store(void)
{
    hd_store *s = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_store_open("sqlite::memory:", &s, &err));
    return s;
}

static void without_a_standby_every_read_is_on_the_primary(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_replica_open(primary, NULL, NULL, &r, &err));
    assert_false(hd_replica_configured(r));
    hd_replica_route why = HD_REPLICA_STANDBY;
    assert_ptr_equal(hd_replica_for_read(r, "u1", 0, &why), primary);
    assert_int_equal(why, HD_REPLICA_NO_STANDBY);
    /* A write costs nothing without a standby: no position is asked (SQLite has none). */
    uint64_t lsn = 7;
    assert_hd(HD_OK, hd_replica_wrote(r, "u1", &lsn, &err));
    assert_true(lsn == 0);
    assert_ptr_equal(hd_replica_for_read(r, NULL, 0, &why), primary);
    assert_null(hd_replica_read_failed(r, primary, &why)); /* the primary's failure is ours */
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_int_equal(st.reads[HD_REPLICA_NO_STANDBY], 2);
    assert_int_equal(st.reads[HD_REPLICA_STANDBY], 0);
    assert_int_equal(st.standby_up, 0);
    assert_int_equal(st.lag_ms, -1);
    hd_replica_close(r);

    /* "" is "none" too (an empty setting). */
    assert_hd(HD_OK, hd_replica_open(primary, "", NULL, &r, &err));
    assert_false(hd_replica_configured(r));
    hd_replica_close(r);
    hd_store_close(primary);
}

static void open_refuses_what_cannot_work(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = (hd_replica *)1;
    hd_error err;
    assert_hd(HD_EINVAL, hd_replica_open(NULL, NULL, NULL, &r, &err));
    assert_null(r);
    assert_hd(HD_EURL, hd_replica_open(primary, "sqlite::memory:", NULL, &r, &err));
    assert_hd(HD_EINVAL, hd_replica_open(primary, "postgresql://localhost/x", NULL, &r, &err));
    assert_non_null(strstr(err.text, "PostgreSQL primary"));
    hd_replica_options o = {.max_lag_ms = -1};
    assert_hd(HD_EINVAL, hd_replica_open(primary, NULL, &o, &r, &err));
    o = (hd_replica_options){.subjects = HD_REPLICA_SUBJECTS_MAX + 1};
    assert_hd(HD_EINVAL, hd_replica_open(primary, NULL, &o, &r, &err));
    hd_replica_close(NULL);
    hd_store_close(primary);
}

static void the_table_remembers_each_subject_and_the_newest(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_replica_open(primary, NULL, NULL, &r, &err));
    assert_true(hd_replica_needed(r, "u1") == 0);
    assert_true(hd_replica_needed(r, NULL) == 0);
    hd_replica_note(r, "u1", 100);
    hd_replica_note(r, "u2", 50);
    assert_true(hd_replica_needed(r, "u1") == 100);
    assert_true(hd_replica_needed(r, "u2") == 50);
    assert_true(hd_replica_needed(r, "u3") == 0);   /* others are not held back */
    assert_true(hd_replica_needed(r, NULL) == 100); /* "any" waits for the newest */
    /* Positions only go forward: an older one (a late token) changes nothing. */
    hd_replica_note(r, "u1", 90);
    assert_true(hd_replica_needed(r, "u1") == 100);
    hd_replica_note(r, "u1", 120);
    assert_true(hd_replica_needed(r, "u1") == 120);
    /* A NULL subject only moves "the newest". */
    hd_replica_note(r, NULL, 130);
    assert_true(hd_replica_needed(r, NULL) == 130);
    assert_true(hd_replica_needed(r, "u2") == 50);
    hd_replica_note(r, "u9", 0); /* 0 is "no position": ignored */
    assert_true(hd_replica_needed(r, "u9") == 0);
    hd_replica_close(r);
    hd_store_close(primary);
}

static void a_pushed_out_subject_raises_the_floor_for_everyone(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = NULL;
    hd_error err;
    hd_replica_options o = {.subjects = 1}; /* every subject collides */
    assert_hd(HD_OK, hd_replica_open(primary, NULL, &o, &r, &err));
    hd_replica_note(r, "alice", 200);
    hd_replica_note(r, "bob", 150); /* pushes alice out */
    /* alice is no longer in the table, and still never reads before 200. */
    assert_true(hd_replica_needed(r, "alice") == 200);
    assert_true(hd_replica_needed(r, "bob") == 200);   /* max(own 150, floor 200) */
    assert_true(hd_replica_needed(r, "carol") == 200); /* never wrote: held back too */
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_int_equal(st.floor_raises, 1);
    hd_replica_note(r, "carol", 300); /* pushes bob (150) out: the floor stays at 200 */
    assert_true(hd_replica_needed(r, "bob") == 200);
    assert_true(hd_replica_needed(r, "carol") == 300);
    hd_replica_close(r);

    /* Many subjects in a small table: no subject's need is ever below its own write. */
    o.subjects = 8;
    assert_hd(HD_OK, hd_replica_open(primary, NULL, &o, &r, &err));
    char name[32];
    for (uint64_t i = 1; i <= 1000; i++) {
        snprintf(name, sizeof name, "user-%llu", (unsigned long long)i);
        hd_replica_note(r, name, i * 10);
    }
    for (uint64_t i = 1; i <= 1000; i++) {
        snprintf(name, sizeof name, "user-%llu", (unsigned long long)i);
        if (hd_replica_needed(r, name) < i * 10)
            fail_msg("%s needs %llu < its write %llu", name,
                     (unsigned long long)hd_replica_needed(r, name), (unsigned long long)i * 10);
    }
    hd_replica_close(r);
    hd_store_close(primary);
}

static void long_subjects_share_a_key_and_stay_safe(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_replica_open(primary, NULL, NULL, &r, &err));
    char a[100], b[100];
    memset(a, 'x', 99);
    a[99] = '\0';
    memcpy(b, a, sizeof a);
    b[98] = 'y'; /* differs after the 63rd byte */
    hd_replica_note(r, a, 10);
    hd_replica_note(r, b, 5);
    assert_true(hd_replica_needed(r, a) == 10);
    assert_true(hd_replica_needed(r, b) == 10); /* folded: more waiting, never less */
    hd_replica_close(r);
    hd_store_close(primary);
}

static void in_recovery_is_postgresql_only(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_error err;
    assert_hd(HD_EUNSUPPORTED, hd_replica_in_recovery(primary, &err));
    assert_hd(HD_EUNSUPPORTED, hd_replica_in_recovery(NULL, &err));
    hd_store_close(primary);
    hd_replica_stats st;
    hd_replica_stats_get(NULL, &st);
    assert_int_equal(st.lag_ms, -1);
}

static void metrics_show_the_routes_and_hide_what_is_unknown(void **state)
{
    (void)state;
    hd_store *primary = memory_store();
    hd_replica *r = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_replica_open(primary, NULL, NULL, &r, &err));
    hd_metrics *m = hd_metrics_new();
    assert_non_null(m);
    assert_hd(HD_EINVAL, hd_metrics_replica_register(NULL, r));
    assert_hd(HD_EINVAL, hd_metrics_replica_register(m, NULL));
    assert_hd(HD_OK, hd_metrics_replica_register(m, r));
    hd_replica_for_read(r, "u1", 0, NULL);
    hd_replica_for_read(r, NULL, 0, NULL);
    char *text = NULL;
    assert_hd(HD_OK, hd_metrics_render(m, &text, NULL));
    assert_non_null(strstr(text, "database_reads{server=\"primary\"} 2\n"));
    assert_non_null(strstr(text, "database_reads{server=\"standby\"} 0\n"));
    assert_non_null(strstr(text, "database_read_fallbacks{reason=\"down\"} 0\n"));
    assert_non_null(strstr(text, "database_read_fallbacks{reason=\"lagging\"} 0\n"));
    /* No standby configured: nothing to be up or to lag. */
    assert_null(strstr(text, "database_read_standby_up"));
    assert_null(strstr(text, "database_read_lag_seconds"));
    free(text);
    hd_metrics_free(m);
    hd_replica_close(r);
    hd_store_close(primary);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lsn_parses_and_formats_like_postgresql),
        cmocka_unit_test(decide_follows_the_rules_in_order),
        cmocka_unit_test(without_a_standby_every_read_is_on_the_primary),
        cmocka_unit_test(open_refuses_what_cannot_work),
        cmocka_unit_test(the_table_remembers_each_subject_and_the_newest),
        cmocka_unit_test(a_pushed_out_subject_raises_the_floor_for_everyone),
        cmocka_unit_test(long_subjects_share_a_key_and_stay_safe),
        cmocka_unit_test(in_recovery_is_postgresql_only),
        cmocka_unit_test(metrics_show_the_routes_and_hide_what_is_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
