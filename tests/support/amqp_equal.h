/* amqp_equal.h — deep equality of AMQP field values and tables, for tests that check that
 * headers travel exactly as sent (nested tables and arrays included). */
#ifndef HD_TEST_AMQP_EQUAL_H
#define HD_TEST_AMQP_EQUAL_H

#include <amqp.h>

/* 1 when a and b (both borrowed) hold the same kind and value, recursively; 0 otherwise.
 * Kinds compared: strings and bytes, tables, arrays, booleans, integers of 32 and 64 bits,
 * doubles, timestamps; any other kind compares unequal. */
int hd_test_amqp_field_equal(const amqp_field_value_t *a, const amqp_field_value_t *b);

/* 1 when the tables hold the same keys, in the same order, with equal values. */
int hd_test_amqp_table_equal(const amqp_table_t *a, const amqp_table_t *b);

#endif
