/* notifications/domain.c — the rules of notifications and preferences (see domain.h).
 *
 * Every function that changes an aggregate checks the rules first, then raises its event,
 * then changes the state: if raising fails (out of memory) the aggregate is unchanged, so a
 * caller never holds a half-changed aggregate.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/email.h"

#include "domain.h"

static const char *const type_names[NOTIFY_TYPE_COUNT] = {
    "email_verification",
    "password_reset",
    "welcome",
    "security_alert",
};

static const char *const status_names[NOTIFY_STATUS_COUNT] = {
    "pending",
    "sent",
    "failed",
    "skipped",
};

/* ---- types and statuses ------------------------------------------------------------------ */

const char *notification_type_name(notification_type t)
{
    return (unsigned)t < NOTIFY_TYPE_COUNT ? type_names[t] : NULL;
}

int notification_type_parse(const char *s, notification_type *out, hd_error *err)
{
    for (int i = 0; s != NULL && i < NOTIFY_TYPE_COUNT; i++) {
        if (strcmp(s, type_names[i]) == 0) {
            *out = (notification_type)i;
            return 0;
        }
    }
    /* The value may be anything a client sent: name it only when it is short and plain. */
    if (s != NULL && strlen(s) <= 64 &&
        strspn(s, "abcdefghijklmnopqrstuvwxyz_0123456789") == strlen(s))
        return hd_error_set(err, HD_EVALIDATE,
                            "unknown notification type '%s' (known: email_verification, "
                            "password_reset, welcome, security_alert)",
                            s);
    return hd_error_set(err, HD_EVALIDATE,
                        "unknown notification type (known: email_verification, "
                        "password_reset, welcome, security_alert)");
}

int notification_type_switchable(notification_type t)
{
    return t != NOTIFY_EMAIL_VERIFICATION && t != NOTIFY_PASSWORD_RESET;
}

int notification_type_direct(notification_type t)
{
    return t == NOTIFY_SECURITY_ALERT;
}

const char *notification_status_name(notification_status s)
{
    return (unsigned)s < NOTIFY_STATUS_COUNT ? status_names[s] : NULL;
}

int notification_status_parse(const char *s, notification_status *out, hd_error *err)
{
    for (int i = 0; s != NULL && i < NOTIFY_STATUS_COUNT; i++) {
        if (strcmp(s, status_names[i]) == 0) {
            *out = (notification_status)i;
            return 0;
        }
    }
    return hd_error_set(err, HD_EVALIDATE, "unknown notification status");
}

/* ---- value checks ------------------------------------------------------------------------ */

int notify_user_id_valid(const char *s)
{
    if (s == NULL)
        return 0;
    size_t len = strlen(s);
    return len >= 1 && len <= NOTIFY_USER_ID_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == len;
}

int notify_email_valid(const char *s)
{
    return hd_email_address_valid(s); /* the rule users and the sender share */
}

/* A copy of s, or NULL for NULL s; *failed is set when memory ran out. */
static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL)
        return NULL;
    char *c = strdup(s);
    if (c == NULL)
        *failed = 1;
    return c;
}

/* Raise an event of type with payload (stolen) on agg, or report why it failed. */
static int raise_event(hd_aggregate *agg, const char *type, json_t *payload, hd_error *err)
{
    int rc = hd_aggregate_raise(agg, hd_event_new(type, payload));
    if (rc < 0)
        return hd_error_set(err, rc == HD_EINVAL ? HD_ENOMEM : rc, "cannot raise %s", type);
    return 0;
}

/* ---- Preferences ------------------------------------------------------------------------- */

int preferences_defaults(preferences *p, const char *user_id, hd_error *err)
{
    memset(p, 0, sizeof *p);
    if (!notify_user_id_valid(user_id))
        return hd_error_set(err, HD_EVALIDATE,
                            "user_id must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
                            NOTIFY_USER_ID_MAX);
    int rc = hd_aggregate_init(&p->base, PREFERENCES_AGGREGATE, user_id, 0);
    if (rc < 0)
        return hd_error_set(err, rc, "preferences: %s", hd_strerror(rc));
    memset(p->enabled, 1, sizeof p->enabled);
    return 0;
}

int preferences_load(preferences *p, const char *user_id, int64_t version, const char *email,
                     const unsigned char *enabled, int64_t created_at_ms, int64_t updated_at_ms)
{
    memset(p, 0, sizeof *p);
    if (user_id == NULL || enabled == NULL || (email != NULL && strlen(email) > NOTIFY_EMAIL_MAX))
        return HD_EINVAL;
    int rc = hd_aggregate_init(&p->base, PREFERENCES_AGGREGATE, user_id, version);
    if (rc < 0)
        return rc;
    if (email != NULL)
        strcpy(p->email, email);
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        p->enabled[i] = enabled[i] != 0;
    p->stored = 1;
    p->created_at_ms = created_at_ms;
    p->updated_at_ms = updated_at_ms;
    return 0;
}

void preferences_release(preferences *p)
{
    if (p != NULL)
        hd_aggregate_release(&p->base);
}

const char *preferences_user_id(const preferences *p)
{
    return p ? hd_aggregate_id(&p->base) : NULL;
}

int preferences_allows(const preferences *p, notification_type t)
{
    if ((unsigned)t >= NOTIFY_TYPE_COUNT)
        return 0;
    if (!notification_type_switchable(t) || p == NULL)
        return 1;
    return p->enabled[t] != 0;
}

const char *preferences_recipient(const preferences *p, notification_type t,
                                  const char *account_email)
{
    if (!notification_type_switchable(t) || p == NULL || p->email[0] == '\0')
        return account_email;
    return p->email;
}

void preferences_change_init(preferences_change *c)
{
    c->email = NULL;
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        c->enabled[i] = NOTIFY_KEEP;
}

/* Check every part of c before anything changes: all or nothing. */
static int prefs_check_change(const preferences_change *c, hd_error *err)
{
    if (c->email != NULL && c->email[0] != '\0' && !notify_email_valid(c->email))
        return hd_error_set(err, HD_EVALIDATE, "email is not a valid e-mail address");
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++) {
        if (c->enabled[i] == 0 && !notification_type_switchable((notification_type)i))
            return hd_error_set(err, HD_EVALIDATE,
                                "%s cannot be switched off: without it a user could not "
                                "confirm the address or recover the account",
                                type_names[i]);
        if (c->enabled[i] != NOTIFY_KEEP && c->enabled[i] != 0 && c->enabled[i] != 1)
            return hd_error_set(err, HD_EINVAL, "preferences_apply: bad switch value");
    }
    return 0;
}

static json_t *prefs_to_json(const char *user_id, const char *email, const unsigned char *enabled)
{
    json_t *on = json_object();
    for (int i = 0; on != NULL && i < NOTIFY_TYPE_COUNT; i++)
        json_object_set_new(on, type_names[i], json_boolean(enabled[i]));
    /* "o" steals on, also when packing fails; a NULL on makes the pack fail. */
    return json_pack("{s:s, s:s?, s:o}", "user_id", user_id, "email", email[0] ? email : NULL,
                     "enabled", on);
}

int preferences_apply(preferences *p, const preferences_change *c, int64_t now_ms, hd_error *err)
{
    if (p == NULL || c == NULL)
        return hd_error_set(err, HD_EINVAL, "preferences_apply: NULL argument");
    int rc = prefs_check_change(c, err);
    if (rc < 0)
        return rc;
    /* Work on copies, compare, then commit the copies. */
    char email[NOTIFY_EMAIL_MAX + 1];
    unsigned char enabled[NOTIFY_TYPE_COUNT];
    strcpy(email, c->email != NULL ? c->email : p->email);
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        enabled[i] = c->enabled[i] == NOTIFY_KEEP ? p->enabled[i] : (unsigned char)c->enabled[i];
    int changed = strcmp(email, p->email) != 0 || memcmp(enabled, p->enabled, sizeof enabled) != 0;
    if (!changed && p->stored)
        return 0;
    json_t *payload = prefs_to_json(preferences_user_id(p), email, enabled);
    if ((rc = raise_event(&p->base, PREFERENCES_UPDATED, payload, err)) < 0)
        return rc;
    strcpy(p->email, email);
    memcpy(p->enabled, enabled, sizeof enabled);
    if (!p->stored)
        p->created_at_ms = now_ms;
    p->stored = 1;
    p->updated_at_ms = now_ms;
    return 1;
}

/* ---- Notification ------------------------------------------------------------------------ */

/* Fill the fields every notification has; shared by new and load. */
static int notif_init(notification *n, const char *id, int64_t version, const notification_spec *s,
                      const char *subject)
{
    memset(n, 0, sizeof *n);
    int rc = hd_aggregate_init(&n->base, NOTIFICATION_AGGREGATE, id, version);
    if (rc < 0)
        return rc;
    int failed = 0;
    n->type = s->type;
    n->user_id = dup_or_null(s->user_id, &failed);
    n->recipient = dup_or_null(s->recipient, &failed);
    n->subject = dup_or_null(subject, &failed);
    n->correlation_id = dup_or_null(s->correlation_id, &failed);
    n->cause_id = dup_or_null(s->cause_id, &failed);
    if (failed) {
        notification_release(n);
        return HD_ENOMEM;
    }
    return 0;
}

static int notif_check_spec(const notification_spec *s, int pending, hd_error *err)
{
    if ((unsigned)s->type >= NOTIFY_TYPE_COUNT)
        return hd_error_set(err, HD_EVALIDATE, "unknown notification type");
    if (!notify_user_id_valid(s->user_id))
        return hd_error_set(err, HD_EVALIDATE,
                            "user_id must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
                            NOTIFY_USER_ID_MAX);
    if (!notify_email_valid(s->recipient))
        return hd_error_set(err, HD_EVALIDATE, "recipient is not a valid e-mail address");
    if (pending && (s->subject == NULL || s->subject[0] == '\0'))
        return hd_error_set(err, HD_EVALIDATE, "a notification to send needs a subject");
    return 0;
}

int notification_new(notification *n, const notification_spec *spec, const preferences *prefs,
                     int64_t now_ms, hd_error *err)
{
    if (n == NULL || spec == NULL)
        return hd_error_set(err, HD_EINVAL, "notification_new: NULL argument");
    memset(n, 0, sizeof *n);
    int pending = preferences_allows(prefs, spec->type);
    int rc = notif_check_spec(spec, pending, err);
    if (rc < 0)
        return rc;
    if ((rc = notif_init(n, NULL, 0, spec, pending ? spec->subject : NULL)) < 0)
        return hd_error_set(err, rc, "notification_new: %s", hd_strerror(rc));
    n->status = pending ? NOTIFY_PENDING : NOTIFY_SKIPPED;
    n->created_at_ms = n->updated_at_ms = now_ms;
    return pending;
}

int notification_load(notification *n, const char *id, int64_t version,
                      const notification_spec *spec, notification_status status, int attempts,
                      const char *last_error, int64_t created_at_ms, int64_t updated_at_ms,
                      int64_t sent_at_ms)
{
    if (n == NULL || id == NULL || spec == NULL || (unsigned)status >= NOTIFY_STATUS_COUNT ||
        attempts < 0)
        return HD_EINVAL;
    int rc = notif_init(n, id, version, spec, spec->subject);
    if (rc < 0)
        return rc;
    int failed = 0;
    n->last_error = dup_or_null(last_error, &failed);
    if (failed) {
        notification_release(n);
        return HD_ENOMEM;
    }
    n->status = status;
    n->attempts = attempts;
    n->created_at_ms = created_at_ms;
    n->updated_at_ms = updated_at_ms;
    n->sent_at_ms = sent_at_ms;
    return 0;
}

void notification_release(notification *n)
{
    if (n == NULL)
        return;
    hd_aggregate_release(&n->base);
    free(n->user_id);
    free(n->recipient);
    free(n->subject);
    free(n->last_error);
    free(n->correlation_id);
    free(n->cause_id);
    n->user_id = n->recipient = n->subject = n->last_error = NULL;
    n->correlation_id = n->cause_id = NULL;
}

const char *notification_id(const notification *n)
{
    return n ? hd_aggregate_id(&n->base) : NULL;
}

int notification_is_final(const notification *n)
{
    return n->status != NOTIFY_PENDING;
}

static int notif_check_pending(const notification *n, const char *op, hd_error *err)
{
    if (n == NULL)
        return hd_error_set(err, HD_EINVAL, "%s: NULL notification", op);
    if (n->status != NOTIFY_PENDING)
        return hd_error_set(err, HD_ESTATE, "%s: notification %s is %s, not pending", op,
                            notification_id(n), notification_status_name(n->status));
    return 0;
}

/* Set member key of o to the string v: 0, or -1 when v is NULL and the member is required,
 * or v is not UTF-8, or memory runs out (json_pack's "s:s" and "s:s?" fail the same way). */
static int put_string(json_t *o, const char *key, const char *v, int optional)
{
    if (v == NULL)
        return optional ? 0 : -1;
    return json_object_set_new(o, key, json_string(v)); /* -1 for a NULL value too */
}

/* The facts both outcome events carry: new, or NULL. Built member by member, not with
 * json_pack, whose format string is parsed anew each call: 11,300 instructions a sent
 * notification (callgrind, issue 14's ninth pass); the same members in the same order. */
static json_t *notif_facts(const notification *n, int attempts)
{
    json_t *o = json_object();
    if (o == NULL || put_string(o, "notification_id", notification_id(n), 0) < 0 ||
        put_string(o, "user_id", n->user_id, 0) < 0 ||
        put_string(o, "type", type_names[n->type], 0) < 0 ||
        json_object_set_new(o, "attempts", json_integer(attempts)) < 0 ||
        put_string(o, "correlation_id", n->correlation_id, 1) < 0 ||
        put_string(o, "cause_id", n->cause_id, 1) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int notification_record_sent(notification *n, int64_t now_ms, hd_error *err)
{
    int rc = notif_check_pending(n, "notification_record_sent", err);
    if (rc < 0)
        return rc;
    json_t *payload = notif_facts(n, n->attempts + 1);
    if (payload != NULL)
        json_object_set_new(payload, "sent_at_ms", json_integer(now_ms));
    if ((rc = raise_event(&n->base, NOTIFICATION_SENT, payload, err)) < 0)
        return rc;
    n->attempts++;
    n->status = NOTIFY_SENT;
    n->sent_at_ms = n->updated_at_ms = now_ms;
    return 0;
}

/* A copy of reason cut to NOTIFY_ERROR_MAX bytes (never inside a UTF-8 sequence). */
static char *notif_error_copy(const char *reason)
{
    if (reason == NULL || reason[0] == '\0')
        reason = "unknown error";
    size_t len = strlen(reason);
    if (len > NOTIFY_ERROR_MAX) {
        len = NOTIFY_ERROR_MAX;
        while (len > 0 && ((unsigned char)reason[len] & 0xc0) == 0x80)
            len--;
    }
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, reason, len);
        copy[len] = '\0';
    }
    return copy;
}

int notification_record_failure(notification *n, const char *reason, int max_attempts,
                                int permanent, int64_t now_ms, hd_error *err)
{
    int rc = notif_check_pending(n, "notification_record_failure", err);
    if (rc < 0)
        return rc;
    if (max_attempts < 1)
        return hd_error_set(err, HD_EINVAL, "notification_record_failure: max_attempts < 1");
    char *copy = notif_error_copy(reason);
    if (copy == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int final = permanent || n->attempts + 1 >= max_attempts;
    if (final) {
        json_t *payload = notif_facts(n, n->attempts + 1);
        if (payload != NULL) {
            json_object_set_new(payload, "last_error", json_string(copy));
            json_object_set_new(payload, "failed_at_ms", json_integer(now_ms));
        }
        if ((rc = raise_event(&n->base, NOTIFICATION_FAILED, payload, err)) < 0) {
            free(copy);
            return rc;
        }
        n->status = NOTIFY_FAILED;
    }
    free(n->last_error);
    n->last_error = copy;
    n->attempts++;
    n->updated_at_ms = now_ms;
    return final;
}
