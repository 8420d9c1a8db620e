/* herald/http.h — a small JSON HTTP router over libmicrohttpd.
 *
 * The example services expose a few JSON endpoints each. This module does the parts every
 * endpoint needs and that are easy to get subtly wrong, once: route matching with path
 * parameters, URL decoding, a hard limit on body size, JSON parsing with a useful error,
 * RFC 7807 problem responses, bearer credentials compared in constant time, a correlation
 * id on every request, and a graceful stop. Handlers see only hd_http_request and
 * hd_http_response; no libmicrohttpd type appears in this header.
 *
 *     static void get_user(hd_http_request *req, hd_http_response *resp, void *ctx)
 *     {
 *         const char *id = hd_http_request_param(req, "id");      // decoded path segment
 *         json_t *user = find_user(ctx, id);                       // new reference
 *         if (user == NULL)
 *             hd_http_reply_problem(resp, 404, NULL, "no user with this id");
 *         else
 *             hd_http_reply_json(resp, 200, user);                 // user stolen
 *     }
 *
 *     hd_http_server *srv;
 *     hd_http_options opts = {.port = 8080};                      // zero fields = defaults
 *     hd_http_server_new(&opts, &srv, &err);
 *     hd_http_route(srv, "GET", "/users/{id}", get_user, db);
 *     hd_http_server_start(srv, &err);
 *     ...                                                          // until SIGTERM
 *     hd_http_server_stop(srv);                                    // drains in-flight requests
 *     hd_http_server_free(srv);
 *
 * Routing. A pattern is a path whose segments are literals or "{name}"; a parameter
 * matches exactly one non-empty segment, and its value is percent-decoded after the path
 * is split, so "/users/a%2Fb" gives id "a/b" instead of a different route. Among the
 * routes whose pattern matches the path, the one registered for the request's method wins;
 * when several do, the most specific (a literal beats a parameter, comparing left to
 * right), so "POST /users/verify" and "GET /users/{id}" live side by side. HEAD is served
 * by the GET route (without a body). The built-in answers, all application/problem+json:
 *   - no pattern matches the path: 404;
 *   - patterns match but none for this method: 405 with an Allow header;
 *   - a body larger than max_body_bytes: 413 — a declared Content-Length is refused before
 *     a byte is read; a chunked body is counted while it streams, never buffered past the
 *     limit, and the connection is cut if the client keeps sending;
 *   - a request target that is not valid percent-encoding: 400;
 *   - a method that is not an HTTP token, or a request target with control characters or
 *     bytes that are not UTF-8 (raw, or once percent-decoded in the path or the query):
 *     400 — such bytes cannot be echoed in a JSON problem, a log line or a metric label;
 *   - a handler that sets no reply: 500.
 * Trailing slashes are significant: "/users/" does not match "/users".
 *
 * Slow clients. libmicrohttpd's idle timeout counts inactivity, so a client that sends one
 * byte a second is never idle and holds its connection (and, with a thread per connection,
 * a thread) forever; a handful of them fill max_connections and lock everybody out. Two
 * limits stop that: per_ip_connection_limit caps what one address may hold, so a few
 * slow sockets from one place leave the other slots free; request_timeout_ms bounds the
 * whole request, from its request line to the last byte of its body, however steadily
 * it trickles (and the request line itself must come within idle_timeout_s +
 * request_timeout_ms of the connection's start or of the previous response). A request
 * past its deadline loses its connection without an answer (libmicrohttpd cannot answer
 * in the middle of an upload); a warning is logged at most once per
 * HD_HTTP_WARN_INTERVAL_S with the count of the ones suppressed. The handler's own time
 * and the sending of the response do not count: responses are small enough for the
 * socket buffer, and the idle timeout covers a client that stops reading.
 *
 * Threads. With the default threads = 0, libmicrohttpd runs one thread per connection
 * (MHD_USE_THREAD_PER_CONNECTION with an internal listening thread): handlers of different
 * connections run CONCURRENTLY, and a slow handler (a database query) delays only its own
 * connection. threads = N > 0 uses a pool of N polling threads instead (fewer threads,
 * but a blocking handler stalls every connection of its pool thread). Either way, handlers
 * and the observer must be thread-safe, and whatever their ctx points to is shared between
 * threads. Routes are registered before hd_http_server_start and never change after it,
 * which is why matching needs no lock.
 *
 * Ownership: requests and responses belong to the server and live for one handler call;
 * every string a request returns is borrowed until the handler returns. JSON handed to a
 * reply function is stolen (also on failure), the way json_object_set_new steals.
 */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "herald/error.h"
#include "herald/jsonw.h"
#include "herald/log.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_HTTP_DEFAULT_ADDRESS            "127.0.0.1"
#define HD_HTTP_DEFAULT_MAX_BODY           (64 * 1024)
#define HD_HTTP_DEFAULT_MAX_CONNECTIONS    256
#define HD_HTTP_DEFAULT_IDLE_TIMEOUT_S     30
#define HD_HTTP_DEFAULT_STOP_TIMEOUT_MS    10000
#define HD_HTTP_DEFAULT_PER_IP_CONNECTIONS 32
#define HD_HTTP_DEFAULT_REQUEST_TIMEOUT_MS 10000

/* At most one "slow client cut" warning (and one libmicrohttpd message) per this many
 * seconds; the next one says how many were suppressed in between. A flood of slow or
 * refused connections must not become a flood of log lines. */
#define HD_HTTP_WARN_INTERVAL_S 10

/* The route label given to the observer for requests that matched no route: a constant,
 * so that probes of random paths cannot create new metric series. */
#define HD_HTTP_ROUTE_UNMATCHED "unmatched"

/* Correlation ids longer than this, or with characters outside [A-Za-z0-9._:-], are
 * replaced by a fresh UUID: the value goes into log lines and response headers. */
#define HD_HTTP_CORRELATION_MAX 128

typedef struct hd_http_server hd_http_server;
typedef struct hd_http_request hd_http_request;
typedef struct hd_http_response hd_http_response;

/* A route's handler: read req, fill resp with one of the hd_http_reply_* functions. ctx is
 * the pointer given to hd_http_route. Runs on a libmicrohttpd thread, concurrently with
 * other handlers. */
typedef void (*hd_http_handler)(hd_http_request *req, hd_http_response *resp, void *ctx);

/* The method label given to the observer for any method outside the fixed set (see
 * hd_http_method_label). */
#define HD_HTTP_METHOD_OTHER "other"

/* What the observer learns about each answered request. All strings are borrowed for the
 * duration of the call and are valid UTF-8 (raw bytes a client sent that are not are
 * replaced by U+FFFD), so they can go into JSON log lines and metric labels as they are. */
typedef struct hd_http_access {
    const char *method;     /* hd_http_method_label() of the request's method: one of a
                               fixed set, safe as a metric label */
    const char *method_raw; /* the method as sent (for logs, never labels): a client can
                               invent any number of methods */
    const char *route;      /* the PATTERN ("/users/{id}"), or HD_HTTP_ROUTE_UNMATCHED */
    const char *path;       /* the raw path as sent, without the query: for logs, never labels */
    int status;
    double duration_s; /* from the request line to the last byte of the response */
    const char *correlation_id;
    size_t request_bytes;  /* body bytes received */
    size_t response_bytes; /* body bytes sent */
} hd_http_access;

/* Called once per answered request, after the response was sent (or the client went
 * away), on a server thread and concurrently: count and time requests here, write the
 * access log here. Requests dropped before any answer (a client that disconnects while
 * uploading) are not reported. */
typedef void (*hd_http_observer)(const hd_http_access *access, void *ctx);

/* Options; a zeroed struct (or NULL) means all defaults. */
typedef struct hd_http_options {
    const char *bind_address; /* numeric IPv4 or IPv6 address; NULL = "127.0.0.1" (use
                                 "0.0.0.0" or "::" deliberately, to listen everywhere) */
    uint16_t port;            /* 0 = an ephemeral port: read it with hd_http_server_port */
    size_t max_body_bytes;    /* 0 = 64 KiB */
    unsigned threads;         /* 0 = a thread per connection; N = a pool of N threads */
    unsigned max_connections; /* 0 = 256 */
    unsigned idle_timeout_s;  /* close idle keep-alive connections after; 0 = 30 s */
    int64_t stop_timeout_ms;  /* how long hd_http_server_stop waits; 0 = 10 s */
    hd_logger *logger;        /* borrowed; for libmicrohttpd's own messages and 5xx
                                 details; NULL = the default logger */
    /* Slow clients (see "Slow clients" above). */
    unsigned per_ip_connection_limit; /* connections one client address may hold at once;
                                         0 = 32. Behind a reverse proxy every client has the
                                         proxy's address: raise it to max_connections there */
    int64_t request_timeout_ms;       /* whole-request deadline, from the request line to
                                         the last byte of the body; 0 = 10 s */
} hd_http_options;

/* ---- the server -------------------------------------------------------------------------- */

/* A new server (not yet listening) with a copy of opts (NULL = defaults). Returns 0 and
 * *out (new, free with hd_http_server_free), or HD_EINVAL (bad bind address) / HD_ENOMEM. */
int hd_http_server_new(const hd_http_options *opts, hd_http_server **out, hd_error *err);

/* Route method (e.g. "GET"; copied) + pattern (copied) to handler with ctx (borrowed, never
 * freed by the server). Only before hd_http_server_start. Returns 0; HD_EINVAL for a
 * pattern that does not start with '/', has an empty or malformed "{name}" segment, or
 * repeats a parameter name; HD_EEXIST when this method and pattern are already routed;
 * HD_ESTATE after start; HD_ENOMEM. */
int hd_http_route(hd_http_server *srv, const char *method, const char *pattern,
                  hd_http_handler handler, void *ctx);

/* Call fn(access, ctx) after every answered request (see hd_http_observer); ctx borrowed.
 * Only before start. One observer per server; NULL removes it. */
void hd_http_server_observe(hd_http_server *srv, hd_http_observer fn, void *ctx);

/* Bind, listen and start serving on libmicrohttpd's threads; returns at once. Returns 0,
 * HD_ESTATE (already started or stopped), or HD_EIO with err->text naming the address
 * ("cannot listen on 127.0.0.1:8080: Address already in use"). */
int hd_http_server_start(hd_http_server *srv, hd_error *err);

/* The port the server listens on (the ephemeral one when opts.port was 0); 0 before start. */
uint16_t hd_http_server_port(const hd_http_server *srv);

/* Graceful stop: stop accepting connections, let every request already received finish
 * and its response go out (those answered while stopping carry "Connection: close"), then
 * shut the threads down. Waits at most stop_timeout_ms for the in-flight requests, then
 * closes whatever is left. Returns 0, or HD_ETIMEOUT when requests were still running at
 * the deadline. Calling it again, or on a server never started, does nothing. */
int hd_http_server_stop(hd_http_server *srv);

/* 1 from the start of hd_http_server_stop on: a /health handler can answer 503 so that a
 * load balancer stops sending traffic while the server drains. */
int hd_http_server_stopping(const hd_http_server *srv);

/* Stop (if running) and free srv. NULL allowed. */
void hd_http_server_free(hd_http_server *srv);

/* The method as a metric label: "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE" or
 * "OPTIONS" when method is one of them (exactly, case-sensitive as RFC 9110 says), else
 * HD_HTTP_METHOD_OTHER. Label values must come from a small closed set; methods are
 * chosen by the client, and every invented one would otherwise add a series. Borrowed
 * (a static string). */
const char *hd_http_method_label(const char *method);

/* ---- in-process dispatch (tests and fuzzing) --------------------------------------------- */

/* What hd_http_server_dispatch answered. */
typedef struct hd_http_dispatched {
    int status;
    char *content_type; /* new, NULL when the reply has none */
    char *body;         /* new, NUL-terminated ("" for none) */
    size_t len;
} hd_http_dispatched;

/* Run one request through the router, the handlers and the observer, as if it had come
 * over a socket, without one: for tests and fuzz targets, which need the whole path from
 * the request line to the reply with none of the network. method and target (the raw
 * request target, "/users/a%2Fb?x=1") are taken byte for byte, as a client could send
 * them; headers is NULL or a NULL-terminated array of name, value, name, value, ...
 * (borrowed; looked up case-insensitively); body of body_len bytes (borrowed; may be NULL
 * when body_len is 0). Works before hd_http_server_start (routes must be registered) and
 * concurrently with served requests. Fills *out (release with
 * hd_http_dispatched_release) and returns 0, or HD_EINVAL / HD_ENOMEM. */
int hd_http_server_dispatch(hd_http_server *srv, const char *method, const char *target,
                            const char *const *headers, const char *body, size_t body_len,
                            hd_http_dispatched *out);

/* Free what out holds (not out itself) and zero it. NULL allowed. */
void hd_http_dispatched_release(hd_http_dispatched *out);

/* ---- the request (valid during the handler call; strings borrowed) ---------------------- */

const char *hd_http_request_method(const hd_http_request *req);

/* The raw path as sent, without the query string ("/users/a%2Fb"). */
const char *hd_http_request_path(const hd_http_request *req);

/* The pattern of the matched route ("/users/{id}"). */
const char *hd_http_request_route(const hd_http_request *req);

/* A path parameter by its name in the pattern, percent-decoded; NULL if there is none. */
const char *hd_http_request_param(const hd_http_request *req, const char *name);

/* A query parameter, decoded ("+" and %20 are spaces); "" for "?flag", NULL when absent.
 * When a name repeats, the first value. */
const char *hd_http_request_query(const hd_http_request *req, const char *name);

/* A query parameter as an integer in [min, max], def when absent or empty. Returns 0, or
 * HD_EINVAL / HD_ERANGE with err->text ("query parameter 'limit': 'x' is not an integer")
 * that hd_http_reply_error turns into a 400. */
int hd_http_request_query_int(const hd_http_request *req, const char *name, int64_t def,
                              int64_t min, int64_t max, int64_t *out, hd_error *err);

/* A request header by name, case-insensitive; NULL when absent. */
const char *hd_http_request_header(const hd_http_request *req, const char *name);

/* The body (NUL-terminated for convenience, though it may contain NULs) and its length
 * (len may be NULL); "" and 0 when there is none. */
const char *hd_http_request_body(const hd_http_request *req, size_t *len);

/* The correlation id: the client's X-Correlation-Id when it is well-formed, else a new
 * UUID. Always set; echoed in the X-Correlation-Id response header. Pass it to hd_log
 * and to the envelopes the request causes. */
const char *hd_http_request_correlation_id(const hd_http_request *req);

#define HD_HTTP_ADDRESS_MAX 46 /* INET6_ADDRSTRLEN, the NUL included */

/* The client's numeric address ("127.0.0.1", "2001:db8::1") into out (cap bytes, at least
 * HD_HTTP_ADDRESS_MAX): the TCP peer, not a header, so a client cannot choose it (behind a
 * proxy it is the proxy's). Returns 0, or HD_EINVAL ("" in out) when it is unknown. */
int hd_http_request_client_address(const hd_http_request *req, char *out, size_t cap);

/* Parse the body as JSON into *out (a NEW reference: json_decref it). Refuses, with a text
 * fit for the client: a Content-Type other than application/json or application/<x>+json
 * (HD_EUNSUPPORTED, 415), an empty body (HD_EMISSING, 400), malformed JSON or duplicate
 * keys (HD_EJSON, 400: "malformed JSON at line 1, column 9: ..."). Typical use:
 *     if (hd_http_request_json(req, &in, &err) < 0) {
 *         hd_http_reply_error(resp, err.code, err.text);
 *         return;
 *     } */
int hd_http_request_json(const hd_http_request *req, json_t **out, hd_error *err);

/* ---- the response ------------------------------------------------------------------------ */

/* Each reply_* function sets the status and the body, replacing an earlier reply (headers
 * set so far are kept). They return 0, or HD_EINVAL / HD_ENOMEM, in which case the
 * response becomes a bare 500 — a handler can ignore the result. */

/* body (stolen) serialised compactly as application/json. */
int hd_http_reply_json(hd_http_response *resp, int status, json_t *body);

/* The JSON document written into w (jsonw.h), as hd_http_reply_json replies: without a tree
 * to build and dump, for the replies a service sends most (GET /users/{id}). w is emptied
 * (freed) in every case. Returns 0, HD_ENOMEM (the writer ran out of memory: 500) or
 * HD_EINVAL. */
int hd_http_reply_jsonw(hd_http_response *resp, int status, hd_jsonw *w);

/* text (copied) with content_type (NULL = "text/plain; charset=utf-8"). */
int hd_http_reply_text(hd_http_response *resp, int status, const char *content_type,
                       const char *text);

/* An empty body (204, 202, ...). */
int hd_http_reply_empty(hd_http_response *resp, int status);

/* ---- streamed responses (Server-Sent Events, long downloads) ------------------------------
 *
 * A body produced while it is sent: read(ctx, pos, buf, max) writes up to max bytes into
 * buf and returns how many (> 0), HD_HTTP_STREAM_END when the body is complete, or
 * HD_HTTP_STREAM_ERROR to cut the connection; pos is the number of bytes sent so far. It
 * runs on the connection's thread, after the handler returned, for as long as the stream
 * lasts. With the default thread per connection (threads = 0) it may BLOCK waiting for
 * data (a condition variable with a timeout), and it must not return 0 there, which makes
 * libmicrohttpd call it again at once (a busy loop); with a thread pool it must not block
 * (it would stall the pool thread's other connections), so streams want threads = 0.
 * free_fn(ctx) runs exactly once: when libmicrohttpd is done with the response (the body
 * ended, or the client went away), or at once when the reply is replaced or fails.
 *
 * A stream counts as in flight: hd_http_server_stop waits for it like for any request, so
 * the application ends its streams (read returns HD_HTTP_STREAM_END) before it stops the
 * server. The size is unknown, so HTTP/1.1 clients get a chunked body. The observer sees
 * response_bytes 0 for a stream; hd_http_server_dispatch answers the status and content
 * type with an empty body and frees the stream without reading it (it could be endless). */
#define HD_HTTP_STREAM_END   ((ssize_t)-1)
#define HD_HTTP_STREAM_ERROR ((ssize_t)-2)
typedef ssize_t (*hd_http_stream_read)(void *ctx, uint64_t pos, char *buf, size_t max);
typedef void (*hd_http_stream_free)(void *ctx);

/* Reply with status and a streamed body (content_type copied; NULL =
 * "application/octet-stream"). read is required; free_fn may be NULL; ctx is stolen in the
 * sense that free_fn(ctx) is called also when this fails (HD_EINVAL, HD_ENOMEM). */
int hd_http_reply_stream(hd_http_response *resp, int status, const char *content_type,
                         hd_http_stream_read read, hd_http_stream_free free_fn, void *ctx);

/* An RFC 7807 problem: {"type":"about:blank","title":...,"status":...,"detail":...,
 * "instance":<request path>} as application/problem+json. title NULL = the status' reason
 * phrase (as RFC 7807 asks for "about:blank"); detail NULL = no detail member. Both
 * copied. */
int hd_http_reply_problem(hd_http_response *resp, int status, const char *title,
                          const char *detail);

/* The same with a printf-style detail. Never pass client data as the format. */
int hd_http_reply_problemf(hd_http_response *resp, int status, const char *title,
                           const char *detail_fmt, ...) __attribute__((format(printf, 4, 5)));

/* A problem with your own members (stolen): a "type" URI of yours, extension members such
 * as "errors": [...] for a 422. Missing type, title, status and instance are filled in. */
int hd_http_reply_problem_json(hd_http_response *resp, int status, json_t *problem);

/* The HTTP status for an HD_E* code: EINVAL/EJSON/EMISSING/ETYPE/ERANGE/EURL 400, EAUTH
 * 401, ENOTFOUND 404, EEXIST/ESTATE 409, ETOOBIG 413, EUNSUPPORTED 415, EVALIDATE 422,
 * EBUSY/ETIMEOUT 503, anything else 500. */
int hd_http_status_for_error(int code);

/* A problem for an HD_E* code with detail (copied; may be NULL). For a 5xx the detail is
 * NOT sent — it may reveal internals — but logged with the correlation id, and the client
 * is told to quote that id. */
int hd_http_reply_error(hd_http_response *resp, int code, const char *detail);

/* Add a response header (both copied). Refuses (HD_EINVAL) names that are not tokens and
 * values with CR or LF, which would let data forge headers. Content-Type is set by the
 * reply functions; setting it here overrides theirs. */
int hd_http_response_set_header(hd_http_response *resp, const char *name, const char *value);

/* The reason phrase of a status ("Not Found"); "Unknown" for unknown codes. Borrowed. */
const char *hd_http_reason(int status);

/* ---- credentials ------------------------------------------------------------------------- */

/* Check "Authorization: Bearer <token>" against expected_token in constant time (the time
 * taken does not depend on how many leading characters of a guess are right). Returns 0
 * when it matches. Otherwise fills resp with a 401 problem and a WWW-Authenticate: Bearer
 * header (with error="invalid_token" when a token was given but is wrong) and returns
 * HD_EAUTH, so a handler writes
 *     if (hd_http_require_bearer(req, resp, ctx->token) < 0)
 *         return;
 * An empty or NULL expected_token refuses every request: a missing setting must not open
 * the door. */
int hd_http_require_bearer(const hd_http_request *req, hd_http_response *resp,
                           const char *expected_token);

/* ---- access log -------------------------------------------------------------------------- */

/* One info line for an answered request ("http request", method as sent, route, path,
 * status, duration_ms, correlation id), to call from an observer. Strings that are not
 * valid UTF-8 are logged with U+FFFD in place of the bad bytes, never dropped, so a
 * hostile request still leaves its line. lg NULL = the default logger. */
void hd_http_log_access(hd_logger *lg, const hd_http_access *access);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_HTTP_H */
