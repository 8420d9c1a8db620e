/* Integration: the promise "no event is lost between the business write and the broker",
 * shown the hard way. Needs HD_AMQP_URL and HD_PG_URL, and the herald-relay binary.
 *
 * 3000 events are appended to an outbox (SQLite temp file with synchronous=FULL, then
 * PostgreSQL). The herald-relay binary is started and killed with SIGKILL at a random
 * moment, ten times in a row, while it drains them: a process killed between publishing a
 * batch and marking it dispatched leaves those rows leased, and the next relay publishes
 * them again once the lease has run out. The relay keeps two batches in flight (relay.h),
 * so a kill may leave two batches leased. Then a last relay runs to completion (--drain).
 *
 * Counted afterwards:
 *   - every event reached the queue: distinct message ids == 3000 (NOTHING lost);
 *   - duplicates = deliveries - 3000: what at-least-once allows, reported, and bounded by
 *     two batches per kill (how many depends on where the kills land);
 *   - a consumer that accepts each delivery through the inbox (hd_inbox_accept) in the
 *     transaction of its effect row produces exactly one effect per event, duplicates or
 *     not: effect rows == distinct events == 3000.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_proc.h"
#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/backoff.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/store.h"
#include "herald/topology.h"

#define N_EVENTS 3000
#define KILLS    10
#define LEASE_MS "1000" /* short, so that the rows of a killed relay come back quickly */

/* The temp directory holds the SQLite database and the relay's logs. */
typedef hd_test_db db;

static void db_init(db *d, int postgres)
{
    hd_test_db_open(d, "relay-crash", postgres, "outbox.db?synchronous=full");
}

static void db_drop(db *d)
{
    hd_test_db_drop(d);
}

/* The one value of a one-row, one-column query; params (n of them) may be NULL. */
static int64_t scalar_p(hd_store *s, const char *sql, const hd_value *params, size_t n)
{
    hd_error err;
    hd_rows *rows = NULL;
    assert_hd_err(0, hd_store_query(s, sql, params, n, &rows, &err), &err);
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v;
}

static int64_t scalar(hd_store *s, const char *sql)
{
    return scalar_p(s, sql, NULL, 0);
}

/* Start build/herald-relay with the settings of this test; its log goes to dir/relay.log. */
static hd_proc *spawn_relay(const db *d, const char *amqp_url, const char *relay_id, int drain)
{
    char log[1024], db_url[600], amqp[600], id[64];
    snprintf(log, sizeof log, "%s/relay.log", d->dir);
    snprintf(db_url, sizeof db_url, "HD_DATABASE_URL=%s", d->url);
    snprintf(amqp, sizeof amqp, "HD_AMQP_URL=%s", amqp_url);
    snprintf(id, sizeof id, "HD_RELAY_ID=%s", relay_id);
    const char *env[] = {db_url,
                         amqp,
                         "HD_RELAY_BATCH=50",
                         "HD_RELAY_LEASE_MS=" LEASE_MS,
                         "HD_RELAY_POLL_MS=50",
                         "HD_RELAY_PROGRESS_MS=0",
                         "HD_LOG_LEVEL=warn",
                         id,
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-relay", drain ? "--drain" : NULL, NULL};
    hd_proc_options o = {.argv = argv, .env = env, .log_path = log};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    return p;
}

/* Wait for p to exit, failing the test (with the end of its log) after timeout_ms. */
static void wait_for(hd_proc *p, int timeout_ms)
{
    hd_error err;
    if (hd_proc_wait(p, timeout_ms, &err) < 0) {
        hd_proc_dump_log(p, stderr, 30);
        hd_proc_kill(p, NULL);
        fail_msg("%s", err.text);
    }
}

/* The consumer: every delivery is accepted through the inbox in the transaction of its
 * effect row, then acked (after the commit). Returns the number of deliveries. */
static size_t consume_with_inbox(hd_amqp *a, const char *queue, hd_store *cs)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    hd_error err;
    size_t deliveries = 0;
    for (;;) {
        amqp_rpc_reply_t rep = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "basic.get", &err), &err);
        if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        uint64_t tag = ((amqp_basic_get_ok_t *)rep.reply.decoded)->delivery_tag;
        amqp_message_t msg;
        rep = amqp_read_message(st, ch, &msg, 0);
        assert_hd_err(0, hd_amqp_check_reply(a, rep, "read message", &err), &err);
        char id[64];
        assert_true(msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
        snprintf(id, sizeof id, "%.*s", (int)msg.properties.message_id.len,
                 (char *)msg.properties.message_id.bytes);
        amqp_destroy_message(&msg);

        assert_hd_err(0, hd_store_begin(cs, &err), &err);
        int fresh = hd_inbox_accept(cs, "crash-test", id, &err);
        assert_true(fresh == 0 || fresh == 1);
        if (fresh) {
            hd_value p[] = {hd_value_text(id)};
            assert_int_equal(
                1, hd_store_exec(cs, "INSERT INTO effects (event_id) VALUES ($1)", p, 1, &err));
        }
        assert_hd_err(0, hd_store_commit(cs, &err), &err);
        assert_int_equal(AMQP_STATUS_OK, amqp_basic_ack(st, ch, tag, 0));
        deliveries++;
        amqp_maybe_release_buffers(st);
    }
    return deliveries;
}

/* The broker side of a test: a topic exchange and a durable queue bound with "#". */
typedef struct fixture {
    db d;
    hd_store *s;
    hd_amqp *a;
    char *topic, *queue;
} fixture;

static void fixture_init(fixture *f, int postgres)
{
    hd_error err;
    db_init(&f->d, postgres);
    f->s = NULL;
    assert_hd_err(0, hd_store_open(f->d.url, &f->s, &err), &err);
    assert_true(hd_outbox_migrate(f->s, &err) >= 0);
    f->a = NULL;
    assert_hd_err(0, hd_amqp_open(hd_test_require_env("HD_AMQP_URL"), NULL, &f->a, &err), &err);
    f->topic = hd_test_unique_name("hd-relay-crash");
    f->queue = hd_test_unique_name("hd-relay-crash-q");
    hd_exchange_spec ex = {.name = f->topic, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = f->queue, .durable = 1};
    hd_binding_spec bs = {.queue = f->queue, .exchange = f->topic, .key = "#"};
    assert_hd_err(0, hd_exchange_declare(f->a, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(f->a, &qs, NULL, &err), &err);
    assert_hd_err(0, hd_queue_bind(f->a, &bs, &err), &err);

    char type[256];
    snprintf(type, sizeof type, "%s.item_added", f->topic);
    for (int i = 0; i < N_EVENTS; i += 50) {
        assert_hd_err(0, hd_store_begin(f->s, &err), &err);
        for (int k = i; k < i + 50; k++) {
            hd_envelope *env = hd_envelope_new(type, 1, "/crash", json_pack("{s:i}", "n", k));
            assert_non_null(env);
            char agg[32];
            /* 1000 aggregates of 3 events: the claim keeps each aggregate's order, so the
             * rows a killed relay leaves leased hold back the later events of their
             * aggregates (until the lease ends), not the whole stream. */
            snprintf(agg, sizeof agg, "item-%d", k % 1000);
            assert_hd_err(0, hd_outbox_append(f->s, env, "item", agg, &err), &err);
            hd_envelope_free(env);
        }
        assert_hd_err(0, hd_store_commit(f->s, &err), &err);
    }
}

static void fixture_release(fixture *f)
{
    hd_error err;
    assert_hd_err(0, hd_queue_delete(f->a, f->queue, NULL, &err), &err);
    assert_hd_err(0, hd_exchange_delete(f->a, f->topic, &err), &err);
    hd_amqp_close(f->a);
    hd_store_close(f->s);
    db_drop(&f->d);
    free(f->queue);
    free(f->topic);
}

/* Wait (at most 3 s) until relay `id` has claimed something: it is at work. */
static void wait_for_first_claim(hd_store *s, const char *id)
{
    hd_value who = hd_value_text(id);
    int64_t give_up = hd_clock_ms() + 3000;
    while (scalar_p(s, "SELECT COUNT(*) FROM hd_outbox WHERE claimed_by = $1", &who, 1) == 0 &&
           hd_clock_ms() < give_up)
        hd_sleep_ms(1);
}

static int64_t leased_now(hd_store *s)
{
    hd_value now = hd_value_int(hd_time_now_ms());
    return scalar_p(s,
                    "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL"
                    " AND claimed_until > $1",
                    &now, 1);
}

static void kill_relay_repeatedly(int postgres)
{
    const char *amqp_url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    fixture fx;
    fixture_init(&fx, postgres);
    /* Short names for the rest of the test; fx owns them. */
    const db *d = &fx.d;
    hd_store *s = fx.s;
    hd_amqp *a = fx.a;
    const char *queue = fx.queue;

    /* Random moments, from a seed printed so that a failing run can be replayed. */
    uint64_t seed = (uint64_t)hd_clock_ns();
    hd_backoff rnd;
    hd_backoff_init(&rnd, 40, 40, seed);
    int64_t t0 = hd_clock_ms();
    int while_leased = 0; /* kills that left rows leased (claimed, not marked) */
    for (int k = 0; k < KILLS; k++) {
        char id[32];
        snprintf(id, sizeof id, "crash-%d", k + 1);
        hd_proc *relay = spawn_relay(d, amqp_url, id, 0);
        /* Kill while it works: once it has claimed its first batch, at a random moment
         * 0..40 ms later (a batch takes a few ms to publish, confirm and mark, so the kill
         * lands anywhere in claim -> publish -> confirm -> mark of some batch). */
        wait_for_first_claim(s, id);
        hd_sleep_ms(hd_backoff_delay(&rnd, 0));
        assert_hd_err(0, hd_proc_kill(relay, &err), &err); /* 0: it was still running */
        assert_int_equal(hd_proc_term_signal(relay), SIGKILL);
        hd_proc_free(relay);
        int64_t leased = leased_now(s);
        if (leased > 0)
            while_leased++;
        print_message(
            "    kill %2d: %4lld pending, %3lld leased to dead relays\n", k + 1,
            (long long)scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL"),
            (long long)leased);
    }
    /* A last relay, left alone until nothing is pending. */
    hd_proc *last = spawn_relay(d, amqp_url, "crash-final", 1);
    wait_for(last, 60000);
    if (hd_proc_exit_code(last) != 0)
        hd_proc_dump_log(last, stderr, 30);
    assert_int_equal(hd_proc_exit_code(last), 0);
    hd_proc_free(last);
    int64_t t1 = hd_clock_ms();
    assert_int_equal(scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL"), 0);
    assert_int_equal(scalar(s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NOT NULL"),
                     N_EVENTS);

    /* The consumer's own database: inbox + effect rows. synchronous=normal: this test is
     * about the relay's losses, and 3000 fsyncs would only make it slower. */
    char curl[1100];
    snprintf(curl, sizeof curl, "sqlite://%s/consumer.db?synchronous=normal", d->dir);
    hd_store *cs = NULL;
    assert_hd_err(0, hd_store_open(curl, &cs, &err), &err);
    assert_true(hd_inbox_migrate(cs, &err) >= 0);
    /* No unique constraint on purpose: only the inbox stands between a duplicate and a
     * second effect. */
    assert_true(hd_store_exec(cs, "CREATE TABLE effects (event_id TEXT NOT NULL)", NULL, 0, &err) >=
                0);
    size_t deliveries = consume_with_inbox(a, queue, cs);
    int64_t effects = scalar(cs, "SELECT COUNT(*) FROM effects");
    int64_t distinct = scalar(cs, "SELECT COUNT(DISTINCT event_id) FROM effects");
    int64_t inbox = scalar(cs, "SELECT COUNT(*) FROM hd_inbox");
    print_message("    %s: %d kills (%d left rows leased) in %lld ms; %zu deliveries of %d events: "
                  "%zu duplicates, %lld effect rows, %lld distinct, 0 lost (seed %llu)\n",
                  hd_store_dialect(s), KILLS, while_leased, (long long)(t1 - t0), deliveries,
                  N_EVENTS, deliveries - (size_t)distinct, (long long)effects, (long long)distinct,
                  (unsigned long long)seed);
    assert_int_equal(distinct, N_EVENTS); /* nothing lost */
    assert_int_equal(effects, N_EVENTS);  /* one effect each, duplicates absorbed */
    assert_int_equal(inbox, N_EVENTS);
    assert_true(deliveries >= N_EVENTS);
    /* Each kill can cost at most the rows its relay held leased: two batches of 50, the one
     * being marked and the one published beside it. A row is published again once per
     * relay that died holding it, never more. */
    assert_true(deliveries - N_EVENTS <= (size_t)KILLS * 2 * 50);

    hd_store_close(cs);
    fixture_release(&fx);
}

/* SIGTERM is not SIGKILL: the relay finishes the batches in flight (publish, confirms,
 * mark; it claims nothing more) and exits 0, leaving no row leased and nothing published
 * twice. */
static void sigterm_finishes_the_batch(void **state)
{
    (void)state;
    fixture fx;
    fixture_init(&fx, 0);
    hd_proc *relay = spawn_relay(&fx.d, hd_test_require_env("HD_AMQP_URL"), "term-1", 0);
    wait_for_first_claim(fx.s, "term-1");
    hd_sleep_ms(20);
    hd_error err;
    int rc = hd_proc_stop(relay, 10000, &err); /* SIGTERM; SIGKILL after 10 s */
    if (rc < 0)
        hd_proc_dump_log(relay, stderr, 30);
    assert_hd_err(0, rc, &err); /* exited 0 in time */
    hd_proc_free(relay);

    int64_t dispatched =
        scalar(fx.s, "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NOT NULL");
    hd_queue_info info;
    assert_hd_err(0, hd_queue_inspect(fx.a, fx.queue, &info, &err), &err);
    print_message("    SIGTERM: exit 0 after %lld rows dispatched; %u messages in the queue; "
                  "%lld rows left leased\n",
                  (long long)dispatched, info.message_count, (long long)leased_now(fx.s));
    assert_true(dispatched > 0);
    assert_int_equal(leased_now(fx.s), 0);            /* the batches in flight were marked */
    assert_int_equal(info.message_count, dispatched); /* and nothing went out unmarked */
    fixture_release(&fx);
}

static void sqlite_relay_killed_loses_nothing(void **state)
{
    (void)state;
    kill_relay_repeatedly(0);
}

static void postgres_relay_killed_loses_nothing(void **state)
{
    (void)state;
    kill_relay_repeatedly(1);
}

int main(void)
{
    if (access(HD_BINARY_DIR "/herald-relay", X_OK) != 0) {
        fprintf(stderr, "%s: not found: build the herald-relay target first\n",
                HD_BINARY_DIR "/herald-relay");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sqlite_relay_killed_loses_nothing),
        cmocka_unit_test(postgres_relay_killed_loses_nothing),
        cmocka_unit_test(sigterm_finishes_the_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
