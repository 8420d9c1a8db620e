/* herald/ratelimit.h — token buckets per key: "at most N requests per period, with bursts".
 *
 * A public endpoint that does real work for anyone (register, send a mail, hash a password)
 * needs a limit per caller, or one client takes the service from everybody. A token bucket
 * per key (a client address, an e-mail address) is the usual answer:
 *
 *   - a bucket holds up to `burst` tokens and starts full;
 *   - it refills continuously at `per_second` tokens a second;
 *   - a request takes one token; with none left it is refused, and the caller learns when
 *     the next token arrives (HTTP: 429 Too Many Requests with Retry-After).
 *
 * So a client may do `burst` requests at once, then `per_second` a second for ever.
 *
 *     hd_ratelimit *rl;
 *     hd_ratelimit_options o = {.per_second = 0.5, .burst = 10};  // 30/min, bursts of 10
 *     if (hd_ratelimit_new(&o, &rl, &err) < 0) ...
 *     int64_t wait_ms;
 *     if (hd_ratelimit_take(rl, client_address, &wait_ms) == 0) ... 429, Retry-After ...
 *
 * Bounded memory. Keys come from the outside (an attacker picks as many addresses as an
 * IPv6 prefix holds), so the table holds at most max_keys buckets. A full bucket carries no
 * information (a new key starts full too), so when the table is full the limiter first
 * forgets every key whose bucket has refilled (at most once a second). If every tracked key
 * is still active, a NEW key does not get a bucket of its own: all such keys share one
 * overflow bucket with the same rate and burst. Clients already tracked keep their own
 * bucket; a flood of fresh keys is limited as one client — never unlimited, and never
 * more memory. Memory: about max_keys * (64 + key length) bytes.
 *
 * Known limits: the state is per process (two replicas each allow the rate); keys are cut
 * at HD_RATELIMIT_KEY_MAX bytes; the hash (FNV-1a, seeded per limiter) is not a keyed PRF,
 * so a determined client could make probing slower, bounded by max_keys.
 *
 * Threads: every function may be called from any thread (one mutex per limiter).
 * Time: a monotonic clock in milliseconds, injectable for tests.
 */
#ifndef HERALD_RATELIMIT_H
#define HERALD_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_RATELIMIT_KEYS_DEFAULT 10000
#define HD_RATELIMIT_KEY_MAX      255 /* longer keys are cut: an e-mail address is <= 254 */

typedef struct hd_ratelimit_options {
    double per_second; /* refill rate, > 0 */
    double burst;      /* bucket size, >= 1 */
    size_t max_keys;   /* buckets tracked at most; 0: HD_RATELIMIT_KEYS_DEFAULT */
    /* Monotonic milliseconds; NULL: hd_clock_ms. Tests pass a fake clock. */
    int64_t (*clock_ms)(void *ctx);
    void *clock_ctx; /* borrowed, given to clock_ms */
} hd_ratelimit_options;

typedef struct hd_ratelimit hd_ratelimit;

/* A new limiter (free with hd_ratelimit_free); opts is copied. Returns 0, HD_EINVAL (rate
 * <= 0 or burst < 1) or HD_ENOMEM. */
int hd_ratelimit_new(const hd_ratelimit_options *opts, hd_ratelimit **out, hd_error *err);

void hd_ratelimit_free(hd_ratelimit *rl);

/* Take one token from key's bucket (key borrowed, copied when first seen). Returns 1 when
 * the request may go ahead, 0 when it must be refused, with *retry_after_ms (may be NULL)
 * set to the wait until a token is back (>= 1), or HD_EINVAL for NULL arguments. */
int hd_ratelimit_take(hd_ratelimit *rl, const char *key, int64_t *retry_after_ms);

/* How many keys have a bucket of their own now (tests, metrics). */
size_t hd_ratelimit_keys(hd_ratelimit *rl);

/* Parse a rate "N/s", "N/m" or "N/h" (N > 0, a decimal number: "0.5/s", "30/m") into
 * tokens per second. Returns 0 or HD_EINVAL. */
int hd_ratelimit_parse_rate(const char *text, double *per_second);

#ifdef __cplusplus
}
#endif

#endif /* HERALD_RATELIMIT_H */
