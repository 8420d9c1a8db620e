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
 * The mapping, once: a body that is not what the route reads (not JSON, a member of the
 * wrong kind, a required member missing) is 400; a well-formed request that a rule refuses
 * (an unknown notification type, an address that is not one, switching off
 * email_verification, a template variable missing) is 422.
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
    notif_app *app;      /* borrowed */
    hd_store *store;     /* borrowed: the API's own handle (used under the API's mutex) */
    hd_metrics *metrics; /* borrowed; NULL = GET /metrics answers 404 */
    hd_logger *lg;       /* borrowed; access log and 5xx details */
    /* 1 while the broker connection of the consumer is up (for /health); NULL = not known,
     * reported as up. Called from HTTP threads: it must be thread-safe. */
    int (*broker_up)(void *ctx);
    void *broker_ctx;
} notif_api_deps;

typedef struct notif_api notif_api;

/* A new API over deps (copied; what it points to is borrowed). Registers the HTTP metrics
 * and the outbox / pending gauges in deps->metrics. Returns 0, HD_ENOMEM. */
int notif_api_new(const notif_api_deps *deps, notif_api **out, hd_error *err);

/* Route every endpoint on srv (before it starts) and observe its requests (metrics and the
 * access log). srv is borrowed and must outlive the api's use. Returns 0 or a code. */
int notif_api_mount(notif_api *api, hd_http_server *srv, hd_error *err);

/* Free api (NULL allowed) once the server using it has stopped. */
void notif_api_free(notif_api *api);

#endif /* NOTIFICATIONS_API_H */
