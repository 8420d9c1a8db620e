/* The outbox on SQLite (in memory and in files): the conformance cases of
 * tests/support/store_conformance.c (the same run on PostgreSQL in
 * tests/integration/test_outbox_postgres.c), plus the in-process notifier and two relays
 * sharing one SQLite file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/outbox_internal.h"

static void notifier_counts_signals_and_times_out(void **state)
{
    (void)state;
    hd_outbox_notifier *n = hd_outbox_notifier_new();
    assert_non_null(n);
    uint64_t seen = 0;
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 0);
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 50), 0);
    assert_true(hd_clock_ms() - t0 >= 45);
    /* Signals while nobody waits are not lost: the counter moved. */
    hd_outbox_notifier_signal(n);
    hd_outbox_notifier_signal(n);
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 1000), 1);
    assert_int_equal(seen, 2);
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 0);
    assert_hd(HD_EINVAL, hd_outbox_notifier_wait(NULL, &seen, 0));
    assert_hd(HD_EINVAL, hd_outbox_notifier_wait(n, NULL, 0));
    hd_outbox_notifier_signal(NULL); /* harmless */
    hd_outbox_notifier_free(n);
    hd_outbox_notifier_free(NULL);
}

static void *signal_later(void *store)
{
    hd_sleep_ms(30);
    hd_outbox_signal(store);
    return NULL;
}

static void notifier_wakes_a_waiting_thread(void **state)
{
    (void)state;
    hd_outbox_notifier *n = hd_outbox_notifier_new();
    assert_non_null(n);
    hd_store *s = hd_conf_open("sqlite::memory:");
    hd_outbox_set_notifier(s, n);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, signal_later, s), 0);
    uint64_t seen = 0;
    int64_t t0 = hd_clock_ms();
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, -1), 1); /* no limit: woken */
    assert_true(hd_clock_ms() - t0 < 5000);
    pthread_join(th, NULL);
    hd_outbox_set_notifier(s, NULL);
    hd_store_close(s);
    hd_outbox_notifier_free(n);
}

/* The notifier's fd: readable after a signal until a wait takes it, so that a relay can
 * poll it with its stop token and its database socket. */
static void notifier_fd_is_readable_until_a_wait_takes_the_signal(void **state)
{
    (void)state;
    hd_outbox_notifier *n = hd_outbox_notifier_new();
    assert_non_null(n);
    assert_int_equal(hd_outbox_notifier_fd(NULL), -1);
    struct pollfd p = {.fd = hd_outbox_notifier_fd(n), .events = POLLIN};
    assert_true(p.fd >= 0);
    assert_int_equal(poll(&p, 1, 0), 0);
    for (int i = 0; i < 10000; i++) /* a burst: one byte in the pipe, never a full pipe */
        hd_outbox_notifier_signal(n);
    assert_int_equal(poll(&p, 1, 0), 1);
    uint64_t seen = 0;
    assert_int_equal(hd_outbox_notifier_wait(n, &seen, 0), 1);
    assert_int_equal(seen, 10000);
    assert_int_equal(poll(&p, 1, 0), 0);
    hd_outbox_notifier_signal(n);
    assert_int_equal(poll(&p, 1, 1000), 1);
    hd_outbox_notifier_free(n);
}

/* Two store handles, two notifiers: a commit wakes only its own store's relay (the hook
 * was process-wide before). */
static void notifiers_belong_to_their_store(void **state)
{
    (void)state;
    hd_store *a = hd_conf_open("sqlite::memory:"), *b = hd_conf_open("sqlite::memory:");
    hd_outbox_notifier *na = hd_outbox_notifier_new(), *nb = hd_outbox_notifier_new();
    hd_outbox_set_notifier(a, na);
    hd_outbox_set_notifier(b, nb);
    assert_ptr_equal(hd_outbox_get_notifier(a), na);
    assert_null(hd_outbox_get_notifier(NULL));
    hd_outbox_signal(a);
    uint64_t sa = 0, sb = 0;
    assert_int_equal(hd_outbox_notifier_wait(na, &sa, 0), 1);
    assert_int_equal(hd_outbox_notifier_wait(nb, &sb, 0), 0);
    hd_outbox_set_notifier(NULL, na); /* ignored */
    hd_outbox_set_notifier(a, NULL);
    hd_outbox_set_notifier(b, NULL);
    hd_store_close(a);
    hd_store_close(b);
    hd_outbox_notifier_free(na);
    hd_outbox_notifier_free(nb);
}

static void claim_on_a_null_store_is_einval(void **state)
{
    (void)state;
    hd_outbox_batch *b = (hd_outbox_batch *)1;
    assert_hd(HD_EINVAL, hd_outbox_claim(NULL, 1, NULL, &b, NULL));
    assert_null(b);
    assert_hd(HD_EINVAL, hd_outbox_mark_failed(NULL, 1, "x", 0, 1, NULL));
    assert_hd(HD_EINVAL, hd_outbox_redrive(NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_outbox_purge_dispatched(NULL, 0, NULL));
    assert_hd(HD_EINVAL, hd_outbox_release(NULL, NULL, 0, NULL));
    hd_outbox_claim_opts bad = {NULL, -1, 0};
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    assert_hd(HD_EINVAL, hd_outbox_claim(s, 1, &bad, &b, NULL));
    hd_store_close(s);
}

/* hd_outbox_has_due, the relay's read-only look before an idle claim: a pending row that is
 * due and not leased says 1; a leased one (until its lease runs out), a dispatched one and
 * an empty outbox say 0. */
static void has_due_sees_only_rows_a_claim_could_take(void **state)
{
    (void)state;
    assert_hd(HD_EINVAL, hd_outbox_has_due(NULL, 0, NULL));
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    assert_int_equal(hd_outbox_has_due(s, 0, NULL), 0);
    hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users", NULL);
    assert_non_null(env);
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_hd(HD_OK, hd_outbox_append(s, env, "user", "u1", NULL));
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    hd_envelope_free(env);
    int64_t now = hd_time_now_ms();
    assert_int_equal(hd_outbox_has_due(s, now, NULL), 1);
    hd_outbox_claim_opts co = {"t", 1000, now};
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, &co, &b, NULL), 1);
    int64_t seq = b->messages[0].seq;
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_has_due(s, now, NULL), 0);        /* leased */
    assert_int_equal(hd_outbox_has_due(s, now + 1001, NULL), 1); /* the lease ran out */
    assert_int_equal(hd_outbox_mark_dispatched(s, &seq, 1, NULL), 1);
    assert_int_equal(hd_outbox_has_due(s, now + 1001, NULL), 0);
    hd_store_close(s);
}

/* n events of aggregate room/id, committed. */
static void append_room(hd_store *s, const char *id, int n)
{
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    for (int i = 0; i < n; i++) {
        hd_envelope *env = hd_envelope_new("rooms.message_posted", 1, "/rooms", NULL);
        assert_non_null(env);
        assert_hd(HD_OK, hd_outbox_append(s, env, "room", id, NULL));
        hd_envelope_free(env);
    }
    assert_hd(HD_OK, hd_store_commit(s, NULL));
}

/* SQLite's plan of one of outbox.c's statements (EXPLAIN QUERY PLAN), its lines joined. */
static void plan_of(hd_store *s, hd_outbox_stmt which, char *text, size_t cap)
{
    hd_value p[] = {hd_value_text("t"), hd_value_int(0), hd_value_int(0), hd_value_int(10)};
    size_t n = which == HD_OUTBOX_SQL_CLAIM ? 4 : which == HD_OUTBOX_SQL_PURGE_BATCH ? 2 : 1;
    hd_conf_plan(s, hd_outbox_sql(which, 0), which == HD_OUTBOX_SQL_CLAIM ? p : p + 2, n, text,
                 cap);
}

/* The claim's per-aggregate probe reads hd_outbox_pending_aggregate, never hd_outbox_aggregate:
 * through the latter it walked an aggregate's whole dispatched history before each of its
 * pending rows (outbox.c, CLAIM_SQL). SQLite's plan says which index a statement reads; the
 * rows claimed after a history are the same either way, and are checked too. */
static void claim_probes_only_the_pending_rows_of_an_aggregate(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);

    char text[4096];
    plan_of(s, HD_OUTBOX_SQL_CLAIM, text, sizeof text);
    assert_non_null(strstr(text, "USING INDEX hd_outbox_pending_aggregate (aggregate_type=? AND "
                                 "aggregate_id=? AND seq<?)"));
    assert_null(strstr(text, "INDEX hd_outbox_aggregate "));

    /* A history of 60 dispatched events, then two more of the same room around another's. */
    append_room(s, "busy", 60);
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 100, NULL, &b, NULL), 60);
    int64_t seqs[60];
    for (size_t i = 0; i < b->count; i++)
        seqs[i] = b->messages[i].seq;
    hd_outbox_batch_free(b);
    assert_int_equal(hd_outbox_mark_dispatched(s, seqs, 60, NULL), 60);
    append_room(s, "busy", 1);
    append_room(s, "quiet", 1);
    append_room(s, "busy", 1);
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 3);
    assert_string_equal(b->messages[0].aggregate_id, "busy");
    assert_string_equal(b->messages[1].aggregate_id, "quiet");
    assert_string_equal(b->messages[2].aggregate_id, "busy");
    assert_true(b->messages[0].seq == 61 && b->messages[1].seq == 62 && b->messages[2].seq == 63);
    hd_outbox_batch_free(b);
    hd_store_close(s);
}

/* The retention purges read the dispatched rows through their own indexes
 * (OUTBOX_STEP_PURGE), never the whole table: a purge runs every minute from every relay,
 * under SQLite's one write lock. The batch purge walks hd_outbox_dispatched in its order,
 * without sorting. Then what each deletes. */
static void purges_read_only_the_rows_they_delete(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    static const struct {
        hd_outbox_stmt which;
        const char *reads;
    } want[] = {
        {HD_OUTBOX_SQL_PURGE, "INDEX hd_outbox_dispatched (dispatched_at>? AND dispatched_at<?)"},
        {HD_OUTBOX_SQL_PURGE_SENSITIVE,
         "INDEX hd_outbox_sensitive (dispatched_at>? AND dispatched_at<?)"},
        {HD_OUTBOX_SQL_PURGE_BATCH,
         "INDEX hd_outbox_dispatched (dispatched_at>? AND dispatched_at<?)"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char text[4096];
        plan_of(s, want[i].which, text, sizeof text);
        if (strstr(text, want[i].reads) == NULL || strstr(text, "SCAN hd_outbox") != NULL ||
            strstr(text, "TEMP B-TREE") != NULL)
            fail_msg("statement %zu: plan\n%swants \"%s\", no scan, no sort", i, text,
                     want[i].reads);
    }
    assert_null(hd_outbox_sql((hd_outbox_stmt)99, 0));

    /* Six rows: dispatched long ago (one sensitive), dispatched just now, pending. */
    append_room(s, "r", 6);
    int64_t old_seqs[] = {1, 2, 3}, new_seqs[] = {4};
    assert_int_equal(hd_outbox_mark_dispatched(s, old_seqs, 3, NULL), 3);
    assert_int_equal(hd_outbox_mark_dispatched(s, new_seqs, 1, NULL), 1);
    hd_store_exec(s, "UPDATE hd_outbox SET dispatched_at = dispatched_at - 100000 WHERE seq <= 3",
                  NULL, 0, NULL);
    hd_store_exec(s, "UPDATE hd_outbox SET sensitive = 1 WHERE seq IN (2, 4)", NULL, 0, NULL);
    assert_int_equal(hd_outbox_purge_sensitive(s, 50000, NULL), 1); /* 2: old and sensitive */
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE seq = 2"), 0);
    assert_int_equal(hd_outbox_purge_dispatched_batch(s, 50000, 1, NULL), 1); /* 1 or 3 */
    assert_int_equal(hd_outbox_purge_dispatched(s, 50000, NULL), 1);          /* the other */
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox"), 3);
    assert_int_equal(hd_conf_scalar(s, "SELECT MIN(seq) FROM hd_outbox"), 4);
    hd_store_close(s);
}

/* rows users.user_registered events of aggregates u0, u1, ... in one transaction: seqs 1..rows
 * on a fresh outbox. */
static void append_users(hd_store *s, int rows)
{
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    for (int i = 0; i < rows; i++) {
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users", NULL);
        assert_non_null(env);
        assert_hd(HD_OK, hd_outbox_append(s, env, "user", id, NULL));
        hd_envelope_free(env);
    }
    assert_hd(HD_OK, hd_store_commit(s, NULL));
}

/* Two relays on one SQLite file, each with its own connection, claiming and marking until
 * the outbox is empty: every row is dispatched exactly once (SQLite has one writer at a
 * time; a claim that finds the database busy waits for its busy timeout). */
typedef struct relay_arg {
    const char *url;
    int64_t *got;
    size_t ngot;
    int rc;
} relay_arg;

static void *relay(void *p)
{
    relay_arg *a = p;
    hd_store *s = NULL;
    a->rc = hd_store_open(a->url, &s, NULL);
    while (a->rc >= 0) {
        hd_outbox_batch *b = NULL;
        int n = hd_outbox_claim(s, 7, NULL, &b, NULL);
        if (n < 0) {
            a->rc = n;
            break;
        }
        int64_t seqs[7];
        for (int i = 0; i < n; i++)
            seqs[i] = a->got[a->ngot++] = b->messages[i].seq;
        hd_outbox_batch_free(b);
        if (n == 0)
            break;
        a->rc = hd_outbox_mark_dispatched(s, seqs, (size_t)n, NULL);
    }
    hd_store_close(s);
    return NULL;
}

static void two_relays_on_one_file_never_share_a_row(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("outbox-relays");
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s/o.db?synchronous=normal", dir);
    hd_store *s = hd_conf_open(url);
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    enum { ROWS = 300 };
    append_users(s, ROWS);
    relay_arg a = {url, calloc(ROWS, sizeof(int64_t)), 0, 0};
    relay_arg b = {url, calloc(ROWS, sizeof(int64_t)), 0, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, relay, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, relay, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_hd(HD_OK, a.rc < 0 ? a.rc : 0);
    assert_hd(HD_OK, b.rc < 0 ? b.rc : 0);
    assert_int_equal(a.ngot + b.ngot, ROWS);
    unsigned char *seen = calloc(ROWS + 1, 1);
    for (size_t i = 0; i < a.ngot + b.ngot; i++) {
        int64_t seq = i < a.ngot ? a.got[i] : b.got[i - a.ngot];
        assert_true(seq >= 1 && seq <= ROWS);
        assert_false(seen[seq]);
        seen[seq] = 1;
    }
    assert_int_equal(
        hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL"), 0);
    free(seen);
    free(a.got);
    free(b.got);
    hd_store_close(s);
    hd_test_rmtree(dir);
    free(dir);
}

/* The chain (outbox.h, "Ordering"): each event of an aggregate names the previous one of the
 * same aggregate in "previousid"; the first has none, other aggregates do not interleave. */
static void append_chains_each_aggregate_s_events(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    assert_true(hd_inbox_migrate(s, NULL) >= 0);
    char ids[4][64];
    const char *aggs[4] = {"a", "b", "a", "a"};
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    for (int i = 0; i < 4; i++) {
        hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users", NULL);
        assert_non_null(env);
        snprintf(ids[i], sizeof ids[i], "%s", hd_envelope_id(env));
        assert_hd(HD_OK, hd_outbox_append(s, env, "user", aggs[i], NULL));
        hd_envelope_free(env);
    }
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), 4); /* one claim, seq order */
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(b->messages[i].event_id, ids[i]);
    const char *want[4] = {NULL, NULL, ids[0], ids[2]};
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(s, "SELECT payload FROM hd_outbox ORDER BY seq", NULL, 0, &rows,
                                    NULL));
    assert_int_equal(hd_rows_count(rows), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *obj = json_loads(hd_rows_text(rows, i, 0), 0, NULL);
        assert_non_null(obj);
        const char *prev = json_string_value(json_object_get(obj, HD_OUTBOX_PREVIOUS_ID));
        if (want[i] == NULL)
            assert_null(prev);
        else
            assert_string_equal(prev, want[i]);
        json_decref(obj);
    }
    hd_rows_free(rows);
    hd_outbox_batch_free(b);

    /* hd_inbox_seen: what a consumer checks before it applies the successor. */
    assert_int_equal(hd_inbox_seen(s, "c", ids[0], NULL), 0);
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    assert_int_equal(hd_inbox_accept(s, "c", ids[0], NULL), 1);
    assert_int_equal(hd_inbox_seen(s, "c", ids[0], NULL), 1); /* its own transaction sees it */
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    assert_int_equal(hd_inbox_seen(s, "c", ids[0], NULL), 1);
    assert_int_equal(hd_inbox_seen(s, "other", ids[0], NULL), 0);
    assert_hd(HD_EINVAL, hd_inbox_seen(NULL, "c", ids[0], NULL));
    hd_store_close(s);
}

/* The tracing attributes stored beside the payload (the relay's AMQP headers) are written
 * with jsonw: the bytes must be those json_dumps(JSON_COMPACT) wrote for the object outbox.c
 * built before (members in the order correlationid, causationid, traceparent), for any
 * UTF-8 value, escapes included; and the row's claim hands them to the relay as stored. */
static void headers_are_the_bytes_jansson_wrote(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    const char *corr[] = {NULL, "c-1", "a\"b\\c\n\t\x01 \xC3\xA9\xF0\x9F\x93\xA8 </x>", "c-3"};
    const char *caus[] = {NULL, NULL, "cause \"quoted\"", "k"};
    const char *trace[] = {NULL, NULL, NULL,
                           "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"};
    size_t n = sizeof corr / sizeof corr[0];
    assert_hd(HD_OK, hd_store_begin(s, NULL));
    for (size_t i = 0; i < n; i++) {
        hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users", NULL);
        assert_non_null(env);
        if (corr[i])
            assert_hd(HD_OK, hd_envelope_set_correlation_id(env, corr[i]));
        if (caus[i])
            assert_hd(HD_OK, hd_envelope_set_causation_id(env, caus[i]));
        if (trace[i])
            assert_hd(HD_OK, hd_envelope_set_traceparent(env, trace[i]));
        char agg[16];
        snprintf(agg, sizeof agg, "u%zu", i);
        assert_hd(HD_OK, hd_outbox_append(s, env, "user", agg, NULL));
        hd_envelope_free(env);
    }
    assert_hd(HD_OK, hd_store_commit(s, NULL));
    hd_outbox_batch *b = NULL;
    assert_int_equal(hd_outbox_claim(s, 10, NULL, &b, NULL), (int)n);
    for (size_t i = 0; i < n; i++) {
        json_t *h = json_object();
        if (corr[i])
            json_object_set_new(h, "correlationid", json_string(corr[i]));
        if (caus[i])
            json_object_set_new(h, "causationid", json_string(caus[i]));
        if (trace[i])
            json_object_set_new(h, "traceparent", json_string(trace[i]));
        char *want = json_dumps(h, JSON_COMPACT);
        assert_non_null(want);
        assert_string_equal(b->messages[i].headers, want);
        free(want);
        json_decref(h);
    }
    hd_outbox_batch_free(b);
    hd_store_close(s);
}

/* Lists of seqs are marked in chunks of 1, 8 and 64 (outbox.c, update_seqs): lists of every
 * length around those sizes, each of every other row, mark exactly their rows and say how
 * many (a chunk that skipped a row or took a neighbour would show here; a repeat is harmless). */
static void marking_lists_of_any_length_marks_exactly_those_rows(void **state)
{
    (void)state;
    hd_store *s = hd_conf_open("sqlite::memory:");
    assert_int_equal(hd_outbox_migrate(s, NULL), 4);
    enum { ROWS = 1200 };
    append_users(s, ROWS);
    static const size_t lens[] = {1, 2, 7, 8, 9, 63, 64, 65, 66, 72, 73, 129};
    int64_t seqs[129];
    int64_t next = 1; /* seqs start at 1 (AUTOINCREMENT) */
    int64_t marked = 0;
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        for (size_t i = 0; i < lens[k]; i++, next += 2)
            seqs[i] = next; /* every other row: a neighbour marked by mistake shows */
        assert_int_equal(hd_outbox_mark_dispatched(s, seqs, lens[k], NULL), (int)lens[k]);
        marked += (int64_t)lens[k];
        assert_int_equal(
            hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NOT NULL"),
            marked);
        assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at"
                                           " IS NOT NULL AND seq % 2 = 0"),
                         0);
    }
    assert_true(next <= ROWS);
    hd_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(notifier_counts_signals_and_times_out),
        cmocka_unit_test(notifier_wakes_a_waiting_thread),
        cmocka_unit_test(notifier_fd_is_readable_until_a_wait_takes_the_signal),
        cmocka_unit_test(notifiers_belong_to_their_store),
        cmocka_unit_test(claim_on_a_null_store_is_einval),
        cmocka_unit_test(has_due_sees_only_rows_a_claim_could_take),
        cmocka_unit_test(claim_probes_only_the_pending_rows_of_an_aggregate),
        cmocka_unit_test(purges_read_only_the_rows_they_delete),
        cmocka_unit_test(two_relays_on_one_file_never_share_a_row),
        cmocka_unit_test(marking_lists_of_any_length_marks_exactly_those_rows),
        cmocka_unit_test(append_chains_each_aggregate_s_events),
        cmocka_unit_test(headers_are_the_bytes_jansson_wrote),
    };
    int failed = cmocka_run_group_tests_name("outbox on sqlite: specifics", tests, NULL, NULL);
    hd_conf_target memory = hd_conf_sqlite_memory();
    failed += hd_conf_run_outbox(&memory);
    char *dir = hd_test_tmpdir("outbox");
    hd_conf_target file = hd_conf_sqlite_file(dir);
    failed += hd_conf_run_outbox(&file);
    hd_test_rmtree(dir);
    free(dir);
    return failed;
}
