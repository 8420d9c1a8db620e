/* integration.instances — two herald-relay processes on one PostgreSQL outbox, two
 * herald-notifications processes on one queue and one PostgreSQL database, under load.
 * Needs HD_AMQP_URL and HD_PG_URL (scripts/servers.sh): a missing server fails the test.
 *
 * 4,000 events of 800 users (registered, verified, three password resets each: the five
 * events of a user are consecutive in the outbox, which is the hard case for order) are
 * written in a few bursts while both relays and both notifications instances run
 * (tests/integration/fleet.h: every process through hd_proc, the counts read from the
 * databases through test-only triggers). Then:
 *   - each event's effect happens exactly once: one notification per event, none lost,
 *     none extra (the inbox absorbs what was delivered twice; the count is printed);
 *   - per-user order holds at the consumer: no notification of a user was inserted before
 *     one of an earlier event of that user. Two mechanisms keep it, each one a fix of this
 *     test's findings (docs/deployment.md, "Several instances and a RabbitMQ cluster"):
 *       * the relays' claims take turns (outbox.c, claim_pg): without it, two relays
 *         claiming at the same instant could split a user's events between them;
 *       * the notifications instances wait for an event's predecessor (the outbox chains
 *         each aggregate's events with "previousid"; notifications/ingest.c): without it,
 *         a user's event 2 in instance B's window can be recorded before event 1 in
 *         instance A's;
 *   - fair dispatch spreads the work: each instance of each service did at least a fifth
 *     of it (the counts are printed); the dead-letter queue is empty.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "fleet.h"
#include "hd_test.h"
#include "herald/clock.h"

#define USERS  800 /* x FLEET_EVENTS_PER_USER events */
#define BURSTS 4

static fleet f;

static int teardown(void **state)
{
    (void)state;
    fleet_abort(&f); /* after a failure: no process outlives the test */
    return 0;
}

static void two_of_each_under_load(void **state)
{
    (void)state;
    hd_test_require_env("HD_PG_URL");
    fleet_open(&f, "hd-instances", hd_test_require_env("HD_AMQP_URL"), NULL);
    /* An experiment's setting, e.g. HD_FLEET_NOTIFY_ENV=HD_NOTIFY_ORDER_WAIT_MS=0 (no order
     * check: the test then finds inversions and fails). */
    f.notif_env = getenv("HD_FLEET_NOTIFY_ENV");
    fleet_start_notifications(&f, 0);
    fleet_start_notifications(&f, 1);
    fleet_start_relay(&f, 0);
    fleet_start_relay(&f, 1);

    int64_t t0 = hd_clock_ms();
    for (int b = 0; b < BURSTS; b++)
        fleet_write(&f, USERS / BURSTS);
    fleet_wait(&f, 120000);
    double secs = (double)(hd_clock_ms() - t0) / 1000.0;
    printf("instances: %d events through 2 relays and 2 notifications instances in %.1f s "
           "(%.0f events/s)\n",
           USERS * FLEET_EVENTS_PER_USER, secs, USERS * FLEET_EVENTS_PER_USER / secs);
    for (int i = 0; i < 2; i++)
        printf("instances: notifications-%d found a user's previous event not yet processed %lld "
               "times (waited, or deferred %lld times)\n",
               i, (long long)fleet_metric(&f, i, "notifications_order_waits_total"),
               (long long)fleet_log_count(&f, i, "event deferred"));

    fleet_report r;
    fleet_report_get(&f, "instances", &r);
    assert_int_equal(r.events, USERS * FLEET_EVENTS_PER_USER);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.extra, 0);
    assert_int_equal(r.inversions, 0);
    assert_int_equal(r.dlq, 0);
    for (int i = 0; i < 2; i++) {
        /* Fair dispatch: neither instance sat idle while the other worked. */
        assert_true(r.per_notifications[i] >= r.events / 5);
        assert_true(r.per_relay[i] >= r.events / 5);
    }
    fleet_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(two_of_each_under_load, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
