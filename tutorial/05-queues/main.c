/* Chapter 05 — queues.
 *
 * A queue stores messages until a consumer takes them. Its properties are fixed when it is
 * first declared:
 *
 *   durable      the queue survives a broker restart (with its persistent messages)
 *   exclusive    it belongs to the declaring connection and dies with it
 *   auto-delete  it is deleted when its last consumer goes away
 *   type         classic (one node) or quorum (replicated; has a delivery limit)
 *   arguments    x-message-ttl, x-max-length, x-dead-letter-exchange, ...
 *
 * Declaring is idempotent: every program declares the queues it needs at start-up, and
 * declaring an existing queue with the same properties is a no-op. Declaring it with other
 * properties is an error (406 PRECONDITION_FAILED) — the broker never changes a queue.
 *
 * Steps: a durable queue declared three times; the same name with other properties; an
 * exclusive queue another connection cannot touch; an auto-delete queue that vanishes with
 * its consumer; a quorum queue; a TTL queue whose messages expire; a max-length queue that
 * drops the oldest. docs/tutorial/05-queues.md explains the why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include "tutorial.h"

static char names[6][64];

/* Publish n small persistent messages straight to queue (the default exchange routes by
 * queue name) and wait for their confirms. */
static int fill(hd_publisher *pub, const char *queue, int n, hd_error *err)
{
    for (int i = 0; i < n; i++) {
        char body[16];
        int len = snprintf(body, sizeof body, "m%d", i);
        hd_message m = {.routing_key = queue, .body = body, .len = (size_t)len};
        if (hd_publisher_publish(pub, &m, NULL, err) < 0)
            return -1;
    }
    return hd_publisher_wait(pub, 5000, err);
}

/* The broker's own words in a herald error text ("406 PRECONDITION_FAILED - ..."): what
 * follows the context, which ends with ": " before a three-digit reply code. */
static const char *broker_says(const char *text)
{
    for (const char *p = strstr(text, ": "); p != NULL; p = strstr(p + 1, ": "))
        if (p[2] >= '1' && p[2] <= '9' && p[3] >= '0' && p[3] <= '9' && p[4] >= '0' &&
            p[4] <= '9' && p[5] == ' ')
            return p + 2;
    return text;
}

static long count(hd_amqp *a, const char *queue, hd_error *err)
{
    hd_queue_info info;
    if (hd_queue_inspect(a, queue, &info, err) < 0)
        return -1;
    return (long)info.message_count;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    const char *labels[6] = {"orders", "exclusive", "autodelete", "quorum", "ttl", "bounded"};
    for (int i = 0; i < 6; i++)
        snprintf(names[i], sizeof names[i], "tutorial05-%d-%s", (int)getpid(), labels[i]);
    const char *orders = names[0], *autodel = names[2], *quorum = names[3], *ttl = names[4],
               *bounded = names[5];

    int rc = 1;
    hd_error err;
    hd_amqp *a = NULL, *other = NULL, *pa = NULL;
    hd_publisher *pub = NULL;
    hd_queue_info info;
    char exclusive_name[HD_AMQP_NAME_MAX + 1] = "";

    if (hd_amqp_open(url, NULL, &a, &err) < 0 || hd_amqp_open(url, NULL, &other, &err) < 0 ||
        hd_amqp_open(url, NULL, &pa, &err) < 0 || hd_publisher_new(pa, NULL, &pub, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s (twice: a second connection plays another program)\n",
           hd_amqp_url_text(a));

    /* 2. Durable, declared three times: the same answer each time. */
    hd_queue_spec durable = {.name = orders, .durable = 1};
    for (int i = 0; i < 3; i++) {
        if (hd_queue_declare(a, &durable, &info, &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
    }
    printf("[2] durable queue declared 3 times: idempotent, %u messages\n", info.message_count);

    /* 3. Same name, other properties: refused, and the connection survives. */
    hd_queue_spec not_durable = {.name = orders, .durable = 0};
    int r = hd_queue_declare(a, &not_durable, NULL, &err);
    printf("[3] redeclare it as not durable: %s\n", hd_err_name(r));
    printf("    %s\n", broker_says(err.text));
    if (r != HD_EAMQP) {
        fprintf(stderr, "expected HD_EAMQP (PRECONDITION_FAILED), got %s\n", hd_err_name(r));
        goto cleanup;
    }
    if (hd_queue_declare(a, &durable, &info, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("    connection still usable: %s\n", hd_amqp_is_open(a) ? "yes" : "no");

    /* 4. Exclusive and server-named: only this connection may use it. */
    hd_queue_spec excl = {.name = NULL, .exclusive = 1};
    if (hd_queue_declare(a, &excl, &info, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    snprintf(exclusive_name, sizeof exclusive_name, "%s", info.name);
    printf("[4] exclusive queue, named by the broker: %.8s...\n", exclusive_name);
    r = hd_queue_purge(other, exclusive_name, NULL, &err);
    printf("    another connection purges it: %s\n    %s\n", hd_err_name(r), broker_says(err.text));
    if (r != HD_EAMQP) {
        fprintf(stderr, "expected HD_EAMQP (RESOURCE_LOCKED), got %s\n", hd_err_name(r));
        goto cleanup;
    }

    /* 5. Auto-delete: lives while it has consumers. basic.consume and basic.cancel are raw
     * librabbitmq calls here; chapter 08 wraps them. */
    hd_queue_spec ad = {.name = autodel, .auto_delete = 1};
    if (hd_queue_declare(a, &ad, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    amqp_connection_state_t c = hd_amqp_state(a);
    amqp_basic_consume_ok_t *ok =
        amqp_basic_consume(c, hd_amqp_channel(a), amqp_cstring_bytes(autodel), amqp_empty_bytes, 0,
                           1, 0, amqp_empty_table);
    if (hd_amqp_check_reply(a, amqp_get_rpc_reply(c), "basic.consume", &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    amqp_bytes_t tag = amqp_bytes_malloc_dup(ok->consumer_tag);
    printf("[5] auto-delete queue with a consumer: exists=%s\n",
           hd_queue_inspect(a, autodel, NULL, &err) == 0 ? "yes" : "no");
    amqp_basic_cancel(c, hd_amqp_channel(a), tag);
    amqp_bytes_free(tag);
    if (hd_amqp_check_reply(a, amqp_get_rpc_reply(c), "basic.cancel", &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    r = hd_queue_inspect(a, autodel, NULL, &err);
    printf("    after its last consumer cancelled: exists=%s (%s)\n", r == 0 ? "yes" : "no",
           hd_err_name(r));

    /* 6. Quorum: replicated, durable by necessity, with a delivery limit. */
    hd_queue_spec q = {.name = quorum, .durable = 1, .type = HD_QUEUE_QUORUM, .delivery_limit = 5};
    if (hd_queue_declare(a, &q, &info, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[6] quorum queue with x-delivery-limit=5 declared\n");
    hd_queue_spec q_as_classic = {.name = quorum, .durable = 1};
    r = hd_queue_declare(a, &q_as_classic, NULL, &err);
    printf("    declared again as classic: %s\n    %s\n", hd_err_name(r), broker_says(err.text));
    hd_queue_spec limit_on_classic = {.name = orders, .durable = 1, .delivery_limit = 5};
    r = hd_queue_declare(a, &limit_on_classic, NULL, &err);
    printf("    a delivery limit on a classic queue: %s: %s\n", hd_err_name(r), err.text);

    /* 7. Message TTL: messages older than 500 ms are dropped (or dead-lettered). */
    hd_queue_spec t = {.name = ttl, .message_ttl_ms = 500};
    if (hd_queue_declare(a, &t, NULL, &err) < 0 || fill(pub, ttl, 3, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    long before = count(a, ttl, &err);
    hd_sleep_ms(1000);
    long after = count(a, ttl, &err);
    printf("[7] x-message-ttl=500: %ld messages, 1000 ms later %ld\n", before, after);

    /* 8. Max length: the oldest messages are dropped to make room. */
    hd_queue_spec b = {.name = bounded, .max_length = 5};
    if (hd_queue_declare(a, &b, NULL, &err) < 0 || fill(pub, bounded, 8, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[8] x-max-length=5, 8 published: %ld messages kept\n", count(a, bounded, &err));
    rc = 0;

cleanup:
    if (a != NULL && hd_amqp_is_open(a)) {
        int bad = 0;
        const char *mine[] = {orders, quorum, ttl, bounded, autodel};
        for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
            bad |= hd_queue_delete(a, mine[i], NULL, &err) < 0;
        /* The exclusive queue goes away with its connection; deleting it says so anyway. */
        if (exclusive_name[0] != '\0')
            bad |= hd_queue_delete(a, exclusive_name, NULL, &err) < 0;
        if (bad) {
            fprintf(stderr, "cleanup: %s\n", err.text);
            rc = 1;
        } else if (rc == 0) {
            printf("[9] deleted every queue this chapter declared\n");
        }
    }
out:
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(other);
    hd_amqp_close(a);
    return rc;
}
