/* sender_log.c — the log sender: one JSON line a mail, nothing delivered; see sender.h.
 *
 * It stands in for the SMTP sender where a mail server would only get in the way: in the
 * benchmarks (which measure herald, not a mail server) and on a developer's machine. What
 * it writes is what an operator needs to follow a notification (who, which subject, which
 * correlation id), and no more: the bodies carry verification and reset links, which are
 * as good as passwords, so they never reach a log.
 */
#include "herald/sender.h"

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
     * default rules: the address is personal data, its domain helps to debug delivery. */
    json_t *fields =
        json_pack("{s:s, s:s, s:s?, s:I, s:I}", "recipient_email", mail->to, "subject",
                  mail->subject, "message_id", mail->message_id, "html_bytes",
                  (json_int_t)strlen(mail->html), "text_bytes", (json_int_t)strlen(mail->text));
    if (fields == NULL) /* jansson refuses strings that are not UTF-8 */
        return hd_error_set(err, HD_EINVAL, "log sender: the recipient or subject is not UTF-8");
    hd_log_json(s->lg, HD_LOG_INFO, mail->correlation_id, "mail sent to the log", fields);
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
