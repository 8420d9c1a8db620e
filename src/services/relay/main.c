/* herald-relay — drains a service's outbox into RabbitMQ.
 *
 * A thin main() around herald/relay.h: read the settings, open the database and the
 * broker (waiting for them if they are not up yet: in a deployment the three start in any
 * order), run the relay until SIGTERM or SIGINT, stop cleanly. Everything it prints is a
 * JSON log line on stderr (herald/log.h); `--help` lists the settings.
 *
 * Exit codes:
 *   0  stopped by SIGTERM/SIGINT (the batches in flight was finished and marked), or
 *      --drain found nothing left to relay
 *   1  a failure at run time: the outbox table could not be created, the broker refused
 *      the credentials or the virtual host, out of memory
 *   2  a configuration error: a bad setting or argument, a malformed URL
 *
 * Stopping: the signal handler only sets a flag. The relay sees it between cycles, so the
 * batch in flight is published, confirmed and marked before the process exits; a SIGKILL
 * instead leaves its rows leased, and they are published again when the lease runs out
 * (at-least-once: consumers deduplicate with the inbox).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/amqp.h"
#include "herald/backoff.h"
#include "herald/clock.h"
#include "herald/config.h"
#include "herald/log.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/stop.h"
#include "herald/store.h"

enum { EXIT_STOPPED = 0, EXIT_FAILED = 1, EXIT_CONFIG = 2 };

static const hd_setting settings[] = {
    {"HD_DATABASE_URL", NULL, "the service's database: sqlite:///path/app.db or postgresql://..."},
    {"HD_AMQP_URL", NULL,
     "the broker: amqp://user:password@host:5672/vhost (amqps:// for TLS), or a comma-separated "
     "list of such URLs, one per cluster node (tried in order; a reconnect moves to the next)"},
    HD_SETTINGS_DATABASE_TLS,
    HD_SETTINGS_AMQP_TLS,
    {"HD_RELAY_BATCH", "500", "rows claimed per cycle (1..10000)"},
    {"HD_RELAY_WINDOW", "batch", "unconfirmed messages in flight (1..1000000)"},
    {"HD_RELAY_POLL_MS", "1000",
     "longest idle sleep between claims, ms (PostgreSQL also wakes "
     "on NOTIFY)"},
    {"HD_RELAY_LEASE_MS", "30000", "how long claimed rows stay reserved to this relay, ms"},
    {"HD_RELAY_CONFIRM_TIMEOUT_MS", "lease/3",
     "longest wait for a broker confirm, ms (below "
     "the lease)"},
    {"HD_RELAY_MAX_ATTEMPTS", "10", "failed attempts (returned, nacked) before a row is parked"},
    {"HD_RELAY_BACKOFF_BASE_MS", "1000", "retry delay of a failed row: first ceiling, ms"},
    {"HD_RELAY_BACKOFF_CAP_MS", "300000", "retry delay of a failed row: largest, ms"},
    {"HD_RELAY_EXCHANGE", "",
     "publish every event to this exchange (empty: the event "
     "type's topic, e.g. users.user_registered -> users)"},
    {"HD_RELAY_DECLARE", "true", "declare the topic exchanges (durable, topic) it publishes to"},
    {"HD_RELAY_MANDATORY", "true",
     "publish mandatory: an event no queue is bound for is returned, retried and parked "
     "(false: the broker drops it and it counts as delivered)"},
    {"HD_RELAY_RETENTION", "168h",
     "delete dispatched rows older than this (units ms, s, m, h); "
     "0 keeps them forever"},
    {"HD_RELAY_SENSITIVE_RETENTION", "15m",
     "delete dispatched rows that carried a secret (HD_OUTBOX_SENSITIVE) older than this; "
     "keep it below the lifetime of their tokens (0: they follow HD_RELAY_RETENTION)"},
    {"HD_RELAY_PURGE_EVERY", "1m", "how often to apply the retention"},
    {"HD_RELAY_PROGRESS_MS", "5000", "log counts this often while busy, ms (0: never)"},
    {"HD_RELAY_ID", "host-pid", "name of this relay in claimed_by and in logs"},
    {"HD_RELAY_MIGRATE", "true", "create the outbox table when it is missing"},
    {"HD_LOG_LEVEL", "info", "debug, info, warn or error"},
    {NULL, NULL, NULL},
};

static const char summary[] =
    "Drains the transactional outbox of HD_DATABASE_URL into RabbitMQ: claim a batch, publish\n"
    "it persistent + mandatory with publisher confirms, mark the confirmed rows dispatched.\n"
    "At least once: a crash republishes, never loses. Settings come from the environment and\n"
    "./.env (the environment wins).\n"
    "\n"
    "Options:\n"
    "  --drain   exit 0 once no row is pending (parked rows do not count)\n"
    "  --help    this text\n"
    "\n"
    "Exit codes: 0 stopped by SIGTERM/SIGINT or drained; 1 run-time failure; 2 bad "
    "configuration.";

/* Static: the signal handler reaches it without a pointer. Never released: a signal that
 * comes late must still find its pipe; the process's exit closes it. */
static hd_stop stop;

static void on_signal(int sig)
{
    (void)sig;
    hd_stop_request(&stop); /* async-signal-safe; every wait wakes at once */
}

/* No SA_RESTART: a signal must interrupt the idle wait (poll on PostgreSQL's socket). */
static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A broker that closes the socket while we write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

typedef struct relay_settings {
    const char *database_url;
    const char *amqp_url;
    hd_amqp_options amqp; /* the TLS files (HD_AMQP_CA_FILE...) */
    hd_relay_options opts;
    int declare;
    int mandatory;
    int migrate;
    hd_log_level level;
} relay_settings;

static int read_settings(const hd_config *cfg, relay_settings *s, hd_error *err)
{
    int64_t v;
    int rc;
    memset(s, 0, sizeof *s);
    s->database_url = hd_config_get(cfg, "HD_DATABASE_URL", NULL);
    s->amqp_url = hd_config_get(cfg, "HD_AMQP_URL", NULL);
    if (s->database_url == NULL || *s->database_url == '\0')
        return hd_error_set(err, HD_ECONFIG, "HD_DATABASE_URL is required (see --help)");
    if (s->amqp_url == NULL || *s->amqp_url == '\0')
        return hd_error_set(err, HD_ECONFIG, "HD_AMQP_URL is required (see --help)");
    if ((rc = hd_config_amqp_tls(cfg, &s->amqp, err)) < 0)
        return rc;

    hd_relay_options *o = &s->opts;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_BATCH", HD_RELAY_BATCH_DEFAULT, 1,
                                HD_OUTBOX_BATCH_MAX, &v, err)) < 0)
        return rc;
    o->batch = (size_t)v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_WINDOW", 0, 1, 1000000, &v, err)) < 0)
        return rc;
    o->window = (size_t)v; /* 0 (unset): the batch */
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_POLL_MS", HD_RELAY_POLL_MS_DEFAULT, 1, 3600000, &v,
                                err)) < 0)
        return rc;
    o->poll_ms = (int)v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_LEASE_MS", HD_OUTBOX_LEASE_DEFAULT_MS, 100,
                                24LL * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->lease_ms = v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_CONFIRM_TIMEOUT_MS", 0, 1, 3600000, &v, err)) < 0)
        return rc;
    o->confirm_timeout_ms = (int)v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_MAX_ATTEMPTS", HD_RELAY_MAX_ATTEMPTS_DEFAULT, 1,
                                1000000, &v, err)) < 0)
        return rc;
    o->max_attempts = (int)v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_BACKOFF_BASE_MS", HD_RELAY_BACKOFF_BASE_DEFAULT, 1,
                                24LL * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->backoff_base_ms = v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_BACKOFF_CAP_MS", HD_RELAY_BACKOFF_CAP_DEFAULT, 1,
                                7LL * 24 * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->backoff_cap_ms = v;
    o->exchange = hd_config_get(cfg, "HD_RELAY_EXCHANGE", NULL);
    if ((rc = hd_config_get_bool(cfg, "HD_RELAY_DECLARE", 1, &s->declare, err)) < 0)
        return rc;
    o->no_declare = !s->declare;
    if ((rc = hd_config_get_bool(cfg, "HD_RELAY_MANDATORY", 1, &s->mandatory, err)) < 0)
        return rc;
    o->no_mandatory = !s->mandatory;
    if ((rc = hd_config_get_duration_ms(cfg, "HD_RELAY_RETENTION", HD_RELAY_RETENTION_DEFAULT, 0,
                                        3650LL * 24 * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->retention_ms = v == 0 ? -1 : v; /* 0 here means "keep forever" */
    if ((rc = hd_config_get_duration_ms(cfg, "HD_RELAY_SENSITIVE_RETENTION",
                                        HD_RELAY_SENSITIVE_RETENTION_DEFAULT, 0,
                                        3650LL * 24 * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->sensitive_retention_ms = v == 0 ? -1 : v; /* 0: no separate purge */
    if ((rc = hd_config_get_duration_ms(cfg, "HD_RELAY_PURGE_EVERY", HD_RELAY_PURGE_EVERY_DEFAULT,
                                        1000, 24LL * 3600 * 1000, &v, err)) < 0)
        return rc;
    o->purge_every_ms = v;
    if ((rc = hd_config_get_int(cfg, "HD_RELAY_PROGRESS_MS", HD_RELAY_PROGRESS_DEFAULT, 0, 3600000,
                                &v, err)) < 0)
        return rc;
    o->progress_ms = v == 0 ? -1 : (int)v;
    o->relay_id = hd_config_get(cfg, "HD_RELAY_ID", NULL);
    if (o->relay_id != NULL && *o->relay_id == '\0')
        o->relay_id = NULL;
    if ((rc = hd_config_get_bool(cfg, "HD_RELAY_MIGRATE", 1, &s->migrate, err)) < 0)
        return rc;
    const char *level = hd_config_get(cfg, "HD_LOG_LEVEL", "info");
    s->level = HD_LOG_INFO;
    if (*level != '\0' && hd_log_level_parse(level, &s->level) < 0)
        return hd_error_set(err, HD_ECONFIG, "HD_LOG_LEVEL: '%s' is not debug, info, warn or error",
                            level);
    /* The relay checks the combination (confirm timeout below the lease...). */
    hd_relay_options resolved;
    hd_error why;
    if (hd_relay_options_resolve(o, &resolved, &why) < 0)
        return hd_error_set(err, HD_ECONFIG, "%s", why.text);
    return 0;
}

/* A code that retrying cannot fix. */
static int permanent(int rc)
{
    return rc == HD_EURL || rc == HD_EAUTH || rc == HD_EINVAL || rc == HD_EUNSUPPORTED;
}

/* Open the store, waiting (with backoff) while the database is unreachable. */
static int open_store(const char *url, hd_logger *lg, hd_store **out, hd_error *err)
{
    hd_backoff b;
    hd_backoff_init(&b, 200, 10000, (uint64_t)hd_clock_ns());
    for (unsigned attempt = 0;; attempt++) {
        int rc = hd_store_open(url, out, err);
        if (rc == 0 || permanent(rc))
            return rc;
        int64_t delay = hd_backoff_delay(&b, attempt);
        hd_log_json(lg, HD_LOG_WARN, NULL, "database unreachable, retrying",
                    json_pack("{s:s, s:I}", "error", err->text, "retry_in_ms", (json_int_t)delay));
        if (hd_stop_wait_ms(&stop, delay))
            return HD_EINTR;
    }
}

static int open_broker(const char *url, const hd_amqp_options *ao, hd_logger *lg, hd_amqp **out,
                       hd_error *err)
{
    hd_backoff b;
    hd_backoff_init(&b, 200, 10000, (uint64_t)hd_clock_ns());
    for (unsigned attempt = 0;; attempt++) {
        int rc = hd_amqp_open(url, ao, out, err);
        if (rc == 0 || permanent(rc))
            return rc;
        int64_t delay = hd_backoff_delay(&b, attempt);
        hd_log_json(lg, HD_LOG_WARN, NULL, "broker unreachable, retrying",
                    json_pack("{s:s, s:I}", "error", err->text, "retry_in_ms", (json_int_t)delay));
        if (hd_stop_wait_ms(&stop, delay))
            return HD_EINTR;
    }
}

int main(int argc, char **argv)
{
    if (hd_config_wants_help(argc, argv)) {
        hd_config_print_help(stdout, "herald-relay", summary, settings);
        return EXIT_STOPPED;
    }
    int drain = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--drain") == 0) {
            drain = 1;
        } else {
            fprintf(stderr, "herald-relay: unknown argument '%s' (try --help)\n", argv[i]);
            return EXIT_CONFIG;
        }
    }

    int status = EXIT_FAILED;
    hd_error err;
    hd_config *cfg = NULL;
    hd_logger *lg = NULL;
    hd_store *store = NULL;
    hd_amqp *amqp = NULL;
    hd_relay *relay = NULL;
    relay_settings s;

    if (hd_config_load(&cfg, NULL, &err) < 0 || hd_config_apply_database_tls(cfg, &err) < 0 ||
        read_settings(cfg, &s, &err) < 0) {
        fprintf(stderr, "herald-relay: %s\n", err.text);
        status = EXIT_CONFIG;
        goto out;
    }
    if ((lg = hd_logger_new("relay", s.level, NULL)) == NULL) {
        fprintf(stderr, "herald-relay: cannot create the logger\n");
        goto out;
    }
    if (hd_stop_init(&stop, &err) < 0) {
        hd_log_error(lg, NULL, "cannot create the stop token", "error", err.text, NULL);
        goto out;
    }
    install_signals();

    int rc = open_store(s.database_url, lg, &store, &err);
    if (rc == HD_EINTR) {
        status = EXIT_STOPPED;
        goto out;
    }
    if (rc < 0) {
        hd_log_error(lg, NULL, "cannot open the database", "error", err.text, NULL);
        status = permanent(rc) ? EXIT_CONFIG : EXIT_FAILED;
        goto out;
    }
    /* The relay's own writes (leases, marks) may be lost in a power failure: the event goes
     * out again, which at-least-once allows. Not waiting for the disk at each of them keeps
     * them off the write lock the service's commits wait for (store.h, relay.md). */
    if (hd_store_relax_sync(store, &err) < 0)
        hd_log_warn(lg, NULL, "database: commits stay synchronous", "error", err.text, NULL);
    /* Its claims wait in line for SQLite's write lock: a service committing back to back
     * cannot starve them (store.h, store_sqlite_turns.h). */
    (void)hd_store_wait_in_line(store, NULL);
    if (s.migrate && (rc = hd_outbox_migrate(store, &err)) < 0) {
        hd_log_error(lg, NULL, "cannot create the outbox table", "error", err.text, NULL);
        goto out;
    }

    hd_amqp_options ao = s.amqp;
    ao.connection_name = "herald-relay";
    rc = open_broker(s.amqp_url, &ao, lg, &amqp, &err);
    if (rc == HD_EINTR) {
        status = EXIT_STOPPED;
        goto out;
    }
    if (rc < 0) {
        hd_log_error(lg, NULL, "cannot connect to the broker", "error", err.text, NULL);
        status = rc == HD_EURL ? EXIT_CONFIG : EXIT_FAILED;
        goto out;
    }

    s.opts.logger = lg;
    s.opts.drain = drain;
    if ((rc = hd_relay_new(store, amqp, &s.opts, &relay, &err)) < 0) {
        hd_log_error(lg, NULL, "cannot create the relay", "error", err.text, NULL);
        status = rc == HD_EINVAL ? EXIT_CONFIG : EXIT_FAILED;
        goto out;
    }
    rc = hd_relay_run(relay, &stop, &err);
    if (rc < 0) {
        hd_log_error(lg, NULL, "relay failed", "error", err.text, NULL);
        goto out;
    }
    status = EXIT_STOPPED;

out:
    hd_relay_free(relay);
    hd_amqp_close(amqp);
    hd_store_close(store);
    hd_logger_free(lg);
    hd_config_free(cfg);
    return status;
}
