/* herald/store_tls.h — TLS to PostgreSQL that cannot fall back to plain text.
 *
 * libpq does the TLS; what it leaves to the program is choosing the right sslmode. Its
 * default, "prefer", tries TLS and silently goes on in clear when the server says no (or
 * when someone in the middle says no for it), and "require" encrypts without checking WHO
 * answers. Only sslmode=verify-full checks the chain against a CA (sslrootcert) and the
 * host name against the certificate, and never falls back: a server without TLS is
 * refused ("server does not support SSL, but SSL was required").
 *
 * A service takes TLS to its database either in the URL itself
 *     postgresql://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/herald/ca.crt
 * or from a separate setting, HD_DATABASE_CA_FILE, which hd_store_tls_url turns into those
 * two parameters. The separate setting exists because the URL is often a secret managed
 * elsewhere (it holds the password) while the CA file is deployment plumbing; it can only
 * make the connection stricter: a URL that asks for a weaker sslmode, or names another
 * sslrootcert, is refused rather than guessed about.
 */
#ifndef HERALD_STORE_TLS_H
#define HERALD_STORE_TLS_H

#include <stddef.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* url (borrowed) with ca_file (borrowed; NULL or "" = none) applied, into *out (new, free()).
 * Without a CA file *out is a copy of url. With one, url must be a postgresql:// or
 * postgres:// URL and gets sslmode=verify-full and sslrootcert=<ca_file> (percent-encoded)
 * added; sslmode=verify-full or sslrootcert=<the same file> already in it are fine.
 * Returns 0, or HD_ECONFIG naming the setting: the URL is not PostgreSQL (a SQLite file has
 * no TLS), its sslmode is weaker than verify-full, its sslrootcert differs, the CA file
 * cannot be read; HD_EURL when libpq cannot parse the URL; HD_ENOMEM. Nothing connects. */
int hd_store_tls_url(const char *url, const char *ca_file, char **out, hd_error *err);

/* 1 when url (a libpq URL) asks for a TLS that cannot fall back to plain text (sslmode
 * require, verify-ca or verify-full), else 0. For start-up logs ("database: TLS
 * verify-full"). */
int hd_store_tls_required(const char *url);

/* Why the server certificate of conn's server failed verification, into out (cap bytes):
 * libpq says only "certificate verify failed" for an unknown CA and an expired certificate
 * alike. This opens a second, short connection of its own (SSLRequest, then a TLS handshake
 * that checks the chain against conn's sslrootcert without aborting) and writes OpenSSL's
 * reason: "certificate has expired (not after 2020-02-01 00:00 UTC)", "unable to get local
 * issuer certificate"... conn (libpq's PGconn, borrowed) is a failed connection. Returns 1
 * with a reason, 0 when none could be found (out is then ""). At most 5 s. */
struct pg_conn;
int hd_store_tls_why(struct pg_conn *conn, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_STORE_TLS_H */
