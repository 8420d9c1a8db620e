/* Integration: PostgreSQL over TLS through hd_store_open, with the URL that
 * hd_store_tls_url makes from HD_PG_URL and a CA file (what HD_DATABASE_CA_FILE does in the
 * services): sslmode=verify-full, never a fall back to plain text.
 *   the right CA (host 127.0.0.1 and localhost) -> connected, pg_stat_ssl says ssl = t
 *   an unrelated CA                             -> refused, "certificate verify failed"
 *   an expired certificate (fake server)        -> refused, "certificate has expired on ..."
 *   a certificate for wrong.example (fake)      -> refused, "does not match host name"
 *   a server that answers 'N' to SSLRequest     -> refused, "does not support SSL"
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
#include "herald/store.h"
#include "herald/store_tls.h"
#include "tls_fake.h"

static void expect_text(const hd_error *err, const char *part)
{
    if (strstr(err->text, part) == NULL)
        fail_msg("expected '%s' in: %s", part, err->text);
}

/* HD_PG_URL with its host:port replaced (NULL: kept). New. */
static char *pg_url_at(const char *hostport)
{
    const char *url = hd_test_require_env("HD_PG_URL");
    char *s = malloc(strlen(url) + 64);
    assert_non_null(s);
    if (hostport == NULL) {
        strcpy(s, url);
        return s;
    }
    const char *at = strchr(url, '@');
    assert_non_null(at);
    const char *slash = strchr(at, '/');
    assert_non_null(slash);
    sprintf(s, "%.*s%s%s", (int)(at + 1 - url), url, hostport, slash);
    return s;
}

static int open_tls(const char *url, const char *ca, hd_store **out, hd_error *err)
{
    char *tls = NULL;
    assert_hd_err(0, hd_store_tls_url(url, ca, &tls, err), err);
    assert_non_null(strstr(tls, "sslmode=verify-full"));
    assert_true(hd_store_tls_required(tls));
    int rc = hd_store_open(tls, out, err);
    free(tls);
    return rc;
}

static void right_ca_connects_over_tls(void **state)
{
    (void)state;
    const char *ca = hd_test_require_env("HD_TLS_CA_FILE");
    char port[16];
    snprintf(port, sizeof port, "%s", hd_test_require_env("HD_PG_PORT"));
    char localhost[64];
    snprintf(localhost, sizeof localhost, "localhost:%s", port);
    const char *hosts[] = {NULL, localhost};
    for (size_t i = 0; i < 2; i++) {
        char *url = pg_url_at(hosts[i]);
        hd_store *s = NULL;
        hd_error err;
        assert_hd_err(0, open_tls(url, ca, &s, &err), &err);
        hd_rows *rows = NULL;
        assert_hd_err(0,
                      hd_store_query(s,
                                     "SELECT ssl::text, version FROM pg_stat_ssl WHERE pid = "
                                     "pg_backend_pid()",
                                     NULL, 0, &rows, &err),
                      &err);
        assert_int_equal(hd_rows_count(rows), 1);
        assert_string_equal(hd_rows_text(rows, 0, 0), "true");
        print_message("%s: TLS %s\n", hosts[i] ? hosts[i] : "HD_PG_URL", hd_rows_text(rows, 0, 1));
        hd_rows_free(rows);
        hd_store_close(s);
        free(url);
    }
}

static void wrong_ca_is_refused(void **state)
{
    (void)state;
    char *url = pg_url_at(NULL);
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_ECONNECT, open_tls(url, hd_test_require_env("HD_TLS_WRONG_CA_FILE"), &s, &err),
                  &err);
    assert_null(s);
    expect_text(&err, "certificate verify failed");
    /* libpq does not say why; store_tls.c's second look does. */
    expect_text(&err, "checked against");
    expect_text(&err, "wrong-ca.crt");
    print_message("refused: %s\n", err.text);
    free(url);
}

/* Open through a fake server in mode with cert/key (env variable names, or NULL). */
static int open_fake(hd_tls_fake_mode mode, const char *cert_var, const char *key_var,
                     hd_error *err)
{
    hd_tls_fake *f = hd_tls_fake_start(mode, cert_var ? hd_test_require_env(cert_var) : NULL,
                                       key_var ? hd_test_require_env(key_var) : NULL);
    assert_non_null(f);
    char hostport[32];
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", hd_tls_fake_port(f));
    char *url = pg_url_at(hostport);
    hd_store *s = NULL;
    int rc = open_tls(url, hd_test_require_env("HD_TLS_CA_FILE"), &s, err);
    assert_null(s);
    assert_true(hd_tls_fake_connections(f) >= 1);
    hd_tls_fake_stop(f);
    free(url);
    print_message("refused: %s\n", err->text);
    return rc;
}

static void expired_certificate_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_ECONNECT,
                  open_fake(HD_TLS_FAKE_PG_SSL, "HD_TLS_EXPIRED_CERT", "HD_TLS_EXPIRED_KEY", &err),
                  &err);
    expect_text(&err, "certificate has expired on 2020-02-01");
}

static void certificate_for_another_host_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(
        HD_ECONNECT,
        open_fake(HD_TLS_FAKE_PG_SSL, "HD_TLS_WRONG_HOST_CERT", "HD_TLS_WRONG_HOST_KEY", &err),
        &err);
    expect_text(&err, "does not match host name");
}

static void server_without_tls_is_refused(void **state)
{
    (void)state;
    hd_error err;
    assert_hd_err(HD_ECONNECT, open_fake(HD_TLS_FAKE_PG_NO_SSL, NULL, NULL, &err), &err);
    expect_text(&err, "does not support SSL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(right_ca_connects_over_tls),
        cmocka_unit_test(wrong_ca_is_refused),
        cmocka_unit_test(expired_certificate_is_refused),
        cmocka_unit_test(certificate_for_another_host_is_refused),
        cmocka_unit_test(server_without_tls_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
