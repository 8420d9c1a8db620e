/* Integration: the TLS side of scripts/servers.sh. Every server presents a certificate of the
 * harness's throwaway CA (HD_TLS_CA_FILE) for 127.0.0.1 and localhost:
 *   PostgreSQL (primary and standby) with ssl=on: sslmode=verify-full connects over TLS;
 *   RabbitMQ on HD_AMQPS_URL: librabbitmq's SSL socket verifies peer and host name;
 * An unrelated CA (HD_TLS_WRONG_CA_FILE) is refused by each client.
 *
 * This proves the harness, not herald: it uses libpq and librabbitmq directly. (The SMTP sink stays
 * plain: see smtp_start in scripts/servers.sh.) Without the variables the test fails (a missing
 * server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <curl/curl.h>
#include <libpq-fe.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hd_test.h"

/* ---- PostgreSQL ------------------------------------------------------------------------ */

/* Connect to the server of URL variable `var` with sslmode=verify-full against `ca`; `host`
 * (or NULL) overrides the URL's host name, the name the certificate must match. */
static PGconn *pg_connect_tls(const char *var, const char *ca, const char *host)
{
    const char *keys[] = {
        "dbname", "sslmode", "sslrootcert", "connect_timeout", host ? "host" : NULL, NULL};
    const char *values[] = {hd_test_require_env(var), "verify-full", ca, "10", host, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1 /* dbname is a URL */);
    assert_non_null(c);
    return c;
}

static void postgres_verify_full(void **state)
{
    (void)state;
    const char *ca = hd_test_require_env("HD_TLS_CA_FILE");
    const char *vars[] = {"HD_PG_URL", "HD_PG_STANDBY_URL"};
    const char *hosts[] = {NULL, "localhost"};
    for (size_t v = 0; v < 2; v++) {
        for (size_t h = 0; h < 2; h++) {
            PGconn *c = pg_connect_tls(vars[v], ca, hosts[h]);
            if (PQstatus(c) != CONNECTION_OK)
                fail_msg("%s (host %s) with sslmode=verify-full: %s", vars[v],
                         hosts[h] ? hosts[h] : "of the URL", PQerrorMessage(c));
            assert_int_equal(PQsslInUse(c), 1);
            const char *proto = PQsslAttribute(c, "protocol");
            assert_non_null(proto);
            assert_true(strncmp(proto, "TLSv1.", 6) == 0);
            /* The server agrees that this session is encrypted. */
            PGresult *res = PQexec(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
            assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
            assert_string_equal(PQgetvalue(res, 0, 0), "t");
            PQclear(res);
            PQfinish(c);
        }
    }
}

static void postgres_wrong_ca_refused(void **state)
{
    (void)state;
    const char *wrong = hd_test_require_env("HD_TLS_WRONG_CA_FILE");
    PGconn *c = pg_connect_tls("HD_PG_URL", wrong, NULL);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    if (strstr(PQerrorMessage(c), "certificate verify failed") == NULL)
        fail_msg("refused, but not for the certificate: %s", PQerrorMessage(c));
    PQfinish(c);
}

/* ---- RabbitMQ -------------------------------------------------------------------------- */

/* Open an SSL socket to HD_AMQPS_URL verifying peer and host name against `ca`; returns the
 * amqp_socket_open status, and on success logs in, opens a channel and declares a queue. */
static int amqps_try(const char *ca)
{
    const char *url = hd_test_require_env("HD_AMQPS_URL");
    char *copy = strdup(url);
    assert_non_null(copy);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK || !ci.ssl)
        fail_msg("HD_AMQPS_URL '%s' is not an amqps:// URL", url);
    const char *vhost = ci.vhost[0] != '\0' ? ci.vhost : "/";

    amqp_connection_state_t conn = amqp_new_connection();
    assert_non_null(conn);
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    assert_non_null(sock);
    assert_int_equal(amqp_ssl_socket_set_cacert(sock, ca), AMQP_STATUS_OK);
    amqp_ssl_socket_set_verify_peer(sock, 1);
    amqp_ssl_socket_set_verify_hostname(sock, 1);
    struct timeval timeout = {.tv_sec = 10};
    int status = amqp_socket_open_noblock(sock, ci.host, ci.port, &timeout);
    if (status == AMQP_STATUS_OK) {
        amqp_rpc_reply_t r =
            amqp_login(conn, vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
        assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
        amqp_channel_open(conn, 1);
        assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
        amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, 1, amqp_empty_bytes, 0, 0,
                                                         1 /* exclusive */, 1, amqp_empty_table);
        assert_non_null(ok);
        assert_true(ok->queue.len > 0);
        assert_int_equal(amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS).reply_type,
                         AMQP_RESPONSE_NORMAL);
        assert_int_equal(amqp_connection_close(conn, AMQP_REPLY_SUCCESS).reply_type,
                         AMQP_RESPONSE_NORMAL);
    }
    amqp_destroy_connection(conn);
    free(copy);
    return status;
}

static void amqps_verifies(void **state)
{
    (void)state;
    int status = amqps_try(hd_test_require_env("HD_TLS_CA_FILE"));
    if (status != AMQP_STATUS_OK)
        fail_msg("amqps with the harness CA: %s", amqp_error_string2(status));
}

static void amqps_wrong_ca_refused(void **state)
{
    (void)state;
    int status = amqps_try(hd_test_require_env("HD_TLS_WRONG_CA_FILE"));
    if (status == AMQP_STATUS_OK)
        fail_msg("amqps accepted a certificate the wrong CA did not sign");
    print_message("refused: %s\n", amqp_error_string2(status));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(postgres_verify_full),
        cmocka_unit_test(postgres_wrong_ca_refused),
        cmocka_unit_test(amqps_verifies),
        cmocka_unit_test(amqps_wrong_ca_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
