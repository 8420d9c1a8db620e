/* integration.cluster_node_kill — the promises on a three-node RabbitMQ cluster while its
 * nodes and the services' processes die. Needs the cluster (scripts/servers.sh up --cluster:
 * HD_CLUSTER_URLS, HD_CLUSTER_URL_1..3, HD_SERVERS_CTL) and HD_PG_URL; a missing one FAILS.
 *
 * 20,000 events of 4,000 users flow from the users outbox (PostgreSQL) through two
 * herald-relay processes to two herald-notifications processes on one QUORUM queue
 * (HD_QUEUE_TYPE=quorum) and one PostgreSQL database (tests/integration/fleet.h). Every
 * process gets the list of the three nodes, starting with a node of its own: relay 0 is
 * connected to node 1, relay 1 to node 2, notifications 0 to node 2, notifications 1 to
 * node 3. The events are written in eight bursts; between them, in this order:
 *   1. kill -9 the node relay 0 is connected to (node 1): relay 0 loses its connection with
 *      a batch unconfirmed, releases it, reconnects to the next node of its list, and
 *      publishes the batch again (duplicates); then node 1 is restarted and rejoins;
 *   2. kill -9 the node leading the notifications queue (rabbitmqctl list_queues): the
 *      queue elects a new leader among the two others, the consumers on the dead node
 *      reconnect, those on the others get a consumer cancel and subscribe again; the
 *      unacked deliveries come again (duplicates); then the node is restarted;
 *   3. kill -9 relay 1 (its leased rows come back after the lease: duplicates), restarted,
 *      while the old leader boots again (the restarts run in the background, under load);
 *   4. kill -9 notifications 1 (its unacked window comes again: duplicates), restarted.
 * Counted afterwards, from the databases (fleet.h) and the broker, and printed:
 *   - lost: events without a notification: 0;
 *   - every event with exactly one notification: no extra ones;
 *   - the duplicates the broker delivered (relay republishes, redeliveries) that the inbox
 *     absorbed: printed (how many depends on where the kills land: a relay killed while it
 *     waits for work, or a node that dies with nothing unconfirmed, costs none);
 *   - the dead-letter queue is empty;
 *   - per-user order inversions and the instances' shares: printed.
 * Every node is running again at the end (hd_cluster_all_up), also after a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "hd_cluster.h"
#include "hd_test.h"
#include "herald/clock.h"

#define USERS  4000 /* x FLEET_EVENTS_PER_USER = 20,000 events */
#define BURSTS 8

static int64_t t0;

static void step(const char *what)
{
    printf("cluster_node_kill: t=%5.1f s  %s\n", (double)(hd_clock_ms() - t0) / 1000.0, what);
    fflush(stdout);
}

/* Write the next burst and wait until the events flow again: `more` events notified
 * beyond what was when the burst was written (so that every step happens under load). */
static void burst_and_progress(fleet *f, int64_t more)
{
    int64_t before = fleet_done(f);
    fleet_write(f, USERS / BURSTS);
    fleet_wait_count(f, before + more, 120000);
}

/* "$HD_SERVERS_CTL" start rabbit<node> in the background (hd_proc): a node takes tens of
 * seconds to boot and rejoin, and the events keep flowing meanwhile; restart_wait waits
 * for it (exit 0: the node is back in the cluster). */
static hd_proc *restart_begin(int node)
{
    char name[16], log[600];
    snprintf(name, sizeof name, "rabbit%d", node);
    snprintf(log, sizeof log, "%s/restart-rabbit%d.log", hd_test_require_env("HD_SERVERS_DIR"),
             node);
    const char *argv[] = {hd_test_require_env("HD_SERVERS_CTL"), "start", name, NULL};
    hd_proc_options o = {.argv = argv, .log_path = log, .name = name};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    return p;
}

static void restart_wait(hd_proc *p)
{
    hd_error err;
    if (hd_proc_wait(p, 240000, &err) < 0 || hd_proc_exit_code(p) != 0) {
        hd_proc_dump_log(p, stderr, 20);
        fail_msg("servers.sh start %s failed", hd_proc_name(p));
    }
    hd_proc_free(p);
}

static fleet f;

static int teardown(void **state)
{
    (void)state;
    fleet_abort(&f); /* after a failure: no process outlives the test */
    hd_cluster_all_up();
    return 0;
}

static void node_kills_lose_nothing(void **state)
{
    (void)state;
    hd_test_require_env("HD_PG_URL");
    fleet_open(&f, "hd-node-kill", hd_cluster_urls(), "quorum");
    f.prefetch = 256;
    f.relay_batch = 500;
    f.relay_lease_ms = "5000";
    char *relay0 = hd_cluster_urls_from(1), *relay1 = hd_cluster_urls_from(2);
    char *notif0 = hd_cluster_urls_from(2), *notif1 = hd_cluster_urls_from(3);
    f.relay_url[0] = relay0;
    f.relay_url[1] = relay1;
    f.notif_url[0] = notif0;
    f.notif_url[1] = notif1;

    t0 = hd_clock_ms();
    fleet_start_notifications(&f, 0);
    fleet_start_notifications(&f, 1);
    fleet_start_relay(&f, 0);
    fleet_start_relay(&f, 1);
    step("two relays (nodes 1, 2) and two notifications instances (nodes 2, 3) started");

    burst_and_progress(&f, 500);
    step("1. kill -9 node 1, relay 0's node");
    hd_cluster_node("kill", 1);
    burst_and_progress(&f, 800);
    hd_proc *restart = restart_begin(1);
    burst_and_progress(&f, 500);
    restart_wait(restart);
    step("   node 1 restarted, back in the cluster");

    int leader = hd_cluster_wait_leader(f.queue, 0, 30000);
    assert_true(leader >= 1 && leader <= HD_CLUSTER_SIZE);
    char what[160];
    snprintf(what, sizeof what, "2. kill -9 node %d, the leader of the notifications queue",
             leader);
    step(what);
    hd_cluster_node("kill", leader);
    int next = hd_cluster_wait_leader(f.queue, leader, 30000);
    snprintf(what, sizeof what, "   node %d leads the queue now", next);
    step(what);
    assert_true(next >= 1 && next != leader);
    burst_and_progress(&f, 800);
    restart = restart_begin(leader);

    step("3. kill -9 relay 1 (while the old leader restarts)");
    fleet_kill_relay(&f, 1);
    burst_and_progress(&f, 500);
    fleet_start_relay(&f, 1);
    step("   relay 1 restarted");

    step("4. kill -9 notifications 1");
    fleet_kill_notifications(&f, 1);
    burst_and_progress(&f, 500);
    fleet_start_notifications(&f, 1);
    step("   notifications 1 restarted");
    restart_wait(restart);
    step("   the old leader restarted, back in the cluster");

    while (f.n_users < USERS)
        fleet_write(&f, USERS / BURSTS);
    fleet_wait(&f, 300000);
    step("every event has its notification");

    fleet_report r;
    fleet_report_get(&f, "cluster_node_kill", &r);
    printf("cluster_node_kill: %lld events in %.1f s: lost %lld, extra %lld, broker duplicates "
           "absorbed by the inbox %lld, dead letters %lld\n",
           (long long)r.events, (double)(hd_clock_ms() - t0) / 1000.0, (long long)r.lost,
           (long long)r.extra, (long long)r.inbox_duplicates, (long long)r.dlq);
    fflush(stdout);
    assert_int_equal(r.events, USERS * FLEET_EVENTS_PER_USER);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.extra, 0);
    assert_int_equal(r.dlq, 0);
    fleet_close(&f);
    free(relay0);
    free(relay1);
    free(notif0);
    free(notif1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(node_kills_lose_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
