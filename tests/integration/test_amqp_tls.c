/* Integration: amqps:// through herald/amqp.h (amqp_tls.c) against the harness's broker
 * (HD_AMQPS_URL, certificate of HD_TLS_CA_FILE) and a fake TLS server in this process
 * (tls_fake.h) for the certificates no real broker should have:
 *   the right CA                -> connected, a queue declared, a message through it
 *   an unrelated CA             -> HD_EAUTH, "not trusted by CA file"
 *   an expired certificate      -> HD_EAUTH, "expired on 2020-02-01"
 *   a certificate for wrong.example -> HD_EAUTH, "does not name host"
 *   amqps:// to the plain port  -> HD_ECONNECT, "handshake failed", never a plain session
 * A missing server is a failure (hd_test_require_env). */
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
#include "herald/amqp_tls.h"
#include "tls_fake.h"

static void expect_text(const hd_error *err, const char *part)
{
    if (strstr(err->text, part) == NULL)
        fail_msg("expected '%s' in: %s", part, err->text);
}

static void right_ca_connects_and_works(void **state)
{
    (void)state;
    hd_amqp_options o = {.connection_name = "herald-test-tls"};
    hd_error err;
    assert_hd_err(0,
                  hd_amqp_tls_settings(&o, hd_test_require_env("HD_AMQPS_URL"),
                                       hd_test_require_env("HD_TLS_CA_FILE"), NULL, NULL, &err),
                  &err);
    hd_amqp *a = NULL;
    assert_hd_err(0, hd_amqp_open(hd_test_require_env("HD_AMQPS_URL"), &o, &a, &err), &err);
    amqp_connection_state_t c = hd_amqp_state(a);
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    assert_hd_err(0, hd_amqp_check_reply(a, amqp_get_rpc_reply(c), "declare", &err), &err);
    amqp_bytes_t q = amqp_bytes_malloc_dup(ok->queue);
    assert_int_equal(
        amqp_basic_publish(c, 1, amqp_empty_bytes, q, 1, 0, NULL, amqp_cstring_bytes("over TLS")),
        AMQP_STATUS_OK);
    amqp_rpc_reply_t r = amqp_basic_get(c, 1, q, 1);
    assert_hd_err(0, hd_amqp_check_reply(a, r, "get", &err), &err);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t m;
    assert_int_equal(amqp_read_message(c, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
    assert_int_equal(m.body.len, 8);
    assert_memory_equal(m.body.bytes, "over TLS", 8);
    amqp_destroy_message(&m);
    amqp_bytes_free(q);
    hd_amqp_close(a);
}

static void wrong_ca_is_refused(void **state)
{
    (void)state;
    hd_amqp_options o = {.ca_cert_path = hd_test_require_env("HD_TLS_WRONG_CA_FILE")};
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(HD_EAUTH, hd_amqp_open(hd_test_require_env("HD_AMQPS_URL"), &o, &a, &err), &err);
    assert_null(a);
    expect_text(&err, "not trusted by CA file");
    print_message("refused: %s\n", err.text);
}

/* amqps:// to the fake with cert/key; returns the code, err filled. */
static int open_fake(const char *cert_var, const char *key_var, const char *host, hd_error *err)
{
    hd_tls_fake *f = hd_tls_fake_start(HD_TLS_FAKE_RAW, hd_test_require_env(cert_var),
                                       hd_test_require_env(key_var));
    assert_non_null(f);
    char url[128];
    snprintf(url, sizeof url, "amqps://guest:guest@%s:%d/", host, hd_tls_fake_port(f));
    hd_amqp_options o = {.ca_cert_path = hd_test_require_env("HD_TLS_CA_FILE"),
                         .connect_timeout_ms = 5000};
    hd_amqp *a = NULL;
    int rc = hd_amqp_open(url, &o, &a, err);
    assert_null(a);
    assert_true(hd_tls_fake_connections(f) >= 1); /* it got as far as the handshake */
    hd_tls_fake_stop(f);
    print_message("refused: %s\n", err->text);
    return rc;
}

static void expired_certificate_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_EAUTH,
                  open_fake("HD_TLS_EXPIRED_CERT", "HD_TLS_EXPIRED_KEY", "127.0.0.1", &err), &err);
    expect_text(&err, "expired on 2020-02-01");
}

static void certificate_for_another_host_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_EAUTH,
                  open_fake("HD_TLS_WRONG_HOST_CERT", "HD_TLS_WRONG_HOST_KEY", "127.0.0.1", &err),
                  &err);
    expect_text(&err, "does not name host '127.0.0.1'");
    /* The name of the URL is what is checked, whatever it is. */
    assert_hd_err(HD_EAUTH,
                  open_fake("HD_TLS_WRONG_HOST_CERT", "HD_TLS_WRONG_HOST_KEY", "localhost", &err),
                  &err);
    expect_text(&err, "does not name host 'localhost'");
}

static void plain_port_is_refused_not_used_in_clear(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "amqps://guest:guest@127.0.0.1:%s/",
             hd_test_require_env("HD_AMQP_PORT"));
    hd_amqp_options o = {.ca_cert_path = hd_test_require_env("HD_TLS_CA_FILE"),
                         .connect_timeout_ms = 5000};
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(HD_ECONNECT, hd_amqp_open(url, &o, &a, &err), &err);
    assert_null(a);
    expect_text(&err, "handshake failed");
    print_message("refused: %s\n", err.text);
}

static void settings_refuse_a_ca_for_plain_amqp(void **state)
{
    (void)state;
    hd_amqp_options o = {0};
    hd_error err;
    assert_hd_err(HD_ECONFIG,
                  hd_amqp_tls_settings(&o, hd_test_require_env("HD_AMQP_URL"),
                                       hd_test_require_env("HD_TLS_CA_FILE"), NULL, NULL, &err),
                  &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(right_ca_connects_and_works),
        cmocka_unit_test(wrong_ca_is_refused),
        cmocka_unit_test(expired_certificate_is_refused),
        cmocka_unit_test(certificate_for_another_host_is_refused),
        cmocka_unit_test(plain_port_is_refused_not_used_in_clear),
        cmocka_unit_test(settings_refuse_a_ca_for_plain_amqp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
