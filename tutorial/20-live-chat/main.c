/* Chapter 20 — a live chat: one bus between two processes, Server-Sent Events to browsers.
 *
 * The seed's events package shows its bus with an online chat on Redis pub/sub. herald-chat
 * is that chat: browsers post over HTTP, every chat process publishes what its browsers post
 * on ONE bus, and every process pushes what the bus brings to ITS browsers over a
 * Server-Sent Events stream (text/event-stream: a response that never ends, one event per
 * message). This program plays two browsers with plain sockets:
 *
 *   ann  on process "one"  ──POST──▶ one ──publish──▶ bus ──▶ one ──SSE──▶ ann
 *                                                         └──▶ two ──SSE──▶ ben
 *
 * Then it shows what the chat accepts to lose: process two is stopped, ann says something,
 * two comes back, ben joins again — and that message is gone for him. Nothing was stored:
 * not by Redis pub/sub (a subscriber that is not there misses the message; chapter 19
 * counts it against RabbitMQ with an outbox and an inbox), and not by the chat, whose last
 * hop, a browser's stream, has no queue to come back to either.
 *
 * Needs HD_REDIS_URL (make servers-up). HD_CHAT_BUS=rabbitmq (with HD_AMQP_URL) runs the same
 * story on RabbitMQ, and the last step says the same: see the exercise in
 * docs/tutorial/20-live-chat.md. Binaries come from the working directory (ctest runs
 * chapters in the build directory) or HD_BIN_DIR.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herald/clock.h"

#include "hd_proc.h"
#include "tutorial.h"

#define WAIT_MS 20000

static char bus[32], bus_env[64], url_env[600], log_dir[256];

/* ---- two tiny HTTP clients: one request, one event stream ---------------------------- */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* POST json to path with an optional bearer token; the status, and the body into out. */
static int post(int port, const char *path, const char *token, const char *json, char *out,
                size_t cap)
{
    int fd = connect_to(port);
    if (fd < 0)
        return 0;
    char req[2048], auth[128] = "";
    if (token != NULL)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, auth, strlen(json), json);
    send(fd, req, (size_t)n, MSG_NOSIGNAL);
    size_t len = 0;
    ssize_t got;
    while (len + 1 < cap && (got = recv(fd, out + len, cap - 1 - len, 0)) > 0)
        len += (size_t)got;
    out[len] = '\0';
    close(fd);
    int status = 0;
    sscanf(out, "HTTP/1.%*d %d", &status);
    const char *body = strstr(out, "\r\n\r\n");
    if (body != NULL)
        memmove(out, body + 4, strlen(body + 4) + 1);
    return status;
}

/* Join room on port as name; the token into token (65 bytes). The status. */
static int join(int port, const char *name, char *token)
{
    char json[128], resp[1024];
    snprintf(json, sizeof json, "{\"name\":\"%s\"}", name);
    int status = post(port, "/rooms/general/join", NULL, json, resp, sizeof resp);
    const char *t = strstr(resp, "\"token\":\"");
    if (status != 201 || t == NULL)
        return status;
    snprintf(token, 65, "%.64s", t + 9);
    return status;
}

static int say(int port, const char *token, const char *text)
{
    char json[512], resp[1024];
    snprintf(json, sizeof json, "{\"text\":\"%s\"}", text);
    return post(port, "/rooms/general/messages", token, json, resp, sizeof resp);
}

/* An event stream: the socket and all it has sent so far. */
typedef struct stream {
    int fd;
    char seen[65536];
    size_t len;
} stream;

/* Read until needle has been seen (NULL: until the server closes), at most ms. */
static int wait_for(stream *s, const char *needle, int ms)
{
    int64_t end = hd_clock_ms() + ms;
    for (;;) {
        if (needle != NULL && strstr(s->seen, needle) != NULL)
            return 1;
        int64_t left = end - hd_clock_ms();
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0 || s->len + 1 >= sizeof s->seen)
            return 0;
        ssize_t n = recv(s->fd, s->seen + s->len, sizeof s->seen - 1 - s->len, 0);
        if (n <= 0)
            return needle == NULL;
        s->len += (size_t)n;
        s->seen[s->len] = '\0';
    }
}

/* GET /rooms/general/events?token=...: EventSource cannot set an Authorization header, so
 * the token travels in the query. 1 once the stream is open. */
static int listen_to(stream *s, int port, const char *token)
{
    memset(s, 0, sizeof *s);
    if ((s->fd = connect_to(port)) < 0)
        return 0;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /rooms/general/events?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Accept: text/event-stream\r\n\r\n",
                     token);
    send(s->fd, req, (size_t)n, MSG_NOSIGNAL);
    return wait_for(s, ": welcome", 5000) && strstr(s->seen, "text/event-stream") != NULL;
}

/* How many times needle occurs in what the stream sent. */
static int count(const stream *s, const char *needle)
{
    int n = 0;
    for (const char *p = s->seen; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* ---- the processes ----------------------------------------------------------------------- */

static hd_proc *start_chat(const char *instance)
{
    char bin[512], inst[64], log[300];
    const char *dir = getenv("HD_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/herald-chat", dir && *dir ? dir : ".");
    snprintf(inst, sizeof inst, "HD_CHAT_INSTANCE=ch20-%s", instance);
    snprintf(log, sizeof log, "%s/%s.log", log_dir, instance);
    const char *argv[] = {bin, NULL};
    const char *env[] = {
        bus_env, url_env, inst, "HD_CHAT_LISTEN=127.0.0.1:0", "HD_CHAT_HEARTBEAT=1s", NULL};
    hd_proc_options o = {.argv = argv, .env = env, .env_drop_prefix = "HD_", .log_path = log};
    hd_proc *p = NULL;
    hd_error err;
    if (hd_proc_start(&o, &p, &err) < 0 || hd_proc_wait_health(p, WAIT_MS, &err) < 0) {
        fprintf(stderr, "herald-chat %s: %s\n", instance, err.text);
        hd_proc_dump_log(p, stderr, 20);
        hd_proc_free(p);
        return NULL;
    }
    return p;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    const char *b = getenv("HD_CHAT_BUS");
    snprintf(bus, sizeof bus, "%s", b && *b ? b : "redis");
    const char *url_name = strcmp(bus, "rabbitmq") == 0 ? "HD_AMQP_URL" : "HD_REDIS_URL";
    const char *url = tutorial_require_env(url_name);
    if (url == NULL)
        return 1;
    snprintf(bus_env, sizeof bus_env, "HD_CHAT_BUS=%s", bus);
    snprintf(url_env, sizeof url_env, "%s=%s", url_name, url);
    snprintf(log_dir, sizeof log_dir, "/tmp/herald-ch20-%d", (int)getpid());
    if (mkdir(log_dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", log_dir, strerror(errno));
        return 1;
    }

    int status = 1;
    hd_proc *one = NULL, *two = NULL;
    stream *sa = calloc(1, sizeof *sa), *sb = calloc(1, sizeof *sb);
    char ann[65] = "", ben[65] = "", text[256], old_ben[65];
    hd_error err;
    char tag[32];
    snprintf(tag, sizeof tag, "%d", (int)getpid());

    one = start_chat("one");
    two = start_chat("two");
    CHECK(one && two, "cannot start the chat processes");
    int p1 = hd_proc_port(one), p2 = hd_proc_port(two);
    printf("[1] herald-chat 'one' on http://127.0.0.1:%d and 'two' on http://127.0.0.1:%d, "
           "one %s bus between them\n",
           p1, p2, strcmp(bus, "redis") == 0 ? "Redis pub/sub" : bus);

    CHECK(join(p1, "ann", ann) == 201 && join(p2, "ben", ben) == 201, "join failed");
    printf("[2] ann joined 'general' on one, ben on two: each got a token of %zu hex "
           "characters (the chat keeps only its hash)\n",
           strlen(ann));

    CHECK(listen_to(sa, p1, ann) && listen_to(sb, p2, ben), "no event stream");
    printf("[3] both listen: GET /rooms/general/events?token=... -> 200 text/event-stream\n");

    snprintf(text, sizeof text, "hello from ann %s", tag);
    int64_t t0 = hd_clock_ns();
    CHECK(say(p1, ann, text) == 202, "post refused");
    CHECK(wait_for(sb, text, 5000), "ben never got ann's message");
    long long ms = (long long)((hd_clock_ns() - t0) / 1000000);
    CHECK(wait_for(sa, text, 5000), "ann never got her own message back");
    printf("[4] ann posts on one -> 202; ben's stream on two has it after %lld ms; ann's own "
           "came back over the bus too\n",
           ms);
    const char *frame = strstr(sb->seen, "id: ");
    if (frame != NULL) {
        char line[160];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(frame, "\n"), frame);
        printf("[5] the event on the wire: '%s' / 'event: message' / 'data: {...\"text\":\"%s\"}'"
               "\n",
               line, text);
    }

    /* What pub/sub does not promise. */
    hd_proc_signal(two, SIGTERM, &err);
    CHECK(wait_for(sb, NULL, 5000), "two's stream did not end");
    CHECK(hd_proc_wait(two, WAIT_MS, &err) == 0, "two did not stop");
    printf("[6] SIGTERM two: ben's stream ends with 'event: bye' (%s), two exits %d\n",
           strstr(sb->seen, "server stopping") ? "server stopping" : "?", hd_proc_exit_code(two));
    close(sb->fd);

    snprintf(text, sizeof text, "said while two is down %s", tag);
    CHECK(say(p1, ann, text) == 202, "post refused");
    printf("[7] ann posts while two is down -> 202 (the bus took it; no one on two heard it)\n");

    hd_proc_free(two);
    two = start_chat("two");
    CHECK(two != NULL, "two did not come back");
    p2 = hd_proc_port(two);
    strcpy(old_ben, ben);
    int old = say(p2, old_ben, "am I still here?");
    CHECK(join(p2, "ben", ben) == 201 && listen_to(sb, p2, ben), "ben cannot rejoin");
    printf("[8] two is back: ben's old token -> %d (tokens live in the process's memory); he "
           "joins again and listens\n",
           old);

    snprintf(text, sizeof text, "back again %s", tag);
    CHECK(say(p1, ann, text) == 202, "post refused");
    CHECK(wait_for(sb, text, 5000), "ben never got the message after his return");
    wait_for(sb, "said while two is down", 1000); /* give a late copy every chance */
    int missed = count(sb, "said while two is down") == 0;
    printf("[9] ben's new stream: %d of ann's 2 messages since two stopped; the one said while "
           "two was down is %s\n",
           2 - missed, missed ? "lost: nothing kept it for him" : "there");

    hd_proc_signal(one, SIGTERM, &err);
    hd_proc_signal(two, SIGTERM, &err);
    int e1 = hd_proc_wait(one, WAIT_MS, &err) == 0 ? hd_proc_exit_code(one) : -1;
    int e2 = hd_proc_wait(two, WAIT_MS, &err) == 0 ? hd_proc_exit_code(two) : -1;
    printf("[10] SIGTERM: one exited %d, two exited %d, with streams open\n", e1, e2);
    CHECK(e1 == 0 && e2 == 0, "a chat process did not stop cleanly");
    printf("[11] done\n");
    status = 0;
out:
    if (status != 0) {
        if (one)
            hd_proc_dump_log(one, stderr, 20);
        if (two)
            hd_proc_dump_log(two, stderr, 20);
    }
    if (sa->fd > 0)
        close(sa->fd);
    if (sb->fd > 0)
        close(sb->fd);
    free(sa);
    free(sb);
    hd_proc_free(one);
    hd_proc_free(two);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", log_dir);
    if (status == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", log_dir);
    return status;
}
