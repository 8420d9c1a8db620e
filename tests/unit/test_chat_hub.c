/* unit.chat_hub — the chat's rooms, tokens and listeners (chat/hub.h) and its rules
 * (chat/domain.h), without a server: a listener's stream is read by calling
 * chat_listener_read as libmicrohttpd would.
 *
 *   1. names, texts and room names: what is accepted and what is refused;
 *   2. the event codec: a round trip, and hostile bodies from the bus refused;
 *   3. tokens: 64 hex, good for one room, dead after leave, expired after the TTL;
 *   4. a listener reads hello, messages in order, heartbeats, and a bye then the end when
 *      the hub closes;
 *   5. a listener that does not read is dropped when its queue is full (memory stays
 *      bounded), the others get everything;
 *   6. limits: members, listeners, streams per token.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chat/domain.h"
#include "chat/hub.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/http.h"

static const char *const rooms[] = {"general", "random"};

static chat_hub *hub_with(size_t queue, size_t listeners, size_t sessions, int64_t ttl_ms)
{
    chat_hub_options o = {.rooms = rooms,
                          .n_rooms = 2,
                          .queue_len = queue,
                          .max_listeners = listeners,
                          .max_sessions = sessions,
                          .streams_per_session = 2,
                          .session_ttl_ms = ttl_ms,
                          .heartbeat_ms = 100};
    chat_hub *h = NULL;
    hd_error err;
    assert_hd_err(0, chat_hub_new(&o, &h, &err), &err);
    return h;
}

static chat_message msg(const char *room, const char *text)
{
    chat_message m = {.at_ms = 1};
    hd_uuid_v4(m.id);
    snprintf(m.room, sizeof m.room, "%s", room);
    strcpy(m.name, "ann");
    strcpy(m.origin, "test");
    snprintf(m.text, sizeof m.text, "%s", text);
    return m;
}

/* Read what the stream has now (one call); "" at the end. */
static char *read_once(chat_listener *l, char *buf, size_t cap)
{
    ssize_t n = chat_listener_read(l, 0, buf, cap - 1);
    if (n == HD_HTTP_STREAM_END)
        n = 0;
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static void test_rules(void **state)
{
    (void)state;
    hd_error err;
    assert_true(chat_room_name_valid("general"));
    assert_true(chat_room_name_valid("a-b_9"));
    assert_false(chat_room_name_valid(""));
    assert_false(chat_room_name_valid("General"));
    assert_false(chat_room_name_valid("../x"));
    assert_false(chat_room_name_valid("012345678901234567890123456789012"));
    assert_hd(0, chat_name_check("Zo\xc3\xab", &err));
    assert_hd(HD_EVALIDATE, chat_name_check("", &err));
    assert_hd(HD_EVALIDATE, chat_name_check("  ", &err));
    assert_hd(HD_EVALIDATE, chat_name_check("a\tb", &err));
    assert_hd(HD_EVALIDATE, chat_name_check("a\xc2\x85", &err)); /* NEL, a C1 control */
    assert_hd(HD_EVALIDATE, chat_name_check("\xff", &err));
    assert_hd(HD_EVALIDATE, chat_name_check("\xed\xa0\x80", &err)); /* a surrogate */
    assert_hd(0, chat_text_check("two\nlines\tand a tab", 19, &err));
    assert_hd(HD_EVALIDATE, chat_text_check("a\0b", 3, &err));
    assert_hd(HD_EVALIDATE, chat_text_check("\x1b[2J", 4, &err));
    assert_hd(HD_EVALIDATE, chat_text_check(" \n\t", 3, &err));
    assert_hd(HD_EVALIDATE, chat_text_check("", 0, &err));
    assert_hd(HD_EVALIDATE, chat_text_check("\xe2\x82", 2, &err)); /* cut sequence */
    char big[CHAT_TEXT_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_hd(HD_ETOOBIG, chat_text_check(big, CHAT_TEXT_MAX + 1, &err));
    assert_hd(0, chat_text_check(big, CHAT_TEXT_MAX, &err));
}

static void test_codec(void **state)
{
    (void)state;
    chat_message m = msg("general", "<b>\"hi\"</b>\n"), back;
    char *json = chat_message_encode(&m);
    hd_error err;
    assert_hd_err(0, chat_message_decode(json, strlen(json), &back, &err), &err);
    assert_string_equal(back.text, m.text);
    assert_string_equal(back.id, m.id);
    assert_int_equal(back.at_ms, 1);
    free(json);
    const char *bad[] = {
        "",
        "[]",
        "{\"id\":\"x\",\"room\":\"general\",\"name\":\"a\",\"origin\":\"o\",\"at\":1,\"text\":"
        "\"t\"}",
        "{\"id\":\"6c1c8a4e-6a9f-4d4c-9b0e-2f5d9b7c1a11\",\"room\":\"Gen\",\"name\":\"a\","
        "\"origin\":\"o\",\"at\":1,\"text\":\"t\"}",
        "{\"id\":\"6c1c8a4e-6a9f-4d4c-9b0e-2f5d9b7c1a11\",\"room\":\"general\",\"name\":\"a\","
        "\"origin\":\"o\",\"at\":\"1\",\"text\":\"t\"}",
        "{\"id\":\"6c1c8a4e-6a9f-4d4c-9b0e-2f5d9b7c1a11\",\"room\":\"general\",\"name\":\"a\","
        "\"origin\":\"o\",\"at\":1,\"text\":\"a\\u0000b\"}",
        "{\"id\":\"6c1c8a4e-6a9f-4d4c-9b0e-2f5d9b7c1a11\",\"room\":\"general\",\"name\":\"a\","
        "\"origin\":\"o\",\"at\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_true(chat_message_decode(bad[i], strlen(bad[i]), &back, &err) < 0);
}

static void test_tokens(void **state)
{
    (void)state;
    chat_hub *h = hub_with(8, 10, 10, 200);
    char t[CHAT_TOKEN_LEN + 1], u[CHAT_TOKEN_LEN + 1], name[CHAT_NAME_MAX + 1];
    hd_error err;
    assert_hd(HD_ENOTFOUND, chat_hub_join(h, "nope", "ann", t, &err));
    assert_hd(HD_EVALIDATE, chat_hub_join(h, "general", "", t, &err));
    assert_hd_err(0, chat_hub_join(h, "general", "ann", t, &err), &err);
    assert_hd_err(0, chat_hub_join(h, "general", "ann", u, &err), &err);
    assert_int_equal(strlen(t), CHAT_TOKEN_LEN);
    assert_string_not_equal(t, u); /* the same name twice: two members */
    assert_hd_err(0, chat_hub_check(h, "general", t, name, &err), &err);
    assert_string_equal(name, "ann");
    assert_hd(HD_EAUTH, chat_hub_check(h, "random", t, name, &err));
    assert_hd(HD_EAUTH, chat_hub_check(h, "general", NULL, name, &err));
    assert_hd(HD_EAUTH, chat_hub_check(h, "general", "", name, &err));
    t[5] ^= 1;
    assert_hd(HD_EAUTH, chat_hub_check(h, "general", t, name, &err));
    t[5] ^= 1;
    assert_hd_err(0, chat_hub_leave(h, "general", t, &err), &err);
    assert_hd(HD_EAUTH, chat_hub_check(h, "general", t, name, &err));
    assert_hd(HD_EAUTH, chat_hub_leave(h, "general", t, &err));
    hd_sleep_ms(300); /* past the TTL: u expires */
    assert_hd(HD_EAUTH, chat_hub_check(h, "general", u, name, &err));
    chat_hub_free(h);
}

static void test_stream(void **state)
{
    (void)state;
    chat_hub *h = hub_with(8, 10, 10, 60000);
    char t[CHAT_TOKEN_LEN + 1], buf[8192];
    hd_error err;
    chat_listener *l;
    assert_hd_err(0, chat_hub_join(h, "general", "ann", t, &err), &err);
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &l, &err), &err);
    assert_non_null(strstr(read_once(l, buf, sizeof buf), ": welcome"));
    chat_message a = msg("general", "one"), b = msg("general", "two"), c = msg("random", "x");
    assert_int_equal(chat_hub_deliver(h, &a), 1);
    assert_int_equal(chat_hub_deliver(h, &b), 1);
    assert_int_equal(chat_hub_deliver(h, &c), 0);
    read_once(l, buf, sizeof buf);
    char *one = strstr(buf, "\"text\":\"one\""), *two = strstr(buf, "\"text\":\"two\"");
    assert_non_null(one);
    assert_non_null(two);
    assert_true(one < two);
    assert_non_null(strstr(buf, "event: message\n"));
    /* Nothing queued: the read blocks until the heartbeat (100 ms here). */
    int64_t t0 = hd_clock_ms();
    assert_string_equal(read_once(l, buf, sizeof buf), ": ping\n\n");
    assert_true(hd_clock_ms() - t0 >= 50);
    /* A small buffer gets a frame in pieces. */
    assert_int_equal(chat_hub_deliver(h, &a), 1);
    char piece[16], whole[1024] = "";
    while (strstr(whole, "\n\n") == NULL)
        strcat(whole, read_once(l, piece, sizeof piece));
    assert_non_null(strstr(whole, "\"text\":\"one\""));
    chat_hub_close(h);
    assert_non_null(strstr(read_once(l, buf, sizeof buf), "event: bye"));
    assert_int_equal(chat_listener_read(l, 0, buf, sizeof buf), HD_HTTP_STREAM_END);
    chat_listener *late;
    assert_hd(HD_ESTATE, chat_hub_subscribe(h, "general", t, &late, &err));
    assert_null(late);
    chat_listener_release(l);
    chat_hub_free(h);
}

static void test_slow_listener_dropped(void **state)
{
    (void)state;
    chat_hub *h = hub_with(4, 10, 10, 60000);
    char t[CHAT_TOKEN_LEN + 1], buf[65536];
    hd_error err;
    chat_listener *slow, *fast;
    assert_hd_err(0, chat_hub_join(h, "general", "ann", t, &err), &err);
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &slow, &err), &err);
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &fast, &err), &err);
    int seen = 0;
    for (int i = 0; i < 20; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        chat_message m = msg("general", text);
        chat_hub_deliver(h, &m);
        read_once(fast, buf, sizeof buf); /* the fast one keeps up */
        seen += strstr(buf, "event: message") != NULL;
    }
    chat_hub_stats s;
    chat_hub_get_stats(h, &s);
    assert_int_equal(s.dropped, 1);
    assert_int_equal(s.listeners, 1);
    assert_int_equal(seen, 19); /* the first read was the hello (and m0 after it) */
    /* The slow one: its queue went away with it; it gets a bye and ends. */
    read_once(slow, buf, sizeof buf); /* hello */
    assert_non_null(strstr(read_once(slow, buf, sizeof buf), "\"reason\":\"too slow\""));
    assert_int_equal(chat_listener_read(slow, 0, buf, sizeof buf), HD_HTTP_STREAM_END);
    chat_listener_release(slow);
    chat_listener_release(fast);
    chat_hub_free(h);
}

/* Dropped in the middle of a frame: the rest of that frame goes out before the bye, so the
 * stream stays well-formed. */
static void test_dropped_mid_frame(void **state)
{
    (void)state;
    chat_hub *h = hub_with(2, 10, 10, 60000);
    char t[CHAT_TOKEN_LEN + 1], piece[16], out[8192] = "";
    hd_error err;
    chat_listener *l;
    assert_hd_err(0, chat_hub_join(h, "general", "ann", t, &err), &err);
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &l, &err), &err);
    read_once(l, out, sizeof out); /* hello */
    out[0] = '\0';
    chat_message a = msg("general", "first"), b = msg("general", "second");
    chat_hub_deliver(h, &a);
    chat_hub_deliver(h, &b);
    strcat(out, read_once(l, piece, sizeof piece)); /* 15 bytes of the first frame */
    chat_message c = msg("general", "third");
    chat_hub_deliver(h, &c); /* the queue is full: dropped */
    for (int i = 0; i < 1000; i++) {
        ssize_t n = chat_listener_read(l, 0, piece, sizeof piece - 1);
        if (n == HD_HTTP_STREAM_END)
            break;
        piece[n] = '\0';
        strcat(out, piece);
    }
    /* The whole first frame, then the bye; not the second. */
    const char *first = strstr(out, "\"text\":\"first\"}\n\n");
    const char *bye = strstr(out, "\n\nevent: bye\ndata: {\"reason\":\"too slow\"}\n\n");
    assert_non_null(first);
    assert_non_null(bye);
    assert_true(first < bye);
    assert_null(strstr(out, "second"));
    chat_listener_release(l);
    chat_hub_free(h);
}

static void test_limits(void **state)
{
    (void)state;
    chat_hub *h = hub_with(4, 3, 2, 60000);
    char t[CHAT_TOKEN_LEN + 1], u[CHAT_TOKEN_LEN + 1], v[CHAT_TOKEN_LEN + 1];
    hd_error err;
    chat_listener *l[4];
    assert_hd_err(0, chat_hub_join(h, "general", "a", t, &err), &err);
    assert_hd_err(0, chat_hub_join(h, "random", "b", u, &err), &err);
    assert_hd(HD_EBUSY, chat_hub_join(h, "general", "c", v, &err));
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &l[0], &err), &err);
    assert_hd_err(0, chat_hub_subscribe(h, "general", t, &l[1], &err), &err);
    assert_hd(HD_EBUSY, chat_hub_subscribe(h, "general", t, &l[2], &err)); /* 2 per token */
    assert_hd_err(0, chat_hub_subscribe(h, "random", u, &l[2], &err), &err);
    assert_hd_err(0, chat_hub_leave(h, "general", t, &err), &err);
    assert_hd_err(0, chat_hub_join(h, "general", "c", v, &err), &err);
    /* a's two listeners were unlisted by the leave but still held by their streams: 1 of 3 in use
     */
    assert_hd_err(0, chat_hub_subscribe(h, "general", v, &l[3], &err), &err);
    for (int i = 0; i < 4; i++)
        chat_listener_release(l[i]);
    chat_hub_free(h);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_slow_listener_dropped),
        cmocka_unit_test(test_dropped_mid_frame),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
