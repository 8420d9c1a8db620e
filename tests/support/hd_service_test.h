/* hd_service_test.h — a herald service binary under test on a port of its own: pick a free
 * port (hd_test_free_port, hd_test.h), start it and wait until its /health answers, call its
 * HTTP API (libcurl). Shared by test_notifications.c and test_notifications_standby.c.
 *
 * Include after the cmocka prelude (see hd_test.h): the helpers fail the test on an error. */
#ifndef HD_SERVICE_TEST_H
#define HD_SERVICE_TEST_H

#include <stddef.h>

#include "hd_proc.h"

/* hd_proc_start(o) into *out (new: hd_proc_free; set before the wait, so that the caller's
 * teardown stops it when the wait fails), then waits up to timeout_ms for GET
 * http://127.0.0.1:<port>/health to answer 200. Fails the test (with the last 30 lines of the
 * service's log when it has one) when it cannot start or does not become healthy. */
void hd_test_service_start(const hd_proc_options *o, int port, int timeout_ms, hd_proc **out);

/* A response body as it arrives: data NUL-terminated (new, NULL until a byte came). */
typedef struct hd_test_body {
    char *data;
    size_t len;
} hd_test_body;

/* libcurl's CURLOPT_WRITEFUNCTION for an hd_test_body (CURLOPT_WRITEDATA): appends; 0 (curl
 * then fails the transfer) when out of memory. */
size_t hd_test_body_write(char *p, size_t size, size_t n, void *body);

/* One HTTP request with libcurl (10 s timeout): method url, the header lines in headers
 * (NULL-terminated, or NULL), json (sent as application/json, or NULL: no body). on_header,
 * when not NULL, is CURLOPT_HEADERFUNCTION (with a NULL context). Returns the status, 0 when
 * the server did not answer; *resp the body (new, may be NULL; resp NULL: dropped);
 * content_type (ct_cap bytes, may be NULL) the Content-Type ("" when none). All borrowed. */
long hd_test_http(const char *method, const char *url, const char *const *headers, const char *json,
                  size_t (*on_header)(char *, size_t, size_t, void *), char **resp,
                  char *content_type, size_t ct_cap);

#endif
