/* Chapter 11 — the relay: from the outbox to RabbitMQ, at least once.
 *
 * Chapter 10 put events into an outbox table in the business transaction and moved them
 * with a pretend relay. This chapter runs the real one (herald/relay.h) against a real
 * broker. One cycle of the relay is four steps, always in this order:
 *
 *   claim    lease a batch of due rows (a short transaction of its own)
 *   publish  each row, persistent + mandatory, on a channel in confirm mode
 *   confirm  wait for the broker's verdict on every message of the batch
 *   mark     the confirmed rows dispatched, in ONE transaction
 *
 * The program does one cycle by hand, so each step prints what it did, then lets
 * hd_relay_run_once do the same. Then it "crashes" a relay between publish and mark and
 * restarts it: the event is published twice, and a consumer with an inbox (chapter 12)
 * turns the two deliveries into one effect.
 *
 * Needs HD_AMQP_URL (make servers-up). The outbox is sqlite::memory:. Read along:
 * docs/tutorial/11-relay.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/publisher.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

#include "tutorial.h"

#define CRASH_LEASE_MS 400 /* the crashed relay's lease: short, so the chapter need not wait */

/* Fates of the hand-made cycle, counted by the publisher's callback. */
typedef struct fates {
    int confirmed, other;
} fates;

static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)user;
    (void)reason;
    fates *f = ctx;
    if (fate == HD_FATE_CONFIRMED)
        f->confirmed++;
    else
        f->other++;
}

/* A shop order was placed: the business change is left out, the event goes to the outbox
 * in its transaction (chapter 10). */
static int place_order(hd_store *store, int n, hd_error *err)
{
    char id[32];
    snprintf(id, sizeof id, "order-%d", n);
    hd_envelope *env =
        hd_envelope_new("shop.order_placed", 1, "/shop",
                        json_pack("{s:s, s:i}", "order_id", id, "total_cents", 1000 * n));
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_store_begin(store, err);
    if (rc == 0 && (rc = hd_outbox_append(store, env, "order", id, err)) < 0)
        hd_store_rollback(store, NULL);
    else if (rc == 0)
        rc = hd_store_commit(store, err);
    hd_envelope_free(env);
    return rc;
}

/* Claim, publish and confirm by hand, as the relay does. Marks the rows unless `crash`. */
static int cycle_by_hand(hd_store *store, hd_publisher *pub, fates *f, const char *exchange,
                         int64_t lease_ms, int crash, hd_error *err)
{
    hd_outbox_batch *b = NULL;
    hd_outbox_claim_opts co = {.relay_id = "by-hand", .lease_ms = lease_ms};
    int rc = hd_outbox_claim(store, 100, &co, &b, err);
    if (rc < 0)
        return rc;
    if (b->count == 0) { /* nothing pending: the chapter appended rows, so this is a bug */
        hd_outbox_batch_free(b);
        return hd_error_set(err, HD_ESTATE, "claim: no pending row to claim");
    }
    printf("    claim:   %zu rows, seq %lld..%lld, leased for %lld ms\n", b->count,
           (long long)b->messages[0].seq, (long long)b->messages[b->count - 1].seq,
           (long long)lease_ms);
    f->confirmed = f->other = 0;
    for (size_t i = 0; i < b->count; i++) {
        const hd_outbox_message *m = &b->messages[i];
        /* What the relay sets: the stored CloudEvents JSON as the body, the event id as the
         * message id (consumers deduplicate on it), the type as the routing key. */
        hd_message msg = {.exchange = exchange,
                          .routing_key = m->type,
                          .body = m->payload,
                          .len = m->payload_len,
                          .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
                          .type = m->type,
                          .message_id = m->event_id};
        if ((rc = hd_publisher_publish(pub, &msg, NULL, err)) < 0)
            goto out;
    }
    printf("    publish: %zu messages, persistent + mandatory, to exchange '%s'\n", b->count,
           exchange);
    if ((rc = hd_publisher_wait(pub, 5000, err)) < 0)
        goto out;
    printf("    confirm: %d confirmed, %d not\n", f->confirmed, f->other);
    if (crash) {
        printf("    mark:    -- the relay dies here: %zu rows published, none marked --\n",
               b->count);
        goto out;
    }
    int64_t seqs[100];
    for (size_t i = 0; i < b->count; i++)
        seqs[i] = b->messages[i].seq;
    if ((rc = hd_outbox_mark_dispatched(store, seqs, b->count, err)) < 0)
        goto out;
    printf("    mark:    %d rows dispatched, in one transaction\n", rc);
    rc = 0;
out:
    hd_outbox_batch_free(b);
    return rc;
}

static int64_t pending(hd_store *store)
{
    int64_t n = -1;
    if (hd_outbox_depth(store, &n, NULL, NULL, NULL) < 0)
        return -1;
    return n;
}

static long in_queue(hd_amqp *a, const char *queue)
{
    hd_queue_info info;
    if (hd_queue_inspect(a, queue, &info, NULL) < 0)
        return -1;
    return (long)info.message_count;
}

/* A consumer with an inbox (chapter 12): accept the message id and write the effect in one
 * transaction, then ack. Counts deliveries and effects. */
static int consume_all(hd_amqp *a, const char *queue, hd_store *cs, int *deliveries, int *effects,
                       hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    for (;;) {
        amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 0);
        int rc = hd_amqp_check_reply(a, r, "basic.get", err);
        if (rc < 0)
            return rc;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            return 0;
        uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
        amqp_message_t msg;
        if ((rc = hd_amqp_check_reply(a, amqp_read_message(st, ch, &msg, 0), "read", err)) < 0)
            return rc;
        char id[64];
        snprintf(id, sizeof id, "%.*s", (int)msg.properties.message_id.len,
                 (char *)msg.properties.message_id.bytes);
        amqp_destroy_message(&msg);
        (*deliveries)++;

        if ((rc = hd_store_begin(cs, err)) < 0)
            return rc;
        int fresh = hd_inbox_accept(cs, "shipping", id, err);
        if (fresh == 1) {
            hd_value p[] = {hd_value_text(id)};
            rc = hd_store_exec(cs, "INSERT INTO shipments(event_id) VALUES ($1)", p, 1, err);
        } else {
            rc = fresh;
        }
        if (rc < 0) {
            hd_store_rollback(cs, NULL);
            return rc;
        }
        if ((rc = hd_store_commit(cs, err)) < 0)
            return rc;
        if (fresh == 1)
            (*effects)++;
        if (amqp_basic_ack(st, ch, tag, 0) != AMQP_STATUS_OK) /* after the commit, never before */
            return hd_error_set(err, HD_ECLOSED, "ack failed");
    }
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    /* Names of our own, so that runs on a shared broker do not meet. */
    char exchange[64], queue[64];
    snprintf(exchange, sizeof exchange, "tutorial11-%d-shop", (int)getpid());
    snprintf(queue, sizeof queue, "tutorial11-%d-shipping", (int)getpid());

    int rc = 1;
    hd_error err;
    hd_store *store = NULL, *cs = NULL;
    hd_amqp *a = NULL, *pa = NULL;
    hd_publisher *pub = NULL;
    hd_relay *relay = NULL, *restarted = NULL;
    fates f = {0};

    /* 1. The service's database with its outbox; two broker connections: one for the
     * topology and the consumer, one for publishing (a publisher reads every frame of its
     * connection). */
    if (hd_store_open("sqlite::memory:", &store, &err) < 0 || hd_outbox_migrate(store, &err) < 0 ||
        hd_amqp_open(url, NULL, &a, &err) < 0 || hd_amqp_open(url, NULL, &pa, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    printf("[1] outbox in sqlite::memory:, connected to %s\n", hd_amqp_url_text(a));

    /* 2. Where the events go. The relay's default would be the exchange named after the
     * type's topic, "shop"; the chapter uses a name of its own. */
    char topic[64];
    if (hd_relay_exchange_for("shop.order_placed", topic, sizeof topic) < 0) {
        fprintf(stderr, "hd_relay_exchange_for: no exchange for shop.order_placed\n");
        goto out;
    }
    hd_exchange_spec ex = {.name = exchange, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = queue, .durable = 1};
    hd_binding_spec bs = {.queue = queue, .exchange = exchange, .key = "shop.#"};
    if (hd_exchange_declare(a, &ex, &err) < 0 || hd_queue_declare(a, &qs, NULL, &err) < 0 ||
        hd_queue_bind(a, &bs, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto out;
    }
    printf("[2] shop.order_placed -> exchange '%s' (default: '%s'), queue bound with 'shop.#'\n",
           exchange, topic);

    /* 3. Three orders, each event appended in its order's transaction. */
    for (int i = 1; i <= 3; i++)
        if (place_order(store, i, &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
    printf("[3] 3 orders placed: outbox pending=%lld, queue=%ld\n", (long long)pending(store),
           in_queue(a, queue));

    /* 4. One relay cycle by hand. */
    hd_publisher_options po = {.window = 100, .on_fate = on_fate, .ctx = &f};
    if (hd_publisher_new(pa, &po, &pub, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[4] one relay cycle, step by step:\n");
    if (cycle_by_hand(store, pub, &f, exchange, 30000, 0, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[4] outbox pending=%lld, queue=%ld\n", (long long)pending(store), in_queue(a, queue));
    hd_publisher_free(pub); /* the relay brings its own */
    pub = NULL;

    /* 5. The same cycle in one call. */
    for (int i = 4; i <= 5; i++)
        if (place_order(store, i, &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
    hd_relay_options ro = {.exchange = exchange, .relay_id = "relay-1"};
    hd_relay_stats c;
    if (hd_relay_new(store, pa, &ro, &relay, &err) < 0 || hd_relay_run_once(relay, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[5] hd_relay_run_once: claimed %llu, published %llu, confirmed %llu, marked; "
           "pending=%lld, queue=%ld\n",
           (unsigned long long)c.claimed, (unsigned long long)c.published,
           (unsigned long long)c.confirmed, (long long)pending(store), in_queue(a, queue));
    hd_relay_free(relay);
    relay = NULL;

    /* 6. A relay that dies between publish and mark. */
    for (int i = 6; i <= 7; i++)
        if (place_order(store, i, &err) < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto cleanup;
        }
    if (hd_publisher_new(pa, &po, &pub, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[6] 2 more orders; a relay cycle that crashes:\n");
    if (cycle_by_hand(store, pub, &f, exchange, CRASH_LEASE_MS, 1, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    hd_publisher_free(pub);
    pub = NULL;
    printf("[6] after the crash: pending=%lld (leased to the dead relay), queue=%ld\n",
           (long long)pending(store), in_queue(a, queue));

    /* 7. The relay restarts. The rows are still leased: nobody may take them until the
     * lease runs out, because nobody can tell a dead relay from a slow one. */
    ro.relay_id = "relay-2";
    if (hd_relay_new(store, pa, &ro, &restarted, &err) < 0 ||
        hd_relay_run_once(restarted, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[7] restarted relay: claimed %llu (the rows are leased for %d ms)\n",
           (unsigned long long)c.claimed, CRASH_LEASE_MS);
    hd_sleep_ms(CRASH_LEASE_MS + 100);
    if (hd_relay_run_once(restarted, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[7] after the lease: claimed %llu, confirmed %llu: pending=%lld, queue=%ld for 7 "
           "events\n",
           (unsigned long long)c.claimed, (unsigned long long)c.confirmed,
           (long long)pending(store), in_queue(a, queue));

    /* 8. The consumer: 9 deliveries, 7 events. The inbox makes it 7 effects. */
    int deliveries = 0, effects = 0;
    if (hd_store_open("sqlite::memory:", &cs, &err) < 0 || hd_inbox_migrate(cs, &err) < 0 ||
        hd_store_exec(cs, "CREATE TABLE shipments (event_id TEXT NOT NULL)", NULL, 0, &err) < 0 ||
        consume_all(a, queue, cs, &deliveries, &effects, &err) < 0) {
        fprintf(stderr, "%s\n", err.text);
        goto cleanup;
    }
    printf("[8] consumer with an inbox: %d deliveries, %d shipments, %d duplicates skipped\n",
           deliveries, effects, deliveries - effects);
    if (deliveries != 9 || effects != 7) {
        fprintf(stderr, "expected 9 deliveries and 7 shipments\n");
        goto cleanup;
    }
    rc = 0;

cleanup:
    if (a != NULL && hd_amqp_is_open(a)) {
        if (hd_queue_delete(a, queue, NULL, &err) < 0 ||
            hd_exchange_delete(a, exchange, &err) < 0) {
            fprintf(stderr, "cleanup: %s\n", err.text);
            rc = 1;
        } else if (rc == 0) {
            printf("[9] deleted the queue and the exchange\n");
        }
    }
out:
    hd_relay_free(restarted);
    hd_relay_free(relay);
    hd_publisher_free(pub);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(cs);
    hd_store_close(store);
    return rc;
}
