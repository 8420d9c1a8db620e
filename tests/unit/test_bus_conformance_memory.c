/* The bus conformance cases (tests/support/bus_conformance.c) on the in-memory bus. The same
 * cases run on RabbitMQ and Redis in tests/integration/test_bus_conformance.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "bus_conformance.h"
#include "hd_test.h"
#include "herald/bus_memory.h"

static hd_bus *make_memory(void *ctx, const hd_registry *registry)
{
    (void)ctx;
    hd_bus_memory_options o = {.registry = registry};
    return hd_bus_memory_new(&o);
}

int main(void)
{
    hd_bus_conf_target t = {.name = "memory", .make = make_memory};
    return hd_bus_conf_run(&t);
}
