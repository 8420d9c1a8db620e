/* backoff.c — capped exponential backoff with full jitter; see backoff.h. */
#include "herald/backoff.h"
#include "herald/error.h"

int hd_backoff_init(hd_backoff *b, int64_t base_ms, int64_t cap_ms, uint64_t seed)
{
    if (b == NULL || base_ms < 0 || cap_ms < 0)
        return HD_EINVAL;
    b->base_ms = base_ms;
    b->cap_ms = cap_ms;
    b->state = seed;
    return HD_OK;
}

int64_t hd_backoff_ceiling(const hd_backoff *b, unsigned attempt)
{
    uint64_t base = (uint64_t)b->base_ms, cap = (uint64_t)b->cap_ms;
    if (base == 0)
        return 0;
    /* base * 2^attempt <= cap  <=>  base <= cap / 2^attempt (integer division), so compare
     * before shifting: the shift itself could overflow, and shifting by 64 or more is
     * undefined in C. cap < 2^63, so any attempt >= 63 is over the cap whenever base >= 1. */
    if (attempt >= 63 || base > (cap >> attempt))
        return (int64_t)cap;
    return (int64_t)(base << attempt);
}

/* splitmix64 (Steele, Lea and Flood, 2014): one 64-bit state, any seed, good enough
 * statistics for jitter, and six lines a student can check by hand. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int64_t hd_backoff_delay(hd_backoff *b, unsigned attempt)
{
    uint64_t ceiling = (uint64_t)hd_backoff_ceiling(b, attempt);
    uint64_t range = ceiling + 1; /* [0, ceiling] inclusive; ceiling < 2^63, no overflow */
    /* `r % range` alone favours small values when range does not divide 2^64. Drop the
     * draws below 2^64 mod range (computed as -range % range in unsigned arithmetic) so that
     * every remainder is equally likely; at most half of the draws are ever dropped. */
    uint64_t threshold = (0 - range) % range;
    uint64_t r;
    do {
        r = splitmix64(&b->state);
    } while (r < threshold);
    return (int64_t)(r % range);
}
