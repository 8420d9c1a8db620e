/* Integration: the PostgreSQL that scripts/servers.sh starts answers on HD_PG_URL.
 *
 * This proves the harness, not herald: it talks to the server with libpq directly. Without
 * HD_PG_URL the test fails (a missing server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>

#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

static PGconn *pg_connect(void)
{
    const char *url = hd_test_require_env("HD_PG_URL");
    PGconn *c = PQconnectdb(url);
    assert_non_null(c);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to HD_PG_URL %s: %s", url, PQerrorMessage(c));
    return c;
}

/* Fail with the server's message unless `res` has status `want`; clears `res` on failure. */
static void assert_pg_status_at(PGconn *c, PGresult *res, ExecStatusType want, const char *what,
                                const char *file, int line)
{
    ExecStatusType got = PQresultStatus(res);
    if (got == want)
        return;
    print_error("%s:%d: %s: %s instead of %s: %s\n", file, line, what, PQresStatus(got),
                PQresStatus(want), res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    PQclear(res);
    _fail(file, line);
}
#define assert_pg_status(c, res, want, what)                                                       \
    assert_pg_status_at((c), (res), (want), (what), __FILE__, __LINE__)

static void connect_insert_select(void **state)
{
    (void)state;
    PGconn *c = pg_connect();

    /* The harness runs PostgreSQL 15 with UTF-8; herald's SQL relies on both. */
    assert_true(PQserverVersion(c) >= 150000);
    const char *encoding = PQparameterStatus(c, "server_encoding");
    assert_non_null(encoding);
    assert_string_equal(encoding, "UTF8");

    PGresult *res = PQexec(c, "CREATE TEMP TABLE hd_servers_check ("
                              " id bigserial PRIMARY KEY,"
                              " name text NOT NULL,"
                              " payload bytea NOT NULL,"
                              " created timestamptz NOT NULL DEFAULT now())");
    assert_pg_status(c, res, PGRES_COMMAND_OK, "CREATE TEMP TABLE");
    PQclear(res);

    /* A unique name with non-ASCII text, and binary bytes with a NUL in the middle. */
    char *unique = hd_test_unique_name("hd-servers-postgres");
    char name[300];
    snprintf(name, sizeof name, "%s grüße ✓", unique);
    const char payload[] = {'h', 'e', 'r', 0, 'a', 'l', 'd', (char)0xff};
    const char *values[2] = {name, payload};
    const int lengths[2] = {0, (int)sizeof payload};
    const int formats[2] = {0, 1}; /* text, binary */
    res = PQexecParams(c,
                       "INSERT INTO hd_servers_check (name, payload) VALUES ($1, $2) "
                       "RETURNING id",
                       2, NULL, values, lengths, formats, 0);
    assert_pg_status(c, res, PGRES_TUPLES_OK, "INSERT ... RETURNING");
    assert_int_equal(PQntuples(res), 1);
    char id[32];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    const char *key[1] = {id};
    /* Binary results: the bytes come back exactly as stored. */
    res = PQexecParams(c, "SELECT name, payload FROM hd_servers_check WHERE id = $1", 1, NULL, key,
                       NULL, NULL, 1);
    assert_pg_status(c, res, PGRES_TUPLES_OK, "SELECT");
    assert_int_equal(PQntuples(res), 1);
    assert_int_equal(PQgetlength(res, 0, 0), strlen(name));
    assert_memory_equal(PQgetvalue(res, 0, 0), name, strlen(name));
    assert_int_equal(PQgetlength(res, 0, 1), sizeof payload);
    assert_memory_equal(PQgetvalue(res, 0, 1), payload, sizeof payload);
    PQclear(res);

    PQfinish(c);
    free(unique);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_insert_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
