/* bench/e2e_notifications.c — end-to-end notifications per second: events committed to the
 * users outbox -> herald-relay -> RabbitMQ -> herald-notifications (inbox, template,
 * history, the log sender, notification_sent in its outbox), with durable settings, every
 * event counted. The services are the real binaries, started by this program.
 *
 *   1. raw limits    librabbitmq alone, on the same broker: N persistent messages of the
 *                    events' size published with confirms (window 1,000), then consumed
 *                    with prefetch 100 and one ack each. Raw consume is the denominator of
 *                    the ratio; raw publish is printed beside it.
 *   2. throughput    a users outbox (SQLite file, synchronous=FULL, hd_outbox_migrate) is
 *                    pre-filled with N users.user_registered v1 events, valid per the
 *                    contract, committed in batches (untimed). herald-notifications runs
 *                    (log sender, SQLite FULL) and answers /health; the clock starts when
 *                    herald-relay is started on the users outbox and stops at the last
 *                    notification recorded as sent with its notification_sent row in the
 *                    notifications outbox (times read from the service's database, so the
 *                    polling interval does not blur them). rate = N / that time.
 *   3. latency       both services keep running (relay poll 2 ms: SQLite has no cross-process
 *                    NOTIFY); one event is appended and committed on its own every 1/rate s
 *                    (absolute deadlines, clock_nanosleep) for --latency-seconds; latency of
 *                    an event = the notification's sent_at - the event's commit time
 *                    (recorded here, in memory). sent_at has a resolution of 1 ms.
 *   3b. the broker   after each latency run, the raw chain paced at the same rate for as long
 *       alone        (raw_chain.h, on queues of its own): publish -> stage 2 has it, per
 *                    event (µs). Its p99 is the broker's share of the target on this machine
 *                    at that moment; herald's p99 / it is printed beside.
 *   4. peak RSS      VmHWM of each service just before SIGTERM (and ru_maxrss from wait4);
 *                    each must exit 0.
 *
 * Zero lost: every event must have a sent notification in the notifications database
 * (matched by the notification's cause_id = the event id) with its notification_sent row in
 * the service's outbox, and the broker must have received every notification_sent (a sink
 * queue bound to the "notifications" exchange takes them). Duplicates, notifications of
 * unknown cause and the inbox rows are counted and reported. Exit 1 when an event was lost or
 * a phase failed (then the work directory is kept), 2 on bad usage, 0 otherwise (targets met
 * or missed).
 *
 * Where the time goes: over phases 2 and 3 the CPU time of each process (herald-relay,
 * herald-notifications, the broker, found by its listening port, and this program) is read
 * from /proc, giving the CPU per notification of each and the rate they would allow on this
 * machine's CPUs if nothing else ran; the machine's busy share and pressure stall information
 * (/proc/pressure) tell how much other work took; a short fsync probe at the start tells what
 * a commit costs on the disk at that moment. --no-service-relay (diagnosis) leaves the
 * notification_sent events in the service's outbox, to tell what publishing them costs.
 *
 * The users service itself is not on the measured path: its HTTP handling and argon2id
 * (tens of ms of CPU per registration, on purpose) would dominate. The path starts at the
 * users outbox, where the users service's transaction ends. docs/bench.md has the figures.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
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
#include "disk_probe.h"
#include "proc_stats.h"
#include "progress.h"
#include "raw_broker.h"
#include "raw_chain.h"
#include "results.h"
#include "stats.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/outbox.h"
#include "herald/store.h"
#include "herald/store_internal.h" /* hd_store_sqlite_turns: the producer's turns, for figures */
#include "herald/store_sqlite_turns.h"
#include "herald/topology.h"
#include "hd_proc.h"

#define PROG             "bench-e2e_notifications"
#define FILL_PER_TX      1000 /* outbox rows per transaction while pre-filling (untimed) */
#define STALL_MS         BENCH_STALL_MS /* no progress for this long: give up */
#define START_TIMEOUT_MS 30000          /* a service must answer /health within this */
#define STOP_TIMEOUT_MS  30000          /* a service must exit within this after SIGTERM */
#define POLL_MS          100            /* reading the notifications database */
#define TARGET_RATE      10000.0        /* notifications/s on 2 cores */
#define TARGET_P99_MS    25.0           /* at the offered load */
#define TARGET_CHAIN     0.80           /* end to end / raw chain */
#define MAX_LAT_RUNS     10             /* --latency-runs */
#define LAT_WINDOWS      60             /* a latency run's windows (lat_run.win_p99) */
#define MAX_TP_ROUNDS    9              /* --rounds */
#define EVENT_TYPE       "users.user_registered"
#define SENT_TYPE        "notifications.notification_sent"
#define NOTIF_EXCHANGE   "notifications" /* the service's relay: the type's topic */

/* ---- options ---------------------------------------------------------------------------- */

typedef struct config {
    bench_options o;        /* --amqp-url, --count (throughput: events), --quick, --raw-*,
                               --workdir, --keep, --out */
    double rate;            /* latency: offered events per second */
    double latency_seconds; /* latency: how long */
    int prefetch;           /* HD_PREFETCH of herald-notifications */
    size_t relay_batch;     /* HD_RELAY_BATCH of herald-relay */
    int relay_poll_ms;      /* HD_RELAY_POLL_MS of herald-relay */
    const char *bin_dir;
    const char *templates;
    int service_relay; /* HD_NOTIFICATIONS_RELAY: publish notification_sent in-process */
    int lat_set;       /* --latency-seconds given (--quick then keeps it) */
    int lat_runs;      /* latency phase: runs in a row (the target holds in every one) */
    int rounds;        /* throughput: rounds of (raw chain, end to end); the median ratio */
    int rounds_set;    /* --rounds given (--quick then keeps it) */
    size_t qt_count;   /* queue kinds phase: events per kind; 0 skips it */
    long cache_kib;    /* the services' SQLite URLs: cache_kib (0: SQLite's default) */
    int turns_off;     /* --sqlite-turns off: every SQLite URL of the run says turns=off */
    int direct;        /* --sqlite-coalesce off: every SQLite URL of the run says coalesce=off */
    int no_handoff;    /* --handoff off: HD_NOTIFICATIONS_RELAY_HANDOFF=false */
} config;

static void usage(FILE *f)
{
    fprintf(
        f, "usage: " PROG " [options]\n"
           "\n"
           "End-to-end notifications per second: users.user_registered events committed to a\n"
           "users outbox (SQLite, synchronous=FULL) -> herald-relay -> RabbitMQ ->\n"
           "herald-notifications (inbox, template, history, log sender, notification_sent in\n"
           "its outbox; SQLite FULL). Measures, in one run: the raw broker limits (confirmed\n"
           "publish, consume + ack; the raw chain of one notification's broker operations, with\n"
           "bare messages and with herald's CloudEvents properties: the target's denominator),\n"
           "the end-to-end rate over N events, latency percentiles at\n"
           "a fixed offered load (and after each run the broker alone at the same rate: the raw\n"
           "chain paced like the commits, its p99 the floor under the target), each service's\n"
           "peak RSS; every event is counted. Progress on stderr, a table on stdout. Exit 0\n"
           "(targets met or missed), 1 (an event was lost or a phase failed), 2 (bad usage).\n"
           "\n"
           "  --amqp-url URL         broker (default: $HD_AMQP_URL)\n"
           "  --count N              events of the throughput phase (default 20000)\n"
           "  --rate R               latency phase: events offered per second (default 1000)\n"
           "  --latency-seconds S    latency phase: duration of one run (default 10; 0 skips it)\n"
           "  --latency-runs N       latency phase: runs in a row, each with its p99 (default 3;\n"
           "                         the target must hold in every one)\n"
           "  --rounds N             throughput: rounds of the raw chain (herald's messages)\n"
           "                         then end to end, N events each; the verdict is the\n"
           "                         median of the rounds' ratios, each round against the\n"
           "                         mean of the raw chains before and after it (default 5;\n"
           "                         --quick 1)\n"
           "  --quick                a smoke run: --count 2000 --latency-seconds 3 --rounds 1\n"
           "  --prefetch N           herald-notifications HD_PREFETCH, its group-commit window\n"
           "                         (1..256, default 256)\n"
           "  --relay-batch N        herald-relay HD_RELAY_BATCH (default 500, its default)\n"
           "  --relay-poll-ms N      herald-relay HD_RELAY_POLL_MS (default 2)\n"
           "  --queue-kinds-count N  the raw chain on classic, classic v2 (x-queue-version 2) and\n"
           "                         quorum queues, N events each, for the broker's CPU per\n"
           "                         event (default: --count up to 5000; 0 skips it)\n"
           "  --sqlite-cache-kib N   the services' SQLite page cache per connection (their URLs'\n"
           "                         cache_kib; default: none in the URLs, each service's own:\n"
           "                         herald-relay SQLite's 2000 KiB, herald-notifications 1024\n"
           "                         for its consumer and 256 for the others)\n"
           "  --sqlite-turns on|off  the writers' turns on SQLite's lock (store_sqlite_turns.h;\n"
           "                         default on): off in every SQLite URL of the run, to compare\n"
           "  --sqlite-coalesce on|off  the WAL written in large writes (store_sqlite_vfs.h;\n"
           "                         default on): off in every SQLite URL of the run, to compare\n"
           "  --handoff on|off       herald-notifications' relay takes the rows handed to it\n"
           "                         or claims them (HD_NOTIFICATIONS_RELAY_HANDOFF; default\n"
           "                         on): off to compare\n"
           "  --no-service-relay     diagnosis: HD_NOTIFICATIONS_RELAY=false, notification_sent\n"
           "                         stays in the service's outbox (not published)\n"
           "  --raw-window N         raw publish: confirm window (default 1000)\n"
           "  --raw-prefetch N       raw consume: prefetch (default 100)\n"
           "  --bin-dir DIR          where herald-relay and herald-notifications are (default:\n"
           "                         the directory of this program)\n"
           "  --templates DIR        the e-mail templates (default: $HD_TEMPLATES_DIR, else the\n"
           "                         first templates/ found above --bin-dir or the current dir)\n"
           "  --workdir DIR          where the SQLite files and the logs go (default: a new\n"
           "                         directory in $TMPDIR or /tmp; must be on a disk, not tmpfs)\n"
           "  --keep                 keep the work directory (databases, service logs)\n"
           "  --out FILE             write the results as JSON (bench/plot.sh draws them)\n"
           "  --help                 this text\n");
}

static int parse_num(const char *s, const char *name, double lo, double hi, double *out)
{
    return bench_parse_num(PROG, s, name, lo, hi, out);
}

enum {
    O_RATE = 256,
    O_LAT,
    O_LAT_RUNS,
    O_PREFETCH,
    O_RBATCH,
    O_RPOLL,
    O_BIN,
    O_TEMPLATES,
    O_NO_SERVICE_RELAY,
    O_QT_COUNT,
    O_CACHE_KIB,
    O_TURNS,
    O_COALESCE,
    O_HANDOFF,
    O_ROUNDS
};

static int own_option(void *ctx, int opt, const char *arg)
{
    config *cfg = ctx;
    double v;
    switch (opt) {
    case O_RATE:
        return parse_num(arg, "--rate", 1, 100000, &cfg->rate);
    case O_LAT:
        cfg->lat_set = 1;
        return parse_num(arg, "--latency-seconds", 0, 3600, &cfg->latency_seconds);
    case O_LAT_RUNS:
        if (parse_num(arg, "--latency-runs", 1, MAX_LAT_RUNS, &v) < 0)
            return -1;
        cfg->lat_runs = (int)v;
        return 0;
    case O_ROUNDS:
        if (parse_num(arg, "--rounds", 1, MAX_TP_ROUNDS, &v) < 0)
            return -1;
        cfg->rounds = (int)v;
        cfg->rounds_set = 1;
        return 0;
    case O_PREFETCH:
        if (parse_num(arg, "--prefetch", 1, 256, &v) < 0)
            return -1;
        cfg->prefetch = (int)v;
        return 0;
    case O_RBATCH:
        if (parse_num(arg, "--relay-batch", 1, HD_OUTBOX_BATCH_MAX, &v) < 0)
            return -1;
        cfg->relay_batch = (size_t)v;
        return 0;
    case O_RPOLL:
        if (parse_num(arg, "--relay-poll-ms", 1, 3600000, &v) < 0)
            return -1;
        cfg->relay_poll_ms = (int)v;
        return 0;
    case O_BIN:
        cfg->bin_dir = arg;
        return 0;
    case O_TEMPLATES:
        cfg->templates = arg;
        return 0;
    case O_CACHE_KIB:
        if (parse_num(arg, "--sqlite-cache-kib", 1, 1000000, &v) < 0)
            return -1;
        cfg->cache_kib = (long)v;
        return 0;
    case O_TURNS: {
        int on = 1;
        if (bench_parse_on_off(PROG, arg, "--sqlite-turns", &on) < 0)
            return -1;
        cfg->turns_off = !on;
        return 0;
    }
    case O_COALESCE: {
        int on = 1;
        if (bench_parse_on_off(PROG, arg, "--sqlite-coalesce", &on) < 0)
            return -1;
        cfg->direct = !on;
        return 0;
    }
    case O_HANDOFF: {
        int on = 1;
        if (bench_parse_on_off(PROG, arg, "--handoff", &on) < 0)
            return -1;
        cfg->no_handoff = !on;
        return 0;
    }
    case O_QT_COUNT:
        if (parse_num(arg, "--queue-kinds-count", 0, 2000000, &v) < 0)
            return -1;
        cfg->qt_count = (size_t)v;
        return 0;
    case O_NO_SERVICE_RELAY:
        cfg->service_relay = 0;
        return 0;
    default:
        return -1;
    }
}

/* The options of this bench alone (the shared ones: bench/common/options.h). */
static const struct option e2e_options[] = {
    {"rate", required_argument, NULL, O_RATE},
    {"latency-seconds", required_argument, NULL, O_LAT},
    {"latency-runs", required_argument, NULL, O_LAT_RUNS},
    {"rounds", required_argument, NULL, O_ROUNDS},
    {"prefetch", required_argument, NULL, O_PREFETCH},
    {"relay-batch", required_argument, NULL, O_RBATCH},
    {"relay-poll-ms", required_argument, NULL, O_RPOLL},
    {"bin-dir", required_argument, NULL, O_BIN},
    {"templates", required_argument, NULL, O_TEMPLATES},
    {"no-service-relay", no_argument, NULL, O_NO_SERVICE_RELAY},
    {"queue-kinds-count", required_argument, NULL, O_QT_COUNT},
    {"sqlite-cache-kib", required_argument, NULL, O_CACHE_KIB},
    {"sqlite-turns", required_argument, NULL, O_TURNS},
    {"sqlite-coalesce", required_argument, NULL, O_COALESCE},
    {"handoff", required_argument, NULL, O_HANDOFF},
    {NULL, 0, NULL, 0},
};

static int parse_args(int argc, char **argv, config *cfg)
{
    *cfg = (config){.rate = 1000,
                    .latency_seconds = 10,
                    .lat_runs = 3,
                    .rounds = 5,
                    .qt_count = (size_t)-1,
                    .prefetch = 256,
                    .relay_batch = 500,
                    .relay_poll_ms = 2,
                    .service_relay = 1};
    bench_options_init(&cfg->o, PROG, 20000, 2000, 2000000);
    int rc = bench_options_parse(&cfg->o, argc, argv, e2e_options, own_option, cfg, usage);
    if (rc == 0 && cfg->o.quick && !cfg->lat_set)
        cfg->latency_seconds = 3;
    if (rc == 0 && cfg->o.quick && !cfg->rounds_set)
        cfg->rounds = 1;
    if (rc == 0 && cfg->qt_count == (size_t)-1)
        cfg->qt_count = cfg->o.count < 5000 ? cfg->o.count : 5000;
    return rc;
}

/* ---- small things ----------------------------------------------------------------------- */

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- CPU of every process of the pipeline over a phase ----------------------------------- */

enum { W_BENCH = 0, W_RELAY, W_NOTIF, W_BROKER, NWHO };
static const char *const who_names[NWHO] = {"bench", "herald-relay", "herald-notifications",
                                            "RabbitMQ"};
static const char *const who_keys[NWHO] = {"bench", "relay", "notifications", "broker"};

/* Slot W_BENCH is this process (BENCH_PROBE_SELF); the others are set when known. */
typedef bench_probe cpu_probe;

static void probe_begin(cpu_probe *c)
{
    c->pid[W_BENCH] = BENCH_PROBE_SELF;
    bench_probe_begin(c);
}

static void probe_end(cpu_probe *c)
{
    bench_probe_end(c);
}

static json_t *probe_json(const cpu_probe *c)
{
    return bench_probe_json(c, who_keys, NWHO);
}

/* "relay 45%, notifications 98%, RabbitMQ 60%, bench 3%; machine 100% of 2 CPUs" */
static void probe_print(const char *indent, const cpu_probe *c)
{
    printf("%sCPU (100%% = one core): ", indent);
    int first = 1;
    for (int i = W_RELAY; i <= NWHO; i++) {
        int k = i == NWHO ? W_BENCH : i;
        if (c->share[k] < 0)
            continue;
        printf("%s%s %.0f%%", first ? "" : ", ", who_names[k], 100.0 * c->share[k]);
        first = 0;
    }
    printf("; machine %.0f%% busy of %ld CPUs", 100.0 * c->machine, sysconf(_SC_NPROCESSORS_ONLN));
    if (c->psi[0] >= 0 && c->psi[1] >= 0)
        printf("; stalled on CPU %.0f%%, on I/O %.0f%% of the time", 100.0 * c->psi[0],
               100.0 * c->psi[1]);
    printf("\n");
}

/* ---- the broker ------------------------------------------------------------------------- */

typedef struct broker {
    hd_amqp *admin;
    int port;
    char version[64];
    char users_exchange[80]; /* the relay publishes here (HD_RELAY_EXCHANGE) */
    char queue[96];          /* herald-notifications' work queue (HD_NOTIFICATIONS_QUEUE) */
    char raw_exchange[80];
    char raw_queue[96];
    char sink[96]; /* bound to "notifications": receives every notification_sent */
    char chain_exchange[80], chain_in[96], chain_out[96]; /* the raw chain (raw_chain.h) */
} broker;

static int broker_setup(broker *b, const char *url, hd_error *err)
{
    hd_amqp_url u;
    if (hd_amqp_url_parse(url, &u, err) < 0)
        return err->code;
    b->port = u.port;
    int rc = bench_broker_open(url, &b->admin, b->version, sizeof b->version, err);
    if (rc < 0)
        return rc;
    long pid = (long)getpid();
    snprintf(b->users_exchange, sizeof b->users_exchange, "hdbench-%ld.users", pid);
    snprintf(b->queue, sizeof b->queue, "hdbench-%ld.users.notifications", pid);
    snprintf(b->raw_exchange, sizeof b->raw_exchange, "hdbench-%ld.raw", pid);
    snprintf(b->raw_queue, sizeof b->raw_queue, "hdbench-%ld.raw.q", pid);
    snprintf(b->sink, sizeof b->sink, "hdbench-%ld.notification_sent", pid);
    snprintf(b->chain_exchange, sizeof b->chain_exchange, "hdbench-%ld.chain", pid);
    snprintf(b->chain_in, sizeof b->chain_in, "hdbench-%ld.chain.events", pid);
    snprintf(b->chain_out, sizeof b->chain_out, "hdbench-%ld.chain.sent", pid);

    /* Every exchange as herald's relays declare them (durable topic): their own declares are
     * then the no-ops they are in production. The users exchange exists before the service
     * binds its queue to it; the sink makes the service's notification_sent routable (a
     * mandatory publish that no queue takes is returned and retried). */
    if ((rc = bench_broker_declare_exchange(b->admin, b->users_exchange, err)) < 0 ||
        (rc = bench_broker_declare_exchange(b->admin, NOTIF_EXCHANGE, err)) < 0 ||
        (rc = bench_broker_declare_exchange(b->admin, b->raw_exchange, err)) < 0 ||
        (rc = bench_broker_declare_queue(b->admin, b->raw_queue, b->raw_exchange, "#", err)) < 0 ||
        (rc = bench_broker_declare_queue(b->admin, b->sink, NOTIF_EXCHANGE, SENT_TYPE, err)) < 0 ||
        (rc = bench_broker_declare_exchange(b->admin, b->chain_exchange, err)) < 0 ||
        (rc = bench_broker_declare_queue(b->admin, b->chain_in, b->chain_exchange, "event", err)) <
            0 ||
        (rc = bench_broker_declare_queue(b->admin, b->chain_out, b->chain_exchange, "sent", err)) <
            0)
        return rc;
    return 0;
}

/* Ready messages in a queue, or -1. */
static long queue_depth(broker *b, const char *queue)
{
    hd_error err;
    return bench_queue_depth(b->admin, queue, &err);
}

/* Everything this run declared, except the shared "notifications" exchange. */
static void broker_teardown(broker *b)
{
    if (b->admin == NULL)
        return;
    if (hd_amqp_is_open(b->admin)) {
        char name[160];
        static const char *const tiers[] = {".retry.1000ms", ".retry.5000ms", ".retry.30000ms",
                                            ".dlq"};
        for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
            snprintf(name, sizeof name, "%s%s", b->queue, tiers[i]);
            hd_queue_delete(b->admin, name, NULL, NULL);
        }
        snprintf(name, sizeof name, "%s.retry", b->queue);
        hd_exchange_delete(b->admin, name, NULL);
        bench_broker_drop(b->admin, b->queue, NULL);
        bench_broker_drop(b->admin, b->raw_queue, b->raw_exchange);
        bench_broker_drop(b->admin, b->sink, b->users_exchange);
        bench_broker_drop(b->admin, b->chain_in, NULL);
        bench_broker_drop(b->admin, b->chain_out, b->chain_exchange);
    }
    bench_broker_close(b->admin);
    b->admin = NULL;
}

/* ---- phase 1: the raw limits ------------------------------------------------------------ */

/* One raw phase: its timing (bench_span) and the broker's CPU over it. */
typedef struct raw_result {
    bench_span s;
    cpu_probe cpu; /* the broker's CPU, and the machine's */
} raw_result;

static pid_t broker_pid; /* the broker's process, when found (its CPU is measured) */

static void raw_prepare(raw_result *res)
{
    res->s.probe = &res->cpu;
    res->cpu.pid[W_BENCH] = BENCH_PROBE_SELF;
    res->cpu.pid[W_BROKER] = broker_pid;
}

/* Raw confirmed publish of n persistent messages of len bytes, at most window unconfirmed. */
static int raw_publish(const config *cfg, broker *b, size_t n, size_t len, raw_result *res,
                       hd_error *err)
{
    raw_prepare(res);
    return bench_raw_publish(cfg->o.url, b->raw_exchange, "raw", n, len, cfg->o.raw_window,
                             BENCH_SHAPE_BARE, &res->s, err);
}

/* Raw consume of n messages, prefetch raw_prefetch, one basic.ack each. */
static int raw_consume(const config *cfg, broker *b, size_t n, raw_result *res, hd_error *err)
{
    raw_prepare(res);
    return bench_raw_consume(cfg->o.url, b->raw_queue, n, cfg->o.raw_prefetch, &res->s, err);
}

/* The raw chain: the broker operations of one notification, librabbitmq alone, no
 * database (bench/common/raw_chain.h): confirmed publish of the event, its consume + ack,
 * confirmed publish of a notification_sent, its consume + ack; three stages at once. With
 * shape BENCH_SHAPE_CLOUDEVENTS its messages carry the properties herald's relays put on
 * theirs (raw_broker.h), which the broker pays for: the like-for-like denominator. */
static int raw_chain(const config *cfg, broker *b, size_t n, size_t event_bytes, size_t sent_bytes,
                     bench_shape shape, raw_result *res, hd_error *err)
{
    raw_prepare(res);
    bench_chain_spec spec = {.url = cfg->o.url,
                             .exchange = b->chain_exchange,
                             .queue_in = b->chain_in,
                             .queue_out = b->chain_out,
                             .n = n,
                             .event_bytes = event_bytes,
                             .sent_bytes = sent_bytes,
                             .window = cfg->o.raw_window,
                             .prefetch = cfg->o.raw_prefetch,
                             .shape = shape,
                             .event_type = EVENT_TYPE,
                             .sent_type = SENT_TYPE};
    return bench_raw_chain(&spec, &res->s, err);
}

/* The queue kinds the broker's CPU per event is compared on (the example system declares
 * classic queues, version 1 on RabbitMQ 3.10). */
static const char *const qt_kinds[3] = {"classic", "classic-v2", "quorum"};

/* The raw chain on fresh queues of each kind, n events each, one after the other. */
static int queue_kinds(const config *cfg, broker *b, size_t event_bytes, size_t sent_bytes,
                       raw_result *out, hd_error *err)
{
    for (int k = 0; k < 3; k++) {
        /* An exchange of their own: on the raw chain's exchange, the raw chain's queues
         * (bound with the same keys) would take a copy of every message and keep it. */
        char ex[160], in[160], outq[160];
        snprintf(ex, sizeof ex, "%s.%s", b->chain_exchange, qt_kinds[k]);
        snprintf(in, sizeof in, "%s.%s.events", b->chain_exchange, qt_kinds[k]);
        snprintf(outq, sizeof outq, "%s.%s.sent", b->chain_exchange, qt_kinds[k]);
        int rc = bench_broker_declare_exchange(b->admin, ex, err);
        if (rc == 0)
            rc = bench_broker_declare_queue_kind(b->admin, in, ex, "event", qt_kinds[k], err);
        if (rc == 0)
            rc = bench_broker_declare_queue_kind(b->admin, outq, ex, "sent", qt_kinds[k], err);
        if (rc == 0) {
            fprintf(stderr, "queue kinds: the raw chain on %s queues\n", qt_kinds[k]);
            raw_prepare(&out[k]);
            bench_chain_spec spec = {.url = cfg->o.url,
                                     .exchange = ex,
                                     .queue_in = in,
                                     .queue_out = outq,
                                     .n = cfg->qt_count,
                                     .event_bytes = event_bytes,
                                     .sent_bytes = sent_bytes,
                                     .window = cfg->o.raw_window,
                                     .prefetch = cfg->o.raw_prefetch};
            rc = bench_raw_chain(&spec, &out[k].s, err);
        }
        bench_broker_drop(b->admin, in, NULL);
        bench_broker_drop(b->admin, outq, ex);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- the events ------------------------------------------------------------------------- */

/* One event of the run, and what became of it. Times are epoch ms (the services' clock)
 * except commit_us. */
typedef struct event {
    char id[HD_UUID_LEN + 1];
    int phase;             /* 0 throughput, 1 + k latency run k */
    int committed;         /* in the users outbox (an event never committed cannot be lost) */
    int64_t commit_us;     /* latency events: when its commit returned (epoch us) */
    int64_t dispatched_ms; /* users outbox: marked dispatched by the relay (after its confirm) */
    int64_t claimed_ms;    /* users outbox: first claimed by the relay (latency runs only) */
    int notifications;     /* rows whose cause_id is this event */
    int sent;              /* of those, status sent */
    int recorded;          /* notification_sent rows in the notifications outbox */
    int64_t created_ms;    /* the notification row: when the consumer's window took it */
    int64_t sent_ms;       /* when the mail was handed to the sender and returned */
    int64_t recorded_ms;   /* the notification_sent outbox row (transaction 2) */
} event;

typedef struct events {
    event *v;
    size_t n, cap;
    size_t *by_id; /* indexes of v sorted by id (after index_events) */
} events;

static const events *sort_ctx; /* qsort has no context argument */
static int cmp_by_id(const void *a, const void *b)
{
    const size_t *x = a, *y = b;
    return strcmp(sort_ctx->v[*x].id, sort_ctx->v[*y].id);
}

static int index_events(events *es)
{
    free(es->by_id);
    es->by_id = malloc((es->n ? es->n : 1) * sizeof *es->by_id);
    if (es->by_id == NULL)
        return -1;
    for (size_t i = 0; i < es->n; i++)
        es->by_id[i] = i;
    sort_ctx = es;
    qsort(es->by_id, es->n, sizeof *es->by_id, cmp_by_id);
    return 0;
}

static event *find_event(const events *es, const char *id)
{
    if (id == NULL)
        return NULL;
    size_t lo = 0, hi = es->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(es->v[es->by_id[mid]].id, id);
        if (c == 0)
            return &es->v[es->by_id[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A users.user_registered v1 event as the users service writes it (the contract:
 * tests/contract/events/users.user_registered/v1): user_id a UUID, email, name,
 * verification_link with a 64-hex token; correlation and causation ids set. */
static hd_envelope *make_event(size_t i)
{
    char user[HD_UUID_LEN + 1], cause[HD_UUID_LEN + 1], token[65], email[64], name[64], link[160],
        cid[64];
    hd_uuid_v7(user); /* as the users service makes its ids (hd_aggregate_init) */
    hd_uuid_v4(cause);
    static const char hex[] = "0123456789abcdef";
    for (int k = 0; k < 64; k++)
        token[k] = hex[(unsigned)rand() & 15u];
    token[64] = '\0';
    snprintf(email, sizeof email, "user%zu@example.com", i);
    snprintf(name, sizeof name, "Bench User %zu", i);
    snprintf(link, sizeof link, "https://app.example.com/verify-email?token=%s", token);
    snprintf(cid, sizeof cid, "bench-%ld-%zu", (long)getpid(), i);
    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", user, "email", email, "name", name,
                             "verification_link", link);
    hd_envelope *env = hd_envelope_new(EVENT_TYPE, 1, "herald-users", data);
    if (env == NULL)
        return NULL;
    if (hd_envelope_set_correlation_id(env, cid) < 0 ||
        hd_envelope_set_causation_id(env, cause) < 0) {
        hd_envelope_free(env);
        return NULL;
    }
    return env;
}

static event *add_event(events *es, const hd_envelope *env, int phase)
{
    if (es->n == es->cap) {
        size_t cap = es->cap ? es->cap * 2 : 1024;
        event *v = realloc(es->v, cap * sizeof *v);
        if (v == NULL)
            return NULL;
        es->v = v;
        es->cap = cap;
    }
    event *e = &es->v[es->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", hd_envelope_id(env));
    e->phase = phase;
    return e;
}

/* Append one event for its user, in the open transaction. */
static int append_event(hd_store *s, const hd_envelope *env, hd_error *err)
{
    const char *user = json_string_value(json_object_get(hd_envelope_data(env), "user_id"));
    return hd_outbox_append(s, env, "user", user, err);
}

/* The events from first on are committed (fill_outbox, or its caller after per_tx 0). */
static void mark_committed(events *es, size_t first)
{
    for (size_t k = first; k < es->n; k++)
        es->v[k].committed = 1;
}

/* n more events into the users outbox, FILL_PER_TX a transaction; with per_tx 0, all of them
 * in one transaction left open for the caller to commit (hd_store_commit, then
 * mark_committed): a running relay then finds the n rows at once, as a relay started after
 * the fill does. */
static int fill_outbox(hd_store *s, size_t n, size_t per_tx, events *es, hd_error *err)
{
    bench_progress pr;
    bench_progress_start(&pr, "users outbox fill (untimed)", n);
    size_t base = es->n, step = per_tx ? per_tx : n;
    for (size_t i = 0; i < n; i += step) {
        int rc = hd_store_begin(s, err);
        if (rc < 0)
            return rc;
        for (size_t k = i; k < i + step && k < n; k++) {
            hd_envelope *env = make_event(base + k);
            if (env == NULL || add_event(es, env, 0) == NULL) {
                hd_envelope_free(env);
                hd_store_rollback(s, NULL);
                return hd_error_set(err, HD_ENOMEM, "outbox fill");
            }
            rc = append_event(s, env, err);
            hd_envelope_free(env);
            if (rc < 0) {
                hd_store_rollback(s, NULL);
                return rc;
            }
        }
        if (per_tx == 0)
            return 0; /* the caller commits */
        if ((rc = hd_store_commit(s, err)) < 0)
            return rc;
        mark_committed(es, base + i);
        bench_progress_tick(&pr, i + step < n ? i + step : n, NULL);
    }
    return 0;
}

/* ---- the services (tests/support/hd_proc: start, readiness, stop, exit status, log) ------- */

/* A service of the pipeline: bench_service (bench/common/proc_stats.h) starts it and, at the
 * stop, samples its peak RSS and what the RSS was made of. */
typedef bench_service child;

/* NAME=value into buf; -1 when it does not fit (a setting is never cut short). */
static int setting(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- reading the databases (read-only, from outside the services) ------------------------ */

static sqlite3 *db_open_ro(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* A one-integer query; -1 on failure. */
static int64_t db_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Cheap progress counters (index lookups, no scan of the history): notifications inserted
 * (rowid: nothing is deleted here) minus those still pending, and notification_sent rows
 * appended (seq; it is the only type emitted here); events relayed from the users outbox. */
typedef struct counters {
    int64_t inserted, pending, recorded, relayed;
} counters;

static void read_counters(sqlite3 *notif, sqlite3 *users, size_t total_events, counters *c)
{
    c->inserted = db_int(notif, "SELECT MAX(rowid) FROM notifications");
    c->pending = db_int(notif, "SELECT COUNT(*) FROM notifications WHERE status = 'pending'");
    c->recorded = db_int(notif, "SELECT MAX(seq) FROM hd_outbox");
    int64_t left = db_int(users, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL"
                                 " AND parked_at IS NULL");
    c->relayed = left >= 0 ? (int64_t)total_events - left : -1;
}

static int64_t sent_count(const counters *c)
{
    return c->inserted >= 0 && c->pending >= 0 ? c->inserted - c->pending : 0;
}

/* What the databases say about every event: notifications (by cause_id), notification_sent
 * rows (joined on the notification id), the relay's dispatch time; and the totals. */
typedef struct tally {
    int64_t notifications, sent, not_sent, recorded, unknown, inbox_rows, failed_rows;
    size_t matched;     /* events with at least one sent notification */
    size_t duplicates;  /* notifications beyond the first for an event */
    size_t undelivered; /* events without a sent notification, or without notification_sent */
    size_t lost;        /* undelivered once every phase completed (a failed run loses nothing:
                           what it did not deliver is still in an outbox or a queue) */
    int64_t users_pending;
} tally;

static int collect(events *es, sqlite3 *notif, sqlite3 *users, int claims, tally *t, hd_error *err)
{
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < es->n; i++) {
        event *e = &es->v[i];
        e->notifications = e->sent = e->recorded = 0;
        e->created_ms = e->sent_ms = e->recorded_ms = e->dispatched_ms = e->claimed_ms = 0;
    }
    sqlite3_stmt *st = NULL;
    /* The notification_sent rows carry the notification's id as their aggregate id. */
    const char *sql = "SELECT n.cause_id, n.status, n.created_at, n.sent_at, o.created_at"
                      " FROM notifications n LEFT JOIN hd_outbox o"
                      " ON o.aggregate_id = n.id AND o.type = '" SENT_TYPE "'";
    if (sqlite3_prepare_v2(notif, sql, -1, &st, NULL) != SQLITE_OK)
        return hd_error_set(err, HD_ESTORE, "notifications database: %s", sqlite3_errmsg(notif));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        t->notifications++;
        const char *cause = (const char *)sqlite3_column_text(st, 0);
        const char *status = (const char *)sqlite3_column_text(st, 1);
        int sent = status != NULL && strcmp(status, "sent") == 0;
        int has_record = sqlite3_column_type(st, 4) != SQLITE_NULL;
        t->sent += sent;
        t->not_sent += !sent;
        t->failed_rows += status != NULL && strcmp(status, "failed") == 0;
        t->recorded += has_record;
        event *e = find_event(es, cause);
        if (e == NULL) {
            t->unknown++;
            continue;
        }
        e->notifications++;
        if (sent && e->sent++ == 0) {
            e->created_ms = sqlite3_column_int64(st, 2);
            e->sent_ms = sqlite3_column_int64(st, 3);
        }
        if (has_record && e->recorded++ == 0)
            e->recorded_ms = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return hd_error_set(err, HD_ESTORE, "notifications database: %s", sqlite3_errmsg(notif));
    t->inbox_rows = db_int(notif, "SELECT COUNT(*) FROM hd_inbox");

    const char *usql = claims ? "SELECT o.event_id, o.dispatched_at, c.at_ms FROM hd_outbox o"
                                " LEFT JOIN bench_claims c ON c.seq = o.seq"
                              : "SELECT event_id, dispatched_at, NULL FROM hd_outbox";
    if (sqlite3_prepare_v2(users, usql, -1, &st, NULL) != SQLITE_OK)
        return hd_error_set(err, HD_ESTORE, "users database: %s", sqlite3_errmsg(users));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        event *e = find_event(es, (const char *)sqlite3_column_text(st, 0));
        if (e != NULL && sqlite3_column_type(st, 2) != SQLITE_NULL)
            e->claimed_ms = sqlite3_column_int64(st, 2);
        if (e != NULL && sqlite3_column_type(st, 1) != SQLITE_NULL)
            e->dispatched_ms = sqlite3_column_int64(st, 1);
        else if (e != NULL)
            t->users_pending++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return hd_error_set(err, HD_ESTORE, "users database: %s", sqlite3_errmsg(users));

    for (size_t i = 0; i < es->n; i++) {
        const event *e = &es->v[i];
        if (e->sent > 0)
            t->matched++;
        if (e->notifications > 1)
            t->duplicates += (size_t)e->notifications - 1;
        if (e->committed && (e->sent == 0 || e->recorded == 0))
            t->undelivered++;
    }
    return 0;
}

/* ---- phase 2: throughput ---------------------------------------------------------------- */

typedef bench_dist dist; /* nearest-rank percentiles (bench/common/stats.h) */

/* The latency of a latency run's events, in ms, and its legs:
 *   total     commit -> mail sent (sent_at)            the figure with the target
 *   recorded  commit -> notification_sent row (transaction 2)
 *   received  commit -> the consumer's window took it (the notification's created_at)
 *   handled   received -> sent: transaction 1 (inbox, row; one fsync), ack, render, send
 *   relayed   commit -> the relay marked it dispatched (after the broker's confirm)
 * and the path cut into consecutive legs that add up to the total (a miss names its leg):
 *   wakeup    commit -> the relay's claim took it (poll interval, the write lock)
 *   deliver   claim -> the consumer took it (publish, routing, delivery, the prefetch window)
 *   handled   (above: consume and send)
 *   record    mail sent -> notification_sent row (transaction 2)
 * and off the mail's path, since the consumer does not wait for it:
 *   confirm   claim -> marked dispatched (publish, the broker's confirm, the mark)
 * The claim time comes from a trigger the bench adds to the users outbox for the latency runs
 * (bench_claims); service times have a 1 ms resolution (epoch ms, truncated); the commit is
 * in us. */
enum {
    L_TOTAL = 0,
    L_RECORDED,
    L_RECEIVED,
    L_HANDLED,
    L_RELAYED,
    L_WAKE,
    L_DELIVER,
    L_RECORD,
    L_CONFIRM,
    NLAT
};
static const char *const lat_keys[NLAT] = {"sent",    "recorded",     "received",
                                           "handled", "relay_marked", "wakeup",
                                           "deliver", "record",       "confirm"};
static const char *const lat_labels[NLAT] = {"commit -> mail sent (sent_at)",
                                             "commit -> notification_sent row",
                                             "commit -> consumer took it (created_at)",
                                             "leg 3, consume + send: took it -> mail sent",
                                             "commit -> relay marked it dispatched",
                                             "leg 1, relay wake-up: commit -> claimed",
                                             "leg 2, publish + deliver: claimed -> took it",
                                             "leg 4, record: mail sent -> notification_sent",
                                             "(off path) publish -> confirm + mark"};
/* The consecutive legs, in path order (their means over the tail name a miss's cause). */
static const int path_legs[] = {L_WAKE, L_DELIVER, L_HANDLED, L_RECORD};
#define NPATH ((int)(sizeof path_legs / sizeof path_legs[0]))

/* One latency run. */
typedef struct lat_run {
    int ran;
    size_t events;
    double offered, achieved, max_lag_ms;
    size_t late; /* commits that started more than 1 ms after their deadline */
    cpu_probe cpu;
    double commit_ms_max, commit_ms_mean;
    /* The producer's turns on the users database (store_sqlite_turns.h): how often and how
     * long its transactions stood aside for a writer that had waited (the relay). */
    uint64_t aside_n;
    double aside_ms;
    dist d[NLAT];
    double tail_leg_ms[NPATH]; /* mean of each leg over the events at or above the p99 */
    size_t tail_n;
    /* The run cut into windows of win_s seconds of commits (1 s up to LAT_WINDOWS s): each
     * window's p99, and how many of the tail's events each holds. A tail in one or two
     * windows is a stall (the machine, a checkpoint, the broker); spread over all of them it
     * is the path's own spread. */
    int windows;
    double win_s;
    double win_p99[LAT_WINDOWS];
    size_t win_tail[LAT_WINDOWS];
    int cause; /* index in path_legs of the largest leg in the tail; -1 unknown */
    /* The broker alone at the same rate, right after the run: the raw chain paced like the
     * commits, publish -> stage 2 has it (raw_chain.h): the floor under leg 2. */
    int raw_ran;
    dist raw;
} lat_run;

typedef struct run {
    const config *cfg;
    broker *b;
    char dir[4096];
    char users_db[4200], notif_db[4200];
    char relay_exe[4200], notif_exe[4200];
    char templates[4200];
    child relay, notif;
    sqlite3 *ro_notif, *ro_users;
    hd_store *users; /* the bench's writer on the users outbox */
    events es;
    size_t event_bytes;
    pid_t broker_pid;

    /* results */
    raw_result raw_pub, raw_con, raw_chain;
    raw_result raw_chain_ce; /* the raw chain with herald's message shape: the denominator */
    raw_result qt[3];        /* the raw chain per queue kind (qt_kinds) */
    size_t sent_bytes;       /* a notification_sent envelope, for the raw chain */
    int tp_ran;
    int64_t tp_t0_us, tp_end_ms;
    /* The figures of a throughput round: the last one run, then the median round's. */
    struct tp_figures {
        double seconds, rate, seconds_polled;
        double first_sent_s; /* relay start -> first notification sent */
        cpu_probe cpu;
        double tail_s; /* end -> every notification_sent published to the broker */
    } tp;
    /* The rounds of the throughput phase (--rounds): each round's tp and raw_chain_ce; once
     * every round ran, tp and raw_chain_ce hold the median round's (the round whose ratio is
     * the median), and every figure printed for the throughput phase is that round's. */
    struct tp_round {
        raw_result ce;   /* the raw chain just before the round */
        double ce_after; /* the rate of the raw chain just after it (the next round's, or the
                            closing one); 0: none ran */
        struct tp_figures f;
    } rounds[MAX_TP_ROUNDS];
    raw_result raw_chain_closing; /* the raw chain after the last round */
    double chain_rate;            /* the median round's denominator: its bracketing mean */
    int rounds_ran;
    int median_round;

    int lat_ran; /* latency runs completed */
    lat_run lat[MAX_LAT_RUNS];
    int claims_traced; /* the bench_claims trigger is in the users database */

    tally t;
    long sink_depth;  /* notification_sent that reached the broker: consumed + still queued */
    bench_sink *sink; /* drains the sink queue from the throughput phase on (raw_broker.h) */
    double fsync_p50_ms, fsync_max_ms; /* -1: not measured */
    double loadavg[3];                 /* when the run started */
} run;

static long url_cache_kib; /* --sqlite-cache-kib, for the services' URLs (0: none) */
static int url_turns_off;  /* --sqlite-turns off */
static int url_direct;     /* --sqlite-coalesce off */

static const char *sqlite_url(char *buf, size_t cap, const char *path)
{
    const char *turns = url_turns_off ? "&turns=off" : "";
    const char *direct = url_direct ? "&coalesce=off" : "";
    if (url_cache_kib > 0)
        snprintf(buf, cap, "sqlite://%s?synchronous=full&cache_kib=%ld%s%s", path, url_cache_kib,
                 turns, direct);
    else
        snprintf(buf, cap, "sqlite://%s?synchronous=full%s%s", path, turns, direct);
    return buf;
}

static int start_notifications(run *r, hd_error *err)
{
    const config *cfg = r->cfg;
    char db[4300], url[4400], amqp[4400], prefetch[32], exchange[300], queue[300], relay[64],
        tpl[4400], log[4200], token[64 + 2 * HD_UUID_LEN];
    snprintf(log, sizeof log, "%s/notifications.log", r->dir);
    /* Its API answers only to a bearer token (the bench uses /health and /metrics alone,
     * which stay open): a random one, as the service refuses to start without. */
    char uuid[2][HD_UUID_LEN + 1];
    hd_uuid_v4(uuid[0]);
    hd_uuid_v4(uuid[1]);
    if (setting(token, sizeof token, "HD_NOTIFICATIONS_API_TOKEN=%s%s", uuid[0], uuid[1]) < 0 ||
        setting(url, sizeof url, "HD_DATABASE_URL=%s", sqlite_url(db, sizeof db, r->notif_db)) <
            0 ||
        setting(amqp, sizeof amqp, "HD_AMQP_URL=%s", cfg->o.url) < 0 ||
        setting(prefetch, sizeof prefetch, "HD_PREFETCH=%d", cfg->prefetch) < 0 ||
        setting(exchange, sizeof exchange, "HD_USERS_EXCHANGE=%s", r->b->users_exchange) < 0 ||
        setting(queue, sizeof queue, "HD_NOTIFICATIONS_QUEUE=%s", r->b->queue) < 0 ||
        setting(relay, sizeof relay, "HD_NOTIFICATIONS_RELAY=%s",
                cfg->service_relay ? "true" : "false") < 0 ||
        setting(tpl, sizeof tpl, "HD_TEMPLATES_DIR=%s", r->templates) < 0)
        return hd_error_set(err, HD_EINVAL, "herald-notifications: a setting is too long");
    const char *env[] = {token,
                         url,
                         amqp,
                         "HD_SENDER=log",
                         prefetch,
                         "HD_NOTIFICATIONS_LISTEN=127.0.0.1:0",
                         exchange,
                         queue,
                         relay,
                         tpl,
                         "HD_LOG_LEVEL=info",
                         cfg->no_handoff ? "HD_NOTIFICATIONS_RELAY_HANDOFF=false" : NULL,
                         NULL};
    int rc =
        bench_service_start(&r->notif, "herald-notifications", r->notif_exe, env, r->dir, log, err);
    if (rc < 0)
        return rc;
    /* Up when its log says where it listens and /health answers 200 (the consumer is
     * open: its queue is declared and bound). */
    int64_t t0 = hd_clock_ms();
    if ((rc = hd_proc_wait_health(r->notif.proc, START_TIMEOUT_MS, err)) < 0)
        return rc;
    fprintf(stderr, "herald-notifications: pid %ld, healthy on port %d after %.2f s\n",
            (long)hd_proc_pid(r->notif.proc), hd_proc_port(r->notif.proc),
            (double)(hd_clock_ms() - t0) / 1e3);
    return 0;
}

static int start_relay(run *r, hd_error *err)
{
    const config *cfg = r->cfg;
    char db[4300], url[4400], amqp[4400], exchange[300], batch[64], poll[64], log[4200];
    snprintf(log, sizeof log, "%s/relay.log", r->dir);
    if (setting(url, sizeof url, "HD_DATABASE_URL=%s", sqlite_url(db, sizeof db, r->users_db)) <
            0 ||
        setting(amqp, sizeof amqp, "HD_AMQP_URL=%s", cfg->o.url) < 0 ||
        setting(exchange, sizeof exchange, "HD_RELAY_EXCHANGE=%s", r->b->users_exchange) < 0 ||
        setting(batch, sizeof batch, "HD_RELAY_BATCH=%zu", cfg->relay_batch) < 0 ||
        setting(poll, sizeof poll, "HD_RELAY_POLL_MS=%d", cfg->relay_poll_ms) < 0)
        return hd_error_set(err, HD_EINVAL, "herald-relay: a setting is too long");
    const char *env[] = {
        url, amqp, exchange, batch, poll, "HD_RELAY_ID=bench-relay", "HD_LOG_LEVEL=info", NULL};
    return bench_service_start(&r->relay, "herald-relay", r->relay_exe, env, r->dir, log, err);
}

static int both_alive(run *r, hd_error *err)
{
    const child *cs[2] = {&r->relay, &r->notif};
    for (int i = 0; i < 2; i++) {
        char why[64];
        if (!hd_proc_running(cs[i]->proc))
            return hd_error_set(err, HD_ESTATE, "%s stopped (%s); see %s", cs[i]->name,
                                hd_proc_exit_text(cs[i]->proc, why, sizeof why),
                                hd_proc_log_path(cs[i]->proc));
    }
    return 0;
}

/* Poll the databases until `want` notifications are sent and recorded (or a stall). */
static int wait_for(run *r, int64_t want, bench_progress *pr, size_t base, hd_error *err)
{
    int64_t last_change = hd_clock_ms();
    counters c, prev = {-1, -1, -1, -1};
    for (;;) {
        int rc = both_alive(r, err);
        if (rc < 0)
            return rc;
        read_counters(r->ro_notif, r->ro_users, r->es.n, &c);
        int64_t sent = sent_count(&c);
        if (c.inserted != prev.inserted || c.pending != prev.pending ||
            c.recorded != prev.recorded || c.relayed != prev.relayed)
            last_change = hd_clock_ms();
        prev = c;
        if (pr != NULL) {
            char extra[160];
            snprintf(extra, sizeof extra, "relayed %lld, notification_sent %lld",
                     (long long)c.relayed - (long long)base,
                     (long long)c.recorded - (long long)base);
            bench_progress_tick(pr, sent > (int64_t)base ? (size_t)(sent - (int64_t)base) : 0,
                                extra);
        }
        if (sent >= want && c.recorded >= want)
            return 0;
        if (hd_clock_ms() - last_change > STALL_MS)
            return hd_error_set(err, HD_ETIMEOUT,
                                "no progress for %d s: %lld of %lld notifications sent, %lld "
                                "notification_sent rows, %lld events relayed",
                                STALL_MS / 1000, (long long)sent, (long long)want,
                                (long long)c.recorded, (long long)c.relayed);
        hd_sleep_ms(POLL_MS);
    }
}

/* Until want notification_sent messages reached the sink (the service's relay): consumed by
 * the bench's sink consumer, or still in the queue. */
static int wait_sink(run *r, size_t want, hd_error *err)
{
    if (!r->cfg->service_relay)
        return 0; /* nothing is published */
    int64_t w0 = hd_clock_ms();
    for (;;) {
        long d = queue_depth(r->b, r->b->sink);
        if (d >= 0)
            d += (long)bench_sink_count(r->sink);
        if (d >= (long)want)
            return 0;
        if (hd_clock_ms() - w0 > STALL_MS)
            return hd_error_set(err, HD_ETIMEOUT,
                                "only %ld of %zu notification_sent reached the broker after %d s",
                                d, want, STALL_MS / 1000);
        int rc = both_alive(r, err);
        if (rc < 0)
            return rc;
        hd_sleep_ms(20);
    }
}

static int throughput_measure(run *r, int k, int64_t t0, hd_error *err);

/* A round's denominator: the mean of the raw chains just before and just after it, which
 * cancels a drift of the broker that is linear over the round (measured: the raw chain falls
 * about 3.6 % a round over a run while end to end stays flat, docs/bench.md, fourteenth
 * pass); the raw chain before it alone when none ran after. 0 when none ran. */
static double round_chain(const struct tp_round *t)
{
    if (!t->ce.s.ran || t->ce.s.rate <= 0)
        return 0.0;
    return t->ce_after > 0 ? (t->ce.s.rate + t->ce_after) / 2 : t->ce.s.rate;
}

/* A round's end to end / raw chain of herald's messages (bracketed: round_chain); 0 when the
 * raw chain did not run. */
static double round_ratio(const struct tp_round *t)
{
    double c = round_chain(t);
    return c > 0 ? t->f.rate / c : 0.0;
}

/* The same against the raw chain before the round alone (the estimator until the fourteenth
 * pass, printed beside it). */
static double round_ratio_before(const struct tp_round *t)
{
    return t->ce.s.ran && t->ce.s.rate > 0 ? t->f.rate / t->ce.s.rate : 0.0;
}

/* The round's CPU probe starts: the service's and the broker's CPU (and the relay's, when it
 * runs already) from now on. */
static void tp_probe_begin(run *r)
{
    r->tp.cpu.pid[W_RELAY] = r->relay.proc ? hd_proc_pid(r->relay.proc) : 0;
    r->tp.cpu.pid[W_NOTIF] = hd_proc_pid(r->notif.proc);
    r->tp.cpu.pid[W_BROKER] = r->broker_pid;
    probe_begin(&r->tp.cpu);
}

/* Round k of the throughput phase. Round 0 starts the relay on the outbox main() filled;
 * a later round measures the raw chain again (the services idle), then commits n more events
 * in one transaction under the running relay. Either way the clock starts when the relay
 * can see the n rows, and stops at the last notification_sent row. */
static int throughput_phase(run *r, int k, hd_error *err)
{
    size_t n = r->cfg->o.count;
    /* The notifications database exists once the service answered /health. */
    if (k == 0 && ((r->ro_notif = db_open_ro(r->notif_db)) == NULL ||
                   (r->ro_users = db_open_ro(r->users_db)) == NULL))
        return hd_error_set(err, HD_ESTORE, "cannot open the databases read-only");
    if (k > 0) {
        int rc0 = raw_chain(r->cfg, r->b, n, r->event_bytes, r->sent_bytes, BENCH_SHAPE_CLOUDEVENTS,
                            &r->raw_chain_ce, err);
        if (rc0 < 0)
            return rc0;
        size_t first = r->es.n;
        if ((rc0 = fill_outbox(r->users, n, 0, &r->es, err)) < 0)
            return rc0;
        tp_probe_begin(r);
        if ((rc0 = hd_store_commit(r->users, err)) < 0)
            return rc0;
        mark_committed(&r->es, first);
        return throughput_measure(r, k, hd_clock_ns(), err);
    }

    /* The sink is drained as the raw chain drains its second queue (prefetch and one ack each
     * as its stage 3): a queue left to grow by tens of thousands of persistent messages costs
     * the broker about 40 % more per event than a drained one (bench/broker/README.md), which
     * would be charged to herald. */
    if (r->cfg->service_relay) {
        int rc0 =
            bench_sink_start(r->cfg->o.url, r->b->sink, r->cfg->o.raw_prefetch, &r->sink, err);
        if (rc0 < 0)
            return rc0;
    }
    tp_probe_begin(r);
    int64_t t0 = hd_clock_ns();
    int rc = start_relay(r, err);
    if (rc < 0)
        return rc;
    r->tp.cpu.pid[W_RELAY] = hd_proc_pid(r->relay.proc);
    r->tp.cpu.t0[W_RELAY] = 0; /* it starts now: all its CPU is the phase's */
    fprintf(stderr, "herald-relay: pid %ld started (batch %zu, poll %d ms)\n",
            (long)hd_proc_pid(r->relay.proc), r->cfg->relay_batch, r->cfg->relay_poll_ms);
    return throughput_measure(r, 0, t0, err);
}

/* The rest of round k, from t0 (hd_clock_ns) on: until its n notifications are sent and
 * recorded and their notification_sent reached the broker; its figures into r->tp_* and
 * r->rounds[k]. */
static int throughput_measure(run *r, int k, int64_t t0, hd_error *err)
{
    size_t n = r->cfg->o.count, done = n * (size_t)k;
    r->tp_t0_us = wall_us() - (hd_clock_ns() - t0) / 1000;
    char what[64];
    snprintf(what, sizeof what, "e2e notifications sent, round %d of %d", k + 1, r->cfg->rounds);
    bench_progress pr;
    bench_progress_start(&pr, what, n);
    int rc = wait_for(r, (int64_t)(done + n), &pr, done, err);
    if (rc < 0)
        return rc;
    probe_end(&r->tp.cpu);
    r->tp.seconds_polled = (double)(hd_clock_ns() - t0) / 1e9;

    /* The exact end, from the service's own clock: the last notification sent and the last
     * notification_sent row (both epoch ms; the start is this process's wall clock). */
    int64_t last_sent = db_int(r->ro_notif, "SELECT MAX(sent_at) FROM notifications");
    int64_t last_rec = db_int(r->ro_notif, "SELECT MAX(created_at) FROM hd_outbox");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT MIN(sent_at) FROM notifications WHERE sent_at >= %lld",
             (long long)(r->tp_t0_us / 1000));
    int64_t first_sent = db_int(r->ro_notif, sql);
    r->tp_end_ms = last_sent > last_rec ? last_sent : last_rec;
    r->tp.seconds = (double)(r->tp_end_ms * 1000 - r->tp_t0_us) / 1e6;
    if (r->tp.seconds <= 0) /* clocks disagree?: fall back on the polled time */
        r->tp.seconds = r->tp.seconds_polled;
    r->tp.rate = (double)n / r->tp.seconds;
    r->tp.first_sent_s = (double)(first_sent * 1000 - r->tp_t0_us) / 1e6;
    r->tp_ran = 1;
    char a[32], b2[32];
    fprintf(stderr,
            "e2e notifications sent: %zu in %.2f s (to the last notification_sent row), %s/s "
            "(polled: %.2f s)\n",
            n, r->tp.seconds, bench_thousands(a, sizeof a, r->tp.rate), r->tp.seconds_polled);

    /* Let the service's own relay publish every notification_sent before the next phase
     * (it is part of the pipeline, and must not overlap the next round or the latency
     * measurement). */
    if ((rc = wait_sink(r, done + n, err)) < 0)
        return rc;
    r->tp.tail_s = (double)(wall_us() / 1000 - r->tp_end_ms) / 1e3;
    struct tp_round *t = &r->rounds[k];
    t->ce = r->raw_chain_ce;
    t->ce_after = 0;
    t->f = r->tp;
    r->rounds_ran = k + 1;
    if (round_ratio(t) > 0)
        fprintf(stderr,
                "round %d of %d: end to end %s/s / raw chain before it (herald's messages) %s/s "
                "= %.1f %% (the raw chain after it comes next)\n",
                k + 1, r->cfg->rounds, bench_thousands(a, sizeof a, t->f.rate),
                bench_thousands(b2, sizeof b2, t->ce.s.rate), 100.0 * round_ratio_before(t));
    return 0;
}

/* The raw chain after the last round (the services idle, as before rounds 2 and on), then
 * each round's bracketing: the raw chain after round k is the one before round k + 1. */
static int close_rounds(run *r, hd_error *err)
{
    if (r->rounds_ran == 0)
        return 0;
    int rc = raw_chain(r->cfg, r->b, r->cfg->o.count, r->event_bytes, r->sent_bytes,
                       BENCH_SHAPE_CLOUDEVENTS, &r->raw_chain_closing, err);
    if (rc < 0)
        return rc;
    for (int k = 0; k < r->rounds_ran; k++) {
        struct tp_round *t = &r->rounds[k];
        t->ce_after =
            k + 1 < r->rounds_ran ? r->rounds[k + 1].ce.s.rate : r->raw_chain_closing.s.rate;
        char a[32], b2[32], c[32];
        if (round_ratio(t) > 0)
            fprintf(stderr,
                    "round %d: end to end %s/s / mean of the raw chains before and after it "
                    "(%s, %s/s) = %.1f %%\n",
                    k + 1, bench_thousands(a, sizeof a, t->f.rate),
                    bench_thousands(b2, sizeof b2, t->ce.s.rate),
                    bench_thousands(c, sizeof c, t->ce_after), 100.0 * round_ratio(t));
    }
    return 0;
}

/* The median round: the one whose ratio end to end / raw chain is the median (the lower of
 * the two middle ones for an even count); its figures become the phase's (run.rounds). */
static void pick_median_round(run *r)
{
    int n = r->rounds_ran, m = 0;
    if (n == 0)
        return;
    double q[MAX_TP_ROUNDS], sorted[MAX_TP_ROUNDS];
    for (int i = 0; i < n; i++)
        sorted[i] = q[i] = round_ratio(&r->rounds[i]);
    bench_median(sorted, (size_t)n); /* sorts them */
    while (m < n - 1 && q[m] != sorted[(n - 1) / 2])
        m++;
    const struct tp_round *t = &r->rounds[m];
    r->median_round = m;
    r->raw_chain_ce = t->ce;
    r->chain_rate = round_chain(t);
    r->tp = t->f;
}

/* ---- phase 3: latency at a fixed offered load --------------------------------------------- */

/* The claim time of each latency event: a trigger on the users outbox records when a row is
 * first leased (the claim's own statement time), so that the relay's wake-up and its
 * publish can be told apart. Added after the throughput phase (its insert per claimed row
 * is not measured there); the relay re-prepares its claim on the schema change. */
static int trace_claims(run *r, hd_error *err)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(r->users_db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return hd_error_set(err, HD_ESTORE, "users database: cannot open it to trace claims");
    }
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    int rc = sqlite3_exec(
        db,
        "CREATE TABLE IF NOT EXISTS bench_claims (seq INTEGER PRIMARY KEY, at_ms INTEGER NOT "
        "NULL);"
        "CREATE TRIGGER IF NOT EXISTS bench_claim AFTER UPDATE OF claimed_until ON hd_outbox"
        " WHEN NEW.claimed_until > 0 BEGIN"
        " INSERT OR IGNORE INTO bench_claims VALUES (NEW.seq,"
        " CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)); END;",
        NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        hd_error_set(err, HD_ESTORE, "users database: claim trigger: %s", msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    if (rc != SQLITE_OK)
        return err->code;
    r->claims_traced = 1;
    return 0;
}

/* Latency run k (0-based): one event committed on its own every 1/rate s. */
static int latency_phase(run *r, int k, hd_error *err)
{
    const config *cfg = r->cfg;
    lat_run *lr = &r->lat[k];
    size_t m = (size_t)(cfg->rate * cfg->latency_seconds + 0.5);
    if (m == 0)
        return 0;
    size_t base = r->es.n;
    /* Every envelope made beforehand: the loop only appends and commits. */
    hd_envelope **envs = calloc(m, sizeof *envs);
    if (envs == NULL)
        return hd_error_set(err, HD_ENOMEM, "latency");
    int rc = 0;
    for (size_t i = 0; i < m; i++)
        if ((envs[i] = make_event(base + i)) == NULL || add_event(&r->es, envs[i], 1 + k) == NULL) {
            rc = hd_error_set(err, HD_ENOMEM, "latency");
            goto out;
        }

    hd_sleep_ms(1000); /* settle after the throughput phase */
    fprintf(stderr, "latency run %d/%d: %zu events, one commit every %.3f ms (%.0f/s) for %.1f s\n",
            k + 1, cfg->lat_runs, m, 1000.0 / cfg->rate, cfg->rate, cfg->latency_seconds);
    lr->cpu.pid[W_RELAY] = hd_proc_pid(r->relay.proc);
    lr->cpu.pid[W_NOTIF] = hd_proc_pid(r->notif.proc);
    lr->cpu.pid[W_BROKER] = r->broker_pid;
    probe_begin(&lr->cpu);
    int64_t period = (int64_t)(1e9 / cfg->rate);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int64_t start_ns = (int64_t)start.tv_sec * 1000000000LL + start.tv_nsec + 10000000; /* +10 ms */
    int64_t last_report = start_ns;
    double commit_sum = 0;
    hd_turns *turns = hd_store_sqlite_turns(r->users);
    uint64_t aside_n0 = hd_turns_yields(turns);
    int64_t aside_ns0 = hd_turns_aside_ns(turns);
    for (size_t i = 0; i < m; i++) {
        int64_t deadline = start_ns + (int64_t)i * period;
        struct timespec ts = {.tv_sec = deadline / 1000000000LL,
                              .tv_nsec = deadline % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        int64_t began = hd_clock_ns();
        double lag = (double)(began - deadline) / 1e6;
        if (lag > 1.0)
            lr->late++;
        if (lag > lr->max_lag_ms)
            lr->max_lag_ms = lag;
        event *e = &r->es.v[base + i];
        if ((rc = hd_store_begin(r->users, err)) < 0 ||
            (rc = append_event(r->users, envs[i], err)) < 0 ||
            (rc = hd_store_commit(r->users, err)) < 0) {
            if (hd_store_in_transaction(r->users))
                hd_store_rollback(r->users, NULL);
            goto out;
        }
        e->commit_us = wall_us();
        e->committed = 1;
        double cms = (double)(hd_clock_ns() - began) / 1e6;
        commit_sum += cms;
        if (cms > lr->commit_ms_max)
            lr->commit_ms_max = cms;
        if (began - last_report >= 1000000000LL) {
            last_report = began;
            fprintf(stderr, "latency: %zu/%zu committed (%zu%%), %zu late by more than 1 ms\n",
                    i + 1, m, (i + 1) * 100 / m, lr->late);
            if ((rc = both_alive(r, err)) < 0)
                goto out;
        }
    }
    int64_t end_ns = hd_clock_ns();
    lr->events = m;
    lr->offered = cfg->rate;
    lr->achieved = end_ns > start_ns ? (double)(m - 1) * 1e9 / (double)(end_ns - start_ns) : 0;
    lr->commit_ms_mean = commit_sum / (double)m;
    lr->aside_n = hd_turns_yields(turns) - aside_n0;
    lr->aside_ms = (double)(hd_turns_aside_ns(turns) - aside_ns0) / 1e6;
    /* Wait for the last of them, then stop the CPU probe. */
    bench_progress pr;
    bench_progress_start(&pr, "latency: notifications sent", m);
    if ((rc = wait_for(r, (int64_t)(base + m), &pr, base, err)) < 0)
        goto out;
    probe_end(&lr->cpu);
    lr->ran = 1;
    r->lat_ran = k + 1;
    fprintf(stderr, "latency: %zu notifications sent (offered %.0f/s, achieved %.1f/s)\n", m,
            lr->offered, lr->achieved);
    rc = wait_sink(r, base + m, err);
out:
    for (size_t i = 0; i < m; i++)
        hd_envelope_free(envs[i]);
    free(envs);
    return rc;
}

/* Right after latency run k: the raw chain paced at the same rate for as long, on an
 * exchange and two queues of its own, declared empty and deleted after (the k-th delivery
 * must be the k-th event). What the broker alone adds between a publish and a consume, on
 * this machine at this moment; herald's services are running, idle. A failure here is
 * reported and leaves the run without it (the latency figures stand on their own). */
static void raw_latency_phase(run *r, int k)
{
    const config *cfg = r->cfg;
    lat_run *lr = &r->lat[k];
    size_t m = (size_t)(cfg->rate * cfg->latency_seconds + 0.5);
    int64_t *pub = calloc(m ? m : 1, sizeof *pub), *got = calloc(m ? m : 1, sizeof *got);
    double *v = calloc(m ? m : 1, sizeof *v);
    hd_error err;
    if (m == 0 || pub == NULL || got == NULL || v == NULL)
        goto out;
    fprintf(stderr,
            "latency run %d/%d, the broker alone: the raw chain at %.0f events/s for %.1f s\n",
            k + 1, cfg->lat_runs, cfg->rate, cfg->latency_seconds);
    char ex[160], in[160], outq[160];
    snprintf(ex, sizeof ex, "%s.latency", r->b->chain_exchange);
    snprintf(in, sizeof in, "%s.latency.events", r->b->chain_exchange);
    snprintf(outq, sizeof outq, "%s.latency.sent", r->b->chain_exchange);
    if (bench_broker_declare_exchange(r->b->admin, ex, &err) < 0 ||
        bench_broker_declare_queue(r->b->admin, in, ex, "event", &err) < 0 ||
        bench_broker_declare_queue(r->b->admin, outq, ex, "sent", &err) < 0) {
        fprintf(stderr, "%s: latency run %d: the raw chain's queues: %s\n", PROG, k + 1, err.text);
        goto drop;
    }
    bench_span span;
    memset(&span, 0, sizeof span);
    bench_chain_spec spec = {.url = cfg->o.url,
                             .exchange = ex,
                             .queue_in = in,
                             .queue_out = outq,
                             .n = m,
                             .event_bytes = r->event_bytes,
                             .sent_bytes = r->sent_bytes,
                             .window = cfg->o.raw_window,
                             .prefetch = cfg->o.raw_prefetch,
                             .rate = cfg->rate,
                             .published_ns = pub,
                             .delivered_ns = got};
    if (bench_raw_chain(&spec, &span, &err) < 0) {
        fprintf(stderr, "%s: latency run %d: the raw chain failed: %s\n", PROG, k + 1, err.text);
        goto drop;
    }
    size_t n = 0;
    for (size_t i = 0; i < m; i++)
        if (pub[i] > 0 && got[i] >= pub[i])
            v[n++] = (double)(got[i] - pub[i]) / 1e6;
    lr->raw = bench_distribution(v, n);
    lr->raw_ran = n == m; /* every event timed at both ends, or no figure */
    if (!lr->raw_ran)
        fprintf(stderr, "%s: latency run %d: the raw chain timed %zu of %zu events: no figure\n",
                PROG, k + 1, n, m);
drop:
    bench_broker_drop(r->b->admin, in, NULL);
    bench_broker_drop(r->b->admin, outq, ex);
out:
    free(pub);
    free(got);
    free(v);
}

/* ---- results ---------------------------------------------------------------------------- */

/* Whether event e of latency run k is in its tail: every leg known and commit -> mail sent at
 * or above the run's p99 (latency_dists' tail and latency_windows' count agree). */
static int in_tail(const event *e, int k, double p99)
{
    if (e->phase != 1 + k || e->commit_us == 0 || e->sent_ms <= 0 || e->claimed_ms <= 0 ||
        e->created_ms <= 0 || e->recorded_ms <= 0)
        return 0;
    return (double)e->sent_ms - (double)e->commit_us / 1000.0 >= p99;
}

/* The window (0..nw-1) of a commit t_us after the run's first; the last takes any overrun. */
static int window_of(int64_t t_us, double win_s, int nw)
{
    int w = (int)((double)t_us / 1e6 / win_s);
    return w < nw ? w : nw - 1;
}

/* lr->win_*: the p99 of commit -> mail sent in each window of the run, and the tail's events
 * each window holds. One pass counts the events of each window, one places their latencies
 * window by window (a counting sort), then each window's slice gives its p99. */
static void latency_windows(const run *r, int k, lat_run *lr)
{
    double secs = r->cfg->latency_seconds;
    lr->windows = 0;
    if (lr->d[L_TOTAL].n == 0 || secs <= 0)
        return;
    lr->win_s = secs <= LAT_WINDOWS ? 1.0 : secs / LAT_WINDOWS;
    int nw = (int)(secs / lr->win_s + 0.5);
    nw = nw < 1 ? 1 : nw > LAT_WINDOWS ? LAT_WINDOWS : nw;
    int64_t first = 0;
    for (size_t i = 0; i < r->es.n; i++) {
        const event *e = &r->es.v[i];
        if (e->phase == 1 + k && e->commit_us > 0 && (first == 0 || e->commit_us < first))
            first = e->commit_us;
    }
    size_t start[LAT_WINDOWS + 1] = {0}, fill[LAT_WINDOWS];
    double *v = malloc((r->es.n ? r->es.n : 1) * sizeof *v);
    if (v == NULL)
        return;
    for (size_t i = 0; i < r->es.n; i++) {
        const event *e = &r->es.v[i];
        if (e->phase == 1 + k && e->commit_us > 0 && e->sent_ms > 0)
            start[window_of(e->commit_us - first, lr->win_s, nw) + 1]++;
    }
    for (int w = 0; w < nw; w++) {
        start[w + 1] += start[w];
        fill[w] = start[w];
        lr->win_tail[w] = 0;
    }
    for (size_t i = 0; i < r->es.n; i++) {
        const event *e = &r->es.v[i];
        if (e->phase != 1 + k || e->commit_us == 0 || e->sent_ms <= 0)
            continue;
        int w = window_of(e->commit_us - first, lr->win_s, nw);
        v[fill[w]++] = (double)e->sent_ms - (double)e->commit_us / 1000.0;
        lr->win_tail[w] += (size_t)in_tail(e, k, lr->d[L_TOTAL].p99);
    }
    for (int w = 0; w < nw; w++) {
        size_t n = start[w + 1] - start[w];
        lr->win_p99[w] = n > 0 ? bench_distribution(v + start[w], n).p99 : 0;
    }
    free(v);
    lr->windows = nw;
}

static void latency_dists(const run *r, int k, lat_run *lr)
{
    size_t m = r->es.n;
    double *v[NLAT];
    size_t n[NLAT] = {0};
    for (int j = 0; j < NLAT; j++)
        v[j] = malloc((m ? m : 1) * sizeof(double));
    for (size_t i = 0; i < m; i++) {
        const event *e = &r->es.v[i];
        if (e->phase != 1 + k || e->commit_us == 0)
            continue;
        double c = (double)e->commit_us / 1000.0;
        double x[NLAT];
        int has[NLAT] = {0};
#define LEG(j, cond, val)                                                                          \
    do {                                                                                           \
        if (cond) {                                                                                \
            x[j] = (val);                                                                          \
            has[j] = 1;                                                                            \
        }                                                                                          \
    } while (0)
        LEG(L_TOTAL, e->sent_ms > 0, (double)e->sent_ms - c);
        LEG(L_RECORDED, e->recorded_ms > 0, (double)e->recorded_ms - c);
        LEG(L_RECEIVED, e->created_ms > 0, (double)e->created_ms - c);
        LEG(L_HANDLED, e->created_ms > 0 && e->sent_ms > 0, (double)(e->sent_ms - e->created_ms));
        LEG(L_RELAYED, e->dispatched_ms > 0, (double)e->dispatched_ms - c);
        LEG(L_WAKE, e->claimed_ms > 0, (double)e->claimed_ms - c);
        LEG(L_DELIVER, e->claimed_ms > 0 && e->created_ms > 0,
            (double)(e->created_ms - e->claimed_ms));
        LEG(L_RECORD, e->recorded_ms > 0 && e->sent_ms > 0, (double)(e->recorded_ms - e->sent_ms));
        LEG(L_CONFIRM, e->claimed_ms > 0 && e->dispatched_ms > 0,
            (double)(e->dispatched_ms - e->claimed_ms));
#undef LEG
        for (int j = 0; j < NLAT; j++)
            if (has[j] && v[j] != NULL)
                v[j][n[j]++] = x[j];
    }
    for (int j = 0; j < NLAT; j++)
        lr->d[j] = v[j] ? bench_distribution(v[j], n[j]) : (dist){0};
    for (int j = 0; j < NLAT; j++)
        free(v[j]);

    /* The tail: the events at or above the run's p99, and where their time went. */
    lr->cause = -1;
    lr->tail_n = 0;
    double sum[NPATH] = {0};
    for (size_t i = 0; i < m && lr->d[L_TOTAL].n > 0; i++) {
        const event *e = &r->es.v[i];
        if (!in_tail(e, k, lr->d[L_TOTAL].p99))
            continue;
        double c = (double)e->commit_us / 1000.0;
        double leg[NPATH] = {(double)e->claimed_ms - c, (double)(e->created_ms - e->claimed_ms),
                             (double)(e->sent_ms - e->created_ms),
                             (double)(e->recorded_ms - e->sent_ms)};
        for (int j = 0; j < NPATH; j++)
            sum[j] += leg[j];
        lr->tail_n++;
    }
    for (int j = 0; j < NPATH; j++) {
        lr->tail_leg_ms[j] = lr->tail_n ? sum[j] / (double)lr->tail_n : 0;
        if (lr->tail_n && (lr->cause < 0 || lr->tail_leg_ms[j] > lr->tail_leg_ms[lr->cause]))
            lr->cause = j;
    }
    latency_windows(r, k, lr);
}

/* The latency target: p99 <= TARGET_P99_MS in every run, the runs all completed. */
static int latency_pass(const run *r, double *worst)
{
    *worst = 0;
    int pass = r->lat_ran == r->cfg->lat_runs;
    for (int k = 0; k < r->lat_ran; k++) {
        const dist *d = &r->lat[k].d[L_TOTAL];
        if (d->n == 0 || d->p99 > TARGET_P99_MS)
            pass = 0;
        if (d->p99 > *worst)
            *worst = d->p99;
    }
    return pass;
}

static void print_results(const run *r, const hd_proc_log_counts *logs, const char *date, int tmpfs,
                          const char *failure)
{
    const config *cfg = r->cfg;
    char a[32], b2[32];
    printf("\nherald bench: end-to-end notifications  (%zu events, RabbitMQ %s, SQLite %s "
           "synchronous=FULL, %ld CPUs, %s)\n",
           cfg->o.count, r->b->version, sqlite3_libversion(), sysconf(_SC_NPROCESSORS_ONLN), date);
    printf("  machine: load average %.2f at the start", r->loadavg[0]);
    if (r->fsync_p50_ms >= 0)
        printf("; 4 KiB write + fdatasync %.2f ms (median), worst %.1f ms", r->fsync_p50_ms,
               r->fsync_max_ms);
    printf("\n");
    printf("  path: users outbox -> herald-relay (batch %zu, poll %d ms) -> RabbitMQ (classic "
           "durable queue)\n        -> herald-notifications (prefetch %d, log sender) -> "
           "notification_sent in its outbox\n        -> %s\n\n",
           cfg->relay_batch, cfg->relay_poll_ms, cfg->prefetch,
           cfg->service_relay ? "its in-process relay publishes it (a queue takes every one)"
                              : "NOT published (--no-service-relay)");

    printf("  %-58s %12s\n", "throughput", "per second");
    if (r->raw_pub.s.ran)
        printf("  %-58s %12s\n", "raw publish (confirms, window 1000; event-sized bodies)",
               bench_thousands(a, sizeof a, r->raw_pub.s.rate));
    if (r->raw_con.s.ran)
        printf("  %-58s %12s\n", "raw consume (prefetch 100, ack each)",
               bench_thousands(a, sizeof a, r->raw_con.s.rate));
    if (r->raw_chain.s.ran)
        printf("  %-58s %12s\n", "raw chain (publish+confirm, consume+ack, twice; no DB)",
               bench_thousands(a, sizeof a, r->raw_chain.s.rate));
    if (r->raw_chain_ce.s.ran)
        printf("  %-58s %12s\n", "raw chain, herald's messages (CloudEvents properties)",
               bench_thousands(a, sizeof a, r->raw_chain_ce.s.rate));
    if (r->chain_rate > 0)
        printf("  %-58s %12s\n", "  and with the raw chain after the round: their mean",
               bench_thousands(a, sizeof a, r->chain_rate));
    if (r->tp_ran) {
        printf("  %-58s %12s\n", "end to end: notifications sent + recorded",
               bench_thousands(a, sizeof a, r->tp.rate));
        printf(
            "    %zu events in %.2f s from the relay's start to the last notification_sent row;"
            "\n    first mail after %.3f s; every notification_sent on the broker %.2f s later\n",
            cfg->o.count, r->tp.seconds, r->tp.first_sent_s, r->tp.tail_s);
        printf("    ");
        probe_print("", &r->tp.cpu);
        double total = 0;
        int known = 1;
        printf("    CPU per notification:");
        for (int i = W_RELAY; i <= W_BROKER; i++) {
            if (r->tp.cpu.cpu_s[i] < 0) {
                known = 0;
                continue;
            }
            double us = 1e6 * r->tp.cpu.cpu_s[i] / (double)cfg->o.count;
            total += us;
            printf(" %s %.0f us,", who_names[i], us);
        }
        if (known && total > 0)
            printf(
                " together %.0f us:\n    at most %s notifications/s on %ld CPUs doing nothing "
                "else\n",
                total,
                bench_thousands(a, sizeof a, 1e6 * (double)sysconf(_SC_NPROCESSORS_ONLN) / total),
                sysconf(_SC_NPROCESSORS_ONLN));
        else
            printf(" (the broker's process was not found)\n");
        if (r->raw_pub.s.ran && r->raw_con.s.ran && r->raw_pub.cpu.cpu_s[W_BROKER] >= 0 &&
            r->raw_con.cpu.cpu_s[W_BROKER] >= 0)
            printf("    broker CPU per raw message: publish %.0f us, consume %.0f us\n",
                   1e6 * r->raw_pub.cpu.cpu_s[W_BROKER] / (double)r->raw_pub.s.messages,
                   1e6 * r->raw_con.cpu.cpu_s[W_BROKER] / (double)r->raw_con.s.messages);
        const raw_result *chains[2] = {&r->raw_chain, &r->raw_chain_ce};
        for (int k = 0; k < 2; k++)
            if (chains[k]->s.ran && chains[k]->cpu.cpu_s[W_BROKER] >= 0 &&
                chains[k]->s.messages > 0)
                printf("    raw chain%s: broker CPU %.0f us per event, bench %.0f us per event\n",
                       k ? ", herald's messages" : "",
                       1e6 * chains[k]->cpu.cpu_s[W_BROKER] / (double)chains[k]->s.messages,
                       1e6 * chains[k]->s.bench_cpu / (double)chains[k]->s.messages);
    }
    if (r->qt[0].s.ran) {
        printf(
            "\n  broker CPU per event by queue kind (the raw chain, %zu events each; the example "
            "system\n  declares classic queues):\n",
            cfg->qt_count);
        printf("  %-20s %12s %16s %14s\n", "queue kind", "events/s", "broker us/event",
               "vs classic");
        for (int k = 0; k < 3; k++) {
            const raw_result *q = &r->qt[k];
            if (!q->s.ran)
                continue;
            double us = q->cpu.cpu_s[W_BROKER] >= 0 && q->s.messages > 0
                            ? 1e6 * q->cpu.cpu_s[W_BROKER] / (double)q->s.messages
                            : -1;
            double us0 = r->qt[0].cpu.cpu_s[W_BROKER] >= 0
                             ? 1e6 * r->qt[0].cpu.cpu_s[W_BROKER] / (double)r->qt[0].s.messages
                             : -1;
            printf("  %-20s %12s %16.0f %13.0f%%\n", qt_kinds[k],
                   bench_thousands(a, sizeof a, q->s.rate), us,
                   us > 0 && us0 > 0 ? 100.0 * us / us0 : 0.0);
        }
    }
    printf("\n  %-58s %8s %8s  %s\n", "verdicts", "measured", "target", "verdict");
    if (r->tp_ran && r->chain_rate > 0) {
        double q = r->tp.rate / r->chain_rate;
        printf("  %-58s %7.1f%% %7.0f%%  %s\n", "end to end / raw chain (same messages, same ops)",
               100.0 * q, 100.0 * TARGET_CHAIN, q >= TARGET_CHAIN ? "PASS" : "MISS");
        printf("    each round against the mean of the raw chains before and after it; the ");
        if (r->rounds_ran > 1)
            printf("median of %d rounds' ratios (", r->rounds_ran);
        else
            printf("one round's ratio (");
        for (int i = 0; i < r->rounds_ran; i++)
            printf("%s%.1f", i ? ", " : "", 100.0 * round_ratio(&r->rounds[i]));
        printf(" %%; against the raw chain before each alone: ");
        for (int i = 0; i < r->rounds_ran; i++)
            printf("%s%.1f", i ? ", " : "", 100.0 * round_ratio_before(&r->rounds[i]));
        printf(" %%); every throughput figure above is round %d's\n", r->median_round + 1);
    } else
        printf("  %-58s %8s %7.0f%%  %s\n", "end to end / raw chain", "-", 100.0 * TARGET_CHAIN,
               "n/a");
    if (r->tp_ran && r->raw_chain.s.ran)
        printf("  %-58s %7.1f%% %8s  %s\n", "end to end / raw chain of bare messages",
               100.0 * r->tp.rate / r->raw_chain.s.rate, "-", "(no target)");
    if (r->tp_ran && r->raw_con.s.ran)
        printf("  %-58s %7.1f%% %8s  %s\n", "end to end / raw consume",
               100.0 * r->tp.rate / r->raw_con.s.rate, "-", "(ratio)");
    if (r->tp_ran && r->raw_pub.s.ran)
        printf("  %-58s %7.1f%% %8s  %s\n", "end to end / raw publish",
               100.0 * r->tp.rate / r->raw_pub.s.rate, "-", "(ratio)");
    if (r->tp_ran)
        printf("  %-58s %8s %8s  %s\n", "notifications per second (2 cores)",
               bench_thousands(a, sizeof a, r->tp.rate),
               bench_thousands(b2, sizeof b2, TARGET_RATE),
               r->tp.rate >= TARGET_RATE ? "PASS" : "MISS");
    else
        printf("  %-58s %8s %8s  %s\n", "notifications per second (2 cores)", "-",
               bench_thousands(b2, sizeof b2, TARGET_RATE), "n/a");
    if (r->lat_ran) {
        double worst;
        int pass = latency_pass(r, &worst);
        char what[96], runs[96] = "";
        size_t used = 0;
        for (int k = 0; k < r->lat_ran && used < sizeof runs; k++)
            used += (size_t)snprintf(runs + used, sizeof runs - used, "%s%.1f", k ? " / " : "",
                                     r->lat[k].d[L_TOTAL].p99);
        snprintf(what, sizeof what, "p99 commit -> mail sent, %d runs in a row (worst)",
                 cfg->lat_runs);
        printf("  %-58s %5.1f ms %5.0f ms  %s\n", what, worst, TARGET_P99_MS,
               pass ? "PASS" : "MISS");
        printf("    p99 of each run: %s ms%s\n", runs,
               r->lat_ran < cfg->lat_runs ? " (not every run completed)" : "");
        /* The broker's own floor, measured right after each run at the same rate. */
        char raws[96] = "", ratios[96] = "";
        size_t ur = 0, uq = 0;
        for (int k = 0; k < r->lat_ran && ur < sizeof raws && uq < sizeof ratios; k++) {
            const lat_run *lr = &r->lat[k];
            if (!lr->raw_ran) {
                ur += (size_t)snprintf(raws + ur, sizeof raws - ur, "%s-", k ? " / " : "");
                uq += (size_t)snprintf(ratios + uq, sizeof ratios - uq, "%s-", k ? " / " : "");
                continue;
            }
            ur += (size_t)snprintf(raws + ur, sizeof raws - ur, "%s%.1f", k ? " / " : "",
                                   lr->raw.p99);
            uq += (size_t)snprintf(ratios + uq, sizeof ratios - uq, "%s%.1f", k ? " / " : "",
                                   lr->raw.p99 > 0 ? lr->d[L_TOTAL].p99 / lr->raw.p99 : 0);
        }
        printf("    the broker alone at the same rate (raw chain, publish -> consumed), p99: %s "
               "ms;\n    herald's p99 / the broker's: %s\n",
               raws, ratios);
        for (int k = 0; k < r->lat_ran; k++)
            if (r->lat[k].achieved < 0.9 * r->lat[k].offered)
                printf("    run %d kept only %.0f of the %.0f events/s offered (the machine was "
                       "busy): not the target's condition\n",
                       k + 1, r->lat[k].achieved, r->lat[k].offered);
    } else
        printf("  %-58s %8s %5.0f ms  %s\n", "p99 latency at the offered load", "-", TARGET_P99_MS,
               "n/a");

    for (int k = 0; k < r->lat_ran; k++) {
        const lat_run *lr = &r->lat[k];
        printf("\n  latency run %d/%d at %.0f events/s offered (%.1f/s achieved, %zu events, %zu "
               "commits late > 1 ms,\n  worst %.1f ms; one commit per event: %.2f ms mean, %.1f ms "
               "max), in ms:\n",
               k + 1, cfg->lat_runs, lr->offered, lr->achieved, lr->events, lr->late,
               lr->max_lag_ms, lr->commit_ms_mean, lr->commit_ms_max);
        printf("  the producer stood aside for a waiting writer %llu times, %.1f ms in all "
               "(turns %s)\n",
               (unsigned long long)lr->aside_n, lr->aside_ms, url_turns_off ? "off" : "on");
        printf("  %-46s %7s %7s %7s %7s %7s %7s\n", "", "p50", "p90", "p95", "p99", "max", "mean");
        for (int j = 0; j < NLAT; j++) {
            const dist *d = &lr->d[j];
            if (d->n == 0)
                continue;
            printf("  %-46s %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f\n", lat_labels[j], d->p50, d->p90,
                   d->p95, d->p99, d->max, d->mean);
        }
        if (lr->raw_ran)
            printf("  %-46s %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f\n",
                   "the broker alone: publish -> consumed (raw)", lr->raw.p50, lr->raw.p90,
                   lr->raw.p95, lr->raw.p99, lr->raw.max, lr->raw.mean);
        if (lr->cause >= 0) {
            printf("    the tail (%zu events at or above the p99), mean ms per leg:", lr->tail_n);
            for (int j = 0; j < NPATH; j++)
                printf(" %s%.1f", j ? "+ " : "", lr->tail_leg_ms[j]);
            printf("\n    (wake-up + publish/deliver + consume/send + record); largest: %s%s\n",
                   lat_labels[path_legs[lr->cause]],
                   lr->d[L_TOTAL].p99 > TARGET_P99_MS ? "  <- the cause of the miss" : "");
        }
        if (lr->windows > 0 && lr->tail_n > 0) {
            int worst = 0, with = 0;
            for (int w = 0; w < lr->windows; w++) {
                with += lr->win_tail[w] > 0;
                if (lr->win_tail[w] > lr->win_tail[worst])
                    worst = w;
            }
            printf("    the tail in time: in %d of %d windows of %.0f s, %zu of its %zu events in "
                   "window %d;\n    p99 by window:",
                   with, lr->windows, lr->win_s, lr->win_tail[worst], lr->tail_n, worst + 1);
            for (int w = 0; w < lr->windows; w++)
                printf(" %.0f", lr->win_p99[w]);
            printf("\n");
        }
        printf("    ");
        probe_print("", &lr->cpu);
    }

    printf("\n  %-22s %12s %12s %10s %10s %12s\n", "service", "peak RSS", "ru_maxrss", "CPU s",
           "stop", "exit");
    const child *cs[2] = {&r->relay, &r->notif};
    for (int i = 0; i < 2; i++) {
        char why[64];
        if (cs[i]->proc == NULL)
            continue;
        printf("  %-22s %8.1f MiB %8.1f MiB %10.2f %7lld ms %12s\n", cs[i]->name,
               (double)cs[i]->vmhwm_kb / 1024.0, (double)cs[i]->u.maxrss_kb / 1024.0,
               cs[i]->u.cpu_s, (long long)cs[i]->u.stop_ms,
               hd_proc_exit_text(cs[i]->proc, why, sizeof why));
        if (cs[i]->rss_kb >= 0)
            printf("    at the end: RSS %.1f MiB = anonymous %.1f (heap, arenas, stacks) + file "
                   "%.1f (libraries, shared); %ld threads\n",
                   (double)cs[i]->rss_kb / 1024.0, (double)cs[i]->anon_kb / 1024.0,
                   (double)cs[i]->file_kb / 1024.0, cs[i]->threads);
    }
    for (int i = 0; i < 2; i++)
        if (logs[i].warnings + logs[i].errors > 0) {
            printf("  %s log: %zu warnings, %zu errors (%s), e.g.\n", cs[i]->name, logs[i].warnings,
                   logs[i].errors, hd_proc_log_path(cs[i]->proc));
            for (size_t k = 0; k < logs[i].nexamples; k++)
                printf("    %s\n", logs[i].examples[k]);
        }

    const tally *t = &r->t;
    printf("\n  counted: %zu events; %lld notifications (%lld sent, %lld not sent, %lld unknown "
           "cause);\n  %lld notification_sent rows, %lld inbox rows, %ld notification_sent on the "
           "broker;\n  %zu events with a sent notification, %zu duplicates, %zu LOST\n",
           r->es.n, (long long)t->notifications, (long long)t->sent, (long long)t->not_sent,
           (long long)t->unknown, (long long)t->recorded, (long long)t->inbox_rows, r->sink_depth,
           t->matched, t->duplicates, t->lost);
    if (tmpfs)
        printf("\n  WARNING: the work directory was on tmpfs, where fsync costs nothing\n");
    if (failure != NULL && *failure)
        printf("\n  FAILED: %s\n", failure);
    printf("\n  The users service is not on this path (its HTTP and argon2id would dominate); the "
           "path starts\n  at its outbox. Times from the services' databases have 1 ms resolution. "
           "CPU: 100%% = one core.\n");
}

static json_t *raw_json(const raw_result *x, const char *label)
{
    if (!x->s.ran)
        return json_null();
    /* min = max = the one measurement: the shape plot.sh reads. */
    json_t *o =
        bench_results_phase(label, x->s.rate, x->s.rate, x->s.rate,
                            json_pack("{s:I, s:f, s:f, s:f}", "messages", (json_int_t)x->s.messages,
                                      "seconds", x->s.seconds, "bench_cpu_share",
                                      x->s.seconds > 0 ? x->s.bench_cpu / x->s.seconds : 0.0,
                                      "machine_cpu_busy", x->s.machine));
    if (o != NULL) {
        json_object_set_new(o, "cpu_share", probe_json(&x->cpu));
        json_object_set_new(o, "broker_cpu_us_per_message",
                            x->cpu.cpu_s[W_BROKER] >= 0 && x->s.messages > 0
                                ? json_real(1e6 * x->cpu.cpu_s[W_BROKER] / (double)x->s.messages)
                                : json_null());
    }
    return o;
}

static json_t *child_json(const child *c)
{
    char why[64];
    if (c->proc == NULL)
        return json_null();
    json_t *o = json_pack("{s:I, s:I, s:f, s:I, s:s, s:b}", "vmhwm_kb", (json_int_t)c->vmhwm_kb,
                          "ru_maxrss_kb", (json_int_t)c->u.maxrss_kb, "bench_cpu_seconds",
                          c->u.cpu_s, "stop_ms", (json_int_t)c->u.stop_ms, "exit",
                          hd_proc_exit_text(c->proc, why, sizeof why), "exit_ok",
                          hd_proc_exit_code(c->proc) == 0);
    if (o != NULL)
        json_object_set_new(o, "at_end",
                            json_pack("{s:I, s:I, s:I, s:I}", "rss_kb", (json_int_t)c->rss_kb,
                                      "anon_kb", (json_int_t)c->anon_kb, "file_kb",
                                      (json_int_t)c->file_kb, "threads", (json_int_t)c->threads));
    return o;
}

static int write_json(const char *path, const run *r, const hd_proc_log_counts *logs,
                      const char *date, int tmpfs, const char *failure)
{
    const config *cfg = r->cfg;
    json_t *root = bench_results_new("e2e_notifications", date, r->b->version);
    if (root == NULL)
        return -1;
    json_object_set_new(root, "machine",
                        json_pack("{s:[f,f,f], s:o, s:o}", "loadavg_at_start", r->loadavg[0],
                                  r->loadavg[1], r->loadavg[2], "fsync_p50_ms",
                                  r->fsync_p50_ms >= 0 ? json_real(r->fsync_p50_ms) : json_null(),
                                  "fsync_max_ms",
                                  r->fsync_max_ms >= 0 ? json_real(r->fsync_max_ms) : json_null()));
    json_object_set_new(
        root, "parameters",
        json_pack("{s:I, s:f, s:f, s:i, s:I, s:i, s:I, s:i, s:I, s:s, s:s, s:s, s:b, s:i}", "count",
                  (json_int_t)cfg->o.count, "latency_rate_per_s", cfg->rate, "latency_seconds",
                  cfg->latency_seconds, "prefetch", cfg->prefetch, "relay_batch",
                  (json_int_t)cfg->relay_batch, "relay_poll_ms", cfg->relay_poll_ms, "raw_window",
                  (json_int_t)cfg->o.raw_window, "raw_prefetch", cfg->o.raw_prefetch, "event_bytes",
                  (json_int_t)r->event_bytes, "synchronous", "full", "sender", "log", "queue_type",
                  "classic", "workdir_on_tmpfs", tmpfs, "rounds", cfg->rounds));
    json_object_set_new(json_object_get(root, "parameters"), "sqlite_cache_kib",
                        json_integer((json_int_t)cfg->cache_kib));
    json_object_set_new(json_object_get(root, "parameters"), "sqlite_turns",
                        json_string(cfg->turns_off ? "off" : "on"));
    json_object_set_new(json_object_get(root, "parameters"), "sqlite_coalesce",
                        json_string(cfg->direct ? "off" : "on"));
    json_object_set_new(json_object_get(root, "parameters"), "handoff",
                        json_string(cfg->no_handoff ? "off" : "on"));
    json_object_set_new(json_object_get(root, "parameters"), "sent_bytes",
                        json_integer((json_int_t)r->sent_bytes));
    json_object_set_new(json_object_get(root, "parameters"), "service_relay",
                        json_boolean(cfg->service_relay));

    json_t *phases = json_object();
    json_object_set_new(phases, "raw_publish",
                        raw_json(&r->raw_pub, "raw publish (confirms, window 1000)"));
    json_object_set_new(phases, "raw_consume",
                        raw_json(&r->raw_con, "raw consume (prefetch 100, ack each)"));
    json_object_set_new(phases, "raw_chain",
                        raw_json(&r->raw_chain, "raw chain (event publish+confirm, consume+ack, "
                                                "notification_sent publish+confirm, consume+ack)"));
    json_object_set_new(phases, "raw_chain_cloudevents",
                        raw_json(&r->raw_chain_ce, "raw chain, herald's messages (CloudEvents "
                                                   "properties, mandatory)"));
    if (r->tp_ran) {
        double lo = r->tp.rate, hi = r->tp.rate;
        for (int i = 0; i < r->rounds_ran; i++) {
            lo = r->rounds[i].f.rate < lo ? r->rounds[i].f.rate : lo;
            hi = r->rounds[i].f.rate > hi ? r->rounds[i].f.rate : hi;
        }
        json_t *e2e = bench_results_phase(
            "end to end: outbox -> relay -> broker -> notifications", r->tp.rate, lo, hi,
            json_pack("{s:I, s:f, s:f, s:f, s:f}", "messages", (json_int_t)cfg->o.count, "seconds",
                      r->tp.seconds, "seconds_polled", r->tp.seconds_polled, "first_sent_after_s",
                      r->tp.first_sent_s, "notification_sent_published_after_s", r->tp.tail_s));
        json_object_set_new(e2e, "cpu_share", probe_json(&r->tp.cpu));
        json_t *per = json_object();
        double total = 0;
        int known = 1;
        for (int i = 0; i < NWHO; i++) {
            double us =
                r->tp.cpu.cpu_s[i] >= 0 ? 1e6 * r->tp.cpu.cpu_s[i] / (double)cfg->o.count : -1;
            json_object_set_new(per, who_keys[i], us >= 0 ? json_real(us) : json_null());
            if (i != W_BENCH) {
                known &= us >= 0;
                total += us >= 0 ? us : 0;
            }
        }
        json_object_set_new(per, "services_and_broker", known ? json_real(total) : json_null());
        json_object_set_new(e2e, "cpu_us_per_notification", per);
        json_object_set_new(e2e, "cpu_ceiling_per_s",
                            known && total > 0
                                ? json_real(1e6 * (double)sysconf(_SC_NPROCESSORS_ONLN) / total)
                                : json_null());
        json_t *rounds = json_array();
        for (int i = 0; i < r->rounds_ran; i++) {
            const struct tp_round *t = &r->rounds[i];
            json_t *cpu = json_object();
            for (int w = 0; w < NWHO; w++)
                json_object_set_new(cpu, who_keys[w],
                                    t->f.cpu.cpu_s[w] >= 0
                                        ? json_real(1e6 * t->f.cpu.cpu_s[w] / (double)cfg->o.count)
                                        : json_null());
            json_array_append_new(
                rounds, json_pack("{s:i, s:f, s:f, s:o, s:o, s:o, s:o}", "round", i + 1,
                                  "e2e_per_s", t->f.rate, "raw_chain_cloudevents_per_s",
                                  t->ce.s.rate, "raw_chain_after_per_s",
                                  t->ce_after > 0 ? json_real(t->ce_after) : json_null(), "ratio",
                                  round_ratio(t) > 0 ? json_real(round_ratio(t)) : json_null(),
                                  "ratio_before_only",
                                  round_ratio_before(t) > 0 ? json_real(round_ratio_before(t))
                                                            : json_null(),
                                  "cpu_us_per_notification", cpu));
        }
        json_object_set_new(e2e, "rounds", rounds);
        json_object_set_new(e2e, "median_round", json_integer(r->median_round + 1));
        json_object_set_new(e2e, "ratio_estimator",
                            json_string("each round against the mean of the raw chains before "
                                        "and after it; the median round"));
        json_object_set_new(phases, "e2e", e2e);
    } else {
        json_object_set_new(phases, "e2e", json_null());
    }
    json_t *qk = json_object();
    for (int k = 0; k < 3; k++)
        json_object_set_new(qk, qt_kinds[k], raw_json(&r->qt[k], qt_kinds[k]));
    json_object_set_new(root, "queue_kinds", qk);
    json_object_set_new(root, "phases", phases);

    json_t *ratios = json_object();
    if (r->tp_ran && r->raw_con.s.ran)
        json_object_set_new(ratios, "e2e_vs_raw_consume",
                            json_pack("{s:f, s:n, s:n}", "value", r->tp.rate / r->raw_con.s.rate,
                                      "target", "pass"));
    if (r->tp_ran && r->chain_rate > 0)
        json_object_set_new(ratios, "e2e_vs_raw_chain",
                            json_pack("{s:f, s:f, s:b, s:s, s:f}", "value",
                                      r->tp.rate / r->chain_rate, "target", TARGET_CHAIN, "pass",
                                      r->tp.rate / r->chain_rate >= TARGET_CHAIN, "denominator",
                                      "raw_chain_cloudevents", "denominator_per_s", r->chain_rate));
    if (r->tp_ran && r->raw_chain.s.ran)
        json_object_set_new(ratios, "e2e_vs_raw_chain_bare",
                            json_pack("{s:f, s:n, s:n}", "value", r->tp.rate / r->raw_chain.s.rate,
                                      "target", "pass"));
    if (r->tp_ran && r->raw_pub.s.ran)
        json_object_set_new(ratios, "e2e_vs_raw_publish",
                            json_pack("{s:f, s:n, s:n}", "value", r->tp.rate / r->raw_pub.s.rate,
                                      "target", "pass"));
    json_object_set_new(root, "ratios", ratios);

    json_t *targets = json_object();
    json_object_set_new(targets, "notifications_per_s",
                        r->tp_ran
                            ? json_pack("{s:f, s:f, s:b}", "value", r->tp.rate, "target",
                                        TARGET_RATE, "pass", r->tp.rate >= TARGET_RATE)
                            : json_pack("{s:n, s:f, s:n}", "value", "target", TARGET_RATE, "pass"));
    double worst = 0;
    int lat_pass = latency_pass(r, &worst);
    json_object_set_new(
        targets, "latency_p99_ms",
        r->lat_ran ? json_pack("{s:f, s:f, s:b, s:i}", "value", worst, "target", TARGET_P99_MS,
                               "pass", lat_pass, "runs", cfg->lat_runs)
                   : json_pack("{s:n, s:f, s:n}", "value", "target", TARGET_P99_MS, "pass"));
    json_object_set_new(root, "targets", targets);

    /* "latency": the first run, in the shape it had with one run; "latency_runs": all. */
    json_t *runs = json_array();
    for (int k = 0; k < r->lat_ran; k++) {
        const lat_run *lr = &r->lat[k];
        json_t *l =
            json_pack("{s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:s}", "offered_per_s", lr->offered,
                      "achieved_per_s", lr->achieved, "events", (json_int_t)lr->events,
                      "late_commits", (json_int_t)lr->late, "max_lag_ms", lr->max_lag_ms,
                      "commit_ms_mean", lr->commit_ms_mean, "commit_ms_max", lr->commit_ms_max,
                      "resolution", "1 ms (service times are epoch ms)");
        json_t *ms = json_object();
        for (int j = 0; j < NLAT; j++)
            json_object_set_new(ms, lat_keys[j], bench_dist_json(&lr->d[j]));
        json_object_set_new(l, "ms", ms);
        json_t *tail = json_object();
        for (int j = 0; j < NPATH; j++)
            json_object_set_new(tail, lat_keys[path_legs[j]], json_real(lr->tail_leg_ms[j]));
        json_object_set_new(l, "tail_mean_ms_per_leg", tail);
        json_object_set_new(l, "tail_events", json_integer((json_int_t)lr->tail_n));
        json_object_set_new(l, "tail_cause",
                            lr->cause >= 0 ? json_string(lat_keys[path_legs[lr->cause]])
                                           : json_null());
        json_t *wp = json_array(), *wt = json_array();
        for (int w = 0; w < lr->windows; w++) {
            json_array_append_new(wp, json_real(lr->win_p99[w]));
            json_array_append_new(wt, json_integer((json_int_t)lr->win_tail[w]));
        }
        json_object_set_new(
            l, "windows",
            json_pack("{s:f, s:o, s:o}", "seconds", lr->win_s, "p99_ms", wp, "tail_events", wt));
        json_object_set_new(l, "cpu_share", probe_json(&lr->cpu));
        json_object_set_new(
            l, "producer_stood_aside",
            json_pack("{s:I, s:f}", "times", (json_int_t)lr->aside_n, "ms", lr->aside_ms));
        /* The raw chain paced at the same rate right after the run (µs resolution). */
        json_object_set_new(l, "raw_publish_to_consume_ms",
                            lr->raw_ran ? bench_dist_json(&lr->raw) : json_null());
        json_array_append_new(runs, l);
    }
    json_object_set_new(root, "latency",
                        r->lat_ran ? json_deep_copy(json_array_get(runs, 0)) : json_null());
    json_object_set_new(root, "latency_runs", runs);

    json_t *svc = json_object();
    json_object_set_new(svc, "relay", child_json(&r->relay));
    json_object_set_new(svc, "notifications", child_json(&r->notif));
    json_object_set_new(svc, "relay_log",
                        json_pack("{s:I, s:I}", "warnings", (json_int_t)logs[0].warnings, "errors",
                                  (json_int_t)logs[0].errors));
    json_object_set_new(svc, "notifications_log",
                        json_pack("{s:I, s:I}", "warnings", (json_int_t)logs[1].warnings, "errors",
                                  (json_int_t)logs[1].errors));
    json_object_set_new(root, "services", svc);

    const tally *t = &r->t;
    json_object_set_new(
        root, "counts",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "events",
                  (json_int_t)r->es.n, "notifications", (json_int_t)t->notifications, "sent",
                  (json_int_t)t->sent, "not_sent", (json_int_t)t->not_sent, "unknown_cause",
                  (json_int_t)t->unknown, "notification_sent_rows", (json_int_t)t->recorded,
                  "inbox_rows", (json_int_t)t->inbox_rows, "notification_sent_on_broker",
                  (json_int_t)r->sink_depth, "events_with_sent_notification",
                  (json_int_t)t->matched, "duplicates", (json_int_t)t->duplicates));
    json_object_set_new(root, "lost", json_integer((json_int_t)t->lost));
    json_object_set_new(root, "undelivered", json_integer((json_int_t)t->undelivered));
    return bench_results_finish(root, failure, t->lost == 0, path, PROG);
}

/* ---- files ------------------------------------------------------------------------------ */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_exe(const char *p)
{
    return access(p, X_OK) == 0;
}

static void remove_workdir(const char *dir)
{
    static const char *const dbs[] = {"users.db", "notifications.db"};
    static const char *const logs[] = {"relay.log", "notifications.log"};
    char path[4200];
    for (size_t n = 0; n < 2; n++) {
        snprintf(path, sizeof path, "%s/%s", dir, dbs[n]);
        hd_store_sqlite_remove(path);
        snprintf(path, sizeof path, "%s/%s", dir, logs[n]);
        unlink(path);
    }
    rmdir(dir);
}

static void on_fatal_signal(int sig)
{
    /* Ctrl-C: the services (same process group) got it too; let them finish, then go. */
    signal(sig, SIG_DFL);
    bench_service_stop_all(STOP_TIMEOUT_MS);
    raise(sig);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    config cfg;
    int prc = parse_args(argc, argv, &cfg);
    if (prc == 1)
        return 0;
    if (prc != 0)
        return 2;

    run *r = calloc(1, sizeof *r);
    broker b;
    memset(&b, 0, sizeof b);
    snprintf(b.version, sizeof b.version, "?");
    if (r == NULL)
        return 1;
    r->cfg = &cfg;
    url_cache_kib = cfg.cache_kib;
    url_turns_off = cfg.turns_off;
    url_direct = cfg.direct;
    r->b = &b;
    srand((unsigned)(hd_clock_ns() ^ getpid()));

    /* The binaries and the templates. */
    char bindir[4096];
    if (cfg.bin_dir != NULL) {
        snprintf(bindir, sizeof bindir, "%s", cfg.bin_dir);
    } else {
        ssize_t n = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
        if (n <= 0)
            snprintf(bindir, sizeof bindir, "%s", argv[0]);
        else
            bindir[n] = '\0';
        char *slash = strrchr(bindir, '/');
        if (slash != NULL)
            *slash = '\0';
        else
            snprintf(bindir, sizeof bindir, ".");
    }
    snprintf(r->relay_exe, sizeof r->relay_exe, "%s/herald-relay", bindir);
    snprintf(r->notif_exe, sizeof r->notif_exe, "%s/herald-notifications", bindir);
    if (!is_exe(r->relay_exe) || !is_exe(r->notif_exe)) {
        fprintf(stderr,
                PROG ": %s and %s must be built (cmake --build ... --target herald-relay "
                     "herald-notifications), or pass --bin-dir\n",
                r->relay_exe, r->notif_exe);
        return 2;
    }
    const char *tpl = cfg.templates ? cfg.templates : getenv("HD_TEMPLATES_DIR");
    if (tpl != NULL && *tpl) {
        if (realpath(tpl, r->templates) == NULL || !is_dir(r->templates)) {
            fprintf(stderr, PROG ": templates directory %s not found\n", tpl);
            return 2;
        }
    } else if (bench_find_templates(bindir, r->templates, sizeof r->templates) < 0 &&
               bench_find_templates(".", r->templates, sizeof r->templates) < 0) {
        fprintf(stderr, PROG ": cannot find templates/ above %s or here: pass --templates\n",
                bindir);
        return 2;
    }

    /* The work directory. */
    char path[4096];
    if (cfg.o.workdir != NULL) {
        if (mkdir(cfg.o.workdir, 0700) < 0 && errno != EEXIST) {
            fprintf(stderr, PROG ": cannot create %s: %s\n", cfg.o.workdir, strerror(errno));
            return 1;
        }
        snprintf(path, sizeof path, "%s/e2e_notifications-XXXXXX", cfg.o.workdir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/herald-e2e-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    }
    if (mkdtemp(path) == NULL || realpath(path, r->dir) == NULL) {
        fprintf(stderr, PROG ": cannot create a work directory: %s\n", strerror(errno));
        return 1;
    }
    snprintf(r->users_db, sizeof r->users_db, "%s/users.db", r->dir);
    snprintf(r->notif_db, sizeof r->notif_db, "%s/notifications.db", r->dir);
    int tmpfs = bench_on_tmpfs(r->dir);

    char redacted[512], date[32];
    hd_amqp_url_redact(cfg.o.url, redacted, sizeof redacted);
    bench_now_utc(date, sizeof date);
    fprintf(stderr, PROG ": %zu events, then %.0f/s for %.0f s; broker %s; work directory %s\n",
            cfg.o.count, cfg.rate, cfg.latency_seconds, redacted, r->dir);
    fprintf(stderr, PROG ": services from %s, templates %s\n", bindir, r->templates);
    if (tmpfs)
        fprintf(stderr,
                PROG ": WARNING: %s is on tmpfs, where fsync is free: the figures will "
                     "look too good (use --workdir on a disk)\n",
                r->dir);
    r->fsync_p50_ms = r->fsync_max_ms = -1;
    if (bench_fsync_probe(r->dir, 200, &r->fsync_p50_ms, &r->fsync_max_ms, NULL) == 0)
        fprintf(stderr,
                PROG ": disk: 4 KiB write + fdatasync %.2f ms (median of 200), worst %.1f "
                     "ms\n",
                r->fsync_p50_ms, r->fsync_max_ms);
    if (getloadavg(r->loadavg, 3) < 0)
        r->loadavg[0] = r->loadavg[1] = r->loadavg[2] = 0;
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);

    hd_error err;
    hd_error_clear(&err);
    char failure[HD_ERROR_TEXT_MAX + 160] = "";
#define FAIL(what)                                                                                 \
    do {                                                                                           \
        snprintf(failure, sizeof failure, "%s: %s", what, err.text);                               \
        goto done;                                                                                 \
    } while (0)

    if (broker_setup(&b, cfg.o.url, &err) < 0)
        FAIL("broker setup");
    r->broker_pid = broker_pid = bench_find_listener(b.port);
    fprintf(stderr, "RabbitMQ %s%s; exchange %s, queue %s\n", b.version,
            r->broker_pid > 0 ? "" : " (its process was not found: its CPU is not reported)",
            b.users_exchange, b.queue);

    /* The size of the events, for the raw messages. */
    {
        hd_envelope *env = make_event(0);
        char *text = NULL;
        if (env != NULL && hd_envelope_encode(env, &text, &r->event_bytes, NULL) == 0)
            free(text);
        hd_envelope_free(env);
        if (r->event_bytes == 0)
            r->event_bytes = 400;
        /* A notification_sent as the service writes it (domain.h: notification_id, user_id,
         * type, attempts, sent_at), for the raw chain's second publish. */
        char id[2][HD_UUID_LEN + 1];
        hd_uuid_v4(id[0]);
        hd_uuid_v4(id[1]);
        json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:I}", "notification_id", id[0], "user_id",
                                 id[1], "type", "email_verification", "attempts", 1, "sent_at",
                                 (json_int_t)hd_clock_ms());
        env = hd_envelope_new(SENT_TYPE, 1, "herald-notifications", data);
        text = NULL;
        if (env != NULL && hd_envelope_set_causation_id(env, id[1]) == 0 &&
            hd_envelope_encode(env, &text, &r->sent_bytes, NULL) == 0)
            free(text);
        hd_envelope_free(env);
        if (r->sent_bytes == 0)
            r->sent_bytes = 400;
    }

    /* 1: the raw limits, before any service runs. */
    if (raw_publish(&cfg, &b, cfg.o.count, r->event_bytes, &r->raw_pub, &err) < 0)
        FAIL("raw publish");
    if (raw_consume(&cfg, &b, cfg.o.count, &r->raw_con, &err) < 0)
        FAIL("raw consume");
    if (raw_chain(&cfg, &b, cfg.o.count, r->event_bytes, r->sent_bytes, BENCH_SHAPE_BARE,
                  &r->raw_chain, &err) < 0)
        FAIL("raw chain");
    if (raw_chain(&cfg, &b, cfg.o.count, r->event_bytes, r->sent_bytes, BENCH_SHAPE_CLOUDEVENTS,
                  &r->raw_chain_ce, &err) < 0)
        FAIL("raw chain (CloudEvents properties)");
    if (cfg.qt_count > 0 && queue_kinds(&cfg, &b, r->event_bytes, r->sent_bytes, r->qt, &err) < 0)
        FAIL("queue kinds");

    /* 2: the users outbox, the service, then the relay. */
    {
        char url[4300];
        if (hd_store_open(sqlite_url(url, sizeof url, r->users_db), &r->users, &err) < 0 ||
            hd_outbox_migrate(r->users, &err) < 0)
            FAIL("users outbox");
    }
    if (fill_outbox(r->users, cfg.o.count, FILL_PER_TX, &r->es, &err) < 0)
        FAIL("users outbox fill");
    if (start_notifications(r, &err) < 0)
        FAIL("start");
    for (int k = 0; k < cfg.rounds; k++)
        if (throughput_phase(r, k, &err) < 0) {
            pick_median_round(r);
            FAIL("throughput");
        }
    if (close_rounds(r, &err) < 0) {
        pick_median_round(r);
        FAIL("raw chain after the last round");
    }
    pick_median_round(r);

    /* 3: latency at the offered load. */
    if (cfg.latency_seconds > 0 && trace_claims(r, &err) < 0)
        FAIL("latency");
    for (int k = 0; cfg.latency_seconds > 0 && k < cfg.lat_runs; k++) {
        if (latency_phase(r, k, &err) < 0)
            FAIL("latency");
        raw_latency_phase(r, k);
    }

done:
    /* 4: peak RSS, stop, exit status; then count everything. */
    hd_proc_log_counts logs[2];
    memset(logs, 0, sizeof logs);
    child *cs[2] = {&r->relay, &r->notif};
    for (int i = 0; i < 2; i++) {
        if (cs[i]->proc == NULL)
            continue;
        int rc = bench_service_stop(cs[i], STOP_TIMEOUT_MS, &err);
        if (rc == HD_ETIMEOUT)
            fprintf(stderr, "%s: %s\n", PROG, err.text);
        if (rc < 0 && failure[0] == '\0') {
            char why[64];
            snprintf(failure, sizeof failure, "%s did not stop cleanly (%s)", cs[i]->name,
                     hd_proc_exit_text(cs[i]->proc, why, sizeof why));
        }
        hd_proc_log_scan(cs[i]->proc, &logs[i], NULL);
    }

    /* Everything the services published is on the broker now: stop the sink's consumer. */
    long consumed = 0;
    if (r->sink != NULL) {
        consumed = bench_sink_stop(r->sink, &err);
        r->sink = NULL;
        if (consumed < 0) {
            if (failure[0] == '\0')
                snprintf(failure, sizeof failure, "%s", err.text);
            consumed = 0;
        }
    }

    int completed = failure[0] == '\0'; /* every phase ran to its end */
    if (r->es.n > 0 && r->ro_notif != NULL && r->ro_users != NULL) {
        if (index_events(&r->es) < 0) {
            snprintf(failure, sizeof failure, "out of memory");
        } else if (collect(&r->es, r->ro_notif, r->ro_users, r->claims_traced, &r->t, &err) < 0) {
            if (failure[0] == '\0')
                snprintf(failure, sizeof failure, "counting: %s", err.text);
        } else {
            for (int k = 0; k < r->lat_ran; k++)
                latency_dists(r, k, &r->lat[k]);
            if (completed)
                r->t.lost = r->t.undelivered;
        }
        r->sink_depth = b.admin ? queue_depth(&b, b.sink) : -1;
        if (r->sink_depth >= 0)
            r->sink_depth += consumed;
        if (failure[0] == '\0' && cfg.service_relay && r->sink_depth != (long)r->es.n)
            snprintf(failure, sizeof failure, "%ld notification_sent on the broker for %zu events",
                     r->sink_depth, r->es.n);
    }
    fflush(stderr);
    print_results(r, logs, date, tmpfs, failure);
    if (r->t.lost > 0)
        printf("\n  LOST: %zu events have no sent notification with its notification_sent row\n",
               r->t.lost);
    else if (!completed && r->t.undelivered > 0)
        printf("\n  %zu events were not delivered when the run failed (still in an outbox or a "
               "queue)\n",
               r->t.undelivered);
    fflush(stdout);
    if (cfg.o.out != NULL)
        write_json(cfg.o.out, r, logs, date, tmpfs, failure);

    sqlite3_close(r->ro_notif);
    sqlite3_close(r->ro_users);
    hd_store_close(r->users);
    broker_teardown(&b);
    int evidence =
        (failure[0] != '\0' && (r->relay.proc != NULL || r->notif.proc != NULL)) || r->t.lost > 0;
    if (cfg.o.keep || evidence)
        fprintf(stderr, "kept %s%s\n", r->dir,
                cfg.o.keep ? ""
                           : " (the run failed: the databases and the services' logs are there)");
    else
        remove_workdir(r->dir);
    int status = r->t.lost > 0 || failure[0] != '\0' ? 1 : 0;
    hd_proc_free(r->relay.proc);
    hd_proc_free(r->notif.proc);
    free(r->es.v);
    free(r->es.by_id);
    free(r);
    return status;
}
