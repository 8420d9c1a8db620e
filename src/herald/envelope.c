/* envelope.c — CloudEvents 1.0 structured JSON envelopes; see envelope.h. */
#include "herald/envelope.h"
#include "herald/clock.h"
#include "herald/jsonr.h"
#include "herald/jsonw.h"
#include "herald/utf8.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct hd_envelope {
    char *id;
    char *type;
    char *source;
    int version;
    char *time;            /* NULL when absent */
    char *datacontenttype; /* NULL when absent */
    char *correlation_id;  /* NULL when absent */
    char *causation_id;    /* NULL when absent */
    char *traceparent;     /* NULL when absent */
    json_t *data;          /* an object, or NULL when absent */
    json_t *extra;         /* other attributes (name -> scalar); NULL when none */
};

/* Attributes with a dedicated field or a dedicated rule. Every other name goes to `extra`. */
static const char *const known_attributes[] = {
    "specversion",
    "id",
    "source",
    "type",
    "schemaversion",
    "time",
    "datacontenttype",
    "data",
    "data_base64",
    "correlationid",
    "causationid",
    "traceparent",
    NULL,
};

/* Foreign values are quoted in error texts, cut to this many bytes: enough to recognise a
 * value, too short to flood a log with a hostile one. */
#define QUOTE_MAX 64

/* ---- small helpers ----------------------------------------------------------------------- */

static int is_known_attribute(const char *name)
{
    for (const char *const *k = known_attributes; *k; k++)
        if (strcmp(*k, name) == 0)
            return 1;
    return 0;
}

/* CloudEvents 1.0: attribute names are lower-case ASCII letters and digits, nothing else,
 * so that every protocol binding (HTTP headers, AMQP properties) can carry them. */
static int is_valid_attribute_name(const char *name)
{
    if (name == NULL || *name == '\0')
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

static int is_lower_hex(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        nonzero |= s[i] != '0';
    }
    return nonzero || n == 2; /* ids must not be all zeros; version and flags may */
}

/* W3C Trace Context, version 00 layout: "vv-<32 hex trace id>-<16 hex parent id>-<2 hex>".
 * Checked because a malformed traceparent breaks every tracing tool downstream. */
static int is_valid_traceparent(const char *s)
{
    if (s == NULL || strlen(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    if (!is_lower_hex(s, 2) || strncmp(s, "ff", 2) == 0)
        return 0;
    return is_lower_hex(s + 3, 32) && is_lower_hex(s + 36, 16) && is_lower_hex(s + 53, 2);
}

/* CloudEvents JSON format 3.1.1: data is JSON when the media type, without parameters, is
 * "<type>/json" or "<type>/<anything>+json". Media types are case-insensitive. */
static int is_json_media_type(const char *s)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || slash == s)
        return 0;
    size_t end = strcspn(s, ";");
    while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
        end--;
    const char *sub = slash + 1;
    if (sub >= s + end)
        return 0;
    size_t sublen = (size_t)(s + end - sub);
    if (sublen == 4 && strncasecmp(sub, "json", 4) == 0)
        return 1;
    return sublen > 5 && strncasecmp(sub + sublen - 5, "+json", 5) == 0;
}

/* The JSON kind of v, for error texts. */
static const char *json_kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
    default:
        return "null";
    }
}

/* Replace *slot with a copy of value (NULL clears it). */
static int set_string(char **slot, const char *value)
{
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL)
        return HD_ENOMEM;
    free(*slot);
    *slot = copy;
    return HD_OK;
}

/* Extension values are CloudEvents scalars: String, Integer (signed 32-bit) or Boolean. */
static int is_scalar_attribute_value(const json_t *v)
{
    if (json_is_string(v) || json_is_boolean(v))
        return 1;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i >= INT32_MIN && i <= INT32_MAX;
    }
    return 0;
}

/* ---- the envelope ------------------------------------------------------------------------ */

hd_envelope *hd_envelope_new(const char *type, int version, const char *source, json_t *data)
{
    if (type == NULL || *type == '\0' || source == NULL || *source == '\0' || version < 1 ||
        (data != NULL && !json_is_object(data))) {
        json_decref(data);
        return NULL;
    }
    hd_envelope *env = calloc(1, sizeof *env);
    char id[HD_UUID_LEN + 1], now[HD_TIME_LEN + 1];
    hd_uuid_v7(id); /* time-ordered: the outbox and inbox index it (clock.h) */
    hd_time_format(hd_time_now_ms(), now);
    if (env == NULL || set_string(&env->id, id) || set_string(&env->type, type) ||
        set_string(&env->source, source) || set_string(&env->time, now) ||
        (data && set_string(&env->datacontenttype, HD_ENVELOPE_DATA_MEDIA_TYPE))) {
        hd_envelope_free(env);
        json_decref(data);
        return NULL;
    }
    env->version = version;
    env->data = data;
    return env;
}

void hd_envelope_free(hd_envelope *env)
{
    if (env == NULL)
        return;
    free(env->id);
    free(env->type);
    free(env->source);
    free(env->time);
    free(env->datacontenttype);
    free(env->correlation_id);
    free(env->causation_id);
    free(env->traceparent);
    json_decref(env->data);
    json_decref(env->extra);
    free(env);
}

const char *hd_envelope_id(const hd_envelope *env)
{
    return env->id;
}

const char *hd_envelope_type(const hd_envelope *env)
{
    return env->type;
}

const char *hd_envelope_source(const hd_envelope *env)
{
    return env->source;
}

int hd_envelope_version(const hd_envelope *env)
{
    return env->version;
}

const char *hd_envelope_time(const hd_envelope *env)
{
    return env->time;
}

const char *hd_envelope_datacontenttype(const hd_envelope *env)
{
    return env->datacontenttype;
}

const char *hd_envelope_correlation_id(const hd_envelope *env)
{
    return env->correlation_id;
}

const char *hd_envelope_causation_id(const hd_envelope *env)
{
    return env->causation_id;
}

const char *hd_envelope_traceparent(const hd_envelope *env)
{
    return env->traceparent;
}

json_t *hd_envelope_data(const hd_envelope *env)
{
    return env->data;
}

const json_t *hd_envelope_attribute(const hd_envelope *env, const char *name)
{
    return env->extra && name ? json_object_get(env->extra, name) : NULL;
}

int hd_envelope_set_id(hd_envelope *env, const char *id)
{
    if (id == NULL || *id == '\0')
        return HD_EINVAL;
    return set_string(&env->id, id);
}

int hd_envelope_set_time(hd_envelope *env, const char *rfc3339)
{
    if (rfc3339 != NULL && hd_time_parse(rfc3339, NULL) != HD_OK)
        return HD_EINVAL;
    return set_string(&env->time, rfc3339);
}

int hd_envelope_set_correlation_id(hd_envelope *env, const char *id)
{
    if (id != NULL && *id == '\0')
        return HD_EINVAL;
    return set_string(&env->correlation_id, id);
}

int hd_envelope_set_causation_id(hd_envelope *env, const char *id)
{
    if (id != NULL && *id == '\0')
        return HD_EINVAL;
    return set_string(&env->causation_id, id);
}

int hd_envelope_set_traceparent(hd_envelope *env, const char *traceparent)
{
    if (traceparent != NULL && !is_valid_traceparent(traceparent))
        return HD_EINVAL;
    return set_string(&env->traceparent, traceparent);
}

int hd_envelope_set_attribute(hd_envelope *env, const char *name, json_t *value)
{
    if (!is_valid_attribute_name(name) || is_known_attribute(name) ||
        (value != NULL && !is_scalar_attribute_value(value))) {
        json_decref(value);
        return HD_EINVAL;
    }
    if (value == NULL) {
        if (env->extra)
            json_object_del(env->extra, name);
        return HD_OK;
    }
    if (env->extra == NULL && (env->extra = json_object()) == NULL) {
        json_decref(value);
        return HD_ENOMEM;
    }
    return json_object_set_new(env->extra, name, value) == 0 ? HD_OK : HD_ENOMEM;
}

int hd_envelope_caused_by(hd_envelope *env, const hd_envelope *cause)
{
    const char *flow = cause->correlation_id ? cause->correlation_id : cause->id;
    /* Copy first: cause may be env itself, and set_string frees the old value. */
    char *corr = strdup(flow), *caus = strdup(cause->id);
    if (corr == NULL || caus == NULL) {
        free(corr);
        free(caus);
        return HD_ENOMEM;
    }
    free(env->correlation_id);
    free(env->causation_id);
    env->correlation_id = corr;
    env->causation_id = caus;
    return HD_OK;
}

/* ---- encoding ---------------------------------------------------------------------------- */

static int set_str(json_t *obj, const char *key, const char *value)
{
    return value == NULL ? 0 : json_object_set_new(obj, key, json_string(value));
}

/* Build the attribute object. When copy is 0, data and extra are shared with env (enough
 * for a short-lived object such as encode's); when 1 they are deep copies, so the caller
 * may change the result without touching env. */
static json_t *envelope_to_json(const hd_envelope *env, int copy)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    /* In the alphabetical order of the names (jansson keeps insertion order), so that
     * hd_envelope_encode rarely has to sort. */
    int bad = set_str(obj, "causationid", env->causation_id);
    bad |= set_str(obj, "correlationid", env->correlation_id);
    if (env->data)
        bad |= json_object_set_new(obj, "data",
                                   copy ? json_deep_copy(env->data) : json_incref(env->data));
    bad |= set_str(obj, "datacontenttype", env->datacontenttype);
    bad |= set_str(obj, "id", env->id);
    bad |= json_object_set_new(obj, "schemaversion", json_integer(env->version));
    bad |= set_str(obj, "source", env->source);
    bad |= json_object_set_new(obj, "specversion", json_string(HD_CLOUDEVENTS_SPECVERSION));
    bad |= set_str(obj, "time", env->time);
    bad |= set_str(obj, "traceparent", env->traceparent);
    bad |= set_str(obj, "type", env->type);
    if (env->extra) {
        const char *key;
        json_t *value;
        json_object_foreach(env->extra, key, value)
        {
            bad |= json_object_set_new(obj, key, copy ? json_copy(value) : json_incref(value));
        }
    }
    if (bad) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

json_t *hd_envelope_to_json(const hd_envelope *env)
{
    return envelope_to_json(env, 1);
}

/* The envelope is written straight into a buffer (jsonw.h), with the bytes jansson writes
 * for envelope_to_json's object dumped with JSON_COMPACT | JSON_SORT_KEYS: compact, the keys
 * of every object in the order of their bytes (jansson 2.14 compares the bytes, then the
 * lengths). Building that object and dumping it through jansson's callback cost about 61,000
 * instructions an event in herald-notifications (callgrind; docs/bench.md, "Issue 14, eighth
 * pass"); fuzz_envelope and unit.envelope hold the two to the same bytes. Known differences,
 * none of which a decoded envelope can reach: a string value that is not UTF-8 (jansson's
 * json_stringn_nocheck) is written with '?' where jansson's dump fails; a key with a NUL
 * inside (json_object_setn; jansson's parser refuses one) is written up to the NUL, as
 * jansson writes it, but its value is the key's own, where jansson looks up the cut key; data
 * nested deeper than ENCODE_MAX_DEPTH is refused, where jansson dumps it (or loops: it also refuses
 * a tree that contains itself, which the depth limit catches here). */
#define ENCODE_MAX_DEPTH 2048 /* jansson's own parser refuses deeper input */

typedef struct member {
    const char *key;
    size_t len;
    const char *text;    /* a string attribute, or NULL */
    long long number;    /* schemaversion, when text and value are NULL */
    const json_t *value; /* data, an extension attribute */
} member;

static int member_order(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int write_value(hd_jsonw *w, const json_t *v, int depth);

/* The members, sorted, as an object. */
static int write_members(hd_jsonw *w, member *m, size_t n, int depth)
{
    int sorted = 1;
    for (size_t i = 1; i < n && sorted; i++)
        sorted = member_order(&m[i - 1], &m[i]) < 0;
    if (!sorted)
        qsort(m, n, sizeof m[0], member_order);
    HD_JSONW_LIT(w, "{");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            HD_JSONW_LIT(w, ",");
        hd_jsonw_stringn(w, m[i].key, m[i].len);
        HD_JSONW_LIT(w, ":");
        if (m[i].value != NULL) {
            int rc = write_value(w, m[i].value, depth + 1);
            if (rc < 0)
                return rc;
        } else if (m[i].text != NULL) {
            hd_jsonw_string(w, m[i].text);
        } else {
            hd_jsonw_int(w, m[i].number);
        }
    }
    HD_JSONW_LIT(w, "}");
    return HD_OK;
}

static int write_object(hd_jsonw *w, const json_t *v, int depth)
{
    size_t n = json_object_size(v);
    member stack[16], *m = n <= 16 ? stack : malloc(n * sizeof *m);
    if (m == NULL)
        return HD_ENOMEM;
    size_t k = 0;
    for (void *it = json_object_iter((json_t *)v); it != NULL && k < n;
         it = json_object_iter_next((json_t *)v, it))
        m[k++] = (member){.key = json_object_iter_key(it),
                          .len = strlen(json_object_iter_key(it)), /* as jansson's dump */
                          .value = json_object_iter_value(it)};
    int rc = write_members(w, m, k, depth);
    if (m != stack)
        free(m);
    return rc;
}

static int write_value(hd_jsonw *w, const json_t *v, int depth)
{
    if (depth > ENCODE_MAX_DEPTH)
        return HD_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return write_object(w, v, depth);
    case JSON_ARRAY:
        HD_JSONW_LIT(w, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i > 0)
                HD_JSONW_LIT(w, ",");
            int rc = write_value(w, json_array_get(v, i), depth + 1);
            if (rc < 0)
                return rc;
        }
        HD_JSONW_LIT(w, "]");
        return HD_OK;
    case JSON_STRING:
        hd_jsonw_stringn(w, json_string_value(v), json_string_length(v));
        return HD_OK;
    case JSON_INTEGER:
        hd_jsonw_int(w, (long long)json_integer_value(v));
        return HD_OK;
    case JSON_REAL: {
        /* jansson's own text for a real ("%.17g", its ".0" and exponent rules): reals are
         * rare in events, and this keeps the bytes exactly as they were. */
        char b[64];
        size_t n = json_dumpb(v, b, sizeof b, JSON_ENCODE_ANY);
        if (n == 0 || n > sizeof b)
            return HD_EINVAL;
        hd_jsonw_put(w, b, n);
        return HD_OK;
    }
    case JSON_TRUE:
        HD_JSONW_LIT(w, "true");
        return HD_OK;
    case JSON_FALSE:
        HD_JSONW_LIT(w, "false");
        return HD_OK;
    case JSON_NULL:
        HD_JSONW_LIT(w, "null");
        return HD_OK;
    }
    return HD_EINVAL;
}

/* Adds key = text (a string attribute; NULL: absent) or key = value, replacing a member of
 * the same key as json_object_set_new would. */
static void add_member(member *m, size_t *n, const char *key, const char *text, const json_t *value)
{
    if (text == NULL && value == NULL)
        return;
    size_t len = strlen(key), i = 0;
    while (i < *n && !(m[i].len == len && memcmp(m[i].key, key, len) == 0))
        i++;
    m[i] = (member){.key = key, .len = len, .text = text, .value = value};
    if (i == *n)
        (*n)++;
}

int hd_envelope_encode(const hd_envelope *env, char **out, size_t *len, hd_error *err)
{
    return hd_envelope_encode_with(env, NULL, NULL, out, len, err);
}

int hd_envelope_encode_with(const hd_envelope *env, const char *name, const char *value, char **out,
                            size_t *len, hd_error *err)
{
    if (env == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "envelope and output pointer are required");
    *out = NULL;
    if (name != NULL && value == NULL)
        return hd_error_set(err, HD_EINVAL, "cannot add attribute '%s' to the envelope", name);
    /* The string attributes come from callers as C strings: jansson refused one that is not
     * UTF-8 (json_string), and so does this. */
    const char *const strings[][2] = {
        {"causationid", env->causation_id},
        {"correlationid", env->correlation_id},
        {"datacontenttype", env->datacontenttype},
        {"id", env->id},
        {"source", env->source},
        {"specversion", HD_CLOUDEVENTS_SPECVERSION},
        {"time", env->time},
        {"traceparent", env->traceparent},
        {"type", env->type},
        {name, value},
    };
    size_t nstrings = sizeof strings / sizeof strings[0] - (name == NULL);
    for (size_t i = 0; i < nstrings; i++)
        if (strings[i][1] != NULL && !hd_utf8_valid(strings[i][1]))
            return hd_error_set(err, HD_EINVAL, "attribute '%.*s' is not valid UTF-8", QUOTE_MAX,
                                strings[i][0]);
    size_t cap = nstrings + 2 + (env->extra ? json_object_size(env->extra) : 0);
    member stack[32], *m = cap <= 32 ? stack : malloc(cap * sizeof *m);
    if (m == NULL)
        return hd_error_set(err, HD_ENOMEM, "out of memory encoding the envelope");
    size_t n = 0;
    /* In envelope_to_json's order of insertion, so that a key given twice keeps the value
     * jansson's object kept: the last. */
    for (size_t i = 0; i < nstrings - (name != NULL); i++)
        add_member(m, &n, strings[i][0], strings[i][1], NULL);
    add_member(m, &n, "data", NULL, env->data);
    m[n++] = (member){.key = "schemaversion", .len = 13, .number = env->version};
    if (env->extra) {
        const char *key;
        json_t *v;
        json_object_foreach(env->extra, key, v)
        {
            add_member(m, &n, key, NULL, v);
        }
    }
    if (name != NULL)
        add_member(m, &n, name, value, NULL);
    hd_jsonw w;
    hd_jsonw_init(&w);
    int rc = write_members(&w, m, n, 0);
    if (m != stack)
        free(m);
    if (rc < 0) {
        hd_jsonw_free(&w);
        if (rc == HD_ENOMEM)
            return hd_error_set(err, HD_ENOMEM, "out of memory encoding the envelope");
        return hd_error_set(err, HD_EINVAL,
                            "the envelope's data cannot be encoded: nested deeper than %d, or a "
                            "real jansson cannot write",
                            ENCODE_MAX_DEPTH);
    }
    size_t n_out = 0;
    char *text = hd_jsonw_take(&w, &n_out);
    if (text == NULL)
        return hd_error_set(err, HD_ENOMEM, "out of memory encoding the envelope");
    *out = text;
    if (len)
        *len = n_out;
    return HD_OK;
}

/* ---- the registry ------------------------------------------------------------------------ */

struct registry_entry {
    char *type;
    int version;
    hd_validator_fn validator;
    void *ctx;
};

/* A plain array searched linearly: a consumer knows tens of (type, version) pairs, where a
 * scan is as fast as a hash table and much easier to read. */
struct hd_registry {
    struct registry_entry *entries;
    size_t count, cap;
    size_t max_size;
};

hd_registry *hd_registry_new(void)
{
    hd_registry *reg = calloc(1, sizeof *reg);
    if (reg)
        reg->max_size = HD_ENVELOPE_MAX_SIZE_DEFAULT;
    return reg;
}

void hd_registry_free(hd_registry *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->count; i++)
        free(reg->entries[i].type);
    free(reg->entries);
    free(reg);
}

int hd_registry_add(hd_registry *reg, const char *type, int version, hd_validator_fn validator,
                    void *ctx)
{
    if (reg == NULL || type == NULL || *type == '\0' || version < 1)
        return HD_EINVAL;
    for (size_t i = 0; i < reg->count; i++)
        if (reg->entries[i].version == version && strcmp(reg->entries[i].type, type) == 0)
            return HD_EEXIST;
    if (reg->count == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        struct registry_entry *e = realloc(reg->entries, cap * sizeof *e);
        if (e == NULL)
            return HD_ENOMEM;
        reg->entries = e;
        reg->cap = cap;
    }
    char *copy = strdup(type);
    if (copy == NULL)
        return HD_ENOMEM;
    reg->entries[reg->count++] = (struct registry_entry){copy, version, validator, ctx};
    return HD_OK;
}

void hd_registry_set_max_size(hd_registry *reg, size_t max_bytes)
{
    reg->max_size = max_bytes;
}

size_t hd_registry_max_size(const hd_registry *reg)
{
    return reg->max_size;
}

int hd_registry_check(const hd_registry *reg, const hd_envelope *env, hd_error *err)
{
    if (reg == NULL || env == NULL)
        return hd_error_set(err, HD_EINVAL, "registry and envelope are required");
    const struct registry_entry *match = NULL;
    char known[96] = "";
    size_t used = 0, nknown = 0;
    for (size_t i = 0; i < reg->count; i++) {
        const struct registry_entry *e = &reg->entries[i];
        if (strcmp(e->type, env->type) != 0)
            continue;
        if (e->version == env->version) {
            match = e;
            break;
        }
        /* Collect the known versions for the error text; snprintf truncates safely. */
        if (used < sizeof known) {
            int n =
                snprintf(known + used, sizeof known - used, "%s%d", nknown ? ", " : "", e->version);
            used += n > 0 ? (size_t)n : 0;
        }
        nknown++;
    }
    if (match == NULL && nknown == 0)
        return hd_error_set(err, HD_EUNKNOWN, "unknown event type '%.*s'", QUOTE_MAX, env->type);
    if (match == NULL)
        return hd_error_set(err, HD_EVERSION,
                            "event type '%.*s' has no schema version %d (known: %s)", QUOTE_MAX,
                            env->type, env->version, known);
    if (match->validator == NULL)
        return HD_OK;
    hd_error why;
    hd_error_clear(&why);
    if (match->validator(env->data, &why, match->ctx) >= 0)
        return HD_OK;
    return hd_error_set(err, HD_EVALIDATE, "%s v%d: %s", match->type, match->version,
                        why.text[0] ? why.text : "rejected by its validator");
}

/* ---- decoding ---------------------------------------------------------------------------- */

/* Read attribute `name` as a non-empty string into *out (borrowed from obj; NULL when an
 * optional attribute is absent). CloudEvents: a null value means "absent". */
static int get_string(const json_t *obj, const char *name, int required, const char **out,
                      hd_error *err)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return required ? hd_error_set(err, HD_EMISSING, "missing attribute '%s'", name) : 0;
    if (!json_is_string(v))
        return hd_error_set(err, HD_ETYPE, "attribute '%s' must be a string, got %s", name,
                            json_kind_of(v));
    const char *s = json_string_value(v);
    if (*s == '\0')
        return hd_error_set(err, HD_ETYPE, "attribute '%s' must not be empty", name);
    /* jansson's parser refuses \u0000, but a caller-built json_t may hold one; a C string
     * would silently end there, so refuse it here too. */
    if (strlen(s) != json_string_length(v))
        return hd_error_set(err, HD_ETYPE, "attribute '%s' contains a NUL character", name);
    *out = s;
    return 0;
}

/* get_string, then keep a copy in *slot. */
static int copy_string(const json_t *obj, const char *name, int required, char **slot,
                       hd_error *err)
{
    const char *s;
    int rc = get_string(obj, name, required, &s, err);
    if (rc < 0 || s == NULL)
        return rc;
    return set_string(slot, s) < 0 ? hd_error_set(err, HD_ENOMEM, NULL) : 0;
}

/* herald's extension: the data's schema version, a CloudEvents Integer (32-bit) >= 1. A
 * string "1" is refused: the JSON format maps Integer to a JSON number. */
static int read_schemaversion(const json_t *obj, int *version, hd_error *err)
{
    const json_t *v = json_object_get(obj, "schemaversion");
    if (v == NULL || json_is_null(v))
        return hd_error_set(err, HD_EMISSING, "missing attribute 'schemaversion'");
    if (!json_is_integer(v))
        return hd_error_set(err, HD_ETYPE,
                            "attribute 'schemaversion' must be an integer >= 1, got %s",
                            json_kind_of(v));
    json_int_t n = json_integer_value(v);
    if (n < 1 || n > INT32_MAX)
        return hd_error_set(
            err, HD_ETYPE,
            "attribute 'schemaversion' must be an integer >= 1, got %" JSON_INTEGER_FORMAT, n);
    *version = (int)n;
    return 0;
}

/* Check one event object and fill env. Returns 0 or the first failure (see envelope.h for
 * the order). copy: see envelope_to_json. */
static int read_attributes(const json_t *obj, hd_envelope *env, int copy, hd_error *err)
{
    const char *s;
    int rc;

    /* specversion first: it says how to read everything else. */
    if ((rc = get_string(obj, "specversion", 1, &s, err)) < 0)
        return rc;
    if (strcmp(s, HD_CLOUDEVENTS_SPECVERSION) != 0)
        return hd_error_set(err, HD_EVERSION,
                            "attribute 'specversion' is '%.*s', herald reads only '%s'", QUOTE_MAX,
                            s, HD_CLOUDEVENTS_SPECVERSION);

    /* The required attributes, then the optional ones, always in this order so that the
     * same bad input always gives the same error. */
    if ((rc = copy_string(obj, "id", 1, &env->id, err)) < 0 ||
        (rc = copy_string(obj, "source", 1, &env->source, err)) < 0 ||
        (rc = copy_string(obj, "type", 1, &env->type, err)) < 0 ||
        (rc = read_schemaversion(obj, &env->version, err)) < 0 ||
        (rc = copy_string(obj, "time", 0, &env->time, err)) < 0 ||
        (rc = copy_string(obj, "datacontenttype", 0, &env->datacontenttype, err)) < 0 ||
        (rc = copy_string(obj, "correlationid", 0, &env->correlation_id, err)) < 0 ||
        (rc = copy_string(obj, "causationid", 0, &env->causation_id, err)) < 0 ||
        (rc = copy_string(obj, "traceparent", 0, &env->traceparent, err)) < 0)
        return rc;

    /* Forms that "a non-empty string" does not cover. */
    if (env->time && hd_time_parse(env->time, NULL) != HD_OK)
        return hd_error_set(err, HD_ETYPE, "attribute 'time' is not an RFC 3339 timestamp: '%.*s'",
                            QUOTE_MAX, env->time);
    if (env->traceparent && !is_valid_traceparent(env->traceparent))
        return hd_error_set(err, HD_ETYPE,
                            "attribute 'traceparent' is not a W3C traceparent: '%.*s'", QUOTE_MAX,
                            env->traceparent);

    /* Valid CloudEvents that herald chooses not to carry: say so, distinctly. */
    const json_t *b64 = json_object_get(obj, "data_base64");
    if (b64 && !json_is_null(b64))
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "attribute 'data_base64' (binary data) is not supported: herald "
                            "carries a JSON object in 'data'");
    if (env->datacontenttype && !is_json_media_type(env->datacontenttype))
        return hd_error_set(err, HD_EUNSUPPORTED,
                            "attribute 'datacontenttype' is '%.*s': herald carries JSON data only",
                            QUOTE_MAX, env->datacontenttype);

    /* data is not an attribute: null here is a payload, not "absent", and herald's payloads
     * are objects, so it is refused like any other non-object. */
    const json_t *data = json_object_get(obj, "data");
    if (data != NULL) {
        if (!json_is_object(data))
            return hd_error_set(err, HD_ETYPE, "attribute 'data' must be an object, got %s",
                                json_kind_of(data));
        env->data = copy ? json_deep_copy(data) : json_incref((json_t *)data);
        if (env->data == NULL)
            return hd_error_set(err, HD_ENOMEM, NULL);
    }

    /* Everything else: kept as long as it is a well-formed CloudEvents attribute. */
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (is_known_attribute(key))
            continue;
        if (!is_valid_attribute_name(key))
            return hd_error_set(err, HD_ETYPE,
                                "attribute name '%.*s' is invalid: CloudEvents names are "
                                "lower-case letters and digits",
                                QUOTE_MAX, key);
        if (json_is_null(value))
            continue;
        if (!is_scalar_attribute_value(value))
            return hd_error_set(err, HD_ETYPE,
                                "attribute '%.*s' must be a string, a 32-bit integer or a "
                                "boolean, got %s",
                                QUOTE_MAX, key, json_kind_of(value));
        if ((env->extra == NULL && (env->extra = json_object()) == NULL) ||
            json_object_set_new(env->extra, key, json_copy(value)) != 0)
            return hd_error_set(err, HD_ENOMEM, NULL);
    }
    return 0;
}

static int envelope_from_json(const hd_registry *reg, const json_t *obj, hd_envelope **out,
                              int copy, hd_error *err)
{
    if (!json_is_object(obj))
        return hd_error_set(err, HD_ETYPE, "an event must be a JSON object, got %s",
                            json_kind_of(obj));
    hd_envelope *env = calloc(1, sizeof *env);
    if (env == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = read_attributes(obj, env, copy, err);
    if (rc == 0 && reg != NULL)
        rc = hd_registry_check(reg, env, err);
    if (rc < 0) {
        hd_envelope_free(env);
        return rc;
    }
    *out = env;
    return HD_OK;
}

int hd_envelope_from_json(const hd_registry *reg, const json_t *obj, hd_envelope **out,
                          hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "output pointer is required");
    *out = NULL;
    if (obj == NULL)
        return hd_error_set(err, HD_EINVAL, "no JSON value given");
    return envelope_from_json(reg, obj, out, 1, err);
}

int hd_envelope_decode(const hd_registry *reg, const char *buf, size_t len, hd_envelope **out,
                       hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "output pointer is required");
    *out = NULL;
    if (buf == NULL)
        return hd_error_set(err, HD_EINVAL, "no input buffer given");
    size_t max = reg ? reg->max_size : HD_ENVELOPE_MAX_SIZE_DEFAULT;
    if (len > max)
        return hd_error_set(err, HD_ETOOBIG, "message is %zu bytes, the limit is %zu", len, max);

    /* JSON_DECODE_ANY: "42" is JSON, just not an event; say that (HD_ETYPE) rather than
     * "malformed". JSON_REJECT_DUPLICATES: {"id":"a","id":"b"} means different things to
     * different parsers (first wins, last wins), a classic way to smuggle a value past a
     * check; refuse it. hd_jsonr_loadb is json_loadb's tree and errors with yajl's lexer
     * (jsonr.h): this parse was a quarter of herald-notifications' CPU. */
    json_error_t jerr;
    json_t *root = hd_jsonr_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return hd_error_set(err, HD_EJSON, "malformed JSON at line %d, column %d: %s", jerr.line,
                            jerr.column, jerr.text);
    /* The parsed tree is ours and dies below, so the envelope may share its data. */
    int rc = envelope_from_json(reg, root, out, 0, err);
    json_decref(root);
    return rc;
}

/* ---- declarative validation -------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *with_article;
} kind_names[] = {
    [HD_JSON_ANY] = {"any", "any value"},          [HD_JSON_STRING] = {"string", "a string"},
    [HD_JSON_INTEGER] = {"integer", "an integer"}, [HD_JSON_NUMBER] = {"number", "a number"},
    [HD_JSON_BOOLEAN] = {"boolean", "a boolean"},  [HD_JSON_OBJECT] = {"object", "an object"},
    [HD_JSON_ARRAY] = {"array", "an array"},
};

const char *hd_json_kind_name(hd_json_kind kind)
{
    if ((unsigned)kind >= sizeof kind_names / sizeof kind_names[0])
        return "unknown";
    return kind_names[kind].name;
}

static int kind_matches(const json_t *v, hd_json_kind kind)
{
    switch (kind) {
    case HD_JSON_ANY:
        return 1;
    case HD_JSON_STRING:
        return json_is_string(v);
    case HD_JSON_INTEGER:
        return json_is_integer(v);
    case HD_JSON_NUMBER:
        return json_is_number(v);
    case HD_JSON_BOOLEAN:
        return json_is_boolean(v);
    case HD_JSON_OBJECT:
        return json_is_object(v);
    case HD_JSON_ARRAY:
        return json_is_array(v);
    }
    return 0;
}

int hd_validate_fields(const json_t *data, const hd_field_spec *specs, hd_error *err)
{
    if (specs == NULL)
        return hd_error_set(err, HD_EINVAL, "no field specs given");
    if (data != NULL && !json_is_object(data))
        return hd_error_set(err, HD_EVALIDATE, "data must be an object, got %s",
                            json_kind_of(data));
    for (const hd_field_spec *f = specs; f->name != NULL; f++) {
        const json_t *v = data ? json_object_get(data, f->name) : NULL;
        if (v == NULL || json_is_null(v)) {
            if (f->required)
                return hd_error_set(err, HD_EVALIDATE, "missing field '%s'", f->name);
            continue;
        }
        if ((unsigned)f->kind >= sizeof kind_names / sizeof kind_names[0])
            return hd_error_set(err, HD_EINVAL, "field '%s' has an unknown kind %d", f->name,
                                (int)f->kind);
        if (!kind_matches(v, f->kind))
            return hd_error_set(err, HD_EVALIDATE, "field '%s' must be %s, got %s", f->name,
                                kind_names[f->kind].with_article, json_kind_of(v));
    }
    return HD_OK;
}
