/* Unit tests for the users service's domain (src/services/users/domain.c): the Email value
 * object, the password policy, names, and the events the User aggregate raises.
 *
 * It links the service's static library (hd_svc_users), from which the linker takes
 * domain.o alone: the domain includes no infrastructure header, so this program needs no
 * database, no broker and no crypto: that is the point of keeping the domain pure. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

#include "users/domain.h"

/* ---- Email -------------------------------------------------------------------------------- */

static void assert_email(const char *raw, const char *expected)
{
    email e;
    hd_error err;
    hd_error_clear(&err);
    int rc = email_parse(raw, &e, &err);
    if (rc != 0)
        fail_msg("email_parse(\"%s\") = %s: %s", raw, hd_err_name(rc), err.text);
    assert_string_equal(e.text, expected);
}

static void assert_bad_email(const char *raw, const char *reason)
{
    email e;
    strcpy(e.text, "untouched");
    hd_error err;
    hd_error_clear(&err);
    int rc = email_parse(raw, &e, &err);
    if (rc != HD_EVALIDATE)
        fail_msg("email_parse(\"%s\") = %s, expected HD_EVALIDATE", raw, hd_err_name(rc));
    if (strstr(err.text, reason) == NULL)
        fail_msg("email_parse(\"%s\"): reason \"%s\" lacks \"%s\"", raw, err.text, reason);
    assert_string_equal(e.text, "untouched"); /* *out untouched on failure */
}

static void test_email_valid_and_normalised(void **state)
{
    (void)state;
    assert_email("ada@example.com", "ada@example.com");
    assert_email("  Ada.Lovelace@Example.COM \t\n", "ada.lovelace@example.com");
    assert_email("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk");
    assert_email("x@y.z", "x@y.z");
}

static void test_email_invalid(void **state)
{
    (void)state;
    assert_bad_email("", "empty");
    assert_bad_email("   ", "empty");
    assert_bad_email("ada.example.com", "exactly one '@'");
    assert_bad_email("ada@@example.com", "exactly one '@'");
    assert_bad_email("a@b@example.com", "exactly one '@'");
    assert_bad_email("@example.com", "local part");
    assert_bad_email("ada@", "domain part is empty");
    assert_bad_email("ada@localhost", "dot");
    assert_bad_email("ada@.example.com", "start or end");
    assert_bad_email("ada@example.com.", "start or end");
    assert_bad_email("ada@example..com", "empty label");
    assert_bad_email("ada lovelace@example.com", "spaces");
    assert_bad_email("ada\t@example.com", "control");
    assert_bad_email("ada@exa\x01mple.com", "control");
    assert_bad_email("ada@example.com\x7f", "control");
    assert_bad_email("ada\r\nBcc: eve@example.com", "control");
    /* Registered but never mailable before herald/email.h was shared (issue 9): the
     * sender refuses them, so the user could never receive the verification link. An
     * internationalised address (UTF-8 "é") is one of them: no SMTPUTF8. */
    assert_bad_email("JOS\xc3\x89@EXAMPLE.COM", "ASCII");
    assert_bad_email("a;b@example.com", "local part");
    assert_bad_email("\"q\"@example.com", "local part");
    assert_bad_email("x@[127.0.0.1]", "domain");
    assert_bad_email("\xc3\xa9@example.com", "ASCII");
    assert_bad_email("a,b@example.com", "local part");
}

static void test_email_lengths(void **state)
{
    (void)state;
    char buf[400];
    /* local part: 64 is the limit */
    memset(buf, 'a', 64);
    strcpy(buf + 64, "@example.com");
    assert_email(buf, buf);
    memset(buf, 'a', 65);
    strcpy(buf + 65, "@example.com");
    assert_bad_email(buf, "local part must be at most 64");
    /* whole address: 254 is the limit ("a@" + domain of 252 = 254) */
    strcpy(buf, "a@");
    memset(buf + 2, 'd', 248);
    strcpy(buf + 250, ".com");
    assert_int_equal(strlen(buf), 254);
    assert_email(buf, buf);
    strcpy(buf + 250, ".comx");
    assert_bad_email(buf, "at most 254");
    /* surrounding blanks do not count */
    char padded[400];
    snprintf(padded, sizeof padded, "   %.254s   ", "ada@example.com");
    assert_email(padded, "ada@example.com");
}

static void test_email_null(void **state)
{
    (void)state;
    email e;
    assert_hd(HD_EINVAL, email_parse(NULL, &e, NULL));
    assert_hd(HD_EINVAL, email_parse("a@b.c", NULL, NULL));
}

/* ---- password and name ---------------------------------------------------------------------- */

static int check_pw(const char *pw)
{
    hd_error err;
    hd_error_clear(&err);
    int rc = password_check(pw, strlen(pw), &err);
    /* The reason never quotes the password. */
    if (rc < 0 && strlen(pw) > 0)
        assert_null(strstr(err.text, pw));
    return rc;
}

static void test_password_policy(void **state)
{
    (void)state;
    char buf[600];
    assert_hd(HD_EVALIDATE, check_pw(""));
    assert_hd(HD_EVALIDATE, check_pw("1234567"));
    assert_hd(HD_OK, check_pw("12345678"));
    assert_hd(HD_OK, check_pw("  spaces count  "));
    memset(buf, 'x', 128);
    buf[128] = '\0';
    assert_hd(HD_OK, check_pw(buf));
    buf[128] = 'x';
    buf[129] = '\0';
    assert_hd(HD_EVALIDATE, check_pw(buf));
    /* Characters, not bytes: seven "é" are 14 bytes and still too short; 128 of them
     * (256 bytes) are within the policy. */
    assert_hd(HD_EVALIDATE, check_pw("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"));
    assert_hd(HD_OK, check_pw("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"));
    for (int i = 0; i < 128; i++)
        memcpy(buf + 2 * i, "\xc3\xa9", 2);
    buf[256] = '\0';
    assert_hd(HD_OK, check_pw(buf));
    /* A NUL inside (possible in JSON: "\u0000") is refused, not silently cut. */
    hd_error err;
    assert_hd(HD_EVALIDATE, password_check("abcd\0efghijk", 12, &err));
    assert_non_null(strstr(err.text, "NUL"));
    assert_hd(HD_EINVAL, password_check(NULL, 0, NULL));
}

static void test_name_parse(void **state)
{
    (void)state;
    char out[USER_NAME_BYTES_MAX + 1];
    char buf[600];
    assert_hd(HD_OK, name_parse(NULL, out, NULL));
    assert_string_equal(out, "");
    assert_hd(HD_OK, name_parse("  Ada Lovelace \n", out, NULL));
    assert_string_equal(out, "Ada Lovelace");
    memset(buf, 'n', USER_NAME_MAX);
    buf[USER_NAME_MAX] = '\0';
    assert_hd(HD_OK, name_parse(buf, out, NULL));
    buf[USER_NAME_MAX] = 'n';
    buf[USER_NAME_MAX + 1] = '\0';
    assert_hd(HD_EVALIDATE, name_parse(buf, out, NULL));
    for (int i = 0; i < USER_NAME_MAX; i++) /* 100 four-byte characters: 400 bytes */
        memcpy(buf + 4 * i, "\xf0\x9f\x98\x80", 4);
    buf[4 * USER_NAME_MAX] = '\0';
    assert_hd(HD_OK, name_parse(buf, out, NULL));
    assert_hd(HD_EVALIDATE, name_parse("Ada\r\nX-Header: evil", out, NULL));
    assert_hd(HD_EINVAL, name_parse("x", NULL, NULL));
}

/* ---- the aggregate -------------------------------------------------------------------------- */

#define HASH  "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA"
#define TOKEN "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void new_user(user *u)
{
    email e;
    assert_hd(HD_OK, email_parse("Ada@Example.com", &e, NULL));
    hd_error err;
    assert_hd_err(HD_OK, user_register(u, &e, "Ada", HASH, TOKEN, 1000, &err), &err);
}

/* Take the pending events; exactly `expected` of them. */
static void take(user *u, hd_event_list *l, size_t expected)
{
    hd_event_list_init(l);
    assert_int_equal(hd_aggregate_take_events(&u->base, l), (int)expected);
}

static const char *field(const hd_event *ev, const char *name)
{
    return json_string_value(json_object_get(hd_event_payload(ev), name));
}

static void test_register_raises_registered(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    assert_true(hd_uuid_valid(user_id(&u)));
    assert_string_equal(u.email.text, "ada@example.com");
    assert_false(u.verified);
    assert_int_equal(u.created_at_ms, 1000);
    assert_int_equal(hd_aggregate_version(&u.base), 1);
    hd_event_list l;
    take(&u, &l, 1);
    const hd_event *ev = l.items[0];
    assert_string_equal(hd_event_type(ev), USER_REGISTERED);
    assert_string_equal(hd_event_aggregate_type(ev), "user");
    assert_string_equal(hd_event_aggregate_id(ev), user_id(&u));
    assert_string_equal(field(ev, "user_id"), user_id(&u));
    assert_string_equal(field(ev, "email"), "ada@example.com");
    assert_string_equal(field(ev, "name"), "Ada");
    assert_string_equal(field(ev, "verification_token"), TOKEN);
    /* Never the hash (let alone the password) in an event. */
    char *text = json_dumps(hd_event_payload(ev), 0);
    assert_null(strstr(text, "argon2"));
    free(text);
    hd_event_list_release(&l);
    user_release(&u);
    user_release(&u); /* twice is fine */
}

static void test_register_refuses_missing_parts(void **state)
{
    (void)state;
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    user u;
    assert_hd(HD_EINVAL, user_register(&u, &e, "Ada", "", TOKEN, 1, NULL));
    assert_hd(HD_EINVAL, user_register(&u, &e, "Ada", HASH, "", 1, NULL));
    assert_hd(HD_EINVAL, user_register(&u, NULL, "Ada", HASH, TOKEN, 1, NULL));
    assert_hd(HD_EINVAL, user_register(&u, &e, NULL, HASH, TOKEN, 1, NULL));
}

static void test_verify_once(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    hd_aggregate_discard_events(&u.base);
    hd_error err;
    assert_hd_err(HD_OK, user_verify(&u, 2000, &err), &err);
    assert_true(u.verified);
    assert_int_equal(u.updated_at_ms, 2000);
    hd_event_list l;
    take(&u, &l, 1);
    assert_string_equal(hd_event_type(l.items[0]), USER_VERIFIED);
    assert_string_equal(field(l.items[0], "email"), "ada@example.com");
    hd_event_list_release(&l);
    assert_hd(HD_ESTATE, user_verify(&u, 3000, &err));
    assert_non_null(strstr(err.text, "already verified"));
    assert_int_equal(hd_aggregate_pending(&u.base), 0);
    user_release(&u);
}

static void test_rename(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    hd_aggregate_discard_events(&u.base);
    assert_int_equal(user_rename(&u, "Ada", 2000, NULL), 0); /* same name: nothing happened */
    assert_int_equal(hd_aggregate_pending(&u.base), 0);
    assert_int_equal(user_rename(&u, "Countess of Lovelace", 3000, NULL), 1);
    assert_string_equal(u.name, "Countess of Lovelace");
    hd_event_list l;
    take(&u, &l, 1);
    assert_string_equal(hd_event_type(l.items[0]), USER_UPDATED);
    assert_string_equal(field(l.items[0], "name"), "Countess of Lovelace");
    assert_string_equal(field(l.items[0], "previous_name"), "Ada");
    hd_event_list_release(&l);
    user_release(&u);
}

static void test_password_reset_request(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    hd_aggregate_discard_events(&u.base);
    assert_hd(HD_EINVAL, user_request_password_reset(&u, "", 2000, NULL));
    assert_hd(HD_OK, user_request_password_reset(&u, TOKEN, 2000, NULL));
    hd_event_list l;
    take(&u, &l, 1);
    assert_string_equal(hd_event_type(l.items[0]), USER_PASSWORD_RESET_REQUESTED);
    assert_string_equal(field(l.items[0], "reset_token"), TOKEN);
    assert_string_equal(field(l.items[0], "name"), "Ada");
    hd_event_list_release(&l);
    assert_false(u.verified); /* a request changes nothing */
    user_release(&u);
}

static void test_change_password(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    hd_aggregate_discard_events(&u.base);
    assert_hd(HD_EINVAL, user_change_password(&u, "", 2000, NULL));
    assert_hd(HD_OK, user_change_password(&u, "$argon2id$new", 2000, NULL));
    assert_string_equal(u.password_hash, "$argon2id$new");
    assert_int_equal(u.updated_at_ms, 2000);
    hd_event_list l;
    take(&u, &l, 1);
    assert_string_equal(hd_event_type(l.items[0]), USER_PASSWORD_CHANGED);
    assert_int_equal(json_object_size(hd_event_payload(l.items[0])), 1); /* the id, no hash */
    hd_event_list_release(&l);
    user_release(&u);
}

static void test_delete_is_final(void **state)
{
    (void)state;
    user u;
    new_user(&u);
    hd_aggregate_discard_events(&u.base);
    assert_hd(HD_OK, user_delete(&u, 2000, NULL));
    hd_event_list l;
    take(&u, &l, 1);
    assert_string_equal(hd_event_type(l.items[0]), USER_DELETED);
    assert_string_equal(field(l.items[0], "user_id"), user_id(&u));
    hd_event_list_release(&l);
    hd_error err;
    assert_hd(HD_ESTATE, user_delete(&u, 3000, &err));
    assert_hd(HD_ESTATE, user_verify(&u, 3000, &err));
    assert_hd(HD_ESTATE, user_rename(&u, "Eve", 3000, &err));
    assert_hd(HD_ESTATE, user_change_password(&u, HASH, 3000, &err));
    assert_hd(HD_ESTATE, user_request_password_reset(&u, TOKEN, 3000, &err));
    assert_non_null(strstr(err.text, "deleted"));
    assert_int_equal(hd_aggregate_pending(&u.base), 0);
    user_release(&u);
}

static void test_load_raises_nothing(void **state)
{
    (void)state;
    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    user u;
    assert_hd(HD_OK, user_load(&u, "8c0b7e1e-1f7a-4f43-9d0e-3a1b2c3d4e5f", 7, &e, "Ada", HASH, 1,
                               100, 200));
    assert_string_equal(user_id(&u), "8c0b7e1e-1f7a-4f43-9d0e-3a1b2c3d4e5f");
    assert_int_equal(hd_aggregate_version(&u.base), 7);
    assert_int_equal(hd_aggregate_pending(&u.base), 0);
    assert_true(u.verified);
    /* The next event numbers on from the stored version (optimistic locking). */
    assert_int_equal(user_rename(&u, "Ada L.", 300, NULL), 1);
    assert_int_equal(hd_aggregate_version(&u.base), 8);
    user_release(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_valid_and_normalised),
        cmocka_unit_test(test_email_invalid),
        cmocka_unit_test(test_email_lengths),
        cmocka_unit_test(test_email_null),
        cmocka_unit_test(test_password_policy),
        cmocka_unit_test(test_name_parse),
        cmocka_unit_test(test_register_raises_registered),
        cmocka_unit_test(test_register_refuses_missing_parts),
        cmocka_unit_test(test_verify_once),
        cmocka_unit_test(test_rename),
        cmocka_unit_test(test_password_reset_request),
        cmocka_unit_test(test_change_password),
        cmocka_unit_test(test_delete_is_final),
        cmocka_unit_test(test_load_raises_nothing),
    };
    return cmocka_run_group_tests_name("users domain", tests, NULL, NULL);
}
