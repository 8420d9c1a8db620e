/* store_sqlite_vfs.c — a VFS shim that gathers the WAL's appends (store_sqlite_vfs.h).
 *
 * A shim file is our header followed by the default VFS's own file (szOsFile is the sum):
 * every method finds the real file there and calls it. Only a WAL file's writes differ:
 * they are gathered in buf while each one continues the last, and go down in one write at
 * the end of a commit frame, before any other call on the file, or when the next one does
 * not fit. Why each flush point is where it is: the header comment. */
#include "herald/store_sqlite_vfs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#define FRAME_HEADER 24 /* a WAL frame's header; bytes 4..7: database pages after a commit */

typedef struct shim_file shim_file;
struct shim_file {
    sqlite3_file base;  /* first: what SQLite holds */
    sqlite3_file *real; /* the default VFS's file, in the same allocation, after this */
    int wal;            /* opened with SQLITE_OPEN_WAL: its writes are gathered */
    shim_file *twin;    /* a WAL file's database file and the other way round (same
                           connection), while both are open; NULL otherwise */
    int after_commit;   /* the last write was a commit frame's header: flush after its page */
    unsigned char *buf; /* HD_SQLITE_VFS_BUFFER bytes, at the first write; NULL before */
    size_t len;         /* bytes gathered */
    sqlite3_int64 at;   /* the file offset of buf[0] */
};

#define REAL_OFFSET ((sizeof(shim_file) + 7) & ~(size_t)7)

static sqlite3_vfs shim_vfs;
static sqlite3_vfs *real_vfs; /* the default VFS when registering: every call goes there */

static _Atomic uint64_t writes_in, writes_out, commit_flushes, temp_files;

void hd_sqlite_vfs_stats_read(hd_sqlite_vfs_stats *out)
{
    out->wal_writes_in = atomic_load_explicit(&writes_in, memory_order_relaxed);
    out->wal_writes_out = atomic_load_explicit(&writes_out, memory_order_relaxed);
    out->commit_flushes = atomic_load_explicit(&commit_flushes, memory_order_relaxed);
    out->temp_files = atomic_load_explicit(&temp_files, memory_order_relaxed);
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- the gathering --------------------------------------------------------------------- */

/* Write what is gathered. The bytes are dropped either way: after a failure SQLite treats
 * its own writes as failed (the call that brought us here returns the code), and a retry of
 * a transaction writes its frames again. */
static int flush(shim_file *f)
{
    f->after_commit = 0;
    if (f->len == 0)
        return SQLITE_OK;
    size_t len = f->len;
    f->len = 0;
    count(&writes_out);
    return f->real->pMethods->xWrite(f->real, f->buf, (int)len, f->at);
}

static int shim_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
    shim_file *f = (shim_file *)file;
    if (!f->wal)
        return f->real->pMethods->xWrite(f->real, data, amt, off);
    count(&writes_in);
    int commit = f->after_commit; /* this write is the page of a commit frame */
    int rc;
    if (f->len > 0 &&
        (off != f->at + (sqlite3_int64)f->len || f->len + (size_t)amt > HD_SQLITE_VFS_BUFFER)) {
        if ((rc = flush(f)) != SQLITE_OK)
            return rc;
    }
    if (f->buf == NULL && amt < HD_SQLITE_VFS_BUFFER)
        f->buf = sqlite3_malloc(HD_SQLITE_VFS_BUFFER);
    const unsigned char *h = data;
    int commit_header = amt == FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
    if (f->buf == NULL || amt >= HD_SQLITE_VFS_BUFFER) {
        /* Too large to gather, or no memory for the buffer: write through, as "unix" would. */
        f->after_commit = commit_header;
        count(&writes_out);
        return f->real->pMethods->xWrite(f->real, data, amt, off);
    }
    if (f->len == 0)
        f->at = off;
    memcpy(f->buf + f->len, data, (size_t)amt);
    f->len += (size_t)amt;
    if (commit) {
        count(&commit_flushes);
        return flush(f);
    }
    f->after_commit = commit_header;
    return SQLITE_OK;
}

/* ---- the other methods: flush, then the real file's ------------------------------------ */

#define FLUSHED(f)                                                                                 \
    do {                                                                                           \
        int flush_rc_ = flush(f);                                                                  \
        if (flush_rc_ != SQLITE_OK)                                                                \
            return flush_rc_;                                                                      \
    } while (0)

static int shim_close(sqlite3_file *file)
{
    shim_file *f = (shim_file *)file;
    if (f->twin != NULL)
        f->twin->twin = NULL;
    int rc = flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    sqlite3_free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int shim_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xRead(f->real, out, amt, off);
}

static int shim_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xTruncate(f->real, size);
}

static int shim_sync(sqlite3_file *file, int flags)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xSync(f->real, flags);
}

static int shim_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xFileSize(f->real, size);
}

static int shim_lock(sqlite3_file *file, int level)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xLock(f->real, level);
}

static int shim_unlock(sqlite3_file *file, int level)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xUnlock(f->real, level);
}

static int shim_check_reserved(sqlite3_file *file, int *out)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int shim_file_control(sqlite3_file *file, int op, void *arg)
{
    shim_file *f = (shim_file *)file;
    FLUSHED(f);
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int shim_sector_size(sqlite3_file *file)
{
    shim_file *f = (shim_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int shim_device_characteristics(sqlite3_file *file)
{
    shim_file *f = (shim_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* The shared memory (the wal-index) belongs to the database file, never to a WAL file. Two
 * of its calls flush the connection's WAL (the twin), whatever the frames said:
 *   - xShmBarrier: SQLite calls it between the two copies of the wal-index header it writes
 *     to publish a commit. Whatever the WAL still holds goes down before anyone can see
 *     the commit: the commit frame's header rewritten last by walRewriteChecksums (a
 *     transaction that wrote a page to the WAL early and then changed it again), or a
 *     commit frame written through while its page was gathered.
 *   - releasing an exclusive lock (the write lock at the end of a write transaction, a
 *     checkpoint's): frames of a transaction that rolled back may still wait here, and
 *     once the lock is free another connection writes ITS frames at those offsets; written
 *     later, ours would overwrite them. Written now, while the lock is still held, they
 *     land beyond the last commit, where the next writer overwrites them.
 * Neither can return an error to the write that gathered the bytes: a failure there is the
 * same as a frame lost on a power cut with synchronous=normal (docs/modules/store_sqlite_vfs.md).
 * A real file without shared memory (a version 1 file) gets what SQLite would say of a
 * missing one. */
static void flush_twin(shim_file *f)
{
    if (f->twin != NULL && f->twin->len > 0)
        (void)flush(f->twin);
}

static int has_shm(const shim_file *f)
{
    return f->real->pMethods->iVersion >= 2 && f->real->pMethods->xShmMap != NULL;
}

static int shim_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **pp)
{
    shim_file *f = (shim_file *)file;
    if (!has_shm(f))
        return SQLITE_IOERR_SHMMAP;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, pp);
}

static int shim_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    shim_file *f = (shim_file *)file;
    if (!has_shm(f))
        return SQLITE_IOERR_SHMLOCK;
    if ((flags & SQLITE_SHM_UNLOCK) && (flags & SQLITE_SHM_EXCLUSIVE))
        flush_twin(f);
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void shim_shm_barrier(sqlite3_file *file)
{
    shim_file *f = (shim_file *)file;
    flush_twin(f);
    if (has_shm(f))
        f->real->pMethods->xShmBarrier(f->real);
}

static int shim_shm_unmap(sqlite3_file *file, int delete_flag)
{
    shim_file *f = (shim_file *)file;
    if (!has_shm(f))
        return SQLITE_OK;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int shim_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **pp)
{
    shim_file *f = (shim_file *)file;
    *pp = NULL;
    if (f->real->pMethods->iVersion < 3 || f->real->pMethods->xFetch == NULL)
        return SQLITE_OK; /* no mapping: SQLite reads instead */
    FLUSHED(f);
    return f->real->pMethods->xFetch(f->real, off, amt, pp);
}

static int shim_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    shim_file *f = (shim_file *)file;
    if (f->real->pMethods->iVersion < 3 || f->real->pMethods->xUnfetch == NULL)
        return SQLITE_OK;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods shim_methods = {
    .iVersion = 3,
    .xClose = shim_close,
    .xRead = shim_read,
    .xWrite = shim_write,
    .xTruncate = shim_truncate,
    .xSync = shim_sync,
    .xFileSize = shim_file_size,
    .xLock = shim_lock,
    .xUnlock = shim_unlock,
    .xCheckReservedLock = shim_check_reserved,
    .xFileControl = shim_file_control,
    .xSectorSize = shim_sector_size,
    .xDeviceCharacteristics = shim_device_characteristics,
    .xShmMap = shim_shm_map,
    .xShmLock = shim_shm_lock,
    .xShmBarrier = shim_shm_barrier,
    .xShmUnmap = shim_shm_unmap,
    .xFetch = shim_fetch,
    .xUnfetch = shim_unfetch,
};

/* ---- the VFS: open wraps, the rest is the default VFS's -------------------------------- */

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                     int *out_flags)
{
    (void)vfs;
    shim_file *f = (shim_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)((char *)f + REAL_OFFSET);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    /* SQLite calls xClose when pMethods is set, even after a failed open: be closable then
     * too, and only then. */
    f->base.pMethods = f->real->pMethods != NULL ? &shim_methods : NULL;
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    if (rc == SQLITE_OK && (flags & (SQLITE_OPEN_SUBJOURNAL | SQLITE_OPEN_TEMP_JOURNAL |
                                     SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TRANSIENT_DB)))
        count(&temp_files);
    if (rc == SQLITE_OK && f->wal && name != NULL) {
        /* The database file of this WAL, opened by the same connection through this VFS
         * before it (sqlite3_database_file_object: the pointer SQLite gave its xOpen). */
        sqlite3_file *db = sqlite3_database_file_object(name);
        if (db != NULL && db->pMethods == &shim_methods) {
            f->twin = (shim_file *)db;
            f->twin->twin = f;
        }
    }
    return rc;
}

static int shim_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int shim_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int shim_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *shim_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void shim_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, n, out);
}

static void (*shim_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, h, sym);
}

static void shim_dl_close(sqlite3_vfs *vfs, void *h)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, h);
}

static int shim_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int shim_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, us);
}

static int shim_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int shim_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0;
}

static int shim_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

/* The default VFS's system-call table ("unix": open, pread, pwrite...), so that a test can
 * replace a call through either name and inject faults below the shim. */
static int shim_set_syscall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
    (void)vfs;
    return real_vfs->xSetSystemCall(real_vfs, name, p);
}

static sqlite3_syscall_ptr shim_get_syscall(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xGetSystemCall(real_vfs, name);
}

static const char *shim_next_syscall(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xNextSystemCall(real_vfs, name);
}

static int register_rc = HD_ESTORE;
static char register_why[128] = "not registered";

static void register_once(void)
{
    sqlite3_vfs *dflt = sqlite3_vfs_find(NULL);
    if (dflt == NULL) {
        snprintf(register_why, sizeof register_why, "SQLite has no default VFS");
        return;
    }
    /* Version 3 methods (the system-call table) are forwarded; "unix" has them. */
    if (dflt->iVersion < 3) {
        snprintf(register_why, sizeof register_why,
                 "SQLite's default VFS \"%s\" is version %d: version 3 is needed", dflt->zName,
                 dflt->iVersion);
        return;
    }
    real_vfs = dflt;
    shim_vfs = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = (int)REAL_OFFSET + dflt->szOsFile,
        .mxPathname = dflt->mxPathname,
        .zName = HD_SQLITE_VFS_NAME,
        .xOpen = shim_open,
        .xDelete = shim_delete,
        .xAccess = shim_access,
        .xFullPathname = shim_full_pathname,
        .xDlOpen = shim_dl_open,
        .xDlError = shim_dl_error,
        .xDlSym = shim_dl_sym,
        .xDlClose = shim_dl_close,
        .xRandomness = shim_randomness,
        .xSleep = shim_sleep,
        .xCurrentTime = shim_current_time,
        .xGetLastError = shim_last_error,
        .xCurrentTimeInt64 = shim_current_time64,
        .xSetSystemCall = shim_set_syscall,
        .xGetSystemCall = shim_get_syscall,
        .xNextSystemCall = shim_next_syscall,
    };
    int rc = sqlite3_vfs_register(&shim_vfs, 0);
    if (rc != SQLITE_OK) {
        snprintf(register_why, sizeof register_why, "sqlite3_vfs_register: %s", sqlite3_errstr(rc));
        register_rc = rc == SQLITE_NOMEM ? HD_ENOMEM : HD_ESTORE;
        return;
    }
    register_rc = HD_OK;
}

int hd_sqlite_vfs_register(hd_error *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    if (register_rc < 0)
        return hd_error_set(err, register_rc, "cannot register the SQLite VFS \"%s\": %s",
                            HD_SQLITE_VFS_NAME, register_why);
    return HD_OK;
}
