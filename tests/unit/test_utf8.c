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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequences_have_their_length),
        cmocka_unit_test(malformed_sequences_are_refused),
        cmocka_unit_test(clean_replaces_each_bad_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
