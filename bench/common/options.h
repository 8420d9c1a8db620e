/* options.h — the command-line options every benchmark shares, parsed one way, so that
 * --count, --raw-window or --out mean the same in each:
 *
 *   --amqp-url URL   broker (default: $HD_AMQP_URL; required)
 *   --count N        messages (or events) per phase
 *   --quick          a smoke run (each bench says what it shrinks)
 *   --raw-window N   raw publish: confirm window (default 1000)
 *   --raw-prefetch N raw consume: prefetch (default 100)
 *   --workdir DIR    where the files go (default: a new directory in $TMPDIR or /tmp)
 *   --keep           keep the work directory
 *   --out FILE       write the results to FILE
 *
 *   --help           usage(stdout), exit 0
 *
 * A bench lists its own options in a struct option table (codes below BENCH_OPT_FIRST, e.g.
 * 256 + n) and handles them in a callback; bench_options_parse runs getopt_long over both. */
#ifndef HERALD_BENCH_OPTIONS_H
#define HERALD_BENCH_OPTIONS_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#define BENCH_OPT_FIRST 0x4000 /* the shared options' codes start here */

typedef struct bench_options {
    const char *prog; /* "bench-x", in messages (borrowed) */
    const char *url;  /* borrowed from the environment or argv */
    size_t count;
    size_t count_max;
    size_t quick_count;
    int count_set; /* --count given (--quick then keeps it) */
    int quick;
    size_t raw_window;
    int raw_prefetch;
    const char *workdir; /* NULL: a new temporary directory */
    int keep;
    const char *out; /* NULL: none */
} bench_options;

/* Defaults: url $HD_AMQP_URL, count (1..count_max; quick_count with --quick unless --count is
 * given), raw window 1000, raw prefetch 100. prog is borrowed. */
void bench_options_init(bench_options *o, const char *prog, size_t count, size_t quick_count,
                        size_t count_max);

/* own (up to its {NULL, 0, NULL, 0} terminator) then the shared options into out, which
 * holds cap entries; 0, or -1 when it does not fit. own and out are borrowed. */
int bench_options_table(const struct option *own, struct option *out, size_t cap);

/* 1: opt was a shared option and is recorded; 0: not a shared one (the bench's own); -1: a bad
 * value (the message is on stderr: exit 2). arg is getopt's optarg (borrowed). */
int bench_options_handle(bench_options *o, int opt, const char *arg);

/* A bench's own option: 0, or -1 for a bad value (after a message on stderr). */
typedef int (*bench_own_option)(void *ctx, int opt, const char *arg);

/* Parses argv: the shared options into o (bench_options_init first), the bench's own (own,
 * borrowed, up to its terminator) through on_own(ctx, ...); --help prints usage(stdout).
 * Then bench_options_finish. Returns 0, 1 after --help (exit 0), or 2 (bad usage: exit 2). */
int bench_options_parse(bench_options *o, int argc, char **argv, const struct option *own,
                        bench_own_option on_own, void *ctx, void (*usage)(FILE *));

/* After the getopt loop: no stray argument, and a broker URL. 0, or 2 (bad usage; the
 * message and usage(stderr) are printed). */
int bench_options_finish(const bench_options *o, int argc, char **argv, void (*usage)(FILE *));

/* An integer in lo..hi (no sign, no trailing junk) into *out: 0, or -1 with a message on
 * stderr naming prog and the option. */
int bench_parse_size(const char *prog, const char *s, const char *name, size_t lo, size_t hi,
                     size_t *out);

/* A number (strtod: "0.5", "1e3") in lo..hi into *out: 0, or -1 with a message on stderr. */
int bench_parse_num(const char *prog, const char *s, const char *name, double lo, double hi,
                    double *out);

/* "on" (1) or "off" (0) into *on: 0, or -1 with a message on stderr. */
int bench_parse_on_off(const char *prog, const char *s, const char *name, int *on);

#endif
