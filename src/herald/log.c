/* log.c — one JSON object a line, with redaction; see log.h. */
#include "herald/log.h"
#include "herald/clock.h"
#include "herald/jsonw.h"
#include "herald/log_behind.h"
#include "herald/error.h"
#include "herald/utf8.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

/* name is kept lower-cased (ASCII) with its length, so that matching a key folds only the
 * key's bytes and compares inline: the strncasecmp at every position of every key for every
 * rule was a fifth of a GET /users/{id} (docs/bench.md, issue 14). */
struct redaction {
    const char *name; /* owned (strdup, lower-cased) except in the built-in logger */
    size_t len;       /* strlen(name) */
    hd_redact_mode mode;
};

struct hd_logger {
    const char *service;  /* owned (strdup) except in the built-in logger */
    atomic_int level;     /* atomic: hd_logger_set_level may race with writers */
    FILE *out;            /* borrowed; NULL = stderr, looked up when writing */
    pthread_mutex_t lock; /* fwrite + fflush of one line (streams without fd); long lines */
    /* Streams with a descriptor: a line up to PIPE_BUF bytes is one write(2) under the read
     * side (any number at once), a longer one takes the write side (alone); see write_fd. */
    pthread_rwlock_t fd_lock;
    atomic_int long_waiting; /* a line over PIPE_BUF waits for fd_lock's write side */
    struct redaction *rules;
    size_t nrules, cap;
    /* Which rules these are: a value no other set of rules of any logger had (the built-in's
     * 0), taken anew at each change, so that rule_for's memo of a freed logger's rules cannot
     * be read for a new logger at the same address. */
    _Atomic uint64_t rules_gen;
    int builtin;           /* the static default: nothing of it is freed or changed */
    hd_log_behind *behind; /* NULL, or every line goes through it (hd_logger_write_behind) */
};

/* "_link": links in mails carry tokens (verification_link, reset_link); "dsn": database URLs
 * carry passwords; "session": session ids are bearer credentials. */
#define RULE(name, mode)                                                                           \
    {                                                                                              \
        name, sizeof name - 1, mode                                                                \
    } /* name: a lower-case literal */
static const struct redaction default_rules[] = {
    RULE("password", HD_REDACT_SECRET), RULE("passwd", HD_REDACT_SECRET),
    RULE("pwd", HD_REDACT_SECRET),      RULE("secret", HD_REDACT_SECRET),
    RULE("token", HD_REDACT_SECRET),    RULE("authorization", HD_REDACT_SECRET),
    RULE("cookie", HD_REDACT_SECRET),   RULE("api_key", HD_REDACT_SECRET),
    RULE("apikey", HD_REDACT_SECRET),   RULE("session", HD_REDACT_SECRET),
    RULE("dsn", HD_REDACT_SECRET),      RULE("_link", HD_REDACT_SECRET),
    RULE("email", HD_REDACT_EMAIL),
};
#undef RULE
#define NDEFAULT_RULES (sizeof default_rules / sizeof default_rules[0])

/* Statically initialised, so the default logger exists before main() and never leaks. */
static hd_logger builtin_logger = {
    .service = "herald",
    .level = HD_LOG_INFO,
    .out = NULL,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .fd_lock = PTHREAD_RWLOCK_INITIALIZER,
    .rules = (struct redaction *)default_rules,
    .nrules = NDEFAULT_RULES,
    .cap = 0,
    .builtin = 1,
};
static _Atomic(hd_logger *) current_default = NULL;

/* The keys every line has; a field with one of these names is renamed (see add_field). */
static const char *const fixed_keys[] = {"time",    "level",          "service",
                                         "message", "correlation_id", NULL};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* tolower for ASCII only, locale-free: rule names and keys are matched byte for byte. */
static char lower_ascii(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---- levels ------------------------------------------------------------------------------ */

int hd_log_level_parse(const char *s, hd_log_level *level)
{
    if (s == NULL || level == NULL)
        return HD_EINVAL;
    for (int i = HD_LOG_DEBUG; i <= HD_LOG_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *level = (hd_log_level)i;
            return HD_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *level = HD_LOG_WARN;
        return HD_OK;
    }
    return HD_EINVAL;
}

const char *hd_log_level_name(hd_log_level level)
{
    if ((unsigned)level > HD_LOG_ERROR)
        return "?";
    return level_names[level];
}

/* ---- loggers ----------------------------------------------------------------------------- */

hd_logger *hd_logger_new(const char *service, hd_log_level level, FILE *out)
{
    if (service == NULL || *service == '\0' || (unsigned)level > HD_LOG_ERROR)
        return NULL;
    hd_logger *lg = calloc(1, sizeof *lg);
    if (lg == NULL)
        return NULL;
    char *name = strdup(service);
    if (name == NULL || pthread_mutex_init(&lg->lock, NULL) != 0) {
        free(name);
        free(lg);
        return NULL;
    }
    if (pthread_rwlock_init(&lg->fd_lock, NULL) != 0) {
        pthread_mutex_destroy(&lg->lock);
        free(name);
        free(lg);
        return NULL;
    }
    lg->service = name;
    atomic_init(&lg->level, (int)level);
    atomic_init(&lg->long_waiting, 0);
    lg->out = out;
    for (size_t i = 0; i < NDEFAULT_RULES; i++) {
        if (hd_logger_redact(lg, default_rules[i].name, default_rules[i].mode) != HD_OK) {
            hd_logger_free(lg);
            return NULL;
        }
    }
    return lg;
}

void hd_logger_free(hd_logger *lg)
{
    if (lg == NULL || lg->builtin)
        return;
    hd_log_behind_free(lg->behind); /* writes what waits */
    hd_logger_clear_redactions(lg);
    free(lg->rules);
    pthread_mutex_destroy(&lg->lock);
    pthread_rwlock_destroy(&lg->fd_lock);
    free((char *)lg->service);
    free(lg);
}

int hd_logger_write_behind(hd_logger *lg, int flush_ms)
{
    if (lg == NULL || lg->builtin || lg->behind != NULL || flush_ms < 0 ||
        flush_ms > HD_LOG_BEHIND_MAX_MS)
        return HD_EINVAL;
    if (flush_ms == 0)
        return HD_OK;
    int fd = fileno(lg->out ? lg->out : stderr);
    if (fd < 0)
        return HD_EINVAL; /* a stream in memory: nothing to save, and no descriptor */
    /* Bytes the FILE may hold go first: from now on the logger writes to fd itself. */
    fflush(lg->out ? lg->out : stderr);
    return hd_log_behind_new(fd, flush_ms, &lg->behind);
}

void hd_logger_set_level(hd_logger *lg, hd_log_level level)
{
    if (lg == NULL)
        lg = hd_log_default();
    if ((unsigned)level <= HD_LOG_ERROR)
        atomic_store(&lg->level, (int)level);
}

hd_log_level hd_logger_level(const hd_logger *lg)
{
    if (lg == NULL)
        lg = hd_log_default();
    return (hd_log_level)atomic_load(&((hd_logger *)lg)->level);
}

int hd_logger_enabled(const hd_logger *lg, hd_log_level level)
{
    return (unsigned)level <= HD_LOG_ERROR && (int)level >= (int)hd_logger_level(lg);
}

/* The next rules_gen (0 is the built-in logger's). */
static uint64_t next_rules_gen(void)
{
    static _Atomic uint64_t last = 0;
    return atomic_fetch_add(&last, 1) + 1;
}

int hd_logger_redact(hd_logger *lg, const char *name, hd_redact_mode mode)
{
    if (lg == NULL || lg->builtin || name == NULL || *name == '\0' ||
        (mode != HD_REDACT_SECRET && mode != HD_REDACT_EMAIL))
        return HD_EINVAL;
    for (size_t i = 0; i < lg->nrules; i++) {
        if (strcasecmp(lg->rules[i].name, name) == 0) {
            lg->rules[i].mode = mode;
            atomic_store(&lg->rules_gen, next_rules_gen());
            return HD_OK;
        }
    }
    if (lg->nrules == lg->cap) {
        size_t cap = lg->cap ? lg->cap * 2 : 8;
        struct redaction *r = realloc(lg->rules, cap * sizeof *r);
        if (r == NULL)
            return HD_ENOMEM;
        lg->rules = r;
        lg->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return HD_ENOMEM;
    /* Matching is case-insensitive; the rule is folded once here, the keys when matched. */
    for (char *c = copy; *c; c++)
        *c = lower_ascii(*c);
    lg->rules[lg->nrules++] = (struct redaction){copy, strlen(copy), mode};
    atomic_store(&lg->rules_gen, next_rules_gen());
    return HD_OK;
}

void hd_logger_clear_redactions(hd_logger *lg)
{
    if (lg == NULL || lg->builtin)
        return;
    for (size_t i = 0; i < lg->nrules; i++)
        free((char *)lg->rules[i].name);
    lg->nrules = 0;
    atomic_store(&lg->rules_gen, next_rules_gen());
}

hd_logger *hd_log_default(void)
{
    hd_logger *lg = atomic_load(&current_default);
    return lg ? lg : &builtin_logger;
}

void hd_log_set_default(hd_logger *lg)
{
    atomic_store(&current_default, lg);
}

/* ---- building a line --------------------------------------------------------------------- */

/* A JSON string for s (NULL -> null). JSON strings must be UTF-8 and jansson refuses
 * anything else; log values often come from outside (a header, a broker message), so
 * invalid bytes are replaced with '?' rather than losing the whole value. */
static json_t *text_value(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *v = json_string(s);
    if (v != NULL)
        return v;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (unsigned char *p = (unsigned char *)copy; *p;) {
        size_t n = hd_utf8_seq(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
    v = json_string(copy);
    free(copy);
    return v;
}

static int is_fixed_key(const char *key)
{
    for (const char *const *k = fixed_keys; *k; k++)
        if ((*k)[0] == key[0] && strcmp(*k, key) == 0)
            return 1;
    return 0;
}

/* Add a field to the line (value stolen). A field may not overwrite a fixed key, or a
 * caller's data could forge the level or the correlation id: it becomes "field_<key>". */
static void add_field(json_t *line, const char *key, json_t *value)
{
    if (!is_fixed_key(key)) {
        json_object_set_new(line, key, value);
        return;
    }
    char renamed[128];
    snprintf(renamed, sizeof renamed, "field_%s", key);
    json_object_set_new(line, renamed, value);
}

/* 1 when k[0, n) contains the rule's (lower-case) name, ignoring ASCII case: what
 * strncasecmp at each position did in the C locale, without a call per position. */
static int key_has_rule(const char *k, size_t n, const struct redaction *r)
{
    if (r->len > n)
        return 0;
    const char first = r->name[0];
    for (size_t at = 0; at + r->len <= n; at++) {
        if (lower_ascii(k[at]) != first)
            continue;
        size_t j = 1;
        while (j < r->len && lower_ascii(k[at + j]) == r->name[j])
            j++;
        if (j == r->len)
            return 1;
    }
    return 0;
}

/* 1 when every byte of the rule's name is among the bytes the key holds (held: a bit a
 * folded byte); a key without all of them cannot contain the name. */
static int may_hold(const uint32_t held[8], const struct redaction *r)
{
    for (size_t i = 0; i < r->len; i++) {
        unsigned char c = (unsigned char)r->name[i];
        if (!(held[c >> 5] & (1u << (c & 31))))
            return 0;
    }
    return 1;
}

/* The first rule whose name key[0, n) contains, or NULL. A rule with a letter the key lacks
 * is skipped without a scan: one pass over the key marks the (folded) bytes it holds. The
 * answer is the same as scanning every rule in order; a scan is left for one rule in a few
 * where there were thirteen (the access line's seven keys cost 6,000 instructions a
 * request: docs/modules/log.md). */
static const struct redaction *rule_scan(const hd_logger *lg, const char *key, size_t n)
{
    uint32_t held[8] = {0};
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)lower_ascii(key[i]);
        held[c >> 5] |= 1u << (c & 31);
    }
    for (size_t i = 0; i < lg->nrules; i++) {
        const struct redaction *r = &lg->rules[i];
        if (r->len > 0 && r->len <= n && may_hold(held, r) && key_has_rule(key, n, r))
            return r;
    }
    return NULL;
}

/* rule_scan's answers, remembered per thread. Every field of every line asks, and most
 * lines ask the same few keys (an access line's seven, each request): a key seen before
 * costs a hash and a compare instead of a scan of the rules (rule_scan: 465 instructions a
 * key, a memo hit about 100; callgrind, docs/bench.md, issue 14). A slot is keyed by the
 * logger, its rules_gen and the key's bytes (never the key's address: a caller's buffer is
 * reused for other keys), so a change of rules or a new logger at a freed one's address
 * finds nothing. Two ways a set, the newer first (direct-mapped, two of the access line's
 * keys took turns in one slot); keys longer than MEMO_KEY_MAX are scanned every time. As
 * before, a logger's rules are set before threads write through it: a change while a line
 * is being written is not synchronised (hd_logger_redact). */
#define MEMO_SETS    32
#define MEMO_KEY_MAX 32
static _Thread_local struct rule_memo {
    const hd_logger *lg;
    uint64_t gen;
    size_t len;
    long rule; /* index into lg->rules, or -1: no rule */
    char key[MEMO_KEY_MAX];
} memo[MEMO_SETS][2];

static const struct redaction *rule_for(const hd_logger *lg, const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t n = 0;
    while (key[n] != '\0' && n < MEMO_KEY_MAX)
        h = (h ^ (unsigned char)key[n++]) * 16777619u;
    if (key[n] != '\0')
        return rule_scan(lg, key, n + strlen(key + n));
    uint64_t gen = atomic_load_explicit(&lg->rules_gen, memory_order_relaxed);
    struct rule_memo *set = memo[h % MEMO_SETS];
    for (int way = 0; way < 2; way++) {
        const struct rule_memo *m = &set[way];
        if (m->lg == lg && m->gen == gen && m->len == n && memcmp(m->key, key, n) == 0)
            return m->rule < 0 ? NULL : &lg->rules[m->rule];
    }
    const struct redaction *r = rule_scan(lg, key, n);
    set[1] = set[0];
    struct rule_memo *m = &set[0];
    m->lg = lg;
    m->gen = gen;
    m->len = n;
    m->rule = r ? (long)(r - lg->rules) : -1;
    memcpy(m->key, key, n);
    return r;
}

/* "alice@example.com" -> "a***@example.com" (new: free()); NULL for anything that is not
 * an address (no '@', nothing before or after it; s NULL) or when memory runs out: the
 * caller writes "[REDACTED]" then. One rule for both kinds of line (masked_email, out_value). */
static char *masked_email_text(const char *s)
{
    const char *at = s ? strrchr(s, '@') : NULL;
    if (at == NULL || at == s || at[1] == '\0')
        return NULL;
    size_t first = hd_utf8_seq((const unsigned char *)s);
    if (first == 0)
        first = 1;
    size_t tail = strlen(at) + 1;
    char *buf = malloc(first + 3 + tail);
    if (buf != NULL) {
        memcpy(buf, s, first);
        memcpy(buf + first, "***", 3);
        memcpy(buf + first + 3, at, tail);
    }
    return buf;
}

/* masked_email_text of a JSON string, as a new JSON string. */
static json_t *masked_email(const json_t *v)
{
    char *masked = masked_email_text(json_string_value(v));
    json_t *out = masked ? json_string(masked) : NULL;
    free(masked);
    return out ? out : json_string(HD_LOG_REDACTED);
}

/* ---- secrets inside values ------------------------------------------------------------ */

/* Masking by key name misses a secret that travels inside a value: an error text quoting a
 * connection URL, a request target with "?token=...", a libpq "host=h password=p" string. So
 * every string value (and the message) is also scanned for three shapes:
 *   scheme://userinfo@host     the userinfo up to the LAST '@' of the URL: the password
 *                              becomes "***" ("amqp://guest:***@h/"), and a userinfo without
 *                              ':' (a bare token) becomes "***"
 *   name=value                 when name matches a SECRET rule ("token=", "reset_token=",
 *                              "password=", "dsn="...): the value becomes "[REDACTED]"
 *   "name": "value"            the same inside JSON text quoted in a value
 * Every rewrite is idempotent, so a value redacted once (by hd_amqp_url_redact, say) comes
 * through unchanged. Known limits: a secret with no recognisable marker (a bare password in
 * prose) cannot be found; put it in a field with a telling name, or better, nowhere. */

/* Characters that end a URL or a value in prose. */
static int ends_value(char ch)
{
    return ch == '\0' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '"' ||
           ch == '\'' || ch == '<' || ch == '>' || ch == '`';
}

static int is_key_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* 1 when the key [k, k + n) contains the name of a SECRET rule (case-insensitive). */
static int secret_key(const hd_logger *lg, const char *k, size_t n)
{
    for (size_t i = 0; i < lg->nrules; i++)
        if (lg->rules[i].mode == HD_REDACT_SECRET && key_has_rule(k, n, &lg->rules[i]))
            return 1;
    return 0;
}

/* A growing output string; on allocation failure `failed` is set and appends stop. */
typedef struct scrub_buf {
    char *p;
    size_t len, cap;
    int failed;
} scrub_buf;

static void put(scrub_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#define PUTS(b, lit) put(b, lit, sizeof lit - 1)

/* s with the secrets inside it masked: a new string (free()), or NULL when nothing had to
 * change (the common case costs one scan and no allocation) or memory ran out — then the
 * value is replaced whole by the caller, never written as is. *oom tells which. */
static char *scrub_text(const hd_logger *lg, const char *s, int *oom)
{
    scrub_buf b = {0};
    int changed = 0;
    size_t done = 0; /* s[0, done) is in b already */
    *oom = 0;
    for (size_t i = 0; s[i] != '\0';) {
        /* scheme://userinfo@ */
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            size_t auth = i + 3, end = auth, at = 0, has_at = 0;
            while (!ends_value(s[end])) {
                if (s[end] == '@')
                    at = end, has_at = 1;
                end++;
            }
            if (has_at && at > auth) {
                const char *colon = memchr(s + auth, ':', at - auth);
                size_t keep = colon ? (size_t)(colon - s) + 1 : auth; /* through the ':' */
                if (at - keep != 3 || strncmp(s + keep, "***", 3) != 0) {
                    put(&b, s + done, keep - done);
                    PUTS(&b, "***");
                    done = at;
                    changed = 1;
                }
            }
            /* Go on inside the URL: its query may hold "token=..." too. */
            i = has_at ? at + 1 : auth;
            continue;
        }
        /* name=value and "name": "value", name starting at a word boundary */
        if (is_key_char(s[i]) && (i == 0 || !is_key_char(s[i - 1]))) {
            size_t k = i;
            while (is_key_char(s[k]))
                k++;
            size_t v = k;
            int quoted = 0;
            if (s[v] == '=') {
                v++;
            } else if (s[v] == '"' && i > 0 && s[i - 1] == '"') {
                size_t q = v + 1;
                while (s[q] == ' ')
                    q++;
                if (s[q] == ':') {
                    q++;
                    while (s[q] == ' ')
                        q++;
                    if (s[q] == '"')
                        v = q + 1, quoted = 1;
                }
            }
            if (v > k && secret_key(lg, s + i, k - i)) {
                size_t e = v;
                if (quoted) {
                    while (s[e] != '\0' && s[e] != '"')
                        e += s[e] == '\\' && s[e + 1] != '\0' ? 2 : 1;
                } else {
                    while (!ends_value(s[e]) && s[e] != '&' && s[e] != ';' && s[e] != ',' &&
                           s[e] != '#' && s[e] != ')')
                        e++;
                }
                size_t rn = sizeof HD_LOG_REDACTED - 1;
                if (e > v && (e - v != rn || strncmp(s + v, HD_LOG_REDACTED, rn) != 0)) {
                    put(&b, s + done, v - done);
                    PUTS(&b, HD_LOG_REDACTED);
                    done = e;
                    changed = 1;
                }
                i = e;
                continue;
            }
            i = k;
            continue;
        }
        i++;
    }
    if (!changed)
        return NULL;
    put(&b, s + done, strlen(s + done));
    if (b.failed) {
        free(b.p);
        *oom = 1;
        return NULL;
    }
    return b.p;
}

/* v (a string) scrubbed; NULL when it needs no change. */
static json_t *scrubbed_value(const hd_logger *lg, const json_t *v)
{
    int oom;
    char *clean = scrub_text(lg, json_string_value(v), &oom);
    if (clean == NULL)
        return oom ? json_string(HD_LOG_REDACTED) : NULL;
    json_t *out = json_string(clean);
    free(clean);
    return out ? out : json_string(HD_LOG_REDACTED);
}

/* What a member key: v becomes in a line: a new value to put in its place (an e-mail masked,
 * a secret redacted, a string with a secret inside scrubbed), or NULL to keep it as it is (a
 * null under a rule says "absent"; a value with nothing to hide; an object or an array is then
 * the caller's to walk). The one rule for hd_log_json's fields and hd_log_fields' values. */
static json_t *member_clean(const hd_logger *lg, const char *key, const json_t *v)
{
    const struct redaction *r = rule_for(lg, key);
    if (r == NULL)
        return json_is_string(v) ? scrubbed_value(lg, v) : NULL;
    if (json_is_null(v))
        return NULL;
    return r->mode == HD_REDACT_EMAIL ? masked_email(v) : json_string(HD_LOG_REDACTED);
}

/* Mask, in place, every member of v (an object or array, at any depth) whose name matches a
 * redaction rule. A matching member is masked whole, even when it is an object: a field
 * called "secrets" hides everything under it. */
static void redact(const hd_logger *lg, json_t *v)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            json_t *clean = json_is_string(item) ? scrubbed_value(lg, item) : NULL;
            if (clean != NULL)
                json_array_set_new(v, i, clean);
            else
                redact(lg, item);
        }
        return;
    }
    if (!json_is_object(v))
        return;
    const char *key;
    json_t *member;
    json_object_foreach(v, key, member)
    {
        json_t *clean = member_clean(lg, key, member);
        if (clean != NULL) /* replacing the value of an existing key does not disturb the walk */
            json_object_set_new(v, key, clean);
        else
            redact(lg, member);
    }
}

/* buf[0, n) to fd, all of it (a signal or a full disk may cut a write short). */
static void write_all(int fd, const char *buf, size_t n)
{
    struct iovec iov = {.iov_base = (char *)buf, .iov_len = n};
    hd_log_write_all(fd, &iov, 1);
}

/* A whole line to the stream's descriptor, in one write(2) when it can be.
 *
 * Why not fwrite + fflush under a mutex (what streams without a descriptor still get):
 * the mutex was held across the write system call, and with a thread per HTTP connection
 * every access line queued on it: a futex wait and a wake a request on a busy server
 * (docs/modules/log.md). A line of at most PIPE_BUF bytes needs no lock of ours: the
 * kernel writes it whole, never mixed with another (a pipe guarantees it up to PIPE_BUF,
 * a regular file, a terminal and a socket of Linux for any size of one write), and the
 * read side of the rwlock, which many threads hold at once without a system call, only
 * keeps such lines out of a longer one's way. A longer line (rare: most are a few hundred
 * bytes) takes the write side, because a pipe may split it around other writers.
 *
 * Durability is the same as before: every line is in the kernel before hd_log returns,
 * so a crash of the process afterwards loses no line (no buffer of ours to lose); the
 * access line of a request still costs one write(2), as it did. Known limit: bytes that
 * something else left in the FILE's own buffer are not flushed first (stderr, what the
 * services log to, has none); log through the logger, or flush, when sharing a stream. */
static void write_fd(hd_logger *lg, int fd, const char *buf, size_t n)
{
    if (n > PIPE_BUF) {
        /* POSIX lets an rwlock prefer readers (glibc's default does): with short lines
         * always in flight the write side could wait for ever. The long line holds the
         * mutex and raises long_waiting while it waits; short lines that see the flag queue
         * on the mutex behind it instead of taking the read side again. */
        pthread_mutex_lock(&lg->lock);
        atomic_store(&lg->long_waiting, 1);
        pthread_rwlock_wrlock(&lg->fd_lock);
        write_all(fd, buf, n);
        pthread_rwlock_unlock(&lg->fd_lock);
        atomic_store(&lg->long_waiting, 0);
        pthread_mutex_unlock(&lg->lock);
        return;
    }
    if (atomic_load_explicit(&lg->long_waiting, memory_order_relaxed)) {
        pthread_mutex_lock(&lg->lock);
        pthread_mutex_unlock(&lg->lock);
    }
    pthread_rwlock_rdlock(&lg->fd_lock);
    write_all(fd, buf, n);
    pthread_rwlock_unlock(&lg->fd_lock);
}

/* buf[0, n), a whole line with its '\n', to the logger's stream. */
static void write_text(hd_logger *lg, const char *buf, size_t n)
{
    if (lg->behind != NULL) {
        hd_log_behind_now(lg->behind, buf, n); /* after the lines that wait: in order */
        return;
    }
    FILE *out = lg->out ? lg->out : stderr;
    int fd = fileno(out);
    if (fd >= 0) {
        write_fd(lg, fd, buf, n);
    } else {
        /* A stream in memory (open_memstream, fmemopen): POSIX already locks the FILE for
         * each call; the mutex also keeps the flush with its line. */
        pthread_mutex_lock(&lg->lock);
        fwrite(buf, 1, n, out);
        fflush(out);
        pthread_mutex_unlock(&lg->lock);
    }
}

/* Serialise line and write it. Most lines fit the stack buffer; longer ones take one
 * allocation. */
static void write_line(hd_logger *lg, const json_t *line)
{
    char stack[2048];
    char *buf = stack;
    size_t n = json_dumpb(line, stack, sizeof stack - 1, JSON_COMPACT);
    if (n == 0)
        return;
    if (n > sizeof stack - 1) {
        if ((buf = malloc(n + 1)) == NULL)
            return;
        if (json_dumpb(line, buf, n, JSON_COMPACT) != n) {
            free(buf);
            return;
        }
    }
    buf[n++] = '\n';
    write_text(lg, buf, n);
    if (buf != stack)
        free(buf);
}

/* The fixed part of a line; NULL when memory runs out. */
static json_t *new_line(const hd_logger *lg, hd_log_level level, const char *correlation_id,
                        const char *message)
{
    char now[HD_TIME_LEN + 1];
    hd_time_format(hd_time_now_ms(), now);
    json_t *line = json_object();
    if (line == NULL)
        return NULL;
    json_object_set_new(line, "time", json_string(now));
    json_object_set_new(line, "level", json_string(hd_log_level_name(level)));
    json_object_set_new(line, "service", text_value(lg->service));
    json_t *msg = text_value(message ? message : "");
    json_t *clean = msg ? scrubbed_value(lg, msg) : NULL;
    json_object_set_new(line, "message", clean ? clean : msg);
    if (clean != NULL)
        json_decref(msg);
    if (correlation_id != NULL)
        json_object_set_new(line, "correlation_id", text_value(correlation_id));
    return line;
}

/* Redact the extra fields (members of line after the fixed keys) and write the line. The
 * fixed keys are never redacted: they are ours, not the caller's data. */
static void finish(hd_logger *lg, json_t *line, json_t *fields)
{
    if (fields != NULL) {
        redact(lg, fields);
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value)
        {
            add_field(line, key, json_incref(value));
        }
        json_decref(fields);
    }
    write_line(lg, line);
    json_decref(line);
}

/* ---- a line of typed fields, encoded directly ------------------------------------------- */

/* hd_logv and hd_log_fields write a flat line: strings, integers and reals under known keys.
 * They encode it straight into a buffer instead of building a jansson object and dumping it:
 * through jansson the access line of a request cost about 50,000 instructions (json_dumpb
 * alone 29,000: a callback per token, a UTF-8 decode per character), a quarter of the CPU of
 * a GET /users/{id} (docs/modules/log.md). The writer is jsonw.h's: the bytes jansson's
 * compact encoder writes for the same object, which hd_log_json still uses for nested
 * values, but for reals (hd_jsonw_real); unit.log compares the two byte for byte
 * (typed_fields_*). */

/* s scrubbed of the secrets inside it (scrub_text), as a JSON string. */
static void out_scrubbed(hd_jsonw *o, const hd_logger *lg, const char *s)
{
    int oom;
    char *clean = scrub_text(lg, s, &oom);
    hd_jsonw_string(o, clean ? clean : oom ? HD_LOG_REDACTED : s);
    free(clean);
}

/* One field's value, cleaned as member_clean cleans a member: a key that matches a rule
 * masks the value (null stays null), any other string is scrubbed for secrets inside it. */
static void out_value(hd_jsonw *o, const hd_logger *lg, const hd_log_field *f)
{
    const struct redaction *r = rule_for(lg, f->key);
    if (f->kind != HD_LOG_INT && f->kind != HD_LOG_REAL && f->s == NULL) {
        HD_JSONW_LIT(o, "null");
    } else if (r != NULL) {
        const char *s = f->kind == HD_LOG_INT || f->kind == HD_LOG_REAL ? NULL : f->s;
        char *masked = r->mode == HD_REDACT_EMAIL ? masked_email_text(s) : NULL;
        hd_jsonw_string(o, masked ? masked : HD_LOG_REDACTED);
        free(masked);
    } else if (f->kind == HD_LOG_INT) {
        hd_jsonw_int(o, f->i);
    } else if (f->kind == HD_LOG_REAL) {
        hd_jsonw_real(o, f->r);
    } else {
        out_scrubbed(o, lg, f->s);
    }
}

/* 1 when keys a and b land on the same member: equal, or one a fixed key that add_field
 * renames to the other ("level" -> "field_level"). */
static int same_member(const char *a, const char *b)
{
    if (a[0] == b[0] && strcmp(a, b) == 0)
        return 1;
    if (a[0] == 'f' && strncmp(a, "field_", 6) == 0 && strcmp(a + 6, b) == 0)
        return is_fixed_key(b);
    if (b[0] == 'f' && strncmp(b, "field_", 6) == 0 && strcmp(b + 6, a) == 0)
        return is_fixed_key(a);
    return 0;
}

/* The line hd_log_json writes for an object of fields[0, n): the fixed keys, then each
 * member once, at the place of its first field and with its last field's value (as an
 * object keeps them), fixed keys renamed as add_field renames them. */
static void write_fields(hd_logger *lg, hd_log_level level, const char *correlation_id,
                         const char *message, const hd_log_field *fields, size_t n, int may_wait)
{
    char now[HD_TIME_LEN + 1];
    hd_time_format(hd_time_now_ms(), now);
    hd_jsonw o;
    hd_jsonw_init(&o);
    HD_JSONW_LIT(&o, "{\"time\":");
    hd_jsonw_string(&o, now);
    HD_JSONW_LIT(&o, ",\"level\":");
    hd_jsonw_string(&o, hd_log_level_name(level));
    HD_JSONW_LIT(&o, ",\"service\":");
    hd_jsonw_string(&o, lg->service);
    HD_JSONW_LIT(&o, ",\"message\":");
    out_scrubbed(&o, lg, message ? message : "");
    if (correlation_id != NULL) {
        HD_JSONW_LIT(&o, ",\"correlation_id\":");
        hd_jsonw_string(&o, correlation_id);
    }
    for (size_t i = 0; i < n; i++) {
        if (fields[i].key == NULL)
            continue;
        size_t last = i, j;
        for (j = 0; j < n; j++) {
            if (j == i || fields[j].key == NULL || !same_member(fields[i].key, fields[j].key))
                continue;
            if (j < i)
                break; /* written at its first place already */
            last = j;
        }
        if (j < n)
            continue;
        HD_JSONW_LIT(&o, ",");
        if (is_fixed_key(fields[i].key)) {
            char renamed[128];
            snprintf(renamed, sizeof renamed, "field_%s", fields[i].key);
            hd_jsonw_string(&o, renamed);
        } else {
            hd_jsonw_string(&o, fields[i].key);
        }
        HD_JSONW_LIT(&o, ":");
        out_value(&o, lg, &fields[last]);
    }
    HD_JSONW_LIT(&o, "}\n");
    if (!o.failed) {
        if (may_wait && lg->behind != NULL)
            hd_log_behind_put(lg->behind, o.p, o.len);
        else
            write_text(lg, o.p, o.len);
    }
    hd_jsonw_free(&o);
}

void hd_logv(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message,
             va_list ap)
{
    if (lg == NULL)
        lg = hd_log_default();
    if (!hd_logger_enabled(lg, level))
        return; /* before any allocation: disabled debug lines must cost nothing */
    va_list count;
    va_copy(count, ap);
    size_t n = 0;
    while (va_arg(count, const char *) != NULL) {
        (void)va_arg(count, const char *);
        n++;
    }
    va_end(count);
    hd_log_field stack[16] = {{0}}; /* zeroed: gcc -O2 cannot see that only [0, n) is read */
    hd_log_field *f = n <= sizeof stack / sizeof stack[0] ? stack : calloc(n, sizeof *f);
    if (f == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        f[i] = (hd_log_field){.key = va_arg(ap, const char *)};
        f[i].s = va_arg(ap, const char *);
    }
    write_fields(lg, level, correlation_id, message, f, n, 0);
    if (f != stack)
        free(f);
}

/* 1 when v's containers, at every depth, are referenced from this tree only (refcount 1,
 * read from jansson's public json_t; json_incref reads it the same way), so that nobody
 * else can see redact() replace their members. redact() replaces members and never changes
 * a string or a number in place, so shared scalars (json_true, an interned value) do not
 * matter. The caller's reference to v was stolen: no one else holds it when it reads 1. */
static int owned_alone(const json_t *v)
{
    if (json_is_object(v)) {
        if (v->refcount != 1)
            return 0;
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member)
        {
            if (!owned_alone(member))
                return 0;
        }
        return 1;
    }
    if (json_is_array(v)) {
        if (v->refcount != 1)
            return 0;
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (!owned_alone(item))
                return 0;
        }
    }
    return 1;
}

void hd_log_json(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message,
                 json_t *fields)
{
    if (lg == NULL)
        lg = hd_log_default();
    if (!hd_logger_enabled(lg, level) || (fields != NULL && !json_is_object(fields))) {
        json_decref(fields);
        return;
    }
    /* Redaction rewrites values in place, and the members of fields may be shared with the
     * caller's own data (json_pack "O", json_incref): redact a private copy, never them.
     * A tree that is ours alone (a fresh json_pack, as the access log's) is redacted as is:
     * the copy was a tenth of the access log line's cost. */
    json_t *copy = fields == NULL || owned_alone(fields) ? fields : json_deep_copy(fields);
    if (copy != fields)
        json_decref(fields);
    json_t *line = new_line(lg, level, correlation_id, message);
    if (line == NULL || (fields != NULL && copy == NULL)) {
        json_decref(line);
        json_decref(copy);
        return;
    }
    finish(lg, line, copy);
}

/* hd_log_fields and hd_log_fields_behind: may_wait says which. */
static void log_fields(hd_logger *lg, hd_log_level level, const char *correlation_id,
                       const char *message, const hd_log_field *fields, size_t n, int may_wait)
{
    if (lg == NULL)
        lg = hd_log_default();
    if (!hd_logger_enabled(lg, level) || (fields == NULL && n > 0))
        return;
    /* A warning or an error never waits: it may be the last line before a crash. */
    write_fields(lg, level, correlation_id, message, fields, n, may_wait && level <= HD_LOG_INFO);
}

void hd_log_fields(hd_logger *lg, hd_log_level level, const char *correlation_id,
                   const char *message, const hd_log_field *fields, size_t n)
{
    log_fields(lg, level, correlation_id, message, fields, n, 0);
}

void hd_log_fields_behind(hd_logger *lg, hd_log_level level, const char *correlation_id,
                          const char *message, const hd_log_field *fields, size_t n)
{
    log_fields(lg, level, correlation_id, message, fields, n, 1);
}

void hd_log(hd_logger *lg, hd_log_level level, const char *correlation_id, const char *message, ...)
{
    va_list ap;
    va_start(ap, message);
    hd_logv(lg, level, correlation_id, message, ap);
    va_end(ap);
}

/* One function a level, rather than macros, so that each is a real symbol (breakpoints,
 * other languages' bindings) and the compiler can check its NULL sentinel. */
#define HD_LOG_AT(fn, lvl)                                                                         \
    void fn(hd_logger *lg, const char *correlation_id, const char *message, ...)                   \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, message);                                                                     \
        hd_logv(lg, lvl, correlation_id, message, ap);                                             \
        va_end(ap);                                                                                \
    }
HD_LOG_AT(hd_log_debug, HD_LOG_DEBUG)
HD_LOG_AT(hd_log_info, HD_LOG_INFO)
HD_LOG_AT(hd_log_warn, HD_LOG_WARN)
HD_LOG_AT(hd_log_error, HD_LOG_ERROR)
#undef HD_LOG_AT
