/* Chapter 14's plumbing: start and stop the service binaries, talk HTTP, read the mail sink.
 *
 * Nothing here is about messaging; it is what a shell script would do with fork, curl and
 * grep, written in C so that main.c reads as the story of one registration. flow.c has the
 * details. Every function prints nothing on success and one line on stderr when it fails.
 */
#ifndef TUTORIAL14_FLOW_H
#define TUTORIAL14_FLOW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "hd_proc.h"

#define WAIT_MS 20000 /* the longest any step waits: a service to start, a mail to arrive */

/* One running service binary, supervised by hd_proc (tests/support/hd_proc.h: the same
 * supervisor the integration tests and benchmarks use). */
typedef struct service {
    const char *name; /* "herald-users": the binary's file name, borrowed */
    hd_proc *proc;    /* NULL when not started */
    pid_t pid;        /* for the story's output */
    char url[64];     /* http://127.0.0.1:<port>, the port read from its "listening" log line;
                         "" for the relay */
} service;

/* Start bin_dir/s->name with the caller's environment changed by `env` (a NULL-terminated
 * list of "NAME=value" to set and "NAME" to remove), working directory `dir` (no stray
 * .env is read there), stdout and stderr appended to dir/<name>.log. Returns once it is
 * ready: for a service with HTTP, GET /health answered 200; for the relay, it logged "relay
 * started". 0, or -1 when it exited or was not ready within WAIT_MS (service_dump_log
 * tells why). */
int service_start(service *s, const char *bin_dir, const char *dir, const char *const *env);

/* SIGTERM, then wait up to WAIT_MS for it to exit (SIGKILL after that). Returns its exit
 * status (0 = a clean stop), or -1 if it had to be killed or died of a signal. */
int service_stop(service *s);

/* SIGKILL if it still runs, and forget it, for the clean-up path. No-op when not started. */
void service_kill(service *s);

/* Print the last lines of the service's log (this run's) on stderr. */
void service_dump_log(const service *s);

/* An HTTP exchange: the status, and the body parsed as JSON (NULL when it is not JSON). */
typedef struct http_reply {
    long status;
    json_t *json; /* new reference, released by http_reply_release */
} http_reply;

/* POST body (JSON) to url with an X-Correlation-Id header (NULL: none); GET when body is
 * NULL. 0 when a reply came back (whatever its status), -1 on a transport error. */
int http_call(const char *url, const char *body, const char *correlation_id, http_reply *out);

/* The same with `Authorization: Bearer <token>` (NULL: none), for the notifications API. */
int http_call_auth(const char *url, const char *body, const char *correlation_id, const char *token,
                   http_reply *out);
void http_reply_release(http_reply *r);

/* A mail as the SMTP sink stored it. */
typedef struct mail {
    char path[1024];
    char subject[256];
    char correlation_id[128]; /* its X-Correlation-Id header, "" when none */
    char *text;               /* the text/plain part, quoted-printable decoded (malloc) */
} mail;

/* Wait up to WAIT_MS for a mail in maildir to `to` whose Subject starts with `subject`,
 * among the files written at or after since_ns (the sink names them <epoch-ns>-<n>.eml).
 * Fills *out (release with mail_release). 0, or -1 on timeout. */
int mail_wait(const char *maildir, int64_t since_ns, const char *to, const char *subject,
              mail *out);

/* How many such mails there are now. */
int mail_count(const char *maildir, int64_t since_ns, const char *to, const char *subject);

void mail_release(mail *m);

/* Wall-clock time in ns since the epoch (comparable with the sink's file names). */
int64_t now_ns(void);

#endif /* TUTORIAL14_FLOW_H */
