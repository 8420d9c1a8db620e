/* The inbox on a real PostgreSQL server (HD_PG_URL; fails, never skips, without it): the
 * conformance cases shared with SQLite, then two consumers accepting the same message at
 * the same time: the second waits for the first, and gets "duplicate" if the first
 * committed, "new" if it rolled back. Exactly once either way. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "hd_test.h"
#include "store_conformance.h"

#include "herald/clock.h"
#include "herald/inbox.h"

static hd_conf_pg pg;
static hd_conf_target target;

static void server_is_configured(void **state)
{
    (void)state;
    hd_conf_pg_init(&pg, hd_test_require_env("HD_PG_URL"));
    target = hd_conf_pg_target(&pg);
}

typedef struct racer {
    hd_store *s;
    atomic_int done; /* set by the worker thread, read by the test */
    int rc;
} racer;

static void *accept_m1(void *p)
{
    racer *r = p;
    r->rc = hd_store_begin(r->s, NULL);
    if (r->rc == 0)
        r->rc = hd_inbox_accept(r->s, "mailer", "m1", NULL);
    if (r->rc >= 0) {
        int c = hd_store_commit(r->s, NULL);
        if (c < 0)
            r->rc = c;
    }
    atomic_store(&r->done, 1);
    return NULL;
}

/* Consumer A accepts m1 and keeps its transaction open; consumer B (a thread) tries the
 * same; A then commits or rolls back. Returns what B's accept said. */
static int race(const char *url, int a_commits)
{
    hd_store *a = hd_conf_open(url);
    racer b = {hd_conf_open(url), 0, 0};
    assert_hd(HD_OK, hd_store_begin(a, NULL));
    assert_int_equal(hd_inbox_accept(a, "mailer", "m1", NULL), 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, accept_m1, &b), 0);
    hd_sleep_ms(200);
    assert_false(atomic_load(&b.done)); /* B waits on A's uncommitted key */
    if (a_commits)
        assert_hd(HD_OK, hd_store_commit(a, NULL));
    else
        assert_hd(HD_OK, hd_store_rollback(a, NULL));
    pthread_join(th, NULL);
    hd_store_close(a);
    hd_store_close(b.s);
    return b.rc;
}

static void concurrent_accepts_of_one_message_give_one_winner(void **state)
{
    (void)state;
    char *url = target.fresh(target.ctx);
    hd_store *s = hd_conf_open(url);
    assert_int_equal(hd_inbox_migrate(s, NULL), 1);
    assert_int_equal(race(url, 1), 0); /* A committed: B sees a duplicate */
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_inbox"), 1);
    assert_int_equal(hd_store_exec(s, "DELETE FROM hd_inbox", NULL, 0, NULL), 1);
    assert_int_equal(race(url, 0), 1); /* A rolled back: B is the one that does it */
    assert_int_equal(hd_conf_scalar(s, "SELECT COUNT(*) FROM hd_inbox"), 1);
    hd_store_close(s);
    free(url);
}

int main(void)
{
    const struct CMUnitTest setup[] = {cmocka_unit_test(server_is_configured)};
    int failed = cmocka_run_group_tests_name("postgresql server", setup, NULL, NULL);
    if (failed)
        return failed;
    failed += hd_conf_run_inbox(&target);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_accepts_of_one_message_give_one_winner),
    };
    failed += cmocka_run_group_tests_name("inbox on postgresql: concurrency", tests, NULL, NULL);
    hd_conf_pg_release(&pg);
    return failed;
}
