/* bench/limits.c — the machine's raw limits, measured by the project itself: what the disk,
 * SQLite and RabbitMQ can do here with no herald code on top. Every herald figure (docs/bench.md)
 * is bounded by one of these; `make limits` runs this program and writes docs/limits.md.
 *
 *   disk             4 KiB pwrite + fdatasync, one after the other (bench/common/disk_probe):
 *                    the floor under every durable commit.
 *   SQLite FULL      WAL mode, synchronous=FULL: one INSERT of a 200-byte row per transaction,
 *                    commit; commits per second (each commit syncs the WAL).
 *   SQLite NORMAL    the same with synchronous=NORMAL (WAL syncs at checkpoints only).
 *   SQLite batch     FULL, 1,000 rows per transaction: rows per second (group commit).
 *   raw publish      librabbitmq, persistent 200-byte messages, confirms, window 1,000
 *                    (bench/common/raw_broker, the phase both benches measure).
 *   raw consume      those messages, prefetch 100, one ack each (same).
 *   confirm each     raw publish with a window of 1: wait for every confirm.
 *
 * Each figure is the median of --runs short runs (3 by default), the runs interleaved (run 1 of
 * every figure, then run 2 ...) so that a noisy minute touches each figure once. The SQLite and
 * disk files go to a fresh directory (--workdir; it must be on the disk, not tmpfs). Exit 0, 1
 * when a measurement failed, 2 on bad usage.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench_util.h"
#include "herald/store.h"
#include "disk_probe.h"
#include "herald/clock.h"
#include "herald/error.h"
#include "herald/topology.h"
#include "options.h"
#include "proc_stats.h"
#include "raw_broker.h"
#include "stats.h"

#define PROG         "bench-limits"
#define BODY_BYTES   200
#define MAX_RUNS     9
#define FSYNCS       1000 /* disk: write + fdatasync per run */
#define BATCH_ROWS   1000 /* SQLite batch: rows per transaction */
#define CONFIRM_EACH 1000 /* messages of the window-1 publish (about half a second) */

typedef struct config {
    bench_options o; /* --count: messages of raw publish / consume */
    int runs;
    double seconds; /* SQLite: length of one run */
} config;

static void usage(FILE *f)
{
    fprintf(
        f, "usage: " PROG " [options]\n"
           "\n"
           "The machine's raw limits, without herald: disk write + fdatasync, SQLite WAL insert +\n"
           "commit (synchronous FULL and NORMAL, and 1,000 rows per commit), RabbitMQ raw\n"
           "confirmed publish (window 1,000 and 1) and raw consume (prefetch 100, ack each).\n"
           "Each figure is the median of --runs short runs (about a minute in all). Progress on\n"
           "stderr, a table on stdout; --out writes it as Markdown (make limits: docs/limits.md).\n"
           "Exit 0, 1 (a measurement failed), 2 (bad usage).\n"
           "\n"
           "  --amqp-url URL     broker (default: $HD_AMQP_URL)\n"
           "  --runs R           runs of every measurement, median reported (default 3)\n"
           "  --seconds S        length of one SQLite run (default 2)\n"
           "  --count N          messages of one raw publish / consume run (default 20000)\n"
           "  --quick            a smoke run: --runs 1 --seconds 0.3 --count 2000\n"
           "  --raw-window N     raw publish: confirm window (default 1000)\n"
           "  --raw-prefetch N   raw consume: prefetch (default 100)\n"
           "  --workdir DIR      where the disk and SQLite files go (default: a new directory\n"
           "                     in $TMPDIR or /tmp; must be on a real disk, not tmpfs)\n"
           "  --keep             keep that directory\n"
           "  --out FILE         write the results as Markdown (docs/limits.md)\n"
           "  --help             this text\n");
}

enum { O_RUNS = 256, O_SECONDS };

static int own_option(void *ctx, int opt, const char *arg)
{
    config *cfg = ctx;
    size_t v;
    switch (opt) {
    case O_RUNS:
        if (bench_parse_size(PROG, arg, "--runs", 1, MAX_RUNS, &v) < 0)
            return -1;
        cfg->runs = (int)v;
        return 0;
    case O_SECONDS:
        return bench_parse_num(PROG, arg, "--seconds", 0.05, 60, &cfg->seconds);
    default:
        return -1;
    }
}

static const struct option limits_options[] = {
    {"runs", required_argument, NULL, O_RUNS},
    {"seconds", required_argument, NULL, O_SECONDS},
    {NULL, 0, NULL, 0},
};

static int parse_args(int argc, char **argv, config *cfg)
{
    *cfg = (config){.runs = 0};
    bench_options_init(&cfg->o, PROG, 20000, 2000, 10000000);
    int rc = bench_options_parse(&cfg->o, argc, argv, limits_options, own_option, cfg, usage);
    if (cfg->runs == 0)
        cfg->runs = cfg->o.quick ? 1 : 3;
    if (cfg->seconds == 0)
        cfg->seconds = cfg->o.quick ? 0.3 : 2.0;
    return rc;
}

/* ---- the figures ---------------------------------------------------------------------- */

enum { F_DISK = 0, F_SQL_FULL, F_SQL_NORMAL, F_SQL_BATCH, F_PUBLISH, F_CONSUME, F_CONFIRM, NFIG };

typedef struct figure {
    const char *name;
    const char *unit;
    const char *bounds; /* what it bounds, one sentence for docs/limits.md */
    double v[MAX_RUNS];
    double extra[MAX_RUNS]; /* disk: median ms per write + fdatasync */
    int n;
} figure;

static figure figs[NFIG] = {
    [F_DISK] =
        {.name = "disk: 4 KiB write + fdatasync",
         .unit = "syncs/s",
         .bounds =
             "The floor under every durable write: a SQLite commit at synchronous=FULL pays at "
             "least one, and so does each flush of RabbitMQ's persistent messages."},
    [F_SQL_FULL] =
        {.name = "SQLite WAL, synchronous=FULL: 1 row per commit",
         .unit = "commits/s",
         .bounds = "The most commits per second one SQLite writer can make durably: a consumer "
                   "that commits its inbox row per message, or an outbox written one event per "
                   "transaction, cannot go faster."},
    [F_SQL_NORMAL] = {.name = "SQLite WAL, synchronous=NORMAL: 1 row per commit",
                      .unit = "commits/s",
                      .bounds =
                          "The same without a sync per commit (durable only up to the last "
                          "checkpoint): the CPU cost of a small SQLite transaction, the ceiling if "
                          "FULL were dropped."},
    [F_SQL_BATCH] =
        {.name = "SQLite WAL, synchronous=FULL: 1,000 rows per commit",
         .unit = "rows/s",
         .bounds = "Group commit: rows per second when one sync is shared by 1,000 rows, the "
                   "ceiling of the relay's claim/mark and of the consumer's batch transaction."},
    [F_PUBLISH] = {.name = "RabbitMQ raw publish, confirms, window 1,000",
                   .unit = "msg/s",
                   .bounds =
                       "The ceiling of any reliable publisher on this broker, herald's relay and "
                       "publisher included (bench-relay_inbox compares the relay with it)."},
    [F_CONSUME] = {.name = "RabbitMQ raw consume, prefetch 100, ack each",
                   .unit = "msg/s",
                   .bounds =
                       "The ceiling of a consumer that acks each message, before any work is done "
                       "(bench-relay_inbox compares herald's consumer + inbox with it)."},
    [F_CONFIRM] = {.name = "RabbitMQ raw publish, confirms, window 1",
                   .unit = "msg/s",
                   .bounds =
                       "A publisher that waits for each confirm before the next publish: a round "
                       "trip and a broker flush per message, what a window saves."},
};

static void record(int f, double v, double extra)
{
    figure *g = &figs[f];
    if (g->n < MAX_RUNS) {
        g->extra[g->n] = extra;
        g->v[g->n++] = v;
    }
}

/* ---- SQLite --------------------------------------------------------------------------- */

static int exec(sqlite3 *db, const char *sql, char *why, size_t cap)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(why, cap, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Transactions of `rows` INSERTs each for `seconds` in a fresh WAL database: rows per second. */
static int sqlite_run(const char *dir, int run, const char *sync, int rows, double seconds,
                      double *rate, char *why, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/limits-%s-%d-%d.db", dir, sync, rows, run);
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    int rc = -1;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        snprintf(why, cap, "open %s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", sync);
    if (exec(db, "PRAGMA journal_mode=WAL", why, cap) < 0 || exec(db, pragma, why, cap) < 0 ||
        exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)", why, cap) < 0)
        goto out;
    if (sqlite3_prepare_v2(db, "INSERT INTO t (body) VALUES (?)", -1, &ins, NULL) != SQLITE_OK) {
        snprintf(why, cap, "prepare: %s", sqlite3_errmsg(db));
        goto out;
    }
    char body[BODY_BYTES];
    memset(body, 'x', sizeof body);
    int64_t t0 = hd_clock_ns(), limit = t0 + (int64_t)(seconds * 1e9), now = t0;
    long done = 0;
    while (now < limit) {
        if (exec(db, "BEGIN", why, cap) < 0)
            goto out;
        for (int i = 0; i < rows; i++) {
            sqlite3_bind_blob(ins, 1, body, sizeof body, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) {
                snprintf(why, cap, "insert: %s", sqlite3_errmsg(db));
                goto out;
            }
            sqlite3_reset(ins);
        }
        if (exec(db, "COMMIT", why, cap) < 0)
            goto out;
        done += rows;
        now = hd_clock_ns();
    }
    *rate = (double)done * 1e9 / (double)(now - t0);
    rc = 0;
out:
    sqlite3_finalize(ins);
    sqlite3_close(db);
    hd_store_sqlite_remove(path);
    return rc;
}

/* ---- the machine ---------------------------------------------------------------------- */

typedef struct machine {
    char cpu[256];
    long cores;
    char kernel[256];
    char rabbitmq[64];
    char postgres[128];
    double load[3];
    char date[32];
    int tmpfs;
} machine;

static void first_line_of(const char *cmd, char *out, size_t cap)
{
    snprintf(out, cap, "?");
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return;
    char line[256];
    if (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] != '\0')
            snprintf(out, cap, "%s", line);
    }
    pclose(p);
}

static void describe_machine(machine *m, const char *dir)
{
    snprintf(m->cpu, sizeof m->cpu, "?");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "model name", 10) == 0) {
            const char *c = strchr(line, ':');
            if (c != NULL) {
                snprintf(m->cpu, sizeof m->cpu, "%s", c + 2);
                m->cpu[strcspn(m->cpu, "\n")] = '\0';
            }
            break;
        }
    if (f != NULL)
        fclose(f);
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct utsname un;
    if (uname(&un) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%s %s %s", un.sysname, un.release, un.machine);
    /* PostgreSQL is not measured, only named: the version of its server binary (Debian's
     * layout first, then PATH); "?" when there is none. */
    first_line_of("for p in /usr/lib/postgresql/*/bin/postgres postgres; do "
                  "\"$p\" --version 2>/dev/null && break; done",
                  m->postgres, sizeof m->postgres);
    if (getloadavg(m->load, 3) < 0)
        m->load[0] = m->load[1] = m->load[2] = 0;
    bench_now_utc(m->date, sizeof m->date);
    m->tmpfs = bench_on_tmpfs(dir);
}

/* ---- output --------------------------------------------------------------------------- */

static const char *fmt_rate(char *buf, size_t cap, double v)
{
    return bench_thousands(buf, cap, v);
}

static void print_table(const config *cfg, const machine *m)
{
    char a[32];
    printf("\nherald limits  (%s, %ld CPUs, %s; RabbitMQ %s, SQLite %s; %s)\n\n", m->cpu, m->cores,
           m->kernel, m->rabbitmq, sqlite3_libversion(), m->date);
    printf("  %-52s %12s %-10s  %s\n", "limit", "median", "", "runs");
    for (int f = 0; f < NFIG; f++) {
        figure *g = &figs[f];
        double runs[MAX_RUNS];
        memcpy(runs, g->v, sizeof runs);
        double med = bench_median(runs, (size_t)g->n);
        printf("  %-52s %12s %-10s ", g->name, g->n ? fmt_rate(a, sizeof a, med) : "-", g->unit);
        for (int r = 0; r < g->n; r++)
            printf(" %s", fmt_rate(a, sizeof a, g->v[r]));
        printf("\n");
    }
    printf("\n  median of %d run%s; the machine may be shared (load average %.2f at the start)\n",
           cfg->runs, cfg->runs == 1 ? "" : "s", m->load[0]);
}

static int write_markdown(const char *path, const config *cfg, const machine *m,
                          const char *failure)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    char a[32];
    fprintf(f, "# Limits of this machine\n\n");
    fprintf(f,
            "What the disk, SQLite and RabbitMQ can do on the machine that measured herald, with "
            "no herald code\non top: every figure of [the benchmarks](bench.md) is bounded by "
            "one of these. Written by\n`make limits` (`bench/limits.c`, run as `" PROG
            " --out docs/limits.md` with the private\nservers of `scripts/servers.sh`); run it "
            "again to refresh this file. Each figure is the **median\nof %d short run%s**, "
            "interleaved (run 1 of every figure, then run 2, ...). The machine is shared\nwith "
            "other work, so single runs vary by tens of percent: compare medians, and measure "
            "both\nsides of a comparison in the same session.\n\n",
            cfg->runs, cfg->runs == 1 ? "" : "s");
    fprintf(f, "## Machine\n\n| | |\n|---|---|\n");
    fprintf(f, "| measured | %s |\n", m->date);
    fprintf(f, "| CPU | %s, %ld cores online |\n", m->cpu, m->cores);
    fprintf(f, "| kernel | %s |\n", m->kernel);
    fprintf(f, "| RabbitMQ | %s (private node of `scripts/servers.sh`, classic durable queue) |\n",
            m->rabbitmq);
    fprintf(f, "| SQLite | %s (the library herald links) |\n", sqlite3_libversion());
    fprintf(f, "| PostgreSQL | %s (installed; not measured here) |\n", m->postgres);
    fprintf(f, "| load average at the start | %.2f %.2f %.2f |\n", m->load[0], m->load[1],
            m->load[2]);
    fprintf(f, "| work directory | %s |\n\n",
            m->tmpfs ? "**tmpfs: the disk and SQLite FULL figures are not the disk's**"
                     : "a local disk (not tmpfs)");
    fprintf(f, "## Figures\n\n| limit | median | runs | what it bounds |\n|---|---:|---|---|\n");
    for (int fi = 0; fi < NFIG; fi++) {
        figure *g = &figs[fi];
        double runs[MAX_RUNS], ms[MAX_RUNS];
        memcpy(runs, g->v, sizeof runs);
        memcpy(ms, g->extra, sizeof ms);
        double med = bench_median(runs, (size_t)g->n);
        fprintf(f, "| %s | ", g->name);
        if (g->n == 0)
            fprintf(f, "not measured |");
        else
            fprintf(f, "**%s** %s |", fmt_rate(a, sizeof a, med), g->unit);
        for (int r = 0; r < g->n; r++)
            fprintf(f, "%s%s", r ? ", " : " ", fmt_rate(a, sizeof a, g->v[r]));
        if (fi == F_DISK && g->n > 0)
            fprintf(f, " (median %.2f ms each)", bench_median(ms, (size_t)g->n));
        fprintf(f, " | %s |\n", g->bounds);
    }
    fprintf(f,
            "\nHow each is measured: disk, %d writes of 4 KiB (cycling over 16 blocks of one "
            "file) each followed\nby `fdatasync`; SQLite, a fresh database in WAL mode, "
            "200-byte rows, `BEGIN`, the INSERTs, `COMMIT`\nin a loop for %.1f s; RabbitMQ, "
            "%zu persistent %d-byte messages (%d for window 1) through one\ndurable classic "
            "queue bound to a topic exchange, with librabbitmq alone "
            "(`bench/common/raw_broker.c`,\nthe same code as the raw phases of "
            "`bench-relay_inbox` and `bench-e2e_notifications`).\n",
            FSYNCS, cfg->seconds, cfg->o.count, BODY_BYTES, CONFIRM_EACH);
    if (failure != NULL)
        fprintf(f, "\n**A measurement failed**: %s\n", failure);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    config cfg;
    int prc = parse_args(argc, argv, &cfg);
    if (prc != 0)
        return prc == 1 ? 0 : 2; /* --help, or bad usage */

    char dir[4200];
    const char *tmp = getenv("TMPDIR");
    if (cfg.o.workdir != NULL && mkdir(cfg.o.workdir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, PROG ": cannot create %s: %s\n", cfg.o.workdir, strerror(errno));
        return 1;
    }
    snprintf(dir, sizeof dir, "%s/herald-limits-XXXXXX",
             cfg.o.workdir ? cfg.o.workdir
             : tmp && *tmp ? tmp
                           : "/tmp");
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, PROG ": cannot create a work directory: %s\n", strerror(errno));
        return 1;
    }
    machine m;
    memset(&m, 0, sizeof m);
    describe_machine(&m, dir);
    if (m.tmpfs)
        fprintf(stderr, PROG ": WARNING: %s is on tmpfs: fdatasync costs nothing there\n", dir);

    hd_error err;
    hd_error_clear(&err);
    char failure[HD_ERROR_TEXT_MAX + 64] = "";
    hd_amqp *admin = NULL;
    char exchange[64], queue[80];
    snprintf(exchange, sizeof exchange, "hdlimits-%ld", (long)getpid());
    snprintf(queue, sizeof queue, "%s.q", exchange);
    if (bench_broker_open(cfg.o.url, &admin, m.rabbitmq, sizeof m.rabbitmq, &err) < 0 ||
        bench_broker_declare_exchange(admin, exchange, &err) < 0 ||
        bench_broker_declare_queue(admin, queue, exchange, "#", &err) < 0)
        snprintf(failure, sizeof failure, "broker setup: %s", err.text);
    fprintf(stderr, PROG ": %d runs; RabbitMQ %s, SQLite %s; files in %s\n", cfg.runs, m.rabbitmq,
            sqlite3_libversion(), dir);

    for (int r = 0; r < cfg.runs && failure[0] == '\0'; r++) {
        fprintf(stderr, "---- run %d of %d\n", r + 1, cfg.runs);
        double p50, max, secs, rate;
        if (bench_fsync_probe(dir, FSYNCS, &p50, &max, &secs) < 0) {
            snprintf(failure, sizeof failure, "disk: %s", strerror(errno));
            break;
        }
        record(F_DISK, FSYNCS / secs, p50);
        fprintf(stderr, "disk: %.0f write + fdatasync/s (median %.2f ms, worst %.1f ms)\n",
                FSYNCS / secs, p50, max);
        static const struct {
            int fig;
            const char *sync;
            int rows;
        } sql[] = {{F_SQL_FULL, "FULL", 1},
                   {F_SQL_NORMAL, "NORMAL", 1},
                   {F_SQL_BATCH, "FULL", BATCH_ROWS}};
        for (size_t k = 0; k < sizeof sql / sizeof sql[0] && failure[0] == '\0'; k++) {
            char why[512];
            if (sqlite_run(dir, r, sql[k].sync, sql[k].rows, cfg.seconds, &rate, why, sizeof why) <
                0) {
                snprintf(failure, sizeof failure, "SQLite %s: %s", sql[k].sync, why);
                break;
            }
            record(sql[k].fig, rate, 0);
            fprintf(stderr, "SQLite %s, %d row%s per commit: %.0f rows/s\n", sql[k].sync,
                    sql[k].rows, sql[k].rows == 1 ? "" : "s", rate);
        }
        if (failure[0] != '\0')
            break;
        bench_span pub = {0}, con = {0}, each = {0};
        if (bench_raw_publish(cfg.o.url, exchange, "raw", cfg.o.count, BODY_BYTES, cfg.o.raw_window,
                              BENCH_SHAPE_BARE, &pub, &err) < 0 ||
            bench_raw_consume(cfg.o.url, queue, cfg.o.count, cfg.o.raw_prefetch, &con, &err) < 0 ||
            bench_raw_publish(cfg.o.url, exchange, "raw", CONFIRM_EACH, BODY_BYTES, 1,
                              BENCH_SHAPE_BARE, &each, &err) < 0 ||
            hd_queue_purge(admin, queue, NULL, &err) < 0) {
            snprintf(failure, sizeof failure, "RabbitMQ: %s", err.text);
            break;
        }
        record(F_PUBLISH, pub.rate, 0);
        record(F_CONSUME, con.rate, 0);
        record(F_CONFIRM, each.rate, 0);
    }

    fflush(stderr);
    print_table(&cfg, &m);
    if (failure[0] != '\0')
        printf("\n  FAILED: %s\n", failure);
    fflush(stdout);
    if (cfg.o.out != NULL) {
        if (write_markdown(cfg.o.out, &cfg, &m, failure[0] ? failure : NULL) < 0)
            fprintf(stderr, PROG ": cannot write %s: %s\n", cfg.o.out, strerror(errno));
        else
            fprintf(stderr, "results: %s\n", cfg.o.out);
    }
    bench_broker_drop(admin, queue, exchange);
    bench_broker_close(admin);
    if (cfg.o.keep)
        fprintf(stderr, "kept %s\n", dir);
    else
        rmdir(dir);
    return failure[0] != '\0' ? 1 : 0;
}
