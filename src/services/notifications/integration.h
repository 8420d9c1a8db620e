/* notifications/integration.h — the service's contracts with the outside: the integration
 * events it consumes, and the ones it emits.
 *
 * CONSUMED (from the users service: topic exchange "users", routing key = type, schema v1;
 * the consumer side of the contract reads tolerantly: it checks only the fields it uses and
 * ignores the rest, so the users service may add optional fields without breaking it):
 *
 *   users.user_registered           {user_id, email, name, verification_link}
 *                                   -> an email_verification notification
 *   users.user_verified             {user_id, email, name}  -> a welcome notification
 *   users.password_reset_requested  {user_id, email, name, reset_link}
 *                                   -> a password_reset notification
 *   users.user_deleted              {user_id}  -> the user's preferences and history are
 *                                   erased (application.h explains why)
 *
 * The validators require user_id (and email where a mail follows) and check the kinds of
 * name and the links when they are present. They do NOT require the links: the template is
 * the authority on which variables a mail needs, and a missing one is refused there with a
 * reason naming the template and the variable (the message goes to the dead-letter queue).
 *
 * EMITTED (through the service's own outbox, source "herald-notifications", schema v1):
 *
 *   notifications.notification_sent    {notification_id, user_id, type, attempts, sent_at}
 *   notifications.notification_failed  {notification_id, user_id, type, attempts,
 *                                       last_error, failed_at}
 *
 * No address and no content travel in them: other services need to know THAT a mail went
 * out (or could not), not to whom or what it said. Each carries the correlation id of the
 * flow that caused it and, as causation id, the id of the users event (or of the domain
 * event, for notifications asked for through the API).
 *
 * The translation from domain events is done by handlers on the service's dispatcher, the
 * way the users service does it: they run inside the unit of work that recorded the outcome
 * and append the envelope with hd_outbox_append_uow, so the event commits with the
 * notification's new status or not at all.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef NOTIFICATIONS_INTEGRATION_H
#define NOTIFICATIONS_INTEGRATION_H

#include <jansson.h>

#include "herald/dispatcher.h"
#include "herald/envelope.h"
#include "herald/error.h"

#include "domain.h"
#include "repository.h"

#define NOTIFICATIONS_CONSUMER       "notifications" /* the inbox's consumer name */
#define NOTIFICATIONS_SOURCE_DEFAULT "herald-notifications"

#define USERS_TOPIC                 "users"
#define USERS_EVENT_REGISTERED      "users.user_registered"
#define USERS_EVENT_VERIFIED        "users.user_verified"
#define USERS_EVENT_RESET_REQUESTED "users.password_reset_requested"
#define USERS_EVENT_DELETED         "users.user_deleted"
#define USERS_EVENT_VERSION         1

#define NOTIFICATIONS_EVENT_SENT    "notifications.notification_sent"
#define NOTIFICATIONS_EVENT_FAILED  "notifications.notification_failed"
#define NOTIFICATIONS_EVENT_VERSION 1

/* The users event types the service consumes, for queue bindings (a borrowed static array
 * of *n names). */
const char *const *notif_consumed_types(size_t *n);

/* A new registry of the four consumed (type, version) pairs with their validators (free
 * with hd_registry_free); NULL when memory runs out. */
hd_registry *notif_consumed_registry(void);

/* A new registry of the two emitted pairs, for self-checks and contract tests. */
hd_registry *notif_emitted_registry(void);

/* What a consumed event asks for. */
typedef enum notif_intent {
    NOTIF_INTENT_NONE = 0, /* not an event this service acts on */
    NOTIF_INTENT_NOTIFY,   /* send a notification of *type */
    NOTIF_INTENT_ERASE,    /* forget the user */
} notif_intent;

/* The intent of an event of type (borrowed) and, for NOTIF_INTENT_NOTIFY, its notification
 * type in *type. */
notif_intent notif_intent_of(const char *event_type, notification_type *type);

/* The template variables of a notification from an event's data or an API request's
 * "variables" (borrowed object): a new object with every member of data, and "name" set to
 * "there" when it is an empty string, so that a user who gave no name reads "Hello there,"
 * rather than "Hello ,". A missing name stays missing (the template refuses it). NULL when
 * data is not an object or memory runs out. */
json_t *notif_template_variables(const json_t *data);

/* What a pending notification keeps to be rendered again (the sweeper, after a failed
 * send or a crash), in one of two forms that its row's variables_kind says
 * (notif_stored_kind, repository.h): the template variables as JSON text
 * (NOTIF_STORED_VARIABLES, a notification asked for through the API), or the event itself
 * as it came from the broker (NOTIF_STORED_EVENT). Keeping the event's own bytes costs a
 * copy where dumping the variables cost a JSON encode (about 100 instructions a byte) on
 * every notification, for text that is erased again when the mail goes out. Only the
 * consumer's path writes NOTIF_STORED_EVENT, so an API request's variables can never pass
 * for an event (whose "data" would escape the request's link check), whatever their text. */

/* The stored form of an event's body (borrowed, len bytes, not NUL-terminated): a new
 * NUL-terminated copy (free()), or NULL when memory runs out. The store binds text as a C
 * string, hence the copy. */
char *notif_stored_event(const void *body, size_t len);

/* The template variables of stored (borrowed text of the given kind; reg checks a stored
 * event against the consumed contract again): a new object (json_decref), or NULL with err
 * set when the text does not decode as that kind. */
json_t *notif_stored_variables(const hd_registry *reg, notif_stored_kind kind, const char *stored,
                               hd_error *err);

/* Register the handlers that turn NOTIFICATION_SENT / NOTIFICATION_FAILED into outbox rows
 * on d. source is copied into a context owned by the returned handle (free it with
 * notif_translator_free after every dispatcher using it is freed). NULL on ENOMEM or a
 * registration failure. */
typedef struct notif_translator notif_translator;
notif_translator *notif_translator_new(hd_dispatcher *d, const char *source);
void notif_translator_free(notif_translator *t);

/* The integration event for a domain event of this service (borrowed), new; NULL when ev
 * is not one that is published, or memory runs out. Exposed for tests. */
hd_envelope *notif_integration_event(const hd_event *ev, const char *source);

#endif /* NOTIFICATIONS_INTEGRATION_H */
