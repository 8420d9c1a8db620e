/* users/api.h — the users service's HTTP API, over herald's http module.
 *
 * The API layer turns HTTP into use cases and back, and does nothing else: it
 * parses and checks input (with the domain's own parsers, so that a 422 lists every bad
 * field at once), calls one function of application.h, and maps the result to a status
 * and a JSON body. docs/openapi/users.yaml is the contract of these routes; the
 * integration test checks the running server against it.
 *
 *   POST   /users                  register                     201 400 409 415 422
 *   POST   /users/verify           confirm an email with token  200 400 404 410 422
 *                                  (JSON, or the page's form: then an HTML answer)
 *   GET    /users/verify?token=    the page the mail's link opens: a button that POSTs
 *                                  the token (opening it verifies nothing: link scanners)
 *   POST   /users/password-reset   ask for a reset link         202 400 415 422
 *   POST   /users/password-reset/confirm  new password + token   204 400 404 410 422
 *   GET    /users                  list (?limit=&cursor=) or find (?email=)   admin
 *   GET    /users/{id}             one user                                   admin
 *   PATCH  /users/{id}             change the name                            admin
 *   DELETE /users/{id}             delete                                     admin
 *   GET    /health                 store (and broker) reachable: 200 / 503
 *   GET    /metrics                Prometheus text
 *
 * "admin" routes need `Authorization: Bearer <HD_USERS_ADMIN_TOKEN>`: the service has no
 * logins of its own, and every route that reads or changes an existing user exposes
 * personal data, so only an operator (or a trusted back office) may call them. The four
 * public routes are what an anonymous visitor needs to sign up and to get back in.
 *
 * Limits of the public routes (and the page): a token bucket per client address (IPv6:
 * per /64) on each of them, and one per e-mail address on register and password-reset
 * (each may send a mail to that address). Over a limit: 429 + Retry-After (seconds).
 * When every password hashing slot stays busy (application.h): 503 + Retry-After.
 *
 * Every error is application/problem+json (RFC 7807); 5xx details go to the log under the
 * request's correlation id, never to the client. Each answered request is counted and
 * timed in the metrics, per route pattern and status, and written to the access log.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_API_H
#define USERS_API_H

#include <jansson.h>

#include "herald/error.h"
#include "herald/http.h"
#include "herald/log.h"
#include "herald/metrics.h"
#include "herald/ratelimit.h"

#include "application.h"

/* Health of what the service depends on: add one member per dependency to checks (a JSON
 * object, borrowed), e.g. "store": "ok" / "broker": "unreachable: ...", and return 0 when
 * all are fine, a negative code when one is not (the answer is then 503). */
typedef int (*users_health_fn)(void *ctx, json_t *checks);

typedef struct users_http_options {
    users_app *app;          /* borrowed; required */
    const char *admin_token; /* borrowed; NULL or "": every admin route answers 401 */
    hd_logger *logger;       /* borrowed; NULL: the default logger */
    hd_metrics *metrics;     /* borrowed; NULL: no /metrics, no request metrics */
    users_health_fn health;  /* NULL: healthy while the server runs */
    void *health_ctx;        /* borrowed */
    /* Rate limits (borrowed: they must outlive the server; NULL: no limit). client_limit
     * is keyed by the client's address on every public route, email_limit by the
     * normalised address on POST /users and POST /users/password-reset. */
    hd_ratelimit *client_limit;
    hd_ratelimit *email_limit;
} users_http_options;

typedef struct users_http users_http;

/* Route the API on srv (borrowed; not started yet) and observe its requests. opts is
 * copied (its pointers stay borrowed: they must outlive the server). Returns 0, HD_EINVAL,
 * HD_ENOMEM, or hd_http_route's code. *out is new: free it after hd_http_server_free. */
int users_http_new(hd_http_server *srv, const users_http_options *opts, users_http **out,
                   hd_error *err);

void users_http_free(users_http *h);

/* A user as the API shows it, written into w (borrowed): {"id","email","name","verified",
 * "created_at","updated_at"} with RFC 3339 times, the bytes json_dumpb writes for that
 * object (JSON_COMPACT, keys in that order). */
void users_http_write_user(hd_jsonw *w, const user_view *v);

#endif /* USERS_API_H */
