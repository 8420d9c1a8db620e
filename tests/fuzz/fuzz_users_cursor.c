/* fuzz_users_cursor.c — libFuzzer target for the users service's pagination cursor
 * (GET /users?cursor=...), through users_list: the cursor decoder is private to
 * src/services/users/application.c, and the use case is what the HTTP route calls.
 *
 * The first byte picks how the rest is used:
 *   even  the rest is the cursor as a client sends it (opaque base64url);
 *   odd   the rest is the cursor's plain text ("v1.<created_at_ms>.<uuid>"), which the target
 *         encodes itself, so the fuzzer reaches the grammar without having to learn base64.
 * Properties checked on every input (a violation is __builtin_trap(), a crash to libFuzzer):
 *   1. users_list returns 0 or HD_EINVAL, and on HD_EINVAL hands out nothing (no items, no
 *      next cursor);
 *   2. a cursor it accepts is exactly "v1." DIGITS "." UUID with DIGITS at most INT64_MAX
 *      (the documented format: a timestamp past 64 bits is a 400, not a silent empty page);
 *   3. what it returns lies strictly after the cursor's position, in order, and the
 *      next cursor it hands out is accepted again (encode -> decode round trip).
 * The store is an in-memory SQLite database with three users, made once.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "herald/clock.h"
#include "herald/store.h"
#include "users/application.h"
#include "users/repository.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t fixed_now = 1700000000000;

static int64_t fixed_clock(void)
{
    return fixed_now;
}

static users_app *app(void)
{
    static users_app *a;
    static hd_store *store;
    if (a != NULL)
        return a;
    users_config cfg = {
        .pwhash_opslimit = crypto_pwhash_OPSLIMIT_MIN,
        .pwhash_memlimit = crypto_pwhash_MEMLIMIT_MIN,
        .clock = fixed_clock,
    };
    if (hd_store_open("sqlite::memory:", &store, NULL) < 0 || users_repo_migrate(store, NULL) < 0 ||
        users_app_new(store, &cfg, &a, NULL) < 0)
        __builtin_trap();
    static const char *const addrs[] = {"ada@example.com", "bob@example.com", "eve@example.com"};
    for (size_t i = 0; i < 3; i++) {
        email e;
        fixed_now += (int64_t)i; /* two share a millisecond: the id breaks the tie */
        if (email_parse(addrs[i], &e, NULL) < 0 ||
            users_register(a, NULL, &e, "correct horse battery", 21, "", NULL, NULL) < 0)
            __builtin_trap();
    }
    return a;
}

/* The documented plain form, checked independently of the decoder. */
static int plain_well_formed(const char *p, int64_t *ms, const char **id)
{
    if (strncmp(p, "v1.", 3) != 0)
        return 0;
    p += 3;
    const char *digits = p;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        if (v > ((uint64_t)INT64_MAX - (uint64_t)(*p - '0')) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == digits || *p != '.' || !hd_uuid_valid(p + 1))
        return 0;
    *ms = (int64_t)v;
    *id = p + 1;
    return 1;
}

static void check_accepted(const char *cursor, const users_page *page)
{
    int64_t ms = -1;
    const char *id = "";
    char plain[USERS_CURSOR_MAX];
    if (cursor[0] != '\0') {
        size_t n = 0;
        if (sodium_base642bin((unsigned char *)plain, sizeof plain - 1, cursor, strlen(cursor),
                              NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
            __builtin_trap(); /* accepted what is not even base64url */
        plain[n] = '\0';
        if (memchr(plain, '\0', n) != NULL || !plain_well_formed(plain, &ms, &id))
            __builtin_trap();
    }
    for (size_t i = 0; i < page->count; i++) {
        const user_view *v = &page->items[i];
        if (v->created_at_ms < ms || (v->created_at_ms == ms && strcmp(v->id, id) <= 0))
            __builtin_trap(); /* not after the cursor's position */
        ms = v->created_at_ms;
        id = v->id;
    }
    if (page->next_cursor[0] != '\0') {
        users_page again;
        if (page->count == 0 || users_list(app(), page->next_cursor, 1, &again, NULL) != HD_OK)
            __builtin_trap();
        users_page_release(&again);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char cursor[512];
    if (size == 0)
        return 0;
    size_t n = size - 1 < 256 ? size - 1 : 256;
    if (data[0] & 1) { /* plain text: encode it as the service would */
        if (sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > sizeof cursor)
            return 0;
        sodium_bin2base64(cursor, sizeof cursor, data + 1, n,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    } else {
        memcpy(cursor, data + 1, n);
        cursor[n] = '\0';
    }

    users_page page;
    hd_error err;
    int rc = users_list(app(), cursor, 2, &page, &err);
    if (rc == HD_OK)
        check_accepted(cursor, &page);
    else if (rc != HD_EINVAL || page.count != 0 || page.items != NULL ||
             page.next_cursor[0] != '\0')
        __builtin_trap();
    users_page_release(&page);
    return 0;
}
