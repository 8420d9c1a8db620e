/* A randomized multi-process stress test of the VFS shim that gathers SQLite's WAL writes
 * (herald/store_sqlite_vfs.h): whatever the timing, a commit that returned (or that a reader
 * saw) survives a kill of every process, nothing rolled back ever shows, readers always see
 * a consistent snapshot, and the file is sound.
 *
 * In a private directory, with a page size drawn from 1 to 64 KiB (frames fall differently
 * into the shim's 64 KiB buffer; 64 KiB pages do not fit in it):
 *   - accounts(id, balance, pad): transfers keep the total constant; a change meant to be
 *     rolled back adds to it, so that it shows if it ever survives;
 *   - log(writer, seq, ver, doomed, plen, pad): each writer appends rows with a strictly
 *     increasing seq of its own and deterministic padding of 300-3,000 bytes (checked byte
 *     for byte), and records the last seq in shared memory once its commit returned. Rows
 *     meant to be rolled back say doomed=1 and take the seqs the next commit takes again;
 *   - scratch(writer, body): blobs of up to 9 KB inserted and deleted: pages freed, reused.
 * Three forked writers loop over random transactions through hd_store (one or two
 * connections each: synchronous=normal or full, a cache of 100 KiB, 400 KiB or SQLite's
 * 2,000, turns on or off, now and then a journal size limit): a few transfers; dozens to
 * hundreds of rows (far more than 100 KiB: pages spill into the WAL) of which some are
 * changed again in the same transaction (SQLite then rewrites checksums at the commit) and
 * read back; savepoints rolled back; whole transactions rolled back; meanwhile the
 * writer's other connection reads and checkpoints; checkpoints of the writer's own after a
 * commit; reopened connections; a writer that kills itself right after a commit returned.
 * A checker process checkpoints and checks, through the shim and through SQLite's own VFS,
 * in one read transaction: the total, and every seq a writer had recorded before the
 * transaction began, there exactly once. The parent SIGKILLs a writer (or the checker)
 * every 40-300 ms and starts a new one; at the end of each epoch (about a second) it kills
 * everything (or, one time in three, lets the children finish and close), and a plain
 * connection (no shim), the first to open the file, recovers the WAL from the file alone and
 * checks: integrity_check, the total, seqs 1..n of each writer exactly once with n at least
 * what it recorded and what a reader saw, no doomed row, every row's padding.
 *
 * The second case runs the same, shorter, with coalesce=off in every URL: the control,
 * which shows that the test itself holds without the shim.
 *
 * About 4.5 s and 2.5 s (longer when fewer than MIN_COMMITS commits were made by then, as
 * under valgrind). Environment: HD_STRESS_SEED repeats a run's random choices (not the
 * timing of its processes); HD_STRESS_MS and HD_STRESS_CONTROL_MS set the two times;
 * HD_STRESS_VERBOSE prints each epoch; HD_STRESS_SQLITE_BUGS provokes the bugs of SQLite
 * itself that the test otherwise steers clear of (see below). A failing run keeps its
 * directory (the files as the last crash left them) and prints where. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hd_test.h"
#include "herald/store.h"
#include "herald/store_sqlite_vfs.h"

#define NWRITERS      3
#define NACCOUNTS     150
#define START_BALANCE 1000
#define TOTAL         ((int64_t)NACCOUNTS * START_BALANCE)
#define MIN_PAD       300
#define MAX_PAD       3000
#define MAX_TX_ROWS   250  /* log rows of one large transaction, at most */
#define SHIM_MS       4500 /* the first case's time, epochs and checks included */
#define CONTROL_MS    2500 /* the control's */
#define STOP_WAIT_MS  60000
#define MIN_COMMITS   10 /* a run that committed less proves little: it goes on for that */
#define HARD_LIMIT    8  /* ... up to this many times its time */

/* ---- what the processes share (MAP_SHARED) ------------------------------------------- */

typedef struct shared {
    _Atomic int64_t last[NWRITERS]; /* per writer: the last seq of a commit that returned */
    _Atomic int64_t seen[NWRITERS]; /* per writer: the highest seq a reader has seen */
    _Atomic int stop;               /* 1: finish the transaction, close, exit 0 */
    int page_size;                  /* the database's, set before the first fork */
    _Atomic int failures;
    _Atomic int why_taken;
    char why[600]; /* the first failure */
    _Atomic uint64_t commits, rollbacks, savepoints, large, rewrites, busy, self_kills, reopens;
    _Atomic uint64_t checks, plain_checks, checkpoints, wal_in, wal_out;
} shared;

__attribute__((format(printf, 2, 3))) static void failure(shared *sh, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&sh->failures, 1);
    int expected = 0;
    if (atomic_compare_exchange_strong(&sh->why_taken, &expected, 1))
        snprintf(sh->why, sizeof sh->why, "%s", msg);
    fprintf(stderr, "[stress pid %d] FAILURE: %s\n", (int)getpid(), msg);
}

static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- small things ---------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rnd_in(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static int chance(uint64_t *s, int percent)
{
    return (int)(rnd(s) % 100) < percent;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The padding of a log row: who, which seq, which version, then one letter to plen bytes.
 * out holds MAX_PAD + 1. */
static void make_pad(char *out, int w, int64_t seq, int ver, int plen)
{
    int n = snprintf(out, (size_t)plen + 1, "w%d.s%" PRId64 ".v%d.", w, seq, ver);
    if (n < plen)
        memset(out + n, 'A' + (int)((w * 7 + seq * 31 + ver * 13) % 26), (size_t)(plen - n));
    out[plen] = '\0';
}

/* ---- two bugs of SQLite itself, kept out of the way ------------------------------------
 * Both lose commits with or without the shim (the control case fails the same way), so on
 * a SQLite that has them the test does not provoke them, unless HD_STRESS_SQLITE_BUGS is
 * set (then expect failures, in the control too):
 *   - the "WAL-reset bug" (SQLite 3.7.0 to 3.51.2): a PASSIVE checkpoint (autocheckpoints
 *     are passive) racing with a writer that restarts the WAL. Steered clear of: the
 *     writers turn their autocheckpoint off, and the checkpoints are FULL, RESTART or
 *     TRUNCATE, which take the write lock first (waiting for it as long as a writer would),
 *     or PASSIVE from a connection whose process holds the write lock.
 *   - ROLLBACK TO a savepoint inside which a frame written after the savepoint was
 *     rewritten in place (a page spilled, changed, spilled again) leaves SQLite's
 *     Wal.iReCksum set: Debian 12's 3.40.1 does, the 3.53.2 amalgamation does not. The
 *     commit that follows writes its first frames with zero salts and checksums (frames
 *     "to be rewritten") but rewrites only those from iReCksum on. Readers do not look at
 *     checksums, so nothing shows until every connection is gone without a checkpoint (a
 *     crash): recovery stops at the first zero frame, and that commit and every later one
 *     in the WAL are lost. With the sqlite3 shell alone (WAL, cache_size=20, 4 KiB
 *     pages), 200 rows of 200 bytes: BEGIN; update 10 of them; SAVEPOINT s; insert 100
 *     rows of 2,000 bytes; update 3 of those; insert 100 more; ROLLBACK TO s; RELEASE s;
 *     COMMIT; kill -9 the shell: the 10 updates are gone. Steered clear of: a transaction
 *     that rolled back to a savepoint commits only when it cannot have spilled (a few
 *     small rows, a cache of 40 pages or more); else it rolls back as a whole. */
static int sqlite_bugs_wanted(void)
{
    return getenv("HD_STRESS_SQLITE_BUGS") != NULL;
}

static int passive_checkpoints(void)
{
    return sqlite_bugs_wanted() || sqlite3_libversion_number() >= 3051003;
}

static int savepoint_bug(void)
{
    return !sqlite_bugs_wanted() && sqlite3_libversion_number() < 3053002;
}

/* ---- a writer (a child process) -------------------------------------------------------- */

typedef struct writer {
    shared *sh;
    const char *db;
    int coalesce;
    int w;
    uint64_t rng;
    hd_store *conn[2];
    int cache[2]; /* their cache_kib (0: SQLite's default, 2,000 KiB) */
    int nconn;
    hd_store *s; /* the connection of the current transaction */
    int s_cache;
    int64_t next; /* the next seq to commit */
    hd_sqlite_vfs_stats seen;
    char pad[MAX_PAD + 1];
    char pad2[MAX_PAD + 1];
} writer;

static _Noreturn void die(writer *wr, const char *what, int rc, const hd_error *err)
{
    failure(wr->sh, "writer %d (next seq %" PRId64 "): %s: %s: %s", wr->w, wr->next, what,
            hd_err_name(rc), err != NULL ? err->text : "");
    _exit(3);
}

/* A statement that must succeed; returns its count of changed rows. */
static int ex(writer *wr, const char *sql, const hd_value *p, size_t n)
{
    hd_error err;
    int rc = hd_store_exec(wr->s, sql, p, n, &err);
    if (rc < 0)
        die(wr, sql, rc, &err);
    return rc;
}

static int64_t query_int(writer *wr, const char *sql, const hd_value *p, size_t n)
{
    hd_error err;
    hd_rows *r = NULL;
    int rc = hd_store_query(wr->s, sql, p, n, &r, &err);
    if (rc < 0)
        die(wr, sql, rc, &err);
    int64_t v = hd_rows_int(r, 0, 0);
    hd_rows_free(r);
    return v;
}

static hd_store *open_one(writer *wr, int *cache_out)
{
    static const int caches[] = {100, 100, 100, 400, 0};
    int cache = caches[rnd_in(&wr->rng, 0, 4)];
    *cache_out = cache;
    int turns = chance(&wr->rng, 70);
    char kib[32] = "", url[800];
    if (cache)
        snprintf(kib, sizeof kib, "&cache_kib=%d", cache);
    snprintf(url, sizeof url, "sqlite://%s?busy_timeout=30000&synchronous=%s%s%s%s", wr->db,
             chance(&wr->rng, 50) ? "normal" : "full", kib, turns ? "" : "&turns=off",
             wr->coalesce ? "" : "&coalesce=off");
    hd_store *s = NULL;
    hd_error err;
    int rc;
    for (int tries = 0; (rc = hd_store_open(url, &s, &err)) == HD_EBUSY && tries < 100; tries++)
        sleep_us(20000);
    if (rc < 0)
        die(wr, url, rc, &err);
    hd_store *was = wr->s;
    wr->s = s;
    if (!passive_checkpoints()) {
        /* No checkpoint of the writer's own (SQLite's, or the turns' hook): see above. */
        ex(wr, "PRAGMA wal_autocheckpoint=0", NULL, 0);
    } else if (!turns && chance(&wr->rng, 50)) {
        /* SQLite's own autocheckpoint replaces the turns' WAL hook: only without the turns. */
        static const char *const every[] = {"PRAGMA wal_autocheckpoint=1",
                                            "PRAGMA wal_autocheckpoint=10",
                                            "PRAGMA wal_autocheckpoint=100"};
        ex(wr, every[rnd_in(&wr->rng, 0, 2)], NULL, 0);
    }
    if (chance(&wr->rng, 30))
        ex(wr,
           chance(&wr->rng, 50) ? "PRAGMA journal_size_limit=0" : "PRAGMA journal_size_limit=65536",
           NULL, 0);
    wr->s = was;
    return s;
}

static void open_conns(writer *wr)
{
    wr->nconn = chance(&wr->rng, 25) ? 2 : 1;
    for (int i = 0; i < wr->nconn; i++)
        wr->conn[i] = open_one(wr, &wr->cache[i]);
    wr->s = wr->conn[0];
    wr->s_cache = wr->cache[0];
    hd_value p[] = {hd_value_int(wr->w)};
    int64_t in_db = query_int(wr, "SELECT COALESCE(MAX(seq), 0) FROM log WHERE writer = $1", p, 1);
    int64_t recorded = atomic_load(&wr->sh->last[wr->w]);
    wr->next = (in_db > recorded ? in_db : recorded) + 1;
}

static void close_conns(writer *wr)
{
    for (int i = 0; i < wr->nconn; i++)
        hd_store_close(wr->conn[i]);
    wr->nconn = 0;
    wr->s = NULL;
}

static void begin(writer *wr)
{
    hd_error err;
    int rc;
    while ((rc = hd_store_begin(wr->s, &err)) == HD_EBUSY)
        add(&wr->sh->busy, 1);
    if (rc < 0)
        die(wr, "begin", rc, &err);
}

/* Move amount from one account to another (the total stays); doomed: add to one (the
 * total changes: the transaction or savepoint is meant to be rolled back). */
static void transfer(writer *wr, int doomed)
{
    int a = rnd_in(&wr->rng, 1, NACCOUNTS), b = rnd_in(&wr->rng, 1, NACCOUNTS - 1);
    if (b >= a)
        b++;
    int amount = rnd_in(&wr->rng, 1, 100);
    if (doomed) {
        hd_value p[] = {hd_value_int(a)};
        ex(wr, "UPDATE accounts SET balance = balance + 7 WHERE id = $1", p, 1);
        return;
    }
    /* A new padding now and then: the rows change size and move within their pages. */
    int plen = rnd_in(&wr->rng, 20, 400);
    memset(wr->pad2, 'a' + rnd_in(&wr->rng, 0, 25), (size_t)plen);
    wr->pad2[plen] = '\0';
    hd_value p1[] = {hd_value_int(amount), hd_value_int(a), hd_value_text(wr->pad2)};
    if (ex(wr, "UPDATE accounts SET balance = balance - $1, pad = $3 WHERE id = $2", p1, 3) != 1)
        die(wr, "transfer: no such account", 0, NULL);
    hd_value p2[] = {hd_value_int(amount), hd_value_int(b)};
    if (ex(wr, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", p2, 2) != 1)
        die(wr, "transfer: no such account", 0, NULL);
}

static int random_plen(writer *wr)
{
    return chance(&wr->rng, 30) ? rnd_in(&wr->rng, MIN_PAD, 600)
                                : rnd_in(&wr->rng, MIN_PAD, MAX_PAD);
}

static void insert_log(writer *wr, int64_t seq, int ver, int doomed, int plen)
{
    make_pad(wr->pad, wr->w, seq, ver, plen);
    hd_value p[] = {hd_value_int(wr->w),  hd_value_int(seq),  hd_value_int(ver),
                    hd_value_int(doomed), hd_value_int(plen), hd_value_text(wr->pad)};
    ex(wr, "INSERT INTO log (writer, seq, ver, doomed, plen, pad) VALUES ($1, $2, $3, $4, $5, $6)",
       p, 6);
}

/* Give a row written earlier in this transaction a new version (and length), then read it
 * back: the page may have spilled into the WAL and is read from there. */
static void rewrite_log(writer *wr, int64_t seq, int *ver)
{
    int plen = random_plen(wr);
    (*ver)++;
    make_pad(wr->pad, wr->w, seq, *ver, plen);
    hd_value p[] = {hd_value_int(*ver), hd_value_int(plen), hd_value_text(wr->pad),
                    hd_value_int(wr->w), hd_value_int(seq)};
    if (ex(wr,
           "UPDATE log SET ver = $1, plen = $2, pad = $3 WHERE writer = $4 AND seq = $5"
           " AND doomed = 0",
           p, 5) != 1)
        die(wr, "a row written earlier in the transaction is missing", 0, NULL);
    add(&wr->sh->rewrites, 1);
}

static void read_back(writer *wr, int64_t seq, int ver)
{
    hd_error err;
    hd_rows *r = NULL;
    hd_value p[] = {hd_value_int(wr->w), hd_value_int(seq)};
    int rc = hd_store_query(wr->s,
                            "SELECT ver, plen, pad FROM log WHERE writer = $1 AND seq = $2"
                            " AND doomed = 0",
                            p, 2, &r, &err);
    if (rc < 0)
        die(wr, "read back", rc, &err);
    int ok = hd_rows_count(r) == 1 && hd_rows_int(r, 0, 0) == ver;
    if (ok) {
        int plen = (int)hd_rows_int(r, 0, 1);
        make_pad(wr->pad, wr->w, seq, ver, plen);
        const char *got = hd_rows_text(r, 0, 2);
        ok = plen >= MIN_PAD && plen <= MAX_PAD && got != NULL && strcmp(got, wr->pad) == 0;
    }
    if (!ok)
        failure(wr->sh,
                "writer %d: seq %" PRId64
                " read back within its transaction: %zu rows, ver %s (wrote %d)",
                wr->w, seq, hd_rows_count(r), hd_rows_text(r, 0, 0) ? hd_rows_text(r, 0, 0) : "-",
                ver);
    hd_rows_free(r);
    if (!ok)
        _exit(3);
}

static void scratch(writer *wr)
{
    if (chance(&wr->rng, 60)) {
        hd_value p[] = {hd_value_int(wr->w), hd_value_int(rnd_in(&wr->rng, 100, 9000))};
        ex(wr, "INSERT INTO scratch (writer, body) VALUES ($1, randomblob($2))", p, 2);
    } else {
        hd_value p[] = {hd_value_int(wr->w), hd_value_int(rnd_in(&wr->rng, 1, 4))};
        ex(wr,
           "DELETE FROM scratch WHERE id IN (SELECT id FROM scratch WHERE writer = $1"
           " ORDER BY id LIMIT $2)",
           p, 2);
    }
}

/* Doomed rows (and a doomed change of the total) for seqs from..: what a rollback must
 * undo. Large ones spill. */
static void doomed_work(writer *wr, int64_t from, int rows)
{
    for (int i = 0; i < rows; i++) {
        insert_log(wr, from + i, 0, 1, random_plen(wr));
        if (chance(&wr->rng, 10))
            transfer(wr, chance(&wr->rng, 50));
        if (chance(&wr->rng, 5))
            scratch(wr);
    }
    transfer(wr, 1);
}

/* rows: how many doomed rows at most (a few, or enough to spill). */
static void savepoint_rolled_back(writer *wr, int64_t from, int rows)
{
    ex(wr, "SAVEPOINT s", NULL, 0);
    doomed_work(wr, from,
                rows > 5 && chance(&wr->rng, 30) ? rnd_in(&wr->rng, 20, rows)
                                                 : rnd_in(&wr->rng, 1, rows < 3 ? rows : 3));
    if (chance(&wr->rng, 30)) {
        /* A savepoint within: released, then rolled back with the outer one. */
        ex(wr, "SAVEPOINT t", NULL, 0);
        doomed_work(wr, from, rnd_in(&wr->rng, 1, 3));
        ex(wr, "RELEASE t", NULL, 0);
    }
    ex(wr, "ROLLBACK TO s", NULL, 0);
    ex(wr, "RELEASE s", NULL, 0);
    hd_value p[] = {hd_value_int(wr->w), hd_value_int(from)};
    if (query_int(wr, "SELECT COUNT(*) FROM log WHERE writer = $1 AND seq >= $2 AND doomed = 1", p,
                  2) != 0)
        die(wr, "doomed rows still there after ROLLBACK TO", 0, NULL);
    add(&wr->sh->savepoints, 1);
}

static void commit(writer *wr, int64_t next)
{
    hd_error err;
    int rc = hd_store_commit(wr->s, &err);
    if (rc < 0)
        die(wr, "commit", rc, &err);
    /* Returned: from now on these seqs must survive anything. */
    atomic_store(&wr->sh->last[wr->w], next - 1);
    wr->next = next;
    add(&wr->sh->commits, 1);
}

/* In the middle of a transaction of one connection, the writer's other one (same process,
 * same files, its own WAL file handle) reads what this writer committed, and may run a
 * PASSIVE checkpoint: it copies committed frames while the first holds the write lock and
 * frames of its own still wait in the shim (no WAL restart can race with it: the lock is
 * held). */
static void meanwhile_the_other(writer *wr)
{
    if (wr->nconn < 2 || !chance(&wr->rng, 30))
        return;
    hd_store *other = wr->s == wr->conn[0] ? wr->conn[1] : wr->conn[0];
    int64_t last = atomic_load(&wr->sh->last[wr->w]);
    hd_value p[] = {hd_value_int(wr->w), hd_value_int(last)};
    hd_rows *r = NULL;
    hd_error err;
    int rc = hd_store_query(other,
                            "SELECT COUNT(*), COUNT(DISTINCT seq) FROM log WHERE writer = $1"
                            " AND seq <= $2",
                            p, 2, &r, &err);
    if (rc == HD_EBUSY)
        return;
    if (rc < 0)
        die(wr, "the other connection's read", rc, &err);
    if (hd_rows_int(r, 0, 0) != last || hd_rows_int(r, 0, 1) != last)
        failure(wr->sh,
                "writer %d: its other connection sees %" PRId64 " rows (%" PRId64
                " distinct) of seqs 1..%" PRId64,
                wr->w, hd_rows_int(r, 0, 0), hd_rows_int(r, 0, 1), last);
    hd_rows_free(r);
    if (chance(&wr->rng, 50)) {
        r = NULL;
        rc = hd_store_query(other, "PRAGMA wal_checkpoint(PASSIVE)", NULL, 0, &r, &err);
        hd_rows_free(r);
        if (rc < 0 && rc != HD_EBUSY)
            die(wr, "the other connection's checkpoint", rc, &err);
        add(&wr->sh->checkpoints, 1);
    }
}

static void rollback(writer *wr)
{
    hd_error err;
    int rc = hd_store_rollback(wr->s, &err);
    if (rc < 0)
        die(wr, "rollback", rc, &err);
    add(&wr->sh->rollbacks, 1);
}

static void one_transaction(writer *wr)
{
    uint64_t *r = &wr->rng;
    int64_t seq = wr->next;
    int kind = rnd_in(r, 1, 100);
    if (wr->nconn == 2) {
        int i = rnd_in(r, 0, 1);
        wr->s = wr->conn[i];
        wr->s_cache = wr->cache[i];
    }
    begin(wr);
    if (kind <= 40) {
        /* Small: a transfer or three, maybe a row. */
        for (int i = rnd_in(r, 1, 3); i > 0; i--)
            transfer(wr, 0);
        if (chance(r, 60))
            insert_log(wr, seq++, 0, 0, random_plen(wr));
        commit(wr, seq);
    } else if (kind <= 60) {
        /* Medium: a few rows, one changed again. */
        int n = rnd_in(r, 2, 20), ver = 0;
        for (int i = 0; i < n; i++) {
            insert_log(wr, seq + i, 0, 0, random_plen(wr));
            if (chance(r, 20))
                transfer(wr, 0);
        }
        if (chance(r, 50)) {
            int64_t which = seq + rnd_in(r, 0, n - 1);
            rewrite_log(wr, which, &ver);
            read_back(wr, which, ver);
        }
        seq += n;
        if (chance(r, 20))
            scratch(wr);
        commit(wr, seq);
    } else if (kind <= 75) {
        /* Large: far more than a 100 KiB cache; rows of the beginning (spilled) changed
         * again and read back; maybe a savepoint rolled back in the middle. */
        int n = rnd_in(r, 20, MAX_TX_ROWS);
        int vers[MAX_TX_ROWS] = {0};
        for (int i = 0; i < n; i++) {
            insert_log(wr, seq + i, 0, 0, random_plen(wr));
            if (chance(r, 8))
                transfer(wr, 0);
            if (chance(r, 3))
                scratch(wr);
        }
        meanwhile_the_other(wr);
        /* Rolled back to a savepoint after spilling: see savepoint_bug(). */
        int whole_rollback = 0;
        if (chance(r, 25)) {
            savepoint_rolled_back(wr, seq + n, 120);
            whole_rollback = savepoint_bug();
        }
        for (int k = rnd_in(r, 1, 12); k > 0; k--) {
            int i = chance(r, 70) ? rnd_in(r, 0, n / 4) : rnd_in(r, 0, n - 1);
            rewrite_log(wr, seq + i, &vers[i]);
            if (chance(r, 50))
                read_back(wr, seq + i, vers[i]);
        }
        for (int i = rnd_in(r, 1, 5); i > 0; i--)
            transfer(wr, 0);
        read_back(wr, seq, vers[0]);
        seq += n;
        add(&wr->sh->large, 1);
        if (whole_rollback)
            rollback(wr);
        else
            commit(wr, seq);
    } else if (kind <= 85) {
        /* A savepoint rolled back, then the same seqs for real: small enough not to spill on
         * a cache of 40 pages or more (see savepoint_bug()). */
        int kib = wr->s_cache ? wr->s_cache : 2000;
        int can_spill = kib * 1024 / wr->sh->page_size < 40; /* pages in the cache */
        transfer(wr, 0);
        savepoint_rolled_back(wr, seq, savepoint_bug() && !can_spill ? 3 : 120);
        int n = rnd_in(r, 1, 8);
        for (int i = 0; i < n; i++)
            insert_log(wr, seq + i, 0, 0, random_plen(wr));
        seq += n;
        transfer(wr, 0);
        if (savepoint_bug() && can_spill)
            rollback(wr);
        else
            commit(wr, seq);
    } else if (kind <= 95) {
        /* The whole transaction rolled back, small or spilling. */
        doomed_work(wr, seq, chance(r, 40) ? rnd_in(r, 20, MAX_TX_ROWS) : rnd_in(r, 1, 6));
        meanwhile_the_other(wr);
        rollback(wr);
    } else {
        for (int i = rnd_in(r, 1, 6); i > 0; i--)
            scratch(wr);
        transfer(wr, 0);
        commit(wr, seq);
    }
}

static void count_shim(writer *wr)
{
    hd_sqlite_vfs_stats now;
    hd_sqlite_vfs_stats_read(&now);
    add(&wr->sh->wal_in, now.wal_writes_in - wr->seen.wal_writes_in);
    add(&wr->sh->wal_out, now.wal_writes_out - wr->seen.wal_writes_out);
    wr->seen = now;
}

static _Noreturn void writer_main(shared *sh, const char *db, int coalesce, int w, uint64_t seed)
{
    writer *wr = calloc(1, sizeof *wr);
    if (wr == NULL)
        _exit(4);
    wr->sh = sh;
    wr->db = db;
    wr->coalesce = coalesce;
    wr->w = w;
    wr->rng = seed;
    hd_sqlite_vfs_stats_read(&wr->seen);
    open_conns(wr);
    while (!atomic_load(&sh->stop)) {
        one_transaction(wr);
        count_shim(wr);
        if (chance(&wr->rng, 1)) {
            /* A crash right after a commit returned (or a rollback). */
            add(&sh->self_kills, 1);
            kill(getpid(), SIGKILL);
        }
        if (chance(&wr->rng, 3)) {
            /* A checkpoint of the writer's own, through its connection: one that takes the
             * write lock unless passive_checkpoints(). */
            static const char *const modes[] = {
                "PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA wal_checkpoint(FULL)",
                "PRAGMA wal_checkpoint(RESTART)", "PRAGMA wal_checkpoint(TRUNCATE)"};
            hd_rows *rows = NULL;
            hd_error err;
            int rc =
                hd_store_query(wr->s, modes[rnd_in(&wr->rng, passive_checkpoints() ? 0 : 1, 3)],
                               NULL, 0, &rows, &err);
            hd_rows_free(rows);
            if (rc < 0 && rc != HD_EBUSY)
                die(wr, "checkpoint", rc, &err);
            add(&sh->checkpoints, 1);
        }
        if (chance(&wr->rng, 2)) {
            close_conns(wr);
            open_conns(wr);
            add(&sh->reopens, 1);
        }
        if (chance(&wr->rng, 30))
            sleep_us(rnd_in(&wr->rng, 0, 500));
    }
    close_conns(wr);
    count_shim(wr);
    free(wr);
    _exit(0);
}

/* ---- the checker: checkpoints and snapshots (a child process) -------------------------- */

static const char CHECK_SQL[] =
    "SELECT (SELECT SUM(balance) FROM accounts), (SELECT COUNT(*) FROM accounts),"
    " (SELECT COUNT(*) FROM log WHERE writer = 0 AND seq <= $1),"
    " (SELECT COUNT(DISTINCT seq) FROM log WHERE writer = 0 AND seq <= $1),"
    " (SELECT COUNT(*) FROM log WHERE writer = 1 AND seq <= $2),"
    " (SELECT COUNT(DISTINCT seq) FROM log WHERE writer = 1 AND seq <= $2),"
    " (SELECT COUNT(*) FROM log WHERE writer = 2 AND seq <= $3),"
    " (SELECT COUNT(DISTINCT seq) FROM log WHERE writer = 2 AND seq <= $3),"
    " (SELECT COALESCE(MAX(seq), 0) FROM log WHERE writer = 0),"
    " (SELECT COALESCE(MAX(seq), 0) FROM log WHERE writer = 1),"
    " (SELECT COALESCE(MAX(seq), 0) FROM log WHERE writer = 2)";

#define CHECK_COLUMNS 11

/* got: sum, accounts, then count and distinct count for each writer, then the highest seq
 * of each. What a reader saw was committed, and must survive a crash too (verify()). */
static void judge(shared *sh, const char *how, const int64_t *last, const int64_t *got)
{
    for (int w = 0; w < NWRITERS; w++) {
        int64_t was = atomic_load(&sh->seen[w]);
        while (got[2 + 2 * NWRITERS + w] > was &&
               !atomic_compare_exchange_weak(&sh->seen[w], &was, got[2 + 2 * NWRITERS + w])) {
        }
    }
    if (got[0] != TOTAL || got[1] != NACCOUNTS)
        failure(sh, "%s: total %" PRId64 " over %" PRId64 " accounts, expected %" PRId64 " over %d",
                how, got[0], got[1], TOTAL, NACCOUNTS);
    for (int w = 0; w < NWRITERS; w++)
        if (got[2 + 2 * w] != last[w] || got[3 + 2 * w] != last[w])
            failure(sh,
                    "%s: writer %d had committed seqs 1..%" PRId64 " before the snapshot;"
                    " it holds %" PRId64 " rows (%" PRId64 " distinct) with seq <= %" PRId64,
                    how, w, last[w], got[2 + 2 * w], got[3 + 2 * w], last[w]);
}

static void check_through_store(shared *sh, hd_store *s)
{
    int64_t last[NWRITERS], got[CHECK_COLUMNS];
    for (int w = 0; w < NWRITERS; w++)
        last[w] = atomic_load(&sh->last[w]);
    hd_value p[NWRITERS];
    for (int w = 0; w < NWRITERS; w++)
        p[w] = hd_value_int(last[w]);
    hd_rows *r = NULL;
    hd_error err;
    int rc = hd_store_query(s, CHECK_SQL, p, NWRITERS, &r, &err);
    if (rc == HD_EBUSY)
        return;
    if (rc < 0) {
        failure(sh, "checker: %s: %s", hd_err_name(rc), err.text);
        return;
    }
    for (int i = 0; i < CHECK_COLUMNS; i++)
        got[i] = hd_rows_int(r, 0, (size_t)i);
    hd_rows_free(r);
    judge(sh, "checker (shim)", last, got);
    add(&sh->checks, 1);
}

/* The integer a statement of a plain connection returns; ?1 and ?2 (when there) are a and b. */
static int64_t plain_int(sqlite3 *c, const char *sql, int64_t a, int64_t b, int *rc)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    *rc = sqlite3_prepare_v2(c, sql, -1, &st, NULL);
    if (*rc == SQLITE_OK) {
        if (sqlite3_bind_parameter_count(st) >= 1)
            sqlite3_bind_int64(st, 1, a);
        if (sqlite3_bind_parameter_count(st) >= 2)
            sqlite3_bind_int64(st, 2, b);
        *rc = sqlite3_step(st);
        if (*rc == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return v;
}

/* The same, through SQLite's own VFS, in a read transaction of several statements. */
static void check_plain(shared *sh, sqlite3 *c)
{
    int64_t last[NWRITERS], got[CHECK_COLUMNS];
    for (int w = 0; w < NWRITERS; w++)
        last[w] = atomic_load(&sh->last[w]);
    int rc = sqlite3_exec(c, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        got[0] = plain_int(c, "SELECT SUM(balance) FROM accounts", 0, 0, &rc);
        if (rc == SQLITE_OK)
            got[1] = plain_int(c, "SELECT COUNT(*) FROM accounts", 0, 0, &rc);
        for (int w = 0; rc == SQLITE_OK && w < NWRITERS; w++) {
            got[2 + 2 * w] = plain_int(
                c, "SELECT COUNT(*) FROM log WHERE writer = ?1 AND seq <= ?2", w, last[w], &rc);
            if (rc == SQLITE_OK)
                got[3 + 2 * w] = plain_int(
                    c, "SELECT COUNT(DISTINCT seq) FROM log WHERE writer = ?1 AND seq <= ?2", w,
                    last[w], &rc);
        }
        for (int w = 0; rc == SQLITE_OK && w < NWRITERS; w++)
            got[2 + 2 * NWRITERS + w] =
                plain_int(c, "SELECT COALESCE(MAX(seq), 0) FROM log WHERE writer = ?1", w, 0, &rc);
        sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
    }
    if ((rc & 0xff) == SQLITE_BUSY)
        return;
    if (rc != SQLITE_OK) {
        failure(sh, "checker (plain): %s", sqlite3_errmsg(c));
        return;
    }
    judge(sh, "checker (plain)", last, got);
    add(&sh->plain_checks, 1);
}

static _Noreturn void checker_main(shared *sh, const char *db, int coalesce, uint64_t seed)
{
    uint64_t r = seed;
    char url[700];
    /* A long wait for the write lock: a FULL, RESTART or TRUNCATE checkpoint that does not
     * get it in time goes on as a PASSIVE one (see passive_checkpoints()). */
    snprintf(url, sizeof url, "sqlite://%s?busy_timeout=20000%s%s", db,
             chance(&r, 50) ? "&turns=off" : "", coalesce ? "" : "&coalesce=off");
    hd_store *s = NULL;
    hd_error err;
    int rc;
    for (int tries = 0; (rc = hd_store_open(url, &s, &err)) == HD_EBUSY && tries < 100; tries++)
        sleep_us(20000);
    if (rc < 0) {
        failure(sh, "checker: open: %s: %s", hd_err_name(rc), err.text);
        _exit(3);
    }
    hd_store_wait_in_line(s, NULL); /* with the turns: writers stand aside for it */
    sqlite3 *c = NULL;
    if (sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        failure(sh, "checker: plain open: %s", sqlite3_errmsg(c));
        _exit(3);
    }
    sqlite3_busy_timeout(c, 2000);
    static const char *const modes[] = {
        "PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA wal_checkpoint(FULL)",
        "PRAGMA wal_checkpoint(RESTART)", "PRAGMA wal_checkpoint(TRUNCATE)"};
    while (!atomic_load(&sh->stop)) {
        sleep_us(rnd_in(&r, 2000, 40000));
        int what = rnd_in(&r, 1, 100);
        if (what <= 35) {
            hd_rows *rows = NULL;
            rc = hd_store_query(s, modes[rnd_in(&r, passive_checkpoints() ? 0 : 1, 3)], NULL, 0,
                                &rows, &err);
            hd_rows_free(rows);
            if (rc < 0 && rc != HD_EBUSY)
                failure(sh, "checker: checkpoint: %s: %s", hd_err_name(rc), err.text);
            add(&sh->checkpoints, 1);
        } else if (what <= 70) {
            check_through_store(sh, s);
        } else {
            check_plain(sh, c);
        }
    }
    sqlite3_close(c);
    hd_store_close(s);
    _exit(0);
}

/* ---- the parent ------------------------------------------------------------------------ */

typedef struct scenario {
    const char *label;
    int coalesce;
    uint64_t rng;
    char *dir;
    char db[600];
    shared *sh;
    pid_t writer[NWRITERS];
    pid_t checker;
    unsigned incarnations;
    int kills, epochs;
    int64_t rows; /* log rows at the last verification */
} scenario;

__attribute__((format(printf, 2, 3))) static void parent_failure(scenario *sc, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    failure(sc->sh, "%s: %s", sc->label, msg);
}

static pid_t spawn(scenario *sc, int w) /* w < 0: the checker */
{
    uint64_t seed = rnd(&sc->rng);
    sc->incarnations++;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        parent_failure(sc, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (w < 0)
            checker_main(sc->sh, sc->db, sc->coalesce, seed);
        writer_main(sc->sh, sc->db, sc->coalesce, w, seed);
    }
    return pid;
}

/* A child is gone: SIGKILL (ours or its own) is expected; exit 0 after a stop; anything
 * else is a failure (a writer or the checker reported why). */
static void judge_exit(scenario *sc, const char *who, int status, int stopping)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        return;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && stopping)
        return;
    if (WIFSIGNALED(status))
        parent_failure(sc, "%s died of signal %d", who, WTERMSIG(status));
    else
        parent_failure(sc, "%s exited with status %d", who, WEXITSTATUS(status));
}

/* Restart whoever died on its own (a self-kill after a commit, or a failure). */
static void reap(scenario *sc)
{
    int status;
    for (int w = 0; w < NWRITERS; w++)
        if (sc->writer[w] > 0 && waitpid(sc->writer[w], &status, WNOHANG) == sc->writer[w]) {
            judge_exit(sc, "a writer", status, 0);
            sc->writer[w] = spawn(sc, w);
        }
    if (sc->checker > 0 && waitpid(sc->checker, &status, WNOHANG) == sc->checker) {
        judge_exit(sc, "the checker", status, 0);
        sc->checker = spawn(sc, -1);
    }
}

static void kill_and_wait(scenario *sc, pid_t *pid, const char *who)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGKILL);
    int status;
    int64_t t0 = now_ms();
    if (waitpid(*pid, &status, 0) == *pid)
        judge_exit(sc, who, status, 0);
    if (getenv("HD_STRESS_VERBOSE") != NULL && now_ms() - t0 > 50)
        print_message("%s: %s took %" PRId64 " ms to die\n", sc->label, who, now_ms() - t0);
    *pid = -1;
}

/* End of an epoch: everyone killed at once, or asked to stop (their connections close). */
static void stop_all(scenario *sc, int gently)
{
    pid_t *all[NWRITERS + 1];
    for (int w = 0; w < NWRITERS; w++)
        all[w] = &sc->writer[w];
    all[NWRITERS] = &sc->checker;
    if (!gently) {
        for (int i = 0; i <= NWRITERS; i++)
            if (*all[i] > 0)
                kill(*all[i], SIGKILL);
        for (int i = 0; i <= NWRITERS; i++)
            kill_and_wait(sc, all[i], i < NWRITERS ? "a writer" : "the checker");
        return;
    }
    atomic_store(&sc->sh->stop, 1);
    int64_t give_up = now_ms() + STOP_WAIT_MS;
    for (int i = 0; i <= NWRITERS; i++) {
        int status;
        while (*all[i] > 0) {
            pid_t got = waitpid(*all[i], &status, WNOHANG);
            if (got == *all[i]) {
                judge_exit(sc, i < NWRITERS ? "a writer" : "the checker", status, 1);
                *all[i] = -1;
            } else if (now_ms() > give_up) {
                parent_failure(sc, "a child did not stop within %d ms", STOP_WAIT_MS);
                kill_and_wait(sc, all[i], "a stuck child");
            } else {
                sleep_us(2000);
            }
        }
    }
    atomic_store(&sc->sh->stop, 0);
}

/* Everything stopped: a plain connection (SQLite's own VFS), the first one to open the file,
 * recovers the WAL from the file alone; then every invariant is checked. Read-only, so that
 * it neither checkpoints nor deletes the WAL when it closes: the files stay as the crash left
 * them, for the next epoch and for a post-mortem when a check fails. */
static void verify(scenario *sc)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(sc->db, &c, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        parent_failure(sc, "verify: open: %s", sqlite3_errmsg(c));
        sqlite3_close(c);
        return;
    }
    sqlite3_busy_timeout(c, 10000);
    int shown = 0;
    if (sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            if (t == NULL || strcmp(t, "ok") != 0) {
                if (shown++ < 8)
                    parent_failure(sc, "epoch %d: integrity_check: %s", sc->epochs,
                                   t ? t : "(null)");
            }
        }
        if (rc != SQLITE_DONE)
            parent_failure(sc, "epoch %d: integrity_check: %s", sc->epochs, sqlite3_errmsg(c));
    } else {
        parent_failure(sc, "epoch %d: integrity_check: %s", sc->epochs, sqlite3_errmsg(c));
    }
    sqlite3_finalize(st);

    int rc, rc2;
    int64_t sum = plain_int(c, "SELECT SUM(balance) FROM accounts", 0, 0, &rc);
    int64_t accounts = plain_int(c, "SELECT COUNT(*) FROM accounts", 0, 0, &rc2);
    if (rc != SQLITE_OK || rc2 != SQLITE_OK || sum != TOTAL || accounts != NACCOUNTS)
        parent_failure(sc, "epoch %d: total %" PRId64 " over %" PRId64 " accounts (%s)", sc->epochs,
                       sum, accounts, sqlite3_errmsg(c));

    /* Every writer: seq 1, 2, 3, ... exactly once, doomed none, padding as written. */
    int64_t expect[NWRITERS] = {1, 1, 1};
    int64_t rows = 0;
    char pad[MAX_PAD + 1];
    shown = 0;
    st = NULL;
    if (sqlite3_prepare_v2(c,
                           "SELECT writer, seq, ver, doomed, plen, pad FROM log"
                           " ORDER BY writer, seq, id",
                           -1, &st, NULL) != SQLITE_OK) {
        parent_failure(sc, "verify: %s", sqlite3_errmsg(c));
    } else {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            rows++;
            int w = sqlite3_column_int(st, 0);
            int64_t seq = sqlite3_column_int64(st, 1);
            int ver = sqlite3_column_int(st, 2);
            int doomed = sqlite3_column_int(st, 3);
            int plen = sqlite3_column_int(st, 4);
            const char *text = (const char *)sqlite3_column_text(st, 5);
            char what[200] = "";
            if (w < 0 || w >= NWRITERS) {
                snprintf(what, sizeof what, "a row of writer %d", w);
            } else {
                if (doomed)
                    snprintf(what, sizeof what, "writer %d seq %" PRId64 ": a rolled-back row", w,
                             seq);
                else if (seq < expect[w])
                    snprintf(what, sizeof what, "writer %d seq %" PRId64 ": twice", w, seq);
                else if (seq > expect[w])
                    snprintf(what, sizeof what, "writer %d: seqs %" PRId64 "..%" PRId64 " missing",
                             w, expect[w], seq - 1);
                if (seq >= expect[w])
                    expect[w] = seq + 1;
                if (what[0] == '\0' && (plen < MIN_PAD || plen > MAX_PAD || text == NULL ||
                                        (make_pad(pad, w, seq, ver, plen), strcmp(pad, text) != 0)))
                    snprintf(what, sizeof what,
                             "writer %d seq %" PRId64 " ver %d: padding of %d bytes differs", w,
                             seq, ver, plen);
            }
            if (what[0] != '\0' && shown++ < 8)
                parent_failure(sc, "epoch %d: %s", sc->epochs, what);
            else if (what[0] != '\0')
                atomic_fetch_add(&sc->sh->failures, 1); /* counted, not printed */
        }
        if (rc != SQLITE_DONE)
            parent_failure(sc, "verify: log: %s", sqlite3_errmsg(c));
    }
    sqlite3_finalize(st);
    for (int w = 0; w < NWRITERS; w++) {
        int64_t last = atomic_load(&sc->sh->last[w]);
        if (expect[w] - 1 < last)
            parent_failure(sc,
                           "epoch %d: writer %d: commits up to seq %" PRId64
                           " returned, only 1..%" PRId64 " survived",
                           sc->epochs, w, last, expect[w] - 1);
        int64_t seen = atomic_load(&sc->sh->seen[w]);
        if (expect[w] - 1 < seen)
            parent_failure(sc,
                           "epoch %d: writer %d: a reader saw seq %" PRId64 ", only 1..%" PRId64
                           " survived",
                           sc->epochs, w, seen, expect[w] - 1);
    }
    sc->rows = rows;
    if (sqlite3_close(c) != SQLITE_OK)
        parent_failure(sc, "verify: close: %s", sqlite3_errmsg(c));
}

static void create_schema(scenario *sc)
{
    /* The page size first (a plain connection, before the WAL): frames of 1 KiB to 64 KiB
     * fall differently into the shim's 64 KiB buffer; 64 KiB pages do not fit in it. */
    static const int sizes[] = {1024, 4096, 4096, 16384, 65536};
    sc->sh->page_size = sizes[rnd_in(&sc->rng, 0, 4)];
    sqlite3 *c = NULL;
    char sql[100];
    snprintf(sql, sizeof sql, "PRAGMA page_size=%d; CREATE TABLE first (x)", sc->sh->page_size);
    assert_int_equal(SQLITE_OK, sqlite3_open(sc->db, &c));
    assert_int_equal(SQLITE_OK, sqlite3_exec(c, sql, NULL, NULL, NULL));
    sqlite3_close(c);
    char url[700];
    snprintf(url, sizeof url, "sqlite://%s?turns=off%s", sc->db,
             sc->coalesce ? "" : "&coalesce=off");
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    static const char *const ddl[] = {
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL,"
        " pad TEXT NOT NULL)",
        "CREATE TABLE log (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL,"
        " seq INTEGER NOT NULL, ver INTEGER NOT NULL, doomed INTEGER NOT NULL,"
        " plen INTEGER NOT NULL, pad TEXT NOT NULL)",
        "CREATE INDEX log_writer_seq ON log (writer, seq)",
        "CREATE TABLE scratch (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL,"
        " body BLOB NOT NULL)",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
        assert_hd_err(HD_OK, hd_store_exec(s, ddl[i], NULL, 0, &err) < 0 ? err.code : HD_OK, &err);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    for (int i = 1; i <= NACCOUNTS; i++) {
        hd_value p[] = {hd_value_int(i), hd_value_int(START_BALANCE)};
        assert_int_equal(1, hd_store_exec(s,
                                          "INSERT INTO accounts (id, balance, pad)"
                                          " VALUES ($1, $2, printf('%.100c', 'p'))",
                                          p, 2, &err));
    }
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    hd_store_close(s);
}

static uint64_t base_seed(void)
{
    const char *env = getenv("HD_STRESS_SEED");
    if (env != NULL && *env != '\0')
        return strtoull(env, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
           ((uint64_t)getpid() << 32);
}

static int budget_ms(const char *name, int dflt)
{
    const char *env = getenv(name);
    long v = env != NULL ? strtol(env, NULL, 10) : 0;
    return v > 0 ? (int)v : dflt;
}

static void run_scenario(const char *label, int coalesce, int ms)
{
    scenario sc = {.label = label, .coalesce = coalesce};
    uint64_t seed = base_seed();
    sc.rng = seed;
    print_message("%s: seed %" PRIu64 " (HD_STRESS_SEED=%" PRIu64 " repeats the choices), %d ms\n",
                  label, seed, seed, ms);
    sc.sh = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sc.sh != MAP_FAILED);
    memset(sc.sh, 0, sizeof(shared));
    sc.dir = hd_test_tmpdir("vfsstress");
    snprintf(sc.db, sizeof sc.db, "%s/s.db", sc.dir);
    create_schema(&sc);
    print_message("%s: page size %d\n", label, sc.sh->page_size);

    /* The time given, and at least MIN_COMMITS commits (valgrind, a loaded machine), within
     * HARD_LIMIT times the time given. */
    int64_t start = now_ms(), end = start + ms, hard_end = start + (int64_t)HARD_LIMIT * ms;
    while (atomic_load(&sc.sh->failures) == 0 && now_ms() < hard_end &&
           (now_ms() < end || atomic_load(&sc.sh->commits) < MIN_COMMITS)) {
        for (int w = 0; w < NWRITERS; w++)
            sc.writer[w] = spawn(&sc, w);
        sc.checker = spawn(&sc, -1);
        int64_t epoch_end = now_ms() + rnd_in(&sc.rng, 700, 1500);
        if (epoch_end > end && now_ms() < end)
            epoch_end = end;
        while (now_ms() < epoch_end && atomic_load(&sc.sh->failures) == 0) {
            int64_t next_kill = now_ms() + rnd_in(&sc.rng, 40, 300);
            while (now_ms() < next_kill && now_ms() < epoch_end) {
                sleep_us(5000);
                reap(&sc);
            }
            if (now_ms() >= epoch_end)
                break;
            if (chance(&sc.rng, 10)) {
                kill_and_wait(&sc, &sc.checker, "the checker");
                sc.checker = spawn(&sc, -1);
            } else {
                int w = rnd_in(&sc.rng, 0, NWRITERS - 1);
                kill_and_wait(&sc, &sc.writer[w], "a writer");
                sc.writer[w] = spawn(&sc, w);
            }
            sc.kills++;
        }
        int gently = chance(&sc.rng, 30);
        int64_t t0 = now_ms();
        stop_all(&sc, gently);
        int64_t t1 = now_ms();
        sc.epochs++;
        verify(&sc);
        if (getenv("HD_STRESS_VERBOSE") != NULL)
            print_message("%s: epoch %d ended at %" PRId64 " ms: %s in %" PRId64
                          " ms, verified in %" PRId64 " ms\n",
                          label, sc.epochs, t0 - start, gently ? "stopped" : "killed", t1 - t0,
                          now_ms() - t1);
    }
    shared *sh = sc.sh;
    print_message(
        "%s: %d epochs, %d kills, %u processes, %" PRId64 " log rows;"
        " commits %" PRIu64 " (large %" PRIu64 "), rollbacks %" PRIu64
        ", savepoints rolled back %" PRIu64 ", rows changed again %" PRIu64 ", self-kills %" PRIu64
        ", reopens %" PRIu64 ", busy %" PRIu64 "; checks %" PRIu64 " shim + %" PRIu64
        " plain, checkpoints %" PRIu64 "; WAL writes %" PRIu64 " in, %" PRIu64 " out\n",
        label, sc.epochs, sc.kills, sc.incarnations, sc.rows, atomic_load(&sh->commits),
        atomic_load(&sh->large), atomic_load(&sh->rollbacks), atomic_load(&sh->savepoints),
        atomic_load(&sh->rewrites), atomic_load(&sh->self_kills), atomic_load(&sh->reopens),
        atomic_load(&sh->busy), atomic_load(&sh->checks), atomic_load(&sh->plain_checks),
        atomic_load(&sh->checkpoints), atomic_load(&sh->wal_in), atomic_load(&sh->wal_out));
    int failures = atomic_load(&sh->failures);
    char why[600];
    snprintf(why, sizeof why, "%s", sh->why);
    if (failures == 0) {
        /* The shim was there (and gathered, when frames fit in its buffer), or it was not. */
        uint64_t in = atomic_load(&sh->wal_in), out = atomic_load(&sh->wal_out);
        if (coalesce && (in == 0 || (sh->page_size < HD_SQLITE_VFS_BUFFER && out >= in))) {
            failures++;
            snprintf(why, sizeof why,
                     "the shim gathered nothing: %" PRIu64 " WAL writes in, %" PRIu64 " out", in,
                     out);
        }
        if (!coalesce && atomic_load(&sh->wal_in) != 0) {
            failures++;
            snprintf(why, sizeof why, "coalesce=off, and still the shim saw writes");
        }
        if (atomic_load(&sh->commits) < MIN_COMMITS) {
            failures++;
            snprintf(why, sizeof why, "fewer than %d commits in %d ms", MIN_COMMITS,
                     HARD_LIMIT * ms);
        }
    }
    munmap(sh, sizeof(shared));
    if (failures == 0)
        hd_test_rmtree(sc.dir);
    else
        print_error("%s: %d failures (seed %" PRIu64 "), first: %s; the files are kept in %s\n",
                    label, failures, seed, why, sc.dir);
    free(sc.dir);
    assert_int_equal(0, failures);
}

static void commits_survive_kills_through_the_shim(void **state)
{
    (void)state;
    run_scenario("shim", 1, budget_ms("HD_STRESS_MS", SHIM_MS));
}

static void commits_survive_kills_without_the_shim(void **state)
{
    (void)state;
    run_scenario("control (coalesce=off)", 0, budget_ms("HD_STRESS_CONTROL_MS", CONTROL_MS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commits_survive_kills_through_the_shim),
        cmocka_unit_test(commits_survive_kills_without_the_shim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
