/* notifications/domain.h — the notifications service's domain: the Notification aggregate,
 * the Preferences aggregate and the rules that tie them together.
 *
 * This layer knows the rules and nothing else: it includes herald's event and aggregate
 * modules and jansson, and no header of a database, a broker, an HTTP server or a mail
 * transport. Rendering a template, sending a mail, computing a backoff delay and writing a
 * row are done by the layers around it (the application layer, repository.c), which hand the
 * results in. That is what lets test_notifications_domain.c check every rule without a
 * database or a mail server.
 *
 * The rules that live here:
 *   - there are four notification types, and two of them (email_verification,
 *     password_reset) cannot be switched off: an account whose owner cannot confirm the
 *     address or recover the password is a locked account, and a user who "opted out" of
 *     them would have no way back in. Asking to switch one off is REFUSED (HD_EVALIDATE,
 *     the HTTP layer answers 422), not silently ignored: a client that believes it
 *     succeeded would show the user a setting that is not true;
 *   - preferences that were never saved are the defaults: every type on, no address of
 *     their own;
 *   - those two types always go to the account's own address (a verification mail sent
 *     anywhere else verifies nothing; a reset link sent elsewhere is an account takeover),
 *     the others to the address chosen in the preferences when there is one;
 *   - a notification is pending until an attempt succeeds (sent) or the attempts run out
 *     (failed); one the preferences do not allow is recorded as skipped and never sent;
 *     sent, failed and skipped are final.
 *
 * Domain events (type strings; the dispatcher routes on them). They stay inside the
 * service: integration.c turns the first two into the integration events other services
 * see (notifications.notification_sent v1, notifications.notification_failed v1).
 *   NOTIFICATION_SENT    "notification.sent"    {notification_id, user_id, type, attempts,
 *                                                sent_at, correlation_id, cause_id}
 *   NOTIFICATION_FAILED  "notification.failed"  {notification_id, user_id, type, attempts,
 *                                                last_error, failed_at, correlation_id,
 *                                                cause_id}
 *   PREFERENCES_UPDATED  "preferences.updated"  {user_id, email, enabled: {type: bool}}
 * correlation_id and cause_id (the id of the message that asked for the notification) are
 * null when unknown; they let the translator chain the integration event to its cause.
 *
 * Errors: a broken rule returns HD_EVALIDATE (bad input) or HD_ESTATE (not allowed in the
 * current state), with the reason in err.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef NOTIFICATIONS_DOMAIN_H
#define NOTIFICATIONS_DOMAIN_H

#include <stddef.h>
#include <stdint.h>

#include "herald/aggregate.h"
#include "herald/error.h"
#include "herald/event.h"

#define NOTIFICATION_AGGREGATE "notification" /* also the outbox's aggregate_type */
#define PREFERENCES_AGGREGATE  "preferences"

#define NOTIFICATION_SENT   "notification.sent"
#define NOTIFICATION_FAILED "notification.failed"
#define PREFERENCES_UPDATED "preferences.updated"

#define NOTIFY_EMAIL_MAX   254 /* RFC 5321 path limit without the angle brackets */
#define NOTIFY_USER_ID_MAX 128
#define NOTIFY_ERROR_MAX   512 /* longest last_error kept: enough for an SMTP reply */

/* ---- notification types ---------------------------------------------------------------- */

/* The four types; each is also the name of its template (template.h). */
typedef enum notification_type {
    NOTIFY_EMAIL_VERIFICATION = 0,
    NOTIFY_PASSWORD_RESET,
    NOTIFY_WELCOME,
    NOTIFY_SECURITY_ALERT,
    NOTIFY_TYPE_COUNT
} notification_type;

/* "email_verification", "password_reset", "welcome", "security_alert"; NULL for other
 * values. A borrowed static string. */
const char *notification_type_name(notification_type t);

/* The type called s. Returns 0, or HD_EVALIDATE ("unknown notification type 'x'"). */
int notification_type_parse(const char *s, notification_type *out, hd_error *err);

/* 0 for the types a user cannot switch off (email_verification, password_reset), else 1. */
int notification_type_switchable(notification_type t);

/* 1 for the types a client may ask for directly (POST /notifications): security_alert only.
 * The others are the users service's to trigger, through its events: a direct
 * password_reset or email_verification would let whoever calls the API choose the link in
 * a mail that looks like ours, and a direct welcome has no use. Refused with HD_EVALIDATE
 * (422) by notif_request_send. */
int notification_type_direct(notification_type t);

/* ---- small value checks (shared by both aggregates and the HTTP layer) ------------------ */

/* 1 when s is a user id this service accepts: 1..NOTIFY_USER_ID_MAX bytes of
 * [A-Za-z0-9._:-]. Ids come from the users service (UUIDs) and go into URLs and logs, so
 * anything else is refused rather than escaped. */
int notify_user_id_valid(const char *s);

/* 1 when s is an e-mail address herald can mail: hd_email_address_valid (herald/email.h),
 * the one rule the users service and the sender share. */
int notify_email_valid(const char *s);

/* ---- Preferences: one aggregate per user ------------------------------------------------ */
typedef struct preferences {
    hd_aggregate base;                /* MUST be first; its id is the user id */
    char email[NOTIFY_EMAIL_MAX + 1]; /* "" = no address of their own */
    unsigned char enabled[NOTIFY_TYPE_COUNT];
    int stored;            /* 0: the defaults, never saved */
    int64_t created_at_ms; /* 0 while not stored */
    int64_t updated_at_ms;
} preferences;

/* The defaults for user_id (copied; must be valid) in *p: every type on, no address,
 * not stored. Returns 0, HD_EVALIDATE (bad user id) or HD_ENOMEM; on failure *p needs no
 * release. */
int preferences_defaults(preferences *p, const char *user_id, hd_error *err);

/* Rebuild stored preferences (no event: nothing happened, they were only read). email may
 * be NULL or "" (none). enabled holds NOTIFY_TYPE_COUNT flags. Returns 0, HD_EINVAL or
 * HD_ENOMEM; on failure *p needs no release. */
int preferences_load(preferences *p, const char *user_id, int64_t version, const char *email,
                     const unsigned char *enabled, int64_t created_at_ms, int64_t updated_at_ms);

/* Free what p owns (its id, pending events); not p itself. NULL and twice are fine. */
void preferences_release(preferences *p);

/* The user id (borrowed). */
const char *preferences_user_id(const preferences *p);

/* 1 when a notification of type t may be sent: always for the types that cannot be
 * switched off, else the user's switch. */
int preferences_allows(const preferences *p, notification_type t);

/* Where a notification of type t for this user goes: account_email (borrowed) for the
 * types that cannot be switched off, else the preferences' address when there is one,
 * else account_email. Returns a borrowed pointer (into p or account_email). */
const char *preferences_recipient(const preferences *p, notification_type t,
                                  const char *account_email);

/* What a client asks to change. NOTIFY_KEEP leaves a switch (or the address) as it is. */
#define NOTIFY_KEEP (-1)
typedef struct preferences_change {
    const char *email;              /* NULL = keep; "" = remove the address; borrowed */
    int enabled[NOTIFY_TYPE_COUNT]; /* NOTIFY_KEEP, 0 (off) or 1 (on) */
} preferences_change;

/* A change that keeps everything (fill in what the client sent). */
void preferences_change_init(preferences_change *c);

/* Apply c to p at now_ms, all or nothing. Refused with HD_EVALIDATE: an address that is not
 * one; a non-switchable type set to 0 ("email_verification cannot be switched off: ...").
 * When something changed, or p was never stored (creating the record is a change even when
 * it holds the defaults), p becomes stored, PREFERENCES_UPDATED is raised and 1 returned;
 * otherwise 0 (no event: an event says something happened). */
int preferences_apply(preferences *p, const preferences_change *c, int64_t now_ms, hd_error *err);

/* ---- Notification: the aggregate root ---------------------------------------------------- */
typedef enum notification_status {
    NOTIFY_PENDING = 0, /* waiting for an attempt, or between attempts */
    NOTIFY_SENT,        /* an attempt succeeded: final */
    NOTIFY_FAILED,      /* the attempts ran out, or the mail can never be sent: final */
    NOTIFY_SKIPPED,     /* the preferences said no: final, never sent */
    NOTIFY_STATUS_COUNT
} notification_status;

/* "pending", "sent", "failed", "skipped"; NULL for other values. Borrowed static. */
const char *notification_status_name(notification_status s);

/* Returns 0 or HD_EVALIDATE. */
int notification_status_parse(const char *s, notification_status *out, hd_error *err);

typedef struct notification {
    hd_aggregate base; /* MUST be first: (notification *)agg converts back */
    char *user_id;     /* owned */
    notification_type type;
    char *recipient; /* owned */
    char *subject;   /* owned; NULL for a skipped notification (never rendered) */
    notification_status status;
    int attempts;          /* attempts made so far */
    char *last_error;      /* owned; NULL when no attempt failed */
    int64_t created_at_ms; /* epoch milliseconds */
    int64_t updated_at_ms;
    int64_t sent_at_ms;   /* 0 until sent */
    char *correlation_id; /* owned; NULL when none: the business flow it belongs to */
    char *cause_id;       /* owned; NULL when none: the message that asked for it */
} notification;

/* What a new notification is made of. All borrowed; correlation_id and cause_id may be
 * NULL; subject is required for a pending notification and ignored for a skipped one. */
typedef struct notification_spec {
    const char *user_id;
    notification_type type;
    const char *recipient;
    const char *subject;
    const char *correlation_id;
    const char *cause_id;
} notification_spec;

/* A new notification in *n (its memory is the caller's) with a fresh id, created now_ms:
 * pending when prefs allow its type, else skipped (and no subject is kept). prefs may be
 * NULL (the defaults). Raises nothing: a request is not yet a fact anyone else cares about.
 * Returns 1 (pending), 0 (skipped), HD_EVALIDATE (bad user id or recipient, no subject),
 * HD_EINVAL, HD_ENOMEM; on failure *n needs no release. */
int notification_new(notification *n, const notification_spec *spec, const preferences *prefs,
                     int64_t now_ms, hd_error *err);

/* Rebuild a stored notification (no event). Strings copied; subject, last_error,
 * correlation_id and cause_id may be NULL. Returns 0, HD_EINVAL or HD_ENOMEM; on failure
 * *n needs no release. */
int notification_load(notification *n, const char *id, int64_t version,
                      const notification_spec *spec, notification_status status, int attempts,
                      const char *last_error, int64_t created_at_ms, int64_t updated_at_ms,
                      int64_t sent_at_ms);

/* Free what n owns; not n itself. NULL and twice are fine. */
void notification_release(notification *n);

/* The id (borrowed). */
const char *notification_id(const notification *n);

/* 1 for sent, failed and skipped. */
int notification_is_final(const notification *n);

/* An attempt succeeded at now_ms: status sent, attempts + 1, last_error kept for the record.
 * Raises NOTIFICATION_SENT. HD_ESTATE unless pending. */
int notification_record_sent(notification *n, int64_t now_ms, hd_error *err);

/* An attempt failed with reason (borrowed; truncated to NOTIFY_ERROR_MAX): attempts + 1,
 * last_error = reason. When attempts reaches max_attempts (>= 1), or permanent is non-zero
 * (the mail can never be sent: retrying cannot help), the notification becomes failed and
 * NOTIFICATION_FAILED is raised. Returns 1 when it failed for good, 0 when it stays pending
 * for another attempt, HD_ESTATE unless pending, HD_EINVAL, HD_ENOMEM. */
int notification_record_failure(notification *n, const char *reason, int max_attempts,
                                int permanent, int64_t now_ms, hd_error *err);

#endif /* NOTIFICATIONS_DOMAIN_H */
