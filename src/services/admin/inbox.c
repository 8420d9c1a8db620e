/* inbox.c — herald-admin inbox: status (see admin.h). The SQL is hd_inbox_stats_read
 * (herald/inbox.h); the retention shown is HD_INBOX_RETENTION, the setting the consuming
 * service and `retention run` read. */
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "admin/db.h"
#include "herald/clock.h"
#include "herald/inbox.h"

#define INBOX_RETENTION_DEFAULT_MS (168LL * 3600000) /* herald-notifications' default */

static const char group_help[] =
    "usage: herald-admin [--json] inbox status\n"
    "\n"
    "The inbox (the idempotent consumer's memory of message ids) of the database\n"
    "HD_DATABASE_URL names:\n"
    "  status   ids remembered per consumer, the oldest and the newest, and the retention\n"
    "           window (HD_INBOX_RETENTION, default 168h): a duplicate that arrives after\n"
    "           its id was forgotten is processed again.\n"
    "Exit status 0, 1 when the database fails, 2 on a usage error.\n";

int admin_inbox(const hd_config *cfg, int argc, char **argv, const admin_io *io_in)
{
    admin_io io = *io_in;
    admin_take_json(&argc, argv, 1, &io);
    if (argc < 2 || admin_wants_help(argc, argv, 1)) {
        fputs(group_help, argc < 2 ? io.err : io.out);
        return argc < 2 ? ADMIN_USAGE : ADMIN_OK;
    }
    if (strcmp(argv[1], "status") != 0 || argc > 2) {
        fprintf(io.err, "herald-admin inbox: unexpected '%s' (try --help)\n",
                argv[argc > 2 ? 2 : 1]);
        return ADMIN_USAGE;
    }
    hd_error err;
    hd_error_clear(&err);
    int64_t retention = 0;
    if (hd_config_get_duration_ms(cfg, "HD_INBOX_RETENTION", INBOX_RETENTION_DEFAULT_MS, 0,
                                  3650LL * 24 * 3600000, &retention, &err) < 0) {
        fprintf(io.err, "herald-admin inbox: %s\n", err.text);
        return ADMIN_USAGE;
    }
    hd_store *store = NULL;
    int rc = admin_db_open(cfg, &io, "inbox", &store);
    if (rc != ADMIN_OK)
        return rc;
    hd_inbox_stats *st = NULL;
    int has = admin_db_has(store, "inbox", &err);
    if (has <= 0 || hd_inbox_stats_read(store, &st, &err) < 0) {
        fprintf(io.err, "herald-admin inbox: %s\n",
                has == 0 ? "this database has no inbox (hd_inbox was never created)" : err.text);
        hd_store_close(store);
        return ADMIN_FAILED;
    }
    int64_t now = hd_time_now_ms();
    char ret[32], t1[32], t2[32];
    admin_fmt_age(ret, sizeof ret, retention);
    if (io.json) {
        json_t *cs = json_array();
        for (size_t i = 0; i < st->count; i++) {
            const hd_inbox_consumer_stats *c = &st->consumers[i];
            json_array_append_new(cs, json_pack("{s:s, s:I, s:I, s:I}", "consumer", c->consumer,
                                                "ids", (json_int_t)c->ids, "oldest_ms",
                                                (json_int_t)c->oldest_ms, "newest_ms",
                                                (json_int_t)c->newest_ms));
        }
        json_t *doc =
            json_pack("{s:I, s:o}", "retention_ms", (json_int_t)retention, "consumers", cs);
        json_dumpf(doc, io.out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', io.out);
        json_decref(doc);
    } else {
        fprintf(io.out, "%-24s %10s %-22s %-22s %s\n", "CONSUMER", "IDS", "OLDEST", "NEWEST",
                "OLDEST AGE");
        for (size_t i = 0; i < st->count; i++) {
            const hd_inbox_consumer_stats *c = &st->consumers[i];
            char age[32];
            admin_fmt_time(t1, sizeof t1, c->oldest_ms);
            admin_fmt_time(t2, sizeof t2, c->newest_ms);
            admin_fmt_age(age, sizeof age, now - c->oldest_ms);
            fprintf(io.out, "%-24s %10lld %-22s %-22s %s\n", c->consumer, (long long)c->ids, t1, t2,
                    age);
        }
        if (retention > 0)
            fprintf(io.out,
                    "retention: %s (HD_INBOX_RETENTION): `herald-admin retention run` forgets "
                    "ids older than that\n",
                    ret);
        else
            fprintf(io.out, "retention: 0 (HD_INBOX_RETENTION): ids are kept forever\n");
    }
    hd_inbox_stats_free(st);
    hd_store_close(store);
    return ADMIN_OK;
}
