/* Chapter 08 — consumers and manual acknowledgement.
 *
 * A consumer that acknowledges a message on RECEIPT (auto-ack, no_ack = 1) loses it when it
 * crashes halfway through the work: the broker deleted it the moment it went out. A consumer
 * that acknowledges MANUALLY, after the work is done, loses nothing: a message delivered and
 * not acked stays with the broker, and when the consumer's channel or connection closes the
 * broker puts it back in the queue and delivers it again — flagged redelivered = 1, so the
 * next consumer knows it may be a second attempt at something half done.
 *
 * Steps: declare a durable queue and publish one message; consume it with raw librabbitmq
 * and manual ack, and close the connection WITHOUT acking (a consumer that died); see the
 * queue give it back; consume it with herald's consumer, whose handler returns OK so the
 * consumer acks it; see the queue empty for good. docs/tutorial/08-consumers.md explains.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/publisher.h"
#include "herald/topology.h"

#include "tutorial.h"

/* Messages ready for delivery, as the broker counts them (a passive declare). A message a
 * consumer holds unacked is not "ready": it is out, waiting for its ack. */
static long ready(hd_amqp *a, const char *queue, hd_error *err)
{
    hd_queue_info info;
    if (hd_queue_inspect(a, queue, &info, err) < 0)
        return -1;
    return (long)info.message_count;
}

/* herald's consumer calls this for each delivery; returning OK makes it ack. */
static hd_consume_result handle(void *ctx, const hd_delivery *d)
{
    int *handled = ctx;
    printf("[6] herald consumer got \"%.*s\" (message id %s): redelivered=%d, attempt %d -> "
           "OK, acked\n",
           (int)d->body_len, (const char *)d->body, d->message_id ? d->message_id : "-",
           d->redelivered, d->attempt);
    (*handled)++;
    return HD_CONSUME_OK;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    char queue[64];
    snprintf(queue, sizeof queue, "tutorial08-%d-tasks", (int)getpid());

    int rc = 1;
    hd_error err;
    hd_amqp *admin = NULL, *raw = NULL;
    hd_publisher *pub = NULL;
    hd_consumer *consumer = NULL;

    if (hd_amqp_open(url, NULL, &admin, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(admin));

    /* The work queue, plus the retry tiers and dead-letter queue herald's consumer uses
     * (chapter 13); declaring them all at once keeps the clean-up to one call. */
    if (hd_consumer_declare(admin, queue, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    if (hd_publisher_new(admin, NULL, &pub, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    hd_message m = {
        .routing_key = queue, .body = "resize photo 42", .len = 15, .message_id = "task-42"};
    if (hd_publish_confirmed(pub, &m, 5000, &err) < 0) {
        fprintf(stderr, "publish: %s\n", err.text);
        goto cleanup;
    }
    printf("[2] queue declared; one persistent message published and confirmed\n");

    /* 3. A consumer with manual ack, in plain librabbitmq: no_ack = 0 is the promise "I will
     * ack each message when I am done with it". */
    if (hd_amqp_open(url, NULL, &raw, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto cleanup;
    }
    amqp_connection_state_t st = hd_amqp_state(raw);
    amqp_basic_consume(st, hd_amqp_channel(raw), amqp_cstring_bytes(queue), amqp_empty_bytes,
                       0 /* no_local */, 0 /* no_ack: manual acks */, 0 /* exclusive */,
                       amqp_empty_table);
    if (hd_amqp_check_reply(raw, amqp_get_rpc_reply(st), "basic.consume", &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    amqp_envelope_t env;
    struct timeval five_s = {5, 0};
    amqp_rpc_reply_t r = amqp_consume_message(st, &env, &five_s, 0);
    if (hd_amqp_check_reply(raw, r, "consume", &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[3] raw consumer got \"%.*s\": redelivered=%d, delivery tag %llu -- and does NOT "
           "ack it\n",
           (int)env.message.body.len, (const char *)env.message.body.bytes, env.redelivered,
           (unsigned long long)env.delivery_tag);
    amqp_destroy_envelope(&env);
    long n = ready(admin, queue, &err);
    if (n < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[4] while it is held unacked the queue has %ld ready messages\n", n);

    /* 5. The consumer "dies": its connection closes with the message unacked. */
    hd_amqp_close(raw);
    raw = NULL;
    /* The broker requeues it when it processes the close: give it a moment. */
    for (int i = 0; i < 50 && (n = ready(admin, queue, &err)) == 0; i++)
        hd_sleep_ms(20);
    if (n < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[5] connection closed without an ack: the queue has %ld ready message again\n", n);

    /* 6. herald's consumer: prefetch, manual ack after the handler says OK. */
    int handled = 0;
    hd_consumer_options o = {.queue = queue, .handler = handle, .ctx = &handled};
    if (hd_consumer_open(url, &o, &consumer, &err) < 0) {
        fprintf(stderr, "consumer: %s\n", err.text);
        goto cleanup;
    }
    int64_t deadline = hd_clock_ms() + 5000;
    while (handled == 0 && hd_clock_ms() < deadline) {
        if (hd_consumer_poll(consumer, 200, &err) < 0) {
            fprintf(stderr, "poll: %s\n", err.text);
            goto cleanup;
        }
    }
    if (handled == 0) {
        fprintf(stderr, "the message did not come back\n");
        goto cleanup;
    }
    hd_consumer_close(consumer);
    consumer = NULL;
    hd_sleep_ms(100);
    if ((n = ready(admin, queue, &err)) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[7] acked, then the consumer closed: the queue has %ld ready messages\n", n);
    rc = n == 0 ? 0 : 1;

cleanup:
    hd_consumer_close(consumer);
    hd_amqp_close(raw);
    hd_publisher_free(pub);
    pub = NULL;
    if (admin != NULL && hd_consumer_undeclare(admin, queue, NULL, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err.text);
        rc = 1;
    } else if (rc == 0) {
        printf("[8] deleted the queue\n");
    }
out:
    hd_publisher_free(pub);
    hd_amqp_close(admin);
    return rc;
}
