/* unit.http_stream — hd_http_reply_stream: a body produced while it is sent.
 *
 *   1. over a socket: the chunks arrive in order, chunked, and the stream's free function
 *      runs once after the end;
 *   2. a client that goes away mid-stream: the free function still runs once;
 *   3. dispatch answers status and content type with an empty body, and frees the stream
 *      unread; a reply that replaces a stream frees it too;
 *   4. hd_http_server_stop waits for a stream in flight and returns once it ends.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/http.h"

typedef struct counter {
    atomic_int frees;
    atomic_int reads;
    int chunks;      /* how many chunks before the end; -1: endless (a 20 ms pause each) */
    atomic_int stop; /* endless streams end when set */
} counter;

static ssize_t read_chunks(void *ctx, uint64_t pos, char *buf, size_t max)
{
    counter *c = ctx;
    int i = atomic_fetch_add(&c->reads, 1);
    if (c->chunks >= 0 && i >= c->chunks)
        return HD_HTTP_STREAM_END;
    if (c->chunks < 0) {
        if (atomic_load(&c->stop))
            return HD_HTTP_STREAM_END;
        hd_sleep_ms(20);
    }
    return snprintf(buf, max, "chunk %d at %llu\n", i, (unsigned long long)pos);
}

static void free_counter(void *ctx)
{
    counter *c = ctx;
    atomic_fetch_add(&c->frees, 1);
}

static void stream_route(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    hd_http_reply_stream(resp, 200, "text/plain", read_chunks, free_counter, ctx);
}

static void replaced_route(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    hd_http_reply_stream(resp, 200, "text/plain", read_chunks, free_counter, ctx);
    hd_http_reply_problem(resp, 409, NULL, "changed my mind");
}

static hd_http_server *serve(counter *c)
{
    hd_http_server *srv;
    hd_error err;
    hd_http_options o = {.port = 0, .stop_timeout_ms = 5000};
    assert_hd_err(0, hd_http_server_new(&o, &srv, &err), &err);
    assert_hd(0, hd_http_route(srv, "GET", "/s", stream_route, c));
    assert_hd(0, hd_http_route(srv, "GET", "/r", replaced_route, c));
    assert_hd_err(0, hd_http_server_start(srv, &err), &err);
    return srv;
}

static int get(hd_http_server *srv, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(hd_http_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[128];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    assert_int_equal(send(fd, req, (size_t)n, 0), n);
    return fd;
}

static char *read_all(int fd)
{
    size_t cap = 65536, len = 0;
    char *b = malloc(cap);
    ssize_t n;
    while (len + 1 < cap && (n = recv(fd, b + len, cap - 1 - len, 0)) > 0)
        len += (size_t)n;
    b[len] = '\0';
    close(fd);
    return b;
}

static void wait_frees(counter *c, int n)
{
    for (int i = 0; i < 250 && atomic_load(&c->frees) < n; i++)
        hd_sleep_ms(20);
    assert_int_equal(atomic_load(&c->frees), n);
}

static void test_chunks_in_order(void **state)
{
    (void)state;
    counter c = {.chunks = 3};
    hd_http_server *srv = serve(&c);
    char *got = read_all(get(srv, "/s"));
    assert_non_null(strstr(got, "HTTP/1.1 200"));
    assert_non_null(strstr(got, "Transfer-Encoding: chunked"));
    char *a = strstr(got, "chunk 0 at 0\n"), *b = strstr(got, "chunk 1 at "),
         *d = strstr(got, "chunk 2 at ");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(d);
    assert_true(a < b && b < d);
    free(got);
    wait_frees(&c, 1);
    hd_http_server_free(srv);
    assert_int_equal(atomic_load(&c.frees), 1);
}

static void test_client_gone(void **state)
{
    (void)state;
    counter c = {.chunks = -1};
    hd_http_server *srv = serve(&c);
    int fd = get(srv, "/s");
    char buf[256];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0);
    close(fd); /* the next writes fail: the stream is over */
    wait_frees(&c, 1);
    hd_http_server_free(srv);
    assert_int_equal(atomic_load(&c.frees), 1);
}

static void test_dispatch_and_replace(void **state)
{
    (void)state;
    counter c = {.chunks = 3};
    hd_http_server *srv = serve(&c);
    hd_http_dispatched out;
    assert_hd(0, hd_http_server_dispatch(srv, "GET", "/s", NULL, NULL, 0, &out));
    assert_int_equal(out.status, 200);
    assert_string_equal(out.content_type, "text/plain");
    assert_string_equal(out.body, "");
    hd_http_dispatched_release(&out);
    assert_int_equal(atomic_load(&c.reads), 0);
    assert_int_equal(atomic_load(&c.frees), 1);
    assert_hd(0, hd_http_server_dispatch(srv, "GET", "/r", NULL, NULL, 0, &out));
    assert_int_equal(out.status, 409);
    hd_http_dispatched_release(&out);
    assert_int_equal(atomic_load(&c.frees), 2);
    char *got = read_all(get(srv, "/r"));
    assert_non_null(strstr(got, "HTTP/1.1 409"));
    free(got);
    assert_int_equal(atomic_load(&c.frees), 3);
    assert_int_equal(atomic_load(&c.reads), 0);
    hd_http_server_free(srv);
}

static void *end_later(void *arg)
{
    counter *c = arg;
    hd_sleep_ms(300);
    atomic_store(&c->stop, 1);
    return NULL;
}

static void test_stop_waits_for_stream(void **state)
{
    (void)state;
    counter c = {.chunks = -1};
    hd_http_server *srv = serve(&c);
    int fd = get(srv, "/s");
    char buf[256];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0);
    pthread_t t;
    pthread_create(&t, NULL, end_later, &c);
    int64_t t0 = hd_clock_ms();
    assert_hd(0, hd_http_server_stop(srv)); /* returns once the stream ended */
    int64_t took = hd_clock_ms() - t0;
    assert_true(took >= 200 && took < 4000);
    pthread_join(t, NULL);
    close(fd);
    hd_http_server_free(srv);
    assert_int_equal(atomic_load(&c.frees), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunks_in_order),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_dispatch_and_replace),
        cmocka_unit_test(test_stop_waits_for_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
