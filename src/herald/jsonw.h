/* herald/jsonw.h — a JSON writer: values encoded straight into a buffer.
 *
 * jansson builds a tree of values and then dumps it through a callback per token, reading
 * every character of every string again to check its UTF-8: for a small, flat object on a
 * hot path that is most of the work. A log line through jansson cost about 50,000
 * instructions, and the JSON reply of a GET /users/{id} about 24,000 of its 123,000
 * (callgrind; docs/modules/jsonw.md). The writer appends the bytes as it goes, on the stack
 * first. What it writes is byte for byte what jansson's compact encoder writes for the same
 * values, but for reals (hd_jsonw_real: the shortest form that reads back the same); unit.jsonw
 * and the fuzz target jsonw compare the two.
 *
 * It writes; it does not check: the caller writes a well-formed document (keys as literals,
 * commas and brackets in place). jansson stays the tool for reading JSON and for values of
 * any shape.
 *
 *     hd_jsonw w;
 *     hd_jsonw_init(&w);
 *     HD_JSONW_LIT(&w, "{\"id\":");
 *     hd_jsonw_string(&w, id);
 *     HD_JSONW_LIT(&w, ",\"verified\":");
 *     hd_jsonw_bool(&w, verified);
 *     HD_JSONW_LIT(&w, "}");
 *     size_t len;
 *     char *text = hd_jsonw_take(&w, &len);   // new string, or NULL: out of memory
 *
 * Ownership: a writer owns its buffer until hd_jsonw_take or hd_jsonw_free.
 */
#ifndef HERALD_JSONW_H
#define HERALD_JSONW_H

#include <stddef.h>
#include <string.h>

#define HD_JSONW_STACK 2048 /* bytes written before the first allocation */

typedef struct hd_jsonw {
    char *p; /* stack, or the heap once it outgrew it */
    size_t len, cap;
    int failed; /* out of memory: what was written is incomplete */
    char stack[HD_JSONW_STACK];
} hd_jsonw;

/* An empty writer. */
void hd_jsonw_init(hd_jsonw *w);

/* Free what the writer holds (NULL allowed); it may be initialised again. */
void hd_jsonw_free(hd_jsonw *w);

/* The text written, as a new NUL-terminated string (free()), its length in *len (may be
 * NULL); the writer is left empty (free it or use it again). NULL when memory ran out at
 * any point: then nothing is returned, the writer is freed. */
char *hd_jsonw_take(hd_jsonw *w, size_t *len);

/* hd_jsonw_put's slow path: the buffer moves to the heap, or grows there. */
void hd_jsonw_grow_put(hd_jsonw *w, const char *s, size_t n);

/* s[0, n) (borrowed) as it is: punctuation, keys written as literals. */
static inline void hd_jsonw_put(hd_jsonw *w, const char *s, size_t n)
{
    if (n <= w->cap - w->len && !w->failed) {
        memcpy(w->p + w->len, s, n);
        w->len += n;
    } else {
        hd_jsonw_grow_put(w, s, n);
    }
}

/* A string literal as it is: HD_JSONW_LIT(&w, ",\"name\":"). */
#define HD_JSONW_LIT(w, lit) hd_jsonw_put((w), "" lit, sizeof(lit) - 1)

/* s (borrowed; NULL: null) as a JSON string, escaped as jansson escapes it by default: '"',
 * '\\' and the five short escapes, any other byte below 0x20 as \u00XX, everything else
 * (UTF-8, '/', 0x7F) as it is. A byte that starts no well-formed UTF-8 sequence becomes '?'
 * (jansson refuses such a string: the writer keeps the rest of it). */
void hd_jsonw_string(hd_jsonw *w, const char *s);

/* The n bytes at s (borrowed), which must be followed by a NUL (s[n] == '\0', as in every
 * jansson string), as a JSON string escaped as hd_jsonw_string does; a NUL among them is
 * written \u0000, as jansson writes it. */
void hd_jsonw_stringn(hd_jsonw *w, const char *s, size_t n);

/* An integer, as jansson writes a json_integer. */
void hd_jsonw_int(hd_jsonw *w, long long v);

/* The decimal text of v into buf, as jansson, SQLite ("%lld") and PostgreSQL (int8out)
 * write it: *start is set to its first byte, the digits end at buf + HD_JSONW_INT_MAX (no
 * NUL); returns their number. LLONG_MIN's 20 bytes are the longest. */
#define HD_JSONW_INT_MAX 20
size_t hd_jsonw_int_text(long long v, char buf[HD_JSONW_INT_MAX], const char **start);

/* A real in the fewest significant digits (15 to 17) that read back as the same double,
 * "0.319275" rather than jansson's "%.17g" "0.31927499999999998"; otherwise as jansson
 * writes one (".0" when it would read as an integer, no '+' nor leading zeros in the
 * exponent). NaN and infinities, which JSON cannot hold, as null. */
void hd_jsonw_real(hd_jsonw *w, double r);

/* true or false. */
void hd_jsonw_bool(hd_jsonw *w, int b);

#endif /* HERALD_JSONW_H */
