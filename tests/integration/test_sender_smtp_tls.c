/* Integration: the SMTP sender with STARTTLS required (HD_SMTP_TLS=required) and a CA file
 * (HD_SMTP_CA_FILE), against the harness's STARTTLS sink (HD_SMTP_TLS_URL, certificate of
 * HD_TLS_CA_FILE), its plain sink (HD_SMTP_URL, no STARTTLS) and a fake server in this
 * process (tls_fake.h) presenting an expired or wrong-host certificate:
 *   the right CA                -> the start-up check passes, the mail arrives, over TLS
 *   an unrelated CA             -> check and send fail, libcurl's certificate reason
 *   an expired certificate      -> refused, "expired"
 *   a certificate for wrong.example -> refused, the host name in the reason
 *   a server without STARTTLS   -> refused, "did not offer it"; nothing sent in clear
 * A missing server is a failure (hd_test_require_env). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_maildir.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/sender.h"
#include "tls_fake.h"

#define FROM "herald@example.com"

static void expect_text(const hd_error *err, const char *part)
{
    if (strstr(err->text, part) == NULL)
        fail_msg("expected '%s' in: %s", part, err->text);
}

/* The message stored for rcpt, waiting up to wait_ms; NULL when none came. New. */
static char *find_message(const char *rcpt, int64_t wait_ms)
{
    return hd_maildir_find(hd_test_require_env("HD_SMTP_MAILDIR"), rcpt, wait_ms);
}

static hd_sender *required_sender(const char *url, const char *ca)
{
    hd_sender_smtp_options o = {
        .timeout_ms = 5000, .starttls = HD_SMTP_STARTTLS_REQUIRED, .ca_file = ca};
    hd_sender *s = NULL;
    hd_error err;
    assert_hd_err(0, hd_sender_smtp_new_with(url, FROM, &o, &s, &err), &err);
    return s;
}

static void right_ca_sends_over_starttls(void **state)
{
    (void)state;
    hd_sender *s = required_sender(hd_test_require_env("HD_SMTP_TLS_URL"),
                                   hd_test_require_env("HD_TLS_CA_FILE"));
    hd_error err;
    assert_hd_err(0, hd_sender_smtp_check(s, &err), &err);
    char *rcpt_local = hd_test_unique_name("tls");
    char rcpt[256];
    snprintf(rcpt, sizeof rcpt, "%s@example.com", rcpt_local);
    hd_mail m = {.to = rcpt, .subject = "over TLS", .html = "<p>h</p>", .text = "t"};
    assert_hd_err(0, hd_sender_send(s, &m, &err), &err);
    char *msg = find_message(rcpt, 10000);
    if (msg == NULL)
        fail_msg("no message for %s arrived", rcpt);
    if (strstr(msg, "X-Envelope-TLS: yes") == NULL)
        fail_msg("the sink did not receive it over TLS:\n%.400s", msg);
    free(msg);
    free(rcpt_local);
    hd_sender_free(s);
}

static void wrong_ca_is_refused(void **state)
{
    (void)state;
    hd_sender *s = required_sender(hd_test_require_env("HD_SMTP_TLS_URL"),
                                   hd_test_require_env("HD_TLS_WRONG_CA_FILE"));
    hd_error err;
    assert_hd_err(HD_ESMTP, hd_sender_smtp_check(s, &err), &err);
    expect_text(&err, "certificate");
    print_message("refused: %s\n", err.text);
    hd_mail m = {.to = "nobody@example.com", .subject = "s", .html = "h", .text = "t"};
    assert_hd_err(HD_ESMTP, hd_sender_send(s, &m, &err), &err);
    hd_sender_free(s);
}

static int check_fake(const char *cert_var, const char *key_var, hd_error *err)
{
    hd_tls_fake *f = hd_tls_fake_start(HD_TLS_FAKE_SMTP_STARTTLS, hd_test_require_env(cert_var),
                                       hd_test_require_env(key_var));
    assert_non_null(f);
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", hd_tls_fake_port(f));
    hd_sender *s = required_sender(url, hd_test_require_env("HD_TLS_CA_FILE"));
    int rc = hd_sender_smtp_check(s, err);
    hd_sender_free(s);
    assert_true(hd_tls_fake_connections(f) >= 1);
    hd_tls_fake_stop(f);
    print_message("refused: %s\n", err->text);
    return rc;
}

static void expired_certificate_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_ESMTP, check_fake("HD_TLS_EXPIRED_CERT", "HD_TLS_EXPIRED_KEY", &err), &err);
    expect_text(&err, "expired");
}

static void certificate_for_another_host_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_ESMTP, check_fake("HD_TLS_WRONG_HOST_CERT", "HD_TLS_WRONG_HOST_KEY", &err),
                  &err);
    expect_text(&err, "127.0.0.1");
}

static void server_without_starttls_is_refused(void **state)
{
    (void)state;
    hd_sender *s =
        required_sender(hd_test_require_env("HD_SMTP_URL"), hd_test_require_env("HD_TLS_CA_FILE"));
    hd_error err;
    assert_hd_err(HD_ESMTP, hd_sender_smtp_check(s, &err), &err);
    expect_text(&err, "did not offer it");
    print_message("refused: %s\n", err.text);
    char *rcpt_local = hd_test_unique_name("plain");
    char rcpt[256];
    snprintf(rcpt, sizeof rcpt, "%s@example.com", rcpt_local);
    hd_mail m = {.to = rcpt, .subject = "s", .html = "h", .text = "t"};
    assert_hd_err(HD_ESMTP, hd_sender_send(s, &m, &err), &err);
    expect_text(&err, "did not offer it");
    /* Never in clear instead. */
    char *msg = find_message(rcpt, 500);
    if (msg != NULL)
        fail_msg("the mail was delivered in clear:\n%.300s", msg);
    free(rcpt_local);
    hd_sender_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(right_ca_sends_over_starttls),
        cmocka_unit_test(wrong_ca_is_refused),
        cmocka_unit_test(expired_certificate_is_refused),
        cmocka_unit_test(certificate_for_another_host_is_refused),
        cmocka_unit_test(server_without_starttls_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
