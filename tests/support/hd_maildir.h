/* hd_maildir.h — reading back what the SMTP sink (scripts/smtp_sink.py) stored: one file
 * <id>.eml a message in $HD_SMTP_MAILDIR, its envelope lines ("X-Envelope-To: <rcpt>")
 * before the message's own headers. Shared by the SMTP sender's tests.
 *
 * Include after the cmocka prelude (see hd_test.h). */
#ifndef HD_MAILDIR_H
#define HD_MAILDIR_H

#include <stdint.h>

/* The message stored for recipient rcpt (its envelope line before the body), polled every
 * 50 ms up to wait_ms (the sink writes after answering 250, so it may lag the send a
 * little). New string; NULL when none came. Fails the test when maildir cannot be opened. */
char *hd_maildir_find(const char *maildir, const char *rcpt, int64_t wait_ms);

#endif
