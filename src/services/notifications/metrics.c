/* notifications/metrics.c — the service's metric families (application.h), and counting. */
#include <string.h>

#include "internal.h"

int notif_metrics_register(hd_metrics *m, notif_metrics *out)
{
    static const double send_buckets[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                          0.1,    0.5,    1,     5,     10,   30};
    memset(out, 0, sizeof *out);
    out->consumed =
        hd_metrics_counter(m, "notifications_consumed_total",
                           "Users events accepted (new, not duplicates).", "event_type", NULL);
    out->duplicates =
        hd_metrics_counter(m, "notifications_duplicates_total",
                           "Deliveries skipped by the inbox (already processed).", NULL);
    out->rejected =
        hd_metrics_counter(m, "notifications_rejected_total",
                           "Messages refused to the dead-letter queue.", "reason", NULL);
    out->sent =
        hd_metrics_counter(m, "notifications_sent_total", "Notifications sent.", "type", NULL);
    out->failed =
        hd_metrics_counter(m, "notifications_failed_total",
                           "Notifications failed for good (attempts exhausted).", "type", NULL);
    out->skipped = hd_metrics_counter(m, "notifications_skipped_total",
                                      "Notifications not sent because of the user's preferences.",
                                      "type", NULL);
    out->retries = hd_metrics_counter(m, "notifications_retries_total",
                                      "Failed send attempts that will be retried.", "type", NULL);
    out->erased = hd_metrics_counter(m, "notifications_users_erased_total",
                                     "Users whose data was erased (users.user_deleted).", NULL);
    out->order_waits = hd_metrics_counter(
        m, "notifications_order_waits_total",
        "Events that found their user's previous event not yet processed (several instances): "
        "waited for it, or deferred to a retry.",
        "outcome", NULL);
    out->send_seconds = hd_metrics_histogram(
        m, "notifications_send_duration_seconds", "Time to hand one mail to the sender.",
        send_buckets, sizeof send_buckets / sizeof send_buckets[0], "sender", NULL);
    int ok = out->consumed && out->duplicates && out->rejected && out->sent && out->failed &&
             out->skipped && out->retries && out->erased && out->order_waits && out->send_seconds;
    return ok ? 0 : HD_ENOMEM;
}

/* Metrics are optional: c may be NULL. */
void notif_count(hd_counter *c, const char *label)
{
    if (c != NULL)
        hd_counter_inc(c, label ? (const char *const[]){label} : NULL, 1);
}
