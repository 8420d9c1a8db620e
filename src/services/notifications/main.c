/* herald-notifications — sends the e-mails the users service's events ask for.
 *
 * A thin main(): read the settings (environment, then ./.env; --help lists them), check
 * them, and hand over to runtime.c. Everything it prints is a JSON log line on stderr
 * (herald/log.h), except --help and configuration errors.
 *
 * Exit codes:
 *   0  stopped by SIGTERM/SIGINT (the window in flight was finished; unacked messages are
 *      redelivered to the next consumer)
 *   1  a failure at run time: a template missing or broken, the database or the broker
 *      refused the credentials, the port is taken
 *   2  a configuration error: a bad setting, a malformed URL, no API token (and not
 *      HD_NOTIFICATIONS_API_OPEN), a prefetch whose deliveries do not fit the memory budget
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__ /* defined by the headers above */
#include <malloc.h>
#endif

#include "herald/config.h"
#include "herald/log.h"
#include "herald/replica.h"
#include "herald/sender.h"
#include "herald/template.h"

#include "api.h"
#include "retention.h"
#include "runtime.h"
#include "topology.h"

enum { EXIT_STOPPED = 0, EXIT_FAILED = 1, EXIT_CONFIG = 2 };

static const hd_setting settings[] = {
    {"HD_NOTIFICATIONS_LISTEN", "127.0.0.1:8082", "address:port of the HTTP API"},
    {"HD_DATABASE_URL", "sqlite://notifications.db",
     "the service's database: sqlite:///path/notifications.db or postgresql://..."},
    {"HD_SQLITE_CONSUMER_CACHE_KIB", "1024",
     "SQLite: page cache of the consumer's connection, KiB, when HD_DATABASE_URL sets no "
     "cache_kib; 0: SQLite's own (2000)"},
    {"HD_SQLITE_AUX_CACHE_KIB", "256",
     "SQLite: page cache of each of the sweeper's, the API's and the relay's connections, KiB "
     "(they read a few pages at a time); 0: the URL's for the three"},
    {"HD_DATABASE_READ_URL", "",
     "postgresql:// URL of a streaming standby for the API's history and preferences reads "
     "(a little stale at most; a user's own writes and every write stay on HD_DATABASE_URL); "
     "unset: all reads on the primary"},
    {"HD_DATABASE_READ_MAX_LAG", "5s",
     "a standby further behind than this is skipped: its reads go to the primary"},
    {"HD_AMQP_URL", NULL,
     "the broker: amqp://user:password@host:5672/vhost (amqps:// for TLS), or a comma-separated "
     "list of such URLs, one per cluster node (tried in order; a reconnect moves to the next)"},
    HD_SETTINGS_DATABASE_TLS,
    HD_SETTINGS_AMQP_TLS,
    {"HD_SENDER", "smtp if HD_SMTP_URL is set, else log",
     "smtp or log (log: one JSON line a "
     "mail, nothing delivered)"},
    {"HD_SMTP_URL", "", "smtp://host:port or smtps://user:password@host:465"},
    {"HD_SMTP_TIMEOUT_MS", "10000", "longest time one send may take, ms"},
    HD_SETTINGS_SMTP_TLS,
    {"HD_MAIL_FROM", "noreply@herald.example", "From of every mail; its domain names Message-IDs"},
    {"HD_TEMPLATES_DIR", "templates", "directory of <type>.subject/.html/.txt"},
    {"HD_NOTIFY_MAX_ATTEMPTS", "5", "send attempts before a notification fails for good"},
    {"HD_NOTIFY_BACKOFF_BASE_MS", "1000",
     "retry delay ceiling after the first failure, ms "
     "(doubles each time, full jitter)"},
    {"HD_NOTIFY_BACKOFF_CAP_MS", "300000", "largest retry delay, ms"},
    {"HD_NOTIFY_LEASE_MS", "60000",
     "how long a sender holds a pending notification before "
     "another may take it (crash recovery time); more than "
     "twice HD_SMTP_TIMEOUT_MS"},
    {"HD_NOTIFY_ORDER_WAIT_MS", "1000",
     "per-user order with several instances: how long to wait for an event's predecessor "
     "(its previousid) before deferring it to a retry, ms; 0: no order check"},
    {"HD_NOTIFY_SWEEP_MS", "1000", "longest sleep of the sweeper (retries, API sends), ms"},
    {"HD_NOTIFICATIONS_API_TOKEN", NULL,
     "bearer token of every HTTP route but /health and /metrics (at least 32 visible ASCII "
     "characters, e.g. openssl rand -hex 32); required unless HD_NOTIFICATIONS_API_OPEN"},
    {"HD_NOTIFICATIONS_API_OPEN", "false",
     "true: run the HTTP API without authentication (a laptop, never production; logged "
     "as a warning)"},
    {"HD_NOTIFICATIONS_LINK_BASE_URL", "",
     "comma-separated URL prefixes (https://host/...) that every link variable (*_link, "
     "*_url) of POST /notifications must start with; empty: no links in direct sends"},
    {"HD_PREFETCH", "256", "unacked deliveries held, and the group-commit window (1..256)"},
    {"HD_MAX_MESSAGE_BYTES", "1048576",
     "the broker's max_message_size (rabbitmq.conf), the largest delivery the consumer can "
     "be handed"},
    {"HD_CONSUMER_MEMORY_MB", "256",
     "memory budget of the deliveries in flight: HD_PREFETCH x HD_MAX_MESSAGE_BYTES must "
     "fit in it, or the service refuses to start"},
    {"HD_USERS_EXCHANGE", "users", "the users service's topic exchange"},
    {"HD_NOTIFICATIONS_QUEUE", "users.notifications", "the work queue (with .retry.*, .dlq)"},
    {"HD_QUEUE_TYPE", "classic",
     "classic or quorum (replicated on a cluster; always with a delivery limit and the DLQ "
     "as its dead-letter target); of the work queue, its retry tiers and its DLQ"},
    {"HD_DELIVERY_LIMIT", "20",
     "quorum queues: deliveries of one message (returns after a consumer died or lost its "
     "connection) before it is dead-lettered into the DLQ"},
    {"HD_NOTIFICATIONS_RELAY", "true",
     "relay this service's outbox to RabbitMQ in-process "
     "(false: run herald-relay instead)"},
    {"HD_NOTIFICATIONS_RELAY_HANDOFF", "true",
     "the in-process relay takes the rows this service appends already leased to it, "
     "instead of claiming them (false: every row waits for a claim; relay.h, handed rows)"},
    {"HD_INBOX_RETENTION", "168h",
     "forget processed message ids after this (units ms, s, m, "
     "h); longer than any redelivery; 0 keeps them"},
    {"HD_MALLOC_COMPACT", "true",
     "glibc: one malloc arena for all threads, and blocks of 128 KiB and more (librabbitmq's "
     "frame buffers and pools) mapped on their own, returned when freed and resident only "
     "where touched: about 1.7 MiB less peak RSS under load; false: glibc's defaults "
     "(or GLIBC_TUNABLES)"},
    {"HD_LOG_LEVEL", "info", "debug, info, warn or error"},
    {"HD_LOG_FLUSH_MS", HD_LOG_FLUSH_MS_DEFAULT, HD_LOG_FLUSH_MS_HELP},
    {NULL, NULL, NULL},
};

static const char summary[] =
    "Consumes the users service's events (users.user_registered, users.user_verified,\n"
    "users.password_reset_requested, users.user_deleted) through an inbox, sends the e-mails\n"
    "they ask for (verification, welcome, password reset) with retries and backoff, keeps\n"
    "per-user preferences and a history, and emits notifications.notification_sent /\n"
    "notification_failed through its own outbox. HTTP API: POST /notifications,\n"
    "/notifications/preferences, /notifications/history/{user_id}, /health, /metrics.\n"
    "Settings come from the environment and ./.env (the environment wins).\n"
    "\n"
    "Exit codes: 0 stopped by SIGTERM/SIGINT; 1 run-time failure; 2 bad configuration.";

static int read_sender(const hd_config *cfg, notif_config *c, hd_error *err)
{
    const char *sender = hd_config_get(cfg, "HD_SENDER", "");
    const char *url = hd_config_get(cfg, "HD_SMTP_URL", "");
    int64_t v;
    int rc = hd_config_get_int(cfg, "HD_SMTP_TIMEOUT_MS", 10000, 100, 600000, &v, err);
    if (rc < 0)
        return rc;
    c->smtp_timeout_ms = (long)v;
    if ((rc = hd_config_smtp_tls(cfg, &c->smtp, err)) < 0)
        return rc;
    if (strcmp(sender, "log") == 0 || (*sender == '\0' && *url == '\0')) {
        c->smtp_url = NULL;
        return 0;
    }
    if (strcmp(sender, "smtp") != 0 && *sender != '\0')
        return hd_error_set(err, HD_ECONFIG, "HD_SENDER: '%s' is not smtp or log", sender);
    if (*url == '\0')
        return hd_error_set(err, HD_ECONFIG, "HD_SENDER=smtp needs HD_SMTP_URL");
    c->smtp_url = url;
    return 0;
}

static int read_app(const hd_config *cfg, notif_config *c, hd_error *err)
{
    notif_settings *s = &c->app;
    int64_t v;
    int rc;
    s->mail_from = hd_config_get(cfg, "HD_MAIL_FROM", "noreply@herald.example");
    if (!hd_mail_address_valid(s->mail_from))
        return hd_error_set(err, HD_ECONFIG, "HD_MAIL_FROM: '%s' is not an e-mail address",
                            s->mail_from);
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_MAX_ATTEMPTS", NOTIF_MAX_ATTEMPTS_DEFAULT, 1, 1000,
                                &v, err)) < 0)
        return rc;
    s->max_attempts = (int)v;
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_BACKOFF_BASE_MS", NOTIF_BACKOFF_BASE_DEFAULT, 0,
                                3600000, &v, err)) < 0)
        return rc;
    s->backoff_base_ms = v == 0 ? -1 : v; /* 0 here means "no delay" */
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_BACKOFF_CAP_MS", NOTIF_BACKOFF_CAP_DEFAULT, 1,
                                7LL * 24 * 3600000, &v, err)) < 0)
        return rc;
    s->backoff_cap_ms = v;
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_LEASE_MS", NOTIF_LEASE_DEFAULT, 1000,
                                24LL * 3600000, &v, err)) < 0)
        return rc;
    s->lease_ms = v;
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_ORDER_WAIT_MS", NOTIF_ORDER_WAIT_DEFAULT, 0,
                                3600000, &v, err)) < 0)
        return rc;
    s->order_wait_ms = v == 0 ? -1 : v; /* 0 here means "no order check" */
    /* A send starts only in the first half of a lease (delivery.c): with the lease more
     * than twice the longest send, a slow send never races the sweeper. */
    if (s->lease_ms <= 2 * (int64_t)c->smtp_timeout_ms)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_NOTIFY_LEASE_MS (%lld) must be more than twice "
                            "HD_SMTP_TIMEOUT_MS (%ld)",
                            (long long)s->lease_ms, c->smtp_timeout_ms);
    return 0;
}

static int read_broker(const hd_config *cfg, notif_config *c, hd_error *err)
{
    int64_t v;
    int rc;
    c->amqp_url = hd_config_get(cfg, "HD_AMQP_URL", "");
    if (*c->amqp_url == '\0')
        return hd_error_set(err, HD_ECONFIG, "HD_AMQP_URL is required (see --help)");
    if ((rc = hd_config_amqp_tls(cfg, &c->amqp_tls, err)) < 0)
        return rc;
    c->users_exchange = hd_config_get(cfg, "HD_USERS_EXCHANGE", "users");
    c->queue = hd_config_get(cfg, "HD_NOTIFICATIONS_QUEUE", "users.notifications");
    if (*c->users_exchange == '\0' || *c->queue == '\0')
        return hd_error_set(err, HD_ECONFIG,
                            "HD_USERS_EXCHANGE and HD_NOTIFICATIONS_QUEUE "
                            "may not be empty");
    if ((rc = notif_topology_policy(cfg, &c->retry, err)) < 0)
        return rc;
    /* 256 is the consumer's largest batch: a window never holds more. */
    if ((rc = hd_config_get_int(cfg, "HD_PREFETCH", 256, 1, 256, &v, err)) < 0)
        return rc;
    c->prefetch = (int)v;
    /* The broker hands over up to a prefetch of unacked deliveries, each up to its
     * max_message_size: that product is the memory the consumer may have to hold at once,
     * and it is checked here, at start, rather than discovered by the OOM killer. 512 MiB
     * is RabbitMQ's own ceiling for max_message_size. */
    if ((rc = hd_config_get_int(cfg, "HD_MAX_MESSAGE_BYTES", 1048576, 1024, 512LL << 20,
                                &c->max_message_bytes, err)) < 0)
        return rc;
    if ((rc = hd_config_get_int(cfg, "HD_CONSUMER_MEMORY_MB", 256, 1, 1LL << 20, &v, err)) < 0)
        return rc;
    c->memory_budget = v << 20;
    if ((int64_t)c->prefetch * c->max_message_bytes > c->memory_budget)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_PREFETCH (%d) x HD_MAX_MESSAGE_BYTES (%lld) = %lld MiB does not "
                            "fit in HD_CONSUMER_MEMORY_MB (%lld): lower the prefetch or the "
                            "broker's max_message_size, or raise the budget",
                            c->prefetch, (long long)c->max_message_bytes,
                            (long long)((c->prefetch * c->max_message_bytes + (1 << 20) - 1) >> 20),
                            (long long)(c->memory_budget >> 20));
    rc = hd_config_get_bool(cfg, "HD_NOTIFICATIONS_RELAY", 1, &c->relay, err);
    if (rc < 0)
        return rc;
    return hd_config_get_bool(cfg, "HD_NOTIFICATIONS_RELAY_HANDOFF", 1, &c->relay_handoff, err);
}

/* The API's token, or the explicit decision to run it open. */
static int read_api(const hd_config *cfg, notif_config *c, hd_error *err)
{
    int rc = hd_config_get_bool(cfg, "HD_NOTIFICATIONS_API_OPEN", 0, &c->api_open, err);
    if (rc < 0)
        return rc;
    const char *token = hd_config_get(cfg, "HD_NOTIFICATIONS_API_TOKEN", "");
    c->api_token = *token ? token : NULL;
    if (c->api_token == NULL && !c->api_open)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_NOTIFICATIONS_API_TOKEN is required (at least %d characters, "
                            "e.g. openssl rand -hex 32); to run the API without "
                            "authentication on a laptop, set HD_NOTIFICATIONS_API_OPEN=true",
                            NOTIF_API_TOKEN_MIN);
    /* A token that is set is checked even when open: a bad one is a typo to report. */
    if (c->api_token != NULL && (rc = notif_api_token_check(c->api_token, err)) < 0)
        return rc;
    if (c->api_token != NULL)
        c->api_open = 0; /* a token given means it is used */
    c->app.link_base_urls = hd_config_get(cfg, "HD_NOTIFICATIONS_LINK_BASE_URL", "");
    if (notif_link_bases_check(c->app.link_base_urls, err) < 0) {
        char why[HD_ERROR_TEXT_MAX];
        snprintf(why, sizeof why, "%s", err->text);
        return hd_error_set(err, HD_ECONFIG, "HD_NOTIFICATIONS_LINK_BASE_URL: %s", why);
    }
    return 0;
}

/* HD_MALLOC_COMPACT, before any thread starts (an arena is chosen at a thread's first
 * malloc). Measured in the e2e bench (docs/modules/notifications.md, "Memory"): glibc gives
 * each of the five threads an arena of its own, whose free memory no other thread reuses
 * (1.3 MiB free in the sweeper's, API's and relay's arenas at the peak), and its mmap
 * threshold rises to 128 KiB and more once a mapped block is freed (the setup connection's,
 * at start), after which librabbitmq's 128 KiB frame buffers and calloc'ed pool pages come
 * from the heap, zeroed, resident whole. Threads here do short work on their own data, so
 * one arena's lock costs nothing measurable (CPU per run unchanged). */
static int apply_malloc(const hd_config *cfg, hd_error *err)
{
    int compact;
    int rc = hd_config_get_bool(cfg, "HD_MALLOC_COMPACT", 1, &compact, err);
    if (rc < 0 || !compact)
        return rc;
#ifdef __GLIBC__
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024); /* fixed: no more dynamic threshold */
#endif
    return 0;
}

static int read_settings(const hd_config *cfg, notif_config *c, char *addr, size_t cap,
                         hd_log_level *level, hd_error *err)
{
    int64_t v;
    int rc;
    memset(c, 0, sizeof *c);
    if ((rc = hd_config_get_listen(cfg, "HD_NOTIFICATIONS_LISTEN", "127.0.0.1:8082", addr, cap,
                                   &c->listen_port, err)) < 0)
        return rc;
    c->listen_address = addr;
    c->database_url = hd_config_get(cfg, "HD_DATABASE_URL", "sqlite://notifications.db");
    /* Each thread opens its own handle, and each open of sqlite::memory: is a new, empty
     * database: the threads would not see each other's rows. */
    if (strncmp(c->database_url, "sqlite::memory:", 15) == 0)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_DATABASE_URL: sqlite::memory: cannot be shared "
                            "between the service's threads; use a file");
    if ((rc = hd_config_get_int(cfg, "HD_SQLITE_CONSUMER_CACHE_KIB", 1024, 0, 1000000, &v, err)) <
        0)
        return rc;
    c->consumer_cache_kib = (long)v;
    if ((rc = hd_config_get_int(cfg, "HD_SQLITE_AUX_CACHE_KIB", 256, 0, 1000000, &v, err)) < 0)
        return rc;
    c->aux_cache_kib = (long)v;
    c->database_read_url = hd_config_get(cfg, "HD_DATABASE_READ_URL", "");
    if ((rc = hd_config_get_duration_ms(cfg, "HD_DATABASE_READ_MAX_LAG", HD_REPLICA_MAX_LAG_DEFAULT,
                                        1, 3600000, &c->read_max_lag_ms, err)) < 0)
        return rc;
    c->templates_dir = hd_config_get(cfg, "HD_TEMPLATES_DIR", hd_templates_default_dir());
    if ((rc = read_sender(cfg, c, err)) < 0 || (rc = read_app(cfg, c, err)) < 0 ||
        (rc = read_broker(cfg, c, err)) < 0 || (rc = read_api(cfg, c, err)) < 0)
        return rc;
    if ((rc = hd_config_get_int(cfg, "HD_NOTIFY_SWEEP_MS", 1000, 10, 3600000, &v, err)) < 0)
        return rc;
    c->sweep_ms = (int)v;
    if ((rc = hd_config_get_duration_ms(cfg, "HD_INBOX_RETENTION", 168LL * 3600000, 0,
                                        3650LL * 24 * 3600000, &c->inbox_retention_ms, err)) < 0)
        return rc;
    /* The consumer's retry policy: the default tiers, HD_QUEUE_TYPE (read_broker). */
    if ((rc = notif_inbox_retention_check(c->inbox_retention_ms, &c->retry, err)) < 0)
        return rc;
    const char *lv = hd_config_get(cfg, "HD_LOG_LEVEL", "info");
    *level = HD_LOG_INFO;
    if (*lv != '\0' && hd_log_level_parse(lv, level) < 0)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_LOG_LEVEL: '%s' is not debug, info, warn or "
                            "error",
                            lv);
    return 0;
}

int main(int argc, char **argv)
{
    if (hd_config_wants_help(argc, argv)) {
        hd_config_print_help(stdout, "herald-notifications", summary, settings);
        return EXIT_STOPPED;
    }
    if (argc > 1) {
        fprintf(stderr, "herald-notifications: unknown argument '%s' (try --help)\n", argv[1]);
        return EXIT_CONFIG;
    }
    hd_error err;
    hd_config *cfg = NULL;
    notif_config c;
    char addr[64];
    hd_log_level level;
    if (hd_config_load(&cfg, NULL, &err) < 0 || hd_config_apply_database_tls(cfg, &err) < 0 ||
        read_settings(cfg, &c, addr, sizeof addr, &level, &err) < 0 ||
        apply_malloc(cfg, &err) < 0) {
        fprintf(stderr, "herald-notifications: %s\n", err.text);
        hd_config_free(cfg);
        return EXIT_CONFIG;
    }
    hd_logger *lg = hd_logger_new("notifications", level, NULL);
    if (lg == NULL) {
        fprintf(stderr, "herald-notifications: cannot create the logger\n");
        hd_config_free(cfg);
        return EXIT_FAILED;
    }
    if (hd_config_log_write_behind(cfg, lg, &err) < 0) {
        fprintf(stderr, "herald-notifications: %s\n", err.text);
        hd_logger_free(lg);
        hd_config_free(cfg);
        return EXIT_CONFIG;
    }
    hd_log_set_default(lg);
    if (notif_install_signals(&err) < 0) {
        fprintf(stderr, "herald-notifications: %s\n", err.text);
        hd_log_set_default(NULL);
        hd_logger_free(lg);
        hd_config_free(cfg);
        return EXIT_FAILED;
    }
    int status = notif_run(&c, lg);
    hd_log_set_default(NULL);
    hd_logger_free(lg);
    hd_config_free(cfg);
    return status;
}
