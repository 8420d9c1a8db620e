/* email.c — the shared e-mail address check; see email.h. */
#include "herald/email.h"

#include <string.h>

/* RFC 5322 atext: what a dot-atom local part may hold besides dots. */
static int is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static const char *local_problem(const char *s, size_t n)
{
    if (n == 0)
        return "local part (before '@') is empty";
    if (n > HD_EMAIL_LOCAL_MAX)
        return "local part must be at most 64 characters";
    if (s[0] == '.' || s[n - 1] == '.')
        return "local part must not start or end with a dot";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (s[i - 1] == '.')
                return "local part has two dots in a row";
        } else if (!is_atext(c)) {
            return "local part may hold only letters, digits, dots and !#$%&'*+-/=?^_`{|}~";
        }
    }
    return NULL;
}

static const char *domain_problem(const char *d, size_t n)
{
    if (n == 0)
        return "domain part is empty";
    if (memchr(d, '.', n) == NULL)
        return "domain must contain a dot";
    if (d[0] == '.' || d[n - 1] == '.')
        return "domain must not start or end with a dot";
    size_t label = 0; /* start of the current label */
    for (size_t i = 0; i <= n; i++) {
        if (i == n || d[i] == '.') {
            if (i == label)
                return "domain has an empty label ('..')";
            if (d[label] == '-' || d[i - 1] == '-')
                return "domain labels must not start or end with '-'";
            label = i + 1;
        } else if (!is_ldh((unsigned char)d[i])) {
            return "domain may hold only letters, digits, '-' and dots";
        }
    }
    return NULL;
}

const char *hd_email_address_problem(const char *addr)
{
    if (addr == NULL)
        return "is missing";
    size_t n = strlen(addr);
    if (n == 0)
        return "must not be empty";
    if (n > HD_EMAIL_ADDRESS_MAX)
        return "must be at most 254 characters";
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c <= 0x20 || c == 0x7f)
            return "must not contain spaces or control characters";
        if (c > 0x7f)
            return "must be ASCII (internationalised addresses cannot be mailed)";
        if (c == '@') {
            if (at != NULL)
                return "must contain exactly one '@'";
            at = addr + i;
        }
    }
    if (at == NULL)
        return "must contain exactly one '@'";
    const char *why = local_problem(addr, (size_t)(at - addr));
    return why != NULL ? why : domain_problem(at + 1, n - (size_t)(at - addr) - 1);
}

int hd_email_address_valid(const char *addr)
{
    return hd_email_address_problem(addr) == NULL;
}
