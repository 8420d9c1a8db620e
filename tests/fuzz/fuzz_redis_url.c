/* fuzz_redis_url.c — libFuzzer target for the Redis URL parser and redactor of the Redis bus
 * (src/herald/bus_redis.c).
 *
 * The URL comes from the environment (HD_REDIS_URL), holds a password, and the parser's
 * error messages and the redactor's output go to logs. Properties checked on every input (a
 * violation is __builtin_trap(), a crash to libFuzzer):
 *   1. hd_bus_redis_url_parse returns 0 or HD_EURL, and leaves *out zeroed on error;
 *   2. what parses has a host and a port in 1..65535, and is stable: written back as a
 *      canonical URL (user and password percent-encoded) it parses again to the same fields;
 *   3. the redactor hides the password of that canonical URL and says so ("***");
 *   4. no error message holds any of the input's userinfo, and no redacted text holds the
 *      input's password (the text between the first ':' after "://" and the last '@' before
 *      the first '/', or the last '@' of all), when it is long and distinctive enough to be
 *      told apart from the messages' own words;
 *   5. the redactor stays within any capacity it is given (ASan checks the bytes).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/buf.h"
#include "herald/bus_redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void pct(hd_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')) {
            hd_buf_add(b, c, 1);
        } else {
            char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
            hd_buf_add(b, e, 3);
        }
    }
}

/* The input's password as property 4 defines it, or NULL when it could not be told apart
 * from the rest of a message: shorter than 6, occurring twice in the URL, or made only of
 * what the messages' own words and numbers are made of. */
static char *input_password(const char *url)
{
    const char *auth = strstr(url, "://");
    if (auth == NULL)
        return NULL;
    auth += 3;
    const char *slash = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < slash; p++)
        if (*p == '@')
            at = p;
    if (at == NULL)
        at = strrchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL || at - colon - 1 < 6)
        return NULL;
    char *pw = strndup(colon + 1, (size_t)(at - colon - 1));
    if (pw == NULL)
        return NULL;
    char *mid = strndup(pw + 1, strlen(pw) - 2);
    int once = mid && strstr(url, mid) == colon + 2 && strstr(colon + 3, mid) == NULL;
    free(mid);
    if (!once ||
        strspn(pw, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '():/.[],-*%") ==
            strlen(pw)) {
        free(pw);
        return NULL;
    }
    return pw;
}

static void check_redact(const char *url, const char *secret)
{
    char small[600];
    hd_bus_redis_url_redact(url, small, sizeof small);
    if (memchr(small, '\0', sizeof small) == NULL || (secret && strstr(small, secret) != NULL))
        __builtin_trap();
    size_t cap = strlen(url) % 97;
    char *exact = malloc(cap + 1);
    if (exact != NULL) {
        hd_bus_redis_url_redact(url, exact, cap);
        if (cap > 0 && memchr(exact, '\0', cap) == NULL)
            __builtin_trap();
        free(exact);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = strndup((const char *)data, size);
    if (url == NULL)
        return 0;
    char *secret = input_password(url);
    hd_bus_redis_url u;
    memset(&u, 0x5a, sizeof u);
    hd_error err = {0};
    int rc = hd_bus_redis_url_parse(url, &u, &err);
    check_redact(url, secret);
    if (rc != HD_OK) {
        static const hd_bus_redis_url zero;
        /* the messages are fixed texts: none names any part of the URL */
        if (rc != HD_EURL || memcmp(&u, &zero, sizeof u) != 0 ||
            strncmp(err.text, "Redis URL", 9) != 0 || (secret && strstr(err.text, secret)))
            __builtin_trap();
        goto done;
    }
    if (u.port < 1 || u.port > 65535 || u.host[0] == '\0' || u.db < 0)
        __builtin_trap();

    hd_buf b = HD_BUF_INIT;
    hd_buf_puts(&b, "redis://");
    size_t pw_at = 0, pw_end = 0;
    if (u.password[0] != '\0') {
        pct(&b, u.user);
        hd_buf_puts(&b, ":");
        pw_at = b.len;
        pct(&b, u.password);
        pw_end = b.len;
        hd_buf_puts(&b, "@");
    }
    if (strchr(u.host, ':') != NULL) {
        if (strchr(u.host, ']') != NULL) { /* not something brackets can hold */
            hd_buf_release(&b);
            goto done;
        }
        hd_buf_printf(&b, "[%s]", u.host);
    } else {
        if (strpbrk(u.host, "/?#") != NULL)
            __builtin_trap(); /* the authority ends there: a parsed host cannot hold them */
        hd_buf_puts(&b, u.host);
    }
    hd_buf_printf(&b, ":%d/%d", u.port, u.db);
    if (b.oom) {
        hd_buf_release(&b);
        goto done;
    }
    hd_bus_redis_url again;
    if (hd_bus_redis_url_parse(b.p, &again, &err) != HD_OK || memcmp(&u, &again, sizeof u) != 0)
        __builtin_trap();
    if (u.password[0] != '\0') {
        char *enc = strndup(b.p + pw_at - 1, pw_end - pw_at + 2); /* ":<password>@" */
        char red[1200];
        hd_bus_redis_url_redact(b.p, red, sizeof red);
        if (enc == NULL || strstr(red, "***") == NULL || strstr(red, enc) != NULL)
            __builtin_trap();
        free(enc);
    }
    hd_buf_release(&b);
done:
    free(secret);
    free(url);
    return 0;
}
