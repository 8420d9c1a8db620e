/* herald/dynlib.h — a shared library loaded on first use (dlopen / dlsym) behind a table of
 * function pointers.
 *
 * Two of herald's dependencies serve only some deployments: libpq (a postgresql:// store,
 * store_pg.c and store_tls.c) and libcurl (the SMTP sender, sender_smtp.c). Linked the usual
 * way, every service maps them and the ~30 libraries they bring (Kerberos, LDAP, GnuTLS,
 * SASL, nghttp2, ssh2, ...) at start-up: about 7 MiB of resident memory in a service whose
 * database is SQLite and whose sender writes a log, which never calls either. Loaded here,
 * the first time a PostgreSQL URL is opened or an SMTP sender made, they cost nothing to the
 * others.
 *
 * The shape is SQLite's os_unix.c system-call table: the module that uses the library keeps
 * the functions it calls in an array of pointers, one name per slot, and calls them through
 * a macro that casts the slot to the function's own type, so the compiler still checks every
 * call against the library's header:
 *
 *     #define PQ_FUNCTIONS(X) X(PQexec) X(PQclear)
 *     HD_DYNLIB_TABLE(pq_lib, "libpq.so.5", "postgres:// URL", PQ_FUNCTIONS);
 *     #define LIBPQ(f) HD_DYNLIB_FN(pq_lib, f)
 *
 *     if ((rc = hd_dynlib_load(&pq_lib, err)) < 0) return rc;   // once; then, any thread:
 *     PGresult *r = LIBPQ(PQexec)(conn, "SELECT 1");
 *
 * The library is opened by its soname (the runtime package's file: libpq5 installs
 * libpq.so.5, libcurl4 libcurl.so.4), never by the -dev package's libpq.so link, and is
 * never closed: the tables point into it until the process exits.
 *
 * Known limits: a failed load is final for the process (the answer is kept, so every later
 * call reports the same error instead of trying again): installing the package means
 * restarting the service. The header names the types of the library at build time; the
 * loader checks only that each name exists in what it opens, not its version.
 */
#ifndef HERALD_DYNLIB_H
#define HERALD_DYNLIB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One library and the functions a module takes from it; static storage, made with
 * HD_DYNLIB_INIT. The fields after fns are private. */
typedef struct hd_dynlib {
    const char *soname;          /* borrowed: "libpq.so.5" */
    const char *what;            /* borrowed: what needs it, first words of the error */
    const char *const *names;    /* borrowed: the symbols to resolve, NULL-terminated */
    void **fns;                  /* borrowed: one slot per name, filled by the load */
    pthread_mutex_t lock;        /* private: one loader at a time */
    atomic_int state;            /* private: 0 not tried, 1 loaded, -1 failed (release/acquire) */
    int rc;                      /* private: the failed load's code */
    char why[HD_ERROR_TEXT_MAX]; /* private: the failed load's message */
} hd_dynlib;

#define HD_DYNLIB_INIT(soname_, what_, names_, fns_)                                               \
    {                                                                                              \
        .soname = (soname_), .what = (what_), .names = (names_), .fns = (fns_),                    \
        .lock = PTHREAD_MUTEX_INITIALIZER                                                          \
    }

/* The table of one module (file scope, one per file): an enum with an index per function of
 * FUNCTIONS (an X-macro list), the names, the slots and the hd_dynlib `var` that loads them.
 * HD_DYNLIB_FN(var, f) is the slot of f cast to f's own type (the header's declaration). */
#define HD_DYNLIB_INDEX_(f) hd_dynlib_i_##f,
#define HD_DYNLIB_NAME_(f)  #f,
#define HD_DYNLIB_TABLE(var, soname_, what_, FUNCTIONS)                                            \
    enum { FUNCTIONS(HD_DYNLIB_INDEX_) var##_count };                                              \
    static const char *const var##_names[] = {FUNCTIONS(HD_DYNLIB_NAME_) NULL};                    \
    static void *var##_fns[var##_count];                                                           \
    static hd_dynlib var = HD_DYNLIB_INIT(soname_, what_, var##_names, var##_fns)
#define HD_DYNLIB_FN(var, f) ((__typeof__(f) *)var##_fns[hd_dynlib_i_##f])

/* Open lib->soname (dlopen, RTLD_NOW | RTLD_LOCAL) and fill lib->fns[i] with dlsym of
 * lib->names[i], the first time it is called for lib; every later call, from any thread,
 * returns the first one's answer at the cost of one atomic load. After 0 every slot is set
 * and stays set. Returns 0, or HD_EUNSUPPORTED with
 *     "<what>: cannot load <soname>: <dlerror>"      (the package is not installed), or
 *     "<what>: <soname> has no <name>: <dlerror>"     (an older library than the header)
 * Thread-safe. */
int hd_dynlib_load(hd_dynlib *lib, hd_error *err);

/* Test hook, in the spirit of SQLite's xSetSystemCall: from now on a load of soname
 * (borrowed, compared by content) opens instead (borrowed, kept: a string literal) in its
 * place, e.g. a name that does not exist, to see the error a host without the package gives.
 * instead NULL removes the override. Only loads not yet made see it (a loaded library stays
 * loaded). Not thread-safe: call it before the threads start. Returns 0, HD_EINVAL for a
 * NULL soname, HD_ERANGE when 4 overrides are already set. */
int hd_dynlib_override(const char *soname, const char *instead);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_DYNLIB_H */
