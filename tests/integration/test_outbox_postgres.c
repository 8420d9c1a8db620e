/* The outbox on a real PostgreSQL server (HD_PG_URL; fails, never skips, without it): the
 * conformance cases shared with SQLite, then what needs several connections: relays
 * claiming concurrently with FOR UPDATE SKIP LOCKED never get the same row, a claim does
 * not wait behind another's locks, and the NOTIFY trigger wakes a relay at commit only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/clock.h"
#include "herald/outbox.h"
#include "herald/store_pg.h"

static hd_conf_pg pg;
static hd_conf_target target;

static void server_is_configured(void **state)
{
    (void)state;
    hd_conf_pg_init(&pg, hd_test_require_env("HD_PG_URL"));
    target = hd_conf_pg_target(&pg);
}

/* Append `rows` events spread over `aggregates` aggregates, in transactions of 100. */
static void fill(hd_store *s, int rows, int aggregates)
{
    hd_error err;
    hd_error_clear(&err);
    for (int i = 0; i < rows; i++) {
        if (i % 100 == 0)
            assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
        char agg[32];
        snprintf(agg, sizeof agg, "agg-%d", i % aggregates);
        hd_envelope *env =
            hd_envelope_new("things.thing_changed", 1, "/things", json_pack("{s:i}", "n", i));
        assert_non_null(env);
        assert_hd_err(HD_OK, hd_outbox_append(s, env, "thing", agg, &err), &err);
        hd_envelope_free(env);
        if (i % 100 == 99 || i == rows - 1)
            assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    }
}

typedef struct relay_arg {
    const char *url;
    const char *id;
    int64_t *got; /* seqs this relay dispatched, in the order it claimed them */
    size_t ngot;
    int batches;
    int rc;
    char why[HD_ERROR_TEXT_MAX];
} relay_arg;

/* A relay: claim, "publish", mark, until the outbox is drained. A claim that finds nothing
 * while rows are still pending (leased by the other relay) looks again shortly. */
static void *relay(void *p)
{
    relay_arg *a = p;
    hd_store *s = NULL;
    hd_error err;
    hd_error_clear(&err);
    a->rc = hd_store_open(a->url, &s, &err);
    hd_outbox_claim_opts opts = {a->id, 10000, 0};
    while (a->rc >= 0) {
        hd_outbox_batch *b = NULL;
        int n = hd_outbox_claim(s, 50, &opts, &b, &err);
        if (n < 0) {
            a->rc = n;
            break;
        }
        int64_t seqs[50];
        for (int i = 0; i < n; i++)
            seqs[i] = a->got[a->ngot++] = b->messages[i].seq;
        hd_outbox_batch_free(b);
        if (n > 0) {
            a->batches++;
            a->rc = hd_outbox_mark_dispatched(s, seqs, (size_t)n, &err);
            continue;
        }
        int64_t pending = 0;
        a->rc = hd_outbox_depth(s, &pending, NULL, NULL, &err);
        if (a->rc < 0 || pending == 0)
            break;
        hd_sleep_ms(1);
    }
    if (a->rc < 0)
        snprintf(a->why, sizeof a->why, "%s", err.text);
    hd_store_close(s);
    return NULL;
}

static void concurrent_relays_never_claim_the_same_row(void **state)
{
    (void)state;
    enum { ROWS = 3000, RELAYS = 3 };
    char *url = target.fresh(target.ctx);
    hd_store *s = hd_conf_open(url);
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    fill(s, ROWS, 500);
    relay_arg args[RELAYS];
    pthread_t th[RELAYS];
    const char *ids[RELAYS] = {"relay-a", "relay-b", "relay-c"};
    int64_t t0 = hd_clock_ms();
    for (int i = 0; i < RELAYS; i++) {
        args[i] = (relay_arg){url, ids[i], calloc(ROWS, sizeof(int64_t)), 0, 0, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, relay, &args[i]), 0);
    }
    for (int i = 0; i < RELAYS; i++)
        pthread_join(th[i], NULL);
    int64_t ms = hd_clock_ms() - t0;
    unsigned char *seen = calloc(ROWS + 1, 1);
    size_t total = 0;
    for (int i = 0; i < RELAYS; i++) {
        if (args[i].rc < 0)
            print_error("%s: %s\n", args[i].id, args[i].why);
        assert_hd(HD_OK, args[i].rc < 0 ? args[i].rc : 0);
        assert_true(args[i].ngot > 0); /* everybody got work: they really ran side by side */
        for (size_t k = 0; k < args[i].ngot; k++) {
            int64_t seq = args[i].got[k];
            assert_true(seq >= 1 && seq <= ROWS);
            if (seen[seq])
                print_error("seq %lld claimed twice\n", (long long)seq);
            assert_false(seen[seq]);
            seen[seq] = 1;
        }
        total += args[i].ngot;
        print_message("%s dispatched %zu rows in %d batches\n", args[i].id, args[i].ngot,
                      args[i].batches);
        free(args[i].got);
    }
    assert_int_equal(total, ROWS);
    print_message("%d rows through %d relays in %lld ms\n", ROWS, RELAYS, (long long)ms);
    int64_t pending = -1;
    assert_hd(HD_OK, hd_outbox_depth(s, &pending, NULL, NULL, NULL));
    assert_int_equal(pending, 0);
    free(seen);
    hd_store_close(s);
    free(url);
}

static void a_claim_skips_rows_locked_by_another_transaction(void **state)
{
    (void)state;
    char *url = target.fresh(target.ctx);
    hd_store *a = hd_conf_open(url), *b = hd_conf_open(url);
    assert_int_equal(hd_outbox_migrate(a, NULL), 4);
    fill(a, 3, 3);
    /* Another transaction holds a row lock on seq 1 (a claim in flight)... */
    assert_hd(HD_OK, hd_store_begin(a, NULL));
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(a, "SELECT seq FROM hd_outbox WHERE seq = 1 FOR UPDATE", NULL,
                                    0, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    hd_rows_free(rows);
    /* ...a second claim neither waits for it nor takes it. */
    int64_t t0 = hd_clock_ms();
    hd_outbox_batch *batch = NULL;
    hd_error err;
    assert_int_equal(hd_outbox_claim(b, 10, NULL, &batch, &err), 2);
    assert_true(hd_clock_ms() - t0 < 1000);
    assert_int_equal(batch->messages[0].seq, 2);
    assert_int_equal(batch->messages[1].seq, 3);
    hd_outbox_batch_free(batch);
    assert_hd(HD_OK, hd_store_rollback(a, NULL));
    assert_int_equal(hd_outbox_claim(b, 10, NULL, &batch, &err), 1);
    assert_int_equal(batch->messages[0].seq, 1);
    hd_outbox_batch_free(batch);
    hd_store_close(a);
    hd_store_close(b);
    free(url);
}

static void the_outbox_trigger_notifies_at_commit_only(void **state)
{
    (void)state;
    char *url = target.fresh(target.ctx);
    hd_store *writer = hd_conf_open(url), *relay_store = hd_conf_open(url);
    assert_int_equal(hd_outbox_migrate(writer, NULL), 4);
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_OK, hd_store_pg_listen(relay_store, HD_OUTBOX_CHANNEL, &err), &err);
    char channel[HD_STORE_PG_CHANNEL_MAX + 1];

    hd_envelope *env = hd_envelope_new("things.thing_created", 1, "/things", NULL);
    assert_non_null(env);
    assert_hd(HD_OK, hd_store_begin(writer, NULL));
    assert_hd(HD_OK, hd_outbox_append(writer, env, "thing", "t1", NULL));
    assert_int_equal(hd_store_pg_wait(relay_store, 100, channel, &err), 0); /* not yet */
    assert_hd(HD_OK, hd_store_rollback(writer, NULL));
    assert_int_equal(hd_store_pg_wait(relay_store, 200, channel, &err), 0); /* never */

    int64_t t0 = hd_clock_ms();
    assert_hd(HD_OK, hd_store_begin(writer, NULL));
    assert_hd(HD_OK, hd_outbox_append(writer, env, "thing", "t1", NULL));
    assert_hd(HD_OK, hd_store_commit(writer, NULL));
    assert_true(hd_store_pg_wait(relay_store, 5000, channel, &err) >= 1);
    assert_string_equal(channel, HD_OUTBOX_CHANNEL);
    print_message("woken %lld ms after the commit began\n", (long long)(hd_clock_ms() - t0));
    /* Woken, the relay finds the row. */
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(relay_store, 10, NULL, &b, &err), 1);
    hd_outbox_batch_free(b);
    hd_envelope_free(env);
    hd_store_close(writer);
    hd_store_close(relay_store);
    free(url);
}

int main(void)
{
    const struct CMUnitTest setup[] = {cmocka_unit_test(server_is_configured)};
    int failed = cmocka_run_group_tests_name("postgresql server", setup, NULL, NULL);
    if (failed)
        return failed;
    failed += hd_conf_run_outbox(&target);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_relays_never_claim_the_same_row),
        cmocka_unit_test(a_claim_skips_rows_locked_by_another_transaction),
        cmocka_unit_test(the_outbox_trigger_notifies_at_commit_only),
    };
    failed +=
        cmocka_run_group_tests_name("outbox on postgresql: several connections", tests, NULL, NULL);
    hd_conf_pg_release(&pg);
    return failed;
}
