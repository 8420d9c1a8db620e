/* Unit tests for herald/store.h with the SQLite adapter: URLs, statements, transactions,
 * error mapping, migrations. Every test opens its own sqlite::memory: database, or a file
 * in a private temporary directory when it needs WAL or a second connection. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/store.h"
#include "herald/clock.h"

static hd_store *open_memory(void)
{
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &s, &err), &err);
    assert_non_null(s);
    assert_hd_err(
        0, hd_store_exec(s, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)", NULL, 0, &err),
        &err);
    return s;
}

static int count_rows(hd_store *s, const char *table_sql)
{
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_query(s, table_sql, NULL, 0, &rows, &err), &err);
    int n = (int)hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

/* ---- opening -------------------------------------------------------------------------- */

static void open_rejects_null_arguments(void **state)
{
    (void)state;
    hd_store *s = (hd_store *)1;
    hd_error err;
    assert_hd_err(HD_EINVAL, hd_store_open(NULL, &s, &err), &err);
    assert_null(s);
    assert_hd(HD_EINVAL, hd_store_open("sqlite::memory:", NULL, NULL));
    hd_store_close(NULL); /* harmless */
    assert_null(hd_store_dialect(NULL));
}

static void open_rejects_unknown_scheme_with_hd_eurl(void **state)
{
    (void)state;
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_EURL, hd_store_open("mysql://root:secret@db/x", &s, &err), &err);
    assert_null(s);
    assert_non_null(strstr(err.text, "mysql"));
    assert_null(strstr(err.text, "secret")); /* never echo what may be a password */
    assert_hd(HD_EURL, hd_store_open("no-scheme-at-all", &s, &err));
    assert_hd(HD_EURL, hd_store_open("", &s, &err));
}

static void open_rejects_malformed_sqlite_urls(void **state)
{
    (void)state;
    const char *bad[] = {
        "sqlite:",                               /* nothing */
        "sqlite://",                             /* empty path */
        "sqlite:///?synchronous=full",           /* "/" then options: still no file */
        "sqlite:relative.db",                    /* missing // */
        "sqlite::memory:junk",                   /* text after :memory: */
        "sqlite::memory:?synchronous=sometimes", /* bad level */
        "sqlite::memory:?busy_timeout=soon",     /* not a number */
        "sqlite::memory:?busy_timeout=",         /* empty */
        "sqlite::memory:?cache_kib=0",           /* below 1 KiB */
        "sqlite::memory:?cache_kib=lots",        /* not a number */
        "sqlite::memory:?cache=shared",          /* unknown option */
        "sqlite::memory:?synchronous",           /* no value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_store *s = NULL;
        hd_error err;
        hd_error_clear(&err);
        int rc = hd_store_open(bad[i], &s, &err);
        if (rc != HD_EURL)
            print_error("URL %s\n", bad[i]);
        assert_hd_err(HD_EURL, rc, &err);
        assert_null(s);
        assert_true(err.text[0] != '\0');
    }
}

static void postgresql_urls_reach_the_postgresql_adapter(void **state)
{
    (void)state;
    /* Nothing listens on port 1: the PostgreSQL adapter answers, quickly, that it could
     * not connect (the server tests live in tests/integration/test_store_postgres.c). */
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_ECONNECT,
                  hd_store_open("postgresql://u@127.0.0.1:1/db?connect_timeout=2", &s, &err), &err);
    assert_null(s);
    assert_hd(HD_ECONNECT,
              hd_store_open("postgres://u@127.0.0.1:1/db?connect_timeout=2", &s, NULL));
}

static void memory_store_is_sqlite_and_private(void **state)
{
    (void)state;
    hd_store *a = open_memory(), *b = NULL;
    assert_string_equal(hd_store_dialect(a), "sqlite");
    assert_hd(HD_OK, hd_store_open("sqlite::memory:?busy_timeout=10", &b, NULL));
    /* cache_kib sets the connection's page cache (PRAGMA cache_size in KiB: negative). */
    hd_store *c = NULL;
    assert_hd(HD_OK, hd_store_open("sqlite::memory:?cache_kib=256&busy_timeout=10", &c, NULL));
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(c, "PRAGMA cache_size", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), -256);
    hd_rows_free(rows);
    hd_store_close(c);
    /* Each in-memory open is a new database: b has no table t. */
    hd_error err;
    assert_hd_err(HD_ESTORE, hd_store_exec(b, "INSERT INTO t(name) VALUES ('x')", NULL, 0, &err),
                  &err);
    assert_non_null(strstr(err.text, "no such table"));
    hd_store_close(a);
    hd_store_close(b);
}

static void file_store_uses_wal_full_sync_and_foreign_keys(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("store");
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/a.db", dir); /* dir is absolute: sqlite:///tmp/... */
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "PRAGMA journal_mode", NULL, 0, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "wal");
    hd_rows_free(rows);
    assert_hd(HD_OK, hd_store_query(s, "PRAGMA synchronous", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), 2); /* FULL */
    hd_rows_free(rows);
    assert_hd(HD_OK, hd_store_query(s, "PRAGMA foreign_keys", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), 1);
    hd_rows_free(rows);
    hd_store_close(s);

    snprintf(url, sizeof url, "sqlite://%s/a.db?synchronous=normal&busy_timeout=250", dir);
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    assert_hd(HD_OK, hd_store_query(s, "PRAGMA synchronous", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), 1); /* NORMAL */
    hd_rows_free(rows);
    /* busy_timeout=250: while another connection holds the write lock, a writer keeps
     * trying for about 250 ms (short sleeps, see store_sqlite.c), then gets HD_EBUSY. */
    hd_store *holder = NULL;
    snprintf(url, sizeof url, "sqlite://%s/a.db", dir);
    assert_hd_err(HD_OK, hd_store_open(url, &holder, &err), &err);
    assert_hd(HD_OK, hd_store_begin(holder, NULL));
    int64_t t0 = hd_clock_ms();
    assert_hd(HD_EBUSY, hd_store_begin(s, NULL));
    int64_t waited = hd_clock_ms() - t0;
    assert_true(waited >= 250);
    assert_true(waited < 2000);
    /* ...and gets the lock soon after it is freed. */
    assert_hd(HD_OK, hd_store_commit(holder, NULL));
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd(HD_OK, hd_store_rollback(s, NULL));
    hd_store_close(holder);
    hd_store_close(s);
    hd_test_rmtree(dir);
    free(dir);
}

/* PRAGMA synchronous of s: 0 off, 1 normal, 2 full, 3 extra (count_rows reads one cell). */
#define sync_level(s) count_rows(s, "PRAGMA synchronous")

/* hd_store_relax_sync: FULL and EXTRA become NORMAL on that connection only; OFF and NORMAL
 * stay; never inside a transaction; what was committed is still there. */
static void relax_sync_lowers_full_to_normal_on_its_connection(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("store-relax");
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/r.db", dir);
    hd_store *s = NULL, *other = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    assert_hd_err(HD_OK, hd_store_open(url, &other, &err), &err);
    assert_int_equal(sync_level(s), 2);
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd_err(HD_ESTATE, hd_store_relax_sync(s, &err), &err);
    assert_hd(HD_OK, hd_store_rollback(s, NULL));
    assert_hd_err(HD_OK, hd_store_relax_sync(s, &err), &err);
    assert_int_equal(sync_level(s), 1);             /* NORMAL */
    assert_int_equal(sync_level(other), 2);         /* the other connection keeps FULL */
    assert_hd(HD_OK, hd_store_relax_sync(s, NULL)); /* again: nothing changes */
    assert_int_equal(sync_level(s), 1);
    assert_hd(HD_OK, hd_store_exec(s, "CREATE TABLE t (x INTEGER)", NULL, 0, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, NULL), 1); /* a row */
    assert_int_equal(count_rows(other, "SELECT COUNT(*) FROM t"), 1);
    hd_store_close(s);
    hd_store_close(other);

    const struct {
        const char *query;
        int before, after;
    } levels[] = {
        {"?synchronous=extra", 3, 1}, {"?synchronous=off", 0, 0}, {"?synchronous=normal", 1, 1}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        snprintf(url, sizeof url, "sqlite://%s/r.db%s", dir, levels[i].query);
        assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
        assert_int_equal(sync_level(s), levels[i].before);
        assert_hd_err(HD_OK, hd_store_relax_sync(s, &err), &err);
        assert_int_equal(sync_level(s), levels[i].after);
        hd_store_close(s);
    }
    assert_hd_err(HD_EINVAL, hd_store_relax_sync(NULL, &err), &err);
    hd_test_rmtree(dir);
    free(dir);
}

static void relative_sqlite_url_opens_in_working_directory(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("store-rel");
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    hd_store *s = NULL;
    assert_hd(HD_OK, hd_store_open("sqlite://rel.db", &s, NULL));
    hd_store_close(s);
    FILE *f = fopen("rel.db", "rb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(chdir(cwd), 0);
    hd_test_rmtree(dir);
    free(dir);
}

static void unopenable_file_is_hd_estore(void **state)
{
    (void)state;
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_ESTORE, hd_store_open("sqlite:///nonexistent-dir-herald/x.db", &s, &err),
                  &err);
    assert_null(s);
    assert_non_null(strstr(err.text, "nonexistent-dir-herald"));
}

/* ---- statements ----------------------------------------------------------------------- */

static void exec_returns_rows_changed(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_value p[] = {hd_value_text("ada")};
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ($1)", p, 1, NULL), 1);
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ($1)", p, 1, NULL), 1);
    assert_int_equal(hd_store_exec(s, "UPDATE t SET name = 'x'", NULL, 0, NULL), 2);
    assert_int_equal(hd_store_exec(s, "UPDATE t SET name = 'y' WHERE id = 99", NULL, 0, NULL), 0);
    /* A statement that changes nothing reports 0, not the previous statement's count. */
    assert_int_equal(hd_store_exec(s, "CREATE TABLE u (x INTEGER)", NULL, 0, NULL), 0);
    assert_int_equal(hd_store_exec(s, "SELECT * FROM t", NULL, 0, NULL), 0);
    assert_int_equal(hd_store_exec(s, "DELETE FROM t", NULL, 0, NULL), 2);
    hd_store_close(s);
}

static void query_materialises_typed_cells(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    assert_hd_ok(
        hd_store_exec(s, "CREATE TABLE v (i INTEGER, t TEXT, b BLOB, n TEXT)", NULL, 0, NULL));
    const unsigned char bytes[] = {0, 1, 2, 255};
    hd_value p[] = {hd_value_int(-9007199254740993LL), hd_value_text("héllo"),
                    hd_value_blob(bytes, sizeof bytes), hd_value_null()};
    hd_error err;
    assert_int_equal(hd_store_exec(s, "INSERT INTO v VALUES ($1, $2, $3, $4)", p, 4, &err), 1);
    hd_rows *rows = NULL;
    assert_hd_err(HD_OK, hd_store_query(s, "SELECT i, t, b, n FROM v", NULL, 0, &rows, &err), &err);
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_columns(rows), 4);
    assert_string_equal(hd_rows_name(rows, 1), "t");
    assert_null(hd_rows_name(rows, 4));
    assert_int_equal(hd_rows_int(rows, 0, 0), -9007199254740993LL);
    assert_string_equal(hd_rows_text(rows, 0, 0), "-9007199254740993");
    assert_string_equal(hd_rows_text(rows, 0, 1), "héllo");
    assert_int_equal(hd_rows_int(rows, 0, 1), 0); /* not an integer */
    size_t len = 0;
    const unsigned char *b = hd_rows_blob(rows, 0, 2, &len);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(b, bytes, sizeof bytes);
    assert_true(hd_rows_is_null(rows, 0, 3));
    assert_null(hd_rows_text(rows, 0, 3));
    assert_false(hd_rows_is_null(rows, 0, 0));
    /* Out of range reads as NULL rather than crashing. */
    assert_true(hd_rows_is_null(rows, 1, 0));
    assert_null(hd_rows_text(rows, 0, 9));
    assert_int_equal(hd_rows_int(rows, 5, 0), 0);
    hd_rows_free(rows);

    /* No rows is a success with an empty result. */
    assert_hd(HD_OK, hd_store_query(s, "SELECT i FROM v WHERE 0", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 0);
    assert_int_equal(hd_rows_columns(rows), 1);
    hd_rows_free(rows);
    hd_rows_free(NULL);
    hd_store_close(s);
}

/* Integer cells are read as integers (hd_rows_set_int) and written as text by herald: the
 * text must be SQLite's own, for every magnitude and sign, and hd_rows_int the value. */
static void integer_cells_read_as_sqlite_writes_them(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    assert_hd_ok(hd_store_exec(s, "CREATE TABLE n (i INTEGER)", NULL, 0, NULL));
    const int64_t edge[] = {0,          1,         -1,           9,
                            10,         -10,       99,           100,
                            1000000007, INT32_MAX, INT32_MIN,    (int64_t)INT32_MAX + 1,
                            INT64_MAX,  INT64_MIN, INT64_MIN + 1};
    size_t nv = 0;
    int64_t values[200];
    for (size_t k = 0; k < sizeof edge / sizeof edge[0]; k++)
        values[nv++] = edge[k];
    uint64_t x = 0x9E3779B97F4A7C15u; /* and values of every length, both signs */
    while (nv < sizeof values / sizeof values[0]) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t v = (int64_t)(x >> (1 + x % 63)); /* 0 .. 2^63 - 1 */
        values[nv] = nv % 2 ? v : -v;
        nv++;
    }
    for (size_t k = 0; k < nv; k++) {
        hd_value p[] = {hd_value_int(values[k])};
        assert_int_equal(hd_store_exec(s, "INSERT INTO n VALUES ($1)", p, 1, NULL), 1);
    }
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "SELECT i, CAST(i AS TEXT) FROM n ORDER BY rowid", NULL, 0,
                                    &rows, NULL));
    assert_int_equal(hd_rows_count(rows), nv);
    for (size_t k = 0; k < nv; k++) {
        assert_string_equal(hd_rows_text(rows, k, 0), hd_rows_text(rows, k, 1));
        assert_int_equal(hd_rows_int(rows, k, 0), values[k]);
        assert_int_equal(hd_rows_int(rows, k, 1), values[k]); /* parsed from the text */
        size_t len = 0;
        assert_non_null(hd_rows_blob(rows, k, 0, &len));
        assert_int_equal(len, strlen(hd_rows_text(rows, k, 1)));
    }
    hd_rows_free(rows);

    /* Many long column names share the cells' buffer: it moves while the result is built, and
     * the names must still read right after. */
    char sql[16384] = "SELECT ";
    for (int c = 0; c < 120; c++) {
        char col[96];
        snprintf(col, sizeof col, "%s%d AS a_rather_long_column_name_to_fill_the_buffer_%03d",
                 c ? ", " : "", c, c);
        strcat(sql, col);
    }
    assert_hd(HD_OK, hd_store_query(s, sql, NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_columns(rows), 120);
    for (int c = 0; c < 120; c++) {
        char want[64];
        snprintf(want, sizeof want, "a_rather_long_column_name_to_fill_the_buffer_%03d", c);
        assert_string_equal(hd_rows_name(rows, (size_t)c), want);
        assert_int_equal(hd_rows_int(rows, 0, (size_t)c), c);
    }
    hd_rows_free(rows);
    hd_store_close(s);
}

static void placeholders_bind_by_number_in_any_order(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_value p[] = {hd_value_int(7), hd_value_text("seven")};
    /* $2 comes first in the text but still means params[1]. */
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name, id) VALUES ($2, $1)", p, 2, NULL), 1);
    hd_rows *rows = NULL;
    hd_value q[] = {hd_value_text("seven"), hd_value_int(7)};
    assert_hd(HD_OK, hd_store_query(s, "SELECT id, name FROM t WHERE id = $2 AND name = $1", q, 2,
                                    &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_int(rows, 0, 0), 7);
    assert_string_equal(hd_rows_text(rows, 0, 1), "seven");
    hd_rows_free(rows);
    /* The same placeholder twice is one parameter. */
    hd_value one[] = {hd_value_int(7)};
    assert_hd(HD_OK, hd_store_query(s, "SELECT $1 + $1 AS twice", one, 1, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), 14);
    hd_rows_free(rows);
    hd_store_close(s);
}

static void placeholder_misuse_is_hd_einval(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    hd_value p[] = {hd_value_int(1), hd_value_int(2)};
    /* Too few, too many, gaps, foreign placeholder styles. */
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $1, $2", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $1", p, 2, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $1, $3", p, 2, &err), &err);
    assert_non_null(strstr(err.text, "$3"));
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT ?", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT :name", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $x", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "SELECT $0", p, 1, &err), &err);
    /* NULL arguments. */
    assert_hd(HD_EINVAL, hd_store_exec(NULL, "SELECT 1", NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_store_exec(s, NULL, NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_store_exec(s, "SELECT $1", NULL, 1, NULL));
    hd_rows *rows = (hd_rows *)1;
    assert_hd(HD_EINVAL, hd_store_query(s, "SELECT 1", NULL, 0, NULL, NULL));
    assert_hd(HD_EINVAL, hd_store_query(NULL, "SELECT 1", NULL, 0, &rows, NULL));
    assert_null(rows);
    hd_store_close(s);
}

static void one_statement_per_call(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_hd_err(
        HD_EINVAL,
        hd_store_exec(s, "INSERT INTO t(name) VALUES ('a'); DELETE FROM t", NULL, 0, &err), &err);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 0); /* neither ran */
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "   ", NULL, 0, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(s, "-- only a comment", NULL, 0, &err), &err);
    /* A trailing ';', blanks or comment is not a second statement. */
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('a'); -- done\n", NULL, 0, &err),
                     1);
    hd_store_close(s);
}

static void malformed_sql_is_hd_estore_with_sqlite_text(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_ESTORE, hd_store_exec(s, "SELEC 1", NULL, 0, &err), &err);
    assert_int_equal(err.code, HD_ESTORE);
    assert_non_null(strstr(err.text, "syntax error"));
    hd_rows *rows = (hd_rows *)1;
    assert_hd_err(HD_ESTORE, hd_store_query(s, "SELECT nope FROM t", NULL, 0, &rows, &err), &err);
    assert_null(rows);
    assert_non_null(strstr(err.text, "no such column"));
    hd_store_close(s);
}

static void unique_violation_is_hd_eexist(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    hd_value p[] = {hd_value_int(1), hd_value_text("a")};
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(id, name) VALUES ($1, $2)", p, 2, &err), 1);
    assert_hd_err(HD_EEXIST,
                  hd_store_exec(s, "INSERT INTO t(id, name) VALUES ($1, $2)", p, 2, &err), &err);
    assert_non_null(strstr(err.text, "t.id"));
    assert_hd_ok(hd_store_exec(s, "CREATE UNIQUE INDEX t_name ON t(name)", NULL, 0, NULL));
    hd_value q[] = {hd_value_int(2), hd_value_text("a")};
    assert_hd(HD_EEXIST, hd_store_exec(s, "INSERT INTO t(id, name) VALUES ($1, $2)", q, 2, NULL));
    /* The portable way to absorb a duplicate: ON CONFLICT DO NOTHING, then look at the count. */
    assert_int_equal(hd_store_exec(s,
                                   "INSERT INTO t(id, name) VALUES ($1, $2) ON CONFLICT DO "
                                   "NOTHING",
                                   q, 2, NULL),
                     0);
    hd_store_close(s);
}

static void other_constraints_are_hd_estore(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    assert_hd_ok(hd_store_exec(s,
                               "CREATE TABLE child (id INTEGER PRIMARY KEY, t_id INTEGER NOT "
                               "NULL REFERENCES t(id))",
                               NULL, 0, NULL));
    hd_error err;
    hd_value p[] = {hd_value_int(42)};
    /* Foreign keys are enforced (the adapter turns them on). */
    assert_hd_err(HD_ESTORE, hd_store_exec(s, "INSERT INTO child(t_id) VALUES ($1)", p, 1, &err),
                  &err);
    assert_non_null(strstr(err.text, "FOREIGN KEY"));
    assert_hd_err(HD_ESTORE,
                  hd_store_exec(s, "INSERT INTO child(t_id) VALUES (NULL)", NULL, 0, &err), &err);
    hd_store_close(s);
}

static void returning_works_in_query(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_value p[] = {hd_value_text("ada")};
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(s, "INSERT INTO t(name) VALUES ($1) RETURNING id", p, 1, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_int(rows, 0, 0), 1);
    hd_rows_free(rows);
    hd_store_close(s);
}

static void statement_cache_survives_many_distinct_statements(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    /* More distinct statements than cache slots, each run twice, interleaved: evicted
     * statements are compiled again, cached ones reused with fresh bindings. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 100; i++) {
            char sql[96];
            snprintf(sql, sizeof sql, "INSERT INTO t(id, name) VALUES ($1 + %d, $2)", i * 1000);
            hd_value p[] = {hd_value_int(round), hd_value_text("x")};
            assert_int_equal(hd_store_exec(s, sql, p, 2, NULL), 1);
        }
    }
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 200);
    hd_store_close(s);
}

/* ---- transactions --------------------------------------------------------------------- */

static void commit_keeps_and_rollback_discards(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_false(hd_store_in_transaction(s));
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_true(hd_store_in_transaction(s));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('kept')", NULL, 0, NULL), 1);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    assert_false(hd_store_in_transaction(s));

    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('gone')", NULL, 0, NULL), 1);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 2); /* visible inside */
    assert_hd(HD_OK, hd_store_rollback(s, NULL));
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 1);
    hd_store_close(s);
}

static void nested_begin_is_hd_estate(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd_err(HD_ESTATE, hd_store_begin(s, &err), &err);
    assert_non_null(strstr(err.text, "already"));
    /* The outer transaction is still open and usable. */
    assert_true(hd_store_in_transaction(s));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('a')", NULL, 0, NULL), 1);
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 1);
    hd_store_close(s);
}

static void commit_or_rollback_without_begin_is_hd_estate(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_hd_err(HD_ESTATE, hd_store_commit(s, &err), &err);
    assert_hd_err(HD_ESTATE, hd_store_rollback(s, &err), &err);
    assert_hd(HD_EINVAL, hd_store_begin(NULL, NULL));
    assert_hd(HD_EINVAL, hd_store_commit(NULL, NULL));
    assert_hd(HD_EINVAL, hd_store_rollback(NULL, NULL));
    assert_false(hd_store_in_transaction(NULL));
    hd_store_close(s);
}

static void failed_statement_aborts_the_transaction(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    hd_value p[] = {hd_value_int(1)};
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL), 1);
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('before')", NULL, 0, NULL), 1);
    assert_hd(HD_EEXIST, hd_store_exec(s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL));
    /* As on PostgreSQL: nothing more runs until rollback; commit rolls back. */
    assert_hd_err(HD_ESTATE, hd_store_exec(s, "SELECT 1", NULL, 0, &err), &err);
    assert_non_null(strstr(err.text, "aborted"));
    assert_hd_err(HD_ESTATE, hd_store_commit(s, &err), &err);
    assert_false(hd_store_in_transaction(s));
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 1); /* 'before' is gone */
    /* Outside a transaction a failure aborts nothing. */
    assert_hd(HD_EEXIST, hd_store_exec(s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t(name) VALUES ('after')", NULL, 0, NULL), 1);
    hd_store_close(s);
}

static void close_rolls_back_an_open_transaction(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("store-close");
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/c.db", dir);
    hd_store *s = NULL;
    assert_hd(HD_OK, hd_store_open(url, &s, NULL));
    assert_hd_ok(hd_store_exec(s, "CREATE TABLE t (x INTEGER)", NULL, 0, NULL));
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_store_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, NULL), 1);
    hd_store_close(s);
    assert_hd(HD_OK, hd_store_open(url, &s, NULL));
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM t"), 0);
    hd_store_close(s);
    hd_test_rmtree(dir);
    free(dir);
}

static void second_writer_gets_hd_ebusy(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("store-busy");
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/b.db?busy_timeout=0", dir);
    hd_store *a = NULL, *b = NULL;
    assert_hd(HD_OK, hd_store_open(url, &a, NULL));
    assert_hd(HD_OK, hd_store_open(url, &b, NULL));
    assert_hd_ok(hd_store_exec(a, "CREATE TABLE t (x INTEGER)", NULL, 0, NULL));
    assert_hd(HD_OK, hd_store_begin(a, NULL));
    hd_error err;
    /* BEGIN IMMEDIATE: the second writer is stopped at begin, before doing any work. */
    assert_hd_err(HD_EBUSY, hd_store_begin(b, &err), &err);
    assert_false(hd_store_in_transaction(b));
    assert_hd(HD_EBUSY, hd_store_exec(b, "INSERT INTO t VALUES (1)", NULL, 0, NULL));
    /* WAL: readers are not blocked by the writer. */
    assert_int_equal(count_rows(b, "SELECT COUNT(*) FROM t"), 0);
    assert_hd(HD_OK, hd_store_commit(a, NULL));
    assert_hd(HD_OK, hd_store_begin(b, NULL));
    assert_hd(HD_OK, hd_store_commit(b, NULL));
    hd_store_close(a);
    hd_store_close(b);
    hd_test_rmtree(dir);
    free(dir);
}

/* ---- migrations ----------------------------------------------------------------------- */

static const char *const shop_steps[] = {
    "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)",
    "CREATE TABLE invoices (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL UNIQUE"
    " REFERENCES orders(id));"
    "CREATE INDEX invoices_order ON invoices(order_id)",
};

static void migrate_applies_steps_once(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_int_equal(hd_store_schema_version(s, "shop", &err), 0);
    assert_int_equal(hd_store_migrate(s, "shop", shop_steps, 2, &err), 2);
    assert_int_equal(hd_store_schema_version(s, "shop", &err), 2);
    /* Twice is a no-op: no step runs again (they would fail: tables exist). */
    assert_int_equal(hd_store_migrate(s, "shop", shop_steps, 2, &err), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM hd_schema_migrations"), 2);
    /* The record says when. */
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "SELECT applied_at FROM hd_schema_migrations", NULL, 0,
                                    &rows, NULL));
    assert_int_equal(strlen(hd_rows_text(rows, 0, 0)), 24);
    hd_rows_free(rows);
    /* Modules are independent. */
    const char *const other[] = {"CREATE TABLE other (x INTEGER)"};
    assert_int_equal(hd_store_migrate(s, "other", other, 1, &err), 1);
    assert_int_equal(hd_store_schema_version(s, "shop", &err), 2);
    hd_store_close(s);
}

static void migrate_appends_new_steps_only(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    assert_int_equal(hd_store_migrate(s, "shop", shop_steps, 1, NULL), 1);
    assert_int_equal(hd_store_migrate(s, "shop", shop_steps, 2, NULL), 1);
    assert_int_equal(hd_store_schema_version(s, "shop", NULL), 2);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM sqlite_master WHERE name = "
                                   "'invoices_order'"),
                     1);
    hd_store_close(s);
}

static void failing_step_keeps_earlier_steps_and_reports_which(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    const char *const steps[] = {
        "CREATE TABLE a (x INTEGER)",
        "CREATE TABLE b (x INTEGER); CREATE TABLE broken (",
    };
    hd_error err;
    assert_hd_err(HD_ESTORE, hd_store_migrate(s, "m", steps, 2, &err), &err);
    assert_non_null(strstr(err.text, "m step 2"));
    assert_int_equal(hd_store_schema_version(s, "m", NULL), 1);
    /* Step 2 was one transaction: its first statement did not stay either. */
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'"), 0);
    assert_int_equal(count_rows(s, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'a'"), 1);
    assert_false(hd_store_in_transaction(s));
    hd_store_close(s);
}

static void migrate_refuses_bad_input_and_newer_databases(void **state)
{
    (void)state;
    hd_store *s = open_memory();
    hd_error err;
    assert_hd(HD_EINVAL, hd_store_migrate(NULL, "m", shop_steps, 2, NULL));
    assert_hd(HD_EINVAL, hd_store_migrate(s, NULL, shop_steps, 2, NULL));
    assert_hd(HD_EINVAL, hd_store_migrate(s, "", shop_steps, 2, NULL));
    assert_hd(HD_EINVAL, hd_store_migrate(s, "m", NULL, 2, NULL));
    const char *const holes[] = {"CREATE TABLE a (x INTEGER)", NULL};
    assert_hd(HD_EINVAL, hd_store_migrate(s, "m", holes, 2, NULL));
    assert_hd(HD_EINVAL, hd_store_schema_version(s, NULL, NULL));
    assert_int_equal(hd_store_migrate(s, "m", NULL, 0, NULL), 0);

    assert_int_equal(hd_store_migrate(s, "shop", shop_steps, 2, NULL), 2);
    assert_hd_err(HD_EVERSION, hd_store_migrate(s, "shop", shop_steps, 1, &err), &err);
    assert_non_null(strstr(err.text, "newer"));

    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd(HD_ESTATE, hd_store_migrate(s, "shop", shop_steps, 2, NULL));
    assert_hd(HD_OK, hd_store_rollback(s, NULL));
    hd_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_rejects_null_arguments),
        cmocka_unit_test(open_rejects_unknown_scheme_with_hd_eurl),
        cmocka_unit_test(open_rejects_malformed_sqlite_urls),
        cmocka_unit_test(postgresql_urls_reach_the_postgresql_adapter),
        cmocka_unit_test(memory_store_is_sqlite_and_private),
        cmocka_unit_test(file_store_uses_wal_full_sync_and_foreign_keys),
        cmocka_unit_test(relax_sync_lowers_full_to_normal_on_its_connection),
        cmocka_unit_test(relative_sqlite_url_opens_in_working_directory),
        cmocka_unit_test(unopenable_file_is_hd_estore),
        cmocka_unit_test(exec_returns_rows_changed),
        cmocka_unit_test(query_materialises_typed_cells),
        cmocka_unit_test(integer_cells_read_as_sqlite_writes_them),
        cmocka_unit_test(placeholders_bind_by_number_in_any_order),
        cmocka_unit_test(placeholder_misuse_is_hd_einval),
        cmocka_unit_test(one_statement_per_call),
        cmocka_unit_test(malformed_sql_is_hd_estore_with_sqlite_text),
        cmocka_unit_test(unique_violation_is_hd_eexist),
        cmocka_unit_test(other_constraints_are_hd_estore),
        cmocka_unit_test(returning_works_in_query),
        cmocka_unit_test(statement_cache_survives_many_distinct_statements),
        cmocka_unit_test(commit_keeps_and_rollback_discards),
        cmocka_unit_test(nested_begin_is_hd_estate),
        cmocka_unit_test(commit_or_rollback_without_begin_is_hd_estate),
        cmocka_unit_test(failed_statement_aborts_the_transaction),
        cmocka_unit_test(close_rolls_back_an_open_transaction),
        cmocka_unit_test(second_writer_gets_hd_ebusy),
        cmocka_unit_test(migrate_applies_steps_once),
        cmocka_unit_test(migrate_appends_new_steps_only),
        cmocka_unit_test(failing_step_keeps_earlier_steps_and_reports_which),
        cmocka_unit_test(migrate_refuses_bad_input_and_newer_databases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
