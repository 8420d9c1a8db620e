/* Chapter 09 — fair dispatch with prefetch.
 *
 * Two workers share one queue; one of them is slow (a big photo, a slow disk, a busy CPU).
 * How the broker shares the messages between them depends on the PREFETCH (basic.qos): the
 * number of delivered-but-unacknowledged messages a consumer may hold.
 *
 *   no limit    the broker pushes every ready message out at once, round-robin: each worker
 *               gets half, and the fast one idles while the slow one works through its pile
 *   prefetch 1  a worker gets its next message only after acking the last: the slow one
 *               holds one message at a time, the fast one takes everything else
 *
 * Steps: twice — with no prefetch limit, then with prefetch 1 — declare a queue, start two
 * consumers (each on its own thread and connections), publish 20 messages, let the workers
 * run, print how many each handled and how long the whole took. docs/tutorial/
 * 09-fair-dispatch.md explains the why.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/publisher.h"

#include "tutorial.h"

#define MESSAGES 20

static atomic_int done; /* messages handled by both workers together */

typedef struct worker {
    const char *name;
    int work_ms; /* how long one message takes */
    int handled;
    hd_consumer *c;
    int rc;
    hd_error err;
} worker;

static hd_consume_result work(void *ctx, const hd_delivery *d)
{
    (void)d;
    worker *w = ctx;
    hd_sleep_ms(w->work_ms); /* the work */
    w->handled++;
    atomic_fetch_add(&done, 1);
    return HD_CONSUME_OK; /* the consumer acks now, and the broker may send the next */
}

/* One thread per worker: librabbitmq connections are not shared between threads. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    int64_t give_up = hd_clock_ms() + 20000;
    while (atomic_load(&done) < MESSAGES && hd_clock_ms() < give_up) {
        w->rc = hd_consumer_poll(w->c, 50, &w->err);
        if (w->rc < 0)
            break;
    }
    return NULL;
}

/* One round: a fresh queue, two consumers with the given prefetch, 20 messages. Prints
 * step `step` and returns 0, or 1 after printing what failed. */
static int round_with(const char *url, hd_amqp *admin, int prefetch, const char *label, int step)
{
    char queue[64];
    snprintf(queue, sizeof queue, "tutorial09-%d-p%d", (int)getpid(), prefetch);
    worker slow = {.name = "slow", .work_ms = 250}, fast = {.name = "fast", .work_ms = 10};
    worker *ws[2] = {&slow, &fast};
    hd_publisher *pub = NULL;
    hd_error err;
    int rc = 1;

    if (hd_consumer_declare(admin, queue, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        return 1;
    }
    /* Both consumers subscribe BEFORE the messages arrive, so the broker deals to both. */
    for (int i = 0; i < 2; i++) {
        hd_consumer_options o = {
            .queue = queue, .handler = work, .ctx = ws[i], .prefetch = prefetch};
        if (hd_consumer_open(url, &o, &ws[i]->c, &err) < 0) {
            fprintf(stderr, "consumer %s: %s\n", ws[i]->name, err.text);
            goto out;
        }
    }
    if (hd_publisher_new(admin, NULL, &pub, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    for (int i = 0; i < MESSAGES; i++) {
        char body[16];
        int len = snprintf(body, sizeof body, "job %d", i + 1);
        hd_message m = {.routing_key = queue, .body = body, .len = (size_t)len};
        if (hd_publisher_publish(pub, &m, NULL, &err) < 0) {
            fprintf(stderr, "publish: %s\n", err.text);
            goto out;
        }
    }
    if (hd_publisher_wait(pub, 5000, &err) < 0) {
        fprintf(stderr, "confirms: %s\n", err.text);
        goto out;
    }

    atomic_store(&done, 0);
    int64_t t0 = hd_clock_ms();
    pthread_t threads[2];
    int started = 0;
    for (; started < 2; started++)
        if (pthread_create(&threads[started], NULL, worker_main, ws[started]) != 0) {
            fprintf(stderr, "cannot start a thread\n");
            atomic_store(&done, MESSAGES); /* tells a started worker to stop */
            break;
        }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (started < 2)
        goto out;
    double secs = (double)(hd_clock_ms() - t0) / 1000.0;
    for (int i = 0; i < 2; i++)
        if (ws[i]->rc < 0) {
            fprintf(stderr, "worker %s: %s\n", ws[i]->name, ws[i]->err.text);
            goto out;
        }
    printf("[%d] %-17s slow worker %2d, fast worker %2d -- all %d done in %.2f s\n", step, label,
           slow.handled, fast.handled, MESSAGES, secs);
    rc = slow.handled + fast.handled == MESSAGES ? 0 : 1;

out:
    hd_publisher_free(pub);
    for (int i = 0; i < 2; i++)
        hd_consumer_close(ws[i]->c);
    if (hd_consumer_undeclare(admin, queue, NULL, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err.text);
        rc = 1;
    }
    return rc;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    hd_error err;
    hd_amqp *admin = NULL;
    if (hd_amqp_open(url, NULL, &admin, &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.text);
        return 1;
    }
    printf("[1] connected to %s\n", hd_amqp_url_text(admin));
    printf("[2] two workers, %d messages: the slow one needs 250 ms a message, the fast one "
           "10 ms\n",
           MESSAGES);
    int rc = round_with(url, admin, HD_PREFETCH_UNLIMITED, "no prefetch limit:", 3);
    if (rc == 0)
        rc = round_with(url, admin, 1, "prefetch 1:", 4);
    if (rc == 0)
        printf("[5] queues deleted\n");
    hd_amqp_close(admin);
    return rc;
}
