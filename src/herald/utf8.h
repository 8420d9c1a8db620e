/* herald/utf8.h — is this text UTF-8, and a clean copy when it is not.
 *
 * JSON strings must be UTF-8, and jansson refuses anything else; Prometheus label values
 * must be UTF-8 too. Much of what herald puts into JSON and labels comes from outside (an
 * HTTP path, a header, a broker message), so the HTTP router, the metrics registry and the
 * logger all check their text first and replace what is not UTF-8 instead of losing the
 * whole value. One decoder serves them all: well-formed sequences only (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF).
 */
#ifndef HERALD_UTF8_H
#define HERALD_UTF8_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Length (1..4) of the well-formed UTF-8 sequence at s, or 0 when the bytes there do not
 * start one. s is borrowed and NUL-terminated: the check stops at the first bad byte, so it
 * never reads past the NUL. */
size_t hd_utf8_seq(const unsigned char *s);

/* 1 when the NUL-terminated s (borrowed) is all well-formed UTF-8, else 0. */
int hd_utf8_valid(const char *s);

/* 1 when s[0, len) (borrowed; need not be NUL-terminated) is all well-formed UTF-8, else 0.
 * A NUL byte in it is well-formed (U+0000). Never reads s[len] or beyond: a sequence cut
 * by the end is refused. */
int hd_utf8_valid_n(const char *s, size_t len);

/* A copy of s (borrowed) with every byte that does not start a well-formed sequence
 * replaced by `replacement` (borrowed; e.g. "\xEF\xBF\xBD", U+FFFD, or "?"). New: free()
 * it; NULL when out of memory. */
char *hd_utf8_clean(const char *s, const char *replacement);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_UTF8_H */
