/* herald/bus_internal.h — for bus backends only (bus_rabbit.c, bus_redis.c).
 *
 * Applications include bus.h. A backend keeps its registrations as an array of its own
 * struct whose FIRST member is an hd_bus_reg: the owned copy of what hd_bus_registration
 * lends, made and released here so that every backend copies (and names the queue) alike.
 */
#ifndef HERALD_BUS_INTERNAL_H
#define HERALD_BUS_INTERNAL_H

#include "herald/bus.h"

typedef struct hd_bus_reg {
    char *consumer;
    char *topic;
    char *queue; /* "<topic>.<consumer>": the queue on RabbitMQ, hd_delivery.queue everywhere */
    char **types;
    size_t n_types;
    hd_consume_fn handler;
    void *ctx;
} hd_bus_reg;

/* Copy reg (borrowed) into *out: new strings, freed by hd_bus_reg_release. Returns 0, or
 * HD_ENOMEM ("<who>: register") with *out zeroed and nothing left allocated. */
int hd_bus_reg_copy(const hd_bus_registration *reg, const char *who, hd_bus_reg *out,
                    hd_error *err);

/* Free what hd_bus_reg_copy made (a zeroed *r is fine) and zero it. */
void hd_bus_reg_release(hd_bus_reg *r);

#endif
