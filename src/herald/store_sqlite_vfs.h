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
 *     non-zero "database size after commit"), before SQLite syncs or makes the transaction
 *     visible. A failure there fails the commit, as SQLite's own failed write would;
 *   - at the database file's xShmBarrier, which SQLite calls between the two copies of the
 *     wal-index header that publish a commit: whatever the WAL still holds (the commit
 *     frame's header rewritten last when SQLite recomputes the checksums of frames a
 *     transaction wrote early and changed again) is in the file before anyone sees it;
 *   - before an exclusive lock of the database file is released (the write lock at the
 *     end of a transaction): frames of a transaction that ROLLED BACK go down while it
 *     still holds the lock, beyond the last commit, and never later over another
 *     connection's frames at the same offsets;
 *   - before anything else is done with the file: a read (SQLite reading a page back, a
 *     checkpoint), a sync, a truncation, its size, a lock, a file control, its closing;
 *   - when the next write does not continue it (the WAL starting over at offset 0) or does
 *     not fit.
 * So a commit that returned, and a commit another connection or process can see, is in the
 * file exactly as without the shim; only frames of a transaction still running wait in
 * memory, and a crash loses only those, which recovery would ignore anyway. The two flushes
 * from the database file cannot hand an error back to SQLite (xShmBarrier returns nothing,
 * and SQLite ignores what an unlock returns): the one at the barrier writes bytes already
 * allocated in the file (an in-place rewrite), and the one at the unlock writes frames of no
 * commit. unit.store_sqlite_vfs has a case for each.
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
 *     and stable since 3.7.0. A SQLite writing frames differently would lose that first
 *     flush point and keep the barrier's, which then carries the whole commit (without a
 *     way to report a failed write).
 *   - The WAL finds its database file with sqlite3_database_file_object (SQLite 3.33 and
 *     later), both opened through this VFS by one connection.
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
 * them, how many of those were flushed because a commit frame ended, and how many
 * temporary files SQLite opened (statement journals that outgrew memory, sorters, temp
 * tables: hd_store_sqlite_open's temp_store=MEMORY keeps them in memory). */
typedef struct hd_sqlite_vfs_stats {
    uint64_t wal_writes_in;
    uint64_t wal_writes_out;
    uint64_t commit_flushes;
    uint64_t temp_files;
} hd_sqlite_vfs_stats;

/* Fill *out (borrowed) with the counters. */
void hd_sqlite_vfs_stats_read(hd_sqlite_vfs_stats *out);

#ifdef __cplusplus
}
#endif

#endif
