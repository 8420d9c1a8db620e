/* progress.h — a benchmark's progress on stderr, about once a second, so that a long phase
 * shows it is alive and how fast it goes: "relay: 12000/20000 (60%) 11,800/s". */
#ifndef HERALD_BENCH_PROGRESS_H
#define HERALD_BENCH_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "proc_stats.h"

typedef struct bench_progress {
    const char *name; /* borrowed */
    size_t total;
    int64_t last_ns;
    size_t last_done;
} bench_progress;

/* name is borrowed: it must outlive the progress. */
void bench_progress_start(bench_progress *pr, const char *name, size_t total);

/* "name: done/total (pct%) rate/s[, extra]" when a second has passed since the last line;
 * the rate is over that second. extra (borrowed, may be NULL) is appended. Cheap otherwise:
 * call it as often as you like. */
void bench_progress_tick(bench_progress *pr, size_t done, const char *extra);

/* "name: messages/total done in S s, rate/s", the span's figures. */
void bench_progress_done(const bench_progress *pr, const bench_span *s);

#endif
