/* herald/amqp_tls.h — the socket under an hd_amqp connection: TCP for amqp://, TLS with
 * certificate and host-name verification for amqps://, and errors that say what failed.
 *
 * librabbitmq's SSL socket (amqp_ssl_socket_new) does the TLS; this module sets it up the
 * one safe way and explains its failures. What librabbitmq reports is a bare status
 * ("a SSL error occurred", "SSL peer verification failed"); an operator needs to know WHICH
 * of the usual four mistakes it is, at start-up, without a packet capture:
 *
 *   the CA file does not sign the server's certificate  "certificate not trusted by CA file
 *                                                        /etc/herald/ca.crt (unable to get
 *                                                        local issuer certificate)"
 *   the server's certificate has expired                "... (certificate has expired)"
 *   the certificate is for another host name            "certificate does not name host
 *                                                        'broker.internal'"
 *   the port does not speak TLS (a plain AMQP port)     "TLS handshake failed ... is it a
 *                                                        TLS listener?"
 *
 * The first three are HD_EAUTH (the server could not prove who it is: retrying does not
 * help, and hd_amqp_reconnect gives up at once), the fourth HD_ECONNECT.
 *
 * Verification is always on for amqps:// (peer AND host name), except with the
 * hd_amqp_options.tls_insecure escape hatch that tests of other things may use. A TLS
 * connection is never downgraded: amqps:// that cannot do TLS fails, it never falls back to
 * plain AMQP. Without a CA file the system's trust store (/etc/ssl/certs) is used, which
 * is right for a broker with a certificate from a public CA.
 *
 * Known limit: librabbitmq 0.11 compares the host name with the certificate's DNS names
 * only (also for an IP address), so a certificate for amqps://10.0.0.5 needs
 * "DNS:10.0.0.5" in its subjectAltName next to "IP:10.0.0.5" (scripts/servers.sh does so).
 */
#ifndef HERALD_AMQP_TLS_H
#define HERALD_AMQP_TLS_H

#include <sys/time.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create the socket of conn (borrowed; librabbitmq makes the socket part of conn, freed
 * with it) for u (borrowed): a TCP socket when u->tls is 0, else an SSL socket with peer and
 * host-name verification, o->ca_cert_path as the trusted CAs (NULL: the system's store) and
 * o->client_cert_path/o->client_key_path as the client certificate when both are set.
 * *out is borrowed from conn. Returns 0, HD_ENOMEM, or HD_ECONFIG when a file cannot be
 * loaded ("cannot load CA file /x (not PEM?)"). */
int hd_amqp_tls_socket_new(amqp_connection_state_t conn, const hd_amqp_url *u,
                           const hd_amqp_options *o, amqp_socket_t **out, hd_error *err);

/* Open sock (from hd_amqp_tls_socket_new, borrowed) to u's host and port within *timeout
 * (borrowed; NULL = the system's). For TLS this includes the handshake and the checks.
 * Returns 0, HD_ECONNECT ("connect 127.0.0.1:5671: ..." — refused, timed out, or a TLS
 * handshake with a server that does not speak TLS) or HD_EAUTH (certificate not trusted,
 * expired, not for this host name). */
int hd_amqp_tls_socket_open(amqp_socket_t *sock, const hd_amqp_url *u, const hd_amqp_options *o,
                            struct timeval *timeout, hd_error *err);

/* The settings a service reads (HD_AMQP_CA_FILE, HD_AMQP_CERT_FILE, HD_AMQP_KEY_FILE), each
 * NULL or "" when unset, checked against url (the HD_AMQP_URL value; a comma-separated list
 * of URLs is checked element by element) and put into *o (the strings are borrowed: they
 * must outlive *o; hd_amqp_open copies them). Refuses with HD_ECONFIG, naming the setting:
 * a CA or client certificate with an amqp:// URL (it would be silently unused: the
 * operator meant TLS), a file that cannot be read, a certificate without its key or the
 * reverse. Nothing is connected. */
int hd_amqp_tls_settings(hd_amqp_options *o, const char *url, const char *ca_file,
                         const char *cert_file, const char *key_file, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_AMQP_TLS_H */
