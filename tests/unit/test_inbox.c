/* The inbox on SQLite (in memory and in files): the conformance cases of
 * tests/support/store_conformance.c, which also run on PostgreSQL in
 * tests/integration/test_inbox_postgres.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "hd_test.h"
#include "store_conformance.h"

int main(void)
{
    hd_conf_target memory = hd_conf_sqlite_memory();
    int failed = hd_conf_run_inbox(&memory);
    char *dir = hd_test_tmpdir("inbox");
    hd_conf_target file = hd_conf_sqlite_file(dir);
    failed += hd_conf_run_inbox(&file);
    hd_test_rmtree(dir);
    free(dir);
    return failed;
}
