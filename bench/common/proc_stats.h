/* proc_stats.h — what the processes of a benchmark cost while it runs: CPU time and peak RSS
 * of any process (read from /proc, Linux), this process's own CPU, the machine's busy share
 * and the kernel's pressure stall information; and bench_span, the timing of one measured
 * phase (wall time, rate, this process's CPU, the machine's busy share) that every bench
 * uses. Linked into each bench/<x>.c (see CMakeLists.txt). */
#ifndef HERALD_BENCH_PROC_STATS_H
#define HERALD_BENCH_PROC_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "herald/error.h"
#include "hd_proc.h"

/* utime + stime of a process (all its threads), in clock ticks (sysconf(_SC_CLK_TCK) a
 * second); -1 when it is gone or pid <= 0. */
long long bench_proc_cpu_ticks(pid_t pid);

/* The value of a "Key:   123 kB" line of /proc/<pid>/status (e.g. "VmHWM", the peak RSS);
 * -1 when absent. */
long bench_proc_status_kb(pid_t pid, const char *key);

/* The process listening on 127.0.0.1:port or *:port (e.g. the broker, to count its CPU): the
 * socket's inode from /proc/net/tcp{,6}, then the process holding it. 0 when not found
 * (another user's process, whose fds we cannot read, or not Linux). Scans every /proc/<pid>/fd:
 * call it once, not in a measured phase. */
pid_t bench_find_listener(int port);

/* "some ... total=<us>" of /proc/pressure/<what> ("cpu", "io"; Linux >= 4.20 with PSI): the
 * microseconds some task waited; -1 when absent. */
long long bench_psi_some_us(const char *what);

/* ---- the CPU of several processes over a phase ----------------------------------------- */

#define BENCH_PROBE_MAX  8
#define BENCH_PROBE_SELF ((pid_t)-1) /* a slot for this process (getrusage: finer than ticks) */

typedef struct bench_probe {
    pid_t pid[BENCH_PROBE_MAX]; /* set by the caller; 0: slot not measured */
    /* running (t0 may be set to 0 after begin for a process started during the phase: all
     * its CPU is then the phase's) */
    long long t0[BENCH_PROBE_MAX];
    double self0;
    unsigned long long busy0, total0;
    int64_t ns0;
    long long psi0[2];
    /* results */
    double
        share[BENCH_PROBE_MAX]; /* CPU over wall: 1.0 = one core busy all the phase; -1 unknown */
    double cpu_s[BENCH_PROBE_MAX]; /* CPU seconds over the phase; -1 unknown */
    double seconds;
    double machine; /* share of all CPUs busy, every process counted, 0..1 */
    double psi[2];  /* share of the time some task waited for a CPU / for I/O; -1 unknown */
} bench_probe;

/* Reads every slot's CPU, the machine's jiffies and the pressure counters. */
void bench_probe_begin(bench_probe *p);
/* Reads them again and fills the results. */
void bench_probe_end(bench_probe *p);

/* {"<keys[i]>": share or null for i < n, "machine_busy", "psi_cpu_some", "psi_io_some"}:
 * a new reference (NULL on allocation failure). keys is borrowed. */
json_t *bench_probe_json(const bench_probe *p, const char *const *keys, int n);

/* ---- one timed phase ---------------------------------------------------------------------- */

/* The figures of one measured phase, in the same definitions for every bench:
 * rate = messages / seconds of wall time (monotonic clock); bench_cpu = this process's CPU
 * seconds over the phase; machine = share of all CPUs busy over the phase. */
typedef struct bench_span {
    int ran; /* the phase reached its end */
    size_t messages;
    double seconds, rate;
    double bench_cpu;
    double machine;
    bench_probe *probe; /* optional, borrowed: also sampled over the phase (other processes) */
    /* running */
    int64_t t0;
    double cpu0;
    unsigned long long busy0, total0;
} bench_span;

/* Starts the clock last (after the probe and the counters are read), so that their cost
 * falls outside the timed part. */
void bench_span_begin(bench_span *s);
/* Stops the clock first, then reads the rest. */
void bench_span_end(bench_span *s, size_t messages);

/* ---- a service under test: start, stop, what it cost ----------------------------------- */

/* A herald service a bench runs. hd_proc (tests/support) does the supervising; this adds the
 * peak RSS sampled from /proc just before SIGTERM (wait4's ru_maxrss also counts what the
 * exit path touches) and what the RSS was made of at that moment: anonymous memory (heap,
 * stacks, arenas: the process's own), file pages (shared libraries, mostly shared with every
 * other process using them), and the thread count (a stack each). */
typedef struct bench_service {
    const char *name; /* borrowed */
    hd_proc *proc;    /* NULL until started; owned: bench_service_free */
    long vmhwm_kb;    /* just before SIGTERM; -1 when not sampled */
    long rss_kb, anon_kb, file_kb, threads;
    hd_proc_usage u; /* wait4 (maxrss_kb, cpu_s) and SIGTERM -> exit (stop_ms), once stopped */
} bench_service;

/* Starts exe in cwd (no ./.env of the caller applies there) with this process's environment
 * less every HD_* setting (a sourced env file, a developer's HD_LOG_LEVEL) plus exactly the
 * settings in env; stdout and stderr to log. It does not wait for readiness (a service with
 * an HTTP port: hd_proc_wait_health(s->proc, ...)). Once started, s is remembered for
 * bench_service_stop_all until it is stopped. name, exe, env, cwd and log are borrowed (name
 * must outlive s). 0, or hd_proc_start's code. */
int bench_service_start(bench_service *s, const char *name, const char *exe, const char *const *env,
                        const char *cwd, const char *log, hd_error *err);

/* Samples the peak RSS and its make-up (when it still runs), then SIGTERM and wait (SIGKILL
 * after timeout_ms) and reads its usage. 0 when it exited 0, else hd_proc_stop's code
 * (HD_ETIMEOUT: it needed the SIGKILL); HD_EINVAL when never started. */
int bench_service_stop(bench_service *s, int timeout_ms, hd_error *err);

/* Stops every service started and not stopped yet, the last started first: a signal
 * handler's clean-up (the services, in the same process group, got the signal too). */
void bench_service_stop_all(int timeout_ms);

/* hd_proc_free (SIGKILL when still running); s->proc becomes NULL. */
void bench_service_free(bench_service *s);

#endif
