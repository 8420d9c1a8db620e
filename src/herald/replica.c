/* herald/replica.c — routing stale-tolerant reads to a standby (see replica.h). */
#include "herald/replica.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/store_pg.h"

/* Subjects longer than this share their slot key with others of the same prefix: that
 * only sends more reads to the primary (the slot keeps the larger position), never fewer. */
#define SUBJECT_KEY_MAX 63

typedef struct slot {
    uint64_t lsn; /* 0 = empty */
    char key[SUBJECT_KEY_MAX + 1];
} slot;

struct hd_replica {
    hd_store *primary; /* borrowed */
    hd_store *standby; /* owned; NULL until connected */
    char *read_url;    /* owned; NULL = no standby */
    hd_replica_options o;

    int up;              /* the last standby query succeeded */
    int64_t retry_at;    /* monotonic ms: while down, leave the standby alone until then */
    int64_t checked_at;  /* monotonic ms of the last lag check; 0 = never */
    uint64_t replay_lsn; /* standby's last known replay position */
    int floor_unknown;   /* a write's position could not be read: raise the floor at the
                            next check to the primary's position then */
    uint64_t floor;      /* every subject's reads wait for this (pushed-out slots) */
    uint64_t newest;     /* the newest position written through this handle */
    slot *slots;         /* o.subjects of them */

    /* What other threads read (hd_replica_stats_get). */
    atomic_int a_up;
    atomic_llong a_lag_ms;
    atomic_ullong a_reads[HD_REPLICA_ROUTES];
    atomic_ullong a_floor_raises;
};

const char *hd_replica_route_name(hd_replica_route route)
{
    static const char *const names[HD_REPLICA_ROUTES] = {"standby", "no_standby", "down", "lagging",
                                                         "own_write"};
    return (unsigned)route < HD_REPLICA_ROUTES ? names[route] : "?";
}

/* ---- positions --------------------------------------------------------------------------- */

int hd_replica_lsn_parse(const char *text, uint64_t *out)
{
    if (text == NULL || out == NULL)
        return HD_EINVAL;
    uint64_t part[2] = {0, 0};
    const char *p = text;
    for (int i = 0; i < 2; i++) {
        int digits = 0;
        for (; *p; p++, digits++) {
            int c = (unsigned char)*p, v;
            if (c >= '0' && c <= '9')
                v = c - '0';
            else if (c >= 'a' && c <= 'f')
                v = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                v = c - 'A' + 10;
            else
                break;
            if (digits == 8)
                return HD_EINVAL;
            part[i] = part[i] << 4 | (uint64_t)v;
        }
        if (digits == 0 || (i == 0 && *p++ != '/'))
            return HD_EINVAL;
    }
    if (*p != '\0')
        return HD_EINVAL;
    *out = part[0] << 32 | part[1];
    return 0;
}

int hd_replica_lsn_format(uint64_t lsn, char out[HD_REPLICA_LSN_MAX + 1])
{
    return snprintf(out, HD_REPLICA_LSN_MAX + 1, "%" PRIX64 "/%" PRIX64, lsn >> 32,
                    lsn & 0xFFFFFFFFu);
}

/* ---- the decision ----------------------------------------------------------------------- */

hd_replica_route hd_replica_decide(const hd_replica_view *v)
{
    if (!v->configured)
        return HD_REPLICA_NO_STANDBY;
    if (!v->up)
        return HD_REPLICA_DOWN;
    if (v->lag_ms < 0 || v->lag_ms > v->max_lag_ms)
        return HD_REPLICA_LAGGING;
    if (v->need_lsn > v->replay_lsn)
        return HD_REPLICA_OWN_WRITE;
    return HD_REPLICA_STANDBY;
}

/* ---- the read-your-writes table --------------------------------------------------------- */

/* FNV-1a over the key: cheap, and user ids are not chosen to collide. */
static size_t slot_of(const hd_replica *r, const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % r->o.subjects);
}

static void key_of(const char *subject, char key[SUBJECT_KEY_MAX + 1])
{
    size_t n = strlen(subject);
    if (n > SUBJECT_KEY_MAX)
        n = SUBJECT_KEY_MAX;
    memcpy(key, subject, n);
    key[n] = '\0';
}

void hd_replica_note(hd_replica *r, const char *subject, uint64_t lsn)
{
    if (r == NULL || lsn == 0)
        return;
    if (lsn > r->newest)
        r->newest = lsn;
    if (subject == NULL)
        return;
    char key[SUBJECT_KEY_MAX + 1];
    key_of(subject, key);
    slot *s = &r->slots[slot_of(r, key)];
    if (s->lsn != 0 && strcmp(s->key, key) != 0) {
        /* Push the other subject out, but keep its promise: everyone waits for it now. */
        if (s->lsn > r->floor)
            r->floor = s->lsn;
        atomic_fetch_add(&r->a_floor_raises, 1);
        s->lsn = 0;
    }
    if (lsn > s->lsn) {
        s->lsn = lsn;
        memcpy(s->key, key, sizeof key);
    }
}

uint64_t hd_replica_needed(const hd_replica *r, const char *subject)
{
    if (r == NULL)
        return 0;
    uint64_t need = r->floor;
    if (subject == NULL)
        return r->newest > need ? r->newest : need;
    char key[SUBJECT_KEY_MAX + 1];
    key_of(subject, key);
    const slot *s = &r->slots[slot_of(r, key)];
    if (s->lsn > need && strcmp(s->key, key) == 0)
        need = s->lsn;
    return need;
}

/* Forget what the standby has replayed: those reads are safe on it from now on. */
static void forget_replayed(hd_replica *r, const char *subject)
{
    if (r->floor <= r->replay_lsn)
        r->floor = 0;
    if (r->newest <= r->replay_lsn)
        r->newest = 0;
    if (subject == NULL)
        return;
    char key[SUBJECT_KEY_MAX + 1];
    key_of(subject, key);
    slot *s = &r->slots[slot_of(r, key)];
    if (s->lsn != 0 && s->lsn <= r->replay_lsn && strcmp(s->key, key) == 0)
        s->lsn = 0;
}

/* ---- talking to the servers -------------------------------------------------------------- */

/* The one text cell at (0, col) of sql's result parsed as a position; NULL cells give 0. */
static int query_lsn(hd_store *s, const char *sql, uint64_t *out, hd_error *err)
{
    hd_rows *rows = NULL;
    int rc = hd_store_query(s, sql, NULL, 0, &rows, err);
    if (rc < 0)
        return rc;
    const char *t = hd_rows_text(rows, 0, 0);
    *out = 0;
    if (t != NULL && hd_replica_lsn_parse(t, out) < 0)
        rc = hd_error_set(err, HD_EPROTO, "not a WAL position: %s", t);
    hd_rows_free(rows);
    return rc;
}

static void mark_down(hd_replica *r)
{
    r->up = 0;
    r->retry_at = hd_clock_ms() + r->o.retry_ms;
    atomic_store(&r->a_up, 0);
    atomic_store(&r->a_lag_ms, -1);
}

static int connect_standby(hd_replica *r)
{
    if (r->standby != NULL)
        return 0;
    int rc = hd_store_open(r->read_url, &r->standby, NULL);
    if (rc < 0)
        r->standby = NULL;
    return rc;
}

/* Measure the lag (replica.h: "How stale a standby read can be"). The standby is asked
 * FIRST: if what it had replayed then is at or past what the primary had written after,
 * it was fully caught up. Returns 0, or < 0 when the STANDBY failed (the caller marks it
 * down); a failing primary gives an unknown lag (-1: the read goes to the primary, which
 * reports its own failure). */
static int check_lag(hd_replica *r)
{
    hd_rows *rows = NULL;
    int rc = hd_store_query(r->standby,
                            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
                            "CAST(EXTRACT(EPOCH FROM clock_timestamp() - "
                            "pg_last_xact_replay_timestamp()) * 1000 AS bigint)",
                            NULL, 0, &rows, NULL);
    if (rc < 0)
        return rc;
    int in_recovery = strcmp(hd_rows_text(rows, 0, 0) ? hd_rows_text(rows, 0, 0) : "", "t") == 0;
    const char *replay = hd_rows_text(rows, 0, 1);
    int has_age = !hd_rows_is_null(rows, 0, 2);
    int64_t age_ms = hd_rows_int(rows, 0, 2);
    uint64_t lsn = 0;
    if (replay != NULL && hd_replica_lsn_parse(replay, &lsn) < 0)
        rc = HD_EPROTO;
    hd_rows_free(rows);
    if (rc < 0)
        return rc;

    r->up = 1;
    atomic_store(&r->a_up, 1);
    r->checked_at = hd_clock_ms();
    int64_t lag = -1;
    uint64_t primary_lsn = 0;
    if (!in_recovery) {
        /* Promoted, or the read URL names a primary: it has everything it will ever have. */
        r->replay_lsn = UINT64_MAX;
        lag = 0;
    } else if (query_lsn(r->primary, "SELECT pg_current_wal_lsn()", &primary_lsn, NULL) == 0) {
        r->replay_lsn = lsn;
        if (lsn >= primary_lsn)
            lag = 0;
        else if (has_age)
            lag = age_ms < 0 ? 0 : age_ms;
        /* else: behind, and no commit replayed since it started: unknown, too much. */
        if (r->floor_unknown) {
            r->floor_unknown = 0;
            if (primary_lsn > r->floor)
                r->floor = primary_lsn;
        }
    } else {
        r->replay_lsn = lsn;
    }
    atomic_store(&r->a_lag_ms, (long long)lag);
    return 0;
}

/* A fresh replay position only (a subject waits for one; the lag is not re-measured). */
static int refresh_replay(hd_replica *r)
{
    uint64_t lsn = 0;
    int rc = query_lsn(r->standby, "SELECT pg_last_wal_replay_lsn()", &lsn, NULL);
    if (rc == 0 && lsn > r->replay_lsn && r->replay_lsn != UINT64_MAX)
        r->replay_lsn = lsn;
    return rc;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int url_is_pg(const char *url)
{
    return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
}

int hd_replica_open(hd_store *primary, const char *read_url, const hd_replica_options *opts,
                    hd_replica **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (primary == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_replica_open: NULL argument");
    hd_replica_options o = opts != NULL ? *opts : (hd_replica_options){0};
    if (o.max_lag_ms < 0 || o.check_ms < 0 || o.retry_ms < 0 ||
        o.subjects > HD_REPLICA_SUBJECTS_MAX)
        return hd_error_set(err, HD_EINVAL, "hd_replica_open: a setting is out of range");
    o.max_lag_ms = o.max_lag_ms ? o.max_lag_ms : HD_REPLICA_MAX_LAG_DEFAULT;
    o.check_ms = o.check_ms ? o.check_ms : HD_REPLICA_CHECK_DEFAULT;
    o.retry_ms = o.retry_ms ? o.retry_ms : HD_REPLICA_RETRY_DEFAULT;
    o.subjects = o.subjects ? o.subjects : HD_REPLICA_SUBJECTS_DEFAULT;
    int configured = read_url != NULL && read_url[0] != '\0';
    if (configured && !url_is_pg(read_url))
        return hd_error_set(err, HD_EURL, "the read URL must be postgresql:// (a standby)");
    if (configured && !hd_store_is_pg(primary))
        return hd_error_set(err, HD_EINVAL,
                            "a standby needs a PostgreSQL primary (the database URL)");

    hd_replica *r = calloc(1, sizeof *r);
    if (r == NULL || (r->slots = calloc(o.subjects, sizeof *r->slots)) == NULL ||
        (configured && (r->read_url = strdup(read_url)) == NULL)) {
        hd_replica_close(r);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    r->primary = primary;
    r->o = o;
    atomic_init(&r->a_up, 0);
    atomic_init(&r->a_lag_ms, -1);
    for (int i = 0; i < HD_REPLICA_ROUTES; i++)
        atomic_init(&r->a_reads[i], 0);
    atomic_init(&r->a_floor_raises, 0);
    /* A standby away at start-up is not fatal: reads use the primary until it answers. */
    if (configured && (connect_standby(r) < 0 || check_lag(r) < 0))
        mark_down(r);
    *out = r;
    return 0;
}

void hd_replica_close(hd_replica *r)
{
    if (r == NULL)
        return;
    hd_store_close(r->standby);
    free(r->read_url);
    free(r->slots);
    free(r);
}

int hd_replica_configured(const hd_replica *r)
{
    return r != NULL && r->read_url != NULL;
}

/* ---- the calls of every request --------------------------------------------------------- */

int hd_replica_wrote(hd_replica *r, const char *subject, uint64_t *lsn, hd_error *err)
{
    if (lsn != NULL)
        *lsn = 0;
    if (r == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_replica_wrote: NULL argument");
    if (r->read_url == NULL)
        return 0; /* every read is on the primary: nothing to remember */
    if (hd_store_in_transaction(r->primary))
        return hd_error_set(err, HD_ESTATE, "hd_replica_wrote: call it after the commit");
    uint64_t pos = 0;
    int rc = query_lsn(r->primary, "SELECT pg_current_wal_lsn()", &pos, err);
    if (rc < 0) {
        r->floor_unknown = 1;
        r->checked_at = 0; /* measure (and raise the floor) at the next read */
        return rc;
    }
    hd_replica_note(r, subject, pos);
    if (lsn != NULL)
        *lsn = pos;
    return 0;
}

static hd_store *routed(hd_replica *r, hd_replica_route route, hd_replica_route *out)
{
    atomic_fetch_add(&r->a_reads[route], 1);
    if (out != NULL)
        *out = route;
    return route == HD_REPLICA_STANDBY ? r->standby : r->primary;
}

hd_store *hd_replica_for_read(hd_replica *r, const char *subject, uint64_t min_lsn,
                              hd_replica_route *route)
{
    if (r->read_url == NULL)
        return routed(r, HD_REPLICA_NO_STANDBY, route);
    int64_t now = hd_clock_ms();
    if (!r->up) {
        if (now < r->retry_at)
            return routed(r, HD_REPLICA_DOWN, route);
        r->checked_at = 0; /* try it again now */
    }
    if (r->checked_at == 0 || now - r->checked_at >= r->o.check_ms || r->floor_unknown) {
        if (connect_standby(r) < 0 || check_lag(r) < 0) {
            mark_down(r);
            return routed(r, HD_REPLICA_DOWN, route);
        }
    }
    uint64_t need = hd_replica_needed(r, subject);
    if (min_lsn > need)
        need = min_lsn;
    hd_replica_view v = {.configured = 1,
                         .up = r->up,
                         .lag_ms = atomic_load(&r->a_lag_ms),
                         .max_lag_ms = r->o.max_lag_ms,
                         .replay_lsn = r->replay_lsn,
                         .need_lsn = need};
    hd_replica_route d = hd_replica_decide(&v);
    if (d == HD_REPLICA_OWN_WRITE) {
        /* The cached position may just be old: one look at the standby, which usually has
         * replayed the write within milliseconds. */
        if (refresh_replay(r) < 0) {
            mark_down(r);
            return routed(r, HD_REPLICA_DOWN, route);
        }
        v.replay_lsn = r->replay_lsn;
        d = hd_replica_decide(&v);
    }
    if (d == HD_REPLICA_STANDBY)
        forget_replayed(r, subject);
    return routed(r, d, route);
}

hd_store *hd_replica_read_failed(hd_replica *r, hd_store *store, hd_replica_route *route)
{
    if (r == NULL || store == NULL || store != r->standby)
        return NULL;
    mark_down(r);
    return routed(r, HD_REPLICA_DOWN, route);
}

int hd_replica_in_recovery(hd_store *store, hd_error *err)
{
    if (!hd_store_is_pg(store))
        return hd_error_set(err, HD_EUNSUPPORTED, "pg_is_in_recovery: not PostgreSQL");
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, "SELECT pg_is_in_recovery()", NULL, 0, &rows, err);
    if (rc < 0)
        return rc;
    const char *t = hd_rows_text(rows, 0, 0);
    rc = t != NULL && strcmp(t, "t") == 0;
    hd_rows_free(rows);
    return rc;
}

void hd_replica_stats_get(const hd_replica *r, hd_replica_stats *out)
{
    hd_replica *m = (hd_replica *)r; /* atomics are read through a non-const pointer */
    memset(out, 0, sizeof *out);
    if (r == NULL) {
        out->lag_ms = -1;
        return;
    }
    out->standby_up = atomic_load(&m->a_up);
    out->lag_ms = atomic_load(&m->a_lag_ms);
    for (int i = 0; i < HD_REPLICA_ROUTES; i++)
        out->reads[i] = atomic_load(&m->a_reads[i]);
    out->floor_raises = atomic_load(&m->a_floor_raises);
}
