/* Chapter 19 — Redis pub/sub: the bus that forgets.
 *
 * The seeds' online chat carries its events over Redis pub/sub (herald/bus_redis.h). It is
 * the same bus interface as chapter 6's RabbitMQ bus — a topic, consumers registering for
 * event types — and for a chat it is enough. This chapter shows what it does NOT promise,
 * by counting: the same events go to a subscriber that restarts halfway, once over Redis
 * and once over the path of chapters 10-12 (outbox -> relay -> durable queue -> inbox).
 *
 * Steps: the mapping (a topic is a channel prefix); two consumers and who got what;
 * a PUBLISH nobody hears; a handler's RETRY that goes nowhere; then the restart, twice, and
 * the counts side by side. Needs HD_REDIS_URL and HD_AMQP_URL (make servers-up).
 * docs/tutorial/19-redis-pubsub.md explains the why.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/bus_rabbit.h"
#include "herald/bus_redis.h"
#include "herald/clock.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

#include "tutorial.h"

#define TYPE      "chat.message_posted"
#define N         20
#define DOWN_FROM 8
#define DOWN_TO   14 /* events 8..13 are sent while the subscriber is down */

static int fail(const char *what, const hd_error *err)
{
    fprintf(stderr, "%s failed: %s (%s)\n", what, err->text, hd_err_name(err->code));
    return 1;
}

/* ---- steps 2-5: the bus ------------------------------------------------------------------ */

typedef struct listener {
    const char *name;
    char got[256];
    int retry; /* answer RETRY */
} listener;

static hd_consume_result on_chat(void *ctx, const hd_delivery *d)
{
    listener *l = ctx;
    size_t n = strlen(l->got);
    snprintf(l->got + n, sizeof l->got - n, "%s%s", n ? " " : "", d->routing_key);
    return l->retry ? HD_CONSUME_RETRY : HD_CONSUME_OK;
}

static hd_envelope *chat_event(const char *type, int seq)
{
    return hd_envelope_new(type, 1, "/tutorial19",
                           json_pack("{s:i, s:s}", "seq", seq, "room", "lobby"));
}

static int send_type(hd_bus *bus, const char *topic, const char *type, hd_error *err)
{
    hd_envelope *env = chat_event(type, 0);
    int rc = env ? hd_bus_send(bus, topic, env, err) : HD_ENOMEM;
    hd_envelope_free(env);
    return rc;
}

static void poll_a_while(hd_bus *bus, int ms)
{
    int64_t end = hd_clock_ms() + ms;
    while (hd_clock_ms() < end)
        (void)hd_bus_poll(bus, 20, NULL);
}

/* ---- steps 6-7: the restart ------------------------------------------------------------- */

static const char *const archive_schema[] = {
    "CREATE TABLE archive (message_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
};

/* The chat archive: one row per message, through the inbox, in one transaction. */
typedef struct archive {
    hd_store *store;
    int deliveries;
    int skipped;      /* duplicates the inbox recognised */
    int fail_once_at; /* this delivery answers RETRY after its commit (a crash before the ack) */
} archive;

static int64_t rows(hd_store *store, const char *sql)
{
    hd_rows *r = NULL;
    if (hd_store_query(store, sql, NULL, 0, &r, NULL) < 0)
        return -1;
    int64_t n = hd_rows_int(r, 0, 0);
    hd_rows_free(r);
    return n;
}

static hd_consume_result on_archive(void *ctx, const hd_delivery *d)
{
    archive *a = ctx;
    a->deliveries++;
    json_t *body = json_loadb(d->body, d->body_len, 0, NULL);
    json_int_t seq = json_integer_value(json_object_get(json_object_get(body, "data"), "seq"));
    json_decref(body);
    if (d->message_id == NULL || hd_store_begin(a->store, NULL) < 0)
        return HD_CONSUME_RETRY;
    int fresh = hd_inbox_accept(a->store, "archive", d->message_id, NULL);
    int rc = fresh < 0 ? fresh : HD_OK;
    if (fresh == 1) {
        hd_value p[] = {hd_value_text(d->message_id), hd_value_int(seq)};
        rc = hd_store_exec(a->store, "INSERT INTO archive(message_id, seq) VALUES ($1, $2)", p, 2,
                           NULL);
    } else if (fresh == 0) {
        a->skipped++;
    }
    if (rc < 0) {
        hd_store_rollback(a->store, NULL);
        return HD_CONSUME_RETRY;
    }
    if (hd_store_commit(a->store, NULL) < 0)
        return HD_CONSUME_RETRY;
    return a->deliveries == a->fail_once_at ? HD_CONSUME_RETRY : HD_CONSUME_OK;
}

static int archive_open(archive *a, int fail_once_at, hd_error *err)
{
    memset(a, 0, sizeof *a);
    a->fail_once_at = fail_once_at;
    int rc = hd_store_open("sqlite::memory:", &a->store, err);
    if (rc == HD_OK && (rc = hd_store_migrate(a->store, "tutorial19", archive_schema, 1, err)) >= 0)
        rc = hd_inbox_migrate(a->store, err);
    return rc < 0 ? rc : HD_OK;
}

static void poll_until(hd_bus *bus, archive *a, int64_t want, int settle_ms)
{
    int64_t end = hd_clock_ms() + 10000;
    while (rows(a->store, "SELECT COUNT(*) FROM archive") < want && hd_clock_ms() < end)
        (void)hd_bus_poll(bus, 50, NULL);
    poll_a_while(bus, settle_ms);
}

/* Poll until nothing new has arrived for quiet_ms: the subscriber cannot know how much it
 * missed, so it can only wait for the silence. */
static void poll_until_quiet(hd_bus *bus, archive *a, int quiet_ms)
{
    int64_t last = hd_clock_ms();
    int seen = a->deliveries;
    while (hd_clock_ms() - last < quiet_ms) {
        (void)hd_bus_poll(bus, 50, NULL);
        if (a->deliveries != seen) {
            seen = a->deliveries;
            last = hd_clock_ms();
        }
    }
}

/* A subscriber's bus, made, registered and started: what a process does when it starts. */
typedef int (*make_bus_fn)(const char *url, hd_bus **out, hd_error *err);

static int make_redis(const char *url, hd_bus **out, hd_error *err)
{
    return hd_bus_redis_new(url, NULL, out, err);
}

static int make_rabbit(const char *url, hd_bus **out, hd_error *err)
{
    static hd_retry_policy policy = {.max_attempts = 3, .ntiers = 1, .tier_ms = {200}};
    hd_bus_rabbit_options o = {.retry = &policy, .prefetch = 10};
    return hd_bus_rabbit_new(url, &o, out, err);
}

static hd_bus *start_subscriber(make_bus_fn make, const char *url, const char *topic, archive *a,
                                hd_error *err)
{
    hd_bus *bus = NULL;
    const char *types[] = {TYPE};
    if (make(url, &bus, err) < 0)
        return NULL;
    if (hd_bus_register(bus, "archive", topic, types, 1, on_archive, a, err) < 0 ||
        hd_bus_startup(bus, err) < 0) {
        hd_bus_free(bus);
        return NULL;
    }
    return bus;
}

/* The producer's side, for each flow: send event `seq` however that flow sends. */
typedef struct producer {
    hd_bus *bus;      /* Redis: hd_bus_send straight away */
    hd_store *outbox; /* RabbitMQ: the outbox in the business transaction ... */
    hd_relay *relay;  /* ... and the relay to the broker */
    const char *topic;
} producer;

static int produce(producer *p, int seq, hd_error *err)
{
    hd_envelope *env = chat_event(TYPE, seq);
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, "event");
    int rc;
    if (p->bus != NULL) {
        rc = hd_bus_send(p->bus, p->topic, env, err);
    } else {
        rc = hd_store_begin(p->outbox, err);
        if (rc == HD_OK && (rc = hd_outbox_append(p->outbox, env, "room", "lobby", err)) == HD_OK)
            rc = hd_store_commit(p->outbox, err);
        else if (hd_store_in_transaction(p->outbox))
            hd_store_rollback(p->outbox, NULL);
        if (rc == HD_OK)
            rc = hd_relay_run_once(p->relay, NULL, err);
    }
    hd_envelope_free(env);
    return rc < 0 ? rc : HD_OK;
}

typedef struct outcome {
    int64_t received, lost;
    int deliveries, skipped;
    char missing[128];
} outcome;

/* N events; the subscriber is stopped before event DOWN_FROM and started again before
 * event DOWN_TO, as a deploy would do it. */
static int restart_run(const char *name, make_bus_fn make, const char *url, producer *p, archive *a,
                       outcome *o, hd_error *err)
{
    hd_bus *sub = start_subscriber(make, url, p->topic, a, err);
    if (sub == NULL)
        return err->code;
    for (int i = 1; i <= N; i++) {
        if (i == DOWN_FROM) {
            poll_until(sub, a, DOWN_FROM - 1, 0); /* what was sent so far is handled */
            hd_bus_free(sub);
            sub = NULL;
            printf("    %-8s event %2d: subscriber stopped\n", name, i);
        }
        if (i == DOWN_TO) {
            if ((sub = start_subscriber(make, url, p->topic, a, err)) == NULL)
                return err->code;
            printf("    %-8s event %2d: subscriber started again\n", name, i);
        }
        int rc = produce(p, i, err);
        if (rc < 0) {
            hd_bus_free(sub);
            return rc;
        }
    }
    poll_until_quiet(sub, a, 600); /* 600 ms: time for a redelivery to come back */
    if (make == make_rabbit)
        (void)hd_bus_rabbit_undeclare(sub, NULL); /* leave the shared broker as we found it */
    hd_bus_free(sub);

    o->received = rows(a->store, "SELECT COUNT(DISTINCT seq) FROM archive");
    o->lost = N - o->received;
    o->deliveries = a->deliveries;
    o->skipped = a->skipped;
    /* Which ones are missing, as ranges of seq. */
    o->missing[0] = '\0';
    int from = 0;
    for (int i = 1; i <= N + 1; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM archive WHERE seq = %d", i);
        int have = i > N || rows(a->store, sql) > 0;
        if (!have && from == 0)
            from = i;
        if (have && from != 0) {
            size_t n = strlen(o->missing);
            snprintf(o->missing + n, sizeof o->missing - n, "%s%d..%d", n ? ", " : "", from, i - 1);
            from = 0;
        }
    }
    if (o->missing[0] == '\0')
        snprintf(o->missing, sizeof o->missing, "none");
    return HD_OK;
}

int main(void)
{
    hd_error err;
    hd_error_clear(&err);
    const char *redis_url = tutorial_require_env("HD_REDIS_URL");
    const char *amqp_url = tutorial_require_env("HD_AMQP_URL");
    if (redis_url == NULL || amqp_url == NULL)
        return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* bus_redis.h, "Known limits" */
    char shown[300];
    hd_bus_redis_url_redact(redis_url, shown, sizeof shown);
    printf("[1] Redis at %s (the password never printed)\n", shown);

    /* [2] the vocabulary of chapter 6, on Redis */
    char topic[64], channel[128];
    snprintf(topic, sizeof topic, "tutorial19-%d-chat", (int)getpid());
    hd_bus *bus = NULL;
    if (hd_bus_redis_new(redis_url, NULL, &bus, &err) < 0)
        return fail("redis bus", &err);
    listener room = {.name = "room"}, audit = {.name = "audit"};
    const char *room_types[] = {TYPE};
    const char *audit_types[] = {"chat.*"};
    if (hd_bus_register(bus, "room", topic, room_types, 1, on_chat, &room, &err) < 0 ||
        hd_bus_register(bus, "audit", topic, audit_types, 1, on_chat, &audit, &err) < 0 ||
        hd_bus_startup(bus, &err) < 0)
        return fail("register and start", &err);
    hd_bus_redis_channel(topic, TYPE, channel, sizeof channel);
    printf("[2] the integration event bus (%s): topic '%s' = a channel prefix\n", hd_bus_name(bus),
           topic);
    printf("    consumer room   SUBSCRIBE  %s\n", channel);
    printf("    consumer audit  PSUBSCRIBE %s:*  (chat.* is matched by the bus, as on "
           "RabbitMQ)\n",
           topic);

    /* [3] who got what */
    if (send_type(bus, topic, TYPE, &err) < 0 ||
        send_type(bus, topic, "chat.room_opened", &err) < 0)
        return fail("send", &err);
    poll_a_while(bus, 300);
    printf("[3] sent chat.message_posted and chat.room_opened: room got [%s], audit got [%s]\n",
           room.got, audit.got);

    /* [4] nobody listening: Redis says so, and forgets */
    hd_bus_redis_counts before, after;
    hd_bus_redis_get_counts(bus, &before);
    char lonely[80];
    snprintf(lonely, sizeof lonely, "tutorial19-%d-nobody", (int)getpid());
    if (send_type(bus, lonely, TYPE, &err) < 0)
        return fail("send", &err);
    hd_bus_redis_get_counts(bus, &after);
    printf("[4] PUBLISH to topic '%s' (nobody subscribed): received by %s — kept nowhere, "
           "gone\n",
           lonely, after.sent_unheard - before.sent_unheard == 1 ? "0 clients" : "someone?!");

    /* [5] a handler that fails: pub/sub cannot give the message back */
    room.retry = 1;
    room.got[0] = '\0';
    if (send_type(bus, topic, TYPE, &err) < 0)
        return fail("send", &err);
    poll_a_while(bus, 300);
    printf("[5] room answered RETRY to [%s]", room.got);
    room.got[0] = '\0';
    poll_a_while(bus, 700);
    hd_bus_redis_get_counts(bus, &after);
    printf(", then got [%s] in 700 ms: failed=%llu, dropped — no redelivery, no dead-letter "
           "queue\n",
           room.got, (unsigned long long)after.failed);
    hd_bus_free(bus);

    /* [6] the restart over Redis */
    printf("[6] %d events, the subscriber down for events %d..%d (%d events):\n", N, DOWN_FROM,
           DOWN_TO - 1, DOWN_TO - DOWN_FROM);
    archive ar;
    outcome redis_out, rabbit_out;
    producer rp = {.topic = topic};
    if (archive_open(&ar, 0, &err) < 0)
        return fail("archive", &err);
    if (hd_bus_redis_new(redis_url, NULL, &rp.bus, &err) < 0 || hd_bus_startup(rp.bus, &err) < 0)
        return fail("redis producer", &err);
    if (restart_run("redis", make_redis, redis_url, &rp, &ar, &redis_out, &err) < 0)
        return fail("redis run", &err);
    hd_bus_redis_get_counts(rp.bus, &after);
    printf("    redis    the publisher was told: %llu of %llu heard by nobody\n",
           (unsigned long long)after.sent_unheard, (unsigned long long)after.sent);
    hd_bus_free(rp.bus);
    hd_store_close(ar.store);

    /* [7] the same restart over outbox -> relay -> queue -> inbox; one delivery is handled
     * and not acknowledged (a crash between commit and ack) */
    archive aq;
    producer qp = {.topic = topic};
    hd_amqp *amqp = NULL;
    hd_relay_options ro = {.exchange = topic, .retention_ms = -1};
    if (archive_open(&aq, 5, &err) < 0 || hd_store_open("sqlite::memory:", &qp.outbox, &err) < 0 ||
        hd_outbox_migrate(qp.outbox, &err) < 0 || hd_amqp_open(amqp_url, NULL, &amqp, &err) < 0 ||
        hd_relay_new(qp.outbox, amqp, &ro, &qp.relay, &err) < 0)
        return fail("queue flow", &err);
    printf("[7] the same over outbox -> relay -> RabbitMQ queue -> inbox; delivery 5 is handled "
           "and its ack lost:\n");
    if (restart_run("rabbitmq", make_rabbit, amqp_url, &qp, &aq, &rabbit_out, &err) < 0)
        return fail("rabbitmq run", &err);
    (void)hd_exchange_delete(amqp, topic, NULL);
    hd_relay_free(qp.relay);
    hd_amqp_close(amqp);
    hd_store_close(qp.outbox);
    hd_store_close(aq.store);

    /* [8] side by side */
    printf("[8] flow                        sent  received  lost  missing   deliveries  "
           "skipped by inbox\n");
    printf("    redis pub/sub                 %2d        %2lld    %2lld  %-8s  %10d  %16d\n", N,
           (long long)redis_out.received, (long long)redis_out.lost, redis_out.missing,
           redis_out.deliveries, redis_out.skipped);
    printf("    outbox+rabbitmq+inbox         %2d        %2lld    %2lld  %-8s  %10d  %16d\n", N,
           (long long)rabbit_out.received, (long long)rabbit_out.lost, rabbit_out.missing,
           rabbit_out.deliveries, rabbit_out.skipped);
    if (redis_out.lost != DOWN_TO - DOWN_FROM || rabbit_out.lost != 0) {
        fprintf(stderr, "unexpected counts\n");
        return 1;
    }
    printf("[9] done: pub/sub lost exactly the %d events sent while the subscriber was down; "
           "the queue lost 0 and applied its one redelivery once\n",
           DOWN_TO - DOWN_FROM);
    return 0;
}
