/* buf.c — a growable string; see buf.h. */
#include "herald/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make room for n more bytes plus the NUL; doubling keeps appends amortised O(1). */
static int reserve(hd_buf *b, size_t n)
{
    if (b->oom)
        return 0;
    if (n > (size_t)-1 / 2 - b->len) {
        b->oom = 1;
        return 0;
    }
    if (b->len + n + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

void hd_buf_add(hd_buf *b, const void *s, size_t n)
{
    if (!reserve(b, n))
        return;
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void hd_buf_puts(hd_buf *b, const char *s)
{
    hd_buf_add(b, s, strlen(s));
}

void hd_buf_printf(hd_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *hd_buf_take(hd_buf *b)
{
    char *s = b->p;
    if (b->oom) {
        free(s);
        s = NULL;
    } else if (s == NULL) {
        s = strdup("");
    }
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
    return s;
}

void hd_buf_release(hd_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
