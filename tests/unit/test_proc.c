/* Unit tests for tests/support/hd_proc.h, the child-process supervisor, on /bin/sh: start
 * with a changed environment, readiness by log line and by HTTP /health (a tiny server in a
 * thread of this test), exit status, SIGTERM with a timeout then SIGKILL, kill -9, the log
 * of this start only (its last lines, its warnings and errors), and the errors of a start
 * that cannot happen. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_proc.h"
#include "hd_test.h"
#include "herald/clock.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = hd_test_tmpdir("proc");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hd_test_rmtree(dir);
    free(dir);
    return 0;
}

/* dir/<name>, into a static buffer of the caller's. */
static const char *in_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

/* Start `sh -c script` logging to dir/<log>. */
static hd_proc *sh(const char *script, const char *const *env, const char *log)
{
    char path[600];
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    hd_proc_options o = {.argv = argv, .env = env, .log_path = in_dir(path, sizeof path, log)};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    assert_non_null(p);
    assert_true(hd_proc_pid(p) > 0);
    assert_string_equal(hd_proc_name(p), "sh");
    assert_string_equal(hd_proc_log_path(p), path);
    return p;
}

/* The whole of dir/<log> (new string). */
static char *slurp(const char *log)
{
    char path[600];
    FILE *f = fopen(in_dir(path, sizeof path, log), "r");
    assert_non_null(f);
    char *s = calloc(1, 65536);
    size_t n = fread(s, 1, 65535, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void exit_status_and_text(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("exit 3", NULL, "exit.log");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    assert_false(hd_proc_running(p));
    assert_int_equal(hd_proc_exit_code(p), 3);
    assert_int_equal(hd_proc_term_signal(p), 0);
    char why[64];
    assert_string_equal(hd_proc_exit_text(p, why, sizeof why), "exit 3");
    hd_proc_usage u;
    hd_proc_usage_get(p, &u);
    assert_true(u.maxrss_kb > 0);
    assert_true(u.cpu_s >= 0);
    assert_int_equal(u.stop_ms, -1); /* not stopped by hd_proc_stop */
    /* Stopping what has exited non-zero says so; a signal to it is refused. */
    assert_hd_err(HD_ESTATE, hd_proc_stop(p, 1000, &err), &err);
    assert_non_null(strstr(err.text, "exit 3"));
    assert_hd(HD_ESTATE, hd_proc_signal(p, SIGTERM, NULL));
    assert_hd(HD_ESTATE, hd_proc_kill(p, NULL));
    hd_proc_free(p);

    p = sh("exit 0", NULL, "exit.log");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    assert_hd_err(0, hd_proc_stop(p, 1000, &err), &err); /* exited 0 already: fine */
    hd_proc_free(p);
}

static void environment_changes_and_drop_prefix(void **state)
{
    (void)state;
    setenv("HDPT_KEEP", "kept", 1);
    setenv("HDPT_GONE", "still here", 1);
    setenv("HDPT_OVER", "old", 1);
    setenv("HDDROP_X", "dropped?", 1);
    const char *env[] = {"HDPT_GONE", "HDPT_OVER=new", "HDPT_NEW=a=b", NULL};
    char path[600];
    const char *argv[] = {"/bin/sh", "-c",
                          "echo \"[$HDPT_KEEP|${HDPT_GONE-unset}|$HDPT_OVER|$HDPT_NEW|"
                          "${HDDROP_X-unset}|$(pwd)]\"",
                          NULL};
    hd_proc_options o = {.argv = argv,
                         .env = env,
                         .env_drop_prefix = "HDDROP_",
                         .cwd = "/",
                         .log_path = in_dir(path, sizeof path, "env.log"),
                         .name = "printer"};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    assert_string_equal(hd_proc_name(p), "printer");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    assert_int_equal(hd_proc_exit_code(p), 0);
    char *out = slurp("env.log");
    assert_string_equal(out, "[kept|unset|new|a=b|unset|/]\n");
    free(out);
    hd_proc_free(p);
    /* The caller's environment is untouched. */
    assert_string_equal(getenv("HDPT_GONE"), "still here");
    assert_string_equal(getenv("HDDROP_X"), "dropped?");
}

static void descriptors_are_not_inherited(void **state)
{
    (void)state;
    char path[600];
    int fd = open(in_dir(path, sizeof path, "held"), O_WRONLY | O_CREAT, 0600); /* no CLOEXEC */
    assert_true(fd > 2);
    char script[128];
    snprintf(script, sizeof script,
             "if [ -e /proc/self/fd/%d ]; then echo leaked; else echo "
             "closed; fi; read x && echo stdin-had-data || echo stdin-empty",
             fd);
    hd_proc *p = sh(script, NULL, "fd.log");
    hd_error err;
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    char *out = slurp("fd.log");
    assert_string_equal(out, "closed\nstdin-empty\n");
    free(out);
    hd_proc_free(p);
    close(fd);
}

static void wait_log_sees_only_this_start(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("echo first run ready", NULL, "twice.log");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    hd_proc_free(p);

    /* Same log file: the old "ready" line is not this child's. */
    p = sh("sleep 0.2; echo second run up; exec sleep 30", NULL, "twice.log");
    assert_hd_err(HD_ETIMEOUT, hd_proc_wait_log(p, "first run ready", 100, &err), &err);
    assert_non_null(strstr(err.text, "first run ready"));
    assert_hd_err(0, hd_proc_wait_log(p, "second run up", 5000, &err), &err);
    assert_true(hd_proc_running(p));

    /* The dump shows this start's last lines only, framed. */
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    hd_proc_dump_log(p, m, 5);
    fclose(m);
    assert_non_null(strstr(text, "second run up\n"));
    assert_null(strstr(text, "first run"));
    assert_non_null(strstr(text, "(pid "));
    assert_non_null(strstr(text, "running"));
    free(text);

    /* free kills what still runs. */
    pid_t pid = hd_proc_pid(p);
    hd_proc_free(p);
    assert_int_equal(kill(pid, 0), -1);
}

static void log_scan_counts_warnings_and_errors(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p =
        sh("echo '{\"level\":\"error\",\"message\":\"an earlier run\"}'", NULL, "scan.log");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    hd_proc_free(p);

    /* Same log: only this start's lines count. A line that is not JSON is an error; a long
     * one is cut at 300 bytes; only the first examples are kept. */
    p = sh("echo '{\"level\":\"info\",\"message\":\"listening\"}';"
           "echo '{\"level\":\"warn\",\"message\":\"slow\"}';"
           "echo 'Segmentation fault';"
           "printf '{\"level\":\"error\",\"message\":\"%0400d\"}\\n' 7;"
           "echo '{\"level\":\"warn\",\"message\":\"fourth\"}'",
           NULL, "scan.log");
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    hd_proc_log_counts c;
    assert_hd_err(0, hd_proc_log_scan(p, &c, &err), &err);
    assert_int_equal(c.lines, 5);
    assert_int_equal(c.warnings, 2);
    assert_int_equal(c.errors, 2);
    assert_int_equal(c.nexamples, HD_PROC_LOG_EXAMPLES);
    assert_string_equal(c.examples[0], "{\"level\":\"warn\",\"message\":\"slow\"}");
    assert_string_equal(c.examples[1], "Segmentation fault");
    assert_int_equal(strlen(c.examples[2]), 300);
    assert_null(strstr(c.examples[2], "\n"));
    hd_proc_free(p);

    /* Without a log file there is nothing to scan. */
    const char *argv[] = {"/bin/true", NULL};
    hd_proc_options o = {.argv = argv};
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    assert_hd_err(HD_EINVAL, hd_proc_log_scan(p, &c, &err), &err);
    assert_int_equal(c.lines, 0);
    hd_proc_free(p);
}

static void dump_log_keeps_the_last_lines(void **state)
{
    (void)state;
    hd_proc *p = sh("for i in 1 2 3 4 5 6 7; do echo line$i; done; exit 1", NULL, "dump.log");
    hd_error err;
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    hd_proc_dump_log(p, m, 3);
    fclose(m);
    assert_null(strstr(text, "line4"));
    assert_non_null(strstr(text, "line5\nline6\nline7\n----\n"));
    assert_non_null(strstr(text, "exit 1"));
    free(text);
    hd_proc_free(p);
}

static void exit_while_starting_and_timeout(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("echo dying; exit 2", NULL, "early.log");
    assert_hd_err(HD_ESTATE, hd_proc_wait_log(p, "never said", 5000, &err), &err);
    assert_non_null(strstr(err.text, "exited while starting (exit 2)"));
    assert_non_null(strstr(err.text, "early.log"));
    hd_proc_free(p);

    p = sh("exec sleep 30", NULL, "slow.log");
    int64_t t0 = hd_clock_ms();
    assert_hd_err(HD_ETIMEOUT, hd_proc_wait_log(p, "never said", 150, &err), &err);
    assert_true(hd_clock_ms() - t0 >= 150);
    assert_hd_err(HD_ETIMEOUT, hd_proc_wait(p, 50, &err), &err);
    assert_true(hd_proc_running(p));
    hd_proc_free(p);
}

static void stop_clean_exit(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("trap 'echo bye; exit 0' TERM; echo armed; while :; do sleep 0.02; done", NULL,
                    "term.log");
    assert_hd_err(0, hd_proc_wait_log(p, "armed", 5000, &err), &err);
    assert_hd_err(0, hd_proc_stop(p, 5000, &err), &err);
    assert_int_equal(hd_proc_exit_code(p), 0);
    hd_proc_usage u;
    hd_proc_usage_get(p, &u);
    assert_true(u.stop_ms >= 0 && u.stop_ms < 5000);
    hd_proc_free(p);

    /* Ended by the SIGTERM itself (no handler): stopped, but not a clean exit. */
    p = sh("echo armed; exec sleep 30", NULL, "term.log");
    assert_hd_err(0, hd_proc_wait_log(p, "armed", 5000, &err), &err);
    assert_hd_err(HD_ESTATE, hd_proc_stop(p, 5000, &err), &err);
    assert_non_null(strstr(err.text, "killed by signal 15"));
    assert_int_equal(hd_proc_term_signal(p), SIGTERM);
    assert_int_equal(hd_proc_exit_code(p), -1);
    hd_proc_free(p);
}

static void stop_escalates_to_sigkill(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("trap '' TERM; echo armed; while :; do sleep 0.02; done", NULL, "stubborn.log");
    assert_hd_err(0, hd_proc_wait_log(p, "armed", 5000, &err), &err);
    int64_t t0 = hd_clock_ms();
    assert_hd_err(HD_ETIMEOUT, hd_proc_stop(p, 200, &err), &err);
    int64_t took = hd_clock_ms() - t0;
    assert_true(took >= 200 && took < 5000);
    assert_false(hd_proc_running(p));
    assert_int_equal(hd_proc_term_signal(p), SIGKILL);
    assert_non_null(strstr(err.text, "after SIGTERM"));
    hd_proc_free(p);
}

static void kill_is_kill_9(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = sh("trap '' TERM; echo armed; exec sleep 30", NULL, "kill.log");
    assert_hd_err(0, hd_proc_wait_log(p, "armed", 5000, &err), &err);
    assert_hd_err(0, hd_proc_kill(p, &err), &err);
    assert_false(hd_proc_running(p));
    assert_int_equal(hd_proc_term_signal(p), SIGKILL);
    char why[64];
    assert_string_equal(hd_proc_exit_text(p, why, sizeof why), "killed by signal 9");
    assert_hd(HD_ESTATE, hd_proc_kill(p, NULL)); /* once */
    hd_proc_free(p);

    /* A signal without waiting, then the wait. */
    p = sh("exec sleep 30", NULL, "kill.log");
    assert_hd_err(0, hd_proc_signal(p, SIGKILL, &err), &err);
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    assert_int_equal(hd_proc_term_signal(p), SIGKILL);
    hd_proc_free(p);
}

static void start_failures_are_codes(void **state)
{
    (void)state;
    hd_error err;
    hd_proc *p = (hd_proc *)&err; /* must be reset to NULL */
    char path[600];
    const char *missing[] = {"/nonexistent/herald-nothing", NULL};
    hd_proc_options o = {.argv = missing, .log_path = in_dir(path, sizeof path, "missing.log")};
    assert_hd_err(HD_ENOTFOUND, hd_proc_start(&o, &p, &err), &err);
    assert_null(p);
    assert_non_null(strstr(err.text, "/nonexistent/herald-nothing"));

    const char *argv[] = {"/bin/true", NULL};
    hd_proc_options bad_cwd = {.argv = argv, .cwd = "/nonexistent-dir"};
    assert_hd_err(HD_EIO, hd_proc_start(&bad_cwd, &p, &err), &err);
    assert_null(p);
    assert_non_null(strstr(err.text, "/nonexistent-dir"));

    hd_proc_options bad_log = {.argv = argv, .log_path = "/nonexistent-dir/x.log"};
    assert_hd_err(HD_EIO, hd_proc_start(&bad_log, &p, &err), &err);
    assert_null(p);

    const char *empty[] = {NULL};
    hd_proc_options no_argv = {.argv = empty};
    assert_hd(HD_EINVAL, hd_proc_start(&no_argv, &p, NULL));
    assert_hd(HD_EINVAL, hd_proc_start(NULL, &p, NULL));

    /* Output inherited: no log, so no log-based readiness. */
    hd_proc_options inherit = {.argv = argv};
    assert_hd_err(0, hd_proc_start(&inherit, &p, &err), &err);
    assert_null(hd_proc_log_path(p));
    assert_hd(HD_EINVAL, hd_proc_wait_log(p, "x", 10, NULL));
    assert_hd(HD_EINVAL, hd_proc_wait_health(p, 10, NULL));
    assert_hd_err(0, hd_proc_wait(p, 5000, &err), &err);
    assert_int_equal(hd_proc_exit_code(p), 0);
    hd_proc_free(p);
    hd_proc_free(NULL);
}

/* ---- a tiny HTTP server: 200 on /health once `healthy`, 503 before, 404 elsewhere ------ */

typedef struct server {
    int fd, port;
    atomic_int healthy, stop;
    pthread_t thread;
} server;

static void *serve(void *arg)
{
    server *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char req[512] = "";
        ssize_t n = recv(c, req, sizeof req - 1, 0);
        const char *reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        if (n > 0 && strncmp(req, "GET /health ", 12) == 0)
            reply = atomic_load(&s->healthy)
                        ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        : "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        ssize_t w = send(c, reply, strlen(reply), MSG_NOSIGNAL);
        (void)w;
        close(c);
    }
    return NULL;
}

static void server_start(server *s)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 50000}; /* accept wakes up to see stop */
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static void http_status_and_health(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", s.port);
    assert_int_equal(hd_proc_http_status(url, 2000), 503);
    snprintf(url, sizeof url, "http://localhost:%d/other", s.port);
    assert_int_equal(hd_proc_http_status(url, 2000), 404);
    assert_hd(HD_EURL, hd_proc_http_status("https://127.0.0.1/health", 100));
    assert_hd(HD_EURL, hd_proc_http_status("http://", 100));

    /* A "service" that logs where it listens the way herald's do; the port is this test's
     * server, which answers 503 until it is told to be healthy. */
    char script[256];
    snprintf(script, sizeof script,
             "echo '{\"level\":\"info\",\"message\":\"listening\",\"port\":\"%d\"}'; exec sleep 30",
             s.port);
    hd_proc *p = sh(script, NULL, "health.log");
    hd_error err;
    assert_hd_err(HD_ETIMEOUT, hd_proc_wait_health(p, 200, &err), &err);
    assert_non_null(strstr(err.text, "/health did not answer 200"));
    assert_int_equal(hd_proc_port(p), s.port);
    atomic_store(&s.healthy, 1);
    assert_hd_err(0, hd_proc_wait_health(p, 5000, &err), &err);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", s.port);
    assert_hd_err(0, hd_proc_wait_http(p, url, 5000, &err), &err);
    hd_proc_free(p);

    /* No listening line: says so. */
    p = sh("exec sleep 30", NULL, "quiet.log");
    assert_hd_err(HD_ETIMEOUT, hd_proc_wait_health(p, 100, &err), &err);
    assert_non_null(strstr(err.text, "no \"listening\" line"));
    assert_int_equal(hd_proc_port(p), 0);
    hd_proc_free(p);
    server_stop(&s);

    /* Nobody listens any more. */
    assert_true(hd_proc_http_status(url, 500) < 0);
}

static int never_ready(hd_proc *p, void *ctx, hd_error *err)
{
    (void)p;
    int *calls = ctx;
    return ++*calls == 3 ? hd_error_set(err, HD_EPROTO, "gave up on call 3") : 0;
}

static void custom_readiness(void **state)
{
    (void)state;
    hd_proc *p = sh("exec sleep 30", NULL, "custom.log");
    int calls = 0;
    hd_error err;
    assert_hd_err(HD_EPROTO, hd_proc_wait_ready(p, never_ready, &calls, 5000, &err), &err);
    assert_int_equal(calls, 3);
    assert_string_equal(err.text, "gave up on call 3");
    hd_proc_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_status_and_text),
        cmocka_unit_test(environment_changes_and_drop_prefix),
        cmocka_unit_test(descriptors_are_not_inherited),
        cmocka_unit_test(wait_log_sees_only_this_start),
        cmocka_unit_test(log_scan_counts_warnings_and_errors),
        cmocka_unit_test(dump_log_keeps_the_last_lines),
        cmocka_unit_test(exit_while_starting_and_timeout),
        cmocka_unit_test(stop_clean_exit),
        cmocka_unit_test(stop_escalates_to_sigkill),
        cmocka_unit_test(kill_is_kill_9),
        cmocka_unit_test(start_failures_are_codes),
        cmocka_unit_test(http_status_and_health),
        cmocka_unit_test(custom_readiness),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
