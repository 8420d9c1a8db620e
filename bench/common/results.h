/* results.h — the head of every benchmark's JSON results (--out), the same keys in the same
 * order for all of them, so that bench/plot.sh and anyone comparing runs read them one way:
 *
 *   {"benchmark": name, "format": 1, "date": ..., "host": {"hostname", "nproc", "kernel",
 *    "machine", "note", "loadavg": [1, 5, 15 min]}, "broker": {"product": "RabbitMQ",
 *    "version"}, "sqlite": version}
 *
 * A benchmark adds its own keys after these. */
#ifndef HERALD_BENCH_RESULTS_H
#define HERALD_BENCH_RESULTS_H

#include <jansson.h>

/* A new object (NULL on allocation failure). Arguments are borrowed (copied). */
json_t *bench_results_new(const char *benchmark, const char *date, const char *broker_version);

/* Writes root to path, indented, in insertion order, 6 significant digits; 0 or -1. root is
 * borrowed. Then "results: PATH (bench/plot.sh PATH draws them)" on stderr, or why not. */
int bench_results_write(const json_t *root, const char *path, const char *prog);

/* {"label": label, "rate_per_s": rate, "min_rate_per_s": min_rate, "max_rate_per_s":
 * max_rate, then the keys of more in their order}: one phase's object in "phases", the first
 * four the keys bench/plot.sh reads. A new object (NULL on allocation failure); label
 * borrowed, more stolen (NULL: nothing more). */
json_t *bench_results_phase(const char *label, double rate, double min_rate, double max_rate,
                            json_t *more);

/* The tail of every benchmark's results: "error" (failure, or null when NULL or empty) and
 * "ok" (ok and no failure), then bench_results_write. root is stolen (freed here, NULL
 * allowed: then -1 as bench_results_write says); failure borrowed. */
int bench_results_finish(json_t *root, const char *failure, int ok, const char *path,
                         const char *prog);

#endif
