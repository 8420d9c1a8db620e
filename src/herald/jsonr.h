/* herald/jsonr.h — JSON text read into a jansson tree, with yajl's lexer.
 *
 * The pair of jsonw.h: jsonw writes the bytes jansson's encoder writes without building a
 * tree; jsonr builds the tree jansson's parser builds without jansson's lexer. json_loadb
 * reads a character at a time through a callback, checks each one's UTF-8 and appends it
 * to a growing buffer: about 175 instructions a byte, 91,000 for a 524-byte event, a
 * quarter of what herald-notifications spends on a notification (callgrind, docs/bench.md,
 * issue 14). yajl (Debian's libyajl) lexes the same text in about an eighth of that and
 * hands each value to a callback, from which jsonr builds the same jansson values.
 *
 * The tree is always json_loadb's. jsonr takes on only the text it can vouch for, and
 * hands everything else to json_loadb, which decides — so every error, its message, line
 * and column included, is jansson's own, and jsonr never accepts what jansson refuses:
 *   - yajl refuses the text (any syntax error, a control character in a string), or the
 *     text holds a '\v' or '\f' (white space to yajl, not to JSON);
 *   - a string or key holds a NUL (jansson refuses "\u0000" without JSON_ALLOW_NUL) or is
 *     not well-formed UTF-8 (yajl checks the shape of a sequence only: overlong forms and
 *     encoded surrogates pass it; jansson and hd_utf8_valid_n refuse them);
 *   - the text escapes a surrogate ("\uD83D..."): yajl turns a lone one into '?', where
 *     jansson refuses it; such text is handed over whole (emoji escaped in pairs too: rare);
 *   - an integer out of range of json_int_t, or a real jansson refuses (overflow); every
 *     other real stays on yajl's side but is converted by jansson itself (json_loadb of the
 *     number alone: its locale-independent strtod);
 *   - a duplicate key under JSON_REJECT_DUPLICATES; nesting deeper than jansson's 2,048
 *     levels; a root that is not an object or an array (where yajl's end-of-text check
 *     can be fooled: jsonr.c); anything but white space after the root;
 *   - any flag but those two.
 * fuzz-jsonr checks it on every input: json_loadb's tree, key order and kinds included, or
 * json_loadb's error, byte for byte.
 *
 * Known limits: a text jsonr hands over is read twice (the second time by jansson), so a
 * hostile sender can make a refusal cost up to about 1.3 times what it cost before; the size
 * limit of the caller (hd_registry's max_size for events) bounds it.
 */
#ifndef HERALD_JSONR_H
#define HERALD_JSONR_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* json_loadb(buf, len, flags, error), faster for the common text (above). buf is borrowed
 * and need not be NUL-terminated; error may be NULL. Returns a new reference, or NULL with
 * *error as json_loadb sets it. */
json_t *hd_jsonr_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);

/* How many texts this process has handed to json_loadb so far (all threads; a count, for
 * tests and diagnostics: a refused text is one, and so is one jsonr does not take on). */
size_t hd_jsonr_handovers(void);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_JSONR_H */
