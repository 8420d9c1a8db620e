/* Integration: the PostgreSQL standby that scripts/servers.sh starts (HD_PG_STANDBY_URL) is a
 * hot streaming replica of HD_PG_URL: it answers, it is in recovery, and a row committed on
 * the primary shows up on it within seconds.
 *
 * This proves the harness, not herald: it talks to both servers with libpq directly. Without
 * the variables the test fails (a missing server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hd_test.h"

static PGconn *pg_connect(const char *var)
{
    const char *url = hd_test_require_env(var);
    PGconn *c = PQconnectdb(url);
    assert_non_null(c);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to %s %s: %s", var, url, PQerrorMessage(c));
    return c;
}

/* The one value of `sql` on `c` as a new string; fails the test on an error. */
static char *pg_value(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_error("%s: %s\n", sql, PQresultErrorMessage(res));
        PQclear(res);
        fail();
    }
    char *v = PQntuples(res) > 0 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    return v;
}

static void pg_command(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        print_error("%s: %s\n", sql, PQresultErrorMessage(res));
        PQclear(res);
        fail();
    }
    PQclear(res);
}

static void standby_is_in_recovery(void **state)
{
    (void)state;
    PGconn *primary = pg_connect("HD_PG_URL");
    PGconn *standby = pg_connect("HD_PG_STANDBY_URL");

    char *v = pg_value(primary, "SELECT pg_is_in_recovery()");
    assert_string_equal(v, "f");
    free(v);
    v = pg_value(standby, "SELECT pg_is_in_recovery()");
    assert_string_equal(v, "t");
    free(v);
    /* The same server version, the same cluster (system identifier) on both. */
    assert_int_equal(PQserverVersion(primary), PQserverVersion(standby));
    char *a = pg_value(primary, "SELECT system_identifier FROM pg_control_system()");
    char *b = pg_value(standby, "SELECT system_identifier FROM pg_control_system()");
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* Read-only: a write on the standby is refused. */
    PGresult *res = PQexec(standby, "CREATE TABLE hd_servers_standby_write (x int)");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "25006"); /* read only */
    PQclear(res);
    /* The primary sees it streaming (what `servers.sh status` reports as the lag). */
    v = pg_value(primary, "SELECT state FROM pg_stat_replication"
                          " WHERE application_name = 'herald_standby'");
    assert_non_null(v);
    assert_string_equal(v, "streaming");
    free(v);

    PQfinish(standby);
    PQfinish(primary);
}

static void committed_row_replicates(void **state)
{
    (void)state;
    PGconn *primary = pg_connect("HD_PG_URL");
    PGconn *standby = pg_connect("HD_PG_STANDBY_URL");
    char *unique = hd_test_unique_name("hd-servers-standby");

    pg_command(primary, "CREATE TABLE IF NOT EXISTS hd_servers_standby_check"
                        " (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())");
    const char *values[1] = {unique};
    PGresult *res = PQexecParams(primary, "INSERT INTO hd_servers_standby_check (name) VALUES ($1)",
                                 1, NULL, values, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);

    /* Asynchronous replication: allow 10 s on a loaded machine (usually a few ms). */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int seen = 0;
    for (int i = 0; i < 200 && !seen; i++) {
        res = PQexecParams(standby, "SELECT count(*) FROM hd_servers_standby_check WHERE name = $1",
                           1, NULL, values, NULL, NULL, 0);
        /* Before the CREATE TABLE has replayed the table does not exist yet: keep polling. */
        seen = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "1") == 0;
        PQclear(res);
        if (!seen) {
            struct timespec ts = {.tv_nsec = 50000000L};
            nanosleep(&ts, NULL);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!seen)
        fail_msg("row %s committed on the primary not on the standby after 10 s", unique);
    print_message("replicated in %.1f ms\n",
                  (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);

    res = PQexecParams(primary, "DELETE FROM hd_servers_standby_check WHERE name = $1", 1, NULL,
                       values, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    free(unique);
    PQfinish(standby);
    PQfinish(primary);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(standby_is_in_recovery),
        cmocka_unit_test(committed_row_replicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
