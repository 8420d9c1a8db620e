/* chat/api.c — the chat's HTTP routes (api.h). */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

#include <jansson.h>
#include <sodium.h>

#include "herald/clock.h"

#include "page.h"

struct chat_api {
    chat_api_options o;
    hd_http_server *srv;
};

/* Headers every answer of the chat carries: no MIME sniffing (a message is never HTML),
 * and no Referer (the stream's URL holds a token). */
static void common_headers(hd_http_response *resp)
{
    hd_http_response_set_header(resp, "X-Content-Type-Options", "nosniff");
    hd_http_response_set_header(resp, "Referrer-Policy", "no-referrer");
}

/* The hub's and the bus's refusals as HTTP: HD_EBUSY from the hub is "too many", a 429
 * (the client can come back later), not the 503 hd_http_status_for_error gives it. */
static void reply_refusal(hd_http_response *resp, int code, const char *detail)
{
    if (code == HD_EBUSY)
        hd_http_reply_problem(resp, 429, NULL, detail);
    else if (code == HD_EAUTH) {
        hd_http_response_set_header(resp, "WWW-Authenticate", "Bearer realm=\"chat\"");
        hd_http_reply_problem(resp, 401, NULL, detail);
    } else if (code == HD_ESTATE)
        hd_http_reply_problem(resp, 503, NULL, "the chat is stopping");
    else
        hd_http_reply_error(resp, code, detail);
}

/* The room of the path, or a 404 already set. */
static const char *path_room(chat_api *api, hd_http_request *req, hd_http_response *resp)
{
    const char *room = hd_http_request_param(req, "room");
    if (!chat_hub_has_room(api->o.hub, room)) {
        hd_http_reply_problem(resp, 404, NULL, "no room of this name");
        return NULL;
    }
    return room;
}

/* "Authorization: Bearer <token>" -> token (borrowed), or NULL. */
static const char *bearer(hd_http_request *req)
{
    const char *h = hd_http_request_header(req, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return h;
}

static void static_file(hd_http_response *resp, const char *type, const char *body)
{
    common_headers(resp);
    /* The page loads only its own script and style, and talks only to this origin. */
    hd_http_response_set_header(resp, "Content-Security-Policy",
                                "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
                                "base-uri 'none'");
    hd_http_response_set_header(resp, "Cache-Control", "no-cache");
    hd_http_reply_text(resp, 200, type, body);
}

static void get_page(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    static_file(resp, "text/html; charset=utf-8", chat_page_html);
}

static void get_js(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    static_file(resp, "text/javascript; charset=utf-8", chat_page_js);
}

static void get_css(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    static_file(resp, "text/css; charset=utf-8", chat_page_css);
}

static void get_health(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    chat_hub_stats hs;
    chat_bus_stats bs;
    chat_hub_get_stats(api->o.hub, &hs);
    chat_bus_get_stats(api->o.bus, &bs);
    int stopping = hd_http_server_stopping(api->srv);
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "status",
        stopping ? "stopping" : "ok", "bus", chat_bus_name(api->o.bus), "instance", api->o.instance,
        "members", (json_int_t)hs.sessions, "listeners", (json_int_t)hs.listeners, "delivered",
        (json_int_t)hs.delivered, "dropped_listeners", (json_int_t)hs.dropped, "bus_sent",
        (json_int_t)bs.sent, "bus_received", (json_int_t)bs.received, "bus_rejected",
        (json_int_t)bs.rejected, "bus_sent_unheard", (json_int_t)bs.sent_unheard);
    common_headers(resp);
    hd_http_reply_json(resp, stopping ? 503 : 200, body);
}

static void get_rooms(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    json_t *rooms = json_array();
    for (size_t i = 0; i < chat_hub_room_count(api->o.hub); i++)
        json_array_append_new(rooms, json_pack("{s:s, s:I}", "name",
                                               chat_hub_room_name(api->o.hub, i), "listeners",
                                               (json_int_t)chat_hub_room_listeners(api->o.hub, i)));
    common_headers(resp);
    hd_http_reply_json(resp, 200, json_pack("{s:o}", "rooms", rooms));
}

/* The body's JSON object with the string member key; replies and returns NULL on failure.
 * *len receives the string's length (it may hold NULs: "\u0000" is valid JSON). */
static const char *body_string(hd_http_request *req, hd_http_response *resp, const char *key,
                               json_t **doc, size_t *len)
{
    hd_error err;
    *doc = NULL;
    if (hd_http_request_json(req, doc, &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return NULL;
    }
    json_t *v = json_is_object(*doc) ? json_object_get(*doc, key) : NULL;
    if (!json_is_string(v)) {
        hd_http_reply_problemf(resp, 422, NULL, "the body must be an object with a string '%s'",
                               key);
        json_decref(*doc);
        *doc = NULL;
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

/* The rate limit's key for the client: its address for IPv4, its /64 for IPv6 (one
 * subscriber usually holds a whole /64 and could rotate through it otherwise). */
static void client_key(hd_http_request *req, char out[HD_HTTP_ADDRESS_MAX])
{
    unsigned char a6[16];
    if (hd_http_request_client_address(req, out, HD_HTTP_ADDRESS_MAX) < 0)
        strcpy(out, "unknown"); /* all unknown peers share one bucket */
    else if (strchr(out, ':') != NULL && inet_pton(AF_INET6, out, a6) == 1) {
        memset(a6 + 8, 0, 8);
        inet_ntop(AF_INET6, a6, out, HD_HTTP_ADDRESS_MAX);
    }
}

/* Joins per client address: every join takes a member slot (HD_CHAT_MAX_MEMBERS) for up to
 * HD_CHAT_SESSION_TTL, so without a limit one client could fill them all and lock everybody
 * else out. 1 when the join may go ahead; else a 429 with Retry-After is set. */
static int join_allowed(chat_api *api, hd_http_request *req, hd_http_response *resp)
{
    char key[HD_HTTP_ADDRESS_MAX];
    int64_t wait_ms = 0;
    if (api->o.join_limit == NULL)
        return 1;
    client_key(req, key);
    if (hd_ratelimit_take(api->o.join_limit, key, &wait_ms) != 0)
        return 1;
    char retry[24];
    snprintf(retry, sizeof retry, "%lld", (long long)((wait_ms + 999) / 1000));
    hd_http_response_set_header(resp, "Retry-After", retry);
    hd_http_reply_problemf(resp, 429, NULL, "too many joins from this address: retry in %s s",
                           retry);
    return 0;
}

static void post_join(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    common_headers(resp);
    if (!join_allowed(api, req, resp))
        return;
    const char *room = path_room(api, req, resp);
    json_t *doc;
    size_t len;
    const char *name = room ? body_string(req, resp, "name", &doc, &len) : NULL;
    if (name == NULL)
        return;
    char token[CHAT_TOKEN_LEN + 1];
    hd_error err;
    int rc = strlen(name) == len ? chat_hub_join(api->o.hub, room, name, token, &err)
                                 : hd_error_set(&err, HD_EVALIDATE, "name: holds a NUL");
    if (rc < 0) {
        reply_refusal(resp, rc, err.text);
    } else {
        hd_http_response_set_header(resp, "Cache-Control", "no-store");
        hd_http_reply_json(
            resp, 201, json_pack("{s:s, s:s, s:s}", "token", token, "room", room, "name", name));
        sodium_memzero(token, sizeof token);
    }
    json_decref(doc);
}

static void post_message(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    common_headers(resp);
    const char *room = path_room(api, req, resp);
    if (room == NULL)
        return;
    chat_message m = {0};
    hd_error err;
    /* The credential before the body: a stranger learns nothing from our validation. */
    if (chat_hub_check(api->o.hub, room, bearer(req), m.name, &err) < 0) {
        reply_refusal(resp, err.code, err.text);
        return;
    }
    json_t *doc;
    size_t len;
    const char *text = body_string(req, resp, "text", &doc, &len);
    if (text == NULL)
        return;
    int rc = chat_text_check(text, len, &err);
    if (rc < 0) {
        hd_http_reply_problem(resp, rc == HD_ETOOBIG ? 413 : 422, NULL, err.text);
        json_decref(doc);
        return;
    }
    memcpy(m.text, text, len + 1);
    json_decref(doc);
    hd_uuid_v4(m.id);
    snprintf(m.room, sizeof m.room, "%s", room);
    snprintf(m.origin, sizeof m.origin, "%s", api->o.instance);
    m.at_ms = hd_time_now_ms();
    rc = chat_bus_post(api->o.bus, &m, &err);
    if (rc == HD_EBUSY || rc == HD_ESTATE) {
        hd_http_response_set_header(resp, "Retry-After", "1");
        hd_http_reply_problem(resp, 503, NULL, err.text);
    } else if (rc < 0) {
        /* The bus is down or refused: the client may try again; the detail (a broker's or
         * Redis' message) is logged, not sent. */
        hd_log_warn(api->o.logger, hd_http_request_correlation_id(req), "chat: bus send failed",
                    "error", err.text, NULL);
        hd_http_response_set_header(resp, "Retry-After", "1");
        hd_http_reply_problem(resp, 503, NULL, "the bus between the chat processes is unavailable");
    } else {
        hd_http_reply_json(resp, 202, json_pack("{s:s}", "id", m.id));
    }
}

static void post_leave(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    common_headers(resp);
    const char *room = path_room(api, req, resp);
    hd_error err;
    if (room == NULL)
        return;
    if (chat_hub_leave(api->o.hub, room, bearer(req), &err) < 0)
        reply_refusal(resp, err.code, err.text);
    else
        hd_http_reply_empty(resp, 204);
}

static void get_events(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    chat_api *api = ctx;
    common_headers(resp);
    const char *room = path_room(api, req, resp);
    if (room == NULL)
        return;
    /* EventSource cannot set headers, so the token comes as a query parameter (or, for
     * other clients, as a bearer token). The access log records the path without the
     * query, and Referrer-Policy keeps it out of Referer headers. */
    const char *token = hd_http_request_query(req, "token");
    if (token == NULL)
        token = bearer(req);
    chat_listener *l;
    hd_error err;
    if (chat_hub_subscribe(api->o.hub, room, token, &l, &err) < 0) {
        reply_refusal(resp, err.code, err.text);
        return;
    }
    hd_http_response_set_header(resp, "Cache-Control", "no-store");
    hd_http_response_set_header(resp, "X-Accel-Buffering", "no"); /* nginx: do not buffer */
    hd_http_reply_stream(resp, 200, "text/event-stream; charset=utf-8", chat_listener_read,
                         chat_listener_release, l);
}

int chat_api_new(hd_http_server *srv, const chat_api_options *o, chat_api **out, hd_error *err)
{
    *out = NULL;
    chat_api *api = calloc(1, sizeof *api);
    if (api == NULL)
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    api->o = *o;
    api->srv = srv;
    static const struct {
        const char *method, *pattern;
        hd_http_handler fn;
    } routes[] = {
        {"GET", "/", get_page},
        {"GET", "/chat.js", get_js},
        {"GET", "/chat.css", get_css},
        {"GET", "/health", get_health},
        {"GET", "/rooms", get_rooms},
        {"POST", "/rooms/{room}/join", post_join},
        {"POST", "/rooms/{room}/messages", post_message},
        {"POST", "/rooms/{room}/leave", post_leave},
        {"GET", "/rooms/{room}/events", get_events},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = hd_http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, api);
        if (rc < 0) {
            free(api);
            return hd_error_set(err, rc, "cannot route %s %s", routes[i].method, routes[i].pattern);
        }
    }
    *out = api;
    return 0;
}

void chat_api_free(chat_api *api)
{
    free(api);
}
