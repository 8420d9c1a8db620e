/* herald/publisher.h — publishing with publisher confirms: know the fate of every message.
 *
 * basic.publish has no reply. Without confirms a producer cannot tell a message the broker
 * stored from one lost in a socket buffer when the connection died. In CONFIRM MODE
 * (confirm.select) the broker numbers the channel's publishes 1, 2, 3... and answers each
 * with basic.ack (it took responsibility: a persistent message in a durable queue is on
 * disk) or basic.nack (it could not). One ack may cover many messages ("multiple": every
 * number up to this one).
 *
 * Waiting for each confirm before the next publish costs a round trip plus an fsync per
 * message (about 1,900 msg/s on our machines). Keeping a WINDOW of unconfirmed messages in
 * flight lets the broker batch its disk writes (17,000 msg/s with a window of 100). This
 * publisher keeps such a window: hd_publisher_publish returns at once while the window has
 * room and blocks reading confirms when it is full.
 *
 * Every message accepted by hd_publisher_publish gets exactly one FATE, reported through the
 * on_fate callback (from inside publish, wait or free, in the caller's thread):
 *
 *   HD_FATE_CONFIRMED  acked, and not returned: the broker routed it and owns it
 *   HD_FATE_NACKED     nacked: the broker could not take it (e.g. a full queue with
 *                      overflow=reject-publish); send again later
 *   HD_FATE_RETURNED   published mandatory and routed to no queue (basic.return); the broker
 *                      ACKS such a message too — the ack means "handled", not "delivered" —
 *                      so an ack after a return must not count as confirmed. Usually a
 *                      missing binding: a configuration error, not a transient one
 *   HD_FATE_LOST       the channel or connection closed before the confirm came. The message
 *                      may or may not have reached the queue: send it again (at-least-once;
 *                      consumers deduplicate with the message id, see inbox.h)
 *
 * basic.return carries no delivery tag, so a return cannot be matched to its publish by
 * number. This publisher adds a header "x-herald-seq" (the publish number) to every
 * mandatory message and matches returns by it. RabbitMQ sends the return before the ack of
 * the same message, so when the ack arrives the publisher already knows.
 *
 * Connections. The publisher reads every frame of its connection (see amqp.h): do not run
 * a consumer on the same hd_amqp. When the connection breaks, every outstanding message is
 * reported LOST and calls fail with HD_ECLOSED; after hd_amqp_reconnect the next publish
 * opens a new channel in confirm mode by itself (numbering restarts at 1 there: sequence
 * numbers are per channel, never compare them across reconnects).
 *
 * Typical loop (the relay's):
 *
 *     hd_publisher_options po = { .window = 256, .on_fate = on_fate, .ctx = &state };
 *     hd_publisher_new(amqp, &po, &pub, &err);
 *     for (each row) hd_publisher_publish(pub, &msg, NULL, &err);  // fates arrive meanwhile
 *     hd_publisher_wait(pub, 5000, &err);                           // the rest of the fates
 */
#ifndef HERALD_PUBLISHER_H
#define HERALD_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

#include "herald/amqp.h"
#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_publisher hd_publisher;

typedef enum hd_fate {
    HD_FATE_CONFIRMED = 0,
    HD_FATE_NACKED,
    HD_FATE_RETURNED,
    HD_FATE_LOST
} hd_fate;

/* "CONFIRMED", "NACKED", "RETURNED", "LOST". Static string. */
const char *hd_fate_name(hd_fate f);

/* Flags of hd_message; the zero value is what a reliable event publisher wants. */
#define HD_MSG_TRANSIENT     0x1u /* delivery_mode 1: not written to disk (default: 2) */
#define HD_MSG_NOT_MANDATORY 0x2u /* silently dropped when unroutable (default: returned) */

/* One message to publish. Every pointer is borrowed for the duration of the publish call
 * only (the bytes are on the socket when it returns); user is kept and handed back with the
 * message's fate. Optional strings may be NULL. */
typedef struct hd_message {
    const char *exchange;    /* "" or NULL = the default exchange (routing key = queue) */
    const char *routing_key; /* NULL = "" */
    const void *body;
    size_t len;
    const char *content_type; /* e.g. "application/cloudevents+json" */
    const char *type;         /* AMQP "type" property, e.g. the event type */
    const char *message_id;   /* what consumers deduplicate on */
    const char *correlation_id;
    const char *expiration;    /* per-message TTL in ms, as a decimal string ("5000") */
    const hd_amqp_kv *headers; /* application headers, string values */
    size_t n_headers;
    unsigned flags; /* HD_MSG_* */
    void *user;     /* the caller's: handed back to on_fate, never touched */

    /* Forwarding a received message as it is (the consumer's retries and dead letters).
     * Both optional and borrowed for the call, like the rest.
     *
     * raw_headers: application headers of any AMQP kind, sent exactly as given — nested
     * tables and arrays included, so x-death travels unchanged. They come first; an entry
     * whose key is also in `headers` is left out (the string header replaces it), and so is
     * an "x-herald-seq" (the copy gets its own publish number when mandatory).
     *
     * raw_properties: the AMQP properties to start from, e.g. those of a delivery: every
     * property set in it is sent as it is (timestamp, app_id, reply_to, priority, user_id,
     * expiration...) except two: delivery_mode always comes from `flags`, and its headers are
     * ignored (pass them as raw_headers). The fields above override it when not NULL. */
    const amqp_table_t *raw_headers;
    const amqp_basic_properties_t *raw_properties;
} hd_message;

/* Called once per accepted message with its fate. seq is its publish number on the current
 * channel, user the message's user pointer, reason NULL for CONFIRMED and otherwise a short
 * borrowed text ("312 NO_ROUTE", "connection closed: ...") valid during the call. The
 * callback may not call back into this publisher. */
typedef void (*hd_fate_fn)(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason);

typedef struct hd_publisher_options {
    size_t window;          /* most unconfirmed messages in flight; 0 = 256 */
    int confirm_timeout_ms; /* how long a blocked publish/wait waits for the NEXT confirm
                               before giving up with HD_ETIMEOUT; 0 = 30000 */
    hd_fate_fn on_fate;     /* may be NULL (then only hd_publish_confirmed is useful) */
    void *ctx;              /* first argument of on_fate */
} hd_publisher_options;

/* Create a publisher on connection a (borrowed: it must outlive the publisher) and open its
 * own channel in confirm mode. opts may be NULL. *out is new; free with hd_publisher_free.
 * Errors: HD_ECLOSED, HD_EAMQP, HD_ENOMEM, HD_EINVAL (window over 1,000,000). */
int hd_publisher_new(hd_amqp *a, const hd_publisher_options *opts, hd_publisher **out,
                     hd_error *err);

/* Report every outstanding message LOST ("publisher freed"), close the channel and free.
 * Call hd_publisher_wait first to give them a chance. NULL is fine. */
void hd_publisher_free(hd_publisher *p);

/* Publish m. When the window is full, first reads confirms until there is room (fates are
 * reported meanwhile). On success returns 0 and the message's publish number in *seq_out
 * (may be NULL); its fate will be reported later. On failure the message was NOT accepted
 * (no fate will be reported for it):
 *   HD_ECLOSED   connection broken (outstanding messages were reported LOST): reconnect
 *                with hd_amqp_reconnect, then publish again
 *   HD_EAMQP     the broker closed the channel, e.g. 404 NOT_FOUND for a missing exchange
 *                (outstanding messages were reported LOST); the next publish reopens it
 *   HD_ETIMEOUT  the window stayed full for confirm_timeout_ms
 *   HD_EINVAL    m or its exchange/routing key is malformed (too long) */
int hd_publisher_publish(hd_publisher *p, const hd_message *m, uint64_t *seq_out, hd_error *err);

/* Read confirms until no message is outstanding (every fate reported) or timeout_ms passes
 * (0 = only handle what has already arrived; negative = the confirm_timeout_ms of each
 * confirm). Returns 0, HD_ETIMEOUT (some still outstanding), HD_ECLOSED or HD_EAMQP (the
 * outstanding ones were reported LOST). */
int hd_publisher_wait(hd_publisher *p, int timeout_ms, hd_error *err);

/* Messages published whose fate is not reported yet. */
size_t hd_publisher_outstanding(const hd_publisher *p);

/* Publish one message and wait for its fate: 0 when CONFIRMED, HD_ENACKED, HD_ERETURNED,
 * HD_ECLOSED/HD_EAMQP when LOST (HD_EAMQP when the broker closed the channel, e.g. a missing
 * exchange) or not accepted, HD_ETIMEOUT after timeout_ms (negative = confirm_timeout_ms).
 * Other outstanding messages are waited for too (confirms come in order). The fate is also
 * reported to on_fate. One round trip per message: simple, and slow — see the window.
 *
 * After HD_ETIMEOUT the message stays outstanding: its confirm may still come, and is then
 * matched by its number and reported to on_fate like any other (never mistaken for the next
 * message's). So a caller that gives up on a message must treat it as "maybe delivered" —
 * send it again later and let consumers deduplicate — never as confirmed. */
int hd_publish_confirmed(hd_publisher *p, const hd_message *m, int timeout_ms, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_PUBLISHER_H */
