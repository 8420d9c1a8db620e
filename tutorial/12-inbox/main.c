/* Chapter 12 — the inbox: an idempotent consumer.
 *
 * Chapter 10 ended with a relay that published one event twice, and that is normal: the
 * outbox and the broker deliver AT LEAST once. This chapter is the other half: the
 * notifications service sends one welcome email per registration however often the
 * message arrives, because it remembers, in the same transaction as the email row, which
 * message ids it has handled.
 *
 * Messages are real CloudEvents JSON (chapter 3); the "broker" is a function call, so no
 * server is needed. Read along: docs/tutorial/12-inbox.md.
 * Run: build/dev/tutorial-12-inbox
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/store.h"

static const char *const notifications_schema[] = {
    "CREATE TABLE emails (message_id TEXT NOT NULL, consumer TEXT NOT NULL,"
    " address TEXT NOT NULL, template TEXT NOT NULL)",
};

static int64_t count(hd_store *store, const char *sql)
{
    hd_rows *rows = NULL;
    if (hd_store_query(store, sql, NULL, 0, &rows, NULL) < 0)
        return -1;
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

/* A users.user_registered message as it arrives from the broker (new string: free()). */
static char *wire_message(const char *user_id, const char *email)
{
    hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users",
                                       json_pack("{s:s, s:s}", "user_id", user_id, "email", email));
    char *text = NULL;
    if (env != NULL && hd_envelope_encode(env, &text, NULL, NULL) < 0)
        text = NULL;
    hd_envelope_free(env);
    return text;
}

/* The handler's effect: "send" the welcome email (a row, so that we can count it). */
static int send_welcome(hd_store *store, const char *consumer, const hd_envelope *env,
                        hd_error *err)
{
    const char *email = json_string_value(json_object_get(hd_envelope_data(env), "email"));
    hd_value p[] = {hd_value_text(hd_envelope_id(env)), hd_value_text(consumer),
                    hd_value_text(email), hd_value_text("welcome")};
    int rc = hd_store_exec(store,
                           "INSERT INTO emails(message_id, consumer, address, template)"
                           " VALUES ($1, $2, $3, $4)",
                           p, 4, err);
    return rc < 0 ? rc : HD_OK;
}

/* WITHOUT an inbox: decode, handle, commit. */
static int consume_naively(hd_store *store, const char *text, hd_error *err)
{
    hd_envelope *env = NULL;
    int rc = hd_envelope_decode(NULL, text, strlen(text), &env, err);
    if (rc < 0)
        return rc;
    rc = hd_store_begin(store, err);
    if (rc == HD_OK)
        rc = send_welcome(store, "mailer", env, err);
    rc = rc == HD_OK ? hd_store_commit(store, err) : (hd_store_rollback(store, NULL), rc);
    hd_envelope_free(env);
    return rc;
}

/* WITH the inbox: accept the message id and handle it in ONE transaction. Returns 1 when
 * handled, 0 when it was a duplicate (skipped), or a code (the broker would redeliver).
 * Either way the message is acked only after this returned >= 0. When fail_after_effect
 * is set, the handler fails after writing: an SMTP error, say. */
static int consume(hd_store *store, const char *consumer, const char *text, int fail_after_effect,
                   hd_error *err)
{
    hd_envelope *env = NULL;
    int rc = hd_envelope_decode(NULL, text, strlen(text), &env, err);
    if (rc < 0)
        return rc; /* malformed: no retry can fix it (dead letter, chapter 13) */
    int fresh = 0;
    rc = hd_store_begin(store, err);
    if (rc == HD_OK) {
        fresh = hd_inbox_accept(store, consumer, hd_envelope_id(env), err); /* 1 new, 0 dup */
        rc = fresh < 0 ? fresh : HD_OK;
    }
    if (rc == HD_OK && fresh == 1)
        rc = send_welcome(store, consumer, env, err); /* only for a new message */
    if (rc >= 0 && fail_after_effect)
        rc = hd_error_set(err, HD_EHANDLER, "SMTP server said 451: try again later");
    if (rc >= 0)
        rc = hd_store_commit(store, err);
    else if (hd_store_in_transaction(store))
        hd_store_rollback(store, NULL); /* the email row AND the inbox row go */
    hd_envelope_free(env);
    return rc < 0 ? rc : fresh;
}

static void print_counts(int step, const char *what, hd_store *store)
{
    printf("[%d] %s: emails=%lld inbox=%lld\n", step, what,
           (long long)count(store, "SELECT COUNT(*) FROM emails"),
           (long long)count(store, "SELECT COUNT(*) FROM hd_inbox"));
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
    if (hd_store_open("sqlite::memory:", &store, &err) < 0)
        return fail("open", &err);
    if (hd_store_migrate(store, "notifications", notifications_schema, 1, &err) < 0 ||
        hd_inbox_migrate(store, &err) < 0)
        return fail("migrate", &err);
    printf("[1] opened sqlite::memory: with tables emails and hd_inbox\n");

    char *ada = wire_message("u-ada", "ada@example.com");
    char *bob = wire_message("u-bob", "bob@example.com");
    char *cy = wire_message("u-cy", "cy@example.com");
    char *di = wire_message("u-di", "di@example.com");
    if (!ada || !bob || !cy || !di) {
        fprintf(stderr, "cannot build the messages\n");
        return 1;
    }

    /* [2] without an inbox, a redelivery repeats the effect */
    if (consume_naively(store, ada, &err) < 0 || consume_naively(store, ada, &err) < 0)
        return fail("naive consumer", &err);
    printf(
        "[2] without an inbox, ada's message delivered twice: welcome emails to ada=%lld"
        " -> DUPLICATE effect\n",
        (long long)count(store, "SELECT COUNT(*) FROM emails WHERE address = 'ada@example.com'"));
    if (hd_store_exec(store, "DELETE FROM emails", NULL, 0, &err) < 0)
        return fail("reset", &err);

    /* [3] with the inbox: the first delivery is new and handled */
    int rc = consume(store, "mailer", ada, 0, &err);
    if (rc < 0)
        return fail("consume ada", &err);
    printf("[3] delivery 1 of ada's message: %s\n", rc == 1 ? "new, handled, acked" : "?");
    /* [4] the ack was lost (the connection dropped): the broker delivers it again */
    rc = consume(store, "mailer", ada, 0, &err);
    if (rc < 0)
        return fail("consume ada again", &err);
    printf("[4] delivery 2 of ada's message: %s\n",
           rc == 0 ? "duplicate, skipped, acked" : "handled AGAIN?!");
    print_counts(4, "after two deliveries", store);

    /* [5] the handler fails after its write: both the email row and the inbox row roll back */
    rc = consume(store, "mailer", bob, 1, &err);
    printf("[5] bob's message: handler failed (%s: %s), nacked\n", hd_err_name(rc), err.text);
    if (rc != HD_EHANDLER)
        return fail("bob should have failed", &err);
    print_counts(5, "after the failure", store);
    /* [6] the redelivery is therefore new, and this time it works */
    rc = consume(store, "mailer", bob, 0, &err);
    if (rc < 0)
        return fail("consume bob", &err);
    printf("[6] bob's message redelivered: %s\n", rc == 1 ? "new, handled, acked" : "?");
    print_counts(6, "after the retry", store);

    /* [7] another consumer in the same database handles ada's message once as well */
    rc = consume(store, "audit", ada, 0, &err);
    int again = rc < 0 ? rc : consume(store, "audit", ada, 0, &err);
    if (rc < 0 || again < 0)
        return fail("audit consumer", &err);
    printf("[7] consumer audit, ada's message twice: handled=%d then %d\n", rc, again);

    /* [8] group commit: a prefetch window of 4 deliveries, one transaction, one commit */
    const char *window[] = {cy, di, cy, ada};
    hd_envelope *envs[4] = {NULL};
    const char *ids[4];
    unsigned char fresh[4];
    for (int i = 0; i < 4; i++) {
        if ((rc = hd_envelope_decode(NULL, window[i], strlen(window[i]), &envs[i], &err)) < 0)
            return fail("decode", &err);
        ids[i] = hd_envelope_id(envs[i]);
    }
    rc = hd_store_begin(store, &err);
    int handled = 0;
    if (rc == HD_OK)
        rc = hd_inbox_accept_many(store, "mailer", ids, 4, fresh, &err);
    for (int i = 0; rc >= 0 && i < 4; i++)
        if (fresh[i] && (rc = send_welcome(store, "mailer", envs[i], &err)) == HD_OK)
            handled++;
    if (rc >= 0)
        rc = hd_store_commit(store, &err);
    else if (hd_store_in_transaction(store))
        hd_store_rollback(store, NULL);
    for (int i = 0; i < 4; i++)
        hd_envelope_free(envs[i]);
    if (rc < 0)
        return fail("window", &err);
    printf("[8] window of 4 deliveries (cy, di, cy again, ada again): handled %d, skipped %d,"
           " 1 commit\n",
           handled, 4 - handled);

    /* [9] retention: forget ids older than 7 days; an id forgotten too early is new again */
    int purged = hd_inbox_purge(store, 7 * 86400000LL, &err);
    if (purged < 0)
        return fail("purge", &err);
    printf("[9] purge older than 7 days: %d row(s)\n", purged);
    hd_value old[] = {hd_value_int(hd_time_now_ms() - 8 * 86400000LL)};
    if (hd_store_exec(store, "UPDATE hd_inbox SET received_at = $1", old, 1, &err) < 0 ||
        (purged = hd_inbox_purge(store, 7 * 86400000LL, &err)) < 0)
        return fail("purge", &err);
    rc = consume(store, "mailer", ada, 0, &err);
    if (rc < 0)
        return fail("late duplicate", &err);
    printf("[9] 8 days later: purged %d row(s); a late duplicate of ada's message is %s\n", purged,
           rc == 1 ? "handled AGAIN: retention must outlast every redelivery" : "skipped");
    printf("[10] done: emails=%lld (one per message and consumer, plus step 9's late duplicate)\n",
           (long long)count(store, "SELECT COUNT(*) FROM emails"));
    free(ada);
    free(bob);
    free(cy);
    free(di);
    hd_store_close(store);
    return 0;
}
