/* hd_cluster.h — the three-node RabbitMQ cluster of scripts/servers.sh, for tests.
 *
 * `scripts/servers.sh up --cluster` (and `make test`, which runs with --cluster) starts nodes
 * herald1..3@localhost and writes HD_CLUSTER_URLS, HD_CLUSTER_URL_1..3 and HD_SERVERS_CTL into
 * its env file. These helpers read them (a missing one FAILS the test: hd_test_require_env),
 * kill and restart nodes through servers.sh, and ask which node leads a quorum queue.
 *
 * Tests that use them are named test_cluster_*.c: CMake labels them "integration;cluster" and
 * gives them one RESOURCE_LOCK, so that a node kill never overlaps another cluster test.
 * Every test must leave all three nodes running (hd_cluster_all_up at its end).
 */
#ifndef HD_TEST_CLUSTER_H
#define HD_TEST_CLUSTER_H

#define HD_CLUSTER_SIZE 3

/* HD_CLUSTER_URLS: every node's URL, comma-separated (a valid HD_AMQP_URL). Borrowed. */
const char *hd_cluster_urls(void);

/* HD_CLUSTER_URL_<node>, node 1..3. Borrowed. */
const char *hd_cluster_url(int node);

/* The list of every node's URL starting with node `first` (1..3), so that a client
 * connects to that node and fails over to the others. New string: free(). */
char *hd_cluster_urls_from(int first);

/* "$HD_SERVERS_CTL" <verb> rabbit<node>: verb "kill" (kill -9 of the node's VM), "stop",
 * "start" (waits until the node is up and back in the cluster). Fails the test when it fails. */
void hd_cluster_node(const char *verb, int node);

/* Start every node that is down (a test's cleanup, also after a failure of its own). */
void hd_cluster_all_up(void);

/* The node (1..3) that leads quorum queue `queue` as `rabbitmqctl list_queues` on a running
 * node tells it, or 0 when it does not know (no leader yet, no such queue). */
int hd_cluster_leader(const char *queue);

/* Wait up to timeout_ms for queue to have a leader that is not `not_node` (0: any);
 * returns it, or 0 on time-out. */
int hd_cluster_wait_leader(const char *queue, int not_node, int timeout_ms);

#endif /* HD_TEST_CLUSTER_H */
