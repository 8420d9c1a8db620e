/* amqp_tls.c — see amqp_tls.h. The socket under a connection, and why TLS failed. */
#include "herald/amqp_tls.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What the certificate check saw during one handshake. librabbitmq keeps only "verification
 * failed"; OpenSSL's verify callback sees the reason (expired, unknown issuer...) and the
 * certificate, so the callback writes them here. The SSL_CTX is per socket in librabbitmq,
 * so its app data is ours alone; it points at this stack object only while
 * hd_amqp_tls_socket_open runs. */
typedef struct tls_diag {
    long error;         /* the first X509_V_ERR_* seen; X509_V_OK when none */
    int error_depth;    /* 0 = the server's own certificate, 1+ = a CA above it */
    char subject[160];  /* the server certificate's subject */
    char not_after[32]; /* its expiry, "2025-01-31 12:00 UTC" */
} tls_diag;

static void asn1_time_text(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
        strftime(out, cap, "%Y-%m-%d %H:%M UTC", &tm) == 0)
        snprintf(out, cap, "?");
}

static int record_verify(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_diag *d = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (d == NULL)
        return ok;
    int depth = X509_STORE_CTX_get_error_depth(x);
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    if (depth == 0 && cert != NULL) {
        X509_NAME_oneline(X509_get_subject_name(cert), d->subject, (int)sizeof d->subject);
        asn1_time_text(X509_get0_notAfter(cert), d->not_after, sizeof d->not_after);
    }
    if (!ok && d->error == X509_V_OK) {
        d->error = X509_STORE_CTX_get_error(x);
        d->error_depth = depth;
    }
    /* The verdict stays librabbitmq's: it reads SSL_get_verify_result after the handshake
     * (the mode is SSL_VERIFY_NONE, so returning ok does not change the handshake). */
    return ok;
}

static int readable(const char *what, const char *path, hd_error *err)
{
    if (access(path, R_OK) != 0)
        return hd_error_set(err, HD_ECONFIG, "%s %s: %s", what, path, strerror(errno));
    return 0;
}

int hd_amqp_tls_socket_new(amqp_connection_state_t conn, const hd_amqp_url *u,
                           const hd_amqp_options *o, amqp_socket_t **out, hd_error *err)
{
    *out = NULL;
    if (!u->tls) {
        if ((*out = amqp_tcp_socket_new(conn)) == NULL)
            return hd_error_set(err, HD_ENOMEM, "connect %s:%d: cannot create a TCP socket",
                                u->host, u->port);
        return 0;
    }
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    if (sock == NULL)
        return hd_error_set(err, HD_ENOMEM, "connect %s:%d: cannot create a TLS socket", u->host,
                            u->port);
    int verify = o->tls_insecure ? 0 : 1;
    amqp_ssl_socket_set_verify_peer(sock, verify);
    amqp_ssl_socket_set_verify_hostname(sock, verify);
    /* TLS 1.2 is the oldest version still considered safe (RFC 8996 retired 1.0 and 1.1). */
    (void)amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2, AMQP_TLSvLATEST);
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    if (ctx != NULL)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, record_verify);
    if (o->ca_cert_path != NULL) {
        int rc = readable("CA file", o->ca_cert_path, err);
        if (rc < 0)
            return rc;
        if (amqp_ssl_socket_set_cacert(sock, o->ca_cert_path) != AMQP_STATUS_OK)
            return hd_error_set(err, HD_ECONFIG, "cannot load CA file %s (not PEM?)",
                                o->ca_cert_path);
    } else if (ctx != NULL && verify) {
        /* librabbitmq trusts nothing by default; without a CA file, trust what the system
         * trusts, as curl and libpq's sslrootcert=system do. */
        (void)SSL_CTX_set_default_verify_paths(ctx);
    }
    if (o->client_cert_path != NULL && o->client_key_path != NULL) {
        int rc = readable("client certificate", o->client_cert_path, err);
        if (rc == 0)
            rc = readable("client key", o->client_key_path, err);
        if (rc < 0)
            return rc;
        if (amqp_ssl_socket_set_key(sock, o->client_cert_path, o->client_key_path) !=
            AMQP_STATUS_OK)
            return hd_error_set(err, HD_ECONFIG,
                                "cannot load client certificate %s with key %s (not PEM, or "
                                "the key does not match?)",
                                o->client_cert_path, o->client_key_path);
    }
    *out = sock;
    return 0;
}

int hd_amqp_tls_socket_open(amqp_socket_t *sock, const hd_amqp_url *u, const hd_amqp_options *o,
                            struct timeval *timeout, hd_error *err)
{
    tls_diag d = {.error = X509_V_OK};
    SSL_CTX *ctx = u->tls ? amqp_ssl_socket_get_context(sock) : NULL;
    if (ctx != NULL)
        SSL_CTX_set_app_data(ctx, &d);
    int status = amqp_socket_open_noblock(sock, u->host, u->port, timeout);
    if (ctx != NULL)
        SSL_CTX_set_app_data(ctx, NULL); /* d dies with this frame */
    if (status == AMQP_STATUS_OK)
        return 0;

    const char *ca = o->ca_cert_path ? o->ca_cert_path : "(the system's trust store)";
    switch (status) {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
        if (d.error == X509_V_ERR_CERT_HAS_EXPIRED && d.error_depth == 0)
            return hd_error_set(err, HD_EAUTH,
                                "TLS to %s:%d: the server's certificate expired on %s (%s)",
                                u->host, u->port, d.not_after, d.subject);
        if (d.error != X509_V_OK)
            return hd_error_set(err, HD_EAUTH,
                                "TLS to %s:%d: certificate not trusted by CA file %s (%s)", u->host,
                                u->port, ca, X509_verify_cert_error_string(d.error));
        return hd_error_set(err, HD_EAUTH, "TLS to %s:%d: certificate not trusted by CA file %s",
                            u->host, u->port, ca);
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
        return hd_error_set(err, HD_EAUTH,
                            "TLS to %s:%d: the certificate does not name host '%s' (it is %s)",
                            u->host, u->port, u->host, d.subject[0] ? d.subject : "unnamed");
    case AMQP_STATUS_SSL_ERROR:
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
        return hd_error_set(err, HD_ECONNECT,
                            "TLS to %s:%d: handshake failed (%s): is this port a TLS listener "
                            "(amqps), not plain AMQP?",
                            u->host, u->port, amqp_error_string2(status));
    default:
        return hd_error_set(err, HD_ECONNECT, "connect %s:%d: %s", u->host, u->port,
                            amqp_error_string2(status));
    }
}

/* The scheme of one URL of a comma-separated list: 1 amqps, 0 anything else. */
static int is_amqps(const char *url, size_t len)
{
    while (len > 0 && (*url == ' ' || *url == '\t')) {
        url++;
        len--;
    }
    return len >= 8 && strncmp(url, "amqps://", 8) == 0;
}

int hd_amqp_tls_settings(hd_amqp_options *o, const char *url, const char *ca_file,
                         const char *cert_file, const char *key_file, hd_error *err)
{
    if (ca_file != NULL && *ca_file == '\0')
        ca_file = NULL;
    if (cert_file != NULL && *cert_file == '\0')
        cert_file = NULL;
    if (key_file != NULL && *key_file == '\0')
        key_file = NULL;
    if (ca_file != NULL || cert_file != NULL || key_file != NULL) {
        const char *setting = ca_file     ? "HD_AMQP_CA_FILE"
                              : cert_file ? "HD_AMQP_CERT_FILE"
                                          : "HD_AMQP_KEY_FILE";
        const char *p = url ? url : "";
        do {
            size_t len = strcspn(p, ",");
            if (!is_amqps(p, len))
                return hd_error_set(err, HD_ECONFIG,
                                    "%s is set but HD_AMQP_URL is not amqps:// (every URL of "
                                    "the list must be: TLS is not optional once configured)",
                                    setting);
            p += len;
        } while (*p++ == ',');
    }
    if ((cert_file == NULL) != (key_file == NULL))
        return hd_error_set(err, HD_ECONFIG,
                            "%s is set without %s: a client certificate needs both",
                            cert_file ? "HD_AMQP_CERT_FILE" : "HD_AMQP_KEY_FILE",
                            cert_file ? "HD_AMQP_KEY_FILE" : "HD_AMQP_CERT_FILE");
    const char *names[] = {"HD_AMQP_CA_FILE", "HD_AMQP_CERT_FILE", "HD_AMQP_KEY_FILE"};
    const char *files[] = {ca_file, cert_file, key_file};
    for (int i = 0; i < 3; i++)
        if (files[i] != NULL && access(files[i], R_OK) != 0)
            return hd_error_set(err, HD_ECONFIG, "%s: cannot read %s: %s", names[i], files[i],
                                strerror(errno));
    o->ca_cert_path = ca_file;
    o->client_cert_path = cert_file;
    o->client_key_path = key_file;
    return 0;
}
