/* retention.c — see retention.h. */
#include "retention.h"

#include <stdio.h>

/* A duration as people write HD_* settings: "36s", "24h", "1500ms". */
static void fmt_ms(char *buf, size_t cap, int64_t ms)
{
    if (ms % 3600000 == 0 && ms > 0)
        snprintf(buf, cap, "%lldh", (long long)(ms / 3600000));
    else if (ms % 60000 == 0 && ms > 0)
        snprintf(buf, cap, "%lldm", (long long)(ms / 60000));
    else if (ms % 1000 == 0 && ms > 0)
        snprintf(buf, cap, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, cap, "%lldms", (long long)ms);
}

int64_t notif_retry_horizon_ms(const hd_retry_policy *p, int64_t *retries_ms, int64_t *replay_ms,
                               hd_error *err)
{
    hd_retry_policy def;
    if (p == NULL) {
        hd_retry_policy_default(&def);
        p = &def;
    }
    int rc = hd_retry_policy_check(p, err);
    if (rc < 0)
        return rc;
    /* Attempt k (1-based) that fails waits hd_retry_delay_ms(p, k) before attempt k + 1; the
     * last attempt goes to the dead-letter queue instead. */
    int64_t retries = 0;
    for (int k = 1; k < p->max_attempts; k++)
        retries += hd_retry_delay_ms(p, k);
    int64_t replay = p->dlq_ttl_ms > 0 ? p->dlq_ttl_ms : HD_RETRY_DLQ_TTL_DEFAULT_MS;
    if (retries_ms != NULL)
        *retries_ms = retries;
    if (replay_ms != NULL)
        *replay_ms = replay;
    return retries + replay;
}

int notif_inbox_retention_check(int64_t retention_ms, const hd_retry_policy *p, hd_error *err)
{
    hd_retry_policy def;
    if (p == NULL) {
        hd_retry_policy_default(&def);
        p = &def;
    }
    int64_t retries = 0, replay = 0;
    int64_t horizon = notif_retry_horizon_ms(p, &retries, &replay, err);
    if (horizon < 0)
        return (int)horizon;
    if (retention_ms == 0 || retention_ms >= horizon)
        return 0;
    /* The arithmetic, term by term, so that the operator sees where the number comes from. */
    char sum[256] = "", d[32];
    size_t len = 0;
    for (int k = 1; k < p->max_attempts && len < sizeof sum - 40; k++) {
        fmt_ms(d, sizeof d, hd_retry_delay_ms(p, k));
        len += (size_t)snprintf(sum + len, sizeof sum - len, "%s%s", k > 1 ? " + " : "", d);
    }
    if (p->max_attempts == 1)
        snprintf(sum, sizeof sum, "none");
    char ret[32], need[32];
    fmt_ms(ret, sizeof ret, retention_ms);
    fmt_ms(need, sizeof need, horizon);
    /* err holds HD_ERROR_TEXT_MAX (256) bytes: the sentence is kept short. */
    return hd_error_set(err, HD_ECONFIG,
                        "HD_INBOX_RETENTION %s is shorter than retries + replay can take: "
                        "retries %s = %lld ms (%d attempts) + replay allowance %lld ms "
                        "(dead-letter TTL) = %lld ms; set at least %s (0: keep ids forever)",
                        ret, sum, (long long)retries, p->max_attempts, (long long)replay,
                        (long long)horizon, need);
}
