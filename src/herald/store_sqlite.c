/* store_sqlite.c — the SQLite adapter of the store port (see store.h, store_internal.h).
 *
 * What it adds to plain sqlite3 calls, and why:
 *   - WAL journaling: readers do not block the writer and the writer does not block readers,
 *     which a relay reading the outbox next to a service writing it needs.
 *   - synchronous=FULL unless the URL says otherwise: a commit that returned is on disk.
 *   - a busy timeout, so that a second writer waits instead of failing at once, and
 *     BEGIN IMMEDIATE, so that it waits at begin (where retrying is easy) rather than at its
 *     first write (where SQLite would have to fail the transaction to avoid a deadlock).
 *   - foreign keys on (SQLite leaves them off for backward compatibility).
 *   - $1..$n placeholders: SQLite reads "$1" as a parameter *named* "$1"; we look each
 *     parameter's name up (sqlite3_bind_parameter_name) and bind params[N-1] to it, so one
 *     SQL text serves SQLite and PostgreSQL alike and "$2 ... $1" works.
 *   - a small cache of prepared statements keyed by SQL text: an application runs the same
 *     dozen statements over and over, and compiling SQL costs more than running it.
 *   - turns (store_sqlite_turns.h): a writer that waits for the lock is woken by the commit
 *     that frees it, and a writer about to start stands aside for it, so that a connection
 *     committing back to back cannot starve the others. URL option turns=off.
 *   - the WAL written in large writes (store_sqlite_vfs.h): SQLite writes each frame of a
 *     transaction with two system calls; a VFS shim gathers them and writes once per commit
 *     (or 64 KiB). URL option coalesce=off.
 */
#include "herald/store_internal.h"
#include "herald/clock.h"
#include "herald/store_sqlite_turns.h"
#include "herald/store_sqlite_vfs.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

#include <sqlite3.h>

#define STMT_CACHE_SIZE         32
#define DEFAULT_BUSY_TIMEOUT_MS 5000

typedef struct cached_stmt {
    char *sql; /* key; NULL when the slot is free */
    sqlite3_stmt *stmt;
    uint64_t last_used; /* for least-recently-used eviction */
} cached_stmt;

typedef struct sqlite_store {
    hd_store base; /* first member: hd_store * and sqlite_store * convert to each other */
    sqlite3 *db;
    cached_stmt cache[STMT_CACHE_SIZE];
    uint64_t tick;
    int busy_timeout_ms;   /* how long a writer waits for the lock before HD_EBUSY */
    int64_t busy_since_ns; /* when the current wait for the lock began */
    hd_turns *turns;       /* NULL: turns=off, ":memory:", or no turns file possible */
} sqlite_store;

/* Called by SQLite while another connection holds the write lock; n counts the calls of
 * this wait. SQLite's own handler (sqlite3_busy_timeout) sleeps 1, 2, 5, 10, ... up to
 * 100 ms between tries and is not woken when the lock is freed, so a relay polling the
 * outbox that a service commits to a thousand times a second waits tens of milliseconds
 * for a lock held for one (docs/bench.md measured p99 latency 35 ms with it, 11 ms with
 * this). Sleeps growing from 50 us to 1 ms, cut short by the commit that frees the lock when
 * the turns are on (hd_turns_wait), try again soon after the lock is freed and cost nothing
 * when it is not contended. Returns 0 (give up: SQLITE_BUSY) once busy_timeout_ms has
 * passed since the first call, 1 (try again) otherwise. */
static int on_busy(void *ctx, int n)
{
    sqlite_store *ss = ctx;
    int64_t now = hd_clock_ns();
    if (n == 0)
        ss->busy_since_ns = now;
    if (now - ss->busy_since_ns >= (int64_t)ss->busy_timeout_ms * 1000000)
        return 0;
    hd_turns_wait(ss->turns, n, ss->busy_since_ns);
    return 1;
}

/* Called by SQLite after each commit of this connection, once the write lock is released
 * (sqlite3_wal_hook), with the WAL's size in frames. It wakes the writers waiting for the
 * lock before anything else, then does what SQLite's own hook, which this one replaces,
 * does: a passive checkpoint once the WAL holds WAL_AUTOCHECKPOINT frames (SQLite's
 * default, the same as PRAGMA wal_autocheckpoint). Installed only with the turns. */
#define WAL_AUTOCHECKPOINT 1000
static int on_commit(void *ctx, sqlite3 *db, const char *name, int frames)
{
    hd_turns_released(((sqlite_store *)ctx)->turns);
    if (frames >= WAL_AUTOCHECKPOINT)
        (void)sqlite3_wal_checkpoint(db, name);
    return SQLITE_OK;
}

/* Turn an SQLite result code into an herald code, with SQLite's message as the reason. */
static int fail(sqlite_store *ss, int rc, const char *msg, hd_error *err)
{
    const char *text = msg ? msg : sqlite3_errmsg(ss->db);
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return hd_error_set(err, HD_EEXIST, "%s", text);
        return hd_error_set(err, HD_ESTORE, "%s", text);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return hd_error_set(err, HD_EBUSY, "%s", text);
    case SQLITE_NOMEM:
        return hd_error_set(err, HD_ENOMEM, "%s", text);
    default:
        return hd_error_set(err, HD_ESTORE, "%s", text);
    }
}

/* ---- placeholders and the statement cache ------------------------------------------- */

/* N of a "$N" parameter name, or 0 when the name is anything else (?, ?5, :x, @x, $x). */
static int dollar_index(const char *name)
{
    if (name == NULL || name[0] != '$' || name[1] < '1' || name[1] > '9')
        return 0;
    long v = 0;
    for (const char *p = name + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000)
            return 0;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

/* Check once, when a statement is compiled, that its placeholders are exactly $1..$count
 * (SQLite numbers distinct names 1..count, so no gaps means max N == count). */
static int check_placeholders(sqlite3_stmt *stmt, hd_error *err)
{
    int count = sqlite3_bind_parameter_count(stmt);
    int max = 0;
    for (int i = 1; i <= count; i++) {
        const char *name = sqlite3_bind_parameter_name(stmt, i);
        int k = dollar_index(name);
        if (k == 0)
            return hd_error_set(err, HD_EINVAL,
                                "placeholder '%s' is not $1, $2, ...: herald SQL uses "
                                "PostgreSQL-style placeholders",
                                name ? name : "?");
        if (k > max)
            max = k;
    }
    if (max != count)
        return hd_error_set(err, HD_EINVAL,
                            "placeholders skip a number (highest is $%d but only %d distinct)", max,
                            count);
    return HD_OK;
}

static void cache_drop(cached_stmt *c)
{
    sqlite3_finalize(c->stmt);
    free(c->sql);
    memset(c, 0, sizeof *c);
}

/* Find or compile the statement for sql; it stays owned by the cache. */
static int get_stmt(sqlite_store *ss, const char *sql, sqlite3_stmt **out, hd_error *err)
{
    cached_stmt *victim = &ss->cache[0];
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        cached_stmt *c = &ss->cache[i];
        if (c->sql != NULL && strcmp(c->sql, sql) == 0) {
            c->last_used = ++ss->tick;
            *out = c->stmt;
            return HD_OK;
        }
        if (c->sql == NULL || (victim->sql != NULL && c->last_used < victim->last_used))
            victim = c;
    }

    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(ss->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK)
        return fail(ss, rc, NULL, err);
    if (stmt == NULL)
        return hd_error_set(err, HD_EINVAL, "empty SQL statement");
    /* What follows the first statement must compile to nothing (blanks, ';', comments):
     * silently ignoring a second statement would hide a bug. */
    sqlite3_stmt *second = NULL;
    if (tail != NULL && *tail != '\0') {
        rc = sqlite3_prepare_v2(ss->db, tail, -1, &second, NULL);
        if (rc != SQLITE_OK || second != NULL) {
            sqlite3_finalize(second);
            sqlite3_finalize(stmt);
            return hd_error_set(err, HD_EINVAL, "one SQL statement per call, found more");
        }
    }
    rc = check_placeholders(stmt, err);
    if (rc < 0) {
        sqlite3_finalize(stmt);
        return rc;
    }
    char *key = strdup(sql);
    if (key == NULL) {
        sqlite3_finalize(stmt);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    if (victim->sql != NULL)
        cache_drop(victim);
    victim->sql = key;
    victim->stmt = stmt;
    victim->last_used = ++ss->tick;
    *out = stmt;
    return HD_OK;
}

static int bind_params(sqlite_store *ss, sqlite3_stmt *stmt, const hd_value *params, size_t n,
                       hd_error *err)
{
    int count = sqlite3_bind_parameter_count(stmt);
    if ((size_t)count != n)
        return hd_error_set(err, HD_EINVAL, "the statement has %d placeholder(s), %zu given", count,
                            n);
    for (int i = 1; i <= count; i++) {
        const hd_value *v = &params[dollar_index(sqlite3_bind_parameter_name(stmt, i)) - 1];
        int rc;
        /* SQLITE_STATIC: the data is borrowed for this call only, and bindings are cleared
         * before the call returns, so SQLite need not copy it. */
        switch (v->type) {
        case HD_VALUE_INT:
            rc = sqlite3_bind_int64(stmt, i, v->i);
            break;
        case HD_VALUE_TEXT:
            rc = v->data ? sqlite3_bind_text(stmt, i, v->data, -1, SQLITE_STATIC)
                         : sqlite3_bind_null(stmt, i);
            break;
        case HD_VALUE_BLOB:
            if (v->len > INT_MAX)
                return hd_error_set(err, HD_ETOOBIG, "blob parameter $%d is too large", i);
            rc = v->data ? sqlite3_bind_blob(stmt, i, v->data, (int)v->len, SQLITE_STATIC)
                         : sqlite3_bind_null(stmt, i);
            break;
        case HD_VALUE_NULL:
            rc = sqlite3_bind_null(stmt, i);
            break;
        default:
            return hd_error_set(err, HD_EINVAL, "parameter %d has an unknown type", i);
        }
        if (rc != SQLITE_OK)
            return fail(ss, rc, NULL, err);
    }
    return HD_OK;
}

/* Copy the current row into rows. */
static int read_row(sqlite3_stmt *stmt, hd_rows *rows)
{
    int rc = hd_rows_add_row(rows);
    int ncols = sqlite3_column_count(stmt);
    for (int c = 0; rc == HD_OK && c < ncols; c++) {
        const void *data;
        switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_NULL:
            continue;
        case SQLITE_BLOB:
            data = sqlite3_column_blob(stmt, c);
            break;
        case SQLITE_INTEGER:
            /* Taken as an integer: SQLite's text of it is a malloc and a conversion, and
             * the caller's hd_rows_int a strtoll back (a GET /users/{id} reads four). */
            rc = hd_rows_set_int(rows, (size_t)c, sqlite3_column_int64(stmt, c));
            continue;
        default: /* floats as text, like PostgreSQL's text results */
            data = sqlite3_column_text(stmt, c);
            break;
        }
        size_t len = (size_t)sqlite3_column_bytes(stmt, c); /* after the conversion above */
        rc = hd_rows_set_cell(rows, (size_t)c, data ? data : "", len);
    }
    return rc;
}

/* Bind, step to the end (collecting rows when out is not NULL), reset. */
static int run(sqlite_store *ss, const char *sql, const hd_value *params, size_t n, hd_rows **out,
               hd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = get_stmt(ss, sql, &stmt, err);
    if (rc < 0)
        return rc;
    hd_rows *rows = NULL;
    int ncols = sqlite3_column_count(stmt);
    if (out != NULL) {
        rows = hd_rows_create((size_t)ncols);
        for (int c = 0; rows != NULL && c < ncols; c++)
            if (hd_rows_set_name(rows, (size_t)c, sqlite3_column_name(stmt, c)) < 0) {
                hd_rows_free(rows);
                rows = NULL;
            }
        if (rows == NULL)
            return hd_error_set(err, HD_ENOMEM, NULL);
    }
    sqlite3_int64 before = sqlite3_total_changes64(ss->db);
    rc = bind_params(ss, stmt, params, n, err);
    /* A write transaction is about to start: a write outside a transaction (one of its
     * own), or BEGIN IMMEDIATE, which takes the write lock and so is not read-only to SQLite
     * (unit.store_turns checks both). It stands aside for a writer that has waited. */
    if (ss->turns != NULL && rc == HD_OK && !sqlite3_stmt_readonly(stmt) &&
        sqlite3_get_autocommit(ss->db))
        hd_turns_yield(ss->turns);
    while (rc == HD_OK) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            rc = fail(ss, step, NULL, err);
            break;
        }
        if (rows != NULL && read_row(stmt, rows) < 0)
            rc = hd_error_set(err, HD_ENOMEM, NULL);
    }
    hd_turns_done(ss->turns); /* the step got the lock, or gave up: no longer waiting */
    sqlite3_int64 changed = sqlite3_total_changes64(ss->db) - before;
    /* Reset so the statement releases its locks and can be reused from the cache. */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc < 0) {
        hd_rows_free(rows);
        return rc;
    }
    if (out != NULL)
        *out = rows;
    return changed > INT_MAX ? INT_MAX : (int)changed;
}

/* ---- the vtab ------------------------------------------------------------------------ */

static int sq_exec(hd_store *store, const char *sql, const hd_value *params, size_t n,
                   hd_error *err)
{
    return run((sqlite_store *)store, sql, params, n, NULL, err);
}

static int sq_query(hd_store *store, const char *sql, const hd_value *params, size_t n,
                    hd_rows **out, hd_error *err)
{
    int rc = run((sqlite_store *)store, sql, params, n, out, err);
    return rc < 0 ? rc : HD_OK;
}

static int sq_begin(hd_store *store, hd_error *err)
{
    int rc = run((sqlite_store *)store, "BEGIN IMMEDIATE", NULL, 0, NULL, err);
    return rc < 0 ? rc : HD_OK;
}

static int sq_commit(hd_store *store, hd_error *err)
{
    int rc = run((sqlite_store *)store, "COMMIT", NULL, 0, NULL, err);
    return rc < 0 ? rc : HD_OK;
}

static int sq_rollback(hd_store *store, hd_error *err)
{
    sqlite_store *ss = (sqlite_store *)store;
    /* Some errors (disk full, I/O) make SQLite roll back by itself: nothing left to do. */
    if (sqlite3_get_autocommit(ss->db))
        return HD_OK;
    int rc = run(ss, "ROLLBACK", NULL, 0, NULL, err);
    hd_turns_released(ss->turns); /* a rollback frees the lock without a commit's hook */
    return rc < 0 ? rc : HD_OK;
}

static int sq_script(hd_store *store, const char *sql, hd_error *err)
{
    sqlite_store *ss = (sqlite_store *)store;
    char *msg = NULL;
    int rc = sqlite3_exec(ss->db, sql, NULL, NULL, &msg);
    hd_turns_done(ss->turns);
    if (rc != SQLITE_OK) {
        rc = fail(ss, rc, msg, err);
        sqlite3_free(msg);
        return rc;
    }
    return HD_OK;
}

static void sq_close(hd_store *store)
{
    sqlite_store *ss = (sqlite_store *)store;
    for (int i = 0; i < STMT_CACHE_SIZE; i++)
        if (ss->cache[i].sql != NULL)
            cache_drop(&ss->cache[i]);
    if (ss->db != NULL) {
        if (!sqlite3_get_autocommit(ss->db))
            sqlite3_exec(ss->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(ss->db);
    }
    hd_turns_close(ss->turns);
    free(ss);
}

/* synchronous=NORMAL when it is FULL or EXTRA (2, 3); OFF (0) and NORMAL (1) stay. */
static int sq_relax_sync(hd_store *store, hd_error *err)
{
    sqlite_store *ss = (sqlite_store *)store;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(ss->db, "PRAGMA synchronous", -1, &st, NULL);
    int level = rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (level < 0)
        return fail(ss, rc == SQLITE_OK ? SQLITE_ERROR : rc, NULL, err);
    return level <= 1 ? HD_OK : sq_script(store, "PRAGMA synchronous=NORMAL", err);
}

static void sq_wait_in_line(hd_store *store)
{
    hd_turns_set_in_line(((sqlite_store *)store)->turns, 1);
}

static const hd_store_vtab sqlite_vtab = {
    .dialect = "sqlite",
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .exec = sq_exec,
    .query = sq_query,
    .script = sq_script,
    .relax_sync = sq_relax_sync,
    .wait_in_line = sq_wait_in_line,
};

int hd_store_sqlite_remove(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", HD_TURNS_SUFFIX};
    if (path == NULL)
        return HD_EINVAL;
    size_t n = strlen(path);
    char *p = malloc(n + 16);
    if (p == NULL)
        return HD_ENOMEM;
    int rc = 0;
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        memcpy(p, path, n);
        strcpy(p + n, suffixes[k]);
        if (unlink(p) != 0 && errno != ENOENT)
            rc = HD_EIO;
    }
    free(p);
    return rc;
}

/* The size of a transaction's changed pages above which SQLite may write some to the WAL
 * before the commit (PRAGMA cache_spill, in KiB; see hd_store_sqlite_open's pragmas). */
#define SPILL_KIB 4096

/* ---- opening ------------------------------------------------------------------------- */

typedef struct sqlite_options {
    char *path;
    const char *synchronous; /* one of the names below, static */
    int busy_timeout_ms;
    long cache_kib; /* PRAGMA cache_size=-N; 0: SQLite's default (2,000 KiB per connection) */
    int no_turns;   /* turns=off */
    int direct;     /* coalesce=off: SQLite's default VFS, each WAL frame written by itself */
} sqlite_options;

/* Parse "key=value&key=value" (the part after '?'); len bytes at q. */
static int parse_query(const char *q, sqlite_options *o, hd_error *err)
{
    static const char *const levels[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
    while (*q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        if (eq == NULL)
            return hd_error_set(err, HD_EURL, "sqlite URL option '%.*s' has no value", (int)len, q);
        size_t klen = (size_t)(eq - q), vlen = len - klen - 1;
        const char *v = eq + 1;
        if (klen == 11 && strncmp(q, "synchronous", klen) == 0) {
            o->synchronous = NULL;
            for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
                if (strlen(levels[i]) == vlen && strncasecmp(v, levels[i], vlen) == 0)
                    o->synchronous = levels[i];
            if (o->synchronous == NULL)
                return hd_error_set(err, HD_EURL,
                                    "synchronous=%.*s: expected off, normal, full or extra",
                                    (int)vlen, v);
        } else if (klen == 12 && strncmp(q, "busy_timeout", klen) == 0) {
            long ms = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || ms > INT_MAX / 10)
                    return hd_error_set(err, HD_EURL, "busy_timeout=%.*s: expected milliseconds",
                                        (int)vlen, v);
                ms = ms * 10 + (v[i] - '0');
            }
            if (vlen == 0 || ms > INT_MAX)
                return hd_error_set(err, HD_EURL, "busy_timeout needs a number of milliseconds");
            o->busy_timeout_ms = (int)ms;
        } else if (klen == 9 && strncmp(q, "cache_kib", klen) == 0) {
            /* The page cache of this connection. A service opens several connections to one
             * file (one per thread), each with its own cache: the largest part of a small
             * service's own memory (docs/bench.md, issue 14). */
            long kib = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || kib > 1000000)
                    return hd_error_set(err, HD_EURL, "cache_kib=%.*s: expected KiB, 1..1000000",
                                        (int)vlen, v);
                kib = kib * 10 + (v[i] - '0');
            }
            if (vlen == 0 || kib < 1 || kib > 1000000)
                return hd_error_set(err, HD_EURL, "cache_kib needs a number of KiB, 1..1000000");
            o->cache_kib = kib;
        } else if (klen == 5 && strncmp(q, "turns", klen) == 0) {
            /* Off: SQLite's lock as it is, polled (for comparisons, docs/bench.md). */
            if (vlen == 2 && strncasecmp(v, "on", 2) == 0)
                o->no_turns = 0;
            else if (vlen == 3 && strncasecmp(v, "off", 3) == 0)
                o->no_turns = 1;
            else
                return hd_error_set(err, HD_EURL, "turns=%.*s: expected on or off", (int)vlen, v);
        } else if (klen == 8 && strncmp(q, "coalesce", klen) == 0) {
            /* Off: the WAL's frames written one system call each (for comparisons). */
            if (vlen == 2 && strncasecmp(v, "on", 2) == 0)
                o->direct = 0;
            else if (vlen == 3 && strncasecmp(v, "off", 3) == 0)
                o->direct = 1;
            else
                return hd_error_set(err, HD_EURL, "coalesce=%.*s: expected on or off", (int)vlen,
                                    v);
        } else {
            return hd_error_set(err, HD_EURL,
                                "unknown sqlite URL option '%.*s' (known: synchronous, "
                                "busy_timeout, cache_kib, turns, coalesce)",
                                (int)klen, q);
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return HD_OK;
}

/* sqlite:///abs, sqlite://rel, sqlite::memory:, each optionally followed by ?options. */
static int parse_url(const char *url, sqlite_options *o, hd_error *err)
{
    const char *rest = url + strlen("sqlite:");
    const char *path;
    size_t len;
    if (strncmp(rest, ":memory:", 8) == 0) {
        path = ":memory:";
        len = 8;
        rest += 8;
        if (*rest != '\0' && *rest != '?')
            return hd_error_set(err, HD_EURL, "unexpected text after sqlite::memory:");
    } else if (strncmp(rest, "//", 2) == 0) {
        path = rest + 2;
        len = strcspn(path, "?");
        rest = path + len;
    } else {
        return hd_error_set(err, HD_EURL,
                            "expected sqlite:///absolute/path.db, sqlite://relative.db or "
                            "sqlite::memory:");
    }
    if (len == 0)
        return hd_error_set(err, HD_EURL, "sqlite URL has an empty path");
    if (path[len - 1] == '/')
        return hd_error_set(err, HD_EURL, "sqlite URL names a directory, not a file");
    o->synchronous = "FULL";
    o->busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
    if (*rest == '?') {
        int rc = parse_query(rest + 1, o, err);
        if (rc < 0)
            return rc;
    }
    o->path = strndup(path, len);
    return o->path ? HD_OK : hd_error_set(err, HD_ENOMEM, NULL);
}

/* SQLite counts every allocation for sqlite3_memory_used() and the heap limits, under a
 * process-wide mutex that every connection of every thread takes on each malloc and free
 * (about 2,000 instructions per GET /users/{id}, issue 14). herald uses none of those
 * interfaces, so the count is turned off before SQLite initialises. Known limit: process-
 * wide; a program that links herald and wants sqlite3_memory_used(), the soft or hard heap
 * limit or sqlite3_status64() must call sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1) itself
 * before its first SQLite call. After SQLite is initialised (the program opened a database
 * first) the call is refused with SQLITE_MISUSE and changes nothing, which is fine. */
static void sqlite_config_once(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

hd_turns *hd_store_sqlite_turns(hd_store *store)
{
    return store != NULL && store->vtab == &sqlite_vtab ? ((sqlite_store *)store)->turns : NULL;
}

int hd_store_sqlite_open(const char *url, hd_store **out, hd_error *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_config_once);
    sqlite_options o = {0};
    int rc = parse_url(url, &o, err);
    if (rc < 0)
        return rc;
    sqlite_store *ss = calloc(1, sizeof *ss);
    if (ss == NULL) {
        free(o.path);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    ss->base.vtab = &sqlite_vtab;
    /* NOMUTEX: a store belongs to one thread at a time (see store.h), so SQLite's own
     * per-call locking would only cost time. */
    /* The shim that writes the WAL in large writes (store_sqlite_vfs.h), unless coalesce=off;
     * an in-memory database has no files, and gets SQLite's own VFS. */
    const char *vfs = NULL;
    if (!o.direct && strcmp(o.path, ":memory:") != 0) {
        if ((rc = hd_sqlite_vfs_register(err)) < 0) {
            free(o.path);
            free(ss);
            return rc;
        }
        vfs = HD_SQLITE_VFS_NAME;
    }
    rc = sqlite3_open_v2(o.path, &ss->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc != SQLITE_OK) {
        hd_error why;
        rc = ss->db ? fail(ss, rc, NULL, &why)
                    : hd_error_set(&why, HD_ENOMEM, "sqlite3_open_v2 ran out of memory");
        rc = hd_error_set(err, rc, "cannot open %s: %s", o.path, why.text);
        free(o.path);
        sq_close(&ss->base);
        return rc;
    }
    if (!o.no_turns && (rc = hd_turns_open(o.path, &ss->turns, err)) < 0) {
        free(o.path);
        sq_close(&ss->base);
        return rc;
    }
    free(o.path);
    sqlite3_extended_result_codes(ss->db, 1); /* tells UNIQUE apart from other constraints */
    ss->busy_timeout_ms = o.busy_timeout_ms;
    sqlite3_busy_handler(ss->db, on_busy, ss);
    if (ss->turns != NULL)
        sqlite3_wal_hook(ss->db, on_commit, ss);
    char pragmas[300];
    /* journal_mode=WAL is ignored (stays "memory") for in-memory databases, as it should.
     * temp_store=MEMORY: a statement of a transaction that may fail half-way (an UPDATE of
     * several rows in a transaction of several statements: the relays' marks) keeps the
     * pages it changes in a statement journal. SQLite keeps it in memory up to 64 KiB, then
     * creates a file in /var/tmp and writes each page to it in two calls (the page, then 4
     * bytes); with MEMORY it stays in memory (docs/bench.md, issue 14, thirteenth pass:
     * herald-relay made 0.7 fewer write calls an event, herald-notifications 1.0 fewer a
     * notification, with the cache_spill below).
     * cache_spill: a transaction that changes more pages than the cache holds writes some of
     * them to the WAL before it commits, and writes them again, in place, when it changes
     * them again; the commit then rewrites the checksums frame by frame. Spilling starts
     * only above SPILL_KIB instead: connections with small caches (herald-notifications'
     * relay and sweeper, 256 KiB) keep a claim's or a mark's pages until the commit, which
     * writes each once. Memory stays bounded: a larger transaction still spills. */
    int used = snprintf(pragmas, sizeof pragmas,
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON;"
                        " PRAGMA temp_store=MEMORY; PRAGMA cache_spill=-%d;",
                        o.synchronous, SPILL_KIB);
    if (o.cache_kib > 0 && used > 0 && (size_t)used < sizeof pragmas)
        snprintf(pragmas + used, sizeof pragmas - (size_t)used, " PRAGMA cache_size=-%ld;",
                 o.cache_kib);
    /* Switching a new file to WAL needs an exclusive lock, and SQLite does not always call
     * the busy handler for it: several processes opening the same new file at once get
     * SQLITE_BUSY straight away. Retry within the busy timeout instead of failing. */
    int64_t give_up = hd_clock_ms() + o.busy_timeout_ms;
    while ((rc = sq_script(&ss->base, pragmas, err)) == HD_EBUSY && hd_clock_ms() < give_up)
        hd_sleep_ms(5);
    if (rc < 0) {
        sq_close(&ss->base);
        return rc;
    }
    *out = &ss->base;
    return HD_OK;
}
