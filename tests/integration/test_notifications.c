/* integration.notifications — herald-notifications against a real RabbitMQ and a real SMTP
 * sink (scripts/servers.sh; HD_AMQP_URL, HD_SMTP_URL and HD_SMTP_MAILDIR are required: a
 * missing server FAILS the test, it never skips).
 *
 * The binary is started as a child process with a temporary SQLite database, its own users
 * exchange and work queue (unique names: the broker may be shared), and a short lease so
 * that crash recovery shows within seconds. Users events are published to the exchange as
 * the users service's relay would (CloudEvents JSON, persistent, confirmed, message-id =
 * envelope id), and the mails are read back from the sink's maildir, one file per message,
 * found by their recipient, which carries a tag unique to this run.
 *
 * What is shown, in order:
 *   1. a users.user_registered event becomes one mail with the verification link, the
 *      envelope's correlation id and a Message-ID derived from the notification id;
 *   2. the same envelope delivered twice gives one mail (the inbox);
 *   3. a message missing a template variable ends in the dead-letter queue with the reason;
 *   4. notifications.notification_sent reaches a queue bound to the "notifications" topic;
 *   5. the HTTP endpoints answer with the right status codes and problem+json; every route
 *      but /health and /metrics needs the bearer token (none or a wrong one: 401 with
 *      WWW-Authenticate: Bearer); direct sends are for security_alert only and their links
 *      must start with HD_NOTIFICATIONS_LINK_BASE_URL; without a token the service refuses
 *      to start (exit 2);
 *   6. every path and method of docs/openapi/notifications.openapi.json answers with a
 *      status the document lists;
 *   7. SIGKILL mid-stream (200 events, killed after ~50 mails, restarted): every event
 *      yields a mail (duplicates are counted and reported: at-least-once allows them);
 *   8. SIGTERM mid-stream exits 0 and loses nothing (the restart delivers the rest);
 *   9. the same service on PostgreSQL (a database created for the run): consuming, the
 *      sweeper's claim, preferences, history paging and the erasure of a deleted user;
 *  10. SIGTERM when idle exits 0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "hd_proc.h"
#include "hd_service_test.h"
#include "hd_test.h"
#include "notif_step1.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/consumer.h"
#include "herald/envelope.h"
#include "herald/publisher.h"
#include "herald/store.h"
#include "herald/topology.h"

#include "notifications/integration.h"
#include "notifications/repository.h"

#define KILL_EVENTS 200
#define TERM_EVENTS 100

/* The API's bearer token (HD_NOTIFICATIONS_API_TOKEN) and its allowed link prefix. */
#define API_TOKEN     "it-notifications-0123456789abcdef0123456789abcdef"
#define LINK_BASE_URL "https://app.example.com/"

typedef struct world {
    const char *amqp_url, *smtp_url, *maildir;
    char *tmp;
    char *tag;          /* unique to this run: in every recipient address */
    char *exchange;     /* the users exchange of this run */
    char *queue;        /* the service's work queue */
    char *events_queue; /* bound to notifications.# on "notifications" */
    char db_url[600];
    const char *pg_url;
    char pg_db[128]; /* the database of the PostgreSQL phase, created and dropped here */
    char log_path[600];
    int port;
    hd_proc *proc; /* the service, supervised by tests/support/hd_proc */
    hd_amqp *amqp;
    hd_publisher *pub;
} world;

static world W;

/* ---- the child process ------------------------------------------------------------------- */

static long http(const char *method, const char *path, const char *body, char **resp,
                 char *content_type, size_t ct_cap);
static long http_auth(const char *auth, const char *method, const char *path, const char *body,
                      char **resp, char *content_type, size_t ct_cap);

static void start_service(int prefetch)
{
    char listen[64], pf[32], db[700], exchange[300], queue[300], smtp[600];
    snprintf(listen, sizeof listen, "HD_NOTIFICATIONS_LISTEN=127.0.0.1:%d", W.port);
    snprintf(pf, sizeof pf, "HD_PREFETCH=%d", prefetch);
    snprintf(db, sizeof db, "HD_DATABASE_URL=%s", W.db_url);
    snprintf(exchange, sizeof exchange, "HD_USERS_EXCHANGE=%s", W.exchange);
    snprintf(queue, sizeof queue, "HD_NOTIFICATIONS_QUEUE=%s", W.queue);
    snprintf(smtp, sizeof smtp, "HD_SMTP_URL=%s", W.smtp_url);
    const char *env[] = {db,
                         listen,
                         exchange,
                         queue,
                         smtp,
                         "HD_SENDER=smtp",
                         "HD_SMTP_TIMEOUT_MS=1000",
                         "HD_NOTIFY_LEASE_MS=3000",
                         "HD_NOTIFY_SWEEP_MS=200",
                         "HD_NOTIFY_BACKOFF_BASE_MS=200",
                         "HD_TEMPLATES_DIR=" HD_SOURCE_DIR "/templates",
                         pf,
                         "HD_LOG_LEVEL=info",
                         "HD_NOTIFICATIONS_API_TOKEN=" API_TOKEN,
                         "HD_NOTIFICATIONS_LINK_BASE_URL=" LINK_BASE_URL,
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-notifications", NULL};
    hd_proc_options o = {.argv = argv, .env = env, .log_path = W.log_path};
    hd_proc_free(W.proc); /* the previous run, stopped or killed by the test */
    W.proc = NULL;
    /* Ready when /health says so (the consumer is connected). */
    hd_test_service_start(&o, W.port, 30000, &W.proc);
}

/* SIGTERM: it must exit 0 within 20 s (SIGKILL after that, and the test fails). */
static void stop_service(void)
{
    hd_error err;
    int rc = hd_proc_stop(W.proc, 20000, &err);
    if (rc < 0)
        hd_proc_dump_log(W.proc, stderr, 30);
    assert_hd_err(0, rc, &err);
}

/* kill -9, mid-stream. */
static void kill_service(void)
{
    hd_error err;
    assert_hd_err(0, hd_proc_kill(W.proc, &err), &err); /* 0: it was still running */
    assert_int_equal(hd_proc_term_signal(W.proc), SIGKILL);
}

/* ---- HTTP -------------------------------------------------------------------------------- */

typedef hd_test_body buf;

/* One request with the API's token; the status (0 when the server did not answer), the body
 * (new, may be NULL) and the Content-Type (may be NULL). */
static long http(const char *method, const char *path, const char *body, char **resp,
                 char *content_type, size_t ct_cap)
{
    return http_auth("Bearer " API_TOKEN, method, path, body, resp, content_type, ct_cap);
}

/* The same with the Authorization header auth (NULL: none). */
static long http_auth(const char *auth, const char *method, const char *path, const char *body,
                      char **resp, char *content_type, size_t ct_cap)
{
    char url[1024];
    if ((size_t)snprintf(url, sizeof url, "http://127.0.0.1:%d%s", W.port, path) >= sizeof url)
        fail_msg("path too long: %s", path);
    char authorization[256];
    const char *headers[] = {authorization, NULL};
    if (auth != NULL)
        snprintf(authorization, sizeof authorization, "Authorization: %s", auth);
    return hd_test_http(method, url, auth != NULL ? headers : NULL, body, NULL, resp, content_type,
                        ct_cap);
}

/* Expect status for the request; problem+json when it is an error. Returns the body (new). */
static char *expect(long status, const char *method, const char *path, const char *body)
{
    char *resp = NULL;
    char ct[128] = "";
    long got = http(method, path, body, &resp, ct, sizeof ct);
    if (got != status)
        fail_msg("%s %s: expected %ld, got %ld: %s", method, path, status, got,
                 resp ? resp : "(no body)");
    if (status >= 400 && strstr(ct, "application/problem+json") == NULL)
        fail_msg("%s %s: %ld without problem+json (Content-Type: %s)", method, path, status, ct);
    return resp;
}

/* ---- publishing users events -------------------------------------------------------------- */

static char *recipient(const char *kind, int i)
{
    char *s = malloc(256);
    snprintf(s, 256, "%s%d-%s@example.com", kind, i, W.tag);
    return s;
}

/* Publish a users event as the users service's relay would (persistent, mandatory,
 * confirmed later with hd_publisher_wait). id NULL = fresh. Returns the envelope id (new). */
static char *publish(const char *type, json_t *data, const char *id, const char *cid)
{
    hd_envelope *env = hd_envelope_new(type, 1, "herald-users", data);
    assert_non_null(env);
    if (id != NULL)
        assert_hd(0, hd_envelope_set_id(env, id));
    assert_hd(0, hd_envelope_set_correlation_id(env, cid));
    char *body = NULL;
    size_t len = 0;
    assert_hd(0, hd_envelope_encode(env, &body, &len, NULL));
    hd_message m = {.exchange = W.exchange,
                    .routing_key = type,
                    .body = body,
                    .len = len,
                    .content_type = HD_CLOUDEVENTS_MEDIA_TYPE,
                    .type = type,
                    .message_id = hd_envelope_id(env),
                    .correlation_id = cid};
    hd_error err;
    assert_hd_err(0, hd_publisher_publish(W.pub, &m, NULL, &err), &err);
    char *copy = strdup(hd_envelope_id(env));
    free(body);
    hd_envelope_free(env);
    return copy;
}

static void confirm_all(void)
{
    hd_error err;
    assert_hd_err(0, hd_publisher_wait(W.pub, 30000, &err), &err);
}

static char *publish_registered(const char *to, const char *link, const char *id, const char *cid)
{
    return publish("users.user_registered",
                   json_pack("{s:s, s:s, s:s, s:s}", "user_id", "u-int", "email", to, "name", "Ada",
                             "verification_link", link),
                   id, cid);
}

/* ---- reading the maildir ------------------------------------------------------------------- */

/* Undo quoted-printable enough to search the text: soft line breaks and "=3D". In place. */
static void unqp(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (r[0] == '=' && r[1] == '\r' && r[2] == '\n')
            r += 3;
        else if (r[0] == '=' && r[1] == '\n')
            r += 2;
        else if (r[0] == '=' && r[1] == '3' && r[2] == 'D') {
            *w++ = '=';
            r += 3;
        } else
            *w++ = *r++;
    }
    *w = '\0';
}

/* The mails (new strings, decoded) whose envelope recipient is `to`; *n of them. */
static char **mails_to(const char *to, size_t *n)
{
    char needle[300];
    snprintf(needle, sizeof needle, "X-Envelope-To: %s\r\n", to);
    char needle_lf[300];
    snprintf(needle_lf, sizeof needle_lf, "X-Envelope-To: %s\n", to);
    char **out = NULL;
    *n = 0;
    DIR *d = opendir(W.maildir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".eml") == NULL)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", W.maildir, e->d_name);
        char *s = hd_test_read_file(path);
        if (s != NULL && (strstr(s, needle) != NULL || strstr(s, needle_lf) != NULL)) {
            unqp(s);
            out = realloc(out, (*n + 1) * sizeof *out);
            out[(*n)++] = s;
        } else {
            free(s);
        }
    }
    closedir(d);
    return out;
}

static void free_mails(char **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i]);
    free(m);
}

/* Count the mails of every run-tagged recipient "<kind><i>-tag@..." for i < n: how many
 * recipients got at least one, and how many extra copies there are. One directory scan. */
static void count_kind(const char *kind, int n, int *distinct, int *dups)
{
    int *seen = calloc((size_t)n, sizeof *seen);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "X-Envelope-To: %s", kind);
    DIR *d = opendir(W.maildir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".eml") == NULL)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", W.maildir, e->d_name);
        char *s = hd_test_read_file(path);
        char *p = s ? strstr(s, prefix) : NULL;
        if (p != NULL) {
            int i = -1;
            char tag[200];
            if (sscanf(p + strlen(prefix), "%d-%199[^@]", &i, tag) == 2 &&
                strcmp(tag, W.tag) == 0 && i >= 0 && i < n)
                seen[i]++;
        }
        free(s);
    }
    closedir(d);
    *distinct = *dups = 0;
    for (int i = 0; i < n; i++) {
        *distinct += seen[i] > 0;
        *dups += seen[i] > 1 ? seen[i] - 1 : 0;
    }
    free(seen);
}

/* Wait until `to` has at least want mails; returns them. */
static char **wait_mails(const char *to, size_t want, size_t *n, int timeout_ms)
{
    int64_t until = hd_clock_ms() + timeout_ms;
    for (;;) {
        char **m = mails_to(to, n);
        if (*n >= want || hd_clock_ms() > until)
            return m;
        free_mails(m, *n);
        hd_sleep_ms(50);
    }
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    W.amqp_url = hd_test_require_env("HD_AMQP_URL");
    W.smtp_url = hd_test_require_env("HD_SMTP_URL");
    W.maildir = hd_test_require_env("HD_SMTP_MAILDIR");
    W.pg_url = hd_test_require_env("HD_PG_URL");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    W.tmp = hd_test_tmpdir("notifications");
    W.tag = hd_test_unique_name("n");
    W.exchange = hd_test_unique_name("users");
    W.queue = hd_test_unique_name("users.notifications");
    W.events_queue = hd_test_unique_name("notifications-events");
    snprintf(W.db_url, sizeof W.db_url, "sqlite://%s/notifications.db", W.tmp);
    snprintf(W.log_path, sizeof W.log_path, "%s/service.log", W.tmp);
    W.port = hd_test_free_port();
    hd_error err;
    assert_hd_err(0, hd_amqp_open(W.amqp_url, NULL, &W.amqp, &err), &err);
    assert_hd_err(0, hd_publisher_new(W.amqp, NULL, &W.pub, &err), &err);
    /* A queue of our own on the service's topic, to see what it emits. */
    hd_exchange_spec ex = {.name = "notifications", .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec q = {.name = W.events_queue, .durable = 0, .auto_delete = 0};
    hd_binding_spec b = {
        .queue = W.events_queue, .exchange = "notifications", .key = "notifications.#"};
    assert_hd_err(0, hd_exchange_declare(W.amqp, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(W.amqp, &q, NULL, &err), &err);
    assert_hd_err(0, hd_queue_bind(W.amqp, &b, &err), &err);
    fprintf(stderr, "# service log: %s\n", W.log_path);
    start_service(100);
    return 0;
}

/* Run one statement on the PostgreSQL server's default database (outside a transaction:
 * CREATE DATABASE refuses to run in one). The database name is ours, made of [a-z0-9_]. */
static int pg_admin(const char *sql, hd_error *err)
{
    hd_store *st = NULL;
    int rc = hd_store_open(W.pg_url, &st, err);
    if (rc == 0)
        rc = hd_store_exec(st, sql, NULL, 0, err);
    hd_store_close(st);
    return rc < 0 ? rc : 0;
}

static void drop_pg_database(void)
{
    if (W.pg_db[0] == '\0')
        return;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", W.pg_db);
    hd_error err;
    if (pg_admin(sql, &err) < 0)
        fprintf(stderr, "# cannot drop %s: %s\n", W.pg_db, err.text);
    W.pg_db[0] = '\0';
}

static int group_teardown(void **state)
{
    (void)state;
    hd_proc_free(W.proc); /* SIGKILL if it still runs */
    W.proc = NULL;
    hd_error err;
    drop_pg_database();
    hd_consumer_undeclare(W.amqp, W.queue, NULL, &err);
    hd_queue_delete(W.amqp, W.events_queue, NULL, &err);
    hd_exchange_delete(W.amqp, W.exchange, &err);
    hd_publisher_free(W.pub);
    hd_amqp_close(W.amqp);
    if (getenv("HD_KEEP_TMP") == NULL)
        hd_test_rmtree(W.tmp);
    free(W.tmp);
    free(W.tag);
    free(W.exchange);
    free(W.queue);
    free(W.events_queue);
    curl_global_cleanup();
    return 0;
}

/* ---- 1, 2, 3: consuming ------------------------------------------------------------------- */

static void test_registered_event_sends_mail(void **state)
{
    (void)state;
    char *to = recipient("reg", 0);
    char link[256];
    snprintf(link, sizeof link, "https://app.example.com/verify?token=tok-%s", W.tag);
    free(publish_registered(to, link, NULL, "corr-int-1"));
    confirm_all();
    size_t n = 0;
    char **m = wait_mails(to, 1, &n, 20000);
    assert_int_equal(n, 1);
    assert_non_null(strstr(m[0], link));
    assert_non_null(strstr(m[0], "X-Correlation-Id: corr-int-1"));
    assert_non_null(strstr(m[0], "Message-ID: <"));
    assert_non_null(strstr(m[0], "@herald.example>"));
    free_mails(m, n);
    free(to);
}

static void test_duplicate_delivery_one_mail(void **state)
{
    (void)state;
    char *to = recipient("dup", 0);
    char *id = publish_registered(to, "https://app.example.com/verify?token=dup", NULL, "c-dup");
    free(publish_registered(to, "https://app.example.com/verify?token=dup", id, "c-dup"));
    confirm_all();
    size_t n = 0;
    char **m = wait_mails(to, 1, &n, 20000);
    free_mails(m, n);
    hd_sleep_ms(1500); /* time for a second mail, if one were coming */
    m = mails_to(to, &n);
    assert_int_equal(n, 1);
    free_mails(m, n);
    free(id);
    free(to);
}

static void test_missing_variable_dead_letters(void **state)
{
    (void)state;
    char *to = recipient("poison", 0);
    free(publish("users.user_registered",
                 json_pack("{s:s, s:s, s:s}", "user_id", "u-p", "email", to, "name", "Eve"), NULL,
                 "c-poison"));
    confirm_all();
    char dlq[300];
    snprintf(dlq, sizeof dlq, "%s.dlq", W.queue);
    hd_queue_info info;
    hd_error err;
    int64_t until = hd_clock_ms() + 20000;
    do {
        hd_sleep_ms(100);
        assert_hd_err(0, hd_queue_inspect(W.amqp, dlq, &info, &err), &err);
    } while (info.message_count == 0 && hd_clock_ms() < until);
    assert_int_equal(info.message_count, 1);
    /* The reason travels with the dead letter. */
    amqp_connection_state_t st = hd_amqp_state(W.amqp);
    amqp_rpc_reply_t r = amqp_basic_get(st, hd_amqp_channel(W.amqp), amqp_cstring_bytes(dlq), 1);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_message_t msg;
    assert_int_equal(amqp_read_message(st, hd_amqp_channel(W.amqp), &msg, 0).reply_type,
                     AMQP_RESPONSE_NORMAL);
    int found = 0;
    amqp_table_t *h = &msg.properties.headers;
    for (int i = 0; i < h->num_entries; i++) {
        amqp_table_entry_t *e = &h->entries[i];
        if (e->key.len == strlen(HD_HEADER_REASON) &&
            memcmp(e->key.bytes, HD_HEADER_REASON, e->key.len) == 0 &&
            e->value.kind == AMQP_FIELD_KIND_UTF8) {
            char reason[512];
            snprintf(reason, sizeof reason, "%.*s", (int)e->value.value.bytes.len,
                     (const char *)e->value.value.bytes.bytes);
            assert_non_null(strstr(reason, "verification_link"));
            found = 1;
        }
    }
    amqp_destroy_message(&msg);
    assert_true(found);
    size_t n = 0;
    char **m = mails_to(to, &n);
    assert_int_equal(n, 0);
    free_mails(m, n);
    free(to);
}

/* ---- 4: what the service emits ------------------------------------------------------------ */

static void test_notification_sent_is_published(void **state)
{
    (void)state;
    hd_queue_info info;
    hd_error err;
    int64_t until = hd_clock_ms() + 20000;
    do {
        hd_sleep_ms(100);
        assert_hd_err(0, hd_queue_inspect(W.amqp, W.events_queue, &info, &err), &err);
    } while (info.message_count < 2 && hd_clock_ms() < until);
    /* One notification_sent per mail so far: registered + duplicate. */
    assert_true(info.message_count >= 2);
    amqp_connection_state_t st = hd_amqp_state(W.amqp);
    amqp_rpc_reply_t r =
        amqp_basic_get(st, hd_amqp_channel(W.amqp), amqp_cstring_bytes(W.events_queue), 1);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_message_t msg;
    assert_int_equal(amqp_read_message(st, hd_amqp_channel(W.amqp), &msg, 0).reply_type,
                     AMQP_RESPONSE_NORMAL);
    hd_registry *reg = hd_registry_new();
    hd_registry_add(reg, "notifications.notification_sent", 1, NULL, NULL);
    hd_envelope *env = NULL;
    assert_hd_err(0, hd_envelope_decode(reg, msg.body.bytes, msg.body.len, &env, &err), &err);
    json_t *data = hd_envelope_data(env);
    assert_non_null(json_object_get(data, "notification_id"));
    assert_null(json_object_get(data, "recipient"));
    assert_non_null(hd_envelope_correlation_id(env));
    hd_envelope_free(env);
    hd_registry_free(reg);
    amqp_destroy_message(&msg);
}

/* The value of the series that starts a line with `series` (name, labels and the space
 * before the value) in a /metrics body; fails the test when it is not there. */
static double metric_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; p != NULL; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0)
            return strtod(p + n, NULL);
    fail_msg("no series '%s' in /metrics:\n%s", series, body);
    return -1;
}

/* ---- 5: the HTTP API ----------------------------------------------------------------------- */

static void test_http_endpoints(void **state)
{
    (void)state;
    char user[128], path[256], body[1024];
    snprintf(user, sizeof user, "api-%s", W.tag);
    char *to = recipient("api", 0);

    /* Send directly: 202 + Location, then the notification shows as sent. */
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"event\":\"new sign-in\",\"time\":\"now\"}}",
             user, to);
    char *resp = expect(202, "POST", "/notifications", body);
    json_t *j = json_loads(resp, 0, NULL);
    snprintf(path, sizeof path, "/notifications/%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    free(resp);
    int sent = 0;
    for (int i = 0; i < 100 && !sent; i++) {
        resp = expect(200, "GET", path, NULL);
        sent = strstr(resp, "\"status\":\"sent\"") != NULL;
        free(resp);
        if (!sent)
            hd_sleep_ms(100);
    }
    assert_true(sent);
    size_t n = 0;
    char **m = mails_to(to, &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(m[0], "Security alert: new sign-in"));
    free_mails(m, n);

    free(expect(400, "POST", "/notifications", "{not json"));
    free(expect(400, "POST", "/notifications", "{\"user_id\":1}"));
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"type\":\"marketing\",\"recipient\":\"%s\"}",
             user, to);
    free(expect(422, "POST", "/notifications", body));
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\"}}",
             user, to);
    resp = expect(422, "POST", "/notifications", body);
    assert_non_null(strstr(resp, "missing variable"));
    free(resp);
    free(expect(404, "GET", "/notifications/6be4cbf7-2f78-47f5-896a-278b2d45a232", NULL));

    /* Preferences: defaults, create, 409, the non-switchable rule, update. */
    snprintf(path, sizeof path, "/notifications/preferences/%s", user);
    resp = expect(200, "GET", path, NULL);
    assert_non_null(strstr(resp, "\"stored\":false"));
    free(resp);
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"preferences\":{\"welcome\":false}}", user);
    free(expect(201, "POST", "/notifications/preferences", body));
    free(expect(409, "POST", "/notifications/preferences", body));
    resp = expect(422, "PUT", path, "{\"preferences\":{\"password_reset\":false}}");
    assert_non_null(strstr(resp, "cannot be switched off"));
    free(resp);
    free(expect(422, "PUT", path, "{\"preferences\":{\"marketing\":true}}"));
    free(expect(400, "PUT", path, "{\"preferences\":{\"welcome\":\"no\"}}"));
    free(expect(422, "PUT", path, "{\"email\":\"not an address\"}"));
    resp = expect(200, "PUT", path, "{\"preferences\":{\"security_alert\":false}}");
    assert_non_null(strstr(resp, "\"welcome\":false"));
    assert_non_null(strstr(resp, "\"security_alert\":false"));
    free(resp);
    free(expect(400, "GET", "/notifications/preferences/bad%20id", NULL));

    /* History: newest first, paged. */
    snprintf(path, sizeof path, "/notifications/history/%s?limit=1", user);
    resp = expect(200, "GET", path, NULL);
    assert_non_null(strstr(resp, "\"items\":["));
    free(resp);
    snprintf(path, sizeof path, "/notifications/history/%s?cursor=nonsense", user);
    free(expect(400, "GET", path, NULL));
    snprintf(path, sizeof path, "/notifications/history/%s?limit=0", user);
    free(expect(400, "GET", path, NULL));

    resp = expect(200, "GET", "/health", NULL);
    assert_non_null(strstr(resp, "\"status\":\"ok\""));
    free(resp);
    resp = expect(200, "GET", "/metrics", NULL);
    assert_non_null(strstr(resp, "notifications_sent_total{type=\"email_verification\"}"));
    assert_non_null(strstr(resp, "notifications_duplicates_total"));
    assert_non_null(strstr(resp, "notifications_send_duration_seconds_bucket"));
    /* The operating metrics (docs/metrics.md), with plausible values: the outbox gauges
     * under the names the users service uses too; the relay confirmed the
     * notifications.notification_sent events of test 4, so its latency histogram has
     * observations; the DLQ depth was sampled when the consumer started. */
    assert_true(metric_value(resp, "outbox_pending ") >= 0);
    assert_true(metric_value(resp, "outbox_oldest_age_seconds ") >= 0);
    assert_true(metric_value(resp, "outbox_parked ") == 0);
    double confirms = metric_value(resp, "relay_publish_confirm_seconds_count ");
    assert_true(confirms >= 1);
    assert_true(metric_value(resp, "relay_publish_confirm_seconds_bucket{le=\"+Inf\"} ") ==
                confirms);
    double seconds = metric_value(resp, "relay_publish_confirm_seconds_sum ");
    assert_true(seconds > 0 && seconds / confirms < 5);
    char series[400];
    snprintf(series, sizeof series, "consumer_redeliveries_total{queue=\"%s\"} ", W.queue);
    assert_true(metric_value(resp, series) >= 0);
    snprintf(series, sizeof series, "dead_letter_queue_messages{queue=\"%s.dlq\"} ", W.queue);
    assert_true(metric_value(resp, series) >= 0);
    free(resp);
    free(expect(404, "GET", "/nowhere", NULL));
    free(to);
}

/* ---- 5b: who may call the API, and what a direct send may carry ------------------------------ */

static void expect_401(const char *auth, const char *method, const char *path, const char *body)
{
    char *resp = NULL;
    char ct[128] = "";
    long got = http_auth(auth, method, path, body, &resp, ct, sizeof ct);
    if (got != 401)
        fail_msg("%s %s with %s: expected 401, got %ld: %s", method, path,
                 auth ? "a wrong token" : "no token", got, resp ? resp : "");
    assert_non_null(strstr(ct, "application/problem+json"));
    free(resp);
}

static void test_http_token_and_direct_send_rules(void **state)
{
    (void)state;
    char user[128], path[256], body[1024];
    snprintf(user, sizeof user, "auth-%s", W.tag);
    char *to = recipient("auth", 0);
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"event\":\"e\",\"time\":\"now\"}}",
             user, to);
    snprintf(path, sizeof path, "/notifications/history/%s", user);
    const char *wrong = "Bearer it-notifications-0123456789abcdef0123456789abcdeF";
    expect_401(NULL, "POST", "/notifications", body);
    expect_401(wrong, "POST", "/notifications", body);
    expect_401(NULL, "GET", path, NULL);
    expect_401(wrong, "GET", path, NULL);
    free(expect(200, "GET", path, NULL)); /* the right token */
    /* The WWW-Authenticate challenge, as RFC 6750 says. */
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", W.port, path);
    CURL *c = curl_easy_init();
    buf hdrs = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hd_test_body_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hdrs);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hd_test_body_write);
    buf ignored = {0};
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ignored);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    assert_non_null(hdrs.data);
    assert_non_null(strstr(hdrs.data, "WWW-Authenticate: Bearer"));
    free(hdrs.data);
    free(ignored.data);
    /* /health and /metrics stay open. */
    assert_int_equal(http_auth(NULL, "GET", "/health", NULL, NULL, NULL, 0), 200);
    assert_int_equal(http_auth(NULL, "GET", "/metrics", NULL, NULL, NULL, 0), 200);

    /* Direct sends: security_alert only (422 for the others, token or not). */
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"password_reset\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"reset_link\":\"%sreset?token=x\"}}",
             user, to, LINK_BASE_URL);
    char *resp = expect(422, "POST", "/notifications", body);
    assert_non_null(strstr(resp, "cannot be sent directly"));
    free(resp);
    /* Links only under the configured base URL. */
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"event\":\"e\",\"time\":\"now\","
             "\"account_url\":\"https://evil.test/account\"}}",
             user, to);
    resp = expect(422, "POST", "/notifications", body);
    assert_non_null(strstr(resp, "HD_NOTIFICATIONS_LINK_BASE_URL"));
    free(resp);
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"event\":\"e\",\"time\":\"now\","
             "\"account_url\":\"%saccount\"}}",
             user, to, LINK_BASE_URL);
    free(expect(202, "POST", "/notifications", body));
    free(to);
}

/* Without HD_NOTIFICATIONS_API_TOKEN (and not HD_NOTIFICATIONS_API_OPEN) the service does
 * not start: exit 2, a configuration error, before it listens or touches the broker. */
static void test_start_without_token_is_refused(void **state)
{
    (void)state;
    char listen[64], log_path[700];
    snprintf(listen, sizeof listen, "HD_NOTIFICATIONS_LISTEN=127.0.0.1:%d", hd_test_free_port());
    snprintf(log_path, sizeof log_path, "%s/no-token.log", W.tmp);
    char amqp[600];
    snprintf(amqp, sizeof amqp, "HD_AMQP_URL=%s", W.amqp_url);
    const char *env_none[] = {amqp, listen, "HD_DATABASE_URL=sqlite:///nonexistent/x.db", NULL};
    const char *env_short[] = {amqp, listen, "HD_DATABASE_URL=sqlite:///nonexistent/x.db",
                               "HD_NOTIFICATIONS_API_TOKEN=short", NULL};
    const char *const *envs[] = {env_none, env_short};
    const char *argv[] = {HD_BINARY_DIR "/herald-notifications", NULL};
    for (int i = 0; i < 2; i++) {
        hd_proc_options o = {.argv = argv,
                             .env = envs[i],
                             .env_drop_prefix = "HD_NOTIFICATIONS_API", /* none inherited */
                             .cwd = W.tmp,                              /* no ./.env with a token */
                             .log_path = log_path};
        hd_proc *p = NULL;
        hd_error err;
        assert_hd_err(0, hd_proc_start(&o, &p, &err), &err);
        assert_hd_err(0, hd_proc_wait(p, 10000, &err), &err);
        assert_int_equal(hd_proc_exit_code(p), 2);
        hd_proc_free(p);
    }
    char *log = hd_test_read_file(log_path);
    assert_non_null(log);
    assert_non_null(strstr(log, "HD_NOTIFICATIONS_API_TOKEN is required"));
    assert_non_null(strstr(log, "at least 32 characters"));
    free(log);
}

/* ---- 6: the server against its OpenAPI document -------------------------------------------- */

/* The path with its parameters filled: {id} a notification of ours, {user_id} a user. */
static void fill_path(const char *tpl, const char *id, const char *user, char *out, size_t cap)
{
    size_t w = 0;
    for (const char *p = tpl; *p && w + 1 < cap;) {
        const char *val = NULL;
        if (strncmp(p, "{id}", 4) == 0)
            val = id, p += 4;
        else if (strncmp(p, "{user_id}", 9) == 0)
            val = user, p += 9;
        if (val != NULL)
            w += (size_t)snprintf(out + w, cap - w, "%s", val);
        else
            out[w++] = *p++;
    }
    out[w < cap ? w : cap - 1] = '\0';
}

static void test_openapi_contract(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *doc =
        json_load_file(HD_SOURCE_DIR "/docs/openapi/notifications.openapi.json", 0, &jerr);
    if (doc == NULL)
        fail_msg("openapi: %s at line %d", jerr.text, jerr.line);
    /* A notification that exists, for GET /notifications/{id}. */
    char body[512], id[64] = "", user[128];
    snprintf(user, sizeof user, "oa-%s", W.tag);
    char *to = recipient("oa", 0);
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"A\",\"event\":\"e\",\"time\":\"t\"}}",
             user, to);
    char *resp = expect(202, "POST", "/notifications", body);
    json_t *j = json_loads(resp, 0, NULL);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    free(resp);

    const char *tpl;
    json_t *ops;
    int checked = 0;
    json_object_foreach(json_object_get(doc, "paths"), tpl, ops)
    {
        const char *method;
        json_t *op;
        json_object_foreach(ops, method, op)
        {
            char upper[16], path[512];
            size_t k = 0;
            for (; method[k] && k < sizeof upper - 1; k++)
                upper[k] = (char)(method[k] - 'a' + 'A');
            upper[k] = '\0';
            fill_path(tpl, id, user, path, sizeof path);
            /* The documented example body, with our user id where it has one. */
            json_t *media = json_object_get(
                json_object_get(json_object_get(op, "requestBody"), "content"), "application/json");
            json_t *ex = json_object_get(media, "example");
            char *req = NULL;
            if (ex != NULL) {
                json_t *copy = json_deep_copy(ex);
                if (json_object_get(copy, "user_id") != NULL)
                    json_object_set_new(copy, "user_id", json_string(user));
                if (json_object_get(copy, "recipient") != NULL)
                    json_object_set_new(copy, "recipient", json_string(to));
                req = json_dumps(copy, JSON_COMPACT);
                json_decref(copy);
            }
            char *out = NULL;
            long st = http(upper, path, req, &out, NULL, 0);
            char code[8];
            snprintf(code, sizeof code, "%ld", st);
            if (json_object_get(json_object_get(op, "responses"), code) == NULL)
                fail_msg("%s %s answered %ld, which the document does not list: %s", upper, path,
                         st, out ? out : "");
            free(out);
            free(req);
            checked++;
        }
    }
    assert_int_equal(checked, 8);
    json_decref(doc);
    free(to);
}

/* ---- 7, 8, 9: crashes and stops ------------------------------------------------------------- */

static void publish_many(const char *kind, int n)
{
    for (int i = 0; i < n; i++) {
        char *to = recipient(kind, i);
        char link[128], cid[64];
        snprintf(link, sizeof link, "https://app.example.com/verify?token=%s%d", kind, i);
        snprintf(cid, sizeof cid, "c-%s-%d", kind, i);
        free(publish_registered(to, link, NULL, cid));
        free(to);
    }
    confirm_all();
}

/* Wait until at least `want` distinct recipients of kind got a mail. */
static int wait_distinct(const char *kind, int n, int want, int timeout_ms, int *dups)
{
    int distinct = 0;
    int64_t until = hd_clock_ms() + timeout_ms;
    do {
        count_kind(kind, n, &distinct, dups);
        if (distinct >= want)
            break;
        hd_sleep_ms(20);
    } while (hd_clock_ms() < until);
    return distinct;
}

static void test_sigkill_mid_stream_loses_nothing(void **state)
{
    (void)state;
    /* A small window, so that the kill lands with work in every state: unacked deliveries,
     * committed but unsent notifications, sent but unrecorded ones. */
    stop_service();
    start_service(10);
    publish_many("kill", KILL_EVENTS);
    int dups = 0;
    int before = wait_distinct("kill", KILL_EVENTS, 50, 30000, &dups);
    kill_service();
    count_kind("kill", KILL_EVENTS, &before, &dups);
    fprintf(stderr, "# SIGKILL after %d of %d mails\n", before, KILL_EVENTS);
    start_service(10);
    int after = wait_distinct("kill", KILL_EVENTS, KILL_EVENTS, 60000, &dups);
    fprintf(stderr, "# after restart: %d of %d events have a mail, %d duplicate mail(s)\n", after,
            KILL_EVENTS, dups);
    assert_int_equal(after, KILL_EVENTS);
}

static void test_sigterm_mid_stream_exits_0_and_loses_nothing(void **state)
{
    (void)state;
    publish_many("term", TERM_EVENTS);
    int dups = 0;
    int before = wait_distinct("term", TERM_EVENTS, 20, 30000, &dups);
    stop_service(); /* exit 0 */
    count_kind("term", TERM_EVENTS, &before, &dups);
    fprintf(stderr, "# SIGTERM after %d of %d mails: exit 0\n", before, TERM_EVENTS);
    start_service(100);
    int after = wait_distinct("term", TERM_EVENTS, TERM_EVENTS, 60000, &dups);
    fprintf(stderr, "# after restart: %d of %d, %d duplicate mail(s)\n", after, TERM_EVENTS, dups);
    assert_int_equal(after, TERM_EVENTS);
}

/* ---- 9: the same on PostgreSQL ----------------------------------------------------------------
 */

/* A URL for database db on the server of HD_PG_URL: its path replaced. */
static void pg_url_for(const char *db, char *out, size_t cap)
{
    const char *slash = strstr(W.pg_url, "://");
    slash = slash ? strchr(slash + 3, '/') : NULL;
    size_t base = slash ? (size_t)(slash - W.pg_url) : strlen(W.pg_url);
    const char *query = strchr(W.pg_url, '?');
    snprintf(out, cap, "%.*s/%s%s", (int)base, W.pg_url, db, query ? query : "");
}

static void test_postgresql_store(void **state)
{
    (void)state;
    snprintf(W.pg_db, sizeof W.pg_db, "notif_%ld_%lx", (long)getpid(),
             (unsigned long)(hd_clock_ns() & 0xffffff));
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", W.pg_db);
    hd_error err;
    assert_hd_err(0, pg_admin(sql, &err), &err);
    stop_service();
    pg_url_for(W.pg_db, W.db_url, sizeof W.db_url);
    start_service(100);

    /* Consuming: one mail per event, the duplicate skipped. */
    char user[128];
    snprintf(user, sizeof user, "pg-%s", W.tag);
    char *first = NULL;
    for (int i = 0; i < 7; i++) {
        char *to = recipient("pg", i);
        char *id = publish("users.user_registered",
                           json_pack("{s:s, s:s, s:s, s:s}", "user_id", user, "email", to, "name",
                                     "Ada", "verification_link", "https://app.example.com/v?t=pg"),
                           NULL, "c-pg");
        if (i == 0)
            first = strdup(to);
        free(id);
        free(to);
    }
    confirm_all();
    int dups = 0;
    assert_int_equal(wait_distinct("pg", 7, 7, 30000, &dups), 7);
    assert_int_equal(dups, 0);

    /* The sweeper's claim: a notification asked for through the API. */
    char body[512], path[512];
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"type\":\"security_alert\",\"recipient\":\"%s\","
             "\"variables\":{\"name\":\"Ada\",\"event\":\"pg\",\"time\":\"now\"}}",
             user, first);
    free(expect(202, "POST", "/notifications", body));
    size_t n = 0;
    char **m = wait_mails(first, 2, &n, 20000);
    assert_int_equal(n, 2);
    free_mails(m, n);

    /* Preferences: create, conflict, change. */
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"preferences\":{\"welcome\":false}}", user);
    free(expect(201, "POST", "/notifications/preferences", body));
    free(expect(409, "POST", "/notifications/preferences", body));
    snprintf(path, sizeof path, "/notifications/preferences/%s", user);
    char *resp = expect(200, "PUT", path, "{\"email\":\"ada@example.org\"}");
    assert_non_null(strstr(resp, "\"email\":\"ada@example.org\""));
    free(resp);

    /* History: 8 notifications, pages of 3, newest first, each seen once. */
    char cursor[128] = "";
    int total = 0, pages = 0;
    do {
        snprintf(path, sizeof path, "/notifications/history/%s?limit=3%s%s", user,
                 cursor[0] ? "&cursor=" : "", cursor);
        resp = expect(200, "GET", path, NULL);
        json_t *page = json_loads(resp, 0, NULL);
        total += (int)json_array_size(json_object_get(page, "items"));
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        json_decref(page);
        free(resp);
        pages++;
    } while (cursor[0] != '\0' && pages < 10);
    assert_int_equal(total, 8);
    assert_int_equal(pages, 3);

    /* users.user_deleted erases it all. */
    free(publish("users.user_deleted", json_pack("{s:s}", "user_id", user), NULL, "c-pg-del"));
    confirm_all();
    snprintf(path, sizeof path, "/notifications/history/%s", user);
    int empty = 0;
    for (int i = 0; i < 100 && !empty; i++) {
        resp = expect(200, "GET", path, NULL);
        empty = strstr(resp, "\"items\":[]") != NULL;
        free(resp);
        if (!empty)
            hd_sleep_ms(100);
    }
    assert_true(empty);
    snprintf(path, sizeof path, "/notifications/preferences/%s", user);
    resp = expect(200, "GET", path, NULL);
    assert_non_null(strstr(resp, "\"stored\":false"));
    free(resp);
    free(first);
}

/* A row as schema step 1 (the previous version) wrote it: variables (may be NULL) holding
 * an event marked by the prefix "event:" or an API request's JSON. */
/* Schema step 2 on PostgreSQL: a database of the previous version, with its rows in the old
 * form, migrates and reads back (the marked event becomes kind 'event' without its mark). */
static void test_postgresql_migrates_step_1_rows(void **state)
{
    (void)state;
    snprintf(W.pg_db, sizeof W.pg_db, "notif_mig_%ld_%lx", (long)getpid(),
             (unsigned long)(hd_clock_ns() & 0xffffff));
    char sql[256], url[512];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", W.pg_db);
    hd_error err;
    assert_hd_err(0, pg_admin(sql, &err), &err);
    pg_url_for(W.pg_db, url, sizeof url);
    hd_store *s = NULL;
    assert_hd_err(0, hd_store_open(url, &s, &err), &err);
    assert_int_equal(notif_repo_migrate_to(s, 1, &err), 1);

    const char *link = "https://app.example.com/v?t=mig", *name = "Ada \"the first\" O'Neil";
    char *event = notif_step1_rows(s, name, link);
    assert_int_equal(notif_repo_migrate(s, &err), 1); /* step 2 */
    assert_int_equal(hd_store_schema_version(s, "notifications", &err), 2);
    notif_step1_rows_read_back(s, event, name, link);

    free(event);
    hd_store_close(s);
    drop_pg_database();
}

static void test_sigterm_idle_exits_0(void **state)
{
    (void)state;
    stop_service(); /* exit 0 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registered_event_sends_mail),
        cmocka_unit_test(test_duplicate_delivery_one_mail),
        cmocka_unit_test(test_missing_variable_dead_letters),
        cmocka_unit_test(test_notification_sent_is_published),
        cmocka_unit_test(test_http_endpoints),
        cmocka_unit_test(test_http_token_and_direct_send_rules),
        cmocka_unit_test(test_start_without_token_is_refused),
        cmocka_unit_test(test_openapi_contract),
        cmocka_unit_test(test_sigkill_mid_stream_loses_nothing),
        cmocka_unit_test(test_sigterm_mid_stream_exits_0_and_loses_nothing),
        cmocka_unit_test(test_postgresql_migrates_step_1_rows),
        cmocka_unit_test(test_postgresql_store),
        cmocka_unit_test(test_sigterm_idle_exits_0),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
