/* Chapter 18 — clusters and quorum queues: kill the leader, watch the client move, lose
 * nothing.
 *
 * Until now one RabbitMQ node held every queue: when it died, the queue was gone until it
 * came back, and a disk lost with it lost the messages. A QUORUM queue keeps a copy on each
 * of several nodes (here three) and one of them, the LEADER, orders the writes. The broker
 * confirms a publish only once a MAJORITY of the copies (2 of 3) wrote it: a confirmed
 * message survives the death of any one node, leader included.
 *
 *   [1] connect        one setting lists every node (HD_CLUSTER_URLS: comma-separated AMQP
 *                      URLs); the client takes the first that answers
 *   [2] declare        a quorum queue; its leader is on the node of the declaring connection
 *   [3] publish        200 messages with confirms
 *   [4] kill -9        the leader's node, at once after the last confirm. The connection
 *                      dies with it (it was on that node); the client reconnects to the next
 *                      node of the list, and sends again the one message that was not
 *                      confirmed; the surviving two elect a new leader
 *   [5] publish        200 more, through the new node
 *   [6] count          every message id, read back from the queue: none lost; the confirmed
 *                      ones of [3] all there; duplicates (a message sent again after its
 *                      confirm was lost with the connection) counted
 *   [7] restart        the killed node rejoins and catches up from the others
 *
 * The cluster is scripts/servers.sh's (make servers-up starts it with HD_RABBIT_CLUSTER=1,
 * or `scripts/servers.sh up --cluster`); the chapter kills and restarts a node through it
 * (HD_SERVERS_CTL). Needs HD_CLUSTER_URLS.
 *
 * A publish the broker NACKs in [5] (the queue had no leader yet: the survivors were still
 * electing one) is not in the queue; the chapter sends it again after a moment. Read along:
 * docs/tutorial/18-clusters.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include "tutorial.h"

#define PER_PHASE 200
#define TOTAL     (2 * PER_PHASE)

/* ---- the cluster, through scripts/servers.sh --------------------------------------------- */

/* The leader of queue and the number of its members, as `rabbitmqctl list_queues` on a
 * running node says; 0 when it does not know (yet). */
static int queue_leader(const char *ctl, const char *queue, char *leader, size_t cap, int *members)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' cluster-ctl list_queues --formatter json name leader members 2>/dev/null "
             "</dev/null",
             ctl);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return 0;
    json_t *all = json_loadf(p, 0, NULL);
    pclose(p);
    int found = 0;
    size_t i;
    json_t *q;
    json_array_foreach(all, i, q)
    {
        const char *name = json_string_value(json_object_get(q, "name"));
        const char *l = json_string_value(json_object_get(q, "leader"));
        if (name != NULL && l != NULL && strcmp(name, queue) == 0 && strchr(l, '@') != NULL) {
            snprintf(leader, cap, "%s", l);
            *members = (int)json_array_size(json_object_get(q, "members"));
            found = 1;
        }
    }
    json_decref(all);
    return found;
}

/* Wait (up to 60 s) for a leader other than `not` ("" = any). */
static int wait_leader(const char *ctl, const char *queue, const char * not, char *leader,
                       size_t cap)
{
    int members = 0;
    for (int64_t end = hd_clock_ms() + 60000; hd_clock_ms() < end; hd_sleep_ms(200))
        if (queue_leader(ctl, queue, leader, cap, &members) && strcmp(leader, not ) != 0)
            return 1;
    return 0;
}

/* `servers.sh kill|start rabbit<i>` for node "herald<i>@localhost". */
static int node_ctl(const char *ctl, const char *verb, const char *node)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s rabbit%d >/dev/null 2>&1", ctl, verb,
             atoi(node + strlen("herald")));
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- publishing ---------------------------------------------------------------------------- */

/* Publish messages first..last-1 (message id "m-<i>", persistent, mandatory), each waiting for
 * its confirm: slow, and the simplest way to see which one was not confirmed when the
 * connection dies. On a lost connection: reconnect (next node of the list), a new publisher,
 * and the same message again. Returns the number confirmed, -1 on a failure. */
static int publish_range(hd_amqp *a, hd_publisher **p, const char *queue, int first, int last)
{
    int confirmed = 0, nacks = 0;
    hd_error err;
    for (int i = first; i < last;) {
        char id[32];
        snprintf(id, sizeof id, "m-%d", i);
        hd_message m = {.routing_key = queue, .body = id, .len = strlen(id), .message_id = id};
        int rc = hd_publish_confirmed(*p, &m, 30000, &err);
        if (rc == 0) {
            confirmed++;
            i++;
            continue;
        }
        if (rc == HD_ENACKED && ++nacks > 150) {
            fprintf(stderr, "message %d: still nacked after 30 s\n", i);
            return -1;
        }
        if (rc == HD_ENACKED) {
            /* The broker refused it: a quorum queue without a leader (the survivors are
             * still electing one) nacks. Not in the queue, so the same message again, in a
             * moment, on a new channel: on RabbitMQ 3.10 the channel that saw the nack kept
             * nacking after the election (measured: 30 s), a new one publishes at once. */
            printf("    publish %d: nacked (the queue is electing its leader): sent again\n",
                   i + 1);
            hd_sleep_ms(200);
            hd_publisher_free(*p);
            *p = NULL;
            if (hd_publisher_new(a, NULL, p, &err) < 0) {
                fprintf(stderr, "new channel: %s\n", err.text);
                return -1;
            }
            continue;
        }
        if (rc != HD_ECLOSED && rc != HD_EAMQP && rc != HD_ETIMEOUT) {
            fprintf(stderr, "message %d: %s\n", i, err.text);
            return -1;
        }
        printf("    publish %d: %s: not confirmed, so it will be sent again\n", i + 1,
               rc == HD_ETIMEOUT ? "no confirm" : "connection closed");
        hd_publisher_free(*p);
        *p = NULL;
        if (hd_amqp_reconnect(a, NULL, &err) < 0 || hd_publisher_new(a, NULL, p, &err) < 0) {
            fprintf(stderr, "reconnect: %s\n", err.text);
            return -1;
        }
        printf("    reconnected to node %d of %d: %s\n", hd_amqp_url_index(a) + 1,
               hd_amqp_url_count(a), hd_amqp_url_text(a));
    }
    return confirmed;
}

/* Read every message back (basic.get, ack each): count per id. */
static int drain(hd_amqp *a, const char *queue, int *seen, int *total)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    *total = 0;
    for (;;) {
        amqp_rpc_reply_t rep = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 0);
        if (hd_amqp_check_reply(a, rep, "basic.get", &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            return -1;
        }
        if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            return 0;
        uint64_t tag = ((amqp_basic_get_ok_t *)rep.reply.decoded)->delivery_tag;
        amqp_message_t msg;
        rep = amqp_read_message(st, ch, &msg, 0);
        if (hd_amqp_check_reply(a, rep, "read message", &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            return -1;
        }
        char id[32] = "";
        if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            snprintf(id, sizeof id, "%.*s", (int)msg.properties.message_id.len,
                     (char *)msg.properties.message_id.bytes);
        amqp_destroy_message(&msg);
        int n = strncmp(id, "m-", 2) == 0 ? atoi(id + 2) : -1;
        if (n >= 0 && n < TOTAL)
            seen[n]++;
        (*total)++;
        amqp_basic_ack(st, ch, tag, 0);
        amqp_maybe_release_buffers(st);
    }
}

int main(void)
{
    const char *urls = tutorial_require_env("HD_CLUSTER_URLS");
    const char *ctl = tutorial_require_env("HD_SERVERS_CTL");
    if (urls == NULL || ctl == NULL)
        return 1;
    int status = 1;
    hd_error err;
    hd_amqp *a = NULL;
    hd_publisher *p = NULL;
    char queue[64], leader[128] = "", next[128] = "";
    int seen[TOTAL] = {0}, total = 0, lost = 0, before = 0, dups = 0;
    snprintf(queue, sizeof queue, "tutorial18-%d", (int)getpid());

    /* 1. One setting, every node: the client takes the first that answers. */
    if (hd_amqp_open(urls, NULL, &a, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        return 1;
    }
    printf("[1] connected to node %d of %d: %s\n", hd_amqp_url_index(a) + 1, hd_amqp_url_count(a),
           hd_amqp_url_text(a));

    /* 2. A quorum queue: durable by nature, replicated on every node of the cluster. */
    hd_queue_spec q = {.name = queue, .durable = 1, .type = HD_QUEUE_QUORUM};
    int members = 0;
    if (hd_queue_declare(a, &q, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    if (!wait_leader(ctl, queue, "", leader, sizeof leader) ||
        !queue_leader(ctl, queue, leader, sizeof leader, &members)) {
        fprintf(stderr, "no leader for %s\n", queue);
        goto out;
    }
    printf("[2] quorum queue declared: leader %s, a copy on each of %d nodes\n", leader, members);

    /* 3. Confirmed: a majority of the copies (2 of 3) have each message. */
    if (hd_publisher_new(a, NULL, &p, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    int c1 = publish_range(a, &p, queue, 0, PER_PHASE);
    if (c1 < 0)
        goto out;
    printf("[3] %d messages published with confirms: %d confirmed\n", PER_PHASE, c1);

    /* 4. The leader dies the instant after the last confirm. */
    printf("[4] kill -9 the leader %s\n", leader);
    fflush(stdout);
    if (node_ctl(ctl, "kill", leader) < 0) {
        fprintf(stderr, "cannot kill %s\n", leader);
        goto out;
    }

    /* 5. Go on publishing: the client finds out, moves, and sends again what was not confirmed. */
    int c2 = publish_range(a, &p, queue, PER_PHASE, TOTAL);
    if (c2 < 0)
        goto restart;
    if (!wait_leader(ctl, queue, leader, next, sizeof next)) {
        fprintf(stderr, "no new leader for %s\n", queue);
        goto restart;
    }
    printf("    the queue's new leader: %s\n", next);
    printf("[5] %d more published with confirms: %d confirmed\n", PER_PHASE, c2);

    /* 6. Read everything back. */
    if (drain(a, queue, seen, &total) < 0)
        goto restart;
    for (int i = 0; i < TOTAL; i++) {
        lost += seen[i] == 0;
        dups += seen[i] > 1 ? seen[i] - 1 : 0;
        before += i < PER_PHASE && seen[i] > 0;
    }
    printf("[6] in the queue: %d messages, %d distinct: %d lost, %d duplicates\n", total,
           TOTAL - lost, lost, dups);
    printf("    of the %d confirmed before the kill, %d are there\n", PER_PHASE, before);
    status = lost == 0 && before == PER_PHASE ? 0 : 1;

restart:
    /* 7. The node comes back and catches up from the others (the queue's copies). */
    if (node_ctl(ctl, "start", leader) == 0)
        printf("[7] %s restarted: back in the cluster\n", leader);
    else {
        fprintf(stderr, "cannot restart %s\n", leader);
        status = 1;
    }
out:
    if (a != NULL && hd_amqp_is_open(a))
        hd_queue_delete(a, queue, NULL, NULL);
    hd_publisher_free(p);
    hd_amqp_close(a);
    if (status == 0)
        printf("done: a confirmed message outlived its leader\n");
    return status;
}
