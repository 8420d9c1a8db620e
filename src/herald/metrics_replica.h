/* herald/metrics_replica.h — the standby router's numbers (replica.h) as Prometheus metrics.
 *
 * One call at start-up, the same families in every service that reads from a standby, so
 * that one alert rule covers them all (docs/metrics.md):
 *
 *   database_reads{server="standby"|"primary"}        reads routed, totals since start
 *   database_read_fallbacks{reason="down"|"lagging"}  reads that should have gone to the
 *                                                     standby and went to the primary
 *   database_read_standby_up                          1 when the last standby query worked
 *   database_read_lag_seconds                         the replay lag last measured; absent
 *                                                     while unknown (standby down)
 *
 * The totals are gauges computed at each render from hd_replica_stats_get (metrics.h
 * computes only gauges on demand); read them like counters: rate() works while the process
 * lives. Reads routed to the primary for the caller's own write ("own_write") or because no
 * standby is configured are primary reads, not fallbacks. The last two families exist only
 * when a standby is configured: a service without one has nothing to alert on.
 */
#ifndef HERALD_METRICS_REPLICA_H
#define HERALD_METRICS_REPLICA_H

#include "herald/metrics.h"
#include "herald/replica.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Register the families above in m (borrowed), computed from r (borrowed: it must outlive
 * m's renders, i.e. be closed after hd_metrics_free or after the last render). Returns 0,
 * HD_EINVAL (NULL argument) or HD_ENOMEM. */
int hd_metrics_replica_register(hd_metrics *m, const hd_replica *r);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_METRICS_REPLICA_H */
