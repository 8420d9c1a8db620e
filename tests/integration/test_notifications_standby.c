/* Integration: herald-notifications with HD_DATABASE_READ_URL, the streaming standby of
 * scripts/servers.sh (HD_PG_URL, HD_PG_STANDBY_URL, HD_AMQP_URL, HD_SERVERS_CTL; a missing
 * one is a failure, never a skip). The service's own process, over HTTP:
 *
 *   - a user's preferences read right after they saved them: always the new ones;
 *   - proof that the standby answers: with replay paused, a row committed on the primary
 *     behind the service's back is NOT in the API's answer (stale, from the standby) —
 *     until HD_DATABASE_READ_MAX_LAG passes, then it is (primary), and
 *     database_read_fallbacks{reason="lagging"} counts it;
 *   - the standby stopped: every read answers (200, right content) from the primary,
 *     database_read_fallbacks{reason="down"} counts, database_read_standby_up is 0; started
 *     again, the service reads from it again without a restart.
 *
 * Stops and pauses the shared standby: RESOURCE_LOCK pg_standby (CMakeLists.txt). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_proc.h"
#include "hd_service_test.h"
#include "hd_test.h"
#include "herald/clock.h"
#include "herald/store.h"

static struct {
    hd_test_db db;
    char read_url[600];
    char log_path[600];
    int port;
    hd_proc *proc;
} W;

/* The Herald-Read-After of the last response ("" when none), and the one to send with the
 * next request (NULL: none). */
static char read_after_got[64];
static const char *read_after_send;

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    (void)ctx;
    static const char name[] = "herald-read-after:";
    size_t len = size * n;
    if (len > sizeof name && strncasecmp(p, name, sizeof name - 1) == 0) {
        const char *v = p + sizeof name - 1;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(p + len - v);
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        snprintf(read_after_got, sizeof read_after_got, "%.*s", (int)vl, v);
    }
    return len;
}

/* method path [json body] -> status; *resp new (may be NULL). */
static long http(const char *method, const char *path, const char *json, char **resp)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", W.port, path);
    read_after_got[0] = '\0';
    char send[96];
    const char *headers[] = {send, NULL};
    if (read_after_send != NULL)
        snprintf(send, sizeof send, "Herald-Read-After: %s", read_after_send);
    return hd_test_http(method, url, read_after_send != NULL ? headers : NULL, json, on_header,
                        resp, NULL, 0);
}

/* The value of the metric series `series` (e.g. `database_reads{server="standby"}`), -1 when
 * absent. */
static double metric(const char *series)
{
    char *text = NULL;
    assert_int_equal(http("GET", "/metrics", NULL, &text), 200);
    double v = -1;
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            v = strtod(p + n + 1, NULL);
    free(text);
    return v;
}

static void servers_ctl(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s standby >/dev/null 2>&1",
             hd_test_require_env("HD_SERVERS_CTL"), verb);
    assert_int_equal(system(cmd), 0);
}

static void standby_sql(const char *sql)
{
    hd_store *s = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_store_open(hd_test_require_env("HD_PG_STANDBY_URL"), &s, &err));
    if (hd_store_exec(s, sql, NULL, 0, &err) < 0)
        fail_msg("%s: %s", sql, err.text);
    hd_store_close(s);
}

static int setup(void **state)
{
    (void)state;
    const char *amqp = hd_test_require_env("HD_AMQP_URL");
    const char *standby = hd_test_require_env("HD_PG_STANDBY_URL");
    hd_test_db_open(&W.db, "notif_standby", 1, NULL);
    /* The same database on the standby: its server, our database's name. */
    const char *slash = strrchr(standby, '/');
    assert_non_null(slash);
    snprintf(W.read_url, sizeof W.read_url, "%.*s/%s", (int)(slash - standby), standby,
             W.db.pg_name);
    snprintf(W.log_path, sizeof W.log_path, "%s/notifications.log", W.db.dir);
    char *tag = hd_test_unique_name("standby");
    W.port = hd_test_free_port();
    char db[700], read[700], listen[64], exchange[200], queue[200], amqp_env[600];
    snprintf(db, sizeof db, "HD_DATABASE_URL=%s", W.db.url);
    snprintf(read, sizeof read, "HD_DATABASE_READ_URL=%s", W.read_url);
    snprintf(listen, sizeof listen, "HD_NOTIFICATIONS_LISTEN=127.0.0.1:%d", W.port);
    snprintf(exchange, sizeof exchange, "HD_USERS_EXCHANGE=%s-users", tag);
    snprintf(queue, sizeof queue, "HD_NOTIFICATIONS_QUEUE=%s-notifications", tag);
    snprintf(amqp_env, sizeof amqp_env, "HD_AMQP_URL=%s", amqp);
    free(tag);
    const char *env[] = {db,
                         read,
                         "HD_DATABASE_READ_MAX_LAG=1500ms",
                         listen,
                         exchange,
                         queue,
                         amqp_env,
                         "HD_SENDER=log",
                         "HD_NOTIFICATIONS_API_OPEN=1",
                         "HD_TEMPLATES_DIR=" HD_SOURCE_DIR "/templates",
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-notifications", NULL};
    hd_proc_options o = {
        .argv = argv, .env = env, .env_drop_prefix = "HD_", .log_path = W.log_path};
    hd_test_service_start(&o, W.port, 30000, &W.proc);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    servers_ctl("start");
    hd_store *s = NULL;
    if (hd_store_open(getenv("HD_PG_STANDBY_URL"), &s, NULL) == 0) {
        hd_store_exec(s, "SELECT pg_wal_replay_resume()", NULL, 0, NULL);
        hd_store_close(s);
    }
    if (W.proc != NULL) {
        hd_error err;
        if (hd_proc_stop(W.proc, 20000, &err) < 0)
            hd_proc_dump_log(W.proc, stderr, 30);
        hd_proc_free(W.proc);
    }
    hd_test_db_drop(&W.db);
    return 0;
}

/* Until reads are served by the standby again (the metric moves), at most limit_ms. */
static void until_standby_reads(const char *user, int64_t limit_ms)
{
    char path[128];
    snprintf(path, sizeof path, "/notifications/preferences/%s", user);
    int64_t t0 = hd_clock_ms();
    for (;;) {
        double before = metric("database_reads{server=\"standby\"}");
        assert_int_equal(http("GET", path, NULL, NULL), 200);
        if (metric("database_reads{server=\"standby\"}") > before)
            return;
        if (hd_clock_ms() - t0 > limit_ms)
            fail_msg("reads not on the standby after %lld ms", (long long)limit_ms);
        hd_sleep_ms(50);
    }
}

static void own_writes_are_read_back_at_once(void **state)
{
    (void)state;
    until_standby_reads("nobody", 15000);
    char json[128], *resp = NULL, want[64];
    for (int i = 0; i < 30; i++) {
        snprintf(json, sizeof json, "{\"email\": \"ada%d@example.com\"}", i);
        assert_int_equal(http("PUT", "/notifications/preferences/ada", json, NULL), 200);
        assert_true(strchr(read_after_got, '/') != NULL); /* the client's token */
        assert_int_equal(http("GET", "/notifications/preferences/ada", NULL, &resp), 200);
        snprintf(want, sizeof want, "\"email\":\"ada%d@example.com\"", i);
        if (strstr(resp, want) == NULL)
            fail_msg("read %d went backwards: %s", i, resp);
        free(resp);
        assert_int_equal(http("GET", "/notifications/history/ada", NULL, NULL), 200);
    }
    assert_true(metric("database_reads{server=\"standby\"}") > 0);
    assert_true(metric("database_read_standby_up") == 1);
    assert_true(metric("database_read_lag_seconds") >= 0);
}

static void paused_replay_stale_then_primary(void **state)
{
    (void)state;
    /* A commit the standby replays just before the pause: the lag starts near 0, so the
     * standby keeps answering (stale) up to the bound. */
    assert_int_equal(http("PUT", "/notifications/preferences/warm-up", "{\"email\": null}", NULL),
                     200);
    until_standby_reads("warm-up", 15000);
    standby_sql("SELECT pg_wal_replay_pause()");
    /* Another instance (or a migration, an operator) writes "ghost": not through this
     * service, so the service cannot know. */
    hd_store *primary = NULL;
    hd_error err;
    assert_hd(HD_OK, hd_store_open(W.db.url, &primary, &err));
    int64_t t0 = hd_clock_ms();
    assert_true(hd_store_exec(primary,
                              "INSERT INTO notification_preferences VALUES ('ghost', "
                              "'ghost@example.com', 1, 1, 0, 1, 1, 1, 1)",
                              NULL, 0, &err) == 1);
    hd_store_close(primary);
    /* Right after: the service answers from the standby, which does not have it. */
    char *resp = NULL;
    assert_int_equal(http("GET", "/notifications/preferences/ghost", NULL, &resp), 200);
    int stale = strstr(resp, "\"stored\":false") != NULL;
    free(resp);
    assert_true(hd_clock_ms() - t0 < 1500);
    assert_true(stale); /* proof: only the standby can answer that now */
    /* A client token from a write after the pause (as if made through another instance):
     * the read that carries it is served where that write is, the primary. */
    assert_int_equal(
        http("PUT", "/notifications/preferences/token-writer", "{\"email\": null}", NULL), 200);
    char token[64];
    snprintf(token, sizeof token, "%s", read_after_got);
    assert_true(strchr(token, '/') != NULL);
    read_after_send = token;
    assert_int_equal(http("GET", "/notifications/preferences/ghost", NULL, &resp), 200);
    read_after_send = NULL;
    int fresh_with_token = strstr(resp, "\"stored\":true") != NULL;
    free(resp);
    assert_true(fresh_with_token);
    read_after_send = "not a position";
    assert_int_equal(http("GET", "/notifications/history/ghost", NULL, NULL), 400);
    read_after_send = NULL;
    double lagging0 = metric("database_read_fallbacks{reason=\"lagging\"}");
    /* Past the bound (1.5 s + the 1 s between lag checks), the primary answers. */
    int64_t fresh_after = -1;
    while (hd_clock_ms() - t0 < 10000) {
        assert_int_equal(http("GET", "/notifications/preferences/ghost", NULL, &resp), 200);
        int fresh = strstr(resp, "\"stored\":true") != NULL;
        free(resp);
        if (fresh) {
            fresh_after = hd_clock_ms() - t0;
            break;
        }
        hd_sleep_ms(50);
    }
    assert_true(fresh_after >= 0);
    assert_true(fresh_after <= 1500 + 1000 + 500);
    assert_true(metric("database_read_fallbacks{reason=\"lagging\"}") > lagging0);
    print_message("replay paused: the API answered stale for %lld ms (bound: 1500 + 1000 ms)\n",
                  (long long)fresh_after);
    standby_sql("SELECT pg_wal_replay_resume()");
    until_standby_reads("ghost", 15000);
}

static void standby_stopped_reads_answer_from_the_primary(void **state)
{
    (void)state;
    until_standby_reads("ada", 15000);
    double down0 = metric("database_read_fallbacks{reason=\"down\"}");
    servers_ctl("stop");
    char *resp = NULL;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(http("GET", "/notifications/preferences/ada", NULL, &resp), 200);
        assert_non_null(strstr(resp, "\"email\":\"ada29@example.com\""));
        free(resp);
        assert_int_equal(http("GET", "/notifications/history/ada", NULL, NULL), 200);
        hd_sleep_ms(50);
    }
    assert_true(metric("database_read_fallbacks{reason=\"down\"}") >= down0 + 40);
    assert_true(metric("database_read_standby_up") == 0);
    assert_true(metric("database_read_lag_seconds") < 0); /* absent: unknown */
    servers_ctl("start");
    until_standby_reads("ada", 30000);
    assert_true(metric("database_read_standby_up") == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_writes_are_read_back_at_once),
        cmocka_unit_test(paused_replay_stale_then_primary),
        cmocka_unit_test(standby_stopped_reads_answer_from_the_primary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
