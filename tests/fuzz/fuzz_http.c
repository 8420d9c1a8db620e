/* fuzz_http.c — libFuzzer target for the HTTP router and both services' JSON routes
 * (build: tests/fuzz/README.md).
 *
 * Every byte of a request comes from outside, so the path from the request line to the
 * reply must survive any input. The target runs each input through
 * hd_http_server_dispatch — the same steps as over a socket (request-line checks,
 * percent-decoding, routing, the body limit, the handler, the observer), with no network
 * — on two servers built as the services build theirs, over in-memory SQLite:
 * users (users_http_new) and notifications (notif_api_mount). The observer writes the
 * access log line and updates the request metrics, as in the services.
 *
 * Input: "METHOD\nTARGET\nName: value\n...\n\nBODY" — the method and the target are
 * taken byte for byte (any byte, as a client could send them); up to 8 header lines
 * until an empty one; the rest is the body. The seeds in corpus/http carry the bearer
 * tokens below so that the fuzzer gets past authentication.
 *
 * Checked on every input, for both services (a failure traps):
 *   1. dispatch returns 0 and a status in 100..599;
 *   2. no 5xx other than 503 (a hostile request is the client's fault: 4xx);
 *   3. a JSON or problem+json body parses, and a problem's "status" equals the status;
 *   4. every access-log line and the whole /metrics text stay valid UTF-8.
 * The applications are rebuilt every 4096 inputs so the databases stay small and a run
 * does not slow down as it creates users. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "herald/http.h"
#include "herald/log.h"
#include "herald/metrics.h"
#include "herald/store.h"

#include "notifications/api.h"
#include "notifications/application.h"
#include "notifications/templates.h"
#include "users/api.h"
#include "users/application.h"
#include "users/repository.h"

#ifndef HD_SOURCE_DIR
#define HD_SOURCE_DIR "." /* run from the repository root */
#endif

#define USERS_ADMIN_TOKEN "fuzz-admin-token-0123456789abcdef0123456789"
/* The notifications API's bearer token (the seeds send it, so the fuzzer gets past it). */
#define NOTIF_API_TOKEN "fuzz-notif-token-0123456789abcdef0123456789"

struct world {
    hd_logger *lg;
    FILE *log;
    hd_metrics *metrics, *notif_metrics; /* one each: the services' families differ */
    hd_store *users_store, *notif_store;
    users_app *users;
    users_http *users_http;
    hd_http_server *users_srv;
    hd_templates *templates;
    notif_app *notif;
    notif_api *notif_api;
    hd_http_server *notif_srv;
};

static struct world W;
static unsigned runs;

static void die(const char *what, const hd_error *err)
{
    fprintf(stderr, "fuzz_http: %s: %s\n", what, err ? err->text : "");
    abort();
}

static void build_world(void)
{
    hd_error err;
    W.log = tmpfile();
    W.lg = hd_logger_new("fuzz", HD_LOG_INFO, W.log);
    W.metrics = hd_metrics_new();
    W.notif_metrics = hd_metrics_new();
    if (!W.log || !W.lg || !W.metrics || !W.notif_metrics)
        die("setup", NULL);

    if (hd_store_open("sqlite::memory:", &W.users_store, &err) < 0 ||
        users_repo_migrate(W.users_store, &err) < 0)
        die("users store", &err);
    users_config ucfg = {.pwhash_opslimit = crypto_pwhash_OPSLIMIT_MIN,
                         .pwhash_memlimit = crypto_pwhash_MEMLIMIT_MIN};
    if (users_app_new(W.users_store, &ucfg, &W.users, &err) < 0)
        die("users app", &err);
    if (hd_http_server_new(&(hd_http_options){.max_body_bytes = 16 * 1024, .logger = W.lg},
                           &W.users_srv, &err) < 0)
        die("users server", &err);
    users_http_options ho = {
        .app = W.users, .admin_token = USERS_ADMIN_TOKEN, .logger = W.lg, .metrics = W.metrics};
    if (users_http_new(W.users_srv, &ho, &W.users_http, &err) < 0)
        die("users routes", &err);

    if (hd_store_open("sqlite::memory:", &W.notif_store, &err) < 0 ||
        notif_app_migrate(W.notif_store, &err) < 0)
        die("notifications store", &err);
    if (notif_templates_open(HD_SOURCE_DIR "/templates", &W.templates, &err) < 0)
        die("templates (run from the repository root)", &err);
    notif_settings ns = {.mail_from = "noreply@herald.example", .backoff_base_ms = -1};
    if (notif_app_new(&ns, W.templates, W.lg, NULL, &W.notif, &err) < 0)
        die("notifications app", &err);
    notif_api_deps deps = {.app = W.notif,
                           .store = W.notif_store,
                           .metrics = W.notif_metrics,
                           .lg = W.lg,
                           .token = NOTIF_API_TOKEN};
    if (notif_api_new(&deps, &W.notif_api, &err) < 0)
        die("notifications api", &err);
    if (hd_http_server_new(&(hd_http_options){.logger = W.lg}, &W.notif_srv, &err) < 0 ||
        notif_api_mount(W.notif_api, W.notif_srv, &err) < 0)
        die("notifications routes", &err);
}

static void free_world(void)
{
    hd_http_server_free(W.users_srv);
    users_http_free(W.users_http);
    users_app_free(W.users);
    hd_store_close(W.users_store);
    hd_http_server_free(W.notif_srv);
    notif_api_free(W.notif_api);
    notif_app_free(W.notif);
    hd_templates_close(W.templates);
    hd_store_close(W.notif_store);
    hd_metrics_free(W.metrics);
    hd_metrics_free(W.notif_metrics);
    hd_logger_free(W.lg);
    fclose(W.log);
    memset(&W, 0, sizeof W);
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (k == 0 || (k == 2 && c < 0xC2) || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

/* A copy of data[0..n) without NULs (a C string cannot carry one; MHD stops there too). */
static char *cstr(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (data[i] != 0)
            s[k++] = (char)data[i];
    s[k] = '\0';
    return s;
}

static void check(const char *who, const hd_http_dispatched *d)
{
    if (d->status < 100 || d->status > 599) {
        fprintf(stderr, "%s: status %d\n", who, d->status);
        __builtin_trap();
    }
    if (d->status >= 500 && d->status != 503) {
        fprintf(stderr, "%s: %d %s\n", who, d->status, d->body);
        __builtin_trap();
    }
    const char *ct = d->content_type ? d->content_type : "";
    if (strncmp(ct, "application/json", 16) == 0 ||
        strncmp(ct, "application/problem+json", 24) == 0) {
        json_error_t je;
        json_t *j = json_loadb(d->body, d->len, 0, &je);
        if (j == NULL) {
            fprintf(stderr, "%s: not JSON (%s): %s\n", who, je.text, d->body);
            __builtin_trap();
        }
        json_t *st = json_object_get(j, "status");
        if (ct[12] == 'p' && json_integer_value(st) != d->status)
            __builtin_trap();
        json_decref(j);
    }
}

static void check_log_and_metrics(void)
{
    fflush(W.log);
    long end = ftell(W.log);
    if (end > 0) {
        char *buf = malloc((size_t)end);
        rewind(W.log);
        size_t got = fread(buf, 1, (size_t)end, W.log);
        if (!valid_utf8((unsigned char *)buf, got))
            __builtin_trap();
        free(buf);
    }
    rewind(W.log); /* the next input's lines overwrite these */
    if (ftruncate(fileno(W.log), 0) != 0)
        __builtin_trap();
    hd_metrics *regs[] = {W.metrics, W.notif_metrics};
    for (int i = 0; i < 2; i++) {
        char *text;
        size_t len;
        if (hd_metrics_render(regs[i], &text, &len) < 0)
            __builtin_trap();
        if (!valid_utf8((unsigned char *)text, len))
            __builtin_trap();
        free(text);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (runs++ % 4096 == 0) {
        if (runs > 1)
            free_world();
        build_world();
    }
    /* METHOD \n TARGET \n headers... \n \n body */
    const uint8_t *p = data, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
        return 0;
    char *method = cstr(p, (size_t)(nl - p));
    p = nl + 1;
    nl = memchr(p, '\n', (size_t)(end - p));
    char *target = cstr(p, nl ? (size_t)(nl - p) : (size_t)(end - p));
    p = nl ? nl + 1 : end;
    char *hdr_store[16] = {0};
    const char *headers[17] = {0};
    int nh = 0;
    while (p < end && nh < 16) {
        nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const uint8_t *next = nl ? nl + 1 : end;
        if (len == 0) {
            p = next;
            break;
        }
        const uint8_t *colon = memchr(p, ':', len);
        if (colon != NULL) {
            hdr_store[nh] = cstr(p, (size_t)(colon - p));
            const uint8_t *v = colon + 1;
            while (v < p + len && *v == ' ')
                v++;
            hdr_store[nh + 1] = cstr(v, (size_t)(p + len - v));
            headers[nh] = hdr_store[nh];
            headers[nh + 1] = hdr_store[nh + 1];
            nh += 2;
        }
        p = next;
    }
    const char *body = (const char *)p;
    size_t body_len = (size_t)(end - p);

    hd_http_dispatched d;
    if (hd_http_server_dispatch(W.users_srv, method, target, headers, body, body_len, &d) < 0)
        __builtin_trap();
    check("users", &d);
    hd_http_dispatched_release(&d);
    if (hd_http_server_dispatch(W.notif_srv, method, target, headers, body, body_len, &d) < 0)
        __builtin_trap();
    check("notifications", &d);
    hd_http_dispatched_release(&d);
    check_log_and_metrics();

    for (int i = 0; i < nh; i++)
        free(hdr_store[i]);
    free(method);
    free(target);
    return 0;
}
