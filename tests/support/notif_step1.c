/* notif_step1.c — see notif_step1.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/envelope.h"
#include "notif_step1.h"
#include "notifications/domain.h"
#include "notifications/integration.h"
#include "notifications/repository.h"

static void insert_step1_row(hd_store *s, const char *id, const char *status, const char *variables)
{
    hd_value v[] = {hd_value_text(id), hd_value_text(status), hd_value_text(variables)};
    hd_error err;
    assert_hd_err(1,
                  hd_store_exec(s,
                                "INSERT INTO notifications (id, user_id, type, recipient, subject,"
                                " status, attempts, created_at, updated_at, variables, due_at,"
                                " version) VALUES ($1, 'u1', 'email_verification',"
                                " 'ada@example.com', 'Verify', $2, 0, 1, 1, $3, 1, 1)",
                                v, 3, &err),
                  &err);
}

char *notif_step1_rows(hd_store *s, const char *name, const char *link)
{
    hd_envelope *env =
        hd_envelope_new(USERS_EVENT_REGISTERED, USERS_EVENT_VERSION, "users",
                        json_pack("{s:s, s:s, s:s, s:s}", "user_id", "u1", "email",
                                  "ada@example.com", "name", name, "verification_link", link));
    assert_non_null(env);
    char *body = NULL;
    size_t len = 0;
    assert_hd(0, hd_envelope_encode(env, &body, &len, NULL));
    hd_envelope_free(env);
    char *marked = malloc(len + 7);
    assert_non_null(marked);
    snprintf(marked, len + 7, "event:%s", body);
    insert_step1_row(s, "n-event", "pending", marked);
    free(marked);
    json_t *vars = json_pack("{s:s, s:s}", "name", name, "verification_link", link);
    char *api = json_dumps(vars, JSON_COMPACT);
    assert_non_null(api);
    insert_step1_row(s, "n-api", "pending", api);
    free(api);
    json_decref(vars);
    insert_step1_row(s, "n-final", "sent", NULL);
    return body;
}

void notif_step1_rows_read_back(hd_store *s, const char *event, const char *name, const char *link)
{
    hd_error err;
    hd_registry *reg = notif_consumed_registry();
    assert_non_null(reg);
    notif_claimed *rows = NULL;
    size_t n = 0;
    assert_int_equal(notif_repo_claim_due(s, 10, 20, "c", 10, &rows, &n, &err), 2);
    for (size_t i = 0; i < n; i++) {
        const char *id = notification_id(&rows[i].n);
        if (strcmp(id, "n-event") == 0) {
            assert_int_equal(rows[i].kind, NOTIF_STORED_EVENT);
            assert_string_equal(rows[i].variables, event);
        } else {
            assert_string_equal(id, "n-api");
            assert_int_equal(rows[i].kind, NOTIF_STORED_VARIABLES);
        }
        json_t *vars = notif_stored_variables(reg, rows[i].kind, rows[i].variables, &err);
        assert_non_null(vars);
        assert_string_equal(json_string_value(json_object_get(vars, "verification_link")), link);
        assert_string_equal(json_string_value(json_object_get(vars, "name")), name);
        json_decref(vars);
    }
    notif_claimed_free(rows, n);

    /* The final row is untouched; the column refuses a kind it does not know. */
    hd_rows *r = NULL;
    hd_value v[] = {hd_value_text("n-final")};
    assert_hd_err(
        0,
        hd_store_query(s, "SELECT variables_kind, variables FROM notifications WHERE id = $1", v, 1,
                       &r, &err),
        &err);
    assert_string_equal(hd_rows_text(r, 0, 0), "variables");
    assert_null(hd_rows_text(r, 0, 1));
    hd_rows_free(r);
    assert_true(
        hd_store_exec(s, "UPDATE notifications SET variables_kind = 'json'", NULL, 0, &err) < 0);
    hd_registry_free(reg);
}
