/* Unit tests for write-behind (hd_logger_write_behind, hd_log_fields_behind; log_behind.h):
 * lines wait, arrive whole and in the order of the calls, never after a line that must not
 * wait, and are written by hd_logger_free. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/config.h"
#include "herald/log.h"

/* A logger writing to a file of its own, read back by path. */
struct file_log {
    char *dir;
    char path[512];
    FILE *out;
    hd_logger *lg;
};

static int setup(void **state)
{
    struct file_log *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = hd_test_tmpdir("log_behind")) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/service.log", f->dir);
    if ((f->out = fopen(f->path, "a")) == NULL)
        return -1;
    if ((f->lg = hd_logger_new("users", HD_LOG_DEBUG, f->out)) == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct file_log *f = *state;
    hd_logger_free(f->lg); /* NULL after a test freed it itself */
    fclose(f->out);
    hd_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* The file as it is now (new string). */
static char *contents(const struct file_log *f)
{
    char *s = hd_test_read_file(f->path);
    assert_non_null(s);
    return s;
}

static size_t lines_in(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Wait (at most 10 s) until the file holds at least `want` lines; returns how many. */
static size_t wait_lines(const struct file_log *f, size_t want)
{
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        char *s = contents(f);
        n = lines_in(s);
        free(s);
        if (n >= want)
            break;
        hd_sleep_ms(10);
    }
    return n;
}

/* An access-like line that may wait, with `n` in field "n". */
static void behind(hd_logger *lg, hd_log_level level, long long n, const char *pad)
{
    const hd_log_field fields[] = {
        {.key = "n", .kind = HD_LOG_INT, .i = n},
        {.key = "pad", .s = pad ? pad : ""},
    };
    hd_log_fields_behind(lg, level, NULL, "http request", fields, 2);
}

/* The value of "n" in each line of s, in order, into out (cap entries); returns the count.
 * Fails the test on a line that is not a JSON object. */
static size_t numbers_of(const char *s, long long *out, size_t cap)
{
    size_t k = 0;
    while (*s) {
        const char *end = strchr(s, '\n');
        assert_non_null(end);
        json_error_t e;
        json_t *o = json_loadb(s, (size_t)(end - s), 0, &e);
        if (o == NULL)
            fail_msg("not a JSON line: %.*s (%s)", (int)(end - s > 200 ? 200 : end - s), s, e.text);
        json_t *n = json_object_get(o, "n");
        if (n != NULL && k < cap)
            out[k++] = json_integer_value(n);
        json_decref(o);
        s = end + 1;
    }
    return k;
}

/* s holds exactly `want` lines, numbered 0, 1, ... want - 1 in that order. */
static void assert_numbered(const char *s, size_t want)
{
    long long *n = calloc(want ? want : 1, sizeof *n);
    assert_non_null(n);
    assert_int_equal(numbers_of(s, n, want), want);
    for (size_t i = 0; i < want; i++)
        assert_int_equal(n[i], (long long)i);
    free(n);
}

static void lines_wait_and_then_arrive_together(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 300));
    for (int i = 0; i < 3; i++)
        behind(f->lg, HD_LOG_INFO, i, NULL);
    char *now = contents(f);
    assert_int_equal(lines_in(now), 0); /* still in memory: 300 ms have not passed */
    free(now);
    assert_int_equal(wait_lines(f, 3), 3);
    char *s = contents(f);
    assert_numbered(s, 3);
    free(s);
}

static void a_line_that_may_not_wait_writes_those_waiting_first(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 10000));
    behind(f->lg, HD_LOG_INFO, 0, NULL);
    behind(f->lg, HD_LOG_DEBUG, 1, NULL);
    hd_log_info(f->lg, NULL, "user registered", "n", "2", NULL);
    char *s = contents(f); /* at once: no waiting for the 10 s */
    assert_int_equal(lines_in(s), 3);
    assert_non_null(strstr(s, "\"n\":0"));
    assert_true(strstr(s, "\"n\":0") < strstr(s, "\"n\":1"));
    assert_true(strstr(s, "\"n\":1") < strstr(s, "\"n\":\"2\""));
    free(s);
}

static void warnings_and_errors_never_wait(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 10000));
    behind(f->lg, HD_LOG_WARN, 7, NULL);
    behind(f->lg, HD_LOG_ERROR, 8, NULL);
    char *s = contents(f);
    assert_int_equal(lines_in(s), 2);
    assert_non_null(strstr(s, "\"level\":\"warn\""));
    assert_non_null(strstr(s, "\"level\":\"error\""));
    free(s);
}

static void free_writes_what_waits(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 10000));
    for (int i = 0; i < 50; i++)
        behind(f->lg, HD_LOG_INFO, i, NULL);
    char *s = contents(f);
    assert_int_equal(lines_in(s), 0);
    free(s);
    hd_logger_free(f->lg);
    f->lg = NULL;
    s = contents(f);
    assert_numbered(s, 50);
    free(s);
}

static void a_fuller_buffer_does_not_wait_for_the_interval(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 10000));
    char pad[301];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    /* About 400 bytes a line: 400 lines pass half the buffer (32 KiB) and fill it (64 KiB)
     * twice, long before 10 s. */
    for (int i = 0; i < 400; i++)
        behind(f->lg, HD_LOG_INFO, i, pad);
    assert_true(wait_lines(f, 100) >= 100);
    hd_logger_free(f->lg);
    f->lg = NULL;
    char *s = contents(f);
    assert_numbered(s, 400);
    free(s);
}

static void a_line_longer_than_the_buffer_goes_at_once_in_order(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 10000));
    size_t big_len = 100 * 1024;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    memset(big, 'y', big_len);
    big[big_len] = '\0';
    behind(f->lg, HD_LOG_INFO, 0, NULL);
    behind(f->lg, HD_LOG_INFO, 1, big);
    char *s = contents(f);
    assert_numbered(s, 2);
    assert_true(strlen(s) > big_len);
    free(s);
    free(big);
}

/* Threads writing lines that wait and lines that do not: every line whole, and each thread's
 * lines in the order it wrote them. */
#define THREADS    4
#define PER_THREAD 1500

struct writer {
    hd_logger *lg;
    int id;
};

static void *write_many(void *p)
{
    struct writer *w = p;
    for (int i = 0; i < PER_THREAD; i++) {
        long long n = (long long)w->id * 1000000 + i;
        if (i % 10 == 9) {
            char v[32];
            snprintf(v, sizeof v, "%lld", n);
            hd_log_fields(w->lg, HD_LOG_INFO, NULL, "event",
                          (const hd_log_field[]){{.key = "n", .kind = HD_LOG_INT, .i = n}}, 1);
        } else {
            behind(w->lg, HD_LOG_INFO, n, i % 7 == 0 ? "a somewhat longer value" : NULL);
        }
    }
    return NULL;
}

static void threads_keep_the_order_of_their_lines(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 2));
    pthread_t t[THREADS];
    struct writer w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer){.lg = f->lg, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    hd_logger_free(f->lg);
    f->lg = NULL;
    char *s = contents(f);
    long long *n = calloc(THREADS * PER_THREAD, sizeof *n);
    assert_non_null(n);
    assert_int_equal(numbers_of(s, n, THREADS * PER_THREAD), THREADS * PER_THREAD);
    long long last[THREADS];
    for (int i = 0; i < THREADS; i++)
        last[i] = -1;
    for (size_t k = 0; k < THREADS * PER_THREAD; k++) {
        int id = (int)(n[k] / 1000000);
        long long i = n[k] % 1000000;
        assert_in_range(id, 0, THREADS - 1);
        assert_int_equal(i, last[id] + 1);
        last[id] = i;
    }
    free(n);
    free(s);
}

static void write_behind_refuses_what_it_cannot_do(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_EINVAL, hd_logger_write_behind(NULL, 20));
    assert_hd(HD_EINVAL, hd_logger_write_behind(hd_log_default(), 20));
    assert_hd(HD_EINVAL, hd_logger_write_behind(f->lg, -1));
    assert_hd(HD_EINVAL, hd_logger_write_behind(f->lg, 10001));
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 0)); /* off: nothing to start */
    behind(f->lg, HD_LOG_INFO, 1, NULL);
    char *s = contents(f);
    assert_int_equal(lines_in(s), 1); /* written at once */
    free(s);
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 20));
    assert_hd(HD_EINVAL, hd_logger_write_behind(f->lg, 20)); /* once */

    /* A stream in memory has no descriptor to write behind to. */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    assert_non_null(mem);
    hd_logger *m = hd_logger_new("users", HD_LOG_INFO, mem);
    assert_non_null(m);
    assert_hd(HD_EINVAL, hd_logger_write_behind(m, 20));
    behind(m, HD_LOG_INFO, 2, NULL); /* hd_log_fields_behind still writes, at once */
    fflush(mem);
    assert_non_null(strstr(buf, "\"n\":2"));
    hd_logger_free(m);
    fclose(mem);
    free(buf);
}

static void the_setting_reads_a_duration(void **state)
{
    struct file_log *f = *state;
    hd_config *cfg = hd_config_new_empty();
    assert_non_null(cfg);
    hd_error err;
    assert_hd(HD_OK, hd_config_set(cfg, "HD_LOG_FLUSH_MS", "20"));
    assert_hd_err(HD_ECONFIG, hd_config_log_write_behind(cfg, f->lg, &err), &err);
    assert_non_null(strstr(err.text, "HD_LOG_FLUSH_MS"));
    assert_hd(HD_OK, hd_config_set(cfg, "HD_LOG_FLUSH_MS", "11s"));
    assert_hd_err(HD_ECONFIG, hd_config_log_write_behind(cfg, f->lg, &err), &err);
    assert_hd(HD_OK, hd_config_set(cfg, "HD_LOG_FLUSH_MS", "0"));
    assert_hd_err(HD_OK, hd_config_log_write_behind(cfg, f->lg, &err), &err);
    behind(f->lg, HD_LOG_INFO, 1, NULL);
    char *s = contents(f);
    assert_int_equal(lines_in(s), 1); /* "0": at once */
    free(s);
    assert_hd(HD_OK, hd_config_set(cfg, "HD_LOG_FLUSH_MS", "5s"));
    assert_hd_err(HD_OK, hd_config_log_write_behind(cfg, f->lg, &err), &err);
    behind(f->lg, HD_LOG_INFO, 2, NULL);
    s = contents(f);
    assert_int_equal(lines_in(s), 1); /* the second waits */
    free(s);
    hd_config_free(cfg);
}

/* A service blocks SIGTERM in every thread and waits for it with sigwait, and may do so only
 * after its logger started writing behind: the writer's thread must never take a signal
 * (it did, and herald-chat died of SIGTERM's default action: integration.chat_http). Read
 * from /proc: every thread of this process but this one is the writer's (the test starts no
 * other), and its SigBlk must hold SIGTERM and SIGINT. */
static int blocks(const char *status_path, int sig)
{
    FILE *st = fopen(status_path, "r");
    if (st == NULL)
        return -1;
    char line[256];
    int got = -1;
    while (fgets(line, sizeof line, st) != NULL) {
        unsigned long long mask;
        if (sscanf(line, "SigBlk: %llx", &mask) == 1)
            got = (int)((mask >> (sig - 1)) & 1);
    }
    fclose(st);
    return got;
}

static void the_writer_thread_takes_no_signal(void **state)
{
    struct file_log *f = *state;
    assert_hd(HD_OK, hd_logger_write_behind(f->lg, 20));
    char self[32];
    snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
    /* /proc/<pid>/task lists the threads; the writer is the one that is not us. */
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%ld/task", (long)getpid());
    int writers = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, self) == 0)
            continue;
        char path[128];
        snprintf(path, sizeof path, "%s/%s/status", dir, e->d_name);
        assert_int_equal(blocks(path, SIGTERM), 1);
        assert_int_equal(blocks(path, SIGINT), 1);
        writers++;
    }
    closedir(d);
    assert_int_equal(writers, 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(lines_wait_and_then_arrive_together),
        T(a_line_that_may_not_wait_writes_those_waiting_first),
        T(warnings_and_errors_never_wait),
        T(free_writes_what_waits),
        T(a_fuller_buffer_does_not_wait_for_the_interval),
        T(a_line_longer_than_the_buffer_goes_at_once_in_order),
        T(threads_keep_the_order_of_their_lines),
        T(write_behind_refuses_what_it_cannot_do),
        T(the_setting_reads_a_duration),
        T(the_writer_thread_takes_no_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
