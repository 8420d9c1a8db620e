/* store.c — the store port: URL dispatch, transaction state, rows, migrations; see store.h.
 *
 * Everything here is adapter-independent. The adapters (store_sqlite.c, later store_pg.c)
 * only translate calls to their database; the rules that callers rely on (one transaction
 * level, aborted after a failure, migrations) are enforced once, here, so they cannot
 * differ between databases.
 */
#include "herald/store_internal.h"

#include "herald/clock.h"
#include "herald/jsonw.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ------------------------------------------------------------------------- */

hd_value hd_value_null(void)
{
    hd_value v = {HD_VALUE_NULL, 0, NULL, 0};
    return v;
}

hd_value hd_value_int(int64_t i)
{
    hd_value v = {HD_VALUE_INT, i, NULL, 0};
    return v;
}

hd_value hd_value_text(const char *s)
{
    if (s == NULL)
        return hd_value_null();
    hd_value v = {HD_VALUE_TEXT, 0, s, strlen(s)};
    return v;
}

hd_value hd_value_blob(const void *data, size_t len)
{
    if (data == NULL)
        return hd_value_null();
    hd_value v = {HD_VALUE_BLOB, 0, data, len};
    return v;
}

/* ---- opening: the scheme table ------------------------------------------------------ */

/* Like SQLite's list of VFSes: a URL prefix picks the adapter. A new adapter is one line. */
static const struct {
    const char *prefix;
    int (*open)(const char *url, hd_store **out, hd_error *err);
} adapters[] = {
    {"sqlite:", hd_store_sqlite_open},
    {"postgresql://", hd_store_pg_open},
    {"postgres://", hd_store_pg_open},
};

int hd_store_open(const char *url, hd_store **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (url == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_open: url and out are required");
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++) {
        if (strncmp(url, adapters[i].prefix, strlen(adapters[i].prefix)) == 0)
            return adapters[i].open(url, out, err);
    }
    /* Name the scheme only: the rest of a URL may hold a password. */
    size_t scheme = strcspn(url, ":");
    if (url[scheme] != ':' || scheme == 0)
        return hd_error_set(err, HD_EURL, "store URL has no scheme (try sqlite::memory:)");
    return hd_error_set(err, HD_EURL, "unknown store URL scheme '%.*s' (known: sqlite, postgresql)",
                        (int)(scheme > 32 ? 32 : scheme), url);
}

void hd_store_close(hd_store *store)
{
    if (store != NULL)
        store->vtab->close(store);
}

const char *hd_store_dialect(const hd_store *store)
{
    return store ? store->vtab->dialect : NULL;
}

/* ---- transactions ------------------------------------------------------------------- */

int hd_store_begin(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_begin: store is NULL");
    if (store->in_tx)
        return hd_error_set(err, HD_ESTATE,
                            "a transaction is already open (transactions do not nest)");
    int rc = store->vtab->begin(store, err);
    if (rc < 0)
        return rc;
    store->in_tx = 1;
    store->aborted = 0;
    return HD_OK;
}

int hd_store_commit(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_commit: store is NULL");
    if (!store->in_tx)
        return hd_error_set(err, HD_ESTATE, "commit without a transaction (call begin first)");
    int rc;
    if (store->aborted) {
        store->vtab->rollback(store, NULL);
        rc = hd_error_set(err, HD_ESTATE,
                          "the transaction was aborted by a failed statement; rolled back");
    } else {
        rc = store->vtab->commit(store, err);
        if (rc < 0) /* leave no half-open transaction behind, whatever the database did */
            store->vtab->rollback(store, NULL);
    }
    store->in_tx = 0;
    store->aborted = 0;
    return rc < 0 ? rc : HD_OK;
}

int hd_store_rollback(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_rollback: store is NULL");
    if (!store->in_tx)
        return hd_error_set(err, HD_ESTATE, "rollback without a transaction");
    int rc = store->vtab->rollback(store, err);
    store->in_tx = 0;
    store->aborted = 0;
    return rc < 0 ? rc : HD_OK;
}

int hd_store_in_transaction(const hd_store *store)
{
    return store != NULL && store->in_tx;
}

int hd_store_relax_sync(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_relax_sync: store is NULL");
    if (store->in_tx)
        return hd_error_set(err, HD_ESTATE, "hd_store_relax_sync: inside a transaction");
    if (store->vtab->relax_sync == NULL)
        return HD_OK;
    return store->vtab->relax_sync(store, err);
}

int hd_store_wait_in_line(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_wait_in_line: store is NULL");
    if (store->vtab->wait_in_line != NULL)
        store->vtab->wait_in_line(store);
    return HD_OK;
}

/* ---- statements --------------------------------------------------------------------- */

static int check_statement(hd_store *store, const char *sql, const hd_value *params, size_t n,
                           hd_error *err)
{
    if (store == NULL || sql == NULL || (n > 0 && params == NULL))
        return hd_error_set(err, HD_EINVAL, "store, sql and (when n > 0) params are required");
    if (store->aborted)
        return hd_error_set(err, HD_ESTATE,
                            "the transaction was aborted by a failed statement; roll it back");
    return HD_OK;
}

/* A failure inside a transaction aborts it (PostgreSQL's rule, applied to every adapter). */
static int note_failure(hd_store *store, int rc)
{
    if (rc < 0 && store->in_tx)
        store->aborted = 1;
    return rc;
}

int hd_store_exec(hd_store *store, const char *sql, const hd_value *params, size_t n, hd_error *err)
{
    int rc = check_statement(store, sql, params, n, err);
    if (rc < 0)
        return rc;
    return note_failure(store, store->vtab->exec(store, sql, params, n, err));
}

int hd_store_query(hd_store *store, const char *sql, const hd_value *params, size_t n,
                   hd_rows **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_store_query: out is NULL");
    int rc = check_statement(store, sql, params, n, err);
    if (rc < 0)
        return rc;
    return note_failure(store, store->vtab->query(store, sql, params, n, out, err));
}

/* ---- rows --------------------------------------------------------------------------- */

/* The cells' bytes live in one buffer per result (buf), each NUL-terminated: a claim of
 * 1,000 outbox rows of 11 columns was 11,000 mallocs and as many frees, about a tenth of the
 * relay's instructions (docs/bench.md, issue 14). The column names live there too, and the
 * struct carries their offsets: a result is three allocations (itself, cells, buf) however
 * many columns it has, where a GET /users/{id} made twelve (a name each). A cell holds where
 * its bytes start, so the buffer may move while the adapter fills it (realloc); nothing
 * reads a result before it is complete (store_internal.h). */
typedef struct cell {
    size_t at; /* 0: SQL NULL; otherwise 1 + the offset of the bytes in buf */
    int64_t i; /* the value, when is_int: hd_rows_int needs no strtoll */
    uint32_t len;
    uint32_t is_int;
} cell;

struct hd_rows {
    size_t ncols, nrows, cap; /* cap counts rows */
    cell *cells;              /* nrows * ncols, row-major */
    char *buf;                /* names and cells' bytes, each followed by a NUL */
    size_t used, size;
    size_t names[]; /* ncols: 0 unset; otherwise 1 + the offset of the name in buf */
};

hd_rows *hd_rows_create(size_t ncols)
{
    if (ncols > (SIZE_MAX - sizeof(hd_rows)) / sizeof(size_t))
        return NULL;
    hd_rows *rows = calloc(1, sizeof *rows + ncols * sizeof rows->names[0]);
    if (rows == NULL)
        return NULL;
    rows->ncols = ncols;
    return rows;
}

/* Copy len bytes and a NUL to the end of buf; *at = 1 + where they start. */
static int put_bytes(hd_rows *rows, const void *data, size_t len, size_t *at)
{
    if (len >= SIZE_MAX / 2 - rows->used)
        return HD_ENOMEM;
    if (rows->used + len + 1 > rows->size) {
        size_t size = rows->size ? rows->size : 1024;
        while (size < rows->used + len + 1)
            size *= 2;
        char *buf = realloc(rows->buf, size);
        if (buf == NULL)
            return HD_ENOMEM;
        rows->buf = buf;
        rows->size = size;
    }
    if (len > 0)
        memcpy(rows->buf + rows->used, data, len);
    rows->buf[rows->used + len] = '\0';
    *at = rows->used + 1; /* set twice, a name or cell leaves its first bytes unused */
    rows->used += len + 1;
    return HD_OK;
}

int hd_rows_set_name(hd_rows *rows, size_t col, const char *name)
{
    if (rows == NULL || col >= rows->ncols || name == NULL)
        return HD_EINVAL;
    return put_bytes(rows, name, strlen(name), &rows->names[col]);
}

int hd_rows_add_row(hd_rows *rows)
{
    if (rows == NULL)
        return HD_EINVAL;
    if (rows->nrows == rows->cap && rows->ncols > 0) {
        size_t cap = rows->cap ? rows->cap * 2 : 8;
        cell *cells = realloc(rows->cells, cap * rows->ncols * sizeof *cells);
        if (cells == NULL)
            return HD_ENOMEM;
        rows->cells = cells;
        rows->cap = cap;
    }
    if (rows->ncols > 0)
        memset(rows->cells + rows->nrows * rows->ncols, 0, rows->ncols * sizeof(cell));
    rows->nrows++;
    return HD_OK;
}

static cell *last_row_cell(hd_rows *rows, size_t col)
{
    if (rows == NULL || rows->nrows == 0 || col >= rows->ncols)
        return NULL;
    return &rows->cells[(rows->nrows - 1) * rows->ncols + col];
}

int hd_rows_set_cell(hd_rows *rows, size_t col, const void *data, size_t len)
{
    cell *c = last_row_cell(rows, col);
    if (c == NULL)
        return HD_EINVAL;
    *c = (cell){0};
    if (data == NULL)
        return HD_OK;
    if (len > UINT32_MAX)
        return HD_ENOMEM; /* a result of rows is for small values, not for a 4 GiB blob */
    c->len = (uint32_t)len;
    return put_bytes(rows, data, len, &c->at);
}

int hd_rows_set_int(hd_rows *rows, size_t col, int64_t v)
{
    cell *c = last_row_cell(rows, col);
    if (c == NULL)
        return HD_EINVAL;
    char digits[HD_JSONW_INT_MAX]; /* the text SQLite's "%lld" writes */
    const char *d;
    size_t len = hd_jsonw_int_text(v, digits, &d);
    *c = (cell){.i = v, .len = (uint32_t)len, .is_int = 1};
    return put_bytes(rows, d, len, &c->at);
}

static const cell *cell_at(const hd_rows *rows, size_t row, size_t col)
{
    if (rows == NULL || row >= rows->nrows || col >= rows->ncols)
        return NULL;
    return &rows->cells[row * rows->ncols + col];
}

size_t hd_rows_count(const hd_rows *rows)
{
    return rows ? rows->nrows : 0;
}

size_t hd_rows_columns(const hd_rows *rows)
{
    return rows ? rows->ncols : 0;
}

const char *hd_rows_name(const hd_rows *rows, size_t col)
{
    return rows && col < rows->ncols && rows->names[col] ? rows->buf + rows->names[col] - 1 : NULL;
}

int hd_rows_is_null(const hd_rows *rows, size_t row, size_t col)
{
    const cell *c = cell_at(rows, row, col);
    return c == NULL || c->at == 0;
}

const char *hd_rows_text(const hd_rows *rows, size_t row, size_t col)
{
    const cell *c = cell_at(rows, row, col);
    return c && c->at ? rows->buf + c->at - 1 : NULL;
}

int64_t hd_rows_int(const hd_rows *rows, size_t row, size_t col)
{
    const cell *c = cell_at(rows, row, col);
    if (c != NULL && c->is_int)
        return c->i;
    const char *s = hd_rows_text(rows, row, col);
    if (s == NULL || *s == '\0')
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    return (int64_t)v;
}

const void *hd_rows_blob(const hd_rows *rows, size_t row, size_t col, size_t *len)
{
    const cell *c = cell_at(rows, row, col);
    if (len != NULL)
        *len = c && c->at ? c->len : 0;
    return c && c->at ? rows->buf + c->at - 1 : NULL;
}

void hd_rows_free(hd_rows *rows)
{
    if (rows == NULL)
        return;
    free(rows->cells);
    free(rows->buf);
    free(rows);
}

/* ---- migrations --------------------------------------------------------------------- */

/* Portable DDL: TEXT and INTEGER mean the same on SQLite and PostgreSQL. */
static const char MIGRATIONS_TABLE[] = "CREATE TABLE IF NOT EXISTS hd_schema_migrations ("
                                       " module TEXT NOT NULL,"
                                       " version INTEGER NOT NULL,"
                                       " applied_at TEXT NOT NULL,"
                                       " PRIMARY KEY (module, version))";

int hd_store_schema_version(hd_store *store, const char *module, hd_error *err)
{
    if (store == NULL || module == NULL || *module == '\0')
        return hd_error_set(err, HD_EINVAL, "store and a module name are required");
    int rc = hd_store_exec(store, MIGRATIONS_TABLE, NULL, 0, err);
    if (rc < 0)
        return rc;
    hd_value p[] = {hd_value_text(module)};
    hd_rows *rows;
    rc = hd_store_query(store,
                        "SELECT COALESCE(MAX(version), 0) FROM hd_schema_migrations"
                        " WHERE module = $1",
                        p, 1, &rows, err);
    if (rc < 0)
        return rc;
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v > 1000000 ? hd_error_set(err, HD_ERANGE, "schema version out of range") : (int)v;
}

/* Apply step `version` (1-based) of module in its own transaction, unless another process
 * has applied it meanwhile. Returns 1 when applied, 0 when already there, or a code. */
static int migrate_step(hd_store *store, const char *module, int version, const char *sql,
                        hd_error *err)
{
    int rc = hd_store_begin(store, err);
    if (rc < 0)
        return rc;
    hd_value key[] = {hd_value_text(module), hd_value_int(version)};
    hd_rows *rows = NULL;
    rc = hd_store_query(store,
                        "SELECT 1 FROM hd_schema_migrations WHERE module = $1 AND version = $2",
                        key, 2, &rows, err);
    if (rc >= 0 && hd_rows_count(rows) > 0) {
        hd_rows_free(rows);
        return hd_store_commit(store, err); /* 0: someone else did it */
    }
    hd_rows_free(rows);
    if (rc >= 0)
        rc = note_failure(store, store->vtab->script(store, sql, err));
    if (rc >= 0) {
        char now[HD_TIME_LEN + 1];
        hd_time_format(hd_time_now_ms(), now);
        hd_value rec[] = {hd_value_text(module), hd_value_int(version), hd_value_text(now)};
        rc = hd_store_exec(store,
                           "INSERT INTO hd_schema_migrations(module, version, applied_at)"
                           " VALUES ($1, $2, $3)",
                           rec, 3, err);
    }
    if (rc < 0) {
        hd_store_rollback(store, NULL);
        return rc;
    }
    rc = hd_store_commit(store, err);
    return rc < 0 ? rc : 1;
}

/* Any constant works, as long as every herald process uses the same one. */
#define HD_MIGRATION_LOCK "72150408130"

static int migrate_locked(hd_store *store, const char *module, const char *const *steps, size_t n,
                          hd_error *err);

int hd_store_migrate(hd_store *store, const char *module, const char *const *steps, size_t n,
                     hd_error *err)
{
    if (store == NULL || module == NULL || *module == '\0' || (n > 0 && steps == NULL))
        return hd_error_set(err, HD_EINVAL, "store, module and steps are required");
    for (size_t i = 0; i < n; i++)
        if (steps[i] == NULL)
            return hd_error_set(err, HD_EINVAL, "%s step %zu is NULL", module, i + 1);
    if (n > 1000000)
        return hd_error_set(err, HD_ERANGE, "too many steps");
    if (store->in_tx)
        return hd_error_set(err, HD_ESTATE, "migrate outside a transaction: each step has its own");
    /* Two services starting together migrate the same database at once. SQLite's BEGIN
     * IMMEDIATE already makes them take turns; PostgreSQL's default isolation does not (two
     * CREATE TABLE IF NOT EXISTS can both run, and one fails), so there the whole
     * migration runs under a session-level advisory lock. */
    int pg = strcmp(store->vtab->dialect, "postgresql") == 0;
    if (pg) {
        int rc =
            hd_store_exec(store, "SELECT pg_advisory_lock(" HD_MIGRATION_LOCK ")", NULL, 0, err);
        if (rc < 0)
            return rc;
    }
    int rc = migrate_locked(store, module, steps, n, err);
    if (pg)
        hd_store_exec(store, "SELECT pg_advisory_unlock(" HD_MIGRATION_LOCK ")", NULL, 0, NULL);
    return rc;
}

static int migrate_locked(hd_store *store, const char *module, const char *const *steps, size_t n,
                          hd_error *err)
{
    int current = hd_store_schema_version(store, module, err);
    if (current < 0)
        return current;
    if ((size_t)current > n)
        return hd_error_set(err, HD_EVERSION,
                            "the database has %s at schema version %d, this code knows only %zu "
                            "steps (was it migrated by a newer release?)",
                            module, current, n);
    int applied = 0;
    for (size_t i = (size_t)current; i < n; i++) {
        hd_error step_err;
        hd_error_clear(&step_err);
        int rc = migrate_step(store, module, (int)i + 1, steps[i], &step_err);
        if (rc < 0)
            return hd_error_set(err, rc, "%s step %zu: %s", module, i + 1, step_err.text);
        applied += rc;
    }
    return applied;
}
