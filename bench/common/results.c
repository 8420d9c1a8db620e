/* results.c — see results.h. */
#include "results.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <sqlite3.h>

json_t *bench_results_new(const char *benchmark, const char *date, const char *broker_version)
{
    struct utsname un;
    memset(&un, 0, sizeof un);
    uname(&un);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0)
        load[0] = load[1] = load[2] = 0;
    return json_pack("{s:s, s:i, s:s, s:{s:s, s:i, s:s, s:s, s:s, s:[f,f,f]}, s:{s:s, s:s}, s:s}",
                     "benchmark", benchmark, "format", 1, "date", date, "host", "hostname", host,
                     "nproc", (int)sysconf(_SC_NPROCESSORS_ONLN), "kernel", un.release, "machine",
                     un.machine, "note",
                     "wall-clock rates; the machine may have been shared with other work",
                     "loadavg", load[0], load[1], load[2], "broker", "product", "RabbitMQ",
                     "version", broker_version, "sqlite", sqlite3_libversion());
}

int bench_results_write(const json_t *root, const char *path, const char *prog)
{
    int rc = root == NULL
                 ? -1
                 : json_dump_file(root, path,
                                  JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (rc < 0)
        fprintf(stderr, "%s: cannot write %s\n", prog, path);
    else
        fprintf(stderr, "results: %s (bench/plot.sh %s draws them)\n", path, path);
    return rc;
}

json_t *bench_results_phase(const char *label, double rate, double min_rate, double max_rate,
                            json_t *more)
{
    json_t *o = json_pack("{s:s, s:f, s:f, s:f}", "label", label, "rate_per_s", rate,
                          "min_rate_per_s", min_rate, "max_rate_per_s", max_rate);
    /* jansson (>= 2.8) iterates an object in insertion order: more's keys follow in its. */
    if (o != NULL && more != NULL && json_object_update(o, more) < 0) {
        json_decref(o);
        o = NULL;
    }
    json_decref(more);
    return o;
}

int bench_results_finish(json_t *root, const char *failure, int ok, const char *path,
                         const char *prog)
{
    int failed = failure != NULL && *failure;
    json_object_set_new(root, "error", failed ? json_string(failure) : json_null());
    json_object_set_new(root, "ok", json_boolean(ok && !failed));
    int rc = bench_results_write(root, path, prog);
    json_decref(root);
    return rc;
}
