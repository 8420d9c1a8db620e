/* herald/clock.h — time and identifiers shared by every module.
 *
 * Events carry a UUID and an RFC 3339 UTC timestamp with millisecond precision
 * ("2026-11-23T04:05:06.789Z"); relays and consumers measure intervals on the monotonic
 * clock. These few functions keep that in one place.
 */
#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HD_UUID_LEN 36 /* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" without the NUL */
#define HD_TIME_LEN 24 /* "YYYY-MM-DDTHH:MM:SS.mmmZ" without the NUL */

/* Write a new random (version 4) UUID, lower-case, NUL-terminated, into out. For what must
 * not be guessed or dated: correlation ids, claim tokens, a mail's Message-ID. */
void hd_uuid_v4(char out[HD_UUID_LEN + 1]);

/* Write a new time-ordered (version 7, RFC 9562) UUID into out: the creation time in
 * milliseconds, then 74 random bits; ids made later sort after (as text too). For the ids
 * databases index: events (the outbox's event_id, the inbox's message_id) and aggregates.
 * Random ids land on a random page of every index that holds them, so each commit dirties
 * pages all over the index and the WAL and its checkpoints carry them; time-ordered ids
 * land on the last page. Measured: p99 commit -> mail sent about halved at 1,000 events/s
 * (docs/bench.md, issue 14's fifth pass). Such an id tells when it was made, to the
 * millisecond: use hd_uuid_v4 where that must not be known. */
void hd_uuid_v7(char out[HD_UUID_LEN + 1]);

/* 1 when s is a UUID in canonical 8-4-4-4-12 hex form (any version), else 0. */
int hd_uuid_valid(const char *s);

/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t hd_time_now_ms(void);

/* Monotonic time in milliseconds (for intervals, timeouts and rates; not a date). */
int64_t hd_clock_ms(void);

/* Monotonic time in nanoseconds (for latency measurements). */
int64_t hd_clock_ns(void);

/* *ts = CLOCK_MONOTONIC now + ms (ms >= 0; a negative ms counts as 0), normalised: the
 * absolute time pthread_cond_timedwait takes on a condition variable set to that clock
 * (pthread_condattr_setclock), which a change of the wall clock cannot stretch. */
struct timespec;
void hd_clock_deadline(struct timespec *ts, int64_t ms);

/* Format epoch milliseconds as RFC 3339 UTC with milliseconds into out. */
void hd_time_format(int64_t epoch_ms, char out[HD_TIME_LEN + 1]);

/* Parse an RFC 3339 timestamp ("2026-11-23T04:05:06Z", optional fraction, "Z" or
 * "+hh:mm"/"-hh:mm" offset) into epoch milliseconds. Returns 0, or HD_ETYPE when s is not
 * such a timestamp. */
int hd_time_parse(const char *s, int64_t *epoch_ms);

/* Sleep for ms milliseconds (restarts on EINTR). A sleep that must end at once when the
 * process is told to stop is hd_stop_wait_ms (herald/stop.h). */
void hd_sleep_ms(int64_t ms);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_CLOCK_H */
