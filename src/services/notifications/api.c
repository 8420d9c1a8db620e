/* notifications/api.c — the HTTP API (see api.h for the routes and the status codes). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/metrics_replica.h"
#include "herald/outbox.h"

#include "api.h"
#include "repository.h"

#define HISTORY_LIMIT_DEFAULT 20

/* A route that needs the bearer token: the API and the handler to call once it is right. */
typedef struct guarded {
    notif_api *api;
    hd_http_handler fn;
} guarded;

#define ROUTES_MAX 8

/* What a gauge callback needs: the API (its store and lock) and which number to read. */
typedef struct gauge_ctx {
    notif_api *api;
    int which;
} gauge_ctx;

struct notif_api {
    notif_api_deps d;
    pthread_mutex_t lock; /* guards w (its store handle) */
    notif_worker w;
    hd_http_server *srv; /* borrowed, for "stopping" in /health */
    hd_counter *requests;
    hd_histogram *latency;
    gauge_ctx gauges[4];        /* the contexts of the table gauges (register_metrics) */
    guarded guards[ROUTES_MAX]; /* the contexts of the routes behind the token */
};

/* ---- JSON views of the aggregates ------------------------------------------------------- */

/* An RFC 3339 string for epoch ms, or JSON null for 0 ("never"). New reference. */
static json_t *time_or_null(int64_t ms)
{
    if (ms == 0)
        return json_null();
    char t[HD_TIME_LEN + 1];
    hd_time_format(ms, t);
    return json_string(t);
}

static json_t *notification_json(const notification *n)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:i, s:s?, s:o, s:o, s:o, s:s?}", "id",
                     notification_id(n), "user_id", n->user_id, "type",
                     notification_type_name(n->type), "recipient", n->recipient, "subject",
                     n->subject, "status", notification_status_name(n->status), "attempts",
                     n->attempts, "last_error", n->last_error, "created_at",
                     time_or_null(n->created_at_ms), "updated_at", time_or_null(n->updated_at_ms),
                     "sent_at", time_or_null(n->sent_at_ms), "correlation_id", n->correlation_id);
}

static json_t *preferences_json(const preferences *p)
{
    json_t *on = json_object();
    for (int i = 0; on != NULL && i < NOTIFY_TYPE_COUNT; i++)
        json_object_set_new(on, notification_type_name((notification_type)i),
                            json_boolean(preferences_allows(p, (notification_type)i)));
    return json_pack("{s:s, s:s?, s:o, s:b, s:o, s:o}", "user_id", preferences_user_id(p), "email",
                     p->email[0] ? p->email : NULL, "preferences", on, "stored", p->stored,
                     "created_at", time_or_null(p->created_at_ms), "updated_at",
                     time_or_null(p->updated_at_ms));
}

/* ---- reading request bodies ------------------------------------------------------------- */

/* body.name as a string into *out (borrowed from body): HD_EMISSING when required and
 * absent or null, HD_ETYPE when not a string. */
static int member_string(const json_t *body, const char *name, int required, const char **out,
                         hd_error *err)
{
    const json_t *v = json_object_get(body, name);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return required ? hd_error_set(err, HD_EMISSING, "member '%s' is required", name) : 0;
    if (!json_is_string(v))
        return hd_error_set(err, HD_ETYPE, "member '%s' must be a string", name);
    *out = json_string_value(v);
    return 0;
}

static int read_body_object(const hd_http_request *req, json_t **body, hd_error *err)
{
    int rc = hd_http_request_json(req, body, err);
    if (rc == 0 && !json_is_object(*body)) {
        json_decref(*body);
        *body = NULL;
        return hd_error_set(err, HD_ETYPE, "the body must be a JSON object");
    }
    return rc;
}

/* {"email": "..." | null, "preferences": {"welcome": false, ...}} into c. email null removes
 * the address; absent members keep what is stored. An unknown type is a rule (422), a
 * value of the wrong kind a malformed body (400). */
static int read_change(const json_t *body, preferences_change *c, hd_error *err)
{
    preferences_change_init(c);
    const json_t *email = json_object_get(body, "email");
    if (json_is_null(email))
        c->email = "";
    else if (email != NULL && (c->email = json_string_value(email)) == NULL)
        return hd_error_set(err, HD_ETYPE, "member 'email' must be a string or null");
    const json_t *prefs = json_object_get(body, "preferences");
    if (prefs == NULL || json_is_null(prefs))
        return 0;
    if (!json_is_object(prefs))
        return hd_error_set(err, HD_ETYPE, "member 'preferences' must be an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)prefs, key, v)
    {
        notification_type t;
        int rc = notification_type_parse(key, &t, err);
        if (rc < 0)
            return rc;
        if (!json_is_boolean(v))
            return hd_error_set(err, HD_ETYPE, "preferences.%s must be true or false", key);
        c->enabled[t] = json_is_true(v);
    }
    return 0;
}

/* ---- read-your-writes across instances (replica.h) ----------------------------------------
 * After a write, the response carries "Herald-Read-After: <WAL position>" (only with a read
 * standby); a client that sends it back on a read of history or preferences is served by a
 * server that has that position, whichever instance it reaches. */

#define READ_AFTER "Herald-Read-After"

static void reply_read_after(hd_http_response *resp, uint64_t lsn)
{
    char pos[HD_REPLICA_LSN_MAX + 1];
    if (lsn != 0 && hd_replica_lsn_format(lsn, pos) > 0)
        hd_http_response_set_header(resp, READ_AFTER, pos);
}

static int read_after(const hd_http_request *req, uint64_t *lsn, hd_error *err)
{
    const char *v = hd_http_request_header(req, READ_AFTER);
    *lsn = 0;
    if (v == NULL || *v == '\0')
        return 0;
    if (hd_replica_lsn_parse(v, lsn) < 0)
        return hd_error_set(err, HD_EINVAL,
                            READ_AFTER " must be a WAL position as a write answered it");
    return 0;
}

/* ---- handlers ---------------------------------------------------------------------------- */

/* POST /notifications: {user_id, type, recipient, variables}. *vars is a new reference
 * (an empty object when the body has none). */
static int read_request(const json_t *body, notif_request *r, json_t **vars, hd_error *err)
{
    int rc = member_string(body, "user_id", 1, &r->user_id, err);
    if (rc == 0)
        rc = member_string(body, "type", 1, &r->type, err);
    if (rc == 0)
        rc = member_string(body, "recipient", 1, &r->recipient, err);
    if (rc < 0)
        return rc;
    json_t *v = json_object_get(body, "variables");
    if (v != NULL && !json_is_object(v))
        return hd_error_set(err, HD_ETYPE, "member 'variables' must be an object");
    *vars = v != NULL ? json_incref(v) : json_object();
    r->variables = *vars;
    return *vars != NULL ? 0 : hd_error_set(err, HD_ENOMEM, NULL);
}

static void reply_accepted(hd_http_response *resp, const notification *n)
{
    char location[64];
    snprintf(location, sizeof location, "/notifications/%s", notification_id(n));
    hd_http_response_set_header(resp, "Location", location);
    hd_http_reply_json(resp, 202,
                       json_pack("{s:s, s:s}", "id", notification_id(n), "status",
                                 notification_status_name(n->status)));
}

static void post_notification(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    json_t *body = NULL, *vars = NULL;
    notif_request r = {.correlation_id = hd_http_request_correlation_id(req)};
    notification n;
    int rc = read_body_object(req, &body, &err);
    if (rc == 0)
        rc = read_request(body, &r, &vars, &err);
    uint64_t lsn = 0;
    if (rc == 0) {
        pthread_mutex_lock(&api->lock);
        api->w.wrote_lsn = 0;
        rc = notif_request_send(&api->w, &r, &n, &err);
        lsn = api->w.wrote_lsn;
        pthread_mutex_unlock(&api->lock);
    }
    if (rc < 0) {
        hd_http_reply_error(resp, rc, err.text);
    } else {
        reply_read_after(resp, lsn);
        reply_accepted(resp, &n);
        notification_release(&n);
    }
    json_decref(vars);
    json_decref(body);
}

static void get_notification(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    notification n;
    pthread_mutex_lock(&api->lock);
    int rc = notif_get(&api->w, hd_http_request_param(req, "id"), &n, &err);
    pthread_mutex_unlock(&api->lock);
    if (rc < 0) {
        hd_http_reply_error(resp, rc, err.text);
        return;
    }
    hd_http_reply_json(resp, 200, notification_json(&n));
    notification_release(&n);
}

/* Reply with the preferences (status 200 or 201), or the failure. Releases p on success. */
static void reply_preferences(hd_http_response *resp, int rc, int status, preferences *p,
                              const hd_error *err)
{
    if (rc < 0) {
        hd_http_reply_error(resp, rc, err->text);
        return;
    }
    hd_http_reply_json(resp, status, preferences_json(p));
    preferences_release(p);
}

static void post_preferences(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    json_t *body = NULL;
    const char *user_id = NULL;
    preferences_change c;
    preferences p;
    int rc = read_body_object(req, &body, &err);
    if (rc == 0 && (rc = member_string(body, "user_id", 1, &user_id, &err)) == 0)
        rc = read_change(body, &c, &err);
    if (rc == 0) {
        pthread_mutex_lock(&api->lock);
        api->w.wrote_lsn = 0;
        rc = notif_prefs_create(&api->w, user_id, &c, &p, &err);
        if (rc >= 0)
            reply_read_after(resp, api->w.wrote_lsn);
        pthread_mutex_unlock(&api->lock);
    }
    reply_preferences(resp, rc, 201, &p, &err);
    json_decref(body);
}

/* A user id from the path that is not one is a malformed request (400): nobody has it. */
static int path_user_id(const hd_http_request *req, const char **out, hd_error *err)
{
    *out = hd_http_request_param(req, "user_id");
    if (!notify_user_id_valid(*out))
        return hd_error_set(err, HD_EINVAL,
                            "user id must be 1 to %d characters of A-Z a-z 0-9 "
                            ". _ : -",
                            NOTIFY_USER_ID_MAX);
    return 0;
}

static void get_preferences(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    const char *user_id;
    preferences p;
    uint64_t after = 0;
    int rc = path_user_id(req, &user_id, &err);
    if (rc == 0)
        rc = read_after(req, &after, &err);
    if (rc == 0) {
        pthread_mutex_lock(&api->lock);
        api->w.min_lsn = after;
        rc = notif_prefs_get(&api->w, user_id, &p, &err);
        api->w.min_lsn = 0;
        pthread_mutex_unlock(&api->lock);
    }
    reply_preferences(resp, rc, 200, &p, &err);
}

static void put_preferences(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    json_t *body = NULL;
    const char *user_id;
    preferences_change c;
    preferences p;
    int rc = path_user_id(req, &user_id, &err);
    if (rc == 0)
        rc = read_body_object(req, &body, &err);
    if (rc == 0)
        rc = read_change(body, &c, &err);
    if (rc == 0) {
        pthread_mutex_lock(&api->lock);
        api->w.wrote_lsn = 0;
        rc = notif_prefs_update(&api->w, user_id, &c, &p, &err);
        if (rc >= 0)
            reply_read_after(resp, api->w.wrote_lsn);
        pthread_mutex_unlock(&api->lock);
    }
    reply_preferences(resp, rc, 200, &p, &err);
    json_decref(body);
}

static json_t *history_json(const notification *list, size_t n, const char *next)
{
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < n; i++)
        json_array_append_new(items, notification_json(&list[i]));
    return json_pack("{s:o, s:s?}", "items", items, "next_cursor", next[0] ? next : NULL);
}

static void get_history(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    notif_api *api = ctx;
    hd_error err;
    const char *user_id;
    int64_t limit = HISTORY_LIMIT_DEFAULT;
    notification *list = NULL;
    size_t n = 0;
    char next[NOTIF_CURSOR_MAX + 1] = "";
    int rc = path_user_id(req, &user_id, &err);
    uint64_t after = 0;
    if (rc == 0)
        rc = hd_http_request_query_int(req, "limit", HISTORY_LIMIT_DEFAULT, 1,
                                       NOTIF_HISTORY_LIMIT_MAX, &limit, &err);
    if (rc == 0)
        rc = read_after(req, &after, &err);
    if (rc == 0) {
        pthread_mutex_lock(&api->lock);
        api->w.min_lsn = after;
        rc = notif_history(&api->w, user_id, (size_t)limit, hd_http_request_query(req, "cursor"),
                           &list, &n, next, &err);
        api->w.min_lsn = 0;
        pthread_mutex_unlock(&api->lock);
    }
    /* A cursor we did not hand out is a malformed query, not a rule: 400. */
    if (rc == HD_EVALIDATE)
        rc = HD_EINVAL;
    if (rc < 0)
        hd_http_reply_error(resp, rc, err.text);
    else
        hd_http_reply_json(resp, 200, history_json(list, n, next));
    notif_history_free(list, n);
}

static int store_ok(notif_api *api, hd_error *err)
{
    hd_rows *rows = NULL;
    pthread_mutex_lock(&api->lock);
    int rc = hd_store_query(api->d.store, "SELECT 1", NULL, 0, &rows, err);
    pthread_mutex_unlock(&api->lock);
    hd_rows_free(rows);
    return rc;
}

static void get_health(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    notif_api *api = ctx;
    hd_error err;
    int store = store_ok(api, &err) == 0;
    int broker = api->d.broker_up == NULL || api->d.broker_up(api->d.broker_ctx);
    int stopping = api->srv != NULL && hd_http_server_stopping(api->srv);
    int ok = store && broker && !stopping;
    hd_http_reply_json(resp, ok ? 200 : 503,
                       json_pack("{s:s, s:s, s:s}", "status",
                                 ok         ? "ok"
                                 : stopping ? "stopping"
                                            : "degraded",
                                 "store", store ? "ok" : "down", "broker", broker ? "ok" : "down"));
}

static void get_metrics(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    notif_api *api = ctx;
    char *text = NULL;
    if (api->d.metrics == NULL) {
        hd_http_reply_problem(resp, 404, NULL, "metrics are not enabled");
        return;
    }
    int rc = hd_metrics_render(api->d.metrics, &text, NULL);
    if (rc < 0)
        hd_http_reply_error(resp, rc, "cannot render the metrics");
    else
        hd_http_reply_text(resp, 200, HD_METRICS_CONTENT_TYPE, text);
    free(text);
}

/* ---- authentication ------------------------------------------------------------------------ */

int notif_api_token_check(const char *token, hd_error *err)
{
    size_t n = token != NULL ? strlen(token) : 0;
    if (n < NOTIF_API_TOKEN_MIN)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_NOTIFICATIONS_API_TOKEN must be at least %d characters (it has "
                            "%zu); e.g. openssl rand -hex 32",
                            NOTIF_API_TOKEN_MIN, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)token[i] <= ' ' || (unsigned char)token[i] >= 0x7f)
            return hd_error_set(err, HD_ECONFIG,
                                "HD_NOTIFICATIONS_API_TOKEN must be visible ASCII only (no "
                                "blank, no control character)");
    return 0;
}

/* Every protected route goes through here, so a route added to the table in
 * notif_api_mount is protected unless it is explicitly listed as open. */
static void require_token(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    guarded *g = ctx;
    if (!g->api->d.open && hd_http_require_bearer(req, resp, g->api->d.token) < 0)
        return; /* 401 and WWW-Authenticate: Bearer are in resp */
    g->fn(req, resp, g->api);
}

/* ---- metrics of the API and of the tables it can see ------------------------------------- */

static void observe(const hd_http_access *a, void *ctx)
{
    notif_api *api = ctx;
    char status[8];
    snprintf(status, sizeof status, "%d", a->status);
    if (api->requests != NULL)
        hd_counter_inc(api->requests, (const char *const[]){a->method, a->route, status}, 1);
    if (api->latency != NULL)
        hd_histogram_observe(api->latency, (const char *const[]){a->route}, a->duration_s);
    /* /metrics and /health are scraped every few seconds: keep them out of the access log. */
    if (strcmp(a->route, "/metrics") != 0 && strcmp(a->route, "/health") != 0)
        hd_http_log_access(api->d.lg, a);
}

enum { G_OUTBOX_PENDING, G_OUTBOX_AGE, G_OUTBOX_PARKED, G_PENDING };

static int read_gauge(void *ctx, double *out)
{
    gauge_ctx *g = ctx;
    int64_t pending = 0, age = 0, parked = 0, notif = 0;
    int rc;
    pthread_mutex_lock(&g->api->lock);
    if (g->which == G_PENDING)
        rc = notif_repo_pending(g->api->d.store, &notif, NULL);
    else
        rc = hd_outbox_depth(g->api->d.store, &pending, &age, &parked, NULL);
    pthread_mutex_unlock(&g->api->lock);
    double v[] = {(double)pending, (double)age / 1000.0, (double)parked, (double)notif};
    *out = v[g->which];
    return rc;
}

static int register_metrics(notif_api *api)
{
    hd_metrics *m = api->d.metrics;
    if (m == NULL)
        return 0;
    if (api->d.replica != NULL && hd_metrics_replica_register(m, api->d.replica) < 0)
        return HD_ENOMEM;
    api->requests = hd_metrics_counter(m, "http_requests_total", "HTTP requests served.", "method",
                                       "route", "status", NULL);
    api->latency = hd_metrics_histogram(m, "http_request_duration_seconds",
                                        "Time to answer an HTTP request.", NULL, 0, "route", NULL);
    static const struct {
        const char *name, *help;
    } g[] = {
        /* The names the users service uses for its outbox: one alert rule for both (the
         * scrape's job label tells them apart). */
        {"outbox_pending", "Outbox rows waiting to be published."},
        {"outbox_oldest_age_seconds", "Age of the oldest row waiting (0 when none)."},
        {"outbox_parked", "Outbox rows parked after too many failures."},
        {"notifications_pending", "Notifications waiting to be sent (first try or retry)."},
    };
    for (int i = 0; i < 4; i++) {
        hd_gauge *gauge = hd_metrics_gauge(m, g[i].name, g[i].help, NULL);
        api->gauges[i] = (gauge_ctx){api, i};
        if (gauge == NULL || hd_gauge_set_func(gauge, NULL, read_gauge, &api->gauges[i]) < 0)
            return HD_ENOMEM;
    }
    return api->requests && api->latency ? 0 : HD_ENOMEM;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int notif_api_new(const notif_api_deps *deps, notif_api **out, hd_error *err)
{
    *out = NULL;
    if (deps == NULL || deps->app == NULL || deps->store == NULL)
        return hd_error_set(err, HD_EINVAL, "notif_api_new: app and store are required");
    /* No token is a decision (open), never an omission. */
    if (!deps->open) {
        int rc = notif_api_token_check(deps->token, err);
        if (rc < 0)
            return rc;
    }
    notif_api *api = calloc(1, sizeof *api);
    if (api == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    api->d = *deps;
    pthread_mutex_init(&api->lock, NULL);
    notif_worker_init(&api->w, deps->app, deps->store, NULL);
    api->w.reads = deps->replica;
    if (register_metrics(api) < 0) {
        notif_api_free(api);
        return hd_error_set(err, HD_ENOMEM, "cannot register the API's metrics");
    }
    *out = api;
    return 0;
}

int notif_api_mount(notif_api *api, hd_http_server *srv, hd_error *err)
{
    static const struct {
        const char *method, *pattern;
        hd_http_handler fn;
        int open; /* 1: no token (the load balancer's and the scraper's routes) */
    } routes[] = {
        {"POST", "/notifications", post_notification, 0},
        {"GET", "/notifications/{id}", get_notification, 0},
        {"POST", "/notifications/preferences", post_preferences, 0},
        {"GET", "/notifications/preferences/{user_id}", get_preferences, 0},
        {"PUT", "/notifications/preferences/{user_id}", put_preferences, 0},
        {"GET", "/notifications/history/{user_id}", get_history, 0},
        {"GET", "/health", get_health, 1},
        {"GET", "/metrics", get_metrics, 1},
    };
    _Static_assert(sizeof routes / sizeof routes[0] <= ROUTES_MAX, "raise ROUTES_MAX");
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        api->guards[i] = (guarded){api, routes[i].fn};
        int rc = routes[i].open
                     ? hd_http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, api)
                     : hd_http_route(srv, routes[i].method, routes[i].pattern, require_token,
                                     &api->guards[i]);
        if (rc < 0)
            return hd_error_set(err, rc, "route %s %s: %s", routes[i].method, routes[i].pattern,
                                hd_strerror(rc));
    }
    hd_http_server_observe(srv, observe, api);
    api->srv = srv;
    return 0;
}

void notif_api_free(notif_api *api)
{
    if (api == NULL)
        return;
    pthread_mutex_destroy(&api->lock);
    free(api);
}
