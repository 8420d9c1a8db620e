/* The store port on a real PostgreSQL server (HD_PG_URL; the test fails, never skips, when
 * it is not set): the conformance cases shared with SQLite, then what only PostgreSQL
 * has: SQLSTATE mapping, connection loss and reconnection, LISTEN / NOTIFY.
 * Everything happens in a database created for this run and dropped at the end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/clock.h"
#include "herald/store_pg.h"
#include "herald/outbox.h"

#include <pthread.h>

static hd_conf_pg pg;
static hd_conf_target target;

static void server_is_configured(void **state)
{
    (void)state;
    hd_conf_pg_init(&pg, hd_test_require_env("HD_PG_URL"));
    target = hd_conf_pg_target(&pg);
}

/* A fresh schema's URL and a store on it. */
static hd_store *fresh_store(char **url)
{
    *url = target.fresh(target.ctx);
    return hd_conf_open(*url);
}

static void connection_failure_is_hd_econnect_without_the_password(void **state)
{
    (void)state;
    hd_store *s = NULL;
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(
        HD_ECONNECT,
        hd_store_open("postgresql://postgres:s3cretpw@127.0.0.1:1/x?connect_timeout=2", &s, &err),
        &err);
    assert_null(s);
    assert_true(err.text[0] != '\0');
    assert_null(strstr(err.text, "s3cretpw"));
    /* A database that does not exist: the server answers, and refuses. */
    char *url = hd_conf_pg_url(pg.admin_url, "hd_no_such_database", NULL);
    assert_hd_err(HD_ECONNECT, hd_store_open(url, &s, &err), &err);
    assert_non_null(strstr(err.text, "hd_no_such_database"));
    free(url);
}

static void malformed_url_is_hd_eurl(void **state)
{
    (void)state;
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_EURL, hd_store_open("postgresql://127.0.0.1/db?no_such_option=1", &s, &err),
                  &err);
    assert_non_null(strstr(err.text, "no_such_option"));
    assert_null(s);
}

static void session_defaults_yield_to_the_url(void **state)
{
    (void)state;
    char *url;
    hd_store *s = fresh_store(&url); /* its URL sets options=-csearch_path=... */
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s,
                                    "SELECT current_setting('jit'), current_schema(),"
                                    " current_setting('application_name')",
                                    NULL, 0, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "off");
    assert_non_null(hd_rows_text(rows, 0, 1)); /* the URL's own options were kept too */
    assert_int_equal(strncmp(hd_rows_text(rows, 0, 1), "case_", 5), 0);
    assert_string_equal(hd_rows_text(rows, 0, 2), "herald");
    hd_rows_free(rows);
    hd_store_close(s);
    free(url);
    /* The URL wins over every default. */
    char *base = hd_conf_pg_url(pg.admin_url, pg.db, NULL);
    char with[600];
    snprintf(with, sizeof with, "%s?options=-cjit%%3Don&application_name=mine", base);
    s = hd_conf_open(with);
    assert_hd(HD_OK, hd_store_query(s,
                                    "SELECT current_setting('jit'),"
                                    " current_setting('application_name')",
                                    NULL, 0, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "on");
    assert_string_equal(hd_rows_text(rows, 0, 1), "mine");
    hd_rows_free(rows);
    hd_store_close(s);
    free(base);
}

static void sql_text_is_read_the_way_the_server_reads_it(void **state)
{
    (void)state;
    char *url;
    hd_store *s = fresh_store(&url);
    hd_value one[] = {hd_value_int(5)};
    hd_rows *rows = NULL;
    hd_error err;
    hd_error_clear(&err);
    /* Placeholder-looking text and ';' inside literals, quoted names, dollar quotes and
     * (nested) comments belong to them; the one real $1 is found. */
    const char *fine[] = {
        "SELECT E'it\\'s ? :x $2;', $1",
        "SELECT $q$ a $2 ; b $q$, $$ ? $$, $1",
        "SELECT /* $2 /* nested ; */ still comment $3 */ $1",
        "SELECT \"we;ird $2\", $1 FROM (SELECT 1 AS \"we;ird $2\") x",
        "SELECT 1::bigint + $1 -- a cast is PostgreSQL-only SQL, but no placeholder",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        int rc = hd_store_query(s, fine[i], one, 1, &rows, &err);
        if (rc != HD_OK)
            print_error("%s\n", fine[i]);
        assert_hd_err(HD_OK, rc, &err);
        hd_rows_free(rows);
    }
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $70000", one, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $1; SELECT $1", one, 1, &err), &err);
    hd_store_close(s);
    free(url);
}

/* Raise an error with a given SQLSTATE from the server. */
static int raise_state(hd_store *s, const char *state, hd_error *err)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN RAISE EXCEPTION 'raised on purpose' USING ERRCODE = '%s'; END $$", state);
    return hd_store_exec(s, sql, NULL, 0, err);
}

static void sqlstates_map_to_herald_codes(void **state)
{
    (void)state;
    char *url;
    hd_store *s = fresh_store(&url);
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_EBUSY, raise_state(s, "40001", &err), &err); /* serialization failure */
    assert_non_null(strstr(err.text, "raised on purpose"));
    assert_non_null(strstr(err.text, "SQLSTATE 40001"));
    assert_hd_err(HD_EBUSY, raise_state(s, "40P01", &err), &err); /* deadlock */
    assert_hd_err(HD_EBUSY, raise_state(s, "55P03", &err), &err); /* lock not available */
    assert_hd_err(HD_EEXIST, raise_state(s, "23505", &err), &err);
    assert_hd_err(HD_ESTORE, raise_state(s, "23503", &err), &err); /* foreign key */
    assert_hd_err(HD_ESTORE, raise_state(s, "P0001", &err), &err); /* plain RAISE */
    /* statement_timeout cancels the statement: HD_ETIMEOUT. */
    assert_int_equal(hd_store_exec(s, "SET statement_timeout = 50", NULL, 0, &err), 0);
    assert_hd_err(HD_ETIMEOUT, hd_store_exec(s, "SELECT pg_sleep(2)", NULL, 0, &err), &err);
    assert_int_equal(hd_store_exec(s, "SET statement_timeout = 0", NULL, 0, &err), 0);
    /* Booleans come back in PostgreSQL's text form (SQLite has no boolean type). */
    assert_int_equal(hd_conf_scalar(s, "SELECT 1 WHERE true"), 1);
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "SELECT true, false", NULL, 0, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "t");
    assert_string_equal(hd_rows_text(rows, 0, 1), "f");
    hd_rows_free(rows);
    hd_store_close(s);
    free(url);
}

/* Ask the server to end the session of s (pg_terminate_backend waits up to 5 s for it). */
static void kill_session(hd_store *s)
{
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "SELECT pg_backend_pid()", NULL, 0, &rows, NULL));
    hd_value p[] = {hd_value_text(hd_rows_text(rows, 0, 0))};
    hd_store *admin = hd_conf_open(pg.admin_url);
    hd_error err;
    hd_error_clear(&err);
    hd_rows *ok = NULL;
    assert_hd_err(HD_OK,
                  hd_store_query(admin, "SELECT pg_terminate_backend($1, 5000)", p, 1, &ok, &err),
                  &err);
    assert_string_equal(hd_rows_text(ok, 0, 0), "t");
    hd_rows_free(ok);
    hd_rows_free(rows);
    hd_store_close(admin);
}

static void lost_connection_is_reported_then_repaired(void **state)
{
    (void)state;
    char *url;
    hd_store *s = fresh_store(&url);
    assert_int_equal(hd_store_exec(s, "CREATE TABLE t (x BIGINT)", NULL, 0, NULL), 0);
    hd_error err;
    hd_error_clear(&err);

    /* Outside a transaction: this call fails, the next one reconnects. */
    kill_session(s);
    assert_hd_err(HD_ECONNECT, hd_store_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, &err), &err);
    assert_int_equal(hd_store_exec(s, "INSERT INTO t VALUES (2)", NULL, 0, &err), 1);
    /* The reconnected session has the URL's settings (its search_path) again. */
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM t"), 1);

    /* Inside a transaction: the transaction is gone; it ends, and the store goes on. */
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t VALUES (3)", NULL, 0, NULL), 1);
    kill_session(s);
    assert_hd_err(HD_ECONNECT, hd_store_exec(s, "INSERT INTO t VALUES (4)", NULL, 0, &err), &err);
    assert_hd(HD_ESTATE, hd_store_commit(s, NULL)); /* aborted: rolled back */
    assert_false(hd_store_in_transaction(s));
    assert_hd(HD_OK, hd_store_begin(s, &err));
    assert_hd(HD_OK, hd_store_rollback(s, &err));
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM t"), 1);

    /* A commit that loses its connection: HD_ECONNECT, and the store is usable again. */
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t VALUES (5)", NULL, 0, NULL), 1);
    kill_session(s);
    assert_hd_err(HD_ECONNECT, hd_store_commit(s, &err), &err);
    assert_false(hd_store_in_transaction(s));
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM t"), 1);
    hd_store_close(s);
    free(url);
}

static void listen_notify_wakes_a_listener_at_commit(void **state)
{
    (void)state;
    char *url;
    hd_store *listener = fresh_store(&url);
    hd_store *sender = hd_conf_open(url);
    hd_error err;
    hd_error_clear(&err);
    char channel[HD_STORE_PG_CHANNEL_MAX + 1];
    assert_true(hd_store_is_pg(listener));

    /* Channel names go into the SQL text, so they are checked. */
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    const char *bad[] = {"Upper", "1abc", "a-b", "a\"b", "", long_name};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_hd(HD_EINVAL, hd_store_pg_listen(listener, bad[i], NULL));
    assert_hd(HD_EINVAL, hd_store_pg_listen(listener, NULL, NULL));
    assert_hd(HD_EINVAL, hd_store_pg_notify(sender, "", NULL, NULL));

    assert_hd_err(HD_OK, hd_store_pg_listen(listener, "hd_test_ch", &err), &err);
    assert_hd(HD_OK, hd_store_pg_listen(listener, "hd_test_ch", &err)); /* twice: harmless */
    assert_int_equal(hd_store_pg_wait(listener, 0, channel, &err), 0);

    /* Outside a transaction: delivered at once. */
    assert_hd(HD_OK, hd_store_pg_notify(sender, "hd_test_ch", "hello", &err));
    assert_true(hd_store_pg_wait(listener, 5000, channel, &err) >= 1);
    assert_string_equal(channel, "hd_test_ch");

    /* Inside one: only when it commits. */
    assert_hd(HD_OK, hd_store_begin(sender, NULL));
    assert_hd(HD_OK, hd_store_pg_notify(sender, "hd_test_ch", NULL, &err));
    assert_int_equal(hd_store_pg_wait(listener, 100, channel, &err), 0);
    assert_hd(HD_OK, hd_store_commit(sender, NULL));
    assert_true(hd_store_pg_wait(listener, 5000, channel, &err) >= 1);

    /* Rolled back: never. */
    assert_hd(HD_OK, hd_store_begin(sender, NULL));
    assert_hd(HD_OK, hd_store_pg_notify(sender, "hd_test_ch", NULL, &err));
    assert_hd(HD_OK, hd_store_rollback(sender, NULL));
    assert_int_equal(hd_store_pg_wait(listener, 200, channel, &err), 0);

    /* The listener cannot wait or listen inside a transaction. */
    assert_hd(HD_OK, hd_store_begin(listener, NULL));
    assert_hd(HD_ESTATE, hd_store_pg_wait(listener, 0, channel, NULL));
    assert_hd(HD_ESTATE, hd_store_pg_listen(listener, "other", NULL));
    assert_hd(HD_OK, hd_store_rollback(listener, NULL));

    /* After losing its connection the listener reconnects, says "look now" once (what was
     * sent meanwhile is lost), and listens again. */
    kill_session(listener);
    int rc = 0;
    for (int i = 0; i < 5 && rc != 1; i++) {
        rc = hd_store_pg_wait(listener, 1000, channel, &err);
        assert_true(rc == 1 || rc == 0 || rc == HD_ECONNECT);
    }
    assert_int_equal(rc, 1);
    assert_string_equal(channel, "");
    assert_hd(HD_OK, hd_store_pg_notify(sender, "hd_test_ch", NULL, &err));
    assert_true(hd_store_pg_wait(listener, 5000, channel, &err) >= 1);
    assert_string_equal(channel, "hd_test_ch");

    /* Unlisten: nothing more arrives. */
    assert_hd(HD_OK, hd_store_pg_unlisten(listener, "hd_test_ch", &err));
    assert_hd(HD_OK, hd_store_pg_notify(sender, "hd_test_ch", NULL, &err));
    assert_int_equal(hd_store_pg_wait(listener, 200, channel, &err), 0);
    assert_hd(HD_OK, hd_store_pg_unlisten(listener, NULL, &err));
    hd_store_close(listener);
    hd_store_close(sender);
    free(url);
}

/* Services that start together migrate the same database at once: every one of them must
 * succeed, and each step must run exactly once (hd_store_migrate serialises them with an
 * advisory lock; without it, concurrent CREATE TABLE IF NOT EXISTS fail). */
struct migrator {
    const char *url;
    int rc;
    hd_error err;
};

static void *migrate_outbox(void *arg)
{
    struct migrator *m = arg;
    hd_store *s = NULL;
    m->rc = hd_store_open(m->url, &s, &m->err);
    if (m->rc == 0)
        m->rc = hd_outbox_migrate(s, &m->err);
    hd_store_close(s);
    return NULL;
}

static void concurrent_migrations_all_succeed(void **state)
{
    (void)state;
    char *url = target.fresh(target.ctx);
    struct migrator m[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        m[i] = (struct migrator){.url = url};
        assert_int_equal(pthread_create(&t[i], NULL, migrate_outbox, &m[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_hd_err(HD_OK, m[i].rc < 0 ? m[i].rc : HD_OK, &m[i].err);
    }
    hd_store *s = hd_conf_open(url);
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_schema_migrations"
                                       " WHERE module = 'outbox'"),
                     hd_store_schema_version(s, "outbox", NULL));
    hd_store_close(s);
    free(url);
}

int main(void)
{
    const struct CMUnitTest setup[] = {cmocka_unit_test(server_is_configured)};
    int failed = cmocka_run_group_tests_name("postgresql server", setup, NULL, NULL);
    if (failed)
        return failed;
    failed += hd_conf_run_store(&target);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_failure_is_hd_econnect_without_the_password),
        cmocka_unit_test(malformed_url_is_hd_eurl),
        cmocka_unit_test(session_defaults_yield_to_the_url),
        cmocka_unit_test(sql_text_is_read_the_way_the_server_reads_it),
        cmocka_unit_test(sqlstates_map_to_herald_codes),
        cmocka_unit_test(lost_connection_is_reported_then_repaired),
        cmocka_unit_test(listen_notify_wakes_a_listener_at_commit),
        cmocka_unit_test(concurrent_migrations_all_succeed),
    };
    failed += cmocka_run_group_tests_name("store on postgresql: specifics", tests, NULL, NULL);
    hd_conf_pg_release(&pg);
    return failed;
}
