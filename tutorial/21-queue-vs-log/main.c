/* Chapter 21 — a queue and a log: competing consumers and acks against offsets and replay.
 *
 * The messages feature (docs/services/messages.md) publishes messages.message_sent to the
 * topic exchange "messages". Bind two things there and the same events land in both:
 *
 *   a QUEUE  (what herald-users' consumer reads): each message goes to ONE of the consumers
 *            sharing the queue, and an ack deletes it. Scaling out = more consumers; reading
 *            again = impossible; remembering what was done = the inbox, per message id.
 *   a LOG    (a RabbitMQ stream, herald/stream.h; Kafka's model): every reader sees every
 *            message, in order, numbered by offset; reading removes nothing; each reader
 *            keeps its own position, and the place to keep it is the transaction of its
 *            effects. Reading again (replay) is a new reader.
 *
 * Steps: declare an exchange, a queue and a stream bound to it (names unique to this run);
 * publish 12 events as the relay would; two competing consumers drain the queue; two
 * readers read the log; a reader resumes from its stored offset after new events and after
 * a crash; a replay into a fresh projection gives the same rows; clean up.
 * Read along: docs/tutorial/21-queue-vs-log.md. Needs HD_AMQP_URL (make servers-up).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/envelope.h"
#include "herald/store.h"
#include "herald/stream.h"
#include "herald/topology.h"

#include "tutorial.h"

static const char *const senders[] = {"ada", "bob", "cy"};

static char exchange[64], queue[64], stream[64];

/* ---- publishing, as the relay does: persistent, to the type's topic exchange, confirmed --- */

static int publish(hd_amqp *a, int from, int n, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    for (int i = from; i < from + n; i++) {
        hd_envelope *env = hd_envelope_new(
            "messages.message_sent", 1, "herald-users",
            json_pack("{s:s, s:s, s:s, s:{}, s:s}", "message_id", "-", "sender", senders[i % 3],
                      "content", "hello", "metadata", "sent_at", "2026-12-04T12:00:00Z"));
        char *body = NULL;
        size_t len = 0;
        int rc = hd_envelope_encode(env, &body, &len, err);
        hd_envelope_free(env);
        if (rc < 0)
            return rc;
        amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
        int status = amqp_basic_publish(st, hd_amqp_channel(a), amqp_cstring_bytes(exchange),
                                        amqp_cstring_bytes("messages.message_sent"), 1, 0, &p,
                                        (amqp_bytes_t){len, body});
        free(body);
        if ((rc = hd_amqp_check_status(a, status, "publish", err)) < 0)
            return rc;
    }
    /* wait for the broker's confirms: then both the queue and the stream hold them */
    int confirmed = 0;
    while (confirmed < n) {
        amqp_frame_t f;
        struct timeval tv = {10, 0};
        if (amqp_simple_wait_frame_noblock(st, &f, &tv) != AMQP_STATUS_OK)
            return hd_error_set(err, HD_ETIMEOUT, "no confirm");
        if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = f.payload.method.decoded;
            static uint64_t seen;
            confirmed += ack->multiple ? (int)(ack->delivery_tag - seen) : 1;
            seen = ack->delivery_tag;
        }
    }
    return 0;
}

/* ---- the queue: competing consumers -----------------------------------------------------------
 */

static hd_consume_result count_one(void *ctx, const hd_delivery *d)
{
    (void)d;
    ++*(int *)ctx;
    return HD_CONSUME_OK; /* the ack: the broker deletes the message */
}

static int drain_queue(const char *url, hd_error *err)
{
    int got[2] = {0, 0};
    hd_consumer *c[2] = {NULL, NULL};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        hd_consumer_options o = {
            .queue = queue, .handler = count_one, .ctx = &got[i], .prefetch = 1};
        rc = hd_consumer_open(url, &o, &c[i], err);
    }
    /* take turns until both found nothing for a while */
    for (int idle = 0; rc >= 0 && idle < 6;) {
        int a = hd_consumer_poll(c[0], 100, err);
        int b = a < 0 ? a : hd_consumer_poll(c[1], 100, err);
        rc = a < 0 ? a : b;
        idle = (a == 0 && b == 0) ? idle + 1 : 0;
    }
    hd_consumer_close(c[0]);
    hd_consumer_close(c[1]);
    if (rc < 0)
        return rc;
    printf("[3] queue: two competing consumers took A=%d B=%d, total=%d: each message went to "
           "ONE of them\n",
           got[0], got[1], got[0] + got[1]);
    /* a third consumer arriving now finds nothing: acked = deleted */
    int late = 0;
    hd_consumer *l = NULL;
    hd_consumer_options o = {.queue = queue, .handler = count_one, .ctx = &late, .prefetch = 1};
    if ((rc = hd_consumer_open(url, &o, &l, err)) < 0)
        return rc;
    rc = hd_consumer_poll(l, 500, err);
    hd_consumer_close(l);
    printf("[3] queue: a consumer that comes later gets %d: the acks deleted them\n", late);
    return rc < 0 ? rc : 0;
}

/* ---- the log: readers with offsets ---------------------------------------------------------- */

typedef struct projection {
    const char *name;
    int64_t fail_at; /* crash (roll back) when this offset comes; -1: never */
} projection;

/* messages per sender: the projection's row and the reader's offset commit together */
static int count_sender(void *ctx, hd_store *store, const hd_stream_record *rec, hd_error *err)
{
    projection *p = ctx;
    if (rec->offset == p->fail_at) {
        p->fail_at = -1;
        return hd_error_set(err, HD_EHANDLER, "the process died at offset %lld",
                            (long long)rec->offset);
    }
    json_t *doc = json_loadb(rec->body, rec->body_len, 0, NULL);
    const char *sender = json_string_value(json_object_get(json_object_get(doc, "data"), "sender"));
    hd_value v[] = {hd_value_text(p->name), hd_value_text(sender ? sender : "?")};
    int rc =
        hd_store_exec(store,
                      "INSERT INTO per_sender (projection, sender, messages) VALUES ($1, $2, 1)"
                      " ON CONFLICT (projection, sender) DO UPDATE"
                      " SET messages = per_sender.messages + 1",
                      v, 2, err);
    json_decref(doc);
    return rc < 0 ? rc : 0;
}

/* Read the log as reader `p` until nothing came for 700 ms. *handled: records applied. */
static int read_log(const char *url, hd_store *store, projection *p, hd_stream_start start,
                    uint64_t *handled, hd_error *err)
{
    hd_stream_consumer_options o = {.stream = stream,
                                    .consumer = p->name,
                                    .store = store,
                                    .handler = count_sender,
                                    .ctx = p,
                                    .start = start,
                                    .prefetch = 10};
    hd_stream_consumer *c = NULL;
    int rc = hd_stream_consumer_open(url, &o, &c, err);
    if (rc == 0)
        rc = hd_stream_consumer_run(c, NULL, 700, err);
    hd_stream_counts k = {0};
    hd_stream_consumer_get_counts(c, &k);
    hd_stream_consumer_close(c);
    *handled = k.handled;
    return rc;
}

static void print_rows(hd_store *store, const char *name, char *out, size_t cap)
{
    hd_value v[] = {hd_value_text(name)};
    hd_rows *rows = NULL;
    out[0] = '\0';
    if (hd_store_query(store,
                       "SELECT sender, messages FROM per_sender WHERE projection = $1"
                       " ORDER BY sender",
                       v, 1, &rows, NULL) < 0)
        return;
    size_t len = 0;
    for (size_t r = 0; r < hd_rows_count(rows); r++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s=%lld", r ? " " : "",
                                hd_rows_text(rows, r, 0), (long long)hd_rows_int(rows, r, 1));
    hd_rows_free(rows);
}

static int64_t offset_of(hd_store *store, const char *reader)
{
    int64_t v = -1;
    hd_stream_offset_load(store, reader, stream, &v, NULL);
    return v;
}

static int the_log(const char *url, hd_amqp *a, hd_error *err)
{
    hd_store *store = NULL;
    int rc = hd_store_open("sqlite::memory:", &store, err);
    if (rc == 0)
        rc = hd_stream_offsets_migrate(store, err);
    if (rc >= 0)
        rc = hd_store_exec(store,
                           "CREATE TABLE per_sender (projection TEXT, sender TEXT, messages BIGINT,"
                           " PRIMARY KEY (projection, sender))",
                           NULL, 0, err);
    if (rc < 0) {
        hd_store_close(store);
        return rc;
    }
    hd_stream_start first = {.from = HD_STREAM_FIRST};
    char rows[256], rows2[256];
    uint64_t n1 = 0, n2 = 0;
    projection counts = {"counts", -1}, audit = {"audit", -1};
    if ((rc = read_log(url, store, &counts, first, &n1, err)) < 0 ||
        (rc = read_log(url, store, &audit, first, &n2, err)) < 0)
        goto out;
    print_rows(store, "counts", rows, sizeof rows);
    printf("[4] log: reader 'counts' read %llu, reader 'audit' read %llu: every reader sees "
           "every message\n",
           (unsigned long long)n1, (unsigned long long)n2);
    printf("[4] log: counts per sender: %s; stored offset of 'counts' = %lld\n", rows,
           (long long)offset_of(store, "counts"));

    /* 3 more events: the reader resumes after its stored offset */
    if ((rc = publish(a, 12, 3, err)) < 0 ||
        (rc = read_log(url, store, &counts, first, &n1, err)) < 0)
        goto out;
    print_rows(store, "counts", rows, sizeof rows);
    printf("[5] 3 more published; 'counts' opened again resumes at offset 12 and reads %llu "
           "(not 15): %s\n",
           (unsigned long long)n1, rows);

    /* a crash in the middle: the transaction of offset 5 rolls back */
    projection crashy = {"crashy", 5};
    rc = read_log(url, store, &crashy, first, &n1, err);
    printf("[6] reader 'crashy' died at offset 5 (%s): %llu applied, stored offset %lld\n",
           hd_err_name(rc), (unsigned long long)n1, (long long)offset_of(store, "crashy"));
    if ((rc = read_log(url, store, &crashy, first, &n2, err)) < 0)
        goto out;
    print_rows(store, "crashy", rows2, sizeof rows2);
    printf("[6] restarted: resumed at offset 5, read %llu more: %s -- %s\n", (unsigned long long)n2,
           rows2, strcmp(rows, rows2) == 0 ? "exact, nothing lost, nothing twice" : "WRONG");

    /* replay: a fresh projection from offset 0, and one from offset 12 */
    projection replayed = {"replayed", -1}, tail = {"tail", -1};
    if ((rc = read_log(url, store, &replayed, (hd_stream_start){HD_STREAM_OFFSET, 0, 0}, &n1,
                       err)) < 0 ||
        (rc = read_log(url, store, &tail, (hd_stream_start){HD_STREAM_OFFSET, 12, 0}, &n2, err)) <
            0)
        goto out;
    print_rows(store, "replayed", rows2, sizeof rows2);
    printf("[7] replay from offset 0 into a fresh projection: %llu records, %s -- %s\n",
           (unsigned long long)n1, rows2, strcmp(rows, rows2) == 0 ? "the same rows" : "DIFFERENT");
    printf("[7] replay from offset 12: %llu records\n", (unsigned long long)n2);
    rc = 0;
out:
    hd_store_close(store);
    return rc;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    long run = (long)(hd_time_now_ms() % 1000000);
    snprintf(exchange, sizeof exchange, "t21-messages-%ld", run);
    snprintf(queue, sizeof queue, "t21-users.messages-%ld", run);
    snprintf(stream, sizeof stream, "t21-messages.log-%ld", run);
    hd_amqp *a = NULL;
    hd_error err;
    int rc = hd_amqp_open(url, NULL, &a, &err);
    if (rc < 0) {
        fprintf(stderr, "cannot connect: %s\n", err.text);
        return 1;
    }
    hd_exchange_spec ex = {.name = exchange, .type = HD_EXCHANGE_TOPIC};
    hd_queue_spec q = {.name = queue, .durable = 1};
    hd_stream_spec s = {.name = stream, .max_length_bytes = 10 * 1000 * 1000};
    hd_binding_spec bq = {.queue = queue, .exchange = exchange, .key = "messages.#"};
    hd_binding_spec bs = {.queue = stream, .exchange = exchange, .key = "messages.#"};
    if ((rc = hd_exchange_declare(a, &ex, &err)) == 0 &&
        (rc = hd_queue_declare(a, &q, NULL, &err)) == 0 &&
        (rc = hd_stream_declare(a, &s, &err)) == 0 && (rc = hd_queue_bind(a, &bq, &err)) == 0 &&
        (rc = hd_queue_bind(a, &bs, &err)) == 0) {
        amqp_confirm_select(hd_amqp_state(a), hd_amqp_channel(a));
        rc = hd_amqp_check_reply(a, amqp_get_rpc_reply(hd_amqp_state(a)), "confirm", &err);
    }
    if (rc == 0) {
        printf("[1] exchange %s: bound to it a queue (classic) and a stream (x-queue-type "
               "stream), key messages.#\n",
               exchange);
        rc = publish(a, 0, 12, &err);
    }
    if (rc == 0) {
        printf("[2] published 12 messages.message_sent (ada, bob, cy), confirmed: each is now in "
               "the queue AND in the log\n");
        rc = drain_queue(url, &err);
    }
    if (rc == 0)
        rc = the_log(url, a, &err);
    hd_queue_delete(a, queue, NULL, NULL);
    hd_queue_delete(a, stream, NULL, NULL);
    hd_exchange_delete(a, exchange, NULL);
    hd_amqp_close(a);
    if (rc < 0) {
        fprintf(stderr, "chapter 21 failed: %s\n", err.text);
        return 1;
    }
    printf("[8] queue, stream and exchange deleted\n");
    return 0;
}
