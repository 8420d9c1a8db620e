/* store_conformance.c — see store_conformance.h.
 *
 * Every case gets a fixture: the target, a fresh URL and a store open on it. SQL here is
 * the portable subset store.h asks for: TEXT, BIGINT, BYTEA (PostgreSQL's blob type;
 * SQLite keeps a blob in a BYTEA column as it is), $N placeholders, ON CONFLICT,
 * RETURNING. Where the two databases must differ (dialect name), the case says so.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hd_test.h"
#include "store_conformance.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/aggregate.h"
#include "herald/clock.h"
#include "herald/dispatcher.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/store_pg.h"
#include "herald/uow.h"

/* ---- fixture ---------------------------------------------------------------------------- */

typedef struct fixture {
    const hd_conf_target *t;
    char *url;
    hd_store *s;
} fixture;

hd_store *hd_conf_open(const char *url)
{
    hd_store *s = NULL;
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    assert_non_null(s);
    return s;
}

int64_t hd_conf_scalar(hd_store *s, const char *sql)
{
    hd_rows *rows = NULL;
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_OK, hd_store_query(s, sql, NULL, 0, &rows, &err), &err);
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v;
}

void hd_conf_plan(hd_store *s, const char *sql, const hd_value *params, size_t n, char *text,
                  size_t cap)
{
    char explain[8192];
    assert_true((size_t)snprintf(explain, sizeof explain, "EXPLAIN QUERY PLAN %s", sql) <
                sizeof explain);
    hd_rows *plan = NULL;
    hd_error err;
    hd_error_clear(&err);
    assert_true(hd_store_query(s, explain, params, n, &plan, &err) >= 0);
    size_t used = 0;
    text[0] = '\0';
    for (size_t i = 0; i < hd_rows_count(plan) && used + 1 < cap; i++) {
        int w = snprintf(text + used, cap - used, "%s\n", hd_rows_text(plan, i, 3));
        used = w < 0 || (size_t)w >= cap - used ? cap - 1 : used + (size_t)w;
    }
    hd_rows_free(plan);
}

static int setup(void **state)
{
    const hd_conf_target *t = *state;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->t = t;
    f->url = t->fresh(t->ctx);
    assert_non_null(f->url);
    f->s = hd_conf_open(f->url);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hd_store_close(f->s);
    if (f->t->drop != NULL)
        f->t->drop(f->t->ctx, f->url);
    free(f->url);
    free(f);
    return 0;
}

/* A second connection to the fixture's database (only when the target is shared). */
static hd_store *second(fixture *f)
{
    assert_true(f->t->shared);
    return hd_conf_open(f->url);
}

static void exec_ok(hd_store *s, const char *sql)
{
    hd_error err;
    hd_error_clear(&err);
    assert_hd_ok(hd_store_exec(s, sql, NULL, 0, &err) < 0
                     ? (print_error("%s\n  %s\n", sql, err.text), -1)
                     : 0);
}

static void make_table_t(hd_store *s)
{
    exec_ok(s, "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)");
}

static int is_pg(const fixture *f)
{
    return strcmp(hd_store_dialect(f->s), "postgresql") == 0;
}

/* ==== the store port ======================================================================= */

static void dialect_names_the_database(void **state)
{
    fixture *f = *state;
    const char *d = hd_store_dialect(f->s);
    assert_non_null(d);
    if (strncmp(f->t->name, "sqlite", 6) == 0)
        assert_string_equal(d, "sqlite");
    else
        assert_string_equal(d, "postgresql");
    assert_int_equal(hd_store_is_pg(f->s), is_pg(f));
}

static void exec_returns_rows_changed(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_value a[] = {hd_value_int(1), hd_value_text("ada")};
    hd_value b[] = {hd_value_int(2), hd_value_text("bob")};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", a, 2, NULL), 1);
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", b, 2, NULL), 1);
    assert_int_equal(hd_store_exec(f->s, "UPDATE t SET name = 'x'", NULL, 0, NULL), 2);
    assert_int_equal(hd_store_exec(f->s, "UPDATE t SET name = 'y' WHERE id = 99", NULL, 0, NULL),
                     0);
    /* Statements that change nothing report 0, not the previous count, not rows read. */
    assert_int_equal(hd_store_exec(f->s, "CREATE TABLE u (x BIGINT)", NULL, 0, NULL), 0);
    assert_int_equal(hd_store_exec(f->s, "SELECT * FROM t", NULL, 0, NULL), 0);
    /* RETURNING through exec: the rows are discarded, the count is kept. */
    hd_value c[] = {hd_value_int(3)};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES ($1) RETURNING id", c, 1, NULL),
                     1);
    assert_int_equal(hd_store_exec(f->s, "DELETE FROM t", NULL, 0, NULL), 3);
}

static void values_round_trip_int_text_blob_null(void **state)
{
    fixture *f = *state;
    exec_ok(f->s, "CREATE TABLE v (i BIGINT, t TEXT, b BYTEA, n TEXT, e BYTEA)");
    const unsigned char bytes[] = {0, 1, 2, '\\', 'x', 0, 255};
    hd_value p[] = {hd_value_int(-9007199254740993LL), hd_value_text("héllo 'quoted' $1"),
                    hd_value_blob(bytes, sizeof bytes), hd_value_null(), hd_value_blob("", 0)};
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO v VALUES ($1, $2, $3, $4, $5)", p, 5, &err),
                     1);
    hd_rows *rows = NULL;
    assert_hd_err(HD_OK, hd_store_query(f->s, "SELECT i, t, b, n, e FROM v", NULL, 0, &rows, &err),
                  &err);
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_columns(rows), 5);
    assert_string_equal(hd_rows_name(rows, 0), "i");
    assert_string_equal(hd_rows_name(rows, 2), "b");
    assert_int_equal(hd_rows_int(rows, 0, 0), -9007199254740993LL);
    assert_string_equal(hd_rows_text(rows, 0, 0), "-9007199254740993");
    assert_string_equal(hd_rows_text(rows, 0, 1), "héllo 'quoted' $1");
    size_t len = 0;
    const unsigned char *blob = hd_rows_blob(rows, 0, 2, &len);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(blob, bytes, sizeof bytes);
    assert_true(hd_rows_is_null(rows, 0, 3));
    assert_null(hd_rows_text(rows, 0, 3));
    /* An empty blob is a value, not NULL. */
    assert_false(hd_rows_is_null(rows, 0, 4));
    assert_non_null(hd_rows_blob(rows, 0, 4, &len));
    assert_int_equal(len, 0);
    hd_rows_free(rows);

    /* A NULL text or blob pointer is SQL NULL; a query with no rows is an empty result. */
    hd_value q[] = {hd_value_text(NULL), hd_value_blob(NULL, 3)};
    assert_int_equal(q[0].type, HD_VALUE_NULL);
    assert_int_equal(q[1].type, HD_VALUE_NULL);
    assert_hd(HD_OK, hd_store_query(f->s, "SELECT i FROM v WHERE i = 42", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 0);
    assert_int_equal(hd_rows_columns(rows), 1);
    hd_rows_free(rows);
}

static void text_into_integer_column_and_large_values(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    /* Text is untyped: the database converts '42' for an integer column, on both. */
    hd_value p[] = {hd_value_text("42"), hd_value_text("x")};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", p, 2, NULL), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT id FROM t"), 42);
    /* 200 KB of text survives intact. */
    size_t big = 200 * 1024;
    char *text = malloc(big + 1);
    assert_non_null(text);
    for (size_t i = 0; i < big; i++)
        text[i] = (char)('a' + i % 26);
    text[big] = '\0';
    hd_value q[] = {hd_value_int(43), hd_value_text(text)};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", q, 2, NULL), 1);
    hd_rows *rows = NULL;
    hd_value k[] = {hd_value_int(43)};
    assert_hd(HD_OK, hd_store_query(f->s, "SELECT name FROM t WHERE id = $1", k, 1, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), text);
    hd_rows_free(rows);
    free(text);
}

static void many_rows_are_materialised(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    for (int i = 1; i <= 1000; i++) {
        hd_value p[] = {hd_value_int(i)};
        assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL), 1);
    }
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(f->s, "SELECT id, name FROM t ORDER BY id", NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1000);
    assert_int_equal(hd_rows_int(rows, 999, 0), 1000);
    assert_true(hd_rows_is_null(rows, 999, 1));
    hd_rows_free(rows);
}

static void placeholders_bind_by_number_in_any_order(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_value p[] = {hd_value_int(7), hd_value_text("seven")};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(name, id) VALUES ($2, $1)", p, 2, NULL), 1);
    hd_rows *rows = NULL;
    hd_value q[] = {hd_value_text("seven"), hd_value_int(7)};
    assert_hd(HD_OK, hd_store_query(f->s, "SELECT id, name FROM t WHERE id = $2 AND name = $1", q,
                                    2, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_int(rows, 0, 0), 7);
    assert_string_equal(hd_rows_text(rows, 0, 1), "seven");
    hd_rows_free(rows);
    /* One placeholder used twice is one parameter; integers are typed, so + works. */
    hd_value one[] = {hd_value_int(7)};
    assert_hd(HD_OK, hd_store_query(f->s, "SELECT $1 + $1 AS twice", one, 1, &rows, NULL));
    assert_string_equal(hd_rows_name(rows, 0), "twice");
    assert_int_equal(hd_rows_int(rows, 0, 0), 14);
    hd_rows_free(rows);
    /* '$1' inside a literal or a comment is text, not a placeholder. */
    assert_hd(HD_OK,
              hd_store_query(f->s, "SELECT '$1 ? :x' AS s, $1 AS n -- $2", one, 1, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "$1 ? :x");
    hd_rows_free(rows);
}

static void placeholder_misuse_is_hd_einval(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_value p[] = {hd_value_int(1), hd_value_int(2)};
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT $1, $2", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT $1", p, 2, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT $1, $3", p, 2, &err), &err);
    assert_non_null(strstr(err.text, "$3"));
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT ?", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT :name", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT $x", p, 1, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "SELECT $0", p, 1, &err), &err);
    assert_hd(HD_EINVAL, hd_store_exec(NULL, "SELECT 1", NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_store_exec(f->s, NULL, NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_store_exec(f->s, "SELECT $1", NULL, 1, NULL));
    hd_rows *rows = (hd_rows *)1;
    assert_hd(HD_EINVAL, hd_store_query(f->s, "SELECT 1", NULL, 0, NULL, NULL));
    assert_hd(HD_EINVAL, hd_store_query(NULL, "SELECT 1", NULL, 0, &rows, NULL));
    assert_null(rows);
}

static void one_statement_per_call(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_error err;
    assert_hd_err(HD_EINVAL,
                  hd_store_exec(f->s, "INSERT INTO t(id) VALUES (1); DELETE FROM t", NULL, 0, &err),
                  &err);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM t"), 0); /* neither ran */
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "   ", NULL, 0, &err), &err);
    assert_hd_err(HD_EINVAL, hd_store_exec(f->s, "-- only a comment", NULL, 0, &err), &err);
    /* A trailing ';', blanks or a comment is not a second statement; nor is ';' quoted. */
    assert_int_equal(
        hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES (1, 'a;b'); -- done\n", NULL, 0, &err),
        1);
}

static void malformed_sql_is_hd_estore_with_the_reason(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_ESTORE, hd_store_exec(f->s, "SELEC 1", NULL, 0, &err), &err);
    assert_int_equal(err.code, HD_ESTORE);
    assert_non_null(strstr(err.text, "syntax error"));
    hd_rows *rows = (hd_rows *)1;
    assert_hd_err(HD_ESTORE,
                  hd_store_query(f->s, "SELECT nope FROM missing_table", NULL, 0, &rows, &err),
                  &err);
    assert_null(rows);
    assert_non_null(strstr(err.text, "missing_table"));
}

static void unique_violation_is_hd_eexist(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    exec_ok(f->s, "CREATE UNIQUE INDEX t_name ON t(name)");
    hd_error err;
    hd_value p[] = {hd_value_int(1), hd_value_text("ada@example.com")};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", p, 2, &err), 1);
    assert_hd_err(HD_EEXIST,
                  hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", p, 2, &err), &err);
    hd_value q[] = {hd_value_int(2), hd_value_text("ada@example.com")};
    assert_hd_err(HD_EEXIST,
                  hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES ($1, $2)", q, 2, &err), &err);
    /* The values are not repeated in the error text: it may reach a log. */
    assert_null(strstr(err.text, "ada@example.com"));
    /* The portable way to absorb a duplicate: ON CONFLICT DO NOTHING, then the count. */
    assert_int_equal(hd_store_exec(f->s,
                                   "INSERT INTO t(id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                   q, 2, NULL),
                     0);
}

static void other_constraints_are_hd_estore(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    exec_ok(f->s,
            "CREATE TABLE child (id BIGINT PRIMARY KEY, t_id BIGINT NOT NULL REFERENCES t(id))");
    hd_error err;
    hd_value p[] = {hd_value_int(1), hd_value_int(42)};
    assert_hd_err(HD_ESTORE,
                  hd_store_exec(f->s, "INSERT INTO child(id, t_id) VALUES ($1, $2)", p, 2, &err),
                  &err); /* foreign key: enforced on both */
    assert_hd_err(HD_ESTORE,
                  hd_store_exec(f->s, "INSERT INTO child(id, t_id) VALUES ($1, NULL)", p, 1, &err),
                  &err); /* NOT NULL */
}

static void returning_works_in_query(void **state)
{
    fixture *f = *state;
    exec_ok(f->s, "CREATE TABLE r (id BIGINT PRIMARY KEY, name TEXT)");
    hd_value p[] = {hd_value_int(5), hd_value_text("ada")};
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(f->s, "INSERT INTO r(id, name) VALUES ($1, $2) RETURNING id, name", p,
                             2, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    assert_int_equal(hd_rows_int(rows, 0, 0), 5);
    assert_string_equal(hd_rows_text(rows, 0, 1), "ada");
    hd_rows_free(rows);
}

static void commit_keeps_and_rollback_discards(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_error err;
    assert_false(hd_store_in_transaction(f->s));
    assert_hd_err(HD_OK, hd_store_begin(f->s, &err), &err);
    assert_true(hd_store_in_transaction(f->s));
    assert_int_equal(
        hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES (1, 'kept')", NULL, 0, NULL), 1);
    assert_hd_err(HD_OK, hd_store_commit(f->s, &err), &err);
    assert_false(hd_store_in_transaction(f->s));
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(
        hd_store_exec(f->s, "INSERT INTO t(id, name) VALUES (2, 'gone')", NULL, 0, NULL), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM t"), 2); /* visible inside */
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM t"), 1);
}

static void transaction_misuse_is_hd_estate(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_error err;
    assert_hd_err(HD_ESTATE, hd_store_commit(f->s, &err), &err);
    assert_hd_err(HD_ESTATE, hd_store_rollback(f->s, &err), &err);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd_err(HD_ESTATE, hd_store_begin(f->s, &err), &err);
    /* The outer transaction is still open and usable. */
    assert_true(hd_store_in_transaction(f->s));
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES (1)", NULL, 0, NULL), 1);
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM t"), 1);
}

static void failed_statement_aborts_the_transaction(void **state)
{
    fixture *f = *state;
    make_table_t(f->s);
    hd_error err;
    hd_value p[] = {hd_value_int(1)};
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL), 1);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES (2)", NULL, 0, NULL), 1);
    assert_hd(HD_EEXIST, hd_store_exec(f->s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL));
    assert_hd_err(HD_ESTATE, hd_store_exec(f->s, "SELECT 1", NULL, 0, &err), &err);
    assert_non_null(strstr(err.text, "aborted"));
    hd_rows *rows = (hd_rows *)1;
    assert_hd(HD_ESTATE, hd_store_query(f->s, "SELECT 1", NULL, 0, &rows, NULL));
    assert_null(rows);
    assert_hd_err(HD_ESTATE, hd_store_commit(f->s, &err), &err);
    assert_false(hd_store_in_transaction(f->s));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM t"), 1); /* row 2 is gone */
    /* A syntax error aborts as well; rollback ends it cleanly. */
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd(HD_ESTORE, hd_store_exec(f->s, "SELEC 1", NULL, 0, NULL));
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
    /* Outside a transaction a failure aborts nothing. */
    assert_hd(HD_EEXIST, hd_store_exec(f->s, "INSERT INTO t(id) VALUES ($1)", p, 1, NULL));
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES (3)", NULL, 0, NULL), 1);
}

static void uncommitted_rows_are_private_and_close_rolls_back(void **state)
{
    fixture *f = *state;
    if (!f->t->shared)
        return; /* one connection only: nothing to compare with */
    make_table_t(f->s);
    hd_store *other = second(f);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES (1)", NULL, 0, NULL), 1);
    assert_int_equal(hd_conf_scalar(other, "SELECT COUNT(*) FROM t"), 0);
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    assert_int_equal(hd_conf_scalar(other, "SELECT COUNT(*) FROM t"), 1);
    /* Closing with a transaction open rolls it back. */
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_store_exec(f->s, "INSERT INTO t(id) VALUES (2)", NULL, 0, NULL), 1);
    hd_store_close(f->s);
    f->s = hd_conf_open(f->url);
    assert_int_equal(hd_conf_scalar(other, "SELECT COUNT(*) FROM t"), 1);
    hd_store_close(other);
}

/* ---- migrations ---------------------------------------------------------------------------- */

static const char *const shop_steps[] = {
    "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)",
    "CREATE TABLE invoices (id BIGINT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE"
    " REFERENCES orders(id));"
    "CREATE INDEX invoices_order ON invoices(order_id)",
};

static void migrations_apply_once_and_append(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_store_schema_version(f->s, "shop", &err), 0);
    assert_int_equal(hd_store_migrate(f->s, "shop", shop_steps, 1, &err), 1);
    assert_int_equal(hd_store_migrate(f->s, "shop", shop_steps, 2, &err), 1);
    assert_int_equal(hd_store_schema_version(f->s, "shop", &err), 2);
    /* Again: a no-op (the steps would fail if they ran: the tables exist). */
    assert_int_equal(hd_store_migrate(f->s, "shop", shop_steps, 2, &err), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_schema_migrations"), 2);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM invoices"), 0);
    /* A database migrated further than the code knows is refused. */
    assert_hd_err(HD_EVERSION, hd_store_migrate(f->s, "shop", shop_steps, 1, &err), &err);
    /* Inside a transaction: refused. */
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd(HD_ESTATE, hd_store_migrate(f->s, "shop", shop_steps, 2, NULL));
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
}

static void failing_migration_step_is_all_or_nothing(void **state)
{
    fixture *f = *state;
    const char *const steps[] = {
        "CREATE TABLE a (x BIGINT)",
        "CREATE TABLE b (x BIGINT); CREATE TABLE broken (",
    };
    hd_error err;
    assert_hd_err(HD_ESTORE, hd_store_migrate(f->s, "m", steps, 2, &err), &err);
    assert_non_null(strstr(err.text, "m step 2"));
    assert_int_equal(hd_store_schema_version(f->s, "m", NULL), 1);
    assert_false(hd_store_in_transaction(f->s));
    /* Step 2 was one transaction: its first statement did not stay either. */
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM a"), 0);
    assert_hd(HD_ESTORE, hd_store_exec(f->s, "SELECT COUNT(*) FROM b", NULL, 0, NULL));
}

/* ---- the unit of work over the store ------------------------------------------------------- */

typedef struct thing {
    hd_aggregate base;
} thing;

typedef struct uow_world {
    int fail; /* the second handler refuses */
} uow_world;

static int audit_handler(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)handler;
    hd_value p[] = {hd_value_text(hd_event_id(ev))};
    int rc = hd_store_exec(hd_uow_store(uow), "INSERT INTO audit(event_id) VALUES ($1)", p, 1, err);
    return rc < 0 ? rc : 0;
}

static int refusing_handler(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    (void)ev;
    uow_world *w = handler;
    return w->fail ? hd_error_set(err, HD_EHANDLER, "the second handler refused") : 0;
}

/* One use case: create thing `id` (a row) and raise thing.created, in a unit of work. */
static int create_thing(hd_store *s, hd_dispatcher *d, const char *id, hd_error *err)
{
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(s, d, &uow, err);
    if (rc < 0)
        return rc;
    thing t;
    assert_hd(HD_OK, hd_aggregate_init(&t.base, "thing", id, 0));
    hd_value p[] = {hd_value_text(id)};
    rc = hd_store_exec(hd_uow_store(uow), "INSERT INTO things(id) VALUES ($1)", p, 1, err);
    if (rc >= 0)
        rc = hd_aggregate_raise(&t.base, hd_event_new("thing.created", json_object()));
    if (rc >= 0)
        rc = hd_uow_track(uow, &t.base);
    rc = rc < 0 ? (hd_uow_rollback(uow, NULL), rc) : hd_uow_commit(uow, err);
    hd_aggregate_release(&t.base);
    return rc;
}

static void uow_failing_handler_leaves_neither_row(void **state)
{
    fixture *f = *state;
    exec_ok(f->s, "CREATE TABLE things (id TEXT PRIMARY KEY)");
    exec_ok(f->s, "CREATE TABLE audit (event_id TEXT PRIMARY KEY)");
    uow_world w = {1};
    hd_dispatcher *d = hd_dispatcher_new();
    assert_non_null(d);
    assert_hd(HD_OK, hd_dispatcher_register(d, "thing.created", audit_handler, NULL));
    assert_hd(HD_OK, hd_dispatcher_register(d, "thing.created", refusing_handler, &w));
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_EHANDLER, create_thing(f->s, d, "t1", &err), &err);
    assert_non_null(strstr(err.text, "refused"));
    assert_false(hd_store_in_transaction(f->s));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM things"), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM audit"), 0);
    w.fail = 0;
    assert_hd_err(HD_OK, create_thing(f->s, d, "t1", &err), &err);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM things"), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM audit"), 1);
    /* A failing statement in the use case itself (duplicate id) rolls back the same way. */
    assert_hd(HD_EEXIST, create_thing(f->s, d, "t1", NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM audit"), 1);
    hd_dispatcher_free(d);
}

int hd_conf_run_store(const hd_conf_target *t)
{
    void *ts = (void *)t;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(dialect_names_the_database, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(exec_returns_rows_changed, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(values_round_trip_int_text_blob_null, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(text_into_integer_column_and_large_values, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(many_rows_are_materialised, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(placeholders_bind_by_number_in_any_order, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(placeholder_misuse_is_hd_einval, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(one_statement_per_call, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(malformed_sql_is_hd_estore_with_the_reason, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(unique_violation_is_hd_eexist, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(other_constraints_are_hd_estore, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(returning_works_in_query, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(commit_keeps_and_rollback_discards, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(transaction_misuse_is_hd_estate, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(failed_statement_aborts_the_transaction, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(uncommitted_rows_are_private_and_close_rolls_back,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(migrations_apply_once_and_append, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(failing_migration_step_is_all_or_nothing, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(uow_failing_handler_leaves_neither_row, setup,
                                                 teardown, ts),
    };
    char name[96];
    snprintf(name, sizeof name, "store conformance: %s", t->name);
    return _cmocka_run_group_tests(name, tests, sizeof tests / sizeof tests[0], NULL, NULL);
}

/* ==== the outbox ============================================================================ */

/* A users.user_registered envelope for user `id`, with a correlation id; new. */
static hd_envelope *user_registered(const char *id)
{
    hd_envelope *env =
        hd_envelope_new("users.user_registered", 1, "/users",
                        json_pack("{s:s, s:s}", "user_id", id, "email", "someone@example.com"));
    assert_non_null(env);
    assert_hd(HD_OK, hd_envelope_set_correlation_id(env, "corr-1"));
    return env;
}

static void outbox_setup_tables(hd_store *s)
{
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_outbox_migrate(s, &err), 4);
    exec_ok(s, "CREATE TABLE users (id TEXT PRIMARY KEY)");
}

/* Save user id and append its event, in one transaction; commit or roll back. */
static void save_user(hd_store *s, const char *aggregate, const char *id, int commit)
{
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    hd_value p[] = {hd_value_text(id)};
    assert_int_equal(hd_store_exec(s, "INSERT INTO users(id) VALUES ($1)", p, 1, &err), 1);
    hd_envelope *env = user_registered(id);
    assert_hd_err(HD_OK, hd_outbox_append(s, env, "user", aggregate ? aggregate : id, &err), &err);
    hd_envelope_free(env);
    if (commit)
        assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    else
        assert_hd_err(HD_OK, hd_store_rollback(s, &err), &err);
}

static int64_t outbox_count(hd_store *s)
{
    return hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox");
}

/* Claim at `now` (0: wall clock) with a lease; fails the test on error. */
static hd_outbox_batch *claim_at(hd_store *s, size_t limit, int64_t now, int64_t lease)
{
    hd_outbox_claim_opts o = {"test-relay", lease, now};
    hd_outbox_batch *b = NULL;
    hd_error err;
    hd_error_clear(&err);
    int rc = hd_outbox_claim(s, limit, &o, &b, &err);
    assert_hd_err(HD_OK, rc < 0 ? rc : 0, &err);
    assert_non_null(b);
    assert_int_equal((size_t)rc, b->count);
    return b;
}

static void outbox_migration_is_idempotent(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_outbox_migrate(f->s, &err), 4);
    assert_int_equal(hd_outbox_migrate(f->s, &err), 0);
    assert_int_equal(hd_store_schema_version(f->s, "outbox", &err), 4);
    assert_int_equal(outbox_count(f->s), 0);
    assert_hd(HD_EINVAL, hd_outbox_migrate(NULL, NULL));
}

static void outbox_append_outside_a_transaction_is_refused(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    hd_envelope *env = user_registered("u1");
    hd_error err;
    assert_hd_err(HD_ESTATE, hd_outbox_append(f->s, env, "user", "u1", &err), &err);
    assert_non_null(strstr(err.text, "transaction"));
    assert_int_equal(outbox_count(f->s), 0);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd(HD_EINVAL, hd_outbox_append(f->s, NULL, "user", "u1", NULL));
    assert_hd(HD_EINVAL, hd_outbox_append(f->s, env, "", "u1", NULL));
    assert_hd(HD_EINVAL, hd_outbox_append(f->s, env, "user", NULL, NULL));
    assert_hd(HD_EINVAL, hd_outbox_append(NULL, env, "user", "u1", NULL));
    /* The same event twice: a duplicate id, and the transaction is aborted. */
    assert_hd(HD_OK, hd_outbox_append(f->s, env, "user", "u1", NULL));
    assert_hd(HD_EEXIST, hd_outbox_append(f->s, env, "user", "u1", NULL));
    assert_hd(HD_ESTATE, hd_store_commit(f->s, NULL));
    assert_int_equal(outbox_count(f->s), 0);
    hd_envelope_free(env);
}

static void outbox_row_commits_and_rolls_back_with_the_business_row(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, NULL, "u1", 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM users"), 0);
    assert_int_equal(outbox_count(f->s), 0);
    save_user(f->s, NULL, "u1", 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(outbox_count(f->s), 1);
}

/* A domain handler that turns thing.created into an integration event in the outbox. */
static int outbox_handler(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)handler;
    hd_envelope *env = hd_envelope_new("things.thing_created", 1, "/things",
                                       json_pack("{s:s}", "thing_id", hd_event_aggregate_id(ev)));
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc =
        hd_outbox_append_uow(uow, env, hd_event_aggregate_type(ev), hd_event_aggregate_id(ev), err);
    hd_envelope_free(env);
    return rc;
}

static void outbox_failing_handler_leaves_neither_row(void **state)
{
    fixture *f = *state;
    assert_int_equal(hd_outbox_migrate(f->s, NULL), 4);
    exec_ok(f->s, "CREATE TABLE things (id TEXT PRIMARY KEY)");
    uow_world w = {1};
    hd_dispatcher *d = hd_dispatcher_new();
    assert_non_null(d);
    assert_hd(HD_OK, hd_dispatcher_register(d, "thing.created", outbox_handler, NULL));
    assert_hd(HD_OK, hd_dispatcher_register(d, "thing.created", refusing_handler, &w));
    assert_hd(HD_EHANDLER, create_thing(f->s, d, "t1", NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM things"), 0);
    assert_int_equal(outbox_count(f->s), 0);
    w.fail = 0;
    hd_error err;
    assert_hd_err(HD_OK, create_thing(f->s, d, "t1", &err), &err);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM things"), 1);
    assert_int_equal(outbox_count(f->s), 1);
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(f->s, "SELECT aggregate_type, aggregate_id, type FROM hd_outbox", NULL,
                             0, &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "thing");
    assert_string_equal(hd_rows_text(rows, 0, 1), "t1");
    assert_string_equal(hd_rows_text(rows, 0, 2), "things.thing_created");
    hd_rows_free(rows);
    hd_dispatcher_free(d);
}

static void outbox_claim_returns_due_rows_in_seq_order_up_to_limit(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "u%d", i);
        save_user(f->s, NULL, id, 1);
    }
    hd_error err;
    hd_outbox_batch *b = NULL;
    /* Refused inside a transaction, with a bad limit, or without out. */
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd_err(HD_ESTATE, hd_outbox_claim(f->s, 3, NULL, &b, &err), &err);
    assert_null(b);
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
    assert_hd(HD_EINVAL, hd_outbox_claim(f->s, 0, NULL, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_claim(f->s, HD_OUTBOX_BATCH_MAX + 1, NULL, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_claim(f->s, 3, NULL, NULL, NULL));

    b = claim_at(f->s, 3, 0, 0);
    assert_int_equal(b->count, 3);
    assert_true(b->lease_until_ms > hd_time_now_ms() + HD_OUTBOX_LEASE_DEFAULT_MS / 2);
    for (size_t i = 0; i < b->count; i++) {
        const hd_outbox_message *m = &b->messages[i];
        if (i > 0)
            assert_true(m->seq > b->messages[i - 1].seq);
        snprintf(id, sizeof id, "u%zu", i);
        assert_string_equal(m->aggregate_type, "user");
        assert_string_equal(m->aggregate_id, id);
        assert_string_equal(m->type, "users.user_registered");
        assert_int_equal(m->version, 1);
        assert_int_equal(m->attempts, 0);
        assert_true(m->created_at_ms > 0);
        assert_int_equal(strlen(m->payload), m->payload_len);
        /* The payload is the envelope as it goes on the wire. */
        hd_envelope *env = NULL;
        assert_hd_err(HD_OK, hd_envelope_decode(NULL, m->payload, m->payload_len, &env, &err),
                      &err);
        assert_string_equal(hd_envelope_id(env), m->event_id);
        assert_string_equal(hd_envelope_correlation_id(env), "corr-1");
        hd_envelope_free(env);
        assert_string_equal(m->headers, "{\"correlationid\":\"corr-1\"}");
    }
    /* The next claim gets the rest: the first three are leased. */
    hd_outbox_batch *rest = claim_at(f->s, 10, 0, 0);
    assert_int_equal(rest->count, 2);
    assert_true(rest->messages[0].seq > b->messages[2].seq);
    hd_outbox_batch *none = claim_at(f->s, 10, 0, 0);
    assert_int_equal(none->count, 0);
    hd_outbox_batch_free(b);
    hd_outbox_batch_free(rest);
    hd_outbox_batch_free(none);
    hd_outbox_batch_free(NULL);
}

static void outbox_mark_dispatched_removes_rows_from_the_queue(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, NULL, "u1", 1);
    save_user(f->s, NULL, "u2", 1);
    hd_outbox_batch *b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 2);
    int64_t seqs[] = {b->messages[0].seq, b->messages[1].seq};
    hd_error err;
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 1, &err), 1);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 1, &err), 0); /* already */
    int64_t pending = -1, parked = -1, age = -1;
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, &age, &parked, NULL));
    assert_int_equal(pending, 1);
    assert_int_equal(parked, 0);
    assert_true(age >= 0);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 2, &err), 1);
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, &age, &parked, NULL));
    assert_int_equal(pending, 0);
    assert_int_equal(age, 0);
    /* Dispatched rows are never claimed again, however late. */
    hd_outbox_batch *none = claim_at(f->s, 10, hd_time_now_ms() + 86400000, 0);
    assert_int_equal(none->count, 0);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, NULL, 0, NULL), 0);
    assert_hd(HD_EINVAL, hd_outbox_mark_dispatched(f->s, NULL, 1, NULL));
    hd_outbox_batch_free(b);
    hd_outbox_batch_free(none);
}

static void outbox_marks_more_rows_than_one_statement_holds(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    for (int i = 0; i < 150; i++) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        hd_envelope *env = user_registered(id);
        assert_hd(HD_OK, hd_outbox_append(f->s, env, "user", id, NULL));
        hd_envelope_free(env);
    }
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    hd_outbox_batch *b = claim_at(f->s, 200, 0, 0);
    assert_int_equal(b->count, 150);
    int64_t seqs[160];
    for (size_t i = 0; i < 150; i++)
        seqs[i] = b->messages[i].seq;
    for (size_t i = 150; i < 160; i++) /* duplicates in the list are harmless */
        seqs[i] = seqs[i - 150];
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 160, &err), 150);
    int64_t pending = -1;
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, NULL, NULL, NULL));
    assert_int_equal(pending, 0);
    hd_outbox_batch_free(b);
}

static void outbox_expired_lease_makes_rows_claimable_again(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, NULL, "u1", 1);
    int64_t now = hd_time_now_ms();
    hd_outbox_batch *b = claim_at(f->s, 10, now, 1000);
    assert_int_equal(b->count, 1);
    assert_int_equal(b->lease_until_ms, now + 1000);
    /* The relay "crashed": it never marks. Within the lease nobody else gets the row... */
    hd_outbox_batch *c = claim_at(f->s, 10, now + 999, 1000);
    assert_int_equal(c->count, 0);
    hd_outbox_batch_free(c);
    /* ...after it, the next claim does: at least once, never lost. */
    c = claim_at(f->s, 10, now + 1000, 1000);
    assert_int_equal(c->count, 1);
    assert_int_equal(c->messages[0].seq, b->messages[0].seq);
    assert_string_equal(c->messages[0].event_id, b->messages[0].event_id);
    assert_int_equal(c->messages[0].attempts, 0); /* a lost lease is not a failed attempt */
    /* Releasing gives the row back at once. */
    int64_t seq = c->messages[0].seq;
    assert_int_equal(hd_outbox_release(f->s, &seq, 1, NULL), 1);
    hd_outbox_batch_free(c);
    c = claim_at(f->s, 10, now + 1001, 1000);
    assert_int_equal(c->count, 1);
    hd_outbox_batch_free(b);
    hd_outbox_batch_free(c);
}

static void outbox_failures_retry_then_park_and_redrive(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, NULL, "u1", 1);
    hd_outbox_batch *b = claim_at(f->s, 10, 0, 0);
    int64_t seq = b->messages[0].seq;
    hd_outbox_batch_free(b);
    hd_error err;
    hd_error_clear(&err);
    assert_hd(HD_EINVAL, hd_outbox_mark_failed(f->s, seq, "x", -1, 3, NULL));
    assert_hd(HD_EINVAL, hd_outbox_mark_failed(f->s, seq, "x", 0, 0, NULL));
    assert_hd(HD_EINVAL, hd_outbox_mark_failed(f->s, 0, "x", 0, 3, NULL));
    /* Attempt 1 fails: due again in one minute, not before. */
    assert_int_equal(hd_outbox_mark_failed(f->s, seq, "broker nacked", 60000, 3, &err), 0);
    int64_t now = hd_time_now_ms();
    b = claim_at(f->s, 10, now + 1000, 0);
    assert_int_equal(b->count, 0);
    hd_outbox_batch_free(b);
    b = claim_at(f->s, 10, now + 61000, 1000);
    assert_int_equal(b->count, 1);
    assert_int_equal(b->messages[0].attempts, 1);
    hd_outbox_batch_free(b);
    /* Attempts 2 and 3: the third reaches max_attempts and parks the row. */
    assert_int_equal(hd_outbox_mark_failed(f->s, seq, "returned: no route", 0, 3, &err), 0);
    assert_int_equal(hd_outbox_mark_failed(f->s, seq, "returned: no route (again)", 0, 3, &err), 1);
    assert_hd_err(HD_ENOTFOUND, hd_outbox_mark_failed(f->s, seq, "x", 0, 3, &err), &err);
    int64_t pending = -1, parked = -1;
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, NULL, &parked, NULL));
    assert_int_equal(pending, 0);
    assert_int_equal(parked, 1);
    /* Parked: kept and visible with its reason, never claimed. */
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(f->s, "SELECT attempts, last_error, parked_at FROM hd_outbox",
                                    NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_int(rows, 0, 0), 3);
    assert_string_equal(hd_rows_text(rows, 0, 1), "returned: no route (again)");
    assert_false(hd_rows_is_null(rows, 0, 2));
    hd_rows_free(rows);
    b = claim_at(f->s, 10, now + 86400000, 0);
    assert_int_equal(b->count, 0);
    hd_outbox_batch_free(b);
    /* Redrive: claimable again with a fresh count of attempts. */
    assert_int_equal(hd_outbox_redrive(f->s, seq + 1000, NULL), 0);
    assert_int_equal(hd_outbox_redrive(f->s, seq, &err), 1);
    assert_int_equal(hd_outbox_redrive(f->s, 0, &err), 0); /* nothing parked any more */
    assert_hd(HD_EINVAL, hd_outbox_redrive(f->s, -1, NULL));
    b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 1);
    assert_int_equal(b->messages[0].attempts, 0);
    /* A dispatched row cannot fail any more. */
    assert_int_equal(hd_outbox_mark_dispatched(f->s, &seq, 1, NULL), 1);
    assert_hd(HD_ENOTFOUND, hd_outbox_mark_failed(f->s, seq, "late", 0, 3, NULL));
    hd_outbox_batch_free(b);
}

static void outbox_holds_back_an_aggregate_behind_its_retrying_row(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, "A", "a1", 1);
    save_user(f->s, "A", "a2", 1);
    save_user(f->s, "B", "b1", 1);
    save_user(f->s, "B", "b2", 1);
    hd_outbox_batch *b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 4); /* nothing held back yet: all four, in order */
    int64_t a1 = b->messages[0].seq, a2 = b->messages[1].seq, b1 = b->messages[2].seq,
            b2 = b->messages[3].seq;
    assert_string_equal(b->messages[1].aggregate_id, "A");
    hd_outbox_batch_free(b);
    /* b1 is published; a1 fails and waits a minute; a2 and b2 are given back. */
    assert_int_equal(hd_outbox_mark_dispatched(f->s, &b1, 1, NULL), 1);
    assert_int_equal(hd_outbox_mark_failed(f->s, a1, "nack", 60000, 5, NULL), 0);
    int64_t back[] = {a2, b2};
    assert_int_equal(hd_outbox_release(f->s, back, 2, NULL), 2);
    /* a2 must not overtake a1: only b2 is due. */
    b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 1);
    assert_int_equal(b->messages[0].seq, b2);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, &b2, 1, NULL), 1);
    /* When a1 is due, a1 and a2 come together, in order. */
    b = claim_at(f->s, 10, hd_time_now_ms() + 61000, 0);
    assert_int_equal(b->count, 2);
    assert_int_equal(b->messages[0].seq, a1);
    assert_int_equal(b->messages[1].seq, a2);
    hd_outbox_batch_free(b);
}

static void outbox_purge_keeps_pending_and_parked_rows(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    save_user(f->s, NULL, "old", 1);
    save_user(f->s, NULL, "recent", 1);
    save_user(f->s, NULL, "parked", 1);
    save_user(f->s, NULL, "pending", 1);
    hd_outbox_batch *b = claim_at(f->s, 3, 0, 0);
    int64_t old = b->messages[0].seq, recent = b->messages[1].seq, parked = b->messages[2].seq;
    hd_outbox_batch_free(b);
    int64_t done[] = {old, recent};
    assert_int_equal(hd_outbox_mark_dispatched(f->s, done, 2, NULL), 2);
    assert_int_equal(hd_outbox_mark_failed(f->s, parked, "poison", 0, 1, NULL), 1);
    /* Make "old" and the parked row two days old. */
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 2 * 86400000LL), hd_value_int(old),
                    hd_value_int(parked)};
    assert_int_equal(
        hd_store_exec(f->s, "UPDATE hd_outbox SET dispatched_at = $1 WHERE seq = $2", p, 2, NULL),
        1);
    hd_value q[] = {p[0], p[2]};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_outbox SET parked_at = $1, created_at = $1"
                                   " WHERE seq = $2",
                                   q, 2, NULL),
                     1);
    assert_hd(HD_EINVAL, hd_outbox_purge_dispatched(f->s, -1, NULL));
    assert_int_equal(hd_outbox_purge_dispatched(f->s, 86400000, NULL), 1);
    assert_int_equal(outbox_count(f->s), 3);
    hd_value k[] = {hd_value_int(old)};
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(f->s, "SELECT seq FROM hd_outbox WHERE seq = $1", k, 1, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 0);
    hd_rows_free(rows);
    /* With no retention at all, every dispatched row goes; parked stays. */
    assert_int_equal(hd_outbox_purge_dispatched(f->s, 0, NULL) >= 0, 1);
    int64_t pending = -1, nparked = -1;
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, NULL, &nparked, NULL));
    assert_int_equal(pending, 1);
    assert_int_equal(nparked, 1);
}

static void outbox_depth_reports_the_oldest_pending_age(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    int64_t pending = -1, age = -1, parked = -1;
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, &age, &parked, NULL));
    assert_int_equal(pending, 0);
    assert_int_equal(age, 0);
    assert_int_equal(parked, 0);
    save_user(f->s, NULL, "u1", 1);
    save_user(f->s, NULL, "u2", 1);
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 5000)};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_outbox SET created_at = $1 WHERE seq ="
                                   " (SELECT MIN(seq) FROM hd_outbox)",
                                   p, 1, NULL),
                     1);
    assert_hd(HD_OK, hd_outbox_depth(f->s, &pending, &age, &parked, NULL));
    assert_int_equal(pending, 2);
    assert_true(age >= 5000 && age < 60000);
    assert_hd(HD_OK, hd_outbox_depth(f->s, NULL, NULL, NULL, NULL));
    assert_hd(HD_EINVAL, hd_outbox_depth(NULL, NULL, NULL, NULL, NULL));
}

static void outbox_signal_fires_after_the_unit_of_work_commits(void **state)
{
    fixture *f = *state;
    assert_int_equal(hd_outbox_migrate(f->s, NULL), 4);
    exec_ok(f->s, "CREATE TABLE things (id TEXT PRIMARY KEY)");
    hd_outbox_notifier *n = hd_outbox_notifier_new();
    assert_non_null(n);
    hd_outbox_set_notifier(f->s, n);
    assert_ptr_equal(hd_outbox_get_notifier(f->s), n);
    uint64_t seen = 0;
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 0);

    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->s, NULL, &uow, NULL));
    hd_envelope *a = user_registered("u1"), *b = user_registered("u2");
    assert_hd(HD_OK, hd_outbox_append_uow(uow, a, "user", "u1", NULL));
    assert_hd(HD_OK, hd_outbox_append_uow(uow, b, "user", "u2", NULL));
    /* Not yet: the rows are not visible before the commit. */
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 0);
    assert_hd(HD_OK, hd_uow_commit(uow, NULL));
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 1000), 1);
    assert_int_equal(seen, 1); /* one signal per unit of work, not per row */
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 10), 0);
    assert_hd(HD_EINVAL, hd_outbox_append_uow(NULL, a, "user", "u1", NULL));
    hd_outbox_set_notifier(f->s, NULL);
    hd_outbox_signal(f->s); /* no notifier: nothing happens */
    hd_outbox_signal(NULL);
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 0);
    hd_envelope_free(a);
    hd_envelope_free(b);
    hd_outbox_notifier_free(n);
}

/* A link with a token, in a sensitive row: readable while pending (the relay needs it),
 * gone from the table once dispatched, and the row purged after its own short retention. */
static void outbox_sensitive_rows_are_scrubbed_when_dispatched(void **state)
{
    fixture *f = *state;
    static const char token[] = "5e5e5e5e0123456789abcdef0123456789abcdef0123456789abcdef0badf00d";
    outbox_setup_tables(f->s);
    hd_error err;
    hd_error_clear(&err);
    char link[128];
    snprintf(link, sizeof link, "https://app.test/verify?token=%s", token);
    assert_hd_err(HD_OK, hd_store_begin(f->s, &err), &err);
    hd_envelope *env =
        hd_envelope_new("users.user_registered", 1, "/users",
                        json_pack("{s:s, s:s}", "user_id", "u1", "verification_link", link));
    assert_non_null(env);
    assert_hd_err(HD_EINVAL, hd_outbox_append_flags(f->s, env, "user", "u1", 0x80, &err), &err);
    assert_hd_err(HD_OK, hd_outbox_append_flags(f->s, env, "user", "u1", HD_OUTBOX_SENSITIVE, &err),
                  &err);
    hd_envelope_free(env);
    assert_hd_err(HD_OK, hd_store_commit(f->s, &err), &err);
    save_user(f->s, NULL, "plain", 1); /* a row without the flag, for contrast */

    static const char find[] = "SELECT COUNT(*) FROM hd_outbox WHERE payload LIKE"
                               " '%5e5e5e5e0123456789abcdef0123456789abcdef%'";
    assert_int_equal(hd_conf_scalar(f->s, find), 1); /* pending: the relay must read it */
    hd_outbox_batch *b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 2);
    assert_int_equal(b->messages[0].sensitive, 1);
    assert_int_equal(b->messages[1].sensitive, 0);
    assert_non_null(strstr(b->messages[0].payload, token));
    int64_t seqs[] = {b->messages[0].seq, b->messages[1].seq};
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 2, NULL), 2);

    /* Dispatched: no column of any row holds the token, the plain row is untouched. */
    assert_int_equal(hd_conf_scalar(f->s, find), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_outbox WHERE payload = ''"
                                          " AND sensitive = 1 AND dispatched_at IS NOT NULL"),
                     1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_outbox WHERE payload LIKE"
                                          " '%someone@example.com%'"),
                     1);
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(f->s,
                                    "SELECT event_id, aggregate_id, type, payload, headers,"
                                    " last_error, claimed_by FROM hd_outbox WHERE sensitive = 1",
                                    NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    for (int col = 0; col < 7; col++) {
        const char *v = hd_rows_is_null(rows, 0, col) ? NULL : hd_rows_text(rows, 0, col);
        assert_true(v == NULL || strstr(v, token) == NULL);
    }
    assert_string_equal(hd_rows_text(rows, 0, 1), "u1"); /* "was it sent?" still answers */
    hd_rows_free(rows);

    /* Its own retention: a sensitive row goes before the others. */
    assert_hd(HD_EINVAL, hd_outbox_purge_sensitive(f->s, -1, NULL));
    assert_hd(HD_EINVAL, hd_outbox_purge_sensitive(NULL, 0, NULL));
    assert_int_equal(hd_outbox_purge_sensitive(f->s, 3600000, NULL), 0); /* too recent */
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 120000)};
    assert_int_equal(hd_store_exec(f->s, "UPDATE hd_outbox SET dispatched_at = $1", p, 1, NULL), 2);
    assert_int_equal(hd_outbox_purge_sensitive(f->s, 60000, NULL), 1);
    assert_int_equal(outbox_count(f->s), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_outbox WHERE sensitive = 0"), 1);
}

/* ---- operating it: stats, the parked list, redrive by type, batched purge ---------------- */

/* Append one event of `type` for aggregate `id` in a transaction of its own. */
static void append_typed(hd_store *s, const char *type, const char *id)
{
    hd_error err;
    hd_error_clear(&err);
    hd_envelope *env = hd_envelope_new(type, 1, "/users", json_pack("{s:s}", "user_id", id));
    assert_non_null(env);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_hd_err(HD_OK, hd_outbox_append(s, env, "user", id, &err), &err);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    hd_envelope_free(env);
}

static const hd_outbox_type_stats *stats_of(const hd_outbox_stats *st, const char *type)
{
    for (size_t i = 0; i < st->ntypes; i++)
        if (strcmp(st->types[i].type, type) == 0)
            return &st->types[i];
    fail_msg("no stats for type %s", type);
    return NULL;
}

static void outbox_stats_count_each_state_per_type(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    hd_error err;
    hd_error_clear(&err);
    hd_outbox_stats *st = NULL;
    /* Empty: no types, zeros, no lag. */
    assert_hd_err(HD_OK, hd_outbox_stats_read(f->s, 0, &st, &err), &err);
    assert_int_equal(st->ntypes, 0);
    assert_int_equal(st->total.pending + st->total.parked + st->total.oldest_waiting_age_ms, 0);
    hd_outbox_stats_free(st);
    /* Five rows of type a (one per aggregate, so that none holds another back) and one of b:
     * a1 dispatched, a2 parked, a3 leased, a4 and a5 pending; b1 pending. */
    const char *ids[] = {"a1", "a2", "a3", "a4", "a5"};
    for (size_t i = 0; i < 5; i++)
        append_typed(f->s, "test.a", ids[i]);
    append_typed(f->s, "test.b", "b1");
    hd_outbox_batch *b = claim_at(f->s, 3, 0, 60000);
    assert_int_equal(b->count, 3);
    int64_t a1 = b->messages[0].seq, a2 = b->messages[1].seq;
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(f->s, &a1, 1, NULL), 1);
    assert_int_equal(hd_outbox_mark_failed(f->s, a2, "returned: NO_ROUTE", 0, 1, NULL), 1);
    /* The oldest waiting row is a minute old. */
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 60000)};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_outbox SET created_at = $1 WHERE aggregate_id = 'a4'",
                                   p, 1, NULL),
                     1);
    assert_hd_err(HD_OK, hd_outbox_stats_read(f->s, 0, &st, &err), &err);
    assert_int_equal(st->ntypes, 2);
    assert_string_equal(st->types[0].type, "test.a"); /* sorted */
    const hd_outbox_type_stats *a = stats_of(st, "test.a"), *bb = stats_of(st, "test.b");
    assert_int_equal(a->pending, 2);
    assert_int_equal(a->leased, 1);
    assert_int_equal(a->parked, 1);
    assert_int_equal(a->dispatched, 1);
    assert_true(a->oldest_waiting_age_ms >= 59000 && a->oldest_waiting_age_ms < 3600000);
    assert_int_equal(bb->pending, 1);
    assert_int_equal(bb->leased + bb->parked + bb->dispatched, 0);
    assert_int_equal(st->total.pending, 3);
    assert_int_equal(st->total.leased, 1);
    assert_int_equal(st->total.parked, 1);
    assert_int_equal(st->total.dispatched, 1);
    assert_int_equal(st->total.oldest_waiting_age_ms, a->oldest_waiting_age_ms);
    assert_null(st->total.type);
    hd_outbox_stats_free(st);
    /* Two minutes on, the lease has run out: the leased row counts as pending again. */
    assert_hd_err(HD_OK, hd_outbox_stats_read(f->s, hd_time_now_ms() + 120000, &st, &err), &err);
    assert_int_equal(st->total.pending, 4);
    assert_int_equal(st->total.leased, 0);
    hd_outbox_stats_free(st);
    hd_outbox_stats_free(NULL);
    assert_hd(HD_EINVAL, hd_outbox_stats_read(NULL, 0, &st, NULL));
    assert_hd(HD_EINVAL, hd_outbox_stats_read(f->s, 0, NULL, NULL));
}

static void outbox_parked_rows_are_listed_and_redriven_by_type(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    append_typed(f->s, "test.a", "a1");
    append_typed(f->s, "test.a", "a2");
    append_typed(f->s, "test.b", "b1");
    append_typed(f->s, "test.b", "b2"); /* stays pending */
    hd_outbox_batch *b = claim_at(f->s, 3, 0, 0);
    assert_int_equal(b->count, 3);
    int64_t seqs[3];
    for (size_t i = 0; i < 3; i++)
        seqs[i] = b->messages[i].seq;
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_failed(f->s, seqs[0], "returned: NO_ROUTE", 0, 1, NULL), 1);
    assert_int_equal(hd_outbox_mark_failed(f->s, seqs[1], NULL, 0, 1, NULL), 1);
    assert_int_equal(hd_outbox_mark_failed(f->s, seqs[2], "nacked", 0, 1, NULL), 1);
    hd_error err;
    hd_error_clear(&err);
    hd_outbox_parked_list *l = NULL;
    assert_int_equal(hd_outbox_list_parked(f->s, NULL, 10, &l, &err), 3);
    assert_int_equal(l->count, 3);
    assert_int_equal(l->rows[0].seq, seqs[0]);
    assert_string_equal(l->rows[0].type, "test.a");
    assert_string_equal(l->rows[0].aggregate_id, "a1");
    assert_string_equal(l->rows[0].last_error, "returned: NO_ROUTE");
    assert_int_equal(l->rows[0].attempts, 1);
    assert_true(l->rows[0].parked_at_ms >= l->rows[0].created_at_ms);
    assert_true(strlen(l->rows[0].event_id) > 0);
    assert_string_equal(l->rows[1].last_error, ""); /* no reason recorded */
    hd_outbox_parked_list_free(l);
    assert_int_equal(hd_outbox_list_parked(f->s, "test.b", 10, &l, &err), 1);
    assert_int_equal(l->rows[0].seq, seqs[2]);
    hd_outbox_parked_list_free(l);
    assert_int_equal(hd_outbox_list_parked(f->s, NULL, 2, &l, &err), 2); /* the limit */
    hd_outbox_parked_list_free(l);
    hd_outbox_parked_list_free(NULL);
    assert_hd(HD_EINVAL, hd_outbox_list_parked(f->s, NULL, 0, &l, NULL));
    assert_hd(HD_EINVAL, hd_outbox_list_parked(NULL, NULL, 1, &l, NULL));
    /* Redrive type a: both rows are due again with a fresh count; b's parked row stays. */
    assert_int_equal(hd_outbox_redrive_type(f->s, "test.none", &err), 0);
    assert_int_equal(hd_outbox_redrive_type(f->s, "test.a", &err), 2);
    assert_int_equal(hd_outbox_redrive_type(f->s, "test.a", &err), 0);
    assert_hd(HD_EINVAL, hd_outbox_redrive_type(f->s, "", NULL));
    assert_hd(HD_EINVAL, hd_outbox_redrive_type(f->s, NULL, NULL));
    assert_int_equal(hd_outbox_list_parked(f->s, NULL, 10, &l, &err), 1);
    assert_string_equal(l->rows[0].type, "test.b");
    hd_outbox_parked_list_free(l);
    b = claim_at(f->s, 10, 0, 0);
    assert_int_equal(b->count, 3); /* a1, a2 and the pending b2 */
    assert_int_equal(b->messages[0].seq, seqs[0]);
    assert_int_equal(b->messages[0].attempts, 0);
    hd_outbox_batch_free(b);
}

static void outbox_purge_in_batches_deletes_old_dispatched_rows_only(void **state)
{
    fixture *f = *state;
    outbox_setup_tables(f->s);
    char id[16];
    for (int i = 0; i < 7; i++) {
        snprintf(id, sizeof id, "u%d", i);
        append_typed(f->s, "test.a", id);
    }
    hd_outbox_batch *b = claim_at(f->s, 7, 0, 0);
    int64_t seqs[7];
    for (size_t i = 0; i < 7; i++)
        seqs[i] = b->messages[i].seq;
    hd_outbox_batch_free(b);
    /* Five dispatched two days ago, one dispatched now, one parked two days ago. */
    assert_int_equal(hd_outbox_mark_dispatched(f->s, seqs, 6, NULL), 6);
    assert_int_equal(hd_outbox_mark_failed(f->s, seqs[6], "poison", 0, 1, NULL), 1);
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 2 * 86400000LL), hd_value_int(seqs[5])};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_outbox SET dispatched_at = $1 WHERE"
                                   " dispatched_at IS NOT NULL AND seq <> $2",
                                   p, 2, NULL),
                     5);
    hd_value q[] = {p[0]};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_outbox SET parked_at = $1, created_at = $1"
                                   " WHERE parked_at IS NOT NULL",
                                   q, 1, NULL),
                     1);
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_outbox_purge_dispatched_batch(f->s, 86400000, 2, &err), 2);
    assert_int_equal(hd_outbox_purge_dispatched_batch(f->s, 86400000, 2, &err), 2);
    assert_int_equal(hd_outbox_purge_dispatched_batch(f->s, 86400000, 2, &err), 1);
    assert_int_equal(hd_outbox_purge_dispatched_batch(f->s, 86400000, 2, &err), 0);
    assert_int_equal(outbox_count(f->s), 2); /* the recent dispatched row and the parked one */
    assert_hd(HD_EINVAL, hd_outbox_purge_dispatched_batch(f->s, -1, 2, NULL));
    assert_hd(HD_EINVAL, hd_outbox_purge_dispatched_batch(f->s, 0, 0, NULL));
    assert_hd(HD_EINVAL, hd_outbox_purge_dispatched_batch(NULL, 0, 1, NULL));
    /* Inside a caller's transaction it joins it (and rolls back with it). */
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_outbox_purge_dispatched_batch(f->s, 0, 10, &err) >= 0, 1);
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
    assert_int_equal(outbox_count(f->s), 2);
}

int hd_conf_run_outbox(const hd_conf_target *t)
{
    void *ts = (void *)t;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(outbox_migration_is_idempotent, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_append_outside_a_transaction_is_refused,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(
            outbox_row_commits_and_rolls_back_with_the_business_row, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_failing_handler_leaves_neither_row, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(
            outbox_claim_returns_due_rows_in_seq_order_up_to_limit, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_mark_dispatched_removes_rows_from_the_queue,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_marks_more_rows_than_one_statement_holds,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_expired_lease_makes_rows_claimable_again,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_failures_retry_then_park_and_redrive, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(
            outbox_holds_back_an_aggregate_behind_its_retrying_row, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_purge_keeps_pending_and_parked_rows, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_depth_reports_the_oldest_pending_age, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_sensitive_rows_are_scrubbed_when_dispatched,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_signal_fires_after_the_unit_of_work_commits,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_stats_count_each_state_per_type, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(outbox_parked_rows_are_listed_and_redriven_by_type,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(
            outbox_purge_in_batches_deletes_old_dispatched_rows_only, setup, teardown, ts),
    };
    char name[96];
    snprintf(name, sizeof name, "outbox: %s", t->name);
    return _cmocka_run_group_tests(name, tests, sizeof tests / sizeof tests[0], NULL, NULL);
}

/* ==== the inbox ============================================================================= */

static void inbox_setup_tables(hd_store *s)
{
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(hd_inbox_migrate(s, &err), 1);
    exec_ok(s, "CREATE TABLE emails (message_id TEXT NOT NULL, address TEXT NOT NULL)");
}

/* The consumer's whole job for one delivery: accept, and if new, send the email (a row), in
 * one transaction. Returns what accept said (1 new, 0 duplicate). */
static int deliver(hd_store *s, const char *consumer, const char *message_id, int fail)
{
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    int fresh = hd_inbox_accept(s, consumer, message_id, &err);
    assert_hd_err(HD_OK, fresh < 0 ? fresh : 0, &err);
    if (fresh == 1) {
        hd_value p[] = {hd_value_text(message_id), hd_value_text("ada@example.com")};
        assert_int_equal(hd_store_exec(s, "INSERT INTO emails VALUES ($1, $2)", p, 2, &err), 1);
    }
    if (fail)
        assert_hd(HD_OK, hd_store_rollback(s, NULL)); /* the handler failed after its write */
    else
        assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    return fresh;
}

static void inbox_migration_is_idempotent(void **state)
{
    fixture *f = *state;
    assert_int_equal(hd_inbox_migrate(f->s, NULL), 1);
    assert_int_equal(hd_inbox_migrate(f->s, NULL), 0);
    assert_int_equal(hd_store_schema_version(f->s, "inbox", NULL), 1);
    assert_hd(HD_EINVAL, hd_inbox_migrate(NULL, NULL));
}

static void inbox_accept_needs_a_transaction(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    hd_error err;
    assert_hd_err(HD_ESTATE, hd_inbox_accept(f->s, "mailer", "m1", &err), &err);
    assert_hd(HD_ESTATE, hd_inbox_accept_many(f->s, "mailer", NULL, 0, NULL, NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_inbox"), 0);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_hd(HD_EINVAL, hd_inbox_accept(f->s, "", "m1", NULL));
    assert_hd(HD_EINVAL, hd_inbox_accept(f->s, "mailer", NULL, NULL));
    assert_hd(HD_EINVAL, hd_inbox_accept(NULL, "mailer", "m1", NULL));
    assert_hd(HD_EINVAL, hd_inbox_accept_many(f->s, "mailer", NULL, 2, NULL, NULL));
    assert_hd(HD_OK, hd_store_rollback(f->s, NULL));
}

static void inbox_duplicate_is_skipped_and_the_effect_happens_once(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    assert_int_equal(deliver(f->s, "mailer", "m1", 0), 1);
    assert_int_equal(deliver(f->s, "mailer", "m1", 0), 0); /* redelivery */
    assert_int_equal(deliver(f->s, "mailer", "m1", 0), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_inbox"), 1);
    /* Another consumer of the same message processes it once as well. */
    assert_int_equal(deliver(f->s, "audit", "m1", 0), 1);
    assert_int_equal(deliver(f->s, "audit", "m1", 0), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 2);
}

static void inbox_row_rolls_back_with_the_effect(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    /* The handler fails after accepting and writing: both vanish... */
    assert_int_equal(deliver(f->s, "mailer", "m1", 1), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_inbox"), 0);
    /* ...so the redelivery is new and does the work, once. */
    assert_int_equal(deliver(f->s, "mailer", "m1", 0), 1);
    assert_int_equal(deliver(f->s, "mailer", "m1", 0), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 1);
}

static void inbox_duplicate_does_not_abort_the_transaction(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_inbox_accept(f->s, "mailer", "m1", NULL), 1);
    assert_int_equal(hd_inbox_accept(f->s, "mailer", "m1", NULL), 0);
    exec_ok(f->s, "INSERT INTO emails VALUES ('m1', 'x')"); /* still usable */
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 1);
}

static void inbox_accepts_a_whole_window_in_one_transaction(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    assert_int_equal(deliver(f->s, "mailer", "m2", 0), 1); /* seen before */
    const char *const window[] = {"m1", "m2", "m3", "m1", "m4"};
    unsigned char fresh[5];
    memset(fresh, 9, sizeof fresh);
    hd_error err;
    hd_error_clear(&err);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_inbox_accept_many(f->s, "mailer", window, 5, fresh, &err), 3);
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
    assert_int_equal(fresh[0], 1);
    assert_int_equal(fresh[1], 0); /* accepted earlier */
    assert_int_equal(fresh[2], 1);
    assert_int_equal(fresh[3], 0); /* twice in the same window */
    assert_int_equal(fresh[4], 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_inbox"), 4);
    assert_hd(HD_OK, hd_store_begin(f->s, NULL));
    assert_int_equal(hd_inbox_accept_many(f->s, "mailer", window, 0, NULL, NULL), 0);
    assert_int_equal(hd_inbox_accept_many(f->s, "mailer", window, 5, NULL, NULL), 0);
    assert_hd(HD_OK, hd_store_commit(f->s, NULL));
}

static void inbox_purge_forgets_only_old_ids(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    assert_int_equal(deliver(f->s, "mailer", "old", 0), 1);
    assert_int_equal(deliver(f->s, "mailer", "recent", 0), 1);
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 8 * 86400000LL)};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_inbox SET received_at = $1 WHERE message_id = 'old'",
                                   p, 1, NULL),
                     1);
    assert_hd(HD_EINVAL, hd_inbox_purge(f->s, -1, NULL));
    assert_hd(HD_EINVAL, hd_inbox_purge(NULL, 0, NULL));
    assert_int_equal(hd_inbox_purge(f->s, 7 * 86400000LL, NULL), 1);
    assert_int_equal(deliver(f->s, "mailer", "recent", 0), 0); /* still remembered */
    /* The forgotten id is new again: why retention must outlast every redelivery. */
    assert_int_equal(deliver(f->s, "mailer", "old", 0), 1);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM emails"), 3);
}

static void inbox_stats_and_batched_purge(void **state)
{
    fixture *f = *state;
    inbox_setup_tables(f->s);
    hd_error err;
    hd_error_clear(&err);
    hd_inbox_stats *st = NULL;
    assert_int_equal(hd_inbox_stats_read(f->s, &st, &err), 0);
    hd_inbox_stats_free(st);
    const char *ids[] = {"m1", "m2", "m3", "m4", "m5"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(deliver(f->s, "mailer", ids[i], 0), 1);
    assert_int_equal(deliver(f->s, "audit", "m1", 0), 1);
    /* m1..m3 of the mailer are eight days old. */
    hd_value p[] = {hd_value_int(hd_time_now_ms() - 8 * 86400000LL)};
    assert_int_equal(hd_store_exec(f->s,
                                   "UPDATE hd_inbox SET received_at = $1 WHERE consumer ="
                                   " 'mailer' AND message_id IN ('m1', 'm2', 'm3')",
                                   p, 1, NULL),
                     3);
    assert_int_equal(hd_inbox_stats_read(f->s, &st, &err), 2);
    assert_string_equal(st->consumers[0].consumer, "audit"); /* sorted */
    assert_int_equal(st->consumers[0].ids, 1);
    assert_string_equal(st->consumers[1].consumer, "mailer");
    assert_int_equal(st->consumers[1].ids, 5);
    assert_int_equal(st->consumers[1].oldest_ms, p[0].i);
    assert_true(st->consumers[1].newest_ms > st->consumers[1].oldest_ms);
    hd_inbox_stats_free(st);
    hd_inbox_stats_free(NULL);
    assert_int_equal(hd_inbox_purge_batch(f->s, 7 * 86400000LL, 2, &err), 2);
    assert_int_equal(hd_inbox_purge_batch(f->s, 7 * 86400000LL, 2, &err), 1);
    assert_int_equal(hd_inbox_purge_batch(f->s, 7 * 86400000LL, 2, &err), 0);
    assert_int_equal(hd_conf_scalar(f->s, "SELECT COUNT(*) FROM hd_inbox"), 3);
    assert_hd(HD_EINVAL, hd_inbox_purge_batch(f->s, -1, 2, NULL));
    assert_hd(HD_EINVAL, hd_inbox_purge_batch(f->s, 0, 0, NULL));
    assert_hd(HD_EINVAL, hd_inbox_purge_batch(NULL, 0, 1, NULL));
    assert_hd(HD_EINVAL, hd_inbox_stats_read(NULL, &st, NULL));
}

int hd_conf_run_inbox(const hd_conf_target *t)
{
    void *ts = (void *)t;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(inbox_migration_is_idempotent, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_accept_needs_a_transaction, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(
            inbox_duplicate_is_skipped_and_the_effect_happens_once, setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_row_rolls_back_with_the_effect, setup,
                                                 teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_duplicate_does_not_abort_the_transaction,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_accepts_a_whole_window_in_one_transaction,
                                                 setup, teardown, ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_purge_forgets_only_old_ids, setup, teardown,
                                                 ts),
        cmocka_unit_test_prestate_setup_teardown(inbox_stats_and_batched_purge, setup, teardown,
                                                 ts),
    };
    char name[96];
    snprintf(name, sizeof name, "inbox: %s", t->name);
    return _cmocka_run_group_tests(name, tests, sizeof tests / sizeof tests[0], NULL, NULL);
}

/* ==== targets =============================================================================== */

static char *memory_fresh(void *ctx)
{
    (void)ctx;
    return strdup("sqlite::memory:");
}

hd_conf_target hd_conf_sqlite_memory(void)
{
    hd_conf_target t = {"sqlite-memory", memory_fresh, NULL, NULL, 0};
    return t;
}

static char *file_fresh(void *ctx)
{
    static unsigned n;
    char url[1024];
    snprintf(url, sizeof url, "sqlite://%s/case-%u.db", (const char *)ctx, ++n);
    return strdup(url);
}

static void file_drop(void *ctx, const char *url)
{
    (void)ctx;
    hd_store_sqlite_remove(url + strlen("sqlite://"));
}

hd_conf_target hd_conf_sqlite_file(const char *dir)
{
    hd_conf_target t = {"sqlite-file", file_fresh, file_drop, (void *)dir, 1};
    return t;
}

char *hd_conf_pg_url(const char *base_url, const char *db, const char *schema)
{
    const char *host = strstr(base_url, "://");
    assert_non_null(host);
    host += 3;
    size_t host_len = strcspn(host, "/?");
    const char *query = strchr(host, '?');
    size_t size = strlen(base_url) + (db ? strlen(db) : 0) + (schema ? strlen(schema) : 0) + 64;
    char *url = malloc(size);
    assert_non_null(url);
    int len = snprintf(url, size, "%.*s/%s", (int)(host - base_url + (ptrdiff_t)host_len), base_url,
                       db ? db : "");
    if (query != NULL)
        len += snprintf(url + len, size - (size_t)len, "%s", query);
    if (schema != NULL)
        snprintf(url + len, size - (size_t)len, "%soptions=-csearch_path%%3D%s", query ? "&" : "?",
                 schema);
    return url;
}

void hd_conf_pg_init(hd_conf_pg *pg, const char *base_url)
{
    memset(pg, 0, sizeof *pg);
    pg->admin_url = strdup(base_url);
    /* Database names cannot be parameters (CREATE DATABASE takes an identifier), so the
     * name goes into the SQL text; it is ours, made of [a-z0-9_] only. */
    char *unique = hd_test_unique_name("hd_test");
    for (char *c = unique; *c; c++)
        *c = *c == '-' ? '_' : (char)tolower((unsigned char)*c);
    pg->db = unique;
    hd_store *admin = hd_conf_open(base_url);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", pg->db);
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(0, hd_store_exec(admin, sql, NULL, 0, &err), &err);
    hd_store_close(admin);
}

static char *pg_fresh(void *ctx)
{
    hd_conf_pg *pg = ctx;
    char schema[32];
    snprintf(schema, sizeof schema, "case_%u", ++pg->next_schema);
    char *url = hd_conf_pg_url(pg->admin_url, pg->db, NULL);
    hd_store *s = hd_conf_open(url);
    free(url);
    char sql[64];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    exec_ok(s, sql);
    hd_store_close(s);
    return hd_conf_pg_url(pg->admin_url, pg->db, schema);
}

hd_conf_target hd_conf_pg_target(hd_conf_pg *pg)
{
    /* Schemas are dropped with the database at the end; nothing to do per case. */
    hd_conf_target t = {"postgresql", pg_fresh, NULL, pg, 1};
    return t;
}

void hd_conf_pg_release(hd_conf_pg *pg)
{
    if (pg->db != NULL) {
        hd_store *admin = NULL;
        hd_error err;
        hd_error_clear(&err);
        if (hd_store_open(pg->admin_url, &admin, &err) == 0) {
            char sql[256];
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg->db);
            if (hd_store_exec(admin, sql, NULL, 0, &err) < 0)
                fprintf(stderr, "could not drop %s: %s\n", pg->db, err.text);
            hd_store_close(admin);
        } else {
            fprintf(stderr, "could not drop %s: %s\n", pg->db, err.text);
        }
    }
    free(pg->admin_url);
    free(pg->db);
    memset(pg, 0, sizeof *pg);
}
