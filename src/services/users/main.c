/* users/main.c — herald-users: the users service's program.
 *
 * A thin main(): --help prints the settings below; otherwise read them (environment, then
 * ./.env), make the logger, and hand over to runtime.c, which wires the layers, runs until
 * SIGTERM or SIGINT and takes everything down.
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT; 1 could not start (logged); 2 bad configuration.
 */
#include <stdio.h>

#include "herald/config.h"
#include "herald/log.h"

#include "application.h"
#include "runtime.h"

#define SUMMARY                                                                                    \
    "The users service: registration with email verification, password reset requests and\n"       \
    "user administration over HTTP; integration events through a transactional outbox.\n"          \
    "Settings come from the environment, then from ./.env."

static const hd_setting settings[] = {
    {"HD_USERS_LISTEN", "127.0.0.1:8081", "address:port of the HTTP API (port 0: any free port)"},
    {"HD_DATABASE_URL", "sqlite://users.db",
     "store URL: sqlite://path, sqlite:///abs/path, postgresql://..."},
    {"HD_DATABASE_READ_URL", "",
     "postgresql:// URL of a streaming standby for the users list (reads that may be a little "
     "stale; writes and own writes stay on HD_DATABASE_URL); unset: all reads on the primary"},
    {"HD_DATABASE_READ_MAX_LAG", "5s",
     "a standby further behind than this is skipped: its reads go to the primary"},
    {"HD_AMQP_URL", "", "RabbitMQ URL; set it to run the outbox relay in this process"},
    HD_SETTINGS_DATABASE_TLS,
    HD_SETTINGS_AMQP_TLS,
    {"HD_RELAY_EXCHANGE", "",
     "in-process relay: one exchange for every event (default: the "
     "type's topic, 'users')"},
    {"HD_USERS_ADMIN_TOKEN", "",
     "bearer token of the admin routes, at least 32 characters (unset: they answer 401)"},
    {"HD_USERS_VERIFY_BASE_URL", USERS_VERIFY_BASE_DEFAULT, "verification link = this + token"},
    {"HD_USERS_RESET_BASE_URL", USERS_RESET_BASE_DEFAULT, "password reset link = this + token"},
    {"HD_USERS_TOKEN_TTL", "24h", "lifetime of an email verification token (ms, s, m, h)"},
    {"HD_USERS_RESET_TOKEN_TTL", "1h", "lifetime of a password reset token"},
    {"HD_USERS_PWHASH", "interactive", "argon2id cost: interactive (64 MiB) or moderate (256 MiB)"},
    {"HD_USERS_MAX_HASHING", "4", "argon2id hashes computed at once (each holds its memory)"},
    {"HD_USERS_HASH_WAIT", "1s", "longest wait for a hashing slot; then 503 with Retry-After"},
    {"HD_USERS_RATE_CLIENT", "30/m",
     "public routes: requests per client address (IPv6: per /64), N/s, N/m, N/h or off"},
    {"HD_USERS_RATE_CLIENT_BURST", "20", "public routes: burst per client address"},
    {"HD_USERS_RATE_EMAIL", "5/h",
     "register and password reset: requests per e-mail address (N/s, N/m, N/h or off)"},
    {"HD_USERS_RATE_EMAIL_BURST", "3", "register and password reset: burst per e-mail address"},
    {"HD_USERS_RATE_KEYS", "10000",
     "addresses tracked per limit; past it, new ones share one bucket"},
    {"HD_LOG_LEVEL", "info", "debug, info, warn or error"},
    {"HD_LOG_FLUSH_MS", HD_LOG_FLUSH_MS_DEFAULT, HD_LOG_FLUSH_MS_HELP},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    if (hd_config_wants_help(argc, argv)) {
        hd_config_print_help(stdout, "herald-users", SUMMARY, settings);
        return 0;
    }
    hd_config *cfg = NULL;
    hd_error err;
    if (hd_config_load(&cfg, NULL, &err) < 0) {
        fprintf(stderr, "herald-users: %s\n", err.text);
        return 2;
    }
    if (hd_config_apply_database_tls(cfg, &err) < 0) {
        fprintf(stderr, "herald-users: %s\n", err.text);
        hd_config_free(cfg);
        return 2;
    }
    hd_log_level level = HD_LOG_INFO;
    if (hd_log_level_parse(hd_config_get(cfg, "HD_LOG_LEVEL", "info"), &level) < 0) {
        fprintf(stderr, "herald-users: HD_LOG_LEVEL: not debug, info, warn or error\n");
        hd_config_free(cfg);
        return 2;
    }
    hd_logger *lg = hd_logger_new("users", level, stderr);
    if (lg == NULL || hd_config_log_write_behind(cfg, lg, &err) < 0) {
        fprintf(stderr, "herald-users: %s\n", lg ? err.text : "cannot create the logger");
        hd_logger_free(lg);
        hd_config_free(cfg);
        return 2;
    }
    hd_log_set_default(lg);
    int status = users_run(cfg, lg);
    hd_log_set_default(NULL);
    hd_logger_free(lg);
    hd_config_free(cfg);
    return status;
}
