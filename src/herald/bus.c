/* bus.c — the bus interface: argument and lifecycle checks, then the method; see bus.h. */
#include "herald/bus.h"
#include "herald/bus_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *state_name(hd_bus_state s)
{
    switch (s) {
    case HD_BUS_NEW:
        return "not started";
    case HD_BUS_STARTED:
        return "started";
    case HD_BUS_STOPPED:
        return "shut down";
    }
    return "?";
}

static int bad_state(const hd_bus *bus, const char *op, hd_error *err)
{
    return hd_error_set(err, HD_ESTATE, "%s bus: cannot %s, the bus is %s", bus->methods->name, op,
                        state_name(bus->state));
}

int hd_bus_register(hd_bus *bus, const char *consumer, const char *topic, const char *const *types,
                    size_t n_types, hd_consume_fn handler, void *ctx, hd_error *err)
{
    if (bus == NULL || consumer == NULL || *consumer == '\0' || topic == NULL || *topic == '\0' ||
        handler == NULL)
        return hd_error_set(err, HD_EINVAL, "register: consumer, topic and handler required");
    if (types == NULL || n_types == 0)
        return hd_error_set(err, HD_EINVAL, "register '%s': no event types", consumer);
    for (size_t i = 0; i < n_types; i++)
        if (types[i] == NULL || *types[i] == '\0')
            return hd_error_set(err, HD_EINVAL, "register '%s': event type %zu is empty", consumer,
                                i);
    /* Registrations become topology (queues, bindings) at startup; one added later would
     * silently never receive anything on some implementations, so refuse it here. */
    if (bus->state != HD_BUS_NEW)
        return bad_state(bus, "register a consumer", err);
    hd_bus_registration reg = {consumer, topic, types, n_types, handler, ctx};
    return bus->methods->add_consumer(bus, &reg, err);
}

int hd_bus_startup(hd_bus *bus, hd_error *err)
{
    if (bus == NULL)
        return hd_error_set(err, HD_EINVAL, "startup: bus is NULL");
    if (bus->state != HD_BUS_NEW)
        return bad_state(bus, "start up", err);
    int rc = bus->methods->startup(bus, err);
    if (rc < 0)
        return rc;
    bus->state = HD_BUS_STARTED;
    return HD_OK;
}

int hd_bus_send_raw(hd_bus *bus, const hd_bus_message *msg, hd_error *err)
{
    if (bus == NULL || msg == NULL || msg->topic == NULL || *msg->topic == '\0' ||
        msg->type == NULL || *msg->type == '\0' || (msg->body == NULL && msg->len > 0))
        return hd_error_set(err, HD_EINVAL, "send: topic, type and body required");
    if (bus->state != HD_BUS_STARTED)
        return bad_state(bus, "send", err);
    return bus->methods->send(bus, msg, err);
}

int hd_bus_send(hd_bus *bus, const char *topic, const hd_envelope *env, hd_error *err)
{
    if (env == NULL)
        return hd_error_set(err, HD_EINVAL, "send: envelope is NULL");
    if (bus != NULL && bus->state != HD_BUS_STARTED)
        return bad_state(bus, "send", err);
    char *json = NULL;
    size_t len = 0;
    int rc = hd_envelope_encode(env, &json, &len, err);
    if (rc < 0)
        return rc;
    hd_bus_message msg = {
        .topic = topic,
        .type = hd_envelope_type(env),
        .body = json,
        .len = len,
        .message_id = hd_envelope_id(env),
        .correlation_id = hd_envelope_correlation_id(env),
        .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
    };
    rc = hd_bus_send_raw(bus, &msg, err);
    free(json);
    return rc;
}

int hd_bus_poll(hd_bus *bus, int timeout_ms, hd_error *err)
{
    if (bus == NULL)
        return hd_error_set(err, HD_EINVAL, "poll: bus is NULL");
    if (bus->state != HD_BUS_STARTED)
        return bad_state(bus, "poll", err);
    return bus->methods->poll(bus, timeout_ms < 0 ? 0 : timeout_ms, err);
}

int hd_bus_run(hd_bus *bus, const hd_stop *stop, hd_error *err)
{
    if (bus == NULL)
        return hd_error_set(err, HD_EINVAL, "run: bus is NULL");
    /* The implementation's poll waits on the stop too, so the timeout is only how often
     * the loop comes round when nothing happens, not how long a stop takes. */
    bus->stop = stop;
    int rc = HD_OK;
    while (!hd_stop_requested(stop)) {
        rc = hd_bus_poll(bus, 1000, err);
        if (rc < 0)
            break;
        rc = HD_OK;
    }
    bus->stop = NULL;
    if (rc == HD_EINTR && hd_stop_requested(stop))
        rc = HD_OK; /* a reconnect cut short by the stop */
    return rc;
}

int hd_bus_shutdown(hd_bus *bus, hd_error *err)
{
    if (bus == NULL)
        return hd_error_set(err, HD_EINVAL, "shutdown: bus is NULL");
    if (bus->state != HD_BUS_STARTED)
        return bad_state(bus, "shut down", err);
    /* Stopped even when the implementation reports a failure: its connections are gone
     * either way, and a second shutdown could not do better. */
    bus->state = HD_BUS_STOPPED;
    return bus->methods->shutdown(bus, err);
}

void hd_bus_free(hd_bus *bus)
{
    if (bus == NULL)
        return;
    if (bus->state == HD_BUS_STARTED)
        hd_bus_shutdown(bus, NULL);
    bus->methods->destroy(bus);
}

hd_bus_state hd_bus_get_state(const hd_bus *bus)
{
    return bus->state;
}

const char *hd_bus_name(const hd_bus *bus)
{
    return bus->methods->name;
}

/* ---- for backends (bus_internal.h) ----------------------------------------------------- */

int hd_bus_reg_copy(const hd_bus_registration *reg, const char *who, hd_bus_reg *out, hd_error *err)
{
    memset(out, 0, sizeof *out);
    size_t qlen = strlen(reg->topic) + strlen(reg->consumer) + 2;
    out->consumer = strdup(reg->consumer);
    out->topic = strdup(reg->topic);
    out->queue = malloc(qlen);
    out->types = calloc(reg->n_types, sizeof *out->types);
    int ok = out->consumer && out->topic && out->queue && out->types;
    if (out->types != NULL) {
        out->n_types = reg->n_types;
        for (size_t i = 0; i < reg->n_types; i++)
            ok &= (out->types[i] = strdup(reg->types[i])) != NULL;
    }
    if (!ok) {
        hd_bus_reg_release(out);
        return hd_error_set(err, HD_ENOMEM, "%s: register", who);
    }
    snprintf(out->queue, qlen, "%s.%s", reg->topic, reg->consumer);
    out->handler = reg->handler;
    out->ctx = reg->ctx;
    return HD_OK;
}

void hd_bus_reg_release(hd_bus_reg *r)
{
    for (size_t i = 0; i < r->n_types; i++)
        free(r->types[i]);
    free(r->types);
    free(r->queue);
    free(r->topic);
    free(r->consumer);
    memset(r, 0, sizeof *r);
}
