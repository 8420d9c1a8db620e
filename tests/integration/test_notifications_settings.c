/* herald-notifications' memory settings (HD_SQLITE_CONSUMER_CACHE_KIB,
 * HD_SQLITE_AUX_CACHE_KIB, HD_MALLOC_COMPACT): a bad
 * value stops the start with exit 2 and a message that names the setting and the value,
 * before the service opens the database or the broker (neither server is needed: the URLs
 * below point nowhere, and a configuration error is reported before they are used). A good
 * value gets past the settings: the service starts and logs that it waits for the broker.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_proc.h"
#include "hd_test.h"

/* Read the whole file at path (new, free it) or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* A scratch directory for one start: dir (a mkdtemp template of HD_SETTINGS_DIR's size). */
#define HD_SETTINGS_DIR "/tmp/hd-notif-settings-XXXXXX"

/* Start herald-notifications in a new scratch directory (dir, filled in) on a SQLite file
 * there (url_options appended to its URL, "" for none), a broker that is not there, and the
 * extra settings (NULL-terminated, at most 4); its log is dir/notifications.log. Returns the
 * process (new: hd_proc_free). */
static hd_proc *start_with(char *dir, const char *url_options, const char *const *extra)
{
    assert_non_null(mkdtemp(dir));
    char log_path[128], db[200];
    snprintf(log_path, sizeof log_path, "%s/notifications.log", dir);
    snprintf(db, sizeof db, "HD_DATABASE_URL=sqlite://%s/n.db%s", dir, url_options);
    const char *env[10] = {db, "HD_AMQP_URL=amqp://127.0.0.1:1/", "HD_NOTIFICATIONS_API_OPEN=true",
                           "HD_NOTIFICATIONS_LISTEN=127.0.0.1:0",
                           "HD_TEMPLATES_DIR=" HD_SOURCE_DIR "/templates"};
    size_t n = 5;
    for (size_t i = 0; extra[i] != NULL && n < 9; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    const char *argv[] = {HD_BINARY_DIR "/herald-notifications", NULL};
    hd_proc_options o = {
        .argv = argv, .env = env, .env_drop_prefix = "HD_", .cwd = dir, .log_path = log_path};
    hd_proc *p = NULL;
    hd_error err;
    assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
    return p;
}

/* Remove what a start left in dir (the database's -hdturns file included), then dir. */
static void remove_dir(const char *dir)
{
    hd_test_rmtree(dir);
}

/* Run herald-notifications with one extra setting; it must exit 2 and say `want`. */
static void refused(const char *setting, const char *want)
{
    char dir[] = HD_SETTINGS_DIR;
    const char *extra[] = {setting, NULL};
    hd_proc *p = start_with(dir, "", extra);
    hd_error err;
    assert_hd_err(0, hd_proc_wait(p, 10000, &err), &err);
    assert_int_equal(hd_proc_exit_code(p), 2);
    hd_proc_free(p);
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s/notifications.log", dir);
    char *log = slurp(log_path);
    assert_non_null(log);
    if (strstr(log, want) == NULL)
        fail_msg("expected '%s' in: %s", want, log);
    free(log);
    remove_dir(dir);
}

static void test_aux_cache_bad_values(void **state)
{
    (void)state;
    refused("HD_SQLITE_AUX_CACHE_KIB=lots", "HD_SQLITE_AUX_CACHE_KIB: 'lots' is not an integer");
    refused("HD_SQLITE_AUX_CACHE_KIB=-1",
            "HD_SQLITE_AUX_CACHE_KIB: -1 is out of range [0, 1000000]");
    refused("HD_SQLITE_AUX_CACHE_KIB=1000001", "HD_SQLITE_AUX_CACHE_KIB: 1000001 is out of range");
}

static void test_consumer_cache_bad_values(void **state)
{
    (void)state;
    refused("HD_SQLITE_CONSUMER_CACHE_KIB=big",
            "HD_SQLITE_CONSUMER_CACHE_KIB: 'big' is not an integer");
    refused("HD_SQLITE_CONSUMER_CACHE_KIB=-5",
            "HD_SQLITE_CONSUMER_CACHE_KIB: -5 is out of range [0, 1000000]");
}

static void test_malloc_compact_bad_value(void **state)
{
    (void)state;
    refused("HD_MALLOC_COMPACT=maybe", "HD_MALLOC_COMPACT: 'maybe' is not a boolean");
}

/* Good values pass the settings: the service opens its stores (the aux URL with cache_kib
 * appended must parse) and gets as far as waiting for the broker, then stops on SIGTERM. */
static void test_good_values_start(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"HD_SQLITE_AUX_CACHE_KIB=0", "HD_MALLOC_COMPACT=false"},
        {"HD_SQLITE_AUX_CACHE_KIB=64", "HD_MALLOC_COMPACT=true"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[] = HD_SETTINGS_DIR;
        /* A URL with an option already: the aux URL appends with '&'. */
        const char *extra[] = {cases[i][0], cases[i][1], NULL};
        hd_proc *p = start_with(dir, "?synchronous=normal", extra);
        hd_error err;
        assert_hd_err(0, hd_proc_wait_log(p, "broker unreachable, retrying", 20000, &err), &err);
        assert_hd_err(0, hd_proc_stop(p, 20000, &err), &err);
        hd_proc_free(p);
        remove_dir(dir);
    }
}

/* The caches each connection gets, as the start-up line "SQLite page caches" says: the
 * consumer's 1,024 KiB unless the URL or HD_SQLITE_CONSUMER_CACHE_KIB says otherwise (0:
 * SQLite's 2,000), the others' HD_SQLITE_AUX_CACHE_KIB (0: the URL's). */
static void test_page_caches(void **state)
{
    (void)state;
    static const struct {
        const char *url_options, *setting, *want;
    } cases[] = {
        {"", "X_NONE=1", "\"consumer_kib\":\"1024\",\"others_kib\":\"256\""},
        {"", "HD_SQLITE_CONSUMER_CACHE_KIB=0", "\"consumer_kib\":\"2000\",\"others_kib\":\"256\""},
        {"?cache_kib=300", "HD_SQLITE_CONSUMER_CACHE_KIB=512",
         "\"consumer_kib\":\"300\",\"others_kib\":\"256\""},
        {"?synchronous=normal", "HD_SQLITE_CONSUMER_CACHE_KIB=512",
         "\"consumer_kib\":\"512\",\"others_kib\":\"256\""},
        {"?cache_kib=300", "HD_SQLITE_AUX_CACHE_KIB=0",
         "\"consumer_kib\":\"300\",\"others_kib\":\"300\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[] = HD_SETTINGS_DIR;
        const char *extra[] = {cases[i].setting, NULL};
        hd_proc *p = start_with(dir, cases[i].url_options, extra);
        hd_error err;
        assert_hd_err(0, hd_proc_wait_log(p, "broker unreachable, retrying", 20000, &err), &err);
        assert_hd_err(0, hd_proc_stop(p, 20000, &err), &err);
        hd_proc_free(p);
        char log_path[128];
        snprintf(log_path, sizeof log_path, "%s/notifications.log", dir);
        char *log = slurp(log_path);
        assert_non_null(log);
        if (strstr(log, cases[i].want) == NULL)
            fail_msg("case %zu: expected '%s' in: %s", i, cases[i].want, log);
        free(log);
        remove_dir(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aux_cache_bad_values),
        cmocka_unit_test(test_consumer_cache_bad_values),
        cmocka_unit_test(test_malloc_compact_bad_value),
        cmocka_unit_test(test_page_caches),
        cmocka_unit_test(test_good_values_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
