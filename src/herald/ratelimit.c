/* ratelimit.c — token buckets in a bounded open-addressing table; see ratelimit.h. */
#include "herald/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"

typedef struct bucket {
    char *key; /* owned; NULL: an empty slot */
    uint64_t hash;
    double tokens;
    int64_t last_ms; /* when tokens was last brought up to date */
} bucket;

struct hd_ratelimit {
    pthread_mutex_t lock;
    double per_second, burst;
    size_t max_keys, count;
    size_t cap; /* slots: a power of two >= 2 * max_keys, so probes stay short */
    bucket *slots;
    bucket overflow; /* shared by new keys while the table is full of active ones */
    int64_t last_sweep_ms;
    uint64_t seed;
    int64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
};

static int64_t default_clock(void *ctx)
{
    (void)ctx;
    return hd_clock_ms();
}

/* FNV-1a, seeded so that two limiters (two runs) lay keys out differently. */
static uint64_t hash_key(uint64_t seed, const char *key, size_t n)
{
    uint64_t h = 14695981039346656037ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int hd_ratelimit_new(const hd_ratelimit_options *opts, hd_ratelimit **out, hd_error *err)
{
    if (opts == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_ratelimit_new: NULL argument");
    *out = NULL;
    if (!(opts->per_second > 0) || !(opts->burst >= 1) || !isfinite(opts->per_second) ||
        !isfinite(opts->burst))
        return hd_error_set(err, HD_EINVAL, "rate limit: the rate must be > 0 and the burst >= 1");
    size_t max_keys = opts->max_keys ? opts->max_keys : HD_RATELIMIT_KEYS_DEFAULT;
    if (max_keys > SIZE_MAX / 4 / sizeof(bucket))
        return hd_error_set(err, HD_EINVAL, "rate limit: max_keys is too large");
    hd_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    rl->cap = 8;
    while (rl->cap < 2 * max_keys)
        rl->cap *= 2;
    rl->slots = calloc(rl->cap, sizeof *rl->slots);
    if (rl->slots == NULL) {
        free(rl);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    pthread_mutex_init(&rl->lock, NULL);
    rl->per_second = opts->per_second;
    rl->burst = opts->burst;
    rl->max_keys = max_keys;
    rl->clock_ms = opts->clock_ms ? opts->clock_ms : default_clock;
    rl->clock_ctx = opts->clock_ctx;
    rl->seed = (uint64_t)hd_clock_ns() ^ (uint64_t)(uintptr_t)rl;
    int64_t now = rl->clock_ms(rl->clock_ctx);
    rl->overflow = (bucket){NULL, 0, rl->burst, now};
    rl->last_sweep_ms = now;
    *out = rl;
    return 0;
}

void hd_ratelimit_free(hd_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < rl->cap; i++)
        free(rl->slots[i].key);
    free(rl->slots);
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

/* Bring b's tokens up to now. */
static void refill(const hd_ratelimit *rl, bucket *b, int64_t now)
{
    if (now > b->last_ms) {
        b->tokens += (double)(now - b->last_ms) / 1000.0 * rl->per_second;
        if (b->tokens > rl->burst)
            b->tokens = rl->burst;
        b->last_ms = now;
    }
}

/* The slot holding key, or the empty slot where it would go. */
static bucket *find_slot(hd_ratelimit *rl, const char *key, size_t n, uint64_t h)
{
    size_t mask = rl->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        bucket *b = &rl->slots[i];
        if (b->key == NULL || (b->hash == h && strncmp(b->key, key, n) == 0 && b->key[n] == '\0'))
            return b;
    }
}

/* Forget the keys whose bucket is full again: they are indistinguishable from new ones.
 * Rebuilds the table (linear probing has no cheap delete). */
static void sweep(hd_ratelimit *rl, int64_t now)
{
    rl->last_sweep_ms = now;
    bucket *old = rl->slots;
    bucket *fresh = calloc(rl->cap, sizeof *fresh);
    if (fresh == NULL)
        return; /* keep the old table: still bounded, just full */
    rl->slots = fresh;
    rl->count = 0;
    for (size_t i = 0; i < rl->cap; i++) {
        bucket *b = &old[i];
        if (b->key == NULL)
            continue;
        refill(rl, b, now);
        if (b->tokens >= rl->burst) {
            free(b->key);
            continue;
        }
        *find_slot(rl, b->key, strlen(b->key), b->hash) = *b;
        rl->count++;
    }
    free(old);
}

/* The bucket for key: its own, a new one, or the shared overflow bucket. */
static bucket *bucket_for(hd_ratelimit *rl, const char *key, int64_t now)
{
    size_t n = strnlen(key, HD_RATELIMIT_KEY_MAX);
    uint64_t h = hash_key(rl->seed, key, n);
    bucket *b = find_slot(rl, key, n, h);
    if (b->key != NULL)
        return b;
    if (rl->count >= rl->max_keys && now - rl->last_sweep_ms >= 1000) {
        sweep(rl, now);
        b = find_slot(rl, key, n, h);
    }
    if (rl->count >= rl->max_keys)
        return &rl->overflow;
    char *copy = malloc(n + 1);
    if (copy == NULL)
        return &rl->overflow; /* out of memory: still limited, never unlimited */
    memcpy(copy, key, n);
    copy[n] = '\0';
    *b = (bucket){copy, h, rl->burst, now};
    rl->count++;
    return b;
}

int hd_ratelimit_take(hd_ratelimit *rl, const char *key, int64_t *retry_after_ms)
{
    if (rl == NULL || key == NULL)
        return HD_EINVAL;
    pthread_mutex_lock(&rl->lock);
    int64_t now = rl->clock_ms(rl->clock_ctx);
    bucket *b = bucket_for(rl, key, now);
    refill(rl, b, now);
    int ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else if (retry_after_ms != NULL)
        *retry_after_ms = (int64_t)ceil((1.0 - b->tokens) / rl->per_second * 1000.0);
    pthread_mutex_unlock(&rl->lock);
    if (!ok && retry_after_ms != NULL && *retry_after_ms < 1)
        *retry_after_ms = 1;
    return ok;
}

size_t hd_ratelimit_keys(hd_ratelimit *rl)
{
    if (rl == NULL)
        return 0;
    pthread_mutex_lock(&rl->lock);
    size_t n = rl->count;
    pthread_mutex_unlock(&rl->lock);
    return n;
}

int hd_ratelimit_parse_rate(const char *text, double *per_second)
{
    if (text == NULL || per_second == NULL)
        return HD_EINVAL;
    char *end;
    double n = strtod(text, &end);
    if (end == text || *end != '/' || !(n > 0) || !isfinite(n) || end[1] == '\0' || end[2] != '\0')
        return HD_EINVAL;
    double period;
    switch (end[1]) {
    case 's':
        period = 1;
        break;
    case 'm':
        period = 60;
        break;
    case 'h':
        period = 3600;
        break;
    default:
        return HD_EINVAL;
    }
    *per_second = n / period;
    return 0;
}
