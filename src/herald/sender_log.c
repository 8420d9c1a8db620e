/* sender_log.c — the log sender: one JSON line a mail, nothing delivered; see sender.h.
 *
 * It stands in for the SMTP sender where a mail server would only get in the way: in the
 * benchmarks (which measure herald, not a mail server) and on a developer's machine. What
 * it writes is what an operator needs to follow a notification (who, which subject, which
 * correlation id), and no more: the bodies carry verification and reset links, which are
 * as good as passwords, so they never reach a log.
 */
#include "herald/sender.h"
#include "herald/utf8.h"

#include <stdlib.h>
#include <string.h>

typedef struct log_sender {
    hd_sender base; /* first: an hd_sender * is a log_sender * */
    hd_logger *lg;  /* borrowed; NULL = the process default */
} log_sender;

static int log_send(hd_sender *base, const hd_mail *mail, hd_error *err)
{
    log_sender *s = (log_sender *)base;
    /* "recipient_email" contains "email", so the logger masks it (a***@example.com) by its
     * default rules: the address is personal data, its domain helps to debug delivery.
     * hd_log_fields, not json_pack + hd_log_json: this line is written for every mail, and
     * through a jansson object it cost ~40,000 instructions (docs/modules/log.md). The line
     * would clean bytes that are not UTF-8; a mail with such a recipient or subject is
     * refused instead, as when the fields were a JSON object. */
    if (!hd_utf8_valid(mail->to) || !hd_utf8_valid(mail->subject) ||
        (mail->message_id != NULL && !hd_utf8_valid(mail->message_id)))
        return hd_error_set(err, HD_EINVAL, "log sender: the recipient or subject is not UTF-8");
    const hd_log_field fields[] = {
        {.key = "recipient_email", .s = mail->to},
        {.key = "subject", .s = mail->subject},
        {.key = "message_id", .s = mail->message_id},
        {.key = "html_bytes", .kind = HD_LOG_INT, .i = (long long)strlen(mail->html)},
        {.key = "text_bytes", .kind = HD_LOG_INT, .i = (long long)strlen(mail->text)},
    };
    hd_log_fields(s->lg, HD_LOG_INFO, mail->correlation_id, "mail sent to the log", fields,
                  sizeof fields / sizeof fields[0]);
    return 0;
}

static void log_destroy(hd_sender *base)
{
    free(base);
}

static const hd_sender_methods log_methods = {
    .name = "log",
    .send = log_send,
    .destroy = log_destroy,
};

int hd_sender_log_new(hd_logger *lg, hd_sender **out)
{
    if (out == NULL)
        return HD_EINVAL;
    log_sender *s = calloc(1, sizeof *s);
    if (s == NULL)
        return HD_ENOMEM;
    s->base.methods = &log_methods;
    s->lg = lg;
    *out = &s->base;
    return 0;
}
