/* template.c — {{var}} templates for e-mail; see template.h. */
#include "herald/template.h"
#include "herald/buf.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The three parts of a template, in the order the variables are listed. The file of each
 * part is <name>.<extension>. */
enum { PART_SUBJECT = 0, PART_HTML = 1, PART_TEXT = 2, N_PARTS = 3 };
static const char *const part_names[N_PARTS] = {"subject", "html", "text"};
static const char *const part_extensions[N_PARTS] = {"subject", "html", "txt"};

/* A template is compiled into segments once, at load time: rendering is then a walk over
 * the list with no parsing and no way to fail on syntax. */
typedef struct segment {
    char *literal; /* text copied as is; NULL for a variable */
    size_t len;    /* length of literal */
    size_t var;    /* index in hd_template.vars when literal is NULL */
} segment;

typedef struct part {
    segment *segs;
    size_t n;
} part;

struct hd_template {
    char *name;
    part parts[N_PARTS];
    char **vars; /* distinct names in order of first appearance, NULL-terminated */
    size_t n_vars;
};

struct hd_templates {
    hd_template **items;
    size_t n;
};

/* ---- small checks ---------------------------------------------------------------------- */

int hd_template_name_valid(const char *name)
{
    if (name == NULL || *name == '\0' || strlen(name) > HD_TEMPLATE_NAME_MAX)
        return 0;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return 0;
    return 1;
}

static int ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int ident_char(char c)
{
    return ident_start(c) || (c >= '0' && c <= '9');
}

/* Byte offset of the first malformed UTF-8 sequence in s[0..n), or n when s is valid UTF-8.
 * The mail declares charset=UTF-8, so a template in Latin-1 would show as garbage. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        unsigned min;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            more = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        for (size_t k = 1; k <= more; k++) {
            if (i + k >= n || (s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += more + 1;
    }
    return n;
}

/* 1-based line and column (in bytes) of offset off in s: for error messages. */
static void line_col(const char *s, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && s[i]; i++) {
        if (s[i] == '\n')
            l++, c = 1;
        else
            c++;
    }
    *line = l;
    *col = c;
}

/* ---- parsing ----------------------------------------------------------------------------- */

static void part_release(part *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->segs[i].literal);
    free(p->segs);
    p->segs = NULL;
    p->n = 0;
}

void hd_template_free(hd_template *tpl)
{
    if (tpl == NULL)
        return;
    for (int i = 0; i < N_PARTS; i++)
        part_release(&tpl->parts[i]);
    for (size_t i = 0; i < tpl->n_vars; i++)
        free(tpl->vars[i]);
    free(tpl->vars);
    free(tpl->name);
    free(tpl);
}

static int push_segment(part *p, char *literal, size_t len, size_t var)
{
    segment *s = realloc(p->segs, (p->n + 1) * sizeof *s);
    if (s == NULL) {
        free(literal);
        return HD_ENOMEM;
    }
    p->segs = s;
    p->segs[p->n++] = (segment){.literal = literal, .len = len, .var = var};
    return 0;
}

static int push_literal(part *p, const char *s, size_t len)
{
    if (len == 0)
        return 0;
    char *copy = strndup(s, len);
    if (copy == NULL)
        return HD_ENOMEM;
    return push_segment(p, copy, len, 0);
}

/* Index of variable name[0..len) in tpl->vars, added when new. Returns the index, or
 * HD_ENOMEM. */
static long intern_var(hd_template *tpl, const char *name, size_t len)
{
    for (size_t i = 0; i < tpl->n_vars; i++)
        if (strlen(tpl->vars[i]) == len && memcmp(tpl->vars[i], name, len) == 0)
            return (long)i;
    char **v = realloc(tpl->vars, (tpl->n_vars + 2) * sizeof *v);
    if (v == NULL)
        return HD_ENOMEM;
    tpl->vars = v;
    v[tpl->n_vars] = strndup(name, len);
    if (v[tpl->n_vars] == NULL) {
        v[tpl->n_vars] = NULL;
        return HD_ENOMEM;
    }
    v[++tpl->n_vars] = NULL;
    return (long)tpl->n_vars - 1;
}

static int syntax_error(hd_error *err, const hd_template *tpl, int which, const char *src,
                        size_t off, const char *what)
{
    int line, col;
    line_col(src, off, &line, &col);
    return hd_error_set(err, HD_ETYPE, "template '%s' (%s): %s at line %d, column %d", tpl->name,
                        part_names[which], what, line, col);
}

/* Compile src into tpl->parts[which]. */
static int parse_part(hd_template *tpl, int which, const char *src, hd_error *err)
{
    part *p = &tpl->parts[which];
    size_t n = strlen(src);
    size_t bad = utf8_invalid_at((const unsigned char *)src, n);
    if (bad != n)
        return syntax_error(err, tpl, which, src, bad, "invalid UTF-8");

    size_t lit = 0; /* start of the pending literal */
    size_t i = 0;
    while (i < n) {
        if (!(src[i] == '{' && src[i + 1] == '{')) {
            i++;
            continue;
        }
        /* A "{{" must end with "}}" somewhere; say "unterminated" rather than blaming
         * whatever character follows, which is the more useful message. */
        if (strstr(src + i + 2, "}}") == NULL)
            return syntax_error(err, tpl, which, src, i, "unterminated '{{'");
        size_t j = i + 2;
        while (src[j] == ' ' || src[j] == '\t')
            j++;
        size_t name = j;
        if (!ident_start(src[j]))
            return syntax_error(err, tpl, which, src, i, "expected a variable name after '{{'");
        while (ident_char(src[j]))
            j++;
        size_t name_len = j - name;
        while (src[j] == ' ' || src[j] == '\t')
            j++;
        if (!(src[j] == '}' && src[j + 1] == '}'))
            return syntax_error(err, tpl, which, src, i,
                                "expected '}}' after the variable name (names are letters, "
                                "digits and '_')");
        if (push_literal(p, src + lit, i - lit) != 0)
            return hd_error_set(err, HD_ENOMEM, NULL);
        long var = intern_var(tpl, src + name, name_len);
        if (var < 0 || push_segment(p, NULL, 0, (size_t)var) != 0)
            return hd_error_set(err, HD_ENOMEM, NULL);
        i = lit = j + 2;
    }
    if (push_literal(p, src + lit, n - lit) != 0)
        return hd_error_set(err, HD_ENOMEM, NULL);
    return 0;
}

int hd_template_parse(const char *name, const char *subject, const char *html, const char *text,
                      hd_template **out, hd_error *err)
{
    if (out == NULL || subject == NULL || html == NULL || text == NULL)
        return hd_error_set(err, HD_EINVAL, "template: NULL argument");
    if (!hd_template_name_valid(name))
        return hd_error_set(err, HD_EINVAL,
                            "template name '%.64s' is not valid (want [a-z0-9_]+, at most %d)",
                            name ? name : "(null)", HD_TEMPLATE_NAME_MAX);

    /* The subject file is one line; editors add a final newline, which is not part of it. */
    size_t slen = strlen(subject);
    if (slen > 0 && subject[slen - 1] == '\n')
        slen--;
    if (slen > 0 && subject[slen - 1] == '\r')
        slen--;
    for (size_t i = 0; i < slen; i++) {
        unsigned char c = (unsigned char)subject[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return hd_error_set(err, HD_ETYPE,
                                "template '%s' (subject): the subject must be one line without "
                                "control characters",
                                name);
    }

    hd_template *tpl = calloc(1, sizeof *tpl);
    char *subject_line = strndup(subject, slen);
    if (tpl == NULL || subject_line == NULL || (tpl->name = strdup(name)) == NULL) {
        free(subject_line);
        hd_template_free(tpl);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    const char *srcs[N_PARTS] = {subject_line, html, text};
    int rc = 0;
    for (int i = 0; i < N_PARTS && rc == 0; i++)
        rc = parse_part(tpl, i, srcs[i], err);
    if (rc == 0 && tpl->vars == NULL) {
        /* Keep the "NULL-terminated array" promise for templates without variables. */
        tpl->vars = calloc(1, sizeof *tpl->vars);
        if (tpl->vars == NULL)
            rc = hd_error_set(err, HD_ENOMEM, NULL);
    }
    free(subject_line);
    if (rc != 0) {
        hd_template_free(tpl);
        return rc;
    }
    *out = tpl;
    return 0;
}

/* ---- loading from files ------------------------------------------------------------------ */

/* Read the whole of path into *out (new). */
static int read_file(const char *path, const char *tname, char **out, hd_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        return hd_error_set(err, e == ENOENT ? HD_ENOTFOUND : HD_EIO,
                            "template '%s': cannot open %s: %s", tname, path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return hd_error_set(err, HD_EIO, "template '%s': %s is not a regular file", tname, path);
    }
    if (st.st_size > HD_TEMPLATE_FILE_MAX) {
        fclose(f);
        return hd_error_set(err, HD_ETOOBIG, "template '%s': %s is larger than %d bytes", tname,
                            path, HD_TEMPLATE_FILE_MAX);
    }
    /* Read up to one byte past the limit: the file may have grown since fstat. */
    char *data = malloc(HD_TEMPLATE_FILE_MAX + 2);
    if (data == NULL) {
        fclose(f);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    size_t n = fread(data, 1, HD_TEMPLATE_FILE_MAX + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        return hd_error_set(err, HD_EIO, "template '%s': cannot read %s", tname, path);
    }
    if (n > HD_TEMPLATE_FILE_MAX) {
        free(data);
        return hd_error_set(err, HD_ETOOBIG, "template '%s': %s is larger than %d bytes", tname,
                            path, HD_TEMPLATE_FILE_MAX);
    }
    if (memchr(data, '\0', n) != NULL) {
        free(data);
        return hd_error_set(err, HD_ETYPE, "template '%s': %s contains a NUL byte", tname, path);
    }
    data[n] = '\0';
    *out = data;
    return 0;
}

int hd_template_load(const char *dir, const char *name, hd_template **out, hd_error *err)
{
    if (dir == NULL || *dir == '\0' || out == NULL)
        return hd_error_set(err, HD_EINVAL, "template: NULL or empty argument");
    if (!hd_template_name_valid(name))
        return hd_error_set(err, HD_EINVAL,
                            "template name '%.64s' is not valid (want [a-z0-9_]+, at most %d)",
                            name ? name : "(null)", HD_TEMPLATE_NAME_MAX);
    char *data[N_PARTS] = {NULL, NULL, NULL};
    int rc = 0;
    for (int i = 0; i < N_PARTS && rc == 0; i++) {
        char path[PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%s.%s", dir, name, part_extensions[i]);
        if (len < 0 || (size_t)len >= sizeof path)
            rc = hd_error_set(err, HD_EINVAL, "template '%s': directory path too long", name);
        else
            rc = read_file(path, name, &data[i], err);
    }
    if (rc == 0)
        rc =
            hd_template_parse(name, data[PART_SUBJECT], data[PART_HTML], data[PART_TEXT], out, err);
    for (int i = 0; i < N_PARTS; i++)
        free(data[i]);
    return rc;
}

const char *hd_template_name(const hd_template *tpl)
{
    return tpl ? tpl->name : NULL;
}

const char *const *hd_template_variables(const hd_template *tpl, size_t *n)
{
    if (n != NULL)
        *n = tpl ? tpl->n_vars : 0;
    return tpl ? (const char *const *)tpl->vars : NULL;
}

/* ---- rendering ----------------------------------------------------------------------------- */

char *hd_html_escape(const char *s)
{
    if (s == NULL)
        return NULL;
    hd_buf b = HD_BUF_INIT;
    const char *run = s;
    for (const char *c = s; *c; c++) {
        /* &apos; is not HTML 4, so the apostrophe is &#39;, which works everywhere. */
        const char *ent = *c == '&'    ? "&amp;"
                          : *c == '<'  ? "&lt;"
                          : *c == '>'  ? "&gt;"
                          : *c == '"'  ? "&quot;"
                          : *c == '\'' ? "&#39;"
                                       : NULL;
        if (ent == NULL)
            continue;
        hd_buf_add(&b, run, (size_t)(c - run));
        hd_buf_add(&b, ent, strlen(ent));
        run = c + 1;
    }
    hd_buf_add(&b, run, strlen(run));
    return hd_buf_take(&b);
}

/* The text of a scalar value, new; *code gets the failure when NULL is returned. */
static char *value_text(const hd_template *tpl, const char *var, const json_t *v, int *code,
                        hd_error *err)
{
    char *s = NULL;
    switch (json_typeof(v)) {
    case JSON_STRING:
        /* jansson strings may hold "\u0000"; C strings cannot, and a NUL would silently cut
         * the mail short. */
        if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
            *code = hd_error_set(err, HD_ETYPE, "template '%s': variable '%s' contains a NUL",
                                 tpl->name, var);
            return NULL;
        }
        s = strdup(json_string_value(v));
        break;
    case JSON_INTEGER:
    case JSON_REAL:
    case JSON_TRUE:
    case JSON_FALSE:
        /* The JSON text, as a reader of the event would see it: 42, 2.5, true. Fifteen
         * significant digits print 0.1 as "0.1", not "0.10000000000000001". */
        s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
        break;
    default:
        *code = hd_error_set(err, HD_ETYPE,
                             "template '%s': variable '%s' is %s; only strings, numbers and "
                             "booleans can be inserted",
                             tpl->name, var, json_is_object(v) ? "an object" : "an array");
        return NULL;
    }
    if (s == NULL)
        *code = hd_error_set(err, HD_ENOMEM, NULL);
    return s;
}

static char *render_part(const hd_template *tpl, int which, const json_t *vars, int *code,
                         hd_error *err)
{
    const part *p = &tpl->parts[which];
    hd_buf b = HD_BUF_INIT;
    for (size_t i = 0; i < p->n; i++) {
        const segment *seg = &p->segs[i];
        if (seg->literal != NULL) {
            hd_buf_add(&b, seg->literal, seg->len);
            continue;
        }
        const char *var = tpl->vars[seg->var];
        const json_t *v = json_object_get(vars, var);
        if (v == NULL || json_is_null(v)) {
            *code = hd_error_set(err, HD_EMISSING, "template '%s': missing variable '%s'",
                                 tpl->name, var);
            hd_buf_release(&b);
            return NULL;
        }
        char *s = value_text(tpl, var, v, code, err);
        if (s == NULL) {
            hd_buf_release(&b);
            return NULL;
        }
        if (which == PART_SUBJECT) {
            for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
                if ((*c < 0x20 && *c != '\t') || *c == 0x7f) {
                    *code = hd_error_set(err, HD_ETYPE,
                                         "template '%s': variable '%s' contains a line break or "
                                         "control character and is used in the subject",
                                         tpl->name, var);
                    free(s);
                    hd_buf_release(&b);
                    return NULL;
                }
            }
        }
        if (which == PART_HTML) {
            char *esc = hd_html_escape(s);
            free(s);
            if (esc == NULL) {
                hd_buf_release(&b);
                *code = hd_error_set(err, HD_ENOMEM, NULL);
                return NULL;
            }
            s = esc;
        }
        hd_buf_add(&b, s, strlen(s));
        free(s);
    }
    char *out = hd_buf_take(&b);
    if (out == NULL)
        *code = hd_error_set(err, HD_ENOMEM, NULL);
    return out;
}

void hd_rendered_free(hd_rendered *r)
{
    if (r == NULL)
        return;
    free(r->subject);
    free(r->html);
    free(r->text);
    free(r);
}

int hd_template_render(const hd_template *tpl, const json_t *vars, hd_rendered **out, hd_error *err)
{
    if (tpl == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "template render: NULL argument");
    if (!json_is_object(vars))
        return hd_error_set(err, HD_EINVAL, "template '%s': the variables must be a JSON object",
                            tpl->name);
    hd_rendered *r = calloc(1, sizeof *r);
    if (r == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    char **slots[N_PARTS] = {&r->subject, &r->html, &r->text};
    int code = 0;
    for (int i = 0; i < N_PARTS; i++) {
        *slots[i] = render_part(tpl, i, vars, &code, err);
        if (*slots[i] == NULL) {
            hd_rendered_free(r);
            return code;
        }
    }
    *out = r;
    return 0;
}

/* ---- sets -------------------------------------------------------------------------------- */

void hd_templates_close(hd_templates *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        hd_template_free(set->items[i]);
    free(set->items);
    free(set);
}

int hd_templates_open_names(const char *dir, const char *const *names, size_t n, hd_templates **out,
                            hd_error *err)
{
    if (out == NULL || (names == NULL && n > 0))
        return hd_error_set(err, HD_EINVAL, "templates: NULL argument");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (names[i] && names[j] && strcmp(names[i], names[j]) == 0)
                return hd_error_set(err, HD_EINVAL, "templates: '%.64s' listed twice", names[i]);
    hd_templates *set = calloc(1, sizeof *set);
    if (set == NULL || (n > 0 && (set->items = calloc(n, sizeof *set->items)) == NULL)) {
        free(set);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = hd_template_load(dir, names[i], &set->items[i], err);
        if (rc != 0) {
            hd_templates_close(set);
            return rc;
        }
        set->n++;
    }
    *out = set;
    return 0;
}

const hd_template *hd_templates_get(const hd_templates *set, const char *name)
{
    if (set == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->items[i]->name, name) == 0)
            return set->items[i];
    return NULL;
}

size_t hd_templates_count(const hd_templates *set)
{
    return set ? set->n : 0;
}

const hd_template *hd_templates_at(const hd_templates *set, size_t i)
{
    return (set != NULL && i < set->n) ? set->items[i] : NULL;
}

int hd_templates_render(const hd_templates *set, const char *name, const json_t *vars,
                        hd_rendered **out, hd_error *err)
{
    if (set == NULL || name == NULL)
        return hd_error_set(err, HD_EINVAL, "templates render: NULL argument");
    const hd_template *tpl = hd_templates_get(set, name);
    if (tpl == NULL)
        return hd_error_set(err, HD_ENOTFOUND, "no template named '%.64s'", name);
    return hd_template_render(tpl, vars, out, err);
}

const char *hd_templates_default_dir(void)
{
#ifdef HD_TEMPLATES_DIR
    return HD_TEMPLATES_DIR;
#else
    return "templates";
#endif
}
