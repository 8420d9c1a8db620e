/* Unit tests of the stream module's bookkeeping (herald/stream.h) on SQLite: where a reader
 * starts (hd_stream_start_parse) and its offsets — none at first, saved only inside a
 * transaction, lost with a rollback (the effects' fate), forward only, per (consumer,
 * stream), reset. The broker side is tested by integration.stream. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"

#include "herald/stream.h"

static int setup(void **state)
{
    hd_store *s = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &s, &err), &err);
    assert_int_equal(hd_stream_offsets_migrate(s, &err), 1);
    assert_int_equal(hd_stream_offsets_migrate(s, &err), 0); /* idempotent */
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    hd_store_close(*state);
    return 0;
}

static void test_start_parse(void **state)
{
    (void)state;
    hd_stream_start s;
    hd_error err;
    assert_hd(HD_OK, hd_stream_start_parse("first", &s, &err));
    assert_int_equal(s.from, HD_STREAM_FIRST);
    assert_hd(HD_OK, hd_stream_start_parse("last", &s, &err));
    assert_int_equal(s.from, HD_STREAM_LAST);
    assert_hd(HD_OK, hd_stream_start_parse("next", &s, &err));
    assert_int_equal(s.from, HD_STREAM_NEXT);
    assert_hd(HD_OK, hd_stream_start_parse("0", &s, &err));
    assert_int_equal(s.from, HD_STREAM_OFFSET);
    assert_int_equal(s.offset, 0);
    assert_hd(HD_OK, hd_stream_start_parse("9223372036854775807", &s, &err));
    assert_true(s.offset == INT64_MAX);
    assert_hd(HD_EINVAL, hd_stream_start_parse("9223372036854775808", &s, &err));
    assert_hd(HD_OK, hd_stream_start_parse("2026-12-04T16:20:00Z", &s, &err));
    assert_int_equal(s.from, HD_STREAM_TIME);
    assert_true(s.time_ms == 1796401200000LL);
    const char *bad[] = {"", "-1", "1.5", "First", "12abc", "yesterday", "2026-13-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_hd(HD_EINVAL, hd_stream_start_parse(bad[i], &s, &err));
    assert_hd(HD_EINVAL, hd_stream_start_parse(NULL, &s, &err));
}

static int64_t load(hd_store *s, const char *consumer, const char *stream)
{
    int64_t v = -2;
    hd_error err;
    assert_hd_err(HD_OK, hd_stream_offset_load(s, consumer, stream, &v, &err), &err);
    return v;
}

static void test_offsets_commit_with_the_effects(void **state)
{
    hd_store *s = *state;
    hd_error err;
    assert_int_equal(load(s, "proj", "log"), -1); /* none yet */
    /* outside a transaction: refused, the offset must travel with the effects */
    assert_hd(HD_ESTATE, hd_stream_offset_save(s, "proj", "log", 0, &err));
    /* saved, then rolled back: as if never handled */
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 0, &err), 1);
    assert_int_equal(load(s, "proj", "log"), 0); /* visible inside */
    assert_hd_err(HD_OK, hd_store_rollback(s, &err), &err);
    assert_int_equal(load(s, "proj", "log"), -1);
    /* committed */
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 0, &err), 1);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 5, &err), 1);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    assert_int_equal(load(s, "proj", "log"), 5);
    /* forward only: an older or equal offset changes nothing and says so */
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 5, &err), 0);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 3, &err), 0);
    assert_int_equal(hd_stream_offset_save(s, "proj", "log", 6, &err), 1);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    assert_int_equal(load(s, "proj", "log"), 6);
    /* per (consumer, stream) */
    assert_int_equal(load(s, "other", "log"), -1);
    assert_int_equal(load(s, "proj", "other-log"), -1);
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_int_equal(hd_stream_offset_save(s, "other", "log", 1, &err), 1);
    assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
    assert_int_equal(load(s, "proj", "log"), 6);
    assert_int_equal(load(s, "other", "log"), 1);
    /* reset: forgotten, the next reader starts from its options */
    assert_int_equal(hd_stream_offset_reset(s, "proj", "log", &err), 1);
    assert_int_equal(hd_stream_offset_reset(s, "proj", "log", &err), 0);
    assert_int_equal(load(s, "proj", "log"), -1);
    assert_int_equal(load(s, "other", "log"), 1);
    /* bad arguments */
    int64_t v;
    assert_hd(HD_EINVAL, hd_stream_offset_load(s, "", "log", &v, &err));
    assert_hd(HD_EINVAL, hd_stream_offset_load(s, "proj", NULL, &v, &err));
    assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
    assert_hd(HD_EINVAL, hd_stream_offset_save(s, "proj", "log", -1, &err));
    assert_hd_err(HD_OK, hd_store_rollback(s, &err), &err);
    assert_hd(HD_EINVAL, hd_stream_offset_reset(NULL, "proj", "log", &err));
}

/* What a reader does per record, without a broker: a projection row and the offset in one
 * transaction; a crash between records (a rollback here) loses neither, doubles neither. */
static void test_projection_and_offset_are_one_fact(void **state)
{
    hd_store *s = *state;
    hd_error err;
    assert_true(hd_store_exec(s, "CREATE TABLE counts (k TEXT PRIMARY KEY, n BIGINT NOT NULL)",
                              NULL, 0, &err) >= 0);
    const char *keys[] = {"a", "b", "a", "c", "a", "b"};
    for (int64_t off = 0; off < 6; off++) {
        for (int attempt = 0; attempt < 2; attempt++) {
            assert_hd_err(HD_OK, hd_store_begin(s, &err), &err);
            int fresh = hd_stream_offset_save(s, "counts", "log", off, &err);
            assert_true(fresh >= 0);
            if (fresh == 1) {
                hd_value p[] = {hd_value_text(keys[off])};
                assert_true(hd_store_exec(s,
                                          "INSERT INTO counts (k, n) VALUES ($1, 1)"
                                          " ON CONFLICT (k) DO UPDATE SET n = counts.n + 1",
                                          p, 1, &err) >= 0);
            }
            /* the first attempt of every odd record "crashes" before its commit */
            if (attempt == 0 && off % 2 == 1)
                assert_hd_err(HD_OK, hd_store_rollback(s, &err), &err);
            else
                assert_hd_err(HD_OK, hd_store_commit(s, &err), &err);
        }
    }
    hd_rows *rows = NULL;
    assert_hd_err(
        HD_OK, hd_store_query(s, "SELECT k, n FROM counts ORDER BY k", NULL, 0, &rows, &err), &err);
    assert_int_equal(hd_rows_count(rows), 3);
    assert_string_equal(hd_rows_text(rows, 0, 0), "a");
    assert_int_equal(hd_rows_int(rows, 0, 1), 3);
    assert_int_equal(hd_rows_int(rows, 1, 1), 2);
    assert_int_equal(hd_rows_int(rows, 2, 1), 1);
    hd_rows_free(rows);
    assert_int_equal(load(s, "counts", "log"), 5);
}

static void test_consumer_open_checks_its_options(void **state)
{
    hd_store *s = *state;
    hd_error err;
    hd_stream_consumer *c = (hd_stream_consumer *)&err; /* must be reset to NULL */
    hd_stream_consumer_options o = {.stream = "log", .consumer = "p", .store = s};
    assert_hd(HD_EINVAL, hd_stream_consumer_open("amqp://127.0.0.1:1/", &o, &c, &err));
    assert_null(c);
    o.handler = (hd_stream_handler)1; /* never called: the check comes first */
    o.prefetch = -1;
    assert_hd(HD_EINVAL, hd_stream_consumer_open("amqp://127.0.0.1:1/", &o, &c, &err));
    o.prefetch = 0;
    o.stream = "";
    assert_hd(HD_EINVAL, hd_stream_consumer_open("amqp://127.0.0.1:1/", &o, &c, &err));
    assert_int_equal(hd_stream_consumer_offset(NULL), -1);
    hd_stream_consumer_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_parse),
        cmocka_unit_test_setup_teardown(test_offsets_commit_with_the_effects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projection_and_offset_are_one_fact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_open_checks_its_options, setup, teardown),
    };
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
