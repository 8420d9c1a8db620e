/* hd_proc.h — one supervisor for the child processes of tests, tutorials and benchmarks.
 *
 * Every program that runs a herald binary does the same five things: start it with a few
 * settings changed, wait until it is ready (its HTTP /health answers, or its log says so),
 * watch that it is still alive, stop it (SIGTERM, then SIGKILL after a timeout) or kill it
 * (the crash tests), and show its log when something went wrong. This module does them
 * once, with herald's error convention: negative HD_E* codes and an hd_error that says why
 * (err may be NULL everywhere). It never exits, aborts or prints, except hd_proc_dump_log.
 *
 *     const char *argv[] = {HD_BINARY_DIR "/herald-relay", "--drain", NULL};
 *     const char *env[] = {"HD_DATABASE_URL=sqlite:///tmp/x.db", "HD_LOG_LEVEL", NULL};
 *     hd_proc_options o = {.argv = argv, .env = env, .log_path = "/tmp/relay.log"};
 *     hd_proc *p = NULL;
 *     if (hd_proc_start(&o, &p, &err) < 0 || hd_proc_wait_log(p, "relay started", 20000,
 *                                                            &err) < 0) { ... }
 *     rc = hd_proc_stop(p, 20000, &err);  // 0: it exited 0 after SIGTERM
 *     hd_proc_free(p);
 *
 * It lives in its own small static library (hd_proc: herald and libc only, no cmocka), so
 * that tutorial chapters and benchmarks link it as well as the tests.
 *
 * Known limits: one thread drives a given hd_proc. Children are reaped with waitpid on their
 * own pid, so a program that also reaps with waitpid(-1) or ignores SIGCHLD will take the
 * exit status away from it (hd_proc then reports the child as gone with status unknown).
 * The HTTP check speaks plain HTTP/1.1 to an IPv4 or IPv6 literal or a host name, no TLS.
 * The child closes the caller's descriptors up to 65,536 (sysconf's limit when lower); one
 * above that survives unless it was opened with O_CLOEXEC.
 */
#ifndef HD_PROC_H
#define HD_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "herald/error.h"

typedef struct hd_proc hd_proc;

typedef struct hd_proc_options {
    /* NULL-terminated; argv[0] is the path executed (no PATH search). Borrowed: copied by
     * hd_proc_start. */
    const char *const *argv;
    /* Changes to the inherited environment, NULL-terminated, applied in order: "NAME=value"
     * sets NAME, "NAME" (no '=') removes it. NULL: no change. Borrowed. */
    const char *const *env;
    /* Inherited variables whose name starts with this are dropped before `env` applies
     * (e.g. "HD_": the child gets exactly the herald settings listed, none of a sourced env
     * file's). NULL: keep all. Borrowed. */
    const char *env_drop_prefix;
    /* Working directory of the child (a service reads ./.env there). NULL: the caller's. */
    const char *cwd;
    /* stdout and stderr are appended to this file (created 0644). NULL: inherited. The
     * readiness checks and hd_proc_dump_log read only what was written after the start. */
    const char *log_path;
    /* For messages ("herald-relay"); NULL: the last component of argv[0]. Borrowed. */
    const char *name;
} hd_proc_options;

/* fork + execve. stdin is /dev/null; every other descriptor of the caller is closed in the
 * child (the caller's databases and sockets stay with the caller). Returns 0 and *out (new,
 * free with hd_proc_free) once the program runs; HD_ENOTFOUND when argv[0] cannot be
 * executed, HD_EIO when the log or the working directory cannot be opened (the child's own
 * errno in err->text), HD_EINVAL on bad options, HD_ENOMEM. */
int hd_proc_start(const hd_proc_options *o, hd_proc **out, hd_error *err);

/* SIGKILL (when still running) and reap, then free. NULL is a no-op. */
void hd_proc_free(hd_proc *p);

/* Borrowed facts. pid stays valid after the exit (for messages); name and log path as given. */
pid_t hd_proc_pid(const hd_proc *p);
const char *hd_proc_name(const hd_proc *p);
const char *hd_proc_log_path(const hd_proc *p); /* NULL when the output was inherited */

/* 1 while it runs, 0 once it has exited (it is reaped here, without blocking). */
int hd_proc_running(hd_proc *p);

/* ---- readiness: each polls until ready, the child exits, or timeout_ms passes ---------------
 * 0 when ready; HD_ESTATE when the child exited first (err: "herald-x exited while starting
 * (exit 1); see <log>"); HD_ETIMEOUT. */

/* A line containing `needle` was written to the log since the start (needs a log_path). */
int hd_proc_wait_log(hd_proc *p, const char *needle, int timeout_ms, hd_error *err);

/* GET url (http://host:port/path) answers 200. */
int hd_proc_wait_http(hd_proc *p, const char *url, int timeout_ms, hd_error *err);

/* A herald service: its log's "listening" line gives the port (the service may bind port
 * 0), then GET http://127.0.0.1:<port>/health answers 200. hd_proc_port tells the port. */
int hd_proc_wait_health(hd_proc *p, int timeout_ms, hd_error *err);
int hd_proc_port(const hd_proc *p); /* 0 until hd_proc_wait_health found it */

/* Anything else: ready(p, ctx) returns 1 when ready, 0 not yet, < 0 to give up (that code
 * is returned; the callback may fill err). Polled every 20 ms. */
typedef int (*hd_proc_ready_fn)(hd_proc *p, void *ctx, hd_error *err);
int hd_proc_wait_ready(hd_proc *p, hd_proc_ready_fn ready, void *ctx, int timeout_ms,
                       hd_error *err);

/* GET url once; the HTTP status, or < 0 (HD_EURL, HD_ECONNECT, HD_EPROTO) when no answer
 * came within timeout_ms. No redirects, no TLS. */
int hd_proc_http_status(const char *url, int timeout_ms);

/* ---- ending ---------------------------------------------------------------------------- */

/* Wait up to timeout_ms for it to exit on its own (--drain, after a signal); 0 once it has
 * exited (see hd_proc_exit_code / hd_proc_term_signal), HD_ETIMEOUT while it still runs. */
int hd_proc_wait(hd_proc *p, int timeout_ms, hd_error *err);

/* SIGTERM, wait up to timeout_ms, then SIGKILL and reap. 0 when it exited with status 0
 * (also when it had already exited 0); HD_ETIMEOUT when it needed the SIGKILL; HD_ESTATE
 * when it exited non-zero or died of a signal (err tells which). It has exited either way. */
int hd_proc_stop(hd_proc *p, int timeout_ms, hd_error *err);

/* Send sig (SIGKILL for a crash test, SIGTERM, SIGSTOP...) and return at once. 0, or
 * HD_ESTATE when it has already exited. */
int hd_proc_signal(hd_proc *p, int sig, hd_error *err);

/* SIGKILL and reap (blocks until it is gone): a crash test's kill -9, or a failure path.
 * 0, or HD_ESTATE when it had already exited (then nothing is sent). */
int hd_proc_kill(hd_proc *p, hd_error *err);

/* After the exit: the exit code (>= 0), or -1 while running / when it died of a signal. */
int hd_proc_exit_code(const hd_proc *p);
/* The signal that ended it, 0 when it exited or runs. */
int hd_proc_term_signal(const hd_proc *p);
/* "running", "exit 3", "killed by signal 9" into buf; returns buf. */
const char *hd_proc_exit_text(const hd_proc *p, char *buf, size_t cap);

/* What the kernel counted for the whole life of the child (wait4), once it has exited:
 * peak resident set in kB and CPU time (user + system) in seconds, -1 before. stop_ms is
 * SIGTERM -> exit of hd_proc_stop, -1 when it was not stopped that way. */
typedef struct hd_proc_usage {
    long maxrss_kb;
    double cpu_s;
    int64_t stop_ms;
} hd_proc_usage;
void hd_proc_usage_get(const hd_proc *p, hd_proc_usage *out);

/* Warnings and errors in the child's log since the start (needs a log_path). A herald
 * service writes one JSON object a line: "level":"warn" counts as a warning, "level":"error"
 * as an error, and so does a line that is not JSON (a crash message, a sanitizer report).
 * The first HD_PROC_LOG_EXAMPLES warning or error lines are kept, without their newline,
 * cut at 300 bytes. */
#define HD_PROC_LOG_EXAMPLES 3
typedef struct hd_proc_log_counts {
    size_t lines, warnings, errors;
    size_t nexamples;
    char examples[HD_PROC_LOG_EXAMPLES][320];
} hd_proc_log_counts;
/* Fills *out (zeros first). 0; HD_EINVAL without a log file; HD_EIO when it cannot be read
 * (out then counts nothing). */
int hd_proc_log_scan(const hd_proc *p, hd_proc_log_counts *out, hd_error *err);

/* The last `lines` lines the child wrote to its log since the start, to `to` (stderr when
 * NULL), framed by "---- <name> (pid N, <exit text>): last lines of <log>" and "----". For
 * failure paths; prints nothing without a log file. */
void hd_proc_dump_log(const hd_proc *p, FILE *to, size_t lines);

#endif
