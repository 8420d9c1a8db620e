/* Unit test for the users API's JSON replies (api.c users_http_write_user): the writer puts
 * on the wire exactly what json_dumpb wrote for the same object before it (JSON_COMPACT,
 * keys in the API's order), for plain and awkward names and addresses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_test.h"
#include "herald/clock.h"
#include "herald/jsonw.h"

#include "users/api.h"

/* The object the API used to build with jansson, dumped as hd_http_reply_json dumps. */
static char *through_jansson(const user_view *v)
{
    char created[HD_TIME_LEN + 1], updated[HD_TIME_LEN + 1];
    hd_time_format(v->created_at_ms, created);
    hd_time_format(v->updated_at_ms, updated);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(v->id));
    json_object_set_new(o, "email", json_string(v->email));
    json_object_set_new(o, "name", json_string(v->name));
    json_object_set_new(o, "verified", json_boolean(v->verified));
    json_object_set_new(o, "created_at", json_string(created));
    json_object_set_new(o, "updated_at", json_string(updated));
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(o);
    assert_non_null(text);
    return text;
}

static char *through_writer(const user_view *v)
{
    hd_jsonw w;
    hd_jsonw_init(&w);
    users_http_write_user(&w, v);
    char *text = hd_jsonw_take(&w, NULL);
    assert_non_null(text);
    return text;
}

static void a_user_is_written_as_jansson_wrote_it(void **state)
{
    (void)state;
    static const struct {
        const char *email, *name;
        int verified;
        int64_t created, updated;
    } cases[] = {
        {"ada@example.com", "Ada Lovelace", 0, 1764900000123, 1764900000123},
        {"o'brien+tag@example.org", "Ada \"the first\" \\ Lovelace", 1, 0, 86399999},
        {"x@example.com", "", 1, 1764900000000, 1764999999999},
        {"renee@example.fr", "Ren\xc3\xa9\x65 \xe2\x82\xac \xf0\x9f\x98\x80 </script>", 0,
         253402300799999, 253402300799999},
        {"tab@example.com", "line\nbreak\ttab\x01", 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        user_view v;
        memset(&v, 0, sizeof v);
        snprintf(v.id, sizeof v.id, "01a2454a-14da-75df-94c3-fc6a2641f0f%zu", i);
        snprintf(v.email, sizeof v.email, "%s", cases[i].email);
        snprintf(v.name, sizeof v.name, "%s", cases[i].name);
        v.verified = cases[i].verified;
        v.created_at_ms = cases[i].created;
        v.updated_at_ms = cases[i].updated;
        char *mine = through_writer(&v), *theirs = through_jansson(&v);
        if (strcmp(mine, theirs) != 0)
            fail_msg("case %zu:\n writer  %s\n jansson %s", i, mine, theirs);
        free(mine);
        free(theirs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_user_is_written_as_jansson_wrote_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
