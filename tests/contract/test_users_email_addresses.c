/* contract.users_email_addresses — what herald-users accepts as an address, the mail side
 * can mail.
 *
 * A user registers with an address (users: email_parse), the address travels in
 * users.user_registered to the notifications service (notify_email_valid) and ends in an
 * SMTP command and a To: header (sender: hd_mail_validate / hd_mail_format). Before issue 9
 * the users service accepted addresses the sender refused ("a;b@example.com", an address
 * literal, UTF-8): the user got 201 and the verification mail could never go out. All three
 * now ask herald/email.h; this test holds them to one promise from the outside:
 *
 *   for every address: users accepts it  =>  the sender formats and sends a mail to it
 *
 * over a fixed list (the sweep's findings and ordinary addresses) and over some thousands
 * of mutations of it (every printable ASCII byte and a few others inserted or substituted
 * at every position), so that a future rule added on one side only fails here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/email.h"
#include "herald/sender.h"

#include "users/domain.h"

static const char *const accepted[] = {
    "ada@example.com",    "  Ada.Lovelace@Example.COM ", "a+tag@sub.example.co.uk", "x@y.z",
    "o'brien@example.ie", "a_b-c@my-host.example",       "{curly}@example.com",
};

/* The security sweep's list: herald-users answered 201 to each, the mail module refused. */
static const char *const refused[] = {
    "a;b@example.com", "\"q\"@example.com", "x@[127.0.0.1]",    "\xc3\xa9@example.com",
    "a,b@example.com", "ada@localhost",     "a..b@example.com", "ada@exam_ple.com",
};

static hd_sender *sender;
static size_t users_accepted, checked;

/* The promise for one address; returns 1 when users accepted it. */
static int check_one(const char *raw)
{
    email addr;
    checked++;
    if (email_parse(raw, &addr, NULL) < 0)
        return 0;
    users_accepted++;
    if (!hd_mail_address_valid(addr.text))
        fail_msg("users accepts \"%s\" (as \"%s\"), the sender refuses it", raw, addr.text);
    hd_mail m = {
        .to = addr.text, .subject = "Confirm your address", .text = "link", .html = "<p>link</p>"};
    hd_error err;
    char *msg = NULL;
    if (hd_mail_format(&m, "noreply@herald.example", 0, &msg, NULL, &err) < 0)
        fail_msg("users accepts \"%s\", hd_mail_format refuses it: %s", raw, err.text);
    free(msg);
    if (hd_sender_send(sender, &m, &err) < 0)
        fail_msg("users accepts \"%s\", the sender cannot send to it: %s", raw, err.text);
    return 1;
}

static void the_fixed_list(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
        if (!check_one(accepted[i]))
            fail_msg("users refuses \"%s\"", accepted[i]);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (check_one(refused[i]))
            fail_msg("users accepts \"%s\", which cannot be mailed", refused[i]);
        assert_false(hd_mail_address_valid(refused[i]));
    }
}

static void mutations_keep_the_promise(void **state)
{
    (void)state;
    static const char extra[] = {'\t', '\r', '\n', '\x7f', '\x80', '\xc3', '\xff'};
    const char *seeds[] = {"ada@example.com", "a.b@c.example"};
    users_accepted = checked = 0;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        size_t n = strlen(seeds[s]);
        for (int c = 1; c < 256; c++) {
            if (!(c >= 0x20 && c < 0x7f) && memchr(extra, (char)c, sizeof extra) == NULL)
                continue;
            for (size_t pos = 0; pos <= n; pos++) {
                char buf[64];
                /* inserted at pos */
                memcpy(buf, seeds[s], pos);
                buf[pos] = (char)c;
                memcpy(buf + pos + 1, seeds[s] + pos, n - pos + 1);
                check_one(buf);
                /* substituted at pos */
                if (pos < n) {
                    memcpy(buf, seeds[s], n + 1);
                    buf[pos] = (char)c;
                    check_one(buf);
                }
            }
        }
    }
    /* Both outcomes happened: the mutations exercise the rule, not just one side of it. */
    assert_true(users_accepted > 100);
    assert_true(checked - users_accepted > 100);
    print_message("%zu addresses, %zu accepted by users, all mailable\n", checked, users_accepted);
}

int main(void)
{
    if (hd_sender_memory_new(0, &sender) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_fixed_list),
        cmocka_unit_test(mutations_keep_the_promise),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    hd_sender_free(sender);
    return failed;
}
