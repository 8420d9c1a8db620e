/* herald/bus_redis.h — the integration event bus on Redis pub/sub.
 *
 * The Python `events` package's online chat example (docs/README.md, "The systems herald
 * re-implements") carries its integration events over Redis pub/sub; this is that bus, behind
 * the same interface (bus.h) as the RabbitMQ and in-memory ones, on hiredis. The mapping:
 *
 *   topic       a channel prefix: event type T of topic "chat" travels on channel "chat:T"
 *               (hd_bus_redis_channel)
 *   consumer    a registration subscribes its connection to the channel of each event type
 *               (SUBSCRIBE); a type with a RabbitMQ-style wildcard ("chat.*", "chat.#")
 *               subscribes the topic's pattern "chat:*" (PSUBSCRIBE) and the bus keeps only
 *               the types the wildcard matches (hd_bus_redis_type_matches), so a
 *               registration means the same on both buses
 *   send        PUBLISH of one frame (hd_bus_redis_frame_encode: the message id, correlation
 *               id and content type, then the body) to "<topic>:<type>"
 *   poll        reads the subscription's socket (together with hd_bus_run's stop: a stop
 *               ends an idle wait at once) and runs the handlers of every registration the
 *               message is for, each once
 *
 * Connections: one for sending, one for the bus's subscriptions (a subscribed Redis
 * connection can do nothing else).
 *
 * Threads: the two connections are separate, so ONE thread may send (hd_bus_send,
 * hd_bus_send_raw) while ANOTHER polls (hd_bus_poll, hd_bus_run) — a service's HTTP
 * handlers publishing while its bus thread delivers; serialise senders among themselves
 * (a lock around hd_bus_send). hd_bus_redis_get_counts may be called from any thread.
 * Register, startup, shutdown and free only while nothing else uses the bus.
 *
 * Known limits — what pub/sub does not promise, and so what this bus does not either (the
 * RabbitMQ bus with the outbox and inbox does; tutorial chapter 19 counts the difference):
 *   - no persistence: Redis forwards a message to the connections subscribed at that moment
 *     and forgets it. A subscriber that is down, restarting or reconnecting MISSES every
 *     message published meanwhile, silently (hd_bus_redis_counts.sent_unheard shows the
 *     publisher's side when nobody at all was listening);
 *   - no acknowledgement and no redelivery: a handler's RETRY or REJECT cannot put the
 *     message back or in a dead-letter queue; the bus counts it (failed) and drops it. The
 *     same for a message that does not decode (undecodable);
 *   - no competing consumers: every subscribed process gets every message; two instances of
 *     one consumer both handle it (a queue would give it to one);
 *   - a slow subscriber is disconnected by Redis once its output buffer passes
 *     client-output-buffer-limit pubsub (32 MB by default), and loses what was in it;
 *   - no TLS (hiredis 0.14 has none): redis:// only, for loopback or a trusted network.
 *   - SIGPIPE: hiredis writes with write(2), so a write to a connection Redis has closed
 *     raises SIGPIPE, which kills a process that did not ignore it. A program using this
 *     bus ignores SIGPIPE (signal(SIGPIPE, SIG_IGN)), as herald's services do; a library
 *     must not change a process's signal dispositions for it.
 * Delivery order is the publish order per publisher connection. Duplicates are rare: none,
 * except when a PUBLISH whose connection broke is sent again on a new one (hd_bus_send does
 * that once) and the first had reached Redis after all; the message id is the same, so an
 * inbox absorbs it.
 */
#ifndef HERALD_BUS_REDIS_H
#define HERALD_BUS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "herald/bus.h"
#include "herald/envelope.h"
#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the URL ---------------------------------------------------------------------------- */

/* redis://[[user]:password@]host[:port][/db]. user and password are percent-decoded
 * ("%40" for '@', "%3A" for ':', "%2F" for '/'); no user and a password means AUTH with the
 * password alone (requirepass, Redis' "default" user). host may be an IPv6 literal in
 * brackets. Port default 6379. db is accepted and kept, and means nothing here: pub/sub
 * channels are server-wide, whatever database a connection selected. */
typedef struct hd_bus_redis_url {
    char user[128];     /* "" = none */
    char password[256]; /* "" = no AUTH */
    char host[256];
    int port;
    int db; /* 0 when absent */
} hd_bus_redis_url;

/* Parse url into *out. Returns 0, or HD_EURL (NULL, a scheme other than redis://, an empty
 * host, a bad port or db, a query, a part too long, a bad percent escape; rediss:// is
 * refused: no TLS in hiredis 0.14) with the reason in err, which never contains the URL or
 * any part of its userinfo: a password must not reach a log through an error message. *out
 * is zeroed on error. */
int hd_bus_redis_url_parse(const char *url, hd_bus_redis_url *out, hd_error *err);

/* Copy url into out (cap bytes, always NUL-terminated when cap > 0) with the password
 * replaced by "***", for logs. A URL without "://" is shown as "(not a URL)". */
void hd_bus_redis_url_redact(const char *url, char *out, size_t cap);

/* ---- names and matching ------------------------------------------------------------------ */

/* The channel of event type `type` on `topic`: "<topic>:<type>", written to out (cap bytes).
 * Returns its length, or HD_EINVAL (an empty or NULL part) or HD_ETOOBIG (does not fit). */
int hd_bus_redis_channel(const char *topic, const char *type, char *out, size_t cap);

/* 1 when event type `type` matches the registered type `pattern` the way a RabbitMQ topic
 * binding does (words separated by '.'; '*' is exactly one word, '#' zero or more), else 0.
 * A pattern without wildcards matches only itself. */
int hd_bus_redis_type_matches(const char *pattern, const char *type);

/* ---- the frame (what travels on a channel) ----------------------------------------------- */

/* A message on a channel is
 *     "herald/1\n" [header "\n"]* "\n" body          header: "<name>: <value>"
 * with the headers id, correlation-id and content-type (others are ignored, each at most
 * once, values of 1..HD_BUS_REDIS_FRAME_VALUE_MAX-1 bytes without CR, LF or NUL). A message
 * that does not start with "herald/1\n" is all body (a foreign publisher's: `redis-cli
 * PUBLISH chat:chat.message_posted '{...}'`), with no headers. */
#define HD_BUS_REDIS_FRAME_MAGIC     "herald/1\n"
#define HD_BUS_REDIS_FRAME_VALUE_MAX 256
#define HD_BUS_REDIS_FRAME_HEAD_MAX  2048 /* the headers' bytes, magic and blank line included */

/* A decoded frame: the header values copied in (NUL-terminated, "" = absent), the body
 * BORROWED from the decoded bytes. */
typedef struct hd_bus_redis_frame {
    char message_id[HD_BUS_REDIS_FRAME_VALUE_MAX];
    char correlation_id[HD_BUS_REDIS_FRAME_VALUE_MAX];
    char content_type[HD_BUS_REDIS_FRAME_VALUE_MAX];
    const void *body;
    size_t len;
} hd_bus_redis_frame;

/* Encode msg (borrowed; its topic and type are the channel's business, not the frame's) into
 * *out (new, free() it; NUL-terminated past *out_len for debuggers). Returns 0, HD_EINVAL (a
 * header value with CR/LF or too long) or HD_ENOMEM. */
int hd_bus_redis_frame_encode(const hd_bus_message *msg, char **out, size_t *out_len,
                              hd_error *err);

/* Decode len bytes at data (borrowed; out->body points into them). Returns 0 or HD_EPROTO (a
 * frame that starts with the magic but is malformed: no blank line within
 * HD_BUS_REDIS_FRAME_HEAD_MAX, a line without ": ", a value empty, too long or holding CR/NUL, a
 * header twice); *out is zeroed on error. Never reads past data + len. */
int hd_bus_redis_frame_decode(const void *data, size_t len, hd_bus_redis_frame *out, hd_error *err);

/* ---- the bus ------------------------------------------------------------------------------ */

typedef struct hd_bus_redis_options {
    const hd_registry *registry; /* borrowed, may be NULL: when set, bodies are decoded as
                                    envelopes (hd_delivery.envelope) and what does not decode
                                    is dropped and counted (undecodable) */
    int timeout_ms;              /* connect and command timeout; 0 = 5000 */
} hd_bus_redis_options;

/* A new Redis bus for url (parsed now, connected at startup). opts may be NULL and is copied.
 * *out is new (free with hd_bus_free). Returns 0, HD_EURL or HD_ENOMEM.
 * hd_bus_startup connects both connections (AUTH when the URL has a password: HD_EAUTH when
 * refused, HD_ECONNECT when Redis is not there) and returns once every subscription is in
 * effect: what is published after it returns reaches this bus. A lost subscription is made
 * again by poll (waiting for Redis with backoff under hd_bus_run; a plain hd_bus_poll gives
 * up with HD_ECONNECT when its timeout runs out) — what was published in between is lost. */
int hd_bus_redis_new(const char *url, const hd_bus_redis_options *opts, hd_bus **out,
                     hd_error *err);

/* What the bus saw since it was made (all monotonic). */
typedef struct hd_bus_redis_counts {
    uint64_t sent;         /* PUBLISHes Redis accepted */
    uint64_t sent_unheard; /* of them, received by no connection at all (PUBLISH said 0):
                              gone for good, and only the publisher can know */
    uint64_t received;     /* messages read from the subscription connection */
    uint64_t delivered;    /* handler calls (one message can go to several registrations) */
    uint64_t handled;      /* of them, answered OK */
    uint64_t failed;       /* answered RETRY or REJECT: dropped (no redelivery, no DLQ) */
    uint64_t undecodable;  /* malformed frames and (with a registry) bodies that are not an
                              envelope the registry knows: dropped */
    uint64_t resubscribed; /* times the subscription connection was lost and made again */
} hd_bus_redis_counts;

/* Copy the counts of bus into *out; zeroes for a bus that is not a Redis bus. Thread-safe. */
void hd_bus_redis_get_counts(const hd_bus *bus, hd_bus_redis_counts *out);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BUS_REDIS_H */
