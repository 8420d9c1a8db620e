/* clock.c — time and identifiers; see clock.h. */
#include "herald/clock.h"
#include "herald/error.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include <unistd.h>
#include <uuid/uuid.h>

/* Every event, envelope and notification gets a UUID, so generating one is on the hot path
 * of the relay and the consumer. uuid_generate_random asks the kernel for 16 bytes each
 * time (a system call or more per id); instead each thread keeps a pool of random bytes,
 * refilled 4 KiB at a time from libsodium's CSPRNG, and formats them with libuuid.
 * A child process must not reuse its parent's pool (both would hand out the same ids): a
 * fork handler (pthread_atfork, registered before the first pool is filled) bumps a
 * generation the pools remember. It used to be getpid() on every id, a system call a GET
 * /users/{id} (its correlation id) and every event paid (docs/modules/http.md, issue 14).
 * Known limit: a child made with a raw clone(2), which runs no fork handlers, is not seen;
 * fork(), and posix_spawn's exec, are fine. */
#define UUID_POOL_BYTES 4096

static _Thread_local struct {
    unsigned char bytes[UUID_POOL_BYTES];
    size_t used;
    unsigned long gen;
} uuid_pool = {.used = UUID_POOL_BYTES};

/* Starts at 1, so that a pool never filled (gen 0) never matches. */
static atomic_ulong fork_gen = 1;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* 16 random bytes from this thread's pool, into u. Without any entropy source for libsodium
 * (it cannot start), libuuid's own generator gives them. */
static void random16(unsigned char u[16])
{
    unsigned long gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    if (uuid_pool.used + 16 > UUID_POOL_BYTES || uuid_pool.gen != gen) {
        pthread_once(&fork_once, register_fork_handler);
        if (sodium_init() < 0) {
            uuid_generate_random(u);
            return;
        }
        /* Read after registering: a fork from here on bumps it past this pool's. */
        gen = atomic_load(&fork_gen);
        randombytes_buf(uuid_pool.bytes, UUID_POOL_BYTES);
        uuid_pool.used = 0;
        uuid_pool.gen = gen;
    }
    memcpy(u, uuid_pool.bytes + uuid_pool.used, 16);
    sodium_memzero(uuid_pool.bytes + uuid_pool.used, 16); /* not left behind to be read again */
    uuid_pool.used += 16;
}

void hd_uuid_v4(char out[HD_UUID_LEN + 1])
{
    unsigned char u[16];
    random16(u);
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4: random */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* variant 1: RFC 4122 */
    uuid_unparse_lower(u, out);
    sodium_memzero(u, sizeof u);
}

/* RFC 9562, section 5.7: the Unix time in milliseconds, big-endian, in the first 48 bits,
 * then the version, 12 random bits, the variant and 62 random bits. The text form sorts as
 * the time does, so a B-tree keyed by these ids takes each new one at its right edge (clock.h
 * says why that matters). Within one millisecond the order is random; a clock stepped back
 * only puts a few ids out of order, which no one relies on. */
void hd_uuid_v7(char out[HD_UUID_LEN + 1])
{
    unsigned char u[16];
    random16(u);
    int64_t now = hd_time_now_ms();
    uint64_t ms = now > 0 ? (uint64_t)now : 0;
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (8 * (5 - i)));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x70); /* version 7: time-ordered */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* variant 1 */
    uuid_unparse_lower(u, out);
    sodium_memzero(u, sizeof u);
}

int hd_uuid_valid(const char *s)
{
    if (s == NULL || strlen(s) != HD_UUID_LEN)
        return 0;
    for (int i = 0; i < HD_UUID_LEN; i++) {
        int dash = (i == 8 || i == 13 || i == 18 || i == 23);
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

int64_t hd_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hd_clock_ms(void)
{
    return hd_clock_ns() / 1000000;
}

int64_t hd_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void hd_time_format(int64_t epoch_ms, char out[HD_TIME_LEN + 1])
{
    time_t secs = (time_t)(epoch_ms / 1000);
    int ms = (int)(epoch_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    /* The date of a day is asked again and again (every log line and time stamp of a day),
     * and gmtime_r takes glibc's global time zone lock each time (a GET /users/{id} formats
     * three): each thread keeps the last day's date, and the time of day is arithmetic
     * (POSIX time has 86,400 seconds a day). */
    static _Thread_local struct {
        int64_t day; /* secs / 86400 of the date below; -1: none yet */
        int year, mon, mday;
    } last = {-1, 0, 0, 0};
    struct tm tm;
    if (secs >= 0 && (int64_t)secs / 86400 == last.day) {
        int64_t rem = (int64_t)secs % 86400;
        tm = (struct tm){.tm_year = last.year - 1900,
                         .tm_mon = last.mon,
                         .tm_mday = last.mday,
                         .tm_hour = (int)(rem / 3600),
                         .tm_min = (int)(rem / 60 % 60),
                         .tm_sec = (int)(rem % 60)};
    } else {
        gmtime_r(&secs, &tm);
        if (secs >= 0) {
            last.day = (int64_t)secs / 86400;
            last.year = tm.tm_year + 1900;
            last.mon = tm.tm_mon;
            last.mday = tm.tm_mday;
        }
    }
    int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999) {
        /* Fields are bounded by gmtime_r; the scratch buffer keeps -Wformat-truncation
         * quiet about years the fixed width cannot hold (cut to HD_TIME_LEN, as always). */
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year % 10000,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
        memcpy(out, tmp, HD_TIME_LEN);
        out[HD_TIME_LEN] = '\0';
        return;
    }
    /* The digits by hand: snprintf was 3,700 instructions a time stamp, and a GET
     * /users/{id} formats three (its access line, created_at, updated_at). */
    const int fields[][2] = {{year, 4},      {tm.tm_mon + 1, 2}, {tm.tm_mday, 2}, {tm.tm_hour, 2},
                             {tm.tm_min, 2}, {tm.tm_sec, 2},     {ms, 3}};
    const char seps[] = "--T::.Z";
    char *o = out;
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        int v = fields[f][0], w = fields[f][1];
        for (int i = w - 1; i >= 0; i--, v /= 10)
            o[i] = (char)('0' + v % 10);
        o += w;
        *o++ = seps[f];
    }
    out[HD_TIME_LEN] = '\0';
}

/* Read exactly n digits from *p into *v; advance *p. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return 0;
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm):
 * timegm() is not in POSIX, and this keeps the parser free of the TZ environment. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (unsigned)(m + (m > 2 ? -3 : 9)) + 2) / 5 + (unsigned)d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int hd_time_parse(const char *s, int64_t *epoch_ms)
{
    int Y, M, D, h, mi, sec, ms = 0;
    const char *p = s;
    if (s == NULL || !digits(&p, 4, &Y) || *p++ != '-' || !digits(&p, 2, &M) || *p++ != '-' ||
        !digits(&p, 2, &D) || (*p != 'T' && *p != 't' && *p != ' '))
        return HD_ETYPE;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return HD_ETYPE;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || sec > 60)
        return HD_ETYPE;
    if (*p == '.') {
        p++;
        int n = 0, scale = 100;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                ms += (*p - '0') * scale, scale /= 10;
            p++, n++;
        }
        if (n == 0)
            return HD_ETYPE;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return HD_ETYPE;
        offset_min = sign * (oh * 60 + om);
    } else {
        return HD_ETYPE;
    }
    if (*p != '\0')
        return HD_ETYPE;
    int64_t secs = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec;
    secs -= (int64_t)offset_min * 60;
    if (epoch_ms)
        *epoch_ms = secs * 1000 + ms;
    return HD_OK;
}

void hd_clock_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (ms <= 0)
        return;
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void hd_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec req = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&req, &req) == -1 && errno == EINTR)
        ;
}
