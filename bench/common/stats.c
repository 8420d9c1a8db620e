/* stats.c — see stats.h. */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0.0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

double bench_rank(const double *v, size_t n, double p)
{
    size_t k = (size_t)(p * (double)n);
    if ((double)k < p * (double)n)
        k++; /* ceil */
    return v[k > 0 ? (k <= n ? k - 1 : n - 1) : 0];
}

bench_dist bench_distribution(double *v, size_t n)
{
    bench_dist d;
    memset(&d, 0, sizeof d);
    d.n = n;
    if (n == 0)
        return d;
    qsort(v, n, sizeof *v, bench_cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    d.min = v[0];
    d.p50 = bench_rank(v, n, 0.50);
    d.p90 = bench_rank(v, n, 0.90);
    d.p95 = bench_rank(v, n, 0.95);
    d.p99 = bench_rank(v, n, 0.99);
    d.p999 = bench_rank(v, n, 0.999);
    d.max = v[n - 1];
    d.mean = sum / (double)n;
    return d;
}

json_t *bench_dist_json(const bench_dist *d)
{
    if (d->n == 0)
        return json_null();
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)d->n, "min",
                     d->min, "p50", d->p50, "p90", d->p90, "p95", d->p95, "p99", d->p99, "p999",
                     d->p999, "max", d->max, "mean", d->mean);
}
