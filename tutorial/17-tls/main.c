/* Chapter 17 — TLS between the services and their servers: the broker, the database, SMTP.
 *
 * Everything the earlier chapters sent crossed the network in clear: events with e-mail
 * addresses, the database password, mails with sign-in links. In production each of those
 * connections is TLS, and TLS is only worth its cost when the client checks WHO answers
 * (the certificate chain up to a CA it trusts, and the host name), and when a connection
 * that was meant to be TLS can never quietly become plain text. This chapter shows all
 * three connections doing that, with the harness's throwaway CA (scripts/servers.sh):
 *
 *   [1] the broker     amqps:// with the CA file: verified, a message through it
 *   [2] refusals       an unrelated CA; the plain AMQP port asked for TLS: both refused at
 *                      connect, with what failed
 *   [3] the database   HD_DATABASE_CA_FILE becomes sslmode=verify-full + sslrootcert; the
 *                      server itself says the session is encrypted
 *   [4] SMTP           STARTTLS required: the sink that offers it gets the mail over TLS;
 *                      the sink that does not is refused, nothing is sent in clear
 *   [5] the price      20 connections to the broker with and without TLS: the handshake is
 *                      paid per connection, which is why herald keeps its connections open
 *
 * Needs HD_AMQP_URL, HD_AMQPS_URL, HD_PG_URL, HD_SMTP_URL, HD_SMTP_TLS_URL, HD_SMTP_MAILDIR,
 * HD_TLS_CA_FILE and HD_TLS_WRONG_CA_FILE (make servers-up). Read along:
 * docs/tutorial/17-tls.md.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/amqp.h"
#include "herald/amqp_tls.h"
#include "herald/clock.h"
#include "herald/sender.h"
#include "herald/store.h"
#include "herald/store_tls.h"

#include "tutorial.h"

/* The last path component, so that the output does not depend on the state directory. */
static const char *base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int broker(const char *amqps, const char *ca)
{
    hd_amqp_options o = {.connection_name = "tutorial 17"};
    hd_error err;
    if (hd_amqp_tls_settings(&o, amqps, ca, NULL, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        return -1;
    }
    hd_amqp *a = NULL;
    if (hd_amqp_open(amqps, &o, &a, &err) < 0) {
        fprintf(stderr, "amqps: %s\n", err.text);
        return -1;
    }
    printf("[1] the broker: connected to %s, certificate verified against %s\n",
           hd_amqp_url_text(a), base(ca));
    amqp_connection_state_t c = hd_amqp_state(a);
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    int rc = hd_amqp_check_reply(a, amqp_get_rpc_reply(c), "declare", &err);
    if (rc == 0) {
        amqp_bytes_t q = amqp_bytes_malloc_dup(ok->queue);
        amqp_basic_publish(c, 1, amqp_empty_bytes, q, 0, 0, NULL,
                           amqp_cstring_bytes("user_registered: ada@example.com"));
        amqp_rpc_reply_t r = amqp_basic_get(c, 1, q, 1);
        amqp_message_t m;
        if (r.reply_type == AMQP_RESPONSE_NORMAL && r.reply.id == AMQP_BASIC_GET_OK_METHOD &&
            amqp_read_message(c, 1, &m, 0).reply_type == AMQP_RESPONSE_NORMAL) {
            printf("    a message went through it, encrypted on the wire: '%.*s'\n",
                   (int)m.body.len, (const char *)m.body.bytes);
            amqp_destroy_message(&m);
        } else {
            rc = -1;
        }
        amqp_bytes_free(q);
    }
    hd_amqp_close(a);
    return rc;
}

static void refused(const char *what, const char *url, const char *ca)
{
    hd_amqp_options o = {.ca_cert_path = ca, .connect_timeout_ms = 5000};
    hd_amqp *a = NULL;
    hd_error err;
    int rc = hd_amqp_open(url, &o, &a, &err);
    if (rc == 0) {
        printf("    %s: CONNECTED (this must never happen)\n", what);
        hd_amqp_close(a);
        return;
    }
    printf("    %s: refused, %s\n      %s\n", what, hd_err_name(rc), err.text);
}

static int database(const char *pg, const char *ca)
{
    char *url = NULL;
    hd_error err;
    if (hd_store_tls_url(pg, ca, &url, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        return -1;
    }
    printf("[3] the database: HD_DATABASE_CA_FILE=%s turns HD_DATABASE_URL into\n    ...%s\n",
           base(ca),
           strstr(url, "?sslmode=") ? "?sslmode=verify-full&sslrootcert=.../ca.crt"
                                    : "(unchanged)");
    hd_store *s = NULL;
    int rc = hd_store_open(url, &s, &err);
    free(url);
    if (rc < 0) {
        fprintf(stderr, "%s\n", err.text);
        return -1;
    }
    hd_rows *rows = NULL;
    rc =
        hd_store_query(s, "SELECT ssl::text, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                       NULL, 0, &rows, &err);
    if (rc == 0)
        printf("    the server's own view (pg_stat_ssl): ssl = %s, %s\n", hd_rows_text(rows, 0, 0),
               hd_rows_text(rows, 0, 1));
    hd_rows_free(rows);
    hd_store_close(s);
    return rc;
}

/* 1 when a mail to rcpt is in the maildir, marked as received over TLS by the sink. */
static int arrived_over_tls(const char *maildir, const char *rcpt)
{
    char want[256];
    snprintf(want, sizeof want, "X-Envelope-To: %s\r\n", rcpt);
    for (int tries = 0; tries < 100; tries++) {
        DIR *d = opendir(maildir);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || strstr(e->d_name, ".eml") == NULL)
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", maildir, e->d_name);
            FILE *f = fopen(path, "rb");
            char head[2048];
            size_t n = f ? fread(head, 1, sizeof head - 1, f) : 0;
            if (f)
                fclose(f);
            head[n] = '\0';
            if (strstr(head, want) != NULL) {
                closedir(d);
                return strstr(head, "X-Envelope-TLS: yes") != NULL;
            }
        }
        if (d)
            closedir(d);
        hd_sleep_ms(50);
    }
    return 0;
}

static int smtp(const char *tls_url, const char *plain_url, const char *maildir, const char *ca)
{
    hd_sender_smtp_options o = {
        .timeout_ms = 5000, .starttls = HD_SMTP_STARTTLS_REQUIRED, .ca_file = ca};
    hd_sender *s = NULL;
    hd_error err;
    char rcpt[96];
    snprintf(rcpt, sizeof rcpt, "tutorial17-%lld@example.com", (long long)hd_clock_ms());
    hd_mail m = {
        .to = rcpt, .subject = "Confirm your e-mail address", .html = "<p>hi</p>", .text = "hi"};
    printf("[4] SMTP with HD_SMTP_TLS=required and HD_SMTP_CA_FILE=%s\n", base(ca));
    if (hd_sender_smtp_new_with(tls_url, "herald@example.com", &o, &s, &err) < 0 ||
        hd_sender_smtp_check(s, &err) < 0 || hd_sender_send(s, &m, &err) < 0) {
        fprintf(stderr, "smtp: %s\n", err.text);
        hd_sender_free(s);
        return -1;
    }
    hd_sender_free(s);
    printf("    the sink with STARTTLS: start-up check passed, mail sent; received over TLS: %s\n",
           arrived_over_tls(maildir, rcpt) ? "yes" : "NO");
    s = NULL;
    if (hd_sender_smtp_new_with(plain_url, "herald@example.com", &o, &s, &err) < 0)
        return -1;
    int rc = hd_sender_send(s, &m, &err);
    hd_sender_free(s);
    printf("    the sink without STARTTLS: %s\n      %s\n", rc < 0 ? "refused" : "SENT IN CLEAR",
           rc < 0 ? err.text : "");
    return rc < 0 ? 0 : -1;
}

/* Mean time of n connects (with login and channel) to url, ms. */
static double connect_ms(const char *url, const char *ca, int n)
{
    hd_amqp_options o = {.ca_cert_path = ca, .heartbeat_s = -1};
    int64_t t0 = hd_clock_ns();
    for (int i = 0; i < n; i++) {
        hd_amqp *a = NULL;
        if (hd_amqp_open(url, &o, &a, NULL) < 0)
            return -1;
        hd_amqp_close(a);
    }
    return (double)(hd_clock_ns() - t0) / 1e6 / n;
}

int main(void)
{
    const char *amqp = tutorial_require_env("HD_AMQP_URL");
    const char *amqps = tutorial_require_env("HD_AMQPS_URL");
    const char *pg = tutorial_require_env("HD_PG_URL");
    const char *smtp_plain = tutorial_require_env("HD_SMTP_URL");
    const char *smtp_tls = tutorial_require_env("HD_SMTP_TLS_URL");
    const char *maildir = tutorial_require_env("HD_SMTP_MAILDIR");
    const char *ca = tutorial_require_env("HD_TLS_CA_FILE");
    const char *wrong_ca = tutorial_require_env("HD_TLS_WRONG_CA_FILE");
    if (!amqp || !amqps || !pg || !smtp_plain || !smtp_tls || !maildir || !ca || !wrong_ca)
        return 1;

    if (broker(amqps, ca) < 0)
        return 1;

    printf("[2] what the checks refuse, at connect time\n");
    refused("a CA that did not sign the broker's certificate", amqps, wrong_ca);
    /* The same host and port as HD_AMQP_URL, asked for TLS: a plain AMQP listener. */
    hd_amqp_url u;
    if (hd_amqp_url_parse(amqp, &u, NULL) < 0)
        return 1;
    char plain_as_tls[600];
    snprintf(plain_as_tls, sizeof plain_as_tls, "amqps://%s:%s@%s:%d/", u.user, u.password, u.host,
             u.port);
    refused("amqps:// to the plain AMQP port", plain_as_tls, ca);

    if (database(pg, ca) < 0)
        return 1;
    if (smtp(smtp_tls, smtp_plain, maildir, ca) < 0)
        return 1;

    const int n = 20;
    double tcp = connect_ms(amqp, NULL, n), tls = connect_ms(amqps, ca, n);
    if (tcp < 0 || tls < 0)
        return 1;
    printf("[5] the price: a connection (TCP, AMQP handshake, login, channel) takes %.1f ms,\n"
           "    %.1f ms with TLS (%.1fx): paid once per connection, so keep connections open\n",
           tcp, tls, tls / tcp);
    printf("done: three connections, each verified, none able to fall back to plain text\n");
    return 0;
}
