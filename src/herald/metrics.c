/* metrics.c — counters, gauges, histograms; Prometheus text exposition; see metrics.h. */
#include "herald/metrics.h"
#include "herald/buf.h"
#include "herald/error.h"
#include "herald/utf8.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double hd_metrics_default_buckets[HD_METRICS_DEFAULT_BUCKETS_N] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };
static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One combination of label values and its numbers. */
struct series {
    char **labels;  /* nlabels values, owned */
    uint64_t hash;  /* of the label values: compared before the strings */
    double value;   /* counter, gauge */
    hd_gauge_fn fn; /* gauge computed at render time, or NULL */
    void *fn_ctx;
    uint64_t *buckets; /* histogram: per-bucket counts, NOT cumulative; [nbounds] is +Inf */
    uint64_t count;
    double sum;
};

/* One name: its kind, help, label names and series. The public handle types (hd_counter,
 * hd_gauge, hd_histogram) are never defined: a handle is a family pointer converted to a
 * distinct incomplete type, so the compiler refuses hd_histogram_observe(counter, ...);
 * C11 6.3.2.3p7 guarantees the conversion back gives the same pointer. */
struct family {
    enum kind kind;
    char *name;
    char *help;
    char *label_names[HD_METRICS_MAX_LABELS];
    size_t nlabels;
    double *bounds; /* histogram upper bounds, strictly increasing, +Inf not included */
    size_t nbounds;
    pthread_mutex_t lock; /* guards series, nseries and every number in them */
    struct series **series;
    size_t nseries, cap;
    struct series *overflow; /* the fold target, created at the first fold (also listed) */
    hd_metrics *m;           /* for the cap and the overflow counter */
};

struct hd_metrics {
    pthread_mutex_t lock; /* guards the family list; families are never removed */
    struct family **families;
    size_t nfamilies, cap;
    atomic_size_t max_series;
    struct family *overflow; /* HD_METRICS_OVERFLOW_FAMILY */
};

/* ---- names ------------------------------------------------------------------------------- */

static int is_name_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* Metric names may contain ':' (reserved for recording rules, but legal); labels may not. */
static int valid_name(const char *s, int colon_ok)
{
    if (s == NULL || !(is_name_start(*s) || (colon_ok && *s == ':')))
        return 0;
    for (s++; *s; s++)
        if (!(is_name_start(*s) || is_digit(*s) || (colon_ok && *s == ':')))
            return 0;
    return 1;
}

/* ---- registry ---------------------------------------------------------------------------- */

hd_metrics *hd_metrics_new(void)
{
    hd_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    atomic_init(&m->max_series, HD_METRICS_DEFAULT_MAX_SERIES);
    /* Labelled, so it renders nothing until the first fold. */
    m->overflow = (struct family *)hd_metrics_counter(
        m, HD_METRICS_OVERFLOW_FAMILY,
        "Updates folded into a family's overflow series because it reached its series cap.",
        "family", NULL);
    if (m->overflow == NULL) {
        hd_metrics_free(m);
        return NULL;
    }
    return m;
}

int hd_metrics_set_max_series(hd_metrics *m, size_t max_series)
{
    if (m == NULL)
        return HD_EINVAL;
    atomic_store(&m->max_series, max_series ? max_series : HD_METRICS_DEFAULT_MAX_SERIES);
    return HD_OK;
}

static void series_free(struct series *s, size_t nlabels)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < nlabels; i++)
        free(s->labels[i]);
    free(s->labels);
    free(s->buckets);
    free(s);
}

static void family_free(struct family *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        series_free(f->series[i], f->nlabels);
    free(f->series);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->bounds);
    free(f->help);
    free(f->name);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void hd_metrics_free(hd_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nfamilies; i++)
        family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* FNV-1a over the values, with a 0xff byte between them (never part of UTF-8 text), so
 * that ("ab","c") and ("a","bc") hash differently. */
static uint64_t hash_labels(const char *const *labels, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)labels[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    return h;
}

static int labels_ok(const struct family *f, const char *const *labels)
{
    if (f->nlabels == 0)
        return 1; /* labels ignored (NULL expected) */
    if (labels == NULL)
        return 0;
    for (size_t i = 0; i < f->nlabels; i++)
        if (labels[i] == NULL)
            return 0;
    return 1;
}

/* NULL when s is valid UTF-8; else a copy with U+FFFD for each bad byte (*owned = 1: the
 * caller frees it), or "" when memory runs out (*owned = 0). */
static char *utf8_clean(const char *s, int *owned)
{
    *owned = 0;
    if (hd_utf8_valid(s))
        return NULL;
    char *out = hd_utf8_clean(s, "\xEF\xBF\xBD");
    if (out == NULL)
        return (char *)"";
    *owned = 1;
    return out;
}

static struct series *find_series_clean(struct family *f, const char *const *labels, int create,
                                        int *folded);

/* The series with these label values; created (zeroed) when create is set. Call with
 * f->lock held. A family has tens of series, so a scan comparing hashes first is fast
 * and easy to read; thousands of series would call for a hash table, and first for a
 * second look at the labels.
 *
 * Values that are not valid UTF-8 are looked up (and stored) cleaned, so the rendered
 * text is always UTF-8. When create is set and the family is at its cap, a new
 * combination gives the overflow series and sets *folded (folded may be NULL). */
static struct series *find_series(struct family *f, const char *const *labels, int create,
                                  int *folded)
{
    if (folded != NULL)
        *folded = 0;
    char *clean[HD_METRICS_MAX_LABELS];
    int owned[HD_METRICS_MAX_LABELS], any = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        clean[i] = utf8_clean(labels[i], &owned[i]);
        any |= clean[i] != NULL;
    }
    if (!any)
        return find_series_clean(f, labels, create, folded);
    const char *fixed[HD_METRICS_MAX_LABELS];
    for (size_t i = 0; i < f->nlabels; i++)
        fixed[i] = clean[i] ? clean[i] : labels[i];
    struct series *s = find_series_clean(f, fixed, create, folded);
    for (size_t i = 0; i < f->nlabels; i++)
        if (owned[i])
            free(clean[i]);
    return s;
}

static struct series *new_series(struct family *f, const char *const *labels, uint64_t h);

static struct series *find_series_clean(struct family *f, const char *const *labels, int create,
                                        int *folded)
{
    uint64_t h = hash_labels(labels, f->nlabels);
    for (size_t i = 0; i < f->nseries; i++) {
        struct series *s = f->series[i];
        if (s->hash != h)
            continue;
        size_t j = 0;
        while (j < f->nlabels && strcmp(s->labels[j], labels[j]) == 0)
            j++;
        if (j == f->nlabels)
            return s;
    }
    if (!create)
        return NULL;
    /* At the cap (the overflow series does not count against it): fold. */
    size_t regular = f->nseries - (f->overflow != NULL);
    if (f->nlabels > 0 && regular >= atomic_load(&f->m->max_series)) {
        if (folded != NULL)
            *folded = 1;
        if (f->overflow == NULL) {
            const char *over[HD_METRICS_MAX_LABELS];
            for (size_t i = 0; i < f->nlabels; i++)
                over[i] = HD_METRICS_OVERFLOW_VALUE;
            /* A label value of a regular series may already be the overflow value (a
             * client sending "__overflow__"): share that series then. */
            uint64_t oh = hash_labels(over, f->nlabels);
            for (size_t i = 0; i < f->nseries && f->overflow == NULL; i++) {
                size_t j = 0;
                while (j < f->nlabels && strcmp(f->series[i]->labels[j], over[j]) == 0)
                    j++;
                if (f->series[i]->hash == oh && j == f->nlabels)
                    f->overflow = f->series[i];
            }
            if (f->overflow == NULL)
                f->overflow = new_series(f, over, oh);
        }
        return f->overflow;
    }
    return new_series(f, labels, h);
}

/* A zeroed series with copies of labels, appended to f. Call with f->lock held. */
static struct series *new_series(struct family *f, const char *const *labels, uint64_t h)
{
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        struct series **grown = realloc(f->series, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        f->series = grown;
        f->cap = cap;
    }
    struct series *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->hash = h;
    if (f->nlabels > 0) {
        s->labels = calloc(f->nlabels, sizeof *s->labels);
        if (s->labels == NULL) {
            free(s);
            return NULL;
        }
        for (size_t i = 0; i < f->nlabels; i++) {
            if ((s->labels[i] = strdup(labels[i])) == NULL) {
                series_free(s, f->nlabels);
                return NULL;
            }
        }
    }
    if (f->kind == KIND_HISTOGRAM) {
        s->buckets = calloc(f->nbounds + 1, sizeof *s->buckets);
        if (s->buckets == NULL) {
            series_free(s, f->nlabels);
            return NULL;
        }
    }
    f->series[f->nseries++] = s;
    return s;
}

static int same_shape(const struct family *f, enum kind kind, char **names, size_t n,
                      const double *bounds, size_t nbounds)
{
    if (f->kind != kind || f->nlabels != n || f->nbounds != nbounds)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(f->label_names[i], names[i]) != 0)
            return 0;
    for (size_t i = 0; i < nbounds; i++)
        if (f->bounds[i] != bounds[i])
            return 0;
    return 1;
}

/* The common half of the three registration functions: validate, find or create. */
static struct family *family_register(hd_metrics *m, enum kind kind, const char *name,
                                      const char *help, const double *bounds, size_t nbounds,
                                      va_list ap)
{
    char *names[HD_METRICS_MAX_LABELS];
    size_t n = 0;
    for (char *ln = va_arg(ap, char *); ln != NULL; ln = va_arg(ap, char *)) {
        if (n == HD_METRICS_MAX_LABELS || !valid_name(ln, 0) || strncmp(ln, "__", 2) == 0 ||
            (kind == KIND_HISTOGRAM && strcmp(ln, "le") == 0))
            return NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(names[i], ln) == 0)
                return NULL; /* the same label twice */
        names[n++] = ln;
    }
    if (m == NULL || !valid_name(name, 1))
        return NULL;
    if (kind == KIND_HISTOGRAM) {
        if (bounds == NULL || nbounds == 0) {
            bounds = hd_metrics_default_buckets;
            nbounds = HD_METRICS_DEFAULT_BUCKETS_N;
        }
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return NULL;
    }

    pthread_mutex_lock(&m->lock);
    struct family *f = NULL;
    for (size_t i = 0; i < m->nfamilies; i++) {
        if (strcmp(m->families[i]->name, name) == 0) {
            f = m->families[i];
            if (!same_shape(f, kind, names, n, bounds, nbounds))
                f = NULL;
            pthread_mutex_unlock(&m->lock);
            return f;
        }
    }
    if (m->nfamilies == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct family **grown = realloc(m->families, cap * sizeof *grown);
        if (grown == NULL)
            goto out;
        m->families = grown;
        m->cap = cap;
    }
    if ((f = calloc(1, sizeof *f)) == NULL)
        goto out;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        f = NULL;
        goto out;
    }
    f->kind = kind;
    f->m = m;
    int ok = (f->name = strdup(name)) != NULL;
    ok = ok && (f->help = strdup(help ? help : "")) != NULL;
    for (size_t i = 0; ok && i < n; i++, f->nlabels++)
        ok = (f->label_names[i] = strdup(names[i])) != NULL;
    if (ok && kind == KIND_HISTOGRAM) {
        ok = (f->bounds = malloc(nbounds * sizeof *f->bounds)) != NULL;
        if (ok) {
            memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
            f->nbounds = nbounds;
        }
    }
    /* Without labels there is exactly one series: create it now so that the metric is
     * exported as 0 from the first scrape (a counter that appears only at its first
     * increment makes rate() miss that increment). */
    if (ok && n == 0)
        ok = find_series(f, NULL, 1, NULL) != NULL;
    if (!ok) {
        family_free(f);
        f = NULL;
        goto out;
    }
    m->families[m->nfamilies++] = f;
out:
    pthread_mutex_unlock(&m->lock);
    return f;
}

hd_counter *hd_metrics_counter(hd_metrics *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct family *f = family_register(m, KIND_COUNTER, name, help, NULL, 0, ap);
    va_end(ap);
    return (hd_counter *)f;
}

hd_gauge *hd_metrics_gauge(hd_metrics *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct family *f = family_register(m, KIND_GAUGE, name, help, NULL, 0, ap);
    va_end(ap);
    return (hd_gauge *)f;
}

hd_histogram *hd_metrics_histogram(hd_metrics *m, const char *name, const char *help,
                                   const double *buckets, size_t nbuckets, ...)
{
    va_list ap;
    va_start(ap, nbuckets);
    struct family *f = family_register(m, KIND_HISTOGRAM, name, help, buckets, nbuckets, ap);
    va_end(ap);
    return (hd_histogram *)f;
}

/* ---- updates ----------------------------------------------------------------------------- */

enum op { OP_ADD, OP_SET };

/* An update went to the overflow series: count it, with no family lock held. The
 * overflow family's own folds (more families than the cap) are not counted, or counting
 * would recurse. */
static void count_fold(struct family *f)
{
    if (f->m->overflow != f)
        hd_counter_inc((hd_counter *)f->m->overflow, (const char *const[]){f->name}, 1);
}

static int update(struct family *f, const char *const *labels, enum op op, double v)
{
    if (f == NULL || !labels_ok(f, labels))
        return HD_EINVAL;
    int folded;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 1, &folded);
    if (s != NULL) {
        if (op == OP_SET)
            s->value = v;
        else
            s->value += v;
    }
    pthread_mutex_unlock(&f->lock);
    if (folded)
        count_fold(f);
    return s ? HD_OK : HD_ENOMEM;
}

int hd_counter_inc(hd_counter *c, const char *const *labels, double delta)
{
    /* A counter only goes up: Prometheus reads a decrease as a process restart. The test
     * is written so that NaN fails it too. */
    if (!(delta >= 0))
        return HD_EINVAL;
    return update((struct family *)c, labels, OP_ADD, delta);
}

int hd_gauge_set(hd_gauge *g, const char *const *labels, double value)
{
    return update((struct family *)g, labels, OP_SET, value);
}

int hd_gauge_inc(hd_gauge *g, const char *const *labels, double delta)
{
    return update((struct family *)g, labels, OP_ADD, delta);
}

int hd_gauge_dec(hd_gauge *g, const char *const *labels, double delta)
{
    return update((struct family *)g, labels, OP_ADD, -delta);
}

int hd_gauge_set_func(hd_gauge *g, const char *const *labels, hd_gauge_fn fn, void *ctx)
{
    struct family *f = (struct family *)g;
    if (f == NULL || !labels_ok(f, labels))
        return HD_EINVAL;
    int folded;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 1, &folded);
    if (s != NULL && !folded) {
        s->fn = fn;
        s->fn_ctx = fn ? ctx : NULL;
    }
    pthread_mutex_unlock(&f->lock);
    if (folded)
        return HD_ERANGE;
    return s ? HD_OK : HD_ENOMEM;
}

int hd_histogram_observe(hd_histogram *h, const char *const *labels, double value)
{
    struct family *f = (struct family *)h;
    if (f == NULL || isnan(value) || !labels_ok(f, labels))
        return HD_EINVAL;
    /* Buckets hold "less than or equal to the bound"; a linear scan, because there are
     * about ten bounds and most observations land in the first few. */
    size_t b = 0;
    while (b < f->nbounds && value > f->bounds[b])
        b++;
    int folded;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 1, &folded);
    if (s != NULL) {
        s->buckets[b]++;
        s->count++;
        s->sum += value;
    }
    pthread_mutex_unlock(&f->lock);
    if (folded)
        count_fold(f);
    return s ? HD_OK : HD_ENOMEM;
}

/* ---- reading back ------------------------------------------------------------------------ */

int hd_counter_value(hd_counter *c, const char *const *labels, double *out)
{
    struct family *f = (struct family *)c;
    if (f == NULL || out == NULL || !labels_ok(f, labels))
        return HD_EINVAL;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 0, NULL);
    *out = s ? s->value : 0;
    pthread_mutex_unlock(&f->lock);
    return HD_OK;
}

int hd_gauge_value(hd_gauge *g, const char *const *labels, double *out)
{
    struct family *f = (struct family *)g;
    if (f == NULL || out == NULL || !labels_ok(f, labels))
        return HD_EINVAL;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 0, NULL);
    double v = s ? s->value : 0;
    hd_gauge_fn fn = s ? s->fn : NULL;
    void *ctx = s ? s->fn_ctx : NULL;
    pthread_mutex_unlock(&f->lock);
    if (fn != NULL && fn(ctx, &v) < 0)
        return HD_EINVAL;
    *out = v;
    return HD_OK;
}

int hd_histogram_value(hd_histogram *h, const char *const *labels, double *count, double *sum)
{
    struct family *f = (struct family *)h;
    if (f == NULL || !labels_ok(f, labels))
        return HD_EINVAL;
    pthread_mutex_lock(&f->lock);
    struct series *s = find_series(f, labels, 0, NULL);
    if (count)
        *count = s ? (double)s->count : 0;
    if (sum)
        *sum = s ? s->sum : 0;
    pthread_mutex_unlock(&f->lock);
    return HD_OK;
}

/* ---- rendering --------------------------------------------------------------------------- */

static void buf_escaped(hd_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            hd_buf_puts(b, "\\\\");
        else if (*s == '\n')
            hd_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            hd_buf_puts(b, "\\\"");
        else
            hd_buf_add(b, s, 1);
    }
}

/* The shortest text that reads back as exactly v: integers without a fraction (counters
 * look like counts), others with the fewest %g digits that round-trip, and the spellings
 * Prometheus expects for the special values. */
static void format_double(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        strcpy(out, "0"); /* also for -0 */
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, 32, "%.0f", v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void buf_double(hd_buf *b, double v)
{
    char num[32];
    format_double(v, num);
    hd_buf_puts(b, num);
}

/* What rendering needs of a series, copied under the family lock. */
struct snap {
    char **labels; /* borrowed from the series: label strings never change or go away */
    size_t nlabels;
    double value;
    hd_gauge_fn fn;
    void *fn_ctx;
    uint64_t *buckets; /* copy, owned */
    uint64_t count;
    double sum;
    int skip; /* a gauge callback failed: leave the series out */
};

static int cmp_snap(const void *a, const void *b)
{
    const struct snap *x = a, *y = b;
    for (size_t i = 0; i < x->nlabels; i++) {
        int c = strcmp(x->labels[i], y->labels[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

static int cmp_family(const void *a, const void *b)
{
    const struct family *x = *(struct family *const *)a, *y = *(struct family *const *)b;
    return strcmp(x->name, y->name);
}

/* name{l1="v1",l2="v2"[,le="x"]} — braces only when there is something inside. */
static void buf_series_name(hd_buf *b, const struct family *f, const char *suffix, char **labels,
                            const char *le)
{
    hd_buf_puts(b, f->name);
    hd_buf_puts(b, suffix);
    if (f->nlabels == 0 && le == NULL)
        return;
    hd_buf_puts(b, "{");
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i > 0)
            hd_buf_puts(b, ",");
        hd_buf_puts(b, f->label_names[i]);
        hd_buf_puts(b, "=\"");
        buf_escaped(b, labels[i], 1);
        hd_buf_puts(b, "\"");
    }
    if (le != NULL) {
        if (f->nlabels > 0)
            hd_buf_puts(b, ",");
        hd_buf_puts(b, "le=\"");
        hd_buf_puts(b, le);
        hd_buf_puts(b, "\"");
    }
    hd_buf_puts(b, "}");
}

static void render_family(hd_buf *b, struct family *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->nseries;
    struct snap *snaps = n ? calloc(n, sizeof *snaps) : NULL;
    if (n > 0 && snaps == NULL) {
        pthread_mutex_unlock(&f->lock);
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct series *s = f->series[i];
        snaps[i] = (struct snap){.labels = s->labels,
                                 .nlabels = f->nlabels,
                                 .value = s->value,
                                 .fn = s->fn,
                                 .fn_ctx = s->fn_ctx,
                                 .count = s->count,
                                 .sum = s->sum};
        if (f->kind == KIND_HISTOGRAM) {
            snaps[i].buckets = malloc((f->nbounds + 1) * sizeof *snaps[i].buckets);
            if (snaps[i].buckets == NULL)
                b->oom = 1;
            else
                memcpy(snaps[i].buckets, s->buckets, (f->nbounds + 1) * sizeof *snaps[i].buckets);
        }
    }
    pthread_mutex_unlock(&f->lock);

    /* Callbacks run unlocked: they may be slow (a database query) or touch metrics. */
    for (size_t i = 0; i < n; i++)
        if (snaps[i].fn != NULL && snaps[i].fn(snaps[i].fn_ctx, &snaps[i].value) < 0)
            snaps[i].skip = 1;

    if (n > 1)
        qsort(snaps, n, sizeof *snaps, cmp_snap);

    size_t shown = 0;
    for (size_t i = 0; i < n; i++)
        shown += !snaps[i].skip;
    /* A family with no series has nothing to say (the Go client omits it too). */
    if (shown > 0 && !b->oom) {
        hd_buf_puts(b, "# HELP ");
        hd_buf_puts(b, f->name);
        hd_buf_puts(b, " ");
        buf_escaped(b, f->help, 0);
        hd_buf_puts(b, "\n# TYPE ");
        hd_buf_puts(b, f->name);
        hd_buf_puts(b, " ");
        hd_buf_puts(b, kind_names[f->kind]);
        hd_buf_puts(b, "\n");
    }
    for (size_t i = 0; i < n && !b->oom; i++) {
        struct snap *s = &snaps[i];
        if (s->skip)
            continue;
        if (f->kind != KIND_HISTOGRAM) {
            buf_series_name(b, f, "", s->labels, NULL);
            hd_buf_puts(b, " ");
            buf_double(b, s->value);
            hd_buf_puts(b, "\n");
            continue;
        }
        /* Stored per bucket, exported cumulative: le="0.1" counts every observation
         * <= 0.1, so the +Inf bucket always equals _count. */
        uint64_t cumulative = 0;
        for (size_t k = 0; k <= f->nbounds; k++) {
            char le[32], count[32];
            cumulative += s->buckets[k];
            if (k < f->nbounds)
                format_double(f->bounds[k], le);
            else
                strcpy(le, "+Inf");
            buf_series_name(b, f, "_bucket", s->labels, le);
            snprintf(count, sizeof count, " %llu\n", (unsigned long long)cumulative);
            hd_buf_puts(b, count);
        }
        buf_series_name(b, f, "_sum", s->labels, NULL);
        hd_buf_puts(b, " ");
        buf_double(b, s->sum);
        hd_buf_puts(b, "\n");
        buf_series_name(b, f, "_count", s->labels, NULL);
        char count[32];
        snprintf(count, sizeof count, " %llu\n", (unsigned long long)s->count);
        hd_buf_puts(b, count);
    }
    for (size_t i = 0; i < n; i++)
        free(snaps[i].buckets);
    free(snaps);
}

int hd_metrics_render(hd_metrics *m, char **out, size_t *len)
{
    if (out != NULL)
        *out = NULL;
    if (m == NULL || out == NULL)
        return HD_EINVAL;
    /* Copy the family list so that no registry lock is held while formatting; families
     * are never removed before hd_metrics_free, so the pointers stay valid. */
    pthread_mutex_lock(&m->lock);
    size_t n = m->nfamilies;
    struct family **fams = n ? malloc(n * sizeof *fams) : NULL;
    if (fams != NULL)
        memcpy(fams, m->families, n * sizeof *fams);
    pthread_mutex_unlock(&m->lock);
    if (n > 0 && fams == NULL)
        return HD_ENOMEM;
    if (n > 1)
        qsort(fams, n, sizeof *fams, cmp_family);

    /* Writes after a failed allocation are dropped and remembered in b.oom, so the
     * formatting code needs no error check per line; hd_buf_take reports it once. */
    hd_buf b = HD_BUF_INIT;
    for (size_t i = 0; i < n && !b.oom; i++)
        render_family(&b, fams[i]);
    free(fams);
    size_t used = b.len;
    if ((*out = hd_buf_take(&b)) == NULL) /* "" for an empty registry: a valid page */
        return HD_ENOMEM;
    if (len != NULL)
        *len = used;
    return HD_OK;
}
