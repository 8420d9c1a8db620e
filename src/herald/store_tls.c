/* store_tls.c — see store_tls.h. */
#include "herald/store_tls.h"

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/dynlib.h"

/* libpq, loaded on first use: the same library as store_pg.c's, in a table of its own (see
 * store_pg.c and dynlib.h). A SQLite URL, or no CA file, never loads it. */
#define PQ_FUNCTIONS(X)                                                                            \
    X(PQconninfo)                                                                                  \
    X(PQconninfoFree)                                                                              \
    X(PQconninfoParse)                                                                             \
    X(PQfreemem)                                                                                   \
    X(PQhost)                                                                                      \
    X(PQport)
HD_DYNLIB_TABLE(pq_lib, "libpq.so.5", "PostgreSQL URL", PQ_FUNCTIONS);
#define LIBPQ(f) HD_DYNLIB_FN(pq_lib, f)

static int is_pg_url(const char *url)
{
    return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
}

/* The value of keyword in a parsed conninfo, NULL when unset. Borrowed from opts. */
static const char *conninfo_value(const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val;
    return NULL;
}

/* Percent-encode everything but RFC 3986's unreserved characters and '/'. */
static size_t pct_encode(const char *in, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p) != NULL) {
            if (out)
                out[n] = (char)*p;
            n++;
        } else {
            if (out) {
                out[n] = '%';
                out[n + 1] = hex[*p >> 4];
                out[n + 2] = hex[*p & 15];
            }
            n += 3;
        }
    }
    return n;
}

int hd_store_tls_required(const char *url)
{
    if (url == NULL || !is_pg_url(url) || hd_dynlib_load(&pq_lib, NULL) < 0)
        return 0; /* without libpq, hd_store_open says why */
    PQconninfoOption *opts = LIBPQ(PQconninfoParse)(url, NULL);
    if (opts == NULL)
        return 0;
    const char *mode = conninfo_value(opts, "sslmode");
    int required =
        mode != NULL && (strcmp(mode, "require") == 0 || strcmp(mode, "verify-ca") == 0 ||
                         strcmp(mode, "verify-full") == 0);
    LIBPQ(PQconninfoFree)(opts);
    return required;
}

int hd_store_tls_url(const char *url, const char *ca_file, char **out, hd_error *err)
{
    *out = NULL;
    if (url == NULL)
        return hd_error_set(err, HD_EINVAL, "no database URL");
    if (ca_file == NULL || *ca_file == '\0') {
        if ((*out = strdup(url)) == NULL)
            return hd_error_set(err, HD_ENOMEM, NULL);
        return 0;
    }
    if (!is_pg_url(url))
        return hd_error_set(err, HD_ECONFIG,
                            "HD_DATABASE_CA_FILE is set but HD_DATABASE_URL is not a "
                            "postgresql:// URL (only PostgreSQL connections use TLS)");
    if (access(ca_file, R_OK) != 0)
        return hd_error_set(err, HD_ECONFIG, "HD_DATABASE_CA_FILE: cannot read %s: %s", ca_file,
                            strerror(errno));
    int loaded = hd_dynlib_load(&pq_lib, err);
    if (loaded < 0)
        return loaded;
    char *why = NULL;
    PQconninfoOption *opts = LIBPQ(PQconninfoParse)(url, &why);
    if (opts == NULL) {
        /* libpq's message names the bad part, never the password. */
        int rc = hd_error_set(err, why ? HD_EURL : HD_ENOMEM, "bad PostgreSQL URL: %s",
                              why ? why : "out of memory");
        LIBPQ(PQfreemem)(why);
        return rc;
    }
    const char *mode = conninfo_value(opts, "sslmode");
    const char *root = conninfo_value(opts, "sslrootcert");
    int rc = 0;
    if (mode != NULL && strcmp(mode, "verify-full") != 0)
        rc = hd_error_set(err, HD_ECONFIG,
                          "HD_DATABASE_URL says sslmode=%.16s but HD_DATABASE_CA_FILE asks for "
                          "verify-full: remove one of them",
                          mode);
    else if (root != NULL && strcmp(root, ca_file) != 0)
        rc = hd_error_set(err, HD_ECONFIG,
                          "HD_DATABASE_URL names sslrootcert=%.100s, HD_DATABASE_CA_FILE %.100s: "
                          "remove one of them",
                          root, ca_file);
    int add_mode = mode == NULL, add_root = root == NULL;
    LIBPQ(PQconninfoFree)(opts);
    if (rc < 0)
        return rc;

    /* A URL may end with a #fragment (libpq ignores it); parameters go before it. */
    size_t base = strcspn(url, "#");
    size_t len = base + 64 + (add_root ? pct_encode(ca_file, NULL) : 0) + 1;
    char *s = malloc(len);
    if (s == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    memcpy(s, url, base);
    size_t n = base;
    char sep = memchr(url, '?', base) ? '&' : '?';
    if (add_mode) {
        n += (size_t)sprintf(s + n, "%csslmode=verify-full", sep);
        sep = '&';
    }
    if (add_root) {
        n += (size_t)sprintf(s + n, "%csslrootcert=", sep);
        n += pct_encode(ca_file, s + n);
    }
    s[n] = '\0';
    *out = s;
    return 0;
}

/* ---- why a certificate failed --------------------------------------------------------- */

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

int hd_store_tls_why(struct pg_conn *conn, char *out, size_t cap)
{
    if (cap > 0)
        out[0] = '\0';
    if (hd_dynlib_load(&pq_lib, NULL) < 0)
        return 0; /* conn came from a loaded libpq, so this does not happen */
    const char *host = LIBPQ(PQhost)(conn), *port = LIBPQ(PQport)(conn), *root = NULL;
    PQconninfoOption *info = LIBPQ(PQconninfo)(conn);
    if (info != NULL)
        root = conninfo_value(info, "sslrootcert");
    int found = 0;
    int fd = -1;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    /* A Unix socket has no certificate; without a root file libpq failed for another reason. */
    if (host == NULL || host[0] == '/' || port == NULL || root == NULL ||
        (fd = connect_to(host, port)) < 0)
        goto out;
    /* SSLRequest: length 8, code 1234.5679; the server answers 'S' and TLS starts. */
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    char answer = 0;
    if (send(fd, ssl_request, sizeof ssl_request, MSG_NOSIGNAL) != (ssize_t)sizeof ssl_request ||
        recv(fd, &answer, 1, 0) != 1 || answer != 'S')
        goto out;
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(ctx, root, NULL) != 1 || (ssl = SSL_new(ctx)) == NULL)
        goto out;
    /* SSL_VERIFY_NONE: finish the handshake whatever the chain, then read the verdict. */
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, host);
    if (SSL_connect(ssl) != 1)
        goto out;
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_OK)
        goto out;
    char when[40] = "";
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert != NULL && v == X509_V_ERR_CERT_HAS_EXPIRED) {
        struct tm tm;
        char date[32];
        if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1 &&
            strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm) > 0)
            snprintf(when, sizeof when, " on %s", date);
    }
    X509_free(cert);
    snprintf(out, cap, "%s%s, checked against %s", X509_verify_cert_error_string(v), when, root);
    found = 1;
out:
    if (ssl != NULL)
        SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    LIBPQ(PQconninfoFree)(info);
    return found;
}
