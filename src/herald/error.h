/* herald/error.h — error codes and error reports.
 *
 * Every herald function that can fail returns an int: 0 (HD_OK) or more on success, a
 * negative HD_E* code on failure (the libuv convention). hd_strerror() turns a code into a
 * fixed message; hd_err_name() into its symbol ("HD_EJSON").
 *
 * Functions whose failures need more than a code (which attribute was missing, what the
 * broker said) also take an `hd_error *err` out-parameter, like jansson's json_error_t: on
 * failure they fill err->code (the same negative code they return) and err->text (a
 * human-readable reason). err may always be NULL when the caller only wants the code.
 * hd_error is a plain value owned by the caller; nothing in it needs freeing.
 */
#ifndef HERALD_ERROR_H
#define HERALD_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro: name, value, message. Values are stable: never renumber, only append. */
#define HD_ERRNO_MAP(X)                                                                            \
    X(HD_ENOMEM, -1, "out of memory")                                                              \
    X(HD_EINVAL, -2, "invalid argument")                                                           \
    X(HD_ENOTFOUND, -3, "not found")                                                               \
    X(HD_EEXIST, -4, "already exists")                                                             \
    X(HD_ETOOBIG, -5, "input too large")                                                           \
    X(HD_EJSON, -6, "malformed JSON")                                                              \
    X(HD_EMISSING, -7, "required attribute missing")                                               \
    X(HD_ETYPE, -8, "attribute has the wrong type or format")                                      \
    X(HD_EUNKNOWN, -9, "unknown event type")                                                       \
    X(HD_EVERSION, -10, "unsupported version")                                                     \
    X(HD_EVALIDATE, -11, "payload rejected by its validator")                                      \
    X(HD_EHANDLER, -12, "handler failed")                                                          \
    X(HD_ESTATE, -13, "operation not allowed in the current state")                                \
    X(HD_ESTORE, -14, "store error")                                                               \
    X(HD_EBUSY, -15, "resource busy")                                                              \
    X(HD_EURL, -16, "malformed URL")                                                               \
    X(HD_ECONNECT, -17, "connection failed")                                                       \
    X(HD_EAMQP, -18, "broker refused the operation")                                               \
    X(HD_ETIMEOUT, -19, "timed out")                                                               \
    X(HD_ENACKED, -20, "broker nacked the message")                                                \
    X(HD_ERETURNED, -21, "message returned as unroutable")                                         \
    X(HD_ECLOSED, -22, "connection closed")                                                        \
    X(HD_EIO, -23, "input/output error")                                                           \
    X(HD_ESMTP, -24, "mail delivery failed")                                                       \
    X(HD_EAUTH, -25, "not authorised")                                                             \
    X(HD_EINTR, -26, "interrupted")                                                                \
    X(HD_ECONFIG, -27, "invalid configuration")                                                    \
    X(HD_EUNSUPPORTED, -28, "not supported")                                                       \
    X(HD_ERANGE, -29, "value out of range")                                                        \
    X(HD_EPROTO, -30, "protocol error")

enum hd_errno {
    HD_OK = 0,
#define HD_ERRNO_ENUM(name, value, msg) name = value,
    HD_ERRNO_MAP(HD_ERRNO_ENUM)
#undef HD_ERRNO_ENUM
};

/* Fixed English message for a code; never NULL ("unknown error" for unknown codes).
 * Returns a borrowed static string. */
const char *hd_strerror(int code);

/* Symbolic name of a code, e.g. "HD_EJSON"; "HD_OK" for 0; "HD_E?" when unknown.
 * Returns a borrowed static string. */
const char *hd_err_name(int code);

#define HD_ERROR_TEXT_MAX 256

/* A detailed failure report, filled by functions that take an `hd_error *`. */
typedef struct hd_error {
    int code;                     /* the negative code the function returned, 0 if none */
    char text[HD_ERROR_TEXT_MAX]; /* reason, NUL-terminated, truncated if longer */
} hd_error;

/* Record a failure in err (which may be NULL) and return code, so callers can write
 * `return hd_error_set(err, HD_EJSON, "line %d: %s", line, msg);`. The text is formatted
 * with printf rules; when fmt is NULL the text is hd_strerror(code). */
int hd_error_set(hd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reset err (may be NULL) to "no error". */
void hd_error_clear(hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_ERROR_H */
