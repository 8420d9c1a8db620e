/* stats.h — the statistics the benchmarks report, each with one definition for all of them:
 * the median of repeated runs (mean of the two middle values for an even count) and
 * nearest-rank percentiles of a distribution (latencies). */
#ifndef HERALD_BENCH_STATS_H
#define HERALD_BENCH_STATS_H

#include <stddef.h>

#include <jansson.h>

/* The median of v[0..n) — sorts v in place (so v[0] and v[n-1] are then the min and the max);
 * for an even n the mean of the two middle values; 0 when n is 0. */
double bench_median(double *v, size_t n);

/* The nearest-rank percentile p (0..1) of sorted v[0..n), n > 0: the smallest value with at
 * least p * n values at or below it. */
double bench_rank(const double *v, size_t n, double p);

typedef struct bench_dist {
    size_t n;
    double min, p50, p90, p95, p99, p999, max, mean;
} bench_dist;

/* Nearest-rank percentiles, min, max and mean of v[0..n) (sorted here); all 0 when n is 0. */
bench_dist bench_distribution(double *v, size_t n);

/* {"n", "min", "p50", "p90", "p95", "p99", "p999", "max", "mean"}, or JSON null when n is 0:
 * a new reference. */
json_t *bench_dist_json(const bench_dist *d);

#endif
