/* users/application.h — the users service's use cases.
 *
 * The application layer is the list of things the service does: register, verify an
 * email, request a password reset, read, list, rename, delete. Each use case is one
 * function and, when it changes anything, one unit of work (uow.h):
 *
 *     begin -> load or create the User (domain.h) -> call its rules -> save it
 *           -> commit: the dispatcher runs the domain event handlers (integration.h),
 *              which append integration events to the outbox in the same transaction
 *
 * so the user row, its token row and its outbox row are stored together or not at all.
 * The layer owns what is neither a rule nor a table: hashing passwords (argon2id), making
 * and checking tokens, the clock, the correlation id, and the view returned to callers
 * (user_view: never the password hash).
 *
 * It takes already parsed values (email, name) from the caller: the HTTP layer parses
 * every field with the domain's parsers first, so that it can report all invalid fields of
 * a request at once (422), and the use case then cannot receive an invalid email.
 *
 * Secrets: a password is hashed before anything is stored and never copied, logged or
 * returned; tokens are 32 random bytes (64 hex characters), stored only as their SHA-256.
 *
 * Threads: every use case may be called from any thread. The store handle is borrowed and
 * used by one thread at a time (a mutex); password hashing, the slow part of registering,
 * runs outside that mutex so that it never holds the database.
 *
 * Errors (negative codes; reasons in err):
 *   HD_EVALIDATE  a rule on input failed (password policy)        -> 422
 *   HD_EINVAL     malformed token or cursor; bad argument         -> 400
 *   HD_ERANGE     limit out of 1..USERS_PAGE_MAX                  -> 400
 *   HD_ENOTFOUND  no such user or token                           -> 404
 *   HD_EEXIST     the email is registered already                 -> 409
 *   HD_EBUSY      changed concurrently; retry                     -> 409
 *   HD_ETIMEOUT   every hashing slot stayed busy for hash_wait_ms
 *                 (register, reset confirm); retry later          -> 503 + Retry-After
 *   HD_ESTATE     token used or expired, email already verified   -> 410 (verify)
 *   other         the store failed                                -> 500 / 503
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_APPLICATION_H
#define USERS_APPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include "herald/clock.h"
#include "herald/dispatcher.h"
#include "herald/error.h"
#include "herald/replica.h"
#include "herald/store.h"

#include "domain.h"
#include "repository.h" /* USERS_TOKEN_HASH_LEN */

#define USERS_VERIFY_TTL_DEFAULT_MS (24LL * 3600 * 1000) /* a day: people read mail late */
#define USERS_RESET_TTL_DEFAULT_MS  (3600LL * 1000)      /* an hour: it grants the account */
#define USERS_PAGE_DEFAULT          20
#define USERS_PAGE_MAX              100
#define USERS_CURSOR_MAX            128  /* an opaque cursor's length, NUL included */
#define USERS_TOKEN_LEN             64   /* 32 random bytes in hex */
#define USERS_HASHING_DEFAULT       4    /* concurrent argon2id hashes: 4 x 64 MiB */
#define USERS_HASH_WAIT_DEFAULT_MS  1000 /* longest wait for a hashing slot; then HD_ETIMEOUT */
#define USERS_READERS_MAX           8    /* users_app_add_reader */
#define USERS_READERS_DEFAULT       2    /* what herald-users opens: one a CPU of the bench VM */

/* A password hash function in place of argon2id (users_config.pwhash): write the hash
 * string of password (len bytes) into out (crypto_pwhash_STRBYTES bytes); return 0 or -1.
 * Tests use it to count hashes and to hold hashing slots. */
typedef int (*users_pwhash_fn)(void *ctx, char *out, const char *password, size_t len);

/* Settings of the application. Zero (or NULL) fields take the default. */
typedef struct users_config {
    const char *source;          /* CloudEvents source; NULL: "herald-users" */
    const char *verify_base_url; /* link = this + token; NULL: see USERS_VERIFY_BASE_DEFAULT */
    const char *reset_base_url;  /* likewise for password resets */
    int64_t verify_ttl_ms;       /* verification token lifetime; 0: 24 h */
    int64_t reset_ttl_ms;        /* reset token lifetime; 0: 1 h */
    /* argon2id cost; 0: libsodium's INTERACTIVE limits (2 passes, 64 MiB). Tests lower
     * them (crypto_pwhash_OPSLIMIT_MIN / MEMLIMIT_MIN) to run under valgrind. */
    unsigned long long pwhash_opslimit;
    size_t pwhash_memlimit;
    /* Hashes computed at the same time; 0: USERS_HASHING_DEFAULT. Each holds memlimit
     * bytes (64 MiB at INTERACTIVE): this, not the number of connections, bounds the
     * memory registration can take. More than the CPU cores buys nothing: argon2id is
     * CPU-bound, so extra requests wait their turn — for at most hash_wait_ms (0:
     * USERS_HASH_WAIT_DEFAULT_MS); then the use case fails with HD_ETIMEOUT (HTTP 503 with
     * Retry-After) instead of queueing without bound. */
    unsigned max_hashing;
    int64_t hash_wait_ms;
    users_pwhash_fn pwhash; /* NULL: argon2id with the cost above */
    void *pwhash_ctx;       /* borrowed, given to pwhash */
    /* The wall clock in epoch ms; NULL: hd_time_now_ms. Tests move time forward with it
     * (expired tokens) instead of sleeping. */
    int64_t (*clock)(void);
} users_config;

/* The verification page of this service (GET /users/verify, api.h) at its default address. */
#define USERS_VERIFY_BASE_DEFAULT "http://127.0.0.1:8081/users/verify?token="
#define USERS_RESET_BASE_DEFAULT  "http://localhost:8080/reset-password?token="

typedef struct users_app users_app;

/* A new application over store (borrowed: it must outlive the app; migrate it first with
 * users_repo_migrate). cfg may be NULL and is copied. Registers the integration handlers
 * on its own dispatcher. Returns 0, HD_EINVAL, HD_ENOMEM, or HD_EIO when libsodium cannot
 * start. *out is new (users_app_free), NULL on failure. */
int users_app_new(hd_store *store, const users_config *cfg, users_app **out, hd_error *err);

/* Free app (NULL is fine); not the store. No use case may be running. */
void users_app_free(users_app *app);

/* Send the users list (users_list, the one read that may be stale) through replica
 * (borrowed: built over the app's store, it must outlive the app; NULL: every read on the
 * store). Every committed use case then records its WAL position in it (subject NULL: "any
 * write"), so that a list read after a write through this app never misses it (replica.h:
 * read-your-writes). Call it at start-up, before the first use case. */
void users_app_set_replica(users_app *app, hd_replica *replica);

/* Add a store handle (borrowed: it must outlive the app) on the same database for the
 * reads by key (users_get, users_get_by_email), which then run on the readers, each under
 * its own lock, instead of queueing on the app's store lock with every other use case. A
 * read on another connection sees every commit made before it began (SQLite WAL and
 * PostgreSQL alike), so a read after a write through this app still sees the write. Call
 * it at start-up, before the first use case; at most USERS_READERS_MAX. Returns 0,
 * HD_EINVAL, HD_ERANGE (full) or HD_ENOMEM. */
int users_app_add_reader(users_app *app, hd_store *store);

/* The app's dispatcher (borrowed), to register more domain event handlers at start-up
 * (before the first use case runs): tests use it to add a failing handler. */
hd_dispatcher *users_app_dispatcher(users_app *app);

/* Password hashes started since users_app_new (a test hook and a metric). Thread-safe. */
uint64_t users_app_hashes(users_app *app);

/* Operations: SELECT 1 on the store (for /health), and the outbox's depth (for /metrics;
 * see hd_outbox_depth). Both take the store's mutex briefly. Return 0 or a code. */
int users_app_ping(users_app *app, hd_error *err);
int users_app_outbox_depth(users_app *app, int64_t *pending, int64_t *oldest_age_ms,
                           int64_t *parked, hd_error *err);

/* What callers may see of a user: a plain value, no pointers, no password hash. */
typedef struct user_view {
    char id[HD_UUID_LEN + 1];
    char email[USER_EMAIL_MAX + 1];
    char name[USER_NAME_BYTES_MAX + 1];
    int verified;
    int64_t created_at_ms;
    int64_t updated_at_ms;
} user_view;

/* ---- commands (correlation_id: borrowed, may be NULL; stamped on the events) ---------- */

/* Register addr with password (len bytes, in clear; checked against the policy, hashed,
 * forgotten) and name (parsed; "" for none). Issues a verification token, valid for
 * verify_ttl_ms, that only the users.user_registered event carries (in its link).
 * *out (may be NULL) receives the new user. Returns 0, HD_EVALIDATE, HD_EEXIST, HD_ETIMEOUT (no
 * hashing slot), or a code. */
int users_register(users_app *app, const char *correlation_id, const email *addr,
                   const char *password, size_t password_len, const char *name, user_view *out,
                   hd_error *err);

/* Confirm an address with the token from the verification email (64 hex characters, any
 * case). The token is single use. Raises users.user_verified. *out (may be NULL) receives
 * the user. Returns 0; HD_EINVAL (malformed token), HD_ENOTFOUND (no such token: never
 * issued, or its user was deleted), HD_ESTATE (already used, expired, or the email is
 * verified already), or a code. */
int users_verify_email(users_app *app, const char *correlation_id, const char *token,
                       user_view *out, hd_error *err);

/* Ask for a password reset for addr. When a user has that address, a reset token (valid
 * reset_ttl_ms) is issued and users.password_reset_requested emitted; when none has,
 * nothing happens. The HTTP answer is the same either way (no account enumeration); the
 * return value tells the two apart for tests and logs only: 1 issued, 0 no such user, or
 * a negative code. */
int users_request_password_reset(users_app *app, const char *correlation_id, const email *addr,
                                 hd_error *err);

/* Set a new password with the token from the reset email: the token (64 hex characters)
 * must be a reset token, unused and unexpired; the password (len bytes) must pass the
 * policy. The token and every other unused reset token of the user are used up: one reset
 * link works once, and a new password ends all older links. The token is looked up before
 * the new password is hashed: an unknown, used or expired token costs a query, not an
 * argon2id hash. Raises user.password_changed
 * (no integration event: see docs). Returns 0; HD_EINVAL (malformed token), HD_EVALIDATE
 * (password policy), HD_ENOTFOUND (no such reset token), HD_ESTATE (used or expired), HD_ETIMEOUT
 * (no hashing slot), or a code. */
int users_reset_password(users_app *app, const char *correlation_id, const char *token,
                         const char *password, size_t password_len, hd_error *err);

/* Change the user's display name (parsed). Raises user.updated when it changed (no
 * integration event: nobody outside needs it yet). Returns 0, HD_ENOTFOUND, HD_EBUSY, or
 * a code. */
int users_rename(users_app *app, const char *correlation_id, const char *id, const char *name,
                 user_view *out, hd_error *err);

/* Delete the user, their tokens, and emit users.user_deleted. Returns 0, HD_ENOTFOUND,
 * HD_EBUSY, or a code. */
int users_delete(users_app *app, const char *correlation_id, const char *id, hd_error *err);

/* ---- queries ---------------------------------------------------------------------------- */

/* One user by id (not a UUID: HD_ENOTFOUND) or by email. Returns 0, HD_ENOTFOUND, a code. */
int users_get(users_app *app, const char *id, user_view *out, hd_error *err);
int users_get_by_email(users_app *app, const email *addr, user_view *out, hd_error *err);

/* One page of users in creation order (ties broken by id). */
typedef struct users_page {
    user_view *items; /* count of them; owned by the page */
    size_t count;
    char next_cursor[USERS_CURSOR_MAX]; /* "" on the last page */
} users_page;

/* Up to limit (1..USERS_PAGE_MAX) users after cursor (NULL or "": from the start; else a
 * next_cursor of an earlier page, opaque to the client) into *page (release it with
 * users_page_release, also on failure). Returns 0, HD_ERANGE (limit), HD_EINVAL (not a
 * cursor this service made), or a code. */
int users_list(users_app *app, const char *cursor, size_t limit, users_page *page, hd_error *err);

void users_page_release(users_page *page);

/* The stored form of a token (borrowed, USERS_TOKEN_LEN hex characters) into out: the hex
 * SHA-256 of its text, which is what user_tokens keeps and looks up (tests check that the
 * clear token is never stored). */
void users_token_hash(const char *token, char out[USERS_TOKEN_HASH_LEN + 1]);

#endif /* USERS_APPLICATION_H */
