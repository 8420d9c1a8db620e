/* retry.c — retry tiers, attempt counting from x-death, and the retry topology; see retry.h. */
#include "herald/retry.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

void hd_retry_policy_default(hd_retry_policy *p)
{
    memset(p, 0, sizeof *p);
    p->max_attempts = 4;
    p->ntiers = 3;
    p->tier_ms[0] = 1000;
    p->tier_ms[1] = 5000;
    p->tier_ms[2] = 30000;
}

int hd_retry_policy_check(const hd_retry_policy *p, hd_error *err)
{
    if (p == NULL)
        return hd_error_set(err, HD_ECONFIG, "retry policy missing");
    if (p->max_attempts < 1)
        return hd_error_set(err, HD_ECONFIG, "max_attempts is %d, must be >= 1", p->max_attempts);
    if (p->ntiers < 1 || p->ntiers > HD_RETRY_MAX_TIERS)
        return hd_error_set(err, HD_ECONFIG, "ntiers is %d, must be 1..%d", p->ntiers,
                            HD_RETRY_MAX_TIERS);
    if (p->queue_type != HD_QUEUE_CLASSIC && p->queue_type != HD_QUEUE_QUORUM)
        return hd_error_set(err, HD_ECONFIG, "queue type %d, must be classic or quorum",
                            (int)p->queue_type);
    if (p->delivery_limit < 0 || p->delivery_limit > UINT32_MAX)
        return hd_error_set(err, HD_ECONFIG, "delivery_limit is %" PRId64 ", must be >= 0",
                            p->delivery_limit);
    for (int i = 0; i < p->ntiers; i++) {
        /* x-message-ttl is a 32-bit unsigned count of ms on the broker side. */
        if (p->tier_ms[i] < 1 || p->tier_ms[i] > UINT32_MAX)
            return hd_error_set(err, HD_ECONFIG, "tier %d delay is %" PRId64 " ms", i,
                                p->tier_ms[i]);
    }
    return HD_OK;
}

int hd_retry_tier(const hd_retry_policy *p, int attempt)
{
    if (attempt < 1 || p->ntiers < 1)
        return HD_EINVAL;
    return attempt - 1 < p->ntiers ? attempt - 1 : p->ntiers - 1;
}

int64_t hd_retry_delay_ms(const hd_retry_policy *p, int attempt)
{
    int tier = hd_retry_tier(p, attempt);
    return tier < 0 ? tier : p->tier_ms[tier];
}

int hd_retry_exhausted(const hd_retry_policy *p, int attempt)
{
    /* An attempt below 1 is not a number the broker counted (hd_retry_attempt never returns
     * one): it has no tier to wait in, so the only safe place for the message is the DLQ. */
    return attempt < 1 || attempt >= p->max_attempts;
}

static int in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] != NULL && strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

int hd_retry_attempt(const hd_xdeath *deaths, size_t ndeaths, const char *const *tier_queues,
                     size_t n_tier_queues)
{
    /* x-death arrives with the message, and a publisher can write any header it likes: the
     * counts are hostile input. Adding two counts near INT64_MAX is signed overflow (undefined;
     * in practice a negative attempt, then a tier index before the tier array and a message
     * that never reaches the DLQ). So the sum saturates at SUM_MAX, checked BEFORE each
     * addition, and counts below 1 add nothing. The attempt is then at most INT_MAX: far
     * past any max_attempts, so a forged count sends the message to the DLQ. */
    const int64_t SUM_MAX = INT_MAX - 1;
    int64_t sum = 0;
    for (size_t i = 0; i < ndeaths && sum < SUM_MAX; i++) {
        /* Only our own delay tiers count: a message may arrive already carrying deaths from
         * another service's queues, and those are not attempts of ours. */
        if (strcmp(deaths[i].reason, "expired") != 0)
            continue;
        if (!in_list(deaths[i].queue, tier_queues, n_tier_queues))
            continue;
        int64_t count = deaths[i].count;
        if (count < 1)
            continue;
        sum = count >= SUM_MAX - sum ? SUM_MAX : sum + count;
    }
    return (int)sum + 1;
}

/* Copy an AMQP byte string into a C string, truncating. */
static void copy_bytes(char *dst, size_t cap, amqp_bytes_t b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n > 0)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

static int key_is(const amqp_table_entry_t *e, const char *name)
{
    size_t n = strlen(name);
    return e->key.len == n && memcmp(e->key.bytes, name, n) == 0;
}

/* Any integer kind as int64 (the broker writes count as a signed long, 'l', but a client
 * that re-encodes headers may have narrowed it). Returns 0 when v is not an integer. */
static int field_int(const amqp_field_value_t *v, int64_t *out)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = v->value.i8;
        return 1;
    case AMQP_FIELD_KIND_U8:
        *out = v->value.u8;
        return 1;
    case AMQP_FIELD_KIND_I16:
        *out = v->value.i16;
        return 1;
    case AMQP_FIELD_KIND_U16:
        *out = v->value.u16;
        return 1;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return 1;
    case AMQP_FIELD_KIND_U32:
        *out = v->value.u32;
        return 1;
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return 1;
    case AMQP_FIELD_KIND_U64:
        *out = v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
        return 1;
    default:
        return 0;
    }
}

static int field_is_string(const amqp_field_value_t *v)
{
    return v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES;
}

int hd_xdeath_parse(const amqp_table_t *headers, hd_xdeath *out, size_t cap, size_t *n)
{
    *n = 0;
    if (headers == NULL)
        return HD_OK;
    const amqp_field_value_t *xdeath = NULL;
    for (int i = 0; i < headers->num_entries; i++)
        if (key_is(&headers->entries[i], "x-death"))
            xdeath = &headers->entries[i].value;
    if (xdeath == NULL)
        return HD_OK;
    if (xdeath->kind != AMQP_FIELD_KIND_ARRAY)
        return HD_EPROTO;

    const amqp_array_t *arr = &xdeath->value.array;
    for (int i = 0; i < arr->num_entries; i++) {
        const amqp_field_value_t *item = &arr->entries[i];
        if (item->kind != AMQP_FIELD_KIND_TABLE)
            return HD_EPROTO;
        if (*n == cap)
            continue; /* keep validating, stop copying */
        hd_xdeath *d = &out[*n];
        memset(d, 0, sizeof *d);
        const amqp_table_t *t = &item->value.table;
        for (int j = 0; j < t->num_entries; j++) {
            const amqp_table_entry_t *e = &t->entries[j];
            if (key_is(e, "queue") && field_is_string(&e->value))
                copy_bytes(d->queue, sizeof d->queue, e->value.value.bytes);
            else if (key_is(e, "reason") && field_is_string(&e->value))
                copy_bytes(d->reason, sizeof d->reason, e->value.value.bytes);
            else if (key_is(e, "exchange") && field_is_string(&e->value))
                copy_bytes(d->exchange, sizeof d->exchange, e->value.value.bytes);
            else if (key_is(e, "count"))
                field_int(&e->value, &d->count);
            /* "time", "routing-keys", "original-expiration": not needed for counting. */
        }
        (*n)++;
    }
    return HD_OK;
}

/* AMQP queue and exchange names are short strings: 255 bytes at most. */
static int name_fits(int len, size_t cap)
{
    return len >= 0 && (size_t)len < cap && len <= 255;
}

int hd_retry_tier_queue_name(char *buf, size_t cap, const char *queue, int64_t delay_ms)
{
    if (buf == NULL || cap == 0 || queue == NULL)
        return HD_EINVAL;
    int len = snprintf(buf, cap, "%s.retry.%" PRId64 "ms", queue, delay_ms);
    return name_fits(len, cap) ? HD_OK : HD_ERANGE;
}

int hd_retry_dlq_name(char *buf, size_t cap, const char *queue)
{
    if (buf == NULL || cap == 0 || queue == NULL)
        return HD_EINVAL;
    int len = snprintf(buf, cap, "%s.dlq", queue);
    return name_fits(len, cap) ? HD_OK : HD_ERANGE;
}

int hd_retry_exchange_name(char *buf, size_t cap, const char *queue)
{
    if (buf == NULL || cap == 0 || queue == NULL)
        return HD_EINVAL;
    int len = snprintf(buf, cap, "%s.retry", queue);
    return name_fits(len, cap) ? HD_OK : HD_ERANGE;
}

/* ---- topology ------------------------------------------------------------------------- */

int hd_retry_names_make(const char *queue, const hd_retry_policy *p, hd_retry_names *out,
                        hd_error *err)
{
    hd_retry_policy tmp;
    if (p == NULL) {
        hd_retry_policy_default(&tmp);
        p = &tmp;
    }
    memset(out, 0, sizeof *out);
    if (queue == NULL || *queue == '\0')
        return hd_error_set(err, HD_EINVAL, "consumer: a work queue name is required");
    int rc = hd_retry_policy_check(p, err);
    if (rc < 0)
        return rc;
    if (strlen(queue) > HD_AMQP_NAME_MAX ||
        hd_retry_exchange_name(out->retry_exchange, sizeof out->retry_exchange, queue) < 0 ||
        hd_retry_dlq_name(out->dlq, sizeof out->dlq, queue) < 0)
        return hd_error_set(err, HD_ERANGE, "consumer: queue name '%s' too long", queue);
    for (int i = 0; i < p->ntiers; i++)
        if (hd_retry_tier_queue_name(out->tiers[i], sizeof out->tiers[i], queue, p->tier_ms[i]) < 0)
            return hd_error_set(err, HD_ERANGE, "consumer: queue name '%s' too long", queue);
    snprintf(out->queue, sizeof out->queue, "%s", queue);
    out->ntiers = p->ntiers;
    return HD_OK;
}

int hd_retry_topology_make(hd_retry_topology *rt, const char *queue, const hd_retry_policy *p,
                           hd_error *err)
{
    hd_retry_policy tmp;
    if (p == NULL) {
        hd_retry_policy_default(&tmp);
        p = &tmp;
    }
    memset(rt, 0, sizeof *rt);
    int rc = hd_retry_names_make(queue, p, &rt->n, err);
    if (rc < 0)
        return rc;
    const hd_retry_names *n = &rt->n;
    rt->exchange =
        (hd_exchange_spec){.name = n->retry_exchange, .type = HD_EXCHANGE_DIRECT, .durable = 1};
    size_t nq = 0, nb = 0;
    /* Quorum (retry.h): every queue replicated; the work queue and the tiers with a delivery
     * limit and an at-least-once dead-letter target, so that nothing is dropped. */
    int quorum = p->queue_type == HD_QUEUE_QUORUM;
    int64_t limit = !quorum                 ? 0
                    : p->delivery_limit > 0 ? p->delivery_limit
                                            : HD_RETRY_DELIVERY_LIMIT_DEFAULT;
    rt->queues[nq++] = (hd_queue_spec){.name = n->queue,
                                       .durable = 1,
                                       .type = p->queue_type,
                                       .dead_letter_exchange = quorum ? "" : NULL,
                                       .dead_letter_routing_key = quorum ? n->dlq : NULL,
                                       .delivery_limit = limit,
                                       .dead_letter_at_least_once = quorum};
    for (int i = 0; i < p->ntiers; i++) {
        int seen = 0;
        for (int k = 0; k < i; k++)
            seen |= strcmp(n->tiers[k], n->tiers[i]) == 0;
        if (seen)
            continue;
        /* Nobody consumes a tier queue. Its messages wait out the TTL at the head of the
         * queue (all share one TTL, so the oldest always expires first: a classic queue only
         * expires messages at its head) and are dead-lettered back to the work queue through
         * the default exchange, whose routing key is a queue name. */
        rt->queues[nq++] = (hd_queue_spec){.name = n->tiers[i],
                                           .durable = 1,
                                           .type = p->queue_type,
                                           .dead_letter_exchange = "",
                                           .dead_letter_routing_key = n->queue,
                                           .message_ttl_ms = p->tier_ms[i],
                                           .delivery_limit = limit,
                                           .dead_letter_at_least_once = quorum};
        rt->bindings[nb++] = (hd_binding_spec){
            .queue = n->tiers[i], .exchange = n->retry_exchange, .key = n->tiers[i]};
    }
    /* The DLQ comes last: hd_retry_declare declares it on its own (an existing DLQ with
     * other arguments is kept). Its TTL bounds how long dead letters, secrets included,
     * stay on the broker (retry.h, HD_RETRY_DLQ_TTL_DEFAULT_MS). */
    int64_t dlq_ttl = p->dlq_ttl_ms == 0  ? HD_RETRY_DLQ_TTL_DEFAULT_MS
                      : p->dlq_ttl_ms < 0 ? 0
                                          : p->dlq_ttl_ms;
    rt->queues[nq++] = (hd_queue_spec){.name = n->dlq,
                                       .durable = 1,
                                       .type = p->queue_type,
                                       .message_ttl_ms = dlq_ttl,
                                       .delivery_limit = quorum ? HD_RETRY_DLQ_DELIVERY_LIMIT : 0};
    rt->t = (hd_topology){&rt->exchange, 1, rt->queues, nq, rt->bindings, nb};
    return HD_OK;
}

int hd_retry_declare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err)
{
    hd_retry_topology rt;
    int rc = hd_retry_topology_make(&rt, queue, p, err);
    if (rc < 0)
        return rc;
    hd_topology without_dlq = rt.t;
    without_dlq.n_queues--;
    if ((rc = hd_topology_declare(a, &without_dlq, err)) < 0)
        return rc;
    const hd_queue_spec *dlq = &rt.queues[rt.t.n_queues - 1];
    hd_error declare_err;
    rc = hd_queue_declare(a, dlq, NULL, &declare_err);
    if (rc == HD_EAMQP && hd_amqp_last_reply_code(a) == AMQP_PRECONDITION_FAILED) {
        /* The DLQ exists with other arguments (retry.h): keep it, if it is really there. */
        if ((rc = hd_queue_inspect(a, dlq->name, NULL, err)) < 0)
            return rc;
        return HD_OK;
    }
    if (rc < 0 && err != NULL)
        *err = declare_err;
    return rc;
}

int hd_retry_undeclare(hd_amqp *a, const char *queue, const hd_retry_policy *p, hd_error *err)
{
    hd_retry_topology rt;
    int rc = hd_retry_topology_make(&rt, queue, p, err);
    return rc < 0 ? rc : hd_topology_delete(a, &rt.t, err);
}
