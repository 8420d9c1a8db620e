/* herald/delivery.h — what a message handler sees, and what it answers.
 *
 * A handler is the application's code for one message. It gets an hd_delivery (the body
 * and what the broker and the producer said about it) and returns one of three verdicts:
 *
 *   HD_CONSUME_OK      done: the message is acknowledged and the broker forgets it
 *   HD_CONSUME_RETRY   failed for a reason that may pass (a database down, a timeout): try
 *                      again later, after a delay that grows with each attempt, and give up
 *                      into the dead-letter queue after the policy's last attempt
 *   HD_CONSUME_REJECT  will never succeed (invalid content, a business rule says no): put it
 *                      in the dead-letter queue now, with a reason a person can read
 *
 * A handler that knows WHY it failed says so with hd_delivery_reason(); the reason travels
 * with a dead letter in its `x-herald-reason` header.
 *
 * The same handler type serves the RabbitMQ consumer (consumer.h) and both integration event
 * buses (bus.h), so an application written against the in-memory bus in its unit tests runs
 * unchanged on RabbitMQ.
 *
 * Ownership: everything an hd_delivery points to is BORROWED from the consumer or bus that
 * calls the handler and is valid only during the call. Copy what you keep.
 */
#ifndef HERALD_DELIVERY_H
#define HERALD_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "herald/envelope.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hd_consume_result {
    HD_CONSUME_OK = 0,
    HD_CONSUME_RETRY = 1,
    HD_CONSUME_REJECT = 2
} hd_consume_result;

/* "OK", "RETRY", "REJECT"; "?" otherwise. Static string. */
const char *hd_consume_result_name(hd_consume_result r);

/* One message header, as text. Integer and boolean headers are shown in decimal ("3",
 * "1"); headers holding tables or arrays (x-death among them) are left out: their content
 * is summed up by hd_delivery.attempt. */
typedef struct hd_header {
    const char *name;
    const char *value;
} hd_header;

/* The longest reason kept for a dead letter (longer ones are truncated). */
#define HD_REASON_MAX 256

typedef struct hd_delivery {
    const void *body; /* the bytes as published; not NUL-terminated */
    size_t body_len;
    const char *queue;          /* the queue it was consumed from ("" if none: in-memory) */
    const char *exchange;       /* the exchange it was published to ("" = default) */
    const char *routing_key;    /* for herald's buses: the event type */
    const char *message_id;     /* NULL when the producer set none */
    const char *correlation_id; /* NULL when absent */
    const char *type;           /* the AMQP "type" property; NULL when absent */
    const char *content_type;   /* NULL when absent */
    const hd_header *headers;   /* application headers as text; see hd_header */
    size_t n_headers;
    int redelivered;             /* 1: delivered before and not acknowledged (a consumer
                                    died or its connection closed while holding it) */
    int attempt;                 /* 1 for the first delivery, 2 after one retry, ...: counted
                                    by the broker in x-death, see retry.h. A redelivery after
                                    a crash is the same attempt again (redelivered = 1). */
    const hd_envelope *envelope; /* the decoded CloudEvents envelope when the consumer has a
                                    registry; NULL otherwise */

    /* Where hd_delivery_reason writes: the caller's buffer of HD_REASON_MAX bytes. Not for
     * handlers to touch directly (the pointer is const-qualified only at the struct level,
     * which is how a const hd_delivery can still take a reason). */
    char *reason_buf;
} hd_delivery;

/* The value of header `name` (case-sensitive, as AMQP is), or NULL. Borrowed from d. */
const char *hd_delivery_header(const hd_delivery *d, const char *name);

/* Record why the handler is returning RETRY or REJECT (printf format). The last call wins.
 * Without a reason the dead letter says "handler rejected" or "handler failed N times". */
void hd_delivery_reason(const hd_delivery *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The handler: ctx is the pointer given when it was registered, d is borrowed for the call.
 * It runs in the thread that polls the consumer or bus. */
typedef hd_consume_result (*hd_consume_fn)(void *ctx, const hd_delivery *d);

/* A batch handler (group commit): gets up to a window of deliveries at once, e.g. to write
 * their inbox rows in one transaction — one fsync for the batch instead of one per message.
 * OK acknowledges all of them with one multiple ack; any other answer makes the consumer
 * fall back to the single handler for each message of the batch, so one bad message does
 * not fail its neighbours. ds and every delivery in it are borrowed for the call. */
typedef hd_consume_result (*hd_consume_batch_fn)(void *ctx, const hd_delivery *const *ds, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_DELIVERY_H */
