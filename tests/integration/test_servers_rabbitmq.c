/* Integration: the RabbitMQ that scripts/servers.sh starts answers on HD_AMQP_URL, and
 * `$HD_SERVERS_CTL restart rabbitmq` brings it back with its durable queues.
 *
 * This proves the harness, not herald: it talks to the broker with librabbitmq-c directly.
 * Without HD_AMQP_URL the test fails (a missing server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "hd_test.h"

/* Fail with the broker's or the library's explanation unless `r` is a normal reply. */
#define assert_rpc_ok(r, what) assert_rpc_ok_at((r), (what), __FILE__, __LINE__)

static void assert_rpc_ok_at(amqp_rpc_reply_t r, const char *what, const char *file, int line)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_NONE:
        print_error("%s:%d: %s: no reply (missing RPC reply type)\n", file, line, what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        print_error("%s:%d: %s: library error: %s\n", file, line, what,
                    amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r.reply.decoded;
            print_error("%s:%d: %s: connection closed by the broker: %u %.*s\n", file, line, what,
                        m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r.reply.decoded;
            print_error("%s:%d: %s: channel closed by the broker: %u %.*s\n", file, line, what,
                        m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            print_error("%s:%d: %s: unexpected server method 0x%08x\n", file, line, what,
                        r.reply.id);
        }
        break;
    }
    _fail(file, line);
}

static void assert_status_ok_at(int status, const char *what, const char *file, int line)
{
    if (status == AMQP_STATUS_OK)
        return;
    print_error("%s:%d: %s: %s\n", file, line, what, amqp_error_string2(status));
    _fail(file, line);
}
#define assert_status_ok(s, what) assert_status_ok_at((s), (what), __FILE__, __LINE__)

static amqp_connection_state_t broker_connect(void)
{
    const char *url = hd_test_require_env("HD_AMQP_URL");
    /* amqp_parse_url cuts its argument up in place and points into it. */
    char *copy = strdup(url);
    assert_non_null(copy);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
        fail_msg("HD_AMQP_URL '%s' is not an amqp:// URL", url);
    /* "amqp://host:port/" reads as vhost "" by the AMQP URI spec; it means the default "/". */
    const char *vhost = ci.vhost[0] != '\0' ? ci.vhost : "/";

    amqp_connection_state_t conn = amqp_new_connection();
    assert_non_null(conn);
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    assert_non_null(sock);
    struct timeval timeout = {.tv_sec = 5};
    int status = amqp_socket_open_noblock(sock, ci.host, ci.port, &timeout);
    if (status != AMQP_STATUS_OK)
        fail_msg("cannot connect to %s:%d (HD_AMQP_URL %s): %s", ci.host, ci.port, url,
                 amqp_error_string2(status));
    assert_rpc_ok(
        amqp_login(conn, vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
        "login");
    free(copy);
    amqp_channel_open(conn, 1);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "channel.open");
    return conn;
}

static void broker_close(amqp_connection_state_t conn)
{
    assert_rpc_ok(amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS), "channel.close");
    assert_rpc_ok(amqp_connection_close(conn, AMQP_REPLY_SUCCESS), "connection.close");
    assert_status_ok(amqp_destroy_connection(conn), "destroy connection");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* basic.get one message from `queue` (retrying briefly while it is empty) and compare it
 * with `body` and `content_type`. */
static void get_and_compare(amqp_connection_state_t conn, const char *queue, const char *body,
                            const char *content_type)
{
    amqp_rpc_reply_t r;
    for (int attempt = 0;; attempt++) {
        r = amqp_basic_get(conn, 1, amqp_cstring_bytes(queue), /*no_ack*/ 1);
        assert_rpc_ok(r, "basic.get");
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD)
            break;
        assert_int_equal(r.reply.id, AMQP_BASIC_GET_EMPTY_METHOD);
        if (attempt == 50)
            fail_msg("queue %s is still empty after 5 s", queue);
        sleep_ms(100);
    }
    amqp_message_t msg;
    assert_rpc_ok(amqp_read_message(conn, 1, &msg, 0), "read message");
    assert_int_equal(msg.body.len, strlen(body));
    assert_memory_equal(msg.body.bytes, body, strlen(body));
    assert_true(msg.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    assert_int_equal(msg.properties.content_type.len, strlen(content_type));
    assert_memory_equal(msg.properties.content_type.bytes, content_type, strlen(content_type));
    amqp_destroy_message(&msg);
}

static void publish_get_round_trip(void **state)
{
    (void)state;
    amqp_connection_state_t conn = broker_connect();
    char *queue = hd_test_unique_name("hd-servers-rabbitmq");

    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), /*passive*/ 0, /*durable*/ 0,
                           /*exclusive*/ 1, /*auto_delete*/ 0, amqp_empty_table);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "queue.declare");
    assert_non_null(ok);
    assert_int_equal(ok->queue.len, strlen(queue));
    assert_memory_equal(ok->queue.bytes, queue, strlen(queue));
    assert_int_equal(ok->message_count, 0);

    char body[256];
    snprintf(body, sizeof body, "round trip through %s", queue);
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
        .content_type = amqp_cstring_bytes("text/plain"),
        .delivery_mode = AMQP_DELIVERY_NONPERSISTENT,
    };
    /* The default exchange ("") routes by queue name. */
    assert_status_ok(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue),
                                        /*mandatory*/ 0, /*immediate*/ 0, &props,
                                        amqp_cstring_bytes(body)),
                     "basic.publish");
    get_and_compare(conn, queue, body, "text/plain");

    amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "queue.delete");
    broker_close(conn);
    free(queue);
}

/* The restart tests of later chapters rely on this: same data directory, same node name, so
 * a durable queue and its persistent message are still there after the broker restarts. */
static void durable_queue_survives_restart(void **state)
{
    (void)state;
    const char *ctl = hd_test_require_env("HD_SERVERS_CTL");
    amqp_connection_state_t conn = broker_connect();
    char *queue = hd_test_unique_name("hd-servers-durable");

    amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, /*durable*/ 1, 0, 0,
                       amqp_empty_table);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "queue.declare durable");
    amqp_confirm_select(conn, 1);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "confirm.select");

    char body[256];
    snprintf(body, sizeof body, "persistent message in %s", queue);
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
        .content_type = amqp_cstring_bytes("application/octet-stream"),
        .delivery_mode = AMQP_DELIVERY_PERSISTENT,
    };
    assert_status_ok(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0,
                                        &props, amqp_cstring_bytes(body)),
                     "basic.publish persistent");
    /* The broker acks a persistent message once it is on disk. */
    amqp_frame_t frame;
    struct timeval timeout = {.tv_sec = 10};
    assert_status_ok(amqp_simple_wait_frame_noblock(conn, &frame, &timeout), "wait for confirm");
    assert_int_equal(frame.frame_type, AMQP_FRAME_METHOD);
    assert_int_equal(frame.payload.method.id, AMQP_BASIC_ACK_METHOD);
    broker_close(conn);

    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' restart rabbitmq", ctl);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("`%s` failed (status %d)", cmd, rc);

    conn = broker_connect();
    get_and_compare(conn, queue, body, "application/octet-stream");
    amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
    assert_rpc_ok(amqp_get_rpc_reply(conn), "queue.delete");
    broker_close(conn);
    free(queue);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(publish_get_round_trip),
        cmocka_unit_test(durable_queue_survives_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
