/* Chapter 1 — domain events and aggregates.
 *
 * An online shop's Order is an aggregate: a root (the order) guarding its items and its
 * rules. When something of interest happens ("the order was completed"), the order records
 * a domain event; it does not create the invoice itself, nor call anyone who would. Chapter
 * 2 hands those events to handlers. Here we only watch them being made and collected.
 *
 * Read along: docs/tutorial/01-aggregates.md. Run: build/dev/tutorial-01-aggregates
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/aggregate.h"
#include "herald/event.h"

/* ---- the domain: an Order aggregate ---------------------------------------------------- */

#define ORDER_MAX_ITEMS 8

struct order_item {
    char sku[16];
    int quantity;
    int64_t price_cents; /* money in integer cents: binary floating point cannot hold 0.10 */
};

struct order {
    hd_aggregate base; /* FIRST member: an order "is an" aggregate root (see aggregate.h) */
    struct order_item items[ORDER_MAX_ITEMS];
    size_t nitems;
    int completed;
};

/* The rules live in the aggregate's functions, and every change goes through one. */
static int order_add_item(struct order *o, const char *sku, int quantity, int64_t price_cents,
                          hd_error *err)
{
    if (o->completed)
        return hd_error_set(err, HD_ESTATE, "order %s is completed: no more items",
                            hd_aggregate_id(&o->base));
    if (quantity <= 0 || price_cents < 0 || strlen(sku) >= sizeof o->items[0].sku)
        return hd_error_set(err, HD_EINVAL, "bad item %s x %d", sku, quantity);
    if (o->nitems == ORDER_MAX_ITEMS)
        return hd_error_set(err, HD_ERANGE, "an order holds at most %d items", ORDER_MAX_ITEMS);
    struct order_item *it = &o->items[o->nitems++];
    snprintf(it->sku, sizeof it->sku, "%s", sku);
    it->quantity = quantity;
    it->price_cents = price_cents;
    return HD_OK;
}

static int64_t order_total_cents(const struct order *o)
{
    int64_t total = 0;
    for (size_t i = 0; i < o->nitems; i++)
        total += o->items[i].quantity * o->items[i].price_cents;
    return total;
}

/* Check the rules, change the state, then record the fact. If a rule fails, nothing
 * changes and no event is raised: an event only ever says what really happened. */
static int order_complete(struct order *o, hd_error *err)
{
    const char *id = hd_aggregate_id(&o->base);
    if (o->completed)
        return hd_error_set(err, HD_ESTATE, "order %s is already completed", id);
    if (o->nitems == 0)
        return hd_error_set(err, HD_ESTATE, "cannot complete an empty order");
    o->completed = 1;
    /* The payload carries values (ids, totals), not a pointer to the order: handlers may
     * run after the order changed again, or in another process (chapter 10, the outbox). */
    json_t *payload = json_pack("{s:s, s:I, s:i}", "order_id", id, "total_cents",
                                (json_int_t)order_total_cents(o), "items", (int)o->nitems);
    int rc = hd_aggregate_raise(&o->base, hd_event_new("order.completed", payload));
    if (rc < 0) {
        o->completed = 0; /* no event, no change: the two go together */
        return hd_error_set(err, rc, "could not record order.completed");
    }
    return HD_OK;
}

/* ---- the chapter ----------------------------------------------------------------------- */

static void print_event(const hd_event *ev)
{
    char *payload = json_dumps(hd_event_payload(ev), JSON_COMPACT | JSON_SORT_KEYS);
    printf("    %s id=%s aggregate=%s/%s v%lld at %s\n", hd_event_type(ev), hd_event_id(ev),
           hd_event_aggregate_type(ev), hd_event_aggregate_id(ev),
           (long long)hd_event_aggregate_version(ev), hd_event_occurred_at(ev));
    printf("    payload %s\n", payload ? payload : "(out of memory)");
    free(payload);
}

int main(void)
{
    struct order order = {0}, empty = {0};
    hd_event_list events = {0}; /* filled in step 6, owned by us from then on */
    hd_error err;
    int rc, status = EXIT_FAILURE;

    /* [1] A new order. Its id would normally be a UUID (pass NULL); a short one reads
     * better here. Version 0: nothing has happened to it yet. */
    rc = hd_aggregate_init(&order.base, "order", "1001", 0);
    if (rc < 0) {
        printf("[1] cannot create the order: %s\n", hd_strerror(rc));
        return EXIT_FAILURE;
    }
    printf("[1] order %s created (version %lld, %zu pending events)\n",
           hd_aggregate_id(&order.base), (long long)hd_aggregate_version(&order.base),
           hd_aggregate_pending(&order.base));

    /* [2] Items go in through the aggregate, which checks them. */
    if ((rc = order_add_item(&order, "book", 2, 1250, &err)) < 0 ||
        (rc = order_add_item(&order, "pen", 1, 199, &err)) < 0) {
        printf("[2] cannot add an item: %s\n", err.text);
        goto done;
    }
    for (size_t i = 0; i < order.nitems; i++)
        printf("[2] added %d x %s at %lld.%02lld\n", order.items[i].quantity, order.items[i].sku,
               (long long)(order.items[i].price_cents / 100),
               (long long)(order.items[i].price_cents % 100));
    int64_t total = order_total_cents(&order);
    printf("[2] order 1001 total %lld.%02lld\n", (long long)(total / 100),
           (long long)(total % 100));

    /* [3] A rule at work: an empty order cannot be completed. The failure is a value we
     * return (a code and a reason), not a crash, and the aggregate is unchanged. */
    rc = hd_aggregate_init(&empty.base, "order", "1002", 0);
    if (rc < 0) {
        printf("[3] cannot create the order: %s\n", hd_strerror(rc));
        goto done;
    }
    rc = order_complete(&empty, &err);
    if (rc >= 0) {
        printf("[3] BUG: an empty order was completed\n");
        goto done;
    }
    printf("[3] completing empty order 1002 refused: %s (%s)\n", err.text, hd_err_name(rc));
    printf("[3] order 1002 pending events: %zu\n", hd_aggregate_pending(&empty.base));

    /* [4] Completing order 1001 succeeds and raises order.completed. The event waits in
     * the aggregate: nobody has reacted to it yet. */
    rc = order_complete(&order, &err);
    if (rc < 0) {
        printf("[4] cannot complete order 1001: %s\n", err.text);
        goto done;
    }
    printf("[4] order 1001 completed (version %lld, %zu pending event)\n",
           (long long)hd_aggregate_version(&order.base), hd_aggregate_pending(&order.base));

    /* [5] Completing twice is refused by the same mechanism. */
    rc = order_complete(&order, &err);
    if (rc >= 0) {
        printf("[5] BUG: order 1001 completed twice\n");
        goto done;
    }
    printf("[5] completing it again refused: %s (%s)\n", err.text, hd_err_name(rc));

    /* [6] Whoever runs the use case takes the events (in chapter 2: the unit of work) and
     * owns them from now on; the aggregate has none pending afterwards. */
    rc = hd_aggregate_take_events(&order.base, &events);
    if (rc < 0) {
        printf("[6] cannot take the events: %s\n", hd_strerror(rc));
        goto done;
    }
    printf("[6] took %d event(s); order 1001 now has %zu pending (version stays %lld)\n", rc,
           hd_aggregate_pending(&order.base), (long long)hd_aggregate_version(&order.base));
    for (size_t i = 0; i < events.count; i++)
        print_event(events.items[i]);

    printf("[7] done: events and aggregates released\n");
    status = EXIT_SUCCESS;
done:
    hd_event_list_release(&events);
    hd_aggregate_release(&empty.base);
    hd_aggregate_release(&order.base);
    return status;
}
