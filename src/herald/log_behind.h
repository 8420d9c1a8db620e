/* herald/log_behind.h — write-behind for a logger's busiest lines (internal to log.c).
 *
 * An HTTP server writes one access line a request. Written at once, each costs a write(2)
 * (about 1.7 µs on the 2-core machine of docs/bench.md, more when threads share the file),
 * which is a tenth of the CPU of a GET /users/{id}. Written behind, lines wait in memory and
 * one write(2) takes all that waited: what nginx's `access_log ... buffer= flush=` and
 * Envoy's access-log flush interval do.
 *
 * A behind writer owns two buffers of HD_LOG_BEHIND_CAP bytes and a thread. hd_log_behind_put
 * copies a line into the current buffer; the thread writes it at most flush_ms after the
 * first line went in (sooner when half the buffer is used), and the buffers swap so that
 * lines keep arriving while it writes. hd_log_behind_now writes what waits and then its own
 * line, before it returns: the lines that must not wait (warnings, errors, the service's own
 * events) go through it, so the stream keeps the order of the calls whichever path a line
 * took. One mutex (out) is held by whoever writes to the descriptor, taken while the buffer
 * is still locked: writes leave in the order their bytes entered.
 *
 * Known limit: what waits is lost when the process dies without hd_log_behind_free (SIGKILL,
 * a crash): at most flush_ms of lines written with put. Lines written with now are never
 * held. */
#ifndef HERALD_LOG_BEHIND_H
#define HERALD_LOG_BEHIND_H

#include <stddef.h>

#include "herald/log.h"

#define HD_LOG_BEHIND_CAP    (64 * 1024) /* bytes a buffer holds; a longer line goes at once */
#define HD_LOG_BEHIND_MAX_MS HD_LOG_FLUSH_MS_MAX /* log.h */

typedef struct hd_log_behind hd_log_behind;

struct iovec;

/* iov[0, n) to fd, all of it: written again after a signal or a short write (a full disk),
 * dropped on an error (a logger must not break its caller). iov is changed. log.c writes
 * its lines that do not wait through it too. */
void hd_log_write_all(int fd, struct iovec *iov, int n);

/* A writer of fd (borrowed: kept open by the caller until hd_log_behind_free) that writes
 * what waits at most flush_ms (1..HD_LOG_BEHIND_MAX_MS) after it started waiting. *out
 * receives it (new). Returns 0, HD_EINVAL (bad fd or flush_ms), HD_ENOMEM, or HD_EIO (no
 * thread could be started). */
int hd_log_behind_new(int fd, int flush_ms, hd_log_behind **out);

/* Write what waits, stop the thread and free b (NULL allowed). */
void hd_log_behind_free(hd_log_behind *b);

/* buf[0, n) (borrowed), whole lines, to wait for the next write. A line longer than the
 * buffer is written at once, after what waits. */
void hd_log_behind_put(hd_log_behind *b, const char *buf, size_t n);

/* What waits, then buf[0, n) (borrowed; n may be 0), written before it returns. */
void hd_log_behind_now(hd_log_behind *b, const char *buf, size_t n);

#endif /* HERALD_LOG_BEHIND_H */
