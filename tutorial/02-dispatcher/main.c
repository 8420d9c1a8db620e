/* Chapter 2 — the dispatcher and the unit of work.
 *
 * The shop must issue an invoice when an order is completed. The Order does not know
 * invoices exist: it raises order.completed (order.c). A handler registered with the
 * dispatcher creates the invoice, and the unit of work runs that handler inside the same
 * database transaction as the order's own row, so that either both rows are stored or
 * neither is. We show both outcomes: a normal completion, then one where the invoice
 * numbering fails and the whole unit rolls back.
 *
 * Read along: docs/tutorial/02-dispatcher.md. Run: build/dev/tutorial-02-dispatcher
 */
#include <stdio.h>
#include <stdlib.h>

#include "herald/dispatcher.h"
#include "herald/store.h"
#include "herald/uow.h"

#include "order.h"

/* The shop's schema: a list of steps, applied once each (hd_store_migrate). */
static const char *const shop_schema[] = {
    "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " total_cents INTEGER NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE invoices (number TEXT PRIMARY KEY,"
    " order_id TEXT NOT NULL UNIQUE REFERENCES orders(id), amount_cents INTEGER NOT NULL)",
    "CREATE TABLE event_log (event_id TEXT PRIMARY KEY, type TEXT NOT NULL,"
    " aggregate_id TEXT NOT NULL)",
};

/* ---- handler 1: log every event (registered for "*") ---------------------------------- */

/* A plain handler: a function and a context (none here). It writes with the unit's store,
 * so its row belongs to the unit's transaction. */
static int log_event(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)ctx;
    hd_value p[] = {hd_value_text(hd_event_id(ev)), hd_value_text(hd_event_type(ev)),
                    hd_value_text(hd_event_aggregate_id(ev))};
    int rc = hd_store_exec(hd_uow_store(uow),
                           "INSERT INTO event_log(event_id, type, aggregate_id)"
                           " VALUES ($1, $2, $3)",
                           p, 3, err);
    if (rc < 0)
        return rc;
    printf("    [handler] event_log <- %s %s/%s v%lld\n", hd_event_type(ev),
           hd_event_aggregate_type(ev), hd_event_aggregate_id(ev),
           (long long)hd_event_aggregate_version(ev));
    return HD_OK;
}

/* ---- handler 2: CreateInvoiceOnOrderCompleted (made by a factory) ---------------------- */

/* The factory's context, shared by every unit of work: where invoice numbers come from. */
struct invoice_numbering {
    int next; /* the number the next invoice gets */
    int last; /* the highest number we may issue */
};

/* What the factory makes for one unit of work: the seed's handler object, with its
 * "repository" (here: the unit's store) injected. */
struct create_invoice {
    hd_store *store;
    struct invoice_numbering *numbering;
};

static int create_invoice_new(void *ctx, hd_uow *uow, void **handler, hd_error *err)
{
    struct create_invoice *h = malloc(sizeof *h);
    if (h == NULL)
        return hd_error_set(err, HD_ENOMEM, "no memory for the invoice handler");
    h->store = hd_uow_store(uow);
    h->numbering = ctx;
    *handler = h;
    return HD_OK;
}

static int create_invoice_handle(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    struct create_invoice *h = handler;
    if (h->numbering->next > h->numbering->last)
        return hd_error_set(err, HD_ERANGE, "invoice numbering exhausted after INV-%04d",
                            h->numbering->last);
    char number[16];
    snprintf(number, sizeof number, "INV-%04d", h->numbering->next);
    json_t *payload = hd_event_payload(ev);
    const char *order_id = json_string_value(json_object_get(payload, "order_id"));
    json_int_t amount = json_integer_value(json_object_get(payload, "total_cents"));
    hd_value p[] = {hd_value_text(number), hd_value_text(order_id), hd_value_int(amount)};
    int rc = hd_store_exec(h->store,
                           "INSERT INTO invoices(number, order_id, amount_cents)"
                           " VALUES ($1, $2, $3)",
                           p, 3, err);
    if (rc < 0)
        return rc;
    h->numbering->next++;
    printf("    [handler] invoice %s for order %s, %lld.%02lld\n", number, order_id,
           (long long)(amount / 100), (long long)(amount % 100));
    return HD_OK;
}

static void create_invoice_free(void *handler)
{
    free(handler);
}

static const hd_handler_factory create_invoice_factory = {create_invoice_new, create_invoice_handle,
                                                          create_invoice_free};

/* ---- the use case: complete an order --------------------------------------------------- */

/* Everything between begin and commit is one unit: the order's row, the handlers' rows. */
static int complete_order(hd_store *store, hd_dispatcher *d, struct order *o, hd_error *err)
{
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(store, d, &uow, err);
    if (rc < 0)
        return rc;
    rc = order_complete(o, err); /* the domain decides; raises order.completed */
    if (rc >= 0) {
        hd_value p[] = {hd_value_text(hd_aggregate_id(&o->base)), hd_value_int(o->total_cents),
                        hd_value_int(hd_aggregate_version(&o->base))};
        rc = hd_store_exec(hd_uow_store(uow),
                           "INSERT INTO orders(id, status, total_cents, version)"
                           " VALUES ($1, 'completed', $2, $3)",
                           p, 3, err);
    }
    if (rc >= 0)
        rc = hd_uow_track(uow, &o->base); /* "collect this order's events" */
    if (rc < 0) {
        hd_uow_rollback(uow, NULL); /* keep the first reason in err */
        return rc;
    }
    return hd_uow_commit(uow, err); /* handlers run here, then COMMIT (or ROLLBACK) */
}

/* ---- helpers for printing the database ------------------------------------------------- */

static int count(hd_store *store, const char *sql, const hd_value *p, size_t n, int64_t *out)
{
    hd_rows *rows = NULL;
    hd_error err;
    int rc = hd_store_query(store, sql, p, n, &rows, &err);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", sql, err.text);
        return rc;
    }
    *out = hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return HD_OK;
}

static int print_counts(hd_store *store, const char *prefix)
{
    int64_t orders, invoices, logged;
    if (count(store, "SELECT COUNT(*) FROM orders", NULL, 0, &orders) < 0 ||
        count(store, "SELECT COUNT(*) FROM invoices", NULL, 0, &invoices) < 0 ||
        count(store, "SELECT COUNT(*) FROM event_log", NULL, 0, &logged) < 0)
        return HD_ESTORE;
    printf("%s orders=%lld invoices=%lld event_log=%lld\n", prefix, (long long)orders,
           (long long)invoices, (long long)logged);
    return HD_OK;
}

int main(void)
{
    hd_store *store = NULL;
    hd_dispatcher *dispatcher = NULL;
    struct order first, second;
    int have_first = 0, have_second = 0, status = EXIT_FAILURE;
    hd_error err;
    int rc;

    /* [1] An in-memory SQLite database: private to this process, gone at exit. */
    const char *url = "sqlite::memory:";
    rc = hd_store_open(url, &store, &err);
    if (rc < 0) {
        printf("[1] cannot open %s: %s\n", url, err.text);
        return EXIT_FAILURE;
    }
    printf("[1] opened %s (dialect %s)\n", url, hd_store_dialect(store));

    /* [2] The shop's tables. Migrating again is a no-op: safe at every start-up. */
    size_t nsteps = sizeof shop_schema / sizeof shop_schema[0];
    rc = hd_store_migrate(store, "shop", shop_schema, nsteps, &err);
    if (rc < 0) {
        printf("[2] migration failed: %s\n", err.text);
        goto done;
    }
    printf("[2] migrated module shop: %d step(s) applied\n", rc);
    rc = hd_store_migrate(store, "shop", shop_schema, nsteps, &err);
    if (rc < 0) {
        printf("[2] migration failed: %s\n", err.text);
        goto done;
    }
    printf("[2] migrated again: %d step(s) applied (already up to date)\n", rc);

    /* [3] Wire the handlers once, at start-up. Order of registration = order of calls. */
    struct invoice_numbering numbering = {.next = 1, .last = 9999};
    dispatcher = hd_dispatcher_new();
    if (dispatcher == NULL) {
        printf("[3] out of memory\n");
        goto done;
    }
    if ((rc = hd_dispatcher_register(dispatcher, "*", log_event, NULL)) < 0 ||
        (rc = hd_dispatcher_register_factory(dispatcher, "order.completed", &create_invoice_factory,
                                             &numbering)) < 0) {
        printf("[3] cannot register a handler: %s\n", hd_strerror(rc));
        goto done;
    }
    printf("[3] %zu handlers for order.completed: log_event (*), create_invoice\n",
           hd_dispatcher_count(dispatcher, "order.completed"));

    /* [4] Complete order 1001 in a unit of work: order row + invoice + log, one commit. */
    if ((rc = order_init(&first, "1001")) < 0) {
        printf("[4] cannot create order 1001: %s\n", hd_strerror(rc));
        goto done;
    }
    have_first = 1;
    if ((rc = order_add_item(&first, 2, 1250, &err)) < 0 ||
        (rc = order_add_item(&first, 1, 199, &err)) < 0) {
        printf("[4] cannot add an item: %s\n", err.text);
        goto done;
    }
    printf("[4] completing order 1001 (%d items, %lld.%02lld) in a unit of work\n", first.items,
           (long long)(first.total_cents / 100), (long long)(first.total_cents % 100));
    rc = complete_order(store, dispatcher, &first, &err);
    if (rc < 0) {
        printf("[4] unexpected failure: %s (%s)\n", err.text, hd_err_name(rc));
        goto done;
    }
    if (print_counts(store, "[4] committed:") < 0)
        goto done;

    /* [5] Now the invoice numbers run out: the handler will fail. */
    numbering.last = numbering.next - 1;
    printf("[5] invoice numbers exhausted: INV-%04d was the last one allowed\n", numbering.last);

    /* [6] Complete order 1002: the order row and the log row are written, then the invoice
     * handler fails, and the unit of work rolls ALL of it back. */
    if ((rc = order_init(&second, "1002")) < 0) {
        printf("[6] cannot create order 1002: %s\n", hd_strerror(rc));
        goto done;
    }
    have_second = 1;
    if ((rc = order_add_item(&second, 1, 500, &err)) < 0) {
        printf("[6] cannot add an item: %s\n", err.text);
        goto done;
    }
    printf("[6] completing order 1002 (%d item, %lld.%02lld) in a unit of work\n", second.items,
           (long long)(second.total_cents / 100), (long long)(second.total_cents % 100));
    rc = complete_order(store, dispatcher, &second, &err);
    if (rc >= 0) {
        printf("[6] BUG: the unit committed although its handler failed\n");
        goto done;
    }
    printf("[6] commit failed: %s (%s)\n", err.text, hd_err_name(rc));
    if (print_counts(store, "[6] after rollback:") < 0)
        goto done;

    /* [7] Ask for order 1002 directly: it was never stored. */
    hd_value id[] = {hd_value_text("1002")};
    int64_t n;
    if (count(store, "SELECT COUNT(*) FROM orders WHERE id = $1", id, 1, &n) < 0)
        goto done;
    printf("[7] rows for order 1002: %lld (the unit of work kept nothing)\n", (long long)n);
    status = EXIT_SUCCESS;

done:
    if (have_second)
        order_release(&second);
    if (have_first)
        order_release(&first);
    hd_dispatcher_free(dispatcher);
    hd_store_close(store);
    return status;
}
