/* fleet.c — several instances of the example system; see fleet.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "fleet.h"
#include "hd_service_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"
#include "herald/retry.h"
#include "herald/topology.h"

/* ---- SQL helpers ------------------------------------------------------------------------ */

static void exec_sql(hd_store *s, const char *sql)
{
    hd_error err;
    int rc = hd_store_exec(s, sql, NULL, 0, &err);
    if (rc < 0)
        fail_msg("%s: %s", sql, err.text);
}

static int64_t scalar(hd_store *s, const char *sql)
{
    hd_error err;
    hd_rows *rows = NULL;
    assert_hd_err(0, hd_store_query(s, sql, NULL, 0, &rows, &err), &err);
    int64_t v = hd_rows_count(rows) > 0 ? hd_rows_int(rows, 0, 0) : 0;
    hd_rows_free(rows);
    return v;
}

/* The users side: which relay marked each row dispatched (claimed_by is cleared by the very
 * UPDATE that marks it, so the trigger reads the OLD row). Bodies in single quotes: the
 * store's SQL check reads "$" as a placeholder. */
static void users_witness(hd_store *s)
{
    exec_sql(s, "CREATE TABLE hd_test_dispatched (relay TEXT)");
    exec_sql(s, "CREATE FUNCTION hd_test_dispatched() RETURNS trigger LANGUAGE plpgsql AS '"
                "BEGIN IF OLD.dispatched_at IS NULL AND NEW.dispatched_at IS NOT NULL THEN"
                " INSERT INTO hd_test_dispatched (relay) VALUES (OLD.claimed_by); END IF;"
                " RETURN NEW; END'");
    exec_sql(s, "CREATE TRIGGER hd_test_dispatched BEFORE UPDATE ON hd_outbox FOR EACH ROW"
                " EXECUTE FUNCTION hd_test_dispatched()");
}

/* The notifications side (fleet.h): the order and the instance of every effect, and every
 * id proposed to the inbox. */
static void notifications_witness(hd_store *s)
{
    exec_sql(s, "CREATE TABLE hd_test_applied (n BIGSERIAL PRIMARY KEY, user_id TEXT,"
                " cause_id TEXT, instance TEXT)");
    exec_sql(s, "CREATE FUNCTION hd_test_applied() RETURNS trigger LANGUAGE plpgsql AS '"
                "BEGIN INSERT INTO hd_test_applied (user_id, cause_id, instance)"
                " VALUES (NEW.user_id, NEW.cause_id, current_setting(''application_name''));"
                " RETURN NULL; END'");
    exec_sql(s, "CREATE TRIGGER hd_test_applied AFTER INSERT ON notifications FOR EACH ROW"
                " EXECUTE FUNCTION hd_test_applied()");
    exec_sql(s, "CREATE TABLE hd_test_inbox (message_id TEXT)");
    exec_sql(s, "CREATE FUNCTION hd_test_inbox() RETURNS trigger LANGUAGE plpgsql AS '"
                "BEGIN INSERT INTO hd_test_inbox (message_id) VALUES (NEW.message_id);"
                " RETURN NEW; END'");
    exec_sql(s, "CREATE TRIGGER hd_test_inbox BEFORE INSERT ON hd_inbox FOR EACH ROW"
                " EXECUTE FUNCTION hd_test_inbox()");
}

/* ---- lifecycle --------------------------------------------------------------------------- */

void fleet_open(fleet *f, const char *tag, const char *amqp_url, const char *queue_type)
{
    hd_error err;
    memset(f, 0, sizeof *f);
    f->amqp_url = amqp_url;
    f->queue_type = queue_type;
    f->prefetch = 50;
    f->relay_batch = 100;
    f->relay_lease_ms = "5000";
    f->tag = hd_test_unique_name(tag);
    hd_test_db_open(&f->users_db, "fleet_users", 1, NULL);
    hd_test_db_open(&f->notif_db, "fleet_notif", 1, NULL);
    assert_hd_err(0, hd_store_open(f->users_db.url, &f->users, &err), &err);
    assert_hd_err(0, hd_store_open(f->notif_db.url, &f->notif, &err), &err);
    assert_true(hd_outbox_migrate(f->users, &err) >= 0);
    users_witness(f->users);
    char name[300];
    snprintf(name, sizeof name, "%s-users", f->tag);
    f->exchange = strdup(name);
    snprintf(name, sizeof name, "%s-notifications", f->tag);
    f->queue = strdup(name);
}

/* A connection for the test's own look at the broker (the first URL that answers). */
static hd_amqp *broker(const fleet *f)
{
    hd_error err;
    hd_amqp *a = NULL;
    assert_hd_err(0, hd_amqp_open(f->amqp_url, NULL, &a, &err), &err);
    return a;
}

void fleet_abort(fleet *f)
{
    for (int i = 0; i < FLEET_MAX; i++) {
        hd_proc_free(f->notifications[i]); /* SIGKILL when still running, and reap */
        hd_proc_free(f->relay[i]);
        f->notifications[i] = f->relay[i] = NULL;
    }
}

void fleet_close(fleet *f)
{
    hd_error err;
    for (int i = 0; i < FLEET_MAX; i++) {
        if (f->notifications[i] != NULL && hd_proc_running(f->notifications[i]))
            hd_proc_stop(f->notifications[i], 20000, NULL);
        if (f->relay[i] != NULL && hd_proc_running(f->relay[i]))
            hd_proc_stop(f->relay[i], 20000, NULL);
        hd_proc_free(f->notifications[i]);
        hd_proc_free(f->relay[i]);
        f->notifications[i] = f->relay[i] = NULL;
    }
    /* The broker side, on a fresh connection each try: a cluster whose nodes the test just
     * killed may still be moving a queue's leader, and the broker then closes the connection
     * that deletes it (seen once in CI: "connection ... is closed" at the exchange delete,
     * after the test had counted 0 lost). What the test asserts is done by then; this is
     * cleanup, and a few tries a second apart let the cluster settle. */
    hd_retry_policy p;
    hd_retry_policy_default(&p);
    int rc = -1;
    for (int attempt = 1; attempt <= 5 && rc != 0; attempt++) {
        if (attempt > 1) {
            print_message("fleet: cleanup try %d: %s\n", attempt - 1, err.text);
            hd_sleep_ms(1000);
        }
        hd_amqp *a = broker(f);
        hd_retry_undeclare(a, f->queue, &p, NULL);
        rc = hd_exchange_delete(a, f->exchange, &err);
        hd_amqp_close(a);
    }
    assert_hd_err(0, rc, &err);
    hd_store_close(f->users);
    hd_store_close(f->notif);
    hd_test_db_drop(&f->users_db);
    hd_test_db_drop(&f->notif_db);
    free(f->exchange);
    free(f->queue);
    free(f->tag);
}

/* ---- processes --------------------------------------------------------------------------- */

static void log_path(const fleet *f, const char *what, int i, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s-%d.log", f->notif_db.dir, what, i);
}

void fleet_start_notifications(fleet *f, int i)
{
    char log[700], db[700], amqp[2048], exchange[400], queue[400], prefetch[64], qtype[64];
    log_path(f, "notifications", i, log, sizeof log);
    /* application_name names the instance in hd_test_applied. */
    snprintf(db, sizeof db, "HD_DATABASE_URL=%s?application_name=notif-%d", f->notif_db.url, i);
    snprintf(amqp, sizeof amqp, "HD_AMQP_URL=%s", f->notif_url[i] ? f->notif_url[i] : f->amqp_url);
    snprintf(exchange, sizeof exchange, "HD_USERS_EXCHANGE=%s", f->exchange);
    snprintf(queue, sizeof queue, "HD_NOTIFICATIONS_QUEUE=%s", f->queue);
    snprintf(prefetch, sizeof prefetch, "HD_PREFETCH=%d", f->prefetch);
    snprintf(qtype, sizeof qtype, "HD_QUEUE_TYPE=%s", f->queue_type ? f->queue_type : "classic");
    const char *env[] = {db,
                         amqp,
                         exchange,
                         queue,
                         prefetch,
                         f->queue_type ? qtype : "HD_QUEUE_TYPE",
                         "HD_NOTIFICATIONS_LISTEN=127.0.0.1:0",
                         "HD_NOTIFICATIONS_API_OPEN=true",
                         "HD_NOTIFICATIONS_RELAY=false",
                         "HD_SENDER=log",
                         "HD_NOTIFY_LEASE_MS=20000",
                         "HD_SMTP_TIMEOUT_MS=1000",
                         "HD_NOTIFY_SWEEP_MS=200",
                         "HD_TEMPLATES_DIR=" HD_SOURCE_DIR "/templates",
                         "HD_LOG_LEVEL=info", /* the "listening" line hd_proc waits for */
                         f->notif_env,
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-notifications", NULL};
    char name[32];
    snprintf(name, sizeof name, "notifications-%d", i);
    hd_proc_options o = {
        .argv = argv, .env = env, .env_drop_prefix = "HD_", .log_path = log, .name = name};
    hd_error err;
    hd_proc_free(f->notifications[i]);
    f->notifications[i] = NULL;
    assert_hd_err(0, hd_proc_start(&o, &f->notifications[i], &err), &err);
    if (hd_proc_wait_health(f->notifications[i], 60000, &err) < 0) {
        hd_proc_dump_log(f->notifications[i], stderr, 40);
        fail_msg("%s", err.text);
    }
    if (!f->witness) {
        notifications_witness(f->notif);
        f->witness = 1;
    }
}

void fleet_start_relay(fleet *f, int i)
{
    char log[700], db[700], amqp[2048], exchange[400], id[64], batch[64], lease[64];
    log_path(f, "relay", i, log, sizeof log);
    snprintf(db, sizeof db, "HD_DATABASE_URL=%s?application_name=relay-%d", f->users_db.url, i);
    snprintf(amqp, sizeof amqp, "HD_AMQP_URL=%s", f->relay_url[i] ? f->relay_url[i] : f->amqp_url);
    snprintf(exchange, sizeof exchange, "HD_RELAY_EXCHANGE=%s", f->exchange);
    snprintf(id, sizeof id, "HD_RELAY_ID=relay-%d", i);
    snprintf(batch, sizeof batch, "HD_RELAY_BATCH=%d", f->relay_batch);
    snprintf(lease, sizeof lease, "HD_RELAY_LEASE_MS=%s", f->relay_lease_ms);
    const char *env[] = {db,
                         amqp,
                         exchange,
                         id,
                         batch,
                         lease,
                         "HD_RELAY_POLL_MS=100",
                         "HD_RELAY_PROGRESS_MS=0",
                         "HD_RELAY_MIGRATE=false",
                         "HD_LOG_LEVEL=info",
                         NULL};
    const char *argv[] = {HD_BINARY_DIR "/herald-relay", NULL};
    char name[32];
    snprintf(name, sizeof name, "relay-%d", i);
    hd_proc_options o = {
        .argv = argv, .env = env, .env_drop_prefix = "HD_", .log_path = log, .name = name};
    hd_error err;
    hd_proc_free(f->relay[i]);
    f->relay[i] = NULL;
    assert_hd_err(0, hd_proc_start(&o, &f->relay[i], &err), &err);
    if (hd_proc_wait_log(f->relay[i], "relay started", 60000, &err) < 0) {
        hd_proc_dump_log(f->relay[i], stderr, 40);
        fail_msg("%s", err.text);
    }
}

static void kill_proc(hd_proc *p)
{
    hd_error err;
    assert_non_null(p);
    assert_hd_err(0, hd_proc_kill(p, &err), &err); /* 0: it was still running */
    assert_int_equal(hd_proc_term_signal(p), SIGKILL);
}

void fleet_kill_notifications(fleet *f, int i)
{
    kill_proc(f->notifications[i]);
}

void fleet_kill_relay(fleet *f, int i)
{
    kill_proc(f->relay[i]);
}

/* ---- the users' events ------------------------------------------------------------------ */

static const char *const types[FLEET_EVENTS_PER_USER] = {
    "users.user_registered", "users.user_verified", "users.password_reset_requested",
    "users.password_reset_requested", "users.password_reset_requested"};

static void append(fleet *f, int u, int k)
{
    char uid[32], email[64], link[128];
    snprintf(uid, sizeof uid, "u%d", u);
    snprintf(email, sizeof email, "u%d@example.com", u);
    snprintf(link, sizeof link, "https://app.example.com/link?token=%d-%d", u, k);
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", uid, "email", email, "name",
                             "Fleet", "verification_link", link, "reset_link", link);
    hd_envelope *env = hd_envelope_new(types[k], 1, "/users", data);
    assert_non_null(env);
    assert_int_equal(0, hd_envelope_set_correlation_id(env, hd_envelope_id(env)));
    hd_error err;
    assert_hd_err(0, hd_outbox_append(f->users, env, "user", uid, &err), &err);
    hd_envelope_free(env);
}

void fleet_write(fleet *f, int n)
{
    hd_error err;
    for (int u = f->n_users; u < f->n_users + n; u += 5) {
        assert_hd_err(0, hd_store_begin(f->users, &err), &err);
        for (int v = u; v < u + 5 && v < f->n_users + n; v++)
            for (int k = 0; k < FLEET_EVENTS_PER_USER; k++)
                append(f, v, k);
        assert_hd_err(0, hd_store_commit(f->users, &err), &err);
    }
    f->n_users += n;
}

static void dump_all(const fleet *f)
{
    for (int i = 0; i < FLEET_MAX; i++) {
        if (f->relay[i] != NULL)
            hd_proc_dump_log(f->relay[i], stderr, 20);
        if (f->notifications[i] != NULL)
            hd_proc_dump_log(f->notifications[i], stderr, 20);
    }
}

int64_t fleet_done(fleet *f)
{
    return scalar(f->notif, "SELECT COUNT(DISTINCT cause_id) FROM hd_test_applied");
}

void fleet_wait(fleet *f, int timeout_ms)
{
    fleet_wait_count(f, (int64_t)f->n_users * FLEET_EVENTS_PER_USER, timeout_ms);
}

void fleet_wait_count(fleet *f, int64_t want, int timeout_ms)
{
    int64_t start = hd_clock_ms(), last_print = start, done = 0;
    while ((done = scalar(f->notif, "SELECT COUNT(DISTINCT cause_id) FROM hd_test_applied")) <
           want) {
        int64_t now = hd_clock_ms();
        if (now - start > timeout_ms) {
            dump_all(f);
            fail_msg("after %d ms, %lld of %lld events have their notification", timeout_ms,
                     (long long)done, (long long)want);
        }
        if (now - last_print >= 5000) {
            printf("  ... %lld/%lld notified after %.1f s\n", (long long)done, (long long)want,
                   (double)(now - start) / 1000.0);
            fflush(stdout);
            last_print = now;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- counting ---------------------------------------------------------------------------- */

typedef struct event_ref {
    const char *id; /* borrowed from the outbox rows */
    int user, pos, applied;
} event_ref;

static int by_id(const void *a, const void *b)
{
    return strcmp(((const event_ref *)a)->id, ((const event_ref *)b)->id);
}

/* "<prefix><n>" -> n, or -1. */
static int suffix_int(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s != NULL && strncmp(s, prefix, n) == 0 ? atoi(s + n) : -1;
}

void fleet_report_get(fleet *f, const char *label, fleet_report *r)
{
    hd_error err;
    memset(r, 0, sizeof *r);
    hd_rows *out = NULL, *applied = NULL, *relays = NULL;
    assert_hd_err(0,
                  hd_store_query(f->users,
                                 "SELECT aggregate_id, event_id FROM hd_outbox ORDER BY seq", NULL,
                                 0, &out, &err),
                  &err);
    size_t n = hd_rows_count(out);
    r->events = (int64_t)n;
    event_ref *ev = calloc(n ? n : 1, sizeof *ev);
    int *count = calloc((size_t)f->n_users + 1, sizeof *count); /* events seen per user */
    int *maxpos = calloc((size_t)f->n_users + 1, sizeof *maxpos);
    assert_true(ev && count && maxpos);
    for (size_t i = 0; i < n; i++) {
        int u = suffix_int(hd_rows_text(out, i, 0), "u");
        assert_true(u >= 0 && u < f->n_users);
        ev[i] = (event_ref){hd_rows_text(out, i, 1), u, count[u]++, 0};
        maxpos[u] = -1;
    }
    qsort(ev, n, sizeof *ev, by_id);

    assert_hd_err(0,
                  hd_store_query(f->notif,
                                 "SELECT cause_id, instance FROM hd_test_applied ORDER BY n", NULL,
                                 0, &applied, &err),
                  &err);
    for (size_t i = 0; i < hd_rows_count(applied); i++) {
        event_ref key = {.id = hd_rows_text(applied, i, 0)};
        event_ref *e = key.id ? bsearch(&key, ev, n, sizeof *ev, by_id) : NULL;
        int inst = suffix_int(hd_rows_text(applied, i, 1), "notif-");
        if (inst >= 0 && inst < FLEET_MAX)
            r->per_notifications[inst]++;
        if (e == NULL || e->applied++ > 0) {
            r->extra++;
            continue;
        }
        if (e->pos < maxpos[e->user])
            r->inversions++;
        else
            maxpos[e->user] = e->pos;
    }
    for (size_t i = 0; i < n; i++)
        r->lost += ev[i].applied == 0;
    r->inbox_duplicates =
        scalar(f->notif, "SELECT COUNT(*) - COUNT(DISTINCT message_id) FROM hd_test_inbox");

    assert_hd_err(0,
                  hd_store_query(f->users,
                                 "SELECT relay, COUNT(*) FROM hd_test_dispatched GROUP BY relay",
                                 NULL, 0, &relays, &err),
                  &err);
    for (size_t i = 0; i < hd_rows_count(relays); i++) {
        int k = suffix_int(hd_rows_text(relays, i, 0), "relay-");
        if (k >= 0 && k < FLEET_MAX)
            r->per_relay[k] += hd_rows_int(relays, i, 1);
    }

    hd_amqp *a = broker(f);
    char dlq[300];
    assert_int_equal(0, hd_retry_dlq_name(dlq, sizeof dlq, f->queue));
    hd_queue_info qi;
    assert_hd_err(0, hd_queue_inspect(a, dlq, &qi, &err), &err);
    r->dlq = qi.message_count;
    assert_hd_err(0, hd_queue_inspect(a, f->queue, &qi, &err), &err);
    r->ready = qi.message_count;
    hd_amqp_close(a);

    printf("%s: events %lld, lost %lld, extra notifications %lld, order inversions %lld\n", label,
           (long long)r->events, (long long)r->lost, (long long)r->extra, (long long)r->inversions);
    printf("%s: duplicates absorbed by the inbox %lld, dead letters %lld, left in the queue %lld\n",
           label, (long long)r->inbox_duplicates, (long long)r->dlq, (long long)r->ready);
    printf("%s: notifications per instance", label);
    for (int i = 0; i < FLEET_MAX; i++)
        if (r->per_notifications[i] > 0 || f->notifications[i] != NULL)
            printf(" [%d] %lld", i, (long long)r->per_notifications[i]);
    printf("; rows dispatched per relay");
    for (int i = 0; i < FLEET_MAX; i++)
        if (r->per_relay[i] > 0 || f->relay[i] != NULL)
            printf(" [%d] %lld", i, (long long)r->per_relay[i]);
    printf("\n");
    fflush(stdout);
    hd_rows_free(out);
    hd_rows_free(applied);
    hd_rows_free(relays);
    free(ev);
    free(count);
    free(maxpos);
}

/* ---- metrics ----------------------------------------------------------------------------- */

int64_t fleet_metric(fleet *f, int i, const char *name)
{
    if (f->notifications[i] == NULL || hd_proc_port(f->notifications[i]) == 0)
        return -1;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", hd_proc_port(f->notifications[i]));
    CURL *c = curl_easy_init();
    hd_test_body b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hd_test_body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || b.data == NULL) {
        free(b.data);
        return -1;
    }
    int64_t sum = 0;
    size_t n = strlen(name);
    for (char *line = b.data; line != NULL && *line;) {
        char *next = strchr(line, '\n');
        if (next != NULL)
            *next = '\0';
        if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == '{')) {
            const char *v = strrchr(line, ' ');
            if (v != NULL)
                sum += (int64_t)strtod(v + 1, NULL);
        }
        line = next ? next + 1 : NULL;
    }
    free(b.data);
    return sum;
}

int64_t fleet_log_count(const fleet *f, int i, const char *needle)
{
    char path[700], line[4096];
    log_path(f, "notifications", i, path, sizeof path);
    FILE *in = fopen(path, "r");
    int64_t n = 0;
    while (in != NULL && fgets(line, sizeof line, in) != NULL)
        n += strstr(line, needle) != NULL;
    if (in != NULL)
        fclose(in);
    return n;
}
