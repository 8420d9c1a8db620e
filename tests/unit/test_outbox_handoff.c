/* Handed rows (outbox.h, "handed rows"): a relay offers a token on a notifier, and the
 * writers of the notifier's stores append their rows already leased to it, unless the
 * aggregate has a row still pending; the relay takes them back with one read. SQLite in
 * memory; the relay's side against RabbitMQ is in tests/integration/test_relay.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"

#define TOKEN "relay-1/handed-0123456789abcdef"
#define LEASE 1000

/* One event of aggregate "item"/agg, committed alone; its seq. */
static int64_t append_one(hd_store *s, const char *agg)
{
    hd_envelope *env = hd_envelope_new("items.item_added", 1, "/test", NULL);
    assert_non_null(env);
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd(HD_OK, hd_outbox_append(s, env, "item", agg, NULL));
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    hd_envelope_free(env);
    int64_t seq = 0;
    assert_hd(0, hd_outbox_last_seq(s, &seq, NULL));
    return seq;
}

/* The row's claimed_by (into by, "" for NULL) and claimed_until. */
static int64_t lease_of(hd_store *s, int64_t seq, char *by, size_t cap)
{
    hd_value p[] = {hd_value_int(seq)};
    hd_rows *rows = NULL;
    assert_hd(HD_OK,
              hd_store_query(s, "SELECT claimed_by, claimed_until FROM hd_outbox WHERE seq = $1", p,
                             1, &rows, NULL));
    assert_int_equal(hd_rows_count(rows), 1);
    snprintf(by, cap, "%s", hd_rows_is_null(rows, 0, 0) ? "" : hd_rows_text(rows, 0, 0));
    int64_t until = hd_rows_int(rows, 0, 1);
    hd_rows_free(rows);
    return until;
}

static hd_store *open_with(hd_outbox_notifier **n)
{
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    *n = hd_outbox_notifier_new();
    assert_non_null(*n);
    hd_outbox_set_notifier(s, *n);
    return s;
}

static void close_with(hd_store *s, hd_outbox_notifier *n)
{
    hd_outbox_set_notifier(s, NULL);
    hd_outbox_notifier_free(n);
    hd_store_close(s);
}

/* While a token is offered, a new aggregate's row is appended leased to it: no claim and no
 * look at due rows sees it, the take returns it once, and after the offer is withdrawn rows
 * are appended for claims again. */
static void an_offered_token_gets_the_rows_appended_after_it(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    char by[HD_OUTBOX_TOKEN_MAX + 1];
    int64_t before = 0;
    assert_hd(0, hd_outbox_last_seq(s, &before, NULL));
    assert_int_equal(before, 0);

    assert_hd(0, hd_outbox_notifier_offer(n, TOKEN, LEASE));
    int64_t t0 = hd_time_now_ms();
    int64_t seq = append_one(s, "a");
    int64_t until = lease_of(s, seq, by, sizeof by);
    assert_string_equal(by, TOKEN);
    assert_true(until >= t0 + LEASE && until <= hd_time_now_ms() + LEASE);
    assert_int_equal(hd_outbox_has_due(s, 0, NULL), 0);
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 0);
    hd_outbox_batch_free(b);

    assert_int_equal(hd_outbox_take_handed(s, TOKEN, before, 10, LEASE, 0, &b, NULL), 1);
    assert_int_equal(b->messages[0].seq, seq);
    assert_string_equal(b->messages[0].aggregate_id, "a");
    assert_string_equal(b->messages[0].type, "items.item_added");
    assert_true(b->messages[0].payload_len > 0);
    assert_int_equal(b->lease_until_ms, until);
    hd_outbox_batch_free(b);
    /* After it: nothing; under another token: nothing. */
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, seq, 10, LEASE, 0, &b, NULL), 0);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_take_handed(s, "other", before, 10, LEASE, 0, &b, NULL), 0);
    hd_outbox_batch_free(b);

    assert_hd(0, hd_outbox_notifier_offer(n, NULL, 0)); /* withdrawn */
    int64_t seq2 = append_one(s, "b");
    assert_int_equal(lease_of(s, seq2, by, sizeof by), 0);
    assert_string_equal(by, "");
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, seq, 10, LEASE, 0, &b, NULL), 0);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 1);
    assert_int_equal(b->messages[0].seq, seq2);
    hd_outbox_batch_free(b);
    close_with(s, n);
}

/* Per-aggregate order: a row is handed only when its aggregate has no row still pending;
 * a later row waits for a claim, held back by the handed row's lease like a claimed one's.
 * A parked row does not count (claims ignore it too), a dispatched one neither. */
static void a_row_behind_a_pending_row_of_its_aggregate_waits_for_a_claim(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    char by[HD_OUTBOX_TOKEN_MAX + 1];
    int64_t x1 = append_one(s, "x"); /* before the offer: pending, not handed */
    assert_hd(0, hd_outbox_notifier_offer(n, TOKEN, LEASE));
    int64_t x2 = append_one(s, "x");
    int64_t y1 = append_one(s, "y");
    int64_t y2 = append_one(s, "y"); /* y1 is pending (handed) */
    lease_of(s, x2, by, sizeof by);
    assert_string_equal(by, "");
    lease_of(s, y1, by, sizeof by);
    assert_string_equal(by, TOKEN);
    lease_of(s, y2, by, sizeof by);
    assert_string_equal(by, "");

    /* The claim takes x1 and x2 (in order) but not y2: y1 is leased. */
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 2);
    assert_int_equal(b->messages[0].seq, x1);
    assert_int_equal(b->messages[1].seq, x2);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, 0, 10, LEASE, 0, &b, NULL), 1);
    assert_int_equal(b->messages[0].seq, y1);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(s, &y1, 1, NULL), 1);
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 1); /* now y2 */
    assert_int_equal(b->messages[0].seq, y2);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(s, &y2, 1, NULL), 1);

    /* y has only dispatched rows: handed. x2 parked, x1 pending (claimed): not handed. */
    int64_t y3 = append_one(s, "y");
    lease_of(s, y3, by, sizeof by);
    assert_string_equal(by, TOKEN);
    assert_int_equal(hd_outbox_mark_failed(s, x2, "refused", 0, 1, NULL), 1); /* parked */
    int64_t x3 = append_one(s, "x");
    lease_of(s, x3, by, sizeof by);
    assert_string_equal(by, "");
    assert_int_equal(hd_outbox_mark_dispatched(s, &x1, 1, NULL), 1);
    int64_t x4 = append_one(s, "x"); /* x1 dispatched, x2 parked, x3 pending */
    lease_of(s, x4, by, sizeof by);
    assert_string_equal(by, "");
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 2); /* x3, x4 */
    int64_t both[2] = {b->messages[0].seq, b->messages[1].seq};
    assert_int_equal(both[0], x3);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(s, both, 2, NULL), 2);
    int64_t x5 = append_one(s, "x"); /* only dispatched and parked rows before it */
    lease_of(s, x5, by, sizeof by);
    assert_string_equal(by, TOKEN);
    close_with(s, n);
}

/* A handed row is taken only while more than half its lease is left (a claim could take it
 * once the lease runs out); after the lease a claim takes it. */
static void a_row_near_the_end_of_its_lease_is_left_for_a_claim(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    char by[HD_OUTBOX_TOKEN_MAX + 1];
    assert_hd(0, hd_outbox_notifier_offer(n, TOKEN, LEASE));
    int64_t seq = append_one(s, "a");
    int64_t until = lease_of(s, seq, by, sizeof by);
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, 0, 10, LEASE, until - LEASE / 2 - 1, &b, NULL),
                     1);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, 0, 10, LEASE, until - LEASE / 2, &b, NULL), 0);
    hd_outbox_batch_free(b);
    hd_outbox_claim_opts co = {"late", LEASE, until - 1};
    assert_int_equal(hd_outbox_claim(s, 10, &co, &b, NULL), 0);
    hd_outbox_batch_free(b);
    co.now_ms = until;
    assert_int_equal(hd_outbox_claim(s, 10, &co, &b, NULL), 1);
    hd_outbox_batch_free(b);
    close_with(s, n);
}

/* A take returns at most limit rows, in seq order, and the next take goes on from the last
 * seq: the relay's cursor. */
static void takes_go_on_from_the_last_seq_taken(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    assert_hd(0, hd_outbox_notifier_offer(n, TOKEN, LEASE));
    int64_t seqs[5];
    for (int i = 0; i < 5; i++) {
        char agg[8];
        snprintf(agg, sizeof agg, "a%d", i);
        seqs[i] = append_one(s, agg);
    }
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, 0, 3, LEASE, 0, &b, NULL), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(b->messages[i].seq, seqs[i]);
    int64_t last = b->messages[2].seq;
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_take_handed(s, TOKEN, last, 3, LEASE, 0, &b, NULL), 2);
    assert_int_equal(b->messages[0].seq, seqs[3]);
    assert_int_equal(b->messages[1].seq, seqs[4]);
    hd_outbox_batch_free(b);
    close_with(s, n);
}

/* A relay that stops gives its handed rows back: claimable at once, without an attempt;
 * dispatched and parked rows keep theirs. */
static void released_handed_rows_are_claimable_at_once(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    assert_hd(0, hd_outbox_notifier_offer(n, TOKEN, LEASE));
    int64_t a = append_one(s, "a"), b1 = append_one(s, "b"), c = append_one(s, "c");
    assert_int_equal(hd_outbox_mark_dispatched(s, &a, 1, NULL), 1);
    assert_int_equal(hd_outbox_mark_failed(s, c, "refused", 0, 1, NULL), 1); /* parked */
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 0);
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_release_handed(s, TOKEN, NULL), 1);
    assert_int_equal(hd_outbox_release_handed(s, TOKEN, NULL), 0);
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 1);
    assert_int_equal(b->messages[0].seq, b1);
    assert_int_equal(b->messages[0].attempts, 0);
    hd_outbox_batch_free(b);
    assert_hd(HD_EINVAL, hd_outbox_release_handed(s, NULL, NULL));
    assert_hd(HD_EINVAL, hd_outbox_release_handed(NULL, TOKEN, NULL));
    close_with(s, n);
}

static void bad_arguments_are_refused(void **state)
{
    (void)state;
    hd_outbox_notifier *n;
    hd_store *s = open_with(&n);
    char long_token[HD_OUTBOX_TOKEN_MAX + 2];
    memset(long_token, 't', sizeof long_token - 1);
    long_token[sizeof long_token - 1] = '\0';
    assert_hd(HD_EINVAL, hd_outbox_notifier_offer(NULL, TOKEN, LEASE));
    assert_hd(HD_EINVAL, hd_outbox_notifier_offer(n, long_token, LEASE));
    assert_hd(HD_EINVAL, hd_outbox_notifier_offer(n, TOKEN, 0));
    assert_hd(0, hd_outbox_notifier_offer(n, "", 0)); /* withdraws */
    hd_outbox_batch *b = (hd_outbox_batch *)1;
    assert_hd(HD_EINVAL, hd_outbox_take_handed(NULL, TOKEN, 0, 1, LEASE, 0, &b, NULL));
    assert_null(b);
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, NULL, 0, 1, LEASE, 0, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, "", 0, 1, LEASE, 0, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, TOKEN, 0, 0, LEASE, 0, &b, NULL));
    assert_hd(HD_EINVAL,
              hd_outbox_take_handed(s, TOKEN, 0, HD_OUTBOX_BATCH_MAX + 1, LEASE, 0, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, TOKEN, 0, 1, 0, 0, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, TOKEN, -1, 1, LEASE, 0, &b, NULL));
    assert_hd(HD_EINVAL, hd_outbox_take_handed(s, TOKEN, 0, 1, LEASE, 0, NULL, NULL));
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd(HD_ESTATE, hd_outbox_take_handed(s, TOKEN, 0, 1, LEASE, 0, &b, NULL));
    assert_hd(HD_OK, hd_store_rollback(s, NULL));
    int64_t seq;
    assert_hd(HD_EINVAL, hd_outbox_last_seq(NULL, &seq, NULL));
    assert_hd(HD_EINVAL, hd_outbox_last_seq(s, NULL, NULL));
    close_with(s, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_offered_token_gets_the_rows_appended_after_it),
        cmocka_unit_test(a_row_behind_a_pending_row_of_its_aggregate_waits_for_a_claim),
        cmocka_unit_test(a_row_near_the_end_of_its_lease_is_left_for_a_claim),
        cmocka_unit_test(takes_go_on_from_the_last_seq_taken),
        cmocka_unit_test(released_handed_rows_are_claimable_at_once),
        cmocka_unit_test(bad_arguments_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
