/* The store conformance cases (tests/support/store_conformance.c) on SQLite: an in-memory
 * database and files in a private directory. The same cases run on PostgreSQL in
 * tests/integration/test_store_postgres.c. Also: what the PostgreSQL-only functions say
 * when they are given a SQLite store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/store_pg.h"

static void pg_functions_are_unsupported_on_sqlite(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    hd_error err;
    char channel[HD_STORE_PG_CHANNEL_MAX + 1] = "x";
    assert_false(hd_store_is_pg(s));
    assert_false(hd_store_is_pg(NULL));
    assert_hd_err(HD_EUNSUPPORTED, hd_store_pg_listen(s, "hd_outbox", &err), &err);
    assert_hd(HD_EUNSUPPORTED, hd_store_pg_unlisten(s, NULL, NULL));
    assert_hd(HD_EUNSUPPORTED, hd_store_pg_notify(s, "hd_outbox", "", NULL));
    assert_hd(HD_EUNSUPPORTED, hd_store_pg_wait(s, 0, channel, NULL));
    assert_string_equal(channel, "");
    assert_hd(HD_EUNSUPPORTED, hd_store_pg_listen(NULL, "hd_outbox", NULL));
    hd_store_close(s);
}

static void pg_url_builder_replaces_the_database(void **state)
{
    (void)state;
    char *u = hd_conf_pg_url("postgresql://postgres@127.0.0.1:5433/postgres", "hd_x", NULL);
    assert_string_equal(u, "postgresql://postgres@127.0.0.1:5433/hd_x");
    free(u);
    u = hd_conf_pg_url("postgres://u:p@h/db?sslmode=disable", "hd_x", "case_1");
    assert_string_equal(u, "postgres://u:p@h/hd_x?sslmode=disable&options=-csearch_path%3Dcase_1");
    free(u);
    u = hd_conf_pg_url("postgresql://h", "hd_x", "s");
    assert_string_equal(u, "postgresql://h/hd_x?options=-csearch_path%3Ds");
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pg_functions_are_unsupported_on_sqlite),
        cmocka_unit_test(pg_url_builder_replaces_the_database),
    };
    int failed = cmocka_run_group_tests_name("store on sqlite: specifics", tests, NULL, NULL);
    hd_conf_target memory = hd_conf_sqlite_memory();
    failed += hd_conf_run_store(&memory);
    char *dir = hd_test_tmpdir("conformance");
    hd_conf_target file = hd_conf_sqlite_file(dir);
    failed += hd_conf_run_store(&file);
    hd_test_rmtree(dir);
    free(dir);
    return failed;
}
