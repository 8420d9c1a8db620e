/* chat/api.h — the chat's HTTP routes (docs/services/chat.md; docs/openapi/chat.openapi.json).
 *
 *   GET  /                          the page (page.h); /chat.js and /chat.css beside it
 *   GET  /health                    200 {"status":"ok","bus":...,"instance":...,counts}; 503
 *                                   while stopping
 *   GET  /rooms                     the rooms and how many listen here
 *   POST /rooms/{room}/join         {"name"} -> 201 {"token","room","name"}
 *   POST /rooms/{room}/messages     Authorization: Bearer <token>; {"text"} -> 202 {"id"}
 *   POST /rooms/{room}/leave        Authorization: Bearer <token> -> 204
 *   GET  /rooms/{room}/events?token=<token>   text/event-stream: "message" events, then a
 *                                   "bye" event when the stream is ended by the server
 *
 * Every refusal is a problem+json 4xx: 400 malformed JSON or query, 401 no or a wrong
 * token, 404 unknown room, 413 a body over the limit, 415 not JSON, 422 a name or text the
 * chat does not accept, 429 too many members or listeners, or too many joins from one client
 * address (HD_CHAT_RATE_JOIN: without it, one client could take every member slot); 503 only
 * while stopping or when the bus fails.
 */
#ifndef CHAT_API_H
#define CHAT_API_H

#include "herald/http.h"
#include "herald/ratelimit.h"

#include "hub.h"
#include "integration.h"

typedef struct chat_api_options {
    chat_hub *hub;            /* borrowed */
    chat_bus *bus;            /* borrowed */
    const char *instance;     /* borrowed: this process's name, in /health and messages */
    hd_logger *logger;        /* borrowed */
    hd_ratelimit *join_limit; /* borrowed; NULL: joins are not limited per client address */
} chat_api_options;

typedef struct chat_api chat_api;

/* Route everything on srv (before it starts). *out is new (chat_api_free, after the server
 * stopped). Returns 0 or HD_ENOMEM / HD_EEXIST. */
int chat_api_new(hd_http_server *srv, const chat_api_options *o, chat_api **out, hd_error *err);
void chat_api_free(chat_api *api);

#endif /* CHAT_API_H */
