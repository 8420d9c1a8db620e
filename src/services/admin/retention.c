/* retention.c — herald-admin retention run (see admin.h): delete dispatched outbox rows older
 * than HD_RELAY_RETENTION and inbox ids older than HD_INBOX_RETENTION, in batches of
 * HD_RETENTION_BATCH rows, one short transaction each (hd_outbox_purge_dispatched_batch,
 * hd_inbox_purge_batch say why).
 *
 * Several instances at once (a cron job on every host): on PostgreSQL one runs at a time,
 * through a session advisory lock taken with pg_try_advisory_lock; a second instance does not
 * wait, it says "another retention run holds the lock" and exits 0 — the work is being done,
 * which is what the cron job wanted, and a non-zero exit would page someone for nothing. The
 * lock is released with the connection, so a killed run cannot hold it. On SQLite there is
 * one writer at a time anyway; two runs interleave their batches and each deletes what the
 * other left, which is as correct, just not quicker.
 * Known limit: the relay's own purge (hd_relay_run, every purge_every_ms) does not take the
 * lock; it deletes the same rows (the oldest first), so at worst one DELETE waits for the
 * other's short batch. */
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "admin/db.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store_pg.h"

/* The advisory lock's key: "hera" in ASCII, one bigint for the whole database. Documented in
 * docs/services/admin.md so that an operator can look for its holder in pg_locks. */
#define RETENTION_LOCK_KEY        1751478881LL
#define INBOX_RETENTION_DEFAULT   (168LL * 3600000) /* herald-notifications' default */
#define RETENTION_BATCH_DEFAULT   500
#define RETENTION_DURATION_MAX_MS (3650LL * 24 * 3600000)

static const char group_help[] =
    "usage: herald-admin [--json] retention run\n"
    "\n"
    "Deletes what the outbox and the inbox of HD_DATABASE_URL no longer need, in small\n"
    "batches (one short transaction each, so the relay and the consumers never wait long):\n"
    "  outbox  rows dispatched more than HD_RELAY_RETENTION ago (default 168h); pending and\n"
    "          parked rows are never deleted\n"
    "  inbox   ids received more than HD_INBOX_RETENTION ago (default 168h; 0 keeps them)\n"
    "HD_RETENTION_BATCH rows per transaction (default 500, 1..10000). A table the database\n"
    "does not have is skipped.\n"
    "\n"
    "Safe to run from several hosts: on PostgreSQL one run at a time holds an advisory lock\n"
    "(pg_try_advisory_lock(1751478881)); another says \"another retention run holds the lock\"\n"
    "and exits 0 without deleting anything.\n"
    "Exit status 0, 1 when the database fails, 2 on a usage or settings error.\n";

typedef struct purge_result {
    int present;   /* the module's table exists */
    int64_t rows;  /* deleted */
    int batches;   /* transactions */
    int64_t older; /* the retention used, ms */
} purge_result;

typedef int (*purge_fn)(hd_store *, int64_t, size_t, hd_error *);

static int purge_all(hd_store *store, purge_fn fn, int64_t older, size_t batch, purge_result *r,
                     hd_error *err)
{
    for (;;) {
        int n = fn(store, older, batch, err);
        if (n < 0)
            return n;
        r->rows += n;
        r->batches++;
        if ((size_t)n < batch)
            return 0;
    }
}

static int inbox_batch(hd_store *s, int64_t older, size_t batch, hd_error *err)
{
    return hd_inbox_purge_batch(s, older, batch, err);
}

/* 1 when this session now holds the lock, 0 when another does, or a code. */
static int try_lock(hd_store *store, hd_error *err)
{
    hd_value p[] = {hd_value_int(RETENTION_LOCK_KEY)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, "SELECT pg_try_advisory_lock($1)", p, 1, &rows, err);
    if (rc < 0)
        return rc;
    const char *v = hd_rows_text(rows, 0, 0);
    int got = v != NULL && (strcmp(v, "t") == 0 || strcmp(v, "true") == 0);
    hd_rows_free(rows);
    return got;
}

static json_t *result_json(const purge_result *r)
{
    return json_pack("{s:b, s:I, s:I, s:i}", "present", r->present, "retention_ms",
                     (json_int_t)r->older, "deleted", (json_int_t)r->rows, "batches", r->batches);
}

static void print_result(FILE *out, const char *what, const char *rows, const purge_result *r)
{
    char age[32];
    admin_fmt_age(age, sizeof age, r->older);
    if (!r->present)
        fprintf(out, "%-7s no table here: skipped\n", what);
    else if (r->older == 0 && strcmp(what, "inbox") == 0)
        fprintf(out, "%-7s retention 0: ids are kept forever, nothing deleted\n", what);
    else
        fprintf(out, "%-7s deleted %lld %s older than %s (%d batch%s)\n", what, (long long)r->rows,
                rows, age, r->batches, r->batches == 1 ? "" : "es");
}

static int run(hd_store *store, int64_t outbox_ms, int64_t inbox_ms, size_t batch,
               const admin_io *io)
{
    hd_error err;
    hd_error_clear(&err);
    purge_result ob = {0, 0, 0, outbox_ms}, ib = {0, 0, 0, inbox_ms};
    int rc = 0;
    if (hd_store_is_pg(store)) {
        rc = try_lock(store, &err);
        if (rc == 0) {
            fprintf(io->err, "herald-admin retention: another retention run holds the lock "
                             "(pg_try_advisory_lock(1751478881)); nothing done\n");
            if (io->json) {
                json_t *doc = json_pack("{s:b}", "locked_by_another", 1);
                json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                fputc('\n', io->out);
                json_decref(doc);
            }
            return ADMIN_OK;
        }
    }
    if (rc >= 0 && (rc = admin_db_has(store, "outbox", &err)) > 0) {
        ob.present = 1;
        rc = purge_all(store, hd_outbox_purge_dispatched_batch, outbox_ms, batch, &ob, &err);
    }
    if (rc >= 0 && (rc = admin_db_has(store, "inbox", &err)) > 0) {
        ib.present = 1;
        /* Retention 0 means "keep forever" for the inbox (the services' meaning): deleting
         * every id would make every redelivery new again. */
        rc = inbox_ms > 0 ? purge_all(store, inbox_batch, inbox_ms, batch, &ib, &err) : 0;
    }
    if (rc < 0) {
        fprintf(io->err, "herald-admin retention: %s (deleted so far: outbox %lld, inbox %lld)\n",
                err.text, (long long)ob.rows, (long long)ib.rows);
        return ADMIN_FAILED;
    }
    if (io->json) {
        json_t *doc = json_pack("{s:o, s:o, s:I}", "outbox", result_json(&ob), "inbox",
                                result_json(&ib), "batch", (json_int_t)batch);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', io->out);
        json_decref(doc);
    } else {
        print_result(io->out, "outbox", "dispatched rows", &ob);
        print_result(io->out, "inbox", "ids", &ib);
    }
    return ADMIN_OK;
}

int admin_retention(const hd_config *cfg, int argc, char **argv, const admin_io *io_in)
{
    admin_io io = *io_in;
    admin_take_json(&argc, argv, 1, &io);
    if (argc < 2 || admin_wants_help(argc, argv, 1)) {
        fputs(group_help, argc < 2 ? io.err : io.out);
        return argc < 2 ? ADMIN_USAGE : ADMIN_OK;
    }
    if (strcmp(argv[1], "run") != 0 || argc > 2) {
        fprintf(io.err, "herald-admin retention: unexpected '%s' (try --help)\n",
                argv[argc > 2 ? 2 : 1]);
        return ADMIN_USAGE;
    }
    hd_error err;
    hd_error_clear(&err);
    int64_t outbox_ms = 0, inbox_ms = 0, batch = 0;
    if (hd_config_get_duration_ms(cfg, "HD_RELAY_RETENTION", HD_RELAY_RETENTION_DEFAULT, 0,
                                  RETENTION_DURATION_MAX_MS, &outbox_ms, &err) < 0 ||
        hd_config_get_duration_ms(cfg, "HD_INBOX_RETENTION", INBOX_RETENTION_DEFAULT, 0,
                                  RETENTION_DURATION_MAX_MS, &inbox_ms, &err) < 0 ||
        hd_config_get_int(cfg, "HD_RETENTION_BATCH", RETENTION_BATCH_DEFAULT, 1, 10000, &batch,
                          &err) < 0) {
        fprintf(io.err, "herald-admin retention: %s\n", err.text);
        return ADMIN_USAGE;
    }
    hd_store *store = NULL;
    int rc = admin_db_open(cfg, &io, "retention", &store);
    if (rc != ADMIN_OK)
        return rc;
    rc = run(store, outbox_ms, inbox_ms, (size_t)batch, &io);
    hd_store_close(store); /* also releases the advisory lock */
    return rc;
}
