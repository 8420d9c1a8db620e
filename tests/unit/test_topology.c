/* Unit tests for herald/topology.h without a broker: the queue-argument table and the
 * checks made before anything is sent. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/topology.h"

/* The entry for key in t, or NULL. */
static const amqp_table_entry_t *find(const amqp_table_t *t, const char *key)
{
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, t->entries[i].key.len) == 0)
            return &t->entries[i];
    return NULL;
}

static void assert_str_entry(const amqp_table_t *t, const char *key, const char *value)
{
    const amqp_table_entry_t *e = find(t, key);
    assert_non_null(e);
    assert_int_equal(e->value.kind, AMQP_FIELD_KIND_UTF8);
    assert_int_equal(e->value.value.bytes.len, strlen(value));
    assert_memory_equal(e->value.value.bytes.bytes, value, strlen(value));
}

static void assert_int_entry(const amqp_table_t *t, const char *key, int64_t value)
{
    const amqp_table_entry_t *e = find(t, key);
    assert_non_null(e);
    assert_int_equal(e->value.kind, AMQP_FIELD_KIND_I64);
    assert_int_equal(e->value.value.i64, value);
}

static void plain_classic_queue_has_no_arguments(void **state)
{
    (void)state;
    hd_queue_spec q = {.name = "q", .durable = 1};
    hd_queue_args args;
    assert_hd(0, hd_queue_args_init(&args, &q, NULL));
    assert_int_equal(args.table.num_entries, 0);
    assert_ptr_equal(args.table.entries, args.entries);
}

static void quorum_queue_with_everything(void **state)
{
    (void)state;
    hd_queue_spec q = {.name = "orders",
                       .durable = 1,
                       .type = HD_QUEUE_QUORUM,
                       .dead_letter_exchange = "orders.dlx",
                       .dead_letter_routing_key = "dead",
                       .message_ttl_ms = 60000,
                       .delivery_limit = 5,
                       .max_length = 10000};
    hd_queue_args args;
    hd_error err;
    assert_hd_err(0, hd_queue_args_init(&args, &q, &err), &err);
    assert_int_equal(args.table.num_entries, 6);
    assert_str_entry(&args.table, "x-queue-type", "quorum");
    assert_str_entry(&args.table, "x-dead-letter-exchange", "orders.dlx");
    assert_str_entry(&args.table, "x-dead-letter-routing-key", "dead");
    assert_int_entry(&args.table, "x-message-ttl", 60000);
    assert_int_entry(&args.table, "x-delivery-limit", 5);
    assert_int_entry(&args.table, "x-max-length", 10000);
}

static void only_set_arguments_are_sent(void **state)
{
    (void)state;
    hd_queue_spec q = {
        .name = "retry.5s", .durable = 1, .message_ttl_ms = 5000, .dead_letter_exchange = ""};
    hd_queue_args args;
    assert_hd(0, hd_queue_args_init(&args, &q, NULL));
    assert_int_equal(args.table.num_entries, 2);
    /* "" is a real value: dead-letter to the default exchange, by the routing key. */
    assert_str_entry(&args.table, "x-dead-letter-exchange", "");
    assert_int_entry(&args.table, "x-message-ttl", 5000);
    assert_null(find(&args.table, "x-queue-type"));
}

static void refused_combinations(void **state)
{
    (void)state;
    hd_queue_args args;
    hd_error err;
    hd_queue_spec not_durable = {.name = "q", .type = HD_QUEUE_QUORUM};
    assert_hd(HD_EINVAL, hd_queue_args_init(&args, &not_durable, &err));
    assert_non_null(strstr(err.text, "durable"));

    hd_queue_spec exclusive = {.name = "q", .durable = 1, .exclusive = 1, .type = HD_QUEUE_QUORUM};
    assert_hd(HD_EINVAL, hd_queue_args_init(&args, &exclusive, &err));
    assert_non_null(strstr(err.text, "exclusive"));

    hd_queue_spec limit_on_classic = {.name = "q", .durable = 1, .delivery_limit = 3};
    assert_hd(HD_EINVAL, hd_queue_args_init(&args, &limit_on_classic, &err));
    assert_non_null(strstr(err.text, "quorum"));

    hd_queue_spec negative = {.name = "q", .message_ttl_ms = -1};
    assert_hd(HD_EINVAL, hd_queue_args_init(&args, &negative, &err));

    hd_queue_spec bad_type = {.name = "q", .type = (hd_queue_type)7};
    assert_hd(HD_EINVAL, hd_queue_args_init(&args, &bad_type, &err));
}

static void exchange_type_names(void **state)
{
    (void)state;
    assert_string_equal(hd_exchange_type_name(HD_EXCHANGE_DIRECT), "direct");
    assert_string_equal(hd_exchange_type_name(HD_EXCHANGE_FANOUT), "fanout");
    assert_string_equal(hd_exchange_type_name(HD_EXCHANGE_TOPIC), "topic");
    assert_string_equal(hd_exchange_type_name(HD_EXCHANGE_HEADERS), "headers");
    assert_null(hd_exchange_type_name((hd_exchange_type)42));
}

static void topology_macro_counts_arrays(void **state)
{
    (void)state;
    static const hd_exchange_spec ex[] = {{.name = "a"}, {.name = "b", .type = HD_EXCHANGE_TOPIC}};
    static const hd_queue_spec qs[] = {{.name = "q"}};
    static const hd_binding_spec bs[] = {{.queue = "q", .exchange = "a", .key = "k"},
                                         {.queue = "q", .exchange = "b", .key = "#"},
                                         {.queue = "q", .exchange = "b", .key = "x.*"}};
    const hd_topology t = HD_TOPOLOGY(ex, qs, bs);
    assert_int_equal(t.n_exchanges, 2);
    assert_int_equal(t.n_queues, 1);
    assert_int_equal(t.n_bindings, 3);
    assert_ptr_equal(t.bindings, bs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_classic_queue_has_no_arguments),
        cmocka_unit_test(quorum_queue_with_everything),
        cmocka_unit_test(only_set_arguments_are_sent),
        cmocka_unit_test(refused_combinations),
        cmocka_unit_test(exchange_type_names),
        cmocka_unit_test(topology_macro_counts_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
