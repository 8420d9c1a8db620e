/* herald/sender.h — the mail sender port: hand one e-mail to something that delivers it.
 *
 * The notifications service decides WHAT to send (which template, to whom, whether the
 * user wants it, how often to retry); a sender only knows HOW to hand a finished mail over.
 * Keeping that behind a small interface lets the same service code send through SMTP in
 * production, write to the log in benchmarks, and record mails in memory in tests:
 *
 *   SMTP   (hd_sender_smtp_new)    a MIME message through libcurl to smtp:// or smtps://
 *   log    (hd_sender_log_new)     one JSON log line a mail, nothing delivered (the seed's
 *                                  FakeSender; benchmarks measure herald, not a mail server)
 *   memory (hd_sender_memory_new)  keeps copies of the mails; can fail the first N sends
 *                                  with HD_ESMTP, for tests of retries and failure paths
 *
 * The interface is a table of function pointers, the way SQLite hides the operating system
 * behind its VFS: an implementation embeds `hd_sender` as the FIRST member of its struct and
 * points it at its methods. hd_sender_send checks the mail (hd_mail_validate) before calling
 * the method, so every implementation refuses the same bad input the same way.
 *
 *     hd_sender *s;
 *     if (hd_sender_smtp_new("smtp://127.0.0.1:2525", "noreply@herald.example", 10000,
 *                            &s, &err) != 0) ...
 *     hd_mail m = {.to = "ada@example.com", .subject = r->subject, .html = r->html,
 *                  .text = r->text, .correlation_id = cid};
 *     if (hd_sender_send(s, &m, &err) != 0) ... retry later: err.text says why ...
 *     hd_sender_free(s);
 *
 * Never call hd_sender_send inside a database transaction: the call waits on the network
 * for up to the sender's timeout while the transaction holds locks and a connection, and a
 * mail cannot be rolled back. Record the intent and commit; send; record the outcome in a
 * second transaction (docs/modules/sender.md shows the shape).
 *
 * Threads: a sender is used by one thread at a time (the SMTP sender owns one libcurl easy
 * handle, which must not be shared). Give each sending thread its own sender. The memory
 * sender is the exception: it locks, so a test may read it while a worker sends.
 *
 * Ownership: hd_sender_*_new hands out a new sender, freed with hd_sender_free. The mail and
 * all its strings are borrowed for the call; no sender keeps a pointer into them.
 */
#ifndef HERALD_SENDER_H
#define HERALD_SENDER_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One e-mail, ready to go. Every string is borrowed for the call. */
typedef struct hd_mail {
    const char *from;           /* envelope and header sender; NULL = the sender's default */
    const char *to;             /* one recipient address, required */
    const char *subject;        /* UTF-8, one line, no control characters; required */
    const char *html;           /* UTF-8 HTML body, required */
    const char *text;           /* UTF-8 plain-text body, required */
    const char *message_id;     /* "<id@domain>" or "id@domain"; NULL = a new one. Derive it
                                   from the notification id so a retry sends the same id
                                   and mail clients can drop the duplicate. */
    const char *correlation_id; /* NULL = none; becomes the X-Correlation-Id header */
} hd_mail;

#define HD_MAIL_ADDRESS_MAX 254 /* RFC 5321 path limit, without the angle brackets */
#define HD_MAIL_ID_MAX      250 /* longest message id or correlation id we accept */

/* 1 when addr is an address this module accepts: hd_email_address_valid (herald/email.h),
 * the rule the services share — printable ASCII, one '@', a dot-atom local part, a domain
 * name with a dot; none of <>()[]\,;:" (which would change the meaning of a header or an
 * SMTP command), at most HD_MAIL_ADDRESS_MAX. No quoted local parts, no address literals,
 * no internationalised (SMTPUTF8) addresses. */
int hd_mail_address_valid(const char *addr);

/* Check a mail before it goes anywhere: to (and from when set) are valid addresses, subject,
 * html and text are present, the subject has no control character but TAB, message_id and
 * correlation_id are printable ASCII without spaces, at most HD_MAIL_ID_MAX. A line break in
 * any header value would let it add headers of its own, so it is refused here, whatever
 * produced the mail. Returns 0 or HD_EINVAL (err names the field, never its value: values
 * are personal data). */
int hd_mail_validate(const hd_mail *mail, hd_error *err);

/* Build the RFC 5322 / MIME message the SMTP sender uploads, into *out (new, NUL-terminated;
 * caller frees) and *len (may be NULL):
 *
 *   Date, From, To, Subject (RFC 2047 encoded-words when not plain short ASCII),
 *   Message-ID, X-Correlation-Id (when set), MIME-Version, and a multipart/alternative body
 *   with a text/plain part then a text/html part (the last part is the one a client prefers
 *   when it can show it), both UTF-8 and quoted-printable.
 *
 * Every line ends with CRLF and is at most 78 characters but the Message-ID line (whose
 * domain may be longer), so the message survives any relay (the hard limit is 998).
 * Dot-stuffing is NOT done here: it belongs to the SMTP DATA transport, and libcurl does it.
 * from = mail->from, else default_from (one of them is required). date_ms is the Date
 * header (epoch milliseconds: hd_time_now_ms(), or a fixed time in tests). Returns 0,
 * HD_EINVAL (the mail fails hd_mail_validate, or there is no from) or HD_ENOMEM. */
int hd_mail_format(const hd_mail *mail, const char *default_from, int64_t date_ms, char **out,
                   size_t *len, hd_error *err);

/* ---- the port ---------------------------------------------------------------------------- */

typedef struct hd_sender hd_sender;

/* The methods of an implementation. send gets a mail that passed hd_mail_validate. */
typedef struct hd_sender_methods {
    const char *name; /* "smtp", "log", "memory": for messages and metrics labels */
    int (*send)(hd_sender *s, const hd_mail *mail, hd_error *err);
    void (*destroy)(hd_sender *s); /* free everything; called once, by hd_sender_free */
} hd_sender_methods;

/* The base every implementation embeds first. */
struct hd_sender {
    const hd_sender_methods *methods;
};

/* Deliver mail (borrowed). Returns 0 once the implementation took it (for SMTP: the server
 * answered 250 to the end of DATA), HD_EINVAL (the mail is malformed: do not retry), or the
 * implementation's failure: HD_ESMTP for anything that went wrong on the way (refused
 * connection, timeout, TLS, a 4xx or 5xx reply), with the reason in err. */
int hd_sender_send(hd_sender *s, const hd_mail *mail, hd_error *err);

/* Free s (NULL allowed); the SMTP sender closes its connection. */
void hd_sender_free(hd_sender *s);

/* The implementation's name ("smtp", "log", "memory"); "?" for NULL. Borrowed static. */
const char *hd_sender_name(const hd_sender *s);

/* ---- SMTP (sender_smtp.c) --------------------------------------------------------------- */

/* A sender that delivers through the SMTP server at url, into *out (new):
 *
 *   smtp://host[:port][/helo-domain]   plain SMTP (port 25 by default)
 *   smtps://host[:port]                TLS from the first byte (port 465)
 *   smtp://user:password@host:587      with credentials (SMTP AUTH): the connection must
 *                                      then upgrade with STARTTLS or the send fails, so a
 *                                      password never crosses the network in clear
 *
 * smtp:// without credentials still tries STARTTLS (opportunistic TLS, RFC 3207): when the
 * server offers it the mail (addresses, links, tokens) is encrypted on the wire; when it
 * does not, or refuses the STARTTLS command, the send goes on in clear. A server that
 * offers STARTTLS with a certificate that does not verify fails the send: trying TLS and
 * then accepting anyone's certificate would protect against nothing. hd_sender_smtp_tls
 * says which of the three a URL gets.
 *
 * from (copied) is the default sender address. timeout_ms bounds each send as a whole,
 * connecting included (<= 0: 30 s): a mail server that hangs must not hang the consumer.
 * The libcurl handle and its connection are kept between sends (libcurl reconnects when
 * the server closed it), so a burst of mails does not pay a TCP and TLS handshake each.
 * Returns 0, HD_EURL (not an smtp:// or smtps:// URL), HD_EINVAL (bad from), HD_ENOMEM, or
 * HD_EUNSUPPORTED (a libcurl built without an option this needs, or libcurl.so.4 cannot be
 * loaded: libcurl is loaded on the first SMTP sender of the process, see dynlib.h; err says
 * "SMTP sender: cannot load libcurl.so.4: <why>").
 * Nothing is contacted before the first send. The sender never logs: not the body, not the
 * addresses, not the URL (it may hold a password). */
int hd_sender_smtp_new(const char *url, const char *from, long timeout_ms, hd_sender **out,
                       hd_error *err);

/* How an SMTP sender protects the connection (libcurl's CURLOPT_USE_SSL, chosen from the
 * URL alone). */
typedef enum hd_smtp_tls {
    HD_SMTP_TLS_TRY,      /* smtp:// without credentials: STARTTLS when offered (CURLUSESSL_TRY) */
    HD_SMTP_TLS_REQUIRED, /* smtp:// with credentials: STARTTLS or fail (CURLUSESSL_ALL) */
    HD_SMTP_TLS_IMPLICIT  /* smtps://: TLS from the first byte */
} hd_smtp_tls;

/* The protection hd_sender_smtp_new(url, ...) uses, into *out, without connecting (tests
 * and start-up logs). Returns 0 or HD_EURL (the URL hd_sender_smtp_new would refuse), or
 * HD_EUNSUPPORTED when libcurl cannot be loaded (as hd_sender_smtp_new). */
int hd_sender_smtp_tls(const char *url, hd_smtp_tls *out, hd_error *err);

/* What STARTTLS an SMTP sender insists on, whatever the URL would choose (HD_SMTP_TLS). */
typedef enum hd_smtp_starttls {
    HD_SMTP_STARTTLS_AUTO = 0, /* "auto": as hd_sender_smtp_tls says for the URL */
    HD_SMTP_STARTTLS_REQUIRED, /* "required": STARTTLS with a verified certificate, or no send
                                  (CURLUSESSL_ALL), also without credentials */
    HD_SMTP_STARTTLS_OFF       /* "off": never STARTTLS (a relay that offers it broken); refused
                                  with credentials in the URL or with smtps:// */
} hd_smtp_starttls;

/* Options of hd_sender_smtp_new_with; zeroed = hd_sender_smtp_new's behaviour. Strings are
 * copied (libcurl copies them), so the struct may live on the caller's stack. */
typedef struct hd_sender_smtp_options {
    long timeout_ms;           /* as in hd_sender_smtp_new; <= 0: 30 s */
    hd_smtp_starttls starttls; /* HD_SMTP_STARTTLS_AUTO by default */
    const char *ca_file;       /* PEM file of trusted CAs (CURLOPT_CAINFO); NULL = the system's
                                  store. Used for STARTTLS and smtps:// alike */
} hd_sender_smtp_options;

/* hd_sender_smtp_new with options (o may be NULL). Also returns HD_ECONFIG for a starttls
 * that contradicts the URL (off with credentials or smtps://) or a CA file that cannot be
 * read. With HD_SMTP_STARTTLS_REQUIRED a server that does not offer STARTTLS fails the send
 * ("SMTP: STARTTLS required but the server did not offer it"), and a certificate that does
 * not verify fails it with libcurl's reason ("certificate has expired", "no alternative
 * certificate subject name matches target host name"). */
int hd_sender_smtp_new_with(const char *url, const char *from, const hd_sender_smtp_options *o,
                            hd_sender **out, hd_error *err);

/* Connect to the sender's server, EHLO, STARTTLS (or TLS) with the certificate checks, and
 * hang up without sending anything: a start-up check, so that a wrong CA or a server
 * without STARTTLS is an error when the service starts, not at its first mail. s must be an
 * SMTP sender (else HD_EINVAL). Returns 0, HD_ESMTP (with libcurl's reason), or
 * HD_ECONNECT (the server cannot be reached: may be temporary). */
int hd_sender_smtp_check(hd_sender *s, hd_error *err);

/* "auto", "required" or "off" (any case; NULL or "" = auto) into *out. Returns 0 or
 * HD_ECONFIG ("HD_SMTP_TLS: 'yes' is not auto, required or off"). */
int hd_smtp_starttls_parse(const char *text, hd_smtp_starttls *out, hd_error *err);

/* ---- log (sender_log.c) ----------------------------------------------------------------- */

/* A sender that writes one info line a mail to lg (borrowed, must outlive the sender; NULL =
 * the process default logger) and delivers nothing: message "mail sent to the log", the
 * mail's correlation id, and the fields recipient_email (masked by the logger's "email"
 * rule, "a***@example.com"), subject, message_id, html_bytes and text_bytes. Never the
 * bodies: they hold links with tokens. Returns 0, HD_EINVAL or HD_ENOMEM. */
int hd_sender_log_new(hd_logger *lg, hd_sender **out);

/* ---- memory: a test double (sender.c) ---------------------------------------------------- */

/* A sender that keeps a copy of every mail it accepts, into *out (new). The first
 * fail_times sends fail with HD_ESMTP ("memory sender: simulated failure n of N") and keep
 * nothing; then every send succeeds. fail_times < 0 fails every send (for "retries
 * exhausted" tests). Returns 0, HD_EINVAL or HD_ENOMEM. Thread-safe. */
int hd_sender_memory_new(int fail_times, hd_sender **out);

/* Fail the next n sends (n < 0: all of them from now on; 0: none). */
void hd_sender_memory_fail_next(hd_sender *s, int n);

/* Sends attempted (failed ones included) and mails kept. */
size_t hd_sender_memory_attempts(const hd_sender *s);
size_t hd_sender_memory_count(const hd_sender *s);

/* The i-th mail kept (0 = first), borrowed from s: valid until s is freed. Its from is the
 * mail's from (NULL when it had none) and its message_id the one given (NULL when none).
 * NULL when i is out of range or s is not a memory sender. */
const hd_mail *hd_sender_memory_mail(const hd_sender *s, size_t i);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_SENDER_H */
