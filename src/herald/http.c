/* http.c — a small JSON router over libmicrohttpd; see http.h.
 *
 * How a request travels through libmicrohttpd (MHD) and this file:
 *
 *   on_uri        MHD has read the request line. We count the request as in flight and
 *                 allocate our hd_http_request; MHD keeps it for us in *con_cls.
 *   on_access #1  the headers are in. Parse the target, pick the correlation id, find the
 *                 route (or prepare a 400/404/405), and refuse a declared Content-Length
 *                 over the limit (413) before reading the body.
 *   on_access #k  a piece of the body: append it, or count and drop it once over the limit.
 *   on_access #n  upload_data_size == 0: the request is complete. Run the handler (or
 *                 take the answer prepared earlier) and queue the response.
 *   on_completed  the response is sent (or the connection died). Report to the observer,
 *                 free the request, and wake hd_http_server_stop when nothing is in flight.
 *
 * hd_http_server_dispatch runs the same steps (request_begin, take_body, finish, report)
 * without MHD, for tests and fuzzing.
 *
 * Slow clients: on_connection tracks every open connection with the phase it is in and
 * since when; the watchdog thread shuts down the socket of one whose phase outlived its
 * limit (see http.h). MHD's own idle timeout cannot do it: it counts inactivity only.
 */
#include "herald/http.h"
#include "herald/clock.h"
#include "herald/utf8.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEGMENTS 32 /* path segments; deeper paths simply match no route */

struct route {
    char *method;
    char *pattern;
    char **segs;             /* literal text, or the parameter's name */
    unsigned char *is_param; /* per segment */
    size_t nsegs;
    hd_http_handler fn;
    void *ctx;
};

enum state { STATE_NEW, STATE_RUNNING, STATE_STOPPED };

/* Where a connection is, for the whole-request deadline. */
enum phase {
    PHASE_IDLE,      /* waiting for a request line: limit idle_timeout + request_timeout */
    PHASE_RECEIVING, /* request line seen, body not complete: limit request_timeout */
    PHASE_BUSY,      /* handler running or response going out: no deadline of ours */
};

/* One open connection, known from MHD's NOTIFY_CONNECTION STARTED to CLOSED. */
struct track {
    struct track *prev, *next;
    int fd;
    /* Written by the connection's MHD thread without a lock (set_phase: since_ns first, then
     * phase with release), read by the watchdog (phase with acquire, then since_ns): the
     * watchdog never pairs a new phase with an older start. A lock here was taken three
     * times a request by every MHD thread, and contended (issue 14, twelfth pass). */
    _Atomic int phase; /* enum phase */
    _Atomic int64_t since_ns;
    int cut; /* the watchdog shut it down already */
};

/* At most one message per HD_HTTP_WARN_INTERVAL_S; the rest are counted. */
struct ratelimit {
    pthread_mutex_t lock;
    int64_t last_ns; /* 0: nothing logged yet */
    unsigned long suppressed;
};

struct hd_http_server {
    hd_http_options opts; /* defaults filled in; bind_address points to bind_copy */
    char *bind_copy;
    struct sockaddr_storage addr;
    int ipv6;
    struct route *routes; /* written before start only, then read-only: no lock needed */
    size_t nroutes, cap;
    hd_http_observer observer;
    void *observer_ctx;
    struct MHD_Daemon *daemon;
    uint16_t port;
    enum state state;
    atomic_int stopping;
    pthread_mutex_t lock;    /* with idle: hd_http_server_stop waits for inflight to reach 0 */
    pthread_cond_t idle;     /* broadcast, under lock, when inflight drops to 0 */
    _Atomic size_t inflight; /* requests between on_uri and on_completed (no lock: atomics) */
    /* slow clients */
    pthread_mutex_t track_lock; /* guards the track list, every track, wd_stop */
    pthread_cond_t wd_wake;     /* wakes the watchdog to stop */
    struct track *tracks;
    pthread_t watchdog;
    int wd_running, wd_stop;
    atomic_ulong cut_count;
    struct ratelimit warn_slow, warn_mhd;
};

struct param {
    const char *name; /* borrowed from the route (path) or owned (query) */
    char *value;      /* owned, decoded */
};

struct header {
    char *name, *value;
};

struct hd_http_response {
    hd_http_request *req; /* for "instance" and the correlation id */
    int status;           /* 0 until a reply_* function ran */
    char *content_type;
    char *body; /* malloc'd; handed to MHD, which free()s it */
    size_t len;
    struct header *headers;
    size_t nheaders, cap;
    /* A streamed body (hd_http_reply_stream): owned until queue_response hands it to MHD. */
    hd_http_stream_read stream_read;
    hd_http_stream_free stream_free;
    void *stream_ctx;
};

struct hd_http_request {
    hd_http_server *srv;
    struct MHD_Connection *conn; /* NULL for hd_http_server_dispatch */
    const char *const *headers;  /* dispatch only: name, value, ..., NULL (borrowed) */
    struct track *track;         /* NULL for dispatch, or when MHD gave none */
    const char *bad_request;     /* why the request line is refused (400), or NULL */
    int64_t start_ns;
    char *uri; /* the raw request target ("/users/a%2Fb?x=1") */
    char *method;
    char *path; /* uri up to '?' */
    const struct route *route;
    struct param params[MAX_SEGMENTS];
    size_t nparams;
    struct param *query;
    size_t nquery;
    char *body;
    size_t body_len, body_cap;
    uint64_t body_seen; /* bytes received, dropped ones included */
    int started, answered, too_big, bad_target, oom;
    char cid[HD_HTTP_CORRELATION_MAX + 1];
    int status_sent;
    size_t bytes_sent;
    hd_http_response resp;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into *out (new); with plus, '+' means a space (query strings
 * only: in a path '+' is a plus). Returns 0, HD_EURL for a malformed escape or one that
 * decodes to NUL (which a C string cannot carry), or HD_ENOMEM. */
static int url_decode(const char *s, size_t n, int plus, char **out)
{
    char *d = malloc(n + 1), *o = d;
    if (d == NULL)
        return HD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(d);
                return HD_EURL;
            }
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else if (plus && s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    *out = d;
    return HD_OK;
}

/* Split a path that starts with '/' into segments, in place: "/a/b" -> {"a", "b"}; "/"
 * -> none; "/a/" -> {"a", ""}. Returns the count, or -1 (no leading '/', too deep). */
static int split_path(char *p, char **segs)
{
    if (*p != '/')
        return -1;
    if (p[1] == '\0')
        return 0;
    int n = 0;
    for (char *s = p + 1;; n++) {
        if (n == MAX_SEGMENTS)
            return -1;
        segs[n] = s;
        char *slash = strchr(s, '/');
        if (slash == NULL)
            return n + 1;
        *slash = '\0';
        s = slash + 1;
    }
}

static int is_tchar(int c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A borrowed s when it is valid UTF-8, else a cleaned copy kept in *owned (free it). */
static const char *utf8_or_clean(const char *s, char **owned)
{
    *owned = NULL;
    if (s == NULL || hd_utf8_valid(s))
        return s;
    /* U+FFFD for each bad byte: jansson refuses invalid UTF-8, so a client's bytes pass
     * through here before a JSON problem or log line; a refused json_string() is what used
     * to turn a hostile path into an empty 500. */
    *owned = hd_utf8_clean(s, "\xEF\xBF\xBD");
    return *owned ? *owned : "";
}

/* ---- server lifecycle -------------------------------------------------------------------- */

int hd_http_server_new(const hd_http_options *opts, hd_http_server **out, hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "out is NULL");
    *out = NULL;
    hd_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    if (opts != NULL)
        srv->opts = *opts;
    hd_http_options *o = &srv->opts;
    if (o->max_body_bytes == 0)
        o->max_body_bytes = HD_HTTP_DEFAULT_MAX_BODY;
    if (o->max_connections == 0)
        o->max_connections = HD_HTTP_DEFAULT_MAX_CONNECTIONS;
    if (o->idle_timeout_s == 0)
        o->idle_timeout_s = HD_HTTP_DEFAULT_IDLE_TIMEOUT_S;
    if (o->stop_timeout_ms <= 0)
        o->stop_timeout_ms = HD_HTTP_DEFAULT_STOP_TIMEOUT_MS;
    if (o->per_ip_connection_limit == 0)
        o->per_ip_connection_limit = HD_HTTP_DEFAULT_PER_IP_CONNECTIONS;
    if (o->request_timeout_ms <= 0)
        o->request_timeout_ms = HD_HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
    srv->bind_copy = strdup(o->bind_address ? o->bind_address : HD_HTTP_DEFAULT_ADDRESS);
    if (srv->bind_copy == NULL) {
        free(srv);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    o->bind_address = srv->bind_copy;

    /* Numeric addresses only: resolving a name could give several addresses, or block. */
    struct sockaddr_in *v4 = (struct sockaddr_in *)&srv->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&srv->addr;
    if (inet_pton(AF_INET, o->bind_address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(o->port);
    } else if (inet_pton(AF_INET6, o->bind_address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(o->port);
        srv->ipv6 = 1;
    } else {
        int rc =
            hd_error_set(err, HD_EINVAL, "bind address '%s' is not a numeric IPv4 or IPv6 address",
                         o->bind_address);
        free(srv->bind_copy);
        free(srv);
        return rc;
    }

    /* The stop deadline is measured on the monotonic clock: a wall-clock jump (NTP,
     * daylight saving on a badly configured host) must not shorten or stretch the drain. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    atomic_init(&srv->inflight, 0);
    int ok = pthread_mutex_init(&srv->lock, NULL) == 0;
    if (ok && pthread_cond_init(&srv->idle, &ca) != 0) {
        pthread_mutex_destroy(&srv->lock);
        ok = 0;
    }
    if (ok && pthread_cond_init(&srv->wd_wake, &ca) != 0) {
        pthread_cond_destroy(&srv->idle);
        pthread_mutex_destroy(&srv->lock);
        ok = 0;
    }
    pthread_condattr_destroy(&ca);
    /* Plain mutexes cannot fail to initialise on Linux; the checks above are for the
     * condition variables' clock attribute. */
    if (ok) {
        pthread_mutex_init(&srv->track_lock, NULL);
        pthread_mutex_init(&srv->warn_slow.lock, NULL);
        pthread_mutex_init(&srv->warn_mhd.lock, NULL);
        atomic_init(&srv->cut_count, 0);
    }
    if (!ok) {
        free(srv->bind_copy);
        free(srv);
        return hd_error_set(err, HD_ENOMEM, "cannot create the server's lock");
    }
    atomic_init(&srv->stopping, 0);
    *out = srv;
    return HD_OK;
}

static void route_release(struct route *r)
{
    for (size_t i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r->segs);
    free(r->is_param);
    free(r->method);
    free(r->pattern);
}

void hd_http_server_free(hd_http_server *srv)
{
    if (srv == NULL)
        return;
    hd_http_server_stop(srv);
    for (size_t i = 0; i < srv->nroutes; i++)
        route_release(&srv->routes[i]);
    free(srv->routes);
    pthread_cond_destroy(&srv->idle);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->wd_wake);
    pthread_mutex_destroy(&srv->track_lock);
    pthread_mutex_destroy(&srv->warn_slow.lock);
    pthread_mutex_destroy(&srv->warn_mhd.lock);
    free(srv->bind_copy);
    free(srv);
}

/* Parse "{name}": 1 and the name's bounds; 0 when the segment is a literal; -1 when it is
 * malformed (braces elsewhere, empty or odd name). */
static int parse_param(const char *seg, size_t *len)
{
    size_t n = strlen(seg);
    if (seg[0] != '{') {
        return strpbrk(seg, "{}") ? -1 : 0;
    }
    if (n < 3 || seg[n - 1] != '}')
        return -1;
    for (size_t i = 1; i + 1 < n; i++)
        if (!(isalnum((unsigned char)seg[i]) || seg[i] == '_'))
            return -1;
    *len = n - 2;
    return 1;
}

int hd_http_route(hd_http_server *srv, const char *method, const char *pattern,
                  hd_http_handler handler, void *ctx)
{
    if (srv == NULL || method == NULL || *method == '\0' || pattern == NULL || handler == NULL)
        return HD_EINVAL;
    if (srv->state != STATE_NEW)
        return HD_ESTATE;
    for (const char *m = method; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return HD_EINVAL;
    for (size_t i = 0; i < srv->nroutes; i++)
        if (strcmp(srv->routes[i].method, method) == 0 &&
            strcmp(srv->routes[i].pattern, pattern) == 0)
            return HD_EEXIST;

    char *copy = strdup(pattern);
    if (copy == NULL)
        return HD_ENOMEM;
    char *segs[MAX_SEGMENTS];
    int n = split_path(copy, segs);
    if (n < 0) {
        free(copy);
        return HD_EINVAL;
    }
    struct route r = {0};
    int rc = HD_OK;
    r.method = strdup(method);
    r.pattern = strdup(pattern);
    r.segs = calloc((size_t)n + 1, sizeof *r.segs); /* zeroed: route_release frees them all */
    r.is_param = calloc((size_t)n + 1, 1);
    if (!r.method || !r.pattern || !r.segs || !r.is_param)
        rc = HD_ENOMEM;
    else
        r.nsegs = (size_t)n;
    for (int i = 0; rc == HD_OK && i < n; i++) {
        size_t len = 0;
        int kind = parse_param(segs[i], &len);
        if (kind < 0) {
            rc = HD_EINVAL;
            break;
        }
        r.is_param[i] = (unsigned char)kind;
        r.segs[i] = kind ? strndup(segs[i] + 1, len) : strdup(segs[i]);
        if (r.segs[i] == NULL)
            rc = HD_ENOMEM;
        for (int j = 0; rc == HD_OK && kind && j < i; j++)
            if (r.is_param[j] && strcmp(r.segs[j], r.segs[i]) == 0)
                rc = HD_EINVAL; /* "/{id}/x/{id}": which one would param("id") return? */
    }
    free(copy);
    if (rc == HD_OK && srv->nroutes == srv->cap) {
        size_t cap = srv->cap ? srv->cap * 2 : 16;
        struct route *grown = realloc(srv->routes, cap * sizeof *grown);
        if (grown == NULL)
            rc = HD_ENOMEM;
        else {
            srv->routes = grown;
            srv->cap = cap;
        }
    }
    if (rc != HD_OK) {
        route_release(&r);
        return rc;
    }
    r.fn = handler;
    r.ctx = ctx;
    srv->routes[srv->nroutes++] = r;
    return HD_OK;
}

void hd_http_server_observe(hd_http_server *srv, hd_http_observer fn, void *ctx)
{
    if (srv == NULL || srv->state != STATE_NEW)
        return;
    srv->observer = fn;
    srv->observer_ctx = ctx;
}

uint16_t hd_http_server_port(const hd_http_server *srv)
{
    return srv ? srv->port : 0;
}

int hd_http_server_stopping(const hd_http_server *srv)
{
    return srv ? atomic_load((atomic_int *)&srv->stopping) : 0;
}

/* ---- requests ---------------------------------------------------------------------------- */

/* Give up a stream the response still owns (replaced, failed, or never sent). */
static void stream_drop(hd_http_response *r)
{
    if (r->stream_read != NULL && r->stream_free != NULL)
        r->stream_free(r->stream_ctx);
    r->stream_read = NULL;
    r->stream_free = NULL;
    r->stream_ctx = NULL;
}

static void response_release(hd_http_response *r)
{
    stream_drop(r);
    free(r->content_type);
    free(r->body);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
}

static void request_free(hd_http_request *req)
{
    if (req == NULL)
        return;
    response_release(&req->resp);
    for (size_t i = 0; i < req->nparams; i++)
        free(req->params[i].value);
    for (size_t i = 0; i < req->nquery; i++) {
        free((char *)req->query[i].name);
        free(req->query[i].value);
    }
    free(req->query);
    free(req->body);
    free(req->path);
    free(req->method);
    free(req->uri);
    free(req);
}

/* Split "a=1&b=x+y&flag" into decoded pairs. Returns 0, HD_EURL or HD_ENOMEM. */
static int parse_query(hd_http_request *req, const char *q)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > 0) {
            const char *eq = memchr(q, '=', len);
            size_t nlen = eq ? (size_t)(eq - q) : len;
            char *name = NULL, *value = NULL;
            int rc = url_decode(q, nlen, 1, &name);
            if (rc == HD_OK)
                rc = eq ? url_decode(eq + 1, len - nlen - 1, 1, &value)
                        : ((value = strdup("")) ? HD_OK : HD_ENOMEM);
            if (rc == HD_OK && (!hd_utf8_valid(name) || !hd_utf8_valid(value)))
                rc = HD_EURL;
            if (rc == HD_OK) {
                struct param *grown = realloc(req->query, (req->nquery + 1) * sizeof *grown);
                if (grown == NULL)
                    rc = HD_ENOMEM;
                else {
                    req->query = grown;
                    req->query[req->nquery++] = (struct param){name, value};
                }
            }
            if (rc != HD_OK) {
                free(name);
                free(value);
                return rc;
            }
        }
        q += len + (amp ? 1 : 0);
    }
    return HD_OK;
}

static int valid_correlation_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > HD_HTTP_CORRELATION_MAX)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("._:-", *s)))
            return 0;
    return 1;
}

/* ---- routing ----------------------------------------------------------------------------- */

static int route_matches(const struct route *r, char **segs, size_t n)
{
    if (r->nsegs != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (r->is_param[i] ? segs[i][0] == '\0' : strcmp(r->segs[i], segs[i]) != 0)
            return 0;
    }
    return 1;
}

/* 1 when a beats b: at the first segment where one is a literal and the other a
 * parameter, the literal wins. */
static int more_specific(const struct route *a, const struct route *b)
{
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->is_param[i] != b->is_param[i])
            return !a->is_param[i];
    return 0;
}

static const struct route *find_route(const hd_http_server *srv, const char *method, char **segs,
                                      size_t n, int *path_known)
{
    const struct route *best = NULL;
    *path_known = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct route *r = &srv->routes[i];
        if (!route_matches(r, segs, n))
            continue;
        *path_known = 1;
        if (strcmp(r->method, method) == 0 && (best == NULL || more_specific(r, best)))
            best = r;
    }
    return best;
}

/* "GET, HEAD, PATCH": the methods of every route matching the path, once each. */
static void allow_header(const hd_http_server *srv, char **segs, size_t n, char *out, size_t cap)
{
    size_t len = 0;
    int has_get = 0, has_head = 0;
    out[0] = '\0';
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct route *r = &srv->routes[i];
        if (!route_matches(r, segs, n))
            continue;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = route_matches(&srv->routes[j], segs, n) &&
                   strcmp(srv->routes[j].method, r->method) == 0;
        if (seen)
            continue;
        has_get |= strcmp(r->method, "GET") == 0;
        has_head |= strcmp(r->method, "HEAD") == 0;
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s", len ? ", " : "",
                                r->method);
    }
    if (has_get && !has_head && len < cap)
        snprintf(out + len, cap - len, ", HEAD");
}

/* Once the headers are in: find the route and decode the path parameters, or prepare
 * the 400 / 404 / 405 answer (sent when the body has been read, so that the connection
 * can be kept alive). Knowing the route this early also gives an early 413 its label. */
static void resolve(hd_http_request *req)
{
    hd_http_server *srv = req->srv;
    hd_http_response *resp = &req->resp;
    if (req->bad_request != NULL) {
        hd_http_reply_problem(resp, 400, NULL, req->bad_request);
        return;
    }
    if (req->bad_target) {
        hd_http_reply_problem(resp, 400, NULL,
                              "the query string is not valid percent-encoded UTF-8");
        return;
    }
    char *copy = strdup(req->path);
    if (copy == NULL) {
        req->oom = 1;
        return;
    }
    char *raw[MAX_SEGMENTS], *segs[MAX_SEGMENTS];
    int n = split_path(copy, raw);
    /* Decode each segment after splitting, so that an escaped "/" stays inside its
     * segment, and literals match however the client chose to escape them. */
    int decoded = 0, rc = HD_OK;
    for (; decoded < n && rc == HD_OK; decoded++)
        rc = url_decode(raw[decoded], strlen(raw[decoded]), 0, &segs[decoded]);
    if (rc != HD_OK) {
        decoded--; /* the failed one allocated nothing */
        if (rc == HD_EURL)
            hd_http_reply_problem(resp, 400, NULL, "the path is not valid percent-encoding");
        else
            req->oom = 1;
        goto out;
    }
    /* A parameter goes to handlers that put it into JSON, SQL and logs: "%FF" must stop
     * here, as the raw byte would have. */
    for (int i = 0; i < decoded; i++) {
        if (!hd_utf8_valid(segs[i])) {
            hd_http_reply_problem(resp, 400, NULL,
                                  "the path is not valid UTF-8 once percent-decoded");
            goto out;
        }
    }
    int path_known = 0;
    const struct route *route = NULL;
    if (n >= 0) {
        route = find_route(srv, req->method, segs, (size_t)n, &path_known);
        if (route == NULL && strcmp(req->method, "HEAD") == 0)
            route = find_route(srv, "GET", segs, (size_t)n, &path_known);
    }
    if (route == NULL && !path_known) {
        hd_http_reply_problem(resp, 404, NULL, "no resource matches this path");
        goto out;
    }
    if (route == NULL) {
        char allow[256];
        allow_header(srv, segs, (size_t)n, allow, sizeof allow);
        hd_http_reply_problemf(resp, 405, NULL, "%s is not allowed here; allowed: %s", req->method,
                               allow);
        hd_http_response_set_header(resp, "Allow", allow);
        goto out;
    }
    req->route = route;
    for (size_t i = 0; i < route->nsegs; i++) {
        if (route->is_param[i]) {
            req->params[req->nparams++] = (struct param){route->segs[i], segs[i]};
            segs[i] = NULL; /* now owned by the request */
        }
    }
out:
    for (int i = 0; i < decoded; i++)
        free(segs[i]);
    free(copy);
}

/* The request line must not carry bytes that cannot be echoed safely: a method is an
 * HTTP token (RFC 9110 5.6.2), a target has no controls, spaces or invalid UTF-8 (RFC 9112
 * wants it percent-encoded ASCII; raw UTF-8 is tolerated, as browsers' address bars send
 * it). Returns the reason for the 400, or NULL. */
static const char *check_request_line(const char *method, const char *uri)
{
    if (*method == '\0')
        return "the request has no method";
    for (const char *m = method; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return "the method is not an HTTP token";
    for (const unsigned char *u = (const unsigned char *)uri; *u; u++)
        if (*u <= 0x20 || *u == 0x7f)
            return "the request target contains control characters or spaces";
    if (!hd_utf8_valid(uri))
        return "the request target contains bytes that are not UTF-8; percent-encode them";
    return NULL;
}

/* Once the headers are in (or at once, for a dispatched request): take the method and
 * target apart, pick the correlation id, find the route. Returns 0, or HD_ENOMEM (the
 * connection is then closed). */
static int request_begin(hd_http_request *req, const char *method)
{
    req->started = 1;
    const char *q = strchr(req->uri, '?');
    req->method = strdup(method ? method : "");
    req->path = strndup(req->uri, q ? (size_t)(q - req->uri) : strlen(req->uri));
    if (req->method == NULL || req->path == NULL)
        return HD_ENOMEM;
    req->bad_request = check_request_line(req->method, req->uri);
    if (q != NULL && req->bad_request == NULL) {
        int rc = parse_query(req, q + 1);
        if (rc == HD_ENOMEM)
            return HD_ENOMEM;
        req->bad_target = rc != HD_OK;
    }
    const char *cid = hd_http_request_header(req, "X-Correlation-Id");
    if (valid_correlation_id(cid))
        strcpy(req->cid, cid);
    else
        hd_uuid_v4(req->cid);
    resolve(req);
    return HD_OK;
}

/* Once the body is in: run the handler, unless resolve already decided the answer. */
static void finish(hd_http_request *req)
{
    hd_http_response *resp = &req->resp;
    if (req->oom)
        hd_http_reply_empty(resp, 500);
    else if (resp->status != 0)
        return; /* 400, 404 or 405 from resolve */
    else if (req->too_big)
        hd_http_reply_problemf(resp, 413, NULL, "the body is larger than %zu bytes",
                               req->srv->opts.max_body_bytes);
    else {
        req->route->fn(req, resp, req->route->ctx);
        if (resp->status == 0)
            hd_http_reply_problem(resp, 500, NULL, "the handler did not reply");
    }
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------- */

/* 1 when a message may be logged now; then *suppressed is how many were not since the
 * last one. */
static int ratelimit_allow(struct ratelimit *rl, unsigned long *suppressed)
{
    int64_t now = hd_clock_ns();
    int ok;
    pthread_mutex_lock(&rl->lock);
    ok = rl->last_ns == 0 || now - rl->last_ns >= (int64_t)HD_HTTP_WARN_INTERVAL_S * 1000000000;
    if (ok) {
        rl->last_ns = now;
        *suppressed = rl->suppressed;
        rl->suppressed = 0;
    } else {
        rl->suppressed++;
    }
    pthread_mutex_unlock(&rl->lock);
    return ok;
}

/* MHD logs a line for every connection it refuses (over a limit): rate-limited, or an
 * attacker opening connections in a loop writes our log for us. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    hd_http_server *srv = cls;
    unsigned long suppressed;
    if (!ratelimit_allow(&srv->warn_mhd, &suppressed))
        return;
    char msg[512], count[24];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    snprintf(count, sizeof count, "%lu", suppressed);
    char *clean;
    hd_log(srv->opts.logger, HD_LOG_WARN, NULL, "libmicrohttpd", "detail",
           utf8_or_clean(msg, &clean), "suppressed", count, NULL);
    free(clean);
}

/* A request was cut at its deadline: count it, and warn at most once per interval. */
static void slow_client_cut(hd_http_server *srv)
{
    atomic_fetch_add(&srv->cut_count, 1);
    unsigned long suppressed;
    if (!ratelimit_allow(&srv->warn_slow, &suppressed))
        return;
    char limit[24], count[24];
    snprintf(limit, sizeof limit, "%lld", (long long)srv->opts.request_timeout_ms);
    snprintf(count, sizeof count, "%lu", suppressed);
    hd_log(srv->opts.logger, HD_LOG_WARN, NULL, "http: slow client cut at the request deadline",
           "request_timeout_ms", limit, "suppressed", count, NULL);
}

static void set_phase(hd_http_request *req, enum phase phase)
{
    if (req->track == NULL)
        return;
    atomic_store_explicit(&req->track->since_ns, hd_clock_ns(), memory_order_relaxed);
    atomic_store_explicit(&req->track->phase, (int)phase, memory_order_release);
}

/* MHD tells us of every connection it accepts and closes; we keep a track for the
 * watchdog. MHD calls CLOSED before it closes the socket, and the watchdog only touches
 * a socket under track_lock while its track is listed, so it never shuts down a
 * descriptor that was closed and reused. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    hd_http_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct track *t = fd ? calloc(1, sizeof *t) : NULL;
        *socket_context = t;
        if (t == NULL)
            return; /* untracked: only MHD's idle timeout applies to it */
        t->fd = fd->connect_fd;
        atomic_init(&t->phase, (int)PHASE_IDLE);
        atomic_init(&t->since_ns, hd_clock_ns());
        pthread_mutex_lock(&srv->track_lock);
        t->next = srv->tracks;
        if (srv->tracks)
            srv->tracks->prev = t;
        srv->tracks = t;
        pthread_mutex_unlock(&srv->track_lock);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context != NULL) {
        struct track *t = *socket_context;
        pthread_mutex_lock(&srv->track_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            srv->tracks = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&srv->track_lock);
        free(t);
        *socket_context = NULL;
    }
}

/* Every quarter of the deadline (at most 250 ms), shut down the sockets of connections
 * past their phase's limit. shutdown() wakes MHD's poll on that socket; MHD then reads
 * end-of-file and closes the connection the usual way (on_completed, CLOSED). */
static void *watchdog_main(void *arg)
{
    hd_http_server *srv = arg;
    int64_t req_ns = srv->opts.request_timeout_ms * 1000000;
    int64_t idle_ns = (int64_t)srv->opts.idle_timeout_s * 1000000000 + req_ns;
    int64_t tick_ns = req_ns / 4 < 250000000 ? req_ns / 4 : 250000000;
    pthread_mutex_lock(&srv->track_lock);
    while (!srv->wd_stop) {
        int64_t now = hd_clock_ns();
        unsigned cut = 0;
        for (struct track *t = srv->tracks; t != NULL; t = t->next) {
            int phase = atomic_load_explicit(&t->phase, memory_order_acquire);
            int64_t since = atomic_load_explicit(&t->since_ns, memory_order_relaxed);
            int64_t limit = phase == PHASE_RECEIVING ? req_ns : phase == PHASE_IDLE ? idle_ns : -1;
            if (limit < 0 || t->cut || now - since <= limit)
                continue;
            shutdown(t->fd, SHUT_RDWR);
            t->cut = 1;
            cut++;
        }
        if (cut > 0) {
            pthread_mutex_unlock(&srv->track_lock); /* the log write may block */
            for (unsigned i = 0; i < cut; i++)
                slow_client_cut(srv);
            pthread_mutex_lock(&srv->track_lock);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + tick_ns;
        ts.tv_sec = (time_t)(at / 1000000000);
        ts.tv_nsec = (long)(at % 1000000000);
        if (!srv->wd_stop)
            pthread_cond_timedwait(&srv->wd_wake, &srv->track_lock, &ts);
    }
    pthread_mutex_unlock(&srv->track_lock);
    return NULL;
}

/* MHD calls this once per request, as soon as the request line is read, with the raw
 * target — before it decodes anything. We take the request from here: decoding ourselves
 * is what lets "/users/a%2Fb" reach "/users/{id}". Whatever we return becomes *con_cls,
 * and MHD promises on_completed for every request it was shown to (even if the client
 * disconnects before the headers are in), so the in-flight count cannot leak. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    hd_http_server *srv = cls;
    atomic_fetch_add(&srv->inflight, 1);
    hd_http_request *req = calloc(1, sizeof *req);
    if (req == NULL)
        return NULL;
    req->srv = srv;
    req->start_ns = hd_clock_ns();
    req->resp.req = req;
    if ((req->uri = strdup(uri ? uri : "")) == NULL) {
        free(req);
        return NULL;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    req->track = ci ? ci->socket_context : NULL;
    set_phase(req, PHASE_RECEIVING);
    return req;
}

static enum MHD_Result queue_response(hd_http_request *req)
{
    hd_http_response *r = &req->resp;
    struct MHD_Response *mr;
    if (r->stream_read != NULL) {
        /* Size unknown: chunked over HTTP/1.1. MHD calls the reader on this connection's
         * thread and the free function when it is done with the response. */
        mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, r->stream_read,
                                               r->stream_ctx, r->stream_free);
        if (mr != NULL)
            r->stream_read = NULL, r->stream_free = NULL, r->stream_ctx = NULL;
    } else if (r->len > 0) {
        /* MUST_FREE: MHD takes the buffer and free()s it after sending. */
        mr = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
        if (mr != NULL)
            r->body = NULL;
    } else {
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (mr == NULL)
        return MHD_NO;
    int own_type = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        own_type |= strcasecmp(r->headers[i].name, "Content-Type") == 0;
        MHD_add_response_header(mr, r->headers[i].name, r->headers[i].value);
    }
    if (r->content_type != NULL && !own_type)
        MHD_add_response_header(mr, "Content-Type", r->content_type);
    MHD_add_response_header(mr, "X-Correlation-Id", req->cid);
    /* While draining, every answer closes its connection, so that keep-alive clients
     * move to another instance instead of waiting on this one. */
    if (atomic_load(&req->srv->stopping))
        MHD_add_response_header(mr, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    req->answered = 1;
    req->status_sent = r->status;
    req->bytes_sent = r->len;
    return ret;
}

/* Take a piece of the body, or count and drop it once the total is over the limit. The
 * body is never buffered past the limit; a client that keeps sending more than twice the
 * limit after being over it loses its connection instead of a 413 (MHD cannot answer in
 * the middle of an upload, and reading forever is what a slow-loris attacker wants). */
static enum MHD_Result take_body(hd_http_request *req, const char *data, size_t n)
{
    size_t max = req->srv->opts.max_body_bytes;
    req->body_seen += n;
    if (req->too_big || req->oom || req->body_seen > max) {
        if (!req->too_big && !req->oom) {
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
            req->too_big = 1;
        }
        return req->body_seen <= 2 * (uint64_t)max ? MHD_YES : MHD_NO;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap * 2 : 4096;
        while (cap < req->body_len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        char *grown = realloc(req->body, cap);
        if (grown == NULL) {
            req->oom = 1;
            return MHD_YES;
        }
        req->body = grown;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    hd_http_server *srv = cls;
    hd_http_request *req = *con_cls;
    if (req == NULL)
        return MHD_NO; /* on_uri ran out of memory: close the connection */
    if (req->answered)
        return MHD_YES; /* answered early (413); MHD discards the rest */

    if (!req->started) { /* first call: the headers are in */
        req->conn = conn;
        if (request_begin(req, method) < 0)
            return MHD_NO;
        /* A declared length over the limit is refused before a byte of it is read. MHD
         * then closes the connection after the answer, since the body was not consumed. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl != NULL && strtoull(cl, NULL, 10) > srv->opts.max_body_bytes && !req->oom) {
            req->too_big = 1;
            if (req->resp.status == 0) /* else a 400 / 404 / 405 from resolve says more */
                hd_http_reply_problemf(&req->resp, 413, NULL, "the body is larger than %zu bytes",
                                       srv->opts.max_body_bytes);
            return queue_response(req);
        }
        return MHD_YES;
    }
    /* A body still arriving after the deadline: close now rather than wait for the
     * watchdog's next round. */
    if (*upload_data_size > 0 && req->track != NULL &&
        hd_clock_ns() - req->start_ns > srv->opts.request_timeout_ms * 1000000) {
        slow_client_cut(srv);
        return MHD_NO;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* all consumed (kept or dropped) */
        return take_body(req, upload_data, n);
    }
    set_phase(req, PHASE_BUSY);
    finish(req);
    return queue_response(req);
}

/* Tell the observer about an answered request. Everything it sees is valid UTF-8 (see
 * hd_http_access), whatever bytes the client sent. */
static void report(hd_http_request *req)
{
    hd_http_server *srv = req->srv;
    if (!req->answered || srv->observer == NULL)
        return;
    char *method_owned, *path_owned;
    hd_http_access a = {
        .method = hd_http_method_label(req->method),
        .method_raw = utf8_or_clean(req->method ? req->method : "", &method_owned),
        .route = req->route ? req->route->pattern : HD_HTTP_ROUTE_UNMATCHED,
        .path = utf8_or_clean(req->path ? req->path : "", &path_owned),
        .status = req->status_sent,
        .duration_s = (double)(hd_clock_ns() - req->start_ns) / 1e9,
        .correlation_id = req->cid,
        .request_bytes = (size_t)req->body_seen,
        .response_bytes = req->bytes_sent,
    };
    srv->observer(&a, srv->observer_ctx);
    free(method_owned);
    free(path_owned);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    hd_http_server *srv = cls;
    hd_http_request *req = *con_cls;
    *con_cls = NULL;
    (void)conn;
    (void)toe;
    if (req != NULL) {
        report(req);
        set_phase(req, PHASE_IDLE); /* the next request line's wait starts now */
        request_free(req);
    }
    /* The last one out wakes hd_http_server_stop. Under the lock: stop checks the count and
     * waits under it, so the broadcast cannot fall between its check and its wait. */
    size_t n = atomic_load(&srv->inflight);
    while (n > 0 && !atomic_compare_exchange_weak(&srv->inflight, &n, n - 1))
        ;
    if (n == 1) {
        pthread_mutex_lock(&srv->lock);
        pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
    }
}

/* ---- start / stop ------------------------------------------------------------------------ */

int hd_http_server_start(hd_http_server *srv, hd_error *err)
{
    if (srv == NULL)
        return hd_error_set(err, HD_EINVAL, "srv is NULL");
    if (srv->state != STATE_NEW)
        return hd_error_set(err, HD_ESTATE, "the server was already started");
    const hd_http_options *o = &srv->opts;
    /* An internal listening thread; then either a thread per connection (threads == 0) or
     * a pool. MHD_USE_ITC gives the internal threads a wake-up channel, which
     * MHD_quiesce_daemon needs to stop listening while connections go on. poll(), not
     * epoll: with a thread pool and a connection limit, libmicrohttpd 0.9.75's workers take
     * the listening socket out of their epoll set when full, and MHD_quiesce_daemon racing
     * with that aborted the process ("Failed to remove listen FD from epoll set", seen once
     * in unit.http's thread-pool case). poll() keeps no such state, and herald's services
     * hold tens of connections, not the thousands epoll is for. MHD_USE_ERROR_LOG sends
     * MHD's messages to on_mhd_log. */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (o->threads == 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION;
    if (srv->ipv6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    /* MHD_OPTION_EXTERNAL_LOGGER comes first so that start-up errors reach it too. A
     * pool size of 0 or 1 means no pool. */
    srv->daemon = MHD_start_daemon(
        flags, o->port, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&srv->addr, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
        srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, srv, MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
        /* The pool option goes last and only when there is a pool: libmicrohttpd warns
         * about a size of 0, and MHD_OPTION_END in its place ends the list early. */
        o->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, o->threads, MHD_OPTION_END);
    if (srv->daemon == NULL)
        return hd_error_set(err, HD_EIO, "cannot listen on %s%s%s:%u: %s", srv->ipv6 ? "[" : "",
                            o->bind_address, srv->ipv6 ? "]" : "", (unsigned)o->port,
                            errno ? strerror(errno) : "libmicrohttpd refused");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : o->port;
    srv->wd_stop = 0;
    if (pthread_create(&srv->watchdog, NULL, watchdog_main, srv) != 0) {
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
        return hd_error_set(err, HD_ENOMEM, "cannot start the request-deadline watchdog");
    }
    srv->wd_running = 1;
    srv->state = STATE_RUNNING;
    return HD_OK;
}

int hd_http_server_stop(hd_http_server *srv)
{
    if (srv == NULL || srv->state != STATE_RUNNING)
        return HD_OK;
    atomic_store(&srv->stopping, 1);
    /* 1. Stop accepting: the listening socket leaves MHD's poll set (we close it after
     *    MHD_stop_daemon, as MHD's manual asks). New connections are refused by the OS. */
    MHD_socket listen_fd = MHD_quiesce_daemon(srv->daemon);

    /* 2. Wait until every request MHD has shown us has completed: its response is sent. */
    struct timespec deadline;
    hd_clock_deadline(&deadline, srv->opts.stop_timeout_ms);
    pthread_mutex_lock(&srv->lock);
    int rc = 0;
    while (atomic_load(&srv->inflight) > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline);
    int late = atomic_load(&srv->inflight) > 0;
    pthread_mutex_unlock(&srv->lock);

    /* 3. Close idle keep-alive connections (and, after a timeout, busy ones) and join
     *    MHD's threads. A handler still running finishes first: MHD joins, not kills. */
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    /* 4. Every connection is closed (and untracked) now: stop the watchdog. */
    if (srv->wd_running) {
        pthread_mutex_lock(&srv->track_lock);
        srv->wd_stop = 1;
        pthread_cond_signal(&srv->wd_wake);
        pthread_mutex_unlock(&srv->track_lock);
        pthread_join(srv->watchdog, NULL);
        srv->wd_running = 0;
    }
    srv->state = STATE_STOPPED;
    return late ? HD_ETIMEOUT : HD_OK;
}

/* ---- in-process dispatch ----------------------------------------------------------------- */

int hd_http_server_dispatch(hd_http_server *srv, const char *method, const char *target,
                            const char *const *headers, const char *body, size_t body_len,
                            hd_http_dispatched *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (srv == NULL || method == NULL || target == NULL || out == NULL ||
        (body == NULL && body_len > 0))
        return HD_EINVAL;
    hd_http_request *req = calloc(1, sizeof *req);
    if (req == NULL)
        return HD_ENOMEM;
    req->srv = srv;
    req->start_ns = hd_clock_ns();
    req->resp.req = req;
    req->headers = headers;
    if ((req->uri = strdup(target)) == NULL || request_begin(req, method) < 0) {
        request_free(req);
        return HD_ENOMEM;
    }
    /* The same order as over a socket: a body over the limit is refused unread (as a
     * declared Content-Length would be), else it is taken and the handler runs. */
    if (body_len > srv->opts.max_body_bytes && !req->oom) {
        req->too_big = 1;
        req->body_seen = body_len;
        if (req->resp.status == 0)
            hd_http_reply_problemf(&req->resp, 413, NULL, "the body is larger than %zu bytes",
                                   srv->opts.max_body_bytes);
    } else {
        if (body_len > 0)
            take_body(req, body, body_len);
        finish(req);
    }
    hd_http_response *r = &req->resp;
    out->status = r->status;
    out->len = r->len;
    out->body = malloc(r->len + 1);
    out->content_type = r->content_type ? strdup(r->content_type) : NULL;
    if (out->body == NULL || (r->content_type != NULL && out->content_type == NULL)) {
        request_free(req);
        hd_http_dispatched_release(out);
        return HD_ENOMEM;
    }
    if (r->len > 0)
        memcpy(out->body, r->body, r->len);
    out->body[r->len] = '\0';
    req->answered = 1;
    req->status_sent = r->status;
    req->bytes_sent = r->len;
    report(req);
    request_free(req);
    return HD_OK;
}

void hd_http_dispatched_release(hd_http_dispatched *out)
{
    if (out == NULL)
        return;
    free(out->body);
    free(out->content_type);
    memset(out, 0, sizeof *out);
}

const char *hd_http_method_label(const char *method)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; method != NULL && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(method, known[i]) == 0)
            return known[i];
    return HD_HTTP_METHOD_OTHER;
}

/* ---- request accessors ------------------------------------------------------------------- */

const char *hd_http_request_method(const hd_http_request *req)
{
    return req ? req->method : NULL;
}

const char *hd_http_request_path(const hd_http_request *req)
{
    return req ? req->path : NULL;
}

const char *hd_http_request_route(const hd_http_request *req)
{
    return req && req->route ? req->route->pattern : NULL;
}

const char *hd_http_request_param(const hd_http_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *hd_http_request_query(const hd_http_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < req->nquery; i++)
        if (strcmp(req->query[i].name, name) == 0)
            return req->query[i].value;
    return NULL;
}

int hd_http_request_query_int(const hd_http_request *req, const char *name, int64_t def,
                              int64_t min, int64_t max, int64_t *out, hd_error *err)
{
    if (req == NULL || name == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "NULL argument");
    const char *v = hd_http_request_query(req, name);
    if (v == NULL || *v == '\0') {
        *out = def;
        return HD_OK;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!(isdigit((unsigned char)*v) || *v == '-') || *end != '\0')
        return hd_error_set(err, HD_EINVAL, "query parameter '%s': '%.64s' is not an integer", name,
                            v);
    if (errno == ERANGE || n < min || n > max)
        return hd_error_set(err, HD_ERANGE,
                            "query parameter '%s': '%.64s' is out of range [%lld, %lld]", name, v,
                            (long long)min, (long long)max);
    *out = (int64_t)n;
    return HD_OK;
}

const char *hd_http_request_header(const hd_http_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    if (req->conn != NULL)
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
    for (const char *const *h = req->headers; h != NULL && h[0] != NULL && h[1] != NULL; h += 2)
        if (strcasecmp(h[0], name) == 0)
            return h[1];
    return NULL;
}

const char *hd_http_request_body(const hd_http_request *req, size_t *len)
{
    if (len != NULL)
        *len = req && req->body ? req->body_len : 0;
    return req && req->body ? req->body : "";
}

const char *hd_http_request_correlation_id(const hd_http_request *req)
{
    return req ? req->cid : NULL;
}

int hd_http_request_client_address(const hd_http_request *req, char *out, size_t cap)
{
    if (out == NULL || cap == 0)
        return HD_EINVAL;
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        req && req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS)
                         : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    const char *ok = NULL;
    if (sa != NULL && sa->sa_family == AF_INET)
        ok = inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                       (socklen_t)cap);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        ok = inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                       (socklen_t)cap);
    if (ok == NULL) {
        out[0] = '\0';
        return HD_EINVAL;
    }
    return 0;
}

/* application/json, or a structured syntax suffix (RFC 6839) such as
 * application/problem+json; parameters (charset) are ignored, case does not matter. */
static int is_json_media_type(const char *ct)
{
    if (ct == NULL)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

int hd_http_request_json(const hd_http_request *req, json_t **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (req == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "NULL argument");
    const char *ct = hd_http_request_header(req, "Content-Type");
    if (!is_json_media_type(ct))
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "Content-Type must be application/json (got %s%.64s%s)", ct ? "'" : "",
                            ct ? ct : "none", ct ? "'" : "");
    size_t len;
    const char *body = hd_http_request_body(req, &len);
    if (len == 0)
        return hd_error_set(err, HD_EMISSING,
                            "the request body is empty; expected a JSON document");
    json_error_t je;
    /* Duplicate keys are refused: {"role":"user","role":"admin"} means different things to
     * different parsers, and that difference is a classic way past a validator. */
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return hd_error_set(err, HD_EJSON, "malformed JSON at line %d, column %d: %s", je.line,
                            je.column, je.text);
    *out = j;
    return HD_OK;
}

/* ---- responses --------------------------------------------------------------------------- */

/* Reason phrases of RFC 9110 (which renamed 413 and 422), for the statuses an API uses. */
static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {409, "Conflict"},
    {410, "Gone"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Content"},
    {429, "Too Many Requests"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

const char *hd_http_reason(int status)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Unknown";
}

/* Any failure while building a reply leaves a bare 500: a half-built response must never
 * go out with the status the handler asked for. */
static int reply_fail(hd_http_response *r, int code)
{
    stream_drop(r);
    free(r->body);
    free(r->content_type);
    r->body = NULL;
    r->content_type = NULL;
    r->len = 0;
    r->status = 500;
    return code;
}

/* Install status, content type (copied; NULL for none) and body (owned, may be NULL). */
static int reply_set(hd_http_response *r, int status, const char *content_type, char *body,
                     size_t len)
{
    if (r == NULL) {
        free(body);
        return HD_EINVAL;
    }
    if (status < 100 || status > 599) {
        free(body);
        return reply_fail(r, HD_EINVAL);
    }
    char *ct = content_type ? strdup(content_type) : NULL;
    if (content_type != NULL && ct == NULL) {
        free(body);
        return reply_fail(r, HD_ENOMEM);
    }
    stream_drop(r);
    free(r->body);
    free(r->content_type);
    r->status = status;
    r->content_type = ct;
    r->body = body;
    r->len = body ? len : 0;
    return HD_OK;
}

/* j as compact JSON text (new, malloc'd, NUL-terminated) and its length; NULL when it
 * cannot be encoded or memory runs out. One pass into a stack buffer and one allocation
 * of the exact size: json_dumps grows its buffer from 16 bytes by doubling and copies the
 * result once more (a realloc or five and a strdup for a user's JSON). */
static char *dump_compact(const json_t *j, size_t flags, size_t *len)
{
    char stack[2048];
    size_t n = json_dumpb(j, stack, sizeof stack, flags);
    if (n == 0)
        return NULL; /* jansson writes at least "{}" for anything it can encode */
    char *text = malloc(n + 1);
    if (text == NULL)
        return NULL;
    if (n <= sizeof stack)
        memcpy(text, stack, n);
    else if (json_dumpb(j, text, n, flags) != n) {
        free(text);
        return NULL;
    }
    text[n] = '\0';
    *len = n;
    return text;
}

int hd_http_reply_json(hd_http_response *resp, int status, json_t *body)
{
    if (body == NULL)
        return resp ? reply_fail(resp, HD_EINVAL) : HD_EINVAL;
    size_t len = 0;
    char *text = dump_compact(body, JSON_COMPACT | JSON_ENCODE_ANY, &len);
    json_decref(body);
    if (text == NULL)
        return resp ? reply_fail(resp, HD_ENOMEM) : HD_ENOMEM;
    return reply_set(resp, status, "application/json", text, len);
}

int hd_http_reply_jsonw(hd_http_response *resp, int status, hd_jsonw *w)
{
    if (w == NULL)
        return resp ? reply_fail(resp, HD_EINVAL) : HD_EINVAL;
    size_t len = 0;
    char *text = hd_jsonw_take(w, &len);
    if (text == NULL)
        return resp ? reply_fail(resp, HD_ENOMEM) : HD_ENOMEM;
    return reply_set(resp, status, "application/json", text, len);
}

int hd_http_reply_text(hd_http_response *resp, int status, const char *content_type,
                       const char *text)
{
    char *copy = strdup(text ? text : "");
    if (copy == NULL)
        return resp ? reply_fail(resp, HD_ENOMEM) : HD_ENOMEM;
    return reply_set(resp, status, content_type ? content_type : "text/plain; charset=utf-8", copy,
                     strlen(copy));
}

int hd_http_reply_empty(hd_http_response *resp, int status)
{
    return reply_set(resp, status, NULL, NULL, 0);
}

int hd_http_reply_stream(hd_http_response *resp, int status, const char *content_type,
                         hd_http_stream_read read, hd_http_stream_free free_fn, void *ctx)
{
    if (resp == NULL || read == NULL) {
        if (free_fn != NULL)
            free_fn(ctx);
        return resp ? reply_fail(resp, HD_EINVAL) : HD_EINVAL;
    }
    int rc =
        reply_set(resp, status, content_type ? content_type : "application/octet-stream", NULL, 0);
    if (rc < 0) {
        if (free_fn != NULL)
            free_fn(ctx);
        return rc;
    }
    resp->stream_read = read;
    resp->stream_free = free_fn;
    resp->stream_ctx = ctx;
    return HD_OK;
}

int hd_http_reply_problem_json(hd_http_response *resp, int status, json_t *problem)
{
    if (resp == NULL || problem == NULL || !json_is_object(problem)) {
        json_decref(problem);
        return resp ? reply_fail(resp, HD_EINVAL) : HD_EINVAL;
    }
    int ok = 1;
    if (json_object_get(problem, "type") == NULL)
        ok &= json_object_set_new(problem, "type", json_string("about:blank")) == 0;
    if (json_object_get(problem, "title") == NULL)
        ok &= json_object_set_new(problem, "title", json_string(hd_http_reason(status))) == 0;
    /* The status member repeats the HTTP status (RFC 7807 3.1): make sure they agree. */
    ok &= json_object_set_new(problem, "status", json_integer(status)) == 0;
    if (json_object_get(problem, "instance") == NULL && resp->req && resp->req->path) {
        char *clean;
        const char *instance = utf8_or_clean(resp->req->path, &clean);
        ok &= json_object_set_new(problem, "instance", json_string(instance)) == 0;
        free(clean);
    }
    size_t len = 0;
    char *text = ok ? dump_compact(problem, JSON_COMPACT, &len) : NULL;
    json_decref(problem);
    if (text == NULL)
        return reply_fail(resp, HD_ENOMEM);
    return reply_set(resp, status, "application/problem+json", text, len);
}

int hd_http_reply_problem(hd_http_response *resp, int status, const char *title, const char *detail)
{
    /* Members in the order RFC 7807 lists them, which is also the order a reader wants.
     * A detail may quote the client ("'%.64s' is not an integer") and so carry bytes that
     * are not UTF-8, or a character cut in half: cleaned, never a reason to fail. */
    char *title_owned, *detail_owned;
    title = utf8_or_clean(title ? title : hd_http_reason(status), &title_owned);
    detail = utf8_or_clean(detail, &detail_owned);
    json_t *p = json_object();
    int ok = p != NULL;
    ok = ok && json_object_set_new(p, "type", json_string("about:blank")) == 0;
    ok = ok && json_object_set_new(p, "title", json_string(title)) == 0;
    ok = ok && json_object_set_new(p, "status", json_integer(status)) == 0;
    if (ok && detail != NULL)
        ok = json_object_set_new(p, "detail", json_string(detail)) == 0;
    free(title_owned);
    free(detail_owned);
    if (!ok) {
        json_decref(p);
        return resp ? reply_fail(resp, HD_ENOMEM) : HD_ENOMEM;
    }
    return hd_http_reply_problem_json(resp, status, p);
}

int hd_http_reply_problemf(hd_http_response *resp, int status, const char *title,
                           const char *detail_fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof detail, detail_fmt, ap);
    va_end(ap);
    return hd_http_reply_problem(resp, status, title, detail);
}

int hd_http_status_for_error(int code)
{
    switch (code) {
    case HD_EINVAL:
    case HD_EJSON:
    case HD_EMISSING:
    case HD_ETYPE:
    case HD_ERANGE:
    case HD_EURL:
        return 400;
    case HD_EAUTH:
        return 401;
    case HD_ENOTFOUND:
        return 404;
    case HD_EEXIST:
    case HD_ESTATE:
        return 409;
    case HD_ETOOBIG:
        return 413;
    case HD_EUNSUPPORTED:
        return 415;
    case HD_EVALIDATE:
        return 422;
    case HD_EBUSY:
    case HD_ETIMEOUT:
        return 503;
    default:
        return 500;
    }
}

int hd_http_reply_error(hd_http_response *resp, int code, const char *detail)
{
    int status = hd_http_status_for_error(code);
    if (status < 500)
        return hd_http_reply_problem(resp, status, NULL, detail ? detail : hd_strerror(code));
    /* Server-side failures: the detail may hold SQL, file names or addresses. It goes to
     * the log under the correlation id; the client gets the id to quote. */
    const char *cid = resp && resp->req ? resp->req->cid : "";
    hd_logger *lg = resp && resp->req ? resp->req->srv->opts.logger : NULL;
    hd_log(lg, HD_LOG_ERROR, cid, "request failed", "error", hd_err_name(code), "detail",
           detail ? detail : hd_strerror(code), NULL);
    return hd_http_reply_problemf(resp, status, NULL,
                                  "the request could not be completed; quote correlation id %s "
                                  "when reporting this",
                                  cid);
}

int hd_http_response_set_header(hd_http_response *resp, const char *name, const char *value)
{
    if (resp == NULL || name == NULL || *name == '\0' || value == NULL)
        return HD_EINVAL;
    for (const char *p = name; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return HD_EINVAL;
    if (strpbrk(value, "\r\n") != NULL)
        return HD_EINVAL;
    char *v = strdup(value);
    if (v == NULL)
        return HD_ENOMEM;
    for (size_t i = 0; i < resp->nheaders; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0) {
            free(resp->headers[i].value);
            resp->headers[i].value = v;
            return HD_OK;
        }
    }
    char *n = strdup(name);
    if (n == NULL || resp->nheaders == resp->cap) {
        size_t cap = resp->cap ? resp->cap * 2 : 4;
        struct header *grown = n ? realloc(resp->headers, cap * sizeof *grown) : NULL;
        if (grown == NULL) {
            free(n);
            free(v);
            return HD_ENOMEM;
        }
        resp->headers = grown;
        resp->cap = cap;
    }
    resp->headers[resp->nheaders++] = (struct header){n, v};
    return HD_OK;
}

/* ---- credentials ------------------------------------------------------------------------- */

/* Compare in time that depends only on the expected token's length, never on where the
 * first difference is: an early `return 0` at the first wrong byte lets an attacker find
 * the token byte by byte by timing the 401s. The differences are OR-ed together and
 * looked at once, at the end; volatile keeps the compiler from adding an early exit. */
static int token_equal(const char *given, const char *expected)
{
    size_t n = strlen(expected), m = strlen(given);
    volatile unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < m ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)expected[i]);
    }
    return diff == 0;
}

int hd_http_require_bearer(const hd_http_request *req, hd_http_response *resp,
                           const char *expected_token)
{
    const char *h = hd_http_request_header(req, "Authorization");
    const char *token = NULL;
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        token = h + 7;
        while (*token == ' ')
            token++;
        if (*token == '\0')
            token = NULL;
    }
    if (token != NULL && expected_token != NULL && *expected_token != '\0' &&
        token_equal(token, expected_token))
        return HD_OK;
    /* RFC 6750 3.1: no credential -> just the challenge; a wrong one -> invalid_token. */
    hd_http_reply_problem(resp, 401, NULL,
                          token ? "the bearer credential is not valid"
                                : "this endpoint needs an Authorization: Bearer credential");
    hd_http_response_set_header(resp, "WWW-Authenticate",
                                token ? "Bearer realm=\"herald\", error=\"invalid_token\""
                                      : "Bearer realm=\"herald\"");
    return HD_EAUTH;
}

/* ---- access log -------------------------------------------------------------------------- */

void hd_http_log_access(hd_logger *lg, const hd_http_access *a)
{
    if (a == NULL || !hd_logger_enabled(lg ? lg : hd_log_default(), HD_LOG_INFO))
        return;
    /* The path without its query: ?email=... must not reach the log. The observer's
     * strings are valid UTF-8 already; an access built by hand may not be, and json_pack
     * would refuse it and lose the whole line. */
    char *m_owned, *r_owned, *p_owned;
    const char *method = utf8_or_clean(a->method_raw ? a->method_raw : a->method, &m_owned);
    const char *route = utf8_or_clean(a->route, &r_owned);
    const char *path = utf8_or_clean(a->path, &p_owned);
    /* Whole nanoseconds over 10^6: log.c writes such a value from its integer, without a
     * printf and a strtod, where duration_s * 1000 would take 16 or 17 digits a quarter of
     * the time (0.31927499999999998) and the slow path three times in four (callgrind). */
    double ms = (double)(long long)(a->duration_s * 1e9 + 0.5) / 1e6;
    /* hd_log_fields, not json_pack + hd_log_json: the same line without an object of the
     * fields built, redacted and copied into the line (a tenth of a GET /users/{id}). The
     * _behind form: with a logger that writes behind (HD_LOG_FLUSH_MS), the line waits for
     * one write(2) shared with the others instead of costing one of its own. */
    const hd_log_field fields[] = {
        {.key = "method", .s = method ? method : ""},
        {.key = "route", .s = route ? route : ""},
        {.key = "path", .s = path ? path : ""},
        {.key = "status", .kind = HD_LOG_INT, .i = a->status},
        {.key = "duration_ms", .kind = HD_LOG_REAL, .r = ms},
        {.key = "request_bytes", .kind = HD_LOG_INT, .i = (long long)a->request_bytes},
        {.key = "response_bytes", .kind = HD_LOG_INT, .i = (long long)a->response_bytes},
    };
    hd_log_fields_behind(lg, HD_LOG_INFO, a->correlation_id, "http request", fields,
                         sizeof fields / sizeof fields[0]);
    free(m_owned);
    free(r_owned);
    free(p_owned);
}
