/* progress.c — see progress.h. */
#include "progress.h"

#include <stdio.h>

#include "bench_util.h"
#include "herald/clock.h"

void bench_progress_start(bench_progress *pr, const char *name, size_t total)
{
    pr->name = name;
    pr->total = total;
    pr->last_ns = hd_clock_ns();
    pr->last_done = 0;
}

void bench_progress_tick(bench_progress *pr, size_t done, const char *extra)
{
    int64_t now = hd_clock_ns();
    if (now - pr->last_ns < 1000000000LL)
        return;
    char r[32];
    /* done may go down (a caller's counter re-read); no negative rate then. */
    double moved = done >= pr->last_done ? (double)(done - pr->last_done) : 0.0;
    double rate = moved * 1e9 / (double)(now - pr->last_ns);
    fprintf(stderr, "%s: %zu/%zu (%zu%%) %s/s%s%s\n", pr->name, done, pr->total,
            pr->total ? done * 100 / pr->total : 0, bench_thousands(r, sizeof r, rate),
            extra && *extra ? ", " : "", extra ? extra : "");
    pr->last_ns = now;
    pr->last_done = done;
}

void bench_progress_done(const bench_progress *pr, const bench_span *s)
{
    char r[32];
    fprintf(stderr, "%s: %zu/%zu done in %.2f s, %s/s\n", pr->name, s->messages, pr->total,
            s->seconds, bench_thousands(r, sizeof r, s->rate));
}
