/* herald/store.h — the store port: one interface to a relational database.
 *
 * The unit of work, the outbox and the inbox need three things from a database: a
 * transaction, parameterised statements and a schema they own. This header is that
 * interface and nothing more. Adapters implement it behind a table of function pointers
 * (hd_store_vtab in store_internal.h), the way SQLite reaches the operating system through
 * its VFS, so the code above never includes sqlite3.h or libpq-fe.h.
 *
 * A store is opened from a URL:
 *     sqlite:///var/lib/app/users.db     absolute path (three slashes: "sqlite://" + "/...")
 *     sqlite://users.db                  path relative to the working directory
 *     sqlite::memory:                    a private in-memory database (tests, tutorials);
 *                                        each open gives a new, empty one
 *     postgresql://user@host/db          (also postgres://) PostgreSQL through libpq; any
 *                                        libpq URI parameter works (connect_timeout=...)
 * SQLite options go in the query string: `?synchronous=normal` (full by default: a
 * committed transaction survives a power cut; normal trades that for speed in WAL mode),
 * `?busy_timeout=ms` (5000 by default: how long to wait for another writer), `?cache_kib=N`
 * (this connection's page cache, PRAGMA cache_size=-N; SQLite's default is 2,000 KiB, and a
 * service with a connection per thread pays it per thread).
 *
 * SQL is written once for every adapter, in the PostgreSQL style: placeholders are $1, $2,
 * ... and refer to params[0], params[1], ... whatever their order in the text. Values never
 * go into the SQL text (no sprintf of values, ever): that rules out SQL injection and lets
 * the adapter cache the compiled statement. Stick to the SQL both databases share (no
 * `::type` casts, no `?` placeholders); INSERT ... ON CONFLICT DO NOTHING and RETURNING
 * work on both.
 *
 * Errors are mapped to herald codes so callers can react without knowing the database:
 *     unique or primary key violation    HD_EEXIST   (a duplicate: often not a bug)
 *     database locked by another writer  HD_EBUSY    (retry later)
 *     anything else the database refuses HD_ESTORE   (err->text has the database's message)
 *     misuse (NULL, bad $N, two statements in one call)  HD_EINVAL
 *     begin inside a transaction, commit or rollback outside one   HD_ESTATE
 *
 * Transactions behave as in PostgreSQL on every adapter: after a statement fails inside a
 * transaction, the transaction is aborted, further statements return HD_ESTATE, and only
 * hd_store_rollback ends it (hd_store_commit rolls back and returns HD_ESTATE). SQLite alone
 * would let you carry on; code written against that would break on PostgreSQL. To absorb
 * an expected duplicate, write `INSERT ... ON CONFLICT DO NOTHING` and look at the count.
 * Outside a transaction each statement commits on its own.
 *
 * A store handle belongs to one thread at a time; open one per thread.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_STORE_H
#define HERALD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_store hd_store;
typedef struct hd_rows hd_rows;

/* ---- values: the parameters of a statement ---------------------------------------------
 * A small tagged value, passed by value. Text and blob data are borrowed: they must stay
 * valid until the call that uses them returns (the store copies what it keeps).
 *     hd_value p[] = {hd_value_text(order_id), hd_value_int(total_cents)};
 *     hd_store_exec(s, "INSERT INTO orders(id, total) VALUES ($1, $2)", p, 2, &err); */
typedef enum hd_value_type {
    HD_VALUE_NULL = 0,
    HD_VALUE_INT,
    HD_VALUE_TEXT,
    HD_VALUE_BLOB,
} hd_value_type;

typedef struct hd_value {
    hd_value_type type;
    int64_t i;        /* HD_VALUE_INT */
    const void *data; /* HD_VALUE_TEXT (NUL-terminated) and HD_VALUE_BLOB; borrowed */
    size_t len;       /* bytes of data, without the NUL for text */
} hd_value;

hd_value hd_value_null(void);
hd_value hd_value_int(int64_t v);
hd_value hd_value_text(const char *s);                /* NULL s gives SQL NULL */
hd_value hd_value_blob(const void *data, size_t len); /* NULL data gives SQL NULL */

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Open the store named by url (see above) and set *out to it (new: hd_store_close it).
 * Opening also prepares the connection: SQLite gets WAL journaling, the synchronous level,
 * the busy timeout and foreign key enforcement.
 * Returns 0, or: HD_EINVAL (NULL argument), HD_EURL (unknown scheme, empty path, unknown or
 * bad option; err says which), HD_ECONNECT (the server could not be reached),
 * HD_ESTORE / HD_EBUSY (the database refused to open), HD_ENOMEM, HD_EUNSUPPORTED (a
 * PostgreSQL URL and libpq.so.5 cannot be loaded: libpq is loaded on the first PostgreSQL
 * open, see dynlib.h; err says "PostgreSQL URL: cannot load libpq.so.5: <why>"). *out is
 * NULL on failure. */
int hd_store_open(const char *url, hd_store **out, hd_error *err);

/* Close the store; an open transaction is rolled back. NULL is fine. */
void hd_store_close(hd_store *store);

/* Delete an SQLite database file and every file kept beside it: SQLite's "-wal", "-shm" and
 * "-journal", and herald's own "-hdturns" (the turns on the write lock, store_sqlite_turns.h,
 * which outlives the connections by design). For tests, benchmarks and tools that made a
 * database of their own; only once no connection has it open. path (borrowed) is the file's
 * path, not a URL. Tries every file; returns 0 (a file that was not there is not an error),
 * HD_EIO when one could not be removed, HD_EINVAL (NULL path) or HD_ENOMEM. */
int hd_store_sqlite_remove(const char *path);

/* "sqlite" or "postgresql" (borrowed static string), for the rare SQL that differs.
 * NULL store gives NULL. */
const char *hd_store_dialect(const hd_store *store);

/* ---- transactions --------------------------------------------------------------------
 * One level only: herald's unit of work is the transaction, and nesting would blur whose
 * commit counts. SQLite's begin takes the write lock at once (BEGIN IMMEDIATE), so two
 * writers queue at begin instead of failing half-way through. */

/* Returns 0, HD_ESTATE when a transaction is already open, HD_EBUSY, HD_ESTORE, HD_EINVAL. */
int hd_store_begin(hd_store *store, hd_error *err);

/* Returns 0, HD_ESTATE (no transaction open; or it was aborted by a failed statement: it is
 * rolled back), HD_EBUSY / HD_ESTORE (the commit failed: the transaction is rolled back).
 * Either way, no transaction is open afterwards. */
int hd_store_commit(hd_store *store, hd_error *err);

/* Returns 0, HD_ESTATE when no transaction is open, HD_ESTORE. No transaction is open
 * afterwards. */
int hd_store_rollback(hd_store *store, hd_error *err);

/* 1 between begin and commit/rollback, else 0. */
int hd_store_in_transaction(const hd_store *store);

/* For a connection whose writes may be lost after a power failure: SQLite commits on it stop
 * waiting for the disk (synchronous=NORMAL when the URL said full or extra; off stays off).
 * A commit that returned still survives a crash of the process (it is in the WAL, in the
 * kernel), and is on disk at the next commit of a connection that syncs (the WAL is one file,
 * written in order) or the next checkpoint; a power loss or an OS crash before that loses
 * it. The relays call it on their own connection: a lease or a mark that is lost only makes
 * an event go out again, which at-least-once delivery allows (relay.md, "The relay's own
 * writes"). Never on a connection that commits what must not be lost. PostgreSQL: nothing
 * is changed (its equivalent, synchronous_commit=off, is not used yet). Returns 0,
 * HD_EINVAL (NULL), HD_ESTATE (inside a transaction), HD_ESTORE. */
int hd_store_relax_sync(hd_store *store, hd_error *err);

/* For a connection whose writes wait for others' commits and must not starve: a relay's
 * claim, on the file its service commits to a thousand times a second. On SQLite its writes
 * that find the lock taken wait IN LINE: the next commit of any of herald's connections to
 * that file wakes them, and once one has waited HD_TURNS_PATIENCE_US, a writer about to
 * start, one that got its last lock without waiting, stands aside for it
 * (store_sqlite_turns.h; the turns must be on, the default). Other connections only poll,
 * as before: when many writers wait for the lock at once, handing it round with a wake-up
 * each time costs more than it gives. The relays call it on their own connection.
 * PostgreSQL: nothing changes (its row locks queue). Returns 0, HD_EINVAL (NULL). */
int hd_store_wait_in_line(hd_store *store, hd_error *err);

/* ---- statements ------------------------------------------------------------------------
 * sql is ONE statement with $1..$n placeholders, and each of $1..$n must appear in it
 * (PostgreSQL refuses gaps); params may be NULL when n is 0. Both are borrowed. */

/* Run a statement; rows it returns are discarded. Returns the number of rows it inserted,
 * updated or deleted (>= 0; 0 for other statements; SQLite also counts rows changed by
 * triggers) or a negative code (see the top of this file). */
int hd_store_exec(hd_store *store, const char *sql, const hd_value *params, size_t n,
                  hd_error *err);

/* Run a statement and read all its rows into memory, so that no cursor stays open between
 * calls. Meant for the small results of an application (a row by id, a batch of outbox
 * rows), not for a table scan. On success *out is new (hd_rows_free it), possibly with 0
 * rows; on failure it is NULL. Returns 0 or a negative code. */
int hd_store_query(hd_store *store, const char *sql, const hd_value *params, size_t n,
                   hd_rows **out, hd_error *err);

/* ---- rows ------------------------------------------------------------------------------
 * Every non-NULL cell is kept as text (that is what PostgreSQL sends, and SQLite converts
 * numbers the same way), so all accessors behave alike on every adapter. Out-of-range row
 * or column indexes read as SQL NULL. */
size_t hd_rows_count(const hd_rows *rows);
size_t hd_rows_columns(const hd_rows *rows);
const char *hd_rows_name(const hd_rows *rows, size_t col); /* column name, borrowed */
int hd_rows_is_null(const hd_rows *rows, size_t row, size_t col);

/* The cell as NUL-terminated text, borrowed from rows; NULL for SQL NULL. */
const char *hd_rows_text(const hd_rows *rows, size_t row, size_t col);

/* The cell as an integer; 0 when it is NULL or not an integer in range (use
 * hd_rows_is_null / hd_rows_text when 0 is a meaningful value to tell them apart). */
int64_t hd_rows_int(const hd_rows *rows, size_t row, size_t col);

/* The cell's bytes and their number in *len (len may be NULL); borrowed; NULL for NULL. */
const void *hd_rows_blob(const hd_rows *rows, size_t row, size_t col, size_t *len);

void hd_rows_free(hd_rows *rows);

/* ---- schema migrations -----------------------------------------------------------------
 * Each module owns its tables and ships them as an ordered list of SQL steps; step i is
 * schema version i + 1 of that module. Steps are only ever appended: a step that ran in
 * production is never edited (write a new one that alters the table).
 *
 * hd_store_migrate runs, in order, the steps not yet recorded in the table
 *     hd_schema_migrations(module, version, applied_at)
 * (created on first use), each in its own transaction together with its record, so a
 * failing step leaves the earlier ones applied and itself not applied at all. A step may
 * hold several statements separated by ';' and takes no parameters (schema, not data).
 * Two processes migrating at once are safe: each step re-checks its record inside its
 * transaction. Migrating again is a no-op.
 *
 * Returns the number of steps applied (0 when up to date), or: HD_EINVAL, HD_ESTATE (a
 * transaction is open), HD_EVERSION (the database has more steps of this module than the
 * code: it was migrated by a newer release), or the failing step's code with
 * "module step N: reason" in err. */
int hd_store_migrate(hd_store *store, const char *module, const char *const *steps, size_t n,
                     hd_error *err);

/* The schema version of module recorded in the store: 0 if never migrated, or a negative
 * code. */
int hd_store_schema_version(hd_store *store, const char *module, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STORE_H */
