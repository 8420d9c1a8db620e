/* Unit tests for herald/config.h: .env parsing, precedence, typed getters, --help. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test.h"
#include "herald/config.h"

/* Write text to <dir>/<name> and return the path (caller frees). */
static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void dotenv_edge_cases_parse_as_documented(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("config");
    char *path = write_file(dir, ".env",
                            "# a comment line\n"
                            "\n"
                            "   \t  \n"
                            "HDT_PLAIN=value\n"
                            "  HDT_SPACES  =   padded value   \n"
                            "export HDT_EXPORTED=yes\n"
                            "HDT_COMMENT=value # a comment\n"
                            "HDT_HASH=a#b\n"
                            "HDT_ONLY_COMMENT= # nothing\n"
                            "HDT_EMPTY=\n"
                            "HDT_DOUBLE=\"tab\\there \\\"q\\\" back\\\\slash \\x\" # c\n"
                            "HDT_SINGLE='lit\\n # not a comment'\n"
                            "HDT_EQUALS=a=b=c\n"
                            "HDT_CRLF=windows\r\n"
                            "HDT_TWICE=first\n"
                            "HDT_TWICE=second\n"
                            "HDT_URL=postgresql://u:p@h/db?sslmode=disable\n"
                            "HDT_LAST=no newline at the end");
    hd_config *cfg = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_config_load(&cfg, path, &err), &err);
    assert_string_equal(hd_config_get(cfg, "HDT_PLAIN", NULL), "value");
    assert_string_equal(hd_config_get(cfg, "HDT_SPACES", NULL), "padded value");
    assert_string_equal(hd_config_get(cfg, "HDT_EXPORTED", NULL), "yes");
    assert_string_equal(hd_config_get(cfg, "HDT_COMMENT", NULL), "value");
    assert_string_equal(hd_config_get(cfg, "HDT_HASH", NULL), "a#b");
    assert_string_equal(hd_config_get(cfg, "HDT_ONLY_COMMENT", NULL), "");
    assert_string_equal(hd_config_get(cfg, "HDT_EMPTY", "default"), "");
    assert_string_equal(hd_config_get(cfg, "HDT_DOUBLE", NULL), "tab\there \"q\" back\\slash \\x");
    assert_string_equal(hd_config_get(cfg, "HDT_SINGLE", NULL), "lit\\n # not a comment");
    assert_string_equal(hd_config_get(cfg, "HDT_EQUALS", NULL), "a=b=c");
    assert_string_equal(hd_config_get(cfg, "HDT_CRLF", NULL), "windows");
    assert_string_equal(hd_config_get(cfg, "HDT_TWICE", NULL), "second");
    assert_string_equal(hd_config_get(cfg, "HDT_URL", NULL),
                        "postgresql://u:p@h/db?sslmode=disable");
    assert_string_equal(hd_config_get(cfg, "HDT_LAST", NULL), "no newline at the end");
    assert_string_equal(hd_config_get(cfg, "HDT_MISSING", "fallback"), "fallback");
    assert_null(hd_config_get(cfg, "HDT_MISSING", NULL));
    assert_string_equal(hd_config_source(cfg, "HDT_PLAIN"), path);
    assert_null(hd_config_source(cfg, "HDT_MISSING"));
    /* .env values are not exported to the process environment. */
    assert_null(getenv("HDT_PLAIN"));
    hd_config_free(cfg);
    free(path);
    hd_test_rmtree(dir);
    free(dir);
}

static void environment_wins_over_dotenv(void **state)
{
    (void)state;
    char *dir = hd_test_tmpdir("config");
    char *path = write_file(dir, "settings.env", "HDT_BOTH=from-file\nHDT_FILE_ONLY=file\n");
    setenv("HDT_BOTH", "from-env", 1);
    setenv("HDT_ENV_ONLY", "env", 1);
    hd_config *cfg = NULL;
    hd_error err;
    assert_hd_err(HD_OK, hd_config_load(&cfg, path, &err), &err);
    assert_string_equal(hd_config_get(cfg, "HDT_BOTH", NULL), "from-env");
    assert_string_equal(hd_config_source(cfg, "HDT_BOTH"), "environment");
    assert_string_equal(hd_config_get(cfg, "HDT_FILE_ONLY", NULL), "file");
    assert_string_equal(hd_config_get(cfg, "HDT_ENV_ONLY", NULL), "env");
    /* A snapshot: later changes to the environment are not seen. */
    setenv("HDT_BOTH", "changed", 1);
    assert_string_equal(hd_config_get(cfg, "HDT_BOTH", NULL), "from-env");
    /* hd_config_set overrides both. */
    assert_hd(HD_OK, hd_config_set(cfg, "HDT_BOTH", "set"));
    assert_string_equal(hd_config_get(cfg, "HDT_BOTH", NULL), "set");
    assert_string_equal(hd_config_source(cfg, "HDT_BOTH"), "set");
    unsetenv("HDT_BOTH");
    unsetenv("HDT_ENV_ONLY");
    hd_config_free(cfg);
    free(path);
    hd_test_rmtree(dir);
    free(dir);
}

static void syntax_errors_name_the_file_and_line(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"OK=1\nOK2=2\nthis line has no equals\n", ":3: expected '=' after the name"},
        {"=value\n", ":1: expected KEY=VALUE"},
        {"9KEY=value\n", ":1: expected KEY=VALUE"},
        {"KEY=\"open\n", ":1: unterminated double quote"},
        {"KEY='open\n", ":1: unterminated single quote"},
        {"KEY=\"a\" trailing\n", ":1: unexpected text after the closing quote"},
        {"export\n", ":1: expected '=' after the name"},
    };
    char *dir = hd_test_tmpdir("config");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_file(dir, "bad.env", cases[i].text);
        hd_config *cfg = (hd_config *)0x1;
        hd_error err;
        assert_hd(HD_ECONFIG, hd_config_load(&cfg, path, &err));
        assert_null(cfg);
        char expected[512];
        snprintf(expected, sizeof expected, "%s%s", path, cases[i].message);
        assert_string_equal(err.text, expected);
        free(path);
    }
    hd_test_rmtree(dir);
    free(dir);
}

/* hd_config_read_dotenv_buffer reads text exactly as a file: the same values, the same
 * errors (named after the buffer), a text without a final newline, and a NUL ending its line. */
static void dotenv_buffer_reads_like_a_file(void **state)
{
    (void)state;
    static const char text[] =
        "# c\nexport HDT_A = 'x # y'\nHDT_B=\"1\\t2\"\nHDT_C=v\0tail\nHDT_D=end";
    hd_config *cfg = hd_config_new_empty();
    hd_error err;
    assert_hd_err(HD_OK, hd_config_read_dotenv_buffer(cfg, text, sizeof text - 1, "buf.env", &err),
                  &err);
    assert_string_equal(hd_config_get(cfg, "HDT_A", NULL), "x # y");
    assert_string_equal(hd_config_get(cfg, "HDT_B", NULL), "1\t2");
    assert_string_equal(hd_config_get(cfg, "HDT_C", NULL), "v");
    assert_string_equal(hd_config_get(cfg, "HDT_D", NULL), "end");
    assert_string_equal(hd_config_source(cfg, "HDT_D"), "buf.env");
    assert_hd(HD_EINVAL, hd_config_read_dotenv_buffer(cfg, "X=1", 3, "again.env", NULL));
    hd_config_free(cfg);

    cfg = hd_config_new_empty();
    assert_hd(HD_ECONFIG,
              hd_config_read_dotenv_buffer(cfg, "OK=1\nno equals", 15, "buf.env", &err));
    assert_string_equal(err.text, "buf.env:2: expected '=' after the name");
    hd_config_free(cfg);
    cfg = hd_config_new_empty();
    assert_hd(HD_OK, hd_config_read_dotenv_buffer(cfg, NULL, 0, "empty.env", NULL));
    hd_config_free(cfg);
}

static void missing_files_explicit_fail_default_is_optional(void **state)
{
    (void)state;
    hd_config *cfg = NULL;
    hd_error err;
    assert_hd(HD_EIO, hd_config_load(&cfg, "/nonexistent/herald/.env", &err));
    assert_null(cfg);
    assert_non_null(strstr(err.text, "/nonexistent/herald/.env"));

    /* NULL means ./.env when present; an absent one is fine. */
    char *dir = hd_test_tmpdir("config");
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    assert_hd_err(HD_OK, hd_config_load(&cfg, NULL, &err), &err);
    assert_null(hd_config_get(cfg, "HDT_FROM_DOT_ENV", NULL));
    hd_config_free(cfg);
    char *path = write_file(dir, ".env", "HDT_FROM_DOT_ENV=here\n");
    assert_hd_err(HD_OK, hd_config_load(&cfg, NULL, &err), &err);
    assert_string_equal(hd_config_get(cfg, "HDT_FROM_DOT_ENV", NULL), "here");
    assert_string_equal(hd_config_source(cfg, "HDT_FROM_DOT_ENV"), ".env");
    hd_config_free(cfg);
    assert_int_equal(chdir(cwd), 0);
    free(path);
    hd_test_rmtree(dir);
    free(dir);
    assert_hd(HD_EINVAL, hd_config_load(NULL, NULL, NULL));
}

static void integers_are_checked_with_clear_messages(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    hd_error err;
    int64_t v = 0;
    assert_hd(HD_OK, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_int_equal(v, 100); /* unset: the default */
    hd_config_set(cfg, "HD_RELAY_BATCH", "");
    assert_hd(HD_OK, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_int_equal(v, 100); /* empty: the default too */
    hd_config_set(cfg, "HD_RELAY_BATCH", " 250 ");
    assert_hd(HD_OK, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_int_equal(v, 250);
    hd_config_set(cfg, "HD_RELAY_BATCH", "-3");
    assert_hd(HD_OK, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, -5, 1000, &v, &err));
    assert_int_equal(v, -3);

    v = 7;
    hd_config_set(cfg, "HD_RELAY_BATCH", "abc");
    assert_hd(HD_ECONFIG, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_string_equal(err.text, "HD_RELAY_BATCH: 'abc' is not an integer");
    assert_int_equal(v, 7); /* untouched on failure */
    hd_config_set(cfg, "HD_RELAY_BATCH", "12abc");
    assert_hd(HD_ECONFIG, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_string_equal(err.text, "HD_RELAY_BATCH: '12abc' is not an integer");
    hd_config_set(cfg, "HD_RELAY_BATCH", "1.5");
    assert_hd(HD_ECONFIG, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_string_equal(err.text, "HD_RELAY_BATCH: '1.5' is not an integer");
    hd_config_set(cfg, "HD_RELAY_BATCH", "0");
    assert_hd(HD_ECONFIG, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_string_equal(err.text, "HD_RELAY_BATCH: 0 is out of range [1, 1000]");
    hd_config_set(cfg, "HD_RELAY_BATCH", "99999999999999999999");
    assert_hd(HD_ECONFIG, hd_config_get_int(cfg, "HD_RELAY_BATCH", 100, 1, 1000, &v, &err));
    assert_string_equal(err.text,
                        "HD_RELAY_BATCH: '99999999999999999999' is out of range [1, 1000]");
    assert_int_equal(v, 7);
    hd_config_free(cfg);
}

static void listen_addresses_take_v4_v6_and_refuse_the_rest(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    hd_error err;
    char host[16] = "untouched";
    uint16_t port = 7;
    assert_hd(HD_OK, hd_config_get_listen(cfg, "HD_X_LISTEN", "127.0.0.1:8081", host, sizeof host,
                                          &port, &err));
    assert_string_equal(host, "127.0.0.1"); /* unset: the default */
    assert_int_equal(port, 8081);
    hd_config_set(cfg, "HD_X_LISTEN", "[::1]:0");
    assert_hd(HD_OK, hd_config_get_listen(cfg, "HD_X_LISTEN", "127.0.0.1:8081", host, sizeof host,
                                          &port, &err));
    assert_string_equal(host, "::1"); /* brackets dropped; port 0 = any free one */
    assert_int_equal(port, 0);
    static const char *const bad[] = {
        "8081",     ":8081",      "[]:1",    "host:",
        "host:80x", "host:65536", "host:-1", "a-very-long-host-name:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hd_config_set(cfg, "HD_X_LISTEN", bad[i]);
        assert_hd(HD_ECONFIG, hd_config_get_listen(cfg, "HD_X_LISTEN", "127.0.0.1:8081", host,
                                                   sizeof host, &port, &err));
        assert_non_null(strstr(err.text, "HD_X_LISTEN"));
        assert_non_null(strstr(err.text, "is not address:port (e.g. 127.0.0.1:8081)"));
    }
    assert_string_equal(host, "::1"); /* untouched on failure */
    assert_int_equal(port, 0);
    hd_config_free(cfg);
}

static void booleans_accept_the_usual_spellings(void **state)
{
    (void)state;
    hd_config *cfg = hd_config_new_empty();
    hd_error err;
    int b = -1;
    assert_hd(HD_OK, hd_config_get_bool(cfg, "HD_FLAG", 1, &b, &err));
    assert_int_equal(b, 1);
    const char *yes[] = {"true", "TRUE", "yes", "On", "1"};
    const char *no[] = {"false", "False", "no", "OFF", "0"};
    for (size_t i = 0; i < 5; i++) {
        hd_config_set(cfg, "HD_FLAG", yes[i]);
        assert_hd(HD_OK, hd_config_get_bool(cfg, "HD_FLAG", 0, &b, &err));
        assert_int_equal(b, 1);
        hd_config_set(cfg, "HD_FLAG", no[i]);
        assert_hd(HD_OK, hd_config_get_bool(cfg, "HD_FLAG", 1, &b, &err));
        assert_int_equal(b, 0);
    }
    hd_config_set(cfg, "HD_FLAG", "maybe");
    assert_hd(HD_ECONFIG, hd_config_get_bool(cfg, "HD_FLAG", 0, &b, &err));
    assert_string_equal(err.text,
                        "HD_FLAG: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)");
    hd_config_free(cfg);
}

static void durations_need_a_unit_and_are_range_checked(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {{"500ms", 500}, {"2s", 2000}, {"1m", 60000},   {"1h", 3600000},
                {"0", 0},       {"0s", 0},    {" 15s ", 15000}};
    hd_config *cfg = hd_config_new_empty();
    hd_error err;
    int64_t ms = -1;
    assert_hd(HD_OK, hd_config_get_duration_ms(cfg, "HD_POLL", 250, 0, 86400000, &ms, &err));
    assert_int_equal(ms, 250);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        hd_config_set(cfg, "HD_POLL", good[i].text);
        assert_hd_err(HD_OK, hd_config_get_duration_ms(cfg, "HD_POLL", 250, 0, 86400000, &ms, &err),
                      &err);
        assert_int_equal(ms, good[i].ms);
    }
    static const struct {
        const char *text;
        const char *message;
    } bad[] = {
        {"30", "HD_POLL: '30' needs a unit: ms, s, m or h (e.g. '30s')"},
        {"5x", "HD_POLL: '5x' has an unknown unit (use ms, s, m or h)"},
        {"5 s", "HD_POLL: '5 s' is not a duration (e.g. '500ms', '2s', '1m', '1h')"},
        {"-1s", "HD_POLL: '-1s' is not a duration (e.g. '500ms', '2s', '1m', '1h')"},
        {"1.5s", "HD_POLL: '1.5s' is not a duration (e.g. '500ms', '2s', '1m', '1h')"},
        {"s", "HD_POLL: 's' is not a duration (e.g. '500ms', '2s', '1m', '1h')"},
        {"2d", "HD_POLL: '2d' has an unknown unit (use ms, s, m or h)"},
        {"25h", "HD_POLL: '25h' is out of range [0ms, 86400000ms]"},
        {"99999999999999999999ms", "HD_POLL: '99999999999999999999ms' is out of range [0ms, "
                                   "86400000ms]"},
        {"9223372036854775807h", "HD_POLL: '9223372036854775807h' is out of range [0ms, "
                                 "86400000ms]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms = -1;
        hd_config_set(cfg, "HD_POLL", bad[i].text);
        assert_hd(HD_ECONFIG,
                  hd_config_get_duration_ms(cfg, "HD_POLL", 250, 0, 86400000, &ms, &err));
        assert_string_equal(err.text, bad[i].message);
        assert_int_equal(ms, -1);
    }
    hd_config_free(cfg);
}

static void help_lists_every_setting(void **state)
{
    (void)state;
    static const hd_setting settings[] = {
        {"HD_HTTP_PORT", "8080", "port of the HTTP API"},
        {"HD_STORE_URL", NULL, "database URL"},
        {"HD_TOKEN", "", "bearer token for mutating endpoints"},
        {NULL, NULL, NULL},
    };
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    hd_config_print_help(f, "herald-users", "The users service.", settings);
    fclose(f);
    assert_string_equal(text,
                        "Usage: herald-users [--help]\n"
                        "\n"
                        "The users service.\n"
                        "\n"
                        "Settings (environment variables; also read from ./.env, the "
                        "environment wins):\n"
                        "\n"
                        "  HD_HTTP_PORT  port of the HTTP API (default: 8080)\n"
                        "  HD_STORE_URL  database URL (required)\n"
                        "  HD_TOKEN      bearer token for mutating endpoints (default: empty)\n");
    free(text);

    char *argv1[] = {"prog", "--port", "1", "--help", NULL};
    char *argv2[] = {"prog", "-h", NULL};
    char *argv3[] = {"prog", "--helpful", NULL};
    assert_true(hd_config_wants_help(4, argv1));
    assert_true(hd_config_wants_help(2, argv2));
    assert_false(hd_config_wants_help(2, argv3));
    assert_false(hd_config_wants_help(1, argv3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dotenv_edge_cases_parse_as_documented),
        cmocka_unit_test(environment_wins_over_dotenv),
        cmocka_unit_test(syntax_errors_name_the_file_and_line),
        cmocka_unit_test(dotenv_buffer_reads_like_a_file),
        cmocka_unit_test(missing_files_explicit_fail_default_is_optional),
        cmocka_unit_test(integers_are_checked_with_clear_messages),
        cmocka_unit_test(listen_addresses_take_v4_v6_and_refuse_the_rest),
        cmocka_unit_test(booleans_accept_the_usual_spellings),
        cmocka_unit_test(durations_need_a_unit_and_are_range_checked),
        cmocka_unit_test(help_lists_every_setting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
