/* Integration: herald/replica.h against the primary and the streaming standby that
 * scripts/servers.sh starts (HD_PG_URL, HD_PG_STANDBY_URL, HD_SERVERS_CTL; a missing one is
 * a failure, never a skip).
 *
 *   - reads routed to the standby ARE served by it (pg_is_in_recovery() on the very store
 *     the router handed out), and a read right after the caller's own write sees it;
 *   - the standby stopped mid-run ("$HD_SERVERS_CTL" stop standby): every read still
 *     answers, from the primary, and the stats count the fallbacks; started again, it
 *     serves reads again without a new router;
 *   - replay paused (pg_wal_replay_pause()): the rows a standby-served read misses were all
 *     committed within max_lag_ms + check_ms + a margin, after which reads go to the
 *     primary; the caller's own writes never go backwards; then pg_wal_replay_resume();
 *   - figures (printed, not asserted): the time until a read-your-write is served by the
 *     standby, the lag under a burst of commits, the catch-up after it.
 *
 * These tests stop and pause the SHARED standby: ctest gives them RESOURCE_LOCK pg_standby
 * (CMakeLists.txt), with integration.servers_standby and tutorial.16-standby-reads. The
 * group teardown resumes replay and starts the standby whatever happened. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/replica.h"

static char table[64];

static hd_store *open_url(const char *var)
{
    hd_store *s = NULL;
    hd_error err;
    const char *url = hd_test_require_env(var);
    int rc = hd_store_open(url, &s, &err);
    if (rc < 0)
        fail_msg("%s (%s): %s", var, url, err.text);
    return s;
}

static void exec_ok(hd_store *s, const char *sql)
{
    hd_error err;
    int rc = hd_store_exec(s, sql, NULL, 0, &err);
    if (rc < 0)
        fail_msg("%s: %s", sql, err.text);
}

static void servers_ctl(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s standby >/dev/null 2>&1",
             hd_test_require_env("HD_SERVERS_CTL"), verb);
    assert_int_equal(system(cmd), 0);
}

/* One row of subject, committed on the primary. */
static void insert(hd_store *primary, const char *subject, int64_t n)
{
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s(subject, n, at_ms) VALUES ($1, $2, $3)", table);
    hd_value p[] = {hd_value_text(subject), hd_value_int(n), hd_value_int(hd_clock_ms())};
    hd_error err;
    int rc = hd_store_exec(primary, sql, p, 3, &err);
    if (rc < 0)
        fail_msg("insert: %s", err.text);
}

/* The number of rows of subject on s, or a negative code (the standby may be gone). */
static int64_t count(hd_store *s, const char *subject, hd_error *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE subject = $1", table);
    hd_value p[] = {hd_value_text(subject)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(s, sql, p, 1, &rows, err);
    if (rc < 0)
        return rc;
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

/* A read as a service does it: route, run, and once more on the primary if the standby
 * failed in between. *served: 1 standby, 0 primary (proved with pg_is_in_recovery()). */
static int64_t routed_count(hd_replica *r, const char *subject, hd_replica_route *route,
                            int *served)
{
    hd_error err;
    hd_store *s = hd_replica_for_read(r, subject, 0, route);
    assert_non_null(s);
    int64_t n = count(s, subject, &err);
    if (n < 0) {
        s = hd_replica_read_failed(r, s, route);
        if (s == NULL)
            fail_msg("read on the primary failed: %s", err.text);
        n = count(s, subject, &err);
        if (n < 0)
            fail_msg("read on the primary failed: %s", err.text);
    }
    if (served != NULL) {
        int rc = hd_replica_in_recovery(s, &err);
        if (rc < 0)
            fail_msg("pg_is_in_recovery: %s", err.text);
        *served = rc;
    }
    return n;
}

/* Wait until the router serves reads of subject from the standby (at most limit_ms). */
static int64_t until_standby(hd_replica *r, const char *subject, int64_t limit_ms)
{
    int64_t t0 = hd_clock_ms();
    hd_replica_route route;
    for (;;) {
        hd_store *s = hd_replica_for_read(r, subject, 0, &route);
        (void)s;
        if (route == HD_REPLICA_STANDBY)
            return hd_clock_ms() - t0;
        if (hd_clock_ms() - t0 > limit_ms)
            fail_msg("reads of %s not on the standby after %lld ms (route %s)",
                     subject ? subject : "(any)", (long long)limit_ms,
                     hd_replica_route_name(route));
        hd_sleep_ms(5);
    }
}

static int setup(void **state)
{
    (void)state;
    hd_store *primary = open_url("HD_PG_URL");
    hd_store *standby = open_url("HD_PG_STANDBY_URL");
    char *name = hd_test_unique_name("hd_replica");
    snprintf(table, sizeof table, "%s", name);
    free(name);
    for (char *c = table; *c; c++) /* an SQL identifier: no '-' */
        if (*c == '-')
            *c = '_';
    char sql[256];
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (id bigserial PRIMARY KEY, subject text NOT NULL, n bigint, "
             "at_ms bigint NOT NULL)",
             table);
    exec_ok(primary, sql);
    /* The table reaches the standby by replication, like every row. */
    snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", table);
    int64_t t0 = hd_clock_ms();
    for (;;) {
        hd_rows *rows = NULL;
        hd_error err;
        assert_hd(HD_OK, hd_store_query(standby, sql, NULL, 0, &rows, &err));
        int there = strcmp(hd_rows_text(rows, 0, 0), "t") == 0;
        hd_rows_free(rows);
        if (there)
            break;
        assert_true(hd_clock_ms() - t0 < 30000);
        hd_sleep_ms(20);
    }
    hd_store_close(standby);
    hd_store_close(primary);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    servers_ctl("start"); /* a no-op when it runs */
    hd_store *standby = NULL;
    if (hd_store_open(getenv("HD_PG_STANDBY_URL"), &standby, NULL) == 0) {
        hd_store_exec(standby, "SELECT pg_wal_replay_resume()", NULL, 0, NULL);
        hd_store_close(standby);
    }
    hd_store *primary = NULL;
    if (hd_store_open(getenv("HD_PG_URL"), &primary, NULL) == 0) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
        hd_store_exec(primary, sql, NULL, 0, NULL);
        hd_store_close(primary);
    }
    return 0;
}

static void reads_are_served_by_the_standby_and_see_own_writes(void **state)
{
    (void)state;
    hd_store *primary = open_url("HD_PG_URL");
    hd_replica *r = NULL;
    hd_error err;
    hd_replica_options o = {.max_lag_ms = 5000, .check_ms = 100};
    assert_hd(HD_OK, hd_replica_open(primary, getenv("HD_PG_STANDBY_URL"), &o, &r, &err));
    assert_true(hd_replica_configured(r));
    until_standby(r, "reader", 10000);

    /* Proof: the store handed out for the read is in recovery, the primary is not. */
    hd_replica_route route;
    hd_store *s = hd_replica_for_read(r, "reader", 0, &route);
    assert_int_equal(route, HD_REPLICA_STANDBY);
    assert_ptr_not_equal(s, primary);
    assert_int_equal(hd_replica_in_recovery(s, &err), 1);
    assert_int_equal(hd_replica_in_recovery(primary, &err), 0);

    /* Read-your-writes, 200 times: each read right after the write sees it, wherever it is
     * served; count how often the standby already had it, and how long it took to get it. */
    int on_standby = 0;
    int64_t ryw_max = 0, ryw_sum = 0;
    for (int i = 1; i <= 200; i++) {
        insert(primary, "writer", i);
        uint64_t lsn = 0;
        assert_hd(HD_OK, hd_replica_wrote(r, "writer", &lsn, &err));
        assert_true(lsn > 0);
        int served = -1;
        int64_t n = routed_count(r, "writer", &route, &served);
        assert_int_equal(n, i); /* never backwards */
        assert_int_equal(served, route == HD_REPLICA_STANDBY);
        on_standby += served;
        if (route != HD_REPLICA_STANDBY)
            assert_int_equal(route, HD_REPLICA_OWN_WRITE);
        int64_t t = until_standby(r, "writer", 10000);
        ryw_sum += t;
        if (t > ryw_max)
            ryw_max = t;
    }
    print_message("read-your-writes: 200 writes, the next read served by the standby %d times; "
                  "own write on the standby after %.1f ms on average, %lld ms at most\n",
                  on_standby, (double)ryw_sum / 200, (long long)ryw_max);
    /* A subject that did not write is not held back by another's write. */
    insert(primary, "writer", 201);
    assert_hd(HD_OK, hd_replica_wrote(r, "writer", NULL, &err));
    hd_store *other = hd_replica_for_read(r, "reader", 0, &route);
    assert_int_equal(route, HD_REPLICA_STANDBY);
    assert_int_equal(hd_replica_in_recovery(other, &err), 1);

    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_int_equal(st.standby_up, 1);
    assert_true(st.lag_ms >= 0);
    assert_true(st.reads[HD_REPLICA_STANDBY] > 0);
    assert_int_equal(st.reads[HD_REPLICA_DOWN], 0);
    /* Inside a transaction the write is not committed yet: refused. */
    assert_hd(HD_OK, hd_store_begin(primary, &err));
    assert_hd(HD_ESTATE, hd_replica_wrote(r, "writer", NULL, &err));
    assert_hd(HD_OK, hd_store_rollback(primary, &err));
    hd_replica_close(r);
    hd_store_close(primary);
}

static void standby_stopped_mid_run_reads_answer_from_the_primary(void **state)
{
    (void)state;
    hd_store *primary = open_url("HD_PG_URL");
    hd_replica *r = NULL;
    hd_error err;
    hd_replica_options o = {.max_lag_ms = 5000, .check_ms = 100, .retry_ms = 300};
    assert_hd(HD_OK, hd_replica_open(primary, getenv("HD_PG_STANDBY_URL"), &o, &r, &err));
    until_standby(r, "stopper", 10000);
    insert(primary, "stopper", 1);
    assert_hd(HD_OK, hd_replica_wrote(r, "stopper", NULL, &err));
    until_standby(r, "stopper", 10000);

    servers_ctl("stop");
    /* Every read answers, right, from the primary: the first one may find the standby
     * gone under it (read_failed retries it), the next ones are routed away. */
    int64_t t0 = hd_clock_ms();
    for (int i = 0; i < 40; i++) {
        hd_replica_route route;
        int served = -1;
        int64_t n = routed_count(r, "stopper", &route, &served);
        assert_int_equal(n, 1);
        assert_int_equal(served, 0);
        assert_int_equal(route, HD_REPLICA_DOWN);
        hd_sleep_ms(25); /* 1 s: past retry_ms, so the router tried the standby again */
    }
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_int_equal(st.standby_up, 0);
    assert_int_equal(st.lag_ms, -1);
    assert_true(st.reads[HD_REPLICA_DOWN] >= 40);
    print_message("standby stopped: 40 reads over %lld ms, all answered by the primary "
                  "(%llu fallbacks counted)\n",
                  (long long)(hd_clock_ms() - t0), (unsigned long long)st.reads[HD_REPLICA_DOWN]);

    /* Back: the same router uses it again (the store reconnects). */
    servers_ctl("start");
    int64_t back = until_standby(r, "stopper", 30000);
    hd_replica_route route;
    int served = -1;
    assert_int_equal(routed_count(r, "stopper", &route, &served), 1);
    assert_int_equal(route, HD_REPLICA_STANDBY);
    assert_int_equal(served, 1);
    print_message("standby started again: reads on it %lld ms after the start returned\n",
                  (long long)back);
    hd_replica_close(r);
    hd_store_close(primary);
}

static void paused_replay_keeps_stale_reads_bounded(void **state)
{
    (void)state;
    hd_store *primary = open_url("HD_PG_URL");
    hd_store *admin = open_url("HD_PG_STANDBY_URL");
    hd_replica *r = NULL;
    hd_error err;
    const int64_t max_lag = 1000, check = 100, margin = 250;
    hd_replica_options o = {.max_lag_ms = max_lag, .check_ms = check};
    assert_hd(HD_OK, hd_replica_open(primary, getenv("HD_PG_STANDBY_URL"), &o, &r, &err));
    /* A commit replayed just before the pause, so that the lag starts near 0 and the
     * standby keeps serving (stale) reads up to the bound: the case to measure. */
    insert(primary, "warm-up", 1);
    assert_hd(HD_OK, hd_replica_wrote(r, NULL, NULL, &err));
    until_standby(r, NULL, 10000);

    exec_ok(admin, "SELECT pg_wal_replay_pause()");
    /* Another instance writes "others" every 20 ms (no wrote(): this router cannot know);
     * this caller writes "me" every 100 ms through the router. at[k] is when row k+1 of
     * "others" committed. */
    int64_t at[400];
    int others = 0, mine = 0, stale_reads = 0, primary_reads = 0;
    int64_t worst_missing_ms = 0, first_primary_ms = -1;
    int64_t t0 = hd_clock_ms();
    while (hd_clock_ms() - t0 < 3000 && others < 400) {
        insert(primary, "others", others + 1);
        at[others++] = hd_clock_ms();
        if (others % 5 == 0) {
            insert(primary, "me", ++mine);
            assert_hd(HD_OK, hd_replica_wrote(r, "me", NULL, &err));
        }
        hd_replica_route route;
        int served = -1;
        int64_t seen = routed_count(r, "others", &route, &served);
        int64_t now = hd_clock_ms();
        if (served) {
            if (seen < others) {
                stale_reads++;
                /* The oldest row it misses is row seen+1, committed at at[seen]. */
                int64_t missing = now - at[seen];
                if (missing > worst_missing_ms)
                    worst_missing_ms = missing;
                if (missing > max_lag + check + margin)
                    fail_msg("a standby read misses a row committed %lld ms ago (bound %lld)",
                             (long long)missing, (long long)(max_lag + check + margin));
            }
        } else {
            assert_int_equal(seen, others); /* the primary has it all */
            assert_int_equal(route, HD_REPLICA_LAGGING);
            primary_reads++;
            if (first_primary_ms < 0)
                first_primary_ms = now - t0;
        }
        /* Own writes never go backwards, paused or not. */
        int me_served = -1;
        assert_int_equal(routed_count(r, "me", &route, &me_served), mine);
        hd_sleep_ms(20);
    }
    /* Well past the bound, every read is on the primary. */
    assert_true(primary_reads > 0);
    hd_replica_route route;
    hd_replica_for_read(r, "others", 0, &route);
    assert_int_equal(route, HD_REPLICA_LAGGING);
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_true(st.lag_ms > max_lag);
    assert_true(st.reads[HD_REPLICA_LAGGING] > 0);
    print_message("replay paused, max_lag_ms %lld, check_ms %lld: %d stale standby reads, the "
                  "oldest missing row %lld ms old; reads on the primary from %lld ms after the "
                  "pause; lag measured at the end %lld ms\n",
                  (long long)max_lag, (long long)check, stale_reads, (long long)worst_missing_ms,
                  (long long)first_primary_ms, (long long)st.lag_ms);

    exec_ok(admin, "SELECT pg_wal_replay_resume()");
    int64_t caught = until_standby(r, "others", 30000);
    int served = -1;
    assert_int_equal(routed_count(r, "others", &route, &served), others);
    print_message("replay resumed: reads back on the standby after %lld ms\n", (long long)caught);
    hd_replica_close(r);
    hd_store_close(admin);
    hd_store_close(primary);
}

static void lag_under_a_write_burst(void **state)
{
    (void)state;
    hd_store *primary = open_url("HD_PG_URL");
    hd_replica *r = NULL;
    hd_error err;
    hd_replica_options o = {.max_lag_ms = 60000, .check_ms = 1}; /* measure at every read */
    assert_hd(HD_OK, hd_replica_open(primary, getenv("HD_PG_STANDBY_URL"), &o, &r, &err));
    until_standby(r, NULL, 10000);
    /* Up to 5000 single-row commits (10 s at most: a loaded machine is slow) as fast as one
     * connection goes, sampling the lag every 50. */
    int64_t max_lag = 0, sum = 0, samples = 0;
    int64_t t0 = hd_clock_ms();
    int commits = 0;
    for (int i = 1; i <= 5000 && hd_clock_ms() - t0 < 10000; i++, commits++) {
        insert(primary, "burst", i);
        if (i % 50 == 0) {
            hd_replica_route route;
            hd_replica_for_read(r, "nobody", 0, &route);
            hd_replica_stats st;
            hd_replica_stats_get(r, &st);
            assert_true(st.lag_ms >= 0);
            sum += st.lag_ms;
            samples++;
            if (st.lag_ms > max_lag)
                max_lag = st.lag_ms;
        }
    }
    int64_t burst_ms = hd_clock_ms() - t0;
    assert_hd(HD_OK, hd_replica_wrote(r, NULL, NULL, &err));
    int64_t caught = until_standby(r, NULL, 30000);
    assert_true(samples > 0);
    print_message(
        "write burst: %d commits in %lld ms (%.0f/s); replay lag %.1f ms on "
        "average, %lld ms at most (%lld samples); everything replayed %lld ms after "
        "the last commit\n",
        commits, (long long)burst_ms, commits * 1000.0 / (double)(burst_ms ? burst_ms : 1),
        (double)sum / (double)samples, (long long)max_lag, (long long)samples, (long long)caught);
    hd_replica_close(r);
    hd_store_close(primary);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_are_served_by_the_standby_and_see_own_writes),
        cmocka_unit_test(standby_stopped_mid_run_reads_answer_from_the_primary),
        cmocka_unit_test(paused_replay_keeps_stale_reads_bounded),
        cmocka_unit_test(lag_under_a_write_burst),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
