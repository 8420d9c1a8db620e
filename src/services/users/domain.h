/* users/domain.h — the users service's domain: the User aggregate, the Email value object,
 * the password policy and the domain events.
 *
 * This layer knows the rules and nothing else: it includes herald's event and aggregate
 * modules and jansson, and no header of a database, a broker, an HTTP server or a crypto
 * library. Hashing a password, drawing a random token or writing a row are done by the
 * layers around it (application.c, repository.c), which hand the results in. That is what
 * lets test_users_domain.c test every rule without a database, and what would let the
 * service move to another store or transport without touching this file.
 *
 * The rules live here:
 *   - an Email is valid and normalised (see email_parse), or it does not exist;
 *   - a password meets the policy (password_check) before anyone hashes it;
 *   - a name is short, trimmed text without control characters (name_parse);
 *   - a user is verified once; a deleted user raises nothing more.
 *
 * Domain events (type strings; the dispatcher routes on them). They never leave the
 * process as they are: integration.c turns some of them into the integration events other
 * services see (users.user_registered v1, ...), which are a published contract.
 *   USER_REGISTERED          "user.registered"   {user_id, email, name, verification_token}
 *   USER_VERIFIED            "user.verified"     {user_id, email, name}
 *   USER_PASSWORD_RESET_REQUESTED
 *                            "user.password_reset_requested" {user_id, email, name, reset_token}
 *   USER_UPDATED             "user.updated"      {user_id, name, previous_name}
 *   USER_PASSWORD_CHANGED    "user.password_changed"  {user_id}
 *   USER_DELETED             "user.deleted"      {user_id, email}
 * The two tokens travel in clear in the in-memory event because the email that carries the
 * link is their only reason to exist; they are stored only as hashes (application.c), and
 * the log module redacts any field whose name contains "token".
 *
 * Errors: a broken rule returns HD_EVALIDATE (bad input: the HTTP layer answers 422) or
 * HD_ESTATE (the operation is not allowed in the user's state), with the reason in err.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_DOMAIN_H
#define USERS_DOMAIN_H

#include <stddef.h>
#include <stdint.h>

#include "herald/aggregate.h"
#include "herald/error.h"
#include "herald/event.h"

#define USER_AGGREGATE "user" /* hd_aggregate type; also the outbox's aggregate_type */

#define USER_REGISTERED               "user.registered"
#define USER_VERIFIED                 "user.verified"
#define USER_PASSWORD_RESET_REQUESTED "user.password_reset_requested"
#define USER_UPDATED                  "user.updated"
#define USER_PASSWORD_CHANGED         "user.password_changed"
#define USER_DELETED                  "user.deleted"

#define USER_EMAIL_MAX       254 /* RFC 5321: the longest path is 256 with its <> */
#define USER_EMAIL_LOCAL_MAX 64  /* RFC 5321 4.5.3.1.1 */
#define USER_PASSWORD_MIN    8   /* characters (code points), not bytes */
#define USER_PASSWORD_MAX    128 /* long enough for passphrases, short enough to hash */
#define USER_NAME_MAX        100 /* characters */
#define USER_NAME_BYTES_MAX  (USER_NAME_MAX * 4) /* UTF-8 needs at most 4 bytes each */

/* ---- Email: a value object ------------------------------------------------------------
 * A value object has no identity: two emails with the same text are the same email. It is
 * valid from birth (email_parse is the only way to make one), and normalised, so that
 * comparing two of them is comparing their text. It is a plain struct of fixed size: it
 * can be copied by assignment and owns nothing, so it never needs freeing. */
typedef struct email {
    char text[USER_EMAIL_MAX + 1];
} email;

/* Parse raw (borrowed) into *out. The address is trimmed of surrounding blanks, must be at
 * most USER_EMAIL_MAX bytes, and must then pass herald's one address rule
 * (hd_email_address_valid, herald/email.h: printable ASCII, one '@', a dot-atom local part
 * of 1..64 bytes, a domain name with a dot). That rule is shared with the notifications
 * service and the sender, so that every address registered here can be mailed; a
 * contract test (tests/contract/test_email_addresses.c) holds the three together.
 * Internationalised addresses are refused for the same reason: the sender does not speak
 * SMTPUTF8, so such a user could never receive the verification link.
 * The result is lower-cased as a whole, local part included: RFC 5321 lets a server treat
 * "Ada" and "ada" as two mailboxes, but no common provider does, and two accounts that
 * differ only in case are an account-takeover trap and a support nightmare. The UNIQUE
 * index on the lower-cased text then makes "one account per address" hold in the database.
 * Returns 0, or HD_EVALIDATE with the rule that failed in err ("must contain exactly one
 * '@'"), or HD_EINVAL for NULL arguments. *out is untouched on failure. */
int email_parse(const char *raw, email *out, hd_error *err);

/* ---- password policy and names ---------------------------------------------------------- */

/* Check password (borrowed, in clear) against the policy: USER_PASSWORD_MIN to
 * USER_PASSWORD_MAX characters, counted as UTF-8 code points, so that "é" is one. Not
 * trimmed (a blank is a legitimate character) and no composition rules: length is what
 * makes a password strong (NIST SP 800-63B 5.1.1.2). len is its length in bytes: a JSON
 * string may hold a NUL, which C would silently cut, so the caller passes the length it
 * parsed and an embedded NUL is refused. The password never appears in err.
 * Returns 0, HD_EVALIDATE or HD_EINVAL. */
int password_check(const char *password, size_t len, hd_error *err);

/* Parse a display name: trimmed; 0..USER_NAME_MAX characters; no control characters
 * (a name ends up in email headers and logs). raw may be NULL (no name: ""). out must hold
 * USER_NAME_BYTES_MAX + 1 bytes. Returns 0, HD_EVALIDATE or HD_EINVAL. */
int name_parse(const char *raw, char out[USER_NAME_BYTES_MAX + 1], hd_error *err);

/* ---- User: the aggregate root ----------------------------------------------------------- */
typedef struct user {
    hd_aggregate base;     /* MUST be first: (user *)agg converts back (C11 6.7.2.1) */
    email email;           /* unique, normalised */
    char *name;            /* owned; "" when not given */
    char *password_hash;   /* owned; an argon2id string, never the password */
    int verified;          /* the owner proved the address is theirs */
    int deleted;           /* user_delete ran: nothing more may happen to it */
    int64_t created_at_ms; /* epoch milliseconds */
    int64_t updated_at_ms;
} user;

/* Register a new user in *u (its memory is the caller's; zeroed or not): a fresh UUID, not
 * verified, created and updated now_ms. addr and name (already parsed) and password_hash
 * (made by the application from a password that passed password_check) are copied, and so
 * is verification_token (the clear token the email will carry; see the top of this file).
 * Raises USER_REGISTERED. Returns 0, HD_EINVAL, HD_ENOMEM; on failure *u needs no release
 * (it is left released). */
int user_register(user *u, const email *addr, const char *name, const char *password_hash,
                  const char *verification_token, int64_t now_ms, hd_error *err);

/* Rebuild a stored user in *u (no event: nothing happened, it was only read). Strings are
 * copied. version is the stored aggregate version (optimistic locking). Returns 0,
 * HD_EINVAL, HD_ENOMEM; on failure *u is left released. */
int user_load(user *u, const char *id, int64_t version, const email *addr, const char *name,
              const char *password_hash, int verified, int64_t created_at_ms,
              int64_t updated_at_ms);

/* Free what u owns (strings, pending events); not u itself. NULL is fine; twice is fine. */
void user_release(user *u);

/* The user's id (borrowed). */
const char *user_id(const user *u);

/* The owner proved the address (the application checked the token). Raises USER_VERIFIED.
 * HD_ESTATE when already verified or deleted. */
int user_verify(user *u, int64_t now_ms, hd_error *err);

/* Somebody asked to reset this user's password; reset_token (copied) is the clear token
 * the email will carry. Raises USER_PASSWORD_RESET_REQUESTED. HD_ESTATE when deleted.
 * (The state does not change: a request proves nothing until the token comes back.) */
int user_request_password_reset(user *u, const char *reset_token, int64_t now_ms, hd_error *err);

/* Change the display name (already parsed). Raises USER_UPDATED when it changed; the same
 * name again is a no-op (returns 0, raises nothing: an event says something happened).
 * The email cannot be changed here: a new address would need its own verification round,
 * which this service leaves as an exercise (docs/services/users.md). HD_ESTATE when
 * deleted. Returns 1 when changed, 0 when not, or a code. */
int user_rename(user *u, const char *name, int64_t now_ms, hd_error *err);

/* Replace the password hash with password_hash (copied): the application checked the reset
 * token and hashed a new password that passed password_check. Raises
 * USER_PASSWORD_CHANGED (never with the hash). HD_ESTATE when deleted. */
int user_change_password(user *u, const char *password_hash, int64_t now_ms, hd_error *err);

/* Delete the user. Raises USER_DELETED (the repository removes the row). HD_ESTATE when
 * already deleted. */
int user_delete(user *u, int64_t now_ms, hd_error *err);

#endif /* USERS_DOMAIN_H */
