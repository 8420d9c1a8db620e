/* fuzz_jsonr.c — the JSON reader (jsonr.h) against json_loadb, on any bytes and with each
 * flag set: the same tree (kinds, values, key order: the compact dumps of both are the same
 * bytes, and json_equal agrees) or, when json_loadb refuses the text, the same error (text,
 * line, column, position). The reader decodes every event herald-notifications consumes:
 * a tree that differs from jansson's would let an event mean one thing to herald and
 * another to every other reader of the queue. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/jsonr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* The flags the reader takes on, alone and together, and one it hands over (ALLOW_NUL). */
static const size_t flag_sets[] = {
    0,
    JSON_DECODE_ANY,
    JSON_REJECT_DUPLICATES,
    JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
    JSON_DECODE_ANY | JSON_ALLOW_NUL,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++) {
        json_error_t want_err, got_err;
        json_t *want = json_loadb(text, size, flag_sets[f], &want_err);
        json_t *got = hd_jsonr_loadb(text, size, flag_sets[f], &got_err);
        CHECK((want == NULL) == (got == NULL));
        if (want == NULL) {
            CHECK(strcmp(want_err.text, got_err.text) == 0);
            CHECK(want_err.line == got_err.line && want_err.column == got_err.column &&
                  want_err.position == got_err.position);
            continue;
        }
        CHECK(json_equal(want, got));
        size_t dump = JSON_COMPACT | JSON_ENCODE_ANY;
        char *a = json_dumps(want, dump), *b = json_dumps(got, dump);
        CHECK(a != NULL && b != NULL && strcmp(a, b) == 0);
        free(a);
        free(b);
        json_decref(want);
        json_decref(got);
    }
    return 0;
}
