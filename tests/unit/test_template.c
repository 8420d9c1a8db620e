/* Unit tests for herald/template.h: {{var}} substitution, escaping, errors, the shipped
 * templates. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/template.h"

/* Parse a template from strings; the test fails if it does not parse. */
static hd_template *parse_ok(const char *subject, const char *html, const char *text)
{
    hd_template *tpl = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_template_parse("greeting", subject, html, text, &tpl, &err), &err);
    assert_non_null(tpl);
    return tpl;
}

static void substitutes_variables_with_optional_spaces(void **state)
{
    (void)state;
    hd_template *tpl = parse_ok("Hi {{name}}\n", "<p>{{ name }} {{\tname\t}}</p>",
                                "Dear {{  name  }}, see {{link}}.");
    json_t *vars = json_pack("{s:s, s:s, s:s}", "name", "Ada", "link", "https://x.example/1",
                             "unused", "extra keys are ignored");
    hd_rendered *r = NULL;
    assert_hd(HD_OK, hd_template_render(tpl, vars, &r, NULL));
    assert_string_equal(r->subject, "Hi Ada"); /* the final newline of the file is dropped */
    assert_string_equal(r->html, "<p>Ada Ada</p>");
    assert_string_equal(r->text, "Dear Ada, see https://x.example/1.");
    hd_rendered_free(r);

    /* Single braces and a lone "}}" are just text. */
    hd_template *plain = parse_ok("{a} }}", "{ {x} }", "}}{");
    hd_rendered *p = NULL;
    assert_hd(HD_OK, hd_template_render(plain, vars, &p, NULL));
    assert_string_equal(p->subject, "{a} }}");
    assert_string_equal(p->html, "{ {x} }");
    assert_string_equal(p->text, "}}{");
    size_t n = 99;
    assert_non_null(hd_template_variables(plain, &n));
    assert_int_equal(n, 0);
    hd_rendered_free(p);
    hd_template_free(plain);
    json_decref(vars);
    hd_template_free(tpl);
}

static void escapes_values_in_html_only(void **state)
{
    (void)state;
    hd_template *tpl = parse_ok("For {{name}}", "<p title=\"{{name}}\">{{name}}</p>", "{{name}}");
    json_t *vars = json_pack("{s:s}", "name", "<b>\"Tom\" & 'Jerry'</b>");
    hd_rendered *r = NULL;
    assert_hd(HD_OK, hd_template_render(tpl, vars, &r, NULL));
    assert_string_equal(r->html,
                        "<p title=\"&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;\">"
                        "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;</p>");
    assert_string_equal(r->text, "<b>\"Tom\" & 'Jerry'</b>");
    assert_string_equal(r->subject, "For <b>\"Tom\" & 'Jerry'</b>");
    hd_rendered_free(r);
    json_decref(vars);
    hd_template_free(tpl);

    char *e = hd_html_escape("a&b<c>d\"e'f");
    assert_string_equal(e, "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    free(e);
    e = hd_html_escape("");
    assert_string_equal(e, "");
    free(e);
    assert_null(hd_html_escape(NULL));
}

static void missing_variable_is_an_error_that_names_it(void **state)
{
    (void)state;
    hd_template *tpl = NULL;
    assert_hd(HD_OK, hd_template_parse("welcome", "Welcome", "<p>{{greeting}} {{name}}</p>",
                                       "{{name}}", &tpl, NULL));
    json_t *vars = json_pack("{s:s}", "greeting", "Hello");
    hd_rendered *r = NULL;
    hd_error err;
    assert_hd_err(HD_EMISSING, hd_template_render(tpl, vars, &r, &err), &err);
    assert_string_equal(err.text, "template 'welcome': missing variable 'name'");
    assert_null(r);

    /* null is not a value: "Hello null" is the bug this rule prevents. */
    json_object_set_new(vars, "name", json_null());
    assert_hd_err(HD_EMISSING, hd_template_render(tpl, vars, &r, &err), &err);
    assert_non_null(strstr(err.text, "'name'"));

    /* The variables must be an object. */
    json_t *arr = json_array();
    assert_hd(HD_EINVAL, hd_template_render(tpl, arr, &r, NULL));
    assert_hd(HD_EINVAL, hd_template_render(tpl, NULL, &r, NULL));
    json_decref(arr);
    json_decref(vars);
    hd_template_free(tpl);
}

static void syntax_errors_give_part_line_and_column(void **state)
{
    (void)state;
    hd_template *tpl = NULL;
    hd_error err;
    assert_hd_err(HD_ETYPE,
                  hd_template_parse("t", "ok", "<p>\n  Hello {{name</p>", "x", &tpl, &err), &err);
    assert_string_equal(err.text, "template 't' (html): unterminated '{{' at line 2, column 9");
    assert_null(tpl);

    assert_hd_err(HD_ETYPE, hd_template_parse("t", "{{ 1st }}", "", "", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "(subject): expected a variable name after '{{' at line 1, "
                                     "column 1"));
    assert_hd_err(HD_ETYPE, hd_template_parse("t", "", "", "a {{}}", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "(text)"));
    assert_hd_err(HD_ETYPE, hd_template_parse("t", "", "{{ first name }}", "", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "expected '}}'"));
    assert_hd_err(HD_ETYPE, hd_template_parse("t", "", "", "{{a.b}}", &tpl, &err), &err);
    /* Not UTF-8 (a Latin-1 "é"). */
    assert_hd_err(HD_ETYPE, hd_template_parse("t", "", "caf\xe9", "", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "invalid UTF-8 at line 1, column 4"));
    /* The subject is one line. */
    assert_hd_err(HD_ETYPE, hd_template_parse("t", "one\ntwo", "", "", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "(subject)"));
    assert_hd(HD_OK, hd_template_parse("t", "one\r\n", "", "", &tpl, NULL));
    hd_template_free(tpl);
    /* Names become file names: no paths, no upper case, not empty. */
    const char *bad[] = {"", "../etc/passwd", "Welcome", "a-b", "a b", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_hd(HD_EINVAL, hd_template_parse(bad[i], "", "", "", &tpl, NULL));
    assert_hd(HD_EINVAL, hd_template_parse("t", NULL, "", "", &tpl, NULL));
}

static void scalars_render_as_json_and_containers_are_refused(void **state)
{
    (void)state;
    hd_template *tpl = parse_ok("{{n}}", "{{n}} {{r}} {{t}} {{f}}", "{{n}}/{{r}}/{{t}}/{{f}}");
    json_t *vars = json_pack("{s:I, s:f, s:b, s:b}", "n", (json_int_t)42, "r", 0.1, "t", 1, "f", 0);
    hd_rendered *r = NULL;
    assert_hd(HD_OK, hd_template_render(tpl, vars, &r, NULL));
    assert_string_equal(r->text, "42/0.1/true/false");
    assert_string_equal(r->subject, "42");
    hd_rendered_free(r);
    r = NULL; /* a failed render must leave *out alone */

    hd_error err;
    json_object_set_new(vars, "n", json_pack("{s:i}", "a", 1));
    assert_hd_err(HD_ETYPE, hd_template_render(tpl, vars, &r, &err), &err);
    assert_non_null(strstr(err.text, "variable 'n' is an object"));
    json_object_set_new(vars, "n", json_pack("[i]", 1));
    assert_hd_err(HD_ETYPE, hd_template_render(tpl, vars, &r, &err), &err);
    assert_non_null(strstr(err.text, "variable 'n' is an array"));
    /* An embedded NUL would silently cut the mail short. */
    json_object_set_new(vars, "n", json_stringn("a\0b", 3));
    assert_hd(HD_ETYPE, hd_template_render(tpl, vars, &r, NULL));
    assert_null(r);
    json_decref(vars);
    hd_template_free(tpl);
}

static void line_breaks_are_refused_in_the_subject_only(void **state)
{
    (void)state;
    hd_template *tpl = parse_ok("Hello {{name}}", "<p>{{note}}</p>", "{{name}}\n{{note}}");
    json_t *vars = json_pack("{s:s, s:s}", "name", "Eve\r\nBcc: victim@example.com", "note",
                             "line one\nline two");
    hd_rendered *r = NULL;
    hd_error err;
    assert_hd_err(HD_ETYPE, hd_template_render(tpl, vars, &r, &err), &err);
    assert_non_null(strstr(err.text, "variable 'name'"));
    assert_non_null(strstr(err.text, "subject"));
    assert_null(r);
    const char *bad[] = {"a\nb", "a\rb", "a\001b", "a\177b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_object_set_new(vars, "name", json_string(bad[i]));
        assert_hd(HD_ETYPE, hd_template_render(tpl, vars, &r, NULL));
    }
    /* A tab is fine, and line breaks in the bodies are what bodies are made of. */
    json_object_set_new(vars, "name", json_string("Eve\tAdams"));
    assert_hd(HD_OK, hd_template_render(tpl, vars, &r, NULL));
    assert_string_equal(r->subject, "Hello Eve\tAdams");
    assert_string_equal(r->html, "<p>line one\nline two</p>");
    hd_rendered_free(r);
    json_decref(vars);
    hd_template_free(tpl);
}

static void variables_are_listed_once_in_order(void **state)
{
    (void)state;
    hd_template *tpl = parse_ok("{{b}} {{a}}", "{{a}} {{c}} {{b}}", "{{d}}{{c}}");
    size_t n = 0;
    const char *const *vars = hd_template_variables(tpl, &n);
    assert_int_equal(n, 4);
    assert_string_equal(vars[0], "b");
    assert_string_equal(vars[1], "a");
    assert_string_equal(vars[2], "c");
    assert_string_equal(vars[3], "d");
    assert_null(vars[4]);
    assert_string_equal(hd_template_name(tpl), "greeting");
    hd_template_free(tpl);
}

/* The shipped templates (templates/, the notifications service's four) and the variables
 * the service must provide: a template that starts needing a new variable breaks this test,
 * on purpose. The library knows no names; the test lists them. */
static void shipped_templates_load_list_and_render(void **state)
{
    (void)state;
    struct {
        const char *name;
        const char *vars[4];
        const char *subject;
    } want[] = {
        {"email_verification", {"name", "verification_link"}, "Confirm your e-mail address"},
        {"password_reset", {"name", "reset_link"}, "Reset your password"},
        {"welcome", {"name"}, "Welcome to herald, Ada <3"},
        {"security_alert", {"event", "name", "time"}, "Security alert: New sign-in"},
    };
    const char *shipped[] = {want[0].name, want[1].name, want[2].name, want[3].name};
    hd_templates *set = NULL;
    hd_error err;
    assert_hd_err(
        HD_OK, hd_templates_open_names(HD_SOURCE_DIR "/templates", shipped, 4, &set, &err), &err);
    assert_int_equal(hd_templates_count(set), 4);
    json_t *vars = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", "Ada <3", "verification_link",
                             "https://app.example/verify?token=t0k&u=1", "reset_link",
                             "https://app.example/reset?token=r3s", "event", "New sign-in", "time",
                             "2026-11-23T04:05:06Z");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const hd_template *tpl = hd_templates_get(set, want[i].name);
        assert_non_null(tpl);
        assert_ptr_equal(tpl, hd_templates_at(set, i));
        size_t n = 0;
        const char *const *names = hd_template_variables(tpl, &n);
        size_t expected = 0;
        while (expected < 4 && want[i].vars[expected])
            expected++;
        assert_int_equal(n, expected);
        for (size_t k = 0; k < expected; k++) {
            int found = 0;
            for (size_t j = 0; j < n; j++)
                found |= strcmp(names[j], want[i].vars[k]) == 0;
            if (!found)
                fail_msg("template %s does not use %s", want[i].name, want[i].vars[k]);
        }
        hd_rendered *r = NULL;
        assert_hd_err(HD_OK, hd_templates_render(set, want[i].name, vars, &r, &err), &err);
        assert_string_equal(r->subject, want[i].subject);
        assert_null(strstr(r->html, "{{"));
        assert_null(strstr(r->text, "{{"));
        assert_non_null(strstr(r->html, "Ada &lt;3"));
        assert_non_null(strstr(r->text, "Ada <3"));
        hd_rendered_free(r);
    }
    hd_rendered *r = NULL;
    assert_hd_err(HD_OK, hd_templates_render(set, "email_verification", vars, &r, &err), &err);
    assert_non_null(strstr(r->html, "href=\"https://app.example/verify?token=t0k&amp;u=1\""));
    assert_non_null(strstr(r->text, "https://app.example/verify?token=t0k&u=1"));
    hd_rendered_free(r);

    /* Every shipped template refuses to render without its variables. */
    json_t *empty = json_object();
    for (size_t i = 0; i < hd_templates_count(set); i++)
        assert_hd(HD_EMISSING, hd_template_render(hd_templates_at(set, i), empty, &r, NULL));
    json_decref(empty);

    assert_null(hd_templates_get(set, "marketing"));
    assert_null(hd_templates_at(set, 4));
    assert_hd(HD_ENOTFOUND, hd_templates_render(set, "marketing", vars, &r, NULL));
    json_decref(vars);
    hd_templates_close(set);
}

static void write_file(const char *dir, const char *file, const char *content)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void load_reports_missing_broken_and_oversized_files(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("template");
    hd_template *tpl = NULL;
    hd_error err;
    assert_hd_err(HD_ENOTFOUND, hd_template_load(dir, "welcome", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "welcome.subject"));

    write_file(dir, "welcome.subject", "Welcome {{name}}\n");
    write_file(dir, "welcome.html", "<p>{{name}}</p>\n");
    assert_hd_err(HD_ENOTFOUND, hd_template_load(dir, "welcome", &tpl, &err), &err);
    assert_non_null(strstr(err.text, "welcome.txt"));
    write_file(dir, "welcome.txt", "Hi {{name}}\n");
    assert_hd_err(HD_OK, hd_template_load(dir, "welcome", &tpl, &err), &err);
    json_t *vars = json_pack("{s:s}", "name", "Bo");
    hd_rendered *r = NULL;
    assert_hd(HD_OK, hd_template_render(tpl, vars, &r, NULL));
    assert_string_equal(r->subject, "Welcome Bo");
    assert_string_equal(r->text, "Hi Bo\n");
    hd_rendered_free(r);
    hd_template_free(tpl);

    /* A set wants every name it lists: a service must not start with one missing. */
    hd_templates *set = NULL;
    const char *four[] = {"welcome", "email_verification", "password_reset", "security_alert"};
    assert_hd_err(HD_ENOTFOUND, hd_templates_open_names(dir, four, 4, &set, &err), &err);
    assert_null(set);
    const char *names[] = {"welcome"};
    assert_hd(HD_OK, hd_templates_open_names(dir, names, 1, &set, NULL));
    assert_int_equal(hd_templates_count(set), 1);
    hd_templates_close(set);
    const char *twice[] = {"welcome", "welcome"};
    assert_hd(HD_EINVAL, hd_templates_open_names(dir, twice, 2, &set, NULL));

    write_file(dir, "broken.subject", "Broken\n");
    write_file(dir, "broken.html", "<p>\n{{name</p>\n");
    write_file(dir, "broken.txt", "x\n");
    assert_hd_err(HD_ETYPE, hd_template_load(dir, "broken", &tpl, &err), &err);
    assert_string_equal(err.text,
                        "template 'broken' (html): unterminated '{{' at line 2, column 1");

    char *big = malloc(HD_TEMPLATE_FILE_MAX + 2);
    memset(big, 'x', HD_TEMPLATE_FILE_MAX + 1);
    big[HD_TEMPLATE_FILE_MAX + 1] = '\0';
    write_file(dir, "broken.html", big);
    free(big);
    assert_hd_err(HD_ETOOBIG, hd_template_load(dir, "broken", &tpl, &err), &err);

    assert_hd(HD_EINVAL, hd_template_load(dir, "../welcome", &tpl, NULL));
    assert_hd(HD_EINVAL, hd_template_load(NULL, "welcome", &tpl, NULL));
    assert_hd(HD_ENOTFOUND, hd_template_load("/nonexistent-herald-dir", "welcome", &tpl, NULL));
    json_decref(vars);
    hd_test_rmtree(dir);
    free(dir);
}

static void default_dir_is_relative_templates(void **state)
{
    (void)state;
    assert_non_null(hd_templates_default_dir());
    assert_true(strlen(hd_templates_default_dir()) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(substitutes_variables_with_optional_spaces),
        cmocka_unit_test(escapes_values_in_html_only),
        cmocka_unit_test(missing_variable_is_an_error_that_names_it),
        cmocka_unit_test(syntax_errors_give_part_line_and_column),
        cmocka_unit_test(scalars_render_as_json_and_containers_are_refused),
        cmocka_unit_test(line_breaks_are_refused_in_the_subject_only),
        cmocka_unit_test(variables_are_listed_once_in_order),
        cmocka_unit_test(shipped_templates_load_list_and_render),
        cmocka_unit_test(load_reports_missing_broken_and_oversized_files),
        cmocka_unit_test(default_dir_is_relative_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
