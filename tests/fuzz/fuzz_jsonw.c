/* fuzz_jsonw.c — the JSON writer (jsonw.h) against jansson, on any bytes: the writer writes
 * what jansson's compact encoder writes for a string jansson accepts, and for any other
 * string a JSON string that jansson reads back as the input with each byte that starts no
 * well-formed UTF-8 sequence replaced by '?'. Integers from the input's bytes too. The HTTP
 * replies and the log lines of herald hold outside data (names, paths, addresses) written
 * this way; a wrong escape would let a value end its string and forge fields.
 *
 * The input is split at its first NUL into the string (no NUL: JSON strings written by the
 * writer are C strings) and the bytes of an integer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/jsonw.h"
#include "herald/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* s with every byte that starts no well-formed sequence replaced by '?' (new string). */
static char *cleaned(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    CHECK(out != NULL);
    size_t i = 0;
    while (i < n) {
        const unsigned char *p = (const unsigned char *)s + i;
        size_t seq = *p >= 0x80 ? hd_utf8_seq(p) : 1;
        if (seq == 0) {
            out[i++] = '?';
            continue;
        }
        memcpy(out + i, p, seq);
        i += seq;
    }
    out[n] = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, data, n);
    s[n] = '\0';

    hd_jsonw w;
    hd_jsonw_init(&w);
    hd_jsonw_string(&w, s);
    size_t len = 0;
    char *mine = hd_jsonw_take(&w, &len);
    CHECK(mine != NULL && strlen(mine) == len);

    /* Always a JSON string, read back as the cleaned input. */
    json_error_t e;
    json_t *back = json_loads(mine, JSON_DECODE_ANY, &e);
    CHECK(back != NULL && json_is_string(back));
    char *clean = cleaned(s, n);
    CHECK(json_string_length(back) == n && memcmp(json_string_value(back), clean, n) == 0);
    json_decref(back);

    /* Byte for byte what jansson writes, when jansson takes the string. */
    json_t *v = json_string(s);
    if (v != NULL) {
        CHECK(strcmp(clean, s) == 0); /* jansson took it: nothing was invalid */
        char *theirs = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        CHECK(theirs != NULL && strcmp(mine, theirs) == 0);
        free(theirs);
        json_decref(v);
    }
    free(clean);
    free(mine);

    /* An integer from the bytes after the NUL. */
    if (nul != NULL && size - n - 1 >= sizeof(long long)) {
        long long x;
        memcpy(&x, nul + 1, sizeof x);
        hd_jsonw_init(&w);
        hd_jsonw_int(&w, x);
        char *num = hd_jsonw_take(&w, NULL);
        json_t *j = json_integer(x);
        char *theirs = json_dumps(j, JSON_ENCODE_ANY);
        CHECK(num != NULL && theirs != NULL && strcmp(num, theirs) == 0);
        free(theirs);
        json_decref(j);
        free(num);
    }
    free(s);
    return 0;
}
