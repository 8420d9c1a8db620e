/* herald/template.h — e-mail templates: a subject, an HTML body and a text body with {{var}}.
 *
 * A notification is written once, as files, by someone who edits words, not C:
 *
 *     templates/welcome.subject   Welcome to herald, {{name}}
 *     templates/welcome.html      <p>Hello {{ name }},</p> ...
 *     templates/welcome.txt       Hello {{name}}, ...
 *
 * and filled in at send time with the variables of one event, a JSON object:
 *
 *     static const char *const names[] = {"welcome", "password_reset"};
 *     hd_templates *set;
 *     hd_templates_open_names(hd_templates_default_dir(), names, 2, &set, &err);  // at startup
 *     json_t *vars = json_pack("{s:s}", "name", "Ada");
 *     hd_rendered *mail;
 *     if (hd_templates_render(set, "welcome", vars, &mail, &err) == 0) {
 *         ... mail->subject, mail->html, mail->text ...
 *         hd_rendered_free(mail);
 *     }
 *
 * The language is deliberately tiny: `{{name}}` (spaces inside the braces allowed, a name is
 * [A-Za-z_][A-Za-z0-9_]*) and nothing else: no conditions, loops or filters. A template that
 * needs logic is a sign that the logic belongs in code, where it is tested.
 *
 * Rules, and why:
 *   - In the HTML part every value is HTML-escaped (& < > " ' become entities), so a user
 *     called `<script>` cannot inject markup into a mail the system sends in its own name.
 *     Escaping makes a value safe as element text and inside a QUOTED attribute; it does not
 *     make a URL safe: a value placed in href must be a URL the service built itself.
 *   - The text part and the subject are not escaped: they are not HTML, and "&amp;" in a
 *     plain-text mail is a visible bug.
 *   - A value that goes into the subject must not contain CR, LF or other control characters
 *     (HD_ETYPE): the subject becomes a mail header, and a line break there would let the
 *     value add headers of its own (header injection, e.g. a Bcc:).
 *   - A missing variable is an error (HD_EMISSING, "template 'welcome': missing variable
 *     'name'"), never an empty string: "Hello ," sent to a hundred thousand users is worse
 *     than a notification that fails, is retried, and shows up in the failure metrics.
 *     JSON null counts as missing.
 *   - Strings are inserted as they are; numbers and booleans as their JSON text (42, 2.5,
 *     true); objects and arrays are HD_ETYPE (there is no sensible text for them).
 *   - Templates are parsed when they are loaded, so an unterminated `{{` or a bad name is
 *     found at startup (HD_ETYPE, with the part, line and column), not at the first send.
 *   - Template names are [a-z0-9_]+, 1 to 64 characters: the name becomes a file name and
 *     may come from an HTTP request, so "../../etc/passwd" must not be one.
 *
 * Ownership: hd_template, hd_templates and hd_rendered are owned by whoever got them from a
 * *_load / *_open / *_render call (new) and freed with the matching *_free / *_close.
 * Strings handed out by accessors are borrowed from the object. Every input is borrowed for
 * the call. Templates are immutable after loading: one template or set may be rendered from
 * several threads at once.
 */
#ifndef HERALD_TEMPLATE_H
#define HERALD_TEMPLATE_H

#include <stddef.h>

#include <jansson.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_TEMPLATE_NAME_MAX 64          /* longest template name */
#define HD_TEMPLATE_FILE_MAX (64 * 1024) /* largest template file, in bytes */

typedef struct hd_template hd_template;

/* The three parts of a rendered mail, each a new NUL-terminated UTF-8 string owned by the
 * hd_rendered (free the whole with hd_rendered_free). */
typedef struct hd_rendered {
    char *subject; /* one line, no control characters */
    char *html;
    char *text;
} hd_rendered;

/* 1 when name is a valid template name ([a-z0-9_]+, at most HD_TEMPLATE_NAME_MAX). */
int hd_template_name_valid(const char *name);

/* Read dir/<name>.subject, dir/<name>.html and dir/<name>.txt and parse them into *out
 * (new; free with hd_template_free). The subject file holds one line (a final newline is
 * dropped). Returns 0, HD_EINVAL (bad name or NULL argument), HD_ENOTFOUND (a file is
 * missing), HD_EIO (unreadable), HD_ETOOBIG (over HD_TEMPLATE_FILE_MAX), HD_ETYPE (syntax
 * error, or a subject of several lines) or HD_ENOMEM. *out is set only on success. */
int hd_template_load(const char *dir, const char *name, hd_template **out, hd_error *err);

/* The same from strings (all borrowed, copied): for tests and templates built into a
 * program. subject must be one line (a final "\n" is dropped). */
int hd_template_parse(const char *name, const char *subject, const char *html, const char *text,
                      hd_template **out, hd_error *err);

/* Free tpl (NULL allowed). */
void hd_template_free(hd_template *tpl);

/* The template's name. Borrowed from tpl. */
const char *hd_template_name(const hd_template *tpl);

/* The distinct variable names the template uses, in order of first appearance (subject,
 * then HTML, then text): exactly the keys hd_template_render requires. Returns a borrowed
 * array of *n borrowed strings (NULL-terminated too), valid while tpl lives. n may be NULL.
 * Use it to validate an event's payload before accepting it, and in contract tests. */
const char *const *hd_template_variables(const hd_template *tpl, size_t *n);

/* Fill tpl with vars (a borrowed JSON object; extra keys are ignored) into *out (new; free
 * with hd_rendered_free). Returns 0, HD_EINVAL (NULL argument, vars not an object),
 * HD_EMISSING (a variable is missing or null), HD_ETYPE (a value is an object or array, or
 * has a line break or control character and goes into the subject) or HD_ENOMEM; err tells
 * which template and which variable. *out is set only on success. */
int hd_template_render(const hd_template *tpl, const json_t *vars, hd_rendered **out,
                       hd_error *err);

/* Free r and its strings (NULL allowed). */
void hd_rendered_free(hd_rendered *r);

/* Escape s for HTML text and quoted attributes: & < > " ' become &amp; &lt; &gt; &quot;
 * &#39;. Returns a new string (caller frees), or NULL when memory runs out or s is NULL. */
char *hd_html_escape(const char *s);

/* ---- a set of templates, loaded once at startup -------------------------------------- */

typedef struct hd_templates hd_templates;

/* Load the n templates called names (borrowed; duplicates are HD_EINVAL) from dir into *out
 * (new; close with hd_templates_close). Fails if any is missing or broken: a service should
 * refuse to start rather than discover a missing template at 3 a.m. Returns 0 or the first
 * failure of hd_template_load. The library renders any template: which names a service
 * needs is the service's knowledge (the notifications service lists its four in
 * src/services/notifications/templates.h). */
int hd_templates_open_names(const char *dir, const char *const *names, size_t n, hd_templates **out,
                            hd_error *err);

/* Free the set and its templates (NULL allowed). */
void hd_templates_close(hd_templates *set);

/* The template called name, borrowed from set, or NULL when the set has none. */
const hd_template *hd_templates_get(const hd_templates *set, const char *name);

/* How many templates the set holds, and the i-th (borrowed; NULL when i is out of range). */
size_t hd_templates_count(const hd_templates *set);
const hd_template *hd_templates_at(const hd_templates *set, size_t i);

/* hd_templates_get + hd_template_render; HD_ENOTFOUND when the set has no such template. */
int hd_templates_render(const hd_templates *set, const char *name, const json_t *vars,
                        hd_rendered **out, hd_error *err);

/* The directory a program uses when its configuration names none: the value of the
 * compile-time definition HD_TEMPLATES_DIR when the library was built with one (the build
 * can point it at the installed copy), else "templates" (relative to the working directory,
 * which is right when running from the source tree). A borrowed static string. Services let
 * a setting (HD_TEMPLATES_DIR in the environment) override it. */
const char *hd_templates_default_dir(void);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_TEMPLATE_H */
