/* herald/metrics.h — counters, gauges and histograms in the Prometheus text format.
 *
 * A service that cannot be measured cannot be operated: how many requests per route, how
 * slow, how deep the outbox is, how many messages went to the dead-letter queue. Prometheus
 * scrapes GET /metrics and reads plain text, format 0.0.4:
 *
 *     # HELP http_requests_total HTTP requests served.
 *     # TYPE http_requests_total counter
 *     http_requests_total{method="GET",route="/users/{id}",status="200"} 42
 *
 * A *family* (one name, one help text, one kind, fixed label names) holds one *series* per
 * combination of label values. Series are created on first use and never removed, so keep
 * label values to a small, closed set: a route PATTERN ("/users/{id}") is a good label; a
 * raw path ("/users/8f3c...") or a user id makes one series per user and eats the memory of
 * this process and of the Prometheus server (the "cardinality explosion").
 *
 *     hd_metrics *m = hd_metrics_new();
 *     hd_counter *req = hd_metrics_counter(m, "http_requests_total", "HTTP requests served.",
 *                                          "method", "route", "status", NULL);
 *     hd_counter_inc(req, (const char *[]){"GET", "/users/{id}", "200"}, 1);
 *     hd_histogram *lat = hd_metrics_histogram(m, "http_request_duration_seconds",
 *                                              "Time to answer.", NULL, 0, "route", NULL);
 *     hd_histogram_observe(lat, (const char *[]){"/users/{id}"}, 0.0042);
 *     char *text; size_t len;
 *     hd_metrics_render(m, &text, &len);   // serve with HD_METRICS_CONTENT_TYPE, then free
 *
 * Bounded cardinality. Keeping label values closed is the caller's job, but one mistake
 * (a client-chosen value used as a label) must not take the process down, so every
 * family holds at most max_series series (HD_METRICS_DEFAULT_MAX_SERIES = 256, set with
 * hd_metrics_set_max_series). Past the cap, an update with a NEW combination of values
 * is FOLDED into one overflow series whose every label is HD_METRICS_OVERFLOW_VALUE,
 * instead of being dropped: sums over the family (total requests, total latency) stay
 * right, and the overflow series itself shows on a dashboard. Each fold also counts in
 * HD_METRICS_OVERFLOW_FAMILY{family="<name>"}, which is what to alert on. Series that
 * exist keep being updated as usual. 256 is far above what a closed label set needs (the
 * services' http_requests_total: ~10 routes x 8 method labels x a few statuses), and
 * small enough that a histogram family at the cap renders in about 200 KB.
 *
 * Label values are UTF-8 text in the exposition format: a value that is not valid UTF-8
 * is stored with U+FFFD in place of each bad byte, so a scrape never fails to parse.
 *
 * Label names are given once, at registration, as a NULL-terminated list; label values are
 * given at each update as an array of exactly that many strings, in the same order (NULL
 * for a family without labels). The values are copied when a series is created.
 *
 * Threads: every function may be called from any thread. Each family has its own mutex,
 * so updates to different families never contend; an update costs a lock, a hash of the
 * label values and a short scan. Rendering takes a snapshot of each family under its lock
 * and formats it after releasing it; gauge callbacks run with no lock held, so they may
 * take their time (a COUNT(*) on the outbox) and may even update other metrics.
 *
 * Output is deterministic: families sorted by name, series by label values, numbers in
 * their shortest exact form. Two renders of the same state give the same bytes, which is
 * what lets the tests compare strings.
 *
 * Ownership: metric handles (hd_counter *, ...) are borrowed from the registry and valid
 * until hd_metrics_free; there is no call to free them one by one.
 */
#ifndef HERALD_METRICS_H
#define HERALD_METRICS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HD_METRICS_SENTINEL __attribute__((sentinel))
#else
#define HD_METRICS_SENTINEL
#endif

/* The Content-Type of hd_metrics_render's output (text exposition format 0.0.4). */
#define HD_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* At most this many label names per family (more is a design smell anyway). */
#define HD_METRICS_MAX_LABELS 8

/* Series per family before new label combinations are folded (see "Bounded cardinality"). */
#define HD_METRICS_DEFAULT_MAX_SERIES 256

/* The value of every label of a family's overflow series. */
#define HD_METRICS_OVERFLOW_VALUE "__overflow__"

/* The counter, with one label "family", of updates folded into an overflow series. Every
 * registry has it; it is rendered once a fold has happened. */
#define HD_METRICS_OVERFLOW_FAMILY "herald_metrics_series_overflow_total"

typedef struct hd_metrics hd_metrics;
/* The three handle types are distinct so the compiler catches observe() on a counter. */
typedef struct hd_counter hd_counter;
typedef struct hd_gauge hd_gauge;
typedef struct hd_histogram hd_histogram;

/* A gauge whose value is computed when the metrics are rendered (outbox depth, open
 * connections): store the value in *out and return 0, or return a negative code to leave
 * the series out of this render (a failed query must not be reported as 0). Runs on the
 * thread that renders, with no metrics lock held. */
typedef int (*hd_gauge_fn)(void *ctx, double *out);

/* The default histogram buckets, in seconds, for request latencies: Prometheus' classic
 * 5 ms .. 10 s. HD_METRICS_DEFAULT_BUCKETS_N of them. */
extern const double hd_metrics_default_buckets[];
#define HD_METRICS_DEFAULT_BUCKETS_N 11

/* A new, empty registry (new; free with hd_metrics_free). NULL when memory runs out. */
hd_metrics *hd_metrics_new(void);

/* Free m (NULL allowed) and every metric in it. No thread may still use its handles. */
void hd_metrics_free(hd_metrics *m);

/* Series per family (of every family, also those registered before) past which new label
 * combinations are folded into the overflow series; 0 = HD_METRICS_DEFAULT_MAX_SERIES.
 * Lowering it keeps the series that exist. Returns 0 or HD_EINVAL (m NULL). */
int hd_metrics_set_max_series(hd_metrics *m, size_t max_series);

/* Register, or look up, a family. name: [a-zA-Z_:][a-zA-Z0-9_:]* (counters by convention
 * end in "_total"); help: one line of text, copied (may be NULL); then the label names,
 * [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", ended by NULL (histograms may not use
 * "le"). Registering a name again with the same kind and label names returns the same
 * handle, so two modules can share a metric; any other clash, or an invalid name, returns
 * NULL. A family without labels starts with its one series at 0, so it is visible before
 * its first update. Handles are borrowed from m. */
hd_counter *hd_metrics_counter(hd_metrics *m, const char *name, const char *help,
                               ...) HD_METRICS_SENTINEL;
hd_gauge *hd_metrics_gauge(hd_metrics *m, const char *name, const char *help,
                           ...) HD_METRICS_SENTINEL;

/* The same for a histogram with the given upper bounds (copied; finite and strictly
 * increasing; the +Inf bucket is implicit). buckets NULL or nbuckets 0: the default
 * latency buckets above. */
hd_histogram *hd_metrics_histogram(hd_metrics *m, const char *name, const char *help,
                                   const double *buckets, size_t nbuckets, ...) HD_METRICS_SENTINEL;

/* Updates. labels: an array with one value per label name (borrowed, copied into a new
 * series; NULL when the family has no labels). A new combination in a family at its cap
 * updates the overflow series instead (and still returns 0). Each returns 0, HD_EINVAL
 * (NULL handle, missing label value, a counter delta that is negative or NaN) or
 * HD_ENOMEM. */
int hd_counter_inc(hd_counter *c, const char *const *labels, double delta);
int hd_gauge_set(hd_gauge *g, const char *const *labels, double value);
int hd_gauge_inc(hd_gauge *g, const char *const *labels, double delta);
int hd_gauge_dec(hd_gauge *g, const char *const *labels, double delta);
int hd_histogram_observe(hd_histogram *h, const char *const *labels, double value);

/* Make the gauge series with these label values computed by fn(ctx) at each render
 * instead of stored (fn NULL goes back to the stored value). ctx is borrowed: it must
 * stay valid until hd_metrics_free or until the callback is replaced. Returns 0,
 * HD_EINVAL, HD_ENOMEM, or HD_ERANGE for a new series in a family at its cap (a callback
 * on the shared overflow series would make no sense). */
int hd_gauge_set_func(hd_gauge *g, const char *const *labels, hd_gauge_fn fn, void *ctx);

/* Read back the current value of a series (0 when it does not exist yet; a callback gauge
 * runs its callback). For tests and for code that reacts to its own metrics. A histogram
 * reports its count and sum. Return 0 or HD_EINVAL. */
int hd_counter_value(hd_counter *c, const char *const *labels, double *out);
int hd_gauge_value(hd_gauge *g, const char *const *labels, double *out);
int hd_histogram_value(hd_histogram *h, const char *const *labels, double *count, double *sum);

/* Render every family in the text exposition format 0.0.4 into *out (new, NUL-terminated,
 * free() it) and its length into *len (len may be NULL). Returns 0, HD_EINVAL or
 * HD_ENOMEM (then *out is NULL). */
int hd_metrics_render(hd_metrics *m, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_METRICS_H */
