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
 */
#include "herald/http.h"
#include "herald/clock.h"

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
    pthread_mutex_t lock; /* guards inflight */
    pthread_cond_t idle;  /* signalled when inflight drops to 0 */
    size_t inflight;
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
};

struct hd_http_request {
    hd_http_server *srv;
    struct MHD_Connection *conn;
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
    int ok = pthread_mutex_init(&srv->lock, NULL) == 0;
    if (ok && pthread_cond_init(&srv->idle, &ca) != 0) {
        pthread_mutex_destroy(&srv->lock);
        ok = 0;
    }
    pthread_condattr_destroy(&ca);
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

static void response_release(hd_http_response *r)
{
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
    if (req->bad_target) {
        hd_http_reply_problem(resp, 400, NULL, "the query string is not valid percent-encoding");
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

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    hd_http_server *srv = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    hd_log(srv->opts.logger, HD_LOG_WARN, NULL, "libmicrohttpd", "detail", msg, NULL);
}

/* MHD calls this once per request, as soon as the request line is read, with the raw
 * target — before it decodes anything. We take the request from here: decoding ourselves
 * is what lets "/users/a%2Fb" reach "/users/{id}". Whatever we return becomes *con_cls,
 * and MHD promises on_completed for every request it was shown to (even if the client
 * disconnects before the headers are in), so the in-flight count cannot leak. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    hd_http_server *srv = cls;
    pthread_mutex_lock(&srv->lock);
    srv->inflight++;
    pthread_mutex_unlock(&srv->lock);
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
    return req;
}

static enum MHD_Result queue_response(hd_http_request *req)
{
    hd_http_response *r = &req->resp;
    struct MHD_Response *mr;
    if (r->len > 0) {
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
        req->started = 1;
        req->conn = conn;
        const char *q = strchr(req->uri, '?');
        req->method = strdup(method);
        req->path = strndup(req->uri, q ? (size_t)(q - req->uri) : strlen(req->uri));
        if (req->method == NULL || req->path == NULL)
            return MHD_NO;
        if (q != NULL) {
            int rc = parse_query(req, q + 1);
            if (rc == HD_ENOMEM)
                return MHD_NO;
            req->bad_target = rc != HD_OK;
        }
        const char *cid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Correlation-Id");
        if (valid_correlation_id(cid))
            strcpy(req->cid, cid);
        else
            hd_uuid_v4(req->cid);
        resolve(req);
        /* A declared length over the limit is refused before a byte of it is read. MHD
         * then closes the connection after the answer, since the body was not consumed. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl != NULL && strtoull(cl, NULL, 10) > srv->opts.max_body_bytes && !req->oom) {
            req->too_big = 1;
            if (req->resp.status == 0) /* else a 404 / 405 from resolve says more */
                hd_http_reply_problemf(&req->resp, 413, NULL, "the body is larger than %zu bytes",
                                       srv->opts.max_body_bytes);
            return queue_response(req);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* all consumed (kept or dropped) */
        return take_body(req, upload_data, n);
    }
    finish(req);
    return queue_response(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    hd_http_server *srv = cls;
    hd_http_request *req = *con_cls;
    *con_cls = NULL;
    if (req != NULL) {
        if (req->answered && srv->observer != NULL) {
            hd_http_access a = {
                .method = req->method,
                .route = req->route ? req->route->pattern : HD_HTTP_ROUTE_UNMATCHED,
                .path = req->path,
                .status = req->status_sent,
                .duration_s = (double)(hd_clock_ns() - req->start_ns) / 1e9,
                .correlation_id = req->cid,
                .request_bytes = (size_t)req->body_seen,
                .response_bytes = req->bytes_sent,
            };
            srv->observer(&a, srv->observer_ctx);
        }
        request_free(req);
    }
    pthread_mutex_lock(&srv->lock);
    if (srv->inflight > 0 && --srv->inflight == 0)
        pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
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
     * MHD_quiesce_daemon needs to stop listening while connections go on. MHD_USE_AUTO
     * picks epoll/poll/select; MHD_USE_ERROR_LOG sends MHD's messages to on_mhd_log. */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;
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
        srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT,
        o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
        /* The pool option goes last and only when there is a pool: libmicrohttpd warns
         * about a size of 0, and MHD_OPTION_END in its place ends the list early. */
        o->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, o->threads,
        MHD_OPTION_END);
    if (srv->daemon == NULL)
        return hd_error_set(err, HD_EIO, "cannot listen on %s%s%s:%u: %s", srv->ipv6 ? "[" : "",
                            o->bind_address, srv->ipv6 ? "]" : "", (unsigned)o->port,
                            errno ? strerror(errno) : "libmicrohttpd refused");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : o->port;
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
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += srv->opts.stop_timeout_ms / 1000;
    deadline.tv_nsec += (srv->opts.stop_timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&srv->lock);
    int rc = 0;
    while (srv->inflight > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline);
    int late = srv->inflight > 0;
    pthread_mutex_unlock(&srv->lock);

    /* 3. Close idle keep-alive connections (and, after a timeout, busy ones) and join
     *    MHD's threads. A handler still running finishes first: MHD joins, not kills. */
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    srv->state = STATE_STOPPED;
    return late ? HD_ETIMEOUT : HD_OK;
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
    if (req == NULL || name == NULL || req->conn == NULL)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
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
    free(r->body);
    free(r->content_type);
    r->status = status;
    r->content_type = ct;
    r->body = body;
    r->len = body ? len : 0;
    return HD_OK;
}

int hd_http_reply_json(hd_http_response *resp, int status, json_t *body)
{
    if (body == NULL)
        return resp ? reply_fail(resp, HD_EINVAL) : HD_EINVAL;
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (text == NULL)
        return resp ? reply_fail(resp, HD_ENOMEM) : HD_ENOMEM;
    return reply_set(resp, status, "application/json", text, strlen(text));
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
    if (json_object_get(problem, "instance") == NULL && resp->req && resp->req->path)
        ok &= json_object_set_new(problem, "instance", json_string(resp->req->path)) == 0;
    char *text = ok ? json_dumps(problem, JSON_COMPACT) : NULL;
    json_decref(problem);
    if (text == NULL)
        return reply_fail(resp, HD_ENOMEM);
    return reply_set(resp, status, "application/problem+json", text, strlen(text));
}

int hd_http_reply_problem(hd_http_response *resp, int status, const char *title, const char *detail)
{
    /* Members in the order RFC 7807 lists them, which is also the order a reader wants. */
    json_t *p = json_object();
    int ok = p != NULL;
    ok = ok && json_object_set_new(p, "type", json_string("about:blank")) == 0;
    ok = ok &&
         json_object_set_new(p, "title", json_string(title ? title : hd_http_reason(status))) == 0;
    ok = ok && json_object_set_new(p, "status", json_integer(status)) == 0;
    if (ok && detail != NULL)
        ok = json_object_set_new(p, "detail", json_string(detail)) == 0;
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
    /* The path without its query: ?email=... must not reach the log. */
    hd_log_json(lg, HD_LOG_INFO, a->correlation_id, "http request",
                json_pack("{s:s, s:s, s:s, s:i, s:f, s:I, s:I}", "method",
                          a->method ? a->method : "", "route", a->route ? a->route : "", "path",
                          a->path ? a->path : "", "status", a->status, "duration_ms",
                          a->duration_s * 1000.0, "request_bytes", (json_int_t)a->request_bytes,
                          "response_bytes", (json_int_t)a->response_bytes));
}
