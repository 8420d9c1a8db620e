/* inbox.c — the idempotent consumer's memory; see inbox.h. */
#include "herald/inbox.h"

#include "herald/clock.h"

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
