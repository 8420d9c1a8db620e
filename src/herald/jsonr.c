/* jsonr.c — JSON text into a jansson tree through yajl's callbacks (jsonr.h says what is
 * handed to json_loadb instead, and why). */
#include "herald/jsonr.h"
#include "herald/utf8.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* jansson's JSON_PARSER_MAX_DEPTH (load.c): deeper text is refused there, so here too. */
#define MAX_DEPTH 2048

#define SUPPORTED_FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)

/* The tree being built: the open containers, innermost last, and an object's key waiting
 * for its value. Any callback returning 0 stops yajl, and the text goes to jansson. */
typedef struct reader {
    size_t flags;
    yajl_handle h;
    size_t root_end; /* the offset just past the root's closing bracket, once it is read */
    json_t *root;    /* owns everything built so far */
    json_t **open;
    size_t depth, cap;
    char *key; /* the pending key's bytes (not NUL-terminated), key_len of them */
    size_t key_len, key_cap;
} reader;

/* 1 when a string's bytes are what jansson keeps as they are: UTF-8, no NUL. */
static int plain_text(const unsigned char *s, size_t len)
{
    return memchr(s, '\0', len) == NULL && hd_utf8_valid_n((const char *)s, len);
}

/* Put a new value v (stolen) where the text has it: the root, the next item of the open
 * array, or the pending key's member of the open object. */
static int add(reader *r, json_t *v)
{
    if (v == NULL)
        return 0;
    if (r->depth == 0) {
        /* Only an object or an array at the top: yajl takes a second value after a scalar
         * root for the end of the text when it is cut short (' "t"" ': fuzz-jsonr), and a
         * number at the end of the text is read by yajl_complete_parse from a buffer of
         * its own, where the offset of its end is lost. A scalar root is for jansson. */
        if (r->root != NULL || (!json_is_object(v) && !json_is_array(v))) {
            json_decref(v);
            return 0;
        }
        r->root = v;
        return 1;
    }
    json_t *top = r->open[r->depth - 1];
    int rc;
    if (json_is_object(top)) {
        if ((r->flags & JSON_REJECT_DUPLICATES) && json_object_getn(top, r->key, r->key_len)) {
            json_decref(v);
            return 0;
        }
        /* As jansson's parser stores a member: a repeated key (allowed without
         * JSON_REJECT_DUPLICATES) keeps its place and takes the last value. */
        rc = json_object_setn_new_nocheck(top, r->key, r->key_len, v);
    } else {
        rc = json_array_append_new(top, v);
    }
    return rc == 0;
}

/* Open a new container c (stolen): added where it belongs, then the innermost. */
static int open_container(reader *r, json_t *c)
{
    if (r->depth >= MAX_DEPTH) {
        json_decref(c);
        return 0;
    }
    if (r->depth == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        json_t **open = realloc(r->open, cap * sizeof *open);
        if (open == NULL) {
            json_decref(c);
            return 0;
        }
        r->open = open;
        r->cap = cap;
    }
    if (!add(r, c))
        return 0;
    r->open[r->depth++] = c; /* borrowed: its parent (or root) owns it */
    return 1;
}

static int on_null(void *ctx)
{
    return add(ctx, json_null());
}

static int on_boolean(void *ctx, int b)
{
    return add(ctx, json_boolean(b));
}

/* The number's text, as yajl lexed it (JSON's grammar): jansson's integer when it has no
 * fraction and no exponent, else a real that jansson converts itself. */
static int on_number(void *ctx, const char *s, size_t len)
{
    if (memchr(s, '.', len) == NULL && memchr(s, 'e', len) == NULL && memchr(s, 'E', len) == NULL) {
        char text[32]; /* "-" and 19 digits at most fit json_int_t; longer is out of range */
        if (len >= sizeof text)
            return 0;
        memcpy(text, s, len);
        text[len] = '\0';
        errno = 0;
        json_int_t v = strtoll(text, NULL, 10);
        if (errno == ERANGE)
            return 0;
        return add(ctx, json_integer(v));
    }
    json_t *real = json_loadb(s, len, JSON_DECODE_ANY, NULL);
    if (real != NULL && !json_is_real(real)) { /* cannot happen: the text is a real's */
        json_decref(real);
        return 0;
    }
    return add(ctx, real);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    if (!plain_text(s, len))
        return 0;
    return add(ctx, json_stringn_nocheck((const char *)s, len));
}

static int on_key(void *ctx, const unsigned char *s, size_t len)
{
    reader *r = ctx;
    if (!plain_text(s, len))
        return 0;
    if (len > r->key_cap || r->key == NULL) { /* never NULL: jansson takes no NULL key, "" is one */
        char *key = realloc(r->key, len > 0 ? len : 1);
        if (key == NULL)
            return 0;
        r->key = key;
        r->key_cap = len > 0 ? len : 1;
    }
    if (len > 0)
        memcpy(r->key, s, len);
    r->key_len = len;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, json_object());
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, json_array());
}

static int on_end(void *ctx)
{
    reader *r = ctx;
    if (--r->depth == 0)
        r->root_end = yajl_get_bytes_consumed(r->h);
    return 1;
}

/* 1 when s[0, len) is only JSON's white space (jansson's, RFC 8259's: four bytes). */
static int only_white_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number, /* the text: yajl_integer and yajl_double are not called */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

/* 1 when the text may escape a UTF-16 surrogate ("\uD800".."\uDFFF"). A '\' is taken with
 * the byte after it, so "\\uD800" (an escaped backslash, then text) is not one; outside a
 * string a '\' is a syntax error, which yajl refuses anyway. */
static int escapes_surrogate(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 4 && p[1] == 'u' && (p[2] == 'd' || p[2] == 'D') &&
            ((p[3] >= '8' && p[3] <= '9') || (p[3] >= 'a' && p[3] <= 'f') ||
             (p[3] >= 'A' && p[3] <= 'F')))
            return 1;
        p += end - p >= 2 ? 2 : 1;
    }
    return 0;
}

/* yajl's reading of the text, or NULL: then jansson decides. */
static json_t *read_fast(const char *buf, size_t len, size_t flags)
{
    /* yajl's white space has '\v' and '\f' too, where JSON's has not (fuzz-jsonr): in
     * text jansson takes they cannot appear at all (in a string they are control
     * characters, which both refuse). */
    if ((flags & ~(size_t)SUPPORTED_FLAGS) != 0 || memchr(buf, '\v', len) != NULL ||
        memchr(buf, '\f', len) != NULL || escapes_surrogate(buf, len))
        return NULL;
    reader r = {.flags = flags};
    yajl_handle h = yajl_alloc(&callbacks, NULL, &r);
    if (h == NULL)
        return NULL;
    r.h = h;
    /* The strings' UTF-8 is checked here, completely (plain_text): yajl's own check of the
     * shape of each sequence would be a second pass over every string. */
    yajl_config(h, yajl_dont_validate_strings, 1);
    /* yajl's own end-of-text check misses a token cut short after the root ("{}\"", and
     * its lexer waits for more): what follows the root's closing bracket is checked here. */
    int ok = yajl_parse(h, (const unsigned char *)buf, len) == yajl_status_ok &&
             yajl_complete_parse(h) == yajl_status_ok && r.root != NULL && r.depth == 0 &&
             r.root_end <= len && only_white_space(buf + r.root_end, len - r.root_end);
    yajl_free(h);
    free(r.open);
    free(r.key);
    if (!ok) {
        json_decref(r.root);
        return NULL;
    }
    return r.root;
}

static atomic_size_t handovers;

size_t hd_jsonr_handovers(void)
{
    return atomic_load_explicit(&handovers, memory_order_relaxed);
}

json_t *hd_jsonr_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
    json_t *root = buf != NULL ? read_fast(buf, len, flags) : NULL;
    if (root == NULL) {
        atomic_fetch_add_explicit(&handovers, 1, memory_order_relaxed);
        return json_loadb(buf, len, flags, error);
    }
    if (error != NULL) { /* as json_loadb leaves it after a success */
        error->text[0] = '\0';
        error->line = -1;
        error->column = -1;
        error->position = len; /* json_loadb's lexer has read the whole text */
        snprintf(error->source, sizeof error->source, "%s", "<buffer>");
    }
    return root;
}
