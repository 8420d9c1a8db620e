/* users/messages.h — the messages feature of the users service (seed 001's messages API).
 *
 * Why in the users service and not a service of its own: seed 001 puts it there (its
 * `POST /api/v1/messages/send` lives next to the user routes), and it needs exactly what
 * this service already runs — a store with an outbox, the in-process relay, the admin
 * token of the other admin routes. A service of its own would repeat all that wiring for
 * four routes. The feature still keeps to its own files (this one, messages_api.c), its
 * own tables and its own store handles, so it could move out without touching the users.
 *
 * The flow, which is the point of the feature (an outbox on the way out, an inbox on the
 * way in, even when the producer and the consumer are the same process):
 *
 *   POST /messages --> messages_send: ONE unit of work (uow.h) appends the intent, the
 *                      integration event messages.message_sent v1, to the outbox. Nothing
 *                      else is written: the outbox row IS the intent (as in the seed, whose
 *                      handler only saves the outbox message). 202 Accepted.
 *   relay          --> publishes it to the topic exchange "messages" (relay.h's routing:
 *                      exchange = the type's topic, routing key = the type)
 *   consumer       --> queue "users.messages" (bound with "messages.message_sent"):
 *                      messages_receive in one transaction: hd_inbox_accept(consumer
 *                      "users.messages", the message id) then INSERT INTO messages. A
 *                      duplicate (republished by the relay, redelivered by the broker) finds
 *                      its inbox row and is skipped: one row per message id.
 *   GET /messages  --> reads the messages table (what was DELIVERED, not what was sent:
 *                      a message is readable once the consumer stored it)
 *
 * The message's id is its event's CloudEvents id: one message, one event, one inbox key.
 *
 * The event contract (docs/contracts/events.md, tests/contract/test_users_messages.c):
 *   messages.message_sent v1 {message_id, sender, content, metadata (object), sent_at
 *   (RFC 3339)}; source "herald-users"; correlation id of the HTTP request.
 *
 * Limits (checked before anything is written, so hostile input is a 4xx, never a stored
 * row): sender 1..MESSAGES_SENDER_MAX bytes of UTF-8 without control characters; content
 * 1..MESSAGES_CONTENT_MAX bytes of UTF-8 without NUL; metadata a JSON object (or absent:
 * {}) whose compact JSON is at most MESSAGES_METADATA_MAX bytes and at most
 * MESSAGES_METADATA_DEPTH levels deep.
 *
 * Threads: a messages_app serialises its use of the store with a mutex; the store handle
 * is the app's alone (the runtime opens one for the HTTP side and one for the consumer).
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_MESSAGES_H
#define USERS_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "herald/clock.h"
#include "herald/delivery.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/store.h"

#define MESSAGES_EVENT_SENT     "messages.message_sent"
#define MESSAGES_EVENT_VERSION  1
#define MESSAGES_EXCHANGE       "messages"       /* the relay's topic exchange of the type */
#define MESSAGES_CONSUMER       "users.messages" /* inbox consumer name and queue name */
#define MESSAGES_SENDER_MAX     254              /* bytes: an email address at most */
#define MESSAGES_CONTENT_MAX    4096             /* bytes */
#define MESSAGES_METADATA_MAX   4096             /* bytes of compact JSON */
#define MESSAGES_METADATA_DEPTH 8                /* nesting levels of metadata */
#define MESSAGES_PAGE_DEFAULT   20
#define MESSAGES_PAGE_MAX       100
#define MESSAGES_CURSOR_MAX     128 /* an opaque cursor's length, NUL included */

/* ---- checks of input (pure: no store; the API reports every failing field at once) ------ */

/* sender (len bytes: a JSON string may hold a NUL) is 1..MESSAGES_SENDER_MAX bytes of
 * well-formed UTF-8 without control characters. Returns 0 or HD_EVALIDATE with the reason. */
int message_sender_check(const char *sender, size_t len, hd_error *err);

/* content (len bytes) is 1..MESSAGES_CONTENT_MAX bytes of well-formed UTF-8 without NUL
 * (newlines and tabs are fine). Returns 0 or HD_EVALIDATE. */
int message_content_check(const char *content, size_t len, hd_error *err);

/* metadata (borrowed) is a JSON object of at most MESSAGES_METADATA_MAX bytes compact and
 * MESSAGES_METADATA_DEPTH levels. Returns 0 or HD_EVALIDATE. */
int message_metadata_check(const json_t *metadata, hd_error *err);

/* ---- the app ---------------------------------------------------------------------------- */

typedef struct messages_app messages_app;

/* Create or upgrade the messages table, the outbox and the inbox. Outside a transaction,
 * once at start-up. Returns the steps applied (>= 0) or a code. */
int messages_migrate(hd_store *store, hd_error *err);

/* A new app over store (borrowed: it must outlive the app and be used by nobody else).
 * source: CloudEvents source (copied; NULL: "herald-users"); clock: epoch ms (NULL:
 * hd_time_now_ms). *out is new (messages_app_free). Returns 0, HD_EINVAL, HD_ENOMEM. */
int messages_app_new(hd_store *store, const char *source, int64_t (*clock)(void),
                     messages_app **out, hd_error *err);

void messages_app_free(messages_app *app);

/* What a reader sees of a delivered message (a plain value). */
typedef struct message_view {
    char id[HD_UUID_LEN + 1];
    char sender[MESSAGES_SENDER_MAX + 1];
    char content[MESSAGES_CONTENT_MAX + 1];
    char metadata[MESSAGES_METADATA_MAX + 1]; /* compact JSON object */
    char correlation_id[HD_UUID_LEN * 2 + 1];
    int64_t sent_at_ms;
    int64_t received_at_ms;
} message_view;

/* Send: check the three fields (as above; metadata NULL means {}), then one unit of work
 * appends messages.message_sent to the outbox. correlation_id (borrowed, may be NULL) is
 * stamped on the event. id_out (may be NULL) receives the message id, sent_at_ms (may be
 * NULL) its time. Returns 0, HD_EVALIDATE, or the store's code. */
int messages_send(messages_app *app, const char *correlation_id, const char *sender,
                  size_t sender_len, const char *content, size_t content_len,
                  const json_t *metadata, char id_out[HD_UUID_LEN + 1], int64_t *sent_at_ms,
                  hd_error *err);

/* Store a delivered messages.message_sent envelope (borrowed; checked against the contract
 * again: the consumer trusts nothing) through the inbox, in one transaction. Returns 1 when
 * stored, 0 for a duplicate (skipped), HD_EVALIDATE/HD_EUNKNOWN for an envelope that is not
 * a valid message (reject it: it will never succeed), or the store's code (retry). */
int messages_receive(messages_app *app, const hd_envelope *env, hd_error *err);

/* An hd_consume_fn over messages_receive (ctx: the messages_app): OK for stored and
 * duplicate, REJECT for an invalid message, RETRY when the store failed. */
hd_consume_result messages_consume(void *ctx, const hd_delivery *d);

/* The contract: a new registry knowing messages.message_sent v1 (hd_registry_free). */
hd_registry *messages_registry(void);

/* ---- queries ---------------------------------------------------------------------------- */

/* One delivered message by id. Returns 0, HD_ENOTFOUND (also for a malformed id), a code. */
int messages_get(messages_app *app, const char *id, message_view *out, hd_error *err);

typedef struct messages_page {
    message_view *items; /* count of them; owned by the page */
    size_t count;
    char next_cursor[MESSAGES_CURSOR_MAX]; /* "" on the last page */
} messages_page;

/* Up to limit (1..MESSAGES_PAGE_MAX) delivered messages in send order (sent_at, id), of
 * sender only when sender (borrowed) is not NULL, after cursor (NULL or "": the start; else
 * an earlier page's next_cursor: keyset pagination, like users_list). Release *page with
 * messages_page_release, also on failure. Returns 0, HD_ERANGE (limit), HD_EINVAL (not a
 * cursor of this API), or a code. */
int messages_list(messages_app *app, const char *sender, const char *cursor, size_t limit,
                  messages_page *page, hd_error *err);

void messages_page_release(messages_page *page);

/* messages_list's statement (static text, borrowed) with a sender (by_sender 1: $4) or
 * without: $1 the cursor's sent_at (-1: the start), $2 its id, $3 the limit. For tests that
 * read its plan: a sender's page reads messages_sender. */
const char *messages_list_sql(int by_sender);

/* The count of delivered messages (tests, the chapter). Returns >= 0 or a code. */
int64_t messages_count(messages_app *app, hd_error *err);

#endif /* USERS_MESSAGES_H */
