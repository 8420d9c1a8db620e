/* hd_relay_test.h — an outbox and a relay in a test: fill the outbox with numbered events,
 * count its rows, run hd_relay_run in a thread of its own. Shared by the relay's tests on one
 * broker (test_relay.c) and on the cluster (test_cluster_failover.c).
 *
 * Include after the cmocka prelude (see hd_test.h): every helper fails the test on an error.
 */
#ifndef HD_RELAY_TEST_H
#define HD_RELAY_TEST_H

#include <pthread.h>
#include <stdint.h>

#include "herald/error.h"
#include "herald/relay.h"
#include "herald/stop.h"
#include "herald/store.h"

/* Appends events from .. from + n - 1 of type "<topic>.item_added", per_tx of them per
 * transaction, event k with body data {"n": k} for its own aggregate "item-k" (so no row
 * waits for another's retry). traced: every third (k % 3 == 0) also carries a traceparent and
 * the correlation id "corr-test". s and topic borrowed. */
void hd_test_outbox_fill(hd_store *s, const char *topic, int from, int n, int per_tx, int traced);

/* The rows still to publish (hd_outbox_depth). */
int64_t hd_test_outbox_pending(hd_store *s);

/* SELECT COUNT(*) FROM hd_outbox WHERE <where>. */
int64_t hd_test_outbox_count(hd_store *s, const char *where);

/* hd_relay_run in a thread of its own. Set relay (borrowed: the test frees it), then start;
 * rc and err are its result once joined. */
typedef struct hd_test_runner {
    hd_relay *relay;
    hd_stop stop;
    int rc;
    hd_error err;
    pthread_t thread;
} hd_test_runner;

/* Starts hd_relay_run in a new thread, with a fresh stop token. */
void hd_test_runner_start(hd_test_runner *rn);

/* Waits for it (it drains, or was stopped) and releases its stop token. */
void hd_test_runner_join(hd_test_runner *rn);

/* Stops it and waits for it: how long hd_relay_run took to return, in ms. */
int64_t hd_test_runner_stop(hd_test_runner *rn);

#endif
