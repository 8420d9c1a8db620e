/* chat/domain.c — chat rules and the chat.message_posted event (domain.h). */
#include "domain.h"

#include <string.h>

#include <jansson.h>

#include "herald/clock.h"
#include "herald/utf8.h"

int chat_room_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > CHAT_ROOM_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* 1 when every byte is valid UTF-8 and no code point is a control character (C0, DEL, C1)
 * other than those allowed; 0 otherwise. blank is set to 1 when s holds only spaces and
 * allowed controls. */
static int clean_text(const char *s, size_t len, const char *allowed, int *blank)
{
    *blank = 1;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                if (c == 0 || strchr(allowed, c) == NULL)
                    return 0;
            } else if (c != ' ') {
                *blank = 0;
            }
            i++;
            continue;
        }
        size_t n = hd_utf8_seq((const unsigned char *)s + i);
        if (n == 0 || i + n > len)
            return 0;
        if (c == 0xc2 && (unsigned char)s[i + 1] < 0xa0) /* U+0080..U+009F, the C1 controls */
            return 0;
        *blank = 0;
        i += n;
    }
    return 1;
}

int chat_name_check(const char *s, hd_error *err)
{
    size_t n = s ? strlen(s) : 0;
    int blank;
    if (n == 0 || n > CHAT_NAME_MAX)
        return hd_error_set(err, HD_EVALIDATE, "name: 1 to %d bytes", CHAT_NAME_MAX);
    if (!clean_text(s, n, "", &blank) || blank)
        return hd_error_set(err, HD_EVALIDATE,
                            "name: UTF-8 text without control characters, not only spaces");
    return 0;
}

int chat_text_check(const char *s, size_t len, hd_error *err)
{
    int blank;
    if (len > CHAT_TEXT_MAX)
        return hd_error_set(err, HD_ETOOBIG, "text: at most %d bytes", CHAT_TEXT_MAX);
    if (s == NULL || len == 0)
        return hd_error_set(err, HD_EVALIDATE, "text: must not be empty");
    if (!clean_text(s, len, "\n\t", &blank))
        return hd_error_set(err, HD_EVALIDATE,
                            "text: UTF-8 without control characters (newline and tab allowed)");
    if (blank)
        return hd_error_set(err, HD_EVALIDATE, "text: must not be only white space");
    return 0;
}

char *chat_message_encode(const chat_message *m)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "id", m->id, "room", m->room, "name", m->name,
                  "origin", m->origin, "at", (json_int_t)m->at_ms, "text", m->text);
    if (o == NULL)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Copy the string member key of o into out (cap bytes), refusing what does not fit. */
static int get_str(json_t *o, const char *key, char *out, size_t cap, hd_error *err)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL)
        return hd_error_set(err, HD_EMISSING, "message: no '%s'", key);
    if (!json_is_string(v))
        return hd_error_set(err, HD_ETYPE, "message: '%s' is not a string", key);
    size_t n = json_string_length(v);
    if (n >= cap)
        return hd_error_set(err, HD_ETOOBIG, "message: '%s' is longer than %zu bytes", key,
                            cap - 1);
    memcpy(out, json_string_value(v), n);
    out[n] = '\0';
    if (memchr(out, '\0', n) != NULL)
        return hd_error_set(err, HD_EVALIDATE, "message: '%s' holds a NUL", key);
    return 0;
}

int chat_message_decode(const void *body, size_t len, chat_message *out, hd_error *err)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL)
        return hd_error_set(err, HD_EJSON, "message: %s", je.text);
    int rc = json_is_object(o) ? 0 : hd_error_set(err, HD_ETYPE, "message: not an object");
    if (rc == 0)
        rc = get_str(o, "id", out->id, sizeof out->id, err);
    if (rc == 0)
        rc = get_str(o, "room", out->room, sizeof out->room, err);
    if (rc == 0)
        rc = get_str(o, "name", out->name, sizeof out->name, err);
    if (rc == 0)
        rc = get_str(o, "origin", out->origin, sizeof out->origin, err);
    if (rc == 0)
        rc = get_str(o, "text", out->text, sizeof out->text, err);
    json_t *at = json_object_get(o, "at");
    if (rc == 0 && !json_is_integer(at))
        rc = hd_error_set(err, HD_ETYPE, "message: 'at' is not an integer");
    if (rc == 0)
        out->at_ms = (int64_t)json_integer_value(at);
    json_decref(o);
    if (rc == 0 && !hd_uuid_valid(out->id))
        rc = hd_error_set(err, HD_EVALIDATE, "message: 'id' is not a UUID");
    if (rc == 0 && !chat_room_name_valid(out->room))
        rc = hd_error_set(err, HD_EVALIDATE, "message: 'room' is not a room name");
    if (rc == 0)
        rc = chat_name_check(out->name, err);
    if (rc == 0)
        rc = chat_text_check(out->text, strlen(out->text), err);
    if (rc == 0 && !hd_utf8_valid(out->origin))
        rc = hd_error_set(err, HD_EVALIDATE, "message: 'origin' is not UTF-8");
    return rc;
}
