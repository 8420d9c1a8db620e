/* herald/config.h — settings from the environment and a .env file, and --help.
 *
 * Every herald binary is configured the twelve-factor way: by environment variables, which
 * work the same under a shell, systemd, Docker and CI. For local work a `.env` file next to
 * the program saves typing; the real environment always wins over it, so an operator can
 * override one value without editing the file.
 *
 *     hd_config *cfg;
 *     if (hd_config_load(&cfg, NULL, &err) < 0)          // NULL: ./.env if it exists
 *         die(err.text);
 *     const char *url = hd_config_get(cfg, "HD_STORE_URL", "sqlite:///tmp/users.db");
 *     int64_t batch;
 *     if (hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &batch, &err) < 0)
 *         die(err.text);                                  // "HD_RELAY_BATCH: 'abc' is not an
 * integer" hd_config_free(cfg);
 *
 * .env syntax, one setting a line (the common subset of what docker compose, python-dotenv
 * and systemd accept):
 *
 *     # a comment line; blank lines are ignored
 *     HD_HTTP_PORT=8080
 *     export HD_LOG_LEVEL=debug        # "export " is allowed so the file can be sourced
 *     HD_GREETING="hello\tworld"       # double quotes: \n \t \r \\ \" are escapes
 *     HD_PATTERN='a\b # not a comment' # single quotes: everything literal
 *     HD_EMPTY=                        # an empty value
 *
 * An unquoted value ends at " #" (a # after whitespace starts a comment; "a#b" is kept
 * whole) and is trimmed. There is no ${VAR} expansion and no multi-line value, on purpose:
 * a configuration file should say exactly what it means. A later line overrides an earlier
 * one. A line that is none of the above is an error naming the file and line.
 *
 * The environment is read once, in hd_config_load: later setenv() calls are not seen, and
 * the .env values are NOT exported to the process environment (a library must not change
 * its process's environment behind its back). Load once in main() and pass the hd_config
 * down; after loading it is read-only, so threads may share it.
 *
 * Empty values: hd_config_get returns "" for a variable set to the empty string; the typed
 * getters treat an empty value as unset and return the default (`HD_X=` in a compose file
 * usually means "no opinion").
 *
 * Every value of the typed getters is checked, and a bad one is an HD_ECONFIG error whose
 * text names the variable and the value, so the operator can fix it from the message alone.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_config hd_config;

/* Read the environment, then the .env file at dotenv_path (NULL: "./.env" when it exists,
 * silently nothing when it does not; an explicit path must exist). Variables set in the
 * environment win over the file. On success *out is new (free with hd_config_free).
 * Returns 0; HD_EIO when an explicit file cannot be read; HD_ECONFIG for a syntax error
 * (err->text: ".env:3: expected KEY=VALUE"); HD_EINVAL; HD_ENOMEM. */
int hd_config_load(hd_config **out, const char *dotenv_path, hd_error *err);

/* Read .env text (len bytes, borrowed; it need not end with a NUL) into cfg as if it were
 * the file called name (borrowed: messages and hd_config_source say name), with the same
 * rules as hd_config_load's file: keys from the environment win. For programs that get
 * their settings from elsewhere than a file, and for tests/fuzz/fuzz_dotenv.c. Once per cfg
 * (a second call is HD_EINVAL). Returns 0, HD_ECONFIG (err->text: "<name>:3: expected
 * KEY=VALUE"; the lines before the bad one are kept: free cfg), HD_EINVAL or HD_ENOMEM. */
int hd_config_read_dotenv_buffer(hd_config *cfg, const char *text, size_t len, const char *name,
                                 hd_error *err);

/* A configuration with no environment at all, only what hd_config_set puts into it: for
 * tests, and for programs that take their settings from elsewhere. New. */
hd_config *hd_config_new_empty(void);

/* Set key to value in cfg (both copied), replacing what the environment or file said.
 * For tests and command-line overrides; not thread-safe against readers. Returns 0,
 * HD_EINVAL or HD_ENOMEM. */
int hd_config_set(hd_config *cfg, const char *key, const char *value);

void hd_config_free(hd_config *cfg);

/* The value of key, or def when it is not set (an empty value is returned as ""). The
 * result is borrowed: from cfg (valid until hd_config_free) or def itself. */
const char *hd_config_get(const hd_config *cfg, const char *key, const char *def);

/* Where key's value came from: "environment", the .env path, "set", or NULL when unset.
 * Borrowed. Useful in a startup log line ("HD_STORE_URL from .env"). */
const char *hd_config_source(const hd_config *cfg, const char *key);

/* A decimal integer (optional sign, surrounding blanks allowed) in [min, max] into *out;
 * def when unset or empty (def itself is not range-checked). Returns 0 or HD_ECONFIG with
 * texts like "HD_RELAY_BATCH: 'abc' is not an integer" or "HD_RELAY_BATCH: 0 is out of
 * range [1, 1000]"; *out is untouched on failure. */
int hd_config_get_int(const hd_config *cfg, const char *key, int64_t def, int64_t min, int64_t max,
                      int64_t *out, hd_error *err);

/* A listening address: "host:port" or "[v6]:port" (def when unset or empty) into host (a
 * copy, without the brackets, cap bytes with its NUL) and *port in [0, 65535]. Returns 0 or
 * HD_ECONFIG ("HD_USERS_LISTEN: 'x' is not address:port (e.g. 127.0.0.1:8081)"); host and
 * *port are untouched on failure. Every service's HD_<SERVICE>_LISTEN goes through it. */
int hd_config_get_listen(const hd_config *cfg, const char *key, const char *def, char *host,
                         size_t cap, uint16_t *port, hd_error *err);

/* true/false, yes/no, on/off, 1/0 (any case) into *out as 1 or 0; def when unset or
 * empty. Returns 0 or HD_ECONFIG ("HD_X: 'maybe' is not a boolean (true/false, yes/no,
 * on/off, 1/0)"). */
int hd_config_get_bool(const hd_config *cfg, const char *key, int def, int *out, hd_error *err);

/* A duration: a non-negative integer followed by a unit, "ms", "s", "m" or "h" ("500ms",
 * "2s", "1m"), into milliseconds in [min_ms, max_ms]; def_ms when unset or empty. A bare
 * number is refused (except "0"): "30" could mean seconds or milliseconds, and guessing
 * wrong makes a timeout a thousand times off. Returns 0 or HD_ECONFIG
 * ("HD_RELAY_POLL: '30' needs a unit: ms, s, m or h (e.g. '30s')"). */
int hd_config_get_duration_ms(const hd_config *cfg, const char *key, int64_t def_ms, int64_t min_ms,
                              int64_t max_ms, int64_t *out, hd_error *err);

/* HD_LOG_FLUSH_MS, the setting every service with an HTTP API reads: how long its access
 * lines may wait in memory before they are written (hd_logger_write_behind), a duration
 * from "0" (written at once) to "10s"; HD_LOG_FLUSH_MS_DEFAULT when unset. Applies it to lg
 * (borrowed). Returns 0, HD_ECONFIG (a bad value: the text says which), or what
 * hd_logger_write_behind returns. */
#define HD_LOG_FLUSH_MS_DEFAULT_MS 20
#define HD_LOG_FLUSH_MS_DEFAULT    "20ms" /* the same */
#define HD_LOG_FLUSH_MS_HELP                                                                       \
    "how long HTTP access lines may wait in memory to be written together (0: each at once; a "    \
    "crash loses at most this much of them)"
struct hd_logger;
int hd_config_log_write_behind(const hd_config *cfg, struct hd_logger *lg, hd_error *err);

/* One documented setting: the same table prints --help and reminds the code which names
 * it reads. default_value NULL means "required, no default". */
typedef struct hd_setting {
    const char *name;
    const char *default_value;
    const char *description;
} hd_setting;

/* Print a --help text to out: "Usage: program [--help]", the summary, and one line per
 * setting of the table (ended by an entry whose name is NULL), names aligned:
 *
 *     HD_HTTP_PORT     port of the HTTP API (default: 8080)
 *     HD_STORE_URL     database URL (required)
 */
void hd_config_print_help(FILE *out, const char *program, const char *summary,
                          const hd_setting *settings);

/* 1 when argv holds "--help" or "-h", else 0: every binary starts with
 *     if (hd_config_wants_help(argc, argv)) { hd_config_print_help(stdout, ...); return 0; } */
int hd_config_wants_help(int argc, char **argv);

/* ---- TLS settings (config_tls.c) -------------------------------------------------------
 * The settings every service reads the same way for TLS to its servers (docs/deployment.md,
 * "TLS to the broker, the database and SMTP"). Each is checked at start-up, so a mistake is
 * an HD_ECONFIG naming the setting before anything connects. */
struct hd_amqp_options;
struct hd_sender_smtp_options;

/* HD_DATABASE_CA_FILE: when set, rewrite HD_DATABASE_URL (and HD_DATABASE_READ_URL, when
 * set) in cfg with sslmode=verify-full and sslrootcert=<file> (hd_store_tls_url). Call it
 * once, right after hd_config_load, before threads read cfg. Returns 0 or HD_ECONFIG /
 * HD_EURL / HD_ENOMEM. */
int hd_config_apply_database_tls(hd_config *cfg, hd_error *err);

/* HD_AMQP_CA_FILE, HD_AMQP_CERT_FILE, HD_AMQP_KEY_FILE into *o, checked against HD_AMQP_URL
 * (hd_amqp_tls_settings). The strings are borrowed from cfg. Returns 0 or HD_ECONFIG. */
int hd_config_amqp_tls(const hd_config *cfg, struct hd_amqp_options *o, hd_error *err);

/* HD_SMTP_TLS (auto, required, off) and HD_SMTP_CA_FILE into *o (strings borrowed from
 * cfg). Returns 0 or HD_ECONFIG. */
int hd_config_smtp_tls(const hd_config *cfg, struct hd_sender_smtp_options *o, hd_error *err);

/* Rows for a service's --help table (hd_setting initialisers). */
/* clang-format off */
#define HD_SETTINGS_DATABASE_TLS \
    {"HD_DATABASE_CA_FILE", "", "PostgreSQL: PEM file of the CA of the server's certificate; " \
     "adds sslmode=verify-full and sslrootcert to HD_DATABASE_URL (and HD_DATABASE_READ_URL): " \
     "TLS with certificate and host name checked, never plain"}
#define HD_SETTINGS_AMQP_TLS \
    {"HD_AMQP_CA_FILE", "", "amqps:// only: PEM file of the CA of the broker's certificate " \
     "(empty: the system's trust store); peer and host name are always verified"}, \
    {"HD_AMQP_CERT_FILE", "", "amqps:// only: PEM client certificate, if the broker asks"}, \
    {"HD_AMQP_KEY_FILE", "", "amqps:// only: the client certificate's PEM private key"}
#define HD_SETTINGS_SMTP_TLS \
    {"HD_SMTP_TLS", "auto", "STARTTLS: required (verified TLS or no send), off (never), auto " \
     "(smtp:// tries it, and requires it when the URL has a password; smtps:// is TLS from " \
     "the first byte)"}, \
    {"HD_SMTP_CA_FILE", "", "PEM file of the CA of the SMTP server's certificate (empty: the " \
     "system's trust store)"}
/* clang-format on */

#ifdef __cplusplus
}
#endif
#endif /* HERALD_CONFIG_H */
