/* hd_test.c — see hd_test.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hd_test.h"

#include <ctype.h>

#include "herald/store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void hd_test_assert_code(int expected, int actual, const hd_error *err, const char *expr,
                         const char *file, int line)
{
    if (expected == actual)
        return;
    print_error("%s:%d: %s\n  expected %d %s (%s)\n  actual   %d %s (%s)%s%s\n", file, line, expr,
                expected, hd_err_name(expected), hd_strerror(expected), actual, hd_err_name(actual),
                hd_strerror(actual), err ? "\n  error text: " : "", err ? err->text : "");
    _fail(file, line);
}

const char *hd_test_require_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        print_error("environment variable %s is not set: this test needs the real servers.\n"
                    "Run it through `make test`, or `make servers-up` and source the env file "
                    "it prints.\n",
                    name);
        fail();
    }
    return v;
}

char *hd_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/herald-%s-XXXXXX", base && *base ? base : "/tmp",
             tag ? tag : "test");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

void hd_test_rmtree(const char *path)
{
    char cmd[1024];
    if (path == NULL || strlen(path) < 6)
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        print_error("could not remove %s\n", path);
}

char *hd_test_unique_name(const char *prefix)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char buf[256];
    snprintf(buf, sizeof buf, "%s-%ld-%u-%lx", prefix ? prefix : "t", (long)getpid(), ++counter,
             (unsigned long)(ts.tv_nsec ^ (ts.tv_sec << 20)));
    return strdup(buf);
}

int hd_test_utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        size_t n = *s < 0x80             ? 1
                   : (*s & 0xE0) == 0xC0 ? 2
                   : (*s & 0xF0) == 0xE0 ? 3
                   : (*s & 0xF8) == 0xF0 ? 4
                                         : 0;
        if (n == 0 || (n == 2 && *s < 0xC2))
            return 0;
        for (size_t i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80)
                return 0;
        s += n;
    }
    return 1;
}

void hd_test_db_open(hd_test_db *d, const char *tag, int postgres, const char *sqlite_file)
{
    memset(d, 0, sizeof *d);
    d->dir = hd_test_tmpdir(tag);
    assert_non_null(d->dir);
    if (!postgres) {
        snprintf(d->url, sizeof d->url, "sqlite://%s/%s", d->dir, sqlite_file);
        return;
    }
    const char *base = hd_test_require_env("HD_PG_URL");
    char prefix[96];
    snprintf(prefix, sizeof prefix, "hd_%s", tag);
    char *name = hd_test_unique_name(prefix);
    /* The name goes into the SQL text (CREATE DATABASE takes no parameters): it is ours,
     * made lower-case letters, digits and '_' here. */
    for (char *p = name; *p; p++)
        *p = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
    snprintf(d->pg_name, sizeof d->pg_name, "%s", name);
    free(name);
    hd_error err;
    hd_store *admin = NULL;
    assert_int_equal(hd_store_open(base, &admin, &err), 0);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", d->pg_name);
    if (hd_store_exec(admin, sql, NULL, 0, &err) < 0)
        fail_msg("%s: %s", sql, err.text);
    hd_store_close(admin);
    /* Same server and user, another path: postgresql://user@host:port/<name>?query */
    const char *q = strchr(base, '?');
    size_t slash = q ? (size_t)(q - base) : strlen(base);
    while (slash > 0 && base[slash - 1] != '/')
        slash--;
    assert_true(slash > strlen("postgresql://"));
    snprintf(d->url, sizeof d->url, "%.*s%s%s", (int)slash, base, d->pg_name, q ? q : "");
}

void hd_test_db_drop(hd_test_db *d)
{
    if (d->pg_name[0] != '\0') {
        hd_error err;
        hd_store *admin = NULL;
        assert_int_equal(hd_store_open(hd_test_require_env("HD_PG_URL"), &admin, &err), 0);
        char sql[256];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", d->pg_name);
        if (hd_store_exec(admin, sql, NULL, 0, &err) < 0)
            fail_msg("%s: %s", sql, err.text);
        hd_store_close(admin);
        d->pg_name[0] = '\0';
    }
    if (d->dir != NULL) {
        hd_test_rmtree(d->dir);
        free(d->dir);
        d->dir = NULL;
    }
}

int hd_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

char *hd_test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    size_t got = fread(s, 1, (size_t)n, f);
    fclose(f);
    s[got] = '\0';
    return s;
}
