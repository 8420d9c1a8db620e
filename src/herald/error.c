/* error.c — error codes and reports; see error.h. */
#include "herald/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *hd_strerror(int code)
{
    switch (code) {
    case HD_OK:
        return "success";
#define HD_ERRNO_MSG(name, value, msg)                                                             \
    case name:                                                                                     \
        return msg;
        HD_ERRNO_MAP(HD_ERRNO_MSG)
#undef HD_ERRNO_MSG
    default:
        return "unknown error";
    }
}

const char *hd_err_name(int code)
{
    switch (code) {
    case HD_OK:
        return "HD_OK";
#define HD_ERRNO_NAME(name, value, msg)                                                            \
    case name:                                                                                     \
        return #name;
        HD_ERRNO_MAP(HD_ERRNO_NAME)
#undef HD_ERRNO_NAME
    default:
        return "HD_E?";
    }
}

int hd_error_set(hd_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    if (fmt == NULL) {
        snprintf(err->text, sizeof err->text, "%s", hd_strerror(code));
        return code;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
    return code;
}

void hd_error_clear(hd_error *err)
{
    if (err == NULL)
        return;
    err->code = HD_OK;
    err->text[0] = '\0';
}
