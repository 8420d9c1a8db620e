/* Contract test, consumer side: does the notifications service do the right thing with
 * every event the users contracts describe?
 *
 * The inputs are not hand-built here: they are the contracts' own examples
 * (tests/contract/events/users.<event>/v<N>/examples/<name>.json), fed byte for byte to the
 * notifications application layer (sqlite::memory:, the in-memory sender) as the consumer
 * would hand them over. So a producer that changes an example, or adds one, changes what
 * this test proves. It asserts:
 *   - the consumer's registry (notif_app_registry) accepts every example, and every type
 *     the consumer binds to has a contract;
 *   - users.user_registered -> one mail to the example's email whose text and HTML carry
 *     its verification_link and its name; users.user_verified -> a welcome mail;
 *     users.password_reset_requested -> a mail carrying its reset_link; users.user_deleted
 *     -> no mail, and the user's notifications and preferences are erased;
 *   - a member added to data (a compatible, v1 change) is ignored: same mail;
 *   - each member the contract requires, removed, makes the consumer refuse the message
 *     (REJECT, the reason naming the member, no mail): the consumer checks what it relies on;
 *   - every variable of the template an event feeds is a member that event's contract
 *     requires: a template needing a field the contract lacks fails here, not at 3 a.m. */
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

/* What each users event must lead to: the behaviour half of the contract. */
static const struct {
    const char *event;
    notification_type mail; /* the notification sent */
    const char *link_field; /* the member whose link the mail must carry; NULL: none */
} expected_mails[] = {
    {"users.user_registered", NOTIFY_EMAIL_VERIFICATION, "verification_link"},
    {"users.user_verified", NOTIFY_WELCOME, NULL},
    {"users.password_reset_requested", NOTIFY_PASSWORD_RESET, "reset_link"},
};
#define USER_DELETED_EVENT "users.user_deleted"

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

static fixture *fixture_new(void)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(0, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_hd_err(0, notif_app_migrate(f->store, &err), &err);
    assert_hd_err(0, notif_templates_open(HD_SOURCE_DIR "/templates", &f->templates, &err), &err);
    assert_hd(0, hd_sender_memory_new(0, &f->sender));
    f->log_out = tmpfile();
    f->lg = hd_logger_new("notifications", HD_LOG_DEBUG, f->log_out);
    notif_settings s = {
        .mail_from = "noreply@herald.example", .max_attempts = 3, .backoff_base_ms = -1};
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

/* ---- feeding an example ------------------------------------------------------------------- */

/* Hand envelope (borrowed JSON) to the consumer's handler, as the broker consumer would: the
 * encoded bytes, undecoded. reason (HD_REASON_MAX bytes) receives a REJECT's reason. */
static hd_consume_result consume_example(fixture *f, const json_t *envelope, char *reason)
{
    char *body = json_dumps(envelope, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(body);
    reason[0] = '\0';
    hd_delivery d = {
        .body = body,
        .body_len = strlen(body),
        .queue = "notifications.users",
        .exchange = "users",
        .routing_key = json_string_value(json_object_get(envelope, "type")),
        .message_id = json_string_value(json_object_get(envelope, "id")),
        .correlation_id = json_string_value(json_object_get(envelope, "correlationid")),
        .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
        .attempt = 1,
        .reason_buf = reason,
    };
    hd_consume_result r = notif_handle_delivery(&f->w, &d);
    free(body);
    return r;
}

static const char *data_string(const json_t *envelope, const char *member)
{
    return json_string_value(json_object_get(json_object_get(envelope, "data"), member));
}

static int64_t count_rows(fixture *f, const char *sql, const char *param)
{
    hd_value p[] = {hd_value_text(param)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(0, hd_store_query(f->store, sql, p, param ? 1 : 0, &rows, &err), &err);
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v;
}

static const event_contract *users_contract(const char *type)
{
    const event_contract *c = contract_find(&contracts, type, USERS_EVENT_VERSION);
    if (c == NULL)
        fail_msg("no contract for %s v%d", type, USERS_EVENT_VERSION);
    if (c->n_examples == 0)
        fail_msg("%s v%d has no example to feed the consumer", type, USERS_EVENT_VERSION);
    return c;
}

/* s contains needle, else fail naming what and where. */
static void assert_contains(const char *s, const char *needle, const char *what,
                            const char *example)
{
    if (s == NULL || needle == NULL || strstr(s, needle) == NULL)
        fail_msg("%s: the %s does not contain '%s'", example, what, needle ? needle : "(null)");
}

/* The mail an example of expected_mails[i] must produce, checked on a fresh fixture. */
static void check_mail_for(size_t i, const json_t *example, const char *example_name)
{
    fixture *f = fixture_new();
    char reason[HD_REASON_MAX];
    hd_consume_result r = consume_example(f, example, reason);
    if (r != HD_CONSUME_OK)
        fail_msg("%s: verdict %s (%s)", example_name, hd_consume_result_name(r), reason);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    const hd_mail *mail = hd_sender_memory_mail(f->sender, 0);
    assert_string_equal(mail->to, data_string(example, "email"));
    assert_string_equal(mail->correlation_id,
                        json_string_value(json_object_get(example, "correlationid")));

    /* The name, as the user gave it (a user who gave none is greeted "there": see
     * notif_template_variables); raw in the text, HTML-escaped in the HTML. */
    const char *name = data_string(example, "name");
    const char *greeted = name != NULL && name[0] != '\0' ? name : "there";
    char *escaped = hd_html_escape(greeted);
    assert_contains(mail->text, greeted, "text body", example_name);
    assert_contains(mail->html, escaped, "HTML body", example_name);
    free(escaped);
    const char *link_field = expected_mails[i].link_field;
    if (link_field != NULL) {
        const char *link = data_string(example, link_field);
        char *escaped_link = hd_html_escape(link);
        assert_contains(mail->text, link, "text body", example_name);
        assert_contains(mail->html, escaped_link, "HTML body", example_name);
        free(escaped_link);
    }

    /* The notification recorded is of the expected type, and sent. */
    notification *list = NULL;
    size_t n = 0;
    char next[NOTIF_CURSOR_MAX + 1];
    hd_error err;
    assert_int_equal(
        notif_history(&f->w, data_string(example, "user_id"), 10, NULL, &list, &n, next, &err), 1);
    assert_int_equal(list[0].type, expected_mails[i].mail);
    assert_int_equal(list[0].status, NOTIFY_SENT);
    notif_history_free(list, n);
    fixture_free(f);
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void test_registry_accepts_every_example(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    const hd_registry *reg = notif_app_registry(f->app);
    size_t n_types;
    const char *const *types = notif_consumed_types(&n_types);
    for (size_t t = 0; t < n_types; t++) {
        const event_contract *c = users_contract(types[t]);
        for (size_t e = 0; e < c->n_examples; e++) {
            char *text = json_dumps(c->examples[e].json, JSON_COMPACT);
            hd_envelope *env = NULL;
            hd_error err;
            if (hd_envelope_decode(reg, text, strlen(text), &env, &err) != HD_OK)
                fail_msg("%s/v%d/examples/%s: the consumer's registry refuses it: %s", c->type,
                         c->version, c->examples[e].name, err.text);
            print_message("%s/v%d/examples/%s: accepted\n", c->type, c->version,
                          c->examples[e].name);
            hd_envelope_free(env);
            free(text);
        }
    }
    fixture_free(f);
}

static void test_every_mail_event_sends_its_mail(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof expected_mails / sizeof expected_mails[0]; i++) {
        const event_contract *c = users_contract(expected_mails[i].event);
        for (size_t e = 0; e < c->n_examples; e++) {
            char where[256];
            snprintf(where, sizeof where, "%s/v%d/examples/%s", c->type, c->version,
                     c->examples[e].name);
            check_mail_for(i, c->examples[e].json, where);
            const char *mail = notification_type_name(expected_mails[i].mail);
            print_message("%s: %s mail sent as expected\n", where, mail ? mail : "?");
        }
    }
}

static void test_an_added_member_is_ignored(void **state)
{
    (void)state;
    /* Additive changes stay v1: a producer may add an optional member, and an older
     * consumer must read the event exactly as before (the tolerant reader). */
    for (size_t i = 0; i < sizeof expected_mails / sizeof expected_mails[0]; i++) {
        const event_contract *c = users_contract(expected_mails[i].event);
        json_t *newer = json_deep_copy(c->examples[0].json);
        json_object_set_new(json_object_get(newer, "data"), "locale", json_string("en-GB"));
        char where[256];
        snprintf(where, sizeof where, "%s/v%d/examples/%s + data.locale", c->type, c->version,
                 c->examples[0].name);
        check_mail_for(i, newer, where);
        json_decref(newer);
    }
}

static void test_user_deleted_sends_nothing_and_erases(void **state)
{
    (void)state;
    const event_contract *deleted = users_contract(USER_DELETED_EVENT);
    for (size_t e = 0; e < deleted->n_examples; e++) {
        const json_t *deletion = deleted->examples[e].json;
        const char *user_id = data_string(deletion, "user_id");
        fixture *f = fixture_new();
        char reason[HD_REASON_MAX];
        /* Something to erase: every mail example (the examples describe one user, Ada,
         * and a few others), and preferences of the deleted user's own. */
        for (size_t i = 0; i < sizeof expected_mails / sizeof expected_mails[0]; i++) {
            const event_contract *c = users_contract(expected_mails[i].event);
            for (size_t x = 0; x < c->n_examples; x++)
                assert_int_equal(consume_example(f, c->examples[x].json, reason), HD_CONSUME_OK);
        }
        preferences_change change;
        preferences_change_init(&change);
        change.enabled[NOTIFY_WELCOME] = 0;
        preferences prefs;
        hd_error err;
        assert_true(notif_prefs_update(&f->w, user_id, &change, &prefs, &err) >= 0);
        preferences_release(&prefs);
        int64_t theirs =
            count_rows(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", user_id);
        if (theirs == 0)
            fail_msg("%s: no mail example is for user %s, so there is nothing to erase:"
                     " give the examples one user",
                     deleted->examples[e].name, user_id);
        int64_t everyone = count_rows(f, "SELECT COUNT(*) FROM notifications", NULL);
        size_t mails = hd_sender_memory_count(f->sender);
        size_t attempts = hd_sender_memory_attempts(f->sender);
        int64_t outbox = count_rows(f, "SELECT COUNT(*) FROM hd_outbox", NULL);

        hd_consume_result r = consume_example(f, deletion, reason);
        if (r != HD_CONSUME_OK)
            fail_msg("%s: verdict %s (%s)", deleted->examples[e].name, hd_consume_result_name(r),
                     reason);
        assert_int_equal(hd_sender_memory_attempts(f->sender), attempts); /* no mail */
        assert_int_equal(hd_sender_memory_count(f->sender), mails);
        assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM hd_outbox", NULL), outbox);
        assert_int_equal(
            count_rows(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", user_id), 0);
        assert_int_equal(count_rows(f,
                                    "SELECT COUNT(*) FROM notification_preferences"
                                    " WHERE user_id = $1",
                                    user_id),
                         0);
        /* Only theirs: everyone else's history stays. */
        assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM notifications", NULL),
                         everyone - theirs);
        print_message("%s: %lld notifications and the preferences of %s erased, no mail\n",
                      deleted->examples[e].name, (long long)theirs, user_id);
        fixture_free(f);
    }
}

static void test_removing_a_required_member_is_refused(void **state)
{
    (void)state;
    size_t n_types;
    const char *const *types = notif_consumed_types(&n_types);
    for (size_t t = 0; t < n_types; t++) {
        const event_contract *c = users_contract(types[t]);
        size_t i;
        const json_t *field;
        json_array_foreach(json_object_get(contract_data_schema(c), "required"), i, field)
        {
            const char *name = json_string_value(field);
            json_t *broken = json_deep_copy(c->examples[0].json);
            json_object_del(json_object_get(broken, "data"), name);
            fixture *f = fixture_new();
            /* Where is it caught? By the registry's validators when the envelope is
             * decoded, or when the template is filled (the template is the authority on its
             * variables). Either way: REJECT, to the dead-letter queue, with the reason. */
            char *text = json_dumps(broken, JSON_COMPACT);
            hd_envelope *env = NULL;
            int at_decoding =
                hd_envelope_decode(notif_app_registry(f->app), text, strlen(text), &env, NULL) < 0;
            hd_envelope_free(env);
            free(text);
            char reason[HD_REASON_MAX];
            hd_consume_result r = consume_example(f, broken, reason);
            if (r != HD_CONSUME_REJECT)
                fail_msg("%s v%d without data.%s: verdict %s, expected REJECT", c->type, c->version,
                         name, hd_consume_result_name(r));
            if (strstr(reason, name) == NULL)
                fail_msg("%s v%d without data.%s: the reason does not name it: %s", c->type,
                         c->version, name, reason);
            assert_int_equal(hd_sender_memory_attempts(f->sender), 0);
            assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM notifications", NULL), 0);
            print_message("%s v%d without data.%s: REJECT at %s: %s\n", c->type, c->version, name,
                          at_decoding ? "decoding" : "rendering", reason);
            fixture_free(f);
            json_decref(broken);
        }
    }
}

static void test_template_variables_come_from_the_contract(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    size_t n_types;
    const char *const *types = notif_consumed_types(&n_types);
    int broken = 0;
    for (size_t t = 0; t < n_types; t++) {
        notification_type nt;
        if (notif_intent_of(types[t], &nt) != NOTIF_INTENT_NOTIFY)
            continue; /* no mail, no template */
        const event_contract *c = users_contract(types[t]);
        const char *template_name = notification_type_name(nt);
        const hd_template *tpl = hd_templates_get(f->templates, template_name);
        assert_non_null(tpl);
        size_t n_vars;
        const char *const *vars = hd_template_variables(tpl, &n_vars);
        /* The variables are the event's data members (notif_template_variables copies
         * them), so each must be one the contract REQUIRES: an optional one may be absent,
         * and the mail would then fail. */
        int missing = 0;
        for (size_t v = 0; v < n_vars; v++) {
            if (contract_data_requires(c, vars[v]))
                continue;
            print_error("template '%s' needs variable '%s', which %s v%d %s\n", template_name,
                        vars[v], c->type, c->version,
                        contract_data_declares(c, vars[v]) ? "declares as optional only"
                                                           : "does not declare");
            missing++;
        }
        if (missing == 0)
            print_message("template '%s' <- %s v%d: its %zu variable(s) are all required there\n",
                          template_name, c->type, c->version, n_vars);
        broken += missing;
    }
    fixture_free(f);
    assert_int_equal(broken, 0);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_accepts_every_example),
        cmocka_unit_test(test_every_mail_event_sends_its_mail),
        cmocka_unit_test(test_an_added_member_is_ignored),
        cmocka_unit_test(test_user_deleted_sends_nothing_and_erases),
        cmocka_unit_test(test_removing_a_required_member_is_refused),
        cmocka_unit_test(test_template_variables_come_from_the_contract),
    };
    return cmocka_run_group_tests_name("notifications consumer contract", tests,
                                       contract_suite_setup, contract_suite_teardown);
}
