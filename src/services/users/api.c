/* users/api.c — the HTTP API; see api.h. */
#include "api.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/clock.h"
#include "herald/ratelimit.h"

struct users_http {
    users_app *app;
    char *admin_token;
    hd_logger *logger;
    hd_metrics *metrics;
    hd_counter *requests;
    hd_histogram *latency;
    users_health_fn health;
    void *health_ctx;
    hd_ratelimit *client_limit; /* borrowed; NULL: none */
    hd_ratelimit *email_limit;  /* borrowed; NULL: none */
    hd_counter *limited;        /* requests refused 429, by limit */
    hd_http_server *srv;
};

/* ---- JSON out -------------------------------------------------------------------------- */

void users_http_write_user(hd_jsonw *w, const user_view *v)
{
    char created[HD_TIME_LEN + 1], updated[HD_TIME_LEN + 1];
    hd_time_format(v->created_at_ms, created);
    hd_time_format(v->updated_at_ms, updated);
    /* Written, not built: the reply of every user route, GET /users/{id} the busiest, went
     * through a jansson object and its dump, a fifth of that GET's instructions (jsonw.h).
     * The bytes are the ones json_dumpb wrote for the object (unit.users_app compares).
     * Keys in this order on the wire. */
    HD_JSONW_LIT(w, "{\"id\":");
    hd_jsonw_string(w, v->id);
    HD_JSONW_LIT(w, ",\"email\":");
    hd_jsonw_string(w, v->email);
    HD_JSONW_LIT(w, ",\"name\":");
    hd_jsonw_string(w, v->name);
    HD_JSONW_LIT(w, ",\"verified\":");
    hd_jsonw_bool(w, v->verified);
    HD_JSONW_LIT(w, ",\"created_at\":");
    hd_jsonw_string(w, created);
    HD_JSONW_LIT(w, ",\"updated_at\":");
    hd_jsonw_string(w, updated);
    HD_JSONW_LIT(w, "}");
}

/* ---- JSON in ----------------------------------------------------------------------------- */

/* The body as a JSON object (new reference), or NULL after replying 400/413/415. */
static json_t *read_body(hd_http_request *req, hd_http_response *resp)
{
    json_t *in = NULL;
    hd_error err;
    if (hd_http_request_json(req, &in, &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return NULL;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        hd_http_reply_problem(resp, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    return in;
}

/* Record that field is invalid, and why, in errors (a JSON array). */
static void add_field_error(json_t *errors, const char *field, const char *detail)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "detail", detail));
}

/* The string member `name` of in: 1 with *out (borrowed from in) and *len (may be NULL)
 * set; 0 when it is absent or null and optional; 0 with an entry in errors when it is
 * required and absent, or not a string. */
static int member_string(json_t *in, const char *name, int required, const char **out, size_t *len,
                         json_t *errors)
{
    json_t *v = json_object_get(in, name);
    if (v == NULL || json_is_null(v)) {
        if (required)
            add_field_error(errors, name, "is required");
        return 0;
    }
    if (!json_is_string(v)) {
        add_field_error(errors, name, "must be a string");
        return 0;
    }
    *out = json_string_value(v);
    if (len != NULL)
        *len = json_string_length(v); /* the real length: the string may hold a NUL */
    return 1;
}

/* A domain parser's verdict on field: rc < 0 adds err's reason to errors. */
static void check_field(json_t *errors, const char *field, int rc, const hd_error *err)
{
    if (rc < 0)
        add_field_error(errors, field, err->text);
}

/* When errors holds anything, reply 422 listing every invalid field, and return 1. Takes
 * errors over (stolen) either way. */
static int reply_fields(hd_http_response *resp, json_t *errors)
{
    size_t n = json_array_size(errors);
    if (n == 0) {
        json_decref(errors);
        return 0;
    }
    char detail[64];
    snprintf(detail, sizeof detail, "%zu field%s invalid", n, n == 1 ? " is" : "s are");
    hd_http_reply_problem_json(resp, 422,
                               json_pack("{s:s, s:s, s:o}", "title", "Invalid fields", "detail",
                                         detail, "errors", errors));
    return 1;
}

/* ---- results out ---------------------------------------------------------------------------- */

/* A use case failed with rc: map it to a status. estate_status is what HD_ESTATE means on
 * this route (410 for tokens, 409 elsewhere). 5xx details are logged, not sent. */
static void reply_error(hd_http_response *resp, int rc, const hd_error *err, int estate_status)
{
    int status;
    switch (rc) {
    case HD_EBUSY:
        status = 409;
        break; /* changed concurrently: a conflict, retry */
    case HD_ESTATE:
        status = estate_status;
        break;
    case HD_ETIMEOUT:
        /* Every password hashing slot stayed busy (application.h): overloaded for a
         * moment, not broken. The reason is ours and safe to send. */
        hd_http_response_set_header(resp, "Retry-After", "1");
        status = 503;
        break;
    default:
        hd_http_reply_error(resp, rc, err->text);
        return;
    }
    hd_http_reply_problem(resp, status, NULL, err->text);
}

static void reply_user(hd_http_response *resp, int status, const user_view *v)
{
    hd_jsonw w;
    hd_jsonw_init(&w);
    users_http_write_user(&w, v);
    hd_http_reply_jsonw(resp, status, &w);
}

/* Admin routes: 1 when the bearer token is right, else 0 after replying 401. */
static int require_admin(users_http *h, hd_http_request *req, hd_http_response *resp)
{
    return hd_http_require_bearer(req, resp, h->admin_token) == 0;
}

/* ---- rate limits of the public routes -------------------------------------------------------
 * The four public routes do work for anybody: hash a password, write rows, send a mail. A
 * token bucket per client address bounds what one client may ask for; one per e-mail
 * address bounds the mails one inbox can be sent (register, password reset), whoever asks.
 * A refused request gets 429 with Retry-After, in whole seconds, rounded up. */

/* The key of the client's address: the address itself for IPv4; the /64 prefix for IPv6,
 * since one subscriber usually holds a whole /64 and could otherwise rotate through 2^64
 * keys. */
static void client_key(hd_http_request *req, char out[HD_HTTP_ADDRESS_MAX])
{
    if (hd_http_request_client_address(req, out, HD_HTTP_ADDRESS_MAX) < 0) {
        strcpy(out, "unknown"); /* all unknown peers share one bucket */
        return;
    }
    unsigned char a6[16];
    if (strchr(out, ':') != NULL && inet_pton(AF_INET6, out, a6) == 1) {
        memset(a6 + 8, 0, 8);
        inet_ntop(AF_INET6, a6, out, HD_HTTP_ADDRESS_MAX);
    }
}

/* 1 when key may go on under rl; else 0 after replying 429. */
static int allow(users_http *h, hd_ratelimit *rl, const char *which, const char *key,
                 hd_http_request *req, hd_http_response *resp)
{
    int64_t wait_ms = 0;
    if (rl == NULL || hd_ratelimit_take(rl, key, &wait_ms) != 0)
        return 1;
    char retry[24];
    snprintf(retry, sizeof retry, "%lld", (long long)((wait_ms + 999) / 1000));
    hd_http_response_set_header(resp, "Retry-After", retry);
    hd_http_reply_problemf(resp, 429, NULL, "too many requests for this %s: retry in %s s", which,
                           retry);
    if (h->limited != NULL)
        hd_counter_inc(h->limited, (const char *[]){which}, 1);
    /* debug: a flood of refusals must not become a flood of log lines */
    hd_log_debug(h->logger, hd_http_request_correlation_id(req), "rate limited", "limit", which,
                 NULL);
    return 0;
}

static int allow_client(users_http *h, hd_http_request *req, hd_http_response *resp)
{
    char key[HD_HTTP_ADDRESS_MAX];
    client_key(req, key);
    return allow(h, h->client_limit, "client address", key, req, resp);
}

static int allow_email(users_http *h, const email *addr, hd_http_request *req,
                       hd_http_response *resp)
{
    return allow(h, h->email_limit, "e-mail address", addr->text, req, resp);
}

/* ---- public routes ----------------------------------------------------------------------------
 */

/* POST /users {email, password, name?} */
static void post_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!allow_client(h, req, resp))
        return;
    json_t *in = read_body(req, resp);
    if (in == NULL)
        return;
    json_t *errors = json_array();
    hd_error err;
    const char *raw_email, *password = NULL, *raw_name = NULL;
    size_t password_len = 0;
    email addr;
    char name[USER_NAME_BYTES_MAX + 1] = "";
    if (member_string(in, "email", 1, &raw_email, NULL, errors))
        check_field(errors, "email", email_parse(raw_email, &addr, &err), &err);
    if (member_string(in, "password", 1, &password, &password_len, errors))
        check_field(errors, "password", password_check(password, password_len, &err), &err);
    if (member_string(in, "name", 0, &raw_name, NULL, errors))
        check_field(errors, "name", name_parse(raw_name, name, &err), &err);
    if (reply_fields(resp, errors) || !allow_email(h, &addr, req, resp)) {
        json_decref(in);
        return;
    }
    const char *cid = hd_http_request_correlation_id(req);
    user_view v;
    int rc = users_register(h->app, cid, &addr, password, password_len, name, &v, &err);
    json_decref(in); /* the password's last copy in this layer */
    if (rc < 0) {
        reply_error(resp, rc, &err, 409);
        return;
    }
    hd_log_info(h->logger, cid, "user registered", "user_id", v.id, "email", v.email, NULL);
    char location[16 + HD_UUID_LEN];
    snprintf(location, sizeof location, "/users/%s", v.id);
    hd_http_response_set_header(resp, "Location", location);
    reply_user(resp, 201, &v);
}

/* ---- the verification page --------------------------------------------------------------
 * The link in the verification mail (HD_USERS_VERIFY_BASE_URL + token) points here, so it
 * works for a person with nothing but a browser. Opening it does NOT verify: mail
 * providers and corporate gateways open every link of a message to scan it, and a GET
 * that verified would confirm the address before its owner saw the mail (or confirm an
 * address somebody else typed). The page shows a button; the browser POSTs the token as a
 * form, and only that verifies. */

/* 1 when s is a token's shape (64 hex digits): the page writes nothing else into HTML. */
static int token_shaped(const char *s)
{
    if (s == NULL || strlen(s) != USERS_TOKEN_LEN)
        return 0;
    return strspn(s, "0123456789abcdefABCDEF") == USERS_TOKEN_LEN;
}

/* A small, self-contained page: no script, no external resource, not cached, no Referer
 * (the URL holds the token), not framed. */
static void reply_page(hd_http_response *resp, int status, const char *title, const char *body)
{
    char html[4096];
    int n =
        snprintf(html, sizeof html,
                 "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                 "<meta name=\"robots\" content=\"noindex\">\n<title>%s</title>\n"
                 "<style>body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em;"
                 "line-height:1.5}button{font-size:1.1em;padding:.5em 1.5em}"
                 "small{color:#555}</style></head>\n<body><h1>%s</h1>\n%s</body></html>\n",
                 title, title, body);
    if (n < 0 || (size_t)n >= sizeof html) {
        hd_http_reply_error(resp, HD_ENOMEM, "the page does not fit");
        return;
    }
    hd_http_response_set_header(resp, "Cache-Control", "no-store");
    hd_http_response_set_header(resp, "Referrer-Policy", "no-referrer");
    hd_http_response_set_header(resp, "X-Frame-Options", "DENY");
    hd_http_response_set_header(resp, "Content-Security-Policy",
                                "default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'");
    hd_http_reply_text(resp, status, "text/html; charset=utf-8", html);
}

/* GET /users/verify?token=...: the page with the button. */
static void get_verify_page(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!allow_client(h, req, resp))
        return;
    const char *token = hd_http_request_query(req, "token");
    if (!token_shaped(token)) {
        /* A browser (Accept: text/html) gets a page; an API client the usual problem. */
        const char *accept = hd_http_request_header(req, "Accept");
        if (accept == NULL || strstr(accept, "text/html") == NULL) {
            hd_http_reply_problemf(resp, 400, NULL,
                                   "query parameter 'token': must be %d "
                                   "hexadecimal characters",
                                   USERS_TOKEN_LEN);
            return;
        }
        reply_page(resp, 400, "This link is incomplete",
                   "<p>The verification link is missing part of its token. Copy the whole "
                   "link from the e-mail into the address bar, or ask for a new one.</p>\n");
        return;
    }
    char body[1024];
    /* The token is 64 hex digits (checked above): nothing in it needs escaping. The action
     * is relative, so the page works behind a proxy that adds a path prefix. */
    snprintf(body, sizeof body,
             "<p>Press the button to confirm that this e-mail address is yours.</p>\n"
             "<form method=\"post\" action=\"verify\">\n"
             "<input type=\"hidden\" name=\"token\" value=\"%s\">\n"
             "<button type=\"submit\">Confirm my address</button>\n</form>\n"
             "<p><small>Why a button? Mail services open the links in a message to check "
             "them for malware. If opening this link confirmed the address, such a link "
             "scanner would confirm it for you &mdash; even when it was not you who signed "
             "up. Only a person pressing the button does.</small></p>\n",
             token);
    reply_page(resp, 200, "Confirm your e-mail address", body);
}

/* The token of a form body "token=...&..." (application/x-www-form-urlencoded) into out;
 * 1 when found with a token's shape. Hex needs no percent-decoding. */
static int form_token(hd_http_request *req, char out[USERS_TOKEN_LEN + 1])
{
    size_t len = 0;
    const char *body = hd_http_request_body(req, &len);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i == 6 + USERS_TOKEN_LEN && memcmp(body + i, "token=", 6) == 0) {
            memcpy(out, body + i + 6, USERS_TOKEN_LEN);
            out[USERS_TOKEN_LEN] = '\0';
            return token_shaped(out);
        }
        i = end + 1;
    }
    return 0;
}

/* POST /users/verify from the page's form: the same use case, answered as a page. */
static void post_verify_form(users_http *h, hd_http_request *req, hd_http_response *resp)
{
    char token[USERS_TOKEN_LEN + 1];
    if (!form_token(req, token)) {
        reply_page(resp, 400, "This link is incomplete",
                   "<p>The form did not carry a whole token. Open the link from the e-mail "
                   "again.</p>\n");
        return;
    }
    const char *cid = hd_http_request_correlation_id(req);
    hd_error err;
    user_view v;
    int rc = users_verify_email(h->app, cid, token, &v, &err);
    if (rc == 0) {
        hd_log_info(h->logger, cid, "email verified", "user_id", v.id, "via", "page", NULL);
        reply_page(resp, 200, "Your address is confirmed",
                   "<p>Thank you. You can close this page.</p>\n");
    } else if (rc == HD_ENOTFOUND || rc == HD_ESTATE || rc == HD_EINVAL) {
        hd_log_info(h->logger, cid, "email verification refused", "reason", err.text, NULL);
        reply_page(resp,
                   rc == HD_ESTATE      ? 410
                   : rc == HD_ENOTFOUND ? 404
                                        : 400,
                   "This link cannot be used",
                   "<p>The link was already used, has expired, or is not one we sent. If your "
                   "address is not confirmed yet, ask for a new link.</p>\n");
    } else {
        reply_error(resp, rc, &err, 410); /* 5xx: problem+json, details in the log */
    }
}

/* POST /users/verify {token}, or the page's form (application/x-www-form-urlencoded). */
static void post_verify(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!allow_client(h, req, resp))
        return;
    const char *ctype = hd_http_request_header(req, "Content-Type");
    if (ctype != NULL && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) == 0) {
        post_verify_form(h, req, resp);
        return;
    }
    json_t *in = read_body(req, resp);
    if (in == NULL)
        return;
    json_t *errors = json_array();
    const char *token = NULL;
    member_string(in, "token", 1, &token, NULL, errors);
    if (reply_fields(resp, errors)) {
        json_decref(in);
        return;
    }
    const char *cid = hd_http_request_correlation_id(req);
    hd_error err;
    user_view v;
    int rc = users_verify_email(h->app, cid, token, &v, &err);
    json_decref(in);
    if (rc < 0) {
        /* 400 malformed, 404 never issued, 410 used or expired: the client can tell "the
         * link is broken" from "the link is old" and offer a new one. */
        reply_error(resp, rc, &err, 410);
        hd_log_info(h->logger, cid, "email verification refused", "reason", err.text, NULL);
        return;
    }
    hd_log_info(h->logger, cid, "email verified", "user_id", v.id, NULL);
    reply_user(resp, 200, &v);
}

/* POST /users/password-reset {email}: 202 whether or not the address has an account. */
static void post_password_reset(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!allow_client(h, req, resp))
        return;
    json_t *in = read_body(req, resp);
    if (in == NULL)
        return;
    json_t *errors = json_array();
    hd_error err;
    const char *raw_email;
    email addr;
    if (member_string(in, "email", 1, &raw_email, NULL, errors))
        check_field(errors, "email", email_parse(raw_email, &addr, &err), &err);
    json_decref(in);
    if (reply_fields(resp, errors) || !allow_email(h, &addr, req, resp))
        return;
    const char *cid = hd_http_request_correlation_id(req);
    int rc = users_request_password_reset(h->app, cid, &addr, &err);
    if (rc < 0) {
        reply_error(resp, rc, &err, 409);
        return;
    }
    /* The log may say which case it was (operators need it); the reply must not. */
    hd_log_info(h->logger, cid, "password reset requested", "email", addr.text, "issued",
                rc == 1 ? "true" : "false", NULL);
    hd_http_reply_json(resp, 202,
                       json_pack("{s:s}", "message",
                                 "If an account exists for this address, a link to reset its "
                                 "password is on its way."));
}

/* POST /users/password-reset/confirm {token, password}: 204 when the password changed. */
static void post_password_reset_confirm(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!allow_client(h, req, resp))
        return;
    json_t *in = read_body(req, resp);
    if (in == NULL)
        return;
    json_t *errors = json_array();
    hd_error err;
    const char *token = NULL, *password = NULL;
    size_t password_len = 0;
    member_string(in, "token", 1, &token, NULL, errors);
    if (member_string(in, "password", 1, &password, &password_len, errors))
        check_field(errors, "password", password_check(password, password_len, &err), &err);
    if (reply_fields(resp, errors)) {
        json_decref(in);
        return;
    }
    const char *cid = hd_http_request_correlation_id(req);
    int rc = users_reset_password(h->app, cid, token, password, password_len, &err);
    json_decref(in);
    if (rc < 0) {
        reply_error(resp, rc, &err, 410); /* as for verification: 400, 404, 410 */
        hd_log_info(h->logger, cid, "password reset refused", "reason", err.text, NULL);
        return;
    }
    hd_log_info(h->logger, cid, "password reset", NULL);
    hd_http_reply_empty(resp, 204);
}

/* ---- admin routes -----------------------------------------------------------------------------
 */

/* Replies {"items":[...],"next_cursor":"..." | null}. */
static void reply_users(hd_http_response *resp, const user_view *items, size_t n,
                        const char *next_cursor)
{
    hd_jsonw w;
    hd_jsonw_init(&w);
    HD_JSONW_LIT(&w, "{\"items\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            HD_JSONW_LIT(&w, ",");
        users_http_write_user(&w, &items[i]);
    }
    HD_JSONW_LIT(&w, "],\"next_cursor\":");
    hd_jsonw_string(&w, next_cursor && *next_cursor ? next_cursor : NULL);
    HD_JSONW_LIT(&w, "}");
    hd_http_reply_jsonw(resp, 200, &w);
}

/* GET /users?email=... : the collection filtered to at most one user. */
static void find_by_email(users_http *h, hd_http_response *resp, const char *raw)
{
    email addr;
    hd_error err;
    if (email_parse(raw, &addr, &err) < 0) {
        hd_http_reply_problemf(resp, 400, NULL, "query parameter 'email': %s", err.text);
        return;
    }
    user_view v;
    int rc = users_get_by_email(h->app, &addr, &v, &err);
    if (rc < 0 && rc != HD_ENOTFOUND) {
        reply_error(resp, rc, &err, 409);
        return;
    }
    reply_users(resp, &v, rc == 0 ? 1 : 0, NULL);
}

/* GET /users?limit=&cursor= or ?email= */
static void get_users(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!require_admin(h, req, resp))
        return;
    const char *raw_email = hd_http_request_query(req, "email");
    if (raw_email != NULL) {
        find_by_email(h, resp, raw_email);
        return;
    }
    int64_t limit;
    hd_error err;
    if (hd_http_request_query_int(req, "limit", USERS_PAGE_DEFAULT, 1, USERS_PAGE_MAX, &limit,
                                  &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return;
    }
    users_page page;
    int rc = users_list(h->app, hd_http_request_query(req, "cursor"), (size_t)limit, &page, &err);
    if (rc == HD_EINVAL)
        hd_http_reply_problem(resp, 400, NULL,
                              "query parameter 'cursor': not a cursor from this API");
    else if (rc < 0)
        reply_error(resp, rc, &err, 409);
    else
        reply_users(resp, page.items, page.count, page.next_cursor);
    users_page_release(&page);
}

/* GET /users/{id} */
static void get_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!require_admin(h, req, resp))
        return;
    user_view v;
    hd_error err;
    int rc = users_get(h->app, hd_http_request_param(req, "id"), &v, &err);
    if (rc < 0)
        reply_error(resp, rc, &err, 409);
    else
        reply_user(resp, 200, &v);
}

/* PATCH /users/{id} {name}: the name only (domain.h says why not the email). */
static void patch_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!require_admin(h, req, resp))
        return;
    json_t *in = read_body(req, resp);
    if (in == NULL)
        return;
    json_t *errors = json_array();
    hd_error err;
    const char *raw_name;
    char name[USER_NAME_BYTES_MAX + 1] = "";
    if (json_object_get(in, "email") != NULL)
        add_field_error(errors, "email", "cannot be changed");
    if (json_object_get(in, "password") != NULL)
        add_field_error(errors, "password", "cannot be changed here: request a password reset");
    if (member_string(in, "name", 1, &raw_name, NULL, errors))
        check_field(errors, "name", name_parse(raw_name, name, &err), &err);
    json_decref(in);
    if (reply_fields(resp, errors))
        return;
    const char *cid = hd_http_request_correlation_id(req);
    user_view v;
    int rc = users_rename(h->app, cid, hd_http_request_param(req, "id"), name, &v, &err);
    if (rc < 0) {
        reply_error(resp, rc, &err, 409);
        return;
    }
    hd_log_info(h->logger, cid, "user updated", "user_id", v.id, NULL);
    reply_user(resp, 200, &v);
}

/* DELETE /users/{id} */
static void delete_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    users_http *h = ctx;
    if (!require_admin(h, req, resp))
        return;
    const char *cid = hd_http_request_correlation_id(req);
    const char *id = hd_http_request_param(req, "id");
    hd_error err;
    int rc = users_delete(h->app, cid, id, &err);
    if (rc < 0) {
        reply_error(resp, rc, &err, 409);
        return;
    }
    hd_log_info(h->logger, cid, "user deleted", "user_id", id, NULL);
    hd_http_reply_empty(resp, 204);
}

/* ---- operations
 * ---------------------------------------------------------------------------------- */

/* GET /health: 503 while stopping (so a load balancer drains us) or when a dependency is
 * down; the body says which. */
static void get_health(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    users_http *h = ctx;
    json_t *checks = json_object();
    int ok = 1;
    if (hd_http_server_stopping(h->srv)) {
        json_object_set_new(checks, "server", json_string("stopping"));
        ok = 0;
    }
    if (h->health != NULL && h->health(h->health_ctx, checks) < 0)
        ok = 0;
    hd_http_reply_json(
        resp, ok ? 200 : 503,
        json_pack("{s:s, s:o}", "status", ok ? "ok" : "unavailable", "checks", checks));
}

/* GET /metrics */
static void get_metrics(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    users_http *h = ctx;
    char *text = NULL;
    if (hd_metrics_render(h->metrics, &text, NULL) < 0) {
        hd_http_reply_error(resp, HD_ENOMEM, "cannot render the metrics");
        return;
    }
    hd_http_reply_text(resp, 200, HD_METRICS_CONTENT_TYPE, text);
    free(text);
}

/* Every answered request: counted by route pattern and status, timed, logged. */
static void observe(const hd_http_access *a, void *ctx)
{
    users_http *h = ctx;
    if (h->metrics != NULL) {
        char status[8];
        snprintf(status, sizeof status, "%d", a->status);
        hd_counter_inc(h->requests, (const char *[]){a->method, a->route, status}, 1);
        hd_histogram_observe(h->latency, (const char *[]){a->method, a->route}, a->duration_s);
    }
    hd_http_log_access(h->logger, a);
}

/* ---- wiring
 * ---------------------------------------------------------------------------------------- */

int users_http_new(hd_http_server *srv, const users_http_options *opts, users_http **out,
                   hd_error *err)
{
    if (srv == NULL || opts == NULL || opts->app == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "users_http_new: NULL argument");
    users_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    h->app = opts->app;
    h->admin_token = strdup(opts->admin_token ? opts->admin_token : "");
    h->logger = opts->logger;
    h->metrics = opts->metrics;
    h->health = opts->health;
    h->health_ctx = opts->health_ctx;
    h->client_limit = opts->client_limit;
    h->email_limit = opts->email_limit;
    h->srv = srv;
    if (h->metrics != NULL) {
        h->requests = hd_metrics_counter(h->metrics, "http_requests_total",
                                         "HTTP requests answered, by route pattern and status.",
                                         "method", "route", "status", NULL);
        h->latency = hd_metrics_histogram(h->metrics, "http_request_duration_seconds",
                                          "Time to answer an HTTP request.", NULL, 0, "method",
                                          "route", NULL);
        h->limited =
            hd_metrics_counter(h->metrics, "users_rate_limited_total",
                               "Public requests refused with 429, by limit.", "limit", NULL);
    }
    if (h->admin_token == NULL ||
        (h->metrics != NULL && (!h->requests || !h->latency || !h->limited))) {
        users_http_free(h);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    const struct {
        const char *method, *pattern;
        hd_http_handler fn;
    } routes[] = {
        {"POST", "/users", post_user},
        {"POST", "/users/verify", post_verify},
        {"GET", "/users/verify", get_verify_page},
        {"POST", "/users/password-reset", post_password_reset},
        {"POST", "/users/password-reset/confirm", post_password_reset_confirm},
        {"GET", "/users", get_users},
        {"GET", "/users/{id}", get_user},
        {"PATCH", "/users/{id}", patch_user},
        {"DELETE", "/users/{id}", delete_user},
        {"GET", "/health", get_health},
        {"GET", "/metrics", get_metrics},
    };
    size_t n = sizeof routes / sizeof routes[0] - (h->metrics == NULL);
    for (size_t i = 0; i < n; i++) {
        int rc = hd_http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, h);
        if (rc < 0) {
            users_http_free(h);
            return hd_error_set(err, rc, "cannot route %s %s", routes[i].method, routes[i].pattern);
        }
    }
    hd_http_server_observe(srv, observe, h);
    *out = h;
    return 0;
}

void users_http_free(users_http *h)
{
    if (h == NULL)
        return;
    free(h->admin_token);
    free(h);
}
