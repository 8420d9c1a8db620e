/* amqp_equal.c — see amqp_equal.h. */
#include "amqp_equal.h"

#include <string.h>

int hd_test_amqp_table_equal(const amqp_table_t *a, const amqp_table_t *b)
{
    if (a->num_entries != b->num_entries)
        return 0;
    for (int i = 0; i < a->num_entries; i++)
        if (a->entries[i].key.len != b->entries[i].key.len ||
            memcmp(a->entries[i].key.bytes, b->entries[i].key.bytes, a->entries[i].key.len) != 0 ||
            !hd_test_amqp_field_equal(&a->entries[i].value, &b->entries[i].value))
            return 0;
    return 1;
}

int hd_test_amqp_field_equal(const amqp_field_value_t *a, const amqp_field_value_t *b)
{
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return a->value.bytes.len == b->value.bytes.len &&
               memcmp(a->value.bytes.bytes, b->value.bytes.bytes, a->value.bytes.len) == 0;
    case AMQP_FIELD_KIND_TABLE:
        return hd_test_amqp_table_equal(&a->value.table, &b->value.table);
    case AMQP_FIELD_KIND_ARRAY:
        if (a->value.array.num_entries != b->value.array.num_entries)
            return 0;
        for (int i = 0; i < a->value.array.num_entries; i++)
            if (!hd_test_amqp_field_equal(&a->value.array.entries[i], &b->value.array.entries[i]))
                return 0;
        return 1;
    case AMQP_FIELD_KIND_BOOLEAN:
        return !a->value.boolean == !b->value.boolean;
    case AMQP_FIELD_KIND_I32:
        return a->value.i32 == b->value.i32;
    case AMQP_FIELD_KIND_I64:
        return a->value.i64 == b->value.i64;
    case AMQP_FIELD_KIND_F64:
        return a->value.f64 == b->value.f64;
    case AMQP_FIELD_KIND_TIMESTAMP:
    case AMQP_FIELD_KIND_U64:
        return a->value.u64 == b->value.u64;
    default:
        return 0;
    }
}
