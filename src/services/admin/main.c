/* herald-admin — see admin.h. main() reads the settings and the global options, and hands
 * the rest of the command line to the group named first.
 *
 *     herald-admin [--json] GROUP SUBCOMMAND [ARGS...]
 *     herald-admin --help | GROUP --help | GROUP SUBCOMMAND --help
 */
#include <stdio.h>
#include <string.h>

#include "admin/admin.h"
#include "herald/config.h"
#include "herald/error.h"

static const struct {
    const char *name;
    admin_group_fn fn;
    const char *what;
} groups[] = {
    {"outbox", admin_outbox, "status | parked | replay: a service's outbox"},
    {"inbox", admin_inbox, "status: a consumer's inbox"},
    {"retention", admin_retention, "run: delete old outbox and inbox rows, in small batches"},
    {"dlq", admin_dlq, "list | replay | purge: a queue's dead letters"},
    {"topology", admin_topology, "the example system's exchanges, queues and bindings (--dot)"},
    {"stream", admin_stream, "declare | follow | replay | show | offsets: a stream read by offset"},
};
#define NGROUPS (sizeof groups / sizeof groups[0])

static const hd_setting settings[] = {
    {"HD_DATABASE_URL", NULL, "the database of the outbox or inbox to look at"},
    {"HD_AMQP_URL", NULL, "the broker (dlq, topology, stream)"},
    HD_SETTINGS_DATABASE_TLS,
    HD_SETTINGS_AMQP_TLS,
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: herald-admin [--json] GROUP SUBCOMMAND [ARGS...]\n\ngroups:\n");
    for (size_t i = 0; i < NGROUPS; i++)
        fprintf(out, "  %-10s %s\n", groups[i].name, groups[i].what);
    fprintf(out, "\n`herald-admin GROUP --help` describes a group's subcommands.\n\n");
}

int main(int argc, char **argv)
{
    admin_io io = {.out = stdout, .err = stderr, .json = 0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            io.json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            hd_config_print_help(stdout, "herald-admin",
                                 "operate herald's outboxes, inboxes, "
                                 "dead letters and topology",
                                 settings);
            return ADMIN_OK;
        } else {
            fprintf(stderr, "herald-admin: unknown option '%s' (try --help)\n", argv[i]);
            return ADMIN_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return ADMIN_USAGE;
    }
    for (size_t g = 0; g < NGROUPS; g++) {
        if (strcmp(argv[i], groups[g].name) != 0)
            continue;
        hd_config *cfg = NULL;
        hd_error err;
        if (hd_config_load(&cfg, NULL, &err) < 0 || hd_config_apply_database_tls(cfg, &err) < 0) {
            fprintf(stderr, "herald-admin: %s\n", err.text);
            hd_config_free(cfg);
            return ADMIN_USAGE;
        }
        int rc = groups[g].fn(cfg, argc - i, argv + i, &io);
        hd_config_free(cfg);
        return rc;
    }
    fprintf(stderr, "herald-admin: unknown group '%s' (try --help)\n", argv[i]);
    return ADMIN_USAGE;
}
