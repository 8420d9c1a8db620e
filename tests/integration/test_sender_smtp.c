/* Integration tests for the SMTP sender against the project's SMTP sink
 * (scripts/smtp_sink.py, started by scripts/servers.sh): real SMTP over TCP, and each
 * accepted message as a file in $HD_SMTP_MAILDIR that we read back. Also what happens when
 * nothing listens and when a server accepts the connection but never speaks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_maildir.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/sender.h"
#include "herald/template.h"

#define FROM "noreply@herald.example"

/* ---- reading the sink's files ----------------------------------------------------------- */

/* The message the sink stored for recipient rcpt: waits up to 10 s for it to appear. New
 * string. */
static char *find_message(const char *maildir, const char *rcpt)
{
    char *msg = hd_maildir_find(maildir, rcpt, 10000);
    if (msg == NULL)
        fail_msg("no message for %s arrived in %s within 10 s", rcpt, maildir);
    return msg;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0;
}

/* The decoded (quoted-printable) body of the part of Content-Type type. New string. */
static char *part(const char *msg, const char *type)
{
    char want[128];
    snprintf(want, sizeof want, "Content-Type: %s; charset=UTF-8\r\n", type);
    const char *p = strstr(msg, want);
    if (p == NULL)
        fail_msg("no %s part in the message", type);
    p = strstr(p, "\r\n\r\n") + 4;
    const char *end = strstr(p, "\r\n--=_herald_");
    assert_non_null(end);
    char *out = malloc((size_t)(end - p) + 1);
    size_t o = 0;
    for (; p < end; p++) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 2;
        } else if (p[0] == '=') {
            out[o++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("expected to find \"%s\" in:\n%.2000s", needle, hay);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void delivers_a_rendered_verification_mail(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_SMTP_URL");
    const char *maildir = hd_test_require_env("HD_SMTP_MAILDIR");

    /* the notifications service's shipped template: the library renders any template */
    static const char *const names[] = {"email_verification"};
    hd_templates *set = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_templates_open_names(HD_SOURCE_DIR "/templates", names, 1, &set, &err),
                  &err);
    char *token = hd_test_unique_name("tok");
    char link[256];
    snprintf(link, sizeof link, "https://app.example/verify?token=%s&u=1", token);
    json_t *vars = json_pack("{s:s, s:s}", "name", "Ada & <Co>", "verification_link", link);
    hd_rendered *r = NULL;
    assert_hd_err(HD_OK, hd_templates_render(set, "email_verification", vars, &r, &err), &err);

    char *local = hd_test_unique_name("ada");
    char rcpt[300];
    snprintf(rcpt, sizeof rcpt, "%s@example.com", local);
    char cid[HD_UUID_LEN + 1];
    hd_uuid_v4(cid);
    char mid[128];
    snprintf(mid, sizeof mid, "<notification-%s@herald.example>", token);

    hd_sender *s = NULL;
    assert_hd_err(HD_OK, hd_sender_smtp_new(url, FROM, 10000, &s, &err), &err);
    hd_mail m = {.to = rcpt,
                 .subject = r->subject,
                 .html = r->html,
                 .text = r->text,
                 .message_id = mid,
                 .correlation_id = cid};
    assert_hd_err(HD_OK, hd_sender_send(s, &m, &err), &err);

    char *msg = find_message(maildir, rcpt);
    assert_contains(msg, "X-Envelope-From: " FROM "\r\n");
    char line[512];
    snprintf(line, sizeof line, "\r\nTo: %s\r\n", rcpt);
    assert_contains(msg, line);
    assert_contains(msg, "\r\nFrom: " FROM "\r\n");
    assert_contains(msg, "\r\nSubject: Confirm your e-mail address\r\n");
    snprintf(line, sizeof line, "\r\nX-Correlation-Id: %s\r\n", cid);
    assert_contains(msg, line);
    snprintf(line, sizeof line, "\r\nMessage-ID: %s\r\n", mid);
    assert_contains(msg, line);
    assert_contains(msg, "\r\nContent-Type: multipart/alternative;");
    char *text = part(msg, "text/plain");
    char *html = part(msg, "text/html");
    assert_contains(text, "Hello Ada & <Co>,");
    assert_contains(text, link);
    assert_contains(html, "Hello Ada &amp; &lt;Co&gt;,");
    snprintf(line, sizeof line, "href=\"https://app.example/verify?token=%s&amp;u=1\"", token);
    assert_contains(html, line);
    free(text);
    free(html);
    free(msg);

    /* The same sender again (libcurl reuses the connection): a body with lines that SMTP
     * would take for the end of the message unless they are dot-stuffed. */
    snprintf(rcpt, sizeof rcpt, "%s-2@example.com", local);
    m = (hd_mail){.to = rcpt,
                  .subject = "Gr\u00fc\u00dfe \u2713",
                  .html = "<p>.</p>",
                  .text = "first\n.\n..two dots\n.\nlast\n"};
    assert_hd_err(HD_OK, hd_sender_send(s, &m, &err), &err);
    msg = find_message(maildir, rcpt);
    assert_contains(msg, "\r\nSubject: =?UTF-8?B?R3LDvMOfZSDinJM=?=\r\n");
    text = part(msg, "text/plain");
    assert_string_equal(text, "first\r\n.\r\n..two dots\r\n.\r\nlast\r\n");
    free(text);
    free(msg);

    hd_sender_free(s);
    hd_rendered_free(r);
    json_decref(vars);
    hd_templates_close(set);
    free(local);
    free(token);
}

/* A port on 127.0.0.1 where nothing listens (bound a moment ago, then closed). */
static int closed_port(void)
{
    return hd_test_free_port();
}

static void a_closed_port_fails_fast_with_esmtp(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", closed_port());
    hd_sender *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_sender_smtp_new(url, FROM, 5000, &s, &err), &err);
    hd_mail m = {.to = "bob@example.com", .subject = "s", .html = "h", .text = "t"};
    int64_t t0 = hd_clock_ms();
    assert_hd_err(HD_ESMTP, hd_sender_send(s, &m, &err), &err);
    int64_t took = hd_clock_ms() - t0;
    if (took > 2000)
        fail_msg("a refused connection took %lld ms to report", (long long)took);
    assert_contains(err.text, "connect");
    assert_null(strstr(err.text, "bob@")); /* no personal data in error texts */
    /* The sender stays usable: the next send fails the same way, it does not crash. */
    assert_hd(HD_ESMTP, hd_sender_send(s, &m, NULL));
    hd_sender_free(s);
}

static void a_silent_server_times_out(void **state)
{
    (void)state;
    /* Listening but never accepting: the kernel completes the TCP handshake, the SMTP
     * greeting never comes. Only the timeout can end this. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char url[64];
    snprintf(url, sizeof url, "smtp://127.0.0.1:%d", ntohs(a.sin_port));

    hd_sender *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_sender_smtp_new(url, FROM, 300, &s, &err), &err);
    hd_mail m = {.to = "bob@example.com", .subject = "s", .html = "h", .text = "t"};
    int64_t t0 = hd_clock_ms();
    assert_hd_err(HD_ESMTP, hd_sender_send(s, &m, &err), &err);
    int64_t took = hd_clock_ms() - t0;
    if (took < 250 || took > 3000)
        fail_msg("a 300 ms timeout took %lld ms", (long long)took);
    assert_contains(err.text, "timed out after 300 ms");
    hd_sender_free(s);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delivers_a_rendered_verification_mail),
        cmocka_unit_test(a_closed_port_fails_fast_with_esmtp),
        cmocka_unit_test(a_silent_server_times_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
