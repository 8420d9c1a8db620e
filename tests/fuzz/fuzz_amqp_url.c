/* fuzz_amqp_url.c — libFuzzer target for the AMQP URL parser and redactor (src/herald/amqp.c).
 *
 * The URL comes from the environment (HD_AMQP_URL), so from whoever writes the deployment;
 * it holds a password, and the parser's error messages and the redactor's output go to logs.
 * Properties checked on every input (a violation is __builtin_trap(), a crash to libFuzzer):
 *   1. hd_amqp_url_parse returns 0, HD_EURL or HD_ENOMEM, and leaves *out zeroed on error;
 *   2. what parses has a port in 1..65535 and a vhost, and is stable: written back as a
 *      canonical URL (every part percent-encoded) it parses again to the same fields;
 *   3. the redactor hides the password of that canonical URL and says it did ("***");
 *   4. no error message and no redacted text holds the input's password: the text between
 *      the first ':' of the userinfo and its end, the last '@' before the first '/', or when
 *      there is none the last '@' of all (a password may hold a raw '/' or '@'), so the
 *      text of an unparseable URL cannot leak it either;
 *   5. the redactor stays within any capacity it is given (ASan checks the bytes).
 * A list (HD_AMQP_URL may name every node of a cluster: URLs cut at a ',' followed, blanks
 * allowed, by "amqp://" or "amqps://", as amqp.c cuts them) is several URLs: property 4 then
 * holds for the password of each, not for text that spans two of them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/amqp.h"
#include "herald/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Percent-encode all of ASCII but letters and digits. Bytes from 0x80 up stay raw:
 * librabbitmq's amqp_parse_url refuses "%80" to "%FF" (a limit of librabbitmq 0.11: a UTF-8
 * password must be written unencoded) but takes them unencoded. */
static void pct(hd_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c >= 0x80) {
            hd_buf_add(b, c, 1);
        } else {
            char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
            hd_buf_add(b, e, 3);
        }
    }
}

/* The input's password as property 4 defines it, or NULL when it could not be told apart
 * from the rest of a message: shorter than 6, found elsewhere in the URL, or made only of
 * what the messages' own words and numbers are made of. */
static char *input_password(const char *url)
{
    const char *auth = strstr(url, "://");
    if (auth == NULL)
        return NULL;
    auth += 3;
    const char *slash = strchr(auth, '/');
    const char *at = NULL;
    for (const char *p = auth; slash != NULL && p < slash; p++)
        if (*p == '@')
            at = p;
    if (at == NULL)
        at = strrchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL || at - colon - 1 < 6)
        return NULL;
    char *pw = strndup(colon + 1, (size_t)(at - colon - 1));
    /* its middle (a message puts a quote or a space next to the URL's text) occurs once */
    char *mid = pw ? strndup(pw + 1, strlen(pw) - 2) : NULL;
    int once = mid && strstr(url, mid) == colon + 2 && strstr(colon + 3, mid) == NULL;
    free(mid);
    if (pw == NULL || !once ||
        strspn(pw, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '():/.[],-*") ==
            strlen(pw)) {
        free(pw);
        return NULL;
    }
    return pw;
}

/* The passwords of every URL of a list (of the one URL when it is not a list), as
 * input_password defines them, into secrets (NULL where there is none); returns how many. */
enum { MAX_URLS = 16 };
/* Whether needle occurs at least twice in hay (NULL hay: no). */
static int twice(const char *hay, const char *needle)
{
    const char *first = hay ? strstr(hay, needle) : NULL;
    return first != NULL && strstr(first + 1, needle) != NULL;
}

/* url with the blanks after each comma removed: new, NULL when out of memory. */
static char *squeeze(const char *url)
{
    char *out = malloc(strlen(url) + 1), *o = out;
    for (const char *c = url; out != NULL && *c; c++) {
        *o++ = *c;
        if (*c == ',')
            while (c[1] == ' ' || c[1] == '\t')
                c++;
    }
    if (out != NULL)
        *o = '\0';
    return out;
}

static int list_passwords(const char *url, char *secrets[MAX_URLS])
{
    int n = 0;
    char *squeezed = squeeze(url);
    const char *start = url;
    while (start != NULL && n < MAX_URLS) {
        const char *next = NULL, *end = start + strlen(start);
        for (const char *c = strchr(start, ','); c != NULL; c = strchr(c + 1, ',')) {
            const char *t = c + 1;
            while (*t == ' ' || *t == '\t')
                t++;
            if (strncmp(t, "amqp://", 7) == 0 || strncmp(t, "amqps://", 8) == 0) {
                end = c;
                next = t;
                break;
            }
        }
        char *one = strndup(start, (size_t)(end - start));
        char *pw = one ? input_password(one) : NULL;
        free(one);
        /* found elsewhere in the whole list (another URL's user, say), or in the list as the
         * redactor writes it (the blanks after its commas dropped, which can join two other
         * URLs' texts into the same bytes): not told apart */
        if (pw != NULL && (strstr(strstr(url, pw) + 1, pw) != NULL || twice(squeezed, pw))) {
            free(pw);
            pw = NULL;
        }
        secrets[n++] = pw;
        start = next;
    }
    free(squeezed);
    return n;
}

static int holds_any(const char *text, char *const secrets[], int n)
{
    for (int i = 0; i < n; i++)
        if (secrets[i] != NULL && strstr(text, secrets[i]) != NULL)
            return 1;
    return 0;
}

static void check_redact(const char *url, char *const secrets[], int n)
{
    char small[600];
    hd_amqp_url_redact(url, small, sizeof small);
    if (memchr(small, '\0', sizeof small) == NULL || holds_any(small, secrets, n))
        __builtin_trap();
    size_t cap = strlen(url) % 97; /* any capacity, exactly: ASan sees a byte too far */
    char *exact = malloc(cap + 1);
    if (exact != NULL) {
        hd_amqp_url_redact(url, exact, cap);
        if (cap > 0 && memchr(exact, '\0', cap) == NULL)
            __builtin_trap();
        free(exact);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = strndup((const char *)data, size); /* a URL is a C string: NUL ends it */
    if (url == NULL)
        return 0;
    char *secrets[MAX_URLS];
    int nsecrets = list_passwords(url, secrets);
    hd_amqp_url u;
    memset(&u, 0x5a, sizeof u);
    hd_error err = {0};
    int rc = hd_amqp_url_parse(url, &u, &err);
    check_redact(url, secrets, nsecrets);
    if (rc != HD_OK) {
        static const hd_amqp_url zero;
        if ((rc != HD_EURL && rc != HD_ENOMEM) || memcmp(&u, &zero, sizeof u) != 0 ||
            holds_any(err.text, secrets, nsecrets))
            __builtin_trap();
        goto done;
    }
    if (u.port < 1 || u.port > 65535 || u.vhost[0] == '\0')
        __builtin_trap();

    /* Canonical form: everything but letters and digits percent-encoded; an IPv6 literal
     * (a host with ':') goes in brackets, which the URL syntax needs, and is written as is. */
    hd_buf b = HD_BUF_INIT;
    hd_buf_puts(&b, u.tls ? "amqps://" : "amqp://");
    pct(&b, u.user);
    hd_buf_puts(&b, ":");
    size_t pw_at = b.len;
    pct(&b, u.password);
    size_t pw_end = b.len;
    hd_buf_puts(&b, "@");
    int v6 = strchr(u.host, ':') != NULL;
    if (v6 && strpbrk(u.host, "[]/@?#%") != NULL) {
        hd_buf_release(&b); /* not an address a bracket can hold: nothing to compare */
        goto done;
    }
    if (v6)
        hd_buf_printf(&b, "[%s]", u.host);
    else
        pct(&b, u.host);
    hd_buf_printf(&b, ":%d/", u.port);
    pct(&b, u.vhost);
    if (b.oom) {
        hd_buf_release(&b);
        goto done;
    }
    hd_amqp_url again;
    if (hd_amqp_url_parse(b.p, &again, &err) != HD_OK || memcmp(&u, &again, sizeof u) != 0)
        __builtin_trap();
    if (u.password[0] != '\0') {
        /* ":<password>@" cannot appear in a redacted canonical URL by chance: ':' and '@'
         * are encoded everywhere else */
        char *enc = strndup(b.p + pw_at - 1, pw_end - pw_at + 2);
        char red[1200];
        hd_amqp_url_redact(b.p, red, sizeof red);
        if (enc == NULL || strstr(red, "***") == NULL || strstr(red, enc) != NULL)
            __builtin_trap();
        free(enc);
    }
    hd_buf_release(&b);
done:
    for (int i = 0; i < nsecrets; i++)
        free(secrets[i]);
    free(url);
    return 0;
}
