/* Unit tests for herald/envelope.h: CloudEvents encode/decode, the registry, validators. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/envelope.h"

/* ---- fixtures ---------------------------------------------------------------------------- */

static const hd_field_spec user_registered_v1[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {"verification_url", HD_JSON_STRING, 0},
    {NULL, 0, 0},
};

/* The validator a consumer of users.user_registered v1 would write: the declared fields,
 * then what a type cannot say. ctx counts the calls, to prove it is passed through. */
static int validate_user_registered_v1(const json_t *data, hd_error *err, void *ctx)
{
    if (ctx)
        (*(int *)ctx)++;
    int rc = hd_validate_fields(data, user_registered_v1, err);
    if (rc < 0)
        return rc;
    if (strchr(json_string_value(json_object_get(data, "email")), '@') == NULL)
        return hd_error_set(err, HD_EVALIDATE, "field 'email' is not an email address");
    return 0;
}

static hd_registry *new_registry(int *calls)
{
    hd_registry *reg = hd_registry_new();
    assert_non_null(reg);
    assert_hd(HD_OK,
              hd_registry_add(reg, "users.user_registered", 1, validate_user_registered_v1, calls));
    assert_hd(HD_OK, hd_registry_add(reg, "users.user_registered", 3, NULL, NULL));
    assert_hd(HD_OK, hd_registry_add(reg, "users.user_deleted", 1, NULL, NULL));
    return reg;
}

/* A complete, valid event as text; tests break one thing at a time with replace(). */
static const char valid_event[] =
    "{\"specversion\":\"1.0\",\"id\":\"0b3c2f1e-8a8e-4d55-9b6e-0c1d2e3f4a5b\","
    "\"source\":\"/users\",\"type\":\"users.user_registered\",\"schemaversion\":1,"
    "\"time\":\"2026-11-23T04:05:06.789Z\",\"datacontenttype\":\"application/json\","
    "\"correlationid\":\"corr-1\",\"causationid\":\"cause-1\","
    "\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}}";

/* valid_event with the first `from` replaced by `to`; a new string. */
static char *replace(const char *from, const char *to)
{
    const char *at = strstr(valid_event, from);
    assert_non_null(at);
    size_t head = (size_t)(at - valid_event), flen = strlen(from), tlen = strlen(to);
    char *s = malloc(sizeof valid_event - flen + tlen);
    assert_non_null(s);
    memcpy(s, valid_event, head);
    memcpy(s + head, to, tlen);
    strcpy(s + head + tlen, at + flen);
    return s;
}

/* Decode text and expect `code` with `culprit` in the error text. */
static void expect_rejection(const hd_registry *reg, const char *text, int code,
                             const char *culprit)
{
    hd_envelope *env = (hd_envelope *)0x1;
    hd_error err;
    hd_error_clear(&err);
    assert_hd_err(code, hd_envelope_decode(reg, text, strlen(text), &env, &err), &err);
    assert_null(env);
    assert_int_equal(err.code, code);
    if (strstr(err.text, culprit) == NULL)
        fail_msg("error text \"%s\" does not name \"%s\"", err.text, culprit);
}

static void expect_rejection_of(const hd_registry *reg, const char *from, const char *to, int code,
                                const char *culprit)
{
    char *text = replace(from, to);
    expect_rejection(reg, text, code, culprit);
    free(text);
}

/* ---- building and encoding --------------------------------------------------------------- */

static void new_fills_id_time_and_content_type(void **state)
{
    (void)state;
    hd_envelope *env =
        hd_envelope_new("users.user_registered", 1, "/users", json_pack("{s:s}", "a", "b"));
    assert_non_null(env);
    assert_true(hd_uuid_valid(hd_envelope_id(env)));
    assert_int_equal(hd_envelope_id(env)[14], '7'); /* time-ordered (clock.h) */
    assert_hd(HD_OK, hd_time_parse(hd_envelope_time(env), NULL));
    assert_string_equal(hd_envelope_type(env), "users.user_registered");
    assert_string_equal(hd_envelope_source(env), "/users");
    assert_int_equal(hd_envelope_version(env), 1);
    assert_string_equal(hd_envelope_datacontenttype(env), "application/json");
    assert_string_equal(json_string_value(json_object_get(hd_envelope_data(env), "a")), "b");
    assert_null(hd_envelope_correlation_id(env));
    assert_null(hd_envelope_causation_id(env));
    assert_null(hd_envelope_traceparent(env));
    hd_envelope_free(env);

    hd_envelope *bare = hd_envelope_new("t", 1, "/s", NULL);
    assert_non_null(bare);
    assert_null(hd_envelope_data(bare));
    assert_null(hd_envelope_datacontenttype(bare));
    hd_envelope_free(bare);
    hd_envelope_free(NULL);
}

static void new_rejects_bad_arguments_and_frees_data(void **state)
{
    (void)state;
    /* Each call steals its data even when it fails: valgrind/ASan would report a leak. */
    assert_null(hd_envelope_new(NULL, 1, "/s", json_object()));
    assert_null(hd_envelope_new("", 1, "/s", json_object()));
    assert_null(hd_envelope_new("t", 0, "/s", json_object()));
    assert_null(hd_envelope_new("t", 1, "", json_object()));
    assert_null(hd_envelope_new("t", 1, NULL, json_object()));
    assert_null(hd_envelope_new("t", 1, "/s", json_array()));
}

static void encode_is_compact_sorted_and_deterministic(void **state)
{
    (void)state;
    hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users",
                                       json_pack("{s:s, s:s}", "zeta", "z", "alpha", "a"));
    assert_non_null(env);
    assert_hd(HD_OK, hd_envelope_set_id(env, "id-1"));
    assert_hd(HD_OK, hd_envelope_set_time(env, "2026-11-23T04:05:06.789Z"));
    assert_hd(HD_OK, hd_envelope_set_correlation_id(env, "corr-1"));
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    assert_hd(HD_OK, hd_envelope_encode(env, &a, &alen, NULL));
    assert_hd(HD_OK, hd_envelope_encode(env, &b, &blen, NULL));
    assert_string_equal(a, b);
    assert_int_equal(alen, strlen(a));
    assert_int_equal(alen, blen);
    assert_string_equal(a,
                        "{\"correlationid\":\"corr-1\",\"data\":{\"alpha\":\"a\",\"zeta\":\"z\"},"
                        "\"datacontenttype\":\"application/json\",\"id\":\"id-1\","
                        "\"schemaversion\":1,\"source\":\"/users\",\"specversion\":\"1.0\","
                        "\"time\":\"2026-11-23T04:05:06.789Z\","
                        "\"type\":\"users.user_registered\"}");
    free(a);
    free(b);
    hd_envelope_free(env);
}

/* The encoder sorts an object's keys only when they are out of order: the bytes must be
 * those of a sorted dump whatever the order the members were added in, at every depth. */
static void encode_sorts_only_what_is_out_of_order(void **state)
{
    (void)state;
    const char *datas[] = {
        "{}",
        "{\"a\":1}",
        "{\"a\":1,\"b\":{\"x\":1,\"y\":[{\"p\":1,\"q\":2}]}}",
        "{\"b\":1,\"a\":2}",
        "{\"a\":{\"y\":1,\"x\":2}}",
        "{\"a\":[{\"q\":1,\"p\":2}],\"b\":1}",
        "{\"ab\":1,\"a\":2}",
        "{\"c\":[[{\"b\":1,\"a\":2}]]}",
    };
    for (size_t i = 0; i < sizeof datas / sizeof datas[0]; i++) {
        hd_envelope *env = hd_envelope_new("t.happened", 1, "test", json_loads(datas[i], 0, NULL));
        assert_non_null(env);
        for (int extra = 0; extra < 2; extra++) {
            if (extra)
                assert_int_equal(hd_envelope_set_attribute(env, "aaext", json_string("v")), 0);
            char *text = NULL;
            assert_int_equal(hd_envelope_encode(env, &text, NULL, NULL), 0);
            json_t *obj = hd_envelope_to_json(env);
            char *sorted = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
            assert_string_equal(text, sorted);
            free(sorted);
            free(text);
            json_decref(obj);
        }
        hd_envelope_free(env);
    }
}

/* A random JSON value for encode_writes_what_jansson_writes: every kind, keys in any order
 * (with common prefixes, empty, non-ASCII), strings that need every escape or hold a NUL,
 * integers at their limits, reals of any size, objects past the encoder's 16 members on the
 * stack. */
static unsigned rnd_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 8) & 0xffffff;
}

static json_t *random_string(unsigned *seed, int nul)
{
    static const char *const parts[] = {"a",    "ab",   "",  "\"", "\\", "/", "\n", "\t", "\x01",
                                        "\x1f", "\x7f", "é", "€",  "😀",  "z", "Z",  " "};
    char b[64];
    size_t n = 0, k = rnd_next(seed) % 6;
    for (size_t i = 0; i < k; i++) {
        const char *p = parts[rnd_next(seed) % (sizeof parts / sizeof parts[0])];
        size_t l = strlen(p);
        memcpy(b + n, p, l);
        n += l;
    }
    if (nul && rnd_next(seed) % 8 == 0 && n < sizeof b - 2)
        b[n++] = '\0'; /* a NUL inside a value: jansson writes \u0000 */
    return json_stringn(b, n);
}

static json_t *random_value(unsigned *seed, int depth)
{
    switch (rnd_next(seed) % (depth > 3 ? 6 : 8)) {
    case 0:
        return random_string(seed, 1);
    case 1: {
        static const json_int_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, 1000000007};
        return json_integer(ints[rnd_next(seed) % 7]);
    }
    case 2: {
        static const double reals[] = {0.5, -0.0, 1e300, 1.0, 3.14159, 1e-7, 123456789.125};
        return json_real(reals[rnd_next(seed) % 7]);
    }
    case 3:
        return json_true();
    case 4:
        return json_false();
    case 5:
        return json_null();
    case 6: {
        json_t *a = json_array();
        for (unsigned i = rnd_next(seed) % 4; i > 0; i--)
            json_array_append_new(a, random_value(seed, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        unsigned members = rnd_next(seed) % 5 == 0 ? 20 + rnd_next(seed) % 20 : rnd_next(seed) % 5;
        for (unsigned i = 0; i < members; i++) {
            json_t *k = random_string(seed, 0);
            json_object_setn_new(o, json_string_value(k), json_string_length(k),
                                 random_value(seed, depth + 1));
            json_decref(k);
        }
        return o;
    }
    }
}

/* The encoder writes the envelope itself (jsonw.h) instead of building a jansson object and
 * dumping it: its bytes must be those jansson writes for that object, sorted and compact,
 * for any data, any extension attributes, with and without encode_with's attribute. */
static void encode_writes_what_jansson_writes(void **state)
{
    (void)state;
    unsigned seed = 20261205;
    for (int round = 0; round < 2000; round++) {
        json_t *data = json_object();
        unsigned members = rnd_next(&seed) % 8;
        for (unsigned i = 0; i < members; i++) {
            json_t *k = random_string(&seed, 0);
            json_object_setn_new(data, json_string_value(k), json_string_length(k),
                                 random_value(&seed, 1));
            json_decref(k);
        }
        hd_envelope *env = hd_envelope_new("t.happened", 1 + round % 3, "/test", data);
        assert_non_null(env);
        if (round % 2)
            assert_hd(HD_OK, hd_envelope_set_correlation_id(env, "c\u00e9-\"1\""));
        if (round % 3 == 0)
            assert_hd(HD_OK, hd_envelope_set_traceparent(
                                 env, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        /* Extension attributes, up to 40: past the encoder's 32 members on the stack. */
        unsigned extras = round % 5 == 0 ? 40 : rnd_next(&seed) % 3;
        for (unsigned i = 0; i < extras; i++) {
            char name[16];
            snprintf(name, sizeof name, "x%u%c", rnd_next(&seed) % 50, 'a' + (char)(i % 26));
            json_t *v = i % 3 == 0   ? json_integer((json_int_t)i - 7)
                        : i % 3 == 1 ? json_boolean(i & 4)
                                     : json_string("ext\tvalue");
            assert_hd(HD_OK, hd_envelope_set_attribute(env, name, v));
        }
        for (int with = 0; with < 2; with++) {
            const char *name = with ? (round % 4 ? "previousid" : "x1a") : NULL;
            char *text = NULL;
            size_t len = 0;
            assert_hd(HD_OK, hd_envelope_encode_with(env, name, name ? "prev-\x01" : NULL, &text,
                                                     &len, NULL));
            json_t *obj = hd_envelope_to_json(env);
            if (name != NULL)
                json_object_set_new(obj, name, json_string("prev-\x01"));
            size_t want_len = json_dumpb(obj, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS);
            char *want = malloc(want_len + 1);
            assert_non_null(want);
            json_dumpb(obj, want, want_len, JSON_COMPACT | JSON_SORT_KEYS);
            want[want_len] = '\0';
            if (len != want_len || memcmp(text, want, len) != 0) {
                size_t at = 0;
                while (at < len && at < want_len && text[at] == want[at])
                    at++;
                size_t from = at > 30 ? at - 30 : 0;
                fail_msg("round %d: the bytes differ at %zu of %zu / %zu:\n  encode  ...%.60s\n  "
                         "jansson ...%.60s",
                         round, at, len, want_len, text + from, want + from);
            }
            free(want);
            free(text);
            json_decref(obj);
        }
        hd_envelope_free(env);
    }
}

/* What jansson refused, the encoder refuses too, with a better reason than "out of memory":
 * an attribute that is not UTF-8; and data nested past the depth jansson's parser accepts. */
static void encode_refuses_what_it_cannot_write(void **state)
{
    (void)state;
    hd_envelope *env = hd_envelope_new("t.happened", 1, "/test", json_object());
    assert_non_null(env);
    hd_error err;
    char *text = NULL;
    assert_hd(HD_OK, hd_envelope_set_causation_id(env, "bad\xff"));
    assert_hd(HD_EINVAL, hd_envelope_encode(env, &text, NULL, &err));
    assert_null(text);
    assert_non_null(strstr(err.text, "causationid"));
    assert_hd(HD_OK, hd_envelope_set_causation_id(env, "good"));
    assert_hd(HD_EINVAL, hd_envelope_encode_with(env, "previousid", "\xc3", &text, NULL, &err));
    assert_null(text);
    hd_envelope_free(env);

    json_t *deep = json_object(), *at = deep;
    for (int i = 0; i < 1100; i++) { /* {"d":[{"d":[...]}]}: two levels a turn, 2,200 deep */
        json_t *arr = json_array(), *obj = json_object();
        json_array_append_new(arr, obj);
        json_object_set_new(at, "d", arr);
        at = obj;
    }
    env = hd_envelope_new("t.happened", 1, "/test", deep);
    assert_non_null(env);
    assert_hd(HD_EINVAL, hd_envelope_encode(env, &text, NULL, &err));
    assert_null(text);
    assert_non_null(strstr(err.text, "deeper"));
    hd_envelope_free(env);
}

/* encode_with writes what encode writes for a copy given the attribute. */
static void encode_with_adds_one_attribute(void **state)
{
    (void)state;
    hd_envelope *env =
        hd_envelope_new("t.happened", 1, "test", json_pack("{s:s, s:i}", "z", "last", "a", 1));
    assert_non_null(env);
    char *plain = NULL, *with = NULL, *none = NULL;
    assert_int_equal(hd_envelope_encode_with(env, NULL, NULL, &none, NULL, NULL), 0);
    assert_int_equal(hd_envelope_encode(env, &plain, NULL, NULL), 0);
    assert_string_equal(none, plain);
    size_t len = 0;
    assert_int_equal(hd_envelope_encode_with(env, "previousid", "e-1", &with, &len, NULL), 0);
    assert_int_equal(len, strlen(with));
    assert_int_equal(hd_envelope_set_attribute(env, "previousid", json_string("e-1")), 0);
    char *copy = NULL;
    assert_int_equal(hd_envelope_encode(env, &copy, NULL, NULL), 0);
    assert_string_equal(with, copy);
    /* Replacing an attribute of that name. */
    char *again = NULL;
    assert_int_equal(hd_envelope_encode_with(env, "previousid", "e-2", &again, NULL, NULL), 0);
    assert_non_null(strstr(again, "\"previousid\":\"e-2\""));
    assert_null(strstr(again, "e-1"));
    hd_error err;
    char *bad = NULL;
    assert_int_equal(hd_envelope_encode_with(env, "previousid", NULL, &bad, NULL, &err), HD_EINVAL);
    assert_null(bad);
    free(plain);
    free(with);
    free(none);
    free(copy);
    free(again);
    hd_envelope_free(env);
}

static void setters_validate_and_remove(void **state)
{
    (void)state;
    hd_envelope *env = hd_envelope_new("t", 1, "/s", NULL);
    assert_non_null(env);
    assert_hd(HD_EINVAL, hd_envelope_set_id(env, ""));
    assert_hd(HD_EINVAL, hd_envelope_set_id(env, NULL));
    assert_hd(HD_EINVAL, hd_envelope_set_time(env, "yesterday"));
    assert_hd(HD_EINVAL, hd_envelope_set_correlation_id(env, ""));
    assert_hd(HD_EINVAL, hd_envelope_set_traceparent(env, "00-abc"));
    assert_hd(HD_EINVAL, hd_envelope_set_traceparent(
                             env, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    assert_hd(HD_OK, hd_envelope_set_traceparent(
                         env, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_string_equal(hd_envelope_traceparent(env),
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_hd(HD_OK, hd_envelope_set_traceparent(env, NULL));
    assert_null(hd_envelope_traceparent(env));
    assert_hd(HD_OK, hd_envelope_set_time(env, NULL));
    assert_null(hd_envelope_time(env));
    /* other attributes: valid names, scalar values, not one of the dedicated ones */
    assert_hd(HD_EINVAL, hd_envelope_set_attribute(env, "Subject", json_string("x")));
    assert_hd(HD_EINVAL, hd_envelope_set_attribute(env, "id", json_string("x")));
    assert_hd(HD_EINVAL, hd_envelope_set_attribute(env, "subject", json_object()));
    assert_hd(HD_OK, hd_envelope_set_attribute(env, "subject", json_string("user/42")));
    assert_string_equal(json_string_value(hd_envelope_attribute(env, "subject")), "user/42");
    assert_hd(HD_OK, hd_envelope_set_attribute(env, "subject", NULL));
    assert_null(hd_envelope_attribute(env, "subject"));
    hd_envelope_free(env);
}

static void caused_by_chains_correlation_and_causation(void **state)
{
    (void)state;
    hd_envelope *first = hd_envelope_new("a", 1, "/s", NULL);
    hd_envelope *second = hd_envelope_new("b", 1, "/s", NULL);
    hd_envelope *third = hd_envelope_new("c", 1, "/s", NULL);
    assert_non_null(first);
    assert_non_null(second);
    assert_non_null(third);
    assert_hd(HD_OK, hd_envelope_caused_by(second, first));
    assert_string_equal(hd_envelope_causation_id(second), hd_envelope_id(first));
    assert_string_equal(hd_envelope_correlation_id(second), hd_envelope_id(first));
    assert_hd(HD_OK, hd_envelope_caused_by(third, second));
    assert_string_equal(hd_envelope_causation_id(third), hd_envelope_id(second));
    assert_string_equal(hd_envelope_correlation_id(third), hd_envelope_id(first));
    hd_envelope_free(first);
    hd_envelope_free(second);
    hd_envelope_free(third);
}

/* ---- decoding ---------------------------------------------------------------------------- */

static void round_trip_keeps_every_attribute(void **state)
{
    (void)state;
    int calls = 0;
    hd_registry *reg = new_registry(&calls);
    hd_envelope *env = hd_envelope_new("users.user_registered", 1, "/users",
                                       json_pack("{s:s, s:s, s:{s:i}}", "user_id", "42", "email",
                                                 "ada@example.com", "nested", "n", 7));
    assert_non_null(env);
    assert_hd(HD_OK, hd_envelope_set_correlation_id(env, "corr-7"));
    assert_hd(HD_OK, hd_envelope_set_causation_id(env, "cause-7"));
    assert_hd(HD_OK, hd_envelope_set_traceparent(
                         env, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_hd(HD_OK, hd_envelope_set_attribute(env, "subject", json_string("user/42")));
    assert_hd(HD_OK, hd_envelope_set_attribute(env, "partitionkey", json_integer(9)));

    char *wire = NULL;
    size_t len = 0;
    assert_hd(HD_OK, hd_envelope_encode(env, &wire, &len, NULL));
    hd_envelope *back = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_envelope_decode(reg, wire, len, &back, &err), &err);
    assert_non_null(back);
    assert_int_equal(calls, 1);

    assert_string_equal(hd_envelope_id(back), hd_envelope_id(env));
    assert_string_equal(hd_envelope_type(back), hd_envelope_type(env));
    assert_string_equal(hd_envelope_source(back), hd_envelope_source(env));
    assert_int_equal(hd_envelope_version(back), 1);
    assert_string_equal(hd_envelope_time(back), hd_envelope_time(env));
    assert_string_equal(hd_envelope_datacontenttype(back), "application/json");
    assert_string_equal(hd_envelope_correlation_id(back), "corr-7");
    assert_string_equal(hd_envelope_causation_id(back), "cause-7");
    assert_string_equal(hd_envelope_traceparent(back), hd_envelope_traceparent(env));
    assert_string_equal(json_string_value(hd_envelope_attribute(back, "subject")), "user/42");
    assert_int_equal(json_integer_value(hd_envelope_attribute(back, "partitionkey")), 9);
    assert_true(json_equal(hd_envelope_data(back), hd_envelope_data(env)));

    char *again = NULL;
    assert_hd(HD_OK, hd_envelope_encode(back, &again, NULL, NULL));
    assert_string_equal(again, wire);

    free(wire);
    free(again);
    hd_envelope_free(back);
    hd_envelope_free(env);
    hd_registry_free(reg);
}

static void decode_without_registry_checks_structure_only(void **state)
{
    (void)state;
    char *text = replace("users.user_registered", "somebody.else_happened");
    hd_envelope *env = NULL;
    assert_hd(HD_OK, hd_envelope_decode(NULL, text, strlen(text), &env, NULL));
    assert_string_equal(hd_envelope_type(env), "somebody.else_happened");
    hd_envelope_free(env);
    free(text);
    expect_rejection(NULL, "[]", HD_ETYPE, "object");
}

static void to_json_and_from_json_round_trip_without_sharing(void **state)
{
    (void)state;
    hd_envelope *env = NULL;
    assert_hd(HD_OK, hd_envelope_decode(NULL, valid_event, strlen(valid_event), &env, NULL));
    json_t *obj = hd_envelope_to_json(env);
    assert_non_null(obj);
    hd_envelope *copy = NULL;
    assert_hd(HD_OK, hd_envelope_from_json(NULL, obj, &copy, NULL));
    /* Changing the JSON afterwards must not reach either envelope. */
    json_object_set_new(json_object_get(obj, "data"), "email", json_string("changed"));
    assert_string_equal(json_string_value(json_object_get(hd_envelope_data(copy), "email")),
                        "ada@example.com");
    assert_string_equal(json_string_value(json_object_get(hd_envelope_data(env), "email")),
                        "ada@example.com");
    assert_string_equal(hd_envelope_correlation_id(copy), "corr-1");
    json_decref(obj);
    hd_envelope_free(copy);
    hd_envelope_free(env);
}

static void null_optional_attributes_read_as_absent(void **state)
{
    (void)state;
    char *text = replace("\"time\":\"2026-11-23T04:05:06.789Z\"", "\"time\":null,\"subject\":null");
    hd_envelope *env = NULL;
    assert_hd(HD_OK, hd_envelope_decode(NULL, text, strlen(text), &env, NULL));
    assert_null(hd_envelope_time(env));
    assert_null(hd_envelope_attribute(env, "subject"));
    hd_envelope_free(env);
    free(text);
}

static void rejects_oversized_input_before_parsing(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    assert_int_equal(hd_registry_max_size(reg), HD_ENVELOPE_MAX_SIZE_DEFAULT);
    hd_registry_set_max_size(reg, 64);
    /* Not even JSON: a size check done after parsing would report HD_EJSON instead. */
    char big[65];
    memset(big, '{', sizeof big);
    hd_envelope *env = NULL;
    hd_error err;
    assert_hd(HD_ETOOBIG, hd_envelope_decode(reg, big, sizeof big, &env, &err));
    assert_non_null(strstr(err.text, "65 bytes"));
    assert_non_null(strstr(err.text, "64"));
    /* Exactly at the limit is allowed (and here fails later, as malformed JSON). */
    assert_hd(HD_EJSON, hd_envelope_decode(reg, big, 64, &env, NULL));
    hd_registry_free(reg);

    /* Without a registry the default limit applies. */
    size_t n = HD_ENVELOPE_MAX_SIZE_DEFAULT + 1;
    char *huge = malloc(n);
    assert_non_null(huge);
    memset(huge, ' ', n);
    assert_hd(HD_ETOOBIG, hd_envelope_decode(NULL, huge, n, &env, NULL));
    free(huge);
}

static void rejects_malformed_json_with_line_and_column(void **state)
{
    (void)state;
    expect_rejection(NULL, "{\"specversion\":\"1.0\",\n \"id\": }", HD_EJSON, "line 2");
    expect_rejection(NULL, "{\"specversion\":\"1.0\",\n \"id\": }", HD_EJSON, "column");
    expect_rejection(NULL, "", HD_EJSON, "malformed JSON");
    expect_rejection(NULL, "{\"id\":\"a\",\"id\":\"b\"}", HD_EJSON, "duplicate");
}

static void rejects_a_document_that_is_not_an_object(void **state)
{
    (void)state;
    expect_rejection(NULL, "42", HD_ETYPE, "object");
    expect_rejection(NULL, "[{\"specversion\":\"1.0\"}]", HD_ETYPE, "array");
    expect_rejection(NULL, "\"event\"", HD_ETYPE, "string");
}

static void rejects_missing_required_attributes(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    expect_rejection_of(reg, "\"specversion\":\"1.0\",", "", HD_EMISSING,
                        "missing attribute 'specversion'");
    expect_rejection_of(reg, "\"id\":\"0b3c2f1e-8a8e-4d55-9b6e-0c1d2e3f4a5b\",", "", HD_EMISSING,
                        "missing attribute 'id'");
    expect_rejection_of(reg, "\"source\":\"/users\",", "", HD_EMISSING,
                        "missing attribute 'source'");
    expect_rejection_of(reg, "\"type\":\"users.user_registered\",", "", HD_EMISSING,
                        "missing attribute 'type'");
    expect_rejection_of(reg, "\"schemaversion\":1,", "", HD_EMISSING,
                        "missing attribute 'schemaversion'");
    /* CloudEvents: null is the same as absent. */
    expect_rejection_of(reg, "\"id\":\"0b3c2f1e-8a8e-4d55-9b6e-0c1d2e3f4a5b\"", "\"id\":null",
                        HD_EMISSING, "'id'");
    hd_registry_free(reg);
}

static void rejects_mistyped_or_ill_formed_attributes(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    expect_rejection_of(reg, "\"id\":\"0b3c2f1e-8a8e-4d55-9b6e-0c1d2e3f4a5b\"", "\"id\":17",
                        HD_ETYPE, "'id'");
    expect_rejection_of(reg, "\"id\":\"0b3c2f1e-8a8e-4d55-9b6e-0c1d2e3f4a5b\"", "\"id\":\"\"",
                        HD_ETYPE, "'id'");
    expect_rejection_of(reg, "\"specversion\":\"1.0\"", "\"specversion\":1.0", HD_ETYPE,
                        "'specversion'");
    expect_rejection_of(reg, "\"source\":\"/users\"", "\"source\":[\"/users\"]", HD_ETYPE,
                        "'source'");
    expect_rejection_of(reg, "\"type\":\"users.user_registered\"", "\"type\":{}", HD_ETYPE,
                        "'type'");
    expect_rejection_of(reg, "\"time\":\"2026-11-23T04:05:06.789Z\"", "\"time\":\"yesterday\"",
                        HD_ETYPE, "'time'");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":\"1\"", HD_ETYPE,
                        "'schemaversion'");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":0", HD_ETYPE,
                        "'schemaversion'");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":-3", HD_ETYPE,
                        "'schemaversion'");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":1.5", HD_ETYPE,
                        "'schemaversion'");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":4294967297", HD_ETYPE,
                        "'schemaversion'");
    expect_rejection_of(reg, "\"correlationid\":\"corr-1\"", "\"correlationid\":true", HD_ETYPE,
                        "'correlationid'");
    expect_rejection_of(reg, "\"causationid\":\"cause-1\"", "\"causationid\":5", HD_ETYPE,
                        "'causationid'");
    expect_rejection_of(reg, "\"causationid\":\"cause-1\"", "\"traceparent\":\"00-xyz\"", HD_ETYPE,
                        "'traceparent'");
    expect_rejection_of(reg, "\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}",
                        "\"data\":\"ada@example.com\"", HD_ETYPE, "'data'");
    expect_rejection_of(reg, "\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}",
                        "\"data\":null", HD_ETYPE, "'data'");
    expect_rejection_of(reg, "\"causationid\":\"cause-1\"", "\"Subject\":\"x\"", HD_ETYPE,
                        "'Subject'");
    expect_rejection_of(reg, "\"causationid\":\"cause-1\"", "\"sub_ject\":\"x\"", HD_ETYPE,
                        "'sub_ject'");
    expect_rejection_of(reg, "\"causationid\":\"cause-1\"", "\"subject\":{\"a\":1}", HD_ETYPE,
                        "'subject'");
    hd_registry_free(reg);
}

static void rejects_a_specversion_other_than_1_0(void **state)
{
    (void)state;
    expect_rejection_of(NULL, "\"specversion\":\"1.0\"", "\"specversion\":\"0.3\"", HD_EVERSION,
                        "'0.3'");
    expect_rejection_of(NULL, "\"specversion\":\"1.0\"", "\"specversion\":\"2.0\"", HD_EVERSION,
                        "specversion");
}

static void rejects_cloudevents_herald_does_not_carry(void **state)
{
    (void)state;
    expect_rejection_of(NULL, "\"datacontenttype\":\"application/json\"",
                        "\"datacontenttype\":\"text/xml\"", HD_EUNSUPPORTED, "'datacontenttype'");
    expect_rejection_of(NULL, "\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}",
                        "\"data_base64\":\"AAEC\"", HD_EUNSUPPORTED, "'data_base64'");
    /* but any JSON media type is fine */
    const char *json_types[] = {"application/json; charset=utf-8", "application/vnd.users+json",
                                "APPLICATION/JSON"};
    for (size_t i = 0; i < sizeof json_types / sizeof json_types[0]; i++) {
        char to[128];
        snprintf(to, sizeof to, "\"datacontenttype\":\"%s\"", json_types[i]);
        char *text = replace("\"datacontenttype\":\"application/json\"", to);
        hd_envelope *env = NULL;
        assert_hd(HD_OK, hd_envelope_decode(NULL, text, strlen(text), &env, NULL));
        hd_envelope_free(env);
        free(text);
    }
}

static void rejects_an_unknown_type(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    expect_rejection_of(reg, "\"type\":\"users.user_registered\"",
                        "\"type\":\"orders.order_placed\"", HD_EUNKNOWN, "'orders.order_placed'");
    hd_registry_free(reg);
}

static void rejects_an_unknown_version_and_lists_known_ones(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":2", HD_EVERSION,
                        "version 2");
    expect_rejection_of(reg, "\"schemaversion\":1", "\"schemaversion\":2", HD_EVERSION,
                        "known: 1, 3");
    hd_registry_free(reg);
}

static void rejects_data_the_validator_refuses_with_its_reason(void **state)
{
    (void)state;
    int calls = 0;
    hd_registry *reg = new_registry(&calls);
    const char *good = "\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}";
    expect_rejection_of(reg, good, "\"data\":{\"user_id\":\"42\"}", HD_EVALIDATE,
                        "missing field 'email'");
    expect_rejection_of(reg, good, "\"data\":{\"user_id\":42,\"email\":\"ada@example.com\"}",
                        HD_EVALIDATE, "field 'user_id' must be a string, got integer");
    expect_rejection_of(reg, good, "\"data\":{\"user_id\":\"42\",\"email\":\"ada\"}", HD_EVALIDATE,
                        "not an email address");
    /* the text also says which contract was broken */
    expect_rejection_of(reg, good, "\"data\":{\"user_id\":\"42\"}", HD_EVALIDATE,
                        "users.user_registered v1");
    /* no data at all: the validator sees NULL, which counts as an empty object */
    expect_rejection_of(reg, ",\"data\":{\"user_id\":\"42\",\"email\":\"ada@example.com\"}", "",
                        HD_EVALIDATE, "missing field 'user_id'");
    assert_int_equal(calls, 5);
    hd_registry_free(reg);
}

static int reject_silently(const json_t *data, hd_error *err, void *ctx)
{
    (void)data, (void)err, (void)ctx;
    return -1;
}

static void validator_without_reason_still_explains(void **state)
{
    (void)state;
    hd_registry *reg = hd_registry_new();
    assert_non_null(reg);
    assert_hd(HD_OK, hd_registry_add(reg, "users.user_registered", 1, reject_silently, NULL));
    expect_rejection(reg, valid_event, HD_EVALIDATE, "rejected by its validator");
    hd_registry_free(reg);
}

static void registry_refuses_duplicates_and_bad_arguments(void **state)
{
    (void)state;
    hd_registry *reg = new_registry(NULL);
    assert_hd(HD_EEXIST, hd_registry_add(reg, "users.user_registered", 1, NULL, NULL));
    assert_hd(HD_EINVAL, hd_registry_add(reg, "users.user_registered", 0, NULL, NULL));
    assert_hd(HD_EINVAL, hd_registry_add(reg, "", 1, NULL, NULL));
    assert_hd(HD_EINVAL, hd_registry_add(reg, NULL, 1, NULL, NULL));
    /* many entries: the array grows */
    for (int v = 10; v < 40; v++)
        assert_hd(HD_OK, hd_registry_add(reg, "orders.order_placed", v, NULL, NULL));
    hd_envelope *env = hd_envelope_new("orders.order_placed", 39, "/orders", NULL);
    assert_non_null(env);
    assert_hd(HD_OK, hd_registry_check(reg, env, NULL));
    hd_envelope_free(env);
    hd_registry_free(reg);
    hd_registry_free(NULL);
}

static void decode_rejects_bad_arguments(void **state)
{
    (void)state;
    hd_envelope *env = NULL;
    assert_hd(HD_EINVAL, hd_envelope_decode(NULL, NULL, 0, &env, NULL));
    assert_hd(HD_EINVAL, hd_envelope_decode(NULL, "{}", 2, NULL, NULL));
    assert_hd(HD_EINVAL, hd_envelope_from_json(NULL, NULL, &env, NULL));
    assert_null(env);
}

static void decode_reads_only_len_bytes(void **state)
{
    (void)state;
    /* buf need not be NUL-terminated: trailing garbage past len is never read. */
    size_t n = strlen(valid_event);
    char *buf = malloc(n + 8);
    assert_non_null(buf);
    memcpy(buf, valid_event, n);
    memcpy(buf + n, "garbage!", 8);
    hd_envelope *env = NULL;
    assert_hd(HD_OK, hd_envelope_decode(NULL, buf, n, &env, NULL));
    hd_envelope_free(env);
    free(buf);
}

/* ---- hd_validate_fields ------------------------------------------------------------------ */

static void validate_fields_checks_presence_and_kind(void **state)
{
    (void)state;
    static const hd_field_spec specs[] = {
        {"name", HD_JSON_STRING, 1},  {"age", HD_JSON_INTEGER, 0},
        {"score", HD_JSON_NUMBER, 0}, {"active", HD_JSON_BOOLEAN, 0},
        {"tags", HD_JSON_ARRAY, 0},   {"address", HD_JSON_OBJECT, 0},
        {"anything", HD_JSON_ANY, 1}, {NULL, 0, 0},
    };
    hd_error err;
    json_t *ok = json_pack("{s:s, s:i, s:f, s:b, s:[], s:{}, s:s, s:s}", "name", "ada", "age", 36,
                           "score", 1.5, "active", 1, "tags", "address", "nick",
                           "unlisted members are fine", "anything", "x");
    assert_hd_err(HD_OK, hd_validate_fields(ok, specs, &err), &err);
    /* a number field takes integers too */
    json_object_set_new(ok, "score", json_integer(2));
    assert_hd(HD_OK, hd_validate_fields(ok, specs, NULL));
    /* optional fields may be absent or null */
    json_object_del(ok, "age");
    json_object_set_new(ok, "active", json_null());
    assert_hd(HD_OK, hd_validate_fields(ok, specs, NULL));

    json_object_set_new(ok, "age", json_string("36"));
    assert_hd(HD_EVALIDATE, hd_validate_fields(ok, specs, &err));
    assert_string_equal(err.text, "field 'age' must be an integer, got string");
    json_object_set_new(ok, "age", json_real(36.0));
    assert_hd(HD_EVALIDATE, hd_validate_fields(ok, specs, &err));
    assert_string_equal(err.text, "field 'age' must be an integer, got number");
    json_object_del(ok, "age");
    json_object_set_new(ok, "tags", json_object());
    assert_hd(HD_EVALIDATE, hd_validate_fields(ok, specs, &err));
    assert_string_equal(err.text, "field 'tags' must be an array, got object");
    json_object_del(ok, "tags");
    json_object_set_new(ok, "name", json_null());
    assert_hd(HD_EVALIDATE, hd_validate_fields(ok, specs, &err));
    assert_string_equal(err.text, "missing field 'name'");
    json_decref(ok);

    assert_hd(HD_EVALIDATE, hd_validate_fields(NULL, specs, &err));
    assert_string_equal(err.text, "missing field 'name'");
    json_t *arr = json_array();
    assert_hd(HD_EVALIDATE, hd_validate_fields(arr, specs, &err));
    assert_non_null(strstr(err.text, "must be an object"));
    json_decref(arr);
    assert_hd(HD_EINVAL, hd_validate_fields(NULL, NULL, NULL));
    assert_string_equal(hd_json_kind_name(HD_JSON_BOOLEAN), "boolean");
    assert_string_equal(hd_json_kind_name((hd_json_kind)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_fills_id_time_and_content_type),
        cmocka_unit_test(new_rejects_bad_arguments_and_frees_data),
        cmocka_unit_test(encode_is_compact_sorted_and_deterministic),
        cmocka_unit_test(encode_sorts_only_what_is_out_of_order),
        cmocka_unit_test(encode_with_adds_one_attribute),
        cmocka_unit_test(encode_writes_what_jansson_writes),
        cmocka_unit_test(encode_refuses_what_it_cannot_write),
        cmocka_unit_test(setters_validate_and_remove),
        cmocka_unit_test(caused_by_chains_correlation_and_causation),
        cmocka_unit_test(round_trip_keeps_every_attribute),
        cmocka_unit_test(decode_without_registry_checks_structure_only),
        cmocka_unit_test(to_json_and_from_json_round_trip_without_sharing),
        cmocka_unit_test(null_optional_attributes_read_as_absent),
        cmocka_unit_test(rejects_oversized_input_before_parsing),
        cmocka_unit_test(rejects_malformed_json_with_line_and_column),
        cmocka_unit_test(rejects_a_document_that_is_not_an_object),
        cmocka_unit_test(rejects_missing_required_attributes),
        cmocka_unit_test(rejects_mistyped_or_ill_formed_attributes),
        cmocka_unit_test(rejects_a_specversion_other_than_1_0),
        cmocka_unit_test(rejects_cloudevents_herald_does_not_carry),
        cmocka_unit_test(rejects_an_unknown_type),
        cmocka_unit_test(rejects_an_unknown_version_and_lists_known_ones),
        cmocka_unit_test(rejects_data_the_validator_refuses_with_its_reason),
        cmocka_unit_test(validator_without_reason_still_explains),
        cmocka_unit_test(registry_refuses_duplicates_and_bad_arguments),
        cmocka_unit_test(decode_rejects_bad_arguments),
        cmocka_unit_test(decode_reads_only_len_bytes),
        cmocka_unit_test(validate_fields_checks_presence_and_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
