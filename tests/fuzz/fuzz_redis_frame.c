/* fuzz_redis_frame.c — libFuzzer target for the frame of the Redis bus (src/herald/bus_redis.c):
 * what comes off a Redis channel, published by herald or by anyone who can PUBLISH to it.
 * Properties checked on every input (a violation is __builtin_trap(), a crash to libFuzzer):
 *   1. hd_bus_redis_frame_decode returns 0 or HD_EPROTO, and leaves *out zeroed on error;
 *   2. without the magic the whole input is the body, with no headers;
 *   3. what decodes has a body inside the input, ending where the input ends, and header
 *      values without CR, LF or NUL of less than HD_BUS_REDIS_FRAME_VALUE_MAX bytes;
 *   4. decode -> encode -> decode is stable: the same headers and the same body bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/bus_redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int value_ok(const char *v)
{
    size_t n = strnlen(v, HD_BUS_REDIS_FRAME_VALUE_MAX);
    return n < HD_BUS_REDIS_FRAME_VALUE_MAX && strpbrk(v, "\r\n") == NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy of exactly size bytes: ASan sees a read one past the end */
    uint8_t *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    memcpy(in, data, size);
    hd_bus_redis_frame f;
    memset(&f, 0x5a, sizeof f);
    hd_error err = {0};
    int rc = hd_bus_redis_frame_decode(in, size, &f, &err);
    if (rc != HD_OK) {
        static const hd_bus_redis_frame zero;
        if (rc != HD_EPROTO || memcmp(&f, &zero, sizeof f) != 0)
            __builtin_trap();
        goto done;
    }
    size_t magic = sizeof HD_BUS_REDIS_FRAME_MAGIC - 1;
    int framed = size >= magic && memcmp(in, HD_BUS_REDIS_FRAME_MAGIC, magic) == 0;
    if (!framed && (f.body != in || f.len != size || f.message_id[0] || f.correlation_id[0] ||
                    f.content_type[0]))
        __builtin_trap();
    if ((const uint8_t *)f.body < in || (const uint8_t *)f.body + f.len != in + size)
        __builtin_trap();
    if (!value_ok(f.message_id) || !value_ok(f.correlation_id) || !value_ok(f.content_type))
        __builtin_trap();

    hd_bus_message m = {.topic = "t",
                        .type = "x",
                        .body = f.body,
                        .len = f.len,
                        .message_id = f.message_id,
                        .correlation_id = f.correlation_id,
                        .content_type = f.content_type};
    char *again = NULL;
    size_t alen = 0;
    if (hd_bus_redis_frame_encode(&m, &again, &alen, &err) != HD_OK)
        __builtin_trap(); /* a decoded frame must always encode */
    hd_bus_redis_frame g;
    if (hd_bus_redis_frame_decode(again, alen, &g, &err) != HD_OK ||
        strcmp(f.message_id, g.message_id) != 0 ||
        strcmp(f.correlation_id, g.correlation_id) != 0 ||
        strcmp(f.content_type, g.content_type) != 0 || f.len != g.len ||
        (f.len > 0 && memcmp(f.body, g.body, f.len) != 0))
        __builtin_trap();
    free(again);
done:
    free(in);
    return 0;
}
