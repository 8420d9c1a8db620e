/* users/repository.h — infrastructure: where users and their tokens are stored.
 *
 * The repository turns User aggregates into rows and back, through herald's store port
 * (store.h), so the same SQL runs on SQLite and PostgreSQL. It is the only code of the
 * service that knows table and column names. Every function works in whatever transaction
 * is open on the store: the application opens it (a unit of work) and decides when it
 * commits, so a user row, its token row and its outbox row are kept together or not at all.
 *
 * Tables (module "users" in hd_schema_migrations; steps are append-only, see store.h):
 *   users        id, email (UNIQUE, normalised by the domain), name, password_hash,
 *                verified (0/1), version (optimistic locking), created_at, updated_at
 *                (epoch ms); index (created_at, id) for the paginated list
 *   user_tokens  token_hash (PK: SHA-256 hex of the token, never the token), user_id
 *                (ON DELETE CASCADE), purpose ("verify" / "reset"), created_at,
 *                expires_at, used_at (NULL until used: single use)
 *
 * A duplicate email comes back from the UNIQUE index as HD_EEXIST. The service never
 * checks "does this email exist?" before inserting: two requests could both pass the check
 * and both insert; the index is the one place where the rule holds under concurrency.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_REPOSITORY_H
#define USERS_REPOSITORY_H

#include <stddef.h>
#include <stdint.h>

#include "herald/clock.h"
#include "herald/error.h"
#include "herald/store.h"

#include "domain.h"

#define USERS_TOKEN_VERIFY   "verify"
#define USERS_TOKEN_RESET    "reset"
#define USERS_TOKEN_HASH_LEN 64 /* SHA-256 in hex */

/* Create or upgrade the users tables and the outbox table (outbox.h). Outside a
 * transaction, once at start-up. Returns steps applied (>= 0) or a code. */
int users_repo_migrate(hd_store *store, hd_error *err);

/* Insert a new user (borrowed; its current version is stored). Returns 0, HD_EEXIST when
 * the email (or the id) is taken — the transaction is then aborted, as store.h says — or
 * the store's code. */
int users_repo_add(hd_store *store, const user *u, hd_error *err);

/* Store u's name, password hash, verified flag, version and updated_at, if the row still has
 * loaded_version: a concurrent change in between (another request saved first) makes the
 * UPDATE match no row. Returns 0, HD_ENOTFOUND (the user is gone), HD_EBUSY (changed
 * concurrently: load again and retry), or the store's code. */
int users_repo_save(hd_store *store, const user *u, int64_t loaded_version, hd_error *err);

/* Delete u's row (and, by cascade, its tokens) if it still has loaded_version. Same
 * codes as users_repo_save. */
int users_repo_remove(hd_store *store, const user *u, int64_t loaded_version, hd_error *err);

/* Load the user with this id, or this (normalised) email, into *out (release it with
 * user_release). Returns 0, HD_ENOTFOUND, or a code; *out needs no release on failure. */
int users_repo_get(hd_store *store, const char *id, user *out, hd_error *err);
int users_repo_get_by_email(hd_store *store, const email *addr, user *out, hd_error *err);

/* A position in the list: the last user of the previous page. The order (created_at, id)
 * is total (ids are unique), so a page never repeats or skips a user, even when several
 * were created in the same millisecond, or users are added while a client pages. */
typedef struct users_position {
    int64_t created_at_ms;
    char id[HD_UUID_LEN + 1];
} users_position;

/* Up to limit users after `after` (NULL: from the start), in (created_at, id) order, into
 * out (an array of at least limit users; *count of them are loaded: release each). Returns
 * 0 or a code (then nothing needs releasing). */
int users_repo_list(hd_store *store, const users_position *after, size_t limit, user *out,
                    size_t *count, hd_error *err);

/* ---- tokens ---------------------------------------------------------------------------- */

/* What the store knows of a token. */
typedef struct users_token {
    char user_id[HD_UUID_LEN + 1];
    char purpose[8];
    int64_t expires_at_ms;
    int used; /* used_at is set */
} users_token;

/* Store a token's hash (borrowed, USERS_TOKEN_HASH_LEN hex characters) for owner_id with
 * its purpose and expiry. Returns 0 or a code (HD_EEXIST for a repeated hash, which 256
 * random bits make a bug, not bad luck). */
int users_tokens_add(hd_store *store, const char *token_hash, const char *owner_id,
                     const char *purpose, int64_t now_ms, int64_t expires_at_ms, hd_error *err);

/* Look a token up by its hash. Returns 0, HD_ENOTFOUND, or a code. */
int users_tokens_find(hd_store *store, const char *token_hash, users_token *out, hd_error *err);

/* Mark every unused token of owner_id with purpose used (after a password change, the
 * other reset links must stop working). Returns how many, or a code. */
int users_tokens_use_all(hd_store *store, const char *owner_id, const char *purpose, int64_t now_ms,
                         hd_error *err);

/* Mark the token used, if it is not yet: one conditional UPDATE, so two requests racing
 * with the same token cannot both succeed. Returns 1 when this call used it, 0 when it was
 * already used, or a code. */
int users_tokens_use(hd_store *store, const char *token_hash, int64_t now_ms, hd_error *err);

#endif /* USERS_REPOSITORY_H */
