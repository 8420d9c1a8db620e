/* integration.stream — a RabbitMQ stream read by offset (herald/stream.h), on the real broker,
 * with the reader's database on SQLite and on PostgreSQL.
 *
 * The stream is bound to a topic exchange, as `herald-admin stream declare --bind` binds one
 * to the exchange the relay publishes an event type to, and N_EVENTS messages.message_sent
 * events (7 senders) are published there. Then:
 *
 *   in_process   a reader whose handler fails half-way (its transaction rolls back), closed
 *                and opened again: it resumes after the last committed offset; the
 *                projection (events per sender) is exact; a replay from offset 0 into a
 *                fresh projection has the same rows; a replay from a time before the first
 *                event too; a reader opened at "next" sees nothing of the past.
 *   kill_9       `herald-admin stream follow` killed with SIGKILL in the middle of the
 *                stream, KILLS times, then run to the end: the projection is exact (no
 *                record lost, none counted twice), its offset is the last; `stream replay
 *                --from-offset 0` into a fresh projection gives the same rows.
 *
 * Needs HD_AMQP_URL and HD_PG_URL (a missing server fails the test). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <amqp.h>

#include "hd_proc.h"
#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/store.h"
#include "herald/stream.h"
#include "herald/topology.h"

#define N_EVENTS 1000
#define SENDERS  7
#define KILLS    3

static char *stream_name;
static char *exchange_name;
static int64_t published_at_ms;

/* ---- the stream, once for every case ----------------------------------------------------------
 */

static int group_setup(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    hd_test_require_env("HD_PG_URL");
    stream_name = hd_test_unique_name("test-stream");
    exchange_name = hd_test_unique_name("test-stream-x");
    hd_amqp *a = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_amqp_open(url, NULL, &a, &err), &err);
    hd_stream_spec spec = {.name = stream_name, .max_length_bytes = 100 * 1000 * 1000};
    assert_hd_err(HD_OK, hd_stream_declare(a, &spec, &err), &err);
    assert_hd_err(HD_OK, hd_stream_declare(a, &spec, &err), &err); /* idempotent */
    hd_exchange_spec ex = {.name = exchange_name, .type = HD_EXCHANGE_TOPIC, .auto_delete = 1};
    hd_binding_spec b = {.queue = stream_name, .exchange = exchange_name, .key = "messages.#"};
    assert_hd_err(HD_OK, hd_exchange_declare(a, &ex, &err), &err);
    assert_hd_err(HD_OK, hd_queue_bind(a, &b, &err), &err);
    /* a classic queue of that name is not a stream: refused */
    published_at_ms = hd_time_now_ms() - 2000;
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_confirm_select(st, hd_amqp_channel(a));
    assert_hd_err(HD_OK, hd_amqp_check_reply(a, amqp_get_rpc_reply(st), "confirm", &err), &err);
    for (int i = 0; i < N_EVENTS; i++) {
        char sender[16];
        snprintf(sender, sizeof sender, "s%d", i % SENDERS);
        hd_envelope *env = hd_envelope_new(
            "messages.message_sent", 1, "test",
            json_pack("{s:s, s:s, s:s, s:o, s:s}", "message_id", "x", "sender", sender, "content",
                      "hello", "metadata", json_object(), "sent_at", "2026-12-04T00:00:00Z"));
        char *body = NULL;
        size_t len = 0;
        assert_hd_err(HD_OK, hd_envelope_encode(env, &body, &len, &err), &err);
        amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG |
                                                   AMQP_BASIC_MESSAGE_ID_FLAG,
                                         .delivery_mode = 2,
                                         .message_id = amqp_cstring_bytes(hd_envelope_id(env))};
        int status = amqp_basic_publish(st, hd_amqp_channel(a), amqp_cstring_bytes(exchange_name),
                                        amqp_cstring_bytes("messages.message_sent"), 1, 0, &props,
                                        (amqp_bytes_t){len, body});
        assert_hd_err(HD_OK, hd_amqp_check_status(a, status, "publish", &err), &err);
        free(body);
        hd_envelope_free(env);
    }
    /* Wait for the confirms (one per message, or multiple): all routed to the stream. */
    int confirmed = 0;
    while (confirmed < N_EVENTS) {
        amqp_frame_t f;
        struct timeval tv = {10, 0};
        assert_int_equal(amqp_simple_wait_frame_noblock(st, &f, &tv), AMQP_STATUS_OK);
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        assert_int_equal(f.payload.method.id, AMQP_BASIC_ACK_METHOD);
        amqp_basic_ack_t *ack = f.payload.method.decoded;
        confirmed = ack->multiple ? (int)ack->delivery_tag : confirmed + 1;
    }
    hd_amqp_close(a);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    hd_amqp *a = NULL;
    if (hd_amqp_open(getenv("HD_AMQP_URL"), NULL, &a, NULL) == 0) {
        hd_queue_delete(a, stream_name, NULL, NULL);
        hd_exchange_delete(a, exchange_name, NULL);
    }
    hd_amqp_close(a);
    free(stream_name);
    free(exchange_name);
    return 0;
}

/* ---- a projection in the test's own code --------------------------------------------------------
 */

typedef struct counting {
    const char *projection;
    int64_t fail_at; /* the handler fails at this offset once (-1: never) */
} counting;

static int count_sender(void *ctx, hd_store *store, const hd_stream_record *rec, hd_error *err)
{
    counting *c = ctx;
    json_t *doc = json_loadb(rec->body, rec->body_len, 0, NULL);
    const char *sender = json_string_value(json_object_get(json_object_get(doc, "data"), "sender"));
    hd_value p[] = {hd_value_text(c->projection), hd_value_text(sender ? sender : "?")};
    int rc = hd_store_exec(store,
                           "INSERT INTO counts (projection, sender, n) VALUES ($1, $2, 1)"
                           " ON CONFLICT (projection, sender) DO UPDATE SET n = counts.n + 1",
                           p, 2, err);
    json_decref(doc);
    if (rc >= 0 && rec->offset == c->fail_at) {
        c->fail_at = -1;
        return hd_error_set(err, HD_EHANDLER, "failing on purpose at offset %lld",
                            (long long)rec->offset);
    }
    return rc < 0 ? rc : 0;
}

/* projection's rows "s0=286 s1=286 ..." into a new string */
static char *rows_text(hd_store *s, const char *table, const char *key_col, const char *n_col,
                       const char *projection)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s, %s FROM %s WHERE projection = $1 ORDER BY %s", key_col,
             n_col, table, key_col);
    hd_value p[] = {hd_value_text(projection)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_query(s, sql, p, 1, &rows, &err), &err);
    size_t cap = 64 + hd_rows_count(rows) * 400, len = 0;
    char *out = calloc(1, cap);
    for (size_t r = 0; r < hd_rows_count(rows); r++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s=%lld", r ? " " : "",
                                hd_rows_text(rows, r, 0), (long long)hd_rows_int(rows, r, 1));
    hd_rows_free(rows);
    return out;
}

static char *expected_counts(const char *prefix)
{
    char *out = calloc(1, 512);
    size_t len = 0;
    for (int s = 0; s < SENDERS; s++) {
        int n = N_EVENTS / SENDERS + (s < N_EVENTS % SENDERS);
        len += (size_t)snprintf(out + len, 512 - len, "%s%ss%d=%d", s ? " " : "", prefix, s, n);
    }
    return out;
}

static int64_t stored_offset(hd_store *s, const char *consumer)
{
    int64_t v = -2;
    hd_error err;
    assert_hd_err(HD_OK, hd_stream_offset_load(s, consumer, stream_name, &v, &err), &err);
    return v;
}

static void read_all(hd_store *s, counting *c, const char *consumer, hd_stream_start start,
                     int expect_rc)
{
    hd_stream_consumer_options o = {.stream = stream_name,
                                    .consumer = consumer,
                                    .store = s,
                                    .handler = count_sender,
                                    .ctx = c,
                                    .start = start,
                                    .prefetch = 50};
    hd_stream_consumer *sc = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_stream_consumer_open(getenv("HD_AMQP_URL"), &o, &sc, &err), &err);
    int rc = hd_stream_consumer_run(sc, NULL, 1000, &err);
    hd_stream_counts k;
    hd_stream_consumer_get_counts(sc, &k);
    print_message("reader %s: delivered %llu, handled %llu, skipped %llu\n", consumer,
                  (unsigned long long)k.delivered, (unsigned long long)k.handled,
                  (unsigned long long)k.skipped);
    if (rc != expect_rc)
        print_error("run: %s\n", err.text);
    assert_int_equal(rc, expect_rc);
    hd_stream_consumer_close(sc);
}

static void in_process(int postgres)
{
    hd_test_db d;
    hd_test_db_open(&d, "stream", postgres, "reader.db");
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(d.url, &s, &err), &err);
    assert_true(hd_stream_offsets_migrate(s, &err) >= 0);
    assert_true(hd_store_exec(s,
                              "CREATE TABLE counts (projection TEXT NOT NULL, sender TEXT NOT NULL,"
                              " n BIGINT NOT NULL, PRIMARY KEY (projection, sender))",
                              NULL, 0, &err) >= 0);
    hd_stream_start first = {.from = HD_STREAM_FIRST};
    /* 1. a failure half-way: the poll fails, nothing of that record is kept */
    counting a = {.projection = "a", .fail_at = N_EVENTS / 2};
    read_all(s, &a, "a", first, HD_EHANDLER);
    assert_int_equal(stored_offset(s, "a"), N_EVENTS / 2 - 1);
    /* 2. opened again: resumes at the failed record, reads to the end */
    read_all(s, &a, "a", first, 0);
    assert_int_equal(stored_offset(s, "a"), N_EVENTS - 1);
    char *want = expected_counts("");
    char *got_a = rows_text(s, "counts", "sender", "n", "a");
    assert_string_equal(got_a, want);
    /* 3. opened once more: nothing new, nothing counted twice */
    read_all(s, &a, "a", first, 0);
    char *again = rows_text(s, "counts", "sender", "n", "a");
    assert_string_equal(again, want);
    /* 4. replay from offset 0 into a fresh projection: the same rows */
    counting b = {.projection = "b", .fail_at = -1};
    read_all(s, &b, "b", (hd_stream_start){.from = HD_STREAM_OFFSET, .offset = 0}, 0);
    char *got_b = rows_text(s, "counts", "sender", "n", "b");
    assert_string_equal(got_b, got_a);
    /* 5. from a time before the stream existed: the same. (Ten minutes before: the broker
     * resolves the time with ITS clock, against its chunks' timestamps; an Erlang VM
     * corrects a jump of the system clock slowly, so its clock may lag the test's by
     * seconds.) From an hour ahead: nothing yet. From offset N-10: 10 records. */
    counting t = {.projection = "t", .fail_at = -1};
    read_all(s, &t, "t",
             (hd_stream_start){.from = HD_STREAM_TIME, .time_ms = published_at_ms - 600000}, 0);
    char *got_t = rows_text(s, "counts", "sender", "n", "t");
    assert_string_equal(got_t, got_a);
    counting future = {.projection = "future", .fail_at = -1};
    read_all(s, &future, "future",
             (hd_stream_start){.from = HD_STREAM_TIME, .time_ms = hd_time_now_ms() + 3600000}, 0);
    assert_int_equal(stored_offset(s, "future"), -1);
    counting tail = {.projection = "tail", .fail_at = -1};
    read_all(s, &tail, "tail", (hd_stream_start){.from = HD_STREAM_OFFSET, .offset = N_EVENTS - 10},
             0);
    hd_rows *rows = NULL;
    assert_hd_err(HD_OK,
                  hd_store_query(s, "SELECT SUM(n) FROM counts WHERE projection = 'tail'", NULL, 0,
                                 &rows, &err),
                  &err);
    assert_int_equal(hd_rows_int(rows, 0, 0), 10);
    hd_rows_free(rows);
    /* 6. "next": only what comes after attaching, so nothing here */
    counting n = {.projection = "n", .fail_at = -1};
    read_all(s, &n, "n", (hd_stream_start){.from = HD_STREAM_NEXT}, 0);
    assert_int_equal(stored_offset(s, "n"), -1);
    free(want);
    free(got_a);
    free(again);
    free(got_b);
    free(got_t);
    hd_store_close(s);
    hd_test_db_drop(&d);
}

static void test_in_process_sqlite(void **state)
{
    (void)state;
    in_process(0);
}

static void test_in_process_postgres(void **state)
{
    (void)state;
    in_process(1);
}

/* ---- herald-admin stream follow, killed with SIGKILL -------------------------------------------
 */

static hd_proc *admin(const hd_test_db *d, const char *log, const char *const *args)
{
    const char *argv[16] = {HD_BINARY_DIR "/herald-admin"};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 15; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    char db_env[600];
    snprintf(db_env, sizeof db_env, "HD_DATABASE_URL=%s", d->url);
    const char *env[] = {db_env, NULL};
    char path[600];
    snprintf(path, sizeof path, "%s/%s", d->dir, log);
    hd_proc_options o = {.argv = argv, .env = env, .log_path = path};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_proc_start(&o, &p, &err), &err);
    return p;
}

static void wait_exit_0(hd_proc *p)
{
    hd_error err;
    if (hd_proc_wait(p, 120000, &err) < 0 || hd_proc_exit_code(p) != 0) {
        hd_proc_dump_log(p, stderr, 40);
        fail_msg("herald-admin did not exit 0");
    }
}

static void kill_9(int postgres)
{
    hd_test_db d;
    hd_test_db_open(&d, "stream-kill", postgres, "follow.db");
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open(d.url, &s, &err), &err);
    assert_true(hd_stream_offsets_migrate(s, &err) >= 0);
    const char *follow[] = {"stream", "follow",     stream_name, "--projection",
                            "crash",  "--delay-ms", "1",         NULL};
    int64_t last = -1;
    for (int k = 0; k < KILLS; k++) {
        hd_proc *p = admin(&d, "follow.log", follow);
        /* wait until it got N/(KILLS+1) further, then kill -9 in the middle of the stream */
        int64_t target = (int64_t)(k + 1) * N_EVENTS / (KILLS + 1);
        int64_t off = -1;
        for (int i = 0; i < 6000 && off < target; i++) {
            hd_sleep_ms(10);
            if (!hd_proc_running(p))
                break;
            /* the tables appear once the child migrated them */
            if (hd_stream_offset_load(s, "projection:crash", stream_name, &off, NULL) < 0)
                off = -1;
        }
        assert_hd_err(HD_OK, hd_proc_kill(p, &err), &err); /* 0: it was still running */
        assert_int_equal(hd_proc_term_signal(p), SIGKILL);
        hd_proc_free(p);
        off = stored_offset(s, "projection:crash");
        print_message("kill -9 #%d at stored offset %lld\n", k + 1, (long long)off);
        assert_true(off >= target && off < N_EVENTS - 1); /* mid-stream, and progressing */
        assert_true(off > last);
        last = off;
    }
    const char *finish[] = {"stream", "follow",       stream_name, "--projection",
                            "crash",  "--until-idle", "1500",      NULL};
    hd_proc *p = admin(&d, "finish.log", finish);
    wait_exit_0(p);
    hd_proc_free(p);
    assert_int_equal(stored_offset(s, "projection:crash"), N_EVENTS - 1);
    char *want = expected_counts("messages.message_sent/");
    char *got = rows_text(s, "stream_projection", "key", "events", "crash");
    assert_string_equal(got, want);
    /* the replay command: a fresh projection from offset 0, the same rows */
    const char *replay[] = {"--json", "stream",       "replay", stream_name, "--from-offset",
                            "0",      "--projection", "fresh",  "--idle",    "1500",
                            NULL};
    p = admin(&d, "replay.log", replay);
    wait_exit_0(p);
    hd_proc_free(p);
    char *fresh = rows_text(s, "stream_projection", "key", "events", "fresh");
    assert_string_equal(fresh, got);
    /* and again under the same name: emptied first, so the same rows, not twice as many */
    p = admin(&d, "replay2.log", replay);
    wait_exit_0(p);
    hd_proc_free(p);
    char *fresh2 = rows_text(s, "stream_projection", "key", "events", "fresh");
    assert_string_equal(fresh2, got);
    free(want);
    free(got);
    free(fresh);
    free(fresh2);
    hd_store_close(s);
    hd_test_db_drop(&d);
}

static void test_kill_9_sqlite(void **state)
{
    (void)state;
    kill_9(0);
}

static void test_kill_9_postgres(void **state)
{
    (void)state;
    kill_9(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_process_sqlite),
        cmocka_unit_test(test_in_process_postgres),
        cmocka_unit_test(test_kill_9_sqlite),
        cmocka_unit_test(test_kill_9_postgres),
    };
    return cmocka_run_group_tests_name("stream", tests, group_setup, group_teardown);
}
