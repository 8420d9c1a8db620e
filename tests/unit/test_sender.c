/* Unit tests for herald/sender.h: mail validation, the MIME message, the log sender and the
 * memory test double. No server: the SMTP sender's delivery is tested in
 * tests/integration/test_sender_smtp.c; here only its TLS choice, against a scripted
 * in-process SMTP peer on loopback that offers STARTTLS and then refuses it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/sender.h"

#define DATE_MS 1795406706789LL /* 2026-11-23T04:05:06.789Z, a Monday */

static hd_mail sample_mail(void)
{
    return (hd_mail){
        .from = "noreply@herald.example",
        .to = "alice@example.com",
        .subject = "Confirm your e-mail address",
        .html =
            "<p>Hello Alice,</p>\n<p><a href=\"https://app.example/v?token=SECRET\">go</a></p>\n",
        .text = "Hello Alice,\n\nhttps://app.example/v?token=SECRET\n",
        .correlation_id = "6f1c2a4e-0000-4000-8000-000000000001",
    };
}

/* ---- decoders, to check the encodings by round trip ------------------------------------ */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decode quoted-printable s[0..n): soft breaks vanish, CRLF stays CRLF. New string. */
static char *qp_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (s[i] == '=') {
            assert_true(i + 2 < n);
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            assert_true(hi >= 0 && lo >= 0);
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static size_t b64_decode(const char *s, size_t n, unsigned char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(tab, s[i]);
        assert_non_null(p);
        v = (v << 6) | (unsigned)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    return o;
}

/* Decode an RFC 2047 Subject header value made of =?UTF-8?B?...?= words. New string. */
static char *subject_decode(const char *value)
{
    char *out = calloc(1, strlen(value) + 1);
    size_t o = 0;
    const char *p = value;
    while ((p = strstr(p, "=?UTF-8?B?")) != NULL) {
        p += 10;
        const char *end = strstr(p, "?=");
        assert_non_null(end);
        o += b64_decode(p, (size_t)(end - p), (unsigned char *)out + o);
        p = end + 2;
    }
    return out;
}

/* The value of header name (unfolded), new; NULL when absent. Headers end at the blank line. */
static char *header(const char *msg, const char *name)
{
    const char *end = strstr(msg, "\r\n\r\n");
    size_t nl = strlen(name);
    for (const char *line = msg; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            char *out = calloc(1, (size_t)(end - v) + 1);
            size_t o = 0;
            /* Unfold: a CRLF followed by a space continues the header. */
            while (v < end + 2) {
                if (v[0] == '\r' && v[1] == '\n') {
                    if (v[2] != ' ' && v[2] != '\t')
                        break;
                    v += 2;
                    continue;
                }
                out[o++] = *v++;
            }
            return out;
        }
    }
    return NULL;
}

/* The decoded body of the part whose Content-Type starts with type. New string. */
static char *part_body(const char *msg, const char *boundary, const char *type)
{
    char want[128];
    snprintf(want, sizeof want, "Content-Type: %s", type);
    const char *ct = strstr(msg, want);
    assert_non_null(ct);
    const char *body = strstr(ct, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    char delim[128];
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    const char *end = strstr(body, delim);
    assert_non_null(end);
    return qp_decode(body, (size_t)(end - body));
}

static char *lf_to_crlf(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1);
    size_t o = 0;
    for (; *s; s++) {
        if (*s == '\n')
            out[o++] = '\r';
        out[o++] = *s;
    }
    out[o] = '\0';
    return out;
}

/* Every line ends with CRLF and none is longer than max (but lines starting with skip). */
static void assert_lines(const char *msg, size_t max, const char *skip)
{
    const char *line = msg;
    while (*line) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl); /* the message ends with a line break */
        assert_true(nl > line && nl[-1] == '\r');
        size_t len = (size_t)(nl - 1 - line);
        if (len > max && !(skip && strncmp(line, skip, strlen(skip)) == 0))
            fail_msg("line of %zu characters: %.60s...", len, line);
        line = nl + 1;
    }
}

/* ---- the message ----------------------------------------------------------------------- */

static void formats_a_multipart_alternative_message(void **state)
{
    (void)state;
    hd_mail m = sample_mail();
    char *msg = NULL;
    size_t len = 0;
    hd_error err;
    assert_hd_err(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &msg, &len, &err), &err);
    assert_int_equal(len, strlen(msg));
    assert_lines(msg, 78, NULL);

    char *v = header(msg, "Date");
    assert_string_equal(v, "Mon, 23 Nov 2026 04:05:06 +0000");
    free(v);
    v = header(msg, "From");
    assert_string_equal(v, "noreply@herald.example");
    free(v);
    v = header(msg, "To");
    assert_string_equal(v, "alice@example.com");
    free(v);
    v = header(msg, "Subject");
    assert_string_equal(v, "Confirm your e-mail address");
    free(v);
    v = header(msg, "X-Correlation-Id");
    assert_string_equal(v, "6f1c2a4e-0000-4000-8000-000000000001");
    free(v);
    v = header(msg, "MIME-Version");
    assert_string_equal(v, "1.0");
    free(v);
    v = header(msg, "Message-ID");
    assert_true(v[0] == '<' && v[strlen(v) - 1] == '>');
    assert_non_null(strstr(v, "@herald.example>"));
    free(v);

    /* The boundary is announced once, then delimits text (first) and html (last). */
    v = header(msg, "Content-Type");
    assert_true(strncmp(v, "multipart/alternative; boundary=\"=_herald_", 42) == 0);
    char boundary[80];
    const char *b = strchr(v, '"') + 1;
    snprintf(boundary, sizeof boundary, "%.*s", (int)(strchr(b, '"') - b), b);
    free(v);
    char delim[200];
    snprintf(delim, sizeof delim, "\r\n--%s\r\nContent-Type: text/plain; charset=UTF-8", boundary);
    const char *text_at = strstr(msg, delim);
    snprintf(delim, sizeof delim, "\r\n--%s\r\nContent-Type: text/html; charset=UTF-8", boundary);
    const char *html_at = strstr(msg, delim);
    assert_non_null(text_at);
    assert_non_null(html_at);
    assert_true(text_at < html_at);
    snprintf(delim, sizeof delim, "\r\n--%s--\r\n", boundary);
    assert_non_null(strstr(msg, delim));
    assert_int_equal(strlen(strstr(msg, delim)), strlen(delim)); /* the close is the end */

    /* The bodies come back byte for byte (their LF line breaks become CRLF on the wire). */
    char *text = part_body(msg, boundary, "text/plain");
    char *want = lf_to_crlf(m.text);
    assert_string_equal(text, want);
    free(want);
    free(text);
    char *html = part_body(msg, boundary, "text/html");
    want = lf_to_crlf(m.html);
    assert_string_equal(html, want);
    free(want);
    free(html);
    free(msg);

    /* The default from applies when the mail has none. */
    m.from = NULL;
    assert_hd(HD_OK, hd_mail_format(&m, "robot@herald.example", DATE_MS, &msg, NULL, NULL));
    v = header(msg, "From");
    assert_string_equal(v, "robot@herald.example");
    free(v);
    free(msg);
    assert_hd(HD_EINVAL, hd_mail_format(&m, NULL, DATE_MS, &msg, NULL, NULL));
}

static void quoted_printable_keeps_any_body_within_line_limits(void **state)
{
    (void)state;
    /* A 3000-character line, "=" signs, trailing spaces, UTF-8, a lone CR, dots. */
    size_t n = 3000;
    char *big = malloc(n + 200);
    memset(big, 'a', n);
    strcpy(big + n, "\n= x=y \nGr\u00fc\u00dfe\tend\t\nlone\rcr\n.\n..dots\r\nlast line no break");
    hd_mail m = sample_mail();
    m.text = big;
    m.html = "";
    char *msg = NULL;
    assert_hd(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &msg, NULL, NULL));
    assert_lines(msg, 78, NULL);
    assert_null(strstr(msg, "end\t\r\n")); /* trailing white space is encoded (=09) */
    assert_non_null(strstr(msg, "=3D x=3Dy=20\r\n"));
    assert_non_null(strstr(msg, "Gr=C3=BC=C3=9Fe\tend=09\r\n"));
    assert_non_null(strstr(msg, "lone=0Dcr\r\n"));
    char *v = header(msg, "Content-Type");
    const char *b = strchr(v, '"') + 1;
    char boundary[80];
    snprintf(boundary, sizeof boundary, "%.*s", (int)(strchr(b, '"') - b), b);
    free(v);
    char *text = part_body(msg, boundary, "text/plain");
    /* Expected: the input with LF and CRLF as CRLF, the lone CR kept. */
    char *want = malloc(strlen(big) * 2 + 1);
    size_t o = 0;
    for (const char *c = big; *c; c++) {
        if (c[0] == '\r' && c[1] == '\n')
            continue;
        if (*c == '\n')
            want[o++] = '\r';
        want[o++] = *c;
    }
    want[o] = '\0';
    assert_string_equal(text, want);
    free(want);
    free(text);
    free(msg);
    free(big);
}

static void subject_is_encoded_when_not_short_ascii(void **state)
{
    (void)state;
    const char *subjects[] = {
        "Gr\u00fc\u00dfe aus K\u00f6ln \u2713", /* Grüße aus Köln ✓ (UTF-8) */
        "An ASCII subject that is much too long to fit on one header line of seventy-eight "
        "characters, so it is folded",
        "Looks like =?UTF-8?B?SGk=?= an encoded word",
        /* 30 three-byte characters: words must not split one. */
        "\u2713\u2713\u2713\u2713\u2713\u2713\u2713"
        "\u2713\u2713\u2713\u2713\u2713\u2713\u2713"
        "\u2713\u2713\u2713\u2713\u2713\u2713\u2713"
        "\u2713\u2713\u2713\u2713\u2713\u2713\u2713"
        "\u2713\u2713",
    };
    for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++) {
        hd_mail m = sample_mail();
        m.subject = subjects[i];
        char *msg = NULL;
        assert_hd(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &msg, NULL, NULL));
        assert_lines(msg, 78, NULL);
        char *v = header(msg, "Subject");
        assert_true(strncmp(v, "=?UTF-8?B?", 10) == 0);
        char *decoded = subject_decode(v);
        assert_string_equal(decoded, subjects[i]);
        /* Each word decodes to whole characters: no word ends on a UTF-8 lead byte. */
        for (const char *w = strstr(v, "=?UTF-8?B?"); w; w = strstr(w + 1, "=?UTF-8?B?")) {
            unsigned char bytes[64];
            size_t k = b64_decode(w + 10, (size_t)(strstr(w + 10, "?=") - (w + 10)), bytes);
            assert_true(k > 0);
            assert_true((bytes[k - 1] & 0xc0) != 0xc0);
        }
        free(decoded);
        free(v);
        free(msg);
    }
}

static void message_id_is_kept_or_made(void **state)
{
    (void)state;
    hd_mail m = sample_mail();
    const char *given[] = {"notification-42@herald.example", "<notification-42@herald.example>"};
    for (size_t i = 0; i < 2; i++) {
        m.message_id = given[i];
        char *msg = NULL;
        assert_hd(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &msg, NULL, NULL));
        char *v = header(msg, "Message-ID");
        assert_string_equal(v, "<notification-42@herald.example>");
        free(v);
        free(msg);
    }
    /* Two mails without an id get different ids. */
    m.message_id = NULL;
    m.correlation_id = NULL;
    char *a = NULL, *b = NULL;
    assert_hd(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &a, NULL, NULL));
    assert_hd(HD_OK, hd_mail_format(&m, NULL, DATE_MS, &b, NULL, NULL));
    char *ida = header(a, "Message-ID"), *idb = header(b, "Message-ID");
    assert_string_not_equal(ida, idb);
    assert_null(header(a, "X-Correlation-Id"));
    free(ida);
    free(idb);
    free(a);
    free(b);
}

static void header_injection_and_bad_mails_are_refused(void **state)
{
    (void)state;
    struct {
        const char *field;
        const char *value;
    } bad[] = {
        {"to", "alice@example.com\r\nBcc: all@example.com"},
        {"to", "alice@example.com>\r\nRCPT TO:<x@y.z"},
        {"to", "Alice <alice@example.com>"},
        {"to", "no-at-sign"},
        {"to", "a@b@c"},
        {"to", "@example.com"},
        {"to", NULL},
        {"from", "x@y.z, z@y.x"},
        {"subject", "Hi\r\nBcc: all@example.com"},
        {"subject", "Hi\nthere"},
        {"subject", NULL},
        {"html", NULL},
        {"text", NULL},
        {"message_id", "<a b@c>"},
        {"message_id", ""},
        {"correlation_id", "abc\r\nX-Evil: 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_mail m = sample_mail();
        if (strcmp(bad[i].field, "to") == 0)
            m.to = bad[i].value;
        else if (strcmp(bad[i].field, "from") == 0)
            m.from = bad[i].value;
        else if (strcmp(bad[i].field, "subject") == 0)
            m.subject = bad[i].value;
        else if (strcmp(bad[i].field, "html") == 0)
            m.html = bad[i].value;
        else if (strcmp(bad[i].field, "text") == 0)
            m.text = bad[i].value;
        else if (strcmp(bad[i].field, "message_id") == 0)
            m.message_id = bad[i].value;
        else
            m.correlation_id = bad[i].value;
        hd_error err;
        char *msg = NULL;
        assert_hd_err(HD_EINVAL, hd_mail_validate(&m, &err), &err);
        assert_non_null(strstr(err.text, bad[i].field));
        /* Values are personal data: never in the error text. */
        if (bad[i].value != NULL && *bad[i].value)
            assert_null(strstr(err.text, bad[i].value));
        assert_hd(HD_EINVAL, hd_mail_format(&m, NULL, DATE_MS, &msg, NULL, NULL));
        assert_null(msg);
    }
    assert_hd(HD_EINVAL, hd_mail_validate(NULL, NULL));
    assert_true(hd_mail_address_valid("a.b+tag@sub.example.com"));
    assert_false(hd_mail_address_valid("a@"));
    assert_false(hd_mail_address_valid("a b@example.com"));
    assert_false(hd_mail_address_valid("j\u00f6rg@example.com")); /* no SMTPUTF8 */
}

/* ---- the senders --------------------------------------------------------------------- */

static void memory_sender_fails_first_n_then_keeps_copies(void **state)
{
    (void)state;
    hd_sender *s = NULL;
    assert_hd(HD_OK, hd_sender_memory_new(2, &s));
    assert_string_equal(hd_sender_name(s), "memory");
    hd_mail m = sample_mail();
    hd_error err;
    assert_hd_err(HD_ESMTP, hd_sender_send(s, &m, &err), &err);
    assert_non_null(strstr(err.text, "simulated failure (attempt 1)"));
    assert_hd(HD_ESMTP, hd_sender_send(s, &m, NULL));
    assert_int_equal(hd_sender_memory_count(s), 0);
    {
        /* The kept mail is a copy: the caller's buffers may change or go. */
        char subject[] = "Temporary subject";
        m.subject = subject;
        assert_hd(HD_OK, hd_sender_send(s, &m, NULL));
        strcpy(subject, "XXXXXXXXXXXXXXXXX");
    }
    assert_int_equal(hd_sender_memory_attempts(s), 3);
    assert_int_equal(hd_sender_memory_count(s), 1);
    const hd_mail *kept = hd_sender_memory_mail(s, 0);
    assert_non_null(kept);
    assert_string_equal(kept->subject, "Temporary subject");
    assert_string_equal(kept->to, "alice@example.com");
    assert_string_equal(kept->text, sample_mail().text);
    assert_string_equal(kept->correlation_id, sample_mail().correlation_id);
    assert_null(kept->message_id);
    assert_null(hd_sender_memory_mail(s, 1));

    /* Re-armed: "always fails" for the retries-exhausted path. */
    hd_sender_memory_fail_next(s, -1);
    m = sample_mail();
    for (int i = 0; i < 5; i++)
        assert_hd(HD_ESMTP, hd_sender_send(s, &m, NULL));
    hd_sender_memory_fail_next(s, 0);
    assert_hd(HD_OK, hd_sender_send(s, &m, NULL));
    assert_int_equal(hd_sender_memory_attempts(s), 9);
    assert_int_equal(hd_sender_memory_count(s), 2);
    assert_ptr_equal(hd_sender_memory_mail(s, 0), kept); /* handed-out mails never move */

    /* A bad mail never reaches the implementation. */
    m.to = "not an address";
    assert_hd(HD_EINVAL, hd_sender_send(s, &m, NULL));
    assert_int_equal(hd_sender_memory_attempts(s), 9);
    hd_sender_free(s);

    /* The accessors are safe on other senders. */
    assert_hd(HD_OK, hd_sender_log_new(NULL, &s));
    assert_int_equal(hd_sender_memory_count(s), 0);
    assert_null(hd_sender_memory_mail(s, 0));
    hd_sender_free(s);
    hd_sender_free(NULL);
    assert_string_equal(hd_sender_name(NULL), "?");
    assert_hd(HD_EINVAL, hd_sender_send(NULL, &m, NULL));
}

static void log_sender_writes_one_redacted_json_line(void **state)
{
    (void)state;
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    assert_non_null(f);
    hd_logger *lg = hd_logger_new("notifications", HD_LOG_INFO, f);
    assert_non_null(lg);
    hd_sender *s = NULL;
    assert_hd(HD_OK, hd_sender_log_new(lg, &s));
    assert_string_equal(hd_sender_name(s), "log");
    hd_mail m = sample_mail();
    m.message_id = "<n-1@herald.example>";
    assert_hd(HD_OK, hd_sender_send(s, &m, NULL));
    /* A subject that is not UTF-8 is refused, and writes nothing. */
    hd_mail bad = m;
    bad.subject = "caf\xe9";
    hd_error err;
    assert_hd_err(HD_EINVAL, hd_sender_send(s, &bad, &err), &err);
    assert_non_null(strstr(err.text, "not UTF-8"));
    hd_sender_free(s);
    hd_logger_free(lg);
    fclose(f);

    /* Exactly one line, a JSON object. */
    assert_true(out_len > 0);
    assert_int_equal(out[out_len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + out_len - 1);
    json_error_t jerr;
    json_t *line = json_loads(out, 0, &jerr);
    if (line == NULL)
        fail_msg("not JSON: %s in %s", jerr.text, out);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(line, "service")), "notifications");
    assert_string_equal(json_string_value(json_object_get(line, "message")),
                        "mail sent to the log");
    assert_string_equal(json_string_value(json_object_get(line, "correlation_id")),
                        m.correlation_id);
    assert_string_equal(json_string_value(json_object_get(line, "recipient_email")),
                        "a***@example.com");
    assert_string_equal(json_string_value(json_object_get(line, "subject")), m.subject);
    assert_string_equal(json_string_value(json_object_get(line, "message_id")), m.message_id);
    assert_int_equal(json_integer_value(json_object_get(line, "html_bytes")), strlen(m.html));
    assert_int_equal(json_integer_value(json_object_get(line, "text_bytes")), strlen(m.text));
    /* Neither the address nor the bodies (their links hold tokens) reach the log. */
    assert_null(strstr(out, "alice@"));
    assert_null(strstr(out, "SECRET"));
    json_decref(line);
    free(out);
}

static void smtp_sender_checks_its_settings_without_connecting(void **state)
{
    (void)state;
    hd_sender *s = NULL;
    hd_error err;
    const char *bad_urls[] = {"http://127.0.0.1:2525", "file:///etc/passwd", "not a url", "smtp://",
                              ""};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        assert_hd_err(HD_EURL, hd_sender_smtp_new(bad_urls[i], "a@b.example", 1000, &s, &err),
                      &err);
        assert_null(s);
    }
    /* The URL may hold a password: it never appears in an error. */
    assert_hd_err(HD_EURL, hd_sender_smtp_new("ftp://u:hunter2@h", "a@b.example", 0, &s, &err),
                  &err);
    assert_null(strstr(err.text, "hunter2"));
    assert_hd(HD_EINVAL, hd_sender_smtp_new("smtp://127.0.0.1:2525", "nobody", 1000, &s, NULL));
    assert_hd(HD_EINVAL, hd_sender_smtp_new("smtp://127.0.0.1:2525", NULL, 1000, &s, NULL));
    assert_hd(HD_EINVAL, hd_sender_smtp_new(NULL, "a@b.example", 1000, &s, NULL));
    const char *good[] = {"smtp://127.0.0.1:2525", "smtps://mail.example.com",
                          "smtp://user:pw@mail.example.com:587/herald.example"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_hd_err(HD_OK, hd_sender_smtp_new(good[i], "a@b.example", 0, &s, &err), &err);
        assert_string_equal(hd_sender_name(s), "smtp");
        hd_sender_free(s);
        s = NULL;
    }
}

/* ---- STARTTLS: the choice, and what goes over the wire ----------------------------------- */

static void smtp_tls_mode_follows_the_url(void **state)
{
    (void)state;
    hd_smtp_tls t = HD_SMTP_TLS_IMPLICIT;
    assert_hd(HD_OK, hd_sender_smtp_tls("smtp://127.0.0.1:2525", &t, NULL));
    assert_int_equal(t, HD_SMTP_TLS_TRY); /* no credentials: still try */
    assert_hd(HD_OK, hd_sender_smtp_tls("smtp://mail.example.com/herald.example", &t, NULL));
    assert_int_equal(t, HD_SMTP_TLS_TRY);
    assert_hd(HD_OK, hd_sender_smtp_tls("smtp://user:pw@mail.example.com:587", &t, NULL));
    assert_int_equal(t, HD_SMTP_TLS_REQUIRED);
    assert_hd(HD_OK, hd_sender_smtp_tls("smtps://user:pw@mail.example.com", &t, NULL));
    assert_int_equal(t, HD_SMTP_TLS_IMPLICIT);
    assert_hd(HD_OK, hd_sender_smtp_tls("smtps://mail.example.com", &t, NULL));
    assert_int_equal(t, HD_SMTP_TLS_IMPLICIT);
    assert_hd(HD_EURL, hd_sender_smtp_tls("http://mail.example.com", &t, NULL));
    assert_hd(HD_EURL, hd_sender_smtp_tls(NULL, &t, NULL));
}

/* A scripted SMTP server for one connection: it offers STARTTLS in its EHLO reply, answers
 * the STARTTLS command with 454 (no TLS here: a unit test has no certificate), and accepts
 * whatever else comes. It records which commands it saw. */
typedef struct fake_smtp {
    int listen_fd;
    uint16_t port;
    int offer_starttls;
    int saw_starttls, saw_auth, saw_data, saw_quit;
    pthread_t thread;
} fake_smtp;

static void say(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_true(send(fd, s, n, MSG_NOSIGNAL) == (ssize_t)n);
}

/* Read one CRLF-terminated line (at most cap-1 bytes kept). 0 at EOF or timeout. */
static int read_line(int fd, char *line, size_t cap)
{
    size_t n = 0;
    char c;
    for (;;) {
        if (recv(fd, &c, 1, 0) != 1)
            return 0;
        if (c == '\n')
            break;
        if (c != '\r' && n + 1 < cap)
            line[n++] = c;
    }
    line[n] = '\0';
    return 1;
}

static void *fake_smtp_main(void *arg)
{
    fake_smtp *f = arg;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[1024];
    say(fd, "220 fake.example ESMTP\r\n");
    while (read_line(fd, line, sizeof line)) {
        if (strncasecmp(line, "EHLO", 4) == 0) {
            say(fd, "250-fake.example\r\n");
            if (f->offer_starttls)
                say(fd, "250-STARTTLS\r\n");
            say(fd, "250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
        } else if (strncasecmp(line, "STARTTLS", 8) == 0) {
            f->saw_starttls = 1;
            say(fd, "454 4.7.0 TLS not available\r\n");
        } else if (strncasecmp(line, "AUTH", 4) == 0) {
            f->saw_auth = 1;
            say(fd, "535 5.7.8 no\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            f->saw_data = 1;
            say(fd, "354 go ahead\r\n");
            while (read_line(fd, line, sizeof line) && strcmp(line, ".") != 0)
                ;
            say(fd, "250 2.0.0 queued\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            f->saw_quit = 1;
            say(fd, "221 bye\r\n");
            break;
        } else {
            say(fd, "250 ok\r\n"); /* MAIL FROM, RCPT TO, RSET, NOOP */
        }
    }
    close(fd);
    return NULL;
}

static void fake_smtp_start(fake_smtp *f, int offer_starttls)
{
    memset(f, 0, sizeof *f);
    f->offer_starttls = offer_starttls;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->listen_fd, 1), 0);
    assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_smtp_main, f), 0);
}

static void fake_smtp_join(fake_smtp *f)
{
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
}

/* Send one mail through url_fmt (with %u for the port) to a fake server; returns the code. */
static int send_via_fake(fake_smtp *f, const char *url_fmt, hd_error *err)
{
    char url[256];
    snprintf(url, sizeof url, url_fmt, (unsigned)f->port);
    hd_sender *s = NULL;
    assert_hd_err(HD_OK, hd_sender_smtp_new(url, "noreply@herald.example", 5000, &s, err), err);
    hd_mail m = sample_mail();
    int rc = hd_sender_send(s, &m, err);
    hd_sender_free(s); /* QUIT, then the fake's thread ends */
    return rc;
}

static void smtp_without_credentials_tries_starttls(void **state)
{
    (void)state;
    hd_error err;
    fake_smtp f;
    /* Offered: the sender asks for it; refused, it goes on in clear and delivers. */
    fake_smtp_start(&f, 1);
    assert_hd_err(HD_OK, send_via_fake(&f, "smtp://127.0.0.1:%u", &err), &err);
    fake_smtp_join(&f);
    assert_true(f.saw_starttls);
    assert_true(f.saw_data);
    /* Not offered (like the test sink): no STARTTLS command, the mail goes out. */
    fake_smtp_start(&f, 0);
    assert_hd_err(HD_OK, send_via_fake(&f, "smtp://127.0.0.1:%u", &err), &err);
    fake_smtp_join(&f);
    assert_false(f.saw_starttls);
    assert_true(f.saw_data);
}

static void smtp_with_credentials_requires_starttls(void **state)
{
    (void)state;
    hd_error err;
    fake_smtp f;
    /* Refused STARTTLS with a password in the URL: no AUTH in clear, no mail. */
    fake_smtp_start(&f, 1);
    assert_hd_err(HD_ESMTP, send_via_fake(&f, "smtp://user:hunter2@127.0.0.1:%u", &err), &err);
    fake_smtp_join(&f);
    assert_true(f.saw_starttls);
    assert_false(f.saw_auth);
    assert_false(f.saw_data);
    assert_null(strstr(err.text, "hunter2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(formats_a_multipart_alternative_message),
        cmocka_unit_test(quoted_printable_keeps_any_body_within_line_limits),
        cmocka_unit_test(subject_is_encoded_when_not_short_ascii),
        cmocka_unit_test(message_id_is_kept_or_made),
        cmocka_unit_test(header_injection_and_bad_mails_are_refused),
        cmocka_unit_test(memory_sender_fails_first_n_then_keeps_copies),
        cmocka_unit_test(log_sender_writes_one_redacted_json_line),
        cmocka_unit_test(smtp_sender_checks_its_settings_without_connecting),
        cmocka_unit_test(smtp_tls_mode_follows_the_url),
        cmocka_unit_test(smtp_without_credentials_tries_starttls),
        cmocka_unit_test(smtp_with_credentials_requires_starttls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
