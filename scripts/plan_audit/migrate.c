/* scripts/plan_audit/migrate.c — the audit's schema, made by the project's own migrations.
 *
 *     migrate DB.sqlite [MODULE DDL]...
 *
 * Runs every module's migration function on a new SQLite file, so the tables and indexes
 * the plans are made against are the ones the services create, never a hand-written copy.
 * A MODULE DDL pair is one more one-step module for a table whose steps are a static array
 * in its file (admin/stream.c's stream_projection): run.sh passes the text extracted from
 * the source, through hd_store_migrate as that file does. Prints the libsqlite3 version it
 * runs with, which the audit compares with Python's. Exit 0, or 1 with the failing step. */
#include <sqlite3.h>
#include <stdio.h>

#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/store.h"
#include "herald/stream.h"
#include "notifications/repository.h"
#include "users/messages.h"
#include "users/repository.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            fprintf(stderr, "migrate: %s: %s\n", #call, err.text);                                 \
            hd_store_close(s);                                                                     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2 || argc % 2 != 0) {
        fprintf(stderr, "usage: migrate DB.sqlite [MODULE DDL]...\n");
        return 2;
    }
    char url[4096];
    if (snprintf(url, sizeof url, "sqlite://%s", argv[1]) >= (int)sizeof url) {
        fprintf(stderr, "migrate: path too long\n");
        return 2;
    }
    hd_store *s = NULL;
    hd_error err = {0};
    if (hd_store_open(url, &s, &err) < 0) {
        fprintf(stderr, "migrate: open %s: %s\n", url, err.text);
        return 1;
    }
    CHECK(hd_outbox_migrate(s, &err));
    CHECK(hd_inbox_migrate(s, &err));
    CHECK(hd_stream_offsets_migrate(s, &err));
    CHECK(users_repo_migrate(s, &err));
    CHECK(messages_migrate(s, &err));
    CHECK(notif_repo_migrate(s, &err));
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *steps[] = {argv[i + 1]};
        CHECK(hd_store_migrate(s, argv[i], steps, 1, &err));
    }
    hd_store_close(s);
    printf("libsqlite3 %s\n", sqlite3_libversion());
    return 0;
}
