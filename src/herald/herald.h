/* herald/herald.h — the whole of libherald (the patterns) in one include.
 *
 * Each module has its own header, and including just the ones you use is fine; this header
 * exists so that a program can start with one line. The order below is the learning order
 * of the tutorial. The service plumbing (HTTP, metrics, settings, templates, senders) is a
 * library of its own, libherald-service, with herald/service.h as its one include: a program
 * that only wants the outbox links neither libmicrohttpd nor libcurl.
 */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "herald/error.h"
#include "herald/clock.h"
#include "herald/log.h"
#include "herald/buf.h"
#include "herald/email.h"
#include "herald/backoff.h"

/* the domain side: events, aggregates, the dispatcher, the unit of work, the store port */
#include "herald/event.h"
#include "herald/aggregate.h"
#include "herald/dispatcher.h"
#include "herald/scope.h"
#include "herald/store.h"
#include "herald/uow.h"

/* PostgreSQL-only extras of the store (LISTEN / NOTIFY) */
#include "herald/store_pg.h"

/* stale-tolerant reads on a PostgreSQL standby, read-your-writes */
#include "herald/replica.h"

/* integration events on the wire */
#include "herald/envelope.h"

/* RabbitMQ */
#include "herald/amqp.h"
#include "herald/topology.h"
#include "herald/publisher.h"
#include "herald/delivery.h"
#include "herald/retry.h"
#include "herald/consumer.h"

/* the transactional outbox and the inbox (idempotent consumer) */
#include "herald/outbox.h"
#include "herald/inbox.h"
#include "herald/relay.h"
#include "herald/stream.h"

/* the integration event bus (topic / consumer / event types): RabbitMQ, Redis pub/sub and
 * in-memory */
#include "herald/bus.h"
#include "herald/bus_memory.h"
#include "herald/bus_rabbit.h"
#include "herald/bus_redis.h"

#define HD_VERSION_STRING "0.1.0"

#endif /* HERALD_HERALD_H */
