/* users/application.c — the use cases; see application.h. */
#include "application.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "herald/outbox.h"
#include "herald/uow.h"

#include "integration.h"
#include "repository.h"

struct users_app {
    hd_store *store;      /* borrowed; used under lock only */
    pthread_mutex_t lock; /* one thread at a time on the store (store.h) */
    hd_replica *replica;  /* borrowed, may be NULL; used under lock, like the store */
    /* Handles for the reads by key (users_get, users_get_by_email), each under its own
     * lock, so that GET /users/{id} does not queue behind every other request on the one
     * store lock: that lock was where a GET spent most of its futex calls (docs/modules/
     * http.md, issue 14). Added at start-up (users_app_add_reader), read-only after. */
    struct reader {
        hd_store *store; /* borrowed */
        pthread_mutex_t lock;
    } readers[USERS_READERS_MAX];
    size_t nreaders;
    atomic_uint next_reader; /* where the next read starts looking for a free handle */
    hd_dispatcher *dispatcher;
    users_integration *integration;
    int64_t verify_ttl_ms;
    int64_t reset_ttl_ms;
    unsigned long long pwhash_opslimit;
    size_t pwhash_memlimit;
    int64_t (*clock)(void);
    /* A counting semaphore (mutex + condition variable, portable POSIX) over the slots
     * for concurrent hashes. hash_free waits on CLOCK_MONOTONIC (a bounded wait must not
     * stretch when the wall clock is set back). */
    pthread_mutex_t hash_lock;
    pthread_cond_t hash_free;
    unsigned hash_slots;
    int64_t hash_wait_ms;
    users_pwhash_fn pwhash;
    void *pwhash_ctx;
    atomic_uint_fast64_t hashes; /* hashes started: users_app_hashes */
};

/* ---- lifecycle -------------------------------------------------------------------------- */

static const char *or_default(const char *s, const char *def)
{
    return (s != NULL && *s != '\0') ? s : def;
}

int users_app_new(hd_store *store, const users_config *cfg, users_app **out, hd_error *err)
{
    static const users_config defaults = {0};
    if (out == NULL || store == NULL)
        return hd_error_set(err, HD_EINVAL, "users_app_new: NULL argument");
    *out = NULL;
    if (cfg == NULL)
        cfg = &defaults;
    /* sodium_init is idempotent and thread-safe; it picks the fastest implementations and
     * opens the random source. Without it randombytes_buf could fail at the worst time. */
    if (sodium_init() < 0)
        return hd_error_set(err, HD_EIO, "libsodium failed to initialise");
    users_app *app = calloc(1, sizeof *app);
    if (app == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    app->store = store;
    pthread_mutex_init(&app->lock, NULL);
    app->verify_ttl_ms = cfg->verify_ttl_ms > 0 ? cfg->verify_ttl_ms : USERS_VERIFY_TTL_DEFAULT_MS;
    app->reset_ttl_ms = cfg->reset_ttl_ms > 0 ? cfg->reset_ttl_ms : USERS_RESET_TTL_DEFAULT_MS;
    app->pwhash_opslimit =
        cfg->pwhash_opslimit ? cfg->pwhash_opslimit : crypto_pwhash_OPSLIMIT_INTERACTIVE;
    app->pwhash_memlimit =
        cfg->pwhash_memlimit ? cfg->pwhash_memlimit : crypto_pwhash_MEMLIMIT_INTERACTIVE;
    app->clock = cfg->clock ? cfg->clock : hd_time_now_ms;
    pthread_mutex_init(&app->hash_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&app->hash_free, &ca);
    pthread_condattr_destroy(&ca);
    app->hash_slots = cfg->max_hashing ? cfg->max_hashing : USERS_HASHING_DEFAULT;
    app->hash_wait_ms = cfg->hash_wait_ms > 0 ? cfg->hash_wait_ms : USERS_HASH_WAIT_DEFAULT_MS;
    app->pwhash = cfg->pwhash;
    app->pwhash_ctx = cfg->pwhash_ctx;
    atomic_init(&app->hashes, 0);
    app->dispatcher = hd_dispatcher_new();
    app->integration =
        users_integration_new(or_default(cfg->source, USERS_SOURCE_DEFAULT),
                              or_default(cfg->verify_base_url, USERS_VERIFY_BASE_DEFAULT),
                              or_default(cfg->reset_base_url, USERS_RESET_BASE_DEFAULT));
    if (app->dispatcher == NULL || app->integration == NULL ||
        users_integration_register(app->integration, app->dispatcher) < 0) {
        users_app_free(app);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    *out = app;
    return 0;
}

void users_app_free(users_app *app)
{
    if (app == NULL)
        return;
    hd_dispatcher_free(app->dispatcher); /* first: it borrows the integration */
    users_integration_free(app->integration);
    pthread_mutex_destroy(&app->lock);
    for (size_t i = 0; i < app->nreaders; i++)
        pthread_mutex_destroy(&app->readers[i].lock);
    pthread_cond_destroy(&app->hash_free);
    pthread_mutex_destroy(&app->hash_lock);
    free(app);
}

uint64_t users_app_hashes(users_app *app)
{
    return app ? (uint64_t)atomic_load(&app->hashes) : 0;
}

void users_app_set_replica(users_app *app, hd_replica *replica)
{
    app->replica = replica;
}

int users_app_add_reader(users_app *app, hd_store *store)
{
    if (app == NULL || store == NULL)
        return HD_EINVAL;
    if (app->nreaders == USERS_READERS_MAX)
        return HD_ERANGE;
    struct reader *r = &app->readers[app->nreaders];
    if (pthread_mutex_init(&r->lock, NULL) != 0)
        return HD_ENOMEM;
    r->store = store;
    app->nreaders++;
    return HD_OK;
}

/* A store for one read by key, and the lock to release after it (*held). A free reader
 * if there is one (trylock costs no system call), starting from a rotating position so
 * that the handles share the load; when all are busy, wait for one; without readers, the
 * app's own store under its lock. */
static hd_store *read_store(users_app *app, pthread_mutex_t **held)
{
    size_t n = app->nreaders;
    if (n == 0) {
        pthread_mutex_lock(&app->lock);
        *held = &app->lock;
        return app->store;
    }
    size_t start = atomic_fetch_add_explicit(&app->next_reader, 1, memory_order_relaxed) % n;
    for (size_t i = 0; i < n; i++) {
        struct reader *r = &app->readers[(start + i) % n];
        if (pthread_mutex_trylock(&r->lock) == 0) {
            *held = &r->lock;
            return r->store;
        }
    }
    struct reader *r = &app->readers[start];
    pthread_mutex_lock(&r->lock);
    *held = &r->lock;
    return r->store;
}

hd_dispatcher *users_app_dispatcher(users_app *app)
{
    return app ? app->dispatcher : NULL;
}

int users_app_ping(users_app *app, hd_error *err)
{
    hd_rows *rows = NULL;
    pthread_mutex_lock(&app->lock);
    int rc = hd_store_query(app->store, "SELECT 1", NULL, 0, &rows, err);
    pthread_mutex_unlock(&app->lock);
    hd_rows_free(rows);
    return rc;
}

int users_app_outbox_depth(users_app *app, int64_t *pending, int64_t *oldest_age_ms,
                           int64_t *parked, hd_error *err)
{
    pthread_mutex_lock(&app->lock);
    int rc = hd_outbox_depth(app->store, pending, oldest_age_ms, parked, err);
    pthread_mutex_unlock(&app->lock);
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Copy src into dst (cap bytes), cut if it must be (it never is: the sizes match). */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void view_of(const user *u, user_view *v)
{
    if (v == NULL)
        return;
    copy_text(v->id, sizeof v->id, user_id(u));
    copy_text(v->email, sizeof v->email, u->email.text);
    copy_text(v->name, sizeof v->name, u->name);
    v->verified = u->verified;
    v->created_at_ms = u->created_at_ms;
    v->updated_at_ms = u->updated_at_ms;
}

/* A new token: 32 bytes from the operating system's CSPRNG (randombytes_buf), in hex.
 * 256 bits cannot be guessed, so the token needs no rate limiting to be safe. */
static void new_token(char token[USERS_TOKEN_LEN + 1])
{
    unsigned char raw[USERS_TOKEN_LEN / 2];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(token, USERS_TOKEN_LEN + 1, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

/* The stored form of a token: SHA-256 of its hex text, in hex. A fast, unsalted hash is
 * right here and wrong for passwords: a token has 256 random bits, so there is no
 * dictionary to try and nothing for a salt to defend; and because the same token always
 * gives the same hash, the hash is the lookup key. Whoever reads the table (a backup, an
 * SQL injection elsewhere) still cannot verify anybody's email or reset a password. */
void users_token_hash(const char *token, char out[USERS_TOKEN_HASH_LEN + 1])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(out, USERS_TOKEN_HASH_LEN + 1, digest, sizeof digest);
}

/* A token as the client sent it, lower-cased into out: 64 hex digits, nothing else. */
static int token_parse(const char *raw, char out[USERS_TOKEN_LEN + 1], hd_error *err)
{
    if (raw == NULL || strlen(raw) != USERS_TOKEN_LEN)
        return hd_error_set(err, HD_EINVAL, "token must be %d hexadecimal characters",
                            USERS_TOKEN_LEN);
    for (size_t i = 0; i < USERS_TOKEN_LEN; i++) {
        char c = raw[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return hd_error_set(err, HD_EINVAL, "token must be %d hexadecimal characters",
                                USERS_TOKEN_LEN);
        out[i] = c;
    }
    out[USERS_TOKEN_LEN] = '\0';
    return 0;
}

/* Begin a use case that writes: take the store, open a unit of work, remember the
 * correlation id. On failure the store is released again. */
static int app_begin(users_app *app, const char *correlation_id, hd_uow **uow, hd_error *err)
{
    pthread_mutex_lock(&app->lock);
    int rc = hd_uow_begin(app->store, app->dispatcher, uow, err);
    if (rc == 0) {
        rc = users_uow_set_correlation_id(*uow, correlation_id);
        if (rc < 0) {
            hd_uow_rollback(*uow, NULL);
            rc = hd_error_set(err, rc, NULL);
        }
    }
    if (rc < 0)
        pthread_mutex_unlock(&app->lock);
    return rc;
}

/* End it: commit when rc says all went well (the handlers run now, and may still fail),
 * else roll back and keep rc and its reason. Releases the store. */
static int app_end(users_app *app, hd_uow *uow, int rc, hd_error *err)
{
    if (rc >= 0)
        rc = hd_uow_commit(uow, err);
    else
        hd_uow_rollback(uow, NULL); /* NULL: the reason worth reporting is rc's */
    /* Read-your-writes for the list. A failure here is not the use case's: the write is
     * committed, and the router then keeps list reads on the primary until it knows. */
    if (rc >= 0 && app->replica != NULL)
        hd_replica_wrote(app->replica, NULL, NULL, NULL);
    pthread_mutex_unlock(&app->lock);
    return rc;
}

/* Take a hash slot, waiting at most hash_wait_ms for one. Returns 0 or HD_ETIMEOUT. */
static int take_hash_slot(users_app *app)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(app->hash_wait_ms / 1000);
    deadline.tv_nsec += (long)(app->hash_wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&app->hash_lock);
    while (app->hash_slots == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&app->hash_free, &app->hash_lock, &deadline);
    int got = app->hash_slots > 0;
    if (got)
        app->hash_slots--;
    pthread_mutex_unlock(&app->hash_lock);
    return got ? 0 : HD_ETIMEOUT;
}

/* argon2id of password into hash, in one of the hash slots. The wait for a slot is bounded
 * (hash_wait_ms): an unbounded queue of requests, each holding a connection and its
 * password, is how a burst of registrations turns into an outage. A full pool is refused
 * at once instead, and the client told to come back (503 + Retry-After).
 * Returns 0, HD_ETIMEOUT (every slot stayed busy) or HD_ENOMEM (no memory for the hash). */
static int app_hash_password(users_app *app, const char *password, size_t len,
                             char hash[crypto_pwhash_STRBYTES], hd_error *err)
{
    if (take_hash_slot(app) < 0)
        return hd_error_set(err, HD_ETIMEOUT,
                            "every password hashing slot is busy: try again in a moment");
    atomic_fetch_add(&app->hashes, 1);
    int rc = app->pwhash
                 ? app->pwhash(app->pwhash_ctx, hash, password, len)
                 : crypto_pwhash_str_alg(hash, password, len, app->pwhash_opslimit,
                                         app->pwhash_memlimit, crypto_pwhash_ALG_ARGON2ID13);
    pthread_mutex_lock(&app->hash_lock);
    app->hash_slots++;
    pthread_cond_signal(&app->hash_free);
    pthread_mutex_unlock(&app->hash_lock);
    return rc == 0 ? 0 : hd_error_set(err, HD_ENOMEM, "argon2id: not enough memory to hash");
}

/* ---- register --------------------------------------------------------------------------- */

/* The part that runs in the transaction: user row, token row, track for dispatch. */
static int register_tx(users_app *app, hd_uow *uow, user *u, const char *token_hash, hd_error *err)
{
    hd_store *s = hd_uow_store(uow);
    int rc = users_repo_add(s, u, err);
    if (rc == HD_EEXIST)
        return hd_error_set(err, HD_EEXIST, "email %s is registered already", u->email.text);
    if (rc == 0)
        rc = users_tokens_add(s, token_hash, user_id(u), USERS_TOKEN_VERIFY, u->created_at_ms,
                              u->created_at_ms + app->verify_ttl_ms, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_register(users_app *app, const char *correlation_id, const email *addr,
                   const char *password, size_t password_len, const char *name, user_view *out,
                   hd_error *err)
{
    if (app == NULL || addr == NULL || password == NULL || name == NULL)
        return hd_error_set(err, HD_EINVAL, "users_register: NULL argument");
    int rc = password_check(password, password_len, err);
    if (rc < 0)
        return rc;
    /* Hash before taking the store: argon2id is slow on purpose (tens of ms, 64 MiB), and
     * the database must not wait for it. The hash string holds its own salt and cost. */
    char hash[crypto_pwhash_STRBYTES];
    rc = app_hash_password(app, password, password_len, hash, err);
    if (rc < 0)
        return rc;
    char token[USERS_TOKEN_LEN + 1], token_hash[USERS_TOKEN_HASH_LEN + 1];
    new_token(token);
    users_token_hash(token, token_hash);
    user u;
    rc = user_register(&u, addr, name, hash, token, app->clock(), err);
    sodium_memzero(token, sizeof token); /* from now on only the event holds it */
    if (rc < 0)
        return rc;
    hd_uow *uow;
    rc = app_begin(app, correlation_id, &uow, err);
    if (rc == 0)
        rc = app_end(app, uow, register_tx(app, uow, &u, token_hash, err), err);
    if (rc == 0)
        view_of(&u, out);
    user_release(&u);
    return rc;
}

/* ---- verify ------------------------------------------------------------------------------ */

/* Find the token and decide whether it may be used now. Tokens of the other purpose are
 * "not found": a reset token must not verify an address, nor the reverse. */
static int check_token(users_app *app, hd_store *s, const char *token_hash, const char *purpose,
                       users_token *tok, hd_error *err)
{
    int rc = users_tokens_find(s, token_hash, tok, err);
    if (rc < 0)
        return rc;
    if (strcmp(tok->purpose, purpose) != 0)
        return hd_error_set(err, HD_ENOTFOUND, "unknown token");
    if (tok->used)
        return hd_error_set(err, HD_ESTATE, "token already used");
    if (app->clock() >= tok->expires_at_ms)
        return hd_error_set(err, HD_ESTATE, "token expired");
    return 0;
}

static int verify_tx(users_app *app, hd_uow *uow, const char *token_hash, user *u, int *loaded,
                     hd_error *err)
{
    hd_store *s = hd_uow_store(uow);
    users_token tok;
    int rc = check_token(app, s, token_hash, USERS_TOKEN_VERIFY, &tok, err);
    if (rc == 0)
        rc = users_repo_get(s, tok.user_id, u, err);
    if (rc < 0)
        return rc;
    *loaded = 1;
    int64_t version = hd_aggregate_version(&u->base);
    int64_t now = app->clock();
    rc = user_verify(u, now, err);
    if (rc == 0) {
        /* Conditional: a second request with the same token, racing this one on another
         * connection, finds it used and fails. */
        rc = users_tokens_use(s, token_hash, now, err);
        if (rc == 0)
            rc = hd_error_set(err, HD_ESTATE, "token already used");
    }
    if (rc >= 0)
        rc = users_repo_save(s, u, version, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_verify_email(users_app *app, const char *correlation_id, const char *token,
                       user_view *out, hd_error *err)
{
    if (app == NULL)
        return hd_error_set(err, HD_EINVAL, "users_verify_email: NULL app");
    char clean[USERS_TOKEN_LEN + 1], token_hash[USERS_TOKEN_HASH_LEN + 1];
    int rc = token_parse(token, clean, err);
    if (rc < 0)
        return rc;
    users_token_hash(clean, token_hash);
    user u;
    int loaded = 0;
    hd_uow *uow;
    rc = app_begin(app, correlation_id, &uow, err);
    if (rc == 0)
        rc = app_end(app, uow, verify_tx(app, uow, token_hash, &u, &loaded, err), err);
    if (rc == 0)
        view_of(&u, out);
    if (loaded)
        user_release(&u);
    return rc;
}

/* ---- password reset ------------------------------------------------------------------------ */

static int reset_tx(users_app *app, hd_uow *uow, const email *addr, const char *token,
                    const char *token_hash, user *u, int *loaded, hd_error *err)
{
    hd_store *s = hd_uow_store(uow);
    int rc = users_repo_get_by_email(s, addr, u, err);
    if (rc < 0)
        return rc;
    *loaded = 1;
    int64_t now = app->clock();
    rc = user_request_password_reset(u, token, now, err);
    if (rc == 0)
        rc = users_tokens_add(s, token_hash, user_id(u), USERS_TOKEN_RESET, now,
                              now + app->reset_ttl_ms, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_request_password_reset(users_app *app, const char *correlation_id, const email *addr,
                                 hd_error *err)
{
    if (app == NULL || addr == NULL)
        return hd_error_set(err, HD_EINVAL, "users_request_password_reset: NULL argument");
    /* The token is made (and its hash computed) whether or not the user exists, so both
     * paths do the same work: the answer's timing says nothing about the account. */
    char token[USERS_TOKEN_LEN + 1], token_hash[USERS_TOKEN_HASH_LEN + 1];
    new_token(token);
    users_token_hash(token, token_hash);
    hd_uow *uow;
    int rc = app_begin(app, correlation_id, &uow, err);
    if (rc < 0) {
        sodium_memzero(token, sizeof token);
        return rc;
    }
    user u;
    int loaded = 0;
    rc = reset_tx(app, uow, addr, token, token_hash, &u, &loaded, err);
    sodium_memzero(token, sizeof token);
    if (rc == HD_ENOTFOUND && !loaded) {
        /* Nobody to tell. hd_error_clear, so that no "not found" reason can reach a log
         * line or a reply by accident. */
        app_end(app, uow, rc, NULL);
        hd_error_clear(err);
        return 0;
    }
    rc = app_end(app, uow, rc, err);
    if (loaded)
        user_release(&u);
    return rc < 0 ? rc : 1;
}

static int reset_password_tx(users_app *app, hd_uow *uow, const char *token_hash,
                             const char *password_hash, user *u, int *loaded, hd_error *err)
{
    hd_store *s = hd_uow_store(uow);
    users_token tok;
    int rc = check_token(app, s, token_hash, USERS_TOKEN_RESET, &tok, err);
    if (rc == 0)
        rc = users_repo_get(s, tok.user_id, u, err);
    if (rc < 0)
        return rc;
    *loaded = 1;
    int64_t version = hd_aggregate_version(&u->base);
    int64_t now = app->clock();
    rc = user_change_password(u, password_hash, now, err);
    if (rc == 0) {
        rc = users_tokens_use(s, token_hash, now, err); /* conditional: see verify */
        if (rc == 0)
            rc = hd_error_set(err, HD_ESTATE, "token already used");
    }
    if (rc >= 0)
        rc = users_tokens_use_all(s, user_id(u), USERS_TOKEN_RESET, now, err);
    if (rc >= 0)
        rc = users_repo_save(s, u, version, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_reset_password(users_app *app, const char *correlation_id, const char *token,
                         const char *password, size_t password_len, hd_error *err)
{
    if (app == NULL || password == NULL)
        return hd_error_set(err, HD_EINVAL, "users_reset_password: NULL argument");
    char clean[USERS_TOKEN_LEN + 1], token_hash[USERS_TOKEN_HASH_LEN + 1];
    int rc = token_parse(token, clean, err);
    if (rc == 0)
        rc = password_check(password, password_len, err);
    if (rc < 0)
        return rc;
    users_token_hash(clean, token_hash);
    /* Look the token up BEFORE hashing. The hash costs 64 MiB and tens of milliseconds of
     * a core; done first, any well-formed token bought that much work, and four requests a
     * second kept two cores busy. Tokens have 256 random bits, so nothing is gained by
     * making a guess slow. The transaction checks the token again (it may be used or
     * expire between this read and the commit); this read only keeps the hash for tokens
     * that exist. */
    users_token tok;
    pthread_mutex_lock(&app->lock);
    rc = check_token(app, app->store, token_hash, USERS_TOKEN_RESET, &tok, err);
    pthread_mutex_unlock(&app->lock);
    if (rc < 0)
        return rc;
    char hash[crypto_pwhash_STRBYTES];
    rc = app_hash_password(app, password, password_len, hash, err);
    if (rc < 0)
        return rc;
    user u;
    int loaded = 0;
    hd_uow *uow;
    rc = app_begin(app, correlation_id, &uow, err);
    if (rc == 0)
        rc =
            app_end(app, uow, reset_password_tx(app, uow, token_hash, hash, &u, &loaded, err), err);
    if (loaded)
        user_release(&u);
    return rc;
}

/* ---- rename and delete --------------------------------------------------------------------- */

/* Load the user by id in uow (a non-UUID is simply not found: no query needed). */
static int load_user(hd_uow *uow, const char *id, user *u, int *loaded, hd_error *err)
{
    if (id == NULL || !hd_uuid_valid(id))
        return hd_error_set(err, HD_ENOTFOUND, "no such user");
    int rc = users_repo_get(hd_uow_store(uow), id, u, err);
    if (rc == 0)
        *loaded = 1;
    return rc;
}

static int rename_tx(users_app *app, hd_uow *uow, const char *id, const char *name, user *u,
                     int *loaded, hd_error *err)
{
    int rc = load_user(uow, id, u, loaded, err);
    if (rc < 0)
        return rc;
    int64_t version = hd_aggregate_version(&u->base);
    rc = user_rename(u, name, app->clock(), err);
    if (rc == 1)
        rc = users_repo_save(hd_uow_store(uow), u, version, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_rename(users_app *app, const char *correlation_id, const char *id, const char *name,
                 user_view *out, hd_error *err)
{
    if (app == NULL || name == NULL)
        return hd_error_set(err, HD_EINVAL, "users_rename: NULL argument");
    user u;
    int loaded = 0;
    hd_uow *uow;
    int rc = app_begin(app, correlation_id, &uow, err);
    if (rc == 0)
        rc = app_end(app, uow, rename_tx(app, uow, id, name, &u, &loaded, err), err);
    if (rc == 0)
        view_of(&u, out);
    if (loaded)
        user_release(&u);
    return rc;
}

static int delete_tx(users_app *app, hd_uow *uow, const char *id, user *u, int *loaded,
                     hd_error *err)
{
    int rc = load_user(uow, id, u, loaded, err);
    if (rc < 0)
        return rc;
    int64_t version = hd_aggregate_version(&u->base);
    rc = user_delete(u, app->clock(), err);
    if (rc == 0)
        rc = users_repo_remove(hd_uow_store(uow), u, version, err);
    if (rc == 0)
        rc = hd_uow_track(uow, &u->base);
    return rc;
}

int users_delete(users_app *app, const char *correlation_id, const char *id, hd_error *err)
{
    if (app == NULL)
        return hd_error_set(err, HD_EINVAL, "users_delete: NULL app");
    user u;
    int loaded = 0;
    hd_uow *uow;
    int rc = app_begin(app, correlation_id, &uow, err);
    if (rc == 0)
        rc = app_end(app, uow, delete_tx(app, uow, id, &u, &loaded, err), err);
    if (loaded)
        user_release(&u);
    return rc;
}

/* ---- queries ----------------------------------------------------------------------------
 * Reads take the store without a unit of work: one SELECT is atomic on its own, and there
 * is nothing to dispatch. */

int users_get(users_app *app, const char *id, user_view *out, hd_error *err)
{
    if (app == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "users_get: NULL argument");
    if (id == NULL || !hd_uuid_valid(id))
        return hd_error_set(err, HD_ENOTFOUND, "no such user");
    user u;
    pthread_mutex_t *held;
    hd_store *s = read_store(app, &held);
    int rc = users_repo_get(s, id, &u, err);
    pthread_mutex_unlock(held);
    if (rc == 0) {
        view_of(&u, out);
        user_release(&u);
    }
    return rc;
}

int users_get_by_email(users_app *app, const email *addr, user_view *out, hd_error *err)
{
    if (app == NULL || addr == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "users_get_by_email: NULL argument");
    user u;
    pthread_mutex_t *held;
    hd_store *s = read_store(app, &held);
    int rc = users_repo_get_by_email(s, addr, &u, err);
    pthread_mutex_unlock(held);
    if (rc == 0) {
        view_of(&u, out);
        user_release(&u);
    }
    return rc;
}

/* The cursor is the position of the last user of a page, "v1.<created_at_ms>.<id>", in
 * base64url so that clients treat it as opaque (and the format can change: v2). It is
 * not secret and not signed: a forged cursor only moves the client's own listing. */
static int cursor_encode(const user *last, char out[USERS_CURSOR_MAX])
{
    char plain[64];
    int n =
        snprintf(plain, sizeof plain, "v1.%lld.%s", (long long)last->created_at_ms, user_id(last));
    if (n < 0 || (size_t)n >= sizeof plain)
        return HD_ERANGE;
    sodium_bin2base64(out, USERS_CURSOR_MAX, (const unsigned char *)plain, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

static int cursor_decode(const char *cursor, users_position *pos, hd_error *err)
{
    char plain[64];
    size_t n = 0;
    if (strlen(cursor) >= USERS_CURSOR_MAX ||
        sodium_base642bin((unsigned char *)plain, sizeof plain - 1, cursor, strlen(cursor), NULL,
                          &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return hd_error_set(err, HD_EINVAL, "invalid cursor");
    plain[n] = '\0';
    /* "v1." then decimal digits up to INT64_MAX, '.', a UUID. Digits only, with the
     * overflow checked before each step, not sscanf("%lld"): its overflow is undefined, and
     * glibc's clamps to LLONG_MAX, which turned a cursor with a 20-digit time into a valid
     * position after everybody (200, an empty page) instead of the 400 the API promises;
     * and no NUL byte may hide a tail (found by tests/fuzz/fuzz_users_cursor.c). */
    if (memchr(plain, '\0', n) != NULL || strncmp(plain, "v1.", 3) != 0)
        return hd_error_set(err, HD_EINVAL, "invalid cursor");
    const char *p = plain + 3;
    int64_t ms = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        int d = *p - '0';
        if (ms > (INT64_MAX - d) / 10)
            return hd_error_set(err, HD_EINVAL, "invalid cursor");
        ms = ms * 10 + d;
    }
    if (digits == 0 || *p != '.' || !hd_uuid_valid(p + 1))
        return hd_error_set(err, HD_EINVAL, "invalid cursor");
    pos->created_at_ms = ms;
    copy_text(pos->id, sizeof pos->id, p + 1);
    return 0;
}

/* Read one more than asked: if it exists, there is a next page, and the cursor points at
 * the last user shown (not at the extra one, which opens the next page). */
static int list_locked(users_app *app, const users_position *after, size_t limit, user *rows,
                       users_page *page, hd_error *err)
{
    size_t count = 0;
    hd_store *s = app->replica ? hd_replica_for_read(app->replica, NULL, 0, NULL) : app->store;
    int rc = users_repo_list(s, after, limit + 1, rows, &count, err);
    if (rc < 0 && (s = hd_replica_read_failed(app->replica, s, NULL)) != NULL)
        rc = users_repo_list(s, after, limit + 1, rows, &count, err); /* standby died */
    if (rc < 0)
        return rc;
    size_t shown = count > limit ? limit : count;
    for (size_t i = 0; i < shown; i++)
        view_of(&rows[i], &page->items[i]);
    page->count = shown;
    if (count > limit)
        rc = cursor_encode(&rows[shown - 1], page->next_cursor);
    for (size_t i = 0; i < count; i++)
        user_release(&rows[i]);
    return rc;
}

int users_list(users_app *app, const char *cursor, size_t limit, users_page *page, hd_error *err)
{
    if (app == NULL || page == NULL)
        return hd_error_set(err, HD_EINVAL, "users_list: NULL argument");
    memset(page, 0, sizeof *page);
    if (limit < 1 || limit > USERS_PAGE_MAX)
        return hd_error_set(err, HD_ERANGE, "limit must be between 1 and %d", USERS_PAGE_MAX);
    users_position pos;
    int has_cursor = cursor != NULL && *cursor != '\0';
    if (has_cursor) {
        int rc = cursor_decode(cursor, &pos, err);
        if (rc < 0)
            return rc;
    }
    page->items = calloc(limit, sizeof *page->items);
    user *rows = calloc(limit + 1, sizeof *rows);
    if (page->items == NULL || rows == NULL) {
        free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    pthread_mutex_lock(&app->lock);
    int rc = list_locked(app, has_cursor ? &pos : NULL, limit, rows, page, err);
    pthread_mutex_unlock(&app->lock);
    free(rows);
    return rc;
}

void users_page_release(users_page *page)
{
    if (page == NULL)
        return;
    free(page->items);
    page->items = NULL;
    page->count = 0;
}
