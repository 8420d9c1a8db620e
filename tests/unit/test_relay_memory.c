/* Unit tests for herald/relay.h: what can be checked without a broker — where an event
 * goes (its topic exchange), the options and their defaults, argument checks. The cycle
 * itself needs RabbitMQ: tests/integration/test_relay.c and test_relay_crash.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "hd_test.h"
#include "herald/relay.h"
#include "herald/topology.h"

static void exchange_is_the_type_up_to_the_first_dot(void **state)
{
    (void)state;
    char out[HD_AMQP_NAME_MAX + 1];
    assert_hd(0, hd_relay_exchange_for("users.user_registered", out, sizeof out));
    assert_string_equal(out, "users");
    assert_hd(0, hd_relay_exchange_for("notifications.email.sent", out, sizeof out));
    assert_string_equal(out, "notifications");
    /* A type without a dot is its own topic. */
    assert_hd(0, hd_relay_exchange_for("heartbeat", out, sizeof out));
    assert_string_equal(out, "heartbeat");
    /* "users." still names the users topic. */
    assert_hd(0, hd_relay_exchange_for("users.", out, sizeof out));
    assert_string_equal(out, "users");
}

static void exchange_refuses_what_would_be_the_default_exchange(void **state)
{
    (void)state;
    char out[16];
    assert_hd(HD_EINVAL, hd_relay_exchange_for(".user_registered", out, sizeof out));
    assert_hd(HD_EINVAL, hd_relay_exchange_for("", out, sizeof out));
    assert_hd(HD_EINVAL, hd_relay_exchange_for(NULL, out, sizeof out));
    assert_hd(HD_EINVAL, hd_relay_exchange_for("users.x", NULL, 0));
    /* Too long for the buffer, or for AMQP (255 bytes). */
    assert_hd(HD_ERANGE, hd_relay_exchange_for("averyveryverylongtopic.x", out, sizeof out));
    char longtype[300];
    memset(longtype, 'a', 260);
    strcpy(longtype + 260, ".x");
    char big[400];
    assert_hd(HD_ERANGE, hd_relay_exchange_for(longtype, big, sizeof big));
}

static void defaults_fill_every_zero(void **state)
{
    (void)state;
    hd_relay_options o;
    hd_error err;
    assert_hd_err(0, hd_relay_options_resolve(NULL, &o, &err), &err);
    assert_int_equal(o.batch, HD_RELAY_BATCH_DEFAULT);
    assert_int_equal(o.window, HD_RELAY_BATCH_DEFAULT); /* the window follows the batch */
    assert_int_equal(o.poll_ms, HD_RELAY_POLL_MS_DEFAULT);
    assert_int_equal(o.lease_ms, HD_OUTBOX_LEASE_DEFAULT_MS);
    assert_int_equal(o.confirm_timeout_ms, HD_OUTBOX_LEASE_DEFAULT_MS / 3);
    assert_int_equal(o.max_attempts, HD_RELAY_MAX_ATTEMPTS_DEFAULT);
    assert_int_equal(o.backoff_base_ms, HD_RELAY_BACKOFF_BASE_DEFAULT);
    assert_int_equal(o.backoff_cap_ms, HD_RELAY_BACKOFF_CAP_DEFAULT);
    assert_null(o.exchange);
    assert_null(o.relay_id);
    assert_int_equal(o.retention_ms, HD_RELAY_RETENTION_DEFAULT);
    assert_int_equal(o.purge_every_ms, HD_RELAY_PURGE_EVERY_DEFAULT);
    assert_int_equal(o.sensitive_retention_ms, HD_RELAY_SENSITIVE_RETENTION_DEFAULT);
    /* below the shortest token lifetime of the example (a reset link: 1 h) */
    assert_true(o.sensitive_retention_ms < 3600000);
    assert_int_equal(o.progress_ms, HD_RELAY_PROGRESS_DEFAULT);
    assert_int_equal(o.no_pipeline, 0); /* hd_relay_run keeps two batches in flight */

    hd_relay_options in = {.batch = 100,
                           .window = 20,
                           .exchange = "",
                           .retention_ms = -5,
                           .sensitive_retention_ms = -3,
                           .progress_ms = -1,
                           .lease_ms = 90000};
    assert_hd_err(0, hd_relay_options_resolve(&in, &o, &err), &err);
    assert_int_equal(o.batch, 100);
    assert_int_equal(o.window, 20);
    assert_null(o.exchange); /* "" means per event, like NULL */
    assert_int_equal(o.retention_ms, -1);
    assert_int_equal(o.sensitive_retention_ms, -1);
    assert_int_equal(o.progress_ms, -1);
    assert_int_equal(o.confirm_timeout_ms, 30000); /* a third of the lease, at most 30 s */

    hd_relay_options one = {.no_pipeline = 1};
    assert_hd_err(0, hd_relay_options_resolve(&one, &o, &err), &err);
    assert_int_equal(o.no_pipeline, 1);
}

static void options_out_of_range_are_refused_with_a_reason(void **state)
{
    (void)state;
    hd_relay_options o;
    hd_error err;
    hd_relay_options big = {.batch = HD_OUTBOX_BATCH_MAX + 1};
    assert_hd_err(HD_EINVAL, hd_relay_options_resolve(&big, &o, &err), &err);
    assert_non_null(strstr(err.text, "batch"));

    /* A confirm timeout as long as the lease would let another relay take the rows over
     * while this one still waits: refused. */
    hd_relay_options slow = {.lease_ms = 1000, .confirm_timeout_ms = 1000};
    assert_hd_err(HD_EINVAL, hd_relay_options_resolve(&slow, &o, &err), &err);
    assert_non_null(strstr(err.text, "lease"));

    hd_relay_options neg = {.poll_ms = -1};
    assert_hd(HD_EINVAL, hd_relay_options_resolve(&neg, &o, NULL));
    hd_relay_options id = {.relay_id = ""};
    assert_hd(HD_EINVAL, hd_relay_options_resolve(&id, &o, NULL));
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    hd_relay_options ex = {.exchange = longname};
    assert_hd(HD_EINVAL, hd_relay_options_resolve(&ex, &o, NULL));
    assert_hd(HD_EINVAL, hd_relay_options_resolve(NULL, NULL, NULL));
}

static void new_checks_its_arguments(void **state)
{
    (void)state;
    hd_relay *r = (hd_relay *)&r; /* must be reset to NULL on failure */
    hd_error err;
    assert_hd_err(HD_EINVAL, hd_relay_new(NULL, NULL, NULL, &r, &err), &err);
    assert_null(r);
    assert_hd(HD_EINVAL, hd_relay_run_once(NULL, NULL, NULL));
    assert_hd(HD_EINVAL, hd_relay_run(NULL, NULL, NULL));
    assert_hd(HD_EINVAL, hd_relay_purge(NULL, NULL, NULL));
    assert_null(hd_relay_id(NULL));
    hd_relay_stats st;
    memset(&st, 0xff, sizeof st);
    hd_relay_get_stats(NULL, &st);
    assert_int_equal(st.confirmed, 0);
    hd_relay_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exchange_is_the_type_up_to_the_first_dot),
        cmocka_unit_test(exchange_refuses_what_would_be_the_default_exchange),
        cmocka_unit_test(defaults_fill_every_zero),
        cmocka_unit_test(options_out_of_range_are_refused_with_a_reason),
        cmocka_unit_test(new_checks_its_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
