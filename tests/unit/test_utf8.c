/* test_utf8.c — the one UTF-8 decoder of the HTTP router, the metrics registry and the log. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "herald/utf8.h"

static void sequences_have_their_length(void **state)
{
    (void)state;
    assert_int_equal(hd_utf8_seq((const unsigned char *)"a"), 1);
    assert_int_equal(hd_utf8_seq((const unsigned char *)"\xC3\xA9"), 2);         /* é */
    assert_int_equal(hd_utf8_seq((const unsigned char *)"\xE2\x82\xAC"), 3);     /* € */
    assert_int_equal(hd_utf8_seq((const unsigned char *)"\xF0\x9F\x93\xA8"), 4); /* 📨 */
}

static void malformed_sequences_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "\x80",             /* a continuation byte alone */
        "\xC0\xAF",         /* overlong '/' */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\xAF",     /* overlong 3-byte */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xF0\x80\x80\xAF", /* overlong 4-byte */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xF5\x80\x80\x80", /* not a lead byte */
        "\xC3",             /* cut short by the NUL */
        "\xE2\x82",         /* cut short by the NUL */
        "\xFF",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(hd_utf8_seq((const unsigned char *)bad[i]), 0);
        assert_false(hd_utf8_valid(bad[i]));
    }
    assert_true(hd_utf8_valid(""));
    assert_true(hd_utf8_valid("plain /users/\xC3\xA9t\xC3\xA9 \xF0\x9F\x93\xA8"));
}

static void clean_replaces_each_bad_byte(void **state)
{
    (void)state;
    char *c = hd_utf8_clean("a\xFF"
                            "b\xC3\xA9\xC0\xAF",
                            "\xEF\xBF\xBD");
    assert_non_null(c);
    assert_string_equal(c, "a\xEF\xBF\xBD"
                           "b\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_true(hd_utf8_valid(c));
    free(c);
    c = hd_utf8_clean("\xFF\xFE", "?");
    assert_string_equal(c, "??");
    free(c);
    c = hd_utf8_clean("fine", "?");
    assert_string_equal(c, "fine");
    free(c);
}

/* The counted form agrees with hd_utf8_valid on text without a NUL, takes a NUL as U+0000,
 * and refuses a sequence that the end of the range cuts, whatever bytes follow in memory
 * (valgrind and ASan would see a read past an exact-size buffer). */
static void counted_form_stops_at_its_length(void **state)
{
    (void)state;
    const char *samples[] = {
        "",     "plain",    "\xC3\xA9t\xC3\xA9", "\xE2\x82\xAC",     "\xF0\x9F\x93\xA8!",
        "\x80", "\xC0\xAF", "\xED\xA0\x80",      "\xF4\x90\x80\x80", "a\xFF"};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        assert_int_equal(hd_utf8_valid_n(samples[i], strlen(samples[i])),
                         hd_utf8_valid(samples[i]));
    assert_true(hd_utf8_valid_n("a\0b", 3));
    /* é whose second byte lies just past the range: refused, not read. */
    const char *cut[] = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x93\xA8"};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        size_t n = strlen(cut[i]);
        for (size_t keep = 1; keep < n; keep++) {
            char *exact = malloc(keep); /* exactly keep bytes: a read past them is caught */
            assert_non_null(exact);
            memcpy(exact, cut[i], keep);
            assert_false(hd_utf8_valid_n(exact, keep));
            free(exact);
        }
        assert_true(hd_utf8_valid_n(cut[i], n));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequences_have_their_length),
        cmocka_unit_test(malformed_sequences_are_refused),
        cmocka_unit_test(clean_replaces_each_bad_byte),
        cmocka_unit_test(counted_form_stops_at_its_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
