/* tls_fake.h — a tiny server for the TLS refusal tests: it presents a chosen certificate (an
 * expired one, one for another host) or refuses TLS, the way a broker, PostgreSQL or an SMTP
 * server would at the start of a connection, and nothing more. Real servers cannot easily be
 * given a bad certificate for one test; this one listens on an ephemeral port of 127.0.0.1,
 * in a thread of the test, and serves connections one after the other until stopped. */
#ifndef HD_TLS_FAKE_H
#define HD_TLS_FAKE_H

typedef enum hd_tls_fake_mode {
    HD_TLS_FAKE_RAW,          /* TLS from the first byte (amqps://) */
    HD_TLS_FAKE_PG_SSL,       /* PostgreSQL: answer SSLRequest with 'S', then TLS */
    HD_TLS_FAKE_PG_NO_SSL,    /* PostgreSQL without TLS: answer SSLRequest with 'N' */
    HD_TLS_FAKE_SMTP_STARTTLS /* SMTP: greeting, EHLO offers STARTTLS, then TLS */
} hd_tls_fake_mode;

typedef struct hd_tls_fake hd_tls_fake;

/* Start a fake in mode with the PEM certificate and key (borrowed paths; NULL for
 * HD_TLS_FAKE_PG_NO_SSL). New; NULL on failure (the reason on stderr). */
hd_tls_fake *hd_tls_fake_start(hd_tls_fake_mode mode, const char *cert, const char *key);

/* The port it listens on (127.0.0.1). */
int hd_tls_fake_port(const hd_tls_fake *f);

/* Connections accepted so far (a test can check that the client got as far as this server). */
int hd_tls_fake_connections(const hd_tls_fake *f);

/* Stop the thread, close everything, free f (NULL allowed). */
void hd_tls_fake_stop(hd_tls_fake *f);

#endif
