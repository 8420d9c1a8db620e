/* order.h — the Order aggregate of chapter 2 (chapter 1's, without the item list).
 *
 * This is domain code: it includes aggregate.h and event.h and nothing about storage or
 * handlers. main.c is the application around it: the use case, the handlers, the store.
 */
#ifndef TUTORIAL_ORDER_H
#define TUTORIAL_ORDER_H

#include "herald/aggregate.h"

struct order {
    hd_aggregate base; /* first member: an order is an aggregate root */
    int items;
    int64_t total_cents;
    int completed;
};

/* Initialise a new order with id (copied). Returns 0 or a negative HD_E* code. */
int order_init(struct order *o, const char *id);
void order_release(struct order *o);

int order_add_item(struct order *o, int quantity, int64_t price_cents, hd_error *err);

/* Raise order.completed {"order_id", "total_cents"}; HD_ESTATE when empty or completed. */
int order_complete(struct order *o, hd_error *err);

#endif
