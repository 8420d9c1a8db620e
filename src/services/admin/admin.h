/* admin.h — herald-admin: the operator's command for outboxes, inboxes, dead letters and the
 * topology of the example system.
 *
 * One binary, subcommand groups; each group lives in the file named after it and has the
 * same shape:
 *
 *     int admin_<group>(const hd_config *cfg, int argc, char **argv, const admin_io *io);
 *
 * argv[0] is the group's name ("outbox"), argv[1] its subcommand ("status"), then that
 * subcommand's arguments. It writes its result to io->out (a table for people, or one JSON
 * document with io->json) and its errors to io->err, and returns an exit code: ADMIN_OK,
 * ADMIN_FAILED (the command ran and something failed: the database or broker refused, a
 * replay was refused) or ADMIN_USAGE (a bad subcommand, argument or setting). `--help` after
 * a group or subcommand prints its usage to io->out and returns ADMIN_OK. Settings (database
 * and broker URLs) come from cfg, the same HD_* variables and .env the services read. */
#ifndef ADMIN_ADMIN_H
#define ADMIN_ADMIN_H

#include <stdio.h>

#include "herald/config.h"

enum { ADMIN_OK = 0, ADMIN_FAILED = 1, ADMIN_USAGE = 2 };

typedef struct admin_io {
    FILE *out; /* results (borrowed) */
    FILE *err; /* errors and progress (borrowed) */
    int json;  /* 1: --json was given: one JSON document on out */
} admin_io;

typedef int (*admin_group_fn)(const hd_config *cfg, int argc, char **argv, const admin_io *io);

/* outbox.c: status, parked, replay */
int admin_outbox(const hd_config *cfg, int argc, char **argv, const admin_io *io);
/* inbox.c: status */
int admin_inbox(const hd_config *cfg, int argc, char **argv, const admin_io *io);
/* retention.c: run */
int admin_retention(const hd_config *cfg, int argc, char **argv, const admin_io *io);
/* dlq.c: list, replay, purge */
int admin_dlq(const hd_config *cfg, int argc, char **argv, const admin_io *io);
/* topology.c: the declared exchanges, queues and bindings; --dot */
int admin_topology(const hd_config *cfg, int argc, char **argv, const admin_io *io);

/* stream.c: declare, follow, replay, show, offsets (a RabbitMQ stream read by offset) */
int admin_stream(const hd_config *cfg, int argc, char **argv, const admin_io *io);

#endif
