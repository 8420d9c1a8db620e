/* notifications/repository.c — the service's tables (see repository.h). */
#include <stdlib.h>
#include <string.h>

#include "repository.h"

/* Step 1. Times are epoch milliseconds (BIGINT on both databases). The partial index keeps
 * the sweeper's "what is due" query cheap however long the history grows: only pending rows
 * are in it. */
static const char *const migrations[] = {
    "CREATE TABLE notifications ("
    " id TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " recipient TEXT NOT NULL,"
    " subject TEXT,"
    " status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " last_error TEXT,"
    " created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL,"
    " sent_at BIGINT,"
    " correlation_id TEXT,"
    " cause_id TEXT,"
    " variables TEXT,"
    " due_at BIGINT,"
    " claim TEXT,"
    " version BIGINT NOT NULL);"
    "CREATE INDEX notifications_by_user ON notifications (user_id, created_at, id);"
    "CREATE INDEX notifications_due ON notifications (due_at) WHERE status = 'pending';"
    "CREATE TABLE notification_preferences ("
    " user_id TEXT PRIMARY KEY,"
    " email TEXT,"
    " email_verification INTEGER NOT NULL,"
    " password_reset INTEGER NOT NULL,"
    " welcome INTEGER NOT NULL,"
    " security_alert INTEGER NOT NULL,"
    " created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL,"
    " version BIGINT NOT NULL)",
    /* Step 2. variables_kind says which form the variables column holds (repository.h),
     * where step 1's rows told the event form by a text prefix "event:" (no JSON text starts
     * with it). Those rows are converted here, in the step's transaction: kind 'event',
     * prefix removed (6 ASCII characters: substr counts characters on both databases, and
     * "=" is exact where SQLite's LIKE ignores case). Known limit: both statements read the
     * whole table (the CHECK, and the UPDATE's WHERE, have no index) under the ALTER's lock;
     * a long history makes the upgrade take that long once. */
    "ALTER TABLE notifications ADD COLUMN variables_kind TEXT NOT NULL DEFAULT 'variables'"
    " CHECK (variables_kind IN ('variables', 'event'));"
    "UPDATE notifications SET variables_kind = 'event', variables = substr(variables, 7)"
    " WHERE substr(variables, 1, 6) = 'event:'",
};

#define STEPS (sizeof migrations / sizeof migrations[0])

int notif_repo_migrate(hd_store *store, hd_error *err)
{
    return hd_store_migrate(store, "notifications", migrations, STEPS, err);
}

int notif_repo_migrate_to(hd_store *store, size_t steps, hd_error *err)
{
    if (steps > STEPS)
        return hd_error_set(err, HD_EINVAL, "the notifications schema has %zu steps", STEPS);
    return hd_store_migrate(store, "notifications", migrations, steps, err);
}

/* ---- preferences ------------------------------------------------------------------------- */

int notif_repo_prefs_find(hd_store *store, const char *user_id, preferences *out, hd_error *err)
{
    int rc = preferences_defaults(out, user_id, err);
    if (rc < 0)
        return rc;
    hd_value p[] = {hd_value_text(user_id)};
    hd_rows *rows = NULL;
    rc = hd_store_query(store,
                        "SELECT email, email_verification, password_reset, welcome, security_alert,"
                        " created_at, updated_at, version"
                        " FROM notification_preferences WHERE user_id = $1",
                        p, 1, &rows, err);
    if (rc < 0 || hd_rows_count(rows) == 0) {
        hd_rows_free(rows);
        if (rc < 0)
            preferences_release(out);
        return rc < 0 ? rc : 0;
    }
    unsigned char on[NOTIFY_TYPE_COUNT];
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        on[i] = hd_rows_int(rows, 0, (size_t)(1 + i)) != 0;
    preferences_release(out);
    rc = preferences_load(out, user_id, hd_rows_int(rows, 0, 7), hd_rows_text(rows, 0, 0), on,
                          hd_rows_int(rows, 0, 5), hd_rows_int(rows, 0, 6));
    hd_rows_free(rows);
    if (rc < 0)
        return hd_error_set(err, rc, "preferences of %s: %s", user_id, hd_strerror(rc));
    return 1;
}

int notif_repo_prefs_save(hd_store *store, const preferences *p, int64_t expected_version,
                          hd_error *err)
{
    /* The parameters both statements share, $1..$8; the INSERT adds created_at, the UPDATE
     * the version it expects. */
    hd_value v[] = {
        hd_value_text(preferences_user_id(p)),
        hd_value_text(p->email[0] ? p->email : NULL),
        hd_value_int(p->enabled[NOTIFY_EMAIL_VERIFICATION]),
        hd_value_int(p->enabled[NOTIFY_PASSWORD_RESET]),
        hd_value_int(p->enabled[NOTIFY_WELCOME]),
        hd_value_int(p->enabled[NOTIFY_SECURITY_ALERT]),
        hd_value_int(p->updated_at_ms),
        hd_value_int(hd_aggregate_version(&p->base)),
        expected_version == 0 ? hd_value_int(p->created_at_ms) : hd_value_int(expected_version),
    };
    int rc;
    if (expected_version == 0) {
        /* ON CONFLICT DO NOTHING: a duplicate is an answer (0 rows), not an aborted
         * transaction. */
        rc = hd_store_exec(store,
                           "INSERT INTO notification_preferences (user_id, email,"
                           " email_verification, password_reset, welcome, security_alert,"
                           " updated_at, version, created_at)"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                           " ON CONFLICT (user_id) DO NOTHING",
                           v, 9, err);
        if (rc == 0)
            return hd_error_set(err, HD_EEXIST, "preferences of %s already exist",
                                preferences_user_id(p));
        return rc < 0 ? rc : 0;
    }
    rc = hd_store_exec(store,
                       "UPDATE notification_preferences SET email = $2,"
                       " email_verification = $3, password_reset = $4, welcome = $5,"
                       " security_alert = $6, updated_at = $7, version = $8"
                       " WHERE user_id = $1 AND version = $9",
                       v, 9, err);
    if (rc == 0)
        return hd_error_set(err, HD_ESTATE,
                            "preferences of %s were changed concurrently: read them again",
                            preferences_user_id(p));
    return rc < 0 ? rc : 0;
}

/* ---- notifications ----------------------------------------------------------------------- */

#define NOTIF_COLUMNS                                                                              \
    "id, user_id, type, recipient, subject, status, attempts, last_error, created_at,"             \
    " updated_at, sent_at, correlation_id, cause_id, version"
enum {
    C_ID,
    C_USER,
    C_TYPE,
    C_RCPT,
    C_SUBJECT,
    C_STATUS,
    C_ATTEMPTS,
    C_ERROR,
    C_CREATED,
    C_UPDATED,
    C_SENT,
    C_CID,
    C_CAUSE,
    C_VERSION,
    C_COUNT
};

/* Rebuild row r of rows (NOTIF_COLUMNS first) into *out. */
static int notif_from_row(const hd_rows *rows, size_t r, notification *out, hd_error *err)
{
    notification_spec s = {
        .user_id = hd_rows_text(rows, r, C_USER),
        .recipient = hd_rows_text(rows, r, C_RCPT),
        .subject = hd_rows_text(rows, r, C_SUBJECT),
        .correlation_id = hd_rows_text(rows, r, C_CID),
        .cause_id = hd_rows_text(rows, r, C_CAUSE),
    };
    notification_status st = NOTIFY_PENDING;
    const char *id = hd_rows_text(rows, r, C_ID);
    if (notification_type_parse(hd_rows_text(rows, r, C_TYPE), &s.type, NULL) < 0 ||
        notification_status_parse(hd_rows_text(rows, r, C_STATUS), &st, NULL) < 0)
        return hd_error_set(err, HD_ESTORE, "notification %s: bad type or status in the row",
                            id ? id : "?");
    int rc = notification_load(out, id, hd_rows_int(rows, r, C_VERSION), &s, st,
                               (int)hd_rows_int(rows, r, C_ATTEMPTS),
                               hd_rows_text(rows, r, C_ERROR), hd_rows_int(rows, r, C_CREATED),
                               hd_rows_int(rows, r, C_UPDATED), hd_rows_int(rows, r, C_SENT));
    return rc < 0 ? hd_error_set(err, rc, "notification %s: %s", id ? id : "?", hd_strerror(rc))
                  : 0;
}

/* The values of variables_kind (step 2's CHECK). */
static const char *const stored_kind_names[] = {
    [NOTIF_STORED_VARIABLES] = "variables",
    [NOTIF_STORED_EVENT] = "event",
};

static int stored_kind_parse(const char *s, notif_stored_kind *out)
{
    for (size_t k = 0; k < sizeof stored_kind_names / sizeof stored_kind_names[0]; k++)
        if (s != NULL && strcmp(s, stored_kind_names[k]) == 0) {
            *out = (notif_stored_kind)k;
            return 0;
        }
    return -1;
}

int notif_repo_insert(hd_store *store, const notification *n, const char *variables,
                      notif_stored_kind kind, int64_t due_at, const char *claim, hd_error *err)
{
    hd_value v[] = {
        hd_value_text(notification_id(n)),
        hd_value_text(n->user_id),
        hd_value_text(notification_type_name(n->type)),
        hd_value_text(n->recipient),
        hd_value_text(n->subject),
        hd_value_text(notification_status_name(n->status)),
        hd_value_int(n->attempts),
        hd_value_text(n->last_error),
        hd_value_int(n->created_at_ms),
        hd_value_int(n->updated_at_ms),
        n->sent_at_ms ? hd_value_int(n->sent_at_ms) : hd_value_null(),
        hd_value_text(n->correlation_id),
        hd_value_text(n->cause_id),
        hd_value_text(variables),
        n->status == NOTIFY_PENDING ? hd_value_int(due_at) : hd_value_null(),
        hd_value_text(claim),
        hd_value_int(hd_aggregate_version(&n->base)),
        /* anything but NOTIF_STORED_EVENT is stored as variables: the safe side */
        hd_value_text(stored_kind_names[kind == NOTIF_STORED_EVENT ? NOTIF_STORED_EVENT
                                                                   : NOTIF_STORED_VARIABLES]),
    };
    int rc = hd_store_exec(store,
                           "INSERT INTO notifications (" NOTIF_COLUMNS
                           ", variables, variables_kind, due_at, claim)"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                           " $17, $14, $18, $15, $16)",
                           v, sizeof v / sizeof v[0], err);
    return rc < 0 ? rc : 0;
}

int notif_repo_save_outcome(hd_store *store, const notification *n, int64_t due_at,
                            const char *claim, hd_error *err)
{
    int pending = n->status == NOTIFY_PENDING;
    hd_value v[] = {
        hd_value_text(notification_id(n)),
        hd_value_text(notification_status_name(n->status)),
        hd_value_int(n->attempts),
        hd_value_text(n->last_error),
        hd_value_int(n->updated_at_ms),
        n->sent_at_ms ? hd_value_int(n->sent_at_ms) : hd_value_null(),
        pending ? hd_value_int(due_at) : hd_value_null(),
        hd_value_int(pending),
        hd_value_int(hd_aggregate_version(&n->base)),
        hd_value_text(claim != NULL ? claim : ""),
    };
    /* claim is compared as '' for "nobody": NULL = NULL is not true in SQL. Pending rows
     * keep their variables for the next attempt; final rows lose them. */
    int rc = hd_store_exec(store,
                           "UPDATE notifications SET status = $2, attempts = $3, last_error = $4,"
                           " updated_at = $5, sent_at = $6, due_at = $7, claim = NULL,"
                           " variables = CASE WHEN $8 = 1 THEN variables ELSE NULL END,"
                           " version = $9"
                           " WHERE id = $1 AND status = 'pending' AND COALESCE(claim, '') = $10",
                           v, sizeof v / sizeof v[0], err);
    return rc < 0 ? rc : rc > 0;
}

int notif_repo_claim_due(hd_store *store, int64_t now_ms, int64_t lease_until_ms, const char *claim,
                         size_t limit, notif_claimed **out, size_t *n, hd_error *err)
{
    *out = NULL;
    *n = 0;
    hd_value v[] = {hd_value_text(claim), hd_value_int(lease_until_ms), hd_value_int(now_ms),
                    hd_value_int((int64_t)limit)};
    hd_rows *rows = NULL;
    /* The outer "due_at <= $3" is not redundant: on PostgreSQL a row claimed by a concurrent
     * sweeper is re-checked against it after that sweeper commits, and skipped. */
    int rc = hd_store_query(store,
                            "UPDATE notifications SET claim = $1, due_at = $2"
                            " WHERE status = 'pending' AND due_at <= $3 AND id IN"
                            " (SELECT id FROM notifications WHERE status = 'pending'"
                            " AND due_at <= $3 ORDER BY due_at LIMIT $4)"
                            " RETURNING " NOTIF_COLUMNS ", variables, variables_kind",
                            v, 4, &rows, err);
    if (rc < 0)
        return rc;
    size_t count = hd_rows_count(rows);
    notif_claimed *list = count ? calloc(count, sizeof *list) : NULL;
    if (count > 0 && list == NULL) {
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    for (size_t i = 0; i < count; i++) {
        if ((rc = notif_from_row(rows, i, &list[i].n, err)) < 0) {
            notif_claimed_free(list, i);
            hd_rows_free(rows);
            return rc;
        }
        const char *vars = hd_rows_text(rows, i, C_COUNT);
        const char *kind = hd_rows_text(rows, i, C_COUNT + 1);
        if (stored_kind_parse(kind, &list[i].kind) < 0) {
            rc = hd_error_set(err, HD_ESTORE, "notification %s: bad variables_kind '%s'",
                              notification_id(&list[i].n), kind ? kind : "NULL");
            notif_claimed_free(list, i + 1);
            hd_rows_free(rows);
            return rc;
        }
        if (vars != NULL && (list[i].variables = strdup(vars)) == NULL) {
            notif_claimed_free(list, i + 1);
            hd_rows_free(rows);
            return hd_error_set(err, HD_ENOMEM, NULL);
        }
    }
    hd_rows_free(rows);
    *out = list;
    *n = count;
    return (int)count;
}

void notif_claimed_free(notif_claimed *rows, size_t n)
{
    for (size_t i = 0; rows != NULL && i < n; i++) {
        notification_release(&rows[i].n);
        free(rows[i].variables);
    }
    free(rows);
}

int notif_repo_get(hd_store *store, const char *id, notification *out, hd_error *err)
{
    hd_value v[] = {hd_value_text(id)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, "SELECT " NOTIF_COLUMNS " FROM notifications WHERE id = $1", v,
                            1, &rows, err);
    if (rc == 0 && hd_rows_count(rows) == 0)
        rc = hd_error_set(err, HD_ENOTFOUND, "no notification with this id");
    else if (rc == 0)
        rc = notif_from_row(rows, 0, out, err);
    hd_rows_free(rows);
    return rc;
}

/* Turn every row into a notification (new array). */
static int notif_list_from_rows(const hd_rows *rows, notification **out, size_t *n, hd_error *err)
{
    size_t count = hd_rows_count(rows);
    notification *list = calloc(count ? count : 1, sizeof *list);
    if (list == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    for (size_t i = 0; i < count; i++) {
        int rc = notif_from_row(rows, i, &list[i], err);
        if (rc < 0) {
            notif_repo_list_free(list, i);
            return rc;
        }
    }
    *out = list;
    *n = count;
    return (int)count;
}

int notif_repo_history(hd_store *store, const char *user_id, int64_t before_ms,
                       const char *before_id, size_t limit, notification **out, size_t *n,
                       hd_error *err)
{
    *out = NULL;
    *n = 0;
    hd_rows *rows = NULL;
    int rc;
    if (before_id == NULL) {
        hd_value v[] = {hd_value_text(user_id), hd_value_int((int64_t)limit)};
        rc = hd_store_query(store,
                            "SELECT " NOTIF_COLUMNS " FROM notifications WHERE user_id = $1"
                            " ORDER BY created_at DESC, id DESC LIMIT $2",
                            v, 2, &rows, err);
    } else {
        hd_value v[] = {hd_value_text(user_id), hd_value_int(before_ms), hd_value_text(before_id),
                        hd_value_int((int64_t)limit)};
        /* Keyset paging: stable under inserts, unlike OFFSET, and served by the index. */
        rc = hd_store_query(store,
                            "SELECT " NOTIF_COLUMNS " FROM notifications WHERE user_id = $1"
                            " AND (created_at < $2 OR (created_at = $2 AND id < $3))"
                            " ORDER BY created_at DESC, id DESC LIMIT $4",
                            v, 4, &rows, err);
    }
    if (rc == 0)
        rc = notif_list_from_rows(rows, out, n, err);
    hd_rows_free(rows);
    return rc;
}

void notif_repo_list_free(notification *list, size_t n)
{
    for (size_t i = 0; list != NULL && i < n; i++)
        notification_release(&list[i]);
    free(list);
}

int notif_repo_erase_user(hd_store *store, const char *user_id, hd_error *err)
{
    hd_value v[] = {hd_value_text(user_id)};
    int rc =
        hd_store_exec(store, "DELETE FROM notification_preferences WHERE user_id = $1", v, 1, err);
    if (rc < 0)
        return rc;
    return hd_store_exec(store, "DELETE FROM notifications WHERE user_id = $1", v, 1, err);
}

int notif_repo_pending(hd_store *store, int64_t *pending, hd_error *err)
{
    hd_rows *rows = NULL;
    /* Served by the partial index of pending rows: cheap however long the history is. */
    int rc = hd_store_query(store, "SELECT COUNT(*) FROM notifications WHERE status = 'pending'",
                            NULL, 0, &rows, err);
    if (rc < 0)
        return rc;
    *pending = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return 0;
}
