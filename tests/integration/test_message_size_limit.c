/* integration.message_size_limit — the broker bounds what a consumer can be handed.
 *
 * scripts/servers.sh writes `max_message_size = 1048576` (1 MiB) into the RabbitMQ it
 * starts: a publish with a bigger body is refused by the broker itself, which closes the
 * publisher's channel with 406 PRECONDITION_FAILED, so no consumer ever receives it. That
 * is what makes "prefetch x max_message_size" a real bound on the memory a consumer holds
 * (docs/modules/consumer.md; herald-notifications checks HD_PREFETCH against its budget).
 *
 * Shown here with herald's publisher (confirms): a body of exactly the limit is confirmed and
 * consumed; one byte more fails with HD_EAMQP and the broker's reason; the channel comes back
 * for the next publish; the queue only ever held the message that fit. HD_AMQP_URL is
 * required (a missing server FAILS the test, never skips). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/publisher.h"
#include "herald/topology.h"

/* scripts/servers.sh: RMQ_MAX_MESSAGE_SIZE, written as rabbitmq.conf's max_message_size. */
#define MAX_MESSAGE_SIZE 1048576

static int publish_size(hd_publisher *pub, const char *queue, char *body, size_t len, hd_error *err)
{
    hd_message m = {.exchange = "", .routing_key = queue, .body = body, .len = len};
    return hd_publish_confirmed(pub, &m, 10000, err);
}

static void a_message_over_the_limit_is_refused_by_the_broker(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    char *queue = hd_test_unique_name("size-limit");
    hd_amqp *a = NULL;
    hd_publisher *pub = NULL;
    hd_error err;
    assert_hd_err(0, hd_amqp_open(url, NULL, &a, &err), &err);
    hd_queue_spec q = {.name = queue, .durable = 0, .auto_delete = 0};
    assert_hd_err(0, hd_queue_declare(a, &q, NULL, &err), &err);
    assert_hd_err(0, hd_publisher_new(a, NULL, &pub, &err), &err);

    char *body = malloc(MAX_MESSAGE_SIZE + 1);
    assert_non_null(body);
    memset(body, 'x', MAX_MESSAGE_SIZE + 1);
    /* At the limit: accepted. */
    assert_hd_err(0, publish_size(pub, queue, body, MAX_MESSAGE_SIZE, &err), &err);
    /* One byte over: the broker closes the channel, the publisher says why. */
    int rc = publish_size(pub, queue, body, MAX_MESSAGE_SIZE + 1, &err);
    if (rc != HD_EAMQP)
        fail_msg("a %d-byte message: expected HD_EAMQP (406 from the broker), got %s: %s",
                 MAX_MESSAGE_SIZE + 1, hd_strerror(rc), rc < 0 ? err.text : "confirmed");
    fprintf(stderr, "# refused: %s\n", err.text);
    assert_non_null(strstr(err.text, "406"));
    /* The next publish reopens the channel: one refused message does not stop a publisher. */
    assert_hd_err(0, publish_size(pub, queue, body, 16, &err), &err);

    /* Only what fit ever reached the queue. */
    hd_queue_info info;
    assert_hd_err(0, hd_queue_inspect(a, queue, &info, &err), &err);
    assert_int_equal(info.message_count, 2);

    free(body);
    hd_publisher_free(pub);
    hd_queue_delete(a, queue, NULL, &err);
    hd_amqp_close(a);
    free(queue);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_message_over_the_limit_is_refused_by_the_broker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
