/* Unit tests for herald/error.h: codes, names, messages and reports. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/error.h"

static void every_code_has_a_name_and_message(void **state)
{
    (void)state;
    for (int code = -1; code >= HD_EPROTO; code--) {
        assert_string_not_equal(hd_err_name(code), "HD_E?");
        assert_string_not_equal(hd_strerror(code), "unknown error");
    }
    assert_string_equal(hd_err_name(HD_OK), "HD_OK");
    assert_string_equal(hd_err_name(HD_EJSON), "HD_EJSON");
    assert_string_equal(hd_strerror(-9999), "unknown error");
    assert_string_equal(hd_err_name(-9999), "HD_E?");
}

static void error_set_formats_and_returns_the_code(void **state)
{
    (void)state;
    hd_error err;
    hd_error_clear(&err);
    assert_int_equal(err.code, HD_OK);
    assert_hd(HD_EMISSING, hd_error_set(&err, HD_EMISSING, "attribute '%s' is missing", "id"));
    assert_int_equal(err.code, HD_EMISSING);
    assert_string_equal(err.text, "attribute 'id' is missing");
    assert_hd(HD_ETIMEOUT, hd_error_set(&err, HD_ETIMEOUT, NULL));
    assert_string_equal(err.text, "timed out");
    assert_hd(HD_EINVAL, hd_error_set(NULL, HD_EINVAL, "ignored"));
}

static void long_texts_are_truncated(void **state)
{
    (void)state;
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    hd_error err;
    hd_error_set(&err, HD_ETOOBIG, "%s", big);
    assert_int_equal(strlen(err.text), HD_ERROR_TEXT_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_a_name_and_message),
        cmocka_unit_test(error_set_formats_and_returns_the_code),
        cmocka_unit_test(long_texts_are_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
