/* chat/runtime.h — herald-chat as a process: the hub, the bus thread, the HTTP server.
 *
 * chat_run builds, in this order, the hub (rooms and listeners, hub.h), the bus and its
 * thread (integration.h) and the HTTP server (api.h); then it waits for SIGTERM or SIGINT
 * (sigwait, as the other services) and takes everything down in the order that lets each
 * part finish: the hub closes first, which ends every Server-Sent Events stream with a
 * "bye" event (a stream counts as a request in flight, so the HTTP server could not drain
 * otherwise); the HTTP server stops and frees the streams; the bus thread stops; the hub
 * is freed.
 */
#ifndef CHAT_RUNTIME_H
#define CHAT_RUNTIME_H

#include "herald/config.h"
#include "herald/log.h"

/* Default of HD_CHAT_BUS. */
#define CHAT_BUS_DEFAULT "redis"

/* Run the chat with the settings in cfg (borrowed; main.c lists them) and the logger lg
 * (borrowed) until SIGTERM or SIGINT, from the calling thread, before any other thread
 * exists. Returns the exit status: 0 stopped cleanly, 1 could not start, 2 bad settings. */
int chat_run(const hd_config *cfg, hd_logger *lg);

#endif /* CHAT_RUNTIME_H */
