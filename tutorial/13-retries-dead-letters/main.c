/* Chapter 13 — retries with growing delays, and the dead-letter queue.
 *
 * A handler fails. Retrying at once (nack + requeue) hammers whatever is down and, for a
 * message that can never succeed, loops forever at full speed: a POISON MESSAGE that blocks
 * the queue. herald's consumer does two things instead:
 *
 *   retry later   the message is republished to a DELAY QUEUE (a tier) whose x-message-ttl is
 *                 the delay and whose dead-letter target is the work queue; when the TTL
 *                 expires the broker moves it back and records the move in its x-death
 *                 header. Tiers grow (here 200 ms, then 400 ms). The attempt number is read
 *                 from x-death: the broker counted it, the consumer cannot get it wrong.
 *   give up       after the last attempt — or at once for a REJECT or a body that does not
 *                 even decode — the message goes to the DEAD-LETTER QUEUE with the reason
 *                 (x-herald-reason) and the attempts (x-herald-attempts), for a person to
 *                 look at. The queue keeps flowing.
 *
 * Steps: declare the topology; publish a payment; a handler that always fails sees attempts
 * 1, 2, 3 with the tier delays between them; read the dead letter; then a consumer that
 * decodes CloudEvents gets a malformed message and a good one: the malformed one goes
 * straight to the DLQ, the good one is handled. docs/tutorial/13-retries-dead-letters.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/envelope.h"
#include "herald/publisher.h"
#include "herald/retry.h"
#include "herald/topology.h"

#include "tutorial.h"

/* What the failing handler remembers between attempts. */
typedef struct payments {
    int64_t last_ms;    /* when the previous attempt ran */
    int64_t last_delay; /* the tier it was sent to */
    const hd_retry_policy *policy;
    int good; /* step 9: well-formed events handled */
} payments;

static hd_consume_result charge_card(void *ctx, const hd_delivery *d)
{
    payments *p = ctx;
    int64_t now = hd_clock_ms();
    if (d->attempt == 1)
        printf("[%d] attempt 1 of \"%.*s\"", 3 + d->attempt, (int)d->body_len,
               (const char *)d->body);
    else
        printf("[%d] attempt %d, %lld ms later (tier %lld ms: %s)", 3 + d->attempt, d->attempt,
               (long long)(now - p->last_ms), (long long)p->last_delay,
               now - p->last_ms >= p->last_delay ? "waited it out" : "TOO EARLY");
    p->last_ms = now;
    hd_delivery_reason(d, "payment gateway timed out (attempt %d)", d->attempt);
    if (hd_retry_exhausted(p->policy, d->attempt)) {
        printf(" -> RETRY, but that was the last attempt: dead letter\n");
    } else {
        p->last_delay = hd_retry_delay_ms(p->policy, d->attempt);
        printf(" -> RETRY in %lld ms\n", (long long)p->last_delay);
    }
    return HD_CONSUME_RETRY;
}

static hd_consume_result handle_event(void *ctx, const hd_delivery *d)
{
    payments *p = ctx;
    /* Only decoded events get here: d->envelope is set when the consumer has a registry. */
    printf("[9] handled %s (id %s), attempt %d\n", hd_envelope_type(d->envelope),
           hd_envelope_id(d->envelope), d->attempt);
    p->good++;
    return HD_CONSUME_OK;
}

/* Print the string value of header key in t, or "-" */
static void print_header(const amqp_table_t *t, const char *key)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len != strlen(key) || memcmp(e->key.bytes, key, e->key.len) != 0)
            continue;
        if (e->value.kind == AMQP_FIELD_KIND_UTF8)
            printf("%s=\"%.*s\"", key, (int)e->value.value.bytes.len,
                   (const char *)e->value.value.bytes.bytes);
        else if (e->value.kind == AMQP_FIELD_KIND_I64)
            printf("%s=%lld", key, (long long)e->value.value.i64);
        return;
    }
    printf("%s=-", key);
}

/* Take one message from the dead-letter queue (basic.get, auto-ack) and print it. */
static int read_dead_letter(hd_amqp *a, const char *dlq, int step, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_rpc_reply_t r = amqp_basic_get(st, hd_amqp_channel(a), amqp_cstring_bytes(dlq), 1);
    if (hd_amqp_check_reply(a, r, "basic.get", err) < 0)
        return -1;
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return hd_error_set(err, HD_ENOTFOUND, "the dead-letter queue is empty");
    amqp_message_t msg;
    r = amqp_read_message(st, hd_amqp_channel(a), &msg, 0);
    if (hd_amqp_check_reply(a, r, "read message", err) < 0)
        return -1;
    const amqp_table_t *h = &msg.properties.headers;
    printf("[%d] dead letter \"%.*s\": ", step, (int)(msg.body.len > 40 ? 40 : msg.body.len),
           (const char *)msg.body.bytes);
    print_header(h, HD_HEADER_REASON);
    printf(" ");
    print_header(h, HD_HEADER_ATTEMPTS);
    /* The broker's own record of the delays, as retry.h reads it. */
    hd_xdeath deaths[8];
    size_t n = 0;
    hd_xdeath_parse(h, deaths, 8, &n);
    printf(" x-death:");
    if (n == 0)
        printf(" none");
    for (size_t i = 0; i < n; i++) {
        /* Print the tier's suffix (".retry.200ms") rather than the long queue name. */
        const char *tier = strstr(deaths[i].queue, ".retry.");
        printf(" %s %s x%lld%s", tier != NULL ? tier : deaths[i].queue, deaths[i].reason,
               (long long)deaths[i].count, i + 1 < n ? "," : "");
    }
    printf("\n");
    amqp_destroy_message(&msg);
    return 0;
}

/* Poll c until the queue named `queue` has `want` messages or the deadline passes. */
static int poll_until_depth(hd_consumer *c, hd_amqp *a, const char *queue, uint32_t want,
                            hd_error *err)
{
    int64_t deadline = hd_clock_ms() + 10000;
    for (;;) {
        hd_queue_info info;
        if (hd_queue_inspect(a, queue, &info, err) < 0)
            return -1;
        if (info.message_count >= want)
            return 0;
        if (hd_clock_ms() > deadline)
            return hd_error_set(err, HD_ETIMEOUT, "%s never reached %u messages", queue, want);
        if (hd_consumer_poll(c, 100, err) < 0)
            return -1;
    }
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    char queue[64], dlq[80];
    snprintf(queue, sizeof queue, "tutorial13-%d-payments", (int)getpid());
    hd_retry_dlq_name(dlq, sizeof dlq, queue);
    /* Short tiers so the chapter runs in a second; production uses seconds to minutes. */
    hd_retry_policy policy = {.max_attempts = 3, .ntiers = 2, .tier_ms = {200, 400}};

    int rc = 1;
    hd_error err;
    hd_amqp *admin = NULL;
    hd_publisher *pub = NULL;
    hd_consumer *c = NULL;
    hd_registry *reg = NULL;
    hd_envelope *env = NULL;
    char *json = NULL;
    payments p = {.policy = &policy};

    if (hd_amqp_open(url, NULL, &admin, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(admin));
    if (hd_consumer_declare(admin, queue, &policy, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    printf("[2] declared %s, exchange %s.retry, tiers %s.retry.200ms and .retry.400ms, "
           "dead letters %s\n",
           queue, queue, queue, dlq);

    if (hd_publisher_new(admin, NULL, &pub, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    hd_message m = {
        .routing_key = queue, .body = "charge card 4242", .len = 16, .message_id = "pay-1"};
    if (hd_publish_confirmed(pub, &m, 5000, &err) < 0) {
        fprintf(stderr, "publish: %s\n", err.text);
        goto cleanup;
    }
    printf("[3] published \"charge card 4242\"; the handler will fail every time\n");

    /* 4-6: the consumer retries through the tiers, then dead-letters. */
    hd_consumer_options o = {.queue = queue, .handler = charge_card, .ctx = &p, .retry = &policy};
    if (hd_consumer_open(url, &o, &c, &err) < 0 || poll_until_depth(c, admin, dlq, 1, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    if (read_dead_letter(admin, dlq, 7, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    hd_consumer_close(c);
    c = NULL;

    /* 8-10: a consumer that decodes CloudEvents. A malformed body can never succeed, so it
     * skips the retries; the good event behind it is not held up. */
    reg = hd_registry_new();
    if (reg == NULL || hd_registry_add(reg, "payments.charge_requested", 1, NULL, NULL) < 0) {
        fprintf(stderr, "registry: out of memory\n");
        goto cleanup;
    }
    env = hd_envelope_new("payments.charge_requested", 1, "/shop",
                          json_pack("{s:s}", "card", "4242"));
    if (env == NULL || hd_envelope_encode(env, &json, NULL, &err) < 0) {
        fprintf(stderr, "envelope: %s\n", env ? err.text : "out of memory");
        goto cleanup;
    }
    hd_message bad = {.routing_key = queue,
                      .body = "{\"specversion\": oops",
                      .len = 20,
                      .message_id = "broken-1"};
    hd_message good = {.routing_key = queue,
                       .body = json,
                       .len = strlen(json),
                       .message_id = hd_envelope_id(env),
                       .content_type = HD_CLOUDEVENTS_MEDIA_TYPE};
    if (hd_publish_confirmed(pub, &bad, 5000, &err) < 0 ||
        hd_publish_confirmed(pub, &good, 5000, &err) < 0) {
        fprintf(stderr, "publish: %s\n", err.text);
        goto cleanup;
    }
    printf("[8] published a malformed message, then a good CloudEvent behind it\n");
    hd_consumer_options o2 = {
        .queue = queue, .handler = handle_event, .ctx = &p, .retry = &policy, .registry = reg};
    if (hd_consumer_open(url, &o2, &c, &err) < 0 || poll_until_depth(c, admin, dlq, 1, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    for (int i = 0; i < 20 && p.good == 0; i++) /* the good one is right behind */
        if (hd_consumer_poll(c, 100, &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
    if (p.good != 1 || read_dead_letter(admin, dlq, 10, &err) < 0) {
        fprintf(stderr, "%s\n", p.good != 1 ? "the good event was not handled" : err.text);
        goto cleanup;
    }
    rc = 0;

cleanup:
    hd_consumer_close(c);
    c = NULL;
    if (admin != NULL && hd_consumer_undeclare(admin, queue, &policy, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err.text);
        rc = 1;
    } else if (rc == 0) {
        printf("[11] deleted the work queue, the retry exchange, the tiers and the DLQ\n");
    }
out:
    free(json);
    hd_envelope_free(env);
    hd_registry_free(reg);
    hd_publisher_free(pub);
    hd_amqp_close(admin);
    return rc;
}
