/* Contract test, producer side: does the users service write what its contracts promise?
 *
 * The contracts are data (tests/contract/events/users.<event>/v<N>/schema.json). This test runs
 * every use case of the users service over `sqlite::memory:` — the way the HTTP layer runs
 * them, with a correlation id — and reads back what the service ACTUALLY wrote to its
 * outbox: each row's payload is the encoded CloudEvents envelope a consumer will receive.
 * Each one must:
 *   - decode as CloudEvents (hd_envelope_decode, no registry: structure only);
 *   - conform to the contract of its own (type, schemaversion): every required member
 *     present with its type and format, no member the contract does not declare
 *     (additionalProperties: false), and the envelope attributes a consumer relies on
 *     (type, schemaversion, source, datacontenttype, correlationid, causationid, time).
 * And, so that the contracts themselves stay honest:
 *   - every example of a users.* contract validates against its own schema, and the
 *     producer's own registry (users_integration_registry) accepts it: examples cannot rot;
 *   - the event types the service emits are exactly the users.* contracts: a new event
 *     without a contract fails here, and so does a contract nobody produces;
 *   - the checker is not vacuous: envelopes broken on purpose are reported, naming the
 *     member at fault.
 *
 * It links the service's library (hd_svc_users), as tests/unit/test_users_app.c does. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hd_test.h"

#include "users/domain.h"
#include "users/repository.h"
#include "users/integration.h"
#include "users/application.h"

#include "contract.h"

#define PRODUCER_PREFIX "users."
#define PASSWORD        "correct horse battery staple"

/* ---- fixture: one users application over a fresh in-memory database ------------------------ */

typedef struct fixture {
    hd_store *store;
    users_app *app;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_true(users_repo_migrate(f->store, &err) >= 0);
    users_config cfg = {
        .verify_base_url = "https://app.example.com/verify-email?token=",
        .reset_base_url = "https://app.example.com/reset-password?token=",
        .pwhash_opslimit = crypto_pwhash_OPSLIMIT_MIN, /* fast: this test is not about hashing */
        .pwhash_memlimit = crypto_pwhash_MEMLIMIT_MIN,
    };
    assert_hd_err(HD_OK, users_app_new(f->store, &cfg, &f->app, &err), &err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    users_app_free(f->app);
    hd_store_close(f->store);
    free(f);
    return 0;
}

/* ---- driving the service ------------------------------------------------------------------ */

static void register_user(fixture *f, const char *addr, const char *name, user_view *out)
{
    email e;
    hd_error err;
    assert_hd(HD_OK, email_parse(addr, &e, NULL));
    assert_hd_err(HD_OK,
                  users_register(f->app, "contract-register", &e, PASSWORD, strlen(PASSWORD), name,
                                 out, &err),
                  &err);
}

/* The token at the end of the link in the newest outbox envelope of type. */
static void newest_token(fixture *f, const char *type, const char *link_field,
                         char token[USERS_TOKEN_LEN + 1])
{
    hd_value p[] = {hd_value_text(type)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store,
                                 "SELECT payload FROM hd_outbox WHERE type = $1 ORDER BY seq DESC",
                                 p, 1, &rows, &err),
                  &err);
    assert_true(hd_rows_count(rows) > 0);
    json_t *env = json_loads(hd_rows_text(rows, 0, 0), 0, NULL);
    hd_rows_free(rows);
    const char *link = json_string_value(json_object_get(json_object_get(env, "data"), link_field));
    assert_non_null(link);
    const char *eq = strrchr(link, '=');
    assert_non_null(eq);
    snprintf(token, USERS_TOKEN_LEN + 1, "%s", eq + 1);
    json_decref(env);
}

/* Every use case in application.h that changes something, once each (two users, one without
 * a name), with a correlation id as the HTTP layer always gives one. */
static void run_every_use_case(fixture *f)
{
    user_view ada, grace;
    char token[USERS_TOKEN_LEN + 1];
    hd_error err;
    register_user(f, "Ada@Example.com", "Ada Lovelace", &ada);
    register_user(f, "grace@example.org", "", &grace);

    newest_token(f, USERS_EVENT_REGISTERED, "verification_link", token);
    assert_hd_err(HD_OK, users_verify_email(f->app, "contract-verify", token, NULL, &err), &err);

    email e;
    assert_hd(HD_OK, email_parse("ada@example.com", &e, NULL));
    assert_int_equal(users_request_password_reset(f->app, "contract-reset", &e, &err), 1);
    newest_token(f, USERS_EVENT_RESET_REQUESTED, "reset_link", token);
    const char *fresh = "a brand new passphrase";
    assert_hd_err(
        HD_OK,
        users_reset_password(f->app, "contract-reset-confirm", token, fresh, strlen(fresh), &err),
        &err);

    assert_hd_err(HD_OK, users_rename(f->app, "contract-rename", ada.id, "Ada King", NULL, &err),
                  &err);
    assert_hd_err(HD_OK, users_delete(f->app, "contract-delete", grace.id, &err), &err);
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void test_every_outbox_row_honours_its_contract(void **state)
{
    fixture *f = *state;
    run_every_use_case(f);

    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store, "SELECT type, payload FROM hd_outbox ORDER BY seq", NULL,
                                 0, &rows, &err),
                  &err);
    size_t n = hd_rows_count(rows);
    assert_true(n >= 4);
    int broken = 0;
    for (size_t r = 0; r < n; r++) {
        const char *column_type = hd_rows_text(rows, r, 0);
        const char *payload = hd_rows_text(rows, r, 1);
        /* What a consumer does first: decode as CloudEvents (no registry: structure only). */
        hd_envelope *env = NULL;
        assert_hd_err(HD_OK, hd_envelope_decode(NULL, payload, strlen(payload), &env, &err), &err);
        assert_string_equal(hd_envelope_type(env), column_type); /* the relay routes on it */
        /* Then the contract, on the bytes exactly as they will travel. */
        json_t *raw = json_loads(payload, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(raw);
        char why[2048];
        int problems = contract_check_envelope(&contracts, raw, why, sizeof why);
        if (problems > 0) {
            print_error("outbox row %zu, %s v%d, breaks its contract (%d problem%s): %s\n", r + 1,
                        hd_envelope_type(env), hd_envelope_version(env), problems,
                        problems > 1 ? "s" : "", why);
            broken++;
        } else {
            print_message("outbox row %zu: %s v%d conforms\n", r + 1, hd_envelope_type(env),
                          hd_envelope_version(env));
        }
        json_decref(raw);
        hd_envelope_free(env);
    }
    hd_rows_free(rows);
    assert_int_equal(broken, 0);
}

static void test_examples_validate_against_their_own_schema(void **state)
{
    (void)state;
    hd_registry *producer = users_integration_registry();
    assert_non_null(producer);
    size_t checked = 0;
    int broken = contract_check_examples(&contracts, PRODUCER_PREFIX, producer,
                                         "users_integration_registry", &checked);
    hd_registry_free(producer);
    assert_true(checked >= 4);
    assert_int_equal(broken, 0);
}

static void test_emitted_types_are_exactly_the_contracts(void **state)
{
    fixture *f = *state;
    run_every_use_case(f);

    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK,
                  hd_store_query(f->store, "SELECT DISTINCT type FROM hd_outbox ORDER BY type",
                                 NULL, 0, &rows, &err),
                  &err);
    int broken = 0;
    size_t n = hd_rows_count(rows);
    /* Emitted -> has a contract (a new event must come with its contract). The version
     * is checked by the previous case; here the type is enough. */
    for (size_t r = 0; r < n; r++) {
        const char *type = hd_rows_text(rows, r, 0);
        int found = 0;
        for (size_t i = 0; i < contracts.count; i++)
            found |= strcmp(contracts.items[i].type, type) == 0;
        if (!found) {
            print_error("users emits %s, which has no contract: add "
                        "tests/contract/events/%s/v1/ and a line in docs/contracts/events.md\n",
                        type, type);
            broken++;
        }
    }
    /* Contract -> emitted (a contract that nothing produces is a promise nobody keeps). */
    for (size_t i = 0; i < contracts.count; i++) {
        const char *type = contracts.items[i].type;
        if (strncmp(type, PRODUCER_PREFIX, strlen(PRODUCER_PREFIX)) != 0)
            continue;
        int found = 0;
        for (size_t r = 0; r < n; r++)
            found |= strcmp(hd_rows_text(rows, r, 0), type) == 0;
        if (!found) {
            print_error("the contract %s v%d exists, but no use case of users emitted it\n", type,
                        contracts.items[i].version);
            broken++;
        }
    }
    hd_rows_free(rows);
    assert_int_equal(broken, 0);
}

/* The checker itself must not be vacuous: a contract test that passes everything proves
 * nothing. Each line breaks a valid example in one way and names what must be reported. */
static void test_the_checker_catches_broken_envelopes(void **state)
{
    (void)state;
    static const struct {
        const char *member; /* "data.x" or an envelope attribute */
        const char *value;  /* JSON text; NULL removes the member */
        const char *expect; /* a piece of the report */
    } breakages[] = {
        {"data.email", NULL, "$.data.email: required member is missing"},
        {"data.password", "\"hunter2\"", "$.data.password: member not declared"},
        {"data.email", "\"ada.example.com\"", "$.data.email: is not a valid email"},
        {"data.user_id", "\"42\"", "$.data.user_id: is not a valid uuid"},
        {"data.name", "42", "$.data.name: must be of type string, is integer"},
        {"data.verification_link", "\"/verify?token=x\"", "is not a valid uri"},
        {"time", "\"yesterday\"", "$.time: is not a valid date-time"},
        {"type", "\"users.user_renamed\"", "no contract for users.user_renamed v1"},
        {"schemaversion", "2", "no contract for users.user_registered v2"},
        {"datacontenttype", "\"text/plain\"", "$.datacontenttype: must be \"application/json\""},
        {"correlationid", NULL, "$.correlationid: required member is missing"},
        {"correlationid", "\"\"", "$.correlationid: must be at least 1 characters long"},
        {"data", "[]", "$.data: must be of type object, is array"},
    };
    const event_contract *c = contract_find(&contracts, USERS_EVENT_REGISTERED, 1);
    assert_non_null(c);
    assert_true(c->n_examples > 0);
    for (size_t i = 0; i < sizeof breakages / sizeof breakages[0]; i++) {
        json_t *env = json_deep_copy(c->examples[0].json);
        const char *name = breakages[i].member;
        json_t *parent = env;
        if (strncmp(name, "data.", 5) == 0) {
            parent = json_object_get(env, "data");
            name += 5;
        }
        if (breakages[i].value == NULL)
            json_object_del(parent, name);
        else
            json_object_set_new(parent, name,
                                json_loads(breakages[i].value, JSON_DECODE_ANY, NULL));
        char why[2048];
        int problems = contract_check_envelope(&contracts, env, why, sizeof why);
        if (problems == 0 || strstr(why, breakages[i].expect) == NULL)
            fail_msg("%s = %s: expected a report with \"%s\", got %d problem(s): %s",
                     breakages[i].member, breakages[i].value ? breakages[i].value : "(removed)",
                     breakages[i].expect, problems, why);
        json_decref(env);
    }
    /* And a schema it cannot enforce is refused rather than half-applied. */
    json_t *schema = json_pack("{s:s, s:s}", "type", "string", "pattern", "^[a-z]+$");
    json_t *value = json_string("ABC");
    char why[256];
    assert_int_equal(contract_validate(schema, value, why, sizeof why), 1);
    assert_non_null(strstr(why, "keyword 'pattern' is not supported"));
    json_decref(schema);
    json_decref(value);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_outbox_row_honours_its_contract, setup,
                                        teardown),
        cmocka_unit_test(test_examples_validate_against_their_own_schema),
        cmocka_unit_test_setup_teardown(test_emitted_types_are_exactly_the_contracts, setup,
                                        teardown),
        cmocka_unit_test(test_the_checker_catches_broken_envelopes),
    };
    return cmocka_run_group_tests_name("users producer contract", tests, contract_suite_setup,
                                       contract_suite_teardown);
}
