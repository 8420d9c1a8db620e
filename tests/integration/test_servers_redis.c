/* Integration: the redis-server that scripts/servers.sh starts (HD_REDIS_URL) requires AUTH,
 * keeps nothing on disk, listens on loopback only, and keeps its password out of every place
 * a password must not be: the process's command line, the server's log, files others can
 * read. `$HD_SERVERS_CTL restart redis` brings it back with the same password (clients keep
 * their URL).
 *
 * This proves the harness, not herald: it talks to Redis with hiredis directly. Without the
 * variables the test fails (a missing server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hd_test.h"
#include "herald/bus_redis.h"

static hd_bus_redis_url url(void)
{
    hd_bus_redis_url u;
    hd_error err;
    assert_hd_err(HD_OK, hd_bus_redis_url_parse(hd_test_require_env("HD_REDIS_URL"), &u, &err),
                  &err);
    return u;
}

static redisContext *connect_plain(const hd_bus_redis_url *u)
{
    redisContext *c = redisConnect(u->host, u->port);
    assert_non_null(c);
    if (c->err)
        fail_msg("connect %s:%d: %s", u->host, u->port, c->errstr);
    return c;
}

/* One command's reply as text ("" for nil), new string. */
static char *command(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    char *out = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        out = strdup(r->element[1]->str); /* CONFIG GET name -> [name, value] */
    else
        out = strdup(r->str ? r->str : "");
    freeReplyObject(r);
    return out;
}

static void requires_auth(void **state)
{
    (void)state;
    hd_bus_redis_url u = url();
    assert_string_not_equal(u.password, "");
    assert_true(strlen(u.password) >= 32); /* generated, not a word */
    redisContext *c = connect_plain(&u);
    char *pong = command(c, "PING");
    assert_non_null(strstr(pong, "NOAUTH"));
    free(pong);
    redisReply *r = redisCommand(c, "AUTH %s", "wrong-password");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    r = redisCommand(c, "AUTH %s", u.password);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    pong = command(c, "PING");
    assert_string_equal(pong, "PONG");
    free(pong);

    /* no persistence, loopback only, nothing of it outside the state directory */
    char *save = command(c, "CONFIG GET save");
    char *aof = command(c, "CONFIG GET appendonly");
    char *bind = command(c, "CONFIG GET bind");
    char *dir = command(c, "CONFIG GET dir");
    assert_string_equal(save, "");
    assert_string_equal(aof, "no");
    assert_string_equal(bind, "127.0.0.1");
    const char *sdir = hd_test_require_env("HD_SERVERS_DIR");
    assert_true(strncmp(dir, sdir, strlen(sdir)) == 0);
    free(save);
    free(aof);
    free(bind);
    free(dir);
    redisFree(c);
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) /* cmdline: NUL-separated */
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void password_stays_private(void **state)
{
    (void)state;
    hd_bus_redis_url u = url();
    const char *sdir = hd_test_require_env("HD_SERVERS_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/redis/redis.pid", sdir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int pid = 0;
    assert_int_equal(fscanf(f, "%d", &pid), 1);
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    assert_true(file_contains(path, "redis")); /* the right process */
    assert_false(file_contains(path, u.password));
    snprintf(path, sizeof path, "%s/redis/redis.log", sdir);
    assert_false(file_contains(path, u.password));

    static const char *const private_files[] = {"redis/password", "redis/redis.conf", "env"};
    for (size_t i = 0; i < sizeof private_files / sizeof private_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", sdir, private_files[i]);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if ((st.st_mode & 077) != 0)
            fail_msg("%s has mode %o: others can read the Redis password", path,
                     (unsigned)(st.st_mode & 0777));
    }
}

static void restart_keeps_the_password(void **state)
{
    (void)state;
    hd_bus_redis_url u = url();
    const char *ctl = hd_test_require_env("HD_SERVERS_CTL");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' restart redis >/dev/null 2>&1", ctl);
    assert_int_equal(system(cmd), 0);
    redisContext *c = connect_plain(&u);
    redisReply *r = redisCommand(c, "AUTH %s", u.password);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS); /* the URL in the env file still works */
    freeReplyObject(r);
    redisFree(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(requires_auth),
        cmocka_unit_test(password_stays_private),
        cmocka_unit_test(restart_keeps_the_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
