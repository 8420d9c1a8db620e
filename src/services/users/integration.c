/* users/integration.c — domain events to integration events; see integration.h. */
#include "integration.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/outbox.h"

#include "domain.h"

struct users_integration {
    char *source;
    char *verify_base_url;
    char *reset_base_url;
    hd_registry *contract; /* checked before every append */
};

/* ---- the contract -------------------------------------------------------------------------
 * One field list per event, as data, so that the producer (here) and any consumer or
 * contract test check the same thing. */
static const hd_field_spec registered_fields[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {"name", HD_JSON_STRING, 1},
    {"verification_link", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};
static const hd_field_spec verified_fields[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {"name", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};
static const hd_field_spec reset_fields[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {"name", HD_JSON_STRING, 1},
    {"reset_link", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};
static const hd_field_spec deleted_fields[] = {
    {"user_id", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};

/* The types check the shape; what a type cannot say (an id is a UUID, an email has an
 * '@') is checked here, on the fields that exist in every event. */
static int validate(const json_t *data, hd_error *err, void *ctx)
{
    int rc = hd_validate_fields(data, ctx, err);
    if (rc < 0)
        return rc;
    if (!hd_uuid_valid(json_string_value(json_object_get(data, "user_id"))))
        return hd_error_set(err, HD_EVALIDATE, "field 'user_id' must be a UUID");
    const char *addr = json_string_value(json_object_get(data, "email"));
    if (addr != NULL && strchr(addr, '@') == NULL)
        return hd_error_set(err, HD_EVALIDATE, "field 'email' must be an email address");
    return 0;
}

hd_registry *users_integration_registry(void)
{
    hd_registry *reg = hd_registry_new();
    if (reg == NULL)
        return NULL;
    struct {
        const char *type;
        const hd_field_spec *fields;
    } contract[] = {
        {USERS_EVENT_REGISTERED, registered_fields},
        {USERS_EVENT_VERIFIED, verified_fields},
        {USERS_EVENT_RESET_REQUESTED, reset_fields},
        {USERS_EVENT_DELETED, deleted_fields},
    };
    for (size_t i = 0; i < sizeof contract / sizeof contract[0]; i++) {
        /* The cast drops const: validators get a void * context, and only read it. */
        if (hd_registry_add(reg, contract[i].type, USERS_EVENT_VERSION, validate,
                            (void *)contract[i].fields) < 0) {
            hd_registry_free(reg);
            return NULL;
        }
    }
    return reg;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

users_integration *users_integration_new(const char *source, const char *verify_base_url,
                                         const char *reset_base_url)
{
    if (source == NULL || *source == '\0' || verify_base_url == NULL || *verify_base_url == '\0' ||
        reset_base_url == NULL || *reset_base_url == '\0')
        return NULL;
    users_integration *ui = calloc(1, sizeof *ui);
    if (ui == NULL)
        return NULL;
    ui->source = strdup(source);
    ui->verify_base_url = strdup(verify_base_url);
    ui->reset_base_url = strdup(reset_base_url);
    ui->contract = users_integration_registry();
    if (ui->source == NULL || ui->verify_base_url == NULL || ui->reset_base_url == NULL ||
        ui->contract == NULL) {
        users_integration_free(ui);
        return NULL;
    }
    return ui;
}

void users_integration_free(users_integration *ui)
{
    if (ui == NULL)
        return;
    free(ui->source);
    free(ui->verify_base_url);
    free(ui->reset_base_url);
    hd_registry_free(ui->contract);
    free(ui);
}

/* ---- the request scope ------------------------------------------------------------------ */

/* Any unique address will do as a key; this one is private to the file. */
static const char correlation_key;

int users_uow_set_correlation_id(hd_uow *uow, const char *correlation_id)
{
    if (uow == NULL)
        return HD_EINVAL;
    if (correlation_id == NULL || *correlation_id == '\0')
        return 0;
    char *copy = strdup(correlation_id);
    if (copy == NULL)
        return HD_ENOMEM;
    return hd_uow_attach(uow, &correlation_key, copy, free);
}

const char *users_uow_correlation_id(hd_uow *uow)
{
    return hd_uow_attached(uow, &correlation_key);
}

/* ---- the handlers ----------------------------------------------------------------------- */

/* base followed by token, as a new string; NULL when out of memory. */
static char *make_link(const char *base, const char *token)
{
    size_t n = strlen(base) + strlen(token) + 1;
    char *link = malloc(n);
    if (link != NULL)
        snprintf(link, n, "%s%s", base, token);
    return link;
}

/* The common end of every handler: wrap data (stolen) in an envelope of type, stamp the
 * ids, check it against the contract and append it to the outbox in uow's transaction,
 * with outbox flags (HD_OUTBOX_SENSITIVE for an event that carries a token). */
static int emit(users_integration *ui, hd_uow *uow, const hd_event *ev, const char *type,
                json_t *data, unsigned flags, hd_error *err)
{
    hd_envelope *env = hd_envelope_new(type, USERS_EVENT_VERSION, ui->source, data);
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, "cannot build %s", type);
    /* A use case called without a correlation id (not through HTTP) starts a new flow:
     * the first envelope's id names it, as the contracts require one. */
    const char *cid = users_uow_correlation_id(uow);
    int rc = hd_envelope_set_correlation_id(env, cid ? cid : hd_envelope_id(env));
    if (rc == 0)
        rc = hd_envelope_set_causation_id(env, hd_event_id(ev));
    if (rc < 0) {
        hd_envelope_free(env);
        return hd_error_set(err, rc, "cannot stamp %s", type);
    }
    rc = hd_registry_check(ui->contract, env, err);
    if (rc == 0)
        rc = hd_outbox_append_uow_flags(uow, env, USER_AGGREGATE, hd_event_aggregate_id(ev), flags,
                                        err);
    hd_envelope_free(env);
    return rc;
}

/* A string field of the domain event's payload (borrowed), "" when absent. */
static const char *field(const hd_event *ev, const char *name)
{
    const char *s = json_string_value(json_object_get(hd_event_payload(ev), name));
    return s ? s : "";
}

/* A link to the clear token, wrapped with the user's fields in an event of type. */
static int emit_with_link(users_integration *ui, hd_uow *uow, const hd_event *ev, const char *type,
                          const char *link_field, const char *base, const char *token_field,
                          hd_error *err)
{
    char *link = make_link(base, field(ev, token_field));
    if (link == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", field(ev, "user_id"), "email",
                             field(ev, "email"), "name", field(ev, "name"), link_field, link);
    free(link);
    if (data == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    /* The link logs its holder in (verify) or sets a password (reset): the outbox must not
     * keep it once it is on its way (outbox.h, "Sensitive rows"). */
    return emit(ui, uow, ev, type, data, HD_OUTBOX_SENSITIVE, err);
}

static int on_registered(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    users_integration *ui = handler;
    return emit_with_link(ui, uow, ev, USERS_EVENT_REGISTERED, "verification_link",
                          ui->verify_base_url, "verification_token", err);
}

static int on_reset_requested(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    users_integration *ui = handler;
    return emit_with_link(ui, uow, ev, USERS_EVENT_RESET_REQUESTED, "reset_link",
                          ui->reset_base_url, "reset_token", err);
}

static int on_verified(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    json_t *data = json_pack("{s:s, s:s, s:s}", "user_id", field(ev, "user_id"), "email",
                             field(ev, "email"), "name", field(ev, "name"));
    if (data == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    return emit(handler, uow, ev, USERS_EVENT_VERIFIED, data, 0, err);
}

/* Only the id: the user is gone, and a deletion event that repeats the personal data
 * would spread exactly what the deletion was meant to remove. */
static int on_deleted(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    json_t *data = json_pack("{s:s}", "user_id", field(ev, "user_id"));
    if (data == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    return emit(handler, uow, ev, USERS_EVENT_DELETED, data, 0, err);
}

int users_integration_register(users_integration *ui, hd_dispatcher *d)
{
    if (ui == NULL || d == NULL)
        return HD_EINVAL;
    int rc = hd_dispatcher_register(d, USER_REGISTERED, on_registered, ui);
    if (rc == 0)
        rc = hd_dispatcher_register(d, USER_VERIFIED, on_verified, ui);
    if (rc == 0)
        rc = hd_dispatcher_register(d, USER_PASSWORD_RESET_REQUESTED, on_reset_requested, ui);
    if (rc == 0)
        rc = hd_dispatcher_register(d, USER_DELETED, on_deleted, ui);
    return rc;
}
