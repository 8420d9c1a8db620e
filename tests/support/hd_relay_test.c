/* hd_relay_test.c — see hd_relay_test.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hd_relay_test.h"

#include <stdio.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"

void hd_test_outbox_fill(hd_store *s, const char *topic, int from, int n, int per_tx, int traced)
{
    hd_error err;
    char type[256];
    snprintf(type, sizeof type, "%s.item_added", topic);
    for (int i = from; i < from + n; i += per_tx) {
        assert_hd_err(0, hd_store_begin(s, &err), &err);
        for (int k = i; k < i + per_tx && k < from + n; k++) {
            hd_envelope *env = hd_envelope_new(type, 1, "/test", json_pack("{s:i}", "n", k));
            assert_non_null(env);
            if (traced && k % 3 == 0) {
                assert_int_equal(
                    0, hd_envelope_set_traceparent(
                           env, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
                assert_int_equal(0, hd_envelope_set_correlation_id(env, "corr-test"));
            }
            char agg[32];
            snprintf(agg, sizeof agg, "item-%d", k);
            assert_hd_err(0, hd_outbox_append(s, env, "item", agg, &err), &err);
            hd_envelope_free(env);
        }
        assert_hd_err(0, hd_store_commit(s, &err), &err);
    }
}

int64_t hd_test_outbox_pending(hd_store *s)
{
    hd_error err;
    int64_t pending = -1;
    assert_hd_err(0, hd_outbox_depth(s, &pending, NULL, NULL, &err), &err);
    return pending;
}

int64_t hd_test_outbox_count(hd_store *s, const char *where)
{
    hd_error err;
    char sql[640];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM hd_outbox WHERE %s", where);
    hd_rows *rows = NULL;
    assert_hd_err(0, hd_store_query(s, sql, NULL, 0, &rows, &err), &err);
    int64_t n = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

static void *run_relay(void *arg)
{
    hd_test_runner *rn = arg;
    rn->rc = hd_relay_run(rn->relay, &rn->stop, &rn->err);
    return NULL;
}

void hd_test_runner_start(hd_test_runner *rn)
{
    hd_error err;
    assert_hd_err(0, hd_stop_init(&rn->stop, &err), &err);
    assert_int_equal(0, pthread_create(&rn->thread, NULL, run_relay, rn));
}

void hd_test_runner_join(hd_test_runner *rn)
{
    assert_int_equal(0, pthread_join(rn->thread, NULL));
    hd_stop_release(&rn->stop);
}

int64_t hd_test_runner_stop(hd_test_runner *rn)
{
    int64_t t0 = hd_clock_ms();
    hd_stop_request(&rn->stop);
    assert_int_equal(0, pthread_join(rn->thread, NULL));
    int64_t took = hd_clock_ms() - t0;
    hd_stop_release(&rn->stop);
    return took;
}
