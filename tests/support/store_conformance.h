/* store_conformance.h — one set of test cases for every store adapter.
 *
 * store.h promises the same behaviour on SQLite and PostgreSQL: placeholders, NULLs and
 * blobs, error codes, the aborted-transaction rule, migrations, the unit of work. The only
 * way to keep such a promise is to run the same cases against both, so they live here,
 * written once against the port, and each test program picks its targets:
 *
 *     tests/unit/test_store_conformance_sqlite.c    sqlite::memory: and a temporary file
 *     tests/integration/test_store_postgres.c       a private database on HD_PG_URL
 *
 * The outbox and inbox modules get the same treatment (hd_conf_run_outbox/inbox): their
 * SQL is written once, so their behaviour is tested once, on every store.
 *
 * A target hands out a fresh, empty database per case, so cases never see each other's
 * tables: a new sqlite::memory: (each open is a new database), a new file, or a new schema
 * in a database created for the run on the PostgreSQL server (dropped at the end).
 *
 * Include after the cmocka prelude (see hd_test.h).
 */
#ifndef HD_STORE_CONFORMANCE_H
#define HD_STORE_CONFORMANCE_H

#include "herald/store.h"

typedef struct hd_conf_target {
    const char *name; /* "sqlite-memory", "sqlite-file", "postgresql" */
    /* A URL naming a fresh, empty database (new string: free() it). */
    char *(*fresh)(void *ctx);
    /* Forget a database fresh() made (delete the file, drop the schema). May be NULL. */
    void (*drop)(void *ctx, const char *url);
    void *ctx;
    /* 1 when two opens of one URL reach the same data (files, servers), so cases with two
     * connections can run; 0 for sqlite::memory:. */
    int shared;
} hd_conf_target;

/* Run a group of cases on target t; each returns the number of failed cases (cmocka). */
int hd_conf_run_store(const hd_conf_target *t);
int hd_conf_run_outbox(const hd_conf_target *t);
int hd_conf_run_inbox(const hd_conf_target *t);

/* ---- targets ---------------------------------------------------------------------------- */

/* sqlite::memory:, a new database per case. */
hd_conf_target hd_conf_sqlite_memory(void);

/* One file per case in dir (borrowed; the caller creates and removes it). */
hd_conf_target hd_conf_sqlite_file(const char *dir);

/* A database created for this run on a PostgreSQL server, one schema per case. */
typedef struct hd_conf_pg {
    char *admin_url; /* the server URL given (HD_PG_URL), used to create and drop */
    char *db;        /* the database's name: hd_test_<pid>_<n>_<random> */
    unsigned next_schema;
} hd_conf_pg;

/* Create the database on base_url (fails the test when it cannot). Call from main, or
 * from a test; then pass hd_conf_pg_target(pg) to the runners. */
void hd_conf_pg_init(hd_conf_pg *pg, const char *base_url);
hd_conf_target hd_conf_pg_target(hd_conf_pg *pg);
/* Drop the database (WITH (FORCE): connections left open by a failed case do not block
 * it) and free pg's strings. */
void hd_conf_pg_release(hd_conf_pg *pg);

/* base_url with its database replaced by db and, if schema is not NULL, the search_path
 * set to schema (through libpq's "options"). New string. */
char *hd_conf_pg_url(const char *base_url, const char *db, const char *schema);

/* ---- small helpers shared by the store tests ------------------------------------------ */

/* Open url, failing the test on error. */
hd_store *hd_conf_open(const char *url);

/* The first column of the first row of a query without parameters, as an integer; fails
 * the test if the query fails. */
int64_t hd_conf_scalar(hd_store *s, const char *sql);

/* SQLite's plan of sql with its n parameters (EXPLAIN QUERY PLAN), one line per step, into
 * text (cap bytes, always terminated); fails the test if the query fails. */
void hd_conf_plan(hd_store *s, const char *sql, const hd_value *params, size_t n, char *text,
                  size_t cap);

#endif
