/* dynlib.c — see dynlib.h. */
#include "herald/dynlib.h"

#include <dlfcn.h>
#include <string.h>

/* The test hook's table (hd_dynlib_override): a handful of entries, set before any thread
 * starts and only read afterwards, so it needs no lock. */
enum { OVERRIDE_MAX = 4 };
static struct {
    const char *soname, *instead;
} overrides[OVERRIDE_MAX];

int hd_dynlib_override(const char *soname, const char *instead)
{
    if (soname == NULL)
        return HD_EINVAL;
    int free_slot = -1;
    for (int i = 0; i < OVERRIDE_MAX; i++) {
        if (overrides[i].soname != NULL && strcmp(overrides[i].soname, soname) == 0) {
            if (instead == NULL)
                overrides[i].soname = NULL;
            overrides[i].instead = instead;
            return 0;
        }
        if (overrides[i].soname == NULL && free_slot < 0)
            free_slot = i;
    }
    if (instead == NULL)
        return 0;
    if (free_slot < 0)
        return HD_ERANGE;
    overrides[free_slot].soname = soname;
    overrides[free_slot].instead = instead;
    return 0;
}

static const char *file_for(const char *soname)
{
    for (int i = 0; i < OVERRIDE_MAX; i++)
        if (overrides[i].soname != NULL && strcmp(overrides[i].soname, soname) == 0)
            return overrides[i].instead;
    return soname;
}

/* The load itself, under lib->lock. dlerror() texts are per thread since glibc 2.x and
 * POSIX 2008; the lock is for the slots and the state, not for them. */
static void load(hd_dynlib *lib)
{
    hd_error e;
    hd_error_clear(&e);
    const char *file = file_for(lib->soname);
    /* RTLD_NOW: a symbol missing from a broken install fails here, once, with a message,
     * not as a crash in the middle of a call. RTLD_LOCAL: the library's names stay out of
     * the global namespace, so nothing else in the process binds to them by accident. */
    void *handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *why = dlerror();
        lib->rc = hd_error_set(&e, HD_EUNSUPPORTED, "%s: cannot load %s: %s", lib->what,
                               lib->soname, why ? why : "unknown reason");
    } else {
        for (size_t i = 0; lib->names[i] != NULL; i++) {
            dlerror(); /* NULL is a valid symbol value in general: clear, then ask */
            void *fn = dlsym(handle, lib->names[i]);
            const char *why = dlerror();
            if (fn == NULL || why != NULL) {
                lib->rc = hd_error_set(&e, HD_EUNSUPPORTED, "%s: %s has no %s: %s", lib->what,
                                       lib->soname, lib->names[i], why ? why : "NULL symbol");
                break;
            }
            lib->fns[i] = fn;
        }
        /* Never dlclose'd on success: the slots point into it until exit. On a failure it
         * is closed, and the slots filled so far are not used (state stays -1). */
        if (lib->rc < 0)
            dlclose(handle);
    }
    if (lib->rc < 0)
        memcpy(lib->why, e.text, sizeof lib->why);
    /* Release: a thread that reads the state with acquire also sees the slots. */
    atomic_store_explicit(&lib->state, lib->rc < 0 ? -1 : 1, memory_order_release);
}

int hd_dynlib_load(hd_dynlib *lib, hd_error *err)
{
    if (lib == NULL)
        return hd_error_set(err, HD_EINVAL, "hd_dynlib_load: NULL library");
    int state = atomic_load_explicit(&lib->state, memory_order_acquire);
    if (state == 0) {
        /* The first callers queue here; the one that gets the lock first loads, the others
         * find the state set when they get it (double-checked, with C11 atomics). */
        pthread_mutex_lock(&lib->lock);
        state = atomic_load_explicit(&lib->state, memory_order_acquire);
        if (state == 0) {
            load(lib);
            state = atomic_load_explicit(&lib->state, memory_order_acquire);
        }
        pthread_mutex_unlock(&lib->lock);
    }
    if (state > 0)
        return 0;
    return hd_error_set(err, lib->rc, "%s", lib->why);
}
