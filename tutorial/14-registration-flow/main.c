/* Chapter 14 — the whole registration flow: three programs, one broker, one mail.
 *
 * Chapters 1 to 13 built the pieces one at a time. This one runs the real binaries built
 * from them and follows one registration from the HTTP request to the mail in the inbox:
 *
 *   POST /users            herald-users: ONE transaction writes the user, the token's hash
 *                          and the event users.user_registered to the outbox (ch. 1, 2, 10)
 *   herald-relay           claims the outbox row, publishes it persistent + mandatory to
 *                          the topic exchange "users", marks it after the confirm (ch. 7, 11)
 *   users.notifications    the queue herald-notifications bound to "users" (ch. 4, 5, 6)
 *   herald-notifications   consumes with manual acks and a prefetch window (ch. 8, 9),
 *                          accepts the message id in its inbox, renders the template and
 *                          records the notification in one transaction (ch. 12), sends it
 *                          by SMTP, records "sent" and appends notifications.notification_sent
 *                          to ITS outbox, which its in-process relay publishes (ch. 10, 11)
 *
 * The program starts the three binaries (hd_proc, the supervisor the tests use: flow.c),
 * registers a user with
 * libcurl, waits for the verification mail in the SMTP sink's maildir, follows the link's
 * token to POST /users/verify, waits for the welcome mail, reads the history and the
 * notification_sent events, and stops everything with SIGTERM, checking that every process
 * exits 0. Every reply is checked; any failure goes to the one clean-up path at the end.
 *
 * Needs HD_AMQP_URL, HD_SMTP_URL and HD_SMTP_MAILDIR (make servers-up). Binaries come from
 * the working directory (ctest runs chapters in the build directory) or HD_BIN_DIR; the
 * mail templates from HD_TEMPLATES_DIR, HD_SOURCE_DIR/templates, or the source tree this
 * file is in. Read along: docs/tutorial/14-registration-flow.md.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "herald/envelope.h"
#include "herald/topology.h"

#include "flow.h"
#include "tutorial.h"

/* The templates directory: a setting, else the source tree this file was compiled from. */
static void templates_dir(char *out, size_t cap)
{
    const char *t = getenv("HD_TEMPLATES_DIR"), *src = getenv("HD_SOURCE_DIR");
    if (t != NULL && *t != '\0') {
        snprintf(out, cap, "%s", t);
    } else if (src != NULL && *src != '\0') {
        snprintf(out, cap, "%s/templates", src);
    } else { /* __FILE__ is .../tutorial/14-registration-flow/main.c */
        snprintf(out, cap, "%s", __FILE__);
        for (int i = 0; i < 3; i++) {
            char *slash = strrchr(out, '/');
            if (slash == NULL) {
                snprintf(out, cap, "templates");
                return;
            }
            *slash = '\0';
        }
        strncat(out, "/templates", cap - strlen(out) - 1);
    }
}

static long long ms_since(int64_t t0)
{
    return (long long)((now_ns() - t0) / 1000000);
}

/* Take the notifications service's own events out of our queue: how many notification_sent
 * events there are, and their data.type, comma-separated, into types. */
static int take_sent_events(hd_amqp *a, const char *queue, char *types, size_t cap, hd_error *err)
{
    amqp_connection_state_t st = hd_amqp_state(a);
    amqp_channel_t ch = hd_amqp_channel(a);
    int n = 0;
    for (;;) {
        amqp_rpc_reply_t r = amqp_basic_get(st, ch, amqp_cstring_bytes(queue), 1 /* no_ack */);
        if (hd_amqp_check_reply(a, r, "basic.get", err) < 0)
            return -1;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            return n;
        amqp_message_t msg;
        if (hd_amqp_check_reply(a, amqp_read_message(st, ch, &msg, 0), "read", err) < 0)
            return -1;
        hd_envelope *env = NULL;
        if (hd_envelope_decode(NULL, msg.body.bytes, msg.body.len, &env, err) == 0 &&
            strcmp(hd_envelope_type(env), "notifications.notification_sent") == 0) {
            const char *t = json_string_value(json_object_get(hd_envelope_data(env), "type"));
            snprintf(types + strlen(types), cap - strlen(types), "%s%s",
                     types[0] != '\0' ? ", " : "", t ? t : "?");
            n++;
        }
        hd_envelope_free(env);
        amqp_destroy_message(&msg);
    }
}

/* cap-1 hex digits of /dev/urandom into out (NUL-terminated). 0, or -1 with errno. */
static int random_token(char *out, size_t cap)
{
    unsigned char raw[32];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f != NULL ? fread(raw, 1, sizeof raw, f) : 0;
    if (f != NULL)
        fclose(f);
    if (got != sizeof raw || cap < 2)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < sizeof raw && n + 2 < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%02x", raw[i]);
    return 0;
}

int main(void)
{
    const char *amqp_url = tutorial_require_env("HD_AMQP_URL");
    const char *maildir = tutorial_require_env("HD_SMTP_MAILDIR");
    if (amqp_url == NULL || maildir == NULL || tutorial_require_env("HD_SMTP_URL") == NULL)
        return 1;
    int rc = 1;
    hd_error err;
    char dir[] = "/tmp/herald-ch14-XXXXXX";
    char bin_dir[PATH_MAX], templates[PATH_MAX], setting[3][PATH_MAX + 64];
    service notif = {.name = "herald-notifications"}, users = {.name = "herald-users"},
            relay = {.name = "herald-relay"};
    hd_amqp *a = NULL;
    http_reply r = {0};
    mail verification = {0}, welcome = {0};
    char *user_id = NULL;
    int made_dir = 0;
    const int64_t since = now_ns();   /* mails older than this are not ours */
    setvbuf(stdout, NULL, _IOLBF, 0); /* our lines and the services' errors in order */
    curl_global_init(CURL_GLOBAL_DEFAULT);

    /* 1. A directory for the databases and logs; where the binaries and templates are. */
    const char *bins = getenv("HD_BIN_DIR") ? getenv("HD_BIN_DIR") : ".";
    if (realpath(bins, bin_dir) == NULL) {
        fprintf(stderr, "binaries directory %s: %s (set HD_BIN_DIR)\n", bins, strerror(errno));
        goto out;
    }
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "cannot create a working directory %s: %s\n", dir, strerror(errno));
        goto out;
    }
    made_dir = 1;
    templates_dir(templates, sizeof templates);
    printf("[1] working directory %s, binaries from %s\n", dir, bin_dir);

    /* 2. The consumer first: it declares the exchange "users", its queue and one binding per
     * event type it handles, and answers /health only once it consumes. Started after the
     * producer, the first events would find no queue: returned (mandatory), retried. */
    snprintf(setting[0], sizeof setting[0], "HD_DATABASE_URL=sqlite://%s/notifications.db", dir);
    snprintf(setting[1], sizeof setting[1], "HD_TEMPLATES_DIR=%s", templates);
    /* Its HTTP API (history, preferences, direct sends) answers only to a bearer token of
     * 32 characters or more: one made up for this run, as a deployment would take one from
     * its secret store (docs/security.md). Without it the service refuses to start. */
    char api_token[65], token_setting[100];
    if (random_token(api_token, sizeof api_token) < 0) {
        fprintf(stderr, "cannot read /dev/urandom: %s\n", strerror(errno));
        goto out;
    }
    snprintf(token_setting, sizeof token_setting, "HD_NOTIFICATIONS_API_TOKEN=%s", api_token);
    const char *notif_env[] = {setting[0], setting[1], "HD_NOTIFICATIONS_LISTEN=127.0.0.1:0",
                               token_setting, NULL};
    if (service_start(&notif, bin_dir, dir, notif_env) < 0)
        goto out;
    printf("[2] herald-notifications started (pid %d) on %s: queue 'users.notifications' bound "
           "to exchange 'users'\n",
           (int)notif.pid, notif.url);

    /* 3. The producer, WITHOUT a broker: it only writes its outbox. The relay is another
     * process (step 4); the service itself never talks to RabbitMQ. */
    snprintf(setting[2], sizeof setting[2], "HD_DATABASE_URL=sqlite://%s/users.db", dir);
    const char *users_env[] = {setting[2], "HD_USERS_LISTEN=127.0.0.1:0", "HD_AMQP_URL", NULL};
    if (service_start(&users, bin_dir, dir, users_env) < 0)
        goto out;
    printf("[3] herald-users started (pid %d) on %s, without HD_AMQP_URL: events stay in its "
           "outbox\n",
           (int)users.pid, users.url);

    /* 4. The relay on the users database. Another process's commit cannot wake it on SQLite
     * (PostgreSQL would: LISTEN/NOTIFY), so it polls; 200 ms instead of the default 1 s. */
    const char *relay_env[] = {setting[2], "HD_RELAY_POLL_MS=200", NULL};
    if (service_start(&relay, bin_dir, dir, relay_env) < 0)
        goto out;
    printf("[4] herald-relay started (pid %d) on users.db: polls its outbox every 200 ms\n",
           (int)relay.pid);

    /* 5. A queue of our own for the notifications service's events, declared before they
     * exist: exclusive (deleted when we disconnect), bound to "notifications.#". */
    hd_exchange_spec ex = {.name = "notifications", .type = HD_EXCHANGE_TOPIC, .durable = 1};
    hd_queue_spec qs = {.exclusive = 1, .auto_delete = 1}; /* no name: the broker picks one */
    hd_queue_info qi;                                      /* qi.name: filled in by the declare */
    hd_binding_spec bs = {.queue = qi.name, .exchange = "notifications", .key = "notifications.#"};
    if (hd_amqp_open(amqp_url, NULL, &a, &err) < 0 || hd_exchange_declare(a, &ex, &err) < 0 ||
        hd_queue_declare(a, &qs, &qi, &err) < 0 || hd_queue_bind(a, &bs, &err) < 0) {
        fprintf(stderr, "broker: %s\n", err.text);
        goto out;
    }
    printf("[5] queue %s bound to exchange 'notifications' with 'notifications.#'\n", qi.name);

    /* 6. Register. The correlation id travels: request -> event -> mail header -> history. */
    char email[64], cid[64], url[256], body[256];
    snprintf(email, sizeof email, "ada.%d@example.com", (int)getpid());
    snprintf(cid, sizeof cid, "tutorial14-%d", (int)getpid());
    snprintf(url, sizeof url, "%s/users", users.url);
    snprintf(body, sizeof body,
             "{\"email\":\"%s\",\"password\":\"correct horse battery staple\",\"name\":\"Ada\"}",
             email);
    int64_t t0 = now_ns();
    if (http_call(url, body, cid, &r) < 0 || r.status != 201 ||
        !json_is_string(json_object_get(r.json, "id"))) {
        fprintf(stderr, "POST /users: status %ld, expected 201\n", r.status);
        goto out;
    }
    user_id = strdup(json_string_value(json_object_get(r.json, "id")));
    http_reply_release(&r);
    if (user_id == NULL) {
        fprintf(stderr, "out of memory\n");
        goto out;
    }
    printf("[6] POST /users %s -> 201 Created, user %s, correlation id %s\n", email, user_id, cid);

    /* 7. The verification mail: users' outbox -> relay -> "users" -> queue -> consumer ->
     * inbox -> template -> SMTP -> the sink's maildir. */
    if (mail_wait(maildir, since, email, "Confirm your e-mail address", &verification) < 0)
        goto out;
    printf("[7] verification mail received after %lld ms: '%s', X-Correlation-Id %s\n",
           ms_since(t0), verification.subject, verification.correlation_id);
    char *link = strstr(verification.text, "http");
    char *token = link ? strstr(link, "token=") : NULL;
    if (token == NULL || strspn(token + 6, "0123456789abcdef") != 64) {
        fprintf(stderr, "no verification link with a 64-hex token in:\n%s\n", verification.text);
        goto out;
    }
    token += 6;
    token[64] = '\0'; /* the link ends with the token */
    printf("[7] link: %s\n", link);

    /* 8. What the web page behind the link would do: spend the token. */
    snprintf(url, sizeof url, "%s/users/verify", users.url);
    snprintf(body, sizeof body, "{\"token\":\"%s\"}", token);
    snprintf(cid, sizeof cid, "tutorial14-%d-verify", (int)getpid());
    t0 = now_ns();
    if (http_call(url, body, cid, &r) < 0 || r.status != 200 ||
        !json_is_true(json_object_get(r.json, "verified"))) {
        fprintf(stderr, "POST /users/verify: status %ld, expected 200 and verified\n", r.status);
        goto out;
    }
    http_reply_release(&r);
    printf("[8] POST /users/verify -> 200 OK, verified=true\n");

    /* 9. users.user_verified takes the same path and becomes the welcome mail. */
    if (mail_wait(maildir, since, email, "Welcome to herald", &welcome) < 0)
        goto out;
    printf("[9] welcome mail received after %lld ms: '%s', X-Correlation-Id %s\n", ms_since(t0),
           welcome.subject, welcome.correlation_id);

    /* 10. The notifications service's history of this user, newest first. The mail server
     * accepts a mail before the service records it sent (it cannot record a send it has not
     * made), so the welcome mail may be in the maildir a few milliseconds before its row says
     * "sent": read the history again until both are, as a client would. */
    snprintf(url, sizeof url, "%s/notifications/history/%s", notif.url, user_id);
    json_t *items = NULL;
    for (int waited = 0;; waited += 50) {
        if (http_call_auth(url, NULL, NULL, api_token, &r) < 0 || r.status != 200 ||
            !json_is_array(items = json_object_get(r.json, "items"))) {
            fprintf(stderr, "GET /notifications/history: status %ld, expected 200\n", r.status);
            goto out;
        }
        size_t k;
        json_t *e;
        int done = 0;
        json_array_foreach(items, k, e)
        {
            const char *st = json_string_value(json_object_get(e, "status"));
            done += st != NULL && strcmp(st, "sent") == 0;
        }
        if (done == 2 || waited >= WAIT_MS)
            break;
        http_reply_release(&r);
        hd_sleep_ms(50);
    }
    printf("[10] GET /notifications/history/%s -> 200: %zu notifications:", user_id,
           json_array_size(items));
    size_t i;
    json_t *it;
    int sent = 0;
    json_array_foreach(items, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *status = json_string_value(json_object_get(it, "status"));
        printf("%s %s %s", i ? "," : "", type ? type : "?", status ? status : "?");
        sent += status != NULL && strcmp(status, "sent") == 0;
    }
    printf("\n");
    if (json_array_size(items) != 2 || sent != 2) {
        fprintf(stderr, "history: %zu notifications, %d sent; expected 2, both sent\n",
                json_array_size(items), sent);
        goto out;
    }
    http_reply_release(&r);

    /* 11. Each sent mail left the notifications service as an event of its own. */
    char types[128] = "";
    int events = 0;
    for (int waited = 0; events < 2 && waited < WAIT_MS; waited += 100) {
        int n = take_sent_events(a, qi.name, types, sizeof types, &err);
        if (n < 0) {
            fprintf(stderr, "%s\n", err.text);
            goto out;
        }
        events += n;
        if (events < 2)
            hd_sleep_ms(100);
    }
    printf("[11] notifications.notification_sent events in our queue: %d (%s)\n", events, types);
    if (events != 2) {
        fprintf(stderr, "%d notification_sent events after %d ms; expected 2\n", events, WAIT_MS);
        goto out;
    }

    /* 12. One mail of each kind: at-least-once delivery, exactly-once effect (the inbox). */
    int nv = mail_count(maildir, since, email, "Confirm your e-mail address");
    int nw = mail_count(maildir, since, email, "Welcome to herald");
    printf("[12] mails to %s: %d verification, %d welcome\n", email, nv, nw);
    if (nv != 1 || nw != 1) {
        fprintf(stderr, "expected exactly one mail of each kind\n");
        goto out;
    }

    /* 13. SIGTERM: each process finishes what it holds and exits 0. The relay first: the
     * users service no longer writes, and whatever it wrote is published. */
    int s_relay = service_stop(&relay), s_users = service_stop(&users),
        s_notif = service_stop(&notif);
    printf("[13] SIGTERM: herald-relay exited %d, herald-users exited %d, herald-notifications "
           "exited %d\n",
           s_relay, s_users, s_notif);
    if (s_relay != 0 || s_users != 0 || s_notif != 0) {
        fprintf(stderr, "every process must exit 0 after SIGTERM\n");
        goto out;
    }
    printf("[14] done\n");
    rc = 0;

out:
    if (rc != 0) { /* what the services said, for whoever reads the failure */
        service_dump_log(&notif);
        service_dump_log(&users);
        service_dump_log(&relay);
    }
    service_kill(&relay);
    service_kill(&users);
    service_kill(&notif);
    hd_amqp_close(a); /* the exclusive queue goes with the connection */
    http_reply_release(&r);
    mail_release(&verification);
    mail_release(&welcome);
    free(user_id);
    if (made_dir && rc == 0)
        tutorial_remove_dir(dir);
    else if (made_dir)
        fprintf(stderr, "kept %s for inspection\n", dir);
    curl_global_cleanup();
    return rc;
}
