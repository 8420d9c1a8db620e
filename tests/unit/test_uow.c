/* Unit tests for herald/uow.h: dispatch at commit, cascades, atomicity, rollback, scope. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/dispatcher.h"
#include "herald/scope.h"
#include "herald/store.h"
#include "herald/uow.h"

/* ---- a small domain: orders, invoices, an audit log ----------------------------------- */

static const char *const schema[] = {
    "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL);"
    "CREATE TABLE invoices (order_id TEXT PRIMARY KEY REFERENCES orders(id));"
    "CREATE TABLE audit (event_id TEXT PRIMARY KEY, type TEXT NOT NULL)",
};

struct order {
    hd_aggregate base;
    int items;
};

typedef struct fixture {
    hd_store *store;
    hd_dispatcher *d;
    struct order order;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    hd_error err;
    assert_hd_err(HD_OK, hd_store_open("sqlite::memory:", &f->store, &err), &err);
    assert_int_equal(hd_store_migrate(f->store, "shop", schema, 1, &err), 1);
    f->d = hd_dispatcher_new();
    assert_hd(HD_OK, hd_aggregate_init(&f->order.base, "order", "1001", 0));
    f->order.items = 2;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hd_aggregate_release(&f->order.base);
    hd_dispatcher_free(f->d);
    hd_store_close(f->store);
    free(f);
    return 0;
}

static int count(hd_store *s, const char *table)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table); /* a table name, not a value */
    hd_rows *rows = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_store_query(s, sql, NULL, 0, &rows, &err), &err);
    int n = (int)hd_rows_int(rows, 0, 0);
    hd_rows_free(rows);
    return n;
}

/* The use case: write the order row, complete it (raises order.completed), track it. */
static void complete_order(hd_uow *uow, struct order *o)
{
    hd_value p[] = {hd_value_text(hd_aggregate_id(&o->base))};
    hd_error err;
    assert_int_equal(hd_store_exec(hd_uow_store(uow),
                                   "INSERT INTO orders(id, status) VALUES ($1, 'completed')", p, 1,
                                   &err),
                     1);
    assert_hd(HD_OK,
              hd_aggregate_raise(
                  &o->base, hd_event_new("order.completed", json_pack("{s:s}", "order_id",
                                                                      hd_aggregate_id(&o->base)))));
    assert_hd(HD_OK, hd_uow_track(uow, &o->base));
}

static int create_invoice(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    int *calls = ctx;
    (*calls)++;
    const char *order_id = json_string_value(json_object_get(hd_event_payload(ev), "order_id"));
    hd_value p[] = {hd_value_text(order_id)};
    int rc =
        hd_store_exec(hd_uow_store(uow), "INSERT INTO invoices(order_id) VALUES ($1)", p, 1, err);
    return rc < 0 ? rc : HD_OK;
}

static int audit(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)ctx;
    hd_value p[] = {hd_value_text(hd_event_id(ev)), hd_value_text(hd_event_type(ev))};
    int rc = hd_store_exec(hd_uow_store(uow), "INSERT INTO audit(event_id, type) VALUES ($1, $2)",
                           p, 2, err);
    return rc < 0 ? rc : HD_OK;
}

static int numbering_fails(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)ctx;
    (void)uow;
    (void)ev;
    return hd_error_set(err, HD_ERANGE, "invoice numbering exhausted");
}

/* ---- tests ---------------------------------------------------------------------------- */

static void begin_rejects_bad_input_and_an_open_transaction(void **state)
{
    fixture *f = *state;
    hd_uow *uow = (hd_uow *)1;
    hd_error err;
    assert_hd(HD_EINVAL, hd_uow_begin(NULL, f->d, &uow, NULL));
    assert_null(uow);
    assert_hd(HD_EINVAL, hd_uow_begin(f->store, f->d, NULL, NULL));
    assert_hd(HD_OK, hd_store_begin(f->store, NULL));
    assert_hd_err(HD_ESTATE, hd_uow_begin(f->store, f->d, &uow, &err), &err);
    assert_null(uow);
    assert_hd(HD_OK, hd_store_rollback(f->store, NULL));
    assert_hd(HD_EINVAL, hd_uow_commit(NULL, NULL));
    assert_hd(HD_EINVAL, hd_uow_rollback(NULL, NULL));
    assert_hd(HD_EINVAL, hd_uow_flush(NULL, NULL));
    assert_hd(HD_EINVAL, hd_uow_track(NULL, &f->order.base));
    assert_null(hd_uow_store(NULL));
    assert_null(hd_uow_dispatcher(NULL));
}

static void commit_dispatches_and_stores_business_and_handler_rows(void **state)
{
    fixture *f = *state;
    int calls = 0;
    assert_hd(HD_OK, hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls));
    hd_uow *uow = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_uow_begin(f->store, f->d, &uow, &err), &err);
    assert_ptr_equal(hd_uow_store(uow), f->store);
    assert_ptr_equal(hd_uow_dispatcher(uow), f->d);
    assert_true(hd_store_in_transaction(f->store));
    complete_order(uow, &f->order);
    assert_int_equal(calls, 0); /* handlers run at commit, not at raise */
    assert_hd_err(HD_OK, hd_uow_commit(uow, &err), &err);
    assert_int_equal(calls, 1);
    assert_false(hd_store_in_transaction(f->store));
    assert_int_equal(hd_aggregate_pending(&f->order.base), 0);
    assert_int_equal(count(f->store, "orders"), 1);
    assert_int_equal(count(f->store, "invoices"), 1);
}

static void failing_handler_rolls_back_business_row_and_other_handlers_rows(void **state)
{
    fixture *f = *state;
    int calls = 0;
    /* audit writes a row, create_invoice writes one, then numbering fails. */
    hd_dispatcher_register(f->d, "*", audit, NULL);
    hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls);
    hd_dispatcher_register(f->d, "order.completed", numbering_fails, NULL);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(HD_ERANGE, hd_uow_commit(uow, &err), &err);
    assert_string_equal(err.text, "invoice numbering exhausted"); /* the handler's reason */
    assert_int_equal(calls, 1);                                   /* it did write... */
    assert_false(hd_store_in_transaction(f->store));
    assert_int_equal(count(f->store, "orders"), 0); /* ...and nothing was kept */
    assert_int_equal(count(f->store, "invoices"), 0);
    assert_int_equal(count(f->store, "audit"), 0);
    /* The store is usable afterwards. */
    hd_value p[] = {hd_value_text("other")};
    assert_int_equal(hd_store_exec(f->store, "INSERT INTO orders VALUES ($1, 'new')", p, 1, NULL),
                     1);
}

static void handler_store_error_rolls_back_with_the_store_reason(void **state)
{
    fixture *f = *state;
    int calls = 0;
    hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls);
    hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls); /* duplicate row */
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    hd_error err;
    assert_hd_err(HD_EEXIST, hd_uow_commit(uow, &err), &err);
    assert_non_null(strstr(err.text, "invoices.order_id"));
    assert_int_equal(count(f->store, "orders"), 0);
    assert_int_equal(count(f->store, "invoices"), 0);
}

/* A handler that, for each order.completed, creates an invoice aggregate, tracks it in the
 * unit and raises invoice.created on it; the invoice lives as long as the unit (attached). */
static void free_invoice(void *obj)
{
    hd_aggregate_release(obj);
    free(obj);
}

static int open_invoice(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)ctx;
    hd_aggregate *invoice = malloc(sizeof *invoice);
    if (invoice == NULL || hd_aggregate_init(invoice, "invoice", NULL, 0) < 0) {
        free(invoice);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    int rc = hd_uow_attach(uow, invoice, invoice, free_invoice);
    if (rc < 0)
        return rc;
    rc = hd_uow_track(uow, invoice);
    if (rc < 0)
        return rc;
    return hd_aggregate_raise(
        invoice,
        hd_event_new("invoice.created", json_pack("{s:s}", "order_id", hd_event_aggregate_id(ev))));
}

static void events_raised_by_handlers_are_dispatched(void **state)
{
    fixture *f = *state;
    int calls = 0;
    hd_dispatcher_register(f->d, "*", audit, NULL);
    hd_dispatcher_register(f->d, "order.completed", open_invoice, NULL);
    hd_dispatcher_register(f->d, "invoice.created", create_invoice, &calls);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    hd_error err;
    assert_int_equal(hd_uow_flush(uow, &err), 2); /* order.completed, then invoice.created */
    assert_int_equal(calls, 1);
    assert_int_equal(hd_uow_flush(uow, &err), 0); /* nothing left */
    assert_hd_err(HD_OK, hd_uow_commit(uow, &err), &err);
    assert_int_equal(count(f->store, "invoices"), 1);
    assert_int_equal(count(f->store, "audit"), 2);
    hd_rows *rows = NULL;
    assert_hd(HD_OK, hd_store_query(f->store, "SELECT type FROM audit ORDER BY rowid", NULL, 0,
                                    &rows, NULL));
    assert_string_equal(hd_rows_text(rows, 0, 0), "order.completed");
    assert_string_equal(hd_rows_text(rows, 1, 0), "invoice.created");
    hd_rows_free(rows);
}

/* order.completed -> raises order.completed again on the same order: a loop. */
static int loop_forever(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    (void)ev;
    (void)err;
    struct order *o = ctx;
    return hd_aggregate_raise(&o->base, hd_event_new("order.completed", json_object()));
}

static void endless_cascade_is_stopped_and_rolled_back(void **state)
{
    fixture *f = *state;
    hd_dispatcher_register(f->d, "order.completed", loop_forever, &f->order);
    hd_dispatcher_register(f->d, "*", audit, NULL);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    hd_error err;
    assert_hd_err(HD_ERANGE, hd_uow_commit(uow, &err), &err);
    assert_non_null(strstr(err.text, "rounds"));
    assert_int_equal(count(f->store, "audit"), 0);
    assert_int_equal(count(f->store, "orders"), 0);
    assert_int_equal(hd_aggregate_pending(&f->order.base), 0); /* discarded */
}

static void rollback_discards_rows_and_pending_events(void **state)
{
    fixture *f = *state;
    int calls = 0;
    hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    assert_int_equal(hd_aggregate_pending(&f->order.base), 1);
    hd_error err;
    assert_hd_err(HD_OK, hd_uow_rollback(uow, &err), &err);
    assert_int_equal(calls, 0);
    assert_int_equal(hd_aggregate_pending(&f->order.base), 0);
    assert_int_equal(count(f->store, "orders"), 0);
    assert_false(hd_store_in_transaction(f->store));
}

static void tracking_twice_dispatches_once(void **state)
{
    fixture *f = *state;
    int calls = 0;
    hd_dispatcher_register(f->d, "order.completed", create_invoice, &calls);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    assert_hd(HD_OK, hd_uow_track(uow, &f->order.base));
    complete_order(uow, &f->order); /* tracks again */
    assert_hd(HD_OK, hd_uow_commit(uow, NULL));
    assert_int_equal(calls, 1);
}

static void without_dispatcher_events_are_dropped(void **state)
{
    fixture *f = *state;
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, NULL, &uow, NULL));
    complete_order(uow, &f->order);
    assert_hd(HD_OK, hd_uow_commit(uow, NULL));
    assert_int_equal(hd_aggregate_pending(&f->order.base), 0);
    assert_int_equal(count(f->store, "orders"), 1);
}

static void failed_statement_in_the_use_case_fails_the_commit(void **state)
{
    fixture *f = *state;
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    /* The use case ignores a failed statement; the commit does not. */
    assert_hd(HD_ESTORE,
              hd_store_exec(hd_uow_store(uow), "INSERT INTO nowhere VALUES (1)", NULL, 0, NULL));
    hd_error err;
    assert_hd_err(HD_ESTATE, hd_uow_commit(uow, &err), &err);
    assert_int_equal(count(f->store, "orders"), 0);
}

static hd_uow *captured;
static int commit_from_handler(void *ctx, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)ctx;
    (void)ev;
    captured = uow;
    int a = hd_uow_commit(uow, err), b = hd_uow_rollback(uow, err), c = hd_uow_flush(uow, err);
    return a == HD_ESTATE && b == HD_ESTATE && c == HD_ESTATE
               ? HD_OK
               : hd_error_set(err, HD_EHANDLER, "ending the unit from a handler was allowed");
}

static void handler_cannot_end_its_own_unit(void **state)
{
    fixture *f = *state;
    hd_dispatcher_register(f->d, "order.completed", commit_from_handler, NULL);
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    complete_order(uow, &f->order);
    hd_error err;
    assert_hd_err(HD_OK, hd_uow_commit(uow, &err), &err);
    assert_ptr_equal(captured, uow);
    assert_int_equal(count(f->store, "orders"), 1);
}

static char destroyed[16];
static void note_destroy(void *obj)
{
    size_t n = strlen(destroyed);
    destroyed[n] = *(const char *)obj;
    destroyed[n + 1] = '\0';
}

static void attached_objects_live_until_the_unit_ends_in_reverse_order(void **state)
{
    fixture *f = *state;
    static const char a = 'a', b = 'b', c = 'c';
    static int key1, key2, key3;
    destroyed[0] = '\0';
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    assert_hd(HD_OK, hd_uow_attach(uow, &key1, (void *)&a, note_destroy));
    assert_hd(HD_OK, hd_uow_attach(uow, &key2, (void *)&b, note_destroy));
    assert_ptr_equal(hd_uow_attached(uow, &key1), &a);
    assert_null(hd_uow_attached(uow, &key3));
    /* A taken key: refused, and the object is destroyed at once (stolen). */
    assert_hd(HD_EEXIST, hd_uow_attach(uow, &key2, (void *)&c, note_destroy));
    assert_string_equal(destroyed, "c");
    assert_hd(HD_EINVAL, hd_uow_attach(uow, NULL, (void *)&c, NULL));
    assert_hd(HD_OK, hd_uow_attach(uow, &key3, NULL, NULL)); /* nothing to destroy */
    assert_hd(HD_OK, hd_uow_commit(uow, NULL));
    assert_string_equal(destroyed, "cba");
    assert_null(hd_uow_attached(NULL, &key1));
    /* Without a unit the object is still stolen. */
    destroyed[0] = '\0';
    assert_hd(HD_EINVAL, hd_uow_attach(NULL, &key1, (void *)&a, note_destroy));
    assert_string_equal(destroyed, "a");
}

/* The scope on its own (scope.h): what the unit of work and the dispatcher share. */
static void tx_scope_keeps_objects_by_key_and_frees_them_in_reverse(void **state)
{
    fixture *f = *state;
    static const char a = 'a', b = 'b', c = 'c', d = 'd', e = 'e';
    static int keys[6];
    destroyed[0] = '\0';
    hd_tx_scope *scope = hd_tx_scope_new();
    assert_non_null(scope);
    /* more than the first allocation holds, so the list grows */
    const char *objs[] = {&a, &b, &c, &d, &e};
    for (int i = 0; i < 5; i++)
        assert_hd(HD_OK, hd_tx_scope_attach(scope, &keys[i], (void *)objs[i], note_destroy));
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(hd_tx_scope_attached(scope, &keys[i]), objs[i]);
    assert_null(hd_tx_scope_attached(scope, &keys[5]));
    assert_null(hd_tx_scope_attached(NULL, &keys[0]));
    assert_hd(HD_EEXIST, hd_tx_scope_attach(scope, &keys[0], (void *)&e, note_destroy));
    assert_hd(HD_EINVAL, hd_tx_scope_attach(NULL, &keys[5], (void *)&d, note_destroy));
    assert_string_equal(destroyed, "ed"); /* stolen: destroyed at once on failure */
    hd_tx_scope_free(scope);
    assert_string_equal(destroyed, "ededcba");
    hd_tx_scope_free(NULL);

    /* A unit of work has one, and hd_uow_attach is a shortcut to it. */
    assert_null(hd_uow_scope(NULL));
    hd_uow *uow = NULL;
    assert_hd(HD_OK, hd_uow_begin(f->store, f->d, &uow, NULL));
    assert_non_null(hd_uow_scope(uow));
    assert_hd(HD_OK, hd_uow_attach(uow, &keys[0], (void *)&a, NULL));
    assert_ptr_equal(hd_tx_scope_attached(hd_uow_scope(uow), &keys[0]), &a);
    assert_hd(HD_OK, hd_uow_rollback(uow, NULL));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(begin_rejects_bad_input_and_an_open_transaction),
        T(commit_dispatches_and_stores_business_and_handler_rows),
        T(failing_handler_rolls_back_business_row_and_other_handlers_rows),
        T(handler_store_error_rolls_back_with_the_store_reason),
        T(events_raised_by_handlers_are_dispatched),
        T(endless_cascade_is_stopped_and_rolled_back),
        T(rollback_discards_rows_and_pending_events),
        T(tracking_twice_dispatches_once),
        T(without_dispatcher_events_are_dropped),
        T(failed_statement_in_the_use_case_fails_the_commit),
        T(handler_cannot_end_its_own_unit),
        T(attached_objects_live_until_the_unit_ends_in_reverse_order),
        T(tx_scope_keeps_objects_by_key_and_frees_them_in_reverse),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
