/* users/repository.c — users and tokens in the store; see repository.h. */
#include "repository.h"

#include <stdio.h>
#include <string.h>

#include "herald/outbox.h"

/* The same DDL runs on SQLite and PostgreSQL: TEXT, BIGINT (64-bit on both; INTEGER is 32
 * bits on PostgreSQL) and INTEGER 0/1 for the flag (a PostgreSQL BOOLEAN would come back as
 * "t"/"f" text, SQLite's as 1/0: an integer reads the same on both). */
static const char *const migrations[] = {
    "CREATE TABLE users ("
    " id TEXT PRIMARY KEY,"
    " email TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL,"
    " password_hash TEXT NOT NULL,"
    " verified INTEGER NOT NULL DEFAULT 0,"
    " version BIGINT NOT NULL,"
    " created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL);"
    "CREATE INDEX users_created ON users (created_at, id);"
    "CREATE TABLE user_tokens ("
    " token_hash TEXT PRIMARY KEY,"
    " user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " purpose TEXT NOT NULL,"
    " created_at BIGINT NOT NULL,"
    " expires_at BIGINT NOT NULL,"
    " used_at BIGINT);"
    "CREATE INDEX user_tokens_user ON user_tokens (user_id)",
};

int users_repo_migrate(hd_store *store, hd_error *err)
{
    int applied =
        hd_store_migrate(store, "users", migrations, sizeof migrations / sizeof migrations[0], err);
    if (applied < 0)
        return applied;
    int outbox = hd_outbox_migrate(store, err);
    return outbox < 0 ? outbox : applied + outbox;
}

/* ---- users ------------------------------------------------------------------------------ */

#define REPO_USER_COLUMNS                                                                          \
    "id, email, name, password_hash, verified, version, created_at, updated_at"

int users_repo_add(hd_store *store, const user *u, hd_error *err)
{
    hd_value p[] = {
        hd_value_text(user_id(u)),      hd_value_text(u->email.text),
        hd_value_text(u->name),         hd_value_text(u->password_hash),
        hd_value_int(u->verified),      hd_value_int(hd_aggregate_version(&u->base)),
        hd_value_int(u->created_at_ms), hd_value_int(u->updated_at_ms),
    };
    int rc = hd_store_exec(store,
                           "INSERT INTO users (" REPO_USER_COLUMNS ")"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                           p, 8, err);
    return rc < 0 ? rc : 0;
}

/* After a conditional UPDATE or DELETE matched nothing: was the row gone, or changed? */
static int explain_miss(hd_store *store, const char *id, hd_error *err)
{
    hd_value p[] = {hd_value_text(id)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, "SELECT version FROM users WHERE id = $1", p, 1, &rows, err);
    if (rc < 0)
        return rc;
    size_t n = hd_rows_count(rows);
    hd_rows_free(rows);
    if (n == 0)
        return hd_error_set(err, HD_ENOTFOUND, "user %s not found", id);
    return hd_error_set(err, HD_EBUSY, "user %s was changed concurrently; load it again", id);
}

int users_repo_save(hd_store *store, const user *u, int64_t loaded_version, hd_error *err)
{
    hd_value p[] = {
        hd_value_text(u->name),
        hd_value_text(u->password_hash),
        hd_value_int(u->verified),
        hd_value_int(u->updated_at_ms),
        hd_value_int(hd_aggregate_version(&u->base)),
        hd_value_text(user_id(u)),
        hd_value_int(loaded_version),
    };
    int rc = hd_store_exec(store,
                           "UPDATE users SET name = $1, password_hash = $2, verified = $3,"
                           " updated_at = $4, version = $5 WHERE id = $6 AND version = $7",
                           p, 7, err);
    if (rc < 0)
        return rc;
    return rc > 0 ? 0 : explain_miss(store, user_id(u), err);
}

int users_repo_remove(hd_store *store, const user *u, int64_t loaded_version, hd_error *err)
{
    hd_value p[] = {hd_value_text(user_id(u)), hd_value_int(loaded_version)};
    int rc = hd_store_exec(store, "DELETE FROM users WHERE id = $1 AND version = $2", p, 2, err);
    if (rc < 0)
        return rc;
    /* > 0, not == 1: SQLite counts the token rows the cascade deleted too. */
    return rc > 0 ? 0 : explain_miss(store, user_id(u), err);
}

/* Row r of rows (in REPO_USER_COLUMNS order) into *out. */
static int row_to_user(const hd_rows *rows, size_t r, user *out, hd_error *err)
{
    email addr;
    if (email_parse(hd_rows_text(rows, r, 1), &addr, NULL) < 0)
        return hd_error_set(err, HD_ESTORE, "user %s: stored email is not valid",
                            hd_rows_text(rows, r, 0));
    int rc =
        user_load(out, hd_rows_text(rows, r, 0), hd_rows_int(rows, r, 5), &addr,
                  hd_rows_text(rows, r, 2), hd_rows_text(rows, r, 3), (int)hd_rows_int(rows, r, 4),
                  hd_rows_int(rows, r, 6), hd_rows_int(rows, r, 7));
    if (rc < 0)
        return hd_error_set(err, rc, "cannot load user %s", hd_rows_text(rows, r, 0));
    return 0;
}

/* One user by a unique column (sql has one parameter). */
static int get_one(hd_store *store, const char *sql, const char *key, user *out, hd_error *err)
{
    hd_value p[] = {hd_value_text(key)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, sql, p, 1, &rows, err);
    if (rc < 0)
        return rc;
    if (hd_rows_count(rows) == 0)
        rc = hd_error_set(err, HD_ENOTFOUND, "no such user");
    else
        rc = row_to_user(rows, 0, out, err);
    hd_rows_free(rows);
    return rc;
}

int users_repo_get(hd_store *store, const char *id, user *out, hd_error *err)
{
    return get_one(store, "SELECT " REPO_USER_COLUMNS " FROM users WHERE id = $1", id, out, err);
}

int users_repo_get_by_email(hd_store *store, const email *addr, user *out, hd_error *err)
{
    return get_one(store, "SELECT " REPO_USER_COLUMNS " FROM users WHERE email = $1", addr->text,
                   out, err);
}

int users_repo_list(hd_store *store, const users_position *after, size_t limit, user *out,
                    size_t *count, hd_error *err)
{
    *count = 0;
    hd_rows *rows = NULL;
    int rc;
    if (after == NULL) {
        hd_value p[] = {hd_value_int((int64_t)limit)};
        rc = hd_store_query(store,
                            "SELECT " REPO_USER_COLUMNS " FROM users"
                            " ORDER BY created_at, id LIMIT $1",
                            p, 1, &rows, err);
    } else {
        /* The keyset condition "(created_at, id) > ($1, $2)" written out, because SQLite
         * and PostgreSQL both have row values but the expanded form uses the index on
         * both without question. An OFFSET would rescan every earlier row on each page
         * and skip or repeat users when rows are added between two pages. */
        hd_value p[] = {hd_value_int(after->created_at_ms), hd_value_text(after->id),
                        hd_value_int((int64_t)limit)};
        rc = hd_store_query(store,
                            "SELECT " REPO_USER_COLUMNS " FROM users"
                            " WHERE created_at > $1 OR (created_at = $1 AND id > $2)"
                            " ORDER BY created_at, id LIMIT $3",
                            p, 3, &rows, err);
    }
    if (rc < 0)
        return rc;
    size_t n = hd_rows_count(rows);
    for (size_t r = 0; r < n && r < limit; r++) {
        rc = row_to_user(rows, r, &out[r], err);
        if (rc < 0) {
            while (r > 0)
                user_release(&out[--r]);
            hd_rows_free(rows);
            return rc;
        }
        *count = r + 1;
    }
    hd_rows_free(rows);
    return 0;
}

/* ---- tokens ----------------------------------------------------------------------------- */

int users_tokens_add(hd_store *store, const char *token_hash, const char *owner_id,
                     const char *purpose, int64_t now_ms, int64_t expires_at_ms, hd_error *err)
{
    hd_value p[] = {hd_value_text(token_hash), hd_value_text(owner_id), hd_value_text(purpose),
                    hd_value_int(now_ms), hd_value_int(expires_at_ms)};
    int rc = hd_store_exec(store,
                           "INSERT INTO user_tokens (token_hash, user_id, purpose, created_at,"
                           " expires_at) VALUES ($1, $2, $3, $4, $5)",
                           p, 5, err);
    return rc < 0 ? rc : 0;
}

int users_tokens_find(hd_store *store, const char *token_hash, users_token *out, hd_error *err)
{
    hd_value p[] = {hd_value_text(token_hash)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT user_id, purpose, expires_at, used_at FROM user_tokens"
                            " WHERE token_hash = $1",
                            p, 1, &rows, err);
    if (rc < 0)
        return rc;
    if (hd_rows_count(rows) == 0) {
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOTFOUND, "unknown token");
    }
    snprintf(out->user_id, sizeof out->user_id, "%s", hd_rows_text(rows, 0, 0));
    snprintf(out->purpose, sizeof out->purpose, "%s", hd_rows_text(rows, 0, 1));
    out->expires_at_ms = hd_rows_int(rows, 0, 2);
    out->used = !hd_rows_is_null(rows, 0, 3);
    hd_rows_free(rows);
    return 0;
}

int users_tokens_use(hd_store *store, const char *token_hash, int64_t now_ms, hd_error *err)
{
    hd_value p[] = {hd_value_int(now_ms), hd_value_text(token_hash)};
    return hd_store_exec(store,
                         "UPDATE user_tokens SET used_at = $1"
                         " WHERE token_hash = $2 AND used_at IS NULL",
                         p, 2, err);
}

int users_tokens_use_all(hd_store *store, const char *owner_id, const char *purpose, int64_t now_ms,
                         hd_error *err)
{
    hd_value p[] = {hd_value_int(now_ms), hd_value_text(owner_id), hd_value_text(purpose)};
    return hd_store_exec(store,
                         "UPDATE user_tokens SET used_at = $1"
                         " WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
                         p, 3, err);
}
