/* herald/store_pg.h — what only the PostgreSQL store can do: LISTEN / NOTIFY.
 *
 * A relay that drains an outbox has two ways to learn that there is work: poll the table
 * every so often (simple, works everywhere, adds up to one interval of latency and a query
 * per interval when idle), or be told. PostgreSQL tells: a transaction that runs
 * `NOTIFY channel` (or `SELECT pg_notify(channel, payload)`) delivers a notification to
 * every session that ran `LISTEN channel`, *when it commits* (never if it rolls back). That
 * is exactly the moment the relay cares about: the new outbox row just became visible.
 *
 *     hd_store_pg_listen(relay_store, "hd_outbox", &err);     once
 *     for (;;) {
 *         ... claim and publish until the outbox is empty ...
 *         hd_store_pg_wait(relay_store, 5000, &err);          sleep until NOTIFY or 5 s
 *     }
 *
 * Notifications are a wake-up call, not a queue: they are lost while the listener is
 * disconnected, folded when one transaction sends the same one twice, and only delivered
 * between transactions. So the relay always polls as well (the timeout above), and treats
 * a notification as "look now" rather than "there is exactly one row".
 *
 * These functions are PostgreSQL-only on purpose: the store port (store.h) keeps to what
 * every adapter can do. On another store they return HD_EUNSUPPORTED, so a caller can try
 * them and fall back to polling or to an in-process signal (outbox.h).
 *
 * The store handle belongs to one thread at a time, as everywhere in store.h: a relay
 * that waits for notifications uses its own connection.
 */
#ifndef HERALD_STORE_PG_H
#define HERALD_STORE_PG_H

#include "herald/error.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest channel name: PostgreSQL identifiers are at most 63 bytes. */
#define HD_STORE_PG_CHANNEL_MAX 63

/* 1 when store is a PostgreSQL store, else 0 (also for NULL). */
int hd_store_is_pg(const hd_store *store);

/* Start listening on channel (borrowed): lower-case letters, digits and '_', starting with
 * a letter or '_', at most HD_STORE_PG_CHANNEL_MAX bytes (LISTEN takes no parameters, so
 * the name goes into the SQL text and is checked first). Listening twice is harmless. The
 * store remembers its channels and listens again after it reconnects.
 * Returns 0, HD_EINVAL (bad name or NULL), HD_ESTATE (inside a transaction: LISTEN would
 * only start at commit, which is confusing), HD_EUNSUPPORTED (not PostgreSQL), HD_ENOMEM,
 * HD_ECONNECT / HD_ESTORE. */
int hd_store_pg_listen(hd_store *store, const char *channel, hd_error *err);

/* Stop listening on channel (or on every channel when channel is NULL). Same codes. */
int hd_store_pg_unlisten(hd_store *store, const char *channel, hd_error *err);

/* Send a notification on channel with payload (both borrowed; payload may be NULL for "").
 * Inside a transaction it is delivered when the transaction commits, and dropped if it
 * rolls back; outside one, at once. This is an ordinary parameterised statement
 * (pg_notify), so any channel string is safe; listeners need a name hd_store_pg_listen
 * accepts. Returns 0 or a code as hd_store_exec. */
int hd_store_pg_notify(hd_store *store, const char *channel, const char *payload, hd_error *err);

/* Wait up to timeout_ms (0: just look; negative: no limit) for notifications on the
 * channels this store listens to. Returns the number received (> 0), 0 when the time ran
 * out or a signal interrupted the wait (check your stop flag and call again), or:
 * HD_ESTATE (inside a transaction: notifications wait for it to end), HD_EUNSUPPORTED,
 * HD_ECONNECT (connection lost; the next call reconnects and listens again).
 * The first call after a reconnect returns 1 at once: notifications sent while the
 * connection was down are lost, so the caller should look for work. If channel is not
 * NULL it receives the channel of the last notification (or "" after a reconnect),
 * NUL-terminated, truncated to HD_STORE_PG_CHANNEL_MAX bytes. */
int hd_store_pg_wait(hd_store *store, int timeout_ms, char channel[HD_STORE_PG_CHANNEL_MAX + 1],
                     hd_error *err);

/* The connection's socket, to poll(2) for notifications together with other descriptors
 * (a relay adds its stop token): when it turns readable, hd_store_pg_wait(store, 0, ...)
 * reads what came. Call hd_store_pg_wait(store, 0, ...) first: it reconnects and takes what
 * is already buffered, which the socket would not announce. Borrowed: do not read or close
 * it. -1 when store is not PostgreSQL or not connected. */
int hd_store_pg_fd(hd_store *store);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STORE_PG_H */
