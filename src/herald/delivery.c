/* delivery.c — header lookup and reasons; see delivery.h. */
#include "herald/delivery.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *hd_consume_result_name(hd_consume_result r)
{
    switch (r) {
    case HD_CONSUME_OK:
        return "OK";
    case HD_CONSUME_RETRY:
        return "RETRY";
    case HD_CONSUME_REJECT:
        return "REJECT";
    }
    return "?";
}

const char *hd_delivery_header(const hd_delivery *d, const char *name)
{
    if (d == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < d->n_headers; i++)
        if (strcmp(d->headers[i].name, name) == 0)
            return d->headers[i].value;
    return NULL;
}

void hd_delivery_reason(const hd_delivery *d, const char *fmt, ...)
{
    if (d == NULL || d->reason_buf == NULL || fmt == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason_buf, HD_REASON_MAX, fmt, ap);
    va_end(ap);
}
