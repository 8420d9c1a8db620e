/* config.c — settings from the environment and .env; see config.h. */
#include "herald/config.h"
#include "herald/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ; /* POSIX: the process environment, "NAME=value" strings */

/* Sources are compared by address, so each is one object. */
static const char SOURCE_ENV[] = "environment";
static const char SOURCE_SET[] = "set";

struct entry {
    char *key;
    char *value;
    const char *source; /* SOURCE_ENV, SOURCE_SET or hd_config.dotenv_path */
};

struct hd_config {
    struct entry *entries; /* unsorted: a service reads a few dozen settings, once */
    size_t n, cap;
    char *dotenv_path; /* the file that was read, or NULL */
};

/* ---- the table --------------------------------------------------------------------------- */

static struct entry *find_n(const hd_config *cfg, const char *key, size_t keylen)
{
    for (size_t i = 0; i < cfg->n; i++)
        if (strncmp(cfg->entries[i].key, key, keylen) == 0 && cfg->entries[i].key[keylen] == '\0')
            return &cfg->entries[i];
    return NULL;
}

static struct entry *find(const hd_config *cfg, const char *key)
{
    if (cfg == NULL || key == NULL)
        return NULL;
    return find_n(cfg, key, strlen(key));
}

/* Insert or replace; key and value are copied. */
static int put(hd_config *cfg, const char *key, size_t keylen, const char *value,
               const char *source)
{
    char *v = strdup(value);
    if (v == NULL)
        return HD_ENOMEM;
    struct entry *e = find_n(cfg, key, keylen);
    if (e != NULL) {
        free(e->value);
        e->value = v;
        e->source = source;
        return HD_OK;
    }
    char *k = strndup(key, keylen);
    if (k == NULL) {
        free(v);
        return HD_ENOMEM;
    }
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 64;
        struct entry *grown = realloc(cfg->entries, cap * sizeof *grown);
        if (grown == NULL) {
            free(k);
            free(v);
            return HD_ENOMEM;
        }
        cfg->entries = grown;
        cfg->cap = cap;
    }
    cfg->entries[cfg->n++] = (struct entry){k, v, source};
    return HD_OK;
}

hd_config *hd_config_new_empty(void)
{
    return calloc(1, sizeof(hd_config));
}

void hd_config_free(hd_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->entries[i].key);
        free(cfg->entries[i].value);
    }
    free(cfg->entries);
    free(cfg->dotenv_path);
    free(cfg);
}

int hd_config_set(hd_config *cfg, const char *key, const char *value)
{
    if (cfg == NULL || key == NULL || *key == '\0' || value == NULL)
        return HD_EINVAL;
    return put(cfg, key, strlen(key), value, SOURCE_SET);
}

/* ---- .env -------------------------------------------------------------------------------- */

static int is_blank(int c)
{
    return c == ' ' || c == '\t';
}

static int is_key_start(int c)
{
    return isalpha(c) || c == '_';
}

static int is_key_char(int c)
{
    return isalnum(c) || c == '_';
}

/* After a closing quote only blanks and a comment may follow. */
static int rest_is_comment(const char *p)
{
    while (is_blank(*p))
        p++;
    return *p == '\0' || *p == '#';
}

/* Parse one line in place. Returns 1 with *key (keylen bytes) and *value (NUL-terminated,
 * pointing into line) for a setting, 0 for a blank or comment line, -1 with *why for a
 * syntax error. The value is rewritten in place: unescaping only ever shortens it. */
static int parse_line(char *line, const char **key, size_t *keylen, const char **value,
                      const char **why)
{
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0'; /* also CRLF files written on Windows */
    char *p = line;
    while (is_blank(*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && is_blank(p[6])) {
        p += 6;
        while (is_blank(*p))
            p++;
    }
    if (!is_key_start((unsigned char)*p)) {
        *why = "expected KEY=VALUE";
        return -1;
    }
    *key = p;
    while (is_key_char((unsigned char)*p))
        p++;
    *keylen = (size_t)(p - *key);
    while (is_blank(*p))
        p++;
    if (*p != '=') {
        *why = "expected '=' after the name";
        return -1;
    }
    p++;
    while (is_blank(*p))
        p++;

    if (*p == '\'') { /* literal up to the next single quote */
        char *start = ++p, *end = strchr(start, '\'');
        if (end == NULL) {
            *why = "unterminated single quote";
            return -1;
        }
        if (!rest_is_comment(end + 1)) {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        *end = '\0';
        *value = start;
        return 1;
    }
    if (*p == '"') { /* escapes \n \t \r \\ \"; any other backslash is kept as is */
        char *in = p + 1, *out = p + 1, *start = p + 1;
        for (;;) {
            if (*in == '\0') {
                *why = "unterminated double quote";
                return -1;
            }
            if (*in == '"')
                break;
            if (*in == '\\' && in[1] != '\0') {
                char c = in[1], r = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
                if (c == 'n' || c == 't' || c == 'r' || c == '\\' || c == '"') {
                    *out++ = r;
                    in += 2;
                    continue;
                }
            }
            *out++ = *in++;
        }
        if (!rest_is_comment(in + 1)) {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        *out = '\0';
        *value = start;
        return 1;
    }
    /* Unquoted: a '#' starts a comment when it opens the value or follows a blank, so
     * "KEY=value # note" is "value" while "KEY=a#b" stays "a#b". */
    char *start = p;
    for (; *p; p++) {
        if (*p == '#' && (p == start || is_blank(p[-1]))) {
            *p = '\0';
            break;
        }
    }
    char *end = start + strlen(start);
    while (end > start && is_blank(end[-1]))
        *--end = '\0';
    *value = start;
    return 1;
}

/* The lines of f (named path in messages and as the source), into cfg. Closes f. */
static int read_stream(hd_config *cfg, FILE *f, const char *path, hd_error *err)
{
    if ((cfg->dotenv_path = strdup(path)) == NULL) {
        fclose(f);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = HD_OK;
    for (long lineno = 1; rc == HD_OK && getline(&line, &cap, f) >= 0; lineno++) {
        const char *key = NULL, *value = NULL, *why = NULL;
        size_t keylen = 0;
        int kind = parse_line(line, &key, &keylen, &value, &why);
        if (kind < 0) {
            rc = hd_error_set(err, HD_ECONFIG, "%s:%ld: %s", path, lineno, why);
        } else if (kind > 0) {
            /* The environment wins: it was loaded first, so skip keys it already has. */
            struct entry *e = find_n(cfg, key, keylen);
            if (e == NULL || e->source != SOURCE_ENV)
                rc = put(cfg, key, keylen, value, cfg->dotenv_path);
            if (rc < 0)
                hd_error_set(err, rc, NULL);
        }
    }
    if (rc == HD_OK && ferror(f))
        rc = hd_error_set(err, HD_EIO, "cannot read %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

static int read_dotenv(hd_config *cfg, const char *path, int must_exist, hd_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (!must_exist && errno == ENOENT)
            return HD_OK;
        return hd_error_set(err, HD_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    return read_stream(cfg, f, path, err);
}

int hd_config_read_dotenv_buffer(hd_config *cfg, const char *text, size_t len, const char *name,
                                 hd_error *err)
{
    if (cfg == NULL || (text == NULL && len > 0) || name == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_config_read_dotenv_buffer: NULL argument");
    if (cfg->dotenv_path != NULL)
        return hd_error_set(err, HD_EINVAL, "a .env was read into this configuration already");
    if (len == 0)
        return HD_OK; /* fmemopen refuses a zero size; an empty file sets nothing */
    /* The same line reader as a file: fmemopen makes the buffer a FILE, so the two cannot
     * disagree (a NUL byte ends its line's text in both). */
    FILE *f = fmemopen((void *)text, len, "r");
    if (f == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    return read_stream(cfg, f, name, err);
}

int hd_config_load(hd_config **out, const char *dotenv_path, hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "out is NULL");
    *out = NULL;
    hd_config *cfg = hd_config_new_empty();
    if (cfg == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    /* A snapshot of the environment: getenv() later would race with any setenv() in
     * another thread, and its pointers may be invalidated by it. */
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL || eq == *e)
            continue;
        if (put(cfg, *e, (size_t)(eq - *e), eq + 1, SOURCE_ENV) < 0) {
            hd_config_free(cfg);
            return hd_error_set(err, HD_ENOMEM, NULL);
        }
    }
    int rc = read_dotenv(cfg, dotenv_path ? dotenv_path : ".env", dotenv_path != NULL, err);
    if (rc < 0) {
        hd_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return HD_OK;
}

/* ---- getters ----------------------------------------------------------------------------- */

const char *hd_config_get(const hd_config *cfg, const char *key, const char *def)
{
    const struct entry *e = find(cfg, key);
    return e ? e->value : def;
}

const char *hd_config_source(const hd_config *cfg, const char *key)
{
    const struct entry *e = find(cfg, key);
    return e ? e->source : NULL;
}

/* The value to parse, or NULL when unset or empty (then the caller uses its default). */
static const char *typed_value(const hd_config *cfg, const char *key)
{
    const char *v = hd_config_get(cfg, key, NULL);
    return v && *v ? v : NULL;
}

/* strtoll over the whole string, blanks around it allowed. 0, or -1 with errno ERANGE for
 * overflow, or -1 with errno EINVAL for anything that is not one integer. */
static int parse_int64(const char *s, int64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || !(isdigit((unsigned char)*s) || *s == '-' || *s == '+'))
        goto invalid; /* strtoll would accept "  " or skip more than we want */
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s)
        goto invalid;
    if (errno == ERANGE)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    if (*end != '\0')
        goto invalid;
    *out = (int64_t)v;
    return 0;
invalid:
    errno = EINVAL;
    return -1;
}

int hd_config_get_int(const hd_config *cfg, const char *key, int64_t def, int64_t min, int64_t max,
                      int64_t *out, hd_error *err)
{
    if (cfg == NULL || key == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_config_get_int: NULL argument");
    const char *s = typed_value(cfg, key);
    if (s == NULL) {
        *out = def;
        return HD_OK;
    }
    int64_t v;
    if (parse_int64(s, &v) < 0) {
        if (errno == ERANGE)
            return hd_error_set(err, HD_ECONFIG, "%s: '%s' is out of range [%lld, %lld]", key, s,
                                (long long)min, (long long)max);
        return hd_error_set(err, HD_ECONFIG, "%s: '%s' is not an integer", key, s);
    }
    if (v < min || v > max)
        return hd_error_set(err, HD_ECONFIG, "%s: %lld is out of range [%lld, %lld]", key,
                            (long long)v, (long long)min, (long long)max);
    *out = v;
    return HD_OK;
}

int hd_config_get_listen(const hd_config *cfg, const char *key, const char *def, char *host,
                         size_t cap, uint16_t *port, hd_error *err)
{
    if (cfg == NULL || key == NULL || def == NULL || host == NULL || port == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_config_get_listen: NULL argument");
    const char *s = hd_config_get(cfg, key, def);
    if (*s == '\0')
        s = def;
    const char *colon = strrchr(s, ':');
    const char *h = s;
    size_t n = colon ? (size_t)(colon - s) : 0;
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    char *end = NULL;
    errno = 0;
    long p = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || n == 0 || n >= cap || end == colon + 1 || *end != '\0' || errno != 0 ||
        p < 0 || p > 65535)
        return hd_error_set(err, HD_ECONFIG, "%s: '%s' is not address:port (e.g. %s)", key, s, def);
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (uint16_t)p;
    return HD_OK;
}

int hd_config_get_bool(const hd_config *cfg, const char *key, int def, int *out, hd_error *err)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    if (cfg == NULL || key == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_config_get_bool: NULL argument");
    const char *s = typed_value(cfg, key);
    if (s == NULL) {
        *out = def ? 1 : 0;
        return HD_OK;
    }
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return HD_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return HD_OK;
        }
    }
    return hd_error_set(err, HD_ECONFIG,
                        "%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)", key, s);
}

int hd_config_get_duration_ms(const hd_config *cfg, const char *key, int64_t def_ms, int64_t min_ms,
                              int64_t max_ms, int64_t *out, hd_error *err)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    if (cfg == NULL || key == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_config_get_duration_ms: NULL argument");
    const char *s = typed_value(cfg, key);
    if (s == NULL) {
        *out = def_ms;
        return HD_OK;
    }
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    const char *digits = p;
    int64_t n = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (INT64_MAX - (*p - '0')) / 10)
            return hd_error_set(err, HD_ECONFIG, "%s: '%s' is out of range [%lldms, %lldms]", key,
                                s, (long long)min_ms, (long long)max_ms);
        n = n * 10 + (*p - '0');
    }
    if (p == digits)
        return hd_error_set(err, HD_ECONFIG,
                            "%s: '%s' is not a duration (e.g. '500ms', '2s', '1m', '1h')", key, s);
    const char *unit = p;
    while (isalpha((unsigned char)*p))
        p++;
    size_t ulen = (size_t)(p - unit);
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0')
        return hd_error_set(err, HD_ECONFIG,
                            "%s: '%s' is not a duration (e.g. '500ms', '2s', '1m', '1h')", key, s);
    int64_t mult = -1;
    if (ulen == 0 && n == 0)
        mult = 1; /* "0" is zero in any unit */
    for (size_t i = 0; ulen > 0 && i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].unit) == ulen && strncmp(unit, units[i].unit, ulen) == 0)
            mult = units[i].ms;
    if (mult < 0 && ulen == 0)
        return hd_error_set(err, HD_ECONFIG, "%s: '%s' needs a unit: ms, s, m or h (e.g. '%llds')",
                            key, s, (long long)n);
    if (mult < 0)
        return hd_error_set(err, HD_ECONFIG, "%s: '%s' has an unknown unit (use ms, s, m or h)",
                            key, s);
    if (n > INT64_MAX / mult || n * mult < min_ms || n * mult > max_ms)
        return hd_error_set(err, HD_ECONFIG, "%s: '%s' is out of range [%lldms, %lldms]", key, s,
                            (long long)min_ms, (long long)max_ms);
    *out = n * mult;
    return HD_OK;
}

/* ---- --help ------------------------------------------------------------------------------ */

int hd_config_wants_help(int argc, char **argv)
{
    for (int i = 1; argv != NULL && i < argc; i++)
        if (argv[i] && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0))
            return 1;
    return 0;
}

void hd_config_print_help(FILE *out, const char *program, const char *summary,
                          const hd_setting *settings)
{
    if (out == NULL)
        return;
    fprintf(out, "Usage: %s [--help]\n", program ? program : "herald");
    if (summary != NULL && *summary)
        fprintf(out, "\n%s\n", summary);
    if (settings == NULL || settings[0].name == NULL)
        return;
    int width = 0;
    for (const hd_setting *s = settings; s->name != NULL; s++)
        if ((int)strlen(s->name) > width)
            width = (int)strlen(s->name);
    fprintf(out, "\nSettings (environment variables; also read from ./.env, the environment "
                 "wins):\n\n");
    for (const hd_setting *s = settings; s->name != NULL; s++) {
        fprintf(out, "  %-*s  %s", width, s->name, s->description ? s->description : "");
        if (s->default_value == NULL)
            fprintf(out, " (required)\n");
        else if (*s->default_value == '\0')
            fprintf(out, " (default: empty)\n");
        else
            fprintf(out, " (default: %s)\n", s->default_value);
    }
}

int hd_config_log_write_behind(const hd_config *cfg, struct hd_logger *lg, hd_error *err)
{
    int64_t ms = 0;
    int rc = hd_config_get_duration_ms(cfg, "HD_LOG_FLUSH_MS", HD_LOG_FLUSH_MS_DEFAULT_MS, 0,
                                       HD_LOG_FLUSH_MS_MAX, &ms, err);
    if (rc < 0)
        return rc;
    if ((rc = hd_logger_write_behind(lg, (int)ms)) < 0)
        return hd_error_set(err, rc, "HD_LOG_FLUSH_MS: cannot write the log behind: %s",
                            hd_strerror(rc));
    return HD_OK;
}
