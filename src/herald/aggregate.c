/* aggregate.c — the aggregate root; see aggregate.h. */
#include "herald/aggregate.h"

#include "herald/clock.h"

#include <stdlib.h>
#include <string.h>

int hd_aggregate_init(hd_aggregate *agg, const char *type, const char *id, int64_t version)
{
    if (agg == NULL)
        return HD_EINVAL;
    memset(agg, 0, sizeof *agg);
    if (type == NULL || *type == '\0' || (id != NULL && *id == '\0') || version < 0)
        return HD_EINVAL;
    char fresh[HD_UUID_LEN + 1];
    if (id == NULL) {
        hd_uuid_v7(fresh); /* time-ordered: tables are keyed by it (clock.h) */
        id = fresh;
    }
    agg->type = strdup(type);
    agg->id = strdup(id);
    if (agg->type == NULL || agg->id == NULL) {
        hd_aggregate_release(agg);
        return HD_ENOMEM;
    }
    agg->version = version;
    hd_event_list_init(&agg->pending);
    return HD_OK;
}

void hd_aggregate_release(hd_aggregate *agg)
{
    if (agg == NULL)
        return;
    free(agg->type);
    free(agg->id);
    hd_event_list_release(&agg->pending);
    memset(agg, 0, sizeof *agg);
}

const char *hd_aggregate_type(const hd_aggregate *agg)
{
    return agg ? agg->type : NULL;
}

const char *hd_aggregate_id(const hd_aggregate *agg)
{
    return agg ? agg->id : NULL;
}

int64_t hd_aggregate_version(const hd_aggregate *agg)
{
    return agg ? agg->version : 0;
}

size_t hd_aggregate_pending(const hd_aggregate *agg)
{
    return agg ? agg->pending.count : 0;
}

int hd_aggregate_raise(hd_aggregate *agg, hd_event *event)
{
    if (agg == NULL || event == NULL || agg->type == NULL) {
        hd_event_free(event);
        return HD_EINVAL;
    }
    /* Stamp first and count last: if either step fails the aggregate is unchanged. */
    int rc = hd_event_set_aggregate(event, agg->type, agg->id, agg->version + 1);
    if (rc < 0) {
        hd_event_free(event);
        return rc;
    }
    rc = hd_event_list_push(&agg->pending, event);
    if (rc < 0)
        return rc;
    agg->version++;
    return HD_OK;
}

int hd_aggregate_take_events(hd_aggregate *agg, hd_event_list *out)
{
    if (agg == NULL || out == NULL)
        return HD_EINVAL;
    size_t n = agg->pending.count;
    int rc = hd_event_list_splice(out, &agg->pending);
    return rc < 0 ? rc : (int)n;
}

void hd_aggregate_discard_events(hd_aggregate *agg)
{
    if (agg != NULL)
        hd_event_list_release(&agg->pending);
}
