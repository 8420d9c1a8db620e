/* proc_stats.c — see proc_stats.h. */
#include "proc_stats.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "herald/clock.h"

long long bench_proc_cpu_ticks(pid_t pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL)
        return -1;
    /* After ") ": state (field 3) ... utime is field 14, stime 15. */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    return (long long)(ut + st);
}

long bench_proc_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

pid_t bench_find_listener(int port)
{
    unsigned long inode = 0;
    static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t t = 0; t < 2 && inode == 0; t++) {
        FILE *f = fopen(tables[t], "r");
        if (f == NULL)
            continue;
        char line[512];
        while (fgets(line, sizeof line, f) != NULL) {
            char local[128], remote[128];
            unsigned st;
            unsigned long ino;
            if (sscanf(line, " %*d: %127s %127s %x %*s %*s %*s %*s %*s %lu", local, remote, &st,
                       &ino) != 4)
                continue;
            const char *colon = strrchr(local, ':');
            if (st == 0x0A && colon != NULL && strtol(colon + 1, NULL, 16) == port) {
                inode = ino;
                break;
            }
        }
        fclose(f);
    }
    if (inode == 0)
        return 0;
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *proc = opendir("/proc");
    if (proc == NULL)
        return 0;
    pid_t found = 0;
    struct dirent *de;
    while (found == 0 && (de = readdir(proc)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char fddir[300];
        snprintf(fddir, sizeof fddir, "/proc/%s/fd", de->d_name);
        DIR *fds = opendir(fddir);
        if (fds == NULL)
            continue;
        struct dirent *fe;
        while ((fe = readdir(fds)) != NULL) {
            char link[600], target[128];
            snprintf(link, sizeof link, "%s/%s", fddir, fe->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0)
                continue;
            target[n] = '\0';
            if (strcmp(target, want) == 0) {
                found = (pid_t)strtol(de->d_name, NULL, 10);
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

long long bench_psi_some_us(const char *what)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/pressure/%s", what);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long long v = -1;
    if (fgets(line, sizeof line, f) != NULL && strncmp(line, "some", 4) == 0) {
        const char *t = strstr(line, "total=");
        if (t != NULL)
            v = strtoll(t + 6, NULL, 10);
    }
    fclose(f);
    return v;
}

static const char *const psi_names[2] = {"cpu", "io"};

/* The machine's busy share between two readings of bench_machine_jiffies; 0 when unknown. */
static double busy_share(unsigned long long busy0, unsigned long long total0)
{
    unsigned long long busy, total;
    bench_machine_jiffies(&busy, &total);
    return total > total0 ? (double)(busy - busy0) / (double)(total - total0) : 0.0;
}

void bench_probe_begin(bench_probe *p)
{
    for (int i = 0; i < BENCH_PROBE_MAX; i++)
        p->t0[i] = p->pid[i] > 0 ? bench_proc_cpu_ticks(p->pid[i]) : -1;
    p->self0 = bench_cpu_seconds();
    bench_machine_jiffies(&p->busy0, &p->total0);
    for (int k = 0; k < 2; k++)
        p->psi0[k] = bench_psi_some_us(psi_names[k]);
    p->ns0 = hd_clock_ns();
}

void bench_probe_end(bench_probe *p)
{
    double secs = (double)(hd_clock_ns() - p->ns0) / 1e9;
    double hz = (double)sysconf(_SC_CLK_TCK);
    p->seconds = secs;
    for (int i = 0; i < BENCH_PROBE_MAX; i++) {
        p->share[i] = p->cpu_s[i] = -1;
        if (p->pid[i] == BENCH_PROBE_SELF) {
            p->cpu_s[i] = bench_cpu_seconds() - p->self0;
        } else {
            long long t1 = p->pid[i] > 0 ? bench_proc_cpu_ticks(p->pid[i]) : -1;
            if (p->t0[i] >= 0 && t1 >= p->t0[i])
                p->cpu_s[i] = (double)(t1 - p->t0[i]) / hz;
        }
        if (p->cpu_s[i] >= 0 && secs > 0)
            p->share[i] = p->cpu_s[i] / secs;
    }
    for (int k = 0; k < 2; k++) {
        long long v = bench_psi_some_us(psi_names[k]);
        p->psi[k] =
            v >= 0 && p->psi0[k] >= 0 && secs > 0 ? (double)(v - p->psi0[k]) / 1e6 / secs : -1;
    }
    p->machine = busy_share(p->busy0, p->total0);
}

json_t *bench_probe_json(const bench_probe *p, const char *const *keys, int n)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (int i = 0; i < n && i < BENCH_PROBE_MAX; i++)
        json_object_set_new(o, keys[i], p->share[i] >= 0 ? json_real(p->share[i]) : json_null());
    json_object_set_new(o, "machine_busy", json_real(p->machine));
    for (int k = 0; k < 2; k++) {
        char key[32];
        snprintf(key, sizeof key, "psi_%s_some", psi_names[k]);
        json_object_set_new(o, key, p->psi[k] >= 0 ? json_real(p->psi[k]) : json_null());
    }
    return o;
}

void bench_span_begin(bench_span *s)
{
    if (s->probe != NULL)
        bench_probe_begin(s->probe);
    bench_machine_jiffies(&s->busy0, &s->total0);
    s->cpu0 = bench_cpu_seconds();
    s->t0 = hd_clock_ns();
}

void bench_span_end(bench_span *s, size_t messages)
{
    int64_t t1 = hd_clock_ns();
    if (s->probe != NULL)
        bench_probe_end(s->probe);
    s->bench_cpu = bench_cpu_seconds() - s->cpu0;
    s->machine = busy_share(s->busy0, s->total0);
    s->messages = messages;
    s->seconds = (double)(t1 - s->t0) / 1e9;
    s->rate = s->seconds > 0 ? (double)messages / s->seconds : 0.0;
    s->ran = 1;
}

/* ---- a service under test ------------------------------------------------------------- */

#define MAX_SERVICES 8

/* The services started and not stopped, for bench_service_stop_all (a signal handler). */
static bench_service *running[MAX_SERVICES];

int bench_service_start(bench_service *s, const char *name, const char *exe, const char *const *env,
                        const char *cwd, const char *log, hd_error *err)
{
    const char *argv[] = {exe, NULL};
    hd_proc_options o = {.argv = argv,
                         .env = env,
                         .env_drop_prefix = "HD_",
                         .cwd = cwd,
                         .log_path = log,
                         .name = name};
    s->name = name;
    s->proc = NULL;
    s->vmhwm_kb = s->rss_kb = s->anon_kb = s->file_kb = s->threads = -1;
    hd_proc_usage_get(NULL, &s->u);
    int rc = hd_proc_start(&o, &s->proc, err);
    if (rc < 0)
        return rc;
    for (int i = 0; i < MAX_SERVICES; i++)
        if (running[i] == NULL) {
            running[i] = s;
            break;
        }
    return 0;
}

int bench_service_stop(bench_service *s, int timeout_ms, hd_error *err)
{
    for (int i = 0; i < MAX_SERVICES; i++)
        if (running[i] == s)
            running[i] = NULL;
    if (s->proc == NULL)
        return hd_error_set(err, HD_EINVAL, "not started");
    if (hd_proc_running(s->proc)) {
        pid_t pid = hd_proc_pid(s->proc);
        s->vmhwm_kb = bench_proc_status_kb(pid, "VmHWM");
        s->rss_kb = bench_proc_status_kb(pid, "VmRSS");
        s->anon_kb = bench_proc_status_kb(pid, "RssAnon");
        s->file_kb = bench_proc_status_kb(pid, "RssFile");
        s->threads = bench_proc_status_kb(pid, "Threads");
    }
    int rc = hd_proc_stop(s->proc, timeout_ms, err);
    hd_proc_usage_get(s->proc, &s->u);
    return rc;
}

void bench_service_stop_all(int timeout_ms)
{
    for (int i = MAX_SERVICES - 1; i >= 0; i--)
        if (running[i] != NULL)
            bench_service_stop(running[i], timeout_ms, NULL);
}

void bench_service_free(bench_service *s)
{
    hd_proc_free(s->proc);
    s->proc = NULL;
}
