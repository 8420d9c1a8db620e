/* herald/service.h — libherald-service in one include: what a service process adds to the
 * patterns of libherald (herald/herald.h, included here too).
 *
 * Link with herald-service (pkg-config herald-service, CMake herald::herald-service), which
 * brings libherald along and adds libmicrohttpd (HTTP) and libcurl (SMTP).
 */
#ifndef HERALD_SERVICE_H
#define HERALD_SERVICE_H

#include "herald/herald.h"

/* service plumbing: settings, HTTP with problem+json, Prometheus metrics */
#include "herald/config.h"
#include "herald/http.h"
#include "herald/metrics.h"
#include "herald/ratelimit.h"
#include "herald/metrics_replica.h"

/* email: templates and senders (SMTP, log, in-memory) */
#include "herald/template.h"
#include "herald/sender.h"

#endif /* HERALD_SERVICE_H */
