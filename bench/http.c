/* bench/http.c — the HTTP side of the example system against the transport's own limit:
 * requests per second and p99 of herald's services, and in the same run the same response
 * from a minimal libmicrohttpd handler in this process (same threading mode as hd_http: an
 * internal polling thread and a thread per connection), so that herald's figure is a ratio.
 *
 *   GET /users/{id}           herald-users (admin bearer token): a store read, JSON, metrics
 *   minimal GET               the same status, content type and body bytes, nothing else
 *   POST /notifications       herald-notifications (bearer token): a security alert, 202; its
 *                             sweeper sends it (log sender) meanwhile, as in production
 *   minimal POST              reads the body, answers the same 202 body
 *   registration              POST /users with a new e-mail each time: argon2id-bound by
 *                             design (HD_USERS_PWHASH); its rate and cost, no target
 *
 * Load: Debian's wrk (closed loop, keep-alive; --connections, --wrk-threads), --seconds per
 * phase, --rounds rounds alternating minimal and herald (each figure the median of rounds).
 * The GET's verdict is the median of the rounds' ratios: in each round herald's phase runs
 * right after the minimal one, so a machine that drifts between rounds (this 2-core VM moves
 * the minimal's rate by +-15 % from one round to the next) moves both sides of a round's
 * ratio alike; the ratio of the two medians, which pairs phases from different rounds, is
 * printed beside it.
 * The CPU of the serving process over each phase gives CPU per request. Both services use
 * SQLite files (synchronous=FULL) in the work directory; herald-notifications needs the broker
 * ($HD_AMQP_URL) for its consumer, and runs with HD_NOTIFICATIONS_RELAY=false (nothing is
 * published: the POST's cost is the HTTP handler, its transaction and the sweeper's send).
 * Exit 0 (targets met or missed), 1 (a phase failed), 2 (bad usage). docs/bench.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <sodium.h>

#include "bench_util.h"
#include "options.h"
#include "proc_stats.h"
#include "raw_broker.h"
#include "results.h"
#include "stats.h"
#include "herald/store.h"
#include "herald/clock.h"
#include "herald/topology.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "hd_proc.h"

#define PROG             "bench-http"
#define TARGET_GET       0.70 /* herald GET / minimal GET */
#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS  30000
#define MAX_ROUNDS       15

typedef struct config {
    bench_options o; /* --amqp-url, --quick, --workdir, --keep, --out */
    double seconds;  /* per phase */
    int rounds;
    int connections;
    int wrk_threads;
    double reg_seconds;
    int reg_connections;
    const char *wrk;
    const char *bin_dir;
    const char *templates;
    int turns_off; /* --sqlite-turns off: the services' SQLite URLs say turns=off */
} config;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [options]\n"
            "\n"
            "HTTP requests per second and p99 of herald-users (GET /users/{id}) and\n"
            "herald-notifications (POST /notifications), each against the same response from a\n"
            "minimal libmicrohttpd handler in the same run (same threading mode); registration's\n"
            "rate (argon2id). Load from wrk. A table on stdout, progress on stderr.\n"
            "\n"
            "  --seconds S          each phase (default 5; --quick 2)\n"
            "  --rounds N           rounds, minimal and herald alternating (default 5; --quick 1)\n"
            "  --connections N      wrk connections (default 8)\n"
            "  --wrk-threads N      wrk threads (default 2)\n"
            "  --reg-seconds S      registration phase (default 10; 0 skips it)\n"
            "  --reg-connections N  registration: wrk connections (default 4)\n"
            "  --wrk PATH           the wrk program (default: wrk on PATH)\n"
            "  --amqp-url URL       broker for herald-notifications (default: $HD_AMQP_URL)\n"
            "  --bin-dir DIR        where herald-users and herald-notifications are\n"
            "  --templates DIR      the e-mail templates (default: found above --bin-dir)\n"
            "  --sqlite-turns on|off  the services' SQLite writers take turns (default on;\n"
            "                       store_sqlite_turns.h): off to compare\n"
            "  --quick              a smoke run\n"
            "  --workdir DIR, --keep, --out FILE, --help\n");
}

enum {
    O_SECONDS = 256,
    O_ROUNDS,
    O_CONN,
    O_WTHREADS,
    O_REGS,
    O_REGC,
    O_WRK,
    O_BIN,
    O_TPL,
    O_TURNS
};

static const struct option http_options[] = {
    {"seconds", required_argument, NULL, O_SECONDS},
    {"rounds", required_argument, NULL, O_ROUNDS},
    {"connections", required_argument, NULL, O_CONN},
    {"wrk-threads", required_argument, NULL, O_WTHREADS},
    {"reg-seconds", required_argument, NULL, O_REGS},
    {"reg-connections", required_argument, NULL, O_REGC},
    {"wrk", required_argument, NULL, O_WRK},
    {"bin-dir", required_argument, NULL, O_BIN},
    {"templates", required_argument, NULL, O_TPL},
    {"sqlite-turns", required_argument, NULL, O_TURNS},
    {NULL, 0, NULL, 0},
};

static int seconds_set, rounds_set, reg_set;

static int own_option(void *ctx, int opt, const char *arg)
{
    config *c = ctx;
    double v;
    switch (opt) {
    case O_SECONDS:
        seconds_set = 1;
        return bench_parse_num(PROG, arg, "--seconds", 1, 3600, &c->seconds);
    case O_ROUNDS:
        rounds_set = 1;
        if (bench_parse_num(PROG, arg, "--rounds", 1, MAX_ROUNDS, &v) < 0)
            return -1;
        c->rounds = (int)v;
        return 0;
    case O_CONN:
        if (bench_parse_num(PROG, arg, "--connections", 1, 1000, &v) < 0)
            return -1;
        c->connections = (int)v;
        return 0;
    case O_WTHREADS:
        if (bench_parse_num(PROG, arg, "--wrk-threads", 1, 64, &v) < 0)
            return -1;
        c->wrk_threads = (int)v;
        return 0;
    case O_REGS:
        reg_set = 1;
        return bench_parse_num(PROG, arg, "--reg-seconds", 0, 3600, &c->reg_seconds);
    case O_REGC:
        if (bench_parse_num(PROG, arg, "--reg-connections", 1, 256, &v) < 0)
            return -1;
        c->reg_connections = (int)v;
        return 0;
    case O_WRK:
        c->wrk = arg;
        return 0;
    case O_BIN:
        c->bin_dir = arg;
        return 0;
    case O_TPL:
        c->templates = arg;
        return 0;
    case O_TURNS: {
        int on = 1;
        if (bench_parse_on_off(PROG, arg, "--sqlite-turns", &on) < 0)
            return -1;
        c->turns_off = !on;
        return 0;
    }
    default:
        return -1;
    }
}

/* ---- a tiny blocking HTTP/1.1 client, for the setup requests ------------------------------ */

/* One request on a new connection; the status, and the body into out (cap bytes, NUL
 * terminated). -1 on a transport failure. */
static int http_call(int port, const char *method, const char *path, const char *headers,
                     const char *body, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    char req[8192];
    int n =
        snprintf(req, sizeof req,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[65536];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(out, cap, "%s", b ? b + 4 : "");
    return status;
}

/* ---- the minimal handler: the transport's limit ------------------------------------------ */

typedef struct minimal {
    struct MHD_Daemon *d;
    int port;
    unsigned status;
    char *body; /* the response, the same bytes as herald's */
    size_t len;
    const char *ctype;
} minimal;

static enum MHD_Result minimal_access(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version, const char *upload,
                                      size_t *upload_size, void **state)
{
    (void)url, (void)method, (void)version, (void)upload;
    minimal *m = cls;
    if (*state == NULL) { /* the headers: come back for the body */
        *state = m;
        return MHD_YES;
    }
    if (*upload_size > 0) { /* body bytes: read and dropped, as a handler parses them */
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(m->len, m->body, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", m->ctype);
    enum MHD_Result ok = MHD_queue_response(c, m->status, r);
    MHD_destroy_response(r);
    return ok;
}

/* The flags of hd_http_server_start with its default threads = 0 (src/herald/http.c). */
static int minimal_start(minimal *m)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_THREAD_PER_CONNECTION;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    m->d = MHD_start_daemon(flags, 0, NULL, NULL, minimal_access, m, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&a, MHD_OPTION_CONNECTION_LIMIT, 256,
                            MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (m->d == NULL)
        return -1;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = i ? i->port : 0;
    return m->port > 0 ? 0 : -1;
}

/* ---- wrk ---------------------------------------------------------------------------------- */

typedef struct load {
    int ran;
    double rate; /* requests/s */
    double p50_ms, p99_ms;
    long requests; /* completed */
    long non2xx;   /* "Non-2xx or 3xx responses" */
    long sock_err; /* connect + read + write + timeout */
    double cpu_us; /* the server's CPU per request; -1 unknown */
} load;

static double wrk_ms(const char *v)
{
    char *end;
    double x = strtod(v, &end);
    if (strncmp(end, "us", 2) == 0)
        return x / 1000.0;
    if (strncmp(end, "ms", 2) == 0)
        return x;
    if (*end == 's')
        return x * 1000.0;
    if (*end == 'm')
        return x * 60000.0;
    return x;
}

static void wrk_parse(const char *text, load *l)
{
    const char *p;
    if ((p = strstr(text, "Requests/sec:")) != NULL)
        l->rate = strtod(p + 13, NULL);
    if ((p = strstr(text, " 50%")) != NULL) {
        char v[32];
        if (sscanf(p + 4, "%31s", v) == 1)
            l->p50_ms = wrk_ms(v);
    }
    if ((p = strstr(text, " 99%")) != NULL) {
        char v[32];
        if (sscanf(p + 4, "%31s", v) == 1)
            l->p99_ms = wrk_ms(v);
    }
    if ((p = strstr(text, " requests in ")) != NULL) {
        const char *q = p;
        while (q > text && q[-1] != '\n')
            q--;
        l->requests = strtol(q, NULL, 10);
    }
    if ((p = strstr(text, "Non-2xx or 3xx responses:")) != NULL)
        l->non2xx = strtol(p + 25, NULL, 10);
    if ((p = strstr(text, "Socket errors:")) != NULL) {
        long a = 0, b = 0, c = 0, d = 0;
        if (sscanf(p, "Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &a, &b, &c,
                   &d) == 4)
            l->sock_err = a + b + c + d;
    }
}

/* Runs wrk against url (script: a Lua file or NULL) for seconds, measuring server's CPU
 * (BENCH_PROBE_SELF for this process). */
static int run_wrk(const config *cfg, const char *url, const char *script, int connections,
                   double seconds, pid_t server, load *l, const char *what)
{
    memset(l, 0, sizeof *l);
    l->cpu_us = -1;
    char t[16], c[16], d[32];
    snprintf(t, sizeof t, "%d", cfg->wrk_threads < connections ? cfg->wrk_threads : connections);
    snprintf(c, sizeof c, "%d", connections);
    snprintf(d, sizeof d, "%.0fs", seconds);
    const char *argv[16];
    int k = 0;
    argv[k++] = cfg->wrk;
    argv[k++] = "--latency";
    argv[k++] = "--timeout"; /* a registration under load takes seconds: not a socket error */
    argv[k++] = "30s";
    argv[k++] = "-t";
    argv[k++] = t;
    argv[k++] = "-c";
    argv[k++] = c;
    argv[k++] = "-d";
    argv[k++] = d;
    if (script != NULL) {
        argv[k++] = "-s";
        argv[k++] = script;
    }
    argv[k++] = url;
    argv[k] = NULL;
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    bench_probe pr;
    memset(&pr, 0, sizeof pr);
    pr.pid[0] = server;
    bench_probe_begin(&pr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char *buf = malloc(65536);
    size_t got = 0;
    ssize_t r;
    while (buf != NULL && got < 65535 && (r = read(pfd[0], buf + got, 65535 - got)) > 0)
        got += (size_t)r;
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    bench_probe_end(&pr);
    if (buf == NULL)
        return -1;
    buf[got] = '\0';
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, PROG ": %s: wrk failed (status %d):\n%s\n", what, st, buf);
        free(buf);
        return -1;
    }
    wrk_parse(buf, l);
    if (l->rate <= 0)
        fprintf(stderr, PROG ": %s: no request completed; wrk said:\n%s\n", what, buf);
    free(buf);
    l->ran = l->rate > 0;
    if (pr.cpu_s[0] >= 0 && l->requests > 0)
        l->cpu_us = 1e6 * pr.cpu_s[0] / (double)l->requests;
    fprintf(stderr,
            "%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %ld requests, %ld non-2xx, %ld "
            "socket errors\n",
            what, l->rate, l->p50_ms, l->p99_ms, l->requests, l->non2xx, l->sock_err);
    return l->ran ? 0 : -1;
}

static int write_file(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- services --------------------------------------------------------------------------- */

/* A service started (bench_service: bench/common/proc_stats.h) and up: its /health answers. */
static int start_service(bench_service *s, const char *name, const char *exe,
                         const char *const *env, const char *dir, hd_error *err)
{
    char log[4200];
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    int rc = bench_service_start(s, name, exe, env, dir, log, err);
    if (rc == 0)
        rc = hd_proc_wait_health(s->proc, START_TIMEOUT_MS, err);
    return rc;
}

static void on_signal(int sig)
{
    signal(sig, SIG_DFL);
    bench_service_stop_all(STOP_TIMEOUT_MS);
    raise(sig);
}

/* The queues herald-notifications declared (its work queue, its retry tiers and DLQ) and the
 * users exchange: a benchmark leaves nothing on the broker. */
static void drop_queues(const config *cfg, const char *queue, const char *exchange)
{
    hd_amqp *admin = NULL;
    char version[64], name[200];
    hd_error err;
    if (bench_broker_open(cfg->o.url, &admin, version, sizeof version, &err) < 0)
        return;
    static const char *const tiers[] = {".retry.1000ms", ".retry.5000ms", ".retry.30000ms", ".dlq"};
    for (size_t i = 0; i < sizeof tiers / sizeof tiers[0]; i++) {
        snprintf(name, sizeof name, "%s%s", queue, tiers[i]);
        hd_queue_delete(admin, name, NULL, NULL);
    }
    snprintf(name, sizeof name, "%s.retry", queue);
    hd_exchange_delete(admin, name, NULL);
    bench_broker_drop(admin, queue, exchange);
    bench_broker_close(admin);
}

/* ---- results ------------------------------------------------------------------------------ */

enum { P_MIN_GET = 0, P_GET, P_MIN_POST, P_POST, NPH };
static const char *const ph_keys[NPH] = {"minimal_get", "users_get", "minimal_post",
                                         "notifications_post"};
static const char *const ph_labels[NPH] = {
    "minimal libmicrohttpd, GET (same response)", "herald-users GET /users/{id} (admin)",
    "minimal libmicrohttpd, POST (same 202)", "herald-notifications POST /notifications"};

typedef struct summary {
    double rate, p99, p50, cpu_us, min_rate, max_rate;
    long non2xx, sock_err;
} summary;

/* The rounds' ratios as a JSON array (new). */
static json_t *ratios_json(const double *r, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(r[i]));
    return a;
}

static summary summarise(const load *v, int n)
{
    summary s = {0};
    double r[MAX_ROUNDS], p[MAX_ROUNDS], q[MAX_ROUNDS], c[MAX_ROUNDS];
    int k = 0, kc = 0;
    s.min_rate = 1e300;
    for (int i = 0; i < n; i++) {
        if (!v[i].ran)
            continue;
        r[k] = v[i].rate;
        p[k] = v[i].p99_ms;
        q[k] = v[i].p50_ms;
        if (v[i].cpu_us >= 0)
            c[kc++] = v[i].cpu_us;
        s.min_rate = v[i].rate < s.min_rate ? v[i].rate : s.min_rate;
        s.max_rate = v[i].rate > s.max_rate ? v[i].rate : s.max_rate;
        s.non2xx += v[i].non2xx;
        s.sock_err += v[i].sock_err;
        k++;
    }
    if (k == 0) {
        s.min_rate = 0;
        return s;
    }
    s.rate = bench_median(r, (size_t)k);
    s.p99 = bench_median(p, (size_t)k);
    s.p50 = bench_median(q, (size_t)k);
    s.cpu_us = kc ? bench_median(c, (size_t)kc) : -1;
    return s;
}

int main(int argc, char **argv)
{
    config cfg = {.seconds = 5,
                  .rounds = 5,
                  .connections = 8,
                  .wrk_threads = 2,
                  .reg_seconds = 10,
                  .reg_connections = 4,
                  .wrk = "wrk"};
    bench_options_init(&cfg.o, PROG, 1, 1, 1);
    int prc = bench_options_parse(&cfg.o, argc, argv, http_options, own_option, &cfg, usage);
    if (prc == 1)
        return 0;
    if (prc != 0)
        return 2;
    if (cfg.o.quick) {
        if (!seconds_set)
            cfg.seconds = 2;
        if (!rounds_set)
            cfg.rounds = 1;
        if (!reg_set)
            cfg.reg_seconds = 3;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    char bindir[4096], users_exe[4200], notif_exe[4200], templates[4096];
    if (cfg.bin_dir != NULL) {
        snprintf(bindir, sizeof bindir, "%s", cfg.bin_dir);
    } else {
        ssize_t n = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
        bindir[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(bindir, '/');
        if (slash != NULL)
            *slash = '\0';
        else
            snprintf(bindir, sizeof bindir, ".");
    }
    snprintf(users_exe, sizeof users_exe, "%s/herald-users", bindir);
    snprintf(notif_exe, sizeof notif_exe, "%s/herald-notifications", bindir);
    if (access(users_exe, X_OK) != 0 || access(notif_exe, X_OK) != 0) {
        fprintf(stderr, PROG ": %s and %s must be built (or --bin-dir)\n", users_exe, notif_exe);
        return 2;
    }
    const char *tpl = cfg.templates ? cfg.templates : getenv("HD_TEMPLATES_DIR");
    if (tpl != NULL && *tpl) {
        if (realpath(tpl, templates) == NULL) {
            fprintf(stderr, PROG ": templates directory %s not found\n", tpl);
            return 2;
        }
    } else if (bench_find_templates(bindir, templates, sizeof templates) < 0 &&
               bench_find_templates(".", templates, sizeof templates) < 0) {
        fprintf(stderr, PROG ": cannot find templates/: pass --templates\n");
        return 2;
    }
    {
        const char *probe[] = {cfg.wrk, "--version", NULL};
        pid_t p = fork();
        if (p == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
            execvp(probe[0], (char *const *)probe);
            _exit(127);
        }
        int st = 0;
        waitpid(p, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) == 127) {
            fprintf(stderr, PROG ": wrk not found (make deps installs it, or --wrk PATH)\n");
            return 2;
        }
    }

    char dir[4096];
    {
        const char *tmp = cfg.o.workdir ? cfg.o.workdir : getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/herald-http-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(dir) == NULL) {
            fprintf(stderr, PROG ": cannot create a work directory: %s\n", strerror(errno));
            return 1;
        }
    }
    char date[32];
    bench_now_utc(date, sizeof date);
    double loadavg[3] = {0, 0, 0};
    if (getloadavg(loadavg, 3) < 0)
        loadavg[0] = 0;

    hd_error err;
    hd_error_clear(&err);
    char failure[HD_ERROR_TEXT_MAX + 200] = "";
    /* vmhwm_kb: -1 (not sampled) until stopped; .proc NULL until started */
    bench_service users = {.vmhwm_kb = -1}, notif = {.vmhwm_kb = -1};
    minimal mget = {0}, mpost = {0};
    load runs[NPH][MAX_ROUNDS];
    memset(runs, 0, sizeof runs);
    load reg;
    memset(&reg, 0, sizeof reg);
    char user_id[64] = "";
    size_t get_len = 0;
    int ok = 0;

    /* The services. */
    char uuid[4][HD_UUID_LEN + 1];
    for (int i = 0; i < 4; i++)
        hd_uuid_v4(uuid[i]);
    char admin[128], db_u[4400], db_n[4400], amqp[4400], tpl_env[4400], api[128], exch[128],
        queue[128];
    snprintf(admin, sizeof admin, "HD_USERS_ADMIN_TOKEN=%s%s", uuid[0], uuid[1]);
    snprintf(api, sizeof api, "HD_NOTIFICATIONS_API_TOKEN=%s%s", uuid[2], uuid[3]);
    const char *turns = cfg.turns_off ? "&turns=off" : "";
    snprintf(db_u, sizeof db_u, "HD_DATABASE_URL=sqlite://%s/users.db?synchronous=full%s", dir,
             turns);
    snprintf(db_n, sizeof db_n, "HD_DATABASE_URL=sqlite://%s/notifications.db?synchronous=full%s",
             dir, turns);
    snprintf(amqp, sizeof amqp, "HD_AMQP_URL=%s", cfg.o.url);
    snprintf(tpl_env, sizeof tpl_env, "HD_TEMPLATES_DIR=%s", templates);
    snprintf(exch, sizeof exch, "HD_USERS_EXCHANGE=hdbench-%ld.users", (long)getpid());
    snprintf(queue, sizeof queue, "HD_NOTIFICATIONS_QUEUE=hdbench-%ld.http.notifications",
             (long)getpid());
    /* Rate limits off: they would answer 429 long before the transport's limit. */
    const char *uenv[] = {db_u,
                          admin,
                          "HD_USERS_LISTEN=127.0.0.1:0",
                          "HD_USERS_RATE_CLIENT=off",
                          "HD_USERS_RATE_EMAIL=off",
                          "HD_LOG_LEVEL=info",
                          NULL};
    const char *nenv[] = {db_n,
                          amqp,
                          api,
                          tpl_env,
                          exch,
                          queue,
                          "HD_SENDER=log",
                          "HD_NOTIFICATIONS_RELAY=false",
                          "HD_NOTIFICATIONS_LISTEN=127.0.0.1:0",
                          "HD_LOG_LEVEL=info",
                          NULL};
    if (start_service(&users, "herald-users", users_exe, uenv, dir, &err) < 0) {
        snprintf(failure, sizeof failure, "herald-users: %s", err.text);
        goto done;
    }
    if (start_service(&notif, "herald-notifications", notif_exe, nenv, dir, &err) < 0) {
        snprintf(failure, sizeof failure, "herald-notifications: %s", err.text);
        goto done;
    }
    int uport = hd_proc_port(users.proc), nport = hd_proc_port(notif.proc);
    fprintf(stderr, "herald-users on port %d, herald-notifications on port %d; work directory %s\n",
            uport, nport, dir);

    /* One user to read, and the exact GET and POST responses for the minimal handler. */
    char hdr_u[256], hdr_n[256], resp[16384];
    snprintf(hdr_u, sizeof hdr_u, "Authorization: Bearer %s\r\n", strchr(admin, '=') + 1);
    snprintf(hdr_n, sizeof hdr_n, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n",
             strchr(api, '=') + 1);
    int st = http_call(uport, "POST", "/users", "Content-Type: application/json\r\n",
                       "{\"email\":\"bench.reader@example.com\",\"password\":\"correct horse "
                       "battery staple\",\"name\":\"Bench Reader\"}",
                       resp, sizeof resp);
    json_t *j = st == 201 ? json_loads(resp, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "id"));
    if (id == NULL) {
        snprintf(failure, sizeof failure, "POST /users answered %d: %.200s", st, resp);
        json_decref(j);
        goto done;
    }
    snprintf(user_id, sizeof user_id, "%s", id);
    json_decref(j);
    char path[128];
    snprintf(path, sizeof path, "/users/%s", user_id);
    st = http_call(uport, "GET", path, hdr_u, NULL, resp, sizeof resp);
    if (st != 200) {
        snprintf(failure, sizeof failure, "GET %s answered %d", path, st);
        goto done;
    }
    get_len = strlen(resp);
    mget =
        (minimal){.status = 200, .body = strdup(resp), .len = get_len, .ctype = "application/json"};
    const char *alert = "{\"user_id\":\"u1\",\"type\":\"security_alert\",\"recipient\":"
                        "\"ada@example.com\",\"variables\":{\"name\":\"Ada\",\"event\":\"new "
                        "sign-in\",\"time\":\"04:05 UTC\"}}";
    st = http_call(nport, "POST", "/notifications", hdr_n, alert, resp, sizeof resp);
    if (st != 202) {
        snprintf(failure, sizeof failure, "POST /notifications answered %d: %.200s", st, resp);
        goto done;
    }
    mpost = (minimal){
        .status = 202, .body = strdup(resp), .len = strlen(resp), .ctype = "application/json"};
    if (mget.body == NULL || mpost.body == NULL || minimal_start(&mget) < 0 ||
        minimal_start(&mpost) < 0) {
        snprintf(failure, sizeof failure, "cannot start the minimal libmicrohttpd handlers");
        goto done;
    }

    /* wrk's scripts: the headers and bodies. */
    char s_get[4200], s_post[4200], s_reg[4200];
    snprintf(s_get, sizeof s_get, "%s/get.lua", dir);
    snprintf(s_post, sizeof s_post, "%s/post.lua", dir);
    snprintf(s_reg, sizeof s_reg, "%s/register.lua", dir);
    char *alert_lua = NULL;
    {
        json_t *s = json_string(alert);
        alert_lua = json_dumps(s, JSON_ENCODE_ANY); /* a quoted, escaped string: valid Lua */
        json_decref(s);
    }
    if (alert_lua == NULL ||
        write_file(s_get, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n",
                   strchr(admin, '=') + 1) < 0 ||
        write_file(s_post,
                   "wrk.method = \"POST\"\nwrk.body = %s\n"
                   "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                   "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n",
                   alert_lua, strchr(api, '=') + 1) < 0 ||
        write_file(s_reg,
                   "local counter = 0\nlocal tid = 0\nlocal threads = {}\n"
                   "function setup(thread) tid = tid + 1; thread:set(\"tid\", tid) end\n"
                   "function request()\n  counter = counter + 1\n"
                   "  local body = string.format('{\"email\":\"r%%d.%%d.%%d@example.com\","
                   "\"password\":\"correct horse battery staple\",\"name\":\"R\"}', %ld, "
                   "tid, counter)\n"
                   "  return wrk.format(\"POST\", \"/users\", {[\"Content-Type\"] = "
                   "\"application/json\"}, body)\nend\n",
                   (long)getpid()) < 0) {
        free(alert_lua);
        snprintf(failure, sizeof failure, "cannot write the wrk scripts in %s", dir);
        goto done;
    }
    free(alert_lua);

    char u_min_get[64], u_min_post[64], u_get[256], u_post[64], u_reg[64];
    snprintf(u_min_get, sizeof u_min_get, "http://127.0.0.1:%d/users/x", mget.port);
    snprintf(u_min_post, sizeof u_min_post, "http://127.0.0.1:%d/notifications", mpost.port);
    snprintf(u_get, sizeof u_get, "http://127.0.0.1:%d%s", uport, path);
    snprintf(u_post, sizeof u_post, "http://127.0.0.1:%d/notifications", nport);
    snprintf(u_reg, sizeof u_reg, "http://127.0.0.1:%d/users", uport);

    /* The rounds: minimal and herald back to back, GET then POST. */
    for (int k = 0; k < cfg.rounds; k++) {
        char what[64];
        fprintf(stderr, "round %d/%d\n", k + 1, cfg.rounds);
        snprintf(what, sizeof what, "minimal GET");
        if (run_wrk(&cfg, u_min_get, s_get, cfg.connections, cfg.seconds, BENCH_PROBE_SELF,
                    &runs[P_MIN_GET][k], what) < 0)
            goto wrk_failed;
        if (run_wrk(&cfg, u_get, s_get, cfg.connections, cfg.seconds, hd_proc_pid(users.proc),
                    &runs[P_GET][k], "herald GET /users/{id}") < 0)
            goto wrk_failed;
        if (run_wrk(&cfg, u_min_post, s_post, cfg.connections, cfg.seconds, BENCH_PROBE_SELF,
                    &runs[P_MIN_POST][k], "minimal POST") < 0)
            goto wrk_failed;
        if (run_wrk(&cfg, u_post, s_post, cfg.connections, cfg.seconds, hd_proc_pid(notif.proc),
                    &runs[P_POST][k], "herald POST /notifications") < 0)
            goto wrk_failed;
    }
    /* No target here: a registration phase in which none completed (each hash took longer
     * than the phase on a busy machine) is reported as such, not as a failure. */
    if (cfg.reg_seconds > 0 &&
        run_wrk(&cfg, u_reg, s_reg, cfg.reg_connections, cfg.reg_seconds, hd_proc_pid(users.proc),
                &reg, "registration POST /users") < 0 &&
        reg.requests > 0)
        goto wrk_failed;
    /* Registrations that happened: the 201s (a 503 says every hashing slot was busy). */
    if (reg.ran && reg.requests > 0)
        reg.rate = reg.rate * (double)(reg.requests - reg.non2xx) / (double)reg.requests;
    ok = 1;
    goto done;
wrk_failed:
    snprintf(failure, sizeof failure, "a wrk phase failed (see above)");

done:;
    bench_service *svc[2] = {&users, &notif};
    for (int i = 0; i < 2; i++)
        if (svc[i]->proc != NULL && bench_service_stop(svc[i], STOP_TIMEOUT_MS, &err) < 0 &&
            failure[0] == '\0')
            snprintf(failure, sizeof failure, "%s did not stop cleanly: %s", svc[i]->name,
                     err.text);
    long users_hwm = users.vmhwm_kb, notif_hwm = notif.vmhwm_kb;
    drop_queues(&cfg, strchr(queue, '=') + 1, strchr(exch, '=') + 1);
    if (mget.d)
        MHD_stop_daemon(mget.d);
    if (mpost.d)
        MHD_stop_daemon(mpost.d);

    summary sm[NPH];
    for (int p = 0; p < NPH; p++)
        sm[p] = summarise(runs[p], cfg.rounds);
    /* The GET's ratio: the median of the rounds' own ratios (see the top of the file). */
    double round_ratio[MAX_ROUNDS];
    int nratio = 0;
    for (int k = 0; k < cfg.rounds; k++)
        if (runs[P_GET][k].ran && runs[P_MIN_GET][k].ran && runs[P_MIN_GET][k].rate > 0)
            round_ratio[nratio++] = runs[P_GET][k].rate / runs[P_MIN_GET][k].rate;
    double get_of_medians = sm[P_MIN_GET].rate > 0 ? sm[P_GET].rate / sm[P_MIN_GET].rate : 0;
    double ratio_sorted[MAX_ROUNDS];
    memcpy(ratio_sorted, round_ratio, (size_t)nratio * sizeof ratio_sorted[0]);
    double get_ratio = nratio > 0 ? bench_median(ratio_sorted, (size_t)nratio) : 0;
    double post_ratio = sm[P_MIN_POST].rate > 0 ? sm[P_POST].rate / sm[P_MIN_POST].rate : 0;

    char a[32];
    printf("\nherald bench: HTTP  (wrk, %d connections, %d threads, %.0f s per phase, %d rounds; "
           "%ld CPUs, load average %.2f at the start, %s)\n",
           cfg.connections, cfg.wrk_threads, cfg.seconds, cfg.rounds, sysconf(_SC_NPROCESSORS_ONLN),
           loadavg[0], date);
    printf("  libmicrohttpd %s, one thread per connection (hd_http's default) on both sides; "
           "SQLite synchronous=FULL\n\n",
           MHD_get_version());
    printf("  %-46s %10s %10s %9s %9s %10s\n", "phase (median of rounds)", "req/s", "min..max",
           "p50 ms", "p99 ms", "CPU/req");
    for (int p = 0; p < NPH; p++) {
        char range[48], b2[32];
        snprintf(range, sizeof range, "%s..%s", bench_thousands(a, sizeof a, sm[p].min_rate),
                 bench_thousands(b2, sizeof b2, sm[p].max_rate));
        printf("  %-46s %10s %10s %9.2f %9.2f", ph_labels[p],
               bench_thousands(a, sizeof a, sm[p].rate), range, sm[p].p50, sm[p].p99);
        if (sm[p].cpu_us >= 0)
            printf(" %7.0f us", sm[p].cpu_us);
        printf("\n");
        if (sm[p].non2xx + sm[p].sock_err > 0)
            printf("    %ld non-2xx responses, %ld socket errors\n", sm[p].non2xx, sm[p].sock_err);
    }
    if (reg.ran)
        printf(
            "  %-46s %10.1f %10s %9.1f %9.1f %7.0f us\n"
            "    argon2id, HD_USERS_PWHASH=interactive: opslimit %u, memlimit %u MiB (libsodium's "
            "INTERACTIVE), %d connections;\n    %ld non-2xx (503: every hashing slot busy)\n",
            "registration POST /users (argon2id)", reg.rate, "", reg.p50_ms, reg.p99_ms, reg.cpu_us,
            (unsigned)crypto_pwhash_OPSLIMIT_INTERACTIVE,
            (unsigned)(crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20), cfg.reg_connections, reg.non2xx);
    printf("\n  %-58s %8s %8s  %s\n", "verdicts", "measured", "target", "verdict");
    if (nratio > 0) {
        printf("  %-58s %7.1f%% %7.0f%%  %s\n", "GET /users/{id} / minimal handler",
               100 * get_ratio, 100 * TARGET_GET, get_ratio >= TARGET_GET ? "PASS" : "MISS");
        printf("    the median of the rounds' ratios (");
        for (int k = 0; k < nratio; k++)
            printf("%s%.1f", k ? ", " : "", 100 * round_ratio[k]);
        printf(" %%); the ratio of the medians: %.1f %%\n", 100 * get_of_medians);
    } else
        printf("  %-58s %8s %7.0f%%  n/a\n", "GET /users/{id} / minimal handler", "-",
               100 * TARGET_GET);
    if (sm[P_POST].rate > 0 && sm[P_MIN_POST].rate > 0)
        printf("  %-58s %7.1f%% %8s  (ratio)\n", "POST /notifications / minimal handler",
               100 * post_ratio, "-");
    if (reg.ran)
        printf("  %-58s %8.1f %8s  (no target: argon2id by design)\n", "registrations per second",
               reg.rate, "-");
    else if (cfg.reg_seconds > 0)
        printf("  %-58s %8s %8s  (none completed in %.0f s: the machine is too busy)\n",
               "registrations per second", "0", "-", cfg.reg_seconds);
    printf("\n  peak RSS: herald-users %.1f MiB, herald-notifications %.1f MiB\n",
           (double)users_hwm / 1024, (double)notif_hwm / 1024);
    if (failure[0])
        printf("\n  FAILED: %s\n", failure);
    fflush(stdout);

    if (cfg.o.out != NULL) {
        json_t *root = bench_results_new("http", date, "?");
        json_t *phases = json_object();
        for (int p = 0; p < NPH; p++) {
            json_t *o =
                bench_results_phase(ph_labels[p], sm[p].rate, sm[p].min_rate, sm[p].max_rate,
                                    json_pack("{s:f, s:f, s:I, s:I}", "p50_ms", sm[p].p50, "p99_ms",
                                              sm[p].p99, "non_2xx", (json_int_t)sm[p].non2xx,
                                              "socket_errors", (json_int_t)sm[p].sock_err));
            json_object_set_new(o, "server_cpu_us_per_request",
                                sm[p].cpu_us >= 0 ? json_real(sm[p].cpu_us) : json_null());
            json_object_set_new(phases, ph_keys[p], o);
        }
        json_object_set_new(
            phases, "registration",
            reg.ran
                ? bench_results_phase(
                      "registration POST /users (argon2id)", reg.rate, reg.rate, reg.rate,
                      json_pack("{s:f, s:f, s:I, s:I, s:s, s:i, s:I, s:i}", "p50_ms", reg.p50_ms,
                                "p99_ms", reg.p99_ms, "non_2xx", (json_int_t)reg.non2xx, "requests",
                                (json_int_t)reg.requests, "pwhash", "interactive", "opslimit",
                                (int)crypto_pwhash_OPSLIMIT_INTERACTIVE, "memlimit_bytes",
                                (json_int_t)crypto_pwhash_MEMLIMIT_INTERACTIVE, "connections",
                                cfg.reg_connections))
                : json_null());
        json_object_set_new(root, "phases", phases);
        json_object_set_new(root, "parameters",
                            json_pack("{s:i, s:i, s:f, s:i, s:s}", "connections", cfg.connections,
                                      "wrk_threads", cfg.wrk_threads, "seconds", cfg.seconds,
                                      "rounds", cfg.rounds, "mhd_mode",
                                      "internal polling thread + thread per connection"));
        json_object_set_new(root, "ratios",
                            json_pack("{s:{s:f, s:f, s:b, s:s, s:f, s:o}, s:{s:f, s:n, s:n}}",
                                      "get_vs_minimal", "value", get_ratio, "target", TARGET_GET,
                                      "pass", nratio > 0 && get_ratio >= TARGET_GET, "estimator",
                                      "median of the rounds' ratios", "ratio_of_medians",
                                      get_of_medians, "rounds", ratios_json(round_ratio, nratio),
                                      "post_vs_minimal", "value", post_ratio, "target", "pass"));
        json_object_set_new(root, "peak_rss_kb",
                            json_pack("{s:I, s:I}", "users", (json_int_t)users_hwm, "notifications",
                                      (json_int_t)notif_hwm));
        bench_results_finish(root, failure, ok, cfg.o.out, PROG);
    }
    if (cfg.o.keep || failure[0])
        fprintf(stderr, "kept %s\n", dir);
    else {
        static const char *const dbs[] = {"users.db", "notifications.db"};
        static const char *const names[] = {"herald-users.log", "herald-notifications.log",
                                            "get.lua", "post.lua", "register.lua"};
        char p[4300];
        for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", dir, dbs[i]);
            hd_store_sqlite_remove(p);
        }
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            unlink(p);
        }
        rmdir(dir);
    }
    free(mget.body);
    free(mpost.body);
    bench_service_free(&users);
    bench_service_free(&notif);
    return ok && failure[0] == '\0' ? 0 : 1;
}
