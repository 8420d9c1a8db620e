/* stream.c — herald-admin stream: declare, follow, replay, show, offsets (see admin.h and
 * herald/stream.h).
 *
 * A stream is a log: readers keep their own offsets, and reading again is always allowed.
 * This group reads one into a PROJECTION, the smallest read model that tells two readings
 * apart: a count of records per key, where the key is the CloudEvents type, followed by
 * "/" and data.sender when the event has one ("messages.message_sent/ada@example.com"). Its
 * rows and its reader's offset commit together, record by record (hd_stream_consumer_poll),
 * so a reader killed at any point resumes exactly: `follow` resumes, `replay` starts a fresh
 * projection from an offset or a time and reads until it caught up. Two projections of the
 * same records have the same rows: that is the check of integration.stream.
 *
 * Tables, in the database HD_DATABASE_URL names: hd_stream_offsets (the reader's offset,
 * consumer "projection:<name>"), and stream_projection (projection, key, events,
 * last_offset). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "admin/db.h"
#include "herald/clock.h"
#include "herald/stop.h"
#include "herald/stream.h"
#include "herald/topology.h"

#define IDLE_DEFAULT_MS 2000
#define KEY_MAX         300

static const char group_help[] =
    "usage: herald-admin [--json] stream SUBCOMMAND [ARGS...]\n"
    "\n"
    "A RabbitMQ stream (a log read by offset) and projections of it in the database\n"
    "HD_DATABASE_URL names (HD_AMQP_URL: the broker):\n"
    "  declare STREAM [--bind EXCHANGE KEY]... [--max-bytes N] [--max-age AGE]\n"
    "           declare the stream (x-queue-type stream) and bind it: the relay publishes\n"
    "           an event type to its topic exchange, so binding the stream there makes it\n"
    "           receive the type as well as the queues bound there\n"
    "  follow STREAM [--projection NAME] [--from START] [--until-idle MS] [--delay-ms MS]\n"
    "           read into projection NAME (default: main), resuming after its stored\n"
    "           offset (else from START: first|last|next|OFFSET|TIME, default first);\n"
    "           until SIGTERM/SIGINT, or until no record came for MS\n"
    "  replay STREAM (--from-offset N | --from-time T) [--projection NAME] [--idle MS]\n"
    "           a FRESH projection (default: replay-<time>; an existing one is emptied)\n"
    "           from offset N or RFC 3339 time T, until caught up (no record for MS,\n"
    "           default 2000)\n"
    "  show [--projection NAME]      the projection's rows (key, events, last offset)\n"
    "  offsets                       every reader's stored offset\n"
    "Exit status 0, 1 when the broker or the database fails, 2 on a usage error.\n";

/* ---- the projection ------------------------------------------------------------------------ */

static const char *const projection_steps[] = {
    "CREATE TABLE stream_projection ("
    " projection TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " events BIGINT NOT NULL,"
    " last_offset BIGINT NOT NULL,"
    " PRIMARY KEY (projection, key))",
};

typedef struct reader {
    const char *projection;
    int delay_ms;
} reader;

/* The record's key: type[/sender] of its CloudEvents body, or "(not an event)". */
static void record_key(const hd_stream_record *rec, char key[KEY_MAX])
{
    json_t *doc = json_loadb(rec->body, rec->body_len, 0, NULL);
    const char *type = json_string_value(json_object_get(doc, "type"));
    const char *sender = json_string_value(json_object_get(json_object_get(doc, "data"), "sender"));
    if (type == NULL)
        snprintf(key, KEY_MAX, "(not an event)");
    else if (sender != NULL)
        snprintf(key, KEY_MAX, "%s/%s", type, sender);
    else
        snprintf(key, KEY_MAX, "%s", type);
    json_decref(doc);
}

/* The effect of one record, in the transaction hd_stream_consumer_poll opened. */
static int project(void *ctx, hd_store *store, const hd_stream_record *rec, hd_error *err)
{
    reader *r = ctx;
    if (r->delay_ms > 0) /* a slow reader, for demonstrations and the kill -9 test */
        hd_sleep_ms(r->delay_ms);
    char key[KEY_MAX];
    record_key(rec, key);
    hd_value p[] = {hd_value_text(r->projection), hd_value_text(key), hd_value_int(rec->offset)};
    int rc = hd_store_exec(store,
                           "INSERT INTO stream_projection (projection, key, events, last_offset)"
                           " VALUES ($1, $2, 1, $3) ON CONFLICT (projection, key) DO UPDATE"
                           " SET events = stream_projection.events + 1,"
                           " last_offset = excluded.last_offset",
                           p, 3, err);
    return rc < 0 ? rc : 0;
}

/* ---- options ------------------------------------------------------------------------------- */

typedef struct options {
    const char *cmd;
    const char *stream;
    const char *projection;
    const char *from;
    const char *from_offset, *from_time;
    int64_t idle_ms, delay_ms;
    int64_t max_bytes;
    const char *max_age;
    const char *binds[32][2];
    size_t n_binds;
} options;

/* A non-negative decimal into *out; 1 when it was one. */
static int parse_count(const char *s, int64_t *out)
{
    hd_stream_start st;
    if (s == NULL || hd_stream_start_parse(s, &st, NULL) < 0 || st.from != HD_STREAM_OFFSET)
        return 0;
    *out = st.offset;
    return 1;
}

static int parse_args(int argc, char **argv, options *o, const admin_io *io)
{
    o->cmd = argv[1];
    int i = 2;
    int wants_stream = strcmp(o->cmd, "declare") == 0 || strcmp(o->cmd, "follow") == 0 ||
                       strcmp(o->cmd, "replay") == 0;
    if (wants_stream) {
        if (i >= argc || argv[i][0] == '-') {
            fprintf(io->err, "herald-admin stream %s: the stream's name is required\n", o->cmd);
            return ADMIN_USAGE;
        }
        o->stream = argv[i++];
    }
    while (i < argc) { /* each option takes its value; --bind takes two */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (strcmp(a, "--projection") == 0 && ok)
            o->projection = v;
        else if (strcmp(a, "--from") == 0 && ok)
            o->from = v;
        else if (strcmp(a, "--from-offset") == 0 && ok)
            o->from_offset = v;
        else if (strcmp(a, "--from-time") == 0 && ok)
            o->from_time = v;
        else if ((strcmp(a, "--until-idle") == 0 || strcmp(a, "--idle") == 0) && ok)
            ok = parse_count(v, &o->idle_ms);
        else if (strcmp(a, "--delay-ms") == 0 && ok)
            ok = parse_count(v, &o->delay_ms) && o->delay_ms <= 60000;
        else if (strcmp(a, "--max-bytes") == 0 && ok)
            ok = parse_count(v, &o->max_bytes);
        else if (strcmp(a, "--max-age") == 0 && ok)
            o->max_age = v;
        else if (strcmp(a, "--bind") == 0 && ok && i + 2 < argc && o->n_binds < 32) {
            o->binds[o->n_binds][0] = argv[i + 1];
            o->binds[o->n_binds++][1] = argv[i + 2];
            i++;
        } else {
            fprintf(io->err, "herald-admin stream %s: unexpected or incomplete '%s' (try --help)\n",
                    o->cmd, a);
            return ADMIN_USAGE;
        }
        if (!ok) {
            fprintf(io->err, "herald-admin stream %s: bad value '%s' for %s\n", o->cmd, v, a);
            return ADMIN_USAGE;
        }
        i += 2;
    }
    if (strcmp(o->cmd, "replay") == 0 && (o->from_offset == NULL) == (o->from_time == NULL)) {
        fprintf(io->err,
                "herald-admin stream replay: give one of --from-offset N or --from-time T\n");
        return ADMIN_USAGE;
    }
    if (o->projection != NULL && (*o->projection == '\0' || strlen(o->projection) > 100)) {
        fprintf(io->err, "herald-admin stream: --projection takes 1..100 characters\n");
        return ADMIN_USAGE;
    }
    return -1; /* go on */
}

/* ---- subcommands --------------------------------------------------------------------------- */

static const char *amqp_url(const hd_config *cfg, const admin_io *io)
{
    const char *url = hd_config_get(cfg, "HD_AMQP_URL", NULL);
    if (url == NULL || *url == '\0') {
        fprintf(io->err, "herald-admin stream: HD_AMQP_URL is not set (the broker's URL)\n");
        return NULL;
    }
    return url;
}

static int do_declare(const hd_config *cfg, const options *o, const admin_io *io)
{
    const char *url = amqp_url(cfg, io);
    if (url == NULL)
        return ADMIN_USAGE;
    hd_amqp_options ao = {.connection_name = "herald-admin stream"};
    hd_amqp *a = NULL;
    hd_error err;
    hd_stream_spec spec = {
        .name = o->stream, .max_length_bytes = o->max_bytes, .max_age = o->max_age};
    int rc = hd_amqp_open(url, &ao, &a, &err);
    if (rc == 0)
        rc = hd_stream_declare(a, &spec, &err);
    for (size_t i = 0; rc == 0 && i < o->n_binds; i++) {
        /* The exchanges the relay publishes to are durable topic exchanges (relay.h):
         * declare it the same way, so that binding before the first event works. */
        hd_exchange_spec ex = {.name = o->binds[i][0], .type = HD_EXCHANGE_TOPIC, .durable = 1};
        hd_binding_spec b = {.queue = o->stream, .exchange = o->binds[i][0], .key = o->binds[i][1]};
        rc = hd_exchange_declare(a, &ex, &err);
        if (rc == 0)
            rc = hd_queue_bind(a, &b, &err);
    }
    hd_amqp_close(a);
    if (rc < 0) {
        fprintf(io->err, "herald-admin stream declare: %s\n", err.text);
        return ADMIN_FAILED;
    }
    if (io->json) {
        json_t *binds = json_array();
        for (size_t i = 0; i < o->n_binds; i++)
            json_array_append_new(
                binds, json_pack("{s:s, s:s}", "exchange", o->binds[i][0], "key", o->binds[i][1]));
        json_t *doc = json_pack("{s:s, s:o}", "stream", o->stream, "bindings", binds);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', io->out);
        json_decref(doc);
    } else {
        fprintf(io->out, "stream %s declared", o->stream);
        for (size_t i = 0; i < o->n_binds; i++)
            fprintf(io->out, "%s %s (%s)", i ? "," : "; bound to", o->binds[i][0], o->binds[i][1]);
        fputc('\n', io->out);
    }
    return ADMIN_OK;
}

static int open_db(const hd_config *cfg, const admin_io *io, hd_store **store)
{
    int rc = admin_db_open(cfg, io, "stream", store);
    if (rc != ADMIN_OK)
        return rc;
    hd_error err;
    if (hd_stream_offsets_migrate(*store, &err) < 0 ||
        hd_store_migrate(*store, "stream_projection", projection_steps, 1, &err) < 0) {
        fprintf(io->err, "herald-admin stream: %s\n", err.text);
        hd_store_close(*store);
        *store = NULL;
        return ADMIN_FAILED;
    }
    return ADMIN_OK;
}

static hd_stop *signal_stop; /* the stop a SIGTERM/SIGINT requests */

static void on_signal(int sig)
{
    (void)sig;
    if (signal_stop != NULL)
        hd_stop_request(signal_stop);
}

/* The projection's rows as JSON (new), or NULL on a failure (err set). */
static json_t *projection_rows(hd_store *store, const char *projection, hd_error *err)
{
    hd_value p[] = {hd_value_text(projection)};
    hd_rows *rows = NULL;
    if (hd_store_query(store,
                       "SELECT key, events, last_offset FROM stream_projection"
                       " WHERE projection = $1 ORDER BY key",
                       p, 1, &rows, err) < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t r = 0; r < hd_rows_count(rows); r++)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I}", "key", hd_rows_text(rows, r, 0),
                                             "events", (json_int_t)hd_rows_int(rows, r, 1),
                                             "last_offset", (json_int_t)hd_rows_int(rows, r, 2)));
    hd_rows_free(rows);
    return arr;
}

/* follow and replay: read o->stream into projection from start. */
static int do_read(const hd_config *cfg, const options *o, const admin_io *io, int replay)
{
    const char *url = amqp_url(cfg, io);
    if (url == NULL)
        return ADMIN_USAGE;
    hd_error err;
    hd_stream_start start = {.from = HD_STREAM_FIRST};
    const char *from_text = replay ? (o->from_offset ? o->from_offset : o->from_time) : o->from;
    if (from_text != NULL && hd_stream_start_parse(from_text, &start, &err) < 0) {
        fprintf(io->err, "herald-admin stream %s: %s\n", o->cmd, err.text);
        return ADMIN_USAGE;
    }
    if (replay && ((o->from_offset && start.from != HD_STREAM_OFFSET) ||
                   (o->from_time && start.from != HD_STREAM_TIME))) {
        fprintf(io->err, "herald-admin stream replay: --from-offset takes digits, --from-time an "
                         "RFC 3339 time\n");
        return ADMIN_USAGE;
    }
    char name[128], consumer[160];
    if (o->projection != NULL)
        snprintf(name, sizeof name, "%s", o->projection);
    else if (replay)
        snprintf(name, sizeof name, "replay-%lld", (long long)hd_time_now_ms());
    else
        snprintf(name, sizeof name, "main");
    snprintf(consumer, sizeof consumer, "projection:%s", name);
    hd_store *store = NULL;
    int rc = open_db(cfg, io, &store);
    if (rc != ADMIN_OK)
        return rc;
    if (replay) { /* a fresh projection: no rows, no offset */
        hd_value p[] = {hd_value_text(name)};
        if (hd_store_begin(store, &err) < 0 ||
            hd_store_exec(store, "DELETE FROM stream_projection WHERE projection = $1", p, 1,
                          &err) < 0 ||
            hd_stream_offset_reset(store, consumer, o->stream, &err) < 0 ||
            hd_store_commit(store, &err) < 0) {
            fprintf(io->err, "herald-admin stream replay: %s\n", err.text);
            hd_store_close(store);
            return ADMIN_FAILED;
        }
    }
    hd_stop stop;
    if (hd_stop_init(&stop, &err) < 0) {
        fprintf(io->err, "herald-admin stream: %s\n", err.text);
        hd_store_close(store);
        return ADMIN_FAILED;
    }
    signal_stop = &stop;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    reader r = {.projection = name, .delay_ms = (int)o->delay_ms};
    hd_amqp_options ao = {.connection_name = "herald-admin stream"};
    hd_stream_consumer_options co = {.stream = o->stream,
                                     .consumer = consumer,
                                     .store = store,
                                     .handler = project,
                                     .ctx = &r,
                                     .start = start,
                                     .amqp = &ao};
    hd_stream_consumer *c = NULL;
    int64_t idle = replay ? (o->idle_ms ? o->idle_ms : IDLE_DEFAULT_MS) : o->idle_ms;
    int64_t before = -1;
    hd_stream_offset_load(store, consumer, o->stream, &before, NULL);
    rc = hd_stream_consumer_open(url, &co, &c, &err);
    if (rc == 0) {
        fprintf(io->err, "herald-admin stream %s: reading %s into projection %s from %s\n", o->cmd,
                o->stream, name,
                before >= 0 ? "its stored offset"
                : from_text ? from_text
                            : "first");
        fflush(io->err);
        rc = hd_stream_consumer_run(c, &stop, (int)idle, &err);
    }
    hd_stream_counts counts = {0};
    hd_stream_consumer_get_counts(c, &counts);
    int64_t last = hd_stream_consumer_offset(c);
    if (last < 0)
        last = before;
    hd_stream_consumer_close(c);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal_stop = NULL;
    hd_stop_release(&stop);
    if (rc < 0) {
        fprintf(io->err, "herald-admin stream %s: %s\n", o->cmd, err.text);
        hd_store_close(store);
        return ADMIN_FAILED;
    }
    json_t *rows = projection_rows(store, name, &err);
    hd_store_close(store);
    if (rows == NULL) {
        fprintf(io->err, "herald-admin stream %s: %s\n", o->cmd, err.text);
        return ADMIN_FAILED;
    }
    if (io->json) {
        json_t *doc =
            json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "stream", o->stream, "projection",
                      name, "consumer", consumer, "resumed_after", (json_int_t)before,
                      "last_offset", (json_int_t)last, "handled", (json_int_t)counts.handled,
                      "skipped", (json_int_t)counts.skipped, "rows", rows);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', io->out);
        json_decref(doc);
    } else {
        fprintf(io->out,
                "projection %s of %s: %llu records handled, %llu skipped, last offset %lld\n", name,
                o->stream, (unsigned long long)counts.handled, (unsigned long long)counts.skipped,
                (long long)last);
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            fprintf(io->out, "  %-60s %8lld  (last offset %lld)\n",
                    json_string_value(json_object_get(row, "key")),
                    (long long)json_integer_value(json_object_get(row, "events")),
                    (long long)json_integer_value(json_object_get(row, "last_offset")));
        }
        json_decref(rows);
    }
    return ADMIN_OK;
}

static int do_show(const hd_config *cfg, const options *o, const admin_io *io)
{
    hd_store *store = NULL;
    int rc = open_db(cfg, io, &store);
    if (rc != ADMIN_OK)
        return rc;
    hd_error err;
    const char *name = o->projection ? o->projection : "main";
    json_t *rows = projection_rows(store, name, &err);
    hd_store_close(store);
    if (rows == NULL) {
        fprintf(io->err, "herald-admin stream show: %s\n", err.text);
        return ADMIN_FAILED;
    }
    if (io->json) {
        json_t *doc = json_pack("{s:s, s:o}", "projection", name, "rows", rows);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', io->out);
        json_decref(doc);
        return ADMIN_OK;
    }
    fprintf(io->out, "%-60s %8s %12s\n", "KEY", "EVENTS", "LAST OFFSET");
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        fprintf(io->out, "%-60s %8lld %12lld\n", json_string_value(json_object_get(row, "key")),
                (long long)json_integer_value(json_object_get(row, "events")),
                (long long)json_integer_value(json_object_get(row, "last_offset")));
    }
    json_decref(rows);
    return ADMIN_OK;
}

static int do_offsets(const hd_config *cfg, const admin_io *io)
{
    hd_store *store = NULL;
    int rc = open_db(cfg, io, &store);
    if (rc != ADMIN_OK)
        return rc;
    hd_error err;
    hd_rows *rows = NULL;
    if (hd_store_query(store,
                       "SELECT consumer, stream, last_offset, updated_at FROM hd_stream_offsets"
                       " ORDER BY consumer, stream",
                       NULL, 0, &rows, &err) < 0) {
        fprintf(io->err, "herald-admin stream offsets: %s\n", err.text);
        hd_store_close(store);
        return ADMIN_FAILED;
    }
    json_t *arr = json_array();
    if (!io->json)
        fprintf(io->out, "%-40s %-30s %12s  %s\n", "CONSUMER", "STREAM", "LAST OFFSET", "UPDATED");
    for (size_t r = 0; r < hd_rows_count(rows); r++) {
        char t[32];
        admin_fmt_time(t, sizeof t, hd_rows_int(rows, r, 3));
        if (io->json)
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:I, s:s}", "consumer", hd_rows_text(rows, r, 0),
                               "stream", hd_rows_text(rows, r, 1), "last_offset",
                               (json_int_t)hd_rows_int(rows, r, 2), "updated_at", t));
        else
            fprintf(io->out, "%-40s %-30s %12lld  %s\n", hd_rows_text(rows, r, 0),
                    hd_rows_text(rows, r, 1), (long long)hd_rows_int(rows, r, 2), t);
    }
    hd_rows_free(rows);
    hd_store_close(store);
    if (io->json) {
        json_t *doc = json_pack("{s:o}", "offsets", arr);
        json_dumpf(doc, io->out, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', io->out);
        json_decref(doc);
    } else {
        json_decref(arr);
    }
    return ADMIN_OK;
}

int admin_stream(const hd_config *cfg, int argc, char **argv, const admin_io *io_in)
{
    admin_io io = *io_in;
    admin_take_json(&argc, argv, 1, &io);
    if (argc < 2 || admin_wants_help(argc, argv, 1)) {
        fputs(group_help, argc < 2 ? io.err : io.out);
        return argc < 2 ? ADMIN_USAGE : ADMIN_OK;
    }
    const char *known[] = {"declare", "follow", "replay", "show", "offsets"};
    size_t k = 0;
    while (k < 5 && strcmp(argv[1], known[k]) != 0)
        k++;
    if (k == 5) {
        fprintf(io.err, "herald-admin stream: unknown subcommand '%s' (try --help)\n", argv[1]);
        return ADMIN_USAGE;
    }
    options o = {0};
    int rc = parse_args(argc, argv, &o, &io);
    if (rc >= 0)
        return rc;
    switch (k) {
    case 0:
        return do_declare(cfg, &o, &io);
    case 1:
        return do_read(cfg, &o, &io, 0);
    case 2:
        return do_read(cfg, &o, &io, 1);
    case 3:
        return do_show(cfg, &o, &io);
    default:
        return do_offsets(cfg, &io);
    }
}
