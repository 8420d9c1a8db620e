/* Integration: the SMTP sink that scripts/servers.sh starts accepts mail on HD_SMTP_URL and
 * keeps each message as a file in HD_SMTP_MAILDIR (see scripts/smtp_sink.py).
 *
 * This proves the harness, not herald: it sends with libcurl directly. Without the variables
 * the test fails (a missing server is a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hd_test.h"

#define FROM "harness@herald.test"
#define TO   "check@herald.test"

struct upload {
    const char *data;
    size_t left;
};

static size_t read_message(char *buf, size_t size, size_t nmemb, void *userp)
{
    struct upload *u = userp;
    size_t n = size * nmemb < u->left ? size * nmemb : u->left;
    memcpy(buf, u->data, n);
    u->data += n;
    u->left -= n;
    return n;
}

/* The whole file `path` as a NUL-terminated string, or NULL. Caller frees. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *bigger = realloc(buf, cap);
            assert_non_null(bigger);
            buf = bigger;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf == NULL)
        buf = calloc(1, 1);
    else
        buf[len] = '\0';
    return buf;
}

/* The contents of the .eml file in `maildir` that mentions `needle`, or NULL. Caller frees. */
static char *find_message(const char *maildir, const char *needle)
{
    DIR *d = opendir(maildir);
    if (d == NULL)
        fail_msg("cannot open HD_SMTP_MAILDIR %s", maildir);
    char *found = NULL;
    struct dirent *e;
    while (found == NULL && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        /* Dot-names are messages still being written (tmp + rename). */
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".eml") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", maildir, e->d_name);
        char *text = slurp(path);
        if (text != NULL && strstr(text, needle) != NULL)
            found = text;
        else
            free(text);
    }
    closedir(d);
    return found;
}

static void send_and_find_in_maildir(void **state)
{
    (void)state;
    const char *url = hd_test_require_env("HD_SMTP_URL");
    const char *maildir = hd_test_require_env("HD_SMTP_MAILDIR");
    char *subject = hd_test_unique_name("hd-servers-smtp");

    char message[1024];
    snprintf(message, sizeof message,
             "From: herald harness <" FROM ">\r\n"
             "To: <" TO ">\r\n"
             "Subject: %s\r\n"
             "Message-ID: <%s@herald.test>\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "\r\n"
             "The SMTP sink of scripts/servers.sh works.\r\n",
             subject, subject);
    struct upload up = {message, strlen(message)};

    assert_int_equal(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    struct curl_slist *rcpt = curl_slist_append(NULL, "<" TO ">");
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, "<" FROM ">");
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_message);
    curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode res = curl_easy_perform(curl);
    if (res != CURLE_OK)
        fail_msg("sending to HD_SMTP_URL %s failed: %s (%s)", url, curl_easy_strerror(res), errbuf);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, 250);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);
    curl_global_cleanup();

    /* The sink writes the file right after the 250; allow a slow machine 5 s. */
    char *text = NULL;
    for (int i = 0; i < 50 && text == NULL; i++) {
        text = find_message(maildir, subject);
        if (text == NULL) {
            struct timespec ts = {.tv_nsec = 100000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (text == NULL)
        fail_msg("no message with subject %s in %s after 5 s", subject, maildir);
    assert_non_null(strstr(text, "X-Envelope-From: " FROM "\r\n"));
    assert_non_null(strstr(text, "X-Envelope-To: " TO "\r\n"));
    assert_non_null(strstr(text, "Subject: "));
    assert_non_null(strstr(text, "The SMTP sink of scripts/servers.sh works."));
    /* The envelope lines come first, then the message as sent. */
    assert_true(strncmp(text, "X-Envelope-From: ", 17) == 0);
    free(text);
    free(subject);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_and_find_in_maildir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
