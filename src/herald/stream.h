/* herald/stream.h — a log, not a queue: reading a RabbitMQ stream by offset, Kafka-style.
 *
 * A queue hands each message to ONE consumer and forgets it once acknowledged: the broker
 * keeps the position. A log (Kafka's topic partition, RabbitMQ's stream) keeps every message
 * for its retention time, numbered by an OFFSET (0, 1, 2, ...), and every reader keeps its
 * own position: two readers read the same messages, and a reader may go back and read them
 * again (replay). RabbitMQ 3.9+ (Debian 12 ships 3.10) serves streams over AMQP 0-9-1:
 *
 *   declare   queue.declare with x-queue-type "stream" (durable, not exclusive, not
 *             auto-delete); x-max-length-bytes / x-max-age bound the retention
 *   publish   as to any queue: bind it to an exchange, or publish to it by name
 *   consume   basic.consume with the argument x-stream-offset: "first", "last", "next", an
 *             offset (long), or a timestamp (AMQP timestamp, seconds); a PREFETCH (basic.qos)
 *             is required and acks are MANUAL (they only give the reader credit for more:
 *             nothing is removed); each delivery carries its offset in the header
 *             x-stream-offset
 *
 * The broker does NOT remember where a reader was (over AMQP 0-9-1; its stream protocol can,
 * Kafka's consumer groups do). The reader does, and the place to keep it is the inbox's
 * place: the SAME transaction as the effects of the record. hd_stream_consumer_poll runs
 *
 *     BEGIN; handler(record) -- its writes; hd_stream_offset_save(offset); COMMIT; then ack
 *
 * so "effect done" and "offset moved past it" are one fact. Killed at any point (kill -9),
 * the reader restarts at the stored offset + 1: a record whose transaction committed is not
 * applied again, one whose transaction did not commit is read again. That is the inbox of a
 * log: one row per reader instead of one per message id, because a log's order makes "every
 * offset up to N is done" a complete memory. (A record at or below the stored offset is
 * skipped, too: the broker attaches at the start of a chunk and may deliver a few earlier
 * records.)
 *
 * Replay is then only a new reader: a fresh projection with its own name (and so its own
 * offset row) read from an offset or a time. hd_stream_offset_reset forgets a reader's
 * position so that the next open starts where its options say.
 *
 * Tables (module "stream" in hd_schema_migrations; SQLite and PostgreSQL):
 *   hd_stream_offsets  consumer, stream (PRIMARY KEY together), last_offset, updated_at
 *
 * Known limits: one record per transaction (a group commit over a prefetch window, as the
 * inbox offers, is left out for clarity); a failed handler stops the reader (a log has no
 * per-message retry or dead letter: the next record cannot be read before this one without
 * breaking the order — fix the cause, or skip it on purpose with hd_stream_offset_save);
 * no reconnect inside the module: after HD_ECLOSED close and open again — the stored offset
 * makes that a resume. Single active consumer, partitions (super streams) and the stream
 * protocol's server-side offset tracking are not used.
 *
 * Threads: a consumer, its store handle and its connection belong to one thread.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_STREAM_H
#define HERALD_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "herald/amqp.h"
#include "herald/error.h"
#include "herald/stop.h"
#include "herald/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_STREAM_PREFETCH_DEFAULT 100 /* unacked records on the way; required by RabbitMQ */

/* ---- declaring ------------------------------------------------------------------------- */

typedef struct hd_stream_spec {
    const char *name;         /* required (copied into the declaration) */
    int64_t max_length_bytes; /* x-max-length-bytes; 0: none (the log grows until the disk
                                 alarm: set one in production) */
    const char *max_age;      /* x-max-age, e.g. "7D", "12h"; NULL: none */
} hd_stream_spec;

/* Declare the stream (queue.declare, durable, x-queue-type "stream") on a's main channel
 * (borrowed). Idempotent with the same arguments; a queue of that name and another type is
 * refused (HD_EAMQP, "406 PRECONDITION_FAILED"). Returns 0, HD_EINVAL, or the broker's code. */
int hd_stream_declare(hd_amqp *a, const hd_stream_spec *spec, hd_error *err);

/* ---- where to start -------------------------------------------------------------------- */

typedef enum hd_stream_from {
    HD_STREAM_NEXT = 0, /* only what is published after attaching (RabbitMQ's default) */
    HD_STREAM_FIRST,    /* the oldest record still retained */
    HD_STREAM_LAST,     /* the start of the last chunk */
    HD_STREAM_OFFSET,   /* .offset */
    HD_STREAM_TIME      /* the first chunk published at or after .time_ms (the broker
                           resolves seconds, and by chunk: records a little older come too) */
} hd_stream_from;

typedef struct hd_stream_start {
    hd_stream_from from;
    int64_t offset;  /* HD_STREAM_OFFSET: >= 0 */
    int64_t time_ms; /* HD_STREAM_TIME: epoch ms */
} hd_stream_start;

/* "first", "last", "next", a decimal offset, or an RFC 3339 time into *out. Returns 0 or
 * HD_EINVAL (text borrowed, may be NULL: HD_EINVAL). */
int hd_stream_start_parse(const char *text, hd_stream_start *out, hd_error *err);

/* ---- the offsets: a reader's memory, in the reader's database -------------------------- */

/* Create or upgrade hd_stream_offsets. Outside a transaction, once at start-up. Returns the
 * steps applied (>= 0) or a code. */
int hd_stream_offsets_migrate(hd_store *store, hd_error *err);

/* The last offset consumer (borrowed) handled on stream (borrowed) into *offset, or -1 when
 * it has none. Inside or outside a transaction. Returns 0 or a code. */
int hd_stream_offset_load(hd_store *store, const char *consumer, const char *stream,
                          int64_t *offset, hd_error *err);

/* Record offset (>= 0) as consumer's last on stream, in the transaction open on store (the
 * one holding the record's effects). Moves forward only: returns 1 when stored, 0 when the
 * stored offset is already >= offset (a record handled before: roll its effects back), or
 * HD_EINVAL, HD_ESTATE (no transaction open), the store's code. */
int hd_stream_offset_save(hd_store *store, const char *consumer, const char *stream, int64_t offset,
                          hd_error *err);

/* Forget consumer's position on stream (the next open starts from its options). Inside or
 * outside a transaction. Returns 1 when there was one, 0 when not, or a code. */
int hd_stream_offset_reset(hd_store *store, const char *consumer, const char *stream,
                           hd_error *err);

/* ---- reading --------------------------------------------------------------------------- */

/* One record, borrowed for the handler call. */
typedef struct hd_stream_record {
    const char *stream;
    int64_t offset;
    const void *body; /* not NUL-terminated */
    size_t body_len;
    const char *routing_key; /* as published ("" to the stream by name) */
    const char *message_id;  /* the AMQP message-id property; NULL when absent */
    const char *type;        /* the AMQP type property; NULL when absent */
    int64_t timestamp_ms;    /* the AMQP timestamp property (seconds, as ms); 0 when absent */
} hd_stream_record;

/* The reader's work on one record, inside the transaction open on store (borrowed: write
 * the effects there). Return 0, or a negative code with err set: the transaction is rolled
 * back, the offset does not move, and the poll fails with that code. */
typedef int (*hd_stream_handler)(void *ctx, hd_store *store, const hd_stream_record *rec,
                                 hd_error *err);

typedef struct hd_stream_consumer_options {
    const char *stream;        /* required (copied) */
    const char *consumer;      /* required: its name in hd_stream_offsets (copied) */
    hd_store *store;           /* required, borrowed: migrated (hd_stream_offsets_migrate); used by
                                  this consumer alone while it is open */
    hd_stream_handler handler; /* required */
    void *ctx;
    hd_stream_start start;       /* where to begin when the store has no offset for (consumer,
                                    stream); with one, it resumes at that offset + 1 */
    int prefetch;                /* 0: HD_STREAM_PREFETCH_DEFAULT */
    const hd_amqp_options *amqp; /* NULL: defaults */
} hd_stream_consumer_options;

typedef struct hd_stream_consumer hd_stream_consumer;

typedef struct hd_stream_counts {
    uint64_t delivered; /* deliveries received */
    uint64_t handled;   /* records whose effects committed */
    uint64_t skipped;   /* records at or below the stored offset (chunk starts, resumes) */
} hd_stream_counts;

/* Connect to url, read the stored offset, set the prefetch and attach to the stream from
 * there (or from opts->start). *out is new (hd_stream_consumer_close). Returns 0, HD_EINVAL,
 * the store's code, or hd_amqp_open's and the broker's (HD_EAMQP "404 NOT_FOUND": no such
 * stream; "406": not a stream). */
int hd_stream_consumer_open(const char *url, const hd_stream_consumer_options *opts,
                            hd_stream_consumer **out, hd_error *err);

/* Close the connection and free; NULL is fine. Records delivered and not yet handled are
 * simply read again by the next reader from the stored offset. */
void hd_stream_consumer_close(hd_stream_consumer *c);

/* Wait at most timeout_ms for one record and handle it (see the top of this file). Returns
 * 1 handled, 0 nothing came in time or the record was skipped, or: the handler's code (the
 * transaction was rolled back: the record will be read again after a reopen), the store's
 * code, HD_EPROTO (a delivery without x-stream-offset: not a stream), HD_ECLOSED or
 * HD_EAMQP (the connection or channel closed: close, then open again to resume). */
int hd_stream_consumer_poll(hd_stream_consumer *c, int timeout_ms, hd_error *err);

/* Poll until stop (borrowed; NULL: never) is requested — checked between polls of at most
 * 100 ms — or, when idle_ms > 0, until no record came for idle_ms ("caught up": how replay
 * knows it is done, since AMQP 0-9-1 does not tell a reader where the log ends). Returns 0,
 * or the first failure of a poll. */
int hd_stream_consumer_run(hd_stream_consumer *c, const hd_stop *stop, int idle_ms, hd_error *err);

/* The last offset handled or skipped (-1: none yet), and the counts. */
int64_t hd_stream_consumer_offset(const hd_stream_consumer *c);
void hd_stream_consumer_get_counts(const hd_stream_consumer *c, hd_stream_counts *out);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STREAM_H */
