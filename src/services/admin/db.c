/* db.c — see admin/db.h. */
#include "admin/db.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herald/error.h"

int admin_db_open(const hd_config *cfg, const admin_io *io, const char *what, hd_store **out)
{
    *out = NULL;
    const char *url = hd_config_get(cfg, "HD_DATABASE_URL", "");
    if (*url == '\0') {
        fprintf(io->err,
                "herald-admin %s: HD_DATABASE_URL is not set (the service's database: "
                "sqlite:///path/x.db or postgresql://...)\n",
                what);
        return ADMIN_USAGE;
    }
    hd_error err;
    hd_error_clear(&err);
    if (hd_store_open(url, out, &err) < 0) {
        /* err.text names the failure, not the URL's password: the store adapters redact. */
        fprintf(io->err, "herald-admin %s: cannot open the database: %s\n", what, err.text);
        return ADMIN_FAILED;
    }
    return ADMIN_OK;
}

int admin_db_has(hd_store *store, const char *module, hd_error *err)
{
    int v = hd_store_schema_version(store, module, err);
    return v < 0 ? v : v > 0;
}

int admin_wants_help(int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

void admin_take_json(int *argc, char **argv, int from, admin_io *io)
{
    int w = from;
    for (int i = from; i < *argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            io->json = 1;
        else
            argv[w++] = argv[i];
    }
    *argc = w;
}

void admin_fmt_age(char *buf, size_t cap, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000;
    if (ms < 1000)
        snprintf(buf, cap, "%lldms", (long long)ms);
    else if (s < 60)
        snprintf(buf, cap, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, cap, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, cap, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(buf, cap, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

void admin_fmt_time(char *buf, size_t cap, int64_t ms)
{
    if (ms <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

const char *admin_who(void)
{
    static char buf[64];
    const char *u = getenv("SUDO_USER");
    if (u != NULL && *u != '\0')
        return u;
    struct passwd *pw = getpwuid(geteuid()); /* one thread: the static result is fine */
    if (pw != NULL && pw->pw_name != NULL)
        return pw->pw_name;
    snprintf(buf, sizeof buf, "uid %ld", (long)geteuid());
    return buf;
}
