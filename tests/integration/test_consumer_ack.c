/* Integration: manual acknowledgement. A message received and not acked comes back, marked
 * redelivered, when its consumer's connection closes or its process dies; an acked one does
 * not. Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/publisher.h"
#include "herald/topology.h"

typedef struct seen {
    int calls;
    int redelivered;
    int attempt;
    char message_id[64];
    char correlation_id[64];
    char body[64];
    char tenant[64];
} seen;

static hd_consume_result remember(void *ctx, const hd_delivery *d)
{
    seen *s = ctx;
    s->calls++;
    s->redelivered = d->redelivered;
    s->attempt = d->attempt;
    snprintf(s->message_id, sizeof s->message_id, "%s", d->message_id ? d->message_id : "");
    snprintf(s->correlation_id, sizeof s->correlation_id, "%s",
             d->correlation_id ? d->correlation_id : "");
    snprintf(s->body, sizeof s->body, "%.*s", (int)d->body_len, (const char *)d->body);
    const char *t = hd_delivery_header(d, "tenant");
    snprintf(s->tenant, sizeof s->tenant, "%s", t ? t : "");
    return HD_CONSUME_OK;
}

static void publish(hd_amqp *a, const char *queue, const char *body, const char *id)
{
    hd_error err;
    hd_publisher *p = NULL;
    assert_hd_err(HD_OK, hd_publisher_new(a, NULL, &p, &err), &err);
    hd_amqp_kv headers[] = {{"tenant", "acme"}};
    hd_message m = {.routing_key = queue,
                    .body = body,
                    .len = strlen(body),
                    .message_id = id,
                    .correlation_id = "corr-1",
                    .headers = headers,
                    .n_headers = 1};
    assert_hd_err(HD_OK, hd_publish_confirmed(p, &m, 5000, &err), &err);
    hd_publisher_free(p);
}

static uint32_t depth(hd_amqp *a, const char *queue)
{
    hd_error err;
    hd_queue_info info;
    assert_hd_err(HD_OK, hd_queue_inspect(a, queue, &info, &err), &err);
    return info.message_count;
}

static void poll_once(hd_consumer *c, int64_t timeout_ms)
{
    hd_error err;
    int64_t end = hd_clock_ms() + timeout_ms;
    int rc;
    while ((rc = hd_consumer_poll(c, 100, &err)) == 0)
        assert_true(hd_clock_ms() < end);
    assert_hd_err(1, rc, &err);
}

/* Raw librabbitmq, as chapter 08 shows it: consume with manual ack, take the message, do not
 * ack, close the connection. */
static void unacked_then_closed_is_redelivered(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("ack");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(admin, queue, NULL, &err), &err);
    publish(admin, queue, "hello", "m-1");

    hd_amqp *a = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &a, &err), &err);
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_basic_consume(st, hd_amqp_channel(a), amqp_cstring_bytes(queue), amqp_empty_bytes, 0,
                       0 /* no_ack = 0: we promise to ack */, 0, amqp_empty_table);
    assert_hd_err(HD_OK, hd_amqp_check_reply(a, amqp_get_rpc_reply(st), "consume", &err), &err);
    amqp_envelope_t env;
    struct timeval tv = {5, 0};
    amqp_rpc_reply_t r = amqp_consume_message(st, &env, &tv, 0);
    assert_hd_err(HD_OK, hd_amqp_check_reply(a, r, "consume message", &err), &err);
    assert_int_equal(env.redelivered, 0);
    assert_int_equal(env.message.body.len, 5);
    amqp_destroy_envelope(&env);
    /* Held, not acked: the broker counts it as unacked, not ready. */
    assert_int_equal(depth(admin, queue), 0);
    hd_amqp_close(a);

    /* Back in the queue, and the next consumer is told it was delivered before. */
    hd_consumer_options o = {.queue = queue, .handler = remember};
    seen s = {0};
    o.ctx = &s;
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &c, &err), &err);
    poll_once(c, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.redelivered, 1);
    assert_int_equal(s.attempt, 1); /* a redelivery is not a retry */
    assert_string_equal(s.message_id, "m-1");
    assert_string_equal(s.correlation_id, "corr-1");
    assert_string_equal(s.body, "hello");
    assert_string_equal(s.tenant, "acme");
    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.redelivered, 1);
    assert_int_equal(n.acked, 1);
    hd_consumer_close(c);

    /* Acked means gone: nothing comes back after the close. */
    assert_int_equal(depth(admin, queue), 0);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

/* The handler's process dies in the middle of a message: no ack was sent, so the broker
 * redelivers when the socket closes. */
static hd_consume_result crash(void *ctx, const hd_delivery *d)
{
    (void)ctx;
    (void)d;
    _exit(7);
}

static void consumer_dying_mid_message_loses_nothing(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("ack-crash");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(admin, queue, NULL, &err), &err);
    publish(admin, queue, "precious", "m-2");

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        hd_consumer_options o = {.queue = queue, .handler = crash};
        hd_consumer *c = NULL;
        if (hd_consumer_open(url, &o, &c, NULL) < 0)
            _exit(2);
        for (int i = 0; i < 50; i++)
            hd_consumer_poll(c, 100, NULL);
        _exit(3); /* the message never came */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 7);

    seen s = {0};
    hd_consumer_options o = {.queue = queue, .handler = remember, .ctx = &s};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &c, &err), &err);
    poll_once(c, 5000);
    assert_int_equal(s.redelivered, 1);
    assert_string_equal(s.body, "precious");
    hd_consumer_close(c);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

/* The consumer's connection dies (a broker restart, a network cut): poll says HD_ECLOSED,
 * reconnect restores consuming, and work goes on. */
static void reconnect_after_connection_loss(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("ack-reconnect");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    seen s = {0};
    hd_consumer_options o = {.queue = queue, .handler = remember, .ctx = &s, .declare = 1};
    hd_consumer *c = NULL;
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &c, &err), &err);
    publish(admin, queue, "one", "m-3");
    poll_once(c, 5000);
    assert_int_equal(s.calls, 1);

    /* Cut the consumer's sockets under it: shutdown(2) on the consuming connection's fd is
     * what a dead network looks like from this side. */
    int fd = hd_consumer_fd(c);
    assert_true(fd >= 0);
    assert_int_equal(shutdown(fd, SHUT_RDWR), 0);
    publish(admin, queue, "two", "m-4");
    int rc = 0;
    for (int i = 0; i < 20 && rc >= 0; i++)
        rc = hd_consumer_poll(c, 100, &err);
    assert_hd_err(HD_ECLOSED, rc, &err);
    assert_hd_err(HD_OK, hd_consumer_reconnect(c, NULL, &err), &err);
    poll_once(c, 5000);
    assert_int_equal(s.calls, 2);
    hd_consumer_counts n;
    hd_consumer_get_counts(c, &n);
    assert_int_equal(n.reconnects, 1);
    hd_consumer_close(c);
    assert_int_equal(depth(admin, queue), 0);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

/* hd_consumer_run repairs on its own: after a cut connection it reconnects, redeclares and
 * keeps consuming until stopped. */
typedef struct runner {
    hd_consumer *c;
    hd_stop stop;
    int rc;
    hd_error err;
} runner;

static atomic_int run_calls;

static hd_consume_result count_call(void *ctx, const hd_delivery *d)
{
    (void)ctx;
    (void)d;
    atomic_fetch_add(&run_calls, 1);
    return HD_CONSUME_OK;
}

static void *run_thread(void *arg)
{
    runner *r = arg;
    r->rc = hd_consumer_run(r->c, &r->stop, &r->err);
    return NULL;
}

static void wait_calls(int n)
{
    int64_t end = hd_clock_ms() + 15000;
    while (atomic_load(&run_calls) < n) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(20);
    }
}

static void run_recovers_and_stops(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("ack-run");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    runner r = {0};
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    hd_consumer_options o = {.queue = queue, .handler = count_call, .declare = 1};
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &r.c, &err), &err);
    atomic_store(&run_calls, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_thread, &r), 0);

    publish(admin, queue, "one", "r-1");
    wait_calls(1);
    /* A dead network under the running consumer. */
    assert_int_equal(shutdown(hd_consumer_fd(r.c), SHUT_RDWR), 0);
    hd_sleep_ms(300);
    publish(admin, queue, "two", "r-2");
    wait_calls(2);
    /* (A deleted work queue — the broker cancels the consumer, run redeclares — needs
     * hd_amqp_open to advertise the consumer_cancel_notify capability; without it the
     * broker never tells a librabbitmq client. Requested from amqp.h.) */
    publish(admin, queue, "three", "r-3");
    wait_calls(3);

    hd_stop_request(&r.stop);
    pthread_join(t, NULL);
    hd_stop_release(&r.stop);
    assert_hd_err(HD_OK, r.rc, &r.err);
    hd_consumer_counts n;
    hd_consumer_get_counts(r.c, &n);
    assert_int_equal(n.reconnects, 1);
    assert_int_equal(n.acked, 3);
    hd_consumer_close(r.c);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

/* An idle consumer waits on its socket and the stop token together: with an idle wait of
 * 5 s, hd_consumer_run returns within a fraction of a second of the stop (librabbitmq's own
 * wait, which it replaced, could only be cut at its timeout). */
static void run_stops_at_once_while_waiting(void **state)
{
    (void)state;
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("ack-stop");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    runner r = {0};
    assert_hd_err(HD_OK, hd_stop_init(&r.stop, &err), &err);
    hd_consumer_options o = {
        .queue = queue, .handler = count_call, .declare = 1, .idle_wait_ms = 5000};
    assert_hd_err(HD_OK, hd_consumer_open(url, &o, &r.c, &err), &err);
    atomic_store(&run_calls, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_thread, &r), 0);
    publish(admin, queue, "one", "s-1");
    wait_calls(1);    /* the socket wakes the wait as well */
    hd_sleep_ms(300); /* idle again, inside a 5 s wait */
    int64_t t0 = hd_clock_ms();
    hd_stop_request(&r.stop);
    pthread_join(t, NULL);
    int64_t took = hd_clock_ms() - t0;
    print_message("    idle consumer: hd_consumer_run returned %lld ms after the stop "
                  "(idle wait 5 s)\n",
                  (long long)took);
    assert_true(took < 200);
    assert_hd_err(HD_OK, r.rc, &r.err);
    hd_stop_release(&r.stop);
    hd_consumer_close(r.c);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unacked_then_closed_is_redelivered),
        cmocka_unit_test(consumer_dying_mid_message_loses_nothing),
        cmocka_unit_test(reconnect_after_connection_loss),
        cmocka_unit_test(run_recovers_and_stops),
        cmocka_unit_test(run_stops_at_once_while_waiting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
