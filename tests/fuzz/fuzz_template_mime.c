/* fuzz_template_mime.c — libFuzzer target for mail templates with hostile variables, through
 * the MIME formatter: hd_template_render (src/herald/template.c), then hd_mail_format
 * (src/herald/sender.c), the path every notification takes to the SMTP server.
 *
 * Variables come from events, and an event's fields come from whoever registered: a name
 * like "<script>" or "x\r\nBcc: y" is ordinary input. The input is split at 0xFF bytes (which
 * UTF-8 never uses) into chunks; the first byte picks the mode:
 *   even  a template of templates/ (the one the service sends), chunks = the values of its
 *         variables in order, then the recipient, then the correlation id;
 *   odd   a template made of the first three chunks (subject, HTML, text), then as above.
 * A value chunk starting with byte 1 is a number, 2 true, 3 an object, 4 null (the JSON
 * types an event may carry); any other chunk is a string, NULs included.
 * Properties checked (a violation is __builtin_trap(), a crash to libFuzzer):
 *   1. render returns 0, HD_EMISSING, HD_ETYPE or HD_ENOMEM and sets *out only on success;
 *      a rendered subject is one line without control characters;
 *   2. no markup from a value: the HTML part has as many < > " ' as with every string value
 *      empty (escaping works whatever the value);
 *   3. the mail formats (hd_mail_format) whenever its recipient and correlation id are
 *      valid; every line ends in CRLF, no bare CR or LF, at most 998 bytes, at most 78 but
 *      for the From, To, Message-ID and X-Correlation-Id lines; the header block holds only
 *      the headers the formatter writes (no header injected by a value);
 *   4. format -> parse is lossless: the Subject's encoded-words decode to the subject, and
 *      the two quoted-printable parts decode to the text and the HTML (line breaks as CRLF).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "herald/buf.h"
#include "herald/sender.h"
#include "herald/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CHUNKS 16

static const hd_templates *shipped(void)
{
    static hd_templates *set;
    static const char *const names[] = {"email_verification", "password_reset", "security_alert",
                                        "welcome"};
    if (set == NULL &&
        hd_templates_open_names(HD_SOURCE_DIR "/templates", names, 4, &set, NULL) < 0)
        __builtin_trap();
    return set;
}

static json_t *value_of(const char *s, size_t n)
{
    if (n > 0 && s[0] >= 1 && s[0] <= 4) {
        switch (s[0]) {
        case 1:
            return json_integer((json_int_t)n * 1000003);
        case 2:
            return json_true();
        case 3:
            return json_object();
        default:
            return json_null();
        }
    }
    return json_stringn_nocheck(s, n);
}

static size_t count_markup(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '<' || *s == '>' || *s == '"' || *s == '\'';
    return n;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The body's line breaks as the formatter writes them: LF and CRLF become CRLF. */
static void normalise(hd_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\n' || (*s == '\r' && s[1] == '\n')) {
            s += *s == '\r';
            hd_buf_puts(b, "\r\n");
        } else {
            hd_buf_add(b, s, 1);
        }
    }
}

/* Decode quoted-printable s[0..n) into b; 0 when it is not what the formatter writes. */
static int qp_decode(hd_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            hd_buf_add(b, s + i, 1);
        } else if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            char c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            hd_buf_add(b, &c, 1);
            i += 2;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Part number idx (0: text, 1: HTML) of msg: after its "--boundary" line and its headers,
 * up to the CRLF before the next boundary line, decoded and compared with the normalised
 * body. A body cannot hold the boundary: it contains "=_", and quoted-printable encodes '='. */
static void check_part(const char *msg, const char *boundary, int idx, const char *type,
                       const char *body)
{
    char delim[96];
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    const char *p = msg;
    for (int i = 0; i <= idx; i++)
        if ((p = strstr(p, delim)) == NULL || strncmp(p += strlen(delim), "\r\n", 2) != 0)
            __builtin_trap();
    char marker[96];
    snprintf(marker, sizeof marker, "\r\nContent-Type: %s; charset=UTF-8\r\n", type);
    if (strncmp(p, marker, strlen(marker)) != 0 || (p = strstr(p, "\r\n\r\n")) == NULL)
        __builtin_trap();
    p += 4;
    const char *q = strstr(p - 2, delim); /* an empty body: the CRLF ending the headers */
    if (q == NULL)
        __builtin_trap();
    hd_buf got = HD_BUF_INIT, want = HD_BUF_INIT;
    if (q < p || !qp_decode(&got, p, (size_t)(q - p)))
        __builtin_trap();
    normalise(&want, body);
    if (!got.oom && !want.oom &&
        (got.len != want.len || (got.len > 0 && memcmp(got.p, want.p, got.len) != 0)))
        __builtin_trap();
    hd_buf_release(&got);
    hd_buf_release(&want);
}

static void check_subject(const char *msg, const char *subject)
{
    const char *p = strstr(msg, "\r\nSubject:");
    if (p == NULL)
        __builtin_trap();
    p += strlen("\r\nSubject:");
    hd_buf got = HD_BUF_INIT;
    if (strncmp(p, " =?UTF-8?B?", 11) != 0) { /* plain */
        const char *e = strstr(p, "\r\n");
        hd_buf_add(&got, p + 1, (size_t)(e - p - 1));
    } else {
        while (strncmp(p, " =?UTF-8?B?", 11) == 0) {
            p += 11;
            unsigned acc = 0;
            int bits = 0;
            for (; *p != '?'; p++) {
                if (*p == '=')
                    continue;
                int v = b64val(*p);
                if (v < 0)
                    __builtin_trap();
                acc = (acc << 6) | (unsigned)v;
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    char c = (char)(acc >> bits);
                    hd_buf_add(&got, &c, 1);
                }
            }
            if (strncmp(p, "?=\r\n", 4) != 0)
                __builtin_trap();
            p += 4;
        }
    }
    if (!got.oom && (got.len != strlen(subject) || memcmp(got.p ? got.p : "", subject, got.len)))
        __builtin_trap();
    hd_buf_release(&got);
}

static void check_message(const char *msg, size_t len, const hd_rendered *r)
{
    static const char *const headers[] = {"Date: ",
                                          "From: ",
                                          "To: ",
                                          "Subject:",
                                          "Message-ID: ",
                                          "X-Correlation-Id: ",
                                          "MIME-Version: 1.0",
                                          "Content-Type: multipart/alternative;"};
    int in_headers = 1;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(msg + at, '\n', len - at);
        if (nl == NULL || nl == msg + at || nl[-1] != '\r')
            __builtin_trap();                     /* a line that does not end in CRLF */
        size_t n = (size_t)(nl - 1 - (msg + at)); /* without the CRLF */
        const char *line = msg + at;
        if (memchr(line, '\r', n) != NULL || n > 998)
            __builtin_trap();
        int long_ok = strncmp(line, "From: ", 6) == 0 || strncmp(line, "To: ", 4) == 0 ||
                      strncmp(line, "Message-ID: ", 12) == 0 ||
                      strncmp(line, "X-Correlation-Id: ", 18) == 0;
        if (in_headers && n == 0) {
            in_headers = 0;
        } else if (in_headers) {
            int known = line[0] == ' ';
            for (size_t i = 0; !known && i < sizeof headers / sizeof headers[0]; i++)
                known = strncmp(line, headers[i], strlen(headers[i])) == 0;
            if (!known)
                __builtin_trap(); /* a header the formatter does not write */
        }
        if (n > 78 && !(in_headers && long_ok))
            __builtin_trap();
        at = (size_t)(nl - msg) + 1;
    }
    const char *b = strstr(msg, "\r\n boundary=\"");
    if (b == NULL)
        __builtin_trap();
    b += strlen("\r\n boundary=\"");
    char boundary[80];
    size_t bl = strcspn(b, "\"");
    if (bl >= sizeof boundary)
        __builtin_trap();
    memcpy(boundary, b, bl);
    boundary[bl] = '\0';
    check_subject(msg, r->subject);
    check_part(msg, boundary, 0, "text/plain", r->text);
    check_part(msg, boundary, 1, "text/html", r->html);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 16 * 1024)
        return 0;
    const char *chunk[MAX_CHUNKS];
    size_t clen[MAX_CHUNKS], nc = 0;
    const char *s = (const char *)data + 1, *end = (const char *)data + size;
    while (nc < MAX_CHUNKS && s <= end) {
        const char *sep = memchr(s, 0xff, (size_t)(end - s));
        const char *stop = sep ? sep : end;
        chunk[nc] = s;
        clen[nc++] = (size_t)(stop - s);
        s = stop + 1;
    }

    size_t next = 0;
    hd_template *own = NULL;
    const hd_template *tpl;
    if (data[0] & 1) {
        if (nc < 3)
            return 0;
        char *part[3];
        for (int i = 0; i < 3; i++)
            part[i] = strndup(chunk[i], clen[i]);
        if (part[0] && part[1] && part[2])
            hd_template_parse("fuzz", part[0], part[1], part[2], &own, NULL);
        for (int i = 0; i < 3; i++)
            free(part[i]);
        if (own == NULL)
            return 0;
        tpl = own;
        next = 3;
    } else {
        tpl = hd_templates_at(shipped(), (size_t)(data[0] >> 1) % hd_templates_count(shipped()));
    }

    size_t nvars = 0;
    const char *const *vars = hd_template_variables(tpl, &nvars);
    json_t *values = json_object(), *empty = json_object();
    for (size_t i = 0; i < nvars; i++) {
        json_t *v = next < nc ? value_of(chunk[next], clen[next]) : json_string("x");
        next++;
        json_object_set_new(empty, vars[i], json_is_string(v) ? json_string("") : json_incref(v));
        json_object_set_new(values, vars[i], v);
    }
    char *to = next < nc ? strndup(chunk[next], clen[next]) : strdup("ada@example.com");
    next++;
    char *cid = next < nc ? strndup(chunk[next], clen[next]) : NULL;

    static hd_rendered unset;
    hd_rendered *r = &unset, *base = NULL;
    hd_error err;
    int rc = hd_template_render(tpl, values, &r, &err);
    if (rc != HD_OK) {
        if ((rc != HD_EMISSING && rc != HD_ETYPE && rc != HD_ENOMEM) || r != &unset)
            __builtin_trap();
        goto done;
    }
    for (const unsigned char *c = (const unsigned char *)r->subject; *c; c++)
        if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
            __builtin_trap();
    if (hd_template_render(tpl, empty, &base, &err) != HD_OK ||
        count_markup(base->html) != count_markup(r->html))
        __builtin_trap();

    hd_mail mail = {.to = to,
                    .subject = r->subject,
                    .html = r->html,
                    .text = r->text,
                    .message_id = "n-42@herald.example",
                    .correlation_id = cid};
    char *msg = NULL;
    size_t len = 0;
    rc = hd_mail_format(&mail, "noreply@herald.example", 1700000000000, &msg, &len, &err);
    if (rc == HD_OK)
        check_message(msg, len, r);
    else if (rc != HD_ENOMEM && to != NULL && hd_mail_address_valid(to) &&
             (cid == NULL ||
              hd_mail_validate(
                  &(hd_mail){
                      .to = to, .subject = "", .html = "", .text = "", .correlation_id = cid},
                  NULL) == 0))
        __builtin_trap(); /* a valid mail that does not format */
    free(msg);
    hd_rendered_free(r);
done:
    hd_rendered_free(base);
    json_decref(values);
    json_decref(empty);
    free(to);
    free(cid);
    hd_template_free(own);
    return 0;
}
