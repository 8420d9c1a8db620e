/* notifications/integration.c — consumed and emitted integration events (integration.h). */
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/outbox.h"
#include "herald/uow.h"

#include "integration.h"

static const char *const consumed_types[] = {
    USERS_EVENT_REGISTERED,
    USERS_EVENT_VERIFIED,
    USERS_EVENT_RESET_REQUESTED,
    USERS_EVENT_DELETED,
};

const char *const *notif_consumed_types(size_t *n)
{
    *n = sizeof consumed_types / sizeof consumed_types[0];
    return consumed_types;
}

/* ---- consumed: validators (the tolerant reader) ---------------------------------------- */

/* Fields a notification needs from any users event that asks for one. */
static const hd_field_spec mail_fields[] = {
    {"user_id", HD_JSON_STRING, 1},    {"email", HD_JSON_STRING, 1},
    {"name", HD_JSON_STRING, 0},       {"verification_link", HD_JSON_STRING, 0},
    {"reset_link", HD_JSON_STRING, 0}, {NULL, 0, 0},
};

static const hd_field_spec deleted_fields[] = {
    {"user_id", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};

static int check_user_id(const json_t *data, hd_error *err)
{
    if (!notify_user_id_valid(json_string_value(json_object_get(data, "user_id"))))
        return hd_error_set(err, HD_EVALIDATE, "field 'user_id' is not a valid user id");
    return 0;
}

static int validate_mail_event(const json_t *data, hd_error *err, void *ctx)
{
    (void)ctx;
    int rc = hd_validate_fields(data, mail_fields, err);
    if (rc < 0)
        return rc;
    if ((rc = check_user_id(data, err)) < 0)
        return rc;
    if (!notify_email_valid(json_string_value(json_object_get(data, "email"))))
        return hd_error_set(err, HD_EVALIDATE, "field 'email' is not a valid e-mail address");
    return 0;
}

static int validate_deleted(const json_t *data, hd_error *err, void *ctx)
{
    (void)ctx;
    int rc = hd_validate_fields(data, deleted_fields, err);
    return rc < 0 ? rc : check_user_id(data, err);
}

hd_registry *notif_consumed_registry(void)
{
    hd_registry *reg = hd_registry_new();
    if (reg == NULL)
        return NULL;
    int v = USERS_EVENT_VERSION;
    if (hd_registry_add(reg, USERS_EVENT_REGISTERED, v, validate_mail_event, NULL) < 0 ||
        hd_registry_add(reg, USERS_EVENT_VERIFIED, v, validate_mail_event, NULL) < 0 ||
        hd_registry_add(reg, USERS_EVENT_RESET_REQUESTED, v, validate_mail_event, NULL) < 0 ||
        hd_registry_add(reg, USERS_EVENT_DELETED, v, validate_deleted, NULL) < 0) {
        hd_registry_free(reg);
        return NULL;
    }
    return reg;
}

notif_intent notif_intent_of(const char *event_type, notification_type *type)
{
    static const struct {
        const char *event;
        notification_type type;
    } map[] = {
        {USERS_EVENT_REGISTERED, NOTIFY_EMAIL_VERIFICATION},
        {USERS_EVENT_VERIFIED, NOTIFY_WELCOME},
        {USERS_EVENT_RESET_REQUESTED, NOTIFY_PASSWORD_RESET},
    };
    if (event_type == NULL)
        return NOTIF_INTENT_NONE;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(event_type, map[i].event) == 0) {
            *type = map[i].type;
            return NOTIF_INTENT_NOTIFY;
        }
    }
    return strcmp(event_type, USERS_EVENT_DELETED) == 0 ? NOTIF_INTENT_ERASE : NOTIF_INTENT_NONE;
}

json_t *notif_template_variables(const json_t *data)
{
    if (!json_is_object(data))
        return NULL;
    json_t *vars = json_copy((json_t *)data); /* shallow: members are shared, never changed */
    if (vars == NULL)
        return NULL;
    const char *name = json_string_value(json_object_get(vars, "name"));
    if (name != NULL && name[0] == '\0' &&
        json_object_set_new(vars, "name", json_string("there")) < 0) {
        json_decref(vars);
        return NULL;
    }
    return vars;
}

char *notif_stored_event(const void *body, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, body, len);
    s[len] = '\0';
    return s;
}

json_t *notif_stored_variables(const hd_registry *reg, notif_stored_kind kind, const char *stored,
                               hd_error *err)
{
    if (stored == NULL) {
        hd_error_set(err, HD_EINVAL, "no stored variables");
        return NULL;
    }
    if (kind != NOTIF_STORED_EVENT) {
        json_error_t jerr;
        json_t *vars = json_loads(stored, 0, &jerr);
        if (!json_is_object(vars)) {
            json_decref(vars);
            hd_error_set(err, HD_EJSON, "stored variables are not a JSON object");
            return NULL;
        }
        return vars;
    }
    hd_envelope *env = NULL;
    if (hd_envelope_decode(reg, stored, strlen(stored), &env, err) < 0)
        return NULL;
    json_t *vars = notif_template_variables(hd_envelope_data(env));
    hd_envelope_free(env); /* vars holds its own references to the members */
    if (vars == NULL)
        hd_error_set(err, HD_ENOMEM, NULL);
    return vars;
}

/* ---- emitted ----------------------------------------------------------------------------- */

static const hd_field_spec sent_fields[] = {
    {"notification_id", HD_JSON_STRING, 1},
    {"user_id", HD_JSON_STRING, 1},
    {"type", HD_JSON_STRING, 1},
    {"attempts", HD_JSON_INTEGER, 1},
    {"sent_at", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};

static const hd_field_spec failed_fields[] = {
    {"notification_id", HD_JSON_STRING, 1},
    {"user_id", HD_JSON_STRING, 1},
    {"type", HD_JSON_STRING, 1},
    {"attempts", HD_JSON_INTEGER, 1},
    {"last_error", HD_JSON_STRING, 1},
    {"failed_at", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};

static int validate_specs(const json_t *data, hd_error *err, void *ctx)
{
    return hd_validate_fields(data, (const hd_field_spec *)ctx, err);
}

hd_registry *notif_emitted_registry(void)
{
    hd_registry *reg = hd_registry_new();
    if (reg == NULL)
        return NULL;
    if (hd_registry_add(reg, NOTIFICATIONS_EVENT_SENT, NOTIFICATIONS_EVENT_VERSION, validate_specs,
                        (void *)sent_fields) < 0 ||
        hd_registry_add(reg, NOTIFICATIONS_EVENT_FAILED, NOTIFICATIONS_EVENT_VERSION,
                        validate_specs, (void *)failed_fields) < 0) {
        hd_registry_free(reg);
        return NULL;
    }
    return reg;
}

/* The data of the integration event: the domain facts, with the internal members (ms
 * times, ids of the flow) turned into what the contract says. New, or NULL. */
static json_t *integration_data(const json_t *p, int sent)
{
    char when[HD_TIME_LEN + 1];
    hd_time_format(json_integer_value(json_object_get(p, sent ? "sent_at_ms" : "failed_at_ms")),
                   when);
    /* Members in sorted order (for the one sent a notification: the common case): the
     * envelope's encoder then need not sort them (same bytes, less work). Set one by one,
     * not with json_pack, whose format string is parsed anew each call (4,900 instructions
     * a notification, callgrind, issue 14's ninth pass); a missing fact fails the whole
     * object, as json_pack's "s:O" did. */
    static const char *const sent_keys[] = {"attempts", "notification_id", "sent_at",
                                            "type",     "user_id",         NULL};
    static const char *const failed_keys[] = {"notification_id", "user_id",    "type", "attempts",
                                              "failed_at",       "last_error", NULL};
    const char *const *keys = sent ? sent_keys : failed_keys;
    const char *time_key = sent ? "sent_at" : "failed_at";
    json_t *data = json_object();
    for (size_t i = 0; data != NULL && keys[i] != NULL; i++) {
        int rc = strcmp(keys[i], time_key) == 0
                     ? json_object_set_new(data, keys[i], json_string(when))
                     : json_object_set(data, keys[i], json_object_get(p, keys[i]));
        if (rc < 0) {
            json_decref(data);
            data = NULL;
        }
    }
    return data;
}

hd_envelope *notif_integration_event(const hd_event *ev, const char *source)
{
    const char *type = hd_event_type(ev);
    int sent = type != NULL && strcmp(type, NOTIFICATION_SENT) == 0;
    if (!sent && (type == NULL || strcmp(type, NOTIFICATION_FAILED) != 0))
        return NULL;
    const json_t *p = hd_event_payload(ev);
    hd_envelope *env =
        hd_envelope_new(sent ? NOTIFICATIONS_EVENT_SENT : NOTIFICATIONS_EVENT_FAILED,
                        NOTIFICATIONS_EVENT_VERSION, source, integration_data(p, sent));
    if (env == NULL)
        return NULL;
    const char *cid = json_string_value(json_object_get(p, "correlation_id"));
    const char *cause = json_string_value(json_object_get(p, "cause_id"));
    /* No cause from outside (an API request): the domain event is the cause. */
    if ((cid != NULL && hd_envelope_set_correlation_id(env, cid) < 0) ||
        hd_envelope_set_causation_id(env, cause != NULL ? cause : hd_event_id(ev)) < 0) {
        hd_envelope_free(env);
        return NULL;
    }
    return env;
}

/* ---- the translator on the dispatcher ---------------------------------------------------- */

struct notif_translator {
    char *source;
    hd_registry *contract; /* checks each envelope before it reaches the outbox */
};

static int translate(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    notif_translator *t = handler;
    hd_envelope *env = notif_integration_event(ev, t->source);
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, "cannot build the integration event of %s",
                            hd_event_type(ev));
    /* An event that breaks our own contract is a bug here: fail the unit, loudly. */
    int rc = hd_registry_check(t->contract, env, err);
    if (rc == 0)
        rc = hd_outbox_append_uow(uow, env, NOTIFICATION_AGGREGATE, hd_event_aggregate_id(ev), err);
    hd_envelope_free(env);
    return rc;
}

notif_translator *notif_translator_new(hd_dispatcher *d, const char *source)
{
    notif_translator *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->source = strdup(source != NULL ? source : NOTIFICATIONS_SOURCE_DEFAULT);
    t->contract = notif_emitted_registry();
    if (t->source == NULL || t->contract == NULL ||
        hd_dispatcher_register(d, NOTIFICATION_SENT, translate, t) < 0 ||
        hd_dispatcher_register(d, NOTIFICATION_FAILED, translate, t) < 0) {
        notif_translator_free(t);
        return NULL;
    }
    return t;
}

void notif_translator_free(notif_translator *t)
{
    if (t == NULL)
        return;
    hd_registry_free(t->contract);
    free(t->source);
    free(t);
}
