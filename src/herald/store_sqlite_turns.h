/* herald/store_sqlite_turns.h — SQLite's write lock handed to the writer that waits.
 *
 * SQLite's write lock is not a queue. A connection that finds it taken is told SQLITE_BUSY;
 * its busy handler sleeps and tries again, and nothing tells it when the lock is freed. A
 * writer that commits back to back (a service catching up after a disk stall, one event a
 * transaction) frees the lock for a few microseconds between its transactions and takes it
 * again before the sleeper wakes: the sleeper starves for as long as the burst lasts. That
 * was the relay's claim in issue 14's latency runs: the wake-up leg of the tail averaged
 * 23-50 ms while no single commit of the producer took more than 13-30 ms, and it followed
 * how far behind the producer had fallen (docs/bench.md, tenth pass).
 *
 * Turns are a small protocol between herald's own connections to one database file, in
 * threads or processes, through a 4 KiB file beside it ("<database>-hdturns", mapped
 * shared):
 *   - a connection that WAITS IN LINE (hd_store_wait_in_line: the relays) and finds the lock
 *     taken writes itself into a slot and sleeps on a futex instead of a timer. Every
 *     other writer polls, as it always did;
 *   - every commit of a connection that sees a slot taken wakes ONE sleeper (the kernel's
 *     futex queue: about the longest asleep), from sqlite3_wal_hook, which SQLite calls
 *     once the write lock is released: the waiter takes the gap the writer ahead leaves on
 *     its own, if there is one;
 *   - a writer about to START a write transaction, one that got its last lock without
 *     waiting (a writer in a burst, leaving no gap), STANDS ASIDE for a waiter that has
 *     waited HD_TURNS_PATIENCE_US: it sleeps on a second futex word until that waiter got
 *     the lock (at most HD_TURNS_YIELD_MAX_MS);
 *   - the waiter leaves its slot as soon as its statement got the lock (or gave up).
 * Why so narrow (docs/bench.md, tenth pass, has the runs): standing aside costs the writer
 * the waiter's wake-up, a scheduler's latency (up to a millisecond on a busy machine). When
 * every writer stood aside for every waiter, a producer that stood aside at once for each
 * claim and mark of its relay fell two seconds behind its 1,000 commits a second, and slots
 * for every writer made eight writers committing at once hand the lock round with a wake-up
 * each time: half the throughput, twice the CPU a transaction. With the rules above, a
 * patience of 1.5 ms gave the relay's claims a p99 6 ms lower than 3 ms did, and 0.5 ms no
 * lower than 1.5 but made the producer stand aside twice as often.
 * SQLite's lock stays the only thing that makes writes exclusive. The turns only decide who
 * tries first; a writer that does not know them (the sqlite3 shell, another program) is
 * waited for as before, by polling, and a broken or missing turns file only means polling.
 *
 * Known limits, on purpose:
 *   - Linux futexes; elsewhere the waiter polls (1 ms at most between tries, as before).
 *   - A slot whose process died is freed by the next writer that finds it (kill(pid, 0));
 *     a slot older than HD_TURNS_STALE_MS is not yielded to (a waiter stopped by a
 *     debugger does not hold the others back for longer than that, once).
 *   - HD_TURNS_SLOTS waiters at once; the next ones wait by polling.
 *   - The wake-ups come from the connection's WAL hook: a program that runs PRAGMA
 *     wal_autocheckpoint, or sqlite3_wal_hook, on a store's connection replaces it, and that
 *     connection's commits no longer wake anyone (its waits still work).
 *   - Whoever may write the file may fill its slots and make herald's writers stand aside
 *     (HD_TURNS_YIELD_MAX_MS a transaction at most): it may write the database too, and
 *     hold its lock, which delays them longer. The file gets the database's permissions.
 *   - Not for ":memory:" databases (one connection each: nobody to take turns with).
 *   - The file stays after the last connection closed (like a database's -wal file
 *     sometimes does); it holds no data, only who waits.
 *
 * Threads: one hd_turns per connection, used by that connection's thread; the shared
 * file is read and written with C11 atomics only.
 */
#ifndef HERALD_STORE_SQLITE_TURNS_H
#define HERALD_STORE_SQLITE_TURNS_H

#include <stdint.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_TURNS_SLOTS        60
#define HD_TURNS_PATIENCE_US  1500 /* a waiter is stood aside for once it waited this long */
#define HD_TURNS_YIELD_MAX_MS 5    /* the longest a new writer stands aside, per transaction */
#define HD_TURNS_STALE_MS     1000 /* a waiter older than this is not stood aside for */
#define HD_TURNS_POLL_US      1000 /* a waiter's longest sleep between two tries */

typedef struct hd_turns hd_turns;

/* The turns' file is the database's path with this suffix (hd_store_sqlite_remove deletes it). */
#define HD_TURNS_SUFFIX "-hdturns"

/* Open (creating it with the database file's permissions when missing) the turns file of
 * the database at db_path. *out = new (hd_turns_close), or NULL when turns are not possible
 * here (":memory:", a file that cannot be created or mapped, one that holds something else):
 * then the caller simply polls. Returns 0, or HD_ENOMEM. */
int hd_turns_open(const char *db_path, hd_turns **out, hd_error *err);
void hd_turns_close(hd_turns *t);

/* The connection's busy handler: the n-th call (from 0) of one wait for the lock. It sleeps
 * 50 us growing to HD_TURNS_POLL_US; a connection that waits in line (hd_turns_set_in_line)
 * takes a slot at its first call, dated since_ns (when the wait began: the busy handler
 * knows it), and its sleeps end at the next commit's wake-up. t may be NULL (a plain
 * sleep). */
void hd_turns_wait(hd_turns *t, int n, int64_t since_ns);

/* Whether this connection's waits take a slot (1), or only poll (0, the default):
 * hd_store_wait_in_line. t may be NULL. */
void hd_turns_set_in_line(hd_turns *t, int on);

/* The statement that waited got the lock, or gave up: leave the slot. Cheap when the
 * connection took none. t may be NULL. */
void hd_turns_done(hd_turns *t);

/* Before a write transaction starts (BEGIN IMMEDIATE, or a write statement outside one):
 * stand aside while another writer waits, at most HD_TURNS_YIELD_MAX_MS. One atomic load
 * when nobody waits. t may be NULL. */
void hd_turns_yield(hd_turns *t);

/* The connection committed or rolled back a write: wake the waiters, if any. One atomic
 * load when nobody waits. t may be NULL. */
void hd_turns_released(hd_turns *t);

/* For tests and the docs' figures: writers waiting now (slots taken, the dead ones too),
 * and how many times this connection stood aside / woke waiters since it opened. */
int hd_turns_waiting(const hd_turns *t);
uint64_t hd_turns_yields(const hd_turns *t);
uint64_t hd_turns_wakes(const hd_turns *t);
/* The time this connection stood aside, in all, in nanoseconds: what the turns cost it. */
int64_t hd_turns_aside_ns(const hd_turns *t);

/* For tests: take a slot as a waiter would, with the given pid (a dead process's to test
 * the cleanup) and start time (hd_clock_ns; 0 = now); hd_turns_done leaves it. Returns 0,
 * or HD_EBUSY when every slot is taken. */
int hd_turns_enter_as(hd_turns *t, int pid, int64_t since_ns);

#ifdef __cplusplus
}
#endif

#endif
