/* users/messages_api.h — the HTTP routes of the messages feature (messages.h).
 *
 *   POST /messages {content, sender, metadata?}  202 {id, status, sent_at} + Location
 *                                                 400 413 415 422 401
 *   GET  /messages?limit=&cursor=&sender=         200 {items, next_cursor}   400 401
 *   GET  /messages/{id}                           200 message                404 401
 *
 * Every route is an admin route: `Authorization: Bearer <HD_USERS_ADMIN_TOKEN>`, the same
 * rule as the user administration (the messages carry whatever their senders wrote, and the
 * service has no logins). POST answers 202, not 201: the message is readable once the
 * consumer has stored it (messages.h), which may be a moment later, or never when no
 * relay runs. Errors are application/problem+json; a 422 lists every invalid field.
 * docs/openapi/messages.yaml is the contract.
 *
 * Ownership follows jansson ("new", "borrowed", "stolen").
 */
#ifndef USERS_MESSAGES_API_H
#define USERS_MESSAGES_API_H

#include <jansson.h>

#include "herald/error.h"
#include "herald/http.h"
#include "herald/log.h"

#include "messages.h"

typedef struct messages_http messages_http;

/* Route the three routes on srv (borrowed; not started yet) over app (borrowed).
 * admin_token is copied (NULL or "": every route answers 401); logger borrowed (NULL: the
 * default). The server's observer (users_http_new's) counts these routes too. *out is new:
 * free it after hd_http_server_free. Returns 0, HD_EINVAL, HD_ENOMEM, hd_http_route's code. */
int messages_http_new(hd_http_server *srv, messages_app *app, const char *admin_token,
                      hd_logger *logger, messages_http **out, hd_error *err);

void messages_http_free(messages_http *h);

/* A message as the API shows it: {id, sender, content, metadata, correlation_id, sent_at,
 * received_at}. New reference; NULL when memory runs out. */
json_t *messages_http_json(const message_view *v);

#endif /* USERS_MESSAGES_API_H */
