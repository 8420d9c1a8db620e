/* integration.admin_outbox — herald-admin's outbox, inbox and retention groups on the real
 * servers, through the binary (HD_BINARY_DIR/herald-admin), on SQLite and on PostgreSQL:
 *
 *  1. rows are parked the way production parks them: the relay publishes (mandatory, no
 *     declare) to an exchange that does not exist, the broker refuses (404), and after
 *     max_attempts the rows are parked with that reason;
 *  2. `outbox status` (--json) counts them, `outbox parked` lists them with the reason;
 *  3. the exchange and a bound queue are created, `outbox replay --type T` and
 *     `outbox replay ID` make them due again (audit line on stderr: who, what, count), a
 *     second replay of the same id is refused (exit 1);
 *  4. the relay runs again: every row dispatched, every message in the queue;
 *  5. `retention run` with a batch of 2 deletes old dispatched rows and old inbox ids in
 *     batches and keeps the rest; `inbox status` shows what is left;
 *  6. PostgreSQL: while another session holds the advisory lock, a second `retention run`
 *     deletes nothing, says so and exits 0.
 * Needs HD_AMQP_URL and HD_PG_URL (scripts/servers.sh): a missing server is a failure. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

typedef hd_test_db db;

static void sqlite_db(db *d)
{
    hd_test_db_open(d, "admin", 0, "service.db");
}

static void pg_db(db *d)
{
    hd_test_db_open(d, "admin", 1, NULL);
}

static void db_drop(db *d)
{
    hd_test_db_drop(d);
}

/* Run `herald-admin ARGS` (stdout and stderr together) on HD_DATABASE_URL = url; *out is new
 * (free()). Returns the exit status. */
static int admin(const char *url, char **out, const char *args)
{
    setenv("HD_DATABASE_URL", url, 1);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/herald-admin %s 2>&1", HD_BINARY_DIR, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    int status = pclose(p);
    print_message("    $ herald-admin %s\n%s", args, buf);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int64_t count_where(hd_store *s, const char *table, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE %s", table, where);
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(0, hd_store_query(s, sql, NULL, 0, &rows, &err), &err);
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

static void append(hd_store *s, const char *type, const char *agg)
{
    hd_error err;
    hd_envelope *env = hd_envelope_new(type, 1, "/test", json_pack("{s:s}", "id", agg));
    assert_non_null(env);
    assert_hd_err(0, hd_store_begin(s, &err), &err);
    assert_hd_err(0, hd_outbox_append(s, env, "item", agg, &err), &err);
    assert_hd_err(0, hd_store_commit(s, &err), &err);
    hd_envelope_free(env);
}

/* Run relay cycles until no row is pending (parked ones do not count). */
static void relay_until_idle(hd_relay *r, hd_store *s)
{
    hd_error err;
    int64_t end = hd_clock_ms() + 15000;
    for (;;) {
        int64_t pending = -1;
        assert_hd_err(0, hd_outbox_depth(s, &pending, NULL, NULL, &err), &err);
        if (pending == 0)
            return;
        assert_true(hd_clock_ms() < end);
        int rc = hd_relay_run_once(r, NULL, &err);
        assert_true(rc >= 0 || rc == HD_EAMQP);
        hd_sleep_ms(5);
    }
}

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (doc == NULL)
        fail_msg("not JSON (%s): %s", je.text, text);
    return doc;
}

static void admin_on(db *d)
{
    const char *amqp_url = hd_test_require_env("HD_AMQP_URL");
    hd_error err;
    hd_store *s = NULL;
    assert_hd_err(0, hd_store_open(d->url, &s, &err), &err);
    assert_true(hd_outbox_migrate(s, &err) >= 0);
    assert_true(hd_inbox_migrate(s, &err) >= 0);
    hd_amqp *a = NULL, *pa = NULL;
    assert_hd_err(0, hd_amqp_open(amqp_url, NULL, &a, &err), &err);
    assert_hd_err(0, hd_amqp_open(amqp_url, NULL, &pa, &err), &err);

    /* 1. Three events of one type and one of another, to an exchange nobody declared. */
    char *topic = hd_test_unique_name("hd-admin");
    char added[256], removed[256];
    snprintf(added, sizeof added, "%s.item_added", topic);
    snprintf(removed, sizeof removed, "%s.item_removed", topic);
    append(s, added, "i1");
    append(s, added, "i2");
    append(s, added, "i3");
    append(s, removed, "i4");
    hd_relay *r = NULL;
    hd_relay_options o = {
        .no_declare = 1, .max_attempts = 2, .backoff_base_ms = 1, .backoff_cap_ms = 1};
    assert_hd_err(0, hd_relay_new(s, pa, &o, &r, &err), &err);
    relay_until_idle(r, s);
    assert_int_equal(count_where(s, "hd_outbox", "parked_at IS NOT NULL"), 4);

    /* 2. status and parked. */
    char *out = NULL, args[512];
    assert_int_equal(admin(d->url, &out, "outbox status"), 0);
    assert_non_null(strstr(out, "PARKED"));
    assert_non_null(strstr(out, added));
    free(out);
    assert_int_equal(admin(d->url, &out, "--json outbox status"), 0);
    json_t *doc = parse(out);
    assert_int_equal(json_integer_value(json_object_get(doc, "parked")), 4);
    assert_int_equal(json_integer_value(json_object_get(doc, "pending")), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "types")), 2);
    json_decref(doc);
    free(out);
    assert_int_equal(admin(d->url, &out, "outbox parked"), 0);
    assert_non_null(strstr(out, "404")); /* the broker's reason, as recorded */
    assert_non_null(strstr(out, removed));
    free(out);
    snprintf(args, sizeof args, "outbox parked --json --type %s", removed);
    assert_int_equal(admin(d->url, &out, args), 0);
    doc = parse(out);
    json_t *rows = json_object_get(doc, "parked");
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_int_equal(json_integer_value(json_object_get(row, "attempts")), 2);
    assert_non_null(strstr(json_string_value(json_object_get(row, "reason")), "404"));
    int64_t removed_seq = json_integer_value(json_object_get(row, "seq"));
    json_decref(doc);
    free(out);

    /* 3. Fix the cause, then replay: by type, and one row by id. */
    char *queue = hd_test_unique_name("hd-admin-q");
    hd_exchange_spec ex = {.name = topic, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = queue, .durable = 1};
    hd_binding_spec bs = {.queue = queue, .exchange = topic, .key = "#"};
    assert_hd_err(0, hd_exchange_declare(a, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(a, &qs, NULL, &err), &err);
    assert_hd_err(0, hd_queue_bind(a, &bs, &err), &err);
    snprintf(args, sizeof args, "outbox replay --type %s", added);
    assert_int_equal(admin(d->url, &out, args), 0);
    assert_non_null(strstr(out, "replayed 3 parked rows"));
    assert_non_null(strstr(out, "\"message\":\"outbox replay\"")); /* the audit line */
    assert_non_null(strstr(out, "\"who\""));
    assert_non_null(strstr(out, "\"count\":3"));
    free(out);
    snprintf(args, sizeof args, "outbox replay %lld", (long long)removed_seq);
    assert_int_equal(admin(d->url, &out, args), 0);
    assert_non_null(strstr(out, "replayed row"));
    free(out);
    assert_int_equal(admin(d->url, &out, args), 1); /* not parked any more */
    assert_non_null(strstr(out, "is not parked"));
    free(out);
    assert_int_equal(admin(d->url, &out, "outbox replay"), 2);
    free(out);

    /* 4. The relay publishes them: all dispatched, all in the queue. */
    relay_until_idle(r, s);
    assert_int_equal(count_where(s, "hd_outbox", "dispatched_at IS NOT NULL"), 4);
    hd_queue_info info;
    assert_hd_err(0, hd_queue_inspect(a, queue, &info, &err), &err);
    assert_int_equal(info.message_count, 4);
    assert_int_equal(admin(d->url, &out, "--json outbox status"), 0);
    doc = parse(out);
    assert_int_equal(json_integer_value(json_object_get(doc, "dispatched")), 4);
    assert_int_equal(json_integer_value(json_object_get(doc, "parked")), 0);
    json_decref(doc);
    free(out);

    /* 5. Retention: 3 of the 4 rows dispatched two days ago, 5 inbox ids of which 3 are eight
     * days old; batches of 2. */
    hd_value old2[] = {hd_value_int(hd_time_now_ms() - 2 * 86400000LL)};
    assert_int_equal(hd_store_exec(s,
                                   "UPDATE hd_outbox SET dispatched_at = $1 WHERE seq IN"
                                   " (SELECT seq FROM hd_outbox ORDER BY seq LIMIT 3)",
                                   old2, 1, &err),
                     3);
    assert_hd_err(0, hd_store_begin(s, &err), &err);
    const char *ids[] = {"m1", "m2", "m3", "m4", "m5"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(hd_inbox_accept(s, "notifications", ids[i], &err), 1);
    assert_hd_err(0, hd_store_commit(s, &err), &err);
    hd_value old8[] = {hd_value_int(hd_time_now_ms() - 8 * 86400000LL)};
    assert_int_equal(hd_store_exec(s,
                                   "UPDATE hd_inbox SET received_at = $1"
                                   " WHERE message_id IN ('m1', 'm2', 'm3')",
                                   old8, 1, &err),
                     3);
    assert_int_equal(admin(d->url, &out, "inbox status"), 0);
    assert_non_null(strstr(out, "notifications"));
    assert_non_null(strstr(out, "retention: 7d00h"));
    free(out);
    setenv("HD_RELAY_RETENTION", "24h", 1);
    setenv("HD_INBOX_RETENTION", "168h", 1);
    setenv("HD_RETENTION_BATCH", "2", 1);
    assert_int_equal(admin(d->url, &out, "retention run"), 0);
    assert_non_null(strstr(out, "outbox  deleted 3 dispatched rows older than 1d00h (2 batches)"));
    assert_non_null(strstr(out, "inbox   deleted 3 ids older than 7d00h (2 batches)"));
    free(out);
    assert_int_equal(count_where(s, "hd_outbox", "1 = 1"), 1);
    assert_int_equal(count_where(s, "hd_inbox", "1 = 1"), 2);
    assert_int_equal(admin(d->url, &out, "--json inbox status"), 0);
    doc = parse(out);
    json_t *c0 = json_array_get(json_object_get(doc, "consumers"), 0);
    assert_int_equal(json_integer_value(json_object_get(c0, "ids")), 2);
    assert_int_equal(json_integer_value(json_object_get(doc, "retention_ms")), 604800000LL);
    json_decref(doc);
    free(out);

    /* 6. PostgreSQL: one run at a time. */
    if (d->pg_name[0] != '\0') {
        hd_store *holder = NULL;
        assert_hd_err(0, hd_store_open(d->url, &holder, &err), &err);
        assert_hd_err(
            0,
            hd_store_exec(holder, "SELECT pg_advisory_lock(1751478881)", NULL, 0, &err) < 0 ? -1
                                                                                            : 0,
            &err);
        assert_int_equal(admin(d->url, &out, "retention run"), 0);
        assert_non_null(strstr(out, "another retention run holds the lock"));
        free(out);
        hd_store_close(holder); /* releases it */
        assert_int_equal(admin(d->url, &out, "retention run"), 0);
        assert_non_null(strstr(out, "outbox  deleted 0"));
        free(out);
    }
    unsetenv("HD_RELAY_RETENTION");
    unsetenv("HD_INBOX_RETENTION");
    unsetenv("HD_RETENTION_BATCH");

    hd_relay_free(r);
    assert_hd_err(0, hd_queue_delete(a, queue, NULL, &err), &err);
    assert_hd_err(0, hd_exchange_delete(a, topic, &err), &err);
    hd_amqp_close(pa);
    hd_amqp_close(a);
    hd_store_close(s);
    free(queue);
    free(topic);
}

static void admin_on_sqlite(void **state)
{
    (void)state;
    db d;
    sqlite_db(&d);
    admin_on(&d);
    db_drop(&d);
}

static void admin_on_postgresql(void **state)
{
    (void)state;
    db d;
    pg_db(&d);
    admin_on(&d);
    db_drop(&d);
}

/* --help on every group and subcommand answers 0 with a usage line; no database needed. */
static void help_everywhere(void **state)
{
    (void)state;
    const char *cmds[] = {"outbox --help",        "outbox status --help", "outbox parked --help",
                          "outbox replay --help", "inbox --help",         "inbox status --help",
                          "retention --help",     "retention run --help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char *out = NULL;
        assert_int_equal(admin("", &out, cmds[i]), 0);
        assert_non_null(strstr(out, "usage: herald-admin"));
        free(out);
    }
    char *out = NULL;
    assert_int_equal(admin("", &out, "outbox status"), 2); /* no HD_DATABASE_URL */
    assert_non_null(strstr(out, "HD_DATABASE_URL is not set"));
    free(out);
    assert_int_equal(admin("", &out, "outbox frobnicate"), 2);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(help_everywhere),
        cmocka_unit_test(admin_on_sqlite),
        cmocka_unit_test(admin_on_postgresql),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
