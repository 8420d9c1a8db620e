/* Unit tests for herald/http.h: a real server on an ephemeral port, driven by libcurl.
 * No external server is needed: the test starts its own on 127.0.0.1. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
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

/* ---- hostile request lines ---------------------------------------------------------------- */

/* Send raw bytes (what curl would refuse to send) from source address src (NULL = any)
 * and read the whole answer into out; the server closes after a 400. */
static void raw_exchange(uint16_t port, const char *src, const char *request, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (src != NULL) {
        struct sockaddr_in me = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &me.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof me), 0);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    assert_int_equal(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (strstr(out, "\r\n\r\n") && (strstr(out, "}") || len == cap - 1))
            break; /* the whole (small) problem body is in */
    }
    out[len] = '\0';
    close(fd);
}

/* A raw non-UTF-8 byte in the method or the path used to give "500" with an empty body
 * (jansson refused the path as "instance"), a log line without method/route/status and
 * an invalid metric label. Now: a 400 problem whose every string is UTF-8. */
static void non_utf8_request_lines_are_400_problems(void **state)
{
    struct fixture *fx = *state;
    static const char *const requests[] = {
        "GET /users/\xff HTTP/1.1\r\nHost: x\r\nX-Correlation-Id: raw-1\r\n\r\n",
        "GET /nowhere/\xc3 HTTP/1.1\r\nHost: x\r\nX-Correlation-Id: raw-2\r\n\r\n",
        "G\xffT /users/1 HTTP/1.1\r\nHost: x\r\nX-Correlation-Id: raw-3\r\n\r\n",
        "GET /users?email=\xff HTTP/1.1\r\nHost: x\r\nX-Correlation-Id: raw-4\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        char out[4096];
        raw_exchange(fx->port, NULL, requests[i], out, sizeof out);
        if (strncmp(out, "HTTP/1.1 400", 12) != 0)
            print_error("request %zu got: %s\n", i, out);
        assert_memory_equal(out, "HTTP/1.1 400", 12);
        assert_non_null(strstr(out, "application/problem+json"));
        const char *body = strstr(out, "\r\n\r\n");
        assert_non_null(body);
        json_error_t je;
        json_t *p = json_loads(body + 4, 0, &je);
        assert_non_null(p);
        assert_int_equal(json_integer_value(json_object_get(p, "status")), 400);
        assert_true(hd_test_utf8_valid(json_string_value(json_object_get(p, "instance"))));
        json_decref(p);
        char cid[16];
        snprintf(cid, sizeof cid, "raw-%zu", i + 1);
        struct record rec = observed(fx, cid);
        assert_int_equal(rec.status, 400);
        assert_true(hd_test_utf8_valid(rec.method));
        assert_string_equal(rec.route, HD_HTTP_ROUTE_UNMATCHED);
    }
    /* Percent-escapes that decode to bytes that are not UTF-8: refused the same way,
     * before a handler can put them into JSON or SQL. */
    struct reply r;
    perform(fx->port, &(struct call){.target = "/users/%FF"}, &r);
    assert_problem(&r, 400, "/users/%FF");
    perform(fx->port, &(struct call){.target = "/users?email=%C3"}, &r);
    assert_problem(&r, 400, "/users");
    perform(fx->port, &(struct call){.target = "/users/%C3%A9"}, &r); /* "é" is fine */
    assert_int_equal(r.status, 200);
}

/* The access log line of a hostile request keeps method, route and status. */
struct log_ctx {
    hd_logger *lg;
};

static void log_observer(const hd_http_access *a, void *ctx)
{
    hd_http_log_access(((struct log_ctx *)ctx)->lg, a);
}

/* A server with GET /users/{id} whose access lines go to a logger writing to *out (new: a
 * tmpfile, fclose it) through lc (lc->lg new: hd_logger_free it). */
static hd_http_server *logged_server(FILE **out, struct log_ctx *lc)
{
    *out = tmpfile();
    assert_non_null(*out);
    lc->lg = hd_logger_new("test", HD_LOG_INFO, *out);
    hd_http_server *srv;
    assert_hd(HD_OK, hd_http_server_new(NULL, &srv, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "GET", "/users/{id}", get_user, NULL));
    hd_http_server_observe(srv, log_observer, lc);
    return srv;
}

static void hostile_requests_keep_their_access_log_line(void **state)
{
    (void)state;
    FILE *out = NULL;
    struct log_ctx lc;
    hd_http_server *srv = logged_server(&out, &lc);
    hd_http_dispatched d;
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "G\xffT", "/users/\xfe?x=1", NULL, NULL, 0, &d));
    assert_int_equal(d.status, 400);
    assert_string_equal(d.content_type, "application/problem+json");
    json_t *p = json_loads(d.body, 0, NULL);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "instance")), "/users/\xef\xbf\xbd");
    json_decref(p);
    hd_http_dispatched_release(&d);
    /* an access built by hand with bad bytes still logs (the function is public) */
    hd_http_log_access(lc.lg, &(hd_http_access){.method = "\xff",
                                                .route = "/r",
                                                .path = "/\xff",
                                                .status = 418,
                                                .correlation_id = "c"});
    hd_http_server_free(srv);
    fflush(out);
    rewind(out);
    char line[2048];
    int lines = 0;
    while (fgets(line, sizeof line, out)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        const char *method = json_string_value(json_object_get(j, "method"));
        assert_non_null(method);
        assert_true(hd_test_utf8_valid(method));
        assert_non_null(json_string_value(json_object_get(j, "route")));
        assert_non_null(json_string_value(json_object_get(j, "path")));
        int status = (int)json_integer_value(json_object_get(j, "status"));
        assert_int_equal(status, lines == 0 ? 400 : 418);
        if (lines == 0) {
            assert_string_equal(method, "G\xef\xbf\xbdT");
            assert_string_equal(json_string_value(json_object_get(j, "path")),
                                "/users/\xef\xbf\xbd");
        }
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 2);
    hd_logger_free(lc.lg);
    fclose(out);
}

/* The access line goes through the logger's redaction: a secret in the path (a token as
 * name=value, a password in a URL's userinfo) never reaches the log, and neither does the
 * query. Fails if the access line ever bypasses hd_log_json's redaction (a faster writer
 * of its own, say). The stream is a file, as the services' stderr is. */
static void the_access_line_is_redacted(void **state)
{
    (void)state;
    FILE *out = NULL;
    struct log_ctx lc;
    hd_http_server *srv = logged_server(&out, &lc);
    hd_http_dispatched d;
    assert_hd(HD_OK,
              hd_http_server_dispatch(srv, "GET",
                                      "/users/reset_token=s3cr3t-one?email=alice%40example.com"
                                      "&token=s3cr3t-two",
                                      NULL, NULL, 0, &d));
    hd_http_dispatched_release(&d);
    hd_http_log_access(lc.lg, &(hd_http_access){.method = "GET",
                                                .route = "/proxy",
                                                .path = "/proxy/amqp://bob:s3cr3t-three@h/",
                                                .status = 200,
                                                .correlation_id = "c"});
    hd_http_server_free(srv);
    rewind(out);
    char line[2048];
    int lines = 0;
    while (fgets(line, sizeof line, out)) {
        assert_null(strstr(line, "s3cr3t"));
        assert_null(strstr(line, "alice"));
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        const char *path = json_string_value(json_object_get(j, "path"));
        assert_non_null(path);
        assert_string_equal(path, lines == 0 ? "/users/reset_token=" HD_LOG_REDACTED
                                             : "/proxy/amqp://bob:***@h/");
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 2);
    hd_logger_free(lc.lg);
    fclose(out);
}

/* ---- method labels ------------------------------------------------------------------------- */

static void methods_map_to_a_fixed_label_set(void **state)
{
    struct fixture *fx = *state;
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        assert_string_equal(hd_http_method_label(known[i]), known[i]);
    assert_string_equal(hd_http_method_label("get"), HD_HTTP_METHOD_OTHER);
    assert_string_equal(hd_http_method_label("BREW"), HD_HTTP_METHOD_OTHER);
    assert_string_equal(hd_http_method_label("GETX"), HD_HTTP_METHOD_OTHER);
    assert_string_equal(hd_http_method_label(""), HD_HTTP_METHOD_OTHER);
    assert_string_equal(hd_http_method_label(NULL), HD_HTTP_METHOD_OTHER);

    /* What the observer gets as "method" (what services use as a label) is the label; 50
     * invented methods give one value, not 50. */
    for (int i = 0; i < 50; i++) {
        char m[16], cid[32], h[64];
        snprintf(m, sizeof m, "X%02dMETHOD", i);
        snprintf(cid, sizeof cid, "invented-%d", i);
        snprintf(h, sizeof h, "X-Correlation-Id: %s", cid);
        struct reply r;
        perform(fx->port, &(struct call){.method = m, .target = "/users/1", .headers = {h}}, &r);
        assert_int_equal(r.status, 405);
        struct record rec = observed(fx, cid);
        assert_string_equal(rec.method, HD_HTTP_METHOD_OTHER);
    }
    struct reply r;
    perform(fx->port,
            &(struct call){
                .method = "PATCH", .target = "/users/1", .headers = {"X-Correlation-Id: patch-1"}},
            &r);
    assert_string_equal(observed(fx, "patch-1").method, "PATCH");
}

/* ---- in-process dispatch ------------------------------------------------------------------- */

static void dispatch_runs_the_router_without_a_socket(void **state)
{
    (void)state;
    hd_http_server *srv;
    assert_hd(HD_OK, hd_http_server_new(&(hd_http_options){.max_body_bytes = 16}, &srv, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "GET", "/users/{id}", get_user, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "POST", "/echo", echo, NULL));
    assert_hd(HD_OK, hd_http_route(srv, "GET", "/secret", secret, TOKEN));
    hd_http_dispatched d;
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "GET", "/users/a%2Fb", NULL, NULL, 0, &d));
    assert_int_equal(d.status, 200);
    assert_non_null(strstr(d.body, "\"id\":\"a/b\""));
    hd_http_dispatched_release(&d);
    const char *const json[] = {"content-type", "application/json", NULL};
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "POST", "/echo", json, "{\"a\":1}", 7, &d));
    assert_int_equal(d.status, 201);
    assert_string_equal(d.body, "{\"a\":1}");
    hd_http_dispatched_release(&d);
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "POST", "/echo", json,
                                             "{\"a\":\"0123456789abcdef\"}", 24, &d));
    assert_int_equal(d.status, 413);
    hd_http_dispatched_release(&d);
    const char *const bearer[] = {"Authorization", "Bearer " TOKEN, NULL};
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "GET", "/secret", bearer, NULL, 0, &d));
    assert_int_equal(d.status, 200);
    hd_http_dispatched_release(&d);
    assert_hd(HD_OK, hd_http_server_dispatch(srv, "GET", "/nope", NULL, NULL, 0, &d));
    assert_int_equal(d.status, 404);
    hd_http_dispatched_release(&d);
    assert_hd(HD_EINVAL, hd_http_server_dispatch(srv, "GET", "/x", NULL, NULL, 3, &d));
    hd_http_server_free(srv);
}

/* ---- slow clients -------------------------------------------------------------------------- */

struct slow_socket {
    uint16_t port;
    double closed_after; /* seconds until the server closed it; -1 = never (within 8 s) */
};

/* A slowloris: a request line, then one header byte a second, from 127.0.0.2. */
static void *slow_client(void *arg)
{
    struct slow_socket *s = arg;
    s->closed_after = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.2", &me.sin_addr);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof me) != 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        if (fd >= 0)
            close(fd);
        s->closed_after = 0;
        return NULL;
    }
    int64_t t0 = hd_clock_ns();
    const char *line = "GET /whoami HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    int ok = send(fd, line, strlen(line), MSG_NOSIGNAL) > 0;
    while (ok && hd_clock_ns() - t0 < 8000000000LL) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0) {
            char buf[256];
            if (recv(fd, buf, sizeof buf, 0) <= 0)
                break; /* closed by the server */
            continue;
        }
        ok = send(fd, "a", 1, MSG_NOSIGNAL) == 1;
    }
    if (hd_clock_ns() - t0 < 8000000000LL)
        s->closed_after = (double)(hd_clock_ns() - t0) / 1e9;
    close(fd);
    return NULL;
}

static int count_lines_with(FILE *f, const char *needle)
{
    fflush(f);
    rewind(f);
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    return n;
}

/* Six sockets trickling one byte a second used to fill every connection slot: a normal
 * client was refused until they gave up. Now one address holds at most two slots, and
 * the two it holds are cut at the request deadline; the warnings are rate-limited. */
static void slow_clients_do_not_lock_out_others_and_are_cut_at_the_deadline(void **state)
{
    (void)state;
    FILE *logf = tmpfile();
    hd_logger *lg = hd_logger_new("test", HD_LOG_INFO, logf);
    hd_http_options opts = {.max_connections = 6,
                            .per_ip_connection_limit = 2,
                            .request_timeout_ms = 1500,
                            .logger = lg};
    struct fixture *fx = start_server(&opts);
    enum { SLOW = 6 };
    pthread_t th[SLOW];
    struct slow_socket ss[SLOW];
    for (int i = 0; i < SLOW; i++) {
        ss[i].port = fx->port;
        assert_int_equal(pthread_create(&th[i], NULL, slow_client, &ss[i]), 0);
    }
    hd_sleep_ms(500); /* the slow ones are in (or refused) */
    int64_t t0 = hd_clock_ns();
    struct reply r;
    perform(fx->port, &(struct call){.target = "/whoami"}, &r);
    double normal_s = (double)(hd_clock_ns() - t0) / 1e9;
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_true(normal_s < 1.0);
    int cut_at_deadline = 0;
    for (int i = 0; i < SLOW; i++) {
        pthread_join(th[i], NULL);
        /* every slow socket is gone well before it finished its trickle: refused at once
         * (over the per-address limit) or cut at the 1.5 s deadline (MHD checks timeouts
         * in whole seconds and a loaded machine adds more: 5 s is still far from the 8 s
         * the trickle would last) */
        if (ss[i].closed_after < 0)
            print_error("slow socket %d was never closed\n", i);
        assert_true(ss[i].closed_after >= 0 && ss[i].closed_after < 5.0);
        cut_at_deadline += ss[i].closed_after >= 1.4;
    }
    assert_int_equal(cut_at_deadline, 2);
    stop_server(fx);
    /* two cuts, one warning: the second falls in the same interval and is counted */
    assert_int_equal(count_lines_with(logf, "slow client cut at the request deadline"), 1);
    assert_true(count_lines_with(logf, "libmicrohttpd") <= 1);
    hd_logger_free(lg);
    fclose(logf);
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
        cmocka_unit_test_setup_teardown(non_utf8_request_lines_are_400_problems, setup, teardown),
        cmocka_unit_test(hostile_requests_keep_their_access_log_line),
        cmocka_unit_test(the_access_line_is_redacted),
        cmocka_unit_test_setup_teardown(methods_map_to_a_fixed_label_set, setup, teardown),
        cmocka_unit_test(dispatch_runs_the_router_without_a_socket),
        cmocka_unit_test(slow_clients_do_not_lock_out_others_and_are_cut_at_the_deadline),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    hd_log_set_default(NULL);
    hd_logger_free(quiet);
    fclose(devnull);
    curl_global_cleanup();
    return failed;
}
