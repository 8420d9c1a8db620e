/* Integration tests for herald/topology.h against the real broker (HD_AMQP_URL): each
 * exchange type routes as documented, unroutable keys route nowhere, declarations are
 * idempotent, and a redeclaration with other arguments is a clear error that leaves the
 * connection usable. Every name is unique (hd_test_unique_name) and deleted afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/amqp.h"
#include "herald/publisher.h"
#include "herald/topology.h"

typedef struct fates {
    int confirmed, nacked, returned, lost;
} fates;

static void count_fate(void *ctx, uint64_t seq, void *user, hd_fate fate, const char *reason)
{
    (void)seq;
    (void)user;
    (void)reason;
    fates *f = ctx;
    switch (fate) {
    case HD_FATE_CONFIRMED:
        f->confirmed++;
        break;
    case HD_FATE_NACKED:
        f->nacked++;
        break;
    case HD_FATE_RETURNED:
        f->returned++;
        break;
    case HD_FATE_LOST:
        f->lost++;
        break;
    }
}

typedef struct fixture {
    hd_amqp *a;  /* declarations and counting */
    hd_amqp *pa; /* the publisher's own connection */
    hd_publisher *pub;
    fates f;
    char *prefix;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    hd_error err;
    const char *url = hd_test_require_env("HD_AMQP_URL");
    assert_hd_err(0, hd_amqp_open(url, NULL, &fx->a, &err), &err);
    assert_hd_err(0, hd_amqp_open(url, NULL, &fx->pa, &err), &err);
    hd_publisher_options po = {.window = 64, .on_fate = count_fate, .ctx = &fx->f};
    assert_hd_err(0, hd_publisher_new(fx->pa, &po, &fx->pub, &err), &err);
    fx->prefix = hd_test_unique_name("hd-topo");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    hd_publisher_free(fx->pub);
    hd_amqp_close(fx->pa);
    hd_amqp_close(fx->a);
    free(fx->prefix);
    free(fx);
    return 0;
}

/* prefix + "." + suffix, in a static ring of buffers (names live for one test). */
static const char *name(fixture *fx, const char *suffix)
{
    static char bufs[32][200];
    static unsigned next;
    char *b = bufs[next++ % 32];
    snprintf(b, sizeof bufs[0], "%s.%s", fx->prefix, suffix);
    return b;
}

static void publish(fixture *fx, const char *exchange, const char *key, int n)
{
    hd_error err;
    for (int i = 0; i < n; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "%s #%d", key, i);
        hd_message m = {.exchange = exchange,
                        .routing_key = key,
                        .body = body,
                        .len = (size_t)len,
                        .content_type = "text/plain"};
        assert_hd_err(0, hd_publisher_publish(fx->pub, &m, NULL, &err), &err);
    }
    assert_hd_err(0, hd_publisher_wait(fx->pub, 10000, &err), &err);
}

static uint32_t count(fixture *fx, const char *queue)
{
    hd_queue_info info;
    hd_error err;
    assert_hd_err(0, hd_queue_inspect(fx->a, queue, &info, &err), &err);
    return info.message_count;
}

static void direct_routes_by_exact_key(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *x = name(fx, "direct");
    const char *qa = name(fx, "qa"), *qb = name(fx, "qb"), *qab = name(fx, "qab");
    hd_exchange_spec ex[] = {{.name = x, .type = HD_EXCHANGE_DIRECT, .auto_delete = 0}};
    hd_queue_spec qs[] = {{.name = qa}, {.name = qb}, {.name = qab}};
    hd_binding_spec bs[] = {{.queue = qa, .exchange = x, .key = "a"},
                            {.queue = qb, .exchange = x, .key = "b"},
                            {.queue = qab, .exchange = x, .key = "a"},
                            {.queue = qab, .exchange = x, .key = "b"}};
    hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err);

    publish(fx, x, "a", 3);
    publish(fx, x, "b", 2);
    publish(fx, x, "c", 1); /* no binding "c": routes nowhere, comes back */
    publish(fx, x, "A", 1); /* keys are case-sensitive */
    assert_int_equal(count(fx, qa), 3);
    assert_int_equal(count(fx, qb), 2);
    assert_int_equal(count(fx, qab), 5);
    assert_int_equal(fx->f.confirmed, 5);
    assert_int_equal(fx->f.returned, 2);
    assert_hd_err(0, hd_topology_delete(fx->a, &t, &err), &err);
}

static void fanout_ignores_the_key(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *x = name(fx, "fanout");
    const char *q1 = name(fx, "f1"), *q2 = name(fx, "f2"), *q3 = name(fx, "f3");
    hd_exchange_spec ex[] = {{.name = x, .type = HD_EXCHANGE_FANOUT}};
    hd_queue_spec qs[] = {{.name = q1}, {.name = q2}, {.name = q3}};
    hd_binding_spec bs[] = {{.queue = q1, .exchange = x, .key = ""},
                            {.queue = q2, .exchange = x, .key = "ignored"},
                            {.queue = q3, .exchange = x}};
    hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err);
    publish(fx, x, "anything", 2);
    publish(fx, x, "", 1);
    assert_int_equal(count(fx, q1), 3);
    assert_int_equal(count(fx, q2), 3);
    assert_int_equal(count(fx, q3), 3);
    assert_int_equal(fx->f.confirmed, 3);
    assert_int_equal(fx->f.returned, 0);
    assert_hd_err(0, hd_topology_delete(fx->a, &t, &err), &err);
}

static void topic_patterns(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *x = name(fx, "topic");
    const char *star = name(fx, "star"), *hash = name(fx, "hash"), *all = name(fx, "all"),
               *mid = name(fx, "mid");
    hd_exchange_spec ex[] = {{.name = x, .type = HD_EXCHANGE_TOPIC, .durable = 1}};
    hd_queue_spec qs[] = {{.name = star}, {.name = hash}, {.name = all}, {.name = mid}};
    hd_binding_spec bs[] = {{.queue = star, .exchange = x, .key = "user.*"},
                            {.queue = hash, .exchange = x, .key = "user.#"},
                            {.queue = all, .exchange = x, .key = "#"},
                            {.queue = mid, .exchange = x, .key = "*.created"}};
    hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err);

    publish(fx, x, "user.created", 1);       /* star hash all mid */
    publish(fx, x, "user.email.changed", 1); /* hash all: '*' is exactly one word */
    publish(fx, x, "user", 1);               /* hash all: '#' matches zero words */
    publish(fx, x, "order.created", 1);      /* all mid */
    publish(fx, x, "order.paid.late", 1);    /* all */
    assert_int_equal(count(fx, star), 1);
    assert_int_equal(count(fx, hash), 3);
    assert_int_equal(count(fx, all), 5);
    assert_int_equal(count(fx, mid), 2);
    assert_int_equal(fx->f.returned, 0);

    /* Without the catch-all, a key no pattern matches routes nowhere. */
    hd_binding_spec catch_all = {.queue = all, .exchange = x, .key = "#"};
    assert_hd_err(0, hd_queue_unbind(fx->a, &catch_all, &err), &err);
    publish(fx, x, "invoice.paid.twice", 1);
    assert_int_equal(fx->f.returned, 1);
    assert_int_equal(count(fx, all), 5);
    assert_int_equal(count(fx, hash), 3);
    assert_hd_err(0, hd_topology_delete(fx->a, &t, &err), &err);
}

static void headers_exchange_matches_headers(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *x = name(fx, "headers");
    const char *q_all = name(fx, "hall"), *q_any = name(fx, "hany");
    static const hd_amqp_kv match_all[] = {
        {"x-match", "all"}, {"kind", "invoice"}, {"format", "pdf"}};
    static const hd_amqp_kv match_any[] = {
        {"x-match", "any"}, {"kind", "invoice"}, {"format", "pdf"}};
    hd_exchange_spec ex[] = {{.name = x, .type = HD_EXCHANGE_HEADERS}};
    hd_queue_spec qs[] = {{.name = q_all}, {.name = q_any}};
    hd_binding_spec bs[] = {{.queue = q_all, .exchange = x, .args = match_all, .n_args = 3},
                            {.queue = q_any, .exchange = x, .args = match_any, .n_args = 3}};
    hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err);

    static const hd_amqp_kv both[] = {{"kind", "invoice"}, {"format", "pdf"}};
    static const hd_amqp_kv one[] = {{"kind", "invoice"}, {"format", "html"}};
    hd_message m1 = {.exchange = x, .body = "1", .len = 1, .headers = both, .n_headers = 2};
    hd_message m2 = {.exchange = x, .body = "2", .len = 1, .headers = one, .n_headers = 2};
    hd_message m3 = {.exchange = x, .body = "3", .len = 1};
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &m1, 5000, &err), &err);
    assert_hd_err(0, hd_publish_confirmed(fx->pub, &m2, 5000, &err), &err);
    assert_hd_err(HD_ERETURNED, hd_publish_confirmed(fx->pub, &m3, 5000, &err), &err);
    assert_int_equal(count(fx, q_all), 1);
    assert_int_equal(count(fx, q_any), 2);
    assert_hd_err(0, hd_topology_delete(fx->a, &t, &err), &err);
}

static void redeclare_is_idempotent_and_a_conflict_is_clear(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *x = name(fx, "idem");
    const char *q = name(fx, "idemq");
    hd_exchange_spec ex = {.name = x, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = q, .durable = 1, .message_ttl_ms = 60000};
    hd_queue_info info;
    for (int i = 0; i < 3; i++) {
        assert_hd_err(0, hd_exchange_declare(fx->a, &ex, &err), &err);
        assert_hd_err(0, hd_queue_declare(fx->a, &qs, &info, &err), &err);
    }
    assert_string_equal(info.name, q);

    /* Other flags: 406 PRECONDITION_FAILED, channel reopened, connection fine. */
    hd_queue_spec not_durable = qs;
    not_durable.durable = 0;
    assert_hd(HD_EAMQP, hd_queue_declare(fx->a, &not_durable, NULL, &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "PRECONDITION_FAILED"));
    assert_non_null(strstr(err.text, "durable"));
    assert_int_equal(hd_amqp_last_reply_code(fx->a), 406);
    assert_true(hd_amqp_is_open(fx->a));

    hd_queue_spec other_ttl = qs;
    other_ttl.message_ttl_ms = 1000;
    assert_hd(HD_EAMQP, hd_queue_declare(fx->a, &other_ttl, NULL, &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "x-message-ttl"));

    hd_exchange_spec other_type = ex;
    other_type.type = HD_EXCHANGE_FANOUT;
    assert_hd(HD_EAMQP, hd_exchange_declare(fx->a, &other_type, &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "PRECONDITION_FAILED"));

    /* Still usable: the original declarations still succeed, and messages flow. */
    assert_hd_err(0, hd_exchange_declare(fx->a, &ex, &err), &err);
    assert_hd_err(0, hd_queue_declare(fx->a, &qs, &info, &err), &err);
    hd_binding_spec b = {.queue = q, .exchange = x, .key = "k"};
    assert_hd_err(0, hd_queue_bind(fx->a, &b, &err), &err);
    assert_hd_err(0, hd_queue_bind(fx->a, &b, &err), &err); /* binding twice: a no-op */
    publish(fx, x, "k", 2);
    assert_int_equal(count(fx, q), 2);

    uint32_t n = 0;
    assert_hd_err(0, hd_queue_purge(fx->a, q, &n, &err), &err);
    assert_int_equal(n, 2);
    assert_int_equal(count(fx, q), 0);
    publish(fx, x, "k", 1);
    assert_hd_err(0, hd_queue_delete(fx->a, q, &n, &err), &err);
    assert_int_equal(n, 1);
    assert_hd(HD_ENOTFOUND, hd_queue_inspect(fx->a, q, NULL, &err));
    assert_hd_err(0, hd_exchange_delete(fx->a, x, &err), &err);
    assert_hd_err(0, hd_queue_delete(fx->a, q, NULL, &err), &err); /* gone already: fine */
}

static void queue_kinds(void **state)
{
    fixture *fx = *state;
    hd_error err;
    const char *dlx = name(fx, "dlx");
    const char *quorum = name(fx, "quorum");
    const char *dead = name(fx, "dead");
    hd_exchange_spec ex[] = {{.name = dlx, .type = HD_EXCHANGE_FANOUT, .durable = 1}};
    hd_queue_spec qs[] = {
        {.name = quorum,
         .durable = 1,
         .type = HD_QUEUE_QUORUM,
         .dead_letter_exchange = dlx,
         .delivery_limit = 3,
         .max_length = 1000},
        {.name = dead, .durable = 1},
    };
    hd_binding_spec bs[] = {{.queue = dead, .exchange = dlx}};
    hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err);
    assert_hd_err(0, hd_topology_declare(fx->a, &t, &err), &err); /* idempotent as a whole */

    /* A quorum queue declared as classic: refused by the broker, explained. */
    hd_queue_spec as_classic = {.name = quorum, .durable = 1};
    assert_hd(HD_EAMQP, hd_queue_declare(fx->a, &as_classic, NULL, &err));
    print_message("    error: %s\n", err.text);
    assert_non_null(strstr(err.text, "PRECONDITION_FAILED"));

    /* Checks made before sending anything. */
    hd_queue_spec bad = {.name = quorum, .type = HD_QUEUE_QUORUM};
    assert_hd(HD_EINVAL, hd_queue_declare(fx->a, &bad, NULL, &err));

    /* Server-named exclusive queue, auto-delete queue. */
    hd_queue_spec anon = {.exclusive = 1};
    hd_queue_info info;
    assert_hd_err(0, hd_queue_declare(fx->a, &anon, &info, &err), &err);
    assert_memory_equal(info.name, "amq.gen-", 8);
    assert_int_equal(info.message_count, 0);
    hd_queue_spec ad = {.name = name(fx, "autodel"), .auto_delete = 1};
    assert_hd_err(0, hd_queue_declare(fx->a, &ad, &info, &err), &err);
    assert_hd_err(0, hd_queue_delete(fx->a, ad.name, NULL, &err), &err);
    assert_hd_err(0, hd_topology_delete(fx->a, &t, &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(direct_routes_by_exact_key, setup, teardown),
        cmocka_unit_test_setup_teardown(fanout_ignores_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(topic_patterns, setup, teardown),
        cmocka_unit_test_setup_teardown(headers_exchange_matches_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(redeclare_is_idempotent_and_a_conflict_is_clear, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(queue_kinds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
