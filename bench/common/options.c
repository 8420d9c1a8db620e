/* options.c — see options.h. */
#include "options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    O_AMQP_URL = BENCH_OPT_FIRST,
    O_COUNT,
    O_QUICK,
    O_RAW_WINDOW,
    O_RAW_PREFETCH,
    O_WORKDIR,
    O_KEEP,
    O_OUT
};

static const struct option shared[] = {
    {"amqp-url", required_argument, NULL, O_AMQP_URL},
    {"count", required_argument, NULL, O_COUNT},
    {"quick", no_argument, NULL, O_QUICK},
    {"raw-window", required_argument, NULL, O_RAW_WINDOW},
    {"raw-prefetch", required_argument, NULL, O_RAW_PREFETCH},
    {"workdir", required_argument, NULL, O_WORKDIR},
    {"keep", no_argument, NULL, O_KEEP},
    {"out", required_argument, NULL, O_OUT},
    {"help", no_argument, NULL, 'h'},
};

void bench_options_init(bench_options *o, const char *prog, size_t count, size_t quick_count,
                        size_t count_max)
{
    memset(o, 0, sizeof *o);
    o->prog = prog;
    o->url = getenv("HD_AMQP_URL");
    o->count = count;
    o->count_max = count_max;
    o->quick_count = quick_count;
    o->raw_window = 1000;
    o->raw_prefetch = 100;
}

int bench_options_table(const struct option *own, struct option *out, size_t cap)
{
    size_t n = 0, nshared = sizeof shared / sizeof shared[0];
    for (; own != NULL && own[n].name != NULL; n++) {
        if (n + 1 >= cap)
            return -1;
        out[n] = own[n];
    }
    if (n + nshared + 1 > cap)
        return -1;
    memcpy(&out[n], shared, sizeof shared);
    memset(&out[n + nshared], 0, sizeof out[0]);
    return 0;
}

int bench_options_handle(bench_options *o, int opt, const char *arg)
{
    size_t v;
    switch (opt) {
    case O_AMQP_URL:
        o->url = arg;
        return 1;
    case O_COUNT:
        if (bench_parse_size(o->prog, arg, "--count", 1, o->count_max, &o->count) < 0)
            return -1;
        o->count_set = 1;
        return 1;
    case O_QUICK:
        o->quick = 1;
        return 1;
    case O_RAW_WINDOW:
        return bench_parse_size(o->prog, arg, "--raw-window", 1, 1000000, &o->raw_window) < 0 ? -1
                                                                                              : 1;
    case O_RAW_PREFETCH:
        if (bench_parse_size(o->prog, arg, "--raw-prefetch", 1, 65535, &v) < 0)
            return -1;
        o->raw_prefetch = (int)v;
        return 1;
    case O_WORKDIR:
        o->workdir = arg;
        return 1;
    case O_KEEP:
        o->keep = 1;
        return 1;
    case O_OUT:
        o->out = arg;
        return 1;
    default:
        return 0;
    }
}

int bench_options_finish(const bench_options *o, int argc, char **argv, void (*usage)(FILE *))
{
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", o->prog, argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o->url == NULL || *o->url == '\0') {
        fprintf(stderr,
                "%s: no broker: set HD_AMQP_URL or pass --amqp-url "
                "(scripts/servers.sh up rabbitmq writes the env file)\n",
                o->prog);
        return 2;
    }
    return 0;
}

int bench_parse_size(const char *prog, const char *s, const char *name, size_t lo, size_t hi,
                     size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be a number in %zu..%zu (got '%s')\n", prog, name, lo, hi, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int bench_parse_num(const char *prog, const char *s, const char *name, double lo, double hi,
                    double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s must be a number in %g..%g (got '%s')\n", prog, name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int bench_parse_on_off(const char *prog, const char *s, const char *name, int *on)
{
    if (strcmp(s, "on") != 0 && strcmp(s, "off") != 0) {
        fprintf(stderr, "%s: %s must be on or off (got '%s')\n", prog, name, s);
        return -1;
    }
    *on = strcmp(s, "on") == 0;
    return 0;
}

int bench_options_parse(bench_options *o, int argc, char **argv, const struct option *own,
                        bench_own_option on_own, void *ctx, void (*usage)(FILE *))
{
    struct option longs[64];
    if (bench_options_table(own, longs, sizeof longs / sizeof longs[0]) < 0) {
        fprintf(stderr, "%s: too many options\n", o->prog);
        return 2;
    }
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        int handled = bench_options_handle(o, opt, optarg);
        if (handled < 0)
            return 2;
        if (handled > 0)
            continue;
        if (opt == 'h') {
            usage(stdout);
            return 1;
        }
        if (opt == '?' || opt == ':' || on_own(ctx, opt, optarg) < 0) {
            if (opt == '?' || opt == ':')
                usage(stderr);
            return 2;
        }
    }
    if (o->quick && !o->count_set)
        o->count = o->quick_count;
    return bench_options_finish(o, argc, argv, usage);
}
