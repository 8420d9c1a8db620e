/* Chapter 22 — writer turns: SQLite's one write lock, and the writer it starves.
 *
 * SQLite has one write lock per database file, and it is not a queue. A connection that
 * finds it taken gets SQLITE_BUSY; its busy handler sleeps and tries again, and nothing tells
 * it when the lock is freed. A service committing back to back (catching up after a stall)
 * frees the lock for microseconds between two transactions and takes it again before the
 * sleeper wakes: the outbox relay, whose claim is a write, waits for as long as the burst
 * lasts. herald's turns (herald/store_sqlite_turns.h) give the lock to the writer that waits:
 * it sleeps in a slot of "<db>-hdturns" on a futex, the next commit wakes it, and a writer
 * about to begin stands aside for it once it has waited more than HD_TURNS_PATIENCE_US (1.5
 * ms).
 *
 * Steps: create a database in a private temporary directory; a 1.5 s burst of back-to-back
 * commits with turns=off while a relay tries one claim every 50 ms; the same with the turns
 * on; remove the directory. No server needed. The figures vary from run to run.
 * Read along: docs/tutorial/22-writer-turns.md.
 * Run: build/dev/tutorial-22-writer-turns
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/clock.h"
#include "herald/store.h"
/* Not the application's API: hd_store_sqlite_turns and hd_turns_yields / hd_turns_wakes
 * are there for tests and figures, and this chapter prints figures. */
#include "herald/store_internal.h"
#include "herald/store_sqlite_turns.h"

#include "tutorial.h"

#define BURST_MS    1500 /* how long the service commits back to back */
#define EVERY_MS    50   /* the relay's pace: one claim, then this long asleep */
#define TIMEOUT_MS  300  /* busy_timeout: how long a write waits for the lock, then HD_EBUSY */
#define ROWS_PER_TX 200  /* a service catching up: many events a transaction */

static const char *const schema =
    "CREATE TABLE events (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL,"
    " claimed INTEGER NOT NULL DEFAULT 0)";
/* The relay's claim: a write, so it needs the lock the service keeps taking. */
static const char *const claim =
    "UPDATE events SET claimed = 1 WHERE seq IN"
    " (SELECT seq FROM events WHERE claimed = 0 ORDER BY seq LIMIT 10)";

/* ---- the service: transactions back to back, for BURST_MS ------------------------------ */

typedef struct service {
    hd_store *store;     /* its own connection, used by its thread only */
    atomic_long commits; /* read by the relay to know the burst began */
    atomic_int done;     /* the burst is over (or failed) */
    int rc;              /* 0, or the code of the call that failed (err says which) */
    hd_error err;
    uint64_t yields, wakes; /* its turns' counters, read before the thread ends */
} service;

static int one_transaction(hd_store *s, hd_error *err)
{
    hd_value p[] = {hd_value_text("{\"type\":\"orders.order_placed\"}")};
    int rc = hd_store_begin(s, err);
    for (int i = 0; i < ROWS_PER_TX && rc >= 0; i++)
        rc = hd_store_exec(s, "INSERT INTO events (payload) VALUES ($1)", p, 1, err);
    if (rc >= 0)
        return hd_store_commit(s, err);
    if (hd_store_in_transaction(s))
        hd_store_rollback(s, NULL);
    return rc;
}

static void *service_run(void *arg)
{
    service *sv = arg;
    int64_t end = hd_clock_ms() + BURST_MS;
    while (sv->rc == 0 && hd_clock_ms() < end) {
        sv->rc = one_transaction(sv->store, &sv->err);
        if (sv->rc == 0)
            atomic_fetch_add(&sv->commits, 1);
    }
    hd_turns *t = hd_store_sqlite_turns(sv->store); /* NULL with turns=off: counters 0 */
    sv->yields = t ? hd_turns_yields(t) : 0;
    sv->wakes = t ? hd_turns_wakes(t) : 0;
    atomic_store(&sv->done, 1);
    return NULL;
}

/* ---- one burst: the service in a thread, the relay here ---------------------------------- */

typedef struct figures {
    long commits;
    int tried, done, timed_out;
    double longest_ms, total_ms; /* the relay's waits: the longest one, all of them */
    uint64_t yields, wakes;
} figures;

static int burst(const char *url, figures *f, hd_error *err)
{
    service sv = {.rc = 0};
    hd_store *relay = NULL;
    int rc = hd_store_open(url, &relay, err);
    if (rc == 0) /* as every relay of herald does: its claims wait in line (store.h) */
        rc = hd_store_wait_in_line(relay, err);
    if (rc == 0)
        rc = hd_store_exec(relay, "DELETE FROM events", NULL, 0, err); /* each burst alike */
    if (rc >= 0)
        rc = hd_store_open(url, &sv.store, err);
    pthread_t th;
    if (rc >= 0 && pthread_create(&th, NULL, service_run, &sv) != 0)
        rc = hd_error_set(err, HD_ENOMEM, "cannot start the service's thread");
    if (rc < 0) {
        hd_store_close(sv.store);
        hd_store_close(relay);
        return rc;
    }
    while (atomic_load(&sv.commits) == 0 && !atomic_load(&sv.done))
        hd_sleep_ms(1);
    rc = 0;
    while (rc == 0 && !atomic_load(&sv.done)) {
        hd_error why;
        int64_t t0 = hd_clock_ns();
        int n = hd_store_exec(relay, claim, NULL, 0, &why);
        double ms = (double)(hd_clock_ns() - t0) / 1e6;
        f->tried++;
        f->total_ms += ms;
        if (ms > f->longest_ms)
            f->longest_ms = ms;
        if (n >= 0)
            f->done++;
        else if (n == HD_EBUSY)
            f->timed_out++; /* waited TIMEOUT_MS for the lock: the starvation itself */
        else
            rc = hd_error_set(err, n, "the relay's claim: %s", why.text);
        hd_sleep_ms(EVERY_MS);
    }
    pthread_join(th, NULL);
    if (rc == 0 && sv.rc < 0)
        rc = hd_error_set(err, sv.rc, "the service's transaction: %s", sv.err.text);
    f->commits = atomic_load(&sv.commits);
    f->yields = sv.yields;
    f->wakes = sv.wakes;
    hd_store_close(sv.store);
    hd_store_close(relay);
    return rc;
}

static void print_figures(int step, const char *turns, const figures *f)
{
    printf("[%d] turns=%s: the service committed %ld transactions in %.1f s; the relay tried %d "
           "writes: %d done, %d timed out after %d ms; longest wait %.1f ms, %.0f ms in all\n",
           step, turns, f->commits, BURST_MS / 1000.0, f->tried, f->done, f->timed_out, TIMEOUT_MS,
           f->longest_ms, f->total_ms);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[400], url[600], url_off[650];
    snprintf(dir, sizeof dir, "%s/herald-t22-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    /* synchronous=off: the burst as fast as the CPU goes (no disk flush per commit). */
    snprintf(url, sizeof url, "sqlite://%s/outbox.db?synchronous=off&busy_timeout=%d", dir,
             TIMEOUT_MS);
    snprintf(url_off, sizeof url_off, "%s&turns=off", url);

    hd_error err;
    hd_error_clear(&err);
    hd_store *store = NULL;
    figures off = {0}, on = {0};
    int rc = hd_store_open(url, &store, &err);
    if (rc == 0)
        rc = hd_store_exec(store, schema, NULL, 0, &err);
    hd_store_close(store);
    if (rc >= 0) {
        printf("[1] created table events; both writers open %s (step 2 adds &turns=off)\n", url);
        rc = burst(url_off, &off, &err);
    }
    if (rc >= 0) {
        print_figures(2, "off", &off);
        rc = burst(url, &on, &err);
    }
    if (rc >= 0) {
        print_figures(3, "on", &on);
        int all = on.done == on.tried && on.timed_out == 0 && on.tried > 0;
        printf("[3] turns=on: %s; the service stood aside %llu times, its commits woke the "
               "relay %llu times\n",
               all ? "every write done" : "NOT every write done", (unsigned long long)on.yields,
               (unsigned long long)on.wakes);
    }
    tutorial_remove_dir(dir);
    if (rc < 0) {
        fprintf(stderr, "chapter 22 failed: %s (%s)\n", err.text, hd_err_name(rc));
        return 1;
    }
    printf("[4] removed %s; read docs/modules/store.md#turns-on-the-write-lock\n", dir);
    return 0;
}
