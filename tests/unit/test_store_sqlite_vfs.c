/* Unit tests for the VFS shim that gathers SQLite's WAL writes (herald/store_sqlite_vfs.h):
 * a commit goes down in a few large writes instead of two a frame; what a commit wrote is
 * in the file the moment it returns (another connection, on SQLite's own VFS, reads it); a
 * crash in the middle of a transaction leaves the committed rows and a sound file; a write
 * that fails below the shim fails the commit and nothing else; the WAL starting over after
 * checkpoints is written right. Writes are counted, and made to fail, through the default
 * VFS's system-call table (SQLite's os_unix.c: xSetSystemCall), below the shim. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hd_test.h"
#include "herald/store.h"
#include "herald/store_sqlite_vfs.h"

typedef struct fixture {
    char *dir;
    char db[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = hd_test_tmpdir("vfs");
    snprintf(f->db, sizeof f->db, "%s/t.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hd_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* ---- the write system calls, counted and failed on demand ------------------------------ */

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

static pwrite_fn real_pwrite, real_pwrite64;
static int wal_writes;  /* pwrite calls on a "-wal" file since the last reset */
static int fail_writes; /* > 0: that many more WAL writes fail with EIO */

static int is_wal(int fd)
{
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 4)
        return 0;
    path[n] = '\0';
    return strcmp(path + n - 4, "-wal") == 0;
}

static ssize_t counted(pwrite_fn real, int fd, const void *buf, size_t n, off_t off)
{
    if (is_wal(fd)) {
        wal_writes++;
        if (fail_writes > 0) {
            fail_writes--;
            errno = EIO;
            return -1;
        }
    }
    return real(fd, buf, n, off);
}

static ssize_t counted_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return counted(real_pwrite, fd, buf, n, off);
}

static ssize_t counted_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return counted(real_pwrite64, fd, buf, n, off);
}

/* Put the counters into "unix"'s table (whichever of pwrite and pwrite64 it uses). */
static void count_writes(void)
{
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
    assert_non_null(unix_vfs);
    real_pwrite = (pwrite_fn)unix_vfs->xGetSystemCall(unix_vfs, "pwrite");
    real_pwrite64 = (pwrite_fn)unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
    assert_true(real_pwrite != NULL || real_pwrite64 != NULL);
    if (real_pwrite != NULL)
        assert_int_equal(SQLITE_OK, unix_vfs->xSetSystemCall(unix_vfs, "pwrite",
                                                             (sqlite3_syscall_ptr)counted_pwrite));
    if (real_pwrite64 != NULL)
        assert_int_equal(
            SQLITE_OK,
            unix_vfs->xSetSystemCall(unix_vfs, "pwrite64", (sqlite3_syscall_ptr)counted_pwrite64));
    wal_writes = 0;
    fail_writes = 0;
}

/* Every system call back to what "unix" had. */
static void stop_counting(void)
{
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
    unix_vfs->xSetSystemCall(unix_vfs, NULL, NULL);
}

/* ---- helpers ------------------------------------------------------------------------- */

static hd_store *open_store(const fixture *f, const char *options)
{
    char url[700];
    snprintf(url, sizeof url, "sqlite://%s%s", f->db, options);
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    hd_store_exec(s, "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)", NULL, 0, &err);
    return s;
}

/* Insert rows first..first+n-1 (text of 500 bytes each) in one transaction. */
static int insert_rows(hd_store *s, int first, int n, hd_error *err)
{
    char text[501];
    int rc = hd_store_begin(s, err);
    for (int i = 0; rc >= 0 && i < n; i++) {
        memset(text, 'a' + (first + i) % 26, 500);
        text[500] = '\0';
        hd_value p[] = {hd_value_int(first + i), hd_value_text(text)};
        rc = hd_store_exec(s, "INSERT INTO t (k, v) VALUES ($1, $2)", p, 2, err);
    }
    if (rc >= 0)
        rc = hd_store_commit(s, err);
    if (rc < 0 && hd_store_in_transaction(s))
        hd_store_rollback(s, NULL);
    return rc < 0 ? rc : 0;
}

/* What a plain connection (SQLite's own VFS, no shim) reads: the rows and their sum. */
static void plain_read(const char *db, int64_t *rows, int64_t *sum)
{
    sqlite3 *c = NULL;
    assert_int_equal(SQLITE_OK, sqlite3_open_v2(db, &c, SQLITE_OPEN_READONLY, NULL));
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        SQLITE_OK,
        sqlite3_prepare_v2(c, "SELECT COUNT(*), TOTAL(k + length(v)) FROM t", -1, &st, NULL));
    assert_int_equal(SQLITE_ROW, sqlite3_step(st));
    *rows = sqlite3_column_int64(st, 0);
    *sum = (int64_t)sqlite3_column_double(st, 1);
    sqlite3_finalize(st);
    sqlite3_close(c);
}

static void assert_sound(const char *db)
{
    sqlite3 *c = NULL;
    assert_int_equal(SQLITE_OK, sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE, NULL));
    sqlite3_stmt *st = NULL;
    assert_int_equal(SQLITE_OK, sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL));
    assert_int_equal(SQLITE_ROW, sqlite3_step(st));
    assert_string_equal("ok", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(c);
}

static int64_t expected_sum(int n)
{
    return (int64_t)n * (n + 1) / 2 + 500LL * n; /* rows 1..n */
}

/* A connection without the shim reads exactly rows 1..n (their keys and text lengths). */
static void assert_rows_up_to(const char *db, int n)
{
    int64_t rows = 0, sum = 0;
    plain_read(db, &rows, &sum);
    assert_int_equal(n, rows);
    assert_int_equal(expected_sum(n), sum);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* 200 rows of 500 bytes are about 27 pages: SQLite's own VFS writes each frame with two
 * calls; through the shim the commit is one or two 64 KiB writes. */
static void a_commit_goes_down_in_a_few_large_writes(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?coalesce=off&turns=off");
    count_writes();
    assert_hd_err(HD_OK, insert_rows(s, 1, 200, &err), &err);
    int direct = wal_writes;
    stop_counting();
    hd_store_close(s);
    assert_int_equal(0, unlink(f->db));
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", f->db);
    unlink(wal);

    hd_sqlite_vfs_stats before, after;
    hd_sqlite_vfs_stats_read(&before);
    s = open_store(f, "?turns=off");
    count_writes();
    assert_hd_err(HD_OK, insert_rows(s, 1, 200, &err), &err);
    int gathered = wal_writes;
    stop_counting();
    hd_sqlite_vfs_stats_read(&after);
    hd_store_close(s);

    print_message("WAL writes for one commit of 200 rows: %d direct, %d gathered\n", direct,
                  gathered);
    assert_true(direct >= 50);            /* two a frame, 25 frames at least */
    assert_true(gathered * 10 <= direct); /* the point of the shim */
    assert_true(gathered >= 1);
    assert_true(after.wal_writes_in - before.wal_writes_in >= (uint64_t)direct - 2);
    assert_true(after.wal_writes_out - before.wal_writes_out >= (uint64_t)gathered - 2);
    assert_true(after.commit_flushes > before.commit_flushes);
}

/* synchronous=normal: no sync at the commit, so only the flush at the commit frame puts the
 * frames in the file before the commit becomes visible. Small and large transactions (one
 * row; 300 rows, more than the buffer), each read at once by a connection without the shim. */
static void a_commit_is_in_the_file_when_it_returns(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?synchronous=normal&turns=off");
    int total = 0;
    const int sizes[] = {1, 300, 2, 7, 150, 1, 1, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_hd_err(HD_OK, insert_rows(s, total + 1, sizes[i], &err), &err);
        total += sizes[i];
        assert_rows_up_to(f->db, total);
    }
    hd_store_close(s);
    assert_sound(f->db);
}

/* A writer that dies in the middle of a transaction large enough to spill frames into the
 * WAL (a page cache of 100 KiB): the rows committed before are there, the others not, and
 * the file is sound. A writer that dies right after a commit keeps it. */
static void a_crash_keeps_what_was_committed(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?cache_kib=100&turns=off");
    hd_store_close(s);
    for (int mid = 0; mid < 2; mid++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            hd_store *c = NULL;
            char url[700];
            snprintf(url, sizeof url, "sqlite://%s?cache_kib=100&turns=off", f->db);
            if (hd_store_open(url, &c, &err) < 0 || insert_rows(c, 1 + mid * 1000, 10, &err) < 0)
                _exit(2);
            if (mid) {
                /* 2,000 rows of 500 bytes: far more than the cache, so pages spill. */
                char text[501];
                memset(text, 'z', 500);
                text[500] = '\0';
                if (hd_store_begin(c, &err) < 0)
                    _exit(3);
                for (int i = 0; i < 2000; i++) {
                    hd_value p[] = {hd_value_int(100000 + i), hd_value_text(text)};
                    if (hd_store_exec(c, "INSERT INTO t (k, v) VALUES ($1, $2)", p, 2, &err) < 0)
                        _exit(4);
                }
            }
            _exit(0); /* no commit, no close: as if killed */
        }
        int status = 0;
        assert_int_equal(pid, waitpid(pid, &status, 0));
        assert_true(WIFEXITED(status));
        assert_int_equal(0, WEXITSTATUS(status));
    }
    int64_t rows = 0, sum = 0;
    plain_read(f->db, &rows, &sum);
    assert_int_equal(20, rows); /* 10 + 10 committed; none of the 2,000 */
    assert_sound(f->db);
    s = open_store(f, "?turns=off");
    assert_hd_err(HD_OK, insert_rows(s, 5000, 5, &err), &err);
    hd_store_close(s);
    plain_read(f->db, &rows, &sum);
    assert_int_equal(25, rows);
}

/* A transaction larger than its cache (100 KiB) writes frames to the WAL before it ends,
 * and rolls back; some of them may still wait in the shim. Another connection then commits
 * 2,500 rows at the same offsets of the WAL, and the first one closes (its last call on the
 * WAL). None of the rolled-back rows may appear, and the file must be sound: the frames
 * that waited went down while the first still held the write lock, not over the other's. */
static void a_rolled_back_transaction_leaves_no_trace(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *a = open_store(f, "?cache_kib=100&synchronous=normal&turns=off");
    assert_hd_err(HD_OK, insert_rows(a, 1, 10, &err), &err);
    hd_rows *r = NULL;
    assert_hd_err(HD_OK, hd_store_query(a, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, 0, &r, &err),
                  &err);
    hd_rows_free(r);
    assert_hd_err(HD_OK, hd_store_begin(a, &err), &err);
    assert_true(hd_store_exec(a,
                              "INSERT INTO t (k, v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
                              " SELECT i + 1 FROM n WHERE i < 2000)"
                              " SELECT 1000 + i, printf('%.500c', 'z') FROM n",
                              NULL, 0, &err) == 2000);
    assert_hd_err(HD_OK, hd_store_rollback(a, &err), &err);

    sqlite3 *b = NULL;
    assert_int_equal(SQLITE_OK, sqlite3_open_v2(f->db, &b, SQLITE_OPEN_READWRITE, NULL));
    assert_int_equal(SQLITE_OK,
                     sqlite3_exec(b,
                                  "BEGIN IMMEDIATE; INSERT INTO t (k, v) WITH RECURSIVE n(i) AS"
                                  " (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)"
                                  " SELECT 100000 + i, printf('%.500c', 'b') FROM n; COMMIT",
                                  NULL, NULL, NULL));
    sqlite3_close(b);
    hd_store_close(a);

    int64_t rows = 0, sum = 0;
    plain_read(f->db, &rows, &sum);
    assert_int_equal(2510, rows);
    assert_sound(f->db);
}

/* synchronous=normal (no sync at the commit), a transaction that writes pages to the WAL
 * early (a 100 KiB cache) and changes some of them again: at the commit SQLite rewrites the
 * checksums of those frames, the commit frame's header last, with no page after it. The
 * writer dies right after the commit returned: the commit must survive (recovery reads the
 * checksums, and stops at the first wrong one). */
static void a_commit_with_rewritten_checksums_survives_a_crash(void **state)
{
    fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        hd_error err;
        hd_store *c = NULL;
        char url[700];
        snprintf(url, sizeof url, "sqlite://%s?cache_kib=100&synchronous=normal&turns=off", f->db);
        if (hd_store_open(url, &c, &err) < 0 ||
            hd_store_exec(c, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", NULL, 0, &err) < 0 ||
            hd_store_begin(c, &err) < 0 ||
            hd_store_exec(c,
                          "INSERT INTO t (k, v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
                          " SELECT i + 1 FROM n WHERE i < 2000)"
                          " SELECT i, printf('%.500c', 'a') FROM n",
                          NULL, 0, &err) < 0 ||
            hd_store_exec(c, "UPDATE t SET v = printf('%.500c', 'b') WHERE k % 7 = 0", NULL, 0,
                          &err) < 0 ||
            hd_store_commit(c, &err) < 0)
            _exit(2);
        _exit(0); /* no close: as if killed right after the commit */
    }
    int status = 0;
    assert_int_equal(pid, waitpid(pid, &status, 0));
    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));
    int64_t rows = 0, sum = 0;
    plain_read(f->db, &rows, &sum);
    assert_int_equal(2000, rows);
    assert_sound(f->db);
}

/* The gathered write fails (EIO below the shim): the commit fails, the rows before it stay,
 * and once the disk is well again the next commit works. */
static void a_failed_write_fails_the_commit(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?turns=off");
    assert_hd_err(HD_OK, insert_rows(s, 1, 50, &err), &err);
    count_writes();
    fail_writes = 1000;
    int rc = insert_rows(s, 51, 50, &err);
    int failed_writes = wal_writes;
    fail_writes = 0;
    stop_counting();
    assert_true(rc < 0);
    assert_true(failed_writes >= 1);
    assert_rows_up_to(f->db, 50);
    assert_hd_err(HD_OK, insert_rows(s, 51, 50, &err), &err);
    hd_store_close(s);
    assert_rows_up_to(f->db, 100);
    assert_sound(f->db);
}

/* Checkpoints every 10 pages: the WAL starts over at its first byte again and again (a write
 * that does not continue the buffer), and every commit is read back right. */
static void the_wal_starting_over_is_written_right(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?turns=off");
    hd_rows *r = NULL;
    assert_hd_err(HD_OK, hd_store_query(s, "PRAGMA wal_autocheckpoint=10", NULL, 0, &r, &err),
                  &err);
    hd_rows_free(r);
    int total = 0;
    for (int i = 0; i < 120; i++) {
        int n = 1 + (i * 7) % 40;
        assert_hd_err(HD_OK, insert_rows(s, total + 1, n, &err), &err);
        total += n;
    }
    assert_rows_up_to(f->db, total);
    hd_store_close(s);
    assert_sound(f->db);
}

/* ---- the pragmas hd_store_sqlite_open sets beside the shim ---------------------------- */

/* n rows of 500 bytes (about 7 a page) in table u, whose NOT NULL makes every UPDATE one
 * that may fail half-way: in a transaction of several statements, SQLite then keeps the
 * pages each statement changes in a statement journal. */
static void fill_u(hd_store *s, int n)
{
    hd_error err;
    assert_true(hd_store_exec(s, "CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT NOT NULL)", NULL, 0,
                              &err) >= 0);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    for (int i = 1; i <= n; i++) {
        hd_value p[] = {hd_value_int(i)};
        assert_true(hd_store_exec(s, "INSERT INTO u (k, v) VALUES ($1, printf('%500d', $1))", p, 1,
                                  &err) >= 0);
    }
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
}

/* Two UPDATEs of every row of u in one transaction; returns the temporary files SQLite
 * opened meanwhile (the shim counts them). */
static uint64_t temp_files_of_two_updates(hd_store *s)
{
    hd_error err;
    hd_sqlite_vfs_stats before, after;
    hd_sqlite_vfs_stats_read(&before);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_true(hd_store_exec(s, "UPDATE u SET v = 'x' || v", NULL, 0, &err) >= 0);
    assert_true(hd_store_exec(s, "UPDATE u SET v = substr(v, 2)", NULL, 0, &err) >= 0);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    hd_sqlite_vfs_stats_read(&after);
    return after.temp_files - before.temp_files;
}

/* 300 rows are about 45 pages: each statement's journal outgrows the 64 KiB SQLite keeps in
 * memory. With the store's temp_store=MEMORY no file is opened for it; with SQLite's
 * default (FILE, set back here) one is: the count is the one that tells them apart. */
static void a_statement_journal_stays_in_memory(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?turns=off");
    fill_u(s, 300);
    assert_int_equal(0, temp_files_of_two_updates(s));
    assert_true(hd_store_exec(s, "PRAGMA temp_store=FILE", NULL, 0, &err) >= 0);
    assert_true(temp_files_of_two_updates(s) >= 1);
    hd_store_close(s);
    assert_sound(f->db);
}

/* WAL writes SQLite asks for while a transaction that changes about 45 pages is still open,
 * on a connection whose cache holds 16 (cache_kib=64). Each call writes another first
 * letter: SQLite does not dirty a page whose row it rewrites with the same bytes. */
static uint64_t wal_writes_before_commit(hd_store *s, const char *letter)
{
    hd_error err;
    hd_sqlite_vfs_stats before, after;
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    hd_sqlite_vfs_stats_read(&before);
    hd_value p[] = {hd_value_text(letter)};
    assert_true(hd_store_exec(s, "UPDATE u SET v = $1 || substr(v, 2)", p, 1, &err) >= 0);
    hd_sqlite_vfs_stats_read(&after);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    return after.wal_writes_in - before.wal_writes_in;
}

/* A transaction larger than a small cache keeps its pages until the commit (cache_spill at
 * 4 MiB): nothing goes to the WAL before it. SQLite's default, spilling as soon as the
 * cache is full (cache_spill=1: the cache's own size), writes frames early. */
static void a_transaction_larger_than_the_cache_waits_for_its_commit(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, "?turns=off&cache_kib=64");
    fill_u(s, 300);
    assert_int_equal(0, wal_writes_before_commit(s, "y"));
    assert_true(hd_store_exec(s, "PRAGMA cache_spill=1", NULL, 0, &err) >= 0);
    assert_true(wal_writes_before_commit(s, "z") >= 1);
    hd_store_close(s);
    assert_sound(f->db);
}

/* hd_store_sqlite_remove takes the database and everything beside it, herald's turns file
 * included, and is content with files that are not there. */
static void remove_takes_the_files_beside_the_database(void **state)
{
    fixture *f = *state;
    hd_error err;
    hd_store *s = open_store(f, ""); /* turns on: the "-hdturns" file */
    assert_hd_err(HD_OK, insert_rows(s, 1, 10, &err), &err);
    hd_store_close(s);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-hdturns"};
    char path[600];
    snprintf(path, sizeof path, "%s-hdturns", f->db);
    assert_int_equal(0, access(path, F_OK));
    snprintf(path, sizeof path, "%s-journal", f->db);
    FILE *j = fopen(path, "w"); /* as a crashed rollback-journal writer would leave one */
    assert_non_null(j);
    fclose(j);
    assert_int_equal(0, hd_store_sqlite_remove(f->db));
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        snprintf(path, sizeof path, "%s%s", f->db, suffixes[k]);
        assert_int_equal(-1, access(path, F_OK));
    }
    snprintf(path, sizeof path, "%s-journal", f->db);
    assert_int_equal(-1, access(path, F_OK));
    assert_int_equal(0, hd_store_sqlite_remove(f->db)); /* nothing left: still 0 */
    assert_int_equal(HD_EINVAL, hd_store_sqlite_remove(NULL));
    /* A file that cannot be removed is reported: a directory in the database's place. */
    assert_int_equal(0, mkdir(f->db, 0700));
    assert_int_equal(HD_EIO, hd_store_sqlite_remove(f->db));
    rmdir(f->db);
}

static void coalesce_takes_on_or_off(void **state)
{
    fixture *f = *state;
    char url[700];
    hd_store *s = NULL;
    hd_error err;
    snprintf(url, sizeof url, "sqlite://%s?coalesce=maybe", f->db);
    assert_int_equal(HD_EURL, hd_store_open(url, &s, &err));
    assert_non_null(strstr(err.text, "coalesce=maybe"));
    assert_null(s);
    snprintf(url, sizeof url, "sqlite://%s?coalesce=ON", f->db);
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    hd_store_close(s);
    assert_hd_err(HD_OK, hd_sqlite_vfs_register(&err), &err);
    assert_non_null(sqlite3_vfs_find(HD_SQLITE_VFS_NAME));
    assert_true(sqlite3_vfs_find(NULL) != sqlite3_vfs_find(HD_SQLITE_VFS_NAME)); /* not default */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_commit_goes_down_in_a_few_large_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(a_commit_is_in_the_file_when_it_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(a_crash_keeps_what_was_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_rolled_back_transaction_leaves_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(a_commit_with_rewritten_checksums_survives_a_crash, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_failed_write_fails_the_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(the_wal_starting_over_is_written_right, setup, teardown),
        cmocka_unit_test_setup_teardown(a_statement_journal_stays_in_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(a_transaction_larger_than_the_cache_waits_for_its_commit,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(remove_takes_the_files_beside_the_database, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(coalesce_takes_on_or_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
