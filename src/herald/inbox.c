/* inbox.c — the idempotent consumer's memory; see inbox.h. */
#include "herald/inbox.h"

#include "herald/clock.h"

#include <stdlib.h>

/* The primary key is the deduplication: (consumer, message_id) can be inserted once. The
 * index on received_at serves the purge, which would otherwise scan the whole table; it
 * costs a little on every insert, and the purge deletes as many rows as are inserted. */
static const char *const inbox_steps[] = {
    "CREATE TABLE hd_inbox ("
    " consumer TEXT NOT NULL,"
    " message_id TEXT NOT NULL,"
    " received_at BIGINT NOT NULL,"
    " PRIMARY KEY (consumer, message_id));"
    "CREATE INDEX hd_inbox_received ON hd_inbox (received_at);",
};

int hd_inbox_migrate(hd_store *store, hd_error *err)
{
    if (store == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_inbox_migrate: store is NULL");
    return hd_store_migrate(store, "inbox", inbox_steps, 1, err);
}

int hd_inbox_accept(hd_store *store, const char *consumer, const char *message_id, hd_error *err)
{
    if (store == NULL || consumer == NULL || *consumer == '\0' || message_id == NULL ||
        *message_id == '\0')
        return hd_error_set(err, HD_EINVAL,
                            "hd_inbox_accept: store, consumer and message id are required");
    if (!hd_store_in_transaction(store))
        return hd_error_set(err, HD_ESTATE,
                            "hd_inbox_accept must run inside the handler's transaction, so "
                            "that the inbox row and the effect commit together");
    /* ON CONFLICT DO NOTHING, not a plain INSERT that fails on a duplicate: a failed
     * statement aborts the transaction (PostgreSQL's rule, kept by the store on every
     * adapter), and a duplicate is an expected answer, not an error. On PostgreSQL a
     * concurrent insert of the same key waits for the other transaction: if it commits,
     * this one inserts nothing (0); if it rolls back, this one inserts (1). */
    hd_value p[] = {hd_value_text(consumer), hd_value_text(message_id),
                    hd_value_int(hd_time_now_ms())};
    int rc = hd_store_exec(store,
                           "INSERT INTO hd_inbox (consumer, message_id, received_at)"
                           " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                           p, 3, err);
    return rc < 0 ? rc : (rc > 0 ? 1 : 0);
}

int hd_inbox_accept_many(hd_store *store, const char *consumer, const char *const *message_ids,
                         size_t n, unsigned char *fresh, hd_error *err)
{
    if (n > 0 && message_ids == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_inbox_accept_many: message_ids is NULL");
    /* One statement per id: simple, and inside one transaction each costs a round trip but
     * no flush; the commit's flush is what group commit shares. */
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = hd_inbox_accept(store, consumer, message_ids[i], err);
        if (rc < 0)
            return rc;
        if (fresh != NULL)
            fresh[i] = (unsigned char)rc;
        count += rc;
    }
    if (n == 0 && (store == NULL || !hd_store_in_transaction(store)))
        return hd_error_set(err, store ? HD_ESTATE : HD_EINVAL,
                            "hd_inbox_accept_many needs a store with a transaction open");
    return count;
}

int hd_inbox_purge(hd_store *store, int64_t older_than_ms, hd_error *err)
{
    if (store == NULL || older_than_ms < 0)
        return hd_error_set(err, HD_EINVAL,
                            "hd_inbox_purge: store and older_than_ms >= 0 are required");
    hd_value p[] = {hd_value_int(hd_time_now_ms() - older_than_ms)};
    return hd_store_exec(store, "DELETE FROM hd_inbox WHERE received_at < $1", p, 1, err);
}

int hd_inbox_purge_batch(hd_store *store, int64_t older_than_ms, size_t limit, hd_error *err)
{
    if (store == NULL || older_than_ms < 0 || limit == 0 || limit > 100000)
        return hd_error_set(err, HD_EINVAL,
                            "hd_inbox_purge_batch: store, older_than_ms >= 0 and a limit of "
                            "1..100000 are required");
    /* The batch is chosen by the primary key's row value, which both databases compare
     * (SQLite since 3.15); hd_inbox_received serves the inner ORDER BY. */
    hd_value p[] = {hd_value_int(hd_time_now_ms() - older_than_ms), hd_value_int((int64_t)limit)};
    return hd_store_exec(store,
                         "DELETE FROM hd_inbox WHERE (consumer, message_id) IN"
                         " (SELECT consumer, message_id FROM hd_inbox WHERE received_at < $1"
                         " ORDER BY received_at LIMIT $2)",
                         p, 2, err);
}

typedef struct stats_impl {
    hd_inbox_stats pub; /* first member: what the caller sees */
    hd_rows *rows;      /* owns the consumer names */
    hd_inbox_consumer_stats items[];
} stats_impl;

int hd_inbox_stats_read(hd_store *store, hd_inbox_stats **out, hd_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (store == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_inbox_stats_read: store and out are required");
    hd_rows *rows = NULL;
    int rc = hd_store_query(store,
                            "SELECT consumer, COUNT(*), MIN(received_at), MAX(received_at)"
                            " FROM hd_inbox GROUP BY consumer ORDER BY consumer",
                            NULL, 0, &rows, err);
    if (rc < 0)
        return rc;
    size_t n = hd_rows_count(rows);
    stats_impl *st = malloc(sizeof *st + n * sizeof st->items[0]);
    if (st == NULL) {
        hd_rows_free(rows);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        hd_inbox_consumer_stats *c = &st->items[i];
        c->consumer = hd_rows_text(rows, i, 0);
        c->ids = hd_rows_int(rows, i, 1);
        c->oldest_ms = hd_rows_int(rows, i, 2);
        c->newest_ms = hd_rows_int(rows, i, 3);
    }
    st->pub.count = n;
    st->pub.consumers = st->items;
    st->rows = rows;
    *out = &st->pub;
    return (int)n;
}

void hd_inbox_stats_free(hd_inbox_stats *stats)
{
    if (stats == NULL)
        return;
    stats_impl *st = (stats_impl *)stats;
    hd_rows_free(st->rows);
    free(st);
}

int hd_inbox_seen(hd_store *store, const char *consumer, const char *message_id, hd_error *err)
{
    if (store == NULL || consumer == NULL || message_id == NULL)
        return hd_error_set(err, HD_EINVAL,
                            "hd_inbox_seen: store, consumer and message id are required");
    hd_value p[] = {hd_value_text(consumer), hd_value_text(message_id)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(store, "SELECT 1 FROM hd_inbox WHERE consumer = $1 AND message_id = $2",
                            p, 2, &rows, err);
    if (rc < 0)
        return rc;
    rc = hd_rows_count(rows) > 0;
    hd_rows_free(rows);
    return rc;
}
