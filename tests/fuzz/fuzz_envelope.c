/* fuzz_envelope.c — libFuzzer target for hd_envelope_decode (build: tests/fuzz/README.md).
 *
 * The decoder reads bytes from the network, so it must survive any input: no crash, no
 * leak, no read past len, and a clean error code for everything it refuses. Beyond "does
 * not crash", the target checks three properties on every input:
 *   1. decode returns 0 or one of the codes envelope.h documents, and fills *out exactly
 *      when it returns 0;
 *   2. what decodes, encodes; and the encoding decodes again to the same bytes
 *      (encode(decode(encode(x))) == encode(x)): the wire form is stable;
 *   3. decoding with the registry never accepts what structural decoding refuses;
 *   4. the encoder, which writes the envelope itself (jsonw.h), writes the bytes jansson
 *      writes for the same envelope as a JSON object (hd_envelope_to_json), dumped compact
 *      with sorted keys: what the wire carried before the writer.
 * A violated property calls __builtin_trap(), which libFuzzer reports as a crash and saves
 * the input that caused it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const hd_field_spec user_registered_v1[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {NULL, 0, 0},
};

static int validate_user_registered_v1(const json_t *d, hd_error *err, void *ctx)
{
    (void)ctx;
    return hd_validate_fields(d, user_registered_v1, err);
}

static int known_code(int rc)
{
    switch (rc) {
    case HD_OK:
    case HD_ETOOBIG:
    case HD_EJSON:
    case HD_ETYPE:
    case HD_EMISSING:
    case HD_EVERSION:
    case HD_EUNSUPPORTED:
    case HD_EUNKNOWN:
    case HD_EVALIDATE:
    case HD_ENOMEM:
        return 1;
    default:
        return 0;
    }
}

/* Built once: libFuzzer calls the target millions of times in one process. */
static hd_registry *registry(void)
{
    static hd_registry *reg;
    if (reg == NULL) {
        reg = hd_registry_new();
        if (reg == NULL ||
            hd_registry_add(reg, "users.user_registered", 1, validate_user_registered_v1, NULL) <
                0 ||
            hd_registry_add(reg, "users.user_deleted", 1, NULL, NULL) < 0)
            __builtin_trap();
        hd_registry_set_max_size(reg, 64 * 1024);
    }
    return reg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    hd_envelope *env = NULL, *plain = NULL;
    hd_error err;

    int rc = hd_envelope_decode(registry(), buf, size, &env, &err);
    if (!known_code(rc) || (rc == HD_OK) != (env != NULL))
        __builtin_trap();
    int rc_plain = hd_envelope_decode(NULL, buf, size, &plain, NULL);
    if (!known_code(rc_plain) || (rc == HD_OK && rc_plain != HD_OK))
        __builtin_trap();
    hd_envelope_free(plain);
    if (env == NULL)
        return 0;

    char *first = NULL, *second = NULL;
    size_t first_len = 0, second_len = 0;
    hd_envelope *again = NULL;
    if (hd_envelope_encode(env, &first, &first_len, NULL) != HD_OK)
        __builtin_trap();
    json_t *obj = hd_envelope_to_json(env);
    char *want = obj ? json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (want == NULL || strlen(want) != first_len || memcmp(want, first, first_len) != 0)
        __builtin_trap();
    free(want);
    json_decref(obj);
    /* the encoding may be longer than the input (escapes), so decode it without a limit
     * check getting in the way: structural decode uses the 256 KiB default */
    if (first_len <= HD_ENVELOPE_MAX_SIZE_DEFAULT) {
        if (hd_envelope_decode(NULL, first, first_len, &again, &err) != HD_OK ||
            hd_envelope_encode(again, &second, &second_len, NULL) != HD_OK ||
            first_len != second_len || memcmp(first, second, first_len) != 0)
            __builtin_trap();
    }
    free(first);
    free(second);
    hd_envelope_free(again);
    hd_envelope_free(env);
    return 0;
}
