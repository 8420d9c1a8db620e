/* Unit tests for herald/amqp.h without a broker: URL parsing, password redaction, the
 * mapping of librabbitmq replies to herald errors, and a refused connection. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/amqp.h"

static void full_url_is_taken_apart(void **state)
{
    (void)state;
    hd_amqp_url u;
    hd_error err;
    assert_hd_err(0, hd_amqp_url_parse("amqp://alice:s3cret@broker.example:5673/orders", &u, &err),
                  &err);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "broker.example");
    assert_int_equal(u.port, 5673);
    assert_string_equal(u.vhost, "orders");
    assert_int_equal(u.tls, 0);
}

static void defaults_are_rabbitmqs(void **state)
{
    (void)state;
    hd_amqp_url u;
    assert_hd(0, hd_amqp_url_parse("amqp://", &u, NULL));
    assert_string_equal(u.user, "guest");
    assert_string_equal(u.password, "guest");
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.vhost, "/");

    assert_hd(0, hd_amqp_url_parse("amqps://u:p@h", &u, NULL));
    assert_int_equal(u.port, 5671);
    assert_int_equal(u.tls, 1);
}

static void empty_path_means_the_default_vhost(void **state)
{
    (void)state;
    hd_amqp_url u;
    /* The form servers.sh exports. */
    assert_hd(0, hd_amqp_url_parse("amqp://guest:guest@127.0.0.1:5672/", &u, NULL));
    assert_string_equal(u.vhost, "/");
    assert_hd(0, hd_amqp_url_parse("amqp://h/%2f", &u, NULL));
    assert_string_equal(u.vhost, "/");
}

static void percent_escapes_are_decoded(void **state)
{
    (void)state;
    hd_amqp_url u;
    assert_hd(0, hd_amqp_url_parse("amqp://u%40x:p%3aq@[::1]:5/v%2fx", &u, NULL));
    assert_string_equal(u.user, "u@x");
    assert_string_equal(u.password, "p:q");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5);
    assert_string_equal(u.vhost, "v/x");
}

static void bad_urls_are_herald_eurl(void **state)
{
    (void)state;
    const char *bad[] = {"http://h/", "amqp://h:99999/", "amqp://h/a/b", "h:5672",
                         "",          "amqp://h:port/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_amqp_url u;
        hd_error err;
        assert_hd_err(HD_EURL, hd_amqp_url_parse(bad[i], &u, &err), &err);
        assert_int_equal(err.code, HD_EURL);
    }
    hd_error err;
    assert_hd(HD_EURL, hd_amqp_url_parse(NULL, &(hd_amqp_url){0}, &err));
}

static void errors_never_show_the_password(void **state)
{
    (void)state;
    hd_amqp_url u;
    hd_error err;
    /* A URL that parses but is refused (port 0) is shown redacted, which helps... */
    assert_hd(HD_EURL, hd_amqp_url_parse("amqp://bob:hunter2@h:0/", &u, &err));
    assert_null(strstr(err.text, "hunter2"));
    assert_non_null(strstr(err.text, "bob:***@h"));
    /* ...one that does not parse (librabbitmq refuses port 70000) is not shown at all. */
    assert_hd(HD_EURL, hd_amqp_url_parse("amqp://bob:hunter2@h:70000/", &u, &err));
    assert_null(strstr(err.text, "hunter2"));
    assert_null(strstr(err.text, "bob"));
}

static void redaction(void **state)
{
    (void)state;
    char out[128];
    hd_amqp_url_redact("amqp://guest:guest@127.0.0.1:5672/", out, sizeof out);
    assert_string_equal(out, "amqp://guest:***@127.0.0.1:5672/");
    hd_amqp_url_redact("amqp://h:5672/v", out, sizeof out); /* no userinfo: unchanged */
    assert_string_equal(out, "amqp://h:5672/v");
    hd_amqp_url_redact("amqp://onlyuser@h/", out, sizeof out); /* no password: unchanged */
    assert_string_equal(out, "amqp://onlyuser@h/");
    /* Up to the LAST '@' of the whole URL: an '@' in the vhost masks the host too (the safe
     * mistake), since the URL alone cannot tell it from an '@' in the password. */
    hd_amqp_url_redact("amqps://a:b@c@h/x@y", out, sizeof out);
    assert_string_equal(out, "amqps://a:***@y");
    hd_amqp_url_redact("amqp://a:b@h/", out, 8); /* truncated, still terminated */
    assert_int_equal(strlen(out), 7);
}

static void a_slash_in_the_password_is_redacted(void **state)
{
    (void)state;
    char out[128];
    /* The '/' used to end the userinfo early: everything after it was printed. */
    hd_amqp_url_redact("amqp://bob:pa/ss@h:5672/", out, sizeof out);
    assert_string_equal(out, "amqp://bob:***@h:5672/");
    hd_amqp_url_redact("amqp://bob:a/b@c/d@h/v", out, sizeof out);
    assert_string_equal(out, "amqp://bob:***@h/v");
    assert_null(strstr(out, "a/b"));
    hd_amqp_url_redact("amqp://bob:p?q#r@h/", out, sizeof out);
    assert_string_equal(out, "amqp://bob:***@h/");
}

static void an_unparseable_url_is_never_printed(void **state)
{
    (void)state;
    const char *bad[] = {"amqp://bob:Kx/Zq@h:5672/", "amqp://bob:Kx@Zq@h/", "amqp://bob:Kx#Zq@h/",
                         "amqp://bob:Kx Zq@h:port/", "xyz://bob:KxZq@h/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_amqp_url u;
        hd_error err;
        assert_hd_err(HD_EURL, hd_amqp_url_parse(bad[i], &u, &err), &err);
        assert_null(strstr(err.text, "Kx")); /* no piece of the password */
        assert_null(strstr(err.text, "Zq"));
        assert_null(strstr(err.text, "bob"));
        assert_null(strstr(err.text, "h:5672"));
        assert_non_null(strstr(err.text, "not shown"));
    }
    /* hd_amqp_open reports the same, without connecting. */
    hd_amqp *a = (hd_amqp *)1;
    hd_error err;
    assert_hd(HD_EURL, hd_amqp_open("amqp://bob:Kx/Zq@h:5672/", NULL, &a, &err));
    assert_null(a);
    assert_null(strstr(err.text, "Kx"));
    assert_null(strstr(err.text, "Zq"));
}

/* Found by tests/fuzz/fuzz_amqp_url.c: a raw '/' in the password ended the userinfo early,
 * so neither the redactor nor the parse error (which shows the redacted URL) hid it. */
static void redaction_of_a_password_with_a_slash(void **state)
{
    (void)state;
    char out[128];
    hd_amqp_url_redact("amqp://user:pa/ss!word@host/", out, sizeof out);
    assert_string_equal(out, "amqp://user:***@host/");
    hd_amqp_url u;
    hd_error err;
    assert_hd(HD_EURL, hd_amqp_url_parse("amqp://user:pa/ss!word@host/", &u, &err));
    assert_null(strstr(err.text, "pa/ss!word"));
    assert_null(strstr(err.text, "ss!word"));
}

/* Found by tests/fuzz/fuzz_amqp_url.c: empty brackets gave an empty host name. */
static void empty_host_is_refused(void **state)
{
    (void)state;
    hd_amqp_url u;
    hd_error err;
    assert_hd(HD_EURL, hd_amqp_url_parse("amqp://[]:5672/", &u, &err));
    assert_non_null(strstr(err.text, "empty host"));
    assert_hd(HD_OK, hd_amqp_url_parse("amqp://:5672/", &u, &err)); /* no host: localhost */
    assert_string_equal(u.host, "localhost");
}

/* ---- reply mapping ---------------------------------------------------------------------- */

static amqp_rpc_reply_t library(int status)
{
    amqp_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    r.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION;
    r.library_error = status;
    return r;
}

static void normal_reply_is_ok(void **state)
{
    (void)state;
    amqp_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    r.reply_type = AMQP_RESPONSE_NORMAL;
    int closed = -1;
    assert_hd(0, hd_amqp_reply_error(r, "x", &closed, NULL));
    assert_int_equal(closed, 0);
}

static void channel_close_is_eamqp_with_the_brokers_text(void **state)
{
    (void)state;
    static const char text[] =
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/'";
    amqp_channel_close_t m = {.reply_code = 406,
                              .reply_text = {.len = sizeof text - 1, .bytes = (void *)text}};
    amqp_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
    r.reply.id = AMQP_CHANNEL_CLOSE_METHOD;
    r.reply.decoded = &m;
    int closed = 0;
    hd_error err;
    assert_hd(HD_EAMQP, hd_amqp_reply_error(r, "declare queue 'q'", &closed, &err));
    assert_int_equal(closed, 1);
    assert_string_equal(err.text, "declare queue 'q': 406 PRECONDITION_FAILED - inequivalent "
                                  "arg 'durable' for queue 'q' in vhost '/'");
}

static void connection_close_is_eclosed(void **state)
{
    (void)state;
    static const char text[] = "CONNECTION_FORCED - broker forced connection closure";
    amqp_connection_close_t m = {.reply_code = 320,
                                 .reply_text = {.len = sizeof text - 1, .bytes = (void *)text}};
    amqp_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
    r.reply.id = AMQP_CONNECTION_CLOSE_METHOD;
    r.reply.decoded = &m;
    int closed = 0;
    hd_error err;
    assert_hd(HD_ECLOSED, hd_amqp_reply_error(r, "publish", &closed, &err));
    assert_int_equal(closed, 2);
    assert_non_null(strstr(err.text, "320 CONNECTION_FORCED"));
}

static void library_errors(void **state)
{
    (void)state;
    int closed = 0;
    hd_error err;
    assert_hd(HD_ETIMEOUT, hd_amqp_reply_error(library(AMQP_STATUS_TIMEOUT), "rpc", &closed, &err));
    assert_int_equal(closed, 2); /* a late reply would be mistaken for the next one's */
    assert_hd(HD_ECLOSED,
              hd_amqp_reply_error(library(AMQP_STATUS_SOCKET_ERROR), "rpc", &closed, &err));
    assert_int_equal(closed, 2);
    assert_hd(HD_ECLOSED,
              hd_amqp_reply_error(library(AMQP_STATUS_HEARTBEAT_TIMEOUT), "rpc", &closed, &err));
    assert_hd(HD_ECLOSED,
              hd_amqp_reply_error(library(AMQP_STATUS_CONNECTION_CLOSED), "rpc", &closed, &err));
    assert_hd(HD_EAMQP,
              hd_amqp_reply_error(library(AMQP_STATUS_TABLE_TOO_BIG), "rpc", &closed, &err));
    assert_int_equal(closed, 0);
    assert_non_null(strstr(err.text, "rpc: "));

    amqp_rpc_reply_t none;
    memset(&none, 0, sizeof none);
    none.reply_type = AMQP_RESPONSE_NONE;
    assert_hd(HD_EAMQP, hd_amqp_reply_error(none, NULL, NULL, NULL));
}

/* ---- connecting where nothing listens ---------------------------------------------------- */

static void refused_connection_is_econnect(void **state)
{
    (void)state;
    hd_amqp *a = (hd_amqp *)1;
    hd_error err;
    /* Port 1 on loopback: nothing listens there, the kernel refuses at once. */
    hd_amqp_options o = {.connect_timeout_ms = 2000};
    assert_hd_err(HD_ECONNECT, hd_amqp_open("amqp://u:pw@127.0.0.1:1/", &o, &a, &err), &err);
    assert_null(a);
    assert_non_null(strstr(err.text, "127.0.0.1:1"));
    assert_hd(HD_EURL, hd_amqp_open("nonsense", NULL, &a, &err));
    assert_null(a);
    hd_amqp_close(NULL); /* NULL is fine */
}

/* ---- lists of nodes (a cluster) ------------------------------------------------------- */

static void a_list_is_taken_apart_in_order(void **state)
{
    (void)state;
    hd_amqp_url u[HD_AMQP_URLS_MAX];
    hd_error err;
    int n = hd_amqp_url_list_parse("amqp://a:pa@n1:5683/,amqp://a:pa@n2:5693/v, amqps://b:pb@n3/",
                                   u, HD_AMQP_URLS_MAX, &err);
    assert_int_equal(n, 3);
    assert_string_equal(u[0].host, "n1");
    assert_int_equal(u[0].port, 5683);
    assert_string_equal(u[1].host, "n2");
    assert_string_equal(u[1].vhost, "v");
    assert_string_equal(u[2].host, "n3"); /* blanks after the comma are ignored */
    assert_int_equal(u[2].port, 5671);
    assert_int_equal(u[2].tls, 1);
    assert_string_equal(u[2].password, "pb");
    /* one URL is a list of one, with the same parse */
    assert_int_equal(hd_amqp_url_list_parse("amqp://h:1/", u, 1, &err), 1);
    assert_int_equal(u[0].port, 1);
}

static void a_comma_in_a_password_does_not_cut_the_list(void **state)
{
    (void)state;
    hd_amqp_url u[4];
    hd_error err;
    /* cut only before "amqp://" or "amqps://" */
    assert_int_equal(hd_amqp_url_list_parse("amqp://u:p,w@h1/,amqp://u:p,w@h2/", u, 4, &err), 2);
    assert_string_equal(u[0].password, "p,w");
    assert_string_equal(u[1].password, "p,w");
    assert_string_equal(u[1].host, "h2");
}

static void bad_lists_are_herald_eurl(void **state)
{
    (void)state;
    hd_amqp_url u[2];
    hd_error err;
    assert_hd_err(HD_EURL, hd_amqp_url_list_parse("amqp://h1/,amqp://h2/,amqp://h3/", u, 2, &err),
                  &err);
    assert_non_null(strstr(err.text, "more than 2"));
    assert_hd_err(
        HD_EURL,
        hd_amqp_url_list_parse("amqp://u:secret1@h1/,amqp://u:secret2@h2:99999/", u, 2, &err),
        &err);
    assert_non_null(strstr(err.text, "URL 2"));
    assert_null(strstr(err.text, "secret"));
    assert_hd(HD_EURL, hd_amqp_url_list_parse(NULL, u, 2, &err));
    /* one bad URL: the message of hd_amqp_url_parse, unchanged */
    hd_error one;
    hd_amqp_url_parse("amqp://bob:hunter2@h:0/", u, &one);
    assert_hd(HD_EURL, hd_amqp_url_list_parse("amqp://bob:hunter2@h:0/", u, 2, &err));
    assert_string_equal(err.text, one.text);
}

static void a_list_is_redacted_url_by_url(void **state)
{
    (void)state;
    char out[600];
    hd_amqp_url_redact("amqp://g:s1@h1:1/,amqp://g:s2@h2:2/, amqps://h3/", out, sizeof out);
    assert_string_equal(out, "amqp://g:***@h1:1/,amqp://g:***@h2:2/,amqps://h3/");
    /* a password with a comma stays one password */
    hd_amqp_url_redact("amqp://g:se,cret@h1/,amqp://g:se,cret@h2/", out, sizeof out);
    assert_string_equal(out, "amqp://g:***@h1/,amqp://g:***@h2/");
    /* a piece without '@' that is no URL may be half a password: masked */
    hd_amqp_url_redact("amqp://u:hunt!er,amqp://x@h/", out, sizeof out);
    assert_null(strstr(out, "hunt"));
    assert_string_equal(out, "amqp://***,amqp://x@h/");
    /* ... also when it parses: "12,amqp://p!w" may be one password */
    hd_amqp_url_redact("amqp://u:12,amqp://p!w@h/", out, sizeof out);
    assert_null(strstr(out, "12,amqp://p!w"));
    assert_string_equal(out, "amqp://***,amqp://p!w@h/");
    /* a list of URLs without credentials stays readable */
    hd_amqp_url_redact("amqp://h1:5683/,amqp://h2:5693/", out, sizeof out);
    assert_string_equal(out, "amqp://h1:5683/,amqp://h2:5693/");
    /* truncated, still terminated */
    hd_amqp_url_redact("amqp://g:s1@h1:1/,amqp://g:s2@h2:2/", out, 20);
    assert_true(strlen(out) < 20);
    assert_null(strstr(out, "s1"));
}

static void a_list_where_no_node_answers_names_the_last(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    hd_error err;
    hd_amqp_options o = {.connect_timeout_ms = 500};
    assert_hd_err(HD_ECONNECT,
                  hd_amqp_open("amqp://u:pw@127.0.0.1:1/,amqp://u:pw@127.0.0.1:2/", &o, &a, &err),
                  &err);
    assert_null(a);
    assert_non_null(strstr(err.text, "none of the 2 brokers"));
    assert_non_null(strstr(err.text, "127.0.0.1:2"));
    assert_null(strstr(err.text, "pw"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_url_is_taken_apart),
        cmocka_unit_test(defaults_are_rabbitmqs),
        cmocka_unit_test(empty_path_means_the_default_vhost),
        cmocka_unit_test(percent_escapes_are_decoded),
        cmocka_unit_test(bad_urls_are_herald_eurl),
        cmocka_unit_test(errors_never_show_the_password),
        cmocka_unit_test(redaction),
        cmocka_unit_test(a_slash_in_the_password_is_redacted),
        cmocka_unit_test(an_unparseable_url_is_never_printed),
        cmocka_unit_test(redaction_of_a_password_with_a_slash),
        cmocka_unit_test(empty_host_is_refused),
        cmocka_unit_test(normal_reply_is_ok),
        cmocka_unit_test(channel_close_is_eamqp_with_the_brokers_text),
        cmocka_unit_test(connection_close_is_eclosed),
        cmocka_unit_test(library_errors),
        cmocka_unit_test(refused_connection_is_econnect),
        cmocka_unit_test(a_list_is_taken_apart_in_order),
        cmocka_unit_test(a_comma_in_a_password_does_not_cut_the_list),
        cmocka_unit_test(bad_lists_are_herald_eurl),
        cmocka_unit_test(a_list_is_redacted_url_by_url),
        cmocka_unit_test(a_list_where_no_node_answers_names_the_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
