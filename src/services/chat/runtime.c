/* chat/runtime.c — herald-chat as a process (runtime.h). */
#include "runtime.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "herald/bus_memory.h"
#include "herald/bus_rabbit.h"
#include "herald/bus_redis.h"
#include "herald/http.h"
#include "herald/ratelimit.h"

#include "api.h"
#include "hub.h"
#include "integration.h"

#define MAX_ROOMS 64

typedef struct service {
    const hd_config *cfg;
    hd_logger *log;
    char instance[CHAT_ORIGIN_MAX + 1];
    char *rooms_copy;
    const char *rooms[MAX_ROOMS];
    size_t n_rooms;
    chat_hub *hub;
    chat_bus *bus;
    hd_http_server *http;
    chat_api *api;
    hd_ratelimit *join_limit; /* NULL: HD_CHAT_RATE_JOIN=off */
} service;

/* HD_CHAT_ROOMS "general,random" into svc->rooms. */
static int parse_rooms(service *svc, hd_error *err)
{
    const char *list = hd_config_get(svc->cfg, "HD_CHAT_ROOMS", "general,random,help");
    if ((svc->rooms_copy = strdup(list)) == NULL)
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    char *save = NULL;
    for (char *r = strtok_r(svc->rooms_copy, ", ", &save); r != NULL;
         r = strtok_r(NULL, ", ", &save)) {
        if (svc->n_rooms == MAX_ROOMS)
            return hd_error_set(err, HD_ECONFIG, "HD_CHAT_ROOMS: more than %d rooms", MAX_ROOMS);
        svc->rooms[svc->n_rooms++] = r;
    }
    if (svc->n_rooms == 0)
        return hd_error_set(err, HD_ECONFIG, "HD_CHAT_ROOMS: no room");
    return 0;
}

static int read_size(const hd_config *cfg, const char *key, int64_t def, int64_t max, size_t *out,
                     hd_error *err)
{
    int64_t v;
    int rc = hd_config_get_int(cfg, key, def, 1, max, &v, err);
    if (rc == 0)
        *out = (size_t)v;
    return rc;
}

static int start_hub(service *svc, hd_error *err)
{
    chat_hub_options o = {.rooms = svc->rooms, .n_rooms = svc->n_rooms};
    int rc = read_size(svc->cfg, "HD_CHAT_MAX_MEMBERS", CHAT_DEFAULT_MAX_SESSIONS, 1000000,
                       &o.max_sessions, err);
    if (rc == 0)
        rc = read_size(svc->cfg, "HD_CHAT_MAX_LISTENERS", CHAT_DEFAULT_MAX_LISTENERS, 10000,
                       &o.max_listeners, err);
    if (rc == 0)
        rc = read_size(svc->cfg, "HD_CHAT_STREAMS_PER_MEMBER", CHAT_DEFAULT_STREAMS_PER, 100,
                       &o.streams_per_session, err);
    if (rc == 0)
        rc = read_size(svc->cfg, "HD_CHAT_QUEUE", CHAT_DEFAULT_QUEUE, 100000, &o.queue_len, err);
    if (rc == 0)
        rc = hd_config_get_duration_ms(svc->cfg, "HD_CHAT_SESSION_TTL", CHAT_DEFAULT_SESSION_TTL_MS,
                                       1000, 30LL * 24 * 3600 * 1000, &o.session_ttl_ms, err);
    /* At most 20 s: libmicrohttpd closes a connection idle for 30 s (hd_http_options), and
     * a heartbeat is what keeps a quiet stream from looking idle. */
    if (rc == 0)
        rc = hd_config_get_duration_ms(svc->cfg, "HD_CHAT_HEARTBEAT", CHAT_DEFAULT_HEARTBEAT_MS,
                                       100, 20000, &o.heartbeat_ms, err);
    if (rc == 0)
        rc = chat_hub_new(&o, &svc->hub, err);
    return rc;
}

/* The bus HD_CHAT_BUS names, new, not started. */
static int make_bus(service *svc, hd_bus **out, hd_error *err)
{
    const char *kind = hd_config_get(svc->cfg, "HD_CHAT_BUS", CHAT_BUS_DEFAULT);
    *out = NULL;
    if (strcmp(kind, "memory") == 0) {
        /* One process only: the in-memory bus does not leave it. For trying the page. */
        *out = hd_bus_memory_new(NULL);
        return *out ? 0 : hd_error_set(err, HD_ENOMEM, "out of memory");
    }
    if (strcmp(kind, "redis") == 0) {
        const char *url = hd_config_get(svc->cfg, "HD_REDIS_URL", "");
        if (*url == '\0')
            return hd_error_set(err, HD_ECONFIG, "HD_CHAT_BUS=redis needs HD_REDIS_URL");
        /* Pub/sub: a process that is down misses what is said meanwhile; the chat accepts
         * that (docs/tutorial/20-live-chat.md). */
        return hd_bus_redis_new(url, NULL, out, err);
    }
    if (strcmp(kind, "rabbitmq") == 0) {
        const char *url = hd_config_get(svc->cfg, "HD_AMQP_URL", "");
        if (*url == '\0')
            return hd_error_set(err, HD_ECONFIG, "HD_CHAT_BUS=rabbitmq needs HD_AMQP_URL");
        /* Each process's queue "chat.chat-<instance>" is durable and stays on the broker
         * after the process: the RabbitMQ bus is made for services that come back. */
        return hd_bus_rabbit_new(url, NULL, out, err);
    }
    return hd_error_set(err, HD_ECONFIG, "HD_CHAT_BUS: '%s' is not redis, rabbitmq or memory",
                        kind);
}

static int start_bus(service *svc, hd_error *err)
{
    size_t queue;
    hd_bus *bus;
    int rc = read_size(svc->cfg, "HD_CHAT_BUS_QUEUE", CHAT_BUS_QUEUE_DEFAULT, 100000, &queue, err);
    if (rc == 0)
        rc = make_bus(svc, &bus, err);
    if (rc == 0)
        rc = chat_bus_start(bus, svc->hub, svc->instance, queue, svc->log, &svc->bus, err);
    if (rc == 0)
        hd_log_info(svc->log, NULL, "bus started", "bus", chat_bus_name(svc->bus), "instance",
                    svc->instance, NULL);
    return rc;
}

/* HD_CHAT_RATE_JOIN ("20/m", or off) and its burst, per client address. */
static int make_join_limit(service *svc, hd_error *err)
{
    const char *rate = hd_config_get(svc->cfg, "HD_CHAT_RATE_JOIN", "20/m");
    if (strcmp(rate, "off") == 0)
        return 0;
    hd_ratelimit_options o = {.max_keys = HD_RATELIMIT_KEYS_DEFAULT};
    int64_t burst;
    if (hd_ratelimit_parse_rate(rate, &o.per_second) < 0)
        return hd_error_set(err, HD_ECONFIG,
                            "HD_CHAT_RATE_JOIN: '%s' is not a rate like 20/m, 2/s or 5/h (or off)",
                            rate);
    int rc = hd_config_get_int(svc->cfg, "HD_CHAT_RATE_JOIN_BURST", 10, 1, 1000000, &burst, err);
    if (rc < 0)
        return rc;
    o.burst = (double)burst;
    return hd_ratelimit_new(&o, &svc->join_limit, err);
}

static int start_http(service *svc, hd_error *err)
{
    char host[128];
    uint16_t port;
    if (hd_config_get_listen(svc->cfg, "HD_CHAT_LISTEN", "127.0.0.1:8090", host, sizeof host, &port,
                             err) < 0)
        return HD_ECONFIG;
    size_t max_body = 0, listeners = 0;
    int rc = read_size(svc->cfg, "HD_CHAT_MAX_BODY", 8192, 1 << 20, &max_body, err);
    if (rc == 0)
        rc = read_size(svc->cfg, "HD_CHAT_MAX_LISTENERS", CHAT_DEFAULT_MAX_LISTENERS, 10000,
                       &listeners, err);
    if (rc == 0)
        rc = make_join_limit(svc, err);
    if (rc < 0)
        return rc;
    /* A thread per connection (threads = 0): a stream's reader blocks between messages.
     * Room for every listener plus the short requests beside them. */
    hd_http_options o = {.bind_address = host,
                         .port = port,
                         .max_body_bytes = max_body,
                         .max_connections = (unsigned)listeners + 64,
                         .logger = svc->log};
    rc = hd_http_server_new(&o, &svc->http, err);
    chat_api_options ao = {.hub = svc->hub,
                           .bus = svc->bus,
                           .instance = svc->instance,
                           .logger = svc->log,
                           .join_limit = svc->join_limit};
    if (rc == 0)
        rc = chat_api_new(svc->http, &ao, &svc->api, err);
    if (rc == 0)
        rc = hd_http_server_start(svc->http, err);
    if (rc == 0) {
        char port_text[8];
        snprintf(port_text, sizeof port_text, "%u", (unsigned)hd_http_server_port(svc->http));
        hd_log_info(svc->log, NULL, "listening", "address", host, "port", port_text, NULL);
    }
    return rc;
}

static int start(service *svc, hd_error *err)
{
    const char *inst = hd_config_get(svc->cfg, "HD_CHAT_INSTANCE", "");
    if (*inst == '\0') {
        unsigned char raw[4];
        randombytes_buf(raw, sizeof raw);
        snprintf(svc->instance, sizeof svc->instance, "%02x%02x%02x%02x", raw[0], raw[1], raw[2],
                 raw[3]);
    } else if (strlen(inst) > 32 ||
               strspn(inst, "abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != strlen(inst)) {
        return hd_error_set(err, HD_ECONFIG, "HD_CHAT_INSTANCE: up to 32 of [A-Za-z0-9_-]");
    } else {
        snprintf(svc->instance, sizeof svc->instance, "%s", inst);
    }
    int rc = parse_rooms(svc, err);
    if (rc == 0)
        rc = start_hub(svc, err);
    if (rc == 0)
        rc = start_bus(svc, err);
    if (rc == 0)
        rc = start_http(svc, err);
    return rc;
}

/* See runtime.h for why this order. */
static int stop(service *svc)
{
    int rc = 0;
    if (svc->hub != NULL)
        chat_hub_close(svc->hub);
    if (svc->http != NULL)
        rc = hd_http_server_stop(svc->http);
    hd_http_server_free(svc->http);
    chat_api_free(svc->api);
    hd_ratelimit_free(svc->join_limit);
    chat_bus_stop(svc->bus);
    chat_hub_free(svc->hub);
    free(svc->rooms_copy);
    return rc;
}

int chat_run(const hd_config *cfg, hd_logger *lg)
{
    service svc = {.cfg = cfg, .log = lg};
    hd_error err;
    if (sodium_init() < 0) {
        hd_log_error(lg, NULL, "cannot start", "error", "libsodium failed to initialise", NULL);
        return 1;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before any thread: they inherit it */
    signal(SIGPIPE, SIG_IGN);                /* a browser that hangs up is not fatal */

    int status = 0;
    if (start(&svc, &err) < 0) {
        hd_log_error(lg, NULL, "cannot start", "error", err.text, NULL);
        status = err.code == HD_ECONFIG ? 2 : 1;
    } else {
        int sig = 0;
        sigwait(&sigs, &sig);
        hd_log_info(lg, NULL, "stopping", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
    }
    if (stop(&svc) < 0)
        hd_log_warn(lg, NULL, "some requests were still running at the stop deadline", NULL);
    if (status == 0)
        hd_log_info(lg, NULL, "stopped", NULL);
    return status;
}
