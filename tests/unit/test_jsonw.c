/* Unit tests for herald/jsonw.h: what the writer writes is what jansson's compact encoder
 * writes for the same values (strings of every kind, integers, booleans), invalid UTF-8
 * becomes '?', and the buffer moves from the stack to the heap without losing a byte. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/jsonw.h"

/* What the writer writes for s (new string). */
static char *written(const char *s)
{
    hd_jsonw w;
    hd_jsonw_init(&w);
    hd_jsonw_string(&w, s);
    size_t len = 0;
    char *text = hd_jsonw_take(&w, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* What jansson writes for the string s, which must be valid UTF-8 (new string). */
static char *jansson_of(const char *s)
{
    json_t *v = json_string(s);
    assert_non_null(v);
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(v);
    assert_non_null(text);
    return text;
}

static void assert_as_jansson(const char *s)
{
    char *mine = written(s), *theirs = jansson_of(s);
    if (strcmp(mine, theirs) != 0)
        fail_msg("writer %s, jansson %s", mine, theirs);
    free(mine);
    free(theirs);
}

static void strings_are_escaped_as_jansson_escapes_them(void **state)
{
    (void)state;
    assert_as_jansson("");
    assert_as_jansson("Ada Lovelace");
    assert_as_jansson("quote \" backslash \\ slash / tab \t newline \n return \r");
    assert_as_jansson("\b\f\x01\x02\x1f\x7f end");
    assert_as_jansson("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); /* é € 😀 */
    char all[64];
    for (int c = 1; c < 0x20; c++)
        all[c - 1] = (char)c;
    all[0x1f] = '\0';
    assert_as_jansson(all);
}

/* Random strings of code points of every UTF-8 length (no surrogates, no NUL) and of the
 * bytes that need escapes: 3,000 of them, from a fixed seed. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void random_strings_match_jansson(void **state)
{
    (void)state;
    unsigned long long x = 0x9E3779B97F4A7C15ULL;
    char s[512];
    for (int t = 0; t < 3000; t++) {
        size_t len = 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int n = (int)(x % 60);
        for (int i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            unsigned cp;
            switch (x % 5) {
            case 0:
                cp = 1 + (unsigned)(x >> 8) % 0x7F; /* ASCII, controls included */
                break;
            case 1:
                cp = 0x80 + (unsigned)(x >> 8) % (0x800 - 0x80);
                break;
            case 2:
                cp = 0x800 + (unsigned)(x >> 8) % (0x10000 - 0x800);
                if (cp >= 0xD800 && cp <= 0xDFFF)
                    cp = 0xE000;
                break;
            case 3:
                cp = 0x10000 + (unsigned)(x >> 8) % (0x110000 - 0x10000);
                break;
            default:
                cp = "\"\\/\b\f\n\r\t"[(x >> 8) % 8];
            }
            len += put_utf8(s + len, cp);
        }
        s[len] = '\0';
        assert_as_jansson(s);
    }
}

static void invalid_utf8_becomes_a_question_mark(void **state)
{
    (void)state;
    char *t = written("a\xff"
                      "b");
    assert_string_equal(t, "\"a?b\"");
    free(t);
    t = written("cut \xe2\x82"); /* a sequence cut short: each byte alone */
    assert_string_equal(t, "\"cut ??\"");
    free(t);
    t = written("\xc0\xaf"); /* an overlong '/' */
    assert_string_equal(t, "\"??\"");
    free(t);
    t = written("\xed\xa0\x80"); /* a surrogate */
    assert_string_equal(t, "\"???\"");
    free(t);
    /* Whatever comes out, jansson reads it back as a string. */
    json_error_t e;
    t = written("x\x80y\xf5z");
    json_t *v = json_loads(t, JSON_DECODE_ANY, &e);
    assert_non_null(v);
    assert_string_equal(json_string_value(v), "x?y?z");
    json_decref(v);
    free(t);
}

/* hd_jsonw_stringn: a length, and the NULs before it written \u0000, as jansson writes a
 * json_stringn that holds them; at the length it stops, NUL or not. */
static void counted_strings_write_their_nuls(void **state)
{
    (void)state;
    static const char *const cases[] = {"", "a\0b", "\0", "\0\0x\xc3\xa9\0", "tab\t\0end"};
    static const size_t lens[] = {0, 3, 1, 6, 8};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        hd_jsonw w;
        hd_jsonw_init(&w);
        hd_jsonw_stringn(&w, cases[i], lens[i]);
        char *mine = hd_jsonw_take(&w, NULL);
        json_t *v = json_stringn(cases[i], lens[i]);
        assert_non_null(v);
        char *theirs = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(v);
        assert_non_null(mine);
        assert_non_null(theirs);
        if (strcmp(mine, theirs) != 0)
            fail_msg("case %zu: writer %s, jansson %s", i, mine, theirs);
        free(mine);
        free(theirs);
    }
}

static void null_integers_and_booleans(void **state)
{
    (void)state;
    static const long long ints[] = {0, 1, -1, 42, -1234567890123LL, LLONG_MAX, LLONG_MIN};
    hd_jsonw w;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        hd_jsonw_init(&w);
        hd_jsonw_int(&w, ints[i]);
        char *mine = hd_jsonw_take(&w, NULL);
        json_t *v = json_integer(ints[i]);
        char *theirs = json_dumps(v, JSON_ENCODE_ANY);
        assert_string_equal(mine, theirs);
        free(mine);
        free(theirs);
        json_decref(v);
    }
    hd_jsonw_init(&w);
    HD_JSONW_LIT(&w, "[");
    hd_jsonw_string(&w, NULL);
    HD_JSONW_LIT(&w, ",");
    hd_jsonw_bool(&w, 1);
    HD_JSONW_LIT(&w, ",");
    hd_jsonw_bool(&w, 0);
    HD_JSONW_LIT(&w, ",");
    hd_jsonw_real(&w, 0.25);
    HD_JSONW_LIT(&w, ",");
    hd_jsonw_real(&w, 1.0 / 0.0);
    HD_JSONW_LIT(&w, "]");
    char *t = hd_jsonw_take(&w, NULL);
    assert_string_equal(t, "[null,true,false,0.25,null]");
    free(t);
}

static void the_buffer_moves_to_the_heap_whole(void **state)
{
    (void)state;
    size_t n = 3 * HD_JSONW_STACK + 17;
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + i % 26);
    s[n] = '\0';
    hd_jsonw w;
    hd_jsonw_init(&w);
    HD_JSONW_LIT(&w, "{\"k\":");
    hd_jsonw_string(&w, s);
    HD_JSONW_LIT(&w, "}");
    assert_true(w.p != w.stack);
    size_t len = 0;
    char *t = hd_jsonw_take(&w, &len);
    assert_non_null(t);
    assert_int_equal(len, n + 8);
    assert_int_equal(strlen(t), len);
    json_error_t e;
    json_t *v = json_loads(t, 0, &e);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "k")), s);
    json_decref(v);
    free(t);
    /* The writer is empty afterwards, and may be used again. */
    assert_int_equal(w.len, 0);
    assert_true(w.p == w.stack);
    HD_JSONW_LIT(&w, "1");
    t = hd_jsonw_take(&w, NULL);
    assert_string_equal(t, "1");
    free(t);
    hd_jsonw_free(&w);
    hd_jsonw_free(NULL);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strings_are_escaped_as_jansson_escapes_them),
        cmocka_unit_test(random_strings_match_jansson),
        cmocka_unit_test(invalid_utf8_becomes_a_question_mark),
        cmocka_unit_test(counted_strings_write_their_nuls),
        cmocka_unit_test(null_integers_and_booleans),
        cmocka_unit_test(the_buffer_moves_to_the_heap_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
