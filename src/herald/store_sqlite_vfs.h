/* herald/store_sqlite_vfs.h — SQLite's WAL appends gathered into large writes (a VFS shim).
 *
 * SQLite writes a transaction to its write-ahead log one frame at a time, and each frame
 * with TWO system calls: its 24-byte header, then the page (sqlite3WalFrames ->
 * walWriteOneFrame). A consumer committing 50 notifications writes about 60 frames: 120
 * pwrite calls, each paying the system call, the file system's write path and, for the
 * header, a partial page. On issue 14's machine one frame cost 3.7-3.9 us of CPU that way
 * and 0.4-0.5 us when the same bytes went down in 64 KiB writes (docs/bench.md, twelfth
 * pass, the micro-benchmark); herald's path writes about three frames a notification.
 *
 * The shim is a VFS (SQLite's operating-system interface, a table of function pointers:
 * sqlite3_vfs and sqlite3_io_methods) registered under HD_SQLITE_VFS_NAME on top of the
 * default one ("unix"). Every call goes straight down, except the writes to a "-wal" file:
 * a write that continues the previous one is copied into a buffer of HD_SQLITE_VFS_BUFFER
 * bytes instead, and the buffer goes down in one write
 *   - when the frame that COMMITS a transaction has been written (its header says so: a
 *     non-zero "database size after commit"), before SQLite makes the transaction visible
 *     to other connections in the wal-index and before it syncs. So a commit that
 *     returned, and a commit another connection or process can see, is in the file exactly
 *     as without the shim; only frames of a transaction still running wait in memory;
 *   - before anything else is done with the file: a read (SQLite reading a page back, a
 *     checkpoint), a sync, a truncation, its size, a lock, a file control, its closing;
 *   - when the next write does not continue it (the WAL starting over at offset 0) or does
 *     not fit.
 * A failed write of the buffer fails the SQLite call that caused it (SQLITE_IOERR_WRITE,
 * SQLITE_FULL), and SQLite handles it as the failure of its own write: the transaction is
 * not committed. A crash loses what was in the buffer: frames of a transaction that had
 * not committed, which recovery would ignore anyway.
 *
 * Every herald SQLite connection opens through it (store_sqlite.c), unless its URL says
 * coalesce=off. The database file, its -shm and the temporary files are not touched: reads
 * come from the page cache or the WAL and need no gathering.
 *
 * Known limits, on purpose:
 *   - One buffer per open WAL file, allocated at its first write and kept until it closes:
 *     HD_SQLITE_VFS_BUFFER of memory for each connection that writes (readers never
 *     allocate it).
 *   - The commit frame is recognised by SQLite's WAL format (a 24-byte frame header whose
 *     bytes 4..7 are not zero), documented at https://sqlite.org/fileformat2.html#walformat
 *     and stable since 3.7.0. A future SQLite writing frames differently would at worst make
 *     the shim write through: every other call flushes first.
 *   - The file's methods are version 3 (mmap of the database file, xFetch, is forwarded).
 *
 * Threads: the registration is done once, behind pthread_once; a file is used by one
 * connection, as SQLite does with its own files. The counters are C11 atomics.
 */
#ifndef HERALD_STORE_SQLITE_VFS_H
#define HERALD_STORE_SQLITE_VFS_H

#include <stdint.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_SQLITE_VFS_NAME   "herald"
#define HD_SQLITE_VFS_BUFFER (64 * 1024) /* bytes gathered per WAL file before a write */

/* Register the shim over SQLite's default VFS, once per process (later calls return what
 * the first did). Not made the default: a connection asks for it by name
 * (sqlite3_open_v2's zVfs, or "?vfs=herald" in a file: URI). Returns 0, or HD_ESTORE (no
 * default VFS, or SQLite refused the registration), HD_ENOMEM. */
int hd_sqlite_vfs_register(hd_error *err);

/* What the shim has done since the process started, over every file (for tests and the
 * benchmarks): the writes SQLite asked for on WAL files, the writes that went down for
 * them, and how many of those were flushed because a commit frame ended. */
typedef struct hd_sqlite_vfs_stats {
    uint64_t wal_writes_in;
    uint64_t wal_writes_out;
    uint64_t commit_flushes;
} hd_sqlite_vfs_stats;

/* Fill *out (borrowed) with the counters. */
void hd_sqlite_vfs_stats_read(hd_sqlite_vfs_stats *out);

#ifdef __cplusplus
}
#endif

#endif
