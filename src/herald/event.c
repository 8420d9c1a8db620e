/* event.c — domain events; see event.h. */
#include "herald/event.h"

#include <stdlib.h>
#include <string.h>

struct hd_event {
    char id[HD_UUID_LEN + 1];
    char *type;
    int64_t occurred_at_ms;
    char occurred_at[HD_TIME_LEN + 1]; /* formatted once: events are read more than made */
    char *aggregate_type;              /* NULL until stamped */
    char *aggregate_id;
    int64_t aggregate_version;
    json_t *payload;
};

hd_event *hd_event_new(const char *type, json_t *payload)
{
    if (type == NULL || *type == '\0' || !json_is_object(payload)) {
        json_decref(payload); /* stolen, also on failure */
        return NULL;
    }
    hd_event *ev = calloc(1, sizeof *ev);
    if (ev == NULL || (ev->type = strdup(type)) == NULL) {
        free(ev);
        json_decref(payload);
        return NULL;
    }
    hd_uuid_v7(ev->id); /* time-ordered, as the indexes that hold it want (clock.h) */
    ev->occurred_at_ms = hd_time_now_ms();
    hd_time_format(ev->occurred_at_ms, ev->occurred_at);
    ev->payload = payload;
    return ev;
}

hd_event *hd_event_copy(const hd_event *event)
{
    if (event == NULL)
        return NULL;
    json_t *payload = json_deep_copy(event->payload);
    hd_event *ev = hd_event_new(event->type, payload);
    if (ev == NULL)
        return NULL;
    memcpy(ev->id, event->id, sizeof ev->id);
    ev->occurred_at_ms = event->occurred_at_ms;
    memcpy(ev->occurred_at, event->occurred_at, sizeof ev->occurred_at);
    if (event->aggregate_type != NULL &&
        hd_event_set_aggregate(ev, event->aggregate_type, event->aggregate_id,
                               event->aggregate_version) < 0) {
        hd_event_free(ev);
        return NULL;
    }
    return ev;
}

void hd_event_free(hd_event *event)
{
    if (event == NULL)
        return;
    json_decref(event->payload);
    free(event->type);
    free(event->aggregate_type);
    free(event->aggregate_id);
    free(event);
}

const char *hd_event_id(const hd_event *event)
{
    return event ? event->id : NULL;
}

const char *hd_event_type(const hd_event *event)
{
    return event ? event->type : NULL;
}

int64_t hd_event_occurred_at_ms(const hd_event *event)
{
    return event ? event->occurred_at_ms : 0;
}

const char *hd_event_occurred_at(const hd_event *event)
{
    return event ? event->occurred_at : NULL;
}

json_t *hd_event_payload(const hd_event *event)
{
    return event ? event->payload : NULL;
}

const char *hd_event_aggregate_type(const hd_event *event)
{
    return event ? event->aggregate_type : NULL;
}

const char *hd_event_aggregate_id(const hd_event *event)
{
    return event ? event->aggregate_id : NULL;
}

int64_t hd_event_aggregate_version(const hd_event *event)
{
    return event ? event->aggregate_version : 0;
}

int hd_event_set_aggregate(hd_event *event, const char *type, const char *id, int64_t version)
{
    if (event == NULL || type == NULL || id == NULL)
        return HD_EINVAL;
    /* Copy both before touching the event, so a failure leaves it as it was. */
    char *t = strdup(type), *i = strdup(id);
    if (t == NULL || i == NULL) {
        free(t);
        free(i);
        return HD_ENOMEM;
    }
    free(event->aggregate_type);
    free(event->aggregate_id);
    event->aggregate_type = t;
    event->aggregate_id = i;
    event->aggregate_version = version;
    return HD_OK;
}

json_t *hd_event_to_json(const hd_event *event)
{
    if (event == NULL)
        return NULL;
    int stamped = event->aggregate_type != NULL;
    /* "O" takes a new reference to the payload, so the event keeps its own. */
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:O}", "id", event->id, "type", event->type,
                     "occurred_at", event->occurred_at, "aggregate_type",
                     stamped ? json_string(event->aggregate_type) : json_null(), "aggregate_id",
                     stamped ? json_string(event->aggregate_id) : json_null(), "aggregate_version",
                     stamped ? json_integer(event->aggregate_version) : json_null(), "payload",
                     event->payload);
}

/* ---- hd_event_list ---------------------------------------------------------------------- */

void hd_event_list_init(hd_event_list *list)
{
    if (list != NULL)
        memset(list, 0, sizeof *list);
}

/* Make room for `extra` more items; doubling keeps appends O(1) amortised. */
static int list_reserve(hd_event_list *list, size_t extra)
{
    size_t need = list->count + extra;
    if (need <= list->cap)
        return HD_OK;
    size_t cap = list->cap ? list->cap : 4;
    while (cap < need)
        cap *= 2;
    hd_event **items = realloc(list->items, cap * sizeof *items);
    if (items == NULL)
        return HD_ENOMEM;
    list->items = items;
    list->cap = cap;
    return HD_OK;
}

int hd_event_list_push(hd_event_list *list, hd_event *event)
{
    if (list == NULL || event == NULL) {
        hd_event_free(event);
        return HD_EINVAL;
    }
    if (list_reserve(list, 1) < 0) {
        hd_event_free(event);
        return HD_ENOMEM;
    }
    list->items[list->count++] = event;
    return HD_OK;
}

int hd_event_list_splice(hd_event_list *dst, hd_event_list *src)
{
    if (dst == NULL || src == NULL || dst == src)
        return HD_EINVAL;
    if (dst->count == 0 && dst->cap == 0) {
        /* The common case (taking an aggregate's events into a fresh list): hand the
         * array over instead of copying it. */
        *dst = *src;
        memset(src, 0, sizeof *src);
        return HD_OK;
    }
    if (list_reserve(dst, src->count) < 0)
        return HD_ENOMEM;
    if (src->count > 0)
        memcpy(dst->items + dst->count, src->items, src->count * sizeof *src->items);
    dst->count += src->count;
    src->count = 0;
    return HD_OK;
}

void hd_event_list_release(hd_event_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->count; i++)
        hd_event_free(list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}
