/* herald/stop.h — one stop token that every loop watches and every wait wakes on.
 *
 * A long-running loop (a relay, a consumer, a bus, a reconnect backoff) has to stop when
 * SIGTERM arrives or when another thread says so, and it has to stop *now*, not at the end
 * of whatever it is waiting for. An hd_stop is
 *   - a C11 atomic flag: the loops read it, and the read is ordered with the store of the
 *     thread or signal handler that set it (a `volatile int` gives no such guarantee
 *     between threads in C11: volatile is about the compiler and memory-mapped devices,
 *     not about other cores), and
 *   - a self-pipe that becomes readable, for good, once a stop is requested: a wait that
 *     poll()s it together with its own socket (the broker's, PostgreSQL's) or notifier
 *     returns at once instead of at its next timeout.
 *
 *     static hd_stop stop;                           // one per process, or per thread group
 *     static void on_sigterm(int sig) { (void)sig; hd_stop_request(&stop); }
 *
 *     hd_stop_init(&stop, &err);                     // before the handler is installed
 *     ... install on_sigterm ...
 *     hd_relay_run(relay, &stop, &err);              // returns soon after SIGTERM
 *     hd_stop_release(&stop);
 *
 * Every function that takes `const hd_stop *stop` accepts NULL: "never stopped".
 * The struct is public so that it can live in static storage (a signal handler needs it
 * without a pointer to set up); its fields are private.
 *
 * Known limits: one pipe per token, held open until release (two file descriptors). A
 * token is not meant for fork(): the child shares the pipe.
 */
#ifndef HERALD_STOP_H
#define HERALD_STOP_H

#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_stop {
    atomic_int requested; /* private: 1 once hd_stop_request ran */
    int rfd;              /* private: the pipe's read end; readable once requested */
    int wfd;              /* private: the pipe's write end */
} hd_stop;

/* Make s a fresh token (not requested). Call it before anything can request or wait on it,
 * in particular before installing a signal handler that requests it. Returns 0, HD_EINVAL
 * (s NULL) or HD_EIO (no pipe: out of file descriptors). */
int hd_stop_init(hd_stop *s, hd_error *err);

/* Close the pipe. Nothing may wait on s or request it any more (uninstall the signal
 * handler first). NULL and a token that was never initialised successfully are fine. */
void hd_stop_release(hd_stop *s);

/* Request the stop: set the flag and make the fd readable. Idempotent, thread-safe and
 * async-signal-safe (one atomic exchange and at most one write(2); errno is preserved), so
 * call it from a signal handler. NULL is fine. */
void hd_stop_request(hd_stop *s);

/* 1 once a stop was requested, else 0 (also for NULL). Acquire ordering: what the
 * requesting thread wrote before the request is visible after this returns 1. */
int hd_stop_requested(const hd_stop *s);

/* A file descriptor that becomes readable (POLLIN) when the stop is requested and stays so:
 * poll it with your own. Borrowed: do not read, write or close it. -1 for NULL. */
int hd_stop_fd(const hd_stop *s);

/* Sleep ms milliseconds or until the stop is requested, whichever comes first (a signal
 * does not cut the sleep short unless it requests the stop). Returns 1 when stopped (also
 * when it already was: then at once), 0 when the time ran out. stop NULL: a plain sleep. */
int hd_stop_wait_ms(const hd_stop *stop, int64_t ms);

#define HD_STOP_POLL_MAX 63 /* fds hd_stop_poll takes besides the stop's own */

/* poll(2) fds (n <= HD_STOP_POLL_MAX of them, borrowed; their revents are set; n 0 and fds
 * NULL is fine) together with the stop's fd,
 * up to timeout_ms (negative: no limit; 0: just look), restarting on EINTR with the time
 * left. Returns HD_EINTR when the stop is requested (whether or not an fd is ready too),
 * the number of fds with revents (> 0), 0 when the time ran out, or HD_EIO (poll failed;
 * errno is poll's) or HD_EINVAL (n too large). stop NULL: only fds. */
int hd_stop_poll(const hd_stop *stop, struct pollfd *fds, size_t n, int64_t timeout_ms);

/* Make s not requested again (drain the pipe). For tests and for code that reuses a token
 * between runs; only while nothing waits on it or requests it. NULL is fine. */
void hd_stop_reset(hd_stop *s);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STOP_H */
