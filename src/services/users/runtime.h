/* users/runtime.h — herald-users as a process: wiring the layers, the in-process relay,
 * stopping.
 *
 * users_run wires the layers together, in the order a reader would explain them:
 * settings -> store (+ migrations) -> application -> metrics -> relay (optional) -> HTTP;
 * then it waits for SIGTERM or SIGINT and takes everything down in reverse: the HTTP
 * server stops accepting and finishes the requests it has (hd_http_server_stop), the relay
 * finishes its cycle, the store closes.
 *
 * Signals are blocked in every thread (the mask is inherited, so it is set before any
 * thread starts) and received by users_run with sigwait(): the signal becomes an ordinary
 * event of the main thread, and no handler runs at an arbitrary point of another thread,
 * where almost nothing is async-signal-safe.
 *
 * The relay. With HD_AMQP_URL set, a thread drains the outbox into RabbitMQ (relay.h) on
 * its own store connection and its own AMQP connection, woken at once by every commit that
 * appended events (an in-process notifier). Without it the service only writes its outbox,
 * and a standalone herald-relay pointed at the same database does the publishing: the
 * service never talks to the broker itself, which is what the outbox is for.
 */
#ifndef USERS_RUNTIME_H
#define USERS_RUNTIME_H

#include "herald/config.h"
#include "herald/log.h"

/* Run the service with the settings in cfg (borrowed: HD_USERS_LISTEN, HD_DATABASE_URL,
 * HD_AMQP_URL, ... — main.c lists them) and the logger lg (borrowed), from the calling
 * thread, until SIGTERM or SIGINT. Call it before any other thread is started (it sets
 * the signal mask they inherit). Returns the process's exit status: 0 stopped cleanly,
 * 1 could not start (logged). */
int users_run(const hd_config *cfg, hd_logger *lg);

#endif /* USERS_RUNTIME_H */
