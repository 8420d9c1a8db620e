/* Unit tests for herald/http.h: a real server on an ephemeral port, driven by libcurl.
 * No external server is needed: the test starts its own on 127.0.0.1. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/http.h"

#define TOKEN "s3cret-token"

/* ---- a client ---------------------------------------------------------------------------- */

struct reply {
    long status;
    char body[8192];
    size_t len;
    char headers[8192];
    size_t hlen;
    CURLcode rc;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n;
    if (r->len + len < sizeof r->body) {
        memcpy(r->body + r->len, data, len);
        r->len += len;
        r->body[r->len] = '\0';
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n;
    if (r->hlen + len < sizeof r->headers) {
        memcpy(r->headers + r->hlen, data, len);
        r->hlen += len;
        r->headers[r->hlen] = '\0';
    }
    return len;
}

/* The value of response header name (case-insensitive) copied into out, or NULL. */
static const char *header(const struct reply *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r\n");
            if (len >= cap)
                len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return out;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}

struct call {
    const char *method;
    const char *target;
    const char *content_type;
    const char *body;
    size_t body_len; /* 0 = strlen(body) */
    int chunked;
    const char *headers[4];
};

static void perform(uint16_t port, const struct call *c, struct reply *r)
{
    memset(r, 0, sizeof *r);
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)port, c->target);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    struct curl_slist *hs = NULL;
    char ct[256];
    if (c->content_type) {
        snprintf(ct, sizeof ct, "Content-Type: %s", c->content_type);
        hs = curl_slist_append(hs, ct);
    }
    for (int i = 0; i < 4 && c->headers[i]; i++)
        hs = curl_slist_append(hs, c->headers[i]);
    if (c->chunked)
        hs = curl_slist_append(hs, "Transfer-Encoding: chunked");
    hs = curl_slist_append(hs, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method ? c->method : "GET");
    if (c->method && strcmp(c->method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (c->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                         c->chunked ? -1L : (long)(c->body_len ? c->body_len : strlen(c->body)));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    r->rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(curl);
}

static json_t *body_json(const struct reply *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->len, 0, &je);
    if (j == NULL)
        print_error("not JSON (%s): %s\n", je.text, r->body);
    assert_non_null(j);
    return j;
}

/* Check an RFC 7807 body: content type, members, and the correlation id header. */
static void assert_problem(const struct reply *r, int status, const char *instance)
{
    char v[256];
    assert_int_equal(r->status, status);
    assert_non_null(header(r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/problem+json");
    assert_non_null(header(r, "X-Correlation-Id", v, sizeof v));
    json_t *p = body_json(r);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "about:blank");
    assert_string_equal(json_string_value(json_object_get(p, "title")), hd_http_reason(status));
    assert_int_equal(json_integer_value(json_object_get(p, "status")), status);
    assert_string_equal(json_string_value(json_object_get(p, "instance")), instance);
    json_decref(p);
}

/* ---- the server under test --------------------------------------------------------------- */

/* What the observer reported for one request. */
struct record {
    char route[128];
    char method[16];
    int status;
    double duration;
    size_t request_bytes;
    char cid[HD_HTTP_CORRELATION_MAX + 1];
};

#define HISTORY 64

/* The observer runs after the response is sent, so a client can hold its answer before the
 * observer has run: tests wait for the record of their request, found by correlation id. */
struct seen {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int count;
    struct record ring[HISTORY];
};

struct fixture {
    hd_http_server *srv;
    uint16_t port;
    struct seen seen;
    /* the concurrency rendezvous */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside;
    int entered_slow;
};

static void observe(const hd_http_access *a, void *ctx)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->lock);
    struct record *r = &s->ring[s->count++ % HISTORY];
    snprintf(r->route, sizeof r->route, "%s", a->route);
    snprintf(r->method, sizeof r->method, "%s", a->method);
    snprintf(r->cid, sizeof r->cid, "%s", a->correlation_id);
    r->status = a->status;
    r->duration = a->duration_s;
    r->request_bytes = a->request_bytes;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* The record of the request with correlation id cid, waiting up to 5 s for it. Returned
 * as a copy, so that the caller asserts with no lock held: a failing cmocka assert jumps
 * out of the function, and a lock left held would hang the server's stop. */
static struct record observed(struct fixture *fx, const char *cid)
{
    struct record found = {.status = -1};
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&fx->seen.lock);
    for (int rc = 0; found.status < 0 && rc == 0;) {
        int n = fx->seen.count < HISTORY ? fx->seen.count : HISTORY;
        for (int i = 0; i < n; i++)
            if (strcmp(fx->seen.ring[i].cid, cid) == 0)
                found = fx->seen.ring[i];
        if (found.status < 0)
            rc = pthread_cond_timedwait(&fx->seen.cond, &fx->seen.lock, &deadline);
    }
    pthread_mutex_unlock(&fx->seen.lock);
    if (found.status < 0)
        print_error("the observer never reported correlation id %s\n", cid);
    assert_true(found.status >= 0);
    return found;
}

static void get_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)ctx;
    hd_http_reply_json(resp, 200,
                       json_pack("{s:s, s:s, s:s}", "id", hd_http_request_param(req, "id"), "route",
                                 hd_http_request_route(req), "path", hd_http_request_path(req)));
}

static void patch_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    (void)ctx;
    hd_http_reply_empty(resp, 204);
}

static void verify_user(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    (void)ctx;
    hd_http_reply_json(resp, 200, json_pack("{s:b}", "verified", 1));
}

static void list_users(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)ctx;
    hd_error err;
    int64_t limit;
    if (hd_http_request_query_int(req, "limit", 20, 1, 100, &limit, &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return;
    }
    const char *email = hd_http_request_query(req, "email");
    const char *name = hd_http_request_query(req, "name");
    const char *flag = hd_http_request_query(req, "flag");
    hd_http_reply_json(resp, 200,
                       json_pack("{s:I, s:s?, s:s?, s:s?}", "limit", (json_int_t)limit, "email",
                                 email, "name", name, "flag", flag));
}

static void echo(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)ctx;
    json_t *in;
    hd_error err;
    if (hd_http_request_json(req, &in, &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return;
    }
    hd_http_reply_json(resp, 201, in);
}

static void secret(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    if (hd_http_require_bearer(req, resp, ctx) < 0)
        return;
    hd_http_reply_text(resp, 200, NULL, "welcome");
}

static void whoami(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)ctx;
    hd_http_reply_text(resp, 200, NULL, hd_http_request_correlation_id(req));
}

static void no_reply(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    (void)resp;
    (void)ctx;
}

static void fails(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    (void)ctx;
    hd_http_reply_error(resp, HD_ESTORE, "SELECT * FROM users: disk I/O error at /var/db");
}

static void custom_problem(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    (void)ctx;
    /* No cmocka asserts here: this runs on a server thread. The checks travel back in a
     * header instead. */
    int refused =
        hd_http_response_set_header(resp, "X-Evil", "a\r\nSet-Cookie: x=1") == HD_EINVAL &&
        hd_http_response_set_header(resp, "Bad Name", "x") == HD_EINVAL;
    hd_http_response_set_header(resp, "X-Extra", "1");
    hd_http_response_set_header(resp, "X-Refused", refused ? "yes" : "no");
    hd_http_reply_problem_json(
        resp, 422,
        json_pack("{s:s, s:s, s:[{s:s, s:s}]}", "type", "https://herald.example/problems/invalid",
                  "title", "Invalid user", "errors", "field", "email", "reason", "not an email"));
}

/* Waits until `want` handlers are inside at the same time (or 5 s pass): only a server
 * that runs handlers concurrently gets them all in. */
static void rendezvous(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    struct fixture *fx = ctx;
    int64_t want = 0;
    hd_http_request_query_int(req, "want", 4, 1, 64, &want, NULL);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&fx->lock);
    fx->inside++;
    pthread_cond_broadcast(&fx->cond);
    int rc = 0;
    while (fx->inside < want && rc == 0)
        rc = pthread_cond_timedwait(&fx->cond, &fx->lock, &deadline);
    int met = fx->inside >= want;
    pthread_mutex_unlock(&fx->lock);
    hd_http_reply_text(resp, met ? 200 : 504, NULL, met ? "together" : "alone");
}

/* Signals that it started, then takes its time. */
static void slow(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    (void)req;
    struct fixture *fx = ctx;
    pthread_mutex_lock(&fx->lock);
    fx->entered_slow = 1;
    pthread_cond_broadcast(&fx->cond);
    pthread_mutex_unlock(&fx->lock);
    hd_sleep_ms(400);
    hd_http_reply_text(resp, 200, NULL, "finished");
}

static struct fixture *start_server(const hd_http_options *opts)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    pthread_mutex_init(&fx->seen.lock, NULL);
    pthread_cond_init(&fx->seen.cond, NULL);
    pthread_mutex_init(&fx->lock, NULL);
    pthread_cond_init(&fx->cond, NULL);
    hd_error err;
    assert_hd_err(HD_OK, hd_http_server_new(opts, &fx->srv, &err), &err);
    hd_http_server *s = fx->srv;
    assert_hd(HD_OK, hd_http_route(s, "GET", "/users/{id}", get_user, NULL));
    assert_hd(HD_OK, hd_http_route(s, "PATCH", "/users/{id}", patch_user, NULL));
    assert_hd(HD_OK, hd_http_route(s, "DELETE", "/users/{id}", patch_user, NULL));
    assert_hd(HD_OK, hd_http_route(s, "POST", "/users/verify", verify_user, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/users", list_users, NULL));
    assert_hd(HD_OK, hd_http_route(s, "POST", "/echo", echo, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/secret", secret, TOKEN));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/locked", secret, ""));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/whoami", whoami, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/no-reply", no_reply, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/fails", fails, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/custom", custom_problem, NULL));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/together", rendezvous, fx));
    assert_hd(HD_OK, hd_http_route(s, "GET", "/slow", slow, fx));
    hd_http_server_observe(s, observe, &fx->seen);
    assert_hd_err(HD_OK, hd_http_server_start(s, &err), &err);
    fx->port = hd_http_server_port(s);
    assert_true(fx->port > 0);
    return fx;
}

static void stop_server(struct fixture *fx)
{
    hd_http_server_free(fx->srv);
    pthread_cond_destroy(&fx->cond);
    pthread_mutex_destroy(&fx->lock);
    pthread_cond_destroy(&fx->seen.cond);
    pthread_mutex_destroy(&fx->seen.lock);
    free(fx);
}

static int setup(void **state)
{
    hd_http_options opts = {.max_body_bytes = 1024, .stop_timeout_ms = 5000};
    *state = start_server(&opts);
    return 0;
}

static int teardown(void **state)
{
    stop_server(*state);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void routes_match_with_decoded_path_params(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port, &(struct call){.target = "/users/42"}, &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "42");
    assert_string_equal(json_string_value(json_object_get(j, "route")), "/users/{id}");
    json_decref(j);

    /* An escaped slash stays inside its segment; the raw path is kept for logs. */
    perform(fx->port, &(struct call){.target = "/users/a%2Fb%20c"}, &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "a/b c");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/users/a%2Fb%20c");
    json_decref(j);

    /* A literal and a parameter side by side: the method decides first, then the literal. */
    perform(fx->port, &(struct call){.method = "POST", .target = "/users/verify"}, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"verified\":true}");
    perform(fx->port, &(struct call){.target = "/users/verify"}, &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "verify");
    json_decref(j);

    perform(fx->port, &(struct call){.method = "DELETE", .target = "/users/7"}, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);

    /* HEAD is served by the GET route, without a body. */
    perform(fx->port, &(struct call){.method = "HEAD", .target = "/users/7"}, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);

    /* Malformed escapes are a 400, not a crash or a silent mismatch. */
    perform(fx->port, &(struct call){.target = "/users/%zz"}, &r);
    assert_problem(&r, 400, "/users/%zz");
    perform(fx->port, &(struct call){.target = "/users/a%00b"}, &r);
    assert_problem(&r, 400, "/users/a%00b");
}

static void query_params_are_url_decoded(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port,
            &(struct call){.target = "/users?email=a%2Bb%40example.com&name=J+Doe&flag&limit=5"
                                     "&email=second"},
            &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "email")), "a+b@example.com");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "J Doe");
    assert_string_equal(json_string_value(json_object_get(j, "flag")), "");
    assert_int_equal(json_integer_value(json_object_get(j, "limit")), 5);
    json_decref(j);

    perform(fx->port, &(struct call){.target = "/users"}, &r);
    j = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "limit")), 20); /* the default */
    assert_true(json_is_null(json_object_get(j, "email"))); /* s? packs NULL as null */
    json_decref(j);

    perform(fx->port, &(struct call){.target = "/users?limit=abc"}, &r);
    assert_problem(&r, 400, "/users");
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "detail")),
                        "query parameter 'limit': 'abc' is not an integer");
    json_decref(j);
    perform(fx->port, &(struct call){.target = "/users?limit=1000"}, &r);
    assert_problem(&r, 400, "/users");

    perform(fx->port, &(struct call){.target = "/users?email=%G1"}, &r);
    assert_problem(&r, 400, "/users");
}

static void unknown_path_is_a_404_problem(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port, &(struct call){.target = "/nowhere?x=1"}, &r);
    assert_problem(&r, 404, "/nowhere");
    /* Trailing slashes are significant, and parameters never match an empty segment. */
    perform(fx->port, &(struct call){.target = "/users/"}, &r);
    assert_problem(&r, 404, "/users/");
    perform(fx->port, &(struct call){.target = "/users/1/2"}, &r);
    assert_problem(&r, 404, "/users/1/2");
}

static void wrong_method_is_a_405_with_allow(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    char allow[256];
    perform(fx->port, &(struct call){.method = "POST", .target = "/users/42"}, &r);
    assert_problem(&r, 405, "/users/42");
    assert_non_null(header(&r, "Allow", allow, sizeof allow));
    assert_string_equal(allow, "GET, PATCH, DELETE, HEAD");

    perform(fx->port, &(struct call){.method = "PUT", .target = "/echo"}, &r);
    assert_problem(&r, 405, "/echo");
    assert_non_null(header(&r, "Allow", allow, sizeof allow));
    assert_string_equal(allow, "POST");
}

static void oversized_body_is_a_413_problem(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    char big[4000];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = '\0';

    /* Declared length over the limit: refused before the body is read. */
    perform(
        fx->port,
        &(struct call){
            .method = "POST", .target = "/echo", .content_type = "application/json", .body = big},
        &r);
    assert_problem(&r, 413, "/echo");

    /* Chunked, so no length is declared: counted while it streams, then refused. */
    big[1500] = '\0';
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/json",
                           .body = big,
                           .chunked = 1,
                           .headers = {"X-Correlation-Id: t-chunked"}},
            &r);
    assert_problem(&r, 413, "/echo");
    /* The body really streamed (and was counted) rather than being refused by its length. */
    struct record rec = observed(fx, "t-chunked");
    assert_int_equal(rec.request_bytes, 1500);
    assert_int_equal(rec.status, 413);
    assert_string_equal(rec.route, "/echo");

    /* A client that keeps streaming far past the limit loses its connection: the server
     * does not read (or buffer) an unbounded body just to be able to say 413. */
    char huge[5000];
    memset(huge, 'x', sizeof huge);
    huge[sizeof huge - 1] = '\0';
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/json",
                           .body = huge,
                           .chunked = 1},
            &r);
    assert_true(r.status == 0 || r.status == 413);

    /* Exactly at the limit is fine. */
    char fits[1025];
    memset(fits, ' ', 1024);
    fits[0] = '[';
    fits[1022] = ']';
    fits[1024] = '\0';
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/json",
                           .body = fits,
                           .headers = {"X-Correlation-Id: t-fits"}},
            &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "[]");
    assert_int_equal(observed(fx, "t-fits").request_bytes, 1024);
}

static void malformed_json_is_a_400_problem_naming_the_position(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/json",
                           .body = "{\"email\": \"a@b.c\",\n \"age\": }"},
            &r);
    assert_problem(&r, 400, "/echo");
    json_t *p = body_json(&r);
    const char *detail = json_string_value(json_object_get(p, "detail"));
    assert_non_null(detail);
    assert_non_null(strstr(detail, "malformed JSON at line 2, column"));
    json_decref(p);

    /* Duplicate keys are malformed too. */
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/json",
                           .body = "{\"role\":\"user\",\"role\":\"admin\"}"},
            &r);
    assert_problem(&r, 400, "/echo");

    /* Not JSON at all: 415; nothing: 400. */
    perform(fx->port,
            &(struct call){
                .method = "POST", .target = "/echo", .content_type = "text/plain", .body = "{}"},
            &r);
    assert_problem(&r, 415, "/echo");
    perform(fx->port, &(struct call){.method = "POST", .target = "/echo", .body = "{}"}, &r);
    assert_problem(&r, 415, "/echo"); /* curl's default form type */
    perform(fx->port,
            &(struct call){.method = "POST", .target = "/echo", .content_type = "application/json"},
            &r);
    assert_problem(&r, 400, "/echo");

    /* Parameters and +json suffixes are JSON. */
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "Application/JSON; charset=utf-8",
                           .body = "{\"a\":1}"},
            &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "{\"a\":1}");
    perform(fx->port,
            &(struct call){.method = "POST",
                           .target = "/echo",
                           .content_type = "application/merge-patch+json",
                           .body = "{\"a\":null}"},
            &r);
    assert_int_equal(r.status, 201);
}

static void bearer_credentials_are_checked(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    char v[256];
    perform(fx->port, &(struct call){.target = "/secret"}, &r);
    assert_problem(&r, 401, "/secret");
    assert_non_null(header(&r, "WWW-Authenticate", v, sizeof v));
    assert_string_equal(v, "Bearer realm=\"herald\"");

    const char *wrong[] = {"Authorization: Bearer s3cret-toke",
                           "Authorization: Bearer s3cret-token2",
                           "Authorization: Bearer S3CRET-TOKEN", "Authorization: Basic czNjcmV0"};
    for (size_t i = 0; i < 4; i++) {
        perform(fx->port, &(struct call){.target = "/secret", .headers = {wrong[i]}}, &r);
        assert_problem(&r, 401, "/secret");
        assert_non_null(header(&r, "WWW-Authenticate", v, sizeof v));
        if (i < 3)
            assert_string_equal(v, "Bearer realm=\"herald\", error=\"invalid_token\"");
    }

    perform(fx->port,
            &(struct call){.target = "/secret", .headers = {"Authorization: Bearer " TOKEN}}, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "welcome");
    perform(fx->port,
            &(struct call){.target = "/secret", .headers = {"authorization: bearer " TOKEN}}, &r);
    assert_int_equal(r.status, 200);

    /* An empty expected token (a missing setting) refuses everyone, even an empty guess. */
    perform(fx->port, &(struct call){.target = "/locked", .headers = {"Authorization: Bearer "}},
            &r);
    assert_problem(&r, 401, "/locked");
}

static void correlation_id_is_echoed_or_generated(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    char v[256];
    perform(fx->port,
            &(struct call){.target = "/whoami", .headers = {"X-Correlation-Id: order-42.a:b"}}, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "order-42.a:b");
    assert_string_equal(header(&r, "X-Correlation-Id", v, sizeof v), "order-42.a:b");
    assert_string_equal(observed(fx, "order-42.a:b").route, "/whoami");

    perform(fx->port, &(struct call){.target = "/whoami"}, &r);
    assert_true(hd_uuid_valid(r.body));
    assert_string_equal(header(&r, "X-Correlation-Id", v, sizeof v), r.body);

    /* Ill-formed ids are replaced, not echoed into headers and logs. */
    char longid[200 + 20] = "X-Correlation-Id: ";
    memset(longid + strlen(longid), 'a', 200);
    perform(fx->port, &(struct call){.target = "/whoami", .headers = {longid}}, &r);
    assert_true(hd_uuid_valid(r.body));
    perform(fx->port, &(struct call){.target = "/whoami", .headers = {"X-Correlation-Id: a b<c>"}},
            &r);
    assert_true(hd_uuid_valid(r.body));

    /* Built-in answers carry one too. */
    perform(fx->port, &(struct call){.target = "/nowhere", .headers = {"X-Correlation-Id: c-404"}},
            &r);
    assert_string_equal(header(&r, "X-Correlation-Id", v, sizeof v), "c-404");
}

static void observer_sees_route_patterns_not_paths(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port,
            &(struct call){.method = "PATCH",
                           .target = "/users/abc-123",
                           .headers = {"X-Correlation-Id: t-observe-1"}},
            &r);
    assert_int_equal(r.status, 204);
    struct record rec = observed(fx, "t-observe-1");
    assert_string_equal(rec.route, "/users/{id}");
    assert_string_equal(rec.method, "PATCH");
    assert_int_equal(rec.status, 204);
    assert_true(rec.duration >= 0 && rec.duration < 10);

    perform(fx->port,
            &(struct call){.target = "/random/probe/path",
                           .headers = {"X-Correlation-Id: t-observe-2"}},
            &r);
    rec = observed(fx, "t-observe-2");
    assert_string_equal(rec.route, HD_HTTP_ROUTE_UNMATCHED);
    assert_int_equal(rec.status, 404);
}

static void handler_failures_become_500_without_internals(void **state)
{
    struct fixture *fx = *state;
    struct reply r;
    perform(fx->port, &(struct call){.target = "/no-reply"}, &r);
    assert_problem(&r, 500, "/no-reply");

    perform(fx->port, &(struct call){.target = "/fails", .headers = {"X-Correlation-Id: trace-9"}},
            &r);
    assert_problem(&r, 500, "/fails");
    assert_null(strstr(r.body, "SELECT")); /* the detail went to the log, not the client */
    assert_non_null(strstr(r.body, "trace-9"));

    char v[256];
    perform(fx->port, &(struct call){.target = "/custom"}, &r);
    assert_int_equal(r.status, 422);
    assert_string_equal(header(&r, "X-Extra", v, sizeof v), "1");
    assert_string_equal(header(&r, "X-Refused", v, sizeof v), "yes");
    assert_null(header(&r, "X-Evil", v, sizeof v));
    json_t *p = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(p, "type")),
                        "https://herald.example/problems/invalid");
    assert_string_equal(json_string_value(json_object_get(p, "title")), "Invalid user");
    assert_int_equal(json_integer_value(json_object_get(p, "status")), 422);
    assert_string_equal(json_string_value(json_object_get(p, "instance")), "/custom");
    assert_int_equal(json_array_size(json_object_get(p, "errors")), 1);
    json_decref(p);
}

#define PARALLEL 4

struct worker {
    uint16_t port;
    struct reply r;
    const char *target;
};

static void *client_thread(void *arg)
{
    struct worker *w = arg;
    perform(w->port, &(struct call){.target = w->target}, &w->r);
    return NULL;
}

static void concurrent_requests_run_handlers_in_parallel(void **state)
{
    struct fixture *fx = *state;
    pthread_mutex_lock(&fx->lock);
    fx->inside = 0;
    pthread_mutex_unlock(&fx->lock);
    struct worker w[PARALLEL];
    pthread_t t[PARALLEL];
    for (int i = 0; i < PARALLEL; i++) {
        w[i] = (struct worker){.port = fx->port, .target = "/together?want=4"};
        assert_int_equal(pthread_create(&t[i], NULL, client_thread, &w[i]), 0);
    }
    for (int i = 0; i < PARALLEL; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].r.rc, CURLE_OK);
        assert_int_equal(w[i].r.status, 200);
        assert_string_equal(w[i].r.body, "together");
    }
}

static void graceful_stop_finishes_in_flight_requests(void **state)
{
    struct fixture *fx = *state;
    struct worker w = {.port = fx->port, .target = "/slow"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, client_thread, &w), 0);
    pthread_mutex_lock(&fx->lock);
    while (!fx->entered_slow)
        pthread_cond_wait(&fx->cond, &fx->lock);
    pthread_mutex_unlock(&fx->lock);

    /* The handler is running: stop must wait for its answer to go out. */
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_http_server_stopping(fx->srv), 0);
    assert_hd(HD_OK, hd_http_server_stop(fx->srv));
    assert_int_equal(hd_http_server_stopping(fx->srv), 1);
    assert_true(hd_clock_ms() - t0 >= 200);
    pthread_join(t, NULL);
    assert_int_equal(w.r.rc, CURLE_OK);
    assert_int_equal(w.r.status, 200);
    assert_string_equal(w.r.body, "finished");
    char v[64];
    assert_non_null(header(&w.r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");

    /* Nobody is listening any more. */
    struct reply r;
    perform(fx->port, &(struct call){.target = "/users/1"}, &r);
    assert_int_equal(r.rc, CURLE_COULDNT_CONNECT);
    /* Stopping twice is harmless. */
    assert_hd(HD_OK, hd_http_server_stop(fx->srv));
}

static void stop_gives_up_after_its_timeout(void **state)
{
    (void)state;
    hd_http_options opts = {.stop_timeout_ms = 50};
    struct fixture *fx = start_server(&opts);
    struct worker w = {.port = fx->port, .target = "/slow"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, client_thread, &w), 0);
    pthread_mutex_lock(&fx->lock);
    while (!fx->entered_slow)
        pthread_cond_wait(&fx->cond, &fx->lock);
    pthread_mutex_unlock(&fx->lock);
    assert_hd(HD_ETIMEOUT, hd_http_server_stop(fx->srv));
    pthread_join(t, NULL);
    stop_server(fx);
}

static void thread_pool_mode_serves_requests(void **state)
{
    (void)state;
    hd_http_options opts = {.threads = 2};
    struct fixture *fx = start_server(&opts);
    struct reply r;
    for (int i = 0; i < 5; i++) {
        perform(fx->port, &(struct call){.target = "/users/pool"}, &r);
        assert_int_equal(r.status, 200);
    }
    char big[2000];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    perform(
        fx->port,
        &(struct call){
            .method = "POST", .target = "/echo", .content_type = "application/json", .body = big},
        &r);
    assert_int_equal(r.status, 201); /* the default limit is 64 KiB */
    stop_server(fx);
}

static void route_and_server_arguments_are_checked(void **state)
{
    (void)state;
    hd_http_server *srv;
    hd_error err;
    assert_hd(HD_EINVAL,
              hd_http_server_new(&(hd_http_options){.bind_address = "localhost"}, &srv, &err));
    assert_non_null(strstr(err.text, "localhost"));
    assert_hd(HD_OK, hd_http_server_new(&(hd_http_options){.bind_address = "::1"}, &srv, &err));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "users", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "/users/{}", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "/users/{id", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "/users/x{id}", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "/a/{id}/b/{id}", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GE T", "/a", get_user, NULL));
    assert_hd(HD_EINVAL, hd_http_route(srv, "GET", "/a", NULL, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "GET", "/", get_user, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "GET", "/a/{id}", get_user, NULL));
    assert_hd(HD_EEXIST, hd_http_route(srv, "GET", "/a/{id}", get_user, NULL));
    assert_int_equal(hd_http_server_port(srv), 0);
    assert_hd(HD_OK, hd_http_server_stop(srv)); /* never started: nothing to do */
    /* IPv6 loopback may be missing in a container: only start when it works. */
    if (hd_http_server_start(srv, &err) == HD_OK) {
        assert_true(hd_http_server_port(srv) > 0);
        assert_hd(HD_ESTATE, hd_http_route(srv, "GET", "/late", get_user, NULL));
        assert_hd(HD_ESTATE, hd_http_server_start(srv, &err));
    }
    hd_http_server_free(srv);

    /* A port in use is a clear error. */
    struct fixture *fx = start_server(NULL);
    assert_hd(HD_OK, hd_http_server_new(&(hd_http_options){.port = fx->port}, &srv, &err));
    assert_hd(HD_EIO, hd_http_server_start(srv, &err));
    char expected[64];
    snprintf(expected, sizeof expected, "cannot listen on 127.0.0.1:%u", (unsigned)fx->port);
    assert_non_null(strstr(err.text, expected));
    hd_http_server_free(srv);
    stop_server(fx);

    assert_int_equal(hd_http_status_for_error(HD_EEXIST), 409);
    assert_int_equal(hd_http_status_for_error(HD_EVALIDATE), 422);
    assert_int_equal(hd_http_status_for_error(HD_ENOTFOUND), 404);
    assert_int_equal(hd_http_status_for_error(HD_ESTORE), 500);
    assert_string_equal(hd_http_reason(413), "Content Too Large");
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    /* MHD's own warnings and 5xx details would go to stderr: keep the test output short. */
    FILE *devnull = fopen("/dev/null", "w");
    hd_logger *quiet = hd_logger_new("test", HD_LOG_ERROR, devnull);
    hd_log_set_default(quiet);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(routes_match_with_decoded_path_params, setup, teardown),
        cmocka_unit_test_setup_teardown(query_params_are_url_decoded, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_path_is_a_404_problem, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_method_is_a_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(oversized_body_is_a_413_problem, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_json_is_a_400_problem_naming_the_position, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bearer_credentials_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(correlation_id_is_echoed_or_generated, setup, teardown),
        cmocka_unit_test_setup_teardown(observer_sees_route_patterns_not_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(handler_failures_become_500_without_internals, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(concurrent_requests_run_handlers_in_parallel, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(graceful_stop_finishes_in_flight_requests, setup, teardown),
        cmocka_unit_test(stop_gives_up_after_its_timeout),
        cmocka_unit_test(thread_pool_mode_serves_requests),
        cmocka_unit_test(route_and_server_arguments_are_checked),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    hd_log_set_default(NULL);
    hd_logger_free(quiet);
    fclose(devnull);
    curl_global_cleanup();
    return failed;
}
