/* store_pg.c — the PostgreSQL adapter of the store port (see store.h, store_internal.h), and
 * LISTEN / NOTIFY (store_pg.h).
 *
 * How the port's promises are kept on PostgreSQL, and why this way:
 *   - Opening: the URL goes to libpq as is (postgresql:// and postgres:// are its own URI
 *     forms), after defaults that the URL may override: connect_timeout=10 (libpq would
 *     otherwise wait for the operating system's TCP timeout, minutes),
 *     application_name=herald (so pg_stat_activity says who is connected) and jit=off
 *     (see hd_store_pg_open).
 *   - Statements: PQexecParams, one round trip (Parse, Bind, Execute, Sync in one packet).
 *     Parameters go in text format, except blobs, which go in binary format: for bytea the
 *     binary format is just the bytes, so nothing needs escaping and NUL bytes survive.
 *     Integers are typed int8 (so "$1 + $1" means something), blobs bytea, text is left
 *     untyped so the server infers its type from where it is used ('42' into an INTEGER
 *     column works, as it does on SQLite).
 *   - Results come back in text format, which is what hd_rows keeps. bytea columns arrive
 *     hex-escaped ("\x00ff"), so they are unescaped to their bytes: a blob written is the
 *     blob read, on both adapters. Booleans read "t"/"f" (PostgreSQL's text form).
 *   - The SQL is checked before it is sent (placeholders $1..$n without gaps, exactly n of
 *     them, one statement, no "?" or ":name"), so misuse is HD_EINVAL here as on SQLite
 *     instead of whatever message the server would give.
 *   - Errors are mapped by SQLSTATE, the stable code PostgreSQL attaches to every error.
 *     The text keeps the primary message and the SQLSTATE but not the DETAIL line: DETAIL
 *     echoes the values ("Key (email)=(ada@example.com) already exists"), and error texts
 *     end up in logs, where personal data has no business.
 *   - A lost connection is noticed when a call fails (HD_ECONNECT) and repaired on the
 *     next call that starts outside a transaction (PQreset), so a relay or a consumer
 *     survives a database restart without reopening its store. Inside a transaction there
 *     is nothing to repair: the server rolled it back when the connection dropped.
 *   - Transactions are PostgreSQL's default READ COMMITTED. That is what the outbox claim
 *     with FOR UPDATE SKIP LOCKED is designed for (SQLite, with one writer at a time, is
 *     effectively serialisable; code that is correct on PostgreSQL is correct there too).
 *   - No statement cache: an unnamed statement costs one round trip, the same as
 *     executing a named prepared one; preparing would add a round trip the first time for
 *     a saving on the server's parse and plan. Measure before adding one (an exercise).
 *   - Notices ("relation already exists, skipping") are dropped: libpq prints them on
 *     stderr by default, and library code does not print.
 */
#include "herald/store_internal.h"
#include "herald/store_pg.h"
#include "herald/store_tls.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "herald/dynlib.h"

/* ---- libpq, loaded on first use -------------------------------------------------------
 * libpq is not linked: hd_store_pg_open loads it (dynlib.h), so that a process that never
 * opens a PostgreSQL URL maps neither it nor the ~25 libraries it needs (Kerberos, LDAP,
 * GnuTLS, SASL...), about 5 MiB of resident memory. Every libpq call below goes through
 * LIBPQ(name), the slot of this table cast to the type <libpq-fe.h> declares: the compiler
 * checks each call as it would a direct one. A pg_store exists only after a successful
 * load, so the functions that take one use the table without asking. */
#define PQ_FUNCTIONS(X)                                                                            \
    X(PQclear)                                                                                     \
    X(PQcmdStatus)                                                                                 \
    X(PQconnectdbParams)                                                                           \
    X(PQconninfoFree)                                                                              \
    X(PQconninfoParse)                                                                             \
    X(PQconsumeInput)                                                                              \
    X(PQerrorMessage)                                                                              \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQfinish)                                                                                    \
    X(PQfname)                                                                                     \
    X(PQfreemem)                                                                                   \
    X(PQftype)                                                                                     \
    X(PQgetResult)                                                                                 \
    X(PQgetisnull)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQgetvalue)                                                                                  \
    X(PQnfields)                                                                                   \
    X(PQnotifies)                                                                                  \
    X(PQntuples)                                                                                   \
    X(PQreset)                                                                                     \
    X(PQresultErrorField)                                                                          \
    X(PQresultErrorMessage)                                                                        \
    X(PQresultStatus)                                                                              \
    X(PQsetNoticeProcessor)                                                                        \
    X(PQsocket)                                                                                    \
    X(PQstatus)                                                                                    \
    X(PQtransactionStatus)                                                                         \
    X(PQunescapeBytea)
HD_DYNLIB_TABLE(pq_lib, "libpq.so.5", "PostgreSQL URL", PQ_FUNCTIONS);
#define LIBPQ(f) HD_DYNLIB_FN(pq_lib, f)

/* Built-in type OIDs (server/catalog/pg_type_d.h is not part of libpq's headers). They are
 * fixed forever: clients everywhere hard-code them. */
#define PG_OID_BYTEA 17
#define PG_OID_INT8  20

typedef struct pg_store {
    hd_store base; /* first member: hd_store * and pg_store * convert to each other */
    PGconn *conn;
    char **channels; /* LISTENed channels, to listen again after a reconnect */
    size_t nchannels;
    int reconnected; /* a reconnect happened since the last hd_store_pg_wait */
} pg_store;

static const hd_store_vtab pg_vtab;

/* libpq's default notice processor prints on stderr; library code stays quiet. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Copy a libpq message without its trailing newline(s), which libpq always adds. */
static int set_pq_error(hd_error *err, int code, const char *prefix, const char *msg)
{
    size_t len = msg ? strlen(msg) : 0;
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    return hd_error_set(err, code, "%s%.*s", prefix, (int)(len > INT_MAX ? INT_MAX : len),
                        msg ? msg : "");
}

/* ---- error mapping ------------------------------------------------------------------- */

/* The herald code for a SQLSTATE (five characters, see PostgreSQL's Appendix A). */
static int code_for_sqlstate(const char *state)
{
    if (state == NULL || strlen(state) != 5)
        return HD_ESTORE;
    if (strcmp(state, "23505") == 0) /* unique_violation */
        return HD_EEXIST;
    if (strcmp(state, "40001") == 0     /* serialization_failure: retry the transaction */
        || strcmp(state, "40P01") == 0  /* deadlock_detected: one victim, retry it */
        || strcmp(state, "55P03") == 0) /* lock_not_available (NOWAIT, lock_timeout) */
        return HD_EBUSY;
    if (strcmp(state, "57014") == 0) /* query_canceled, e.g. statement_timeout */
        return HD_ETIMEOUT;
    if (strncmp(state, "08", 2) == 0    /* connection_exception */
        || strcmp(state, "57P01") == 0  /* admin_shutdown: the server is stopping */
        || strcmp(state, "57P02") == 0  /* crash_shutdown */
        || strcmp(state, "57P03") == 0) /* cannot_connect_now: still starting */
        return HD_ECONNECT;
    if (strcmp(state, "53200") == 0) /* out_of_memory */
        return HD_ENOMEM;
    if (strcmp(state, "25P02") == 0) /* in_failed_sql_transaction: store.c should prevent */
        return HD_ESTATE;
    return HD_ESTORE;
}

/* Fill err from a failed result (res may be NULL when libpq could not even send). */
static int fail_result(pg_store *ps, const PGresult *res, hd_error *err)
{
    const char *state = res ? LIBPQ(PQresultErrorField)(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? LIBPQ(PQresultErrorField)(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state == NULL || primary == NULL) {
        /* A client-side failure: no server message, ask the connection. */
        int code = LIBPQ(PQstatus)(ps->conn) == CONNECTION_BAD ? HD_ECONNECT : HD_ESTORE;
        const char *msg = res ? LIBPQ(PQresultErrorMessage)(res) : "";
        if (msg == NULL || *msg == '\0')
            msg = LIBPQ(PQerrorMessage)(ps->conn);
        return set_pq_error(err, code, "", msg);
    }
    int code = code_for_sqlstate(state);
    if (code == HD_ESTORE && LIBPQ(PQstatus)(ps->conn) == CONNECTION_BAD)
        code = HD_ECONNECT;
    return hd_error_set(err, code, "%s (SQLSTATE %s)", primary, state);
}

/* ---- checking the SQL text ----------------------------------------------------------- */

static int is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* If p starts a dollar quote ($$ or $tag$), return the tag's length including both '$';
 * else 0. */
static size_t dollar_tag(const char *p)
{
    if (p[0] != '$')
        return 0;
    size_t i = 1;
    if (is_ident_start((unsigned char)p[i]))
        while (is_ident_char((unsigned char)p[i]) && p[i] != '$')
            i++;
    return p[i] == '$' ? i + 1 : 0;
}

/* Scan sql the way PostgreSQL's lexer would, far enough to find placeholders and statement
 * ends outside of literals, quoted names and comments. Checks that the placeholders are
 * exactly $1..$n and that there is exactly one statement. */
static int check_sql(const char *sql, size_t n, hd_error *err)
{
    enum { MAX_PARAM = 65535 }; /* the protocol's limit */
    /* A bit per possible $k (8 KiB), zeroed only as far as the highest $k seen so far:
     * statements have a handful of parameters, and this runs for every statement. */
    uint64_t seen[MAX_PARAM / 64 + 1];
    size_t zeroed = 0; /* words of seen[] that are valid */
    int max = 0, distinct = 0, statements = 0, in_statement = 0, rc = HD_OK;
    const char *p = sql;
    while (*p && rc == HD_OK) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            p++;
            continue;
        }
        if (c == '-' && p[1] == '-') { /* comment to the end of the line */
            p += strcspn(p, "\n");
            continue;
        }
        if (c == '/' && p[1] == '*') { /* block comment; they nest in PostgreSQL */
            int depth = 1;
            p += 2;
            while (*p && depth > 0) {
                if (p[0] == '/' && p[1] == '*')
                    depth++, p += 2;
                else if (p[0] == '*' && p[1] == '/')
                    depth--, p += 2;
                else
                    p++;
            }
            continue;
        }
        if (c == ';') {
            if (in_statement)
                statements++;
            in_statement = 0;
            p++;
            continue;
        }
        if (!in_statement && statements > 0) {
            rc = hd_error_set(err, HD_EINVAL, "one SQL statement per call, found more");
            break;
        }
        in_statement = 1;
        if (c == '\'' || c == '"') { /* 'literal' or "name"; a doubled quote is one quote */
            int escapes = c == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                          (p - 1 == sql || !is_ident_char((unsigned char)p[-2]));
            p++;
            while (*p) {
                if (escapes && *p == '\\' && p[1]) {
                    p += 2;
                } else if (*p == (char)c) {
                    if (p[1] == (char)c)
                        p += 2;
                    else
                        break;
                } else {
                    p++;
                }
            }
            if (*p)
                p++;
            continue;
        }
        if (is_ident_start(c)) { /* a word; '$' inside it is part of it (foo$1) */
            while (is_ident_char((unsigned char)*p))
                p++;
            continue;
        }
        if (c >= '0' && c <= '9') { /* a number: 1e5, 0.5 */
            while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E')
                p++;
            continue;
        }
        if (c == '$') {
            size_t tag = dollar_tag(p);
            if (tag > 0) { /* $tag$ ... $tag$ */
                const char *end = p + tag;
                for (;;) {
                    end = strchr(end, '$');
                    if (end == NULL || strncmp(end, p, tag) == 0)
                        break;
                    end++;
                }
                p = end ? end + tag : p + strlen(p);
                continue;
            }
            if (p[1] < '1' || p[1] > '9') {
                size_t len = 1 + strspn(p + 1, "0123456789abcdefghijklmnopqrstuvwxyz_");
                rc = hd_error_set(err, HD_EINVAL,
                                  "placeholder '%.*s' is not $1, $2, ...: herald SQL uses "
                                  "PostgreSQL-style placeholders",
                                  (int)(len > 32 ? 32 : len), p);
                break;
            }
            long k = 0;
            p++;
            while (*p >= '0' && *p <= '9') {
                if (k <= MAX_PARAM)
                    k = k * 10 + (*p - '0');
                p++;
            }
            if (k > MAX_PARAM) {
                rc = hd_error_set(err, HD_EINVAL, "placeholder number above %d", MAX_PARAM);
                break;
            }
            size_t word = (size_t)k / 64;
            uint64_t bit = (uint64_t)1 << (k % 64);
            if (word >= zeroed) {
                memset(seen + zeroed, 0, (word + 1 - zeroed) * sizeof seen[0]);
                zeroed = word + 1;
            }
            if (!(seen[word] & bit)) {
                seen[word] |= bit;
                distinct++;
            }
            if (k > max)
                max = (int)k;
            continue;
        }
        if (c == '?') {
            rc = hd_error_set(err, HD_EINVAL,
                              "placeholder '?' is not $1, $2, ...: herald SQL uses "
                              "PostgreSQL-style placeholders");
            break;
        }
        if (c == ':') {
            if (p[1] == ':') { /* a cast; store.h asks for portable SQL, but it is no param */
                p += 2;
                continue;
            }
            if (is_ident_start((unsigned char)p[1])) {
                size_t len = 1 + strspn(p + 1, "abcdefghijklmnopqrstuvwxyz_0123456789");
                rc = hd_error_set(err, HD_EINVAL,
                                  "placeholder '%.*s' is not $1, $2, ...: herald SQL uses "
                                  "PostgreSQL-style placeholders",
                                  (int)(len > 32 ? 32 : len), p);
                break;
            }
        }
        p++; /* an operator or punctuation */
    }
    if (rc < 0)
        return rc;
    if (in_statement)
        statements++;
    if (statements == 0)
        return hd_error_set(err, HD_EINVAL, "empty SQL statement");
    /* The same two checks, with the same words, as the SQLite adapter. */
    if (max != distinct)
        return hd_error_set(err, HD_EINVAL,
                            "placeholders skip a number (highest is $%d but only %d distinct)", max,
                            distinct);
    if ((size_t)distinct != n)
        return hd_error_set(err, HD_EINVAL, "the statement has %d placeholder(s), %zu given",
                            distinct, n);
    return HD_OK;
}

/* ---- the connection ------------------------------------------------------------------ */

static int listen_sql(pg_store *ps, const char *verb, const char *channel, hd_error *err);

/* Make sure there is a live connection before a call that starts outside a transaction;
 * reconnect when the last one was lost. Inside a transaction a lost connection cannot be
 * repaired (the server rolled the transaction back): report it. */
static int ensure_connected(pg_store *ps, hd_error *err)
{
    if (LIBPQ(PQstatus)(ps->conn) == CONNECTION_OK)
        return HD_OK;
    if (ps->base.in_tx)
        return set_pq_error(err, HD_ECONNECT, "connection lost during the transaction: ",
                            LIBPQ(PQerrorMessage)(ps->conn));
    LIBPQ(PQreset)(ps->conn);
    if (LIBPQ(PQstatus)(ps->conn) != CONNECTION_OK)
        return set_pq_error(err, HD_ECONNECT, "reconnecting: ", LIBPQ(PQerrorMessage)(ps->conn));
    ps->reconnected = 1;
    for (size_t i = 0; i < ps->nchannels; i++) {
        int rc = listen_sql(ps, "LISTEN", ps->channels[i], err);
        if (rc < 0)
            return rc;
    }
    return HD_OK;
}

/* Run sql with params; on success *res is the result (new: PQclear it). */
static int run(pg_store *ps, const char *sql, const hd_value *params, size_t n, PGresult **res,
               hd_error *err)
{
    *res = NULL;
    int rc = check_sql(sql, n, err);
    if (rc < 0)
        return rc;
    rc = ensure_connected(ps, err);
    if (rc < 0)
        return rc;
    if (n > INT_MAX)
        return hd_error_set(err, HD_ETOOBIG, "too many parameters");
    /* One allocation for libpq's five parallel arrays and the integers' text. */
    enum { INT_TEXT = 24 }; /* "-9223372036854775808" and a NUL */
    size_t size = n * (sizeof(Oid) + sizeof(char *) + 2 * sizeof(int) + INT_TEXT);
    unsigned char *block = n ? malloc(size) : NULL;
    if (n && block == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    const char **values = (const char **)(void *)block;
    int *lengths = (int *)(void *)(block + n * sizeof(char *));
    int *formats = lengths + n;
    Oid *types = (Oid *)(void *)(formats + n);
    char *ints = (char *)(types + n);
    for (size_t i = 0; i < n; i++) {
        const hd_value *v = &params[i];
        values[i] = NULL;
        lengths[i] = 0;
        formats[i] = 0;
        types[i] = 0; /* let the server infer */
        switch (v->type) {
        case HD_VALUE_NULL:
            break;
        case HD_VALUE_INT:
            snprintf(ints + i * INT_TEXT, INT_TEXT, "%lld", (long long)v->i);
            values[i] = ints + i * INT_TEXT;
            types[i] = PG_OID_INT8;
            break;
        case HD_VALUE_TEXT:
            values[i] = v->data;
            break;
        case HD_VALUE_BLOB:
            if (v->data == NULL)
                break;
            if (v->len > INT_MAX) {
                free(block);
                return hd_error_set(err, HD_ETOOBIG, "blob parameter $%zu is too large", i + 1);
            }
            values[i] = v->data;
            lengths[i] = (int)v->len;
            formats[i] = 1; /* binary: the bytes themselves */
            types[i] = PG_OID_BYTEA;
            break;
        default:
            free(block);
            return hd_error_set(err, HD_EINVAL, "parameter %zu has an unknown type", i + 1);
        }
    }
    PGresult *r = LIBPQ(PQexecParams)(ps->conn, sql, (int)n, types, values, lengths, formats, 0);
    free(block);
    switch (r ? LIBPQ(PQresultStatus)(r) : PGRES_FATAL_ERROR) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
        *res = r;
        return HD_OK;
    case PGRES_EMPTY_QUERY:
        rc = hd_error_set(err, HD_EINVAL, "empty SQL statement");
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        rc = hd_error_set(err, HD_EUNSUPPORTED, "COPY is not supported by the store port");
        break;
    default:
        rc = fail_result(ps, r, err);
        break;
    }
    LIBPQ(PQclear)(r);
    /* A COPY left running would block the connection; drain whatever is left. */
    while ((r = LIBPQ(PQgetResult)(ps->conn)) != NULL)
        LIBPQ(PQclear)(r);
    return rc;
}

/* Rows inserted, updated, deleted or merged by the statement, from its command tag
 * ("INSERT 0 3", "UPDATE 2"); 0 for any other statement, like the SQLite adapter (libpq's
 * PQcmdTuples also counts SELECT's rows, which is not "changed"). */
static int rows_changed(const PGresult *res)
{
    const char *tag = LIBPQ(PQcmdStatus)((PGresult *)res);
    if (tag == NULL)
        return 0;
    if (strncmp(tag, "INSERT ", 7) != 0 && strncmp(tag, "UPDATE ", 7) != 0 &&
        strncmp(tag, "DELETE ", 7) != 0 && strncmp(tag, "MERGE ", 6) != 0)
        return 0;
    const char *num = strrchr(tag, ' ') + 1;
    long long v = strtoll(num, NULL, 10);
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* ---- the vtab ------------------------------------------------------------------------ */

static int pg_exec(hd_store *store, const char *sql, const hd_value *params, size_t n,
                   hd_error *err)
{
    PGresult *res;
    int rc = run((pg_store *)store, sql, params, n, &res, err);
    if (rc < 0)
        return rc;
    rc = rows_changed(res);
    LIBPQ(PQclear)(res);
    return rc;
}

static int pg_query(hd_store *store, const char *sql, const hd_value *params, size_t n,
                    hd_rows **out, hd_error *err)
{
    PGresult *res;
    int rc = run((pg_store *)store, sql, params, n, &res, err);
    if (rc < 0)
        return rc;
    int ncols = LIBPQ(PQnfields)(res), nrows = LIBPQ(PQntuples)(res);
    hd_rows *rows = hd_rows_create((size_t)ncols);
    for (int c = 0; rows != NULL && c < ncols; c++)
        if (hd_rows_set_name(rows, (size_t)c, LIBPQ(PQfname)(res, c)) < 0)
            goto nomem;
    for (int r = 0; rows != NULL && r < nrows; r++) {
        if (hd_rows_add_row(rows) < 0)
            goto nomem;
        for (int c = 0; c < ncols; c++) {
            if (LIBPQ(PQgetisnull)(res, r, c))
                continue;
            const char *text = LIBPQ(PQgetvalue)(res, r, c);
            if (LIBPQ(PQftype)(res, c) == PG_OID_BYTEA) {
                size_t len = 0;
                unsigned char *bytes = LIBPQ(PQunescapeBytea)((const unsigned char *)text, &len);
                if (bytes == NULL)
                    goto nomem;
                rc = hd_rows_set_cell(rows, (size_t)c, bytes, len);
                LIBPQ(PQfreemem)(bytes);
            } else {
                rc = hd_rows_set_cell(rows, (size_t)c, text, (size_t)LIBPQ(PQgetlength)(res, r, c));
            }
            if (rc < 0)
                goto nomem;
        }
    }
    if (rows == NULL)
        goto nomem;
    LIBPQ(PQclear)(res);
    *out = rows;
    return HD_OK;
nomem:
    hd_rows_free(rows);
    LIBPQ(PQclear)(res);
    return hd_error_set(err, HD_ENOMEM, NULL);
}

/* A statement without parameters or rows, for BEGIN / COMMIT / ROLLBACK. */
static int run_command(pg_store *ps, const char *sql, hd_error *err)
{
    PGresult *res;
    int rc = run(ps, sql, NULL, 0, &res, err);
    if (rc < 0)
        return rc;
    /* COMMIT of a transaction the server had already aborted answers "ROLLBACK", not an
     * error; store.c tracks aborts so this should not happen, but never report it as a
     * success. */
    if (strcmp(sql, "COMMIT") == 0 && strcmp(LIBPQ(PQcmdStatus)(res), "ROLLBACK") == 0)
        rc = hd_error_set(err, HD_ESTATE, "the server rolled the transaction back");
    LIBPQ(PQclear)(res);
    return rc;
}

static int pg_begin(hd_store *store, hd_error *err)
{
    return run_command((pg_store *)store, "BEGIN", err);
}

static int pg_commit(hd_store *store, hd_error *err)
{
    /* If the connection drops here, nobody knows whether the COMMIT arrived: HD_ECONNECT
     * then means "outcome unknown". That is why the outbox and the inbox are built to
     * tolerate a transaction that may or may not have happened. */
    return run_command((pg_store *)store, "COMMIT", err);
}

static int pg_rollback(hd_store *store, hd_error *err)
{
    pg_store *ps = (pg_store *)store;
    /* A dropped connection took the transaction with it; an idle session has none left. */
    if (LIBPQ(PQstatus)(ps->conn) != CONNECTION_OK ||
        LIBPQ(PQtransactionStatus)(ps->conn) == PQTRANS_IDLE)
        return HD_OK;
    return run_command(ps, "ROLLBACK", err);
}

static int pg_script(hd_store *store, const char *sql, hd_error *err)
{
    pg_store *ps = (pg_store *)store;
    int rc = ensure_connected(ps, err);
    if (rc < 0)
        return rc;
    /* PQexec (not PQexecParams) accepts several statements; it returns the last result,
     * or the first error, after which the remaining statements are not run. */
    PGresult *res = LIBPQ(PQexec)(ps->conn, sql);
    ExecStatusType st = res ? LIBPQ(PQresultStatus)(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        rc = HD_OK;
    else
        rc = fail_result(ps, res, err);
    LIBPQ(PQclear)(res);
    return rc;
}

static void pg_close(hd_store *store)
{
    pg_store *ps = (pg_store *)store;
    /* Closing the connection is enough: the server rolls back an open transaction. */
    LIBPQ(PQfinish)(ps->conn);
    for (size_t i = 0; i < ps->nchannels; i++)
        free(ps->channels[i]);
    free(ps->channels);
    free(ps);
}

static const hd_store_vtab pg_vtab = {
    .dialect = "postgresql",
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .query = pg_query,
    .script = pg_script,
};

/* ---- opening ------------------------------------------------------------------------- */

int hd_store_pg_open(const char *url, hd_store **out, hd_error *err)
{
    /* The first PostgreSQL URL of the process loads libpq; without the libpq5 package this
     * is the error, "PostgreSQL URL: cannot load libpq.so.5: ...", never a crash. */
    int loaded = hd_dynlib_load(&pq_lib, err);
    if (loaded < 0)
        return loaded;
    /* Parse first: a malformed URL is the caller's mistake (HD_EURL), not a connection
     * failure. libpq's message names the bad part, never the password. */
    char *why = NULL;
    PQconninfoOption *opts = LIBPQ(PQconninfoParse)(url, &why);
    if (opts == NULL) {
        int rc = why ? set_pq_error(err, HD_EURL, "bad PostgreSQL URL: ", why)
                     : hd_error_set(err, HD_ENOMEM, NULL);
        LIBPQ(PQfreemem)(why);
        return rc;
    }
    /* The server's JIT compiler is off unless the URL's options say otherwise
     * (?options=-cjit%3Don). It pays off for long analytical queries; for the short
     * statements of an application it only adds its compile time whenever the planner's
     * cost estimate passes jit_above_cost, and estimates for the outbox claim do on a
     * large table: measured 0.8 ms of execution behind 490 ms of compiling. */
    const char *url_options = "";
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val != NULL)
            url_options = o->val;
    char options[1024];
    int fits = snprintf(options, sizeof options, "%s%s", url_options,
                        strstr(url_options, "jit") ? "" : " -c jit=off") < (int)sizeof options;
    LIBPQ(PQconninfoFree)(opts);
    if (!fits)
        return hd_error_set(err, HD_EURL, "the URL's options are too long");

    pg_store *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    ps->base.vtab = &pg_vtab;
    /* Defaults first, then the URL ("dbname" is expanded into its parts): later entries
     * win, so the URL overrides the defaults; "options" comes last because it already
     * holds the URL's own options. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", "options", NULL};
    const char *const values[] = {"10", "herald", url, options, NULL};
    ps->conn = LIBPQ(PQconnectdbParams)(keys, values, 1);
    if (ps->conn == NULL) {
        free(ps);
        return hd_error_set(err, HD_ENOMEM, "libpq could not allocate a connection");
    }
    if (LIBPQ(PQstatus)(ps->conn) != CONNECTION_OK) {
        /* libpq says "certificate verify failed" for a wrong CA and an expired certificate
         * alike: add which (store_tls.c). */
        char tls_why[200], msg[800];
        const char *pq = LIBPQ(PQerrorMessage)(ps->conn);
        size_t n = strcspn(pq, "\n");
        if (strstr(pq, "certificate verify failed") != NULL &&
            hd_store_tls_why(ps->conn, tls_why, sizeof tls_why))
            snprintf(msg, sizeof msg, "%.*s (%s)", (int)(n < 500 ? n : 500), pq, tls_why);
        else
            snprintf(msg, sizeof msg, "%s", pq);
        int rc = set_pq_error(err, HD_ECONNECT, "cannot connect to PostgreSQL: ", msg);
        pg_close(&ps->base);
        return rc;
    }
    LIBPQ(PQsetNoticeProcessor)(ps->conn, ignore_notice, NULL);
    *out = &ps->base;
    return HD_OK;
}

/* ---- LISTEN / NOTIFY ----------------------------------------------------------------- */

static pg_store *as_pg(hd_store *store)
{
    return store != NULL && store->vtab == &pg_vtab ? (pg_store *)store : NULL;
}

int hd_store_is_pg(const hd_store *store)
{
    return store != NULL && store->vtab == &pg_vtab;
}

static int valid_channel(const char *ch)
{
    size_t len = ch ? strlen(ch) : 0;
    if (len == 0 || len > HD_STORE_PG_CHANNEL_MAX ||
        !(ch[0] == '_' || (ch[0] >= 'a' && ch[0] <= 'z')))
        return 0;
    return strspn(ch, "abcdefghijklmnopqrstuvwxyz0123456789_") == len;
}

/* LISTEN / UNLISTEN take an identifier, not a parameter: the name was checked by
 * valid_channel, and is quoted as well. */
static int listen_sql(pg_store *ps, const char *verb, const char *channel, hd_error *err)
{
    char sql[HD_STORE_PG_CHANNEL_MAX + 32];
    if (channel != NULL)
        snprintf(sql, sizeof sql, "%s \"%s\"", verb, channel);
    else
        snprintf(sql, sizeof sql, "%s *", verb);
    PGresult *res = LIBPQ(PQexec)(ps->conn, sql);
    int rc =
        res && LIBPQ(PQresultStatus)(res) == PGRES_COMMAND_OK ? HD_OK : fail_result(ps, res, err);
    LIBPQ(PQclear)(res);
    return rc;
}

static int check_listener(pg_store *ps, const char *channel, int any, hd_error *err)
{
    if (ps == NULL)
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "LISTEN/NOTIFY needs a PostgreSQL store (poll, or use an "
                            "in-process signal)");
    if (!(any && channel == NULL) && !valid_channel(channel))
        return hd_error_set(err, HD_EINVAL,
                            "channel name must be 1-%d of [a-z0-9_], not starting with a digit",
                            HD_STORE_PG_CHANNEL_MAX);
    if (ps->base.in_tx)
        return hd_error_set(err, HD_ESTATE, "LISTEN/UNLISTEN outside a transaction");
    return ensure_connected(ps, err);
}

int hd_store_pg_listen(hd_store *store, const char *channel, hd_error *err)
{
    pg_store *ps = as_pg(store);
    int rc = check_listener(ps, channel, 0, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < ps->nchannels; i++)
        if (strcmp(ps->channels[i], channel) == 0)
            return HD_OK;
    char **grown = realloc(ps->channels, (ps->nchannels + 1) * sizeof *grown);
    if (grown == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    ps->channels = grown;
    if ((ps->channels[ps->nchannels] = strdup(channel)) == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    rc = listen_sql(ps, "LISTEN", channel, err);
    if (rc < 0) {
        free(ps->channels[ps->nchannels]);
        return rc;
    }
    ps->nchannels++;
    return HD_OK;
}

int hd_store_pg_unlisten(hd_store *store, const char *channel, hd_error *err)
{
    pg_store *ps = as_pg(store);
    int rc = check_listener(ps, channel, 1, err);
    if (rc < 0)
        return rc;
    rc = listen_sql(ps, "UNLISTEN", channel, err);
    if (rc < 0)
        return rc;
    size_t kept = 0;
    for (size_t i = 0; i < ps->nchannels; i++) {
        if (channel == NULL || strcmp(ps->channels[i], channel) == 0)
            free(ps->channels[i]);
        else
            ps->channels[kept++] = ps->channels[i];
    }
    ps->nchannels = kept;
    return HD_OK;
}

int hd_store_pg_notify(hd_store *store, const char *channel, const char *payload, hd_error *err)
{
    if (as_pg(store) == NULL)
        return hd_error_set(err, HD_EUNSUPPORTED, "NOTIFY needs a PostgreSQL store");
    if (channel == NULL || *channel == '\0')
        return hd_error_set(err, HD_EINVAL, "hd_store_pg_notify: channel is required");
    /* Through hd_store_exec, so that a failure aborts the caller's transaction as any other
     * statement's would. pg_notify returns void: the row is discarded. */
    hd_value p[] = {hd_value_text(channel), hd_value_text(payload ? payload : "")};
    int rc = hd_store_exec(store, "SELECT pg_notify($1, $2)", p, 2, err);
    return rc < 0 ? rc : HD_OK;
}

/* Take the notifications libpq has already read; returns how many, and copies the last
 * one's channel. */
static int drain_notifications(pg_store *ps, char *channel)
{
    int count = 0;
    PGnotify *note;
    while ((note = LIBPQ(PQnotifies)(ps->conn)) != NULL) {
        if (channel != NULL)
            snprintf(channel, HD_STORE_PG_CHANNEL_MAX + 1, "%s", note->relname);
        LIBPQ(PQfreemem)(note);
        count++;
    }
    return count;
}

int hd_store_pg_wait(hd_store *store, int timeout_ms, char channel[HD_STORE_PG_CHANNEL_MAX + 1],
                     hd_error *err)
{
    pg_store *ps = as_pg(store);
    if (channel != NULL)
        channel[0] = '\0';
    if (ps == NULL)
        return hd_error_set(err, HD_EUNSUPPORTED, "waiting for NOTIFY needs a PostgreSQL store");
    if (ps->base.in_tx)
        return hd_error_set(err, HD_ESTATE,
                            "notifications arrive between transactions: commit first");
    int rc = ensure_connected(ps, err);
    if (rc < 0)
        return rc;
    if (ps->reconnected) { /* what was sent while we were away is lost: look for work */
        ps->reconnected = 0;
        return 1;
    }
    /* Notifications can arrive with the answer to any query, so some may be waiting. */
    int count = drain_notifications(ps, channel);
    if (count > 0)
        return count;
    int sock = LIBPQ(PQsocket)(ps->conn);
    if (sock < 0)
        return set_pq_error(err, HD_ECONNECT, "no connection: ", LIBPQ(PQerrorMessage)(ps->conn));
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    int ready = poll(&pfd, 1, timeout_ms < 0 ? -1 : timeout_ms);
    if (ready < 0)
        return errno == EINTR ? 0 : hd_error_set(err, HD_EIO, "poll: %s", strerror(errno));
    if (ready == 0)
        return 0;
    if (!LIBPQ(PQconsumeInput)(ps->conn))
        return set_pq_error(err, HD_ECONNECT,
                            "connection lost while waiting: ", LIBPQ(PQerrorMessage)(ps->conn));
    return drain_notifications(ps, channel);
}

int hd_store_pg_fd(hd_store *store)
{
    pg_store *ps = as_pg(store);
    if (ps == NULL || ps->conn == NULL || LIBPQ(PQstatus)(ps->conn) != CONNECTION_OK)
        return -1;
    return LIBPQ(PQsocket)(ps->conn);
}
