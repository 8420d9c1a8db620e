/* Chapter 03 — integration events on the wire.
 *
 * A service tells others what happened by sending an integration event: a CloudEvents 1.0
 * JSON document with a type, a schema version and data. The receiver trusts nothing: it
 * decodes against a registry of the (type, version) pairs it understands, and every bad
 * message is refused with a precise reason, never half-processed.
 *
 * Steps: define users.user_registered v1 and its validator; encode an event; decode it
 * back; then feed the decoder six bad messages and print why each one is refused.
 * docs/tutorial/03-integration-events.md explains the why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/envelope.h"

/* The schema of users.user_registered v1, written as data... */
static const hd_field_spec user_registered_v1[] = {
    {"user_id", HD_JSON_STRING, 1},
    {"email", HD_JSON_STRING, 1},
    {"verification_url", HD_JSON_STRING, 0},
    {NULL, 0, 0},
};

/* ...and its validator: the declared fields, then what a type cannot express. */
static int validate_user_registered_v1(const json_t *data, hd_error *err, void *ctx)
{
    (void)ctx;
    int rc = hd_validate_fields(data, user_registered_v1, err);
    if (rc < 0)
        return rc;
    const char *email = json_string_value(json_object_get(data, "email"));
    if (strchr(email, '@') == NULL)
        return hd_error_set(err, HD_EVALIDATE, "field 'email' is not an email address");
    return 0;
}

/* A users.user_registered event at `version`, with `data` (stolen). NULL on failure. */
static hd_envelope *user_registered(const char *type, int version, json_t *data)
{
    hd_envelope *env = hd_envelope_new(type, version, "/users", data);
    if (env == NULL)
        fprintf(stderr, "hd_envelope_new failed\n");
    return env;
}

/* Encode env, free it, and return the JSON text (free() it); NULL on failure. */
static char *encode_and_free(hd_envelope *env)
{
    char *text = NULL;
    hd_error err;
    if (env == NULL)
        return NULL;
    if (hd_envelope_encode(env, &text, NULL, &err) < 0)
        fprintf(stderr, "encode: %s\n", err.text);
    hd_envelope_free(env);
    return text;
}

/* Decode text, expecting a refusal; print the code and the reason. Returns 0 when the
 * message was refused as expected, -1 otherwise. */
static int show_rejection(const hd_registry *reg, int step, const char *what, const char *text,
                          size_t len, int expected)
{
    hd_envelope *env = NULL;
    hd_error err;
    hd_error_clear(&err);
    printf("[%d] %s\n", step, what);
    if (text == NULL)
        return -1;
    int rc = hd_envelope_decode(reg, text, len, &env, &err);
    if (rc == HD_OK) {
        printf("    accepted?! this message should have been refused\n");
        hd_envelope_free(env);
        return -1;
    }
    printf("    refused: %s: %s\n", hd_err_name(rc), err.text);
    return rc == expected ? 0 : -1;
}

int main(void)
{
    int failures = 0;

    /* [1] The consumer declares what it understands. */
    hd_registry *reg = hd_registry_new();
    if (reg == NULL ||
        hd_registry_add(reg, "users.user_registered", 1, validate_user_registered_v1, NULL) < 0) {
        fprintf(stderr, "registry setup failed\n");
        return 1;
    }
    printf("[1] registry knows users.user_registered v1 (fields: user_id, email; "
           "optional verification_url)\n");

    /* [2] The producer builds and encodes an event. */
    hd_envelope *env =
        user_registered("users.user_registered", 1,
                        json_pack("{s:s, s:s}", "user_id", "42", "email", "ada@example.com"));
    if (env == NULL || hd_envelope_set_correlation_id(env, "signup-7f3a") < 0) {
        hd_envelope_free(env);
        hd_registry_free(reg);
        return 1;
    }
    char *wire = NULL;
    size_t len = 0;
    hd_error err;
    if (hd_envelope_encode(env, &wire, &len, &err) < 0) {
        fprintf(stderr, "encode: %s\n", err.text);
        hd_envelope_free(env);
        hd_registry_free(reg);
        return 1;
    }
    printf("[2] encoded %zu bytes of %s:\n    %s\n", len, HD_CLOUDEVENTS_MEDIA_TYPE, wire);

    /* [3] The consumer decodes it back: every check passes, the validator included. */
    hd_envelope *back = NULL;
    if (hd_envelope_decode(reg, wire, len, &back, &err) < 0) {
        fprintf(stderr, "decode: %s: %s\n", hd_err_name(err.code), err.text);
        free(wire);
        hd_envelope_free(env);
        hd_registry_free(reg);
        return 1;
    }
    printf("[3] decoded %s v%d id=%s correlationid=%s email=%s\n", hd_envelope_type(back),
           hd_envelope_version(back), hd_envelope_id(back), hd_envelope_correlation_id(back),
           json_string_value(json_object_get(hd_envelope_data(back), "email")));
    printf("    same id as sent: %s\n",
           strcmp(hd_envelope_id(back), hd_envelope_id(env)) == 0 ? "yes" : "no");
    hd_envelope_free(back);

    /* [4..9] Bad messages, one at a time. Each would go to the dead-letter queue. */
    failures += show_rejection(reg, 4, "malformed JSON (the message is cut short)", wire, len / 2,
                               HD_EJSON) != 0;

    json_t *obj = hd_envelope_to_json(env);
    char *no_id = NULL;
    if (obj != NULL && json_object_del(obj, "id") == 0)
        no_id = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    failures += show_rejection(reg, 5, "the same event without its id", no_id,
                               no_id ? strlen(no_id) : 0, HD_EMISSING) != 0;
    free(no_id);

    char *other = encode_and_free(
        user_registered("orders.order_placed", 1, json_pack("{s:s}", "order_id", "9")));
    failures += show_rejection(reg, 6, "a type this consumer does not know", other,
                               other ? strlen(other) : 0, HD_EUNKNOWN) != 0;
    free(other);

    char *v2 = encode_and_free(user_registered(
        "users.user_registered", 2,
        json_pack("{s:s, s:s}", "user_id", "42", "email_address", "ada@example.com")));
    failures += show_rejection(reg, 7, "users.user_registered v2, newer than this consumer", v2,
                               v2 ? strlen(v2) : 0, HD_EVERSION) != 0;
    free(v2);

    char *no_email = encode_and_free(
        user_registered("users.user_registered", 1, json_pack("{s:s}", "user_id", "42")));
    failures += show_rejection(reg, 8, "v1 data without an email", no_email,
                               no_email ? strlen(no_email) : 0, HD_EVALIDATE) != 0;
    free(no_email);

    /* The limit is per registry (default 256 KiB); 1 KiB keeps this example small. */
    hd_registry_set_max_size(reg, 1024);
    char padding[2048];
    memset(padding, 'x', sizeof padding - 1);
    padding[sizeof padding - 1] = '\0';
    char *big = encode_and_free(user_registered(
        "users.user_registered", 1,
        json_pack("{s:s, s:s, s:s}", "user_id", "42", "email", "ada@example.com", "bio", padding)));
    failures += show_rejection(reg, 9, "an oversized message (limit set to 1 KiB)", big,
                               big ? strlen(big) : 0, HD_ETOOBIG) != 0;
    free(big);

    free(wire);
    hd_envelope_free(env);
    hd_registry_free(reg);
    printf("[10] %s\n", failures ? "some message was not refused as expected"
                                 : "every bad message was refused with its reason");
    return failures ? 1 : 0;
}
