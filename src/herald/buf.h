/* herald/buf.h — a growable NUL-terminated byte string (in the spirit of redis's sds).
 *
 * MIME messages, rendered templates and Prometheus pages are all built by appending many
 * small pieces. hd_buf does that with one rule that keeps callers short: an allocation
 * failure is remembered (oom) and turns every later append into a no-op, so a builder
 * appends freely and checks once, at hd_buf_take.
 *
 *     hd_buf b = HD_BUF_INIT;
 *     hd_buf_puts(&b, "Subject: ");
 *     hd_buf_printf(&b, "%d new messages\r\n", n);
 *     char *s = hd_buf_take(&b);          // new: free() it; NULL when memory ran out
 *
 * An hd_buf lives on the caller's stack; it owns its bytes until hd_buf_take hands them
 * over or hd_buf_release frees them.
 */
#ifndef HERALD_BUF_H
#define HERALD_BUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_buf {
    char *p;    /* the bytes, NUL-terminated once anything was added; NULL before */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    int oom;    /* an allocation failed: later appends do nothing */
} hd_buf;

#define HD_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

/* Append n bytes of s (which may contain NULs). */
void hd_buf_add(hd_buf *b, const void *s, size_t n);

/* Append a NUL-terminated string. */
void hd_buf_puts(hd_buf *b, const char *s);

/* Append printf-formatted text, of any length. */
void hd_buf_printf(hd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hand the string over (new: the caller frees it; "" when nothing was added) and reset b.
 * Returns NULL, and frees what was built, when an allocation failed along the way. */
char *hd_buf_take(hd_buf *b);

/* Free the bytes and reset b (for error paths). */
void hd_buf_release(hd_buf *b);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_BUF_H */
