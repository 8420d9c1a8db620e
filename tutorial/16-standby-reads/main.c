/* Chapter 16 — reads from a standby: what "eventually" means for a user looking at history.
 *
 * A PostgreSQL streaming standby replays the primary's WAL a little later. Reading from it
 * takes load off the primary, and every read it serves may be a little old. This chapter
 * makes "a little old" visible, then bounds it with herald/replica.h:
 *
 *   [1] two servers      the primary and its standby (pg_is_in_recovery())
 *   [2] eventually       Ada gets a mail; her history on the standby shows it some
 *                        milliseconds later
 *   [3] behind           replay paused (a long report on the standby, a slow disk): the
 *                        standby still answers, without Ada's newest mail
 *   [4] her own write    Ada changes something; the router sends HER reads to the primary
 *                        until the standby has replayed it; Bob still reads the standby
 *   [5] the bound        past max_lag_ms everybody reads the primary, and a counter says so
 *   [6] caught up        replay resumed; reads go back to the standby
 *
 * The history is a table of the chapter's own (dropped at the end) so that the story does
 * not depend on a service. Needs HD_PG_URL and HD_PG_STANDBY_URL (make servers-up: the
 * harness starts the standby). It pauses the shared standby's replay, and resumes it on the
 * way out. Read along: docs/tutorial/16-standby-reads.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/clock.h"
#include "herald/replica.h"
#include "herald/store.h"

#include "tutorial.h"

#define MAX_LAG_MS 1000

static char table[64];

static int history_add(hd_store *primary, const char *user, const char *subject, hd_error *err)
{
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO %s(user_id, subject) VALUES ($1, $2)", table);
    hd_value p[] = {hd_value_text(user), hd_value_text(subject)};
    return hd_store_exec(primary, sql, p, 2, err);
}

/* The number of mails in user's history as s sees it. */
static int history_count(hd_store *s, const char *user, hd_error *err)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE user_id = $1", table);
    hd_value p[] = {hd_value_text(user)};
    hd_rows *rows = NULL;
    int rc = hd_store_query(s, sql, p, 1, &rows, err);
    if (rc < 0)
        return rc;
    rc = (int)hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return rc;
}

static const char *server(hd_store *s)
{
    int rc = hd_replica_in_recovery(s, NULL);
    return rc == 1 ? "standby" : rc == 0 ? "primary" : "?";
}

/* Ada's history through the router, as the service reads it. */
static int routed_read(hd_replica *r, const char *user, hd_error *err)
{
    hd_replica_route why;
    hd_store *s = hd_replica_for_read(r, user, 0, &why);
    int n = history_count(s, user, err);
    if (n >= 0)
        printf("    %s reads %d mail(s) from the %s (%s)\n", user, n, server(s),
               hd_replica_route_name(why));
    return n;
}

static int story(hd_store *primary, hd_store *standby, const char *standby_url, hd_error *err)
{
    printf("[1] two servers: the primary is in recovery: %s; the standby: %s\n",
           hd_replica_in_recovery(primary, err) == 1 ? "yes" : "no",
           hd_replica_in_recovery(standby, err) == 1 ? "yes" : "no");

    /* [2] Eventually: the same query on the standby, until it shows the new mail. */
    int rc = history_add(primary, "ada", "Welcome, Ada", err);
    int64_t t0 = hd_clock_ms();
    int tries = 0;
    while (rc >= 0 && (rc = history_count(standby, "ada", err)) == 0 && ++tries < 10000)
        hd_sleep_ms(1);
    if (rc < 0)
        return rc;
    int64_t took = hd_clock_ms() - t0;
    printf("[2] eventually: a mail for Ada committed on the primary; the standby showed it "
           "%s\n",
           took < 1000 ? "within a second" : "after more than a second");
    printf("    (this time: %lld ms; a standby under load takes longer)\n", (long long)took);

    hd_replica_options o = {.max_lag_ms = MAX_LAG_MS, .check_ms = 100};
    hd_replica *r = NULL;
    if ((rc = hd_replica_open(primary, standby_url, &o, &r, err)) < 0)
        return rc;

    /* [3] Behind: the standby stops replaying; the primary goes on. */
    if ((rc = hd_store_exec(standby, "SELECT pg_wal_replay_pause()", NULL, 0, err)) < 0)
        goto out;
    if ((rc = history_add(primary, "ada", "Your password was changed", err)) < 0 ||
        (rc = history_add(primary, "bob", "Welcome, Bob", err)) < 0)
        goto out;
    printf("[3] behind: replay paused; a second mail for Ada and one for Bob committed\n");
    printf("    the primary has %d mail(s) for Ada, the standby %d: its answer is stale\n",
           history_count(primary, "ada", err), history_count(standby, "ada", err));

    /* [4] Ada's own write: the router remembers where the primary's WAL was after it. */
    uint64_t lsn = 0;
    if ((rc = history_add(primary, "ada", "Preferences saved", err)) < 0 ||
        (rc = hd_replica_wrote(r, "ada", &lsn, err)) < 0)
        goto out;
    char pos[HD_REPLICA_LSN_MAX + 1];
    hd_replica_lsn_format(lsn, pos);
    printf("[4] Ada's own write, at WAL position %s: her reads go to the primary until the "
           "standby has replayed it\n",
           pos);
    if ((rc = routed_read(r, "ada", err)) < 0 || (rc = routed_read(r, "bob", err)) < 0)
        goto out;

    /* [5] The bound: wait past max_lag_ms; everybody reads the primary now. */
    hd_sleep_ms(MAX_LAG_MS + 200);
    printf("[5] the bound: %d ms later the standby is past max_lag_ms (%d ms)\n", MAX_LAG_MS + 200,
           MAX_LAG_MS);
    if ((rc = routed_read(r, "bob", err)) < 0)
        goto out;
    hd_replica_stats st;
    hd_replica_stats_get(r, &st);
    printf("    fallbacks counted (database_read_fallbacks{reason=\"lagging\"}): %llu\n",
           (unsigned long long)st.reads[HD_REPLICA_LAGGING]);

    /* [6] Caught up: replay resumes; within a moment the standby serves again. */
    if ((rc = hd_store_exec(standby, "SELECT pg_wal_replay_resume()", NULL, 0, err)) < 0)
        goto out;
    hd_replica_route why = HD_REPLICA_LAGGING;
    t0 = hd_clock_ms();
    while (hd_clock_ms() - t0 < 10000 &&
           (hd_replica_for_read(r, "ada", 0, &why), why != HD_REPLICA_STANDBY))
        hd_sleep_ms(10);
    printf("[6] caught up: replay resumed\n");
    if ((rc = routed_read(r, "ada", err)) < 0 || (rc = routed_read(r, "bob", err)) < 0)
        goto out;
    rc = 0;
out:
    hd_replica_close(r);
    return rc;
}

int main(void)
{
    const char *primary_url = tutorial_require_env("HD_PG_URL");
    const char *standby_url = tutorial_require_env("HD_PG_STANDBY_URL");
    if (primary_url == NULL || standby_url == NULL)
        return 1;
    hd_error err;
    hd_store *primary = NULL, *standby = NULL;
    if (hd_store_open(primary_url, &primary, &err) < 0 ||
        hd_store_open(standby_url, &standby, &err) < 0) {
        fprintf(stderr, "cannot connect: %s\n", err.text);
        hd_store_close(primary);
        return 1;
    }
    snprintf(table, sizeof table, "tutorial16_history_%ld", (long)getpid());
    char sql[200];
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (id bigserial PRIMARY KEY, user_id text NOT NULL, "
             "subject text NOT NULL)",
             table);
    int rc = hd_store_exec(primary, sql, NULL, 0, &err);
    /* The table itself reaches the standby by replication: wait for it. */
    snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", table);
    for (int i = 0; rc >= 0 && i < 1000; i++) {
        hd_rows *rows = NULL;
        if ((rc = hd_store_query(standby, sql, NULL, 0, &rows, &err)) < 0)
            break;
        int there = strcmp(hd_rows_text(rows, 0, 0), "t") == 0;
        hd_rows_free(rows);
        if (there)
            break;
        hd_sleep_ms(10);
    }
    if (rc >= 0)
        rc = story(primary, standby, standby_url, &err);
    if (rc < 0)
        fprintf(stderr, "chapter 16: %s (%s)\n", err.text, hd_strerror(rc));
    /* Whatever happened: the standby replays again, the table goes. */
    hd_store_exec(standby, "SELECT pg_wal_replay_resume()", NULL, 0, NULL);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
    hd_store_exec(primary, sql, NULL, 0, NULL);
    hd_store_close(standby);
    hd_store_close(primary);
    return rc < 0 ? 1 : 0;
}
