/* Unit tests for herald/log.h: JSON lines, levels, redaction, escaping, threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/utf8.h"

/* A logger writing into memory, so the test can read back what it wrote. */
struct capture {
    char *buf;
    size_t len;
    FILE *out;
    hd_logger *lg;
};

static int setup(void **state)
{
    struct capture *c = calloc(1, sizeof *c);
    if (c == NULL || (c->out = open_memstream(&c->buf, &c->len)) == NULL)
        return -1;
    if ((c->lg = hd_logger_new("users", HD_LOG_DEBUG, c->out)) == NULL)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct capture *c = *state;
    hd_logger_free(c->lg);
    fclose(c->out);
    free(c->buf);
    free(c);
    return 0;
}

/* Number of lines written so far. */
static size_t line_count(struct capture *c)
{
    fflush(c->out);
    size_t n = 0;
    for (size_t i = 0; i < c->len; i++)
        n += c->buf[i] == '\n';
    return n;
}

/* Line `index` (0-based) parsed as a JSON object; the caller decrefs it. Fails the test
 * when the line is not exactly one JSON object. */
static json_t *line_at(struct capture *c, size_t index)
{
    fflush(c->out);
    const char *p = c->buf;
    for (size_t i = 0; i < index; i++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    const char *end = strchr(p, '\n');
    assert_non_null(end);
    json_error_t jerr;
    json_t *obj = json_loadb(p, (size_t)(end - p), 0, &jerr);
    if (obj == NULL)
        fail_msg("line %zu is not JSON: %s", index, jerr.text);
    assert_true(json_is_object(obj));
    return obj;
}

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static void line_has_time_level_service_message_and_correlation_id(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, "corr-42", "user registered", "user_id", "7", NULL);
    assert_int_equal(line_count(c), 1);
    json_t *line = line_at(c, 0);
    assert_hd(HD_OK, hd_time_parse(str(line, "time"), NULL));
    assert_string_equal(str(line, "level"), "info");
    assert_string_equal(str(line, "service"), "users");
    assert_string_equal(str(line, "message"), "user registered");
    assert_string_equal(str(line, "correlation_id"), "corr-42");
    assert_string_equal(str(line, "user_id"), "7");
    json_decref(line);
    /* the fixed keys come first, in this order, so lines read the same by eye */
    assert_memory_equal(c->buf, "{\"time\":", 8);
    assert_non_null(strstr(c->buf, "\"level\":\"info\",\"service\":\"users\",\"message\":"));
}

static void correlation_id_is_left_out_when_null(void **state)
{
    struct capture *c = *state;
    hd_log_warn(c->lg, NULL, "no flow", NULL);
    json_t *line = line_at(c, 0);
    assert_null(json_object_get(line, "correlation_id"));
    assert_string_equal(str(line, "level"), "warn");
    json_decref(line);
}

static void each_level_function_writes_its_level(void **state)
{
    struct capture *c = *state;
    hd_log_debug(c->lg, NULL, "d", NULL);
    hd_log_info(c->lg, NULL, "i", NULL);
    hd_log_warn(c->lg, NULL, "w", NULL);
    hd_log_error(c->lg, NULL, "e", NULL);
    hd_log(c->lg, HD_LOG_ERROR, NULL, "e2", NULL);
    const char *expected[] = {"debug", "info", "warn", "error", "error"};
    assert_int_equal(line_count(c), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *line = line_at(c, i);
        assert_string_equal(str(line, "level"), expected[i]);
        json_decref(line);
    }
}

static void threshold_filters_lower_levels(void **state)
{
    struct capture *c = *state;
    hd_logger_set_level(c->lg, HD_LOG_WARN);
    assert_int_equal(hd_logger_level(c->lg), HD_LOG_WARN);
    assert_false(hd_logger_enabled(c->lg, HD_LOG_INFO));
    assert_true(hd_logger_enabled(c->lg, HD_LOG_ERROR));
    hd_log_debug(c->lg, NULL, "dropped", NULL);
    hd_log_info(c->lg, NULL, "dropped", NULL);
    hd_log_json(c->lg, HD_LOG_INFO, NULL, "dropped", json_pack("{s:i}", "n", 1));
    hd_log_warn(c->lg, NULL, "kept", NULL);
    hd_log_error(c->lg, NULL, "kept", NULL);
    assert_int_equal(line_count(c), 2);
    assert_null(strstr(c->buf, "dropped"));
}

static void level_names_parse_in_any_case(void **state)
{
    (void)state;
    hd_log_level l = HD_LOG_ERROR;
    assert_hd(HD_OK, hd_log_level_parse("debug", &l));
    assert_int_equal(l, HD_LOG_DEBUG);
    assert_hd(HD_OK, hd_log_level_parse("INFO", &l));
    assert_int_equal(l, HD_LOG_INFO);
    assert_hd(HD_OK, hd_log_level_parse("Warning", &l));
    assert_int_equal(l, HD_LOG_WARN);
    assert_hd(HD_OK, hd_log_level_parse("error", &l));
    assert_int_equal(l, HD_LOG_ERROR);
    assert_hd(HD_EINVAL, hd_log_level_parse("loud", &l));
    assert_hd(HD_EINVAL, hd_log_level_parse(NULL, &l));
    assert_int_equal(l, HD_LOG_ERROR);
    assert_string_equal(hd_log_level_name(HD_LOG_WARN), "warn");
    assert_string_equal(hd_log_level_name((hd_log_level)9), "?");
}

static void default_redactions_mask_secrets_and_emails(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, "c", "login", "password", "hunter2", "new_password", "hunter3",
                "Authorization", "Bearer abc", "refresh_token", "t0k3n", "client_secret", "s",
                "email", "alice@example.com", "user_id", "7", NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "password"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "new_password"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "Authorization"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "refresh_token"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "client_secret"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "email"), "a***@example.com");
    assert_string_equal(str(line, "user_id"), "7");
    json_decref(line);
    assert_null(strstr(c->buf, "hunter"));
    assert_null(strstr(c->buf, "alice"));
    assert_null(strstr(c->buf, "t0k3n"));
}

static void email_masking_handles_odd_values(void **state)
{
    struct capture *c = *state;
    hd_log_json(c->lg, HD_LOG_INFO, NULL, "odd",
                json_pack("{s:s, s:s, s:i, s:n, s:s}", "email", "not-an-address", "email2",
                          "@example.com", "email3", 5, "email4", "email5", "\xc3\xa9lo@ex.fr"));
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "email"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "email2"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "email3"), HD_LOG_REDACTED);
    assert_true(json_is_null(json_object_get(line, "email4")));
    /* the first character is kept whole, even when it takes two bytes */
    assert_string_equal(str(line, "email5"), "\xc3\xa9***@ex.fr");
    json_decref(line);
}

static void redaction_reaches_nested_objects_and_arrays(void **state)
{
    struct capture *c = *state;
    json_t *mine = json_pack("{s:s, s:s}", "email", "bob@example.com", "name", "Bob");
    /* "O" shares `mine` with the fields: redaction must not change it */
    hd_log_json(c->lg, HD_LOG_INFO, "c", "nested",
                json_pack("{s:O, s:[{s:s}], s:{s:s}, s:i}", "user", mine, "logins", "token", "abc",
                          "secrets", "k", "v", "attempt", 3));
    json_t *line = line_at(c, 0);
    assert_string_equal(str(json_object_get(line, "user"), "email"), "b***@example.com");
    assert_string_equal(str(json_object_get(line, "user"), "name"), "Bob");
    assert_string_equal(str(json_array_get(json_object_get(line, "logins"), 0), "token"),
                        HD_LOG_REDACTED);
    assert_string_equal(str(line, "secrets"), HD_LOG_REDACTED); /* masked whole */
    assert_int_equal(json_integer_value(json_object_get(line, "attempt")), 3);
    json_decref(line);
    assert_string_equal(str(mine, "email"), "bob@example.com");
    json_decref(mine);
}

static void the_keys_that_were_missing_are_masked(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, NULL, "keys", "verification_link", "https://a/v?t=L1nk", "reset_link",
                "https://a/r/R3set", "passwd", "Pw1", "db_pwd", "Pw2", "HD_PG_DSN", "host=h user=u",
                "apikey", "K3y", "session", "S3ss", "session_id", "S4ss", "route", "/users", NULL);
    json_t *line = line_at(c, 0);
    const char *masked[] = {"verification_link", "reset_link", "passwd",  "db_pwd",
                            "HD_PG_DSN",         "apikey",     "session", "session_id"};
    for (size_t i = 0; i < sizeof masked / sizeof masked[0]; i++)
        assert_string_equal(str(line, masked[i]), HD_LOG_REDACTED);
    assert_string_equal(str(line, "route"), "/users");
    json_decref(line);
    const char *secrets[] = {"L1nk", "R3set", "Pw1", "Pw2", "user=u", "K3y", "S3ss", "S4ss"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        assert_null(strstr(c->buf, secrets[i]));
}

/* Secrets inside values, whatever the field is called. */
static void url_userinfo_inside_values_is_masked(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, NULL, "connect amqp://guest:Gu3st@127.0.0.1:5672/ failed", "error",
                "connect amqp://bob:pa/ss@h:5672/: refused", "target",
                "postgresql://herald:P4ss@db/herald?sslmode=disable", "bare",
                "see https://T0ken@github.com/x and https://a:p@q@r@host/", "plain",
                "https://example.com/a@b", "already", "amqp://guest:***@h/", NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "message"), "connect amqp://guest:***@127.0.0.1:5672/ failed");
    assert_string_equal(str(line, "error"), "connect amqp://bob:***@h:5672/: refused");
    assert_string_equal(str(line, "target"), "postgresql://herald:***@db/herald?sslmode=disable");
    assert_string_equal(str(line, "bare"), "see https://***@github.com/x and https://a:***@host/");
    /* no ':' before the '@': a user name alone would be kept, but here the '@' may be in the
     * path; masking "example.com/a" is the safe mistake */
    assert_string_equal(str(line, "plain"), "https://***@b");
    assert_string_equal(str(line, "already"), "amqp://guest:***@h/"); /* idempotent */
    json_decref(line);
    const char *secrets[] = {"Gu3st", "pa/ss", "P4ss", "T0ken", "p@q"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        assert_null(strstr(c->buf, secrets[i]));
}

static void secret_parameters_inside_values_are_masked(void **state)
{
    struct capture *c = *state;
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char link[200], body[300];
    snprintf(link, sizeof link, "https://app.test/verify?token=%s&x=1", hex);
    snprintf(body, sizeof body, "{\"email\":\"a@b.c\", \"token\" : \"%s\", \"n\":1}", hex);
    json_t *arr = json_pack("[s, s]", "GET /reset?reset_token=Abc123#frag", "ok");
    hd_log_json(c->lg, HD_LOG_WARN, NULL, "mail failed: password=Pw9 user=u",
                json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "url", link, "body", body, "conninfo",
                          "host=db user=herald password=Pw7 dbname=x", "paths", arr, "count",
                          "tokens_left=3 tokenizer", "done", "token=[REDACTED]"));
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "message"), "mail failed: password=[REDACTED] user=u");
    assert_string_equal(str(line, "url"), "https://app.test/verify?token=[REDACTED]&x=1");
    assert_string_equal(str(line, "body"),
                        "{\"email\":\"a@b.c\", \"token\" : \"[REDACTED]\", \"n\":1}");
    assert_string_equal(str(line, "conninfo"), "host=db user=herald password=[REDACTED] dbname=x");
    assert_string_equal(json_string_value(json_array_get(json_object_get(line, "paths"), 0)),
                        "GET /reset?reset_token=[REDACTED]#frag");
    assert_string_equal(str(line, "count"), "tokens_left=[REDACTED] tokenizer");
    assert_string_equal(str(line, "done"), "token=[REDACTED]");
    json_decref(line);
    assert_null(strstr(c->buf, hex));
    assert_null(strstr(c->buf, "Pw9"));
    assert_null(strstr(c->buf, "Pw7"));
    assert_null(strstr(c->buf, "Abc123"));
}

static void redaction_list_is_configurable(void **state)
{
    struct capture *c = *state;
    hd_logger_clear_redactions(c->lg);
    assert_hd(HD_OK, hd_logger_redact(c->lg, "ssn", HD_REDACT_SECRET));
    assert_hd(HD_OK, hd_logger_redact(c->lg, "contact", HD_REDACT_EMAIL));
    assert_hd(HD_OK, hd_logger_redact(c->lg, "SSN", HD_REDACT_SECRET)); /* same name again */
    assert_hd(HD_EINVAL, hd_logger_redact(c->lg, "", HD_REDACT_SECRET));
    assert_hd(HD_EINVAL, hd_logger_redact(c->lg, "x", (hd_redact_mode)7));
    assert_hd(HD_EINVAL, hd_logger_redact(hd_log_default(), "x", HD_REDACT_SECRET));
    hd_log_info(c->lg, NULL, "custom", "ssn", "123-45-6789", "contact", "carol@example.org",
                "password", "visible-now", NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "ssn"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "contact"), "c***@example.org");
    assert_string_equal(str(line, "password"), "visible-now"); /* defaults were cleared */
    json_decref(line);
}

/* Rules are folded to lower case once (log.c) and keys when matched: a rule given in
 * capitals still matches a key or a "name=" in a value in any case. */
static void a_rule_in_capitals_matches_any_case(void **state)
{
    struct capture *c = *state;
    assert_hd(HD_OK, hd_logger_redact(c->lg, "MyPIN", HD_REDACT_SECRET));
    hd_log_info(c->lg, NULL, "pins", "user_mypin", "1111", "MYPIN", "2222", "note",
                "sent MyPin=3333 to x", "mypi", "visible", NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "user_mypin"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "MYPIN"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "note"), "sent MyPin=" HD_LOG_REDACTED " to x");
    assert_string_equal(str(line, "mypi"), "visible"); /* a prefix of the rule is not it */
    json_decref(line);
}

/* hd_log_json redacts in place when the fields are its alone, on a copy otherwise: fields
 * the caller still holds (a reference of its own) come back unchanged, at any depth. */
static void fields_the_caller_still_holds_are_not_changed(void **state)
{
    struct capture *c = *state;
    json_t *mine = json_pack("{s:s, s:[{s:s}]}", "token", "T0k", "list", "password", "Pw");
    hd_log_json(c->lg, HD_LOG_INFO, NULL, "kept", json_incref(mine));
    json_t *inner = json_pack("[{s:s}]", "secret", "S3c");
    hd_log_json(c->lg, HD_LOG_INFO, NULL, "shared",
                json_pack("{s:{s:O}}", "outer", "list", inner)); /* only `inner` is shared */
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "token"), HD_LOG_REDACTED);
    assert_string_equal(str(json_array_get(json_object_get(line, "list"), 0), "password"),
                        HD_LOG_REDACTED);
    json_decref(line);
    line = line_at(c, 1);
    json_t *logged = json_object_get(json_object_get(line, "outer"), "list");
    assert_string_equal(str(json_array_get(logged, 0), "secret"), HD_LOG_REDACTED);
    json_decref(line);
    assert_string_equal(str(mine, "token"), "T0k");
    assert_string_equal(str(json_array_get(json_object_get(mine, "list"), 0), "password"), "Pw");
    assert_string_equal(str(json_array_get(inner, 0), "secret"), "S3c");
    json_decref(mine);
    json_decref(inner);
    assert_null(strstr(c->buf, "T0k"));
    assert_null(strstr(c->buf, "S3c"));
}

static void quotes_newlines_and_bad_utf8_are_escaped(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, "c\"1", "line one\nline two \"quoted\" \\ \t end", "note",
                "{\"level\":\"error\"}\n", "raw", "bad \xff\xfe byte", NULL);
    assert_int_equal(line_count(c), 1); /* the newline in the message did not split it */
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "message"), "line one\nline two \"quoted\" \\ \t end");
    assert_string_equal(str(line, "correlation_id"), "c\"1");
    assert_string_equal(str(line, "note"), "{\"level\":\"error\"}\n");
    assert_string_equal(str(line, "level"), "info");
    assert_string_equal(str(line, "raw"), "bad ?? byte");
    json_decref(line);
}

static void fields_cannot_overwrite_fixed_keys(void **state)
{
    struct capture *c = *state;
    hd_log_info(c->lg, "real", "m", "level", "error", "correlation_id", "forged", "x", NULL, NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "level"), "info");
    assert_string_equal(str(line, "correlation_id"), "real");
    assert_string_equal(str(line, "field_level"), "error");
    assert_string_equal(str(line, "field_correlation_id"), "forged");
    assert_true(json_is_null(json_object_get(line, "x")));
    json_decref(line);
}

static void long_lines_are_written_whole(void **state)
{
    struct capture *c = *state;
    size_t n = 10000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    hd_log_info(c->lg, NULL, "big", "blob", big, NULL);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "blob"), big);
    json_decref(line);
    free(big);
}

static void default_logger_is_used_for_null(void **state)
{
    struct capture *c = *state;
    assert_non_null(hd_log_default());
    hd_log_set_default(c->lg);
    assert_ptr_equal(hd_log_default(), c->lg);
    hd_log_info(NULL, NULL, "via default", NULL);
    hd_log_set_default(NULL);
    assert_ptr_not_equal(hd_log_default(), c->lg);
    assert_int_equal(hd_logger_level(NULL), HD_LOG_INFO);
    assert_int_equal(line_count(c), 1);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "message"), "via default");
    json_decref(line);
}

static void logger_new_rejects_bad_arguments(void **state)
{
    (void)state;
    assert_null(hd_logger_new(NULL, HD_LOG_INFO, NULL));
    assert_null(hd_logger_new("", HD_LOG_INFO, NULL));
    assert_null(hd_logger_new("svc", (hd_log_level)12, NULL));
    hd_logger_free(NULL);
    hd_log_json(NULL, HD_LOG_DEBUG, NULL, "below default threshold", json_object());
}

struct writer_arg {
    hd_logger *lg;
    int id;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    char id[16];
    snprintf(id, sizeof id, "t%d", a->id);
    for (int i = 0; i < 200; i++)
        hd_log_info(a->lg, id, "concurrent line with some length to it", "thread", id, NULL);
    return NULL;
}

static void threads_never_interleave_lines(void **state)
{
    struct capture *c = *state;
    pthread_t t[4];
    struct writer_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct writer_arg){c->lg, i};
        assert_int_equal(pthread_create(&t[i], NULL, writer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(line_count(c), 800);
    for (size_t i = 0; i < 800; i++) {
        json_t *line = line_at(c, i); /* fails if two lines were mixed */
        assert_string_equal(str(line, "thread"), str(line, "correlation_id"));
        json_decref(line);
    }
}

/* A stream with a descriptor (the services' stderr) is written with write(2) directly: short
 * lines without a lock, lines over PIPE_BUF alone. Into a pipe, where the kernel keeps only
 * writes of up to PIPE_BUF whole, four threads mixing short and long lines must still give
 * whole lines, and every line must be there when hd_log returns (nothing buffered). */
struct pipe_arg {
    hd_logger *lg;
    int id;
};

static void *pipe_writer(void *p)
{
    struct pipe_arg *a = p;
    char id[8], big[3 * PIPE_BUF];
    snprintf(id, sizeof id, "%d", a->id);
    memset(big, 'a' + a->id, sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 100; i++)
        hd_log_info(a->lg, id, "pipe line", "thread", id, "pad", i % 4 == 0 ? big : "short", NULL);
    return NULL;
}

struct pipe_reader {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *pipe_drain(void *p)
{
    struct pipe_reader *r = p;
    for (;;) {
        if (r->len + 65536 > r->cap) {
            r->cap = (r->cap + 65536) * 2;
            r->buf = realloc(r->buf, r->cap);
            if (r->buf == NULL)
                return NULL;
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len - 1);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    return NULL;
}

static void lines_into_a_pipe_stay_whole(void **state)
{
    (void)state;
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    FILE *w = fdopen(fd[1], "w");
    assert_non_null(w);
    hd_logger *lg = hd_logger_new("users", HD_LOG_INFO, w);
    assert_non_null(lg);
    struct pipe_reader r = {.fd = fd[0]};
    pthread_t rt, t[4];
    struct pipe_arg args[4];
    assert_int_equal(pthread_create(&rt, NULL, pipe_drain, &r), 0);
    hd_log_info(lg, NULL, "first", NULL);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct pipe_arg){lg, i};
        assert_int_equal(pthread_create(&t[i], NULL, pipe_writer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    hd_logger_free(lg);
    fclose(w); /* nothing left in its buffer: the lines went out with write(2) */
    pthread_join(rt, NULL);
    close(fd[0]);
    assert_non_null(r.buf);
    r.buf[r.len] = '\0';
    size_t lines = 0;
    for (char *line = r.buf, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j); /* fails if two lines were mixed */
        if (lines > 0) {
            const char *pad = str(j, "pad");
            assert_string_equal(str(j, "thread"), str(j, "correlation_id"));
            assert_true(strcmp(pad, "short") == 0 || strlen(pad) == 3 * PIPE_BUF - 1);
        }
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 401);
    free(r.buf);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* hd_log_fields writes the line hd_log_json writes for an object of the same members:
 * compared byte for byte after the time, whose millisecond may differ. */
static void typed_fields_write_the_line_an_object_would(void **state)
{
    struct capture *c = *state;
    const hd_log_field f[] = {
        {.key = "method", .s = "GET"},
        {.key = "path", .s = "/users/verify?token=abc&x=1"}, /* scrubbed inside the value */
        {.key = "status", .kind = HD_LOG_INT, .i = 200},
        {.key = "duration_ms", .kind = HD_LOG_REAL, .r = 0.125},
        {.key = "bytes", .kind = HD_LOG_INT, .i = -7},
        {.key = "reset_token", .s = "t0k3n"},        /* a rule's key: masked */
        {.key = "email", .s = "alice@example.com"},  /* masked as an address */
        {.key = "session", .s = NULL},               /* a rule's key, null: stays null */
        {.key = "level", .s = "forged"},             /* a fixed key: renamed */
        {.key = "name", .s = "caf\xc3\xa9 \"q\"\n"}, /* escaped as by hd_log_json */
    };
    hd_log_fields(c->lg, HD_LOG_WARN, "cid-1", "typed", f, sizeof f / sizeof f[0]);
    hd_log_json(c->lg, HD_LOG_WARN, "cid-1", "typed",
                json_pack("{s:s, s:s, s:i, s:f, s:i, s:s, s:s, s:n, s:s, s:s}", "method", "GET",
                          "path", "/users/verify?token=abc&x=1", "status", 200, "duration_ms",
                          0.125, "bytes", -7, "reset_token", "t0k3n", "email", "alice@example.com",
                          "session", "level", "forged", "name", "caf\xc3\xa9 \"q\"\n"));
    assert_int_equal(line_count(c), 2);
    fflush(c->out);
    const char *first = c->buf, *second = strchr(c->buf, '\n') + 1;
    const char *after1 = strstr(first, "\"level\""), *after2 = strstr(second, "\"level\"");
    assert_non_null(after1);
    assert_non_null(after2);
    size_t n1 = (size_t)(second - after1), n2 = strlen(after2);
    assert_int_equal(n1, n2);
    assert_memory_equal(after1, after2, n1);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "level"), "warn");
    assert_string_equal(str(line, "field_level"), "forged");
    assert_string_equal(str(line, "reset_token"), HD_LOG_REDACTED);
    assert_string_equal(str(line, "email"), "a***@example.com");
    assert_true(json_is_null(json_object_get(line, "session")));
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
    assert_true(json_is_real(json_object_get(line, "duration_ms")));
    json_decref(line);
    assert_null(strstr(c->buf, "t0k3n"));
    assert_null(strstr(c->buf, "abc&"));
    assert_null(strstr(c->buf, "alice"));
}

/* hd_log_fields(f, n) and hd_log_json(object) write the same bytes after the time (whose
 * millisecond may differ). hd_log_fields encodes its line without jansson; jansson's
 * encoder, which hd_log_json uses, is the reference for every byte. */
static void same_line(const hd_log_field *f, size_t n, json_t *object)
{
    void *st = NULL;
    assert_int_equal(setup(&st), 0);
    struct capture *c = st;
    hd_log_fields(c->lg, HD_LOG_INFO, "cid", "m", f, n);
    hd_log_json(c->lg, HD_LOG_INFO, "cid", "m", object);
    assert_int_equal(line_count(c), 2);
    const char *second = strchr(c->buf, '\n') + 1;
    const char *a = strstr(c->buf, "\"level\""), *b = strstr(second, "\"level\"");
    assert_non_null(a);
    assert_non_null(b);
    size_t na = (size_t)(second - a), nb = strlen(b);
    if (na != nb || memcmp(a, b, na) != 0)
        fail_msg("typed:  %.*s\nobject: %s", (int)na, a, b);
    teardown(&st);
}

/* Every byte, UTF-8 of each length, bad sequences, integers at their limits and keys given
 * twice: the typed line is jansson's, byte for byte; reals read back as the same double, in
 * their shortest form. */
static void typed_fields_are_encoded_as_jansson_encodes(void **state)
{
    (void)state;
    for (int b = 1; b < 256; b++) { /* each byte alone, and between letters */
        char s[4] = {'a', (char)b, 'z', '\0'};
        char *clean = hd_utf8_clean(s, "?"); /* what text_value gives jansson */
        assert_non_null(clean);
        const hd_log_field f[] = {{.key = "v", .s = s}, {.key = s, .s = "k"}};
        json_t *o = json_object();
        json_object_set_new(o, "v", json_string(clean));
        if (hd_utf8_valid(s))
            json_object_set_new(o, s, json_string("k"));
        same_line(f, hd_utf8_valid(s) ? 2 : 1, o);
        free(clean);
    }
    const char *texts[] = {
        "caf\xc3\xa9",
        "\xe2\x82\xac uro",
        "\xf0\x9f\x98\x80", /* 2, 3, 4 bytes */
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80", /* overlong, surrogate, too high */
        "\xe2\x82",
        "x\xf0\x9f\x98",
        "\x80\x80", /* cut short, lone continuations */
        "\"quoted\" \\ / \x7f",
        "tab\there\r\n\b\f",
        "",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *clean = hd_utf8_clean(texts[i], "?");
        const hd_log_field f[] = {{.key = "v", .s = texts[i]}};
        same_line(f, 1, json_pack("{s:s}", "v", clean));
        free(clean);
    }
    const long long ints[] = {0, -1, 7, 1234567890123LL, LLONG_MAX, LLONG_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const hd_log_field f[] = {{.key = "v", .kind = HD_LOG_INT, .i = ints[i]}};
        same_line(f, 1, json_pack("{s:I}", "v", (json_int_t)ints[i]));
    }
    /* Reals: the fewest digits that read back as the same double (jansson writes 17). */
    const struct {
        double r;
        const char *text;
    } reals[] = {{0.0, "0.0"},
                 {-0.0, "-0.0"},
                 {1.0, "1.0"},
                 {-3.0, "-3.0"},
                 {0.1, "0.1"},
                 {0.319275, "0.319275"},
                 {1e20, "1e20"},
                 {1e21, "1e21"},
                 {1.5e-7, "1.5e-7"},
                 {-2.5e-300, "-2.5e-300"},
                 {1e300, "1e300"},
                 {123456789012345678.0, NULL},
                 {5e-324, NULL},
                 {0.1 + 0.2, "0.30000000000000004"},
                 {1234.5678, "1234.5678"},
                 {1.0 / 3, "0.3333333333333333"},
                 {0.0001, "0.0001"},
                 {-0.000123, "-0.000123"},
                 {0.00001, "1e-5"},
                 {999999999999.5, "999999999999.5"},
                 {1e12, "1000000000000.0"},
                 {-42.5, "-42.5"},
                 {0.3194275, "0.3194275"},
                 {100.0, "100.0"}};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
        void *st = NULL;
        assert_int_equal(setup(&st), 0);
        struct capture *c = st;
        const hd_log_field f[] = {{.key = "v", .kind = HD_LOG_REAL, .r = reals[i].r}};
        hd_log_fields(c->lg, HD_LOG_INFO, NULL, "m", f, 1);
        json_t *line = line_at(c, 0);
        json_t *v = json_object_get(line, "v");
        assert_true(json_is_real(v));
        assert_true(json_real_value(v) == reals[i].r); /* read back exactly */
        if (reals[i].text != NULL) {
            char want[64];
            snprintf(want, sizeof want, "\"v\":%s}", reals[i].text);
            if (strstr(c->buf, want) == NULL)
                fail_msg("%s: want %s", c->buf, want);
        }
        json_decref(line);
        teardown(&st);
    }
    const hd_log_field odd[] = {{.key = "nan", .kind = HD_LOG_REAL, .r = NAN},
                                {.key = "inf", .kind = HD_LOG_REAL, .r = -INFINITY}};
    same_line(odd, 2, json_pack("{s:n, s:n}", "nan", "inf"));
    /* A key twice keeps its first place and its last value; "level" is renamed onto
     * "field_level", which the caller also gave. */
    const hd_log_field dup[] = {{.key = "a", .kind = HD_LOG_INT, .i = 1},
                                {.key = "b", .s = "two"},
                                {.key = "a", .kind = HD_LOG_INT, .i = 3},
                                {.key = "level", .s = "x"},
                                {.key = "field_level", .s = "y"},
                                {.key = "email", .s = "\xc3\xa9mile@example.com"},
                                {.key = "api_key", .kind = HD_LOG_INT, .i = 42}};
    json_t *o = json_pack("{s:i, s:s}", "a", 1, "b", "two");
    json_object_set_new(o, "a", json_integer(3));
    json_object_set_new(o, "level", json_string("x"));
    json_object_set_new(o, "field_level", json_string("y"));
    json_object_set_new(o, "email", json_string("\xc3\xa9mile@example.com"));
    json_object_set_new(o, "api_key", json_integer(42));
    same_line(dup, sizeof dup / sizeof dup[0], o);
}

/* Invalid UTF-8 in a typed string becomes '?' (the line is kept); a disabled level, no
 * fields or a NULL key write what they should. */
static void typed_fields_edge_cases(void **state)
{
    struct capture *c = *state;
    const hd_log_field bad[] = {{.key = "v",
                                 .s = "a\xff"
                                      "b"},
                                {.key = NULL, .s = "skipped"}};
    hd_log_fields(c->lg, HD_LOG_INFO, NULL, "bad", bad, 2);
    hd_log_fields(c->lg, HD_LOG_INFO, NULL, "none", NULL, 0);
    hd_log_fields(c->lg, HD_LOG_INFO, NULL, "null array", NULL, 3); /* refused: nothing */
    hd_logger_set_level(c->lg, HD_LOG_WARN);
    hd_log_fields(c->lg, HD_LOG_INFO, NULL, "filtered", bad, 1);
    assert_int_equal(line_count(c), 2);
    json_t *line = line_at(c, 0);
    assert_string_equal(str(line, "v"), "a?b");
    assert_int_equal(json_object_size(line), 5); /* time, level, service, message, v */
    json_decref(line);
    line = line_at(c, 1);
    assert_string_equal(str(line, "message"), "none");
    assert_int_equal(json_object_size(line), 4);
    json_decref(line);
}

/* rule_for remembers a key's rule per thread (log.c): the memo must follow every change of
 * the rules, and must not carry one logger's answers to another, even at the same address. */
static void remembered_rules_follow_every_change(void **state)
{
    struct capture *c = *state;
    const hd_log_field f[] = {{.key = "ssn", .s = "123@ssa.gov"}, {.key = "contact", .s = "a@b.c"}};
    size_t at = 0;
    /* Each line a fresh object: write the two fields and read them back. */
#define LINE_SAYS(want_ssn, want_contact)                                                          \
    do {                                                                                           \
        hd_log_fields(c->lg, HD_LOG_INFO, NULL, "memo", f, 2);                                     \
        json_t *line = line_at(c, at++);                                                           \
        assert_string_equal(str(line, "ssn"), want_ssn);                                           \
        assert_string_equal(str(line, "contact"), want_contact);                                   \
        json_decref(line);                                                                         \
    } while (0)
    LINE_SAYS("123@ssa.gov", "a@b.c"); /* both keys remembered with no rule */
    LINE_SAYS("123@ssa.gov", "a@b.c");
    assert_hd(HD_OK, hd_logger_redact(c->lg, "ssn", HD_REDACT_SECRET));
    LINE_SAYS(HD_LOG_REDACTED, "a@b.c");
    assert_hd(HD_OK, hd_logger_redact(c->lg, "contact", HD_REDACT_EMAIL));
    LINE_SAYS(HD_LOG_REDACTED, "a***@b.c");
    assert_hd(HD_OK, hd_logger_redact(c->lg, "SSN", HD_REDACT_EMAIL)); /* a mode changed */
    LINE_SAYS("1***@ssa.gov", "a***@b.c");
    hd_logger_clear_redactions(c->lg);
    LINE_SAYS("123@ssa.gov", "a@b.c");

    /* A logger with the rule, freed, then loggers without it: malloc often hands the freed
     * address straight back, and the memo must not answer for the new logger. */
    for (int round = 0; round < 4; round++) {
        hd_logger *with = hd_logger_new("users", HD_LOG_INFO, c->out);
        assert_non_null(with);
        assert_hd(HD_OK, hd_logger_redact(with, "ssn", HD_REDACT_SECRET));
        hd_log_fields(with, HD_LOG_INFO, NULL, "memo", f, 1);
        hd_logger_free(with);
        json_t *line = line_at(c, at++);
        assert_string_equal(str(line, "ssn"), HD_LOG_REDACTED);
        json_decref(line);
        hd_logger *without = hd_logger_new("users", HD_LOG_INFO, c->out);
        assert_non_null(without);
        hd_log_fields(without, HD_LOG_INFO, NULL, "memo", f, 1);
        hd_logger_free(without);
        line = line_at(c, at++);
        assert_string_equal(str(line, "ssn"), "123@ssa.gov");
        json_decref(line);
    }
#undef LINE_SAYS
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(line_has_time_level_service_message_and_correlation_id),
        T(correlation_id_is_left_out_when_null),
        T(each_level_function_writes_its_level),
        T(threshold_filters_lower_levels),
        cmocka_unit_test(level_names_parse_in_any_case),
        T(default_redactions_mask_secrets_and_emails),
        T(email_masking_handles_odd_values),
        T(redaction_reaches_nested_objects_and_arrays),
        T(the_keys_that_were_missing_are_masked),
        T(url_userinfo_inside_values_is_masked),
        T(secret_parameters_inside_values_are_masked),
        T(redaction_list_is_configurable),
        T(a_rule_in_capitals_matches_any_case),
        T(fields_the_caller_still_holds_are_not_changed),
        T(quotes_newlines_and_bad_utf8_are_escaped),
        T(fields_cannot_overwrite_fixed_keys),
        T(typed_fields_write_the_line_an_object_would),
        T(typed_fields_edge_cases),
        T(remembered_rules_follow_every_change),
        cmocka_unit_test(typed_fields_are_encoded_as_jansson_encodes),
        T(long_lines_are_written_whole),
        T(default_logger_is_used_for_null),
        cmocka_unit_test(logger_new_rejects_bad_arguments),
        T(threads_never_interleave_lines),
        cmocka_unit_test(lines_into_a_pipe_stay_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
