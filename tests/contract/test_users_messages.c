/* Contract test, both sides of messages.message_sent v1 (tests/contract/events/).
 *
 * Producer: messages_send over sqlite::memory:, as the HTTP layer calls it; every outbox row
 * must decode and conform to the contract (required members and formats, no undeclared
 * member). The examples must validate against their schema AND the producer's own registry
 * (messages_registry), so the two descriptions cannot drift apart.
 * Consumer: every example, byte for byte, into messages_consume (the queue consumer's
 * handler): stored once, a second delivery skipped by the inbox; each required member
 * removed, and an id that is not the message's, is REJECTed, not stored.
 *
 * It links the service's library (hd_svc_users). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

#include "users/messages.h"

#include "contract.h"

typedef struct fixture {
    hd_store *store;
    messages_app *app;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_true(messages_migrate(f->store, &err) >= 0);
    assert_hd_err(HD_OK, messages_app_new(f->store, NULL, NULL, &f->app, &err), &err);
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

static void test_outbox_rows_honour_the_contract(void **state)
{
    fixture *f = *state;
    hd_error err;
    json_t *meta = json_pack("{s:s, s:{s:i}}", "priority", "high", "nested", "n", 1);
    const char *senders[] = {"john@example.com", "zoë"};
    const char *contents[] = {"Hello!", "line one\nline two — ünïcode"};
    for (int i = 0; i < 2; i++)
        assert_hd_err(HD_OK,
                      messages_send(f->app, i == 0 ? "cid-contract" : NULL, senders[i],
                                    strlen(senders[i]), contents[i], strlen(contents[i]),
                                    i == 0 ? meta : NULL, NULL, NULL, &err),
                      &err);
    json_decref(meta);
    hd_rows *rows = NULL;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store, "SELECT type, payload FROM hd_outbox ORDER BY seq", NULL,
                                 0, &rows, &err),
                  &err);
    assert_int_equal(hd_rows_count(rows), 2);
    for (size_t r = 0; r < hd_rows_count(rows); r++) {
        assert_string_equal(hd_rows_text(rows, r, 0), MESSAGES_EVENT_SENT);
        const char *payload = hd_rows_text(rows, r, 1);
        json_t *raw = json_loads(payload, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(raw);
        char why[1024];
        int problems = contract_check_envelope(&contracts, raw, why, sizeof why);
        if (problems != 0)
            print_error("outbox row %zu breaks its contract: %s\n", r + 1, why);
        assert_int_equal(problems, 0);
        /* the message id is the event id */
        assert_string_equal(
            json_string_value(json_object_get(raw, "id")),
            json_string_value(json_object_get(json_object_get(raw, "data"), "message_id")));
        json_decref(raw);
    }
    hd_rows_free(rows);
}

static void test_examples_validate(void **state)
{
    (void)state;
    hd_registry *reg = messages_registry();
    size_t checked = 0;
    assert_int_equal(
        contract_check_examples(&contracts, "messages.", reg, "messages_registry", &checked), 0);
    assert_true(checked >= 2);
    hd_registry_free(reg);
}

/* One delivery of body through the consumer's handler. */
static hd_consume_result deliver(fixture *f, const char *body)
{
    char reason[HD_REASON_MAX] = "";
    hd_delivery d = {.body = body,
                     .body_len = strlen(body),
                     .queue = MESSAGES_CONSUMER,
                     .routing_key = MESSAGES_EVENT_SENT,
                     .attempt = 1,
                     .reason_buf = reason};
    hd_consume_result r = messages_consume(f->app, &d);
    if (r != HD_CONSUME_OK)
        print_message("  -> %s: %s\n", hd_consume_result_name(r), reason);
    return r;
}

static void test_consumer_stores_each_example_once(void **state)
{
    fixture *f = *state;
    hd_error err;
    size_t seen = 0;
    for (size_t i = 0; i < contracts.count; i++) {
        const event_contract *c = &contracts.items[i];
        if (strcmp(c->type, MESSAGES_EVENT_SENT) != 0)
            continue;
        for (size_t e = 0; e < c->n_examples; e++) {
            char *body = json_dumps(c->examples[e].json, JSON_COMPACT);
            assert_int_equal(deliver(f, body), HD_CONSUME_OK);
            assert_int_equal(deliver(f, body), HD_CONSUME_OK); /* a duplicate: skipped */
            free(body);
            seen++;
            const char *id = json_string_value(json_object_get(c->examples[e].json, "id"));
            message_view *v = malloc(sizeof *v);
            assert_hd_err(HD_OK, messages_get(f->app, id, v, &err), &err);
            json_t *data = json_object_get(c->examples[e].json, "data");
            assert_string_equal(v->sender, json_string_value(json_object_get(data, "sender")));
            assert_string_equal(v->content, json_string_value(json_object_get(data, "content")));
            json_t *meta = json_loads(v->metadata, 0, NULL);
            assert_true(json_equal(meta, json_object_get(data, "metadata")));
            json_decref(meta);
            free(v);
        }
    }
    assert_true(seen >= 2);
    assert_int_equal(messages_count(f->app, &err), (int64_t)seen); /* one row per id */
}

static void test_consumer_rejects_broken_events(void **state)
{
    fixture *f = *state;
    hd_error err;
    const event_contract *c = contract_find(&contracts, MESSAGES_EVENT_SENT, 1);
    assert_non_null(c);
    assert_true(c->n_examples > 0);
    const char *required[] = {"message_id", "sender", "content", "metadata", "sent_at"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        json_t *env = json_deep_copy(c->examples[0].json);
        json_object_del(json_object_get(env, "data"), required[i]);
        char *body = json_dumps(env, JSON_COMPACT);
        print_message("without %s\n", required[i]);
        assert_int_equal(deliver(f, body), HD_CONSUME_REJECT);
        free(body);
        json_decref(env);
    }
    /* an event id that is not the message id: not made by messages_send */
    json_t *env = json_deep_copy(c->examples[0].json);
    json_object_set_new(env, "id", json_string("11111111-2222-4333-8444-555555555555"));
    char *body = json_dumps(env, JSON_COMPACT);
    assert_int_equal(deliver(f, body), HD_CONSUME_REJECT);
    free(body);
    json_decref(env);
    /* not JSON at all */
    assert_int_equal(deliver(f, "{not json"), HD_CONSUME_REJECT);
    assert_int_equal(messages_count(f->app, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outbox_rows_honour_the_contract, setup, teardown),
        cmocka_unit_test(test_examples_validate),
        cmocka_unit_test_setup_teardown(test_consumer_stores_each_example_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_rejects_broken_events, setup, teardown),
    };
    return cmocka_run_group_tests_name("users messages contract", tests, contract_suite_setup,
                                       contract_suite_teardown);
}
