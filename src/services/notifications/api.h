/* notifications/api.h — interface adapter: the HTTP API of the notifications service.
 *
 * Routes (docs/openapi/notifications.openapi.json is the contract; every error is an RFC
 * 7807 application/problem+json):
 *
 *   POST /notifications                          send directly: 202 {id, status} and a
 *                                                Location; 400 malformed, 422 refused
 *   GET  /notifications/{id}                     one notification: 200, 404
 *   POST /notifications/preferences              create: 201, 409 when they exist, 400, 422
 *   GET  /notifications/preferences/{user_id}    200 (the defaults when never saved), 400
 *   PUT  /notifications/preferences/{user_id}    change what the body names: 200, 400,
 *                                                409 (a concurrent change), 422
 *   GET  /notifications/history/{user_id}        newest first, ?limit=1..100 (20) and
 *                                                ?cursor=<next_cursor>: 200, 400
 *   GET  /health                                 200, or 503 when the database or the
 *                                                broker is down or the server is stopping
 *   GET  /metrics                                Prometheus text
 *
 * Authentication: every route but /health and /metrics needs `Authorization: Bearer
 * <token>` (RFC 6750), the token compared in constant time (hd_http_require_bearer); a
 * missing or wrong one gets 401 with `WWW-Authenticate: Bearer` and a problem+json. The
 * token is one shared secret of the callers inside the deployment (the only one today is an
 * operator or a back office): the API reads histories and preferences of every user and
 * sends mails in our name, so nobody else may reach it. /health and /metrics stay open for
 * the load balancer and the scraper; they tell nothing about a user. Running without a
 * token takes an explicit `open` (HD_NOTIFICATIONS_API_OPEN, for a laptop), never a
 * missing setting.
 *
 * Reads from a standby (replica, HD_DATABASE_READ_URL): GET history and GET preferences may
 * be served by the standby; everything else by the primary. With a standby, the writes
 * (POST /notifications, POST and PUT preferences) answer `Herald-Read-After: <WAL
 * position>`, and those two reads accept it back: they are then served by a server that
 * has that write, whichever instance the client reaches (malformed: 400).
 *
 * /health never opens a connection: it reads the consumer's connection state through
 * broker_up (an atomic the consumer thread keeps) and runs SELECT 1 on the API's own store
 * handle, so a scraper polling it costs the broker nothing.
 *
 * The mapping, once: a body that is not what the route reads (not JSON, a member of the
 * wrong kind, a required member missing) is 400; a well-formed request that a rule refuses
 * (an unknown notification type, a type that is not for direct requests, a link outside
 * the configured base URLs, an address that is not one, switching off email_verification,
 * a template variable missing) is 422.
 *
 * Threads: libmicrohttpd runs handlers concurrently, one thread per connection. They share
 * ONE store handle (a handle belongs to one thread at a time), taken under a mutex for each
 * use case: the API is the light part of this service (the consumer is the heavy one) and
 * on SQLite there is only one writer at a time anyway. Give PostgreSQL deployments a pool
 * here if the API ever becomes hot.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef NOTIFICATIONS_API_H
#define NOTIFICATIONS_API_H

#include "herald/error.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/metrics.h"
#include "herald/store.h"

#include "application.h"

typedef struct notif_api_deps {
    notif_app *app;  /* borrowed */
    hd_store *store; /* borrowed: the API's own handle (used under the API's mutex) */
    /* borrowed, may be NULL: the router over store for the reads that may be stale (history,
       preferences; replica.h), used under the same mutex; its gauges go into metrics */
    hd_replica *replica;
    hd_metrics *metrics; /* borrowed; NULL = GET /metrics answers 404 */
    hd_logger *lg;       /* borrowed; access log and 5xx details */
    /* 1 while the broker connection of the consumer is up (for /health); NULL = not known,
     * reported as up. Called from HTTP threads: it must be thread-safe. */
    int (*broker_up)(void *ctx);
    void *broker_ctx;
    /* The bearer token of every route but /health and /metrics (borrowed; at least
     * NOTIF_API_TOKEN_MIN characters of visible ASCII). NULL or "" only with open = 1. */
    const char *token;
    int open; /* 1: no authentication at all (HD_NOTIFICATIONS_API_OPEN; never in production) */
} notif_api_deps;

/* The shortest token accepted: 32 characters, e.g. `openssl rand -hex 32` gives 64. A short
 * token is guessable over the network whatever the comparison. */
#define NOTIF_API_TOKEN_MIN 32

/* 0 when token is a usable API token (NOTIF_API_TOKEN_MIN or more characters, all visible
 * ASCII: no blank, which would not survive the Authorization header), else HD_ECONFIG with
 * the reason (never the token itself) in err. */
int notif_api_token_check(const char *token, hd_error *err);

typedef struct notif_api notif_api;

/* A new API over deps (copied; what it points to is borrowed). Registers the HTTP metrics
 * and the outbox / pending gauges in deps->metrics. Returns 0, HD_ENOMEM, HD_EINVAL (no app
 * or store) or HD_ECONFIG (no usable token and not open). */
int notif_api_new(const notif_api_deps *deps, notif_api **out, hd_error *err);

/* Route every endpoint on srv (before it starts) and observe its requests (metrics and the
 * access log). srv is borrowed and must outlive the api's use. Returns 0 or a code. */
int notif_api_mount(notif_api *api, hd_http_server *srv, hd_error *err);

/* Free api (NULL allowed) once the server using it has stopped. */
void notif_api_free(notif_api *api);

#endif /* NOTIFICATIONS_API_H */
