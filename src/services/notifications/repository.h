/* notifications/repository.h — infrastructure: the service's tables, behind the store port.
 *
 * Two tables of the service's own (module "notifications" in hd_schema_migrations), next to
 * herald's hd_inbox and hd_outbox in the same database, so that one transaction covers an
 * inbox row, a notification and an outbox row:
 *
 *   notifications             one row per notification: its history (status, attempts,
 *                             last error, times) and, while it is PENDING, what is needed
 *                             to send it again after a crash or a failure: the template
 *                             variables (they hold links as good as passwords, so they are
 *                             erased the moment the notification is final; variables_kind
 *                             says which of two forms they are kept in), the time the
 *                             next attempt is due (due_at) and the claim that holds it.
 *   notification_preferences  one row per user who ever saved preferences.
 *
 * Leases (how two senders never send the same notification at once). A pending row is
 * "claimed" by whoever is about to send it: claim = a token of theirs, due_at = now + lease.
 * Others only take rows whose due_at has passed, and the outcome is written only
 * "WHERE claim = my token": a sender that was too slow (its lease ran out and another
 * sender took the row) finds its update matches nothing and knows it lost the row. The
 * consumer claims the rows it creates in the same INSERT; the sweeper claims rows that are
 * due (retries, rows of a crashed process, rows created by the API) with one UPDATE.
 *
 * Every SQL text is a constant, so the store's statement cache compiles it once.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef NOTIFICATIONS_REPOSITORY_H
#define NOTIFICATIONS_REPOSITORY_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/store.h"

#include "domain.h"

#define NOTIF_CLAIM_MAX 64 /* longest claim token */

/* Create or upgrade the service's two tables. Outside a transaction. Returns the steps
 * applied (>= 0) or hd_store_migrate's code. */
int notif_repo_migrate(hd_store *store, hd_error *err);

/* The same, up to schema step `steps` only (HD_EINVAL past the last one): a database as an
 * earlier version left it, for the tests of a later step. */
int notif_repo_migrate_to(hd_store *store, size_t steps, hd_error *err);

/* ---- preferences ------------------------------------------------------------------------- */

/* Load the preferences of user_id (borrowed) into *out: 1 when stored, 0 when absent (then
 * *out holds the defaults), or a negative code (HD_EVALIDATE for a bad user id). On success
 * *out must be released with preferences_release. */
int notif_repo_prefs_find(hd_store *store, const char *user_id, preferences *out, hd_error *err);

/* Write p (borrowed) after a preferences_apply: INSERT when expected_version is 0 (HD_EEXIST
 * when a row exists: created concurrently, or a POST for an existing user), else UPDATE
 * only if the stored version is still expected_version (optimistic locking: HD_ESTATE when
 * somebody else changed it in between). Returns 0 or a code. */
int notif_repo_prefs_save(hd_store *store, const preferences *p, int64_t expected_version,
                          hd_error *err);

/* ---- notifications ----------------------------------------------------------------------- */

/* Which form a row's stored text (column variables) holds, said by its own column
 * variables_kind (schema step 2) rather than by the text: see integration.h. Only the
 * consumer's path (an event asked for the notification) writes NOTIF_STORED_EVENT. */
typedef enum notif_stored_kind {
    NOTIF_STORED_VARIABLES = 0, /* 'variables': JSON text of the template variables (the API) */
    NOTIF_STORED_EVENT,         /* 'event': the body of the event that asked for it */
} notif_stored_kind;

/* Insert the new notification n (borrowed). variables (borrowed text of the given kind, may
 * be NULL for a final one) are kept while it is pending; due_at is when it may be (re)sent
 * by whoever claims it; claim (may be NULL) is the token of the sender that holds it until
 * due_at. Returns 0, HD_EEXIST or the store's code. */
int notif_repo_insert(hd_store *store, const notification *n, const char *variables,
                      notif_stored_kind kind, int64_t due_at, const char *claim, hd_error *err);

/* Write the outcome of an attempt on n (borrowed): status, attempts, last_error, times,
 * version. When n is still pending, due_at is its next attempt and the variables are kept;
 * when it is final they are erased. Only if the row is still held by claim (NULL: held by
 * nobody). Returns 1 when written, 0 when the row is no longer ours (our lease ran out and
 * another sender took it, or the user was erased), or a code. */
int notif_repo_save_outcome(hd_store *store, const notification *n, int64_t due_at,
                            const char *claim, hd_error *err);

/* One claimed row: the notification and what to render it with. */
typedef struct notif_claimed {
    notification n;         /* release with notification_release (notif_claimed_free does) */
    char *variables;        /* owned text of the form kind says; NULL when the row had none */
    notif_stored_kind kind; /* from the row's variables_kind */
} notif_claimed;

/* Claim up to limit pending rows due at now_ms (due_at <= now_ms), earliest first: they get
 * claim (borrowed) and due_at = lease_until_ms. One statement, so it is atomic alone; on
 * PostgreSQL two sweepers claiming at once never take the same row (the UPDATE re-checks
 * due_at on a row another transaction changed). On success *out is a new array of *n rows
 * (free with notif_claimed_free). Returns *n or a code. */
int notif_repo_claim_due(hd_store *store, int64_t now_ms, int64_t lease_until_ms, const char *claim,
                         size_t limit, notif_claimed **out, size_t *n, hd_error *err);

void notif_claimed_free(notif_claimed *rows, size_t n);

/* Load one notification by id into *out (release it). Returns 0, HD_ENOTFOUND or a code. */
int notif_repo_get(hd_store *store, const char *id, notification *out, hd_error *err);

/* A page of a user's history, newest first: rows created before (before_ms, before_id) in
 * (created_at, id) order, or from the newest when before_id is NULL. At most limit rows in
 * *out (new array of *n; free with notif_repo_list_free). Returns *n or a code. */
int notif_repo_history(hd_store *store, const char *user_id, int64_t before_ms,
                       const char *before_id, size_t limit, notification **out, size_t *n,
                       hd_error *err);

void notif_repo_list_free(notification *list, size_t n);

/* Delete the preferences and every notification of user_id. Returns the number of
 * notifications deleted or a code. */
int notif_repo_erase_user(hd_store *store, const char *user_id, hd_error *err);

/* The number of pending notifications (for metrics) into *pending. Returns 0 or a code. */
int notif_repo_pending(hd_store *store, int64_t *pending, hd_error *err);

#endif /* NOTIFICATIONS_REPOSITORY_H */
