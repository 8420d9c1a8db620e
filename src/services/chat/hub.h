/* chat/hub.h — the chat's state in one process: rooms, members, and the browsers listening.
 *
 * A member JOINS a room under a name and gets a random token (64 hex characters, 256 bits).
 * The hub keeps only the token's BLAKE2b hash, so a memory dump or a debug log of the hub
 * gives nobody a usable credential; a token is checked by hashing what is presented and
 * comparing hashes. A token is good for one room, until the member LEAVES or it has been
 * unused (no post, no open stream) for session_ttl_ms.
 *
 * A LISTENER is one open Server-Sent Events stream (one browser tab). Each has a bounded
 * queue of frames: the hub never waits for a browser. When a listener's queue is full the
 * listener is DROPPED — its stream gets a last "bye" frame and ends — instead of buffering
 * for it without bound (a slow or stalled browser must not grow this process's memory).
 * EventSource reconnects by itself; what was sent meanwhile is lost for that browser, which
 * is the chat's bargain (docs/tutorial/20-live-chat.md).
 *
 * Threads: every function may be called from any thread (HTTP handlers, the bus thread);
 * one mutex guards everything, and each listener has a condition variable its stream waits
 * on. chat_listener_read blocks (it is an hd_http_stream_read for a thread-per-connection
 * server: http.h, "streamed responses").
 *
 * Lifecycle: chat_hub_new -> join / subscribe / deliver ... -> chat_hub_close (ends every
 * stream) -> stop the HTTP server (it frees the streams) -> chat_hub_free.
 */
#ifndef CHAT_HUB_H
#define CHAT_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "herald/error.h"

#include "domain.h"

#define CHAT_TOKEN_LEN 64 /* hex characters */

#define CHAT_DEFAULT_MAX_SESSIONS   1000
#define CHAT_DEFAULT_MAX_LISTENERS  200
#define CHAT_DEFAULT_STREAMS_PER    4
#define CHAT_DEFAULT_QUEUE          64
#define CHAT_DEFAULT_SESSION_TTL_MS (12LL * 3600 * 1000)
#define CHAT_DEFAULT_HEARTBEAT_MS   15000

typedef struct chat_hub chat_hub;
typedef struct chat_listener chat_listener;

typedef struct chat_hub_options {
    const char *const *rooms; /* borrowed for the call (copied): the rooms that exist */
    size_t n_rooms;
    size_t max_sessions;        /* members joined at once, all rooms; 0 = default */
    size_t max_listeners;       /* open streams, all rooms; 0 = default */
    size_t streams_per_session; /* open streams one token may hold; 0 = default */
    size_t queue_len;           /* frames queued per listener before it is dropped */
    int64_t session_ttl_ms;     /* an unused token expires after; 0 = default */
    int64_t heartbeat_ms;       /* an idle stream gets a comment line this often */
} chat_hub_options;

/* A new hub; *out is new (chat_hub_free). Returns 0, HD_EINVAL (no rooms, a bad room
 * name) or HD_ENOMEM. */
int chat_hub_new(const chat_hub_options *opts, chat_hub **out, hd_error *err);

/* Free the hub. Every stream must have been freed first (stop the HTTP server). NULL ok. */
void chat_hub_free(chat_hub *h);

/* 1 when room exists. */
int chat_hub_has_room(const chat_hub *h, const char *room);

/* The rooms (borrowed from the hub) and the listeners each has, for GET /rooms. */
size_t chat_hub_room_count(const chat_hub *h);
const char *chat_hub_room_name(const chat_hub *h, size_t i);
size_t chat_hub_room_listeners(chat_hub *h, size_t i);

/* Join room as name: token_out receives the new token (CHAT_TOKEN_LEN hex + NUL). Returns
 * 0, HD_ENOTFOUND (no such room), HD_EVALIDATE (name), HD_EBUSY (max_sessions reached,
 * after expired sessions were swept), HD_ESTATE (closed) or HD_ENOMEM. */
int chat_hub_join(chat_hub *h, const char *room, const char *name,
                  char token_out[CHAT_TOKEN_LEN + 1], hd_error *err);

/* Who holds token in room: name_out receives the member's name. Refreshes the session's
 * last use. Returns 0, HD_EAUTH (unknown or expired token; the room of another token is
 * HD_EAUTH too: a token says nothing about other rooms) or HD_ESTATE. */
int chat_hub_check(chat_hub *h, const char *room, const char *token,
                   char name_out[CHAT_NAME_MAX + 1], hd_error *err);

/* Forget token's session and end its streams. Returns 0 or HD_EAUTH. */
int chat_hub_leave(chat_hub *h, const char *room, const char *token, hd_error *err);

/* A new listener on room for token: *out is new and owned by the stream that reads it
 * (chat_listener_read / chat_listener_release are its hd_http_stream_read / _free).
 * Returns 0, HD_EAUTH, HD_EBUSY (max_listeners or streams_per_session reached), HD_ESTATE
 * (closed) or HD_ENOMEM. */
int chat_hub_subscribe(chat_hub *h, const char *room, const char *token, chat_listener **out,
                       hd_error *err);

/* hd_http_stream_read: the next SSE bytes of listener ctx; blocks until there are some
 * (a message, a heartbeat, the last "bye"). HD_HTTP_STREAM_END once it is closed. */
ssize_t chat_listener_read(void *ctx, uint64_t pos, char *buf, size_t max);

/* hd_http_stream_free: the stream is gone (ended, or the browser went away). */
void chat_listener_release(void *ctx);

/* Queue m (borrowed) for every listener of its room in this process. Listeners whose queue
 * is full are dropped. Returns the number of listeners it was queued for (0 for an unknown
 * room), or HD_ENOMEM. */
int chat_hub_deliver(chat_hub *h, const chat_message *m);

/* End every stream (a last "bye" frame each) and refuse new joins and streams: the first
 * step of a clean stop. Idempotent. */
void chat_hub_close(chat_hub *h);

typedef struct chat_hub_stats {
    size_t sessions, listeners;
    uint64_t delivered; /* frames queued for listeners */
    uint64_t dropped;   /* listeners dropped because their queue was full */
} chat_hub_stats;
void chat_hub_get_stats(chat_hub *h, chat_hub_stats *out);

#endif /* CHAT_HUB_H */
