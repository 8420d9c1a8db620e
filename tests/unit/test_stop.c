/* Unit tests for herald/stop.h: the flag, the fd, waits that end at once on a stop —
 * requested from another thread or from a signal handler. (Async-signal safety itself
 * cannot be tested; stop.c keeps the handler's path to an atomic exchange and a write.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/stop.h"

#define PROMPT_MS 200   /* "at once", with room for a loaded machine */
#define LONG_MS   10000 /* a wait that would fail the test if it ran out */

static void request_is_seen_and_idempotent(void **state)
{
    (void)state;
    hd_stop s;
    hd_error err;
    assert_hd(HD_OK, hd_stop_init(&s, &err));
    assert_int_equal(hd_stop_requested(&s), 0);
    int fd = hd_stop_fd(&s);
    assert_true(fd >= 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 0);

    hd_stop_request(&s);
    hd_stop_request(&s); /* idempotent: still one stop, the fd still readable */
    for (int i = 0; i < 100000; i++)
        hd_stop_request(&s); /* a signal storm cannot fill the pipe or block */
    assert_int_equal(hd_stop_requested(&s), 1);
    assert_int_equal(poll(&p, 1, 0), 1);
    assert_int_equal(poll(&p, 1, 0), 1); /* and stays readable for every poller */
    char buf[8];
    assert_int_equal(read(fd, buf, sizeof buf), 1); /* one byte however many requests */

    hd_stop_reset(&s);
    assert_int_equal(hd_stop_requested(&s), 0);
    assert_int_equal(poll(&p, 1, 0), 0);
    hd_stop_request(&s);
    assert_int_equal(hd_stop_requested(&s), 1);
    hd_stop_release(&s);
    hd_stop_release(&s); /* twice is fine */
}

static void null_is_never_stopped(void **state)
{
    (void)state;
    assert_int_equal(hd_stop_requested(NULL), 0);
    assert_int_equal(hd_stop_fd(NULL), -1);
    hd_stop_request(NULL);
    hd_stop_reset(NULL);
    hd_stop_release(NULL);
    assert_hd(HD_EINVAL, hd_stop_init(NULL, NULL));
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_stop_wait_ms(NULL, 20), 0); /* a plain sleep */
    assert_true(hd_clock_ms() - t0 >= 19);
    assert_int_equal(hd_stop_poll(NULL, NULL, 0, 0), 0);
}

static void wait_times_out_or_returns_at_once_when_stopped(void **state)
{
    (void)state;
    hd_stop s;
    assert_hd(HD_OK, hd_stop_init(&s, NULL));
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_stop_wait_ms(&s, 50), 0);
    assert_true(hd_clock_ms() - t0 >= 49);
    assert_int_equal(hd_stop_wait_ms(&s, 0), 0);
    assert_int_equal(hd_stop_wait_ms(&s, -5), 0);
    hd_stop_request(&s);
    t0 = hd_clock_ms();
    assert_int_equal(hd_stop_wait_ms(&s, LONG_MS), 1);
    assert_int_equal(hd_stop_wait_ms(&s, 0), 1);
    assert_true(hd_clock_ms() - t0 < PROMPT_MS);
    hd_stop_release(&s);
}

typedef struct waiter {
    hd_stop *stop;
    int rc;
    int64_t woke_at;
} waiter;

static void *wait_long(void *arg)
{
    waiter *w = arg;
    w->rc = hd_stop_wait_ms(w->stop, LONG_MS);
    w->woke_at = hd_clock_ms();
    return NULL;
}

static void request_from_another_thread_wakes_a_waiter_promptly(void **state)
{
    (void)state;
    hd_stop s;
    assert_hd(HD_OK, hd_stop_init(&s, NULL));
    waiter w[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) { /* several waiters: every one of them wakes */
        w[i] = (waiter){.stop = &s};
        assert_int_equal(pthread_create(&th[i], NULL, wait_long, &w[i]), 0);
    }
    hd_sleep_ms(100); /* let them sleep */
    int64_t t0 = hd_clock_ms();
    hd_stop_request(&s);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].rc, 1);
        print_message("    waiter %d woke %lld ms after the request\n", i,
                      (long long)(w[i].woke_at - t0));
        assert_true(w[i].woke_at - t0 < PROMPT_MS);
    }
    hd_stop_release(&s);
}

static hd_stop signal_stop;

static void on_usr1(int sig)
{
    (void)sig;
    hd_stop_request(&signal_stop);
}

static void request_from_a_signal_handler_wakes_a_waiter(void **state)
{
    (void)state;
    assert_hd(HD_OK, hd_stop_init(&signal_stop, NULL));
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* even a restarted poll must see the stop */
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    waiter w = {.stop = &signal_stop};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_long, &w), 0);
    hd_sleep_ms(100);
    int64_t t0 = hd_clock_ms();
    assert_int_equal(pthread_kill(th, SIGUSR1), 0);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 1);
    assert_true(w.woke_at - t0 < PROMPT_MS);
    sigaction(SIGUSR1, &old, NULL);
    hd_stop_release(&signal_stop);
}

/* A signal that does not request the stop does not cut the wait short. */
static void on_usr2(int sig)
{
    (void)sig;
}

static void other_signals_do_not_end_the_wait(void **state)
{
    (void)state;
    hd_stop s;
    assert_hd(HD_OK, hd_stop_init(&s, NULL));
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR2, &sa, &old), 0);
    int64_t t0 = hd_clock_ms();
    raise(SIGUSR2);
    assert_int_equal(hd_stop_wait_ms(&s, 100), 0);
    assert_true(hd_clock_ms() - t0 >= 99);
    sigaction(SIGUSR2, &old, NULL);
    hd_stop_release(&s);
}

static void poll_sees_fds_and_the_stop(void **state)
{
    (void)state;
    hd_stop s;
    assert_hd(HD_OK, hd_stop_init(&s, NULL));
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct pollfd fd = {.fd = p[0], .events = POLLIN};
    /* Nothing ready: the time runs out. */
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_stop_poll(&s, &fd, 1, 30), 0);
    assert_true(hd_clock_ms() - t0 >= 29);
    assert_int_equal(hd_stop_poll(&s, &fd, 1, 0), 0);
    /* The fd ready: its count, and its revents. */
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(hd_stop_poll(&s, &fd, 1, LONG_MS), 1);
    assert_true(fd.revents & POLLIN);
    /* Stopped: HD_EINTR, even with the fd ready too. */
    hd_stop_request(&s);
    t0 = hd_clock_ms();
    assert_hd(HD_EINTR, hd_stop_poll(&s, &fd, 1, LONG_MS));
    assert_hd(HD_EINTR, hd_stop_poll(&s, NULL, 0, -1)); /* no limit, and still at once */
    assert_true(hd_clock_ms() - t0 < PROMPT_MS);
    /* Only the fds without a stop. */
    assert_int_equal(hd_stop_poll(NULL, &fd, 1, 0), 1);
    struct pollfd many[HD_STOP_POLL_MAX + 1];
    assert_hd(HD_EINVAL, hd_stop_poll(&s, many, HD_STOP_POLL_MAX + 1, 0));
    assert_hd(HD_EINVAL, hd_stop_poll(&s, NULL, 1, 0));
    close(p[0]);
    close(p[1]);
    hd_stop_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_is_seen_and_idempotent),
        cmocka_unit_test(null_is_never_stopped),
        cmocka_unit_test(wait_times_out_or_returns_at_once_when_stopped),
        cmocka_unit_test(request_from_another_thread_wakes_a_waiter_promptly),
        cmocka_unit_test(request_from_a_signal_handler_wakes_a_waiter),
        cmocka_unit_test(other_signals_do_not_end_the_wait),
        cmocka_unit_test(poll_sees_fds_and_the_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
