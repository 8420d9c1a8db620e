/* utf8.c — see utf8.h. */
#include "herald/utf8.h"

#include <stdlib.h>
#include <string.h>

size_t hd_utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF; /* the range of the second byte */
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlong 3-byte forms */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80; /* no overlong 4-byte forms */
        hi = c == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

int hd_utf8_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        if (*p < 0x80) { /* ASCII, most of what is checked: no call a byte */
            p++;
            continue;
        }
        size_t n = hd_utf8_seq(p);
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}

int hd_utf8_valid_n(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        /* The bytes the lead asks for must be there before hd_utf8_seq reads them (a lead
         * it refuses, 0x80..0xC1 or 0xF5.., is refused before it reads on). */
        size_t need = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : 2;
        size_t n = (size_t)(end - p) >= need ? hd_utf8_seq(p) : 0;
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}

char *hd_utf8_clean(const char *s, const char *replacement)
{
    size_t r = strlen(replacement);
    char *out = malloc(strlen(s) * (r > 1 ? r : 1) + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t k = hd_utf8_seq(p);
        if (k == 0) {
            memcpy(o, replacement, r);
            o += r;
            p++;
        } else {
            memcpy(o, p, k);
            o += k;
            p += k;
        }
    }
    *o = '\0';
    return out;
}
