/* admin/db.h — what the database groups of herald-admin share (outbox, inbox, retention):
 * opening HD_DATABASE_URL, telling whether a module's table exists there, the per-subcommand
 * options (--json, --help) and the formats of times and ages. Private to herald-admin. */
#ifndef ADMIN_DB_H
#define ADMIN_DB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "admin/admin.h"
#include "herald/config.h"
#include "herald/store.h"

/* Open the store named by HD_DATABASE_URL. *out is new (hd_store_close). On failure the
 * reason is written to io->err under "herald-admin <what>:" and the exit code returned:
 * ADMIN_USAGE (the setting is missing) or ADMIN_FAILED (the database refused). */
int admin_db_open(const hd_config *cfg, const admin_io *io, const char *what, hd_store **out);

/* 1 when module's migrations ran on store ("outbox", "inbox"), 0 when they never did (the
 * table does not exist: a database of a service without an inbox, say), negative code on a
 * failure (err filled). */
int admin_db_has(hd_store *store, const char *module, hd_error *err);

/* 1 when argv[from..argc) holds --help or -h. */
int admin_wants_help(int argc, char **argv, int from);

/* Remove every "--json" from argv[from..*argc) (shifting the rest down), setting io->json
 * when there was one: `herald-admin outbox status --json` means the same as
 * `herald-admin --json outbox status`. io is a copy the subcommand owns. */
void admin_take_json(int *argc, char **argv, int from, admin_io *io);

/* A duration for people: "850ms", "42s", "3m05s", "2h10m", "3d04h". */
void admin_fmt_age(char *buf, size_t cap, int64_t ms);

/* Epoch ms as UTC ISO 8601 ("2026-12-04T15:01:02Z"); "-" for 0. */
void admin_fmt_time(char *buf, size_t cap, int64_t ms);

/* Who runs the command, for audit lines: $SUDO_USER, else the login name of the effective
 * uid, else "uid <n>". Borrowed static buffer or environment string. */
const char *admin_who(void);

#endif
