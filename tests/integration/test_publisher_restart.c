/* Integration tests that RESTART the broker ("$HD_SERVERS_CTL" restart rabbitmq): run them
 * on a private broker, never on one shared with other test runs.
 *
 *  1. A durable queue and its persistent messages survive a restart (transient ones do not).
 *  2. A publisher keeps going through a restart: messages reported LOST are sent again, and
 *     afterwards every message of the run is in the queue — at least once, none missing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/publisher.h"
#include "herald/topology.h"

static const hd_amqp_options fast_reconnect = {
    .connect_timeout_ms = 2000, .reconnect_base_ms = 100, .reconnect_cap_ms = 1000};

static void restart_broker(int background, const char *done_file)
{
    const char *ctl = hd_test_require_env("HD_SERVERS_CTL");
    char cmd[1024];
    if (background)
        snprintf(cmd, sizeof cmd, "( '%s' restart rabbitmq >/dev/null 2>&1; touch '%s' ) &", ctl,
                 done_file);
    else
        snprintf(cmd, sizeof cmd, "'%s' restart rabbitmq >/dev/null 2>&1", ctl);
    int rc = system(cmd);
    assert_int_equal(rc, 0);
}

/* Reconnect, giving up after a minute so that a broker that never comes back fails the test
 * instead of hanging it. */
static void reconnect(hd_amqp *a)
{
    hd_error err;
    int64_t t0 = hd_clock_ms();
    int rc;
    while ((rc = hd_amqp_reconnect(a, NULL, &err)) != 0) {
        assert_true(hd_clock_ms() - t0 < 60000);
        hd_sleep_ms(200);
    }
}

static void durable_queue_and_persistent_messages_survive(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_amqp *a = NULL, *pa = NULL;
    hd_publisher *pub = NULL;
    assert_hd_err(0, hd_amqp_open(url, &fast_reconnect, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, &fast_reconnect, &pa, &err), &err);
    assert_hd_err(0, hd_publisher_new(pa, &(hd_publisher_options){.window = 100}, &pub, &err),
                  &err);
    char *q = hd_test_unique_name("hd-restart-durable");
    hd_queue_spec spec = {.name = q, .durable = 1};
    assert_hd_err(0, hd_queue_declare(a, &spec, NULL, &err), &err);

    for (int i = 0; i < 500; i++) {
        hd_message m = {.routing_key = q, .body = "persistent", .len = 10};
        assert_hd_err(0, hd_publisher_publish(pub, &m, NULL, &err), &err);
    }
    for (int i = 0; i < 100; i++) {
        hd_message m = {.routing_key = q, .body = "transient", .len = 9, .flags = HD_MSG_TRANSIENT};
        assert_hd_err(0, hd_publisher_publish(pub, &m, NULL, &err), &err);
    }
    assert_hd_err(0, hd_publisher_wait(pub, 10000, &err), &err);
    hd_queue_info info;
    assert_hd_err(0, hd_queue_inspect(a, q, &info, &err), &err);
    assert_int_equal(info.message_count, 600);

    restart_broker(0, NULL);

    /* The old connection is dead; the first call says so, reconnect repairs it. */
    int rc = hd_queue_inspect(a, q, &info, &err);
    assert_true(rc == HD_ECLOSED || rc == 0);
    reconnect(a);
    assert_int_equal(hd_amqp_generation(a), 2);
    assert_hd_err(0, hd_queue_inspect(a, q, &info, &err), &err);
    print_message("    after restart: %u messages in %s\n", info.message_count, q);
    assert_int_equal(info.message_count, 500); /* the persistent ones, and only those */

    assert_hd_err(0, hd_queue_delete(a, q, NULL, &err), &err);
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    free(q);
}

/* ---- publishing through a restart ---------------------------------------------------- */

#define N 3000

typedef struct run {
    unsigned char confirmed[N];
    int n_confirmed;
    int resend[N * 4];
    int n_resend;
    int lost, returned, nacked;
} run;

static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)reason;
    run *r = ctx;
    int idx = (int)(intptr_t)user;
    switch (fate) {
    case HD_FATE_CONFIRMED:
        if (!r->confirmed[idx]) {
            r->confirmed[idx] = 1;
            r->n_confirmed++;
        }
        break;
    case HD_FATE_RETURNED:
        r->returned++;
        break;
    case HD_FATE_NACKED:
        r->nacked++;
        r->resend[r->n_resend++] = idx;
        break;
    case HD_FATE_LOST:
        /* At-least-once: we cannot know whether it reached the queue, so send it again. */
        r->lost++;
        r->resend[r->n_resend++] = idx;
        break;
    }
}

static void publisher_recovers_after_a_restart(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_amqp *pa = NULL;
    hd_publisher *pub = NULL;
    run *r = calloc(1, sizeof *r);
    assert_hd_err(0, hd_amqp_open(url, &fast_reconnect, &pa, &err), &err);
    hd_publisher_options po = {
        .window = 100, .on_fate = on_fate, .ctx = r, .confirm_timeout_ms = 5000};
    assert_hd_err(0, hd_publisher_new(pa, &po, &pub, &err), &err);

    char *q = hd_test_unique_name("hd-restart-pub");
    {
        hd_amqp *a = NULL;
        hd_queue_spec spec = {.name = q, .durable = 1};
        assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
        assert_hd_err(0, hd_queue_declare(a, &spec, NULL, &err), &err);
        hd_amqp_close(a);
    }
    char done_file[256];
    snprintf(done_file, sizeof done_file, "/tmp/hd-restart-%d.done", (int)getpid());
    unlink(done_file);

    int next = 0, restarted = 0, reconnects = 0;
    int64_t t0 = hd_clock_ms();
    while (r->n_confirmed < N) {
        assert_true(hd_clock_ms() - t0 < 180000);
        if (!restarted && next >= N / 3) {
            restart_broker(1, done_file); /* stops the broker while we keep publishing */
            restarted = 1;
        }
        int rc;
        if (r->n_resend > 0 || next < N) {
            int idx = r->n_resend > 0 ? r->resend[--r->n_resend] : next++;
            char body[32];
            int len = snprintf(body, sizeof body, "%d", idx);
            hd_message m = {
                .routing_key = q, .body = body, .len = (size_t)len, .user = (void *)(intptr_t)idx};
            rc = hd_publisher_publish(pub, &m, NULL, &err);
            if (rc < 0)
                r->resend[r->n_resend++] = idx; /* not accepted: no fate will come */
            /* While the restart is under way, publish slowly (about 200 a second) so that
             * the broker goes down mid-stream rather than after the last message. */
            if (restarted && access(done_file, F_OK) != 0)
                hd_sleep_ms(5);
        } else {
            rc = hd_publisher_wait(pub, 5000, &err);
        }
        if (rc == HD_ECLOSED || rc == HD_ETIMEOUT || rc == HD_EAMQP) {
            print_message("    %s: %s — reconnecting\n", hd_err_name(rc), err.text);
            hd_amqp_mark_broken(pa);
            reconnect(pa);
            reconnects++;
        } else if (rc < 0) {
            fail_msg("unexpected %s: %s", hd_err_name(rc), err.text);
        }
    }
    /* Let the restart script finish before counting. */
    while (access(done_file, F_OK) != 0) {
        assert_true(hd_clock_ms() - t0 < 240000);
        hd_sleep_ms(200);
    }
    unlink(done_file);
    print_message("    %d confirmed, %d lost and re-sent, %d reconnects\n", r->n_confirmed, r->lost,
                  reconnects);
    assert_true(reconnects >= 1);
    assert_int_equal(r->returned, 0);

    /* Every message must be in the queue: read them all back and tick them off. */
    hd_amqp *a = NULL;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    hd_queue_info info;
    assert_hd_err(0, hd_queue_inspect(a, q, &info, &err), &err);
    print_message("    queue holds %u messages for %d distinct ones\n", info.message_count, N);
    assert_true(info.message_count >= N);
    unsigned char *seen = calloc(N, 1);
    int distinct = 0;
    amqp_connection_state_t c = hd_amqp_state(a);
    for (;;) {
        amqp_basic_get(c, hd_amqp_channel(a), amqp_cstring_bytes(q), 1);
        amqp_rpc_reply_t rr = amqp_get_rpc_reply(c);
        assert_hd_err(0, hd_amqp_check_reply(a, rr, "basic.get", &err), &err);
        if (rr.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t msg;
        rr = amqp_read_message(c, hd_amqp_channel(a), &msg, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rr, "read", &err), &err);
        char buf[32] = {0};
        memcpy(buf, msg.body.bytes, msg.body.len < 31 ? msg.body.len : 31);
        int idx = atoi(buf);
        assert_true(idx >= 0 && idx < N);
        if (!seen[idx]++)
            distinct++;
        amqp_destroy_message(&msg);
        amqp_maybe_release_buffers(c);
    }
    assert_int_equal(distinct, N); /* nothing lost */
    for (int i = 0; i < N; i++)
        assert_true(r->confirmed[i]);

    assert_hd_err(0, hd_queue_delete(a, q, NULL, &err), &err);
    hd_amqp_close(a);
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    free(seen);
    free(q);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durable_queue_and_persistent_messages_survive),
        cmocka_unit_test(publisher_recovers_after_a_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
