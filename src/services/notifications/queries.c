/* notifications/queries.c — the HTTP API's reads (one notification, a page of a user's
 * history) and the preferences it reads and changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/uow.h"

#include "internal.h"

void notif_wrote(notif_worker *w, const char *user_id)
{
    uint64_t lsn = 0;
    if (w->reads != NULL && hd_replica_wrote(w->reads, user_id, &lsn, NULL) == 0)
        w->wrote_lsn = lsn;
}

/* The store for a read of user_id's data that may be a little stale (replica.h). */
static hd_store *read_store(notif_worker *w, const char *user_id)
{
    return w->reads != NULL ? hd_replica_for_read(w->reads, user_id, w->min_lsn, NULL) : w->store;
}

/* rc is the read's result on s: when the standby failed under it, the store to run it again
 * on (the primary), else NULL. */
static hd_store *read_again(notif_worker *w, hd_store *s, int rc)
{
    return rc < 0 && rc != HD_EVALIDATE ? hd_replica_read_failed(w->reads, s, NULL) : NULL;
}

int notif_prefs_get(notif_worker *w, const char *user_id, preferences *out, hd_error *err)
{
    hd_store *s = read_store(w, user_id);
    int rc = notif_repo_prefs_find(s, user_id, out, err);
    if ((s = read_again(w, s, rc)) != NULL)
        rc = notif_repo_prefs_find(s, user_id, out, err);
    return rc;
}

/* Create (create = 1) or change the preferences of user_id, in one unit of work. Returns 1
 * when they were created now, 0 when they existed. */
static int prefs_write(notif_worker *w, const char *user_id, const preferences_change *c,
                       int create, preferences *out, hd_error *err)
{
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(w->store, w->app->dispatcher, &uow, err);
    if (rc < 0)
        return rc;
    int stored = rc = notif_repo_prefs_find(w->store, user_id, out, err);
    if (rc >= 0 && create && stored)
        rc = hd_error_set(err, HD_EEXIST, "preferences of this user already exist");
    int64_t expected = rc >= 0 ? hd_aggregate_version(&out->base) : 0;
    if (rc >= 0 && (rc = preferences_apply(out, c, hd_time_now_ms(), err)) == 1 &&
        (rc = notif_repo_prefs_save(w->store, out, stored ? expected : 0, err)) == 0)
        rc = hd_uow_track(uow, &out->base);
    if (rc < 0) {
        hd_uow_rollback(uow, NULL);
        if (stored >= 0)
            preferences_release(out);
        return rc;
    }
    if ((rc = hd_uow_commit(uow, err)) < 0) {
        preferences_release(out);
        return rc;
    }
    notif_wrote(w, user_id);
    return !stored;
}

int notif_prefs_create(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err)
{
    int rc = prefs_write(w, user_id, change, 1, out, err);
    return rc < 0 ? rc : 0;
}

int notif_prefs_update(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err)
{
    return prefs_write(w, user_id, change, 0, out, err);
}

int notif_get(notif_worker *w, const char *id, notification *out, hd_error *err)
{
    if (!hd_uuid_valid(id))
        return hd_error_set(err, HD_ENOTFOUND, "no notification with this id");
    return notif_repo_get(w->store, id, out, err);
}

/* "<created_at ms>.<notification id>": where the next page starts. Opaque to clients. */
static int cursor_parse(const char *cursor, int64_t *ms, const char **id, hd_error *err)
{
    char *end = NULL;
    long long v = strtoll(cursor, &end, 10);
    if (end == cursor || *end != '.' || v < 0 || cursor[0] == '-' || !hd_uuid_valid(end + 1))
        return hd_error_set(err, HD_EVALIDATE, "cursor is not one this service handed out");
    *ms = v;
    *id = end + 1;
    return 0;
}

int notif_history(notif_worker *w, const char *user_id, size_t limit, const char *cursor,
                  notification **list, size_t *n, char next_cursor[NOTIF_CURSOR_MAX + 1],
                  hd_error *err)
{
    next_cursor[0] = '\0';
    if (!notify_user_id_valid(user_id))
        return hd_error_set(err, HD_EVALIDATE, "user_id is not a valid user id");
    if (limit < 1 || limit > NOTIF_HISTORY_LIMIT_MAX)
        return hd_error_set(err, HD_EVALIDATE, "limit must be 1 to %d", NOTIF_HISTORY_LIMIT_MAX);
    int64_t before_ms = 0;
    const char *before_id = NULL;
    int rc = cursor != NULL && cursor[0] ? cursor_parse(cursor, &before_ms, &before_id, err) : 0;
    if (rc < 0)
        return rc;
    /* One row more than asked tells whether a next page exists, without a COUNT. */
    hd_store *s = read_store(w, user_id);
    rc = notif_repo_history(s, user_id, before_ms, before_id, limit + 1, list, n, err);
    if ((s = read_again(w, s, rc)) != NULL)
        rc = notif_repo_history(s, user_id, before_ms, before_id, limit + 1, list, n, err);
    if (rc < 0)
        return rc;
    if (*n > limit) {
        notification *last = &(*list)[limit - 1];
        snprintf(next_cursor, NOTIF_CURSOR_MAX + 1, "%lld.%s", (long long)last->created_at_ms,
                 notification_id(last));
        notification_release(&(*list)[limit]);
        *n = limit;
    }
    return (int)*n;
}

void notif_history_free(notification *list, size_t n)
{
    notif_repo_list_free(list, n);
}
