/* Unit tests for herald/email.h: the one address rule of users, notifications and sender. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/email.h"

static void accepts_ordinary_addresses(void **state)
{
    (void)state;
    const char *good[] = {
        "ada@example.com",         "a.b+tag@sub.example.co.uk", "x@y.z",
        "ADA@EXAMPLE.COM",         "o'brien@example.ie",        "a!#$%&'*+-/=?^_`{|}~@example.com",
        "a@xn--bcher-kva.example", "a@1.2.3.example",           "a@my-host.example",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!hd_email_address_valid(good[i]))
            fail_msg("refused \"%s\": %s", good[i], hd_email_address_problem(good[i]));
        assert_null(hd_email_address_problem(good[i]));
    }
}

/* The addresses the security sweep registered with herald-users that the mail module then
 * refused (the user got 201 and could never verify), and their relatives. */
static void refuses_what_cannot_be_mailed(void **state)
{
    (void)state;
    const struct {
        const char *addr, *reason;
    } bad[] = {
        {"a;b@example.com", "local part may hold only"},
        {"\"q\"@example.com", "local part may hold only"},
        {"x@[127.0.0.1]", "domain may hold only"},
        {"\xc3\xa9@example.com", "ASCII"},
        {"a,b@example.com", "local part may hold only"},
        {"a<b@example.com", "local part may hold only"},
        {"a(b)@example.com", "local part may hold only"},
        {"a\\b@example.com", "local part may hold only"},
        {"a:b@example.com", "local part may hold only"},
        {"ada@exam_ple.com", "domain may hold only"},
        {"", "empty"},
        {"ada.example.com", "exactly one '@'"},
        {"a@b@example.com", "exactly one '@'"},
        {"@example.com", "local part (before '@') is empty"},
        {".ada@example.com", "start or end with a dot"},
        {"ada.@example.com", "start or end with a dot"},
        {"a..b@example.com", "two dots"},
        {"ada@", "domain part is empty"},
        {"ada@localhost", "dot"},
        {"ada@.example.com", "start or end"},
        {"ada@example.com.", "start or end"},
        {"ada@example..com", "empty label"},
        {"ada@-example.com", "'-'"},
        {"ada@example-.com", "'-'"},
        {"ada lovelace@example.com", "spaces"},
        {"ada@example.com\r\nBcc: eve@example.com", "control"},
        {"ada@exa\x7fmple.com", "control"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = hd_email_address_problem(bad[i].addr);
        if (why == NULL)
            fail_msg("accepted \"%s\"", bad[i].addr);
        if (strstr(why, bad[i].reason) == NULL)
            fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", bad[i].addr, why, bad[i].reason);
        assert_false(hd_email_address_valid(bad[i].addr));
    }
    assert_false(hd_email_address_valid(NULL));
    assert_non_null(hd_email_address_problem(NULL));
}

static void lengths(void **state)
{
    (void)state;
    char buf[400];
    memset(buf, 'a', 64);
    strcpy(buf + 64, "@example.com");
    assert_true(hd_email_address_valid(buf));
    memset(buf, 'a', 65);
    strcpy(buf + 65, "@example.com");
    assert_false(hd_email_address_valid(buf));
    /* 254 bytes in all is the limit */
    strcpy(buf, "a@");
    memset(buf + 2, 'd', 248);
    strcpy(buf + 250, ".com");
    assert_int_equal(strlen(buf), HD_EMAIL_ADDRESS_MAX);
    assert_true(hd_email_address_valid(buf));
    strcpy(buf + 250, ".comx");
    assert_string_equal(hd_email_address_problem(buf), "must be at most 254 characters");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_ordinary_addresses),
        cmocka_unit_test(refuses_what_cannot_be_mailed),
        cmocka_unit_test(lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
