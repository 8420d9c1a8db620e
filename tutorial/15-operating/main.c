/* Chapter 15 — operating the system: a failure, its alert, its diagnosis, the fix, the replay.
 *
 * Chapters 10 and 11 promised that an event written to the outbox is never lost. Here the
 * promise meets a real fault: somebody forgot to declare the exchange the relay publishes
 * to. The broker refuses every message (404), the relay retries each row with backoff and,
 * after its last attempt, PARKS it: the row stays in the outbox, out of the relay's way,
 * with the reason. Nothing is lost, and nothing moves either, until an operator acts.
 *
 *   [1] the failure   three orders are written; the relay cannot publish them; they park
 *   [2] the alert     the outbox gauge an alert rule watches: parked > 0 (docs/metrics.md)
 *   [3] diagnosis     herald-admin outbox status / parked: which type, how many, why
 *   [4] the fix       declare the exchange and a queue (what the deployment forgot)
 *   [5] the replay    herald-admin outbox replay --type: the rows are due again; the relay
 *                     publishes them; the queue holds all three
 *
 * herald-admin is the binary built from src/services/admin/ (docs/services/admin.md); the
 * chapter runs it as an operator would, with HD_DATABASE_URL pointing at the outbox. It is
 * found in the working directory (ctest runs chapters in the build directory) or HD_BIN_DIR.
 * Needs HD_AMQP_URL (make servers-up). Read along: docs/tutorial/15-operating.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/outbox.h"
#include "herald/relay.h"
#include "herald/store.h"
#include "herald/topology.h"

#include "tutorial.h"

#define ORDERS 3

static int place_order(hd_store *store, int n, hd_error *err)
{
    char id[32];
    snprintf(id, sizeof id, "order-%d", n);
    hd_envelope *env =
        hd_envelope_new("shop.order_placed", 1, "/shop",
                        json_pack("{s:s, s:i}", "order_id", id, "total_cents", 1000 * n));
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_store_begin(store, err);
    if (rc == 0 && (rc = hd_outbox_append(store, env, "order", id, err)) < 0)
        hd_store_rollback(store, NULL);
    else if (rc == 0)
        rc = hd_store_commit(store, err);
    hd_envelope_free(env);
    return rc;
}

/* Relay cycles until no row is pending any more (parked rows are not pending), or 15 s. */
static int relay_until_idle(hd_relay *r, hd_store *store, hd_error *err)
{
    int64_t end = hd_clock_ms() + 15000;
    for (;;) {
        int64_t pending = -1;
        int rc = hd_outbox_depth(store, &pending, NULL, NULL, err);
        if (rc < 0)
            return rc;
        if (pending == 0)
            return 0;
        if (hd_clock_ms() > end)
            return hd_error_set(err, HD_ETIMEOUT, "%lld rows still pending after 15 s",
                                (long long)pending);
        rc = hd_relay_run_once(r, NULL, err);
        if (rc < 0 && rc != HD_EAMQP) /* a refused publish is the fault we are showing */
            return rc;
        hd_sleep_ms(5);
    }
}

/* Run `herald-admin ARGS` as an operator would, print what it says (indented), return its
 * exit status (-1 when it could not run). */
static int admin(const char *bin_dir, const char *db_url, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "HD_DATABASE_URL='%s' '%s/herald-admin' %s 2>&1", db_url, bin_dir,
             args);
    printf("    $ herald-admin %s\n", args);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        fprintf(stderr, "cannot run %s/herald-admin\n", bin_dir);
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, p) != NULL)
        printf("      %s", line);
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(void)
{
    const char *url = tutorial_require_env("HD_AMQP_URL");
    if (url == NULL)
        return 1;
    const char *bin_dir = getenv("HD_BIN_DIR");
    if (bin_dir == NULL || *bin_dir == '\0')
        bin_dir = ".";
    char herald_admin[1024];
    snprintf(herald_admin, sizeof herald_admin, "%s/herald-admin", bin_dir);
    if (access(herald_admin, X_OK) != 0) {
        fprintf(stderr,
                "%s is not there: build it (make build) and run the chapter from the "
                "build directory, or set HD_BIN_DIR\n",
                herald_admin);
        return 1;
    }

    /* Names of our own, so that runs on a shared broker do not meet. */
    char exchange[64], queue[64], dir[] = "/tmp/herald-tutorial15-XXXXXX", db_url[128];
    snprintf(exchange, sizeof exchange, "tutorial15-%d-shop", (int)getpid());
    snprintf(queue, sizeof queue, "tutorial15-%d-billing", (int)getpid());
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db_url, sizeof db_url, "sqlite://%s/shop.db", dir);

    int status = 1, rc;
    hd_error err = {0};
    hd_store *store = NULL;
    hd_amqp *admin_conn = NULL, *relay_conn = NULL;
    hd_relay *relay = NULL;
    int declared = 0;

    if ((rc = hd_store_open(db_url, &store, &err)) < 0 || (rc = hd_outbox_migrate(store, &err)) < 0)
        goto out;
    if ((rc = hd_amqp_open(url, NULL, &admin_conn, &err)) < 0 ||
        (rc = hd_amqp_open(url, NULL, &relay_conn, &err)) < 0)
        goto out;

    printf("[1] the failure: %d orders written; the relay publishes to '%s', which nobody "
           "declared\n",
           ORDERS, exchange);
    for (int n = 1; n <= ORDERS; n++)
        if ((rc = place_order(store, n, &err)) < 0)
            goto out;
    /* no_declare: the deployment's job, forgotten here. max_attempts 3 with a 1 ms backoff
     * makes the chapter quick; a real relay waits seconds to minutes between attempts. */
    hd_relay_options ro = {.exchange = exchange,
                           .no_declare = 1,
                           .max_attempts = 3,
                           .backoff_base_ms = 1,
                           .backoff_cap_ms = 1};
    if ((rc = hd_relay_new(store, relay_conn, &ro, &relay, &err)) < 0 ||
        (rc = relay_until_idle(relay, store, &err)) < 0)
        goto out;
    int64_t pending = -1, parked = -1, oldest = -1;
    if ((rc = hd_outbox_depth(store, &pending, &oldest, &parked, &err)) < 0)
        goto out;
    printf("    the relay tried each row %d times; pending %lld, parked %lld: nothing lost, "
           "nothing moving\n",
           ro.max_attempts, (long long)pending, (long long)parked);

    printf("[2] the alert: outbox_parked = %lld (rule: parked > 0 for 5 minutes pages someone)\n",
           (long long)parked);
    if (parked != ORDERS) {
        fprintf(stderr, "expected %d parked rows, found %lld\n", ORDERS, (long long)parked);
        goto out;
    }

    printf("[3] diagnosis with herald-admin\n");
    if (admin(bin_dir, db_url, "outbox status") != 0 ||
        admin(bin_dir, db_url, "outbox parked") != 0) {
        fprintf(stderr, "herald-admin failed\n");
        goto out;
    }

    printf("[4] the fix: declare the exchange and the billing queue bound to it\n");
    hd_exchange_spec ex = {.name = exchange, .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.name = queue, .durable = 1};
    hd_binding_spec bs = {.queue = queue, .exchange = exchange, .key = "shop.#"};
    if ((rc = hd_exchange_declare(admin_conn, &ex, &err)) < 0 ||
        (rc = hd_queue_declare(admin_conn, &qs, NULL, &err)) < 0 ||
        (rc = hd_queue_bind(admin_conn, &bs, &err)) < 0)
        goto out;
    declared = 1;

    printf("[5] the replay: the parked rows are due again, and the relay publishes them\n");
    if (admin(bin_dir, db_url, "outbox replay --type shop.order_placed") != 0) {
        fprintf(stderr, "herald-admin outbox replay failed\n");
        goto out;
    }
    if ((rc = relay_until_idle(relay, store, &err)) < 0 ||
        (rc = hd_outbox_depth(store, &pending, NULL, &parked, &err)) < 0)
        goto out;
    hd_queue_info info;
    if ((rc = hd_queue_inspect(admin_conn, queue, &info, &err)) < 0)
        goto out;
    printf("    pending %lld, parked %lld; the billing queue holds %lu messages\n",
           (long long)pending, (long long)parked, (unsigned long)info.message_count);
    if (parked != 0 || info.message_count != ORDERS) {
        fprintf(stderr, "expected 0 parked and %d messages in the queue\n", ORDERS);
        goto out;
    }
    if (admin(bin_dir, db_url, "outbox status") != 0)
        goto out;
    printf("done: the fault cost a delay, not an order\n");
    status = 0;

out:
    if (status != 0 && err.code != 0)
        fprintf(stderr, "error: %s\n", err.text);
    if (declared) {
        hd_queue_delete(admin_conn, queue, NULL, NULL);
        hd_exchange_delete(admin_conn, exchange, NULL);
    }
    hd_relay_free(relay);
    hd_amqp_close(relay_conn);
    hd_amqp_close(admin_conn);
    hd_store_close(store);
    tutorial_remove_dir(dir);
    return status;
}
