/* hd_maildir.c — see hd_maildir.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hd_maildir.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_test.h"
#include "herald/clock.h"

char *hd_maildir_find(const char *maildir, const char *rcpt, int64_t wait_ms)
{
    char want[512];
    snprintf(want, sizeof want, "X-Envelope-To: %s\r\n", rcpt);
    int64_t deadline = hd_clock_ms() + wait_ms;
    do {
        DIR *d = opendir(maildir);
        if (d == NULL)
            fail_msg("cannot open HD_SMTP_MAILDIR %s", maildir);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t n = strlen(e->d_name);
            if (e->d_name[0] == '.' || n < 5 || strcmp(e->d_name + n - 4, ".eml") != 0)
                continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", maildir, e->d_name);
            char *msg = hd_test_read_file(path);
            if (msg == NULL)
                continue;
            /* The envelope lines come first, before the message's own headers. */
            char *body = strstr(msg, "\r\n\r\n");
            char *hit = strstr(msg, want);
            if (hit != NULL && (body == NULL || hit < body)) {
                closedir(d);
                return msg;
            }
            free(msg);
        }
        closedir(d);
        hd_sleep_ms(50);
    } while (hd_clock_ms() < deadline);
    return NULL;
}
