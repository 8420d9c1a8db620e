/* herald/envelope.h — the integration event on the wire.
 *
 * A domain event stays inside its service; an integration event crosses to other services,
 * which were built by other people, deploy on other days and may be older or newer than the
 * sender. So the wire form is a contract, and herald uses a published one: CloudEvents 1.0
 * in structured JSON mode (media type `application/cloudevents+json`), one JSON object:
 *
 *     {"causationid":"...","correlationid":"...","data":{"email":"ada@example.com"},
 *      "datacontenttype":"application/json","id":"6f1c...","schemaversion":1,
 *      "source":"/users","specversion":"1.0","time":"2026-11-23T04:05:06.789Z",
 *      "type":"users.user_registered"}
 *
 * Attributes (docs/contracts/cloudevents.md has the full table):
 *   specversion    required, "1.0" only
 *   id             required, non-empty string; herald writes a UUID v4. Consumers
 *                  deduplicate on it (the inbox), so it never changes once written.
 *   source         required, non-empty string (a URI-reference such as "/users")
 *   type           required, non-empty string ("users.user_registered")
 *   schemaversion  required by herald (extension attribute): integer 1 .. 2^31-1, the
 *                  version of the data's schema. (type, schemaversion) selects the validator.
 *   time           optional, RFC 3339
 *   datacontenttype optional, a JSON media type ("application/json"); absent means JSON
 *   data           optional, a JSON object (herald carries objects only)
 *   correlationid  optional extension: the id shared by every message of one business flow
 *   causationid    optional extension: the id of the message that caused this one
 *   traceparent    optional extension: W3C Trace Context ("00-<32 hex>-<16 hex>-<2 hex>")
 * Other attributes with valid CloudEvents names (lower-case a-z, 0-9) and scalar values
 * (subject, dataschema, your own extensions) are kept and written back unchanged, so a
 * relay or a router never strips what it does not understand.
 *
 * Decoding is where untrusted bytes meet the program, so hd_envelope_decode() checks
 * everything, in a fixed order, and each failure has its own code and a text naming the
 * culprit (see hd_envelope_decode). A consumer can then route by code: every one of them
 * is permanent for that message (retrying cannot fix it), so the message goes to the
 * dead-letter queue instead of looping.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified; "stolen" = the callee takes ownership,
 * also when it fails.
 */
#ifndef HERALD_ENVELOPE_H
#define HERALD_ENVELOPE_H

#include <stddef.h>

#include <jansson.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_CLOUDEVENTS_SPECVERSION  "1.0"
#define HD_CLOUDEVENTS_MEDIA_TYPE   "application/cloudevents+json"
#define HD_ENVELOPE_DATA_MEDIA_TYPE "application/json"

/* Decode refuses larger inputs before parsing them (a parser's memory use grows with its
 * input; a limit checked first bounds it). 256 KiB is far above any sane event: events
 * carry facts and ids, not documents. Change it per registry. */
#define HD_ENVELOPE_MAX_SIZE_DEFAULT (256u * 1024u)

/* ---- the envelope ---------------------------------------------------------------------- */

typedef struct hd_envelope hd_envelope;

/* A new envelope for an event of `type` at schema `version` (>= 1) from `source`, with a
 * fresh id (UUID v4) and time (now, RFC 3339 UTC). data is stolen (also on failure); it
 * must be a JSON object or NULL (no data). When data is given, datacontenttype is set to
 * "application/json". type and source are copied.
 * Returns a new envelope (free with hd_envelope_free), or NULL when an argument is invalid
 * (NULL or empty type/source, version < 1, data not an object) or memory runs out. */
hd_envelope *hd_envelope_new(const char *type, int version, const char *source, json_t *data);

/* Free env and everything it owns. NULL is allowed. */
void hd_envelope_free(hd_envelope *env);

/* Getters. Strings and data are borrowed from env: valid until env is freed or the same
 * attribute is set again. Optional attributes that are absent read as NULL. */
const char *hd_envelope_id(const hd_envelope *env);
const char *hd_envelope_type(const hd_envelope *env);
const char *hd_envelope_source(const hd_envelope *env);
int hd_envelope_version(const hd_envelope *env); /* schemaversion */
const char *hd_envelope_time(const hd_envelope *env);
const char *hd_envelope_datacontenttype(const hd_envelope *env);
const char *hd_envelope_correlation_id(const hd_envelope *env);
const char *hd_envelope_causation_id(const hd_envelope *env);
const char *hd_envelope_traceparent(const hd_envelope *env);
/* Borrowed; the caller may read it, and may modify it only before encoding. */
json_t *hd_envelope_data(const hd_envelope *env);
/* Any other attribute kept from decoding or set with hd_envelope_set_attribute (subject,
 * dataschema, extensions); NULL when absent. Borrowed. */
const json_t *hd_envelope_attribute(const hd_envelope *env, const char *name);

/* Setters. Strings are copied; NULL removes an optional attribute. Return 0, HD_EINVAL
 * when the value is ill-formed (the same rules decode applies), or HD_ENOMEM. */
int hd_envelope_set_id(hd_envelope *env, const char *id);        /* non-empty, not NULL */
int hd_envelope_set_time(hd_envelope *env, const char *rfc3339); /* RFC 3339 or NULL */
int hd_envelope_set_correlation_id(hd_envelope *env, const char *id);
int hd_envelope_set_causation_id(hd_envelope *env, const char *id);
int hd_envelope_set_traceparent(hd_envelope *env, const char *traceparent);

/* Set another attribute: name must be a valid CloudEvents name that is not one of the
 * attributes above, value a string, integer (32-bit) or boolean. value is stolen (also on
 * failure); NULL removes the attribute. Returns 0, HD_EINVAL or HD_ENOMEM. */
int hd_envelope_set_attribute(hd_envelope *env, const char *name, json_t *value);

/* Mark env as caused by `cause` (a message this service received or produced): its
 * causation id becomes cause's id, and its correlation id becomes cause's correlation id,
 * or cause's id when cause starts a flow. Following these two ids, one can rebuild both the
 * chain (who caused whom) and the whole conversation. Returns 0 or HD_ENOMEM. */
int hd_envelope_caused_by(hd_envelope *env, const hd_envelope *cause);

/* Encode env as compact CloudEvents JSON with keys sorted at every level, so the same
 * envelope always gives the same bytes (tests and content hashes can compare them).
 * On success *out is a new NUL-terminated string (free it with free()) and *len, when len
 * is not NULL, its length without the NUL. Returns 0, HD_EINVAL (env or out NULL) or
 * HD_ENOMEM. */
int hd_envelope_encode(const hd_envelope *env, char **out, size_t *len, hd_error *err);

/* hd_envelope_encode of env (borrowed) with one more string attribute name = value
 * (borrowed; replacing one of that name), the bytes it would write for a copy of env given
 * that attribute with hd_envelope_set_attribute: for a writer that stamps an attribute on
 * an event it does not own (the outbox's "previousid") with one encode, where parsing the
 * encoded text and dumping it again cost two passes of jansson. name NULL: plain encode. */
int hd_envelope_encode_with(const hd_envelope *env, const char *name, const char *value, char **out,
                            size_t *len, hd_error *err);

/* The envelope as a new JSON object (the same attributes encode writes); NULL when memory
 * runs out. Useful to embed an envelope in another document or store it as a JSON column. */
json_t *hd_envelope_to_json(const hd_envelope *env);

/* ---- the registry: which (type, version) pairs this consumer understands --------------- */

/* A validator checks the data of one (type, version). data is borrowed and may be NULL when
 * the event has no data; ctx is the pointer given to hd_registry_add. Return 0 to accept,
 * or a negative code with a reason in err (hd_error_set) to reject: decode reports the
 * rejection as HD_EVALIDATE with that reason. */
typedef int (*hd_validator_fn)(const json_t *data, hd_error *err, void *ctx);

typedef struct hd_registry hd_registry;

/* A new, empty registry with the default size limit; NULL when memory runs out. Free it
 * with hd_registry_free. A registry is read-only once built, so several threads may decode
 * with it at the same time (add everything before sharing it). */
hd_registry *hd_registry_new(void);

/* Free reg (NULL allowed). The ctx pointers given to hd_registry_add are not freed. */
void hd_registry_free(hd_registry *reg);

/* Declare that this consumer understands `type` at schema `version` (>= 1). validator may
 * be NULL (any data is accepted); ctx is borrowed and passed to it. type is copied.
 * Returns 0, HD_EINVAL (bad argument), HD_EEXIST (pair already added) or HD_ENOMEM. */
int hd_registry_add(hd_registry *reg, const char *type, int version, hd_validator_fn validator,
                    void *ctx);

/* Largest input, in bytes, that hd_envelope_decode accepts with this registry. */
void hd_registry_set_max_size(hd_registry *reg, size_t max_bytes);
size_t hd_registry_max_size(const hd_registry *reg);

/* Check env against reg: its type must be known (else HD_EUNKNOWN), its version known for
 * that type (else HD_EVERSION, the text lists the known versions), and its data accepted by
 * the validator (else HD_EVALIDATE with the validator's reason). Decode calls this; a
 * producer may call it too, before writing an event to its outbox. Returns 0 or the code. */
int hd_registry_check(const hd_registry *reg, const hd_envelope *env, hd_error *err);

/* ---- decoding ------------------------------------------------------------------------- */

/* Decode len bytes of CloudEvents JSON into a new envelope (*out, free with
 * hd_envelope_free; *out is NULL on failure). buf is borrowed and need not be
 * NUL-terminated. With reg NULL only the structure is checked (default size limit, any
 * type and version). The checks, in this order, stopping at the first failure:
 *   1. HD_ETOOBIG   len above the registry's limit (before any parsing)
 *   2. HD_EJSON     not JSON, or an object repeats a key (text has line and column)
 *   3. HD_ETYPE     the document is not an object
 *   4. specversion: HD_EMISSING absent, HD_ETYPE not a string, HD_EVERSION not "1.0"
 *      (first, because it says how to read the rest)
 *   5. id, source, type, schemaversion, time, datacontenttype, correlationid, causationid,
 *      traceparent, one after the other: HD_EMISSING when a required one is absent or
 *      null ("missing attribute 'id'"), HD_ETYPE when one has the wrong type (id not a
 *      non-empty string, schemaversion not an integer >= 1); then HD_ETYPE when time is
 *      not RFC 3339 or traceparent not W3C
 *   6. HD_EUNSUPPORTED valid CloudEvents herald does not carry: data_base64, or a
 *      datacontenttype that is not JSON
 *   7. HD_ETYPE     data present but not an object
 *   8. HD_ETYPE     another attribute whose name is not lower-case alphanumeric, or whose
 *      value is not a string, 32-bit integer or boolean
 *   9. with reg: HD_EUNKNOWN type not in reg, HD_EVERSION type known but schemaversion
 *      not, HD_EVALIDATE the validator rejected data
 * err's text names the attribute or field at fault. Returns 0 or the code. */
int hd_envelope_decode(const hd_registry *reg, const char *buf, size_t len, hd_envelope **out,
                       hd_error *err);

/* Like hd_envelope_decode from an already parsed JSON value (borrowed; copied into the
 * envelope, so later changes to obj do not affect it). No size check. */
int hd_envelope_from_json(const hd_registry *reg, const json_t *obj, hd_envelope **out,
                          hd_error *err);

/* ---- declarative validation of data ---------------------------------------------------- */

/* The JSON kinds a field may be required to have. HD_JSON_NUMBER accepts integers too. */
typedef enum hd_json_kind {
    HD_JSON_ANY = 0,
    HD_JSON_STRING,
    HD_JSON_INTEGER,
    HD_JSON_NUMBER,
    HD_JSON_BOOLEAN,
    HD_JSON_OBJECT,
    HD_JSON_ARRAY,
} hd_json_kind;

/* One field of a schema described as data. An array of these ends with {NULL, 0, 0}. */
typedef struct hd_field_spec {
    const char *name;  /* member name in the data object */
    hd_json_kind kind; /* the JSON kind its value must have */
    int required;      /* non-zero: absent (or null) is an error */
} hd_field_spec;

/* Check data (borrowed; NULL counts as an empty object) against specs. A null value counts
 * as absent. Members not listed are allowed: a newer producer may add optional fields
 * without breaking older consumers (the tolerant reader). Returns 0, or HD_EVALIDATE with
 * "missing field 'email'" / "field 'email' must be a string" in err. Validators call it,
 * then check what a type cannot express (an email has an '@'). */
int hd_validate_fields(const json_t *data, const hd_field_spec *specs, hd_error *err);

/* The name of a kind ("string", "integer", ...); a borrowed static string. */
const char *hd_json_kind_name(hd_json_kind kind);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_ENVELOPE_H */
