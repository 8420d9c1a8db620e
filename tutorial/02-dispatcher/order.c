/* order.c — the Order aggregate; see order.h and chapter 1 for the why. */
#include "order.h"

#include "herald/event.h"

int order_init(struct order *o, const char *id)
{
    o->items = 0;
    o->total_cents = 0;
    o->completed = 0;
    return hd_aggregate_init(&o->base, "order", id, 0);
}

void order_release(struct order *o)
{
    hd_aggregate_release(&o->base);
}

int order_add_item(struct order *o, int quantity, int64_t price_cents, hd_error *err)
{
    if (o->completed)
        return hd_error_set(err, HD_ESTATE, "order %s is completed", hd_aggregate_id(&o->base));
    if (quantity <= 0 || price_cents < 0)
        return hd_error_set(err, HD_EINVAL, "bad item");
    o->items += quantity;
    o->total_cents += quantity * price_cents;
    return HD_OK;
}

int order_complete(struct order *o, hd_error *err)
{
    const char *id = hd_aggregate_id(&o->base);
    if (o->completed)
        return hd_error_set(err, HD_ESTATE, "order %s is already completed", id);
    if (o->items == 0)
        return hd_error_set(err, HD_ESTATE, "cannot complete an empty order");
    o->completed = 1;
    json_t *payload =
        json_pack("{s:s, s:I}", "order_id", id, "total_cents", (json_int_t)o->total_cents);
    int rc = hd_aggregate_raise(&o->base, hd_event_new("order.completed", payload));
    if (rc < 0) {
        o->completed = 0; /* no event, no change: the two go together */
        return hd_error_set(err, rc, "could not record order.completed");
    }
    return HD_OK;
}
