/* notifications/runtime.h — the running process: threads, connections, stopping.
 *
 * herald-notifications is four activities in one process, each on its own thread with its
 * own database handle (a handle belongs to one thread at a time):
 *
 *   consumer   (the main thread) consumes the users queue in batches of up to a prefetch,
 *              through the application's batch handler: record, send, record the outcome
 *   sweeper    sends what is due: retries after their backoff, notifications asked for
 *              through the API, and those a crashed process left behind once their lease
 *              ran out; also forgets old inbox rows
 *   relay      drains the service's own outbox into RabbitMQ (relay.h), woken in-process
 *              whenever a unit of work appended to it
 *   HTTP       libmicrohttpd's threads: the API (api.h)
 *
 * Stopping (SIGTERM, SIGINT): the signal handler only sets a flag. The consumer finishes the
 * window it is handling (its mails sent and their outcomes recorded), stops consuming and
 * closes its connections: messages delivered to it and not acked go back to the queue, and
 * the broker delivers them again to the next consumer (never lost; the inbox absorbs the
 * duplicates). Then the HTTP server drains its requests, the sweeper and the relay finish
 * their cycle, and the process exits 0. What is still pending in the database is sent by
 * the next start; what is still in the outbox is relayed by it.
 */
#ifndef NOTIFICATIONS_RUNTIME_H
#define NOTIFICATIONS_RUNTIME_H

#include <signal.h>
#include <stdint.h>

#include "herald/amqp.h"
#include "herald/error.h"
#include "herald/sender.h"
#include "herald/log.h"
#include "herald/retry.h"
#include "herald/stop.h"

#include "application.h"

/* Everything the process needs to know, read by main.c from the environment. Strings are
 * borrowed from the configuration. */
typedef struct notif_config {
    const char *listen_address; /* numeric IP */
    uint16_t listen_port;
    const char *database_url;
    long consumer_cache_kib; /* SQLite: cache_kib of the consumer's connection when the URL
                              * sets none (0: SQLite's own, 2,000 KiB) */
    long aux_cache_kib;      /* SQLite: cache_kib of the sweeper's, API's and relay's connections;
                              * 0: the URL's */
    const char *database_read_url; /* a standby for history and preferences; NULL or "": none */
    int64_t read_max_lag_ms;       /* 0: HD_REPLICA_MAX_LAG_DEFAULT */
    const char *amqp_url;
    const char *smtp_url; /* NULL: the log sender */
    long smtp_timeout_ms;
    hd_sender_smtp_options smtp; /* HD_SMTP_TLS, HD_SMTP_CA_FILE (timeout: smtp_timeout_ms) */
    hd_amqp_options amqp_tls;    /* HD_AMQP_CA_FILE, _CERT_FILE, _KEY_FILE; the rest unused */
    const char *templates_dir;
    const char *users_exchange;
    const char *queue;
    hd_retry_policy retry; /* of the work queue: HD_QUEUE_TYPE, HD_DELIVERY_LIMIT */
    int prefetch;
    int64_t max_message_bytes; /* the broker's max_message_size, as configured there */
    int64_t memory_budget;     /* bytes: prefetch x max_message_bytes must fit (main.c) */
    const char *api_token;     /* the HTTP API's bearer token; NULL only with api_open */
    int api_open;              /* 1: the API without authentication (logged as a warning) */
    int sweep_ms;
    int relay;         /* 1: run the outbox relay in this process */
    int relay_handoff; /* 1: and hand it the rows (relay.h, "Handed rows") */
    int64_t inbox_retention_ms;
    notif_settings app; /* mail_from, attempts, backoff, lease */
} notif_config;

/* Requested by the signal handler; every thread watches it and every wait wakes on it. */
extern hd_stop notif_stop;

/* Initialise notif_stop, install the handlers of SIGTERM and SIGINT (they request it) and
 * ignore SIGPIPE. Returns 0 or hd_stop_init's code. */
int notif_install_signals(hd_error *err);

/* Run the service until notif_stop is set. lg is borrowed. Returns the process's exit
 * status: 0 stopped cleanly, 1 a failure at run time (logged). */
int notif_run(const notif_config *cfg, hd_logger *lg);

#endif /* NOTIFICATIONS_RUNTIME_H */
