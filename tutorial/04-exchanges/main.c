/* Chapter 04 — exchanges.
 *
 * A producer never writes into a queue. It publishes to an EXCHANGE with a routing key, and
 * the exchange copies the message into every queue bound to it whose binding matches. The
 * exchange TYPE decides what "matches" means:
 *
 *   direct   the binding key equals the routing key
 *   fanout   every bound queue; the routing key is ignored
 *   topic    the binding key is a pattern: '*' is one word, '#' is any number of words
 *
 * Steps: declare one exchange of each type and three queues (emails, sms, audit) bound to
 * all three; publish a few messages and, after each one, empty the queues with basic.get to
 * show where it landed. Messages that match nothing come back to us as RETURNED because we
 * publish them "mandatory". Everything declared is deleted at the end.
 * docs/tutorial/04-exchanges.md explains the why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include "tutorial.h"

#define N_QUEUES 3

static char exchange_names[3][64];
static char queue_names[N_QUEUES][64];
static const char *queue_labels[N_QUEUES] = {"emails", "sms", "audit"};

/* The publisher reports each message's fate here; we keep the broker's reason for a
 * returned message to print it. */
static char last_reason[128];

static void remember_reason(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)ctx;
    (void)seq;
    (void)user;
    (void)fate;
    snprintf(last_reason, sizeof last_reason, "%s", reason ? reason : "");
}

/* Take every message out of queue with basic.get (no_ack: we only count them) and return how
 * many there were, or -1 on error. basic.get is the simplest way to read a queue; real
 * consumers use basic.consume (chapter 08). */
static int drain(hd_amqp *a, const char *queue, hd_error *err)
{
    amqp_connection_state_t c = hd_amqp_state(a);
    int n = 0;
    for (;;) {
        amqp_basic_get(c, hd_amqp_channel(a), amqp_cstring_bytes(queue), 1 /* no_ack */);
        amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
        if (hd_amqp_check_reply(a, r, "basic.get", err) < 0)
            return -1;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            return n;
        /* get-ok is followed by the message itself: read it to keep the stream in step. */
        amqp_message_t msg;
        if (hd_amqp_check_reply(a, amqp_read_message(c, hd_amqp_channel(a), &msg, 0),
                                "read message", err) < 0)
            return -1;
        amqp_destroy_message(&msg);
        n++;
    }
}

/* Publish one message and print where it went. Returns 0, or -1 on an unexpected error. */
static int publish_and_show(hd_amqp *a, hd_publisher *pub, int step, const char *type,
                            const char *exchange, const char *key)
{
    hd_error err;
    hd_message m = {.exchange = exchange,
                    .routing_key = key,
                    .body = "hello",
                    .len = 5,
                    .content_type = "text/plain"};
    printf("[%d] %-6s key=%-22s -> ", step, type, key);
    int rc = hd_publish_confirmed(pub, &m, 5000, &err);
    if (rc == HD_ERETURNED) {
        printf("nowhere: RETURNED (%s)\n", last_reason);
        return 0;
    }
    if (rc < 0) {
        printf("\npublish failed: %s\n", err.text);
        return -1;
    }
    for (int i = 0; i < N_QUEUES; i++) {
        int n = drain(a, queue_names[i], &err);
        if (n < 0) {
            printf("\n%s\n", err.text);
            return -1;
        }
        printf("%s=%d%s", queue_labels[i], n, i + 1 < N_QUEUES ? " " : "\n");
    }
    return 0;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    int rc = 1;
    hd_error err;
    hd_amqp *a = NULL, *pa = NULL;
    hd_publisher *pub = NULL;

    /* Names with our pid, so that two runs on one broker do not collide. */
    const char *kinds[3] = {"direct", "fanout", "topic"};
    for (int i = 0; i < 3; i++)
        snprintf(exchange_names[i], sizeof exchange_names[i], "tutorial04-%d-%s", (int)getpid(),
                 kinds[i]);
    for (int i = 0; i < N_QUEUES; i++)
        snprintf(queue_names[i], sizeof queue_names[i], "tutorial04-%d-%s", (int)getpid(),
                 queue_labels[i]);
    const char *direct = exchange_names[0], *fanout = exchange_names[1], *topic = exchange_names[2];

    /* One connection for declarations and reading, one for the publisher: a publisher reads
     * confirms from its connection and must not share it with other readers. */
    if (hd_amqp_open(url, NULL, &a, &err) < 0 || hd_amqp_open(url, NULL, &pa, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(a));

    const hd_exchange_spec exchanges[] = {
        {.name = direct, .type = HD_EXCHANGE_DIRECT},
        {.name = fanout, .type = HD_EXCHANGE_FANOUT},
        {.name = topic, .type = HD_EXCHANGE_TOPIC},
    };
    const hd_queue_spec queues[] = {
        {.name = queue_names[0]}, {.name = queue_names[1]}, {.name = queue_names[2]}};
    /* Which queue listens to which exchange, with which key: indexes into the arrays above,
     * so that the table can be printed with readable names. */
    static const struct {
        int exchange, queue;
        const char *key;
    } plan[] = {
        {0, 0, "email"}, /* direct: exact key */
        {0, 1, "sms"},
        {1, 0, ""}, /* fanout: the key does not matter */
        {1, 1, ""},
        {1, 2, ""},
        {2, 0, "notify.email.*"}, /* topic: patterns */
        {2, 1, "notify.sms.*"},
        {2, 2, "notify.#"},
    };
    hd_binding_spec bindings[HD_COUNT_OF(plan)];
    for (size_t i = 0; i < HD_COUNT_OF(plan); i++)
        bindings[i] = (hd_binding_spec){.queue = queue_names[plan[i].queue],
                                        .exchange = exchange_names[plan[i].exchange],
                                        .key = plan[i].key};
    const hd_topology topo = HD_TOPOLOGY(exchanges, queues, bindings);
    if (hd_topology_declare(a, &topo, &err) < 0) {
        fprintf(stderr, "declare: %s\n", err.text);
        goto cleanup;
    }
    printf("[2] declared exchanges direct, fanout, topic and queues emails, sms, audit\n");
    printf("[3] bindings:\n");
    for (size_t i = 0; i < HD_COUNT_OF(plan); i++)
        printf("      %-6s --%-16s--> %s\n", kinds[plan[i].exchange], plan[i].key,
               queue_labels[plan[i].queue]);

    hd_publisher_options po = {.window = 1, .on_fate = remember_reason};
    if (hd_publisher_new(pa, &po, &pub, &err) < 0) {
        fprintf(stderr, "publisher: %s\n", err.text);
        goto cleanup;
    }
    struct {
        const char *type, *exchange, *key;
    } sends[] = {
        {"direct", direct, "email"},
        {"direct", direct, "sms"},
        {"direct", direct, "push"}, /* no binding "push" */
        {"fanout", fanout, "anything"},
        {"fanout", fanout, ""},
        {"topic", topic, "notify.email.welcome"},
        {"topic", topic, "notify.sms.code"},
        {"topic", topic, "notify.push.promo"},       /* only "notify.#" matches */
        {"topic", topic, "notify.email.welcome.v2"}, /* '*' is exactly one word */
        {"topic", topic, "billing.invoice_paid"},    /* matches no pattern */
    };
    int step = 4;
    for (size_t i = 0; i < HD_COUNT_OF(sends); i++)
        if (publish_and_show(a, pub, step++, sends[i].type, sends[i].exchange, sends[i].key) < 0)
            goto cleanup;
    rc = 0;

cleanup:
    if (a != NULL && hd_amqp_is_open(a)) {
        if (hd_topology_delete(a, &topo, &err) < 0) {
            fprintf(stderr, "cleanup: %s\n", err.text);
            rc = 1;
        } else if (rc == 0) {
            printf("[%d] deleted the 3 queues and 3 exchanges\n", 4 + (int)HD_COUNT_OF(sends));
        }
    }
out:
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    return rc;
}
