/* bench/relay_inbox.c — herald's relay and its consumer + inbox, each against the raw limit
 * of the same broker, measured in one run.
 *
 * Four phases on one durable queue, classic (or quorum: --queue-type; scripts/bench.sh runs
 * both on the cluster) bound with "#" to a durable topic exchange,
 * repeated --rounds times (the phases of a round run back to back, so each herald figure is
 * measured close in time to the raw figure it is compared with; medians are reported):
 *
 *   1. raw publish       librabbitmq directly: N persistent 200-byte messages, publisher
 *                        confirms with a window (default 1,000) of unconfirmed messages.
 *                        The broker's limit for what the relay does.
 *   2. raw consume       librabbitmq directly: drain those N with basic.consume, prefetch
 *                        100, one basic.ack per message. The broker's limit for a consumer.
 *   3. relay             hd_relay_run with drain (as herald-relay --drain runs) empties an
 *                        outbox of N rows pre-filled in SQLite (synchronous=FULL, a file in
 *                        the work directory): claim, publish with confirms, mark, with two
 *                        batches in flight (--no-pipeline: one). Then the queue must hold N.
 *   4. consumer + inbox  hd_consumer in batch mode (group commit) drains those N: per batch
 *                        ONE SQLite FULL transaction with hd_inbox_accept_many and one effect
 *                        row per message, commit, then one multiple ack. Then the effect
 *                        table must hold N distinct message ids.
 *
 * and, with --publisher, for the diagnosis only (no target), herald's publisher alone:
 * hd_publisher with the window of phase 1 and the relay's message properties, without outbox
 * or relay. The gap between phase 1 and it is the publisher's; between it and phase 3, the
 * relay cycle's. It is off by default: with it, raw consume ran at twice its usual rate in
 * some later rounds (docs/bench.md, "Caveats"), which upsets the consumer's baseline.
 *
 * and, when the broker also listens with TLS ($HD_AMQPS_URL, or --amqps-url; CA file
 * $HD_TLS_CA_FILE or --ca-file), phases 3 and 4 once more over amqps:// (peer and host name
 * verified, as the services run it) right after the plain ones: "relay (TLS)" and "consumer
 * + inbox (TLS)", reported as a ratio to the same phase over plain TCP (no target: it is
 * the price of TLS on this machine, docs/bench.md). --no-tls skips them.
 *
 * Rates are messages per second of wall time; the relay's is compared with phase 1, the
 * consumer's with phase 2 (targets: 90 % and 100 %). A missed target is reported, never
 * hidden, and does not change the exit status; a lost message or a failed phase does (exit 1).
 * docs/bench.md explains the phases, the figures and the caveats.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <jansson.h>
#include <sqlite3.h>

#include "bench_util.h"
#include "options.h"
#include "progress.h"
#include "raw_broker.h"
#include "results.h"
#include "stats.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/delivery.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/publisher.h"
#include "herald/relay.h"
#include "herald/stop.h"
#include "herald/store.h"
#include "herald/topology.h"

#define BODY_BYTES      200  /* raw messages, and the target size of the relay's events */
#define FILL_PER_TX     1000 /* outbox rows per transaction while pre-filling (untimed) */
#define STALL_MS        BENCH_STALL_MS
#define TARGET_RELAY    0.90 /* relay >= 90 % of raw publish (issue 14) */
#define TARGET_CONSUMER 1.00 /* consumer + inbox >= 100 % of raw consume (issue 14) */
#define CONSUMER_NAME   "bench"
#define MAX_ROUNDS      15

/* ---- options ---------------------------------------------------------------------------- */

typedef struct config {
    bench_options o;     /* --amqp-url, --count, --quick, --raw-*, --workdir, --keep, --out */
    int rounds;          /* every phase this often, interleaved; medians are reported */
    size_t batch;        /* phase 3: rows per claim */
    size_t window;       /* phase 3: unconfirmed messages in flight */
    int no_pipeline;     /* phase 3: one batch in flight instead of two */
    int prefetch;        /* phase 4 */
    size_t batch_max;    /* phase 4: deliveries per group commit */
    int decode;          /* phase 4: decode every body as an envelope (a registry) */
    int publisher;       /* also measure hd_publisher alone (diagnosis) */
    int rounds_set;      /* --rounds given (--quick then keeps it) */
    const char *tls_url; /* phases 3 and 4 again over amqps://; NULL = not */
    const char *ca_file; /* its CA file (NULL: the system's trust store) */
    int quorum;          /* --queue-type quorum: the queue is a quorum queue (on a cluster: the
                            cost of replication; scripts/bench.sh runs both types there) */
    const char *kind;    /* --queue-type as given: classic, classic-v2 or quorum */
} config;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench-relay_inbox [options]\n"
            "\n"
            "Measures, on one broker and in one run: raw confirmed publish (of bare messages,\n"
            "and of the relay's own messages with their CloudEvents properties: the relay's\n"
            "denominator), raw consume + ack,\n"
            "herald's relay draining a SQLite (synchronous=FULL) outbox, and herald's consumer\n"
            "committing inbox + effect rows per batch (group commit). Prints progress on stderr\n"
            "and a table on stdout; exit 0 (targets met or missed), 1 (a message was lost or a\n"
            "phase failed), 2 (bad usage).\n"
            "\n"
            "  --amqp-url URL     broker (default: $HD_AMQP_URL)\n"
            "  --count N          messages per phase (default 20000)\n"
            "  --rounds R         run the four phases R times, one after the other, and report\n"
            "                     each rate's median (default 5; the ratios compare medians)\n"
            "  --quick            a smoke run: --count 2000 --rounds 1\n"
            "  --batch N          relay: rows per claim (default 1000)\n"
            "  --window N         relay: unconfirmed messages in flight (default = batch)\n"
            "  --no-pipeline      relay: one batch in flight (claim, publish, wait, mark, one\n"
            "                     after the other) instead of two\n"
            "  --prefetch N       consumer + inbox: prefetch (default 256)\n"
            "  --batch-max N      consumer + inbox: deliveries per transaction (default\n"
            "                     prefetch / 2: one half arrives while the other commits)\n"
            "  --raw-window N     raw publish: confirm window (default 1000)\n"
            "  --raw-prefetch N   raw consume: prefetch (default 100)\n"
            "  --decode           consumer + inbox: decode each body as a CloudEvents envelope\n"
            "  --queue-type T     classic (default), classic-v2 (x-queue-version 2) or\n"
            "                     quorum: the queue every phase uses (a quorum queue on a\n"
            "                     cluster replicates each message to a majority of the nodes\n"
            "                     before the confirm; on RabbitMQ 3.10 a classic v1 queue\n"
            "                     drains in two modes, docs/bench.md)\n"
            "  --publisher        also measure herald's publisher alone (hd_publisher, no\n"
            "                     outbox): where the relay's gap to raw publish comes from\n"
            "  --amqps-url URL    the same broker over TLS: relay and consumer + inbox run\n"
            "                     again over it (default: $HD_AMQPS_URL, when set)\n"
            "  --ca-file FILE     CA of the broker's certificate (default: $HD_TLS_CA_FILE)\n"
            "  --no-tls           skip the TLS phases\n"
            "  --workdir DIR      where the SQLite files go (default: a new directory in\n"
            "                     $TMPDIR or /tmp; must be on a real disk, not tmpfs)\n"
            "  --keep             keep the SQLite files\n"
            "  --out FILE         write the results as JSON (bench/plot.sh draws them)\n"
            "  --help             this text\n");
}

#define PROG "bench-relay_inbox"

static int parse_size(const char *s, const char *name, size_t lo, size_t hi, size_t *out)
{
    return bench_parse_size(PROG, s, name, lo, hi, out);
}

enum {
    O_BATCH_MAX = 256,
    O_DECODE,
    O_ROUNDS,
    O_PUBLISHER,
    O_NO_PIPELINE,
    O_BATCH,
    O_WINDOW,
    O_PREFETCH,
    O_AMQPS_URL,
    O_CA_FILE,
    O_NO_TLS,
    O_QUEUE_TYPE
};

static int own_option(void *ctx, int opt, const char *arg)
{
    config *cfg = ctx;
    size_t v;
    switch (opt) {
    case O_ROUNDS:
        if (parse_size(arg, "--rounds", 1, MAX_ROUNDS, &v) < 0)
            return -1;
        cfg->rounds = (int)v;
        cfg->rounds_set = 1;
        return 0;
    case O_BATCH:
        return parse_size(arg, "--batch", 1, HD_OUTBOX_BATCH_MAX, &cfg->batch);
    case O_WINDOW:
        return parse_size(arg, "--window", 1, 1000000, &cfg->window);
    case O_PREFETCH:
        if (parse_size(arg, "--prefetch", 1, 65535, &v) < 0)
            return -1;
        cfg->prefetch = (int)v;
        return 0;
    case O_BATCH_MAX:
        return parse_size(arg, "--batch-max", 1, 256, &cfg->batch_max);
    case O_DECODE:
        cfg->decode = 1;
        return 0;
    case O_NO_PIPELINE:
        cfg->no_pipeline = 1;
        return 0;
    case O_PUBLISHER:
        cfg->publisher = 1;
        return 0;
    case O_AMQPS_URL:
        cfg->tls_url = arg;
        return 0;
    case O_CA_FILE:
        cfg->ca_file = arg;
        return 0;
    case O_NO_TLS:
        cfg->tls_url = "";
        return 0;
    case O_QUEUE_TYPE:
        if (strcmp(arg, "classic") != 0 && strcmp(arg, "classic-v2") != 0 &&
            strcmp(arg, "quorum") != 0) {
            fprintf(stderr, PROG ": --queue-type: classic, classic-v2 or quorum, not '%s'\n", arg);
            return -1;
        }
        cfg->quorum = strcmp(arg, "quorum") == 0;
        cfg->kind = arg;
        return 0;
    default:
        return -1;
    }
}

/* Options of the relay and consumer phases; bench_options_parse adds the shared ones. */
static const struct option relay_inbox_options[] = {
    {"rounds", required_argument, NULL, O_ROUNDS},
    {"batch", required_argument, NULL, O_BATCH},
    {"window", required_argument, NULL, O_WINDOW},
    {"no-pipeline", no_argument, NULL, O_NO_PIPELINE},
    {"prefetch", required_argument, NULL, O_PREFETCH},
    {"batch-max", required_argument, NULL, O_BATCH_MAX},
    {"decode", no_argument, NULL, O_DECODE},
    {"publisher", no_argument, NULL, O_PUBLISHER},
    {"amqps-url", required_argument, NULL, O_AMQPS_URL},
    {"ca-file", required_argument, NULL, O_CA_FILE},
    {"no-tls", no_argument, NULL, O_NO_TLS},
    {"queue-type", required_argument, NULL, O_QUEUE_TYPE},
    {NULL, 0, NULL, 0},
};

static int parse_args(int argc, char **argv, config *cfg)
{
    *cfg = (config){.rounds = 5, .batch = 1000, .prefetch = 256, .kind = "classic"};
    bench_options_init(&cfg->o, PROG, 20000, 2000, 10000000);
    int rc = bench_options_parse(&cfg->o, argc, argv, relay_inbox_options, own_option, cfg, usage);
    if (rc == 0 && cfg->o.quick && !cfg->rounds_set)
        cfg->rounds = 1;
    if (cfg->window == 0)
        cfg->window = cfg->batch;
    if (cfg->tls_url == NULL)
        cfg->tls_url = getenv("HD_AMQPS_URL");
    if (cfg->tls_url != NULL && *cfg->tls_url == '\0')
        cfg->tls_url = NULL; /* --no-tls, or an empty variable */
    if (cfg->ca_file == NULL)
        cfg->ca_file = getenv("HD_TLS_CA_FILE");
    if (cfg->ca_file != NULL && *cfg->ca_file == '\0')
        cfg->ca_file = NULL;
    if (cfg->batch_max == 0) {
        /* Half the prefetch: while one half is being committed, the broker already sends the
         * other half, so the socket never runs dry during the fsync. */
        size_t half = (size_t)cfg->prefetch / 2;
        cfg->batch_max = half == 0 ? 1 : half > 256 ? 256 : half;
    }
    return rc;
}

/* ---- measuring -------------------------------------------------------------------------- */

/* One measurement: one phase of one round (bench_span: the same definitions as every
 * bench's). */
typedef struct phase {
    const char *key; /* JSON name */
    bench_span m;
} phase;

/* ---- the broker side -------------------------------------------------------------------- */

typedef struct broker {
    hd_amqp *admin; /* declarations and counts */
    char exchange[64];
    char queue[80];
    char routing_key[96]; /* also the relay's event type: "<exchange>.item_added" */
    /* Phase 1b's own exchange and queue: the main queue's messages are those of phases 1 to 4
     * only. (The broker's message store is shared: with 1b in the rounds, phase 2 ran in its
     * fast mode more often either way; docs/bench.md, eighth pass.) */
    char ce_exchange[72];
    char ce_queue[88];
    size_t event_bytes; /* the relay's encoded event, phase 1b's body: once a run */
    char version[64];
} broker;

static int broker_setup(broker *b, const char *url, const char *kind, hd_error *err)
{
    int rc = bench_broker_open(url, &b->admin, b->version, sizeof b->version, err);
    if (rc < 0)
        return rc;
    snprintf(b->exchange, sizeof b->exchange, "hdbench-%ld", (long)getpid());
    snprintf(b->queue, sizeof b->queue, "%s.q", b->exchange);
    snprintf(b->routing_key, sizeof b->routing_key, "%s.item_added", b->exchange);
    /* The exchange as the relay declares it (durable topic), so the relay's own declare is
     * the idempotent no-op it is in production. */
    snprintf(b->ce_exchange, sizeof b->ce_exchange, "%s-ce", b->exchange);
    snprintf(b->ce_queue, sizeof b->ce_queue, "%s.q", b->ce_exchange);
    if ((rc = bench_broker_declare_exchange(b->admin, b->exchange, err)) < 0 ||
        (rc = bench_broker_declare_queue_kind(b->admin, b->queue, b->exchange, "#", kind, err)) <
            0 ||
        (rc = bench_broker_declare_exchange(b->admin, b->ce_exchange, err)) < 0 ||
        (rc = bench_broker_declare_queue_kind(b->admin, b->ce_queue, b->ce_exchange, "#", kind,
                                              err)) < 0)
        return rc;
    return 0;
}

static void broker_teardown(broker *b)
{
    bench_broker_drop(b->admin, b->ce_queue, b->ce_exchange);
    bench_broker_drop(b->admin, b->queue, b->exchange);
    bench_broker_close(b->admin);
    b->admin = NULL;
}

/* Ready messages in the queue, or -1, once it is `expect` or after 10 s (then what it is).
 * Why wait: a quorum queue applies acks and enqueues through its Raft log, and the count a
 * declare reports can trail the acks and confirms the client already has by a few dozen
 * messages for a moment. A classic queue answers `expect` at once. Outside the timed span. */
static long queue_depth(broker *b, long expect, hd_error *err)
{
    long n = bench_queue_depth(b->admin, b->queue, err);
    for (int i = 0; i < 200 && n >= 0 && n != expect; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        n = bench_queue_depth(b->admin, b->queue, err);
    }
    return n;
}

/* How long a quorum queue's count must stay 0 after the raw consumer closed (quorum_settle). */
#define QUORUM_SETTLE_MS 1000

/* Seen with RabbitMQ 3.10 and a quorum queue on the cluster: after the raw consumer acked
 * its n deliveries and closed, the queue counts 0, then a few dozen of them ready again about
 * 20 ms later (11 to 68 in two runs of three, 2026-12-05; never with a classic queue). The
 * cause is the broker's, not established: acks still on their way to the queue's leader
 * when the channel closed, the deliveries handed back with the consumer. The raw phase is
 * the reference, not herald, and the relay phase counts the queue exactly, so the count is
 * watched until it has stayed 0 for QUORUM_SETTLE_MS, and what comes back (at most 1 % of
 * n: more is not this) is purged; *purged says how many. Returns the count left (0 when
 * settled), or -1 with err set. */
static long quorum_settle(const config *cfg, broker *b, long left, uint32_t *purged, hd_error *err)
{
    int64_t quiet_since = hd_clock_ns(), give_up = quiet_since + 10000 * (int64_t)1000000;
    *purged = 0;
    for (;;) {
        int64_t now = hd_clock_ns();
        if (left < 0 || (size_t)left * 100 > cfg->o.count)
            return left;
        if (left > 0) {
            uint32_t n = 0;
            if (hd_queue_purge(b->admin, b->queue, &n, err) < 0)
                return -1;
            *purged += n;
            quiet_since = now;
        } else if (now - quiet_since >= QUORUM_SETTLE_MS * (int64_t)1000000) {
            return 0;
        }
        if (now > give_up)
            return left;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        left = bench_queue_depth(b->admin, b->queue, err);
    }
}

/* ---- phases 1 and 2: the raw limits (bench/common/raw_broker.c) ---------------------------- */

/* Bare messages of BODY_BYTES into the main queue; or (shape CloudEvents, phase 1b) messages
 * of the relay's events' size with the properties the relay puts on them (raw_broker.h,
 * bench_shape), into phase 1b's own queue: the like-for-like denominator of relay / raw
 * publish. */
static int raw_publish(const config *cfg, broker *b, bench_shape shape, size_t bytes, phase *p,
                       hd_error *err)
{
    return bench_raw_publish(
        cfg->o.url, shape == BENCH_SHAPE_CLOUDEVENTS ? b->ce_exchange : b->exchange, b->routing_key,
        cfg->o.count, bytes, cfg->o.raw_window, shape, &p->m, err);
}

static int raw_consume(const config *cfg, broker *b, phase *p, hd_error *err)
{
    return bench_raw_consume(cfg->o.url, b->queue, cfg->o.count, cfg->o.raw_prefetch, &p->m, err);
}

/* ---- between 1 and 3: herald's publisher alone -------------------------------------------- */

/* The relay's publisher without the relay: hd_publisher with the window of phase 1 and the
 * properties the relay sets (persistent, mandatory, content type, type, message id). Tells
 * apart what the publisher costs and what the relay's cycle (claim, wait, mark) costs. The
 * messages are purged afterwards (untimed): they are not the relay's. */
typedef struct fates {
    uint64_t confirmed, other;
} fates;

static void count_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)user;
    (void)reason;
    fates *f = ctx;
    if (fate == HD_FATE_CONFIRMED)
        f->confirmed++;
    else
        f->other++;
}

static int publisher_phase(const config *cfg, broker *b, phase *p, hd_error *err)
{
    hd_amqp *a = NULL;
    hd_publisher *pub = NULL;
    fates f = {0, 0};
    hd_amqp_options ao = {.connection_name = "bench publisher"};
    int rc = hd_amqp_open(cfg->o.url, &ao, &a, err);
    if (rc < 0)
        return rc;
    hd_publisher_options po = {.window = cfg->o.raw_window, .on_fate = count_fate, .ctx = &f};
    if ((rc = hd_publisher_new(a, &po, &pub, err)) < 0)
        goto out;
    char body[BODY_BYTES];
    memset(body, 'x', sizeof body);
    char id[64];
    hd_message m = {.exchange = b->exchange,
                    .routing_key = b->routing_key,
                    .body = body,
                    .len = sizeof body,
                    .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
                    .type = b->routing_key,
                    .message_id = id};
    bench_progress pr;
    bench_progress_start(&pr, "herald publisher", cfg->o.count);
    bench_span_begin(&p->m);
    for (size_t i = 0; i < cfg->o.count; i++) {
        snprintf(id, sizeof id, "bench-%zu", i);
        if ((rc = hd_publisher_publish(pub, &m, NULL, err)) < 0)
            goto out;
        if ((i & 255) == 0)
            bench_progress_tick(&pr, (size_t)f.confirmed, NULL);
    }
    if ((rc = hd_publisher_wait(pub, STALL_MS, err)) < 0)
        goto out;
    bench_span_end(&p->m, (size_t)f.confirmed);
    bench_progress_done(&pr, &p->m);
    if (f.other > 0)
        rc = hd_error_set(err, HD_ENACKED, "herald publisher: %" PRIu64 " messages not confirmed",
                          f.other);
    else
        rc = hd_queue_purge(b->admin, b->queue, NULL, err);
out:
    hd_publisher_free(pub);
    hd_amqp_close(a);
    return rc;
}

/* ---- phase 3: the relay ------------------------------------------------------------------ */

/* An envelope about BODY_BYTES long once encoded: a counter and padding in its data. */
static hd_envelope *make_event(const char *type, size_t i, const char *pad)
{
    json_t *data = *pad ? json_pack("{s:I, s:s}", "n", (json_int_t)i, "pad", pad)
                        : json_pack("{s:I}", "n", (json_int_t)i);
    return hd_envelope_new(type, 1, "/bench", data);
}

/* The padding that brings an encoded event to BODY_BYTES (events differ by the digits of
 * their counter only), or none when the bare event is already longer (it is: the envelope's
 * own attributes take about 210 bytes). Writes the encoded size of event 10000 in *size. */
static void choose_padding(const char *type, char *pad, size_t cap, size_t *size)
{
    pad[0] = '\0';
    hd_envelope *env = make_event(type, 10000, pad);
    char *text = NULL;
    size_t len = 0;
    if (env != NULL && hd_envelope_encode(env, &text, &len, NULL) == 0) {
        /* ',"pad":""' costs 9 bytes before the first byte of padding. */
        size_t want = len + 9 < BODY_BYTES ? BODY_BYTES - len - 9 : 0;
        if (want >= cap)
            want = cap - 1;
        memset(pad, 'x', want);
        pad[want] = '\0';
        *size = want ? len + 9 + want : len;
    } else {
        *size = 0;
    }
    free(text);
    hd_envelope_free(env);
}

static int fill_outbox(const config *cfg, hd_store *s, const char *type, const char *pad,
                       hd_error *err)
{
    bench_progress pr;
    bench_progress_start(&pr, "outbox fill (untimed)", cfg->o.count);
    for (size_t i = 0; i < cfg->o.count; i += FILL_PER_TX) {
        int rc = hd_store_begin(s, err);
        if (rc < 0)
            return rc;
        for (size_t k = i; k < i + FILL_PER_TX && k < cfg->o.count; k++) {
            hd_envelope *env = make_event(type, k, pad);
            if (env == NULL) {
                hd_store_rollback(s, NULL);
                return hd_error_set(err, HD_ENOMEM, "outbox fill");
            }
            /* One aggregate per event (a user each): no row waits for another's retry. */
            char agg[32];
            snprintf(agg, sizeof agg, "user-%zu", k);
            rc = hd_outbox_append(s, env, "user", agg, err);
            hd_envelope_free(env);
            if (rc < 0) {
                hd_store_rollback(s, NULL);
                return rc;
            }
        }
        if ((rc = hd_store_commit(s, err)) < 0)
            return rc;
        bench_progress_tick(&pr, i + FILL_PER_TX < cfg->o.count ? i + FILL_PER_TX : cfg->o.count,
                            NULL);
    }
    return 0;
}

typedef struct relay_extra {
    size_t event_bytes;
    hd_relay_stats stats; /* batches: claims that returned rows */
    long queue_after;     /* messages in the queue afterwards */
    int64_t pending_after;
} relay_extra;

/* The relay runs in hd_relay_run, which returns once the outbox is empty (drain). This
 * thread watches it meanwhile: the progress line, and a stop when nothing was confirmed for
 * STALL_MS (hd_relay_run then finishes what is in flight and returns). It reads the totals
 * with hd_relay_get_stats, the one relay call another thread may make. */
typedef struct relay_watch {
    hd_relay *relay; /* borrowed */
    bench_progress *pr;
    hd_stop stop; /* hd_relay_run's stop token: requested on a stall */
    hd_stop done; /* hd_relay_run returned: the watcher ends (at once, not after a nap) */
    int stalled;
} relay_watch;

static void *watch_relay(void *arg)
{
    relay_watch *w = arg;
    uint64_t last = 0;
    int64_t last_change = hd_clock_ns();
    while (!hd_stop_requested(&w->done)) {
        hd_stop_wait_ms(&w->done, 50);
        hd_relay_stats t;
        hd_relay_get_stats(w->relay, &t);
        int64_t now = hd_clock_ns();
        if (!hd_stop_requested(&w->done))
            bench_progress_tick(w->pr, (size_t)t.confirmed, NULL);
        if (t.confirmed != last) {
            last = t.confirmed;
            last_change = now;
        } else if (!w->stalled && now - last_change > (int64_t)STALL_MS * 1000000) {
            w->stalled = 1;
            hd_stop_request(&w->stop);
        }
    }
    return NULL;
}

/* tls: over cfg->tls_url (its SQLite file numbered round + MAX_ROUNDS) instead of TCP. */
static int relay_phase(const config *cfg, broker *b, const char *dir, int round, int tls, phase *p,
                       relay_extra *x, hd_error *err)
{
    char url[4200];
    snprintf(url, sizeof url, "sqlite://%s/outbox-%d.db?synchronous=full", dir,
             tls ? round + MAX_ROUNDS : round);
    hd_store *s = NULL;
    hd_amqp *a = NULL;
    hd_relay *r = NULL;
    int rc = hd_store_open(url, &s, err);
    if (rc < 0)
        return rc;
    if ((rc = hd_outbox_migrate(s, err)) < 0)
        goto out;
    char pad[BODY_BYTES + 1];
    choose_padding(b->routing_key, pad, sizeof pad, &x->event_bytes);
    if ((rc = fill_outbox(cfg, s, b->routing_key, pad, err)) < 0)
        goto out;

    hd_amqp_options ao = {.connection_name = "bench relay",
                          .ca_cert_path = tls ? cfg->ca_file : NULL};
    if ((rc = hd_amqp_open(tls ? cfg->tls_url : cfg->o.url, &ao, &a, err)) < 0)
        goto out;
    /* As herald-relay --drain runs it, except that retention is off: the purge at start is
     * not what is measured. poll_ms only matters for rows waiting for a retry (none here). */
    hd_relay_options ro = {.batch = cfg->batch,
                           .window = cfg->window,
                           .relay_id = "bench",
                           .drain = 1,
                           .retention_ms = -1,
                           .poll_ms = 10,
                           .no_pipeline = cfg->no_pipeline};
    if ((rc = hd_store_relax_sync(s, err)) < 0 || /* as herald-relay: store.h */
        (rc = hd_store_wait_in_line(s, err)) < 0 || (rc = hd_relay_new(s, a, &ro, &r, err)) < 0)
        goto out;

    bench_progress pr;
    bench_progress_start(&pr, tls ? "relay (TLS)" : "relay", cfg->o.count);
    relay_watch w = {.relay = r, .pr = &pr};
    if ((rc = hd_stop_init(&w.stop, err)) < 0)
        goto out;
    if ((rc = hd_stop_init(&w.done, err)) < 0) {
        hd_stop_release(&w.stop);
        goto out;
    }
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_relay, &w) != 0) {
        hd_stop_release(&w.stop);
        hd_stop_release(&w.done);
        rc = hd_error_set(err, HD_ENOMEM, "relay: cannot start the watcher thread");
        goto out;
    }
    bench_span_begin(&p->m);
    rc = hd_relay_run(r, &w.stop, err);
    hd_relay_stats *tot = &x->stats;
    hd_relay_get_stats(r, tot);
    bench_span_end(&p->m, (size_t)tot->confirmed);
    hd_stop_request(&w.done);
    pthread_join(watcher, NULL); /* outside the timed part */
    hd_stop_release(&w.stop);
    hd_stop_release(&w.done);
    if (rc == 0 && w.stalled)
        rc = hd_error_set(
            err, HD_ETIMEOUT,
            "relay: nothing confirmed for %d s with %" PRIu64 " of %zu confirmed (returned "
            "%" PRIu64 ", nacked %" PRIu64 ", lost %" PRIu64 ")",
            STALL_MS / 1000, tot->confirmed, cfg->o.count, tot->returned, tot->nacked, tot->lost);
    if (rc < 0) {
        p->m.ran = 0; /* a failed phase is not a measurement */
        goto out;
    }
    bench_progress_done(&pr, &p->m);
    x->queue_after = queue_depth(b, (long)cfg->o.count, err);
    if (x->queue_after < 0) {
        rc = HD_EAMQP;
        goto out;
    }
    rc = hd_outbox_depth(s, &x->pending_after, NULL, NULL, err);
out:
    hd_relay_free(r);
    hd_amqp_close(a);
    hd_store_close(s);
    return rc;
}

/* ---- phase 4: consumer + inbox, group commit ---------------------------------------------- */

typedef struct sink {
    hd_store *store;
    size_t batches; /* group commits */
    size_t singles; /* messages handled one per transaction (fallback) */
    size_t largest; /* largest batch */
    size_t missing_id;
    int64_t handler_ns; /* time inside the handlers: the SQLite share of the phase */
    int failed;
    hd_error err;
} sink;

/* Accept ids[0..n) and write one effect row per new one, in the open transaction. */
static int write_batch(sink *k, const hd_delivery *const *ds, size_t n)
{
    const char *ids[256] = {NULL};
    unsigned char fresh[256] = {0};
    if (n > 256)
        return hd_error_set(&k->err, HD_ERANGE, "a batch of %zu deliveries", n);
    for (size_t i = 0; i < n; i++) {
        if (ds[i]->message_id == NULL) {
            k->missing_id++;
            return hd_error_set(&k->err, HD_EMISSING, "a delivery without message id");
        }
        ids[i] = ds[i]->message_id;
    }
    int rc = hd_inbox_accept_many(k->store, CONSUMER_NAME, ids, n, fresh, &k->err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (!fresh[i])
            continue; /* a duplicate: already done, nothing to repeat */
        hd_value v[] = {hd_value_text(ids[i]), hd_value_int((int64_t)ds[i]->body_len)};
        rc = hd_store_exec(k->store,
                           "INSERT INTO bench_effect (message_id, body_len) VALUES ($1, $2)", v, 2,
                           &k->err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static hd_consume_result in_one_tx(sink *k, const hd_delivery *const *ds, size_t n)
{
    int64_t t0 = hd_clock_ns();
    int rc = hd_store_begin(k->store, &k->err);
    if (rc == 0 && (rc = write_batch(k, ds, n)) == 0)
        rc = hd_store_commit(k->store, &k->err);
    k->handler_ns += hd_clock_ns() - t0;
    if (rc < 0) {
        if (hd_store_in_transaction(k->store))
            hd_store_rollback(k->store, NULL);
        k->failed = 1;
        return HD_CONSUME_RETRY;
    }
    return HD_CONSUME_OK;
}

static hd_consume_result on_batch(void *ctx, const hd_delivery *const *ds, size_t n)
{
    sink *k = ctx;
    if (n > 256)
        return HD_CONSUME_RETRY;
    k->batches++;
    if (n > k->largest)
        k->largest = n;
    return in_one_tx(k, ds, n);
}

static hd_consume_result on_one(void *ctx, const hd_delivery *d)
{
    sink *k = ctx;
    k->singles++;
    const hd_delivery *ds[1] = {d};
    return in_one_tx(k, ds, 1);
}

typedef struct consumer_extra {
    size_t batches, singles, largest;
    double handler_s; /* of the phase's seconds, spent in the handlers (SQLite) */
    double mean_batch;
    int64_t effects, distinct_effects, inbox_rows;
    long queue_after;
    hd_consumer_counts counts;
} consumer_extra;

static int64_t scalar(hd_store *s, const char *sql, hd_error *err)
{
    hd_rows *rows = NULL;
    if (hd_store_query(s, sql, NULL, 0, &rows, err) < 0)
        return -1;
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v;
}

static int consumer_phase(const config *cfg, broker *b, const char *dir, int round, int tls,
                          phase *p, consumer_extra *x, hd_error *err)
{
    char url[4200];
    snprintf(url, sizeof url, "sqlite://%s/inbox-%d.db?synchronous=full", dir,
             tls ? round + MAX_ROUNDS : round);
    sink k;
    memset(&k, 0, sizeof k);
    hd_consumer *c = NULL;
    hd_registry *reg = NULL;
    int rc = hd_store_open(url, &k.store, err);
    if (rc < 0)
        return rc;
    if ((rc = hd_inbox_migrate(k.store, err)) < 0 ||
        (rc = hd_store_exec(k.store,
                            "CREATE TABLE bench_effect (id INTEGER PRIMARY KEY,"
                            " message_id TEXT NOT NULL, body_len INTEGER NOT NULL)",
                            NULL, 0, err)) < 0)
        goto out;
    if (cfg->decode) {
        reg = hd_registry_new();
        if (reg == NULL || hd_registry_add(reg, b->routing_key, 1, NULL, NULL) < 0) {
            rc = hd_error_set(err, HD_ENOMEM, "registry");
            goto out;
        }
    }

    hd_consumer_options co = {.queue = b->queue,
                              .handler = on_one,
                              .batch_handler = on_batch,
                              .batch_max = cfg->batch_max,
                              .ctx = &k,
                              .prefetch = cfg->prefetch,
                              .registry = reg};
    hd_amqp_options ao = {.ca_cert_path = tls ? cfg->ca_file : NULL};
    co.amqp = &ao;
    if ((rc = hd_consumer_open(tls ? cfg->tls_url : cfg->o.url, &co, &c, err)) < 0)
        goto out;

    bench_progress pr;
    bench_progress_start(&pr, tls ? "consumer + inbox (TLS)" : "consumer + inbox", cfg->o.count);
    hd_consumer_counts counts;
    memset(&counts, 0, sizeof counts);
    bench_span_begin(&p->m);
    int64_t last_progress = hd_clock_ns();
    while (counts.acked < cfg->o.count) {
        rc = hd_consumer_poll(c, 1000, err);
        hd_consumer_get_counts(c, &counts);
        if (k.failed) {
            *err = k.err;
            rc = k.err.code < 0 ? k.err.code : HD_EHANDLER;
            goto out;
        }
        if (rc < 0)
            goto out;
        int64_t now = hd_clock_ns();
        if (rc > 0)
            last_progress = now;
        else if (now - last_progress > (int64_t)STALL_MS * 1000000) {
            rc = hd_error_set(err, HD_ETIMEOUT,
                              "consumer: nothing for %d s after %" PRIu64 " of %zu acked",
                              STALL_MS / 1000, counts.acked, cfg->o.count);
            goto out;
        }
        bench_progress_tick(&pr, (size_t)counts.acked, NULL);
    }
    bench_span_end(&p->m, (size_t)counts.acked);
    bench_progress_done(&pr, &p->m);
    rc = 0;
    x->counts = counts;
    x->batches = k.batches;
    x->singles = k.singles;
    x->largest = k.largest;
    x->handler_s = (double)k.handler_ns / 1e9;
    x->mean_batch = k.batches ? (double)(counts.acked - k.singles) / (double)k.batches : 0.0;
    x->effects = scalar(k.store, "SELECT COUNT(*) FROM bench_effect", err);
    x->distinct_effects =
        scalar(k.store, "SELECT COUNT(DISTINCT message_id) FROM bench_effect", err);
    x->inbox_rows = scalar(k.store, "SELECT COUNT(*) FROM hd_inbox", err);
    if (x->effects < 0 || x->distinct_effects < 0 || x->inbox_rows < 0)
        rc = HD_ESTORE;
out:
    hd_consumer_close(c);
    hd_registry_free(reg);
    hd_store_close(k.store);
    if (rc == 0) {
        x->queue_after = queue_depth(b, 0, err);
        if (x->queue_after < 0)
            rc = HD_EAMQP;
    }
    return rc;
}

/* ---- work directory ------------------------------------------------------------------- */

static char *make_workdir(const config *cfg)
{
    char path[4096];
    if (cfg->o.workdir != NULL) {
        if (mkdir(cfg->o.workdir, 0700) < 0 && errno != EEXIST)
            return NULL;
        snprintf(path, sizeof path, "%s/relay_inbox-XXXXXX", cfg->o.workdir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/herald-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    }
    if (mkdtemp(path) == NULL)
        return NULL;
    return strdup(path);
}

static void remove_workdir(const char *dir, int rounds)
{
    static const char *const names[] = {"outbox", "inbox"};
    char path[4200];
    for (int r = 0; r < rounds; r++)
        for (size_t n = 0; n < 2; n++)
            for (int tls = 0; tls < 2; tls++) { /* the TLS phases' files: r + MAX_ROUNDS */
                snprintf(path, sizeof path, "%s/%s-%d.db", dir, names[n], r + tls * MAX_ROUNDS);
                hd_store_sqlite_remove(path);
            }
    rmdir(dir);
}

/* ---- one round: the four phases ---------------------------------------------------------- */

/* In the order of the table; they run in another order (see run_round). */
#define NPHASES 8
enum {
    P_RAW_PUBLISH = 0, /* bare messages */
    P_RAW_PUBLISH_CE,  /* herald's message shape: the relay's denominator */
    P_PUBLISHER,
    P_RELAY,
    P_RAW_CONSUME,
    P_CONSUMER,
    P_RELAY_TLS,
    P_CONSUMER_TLS
};

typedef struct round_result {
    phase ph[NPHASES];
    relay_extra rx;
    consumer_extra cx;
    relay_extra rx_tls; /* the same over amqps:// */
    consumer_extra cx_tls;
} round_result;

/* Phases 3 and 4, over TCP (tls 0) or TLS (1), with their checks. */
static int relay_and_consumer(const config *cfg, broker *b, const char *dir, int round, int tls,
                              round_result *rr, size_t *lost, char *failure, size_t cap)
{
    hd_error err;
    hd_error_clear(&err);
    /* 3: the relay, then the count in the queue. */
    relay_extra *rx = tls ? &rr->rx_tls : &rr->rx;
    if (relay_phase(cfg, b, dir, round, tls, &rr->ph[tls ? P_RELAY_TLS : P_RELAY], rx, &err) < 0) {
        snprintf(failure, cap, "relay%s: %s", tls ? " (TLS)" : "", err.text);
        return -1;
    }
    if (rx->queue_after != (long)cfg->o.count || rx->stats.confirmed != cfg->o.count ||
        rx->pending_after != 0) {
        size_t have = rx->queue_after > 0 ? (size_t)rx->queue_after : 0;
        *lost += have < cfg->o.count ? cfg->o.count - have : 0;
        snprintf(failure, cap,
                 "relay: the queue holds %ld messages for %zu rows (%" PRIu64
                 " confirmed, %lld rows still pending)",
                 rx->queue_after, cfg->o.count, rx->stats.confirmed, (long long)rx->pending_after);
        return -1;
    }

    /* 4: consumer + inbox, then the effects. */
    consumer_extra *cx = tls ? &rr->cx_tls : &rr->cx;
    if (consumer_phase(cfg, b, dir, round, tls, &rr->ph[tls ? P_CONSUMER_TLS : P_CONSUMER], cx,
                       &err) < 0) {
        snprintf(failure, cap, "consumer + inbox%s: %s", tls ? " (TLS)" : "", err.text);
        return -1;
    }
    if (cx->effects != (int64_t)cfg->o.count || cx->distinct_effects != (int64_t)cfg->o.count ||
        cx->inbox_rows != (int64_t)cfg->o.count || cx->queue_after != 0) {
        int64_t have = cx->distinct_effects;
        *lost += have < (int64_t)cfg->o.count ? cfg->o.count - (size_t)have : 0;
        snprintf(failure, cap,
                 "consumer + inbox: %lld effect rows (%lld distinct) and %lld inbox rows for "
                 "%zu messages; %ld left in the queue",
                 (long long)cx->effects, (long long)cx->distinct_effects, (long long)cx->inbox_rows,
                 cfg->o.count, cx->queue_after);
        return -1;
    }
    return 0;
}

/* Run every phase once: raw publish, raw consume, herald's publisher alone (its messages
 * purged), relay, consumer + inbox. Returns 0, or -1 with the reason in failure; *lost
 * counts messages that did not arrive. */
static int run_round(const config *cfg, broker *b, const char *dir, int round, round_result *rr,
                     size_t *lost, char *failure, size_t cap)
{
    hd_error err;
    hd_error_clear(&err);
    static const char *const keys[NPHASES] = {
        "raw_publish", "raw_publish_cloudevents", "publisher", "relay",
        "raw_consume", "consumer_inbox",          "relay_tls", "consumer_inbox_tls"};
    for (int i = 0; i < NPHASES; i++)
        rr->ph[i].key = keys[i];

    /* 1 and 2: the broker's limits; then the same publish with the relay's messages, and
     * the publisher without the relay around it. */
    if (raw_publish(cfg, b, BENCH_SHAPE_BARE, BODY_BYTES, &rr->ph[P_RAW_PUBLISH], &err) < 0) {
        snprintf(failure, cap, "raw publish: %s", err.text);
        return -1;
    }
    if (raw_consume(cfg, b, &rr->ph[P_RAW_CONSUME], &err) < 0) {
        snprintf(failure, cap, "raw consume: %s", err.text);
        return -1;
    }
    long left = queue_depth(b, 0, &err);
    if (cfg->quorum) {
        uint32_t purged = 0;
        left = quorum_settle(cfg, b, left, &purged, &err);
        if (left < 0) {
            snprintf(failure, cap, "after raw consume: %s", err.text);
            return -1;
        }
        if (purged > 0)
            fprintf(stderr,
                    "raw consume: the quorum queue counted %" PRIu32 " of the %zu acked "
                    "messages ready again after the consumer closed: purged\n",
                    purged, cfg->o.count);
    }
    if (left != 0) {
        snprintf(failure, cap, "after raw consume the queue holds %ld messages", left);
        return -1;
    }
    /* 1b: raw publish of messages shaped like the relay's, into a queue of its own, then
     * purged (unmeasured). */
    if (b->event_bytes == 0) {
        char pad[BODY_BYTES];
        choose_padding(b->routing_key, pad, sizeof pad, &b->event_bytes);
    }
    if (raw_publish(cfg, b, BENCH_SHAPE_CLOUDEVENTS, b->event_bytes ? b->event_bytes : BODY_BYTES,
                    &rr->ph[P_RAW_PUBLISH_CE], &err) < 0 ||
        hd_queue_purge(b->admin, b->ce_queue, NULL, &err) < 0) {
        snprintf(failure, cap, "raw publish (CloudEvents shape): %s", err.text);
        return -1;
    }
    if (cfg->publisher && publisher_phase(cfg, b, &rr->ph[P_PUBLISHER], &err) < 0) {
        snprintf(failure, cap, "herald publisher: %s", err.text);
        return -1;
    }

    /* 3 and 4 over TCP, then (with a TLS URL) over TLS, right after: the ratio compares
     * figures measured close in time. */
    for (int tls = 0; tls <= (cfg->tls_url != NULL); tls++)
        if (relay_and_consumer(cfg, b, dir, round, tls, rr, lost, failure, cap) < 0)
            return -1;
    return 0;
}

/* ---- results ---------------------------------------------------------------------------- */

/* One phase over the rounds: the median rate, and the spread. */
typedef struct summary {
    const char *key;
    char label[96];
    int n; /* rounds in which it ran */
    double rate, min, max;
    double cpu_share; /* median of bench CPU / wall */
    double busy;      /* median machine busy share */
} summary;

static void summarise(const round_result *rr, int rounds, int which, summary *s)
{
    double rates[MAX_ROUNDS], cpu[MAX_ROUNDS], busy[MAX_ROUNDS];
    int n = 0;
    for (int r = 0; r < rounds; r++) {
        const phase *p = &rr[r].ph[which];
        if (!p->m.ran)
            continue;
        rates[n] = p->m.rate;
        cpu[n] = p->m.seconds > 0 ? p->m.bench_cpu / p->m.seconds : 0.0;
        busy[n] = p->m.machine;
        n++;
    }
    s->n = n;
    s->rate = bench_median(rates, (size_t)n); /* sorts rates: min and max are its ends */
    s->min = n ? rates[0] : 0.0;
    s->max = n ? rates[n - 1] : 0.0;
    s->cpu_share = bench_median(cpu, (size_t)n);
    s->busy = bench_median(busy, (size_t)n);
}

typedef struct verdict {
    const char *key;
    const char *what;
    double ratio;
    double target;
    int pass;
    int known;
    const char *aside; /* printed in place of a verdict when there is no target */
} verdict;

static verdict judge(const char *key, const char *what, const summary *herald, const summary *raw,
                     double target)
{
    verdict v = {.key = key, .what = what, .target = target};
    if (herald->n > 0 && raw->n > 0 && raw->rate > 0) {
        v.known = 1;
        v.ratio = herald->rate / raw->rate;
        v.pass = v.ratio >= target;
    }
    return v;
}

/* Totals of the relay's and the consumer's details over the rounds that ran. */
typedef struct details {
    uint64_t batches;
    double ms_per_batch; /* relay phase time / batches */
    size_t event_bytes;
    size_t commits, singles, largest;
    double mean_batch;
    double handler_s, consumer_s; /* time in the handler, and the phase's time */
} details;

static void gather(const round_result *rr, int rounds, details *d)
{
    memset(d, 0, sizeof *d);
    double relay_s = 0;
    size_t batched = 0;
    for (int r = 0; r < rounds; r++) {
        const relay_extra *x = &rr[r].rx;
        if (rr[r].ph[P_RELAY].m.ran) {
            d->batches += x->stats.batches;
            relay_s += rr[r].ph[P_RELAY].m.seconds;
        }
        if (x->event_bytes)
            d->event_bytes = x->event_bytes;
        const consumer_extra *c = &rr[r].cx;
        if (rr[r].ph[P_CONSUMER].m.ran) {
            d->commits += c->batches;
            d->singles += c->singles;
            if (c->largest > d->largest)
                d->largest = c->largest;
            batched += (size_t)c->counts.acked - c->singles;
            d->handler_s += c->handler_s;
            d->consumer_s += rr[r].ph[P_CONSUMER].m.seconds;
        }
    }
    d->ms_per_batch = d->batches ? 1000.0 * relay_s / (double)d->batches : 0.0;
    d->mean_batch = d->commits ? (double)batched / (double)d->commits : 0.0;
}

static void print_table(const config *cfg, const broker *b, const summary *s, const verdict *v,
                        size_t nv, const details *d, const char *date)
{
    char r[32], lo[32], hi[32];
    printf("\nherald bench: relay + inbox  (%zu messages x %d round%s, %d-byte bodies, RabbitMQ "
           "%s, SQLite %s synchronous=FULL, %ld CPUs, %s)\n\n",
           cfg->o.count, cfg->rounds, cfg->rounds == 1 ? "" : "s", BODY_BYTES, b->version,
           sqlite3_libversion(), sysconf(_SC_NPROCESSORS_ONLN), date);
    printf("  %-50s %10s %17s %9s %8s\n", "phase", "msg/s", "min..max", "bench CPU", "machine");
    for (int i = 0; i < NPHASES; i++) {
        if (s[i].n == 0 && (i == P_PUBLISHER || i == P_RELAY_TLS || i == P_CONSUMER_TLS))
            continue; /* only with --publisher, or a TLS URL */
        if (i == P_RELAY_TLS)
            printf("\n");
        if (s[i].n == 0) {
            printf("  %-50s %10s\n", s[i].label, "(not run)");
            continue;
        }
        char range[80];
        snprintf(range, sizeof range, "%s..%s", bench_thousands(lo, sizeof lo, s[i].min),
                 bench_thousands(hi, sizeof hi, s[i].max));
        printf("  %-50s %10s %17s %8.0f%% %7.0f%%\n", s[i].label,
               bench_thousands(r, sizeof r, s[i].rate), range, 100.0 * s[i].cpu_share,
               100.0 * s[i].busy);
        if (i == P_RELAY)
            printf("\n");
    }
    printf("\n  %-50s %8s %8s  %s\n", "ratio of the medians", "measured", "target", "verdict");
    for (size_t i = 0; i < nv; i++) {
        if (!v[i].known)
            printf("  %-50s %8s %7.0f%%  %s\n", v[i].what, "-", 100.0 * v[i].target, "n/a");
        else if (v[i].target <= 0.0)
            printf("  %-50s %7.1f%% %8s  %s\n", v[i].what, 100.0 * v[i].ratio, "-",
                   v[i].aside ? v[i].aside : "(no target)");
        else
            printf("  %-50s %7.1f%% %7.0f%%  %s\n", v[i].what, 100.0 * v[i].ratio,
                   100.0 * v[i].target, v[i].pass ? "PASS" : "MISS");
    }
    if (d->batches > 0)
        printf("\n  relay: %" PRIu64 " batches, one every %.1f ms on average (%s in flight), "
               "events of %zu bytes\n",
               d->batches, d->ms_per_batch, cfg->no_pipeline ? "one" : "two", d->event_bytes);
    if (d->commits + d->singles > 0)
        printf("  consumer: %zu group commits of %.1f messages on average (largest %zu), %zu "
               "single; %.0f%% of the time in the handler (SQLite)\n",
               d->commits, d->mean_batch, d->largest, d->singles,
               d->consumer_s > 0 ? 100.0 * d->handler_s / d->consumer_s : 0.0);
    printf("\n  msg/s = median over the rounds; bench CPU = this process's CPU time / wall time "
           "(100%% = one\n  core); machine = share of all CPUs busy, every process counted (the "
           "broker, and anything\n  else running on the machine).\n");
}

static json_t *phase_json(const summary *s, const round_result *rr, int rounds, int which)
{
    if (s->n == 0)
        return json_null();
    json_t *runs = json_array();
    for (int r = 0; r < rounds; r++) {
        const phase *p = &rr[r].ph[which];
        if (p->m.ran)
            json_array_append_new(
                runs, json_pack("{s:I, s:f, s:f, s:f, s:f}", "messages", (json_int_t)p->m.messages,
                                "seconds", p->m.seconds, "rate_per_s", p->m.rate, "bench_cpu_s",
                                p->m.bench_cpu, "machine_cpu_busy", p->m.machine));
    }
    return json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:o}", "label", s->label, "rate_per_s",
                     s->rate, "min_rate_per_s", s->min, "max_rate_per_s", s->max, "bench_cpu_share",
                     s->cpu_share, "machine_cpu_busy", s->busy, "rounds", runs);
}

static int write_json(const char *path, const config *cfg, const broker *b, const summary *s,
                      const round_result *rr, int rounds_done, const verdict *v, size_t nv,
                      const details *d, const char *date, int tmpfs, size_t lost,
                      const char *failure)
{
    json_t *phases = json_object();
    for (int i = 0; i < NPHASES; i++)
        json_object_set_new(phases, s[i].key, phase_json(&s[i], rr, rounds_done, i));
    json_t *ratios = json_object();
    for (size_t i = 0; i < nv; i++)
        json_object_set_new(
            ratios, v[i].key,
            v[i].known ? json_pack("{s:f, s:f, s:b}", "value", v[i].ratio, "target", v[i].target,
                                   "pass", v[i].pass)
                       : json_pack("{s:n, s:f, s:n}", "value", "target", v[i].target, "pass"));
    json_t *root = bench_results_new("relay_inbox", date, b->version);
    if (root != NULL)
        json_object_set_new(
            root, "parameters",
            json_pack("{s:I, s:i, s:i, s:I, s:i, s:I, s:I, s:i, s:I, s:b, s:s, s:s}", "count",
                      (json_int_t)cfg->o.count, "rounds", cfg->rounds, "body_bytes", BODY_BYTES,
                      "raw_window", (json_int_t)cfg->o.raw_window, "raw_prefetch",
                      cfg->o.raw_prefetch, "relay_batch", (json_int_t)cfg->batch, "relay_window",
                      (json_int_t)cfg->window, "consumer_prefetch", cfg->prefetch,
                      "consumer_batch_max", (json_int_t)cfg->batch_max, "decode", cfg->decode,
                      "synchronous", "full", "queue_type", cfg->kind));
    if (root == NULL || json_object_get(root, "parameters") == NULL) {
        json_decref(root);
        json_decref(phases);
        json_decref(ratios);
        return -1;
    }
    json_object_set_new(json_object_get(root, "parameters"), "workdir_on_tmpfs",
                        json_boolean(tmpfs));
    json_object_set_new(json_object_get(root, "parameters"), "publisher_phase",
                        json_boolean(cfg->publisher));
    json_object_set_new(json_object_get(root, "parameters"), "relay_pipeline",
                        json_boolean(!cfg->no_pipeline));
    json_object_set_new(root, "rounds_done", json_integer(rounds_done));
    json_object_set_new(root, "phases", phases);
    json_object_set_new(root, "ratios", ratios);
    json_object_set_new(root, "relay",
                        json_pack("{s:I, s:f, s:b, s:I}", "batches", (json_int_t)d->batches,
                                  "ms_per_batch", d->ms_per_batch, "pipeline", !cfg->no_pipeline,
                                  "event_bytes", (json_int_t)d->event_bytes));
    json_object_set_new(root, "consumer",
                        json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}", "group_commits",
                                  (json_int_t)d->commits, "single_commits", (json_int_t)d->singles,
                                  "largest_batch", (json_int_t)d->largest, "mean_batch",
                                  d->mean_batch, "handler_seconds", d->handler_s, "phase_seconds",
                                  d->consumer_s));
    json_object_set_new(root, "lost", json_integer((json_int_t)lost));
    json_object_set_new(root, "error", failure ? json_string(failure) : json_null());
    json_object_set_new(root, "ok", json_boolean(lost == 0 && failure == NULL));
    int rc = bench_results_write(root, path, PROG);
    json_decref(root);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    config cfg;
    int prc = parse_args(argc, argv, &cfg);
    if (prc == 1)
        return 0; /* --help */
    if (prc != 0)
        return 2;

    summary s[NPHASES];
    memset(s, 0, sizeof s);
    s[P_RAW_PUBLISH].key = "raw_publish";
    snprintf(s[P_RAW_PUBLISH].label, sizeof s[0].label,
             "raw publish, bare messages (confirms, window %zu)", cfg.o.raw_window);
    s[P_RAW_PUBLISH_CE].key = "raw_publish_cloudevents";
    snprintf(s[P_RAW_PUBLISH_CE].label, sizeof s[0].label,
             "raw publish, the relay's messages (window %zu)", cfg.o.raw_window);
    s[P_PUBLISHER].key = "publisher";
    snprintf(s[P_PUBLISHER].label, sizeof s[0].label, "herald publisher alone (window %zu)",
             cfg.o.raw_window);
    s[P_RAW_CONSUME].key = "raw_consume";
    snprintf(s[P_RAW_CONSUME].label, sizeof s[0].label, "raw consume (ack each, prefetch %d)",
             cfg.o.raw_prefetch);
    s[P_RELAY].key = "relay";
    snprintf(s[P_RELAY].label, sizeof s[0].label, "herald relay (batch %zu, window %zu%s)",
             cfg.batch, cfg.window, cfg.no_pipeline ? ", 1 in flight" : "");
    s[P_CONSUMER].key = "consumer_inbox";
    snprintf(s[P_CONSUMER].label, sizeof s[0].label,
             "herald consumer + inbox (prefetch %d, batch %zu)", cfg.prefetch, cfg.batch_max);
    s[P_RELAY_TLS].key = "relay_tls";
    snprintf(s[P_RELAY_TLS].label, sizeof s[0].label, "herald relay over TLS (amqps://)");
    s[P_CONSUMER_TLS].key = "consumer_inbox_tls";
    snprintf(s[P_CONSUMER_TLS].label, sizeof s[0].label,
             "herald consumer + inbox over TLS (amqps://)");

    round_result *rr = calloc((size_t)cfg.rounds, sizeof *rr);
    char *dir = make_workdir(&cfg);
    if (rr == NULL || dir == NULL) {
        fprintf(stderr, "bench-relay_inbox: cannot create a work directory: %s\n", strerror(errno));
        free(rr);
        return 1;
    }
    broker b;
    memset(&b, 0, sizeof b);
    snprintf(b.version, sizeof b.version, "?");
    hd_error err;
    hd_error_clear(&err);
    char failure[HD_ERROR_TEXT_MAX + 128] = "";
    size_t lost = 0;
    char date[32];
    bench_now_utc(date, sizeof date);
    char redacted[512];
    hd_amqp_url_redact(cfg.o.url, redacted, sizeof redacted);
    fprintf(stderr,
            "bench-relay_inbox: %zu messages x %d rounds, broker %s%s, SQLite files in %s\n",
            cfg.o.count, cfg.rounds, redacted, cfg.tls_url ? " (and over TLS)" : "", dir);
    int tmpfs = bench_on_tmpfs(dir);
    if (tmpfs)
        fprintf(stderr,
                "bench-relay_inbox: WARNING: %s is on tmpfs, where fsync is free: the "
                "SQLite figures will look too good (use --workdir on a disk)\n",
                dir);

    int rounds_done = 0;
    if (broker_setup(&b, cfg.o.url, cfg.kind, &err) < 0) {
        snprintf(failure, sizeof failure, "broker setup: %s", err.text);
    } else {
        fprintf(stderr, "queue %s (durable, %s), exchange %s (topic)\n", b.queue, cfg.kind,
                b.exchange);
        /* Rounds interleave the phases: on a machine whose load changes, each herald figure
         * is measured close in time to the raw figure it is compared with. */
        for (int r = 0; r < cfg.rounds; r++) {
            if (cfg.rounds > 1)
                fprintf(stderr, "---- round %d of %d\n", r + 1, cfg.rounds);
            rounds_done = r + 1;
            if (run_round(&cfg, &b, dir, r, &rr[r], &lost, failure, sizeof failure) < 0)
                break;
        }
    }

    for (int i = 0; i < NPHASES; i++)
        summarise(rr, rounds_done, i, &s[i]);
    verdict v[5];
    size_t nv = 3;
    /* The target compares the relay with a raw publish of the same messages (its properties
     * cost the broker; raw_broker.h, bench_shape); the ratio to bare messages, the
     * denominator of the seven passes before, is printed beside it without a target. */
    v[0] = judge("relay_vs_raw_publish", "relay / raw publish (the same messages)", &s[P_RELAY],
                 &s[P_RAW_PUBLISH_CE], TARGET_RELAY);
    v[1] = judge("relay_vs_raw_publish_bare", "relay / raw publish of bare messages", &s[P_RELAY],
                 &s[P_RAW_PUBLISH], 0.0);
    v[2] = judge("consumer_inbox_vs_raw_consume", "consumer + inbox / raw consume", &s[P_CONSUMER],
                 &s[P_RAW_CONSUME], TARGET_CONSUMER);
    if (cfg.tls_url != NULL) {
        /* No target: what TLS costs is measured and reported, not judged. */
        v[nv] = judge("relay_tls_vs_relay", "relay over TLS / over TCP", &s[P_RELAY_TLS],
                      &s[P_RELAY], 0.0);
        v[nv++].aside = "(the cost of TLS)";
        v[nv] = judge("consumer_inbox_tls_vs_tcp", "consumer + inbox over TLS / over TCP",
                      &s[P_CONSUMER_TLS], &s[P_CONSUMER], 0.0);
        v[nv++].aside = "(the cost of TLS)";
    }
    details d;
    gather(rr, rounds_done, &d);
    fflush(stderr);
    print_table(&cfg, &b, s, v, nv, &d, date);
    if (tmpfs)
        printf("\n  WARNING: the SQLite files were on tmpfs, where fsync costs nothing\n");
    if (lost > 0)
        printf("\n  LOST: %zu messages did not arrive\n", lost);
    if (failure[0] != '\0')
        printf("\n  FAILED: %s\n", failure);
    fflush(stdout);

    if (cfg.o.out != NULL)
        write_json(cfg.o.out, &cfg, &b, s, rr, rounds_done, v, nv, &d, date, tmpfs, lost,
                   failure[0] ? failure : NULL);

    broker_teardown(&b);
    if (cfg.o.keep)
        fprintf(stderr, "kept %s\n", dir);
    else
        remove_workdir(dir, rounds_done);
    free(dir);
    free(rr);
    return lost > 0 || failure[0] != '\0' ? 1 : 0;
}
