/* hd_proc.c — see hd_proc.h. */
#include "hd_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herald/clock.h"

extern char **environ;

#define POLL_MS      20
#define CLOSE_FD_MAX 65536 /* descriptors closed in the child: beyond this, left to CLOEXEC */

struct hd_proc {
    char *name;
    char *log_path; /* NULL: inherited output */
    off_t log_from; /* the log's size when the child started: what came before is not its */
    pid_t pid;
    int exited;       /* reaped */
    int status_known; /* 0 when someone else reaped it (ECHILD) */
    int status;       /* wait status */
    int port;
    long maxrss_kb;
    double cpu_s;
    int64_t stop_ms;
};

/* What the child reports through the CLOEXEC pipe when it cannot get to execve's success. */
enum { STAGE_CHDIR = 1, STAGE_DUP, STAGE_EXEC };
typedef struct child_failure {
    int stage;
    int error;
} child_failure;

/* ---- environment ----------------------------------------------------------------------- */

static size_t name_len(const char *s)
{
    return strcspn(s, "=");
}

/* environ, less env_drop_prefix, with the changes applied in order. A new array of borrowed
 * strings, built before fork: after fork only async-signal-safe calls are allowed. */
static char **build_env(const hd_proc_options *o)
{
    size_t n = 0, k = 0;
    while (environ != NULL && environ[n] != NULL)
        n++;
    while (o->env != NULL && o->env[k] != NULL)
        k++;
    char **v = calloc(n + k + 1, sizeof *v);
    if (v == NULL)
        return NULL;
    size_t out = 0;
    size_t plen = o->env_drop_prefix ? strlen(o->env_drop_prefix) : 0;
    for (size_t i = 0; i < n; i++)
        if (plen == 0 || strncmp(environ[i], o->env_drop_prefix, plen) != 0)
            v[out++] = environ[i];
    for (size_t j = 0; j < k; j++) {
        const char *c = o->env[j];
        size_t len = name_len(c);
        size_t w = 0;
        for (size_t i = 0; i < out; i++) /* remove NAME wherever it is */
            if (!(strncmp(v[i], c, len) == 0 && v[i][len] == '='))
                v[w++] = v[i];
        out = w;
        if (c[len] == '=')
            v[out++] = (char *)c;
    }
    v[out] = NULL;
    return v;
}

/* ---- start ----------------------------------------------------------------------------- */

static const char *basename_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int hd_proc_start(const hd_proc_options *o, hd_proc **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (o == NULL || out == NULL || o->argv == NULL || o->argv[0] == NULL || *o->argv[0] == '\0')
        return hd_error_set(err, HD_EINVAL, "hd_proc_start: argv[0] is required");
    hd_proc *p = calloc(1, sizeof *p);
    if (p == NULL)
        return hd_error_set(err, HD_ENOMEM, "hd_proc_start: out of memory");
    p->maxrss_kb = -1;
    p->cpu_s = -1;
    p->stop_ms = -1;
    p->name = strdup(o->name ? o->name : basename_of(o->argv[0]));
    p->log_path = o->log_path ? strdup(o->log_path) : NULL;
    char **envp = build_env(o);
    size_t argc = 0;
    while (o->argv[argc] != NULL)
        argc++;
    char **argv = calloc(argc + 1, sizeof *argv);
    if (p->name == NULL || (o->log_path && p->log_path == NULL) || envp == NULL || argv == NULL) {
        free(envp);
        free(argv);
        hd_proc_free(p);
        return hd_error_set(err, HD_ENOMEM, "hd_proc_start: out of memory");
    }
    for (size_t i = 0; i < argc; i++)
        argv[i] = (char *)o->argv[i];

    int rc = 0, log_fd = -1, null_fd = -1, pipefd[2] = {-1, -1};
    if (p->log_path != NULL) {
        log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        struct stat st;
        if (log_fd < 0 || fstat(log_fd, &st) < 0) {
            rc = hd_error_set(err, HD_EIO, "%s: cannot open its log %s: %s", p->name, p->log_path,
                              strerror(errno));
            goto done;
        }
        p->log_from = st.st_size;
    }
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* pipe + FD_CLOEXEC, not pipe2 (a GNU extension): another thread forking in between
     * could inherit the pipe, which only delays its EOF until that child execs. */
    if (null_fd < 0 || pipe(pipefd) < 0 || fcntl(pipefd[0], F_SETFD, FD_CLOEXEC) < 0 ||
        fcntl(pipefd[1], F_SETFD, FD_CLOEXEC) < 0) {
        rc = hd_error_set(err, HD_EIO, "%s: /dev/null or pipe: %s", p->name, strerror(errno));
        goto done;
    }
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > CLOSE_FD_MAX)
        max_fd = CLOSE_FD_MAX;
    fflush(NULL); /* nothing buffered here is written twice by the child */

    pid_t pid = fork();
    if (pid < 0) {
        rc = hd_error_set(err, HD_EIO, "%s: fork: %s", p->name, strerror(errno));
        goto done;
    }
    if (pid == 0) { /* the child: async-signal-safe calls only */
        child_failure f = {0, 0};
        if (dup2(null_fd, STDIN_FILENO) < 0 ||
            (log_fd >= 0 && (dup2(log_fd, STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0))) {
            f.stage = STAGE_DUP;
        } else if (o->cwd != NULL && chdir(o->cwd) < 0) {
            f.stage = STAGE_CHDIR;
        } else {
            for (int fd = 3; fd < (int)max_fd; fd++)
                if (fd != pipefd[1])
                    close(fd);
            execve(argv[0], argv, envp);
            f.stage = STAGE_EXEC;
        }
        f.error = errno;
        ssize_t w = write(pipefd[1], &f, sizeof f);
        (void)w;
        _exit(127);
    }
    p->pid = pid;
    close(pipefd[1]);
    pipefd[1] = -1;
    /* EOF: execve succeeded (the pipe closed on exec). A record: it failed before. */
    child_failure f;
    ssize_t got;
    do
        got = read(pipefd[0], &f, sizeof f);
    while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof f) {
        int status;
        waitpid(pid, &status, 0);
        p->exited = 1;
        p->status_known = 1;
        p->status = status;
        if (f.stage == STAGE_EXEC)
            rc = hd_error_set(err, HD_ENOTFOUND, "%s: cannot execute %s: %s", p->name, argv[0],
                              strerror(f.error));
        else if (f.stage == STAGE_CHDIR)
            rc = hd_error_set(err, HD_EIO, "%s: cannot change to %s: %s", p->name, o->cwd,
                              strerror(f.error));
        else
            rc = hd_error_set(err, HD_EIO, "%s: cannot redirect its output: %s", p->name,
                              strerror(f.error));
    }

done:
    if (log_fd >= 0)
        close(log_fd);
    if (null_fd >= 0)
        close(null_fd);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    free(envp);
    free(argv);
    if (rc < 0) {
        hd_proc_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- state ----------------------------------------------------------------------------- */

static void reaped(hd_proc *p, int status, const struct rusage *ru)
{
    p->exited = 1;
    p->status_known = 1;
    p->status = status;
    p->maxrss_kb = ru->ru_maxrss;
    p->cpu_s = (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
               (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

/* Reap without blocking (block: wait for it). 1 while it runs, 0 once exited. */
static int check(hd_proc *p, int block)
{
    if (p == NULL || p->pid <= 0 || p->exited)
        return 0;
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    pid_t r;
    do
        r = wait4(p->pid, &status, block ? 0 : WNOHANG, &ru);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 1;
    if (r == p->pid) {
        reaped(p, status, &ru);
        return 0;
    }
    p->exited = 1; /* ECHILD: reaped by someone else, status unknown */
    return 0;
}

int hd_proc_running(hd_proc *p)
{
    return check(p, 0);
}

pid_t hd_proc_pid(const hd_proc *p)
{
    return p ? p->pid : 0;
}

const char *hd_proc_name(const hd_proc *p)
{
    return p ? p->name : NULL;
}

const char *hd_proc_log_path(const hd_proc *p)
{
    return p ? p->log_path : NULL;
}

int hd_proc_port(const hd_proc *p)
{
    return p ? p->port : 0;
}

int hd_proc_exit_code(const hd_proc *p)
{
    if (p == NULL || !p->exited || !p->status_known || !WIFEXITED(p->status))
        return -1;
    return WEXITSTATUS(p->status);
}

int hd_proc_term_signal(const hd_proc *p)
{
    if (p == NULL || !p->exited || !p->status_known || !WIFSIGNALED(p->status))
        return 0;
    return WTERMSIG(p->status);
}

const char *hd_proc_exit_text(const hd_proc *p, char *buf, size_t cap)
{
    if (p == NULL || !p->exited)
        snprintf(buf, cap, "running");
    else if (!p->status_known)
        snprintf(buf, cap, "exit status unknown");
    else if (WIFEXITED(p->status))
        snprintf(buf, cap, "exit %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(buf, cap, "killed by signal %d", WTERMSIG(p->status));
    else
        snprintf(buf, cap, "wait status %d", p->status);
    return buf;
}

void hd_proc_usage_get(const hd_proc *p, hd_proc_usage *out)
{
    out->maxrss_kb = p ? p->maxrss_kb : -1;
    out->cpu_s = p ? p->cpu_s : -1;
    out->stop_ms = p ? p->stop_ms : -1;
}

/* ---- readiness ------------------------------------------------------------------------- */

int hd_proc_wait_ready(hd_proc *p, hd_proc_ready_fn ready, void *ctx, int timeout_ms, hd_error *err)
{
    if (p == NULL || ready == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_wait_ready: no process or no check");
    int64_t end = hd_clock_ms() + timeout_ms;
    for (;;) {
        /* Alive first: a child that said "ready" and died is not ready. */
        int alive = check(p, 0);
        if (alive) {
            int r = ready(p, ctx, err);
            if (r < 0)
                return r;
            if (r > 0 && check(p, 0))
                return 0;
            alive = check(p, 0);
        }
        if (!alive) {
            char why[64];
            return hd_error_set(err, HD_ESTATE, "%s exited while starting (%s)%s%s", p->name,
                                hd_proc_exit_text(p, why, sizeof why), p->log_path ? "; see " : "",
                                p->log_path ? p->log_path : "");
        }
        if (hd_clock_ms() >= end)
            return hd_error_set(err, HD_ETIMEOUT, "%s not ready after %d ms%s%s", p->name,
                                timeout_ms, p->log_path ? "; see " : "",
                                p->log_path ? p->log_path : "");
        hd_sleep_ms(POLL_MS);
    }
}

/* Calls fn on each line written to the log since the start, until fn returns non-zero
 * (returned). 0 when no line matched or there is no log yet. */
static int each_log_line(const hd_proc *p, int (*fn)(const char *line, void *ctx), void *ctx)
{
    if (p->log_path == NULL)
        return 0;
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL)
        return 0;
    int r = 0;
    if (fseeko(f, p->log_from, SEEK_SET) == 0) {
        char *line = NULL;
        size_t cap = 0;
        while (r == 0 && getline(&line, &cap, f) > 0)
            r = fn(line, ctx);
        free(line);
    }
    fclose(f);
    return r;
}

static int line_has(const char *line, void *needle)
{
    return strstr(line, needle) != NULL;
}

static int log_ready(hd_proc *p, void *needle, hd_error *err)
{
    (void)err;
    return each_log_line(p, line_has, needle);
}

int hd_proc_wait_log(hd_proc *p, const char *needle, int timeout_ms, hd_error *err)
{
    if (p == NULL || needle == NULL || p->log_path == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_wait_log: the process has no log file");
    int rc = hd_proc_wait_ready(p, log_ready, (void *)needle, timeout_ms, err);
    if (rc == HD_ETIMEOUT)
        return hd_error_set(err, rc, "%s did not log '%s' within %d ms; see %s", p->name, needle,
                            timeout_ms, p->log_path);
    return rc;
}

/* The port of a herald service's "listening" line; the value may be a number or a string. */
static int listening_port(const char *line, void *ctx)
{
    (void)ctx;
    if (strstr(line, "\"message\":\"listening\"") == NULL)
        return 0;
    const char *v = strstr(line, "\"port\":");
    if (v == NULL)
        return 0;
    v += 7;
    if (*v == '"')
        v++;
    long port = strtol(v, NULL, 10);
    return port > 0 && port <= 65535 ? (int)port : 0;
}

static int health_ready(hd_proc *p, void *ctx, hd_error *err)
{
    (void)ctx;
    (void)err;
    if (p->port == 0)
        p->port = each_log_line(p, listening_port, NULL);
    if (p->port == 0)
        return 0;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", p->port);
    return hd_proc_http_status(url, 2000) == 200;
}

int hd_proc_wait_health(hd_proc *p, int timeout_ms, hd_error *err)
{
    if (p == NULL || p->log_path == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_wait_health: the process has no log file");
    int rc = hd_proc_wait_ready(p, health_ready, NULL, timeout_ms, err);
    if (rc == HD_ETIMEOUT)
        return hd_error_set(err, rc, "%s: %s within %d ms; see %s", p->name,
                            p->port ? "GET /health did not answer 200"
                                    : "no \"listening\" line in its log",
                            timeout_ms, p->log_path);
    return rc;
}

static int http_ready(hd_proc *p, void *url, hd_error *err)
{
    (void)p;
    (void)err;
    return hd_proc_http_status(url, 2000) == 200;
}

int hd_proc_wait_http(hd_proc *p, const char *url, int timeout_ms, hd_error *err)
{
    if (url == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_wait_http: no URL");
    int rc = hd_proc_wait_ready(p, http_ready, (void *)url, timeout_ms, err);
    if (rc == HD_ETIMEOUT)
        return hd_error_set(err, rc, "%s: GET %s did not answer 200 within %d ms%s%s", p->name, url,
                            timeout_ms, p->log_path ? "; see " : "",
                            p->log_path ? p->log_path : "");
    return rc;
}

int hd_proc_http_status(const char *url, int timeout_ms)
{
    /* http://host[:port][/path]; host may be [v6]. */
    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return HD_EURL;
    const char *h = url + 7, *path = strchr(h, '/');
    if (path == NULL)
        path = h + strlen(h);
    char host[256], port[16] = "80";
    size_t hlen = (size_t)(path - h);
    if (hlen == 0 || hlen >= sizeof host)
        return HD_EURL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *hp = host, *colon;
    if (host[0] == '[') {
        char *close_br = strchr(host, ']');
        if (close_br == NULL)
            return HD_EURL;
        *close_br = '\0';
        hp = host + 1;
        colon = close_br[1] == ':' ? close_br + 1 : NULL;
    } else {
        colon = strrchr(host, ':');
    }
    if (colon != NULL) {
        *colon = '\0';
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(hp, port, &hints, &ai) != 0 || ai == NULL)
        return HD_EURL;
    /* "localhost" may give ::1 first while the service listens on 127.0.0.1 only: try each. */
    int fd = -1;
    for (struct addrinfo *a = ai; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        /* connect, send and recv all obey these on Linux: no nonblocking dance needed. */
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    int status = HD_ECONNECT;
    if (fd >= 0) {
        char req[1024];
        int n =
            snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     *path ? path : "/", hp);
        char buf[64];
        ssize_t got = 0, r;
        status = HD_EPROTO;
        if (n > 0 && (size_t)n < sizeof req &&
            send(fd, req, (size_t)n, MSG_NOSIGNAL) == (ssize_t)n) {
            while (got < (ssize_t)sizeof buf - 1 &&
                   (r = recv(fd, buf + got, sizeof buf - 1 - (size_t)got, 0)) > 0)
                got += r;
            buf[got] = '\0';
            if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0)
                status = (int)strtol(buf + 9, NULL, 10);
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return status;
}

/* ---- ending ---------------------------------------------------------------------------- */

int hd_proc_wait(hd_proc *p, int timeout_ms, hd_error *err)
{
    if (p == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_wait: no process");
    int64_t end = hd_clock_ms() + timeout_ms;
    while (check(p, 0)) {
        if (hd_clock_ms() >= end)
            return hd_error_set(err, HD_ETIMEOUT, "%s (pid %ld) still running after %d ms", p->name,
                                (long)p->pid, timeout_ms);
        hd_sleep_ms(10); /* finer than POLL_MS: stop_ms is reported */
    }
    return 0;
}

/* 0 when it exited 0, else HD_ESTATE with the reason. */
static int judge_exit(hd_proc *p, hd_error *err)
{
    if (hd_proc_exit_code(p) == 0)
        return 0;
    char why[64];
    return hd_error_set(err, HD_ESTATE, "%s (pid %ld) ended with %s", p->name, (long)p->pid,
                        hd_proc_exit_text(p, why, sizeof why));
}

int hd_proc_stop(hd_proc *p, int timeout_ms, hd_error *err)
{
    if (p == NULL || p->pid <= 0)
        return hd_error_set(err, HD_EINVAL, "hd_proc_stop: no process");
    if (!check(p, 0))
        return judge_exit(p, err);
    int64_t t0 = hd_clock_ms();
    kill(p->pid, SIGTERM);
    if (hd_proc_wait(p, timeout_ms, NULL) == HD_ETIMEOUT) {
        kill(p->pid, SIGKILL);
        check(p, 1);
        p->stop_ms = hd_clock_ms() - t0;
        return hd_error_set(err, HD_ETIMEOUT,
                            "%s (pid %ld) still running %d ms after SIGTERM: killed", p->name,
                            (long)p->pid, timeout_ms);
    }
    p->stop_ms = hd_clock_ms() - t0;
    return judge_exit(p, err);
}

int hd_proc_signal(hd_proc *p, int sig, hd_error *err)
{
    if (p == NULL || p->pid <= 0)
        return hd_error_set(err, HD_EINVAL, "hd_proc_signal: no process");
    if (!check(p, 0))
        return hd_error_set(err, HD_ESTATE, "%s (pid %ld) has already exited", p->name,
                            (long)p->pid);
    if (kill(p->pid, sig) < 0)
        return hd_error_set(err, HD_EINVAL, "kill %ld: %s", (long)p->pid, strerror(errno));
    return 0;
}

int hd_proc_kill(hd_proc *p, hd_error *err)
{
    int rc = hd_proc_signal(p, SIGKILL, err);
    if (rc == 0)
        check(p, 1);
    return rc;
}

/* When HD_TEST_LOG_DIR is set (scripts/run_tests.sh sets it), keep a copy of the log there
 * before the test removes its temp dir: scripts/check_secrets_in_logs.sh scans every log a
 * test run wrote for passwords and tokens. */
static void keep_log(const hd_proc *p)
{
    const char *dir = getenv("HD_TEST_LOG_DIR");
    if (dir == NULL || *dir == '\0' || p->log_path == NULL)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/proc-%s-%ld-%ld.log", dir, p->name, (long)getpid(),
             (long)p->pid);
    FILE *in = fopen(p->log_path, "r");
    FILE *out = in ? fopen(path, "a") : NULL;
    char buf[8192];
    size_t n;
    while (out != NULL && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (out != NULL)
        fclose(out);
    if (in != NULL)
        fclose(in);
}

void hd_proc_free(hd_proc *p)
{
    if (p == NULL)
        return;
    if (p->pid > 0 && check(p, 0)) {
        kill(p->pid, SIGKILL);
        check(p, 1);
    }
    keep_log(p);
    free(p->name);
    free(p->log_path);
    free(p);
}

static int count_line(const char *line, void *ctx)
{
    hd_proc_log_counts *c = ctx;
    c->lines++;
    int warn = strstr(line, "\"level\":\"warn\"") != NULL;
    int error = strstr(line, "\"level\":\"error\"") != NULL;
    if (!warn && !error && line[0] != '{')
        error = 1;
    c->warnings += (size_t)warn;
    c->errors += (size_t)error;
    if ((warn || error) && c->nexamples < HD_PROC_LOG_EXAMPLES)
        snprintf(c->examples[c->nexamples++], sizeof c->examples[0], "%.*s",
                 (int)(strcspn(line, "\n") < 300 ? strcspn(line, "\n") : 300), line);
    return 0; /* every line */
}

int hd_proc_log_scan(const hd_proc *p, hd_proc_log_counts *out, hd_error *err)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (p == NULL || out == NULL || p->log_path == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_proc_log_scan: the process has no log file");
    if (access(p->log_path, R_OK) != 0)
        return hd_error_set(err, HD_EIO, "%s: cannot read its log %s: %s", p->name, p->log_path,
                            strerror(errno));
    each_log_line(p, count_line, out);
    return 0;
}

void hd_proc_dump_log(const hd_proc *p, FILE *to, size_t lines)
{
    if (p == NULL || p->log_path == NULL || lines == 0)
        return;
    if (to == NULL)
        to = stderr;
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL)
        return;
    char **ring = calloc(lines, sizeof *ring);
    size_t n = 0;
    if (ring != NULL && fseeko(f, p->log_from, SEEK_SET) == 0) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            free(ring[n % lines]);
            ring[n % lines] = strdup(line);
            n++;
        }
        free(line);
    }
    fclose(f);
    char why[64];
    fprintf(to, "---- %s (pid %ld, %s): last lines of %s\n", p->name, (long)p->pid,
            hd_proc_exit_text(p, why, sizeof why), p->log_path);
    for (size_t i = n > lines ? n - lines : 0; i < n; i++) {
        const char *s = ring[i % lines] ? ring[i % lines] : "";
        fputs(s, to);
        if (*s && s[strlen(s) - 1] != '\n')
            fputc('\n', to);
    }
    fprintf(to, "----\n");
    if (ring != NULL)
        for (size_t i = 0; i < lines; i++)
            free(ring[i]);
    free(ring);
}
