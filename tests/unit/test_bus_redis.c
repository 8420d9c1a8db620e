/* Unit tests for herald/bus_redis.h without a server: the URL (parsing, refusals that never
 * show the password, redaction), channel names, the RabbitMQ-style type wildcards, the frame
 * that carries a message's id, correlation id and content type on a channel, and the bus's
 * lifecycle up to the point where it would connect. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/bus_redis.h"

static void full_url_is_taken_apart(void **state)
{
    (void)state;
    hd_bus_redis_url u;
    hd_error err;
    assert_hd_err(0, hd_bus_redis_url_parse("redis://alice:s3cret@cache.example:6380/2", &u, &err),
                  &err);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "cache.example");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);

    /* requirepass: a password and no user, what servers.sh writes */
    assert_hd_err(0, hd_bus_redis_url_parse("redis://:0123abcd@127.0.0.1:7550", &u, &err), &err);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "0123abcd");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 7550);
    assert_int_equal(u.db, 0);
}

static void defaults_and_forms(void **state)
{
    (void)state;
    hd_bus_redis_url u;
    assert_hd(0, hd_bus_redis_url_parse("redis://localhost", &u, NULL));
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_string_equal(u.password, "");
    assert_hd(0, hd_bus_redis_url_parse("redis://localhost/", &u, NULL));
    assert_int_equal(u.port, 6379);
    assert_hd(0, hd_bus_redis_url_parse("redis://[::1]:6390/0", &u, NULL));
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    /* percent escapes in the userinfo: '@', ':' and '/' in a password */
    assert_hd(0, hd_bus_redis_url_parse("redis://bob:p%40ss%3Aw%2Frd@h:1", &u, NULL));
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "p@ss:w/rd");
    /* a raw '@' in the password: the last '@' before the path ends the userinfo */
    assert_hd(0, hd_bus_redis_url_parse("redis://:a@b@h", &u, NULL));
    assert_string_equal(u.password, "a@b");
    assert_string_equal(u.host, "h");
}

static void bad_urls_are_refused_without_their_password(void **state)
{
    (void)state;
    static const char *bad[] = {
        NULL,
        "",
        "http://h",
        "rediss://:Secret-777@h", /* TLS: not in hiredis 0.14 */
        "redis://",
        "redis://:Secret-777@",
        "redis://:Secret-777@h:0",
        "redis://:Secret-777@h:65536",
        "redis://:Secret-777@h:12ab",
        "redis://:Secret-777@h:",
        "redis://:Secret-777@h/db",
        "redis://:Secret-777@h/1?x=y",
        "redis://:Secret-777%4@h",
        "redis://:Secret-777%zz@h",
        "redis://:Secret-777%00@h",
        "redis://alice@h", /* a user without a password */
        "redis://:Secret-777@[::1",
        "redis://:Secret-777@[::1]x",
        "redis://:Secret-777@h st",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_bus_redis_url u;
        memset(&u, 0x5a, sizeof u);
        hd_error err = {0};
        int rc = hd_bus_redis_url_parse(bad[i], &u, &err);
        if (rc != HD_EURL)
            fail_msg("'%s' gave %s, not HD_EURL", bad[i] ? bad[i] : "(null)", hd_err_name(rc));
        assert_null(strstr(err.text, "Secret"));
        static const hd_bus_redis_url zero;
        assert_memory_equal(&u, &zero, sizeof u);
    }
    char long_pw[400] = "redis://:";
    memset(long_pw + 9, 'p', 300);
    strcpy(long_pw + 309, "@h");
    assert_hd(HD_EURL, hd_bus_redis_url_parse(long_pw, &(hd_bus_redis_url){0}, NULL));
}

static void redaction_hides_the_password(void **state)
{
    (void)state;
    char out[200];
    hd_bus_redis_url_redact("redis://:Secret-777@127.0.0.1:7550", out, sizeof out);
    assert_string_equal(out, "redis://:***@127.0.0.1:7550");
    hd_bus_redis_url_redact("redis://alice:Secret-777@h/3", out, sizeof out);
    assert_string_equal(out, "redis://alice:***@h/3");
    hd_bus_redis_url_redact("redis://h:6379", out, sizeof out);
    assert_string_equal(out, "redis://h:6379");
    /* a raw '/' in a password (should have been %2F): everything after the host hidden */
    hd_bus_redis_url_redact("redis://:Sec/ret-777@h", out, sizeof out);
    assert_null(strstr(out, "ret-777"));
    hd_bus_redis_url_redact("nonsense", out, sizeof out);
    assert_string_equal(out, "(not a URL)");
    char tiny[8];
    hd_bus_redis_url_redact("redis://:Secret-777@h", tiny, sizeof tiny);
    assert_string_equal(tiny, "redis:/");
}

static void channel_is_topic_colon_type(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(hd_bus_redis_channel("chat", "chat.message_posted", out, sizeof out), 24);
    assert_string_equal(out, "chat:chat.message_posted");
    assert_int_equal(hd_bus_redis_channel("chat", "", out, sizeof out), HD_EINVAL);
    assert_int_equal(hd_bus_redis_channel(NULL, "t", out, sizeof out), HD_EINVAL);
    assert_int_equal(hd_bus_redis_channel("chat", "chat.message_posted", out, 24), HD_ETOOBIG);
}

static void wildcards_match_as_on_rabbitmq(void **state)
{
    (void)state;
    assert_true(hd_bus_redis_type_matches("chat.message_posted", "chat.message_posted"));
    assert_false(hd_bus_redis_type_matches("chat.message_posted", "chat.message_posted.v2"));
    assert_true(hd_bus_redis_type_matches("chat.*", "chat.message_posted"));
    assert_false(hd_bus_redis_type_matches("chat.*", "chat"));
    assert_false(hd_bus_redis_type_matches("chat.*", "chat.a.b"));
    assert_true(hd_bus_redis_type_matches("chat.#", "chat"));
    assert_true(hd_bus_redis_type_matches("chat.#", "chat.a.b"));
    assert_true(hd_bus_redis_type_matches("#", "anything.at.all"));
    assert_true(hd_bus_redis_type_matches("*.room_opened", "chat.room_opened"));
    assert_true(hd_bus_redis_type_matches("#.opened", "a.b.opened"));
    assert_false(hd_bus_redis_type_matches("#.opened", "a.b.closed"));
    assert_false(hd_bus_redis_type_matches("chat.*", "orders.placed"));
    /* '*' inside a word is a literal, as on RabbitMQ */
    assert_false(hd_bus_redis_type_matches("chat.msg*", "chat.msg_posted"));
    assert_false(hd_bus_redis_type_matches(NULL, "x"));
}

static void frame_round_trip(void **state)
{
    (void)state;
    hd_error err;
    const char body[] = "{\"text\":\"hi\"}\n\0binary";
    hd_bus_message m = {.topic = "chat",
                        .type = "chat.message_posted",
                        .body = body,
                        .len = sizeof body - 1,
                        .message_id = "id-1",
                        .correlation_id = "corr-9",
                        .content_type = HD_CLOUDEVENTS_MEDIA_TYPE};
    char *f = NULL;
    size_t flen = 0;
    assert_hd_err(0, hd_bus_redis_frame_encode(&m, &f, &flen, &err), &err);
    assert_true(strncmp(f, "herald/1\nid: id-1\ncorrelation-id: corr-9\ncontent-type: ", 55) == 0);
    hd_bus_redis_frame d;
    assert_hd_err(0, hd_bus_redis_frame_decode(f, flen, &d, &err), &err);
    assert_string_equal(d.message_id, "id-1");
    assert_string_equal(d.correlation_id, "corr-9");
    assert_string_equal(d.content_type, HD_CLOUDEVENTS_MEDIA_TYPE);
    assert_int_equal(d.len, sizeof body - 1);
    assert_memory_equal(d.body, body, sizeof body - 1);
    free(f);

    /* no headers, empty body */
    hd_bus_message bare = {.topic = "t", .type = "x", .body = NULL, .len = 0};
    assert_hd_err(0, hd_bus_redis_frame_encode(&bare, &f, &flen, &err), &err);
    assert_int_equal(flen, 10);
    assert_hd_err(0, hd_bus_redis_frame_decode(f, flen, &d, &err), &err);
    assert_string_equal(d.message_id, "");
    assert_int_equal(d.len, 0);
    free(f);

    /* a value that would break the framing is refused when encoding */
    m.message_id = "id\nforged: 1";
    assert_hd(HD_EINVAL, hd_bus_redis_frame_encode(&m, &f, &flen, NULL));
    assert_null(f);
}

static void frame_decoder_refuses_malformed_heads(void **state)
{
    (void)state;
    hd_bus_redis_frame d;
    /* no magic: a foreign publisher's message, all body */
    assert_hd(0, hd_bus_redis_frame_decode("{\"a\":1}", 7, &d, NULL));
    assert_int_equal(d.len, 7);
    assert_string_equal(d.message_id, "");
    assert_hd(0, hd_bus_redis_frame_decode("herald/1", 8, &d, NULL)); /* no newline: body */
    assert_int_equal(d.len, 8);
    /* unknown headers are skipped */
    const char *later = "herald/1\nid: a\npriority: 9\n\nB";
    assert_hd(0, hd_bus_redis_frame_decode(later, strlen(later), &d, NULL));
    assert_string_equal(d.message_id, "a");
    assert_int_equal(d.len, 1);

    static const char *bad[] = {
        "herald/1\n",                         /* no blank line */
        "herald/1\nid: a\n",                  /* no blank line */
        "herald/1\nid:a\n\n",                 /* no ": " */
        "herald/1\nid: \n\n",                 /* empty value */
        "herald/1\nid: a\r\n\n",              /* CR */
        "herald/1\nid: a\nid: b\n\n",         /* twice */
        "herald/1\nno separator at all\n\nx", /* no ": " */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_error err;
        memset(&d, 0x5a, sizeof d);
        assert_hd(HD_EPROTO, hd_bus_redis_frame_decode(bad[i], strlen(bad[i]), &d, &err));
        static const hd_bus_redis_frame zero;
        assert_memory_equal(&d, &zero, sizeof d);
    }
    /* a head longer than HD_BUS_REDIS_FRAME_HEAD_MAX */
    size_t n = HD_BUS_REDIS_FRAME_HEAD_MAX + 100;
    char *big = malloc(n);
    memcpy(big, "herald/1\nx-pad: ", 16);
    memset(big + 16, 'a', n - 16);
    big[n - 2] = '\n';
    big[n - 1] = '\n';
    assert_hd(HD_EPROTO, hd_bus_redis_frame_decode(big, n, &d, NULL));
    free(big);
    /* a value of the longest length is fine, one longer is not */
    char line[HD_BUS_REDIS_FRAME_VALUE_MAX + 32];
    int len =
        snprintf(line, sizeof line, "herald/1\nid: %0*d\n\n", HD_BUS_REDIS_FRAME_VALUE_MAX - 1, 0);
    assert_hd(0, hd_bus_redis_frame_decode(line, (size_t)len, &d, NULL));
    len = snprintf(line, sizeof line, "herald/1\nid: %0*d\n\n", HD_BUS_REDIS_FRAME_VALUE_MAX, 0);
    assert_hd(HD_EPROTO, hd_bus_redis_frame_decode(line, (size_t)len, &d, NULL));
}

static hd_consume_result never(void *ctx, const hd_delivery *d)
{
    (void)ctx;
    (void)d;
    fail();
    return HD_CONSUME_OK;
}

static void lifecycle_before_connecting(void **state)
{
    (void)state;
    hd_error err;
    hd_bus *bus = NULL;
    assert_hd(HD_EURL, hd_bus_redis_new("redis://:pw@", NULL, &bus, &err));
    assert_null(bus);
    hd_bus_redis_options bad = {.timeout_ms = -1};
    assert_hd(HD_EINVAL, hd_bus_redis_new("redis://h", &bad, &bus, &err));
    assert_hd_err(0, hd_bus_redis_new("redis://:pw@127.0.0.1:1", NULL, &bus, &err), &err);
    assert_string_equal(hd_bus_name(bus), "redis");
    const char *types[] = {"chat.*", "chat.message_posted"};
    assert_hd_err(0, hd_bus_register(bus, "room", "chat", types, 2, never, NULL, &err), &err);
    assert_hd(HD_EEXIST, hd_bus_register(bus, "room", "chat", types, 1, never, NULL, &err));
    assert_hd(HD_ESTATE, hd_bus_poll(bus, 0, &err));
    assert_hd(HD_ESTATE,
              hd_bus_send_raw(bus,
                              &(hd_bus_message){.topic = "chat", .type = "x", .body = "", .len = 0},
                              &err));
    hd_bus_redis_counts n;
    hd_bus_redis_get_counts(bus, &n);
    assert_int_equal(n.sent + n.received, 0);
    hd_bus_free(bus); /* never started: nothing to close */

    /* counts of another kind of bus are zeroes */
    memset(&n, 0x5a, sizeof n);
    hd_bus_redis_get_counts(NULL, &n);
    assert_int_equal(n.sent, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_url_is_taken_apart),
        cmocka_unit_test(defaults_and_forms),
        cmocka_unit_test(bad_urls_are_refused_without_their_password),
        cmocka_unit_test(redaction_hides_the_password),
        cmocka_unit_test(channel_is_topic_colon_type),
        cmocka_unit_test(wildcards_match_as_on_rabbitmq),
        cmocka_unit_test(frame_round_trip),
        cmocka_unit_test(frame_decoder_refuses_malformed_heads),
        cmocka_unit_test(lifecycle_before_connecting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
