/* Chapter 23 — WAL writes: two system calls a frame, or one write a commit.
 *
 * SQLite in WAL mode appends a transaction to "<db>-wal" one frame (one page) at a time, and
 * each frame with two pwrite calls: its 24-byte header, then the page. herald opens every
 * SQLite connection through a VFS shim (herald/store_sqlite_vfs.h) that gathers those appends
 * in a 64 KiB buffer and writes them down in one call when the frame that commits has been
 * written, before the commit becomes visible to anyone. The same bytes, in far fewer calls.
 *
 * Steps: in a private temporary directory, one commit of 200 rows of 500 bytes into a new
 * database opened with ?coalesce=off (SQLite's own VFS), then the same into another one opened
 * through the shim (the default). The pwrite calls on the WAL are counted below both, in the
 * default VFS's system-call table; after each commit, a second connection that knows nothing
 * of the shim counts the rows. No server needed. Read along: docs/tutorial/23-wal-writes.md.
 * Run: build/dev/tutorial-23-wal-writes
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <sqlite3.h>

#include "herald/store.h"
/* Not the application's API: the shim's counters are there for tests and figures. */
#include "herald/store_sqlite_vfs.h"

#include "tutorial.h"

#define ROWS         200 /* one transaction: a consumer's batch, a service catching up */
#define ROW_BYTES    500
#define FRAME_HEADER 24 /* a WAL frame: this header, then one page */

/* ---- the pwrite calls on the WAL, counted below SQLite -------------------------------------
 * os_unix.c calls the operating system through a table that xSetSystemCall can change: the
 * wrapper counts the calls on the WAL file (found by its inode) and calls the original. This
 * SQLite uses "pwrite64" or "pwrite", whichever xGetSystemCall does not return NULL for. */

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, int64_t);

static pwrite_fn real_pwrite;
static pwrite64_fn real_pwrite64;
static struct stat wal_id; /* the WAL being watched: st_dev and st_ino */
static long wal_calls, wal_bytes;

static void count(int fd, ssize_t n)
{
    struct stat st;
    if (n > 0 && fstat(fd, &st) == 0 && st.st_dev == wal_id.st_dev && st.st_ino == wal_id.st_ino) {
        wal_calls++;
        wal_bytes += (long)n;
    }
}

static ssize_t counted_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t done = real_pwrite(fd, buf, n, off);
    count(fd, done);
    return done;
}

static ssize_t counted_pwrite64(int fd, const void *buf, size_t n, int64_t off)
{
    ssize_t done = real_pwrite64(fd, buf, n, off);
    count(fd, done);
    return done;
}

/* Watch the WAL at wal_path from now on. */
static int watch(const char *wal_path, hd_error *err)
{
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find(NULL); /* "unix": the shim's VFS sits on it */
    if (unix_vfs == NULL || stat(wal_path, &wal_id) != 0)
        return hd_error_set(err, HD_ESTORE, "no default VFS, or no WAL at %s", wal_path);
    real_pwrite = (pwrite_fn)unix_vfs->xGetSystemCall(unix_vfs, "pwrite");
    real_pwrite64 = (pwrite64_fn)unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
    int rc = real_pwrite != NULL || real_pwrite64 != NULL ? SQLITE_OK : SQLITE_NOTFOUND;
    if (rc == SQLITE_OK && real_pwrite != NULL)
        rc = unix_vfs->xSetSystemCall(unix_vfs, "pwrite", (sqlite3_syscall_ptr)counted_pwrite);
    if (rc == SQLITE_OK && real_pwrite64 != NULL)
        rc = unix_vfs->xSetSystemCall(unix_vfs, "pwrite64", (sqlite3_syscall_ptr)counted_pwrite64);
    wal_calls = wal_bytes = 0;
    if (rc != SQLITE_OK) {
        unix_vfs->xSetSystemCall(unix_vfs, NULL, NULL);
        return hd_error_set(err, HD_ESTORE, "cannot replace pwrite: %s", sqlite3_errstr(rc));
    }
    return 0;
}

/* Every system call of "unix" back to its original. */
static void unwatch(void)
{
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find(NULL);
    if (unix_vfs != NULL)
        unix_vfs->xSetSystemCall(unix_vfs, NULL, NULL);
}

/* ---- one commit, counted; then read by a connection without the shim ---------------------- */

typedef struct figures {
    long calls, bytes, frames, page; /* on the WAL, for the one commit */
    hd_sqlite_vfs_stats shim;        /* the shim's counters for that commit */
    long rows, text_bytes;           /* what the other connection read */
    long db_bytes;                   /* the database file itself, when it read them */
} figures;

static int insert_rows(hd_store *s, hd_error *err)
{
    char text[ROW_BYTES + 1];
    int rc = hd_store_begin(s, err);
    for (int i = 0; i < ROWS && rc >= 0; i++) {
        memset(text, 'a' + i % 26, ROW_BYTES);
        text[ROW_BYTES] = '\0';
        hd_value p[] = {hd_value_text(text)};
        rc = hd_store_exec(s, "INSERT INTO notes (text) VALUES ($1)", p, 1, err);
    }
    if (rc >= 0)
        return hd_store_commit(s, err);
    if (hd_store_in_transaction(s))
        hd_store_rollback(s, NULL);
    return rc;
}

/* SQLite's own VFS, no shim, read-only: what anyone else sees of db right now. */
static int plain_read(const char *db, figures *f, hd_error *err)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(db, &c, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc =
            sqlite3_prepare_v2(c, "SELECT COUNT(*), TOTAL(length(text)) FROM notes", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        f->rows = (long)sqlite3_column_int64(st, 0);
        f->text_bytes = (long)sqlite3_column_double(st, 1);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        rc = hd_error_set(err, HD_ESTORE, "reading %s: %s", db,
                          c != NULL ? sqlite3_errmsg(c) : sqlite3_errstr(rc));
    sqlite3_finalize(st);
    sqlite3_close(c);
    return rc;
}

static int one_commit(const char *dir, const char *name, const char *options, figures *f,
                      hd_error *err)
{
    char db[500], wal[510], url[600];
    snprintf(db, sizeof db, "%s/%s", dir, name);
    snprintf(wal, sizeof wal, "%s-wal", db);
    snprintf(url, sizeof url, "sqlite://%s%s", db, options);
    hd_store *s = NULL;
    hd_rows *r = NULL;
    hd_sqlite_vfs_stats before, after;
    struct stat st;
    int rc = hd_store_open(url, &s, err);
    if (rc < 0)
        goto out;
    /* The table and the page size first: the WAL exists, and the counting sees one commit. */
    if ((rc = hd_store_exec(s, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
                            NULL, 0, err)) < 0 ||
        (rc = hd_store_query(s, "PRAGMA page_size", NULL, 0, &r, err)) < 0 ||
        (rc = watch(wal, err)) < 0)
        goto out;
    f->page = (long)hd_rows_int(r, 0, 0);
    hd_sqlite_vfs_stats_read(&before);
    rc = insert_rows(s, err);
    hd_sqlite_vfs_stats_read(&after);
    unwatch();
    if (rc < 0)
        goto out;
    f->calls = wal_calls;
    f->bytes = wal_bytes;
    f->frames = f->page > 0 ? wal_bytes / (FRAME_HEADER + f->page) : 0;
    f->shim.wal_writes_in = after.wal_writes_in - before.wal_writes_in;
    f->shim.wal_writes_out = after.wal_writes_out - before.wal_writes_out;
    f->shim.commit_flushes = after.commit_flushes - before.commit_flushes;
    /* The writer is still open, so nothing was checkpointed: the rows are only in the WAL. */
    if ((rc = plain_read(db, f, err)) < 0)
        goto out;
    if (stat(db, &st) != 0) {
        rc = hd_error_set(err, HD_ESTORE, "cannot stat %s", db);
        goto out;
    }
    f->db_bytes = (long)st.st_size;
out:
    hd_rows_free(r);
    hd_store_close(s);
    return rc;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[400];
    snprintf(dir, sizeof dir, "%s/herald-t23-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    /* synchronous=normal: no sync at a commit, so nothing but the shim's own flush at the
     * commit frame puts the frames into the file before the commit is visible. */
    const char *off_opts = "?synchronous=normal&coalesce=off", *on_opts = "?synchronous=normal";
    hd_error err;
    hd_error_clear(&err);
    figures off = {0}, on = {0};
    printf("[1] two new databases in %s: off.db%s, on.db%s\n", dir, off_opts, on_opts);
    int rc = one_commit(dir, "off.db", off_opts, &off, &err);
    if (rc < 0)
        goto out;
    printf("[2] coalesce=off: one commit of %d rows of %d bytes wrote %ld frames of %ld-byte "
           "pages (%ld bytes) to off.db-wal in %ld pwrite calls: %s\n",
           ROWS, ROW_BYTES, off.frames, off.page, off.bytes, off.calls,
           off.calls == 2 * off.frames ? "two a frame, the header then the page"
                                       : "NOT two a frame");
    rc = one_commit(dir, "on.db", on_opts, &on, &err);
    if (rc < 0)
        goto out;
    /* Every write but the last went down because the next one did not fit: it carried more
     * than a buffer less a page. (Pages of 64 KiB are never gathered: two calls a frame.) */
    long most = on.page < HD_SQLITE_VFS_BUFFER ? on.bytes / (HD_SQLITE_VFS_BUFFER - on.page) + 1
                                               : 2 * on.frames;
    printf("[3] coalesce=on: the same commit wrote %ld frames (%ld bytes) to on.db-wal in %ld "
           "pwrite calls: %s\n",
           on.frames, on.bytes, on.calls,
           on.bytes == off.bytes && on.calls >= 1 && on.calls <= most
               ? "the buffer each time it was full, the rest at the commit frame"
               : "NOT gathered");
    printf("[3] the shim's counters for that commit: %llu writes asked for (%s), %llu made (%s), "
           "%llu at a commit frame\n",
           (unsigned long long)on.shim.wal_writes_in,
           on.shim.wal_writes_in == (uint64_t)off.calls ? "step 2's calls" : "NOT step 2's calls",
           (unsigned long long)on.shim.wal_writes_out,
           on.shim.wal_writes_out == (uint64_t)on.calls ? "the calls counted"
                                                        : "NOT the calls counted",
           (unsigned long long)on.shim.commit_flushes);
    printf("[4] read at once by a connection on SQLite's own VFS: off.db %ld rows (%ld bytes of "
           "text), on.db %ld rows (%ld bytes); %s\n",
           off.rows, off.text_bytes, on.rows, on.text_bytes,
           off.rows == ROWS && on.rows == ROWS && on.text_bytes == (long)ROWS * ROW_BYTES
               ? "every committed row"
               : "NOT every committed row");
    printf("[4] they came from the WAL: off.db and on.db were still %ld and %ld bytes, nothing "
           "checkpointed\n",
           off.db_bytes, on.db_bytes);
out:
    unwatch();
    tutorial_remove_dir(dir);
    if (rc < 0) {
        fprintf(stderr, "chapter 23 failed: %s (%s)\n", err.text, hd_err_name(rc));
        return 1;
    }
    printf("[5] removed %s; read docs/modules/store_sqlite_vfs.md\n", dir);
    return 0;
}
