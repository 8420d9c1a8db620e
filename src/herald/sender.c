/* sender.c — the mail sender port, the MIME message builder and the memory test double;
 * see sender.h. The SMTP and log implementations live in sender_smtp.c and sender_log.c. */
#include "herald/sender.h"
#include "herald/buf.h"
#include "herald/email.h"

#include "herald/clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- checks -------------------------------------------------------------------------------- */

int hd_mail_address_valid(const char *addr)
{
    return hd_email_address_valid(addr); /* the one rule: herald/email.h */
}

/* An id header value: printable ASCII, no spaces, not empty, bounded. */
static int id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HD_MAIL_ID_MAX)
        return 0;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return 0;
    return 1;
}

int hd_mail_validate(const hd_mail *mail, hd_error *err)
{
    if (mail == NULL)
        return hd_error_set(err, HD_EINVAL, "mail: NULL");
    if (!hd_mail_address_valid(mail->to))
        return hd_error_set(err, HD_EINVAL, "mail: 'to' is %s",
                            mail->to ? "not a valid address" : "missing");
    if (mail->from != NULL && !hd_mail_address_valid(mail->from))
        return hd_error_set(err, HD_EINVAL, "mail: 'from' is not a valid address");
    if (mail->subject == NULL || mail->html == NULL || mail->text == NULL)
        return hd_error_set(err, HD_EINVAL, "mail: '%s' is missing",
                            mail->subject == NULL ? "subject"
                            : mail->html == NULL  ? "html"
                                                  : "text");
    for (const unsigned char *c = (const unsigned char *)mail->subject; *c; c++)
        if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
            return hd_error_set(err, HD_EINVAL,
                                "mail: the subject contains a line break or control character");
    if (mail->message_id != NULL && !id_valid(mail->message_id))
        return hd_error_set(err, HD_EINVAL,
                            "mail: 'message_id' must be 1 to %d printable ASCII "
                            "characters without spaces",
                            HD_MAIL_ID_MAX);
    if (mail->correlation_id != NULL && !id_valid(mail->correlation_id))
        return hd_error_set(err, HD_EINVAL,
                            "mail: 'correlation_id' must be 1 to %d printable "
                            "ASCII characters without spaces",
                            HD_MAIL_ID_MAX);
    return 0;
}

/* ---- MIME pieces --------------------------------------------------------------------------- */

/* RFC 5322 date in UTC: "Mon, 23 Nov 2026 04:05:06 +0000". Written by hand because
 * strftime's %a and %b follow the locale, and a header must be English whatever LANG says. */
static void add_date(hd_buf *b, int64_t date_ms)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(date_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    hd_buf_printf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
                  tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
}

static void base64(hd_buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char out[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63],
                       i + 1 < n ? tab[(v >> 6) & 63] : '=', i + 2 < n ? tab[v & 63] : '='};
        hd_buf_add(b, out, 4);
    }
}

/* Bytes of UTF-8 input per encoded-word: 42 bytes are 56 base64 characters, and
 * "=?UTF-8?B?" + 56 + "?=" is 68, so even the first line "Subject: " + word stays within
 * 78 characters (RFC 2047 allows 75 per word, RFC 5322 asks for 78 per line). */
#define WORD_BYTES 42

/* The Subject header. Plain when it is short printable ASCII; otherwise RFC 2047 "B"
 * encoded-words, one per line, each holding whole UTF-8 characters (a character split
 * between two words is undefined behaviour for the reader). A subject that merely contains
 * "=?" is encoded too, or a reader would try to decode it. */
static void add_subject(hd_buf *b, const char *subject)
{
    size_t n = strlen(subject);
    int plain = strlen("Subject: ") + n <= 78 && strstr(subject, "=?") == NULL;
    for (size_t i = 0; plain && i < n; i++)
        if ((unsigned char)subject[i] >= 0x80)
            plain = 0;
    if (plain) {
        hd_buf_printf(b, "Subject: %s\r\n", subject);
        return;
    }
    hd_buf_puts(b, "Subject:");
    const unsigned char *s = (const unsigned char *)subject;
    size_t i = 0;
    do {
        size_t take = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        /* Back off to a character boundary: never end on a lead or middle byte. */
        while (take > 0 && i + take < n && (s[i + take] & 0xc0) == 0x80)
            take--;
        if (take == 0) /* not UTF-8 after all (validate lets bytes through): cut anyway */
            take = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        hd_buf_puts(b, i == 0 ? " =?UTF-8?B?" : "\r\n =?UTF-8?B?");
        base64(b, s + i, take);
        hd_buf_puts(b, "?=");
        i += take;
    } while (i < n);
    hd_buf_puts(b, "\r\n");
}

/* Quoted-printable (RFC 2045 6.7): printable ASCII stays readable, everything else is =XX,
 * lines are at most 76 characters (soft breaks "=" CRLF), and the body's own line breaks,
 * LF or CRLF, become CRLF. It keeps any line length and any byte safe across relays that
 * only promise 7-bit, 998-character lines, and "=" itself is always encoded: that is why a
 * boundary containing "=_" can never appear inside a quoted-printable part. */
static void add_quoted_printable(hd_buf *b, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)text;
    size_t col = 0;
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = s[i];
        if (c == '\n' || (c == '\r' && s[i + 1] == '\n')) {
            if (c == '\r')
                i++;
            hd_buf_puts(b, "\r\n");
            col = 0;
            continue;
        }
        /* Space or tab before a line break (or the end) would be eaten by some relays. */
        int at_eol = s[i + 1] == '\0' || s[i + 1] == '\n' || (s[i + 1] == '\r' && s[i + 2] == '\n');
        int literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol);
        size_t w = literal ? 1 : 3;
        if (col + w > 75) { /* 75 + the "=" of the soft break = 76 */
            hd_buf_puts(b, "=\r\n");
            col = 0;
        }
        if (literal) {
            hd_buf_add(b, (const char *)&c, 1);
        } else {
            char enc[3] = {'=', hex[c >> 4], hex[c & 15]};
            hd_buf_add(b, enc, 3);
        }
        col += w;
    }
}

static void add_part(hd_buf *b, const char *boundary, const char *type, const char *body)
{
    hd_buf_printf(b, "--%s\r\n", boundary);
    hd_buf_printf(b, "Content-Type: %s; charset=UTF-8\r\n", type);
    hd_buf_puts(b, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    add_quoted_printable(b, body);
    hd_buf_puts(b, "\r\n");
}

int hd_mail_format(const hd_mail *mail, const char *default_from, int64_t date_ms, char **out,
                   size_t *len, hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "mail format: NULL argument");
    int rc = hd_mail_validate(mail, err);
    if (rc != 0)
        return rc;
    const char *from = mail->from ? mail->from : default_from;
    if (!hd_mail_address_valid(from))
        return hd_error_set(err, HD_EINVAL, "mail: 'from' is %s",
                            from ? "not a valid address" : "missing");

    char uuid[HD_UUID_LEN + 1];
    hd_buf b = HD_BUF_INIT;
    add_date(&b, date_ms);
    hd_buf_printf(&b, "From: %s\r\n", from);
    hd_buf_printf(&b, "To: %s\r\n", mail->to);
    add_subject(&b, mail->subject);
    if (mail->message_id != NULL) {
        size_t n = strlen(mail->message_id);
        int bracketed = mail->message_id[0] == '<' && mail->message_id[n - 1] == '>';
        hd_buf_puts(&b, bracketed ? "Message-ID: " : "Message-ID: <");
        hd_buf_puts(&b, mail->message_id);
        hd_buf_puts(&b, bracketed ? "\r\n" : ">\r\n");
    } else {
        /* Unique worldwide: a random UUID at the sender's own domain (RFC 5322 3.6.4). */
        hd_uuid_v4(uuid);
        hd_buf_puts(&b, "Message-ID: <");
        hd_buf_puts(&b, uuid);
        hd_buf_puts(&b, strchr(from, '@'));
        hd_buf_puts(&b, ">\r\n");
    }
    if (mail->correlation_id != NULL)
        hd_buf_printf(&b, "X-Correlation-Id: %s\r\n", mail->correlation_id);

    char boundary[64];
    hd_uuid_v4(uuid);
    snprintf(boundary, sizeof boundary, "=_herald_%s", uuid);
    hd_buf_puts(&b, "MIME-Version: 1.0\r\n");
    hd_buf_printf(&b, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n", boundary);
    hd_buf_puts(&b, "\r\n");
    /* The preamble: MIME readers skip it, a reader that predates MIME shows it. */
    hd_buf_puts(&b, "This is a multi-part message in MIME format.\r\n\r\n");
    add_part(&b, boundary, "text/plain", mail->text);
    add_part(&b, boundary, "text/html", mail->html);
    hd_buf_printf(&b, "--%s--\r\n", boundary);

    size_t n = b.len;
    if ((*out = hd_buf_take(&b)) == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    if (len != NULL)
        *len = n;
    return 0;
}

/* ---- the port ------------------------------------------------------------------------------ */

int hd_sender_send(hd_sender *s, const hd_mail *mail, hd_error *err)
{
    if (s == NULL || s->methods == NULL)
        return hd_error_set(err, HD_EINVAL, "sender: NULL");
    int rc = hd_mail_validate(mail, err);
    if (rc != 0)
        return rc;
    return s->methods->send(s, mail, err);
}

void hd_sender_free(hd_sender *s)
{
    if (s != NULL && s->methods != NULL)
        s->methods->destroy(s);
}

const char *hd_sender_name(const hd_sender *s)
{
    return (s != NULL && s->methods != NULL && s->methods->name != NULL) ? s->methods->name : "?";
}

/* ---- memory: the test double -------------------------------------------------------------- */

/* One kept mail: the public view points into its own copies. */
typedef struct kept_mail {
    hd_mail pub;
    char *strs[7];
} kept_mail;

typedef struct memory_sender {
    hd_sender base; /* first: an hd_sender * is a memory_sender * */
    pthread_mutex_t lock;
    int fail_next; /* sends still to fail; < 0 = all */
    size_t attempts;
    kept_mail **mails; /* pointers, so a mail handed out never moves */
    size_t n, cap;
} memory_sender;

static const hd_sender_methods memory_methods;

static memory_sender *as_memory(const hd_sender *s)
{
    return (s != NULL && s->methods == &memory_methods) ? (memory_sender *)s : NULL;
}

static void kept_free(kept_mail *k)
{
    if (k == NULL)
        return;
    for (int i = 0; i < 7; i++)
        free(k->strs[i]);
    free(k);
}

static kept_mail *kept_copy(const hd_mail *m)
{
    kept_mail *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    const char *src[7] = {m->from, m->to,         m->subject,       m->html,
                          m->text, m->message_id, m->correlation_id};
    const char **dst[7] = {&k->pub.from, &k->pub.to,         &k->pub.subject,       &k->pub.html,
                           &k->pub.text, &k->pub.message_id, &k->pub.correlation_id};
    for (int i = 0; i < 7; i++) {
        if (src[i] == NULL)
            continue;
        if ((k->strs[i] = strdup(src[i])) == NULL) {
            kept_free(k);
            return NULL;
        }
        *dst[i] = k->strs[i];
    }
    return k;
}

static int memory_send(hd_sender *s, const hd_mail *mail, hd_error *err)
{
    memory_sender *m = as_memory(s);
    pthread_mutex_lock(&m->lock);
    m->attempts++;
    if (m->fail_next != 0) {
        size_t attempt = m->attempts;
        if (m->fail_next > 0)
            m->fail_next--;
        pthread_mutex_unlock(&m->lock);
        return hd_error_set(err, HD_ESMTP, "memory sender: simulated failure (attempt %zu)",
                            attempt);
    }
    int rc = 0;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        kept_mail **p = realloc(m->mails, cap * sizeof *p);
        if (p == NULL) {
            rc = HD_ENOMEM;
        } else {
            m->mails = p;
            m->cap = cap;
        }
    }
    kept_mail *k = rc == 0 ? kept_copy(mail) : NULL;
    if (k == NULL)
        rc = HD_ENOMEM;
    else
        m->mails[m->n++] = k;
    pthread_mutex_unlock(&m->lock);
    return rc == 0 ? 0 : hd_error_set(err, rc, NULL);
}

static void memory_destroy(hd_sender *s)
{
    memory_sender *m = as_memory(s);
    for (size_t i = 0; i < m->n; i++)
        kept_free(m->mails[i]);
    free(m->mails);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static const hd_sender_methods memory_methods = {
    .name = "memory",
    .send = memory_send,
    .destroy = memory_destroy,
};

int hd_sender_memory_new(int fail_times, hd_sender **out)
{
    if (out == NULL)
        return HD_EINVAL;
    memory_sender *m = calloc(1, sizeof *m);
    if (m == NULL)
        return HD_ENOMEM;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return HD_ENOMEM;
    }
    m->base.methods = &memory_methods;
    m->fail_next = fail_times;
    *out = &m->base;
    return 0;
}

void hd_sender_memory_fail_next(hd_sender *s, int n)
{
    memory_sender *m = as_memory(s);
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->fail_next = n;
    pthread_mutex_unlock(&m->lock);
}

size_t hd_sender_memory_attempts(const hd_sender *s)
{
    memory_sender *m = as_memory(s);
    if (m == NULL)
        return 0;
    pthread_mutex_lock(&m->lock);
    size_t n = m->attempts;
    pthread_mutex_unlock(&m->lock);
    return n;
}

size_t hd_sender_memory_count(const hd_sender *s)
{
    memory_sender *m = as_memory(s);
    if (m == NULL)
        return 0;
    pthread_mutex_lock(&m->lock);
    size_t n = m->n;
    pthread_mutex_unlock(&m->lock);
    return n;
}

const hd_mail *hd_sender_memory_mail(const hd_sender *s, size_t i)
{
    memory_sender *m = as_memory(s);
    if (m == NULL)
        return NULL;
    pthread_mutex_lock(&m->lock);
    const hd_mail *mail = i < m->n ? &m->mails[i]->pub : NULL;
    pthread_mutex_unlock(&m->lock);
    return mail;
}
