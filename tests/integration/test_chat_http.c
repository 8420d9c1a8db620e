/* integration.chat_http — two herald-chat processes on one bus, over HTTP, no browser.
 *
 * The bus is Redis pub/sub (HD_REDIS_URL, from scripts/servers.sh; a missing server FAILS
 * the test). HD_CHAT_TEST_BUS=rabbitmq runs the same test on RabbitMQ (HD_AMQP_URL).
 * Requests are written on raw sockets, byte for byte, so that hostile input (bad UTF-8, a
 * huge body, a wrong content type) reaches the server exactly as an attacker would send it,
 * and so that an event stream can be read with a deadline.
 *
 * What is shown, in order:
 *   1. join: 201 with a 64-hex token; an unknown room 404; bad names 422; malformed JSON,
 *      bad UTF-8 400; not JSON 415; a body over the limit 413 — never a 5xx;
 *   2. posting: no token, a wrong token, the token of another room 401; a bad text 422; a
 *      text over the limit 413;
 *   3. one room, two processes: a member on each, each with an event stream; what either
 *      posts reaches both streams (over the bus), and a listener of another room gets
 *      nothing;
 *   4. streams: no token 401, unknown room 404, over the listener limit 429; leave ends the
 *      member's stream with a "bye" and its token stops working;
 *   5. the page: Content-Security-Policy without inline scripts, nosniff; a text with
 *      markup travels as text (inside JSON), never decoded or altered;
 *   6. joins per client address are rate-limited (429 with Retry-After);
 *   7. every path and method of docs/openapi/chat.openapi.json answers with a status the
 *      document lists;
 *   8. SIGTERM with a stream open: the stream gets "bye" and ends, the process exits 0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "hd_proc.h"
#include "hd_test.h"
#include "herald/clock.h"

static struct {
    const char *bus;
    hd_proc *p1, *p2;
    int port1, port2;
    char *tmp;
    char tag[64];
} W;

/* ---- a raw HTTP client ------------------------------------------------------------------ */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fail_msg("connect 127.0.0.1:%d: %s", port, strerror(errno));
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early (413): what it answered is still read */
        data += n;
        len -= (size_t)n;
    }
}

/* Send a request: method, path, extra header lines ("Name: value\r\n"... or NULL), a body of
 * len bytes (NULL: none) with content type ct. Returns the socket. */
static int send_request(int port, const char *method, const char *path, const char *headers,
                        const char *ct, const char *body, size_t len)
{
    int fd = connect_to(port);
    char head[2048];
    int n =
        snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                 method, path, headers ? headers : "");
    if (body != NULL)
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: %s\r\nContent-Length: %zu\r\n", ct, len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    send_all(fd, head, (size_t)n);
    if (body != NULL)
        send_all(fd, body, len);
    return fd;
}

/* Read from fd until needle appears in what was read (or EOF when needle is NULL), at most
 * timeout_ms. Returns what was read (new, NUL-terminated); *found 1 when needle was seen. */
static char *read_until(int fd, const char *needle, int timeout_ms, int *found)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    buf[0] = '\0';
    int64_t deadline = hd_clock_ms() + timeout_ms;
    *found = 0;
    for (;;) {
        if (needle != NULL && strstr(buf, needle) != NULL) {
            *found = 1;
            break;
        }
        int64_t left = deadline - hd_clock_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (len + 4097 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, 4096, 0);
        if (n <= 0) {
            *found = needle == NULL;
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
    }
    return buf;
}

/* A whole request/response: the status, and the body (new) when body_out is not NULL. */
static int request(int port, const char *method, const char *path, const char *headers,
                   const char *ct, const char *body, size_t len, char **resp_out)
{
    int fd = send_request(port, method, path, headers, ct, body, len);
    int eof;
    char *resp = read_until(fd, NULL, 10000, &eof);
    close(fd);
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    if (resp_out != NULL)
        *resp_out = resp;
    else
        free(resp);
    return status;
}

static int post_json(int port, const char *path, const char *token, const char *json, char **resp)
{
    char auth[256] = "";
    if (token != NULL)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    return request(port, "POST", path, auth, "application/json", json, strlen(json), resp);
}

/* The body of a response (after the blank line). Borrowed from resp. */
static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

/* Join room on port as name; the token into out. */
static void join(int port, const char *room, const char *name, char out[65])
{
    char path[128], json[256], *resp;
    snprintf(path, sizeof path, "/rooms/%s/join", room);
    snprintf(json, sizeof json, "{\"name\":\"%s\"}", name);
    int status = post_json(port, path, NULL, json, &resp);
    if (status != 201)
        fail_msg("join %s as %s: %d\n%s", room, name, status, resp);
    json_t *j = json_loads(body_of(resp), 0, NULL);
    assert_non_null(j);
    const char *t = json_string_value(json_object_get(j, "token"));
    assert_non_null(t);
    assert_int_equal(strlen(t), 64);
    assert_int_equal(strspn(t, "0123456789abcdef"), 64);
    strcpy(out, t);
    json_decref(j);
    free(resp);
}

/* An open event stream: its socket and everything read from it so far. A search looks at
 * all of it, so that two messages read in one recv are both found. */
typedef struct stream {
    int fd;
    char *seen;
    size_t len;
} stream;

/* Read into s until needle is in what was seen, at most timeout_ms; 1 when found. NULL:
 * until the server closes the stream. */
static int stream_wait(stream *s, const char *needle, int timeout_ms)
{
    int64_t deadline = hd_clock_ms() + timeout_ms;
    for (;;) {
        if (needle != NULL && strstr(s->seen, needle) != NULL)
            return 1;
        int64_t left = deadline - hd_clock_ms();
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return 0;
        s->seen = realloc(s->seen, s->len + 4097);
        ssize_t n = recv(s->fd, s->seen + s->len, 4096, 0);
        if (n <= 0)
            return needle == NULL;
        s->len += (size_t)n;
        s->seen[s->len] = '\0';
    }
}

static void stream_close(stream *s)
{
    close(s->fd);
    free(s->seen);
}

/* Open an event stream; returns once the stream said hello. */
static stream open_stream(int port, const char *room, const char *token)
{
    char path[256];
    snprintf(path, sizeof path, "/rooms/%s/events?token=%s", room, token);
    stream s = {.fd =
                    send_request(port, "GET", path, "Accept: text/event-stream\r\n", NULL, NULL, 0),
                .seen = calloc(1, 1)};
    if (!stream_wait(&s, ": welcome", 5000))
        fail_msg("no stream on :%d %s:\n%s", port, room, s.seen);
    assert_non_null(strstr(s.seen, "HTTP/1.1 200"));
    assert_non_null(strstr(s.seen, "text/event-stream"));
    return s;
}

static void expect_on_stream(stream *s, const char *needle)
{
    if (!stream_wait(s, needle, 5000))
        fail_msg("the stream never showed '%s'; it had:\n%s", needle, s->seen);
}

static void post_text(int port, const char *room, const char *token, const char *text)
{
    char path[128], *resp;
    snprintf(path, sizeof path, "/rooms/%s/messages", room);
    json_t *j = json_pack("{s:s}", "text", text);
    char *body = json_dumps(j, JSON_COMPACT);
    int status = post_json(port, path, token, body, &resp);
    if (status != 202)
        fail_msg("post on :%d: %d\n%s", port, status, resp);
    free(resp);
    free(body);
    json_decref(j);
}

/* ---- the processes ---------------------------------------------------------------------- */

static hd_proc *start_chat(const char *instance, const char *extra, const char *extra2, int *port)
{
    char inst[96], bus[64], log[512], url[600];
    snprintf(inst, sizeof inst, "HD_CHAT_INSTANCE=%s-%s", W.tag, instance);
    snprintf(bus, sizeof bus, "HD_CHAT_BUS=%s", W.bus);
    snprintf(log, sizeof log, "%s/%s.log", W.tmp, instance);
    const char *url_name = strcmp(W.bus, "redis") == 0 ? "HD_REDIS_URL" : "HD_AMQP_URL";
    snprintf(url, sizeof url, "%s=%s", url_name, getenv(url_name));
    const char *env[] = {inst,
                         bus,
                         url,
                         "HD_CHAT_LISTEN=127.0.0.1:0",
                         "HD_CHAT_ROOMS=general,random",
                         "HD_CHAT_HEARTBEAT=1s",
                         "HD_CHAT_MAX_BODY=4096",
                         "HD_LOG_LEVEL=info",
                         "HD_CHAT_RATE_JOIN_BURST=6",
                         extra,
                         extra2,
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-chat", NULL};
    hd_proc_options o = {.argv = argv, .env = env, .env_drop_prefix = "HD_", .log_path = log};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    if (hd_proc_wait_health(p, 20000, &err) < 0) {
        hd_proc_dump_log(p, stderr, 40);
        fail_msg("herald-chat %s: %s", instance, err.text);
    }
    *port = hd_proc_port(p);
    return p;
}

static int group_setup(void **state)
{
    (void)state;
    const char *bus = getenv("HD_CHAT_TEST_BUS");
    W.bus = bus && *bus ? bus : "redis";
    hd_test_require_env(strcmp(W.bus, "redis") == 0 ? "HD_REDIS_URL" : "HD_AMQP_URL");
    W.tmp = hd_test_tmpdir("chat_http");
    char *u = hd_test_unique_name("t");
    snprintf(W.tag, sizeof W.tag, "%.40s", u);
    for (char *c = W.tag; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '-';
    free(u);
    /* one: no join limit (this test joins often); two: 6 joins, then one an hour. */
    W.p1 = start_chat("one", "HD_CHAT_MAX_LISTENERS=50", "HD_CHAT_RATE_JOIN=off", &W.port1);
    W.p2 = start_chat("two", "HD_CHAT_MAX_LISTENERS=3", "HD_CHAT_RATE_JOIN=1/h", &W.port2);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    hd_proc_free(W.p1);
    hd_proc_free(W.p2);
    hd_test_rmtree(W.tmp);
    free(W.tmp);
    return 0;
}

/* ---- 1. join ------------------------------------------------------------------------------ */

/* rp: the response a request stored (taken and freed here). A pointer, not the value: the
 * request is an argument of this same call, and C does not order argument evaluation. */
static void expect_status(int want, int got, const char *what, char **rp)
{
    char *resp = rp ? *rp : NULL;
    if (rp)
        *rp = NULL;
    if (want != got)
        fail_msg("%s: want %d, got %d\n%s", what, want, got, resp ? resp : "");
    if (want >= 400 && resp != NULL && strstr(resp, "application/problem+json") == NULL)
        fail_msg("%s: not problem+json\n%s", what, resp);
    free(resp);
}

static void test_join_and_hostile_input(void **state)
{
    (void)state;
    char token[65], *r;
    join(W.port1, "general", "alice", token);
    join(W.port1, "general", "Zoë 🙂", token); /* UTF-8 names are fine */
    const int p = W.port1;
    expect_status(404, post_json(p, "/rooms/nope/join", NULL, "{\"name\":\"a\"}", &r), "room", &r);
    expect_status(404, post_json(p, "/rooms/%2e%2e/join", NULL, "{\"name\":\"a\"}", &r), "..", &r);
    expect_status(422, post_json(p, "/rooms/general/join", NULL, "{\"name\":\"\"}", &r), "empty",
                  &r);
    expect_status(422, post_json(p, "/rooms/general/join", NULL, "{\"name\":\"   \"}", &r), "blank",
                  &r);
    expect_status(422, post_json(p, "/rooms/general/join", NULL, "{\"name\":\"a\\u0007b\"}", &r),
                  "control", &r);
    expect_status(400, post_json(p, "/rooms/general/join", NULL, "{\"name\":\"a\\u0000b\"}", &r),
                  "NUL", &r); /* the JSON parser refuses \u0000 already */
    expect_status(422, post_json(p, "/rooms/general/join", NULL, "{\"name\":42}", &r), "number",
                  &r);
    expect_status(422, post_json(p, "/rooms/general/join", NULL, "[]", &r), "array", &r);
    char longname[200];
    snprintf(longname, sizeof longname, "{\"name\":\"%0100d\"}", 7);
    expect_status(422, post_json(p, "/rooms/general/join", NULL, longname, &r), "long", &r);
    expect_status(400, post_json(p, "/rooms/general/join", NULL, "{\"name\":", &r), "JSON", &r);
    expect_status(400, post_json(p, "/rooms/general/join", NULL, "{\"name\":\"\xff\xfe\"}", &r),
                  "bad UTF-8", &r);
    const char *plain = "name=alice";
    expect_status(
        415,
        request(p, "POST", "/rooms/general/join", NULL, "text/plain", plain, strlen(plain), &r),
        "not JSON", &r);
    size_t huge = 1 << 20;
    char *big = malloc(huge);
    memset(big, 'a', huge);
    expect_status(
        413, request(p, "POST", "/rooms/general/join", NULL, "application/json", big, huge, &r),
        "huge body", &r);
    free(big);
    expect_status(405, request(p, "DELETE", "/rooms/general/join", NULL, NULL, NULL, 0, &r),
                  "method", &r);
}

/* ---- 2. posting -------------------------------------------------------------------------- */

static void test_post_refusals(void **state)
{
    (void)state;
    char tok[65], other[65], *r;
    join(W.port1, "general", "bob", tok);
    join(W.port1, "random", "carol", other);
    const int p = W.port1;
    const char *ok = "{\"text\":\"hi\"}";
    expect_status(401, post_json(p, "/rooms/general/messages", NULL, ok, &r), "no token", &r);
    expect_status(401, post_json(p, "/rooms/general/messages", "0123", ok, &r), "short", &r);
    char wrong[65];
    strcpy(wrong, tok);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    expect_status(401, post_json(p, "/rooms/general/messages", wrong, ok, &r), "wrong token", &r);
    expect_status(401, post_json(p, "/rooms/general/messages", other, ok, &r), "other room", &r);
    expect_status(404, post_json(p, "/rooms/nope/messages", tok, ok, &r), "no room", &r);
    expect_status(422, post_json(p, "/rooms/general/messages", tok, "{\"text\":\"\"}", &r), "empty",
                  &r);
    expect_status(422,
                  post_json(p, "/rooms/general/messages", tok, "{\"text\":\"\\u001b[31m\"}", &r),
                  "escape", &r);
    expect_status(400, post_json(p, "/rooms/general/messages", tok, "{\"text\":\"\xc3\x28\"}", &r),
                  "bad UTF-8", &r);
    char *long_text = malloc(3100);
    int n = snprintf(long_text, 3100, "{\"text\":\"");
    memset(long_text + n, 'x', 3000);
    strcpy(long_text + n + 3000, "\"}");
    expect_status(413, post_json(p, "/rooms/general/messages", tok, long_text, &r), "long text",
                  &r);
    free(long_text);
    /* The wrong scheme, and a token with trailing garbage. */
    char hdr[256];
    snprintf(hdr, sizeof hdr, "Authorization: Basic %s\r\n", tok);
    expect_status(
        401,
        request(p, "POST", "/rooms/general/messages", hdr, "application/json", ok, strlen(ok), &r),
        "basic", &r);
    expect_status(202, post_json(p, "/rooms/general/messages", tok, ok, &r), "fine", &r);
}

/* ---- 3. one room over two processes ----------------------------------------------------- */

static void test_two_processes_one_room(void **state)
{
    (void)state;
    char a[65], b[65], c[65];
    join(W.port1, "general", "ann", a);
    join(W.port2, "general", "ben", b);
    join(W.port2, "random", "cid", c);
    stream sa = open_stream(W.port1, "general", a);
    stream sb = open_stream(W.port2, "general", b);
    stream sc = open_stream(W.port2, "random", c);
    char t1[128], t2[128];
    snprintf(t1, sizeof t1, "from ann on one %s", W.tag);
    snprintf(t2, sizeof t2, "from ben on two %s", W.tag);
    post_text(W.port1, "general", a, t1);
    post_text(W.port2, "general", b, t2);
    expect_on_stream(&sa, t1);
    expect_on_stream(&sa, t2);
    expect_on_stream(&sb, t1);
    expect_on_stream(&sb, t2);
    /* The frame: an id line, event: message, one JSON data line. */
    assert_false(stream_wait(&sc, t1, 1500)); /* another room hears nothing */
    /* /health names the bus and counts what crossed it. */
    char *h = NULL, want[64];
    assert_int_equal(request(W.port1, "GET", "/health", NULL, NULL, NULL, 0, &h), 200);
    snprintf(want, sizeof want, "\"bus\":\"%s\"", strcmp(W.bus, "redis") == 0 ? "redis" : W.bus);
    assert_non_null(strstr(h, want));
    json_t *j = json_loads(body_of(h), 0, NULL);
    assert_non_null(j);
    assert_true(json_integer_value(json_object_get(j, "bus_sent")) >= 1);
    assert_true(json_integer_value(json_object_get(j, "bus_received")) >= 2);
    assert_int_equal(json_integer_value(json_object_get(j, "bus_rejected")), 0);
    assert_non_null(json_object_get(j, "bus_sent_unheard"));
    json_decref(j);
    free(h);
    stream_close(&sa);
    stream_close(&sb);
    stream_close(&sc);
}

/* ---- 4. streams --------------------------------------------------------------------------- */

/* Wait until the process on port has n listeners: a closed socket is noticed at the next
 * heartbeat (1 s here), when the write fails. */
static void wait_listeners(int port, int n)
{
    char want[32], *r = NULL;
    snprintf(want, sizeof want, "\"listeners\":%d,", n);
    int64_t until = hd_clock_ms() + 5000;
    while (hd_clock_ms() < until) {
        free(r);
        request(port, "GET", "/health", NULL, NULL, NULL, 0, &r);
        if (strstr(r, want) != NULL)
            break;
        hd_sleep_ms(100);
    }
    if (strstr(r, want) == NULL)
        fail_msg("listeners never %d:\n%s", n, r);
    free(r);
}

static void test_stream_refusals_and_leave(void **state)
{
    (void)state;
    wait_listeners(W.port2, 0);
    char t[65], *r;
    join(W.port2, "general", "dee", t);
    const int p = W.port2;
    expect_status(401, request(p, "GET", "/rooms/general/events", NULL, NULL, NULL, 0, &r),
                  "no token", &r);
    expect_status(401,
                  request(p, "GET", "/rooms/general/events?token=abc", NULL, NULL, NULL, 0, &r),
                  "bad token", &r);
    char path[256];
    snprintf(path, sizeof path, "/rooms/nope/events?token=%s", t);
    expect_status(404, request(p, "GET", path, NULL, NULL, NULL, 0, &r), "no room", &r);
    snprintf(path, sizeof path, "/rooms/random/events?token=%s", t);
    expect_status(401, request(p, "GET", path, NULL, NULL, NULL, 0, &r), "other room", &r);
    /* p2 takes 3 listeners: a fourth is refused, with a 4xx the client can retry later. */
    char u[65];
    join(W.port2, "general", "eve", u);
    stream s1 = open_stream(p, "general", t);
    stream s2 = open_stream(p, "general", t);
    stream s3 = open_stream(p, "general", u);
    snprintf(path, sizeof path, "/rooms/general/events?token=%s", u);
    expect_status(429, request(p, "GET", path, NULL, NULL, NULL, 0, &r), "too many", &r);
    /* leave: dee's two streams end with a bye; eve's goes on; dee's token is dead. */
    expect_status(204, post_json(p, "/rooms/general/leave", t, "{}", &r), "leave", &r);
    expect_on_stream(&s1, "event: bye\ndata: {\"reason\":\"left\"}");
    expect_on_stream(&s2, "event: bye");
    expect_status(401, post_json(p, "/rooms/general/messages", t, "{\"text\":\"x\"}", &r),
                  "after leave", &r);
    char text[128];
    snprintf(text, sizeof text, "still here %s", W.tag);
    post_text(p, "general", u, text);
    expect_on_stream(&s3, text);
    stream_close(&s1);
    stream_close(&s2);
    stream_close(&s3);
    /* The closed sockets free their slots (the server notices at the next heartbeat). */
    int64_t until = hd_clock_ms() + 5000;
    int status = 0;
    while (hd_clock_ms() < until) {
        int fd = send_request(p, "GET", path, NULL, NULL, NULL, 0);
        int found;
        char *got = read_until(fd, "\r\n\r\n", 3000, &found);
        sscanf(got, "HTTP/1.%*d %d", &status);
        free(got);
        close(fd);
        if (status == 200)
            break;
        hd_sleep_ms(200);
    }
    assert_int_equal(status, 200);
}

/* ---- 5. the page and markup --------------------------------------------------------------- */

static void test_page_and_markup_as_text(void **state)
{
    (void)state;
    char *r;
    assert_int_equal(request(W.port1, "GET", "/", NULL, NULL, NULL, 0, &r), 200);
    assert_non_null(strstr(r, "Content-Security-Policy: default-src 'none'; script-src 'self'"));
    assert_non_null(strstr(r, "X-Content-Type-Options: nosniff"));
    assert_non_null(strstr(r, "<script src=\"/chat.js\""));
    free(r);
    assert_int_equal(request(W.port1, "GET", "/chat.js", NULL, NULL, NULL, 0, &r), 200);
    assert_non_null(strstr(r, "textContent"));
    assert_null(strstr(r, "innerHTML ="));
    free(r);
    char t[65];
    join(W.port1, "general", "<img src=x onerror=alert(1)>", t);
    stream s = open_stream(W.port1, "general", t);
    const char *evil = "<script>alert('x')</script> & </b>";
    post_text(W.port1, "general", t, evil);
    /* JSON carries the text as it was: the page puts it in textContent. */
    expect_on_stream(&s, "\"text\":\"<script>alert('x')</script> & </b>\"");
    stream_close(&s);
}

/* ---- join rate limit --------------------------------------------------------------------- */

/* two allows 6 joins per address, then one an hour: a client cannot take every member slot.
 * Earlier tests joined 4 times on two; whatever the count, a 429 with Retry-After comes
 * within 6 more. */
static void test_join_rate_limit(void **state)
{
    (void)state;
    int limited = 0;
    for (int i = 0; i < 7 && !limited; i++) {
        char *r = NULL;
        int status = post_json(W.port2, "/rooms/general/join", NULL, "{\"name\":\"flood\"}", &r);
        if (status == 429) {
            limited = 1;
            assert_non_null(strstr(r, "Retry-After: "));
            assert_non_null(strstr(r, "application/problem+json"));
        } else if (status != 201) {
            fail_msg("join %d: %d\n%s", i, status, r);
        }
        free(r);
    }
    assert_true(limited);
}

/* ---- the OpenAPI document ----------------------------------------------------------------- */

/* Every path and method of docs/openapi/chat.openapi.json answers, with a status the
 * document lists for it ({room} = general; bodies {}; no token). */
static void test_openapi_contract(void **state)
{
    (void)state;
    json_error_t je;
    json_t *doc = json_load_file(HD_SOURCE_DIR "/docs/openapi/chat.openapi.json", 0, &je);
    if (doc == NULL)
        fail_msg("chat.openapi.json: %s (line %d)", je.text, je.line);
    const char *path;
    json_t *item;
    int checked = 0;
    json_object_foreach(json_object_get(doc, "paths"), path, item)
    {
        char real[256];
        const char *brace = strstr(path, "{room}");
        if (brace != NULL)
            snprintf(real, sizeof real, "%.*sgeneral%s", (int)(brace - path), path, brace + 6);
        else
            snprintf(real, sizeof real, "%s", path);
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "get") != 0 && strcmp(method, "post") != 0)
                continue;
            char *r = NULL;
            int status = strcmp(method, "get") == 0
                             ? request(W.port1, "GET", real, NULL, NULL, NULL, 0, &r)
                             : post_json(W.port1, real, NULL, "{}", &r);
            char code[8];
            snprintf(code, sizeof code, "%d", status);
            if (json_object_get(json_object_get(op, "responses"), code) == NULL)
                fail_msg("%s %s answered %d, which the document does not list:\n%s", method, real,
                         status, r);
            free(r);
            checked++;
        }
    }
    assert_true(checked >= 9);
    json_decref(doc);
}

/* ---- 6. SIGTERM ----------------------------------------------------------------------------- */

static void test_sigterm_closes_streams(void **state)
{
    (void)state;
    char t[65];
    join(W.port1, "general", "last", t);
    stream s = open_stream(W.port1, "general", t);
    hd_error err;
    assert_hd_err(0, hd_proc_signal(W.p1, SIGTERM, &err), &err);
    int ended = stream_wait(&s, NULL, 5000); /* until the server closes */
    if (!ended || strstr(s.seen, "event: bye\ndata: {\"reason\":\"server stopping\"}") == NULL)
        fail_msg("no bye, or no end, within 5 s:\n%s", s.seen);
    stream_close(&s);
    assert_hd_err(0, hd_proc_stop(W.p1, 5000, &err), &err);
    assert_hd_err(0, hd_proc_stop(W.p2, 5000, &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_and_hostile_input),
        cmocka_unit_test(test_post_refusals),
        cmocka_unit_test(test_two_processes_one_room),
        cmocka_unit_test(test_stream_refusals_and_leave),
        cmocka_unit_test(test_page_and_markup_as_text),
        cmocka_unit_test(test_join_rate_limit),
        cmocka_unit_test(test_openapi_contract),
        cmocka_unit_test(test_sigterm_closes_streams),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
