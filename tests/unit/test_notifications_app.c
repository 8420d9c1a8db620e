/* Unit tests for the notifications service's application layer over `sqlite::memory:`, the
 * in-memory sender and hand-built CloudEvents envelopes: the three steps (record, send,
 * record the outcome), the inbox, retries with backoff, the preferences, the dead-letter
 * verdicts, the crash sweeper, the erasure of a deleted user, the API's use cases, and the
 * API's HTTP layer (its bearer token and /health) on a loopback server driven by libcurl.
 *
 * It links the service's library (hd_svc_notifications); internal.h lets the crash cases
 * stop a window between its steps. No broker and no mail server are involved; the
 * handlers get hd_delivery structs as the consumer would hand them over. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "hd_test.h"
#include "notif_step1.h"
#include "herald/clock.h"
#include "herald/http.h"
#include "herald/outbox.h"
#include "herald/retry.h"

#include "notifications/api.h"
#include "notifications/application.h"
#include "notifications/internal.h"
#include "notifications/domain.h"
#include "notifications/integration.h"
#include "notifications/repository.h"
#include "notifications/templates.h"

#define LINK "https://app.example.com/verify?token=0123456789abcdef"

typedef struct fixture {
    hd_store *store;
    hd_templates *templates;
    hd_sender *sender;
    hd_logger *lg;
    FILE *log_out;
    notif_app *app;
    notif_worker w;
    int woken; /* on_due calls */
} fixture;

static void on_due(void *ctx)
{
    ((fixture *)ctx)->woken++;
}

static fixture *fixture_new(int fail_times, int max_attempts)
{
    fixture *f = calloc(1, sizeof *f);
    hd_error err;
    assert_hd_err(0, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_hd_err(0, notif_app_migrate(f->store, &err), &err);
    assert_hd_err(0, notif_templates_open(HD_SOURCE_DIR "/templates", &f->templates, &err), &err);
    assert_hd(0, hd_sender_memory_new(fail_times, &f->sender));
    f->log_out = tmpfile();
    f->lg = hd_logger_new("notifications", HD_LOG_DEBUG, f->log_out);
    notif_settings s = {.mail_from = "noreply@herald.example",
                        .max_attempts = max_attempts,
                        .backoff_base_ms = -1, /* no delay: the tests sweep at once */
                        .lease_ms = 60000};
    assert_hd_err(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, &err), &err);
    notif_app_on_due(f->app, on_due, f);
    notif_worker_init(&f->w, f->app, f->store, f->sender);
    return f;
}

static int setup(void **state)
{
    *state = fixture_new(0, 3);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    notif_app_free(f->app);
    hd_logger_free(f->lg);
    fclose(f->log_out);
    hd_sender_free(f->sender);
    hd_templates_close(f->templates);
    hd_store_close(f->store);
    free(f);
    return 0;
}

/* Replace the fixture's sender with a memory sender failing fail_times. */
static void use_sender(fixture *f, int fail_times)
{
    hd_sender_free(f->sender);
    assert_hd(0, hd_sender_memory_new(fail_times, &f->sender));
    f->w.sender = f->sender;
}

/* ---- building deliveries ------------------------------------------------------------------ */

typedef struct msg {
    char *body;
    size_t len;
    char id[HD_UUID_LEN + 1];
    char reason[HD_REASON_MAX];
    hd_delivery d;
} msg;

/* A delivery of an envelope (type, data stolen) as the consumer would hand it over,
 * undecoded. id NULL = a fresh one. */
static msg *msg_new(const char *type, json_t *data, const char *id)
{
    msg *m = calloc(1, sizeof *m);
    hd_envelope *env = hd_envelope_new(type, 1, "herald-users", data);
    assert_non_null(env);
    if (id != NULL)
        assert_hd(0, hd_envelope_set_id(env, id));
    assert_hd(0, hd_envelope_set_correlation_id(env, "corr-42"));
    snprintf(m->id, sizeof m->id, "%s", hd_envelope_id(env));
    assert_hd(0, hd_envelope_encode(env, &m->body, &m->len, NULL));
    hd_envelope_free(env);
    m->d.body = m->body;
    m->d.body_len = m->len;
    m->d.queue = "users.notifications";
    m->d.routing_key = type;
    m->d.message_id = m->id;
    m->d.correlation_id = "corr-42";
    m->d.attempt = 1;
    m->d.reason_buf = m->reason;
    return m;
}

static void msg_free(msg *m)
{
    free(m->body);
    free(m);
}

static msg *registered(const char *user_id, const char *email, const char *id)
{
    return msg_new(USERS_EVENT_REGISTERED,
                   json_pack("{s:s, s:s, s:s, s:s}", "user_id", user_id, "email", email, "name",
                             "Ada", "verification_link", LINK),
                   id);
}

static msg *verified(const char *user_id, const char *email)
{
    return msg_new(USERS_EVENT_VERIFIED,
                   json_pack("{s:s, s:s, s:s}", "user_id", user_id, "email", email, "name", ""),
                   NULL);
}

static hd_consume_result handle(fixture *f, msg *m)
{
    return notif_handle_delivery(&f->w, &m->d);
}

/* ---- reading the database ----------------------------------------------------------------- */

static int64_t scalar(fixture *f, const char *sql, const char *param)
{
    hd_value p[] = {hd_value_text(param)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(0, hd_store_query(f->store, sql, p, param ? 1 : 0, &rows, &err), &err);
    int64_t v = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return v;
}

static int64_t outbox_count(fixture *f, const char *type)
{
    return scalar(f, "SELECT COUNT(*) FROM hd_outbox WHERE type = $1", type);
}

/* What the notification row id keeps to be rendered again: its stored text (new, may be
 * NULL) into *text when text is not NULL, and its variables_kind as the result (new). */
static char *stored_form(fixture *f, const char *id, char **text)
{
    hd_value p[] = {hd_value_text(id)};
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(0,
                  hd_store_query(
                      f->store, "SELECT variables_kind, variables FROM notifications WHERE id = $1",
                      p, 1, &rows, &err),
                  &err);
    assert_int_equal(hd_rows_count(rows), 1);
    char *kind = strdup(hd_rows_text(rows, 0, 0));
    if (text != NULL)
        *text = hd_rows_text(rows, 0, 1) ? strdup(hd_rows_text(rows, 0, 1)) : NULL;
    hd_rows_free(rows);
    return kind;
}

/* The only notification of user_id, loaded (release it). */
static void only_notification(fixture *f, const char *user_id, notification *out)
{
    notification *list = NULL;
    size_t n = 0;
    char next[NOTIF_CURSOR_MAX + 1];
    hd_error err;
    assert_int_equal(notif_history(&f->w, user_id, 10, NULL, &list, &n, next, &err), 1);
    *out = list[0];
    memset(&list[0], 0, sizeof list[0]);
    notif_history_free(list, n);
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void test_registered_sends_verification_mail(void **state)
{
    fixture *f = *state;
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);

    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    const hd_mail *mail = hd_sender_memory_mail(f->sender, 0);
    assert_string_equal(mail->to, "ada@example.com");
    assert_string_equal(mail->from, "noreply@herald.example");
    assert_string_equal(mail->subject, "Confirm your e-mail address");
    assert_non_null(strstr(mail->text, LINK));
    assert_non_null(strstr(mail->html, "Hello Ada,"));
    assert_string_equal(mail->correlation_id, "corr-42");

    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_SENT);
    assert_int_equal(n.attempts, 1);
    assert_int_equal(n.type, NOTIFY_EMAIL_VERIFICATION);
    assert_string_equal(n.correlation_id, "corr-42");
    assert_string_equal(n.cause_id, m->id);
    /* The Message-ID is derived from the notification id: a resend carries the same. */
    char msgid[128];
    snprintf(msgid, sizeof msgid, "<%s@herald.example>", notification_id(&n));
    assert_string_equal(mail->message_id, msgid);
    /* Sent: the variables (they hold the link) are gone from the row. */
    assert_int_equal(scalar(f,
                            "SELECT COUNT(*) FROM notifications WHERE variables IS NULL"
                            " AND id = $1",
                            notification_id(&n)),
                     1);

    /* notification_sent is in the outbox, chained to its cause. */
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 1);
    hd_rows *rows = NULL;
    assert_hd(0, hd_store_query(f->store, "SELECT payload FROM hd_outbox", NULL, 0, &rows, NULL));
    hd_envelope *env = NULL;
    hd_registry *contract = notif_emitted_registry();
    const char *payload = hd_rows_text(rows, 0, 0);
    assert_hd(0, hd_envelope_decode(contract, payload, strlen(payload), &env, NULL));
    assert_string_equal(hd_envelope_correlation_id(env), "corr-42");
    assert_string_equal(hd_envelope_causation_id(env), m->id);
    json_t *data = hd_envelope_data(env);
    assert_string_equal(json_string_value(json_object_get(data, "notification_id")),
                        notification_id(&n));
    assert_int_equal(json_integer_value(json_object_get(data, "attempts")), 1);
    assert_null(json_object_get(data, "recipient"));
    hd_envelope_free(env);
    hd_registry_free(contract);
    hd_rows_free(rows);
    notification_release(&n);
    msg_free(m);
}

static void test_same_event_twice_one_mail(void **state)
{
    fixture *f = *state;
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);           /* a redelivery: acked, skipped */
    msg *again = registered("u1", "ada@example.com", m->id); /* a republish: same id */
    assert_int_equal(handle(f, again), HD_CONSUME_OK);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", "u1"), 1);
    msg_free(m);
    msg_free(again);
}

static void test_fails_twice_then_sent_after_retries(void **state)
{
    fixture *f = *state;
    use_sender(f, 2);
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK); /* recorded; first attempt failed */
    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_PENDING);
    assert_int_equal(n.attempts, 1);
    assert_non_null(strstr(n.last_error, "simulated failure"));
    notification_release(&n);

    hd_error err;
    assert_int_equal(notif_sweep(&f->w, 0, 100, &err), 1); /* second attempt fails */
    assert_int_equal(notif_sweep(&f->w, 0, 100, &err), 1); /* third succeeds */
    assert_int_equal(notif_sweep(&f->w, 0, 100, &err), 0); /* nothing left */

    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_SENT);
    assert_int_equal(n.attempts, 3);
    notification_release(&n);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 3);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 1);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_FAILED), 0);
    msg_free(m);
}

static void test_always_failing_marks_failed_and_emits(void **state)
{
    fixture *f = *state; /* max_attempts 3 */
    use_sender(f, -1);
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    hd_error err;
    while (notif_sweep(&f->w, 0, 100, &err) > 0)
        ;
    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_FAILED);
    assert_int_equal(n.attempts, 3);
    assert_non_null(strstr(n.last_error, "simulated failure"));
    notification_release(&n);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 3);
    assert_int_equal(hd_sender_memory_count(f->sender), 0);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_FAILED), 1);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 0);
    hd_rows *rows = NULL;
    assert_hd(0, hd_store_query(f->store, "SELECT payload FROM hd_outbox", NULL, 0, &rows, NULL));
    json_t *env = json_loads(hd_rows_text(rows, 0, 0), 0, NULL);
    json_t *data = json_object_get(env, "data");
    assert_int_equal(json_integer_value(json_object_get(data, "attempts")), 3);
    assert_non_null(strstr(json_string_value(json_object_get(data, "last_error")), "simulated"));
    assert_non_null(json_object_get(data, "failed_at"));
    json_decref(env);
    hd_rows_free(rows);
    msg_free(m);
}

static void test_retry_waits_for_backoff(void **state)
{
    fixture *f = *state;
    /* A real backoff: the retry is not due at once, but is within the ceiling. */
    notif_app_free(f->app);
    notif_settings s = {.mail_from = "noreply@herald.example",
                        .max_attempts = 3,
                        .backoff_base_ms = 60000,
                        .backoff_cap_ms = 60000};
    assert_hd(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, NULL));
    notif_worker_init(&f->w, f->app, f->store, f->sender);
    use_sender(f, 1);
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    int64_t due = scalar(f, "SELECT due_at FROM notifications WHERE user_id = $1", "u1");
    int64_t now = hd_time_now_ms();
    assert_true(due >= now - 1000 && due <= now + 60000);
    /* An hour later it is certainly due. */
    hd_error err;
    assert_int_equal(notif_sweep(&f->w, now + 3600 * 1000, 100, &err), 1);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    msg_free(m);
}

static void test_welcome_off_is_skipped(void **state)
{
    fixture *f = *state;
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_WELCOME] = 0;
    preferences p;
    hd_error err;
    assert_hd_err(0, notif_prefs_create(&f->w, "u1", &c, &p, &err), &err);
    preferences_release(&p);

    msg *m = verified("u1", "ada@example.com");
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 0);
    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_SKIPPED);
    assert_int_equal(n.type, NOTIFY_WELCOME);
    assert_int_equal(n.attempts, 0);
    notification_release(&n);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 0);

    /* A verification mail still goes out to the same user. */
    msg *r = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, r), HD_CONSUME_OK);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    msg_free(m);
    msg_free(r);
}

static void test_welcome_with_empty_name(void **state)
{
    fixture *f = *state;
    msg *m = verified("u1", "ada@example.com");
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    const hd_mail *mail = hd_sender_memory_mail(f->sender, 0);
    assert_non_null(mail);
    assert_non_null(strstr(mail->text, "Hello there,"));
    msg_free(m);
}

static void test_preferences_address_for_welcome(void **state)
{
    fixture *f = *state;
    preferences_change c;
    preferences_change_init(&c);
    c.email = "other@example.org";
    preferences p;
    assert_int_equal(notif_prefs_update(&f->w, "u1", &c, &p, NULL), 1); /* created */
    preferences_release(&p);
    msg *v = verified("u1", "ada@example.com");
    msg *r = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, v), HD_CONSUME_OK);
    assert_int_equal(handle(f, r), HD_CONSUME_OK);
    assert_string_equal(hd_sender_memory_mail(f->sender, 0)->to, "other@example.org");
    assert_string_equal(hd_sender_memory_mail(f->sender, 1)->to, "ada@example.com");
    msg_free(v);
    msg_free(r);
}

static void test_missing_variable_rejects(void **state)
{
    fixture *f = *state;
    msg *m = msg_new(
        USERS_EVENT_REGISTERED,
        json_pack("{s:s, s:s, s:s}", "user_id", "u1", "email", "ada@example.com", "name", "Ada"),
        NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_REJECT);
    assert_non_null(strstr(m->reason, "verification_link"));
    assert_non_null(strstr(m->reason, "email_verification"));
    /* Nothing was kept, not even the inbox row: the transaction rolled back. */
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", "u1"), 0);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM hd_inbox WHERE message_id = $1", m->id), 0);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 0);
    msg_free(m);
}

static void test_invalid_messages_reject(void **state)
{
    fixture *f = *state;
    /* Not JSON. */
    msg *m = registered("u1", "ada@example.com", NULL);
    m->d.body = "{not json";
    m->d.body_len = 9;
    assert_int_equal(handle(f, m), HD_CONSUME_REJECT);
    assert_true(m->reason[0] != '\0');
    msg_free(m);
    /* Breaks the contract: no email. */
    m = msg_new(USERS_EVENT_VERIFIED, json_pack("{s:s}", "user_id", "u1"), NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_REJECT);
    assert_non_null(strstr(m->reason, "email"));
    msg_free(m);
    /* A type this service does not know. */
    m = msg_new("users.user_renamed", json_pack("{s:s}", "user_id", "u1"), NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_REJECT);
    msg_free(m);
}

static void test_batch_group_commit_and_fallback(void **state)
{
    fixture *f = *state;
    msg *ms[4] = {
        registered("u1", "a@example.com", NULL),
        registered("u2", "b@example.com", NULL),
        registered("u3", "c@example.com", NULL),
        NULL,
    };
    ms[3] = registered("u1", "a@example.com", ms[0]->id); /* a duplicate inside the window */
    const hd_delivery *ds[4] = {&ms[0]->d, &ms[1]->d, &ms[2]->d, &ms[3]->d};
    assert_int_equal(notif_handle_batch(&f->w, ds, 4), HD_CONSUME_OK);
    assert_int_equal(hd_sender_memory_count(f->sender), 3);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 3);
    for (int i = 0; i < 4; i++)
        msg_free(ms[i]);

    /* A poison message makes the window fail as a whole, without a verdict of its own... */
    msg *good = registered("u4", "d@example.com", NULL);
    msg *bad = msg_new(
        USERS_EVENT_RESET_REQUESTED,
        json_pack("{s:s, s:s, s:s}", "user_id", "u5", "email", "e@example.com", "name", "Eve"),
        NULL);
    const hd_delivery *window2[2] = {&good->d, &bad->d};
    assert_int_equal(notif_handle_batch(&f->w, window2, 2), HD_CONSUME_RETRY);
    /* A batch of one too: the verdict is the single handler's, given once. */
    const hd_delivery *window1[1] = {&bad->d};
    assert_int_equal(notif_handle_batch(&f->w, window1, 1), HD_CONSUME_RETRY);
    assert_string_equal(bad->reason, "");
    assert_int_equal(hd_sender_memory_count(f->sender), 3); /* nothing of it was kept */
    /* ...and alone, as the consumer then hands them over, the good one goes through and the
     * poison one is rejected with its reason. */
    assert_int_equal(handle(f, good), HD_CONSUME_OK);
    assert_int_equal(handle(f, bad), HD_CONSUME_REJECT);
    assert_non_null(strstr(bad->reason, "reset_link"));
    assert_int_equal(hd_sender_memory_count(f->sender), 4);
    msg_free(good);
    msg_free(bad);
}

/* ---- per-user order with several instances (ingest.c) -------------------------------------- */

/* A users event of user_id chained to prev (its "previousid", as the outbox stamps it; NULL:
 * none). */
static msg *chained(const char *type, const char *user_id, const char *prev)
{
    msg *m = calloc(1, sizeof *m);
    hd_envelope *env = hd_envelope_new(type, 1, "herald-users",
                                       json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", user_id,
                                                 "email", "ada@example.com", "name", "Ada",
                                                 "verification_link", LINK, "reset_link", LINK));
    assert_non_null(env);
    if (prev != NULL)
        assert_hd(0, hd_envelope_set_attribute(env, HD_OUTBOX_PREVIOUS_ID, json_string(prev)));
    assert_hd(0, hd_envelope_set_correlation_id(env, "corr-42"));
    snprintf(m->id, sizeof m->id, "%s", hd_envelope_id(env));
    assert_hd(0, hd_envelope_encode(env, &m->body, &m->len, NULL));
    hd_envelope_free(env);
    m->d.body = m->body;
    m->d.body_len = m->len;
    m->d.queue = "users.notifications";
    m->d.routing_key = type;
    m->d.message_id = m->id;
    m->d.correlation_id = "corr-42";
    m->d.attempt = 1;
    m->d.reason_buf = m->reason;
    return m;
}

static void test_an_event_waits_for_its_predecessor(void **state)
{
    fixture *f = *state;
    notif_app_free(f->app);
    notif_settings s = {.mail_from = "noreply@herald.example",
                        .backoff_base_ms = -1,
                        .lease_ms = 60000,
                        .order_wait_ms = 300};
    hd_error err;
    assert_hd_err(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, &err), &err);
    notif_worker_init(&f->w, f->app, f->store, f->sender);
    msg *m1 = chained(USERS_EVENT_REGISTERED, "u1", NULL);
    msg *m2 = chained(USERS_EVENT_VERIFIED, "u1", m1->id);
    const char *count_sql = "SELECT COUNT(*) FROM notifications WHERE user_id = $1";

    /* A window with event 2 before event 1: nothing is recorded, the consumer is asked to
     * hand the deliveries over one by one. */
    const hd_delivery *w21[2] = {&m2->d, &m1->d};
    assert_int_equal(notif_handle_batch(&f->w, w21, 2), HD_CONSUME_RETRY);
    assert_int_equal(scalar(f, count_sql, "u1"), 0);

    /* Event 2 alone, its predecessor nowhere: it waits, then is deferred to a retry tier. */
    int64_t t0 = hd_clock_ms();
    assert_int_equal(handle(f, m2), HD_CONSUME_RETRY);
    assert_true(hd_clock_ms() - t0 >= 290);
    assert_non_null(strstr(m2->reason, "previous event"));
    assert_int_equal(scalar(f, count_sql, "u1"), 0);

    /* Event 1, then event 2 again: both recorded, in order. */
    assert_int_equal(handle(f, m1), HD_CONSUME_OK);
    assert_int_equal(handle(f, m2), HD_CONSUME_OK);
    assert_int_equal(scalar(f, count_sql, "u1"), 2);

    /* In one window, in order: one transaction records both. */
    msg *a1 = chained(USERS_EVENT_REGISTERED, "u2", NULL);
    msg *a2 = chained(USERS_EVENT_VERIFIED, "u2", a1->id);
    const hd_delivery *w12[2] = {&a1->d, &a2->d};
    assert_int_equal(notif_handle_batch(&f->w, w12, 2), HD_CONSUME_OK);
    assert_int_equal(scalar(f, count_sql, "u2"), 2);

    /* A successor of an event this worker just deferred is deferred at once, no wait. */
    msg *b2 = chained(USERS_EVENT_VERIFIED, "u3", "never-delivered");
    msg *b3 = chained(USERS_EVENT_RESET_REQUESTED, "u3", b2->id);
    assert_int_equal(handle(f, b2), HD_CONSUME_RETRY);
    t0 = hd_clock_ms();
    assert_int_equal(handle(f, b3), HD_CONSUME_RETRY);
    assert_true(hd_clock_ms() - t0 < 250);

    /* On the retry policy's last attempt the wait is given up: recorded, never dead-lettered
     * for another message's fault. */
    hd_retry_policy p;
    hd_retry_policy_default(&p);
    b2->d.attempt = p.max_attempts;
    assert_int_equal(handle(f, b2), HD_CONSUME_OK);
    assert_int_equal(handle(f, b3), HD_CONSUME_OK); /* its predecessor is in the inbox now */
    assert_int_equal(scalar(f, count_sql, "u3"), 2);
    msg_free(m1);
    msg_free(m2);
    msg_free(a1);
    msg_free(a2);
    msg_free(b2);
    msg_free(b3);
}

/* The crash between step 1 and step 2: the intent is committed, the message acked, and the
 * process dies before sending. Nothing is lost: after the lease the sweeper sends it. */
static void test_crash_after_commit_is_swept(void **state)
{
    fixture *f = *state;
    msg *m = registered("u1", "ada@example.com", NULL);
    const hd_delivery *ds[1] = {&m->d};
    notif_window win;
    assert_hd(0, notif_window_init(&win, &f->w, ds, 1, 1));
    assert_int_equal(notif_window_decode(&win), HD_CONSUME_OK);
    assert_int_equal(notif_window_record(&win), HD_CONSUME_OK);
    notif_window_release(&win); /* "crash": never delivered */
    assert_int_equal(hd_sender_memory_attempts(f->sender), 0);

    /* The redelivery of the unacked message is a duplicate: no second notification. */
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 0);

    /* The pending row keeps the event's own bytes, as delivered, and says so. */
    notification pending;
    only_notification(f, "u1", &pending);
    char *text = NULL;
    char *kind = stored_form(f, notification_id(&pending), &text);
    assert_string_equal(kind, "event");
    assert_non_null(text);
    assert_int_equal(strlen(text), m->len);
    assert_memory_equal(text, m->body, m->len);
    free(kind);
    free(text);
    notification_release(&pending);

    hd_error err;
    /* While the dead worker's lease runs, nobody takes the row... */
    assert_int_equal(notif_sweep(&f->w, 0, 100, &err), 0);
    /* ...then the sweeper does, and the mail goes out. */
    int64_t later = hd_time_now_ms() + notif_app_settings(f->app)->lease_ms + 1;
    assert_int_equal(notif_sweep(&f->w, later, 100, &err), 1);
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    assert_non_null(strstr(hd_sender_memory_mail(f->sender, 0)->text, LINK));
    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.status, NOTIFY_SENT);
    notification_release(&n);
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 1);
    msg_free(m);
}

/* What a pending row keeps (integration.h): the event's own bytes, or an API request's
 * variables as JSON, the row's kind saying which; both give back the template variables. */
static void test_stored_variables_both_forms(void **state)
{
    (void)state;
    hd_registry *reg = notif_consumed_registry();
    assert_non_null(reg);
    hd_envelope *env =
        hd_envelope_new(USERS_EVENT_REGISTERED, USERS_EVENT_VERSION, "users",
                        json_pack("{s:s, s:s, s:s, s:s}", "user_id", "u1", "email",
                                  "ada@example.com", "name", "", "verification_link", LINK));
    char *body = NULL;
    size_t len = 0;
    assert_hd(0, hd_envelope_encode(env, &body, &len, NULL));
    char *stored = notif_stored_event(body, len);
    assert_non_null(stored);
    assert_string_equal(stored, body); /* the bytes as they are: no mark, no encode */
    hd_error err;
    json_t *vars = notif_stored_variables(reg, NOTIF_STORED_EVENT, stored, &err);
    assert_non_null(vars);
    assert_string_equal(json_string_value(json_object_get(vars, "verification_link")), LINK);
    assert_string_equal(json_string_value(json_object_get(vars, "name")), "there");
    assert_null(json_object_get(vars, "specversion")); /* the data, not the envelope */
    json_decref(vars);

    /* An API request's variables: plain JSON, taken as they are. */
    vars = notif_stored_variables(reg, NOTIF_STORED_VARIABLES, "{\"name\":\"Ada\",\"event\":\"e\"}",
                                  &err);
    assert_non_null(vars);
    assert_string_equal(json_string_value(json_object_get(vars, "event")), "e");
    json_decref(vars);

    /* An object shaped like an envelope, stored as variables, is still just variables: only
     * the kind makes an event. */
    vars = notif_stored_variables(reg, NOTIF_STORED_VARIABLES, body, &err);
    assert_non_null(vars);
    assert_non_null(json_object_get(vars, "specversion"));
    json_decref(vars);

    /* Broken or missing text: NULL and a reason. The old mark means nothing any more. */
    assert_null(notif_stored_variables(reg, NOTIF_STORED_VARIABLES, NULL, &err));
    assert_non_null(strstr(err.text, "no stored variables"));
    assert_null(notif_stored_variables(reg, NOTIF_STORED_EVENT, NULL, &err));
    assert_null(notif_stored_variables(reg, NOTIF_STORED_VARIABLES, "[1]", &err));
    char *marked = malloc(len + 7);
    assert_non_null(marked);
    snprintf(marked, len + 7, "event:%s", body);
    assert_null(notif_stored_variables(reg, NOTIF_STORED_VARIABLES, marked, &err));
    assert_null(notif_stored_variables(reg, NOTIF_STORED_EVENT, marked, &err));
    assert_null(notif_stored_variables(reg, NOTIF_STORED_EVENT, "{\"id\":", &err));
    assert_null(
        notif_stored_variables(reg, NOTIF_STORED_EVENT, "{}", &err)); /* not of the contract */
    free(marked);
    free(stored);
    free(body);
    hd_envelope_free(env);
    hd_registry_free(reg);
}

/* A row as schema step 1 (the previous version) wrote it: variables (may be NULL) holding
 * an event marked by the prefix "event:" or an API request's JSON. */
/* A database of the previous version, with its rows in the old form, migrates (step 2) and
 * reads back: the marked event becomes kind 'event' without its mark, the rest 'variables'. */
static void test_migration_reads_rows_of_step_1(void **state)
{
    (void)state;
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(0, hd_store_open("sqlite::memory:", &s, &err), &err);
    assert_int_equal(notif_repo_migrate_to(s, 1, &err), 1);
    assert_int_equal(notif_repo_migrate_to(s, 99, &err), HD_EINVAL);
    char *event = notif_step1_rows(s, "Ada", LINK);

    assert_int_equal(notif_repo_migrate(s, &err), 1); /* step 2 */
    assert_int_equal(hd_store_schema_version(s, "notifications", &err), 2);
    assert_int_equal(notif_repo_migrate(s, &err), 0);
    /* What the previous version (one step) does with this database: refuse it. */
    assert_int_equal(notif_repo_migrate_to(s, 1, &err), HD_EVERSION);

    notif_step1_rows_read_back(s, event, "Ada", LINK);
    free(event);
    hd_store_close(s);
}

/* A sender whose lease ran out finds the row taken: it records nothing (and emits nothing);
 * the sender that holds the row now does. */
static void test_lost_lease_records_nothing(void **state)
{
    fixture *f = *state;
    msg *m = registered("u1", "ada@example.com", NULL);
    const hd_delivery *ds[1] = {&m->d};
    notif_window win;
    assert_hd(0, notif_window_init(&win, &f->w, ds, 1, 1));
    assert_int_equal(notif_window_decode(&win), HD_CONSUME_OK);
    assert_int_equal(notif_window_record(&win), HD_CONSUME_OK);
    /* The sweeper takes the row over (as if our lease had run out) and sends it. */
    hd_error err;
    int64_t later = hd_time_now_ms() + notif_app_settings(f->app)->lease_ms + 1;
    assert_int_equal(notif_sweep(&f->w, later, 100, &err), 1);
    /* The slow worker now sends too (the duplicate at-least-once allows) and records... */
    notif_deliver(&f->w, win.jobs, 1, win.claim, win.lease_until);
    notif_window_release(&win);
    assert_int_equal(hd_sender_memory_count(f->sender), 2);
    /* ...nothing: one notification_sent, one row, attempts 1. */
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 1);
    notification n;
    only_notification(f, "u1", &n);
    assert_int_equal(n.attempts, 1);
    notification_release(&n);
    msg_free(m);
}

static void test_user_deleted_erases(void **state)
{
    fixture *f = *state;
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_SECURITY_ALERT] = 0;
    preferences p;
    assert_hd(0, notif_prefs_create(&f->w, "u1", &c, &p, NULL));
    preferences_release(&p);
    use_sender(f, -1); /* leave one pending */
    msg *r = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, r), HD_CONSUME_OK);
    msg *other = registered("u2", "bob@example.com", NULL);
    assert_int_equal(handle(f, other), HD_CONSUME_OK);

    msg *del = msg_new(USERS_EVENT_DELETED, json_pack("{s:s}", "user_id", "u1"), NULL);
    assert_int_equal(handle(f, del), HD_CONSUME_OK);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", "u1"), 0);
    assert_int_equal(
        scalar(f, "SELECT COUNT(*) FROM notification_preferences WHERE user_id = $1", "u1"), 0);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications WHERE user_id = $1", "u2"), 1);
    assert_int_equal(notif_prefs_get(&f->w, "u1", &p, NULL), 0); /* back to the defaults */
    preferences_release(&p);
    /* The pending mail of the deleted user is never sent. */
    use_sender(f, 0);
    hd_error err;
    int64_t later = hd_time_now_ms() + 3600 * 1000;
    assert_int_equal(notif_sweep(&f->w, later, 100, &err), 1); /* u2's only */
    assert_int_equal(hd_sender_memory_count(f->sender), 1);
    assert_string_equal(hd_sender_memory_mail(f->sender, 0)->to, "bob@example.com");
    msg_free(r);
    msg_free(other);
    msg_free(del);
}

/* ---- the API's use cases ------------------------------------------------------------------ */

static void test_api_send_security_alert(void **state)
{
    fixture *f = *state;
    json_t *vars = json_pack("{s:s, s:s, s:s}", "name", "Ada", "event", "new login from Paris",
                             "time", "2026-11-23T04:05:06Z");
    notif_request req = {.user_id = "u1",
                         .type = "security_alert",
                         .recipient = "ada@example.com",
                         .variables = vars,
                         .correlation_id = "req-7"};
    notification n;
    hd_error err;
    assert_int_equal(notif_request_send(&f->w, &req, &n, &err), 1);
    assert_int_equal(n.status, NOTIFY_PENDING);
    assert_int_equal(f->woken, 1);
    assert_int_equal(hd_sender_memory_attempts(f->sender), 0); /* the sweeper sends */
    char id[HD_UUID_LEN + 1];
    snprintf(id, sizeof id, "%s", notification_id(&n));
    notification_release(&n);
    /* An API request's variables are stored as such, never as an event (integration.h). */
    char *text = NULL;
    char *kind = stored_form(f, id, &text);
    assert_string_equal(kind, "variables");
    assert_non_null(strstr(text, "\"new login from Paris\""));
    free(kind);
    free(text);

    assert_int_equal(notif_sweep(&f->w, 0, 100, &err), 1);
    const hd_mail *mail = hd_sender_memory_mail(f->sender, 0);
    assert_string_equal(mail->subject, "Security alert: new login from Paris");
    assert_string_equal(mail->correlation_id, "req-7");
    assert_hd(0, notif_get(&f->w, id, &n, &err));
    assert_int_equal(n.status, NOTIFY_SENT);
    notification_release(&n);
    /* An API notification has no users event as cause: the domain event is. */
    assert_int_equal(outbox_count(f, NOTIFICATIONS_EVENT_SENT), 1);
    json_decref(vars);
}

static void test_api_send_refusals(void **state)
{
    fixture *f = *state;
    json_t *vars = json_pack("{s:s}", "name", "Ada"); /* no event, no time */
    notif_request req = {.user_id = "u1",
                         .type = "security_alert",
                         .recipient = "ada@example.com",
                         .variables = vars};
    notification n;
    hd_error err;
    assert_hd_err(HD_EVALIDATE, notif_request_send(&f->w, &req, &n, &err), &err);
    assert_non_null(strstr(err.text, "missing variable"));
    req.type = "marketing";
    assert_hd(HD_EVALIDATE, notif_request_send(&f->w, &req, &n, &err));
    req.type = "welcome";
    req.recipient = "ada@example.com\r\nBcc: eve@example.com";
    assert_hd(HD_EVALIDATE, notif_request_send(&f->w, &req, &n, &err));
    req.recipient = "ada@example.com";
    req.user_id = "../etc";
    assert_hd(HD_EVALIDATE, notif_request_send(&f->w, &req, &n, &err));
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications", NULL), 0);
    assert_int_equal(f->woken, 0);
    assert_hd(HD_ENOTFOUND, notif_get(&f->w, "6f1c2a4e-1b2c-4d5e-8f90-123456789abc", &n, &err));
    assert_hd(HD_ENOTFOUND, notif_get(&f->w, "not-a-uuid", &n, &err));
    json_decref(vars);
}

static void test_api_send_skipped_by_preferences(void **state)
{
    fixture *f = *state;
    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_SECURITY_ALERT] = 0;
    preferences p;
    assert_hd(0, notif_prefs_create(&f->w, "u1", &c, &p, NULL));
    preferences_release(&p);
    json_t *vars = json_object(); /* not rendered at all when skipped */
    notif_request req = {.user_id = "u1",
                         .type = "security_alert",
                         .recipient = "ada@example.com",
                         .variables = vars};
    notification n;
    assert_int_equal(notif_request_send(&f->w, &req, &n, NULL), 0);
    assert_int_equal(n.status, NOTIFY_SKIPPED);
    notification_release(&n);
    assert_int_equal(f->woken, 0);
    json_decref(vars);
}

/* Direct requests are for security_alert only: the other types are answers to the users
 * service's events, and a direct password_reset would let the caller choose the link. */
static void test_api_send_only_direct_types(void **state)
{
    fixture *f = *state;
    json_t *vars = json_pack("{s:s, s:s, s:s}", "name", "Ada", "reset_link",
                             "https://app.example.com/reset?token=x", "verification_link",
                             "https://app.example.com/verify?token=x");
    const char *types[] = {"password_reset", "email_verification", "welcome"};
    notification n;
    hd_error err;
    for (size_t i = 0; i < 3; i++) {
        notif_request req = {
            .user_id = "u1", .type = types[i], .recipient = "ada@example.com", .variables = vars};
        assert_hd_err(HD_EVALIDATE, notif_request_send(&f->w, &req, &n, &err), &err);
        assert_non_null(strstr(err.text, "cannot be sent directly"));
    }
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications", NULL), 0);
    assert_int_equal(f->woken, 0);
    json_decref(vars);
}

/* Replace the fixture's app with one whose link base URLs are bases. */
static void use_link_bases(fixture *f, const char *bases)
{
    notif_app_free(f->app);
    notif_settings s = {.mail_from = "noreply@herald.example",
                        .backoff_base_ms = -1,
                        .lease_ms = 60000,
                        .link_base_urls = bases};
    hd_error err;
    assert_hd_err(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, &err), &err);
    notif_app_on_due(f->app, on_due, f);
    notif_worker_init(&f->w, f->app, f->store, f->sender);
}

static int send_alert_with(fixture *f, const char *name, json_t *value, hd_error *err)
{
    json_t *vars =
        json_pack("{s:s, s:s, s:s}", "name", "Ada", "event", "new sign-in", "time", "now");
    json_object_set_new(vars, name, value);
    notif_request req = {.user_id = "u1",
                         .type = "security_alert",
                         .recipient = "ada@example.com",
                         .variables = vars};
    notification n;
    int rc = notif_request_send(&f->w, &req, &n, err);
    if (rc >= 0)
        notification_release(&n);
    json_decref(vars);
    return rc;
}

/* A link variable (name ending in _link or _url) must start with a configured base URL. */
static void test_api_send_links_under_base_urls(void **state)
{
    fixture *f = *state;
    hd_error err;
    /* None configured: no link at all in a direct request. */
    assert_hd_err(HD_EVALIDATE,
                  send_alert_with(f, "account_url", json_string("https://app.example.com/a"), &err),
                  &err);
    assert_non_null(strstr(err.text, "HD_NOTIFICATIONS_LINK_BASE_URL"));
    assert_null(strstr(err.text, "app.example.com")); /* the value is not echoed */

    use_link_bases(f, " https://app.example.com/ , https://help.example.org/docs/");
    assert_int_equal(
        send_alert_with(f, "account_url", json_string("https://app.example.com/a"), &err), 1);
    assert_int_equal(
        send_alert_with(f, "help_link", json_string("https://help.example.org/docs/2fa"), &err), 1);
    /* Foreign, look-alike, other path, not a string: refused. */
    const char *foreign[] = {"https://evil.test/reset",  "https://app.example.com.evil.test/",
                             "http://app.example.com/a", "https://help.example.org/other",
                             "javascript:alert(1)",      ""};
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++)
        assert_hd_err(HD_EVALIDATE, send_alert_with(f, "reset_link", json_string(foreign[i]), &err),
                      &err);
    assert_hd(HD_EVALIDATE, send_alert_with(f, "reset_link", json_integer(1), NULL));
    assert_hd(HD_EVALIDATE, send_alert_with(f, "reset_link", json_null(), NULL));
    /* A variable that is not named as a link is not a link. */
    assert_int_equal(send_alert_with(f, "linkage", json_string("https://evil.test/"), NULL), 1);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications", NULL), 3);

    /* A base without a path would admit app.example.com.evil.test; other schemes are no web
     * links: the app refuses them at start. */
    notif_settings s = {.mail_from = "noreply@herald.example"};
    notif_app *app = NULL;
    const char *bad[] = {"https://app.example.com", "ftp://app.example.com/", "https:///x",
                         "https://app.example.com/ a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s.link_base_urls = bad[i];
        assert_hd_err(HD_EINVAL, notif_app_new(&s, f->templates, f->lg, NULL, &app, &err), &err);
        assert_null(app);
        assert_hd(HD_EINVAL, notif_link_bases_check(bad[i], NULL)); /* what main.c checks */
    }
    assert_hd(0, notif_link_bases_check(NULL, NULL));
    assert_hd(0, notif_link_bases_check("", NULL));
    assert_hd(0, notif_link_bases_check("https://a.example/,http://b.example/x/", NULL));
    /* The settings in effect keep the text as given. */
    assert_string_equal(notif_app_settings(f->app)->link_base_urls,
                        " https://app.example.com/ , https://help.example.org/docs/");
}

/* ---- the HTTP layer: the token and /health ------------------------------------------------- */

#define TOKEN "0123456789abcdef0123456789abcdef-test"

typedef struct http_reply {
    long status;
    char body[4096];
    size_t len;
    char www_authenticate[256];
    char content_type[128];
} http_reply;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    http_reply *r = ctx;
    size_t k = size * n, room = sizeof r->body - 1 - r->len;
    memcpy(r->body + r->len, p, k < room ? k : room);
    r->len += k < room ? k : room;
    r->body[r->len] = '\0';
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    http_reply *r = ctx;
    size_t k = size * n;
    if (k > 18 && strncasecmp(p, "WWW-Authenticate: ", 18) == 0)
        snprintf(r->www_authenticate, sizeof r->www_authenticate, "%.*s", (int)(k - 18), p + 18);
    return k;
}

/* One request to the API on port; auth NULL = no Authorization header. */
static http_reply call(uint16_t port, const char *method, const char *path, const char *auth,
                       const char *body)
{
    http_reply r;
    memset(&r, 0, sizeof r);
    char url[256], h[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)port, path);
    CURL *c = curl_easy_init();
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth != NULL) {
        snprintf(h, sizeof h, "Authorization: %s", auth);
        hs = curl_slist_append(hs, h);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(r.content_type, sizeof r.content_type, "%s", ct ? ct : "");
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return r;
}

/* The consumer's connection state as the runtime keeps it, and how often /health read it. */
typedef struct broker_state {
    atomic_int up;
    atomic_int reads;
} broker_state;

static int broker_up(void *ctx)
{
    broker_state *b = ctx;
    atomic_fetch_add(&b->reads, 1);
    return atomic_load(&b->up);
}

typedef struct api_server {
    notif_api *api;
    hd_http_server *srv;
    uint16_t port;
} api_server;

static void api_start(fixture *f, api_server *a, const char *token, int open, broker_state *b)
{
    notif_api_deps deps = {.app = f->app,
                           .store = f->store,
                           .lg = f->lg,
                           .broker_up = broker_up,
                           .broker_ctx = b,
                           .token = token,
                           .open = open};
    hd_error err;
    hd_http_options o = {.port = 0, .logger = f->lg};
    assert_hd_err(0, notif_api_new(&deps, &a->api, &err), &err);
    assert_hd_err(0, hd_http_server_new(&o, &a->srv, &err), &err);
    assert_hd_err(0, notif_api_mount(a->api, a->srv, &err), &err);
    assert_hd_err(0, hd_http_server_start(a->srv, &err), &err);
    a->port = hd_http_server_port(a->srv);
}

static void api_stop(api_server *a)
{
    hd_http_server_stop(a->srv);
    hd_http_server_free(a->srv);
    notif_api_free(a->api);
}

static void expect_401(http_reply r, int invalid_token)
{
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.content_type, "application/problem+json"));
    assert_non_null(strstr(r.www_authenticate, "Bearer"));
    assert_true((strstr(r.www_authenticate, "invalid_token") != NULL) == invalid_token);
}

static void test_api_http_needs_the_token(void **state)
{
    fixture *f = *state;
    broker_state b = {1, 0};
    api_server a;
    api_start(f, &a, TOKEN, 0, &b);
    static const char *const routes[][3] = {
        {"GET", "/notifications/preferences/u1", NULL},
        {"GET", "/notifications/history/u1", NULL},
        {"GET", "/notifications/6f1c2a4e-1b2c-4d5e-8f90-123456789abc", NULL},
        {"PUT", "/notifications/preferences/u1", "{\"preferences\":{\"security_alert\":false}}"},
        {"POST", "/notifications/preferences", "{\"user_id\":\"u2\"}"},
        {"POST", "/notifications",
         "{\"user_id\":\"u1\",\"type\":\"security_alert\",\"recipient\":\"a@example.com\","
         "\"variables\":{\"name\":\"A\",\"event\":\"e\",\"time\":\"t\"}}"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *m = routes[i][0], *p = routes[i][1], *body = routes[i][2];
        expect_401(call(a.port, m, p, NULL, body), 0);
        expect_401(call(a.port, m, p, "Bearer wrong-token-wrong-token-wrong-token", body), 1);
        expect_401(call(a.port, m, p, "Bearer " TOKEN "x", body), 1);       /* longer */
        expect_401(call(a.port, m, p, "Bearer 0123456789abcdef", body), 1); /* a prefix */
        expect_401(call(a.port, m, p, "Basic " TOKEN, body), 0);
    }
    /* Nothing was written by the refused requests. */
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notifications", NULL), 0);
    assert_int_equal(scalar(f, "SELECT COUNT(*) FROM notification_preferences", NULL), 0);
    /* The right token: the routes answer. */
    http_reply r = call(a.port, "GET", "/notifications/preferences/u1", "Bearer " TOKEN, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"stored\":false"));
    r = call(a.port, "POST", "/notifications", "Bearer " TOKEN, routes[5][2]);
    assert_int_equal(r.status, 202);
    r = call(a.port, "POST", "/notifications", "bearer " TOKEN,
             "{\"user_id\":\"u1\",\"type\":\"password_reset\",\"recipient\":\"a@example.com\","
             "\"variables\":{\"name\":\"A\",\"reset_link\":\"https://evil.test/r\"}}");
    assert_int_equal(r.status, 422); /* authenticated, and still not a direct type */
    r = call(a.port, "POST", "/notifications", "Bearer " TOKEN,
             "{\"user_id\":\"u1\",\"type\":\"security_alert\",\"recipient\":\"a@example.com\","
             "\"variables\":{\"name\":\"A\",\"event\":\"e\",\"time\":\"t\","
             "\"account_url\":\"https://evil.test/r\"}}");
    assert_int_equal(r.status, 422); /* a foreign link */
    /* /health and /metrics are open. */
    assert_int_equal(call(a.port, "GET", "/health", NULL, NULL).status, 200);
    assert_int_equal(call(a.port, "GET", "/metrics", NULL, NULL).status, 404); /* no metrics */
    api_stop(&a);
}

static void test_api_http_refuses_to_run_without_a_token(void **state)
{
    fixture *f = *state;
    notif_api_deps deps = {.app = f->app, .store = f->store, .lg = f->lg};
    notif_api *api = NULL;
    hd_error err;
    assert_hd_err(HD_ECONFIG, notif_api_new(&deps, &api, &err), &err);
    assert_null(api);
    deps.token = "";
    assert_hd(HD_ECONFIG, notif_api_new(&deps, &api, NULL));
    deps.token = "too-short-0123456789";
    assert_hd_err(HD_ECONFIG, notif_api_new(&deps, &api, &err), &err);
    assert_null(strstr(err.text, "too-short"));       /* never the token in a message */
    deps.token = "0123456789abcdef 0123456789abcdef"; /* a blank */
    assert_hd(HD_ECONFIG, notif_api_new(&deps, &api, NULL));
    assert_hd(0, notif_api_token_check(TOKEN, NULL));
    /* Open is a decision: then no token is needed and none is asked for. */
    broker_state b = {1, 0};
    api_server a;
    api_start(f, &a, NULL, 1, &b);
    assert_int_equal(call(a.port, "GET", "/notifications/preferences/u1", NULL, NULL).status, 200);
    api_stop(&a);
}

/* /health reports the consumer's connection state (an atomic the consumer keeps), so no
 * request opens a broker connection: here there is no broker at all, and it still answers,
 * 200 or 503 as the state says, reading it once a request. */
static void test_api_health_reads_the_broker_state(void **state)
{
    fixture *f = *state;
    broker_state b = {1, 0};
    api_server a;
    api_start(f, &a, TOKEN, 0, &b);
    for (int i = 0; i < 20; i++) {
        http_reply r = call(a.port, "GET", "/health", NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"broker\":\"ok\""));
    }
    assert_int_equal(atomic_load(&b.reads), 20);
    atomic_store(&b.up, 0); /* the consumer lost its connection */
    http_reply r = call(a.port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"broker\":\"down\""));
    assert_non_null(strstr(r.content_type, "application/json"));
    api_stop(&a);
}

static void test_api_preferences(void **state)
{
    fixture *f = *state;
    preferences p;
    hd_error err;
    /* Absent: the defaults. */
    assert_int_equal(notif_prefs_get(&f->w, "u1", &p, &err), 0);
    assert_true(preferences_allows(&p, NOTIFY_WELCOME));
    preferences_release(&p);

    preferences_change c;
    preferences_change_init(&c);
    c.enabled[NOTIFY_WELCOME] = 0;
    assert_hd(0, notif_prefs_create(&f->w, "u1", &c, &p, &err));
    preferences_release(&p);
    assert_hd(HD_EEXIST, notif_prefs_create(&f->w, "u1", &c, &p, &err));

    /* Update merges: only what is named changes. */
    preferences_change_init(&c);
    c.enabled[NOTIFY_SECURITY_ALERT] = 0;
    assert_int_equal(notif_prefs_update(&f->w, "u1", &c, &p, &err), 0);
    preferences_release(&p);
    assert_int_equal(notif_prefs_get(&f->w, "u1", &p, &err), 1);
    assert_false(preferences_allows(&p, NOTIFY_WELCOME));
    assert_false(preferences_allows(&p, NOTIFY_SECURITY_ALERT));
    assert_int_equal(hd_aggregate_version(&p.base), 2);
    preferences_release(&p);

    /* The rule holds through the use case: 422 material, and nothing changes. */
    preferences_change_init(&c);
    c.enabled[NOTIFY_WELCOME] = 1;
    c.enabled[NOTIFY_PASSWORD_RESET] = 0;
    assert_hd_err(HD_EVALIDATE, notif_prefs_update(&f->w, "u1", &c, &p, &err), &err);
    assert_int_equal(notif_prefs_get(&f->w, "u1", &p, &err), 1);
    assert_false(preferences_allows(&p, NOTIFY_WELCOME));
    preferences_release(&p);
    assert_hd(HD_EVALIDATE, notif_prefs_get(&f->w, "bad id", &p, &err));
}

static void test_api_history_pages(void **state)
{
    fixture *f = *state;
    msg *ms[5];
    for (int i = 0; i < 5; i++) {
        ms[i] = registered("u1", "ada@example.com", NULL);
        assert_int_equal(handle(f, ms[i]), HD_CONSUME_OK);
    }
    char next[NOTIF_CURSOR_MAX + 1];
    char cursor[NOTIF_CURSOR_MAX + 1] = "";
    notification *list = NULL;
    size_t n = 0, total = 0;
    hd_error err;
    char seen[5][HD_UUID_LEN + 1];
    for (int page = 0; page < 3; page++) {
        assert_int_equal(notif_history(&f->w, "u1", 2, cursor, &list, &n, next, &err),
                         page < 2 ? 2 : 1);
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k < total; k++)
                assert_string_not_equal(seen[k], notification_id(&list[i]));
            snprintf(seen[total++], sizeof seen[0], "%s", notification_id(&list[i]));
            if (i > 0) /* newest first */
                assert_true(list[i].created_at_ms <= list[i - 1].created_at_ms);
        }
        notif_history_free(list, n);
        assert_true(page < 2 ? next[0] != '\0' : next[0] == '\0');
        snprintf(cursor, sizeof cursor, "%s", next);
    }
    assert_int_equal(total, 5);
    assert_hd(HD_EVALIDATE, notif_history(&f->w, "u1", 2, "garbage", &list, &n, next, &err));
    assert_hd(HD_EVALIDATE, notif_history(&f->w, "u1", 0, NULL, &list, &n, next, &err));
    assert_int_equal(notif_history(&f->w, "nobody", 10, NULL, &list, &n, next, &err), 0);
    notif_history_free(list, n);
    for (int i = 0; i < 5; i++)
        msg_free(ms[i]);
}

static void test_log_line_carries_correlation_id(void **state)
{
    fixture *f = *state;
    /* The log sender's line is the mail's line: it carries the envelope's correlation id. */
    hd_sender *log_sender = NULL;
    assert_hd(0, hd_sender_log_new(f->lg, &log_sender));
    f->w.sender = log_sender;
    msg *m = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, m), HD_CONSUME_OK);
    fflush(f->log_out);
    rewind(f->log_out);
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, f->log_out) != NULL)
        if (strstr(line, "mail sent to the log") && strstr(line, "\"correlation_id\":\"corr-42\""))
            found = 1;
    assert_true(found);
    hd_sender_free(log_sender);
    f->w.sender = f->sender;
    msg_free(m);
}

static void test_metrics_count_what_happens(void **state)
{
    fixture *f = *state;
    hd_metrics *reg = hd_metrics_new();
    notif_metrics m;
    assert_hd(0, notif_metrics_register(reg, &m));
    notif_app_free(f->app);
    notif_settings s = {
        .mail_from = "noreply@herald.example", .max_attempts = 2, .backoff_base_ms = -1};
    assert_hd(0, notif_app_new(&s, f->templates, f->lg, &m, &f->app, NULL));
    notif_worker_init(&f->w, f->app, f->store, f->sender);
    use_sender(f, 1);

    msg *r = registered("u1", "ada@example.com", NULL);
    assert_int_equal(handle(f, r), HD_CONSUME_OK);        /* attempt 1 fails: a retry */
    assert_int_equal(handle(f, r), HD_CONSUME_OK);        /* duplicate */
    assert_int_equal(notif_sweep(&f->w, 0, 10, NULL), 1); /* attempt 2 sent */
    msg *bad = msg_new(USERS_EVENT_RESET_REQUESTED,
                       json_pack("{s:s, s:s}", "user_id", "u2", "email", "b@example.com"), NULL);
    assert_int_equal(handle(f, bad), HD_CONSUME_REJECT);

    double v = 0, count = 0, sum = 0;
    hd_counter_value(m.consumed, (const char *const[]){USERS_EVENT_REGISTERED}, &v);
    assert_true(v == 1);
    hd_counter_value(m.duplicates, NULL, &v);
    assert_true(v == 1);
    hd_counter_value(m.retries, (const char *const[]){"email_verification"}, &v);
    assert_true(v == 1);
    hd_counter_value(m.sent, (const char *const[]){"email_verification"}, &v);
    assert_true(v == 1);
    hd_counter_value(m.rejected, (const char *const[]){"template"}, &v);
    assert_true(v == 1);
    hd_histogram_value(m.send_seconds, (const char *const[]){"memory"}, &count, &sum);
    assert_true(count == 2);
    notif_app_free(f->app);
    f->app = NULL;
    hd_metrics_free(reg);
    assert_hd(0, notif_app_new(&s, f->templates, f->lg, NULL, &f->app, NULL)); /* for teardown */
    msg_free(r);
    msg_free(bad);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_registered_sends_verification_mail),
        T(test_same_event_twice_one_mail),
        T(test_fails_twice_then_sent_after_retries),
        T(test_always_failing_marks_failed_and_emits),
        T(test_retry_waits_for_backoff),
        T(test_welcome_off_is_skipped),
        T(test_welcome_with_empty_name),
        T(test_preferences_address_for_welcome),
        T(test_missing_variable_rejects),
        T(test_invalid_messages_reject),
        T(test_batch_group_commit_and_fallback),
        T(test_an_event_waits_for_its_predecessor),
        T(test_crash_after_commit_is_swept),
        T(test_stored_variables_both_forms),
        T(test_migration_reads_rows_of_step_1),
        T(test_lost_lease_records_nothing),
        T(test_user_deleted_erases),
        T(test_api_send_security_alert),
        T(test_api_send_refusals),
        T(test_api_send_skipped_by_preferences),
        T(test_api_send_only_direct_types),
        T(test_api_send_links_under_base_urls),
        T(test_api_http_needs_the_token),
        T(test_api_http_refuses_to_run_without_a_token),
        T(test_api_health_reads_the_broker_state),
        T(test_api_preferences),
        T(test_api_history_pages),
        T(test_log_line_carries_correlation_id),
        T(test_metrics_count_what_happens),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
