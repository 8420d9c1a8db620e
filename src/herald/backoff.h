/* herald/backoff.h — how long to wait before trying again.
 *
 * When a broker restarts, every relay and consumer connected to it fails at the same moment.
 * If they all retry after 100 ms, then 200 ms, then 400 ms, they hit the broker together
 * each time (a thundering herd) and may keep it down. Exponential backoff spaces the
 * attempts out; *full jitter* spreads them: the wait before attempt n is a uniformly random
 * value in [0, min(cap, base * 2^n)], so the clients drift apart after the first failure.
 * (See "Exponential Backoff And Jitter", Marc Brooker, AWS Architecture Blog, 2015: full
 * jitter does the least total work of the variants compared there.)
 *
 *     hd_backoff b;
 *     hd_backoff_init(&b, 100, 30000, (uint64_t)hd_clock_ns());
 *     for (unsigned attempt = 0; try_connect() != 0; attempt++)
 *         hd_stop_wait_ms(&stop, hd_backoff_delay(&b, attempt));
 *
 * The generator is a small seeded PRNG (splitmix64) kept inside the struct, not rand():
 * rand() has hidden global state shared with the whole process, and a seed makes tests
 * reproducible. It is not cryptographic and need not be. In production seed from something
 * that differs between processes (hd_clock_ns()), or the processes jitter in lockstep.
 *
 * hd_backoff is a plain value owned by the caller, like hd_error: nothing to release. One
 * per retry loop; not for sharing between threads without a lock (delay updates the state).
 */
#ifndef HERALD_BACKOFF_H
#define HERALD_BACKOFF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_backoff {
    int64_t base_ms; /* ceiling of attempt 0 */
    int64_t cap_ms;  /* no ceiling is ever above this */
    uint64_t state;  /* PRNG state; change it only through init */
} hd_backoff;

/* Set b up with base_ms (>= 0), cap_ms (>= 0) and a PRNG seed (any value, 0 included).
 * A cap below base simply makes every ceiling the cap. Returns 0, or HD_EINVAL when base_ms
 * or cap_ms is negative (b is then left unchanged). */
int hd_backoff_init(hd_backoff *b, int64_t base_ms, int64_t cap_ms, uint64_t seed);

/* The largest delay of attempt (0-based): min(cap, base * 2^attempt), computed without
 * overflow for any attempt. Deterministic; does not touch the PRNG. */
int64_t hd_backoff_ceiling(const hd_backoff *b, unsigned attempt);

/* A delay in milliseconds, uniformly random in [0, hd_backoff_ceiling(b, attempt)], both
 * ends included. Advances the PRNG: the same seed gives the same sequence. */
int64_t hd_backoff_delay(hd_backoff *b, unsigned attempt);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BACKOFF_H */
