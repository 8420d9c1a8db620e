/* Contract test, producer side: does the notifications service write what its contracts
 * promise?
 *
 * The notifications service emits notifications.notification_sent and
 * notifications.notification_failed through its own outbox. This test makes it do both —
 * the users contracts' examples fed to its consumer handler, a mail asked for through its
 * API, the in-memory sender succeeding, then failing every send (hd_sender_memory_new(-1))
 * until the attempts run out — and reads back what it ACTUALLY wrote to its outbox. Each
 * row must:
 *   - decode as CloudEvents (hd_envelope_decode, no registry: structure only);
 *   - conform to the contract of its own (type, schemaversion)
 *     (tests/contract/events/notifications.<event>/v<N>/schema.json);
 *   - carry the flow: a mail caused by a users event has that event's id as causationid
 *     and its correlationid.
 * And: every example of a notifications.* contract validates against its own schema and is
 * accepted by the producer's own registry (notif_emitted_registry); the event types the
 * service emits are exactly the notifications.* contracts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

#include "notifications/application.h"
#include "notifications/domain.h"
#include "notifications/integration.h"
#include "notifications/repository.h"
#include "notifications/templates.h"

#include "contract.h"

#define PRODUCER_PREFIX "notifications."
#define MAX_ATTEMPTS    3

/* The users events that ask for a mail, whose examples drive the service. */
static const char *const mail_events[] = {
    "users.user_registered",
    "users.user_verified",
    "users.password_reset_requested",
};

/* ---- fixture: the application, a fresh database and a memory sender ---------------------- */

typedef struct fixture {
    hd_store *store;
    hd_templates *templates;
    hd_sender *sender;
    FILE *log_out;
    hd_logger *lg;
    notif_app *app;
    notif_worker w;
} fixture;

/* fail_times: as hd_sender_memory_new (0: every send succeeds; -1: every send fails). */
static fixture *fixture_new(int fail_times)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(0, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_hd_err(0, notif_app_migrate(f->store, &err), &err);
    assert_hd_err(0, notif_templates_open(HD_SOURCE_DIR "/templates", &f->templates, &err), &err);
    assert_hd(0, hd_sender_memory_new(fail_times, &f->sender));
    f->log_out = tmpfile();
    f->lg = hd_logger_new("notifications", HD_LOG_DEBUG, f->log_out);
    notif_settings s = {.mail_from = "noreply@herald.example",
                        .max_attempts = MAX_ATTEMPTS,
                        .backoff_base_ms = -1}; /* retries due at once: no sleeping */
    assert_hd_err(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, &err), &err);
    notif_worker_init(&f->w, f->app, f->store, f->sender);
    return f;
}

static void fixture_free(fixture *f)
{
    notif_app_free(f->app);
    hd_logger_free(f->lg);
    fclose(f->log_out);
    hd_sender_free(f->sender);
    hd_templates_close(f->templates);
    hd_store_close(f->store);
    free(f);
}

/* ---- driving the service ------------------------------------------------------------------ */

/* Hand envelope (borrowed) to the consumer's handler as the broker consumer would. */
static void consume_example(fixture *f, const json_t *envelope)
{
    char *body = json_dumps(envelope, JSON_COMPACT | JSON_SORT_KEYS);
    char reason[HD_REASON_MAX] = "";
    hd_delivery d = {
        .body = body,
        .body_len = strlen(body),
        .queue = "notifications.users",
        .exchange = "users",
        .routing_key = json_string_value(json_object_get(envelope, "type")),
        .message_id = json_string_value(json_object_get(envelope, "id")),
        .correlation_id = json_string_value(json_object_get(envelope, "correlationid")),
        .attempt = 1,
        .reason_buf = reason,
    };
    hd_consume_result r = notif_handle_delivery(&f->w, &d);
    if (r != HD_CONSUME_OK)
        fail_msg("%s %s: verdict %s (%s)", d.routing_key, d.message_id, hd_consume_result_name(r),
                 reason);
    free(body);
}

/* Every mail example of the users contracts, then a security alert through the API (the
 * HTTP layer always gives a correlation id), then the sweeper until nothing is due: with a
 * failing sender that is every retry, up to the last attempt. */
static void run_every_path(fixture *f)
{
    for (size_t i = 0; i < sizeof mail_events / sizeof mail_events[0]; i++) {
        const event_contract *c = contract_find(&contracts, mail_events[i], USERS_EVENT_VERSION);
        if (c == NULL || c->n_examples == 0)
            fail_msg("no example of %s v%d to drive the service with", mail_events[i],
                     USERS_EVENT_VERSION);
        for (size_t e = 0; e < c->n_examples; e++)
            consume_example(f, c->examples[e].json);
    }
    json_t *vars = json_pack("{s:s, s:s, s:s}", "name", "Ada Lovelace", "event",
                             "sign-in from a new device", "time", "2026-11-23T04:35:12Z");
    notif_request req = {.user_id = "27c55631-d860-40c0-a8e7-c94b1b805ca3",
                         .type = "security_alert",
                         .recipient = "ada@example.com",
                         .variables = vars,
                         .correlation_id = "api-request-77d1"};
    notification n;
    hd_error err;
    assert_int_equal(notif_request_send(&f->w, &req, &n, &err), 1);
    notification_release(&n);
    json_decref(vars);
    int claimed;
    while ((claimed = notif_sweep(&f->w, 0, 100, &err)) > 0)
        ;
    assert_hd_err(0, claimed, &err);
}

/* The users example whose id is id, or NULL. */
static const json_t *users_example(const char *id)
{
    for (size_t i = 0; id != NULL && i < contracts.count; i++)
        for (size_t e = 0; e < contracts.items[i].n_examples; e++) {
            const json_t *ex = contracts.items[i].examples[e].json;
            const char *ex_id = json_string_value(json_object_get(ex, "id"));
            if (ex_id != NULL && strcmp(ex_id, id) == 0)
                return ex;
        }
    return NULL;
}

/* Check every outbox row against its contract; *n_rows receives how many there were, and
 * types (when not NULL) the distinct types seen, as a JSON object used as a set. Returns
 * the number of rows that break their contract. */
static int check_outbox(fixture *f, size_t *n_rows, json_t *types)
{
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(0,
                  hd_store_query(f->store, "SELECT type, payload FROM hd_outbox ORDER BY seq", NULL,
                                 0, &rows, &err),
                  &err);
    int broken = 0;
    *n_rows = hd_rows_count(rows);
    for (size_t r = 0; r < *n_rows; r++) {
        const char *payload = hd_rows_text(rows, r, 1);
        hd_envelope *env = NULL;
        assert_hd_err(HD_OK, hd_envelope_decode(NULL, payload, strlen(payload), &env, &err), &err);
        assert_string_equal(hd_envelope_type(env), hd_rows_text(rows, r, 0));
        json_t *raw = json_loads(payload, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(raw);
        char why[2048];
        int problems = contract_check_envelope(&contracts, raw, why, sizeof why);
        if (problems > 0) {
            print_error("outbox row %zu, %s v%d, breaks its contract (%d problem%s): %s\n", r + 1,
                        hd_envelope_type(env), hd_envelope_version(env), problems,
                        problems > 1 ? "s" : "", why);
            broken++;
        }
        /* The flow: caused by a users event -> its id and its correlation id. */
        const json_t *cause = users_example(hd_envelope_causation_id(env));
        if (cause != NULL) {
            assert_string_equal(hd_envelope_correlation_id(env),
                                json_string_value(json_object_get(cause, "correlationid")));
        } else {
            assert_string_equal(hd_envelope_correlation_id(env), "api-request-77d1");
        }
        if (types != NULL)
            json_object_set_new(types, hd_envelope_type(env), json_true());
        json_decref(raw);
        hd_envelope_free(env);
    }
    hd_rows_free(rows);
    return broken;
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void test_notification_sent_honours_its_contract(void **state)
{
    (void)state;
    fixture *f = fixture_new(0);
    run_every_path(f);
    size_t n;
    json_t *types = json_object();
    assert_int_equal(check_outbox(f, &n, types), 0);
    assert_int_equal(n, hd_sender_memory_count(f->sender)); /* one event per mail */
    assert_int_equal(json_object_size(types), 1);
    assert_non_null(json_object_get(types, NOTIFICATIONS_EVENT_SENT));
    print_message("%zu notification_sent rows conform\n", n);
    json_decref(types);
    fixture_free(f);
}

static void test_notification_failed_honours_its_contract(void **state)
{
    (void)state;
    fixture *f = fixture_new(-1); /* every send fails */
    run_every_path(f);
    size_t n;
    json_t *types = json_object();
    assert_int_equal(check_outbox(f, &n, types), 0);
    assert_int_equal(hd_sender_memory_count(f->sender), 0);
    assert_int_equal(hd_sender_memory_attempts(f->sender), n * MAX_ATTEMPTS);
    assert_int_equal(json_object_size(types), 1);
    assert_non_null(json_object_get(types, NOTIFICATIONS_EVENT_FAILED));
    print_message("%zu notification_failed rows conform\n", n);
    json_decref(types);
    fixture_free(f);
}

static void test_examples_validate_against_their_own_schema(void **state)
{
    (void)state;
    hd_registry *producer = notif_emitted_registry();
    assert_non_null(producer);
    size_t checked = 0;
    int broken = contract_check_examples(&contracts, PRODUCER_PREFIX, producer,
                                         "notif_emitted_registry", &checked);
    hd_registry_free(producer);
    assert_true(checked >= 2);
    assert_int_equal(broken, 0);
}

static void test_emitted_types_are_exactly_the_contracts(void **state)
{
    (void)state;
    /* Both outcomes: once with a sender that works, once with one that never does. */
    json_t *emitted = json_object();
    for (int fail = 0; fail <= 1; fail++) {
        fixture *f = fixture_new(fail ? -1 : 0);
        run_every_path(f);
        size_t n;
        check_outbox(f, &n, emitted);
        fixture_free(f);
    }
    int broken = 0;
    const char *type;
    json_t *seen;
    json_object_foreach(emitted, type, seen)
    {
        int found = 0;
        for (size_t i = 0; i < contracts.count; i++)
            found |= strcmp(contracts.items[i].type, type) == 0;
        if (!found) {
            print_error("notifications emits %s, which has no contract: add "
                        "tests/contract/events/%s/v1/ and a line in docs/contracts/events.md\n",
                        type, type);
            broken++;
        }
    }
    for (size_t i = 0; i < contracts.count; i++) {
        const char *ctype = contracts.items[i].type;
        if (strncmp(ctype, PRODUCER_PREFIX, strlen(PRODUCER_PREFIX)) == 0 &&
            json_object_get(emitted, ctype) == NULL) {
            print_error("the contract %s v%d exists, but notifications never emitted it\n", ctype,
                        contracts.items[i].version);
            broken++;
        }
    }
    json_decref(emitted);
    assert_int_equal(broken, 0);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notification_sent_honours_its_contract),
        cmocka_unit_test(test_notification_failed_honours_its_contract),
        cmocka_unit_test(test_examples_validate_against_their_own_schema),
        cmocka_unit_test(test_emitted_types_are_exactly_the_contracts),
    };
    return cmocka_run_group_tests_name("notifications producer contract", tests,
                                       contract_suite_setup, contract_suite_teardown);
}
