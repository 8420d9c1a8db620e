/* Unit tests for herald-admin topology (src/services/admin/topology.c): what it shows is the
 * description herald-notifications declares, and docs/topology.dot is its current --dot
 * output (the committed picture cannot drift from the declarations: when this fails, run
 * `make topology` and commit docs/topology.dot and docs/topology.svg). No broker. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "hd_test.h"
#include "herald/config.h"
#include "herald/retry.h"
#include "notifications/topology.h"

/* Run `herald-admin [--json] topology ARGS...` with cfg (NULL: no settings at all); its
 * output in *out (new, free()), its exit code returned. */
static int run(const hd_config *cfg, int json, char **out, int argc, char **argv)
{
    hd_config *empty = NULL;
    if (cfg == NULL)
        cfg = empty = hd_config_new_empty();
    size_t len = 0;
    FILE *f = open_memstream(out, &len);
    assert_non_null(f);
    admin_io io = {.out = f, .err = f, .json = json};
    int rc = admin_topology(cfg, argc, argv, &io);
    fclose(f);
    hd_config_free(empty);
    return rc;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    return buf;
}

/* The drift check: docs/topology.dot == herald-admin topology --dot with the defaults. */
static void committed_dot_is_current(void **state)
{
    (void)state;
    char *out = NULL;
    char *argv[] = {"topology", "--dot", NULL};
    assert_int_equal(run(NULL, 0, &out, 2, argv), ADMIN_OK);
    const char *path = HD_SOURCE_DIR "/docs/topology.dot";
    char *committed = read_file(path);
    if (committed == NULL || strcmp(committed, out) != 0) {
        fprintf(stderr,
                "%s differs from `herald-admin topology --dot`: the declarations changed.\n"
                "Run `make topology` and commit docs/topology.dot and docs/topology.svg.\n"
                "--- what it emits now:\n%s",
                path, out);
        free(committed);
        free(out);
        fail_msg("docs/topology.dot is stale");
    }
    free(committed);
    free(out);
}

/* What is shown is the service's description, which holds the retry library's topology. */
static void shows_the_declared_topology(void **state)
{
    (void)state;
    static notif_topology t;
    hd_error err;
    assert_hd_err(0, notif_topology_make(&t, "users", "users.notifications", NULL, &err), &err);
    hd_retry_topology r;
    assert_hd_err(0, hd_retry_topology_make(&r, "users.notifications", NULL, &err), &err);
    assert_int_equal(t.all.n_queues, r.t.n_queues);
    assert_int_equal(t.all.n_exchanges, 3); /* users, the retry exchange, notifications */
    assert_int_equal(t.all.n_bindings, 4 + r.t.n_bindings);
    assert_int_equal(t.consumed.n_exchanges, 1);
    assert_string_equal(t.consumed.exchanges[0].name, "users");
    assert_int_equal(t.consumed.n_bindings, 4);

    char *out = NULL;
    char *argv[] = {"topology", NULL};
    assert_int_equal(run(NULL, 0, &out, 1, argv), ADMIN_OK);
    assert_non_null(strstr(out, "users.notifications.retry.5000ms   classic durable    "
                                "x-dead-letter-exchange=\"\" x-dead-letter-routing-key="
                                "\"users.notifications\" x-message-ttl=5000\n"));
    assert_non_null(strstr(out, "users.notifications.dlq            classic durable    "
                                "x-message-ttl=86400000\n"));
    assert_non_null(strstr(out, "users                              topic   durable    "
                                "herald-users (relay), herald-notifications\n"));
    free(out);
}

static void json_document(void **state)
{
    (void)state;
    char *out = NULL;
    char *argv[] = {"topology", NULL};
    assert_int_equal(run(NULL, 1, &out, 1, argv), ADMIN_OK);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    assert_non_null(doc);
    assert_int_equal(json_array_size(json_object_get(doc, "exchanges")), 3);
    assert_int_equal(json_array_size(json_object_get(doc, "queues")), 5);
    assert_int_equal(json_array_size(json_object_get(doc, "bindings")), 7);
    json_t *tier = json_array_get(json_object_get(doc, "queues"), 1);
    assert_string_equal(json_string_value(json_object_get(tier, "name")),
                        "users.notifications.retry.1000ms");
    json_t *args = json_object_get(tier, "arguments");
    assert_int_equal(json_integer_value(json_object_get(args, "x-message-ttl")), 1000);
    assert_string_equal(json_string_value(json_object_get(args, "x-dead-letter-routing-key")),
                        "users.notifications");
    json_decref(doc);
    free(out);
}

/* The settings the service reads rename what it declares, and what is shown. */
static void follows_the_settings(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    assert_int_equal(hd_config_set(cfg, "HD_NOTIFICATIONS_QUEUE", "mail.work"), 0);
    assert_int_equal(hd_config_set(cfg, "HD_USERS_EXCHANGE", "people"), 0);
    char *out = NULL;
    char *argv[] = {"topology", NULL};
    assert_int_equal(run(cfg, 0, &out, 1, argv), ADMIN_OK);
    assert_non_null(strstr(out, "  mail.work.dlq "));
    assert_non_null(strstr(out, "  people                             topic"));
    /* The users relay still publishes to the topic of the users events. */
    assert_non_null(strstr(out, "  users                              topic"));
    free(out);
    hd_config_free(cfg);
}

/* HD_QUEUE_TYPE=quorum: every queue quorum; the work queue and the tiers with a delivery
 * limit and an at-least-once dead-letter target (the work queue's: the DLQ), so that a
 * quorum queue never drops a message past its limit. */
static void quorum_queues_always_have_a_limit_and_a_dead_letter_target(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    assert_int_equal(hd_config_set(cfg, "HD_QUEUE_TYPE", "quorum"), 0);
    char *out = NULL;
    char *argv[] = {"topology", NULL};
    assert_int_equal(run(cfg, 0, &out, 1, argv), ADMIN_OK);
    assert_null(strstr(out, "classic"));
    assert_non_null(strstr(out, "x-queue-type=\"quorum\" x-dead-letter-exchange=\"\" "
                                "x-dead-letter-routing-key=\"users.notifications.dlq\" "
                                "x-delivery-limit=20 x-dead-letter-strategy=\"at-least-once\" "
                                "x-overflow=\"reject-publish\""));
    assert_non_null(strstr(out, "x-dead-letter-routing-key=\"users.notifications\" "
                                "x-message-ttl=5000 x-delivery-limit=20 "
                                "x-dead-letter-strategy=\"at-least-once\""));
    free(out);
    assert_int_equal(hd_config_set(cfg, "HD_DELIVERY_LIMIT", "7"), 0);
    assert_int_equal(run(cfg, 0, &out, 1, argv), ADMIN_OK);
    assert_non_null(strstr(out, "x-delivery-limit=7 "));
    free(out);
    assert_int_equal(hd_config_set(cfg, "HD_QUEUE_TYPE", "stream"), 0);
    assert_int_equal(run(cfg, 0, &out, 1, argv), ADMIN_USAGE);
    assert_non_null(strstr(out, "HD_QUEUE_TYPE: queue type 'stream': expected classic or quorum"));
    free(out);
    hd_config_free(cfg);
}

static void usage_errors(void **state)
{
    (void)state;
    char *out = NULL;
    char *bad[] = {"topology", "--svg", NULL};
    assert_int_equal(run(NULL, 0, &out, 2, bad), ADMIN_USAGE);
    assert_non_null(strstr(out, "unknown argument '--svg'"));
    free(out);
    char *both[] = {"topology", "--dot", "--json", NULL};
    assert_int_equal(run(NULL, 0, &out, 3, both), ADMIN_USAGE);
    free(out);
    char *help[] = {"topology", "--help", NULL};
    assert_int_equal(run(NULL, 0, &out, 2, help), ADMIN_OK);
    assert_non_null(strstr(out, "usage: herald-admin"));
    free(out);
    hd_error err;
    static notif_topology t;
    assert_hd_err(HD_EINVAL, notif_topology_make(&t, "", "q", NULL, &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(committed_dot_is_current),
        cmocka_unit_test(shows_the_declared_topology),
        cmocka_unit_test(json_document),
        cmocka_unit_test(follows_the_settings),
        cmocka_unit_test(quorum_queues_always_have_a_limit_and_a_dead_letter_target),
        cmocka_unit_test(usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
