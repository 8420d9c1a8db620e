/* Unit tests of the TLS settings, without servers: hd_amqp_tls_settings (HD_AMQP_CA_FILE,
 * _CERT_FILE, _KEY_FILE against HD_AMQP_URL), hd_store_tls_url and
 * hd_config_apply_database_tls (HD_DATABASE_CA_FILE), hd_smtp_starttls_parse and
 * hd_config_smtp_tls (HD_SMTP_TLS, HD_SMTP_CA_FILE), and the SMTP sender's refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/amqp_tls.h"
#include "herald/config.h"
#include "herald/sender.h"
#include "herald/store_tls.h"

/* A readable file standing for a CA file: only readability is checked before connecting. */
static char ca_path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(ca_path, sizeof ca_path, "/tmp/hd-tls-unit-XXXXXX");
    int fd = mkstemp(ca_path);
    if (fd < 0)
        return -1;
    (void)!write(fd, "not checked here\n", 17);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(ca_path);
    return 0;
}

static void expect_text(const hd_error *err, const char *part)
{
    if (strstr(err->text, part) == NULL)
        fail_msg("expected '%s' in: %s", part, err->text);
}

/* ---- AMQP ------------------------------------------------------------------------------ */

static void amqp_ca_file_with_amqps_is_taken(void **state)
{
    (void)state;
    hd_amqp_options o = {0};
    hd_error err;
    assert_hd_err(0, hd_amqp_tls_settings(&o, "amqps://u:p@h/", ca_path, "", NULL, &err), &err);
    assert_string_equal(o.ca_cert_path, ca_path);
    assert_null(o.client_cert_path);
    assert_null(o.client_key_path);
    /* A list of URLs (a cluster): every one must be amqps://. */
    assert_hd_err(0, hd_amqp_tls_settings(&o, "amqps://a/, amqps://b/", ca_path, NULL, NULL, &err),
                  &err);
    assert_hd_err(HD_ECONFIG,
                  hd_amqp_tls_settings(&o, "amqps://a/,amqp://b/", ca_path, NULL, NULL, &err),
                  &err);
    /* Nothing set: nothing to check, whatever the URL. */
    hd_amqp_options none = {0};
    assert_hd_err(0, hd_amqp_tls_settings(&none, "amqp://h/", NULL, "", "", &err), &err);
    assert_null(none.ca_cert_path);
}

static void amqp_ca_file_with_plain_amqp_is_refused(void **state)
{
    (void)state;
    hd_amqp_options o = {0};
    hd_error err;
    assert_hd_err(HD_ECONFIG, hd_amqp_tls_settings(&o, "amqp://u:p@h/", ca_path, NULL, NULL, &err),
                  &err);
    expect_text(&err, "HD_AMQP_CA_FILE");
    expect_text(&err, "amqps://");
    assert_null(o.ca_cert_path);
}

static void amqp_client_certificate_needs_its_key(void **state)
{
    (void)state;
    hd_amqp_options o = {0};
    hd_error err;
    assert_hd_err(HD_ECONFIG, hd_amqp_tls_settings(&o, "amqps://h/", NULL, ca_path, NULL, &err),
                  &err);
    expect_text(&err, "HD_AMQP_CERT_FILE is set without HD_AMQP_KEY_FILE");
    assert_hd_err(HD_ECONFIG, hd_amqp_tls_settings(&o, "amqps://h/", NULL, NULL, ca_path, &err),
                  &err);
    expect_text(&err, "HD_AMQP_KEY_FILE is set without HD_AMQP_CERT_FILE");
    assert_hd_err(0, hd_amqp_tls_settings(&o, "amqps://h/", NULL, ca_path, ca_path, &err), &err);
    assert_string_equal(o.client_cert_path, ca_path);
    assert_string_equal(o.client_key_path, ca_path);
}

static void amqp_unreadable_file_is_named(void **state)
{
    (void)state;
    hd_amqp_options o = {0};
    hd_error err;
    assert_hd_err(HD_ECONFIG,
                  hd_amqp_tls_settings(&o, "amqps://h/", "/nonexistent/ca.crt", NULL, NULL, &err),
                  &err);
    expect_text(&err, "HD_AMQP_CA_FILE: cannot read /nonexistent/ca.crt");
}

static void amqp_open_with_a_missing_ca_file_fails_before_connecting(void **state)
{
    (void)state;
    hd_amqp_options o = {.ca_cert_path = "/nonexistent/ca.crt"};
    hd_amqp *a = NULL;
    hd_error err;
    /* Port 1 on loopback: had it tried to connect, the error would be a refused connection. */
    assert_hd_err(HD_ECONFIG, hd_amqp_open("amqps://127.0.0.1:1/", &o, &a, &err), &err);
    expect_text(&err, "CA file /nonexistent/ca.crt");
    assert_null(a);
}

/* ---- PostgreSQL ------------------------------------------------------------------------ */

static void database_url_gets_verify_full_and_the_ca(void **state)
{
    (void)state;
    char *out = NULL;
    hd_error err;
    char want[256];
    assert_hd_err(0, hd_store_tls_url("postgresql://app@db/app", ca_path, &out, &err), &err);
    snprintf(want, sizeof want, "postgresql://app@db/app?sslmode=verify-full&sslrootcert=%s",
             ca_path);
    assert_string_equal(out, want);
    assert_true(hd_store_tls_required(out));
    free(out);
    /* Existing parameters are kept; the new ones follow with '&'. */
    assert_hd_err(0,
                  hd_store_tls_url("postgres://h/db?application_name=x&sslmode=verify-full",
                                   ca_path, &out, &err),
                  &err);
    snprintf(want, sizeof want,
             "postgres://h/db?application_name=x&sslmode=verify-full&sslrootcert=%s", ca_path);
    assert_string_equal(out, want);
    free(out);
    /* Without a CA file: the URL as it is. */
    assert_hd_err(0, hd_store_tls_url("sqlite:///tmp/x.db", "", &out, &err), &err);
    assert_string_equal(out, "sqlite:///tmp/x.db");
    assert_false(hd_store_tls_required(out));
    free(out);
}

static void database_ca_path_is_percent_encoded(void **state)
{
    (void)state;
    char dir[] = "/tmp/hd tls&unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/ca.crt", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    char *out = NULL;
    hd_error err;
    assert_hd_err(0, hd_store_tls_url("postgresql://h/db", path, &out, &err), &err);
    assert_non_null(strstr(out, "sslrootcert=/tmp/hd%20tls%26unit-"));
    free(out);
    unlink(path);
    rmdir(dir);
}

static void database_weaker_sslmode_or_other_root_is_refused(void **state)
{
    (void)state;
    char *out = NULL;
    hd_error err;
    assert_hd_err(HD_ECONFIG,
                  hd_store_tls_url("postgresql://h/db?sslmode=prefer", ca_path, &out, &err), &err);
    expect_text(&err, "sslmode=prefer");
    assert_null(out);
    assert_hd_err(
        HD_ECONFIG,
        hd_store_tls_url("postgresql://h/db?sslrootcert=/etc/other.crt", ca_path, &out, &err),
        &err);
    expect_text(&err, "sslrootcert=/etc/other.crt");
    assert_hd_err(HD_ECONFIG, hd_store_tls_url("sqlite:///tmp/x.db", ca_path, &out, &err), &err);
    expect_text(&err, "HD_DATABASE_CA_FILE");
    assert_hd_err(HD_ECONFIG, hd_store_tls_url("postgresql://h/db", "/nonexistent", &out, &err),
                  &err);
    assert_hd_err(HD_EURL, hd_store_tls_url("postgresql://h/db?nosuchparam=1", ca_path, &out, &err),
                  &err);
}

static void database_tls_required_reads_the_sslmode(void **state)
{
    (void)state;
    assert_true(hd_store_tls_required("postgresql://h/db?sslmode=require"));
    assert_true(hd_store_tls_required("postgresql://h/db?sslmode=verify-ca"));
    assert_false(hd_store_tls_required("postgresql://h/db?sslmode=prefer"));
    assert_false(hd_store_tls_required("postgresql://h/db"));
    assert_false(hd_store_tls_required(NULL));
}

static void config_rewrites_both_database_urls(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    assert_non_null(cfg);
    hd_error err;
    /* Without the CA file nothing changes. */
    assert_int_equal(hd_config_set(cfg, "HD_DATABASE_URL", "postgresql://w/db"), 0);
    assert_hd_err(0, hd_config_apply_database_tls(cfg, &err), &err);
    assert_string_equal(hd_config_get(cfg, "HD_DATABASE_URL", ""), "postgresql://w/db");
    assert_int_equal(hd_config_set(cfg, "HD_DATABASE_READ_URL", "postgresql://r/db"), 0);
    assert_int_equal(hd_config_set(cfg, "HD_DATABASE_CA_FILE", ca_path), 0);
    assert_hd_err(0, hd_config_apply_database_tls(cfg, &err), &err);
    assert_true(hd_store_tls_required(hd_config_get(cfg, "HD_DATABASE_URL", "")));
    assert_true(hd_store_tls_required(hd_config_get(cfg, "HD_DATABASE_READ_URL", "")));
    assert_non_null(strstr(hd_config_get(cfg, "HD_DATABASE_READ_URL", ""), "postgresql://r/db?"));
    hd_config_free(cfg);
}

/* ---- SMTP ------------------------------------------------------------------------------ */

static void smtp_tls_setting_is_parsed(void **state)
{
    (void)state;
    hd_smtp_starttls t;
    hd_error err;
    assert_hd_err(0, hd_smtp_starttls_parse("required", &t, &err), &err);
    assert_int_equal(t, HD_SMTP_STARTTLS_REQUIRED);
    assert_hd_err(0, hd_smtp_starttls_parse("OFF", &t, &err), &err);
    assert_int_equal(t, HD_SMTP_STARTTLS_OFF);
    assert_hd_err(0, hd_smtp_starttls_parse("auto", &t, &err), &err);
    assert_int_equal(t, HD_SMTP_STARTTLS_AUTO);
    assert_hd_err(0, hd_smtp_starttls_parse("", &t, &err), &err);
    assert_int_equal(t, HD_SMTP_STARTTLS_AUTO);
    assert_hd_err(HD_ECONFIG, hd_smtp_starttls_parse("yes", &t, &err), &err);
    expect_text(&err, "HD_SMTP_TLS: 'yes'");

    hd_config *cfg = hd_config_new_empty();
    assert_non_null(cfg);
    hd_sender_smtp_options o = {0};
    assert_hd_err(0, hd_config_smtp_tls(cfg, &o, &err), &err);
    assert_int_equal(o.starttls, HD_SMTP_STARTTLS_AUTO);
    assert_null(o.ca_file);
    assert_int_equal(hd_config_set(cfg, "HD_SMTP_TLS", "required"), 0);
    assert_int_equal(hd_config_set(cfg, "HD_SMTP_CA_FILE", ca_path), 0);
    assert_hd_err(0, hd_config_smtp_tls(cfg, &o, &err), &err);
    assert_int_equal(o.starttls, HD_SMTP_STARTTLS_REQUIRED);
    assert_string_equal(o.ca_file, ca_path);
    hd_config_free(cfg);
}

static void smtp_sender_refuses_contradictions(void **state)
{
    (void)state;
    hd_sender *s = NULL;
    hd_error err;
    hd_sender_smtp_options off = {.starttls = HD_SMTP_STARTTLS_OFF};
    assert_hd_err(HD_ECONFIG,
                  hd_sender_smtp_new_with("smtp://u:pw@h:587", "a@example.com", &off, &s, &err),
                  &err);
    expect_text(&err, "password");
    assert_hd_err(HD_ECONFIG, hd_sender_smtp_new_with("smtps://h", "a@example.com", &off, &s, &err),
                  &err);
    assert_null(s);
    hd_sender_smtp_options bad_ca = {.ca_file = "/nonexistent/ca.crt"};
    assert_hd_err(HD_ECONFIG,
                  hd_sender_smtp_new_with("smtp://h", "a@example.com", &bad_ca, &s, &err), &err);
    expect_text(&err, "HD_SMTP_CA_FILE");
    hd_sender_smtp_options req = {.starttls = HD_SMTP_STARTTLS_REQUIRED, .ca_file = ca_path};
    assert_hd_err(0, hd_sender_smtp_new_with("smtp://h:25", "a@example.com", &req, &s, &err), &err);
    assert_string_equal(hd_sender_name(s), "smtp");
    hd_sender_free(s);
    /* The start-up check is for SMTP senders only. */
    assert_hd_err(0, hd_sender_memory_new(0, &s), NULL);
    assert_hd_err(HD_EINVAL, hd_sender_smtp_check(s, &err), &err);
    hd_sender_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(amqp_ca_file_with_amqps_is_taken),
        cmocka_unit_test(amqp_ca_file_with_plain_amqp_is_refused),
        cmocka_unit_test(amqp_client_certificate_needs_its_key),
        cmocka_unit_test(amqp_unreadable_file_is_named),
        cmocka_unit_test(amqp_open_with_a_missing_ca_file_fails_before_connecting),
        cmocka_unit_test(database_url_gets_verify_full_and_the_ca),
        cmocka_unit_test(database_ca_path_is_percent_encoded),
        cmocka_unit_test(database_weaker_sslmode_or_other_root_is_refused),
        cmocka_unit_test(database_tls_required_reads_the_sslmode),
        cmocka_unit_test(config_rewrites_both_database_urls),
        cmocka_unit_test(smtp_tls_setting_is_parsed),
        cmocka_unit_test(smtp_sender_refuses_contradictions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
