/* users/domain.c — the users service's rules; see domain.h. */
#include "domain.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/email.h"

/* ---- text helpers ------------------------------------------------------------------------ */

/* Blanks that trimming removes. Only ASCII: a non-breaking space inside a name is the
 * user's business. */
static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* C0 controls and DEL: invisible, and dangerous in logs and mail headers (CR LF). */
static int is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* The span of s without leading and trailing blanks: *start and the returned length. */
static size_t trim(const char *s, const char **start)
{
    size_t len = strlen(s);
    while (len > 0 && is_blank((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && is_blank((unsigned char)s[len - 1]))
        len--;
    *start = s;
    return len;
}

/* Characters in n bytes of UTF-8: every byte that is not a continuation byte (10xxxxxx)
 * starts one. The text is assumed valid UTF-8 (jansson only produces that). */
static size_t utf8_chars(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            count++;
    return count;
}

/* ---- Email ------------------------------------------------------------------------------ */

int email_parse(const char *raw, email *out, hd_error *err)
{
    if (raw == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "email_parse: NULL argument");
    const char *s;
    size_t n = trim(raw, &s);
    if (n == 0)
        return hd_error_set(err, HD_EVALIDATE, "must not be empty");
    if (n > USER_EMAIL_MAX)
        return hd_error_set(err, HD_EVALIDATE, "must be at most %d characters", USER_EMAIL_MAX);
    /* ASCII lower-casing only, byte by byte: tolower() depends on the locale. Done into a
     * scratch copy, so that *out stays untouched when the address is refused. */
    char text[USER_EMAIL_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        text[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    text[n] = '\0';
    /* The one rule herald has for addresses (herald/email.h): what is accepted here is
     * what the notifications service and the sender can mail. */
    const char *why = hd_email_address_problem(text);
    if (why != NULL)
        return hd_error_set(err, HD_EVALIDATE, "%s", why);
    memcpy(out->text, text, n + 1);
    return 0;
}

/* ---- password and name ------------------------------------------------------------------ */

int password_check(const char *password, size_t len, hd_error *err)
{
    if (password == NULL)
        return hd_error_set(err, HD_EINVAL, "password_check: NULL password");
    if (memchr(password, '\0', len) != NULL)
        return hd_error_set(err, HD_EVALIDATE, "must not contain a NUL character");
    size_t chars = utf8_chars(password, len);
    if (chars < USER_PASSWORD_MIN)
        return hd_error_set(err, HD_EVALIDATE, "must be at least %d characters", USER_PASSWORD_MIN);
    if (chars > USER_PASSWORD_MAX)
        return hd_error_set(err, HD_EVALIDATE, "must be at most %d characters", USER_PASSWORD_MAX);
    return 0;
}

int name_parse(const char *raw, char out[USER_NAME_BYTES_MAX + 1], hd_error *err)
{
    if (out == NULL)
        return hd_error_set(err, HD_EINVAL, "name_parse: NULL output");
    if (raw == NULL) {
        out[0] = '\0';
        return 0;
    }
    const char *s;
    size_t n = trim(raw, &s);
    for (size_t i = 0; i < n; i++)
        if (is_control((unsigned char)s[i]))
            return hd_error_set(err, HD_EVALIDATE, "must not contain control characters");
    if (n > USER_NAME_BYTES_MAX || utf8_chars(s, n) > USER_NAME_MAX)
        return hd_error_set(err, HD_EVALIDATE, "must be at most %d characters", USER_NAME_MAX);
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

/* ---- User ------------------------------------------------------------------------------- */

/* Fill the fields every user has; shared by register (new) and load (stored). */
static int user_init(user *u, const char *id, int64_t version, const email *addr, const char *name,
                     const char *password_hash)
{
    memset(u, 0, sizeof *u);
    int rc = hd_aggregate_init(&u->base, USER_AGGREGATE, id, version);
    if (rc < 0)
        return rc;
    u->email = *addr;
    u->name = strdup(name);
    u->password_hash = strdup(password_hash);
    if (u->name == NULL || u->password_hash == NULL) {
        user_release(u);
        return HD_ENOMEM;
    }
    return 0;
}

/* Raise an event of type with payload (stolen) on u, or report why it failed. */
static int raise_event(user *u, const char *type, json_t *payload, hd_error *err)
{
    int rc = hd_aggregate_raise(&u->base, hd_event_new(type, payload));
    if (rc < 0)
        return hd_error_set(err, rc == HD_EINVAL ? HD_ENOMEM : rc, "cannot raise %s", type);
    return 0;
}

int user_register(user *u, const email *addr, const char *name, const char *password_hash,
                  const char *verification_token, int64_t now_ms, hd_error *err)
{
    if (u == NULL || addr == NULL || name == NULL || password_hash == NULL ||
        verification_token == NULL || password_hash[0] == '\0' || verification_token[0] == '\0')
        return hd_error_set(err, HD_EINVAL, "user_register: NULL or empty argument");
    int rc = user_init(u, NULL, 0, addr, name, password_hash);
    if (rc < 0)
        return hd_error_set(err, rc, "user_register: %s", hd_strerror(rc));
    u->created_at_ms = u->updated_at_ms = now_ms;
    rc =
        raise_event(u, USER_REGISTERED,
                    json_pack("{s:s, s:s, s:s, s:s}", "user_id", user_id(u), "email", u->email.text,
                              "name", u->name, "verification_token", verification_token),
                    err);
    if (rc < 0)
        user_release(u);
    return rc;
}

int user_load(user *u, const char *id, int64_t version, const email *addr, const char *name,
              const char *password_hash, int verified, int64_t created_at_ms, int64_t updated_at_ms)
{
    if (u == NULL || id == NULL || addr == NULL || name == NULL || password_hash == NULL)
        return HD_EINVAL;
    int rc = user_init(u, id, version, addr, name, password_hash);
    if (rc < 0)
        return rc;
    u->verified = verified != 0;
    u->created_at_ms = created_at_ms;
    u->updated_at_ms = updated_at_ms;
    return 0;
}

void user_release(user *u)
{
    if (u == NULL)
        return;
    hd_aggregate_release(&u->base);
    free(u->name);
    free(u->password_hash);
    u->name = u->password_hash = NULL;
}

const char *user_id(const user *u)
{
    return u ? hd_aggregate_id(&u->base) : NULL;
}

/* Every operation on a deleted user is refused the same way. */
static int check_alive(const user *u, const char *op, hd_error *err)
{
    if (u == NULL)
        return hd_error_set(err, HD_EINVAL, "%s: NULL user", op);
    if (u->deleted)
        return hd_error_set(err, HD_ESTATE, "%s: user %s is deleted", op, user_id(u));
    return 0;
}

int user_verify(user *u, int64_t now_ms, hd_error *err)
{
    int rc = check_alive(u, "user_verify", err);
    if (rc < 0)
        return rc;
    if (u->verified)
        return hd_error_set(err, HD_ESTATE, "email already verified");
    rc = raise_event(u, USER_VERIFIED,
                     json_pack("{s:s, s:s, s:s}", "user_id", user_id(u), "email", u->email.text,
                               "name", u->name),
                     err);
    if (rc < 0)
        return rc; /* unchanged: no event, no new state */
    u->verified = 1;
    u->updated_at_ms = now_ms;
    return 0;
}

int user_request_password_reset(user *u, const char *reset_token, int64_t now_ms, hd_error *err)
{
    (void)now_ms; /* nothing changes: the event alone records the request */
    int rc = check_alive(u, "user_request_password_reset", err);
    if (rc < 0)
        return rc;
    if (reset_token == NULL || reset_token[0] == '\0')
        return hd_error_set(err, HD_EINVAL, "user_request_password_reset: empty token");
    return raise_event(u, USER_PASSWORD_RESET_REQUESTED,
                       json_pack("{s:s, s:s, s:s, s:s}", "user_id", user_id(u), "email",
                                 u->email.text, "name", u->name, "reset_token", reset_token),
                       err);
}

int user_rename(user *u, const char *name, int64_t now_ms, hd_error *err)
{
    int rc = check_alive(u, "user_rename", err);
    if (rc < 0)
        return rc;
    if (name == NULL)
        return hd_error_set(err, HD_EINVAL, "user_rename: NULL name");
    if (strcmp(name, u->name) == 0)
        return 0;
    char *copy = strdup(name);
    if (copy == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    /* Raise first, with both names, then swap: if raising fails the user is unchanged. */
    rc = raise_event(
        u, USER_UPDATED,
        json_pack("{s:s, s:s, s:s}", "user_id", user_id(u), "name", copy, "previous_name", u->name),
        err);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(u->name);
    u->name = copy;
    u->updated_at_ms = now_ms;
    return 1;
}

int user_change_password(user *u, const char *password_hash, int64_t now_ms, hd_error *err)
{
    int rc = check_alive(u, "user_change_password", err);
    if (rc < 0)
        return rc;
    if (password_hash == NULL || password_hash[0] == '\0')
        return hd_error_set(err, HD_EINVAL, "user_change_password: empty hash");
    char *copy = strdup(password_hash);
    if (copy == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    rc = raise_event(u, USER_PASSWORD_CHANGED, json_pack("{s:s}", "user_id", user_id(u)), err);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(u->password_hash);
    u->password_hash = copy;
    u->updated_at_ms = now_ms;
    return 0;
}

int user_delete(user *u, int64_t now_ms, hd_error *err)
{
    int rc = check_alive(u, "user_delete", err);
    if (rc < 0)
        return rc;
    rc = raise_event(u, USER_DELETED,
                     json_pack("{s:s, s:s}", "user_id", user_id(u), "email", u->email.text), err);
    if (rc < 0)
        return rc;
    u->deleted = 1;
    u->updated_at_ms = now_ms;
    return 0;
}
