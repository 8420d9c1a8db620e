/* contract.c — loading event contracts and checking JSON against them (contract.h).
 *
 * Compiled once, into hd_contract_support, which every contract test links.
 *
 * The checker walks a schema and a value side by side. Each keyword is one small test on
 * the value, and a problem is written down rather than returned at once, so that a broken
 * event is reported with everything that is wrong with it, not just the first thing.
 */
#include "contract.h"

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- collecting problems ------------------------------------------------------------------ */

typedef struct problems {
    char *buf; /* may be NULL */
    size_t cap;
    size_t len;
    int count;
} problems;

static void problem(problems *p, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(problems *p, const char *path, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    p->count++;
    if (p->buf == NULL || p->len + 1 >= p->cap)
        return; /* full: the count still goes up */
    int n = snprintf(p->buf + p->len, p->cap - p->len, "%s%s: %s", p->count > 1 ? "; " : "", path,
                     text);
    if (n > 0)
        p->len = p->len + (size_t)n < p->cap ? p->len + (size_t)n : p->cap - 1;
}

/* ---- formats ------------------------------------------------------------------------------ */

/* 8-4-4-4-12 hexadecimal digits: "27c55631-d860-40c0-a8e7-c94b1b805ca3". */
static int is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static int has_blank_or_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return 1;
    return 0;
}

/* local@domain.tld: one '@', something on both sides, a dot inside the domain, no blank.
 * Not RFC 5322 in full (nobody sends quoted local parts to a sign-up form). */
static int is_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL || has_blank_or_control(s))
        return 0;
    const char *dot = strrchr(at + 1, '.');
    return dot != NULL && dot > at + 1 && dot[1] != '\0';
}

/* An absolute URI (RFC 3986): scheme ":" something, the scheme a letter then letters,
 * digits, '+', '-' or '.'; no blank or control character anywhere. */
static int is_uri(const char *s)
{
    if (!isalpha((unsigned char)*s) || has_blank_or_control(s))
        return 0;
    const char *p = s + 1;
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    return *p == ':' && p[1] != '\0';
}

/* RFC 3339: 2026-11-23T04:35:12.386Z, or with an offset (+01:00) instead of Z. */
static int is_date_time(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        char c = s[i];
        if (shape[i] == 'd'   ? !isdigit((unsigned char)c)
            : shape[i] == 'T' ? (c != 'T' && c != 't')
                              : c != shape[i])
            return 0;
    }
    int month = atoi(s + 5), day = atoi(s + 8), hour = atoi(s + 11), min = atoi(s + 14),
        sec = atoi(s + 17);
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return 0;
    const char *p = s + sizeof shape - 1;
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0';
    return (*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
           isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
           isdigit((unsigned char)p[5]) && p[6] == '\0';
}

static const struct {
    const char *name;
    int (*check)(const char *);
} contract_formats[] = {
    {"uuid", is_uuid},
    {"email", is_email},
    {"uri", is_uri},
    {"date-time", is_date_time},
};

static int (*format_checker(const char *name))(const char *)
{
    for (size_t i = 0; name != NULL && i < sizeof contract_formats / sizeof contract_formats[0];
         i++)
        if (strcmp(name, contract_formats[i].name) == 0)
            return contract_formats[i].check;
    return NULL;
}

/* ---- the checker -------------------------------------------------------------------------- */

/* The JSON Schema type name of a value ("integer" for whole numbers). */
static const char *type_of(const json_t *v)
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
    default:
        return "null";
    }
}

static int has_type(const json_t *v, const char *type)
{
    const char *actual = type_of(v);
    /* every integer is a number too */
    return strcmp(actual, type) == 0 ||
           (strcmp(type, "number") == 0 && strcmp(actual, "integer") == 0);
}

/* Characters, not bytes: "Seán" has length 4. */
static size_t utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

static int is_annotation(const char *key)
{
    return key[0] == '$' || strncmp(key, "x-", 2) == 0 || strcmp(key, "title") == 0 ||
           strcmp(key, "description") == 0 || strcmp(key, "examples") == 0;
}

static void check_value(const json_t *schema, const json_t *v, const char *path, problems *p);

/* The object keywords: required, properties, additionalProperties. */
static void check_object(const json_t *schema, const json_t *v, const char *path, problems *p)
{
    const json_t *props = json_object_get(schema, "properties");
    char sub[256];
    size_t i;
    const json_t *name;
    json_array_foreach(json_object_get(schema, "required"), i, name)
    {
        if (json_object_get(v, json_string_value(name)) == NULL) {
            snprintf(sub, sizeof sub, "%s.%s", path, json_string_value(name));
            problem(p, sub, "required member is missing");
        }
    }
    const char *key;
    const json_t *member;
    json_object_foreach((json_t *)v, key, member)
    {
        snprintf(sub, sizeof sub, "%s.%s", path, key);
        const json_t *rule = json_object_get(props, key);
        if (rule != NULL)
            check_value(rule, member, sub, p);
        else if (json_is_false(json_object_get(schema, "additionalProperties")))
            problem(p, sub,
                    "member not declared by the contract"
                    " (additionalProperties is false)");
    }
}

static void check_value(const json_t *schema, const json_t *v, const char *path, problems *p)
{
    const json_t *rule;
    const char *type = json_string_value(json_object_get(schema, "type"));
    if (type != NULL && !has_type(v, type)) {
        problem(p, path, "must be of type %s, is %s", type, type_of(v));
        return; /* the other keywords would only repeat it */
    }
    if ((rule = json_object_get(schema, "const")) != NULL &&
        !json_equal((json_t *)rule, (json_t *)v)) {
        char *want = json_dumps(rule, JSON_ENCODE_ANY);
        char *got = json_dumps(v, JSON_ENCODE_ANY);
        problem(p, path, "must be %s, is %s", want ? want : "?", got ? got : "?");
        free(want);
        free(got);
    }
    if ((rule = json_object_get(schema, "enum")) != NULL) {
        size_t i, found = 0;
        const json_t *allowed;
        json_array_foreach(rule, i, allowed)
        {
            found |= json_equal((json_t *)allowed, (json_t *)v);
        }
        if (!found) {
            char *list = json_dumps(rule, 0);
            problem(p, path, "must be one of %s", list ? list : "?");
            free(list);
        }
    }
    const char *s = json_string_value(v);
    if (s != NULL && (rule = json_object_get(schema, "minLength")) != NULL &&
        utf8_length(s) < (size_t)json_integer_value(rule))
        problem(p, path, "must be at least %lld characters long",
                (long long)json_integer_value(rule));
    if (s != NULL && (rule = json_object_get(schema, "format")) != NULL) {
        int (*valid)(const char *) = format_checker(json_string_value(rule));
        if (valid == NULL || !valid(s))
            problem(p, path, "is not a valid %s: '%.80s'", json_string_value(rule), s);
    }
    if (json_is_number(v) && (rule = json_object_get(schema, "minimum")) != NULL &&
        json_number_value(v) < json_number_value(rule))
        problem(p, path, "must be at least %g, is %g", json_number_value(rule),
                json_number_value(v));
    if (json_is_object(v))
        check_object(schema, v, path, p);
}

/* ---- checking a schema before using it ---------------------------------------------------- */

static void check_schema(const json_t *schema, const char *path, problems *p)
{
    static const char *const types[] = {"object", "array",   "string", "integer",
                                        "number", "boolean", "null"};
    if (!json_is_object(schema)) {
        problem(p, path, "a schema must be an object");
        return;
    }
    const json_t *props = json_object_get(schema, "properties");
    const char *key;
    const json_t *rule;
    char sub[256];
    json_object_foreach((json_t *)schema, key, rule)
    {
        int ok = 1;
        if (strcmp(key, "type") == 0) {
            ok = 0;
            for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
                ok |= json_is_string(rule) && strcmp(json_string_value(rule), types[i]) == 0;
        } else if (strcmp(key, "required") == 0) {
            size_t i;
            const json_t *name;
            ok = json_is_array(rule);
            json_array_foreach(rule, i, name)
            {
                if (json_object_get(props, json_string_value(name)) == NULL)
                    problem(p, path, "required member '%s' is not in properties",
                            json_string_value(name) ? json_string_value(name) : "?");
            }
        } else if (strcmp(key, "properties") == 0) {
            const char *member;
            const json_t *sub_schema;
            ok = json_is_object(rule);
            json_object_foreach((json_t *)rule, member, sub_schema)
            {
                snprintf(sub, sizeof sub, "%s.%s", path, member);
                check_schema(sub_schema, sub, p);
            }
        } else if (strcmp(key, "additionalProperties") == 0) {
            ok = json_is_boolean(rule);
        } else if (strcmp(key, "enum") == 0) {
            ok = json_is_array(rule) && json_array_size(rule) > 0;
        } else if (strcmp(key, "minLength") == 0) {
            ok = json_is_integer(rule) && json_integer_value(rule) >= 0;
        } else if (strcmp(key, "minimum") == 0) {
            ok = json_is_number(rule);
        } else if (strcmp(key, "format") == 0) {
            ok = format_checker(json_string_value(rule)) != NULL;
        } else if (strcmp(key, "const") != 0 && !is_annotation(key)) {
            problem(p, path, "keyword '%s' is not supported by this checker", key);
            continue;
        }
        if (!ok)
            problem(p, path, "keyword '%s' has a value this checker does not accept", key);
    }
}

int contract_validate(const json_t *schema, const json_t *value, char *why, size_t why_len)
{
    problems p = {why, why_len, 0, 0};
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    /* A schema this checker cannot fully enforce is refused, never half-applied. */
    check_schema(schema, "schema", &p);
    if (p.count == 0)
        check_value(schema, value, "$", &p);
    return p.count;
}

/* ---- loading ------------------------------------------------------------------------------ */

static int visible(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* The entries of dir, sorted, without the hidden ones, into *names (free with
 * free_names); the count, or -1 when dir cannot be read. */
static int list_dir(const char *dir, struct dirent ***names)
{
    return scandir(dir, names, visible, alphasort);
}

static void free_names(struct dirent **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* dir/name into out (size bytes); 0, or -1 with why when it does not fit. */
static int join_path(char *out, size_t size, const char *dir, const char *name, char *why,
                     size_t why_len)
{
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) {
        snprintf(why, why_len, "path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

static json_t *read_json(const char *path, char *why, size_t why_len)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        snprintf(why, why_len, "%s: line %d: %s", path, jerr.line, jerr.text);
    return j;
}

static int load_examples(event_contract *c, const char *dir, char *why, size_t why_len)
{
    struct dirent **names;
    int n = list_dir(dir, &names);
    if (n < 0)
        return 0; /* no examples folder: the test that wants examples says so */
    int rc = 0;
    c->examples = calloc((size_t)n, sizeof *c->examples);
    for (int i = 0; i < n && rc == 0 && c->examples != NULL; i++) {
        const char *name = names[i]->d_name;
        size_t len = strlen(name);
        if (len < 5 || strcmp(name + len - 5, ".json") != 0)
            continue;
        char path[4096];
        json_t *j = NULL;
        if (join_path(path, sizeof path, dir, name, why, why_len) < 0 ||
            (j = read_json(path, why, why_len)) == NULL) {
            rc = -1;
            break;
        }
        c->examples[c->n_examples].name = strdup(name);
        c->examples[c->n_examples++].json = j;
    }
    free_names(names, n);
    return rc;
}

/* The folder <root>/<type>/v<version>: its schema, checked, and its examples. */
static int load_one(event_contract *c, const char *dir, char *why, size_t why_len)
{
    char path[4096];
    if (join_path(path, sizeof path, dir, "schema.json", why, why_len) < 0 ||
        (c->schema = read_json(path, why, why_len)) == NULL)
        return -1;
    problems p = {why, why_len, 0, 0};
    check_schema(c->schema, path, &p);
    const json_t *props = json_object_get(c->schema, "properties");
    const char *type = json_string_value(json_object_get(json_object_get(props, "type"), "const"));
    json_t *version = json_object_get(json_object_get(props, "schemaversion"), "const");
    if (type == NULL || strcmp(type, c->type) != 0)
        problem(&p, path, "properties.type.const must be \"%s\", the folder's name", c->type);
    if (!json_is_integer(version) || json_integer_value(version) != c->version)
        problem(&p, path, "properties.schemaversion.const must be %d, the folder's name",
                c->version);
    if (!json_is_object(json_object_get(props, "data")))
        problem(&p, path, "properties.data must describe the payload");
    if (p.count > 0)
        return -1;
    if (join_path(path, sizeof path, dir, "examples", why, why_len) < 0)
        return -1;
    return load_examples(c, path, why, why_len);
}

static int compare_contracts(const void *a, const void *b)
{
    const event_contract *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    return c != 0 ? c : x->version - y->version;
}

int contract_set_load(const char *root, contract_set *set, char *why, size_t why_len)
{
    memset(set, 0, sizeof *set);
    struct dirent **types;
    int n_types = list_dir(root, &types);
    if (n_types < 0) {
        snprintf(why, why_len, "%s: cannot read the folder", root);
        return -1;
    }
    int rc = 0;
    for (int t = 0; t < n_types && rc == 0; t++) {
        char type_dir[4096];
        if (join_path(type_dir, sizeof type_dir, root, types[t]->d_name, why, why_len) < 0) {
            rc = -1;
            break;
        }
        struct dirent **versions;
        int n_versions = list_dir(type_dir, &versions);
        if (n_versions < 0) {
            snprintf(why, why_len, "%s: cannot read the folder", type_dir);
            rc = -1;
            break;
        }
        for (int v = 0; v < n_versions && rc == 0; v++) {
            const char *vname = versions[v]->d_name;
            char *end;
            long number = vname[0] == 'v' ? strtol(vname + 1, &end, 10) : 0;
            if (number < 1 || number > 1000000 || *end != '\0') {
                snprintf(why, why_len, "%s/%s: expected a folder v<N> (v1, v2, ...)", type_dir,
                         vname);
                rc = -1;
                break;
            }
            event_contract *grown = realloc(set->items, (set->count + 1) * sizeof *grown);
            if (grown == NULL) {
                snprintf(why, why_len, "out of memory");
                rc = -1;
                break;
            }
            set->items = grown;
            event_contract *c = &set->items[set->count++];
            memset(c, 0, sizeof *c);
            c->type = strdup(types[t]->d_name);
            c->version = (int)number;
            char dir[4096];
            rc = join_path(dir, sizeof dir, type_dir, vname, why, why_len);
            if (rc == 0)
                rc = load_one(c, dir, why, why_len);
        }
        free_names(versions, n_versions);
    }
    free_names(types, n_types);
    if (rc == 0 && set->count > 0)
        qsort(set->items, set->count, sizeof *set->items, compare_contracts);
    return rc;
}

void contract_set_release(contract_set *set)
{
    for (size_t i = 0; i < set->count; i++) {
        event_contract *c = &set->items[i];
        for (size_t e = 0; e < c->n_examples; e++) {
            free(c->examples[e].name);
            json_decref(c->examples[e].json);
        }
        free(c->examples);
        json_decref(c->schema);
        free(c->type);
    }
    free(set->items);
    memset(set, 0, sizeof *set);
}

/* ---- lookups ------------------------------------------------------------------------------ */

const event_contract *contract_find(const contract_set *set, const char *type, int version)
{
    for (size_t i = 0; type != NULL && i < set->count; i++)
        if (strcmp(set->items[i].type, type) == 0 && set->items[i].version == version)
            return &set->items[i];
    return NULL;
}

int contract_check_envelope(const contract_set *set, const json_t *envelope, char *why,
                            size_t why_len)
{
    const char *type = json_string_value(json_object_get(envelope, "type"));
    int version = (int)json_integer_value(json_object_get(envelope, "schemaversion"));
    const event_contract *c = contract_find(set, type, version);
    if (c == NULL) {
        snprintf(why, why_len, "no contract for %s v%d: add tests/contract/events/%s/v%d/",
                 type ? type : "(no type)", version, type ? type : "<type>", version);
        return 1;
    }
    return contract_validate(c->schema, envelope, why, why_len);
}

const json_t *contract_data_schema(const event_contract *c)
{
    return json_object_get(json_object_get(c->schema, "properties"), "data");
}

int contract_data_declares(const event_contract *c, const char *name)
{
    return json_object_get(json_object_get(contract_data_schema(c), "properties"), name) != NULL;
}

int contract_data_requires(const event_contract *c, const char *name)
{
    size_t i;
    const json_t *required;
    json_array_foreach(json_object_get(contract_data_schema(c), "required"), i, required)
    {
        if (json_is_string(required) && strcmp(json_string_value(required), name) == 0)
            return 1;
    }
    return 0;
}

/* ---- what every contract test shares ------------------------------------------------------ */

contract_set contracts;

int contract_suite_setup(void **state)
{
    (void)state;
    char why[1024];
    if (contract_set_load(CONTRACT_EVENTS_DIR, &contracts, why, sizeof why) < 0) {
        fprintf(stderr, "cannot load the contracts: %s\n", why);
        return -1;
    }
    return 0;
}

int contract_suite_teardown(void **state)
{
    (void)state;
    contract_set_release(&contracts);
    return 0;
}

int contract_check_examples(const contract_set *set, const char *prefix, const hd_registry *reg,
                            const char *reg_name, size_t *checked)
{
    int broken = 0;
    *checked = 0;
    for (size_t i = 0; i < set->count; i++) {
        const event_contract *c = &set->items[i];
        if (strncmp(c->type, prefix, strlen(prefix)) != 0)
            continue;
        if (c->n_examples == 0) {
            fprintf(stderr, "%s v%d has no example: add one under examples/\n", c->type,
                    c->version);
            broken++;
        }
        for (size_t e = 0; e < c->n_examples; e++, (*checked)++) {
            const contract_example *ex = &c->examples[e];
            char why[2048];
            /* Against the schema of its own folder, whatever its "type" says. */
            if (contract_validate(c->schema, ex->json, why, sizeof why) > 0) {
                fprintf(stderr, "%s/v%d/examples/%s does not validate: %s\n", c->type, c->version,
                        ex->name, why);
                broken++;
                continue;
            }
            /* The producer's validators (C field lists) accept it too: they and the JSON
             * schema describe the same thing. */
            char *text = json_dumps(ex->json, JSON_COMPACT);
            hd_envelope *env = NULL;
            hd_error err;
            if (text == NULL || hd_envelope_decode(reg, text, strlen(text), &env, &err) != HD_OK) {
                fprintf(stderr, "%s/v%d/examples/%s: %s refuses it: %s\n", c->type, c->version,
                        ex->name, reg_name, text ? err.text : "cannot encode the example");
                broken++;
            }
            hd_envelope_free(env);
            free(text);
        }
    }
    return broken;
}
