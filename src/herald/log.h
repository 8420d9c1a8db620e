/* herald/log.h — structured logs: one JSON object a line.
 *
 * A message crosses several services; to follow it you search the logs of all of them for
 * one correlation id. That only works when logs are data, not prose, so every line is a
 * JSON object with the same keys, written by jansson (quotes, newlines and control
 * characters in values are escaped, so a value can never forge a second line):
 *
 *     {"time":"2026-11-23T04:05:06.789Z","level":"info","service":"users",
 *      "message":"user registered","correlation_id":"6f1c...","user_id":"42",
 *      "email":"a***@example.com","password":"[REDACTED]"}
 *
 * Extra fields come as key/value string pairs ended by NULL (the compiler checks the NULL,
 * see HD_LOG_SENTINEL), or as a jansson object for typed and nested values.
 *
 * Secrets and personal data must not reach log files: they are copied to places with
 * weaker access control and kept for a long time. Every field whose name contains (case
 * does not matter) one of the logger's redaction names is masked before the line is
 * written, at any depth of nested objects and arrays. Substring matching is deliberate:
 * it also catches "new_password" and "refresh_token", and a field masked by mistake is a
 * smaller bug than a leaked secret. Defaults: password, passwd, pwd, secret, token,
 * authorization, cookie, api_key, apikey, session, dsn, _link (verification_link, reset_link:
 * links in mails carry tokens) -> "[REDACTED]"; email -> "a***@example.com" (keeps the
 * domain, which helps to debug delivery, and hides the person).
 *
 * Names are not enough: a secret also travels inside a value ("connect
 * amqp://bob:pw@host/ failed", "GET /verify?token=...", "host=db password=pw"). So every
 * string value, at any depth, and the message text are scanned too:
 *     scheme://user:pass@host  -> scheme://user:***@host  (userinfo up to the LAST '@';
 *                                 a userinfo without ':' becomes "***")
 *     name=value, "name":"v"   -> the value becomes "[REDACTED]" when name matches a SECRET
 *                                 rule ("token=", "reset_token=", "password=", "dsn=")
 * A bare secret with no such marker cannot be recognised: still put data in fields with
 * telling names, not in messages.
 *
 * Threads: every line is written whole (one write(2); see docs/modules/log.md), so lines
 * from several threads never interleave; with write-behind (hd_logger_write_behind) the
 * lines that wait leave together, still whole and in the order of the calls. Configure a
 * logger (redactions, write-behind) before sharing it; level changes are safe at any time.
 *
 * Ownership: "borrowed" = the logger keeps a pointer that must stay valid; "stolen" = the
 * function takes ownership, also when it fails.
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdarg.h>
#include <stdio.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Warn at compile time when a key/value list does not end with NULL. */
#if defined(__GNUC__) || defined(__clang__)
#define HD_LOG_SENTINEL __attribute__((sentinel))
#else
#define HD_LOG_SENTINEL
#endif

typedef enum hd_log_level {
    HD_LOG_DEBUG = 0,
    HD_LOG_INFO = 1,
    HD_LOG_WARN = 2,
    HD_LOG_ERROR = 3,
} hd_log_level;

typedef enum hd_redact_mode {
    HD_REDACT_SECRET = 0, /* the value becomes "[REDACTED]" */
    HD_REDACT_EMAIL = 1,  /* "alice@example.com" becomes "a***@example.com" */
} hd_redact_mode;

#define HD_LOG_REDACTED "[REDACTED]"

/* Parse "debug", "info", "warn" (or "warning") or "error", in any case, as read from a
 * setting such as HD_LOG_LEVEL. Returns 0, or HD_EINVAL (and leaves *level alone). */
int hd_log_level_parse(const char *s, hd_log_level *level);

/* "debug", "info", "warn" or "error"; "?" for other values. A borrowed static string. */
const char *hd_log_level_name(hd_log_level level);

typedef struct hd_logger hd_logger;

/* A new logger for `service` (copied) writing lines of `level` and above to out (borrowed:
 * it must stay open until hd_logger_free; NULL means stderr), with the default redactions.
 * Returns NULL when service is NULL or empty, level is invalid, or memory runs out. */
hd_logger *hd_logger_new(const char *service, hd_log_level level, FILE *out);

/* Free lg (NULL allowed). Does not close its stream. Must not be the current default
 * (hd_log_set_default(NULL) first). */
void hd_logger_free(hd_logger *lg);

/* Write-behind for the busiest lines: from now on, a debug or info line written with
 * hd_log_fields_behind (an HTTP server's access line: hd_http_log_access) waits in memory,
 * and a thread of the logger writes all that waits in one write(2), at most flush_ms later
 * (sooner when 32 KiB wait). Every other line is written before its call returns, after
 * what waits, so the stream keeps the order of the calls. hd_logger_free writes what waits.
 * The price: a process that dies without hd_logger_free (SIGKILL, a crash) loses what waits,
 * at most flush_ms of those lines; warnings and errors never wait. Why and what it saves:
 * docs/modules/log.md, "Access lines written behind".
 * flush_ms 0 does nothing (every line is written at once, as without this call). Call it
 * once, before other threads log through lg. Returns 0, HD_EINVAL (lg NULL or the built-in
 * logger, called before, flush_ms outside 0..HD_LOG_FLUSH_MS_MAX, a stream without a descriptor
 * such as open_memstream's), HD_ENOMEM, or HD_EIO (no thread could be started). */
#define HD_LOG_FLUSH_MS_MAX 10000 /* the longest flush_ms hd_logger_write_behind takes */
int hd_logger_write_behind(hd_logger *lg, int flush_ms);

/* Change or read the threshold; thread-safe. */
void hd_logger_set_level(hd_logger *lg, hd_log_level level);
hd_log_level hd_logger_level(const hd_logger *lg);

/* 1 when a line of `level` would be written: lets a caller skip building costly fields. */
int hd_logger_enabled(const hd_logger *lg, hd_log_level level);

/* Add a redaction: fields whose name contains `name` (copied; case-insensitive) are masked
 * with `mode`. Adding an existing name changes its mode. Returns 0, HD_EINVAL or HD_ENOMEM
 * (also HD_EINVAL for the built-in default logger, which is not configurable). */
int hd_logger_redact(hd_logger *lg, const char *name, hd_redact_mode mode);

/* Remove every redaction, the defaults included (then add your own list). */
void hd_logger_clear_redactions(hd_logger *lg);

/* The process default logger, used wherever a function takes a NULL logger: the one given
 * to hd_log_set_default, or else a built-in one (service "herald", level info, stderr,
 * default redactions). Borrowed. */
hd_logger *hd_log_default(void);

/* Make lg (borrowed: keep it alive while it is the default) the process default; NULL goes
 * back to the built-in logger. */
void hd_log_set_default(hd_logger *lg);

/* Write one line. lg NULL = the default logger. correlation_id and message are borrowed and
 * may be NULL (correlation_id NULL: the key is left out). Then come key, value pairs of
 * strings (a NULL value is written as null), ended by a NULL key:
 *     hd_log(lg, HD_LOG_INFO, cid, "user registered", "user_id", id, "email", email, NULL);
 * A field named like a fixed key (time, level, service, message, correlation_id) is written
 * as "field_<name>", so data can never forge those. Never fails visibly: a logger must not
 * break its caller; output errors are ignored. */
void hd_log(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message,
            ...) HD_LOG_SENTINEL;
void hd_logv(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message,
             va_list ap);

/* The same at a fixed level. */
void hd_log_debug(hd_logger *lg, const char *correlation_id, const char *message,
                  ...) HD_LOG_SENTINEL;
void hd_log_info(hd_logger *lg, const char *correlation_id, const char *message,
                 ...) HD_LOG_SENTINEL;
void hd_log_warn(hd_logger *lg, const char *correlation_id, const char *message,
                 ...) HD_LOG_SENTINEL;
void hd_log_error(hd_logger *lg, const char *correlation_id, const char *message,
                  ...) HD_LOG_SENTINEL;

/* Write one line whose extra fields are the members of `fields` (a JSON object, stolen;
 * NULL for none), so values may be numbers, booleans or nested objects:
 *     hd_log_json(lg, HD_LOG_WARN, cid, "retrying",
 *                 json_pack("{s:i, s:s}", "attempt", 3, "error", "timeout"));
 * Redaction applies to nested members too, and never changes your own data: fields with an
 * object or array also referenced elsewhere (json_pack "O", a json_incref you kept) are
 * redacted on a copy; fields that are the logger's alone are redacted in place. */
void hd_log_json(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message,
                 json_t *fields);

/* One extra field of hd_log_fields: a key (borrowed) and a value of one kind. */
typedef enum hd_log_kind {
    HD_LOG_STRING = 0, /* s: borrowed, NULL for null; invalid UTF-8 bytes become '?' */
    HD_LOG_INT = 1,    /* i */
    HD_LOG_REAL = 2,   /* r */
} hd_log_kind;

typedef struct hd_log_field {
    const char *key;
    hd_log_kind kind;
    const char *s;
    long long i;
    double r;
} hd_log_field;

/* Write one line whose extra fields are fields[0, n) (borrowed), in that order: the same
 * line, redacted the same way, as hd_log_json with an object of those members, without
 * building that object and copying it into the line (a request's access line is the
 * hottest line there is: docs/modules/log.md). A key given twice keeps its first place
 * and its last value, as in an object. */
void hd_log_fields(hd_logger *lg, hd_log_level level, const char *correlation_id,
                   const char *message, const hd_log_field *fields, size_t n);

/* hd_log_fields for a line that may wait (hd_logger_write_behind): a debug or info line of a
 * logger that writes behind. Any other line is written before the call returns. */
void hd_log_fields_behind(hd_logger *lg, hd_log_level level, const char *correlation_id,
                          const char *message, const hd_log_field *fields, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_LOG_H */
