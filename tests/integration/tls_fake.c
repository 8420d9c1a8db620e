/* tls_fake.c — see tls_fake.h. */
#include "tls_fake.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct hd_tls_fake {
    hd_tls_fake_mode mode;
    SSL_CTX *ctx;
    int listen_fd;
    int port;
    atomic_int stop;
    atomic_int connections;
    pthread_t thread;
};

/* Read one line (up to CRLF) or give up; the content does not matter to the fake. */
static int read_line(int fd)
{
    char c;
    for (int i = 0; i < 1024; i++) {
        if (read(fd, &c, 1) != 1)
            return -1;
        if (c == '\n')
            return 0;
    }
    return -1;
}

static int write_all(int fd, const char *s)
{
    size_t len = strlen(s);
    return write(fd, s, len) == (ssize_t)len ? 0 : -1;
}

static void serve(hd_tls_fake *f, int fd)
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int tls = 1;
    if (f->mode == HD_TLS_FAKE_PG_SSL || f->mode == HD_TLS_FAKE_PG_NO_SSL) {
        unsigned char req[8]; /* length 8, code 80877103: SSLRequest */
        if (recv(fd, req, sizeof req, MSG_WAITALL) != (ssize_t)sizeof req)
            return;
        char answer = f->mode == HD_TLS_FAKE_PG_SSL ? 'S' : 'N';
        if (write(fd, &answer, 1) != 1)
            return;
        if (f->mode == HD_TLS_FAKE_PG_NO_SSL) {
            /* A client that went on in clear would now send its startup packet; wait for it
             * or for the close, then hang up. */
            unsigned char buf[256];
            (void)recv(fd, buf, sizeof buf, 0);
            tls = 0;
        }
    } else if (f->mode == HD_TLS_FAKE_SMTP_STARTTLS) {
        if (write_all(fd, "220 fake ESMTP\r\n") < 0 || read_line(fd) < 0 ||
            write_all(fd, "250-fake\r\n250 STARTTLS\r\n") < 0 || read_line(fd) < 0 ||
            write_all(fd, "220 go ahead\r\n") < 0)
            return;
    }
    if (!tls)
        return;
    SSL *ssl = SSL_new(f->ctx);
    if (ssl == NULL)
        return;
    SSL_set_fd(ssl, fd);
    /* The client is expected to abort the handshake (or right after it): either way is the
     * end of this connection. */
    if (SSL_accept(ssl) == 1) {
        char buf[256];
        (void)SSL_read(ssl, buf, sizeof buf);
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
}

static void *run(void *arg)
{
    hd_tls_fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->connections, 1);
        serve(f, fd);
        close(fd);
    }
    return NULL;
}

hd_tls_fake *hd_tls_fake_start(hd_tls_fake_mode mode, const char *cert, const char *key)
{
    /* A client that hangs up mid-handshake (what the refusing clients do) must not kill the
     * test process with SIGPIPE when the fake writes. */
    signal(SIGPIPE, SIG_IGN);
    hd_tls_fake *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->mode = mode;
    f->listen_fd = -1;
    if (mode != HD_TLS_FAKE_PG_NO_SSL) {
        f->ctx = SSL_CTX_new(TLS_server_method());
        if (f->ctx == NULL || SSL_CTX_use_certificate_chain_file(f->ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(f->ctx, key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "tls_fake: cannot load %s / %s\n", cert, key);
            goto fail;
        }
    }
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(f->listen_fd, 8) < 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) < 0) {
        perror("tls_fake: listen");
        goto fail;
    }
    f->port = ntohs(a.sin_port);
    if (pthread_create(&f->thread, NULL, run, f) != 0)
        goto fail;
    return f;
fail:
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    SSL_CTX_free(f->ctx);
    free(f);
    return NULL;
}

int hd_tls_fake_port(const hd_tls_fake *f)
{
    return f->port;
}

int hd_tls_fake_connections(const hd_tls_fake *f)
{
    return atomic_load(&((hd_tls_fake *)f)->connections);
}

void hd_tls_fake_stop(hd_tls_fake *f)
{
    if (f == NULL)
        return;
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
    SSL_CTX_free(f->ctx);
    free(f);
}
