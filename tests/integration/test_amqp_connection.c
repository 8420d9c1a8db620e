/* Integration tests for herald/amqp.h against the real broker (HD_AMQP_URL): open and close,
 * refused credentials and vhosts, extra channels, a channel error that leaves the connection
 * usable, and reconnecting. */
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
#include "herald/topology.h"

static const char *url(void)
{
    return hd_test_require_env("HD_AMQP_URL");
}

/* The URL with its user:password replaced (the host part after '@' is kept). */
static void with_credentials(char *out, size_t cap, const char *userinfo, const char *vhost)
{
    const char *at = strchr(url(), '@');
    assert_non_null(at);
    const char *slash = strchr(at, '/');
    int hostlen = slash ? (int)(slash - at) : (int)strlen(at);
    snprintf(out, cap, "amqp://%s%.*s/%s", userinfo, hostlen, at, vhost);
}

static void open_and_close(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    hd_amqp_options o = {.connection_name = "herald-test-connection", .heartbeat_s = 10};
    assert_hd_err(0, hd_amqp_open(url(), &o, &a, &err), &err);
    assert_non_null(a);
    assert_true(hd_amqp_is_open(a));
    assert_int_equal(hd_amqp_generation(a), 1);
    assert_int_equal(hd_amqp_channel(a), 1);
    assert_non_null(hd_amqp_state(a));
    assert_non_null(strstr(hd_amqp_url_text(a), ":***@"));
    hd_amqp_close(a);

    /* Defaults. */
    assert_hd_err(0, hd_amqp_open(url(), NULL, &a, &err), &err);
    hd_amqp_close(a);
}

static void wrong_password_is_eauth_with_the_brokers_reason(void **state)
{
    (void)state;
    char bad[512];
    with_credentials(bad, sizeof bad, "guest:wrong-password", "");
    hd_amqp *a = (hd_amqp *)1;
    hd_error err;
    assert_hd_err(HD_EAUTH, hd_amqp_open(bad, NULL, &a, &err), &err);
    assert_null(a);
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "ACCESS_REFUSED"));
    assert_null(strstr(err.text, "wrong-password")); /* never leak the password */
}

static void unknown_vhost_is_eauth(void **state)
{
    (void)state;
    char bad[512];
    with_credentials(bad, sizeof bad, "guest:guest", "no-such-vhost");
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(HD_EAUTH, hd_amqp_open(bad, NULL, &a, &err), &err);
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "no-such-vhost"));
}

static void nothing_listening_is_econnect(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(HD_ECONNECT, hd_amqp_open("amqp://guest:guest@127.0.0.1:1/", NULL, &a, &err),
                  &err);
    assert_null(a);
}

static void extra_channels_get_distinct_numbers(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(0, hd_amqp_open(url(), NULL, &a, &err), &err);
    amqp_channel_t c1 = 0, c2 = 0, c3 = 0;
    assert_hd_err(0, hd_amqp_channel_open(a, &c1, &err), &err);
    assert_hd_err(0, hd_amqp_channel_open(a, &c2, &err), &err);
    assert_true(c1 > 1 && c2 > 1 && c1 != c2);
    hd_amqp_channel_close(a, c1);
    assert_hd_err(0, hd_amqp_channel_open(a, &c3, &err), &err);
    assert_int_equal(c3, c1); /* numbers are reused once released */
    hd_amqp_channel_close(a, c2);
    hd_amqp_channel_close(a, c3);
    hd_amqp_channel_close(a, c3); /* twice is harmless */
    assert_true(hd_amqp_is_open(a));
    hd_amqp_close(a);
}

static void channel_error_keeps_the_connection(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(0, hd_amqp_open(url(), NULL, &a, &err), &err);
    char *missing = hd_test_unique_name("hd-missing");

    /* A passive declare of a queue that does not exist: the broker closes channel 1. */
    amqp_queue_declare(hd_amqp_state(a), hd_amqp_channel(a), amqp_cstring_bytes(missing), 1, 0, 0,
                       0, amqp_empty_table);
    assert_hd(HD_EAMQP, hd_amqp_check_reply(a, amqp_get_rpc_reply(hd_amqp_state(a)),
                                            "passive declare", &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "404 NOT_FOUND"));
    assert_int_equal(hd_amqp_last_reply_code(a), 404);
    assert_true(hd_amqp_is_open(a));

    /* Channel 1 was reopened: the next call works. */
    hd_queue_spec q = {.name = missing, .exclusive = 1};
    hd_queue_info info;
    assert_hd_err(0, hd_queue_declare(a, &q, &info, &err), &err);
    assert_string_equal(info.name, missing);
    assert_hd_err(0, hd_queue_delete(a, missing, NULL, &err), &err);

    /* The same on an extra channel: the number is released, not reopened. */
    amqp_channel_t ch;
    assert_hd_err(0, hd_amqp_channel_open(a, &ch, &err), &err);
    amqp_queue_declare(hd_amqp_state(a), ch, amqp_cstring_bytes(missing), 1, 0, 0, 0,
                       amqp_empty_table);
    assert_hd(HD_EAMQP, hd_amqp_check_reply_on(a, ch, amqp_get_rpc_reply(hd_amqp_state(a)),
                                               "passive declare", &err));
    amqp_channel_t again;
    assert_hd_err(0, hd_amqp_channel_open(a, &again, &err), &err);
    assert_int_equal(again, ch);
    hd_amqp_channel_close(a, again);
    assert_true(hd_amqp_is_open(a));
    hd_amqp_close(a);
    free(missing);
}

static void reconnect_gives_a_new_generation(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(0, hd_amqp_open(url(), NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_reconnect(a, NULL, &err), &err);
    assert_int_equal(hd_amqp_generation(a), 2);
    assert_true(hd_amqp_is_open(a));
    hd_queue_info info;
    hd_queue_spec anon = {.exclusive = 1};
    assert_hd_err(0, hd_queue_declare(a, &anon, &info, &err), &err);
    assert_memory_equal(info.name, "amq.gen-", 8);

    /* A broken connection is reported as such, and reconnect repairs it. */
    hd_amqp_mark_broken(a);
    assert_false(hd_amqp_is_open(a));
    assert_hd(HD_ECLOSED, hd_queue_declare(a, &anon, &info, &err));
    assert_hd_err(0, hd_amqp_reconnect(a, NULL, &err), &err);
    assert_int_equal(hd_amqp_generation(a), 3);

    /* Stopped before it starts: HD_EINTR, and the object can still be closed. */
    hd_stop stop;
    assert_hd_err(HD_OK, hd_stop_init(&stop, &err), &err);
    hd_stop_request(&stop);
    assert_hd(HD_EINTR, hd_amqp_reconnect(a, &stop, &err));
    hd_stop_release(&stop);
    assert_false(hd_amqp_is_open(a));
    hd_amqp_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_and_close),
        cmocka_unit_test(wrong_password_is_eauth_with_the_brokers_reason),
        cmocka_unit_test(unknown_vhost_is_eauth),
        cmocka_unit_test(nothing_listening_is_econnect),
        cmocka_unit_test(extra_channels_get_distinct_numbers),
        cmocka_unit_test(channel_error_keeps_the_connection),
        cmocka_unit_test(reconnect_gives_a_new_generation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
