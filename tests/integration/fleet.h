/* fleet.h — several instances of the example system, for the integration tests of issue 10.
 *
 * A fleet is the users outbox (a PostgreSQL database of its own, written by the test the way
 * the users service writes it: one transaction per few users, hd_outbox_append), N
 * herald-relay processes on that outbox, and N herald-notifications processes on one queue
 * and one PostgreSQL database, every process started through hd_proc. The broker names
 * (users exchange, work queue) are unique to the run; the services get them through their
 * settings (HD_RELAY_EXCHANGE, HD_USERS_EXCHANGE, HD_NOTIFICATIONS_QUEUE).
 *
 * What happened is read from the databases, not from the processes (a process killed with
 * SIGKILL takes its counters with it). The fleet installs three test-only triggers:
 *   - hd_test_applied (notifications database): one row per notification INSERTed, in a
 *     sequence taken at the INSERT, with the instance that inserted it (its connection's
 *     application_name, set in its database URL). A rolled-back window leaves no row. It
 *     gives every event's effect count and, per user, the order in which the effects were
 *     applied: an instance that inserts event 2 of a user before another instance inserted
 *     event 1 shows as an inversion (one that inserts it after the INSERT but before the
 *     commit of event 1 does not: the witness is conservative);
 *   - hd_test_inbox (notifications database): one row per id PROPOSED to the inbox in a
 *     committed transaction (a BEFORE INSERT trigger fires also for the ids that ON
 *     CONFLICT DO NOTHING then skips), so proposals - distinct ids = the duplicates the
 *     inbox absorbed (relay republishes and broker redeliveries alike);
 *   - hd_test_dispatched (users database): the relay (claimed_by) that marked each outbox
 *     row dispatched: the relays' shares.
 *
 * Functions fail the test (cmocka) on any error; a process that does not start dumps its
 * log first.
 */
#ifndef HD_FLEET_H
#define HD_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "hd_proc.h"
#include "hd_test.h"
#include "herald/store.h"

#define FLEET_MAX             3 /* instances of each service */
#define FLEET_EVENTS_PER_USER 5 /* registered, verified, three password resets */

typedef struct fleet {
    const char *amqp_url;   /* what the services get: one URL, or a comma list (cluster) */
    const char *queue_type; /* NULL: the services' default; "quorum" on the cluster */
    /* Per instance, instead of amqp_url when set (borrowed): on the cluster, each instance
     * gets the list of nodes starting with another node, so that the instances spread over
     * the nodes and the test knows which node each one is connected to. */
    const char *relay_url[FLEET_MAX], *notif_url[FLEET_MAX];
    hd_test_db users_db, notif_db;
    hd_store *users, *notif; /* the test's handles */
    char *exchange, *queue, *tag;
    hd_proc *relay[FLEET_MAX], *notifications[FLEET_MAX];
    int prefetch;    /* HD_PREFETCH of the notifications instances */
    int relay_batch; /* HD_RELAY_BATCH */
    const char *relay_lease_ms;
    const char *notif_env; /* one more setting for the notifications instances ("NAME=value"),
                              NULL: none (experiments: HD_NOTIFY_ORDER_WAIT_MS=0) */
    int n_users;           /* users written so far (each with FLEET_EVENTS_PER_USER events) */
    int witness;           /* the notifications triggers are installed */
} fleet;

/* What fleet_report found. */
typedef struct fleet_report {
    int64_t events;                       /* written to the outbox */
    int64_t lost;                         /* events with no notification */
    int64_t extra;                        /* notifications beyond one per event */
    int64_t inversions;                   /* effects applied before an earlier event of the user */
    int64_t inbox_duplicates;             /* proposals to the inbox - distinct ids */
    int64_t per_notifications[FLEET_MAX]; /* notifications applied by each instance */
    int64_t per_relay[FLEET_MAX];         /* rows dispatched by each relay */
    int64_t dlq;                          /* messages in the dead-letter queue */
    int64_t ready;                        /* messages left in the work queue */
} fleet_report;

/* Databases, names, the outbox table and the users-side trigger. amqp_url and queue_type
 * are borrowed (must outlive f). */
void fleet_open(fleet *f, const char *tag, const char *amqp_url, const char *queue_type);

/* Stop every process still running (SIGTERM, then SIGKILL), delete the broker names, drop
 * the databases. */
void fleet_close(fleet *f);

/* After a failure (a cmocka teardown): kill -9 every process of the fleet still running, so
 * that none outlives the test. Safe after fleet_close and on a zeroed fleet. */
void fleet_abort(fleet *f);

/* Start instance i (0..FLEET_MAX-1) and wait until it is ready (notifications: /health;
 * relay: "relay started"). A previous process of that slot must have exited. The first
 * notifications instance also creates the schema, after which the witness triggers are
 * installed. */
void fleet_start_notifications(fleet *f, int i);
void fleet_start_relay(fleet *f, int i);

/* kill -9 of instance i (it must be running). */
void fleet_kill_notifications(fleet *f, int i);
void fleet_kill_relay(fleet *f, int i);

/* Append the events of n more users (each FLEET_EVENTS_PER_USER, consecutive in the outbox,
 * five users per transaction), as the users service would. */
void fleet_write(fleet *f, int n);

/* Wait until every event written has its notification (or timeout_ms), printing progress
 * every few seconds; fails the test with the services' logs when time runs out. */
void fleet_wait(fleet *f, int timeout_ms);

/* Wait until `want` events have their notification (the same failure on time-out). */
void fleet_wait_count(fleet *f, int64_t want, int timeout_ms);

/* Events that have their notification now. */
int64_t fleet_done(fleet *f);

/* Count (see fleet_report) and print the figures, one line each, prefixed with label. */
void fleet_report_get(fleet *f, const char *label, fleet_report *r);

/* Lines of the log of notifications instance i (all its runs) that contain needle. */
int64_t fleet_log_count(const fleet *f, int i, const char *needle);

/* A value of notifications instance i's /metrics: the sum of every series of `name`; -1
 * when it does not answer. */
int64_t fleet_metric(fleet *f, int i, const char *name);

#endif
