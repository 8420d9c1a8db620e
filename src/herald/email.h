/* herald/email.h — the one e-mail address check every part of herald agrees on.
 *
 * An address is accepted by the users service (registration), stored, carried in events,
 * and finally written into an SMTP command and a MIME header by the sender. If those
 * places disagree, a user can register with an address no mail will ever reach, and the
 * verification link never arrives. So they all ask this module, and a contract test
 * (tests/contract/test_email_addresses.c) feeds the same list through each of them.
 *
 * The rule is a deliberately conservative subset of RFC 5321/5322, the addresses every
 * mail server takes without extensions:
 *   - 3..HD_EMAIL_ADDRESS_MAX bytes, printable ASCII only: no spaces, no control
 *     characters, no bytes above 0x7e (internationalised addresses need SMTPUTF8, which
 *     the sender does not speak);
 *   - exactly one '@';
 *   - a local part of 1..HD_EMAIL_LOCAL_MAX bytes in dot-atom form: letters, digits and
 *     !#$%&'*+-/=?^_`{|}~, separated by single dots, no leading or trailing dot. No quoted
 *     local parts ("q"@x), so none of <>()[]\,;:" can reach a header or SMTP command;
 *   - a domain name with at least two labels (a dot, not at either end, no ".."); labels
 *     of letters, digits and '-', not starting or ending with '-'. No address literals
 *     (x@[127.0.0.1]): nobody registers with one, and they point mail at raw IPs.
 * Known limit: label length (63) is not checked; a server refuses such a domain anyway.
 * Case is not changed or judged here: normalising is the caller's choice (users.md).
 *
 * Pure: no allocation, no locale, no dependency; safe from any thread.
 */
#ifndef HERALD_EMAIL_H
#define HERALD_EMAIL_H

#ifdef __cplusplus
extern "C" {
#endif

#define HD_EMAIL_ADDRESS_MAX 254 /* RFC 5321 path limit, without the angle brackets */
#define HD_EMAIL_LOCAL_MAX   64  /* RFC 5321 4.5.3.1.1 */

/* 1 when addr (borrowed, NUL-terminated; NULL is refused) passes the rule above, else 0. */
int hd_email_address_valid(const char *addr);

/* Why addr is refused: a static, human-readable reason ("must contain exactly one '@'")
 * that never quotes the address (it is personal data), or NULL when it is valid. */
const char *hd_email_address_problem(const char *addr);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_EMAIL_H */
