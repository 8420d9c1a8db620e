/* scope.c — objects kept until a unit of work ends; see scope.h. */
#include "herald/scope.h"

#include "herald/error.h"

#include <stdlib.h>

typedef struct attachment {
    const void *key;
    void *obj;
    void (*destroy)(void *obj);
} attachment;

struct hd_tx_scope {
    attachment *items; /* owned objects, in attachment order */
    size_t n, cap;
};

hd_tx_scope *hd_tx_scope_new(void)
{
    return calloc(1, sizeof(hd_tx_scope));
}

void hd_tx_scope_free(hd_tx_scope *scope)
{
    if (scope == NULL)
        return;
    for (size_t i = scope->n; i-- > 0;)
        if (scope->items[i].destroy != NULL)
            scope->items[i].destroy(scope->items[i].obj);
    free(scope->items);
    free(scope);
}

static attachment *find(const hd_tx_scope *scope, const void *key)
{
    for (size_t i = 0; scope != NULL && i < scope->n; i++)
        if (scope->items[i].key == key)
            return &scope->items[i];
    return NULL;
}

int hd_tx_scope_attach(hd_tx_scope *scope, const void *key, void *obj, void (*destroy)(void *obj))
{
    int rc = HD_OK;
    if (scope == NULL || key == NULL) {
        rc = HD_EINVAL;
    } else if (find(scope, key) != NULL) {
        rc = HD_EEXIST;
    } else if (scope->n == scope->cap) {
        /* Doubling keeps appends O(1) amortised; a unit rarely holds more than a few. */
        size_t cap = scope->cap ? scope->cap * 2 : 4;
        attachment *p = realloc(scope->items, cap * sizeof *p);
        if (p == NULL) {
            rc = HD_ENOMEM;
        } else {
            scope->items = p;
            scope->cap = cap;
        }
    }
    if (rc < 0) {
        if (destroy != NULL)
            destroy(obj); /* stolen, also on failure */
        return rc;
    }
    scope->items[scope->n++] = (attachment){key, obj, destroy};
    return HD_OK;
}

void *hd_tx_scope_attached(const hd_tx_scope *scope, const void *key)
{
    attachment *a = find(scope, key);
    return a ? a->obj : NULL;
}
