/* herald/metrics_replica.c — the standby router's metrics (see metrics_replica.h). */
#include "herald/metrics_replica.h"

/* One callback per series, each taking the router as its context: no context to allocate. */
static hd_replica_stats stats_of(void *ctx)
{
    hd_replica_stats st;
    hd_replica_stats_get(ctx, &st);
    return st;
}

static int reads_standby(void *ctx, double *out)
{
    *out = (double)stats_of(ctx).reads[HD_REPLICA_STANDBY];
    return 0;
}

static int reads_primary(void *ctx, double *out)
{
    hd_replica_stats st = stats_of(ctx);
    uint64_t n = 0;
    for (int i = 0; i < HD_REPLICA_ROUTES; i++)
        if (i != HD_REPLICA_STANDBY)
            n += st.reads[i];
    *out = (double)n;
    return 0;
}

static int fallbacks_down(void *ctx, double *out)
{
    *out = (double)stats_of(ctx).reads[HD_REPLICA_DOWN];
    return 0;
}

static int fallbacks_lagging(void *ctx, double *out)
{
    *out = (double)stats_of(ctx).reads[HD_REPLICA_LAGGING];
    return 0;
}

static int standby_up(void *ctx, double *out)
{
    *out = stats_of(ctx).standby_up ? 1 : 0;
    return 0;
}

static int lag_seconds(void *ctx, double *out)
{
    hd_replica_stats st = stats_of(ctx);
    if (st.lag_ms < 0)
        return HD_ENOTFOUND; /* unknown is not 0: leave the series out */
    *out = (double)st.lag_ms / 1000.0;
    return 0;
}

int hd_metrics_replica_register(hd_metrics *m, const hd_replica *r)
{
    if (m == NULL || r == NULL)
        return HD_EINVAL;
    void *ctx = (void *)r; /* the callbacks only read it (hd_replica_stats_get) */
    hd_gauge *reads = hd_metrics_gauge(
        m, "database_reads", "Stale-tolerant reads by the server that answered, since start.",
        "server", NULL);
    hd_gauge *fallbacks = hd_metrics_gauge(
        m, "database_read_fallbacks",
        "Reads meant for the standby that went to the primary, by reason, since start.", "reason",
        NULL);
    if (reads == NULL || fallbacks == NULL ||
        hd_gauge_set_func(reads, (const char *const[]){"standby"}, reads_standby, ctx) < 0 ||
        hd_gauge_set_func(reads, (const char *const[]){"primary"}, reads_primary, ctx) < 0 ||
        hd_gauge_set_func(fallbacks, (const char *const[]){"down"}, fallbacks_down, ctx) < 0 ||
        hd_gauge_set_func(fallbacks, (const char *const[]){"lagging"}, fallbacks_lagging, ctx) < 0)
        return HD_ENOMEM;
    if (!hd_replica_configured(r))
        return 0;
    hd_gauge *up = hd_metrics_gauge(m, "database_read_standby_up",
                                    "1 when the read standby answered its last query.", NULL);
    hd_gauge *lag = hd_metrics_gauge(
        m, "database_read_lag_seconds",
        "Replay lag of the read standby, last measured (absent while it is down).", NULL);
    if (up == NULL || lag == NULL || hd_gauge_set_func(up, NULL, standby_up, ctx) < 0 ||
        hd_gauge_set_func(lag, NULL, lag_seconds, ctx) < 0)
        return HD_ENOMEM;
    return 0;
}
