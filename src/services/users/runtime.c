/* users/runtime.c — herald-users as a process: wiring, the in-process relay, stopping
 * (runtime.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "herald/amqp.h"
#include "herald/http.h"
#include "herald/metrics.h"
#include "herald/metrics_replica.h"
#include "herald/clock.h"
#include "herald/outbox.h"
#include "herald/ratelimit.h"
#include "herald/relay.h"
#include "herald/stop.h"
#include "herald/store.h"

#include "herald/consumer.h"
#include "herald/topology.h"

#include "api.h"
#include "application.h"
#include "messages.h"
#include "messages_api.h"
#include "repository.h"
#include "runtime.h"

/* Everything users_run builds, so that one function can take it down. */
typedef struct service {
    const hd_config *cfg;
    hd_logger *log;
    const char *db_url;
    hd_store *store;
    hd_store *readers[USERS_READERS_DEFAULT]; /* the app's reads by key (users_app_add_reader) */
    hd_replica *replica;                      /* reads that may be stale (HD_DATABASE_READ_URL) */
    users_app *app;
    hd_metrics *metrics;
    hd_histogram *relay_confirm; /* relay_publish_confirm_seconds; NULL without a relay */
    hd_http_server *http;
    users_http *api;
    /* the in-process relay */
    const char *amqp_url;
    hd_amqp_options amqp_tls; /* HD_AMQP_CA_FILE, _CERT_FILE, _KEY_FILE; the rest unused */
    pthread_t relay_thread;
    int relay_started;
    hd_stop relay_stop;         /* main asks the relay thread to stop */
    pthread_mutex_t relay_lock; /* guards relay: the thread frees it, /metrics reads it */
    hd_relay *relay;
    hd_outbox_notifier *notifier;
    int relay_stop_ready; /* relay_stop was initialised */
    /* rate limits of the public routes (NULL: off) */
    hd_ratelimit *client_limit, *email_limit;
    /* /health's broker check, cached (health()) */
    pthread_mutex_t health_lock;
    int64_t broker_checked_ms; /* monotonic; 0: never */
    int broker_ok, broker_probing;
    /* the messages feature (messages.h): its own store handle for the HTTP side, and a
     * consumer thread (with its own) storing what the relay published, through the inbox */
    hd_store *msg_store;
    messages_app *messages;
    messages_http *messages_api;
    pthread_t consumer_thread;
    int consumer_started;
} service;

#define ADMIN_TOKEN_MIN        32   /* characters: 128 bits as hex, or more */
#define HEALTH_BROKER_EVERY_MS 5000 /* /health opens at most one AMQP connection this often */
#define RATE_CLIENT_DEFAULT    "30/m"
#define RATE_CLIENT_BURST      20
#define RATE_EMAIL_DEFAULT     "5/h"
#define RATE_EMAIL_BURST       3

/* ---- settings ------------------------------------------------------------------------- */

/* The application's settings from cfg. Strings stay borrowed from cfg. */
static int read_app_config(const hd_config *cfg, users_config *out, hd_error *err)
{
    memset(out, 0, sizeof *out);
    out->verify_base_url =
        hd_config_get(cfg, "HD_USERS_VERIFY_BASE_URL", USERS_VERIFY_BASE_DEFAULT);
    out->reset_base_url = hd_config_get(cfg, "HD_USERS_RESET_BASE_URL", USERS_RESET_BASE_DEFAULT);
    int rc = hd_config_get_duration_ms(cfg, "HD_USERS_TOKEN_TTL", USERS_VERIFY_TTL_DEFAULT_MS, 1000,
                                       30LL * 24 * 3600 * 1000, &out->verify_ttl_ms, err);
    if (rc == 0)
        rc = hd_config_get_duration_ms(cfg, "HD_USERS_RESET_TOKEN_TTL", USERS_RESET_TTL_DEFAULT_MS,
                                       1000, 24LL * 3600 * 1000, &out->reset_ttl_ms, err);
    int64_t hashing = USERS_HASHING_DEFAULT;
    if (rc == 0)
        rc = hd_config_get_int(cfg, "HD_USERS_MAX_HASHING", USERS_HASHING_DEFAULT, 1, 256, &hashing,
                               err);
    if (rc == 0)
        rc = hd_config_get_duration_ms(cfg, "HD_USERS_HASH_WAIT", USERS_HASH_WAIT_DEFAULT_MS, 1,
                                       60000, &out->hash_wait_ms, err);
    if (rc < 0)
        return rc;
    out->max_hashing = (unsigned)hashing;
    const char *cost = hd_config_get(cfg, "HD_USERS_PWHASH", "interactive");
    if (strcmp(cost, "moderate") == 0) {
        out->pwhash_opslimit = crypto_pwhash_OPSLIMIT_MODERATE;
        out->pwhash_memlimit = crypto_pwhash_MEMLIMIT_MODERATE;
    } else if (strcmp(cost, "interactive") != 0 && *cost != '\0') {
        return hd_error_set(err, HD_ECONFIG,
                            "HD_USERS_PWHASH: '%s' is not 'interactive' or 'moderate'", cost);
    }
    return 0;
}

/* ---- metrics and health ---------------------------------------------------------------- */

static int gauge_outbox_pending(void *ctx, double *out)
{
    int64_t v;
    int rc = users_app_outbox_depth(ctx, &v, NULL, NULL, NULL);
    *out = (double)v;
    return rc;
}

static int gauge_outbox_oldest(void *ctx, double *out)
{
    int64_t ms;
    int rc = users_app_outbox_depth(ctx, NULL, &ms, NULL, NULL);
    *out = (double)ms / 1000.0;
    return rc;
}

static int gauge_outbox_parked(void *ctx, double *out)
{
    int64_t v;
    int rc = users_app_outbox_depth(ctx, NULL, NULL, &v, NULL);
    *out = (double)v;
    return rc;
}

/* The relay's totals: one callback per fate, the fate chosen by the context's address. */
typedef struct relay_gauge {
    service *svc;
    size_t offset; /* of the uint64_t in hd_relay_stats */
} relay_gauge;

static int gauge_relay(void *ctx, double *out)
{
    relay_gauge *g = ctx;
    hd_relay_stats st;
    pthread_mutex_lock(&g->svc->relay_lock);
    if (g->svc->relay == NULL) {
        pthread_mutex_unlock(&g->svc->relay_lock);
        return HD_ESTATE; /* not connected yet: leave the series out */
    }
    hd_relay_get_stats(g->svc->relay, &st);
    pthread_mutex_unlock(&g->svc->relay_lock);
    uint64_t v;
    memcpy(&v, (const char *)&st + g->offset, sizeof v);
    *out = (double)v;
    return 0;
}

static relay_gauge relay_gauges[4];

/* The relay's on_confirm: one observation per confirmed message, on the relay's thread. */
static void observe_confirm(void *ctx, double seconds)
{
    hd_histogram_observe(ctx, NULL, seconds);
}

/* Publish-to-confirm: a local broker confirms a persistent message in about a millisecond;
 * tens of ms mean a slow disk or a quorum queue waiting for replicas; seconds, trouble. */
static const double confirm_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static int setup_metrics(service *svc, hd_error *err)
{
    svc->metrics = hd_metrics_new();
    if (svc->metrics == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    hd_gauge *pending = hd_metrics_gauge(svc->metrics, "outbox_pending",
                                         "Outbox rows waiting to be published.", NULL);
    hd_gauge *oldest = hd_metrics_gauge(svc->metrics, "outbox_oldest_age_seconds",
                                        "Age of the oldest row waiting (0 when none).", NULL);
    hd_gauge *parked = hd_metrics_gauge(svc->metrics, "outbox_parked",
                                        "Outbox rows parked after too many failures.", NULL);
    if (!pending || !oldest || !parked ||
        hd_gauge_set_func(pending, NULL, gauge_outbox_pending, svc->app) < 0 ||
        hd_gauge_set_func(oldest, NULL, gauge_outbox_oldest, svc->app) < 0 ||
        hd_gauge_set_func(parked, NULL, gauge_outbox_parked, svc->app) < 0)
        return hd_error_set(err, HD_ENOMEM, "cannot register the outbox gauges");
    if (hd_metrics_replica_register(svc->metrics, svc->replica) < 0)
        return hd_error_set(err, HD_ENOMEM, "cannot register the read standby's gauges");
    if (svc->amqp_url == NULL)
        return 0;
    /* Totals since start; a gauge because metrics.h computes only gauges on demand. */
    hd_gauge *fates = hd_metrics_gauge(svc->metrics, "relay_messages",
                                       "Messages the in-process relay handled, by outcome, "
                                       "since start.",
                                       "outcome", NULL);
    const struct {
        const char *outcome;
        size_t offset;
    } f[4] = {
        {"published", offsetof(hd_relay_stats, published)},
        {"confirmed", offsetof(hd_relay_stats, confirmed)},
        {"returned", offsetof(hd_relay_stats, returned)},
        {"parked", offsetof(hd_relay_stats, parked)},
    };
    for (size_t i = 0; i < 4; i++) {
        relay_gauges[i] = (relay_gauge){svc, f[i].offset};
        if (fates == NULL || hd_gauge_set_func(fates, (const char *[]){f[i].outcome}, gauge_relay,
                                               &relay_gauges[i]) < 0)
            return hd_error_set(err, HD_ENOMEM, "cannot register the relay gauges");
    }
    svc->relay_confirm = hd_metrics_histogram(
        svc->metrics, "relay_publish_confirm_seconds",
        "Time from publishing an outbox row to the broker's confirm, per message.", confirm_buckets,
        sizeof confirm_buckets / sizeof confirm_buckets[0], NULL);
    if (svc->relay_confirm == NULL)
        return hd_error_set(err, HD_ENOMEM, "cannot register the relay histogram");
    return 0;
}

/* The TLS files of HD_AMQP_* into options made for one connection. */
static void amqp_tls_into(const service *svc, hd_amqp_options *o)
{
    o->ca_cert_path = svc->amqp_tls.ca_cert_path;
    o->client_cert_path = svc->amqp_tls.client_cert_path;
    o->client_key_path = svc->amqp_tls.client_key_path;
}

/* Open (and close) one AMQP connection: can the broker be reached right now? */
static int probe_broker(service *svc)
{
    hd_amqp_options o = {
        .connect_timeout_ms = 2000, .heartbeat_s = -1, .connection_name = "herald-users health"};
    amqp_tls_into(svc, &o);
    hd_amqp *a = NULL;
    hd_error err;
    int rc = hd_amqp_open(svc->amqp_url, &o, &a, &err);
    hd_amqp_close(a);
    return rc;
}

/* /health: the store answers a query; with a relay, the broker accepts a connection.
 * The broker check is cached: it used to open a new AMQP connection per request, so
 * anybody polling /health (a load balancer every second, or an attacker in a loop) made
 * the broker accept, authenticate and tear down a connection each time. Now at most one
 * probe runs every HEALTH_BROKER_EVERY_MS; requests in between, and requests that arrive
 * while a probe runs, report the last result. (The relay's own connection cannot be
 * asked: an hd_amqp belongs to the relay thread, amqp.h.) */
static int health(void *ctx, json_t *checks)
{
    service *svc = ctx;
    hd_error err;
    int rc = users_app_ping(svc->app, &err);
    json_object_set_new(checks, "store", json_string(rc == 0 ? "ok" : "unreachable"));
    if (svc->amqp_url == NULL)
        return rc;
    int64_t now = hd_clock_ms();
    pthread_mutex_lock(&svc->health_lock);
    int due = !svc->broker_probing && (svc->broker_checked_ms == 0 ||
                                       now - svc->broker_checked_ms >= HEALTH_BROKER_EVERY_MS);
    if (due)
        svc->broker_probing = 1;
    pthread_mutex_unlock(&svc->health_lock);
    if (due) {
        int b = probe_broker(svc);
        pthread_mutex_lock(&svc->health_lock);
        svc->broker_ok = b == 0;
        svc->broker_checked_ms = hd_clock_ms();
        svc->broker_probing = 0;
        pthread_mutex_unlock(&svc->health_lock);
    }
    pthread_mutex_lock(&svc->health_lock);
    int known = svc->broker_checked_ms != 0, ok = svc->broker_ok;
    int64_t age = known ? hd_clock_ms() - svc->broker_checked_ms : 0;
    pthread_mutex_unlock(&svc->health_lock);
    /* Before the first probe finished: "checking", not a failure (the broker is needed
     * only by the relay; requests are served from the outbox either way). */
    json_object_set_new(checks, "broker",
                        json_string(!known ? "checking"
                                    : ok   ? "ok"
                                           : "unreachable"));
    if (known)
        json_object_set_new(checks, "broker_checked_ms_ago", json_integer(age));
    return rc < 0 ? rc : (!known || ok) ? 0 : HD_ECLOSED;
}

/* ---- the in-process relay ------------------------------------------------------------ */

/* Connect to the broker, retrying until it answers or we are told to stop. */
static hd_amqp *relay_connect(service *svc)
{
    hd_amqp_options o = {.connection_name = "herald-users relay"};
    amqp_tls_into(svc, &o);
    int64_t delay = 200;
    while (!hd_stop_requested(&svc->relay_stop)) {
        hd_amqp *a = NULL;
        hd_error err;
        if (hd_amqp_open(svc->amqp_url, &o, &a, &err) == 0)
            return a;
        hd_log_warn(svc->log, NULL, "relay: broker unreachable, retrying", "error", err.text, NULL);
        hd_stop_wait_ms(&svc->relay_stop, delay);
        delay = delay * 2 > 10000 ? 10000 : delay * 2;
    }
    return NULL;
}

static void *relay_main(void *arg)
{
    service *svc = arg;
    hd_store *store = NULL;
    hd_error err;
    /* Its own connection: a store handle belongs to one thread (store.h). */
    if (hd_store_open(svc->db_url, &store, &err) < 0) {
        hd_log_error(svc->log, NULL, "relay: cannot open the store", "error", err.text, NULL);
        return NULL;
    }
    /* Leases and marks may be lost in a power failure (an event goes out again): they need
     * not wait for the disk, nor hold the write lock the API's commits wait for (store.h). */
    if (hd_store_relax_sync(store, &err) < 0)
        hd_log_warn(svc->log, NULL, "relay: commits stay synchronous", "error", err.text, NULL);
    (void)hd_store_wait_in_line(store, NULL); /* the API's commits cannot starve its claims */
    hd_amqp *amqp = relay_connect(svc);
    hd_relay *relay = NULL;
    hd_relay_options opts = {.notifier = svc->notifier,
                             .logger = svc->log,
                             .exchange = hd_config_get(svc->cfg, "HD_RELAY_EXCHANGE", ""),
                             .on_confirm = observe_confirm,
                             .on_confirm_ctx = svc->relay_confirm};
    if (amqp != NULL && hd_relay_new(store, amqp, &opts, &relay, &err) == 0) {
        pthread_mutex_lock(&svc->relay_lock);
        svc->relay = relay;
        pthread_mutex_unlock(&svc->relay_lock);
        hd_log_info(svc->log, NULL, "relay: running", "relay_id", hd_relay_id(relay), NULL);
        if (hd_relay_run(relay, &svc->relay_stop, &err) < 0)
            hd_log_error(svc->log, NULL, "relay: stopped on a permanent error", "error", err.text,
                         NULL);
        pthread_mutex_lock(&svc->relay_lock);
        svc->relay = NULL;
        pthread_mutex_unlock(&svc->relay_lock);
        hd_relay_free(relay);
    } else if (amqp != NULL) {
        hd_log_error(svc->log, NULL, "relay: cannot start", "error", err.text, NULL);
    }
    hd_amqp_close(amqp);
    hd_store_close(store);
    return NULL;
}

static int start_relay(service *svc, hd_error *err)
{
    if (strncmp(svc->db_url, "sqlite::memory:", 15) == 0)
        return hd_error_set(
            err, HD_ECONFIG,
            "HD_AMQP_URL needs a database the relay can open too, not sqlite::memory:");
    svc->notifier = hd_outbox_notifier_new();
    if (svc->notifier == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_stop_init(&svc->relay_stop, err);
    if (rc < 0)
        return rc;
    svc->relay_stop_ready = 1;
    hd_outbox_set_notifier(svc->store, svc->notifier); /* the handlers' commits wake it */
    if (pthread_create(&svc->relay_thread, NULL, relay_main, svc) != 0)
        return hd_error_set(err, HD_ENOMEM, "cannot start the relay thread");
    svc->relay_started = 1;
    return 0;
}

/* ---- the messages consumer ------------------------------------------------------------
 * Queue MESSAGES_CONSUMER bound to the relay's topic exchange of messages.message_sent; each
 * delivery goes through messages_consume (inbox + INSERT in one transaction). It shares the
 * relay's stop: both belong to the broker side of the process. */

/* Declare the exchange (as the relay does: durable topic), the queue with its retry and
 * dead-letter topology, and the binding. Idempotent. */
static int messages_declare(const char *url, hd_error *err)
{
    hd_amqp_options o = {.connection_name = "herald-users messages topology"};
    hd_amqp *a = NULL;
    int rc = hd_amqp_open(url, &o, &a, err);
    if (rc < 0)
        return rc;
    hd_exchange_spec ex = {.name = MESSAGES_EXCHANGE, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_binding_spec b = {
        .queue = MESSAGES_CONSUMER, .exchange = MESSAGES_EXCHANGE, .key = MESSAGES_EVENT_SENT};
    rc = hd_exchange_declare(a, &ex, err);
    if (rc == 0)
        rc = hd_consumer_declare(a, MESSAGES_CONSUMER, NULL, err);
    if (rc == 0)
        rc = hd_queue_bind(a, &b, err);
    hd_amqp_close(a);
    return rc;
}

static void *messages_consumer_main(void *arg)
{
    service *svc = arg;
    hd_store *store = NULL;
    messages_app *app = NULL;
    hd_error err;
    if (hd_store_open(svc->db_url, &store, &err) < 0 ||
        messages_app_new(store, NULL, NULL, &app, &err) < 0) {
        hd_log_error(svc->log, NULL, "messages consumer: cannot start", "error", err.text, NULL);
        hd_store_close(store);
        return NULL;
    }
    int64_t delay = 200;
    while (!hd_stop_requested(&svc->relay_stop)) {
        /* One loop per process knocks on a broker that is down: the relay's (its backoff,
         * and /health's cached probe, bound the connections an outage costs:
         * integration.users_http counts them). The consumer starts once the relay is
         * connected, and only then retries on its own. */
        pthread_mutex_lock(&svc->relay_lock);
        int relay_up = svc->relay != NULL;
        pthread_mutex_unlock(&svc->relay_lock);
        if (!relay_up) {
            hd_stop_wait_ms(&svc->relay_stop, 200);
            continue;
        }
        hd_consumer *c = NULL;
        hd_consumer_options co = {.queue = MESSAGES_CONSUMER,
                                  .handler = messages_consume,
                                  .ctx = app,
                                  .prefetch = 16,
                                  .declare = 1};
        if (messages_declare(svc->amqp_url, &err) == 0 &&
            hd_consumer_open(svc->amqp_url, &co, &c, &err) == 0) {
            hd_log_info(svc->log, NULL, "messages consumer: running", "queue", MESSAGES_CONSUMER,
                        NULL);
            int run = hd_consumer_run(c, &svc->relay_stop, &err);
            hd_consumer_close(c);
            if (run == 0)
                continue; /* stopped */
            hd_log_error(svc->log, NULL, "messages consumer: stopped on an error; starting again",
                         "error", err.text, NULL);
        } else {
            hd_log_warn(svc->log, NULL, "messages consumer: broker unreachable, retrying", "error",
                        err.text, NULL);
        }
        hd_stop_wait_ms(&svc->relay_stop, delay);
        delay = delay * 2 > 10000 ? 10000 : delay * 2;
    }
    messages_app_free(app);
    hd_store_close(store);
    return NULL;
}

static int start_messages_consumer(service *svc, hd_error *err)
{
    if (svc->msg_store != NULL)
        hd_outbox_set_notifier(svc->msg_store, svc->notifier); /* POST /messages wakes the relay */
    if (pthread_create(&svc->consumer_thread, NULL, messages_consumer_main, svc) != 0)
        return hd_error_set(err, HD_ENOMEM, "cannot start the messages consumer thread");
    svc->consumer_started = 1;
    return 0;
}

static void stop_relay(service *svc)
{
    if (!svc->relay_started)
        return;
    hd_stop_request(&svc->relay_stop); /* wakes it at once, wherever it waits */
    pthread_join(svc->relay_thread, NULL);
    svc->relay_started = 0;
    if (svc->consumer_started)
        pthread_join(svc->consumer_thread, NULL);
    svc->consumer_started = 0;
}

/* ---- start and stop ------------------------------------------------------------------- */

/* The admin token guards every user's personal data: a short one can be guessed. Unset
 * is allowed (the admin routes then answer 401); set, it must be long. Its length is
 * the only thing the error says about it. */
static int check_admin_token(const hd_config *cfg, hd_error *err)
{
    size_t n = strlen(hd_config_get(cfg, "HD_USERS_ADMIN_TOKEN", ""));
    if (n > 0 && n < ADMIN_TOKEN_MIN)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_USERS_ADMIN_TOKEN is %zu characters long; it must have at least "
                            "%d (make one with: openssl rand -hex 32)",
                            n, ADMIN_TOKEN_MIN);
    return 0;
}

/* One limiter from "<rate>" (HD_USERS_RATE_<name>: "30/m"; "off": none) and its burst.
 * *out stays NULL when off. */
static int make_limit(const hd_config *cfg, const char *rate_key, const char *def_rate,
                      const char *burst_key, int64_t def_burst, int64_t keys, hd_ratelimit **out,
                      hd_error *err)
{
    *out = NULL;
    const char *rate = hd_config_get(cfg, rate_key, def_rate);
    if (strcmp(rate, "off") == 0)
        return 0;
    hd_ratelimit_options o = {.max_keys = (size_t)keys};
    int64_t burst;
    if (hd_ratelimit_parse_rate(rate, &o.per_second) < 0)
        return hd_error_set(err, HD_ECONFIG,
                            "%s: '%s' is not a rate like 30/m, 2/s or 5/h (or off)", rate_key,
                            rate);
    int rc = hd_config_get_int(cfg, burst_key, def_burst, 1, 1000000, &burst, err);
    if (rc < 0)
        return rc;
    o.burst = (double)burst;
    return hd_ratelimit_new(&o, out, err);
}

static int setup_limits(service *svc, hd_error *err)
{
    int64_t keys;
    int rc = hd_config_get_int(svc->cfg, "HD_USERS_RATE_KEYS", HD_RATELIMIT_KEYS_DEFAULT, 16,
                               10000000, &keys, err);
    if (rc == 0)
        rc = make_limit(svc->cfg, "HD_USERS_RATE_CLIENT", RATE_CLIENT_DEFAULT,
                        "HD_USERS_RATE_CLIENT_BURST", RATE_CLIENT_BURST, keys, &svc->client_limit,
                        err);
    if (rc == 0)
        rc =
            make_limit(svc->cfg, "HD_USERS_RATE_EMAIL", RATE_EMAIL_DEFAULT,
                       "HD_USERS_RATE_EMAIL_BURST", RATE_EMAIL_BURST, keys, &svc->email_limit, err);
    return rc;
}

static int start_http(service *svc, hd_error *err)
{
    char host[128];
    uint16_t port;
    if (hd_config_get_listen(svc->cfg, "HD_USERS_LISTEN", "127.0.0.1:8081", host, sizeof host,
                             &port, err) < 0)
        return HD_ECONFIG;
    /* 16 KiB: a registration is a few hundred bytes; anything far larger is not one. */
    hd_http_options o = {
        .bind_address = host, .port = port, .max_body_bytes = 16 * 1024, .logger = svc->log};
    int rc = hd_http_server_new(&o, &svc->http, err);
    if (rc < 0)
        return rc;
    const char *token = hd_config_get(svc->cfg, "HD_USERS_ADMIN_TOKEN", "");
    if (*token == '\0')
        hd_log_warn(svc->log, NULL, "HD_USERS_ADMIN_TOKEN is not set: admin routes answer 401",
                    NULL);
    users_http_options ho = {.app = svc->app,
                             .admin_token = token,
                             .logger = svc->log,
                             .metrics = svc->metrics,
                             .health = health,
                             .health_ctx = svc,
                             .client_limit = svc->client_limit,
                             .email_limit = svc->email_limit};
    rc = users_http_new(svc->http, &ho, &svc->api, err);
    if (rc == 0)
        rc = messages_http_new(svc->http, svc->messages, token, svc->log, &svc->messages_api, err);
    if (rc == 0)
        rc = hd_http_server_start(svc->http, err);
    if (rc == 0) {
        char port_text[8];
        snprintf(port_text, sizeof port_text, "%u", (unsigned)hd_http_server_port(svc->http));
        hd_log_info(svc->log, NULL, "listening", "address", host, "port", port_text, NULL);
    }
    return rc;
}

/* The standby for the users list (HD_DATABASE_READ_URL; unset: every read on the primary). A
 * standby that is down at start-up is not fatal: reads use the primary until it answers. */
static int open_replica(service *svc, hd_error *err)
{
    const char *url = hd_config_get(svc->cfg, "HD_DATABASE_READ_URL", "");
    hd_replica_options o = {0};
    int rc = hd_config_get_duration_ms(svc->cfg, "HD_DATABASE_READ_MAX_LAG",
                                       HD_REPLICA_MAX_LAG_DEFAULT, 1, 3600000, &o.max_lag_ms, err);
    if (rc < 0)
        return rc;
    hd_error why;
    if ((rc = hd_replica_open(svc->store, url, &o, &svc->replica, &why)) < 0)
        return hd_error_set(err, rc, "HD_DATABASE_READ_URL: %s", why.text);
    users_app_set_replica(svc->app, svc->replica);
    if (hd_replica_configured(svc->replica)) {
        hd_replica_stats st;
        hd_replica_stats_get(svc->replica, &st);
        hd_log_info(svc->log, NULL, "reads from a standby", "standby",
                    st.standby_up ? "up" : "down (reads on the primary until it answers)", NULL);
    }
    return 0;
}

static int start(service *svc, hd_error *err)
{
    svc->db_url = hd_config_get(svc->cfg, "HD_DATABASE_URL", "sqlite://users.db");
    const char *amqp = hd_config_get(svc->cfg, "HD_AMQP_URL", "");
    svc->amqp_url = *amqp ? amqp : NULL;
    users_config ac;
    int rc = check_admin_token(svc->cfg, err);
    if (rc == 0)
        rc = hd_config_amqp_tls(svc->cfg, &svc->amqp_tls, err);
    if (rc == 0)
        rc = read_app_config(svc->cfg, &ac, err);
    if (rc == 0)
        rc = setup_limits(svc, err);
    if (rc == 0)
        rc = hd_store_open(svc->db_url, &svc->store, err);
    if (rc == 0) {
        rc = users_repo_migrate(svc->store, err);
        if (rc > 0)
            hd_log_info(svc->log, NULL, "schema migrated", NULL);
    }
    if (rc >= 0)
        rc = users_app_new(svc->store, &ac, &svc->app, err);
    /* Handles of their own for GET /users/{id} and the e-mail look-up, so that reads do
     * not queue on the store lock the writes hold (application.h). Not for an in-memory
     * SQLite database: each connection to one is a database of its own, which the reads
     * would find empty. */
    int in_memory =
        strstr(svc->db_url, ":memory:") != NULL || strstr(svc->db_url, "mode=memory") != NULL;
    for (size_t i = 0; rc == 0 && !in_memory && i < USERS_READERS_DEFAULT; i++) {
        rc = hd_store_open(svc->db_url, &svc->readers[i], err);
        if (rc == 0 && (rc = users_app_add_reader(svc->app, svc->readers[i])) < 0)
            hd_error_set(err, rc, "cannot add a reader to the users app");
    }
    /* The messages feature: its own store handle (a handle serves one thread at a time,
     * and users_app keeps its own lock on the first). */
    if (rc == 0)
        rc = hd_store_open(svc->db_url, &svc->msg_store, err);
    if (rc == 0)
        rc = messages_migrate(svc->msg_store, err);
    if (rc >= 0)
        rc = messages_app_new(svc->msg_store, NULL, NULL, &svc->messages, err);
    if (rc == 0)
        rc = open_replica(svc, err);
    if (rc == 0)
        rc = setup_metrics(svc, err);
    if (rc == 0 && svc->amqp_url != NULL)
        rc = start_relay(svc, err);
    if (rc == 0 && svc->amqp_url != NULL)
        rc = start_messages_consumer(svc, err);
    if (rc == 0)
        rc = start_http(svc, err);
    if (rc == 0 && svc->amqp_url == NULL)
        hd_log_info(svc->log, NULL,
                    "HD_AMQP_URL not set: events stay in the outbox for a herald-relay", NULL);
    return rc;
}

/* Reverse order of start. Returns 0, or HD_ETIMEOUT when requests were cut off. */
static int stop(service *svc)
{
    int rc = 0;
    if (svc->http != NULL)
        rc = hd_http_server_stop(svc->http); /* stop accepting, finish in-flight requests */
    stop_relay(svc);                         /* after HTTP: the last commits signal it */
    hd_http_server_free(svc->http);
    users_http_free(svc->api);
    messages_http_free(svc->messages_api);
    hd_outbox_set_notifier(svc->store, NULL);
    if (svc->msg_store != NULL)
        hd_outbox_set_notifier(svc->msg_store, NULL);
    hd_outbox_notifier_free(svc->notifier);
    if (svc->relay_stop_ready)
        hd_stop_release(&svc->relay_stop);
    hd_metrics_free(svc->metrics);
    hd_ratelimit_free(svc->client_limit);
    hd_ratelimit_free(svc->email_limit);
    users_app_free(svc->app);
    for (size_t i = 0; i < USERS_READERS_DEFAULT; i++)
        hd_store_close(svc->readers[i]); /* after the app: it borrows them */
    hd_replica_close(svc->replica);      /* after the metrics: their gauges read it */
    messages_app_free(svc->messages);
    hd_store_close(svc->msg_store);
    hd_store_close(svc->store);
    return rc;
}

int users_run(const hd_config *cfg, hd_logger *lg)
{
    service svc = {.cfg = cfg, .log = lg};
    pthread_mutex_init(&svc.relay_lock, NULL);
    pthread_mutex_init(&svc.health_lock, NULL);
    hd_error err;

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before any thread: they inherit it */
    signal(SIGPIPE, SIG_IGN);                /* a client that hangs up is not fatal */

    int status = 0;
    if (start(&svc, &err) < 0) {
        hd_log_error(svc.log, NULL, "cannot start", "error", err.text, NULL);
        status = 1;
    } else {
        int sig = 0;
        sigwait(&sigs, &sig);
        hd_log_info(svc.log, NULL, "stopping", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                    NULL);
    }
    if (stop(&svc) < 0)
        hd_log_warn(svc.log, NULL, "some requests were still running at the stop deadline", NULL);
    if (status == 0)
        hd_log_info(svc.log, NULL, "stopped", NULL);
    pthread_mutex_destroy(&svc.health_lock);
    pthread_mutex_destroy(&svc.relay_lock);
    return status;
}
