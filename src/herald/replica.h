/* herald/replica.h — stale-tolerant reads on a PostgreSQL standby, with read-your-writes.
 *
 * A streaming standby replays the primary's WAL a little later: milliseconds when all is
 * well, seconds under a write burst, without limit while it is down or its replay is
 * paused. Reading from it takes load off the primary, at a price: what it answers may be
 * old. This module decides, read by read, which server answers, so that the price stays
 * bounded and a caller never sees its own write go backwards.
 *
 *     hd_replica_open(primary, getenv("HD_DATABASE_READ_URL"), &opts, &r, &err);
 *     ... a write, committed on primary ...
 *     hd_replica_wrote(r, user_id, &lsn, &err);        remember where the primary's WAL is
 *     ...
 *     hd_replica_route why;
 *     hd_store *s = hd_replica_for_read(r, user_id, 0, &why);   primary or standby
 *     ... SELECT on s (outside any transaction) ...
 *
 * Which reads may go there. Only reads that may be stale: a user's notification history,
 * their preferences as shown to them, a page of the users list. Writes, and every read
 * inside a unit of work (the read that decides a write), stay on the primary: a decision
 * taken on stale data is a lost update. The caller chooses; this module only routes.
 *
 * The rules, checked in this order for every read:
 *   1. no standby configured (read_url NULL or "")       primary   HD_REPLICA_NO_STANDBY
 *   2. the standby failed (cannot connect, a query failed) primary   HD_REPLICA_DOWN
 *      for retry_ms, then the next read tries it again (the store reconnects): a standby
 *      that comes back is used again without a restart.
 *   3. its replay lag > max_lag_ms                          primary   HD_REPLICA_LAGGING
 *   4. read-your-writes: the subject (a user id; NULL = "anything written through this
 *      handle") has a write whose commit LSN the standby has not replayed yet
 *                                                           primary   HD_REPLICA_OWN_WRITE
 *   5. otherwise                                            standby   HD_REPLICA_STANDBY
 * 2 and 3 are fallbacks (the standby should have answered): the stats count them, and the
 * services export them as a metric.
 *
 * Read-your-writes. After the caller's write commits, hd_replica_wrote asks the primary for
 * pg_current_wal_lsn(): every commit before that call, including the caller's, is at or
 * before this WAL position. The position is kept per subject in a small table of a fixed
 * size (options.subjects slots, direct-mapped by a hash of the subject). A read of that
 * subject goes to the standby only once its pg_last_wal_replay_lsn() has reached the
 * position, and the slot is emptied then. When two subjects fall on one slot, the one
 * pushed out raises a floor that EVERY subject must reach: a collision sends more reads to
 * the primary for a moment, never one backwards. So the memory is bounded whatever the
 * number of users and the rule never breaks.
 *
 * How stale a standby read can be. The lag is measured at most every check_ms (one query
 * on each server): 0 when the standby has replayed the primary's current WAL position, else
 * now() - pg_last_xact_replay_timestamp() on the standby (the age of the last commit it
 * replayed: an upper bound of how far behind it is). So a read served by the standby misses
 * at most the commits of the last max_lag_ms + check_ms (other users' writes, and writes of
 * this user through ANOTHER instance — see the limit below); the caller's own writes through
 * this handle are never missing.
 *
 * Known limits (said here so nobody relies on them):
 *   - The subject table is per handle, so per process: a user whose write went through
 *     instance A and whose read lands on instance B may read stale (bounded as above).
 *     The way out is a client token: hd_replica_wrote returns the LSN; a service can hand it
 *     to the client (a response header) and take it back on the next read (min_lsn).
 *   - The first lag check after a long idle time, with a commit in flight at that very
 *     moment, sees an old pg_last_xact_replay_timestamp and may call the standby lagging
 *     for one check_ms (reads go to the primary: safe, not stale).
 *   - A standby that was promoted (no longer in recovery) is still read from; promotion is
 *     an operator's act that should change HD_DATABASE_READ_URL.
 *
 * Threads: a handle belongs to one thread at a time, like the stores it holds (the primary
 * store is borrowed and used only inside these calls, under the caller's lock).
 * hd_replica_stats_get alone may be called from any thread at any time (atomics): a
 * metrics gauge reads it while a request runs.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_REPLICA_H
#define HERALD_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_REPLICA_MAX_LAG_DEFAULT  5000 /* ms */
#define HD_REPLICA_CHECK_DEFAULT    1000 /* ms: the lag measured is at most this old */
#define HD_REPLICA_RETRY_DEFAULT    2000 /* ms: how long a failed standby is left alone */
#define HD_REPLICA_SUBJECTS_DEFAULT 1024 /* slots of the read-your-writes table */
#define HD_REPLICA_SUBJECTS_MAX     (1 << 20)
#define HD_REPLICA_LSN_MAX          17 /* "FFFFFFFF/FFFFFFFF" */

typedef struct hd_replica hd_replica;

typedef struct hd_replica_options {
    int64_t max_lag_ms; /* 0 = default; reads fall back to the primary above it */
    int64_t check_ms;   /* 0 = default; how often the lag is measured */
    int64_t retry_ms;   /* 0 = default; a failed standby is tried again after this */
    size_t subjects;    /* 0 = default; slots of the read-your-writes table */
} hd_replica_options;

typedef enum hd_replica_route {
    HD_REPLICA_STANDBY = 0, /* served by the standby */
    HD_REPLICA_NO_STANDBY,  /* primary: none configured (not a fallback) */
    HD_REPLICA_DOWN,        /* primary: fallback, the standby failed */
    HD_REPLICA_LAGGING,     /* primary: fallback, the standby lags past max_lag_ms */
    HD_REPLICA_OWN_WRITE,   /* primary: the subject's write is not replayed yet */
} hd_replica_route;

#define HD_REPLICA_ROUTES 5

/* "standby", "no_standby", "down", "lagging", "own_write" (static). */
const char *hd_replica_route_name(hd_replica_route route);

/* Counters since open, readable from any thread. */
typedef struct hd_replica_stats {
    int standby_up;                    /* 1 after the last standby query succeeded */
    int64_t lag_ms;                    /* last measured replay lag; -1 when unknown (down, none) */
    uint64_t reads[HD_REPLICA_ROUTES]; /* routing decisions, by hd_replica_route (a read
                                          retried by hd_replica_read_failed counts twice) */
    uint64_t floor_raises;             /* subjects pushed out of the table (collisions) */
} hd_replica_stats;

/* Open a router over primary (borrowed: the caller's handle, used only during the calls
 * below; it must outlive r). read_url (borrowed) is the standby's URL, NULL or "" for none;
 * it must be postgresql:// and primary PostgreSQL then. The standby is connected now; when
 * that fails, r is still made and starts "down" (the next read after retry_ms tries again):
 * a service starts while its standby is away. opts may be NULL (defaults).
 * Returns 0 or HD_EINVAL (NULL argument, a setting < 0, subjects > HD_REPLICA_SUBJECTS_MAX,
 * a standby without a PostgreSQL primary), HD_EURL (read_url not PostgreSQL), HD_ENOMEM.
 * *out is new (hd_replica_close it). */
int hd_replica_open(hd_store *primary, const char *read_url, const hd_replica_options *opts,
                    hd_replica **out, hd_error *err);

/* Close the standby connection and free r (NULL is fine); not the primary. */
void hd_replica_close(hd_replica *r);

/* 1 when a standby is configured, else 0. */
int hd_replica_configured(const hd_replica *r);

/* After the caller's write on the primary COMMITTED (outside a transaction): remember the
 * primary's current WAL position for subject (borrowed; NULL = only the "anything written"
 * position that reads with a NULL subject wait for). If lsn is not NULL it receives the
 * position (0 when no standby is configured: nothing is asked then). Returns 0, HD_ESTATE
 * (inside a transaction: the commit is not written yet), or the primary's code (the write is
 * committed anyway; the subject's reads then stay on the primary until the standby has
 * replayed everything the primary had when the next lag check ran: the floor is raised). */
int hd_replica_wrote(hd_replica *r, const char *subject, uint64_t *lsn, hd_error *err);

/* Remember that subject's reads need the standby at lsn or later (a position the caller got
 * elsewhere: a client token). The table and floor rules apply. subject may be NULL. */
void hd_replica_note(hd_replica *r, const char *subject, uint64_t lsn);

/* The store to run a stale-tolerant read of subject (borrowed; NULL for "any") on: the
 * standby or the primary (borrowed: r's or the caller's). min_lsn (0 = none) is a position
 * the read must see in addition to the subject's own (a client token). *route (may be NULL)
 * says why. May run one or two short queries (the lag check, a fresh replay position when a
 * subject waits for one); a standby that fails there is marked down and the primary is
 * returned. Never NULL for a valid r. Call it per read: the answer changes. */
hd_store *hd_replica_for_read(hd_replica *r, const char *subject, uint64_t min_lsn,
                              hd_replica_route *route);

/* The read on store (borrowed: what hd_replica_for_read returned) failed. When store is the
 * standby, it is marked down (the next reads go to the primary for retry_ms) and the
 * primary is returned, to run the read again there: a standby that dies between the
 * routing and the read costs one retry, not a failed request. Otherwise NULL (the primary's
 * failure is the caller's to report). *route (may be NULL) is HD_REPLICA_DOWN then. The
 * stats count the retry as a read of its own. */
hd_store *hd_replica_read_failed(hd_replica *r, hd_store *store, hd_replica_route *route);

/* Proof of who served a read: pg_is_in_recovery() on store (borrowed). Returns 1 (a
 * standby), 0 (a primary), HD_EUNSUPPORTED (not PostgreSQL) or the store's code. */
int hd_replica_in_recovery(hd_store *store, hd_error *err);

/* Copy the counters into *out. Any thread. */
void hd_replica_stats_get(const hd_replica *r, hd_replica_stats *out);

/* ---- the pieces, for tests and for services that carry a position -------------------- */

/* Parse PostgreSQL's text form of a WAL position ("16/B374D848") into *out. Returns 0 or
 * HD_EINVAL. */
int hd_replica_lsn_parse(const char *text, uint64_t *out);

/* Format lsn as PostgreSQL does ("16/B374D848") into out. Returns the length. */
int hd_replica_lsn_format(uint64_t lsn, char out[HD_REPLICA_LSN_MAX + 1]);

/* What the routing decision looks at; hd_replica_decide is the rules above, without I/O. */
typedef struct hd_replica_view {
    int configured;      /* a standby URL was given */
    int up;              /* the standby is connected and answered its last query */
    int64_t lag_ms;      /* measured lag (< 0: unknown, treated as too much) */
    int64_t max_lag_ms;  /* the setting */
    uint64_t replay_lsn; /* the standby's last known replay position */
    uint64_t need_lsn;   /* what this read must see: max(subject's, floor, min_lsn) */
} hd_replica_view;

hd_replica_route hd_replica_decide(const hd_replica_view *v);

/* The position a read of subject (NULL: any) must see on the standby now, without I/O: the
 * max of the subject's slot, the floor, and (NULL subject) the newest write. 0 = none. */
uint64_t hd_replica_needed(const hd_replica *r, const char *subject);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_REPLICA_H */
