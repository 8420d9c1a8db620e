/* chat/integration.h — the chat's one bus between its processes.
 *
 * Each chat process publishes what its own browsers post as chat.message_posted on the
 * topic "chat", and registers for that type itself: the bus brings every message — its own
 * included — back to every process, which hands it to its hub (hub.h) for the listeners it
 * has. The hub therefore never delivers a post directly: a message a browser sees went over
 * the bus, which is what makes two processes one chat.
 *
 * The bus is an hd_bus (bus.h), chosen by runtime.c: Redis pub/sub by default (the seed's
 * choice: nothing is stored, a process that is down misses what is said meanwhile), RabbitMQ
 * or the in-memory bus for one process. Its consumer is named "chat-<instance>", one per
 * process: on RabbitMQ a shared name would make the processes COMPETE for messages (one
 * queue) instead of each getting a copy.
 *
 * Threads: an hd_bus is not meant to be shared between threads, so one thread owns it. It
 * polls the bus (the handler runs there) and, between polls, sends what HTTP handlers
 * queued with chat_bus_post; a poster waits until its message was sent (or failed), so a
 * 202 means the bus took it. The queue is bounded: past it, posting answers HD_EBUSY.
 */
#ifndef CHAT_INTEGRATION_H
#define CHAT_INTEGRATION_H

#include "herald/bus.h"
#include "herald/error.h"
#include "herald/log.h"

#include "domain.h"
#include "hub.h"

#define CHAT_BUS_QUEUE_DEFAULT 256
#define CHAT_BUS_POLL_MS       50 /* the longest a post waits for the bus thread */

typedef struct chat_bus chat_bus;

typedef struct chat_bus_stats {
    uint64_t sent, received, rejected; /* rejected: undecodable or invalid deliveries */
    uint64_t sent_unheard; /* Redis only: messages no process at all was subscribed for */
} chat_bus_stats;

/* Register on bus (stolen, also on failure; state NEW), start it, and start the thread.
 * instance (copied) names the consumer; hub and lg are borrowed. *out is new
 * (chat_bus_stop). Returns 0, or the bus's failure to start (HD_ECONNECT...). */
int chat_bus_start(hd_bus *bus, chat_hub *hub, const char *instance, size_t queue_len,
                   hd_logger *lg, chat_bus **out, hd_error *err);

/* Send m (borrowed) on the bus and wait until it was sent. Returns 0, HD_EBUSY (queue
 * full), HD_ESTATE (stopping) or the bus's failure. Any thread. */
int chat_bus_post(chat_bus *cb, const chat_message *m, hd_error *err);

/* The bus implementation's name ("redis", "rabbitmq", "memory"). Borrowed. */
const char *chat_bus_name(const chat_bus *cb);

void chat_bus_get_stats(chat_bus *cb, chat_bus_stats *out);

/* Stop the thread (posts still queued fail with HD_ESTATE), shut the bus down and free it.
 * NULL ok. */
void chat_bus_stop(chat_bus *cb);

#endif /* CHAT_INTEGRATION_H */
