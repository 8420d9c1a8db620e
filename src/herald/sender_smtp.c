/* sender_smtp.c — the SMTP sender: one MIME message through libcurl; see sender.h.
 *
 * libcurl speaks the SMTP dialogue (EHLO, optional STARTTLS and AUTH, MAIL FROM, RCPT TO,
 * DATA) and does the transport's own duties: it doubles a dot at the start of a line
 * ("dot-stuffing", RFC 5321 4.5.2) so that a body line "." does not end the message early,
 * and it sends the final CRLF "." CRLF. What it uploads is exactly what hd_mail_format
 * built: this file only moves bytes and turns failures into an hd_error.
 */
#include "herald/sender.h"

#include "herald/clock.h"
#include "herald/dynlib.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <strings.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMTP_DEFAULT_TIMEOUT_MS 30000L

typedef struct smtp_sender {
    hd_sender base; /* first: an hd_sender * is an smtp_sender * */
    CURL *curl;     /* kept between sends: libcurl keeps the connection in it */
    char *from;
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE]; /* libcurl's detailed reason for the last failure */
    /* The message being uploaded, read by upload_cb during curl_easy_perform. */
    const char *data;
    size_t len, off;
} smtp_sender;

/* libcurl, loaded on first use (dynlib.h): a service whose sender is not SMTP never maps it,
 * nor the libraries it needs (nghttp2, rtmp, ssh2, psl, brotli, zstd, Kerberos, LDAP...).
 * Every libcurl call goes through LIBCURL(name), this table's slot cast to the type
 * <curl/curl.h> declares, so the compiler checks the call. (curl.h's extra type checks of
 * curl_easy_setopt's third argument, a GCC macro around the direct call, do not apply to a
 * call through the table: each option below is passed the type libcurl documents.) */
#define CURL_FUNCTIONS(X)                                                                          \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_duphandle)                                                                         \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_init)                                                                              \
    X(curl_easy_perform)                                                                           \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_strerror)                                                                          \
    X(curl_free)                                                                                   \
    X(curl_global_init)                                                                            \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_url)                                                                                    \
    X(curl_url_cleanup)                                                                            \
    X(curl_url_get)                                                                                \
    X(curl_url_set)                                                                                \
    X(curl_version)
HD_DYNLIB_TABLE(curl_lib, "libcurl.so.4", "SMTP sender", CURL_FUNCTIONS);
#define LIBCURL(f) HD_DYNLIB_FN(curl_lib, f)

/* curl_global_init is not safe to race with itself (nor, before 7.84, with anything else
 * in libcurl), so it runs once per process, the first time an SMTP sender is made. It is
 * never undone: curl_global_cleanup at exit would race with other users of libcurl in the
 * same process, and the operating system reclaims the memory anyway. */
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = LIBCURL(curl_global_init)(CURL_GLOBAL_DEFAULT);
}

/* libcurl loaded and initialised, before any other libcurl call of the process (made
 * through this file: a program that also calls libcurl itself initialises its own). */
static int curl_ready(hd_error *err)
{
    int rc = hd_dynlib_load(&curl_lib, err);
    if (rc < 0)
        return rc;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return hd_error_set(err, HD_ENOMEM, "SMTP sender: curl_global_init failed: %s",
                            LIBCURL(curl_easy_strerror)(global_rc));
    return 0;
}

/* libcurl asks for the message in pieces; hand out the next one. */
static size_t upload_cb(char *dest, size_t size, size_t nmemb, void *userp)
{
    smtp_sender *s = userp;
    size_t room = size * nmemb;
    size_t left = s->len - s->off;
    size_t n = left < room ? left : room;
    memcpy(dest, s->data + s->off, n);
    s->off += n;
    return n; /* 0 = the end of the message */
}

static int smtp_send(hd_sender *base, const hd_mail *mail, hd_error *err)
{
    smtp_sender *s = (smtp_sender *)base;
    const char *from = mail->from ? mail->from : s->from;
    char *msg = NULL;
    size_t len = 0;
    int rc = hd_mail_format(mail, s->from, hd_time_now_ms(), &msg, &len, err);
    if (rc != 0)
        return rc;

    /* The envelope (MAIL FROM / RCPT TO) is what servers route by; the To: header inside
     * the message is only what the reader sees. They are the same address here. */
    char envelope_from[HD_MAIL_ADDRESS_MAX + 3], envelope_to[HD_MAIL_ADDRESS_MAX + 3];
    snprintf(envelope_from, sizeof envelope_from, "<%s>", from);
    snprintf(envelope_to, sizeof envelope_to, "<%s>", mail->to);
    struct curl_slist *rcpt = LIBCURL(curl_slist_append)(NULL, envelope_to);
    if (rcpt == NULL) {
        free(msg);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }

    s->data = msg;
    s->len = len;
    s->off = 0;
    s->errbuf[0] = '\0';
    LIBCURL(curl_easy_setopt)(s->curl, CURLOPT_MAIL_FROM, envelope_from);
    LIBCURL(curl_easy_setopt)(s->curl, CURLOPT_MAIL_RCPT, rcpt);
    /* Known size: libcurl announces it (MAIL FROM ... SIZE=n) when the server supports it,
     * so an oversized mail is refused before its body is sent. */
    LIBCURL(curl_easy_setopt)(s->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    CURLcode res = LIBCURL(curl_easy_perform)(s->curl);

    long reply = 0;
    LIBCURL(curl_easy_getinfo)(s->curl, CURLINFO_RESPONSE_CODE, &reply);
    /* The handle must not keep pointers to what is freed below. */
    LIBCURL(curl_easy_setopt)(s->curl, CURLOPT_MAIL_RCPT, NULL);
    LIBCURL(curl_slist_free_all)(rcpt);
    s->data = NULL;
    free(msg);

    if (res == CURLE_OK)
        return 0;
    /* Say what libcurl said, and the server's reply code when there was one (4xx: try
     * again later; 5xx: this mail will not be accepted as it is). Never an address or the
     * URL: error texts end up in logs and in the notification history. */
    char reply_text[48] = "";
    if (reply > 0)
        snprintf(reply_text, sizeof reply_text, ", server replied %ld", reply);
    if (res == CURLE_USE_SSL_FAILED)
        /* CURLUSESSL_ALL and no STARTTLS in the server's EHLO reply (or it refused the
         * command): libcurl's "Requested SSL level failed" does not say that. */
        return hd_error_set(err, HD_ESMTP,
                            "SMTP: STARTTLS required but the server did not offer it (%s)",
                            s->errbuf[0] ? s->errbuf : LIBCURL(curl_easy_strerror)(res));
    if (res == CURLE_OPERATION_TIMEDOUT)
        return hd_error_set(err, HD_ESMTP, "SMTP: timed out after %ld ms (%s%s)", s->timeout_ms,
                            s->errbuf[0] ? s->errbuf : LIBCURL(curl_easy_strerror)(res),
                            reply_text);
    return hd_error_set(err, HD_ESMTP, "SMTP: %s (%s%s)", LIBCURL(curl_easy_strerror)(res),
                        s->errbuf[0] ? s->errbuf : "no detail", reply_text);
}

static void smtp_destroy(hd_sender *base)
{
    smtp_sender *s = (smtp_sender *)base;
    if (s->curl != NULL)
        LIBCURL(curl_easy_cleanup)(s->curl); /* sends QUIT on a connection still open */
    free(s->from);
    free(s);
}

static const hd_sender_methods smtp_methods = {
    .name = "smtp",
    .send = smtp_send,
    .destroy = smtp_destroy,
};

/* Check the URL with libcurl's own parser (the one that will use it): smtp or smtps, a
 * host, and whether it carries credentials. */
static int check_url(const char *url, int *has_credentials, int *implicit_tls, hd_error *err)
{
    CURLU *u = LIBCURL(curl_url)();
    if (u == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    char *scheme = NULL, *host = NULL, *user = NULL;
    int rc = 0;
    if (LIBCURL(curl_url_set)(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        LIBCURL(curl_url_get)(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        LIBCURL(curl_url_get)(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || *host == '\0') {
        /* Not the URL itself in the message: it may hold a password. */
        rc = hd_error_set(err, HD_EURL,
                          "SMTP sender: malformed URL (want "
                          "smtp://host[:port] or smtps://host[:port])");
    } else if (strcmp(scheme, "smtp") != 0 && strcmp(scheme, "smtps") != 0) {
        rc = hd_error_set(err, HD_EURL, "SMTP sender: scheme '%.16s' is not smtp or smtps", scheme);
    } else {
        *implicit_tls = strcmp(scheme, "smtps") == 0;
        *has_credentials =
            LIBCURL(curl_url_get)(u, CURLUPART_USER, &user, 0) == CURLUE_OK && user && *user;
    }
    LIBCURL(curl_free)(scheme);
    LIBCURL(curl_free)(host);
    LIBCURL(curl_free)(user);
    LIBCURL(curl_url_cleanup)(u);
    return rc;
}

static hd_smtp_tls tls_mode(int has_credentials, int implicit_tls)
{
    if (implicit_tls)
        return HD_SMTP_TLS_IMPLICIT;
    return has_credentials ? HD_SMTP_TLS_REQUIRED : HD_SMTP_TLS_TRY;
}

int hd_sender_smtp_tls(const char *url, hd_smtp_tls *out, hd_error *err)
{
    if (url == NULL || out == NULL)
        return hd_error_set(err, HD_EURL, "SMTP sender: NULL URL");
    int rc = curl_ready(err);
    if (rc < 0)
        return rc;
    int has_credentials = 0, implicit_tls = 0;
    rc = check_url(url, &has_credentials, &implicit_tls, err);
    if (rc == 0)
        *out = tls_mode(has_credentials, implicit_tls);
    return rc;
}

int hd_smtp_starttls_parse(const char *text, hd_smtp_starttls *out, hd_error *err)
{
    if (text == NULL || *text == '\0' || strcasecmp(text, "auto") == 0)
        *out = HD_SMTP_STARTTLS_AUTO;
    else if (strcasecmp(text, "required") == 0)
        *out = HD_SMTP_STARTTLS_REQUIRED;
    else if (strcasecmp(text, "off") == 0)
        *out = HD_SMTP_STARTTLS_OFF;
    else
        return hd_error_set(err, HD_ECONFIG, "HD_SMTP_TLS: '%.32s' is not auto, required or off",
                            text);
    return 0;
}

int hd_sender_smtp_new(const char *url, const char *from, long timeout_ms, hd_sender **out,
                       hd_error *err)
{
    hd_sender_smtp_options o = {.timeout_ms = timeout_ms};
    return hd_sender_smtp_new_with(url, from, &o, out, err);
}

int hd_sender_smtp_new_with(const char *url, const char *from, const hd_sender_smtp_options *o,
                            hd_sender **out, hd_error *err)
{
    hd_sender_smtp_options none = {0};
    if (o == NULL)
        o = &none;
    long timeout_ms = o->timeout_ms;
    if (url == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "SMTP sender: NULL argument");
    if (!hd_mail_address_valid(from))
        return hd_error_set(err, HD_EINVAL, "SMTP sender: 'from' is not a valid address");
    int rc = curl_ready(err);
    if (rc < 0)
        return rc;
    int has_credentials = 0, implicit_tls = 0;
    rc = check_url(url, &has_credentials, &implicit_tls, err);
    if (rc != 0)
        return rc;
    if (o->starttls == HD_SMTP_STARTTLS_OFF && (has_credentials || implicit_tls))
        return hd_error_set(err, HD_ECONFIG,
                            "HD_SMTP_TLS=off contradicts HD_SMTP_URL (%s): refusing to send "
                            "without the TLS the URL asks for",
                            implicit_tls ? "smtps://" : "it holds a password");
    if (o->ca_file != NULL && *o->ca_file != '\0' && access(o->ca_file, R_OK) != 0)
        return hd_error_set(err, HD_ECONFIG, "HD_SMTP_CA_FILE: cannot read %s: %s", o->ca_file,
                            strerror(errno));

    smtp_sender *s = calloc(1, sizeof *s);
    if (s == NULL || (s->from = strdup(from)) == NULL ||
        (s->curl = LIBCURL(curl_easy_init)()) == NULL) {
        if (s != NULL)
            smtp_destroy(&s->base);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    s->base.methods = &smtp_methods;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : SMTP_DEFAULT_TIMEOUT_MS;

    CURL *c = s->curl;
    int ok = LIBCURL(curl_easy_setopt)(c, CURLOPT_URL, url) == CURLE_OK; /* copied by libcurl */
    /* Only these two protocols, whatever the URL says later: no file:// surprises. The
     * option exists since libcurl 7.85. */
#if LIBCURL_VERSION_NUM >= 0x075500
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps") == CURLE_OK;
#endif
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_UPLOAD, 1L) == CURLE_OK;
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_READFUNCTION, upload_cb) == CURLE_OK;
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_READDATA, s) == CURLE_OK;
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_ERRORBUFFER, s->errbuf) == CURLE_OK;
    /* One bound for the whole send and the same for connecting: a server that accepts the
     * connection and then says nothing must not hold the caller longer than a dead one. */
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_TIMEOUT_MS, s->timeout_ms) == CURLE_OK;
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms) == CURLE_OK;
    /* Without this, libcurl times out name resolution with SIGALRM, which is unsafe in a
     * program with threads (and the services have several). */
    ok = ok && LIBCURL(curl_easy_setopt)(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    hd_smtp_tls tls = tls_mode(has_credentials, implicit_tls);
    if (!implicit_tls && o->starttls == HD_SMTP_STARTTLS_REQUIRED)
        tls = HD_SMTP_TLS_REQUIRED; /* the operator's word wins over the URL's guess */
    if (ok && o->ca_file != NULL && *o->ca_file != '\0')
        ok = LIBCURL(curl_easy_setopt)(c, CURLOPT_CAINFO, o->ca_file) == CURLE_OK;
    if (ok && !implicit_tls && o->starttls == HD_SMTP_STARTTLS_OFF)
        ok = LIBCURL(curl_easy_setopt)(c, CURLOPT_USE_SSL, (long)CURLUSESSL_NONE) == CURLE_OK;
    else if (ok && tls == HD_SMTP_TLS_REQUIRED)
        /* A password in the URL: STARTTLS or no send at all, never AUTH in clear. */
        ok = LIBCURL(curl_easy_setopt)(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL) == CURLE_OK;
    else if (ok && tls == HD_SMTP_TLS_TRY)
        /* No password to protect, but the mail itself carries addresses and sign-in links:
         * upgrade whenever the server offers STARTTLS, go on in clear when it does not (most
         * relays on a private network, the test sink). The certificate is still verified:
         * an upgrade to an unverified peer would only hide the mail from honest observers. */
        ok = LIBCURL(curl_easy_setopt)(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY) == CURLE_OK;
    if (!ok) {
        smtp_destroy(&s->base);
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "SMTP sender: this libcurl lacks an option herald needs (%s)",
                            LIBCURL(curl_version)());
    }
    *out = &s->base;
    return 0;
}

int hd_sender_smtp_check(hd_sender *base, hd_error *err)
{
    if (base == NULL || base->methods != &smtp_methods)
        return hd_error_set(err, HD_EINVAL, "SMTP check: not an SMTP sender");
    smtp_sender *s = (smtp_sender *)base;
    /* A copy of the handle with every option (URL, TLS level, CA file, timeouts), told to
     * stop once connected: for SMTP libcurl's "connect" phase is the greeting, EHLO,
     * STARTTLS and the certificate checks, then nothing is sent. The copy keeps the
     * sender's own connection cache out of it. */
    CURL *c = LIBCURL(curl_easy_duphandle)(s->curl);
    if (c == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    char errbuf[CURL_ERROR_SIZE] = "";
    LIBCURL(curl_easy_setopt)(c, CURLOPT_ERRORBUFFER, errbuf);
    LIBCURL(curl_easy_setopt)(c, CURLOPT_CONNECT_ONLY, 1L);
    LIBCURL(curl_easy_setopt)(c, CURLOPT_UPLOAD, 0L);
    CURLcode res = LIBCURL(curl_easy_perform)(c);
    LIBCURL(curl_easy_cleanup)(c);
    if (res == CURLE_OK)
        return 0;
    const char *why = errbuf[0] ? errbuf : LIBCURL(curl_easy_strerror)(res);
    if (res == CURLE_USE_SSL_FAILED)
        return hd_error_set(err, HD_ESMTP,
                            "SMTP: STARTTLS required but the server did not offer it (%s)", why);
    if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST ||
        res == CURLE_OPERATION_TIMEDOUT)
        return hd_error_set(err, HD_ECONNECT, "SMTP: %s (%s)", LIBCURL(curl_easy_strerror)(res),
                            why);
    return hd_error_set(err, HD_ESMTP, "SMTP: %s (%s)", LIBCURL(curl_easy_strerror)(res), why);
}
