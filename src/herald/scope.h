/* herald/scope.h — the transaction scope: objects kept until one unit of work ends.
 *
 * A dependency-injection container has a "request scope": objects made for one request and
 * disposed of when it ends. herald's request is the unit of work (herald/uow.h), and its
 * scope is this list: each object is stored under a key (any unique address), found again
 * by that key, and destroyed, last-attached first, when the scope is released.
 *
 * Two modules use it, and this header is what lets them not know each other: the unit of
 * work owns one scope per transaction (hd_uow_attach is a shortcut to it), and the
 * dispatcher keeps the handlers its factories make there (herald/dispatcher.h), reaching it
 * with hd_uow_scope. So dispatcher.h and uow.h include neither each other nor anything but
 * this small type.
 *
 * A scope belongs to one thread, like its unit of work. Ownership follows jansson: "new" =
 * the caller owns the result and frees it; "borrowed" = valid while its owner lives and is
 * not modified; "stolen" = the callee takes ownership, also when it fails.
 */
#ifndef HERALD_SCOPE_H
#define HERALD_SCOPE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_tx_scope hd_tx_scope;
typedef struct hd_uow hd_uow; /* uow.h */

/* A new, empty scope (free with hd_tx_scope_free), or NULL when out of memory. */
hd_tx_scope *hd_tx_scope_new(void);

/* Destroy every attached object, last attached first (as a stack unwinds: a later object
 * may use an earlier one), then free the scope. NULL is fine. */
void hd_tx_scope_free(hd_tx_scope *scope);

/* Keep obj under key until the scope is freed. obj is stolen: destroy(obj) runs then, or at
 * once when attaching fails. destroy may be NULL. Returns 0, HD_EINVAL (scope or key NULL),
 * HD_EEXIST (key taken), HD_ENOMEM. */
int hd_tx_scope_attach(hd_tx_scope *scope, const void *key, void *obj, void (*destroy)(void *obj));

/* The object attached under key (borrowed), or NULL (also when scope is NULL). */
void *hd_tx_scope_attached(const hd_tx_scope *scope, const void *key);

/* The scope of a unit of work (borrowed: it ends with the unit), or NULL when uow is NULL.
 * Defined by the unit of work (uow.c); declared here so that the dispatcher needs no more
 * of the unit than this. */
hd_tx_scope *hd_uow_scope(hd_uow *uow);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_SCOPE_H */
