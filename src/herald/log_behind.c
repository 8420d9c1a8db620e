/* log_behind.c — lines that wait in memory for one write(2); see log_behind.h. */
#include "herald/log_behind.h"
#include "herald/clock.h"
#include "herald/error.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct hd_log_behind {
    pthread_mutex_t lock; /* buf, len, stop, spare */
    pthread_cond_t wake;  /* the thread: a first line waits, half the buffer is used, or stop */
    pthread_mutex_t out;  /* held while writing to fd; taken with lock held (see the header) */
    char *buf;            /* the lines that wait: [0, len) */
    size_t len;
    char *spare; /* the other buffer; NULL while the thread writes from it */
    int fd;
    int flush_ms;
    int stop;
    pthread_t thread;
};

void hd_log_write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
}

/* With b->lock held: what waits, then line[0, n), in one writev, before any later write. */
static void write_now_locked(hd_log_behind *b, const char *line, size_t n)
{
    struct iovec iov[2];
    int k = 0;
    if (b->len > 0)
        iov[k++] = (struct iovec){.iov_base = b->buf, .iov_len = b->len};
    if (n > 0)
        iov[k++] = (struct iovec){.iov_base = (char *)line, .iov_len = n};
    b->len = 0;
    if (k == 0)
        return;
    pthread_mutex_lock(&b->out); /* after a write the thread started: its bytes are older */
    hd_log_write_all(b->fd, iov, k);
    pthread_mutex_unlock(&b->out);
}

/* The thread: sleeps while nothing waits; once a line waits, lets flush_ms pass (or half the
 * buffer fill), swaps the buffers and writes the full one outside the lock. */
static void *run(void *arg)
{
    hd_log_behind *b = arg;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->stop && b->len == 0)
            pthread_cond_wait(&b->wake, &b->lock);
        if (b->stop)
            break; /* hd_log_behind_free writes what is left */
        struct timespec until;
        hd_clock_deadline(&until, b->flush_ms);
        while (!b->stop && b->len < HD_LOG_BEHIND_CAP / 2 &&
               pthread_cond_timedwait(&b->wake, &b->lock, &until) != ETIMEDOUT) {
        }
        if (b->len == 0)
            continue; /* a line that must not wait wrote it meanwhile */
        char *full = b->buf;
        size_t n = b->len;
        b->buf = b->spare;
        b->spare = NULL;
        b->len = 0;
        pthread_mutex_lock(&b->out);
        pthread_mutex_unlock(&b->lock);
        struct iovec iov = {.iov_base = full, .iov_len = n};
        hd_log_write_all(b->fd, &iov, 1);
        pthread_mutex_unlock(&b->out);
        pthread_mutex_lock(&b->lock);
        b->spare = full;
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

int hd_log_behind_new(int fd, int flush_ms, hd_log_behind **out)
{
    if (out == NULL || fd < 0 || flush_ms < 1 || flush_ms > HD_LOG_BEHIND_MAX_MS)
        return HD_EINVAL;
    *out = NULL;
    hd_log_behind *b = calloc(1, sizeof *b);
    if (b == NULL)
        return HD_ENOMEM;
    b->fd = fd;
    b->flush_ms = flush_ms;
    b->buf = malloc(HD_LOG_BEHIND_CAP);
    b->spare = malloc(HD_LOG_BEHIND_CAP);
    int rc = HD_ENOMEM;
    int have_lock = 0, have_out = 0, have_wake = 0;
    pthread_condattr_t ca;
    int have_ca = 0;
    if (b->buf == NULL || b->spare == NULL)
        goto out;
    rc = HD_EIO;
    if (pthread_mutex_init(&b->lock, NULL) != 0)
        goto out;
    have_lock = 1;
    if (pthread_mutex_init(&b->out, NULL) != 0)
        goto out;
    have_out = 1;
    /* CLOCK_MONOTONIC: a clock step must not make the thread sleep for hours. */
    if (pthread_condattr_init(&ca) != 0)
        goto out;
    have_ca = 1;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&b->wake, &ca) != 0)
        goto out;
    have_wake = 1;
    /* The thread starts with every signal blocked: a service that waits for SIGTERM in a
     * thread of its own (sigwait) blocks it in the others, maybe only after this call, and a
     * SIGTERM delivered here would end the process with the default action instead. */
    sigset_t all, was;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &was);
    int started = pthread_create(&b->thread, NULL, run, b) == 0;
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    if (!started)
        goto out;
    pthread_condattr_destroy(&ca);
    *out = b;
    return HD_OK;
out:
    if (have_ca)
        pthread_condattr_destroy(&ca);
    if (have_wake)
        pthread_cond_destroy(&b->wake);
    if (have_out)
        pthread_mutex_destroy(&b->out);
    if (have_lock)
        pthread_mutex_destroy(&b->lock);
    free(b->buf);
    free(b->spare);
    free(b);
    return rc;
}

void hd_log_behind_free(hd_log_behind *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = 1;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    pthread_mutex_lock(&b->lock);
    write_now_locked(b, NULL, 0);
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->out);
    pthread_mutex_destroy(&b->lock);
    free(b->buf);
    free(b->spare);
    free(b);
}

void hd_log_behind_put(hd_log_behind *b, const char *buf, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&b->lock);
    if (n > HD_LOG_BEHIND_CAP) {
        write_now_locked(b, buf, n);
    } else {
        /* Full (the thread is late, or writing): this caller writes what waits itself. */
        if (b->len + n > HD_LOG_BEHIND_CAP)
            write_now_locked(b, NULL, 0);
        size_t before = b->len;
        memcpy(b->buf + b->len, buf, n);
        b->len += n;
        /* Wake the thread for a first line, and again when half the buffer is used. */
        if (before == 0 || (before < HD_LOG_BEHIND_CAP / 2 && b->len >= HD_LOG_BEHIND_CAP / 2))
            pthread_cond_signal(&b->wake);
    }
    pthread_mutex_unlock(&b->lock);
}

void hd_log_behind_now(hd_log_behind *b, const char *buf, size_t n)
{
    pthread_mutex_lock(&b->lock);
    write_now_locked(b, buf, n);
    pthread_mutex_unlock(&b->lock);
}
