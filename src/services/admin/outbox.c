/* outbox.c — herald-admin outbox: status, parked, replay (see admin.h).
 *
 * The SQL is in the library (herald/outbox.h: hd_outbox_stats_read, hd_outbox_list_parked,
 * hd_outbox_redrive, hd_outbox_redrive_type); this file parses the command line and prints.
 * Every replay writes one audit line (herald/log.h JSON, to stderr): who, what, how many. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "admin/db.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/outbox.h"

static const char group_help[] =
    "usage: herald-admin [--json] outbox SUBCOMMAND [ARGS...]\n"
    "\n"
    "The transactional outbox of the service whose database HD_DATABASE_URL names.\n"
    "\n"
    "subcommands:\n"
    "  status                 pending, leased, parked and dispatched rows, and the lag (age\n"
    "                         of the oldest row not yet dispatched), in total and per type\n"
    "  parked [--type T] [--limit N]\n"
    "                         the parked rows (failed max attempts): reason and attempts\n"
    "  replay ID | --type T   make parked rows due again (attempts from 0); audit-logged\n"
    "\n"
    "`herald-admin outbox SUBCOMMAND --help` describes one subcommand.\n";

static const char status_help[] =
    "usage: herald-admin [--json] outbox status\n"
    "\n"
    "Counts the outbox's rows by state, in total and per event type:\n"
    "  pending     waiting for the relay (due now, or at their next retry)\n"
    "  leased      claimed by a relay that is publishing them now\n"
    "  parked      failed the relay's max attempts; wait for `outbox replay`\n"
    "  dispatched  confirmed by the broker; deleted by `retention run` after\n"
    "              HD_RELAY_RETENTION\n"
    "  lag         age of the oldest pending or leased row: alert when it grows\n"
    "Exit status 0, 1 when the database fails, 2 on a usage error.\n";

static const char parked_help[] =
    "usage: herald-admin [--json] outbox parked [--type TYPE] [--limit N]\n"
    "\n"
    "Lists parked rows, oldest first (at most N, default 100): seq, event type, attempts,\n"
    "when parked, the aggregate and the last error. Payloads are never shown.\n";

static const char replay_help[] =
    "usage: herald-admin [--json] outbox replay ID\n"
    "       herald-admin [--json] outbox replay --type TYPE\n"
    "\n"
    "Makes one parked row (by its seq, from `outbox parked`) or every parked row of an event\n"
    "type due again, with attempts counted from 0; the relay publishes them on its next\n"
    "claim. Fix the cause first (a missing exchange or binding), or they park again.\n"
    "Each replay writes an audit line (JSON) to stderr: who, what, how many.\n"
    "Exit status 0; 1 when ID is not a parked row or the database fails.\n";

/* A number the operator typed: digits only, in [min, max]. */
static int parse_count(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static json_t *type_json(const hd_outbox_type_stats *t)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "pending", (json_int_t)t->pending, "leased",
                     (json_int_t)t->leased, "parked", (json_int_t)t->parked, "dispatched",
                     (json_int_t)t->dispatched, "oldest_pending_age_ms",
                     (json_int_t)t->oldest_waiting_age_ms);
}

/* The width of the TYPE column: the longest of n names, stride bytes apart (a member of an
 * array of structs), so that the numbers line up. */
static int type_width(const char *const *names, size_t n, size_t stride)
{
    size_t w = 8;
    for (size_t i = 0; i < n; i++) {
        const char *name = *(const char *const *)(const void *)((const char *)names + i * stride);
        if (strlen(name) > w)
            w = strlen(name);
    }
    return (int)(w > 80 ? 80 : w);
}

static void print_type(FILE *out, int w, const char *name, const hd_outbox_type_stats *t)
{
    char lag[32];
    admin_fmt_age(lag, sizeof lag, t->oldest_waiting_age_ms);
    fprintf(out, "%-*s %8lld %8lld %8lld %10lld %8s\n", w, name, (long long)t->pending,
            (long long)t->leased, (long long)t->parked, (long long)t->dispatched,
            t->pending + t->leased > 0 ? lag : "-");
}

static int cmd_status(hd_store *store, const admin_io *io)
{
    hd_error err;
    hd_error_clear(&err);
    hd_outbox_stats *st = NULL;
    if (hd_outbox_stats_read(store, 0, &st, &err) < 0) {
        fprintf(io->err, "herald-admin outbox status: %s\n", err.text);
        return ADMIN_FAILED;
    }
    if (io->json) {
        json_t *doc = type_json(&st->total);
        json_t *types = json_array();
        for (size_t i = 0; i < st->ntypes; i++) {
            json_t *t = type_json(&st->types[i]);
            json_object_set_new(t, "type", json_string(st->types[i].type));
            json_array_append_new(types, t);
        }
        json_object_set_new(doc, "types", types);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', io->out);
        json_decref(doc);
    } else {
        int w = type_width(&st->types[0].type, st->ntypes, sizeof st->types[0]);
        fprintf(io->out, "%-*s %8s %8s %8s %10s %8s\n", w, "TYPE", "PENDING", "LEASED", "PARKED",
                "DISPATCHED", "LAG");
        for (size_t i = 0; i < st->ntypes; i++)
            print_type(io->out, w, st->types[i].type, &st->types[i]);
        print_type(io->out, w, "(total)", &st->total);
    }
    hd_outbox_stats_free(st);
    return ADMIN_OK;
}

static int cmd_parked(hd_store *store, int argc, char **argv, const admin_io *io)
{
    const char *type = NULL;
    int64_t limit = 100;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
            type = argv[++i];
        } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (parse_count(argv[++i], 1, HD_OUTBOX_BATCH_MAX, &limit) < 0) {
                fprintf(io->err, "herald-admin outbox parked: --limit takes 1..%d\n",
                        HD_OUTBOX_BATCH_MAX);
                return ADMIN_USAGE;
            }
        } else {
            fprintf(io->err, "herald-admin outbox parked: unexpected '%s' (try --help)\n", argv[i]);
            return ADMIN_USAGE;
        }
    }
    hd_error err;
    hd_error_clear(&err);
    hd_outbox_parked_list *l = NULL;
    if (hd_outbox_list_parked(store, type, (size_t)limit, &l, &err) < 0) {
        fprintf(io->err, "herald-admin outbox parked: %s\n", err.text);
        return ADMIN_FAILED;
    }
    int64_t now = hd_time_now_ms();
    if (io->json) {
        json_t *rows = json_array();
        for (size_t i = 0; i < l->count; i++) {
            const hd_outbox_parked *r = &l->rows[i];
            json_array_append_new(
                rows, json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:s, s:I, s:I}", "seq",
                                (json_int_t)r->seq, "event_id", r->event_id, "type", r->type,
                                "aggregate_type", r->aggregate_type, "aggregate_id",
                                r->aggregate_id, "attempts", r->attempts, "reason", r->last_error,
                                "created_at_ms", (json_int_t)r->created_at_ms, "parked_at_ms",
                                (json_int_t)r->parked_at_ms));
        }
        json_t *doc = json_pack("{s:o}", "parked", rows);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', io->out);
        json_decref(doc);
    } else if (l->count == 0) {
        fprintf(io->out, "no parked rows%s%s\n", type ? " of type " : "", type ? type : "");
    } else {
        int w = type_width(&l->rows[0].type, l->count, sizeof l->rows[0]);
        fprintf(io->out, "%-8s %-*s %8s %-10s %-24s %s\n", "SEQ", w, "TYPE", "ATTEMPTS", "PARKED",
                "AGGREGATE", "REASON");
        for (size_t i = 0; i < l->count; i++) {
            const hd_outbox_parked *r = &l->rows[i];
            char ago[32], agg[256];
            admin_fmt_age(ago, sizeof ago, now - r->parked_at_ms);
            strcat(ago, " ago");
            snprintf(agg, sizeof agg, "%s/%s", r->aggregate_type, r->aggregate_id);
            fprintf(io->out, "%-8lld %-*s %8d %-10s %-24s %s\n", (long long)r->seq, w, r->type,
                    r->attempts, ago, agg, r->last_error);
        }
        if ((int64_t)l->count == limit)
            fprintf(io->out, "(first %lld shown: --limit N for more)\n", (long long)limit);
    }
    hd_outbox_parked_list_free(l);
    return ADMIN_OK;
}

static int cmd_replay(hd_store *store, int argc, char **argv, const admin_io *io)
{
    int64_t seq = 0;
    const char *type = NULL;
    if (argc == 4 && strcmp(argv[2], "--type") == 0 && *argv[3] != '\0')
        type = argv[3];
    else if (argc != 3 || parse_count(argv[2], 1, INT64_MAX, &seq) < 0) {
        fprintf(io->err, "herald-admin outbox replay: give one row's seq or --type TYPE "
                         "(try --help)\n");
        return ADMIN_USAGE;
    }
    hd_error err;
    hd_error_clear(&err);
    int n = type ? hd_outbox_redrive_type(store, type, &err) : hd_outbox_redrive(store, seq, &err);
    if (n < 0) {
        fprintf(io->err, "herald-admin outbox replay: %s\n", err.text);
        return ADMIN_FAILED;
    }
    /* The audit line: a replay republishes events, so who did it and when must be on record
     * next to the services' own logs (same JSON shape, same collector). */
    hd_logger *lg = hd_logger_new("herald-admin", HD_LOG_INFO, io->err);
    char what[300];
    if (type != NULL)
        snprintf(what, sizeof what, "parked rows of type %s", type);
    else
        snprintf(what, sizeof what, "parked row seq %lld", (long long)seq);
    hd_log_json(lg, HD_LOG_INFO, NULL, "outbox replay",
                json_pack("{s:s, s:s, s:i}", "who", admin_who(), "what", what, "count", n));
    hd_logger_free(lg);
    if (io->json) {
        json_t *doc = type ? json_pack("{s:s, s:i}", "type", type, "replayed", n)
                           : json_pack("{s:I, s:i}", "seq", (json_int_t)seq, "replayed", n);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', io->out);
        json_decref(doc);
    } else if (type) {
        fprintf(io->out, "replayed %d parked row%s of type %s\n", n, n == 1 ? "" : "s", type);
    } else if (n > 0) {
        fprintf(io->out, "replayed row %lld\n", (long long)seq);
    }
    if (type == NULL && n == 0) {
        fprintf(io->err,
                "herald-admin outbox replay: row %lld is not parked (unknown, "
                "waiting or dispatched)\n",
                (long long)seq);
        return ADMIN_FAILED;
    }
    return ADMIN_OK;
}

int admin_outbox(const hd_config *cfg, int argc, char **argv, const admin_io *io_in)
{
    admin_io io = *io_in;
    admin_take_json(&argc, argv, 1, &io);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(group_help, argc < 2 ? io.err : io.out);
        return argc < 2 ? ADMIN_USAGE : ADMIN_OK;
    }
    const char *help = strcmp(argv[1], "status") == 0   ? status_help
                       : strcmp(argv[1], "parked") == 0 ? parked_help
                       : strcmp(argv[1], "replay") == 0 ? replay_help
                                                        : NULL;
    if (help == NULL) {
        fprintf(io.err, "herald-admin outbox: unknown subcommand '%s' (try --help)\n", argv[1]);
        return ADMIN_USAGE;
    }
    if (admin_wants_help(argc, argv, 2)) {
        fputs(help, io.out);
        return ADMIN_OK;
    }
    if (help == status_help && argc > 2) {
        fprintf(io.err, "herald-admin outbox status: unexpected '%s' (try --help)\n", argv[2]);
        return ADMIN_USAGE;
    }
    hd_store *store = NULL;
    int rc = admin_db_open(cfg, &io, "outbox", &store);
    if (rc != ADMIN_OK)
        return rc;
    hd_error err;
    hd_error_clear(&err);
    int has = admin_db_has(store, "outbox", &err);
    if (has <= 0) {
        fprintf(io.err, "herald-admin outbox: %s\n",
                has < 0 ? err.text : "this database has no outbox (hd_outbox was never created)");
        hd_store_close(store);
        return ADMIN_FAILED;
    }
    if (help == status_help)
        rc = cmd_status(store, &io);
    else if (help == parked_help)
        rc = cmd_parked(store, argc, argv, &io);
    else
        rc = cmd_replay(store, argc, argv, &io);
    hd_store_close(store);
    return rc;
}
