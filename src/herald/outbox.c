/* outbox.c — the transactional outbox; see outbox.h.
 *
 * Everything is plain SQL through the store port, written once for SQLite and PostgreSQL.
 * Three things differ, each for a reason given where it happens: the seq column's DDL, the
 * NOTIFY trigger (PostgreSQL only) and FOR UPDATE SKIP LOCKED in the claim.
 */
#include "herald/outbox.h"

#include "herald/clock.h"
#include "herald/outbox_internal.h"
#include "herald/jsonw.h"
#include "herald/store_internal.h"
#include "herald/store_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ---- schema ---------------------------------------------------------------------------- */

/* Every column but seq. Times are epoch milliseconds in BIGINT: INTEGER is 32 bits on
 * PostgreSQL (SQLite reads BIGINT as its 64-bit INTEGER). claimed_until = 0 means "not
 * leased", which keeps the claim's condition a plain comparison. */
#define OUTBOX_COLUMNS                                                                             \
    " event_id TEXT NOT NULL UNIQUE,"                                                              \
    " aggregate_type TEXT NOT NULL,"                                                               \
    " aggregate_id TEXT NOT NULL,"                                                                 \
    " type TEXT NOT NULL,"                                                                         \
    " version INTEGER NOT NULL,"                                                                   \
    " payload TEXT NOT NULL,"                                                                      \
    " headers TEXT NOT NULL,"                                                                      \
    " created_at BIGINT NOT NULL,"                                                                 \
    " next_attempt_at BIGINT NOT NULL,"                                                            \
    " attempts INTEGER NOT NULL DEFAULT 0,"                                                        \
    " last_error TEXT,"                                                                            \
    " claimed_by TEXT,"                                                                            \
    " claimed_until BIGINT NOT NULL DEFAULT 0,"                                                    \
    " dispatched_at BIGINT,"                                                                       \
    " parked_at BIGINT)"

/* Partial indexes hold only the rows their WHERE names, so they stay small however many
 * dispatched rows the table keeps: the claim reads hd_outbox_pending in seq order, the
 * per-aggregate check hd_outbox_pending_aggregate, and the depth metric hd_outbox_parked.
 * Without them every claim scans the history, and the relay slows down as it succeeds.
 * Both databases accept the same syntax. */
#define OUTBOX_INDEXES                                                                             \
    "CREATE INDEX hd_outbox_pending ON hd_outbox (seq)"                                            \
    " WHERE dispatched_at IS NULL AND parked_at IS NULL;"                                          \
    "CREATE INDEX hd_outbox_pending_aggregate ON hd_outbox (aggregate_type, aggregate_id, seq)"    \
    " WHERE dispatched_at IS NULL AND parked_at IS NULL;"                                          \
    "CREATE INDEX hd_outbox_parked ON hd_outbox (seq) WHERE parked_at IS NOT NULL;"

/* seq, the one column whose DDL differs. SQLite: AUTOINCREMENT never reuses a number, even
 * after the newest rows were purged (a plain INTEGER PRIMARY KEY would hand out max + 1
 * again, and a relay or a log that remembers seqs would be confused). PostgreSQL: an
 * identity column (the SQL standard's form of BIGSERIAL). */
/* Step 2 (both databases): the sensitive flag of hd_outbox_append_flags. A column of its own,
 * not a header: the UPDATE that marks a row dispatched reads it to scrub the payload in the
 * same statement. */
#define OUTBOX_STEP_SENSITIVE                                                                      \
    "ALTER TABLE hd_outbox ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0"
/* Step 3 (both databases): every row of an aggregate, dispatched or not, in seq order: the
 * append looks up the aggregate's latest row to chain the new event to it ("previousid",
 * see outbox.h, "Ordering"), one index probe instead of a scan of the history. */
#define OUTBOX_STEP_CHAIN                                                                          \
    "CREATE INDEX hd_outbox_aggregate ON hd_outbox (aggregate_type, aggregate_id, seq)"

/* Step 4 (both databases): the retention purges find their rows by dispatched_at. Without
 * these, each purge (every minute, from every relay) read the whole table, seven days of it
 * at the default retention, under SQLite's one write lock: 126 ms beside 500,000 rows to
 * delete 49 (docs/modules/outbox.md, "Indexes that keep the relay's work small"). Two, not
 * one: with hd_outbox_dispatched alone, SQLite's planner takes it for the sensitive purge too
 * and reads the table row of every dispatched row to test sensitive (155 ms). A mark adds one
 * entry to the first; only sensitive rows ever enter the second. */
#define OUTBOX_STEP_PURGE                                                                          \
    "CREATE INDEX hd_outbox_dispatched ON hd_outbox (dispatched_at)"                               \
    " WHERE dispatched_at IS NOT NULL;"                                                            \
    "CREATE INDEX hd_outbox_sensitive ON hd_outbox (dispatched_at)"                                \
    " WHERE sensitive <> 0 AND dispatched_at IS NOT NULL"

static const char *const sqlite_steps[] = {
    "CREATE TABLE hd_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT," OUTBOX_COLUMNS
    ";" OUTBOX_INDEXES,
    OUTBOX_STEP_SENSITIVE,
    OUTBOX_STEP_CHAIN,
    OUTBOX_STEP_PURGE,
};

/* On PostgreSQL, a statement trigger sends NOTIFY for every INSERT into the outbox. A
 * trigger rather than a second statement in hd_outbox_append: it costs no extra round
 * trip, and it also wakes the relay for rows written by other tools. The notification is
 * delivered when the transaction commits, and not at all if it rolls back. */
static const char *const pg_steps[] = {
    "CREATE TABLE hd_outbox (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY," OUTBOX_COLUMNS
    ";" OUTBOX_INDEXES "CREATE FUNCTION hd_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM pg_notify('" HD_OUTBOX_CHANNEL "', ''); RETURN NULL; END $$;"
    "CREATE TRIGGER hd_outbox_notify AFTER INSERT ON hd_outbox"
    " FOR EACH STATEMENT EXECUTE FUNCTION hd_outbox_notify();",
    OUTBOX_STEP_SENSITIVE,
    OUTBOX_STEP_CHAIN,
    OUTBOX_STEP_PURGE,
};

#define OUTBOX_STEPS (sizeof sqlite_steps / sizeof sqlite_steps[0])

int hd_outbox_migrate(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_migrate: store is NULL");
    if (hd_store_is_pg(store))
        return hd_store_migrate(store, "outbox", pg_steps, OUTBOX_STEPS, err);
    return hd_store_migrate(store, "outbox", sqlite_steps, OUTBOX_STEPS, err);
}

/* ---- append -------------------------------------------------------------------------- */

/* The envelope's tracing attributes as a JSON object, kept next to the payload so that a
 * relay can set AMQP headers without parsing the payload. New string (free()), or NULL when
 * out of memory. Written with jsonw, not built and dumped (9,200 instructions an event in
 * herald-notifications through json_dumps; issue 14's ninth pass): the attributes are
 * UTF-8, since the payload's encoder refuses an envelope whose are not, so these are the
 * bytes json_dumps(JSON_COMPACT) wrote for the object, members in the same order. */
static char *headers_json(const hd_envelope *env)
{
    const struct {
        const char *member; /* the key with its quotes and colon */
        const char *value;
    } attrs[] = {
        {"\"correlationid\":", hd_envelope_correlation_id(env)},
        {"\"causationid\":", hd_envelope_causation_id(env)},
        {"\"traceparent\":", hd_envelope_traceparent(env)},
    };
    hd_jsonw w;
    hd_jsonw_init(&w);
    HD_JSONW_LIT(&w, "{");
    int first = 1;
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        if (attrs[i].value == NULL)
            continue;
        if (!first)
            HD_JSONW_LIT(&w, ",");
        first = 0;
        hd_jsonw_put(&w, attrs[i].member, strlen(attrs[i].member));
        hd_jsonw_string(&w, attrs[i].value);
    }
    HD_JSONW_LIT(&w, "}");
    return hd_jsonw_take(&w, NULL);
}

/* The chain (outbox.h, "Ordering"): the encoded event in *payload (new string), stamped
 * with "previousid", the event id of the aggregate's latest row in the outbox, when there
 * is one. The writers of one aggregate are serialised by the aggregate's own row (its
 * version check), so the latest row is the previous event in commit order. The attribute
 * is added while encoding (hd_envelope_encode_with: compact, keys sorted, the bytes
 * hd_envelope_encode writes for an envelope with that extension attribute), not by parsing
 * the encoded text and dumping it again. */
static int encode_chained(hd_store *store, const hd_envelope *env, const char *aggregate_type,
                          const char *aggregate_id, char **payload, int *has_prev, hd_error *err)
{
    hd_value p[] = {hd_value_text(aggregate_type), hd_value_text(aggregate_id)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT event_id FROM hd_outbox WHERE aggregate_type = $1"
                            " AND aggregate_id = $2 ORDER BY seq DESC LIMIT 1",
                            p, 2, &rows, err);
    if (rc < 0)
        return rc;
    const char *prev = hd_rows_count(rows) > 0 ? hd_rows_text(rows, 0, 0) : NULL;
    *has_prev = prev != NULL;
    rc = hd_envelope_encode_with(env, prev != NULL ? HD_OUTBOX_PREVIOUS_ID : NULL, prev, payload,
                                 NULL, err);
    hd_rows_free(rows);
    return rc;
}

static int64_t offered(hd_outbox_notifier *n, char *token);

/* 1 when the query sql (n parameters p) returns a row, 0 when not, or the store's code. */
static int any_row(hd_store *store, const char *sql, const hd_value *p, size_t n, hd_error *err)
{
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, sql, p, n, &rows, err);
    if (rc >= 0)
        rc = hd_rows_count(rows) > 0;
    hd_rows_free(rows);
    return rc;
}

/* 1 when the aggregate has a row neither dispatched nor parked, 0 when not, or a code: one
 * probe of hd_outbox_pending_aggregate (SQLite only: the index is named). */
static int aggregate_pending(hd_store *store, const char *aggregate_type, const char *aggregate_id,
                             hd_error *err)
{
    hd_value p[] = {hd_value_text(aggregate_type), hd_value_text(aggregate_id)};
    return any_row(store,
                   "SELECT 1 FROM hd_outbox INDEXED BY hd_outbox_pending_aggregate"
                   " WHERE aggregate_type = $1 AND aggregate_id = $2"
                   " AND dispatched_at IS NULL AND parked_at IS NULL LIMIT 1",
                   p, 2, err);
}

int hd_outbox_append(hd_store *store, const hd_envelope *env, const char *aggregate_type,
                     const char *aggregate_id, hd_error *err)
{
    return hd_outbox_append_flags(store, env, aggregate_type, aggregate_id, 0, err);
}

int hd_outbox_append_flags(hd_store *store, const hd_envelope *env, const char *aggregate_type,
                           const char *aggregate_id, unsigned flags, hd_error *err)
{
    if ((flags & ~(unsigned)HD_OUTBOX_SENSITIVE) != 0)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_append: unknown flags 0x%x", flags);
    if (store == NULL || env == NULL || aggregate_type == NULL || *aggregate_type == '\0' ||
        aggregate_id == NULL || *aggregate_id == '\0')
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_append: store, envelope, aggregate type and id are "
                            "required");
    /* The whole point: the row must share the business change's transaction. */
    if (!hd_store_in_transaction(store))
        return hd_error_set(err, HD_ESTATE,
                            "hd_outbox_append must run inside the transaction of the business "
                            "change (call hd_store_begin or use a unit of work)");
    char *payload = NULL;
    int has_prev = 0;
    int rc = encode_chained(store, env, aggregate_type, aggregate_id, &payload, &has_prev, err);
    if (rc < 0)
        return rc;
    /* Handed to the in-process relay (outbox.h, "handed rows") when it offered a token and
     * nothing of the aggregate is pending. An aggregate without any earlier row (the chain's
     * lookup found none) needs no second look. */
    char token[HD_OUTBOX_TOKEN_MAX + 1];
    int64_t lease = hd_store_is_pg(store) ? 0 : offered(store->outbox_notifier, token);
    if (lease > 0 && has_prev &&
        (rc = aggregate_pending(store, aggregate_type, aggregate_id, err)) != 0) {
        if (rc < 0) {
            free(payload);
            return rc;
        }
        lease = 0;
    }
    char *headers = headers_json(env);
    if (headers == NULL) {
        free(payload);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    int64_t now = hd_time_now_ms();
    hd_value p[] = {
        hd_value_text(hd_envelope_id(env)),
        hd_value_text(aggregate_type),
        hd_value_text(aggregate_id),
        hd_value_text(hd_envelope_type(env)),
        hd_value_int(hd_envelope_version(env)),
        hd_value_text(payload),
        hd_value_text(headers),
        hd_value_int(now),
        hd_value_int((flags & HD_OUTBOX_SENSITIVE) ? 1 : 0),
        hd_value_text(lease > 0 ? token : NULL),
        hd_value_int(lease > 0 ? now + lease : 0),
    };
    rc = hd_store_exec(store,
                       "INSERT INTO hd_outbox (event_id, aggregate_type, aggregate_id, type,"
                       " version, payload, headers, created_at, next_attempt_at, sensitive,"
                       " claimed_by, claimed_until)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)",
                       p, sizeof p / sizeof p[0], err);
    free(payload);
    free(headers);
    return rc < 0 ? rc : HD_OK;
}

/* The key under which a unit of work remembers that it must signal when it ends. */
static const char signal_key;

static void signal_when_unit_ends(void *store)
{
    hd_outbox_signal(store);
}

int hd_outbox_append_uow(hd_uow *uow, const hd_envelope *env, const char *aggregate_type,
                         const char *aggregate_id, hd_error *err)
{
    return hd_outbox_append_uow_flags(uow, env, aggregate_type, aggregate_id, 0, err);
}

int hd_outbox_append_uow_flags(hd_uow *uow, const hd_envelope *env, const char *aggregate_type,
                               const char *aggregate_id, unsigned flags, hd_error *err)
{
    if (uow == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_append_uow: uow is NULL");
    int rc =
        hd_outbox_append_flags(hd_uow_store(uow), env, aggregate_type, aggregate_id, flags, err);
    if (rc < 0)
        return rc;
    /* The unit destroys what is attached to it after its transaction ended, which is the
     * moment the row becomes visible (or vanished: a spurious wake-up is harmless). Attach
     * once per unit; attaching a second time would fail and "destroy" (signal) at once. */
    if (hd_uow_attached(uow, &signal_key) == NULL) {
        rc = hd_uow_attach(uow, &signal_key, hd_uow_store(uow), signal_when_unit_ends);
        if (rc < 0)
            return hd_error_set(err, rc, "cannot arrange the relay's wake-up");
    }
    return HD_OK;
}

/* ---- claim ----------------------------------------------------------------------------- */

/* The claim, one statement: lease the first due rows and return them. The inner SELECT
 * walks hd_outbox_pending in seq order; the scalar subquery holds a row back while an
 * earlier row of its aggregate waits for a retry or is leased to someone (outbox.h,
 * "Ordering"): it looks for the first such row and wants none.
 * Why a scalar subquery and not the more obvious NOT EXISTS: PostgreSQL turns NOT EXISTS
 * into an anti-join, and on a table without fresh statistics it planned that join as a
 * scan of every pending row for each candidate (measured: 60 ms per claim of 100 with
 * 3,000 rows pending). A scalar subquery cannot become a join; it stays one probe of
 * hd_outbox_pending_aggregate per candidate (under 1 ms per claim, whatever the backlog).
 * On PostgreSQL, FOR UPDATE SKIP LOCKED makes a concurrent claim skip the rows this one is
 * taking instead of queueing behind its locks (and, after they commit, re-checks them:
 * claimed_until is then in the future, so they are not taken twice). SQLite has one writer
 * at a time, so it needs (and has) no such clause.
 * UPDATE ... RETURNING gives the rows in no particular order: they are sorted afterwards.
 * The probe must read hd_outbox_pending_aggregate, which holds an aggregate's pending rows
 * only. SQLite's planner, which keeps no statistics here, takes hd_outbox_aggregate instead
 * (the same columns, every row: OUTBOX_STEP_CHAIN), and then walks the aggregate's whole
 * dispatched history before each of its pending rows, reading the table for every entry to
 * see that it was dispatched: one claim of 1,000 rows, 100 of them of an aggregate with 50,000
 * dispatched events, took 702 ms instead of 2 (docs/modules/outbox.md, "The claim's probe").
 * SQLITE_PROBE names the index; PostgreSQL chooses the partial index by its size. */
#define SQLITE_PROBE " INDEXED BY hd_outbox_pending_aggregate"
#define CLAIM_SQL(indexed, lock)                                                                   \
    "UPDATE hd_outbox SET claimed_by = $1, claimed_until = $2 WHERE seq IN ("                      \
    " SELECT o.seq FROM hd_outbox o"                                                               \
    " WHERE o.dispatched_at IS NULL AND o.parked_at IS NULL"                                       \
    " AND o.next_attempt_at <= $3 AND o.claimed_until <= $3"                                       \
    " AND (SELECT MIN(e.seq) FROM hd_outbox e" indexed                                             \
    "  WHERE e.aggregate_type = o.aggregate_type AND e.aggregate_id = o.aggregate_id"              \
    "  AND e.seq < o.seq AND e.dispatched_at IS NULL AND e.parked_at IS NULL"                      \
    "  AND (e.next_attempt_at > $3 OR e.claimed_until > $3)) IS NULL"                              \
    " ORDER BY o.seq LIMIT $4" lock ")"                                                            \
    " RETURNING seq, event_id, aggregate_type, aggregate_id, type, version, payload,"              \
    " headers, created_at, attempts, sensitive"

/* Claims on PostgreSQL take turns: one transaction-scoped advisory lock, then the claim,
 * then the commit, which releases the lock. Why: without it, two relays claiming at the
 * same instant could split one aggregate between them. Relay A leases the aggregate's
 * event 1 (its LIMIT ends there, or event 2 was committed after A's statement began); relay
 * B, whose snapshot does not show A's uncommitted lease, sees no earlier row held and takes
 * event 2 (SKIP LOCKED skips only the rows A locked). Both publish at once and event 2 can
 * reach the queue first. With the lock, B's claim starts after A's committed, in a fresh
 * snapshot (READ COMMITTED: one per statement) that shows A's lease, so event 2 waits until
 * event 1 is dispatched. The lock is held for the claim only (about a millisecond); the
 * publishing, the part that takes time, stays parallel. The key is one constant per
 * database: relays of other databases on the same server do not wait for each other. */
#define CLAIM_LOCK_SQL "SELECT pg_advisory_xact_lock(7522259827870035832)" /* "hdoutbox" */

static int claim_pg(hd_store *store, const hd_value *p, hd_rows **rows, hd_error *err)
{
    int rc = hd_store_begin(store, err);
    if (rc < 0)
        return rc;
    hd_rows *lock = NULL;
    if ((rc = hd_store_query(store, CLAIM_LOCK_SQL, NULL, 0, &lock, err)) >= 0)
        rc = hd_store_query(store, hd_outbox_sql(HD_OUTBOX_SQL_CLAIM, 1), p, 4, rows, err);
    hd_rows_free(lock);
    if (rc >= 0 && (rc = hd_store_commit(store, err)) >= 0)
        return 0;
    hd_rows_free(*rows);
    *rows = NULL;
    if (hd_store_in_transaction(store))
        hd_store_rollback(store, NULL);
    return rc;
}

typedef struct batch_impl {
    hd_outbox_batch pub; /* first member: what the caller sees */
    hd_rows *rows;       /* owns the strings the messages point into */
    hd_outbox_message items[];
} batch_impl;

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const hd_outbox_message *)a)->seq, y = ((const hd_outbox_message *)b)->seq;
    return (x > y) - (x < y);
}

static int batch_of(hd_rows *rows, int64_t until, hd_outbox_batch **out, hd_error *err);

int hd_outbox_claim(hd_store *store, size_t limit, const hd_outbox_claim_opts *opts,
                    hd_outbox_batch **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || out == NULL || limit == 0 || limit > HD_OUTBOX_BATCH_MAX)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_claim: store, out and a limit of 1..%d are required",
                            HD_OUTBOX_BATCH_MAX);
    if (hd_store_in_transaction(store))
        return hd_error_set(err, HD_ESTATE,
                            "claim outside a transaction: it commits at once so that no lock "
                            "is held while publishing");
    hd_outbox_claim_opts o = {"relay", HD_OUTBOX_LEASE_DEFAULT_MS, 0};
    if (opts != NULL) {
        if (opts->relay_id != NULL)
            o.relay_id = opts->relay_id;
        if (opts->lease_ms < 0 || opts->now_ms < 0)
            return hd_error_set(err, HD_EINVAL, "lease and now cannot be negative");
        if (opts->lease_ms > 0)
            o.lease_ms = opts->lease_ms;
        o.now_ms = opts->now_ms;
    }
    int64_t now = o.now_ms ? o.now_ms : hd_time_now_ms();
    int64_t until = now + o.lease_ms;
    hd_value p[] = {hd_value_text(o.relay_id), hd_value_int(until), hd_value_int(now),
                    hd_value_int((int64_t)limit)};
    hd_rows *rows = NULL;
    int rc = hd_store_is_pg(store)
                 ? claim_pg(store, p, &rows, err)
                 : hd_store_query(store, hd_outbox_sql(HD_OUTBOX_SQL_CLAIM, 0), p, 4, &rows, err);
    if (rc < 0)
        return rc;
    return batch_of(rows, until, out, err);
}

/* The batch of rows (stolen), in the claim's column order (CLAIM_SQL's RETURNING), sorted
 * by seq, into *out; lease_until_ms is until. Returns the number of messages or HD_ENOMEM. */
static int batch_of(hd_rows *rows, int64_t until, hd_outbox_batch **out, hd_error *err)
{
    size_t n = hd_rows_count(rows);
    batch_impl *b = malloc(sizeof *b + n * sizeof b->items[0]);
    if (b == NULL) {
        /* The rows are leased but nobody will publish them: the lease runs out and another
         * claim takes them. At-least-once delivery tolerates this; nothing is lost. */
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        hd_outbox_message *m = &b->items[i];
        m->seq = hd_rows_int(rows, i, 0);
        m->event_id = hd_rows_text(rows, i, 1);
        m->aggregate_type = hd_rows_text(rows, i, 2);
        m->aggregate_id = hd_rows_text(rows, i, 3);
        m->type = hd_rows_text(rows, i, 4);
        m->version = (int)hd_rows_int(rows, i, 5);
        m->payload = hd_rows_blob(rows, i, 6, &m->payload_len);
        m->headers = hd_rows_text(rows, i, 7);
        m->created_at_ms = hd_rows_int(rows, i, 8);
        m->attempts = (int)hd_rows_int(rows, i, 9);
        m->sensitive = hd_rows_int(rows, i, 10) != 0;
    }
    qsort(b->items, n, sizeof b->items[0], by_seq);
    b->rows = rows;
    b->pub.count = n;
    b->pub.messages = b->items;
    b->pub.lease_until_ms = until;
    *out = &b->pub;
    return (int)n;
}

/* The handed rows of one token after a seq, in seq order: hd_outbox_pending in seq order
 * from after_seq on, each row's claimed_by compared (the pending rows past the relay's last
 * take are few: its own handed rows and those waiting for a claim). $3 is now + lease / 2:
 * a row with less than half its lease left is left to run out and be claimed. The columns
 * are the claim's (batch_of), then claimed_until. */
#define TAKE_SQL                                                                                   \
    "SELECT seq, event_id, aggregate_type, aggregate_id, type, version, payload, headers,"         \
    " created_at, attempts, sensitive, claimed_until FROM hd_outbox INDEXED BY hd_outbox_pending"  \
    " WHERE seq > $1 AND dispatched_at IS NULL AND parked_at IS NULL"                              \
    " AND claimed_by = $2 AND claimed_until > $3 ORDER BY seq LIMIT $4"

int hd_outbox_take_handed(hd_store *store, const char *token, int64_t after_seq, size_t limit,
                          int64_t lease_ms, int64_t now_ms, hd_outbox_batch **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || token == NULL || *token == '\0' || out == NULL || limit == 0 ||
        limit > HD_OUTBOX_BATCH_MAX || lease_ms <= 0 || after_seq < 0 || now_ms < 0)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_take_handed: store, token, out, a lease > 0 and a limit "
                            "of 1..%d are required",
                            HD_OUTBOX_BATCH_MAX);
    if (hd_store_is_pg(store))
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "handed rows are for SQLite (outbox.h): claim on PostgreSQL");
    if (hd_store_in_transaction(store))
        return hd_error_set(err, HD_ESTATE, "take handed rows outside a transaction");
    int64_t now = now_ms ? now_ms : hd_time_now_ms();
    hd_value p[] = {hd_value_int(after_seq), hd_value_text(token), hd_value_int(now + lease_ms / 2),
                    hd_value_int((int64_t)limit)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, TAKE_SQL, p, 4, &rows, err);
    if (rc < 0)
        return rc;
    int64_t until = INT64_MAX;
    for (size_t i = 0; i < hd_rows_count(rows); i++) {
        int64_t u = hd_rows_int(rows, i, 11);
        until = u < until ? u : until;
    }
    return batch_of(rows, hd_rows_count(rows) > 0 ? until : now, out, err);
}

int hd_outbox_release_handed(hd_store *store, const char *token, hd_error *err)
{
    if (store == NULL || token == NULL || *token == '\0')
        return hd_error_set(err, HD_EINVAL, "hd_outbox_release_handed: store and token required");
    hd_value p[] = {hd_value_text(token)};
    return hd_store_exec(store,
                         "UPDATE hd_outbox SET claimed_until = 0, claimed_by = NULL"
                         " WHERE claimed_by = $1 AND dispatched_at IS NULL AND parked_at IS NULL",
                         p, 1, err);
}

int hd_outbox_last_seq(hd_store *store, int64_t *seq, hd_error *err)
{
    if (store == NULL || seq == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_last_seq: store and seq are required");
    hd_rows *rows = NULL;
    int rc =
        hd_store_query(store, "SELECT COALESCE(MAX(seq), 0) FROM hd_outbox", NULL, 0, &rows, err);
    if (rc >= 0)
        *seq = hd_rows_count(rows) > 0 ? hd_rows_int(rows, 0, 0) : 0;
    hd_rows_free(rows);
    return rc < 0 ? rc : 0;
}

void hd_outbox_batch_free(hd_outbox_batch *batch)
{
    if (batch == NULL)
        return;
    batch_impl *b = (batch_impl *)batch;
    hd_rows_free(b->rows);
    free(b);
}

/* ---- statements over a list of seqs -------------------------------------------------- */

/* Lists of seqs go into fixed-size IN lists: "seq IN ($2, $3, ..., $65)". A fixed size
 * keeps one SQL text per statement (the SQLite adapter caches compiled statements by text),
 * and values never go into the SQL: a short last chunk repeats its first seq, which
 * changes nothing (IN is a set). Three sizes, the smallest that holds what is left (64 while
 * more is left): a relay under a trickle marks batches of one or two rows, and an IN list of
 * 64 parameters costs SQLite the same to build and walk whatever it holds (callgrind,
 * herald-notifications' in-process relay at 20 events/s, one row per batch: 150,000
 * instructions per mark with 64, docs/bench.md, issue 14); "seq IN ($2)" is one lookup. */
#define SEQ_CHUNK 64
static const size_t seq_chunks[] = {1, 8, SEQ_CHUNK};

static size_t chunk_for(size_t left)
{
    for (size_t i = 0; i < sizeof seq_chunks / sizeof seq_chunks[0]; i++)
        if (left <= seq_chunks[i])
            return seq_chunks[i];
    return SEQ_CHUNK;
}

static int update_seqs(hd_store *store, const char *prefix, int64_t arg, const int64_t *seqs,
                       size_t n, hd_error *err)
{
    if (store == NULL || (n > 0 && seqs == NULL))
        return hd_error_set(err, HD_EINVAL, "store and seqs are required");
    if (n == 0)
        return 0;
    char sql[512 + SEQ_CHUNK * 6];
    size_t sql_chunk = 0; /* the chunk size sql is written for; 0: none yet */

    int own = !hd_store_in_transaction(store) && n > SEQ_CHUNK;
    if (own) {
        int rc = hd_store_begin(store, err);
        if (rc < 0)
            return rc;
    }
    int total = 0, rc = 0;
    for (size_t at = 0; at < n && rc >= 0;) {
        size_t chunk = chunk_for(n - at);
        if (chunk != sql_chunk) {
            int len = snprintf(sql, sizeof sql, "%s seq IN (", prefix);
            for (size_t i = 0; i < chunk; i++)
                len += snprintf(sql + len, sizeof sql - (size_t)len, i ? ", $%zu" : "$%zu", i + 2);
            snprintf(sql + len, sizeof sql - (size_t)len, ")");
            sql_chunk = chunk;
        }
        hd_value p[1 + SEQ_CHUNK];
        p[0] = hd_value_int(arg);
        for (size_t i = 0; i < chunk; i++)
            p[1 + i] = hd_value_int(seqs[at + i < n ? at + i : at]);
        rc = hd_store_exec(store, sql, p, 1 + chunk, err);
        if (rc >= 0)
            total += rc;
        at += chunk;
    }
    if (own) {
        if (rc < 0) {
            hd_store_rollback(store, NULL);
            return rc;
        }
        rc = hd_store_commit(store, err);
    }
    return rc < 0 ? rc : total;
}

int hd_outbox_mark_dispatched(hd_store *store, const int64_t *seqs, size_t n, hd_error *err)
{
    /* parked_at is cleared too: a row a stale relay parked after it was in fact confirmed
     * is dispatched, and the states stay exclusive. A sensitive row's payload is emptied in
     * the same statement: once the broker has the event, the outbox copy is only a risk
     * (outbox.h, "Sensitive rows"). */
    return update_seqs(store,
                       "UPDATE hd_outbox SET dispatched_at = $1, parked_at = NULL,"
                       " claimed_until = 0,"
                       " payload = CASE WHEN sensitive <> 0 THEN '' ELSE payload END"
                       " WHERE dispatched_at IS NULL AND",
                       hd_time_now_ms(), seqs, n, err);
}

int hd_outbox_release(hd_store *store, const int64_t *seqs, size_t n, hd_error *err)
{
    /* $1 is unused in meaning but keeps the statement shape of update_seqs; it is written
     * into claimed_until as 0 ("not leased"). */
    return update_seqs(store,
                       "UPDATE hd_outbox SET claimed_until = $1, claimed_by = NULL"
                       " WHERE dispatched_at IS NULL AND",
                       0, seqs, n, err);
}

/* ---- failures, parking, redrive ------------------------------------------------------ */

int hd_outbox_mark_failed(hd_store *store, int64_t seq, const char *reason, int64_t retry_in_ms,
                          int max_attempts, hd_error *err)
{
    if (store == NULL || seq <= 0 || retry_in_ms < 0 || max_attempts < 1)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_mark_failed: store, seq > 0, retry_in_ms >= 0 and "
                            "max_attempts >= 1 are required");
    int64_t now = hd_time_now_ms();
    /* In SET, "attempts" on the right is the old value, on both databases: the CASE sees the
     * count before this failure, hence "+ 1". */
    hd_value p[] = {hd_value_int(seq), hd_value_text(reason), hd_value_int(now + retry_in_ms),
                    hd_value_int(max_attempts), hd_value_int(now)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "UPDATE hd_outbox SET attempts = attempts + 1, last_error = $2,"
                            " next_attempt_at = $3, claimed_until = 0, claimed_by = NULL,"
                            " parked_at = CASE WHEN attempts + 1 >= $4 THEN $5 ELSE NULL END"
                            " WHERE seq = $1 AND dispatched_at IS NULL AND parked_at IS NULL"
                            " RETURNING parked_at",
                            p, 5, &rows, err);
    if (rc < 0)
        return rc;
    if (hd_rows_count(rows) == 0)
        rc = hd_error_set(err, HD_ENOTFOUND,
                          "outbox row %lld is not waiting (unknown, dispatched or parked)",
                          (long long)seq);
    else
        rc = hd_rows_is_null(rows, 0, 0) ? 0 : 1;
    hd_rows_free(rows);
    return rc;
}

int hd_outbox_redrive(hd_store *store, int64_t seq, hd_error *err)
{
    if (store == NULL || seq < 0)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_redrive: store and seq >= 0 required");
    hd_value p[] = {hd_value_int(hd_time_now_ms()), hd_value_int(seq)};
    return hd_store_exec(store,
                         "UPDATE hd_outbox SET parked_at = NULL, attempts = 0,"
                         " next_attempt_at = $1, claimed_until = 0, claimed_by = NULL"
                         " WHERE parked_at IS NOT NULL AND ($2 = 0 OR seq = $2)",
                         p, 2, err);
}

/* ---- retention and metrics ----------------------------------------------------------- */

/* The purges read hd_outbox_dispatched and hd_outbox_sensitive (OUTBOX_STEP_PURGE): the rows
 * dispatched before $1, not the table. */
#define PURGE_SQL "DELETE FROM hd_outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < $1"
#define PURGE_SENSITIVE_SQL                                                                        \
    "DELETE FROM hd_outbox WHERE sensitive <> 0 AND dispatched_at IS NOT NULL"                     \
    " AND dispatched_at < $1"
/* DELETE ... LIMIT is not SQL on PostgreSQL (nor in a default SQLite build): the subquery
 * picks the batch. Oldest dispatched first, in hd_outbox_dispatched's order, so that two
 * purges running at once (the relay's and an operator's) mostly ask for the same rows instead
 * of crossing locks. In seq order it walked the table until it had the batch: the last,
 * short batch read all of it (123 ms beside 500,000 rows; 0.3 ms now); ordered by seq with
 * the index there, SQLite sorted every old row for each batch. */
#define PURGE_BATCH_SQL                                                                            \
    "DELETE FROM hd_outbox WHERE seq IN (SELECT seq FROM hd_outbox"                                \
    " WHERE dispatched_at IS NOT NULL AND dispatched_at < $1"                                      \
    " ORDER BY dispatched_at LIMIT $2)"

const char *hd_outbox_sql(hd_outbox_stmt which, int pg)
{
    switch (which) {
    case HD_OUTBOX_SQL_CLAIM:
        return pg ? CLAIM_SQL("", " FOR UPDATE SKIP LOCKED") : CLAIM_SQL(SQLITE_PROBE, "");
    case HD_OUTBOX_SQL_PURGE:
        return PURGE_SQL;
    case HD_OUTBOX_SQL_PURGE_SENSITIVE:
        return PURGE_SENSITIVE_SQL;
    case HD_OUTBOX_SQL_PURGE_BATCH:
        return PURGE_BATCH_SQL;
    }
    return NULL;
}

int hd_outbox_purge_dispatched(hd_store *store, int64_t older_than_ms, hd_error *err)
{
    if (store == NULL || older_than_ms < 0)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_purge_dispatched: store and older_than_ms >= 0 required");
    hd_value p[] = {hd_value_int(hd_time_now_ms() - older_than_ms)};
    return hd_store_exec(store, PURGE_SQL, p, 1, err);
}

int hd_outbox_purge_sensitive(hd_store *store, int64_t older_than_ms, hd_error *err)
{
    if (store == NULL || older_than_ms < 0)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_purge_sensitive: store and older_than_ms >= 0 required");
    hd_value p[] = {hd_value_int(hd_time_now_ms() - older_than_ms)};
    return hd_store_exec(store, PURGE_SENSITIVE_SQL, p, 1, err);
}

int hd_outbox_has_due(hd_store *store, int64_t now_ms, hd_error *err)
{
    if (store == NULL || now_ms < 0)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_has_due: store is NULL or now < 0");
    int64_t now = now_ms ? now_ms : hd_time_now_ms();
    hd_value p[] = {hd_value_int(now)};
    /* hd_outbox_pending in seq order, the first due row ends it. */
    return any_row(store,
                   "SELECT 1 FROM hd_outbox WHERE dispatched_at IS NULL"
                   " AND parked_at IS NULL AND next_attempt_at <= $1"
                   " AND claimed_until <= $1 LIMIT 1",
                   p, 1, err);
}

int hd_outbox_depth(hd_store *store, int64_t *pending, int64_t *oldest_age_ms, int64_t *parked,
                    hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_depth: store is NULL");
    /* Three scalar subqueries in one round trip; each reads one partial index's rows. */
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT (SELECT COUNT(*) FROM hd_outbox"
                            "   WHERE dispatched_at IS NULL AND parked_at IS NULL),"
                            " (SELECT MIN(created_at) FROM hd_outbox"
                            "   WHERE dispatched_at IS NULL AND parked_at IS NULL),"
                            " (SELECT COUNT(*) FROM hd_outbox WHERE parked_at IS NOT NULL)",
                            NULL, 0, &rows, err);
    if (rc < 0)
        return rc;
    int64_t oldest = hd_rows_int(rows, 0, 1);
    if (pending != NULL)
        *pending = hd_rows_int(rows, 0, 0);
    if (oldest_age_ms != NULL) {
        int64_t age = hd_rows_is_null(rows, 0, 1) ? 0 : hd_time_now_ms() - oldest;
        *oldest_age_ms = age > 0 ? age : 0;
    }
    if (parked != NULL)
        *parked = hd_rows_int(rows, 0, 2);
    hd_rows_free(rows);
    return HD_OK;
}

/* ---- operating it: stats, the parked list, redrive by type, batched purge ------------- */

/* The four states of outbox.h's hd_outbox_type_stats, each a COUNT of a CASE (COUNT skips
 * NULLs): COUNT rather than SUM, because SUM of an integer is NUMERIC on PostgreSQL and NULL
 * over no rows. The lag is the oldest row that is neither dispatched nor parked. */
#define STATS_COLUMNS                                                                              \
    " COUNT(CASE WHEN dispatched_at IS NULL AND parked_at IS NULL AND claimed_until <= $1"         \
    "  THEN 1 END),"                                                                               \
    " COUNT(CASE WHEN dispatched_at IS NULL AND parked_at IS NULL AND claimed_until > $1"          \
    "  THEN 1 END),"                                                                               \
    " COUNT(CASE WHEN parked_at IS NOT NULL THEN 1 END),"                                          \
    " COUNT(CASE WHEN dispatched_at IS NOT NULL THEN 1 END),"                                      \
    " MIN(CASE WHEN dispatched_at IS NULL AND parked_at IS NULL THEN created_at END)"

typedef struct stats_impl {
    hd_outbox_stats pub; /* first member: what the caller sees */
    hd_rows *rows;       /* owns the type names */
    hd_outbox_type_stats items[];
} stats_impl;

static void fill_type_stats(hd_outbox_type_stats *t, const hd_rows *rows, size_t r, size_t c0,
                            int64_t now)
{
    t->pending = hd_rows_int(rows, r, c0);
    t->leased = hd_rows_int(rows, r, c0 + 1);
    t->parked = hd_rows_int(rows, r, c0 + 2);
    t->dispatched = hd_rows_int(rows, r, c0 + 3);
    int64_t age = hd_rows_is_null(rows, r, c0 + 4) ? 0 : now - hd_rows_int(rows, r, c0 + 4);
    t->oldest_waiting_age_ms = age > 0 ? age : 0;
}

int hd_outbox_stats_read(hd_store *store, int64_t now_ms, hd_outbox_stats **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || out == NULL || now_ms < 0)
        return hd_error_set(err, HD_EINVAL, "hd_outbox_stats_read: store and out are required");
    int64_t now = now_ms ? now_ms : hd_time_now_ms();
    hd_value p[] = {hd_value_int(now)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT type," STATS_COLUMNS " FROM hd_outbox GROUP BY type"
                            " ORDER BY type",
                            p, 1, &rows, err);
    if (rc < 0)
        return rc;
    size_t n = hd_rows_count(rows);
    stats_impl *st = calloc(1, sizeof *st + n * sizeof st->items[0]);
    if (st == NULL) {
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    /* The total is the sum of the types (one query, one snapshot), the lag their maximum. */
    for (size_t i = 0; i < n; i++) {
        hd_outbox_type_stats *t = &st->items[i];
        t->type = hd_rows_text(rows, i, 0);
        fill_type_stats(t, rows, i, 1, now);
        st->pub.total.pending += t->pending;
        st->pub.total.leased += t->leased;
        st->pub.total.parked += t->parked;
        st->pub.total.dispatched += t->dispatched;
        if (t->oldest_waiting_age_ms > st->pub.total.oldest_waiting_age_ms)
            st->pub.total.oldest_waiting_age_ms = t->oldest_waiting_age_ms;
    }
    st->pub.ntypes = n;
    st->pub.types = st->items;
    st->rows = rows;
    *out = &st->pub;
    return HD_OK;
}

void hd_outbox_stats_free(hd_outbox_stats *stats)
{
    if (stats == NULL)
        return;
    stats_impl *st = (stats_impl *)stats;
    hd_rows_free(st->rows);
    free(st);
}

typedef struct parked_impl {
    hd_outbox_parked_list pub; /* first member: what the caller sees */
    hd_rows *rows;             /* owns the strings */
    hd_outbox_parked items[];
} parked_impl;

int hd_outbox_list_parked(hd_store *store, const char *type, size_t limit,
                          hd_outbox_parked_list **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || out == NULL || limit == 0 || limit > HD_OUTBOX_BATCH_MAX)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_list_parked: store, out and a limit of 1..%d are required",
                            HD_OUTBOX_BATCH_MAX);
    /* hd_outbox_parked (the partial index) serves both the filter and the order. */
    hd_value p[] = {hd_value_text(type), hd_value_int((int64_t)limit)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT seq, event_id, type, aggregate_type, aggregate_id, attempts,"
                            " last_error, created_at, parked_at FROM hd_outbox"
                            " WHERE parked_at IS NOT NULL AND type = COALESCE($1, type)"
                            " ORDER BY seq LIMIT $2",
                            p, 2, &rows, err);
    if (rc < 0)
        return rc;
    size_t n = hd_rows_count(rows);
    parked_impl *l = malloc(sizeof *l + n * sizeof l->items[0]);
    if (l == NULL) {
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        hd_outbox_parked *r = &l->items[i];
        r->seq = hd_rows_int(rows, i, 0);
        r->event_id = hd_rows_text(rows, i, 1);
        r->type = hd_rows_text(rows, i, 2);
        r->aggregate_type = hd_rows_text(rows, i, 3);
        r->aggregate_id = hd_rows_text(rows, i, 4);
        r->attempts = (int)hd_rows_int(rows, i, 5);
        r->last_error = hd_rows_is_null(rows, i, 6) ? "" : hd_rows_text(rows, i, 6);
        r->created_at_ms = hd_rows_int(rows, i, 7);
        r->parked_at_ms = hd_rows_int(rows, i, 8);
    }
    l->pub.count = n;
    l->pub.rows = l->items;
    l->rows = rows;
    *out = &l->pub;
    return (int)n;
}

void hd_outbox_parked_list_free(hd_outbox_parked_list *list)
{
    if (list == NULL)
        return;
    parked_impl *l = (parked_impl *)list;
    hd_rows_free(l->rows);
    free(l);
}

int hd_outbox_redrive_type(hd_store *store, const char *type, hd_error *err)
{
    if (store == NULL || type == NULL || *type == '\0')
        return hd_error_set(err, HD_EINVAL, "hd_outbox_redrive_type: store and type required");
    hd_value p[] = {hd_value_int(hd_time_now_ms()), hd_value_text(type)};
    return hd_store_exec(store,
                         "UPDATE hd_outbox SET parked_at = NULL, attempts = 0,"
                         " next_attempt_at = $1, claimed_until = 0, claimed_by = NULL"
                         " WHERE parked_at IS NOT NULL AND type = $2",
                         p, 2, err);
}

int hd_outbox_purge_dispatched_batch(hd_store *store, int64_t older_than_ms, size_t limit,
                                     hd_error *err)
{
    if (store == NULL || older_than_ms < 0 || limit == 0 || limit > HD_OUTBOX_BATCH_MAX)
        return hd_error_set(err, HD_EINVAL,
                            "hd_outbox_purge_dispatched_batch: store, older_than_ms >= 0 and a "
                            "limit of 1..%d are required",
                            HD_OUTBOX_BATCH_MAX);
    hd_value p[] = {hd_value_int(hd_time_now_ms() - older_than_ms), hd_value_int((int64_t)limit)};
    return hd_store_exec(store, PURGE_BATCH_SQL, p, 2, err);
}

/* ---- the in-process signal ------------------------------------------------------------ */

struct hd_outbox_notifier {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t count; /* signals so far */
    int armed;      /* a byte is in the pipe (under lock): one byte at most, however many
                       signals, so a burst cannot fill the pipe and block a writer */
    int rfd, wfd;   /* the pipe: readable while armed */
    /* The relay's offer (outbox.h, "handed rows"), under lock: lease 0 = none. */
    char token[HD_OUTBOX_TOKEN_MAX + 1];
    int64_t lease_ms;
};

static int nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    return fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
                   fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0
               ? -1
               : 0;
}

hd_outbox_notifier *hd_outbox_notifier_new(void)
{
    hd_outbox_notifier *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    int fds[2];
    if (pipe(fds) < 0) {
        free(n);
        return NULL;
    }
    if (nonblocking_cloexec(fds[0]) < 0 || nonblocking_cloexec(fds[1]) < 0) {
        close(fds[0]);
        close(fds[1]);
        free(n);
        return NULL;
    }
    n->rfd = fds[0];
    n->wfd = fds[1];
    /* Time out on the monotonic clock: a wall-clock step (NTP) must not stretch a wait. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&n->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        close(n->rfd);
        close(n->wfd);
        free(n);
        return NULL;
    }
    pthread_mutex_init(&n->lock, NULL);
    return n;
}

void hd_outbox_notifier_free(hd_outbox_notifier *n)
{
    if (n == NULL)
        return;
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    close(n->rfd);
    close(n->wfd);
    free(n);
}

int hd_outbox_notifier_offer(hd_outbox_notifier *n, const char *token, int64_t lease_ms)
{
    int withdraw = token == NULL || *token == '\0';
    if (n == NULL || (!withdraw && (strlen(token) > HD_OUTBOX_TOKEN_MAX || lease_ms <= 0)))
        return HD_EINVAL;
    pthread_mutex_lock(&n->lock);
    snprintf(n->token, sizeof n->token, "%s", withdraw ? "" : token);
    n->lease_ms = withdraw ? 0 : lease_ms;
    pthread_mutex_unlock(&n->lock);
    return 0;
}

/* The offer on n: its lease (0: none, or n NULL) and its token copied into token. */
static int64_t offered(hd_outbox_notifier *n, char *token)
{
    if (n == NULL)
        return 0;
    pthread_mutex_lock(&n->lock);
    int64_t lease = n->lease_ms;
    if (lease > 0)
        memcpy(token, n->token, sizeof n->token);
    pthread_mutex_unlock(&n->lock);
    return lease;
}

void hd_outbox_notifier_signal(void *notifier)
{
    hd_outbox_notifier *n = notifier;
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    n->count++;
    if (!n->armed) {
        ssize_t w;
        do
            w = write(n->wfd, "x", 1);
        while (w < 0 && errno == EINTR);
        n->armed = w == 1;
    }
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

/* Under n->lock: the signals up to now are taken, the pipe need not say so any more. */
static void disarm(hd_outbox_notifier *n)
{
    if (!n->armed)
        return;
    char buf[8];
    while (read(n->rfd, buf, sizeof buf) > 0)
        ;
    n->armed = 0;
}

int hd_outbox_notifier_wait(hd_outbox_notifier *n, uint64_t *seen, int timeout_ms)
{
    if (n == NULL || seen == NULL)
        return HD_EINVAL;
    struct timespec deadline;
    hd_clock_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&n->lock);
    int timed_out = 0;
    while (n->count == *seen && !timed_out && timeout_ms != 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&n->cond, &n->lock);
        else
            timed_out = pthread_cond_timedwait(&n->cond, &n->lock, &deadline) != 0;
    }
    int changed = n->count != *seen;
    *seen = n->count;
    disarm(n);
    pthread_mutex_unlock(&n->lock);
    return changed;
}

int hd_outbox_notifier_fd(const hd_outbox_notifier *n)
{
    return n != NULL ? n->rfd : -1;
}

void hd_outbox_set_notifier(hd_store *store, hd_outbox_notifier *n)
{
    if (store != NULL)
        store->outbox_notifier = n;
}

hd_outbox_notifier *hd_outbox_get_notifier(const hd_store *store)
{
    return store != NULL ? store->outbox_notifier : NULL;
}

void hd_outbox_signal(hd_store *store)
{
    if (store != NULL)
        hd_outbox_notifier_signal(store->outbox_notifier);
}
