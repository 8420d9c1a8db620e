/* Chapter 24 — handed rows: an in-process relay without the claim.
 *
 * In one process on SQLite, the relay's claim (chapter 10) reads back, leases and copies the
 * rows a writer of the same process has just committed, in a write transaction of its own.
 * So the relay OFFERS a token on the notifier it waits on (hd_outbox_notifier_offer), and a
 * writer whose store has that notifier appends each row ALREADY LEASED to the token
 * (claimed_by = token, claimed_until = now + lease) whenever the row's aggregate has no
 * earlier row pending; otherwise the row is appended as always and waits for a claim, held
 * back behind its aggregate's pending row. The relay reads its handed rows back with ONE
 * READ (hd_outbox_take_handed), from the last seq it took.
 *
 * Steps: an outbox in a SQLite file in a private temporary directory, a writer's handle with
 * a notifier and a relay's handle; the relay offers a token; one transaction appends three
 * events of two orders (two are handed, one is not); the claim takes nothing, the take takes
 * the two handed rows; once they are dispatched a claim takes the third, in order; a relay
 * that dies before it takes its row (the lease runs out: nothing lost) and one that stops
 * cleanly (it gives the row back); the directory removed. No server needed.
 * Read along: docs/tutorial/24-handed-rows.md.
 * Run: build/dev/tutorial-24-handed-rows
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"
#include "herald/store.h"

#include "tutorial.h"

#define TOKEN      "chapter-24/handed-1" /* the relay's offer: its id, then a number of its own */
#define TOKEN_STOP "chapter-24/handed-2" /* the offer of the relay that stops cleanly (step 5) */
#define RELAY_ID   "chapter-24"          /* what the relay's claims record in claimed_by */
#define LEASE_MS   30000                 /* the lease of handed and claimed rows alike */
#define BATCH      100

/* One event for the outbox: which order, and what happened to it. */
typedef struct event {
    const char *order_id;
    const char *type;
} event;

/* The writer: the events in ONE transaction (the business change is left out, as in chapter
 * 11), then the signal that wakes the relay once the rows can be seen. */
static int append_events(hd_store *writer, const event *events, size_t n, hd_error *err)
{
    int rc = hd_store_begin(writer, err);
    for (size_t i = 0; i < n && rc >= 0; i++) {
        hd_envelope *env = hd_envelope_new(events[i].type, 1, "/shop",
                                           json_pack("{s:s}", "order_id", events[i].order_id));
        if (env == NULL)
            rc = hd_error_set(err, HD_ENOMEM, "cannot build the event");
        else
            rc = hd_outbox_append(writer, env, "order", events[i].order_id, err);
        hd_envelope_free(env);
    }
    if (rc >= 0)
        rc = hd_store_commit(writer, err);
    else if (hd_store_in_transaction(writer))
        hd_store_rollback(writer, NULL);
    if (rc >= 0)
        hd_outbox_signal(writer); /* hd_outbox_append_uow does it when its unit ends */
    return rc < 0 ? rc : 0;
}

/* The outbox's pending rows after seq `after`, as anyone can read them: who holds each one
 * (only handed rows are leased when the chapter looks). */
static int show_rows(hd_store *s, int64_t after, hd_error *err)
{
    hd_value p[] = {hd_value_int(after)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(s,
                            "SELECT seq, aggregate_id, type, claimed_by FROM hd_outbox"
                            " WHERE seq > $1 AND dispatched_at IS NULL ORDER BY seq",
                            p, 1, &rows, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < hd_rows_count(rows); i++) {
        int handed = !hd_rows_is_null(rows, i, 3);
        printf("    seq=%lld %s %s claimed_by=%s: %s\n", (long long)hd_rows_int(rows, i, 0),
               hd_rows_text(rows, i, 1), hd_rows_text(rows, i, 2),
               handed ? hd_rows_text(rows, i, 3) : "-",
               handed ? "handed, leased to the relay" : "NOT handed, waits for a claim");
    }
    hd_rows_free(rows);
    return 0;
}

static void show_batch(const hd_outbox_batch *b)
{
    for (size_t i = 0; i < b->count; i++)
        printf("    seq=%lld %s %s\n", (long long)b->messages[i].seq, b->messages[i].aggregate_id,
               b->messages[i].type);
}

/* Publishing is left out (chapter 11): the broker "confirmed" every row of b. */
static int mark_all(hd_store *relay, const hd_outbox_batch *b, hd_error *err)
{
    int64_t seqs[BATCH];
    for (size_t i = 0; i < b->count; i++)
        seqs[i] = b->messages[i].seq;
    return hd_outbox_mark_dispatched(relay, seqs, b->count, err);
}

/* A claim by the relay at now_ms (0: the wall clock), into *b (freed first). */
static int claim(hd_store *relay, int64_t now_ms, hd_outbox_batch **b, hd_error *err)
{
    hd_outbox_claim_opts opts = {.relay_id = RELAY_ID, .lease_ms = LEASE_MS, .now_ms = now_ms};
    hd_outbox_batch_free(*b);
    *b = NULL;
    return hd_outbox_claim(relay, BATCH, &opts, b, err);
}

/* The relay's take of the rows handed under TOKEN after seq `after`, at now_ms (0: the wall
 * clock), into *b (freed first): one read, no write. */
static int take(hd_store *relay, int64_t after, int64_t now_ms, hd_outbox_batch **b, hd_error *err)
{
    hd_outbox_batch_free(*b);
    *b = NULL;
    return hd_outbox_take_handed(relay, TOKEN, after, BATCH, LEASE_MS, now_ms, b, err);
}

/* What the writer's connection says of other connections' commits: it changes when one
 * committed since the last look (SQLite's PRAGMA data_version). */
static int data_version(hd_store *s, int64_t *v, hd_error *err)
{
    hd_rows *rows = NULL;
    int rc = hd_store_query(s, "PRAGMA data_version", NULL, 0, &rows, err);
    if (rc >= 0)
        *v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return rc < 0 ? rc : 0;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[400], url[500];
    snprintf(dir, sizeof dir, "%s/herald-t24-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(url, sizeof url, "sqlite://%s/outbox.db", dir);

    hd_error err;
    hd_error_clear(&err);
    hd_store *writer = NULL, *relay = NULL;
    hd_outbox_notifier *n = NULL;
    hd_outbox_batch *b = NULL;
    int64_t cursor = 0, v0 = 0, v1 = 0, pending = -1;
    uint64_t seen = 0;

    /* [1] the outbox, the writer's handle with the notifier, the relay's own handle; the
     * relay reads the last seq (every row handed under its token comes after it) and offers. */
    int rc = hd_store_open(url, &writer, &err);
    if (rc >= 0)
        rc = hd_outbox_migrate(writer, &err);
    if (rc >= 0)
        rc = hd_store_open(url, &relay, &err);
    if (rc >= 0 && (n = hd_outbox_notifier_new()) == NULL)
        rc = hd_error_set(&err, HD_ENOMEM, "cannot create the notifier");
    if (rc < 0)
        goto out;
    hd_outbox_set_notifier(writer, n);
    if ((rc = hd_outbox_last_seq(relay, &cursor, &err)) < 0)
        goto out;
    if ((rc = hd_outbox_notifier_offer(n, TOKEN, LEASE_MS)) < 0) {
        hd_error_set(&err, rc, "cannot offer %s", TOKEN);
        goto out;
    }
    printf("[1] outbox.db in %s: the writer's handle has a notifier, the relay a handle of its "
           "own; last seq %lld; the relay offers token %s, lease %d ms\n",
           dir, (long long)cursor, TOKEN, LEASE_MS);

    /* [2] one transaction, three events: each order's first one is handed, order-1's second
     * one is not (order-1 has a row pending: its first). */
    const event first[] = {{"order-1", "shop.order_placed"},
                           {"order-2", "shop.order_placed"},
                           {"order-1", "shop.order_paid"}};
    if ((rc = append_events(writer, first, 3, &err)) < 0)
        goto out;
    rc = hd_outbox_notifier_wait(n, &seen, 0);
    if (rc < 0) {
        hd_error_set(&err, rc, "hd_outbox_notifier_wait");
        goto out;
    }
    printf("[2] one transaction appended order-1 placed, order-2 placed, order-1 paid; the "
           "relay's notifier %s:\n",
           rc == 1 ? "was signalled" : "was NOT signalled");
    if ((rc = show_rows(relay, cursor, &err)) < 0)
        goto out;

    /* [3] the relay: a claim finds nothing it may take; the take finds the handed rows. */
    int due = hd_outbox_has_due(relay, 0, &err);
    if ((rc = due) < 0 || (rc = claim(relay, 0, &b, &err)) < 0)
        goto out;
    printf("[3] has_due says %d (seq 3 is not leased); the claim took %d rows: seq 3 is held "
           "back behind order-1's handed seq 1, order-2 has nothing else\n",
           due, rc);
    if ((rc = data_version(writer, &v0, &err)) < 0)
        goto out;
    if ((rc = take(relay, cursor, 0, &b, &err)) < 0 || (rc = data_version(writer, &v1, &err)) < 0)
        goto out;
    printf("[3] hd_outbox_take_handed after seq %lld: %zu rows in seq order, one read; the "
           "writer saw %s:\n",
           (long long)cursor, b->count,
           v1 == v0 ? "no commit of the relay's" : "a commit of the relay's (NOT one read)");
    show_batch(b);

    /* [4] published and confirmed (left out): marked. Now order-1's second event is due. */
    if (b->count > 0)
        cursor = b->messages[b->count - 1].seq; /* the next take starts after it */
    if ((rc = mark_all(relay, b, &err)) < 0)
        goto out;
    printf("[4] marked %d rows dispatched; the relay's cursor is now seq %lld\n", rc,
           (long long)cursor);
    if ((rc = data_version(writer, &v0, &err)) < 0 || (rc = claim(relay, 0, &b, &err)) < 0)
        goto out;
    int took = rc;
    if ((rc = data_version(writer, &v1, &err)) < 0)
        goto out;
    printf("[4] now a claim takes %d row, after its aggregate's seq 1: order-1's order kept; the "
           "writer saw %s\n",
           took, v1 != v0 ? "a commit of the relay's (a claim is a write)" : "NO commit");
    show_batch(b);
    if ((rc = mark_all(relay, b, &err)) < 0)
        goto out;

    /* [5] a relay that dies: its row handed, never taken. The lease holds it, then lets go. */
    const event third = {"order-3", "shop.order_placed"};
    if ((rc = append_events(writer, &third, 1, &err)) < 0)
        goto out;
    printf("[5] order-3 placed:\n");
    if ((rc = show_rows(relay, cursor, &err)) < 0)
        goto out;
    int64_t now = hd_time_now_ms();
    if ((rc = take(relay, cursor, now + LEASE_MS / 2 + 1, &b, &err)) < 0)
        goto out;
    printf("[5] a take %.3f s later would find %d rows: half the lease or less left, the row is "
           "left to run out\n",
           (LEASE_MS / 2 + 1) / 1000.0, rc);
    /* The relay dies here. Its offer lived in the process's memory and would die with it:
     * withdrawing it plays that part. What is left is the row's lease. */
    if ((rc = hd_outbox_notifier_offer(n, NULL, 0)) < 0) {
        hd_error_set(&err, rc, "cannot withdraw the offer");
        goto out;
    }
    if ((rc = due = hd_outbox_has_due(relay, 0, &err)) < 0 || (rc = claim(relay, 0, &b, &err)) < 0)
        goto out;
    printf("[5] the relay dies before it takes seq 4; restarted, it finds has_due %d and its "
           "claim takes %d rows: seq 4 is leased to the dead relay's token\n",
           due, rc);
    if ((rc = claim(relay, now + LEASE_MS + 1, &b, &err)) < 0)
        goto out;
    printf("[5] %.3f s later the claim takes %d row: delayed by the lease, not lost\n",
           (LEASE_MS + 1) / 1000.0, rc);
    show_batch(b);
    if ((rc = mark_all(relay, b, &err)) < 0)
        goto out;

    /* [5] a relay that stops cleanly gives back what was handed and not taken. */
    if ((rc = hd_outbox_last_seq(relay, &cursor, &err)) < 0)
        goto out;
    if ((rc = hd_outbox_notifier_offer(n, TOKEN_STOP, LEASE_MS)) < 0) {
        hd_error_set(&err, rc, "cannot offer %s", TOKEN_STOP);
        goto out;
    }
    const event fourth = {"order-4", "shop.order_placed"};
    if ((rc = append_events(writer, &fourth, 1, &err)) < 0)
        goto out;
    printf("[5] a relay offers %s from seq %lld; order-4 placed:\n", TOKEN_STOP, (long long)cursor);
    if ((rc = show_rows(relay, cursor, &err)) < 0)
        goto out;
    if ((rc = hd_outbox_notifier_offer(n, NULL, 0)) < 0) {
        hd_error_set(&err, rc, "cannot withdraw the offer");
        goto out;
    }
    if ((rc = hd_outbox_release_handed(relay, TOKEN_STOP, &err)) < 0)
        goto out;
    printf("[5] it stops cleanly: offer withdrawn, hd_outbox_release_handed gave %d row back\n",
           rc);
    if ((rc = claim(relay, 0, &b, &err)) < 0)
        goto out;
    printf("[5] the next claim takes %d row at once:\n", rc);
    show_batch(b);
    if ((rc = mark_all(relay, b, &err)) < 0 ||
        (rc = hd_outbox_depth(relay, &pending, NULL, NULL, &err)) < 0)
        goto out;
    printf("[5] outbox pending=%lld: every event dispatched, each order's in order\n",
           (long long)pending);
    rc = 0;
out:
    hd_outbox_batch_free(b);
    hd_outbox_set_notifier(writer, NULL);
    hd_outbox_notifier_free(n);
    hd_store_close(relay);
    hd_store_close(writer);
    tutorial_remove_dir(dir);
    if (rc < 0) {
        fprintf(stderr, "chapter 24 failed: %s (%s)\n", err.text, hd_err_name(rc));
        return 1;
    }
    printf("[6] removed %s; read docs/modules/outbox.md#handed-rows-the-in-process-relay-without-"
           "the-claim\n",
           dir);
    return 0;
}
