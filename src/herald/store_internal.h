/* herald/store_internal.h — for store adapters only (store_sqlite.c, later store_pg.c).
 *
 * Applications include store.h. An adapter includes this header as well, embeds hd_store
 * as the FIRST member of its own struct (C "inheritance", as in aggregate.h), fills a
 * static hd_store_vtab, and is listed in the scheme table of store.c.
 *
 * The split of work: store.c checks arguments, keeps the transaction state (one level,
 * aborted after a failure, identical on every adapter) and implements migrations on top of
 * the vtab. An adapter only talks to its database: it never sees a NULL argument, a begin
 * inside a transaction or a statement in an aborted transaction.
 */
#ifndef HERALD_STORE_INTERNAL_H
#define HERALD_STORE_INTERNAL_H

#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_store_vtab {
    const char *dialect; /* "sqlite", "postgresql" */

    /* Roll back anything open, free every resource and the store itself. */
    void (*close)(hd_store *store);

    /* Each returns 0 or a negative code with err filled. */
    int (*begin)(hd_store *store, hd_error *err);
    int (*commit)(hd_store *store, hd_error *err);
    /* Must succeed (return 0) when the database already ended the transaction itself. */
    int (*rollback)(hd_store *store, hd_error *err);

    /* One statement, $1..$n placeholders (the adapter checks them): rows changed or code. */
    int (*exec)(hd_store *store, const char *sql, const hd_value *params, size_t n, hd_error *err);
    /* Same, materialising rows with the builder below; *out is set only on success. */
    int (*query)(hd_store *store, const char *sql, const hd_value *params, size_t n, hd_rows **out,
                 hd_error *err);

    /* Several statements separated by ';', no parameters: migration steps only. Not
     * public, so that application code cannot build SQL text out of values. */
    int (*script)(hd_store *store, const char *sql, hd_error *err);

    /* hd_store_relax_sync, outside a transaction; NULL: nothing to relax (PostgreSQL). */
    int (*relax_sync)(hd_store *store, hd_error *err);

    /* hd_store_wait_in_line; NULL: nothing to do (PostgreSQL). */
    void (*wait_in_line)(hd_store *store);
} hd_store_vtab;

struct hd_store {
    const hd_store_vtab *vtab;
    int in_tx;   /* between begin and commit/rollback (kept by store.c) */
    int aborted; /* a statement failed inside the transaction (kept by store.c) */
    /* borrowed, may be NULL: what hd_outbox_signal(store) wakes (outbox.c; the adapter
     * leaves it zeroed) */
    struct hd_outbox_notifier *outbox_notifier;
};

/* The SQLite connection's turns (store_sqlite_turns.h), borrowed; NULL for another store, for
 * turns=off and where the turns file could not be used. For tests and figures. */
struct hd_turns *hd_store_sqlite_turns(hd_store *store);

/* Adapters' open functions, called by hd_store_open with the full URL. On success *out is a
 * new store whose base the adapter has zeroed and given its vtab. */
int hd_store_sqlite_open(const char *url, hd_store **out, hd_error *err);
int hd_store_pg_open(const char *url, hd_store **out, hd_error *err); /* store_pg.c */

/* ---- building hd_rows (adapters) -------------------------------------------------------
 * hd_rows_create(ncols) gives an empty result (new, or NULL on ENOMEM); name the columns,
 * then for each row call hd_rows_add_row and set its cells (cells not set are NULL). Cell
 * data is copied and NUL-terminated, into one buffer per result that may move while it is
 * built: read a result (hd_rows_text, _blob) only once it is complete. Each returns 0 or
 * HD_ENOMEM / HD_EINVAL. */
hd_rows *hd_rows_create(size_t ncols);
int hd_rows_set_name(hd_rows *rows, size_t col, const char *name);
int hd_rows_add_row(hd_rows *rows);
int hd_rows_set_cell(hd_rows *rows, size_t col, const void *data, size_t len);
/* An integer cell: its decimal text, as hd_rows_set_cell of it would hold, and the value
 * itself, which hd_rows_int then returns without parsing the text. */
int hd_rows_set_int(hd_rows *rows, size_t col, int64_t v);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STORE_INTERNAL_H */
