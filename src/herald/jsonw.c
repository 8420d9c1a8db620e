/* jsonw.c — values written straight into a buffer as jansson's compact encoder writes them;
 * see jsonw.h. Moved here from log.c, whose typed lines were its first user. */
#include "herald/jsonw.h"
#include "herald/utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hd_jsonw_init(hd_jsonw *w)
{
    w->p = w->stack;
    w->len = 0;
    w->cap = sizeof w->stack;
    w->failed = 0;
}

void hd_jsonw_free(hd_jsonw *w)
{
    if (w == NULL)
        return;
    if (w->p != w->stack)
        free(w->p);
    hd_jsonw_init(w);
}

char *hd_jsonw_take(hd_jsonw *w, size_t *len)
{
    char *text = NULL;
    if (!w->failed) {
        if (w->p == w->stack || w->len == w->cap) {
            /* From the stack, or no room for the NUL: one copy of the exact size. */
            if ((text = malloc(w->len + 1)) != NULL) {
                memcpy(text, w->p, w->len);
                text[w->len] = '\0';
            }
        } else {
            text = w->p; /* the heap buffer itself */
            text[w->len] = '\0';
            w->p = w->stack;
        }
    }
    if (text != NULL && len != NULL)
        *len = w->len;
    hd_jsonw_free(w);
    return text;
}

void hd_jsonw_grow_put(hd_jsonw *w, const char *s, size_t n)
{
    if (w->failed)
        return;
    size_t cap = (w->len + n) * 2;
    char *q = w->p == w->stack ? malloc(cap) : realloc(w->p, cap);
    if (q == NULL) {
        w->failed = 1;
        return;
    }
    if (w->p == w->stack)
        memcpy(q, w->stack, w->len);
    w->p = q;
    w->cap = cap;
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* 1 for the bytes a JSON string holds as they are without a closer look: printable ASCII
 * but '"' and '\\' (0x22, 0x5C); 32 bytes a row. */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* s as a JSON string, escaped as jansson escapes it by default: '"', '\\' and the five short
 * escapes, any other byte below 0x20 as \u00XX, everything else (UTF-8 too, and '/', and 0x7F)
 * as it is. A byte that does not start a well-formed UTF-8 sequence becomes '?', as
 * text_value makes it. The string ends at the NUL at end, or at the first NUL when end is
 * NULL; a NUL before end is written \u0000. */
static void write_string(hd_jsonw *w, const char *s, const char *end)
{
    static const char hex[] = "0123456789ABCDEF";
    HD_JSONW_LIT(w, "\"");
    const unsigned char *p = (const unsigned char *)s, *run = p; /* run: not yet copied */
    for (;;) {
        while (plain[*p]) /* the common case: a run of printable ASCII */
            p++;
        unsigned char c = *p;
        if (c == '\0' && (end == NULL || (const char *)p == end))
            break;
        size_t seq;
        if (c >= 0x80 && (seq = hd_utf8_seq(p)) > 0) {
            p += seq;
            continue;
        }
        hd_jsonw_put(w, (const char *)run, (size_t)(p - run));
        static const char raw[] = "\"\\\b\f\n\r\t", letter[] = "\"\\bfnrt";
        const char *hit = memchr(raw, c, sizeof raw - 1);
        char esc[6] = {'\\', hit ? letter[hit - raw] : 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (hit != NULL || c < 0x20) /* \n and the like, or \u00XX */
            hd_jsonw_put(w, esc, hit != NULL ? 2 : sizeof esc);
        else /* a byte that starts no UTF-8 sequence */
            HD_JSONW_LIT(w, "?");
        run = ++p;
    }
    hd_jsonw_put(w, (const char *)run, (size_t)(p - run));
    HD_JSONW_LIT(w, "\"");
}

void hd_jsonw_string(hd_jsonw *w, const char *s)
{
    if (s == NULL)
        HD_JSONW_LIT(w, "null");
    else
        write_string(w, s, NULL);
}

void hd_jsonw_stringn(hd_jsonw *w, const char *s, size_t n)
{
    write_string(w, s, s + n);
}

size_t hd_jsonw_int_text(long long v, char buf[HD_JSONW_INT_MAX], const char **start)
{
    char *e = buf + HD_JSONW_INT_MAX, *d = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        *--d = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        *--d = '-';
    *start = d;
    return (size_t)(e - d);
}

void hd_jsonw_int(hd_jsonw *w, long long v)
{
    char b[HD_JSONW_INT_MAX];
    const char *d;
    size_t n = hd_jsonw_int_text(v, b, &d);
    hd_jsonw_put(w, d, n);
}

/* A real in the fewest significant digits (15 to 17) that read back as the same double,
 * so that a duration is "0.319275", not jansson's "%.17g" "0.31927499999999998"; otherwise
 * as jansson writes one: a '.' for the locale's decimal point, ".0" added when it would read
 * as an integer, no '+' nor leading zeros in the exponent. JSON has no NaN nor infinity
 * (jansson's json_real refuses them): null, rather than losing the line. */
void hd_jsonw_real(hd_jsonw *w, double r)
{
    if (!isfinite(r)) {
        HD_JSONW_LIT(w, "null");
        return;
    }
    /* Most reals in lines are durations and rates: up to 6 decimals, below 10^9. Those are
     * written from the integer m = r * 10^6 (exact: below 2^53), which reads back exactly
     * when m / 10^6 is r (the division of two exact doubles rounds as strtod does), without a
     * printf and a strtod per value. */
    double a = r < 0 ? -r : r;
    if (a >= 1e-4 && a < 1e9) {
        long long m = (long long)(r * 1e6 + (r < 0 ? -0.5 : 0.5)); /* no libm: rounded here */
        if ((double)m / 1e6 == r) {
            unsigned long long u = m < 0 ? 0ULL - (unsigned long long)m : (unsigned long long)m;
            char f[8];
            int k = 6;
            f[6] = '\0';
            for (int i = 5; i >= 0; i--, u /= 10)
                f[i] = (char)('0' + u % 10);
            while (k > 1 && f[k - 1] == '0')
                f[--k] = '\0';
            if (m < 0)
                HD_JSONW_LIT(w, "-");
            hd_jsonw_int(w, (long long)u);
            HD_JSONW_LIT(w, ".");
            hd_jsonw_put(w, f, (size_t)k);
            return;
        }
    }
    char b[48];
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(b, sizeof b - 2, "%.*g", digits, r);
        if (n <= 0 || (size_t)n >= sizeof b - 2) {
            HD_JSONW_LIT(w, "null");
            return;
        }
        if (strtod(b, NULL) == r)
            break;
    }
    int dot = 0;
    for (int i = 0; i < n; i++) {
        if (b[i] == 'e')
            dot = 1;
        else if (!(b[i] >= '0' && b[i] <= '9') && b[i] != '-' && b[i] != '+')
            b[i] = '.', dot = 1; /* the locale's decimal point */
    }
    if (!dot) {
        hd_jsonw_put(w, b, (size_t)n);
        HD_JSONW_LIT(w, ".0");
        return;
    }
    char *e = strchr(b, 'e');
    if (e != NULL) {
        char *from = e + 1, *to = e + 1;
        if (*from == '-')
            from++, to++;
        else if (*from == '+')
            from++;
        while (*from == '0' && from[1] != '\0')
            from++;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(b);
    }
    hd_jsonw_put(w, b, (size_t)n);
}

void hd_jsonw_bool(hd_jsonw *w, int b)
{
    if (b)
        HD_JSONW_LIT(w, "true");
    else
        HD_JSONW_LIT(w, "false");
}
