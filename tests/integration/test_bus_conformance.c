/* The bus conformance cases (tests/support/bus_conformance.c) on the two buses with a server:
 * RabbitMQ (HD_AMQP_URL) and Redis pub/sub (HD_REDIS_URL). The in-memory bus runs them in
 * tests/unit/test_bus_conformance_memory.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>

#include "bus_conformance.h"
#include "hd_test.h"
#include "herald/bus_rabbit.h"
#include "herald/bus_redis.h"

static hd_bus *make_rabbit(void *ctx, const hd_registry *registry)
{
    hd_error err;
    hd_bus_rabbit_options o = {.registry = registry, .prefetch = 10};
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_rabbit_new(ctx, &o, &bus, &err), &err);
    return bus;
}

static void undeclare(void *ctx, hd_bus *bus)
{
    (void)ctx;
    hd_error err;
    assert_hd_err(HD_OK, hd_bus_rabbit_undeclare(bus, &err), &err);
}

static hd_bus *make_redis(void *ctx, const hd_registry *registry)
{
    hd_error err;
    hd_bus_redis_options o = {.registry = registry};
    hd_bus *bus = NULL;
    assert_hd_err(HD_OK, hd_bus_redis_new(ctx, &o, &bus, &err), &err);
    return bus;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* bus_redis.h: a write to a closed connection */
    const char *amqp = hd_test_require_env("HD_AMQP_URL");
    const char *redis = hd_test_require_env("HD_REDIS_URL");
    hd_bus_conf_target rabbit = {
        .name = "rabbitmq", .make = make_rabbit, .cleanup = undeclare, .ctx = (void *)amqp};
    hd_bus_conf_target rd = {.name = "redis", .make = make_redis, .ctx = (void *)redis};
    int failed = hd_bus_conf_run(&rabbit);
    failed += hd_bus_conf_run(&rd);
    return failed;
}
