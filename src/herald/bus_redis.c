/* bus_redis.c — the integration event bus on Redis pub/sub (hiredis 0.14); see bus_redis.h. */
#include "herald/bus_redis.h"
#include "herald/bus_internal.h"

#include "herald/backoff.h"
#include "herald/clock.h"

#include <errno.h>
#include <stdatomic.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* ---- the URL ---------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode [s, s+n) into out (cap bytes). The error names the part, never its text. */
static int decode_part(const char *s, size_t n, char *out, size_t cap, const char *what,
                       hd_error *err)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return hd_error_set(err, HD_EURL, "Redis URL: bad percent escape in the %s", what);
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return hd_error_set(err, HD_EURL, "Redis URL: %%00 in the %s", what);
            i += 2;
        }
        if (o + 1 >= cap)
            return hd_error_set(err, HD_EURL, "Redis URL: the %s is longer than %zu bytes", what,
                                cap - 1);
        out[o++] = c;
    }
    out[o] = '\0';
    return HD_OK;
}

static int parse_number(const char *s, size_t n, int min, int max, int *out)
{
    if (n == 0 || n > 6)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int url_parse(const char *url, hd_bus_redis_url *out, hd_error *err)
{
    static const char scheme[] = "redis://";
    if (url == NULL)
        return hd_error_set(err, HD_EURL, "Redis URL is missing (NULL)");
    if (strncmp(url, "rediss://", 9) == 0)
        return hd_error_set(err, HD_EURL,
                            "Redis URL: rediss:// (TLS) is not supported: hiredis 0.14 has no TLS");
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return hd_error_set(err, HD_EURL,
                            "Redis URL: expected redis://[[user]:password@]host"
                            "[:port][/db]");
    const char *auth = url + sizeof scheme - 1;
    /* The authority ends at the path; a password with a raw '/' must be written %2F. */
    const char *end = auth + strcspn(auth, "/?#");
    if (*end == '?' || *end == '#')
        return hd_error_set(err, HD_EURL, "Redis URL: a query or fragment is not supported");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    const char *host = auth;
    int rc;
    if (at != NULL) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        const char *user_end = colon ? colon : at;
        if ((rc = decode_part(auth, (size_t)(user_end - auth), out->user, sizeof out->user, "user",
                              err)) < 0)
            return rc;
        if (colon != NULL && (rc = decode_part(colon + 1, (size_t)(at - colon - 1), out->password,
                                               sizeof out->password, "password", err)) < 0)
            return rc;
        if (out->user[0] != '\0' && out->password[0] == '\0')
            return hd_error_set(err, HD_EURL, "Redis URL: a user without a password");
        host = at + 1;
    }
    const char *host_end;
    const char *port_at = NULL;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL)
            return hd_error_set(err, HD_EURL, "Redis URL: unclosed '[' in the host");
        if ((size_t)(close - host - 1) >= sizeof out->host)
            return hd_error_set(err, HD_EURL, "Redis URL: host too long");
        memcpy(out->host, host + 1, (size_t)(close - host - 1));
        out->host[close - host - 1] = '\0';
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return hd_error_set(err, HD_EURL, "Redis URL: junk after the ']' of the host");
        if (host_end < end)
            port_at = host_end + 1;
    } else {
        host_end = memchr(host, ':', (size_t)(end - host));
        if (host_end == NULL)
            host_end = end;
        else
            port_at = host_end + 1;
        if ((size_t)(host_end - host) >= sizeof out->host)
            return hd_error_set(err, HD_EURL, "Redis URL: host too long");
        memcpy(out->host, host, (size_t)(host_end - host));
        out->host[host_end - host] = '\0';
    }
    if (out->host[0] == '\0')
        return hd_error_set(err, HD_EURL, "Redis URL: empty host");
    for (const char *h = out->host; *h; h++)
        if ((unsigned char)*h <= ' ' || *h == 0x7f || strchr("@[]%\\", *h) != NULL)
            return hd_error_set(err, HD_EURL, "Redis URL: bad character in the host");
    out->port = 6379;
    if (port_at != NULL && parse_number(port_at, (size_t)(end - port_at), 1, 65535, &out->port) < 0)
        return hd_error_set(err, HD_EURL, "Redis URL: the port is not a number in 1..65535");
    if (*end == '/' && end[1] != '\0' &&
        parse_number(end + 1, strlen(end + 1), 0, 65535, &out->db) < 0)
        return hd_error_set(err, HD_EURL, "Redis URL: the path must be a database number");
    return HD_OK;
}

int hd_bus_redis_url_parse(const char *url, hd_bus_redis_url *out, hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EURL, "Redis URL: nowhere to parse into");
    memset(out, 0, sizeof *out);
    int rc = url_parse(url, out, err);
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

void hd_bus_redis_url_redact(const char *url, char *out, size_t cap)
{
    if (out == NULL || cap == 0)
        return;
    const char *auth = url ? strstr(url, "://") : NULL;
    if (auth == NULL) {
        snprintf(out, cap, "%s", "(not a URL)");
        return;
    }
    auth += 3;
    const char *end = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL) {
        /* No password in the authority. A '@' past it (in a password with a raw '/' that
         * should have been %2F) could still mean one: show nothing of the userinfo then. */
        if (strchr(end, '@') != NULL)
            snprintf(out, cap, "%.*s***", (int)(auth - url), url);
        else
            snprintf(out, cap, "%s", url);
        return;
    }
    snprintf(out, cap, "%.*s***%s", (int)(colon + 1 - url), url,
             strchr(end, '@') != NULL ? "@***" : at);
}

/* ---- names and matching ------------------------------------------------------------------ */

int hd_bus_redis_channel(const char *topic, const char *type, char *out, size_t cap)
{
    if (topic == NULL || type == NULL || *topic == '\0' || *type == '\0' || out == NULL)
        return HD_EINVAL;
    int n = snprintf(out, cap, "%s:%s", topic, type);
    if (n < 0 || (size_t)n >= cap)
        return HD_ETOOBIG;
    return n;
}

#define MAX_WORDS 64

typedef struct word {
    const char *p;
    size_t n;
} word;

/* Split s at '.' into w (at most MAX_WORDS); "" is no word at all. -1 when too many. */
static int split_words(const char *s, word *w)
{
    int n = 0;
    if (*s == '\0')
        return 0;
    for (;;) {
        if (n == MAX_WORDS)
            return -1;
        size_t len = strcspn(s, ".");
        w[n++] = (word){s, len};
        if (s[len] == '\0')
            return n;
        s += len + 1;
    }
}

static int is_word(word w, const char *lit)
{
    return w.n == strlen(lit) && memcmp(w.p, lit, w.n) == 0;
}

/* The RabbitMQ topic exchange's rule. Recursive, exponential only in the number of '#'
 * of a pattern, which is the application's own (one or two). */
static int words_match(const word *p, int np, const word *k, int nk)
{
    if (np == 0)
        return nk == 0;
    if (is_word(p[0], "#")) {
        for (int i = 0; i <= nk; i++)
            if (words_match(p + 1, np - 1, k + i, nk - i))
                return 1;
        return 0;
    }
    if (nk == 0)
        return 0;
    if (!is_word(p[0], "*") && !(p[0].n == k[0].n && memcmp(p[0].p, k[0].p, k[0].n) == 0))
        return 0;
    return words_match(p + 1, np - 1, k + 1, nk - 1);
}

int hd_bus_redis_type_matches(const char *pattern, const char *type)
{
    if (pattern == NULL || type == NULL)
        return 0;
    word p[MAX_WORDS], k[MAX_WORDS];
    int np = split_words(pattern, p), nk = split_words(type, k);
    if (np < 0 || nk < 0)
        return 0;
    return words_match(p, np, k, nk);
}

/* A registered type with a wildcard word: subscribed by pattern. */
static int is_wildcard(const char *type)
{
    word w[MAX_WORDS];
    int n = split_words(type, w);
    for (int i = 0; i < n; i++)
        if (is_word(w[i], "*") || is_word(w[i], "#"))
            return 1;
    return 0;
}

/* ---- the frame ---------------------------------------------------------------------------- */

static int value_ok(const char *v)
{
    return v == NULL || (strlen(v) < HD_BUS_REDIS_FRAME_VALUE_MAX && strpbrk(v, "\r\n") == NULL);
}

int hd_bus_redis_frame_encode(const hd_bus_message *msg, char **out, size_t *out_len, hd_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (msg == NULL || (msg->body == NULL && msg->len > 0))
        return hd_error_set(err, HD_EINVAL, "redis frame: no message");
    const char *names[3] = {"id", "correlation-id", "content-type"};
    const char *values[3] = {msg->message_id, msg->correlation_id, msg->content_type};
    size_t head = sizeof HD_BUS_REDIS_FRAME_MAGIC - 1 + 1;
    for (int i = 0; i < 3; i++) {
        if (!value_ok(values[i]))
            return hd_error_set(err, HD_EINVAL,
                                "redis frame: the %s is longer than %d bytes or holds CR/LF",
                                names[i], HD_BUS_REDIS_FRAME_VALUE_MAX - 1);
        if (values[i] != NULL && values[i][0] != '\0')
            head += strlen(names[i]) + 2 + strlen(values[i]) + 1;
    }
    char *f = malloc(head + msg->len + 1);
    if (f == NULL)
        return hd_error_set(err, HD_ENOMEM, "redis frame");
    size_t o = 0;
    memcpy(f, HD_BUS_REDIS_FRAME_MAGIC, sizeof HD_BUS_REDIS_FRAME_MAGIC - 1);
    o += sizeof HD_BUS_REDIS_FRAME_MAGIC - 1;
    for (int i = 0; i < 3; i++)
        if (values[i] != NULL && values[i][0] != '\0')
            o += (size_t)sprintf(f + o, "%s: %s\n", names[i], values[i]);
    f[o++] = '\n';
    if (msg->len > 0)
        memcpy(f + o, msg->body, msg->len);
    o += msg->len;
    f[o] = '\0';
    *out = f;
    *out_len = o;
    return HD_OK;
}

static int frame_decode(const char *d, size_t len, hd_bus_redis_frame *out, hd_error *err)
{
    size_t magic = sizeof HD_BUS_REDIS_FRAME_MAGIC - 1;
    if (len < magic || memcmp(d, HD_BUS_REDIS_FRAME_MAGIC, magic) != 0) {
        out->body = d; /* a foreign publisher's message: all body */
        out->len = len;
        return HD_OK;
    }
    size_t pos = magic;
    size_t limit = len < HD_BUS_REDIS_FRAME_HEAD_MAX ? len : HD_BUS_REDIS_FRAME_HEAD_MAX;
    for (;;) {
        const char *line = d + pos;
        const char *nl = pos < limit ? memchr(line, '\n', limit - pos) : NULL;
        if (nl == NULL)
            return hd_error_set(err, HD_EPROTO,
                                "redis frame: no end of the headers within %d bytes",
                                HD_BUS_REDIS_FRAME_HEAD_MAX);
        size_t n = (size_t)(nl - line);
        pos += n + 1;
        if (n == 0)
            break; /* the blank line: the body follows */
        const char *sep = NULL;
        for (size_t i = 0; i + 1 < n; i++)
            if (line[i] == ':' && line[i + 1] == ' ') {
                sep = line + i;
                break;
            }
        if (sep == NULL)
            return hd_error_set(err, HD_EPROTO, "redis frame: a header line without ': '");
        size_t nlen = (size_t)(sep - line);
        const char *v = sep + 2;
        size_t vlen = n - nlen - 2;
        if (vlen == 0 || vlen >= HD_BUS_REDIS_FRAME_VALUE_MAX || memchr(v, '\0', vlen) ||
            memchr(v, '\r', vlen))
            return hd_error_set(err, HD_EPROTO,
                                "redis frame: a header value empty, longer than %d bytes or "
                                "holding CR/NUL",
                                HD_BUS_REDIS_FRAME_VALUE_MAX - 1);
        char *dst = NULL;
        if (nlen == 2 && memcmp(line, "id", 2) == 0)
            dst = out->message_id;
        else if (nlen == 14 && memcmp(line, "correlation-id", 14) == 0)
            dst = out->correlation_id;
        else if (nlen == 12 && memcmp(line, "content-type", 12) == 0)
            dst = out->content_type;
        if (dst == NULL)
            continue; /* a header of a later version: ignored */
        if (dst[0] != '\0')
            return hd_error_set(err, HD_EPROTO, "redis frame: header '%.*s' twice", (int)nlen,
                                line);
        memcpy(dst, v, vlen);
        dst[vlen] = '\0';
    }
    out->body = d + pos;
    out->len = len - pos;
    return HD_OK;
}

int hd_bus_redis_frame_decode(const void *data, size_t len, hd_bus_redis_frame *out, hd_error *err)
{
    if (out == NULL || (data == NULL && len > 0))
        return hd_error_set(err, HD_EINVAL, "redis frame: nothing to decode");
    memset(out, 0, sizeof *out);
    int rc = frame_decode(data ? data : "", len, out, err);
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

/* ---- the bus -------------------------------------------------------------------------------- */

typedef struct redis_reg {
    hd_bus_reg base; /* first: the owned copy of the registration (bus_internal.h) */
    int wildcard;    /* some type has a wildcard: the topic's pattern is subscribed */
} redis_reg;

/* The counts, atomic: send may run on one thread while poll runs on another (bus_redis.h,
 * "Threads"), and hd_bus_redis_get_counts may be called from a third (a metrics endpoint). */
typedef struct redis_counts {
    atomic_uint_fast64_t sent, sent_unheard, received, delivered, handled, failed, undecodable,
        resubscribed;
} redis_counts;

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

typedef struct redis_bus {
    hd_bus base; /* first: an hd_bus * is a redis_bus * */
    hd_bus_redis_url url;
    hd_bus_redis_options opts;
    redis_reg *regs;
    size_t n_regs;
    redisContext *pub; /* PUBLISH */
    redisContext *sub; /* the subscriptions */
    /* Messages that arrived while startup waited for its subscriptions to be confirmed:
     * handled by the first poll (handlers run in poll, never in startup). */
    redisReply **early;
    size_t n_early;
    redis_counts counts;
} redis_bus;

static const hd_bus_methods redis_methods;

static redis_bus *as_redis(const hd_bus *bus)
{
    return (bus != NULL && bus->methods == &redis_methods) ? (redis_bus *)bus : NULL;
}

static struct timeval tv_ms(int ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* Connect and AUTH. The error shows host and port, never the password. */
static int connect_one(redis_bus *b, redisContext **out, hd_error *err)
{
    *out = NULL;
    redisContext *c = redisConnectWithTimeout(b->url.host, b->url.port, tv_ms(b->opts.timeout_ms));
    if (c == NULL)
        return hd_error_set(err, HD_ENOMEM, "redis bus: connect");
    if (c->err) {
        int rc = hd_error_set(err, HD_ECONNECT, "redis bus: connect to %s:%d: %s", b->url.host,
                              b->url.port, c->errstr);
        redisFree(c);
        return rc;
    }
    if (redisSetTimeout(c, tv_ms(b->opts.timeout_ms)) != REDIS_OK) {
        redisFree(c);
        return hd_error_set(err, HD_ECONNECT, "redis bus: cannot set the socket timeout");
    }
    (void)redisEnableKeepAlive(c);
    if (b->url.password[0] != '\0') {
        const char *argv[3] = {"AUTH", b->url.user, b->url.password};
        size_t lens[3] = {4, strlen(b->url.user), strlen(b->url.password)};
        int argc = 3;
        if (b->url.user[0] == '\0') { /* requirepass: AUTH <password> */
            argv[1] = b->url.password;
            lens[1] = lens[2];
            argc = 2;
        }
        redisReply *r = redisCommandArgv(c, argc, argv, lens);
        int rc = HD_OK;
        if (r == NULL)
            rc = hd_error_set(err, HD_ECONNECT, "redis bus: AUTH at %s:%d: %s", b->url.host,
                              b->url.port, c->errstr);
        else if (r->type == REDIS_REPLY_ERROR)
            /* Redis' text (WRONGPASS..., ERR AUTH <password> called without...) does not echo
             * the password. */
            rc = hd_error_set(err, HD_EAUTH, "redis bus: AUTH refused by %s:%d: %.200s",
                              b->url.host, b->url.port, r->str);
        freeReplyObject(r);
        if (rc < 0) {
            redisFree(c);
            return rc;
        }
    }
    *out = c;
    return HD_OK;
}

static void free_early(redis_bus *b)
{
    for (size_t i = 0; i < b->n_early; i++)
        freeReplyObject(b->early[i]);
    free(b->early);
    b->early = NULL;
    b->n_early = 0;
}

/* The subscription connection: SUBSCRIBE every exact type's channel, PSUBSCRIBE the pattern
 * of every topic with a wildcard registration, and wait until Redis confirmed them all. */
static int subscribe_all(redis_bus *b, hd_error *err)
{
    size_t n_chan = 0, n_pat = 0;
    for (size_t i = 0; i < b->n_regs; i++) {
        n_pat += b->regs[i].wildcard;
        for (size_t k = 0; k < b->regs[i].base.n_types; k++)
            n_chan += !is_wildcard(b->regs[i].base.types[k]);
    }
    char **names = calloc(n_chan + n_pat + 2, sizeof *names);
    const char **argv = calloc(n_chan + n_pat + 2, sizeof *argv);
    size_t *lens = calloc(n_chan + n_pat + 2, sizeof *lens);
    int rc = HD_OK;
    if (names == NULL || argv == NULL || lens == NULL) {
        rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
        goto done;
    }
    size_t nc = 0, np = 0;
    for (size_t i = 0; i < b->n_regs && rc == HD_OK; i++) {
        redis_reg *r = &b->regs[i];
        for (size_t k = 0; k < r->base.n_types && rc == HD_OK; k++) {
            if (is_wildcard(r->base.types[k]))
                continue;
            size_t cap = strlen(r->base.topic) + strlen(r->base.types[k]) + 2;
            if ((names[nc] = malloc(cap)) == NULL)
                rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
            else
                (void)hd_bus_redis_channel(r->base.topic, r->base.types[k], names[nc++], cap);
        }
        if (r->wildcard && rc == HD_OK) {
            /* "<topic>:*" with the topic's glob characters escaped: every type of the topic,
             * which the bus then filters with the registration's RabbitMQ-style wildcards. */
            char *p = malloc(2 * strlen(r->base.topic) + 3);
            if (p == NULL) {
                rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
                break;
            }
            size_t o = 0;
            for (const char *t = r->base.topic; *t; t++) {
                if (strchr("*?[]\\", *t))
                    p[o++] = '\\';
                p[o++] = *t;
            }
            memcpy(p + o, ":*", 3);
            names[n_chan + np++] = p;
        }
    }
    if (rc < 0)
        goto done;
    /* One SUBSCRIBE with every channel, one PSUBSCRIBE with every pattern: Redis confirms
     * each argument (a repeated one too) with one reply. */
    size_t expect = 0;
    if (nc > 0) {
        argv[0] = "SUBSCRIBE";
        lens[0] = 9;
        for (size_t i = 0; i < nc; i++) {
            argv[1 + i] = names[i];
            lens[1 + i] = strlen(names[i]);
        }
        if (redisAppendCommandArgv(b->sub, (int)(nc + 1), argv, lens) != REDIS_OK) {
            rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
            goto done;
        }
        expect += nc;
    }
    if (np > 0) {
        argv[0] = "PSUBSCRIBE";
        lens[0] = 10;
        for (size_t i = 0; i < np; i++) {
            argv[1 + i] = names[n_chan + i];
            lens[1 + i] = strlen(names[n_chan + i]);
        }
        if (redisAppendCommandArgv(b->sub, (int)(np + 1), argv, lens) != REDIS_OK) {
            rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
            goto done;
        }
        expect += np;
    }
    while (expect > 0) {
        redisReply *r = NULL;
        if (redisGetReply(b->sub, (void **)&r) != REDIS_OK || r == NULL) {
            rc = hd_error_set(err, HD_ECONNECT, "redis bus: subscribe at %s:%d: %s", b->url.host,
                              b->url.port, b->sub->errstr);
            goto done;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            (strcmp(r->element[0]->str, "subscribe") == 0 ||
             strcmp(r->element[0]->str, "psubscribe") == 0)) {
            expect--;
            freeReplyObject(r);
        } else if (r->type == REDIS_REPLY_ARRAY) {
            /* A message on a channel confirmed already: keep it for the first poll. */
            redisReply **grown = realloc(b->early, (b->n_early + 1) * sizeof *grown);
            if (grown == NULL) {
                freeReplyObject(r);
                rc = hd_error_set(err, HD_ENOMEM, "redis bus: subscribe");
                goto done;
            }
            b->early = grown;
            b->early[b->n_early++] = r;
        } else {
            rc = hd_error_set(err, HD_EPROTO, "redis bus: subscribe refused: %.200s",
                              r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            goto done;
        }
    }
done:
    for (size_t i = 0; names && i < n_chan + n_pat + 2; i++)
        free(names[i]);
    free(names);
    free(argv);
    free(lens);
    return rc;
}

/* ---- methods -------------------------------------------------------------------------- */

static int rd_add_consumer(hd_bus *bus, const hd_bus_registration *reg, hd_error *err)
{
    redis_bus *b = (redis_bus *)bus;
    for (size_t i = 0; i < b->n_regs; i++)
        if (strcmp(b->regs[i].base.consumer, reg->consumer) == 0 &&
            strcmp(b->regs[i].base.topic, reg->topic) == 0)
            return hd_error_set(err, HD_EEXIST, "consumer '%s' is already registered on '%s'",
                                reg->consumer, reg->topic);
    redis_reg *grown = realloc(b->regs, (b->n_regs + 1) * sizeof *grown);
    if (grown == NULL)
        return hd_error_set(err, HD_ENOMEM, "redis bus: register");
    b->regs = grown;
    redis_reg *r = &b->regs[b->n_regs];
    memset(r, 0, sizeof *r);
    int rc = hd_bus_reg_copy(reg, "redis bus", &r->base, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r->base.n_types; i++)
        if (is_wildcard(r->base.types[i]))
            r->wildcard = 1;
    b->n_regs++;
    return HD_OK;
}

static int rd_shutdown(hd_bus *bus, hd_error *err)
{
    redis_bus *b = (redis_bus *)bus;
    /* Closing the subscription connection is the whole unsubscribe: from here on, what is
     * published to our channels reaches nobody here, and nothing keeps it. */
    if (b->sub != NULL)
        redisFree(b->sub);
    if (b->pub != NULL)
        redisFree(b->pub);
    b->sub = b->pub = NULL;
    free_early(b);
    return HD_OK;
}

static int rd_startup(hd_bus *bus, hd_error *err)
{
    redis_bus *b = (redis_bus *)bus;
    int rc = connect_one(b, &b->pub, err);
    if (rc < 0)
        return rc;
    if (b->n_regs > 0) {
        if ((rc = connect_one(b, &b->sub, err)) < 0 || (rc = subscribe_all(b, err)) < 0) {
            rd_shutdown(bus, NULL);
            return rc;
        }
    }
    return HD_OK;
}

static int rd_send(hd_bus *bus, const hd_bus_message *msg, hd_error *err)
{
    redis_bus *b = (redis_bus *)bus;
    size_t cap = strlen(msg->topic) + strlen(msg->type) + 2;
    char *channel = malloc(cap);
    char *frame = NULL;
    size_t flen = 0;
    if (channel == NULL)
        return hd_error_set(err, HD_ENOMEM, "redis bus: send");
    (void)hd_bus_redis_channel(msg->topic, msg->type, channel, cap);
    int rc = hd_bus_redis_frame_encode(msg, &frame, &flen, err);
    for (int attempt = 0; rc == HD_OK; attempt++) {
        if (b->pub == NULL && (rc = connect_one(b, &b->pub, err)) < 0)
            break;
        const char *argv[3] = {"PUBLISH", channel, frame};
        size_t lens[3] = {7, strlen(channel), flen};
        redisReply *r = redisCommandArgv(b->pub, 3, argv, lens);
        if (r == NULL) {
            /* The connection broke (Redis restarted, an idle connection was cut): one new
             * connection and one more try. Whether the first PUBLISH reached Redis before
             * the break is unknown — pub/sub has nothing to ask; at worst a subscriber sees
             * it twice. */
            rc = hd_error_set(err, HD_ECONNECT, "redis bus: PUBLISH to %s:%d: %s", b->url.host,
                              b->url.port, b->pub->errstr);
            redisFree(b->pub);
            b->pub = NULL;
            if (attempt == 0)
                rc = HD_OK;
            else
                break;
            continue;
        }
        if (r->type == REDIS_REPLY_INTEGER) {
            count(&b->counts.sent);
            if (r->integer == 0)
                count(&b->counts.sent_unheard);
        } else {
            rc = hd_error_set(err, HD_EPROTO, "redis bus: PUBLISH refused: %.200s",
                              r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        }
        freeReplyObject(r);
        break;
    }
    free(frame);
    free(channel);
    return rc;
}

static hd_consume_result call(redis_bus *b, const redis_reg *r, const char *type,
                              const hd_bus_redis_frame *f, const hd_envelope *env)
{
    char reason[HD_REASON_MAX] = "";
    const char *id = f->message_id[0] ? f->message_id : (env ? hd_envelope_id(env) : NULL);
    hd_delivery d = {
        .body = f->body,
        .body_len = f->len,
        .queue = r->base.queue,
        .exchange = r->base.topic,
        .routing_key = type,
        .message_id = id,
        .correlation_id = f->correlation_id[0] ? f->correlation_id : NULL,
        .type = type,
        .content_type = f->content_type[0] ? f->content_type : NULL,
        .redelivered = 0, /* never: nothing is delivered twice */
        .attempt = 1,
        .envelope = env,
        .reason_buf = reason,
    };
    count(&b->counts.delivered);
    hd_consume_result v = r->base.handler(r->base.ctx, &d);
    if (v == HD_CONSUME_OK)
        count(&b->counts.handled);
    else
        count(&b->counts.failed); /* known limit: nowhere to retry or dead-letter it */
    return v;
}

static int reg_has_exact(const redis_reg *r, const char *type)
{
    for (size_t k = 0; k < r->base.n_types; k++)
        if (!is_wildcard(r->base.types[k]) && strcmp(r->base.types[k], type) == 0)
            return 1;
    return 0;
}

static int reg_has_match(const redis_reg *r, const char *type)
{
    for (size_t k = 0; k < r->base.n_types; k++)
        if (is_wildcard(r->base.types[k]) && hd_bus_redis_type_matches(r->base.types[k], type))
            return 1;
    return 0;
}

/* One message of the subscription: ["message", channel, payload] (a SUBSCRIBE) or
 * ["pmessage", pattern, channel, payload] (a PSUBSCRIBE). A registration with an exact type
 * gets it from the former; one with only a matching wildcard from the latter, so each gets
 * one copy even when both kinds of subscription match. Returns the handler calls. */
static int dispatch(redis_bus *b, const redisReply *m)
{
    if (m->type != REDIS_REPLY_ARRAY || m->elements < 3)
        return 0;
    for (size_t i = 0; i < m->elements; i++)
        if (m->element[i]->type != REDIS_REPLY_STRING)
            return 0;
    const char *kind = m->element[0]->str;
    int pattern = strcmp(kind, "pmessage") == 0 && m->elements == 4;
    if (!pattern && !(strcmp(kind, "message") == 0 && m->elements == 3))
        return 0; /* a late (p)subscribe confirmation, a pong */
    const redisReply *ch = m->element[pattern ? 2 : 1];
    const redisReply *payload = m->element[pattern ? 3 : 2];
    count(&b->counts.received);

    hd_bus_redis_frame f;
    if (hd_bus_redis_frame_decode(payload->str, payload->len, &f, NULL) < 0) {
        count(&b->counts.undecodable); /* known limit: no dead-letter queue to put it in */
        return 0;
    }
    hd_envelope *env = NULL;
    int decoded = 0, calls = 0;
    for (size_t i = 0; i < b->n_regs; i++) {
        redis_reg *r = &b->regs[i];
        size_t tl = strlen(r->base.topic);
        if (ch->len <= tl + 1 || memcmp(ch->str, r->base.topic, tl) != 0 || ch->str[tl] != ':')
            continue;
        const char *type = ch->str + tl + 1;
        int wanted =
            pattern ? !reg_has_exact(r, type) && reg_has_match(r, type) : reg_has_exact(r, type);
        if (!wanted)
            continue;
        if (b->opts.registry != NULL && !decoded) {
            decoded = 1;
            if (hd_envelope_decode(b->opts.registry, f.body, f.len, &env, NULL) < 0) {
                count(&b->counts.undecodable);
                return 0;
            }
        }
        (void)call(b, r, type, &f, env);
        calls++;
    }
    hd_envelope_free(env);
    return calls;
}

/* Handle every reply hiredis has already read. Returns 0, or HD_ECLOSED when the
 * connection is unusable (a protocol error). */
static int drain(redis_bus *b, int *handled)
{
    for (size_t i = 0; i < b->n_early; i++)
        *handled += dispatch(b, b->early[i]);
    free_early(b);
    for (;;) {
        void *r = NULL;
        if (redisGetReplyFromReader(b->sub, &r) != REDIS_OK)
            return HD_ECLOSED;
        if (r == NULL)
            return HD_OK;
        *handled += dispatch(b, r);
        freeReplyObject(r);
    }
}

/* The subscription is gone (Redis restarted, the connection was cut): make it again. What
 * was published in between is lost — the limit this bus exists to show. Under hd_bus_run
 * (a stop set) it waits for Redis with backoff until it is back or the stop; a plain poll
 * gives up at its deadline. */
static int resubscribe(redis_bus *b, int64_t deadline, hd_error *err)
{
    if (b->sub != NULL)
        redisFree(b->sub);
    b->sub = NULL;
    hd_backoff bo;
    (void)hd_backoff_init(&bo, 100, 5000, (uint64_t)hd_clock_ns() ^ (uint64_t)(uintptr_t)b);
    for (unsigned attempt = 0;; attempt++) {
        int rc = connect_one(b, &b->sub, err);
        if (rc == HD_OK && (rc = subscribe_all(b, err)) == HD_OK) {
            count(&b->counts.resubscribed);
            return HD_OK;
        }
        if (b->sub != NULL)
            redisFree(b->sub);
        b->sub = NULL;
        if (rc == HD_ENOMEM || rc == HD_EAUTH)
            return rc;
        int64_t delay = hd_backoff_delay(&bo, attempt);
        if (b->base.stop == NULL) {
            int64_t left = deadline - hd_clock_ms();
            if (left <= 0)
                return rc;
            if (delay > left)
                delay = left;
        }
        if (hd_stop_wait_ms(b->base.stop, delay))
            return hd_error_set(err, HD_EINTR, "redis bus: stopped while reconnecting");
    }
}

static int rd_poll(hd_bus *bus, int timeout_ms, hd_error *err)
{
    redis_bus *b = (redis_bus *)bus;
    int handled = 0;
    if (b->n_regs == 0) {
        if (timeout_ms > 0)
            hd_stop_wait_ms(bus->stop, timeout_ms);
        return 0;
    }
    int64_t deadline = hd_clock_ms() + timeout_ms;
    for (;;) {
        int rc = b->sub != NULL ? drain(b, &handled) : HD_ECLOSED;
        if (rc == HD_OK && handled > 0)
            return handled;
        if (rc == HD_OK) {
            int64_t left = deadline - hd_clock_ms();
            struct pollfd pfd = {.fd = b->sub->fd, .events = POLLIN};
            rc = hd_stop_poll(bus->stop, &pfd, 1, left > 0 ? left : 0);
            if (rc == HD_EINTR || rc == 0)
                return handled;
            if (rc < 0)
                return hd_error_set(err, HD_EIO, "redis bus: poll: %s", strerror(errno));
            /* Readable: data, or the end of the connection (which reads as an error). */
            rc = redisBufferRead(b->sub) == REDIS_OK ? HD_OK : HD_ECLOSED;
            if (rc == HD_OK) {
                if (left <= 0 && (rc = drain(b, &handled)) == HD_OK)
                    return handled;
                if (rc == HD_OK)
                    continue;
            }
        }
        rc = resubscribe(b, deadline, err);
        if (rc == HD_EINTR)
            return handled;
        if (rc < 0)
            return rc;
    }
}

static void rd_destroy(hd_bus *bus)
{
    redis_bus *b = (redis_bus *)bus;
    for (size_t i = 0; i < b->n_regs; i++)
        hd_bus_reg_release(&b->regs[i].base);
    free(b->regs);
    /* the password lives in the struct: wipe it before the memory goes back */
    memset(&b->url, 0, sizeof b->url);
    free(b);
}

static const hd_bus_methods redis_methods = {
    .name = "redis",
    .add_consumer = rd_add_consumer,
    .startup = rd_startup,
    .send = rd_send,
    .poll = rd_poll,
    .shutdown = rd_shutdown,
    .destroy = rd_destroy,
};

/* ---- public --------------------------------------------------------------------------- */

int hd_bus_redis_new(const char *url, const hd_bus_redis_options *opts, hd_bus **out, hd_error *err)
{
    *out = NULL;
    if (opts != NULL && opts->timeout_ms < 0)
        return hd_error_set(err, HD_EINVAL, "redis bus: negative timeout");
    redis_bus *b = calloc(1, sizeof *b);
    if (b == NULL)
        return hd_error_set(err, HD_ENOMEM, "redis bus");
    int rc = hd_bus_redis_url_parse(url, &b->url, err);
    if (rc < 0) {
        free(b);
        return rc;
    }
    b->base.methods = &redis_methods;
    b->base.state = HD_BUS_NEW;
    if (opts != NULL)
        b->opts = *opts;
    if (b->opts.timeout_ms == 0)
        b->opts.timeout_ms = 5000;
    *out = &b->base;
    return HD_OK;
}

void hd_bus_redis_get_counts(const hd_bus *bus, hd_bus_redis_counts *out)
{
    redis_bus *b = as_redis(bus);
    memset(out, 0, sizeof *out);
    if (b == NULL)
        return;
#define LOAD(f) out->f = atomic_load_explicit(&b->counts.f, memory_order_relaxed)
    LOAD(sent);
    LOAD(sent_unheard);
    LOAD(received);
    LOAD(delivered);
    LOAD(handled);
    LOAD(failed);
    LOAD(undecodable);
    LOAD(resubscribed);
#undef LOAD
}
