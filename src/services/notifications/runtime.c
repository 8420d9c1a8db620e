/* notifications/runtime.c — threads, connections and the order of stopping (runtime.h). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/amqp.h"
#include "herald/backoff.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/http.h"
#include "herald/inbox.h"
#include "herald/metrics.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/retry.h"
#include "herald/stop.h"
#include "herald/template.h"
#include "herald/topology.h"

#include "api.h"
#include "integration.h"
#include "runtime.h"
#include "topology.h"
#include "templates.h"

#define SWEEP_BATCH      100
#define PURGE_EVERY_MS   (10 * 60 * 1000)
#define CONSUMER_POLL_MS 200
#define DLQ_SAMPLE_MS    15000 /* how often the consumer thread reads the DLQ's depth */

/* Never released: a signal that comes late must still find its pipe. */
hd_stop notif_stop;

#define STOP (&notif_stop)

static void on_signal(int sig)
{
    (void)sig;
    hd_stop_request(&notif_stop); /* async-signal-safe; the waits wake at once */
}

int notif_install_signals(hd_error *err)
{
    int rc = hd_stop_init(&notif_stop, err);
    if (rc < 0)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A peer that closes its socket while we write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Everything the process holds, so that one function can free it in the right order. */
typedef struct runtime {
    const notif_config *cfg;
    hd_logger *lg;
    hd_metrics *metrics;
    notif_metrics nm;
    hd_templates *templates;
    notif_app *app;
    atomic_int broker_up;

    hd_store *consumer_store, *sweeper_store, *api_store, *relay_store;
    char *aux_url;         /* the URL of the sweeper's, API's and relay's stores (sized_url) */
    char *consumer_url;    /* the consumer's store's URL, when sized_url changed it */
    hd_replica *api_reads; /* over api_store: the API's reads that may be stale */
    hd_sender *consumer_sender, *sweeper_sender;
    notif_worker consumer_w, sweeper_w;
    hd_consumer *consumer;

    hd_outbox_notifier *sweeper_wake; /* "a notification is due now" */
    hd_outbox_notifier *outbox_wake;  /* "rows were committed to the outbox" */
    pthread_t sweeper_thread, relay_thread;
    int sweeper_started, relay_started;
    hd_amqp *relay_amqp;
    hd_relay *relay;

    notif_api *api;
    hd_http_server *http;

    /* The runtime's own metrics (runtime_metrics): the relay's latency, and what the
     * consumer thread samples between polls. */
    hd_histogram *relay_confirm;
    hd_counter *redeliveries;
    uint64_t redelivered_seen; /* the consumer's redelivered count already counted */
    atomic_llong dlq_depth;    /* the last sample; -1: none, or the last sample failed */
    hd_amqp *stats_amqp;       /* the consumer thread's connection for the samples */
    int64_t dlq_next_ms;       /* monotonic: when to sample again */
    char dlq_name[HD_AMQP_NAME_MAX + 1];
} runtime;

/* A code that retrying cannot fix. */
static int permanent(int rc)
{
    return rc == HD_EURL || rc == HD_EAUTH || rc == HD_EINVAL || rc == HD_EUNSUPPORTED ||
           rc == HD_ECONFIG;
}

/* ---- connections, waiting for servers that are not up yet ------------------------------ */

/* In a deployment the database, the broker and the service start in any order: wait for
 * the servers with capped, jittered backoff instead of failing at once. */
static int open_store(runtime *rt, const char *url, hd_store **out, hd_error *err)
{
    hd_backoff b;
    hd_backoff_init(&b, 200, 10000, (uint64_t)hd_clock_ns());
    for (unsigned attempt = 0;; attempt++) {
        int rc = hd_store_open(url, out, err);
        if (rc == 0 || permanent(rc))
            return rc;
        int64_t delay = hd_backoff_delay(&b, attempt < 16 ? attempt : 16);
        hd_log_json(rt->lg, HD_LOG_WARN, NULL, "database unreachable, retrying",
                    json_pack("{s:s, s:I}", "error", err->text, "retry_in_ms", (json_int_t)delay));
        if (hd_stop_wait_ms(STOP, delay))
            return HD_EINTR;
    }
}

/* The TLS files of HD_AMQP_* into options made for one connection. */
static void amqp_tls_into(const runtime *rt, hd_amqp_options *ao)
{
    ao->ca_cert_path = rt->cfg->amqp_tls.ca_cert_path;
    ao->client_cert_path = rt->cfg->amqp_tls.client_cert_path;
    ao->client_key_path = rt->cfg->amqp_tls.client_key_path;
}

static int open_broker(runtime *rt, const char *name, hd_amqp **out, hd_error *err)
{
    hd_amqp_options ao = {.connection_name = name};
    amqp_tls_into(rt, &ao);
    hd_backoff b;
    hd_backoff_init(&b, 200, 10000, (uint64_t)hd_clock_ns());
    for (unsigned attempt = 0;; attempt++) {
        int rc = hd_amqp_open(rt->cfg->amqp_url, &ao, out, err);
        if (rc == 0 || permanent(rc))
            return rc;
        int64_t delay = hd_backoff_delay(&b, attempt < 16 ? attempt : 16);
        hd_log_json(rt->lg, HD_LOG_WARN, NULL, "broker unreachable, retrying",
                    json_pack("{s:s, s:I}", "error", err->text, "retry_in_ms", (json_int_t)delay));
        if (hd_stop_wait_ms(STOP, delay))
            return HD_EINTR;
    }
}

/* One sender per sending thread: the SMTP sender owns a libcurl handle. */
static int new_sender(runtime *rt, hd_sender **out, hd_error *err)
{
    if (rt->cfg->smtp_url == NULL)
        return hd_sender_log_new(rt->lg, out) < 0 ? hd_error_set(err, HD_ENOMEM, NULL) : 0;
    hd_sender_smtp_options o = rt->cfg->smtp;
    o.timeout_ms = rt->cfg->smtp_timeout_ms;
    return hd_sender_smtp_new_with(rt->cfg->smtp_url, rt->cfg->app.mail_from, &o, out, err);
}

/* HD_SMTP_TLS=required: prove at start-up that the server does STARTTLS with a certificate
 * the CA file trusts, instead of failing the first mail. A server that cannot be reached is
 * only a warning (it may come up later; sends retry), a TLS failure stops the start. */
static int check_sender(runtime *rt, hd_error *err)
{
    if (rt->cfg->smtp_url == NULL || rt->cfg->smtp.starttls != HD_SMTP_STARTTLS_REQUIRED)
        return 0;
    int rc = hd_sender_smtp_check(rt->consumer_sender, err);
    if (rc == HD_ECONNECT) {
        hd_log_warn(rt->lg, NULL, "SMTP server unreachable at start-up", "error", err->text, NULL);
        return 0;
    }
    if (rc < 0)
        return hd_error_set(err, HD_ECONFIG, "HD_SMTP_TLS=required: %s", err->text);
    hd_log_info(rt->lg, NULL, "SMTP: STARTTLS verified", NULL);
    return 0;
}

/* ---- the runtime's metrics --------------------------------------------------------------- */

/* The relay's on_confirm: one observation per confirmed message, on the relay's thread. */
static void observe_confirm(void *ctx, double seconds)
{
    hd_histogram_observe(ctx, NULL, seconds);
}

/* The DLQ depth as last sampled by the consumer thread; no sample yet, or the last one
 * failed: the series is left out (an unknown depth must not read as an empty queue). */
static int gauge_dlq(void *ctx, double *out)
{
    long long v = atomic_load(&((runtime *)ctx)->dlq_depth);
    if (v < 0)
        return HD_ESTATE;
    *out = (double)v;
    return 0;
}

/* Same names and buckets as the users service's, so one dashboard shows both. */
static int runtime_metrics(runtime *rt)
{
    static const double confirm_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    atomic_init(&rt->dlq_depth, -1);
    if (hd_retry_dlq_name(rt->dlq_name, sizeof rt->dlq_name, rt->cfg->queue) < 0)
        return HD_ERANGE;
    rt->relay_confirm = hd_metrics_histogram(
        rt->metrics, "relay_publish_confirm_seconds",
        "Time from publishing an outbox row to the broker's confirm, per message.", confirm_buckets,
        sizeof confirm_buckets / sizeof confirm_buckets[0], NULL);
    rt->redeliveries = hd_metrics_counter(
        rt->metrics, "consumer_redeliveries_total",
        "Deliveries the broker flagged redelivered (a consumer died or reconnected holding "
        "them).",
        "queue", NULL);
    hd_gauge *dlq = hd_metrics_gauge(rt->metrics, "dead_letter_queue_messages",
                                     "Messages ready in the dead-letter queue (sampled every "
                                     "15 s by the consumer).",
                                     "queue", NULL);
    if (rt->relay_confirm == NULL || rt->redeliveries == NULL || dlq == NULL ||
        hd_gauge_set_func(dlq, (const char *const[]){rt->dlq_name}, gauge_dlq, rt) < 0)
        return HD_ENOMEM;
    /* Visible at 0 from the start, like the label-less counters. */
    return hd_counter_inc(rt->redeliveries, (const char *const[]){rt->cfg->queue}, 0);
}

/* Between polls, on the consumer's thread: count new redeliveries, and every DLQ_SAMPLE_MS
 * read the DLQ's depth with a passive declare. Not at scrape time: a scrape must not open
 * connections or wait for the broker, and the consumer's own connection belongs to its
 * thread (amqp.h). So the sample runs here, on one long-lived connection of its own
 * (opened on first use, reopened at the next sample after a failure; no heartbeats, since
 * it idles between samples). Known limit: the gauge is up to DLQ_SAMPLE_MS old, and a
 * sample blocks the consumer for one RPC (about a millisecond; at most the RPC timeout
 * when the broker hangs). */
static void sample_consumer(runtime *rt)
{
    hd_consumer_counts c;
    hd_consumer_get_counts(rt->consumer, &c);
    if (c.redelivered > rt->redelivered_seen) {
        hd_counter_inc(rt->redeliveries, (const char *const[]){rt->cfg->queue},
                       (double)(c.redelivered - rt->redelivered_seen));
        rt->redelivered_seen = c.redelivered;
    }
    int64_t now = hd_clock_ms();
    if (now < rt->dlq_next_ms)
        return;
    rt->dlq_next_ms = now + DLQ_SAMPLE_MS;
    hd_error err;
    int rc = 0;
    if (rt->stats_amqp == NULL) {
        hd_amqp_options ao = {.connection_name = "herald-notifications stats",
                              .heartbeat_s = -1,
                              .connect_timeout_ms = 2000,
                              .rpc_timeout_ms = 5000};
        amqp_tls_into(rt, &ao);
        rc = hd_amqp_open(rt->cfg->amqp_url, &ao, &rt->stats_amqp, &err);
    }
    hd_queue_info info;
    if (rc == 0)
        rc = hd_queue_inspect(rt->stats_amqp, rt->dlq_name, &info, &err);
    if (rc == 0) {
        atomic_store(&rt->dlq_depth, (long long)info.message_count);
        return;
    }
    atomic_store(&rt->dlq_depth, -1);
    hd_amqp_close(rt->stats_amqp);
    rt->stats_amqp = NULL;
    hd_log_warn(rt->lg, NULL, "cannot sample the dead-letter queue", "error", err.text, NULL);
}

/* ---- the application ---------------------------------------------------------------------- */

/* The cache_kib a SQLite URL sets (its last one, as the store reads it), or 0 when none. */
static long url_cache_kib(const char *url)
{
    const char *q = strchr(url, '?'), *k = NULL;
    for (const char *p = q; p != NULL && (p = strstr(p, "cache_kib=")) != NULL; p += 10)
        if (p[-1] == '?' || p[-1] == '&')
            k = p;
    return k ? strtol(k + 10, NULL, 10) : 0;
}

/* SQLite gives each connection its own page cache, 2,000 KiB by default, and this process
 * holds four connections to one file: that was the largest part of its own memory
 * (docs/modules/notifications.md, "Memory"). The sweeper, the API and the relay touch a few
 * pages each time (due rows, one user's history, the outbox's tail): their connections get
 * cache_kib=aux_cache_kib appended to the URL (the store's own option; a later cache_kib
 * overrides an earlier one). The consumer writes a window of up to 256 deliveries per
 * transaction into growing indexes, but its cache starts again whenever another connection
 * has committed (the relay's marks do, after each window): 1,024 KiB (consumer_cache_kib)
 * measured no slower than 2,000 and 0.7-1.1 MiB less at the peak (docs/bench.md, eleventh
 * pass). A cache_kib in the URL itself is kept for the consumer. PostgreSQL URLs are left
 * alone. Sets *out (NULL: the URL as given). */
static int sized_url(const char *url, long kib, int unless_set, char **out, hd_error *err)
{
    *out = NULL;
    if (kib <= 0 || strncmp(url, "sqlite:", 7) != 0)
        return 0;
    if (unless_set && url_cache_kib(url) > 0)
        return 0;
    size_t cap = strlen(url) + 32;
    if ((*out = malloc(cap)) == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    snprintf(*out, cap, "%s%ccache_kib=%ld", url, strchr(url, '?') ? '&' : '?', kib);
    return 0;
}

static int open_stores(runtime *rt, hd_error *err)
{
    int rc = sized_url(rt->cfg->database_url, rt->cfg->aux_cache_kib, 0, &rt->aux_url, err);
    if (rc == 0)
        rc = sized_url(rt->cfg->database_url, rt->cfg->consumer_cache_kib, 1, &rt->consumer_url,
                       err);
    const char *aux = rt->aux_url != NULL ? rt->aux_url : rt->cfg->database_url;
    const char *own = rt->consumer_url != NULL ? rt->consumer_url : rt->cfg->database_url;
    if (rc == 0 && strncmp(rt->cfg->database_url, "sqlite:", 7) == 0) {
        char mine[24], others[24];
        long kib[2] = {url_cache_kib(own), url_cache_kib(aux)}; /* 0: SQLite's 2,000 */
        snprintf(mine, sizeof mine, "%ld", kib[0] ? kib[0] : 2000L);
        snprintf(others, sizeof others, "%ld", kib[1] ? kib[1] : 2000L);
        hd_log_info(rt->lg, NULL, "SQLite page caches", "consumer_kib", mine, "others_kib", others,
                    NULL);
    }
    if (rc == 0)
        rc = open_store(rt, own, &rt->consumer_store, err);
    /* Migrate on one handle before the others open: two migrations racing would only wait
     * for each other, but one is simpler to read in the logs. */
    if (rc == 0 && (rc = notif_app_migrate(rt->consumer_store, err)) == 0)
        rc = open_store(rt, aux, &rt->sweeper_store, err);
    if (rc == 0)
        rc = open_store(rt, aux, &rt->api_store, err);
    if (rc == 0 && rt->cfg->relay)
        rc = open_store(rt, aux, &rt->relay_store, err);
    /* The relay's leases and marks may be lost in a power failure (a notification_sent goes
     * out again): they need not wait for the disk (store.h, relay.md). */
    if (rc == 0 && rt->cfg->relay && hd_store_relax_sync(rt->relay_store, err) < 0)
        hd_log_warn(rt->lg, NULL, "relay: commits stay synchronous", "error", err->text, NULL);
    /* Its claims wait in line for the write lock (store.h): the consumer's and the API's
     * commits cannot starve them. */
    if (rc == 0 && rt->cfg->relay)
        (void)hd_store_wait_in_line(rt->relay_store, NULL);
    return rc;
}

static int start_app(runtime *rt, hd_error *err)
{
    int rc = notif_templates_open(rt->cfg->templates_dir, &rt->templates, err);
    if (rc < 0)
        return rc;
    if ((rt->metrics = hd_metrics_new()) == NULL ||
        notif_metrics_register(rt->metrics, &rt->nm) < 0 || runtime_metrics(rt) < 0)
        return hd_error_set(err, HD_ENOMEM, "metrics");
    if ((rc = notif_app_new(&rt->cfg->app, rt->templates, rt->lg, &rt->nm, &rt->app, err)) < 0)
        return rc;
    rt->sweeper_wake = hd_outbox_notifier_new();
    rt->outbox_wake = hd_outbox_notifier_new();
    if (rt->sweeper_wake == NULL || rt->outbox_wake == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    notif_app_on_due(rt->app, hd_outbox_notifier_signal, rt->sweeper_wake);
    if ((rc = open_stores(rt, err)) < 0)
        return rc;
    /* A standby away at start-up is not fatal: reads use the primary until it answers. */
    hd_replica_options ro = {.max_lag_ms = rt->cfg->read_max_lag_ms};
    hd_error why;
    if ((rc = hd_replica_open(rt->api_store, rt->cfg->database_read_url, &ro, &rt->api_reads,
                              &why)) < 0)
        return hd_error_set(err, rc, "HD_DATABASE_READ_URL: %s", why.text);
    /* The stores that append to the outbox wake the relay after their commits. */
    hd_outbox_set_notifier(rt->consumer_store, rt->outbox_wake);
    hd_outbox_set_notifier(rt->sweeper_store, rt->outbox_wake);
    hd_outbox_set_notifier(rt->api_store, rt->outbox_wake);
    if ((rc = new_sender(rt, &rt->consumer_sender, err)) < 0 ||
        (rc = new_sender(rt, &rt->sweeper_sender, err)) < 0 || (rc = check_sender(rt, err)) < 0)
        return rc;
    notif_worker_init(&rt->consumer_w, rt->app, rt->consumer_store, rt->consumer_sender);
    notif_worker_init(&rt->sweeper_w, rt->app, rt->sweeper_store, rt->sweeper_sender);
    return 0;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

static int broker_up(void *ctx)
{
    return atomic_load(&((runtime *)ctx)->broker_up);
}

static int start_http(runtime *rt, hd_error *err)
{
    notif_api_deps deps = {.app = rt->app,
                           .store = rt->api_store,
                           .replica = rt->api_reads,
                           .metrics = rt->metrics,
                           .lg = rt->lg,
                           .broker_up = broker_up,
                           .broker_ctx = rt,
                           .token = rt->cfg->api_token,
                           .open = rt->cfg->api_open};
    if (rt->cfg->api_open)
        hd_log_warn(rt->lg, NULL,
                    "the HTTP API runs OPEN: no authentication (HD_NOTIFICATIONS_API_OPEN); "
                    "anyone who reaches it can read every history and send mail in our name",
                    NULL);
    hd_http_options opts = {
        .bind_address = rt->cfg->listen_address, .port = rt->cfg->listen_port, .logger = rt->lg};
    int rc = notif_api_new(&deps, &rt->api, err);
    if (rc == 0)
        rc = hd_http_server_new(&opts, &rt->http, err);
    if (rc == 0)
        rc = notif_api_mount(rt->api, rt->http, err);
    if (rc == 0)
        rc = hd_http_server_start(rt->http, err);
    if (rc == 0)
        hd_log_json(rt->lg, HD_LOG_INFO, NULL, "listening",
                    json_pack("{s:s, s:i}", "address", rt->cfg->listen_address, "port",
                              (int)hd_http_server_port(rt->http)));
    return rc;
}

/* ---- the sweeper -------------------------------------------------------------------------- */

static void purge_inbox(runtime *rt, int64_t *next)
{
    if (rt->cfg->inbox_retention_ms <= 0 || hd_clock_ms() < *next)
        return;
    *next = hd_clock_ms() + PURGE_EVERY_MS;
    hd_error err;
    int rc = hd_inbox_purge(rt->sweeper_store, rt->cfg->inbox_retention_ms, &err);
    if (rc < 0)
        hd_log_warn(rt->lg, NULL, "inbox purge failed", "error", err.text, NULL);
}

static void *sweeper_main(void *arg)
{
    runtime *rt = arg;
    uint64_t seen = 0;
    int64_t next_purge = hd_clock_ms();
    while (!hd_stop_requested(STOP)) {
        hd_error err;
        int n = notif_sweep(&rt->sweeper_w, 0, SWEEP_BATCH, &err);
        if (n < 0)
            hd_log_warn(rt->lg, NULL, "sweep failed", "error", err.text, NULL);
        if (n == SWEEP_BATCH)
            continue; /* more may be due: no sleep */
        purge_inbox(rt, &next_purge);
        hd_outbox_notifier_wait(rt->sweeper_wake, &seen, rt->cfg->sweep_ms);
    }
    return NULL;
}

/* ---- the broker: topology, relay, consumer ------------------------------------------------ */

/* The users exchange (the users service's relay declares it the same way), the work queue
 * with its retry tiers and dead-letter queue, and one binding per consumed event type: the
 * description herald-admin topology shows too (topology.h). */
static int declare_topology(runtime *rt, hd_error *err)
{
    hd_amqp *a = NULL;
    int rc = open_broker(rt, "herald-notifications setup", &a, err);
    if (rc < 0)
        return rc;
    rc = notif_topology_declare(a, rt->cfg->users_exchange, rt->cfg->queue, &rt->cfg->retry, err);
    hd_amqp_close(a);
    return rc;
}

static void *relay_main(void *arg)
{
    runtime *rt = arg;
    hd_error err;
    if (hd_relay_run(rt->relay, STOP, &err) < 0)
        hd_log_error(rt->lg, NULL, "relay stopped", "error", err.text, NULL);
    return NULL;
}

static int start_relay(runtime *rt, hd_error *err)
{
    if (!rt->cfg->relay)
        return 0;
    int rc = open_broker(rt, "herald-notifications relay", &rt->relay_amqp, err);
    if (rc < 0)
        return rc;
    /* The notifications.* events are announcements: nothing needs to subscribe to them
     * (unlike users.*, whose consumer must exist), so an event nobody listens to yet is not
     * a failure to retry and park. */
    hd_relay_options opts = {.notifier = rt->outbox_wake,
                             .logger = rt->lg,
                             .no_mandatory = 1,
                             .no_handoff = !rt->cfg->relay_handoff,
                             .on_confirm = observe_confirm,
                             .on_confirm_ctx = rt->relay_confirm};
    if ((rc = hd_relay_new(rt->relay_store, rt->relay_amqp, &opts, &rt->relay, err)) < 0)
        return rc;
    if (pthread_create(&rt->relay_thread, NULL, relay_main, rt) != 0)
        return hd_error_set(err, HD_ENOMEM, "cannot start the relay thread");
    rt->relay_started = 1;
    return 0;
}

static int open_consumer(runtime *rt, hd_error *err)
{
    hd_amqp_options ao = {.connection_name = "herald-notifications consumer"};
    amqp_tls_into(rt, &ao);
    hd_consumer_options o = {
        .queue = rt->cfg->queue,
        .handler = notif_handle_delivery,
        .batch_handler = notif_handle_batch,
        .ctx = &rt->consumer_w,
        .prefetch = rt->cfg->prefetch,
        .batch_max = (size_t)rt->cfg->prefetch,
        .declare = 1,
        .retry = &rt->cfg->retry,
        .amqp = &ao,
    };
    int rc = hd_consumer_open(rt->cfg->amqp_url, &o, &rt->consumer, err);
    if (rc == 0)
        atomic_store(&rt->broker_up, 1);
    return rc;
}

/* Poll until stopped, repairing the connection when it breaks (unacked messages are
 * redelivered by the broker meanwhile: nothing is lost, the inbox drops duplicates). */
static int consume(runtime *rt)
{
    hd_backoff b;
    hd_backoff_init(&b, 100, 5000, (uint64_t)hd_clock_ns());
    unsigned failures = 0;
    while (!hd_stop_requested(STOP)) {
        hd_error err;
        /* Wait on the socket and the stop together (a stop ends the wait at once), then
         * read what came without blocking. */
        int rc = hd_consumer_wait(rt->consumer, STOP, CONSUMER_POLL_MS);
        if (rc == HD_EINTR)
            break;
        if (rc > 0)
            rc = hd_consumer_poll(rt->consumer, 0, &err);
        else if (rc < 0)
            hd_error_set(&err, rc, "waiting for a delivery failed");
        sample_consumer(rt);
        if (rc >= 0) {
            failures = 0;
            continue;
        }
        atomic_store(&rt->broker_up, 0);
        hd_log_warn(rt->lg, NULL, "consumer interrupted, reconnecting", "error", err.text, NULL);
        if (permanent(rc))
            return 1;
        hd_stop_wait_ms(STOP, hd_backoff_delay(&b, failures < 16 ? failures++ : failures));
        rc = hd_consumer_reconnect(rt->consumer, STOP, &err);
        if (rc == 0)
            atomic_store(&rt->broker_up, 1);
        else if (rc != HD_EINTR && permanent(rc)) {
            hd_log_error(rt->lg, NULL, "cannot reconnect to the broker", "error", err.text, NULL);
            return 1;
        }
    }
    return 0;
}

/* ---- stopping ------------------------------------------------------------------------------ */

static void stop_and_free(runtime *rt)
{
    hd_stop_request(&notif_stop);
    hd_consumer_close(rt->consumer); /* unacked deliveries go back to the queue */
    hd_amqp_close(rt->stats_amqp);
    if (rt->http != NULL)
        hd_http_server_stop(rt->http); /* in-flight requests finish */
    if (rt->sweeper_started) {
        hd_outbox_notifier_signal(rt->sweeper_wake);
        pthread_join(rt->sweeper_thread, NULL);
    }
    if (rt->relay_started) {
        hd_outbox_notifier_signal(rt->outbox_wake);
        pthread_join(rt->relay_thread, NULL);
    }
    hd_outbox_set_notifier(rt->consumer_store, NULL);
    hd_outbox_set_notifier(rt->sweeper_store, NULL);
    hd_outbox_set_notifier(rt->api_store, NULL);
    hd_http_server_free(rt->http);
    notif_api_free(rt->api);
    hd_relay_free(rt->relay);
    hd_amqp_close(rt->relay_amqp);
    hd_sender_free(rt->consumer_sender);
    hd_sender_free(rt->sweeper_sender);
    hd_store_close(rt->consumer_store);
    hd_store_close(rt->sweeper_store);
    hd_store_close(rt->api_store);
    hd_store_close(rt->relay_store);
    free(rt->aux_url);
    free(rt->consumer_url);
    hd_outbox_notifier_free(rt->sweeper_wake);
    hd_outbox_notifier_free(rt->outbox_wake);
    notif_app_free(rt->app);
    hd_metrics_free(rt->metrics);
    hd_replica_close(rt->api_reads); /* after the metrics: their gauges read it */
    hd_templates_close(rt->templates);
}

/* Start everything in the order that lets each part work as soon as it runs: the API and
 * the sweeper first (pending notifications of a previous run go out even while the broker
 * is down), then the broker's part. */
static int start(runtime *rt, hd_error *err)
{
    int rc = start_app(rt, err);
    if (rc == 0)
        rc = start_http(rt, err);
    if (rc == 0) {
        if (pthread_create(&rt->sweeper_thread, NULL, sweeper_main, rt) != 0)
            return hd_error_set(err, HD_ENOMEM, "cannot start the sweeper thread");
        rt->sweeper_started = 1;
    }
    if (rc == 0)
        rc = declare_topology(rt, err);
    if (rc == 0)
        rc = start_relay(rt, err);
    if (rc == 0)
        rc = open_consumer(rt, err);
    return rc;
}

int notif_run(const notif_config *cfg, hd_logger *lg)
{
    runtime rt;
    memset(&rt, 0, sizeof rt);
    rt.cfg = cfg;
    rt.lg = lg;
    atomic_init(&rt.broker_up, 0);
    hd_error err;
    hd_error_clear(&err);
    int status = 0;
    int rc = start(&rt, &err);
    if (rc == 0) {
        hd_log_json(lg, HD_LOG_INFO, NULL, "consuming",
                    json_pack("{s:s, s:i, s:s}", "queue", cfg->queue, "prefetch", cfg->prefetch,
                              "sender", hd_sender_name(rt.consumer_sender)));
        status = consume(&rt);
    } else if (rc != HD_EINTR) {
        hd_log_error(lg, NULL, "cannot start", "error", err.text, NULL);
        status = 1;
    }
    stop_and_free(&rt);
    hd_log_info(lg, NULL, status == 0 ? "stopped" : "stopped after a failure", NULL);
    return status;
}
