/* Integration on the three-node cluster (scripts/servers.sh up --cluster; HD_CLUSTER_URLS,
 * HD_SERVERS_CTL): what a client sees when a node dies, and what a confirm promises.
 * Label "integration;cluster"; one lock with the other cluster tests (CMakeLists.txt): these
 * tests kill -9 nodes and start them again, and leave all three running.
 *
 *  1. hd_amqp fails over: a connection to node 2 breaks when node 2 is killed; reconnect goes
 *     to the NEXT node of the list (3) and names it; a new open with the dead node first
 *     skips it.
 *  2. A publisher confirm means the quorum has the message: 500 messages confirmed on a
 *     quorum queue, the leader killed -9 right after the last confirm, every one of them is
 *     on the new leader.
 *  3. The publisher resends what was LOST: 20,000 messages streamed through node 2 (window
 *     256), node 2 killed -9 mid-stream; the connection moves on, every message reported LOST
 *     (or not accepted) is published again; all 20,000 are in the quorum queue (duplicates
 *     possible, none missing) and every one was confirmed in the end.
 *  4. The relay over a node kill: its node dies while it publishes 3000 outbox events; it
 *     reconnects to another node, the rows whose confirm was lost are released and published
 *     again: all 3000 arrive (duplicates possible, none missing), nothing parked or failed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_cluster.h"
#include "hd_relay_test.h"
#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/outbox.h"
#include "herald/publisher.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

static const hd_amqp_options fast = {.connect_timeout_ms = 2000,
                                     .reconnect_base_ms = 100,
                                     .reconnect_cap_ms = 1000,
                                     .rpc_timeout_ms = 30000};

/* The port of node i's URL, as it shows in hd_amqp_url_text ("...@127.0.0.1:5693/"). */
static char *port_of(int node, char *buf, size_t cap)
{
    const char *u = hd_cluster_url(node);
    const char *at = strrchr(u, '@');
    const char *colon = strchr(at ? at : u, ':');
    assert_non_null(colon);
    snprintf(buf, cap, "%s", colon); /* ":5693/" */
    return buf;
}

static void quorum_queue(hd_amqp *a, const char *name)
{
    hd_error err;
    hd_queue_spec q = {.name = name, .durable = 1, .type = HD_QUEUE_QUORUM};
    assert_hd_err(0, hd_queue_declare(a, &q, NULL, &err), &err);
}

/* Every message of queue (basic.get with ack): how many, and whether ids 0..n-1 all came. */
typedef struct drained {
    size_t n;
    size_t missing;
} drained;

static drained drain_ids(hd_amqp *a, const char *queue, size_t expect)
{
    drained d = {0};
    unsigned char *seen = calloc(expect, 1);
    assert_non_null(seen);
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    for (;;) {
        amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 1);
        assert_hd_err(0, hd_amqp_check_reply(a, r, "basic.get", &err), &err);
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t m;
        r = amqp_read_message(st, ch, &m, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, r, "read message", &err), &err);
        char id[64] = "";
        if (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            snprintf(id, sizeof id, "%.*s", (int)m.properties.message_id.len,
                     (const char *)m.properties.message_id.bytes);
        char *end = NULL;
        unsigned long k = strtoul(id, &end, 10);
        if (end != id && k < expect)
            seen[k] = 1;
        d.n++;
        amqp_destroy_message(&m);
        amqp_maybe_release_buffers(st);
    }
    for (size_t k = 0; k < expect; k++)
        d.missing += !seen[k];
    free(seen);
    return d;
}

/* ---- 1. failover of one connection ------------------------------------------------------ */

static void amqp_fails_over_to_the_next_node(void **state)
{
    (void)state;
    hd_error err;
    char p2[32], p3[32];
    port_of(2, p2, sizeof p2);
    port_of(3, p3, sizeof p3);
    char *from2 = hd_cluster_urls_from(2); /* node 2, 3, 1 */
    hd_amqp *a = NULL;
    assert_hd_err(0, hd_amqp_open(from2, &fast, &a, &err), &err);
    assert_int_equal(hd_amqp_url_count(a), 3);
    assert_int_equal(hd_amqp_url_index(a), 0);
    assert_non_null(strstr(hd_amqp_url_text(a), p2));
    assert_non_null(strstr(hd_amqp_url_text(a), ":***@")); /* redacted, one node's URL */
    assert_null(strchr(hd_amqp_url_text(a), ','));
    unsigned gen = hd_amqp_generation(a);

    hd_cluster_node("kill", 2);
    /* The next call finds the connection dead (the kernel reset the socket of the killed
     * VM), and the connection says so. */
    char *q = hd_test_unique_name("hd-cluster-fo");
    hd_queue_spec spec = {.name = q, .durable = 1, .type = HD_QUEUE_QUORUM};
    int rc = hd_queue_declare(a, &spec, NULL, &err);
    assert_true(rc < 0);
    assert_false(hd_amqp_is_open(a));

    int64_t t0 = hd_clock_ms();
    assert_hd_err(0, hd_amqp_reconnect(a, NULL, &err), &err);
    print_message("    node 2 killed; reconnected to %s in %lld ms\n", hd_amqp_url_text(a),
                  (long long)(hd_clock_ms() - t0));
    assert_int_equal(hd_amqp_url_index(a), 1); /* the one after the node that failed */
    assert_non_null(strstr(hd_amqp_url_text(a), p3));
    assert_int_equal(hd_amqp_generation(a), gen + 1);
    /* Two of three members are enough for a new quorum queue. */
    assert_hd_err(0, hd_queue_declare(a, &spec, NULL, &err), &err);

    /* A new connection with the dead node first skips it. */
    hd_amqp *b = NULL;
    assert_hd_err(0, hd_amqp_open(from2, &fast, &b, &err), &err);
    assert_int_equal(hd_amqp_url_index(b), 1);
    hd_amqp_close(b);

    hd_cluster_node("start", 2);
    assert_hd_err(0, hd_queue_delete(a, q, NULL, &err), &err);
    hd_amqp_close(a);
    free(q);
    free(from2);
}

/* ---- 2. a confirm is a quorum's ----------------------------------------------------------- */

#define N_CONFIRMED 500

typedef struct fates {
    int confirmed, other;
} fates;

static void count_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)user;
    (void)reason;
    fates *f = ctx;
    if (fate == HD_FATE_CONFIRMED)
        f->confirmed++;
    else
        f->other++;
}

static void a_confirm_means_the_quorum_has_it(void **state)
{
    (void)state;
    hd_error err;
    char *q = hd_test_unique_name("hd-cluster-confirm");
    hd_amqp *admin = NULL;
    char *from1 = hd_cluster_urls_from(1);
    assert_hd_err(0, hd_amqp_open(from1, &fast, &admin, &err), &err);
    quorum_queue(admin, q);
    int leader = hd_cluster_wait_leader(q, 0, 30000);
    assert_true(leader >= 1);

    /* Publish through a node that is not the leader, so the connection outlives the kill and
     * the confirms come from the quorum, not from the node we talk to. */
    int via = leader % HD_CLUSTER_SIZE + 1;
    char *urls = hd_cluster_urls_from(via);
    hd_amqp *pa = NULL;
    assert_hd_err(0, hd_amqp_open(urls, &fast, &pa, &err), &err);
    fates f = {0};
    hd_publisher_options po = {.window = 256, .on_fate = count_fate, .ctx = &f};
    hd_publisher *pub = NULL;
    assert_hd_err(0, hd_publisher_new(pa, &po, &pub, &err), &err);
    for (int i = 0; i < N_CONFIRMED; i++) {
        char id[32], body[64];
        snprintf(id, sizeof id, "%d", i);
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        hd_message m = {.routing_key = q, .body = body, .len = strlen(body), .message_id = id};
        assert_hd_err(0, hd_publisher_publish(pub, &m, NULL, &err), &err);
    }
    assert_hd_err(0, hd_publisher_wait(pub, 30000, &err), &err);
    assert_int_equal(f.confirmed, N_CONFIRMED);
    assert_int_equal(f.other, 0);

    /* Right after the last confirm: the leader dies without a word. */
    hd_cluster_node("kill", leader);
    int64_t t0 = hd_clock_ms();
    /* Read through the node we published to: once the two survivors have elected a new
     * leader, the queue answers again (until then a passive declare may fail or time out). */
    hd_amqp *reader = NULL;
    assert_hd_err(0, hd_amqp_open(urls, &fast, &reader, &err), &err);
    hd_queue_info qi = {0};
    int64_t end = t0 + 60000;
    while (hd_queue_inspect(reader, q, &qi, &err) < 0 || qi.message_count < N_CONFIRMED) {
        assert_true(hd_clock_ms() < end);
        if (!hd_amqp_is_open(reader))
            assert_hd_err(0, hd_amqp_reconnect(reader, NULL, &err), &err);
        hd_sleep_ms(100);
    }
    int64_t answered = hd_clock_ms() - t0;
    drained d = drain_ids(reader, q, N_CONFIRMED);
    int next = hd_cluster_leader(q);
    print_message("    %d confirmed via node %d; leader node %d killed; the queue answered "
                  "again %lld ms later, led by node %d, with %zu messages, %zu of the confirmed "
                  "missing\n",
                  N_CONFIRMED, via, leader, (long long)answered, next, d.n, d.missing);
    assert_true(next >= 1 && next != leader);
    assert_int_equal(d.missing, 0);
    assert_int_equal(d.n, N_CONFIRMED);

    hd_cluster_node("start", leader);
    assert_hd_err(0, hd_queue_delete(reader, q, NULL, &err), &err);
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(reader);
    hd_amqp_close(admin);
    free(urls);
    free(from1);
    free(q);
}

/* ---- 3. the publisher resends what was LOST ---------------------------------------------- */

#define N_STREAM 20000

/* Fates by message index (user = index + 1): the LOST ones queue up for a resend. */
typedef struct stream {
    unsigned char *confirmed;
    int *lost;
    size_t nlost;
    uint64_t lost_total, other;
} stream;

static void stream_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)reason;
    stream *s = ctx;
    int i = (int)(intptr_t)user - 1;
    if (fate == HD_FATE_CONFIRMED) {
        s->confirmed[i] = 1;
    } else if (fate == HD_FATE_LOST) {
        s->lost[s->nlost++] = i;
        s->lost_total++;
    } else {
        s->other++;
    }
}

static void publish_index(hd_publisher *pub, const char *q, int i, hd_error *err, int *rc)
{
    char id[32];
    snprintf(id, sizeof id, "%d", i);
    hd_message m = {.routing_key = q,
                    .body = id,
                    .len = strlen(id),
                    .message_id = id,
                    .user = (void *)(intptr_t)(i + 1)};
    *rc = hd_publisher_publish(pub, &m, NULL, err);
}

static void publisher_resends_what_was_lost(void **state)
{
    (void)state;
    hd_error err;
    char *q = hd_test_unique_name("hd-cluster-lost");
    char *from1 = hd_cluster_urls_from(1);
    char *from2 = hd_cluster_urls_from(2);
    hd_amqp *admin = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(from1, &fast, &admin, &err), &err);
    quorum_queue(admin, q);
    assert_hd_err(0, hd_amqp_open(from2, &fast, &pa, &err), &err); /* node 2 will die */
    stream s = {.confirmed = calloc(N_STREAM, 1), .lost = calloc(N_STREAM, sizeof(int))};
    assert_non_null(s.confirmed);
    assert_non_null(s.lost);
    hd_publisher_options po = {.window = 256, .on_fate = stream_fate, .ctx = &s};
    hd_publisher *pub = NULL;
    assert_hd_err(0, hd_publisher_new(pa, &po, &pub, &err), &err);

    /* The kill runs beside the stream (servers.sh takes a moment to start). */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' kill rabbit2 >/dev/null 2>&1 &",
             hd_test_require_env("HD_SERVERS_CTL"));
    int next = 0, killed = 0, reconnects = 0;
    int64_t end = hd_clock_ms() + 180000;
    while (next < N_STREAM || s.nlost > 0 || hd_publisher_outstanding(pub) > 0) {
        assert_true(hd_clock_ms() < end);
        int rc = 0, i = -1;
        if (s.nlost > 0) /* what the broker may not have: again, first */
            i = s.lost[--s.nlost];
        else if (next < N_STREAM)
            i = next++;
        if (i >= 0)
            publish_index(pub, q, i, &err, &rc);
        else
            rc = hd_publisher_wait(pub, 5000, &err);
        if (rc < 0 && i >= 0)
            s.lost[s.nlost++] = i; /* not accepted (no fate will come): again later */
        if (!killed && next == N_STREAM / 10) {
            assert_int_equal(system(cmd), 0);
            killed = 1;
        }
        if (rc < 0 && !hd_amqp_is_open(pa)) {
            assert_hd_err(0, hd_amqp_reconnect(pa, NULL, &err), &err);
            reconnects++;
            continue;
        }
        /* A channel error or a full window without confirms: the next publish retries. */
        assert_true(rc >= 0 || rc == HD_ETIMEOUT || rc == HD_EAMQP ||
                    (fprintf(stderr, "%s\n", err.text), 0));
    }
    size_t unconfirmed = 0;
    for (int i = 0; i < N_STREAM; i++)
        unconfirmed += !s.confirmed[i];

    drained d = drain_ids(admin, q, N_STREAM);
    print_message("    %d messages streamed via node 2, killed after %d: %d reconnect(s), %llu "
                  "reported LOST and sent again; %zu in the queue, %zu missing\n",
                  N_STREAM, N_STREAM / 10, reconnects, (unsigned long long)s.lost_total, d.n,
                  d.missing);
    assert_int_equal(unconfirmed, 0);
    assert_int_equal(s.other, 0);
    assert_int_equal(d.missing, 0);
    assert_true(d.n >= N_STREAM);
    assert_true(reconnects >= 1);
    assert_true(hd_amqp_url_index(pa) != 0);

    hd_cluster_node("start", 2);
    assert_hd_err(0, hd_queue_delete(admin, q, NULL, &err), &err);
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(admin);
    free(s.confirmed);
    free(s.lost);
    free(from1);
    free(from2);
    free(q);
}

/* ---- 4. the relay over a node kill -------------------------------------------------------- */

#define N_RELAYED 3000

/* Messages in queue and the distinct "n" values of their bodies. */
static void drain_bodies(hd_amqp *a, const char *queue, size_t *n, size_t *distinct)
{
    unsigned char *seen = calloc(N_RELAYED, 1);
    assert_non_null(seen);
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    *n = *distinct = 0;
    for (;;) {
        amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 1);
        assert_hd_err(0, hd_amqp_check_reply(a, r, "basic.get", &err), &err);
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        amqp_message_t m;
        r = amqp_read_message(st, ch, &m, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, r, "read message", &err), &err);
        json_t *body = json_loadb(m.body.bytes, m.body.len, 0, NULL);
        json_int_t k = json_integer_value(json_object_get(json_object_get(body, "data"), "n"));
        if (k >= 0 && k < N_RELAYED && !seen[k]) {
            seen[k] = 1;
            (*distinct)++;
        }
        json_decref(body);
        (*n)++;
        amqp_destroy_message(&m);
        amqp_maybe_release_buffers(st);
    }
    free(seen);
}

static void relay_survives_the_death_of_its_node(void **state)
{
    (void)state;
    hd_error err;
    hd_test_db d;
    hd_test_db_open(&d, "cluster-relay", 0, "outbox.db?synchronous=full");
    hd_store *s = NULL, *rs = NULL;
    assert_hd_err(0, hd_store_open(d.url, &s, &err), &err);
    assert_true(hd_outbox_migrate(s, &err) >= 0);
    assert_hd_err(0, hd_store_open(d.url, &rs, &err), &err);

    /* The queue (and its leader) on node 1; the relay on node 2, which will die. */
    char *from1 = hd_cluster_urls_from(1);
    char *from2 = hd_cluster_urls_from(2);
    hd_amqp *admin = NULL, *ra = NULL;
    assert_hd_err(0, hd_amqp_open(from1, &fast, &admin, &err), &err);
    char *topic = hd_test_unique_name("hd-cluster-relay");
    char *q = hd_test_unique_name("hd-cluster-relay-q");
    hd_exchange_spec ex = {.name = topic, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_binding_spec bs = {.queue = q, .exchange = topic, .key = "#"};
    assert_hd_err(0, hd_exchange_declare(admin, &ex, &err), &err);
    quorum_queue(admin, q);
    assert_hd_err(0, hd_queue_bind(admin, &bs, &err), &err);
    assert_hd_err(0, hd_amqp_open(from2, &fast, &ra, &err), &err);
    assert_int_equal(hd_amqp_url_index(ra), 0);

    hd_test_runner rn = {0};
    hd_relay_options o = {.batch = 100, .poll_ms = 50};
    assert_hd_err(0, hd_relay_new(rs, ra, &o, &rn.relay, &err), &err);
    hd_test_runner_start(&rn);

    hd_test_outbox_fill(s, topic, 0, N_RELAYED / 2, 10, 0);
    /* Kill its node while it is busy: some rows published, others not yet. */
    int64_t end = hd_clock_ms() + 60000;
    while (hd_test_outbox_pending(s) > N_RELAYED / 4) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(5);
    }
    hd_cluster_node("kill", 2);
    int64_t t_kill = hd_clock_ms();
    hd_test_outbox_fill(s, topic, N_RELAYED / 2, N_RELAYED / 2, 10, 0);
    end = hd_clock_ms() + 120000;
    while (hd_test_outbox_pending(s) > 0) {
        assert_true(hd_clock_ms() < end);
        hd_sleep_ms(20);
    }
    int64_t drained_ms = hd_clock_ms() - t_kill;
    hd_test_runner_stop(&rn);
    assert_hd_err(0, rn.rc, &rn.err);
    hd_relay_stats st;
    hd_relay_get_stats(rn.relay, &st);

    size_t n = 0, distinct = 0;
    drain_bodies(admin, q, &n, &distinct);
    print_message("    node 2 killed under the relay; outbox drained %lld ms later via %s: "
                  "%llu reconnects, %llu lost in flight, %llu released; %zu received, %zu "
                  "distinct of %d\n",
                  (long long)drained_ms, hd_amqp_url_text(ra), (unsigned long long)st.reconnects,
                  (unsigned long long)st.lost, (unsigned long long)st.released, n, distinct,
                  N_RELAYED);
    assert_int_equal(distinct, N_RELAYED); /* nothing lost */
    assert_true(n >= N_RELAYED);           /* a message whose confirm was lost may come twice */
    assert_true(st.reconnects >= 1);
    assert_int_equal(st.failed, 0);
    assert_int_equal(hd_test_outbox_count(s, "parked_at IS NOT NULL"), 0);
    assert_true(hd_amqp_url_index(ra) != 0); /* on a surviving node */

    hd_cluster_node("start", 2);
    hd_relay_free(rn.relay);
    assert_hd_err(0, hd_queue_delete(admin, q, NULL, &err), &err);
    assert_hd_err(0, hd_exchange_delete(admin, topic, &err), &err);
    hd_amqp_close(ra);
    hd_amqp_close(admin);
    hd_store_close(rs);
    hd_store_close(s);
    hd_test_db_drop(&d);
    free(topic);
    free(q);
    free(from1);
    free(from2);
}

/* Whatever happened above, the next test (and the next cluster test) finds three nodes. */
static int all_up(void **state)
{
    (void)state;
    hd_cluster_all_up();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(amqp_fails_over_to_the_next_node, all_up),
        cmocka_unit_test_teardown(a_confirm_means_the_quorum_has_it, all_up),
        cmocka_unit_test_teardown(publisher_resends_what_was_lost, all_up),
        cmocka_unit_test_teardown(relay_survives_the_death_of_its_node, all_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
