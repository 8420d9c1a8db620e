/* users/integration.h — infrastructure: from domain events to integration events.
 *
 * Other services never see the User aggregate or its domain events; they see integration
 * events, a published contract (docs/services/users.md has examples): CloudEvents
 * envelopes (envelope.h) of these types, all at schema version 1, with source
 * "herald-users" by default:
 *
 *   users.user_registered            {user_id, email, name, verification_link}
 *   users.user_verified              {user_id, email, name}
 *   users.password_reset_requested   {user_id, email, name, reset_link}
 *   users.user_deleted               {user_id}
 *
 * A change to a v1 payload may only ADD optional fields (consumers read tolerantly);
 * anything else is a v2, published next to v1 until every consumer moved.
 *
 * The translation is done by domain event handlers registered on the service's dispatcher
 * (this is the seed's "event handler that saves an integration event to the outbox"). A
 * handler runs inside the unit of work of the use case that raised the event, and appends
 * the envelope with hd_outbox_append_uow: the outbox row commits with the user row, or
 * neither does, and no broker is involved until the relay picks the row up.
 *
 * Each envelope carries the correlation id of the request that caused it (the HTTP layer
 * takes it from X-Correlation-Id or makes one), attached to the unit of work with
 * users_uow_set_correlation_id, and the domain event's id as causation id. Before it is
 * appended, an envelope is checked against the contract's validators (the same registry a
 * consumer or a contract test uses): an event that breaks the contract is a bug here and
 * must fail the request, not a consumer later.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef USERS_INTEGRATION_H
#define USERS_INTEGRATION_H

#include "herald/dispatcher.h"
#include "herald/envelope.h"
#include "herald/error.h"
#include "herald/uow.h"

#define USERS_SOURCE_DEFAULT "herald-users"

#define USERS_EVENT_REGISTERED      "users.user_registered"
#define USERS_EVENT_VERIFIED        "users.user_verified"
#define USERS_EVENT_RESET_REQUESTED "users.password_reset_requested"
#define USERS_EVENT_DELETED         "users.user_deleted"
#define USERS_EVENT_VERSION         1

typedef struct users_integration users_integration;

/* A translator publishing as source, with links made of a base URL followed by the token
 * ("https://app.example.com/verify?token=" + 64 hex characters). The strings are copied.
 * Returns new (free with users_integration_free), NULL on a NULL or empty argument or when
 * memory runs out. */
users_integration *users_integration_new(const char *source, const char *verify_base_url,
                                         const char *reset_base_url);

/* Free ui (NULL is fine). Every dispatcher it was registered on must be freed first (or
 * never dispatch again): the registrations borrow ui. */
void users_integration_free(users_integration *ui);

/* Register the four handlers on d (ui borrowed). Returns 0, HD_EINVAL, HD_ENOMEM. */
int users_integration_register(users_integration *ui, hd_dispatcher *d);

/* A new registry that knows the four (type, version) pairs above and validates their data
 * (free with hd_registry_free): for consumers and contract tests. NULL on ENOMEM. */
hd_registry *users_integration_registry(void);

/* ---- the request scope: which request a unit of work serves --------------------------- */

/* Remember the correlation id (copied; NULL or "" means none) for the envelopes the unit's
 * handlers build. Returns 0, HD_EINVAL, HD_ENOMEM. */
int users_uow_set_correlation_id(hd_uow *uow, const char *correlation_id);

/* The correlation id set on uow (borrowed), or NULL. */
const char *users_uow_correlation_id(hd_uow *uow);

#endif /* USERS_INTEGRATION_H */
