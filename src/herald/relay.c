/* relay.c — the outbox relay; see relay.h.
 *
 * A claimed batch travels in a FLIGHT: the batch, one small record per row (struct item:
 * where it goes and what happened to it) and the batch's counts. The publisher reports each
 * message's fate through on_fate with the flight and the row's index as its user pointer;
 * once every fate of a batch is in, settle_tx turns the records into one database
 * transaction. hd_relay_run_once runs one flight from claim to mark; hd_relay_run keeps two
 * (see "Two batches in flight" in relay.h), so the records of batch k and batch k+1 live
 * side by side. Everything a flight needs is allocated once, in hd_relay_new, for a full
 * batch: a relay that runs for months does not allocate per message except for failure
 * reasons.
 */
#include "herald/relay.h"
#include "herald/jsonr.h"

#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "herald/backoff.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/publisher.h"
#include "herald/store_pg.h"
#include "herald/topology.h"

#define WINDOW_MAX            1000000 /* the publisher's own limit */
#define WAIT_SLICE_MS         250     /* the retry interval of a lost LISTEN connection */
#define AWAIT_SLICE_MS        1       /* waits for batch k's fates while k+1 is in flight */
#define SETTLE_TRIES          3       /* a mark refused with HD_EBUSY is tried again this often */
#define STORE_BACKOFF_BASE_MS 200
#define STORE_BACKOFF_CAP_MS  10000

enum item_state {
    ITEM_UNPUBLISHED = 0, /* not handed to the broker (yet): released at the end */
    ITEM_PUBLISHED,       /* on the wire, fate not known yet */
    ITEM_CONFIRMED,
    ITEM_RETURNED,
    ITEM_NACKED,
    ITEM_LOST,
    ITEM_REFUSED /* refused before publishing (exchange declare, malformed): a failure */
};

typedef struct item {
    int state;            /* enum item_state */
    const char *exchange; /* borrowed from the exchange cache; NULL until known */
    char *reason;         /* new (malloc): why it failed; NULL when it did not */
    int parked;           /* set by settle: mark_failed parked the row */
    int64_t published_ns; /* hd_clock_ns when handed to the publisher: the confirm latency */
} item;

/* One claimed batch on its way from claim to mark. */
typedef struct flight {
    hd_outbox_batch *batch; /* new: the claimed rows; NULL while the flight is empty */
    item *items;            /* opts.batch of them, one per row */
    size_t unsettled;       /* messages published whose fate has not come yet */
    uint64_t cycle_no;      /* the relay's claim number (one exchange refusal per claim) */
    int broken;             /* what stopped publishing or waiting (HD_ECLOSED...), 0: nothing */
    hd_error why;           /* and why */
    hd_relay_stats c;       /* this batch's counts, added to the totals when it is marked */
} flight;

/* An exchange this relay has declared: name and the connection generation it was declared
 * on (0 = not on the current one). Exchanges survive reconnects, but a broker that lost its
 * data would not have them, so a new connection declares again (one RPC per exchange). */
typedef struct exchange_entry {
    char *name;
    unsigned generation;
    uint64_t refused_cycle; /* the cycle in which declaring it failed (0: never) */
    char *refusal;          /* why, for the rows of that cycle */
} exchange_entry;

struct hd_relay {
    hd_store *store; /* borrowed */
    hd_amqp *amqp;   /* borrowed */
    hd_relay_options opts;
    char id[HD_RELAY_ID_MAX + 1];
    char *exchange; /* copy of opts.exchange, or NULL */
    hd_publisher *pub;
    hd_backoff backoff; /* retry delays of failed rows */

    /* Two flights: hd_relay_run publishes batch k+1 in one while the broker confirms batch
     * k in the other; hd_relay_run_once uses the first. */
    flight flights[2];
    uint64_t cycle_no; /* claims that returned rows */
    uint64_t fates;    /* fates reported so far: progress, seen by await_batch */
    int64_t *seqs_ok;  /* opts.batch each: rows to mark dispatched, rows to release */
    int64_t *seqs_release;

    exchange_entry *exchanges;
    size_t n_exchanges, cap_exchanges;

    int listening; /* LISTEN hd_outbox is active (PostgreSQL) */
    uint64_t seen; /* the notifier's counter at the last wake-up */

    /* Handed rows (relay.h): the token offered on the notifier, whether it is offered now,
     * the last seq taken (every row handed under the token comes after it), and whose turn
     * the next batch is: handed rows, or a claim of the others. */
    int handoff; /* a notifier, SQLite and not options.no_handoff */
    char token[HD_OUTBOX_TOKEN_MAX + 1];
    int offered;
    int cursor_set;
    int64_t handed_after;
    int claim_turn;

    pthread_mutex_t lock; /* guards totals: read by other threads (metrics) */
    hd_relay_stats totals;
};

/* ---- options --------------------------------------------------------------------------- */

int hd_relay_options_resolve(const hd_relay_options *in, hd_relay_options *out, hd_error *err)
{
    hd_relay_options o;
    if (in != NULL)
        o = *in;
    else
        memset(&o, 0, sizeof o);
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "relay options: out is NULL");

    if (o.batch == 0)
        o.batch = HD_RELAY_BATCH_DEFAULT;
    if (o.batch > HD_OUTBOX_BATCH_MAX)
        return hd_error_set(err, HD_EINVAL, "relay batch %zu is above %d", o.batch,
                            HD_OUTBOX_BATCH_MAX);
    if (o.window == 0)
        o.window = o.batch;
    if (o.window > WINDOW_MAX)
        return hd_error_set(err, HD_EINVAL, "relay window %zu is above %d", o.window, WINDOW_MAX);
    if (o.poll_ms < 0 || o.lease_ms < 0 || o.confirm_timeout_ms < 0 || o.max_attempts < 0 ||
        o.backoff_base_ms < 0 || o.backoff_cap_ms < 0 || o.purge_every_ms < 0)
        return hd_error_set(err, HD_EINVAL,
                            "relay options: poll, lease, confirm timeout, max attempts, backoff "
                            "and purge interval cannot be negative");
    if (o.poll_ms == 0)
        o.poll_ms = HD_RELAY_POLL_MS_DEFAULT;
    if (o.lease_ms == 0)
        o.lease_ms = HD_OUTBOX_LEASE_DEFAULT_MS;
    if (o.confirm_timeout_ms == 0) {
        /* A third of the lease leaves time to mark after a slow confirm, before another
         * relay may take the rows over. */
        int64_t t = o.lease_ms / 3;
        o.confirm_timeout_ms = (int)(t > 30000 ? 30000 : t < 1 ? 1 : t);
    }
    if (o.confirm_timeout_ms >= o.lease_ms)
        return hd_error_set(err, HD_EINVAL,
                            "relay confirm timeout (%d ms) must be below the lease (%lld ms): "
                            "rows whose lease ran out may be published by another relay",
                            o.confirm_timeout_ms, (long long)o.lease_ms);
    if (o.max_attempts == 0)
        o.max_attempts = HD_RELAY_MAX_ATTEMPTS_DEFAULT;
    if (o.backoff_base_ms == 0)
        o.backoff_base_ms = HD_RELAY_BACKOFF_BASE_DEFAULT;
    if (o.backoff_cap_ms == 0)
        o.backoff_cap_ms = HD_RELAY_BACKOFF_CAP_DEFAULT;
    if (o.exchange != NULL && *o.exchange == '\0')
        o.exchange = NULL;
    if (o.exchange != NULL && strlen(o.exchange) > HD_AMQP_NAME_MAX)
        return hd_error_set(err, HD_EINVAL, "relay exchange name is longer than %d bytes",
                            HD_AMQP_NAME_MAX);
    if (o.relay_id != NULL && (*o.relay_id == '\0' || strlen(o.relay_id) > HD_RELAY_ID_MAX))
        return hd_error_set(err, HD_EINVAL, "relay id must have 1 to %d bytes", HD_RELAY_ID_MAX);
    if (o.retention_ms == 0)
        o.retention_ms = HD_RELAY_RETENTION_DEFAULT;
    if (o.retention_ms < 0)
        o.retention_ms = -1;
    if (o.sensitive_retention_ms == 0)
        o.sensitive_retention_ms = HD_RELAY_SENSITIVE_RETENTION_DEFAULT;
    if (o.sensitive_retention_ms < 0)
        o.sensitive_retention_ms = -1;
    if (o.purge_every_ms == 0)
        o.purge_every_ms = HD_RELAY_PURGE_EVERY_DEFAULT;
    if (o.progress_ms == 0)
        o.progress_ms = HD_RELAY_PROGRESS_DEFAULT;
    if (o.progress_ms < 0)
        o.progress_ms = -1;
    *out = o;
    return 0;
}

int hd_relay_exchange_for(const char *type, char *out, size_t cap)
{
    if (type == NULL || *type == '\0' || *type == '.' || out == NULL || cap == 0)
        return HD_EINVAL;
    const char *dot = strchr(type, '.');
    size_t len = dot != NULL ? (size_t)(dot - type) : strlen(type);
    if (len > HD_AMQP_NAME_MAX || len + 1 > cap)
        return HD_ERANGE;
    memcpy(out, type, len);
    out[len] = '\0';
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void add_totals(hd_relay *r, const hd_relay_stats *c)
{
    pthread_mutex_lock(&r->lock);
    hd_relay_stats *t = &r->totals;
    t->cycles += c->cycles;
    t->batches += c->batches;
    t->claimed += c->claimed;
    t->handed += c->handed;
    t->published += c->published;
    t->confirmed += c->confirmed;
    t->returned += c->returned;
    t->nacked += c->nacked;
    t->lost += c->lost;
    t->failed += c->failed;
    t->parked += c->parked;
    t->released += c->released;
    t->lease_expired += c->lease_expired;
    t->reconnects += c->reconnects;
    t->purged += c->purged;
    t->errors += c->errors;
    t->confirm_ns += c->confirm_ns;
    pthread_mutex_unlock(&r->lock);
}

void hd_relay_get_stats(const hd_relay *r, hd_relay_stats *out)
{
    if (out == NULL)
        return;
    if (r == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    /* The lock is the one mutable part of a relay that readers share. */
    hd_relay *m = (hd_relay *)r;
    pthread_mutex_lock(&m->lock);
    *out = m->totals;
    pthread_mutex_unlock(&m->lock);
}

static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason);

int hd_relay_new(hd_store *store, hd_amqp *amqp, const hd_relay_options *opts, hd_relay **out,
                 hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || amqp == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_relay_new: store, amqp and out are required");
    hd_relay_options o;
    int rc = hd_relay_options_resolve(opts, &o, err);
    if (rc < 0)
        return rc;

    hd_relay *r = calloc(1, sizeof *r);
    if (r == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    r->store = store;
    r->amqp = amqp;
    r->opts = o;
    if (o.relay_id != NULL) {
        snprintf(r->id, sizeof r->id, "%s", o.relay_id);
    } else {
        char host[64] = "relay";
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "relay");
        host[sizeof host - 1] = '\0';
        snprintf(r->id, sizeof r->id, "%s-%ld", host, (long)getpid());
    }
    /* Options keep pointers to the caller's strings: point at our copies instead. */
    r->opts.relay_id = r->id;
    if (o.exchange != NULL && (r->exchange = strdup(o.exchange)) == NULL)
        goto nomem;
    r->opts.exchange = r->exchange;
    for (int k = 0; k < 2; k++)
        if ((r->flights[k].items = calloc(o.batch, sizeof(item))) == NULL)
            goto nomem;
    r->seqs_ok = calloc(o.batch, sizeof *r->seqs_ok);
    r->seqs_release = calloc(o.batch, sizeof *r->seqs_release);
    if (r->seqs_ok == NULL || r->seqs_release == NULL)
        goto nomem;
    /* The token: the relay id and a number no other relay of this database draws. */
    r->handoff = o.notifier != NULL && !o.no_handoff && !hd_store_is_pg(store);
    snprintf(r->token, sizeof r->token, "%s/handed-%016llx", r->id,
             (unsigned long long)(hd_clock_ns() ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)r));
    /* Seeded per process: relays started together must not retry in lockstep. */
    hd_backoff_init(&r->backoff, o.backoff_base_ms, o.backoff_cap_ms,
                    (uint64_t)hd_clock_ns() ^ ((uint64_t)getpid() << 32));
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;

nomem:
    free(r->flights[0].items);
    free(r->flights[1].items);
    free(r->seqs_ok);
    free(r->seqs_release);
    free(r->exchange);
    free(r);
    return hd_error_set(err, HD_ENOMEM, NULL);
}

void hd_relay_free(hd_relay *r)
{
    if (r == NULL)
        return;
    hd_publisher_free(r->pub);
    for (size_t i = 0; i < r->n_exchanges; i++) {
        free(r->exchanges[i].name);
        free(r->exchanges[i].refusal);
    }
    free(r->exchanges);
    free(r->flights[0].items);
    free(r->flights[1].items);
    free(r->seqs_ok);
    free(r->seqs_release);
    free(r->exchange);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const char *hd_relay_id(const hd_relay *r)
{
    return r != NULL ? r->id : NULL;
}

/* ---- fates ----------------------------------------------------------------------------- */

static void set_reason(item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_reason(item *it, const char *fmt, ...)
{
    char buf[HD_ERROR_TEXT_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(it->reason);
    it->reason = strdup(buf); /* NULL on ENOMEM: the row is marked with no reason */
}

/* A message's user pointer: its flight (0 or 1) in the lowest bit, its row above. */
static void *fate_user(const hd_relay *r, const flight *f, size_t i)
{
    return (void *)(uintptr_t)(i << 1 | (size_t)(f - r->flights));
}

/* The publisher calls this once per message, from inside publish or wait: the fate may be
 * of either batch in flight. */
static void on_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    hd_relay *r = ctx;
    flight *f = &r->flights[(uintptr_t)user & 1];
    size_t i = (size_t)((uintptr_t)user >> 1);
    if (f->batch == NULL || i >= f->batch->count)
        return; /* not a message of a batch in flight: cannot happen, fates are awaited */
    item *it = &f->items[i];
    const hd_outbox_message *m = &f->batch->messages[i];
    r->fates++;
    f->unsettled--; /* exactly one fate per accepted message (publisher.h) */
    switch (fate) {
    case HD_FATE_CONFIRMED: {
        it->state = ITEM_CONFIRMED;
        /* Counted in the flight's stats (added to the totals under the lock when it is
         * marked) and handed to on_confirm here, on this thread: nothing shared to guard. */
        int64_t ns = hd_clock_ns() - it->published_ns;
        if (ns < 0)
            ns = 0;
        f->c.confirm_ns += (uint64_t)ns;
        if (r->opts.on_confirm != NULL)
            r->opts.on_confirm(r->opts.on_confirm_ctx, (double)ns / 1e9);
        break;
    }
    case HD_FATE_RETURNED:
        it->state = ITEM_RETURNED;
        set_reason(it, "returned %s: exchange '%s' has no queue bound for routing key '%s'",
                   reason ? reason : "", it->exchange, m->type);
        break;
    case HD_FATE_NACKED:
        it->state = ITEM_NACKED;
        set_reason(it, "nacked: %s", reason ? reason : "refused by the broker");
        break;
    case HD_FATE_LOST:
        it->state = ITEM_LOST;
        set_reason(it, "lost: %s", reason ? reason : "no confirm");
        break;
    }
}

/* ---- exchanges ------------------------------------------------------------------------- */

static exchange_entry *exchange_entry_for(hd_relay *r, const char *name)
{
    for (size_t i = 0; i < r->n_exchanges; i++)
        if (strcmp(r->exchanges[i].name, name) == 0)
            return &r->exchanges[i];
    if (r->n_exchanges == r->cap_exchanges) {
        size_t cap = r->cap_exchanges ? r->cap_exchanges * 2 : 8;
        exchange_entry *e = realloc(r->exchanges, cap * sizeof *e);
        if (e == NULL)
            return NULL;
        r->exchanges = e;
        r->cap_exchanges = cap;
    }
    exchange_entry *e = &r->exchanges[r->n_exchanges];
    memset(e, 0, sizeof *e);
    if ((e->name = strdup(name)) == NULL)
        return NULL;
    r->n_exchanges++;
    return e;
}

/* Declare every exchange again before its next use. */
static void forget_exchanges(hd_relay *r)
{
    for (size_t i = 0; i < r->n_exchanges; i++)
        r->exchanges[i].generation = 0;
}

/* Give item i of f its exchange, declaring it when this connection has not yet. Returns 0
 * (the item may have been refused: its state says so), HD_ENOMEM, or HD_ECLOSED (the
 * connection died while declaring: publishing stops). */
static int route_item(hd_relay *r, flight *f, size_t i, hd_error *err)
{
    item *it = &f->items[i];
    const hd_outbox_message *m = &f->batch->messages[i];
    char name[HD_AMQP_NAME_MAX + 1];
    if (r->exchange != NULL) {
        snprintf(name, sizeof name, "%s", r->exchange);
    } else if (hd_relay_exchange_for(m->type, name, sizeof name) < 0) {
        it->state = ITEM_REFUSED;
        set_reason(it, "no exchange can be derived from event type '%s'", m->type);
        return 0;
    }
    exchange_entry *e = exchange_entry_for(r, name);
    if (e == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    it->exchange = e->name;
    if (r->opts.no_declare)
        return 0;
    if (e->refused_cycle == f->cycle_no) {
        /* Declared and refused earlier in this claim: one refusal per exchange and claim. */
        it->state = ITEM_REFUSED;
        set_reason(it, "%s", e->refusal ? e->refusal : "exchange refused");
        return 0;
    }
    if (e->generation == hd_amqp_generation(r->amqp))
        return 0;
    hd_exchange_spec spec = {.name = e->name, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_error why;
    int rc = hd_exchange_declare(r->amqp, &spec, &why);
    if (rc == 0) {
        e->generation = hd_amqp_generation(r->amqp);
        return 0;
    }
    if (rc == HD_ECLOSED || !hd_amqp_is_open(r->amqp))
        return hd_error_set(err, HD_ECLOSED, "%s", why.text);
    /* Refused (406: it exists with another type) or broken in another way: the events for
     * it fail visibly and are retried with backoff; the other exchanges carry on. */
    e->refused_cycle = f->cycle_no;
    free(e->refusal);
    e->refusal = strdup(why.text);
    it->state = ITEM_REFUSED;
    set_reason(it, "%s", why.text);
    return 0;
}

/* ---- publishing ------------------------------------------------------------------------ */

/* Publish item i of f. Returns 0 (published, or refused as malformed: see its state), or
 * the publisher's HD_ECLOSED / HD_EAMQP / HD_ETIMEOUT: publishing stops. */
static int publish_item(hd_relay *r, flight *f, size_t i, hd_error *err)
{
    item *it = &f->items[i];
    const hd_outbox_message *m = &f->batch->messages[i];

    /* The tracing attributes were stored next to the payload so that the relay need not
     * parse the payload; a row whose headers do not parse is still published. Read with
     * jsonr (json_loads' tree, yajl's lexer: jsonr.h), as the relay does it for every event. */
    json_t *h = m->headers != NULL ? hd_jsonr_loadb(m->headers, strlen(m->headers), 0, NULL) : NULL;
    const char *correlation = json_string_value(json_object_get(h, "correlationid"));
    const char *causation = json_string_value(json_object_get(h, "causationid"));
    const char *traceparent = json_string_value(json_object_get(h, "traceparent"));
    hd_amqp_kv headers[2];
    size_t n_headers = 0;
    if (traceparent != NULL)
        headers[n_headers++] = (hd_amqp_kv){"traceparent", traceparent};
    if (causation != NULL)
        headers[n_headers++] = (hd_amqp_kv){"causationid", causation};

    hd_message msg = {
        .exchange = it->exchange,
        .routing_key = m->type,
        .body = m->payload,
        .len = m->payload_len,
        .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
        .type = m->type,
        .message_id = m->event_id,
        .correlation_id = correlation,
        .headers = n_headers ? headers : NULL,
        .n_headers = n_headers,
        /* persistent, and mandatory unless the caller accepts unroutable events */
        .flags = r->opts.no_mandatory ? HD_MSG_NOT_MANDATORY : 0,
        .user = fate_user(r, f, i),
    };
    /* Set before publishing: the fate may be reported from inside the call. */
    it->state = ITEM_PUBLISHED;
    it->published_ns = hd_clock_ns();
    f->unsettled++;
    hd_error why;
    int rc = hd_publisher_publish(r->pub, &msg, NULL, &why);
    json_decref(h);
    if (rc == 0)
        return 0;
    it->state = ITEM_UNPUBLISHED; /* not accepted: no fate will come for it */
    f->unsettled--;
    if (rc == HD_EINVAL) { /* this message can never be published as it is */
        it->state = ITEM_REFUSED;
        set_reason(it, "%s", why.text);
        return 0;
    }
    return hd_error_set(err, rc, "%s", why.text);
}

/* ---- marking --------------------------------------------------------------------------- */

/* The one transaction of a batch: dispatched, failed, released. */
static int settle_tx(hd_relay *r, flight *f, int broker_up, hd_error *err)
{
    const hd_outbox_batch *b = f->batch;
    hd_relay_stats *c = &f->c;
    size_t n_ok = 0, n_release = 0;
    for (size_t i = 0; i < b->count; i++) {
        item *it = &f->items[i];
        it->parked = 0;
        if (it->state == ITEM_CONFIRMED)
            r->seqs_ok[n_ok++] = b->messages[i].seq;
        else if (it->state == ITEM_UNPUBLISHED || (it->state == ITEM_LOST && !broker_up))
            r->seqs_release[n_release++] = b->messages[i].seq;
    }
    int rc = hd_store_begin(r->store, err);
    if (rc < 0)
        return rc;
    if (n_ok > 0 && (rc = hd_outbox_mark_dispatched(r->store, r->seqs_ok, n_ok, err)) < 0)
        goto fail;
    uint64_t failed = 0, parked = 0;
    for (size_t i = 0; i < b->count; i++) {
        item *it = &f->items[i];
        /* A message lost while the connection stayed up was refused by the broker (it
         * closed our channel: a missing exchange, say): that is the events' failure. */
        int fails = it->state == ITEM_RETURNED || it->state == ITEM_NACKED ||
                    it->state == ITEM_REFUSED || (it->state == ITEM_LOST && broker_up);
        if (!fails)
            continue;
        const hd_outbox_message *m = &b->messages[i];
        int64_t delay = hd_backoff_delay(&r->backoff, (unsigned)m->attempts);
        hd_error why;
        rc = hd_outbox_mark_failed(r->store, m->seq, it->reason, delay, r->opts.max_attempts, &why);
        if (rc == HD_ENOTFOUND)
            continue; /* settled meanwhile by a relay that took over after our lease */
        if (rc < 0) {
            hd_error_set(err, rc, "%s", why.text);
            goto fail;
        }
        failed++;
        if (rc == 1) {
            it->parked = 1;
            parked++;
        }
    }
    if (n_release > 0 && (rc = hd_outbox_release(r->store, r->seqs_release, n_release, err)) < 0)
        goto fail;
    if ((rc = hd_store_commit(r->store, err)) < 0)
        return rc;
    c->confirmed += n_ok;
    c->failed += failed;
    c->parked += parked;
    c->released += n_release;
    return 0;

fail:
    hd_store_rollback(r->store, NULL);
    return rc;
}

/* Log what happened to the rows that did not go through, after the commit made it true. */
static void log_failures(hd_relay *r, const flight *f)
{
    hd_logger *lg = r->opts.logger;
    if (lg == NULL || !hd_logger_enabled(lg, HD_LOG_WARN))
        return;
    const hd_outbox_batch *b = f->batch;
    for (size_t i = 0; i < b->count; i++) {
        const item *it = &f->items[i];
        const hd_outbox_message *m = &b->messages[i];
        if (it->reason == NULL || it->state == ITEM_CONFIRMED || it->state == ITEM_UNPUBLISHED)
            continue;
        if (it->state == ITEM_LOST && !hd_amqp_is_open(r->amqp))
            continue; /* released, reported once per outage by hd_relay_run */
        hd_log_json(lg, it->parked ? HD_LOG_ERROR : HD_LOG_WARN, NULL,
                    it->parked ? "outbox row parked after its last attempt: redrive it once "
                                 "the cause is fixed"
                               : "publish failed, will retry",
                    json_pack("{s:s, s:I, s:s, s:s, s:i, s:i, s:s}", "relay", r->id, "seq",
                              (json_int_t)m->seq, "event_id", m->event_id, "type", m->type,
                              "attempt", m->attempts + 1, "max_attempts", r->opts.max_attempts,
                              "error", it->reason ? it->reason : ""));
    }
}

/* ---- one batch: claim, publish, wait, mark --------------------------------------------- */

/* Offer the token on the notifier (on = 1) or withdraw it. The first offer reads the last
 * seq first: rows handed under the token come after it. A failed read offers nothing (the
 * rows wait for claims, as without the offer) and is tried again at the next call. */
static void offer(hd_relay *r, int on)
{
    if (!r->handoff || r->offered == on)
        return;
    if (on && !r->cursor_set) {
        if (hd_outbox_last_seq(r->store, &r->handed_after, NULL) < 0)
            return;
        r->cursor_set = 1;
    }
    if (hd_outbox_notifier_offer(r->opts.notifier, on ? r->token : NULL, r->opts.lease_ms) == 0)
        r->offered = on;
}

/* The handed rows after the last taken, into *b; the cursor moves past them. */
static int take(hd_relay *r, hd_outbox_batch **b, hd_error *err)
{
    int n = hd_outbox_take_handed(r->store, r->token, r->handed_after, r->opts.batch,
                                  r->opts.lease_ms, 0, b, err);
    if (n > 0)
        r->handed_after = (*b)->messages[n - 1].seq;
    r->claim_turn = n > 0;
    return n;
}

/* Step 1: a batch into *b, handed rows or claimed ones (relay.h, "Handed rows"). look: woken
 * by poll_ms alone, so read whether anything is due before the claim (a write). With handed
 * rows that read comes before every claim: the rows the writers commit are handed, so a
 * claim would mostly find nothing, and take SQLite's write lock to find it. The turns
 * alternate while both have rows, so neither starves the other. Returns the rows (>= 0) or
 * a code (the store's). */
static int fill_batch(hd_relay *r, int look, hd_outbox_batch **b, int *handed, hd_error *err)
{
    int took = 0;
    *handed = r->offered;
    if (r->offered && !r->claim_turn) {
        int n = take(r, b, err);
        if (n != 0)
            return n;
        hd_outbox_batch_free(*b);
        *b = NULL;
        took = 1;
    }
    r->claim_turn = 0;
    hd_error e;
    if ((look || r->offered) && hd_outbox_has_due(r->store, 0, &e) == 0)
        return r->offered && !took ? take(r, b, err) : 0;
    *handed = 0;
    /* A failed look falls through to the claim, which reports the store's error its way. */
    hd_outbox_claim_opts co = {.relay_id = r->id, .lease_ms = r->opts.lease_ms};
    return hd_outbox_claim(r->store, r->opts.batch, &co, b, err);
}

/* Steps 1 and 2 of a cycle, into the empty flight f: claim a batch and publish it. Returns
 * the number of rows claimed; when > 0, f holds the batch, published as far as the broker
 * let it (f->broken says why it stopped short), and finish_batch must follow. 0 (nothing
 * was due) or a code leave f empty: HD_ECLOSED (the connection is closed; nothing was
 * claimed), the publisher's creation codes, the claim's (the store's) codes. look: as
 * fill_batch's. */
static int start_batch(hd_relay *r, flight *f, int look, hd_error *err)
{
    memset(&f->c, 0, sizeof f->c);
    f->broken = 0;
    hd_error_clear(&f->why);
    /* A closed connection: claim nothing. Rows claimed now could only be released again,
     * and a broker outage must not cost the events anything. */
    if (!hd_amqp_is_open(r->amqp))
        return hd_error_set(err, HD_ECLOSED, "broker connection %s is closed: reconnect first",
                            hd_amqp_url_text(r->amqp));
    int rc;
    if (r->pub == NULL) {
        hd_publisher_options po = {.window = r->opts.window,
                                   .confirm_timeout_ms = r->opts.confirm_timeout_ms,
                                   .on_fate = on_fate,
                                   .ctx = r};
        if ((rc = hd_publisher_new(r->amqp, &po, &r->pub, err)) < 0)
            return rc;
    }

    /* 1. Claim, or take handed rows. */
    hd_outbox_batch *b = NULL;
    int handed = 0;
    rc = fill_batch(r, look, &b, &handed, err);
    f->c.cycles = 1;
    if (rc <= 0) {
        hd_outbox_batch_free(b);
        add_totals(r, &f->c);
        return rc;
    }
    size_t n = b->count;
    f->c.batches = 1;
    f->c.claimed = n;
    f->c.handed = handed ? n : 0;
    f->batch = b;
    f->cycle_no = ++r->cycle_no;
    f->unsettled = 0;
    memset(f->items, 0, n * sizeof f->items[0]);

    /* 2. Route (declare what this connection has not declared yet) and publish, in seq
     * order, on one channel. When the window is full, publishing reads confirms: of this
     * batch, or of the one before it when two are in flight. */
    for (size_t i = 0; i < n; i++) {
        if ((rc = route_item(r, f, i, &f->why)) < 0)
            break;
        if (f->items[i].state == ITEM_REFUSED)
            continue;
        if ((rc = publish_item(r, f, i, &f->why)) < 0)
            break;
        if (f->items[i].state != ITEM_REFUSED)
            f->c.published++;
    }
    if (rc == HD_ETIMEOUT) {
        /* The window stayed full for a confirm timeout: we no longer know what the broker
         * has. Treat the connection as dead, which reports every message in flight LOST
         * (released when marked, republished later: at-least-once). */
        hd_amqp_mark_broken(r->amqp);
        (void)hd_publisher_wait(r->pub, 0, NULL);
        rc = HD_ECLOSED;
    }
    f->broken = rc < 0 ? rc : 0;
    return (int)n;
}

/* Step 3: read confirms until every message of f has its fate. Returns 0, or HD_ECLOSED /
 * HD_EAMQP: the connection or the channel died, and every message in flight (of both
 * batches) was reported LOST. */
static int await_batch(hd_relay *r, flight *f, hd_error *err)
{
    int64_t quiet_since = hd_clock_ms();
    uint64_t fates = r->fates;
    while (f->unsettled > 0 && hd_publisher_outstanding(r->pub) > 0) {
        /* Alone in flight, f is done when the publisher has nothing outstanding: its own
         * wait does it, with its confirm timeout. With the next batch in flight too, wait in
         * short slices and look at f after each: confirms come in publish order, so f's come
         * first, and batch k is marked as soon as its last fate is in. */
        int alone = hd_publisher_outstanding(r->pub) == f->unsettled;
        int rc = hd_publisher_wait(r->pub, alone ? -1 : AWAIT_SLICE_MS, err);
        if (rc == 0)
            continue;
        if (rc != HD_ETIMEOUT)
            return rc;
        if (!alone) {
            int64_t now = hd_clock_ms();
            if (r->fates != fates) {
                fates = r->fates;
                quiet_since = now;
                continue;
            }
            if (now - quiet_since < r->opts.confirm_timeout_ms)
                continue;
        }
        /* No confirm within the timeout: we no longer know what the broker has. Treat the
         * connection as dead, which reports the rest LOST (released, republished later). */
        hd_amqp_mark_broken(r->amqp);
        (void)hd_publisher_wait(r->pub, 0, NULL);
        return hd_error_set(err, HD_ECLOSED, "no confirm from %s within %d ms",
                            hd_amqp_url_text(r->amqp), r->opts.confirm_timeout_ms);
    }
    return 0;
}

/* Steps 3 and 4: wait for every fate of f's batch, mark it in one transaction, and empty f.
 * Returns the number of rows of the batch, or: the store's code (the mark failed: the rows
 * stay leased, republished after the lease: duplicates, never a loss), HD_ECLOSED or
 * HD_EAMQP (what hd_relay_run_once says about them). */
static int finish_batch(hd_relay *r, flight *f, hd_error *err)
{
    const hd_outbox_batch *b = f->batch;
    size_t n = b->count;
    hd_relay_stats *c = &f->c;
    hd_error why;
    /* Also after a failed publish: the messages already on the wire get their fates
     * (LOST, when the connection died) from the publisher here. */
    int rc = await_batch(r, f, &why);
    if (rc < 0 && !f->broken) {
        f->broken = rc;
        f->why = why;
    }

    int broker_up = hd_amqp_is_open(r->amqp);
    const char *lost_reason = NULL;
    for (size_t i = 0; i < n; i++) {
        item *it = &f->items[i];
        switch (it->state) {
        case ITEM_RETURNED:
            c->returned++;
            break;
        case ITEM_NACKED:
            c->nacked++;
            break;
        case ITEM_LOST:
            c->lost++;
            /* Lost while the connection stayed up: the broker closed our channel, most
             * likely 404 for an exchange deleted since we declared it. Declare again. */
            if (broker_up) {
                forget_exchanges(r);
                if (it->reason != NULL && strncmp(it->reason, "lost: ", 6) == 0) {
                    char *lost = it->reason;
                    it->reason = NULL;
                    set_reason(it, "refused: %s", lost + 6);
                    free(lost);
                }
            }
            if (lost_reason == NULL)
                lost_reason = it->reason;
            break;
        case ITEM_PUBLISHED: /* no fate: cannot happen after a wait; be safe, publish again */
            it->state = ITEM_UNPUBLISHED;
            break;
        default:
            break;
        }
    }
    if (f->broken == HD_EAMQP)
        forget_exchanges(r);
    /* Lost with the other batch: the connection or the channel died while the next batch
     * was being published. Say so for this batch too. */
    if (!f->broken && c->lost > 0) {
        f->broken = broker_up ? HD_EAMQP : HD_ECLOSED;
        hd_error_set(&f->why, f->broken, "%s", lost_reason ? lost_reason : "lost");
    }

    /* 4. Mark, in one transaction. Past the lease another relay may have taken the rows
     * over; marking is still right (they were confirmed), but they may go out twice. */
    if (hd_time_now_ms() > b->lease_until_ms) {
        c->lease_expired++;
        if (r->opts.logger != NULL)
            hd_log_json(r->opts.logger, HD_LOG_WARN, NULL,
                        "lease ran out before the batch was marked: rows may be published "
                        "twice; raise the lease or lower the batch",
                        json_pack("{s:s, s:I}", "relay", r->id, "rows", (json_int_t)n));
    }
    for (int attempt = 1;; attempt++) {
        rc = settle_tx(r, f, broker_up, err);
        if (rc != HD_EBUSY || attempt == SETTLE_TRIES)
            break;
        hd_sleep_ms(50 * attempt);
    }
    if (rc == 0)
        log_failures(r, f);
    for (size_t i = 0; i < n; i++) { /* reasons live as long as their batch */
        free(f->items[i].reason);
        f->items[i].reason = NULL;
    }
    hd_outbox_batch_free(f->batch);
    f->batch = NULL;
    if (rc < 0)
        c->errors++;
    add_totals(r, c);
    if (rc < 0)
        return rc; /* the rows stay leased: republished after the lease, not lost */
    if (f->broken)
        return hd_error_set(err, f->broken == HD_EAMQP && broker_up ? HD_EAMQP : HD_ECLOSED, "%s",
                            f->why.text);
    return (int)n;
}

int hd_relay_run_once(hd_relay *r, hd_relay_stats *cycle, hd_error *err)
{
    if (cycle != NULL)
        memset(cycle, 0, sizeof *cycle);
    if (r == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_relay_run_once: relay is NULL");
    flight *f = &r->flights[0];
    int rc = start_batch(r, f, 0, err);
    if (rc > 0)
        rc = finish_batch(r, f, err);
    if (cycle != NULL)
        *cycle = f->c;
    return rc;
}

/* ---- the loop -------------------------------------------------------------------------- */

int hd_relay_purge(hd_relay *r, int64_t *purged, hd_error *err)
{
    if (purged != NULL)
        *purged = 0;
    if (r == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_relay_purge: relay is NULL");
    int64_t n = 0;
    int rc = 0;
    /* Sensitive rows first: with a retention of their own shorter than the general one,
     * they must not wait for it (nor for a general retention of "never"). */
    if (r->opts.sensitive_retention_ms >= 0 &&
        (r->opts.retention_ms < 0 || r->opts.sensitive_retention_ms < r->opts.retention_ms)) {
        rc = hd_outbox_purge_sensitive(r->store, r->opts.sensitive_retention_ms, err);
        if (rc >= 0)
            n += rc;
    }
    if (rc >= 0 && r->opts.retention_ms >= 0) {
        rc = hd_outbox_purge_dispatched(r->store, r->opts.retention_ms, err);
        if (rc >= 0)
            n += rc;
    }
    hd_relay_stats c;
    memset(&c, 0, sizeof c);
    c.purged = (uint64_t)n;
    add_totals(r, &c);
    if (purged != NULL)
        *purged = n;
    return rc < 0 ? rc : 0;
}

static int stopped(const hd_stop *stop)
{
    return hd_stop_requested(stop);
}

/* Sleep until there may be work — a NOTIFY, a notifier signal, or poll_ms — or until the
 * stop, whichever comes first: one poll(2) on the stop token, the notifier's pipe and
 * PostgreSQL's socket, so that no wake-up waits for another's timeout. Returns 1 when a
 * NOTIFY or a signal woke it (rows were committed), 0 otherwise (poll_ms, the stop). */
static int wait_for_work(hd_relay *r, const hd_stop *stop)
{
    int64_t deadline = hd_clock_ms() + r->opts.poll_ms;
    for (;;) {
        if (stopped(stop))
            return 0;
        /* What came before we sleep: a signal while we drained, buffered notifications. */
        if (r->opts.notifier != NULL && hd_outbox_notifier_wait(r->opts.notifier, &r->seen, 0))
            return 1;
        int pg_fd = -1;
        if (r->listening) {
            hd_error e;
            int got = hd_store_pg_wait(r->store, 0, NULL, &e);
            if (got > 0)
                return 1;
            pg_fd = got == 0 ? hd_store_pg_fd(r->store) : -1;
            if (pg_fd < 0) { /* connection lost: the next wait reconnects; do not spin */
                int64_t left = deadline - hd_clock_ms();
                if (left <= 0 || hd_stop_wait_ms(stop, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS))
                    return 0;
                continue;
            }
        }
        int64_t left = deadline - hd_clock_ms();
        if (left <= 0)
            return 0;
        struct pollfd fds[2];
        size_t n = 0;
        if (pg_fd >= 0)
            fds[n++] = (struct pollfd){.fd = pg_fd, .events = POLLIN};
        if (r->opts.notifier != NULL)
            fds[n++] =
                (struct pollfd){.fd = hd_outbox_notifier_fd(r->opts.notifier), .events = POLLIN};
        int rc = hd_stop_poll(stop, fds, n, left);
        if (rc == HD_EINTR || rc == 0)
            return 0; /* stopped, or poll_ms is up: look for work anyway */
        if (rc < 0 && hd_stop_wait_ms(stop, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS))
            return 0; /* poll failed (not expected): degrade to sleeping in slices */
        /* Something is readable: the top of the loop takes it (NOTIFY, signal). */
    }
}

static json_t *stats_json(const hd_relay_stats *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "published",
                     (json_int_t)s->published, "confirmed", (json_int_t)s->confirmed, "returned",
                     (json_int_t)s->returned, "nacked", (json_int_t)s->nacked, "lost",
                     (json_int_t)s->lost, "parked", (json_int_t)s->parked, "released",
                     (json_int_t)s->released, "batches", (json_int_t)s->batches, "handed",
                     (json_int_t)s->handed, "reconnects", (json_int_t)s->reconnects, "errors",
                     (json_int_t)s->errors);
}

static void log_progress(hd_relay *r, hd_relay_stats *last, int64_t *last_ms)
{
    hd_relay_stats now;
    hd_relay_get_stats(r, &now);
    int64_t t = hd_clock_ms();
    if (now.claimed == last->claimed && now.errors == last->errors &&
        now.reconnects == last->reconnects)
        return; /* idle: say nothing rather than the same line every few seconds */
    double secs = (double)(t - *last_ms) / 1000.0;
    json_t *f = stats_json(&now);
    json_object_set_new(f, "relay", json_string(r->id));
    json_object_set_new(
        f, "rate_per_s",
        json_integer(secs > 0 ? (json_int_t)((double)(now.confirmed - last->confirmed) / secs)
                              : 0));
    int64_t pending = 0, oldest = 0, parked = 0;
    if (hd_outbox_depth(r->store, &pending, &oldest, &parked, NULL) == 0) {
        json_object_set_new(f, "pending", json_integer(pending));
        json_object_set_new(f, "oldest_age_ms", json_integer(oldest));
        json_object_set_new(f, "parked_rows", json_integer(parked));
    }
    hd_log_json(r->opts.logger, HD_LOG_INFO, NULL, "relay progress", f);
    *last = now;
    *last_ms = t;
}

/* Whether hd_relay_run may claim the next batch while busy (batch k) is still in flight.
 * Only after a full batch: a short one means the outbox is (nearly) empty. And only while
 * batch k has more than half its lease left and more than a confirm timeout: it is marked
 * after batch k+1 was claimed and published, and must be marked before its lease runs out
 * (a claim after that would also take batch k's own rows again). */
static int may_overlap(const hd_relay *r, const flight *busy)
{
    if (r->opts.no_pipeline || busy->broken || busy->batch->count < r->opts.batch)
        return 0;
    int64_t left = busy->batch->lease_until_ms - hd_time_now_ms();
    return left > r->opts.lease_ms / 2 && left > r->opts.confirm_timeout_ms;
}

static int run_loop(hd_relay *r, const hd_stop *stop, hd_error *err);

int hd_relay_run(hd_relay *r, const hd_stop *stop, hd_error *err)
{
    if (r == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_relay_run: relay is NULL");
    int rc = run_loop(r, stop, err);
    /* Nobody takes handed rows any more: the writers append them for claims again, and the
     * rows handed but not taken (nothing is in flight now) are given back, so that the next
     * relay claims them at once instead of after their lease. */
    offer(r, 0);
    hd_error e;
    if (r->cursor_set && hd_outbox_release_handed(r->store, r->token, &e) < 0 &&
        r->opts.logger != NULL)
        hd_log_warn(r->opts.logger, NULL, "handed rows not given back: claimed after their lease",
                    "relay", r->id, "error", e.text, NULL);
    return rc;
}

static int run_loop(hd_relay *r, const hd_stop *stop, hd_error *err)
{
    hd_logger *lg = r->opts.logger;
    hd_backoff store_backoff;
    hd_backoff_init(&store_backoff, STORE_BACKOFF_BASE_MS, STORE_BACKOFF_CAP_MS,
                    (uint64_t)hd_clock_ns());
    unsigned failures = 0;              /* turns failed in a row, for the backoff */
    int64_t next_purge = hd_clock_ms(); /* purge once at start: a relay may have been down */
    int64_t last_progress_ms = hd_clock_ms();
    hd_relay_stats last_progress;
    hd_relay_get_stats(r, &last_progress);
    int outage = 0;      /* the broker is known to be down: log once, not every attempt */
    flight *busy = NULL; /* batch k: published, its fates not all in yet */
    int more = 1;        /* rows are probably due: claim again without waiting */
    int look = 0;        /* woken by poll_ms alone: look (read) before claiming (write) */
    hd_error e;

    if (lg != NULL)
        hd_log_json(lg, HD_LOG_INFO, NULL, "relay started",
                    json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:i, s:I, s:i, s:s}", "relay", r->id,
                              "store", hd_store_dialect(r->store), "broker",
                              hd_amqp_url_text(r->amqp), "batch", (json_int_t)r->opts.batch,
                              "window", (json_int_t)r->opts.window, "pipeline",
                              !r->opts.no_pipeline, "poll_ms", r->opts.poll_ms, "lease_ms",
                              (json_int_t)r->opts.lease_ms, "max_attempts", r->opts.max_attempts,
                              "exchange", r->exchange ? r->exchange : "(per event type)"));

    /* Each turn claims and publishes batch k+1 (when it may), then waits for the fates of
     * batch k and marks it. A stop lets the turns finish what is in flight, claiming nothing. */
    while (busy != NULL || !stopped(stop)) {
        if (busy == NULL) {
            /* Nothing in flight: the one place to go idle, to LISTEN and to reconnect. */
            if (!more) {
                if (r->opts.drain) {
                    int64_t pending = 0;
                    if (hd_outbox_depth(r->store, &pending, NULL, NULL, &e) == 0 && pending == 0)
                        break;
                }
                look = !wait_for_work(r, stop) && !hd_store_is_pg(r->store);
                more = 1;
                continue; /* look at *stop again */
            }
            /* LISTEN first (PostgreSQL); retried while it fails, polling meanwhile. The store
             * listens again by itself after it reconnects. */
            if (!r->listening && hd_store_is_pg(r->store)) {
                if (hd_store_pg_listen(r->store, HD_OUTBOX_CHANNEL, &e) == 0)
                    r->listening = 1;
                else if (lg != NULL)
                    hd_log_warn(lg, NULL, "LISTEN failed; polling meanwhile", "relay", r->id,
                                "error", e.text, NULL);
            }
            if (!hd_amqp_is_open(r->amqp)) {
                if (lg != NULL && !outage)
                    hd_log_warn(lg, NULL,
                                "broker unreachable: reconnecting with backoff; nothing "
                                "is claimed meanwhile",
                                "relay", r->id, "broker", hd_amqp_url_text(r->amqp), NULL);
                outage = 1;
                int rc = hd_amqp_reconnect(r->amqp, stop, &e);
                if (rc == HD_EINTR)
                    break;
                if (rc < 0) {
                    if (lg != NULL)
                        hd_log_error(lg, NULL, "cannot reconnect to the broker", "relay", r->id,
                                     "error", e.text, NULL);
                    return hd_error_set(err, rc, "%s", e.text);
                }
                hd_relay_stats c;
                memset(&c, 0, sizeof c);
                c.reconnects = 1;
                add_totals(r, &c);
                outage = 0;
                if (lg != NULL)
                    hd_log_info(lg, NULL, "reconnected to the broker: catching up", "relay", r->id,
                                NULL);
            }
            offer(r, 1); /* connected: the writers may hand rows over */
        }

        /* Woken by the poll interval alone (SQLite: no cross-process NOTIFY): a read first.
         * The claim is a write, and on SQLite it takes the one write lock even when it finds
         * nothing; every poll_ms that is a lock the service's own commits wait for (their
         * busy handler sleeps), and CPU for an UPDATE. A read in WAL mode takes no lock.
         * Measured in docs/bench.md (issue 14). The look is start_batch's (fill_batch), which
         * also takes handed rows, which no look at due rows sees (they are leased). */
        int look_now = busy == NULL && look;
        look = 0;

        /* Batch k+1: claimed and published while the broker still confirms batch k, so the
         * claim's database work overlaps the broker's instead of following it. The claim
         * skips the aggregates of batch k's rows (they are leased): per-aggregate order
         * holds. A claim made beside batch k may come back short because of that, so it
         * does not mean the outbox is empty: only a short claim made alone does. */
        int rc = 0; /* the first failure of this turn */
        flight *next = NULL;
        if (!stopped(stop) && (busy == NULL || may_overlap(r, busy))) {
            next = busy == &r->flights[0] ? &r->flights[1] : &r->flights[0];
            int n = start_batch(r, next, look_now, &e);
            more = n < 0 || (size_t)n == r->opts.batch || busy != NULL;
            if (n <= 0) {
                rc = n;
                next = NULL;
            }
        }
        /* Batch k: its fates are in once the publisher has taken batch k+1 (with a window of
         * one batch) or soon after; mark it while the broker works on batch k+1. */
        hd_error fe;
        if (busy != NULL) {
            int n = finish_batch(r, busy, &fe);
            if (n < 0 && rc == 0) {
                rc = n;
                e = fe;
            }
        }
        busy = next;
        /* A failure empties the pipeline before it is handled: batch k+1 is waited for and
         * marked (or released) too, so that nothing is in flight while the relay reconnects
         * or backs off. */
        if (busy != NULL && (rc < 0 || busy->broken)) {
            int n = finish_batch(r, busy, &fe);
            if (n < 0 && rc == 0) {
                rc = n;
                e = fe;
            }
            busy = NULL;
        }

        if (rc < 0) {
            more = 1; /* after the reconnect or the backoff, claim at once */
            if (rc == HD_ECLOSED || !hd_amqp_is_open(r->amqp)) {
                offer(r, 0); /* rows wait for a claim after the reconnect, not for a lease */
                if (lg != NULL && !outage)
                    hd_log_warn(lg, NULL, "broker connection lost: unconfirmed rows released",
                                "relay", r->id, "error", e.text, NULL);
                outage = 1;
                continue; /* reconnect at the top */
            }
            if (rc == HD_EINVAL)
                return hd_error_set(err, rc, "%s", e.text);
            /* Store trouble (busy, connection lost, refused) or a channel the broker closed:
             * back off and try again; the rows of a failed mark stay leased and are
             * republished after the lease. */
            int64_t delay = hd_backoff_delay(&store_backoff, failures++);
            if (lg != NULL)
                hd_log_json(lg, HD_LOG_WARN, NULL, "relay cycle failed, retrying",
                            json_pack("{s:s, s:s, s:s, s:I}", "relay", r->id, "code",
                                      hd_err_name(rc), "error", e.text, "retry_in_ms",
                                      (json_int_t)delay));
            hd_stop_wait_ms(stop, delay); /* a stop ends the backoff at once */
            continue;
        }
        failures = 0;

        int64_t now = hd_clock_ms();
        if ((r->opts.retention_ms >= 0 || r->opts.sensitive_retention_ms >= 0) &&
            now >= next_purge) {
            int64_t purged = 0;
            if (hd_relay_purge(r, &purged, &e) < 0) {
                if (lg != NULL)
                    hd_log_warn(lg, NULL, "retention purge failed", "relay", r->id, "error", e.text,
                                NULL);
            } else if (purged > 0 && lg != NULL) {
                hd_log_json(lg, HD_LOG_INFO, NULL, "purged dispatched outbox rows",
                            json_pack("{s:s, s:I, s:I, s:I}", "relay", r->id, "rows",
                                      (json_int_t)purged, "older_than_ms",
                                      (json_int_t)r->opts.retention_ms, "sensitive_older_than_ms",
                                      (json_int_t)r->opts.sensitive_retention_ms));
            }
            next_purge = now + r->opts.purge_every_ms;
        }
        if (lg != NULL && r->opts.progress_ms > 0 && now - last_progress_ms >= r->opts.progress_ms)
            log_progress(r, &last_progress, &last_progress_ms);
    }

    if (lg != NULL) {
        hd_relay_stats t;
        hd_relay_get_stats(r, &t);
        json_t *f = stats_json(&t);
        json_object_set_new(f, "relay", json_string(r->id));
        hd_log_json(lg, HD_LOG_INFO, NULL, "relay stopped", f);
    }
    return 0;
}
