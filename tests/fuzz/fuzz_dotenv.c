/* fuzz_dotenv.c — libFuzzer target for the .env parser (src/herald/config.c), through
 * hd_config_read_dotenv_buffer: the same line reader hd_config_load runs on a file.
 *
 * A .env file is written by an operator, but it is also what a deployment tool, a CI secret
 * store or a copy-paste from a chat produces, so the parser must take any bytes. Properties:
 *   1. the result is 0 or HD_ECONFIG (HD_ENOMEM aside), and an HD_ECONFIG message names the
 *      file and a line that exists ("fuzz.env:<n>: ...");
 *   2. parse -> format -> parse is stable: every key the text sets, written back as
 *      KEY="value" with the escapes the parser knows, reads back to the same value, and the
 *      written text sets no key the original did not.
 * The keys a text sets are found by the target itself, from the grammar in config.h (a line
 * that is not blank or a comment starts with [export ]KEY): a second, independent reading.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/buf.h"
#include "herald/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KEYS 256

static int key_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int key_char(char c)
{
    return key_start(c) || (c >= '0' && c <= '9');
}

/* The key of each setting line of text (len bytes), as [start, length) pairs. A NUL ends
 * the text of its line, as it does for getline + strlen in the parser. */
static size_t find_keys(const char *text, size_t len, const char **keys, size_t *lens,
                        size_t *lines)
{
    size_t n = 0;
    *lines = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *nul = memchr(text + at, '\0', end - at);
        size_t stop = nul ? (size_t)(nul - text) : end;
        size_t p = at;
        (*lines)++;
        while (p < stop && (text[p] == ' ' || text[p] == '\t'))
            p++;
        if (stop - p > 6 && memcmp(text + p, "export", 6) == 0 &&
            (text[p + 6] == ' ' || text[p + 6] == '\t')) {
            p += 6;
            while (p < stop && (text[p] == ' ' || text[p] == '\t'))
                p++;
        }
        if (p < stop && key_start(text[p]) && n < MAX_KEYS) {
            size_t k = p;
            while (k < stop && key_char(text[k]))
                k++;
            keys[n] = text + p;
            lens[n++] = k - p;
        }
        at = end + 1;
    }
    return n;
}

static void format_value(hd_buf *b, const char *v)
{
    hd_buf_puts(b, "\"");
    for (; *v; v++) {
        switch (*v) {
        case '\n':
            hd_buf_puts(b, "\\n");
            break;
        case '\r':
            hd_buf_puts(b, "\\r");
            break;
        case '\t':
            hd_buf_puts(b, "\\t");
            break;
        case '\\':
            hd_buf_puts(b, "\\\\");
            break;
        case '"':
            hd_buf_puts(b, "\\\"");
            break;
        default:
            hd_buf_add(b, v, 1);
        }
    }
    hd_buf_puts(b, "\"\n");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    hd_config *cfg = hd_config_new_empty();
    if (cfg == NULL)
        return 0;
    hd_error err = {0};
    int rc = hd_config_read_dotenv_buffer(cfg, text, size, "fuzz.env", &err);

    static const char *keys[MAX_KEYS];
    static size_t lens[MAX_KEYS];
    size_t lines = 0;
    size_t n = find_keys(text, size, keys, lens, &lines);
    if (rc == HD_ECONFIG) {
        long line = 0;
        if (sscanf(err.text, "fuzz.env:%ld:", &line) != 1 || line < 1 || (size_t)line > lines)
            __builtin_trap();
        hd_config_free(cfg);
        return 0;
    }
    if (rc != HD_OK) {
        if (rc != HD_ENOMEM)
            __builtin_trap();
        hd_config_free(cfg);
        return 0;
    }

    /* Every key found is set (a setting line may only fail as a whole), from this file. */
    hd_buf out = HD_BUF_INIT;
    char key[1024];
    for (size_t i = 0; i < n; i++) {
        if (lens[i] >= sizeof key)
            continue;
        memcpy(key, keys[i], lens[i]);
        key[lens[i]] = '\0';
        const char *v = hd_config_get(cfg, key, NULL);
        const char *src = hd_config_source(cfg, key);
        if (v == NULL || src == NULL || strcmp(src, "fuzz.env") != 0)
            __builtin_trap();
        hd_buf_printf(&out, "%s=", key);
        format_value(&out, v);
    }
    hd_config *again = hd_config_new_empty();
    if (again == NULL || out.oom) {
        hd_buf_release(&out);
        hd_config_free(again);
        hd_config_free(cfg);
        return 0;
    }
    if (hd_config_read_dotenv_buffer(again, out.p, out.len, "again.env", &err) != HD_OK)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        if (lens[i] >= sizeof key)
            continue;
        memcpy(key, keys[i], lens[i]);
        key[lens[i]] = '\0';
        const char *a = hd_config_get(cfg, key, NULL), *b = hd_config_get(again, key, NULL);
        if (b == NULL || strcmp(a, b) != 0)
            __builtin_trap();
    }
    hd_buf_release(&out);
    hd_config_free(again);
    hd_config_free(cfg);
    return 0;
}
