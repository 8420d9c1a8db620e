/* dlq.c — herald-admin dlq: look at a work queue's dead letters, replay them, purge them.
 *
 *     herald-admin [--json] dlq list   QUEUE [--limit N]
 *     herald-admin [--json] dlq replay QUEUE [--reason R] [--type T] [--limit N] [--rate R/s]
 *                                            [--max-replays N] [--scan N] [--dry-run]
 *     herald-admin [--json] dlq purge  QUEUE [--reason R] [--type T] [--limit N] [--scan N]
 *                                            [--dry-run] --yes
 *
 * QUEUE is the WORK queue; its dead-letter queue is the one retry.h names ("QUEUE.dlq").
 *
 * Reading without consuming. AMQP has no "peek". Every subcommand reads the dead letters with
 * basic.get WITHOUT auto-ack on a channel of its own (no prefetch limit applies to basic.get)
 * and holds them all unacknowledged until it is done; then it closes the channel and the
 * broker puts back every message it did not ack, in its place. Reading them all first
 * matters: a message nacked with requeue goes back to the HEAD of the queue, so "get one,
 * requeue it, get the next" would read the same message forever. The price: while a command
 * runs, the messages it holds are invisible to others (a consumer of the DLQ, the management
 * UI's "get messages"), and the command holds them in memory — hence the bounds below. If
 * the command dies, its connection closes and the broker puts them back all the same.
 *
 * Grouping: a dead letter's fingerprint is (event type, reason). The type is the AMQP "type"
 * property, else the "type" of a CloudEvents JSON body. The reason is the x-herald-reason
 * header the consumer writes when it buries a message (consumer.h), else "x-death: <reason>"
 * of the broker's newest x-death entry (a DLQ filled by plain broker dead-lettering), else
 * "(none)". Known limit: reasons are compared as text, so a reason carrying a number
 * ("boom on attempt 4") makes one group per number.
 *
 * First/last seen: the consumer does not stamp the time of death on a dead letter, so the
 * time shown is the message's own: its AMQP timestamp property, else the CloudEvents "time"
 * of its body, else the time of its newest x-death entry; "-" when it has none.
 *
 * Replay: each matching message is republished to the work queue (default exchange,
 * mandatory, persistent unless it was transient) through an hd_publisher on a second
 * connection, with its body, properties (message id included: the consumer's inbox makes a
 * replay of an already handled message harmless) and headers, except:
 *   - x-herald-replay-count is set to one more than it was (absent = 0), and a message
 *     whose count is already --max-replays is refused: left in the DLQ and counted;
 *   - x-death is left out: the broker's count of expired retries IS the attempt number
 *     (retry.h), and a message that exhausted its retries would otherwise be dead-lettered
 *     again at its first failure. A replay gets the full retry budget of the policy;
 *   - the per-message expiration is dropped (as the consumer does when it forwards).
 * The DLQ copy is acked only after the broker confirmed the new one: a crash in between
 * leaves two copies, never none. The first publish that is not confirmed stops the replay
 * (the broker or the topology is wrong; going on would fail the same way).
 *
 * Heartbeats are off on both connections: a slow --rate leaves the reading connection idle
 * for the whole replay, and librabbitmq only answers heartbeats inside its own calls.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <jansson.h>

#include "admin/admin.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/error.h"
#include "herald/publisher.h"
#include "herald/retry.h"
#include "herald/topology.h"

#define REPLAY_HEADER       "x-herald-replay-count"
#define LIMIT_DEFAULT       10000L
#define MAX_REPLAYS_DEFAULT 3L
#define TEXT_MAX            512

enum cmd { CMD_LIST, CMD_REPLAY, CMD_PURGE };

typedef struct options {
    enum cmd cmd;
    const char *queue;
    const char *reason; /* NULL = any */
    const char *type;   /* NULL = any */
    long limit;         /* list: messages read; replay/purge: matching messages acted on */
    long scan;          /* replay/purge: messages read at most */
    double rate;        /* replay: messages per second; 0 = as fast as confirms come */
    long max_replays;
    int dry_run;
    int yes;
} options;

/* One dead letter held unacked. */
typedef struct held {
    amqp_message_t msg; /* new: amqp_destroy_message */
    uint64_t tag;
    char type[TEXT_MAX];
    char reason[TEXT_MAX];
    int64_t seen; /* epoch seconds; -1 = unknown */
    int64_t replays;
    int matches;
} held;

typedef struct group {
    char type[TEXT_MAX];
    char reason[TEXT_MAX];
    long count;
    int64_t first, last;
    long matched, replayed, refused, purged;
} group;

typedef struct state {
    const options *o;
    const admin_io *io;
    hd_amqp *a; /* reads the DLQ */
    amqp_channel_t ch;
    char dlq[HD_AMQP_NAME_MAX + 1];
    held *v;
    size_t n, cap;
    long matched;
    int complete; /* the DLQ was read to its end */
    group *g;
    size_t ng, gcap;
} state;

/* ---- usage ---------------------------------------------------------------------------- */

static void usage(FILE *out, enum cmd c, int all)
{
    if (all || c == CMD_LIST)
        fprintf(out,
                "usage: herald-admin [--json] dlq list QUEUE [--limit N]\n"
                "  The dead letters of QUEUE's dead-letter queue (QUEUE.dlq), grouped by event\n"
                "  type and reason, with counts and first/last seen. Nothing is consumed: the\n"
                "  messages are read unacked and handed back when the command ends, so they\n"
                "  are invisible to others for that moment. --limit: messages read at most\n"
                "  (default 10000; the output says when the queue held more).\n\n");
    if (all || c == CMD_REPLAY)
        fprintf(
            out,
            "usage: herald-admin [--json] dlq replay QUEUE [--reason R] [--type T] [--limit N]\n"
            "                    [--rate PER_SECOND] [--max-replays N] [--scan N] [--dry-run]\n"
            "  Republish the matching dead letters to QUEUE, keeping their message id, with\n"
            "  x-herald-replay-count one higher and without x-death (a fresh retry budget);\n"
            "  each is removed from the DLQ once the broker confirmed its copy.\n"
            "  --reason R, --type T  exact reason / event type, as `dlq list` shows them\n"
            "  --limit N             replay at most N messages (default: every match read)\n"
            "  --rate PER_SECOND     at most this many per second (default: no pacing)\n"
            "  --max-replays N       refuse a message already replayed N times (default 3);\n"
            "                        refused ones stay in the DLQ and the exit code is 1\n"
            "  --scan N              read at most N dead letters (default 10000)\n"
            "  --dry-run             say what would be replayed; change nothing\n\n");
    if (all || c == CMD_PURGE)
        fprintf(out,
                "usage: herald-admin [--json] dlq purge QUEUE [--reason R] [--type T] [--limit N]\n"
                "                    [--scan N] [--dry-run] --yes\n"
                "  Delete the matching dead letters for good (filters as for replay). Without\n"
                "  --yes nothing is deleted: it says how many would go and exits with 2.\n\n");
}

/* ---- arguments ------------------------------------------------------------------------ */

static int parse_long(const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min)
        return -1;
    *out = v;
    return 0;
}

/* "--name VALUE" or "--name=VALUE": the value into *val, advancing *i past it. 1 when argv[*i]
 * is the option, 0 when not, -1 when its value is missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *val = argv[++*i];
    return 1;
}

/* Returns -1 when parsed, else an exit code (help printed, or a usage error). */
static int parse_args(int argc, char **argv, options *o, const admin_io *io)
{
    const char *sub = argv[1];
    if (strcmp(sub, "list") == 0)
        o->cmd = CMD_LIST;
    else if (strcmp(sub, "replay") == 0)
        o->cmd = CMD_REPLAY;
    else if (strcmp(sub, "purge") == 0)
        o->cmd = CMD_PURGE;
    else {
        fprintf(io->err, "herald-admin dlq: unknown subcommand '%s' (try dlq --help)\n", sub);
        return ADMIN_USAGE;
    }
    o->limit = o->cmd == CMD_LIST ? LIMIT_DEFAULT : -1;
    o->scan = LIMIT_DEFAULT;
    o->max_replays = MAX_REPLAYS_DEFAULT;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        int r;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(io->out, o->cmd, 0);
            return ADMIN_OK;
        }
        if (a[0] != '-') {
            if (o->queue != NULL) {
                fprintf(io->err, "herald-admin dlq %s: one QUEUE only ('%s')\n", sub, a);
                return ADMIN_USAGE;
            }
            o->queue = a;
            continue;
        }
        int filters = o->cmd != CMD_LIST;
        if (filters && strcmp(a, "--dry-run") == 0) {
            o->dry_run = 1;
        } else if (o->cmd == CMD_PURGE && strcmp(a, "--yes") == 0) {
            o->yes = 1;
        } else if ((r = opt_value(argc, argv, &i, "--limit", &val)) != 0) {
            if (r < 0 || parse_long(val, 1, &o->limit) < 0)
                goto bad;
        } else if (filters && (r = opt_value(argc, argv, &i, "--scan", &val)) != 0) {
            if (r < 0 || parse_long(val, 1, &o->scan) < 0)
                goto bad;
        } else if (filters && (r = opt_value(argc, argv, &i, "--reason", &val)) != 0) {
            if (r < 0)
                goto bad;
            o->reason = val;
        } else if (filters && (r = opt_value(argc, argv, &i, "--type", &val)) != 0) {
            if (r < 0)
                goto bad;
            o->type = val;
        } else if (o->cmd == CMD_REPLAY && (r = opt_value(argc, argv, &i, "--rate", &val)) != 0) {
            char *end;
            if (r < 0)
                goto bad;
            o->rate = strtod(val, &end);
            if (end == val || *end != '\0' || !(o->rate > 0) || o->rate > 1e6)
                goto bad;
        } else if (o->cmd == CMD_REPLAY &&
                   (r = opt_value(argc, argv, &i, "--max-replays", &val)) != 0) {
            if (r < 0 || parse_long(val, 0, &o->max_replays) < 0)
                goto bad;
        } else {
            fprintf(io->err, "herald-admin dlq %s: unknown option '%s' (try --help)\n", sub, a);
            return ADMIN_USAGE;
        }
        continue;
    bad:
        fprintf(io->err, "herald-admin dlq %s: %s needs a %s value\n", sub, a,
                strncmp(a, "--reason", 8) == 0 || strncmp(a, "--type", 6) == 0 ? "text"
                : strncmp(a, "--rate", 6) == 0                                 ? "positive number"
                                                                               : "whole, positive");
        return ADMIN_USAGE;
    }
    if (o->queue == NULL) {
        fprintf(io->err, "herald-admin dlq %s: QUEUE is missing (try --help)\n", sub);
        return ADMIN_USAGE;
    }
    return -1;
}

/* ---- reading a dead letter ------------------------------------------------------------ */

static const amqp_field_value_t *header(const amqp_message_t *m, const char *key)
{
    if (!(m->properties._flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    const amqp_table_t *t = &m->properties.headers;
    size_t n = strlen(key);
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == n && memcmp(t->entries[i].key.bytes, key, n) == 0)
            return &t->entries[i].value;
    return NULL;
}

static void copy_bytes(char *dst, size_t cap, amqp_bytes_t b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

static int text_value(const amqp_field_value_t *v, char *dst, size_t cap)
{
    if (v == NULL || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES))
        return 0;
    copy_bytes(dst, cap, v->value.bytes);
    return 1;
}

/* An integer header of any width (or decimal text); def when absent or not an integer. */
static int64_t int_value(const amqp_field_value_t *v, int64_t def)
{
    if (v == NULL)
        return def;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return v->value.i64;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        /* A client that wrote the count as text ("2") must not reset it to 0 and so get
         * past --max-replays. */
        char buf[32], *end;
        copy_bytes(buf, sizeof buf, v->value.bytes);
        errno = 0;
        long long n = strtoll(buf, &end, 10);
        return errno == 0 && end != buf && *end == '\0' ? (int64_t)n : def;
    }
    default:
        return def;
    }
}

/* The newest x-death entry (the broker keeps it first), or NULL. */
static const amqp_table_t *newest_death(const amqp_message_t *m)
{
    const amqp_field_value_t *v = header(m, "x-death");
    if (v == NULL || v->kind != AMQP_FIELD_KIND_ARRAY || v->value.array.num_entries < 1 ||
        v->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
        return NULL;
    return &v->value.array.entries[0].value.table;
}

static const amqp_field_value_t *table_get(const amqp_table_t *t, const char *key)
{
    size_t n = strlen(key);
    for (int i = 0; t != NULL && i < t->num_entries; i++)
        if (t->entries[i].key.len == n && memcmp(t->entries[i].key.bytes, key, n) == 0)
            return &t->entries[i].value;
    return NULL;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm): timegm() is not POSIX. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An RFC 3339 time ("2026-12-04T14:57:19.123Z", "...+01:00") in epoch seconds, or -1. */
static int64_t parse_rfc3339(const char *s)
{
    int y, mo, d, h, mi, se, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &used) != 6 ||
        used == 0 || mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    const char *p = s + used;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int64_t off = 0;
    int oh, om;
    if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2)
        off = (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    else if (*p != 'Z' && *p != 'z')
        return -1;
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
}

static void classify(held *h)
{
    const amqp_message_t *m = &h->msg;
    json_t *body = NULL;
    /* Only a body that looks like a JSON object is parsed (for its type and time). */
    if (m->body.len > 0 && ((const char *)m->body.bytes)[0] == '{')
        body = json_loadb(m->body.bytes, m->body.len, 0, NULL);

    if (m->properties._flags & AMQP_BASIC_TYPE_FLAG)
        copy_bytes(h->type, sizeof h->type, m->properties.type);
    else if (json_is_string(json_object_get(body, "type")))
        snprintf(h->type, sizeof h->type, "%s", json_string_value(json_object_get(body, "type")));
    else
        snprintf(h->type, sizeof h->type, "(unknown)");

    const amqp_table_t *death = newest_death(m);
    char why[64];
    if (!text_value(header(m, HD_HEADER_REASON), h->reason, sizeof h->reason)) {
        if (text_value(table_get(death, "reason"), why, sizeof why))
            snprintf(h->reason, sizeof h->reason, "x-death: %s", why);
        else
            snprintf(h->reason, sizeof h->reason, "(none)");
    }

    h->seen = -1;
    if (m->properties._flags & AMQP_BASIC_TIMESTAMP_FLAG)
        h->seen = m->properties.timestamp > INT64_MAX ? -1 : (int64_t)m->properties.timestamp;
    else if (json_is_string(json_object_get(body, "time")))
        h->seen = parse_rfc3339(json_string_value(json_object_get(body, "time")));
    if (h->seen < 0)
        h->seen = int_value(table_get(death, "time"), -1);
    h->replays = int_value(header(m, REPLAY_HEADER), 0);
    if (h->replays < 0)
        h->replays = 0; /* forged: counts from the start, never below it */
    json_decref(body);
}

static int matches(const options *o, const held *h)
{
    return (o->type == NULL || strcmp(o->type, h->type) == 0) &&
           (o->reason == NULL || strcmp(o->reason, h->reason) == 0);
}

static group *group_of(state *s, const held *h)
{
    for (size_t i = 0; i < s->ng; i++)
        if (strcmp(s->g[i].type, h->type) == 0 && strcmp(s->g[i].reason, h->reason) == 0)
            return &s->g[i];
    if (s->ng == s->gcap) {
        size_t cap = s->gcap ? s->gcap * 2 : 16;
        group *g = realloc(s->g, cap * sizeof *g);
        if (g == NULL)
            return NULL;
        s->g = g;
        s->gcap = cap;
    }
    group *g = &s->g[s->ng++];
    memset(g, 0, sizeof *g);
    memcpy(g->type, h->type, sizeof g->type);
    memcpy(g->reason, h->reason, sizeof g->reason);
    g->first = g->last = -1;
    return g;
}

/* ---- the DLQ session ------------------------------------------------------------------ */

static void state_release(state *s)
{
    if (s->a != NULL && s->ch != 0)
        hd_amqp_channel_close(s->a, s->ch); /* every unacked message goes back, in place */
    for (size_t i = 0; i < s->n; i++)
        amqp_destroy_message(&s->v[i].msg);
    free(s->v);
    free(s->g);
    hd_amqp_close(s->a);
    s->a = NULL;
}

/* HD_AMQP_CA_FILE and friends, read once by admin_dlq (a one-shot, single-threaded command):
 * every connection of the command takes them. */
static hd_amqp_options amqp_tls;

static hd_amqp_options quiet_amqp(const char *name)
{
    hd_amqp_options ao = amqp_tls;
    ao.heartbeat_s = -1; /* see the top of the file */
    ao.connection_name = name;
    return ao;
}

/* Connect, check the DLQ exists and read it: every message up to the bounds, held unacked. */
static int read_dlq(state *s, const char *url, hd_error *err)
{
    const options *o = s->o;
    int rc = hd_retry_dlq_name(s->dlq, sizeof s->dlq, o->queue);
    if (rc < 0)
        return hd_error_set(err, rc, "queue name '%s' is too long", o->queue);
    hd_amqp_options ao = quiet_amqp("herald-admin dlq");
    if ((rc = hd_amqp_open(url, &ao, &s->a, err)) < 0)
        return rc;
    hd_queue_info info;
    if ((rc = hd_queue_inspect(s->a, s->dlq, &info, err)) < 0) {
        if (rc == HD_ENOTFOUND)
            hd_error_set(err, rc, "no queue '%s': is '%s' a herald work queue?", s->dlq, o->queue);
        return rc;
    }
    if ((rc = hd_amqp_channel_open(s->a, &s->ch, err)) < 0) {
        s->ch = 0;
        return rc;
    }
    amqp_connection_state_t st = hd_amqp_state(s->a);
    long read_max = o->cmd == CMD_LIST ? o->limit : o->scan;
    for (;;) {
        if ((long)s->n >= read_max)
            return 0;
        if (o->cmd != CMD_LIST && o->limit > 0 && s->matched >= o->limit)
            return 0;
        amqp_rpc_reply_t r = amqp_basic_get(st, s->ch, amqp_cstring_bytes(s->dlq), 0);
        if ((rc = hd_amqp_check_reply_on(s->a, s->ch, r, "basic.get", err)) < 0) {
            s->ch = 0; /* closed by the broker: the messages are back already */
            return rc;
        }
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
            s->complete = 1;
            return 0;
        }
        uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            held *v = realloc(s->v, cap * sizeof *v);
            if (v == NULL)
                return hd_error_set(err, HD_ENOMEM, "%zu dead letters", cap);
            s->v = v;
            s->cap = cap;
        }
        held *h = &s->v[s->n];
        memset(h, 0, sizeof *h);
        r = amqp_read_message(st, s->ch, &h->msg, 0);
        if ((rc = hd_amqp_check_reply_on(s->a, s->ch, r, "read dead letter", err)) < 0) {
            s->ch = 0;
            return rc;
        }
        s->n++;
        amqp_maybe_release_buffers_on_channel(st, s->ch);
        h->tag = tag;
        classify(h);
        h->matches = matches(o, h);
        s->matched += h->matches;
        group *g = group_of(s, h);
        if (g == NULL)
            return hd_error_set(err, HD_ENOMEM, "groups");
        g->count++;
        g->matched += h->matches;
        if (h->seen >= 0 && (g->first < 0 || h->seen < g->first))
            g->first = h->seen;
        if (h->seen >= 0 && h->seen > g->last)
            g->last = h->seen;
    }
}

static int ack(state *s, const held *h, hd_error *err)
{
    int status = amqp_basic_ack(hd_amqp_state(s->a), s->ch, h->tag, 0);
    return hd_amqp_check_status(s->a, status, "basic.ack", err);
}

/* ---- output --------------------------------------------------------------------------- */

static void fmt_time(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t < 0 || gmtime_r(&tt, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "-");
}

/* A JSON string of text that may not be UTF-8 (a header is bytes). */
static json_t *jstr(const char *text)
{
    json_t *j = json_string(text);
    return j ? j : json_string("(not UTF-8)");
}

static json_t *jtime(int64_t t)
{
    char buf[32];
    if (t < 0)
        return json_null();
    fmt_time(t, buf, sizeof buf);
    return json_string(buf);
}

static void json_out(const admin_io *io, json_t *doc)
{
    json_dumpf(doc, io->out, JSON_INDENT(2));
    fputc('\n', io->out);
    json_decref(doc);
}

static json_t *groups_json(const state *s, int with_outcome)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->ng; i++) {
        const group *g = &s->g[i];
        json_t *o = json_object();
        json_object_set_new(o, "type", jstr(g->type));
        json_object_set_new(o, "reason", jstr(g->reason));
        json_object_set_new(o, "count", json_integer(g->count));
        json_object_set_new(o, "first_seen", jtime(g->first));
        json_object_set_new(o, "last_seen", jtime(g->last));
        if (with_outcome) {
            json_object_set_new(o, "matched", json_integer(g->matched));
            if (s->o->cmd == CMD_REPLAY) {
                json_object_set_new(o, "replayed", json_integer(g->replayed));
                json_object_set_new(o, "refused", json_integer(g->refused));
            } else {
                json_object_set_new(o, "purged", json_integer(g->purged));
            }
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

static void print_groups(const state *s)
{
    FILE *out = s->io->out;
    fprintf(out, "%7s  %-20s  %-20s  %-28s  %s\n", "COUNT", "FIRST SEEN", "LAST SEEN", "TYPE",
            "REASON");
    for (size_t i = 0; i < s->ng; i++) {
        char first[32], last[32];
        fmt_time(s->g[i].first, first, sizeof first);
        fmt_time(s->g[i].last, last, sizeof last);
        fprintf(out, "%7ld  %-20s  %-20s  %-28s  %s\n", s->g[i].count, first, last, s->g[i].type,
                s->g[i].reason);
    }
}

/* ---- subcommands ---------------------------------------------------------------------- */

static int do_list(state *s)
{
    if (s->io->json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "queue", jstr(s->o->queue));
        json_object_set_new(doc, "dlq", jstr(s->dlq));
        json_object_set_new(doc, "read", json_integer((json_int_t)s->n));
        json_object_set_new(doc, "complete", json_boolean(s->complete));
        json_object_set_new(doc, "groups", groups_json(s, 0));
        json_out(s->io, doc);
        return ADMIN_OK;
    }
    fprintf(s->io->out, "%s: %zu dead letter%s in %zu group%s%s\n", s->dlq, s->n,
            s->n == 1 ? "" : "s", s->ng, s->ng == 1 ? "" : "s",
            s->complete ? "" : " (stopped at --limit: the queue holds more)");
    if (s->ng > 0)
        print_groups(s);
    return ADMIN_OK;
}

/* Sleep until the i-th (0-based) replay may go at the given rate. */
static void pace(int64_t start_ms, long i, double rate)
{
    if (rate <= 0)
        return;
    int64_t due = start_ms + (int64_t)((double)i * 1000.0 / rate);
    int64_t now = hd_clock_ms();
    if (due > now)
        hd_sleep_ms(due - now);
}

/* Republish h to the work queue and wait for the confirm. */
static int republish(state *s, hd_publisher *pub, const held *h, hd_error *err)
{
    const amqp_basic_properties_t *got = &h->msg.properties;
    amqp_basic_properties_t props = *got;
    props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
    const amqp_table_t *hd = (got->_flags & AMQP_BASIC_HEADERS_FLAG) ? &got->headers : NULL;
    int nh = hd ? hd->num_entries : 0;
    amqp_table_entry_t *e = malloc(((size_t)nh + 1) * sizeof *e);
    if (e == NULL)
        return hd_error_set(err, HD_ENOMEM, "headers");
    int n = 0;
    for (int i = 0; i < nh; i++) {
        const amqp_bytes_t k = hd->entries[i].key;
        if ((k.len == 7 && memcmp(k.bytes, "x-death", 7) == 0) ||
            (k.len == strlen(REPLAY_HEADER) && memcmp(k.bytes, REPLAY_HEADER, k.len) == 0))
            continue;
        e[n++] = hd->entries[i];
    }
    e[n].key = amqp_cstring_bytes(REPLAY_HEADER);
    e[n].value.kind = AMQP_FIELD_KIND_I64;
    e[n].value.value.i64 = h->replays + 1;
    n++;
    amqp_table_t headers = {.num_entries = n, .entries = e};
    hd_message m = {
        .exchange = "",
        .routing_key = s->o->queue,
        .body = h->msg.body.bytes,
        .len = h->msg.body.len,
        .flags = (got->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && got->delivery_mode == 1
                     ? HD_MSG_TRANSIENT
                     : 0,
        .raw_headers = &headers,
        .raw_properties = &props,
    };
    int rc = hd_publish_confirmed(pub, &m, -1, err);
    free(e);
    return rc;
}

/* What a replay and a purge report first (new): which queue, whether it was a dry run, how
 * many messages were read and whether that was the whole DLQ. */
static json_t *summary_json(const state *s)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "queue", jstr(s->o->queue));
    json_object_set_new(doc, "dlq", jstr(s->dlq));
    json_object_set_new(doc, "dry_run", json_boolean(s->o->dry_run));
    json_object_set_new(doc, "read", json_integer((json_int_t)s->n));
    json_object_set_new(doc, "complete", json_boolean(s->complete));
    return doc;
}

static int do_replay(state *s, const char *url)
{
    const options *o = s->o;
    hd_error err;
    hd_amqp *pa = NULL;
    hd_publisher *pub = NULL;
    long replayed = 0, refused = 0, acted = 0;
    int failed = 0;
    char why[sizeof err.text] = "";
    if (!o->dry_run) {
        hd_amqp_options ao = quiet_amqp("herald-admin dlq replay");
        hd_publisher_options po = {.window = 1, .confirm_timeout_ms = 10000};
        if (hd_amqp_open(url, &ao, &pa, &err) < 0 || hd_publisher_new(pa, &po, &pub, &err) < 0) {
            fprintf(s->io->err, "herald-admin dlq replay: %s\n", err.text);
            hd_amqp_close(pa);
            return ADMIN_FAILED;
        }
    }
    int64_t start = hd_clock_ms();
    for (size_t i = 0; i < s->n && !failed; i++) {
        held *h = &s->v[i];
        if (!h->matches || (o->limit > 0 && acted >= o->limit))
            continue;
        acted++;
        group *g = group_of(s, h);
        if (h->replays >= o->max_replays) {
            refused++;
            g->refused++;
            continue;
        }
        if (!o->dry_run) {
            pace(start, replayed, o->rate);
            if (republish(s, pub, h, &err) < 0 || ack(s, h, &err) < 0) {
                /* Left unacked: back in the DLQ when the channel closes. */
                snprintf(why, sizeof why, "%s", err.text);
                failed = 1;
                break;
            }
        }
        replayed++;
        g->replayed++;
    }
    int64_t elapsed = hd_clock_ms() - start;
    hd_publisher_free(pub);
    hd_amqp_close(pa);

    if (s->io->json) {
        json_t *doc = summary_json(s);
        json_object_set_new(doc, "matched", json_integer(acted));
        json_object_set_new(doc, "replayed", json_integer(replayed));
        json_object_set_new(doc, "refused", json_integer(refused));
        json_object_set_new(doc, "max_replays", json_integer(o->max_replays));
        json_object_set_new(doc, "elapsed_ms", json_integer(elapsed));
        json_object_set_new(doc, "error", failed ? jstr(why) : json_null());
        json_object_set_new(doc, "groups", groups_json(s, 1));
        json_out(s->io, doc);
    } else {
        fprintf(s->io->out,
                "%s%s -> %s: %ld %sreplayed, %ld refused (replayed %ld times already), "
                "%zu left in the DLQ of %zu read%s, %.1f s\n",
                o->dry_run ? "dry run: " : "", s->dlq, o->queue, replayed,
                o->dry_run ? "would be " : "", refused, o->max_replays,
                s->n - (o->dry_run ? 0 : (size_t)replayed), s->n,
                s->complete ? "" : " (stopped at --scan or --limit)", (double)elapsed / 1000.0);
    }
    if (failed) {
        fprintf(s->io->err, "herald-admin dlq replay: stopped after %ld: %s\n", replayed, why);
        return ADMIN_FAILED;
    }
    if (refused > 0 && !o->dry_run) {
        fprintf(s->io->err,
                "herald-admin dlq replay: %ld message%s refused: replayed %ld times already "
                "(--max-replays); they stay in %s\n",
                refused, refused == 1 ? "" : "s", o->max_replays, s->dlq);
        return ADMIN_FAILED;
    }
    return ADMIN_OK;
}

static int do_purge(state *s)
{
    const options *o = s->o;
    long purged = 0, would = 0;
    hd_error err;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].matches && (o->limit <= 0 || would < o->limit))
            would++;
    if (!o->yes && !o->dry_run) {
        fprintf(s->io->err,
                "herald-admin dlq purge: refused without --yes: %ld dead letter%s of %s would be "
                "deleted for good%s\n",
                would, would == 1 ? "" : "s", s->dlq,
                s->complete ? "" : " (more may match beyond --scan)");
        return ADMIN_USAGE;
    }
    int failed = 0;
    char why[sizeof err.text] = "";
    for (size_t i = 0; i < s->n && !o->dry_run; i++) {
        held *h = &s->v[i];
        if (!h->matches || (o->limit > 0 && purged >= o->limit))
            continue;
        if (ack(s, h, &err) < 0) {
            snprintf(why, sizeof why, "%s", err.text);
            failed = 1;
            break;
        }
        purged++;
        group_of(s, h)->purged++;
    }
    if (s->io->json) {
        json_t *doc = summary_json(s);
        json_object_set_new(doc, "matched", json_integer(would));
        json_object_set_new(doc, "purged", json_integer(purged));
        json_object_set_new(doc, "error", failed ? jstr(why) : json_null());
        json_object_set_new(doc, "groups", groups_json(s, 1));
        json_out(s->io, doc);
    } else {
        fprintf(s->io->out, "%s%s: %ld %spurged, %zu left of %zu read%s\n",
                o->dry_run ? "dry run: " : "", s->dlq, o->dry_run ? would : purged,
                o->dry_run ? "would be " : "", s->n - (size_t)purged, s->n,
                s->complete ? "" : " (stopped at --scan or --limit)");
    }
    if (failed) {
        fprintf(s->io->err, "herald-admin dlq purge: stopped after %ld: %s\n", purged, why);
        return ADMIN_FAILED;
    }
    return ADMIN_OK;
}

int admin_dlq(const hd_config *cfg, int argc, char **argv, const admin_io *io)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? io->err : io->out, CMD_LIST, 1);
        return argc < 2 ? ADMIN_USAGE : ADMIN_OK;
    }
    options o = {0};
    int rc = parse_args(argc, argv, &o, io);
    if (rc >= 0)
        return rc;
    const char *url = hd_config_get(cfg, "HD_AMQP_URL", NULL);
    if (url == NULL || *url == '\0') {
        fprintf(io->err, "herald-admin dlq: HD_AMQP_URL is not set (the broker's URL)\n");
        return ADMIN_USAGE;
    }
    state s = {.o = &o, .io = io};
    hd_error err;
    if (hd_config_amqp_tls(cfg, &amqp_tls, &err) < 0) {
        fprintf(io->err, "herald-admin dlq: %s\n", err.text);
        return ADMIN_USAGE;
    }
    if (read_dlq(&s, url, &err) < 0) {
        fprintf(io->err, "herald-admin dlq %s: %s\n", argv[1], err.text);
        state_release(&s);
        return ADMIN_FAILED;
    }
    switch (o.cmd) {
    case CMD_LIST:
        rc = do_list(&s);
        break;
    case CMD_REPLAY:
        rc = do_replay(&s, url);
        break;
    case CMD_PURGE:
    default:
        rc = do_purge(&s);
        break;
    }
    state_release(&s);
    return rc;
}
