/* Chapter 07 — producers: persistence and publisher confirms.
 *
 * A producer that must not lose messages needs three things:
 *
 *   a durable queue         so the queue itself survives a broker restart
 *   persistent messages     delivery_mode 2: the broker writes them to disk
 *   publisher confirms      the broker says "I have it" (basic.ack) for every message, and
 *                           only then may the producer forget it (mark the outbox row, ack
 *                           the request...)
 *
 * Waiting for each confirm before sending the next message is correct but slow: every
 * message costs a network round trip and a disk flush. Keeping a WINDOW of messages in
 * flight lets the broker flush many at once. Same guarantee, several times the rate.
 *
 * And a fourth: publish "mandatory", so that a message no queue wants comes back
 * (basic.return) instead of vanishing. The broker ACKS such a message as well — an ack
 * means "handled", not "stored" — so a producer that only counts acks believes it was
 * delivered. herald's publisher matches the return to its message and reports RETURNED.
 *
 * Steps: declare a durable queue; publish 2000 persistent messages one at a time, then 2000
 * with a window of 500; print both rates and the speed-up; count the queue; publish one
 * message with a routing key no queue is bound to. docs/tutorial/07-producers.md explains
 * the why.
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

#define N        2000
#define WINDOW   500
#define BODY_LEN 200

/* Fates, counted by the callback the publisher calls once per message. */
typedef struct tally {
    int confirmed, nacked, returned, lost;
    char last_reason[128];
} tally;

static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)user;
    tally *t = ctx;
    switch (fate) {
    case HD_FATE_CONFIRMED:
        t->confirmed++;
        break;
    case HD_FATE_NACKED:
        t->nacked++;
        break;
    case HD_FATE_RETURNED:
        t->returned++;
        break;
    case HD_FATE_LOST:
        t->lost++;
        break;
    }
    if (reason != NULL)
        snprintf(t->last_reason, sizeof t->last_reason, "%s", reason);
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    char queue[64];
    snprintf(queue, sizeof queue, "tutorial07-%d-jobs", (int)getpid());
    char body[BODY_LEN];
    memset(body, 'j', sizeof body);

    int rc = 1;
    hd_error err;
    hd_amqp *a = NULL, *pa = NULL;
    hd_publisher *one = NULL, *windowed = NULL;
    tally t1 = {0}, t2 = {0};

    if (hd_amqp_open(url, NULL, &a, &err) < 0 || hd_amqp_open(url, NULL, &pa, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        goto out;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(a));

    hd_queue_spec q = {.name = queue, .durable = 1};
    if (hd_queue_declare(a, &q, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    printf("[2] durable classic queue declared\n");

    /* 3. One at a time: publish, wait for its confirm, next. */
    hd_publisher_options po1 = {.window = 1, .on_fate = on_fate, .ctx = &t1};
    if (hd_publisher_new(pa, &po1, &one, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    int64_t t0 = hd_clock_ns();
    for (int i = 0; i < N; i++) {
        hd_message m = {.routing_key = queue, .body = body, .len = sizeof body};
        if (hd_publish_confirmed(one, &m, 5000, &err) < 0) {
            fprintf(stderr, "message %d: %s\n", i, err.text);
            goto cleanup;
        }
    }
    double s1 = (double)(hd_clock_ns() - t0) / 1e9;
    double rate1 = N / s1;
    printf("[3] one at a time: %d persistent messages, %d confirmed in %.2f s: %.0f msg/s\n", N,
           t1.confirmed, s1, rate1);
    hd_publisher_free(one);
    one = NULL;

    /* 4. Windowed: up to WINDOW unconfirmed messages in flight; publish blocks only when the
     * window is full, and the fates arrive through on_fate meanwhile. */
    hd_publisher_options po2 = {.window = WINDOW, .on_fate = on_fate, .ctx = &t2};
    if (hd_publisher_new(pa, &po2, &windowed, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    t0 = hd_clock_ns();
    for (int i = 0; i < N; i++) {
        hd_message m = {.routing_key = queue, .body = body, .len = sizeof body};
        if (hd_publisher_publish(windowed, &m, NULL, &err) < 0) {
            fprintf(stderr, "message %d: %s\n", i, err.text);
            goto cleanup;
        }
    }
    if (hd_publisher_wait(windowed, 10000, &err) < 0) { /* the last window's confirms */
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    double s2 = (double)(hd_clock_ns() - t0) / 1e9;
    double rate2 = N / s2;
    printf("[4] window of %d: %d persistent messages, %d confirmed in %.2f s: %.0f msg/s\n", WINDOW,
           N, t2.confirmed, s2, rate2);
    printf("[5] speed-up: %.1fx, with the same guarantee for every message\n", rate2 / rate1);

    hd_queue_info info;
    if (hd_queue_inspect(a, queue, &info, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[6] the queue holds %u messages (confirmed: %d)\n", info.message_count,
           t1.confirmed + t2.confirmed);

    /* 7. A routing key no queue is bound to. Mandatory (herald's default) makes the broker
     * return it; the ack that follows the return does not make it "confirmed". */
    int confirmed_before = t2.confirmed;
    hd_message lost = {.routing_key = "no-queue-has-this-name", .body = "?", .len = 1};
    int r = hd_publish_confirmed(windowed, &lost, 5000, &err);
    printf("[7] unroutable message: %s, fate %s (%s); confirmed count unchanged: %s\n",
           hd_err_name(r), t2.returned == 1 ? "RETURNED" : "?", t2.last_reason,
           t2.confirmed == confirmed_before ? "yes" : "no");
    if (r != HD_ERETURNED) {
        fprintf(stderr, "expected HD_ERETURNED, got %s%s%s\n", hd_err_name(r), r < 0 ? ": " : "",
                r < 0 ? err.text : "");
        goto cleanup;
    }
    rc = 0;

cleanup:
    if (a != NULL && hd_amqp_is_open(a)) {
        uint32_t deleted = 0;
        if (hd_queue_delete(a, queue, &deleted, &err) < 0) {
            fprintf(stderr, "cleanup: %s\n", err.text);
            rc = 1;
        } else if (rc == 0) {
            printf("[8] deleted the queue and its %u messages\n", deleted);
        }
    }
out:
    hd_publisher_free(one);
    hd_publisher_free(windowed);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    return rc;
}
