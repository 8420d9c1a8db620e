/* Chapter 10 — the transactional outbox.
 *
 * Registering a user writes a row to the users table AND tells other services, through
 * the broker, that a user registered. Two writes to two systems: no transaction covers
 * both. Steps 2 and 3 show the two ways that goes wrong (a lost event, a ghost event);
 * steps 4 to 8 show the outbox: the event becomes a row in the same transaction as the
 * user, and a relay publishes rows afterwards, at least once.
 *
 * The "broker" here is a list in memory, so the chapter needs no server; chapter 11 puts a
 * real relay in front of RabbitMQ. Read along: docs/tutorial/10-transactional-outbox.md.
 * Run: build/dev/tutorial-10-transactional-outbox
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"
#include "herald/store.h"

static const char *const users_schema[] = {
    "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
};

/* ---- a pretend broker: it remembers what was published -------------------------------- */

#define BROKER_MAX 16
static char broker[BROKER_MAX][96];
static int broker_count;

static void broker_publish(const char *type, const char *user_id)
{
    if (broker_count < BROKER_MAX)
        snprintf(broker[broker_count++], sizeof broker[0], "%s %s", type, user_id);
}

/* How many published messages mention user_id. */
static int broker_mentions(const char *user_id)
{
    int n = 0;
    for (int i = 0; i < broker_count; i++)
        if (strstr(broker[i], user_id) != NULL)
            n++;
    return n;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int64_t count(hd_store *store, const char *sql)
{
    hd_rows *rows = NULL;
    if (hd_store_query(store, sql, NULL, 0, &rows, NULL) < 0)
        return -1;
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

static hd_envelope *user_registered(const char *user_id, const char *email)
{
    return hd_envelope_new("users.user_registered", 1, "/users",
                           json_pack("{s:s, s:s}", "user_id", user_id, "email", email));
}

static int insert_user(hd_store *store, const char *id, const char *email, hd_error *err)
{
    hd_value p[] = {hd_value_text(id), hd_value_text(email)};
    int rc = hd_store_exec(store, "INSERT INTO users(id, email) VALUES ($1, $2)", p, 2, err);
    return rc < 0 ? rc : HD_OK;
}

/* ---- the use case, with the outbox ------------------------------------------------------- */

/* Register a user: the user row and the event row in ONE transaction. */
static int register_user(hd_store *store, const char *id, const char *email, hd_error *err)
{
    hd_envelope *env = user_registered(id, email);
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, "cannot build the event");
    int rc = hd_store_begin(store, err);
    if (rc == HD_OK)
        rc = insert_user(store, id, email, err);
    if (rc == HD_OK)
        rc = hd_outbox_append(store, env, "user", id, err);
    if (rc == HD_OK)
        rc = hd_store_commit(store, err); /* both rows, or (on failure) neither */
    else if (hd_store_in_transaction(store))
        hd_store_rollback(store, NULL);
    hd_envelope_free(env);
    return rc;
}

/* One pass of a relay: claim due rows, publish each, mark them dispatched. With
 * crash_before_mark, it "dies" after publishing: the rows stay claimed, not dispatched. */
static int relay_once(hd_store *store, int64_t now_ms, int crash_before_mark, hd_error *err)
{
    hd_outbox_claim_opts opts = {"tutorial-relay", 30000, now_ms};
    hd_outbox_batch *batch = NULL;
    int n = hd_outbox_claim(store, 10, &opts, &batch, err);
    if (n < 0)
        return n;
    int64_t seqs[10];
    for (size_t i = 0; i < batch->count; i++) {
        const hd_outbox_message *m = &batch->messages[i];
        broker_publish(m->type, m->aggregate_id);
        printf("    relay: published seq %lld %s for %s/%s\n", (long long)m->seq, m->type,
               m->aggregate_type, m->aggregate_id);
        seqs[i] = m->seq;
    }
    int rc = HD_OK;
    if (crash_before_mark)
        printf("    relay: crashed before marking %d row(s)\n", n);
    else if ((rc = hd_outbox_mark_dispatched(store, seqs, batch->count, err)) >= 0)
        printf("    relay: marked %d row(s) dispatched\n", rc);
    hd_outbox_batch_free(batch);
    return rc < 0 ? rc : n;
}

static int fail(const char *step, const hd_error *err)
{
    fprintf(stderr, "%s failed: %s (%s)\n", step, err->text, hd_err_name(err->code));
    return 1;
}

int main(void)
{
    hd_error err;
    hd_error_clear(&err);
    hd_store *store = NULL;

    /* [1] a private database with the users table and the outbox table */
    if (hd_store_open("sqlite::memory:", &store, &err) < 0)
        return fail("open", &err);
    if (hd_store_migrate(store, "users", users_schema, 1, &err) < 0 ||
        hd_outbox_migrate(store, &err) < 0) {
        hd_store_close(store);
        return fail("migrate", &err);
    }
    printf("[1] opened sqlite::memory: with tables users and hd_outbox\n");

    /* [2] WITHOUT the outbox, save then publish: a crash in between loses the event. */
    if (insert_user(store, "u-ada", "ada@example.com", &err) < 0)
        return fail("save ada", &err);
    /* ... the process dies here, before broker_publish("users.user_registered", ...) ... */
    printf("[2] save, then crash before publishing: users with ada=%lld, messages about ada=%d"
           " -> event LOST\n",
           (long long)count(store, "SELECT COUNT(*) FROM users WHERE id = 'u-ada'"),
           broker_mentions("u-ada"));

    /* [3] WITHOUT the outbox, publish then save: the save fails, the event is out. */
    broker_publish("users.user_registered", "u-bob");
    int rc = insert_user(store, "u-bob", "ada@example.com", &err); /* email already taken */
    printf("[3] publish, then the save fails (%s): users with bob=%lld, messages about bob=%d"
           " -> GHOST event\n",
           hd_err_name(rc),
           (long long)count(store, "SELECT COUNT(*) FROM users WHERE id = 'u-bob'"),
           broker_mentions("u-bob"));
    if (rc != HD_EEXIST)
        return fail("saving bob should have failed", &err);

    /* [4] WITH the outbox: the user row and the event row commit together. */
    if (register_user(store, "u-carol", "carol@example.com", &err) < 0)
        return fail("register carol", &err);
    printf("[4] registered carol in one transaction: users=%lld outbox=%lld\n",
           (long long)count(store, "SELECT COUNT(*) FROM users"),
           (long long)count(store, "SELECT COUNT(*) FROM hd_outbox"));

    /* [5] a failure inside the transaction takes both rows with it */
    rc = register_user(store, "u-dave", "carol@example.com", &err); /* duplicate email */
    printf("[5] registering dave failed (%s): users=%lld outbox=%lld -> neither row\n",
           hd_err_name(rc), (long long)count(store, "SELECT COUNT(*) FROM users"),
           (long long)count(store, "SELECT COUNT(*) FROM hd_outbox"));
    if (rc != HD_EEXIST)
        return fail("register dave should have failed", &err);

    /* [6] what the outbox holds: the event as it will go on the wire */
    hd_rows *rows = NULL;
    if (hd_store_query(store,
                       "SELECT seq, type, aggregate_type, aggregate_id, event_id, payload,"
                       " dispatched_at FROM hd_outbox ORDER BY seq",
                       NULL, 0, &rows, &err) < 0)
        return fail("read the outbox", &err);
    printf("[6] outbox rows: %zu\n", hd_rows_count(rows));
    for (size_t i = 0; i < hd_rows_count(rows); i++) {
        printf("    seq=%s type=%s aggregate=%s/%s id=%s dispatched=%s\n", hd_rows_text(rows, i, 0),
               hd_rows_text(rows, i, 1), hd_rows_text(rows, i, 2), hd_rows_text(rows, i, 3),
               hd_rows_text(rows, i, 4), hd_rows_is_null(rows, i, 6) ? "no" : "yes");
        printf("    payload=%.60s...\n", hd_rows_text(rows, i, 5));
    }
    hd_rows_free(rows);

    /* [7] the relay: claim, publish, mark */
    printf("[7] relay pass\n");
    if ((rc = relay_once(store, 0, 0, &err)) < 0)
        return fail("relay", &err);
    int64_t pending = 0, age = 0, parked = 0;
    if (hd_outbox_depth(store, &pending, &age, &parked, &err) < 0)
        return fail("depth", &err);
    printf("[7] messages about carol=%d; outbox pending=%lld parked=%lld\n",
           broker_mentions("u-carol"), (long long)pending, (long long)parked);

    /* [8] the relay dies between publishing and marking: at least once, not exactly once */
    if (register_user(store, "u-erin", "erin@example.com", &err) < 0)
        return fail("register erin", &err);
    printf("[8] registered erin; relay pass that crashes\n");
    if ((rc = relay_once(store, 0, 1, &err)) < 0)
        return fail("relay", &err);
    /* Its lease (30 s) runs out; we move the clock instead of waiting. */
    printf("[8] 31 s later, another relay pass\n");
    if ((rc = relay_once(store, hd_time_now_ms() + 31000, 0, &err)) < 0)
        return fail("relay", &err);
    printf("[8] messages about erin=%d -> published twice: consumers must deduplicate"
           " (chapter 12)\n",
           broker_mentions("u-erin"));
    if (hd_outbox_depth(store, &pending, &age, &parked, &err) < 0)
        return fail("depth", &err);
    printf("[9] done: users=%lld, outbox pending=%lld, broker messages=%d\n",
           (long long)count(store, "SELECT COUNT(*) FROM users"), (long long)pending, broker_count);
    hd_store_close(store);
    return 0;
}
