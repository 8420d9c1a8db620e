/* Unit tests of the users service's messages feature (users/messages.h) over sqlite::memory:
 * — the field checks (hostile input), send (one outbox row, nothing else), receive through
 * the inbox (duplicates skipped), and the keyset pages, with and without a sender. No broker:
 * receive is fed the envelopes send wrote to the outbox, which is what the relay publishes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "users/messages.h"

typedef struct fixture {
    hd_store *store;
    messages_app *app;
} fixture;

static int64_t fake_now = 1764864000000; /* 2025-12-04: every send moves it 1 ms */

static int64_t fake_clock(void)
{
    return fake_now++;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_true(messages_migrate(f->store, &err) >= 0);
    assert_hd_err(HD_OK, messages_app_new(f->store, "test", fake_clock, &f->app, &err), &err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    messages_app_free(f->app);
    hd_store_close(f->store);
    free(f);
    return 0;
}

static void test_checks_refuse_hostile_input(void **state)
{
    (void)state;
    hd_error err;
    assert_hd(HD_OK, message_sender_check("ada@example.com", 15, &err));
    assert_hd(HD_OK, message_sender_check("zoë", strlen("zoë"), &err));
    assert_hd(HD_EVALIDATE, message_sender_check("", 0, &err));
    assert_hd(HD_EVALIDATE, message_sender_check("a\x01", 2, &err));        /* control */
    assert_hd(HD_EVALIDATE, message_sender_check("a\nb", 3, &err));         /* newline */
    assert_hd(HD_EVALIDATE, message_sender_check("a\0b", 3, &err));         /* NUL inside */
    assert_hd(HD_EVALIDATE, message_sender_check("\xC0\xAF", 2, &err));     /* overlong */
    assert_hd(HD_EVALIDATE, message_sender_check("\xED\xA0\x80", 3, &err)); /* surrogate */
    char big[MESSAGES_CONTENT_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_hd(HD_EVALIDATE, message_sender_check(big, MESSAGES_SENDER_MAX + 1, &err));
    assert_hd(HD_OK, message_content_check(big, MESSAGES_CONTENT_MAX, &err));
    big[MESSAGES_CONTENT_MAX] = '\0';
    assert_hd(HD_OK, message_content_check(big, MESSAGES_CONTENT_MAX, &err));
    big[MESSAGES_CONTENT_MAX] = 'x';
    assert_hd(HD_EVALIDATE, message_content_check(big, MESSAGES_CONTENT_MAX + 1, &err));
    assert_hd(HD_OK, message_content_check("line\nline\ttab", 13, &err));
    assert_hd(HD_EVALIDATE, message_content_check("", 0, &err));
    assert_hd(HD_EVALIDATE, message_content_check("a\0b", 3, &err));
    assert_hd(HD_EVALIDATE, message_content_check("\xFF", 1, &err));

    json_t *ok = json_pack("{s:s, s:{s:[i,i]}}", "a", "b", "c", "d", 1, 2);
    assert_hd(HD_OK, message_metadata_check(ok, &err));
    json_decref(ok);
    json_t *arr = json_array();
    assert_hd(HD_EVALIDATE, message_metadata_check(arr, &err)); /* not an object */
    json_decref(arr);
    json_t *str = json_string("x");
    assert_hd(HD_EVALIDATE, message_metadata_check(str, &err));
    json_decref(str);
    assert_hd(HD_EVALIDATE, message_metadata_check(NULL, &err));
    json_t *deep = json_object(), *cur = deep; /* MESSAGES_METADATA_DEPTH + 1 levels */
    for (int i = 0; i < MESSAGES_METADATA_DEPTH; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "n", next);
        cur = next;
    }
    assert_hd(HD_EVALIDATE, message_metadata_check(deep, &err));
    json_decref(deep);
    json_t *large = json_object();
    big[MESSAGES_CONTENT_MAX] = '\0';
    json_object_set_new(large, "v", json_string(big)); /* 4096 + the key: over the limit */
    assert_hd(HD_EVALIDATE, message_metadata_check(large, &err));
    json_decref(large);
}

/* The outbox rows' payloads, in order (a new array of strings). */
static json_t *outbox_payloads(fixture *f)
{
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store, "SELECT payload FROM hd_outbox ORDER BY seq", NULL, 0,
                                 &rows, &err),
                  &err);
    json_t *arr = json_array();
    for (size_t r = 0; r < hd_rows_count(rows); r++)
        json_array_append_new(arr, json_string(hd_rows_text(rows, r, 0)));
    hd_rows_free(rows);
    return arr;
}

/* Deliver every outbox row to receive, as the relay and the consumer would. */
static int deliver_outbox(fixture *f)
{
    json_t *arr = outbox_payloads(f);
    size_t i;
    json_t *p;
    int stored = 0;
    json_array_foreach(arr, i, p)
    {
        hd_envelope *env = NULL;
        hd_error err;
        hd_registry *reg = messages_registry();
        assert_hd_err(
            HD_OK, hd_envelope_decode(reg, json_string_value(p), json_string_length(p), &env, &err),
            &err);
        int rc = messages_receive(f->app, env, &err);
        assert_true(rc >= 0);
        stored += rc;
        hd_envelope_free(env);
        hd_registry_free(reg);
    }
    json_decref(arr);
    return stored;
}

static void send(fixture *f, const char *sender, const char *content, char id[HD_UUID_LEN + 1])
{
    hd_error err;
    assert_hd_err(HD_OK,
                  messages_send(f->app, "cid", sender, strlen(sender), content, strlen(content),
                                NULL, id, NULL, &err),
                  &err);
}

static void test_send_writes_one_outbox_row_and_nothing_else(void **state)
{
    fixture *f = *state;
    hd_error err;
    char id[HD_UUID_LEN + 1];
    send(f, "ada", "hello", id);
    assert_true(hd_uuid_valid(id));
    json_t *rows = outbox_payloads(f);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    /* not readable before delivery: GET shows what was delivered */
    message_view *v = malloc(sizeof *v);
    assert_hd(HD_ENOTFOUND, messages_get(f->app, id, v, &err));
    /* invalid input writes nothing */
    assert_hd(HD_EVALIDATE, messages_send(f->app, NULL, "", 0, "x", 1, NULL, NULL, NULL, &err));
    json_t *arr = json_array();
    assert_hd(HD_EVALIDATE, messages_send(f->app, NULL, "a", 1, "x", 1, arr, NULL, NULL, &err));
    json_decref(arr);
    rows = outbox_payloads(f);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    /* delivered twice: stored once */
    assert_int_equal(deliver_outbox(f), 1);
    assert_int_equal(deliver_outbox(f), 0);
    assert_int_equal(messages_count(f->app, &err), 1);
    assert_hd_err(HD_OK, messages_get(f->app, id, v, &err), &err);
    assert_string_equal(v->sender, "ada");
    assert_string_equal(v->content, "hello");
    assert_string_equal(v->metadata, "{}");
    assert_string_equal(v->correlation_id, "cid");
    assert_hd(HD_ENOTFOUND, messages_get(f->app, "not-a-uuid", v, &err));
    free(v);
}

static void test_pages_in_send_order_with_and_without_sender(void **state)
{
    fixture *f = *state;
    hd_error err;
    char ids[7][HD_UUID_LEN + 1];
    for (int i = 0; i < 7; i++) {
        char text[16];
        snprintf(text, sizeof text, "m%d", i);
        send(f, i % 2 == 0 ? "even" : "odd", text, ids[i]);
    }
    assert_int_equal(deliver_outbox(f), 7);
    /* everybody's, 3 per page: 3 + 3 + 1 */
    messages_page page;
    char cursor[MESSAGES_CURSOR_MAX] = "";
    int seen = 0, pages = 0;
    do {
        assert_hd_err(HD_OK, messages_list(f->app, NULL, cursor, 3, &page, &err), &err);
        for (size_t i = 0; i < page.count; i++)
            assert_string_equal(page.items[i].id, ids[seen++]);
        snprintf(cursor, sizeof cursor, "%s", page.next_cursor);
        messages_page_release(&page);
        pages++;
    } while (*cursor != '\0');
    assert_int_equal(seen, 7);
    assert_int_equal(pages, 3);
    /* one sender's: m0 m2 m4 m6, 2 per page */
    *cursor = '\0';
    seen = 0;
    do {
        assert_hd_err(HD_OK, messages_list(f->app, "even", cursor, 2, &page, &err), &err);
        for (size_t i = 0; i < page.count; i++) {
            assert_string_equal(page.items[i].sender, "even");
            assert_string_equal(page.items[i].id, ids[2 * seen++]);
        }
        snprintf(cursor, sizeof cursor, "%s", page.next_cursor);
        messages_page_release(&page);
    } while (*cursor != '\0');
    assert_int_equal(seen, 4);
    assert_hd_err(HD_OK, messages_list(f->app, "nobody", NULL, 10, &page, &err), &err);
    assert_int_equal(page.count, 0);
    messages_page_release(&page);
    /* bad arguments */
    assert_hd(HD_ERANGE, messages_list(f->app, NULL, NULL, 0, &page, &err));
    messages_page_release(&page);
    assert_hd(HD_ERANGE, messages_list(f->app, NULL, NULL, MESSAGES_PAGE_MAX + 1, &page, &err));
    messages_page_release(&page);
    const char *bad[] = {"x", "djEuMTIz", "!!!", "djEuOTk5OTk5OTk5OTk5OTk5OTk5OTkuYQ"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_hd(HD_EINVAL, messages_list(f->app, NULL, bad[i], 5, &page, &err));
        messages_page_release(&page);
    }
}

/* Each page reads its own index: a sender's page messages_sender, the whole list
 * messages_sent, both in the order of the page (no sort). One statement for both cases
 * ("$1 = 0 OR sender = $2") read messages_sent for a sender's page too, walking every message
 * after the cursor to find the sender's few. */
static void test_each_page_reads_its_own_index(void **state)
{
    fixture *f = *state;
    static const struct {
        int by_sender;
        const char *reads;
    } want[] = {
        {1, "USING INDEX messages_sender (sender=? AND sent_at>?)"},
        {0, "USING INDEX messages_sent (sent_at>?)"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        hd_value p[] = {hd_value_int(-1), hd_value_text(""), hd_value_int(11), hd_value_text("a")};
        char text[2048];
        hd_conf_plan(f->store, messages_list_sql(want[i].by_sender), p, want[i].by_sender ? 4 : 3,
                     text, sizeof text);
        if (strstr(text, want[i].reads) == NULL || strstr(text, "TEMP B-TREE") != NULL)
            fail_msg("by_sender %d: plan\n%swants \"%s\", no sort", want[i].by_sender, text,
                     want[i].reads);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_refuse_hostile_input),
        cmocka_unit_test_setup_teardown(test_send_writes_one_outbox_row_and_nothing_else, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_each_page_reads_its_own_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pages_in_send_order_with_and_without_sender, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("users messages", tests, NULL, NULL);
}
