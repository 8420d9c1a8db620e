/* stop.c — the stop token; see stop.h.
 *
 * Why a pipe and not eventfd: POSIX has pipes, and the token needs no counter, only "has
 * become readable". The read end is never drained except by hd_stop_reset, so a requested
 * stop stays visible to every poller, however many there are and whenever they look.
 */
#include "herald/stop.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* hd_stop_request runs in signal handlers: the atomic must not hide a lock. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "hd_stop needs a lock-free atomic_int");

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fd_fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fd_fl < 0)
        return -1;
    /* Non-blocking: a request must never block a signal handler, even on a full pipe. */
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, fd_fl | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

int hd_stop_init(hd_stop *s, hd_error *err)
{
    if (s == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_stop_init: stop is NULL");
    atomic_init(&s->requested, 0);
    s->rfd = s->wfd = -1;
    int fds[2];
    if (pipe(fds) < 0)
        return hd_error_set(err, HD_EIO, "stop: pipe: %s", strerror(errno));
    if (set_flags(fds[0]) < 0 || set_flags(fds[1]) < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return hd_error_set(err, HD_EIO, "stop: fcntl: %s", strerror(e));
    }
    s->rfd = fds[0];
    s->wfd = fds[1];
    return HD_OK;
}

void hd_stop_release(hd_stop *s)
{
    if (s == NULL)
        return;
    if (s->rfd >= 0)
        close(s->rfd);
    if (s->wfd >= 0)
        close(s->wfd);
    s->rfd = s->wfd = -1;
}

void hd_stop_request(hd_stop *s)
{
    if (s == NULL)
        return;
    /* The exchange makes it idempotent: one byte however often it is called, so a signal
     * storm cannot fill the pipe (and a full pipe would still be readable anyway). */
    if (atomic_exchange(&s->requested, 1) != 0)
        return;
    if (s->wfd >= 0) {
        int saved = errno; /* a signal handler must not change errno under the code it cut */
        ssize_t w;
        do
            w = write(s->wfd, "x", 1);
        while (w < 0 && errno == EINTR);
        errno = saved;
    }
}

int hd_stop_requested(const hd_stop *s)
{
    return s != NULL && atomic_load_explicit(&s->requested, memory_order_acquire) != 0;
}

int hd_stop_fd(const hd_stop *s)
{
    return s != NULL ? s->rfd : -1;
}

int hd_stop_poll(const hd_stop *stop, struct pollfd *fds, size_t n, int64_t timeout_ms)
{
    if (n > HD_STOP_POLL_MAX || (n > 0 && fds == NULL))
        return HD_EINVAL;
    struct pollfd all[HD_STOP_POLL_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        all[i] = fds[i];
        all[i].revents = 0;
    }
    size_t total = n;
    int sfd = hd_stop_fd(stop);
    if (sfd >= 0)
        all[total++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        if (hd_stop_requested(stop))
            return HD_EINTR;
        int wait;
        if (timeout_ms < 0) {
            wait = -1;
        } else if (timeout_ms == 0) {
            wait = 0;
        } else {
            int64_t left = deadline - now_ms();
            if (left < 0)
                left = 0;
            wait = left > 1000000000 ? 1000000000 : (int)left;
        }
        int ready = poll(all, (nfds_t)total, wait);
        if (ready < 0) {
            if (errno == EINTR)
                continue; /* a signal that requested the stop is seen at the top */
            return HD_EIO;
        }
        if (hd_stop_requested(stop))
            return HD_EINTR;
        if (ready == 0) {
            if (wait == 0 || (timeout_ms > 0 && now_ms() >= deadline))
                return 0;
            continue; /* woke early (a capped wait): sleep the rest */
        }
        /* Ready, and not because of the stop (its fd turns readable only after the flag). */
        int count = 0;
        for (size_t i = 0; i < n; i++) {
            fds[i].revents = all[i].revents;
            count += all[i].revents != 0;
        }
        if (count > 0)
            return count;
    }
}

int hd_stop_wait_ms(const hd_stop *stop, int64_t ms)
{
    if (hd_stop_requested(stop))
        return 1;
    if (ms <= 0)
        return 0;
    return hd_stop_poll(stop, NULL, 0, ms) == HD_EINTR;
}

void hd_stop_reset(hd_stop *s)
{
    if (s == NULL)
        return;
    char buf[64];
    if (s->rfd >= 0)
        while (read(s->rfd, buf, sizeof buf) > 0)
            ;
    atomic_store(&s->requested, 0);
}
