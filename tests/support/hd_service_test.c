/* hd_service_test.c — see hd_service_test.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hd_service_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "hd_test.h"

void hd_test_service_start(const hd_proc_options *o, int port, int timeout_ms, hd_proc **out)
{
    hd_error err;
    assert_hd_err(0, hd_proc_start(o, out, &err), &err);
    char health[64];
    snprintf(health, sizeof health, "http://127.0.0.1:%d/health", port);
    if (hd_proc_wait_http(*out, health, timeout_ms, &err) < 0) {
        hd_proc_dump_log(*out, stderr, 30);
        fail_msg("%s", err.text);
    }
}

size_t hd_test_body_write(char *p, size_t size, size_t n, void *body)
{
    hd_test_body *b = body;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (d == NULL)
        return 0;
    memcpy(d + b->len, p, size * n);
    b->len += size * n;
    d[b->len] = '\0';
    b->data = d;
    return size * n;
}

long hd_test_http(const char *method, const char *url, const char *const *headers, const char *json,
                  size_t (*on_header)(char *, size_t, size_t, void *), char **resp,
                  char *content_type, size_t ct_cap)
{
    CURL *c = curl_easy_init();
    assert_non_null(c);
    hd_test_body b = {0};
    struct curl_slist *h = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hd_test_body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (on_header != NULL)
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        h = curl_slist_append(h, headers[i]);
    if (json != NULL) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (content_type != NULL)
            snprintf(content_type, ct_cap, "%s", ct ? ct : "");
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (resp != NULL)
        *resp = b.data;
    else
        free(b.data);
    return status;
}
