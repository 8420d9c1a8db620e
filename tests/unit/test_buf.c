/* Unit tests for herald/buf.h: the growable string. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/buf.h"

static void appends_concatenate_and_take_hands_over(void **state)
{
    (void)state;
    hd_buf b = HD_BUF_INIT;
    hd_buf_puts(&b, "Subject: ");
    hd_buf_printf(&b, "%d new %s", 3, "messages");
    hd_buf_add(&b, "\r\nXYZ", 2);
    assert_int_equal(b.len, strlen("Subject: 3 new messages\r\n"));
    char *s = hd_buf_take(&b);
    assert_string_equal(s, "Subject: 3 new messages\r\n");
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    free(s);
}

static void empty_buffer_takes_as_empty_string(void **state)
{
    (void)state;
    hd_buf b = HD_BUF_INIT;
    char *s = hd_buf_take(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);
}

static void grows_past_many_doublings_and_long_formats(void **state)
{
    (void)state;
    hd_buf b = HD_BUF_INIT;
    for (int i = 0; i < 10000; i++)
        hd_buf_add(&b, "0123456789", 10);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap > b.len);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    hd_buf_printf(&b, "[%s]", big); /* longer than any fixed scratch buffer */
    assert_int_equal(b.len, 100000 + 2 + sizeof big - 1);
    assert_int_equal(b.p[b.len - 1], ']');
    assert_int_equal(b.p[b.len], '\0');
    hd_buf_release(&b);
    assert_null(b.p);
}

static void out_of_memory_is_sticky_and_take_returns_null(void **state)
{
    (void)state;
    hd_buf b = HD_BUF_INIT;
    hd_buf_puts(&b, "before");
    hd_buf_add(&b, "x", (size_t)-1 / 2); /* cannot be satisfied */
    assert_true(b.oom);
    hd_buf_puts(&b, "after"); /* ignored */
    assert_int_equal(b.len, 6);
    assert_null(hd_buf_take(&b));
    assert_false(b.oom); /* reset for reuse */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(appends_concatenate_and_take_hands_over),
        cmocka_unit_test(empty_buffer_takes_as_empty_string),
        cmocka_unit_test(grows_past_many_doublings_and_long_formats),
        cmocka_unit_test(out_of_memory_is_sticky_and_take_returns_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
