/* bench_util.h — small pieces every benchmark program shares: number formatting, CPU
 * accounting, sorting, timestamps. Linked into each bench/<x>.c (see CMakeLists.txt). */
#ifndef HERALD_BENCH_UTIL_H
#define HERALD_BENCH_UTIL_H

#include <stddef.h>

/* v as "12,345" in buf (cap bytes); returns buf. */
const char *bench_thousands(char *buf, size_t cap, double v);

/* User + system CPU seconds this process has used so far. */
double bench_cpu_seconds(void);

/* The machine's busy and total jiffies since boot (/proc/stat); both 0 when unreadable.
 * Two readings give how busy the whole machine was in between. */
void bench_machine_jiffies(unsigned long long *busy, unsigned long long *total);

/* qsort comparator for doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* The current UTC time as "2026-11-23T06:07:33Z" in buf (cap bytes). */
void bench_now_utc(char *buf, size_t cap);

/* 1 when dir is on tmpfs (Linux): there an fsync costs nothing, and SQLite's FULL
 * synchronous mode, the cost group commit exists to share, would not be measured. */
int bench_on_tmpfs(const char *dir);

/* The first DIR/templates holding email_verification.subject, DIR = start and its parents
 * (the e-mail templates of a build tree's source): its real path into out (cap bytes). 0, or
 * -1 when none is found. */
int bench_find_templates(const char *start, char *out, size_t cap);

#endif
