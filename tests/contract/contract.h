/* contract.h — event contracts kept as data, and the small JSON Schema checker that reads them.
 *
 * Every integration event that crosses a service boundary has one folder per schema version:
 *
 *     tests/contract/events/<type>/v<N>/schema.json        the envelope and its data
 *     tests/contract/events/<type>/v<N>/examples/<name>.json  realistic envelopes that validate
 *
 * The contract tests load them all (contract_set_load) and hold what a service really wrote
 * to its outbox, or really accepts from its queue, against them (contract_check_envelope).
 * docs/contracts/events.md is the catalogue a person reads; these files are the same
 * catalogue a program reads, so the two cannot drift apart unnoticed.
 *
 * The schemas use a subset of JSON Schema (draft 2020-12): just what these contracts need.
 *
 *     type                  "object" "array" "string" "integer" "number" "boolean" "null"
 *     required              member names that must be present
 *     properties            a schema for each named member
 *     additionalProperties  false: a member that "properties" does not name is refused
 *     const, enum           exact values
 *     minLength, minimum    shortest string (in characters), smallest number
 *     format                "uuid", "email", "uri", "date-time" (RFC 3339)
 *
 * Annotations ($schema, $id, $comment, title, description, x-...) are ignored. Any other
 * keyword makes the SCHEMA invalid when it is loaded: a checker that silently skipped
 * "pattern" would let a contract promise something that nobody checks.
 *
 * Build: test code, compiled once into the static library hd_contract_support that every
 * contract test links (CMakeLists.txt: the .c files of tests/<kind>/ that are not
 * test_*.c are that kind's helpers). Its public names start with contract_.
 *
 * Ownership follows jansson: "new" = the caller owns the result and frees it; "borrowed" =
 * valid while its owner lives and is not modified.
 */
#ifndef HD_TEST_CONTRACT_H
#define HD_TEST_CONTRACT_H

#include <stddef.h>

#include <jansson.h>

#include "herald/envelope.h"

/* Where the contracts live in the source tree. */
#define CONTRACT_EVENTS_DIR HD_SOURCE_DIR "/tests/contract/events"

typedef struct contract_example {
    char *name;   /* the file name, "ada.json" */
    json_t *json; /* the whole envelope, as written in the file */
} contract_example;

typedef struct event_contract {
    char *type;     /* from the folder name: "users.user_registered" */
    int version;    /* from the folder name: v1 -> 1 */
    json_t *schema; /* schema.json: the whole envelope */
    contract_example *examples;
    size_t n_examples;
} event_contract;

typedef struct contract_set {
    event_contract *items; /* sorted by type, then version */
    size_t count;
} contract_set;

/* Load every contract under root (usually CONTRACT_EVENTS_DIR) into *set (release it with
 * contract_set_release, also on failure). Each schema is checked as it is loaded: only the
 * keywords above, "required" names declared in "properties", its "type" and "schemaversion"
 * constants equal to the folder's names, a "data" member. Returns 0, or -1 with the reason
 * (naming the file) in why. */
int contract_set_load(const char *root, contract_set *set, char *why, size_t why_len);
void contract_set_release(contract_set *set);

/* The set every contract test works on, loaded once per test program by
 * contract_suite_setup and released by contract_suite_teardown (pass both to
 * cmocka_run_group_tests_name). */
extern contract_set contracts;
int contract_suite_setup(void **state);
int contract_suite_teardown(void **state);

/* Check every example of the contracts whose type starts with prefix: it must validate
 * against the schema of its own folder, and the producer's registry reg (its C validators,
 * named reg_name in messages) must accept it, so that the two descriptions of an event
 * cannot drift apart. A contract without an example counts as broken. Each problem is
 * printed to stderr; returns how many there were, and sets *checked to the examples seen. */
int contract_check_examples(const contract_set *set, const char *prefix, const hd_registry *reg,
                            const char *reg_name, size_t *checked);

/* The contract of (type, version) in set, borrowed; NULL when there is none. */
const event_contract *contract_find(const contract_set *set, const char *type, int version);

/* Check value (borrowed) against schema (borrowed). Returns the number of problems found (0:
 * it conforms); why receives them, "; "-separated, each naming the member at fault with a
 * path from the root: "$.data.email: required member is missing". */
int contract_validate(const json_t *schema, const json_t *value, char *why, size_t why_len);

/* Check a CloudEvents envelope (a parsed JSON object, borrowed) against the contract of its
 * own type and schemaversion in set: one problem when set has no such contract, else the
 * problems contract_validate finds. */
int contract_check_envelope(const contract_set *set, const json_t *envelope, char *why,
                            size_t why_len);

/* The schema of the envelope's "data" in c (borrowed); and whether data declares / requires
 * the member called name (1 or 0). */
const json_t *contract_data_schema(const event_contract *c);
int contract_data_declares(const event_contract *c, const char *name);
int contract_data_requires(const event_contract *c, const char *name);

#endif /* HD_TEST_CONTRACT_H */
