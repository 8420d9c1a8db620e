/* Chapter 14's plumbing (flow.h): processes (on hd_proc), HTTP and the mail sink. Read main.c
 * first. */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "herald/clock.h"

#include "flow.h"

#define POLL_MS 50

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- processes (tests/support/hd_proc.h does the fork, exec, waiting and signals) ------- */

void service_dump_log(const service *s)
{
    hd_proc_dump_log(s->proc, stderr, 30);
}

int service_start(service *s, const char *bin_dir, const char *dir, const char *const *env)
{
    char bin[512], log[600];
    snprintf(bin, sizeof bin, "%s/%s", bin_dir, s->name);
    snprintf(log, sizeof log, "%s/%s.log", dir, s->name);
    s->pid = 0;
    s->url[0] = '\0';
    const char *argv[] = {bin, NULL};
    hd_proc_options o = {.argv = argv, .env = env, .cwd = dir, .log_path = log, .name = s->name};
    hd_error err;
    /* Ready: a service with HTTP answers GET /health with 200 (on the port its "listening"
     * log line names); the relay, which has no HTTP, has logged that it started. */
    int rc = hd_proc_start(&o, &s->proc, &err);
    if (rc == 0) {
        s->pid = hd_proc_pid(s->proc);
        rc = strcmp(s->name, "herald-relay") == 0
                 ? hd_proc_wait_log(s->proc, "\"message\":\"relay started\"", WAIT_MS, &err)
                 : hd_proc_wait_health(s->proc, WAIT_MS, &err);
    }
    if (rc < 0) {
        fprintf(stderr, "%s%s\n", err.text,
                rc == HD_ENOTFOUND ? " (build it, or set HD_BIN_DIR)" : "");
        return -1;
    }
    if (hd_proc_port(s->proc) > 0)
        snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", hd_proc_port(s->proc));
    return 0;
}

int service_stop(service *s)
{
    hd_error err;
    if (s->proc == NULL)
        return -1;
    int rc = hd_proc_stop(s->proc, WAIT_MS, &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", err.text);
    return rc == HD_ETIMEOUT ? -1 : hd_proc_exit_code(s->proc);
}

void service_kill(service *s)
{
    hd_proc_free(s->proc); /* SIGKILL if it still runs */
    s->proc = NULL;
}

/* ---- HTTP (libcurl) ----------------------------------------------------------------------- */

typedef struct buffer {
    char *data;
    size_t len;
} buffer;

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
    buffer *b = ctx;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (grown == NULL)
        return 0; /* curl fails the transfer */
    memcpy(grown + b->len, p, size * n);
    b->data = grown;
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

int http_call(const char *url, const char *body, const char *correlation_id, http_reply *out)
{
    return http_call_auth(url, body, correlation_id, NULL, out);
}

int http_call_auth(const char *url, const char *body, const char *correlation_id, const char *token,
                   http_reply *out)
{
    out->status = 0;
    out->json = NULL;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    buffer b = {0};
    struct curl_slist *headers = NULL;
    char cid[160], auth[160];
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    if (body != NULL)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    if (correlation_id != NULL) {
        snprintf(cid, sizeof cid, "X-Correlation-Id: %s", correlation_id);
        headers = curl_slist_append(headers, cid);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
        if (b.data != NULL)
            out->json = json_loadb(b.data, b.len, 0, NULL);
    }
    free(b.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

void http_reply_release(http_reply *r)
{
    json_decref(r->json);
    r->json = NULL;
}

/* ---- the mail sink ------------------------------------------------------------------------ */

/* The whole file as a NUL-terminated string (malloc), or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    buffer b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (collect(chunk, 1, n, &b) != n)
            break;
    fclose(f);
    return b.data;
}

/* The value of header `name` in the header block [head, end), into out. */
static void header(const char *head, const char *end, const char *name, char *out, size_t cap)
{
    size_t len = strlen(name);
    out[0] = '\0';
    for (const char *p = head; p != NULL && p < end;) {
        if (strncasecmp(p, name, len) == 0 && p[len] == ':') {
            const char *v = p + len + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), v);
            return;
        }
        const char *nl = strchr(p, '\n');
        p = nl != NULL ? nl + 1 : NULL;
    }
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10;
}

/* Quoted-printable (RFC 2045) to text: "=\r\n" is a soft line break (the line went on),
 * "=XX" a byte in hex; CRLF becomes "\n". A new string. */
static char *qp_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 1 < n && (s[i + 1] == '\r' || s[i + 1] == '\n')) {
            i += s[i + 1] == '\r' ? 2 : 1; /* soft break */
        } else if (s[i] == '=' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            *o++ = (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
            i += 2;
        } else if (s[i] != '\r') {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* Parse the sink's file at path into m if it is to `to` with a Subject starting with
 * `subject`. 1 when it matches, 0 when not. */
static int read_mail(const char *path, const char *to, const char *subject, mail *m)
{
    char *raw = slurp(path);
    if (raw == NULL)
        return 0;
    /* The sink's envelope lines first: X-Envelope-From, then one X-Envelope-To a recipient. */
    int for_us = 0;
    const char *p = raw;
    while (strncmp(p, "X-Envelope-", 11) == 0) {
        if (strncmp(p, "X-Envelope-To: ", 15) == 0 && strncasecmp(p + 15, to, strlen(to)) == 0 &&
            strchr("\r\n", p[15 + strlen(to)]) != NULL)
            for_us = 1;
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    const char *end = strstr(p, "\r\n\r\n"); /* the end of the message's headers */
    if (!for_us || end == NULL) {
        free(raw);
        return 0;
    }
    header(p, end, "Subject", m->subject, sizeof m->subject);
    header(p, end, "X-Correlation-Id", m->correlation_id, sizeof m->correlation_id);
    if (strncmp(m->subject, subject, strlen(subject)) != 0) {
        free(raw);
        return 0;
    }
    /* The text/plain part: after its own headers, up to the next boundary line. */
    const char *part = strstr(end, "Content-Type: text/plain");
    const char *body = part ? strstr(part, "\r\n\r\n") : NULL;
    if (body != NULL) {
        body += 4;
        const char *stop = strstr(body, "\r\n--");
        m->text = qp_decode(body, stop ? (size_t)(stop - body) : strlen(body));
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    free(raw);
    return m->text != NULL;
}

/* Visit the sink's files written since since_ns. Returns the number of matches (the first
 * one found in *m when m is not NULL). */
static int scan_maildir(const char *maildir, int64_t since_ns, const char *to, const char *subject,
                        mail *m)
{
    DIR *d = opendir(maildir);
    if (d == NULL)
        return 0;
    int found = 0;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        /* Dot-names are being written; the sink renames them when they are complete. */
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".eml") != 0 ||
            strtoll(e->d_name, NULL, 10) < since_ns)
            continue;
        snprintf(path, sizeof path, "%s/%s", maildir, e->d_name);
        mail tmp = {0};
        if (read_mail(path, to, subject, &tmp)) {
            if (found++ == 0 && m != NULL)
                *m = tmp;
            else
                mail_release(&tmp);
        }
    }
    closedir(d);
    return found;
}

int mail_wait(const char *maildir, int64_t since_ns, const char *to, const char *subject, mail *out)
{
    memset(out, 0, sizeof *out);
    for (int waited = 0; waited < WAIT_MS; waited += POLL_MS) {
        if (scan_maildir(maildir, since_ns, to, subject, out) > 0)
            return 0;
        hd_sleep_ms(POLL_MS);
    }
    fprintf(stderr, "no mail to %s with subject '%s...' in %s after %d ms\n", to, subject, maildir,
            WAIT_MS);
    return -1;
}

int mail_count(const char *maildir, int64_t since_ns, const char *to, const char *subject)
{
    return scan_maildir(maildir, since_ns, to, subject, NULL);
}

void mail_release(mail *m)
{
    free(m->text);
    m->text = NULL;
}
