/* Unit tests of dynlib (a shared library loaded on first use), without servers: a load
 * resolves its names and is done once, from any number of threads; a missing library or
 * symbol is a clear HD_EUNSUPPORTED, kept for every later call; and, with the test hook
 * pointing libpq.so.5 and libcurl.so.4 at names that do not exist, what a host without the
 * libpq5 or libcurl4 package sees: an error from hd_store_open and the SMTP sender, never a
 * crash. (This binary links libpq and libcurl itself, as every test does; the hook makes
 * the loader open another name, so it cannot find them anyway.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/dynlib.h"
#include "herald/sender.h"
#include "herald/store.h"
#include "herald/store_tls.h"

/* libc, which every process has mapped: dlopen finds it by its soname. */
#define LIBC_FUNCTIONS(X) X(strlen) X(strcmp)
HD_DYNLIB_TABLE(libc_lib, "libc.so.6", "test", LIBC_FUNCTIONS);

static void *load_in_thread(void *arg)
{
    (void)arg;
    intptr_t rc = hd_dynlib_load(&libc_lib, NULL);
    return (void *)rc;
}

static void loads_once_from_many_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, load_in_thread, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *rc = NULL;
        pthread_join(t[i], &rc);
        assert_int_equal((intptr_t)rc, 0);
    }
    hd_error err;
    assert_hd_err(0, hd_dynlib_load(&libc_lib, &err), &err);
    assert_int_equal(HD_DYNLIB_FN(libc_lib, strlen)("herald"), 6);
    assert_int_equal(HD_DYNLIB_FN(libc_lib, strcmp)("a", "a"), 0);
}

static void a_missing_library_is_an_error_kept_for_later(void **state)
{
    (void)state;
    static const char *const names[] = {"anything", NULL};
    static void *fns[1];
    static hd_dynlib lib = HD_DYNLIB_INIT("libherald-no-such.so.9", "the test", names, fns);
    hd_error err;
    assert_hd_err(HD_EUNSUPPORTED, hd_dynlib_load(&lib, &err), &err);
    assert_non_null(strstr(err.text, "the test: cannot load libherald-no-such.so.9: "));
    assert_non_null(strstr(err.text, "No such file")); /* dlerror's own words */
    char first[HD_ERROR_TEXT_MAX];
    snprintf(first, sizeof first, "%s", err.text);
    hd_error_clear(&err);
    assert_hd_err(HD_EUNSUPPORTED, hd_dynlib_load(&lib, &err), &err);
    assert_string_equal(err.text, first);
    assert_hd(HD_EUNSUPPORTED, hd_dynlib_load(&lib, NULL)); /* err may be NULL */
    assert_null(fns[0]);
}

static void a_missing_symbol_is_an_error(void **state)
{
    (void)state;
    static const char *const names[] = {"strlen", "hd_no_such_function", NULL};
    static void *fns[2];
    static hd_dynlib lib = HD_DYNLIB_INIT("libc.so.6", "the test", names, fns);
    hd_error err;
    assert_hd_err(HD_EUNSUPPORTED, hd_dynlib_load(&lib, &err), &err);
    assert_non_null(strstr(err.text, "the test: libc.so.6 has no hd_no_such_function: "));
    assert_hd(HD_EINVAL, hd_dynlib_load(NULL, &err));
}

static void override_arguments(void **state)
{
    (void)state;
    assert_hd(HD_EINVAL, hd_dynlib_override(NULL, "x"));
    assert_hd(0, hd_dynlib_override("libnot-set.so.1", NULL)); /* nothing to remove */
    /* Four slots; libpq.so.5 and libcurl.so.4 (set in main) hold two of them. */
    assert_hd(0, hd_dynlib_override("liba.so.1", "libb.so.1"));
    assert_hd(0, hd_dynlib_override("liba.so.1", "libc2.so.1")); /* replaced, same slot */
    assert_hd(0, hd_dynlib_override("libd.so.1", "libe.so.1"));
    assert_hd(HD_ERANGE, hd_dynlib_override("libf.so.1", "libg.so.1"));
    assert_hd(0, hd_dynlib_override("liba.so.1", NULL));
    assert_hd(0, hd_dynlib_override("libd.so.1", NULL));
    assert_hd(0, hd_dynlib_override("libf.so.1", "libg.so.1")); /* room again */
    assert_hd(0, hd_dynlib_override("libf.so.1", NULL));
}

/* What a host without libpq5 gets: an error naming the library, from the store's open and
 * from the TLS helpers that parse a PostgreSQL URL. */
static void postgresql_without_libpq(void **state)
{
    (void)state;
    hd_store *store = NULL;
    hd_error err;
    assert_hd_err(HD_EUNSUPPORTED, hd_store_open("postgresql://127.0.0.1:1/db", &store, &err),
                  &err);
    assert_null(store);
    assert_non_null(strstr(err.text, "PostgreSQL URL: cannot load libpq.so.5: "));
    assert_non_null(strstr(err.text, "libherald-test-no-libpq.so.0"));
    assert_hd_err(HD_EUNSUPPORTED, hd_store_open("postgres://127.0.0.1:1/db", &store, &err), &err);
    assert_int_equal(hd_store_tls_required("postgresql://h/db?sslmode=require"), 0);
    char *url = NULL;
    assert_hd_err(HD_EUNSUPPORTED, hd_store_tls_url("postgresql://h/db", "/dev/null", &url, &err),
                  &err);
    assert_null(url);
    assert_non_null(strstr(err.text, "cannot load libpq.so.5"));
    /* SQLite needs no libpq at all. */
    assert_hd_err(0, hd_store_open("sqlite::memory:", &store, &err), &err);
    hd_store_close(store);
}

/* What a host without libcurl4 gets from the SMTP sender. */
static void smtp_without_libcurl(void **state)
{
    (void)state;
    hd_sender *s = NULL;
    hd_error err;
    assert_hd_err(
        HD_EUNSUPPORTED,
        hd_sender_smtp_new("smtp://127.0.0.1:1", "noreply@herald.example", 1000, &s, &err), &err);
    assert_null(s);
    assert_non_null(strstr(err.text, "SMTP sender: cannot load libcurl.so.4: "));
    hd_smtp_tls tls;
    assert_hd_err(HD_EUNSUPPORTED, hd_sender_smtp_tls("smtp://127.0.0.1:1", &tls, &err), &err);
    /* The log sender needs no libcurl. */
    assert_hd_err(0, hd_sender_log_new(NULL, &s), &err);
    hd_sender_free(s);
}

int main(void)
{
    /* Before anything loads them: this process plays a host without the packages. */
    if (hd_dynlib_override("libpq.so.5", "libherald-test-no-libpq.so.0") != 0 ||
        hd_dynlib_override("libcurl.so.4", "libherald-test-no-libcurl.so.0") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loads_once_from_many_threads),
        cmocka_unit_test(a_missing_library_is_an_error_kept_for_later),
        cmocka_unit_test(a_missing_symbol_is_an_error),
        cmocka_unit_test(override_arguments),
        cmocka_unit_test(postgresql_without_libpq),
        cmocka_unit_test(smtp_without_libcurl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
