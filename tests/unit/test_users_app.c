/* Unit tests for the users service's application layer (use cases), over a real store:
 * sqlite::memory: by default (one new database per case), or PostgreSQL when
 * HD_USERS_TEST_PG_URL names a server (tests/integration/test_users_http.sh runs this
 * program that way, so the same cases prove the SQL on both databases).
 *
 * It links the service's library (hd_svc_users) and drives the application layer's
 * functions directly: domain, repository, integration and application, no HTTP.
 *
 * Password hashing uses libsodium's minimum argon2id cost here (valgrind runs these tests;
 * the service's real cost is measured in docs/services/users.md). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <sodium.h>

#include "hd_test.h"

#include "users/domain.h"
#include "users/repository.h"
#include "users/integration.h"
#include "users/application.h"

#define VERIFY_BASE "https://app.test/verify?token="
#define RESET_BASE  "https://app.test/reset?token="
#define PASSWORD    "correct horse battery staple"
#define CID         "cid-test-0001"

/* ---- where the databases come from -------------------------------------------------------- */

static char *pg_db_url; /* a database created for this run, or NULL for SQLite */
static char *pg_db_name;
static unsigned pg_schemas;

/* A URL like base with its database (the path) replaced by db. New string. */
static char *with_database(const char *base, const char *db)
{
    const char *hostpart = strstr(base, "://");
    const char *path = hostpart ? strchr(hostpart + 3, '/') : NULL;
    size_t keep = path ? (size_t)(path - base) : strlen(base);
    const char *query = strchr(base, '?');
    size_t n = keep + strlen(db) + (query ? strlen(query) : 0) + 2;
    char *url = malloc(n);
    assert_non_null(url);
    snprintf(url, n, "%.*s/%s%s", (int)keep, base, db, query ? query : "");
    return url;
}

/* PostgreSQL: one database per run, created on the server HD_USERS_TEST_PG_URL names. */
static void pg_setup(const char *server_url)
{
    char name[64];
    snprintf(name, sizeof name, "users_test_%ld_%u", (long)getpid(), (unsigned)time(NULL));
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name); /* a name we made: digits only */
    hd_store *admin;
    hd_error err;
    if (hd_store_open(server_url, &admin, &err) < 0 ||
        hd_store_exec(admin, sql, NULL, 0, &err) < 0) {
        fprintf(stderr, "cannot create the test database on %s: %s\n", server_url, err.text);
        exit(1);
    }
    hd_store_close(admin);
    pg_db_name = strdup(name);
    pg_db_url = with_database(server_url, name);
}

static void pg_teardown(const char *server_url)
{
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg_db_name);
    hd_store *admin;
    if (hd_store_open(server_url, &admin, NULL) == 0) {
        hd_store_exec(admin, sql, NULL, 0, NULL);
        hd_store_close(admin);
    }
    free(pg_db_url);
    free(pg_db_name);
}

/* A fresh, empty database for one case: a new sqlite::memory:, or a new schema in the run's
 * PostgreSQL database (search_path set through the URL's options). */
static hd_store *fresh_store(void)
{
    hd_store *s;
    hd_error err;
    if (pg_db_url == NULL) {
        assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &s, &err), &err);
        return s;
    }
    char schema[32], sql[64], url[1024];
    snprintf(schema, sizeof schema, "case%u", ++pg_schemas);
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    assert_hd_err(HD_OK, hd_store_open(pg_db_url, &s, &err), &err);
    assert_hd_err(0, hd_store_exec(s, sql, NULL, 0, &err), &err);
    hd_store_close(s);
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s", pg_db_url,
             strchr(pg_db_url, '?') ? "&" : "?", schema);
    assert_hd_err(HD_OK, hd_store_open(url, &s, &err), &err);
    return s;
}

/* ---- fixture -------------------------------------------------------------------------------- */

static int64_t fake_now; /* 0: the real clock */

static int64_t test_clock(void)
{
    return fake_now ? fake_now : hd_time_now_ms();
}

typedef struct fixture {
    hd_store *store;
    users_app *app;
} fixture;

static users_config test_config(void)
{
    users_config cfg = {
        .verify_base_url = VERIFY_BASE,
        .reset_base_url = RESET_BASE,
        .pwhash_opslimit = crypto_pwhash_OPSLIMIT_MIN,
        .pwhash_memlimit = crypto_pwhash_MEMLIMIT_MIN,
        .clock = test_clock,
    };
    return cfg;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    f->store = fresh_store();
    assert_true(users_repo_migrate(f->store, &err) >= 0);
    users_config cfg = test_config();
    assert_hd_err(HD_OK, users_app_new(f->store, &cfg, &f->app, &err), &err);
    fake_now = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    users_app_free(f->app);
    hd_store_close(f->store);
    free(f);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

static int64_t count(hd_store *s, const char *sql, const char *arg)
{
    hd_value p[] = {hd_value_text(arg)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_query(s, sql, p, arg ? 1 : 0, &rows, &err), &err);
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

static int64_t outbox_rows(fixture *f, const char *type)
{
    return count(f->store, "SELECT COUNT(*) FROM hd_outbox WHERE type = $1", type);
}

static int64_t all_outbox_rows(fixture *f)
{
    return count(f->store, "SELECT COUNT(*) FROM hd_outbox", NULL);
}

static int64_t user_rows(fixture *f)
{
    return count(f->store, "SELECT COUNT(*) FROM users", NULL);
}

static int reg(fixture *f, const char *addr, const char *name, user_view *out, hd_error *err)
{
    email e;
    assert_hd(HD_OK, email_parse(addr, &e, NULL));
    return users_register(f->app, CID, &e, PASSWORD, strlen(PASSWORD), name, out, err);
}

/* The newest outbox envelope of type, as JSON (new reference). */
static json_t *last_envelope(fixture *f, const char *type)
{
    hd_value p[] = {hd_value_text(type)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store,
                                 "SELECT payload FROM hd_outbox WHERE type = $1 ORDER BY seq DESC",
                                 p, 1, &rows, &err),
                  &err);
    assert_true(hd_rows_count(rows) > 0);
    json_t *env = json_loads(hd_rows_text(rows, 0, 0), 0, NULL);
    hd_rows_free(rows);
    assert_non_null(env);
    return env;
}

/* The token at the end of the newest link of type (written into out). */
static void last_token(fixture *f, const char *type, const char *link_field,
                       char out[USERS_TOKEN_LEN + 1])
{
    json_t *env = last_envelope(f, type);
    const char *link = json_string_value(json_object_get(json_object_get(env, "data"), link_field));
    assert_non_null(link);
    const char *eq = strrchr(link, '=');
    assert_non_null(eq);
    assert_int_equal(strlen(eq + 1), USERS_TOKEN_LEN);
    strcpy(out, eq + 1);
    json_decref(env);
}

/* ---- register -----------------------------------------------------------------------------------
 */

static void test_register_writes_user_and_outbox_together(void **state)
{
    fixture *f = *state;
    user_view v;
    hd_error err;
    assert_hd_err(HD_OK, reg(f, "  Ada@Example.COM ", "Ada", &v, &err), &err);
    assert_true(hd_uuid_valid(v.id));
    assert_string_equal(v.email, "ada@example.com");
    assert_string_equal(v.name, "Ada");
    assert_false(v.verified);
    assert_int_equal(user_rows(f), 1);
    assert_int_equal(all_outbox_rows(f), 1);
    assert_int_equal(count(f->store, "SELECT COUNT(*) FROM user_tokens WHERE user_id = $1", v.id),
                     1);

    json_t *env = last_envelope(f, USERS_EVENT_REGISTERED);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(env, "source")), "herald-users");
    assert_int_equal(json_integer_value(json_object_get(env, "schemaversion")), 1);
    assert_string_equal(json_string_value(json_object_get(env, "correlationid")), CID);
    assert_true(hd_uuid_valid(json_string_value(json_object_get(env, "causationid"))));
    assert_string_equal(json_string_value(json_object_get(data, "user_id")), v.id);
    assert_string_equal(json_string_value(json_object_get(data, "email")), "ada@example.com");
    assert_string_equal(json_string_value(json_object_get(data, "name")), "Ada");
    const char *link = json_string_value(json_object_get(data, "verification_link"));
    assert_non_null(link);
    assert_int_equal(strncmp(link, VERIFY_BASE, strlen(VERIFY_BASE)), 0);
    assert_int_equal(strlen(link), strlen(VERIFY_BASE) + USERS_TOKEN_LEN);
    /* The outbox row is for the user aggregate (per-aggregate ordering in the relay). */
    assert_int_equal(count(f->store,
                           "SELECT COUNT(*) FROM hd_outbox WHERE aggregate_type = 'user'"
                           " AND aggregate_id = $1",
                           v.id),
                     1);

    /* Only the token's hash is stored. */
    const char *token = link + strlen(VERIFY_BASE);
    assert_int_equal(
        count(f->store, "SELECT COUNT(*) FROM user_tokens WHERE token_hash = $1", token), 0);
    char hash[USERS_TOKEN_HASH_LEN + 1];
    users_token_hash(token, hash);
    assert_int_equal(
        count(f->store, "SELECT COUNT(*) FROM user_tokens WHERE token_hash = $1", hash), 1);
    json_decref(env);
}

static void test_password_is_stored_as_argon2id_only(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    hd_value p[] = {hd_value_text(v.id)};
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(f->store, "SELECT password_hash FROM users WHERE id = $1", p, 1,
                                    &rows, NULL));
    const char *hash = hd_rows_text(rows, 0, 0);
    assert_int_equal(strncmp(hash, "$argon2id$", 10), 0);
    assert_int_equal(crypto_pwhash_str_verify(hash, PASSWORD, strlen(PASSWORD)), 0);
    assert_int_not_equal(crypto_pwhash_str_verify(hash, "wrong password", 14), 0);
    hd_rows_free(rows);
    /* Nowhere in clear: not in users, tokens or the outbox. */
    const char *like = "%" PASSWORD "%";
    assert_int_equal(count(f->store,
                           "SELECT COUNT(*) FROM users WHERE password_hash LIKE $1"
                           " OR name LIKE $1 OR email LIKE $1",
                           like),
                     0);
    assert_int_equal(count(f->store,
                           "SELECT COUNT(*) FROM hd_outbox WHERE payload LIKE $1"
                           " OR headers LIKE $1",
                           like),
                     0);
}

static void test_register_refuses_weak_password(void **state)
{
    fixture *f = *state;
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    hd_error err;
    assert_hd(HD_EVALIDATE, users_register(f->app, CID, &e, "short", 5, "", NULL, &err));
    assert_int_equal(user_rows(f), 0);
    assert_int_equal(all_outbox_rows(f), 0);
}

static void test_duplicate_email_is_eexist_and_emits_nothing(void **state)
{
    fixture *f = *state;
    hd_error err;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    /* Another case of the same address is the same address. */
    assert_hd_err(HD_EEXIST, reg(f, "ADA@example.com", "Impostor", NULL, &err), &err);
    assert_non_null(strstr(err.text, "registered already"));
    assert_int_equal(user_rows(f), 1);
    assert_int_equal(all_outbox_rows(f), 1);
    assert_int_equal(count(f->store, "SELECT COUNT(*) FROM user_tokens", NULL), 1);
    /* The app is still usable: the aborted transaction was rolled back. */
    assert_hd(HD_OK, reg(f, "grace@example.com", "Grace", NULL, NULL));
    assert_int_equal(user_rows(f), 2);
}

static int failing_handler(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)handler;
    (void)uow;
    (void)ev;
    return hd_error_set(err, HD_EHANDLER, "the welcome mat is on fire");
}

static void test_failing_handler_leaves_no_user(void **state)
{
    fixture *f = *state;
    /* A second app on the same store, with one more handler after the outbox one: its
     * failure must roll back the user row, the token and the outbox row already written. */
    users_config cfg = test_config();
    users_app *app;
    assert_hd(HD_OK, users_app_new(f->store, &cfg, &app, NULL));
    assert_hd(HD_OK, hd_dispatcher_register(users_app_dispatcher(app), USER_REGISTERED,
                                            failing_handler, NULL));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    hd_error err;
    assert_hd_err(HD_EHANDLER,
                  users_register(app, CID, &e, PASSWORD, strlen(PASSWORD), "", NULL, &err), &err);
    assert_non_null(strstr(err.text, "on fire"));
    assert_int_equal(user_rows(f), 0);
    assert_int_equal(all_outbox_rows(f), 0);
    assert_int_equal(count(f->store, "SELECT COUNT(*) FROM user_tokens", NULL), 0);
    users_app_free(app);
    /* The address is still free for the working app. */
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
}

/* ---- verify ------------------------------------------------------------------------------------
 */

static void test_verify_with_good_token(void **state)
{
    fixture *f = *state;
    user_view v, after;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    char token[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", token);
    hd_error err;
    /* Any case: a mail client may have upper-cased the link. */
    for (char *c = token; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    assert_hd_err(HD_OK, users_verify_email(f->app, "cid-verify", token, &after, &err), &err);
    assert_string_equal(after.id, v.id);
    assert_true(after.verified);
    user_view got;
    assert_hd(HD_OK, users_get(f->app, v.id, &got, NULL));
    assert_true(got.verified);
    assert_int_equal(outbox_rows(f, USERS_EVENT_VERIFIED), 1);
    json_t *env = last_envelope(f, USERS_EVENT_VERIFIED);
    assert_string_equal(json_string_value(json_object_get(env, "correlationid")), "cid-verify");
    assert_string_equal(json_string_value(json_object_get(json_object_get(env, "data"), "email")),
                        "ada@example.com");
    json_decref(env);
}

static void test_verify_token_is_single_use(void **state)
{
    fixture *f = *state;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    char token[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", token);
    assert_hd(HD_OK, users_verify_email(f->app, CID, token, NULL, NULL));
    hd_error err;
    assert_hd(HD_ESTATE, users_verify_email(f->app, CID, token, NULL, &err));
    assert_non_null(strstr(err.text, "already used"));
    assert_int_equal(outbox_rows(f, USERS_EVENT_VERIFIED), 1);
}

static void test_verify_token_expires(void **state)
{
    fixture *f = *state;
    fake_now = 1700000000000;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    char token[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", token);
    fake_now += USERS_VERIFY_TTL_DEFAULT_MS; /* the first instant it is no longer valid */
    hd_error err;
    assert_hd(HD_ESTATE, users_verify_email(f->app, CID, token, NULL, &err));
    assert_non_null(strstr(err.text, "expired"));
    fake_now -= 1; /* the last instant it is */
    assert_hd_err(HD_OK, users_verify_email(f->app, CID, token, NULL, &err), &err);
    fake_now = 0;
}

static void test_verify_rejects_bad_tokens(void **state)
{
    fixture *f = *state;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    hd_error err;
    assert_hd(HD_EINVAL, users_verify_email(f->app, CID, NULL, NULL, &err));
    assert_hd(HD_EINVAL, users_verify_email(f->app, CID, "", NULL, &err));
    assert_hd(HD_EINVAL, users_verify_email(f->app, CID, "abc", NULL, &err));
    char bad[USERS_TOKEN_LEN + 2];
    memset(bad, 'g', USERS_TOKEN_LEN);
    bad[USERS_TOKEN_LEN] = '\0';
    assert_hd(HD_EINVAL, users_verify_email(f->app, CID, bad, NULL, &err));
    memset(bad, 'a', USERS_TOKEN_LEN + 1);
    bad[USERS_TOKEN_LEN + 1] = '\0';
    assert_hd(HD_EINVAL, users_verify_email(f->app, CID, bad, NULL, &err));
    /* Well-formed but never issued. */
    memset(bad, 'a', USERS_TOKEN_LEN);
    bad[USERS_TOKEN_LEN] = '\0';
    assert_hd(HD_ENOTFOUND, users_verify_email(f->app, CID, bad, NULL, &err));
    /* A reset token does not verify an address. */
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    char reset[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", reset);
    assert_hd(HD_ENOTFOUND, users_verify_email(f->app, CID, reset, NULL, &err));
    assert_int_equal(outbox_rows(f, USERS_EVENT_VERIFIED), 0);
}

/* ---- password reset -----------------------------------------------------------------------------
 */

static void test_password_reset_for_unknown_email_emits_nothing(void **state)
{
    fixture *f = *state;
    email e;
    assert_hd(HD_OK, email_parse("nobody@example.com", &e, NULL));
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(users_request_password_reset(f->app, CID, &e, &err), 0);
    assert_string_equal(err.text, ""); /* no reason to leak */
    assert_int_equal(all_outbox_rows(f), 0);
    assert_int_equal(count(f->store, "SELECT COUNT(*) FROM user_tokens", NULL), 0);
}

static void test_password_reset_for_known_email(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    email e;
    assert_hd(HD_OK, email_parse("ADA@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, "cid-reset", &e, NULL), 1);
    json_t *env = last_envelope(f, USERS_EVENT_RESET_REQUESTED);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "user_id")), v.id);
    const char *link = json_string_value(json_object_get(data, "reset_link"));
    assert_int_equal(strncmp(link, RESET_BASE, strlen(RESET_BASE)), 0);
    assert_string_equal(json_string_value(json_object_get(env, "correlationid")), "cid-reset");
    json_decref(env);
    assert_int_equal(count(f->store,
                           "SELECT COUNT(*) FROM user_tokens WHERE purpose = 'reset'"
                           " AND user_id = $1",
                           v.id),
                     1);
}

static const char *stored_hash(fixture *f, const char *id, hd_rows **rows)
{
    hd_value p[] = {hd_value_text(id)};
    assert_hd(HD_OK, hd_store_query(f->store, "SELECT password_hash FROM users WHERE id = $1", p, 1,
                                    rows, NULL));
    return hd_rows_text(*rows, 0, 0);
}

static void test_reset_password_with_token(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    /* Two links requested; the newer one is used; the older one must die with it. */
    char older[USERS_TOKEN_LEN + 1], newer[USERS_TOKEN_LEN + 1];
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    last_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", older);
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    last_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", newer);
    const char *fresh = "a brand new passphrase";
    hd_error err;
    assert_hd(HD_EVALIDATE, users_reset_password(f->app, CID, newer, "short", 5, &err));
    assert_hd_err(HD_OK, users_reset_password(f->app, CID, newer, fresh, strlen(fresh), &err),
                  &err);
    hd_rows *rows = NULL;
    const char *hash = stored_hash(f, v.id, &rows);
    assert_int_equal(crypto_pwhash_str_verify(hash, fresh, strlen(fresh)), 0);
    assert_int_not_equal(crypto_pwhash_str_verify(hash, PASSWORD, strlen(PASSWORD)), 0);
    hd_rows_free(rows);
    assert_hd(HD_ESTATE, users_reset_password(f->app, CID, newer, fresh, strlen(fresh), &err));
    assert_non_null(strstr(err.text, "already used"));
    assert_hd(HD_ESTATE, users_reset_password(f->app, CID, older, fresh, strlen(fresh), &err));
    /* No integration event for a changed password (only the two reset requests). */
    assert_int_equal(all_outbox_rows(f), 3);
}

static void test_reset_password_refuses_wrong_tokens(void **state)
{
    fixture *f = *state;
    fake_now = 1700000000000;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    char verify[USERS_TOKEN_LEN + 1], reset[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", verify);
    hd_error err;
    /* A verification token does not reset a password. */
    assert_hd(HD_ENOTFOUND,
              users_reset_password(f->app, CID, verify, PASSWORD, strlen(PASSWORD), &err));
    assert_hd(HD_EINVAL,
              users_reset_password(f->app, CID, "nope", PASSWORD, strlen(PASSWORD), &err));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    last_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", reset);
    fake_now += USERS_RESET_TTL_DEFAULT_MS;
    assert_hd(HD_ESTATE,
              users_reset_password(f->app, CID, reset, PASSWORD, strlen(PASSWORD), &err));
    assert_non_null(strstr(err.text, "expired"));
    fake_now = 0;
}

/* Issue 9: the reset confirmation used to hash the new password (64 MiB of argon2id in
 * production) before it looked at the token, so any well-formed token bought a hash. Now
 * a token that is unknown, of the other purpose, used or expired costs a query only. */
static void test_reset_confirm_looks_up_the_token_before_hashing(void **state)
{
    fixture *f = *state;
    fake_now = 1700000000000;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", NULL, NULL));
    uint64_t after_register = users_app_hashes(f->app);
    assert_int_equal(after_register, 1);
    char verify[USERS_TOKEN_LEN + 1], reset[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", verify);
    hd_error err;
    const char *unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for (int i = 0; i < 20; i++)
        assert_hd(HD_ENOTFOUND,
                  users_reset_password(f->app, CID, unknown, PASSWORD, strlen(PASSWORD), &err));
    assert_hd(HD_ENOTFOUND,
              users_reset_password(f->app, CID, verify, PASSWORD, strlen(PASSWORD), &err));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    last_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", reset);
    fake_now += USERS_RESET_TTL_DEFAULT_MS; /* expired */
    assert_hd(HD_ESTATE,
              users_reset_password(f->app, CID, reset, PASSWORD, strlen(PASSWORD), &err));
    assert_int_equal(users_app_hashes(f->app), after_register); /* not one hash */
    fake_now -= USERS_RESET_TTL_DEFAULT_MS;                     /* valid again */
    assert_hd_err(HD_OK, users_reset_password(f->app, CID, reset, PASSWORD, strlen(PASSWORD), &err),
                  &err);
    assert_int_equal(users_app_hashes(f->app), after_register + 1);
    assert_hd(HD_ESTATE,
              users_reset_password(f->app, CID, reset, PASSWORD, strlen(PASSWORD), &err));
    assert_int_equal(users_app_hashes(f->app), after_register + 1); /* used: no hash */
    fake_now = 0;
}

/* A hash function that holds its slot until released: fills the pool on demand. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside, open;
} gate;

static int gated_hash(void *ctx, char *out, const char *password, size_t len)
{
    gate *g = ctx;
    pthread_mutex_lock(&g->lock);
    g->inside++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return crypto_pwhash_str_alg(out, password, len, crypto_pwhash_OPSLIMIT_MIN,
                                 crypto_pwhash_MEMLIMIT_MIN, crypto_pwhash_ALG_ARGON2ID13);
}

typedef struct reg_job {
    users_app *app;
    const char *addr;
    int rc;
} reg_job;

static void *register_in_thread(void *arg)
{
    reg_job *j = arg;
    email e;
    email_parse(j->addr, &e, NULL);
    j->rc = users_register(j->app, CID, &e, PASSWORD, strlen(PASSWORD), "", NULL, NULL);
    return NULL;
}

/* With every hashing slot taken, a request waits hash_wait_ms at most, then fails with
 * HD_ETIMEOUT (the API's 503 + Retry-After) instead of queueing without bound. */
static void test_full_hashing_pool_waits_a_bounded_time(void **state)
{
    fixture *f = *state;
    gate g = {.inside = 0, .open = 0};
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    users_config cfg = test_config();
    cfg.max_hashing = 1;
    cfg.hash_wait_ms = 100;
    cfg.pwhash = gated_hash;
    cfg.pwhash_ctx = &g;
    users_app *app = NULL;
    hd_error err;
    assert_hd_err(HD_OK, users_app_new(f->store, &cfg, &app, &err), &err);
    reg_job first = {app, "first@example.com", 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, register_in_thread, &first), 0);
    pthread_mutex_lock(&g.lock);
    while (g.inside == 0)
        pthread_cond_wait(&g.cond, &g.lock); /* the only slot is taken */
    pthread_mutex_unlock(&g.lock);
    email e;
    assert_hd(HD_OK, email_parse("second@example.com", &e, NULL));
    int64_t t0 = hd_clock_ms();
    assert_hd(HD_ETIMEOUT,
              users_register(app, CID, &e, PASSWORD, strlen(PASSWORD), "", NULL, &err));
    int64_t waited = hd_clock_ms() - t0;
    assert_true(waited >= 90);
    assert_true(waited < 5000);
    assert_non_null(strstr(err.text, "busy"));
    assert_int_equal(users_app_hashes(app), 1); /* the refused one never hashed */
    pthread_mutex_lock(&g.lock);
    g.open = 1;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    pthread_join(t, NULL);
    assert_hd(HD_OK, first.rc);
    /* the slot is free again: the second registration goes through now */
    assert_hd_err(HD_OK, users_register(app, CID, &e, PASSWORD, strlen(PASSWORD), "", NULL, &err),
                  &err);
    users_app_free(app);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
}

/* ---- queries ----------------------------------------------------------------------------------
 */

static void test_get_by_id_and_email(void **state)
{
    fixture *f = *state;
    user_view v, got;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    assert_hd(HD_OK, users_get(f->app, v.id, &got, NULL));
    assert_string_equal(got.id, v.id);
    assert_string_equal(got.email, v.email);
    assert_string_equal(got.name, v.name);
    assert_int_equal(got.verified, v.verified);
    assert_int_equal(got.created_at_ms, v.created_at_ms);
    assert_int_equal(got.updated_at_ms, v.updated_at_ms);
    email e;
    assert_hd(HD_OK, email_parse("Ada@Example.com", &e, NULL));
    assert_hd(HD_OK, users_get_by_email(f->app, &e, &got, NULL));
    assert_string_equal(got.id, v.id);
    assert_hd(HD_ENOTFOUND, users_get(f->app, "not-a-uuid", &got, NULL));
    assert_hd(HD_ENOTFOUND, users_get(f->app, "00000000-0000-4000-8000-000000000000", &got, NULL));
    assert_hd(HD_OK, email_parse("grace@example.com", &e, NULL));
    assert_hd(HD_ENOTFOUND, users_get_by_email(f->app, &e, &got, NULL));
}

/* Reads by key go to the readers (users_app_add_reader), and see what the app wrote. The
 * first reader is opened on another, empty database: a read that still went to the app's
 * own store would find the user and fail the test. Its own SQLite files, so that a second
 * connection sees the same database (a sqlite::memory: is one per connection). */
static void test_reads_by_key_use_the_readers(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("users-readers");
    assert_non_null(dir);
    char url[2][4200];
    hd_store *primary, *other, *same;
    hd_error err;
    snprintf(url[0], sizeof url[0], "sqlite://%s/users.db", dir);
    snprintf(url[1], sizeof url[1], "sqlite://%s/other.db", dir);
    assert_hd_err(HD_OK, hd_store_open(url[0], &primary, &err), &err);
    assert_true(users_repo_migrate(primary, &err) >= 0);
    assert_hd_err(HD_OK, hd_store_open(url[1], &other, &err), &err);
    assert_true(users_repo_migrate(other, &err) >= 0);
    assert_hd_err(HD_OK, hd_store_open(url[0], &same, &err), &err);
    users_config cfg = test_config();
    fixture f = {.store = primary};
    assert_hd_err(HD_OK, users_app_new(primary, &cfg, &f.app, &err), &err);
    user_view v, got;
    assert_hd(HD_OK, reg(&f, "ada@example.com", "Ada", &v, NULL));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_hd(HD_OK, users_get(f.app, v.id, &got, NULL)); /* no reader yet: the app's store */

    assert_hd(HD_EINVAL, users_app_add_reader(f.app, NULL));
    assert_hd(HD_OK, users_app_add_reader(f.app, other));
    assert_hd(HD_ENOTFOUND, users_get(f.app, v.id, &got, NULL));
    assert_hd(HD_ENOTFOUND, users_get_by_email(f.app, &e, &got, NULL));
    users_app_free(f.app);

    /* A reader on the same database sees every write the app committed before the read. */
    assert_hd_err(HD_OK, users_app_new(primary, &cfg, &f.app, &err), &err);
    for (int i = 0; i < USERS_READERS_MAX; i++)
        assert_hd(HD_OK, users_app_add_reader(f.app, same));
    assert_hd(HD_ERANGE, users_app_add_reader(f.app, same));
    assert_hd(HD_OK, users_rename(f.app, CID, v.id, "Ada L.", &got, NULL));
    for (int i = 0; i < 2 * USERS_READERS_MAX; i++) {
        assert_hd(HD_OK, users_get(f.app, v.id, &got, NULL));
        assert_string_equal(got.name, "Ada L.");
        assert_hd(HD_OK, users_get_by_email(f.app, &e, &got, NULL));
        assert_string_equal(got.id, v.id);
    }
    assert_hd(HD_OK, users_delete(f.app, CID, v.id, NULL));
    assert_hd(HD_ENOTFOUND, users_get(f.app, v.id, &got, NULL));
    users_app_free(f.app);
    hd_store_close(same);
    hd_store_close(other);
    hd_store_close(primary);
    hd_test_rmtree(dir);
    free(dir);
}

static void test_list_pagination_covers_everyone_once(void **state)
{
    fixture *f = *state;
    enum { N = 23, PAGE = 5 };
    char ids[N][HD_UUID_LEN + 1];
    /* Several users per millisecond: the id must break the ties. */
    for (int i = 0; i < N; i++) {
        fake_now = 1700000000000 + i / 4;
        char addr[64];
        snprintf(addr, sizeof addr, "user%02d@example.com", i);
        user_view v;
        assert_hd(HD_OK, reg(f, addr, "", &v, NULL));
        strcpy(ids[i], v.id);
    }
    fake_now = 0;
    int seen[N] = {0};
    char cursor[USERS_CURSOR_MAX] = "";
    int pages = 0;
    int64_t last_created = 0;
    char last_id[HD_UUID_LEN + 1] = "";
    do {
        users_page page;
        hd_error err;
        assert_hd_err(HD_OK, users_list(f->app, cursor, PAGE, &page, &err), &err);
        assert_true(page.count <= PAGE);
        for (size_t i = 0; i < page.count; i++) {
            const user_view *v = &page.items[i];
            /* strictly increasing (created_at, id) */
            assert_true(v->created_at_ms > last_created ||
                        (v->created_at_ms == last_created && strcmp(v->id, last_id) > 0));
            last_created = v->created_at_ms;
            strcpy(last_id, v->id);
            int found = 0;
            for (int k = 0; k < N; k++)
                if (strcmp(ids[k], v->id) == 0) {
                    seen[k]++;
                    found = 1;
                }
            assert_true(found);
        }
        strcpy(cursor, page.next_cursor);
        users_page_release(&page);
        pages++;
    } while (cursor[0] != '\0');
    assert_int_equal(pages, (N + PAGE - 1) / PAGE);
    for (int k = 0; k < N; k++)
        assert_int_equal(seen[k], 1);
}

/* The list goes through the app's router (replica.h); without a standby it routes every read
 * to the app's store and counts it, and a write costs no extra query. The standby itself:
 * integration.replica. */
static void test_list_through_the_read_router(void **state)
{
    fixture *f = *state;
    hd_replica *r = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_replica_open(f->store, NULL, NULL, &r, &err), &err);
    users_app_set_replica(f->app, r);
    user_view v;
    assert_hd(HD_OK, reg(f, "routed@example.com", "", &v, NULL));
    users_page page;
    assert_hd_err(HD_OK, users_list(f->app, NULL, 20, &page, &err), &err);
    assert_int_equal(page.count, 1);
    assert_string_equal(page.items[0].id, v.id);
    users_page_release(&page);
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    assert_int_equal(st.reads[HD_REPLICA_NO_STANDBY], 1);
    assert_true(hd_replica_needed(r, NULL) == 0); /* nothing recorded without a standby */
    users_app_set_replica(f->app, NULL);
    hd_replica_close(r);
}

static void test_list_edges(void **state)
{
    fixture *f = *state;
    users_page page;
    hd_error err;
    assert_hd(HD_OK, users_list(f->app, NULL, 20, &page, &err)); /* empty */
    assert_int_equal(page.count, 0);
    assert_string_equal(page.next_cursor, "");
    users_page_release(&page);
    assert_hd(HD_ERANGE, users_list(f->app, NULL, 0, &page, &err));
    users_page_release(&page);
    assert_hd(HD_ERANGE, users_list(f->app, NULL, USERS_PAGE_MAX + 1, &page, &err));
    users_page_release(&page);
    assert_hd(HD_EINVAL, users_list(f->app, "not a cursor!", 20, &page, &err));
    users_page_release(&page);
    assert_hd(HD_EINVAL, users_list(f->app, "djEuMTIz", 20, &page, &err)); /* "v1.123" */
    users_page_release(&page);
    /* Issue 9: a time that overflows 64 bits was clamped by sscanf and accepted (200, an
     * empty page); signs, blanks and empty times are not cursors either. */
    const char *plains[] = {
        "v1.99999999999999999999.123e4567-e89b-12d3-a456-426614174000",
        "v1.9223372036854775808.123e4567-e89b-12d3-a456-426614174000",
        "v1.-1.123e4567-e89b-12d3-a456-426614174000",
        "v1.+5.123e4567-e89b-12d3-a456-426614174000",
        "v1. 5.123e4567-e89b-12d3-a456-426614174000",
        "v1..123e4567-e89b-12d3-a456-426614174000",
        "v1.5.123e4567-e89b-12d3-a456-42661417400",
    };
    for (size_t i = 0; i < sizeof plains / sizeof plains[0]; i++) {
        char cursor[USERS_CURSOR_MAX];
        sodium_bin2base64(cursor, sizeof cursor, (const unsigned char *)plains[i],
                          strlen(plains[i]), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        if (users_list(f->app, cursor, 20, &page, &err) != HD_EINVAL)
            fail_msg("cursor \"%s\" was accepted", plains[i]);
        users_page_release(&page);
    }
    {
        const char *fine = "v1.123.123e4567-e89b-12d3-a456-426614174000";
        char cursor[USERS_CURSOR_MAX];
        sodium_bin2base64(cursor, sizeof cursor, (const unsigned char *)fine, strlen(fine),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        assert_hd_err(HD_OK, users_list(f->app, cursor, 20, &page, &err), &err);
        users_page_release(&page);
    }
    /* Exactly one full page: no next cursor (the extra row is not there). */
    assert_hd(HD_OK, reg(f, "a@example.com", "", NULL, NULL));
    assert_hd(HD_OK, reg(f, "b@example.com", "", NULL, NULL));
    assert_hd(HD_OK, users_list(f->app, "", 2, &page, &err));
    assert_int_equal(page.count, 2);
    assert_string_equal(page.next_cursor, "");
    users_page_release(&page);
}

/* Cursors the fuzzer found accepted (tests/fuzz/fuzz_users_cursor.c): a timestamp past
 * INT64_MAX (sscanf saturated it: an empty page instead of a 400), a sign or blanks before
 * the digits, a NUL byte hiding a tail. Each is "v1.<ms>.<uuid>..." in base64url. */
static void test_list_refuses_overflowing_or_signed_cursor(void **state)
{
    fixture *f = *state;
    static const char *const bad[] = {
        /* v1.9223374073709551614.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 */
        "djEuOTIyMzM3NDA3MzcwOTU1MTYxNC4zZjFlOGE0Yy0yYjdkLTRjMWUtOWEwZi01ZDZiN2M4ZTlmMDE",
        /* v1.99999999999999999999.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 */
        "djEuOTk5OTk5OTk5OTk5OTk5OTk5OTkuM2YxZThhNGMtMmI3ZC00YzFlLTlhMGYtNWQ2YjdjOGU5ZjAx",
        /* v1.+5.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 */
        "djEuKzUuM2YxZThhNGMtMmI3ZC00YzFlLTlhMGYtNWQ2YjdjOGU5ZjAx",
        /* v1. 5.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 */
        "djEuIDUuM2YxZThhNGMtMmI3ZC00YzFlLTlhMGYtNWQ2YjdjOGU5ZjAx",
        /* v1.-0.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 */
        "djEuLTAuM2YxZThhNGMtMmI3ZC00YzFlLTlhMGYtNWQ2YjdjOGU5ZjAx",
        /* v1.1700000000000.3f1e8a4c-2b7d-4c1e-9a0f-5d6b7c8e9f01 NUL 0xbd */
        "djEuMTcwMDAwMDAwMDAwMC4zZjFlOGE0Yy0yYjdkLTRjMWUtOWEwZi01ZDZiN2M4ZTlmMDEAvQ",
    };
    users_page page;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_hd(HD_EINVAL, users_list(f->app, bad[i], 20, &page, NULL));
        assert_int_equal(page.count, 0);
        users_page_release(&page);
    }
    /* The largest timestamp is still a cursor: v1.9223372036854775807.<uuid> */
    assert_hd(HD_OK, users_list(f->app,
                                "djEuOTIyMzM3MjAzNjg1NDc3NTgwNy4zZjFlOGE0Yy0yYjdkLTRjMWUtOWEwZi01ZD"
                                "ZiN2M4ZTlmMDE",
                                20, &page, NULL));
    users_page_release(&page);
}

/* ---- rename and delete --------------------------------------------------------------------------
 */

static void test_rename_updates_without_integration_event(void **state)
{
    fixture *f = *state;
    user_view v, after;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    hd_error err;
    assert_hd_err(HD_OK, users_rename(f->app, CID, v.id, "Ada Lovelace", &after, &err), &err);
    assert_string_equal(after.name, "Ada Lovelace");
    assert_hd(HD_OK, users_get(f->app, v.id, &after, NULL));
    assert_string_equal(after.name, "Ada Lovelace");
    assert_int_equal(all_outbox_rows(f), 1); /* just the registration */
    assert_hd(HD_OK, users_rename(f->app, CID, v.id, "Ada Lovelace", &after, NULL)); /* no-op */
    assert_hd(HD_ENOTFOUND,
              users_rename(f->app, CID, "00000000-0000-4000-8000-000000000000", "X", NULL, &err));
    assert_int_equal(count(f->store, "SELECT version FROM users WHERE id = $1", v.id), 2);
}

static void test_stale_version_is_ebusy(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    /* Load, let "someone else" save in between, then save the stale copy. */
    user u;
    assert_hd(HD_OK, users_repo_get(f->store, v.id, &u, NULL));
    int64_t loaded = hd_aggregate_version(&u.base);
    assert_hd(HD_OK, users_rename(f->app, CID, v.id, "Someone else", NULL, NULL));
    assert_int_equal(user_rename(&u, "Stale", 1, NULL), 1);
    hd_error err;
    assert_hd(HD_EBUSY, users_repo_save(f->store, &u, loaded, &err));
    user_release(&u);
}

static void test_delete_emits_user_deleted(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    hd_error err;
    assert_hd_err(HD_OK, users_delete(f->app, "cid-delete", v.id, &err), &err);
    assert_int_equal(user_rows(f), 0);
    assert_int_equal(count(f->store, "SELECT COUNT(*) FROM user_tokens", NULL), 0); /* cascade */
    assert_int_equal(outbox_rows(f, USERS_EVENT_DELETED), 1);
    json_t *env = last_envelope(f, USERS_EVENT_DELETED);
    json_t *data = json_object_get(env, "data");
    assert_string_equal(json_string_value(json_object_get(data, "user_id")), v.id);
    assert_int_equal(json_object_size(data), 1); /* no personal data in a deletion */
    assert_string_equal(json_string_value(json_object_get(env, "correlationid")), "cid-delete");
    json_decref(env);
    user_view got;
    assert_hd(HD_ENOTFOUND, users_get(f->app, v.id, &got, NULL));
    assert_hd(HD_ENOTFOUND, users_delete(f->app, CID, v.id, &err));
    /* The address can be registered again. */
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada again", NULL, NULL));
}

/* ---- threads -------------------------------------------------------------------------------- */

enum { THREADS = 4, PER_THREAD = 5 };

typedef struct worker {
    users_app *app;
    int index;
    int failures;
} worker;

static void *register_many(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "t%d-%d@example.com", w->index, i);
        email e;
        if (email_parse(addr, &e, NULL) < 0 ||
            users_register(w->app, CID, &e, PASSWORD, strlen(PASSWORD), "", NULL, NULL) < 0)
            w->failures++;
    }
    return NULL;
}

/* The HTTP server calls use cases from many threads at once: the app serialises the store
 * and bounds the hashes (max_hashing 2 < 4 threads, so some wait for a slot). */
static void test_concurrent_registrations(void **state)
{
    fixture *f = *state;
    users_config cfg = test_config();
    cfg.max_hashing = 2;
    users_app *app;
    assert_hd(HD_OK, users_app_new(f->store, &cfg, &app, NULL));
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){app, t, 0};
        assert_int_equal(pthread_create(&threads[t], NULL, register_many, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(workers[t].failures, 0);
    }
    users_app_free(app);
    assert_int_equal(user_rows(f), THREADS * PER_THREAD);
    assert_int_equal(outbox_rows(f, USERS_EVENT_REGISTERED), THREADS * PER_THREAD);
}

/* ---- the contract ------------------------------------------------------------------------------
 */

static void test_every_outbox_row_decodes_against_the_contract(void **state)
{
    fixture *f = *state;
    user_view v;
    assert_hd(HD_OK, reg(f, "ada@example.com", "Ada", &v, NULL));
    char token[USERS_TOKEN_LEN + 1];
    last_token(f, USERS_EVENT_REGISTERED, "verification_link", token);
    assert_hd(HD_OK, users_verify_email(f->app, CID, token, NULL, NULL));
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, CID, &e, NULL), 1);
    assert_hd(HD_OK, users_delete(f->app, CID, v.id, NULL));

    hd_registry *reg_ = users_integration_registry();
    assert_non_null(reg_);
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(f->store, "SELECT payload, type FROM hd_outbox ORDER BY seq",
                                    NULL, 0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 4);
    const char *expected[] = {USERS_EVENT_REGISTERED, USERS_EVENT_VERIFIED,
                              USERS_EVENT_RESET_REQUESTED, USERS_EVENT_DELETED};
    for (size_t r = 0; r < 4; r++) {
        const char *payload = hd_rows_text(rows, r, 0);
        hd_envelope *env = NULL;
        hd_error err;
        assert_hd_err(HD_OK, hd_envelope_decode(reg_, payload, strlen(payload), &env, &err), &err);
        assert_string_equal(hd_envelope_type(env), expected[r]);
        assert_string_equal(hd_rows_text(rows, r, 1), expected[r]);
        hd_envelope_free(env);
    }
    hd_rows_free(rows);
    hd_registry_free(reg_);
}

int main(void)
{
    const char *pg = getenv("HD_USERS_TEST_PG_URL");
    if (pg != NULL && *pg != '\0')
        pg_setup(pg);
    printf("users app tests on %s\n", pg_db_url ? "postgresql" : "sqlite::memory:");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_writes_user_and_outbox_together, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_password_is_stored_as_argon2id_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_refuses_weak_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_email_is_eexist_and_emits_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failing_handler_leaves_no_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_with_good_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_token_is_single_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_token_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_rejects_bad_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_reset_for_unknown_email_emits_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_password_reset_for_known_email, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_password_with_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_password_refuses_wrong_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_confirm_looks_up_the_token_before_hashing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_hashing_pool_waits_a_bounded_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_get_by_id_and_email, setup, teardown),
        cmocka_unit_test(test_reads_by_key_use_the_readers),
        cmocka_unit_test_setup_teardown(test_list_pagination_covers_everyone_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_through_the_read_router, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_refuses_overflowing_or_signed_cursor, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rename_updates_without_integration_event, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_version_is_ebusy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_emits_user_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_registrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_outbox_row_decodes_against_the_contract, setup,
                                        teardown),
    };
    int failed = cmocka_run_group_tests_name("users application", tests, NULL, NULL);
    if (pg_db_url != NULL)
        pg_teardown(pg);
    return failed;
}
