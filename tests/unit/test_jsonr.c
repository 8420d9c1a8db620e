/* test_jsonr.c — the JSON reader (jsonr.h): json_loadb's tree or json_loadb's error, read
 * with yajl's lexer where it can be vouched for and by jansson everywhere else. Each case
 * says which of the two read the text (hd_jsonr_handovers), so a reader that handed
 * everything to jansson — always right, never faster — fails here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/jsonr.h"

#define DECODE (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)

/* hd_jsonr_loadb(text[0, len), flags) is what json_loadb gives: the same compact dump (kinds,
 * values, key order), or the same error. Returns 1 when jsonr handed the text to jansson. */
static int same_as_jansson(const char *text, size_t len, size_t flags)
{
    json_error_t want_err, got_err;
    json_t *want = json_loadb(text, len, flags, &want_err);
    size_t before = hd_jsonr_handovers();
    json_t *got = hd_jsonr_loadb(text, len, flags, &got_err);
    int handed = hd_jsonr_handovers() != before;
    if (want == NULL) {
        if (got != NULL)
            fail_msg("jsonr took what jansson refuses (%s): %.*s", want_err.text, (int)len, text);
        assert_string_equal(got_err.text, want_err.text);
        assert_int_equal(got_err.line, want_err.line);
        assert_int_equal(got_err.column, want_err.column);
        assert_int_equal(got_err.position, want_err.position);
        assert_true(handed); /* a refusal is always jansson's */
        return handed;
    }
    if (got == NULL)
        fail_msg("jsonr refused what jansson takes (%s): %.*s", got_err.text, (int)len, text);
    char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
    char *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(b, a);
    assert_true(json_equal(want, got));
    assert_int_equal(got_err.position, want_err.position);
    free(a);
    free(b);
    json_decref(want);
    json_decref(got);
    return handed;
}

static int same(const char *text, size_t flags)
{
    return same_as_jansson(text, strlen(text), flags);
}

static const char EVENT[] =
    "{\"causationid\":\"0192f7a2-1c3e-7b6a-9d2e-5f4a3b2c1d0e\",\"correlationid\":\"0192f7a2-"
    "1c3e-7b6a-9d2e-5f4a3b2c1d0f\",\"data\":{\"email\":\"user.000123@example.com\",\"name\":"
    "\"Zo\\u00eb \\\"Z\\\" M\\u00fcller\\n\",\"user_id\":\"0192f7a2-1c3e-7b6a-9d2e-5f4a3b2c1d10\","
    "\"verification_link\":\"https://example.com/verify?token=abc\\/def\",\"tags\":[1,-0,2.5,"
    "-1e-3,true,false,null,{},[]]},\"datacontenttype\":\"application/json\","
    "\"dataschemaversion\":1,\"id\":\"0192f7a2-1c3e-7b6a-9d2e-5f4a3b2c1d11\",\"source\":"
    "\"/users\",\"specversion\":\"1.0\",\"time\":\"2026-12-05T13:33:47.634Z\",\"type\":"
    "\"users.user_registered\"}";

/* What herald's events are: read by yajl, and the tree is jansson's. */
static void an_event_is_read_without_jansson(void **state)
{
    (void)state;
    assert_false(same(EVENT, DECODE));
    assert_false(same(EVENT, 0));
    assert_false(same(" \t\r\n[ {\"a\" : [ ] } , \"\xC3\xA9\xF0\x9F\x93\xA8\x7F\" ]\n ", DECODE));
    assert_false(same("{\"big\":9223372036854775807,\"small\":-9223372036854775808}", DECODE));
    /* The empty key is a key, and repeated it is a duplicate (handed over then). */
    assert_false(same("{\"\":1,\"a\":{\"\":[]}}", DECODE));
    assert_true(same("{\"\":1,\"\":2}", DECODE));
    /* A repeated key without JSON_REJECT_DUPLICATES: its first place, the last value. */
    assert_false(same("{\"a\":1,\"b\":2,\"a\":3}", 0));
}

/* Each text jsonr does not take on, and why (jsonr.h): jansson decides, and says the same. */
static void what_yajl_cannot_vouch_for_goes_to_jansson(void **state)
{
    (void)state;
    const char *handed[] = {
        "",        /* nothing */
        "  ",      /* white space only */
        "\"top\"", /* a scalar root, even when jansson takes it */
        "42",
        " \"t\"\" ", /* yajl takes this (fuzz-jsonr found it) */
        "{}\"",      /* a token cut short after the root */
        "{} x",
        "{\"a\":1}\v", /* \v and \f: white space to yajl only */
        "{\f}",
        "{\"a\":\"\\ud83d\\udce8\"}", /* an escaped surrogate pair: handed over */
        "{\"a\":\"\\uD800\"}",        /* a lone one: yajl writes '?', jansson refuses */
        "{\"a\":\"\\udc00x\"}",
        "{\"a\":\"x\\u0000y\"}", /* NUL: jansson refuses it without ALLOW_NUL */
        "{\"a\\u0000\":1}",
        "{\"a\":\"\xED\xA0\x80\"}",    /* an encoded surrogate: yajl's shape check passes */
        "{\"a\":\"\xC0\xAF\"}",        /* overlong */
        "{\"\xF4\x90\x80\x80\":1}",    /* above U+10FFFF, in a key */
        "{\"a\":\"\xC3\"}",            /* cut */
        "{\"a\":9223372036854775808}", /* out of json_int_t */
        "[-9223372036854775809]",
        "[123456789012345678901234567890123]",
        "[1e400]",                     /* a real jansson refuses */
        "{\"id\":\"a\",\"id\":\"b\"}", /* duplicate, with JSON_REJECT_DUPLICATES */
        "{\"a\":{\"x\":1,\"x\":1}}",
        "{\"a\":1,}", /* and plain syntax errors */
        "[01]",
        "{'a':1}",
        "[1 2]",
        "{\"a\":tru}",
        "[\"a\tb\"]", /* a raw control character */
        "{\"a\":1} /* c */",
        "\xEF\xBB\xBF{}", /* a byte order mark */
    };
    for (size_t i = 0; i < sizeof handed / sizeof handed[0]; i++) {
        if (!same(handed[i], DECODE))
            fail_msg("case %zu was not handed over: %s", i, handed[i]);
    }
    /* A NUL byte in the text itself, before and after the root. */
    assert_true(same_as_jansson("{\"a\":1}\0", 8, DECODE));
    assert_true(same_as_jansson("{\"a\":\"x\0y\"}", 11, DECODE));
    /* A scalar root without JSON_DECODE_ANY, and a flag jsonr does not take on. */
    assert_true(same("\"top\"", JSON_REJECT_DUPLICATES));
    assert_true(same("{\"a\":\"x\\u0000y\"}", JSON_ALLOW_NUL));
    /* An escaped backslash followed by "uD800" is text, not an escape: yajl reads it. */
    assert_false(same("{\"a\":\"\\\\uD800\"}", DECODE));
}

/* jansson's depth limit: 2,048 levels are read by yajl, 2,049 refused by jansson. */
static void nesting_stops_where_jansson_stops(void **state)
{
    (void)state;
    for (size_t depth = 2047; depth <= 2049; depth++) {
        char *text = malloc(2 * depth + 1);
        assert_non_null(text);
        memset(text, '[', depth);
        memset(text + depth, ']', depth);
        text[2 * depth] = '\0';
        assert_int_equal(same(text, DECODE), depth > 2048);
        free(text);
    }
}

/* Random damage to an event: every byte replaced, removed or doubled in turn, and many
 * random flips; each text read as jansson reads it. */
static void damaged_events_are_read_as_jansson_reads_them(void **state)
{
    (void)state;
    size_t n = sizeof EVENT - 1;
    char *text = malloc(2 * n + 8);
    assert_non_null(text);
    static const char swaps[] = {'"', '\\', '{', '}', '[', ']',  ',',        ':',        ' ', '\v',
                                 'u', '0',  'e', '.', '-', '\0', (char)0xC3, (char)0xED, 'x'};
    size_t fast = 0;
    for (size_t at = 0; at < n; at++) {
        for (size_t k = 0; k < sizeof swaps; k++) {
            memcpy(text, EVENT, n);
            text[at] = swaps[k];
            fast += !same_as_jansson(text, n, DECODE);
        }
        memcpy(text, EVENT, at); /* removed */
        memcpy(text + at, EVENT + at + 1, n - at - 1);
        fast += !same_as_jansson(text, n - 1, DECODE);
        memcpy(text, EVENT, at + 1); /* doubled */
        memcpy(text + at + 1, EVENT + at, n - at);
        fast += !same_as_jansson(text, n + 1, DECODE);
    }
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 3000; round++) {
        memcpy(text, EVENT, n);
        for (int flips = 1 + round % 4; flips > 0; flips--) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            text[x % n] = (char)(x >> 32);
        }
        fast += !same_as_jansson(text, n, DECODE);
    }
    /* Most damage still leaves JSON that yajl reads (a letter in a string changed). */
    assert_true(fast > n);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_event_is_read_without_jansson),
        cmocka_unit_test(what_yajl_cannot_vouch_for_goes_to_jansson),
        cmocka_unit_test(nesting_stops_where_jansson_stops),
        cmocka_unit_test(damaged_events_are_read_as_jansson_reads_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
