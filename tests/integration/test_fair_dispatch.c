/* Integration: fair dispatch. Two consumers on one queue, one slow. With prefetch 1 the slow
 * one holds a single message while the fast one takes the rest; with no prefetch limit the
 * broker deals the messages out round-robin up front and the slow one is stuck with half.
 * Needs HD_AMQP_URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/publisher.h"

#define MESSAGES 20

static atomic_int total;

typedef struct worker {
    const char *name;
    int work_ms;
    int handled; /* only touched by the worker's thread until it is joined */
    hd_consumer *c;
    int rc;
    hd_error err;
} worker;

static hd_consume_result work(void *ctx, const hd_delivery *d)
{
    (void)d;
    worker *w = ctx;
    hd_sleep_ms(w->work_ms);
    w->handled++;
    atomic_fetch_add(&total, 1);
    return HD_CONSUME_OK;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    int64_t end = hd_clock_ms() + 20000;
    w->rc = 0;
    while (atomic_load(&total) < MESSAGES && hd_clock_ms() < end) {
        int rc = hd_consumer_poll(w->c, 50, &w->err);
        if (rc < 0) {
            w->rc = rc;
            break;
        }
    }
    return NULL;
}

/* Both consumers are consuming before the first message is published, so the broker sees
 * both from the start; then both threads poll until every message is handled. */
static void distribute(int prefetch, worker *slow, worker *fast)
{
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("fair");
    hd_amqp *admin = NULL;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &admin, &err), &err);
    assert_hd_err(HD_OK, hd_consumer_declare(admin, queue, NULL, &err), &err);

    worker *ws[2] = {slow, fast};
    for (int i = 0; i < 2; i++) {
        hd_consumer_options o = {
            .queue = queue, .handler = work, .ctx = ws[i], .prefetch = prefetch};
        assert_hd_err(HD_OK, hd_consumer_open(url, &o, &ws[i]->c, &err), &err);
    }
    hd_publisher *p = NULL;
    assert_hd_err(HD_OK, hd_publisher_new(admin, NULL, &p, &err), &err);
    for (int i = 0; i < MESSAGES; i++) {
        hd_message m = {.routing_key = queue, .body = "job", .len = 3};
        assert_hd_err(HD_OK, hd_publisher_publish(p, &m, NULL, &err), &err);
    }
    assert_hd_err(HD_OK, hd_publisher_wait(p, 5000, &err), &err);
    hd_publisher_free(p);

    atomic_store(&total, 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_worker, ws[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_hd_err(HD_OK, ws[i]->rc, &ws[i]->err);
        hd_consumer_close(ws[i]->c);
    }
    print_message("prefetch %d: slow %d, fast %d\n", prefetch, slow->handled, fast->handled);
    assert_int_equal(slow->handled + fast->handled, MESSAGES);
    assert_hd_err(HD_OK, hd_consumer_undeclare(admin, queue, NULL, &err), &err);
    hd_amqp_close(admin);
    free(queue);
}

static void prefetch_one_spreads_by_speed(void **state)
{
    (void)state;
    worker slow = {.name = "slow", .work_ms = 1000};
    worker fast = {.name = "fast", .work_ms = 10};
    distribute(1, &slow, &fast);
    /* The slow worker holds one message at a time; in the ~1 s it takes, the fast one
     * drains the rest. */
    assert_true(slow.handled <= 2);
    assert_true(fast.handled >= MESSAGES - 2);
}

static void no_limit_deals_round_robin(void **state)
{
    (void)state;
    worker slow = {.name = "slow", .work_ms = 150};
    worker fast = {.name = "fast", .work_ms = 10};
    distribute(HD_PREFETCH_UNLIMITED, &slow, &fast);
    /* Round-robin up front: half each, however slow one of them is. */
    assert_true(slow.handled >= MESSAGES / 2 - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prefetch_one_spreads_by_speed),
        cmocka_unit_test(no_limit_deals_round_robin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
