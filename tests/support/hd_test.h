/* hd_test.h — helpers shared by herald's cmocka tests.
 *
 * Include after the cmocka prelude:
 *     #include <stdarg.h>
 *     #include <stddef.h>
 *     #include <stdint.h>
 *     #include <setjmp.h>
 *     #include <cmocka.h>
 *     #include "hd_test.h"
 */
#ifndef HD_TEST_H
#define HD_TEST_H

#include "herald/error.h"

/* Assert that an herald call returned `expected`; on mismatch print both codes by name and
 * message, and the hd_error text when one is given (libuv-style: show both values). */
#define assert_hd(expected, actual)                                                                \
    hd_test_assert_code((expected), (actual), NULL, #actual, __FILE__, __LINE__)
#define assert_hd_err(expected, actual, errp)                                                      \
    hd_test_assert_code((expected), (actual), (errp), #actual, __FILE__, __LINE__)
#define assert_hd_ok(actual)                                                                       \
    hd_test_assert_code(HD_OK, (actual) < 0 ? (actual) : HD_OK, NULL, #actual, __FILE__, __LINE__)

void hd_test_assert_code(int expected, int actual, const hd_error *err, const char *expr,
                         const char *file, int line);

/* The value of environment variable `name`, which a server test needs. When it is unset
 * the test FAILS (never skips): in CI a missing server is a failure. Start the servers with
 * `make servers-up` (or run through `scripts/servers.sh run -- ...`). Borrowed string. */
const char *hd_test_require_env(const char *name);

/* A fresh private directory under $TMPDIR for this test; caller frees the string and may
 * remove the directory with hd_test_rmtree. */
char *hd_test_tmpdir(const char *tag);
void hd_test_rmtree(const char *path);

/* A TCP port on 127.0.0.1 free a moment ago (bound to port 0, then closed): for a server
 * told to listen there, or a port where nothing listens. (Another process may take it in
 * between: known limit.) */
int hd_test_free_port(void);

/* The whole file at path, NUL-terminated (new); NULL when it cannot be opened. */
char *hd_test_read_file(const char *path);

/* A name unique to this process and call (prefix-pid-counter-random), for queues,
 * exchanges and databases on the shared servers. Caller frees. */
char *hd_test_unique_name(const char *prefix);

/* 1 when the NUL-terminated s is well-formed UTF-8 by a check of the tests' own (lead and
 * continuation bytes, no overlong 2-byte forms), independent of herald/utf8.h, so that a
 * test of the module that cleans text does not use that module to judge it. */
int hd_test_utf8_valid(const char *s);

/* A database of the test's own, so that tests never see each other's rows: a temp
 * directory (tag in its name; logs may go there too) and either a SQLite file in it
 * (url "sqlite://<dir>/<sqlite_file>", query included) or, with postgres, a new database
 * "hd_<tag>_<unique>" on the server of HD_PG_URL (same user and host, another path).
 * Fails the test when the server is missing or refuses. Drop it with hd_test_db_drop. */
typedef struct hd_test_db {
    char url[512];
    char pg_name[128]; /* PostgreSQL: the database created for the test ("" for SQLite) */
    char *dir;         /* the temp directory (new) */
} hd_test_db;

void hd_test_db_open(hd_test_db *d, const char *tag, int postgres, const char *sqlite_file);

/* DROP DATABASE ... WITH (FORCE) for PostgreSQL, then remove the temp directory. */
void hd_test_db_drop(hd_test_db *d);

#endif
