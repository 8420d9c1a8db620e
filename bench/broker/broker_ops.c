/* broker_ops.c — the broker's CPU per event for variants of the raw chain (issue 14; a
 * diagnosis tool, not built by CMake: cc -O2 -o broker_ops broker_ops.c -lrabbitmq -lpthread).
 *
 *   stage 1: confirmed publish of events -> topic exchange, key "event" -> queue IN
 *   stage 2: consume IN, ack (each, or --ack-multi: one multiple ack per batch drained),
 *            confirmed publish of a "sent" message per event -> queue OUT
 *   stage 3: consume OUT, ack each (--no-s3: nobody consumes OUT, it only grows)
 *
 * usage: broker_ops --port AMQP_PORT --beam BROKER_PID --n N [--label L] [variant...]
 * (127.0.0.1, guest/guest; declares and deletes its own exchange and queues). Prints the
 * rate and the broker's CPU (utime + stime of BROKER_PID) per event over the run. Variants:
 * --ack-multi --mandatory --hprops (herald's properties and headers) --no-s3 --pub-batch B
 * (publish B, wait for every confirm) --s2-drain (stage 2 likewise) --s2-delay-us/--s2-msg-us
 * (a commit per batch / per message before the ack) --prefetch P --window W --rate R (stage 1
 * paced) --direct --transient --lazy --qv2 --ev/--sent BYTES. See README.md. */
#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1";
static int port = 5672;
static size_t N = 10000, EV = 531, SENT = 455, WINDOW = 1000;
static int PREFETCH = 100, PREFETCH3 = 100;
static int ACK_MULTI = 0;  /* stage 2: one multiple ack per batch drained */
static int ACK_MULTI3 = 0; /* stage 3 likewise */
static int MANDATORY = 0;
static int HPROPS = 0;    /* herald's properties */
static int NO_S3 = 0;     /* nobody consumes OUT */
static int PUB_BATCH = 0; /* stage 1: publish B, then wait all confirms */
static int S2_DRAIN = 0;  /* stage 2: publish the batch's sent, wait all confirms, then next */
static int S2_DELAY_US = 0, S2_MSG_US = 0; /* stage 2: per batch, before ack (a commit) */
static double RATE = 0;                    /* stage 1 pacing, events/s */
static int DIRECT = 0;
static int TRANSIENT = 0;
static int S2_BATCH_MAX = 256;
static int S2_ACK_AFTER_PUB = 0; /* stage 2: ack the batch after its sent are confirmed */
static int QV2 = 0;
static int LAZY = 0;
static pid_t beam;
static char X[64], QIN[64], QOUT[64];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long cpu_ticks(pid_t pid)
{
    char p[64], buf[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    unsigned long long ut, st;
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static void die_reply(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return;
    fprintf(stderr, "bx: %s failed (%d)\n", what, r.reply_type);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        fprintf(stderr, "  %.*s\n", (int)m->reply_text.len, (char *)m->reply_text.bytes);
    }
    exit(1);
}

static amqp_connection_state_t conn_open(const char *name)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, host, port)) {
        fprintf(stderr, "bx: connect\n");
        exit(1);
    }
    amqp_table_entry_t e = {
        .key = amqp_cstring_bytes("connection_name"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(name)}};
    amqp_table_t props = {1, &e};
    die_reply(amqp_login_with_properties(c, "/", 0, 131072, 0, &props, AMQP_SASL_METHOD_PLAIN,
                                         "guest", "guest"),
              "login");
    amqp_channel_open(c, 1);
    die_reply(amqp_get_rpc_reply(c), "channel.open");
    return c;
}

typedef struct confirms {
    unsigned char *settled;
    uint64_t low, next, acked;
} confirms;

static void settle(confirms *c, uint64_t tag, int multiple)
{
    if (tag >= c->next)
        return;
    uint64_t from = multiple ? c->low : tag;
    for (uint64_t t = from; t <= tag; t++)
        if (!c->settled[t]) {
            c->settled[t] = 1;
            c->acked++;
        }
    while (c->low < c->next && c->settled[c->low])
        c->low++;
}

/* read one frame on the publishing connection; block up to ms (-1 forever). 1 got, 0 none */
static int read_confirm(amqp_connection_state_t c, confirms *cf, int ms)
{
    amqp_frame_t f;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int st = amqp_simple_wait_frame_noblock(c, &f, ms < 0 ? NULL : &tv);
    if (st == AMQP_STATUS_TIMEOUT)
        return 0;
    if (st != AMQP_STATUS_OK) {
        fprintf(stderr, "bx: wait frame %d\n", st);
        exit(1);
    }
    if (f.frame_type == AMQP_FRAME_METHOD) {
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            settle(cf, a->delivery_tag, a->multiple);
        } else if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            fprintf(stderr, "bx: returned!\n");
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            fprintf(stderr, "bx: nacked\n");
            exit(1);
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            fprintf(stderr, "bx: closed by broker\n");
            exit(1);
        }
    }
    amqp_maybe_release_buffers(c);
    return 1;
}

static void uuid(char *out, uint64_t i, int salt)
{
    snprintf(out, 37, "%08x-0000-4000-8000-%012" PRIx64, (unsigned)salt, i);
}

static int publish(amqp_connection_state_t c, const char *key, uint64_t seq, amqp_bytes_t body,
                   const char *type)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = TRANSIENT ? 1 : 2;
    char mid[40], cid[40];
    amqp_table_entry_t h[3];
    if (HPROPS) {
        p.content_type = amqp_cstring_bytes("application/cloudevents+json; charset=utf-8");
        p._flags |= AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
        p.type = amqp_cstring_bytes(type);
        uuid(mid, seq, key[0]);
        uuid(cid, seq, 7);
        p.message_id = amqp_cstring_bytes(mid);
        int n = 0;
        h[n].key = amqp_cstring_bytes("causationid");
        h[n].value.kind = AMQP_FIELD_KIND_UTF8;
        h[n++].value.value.bytes = amqp_cstring_bytes(cid);
        h[n].key = amqp_cstring_bytes("x-herald-seq");
        h[n].value.kind = AMQP_FIELD_KIND_I64;
        h[n++].value.value.i64 = (int64_t)seq;
        p.headers.num_entries = n;
        p.headers.entries = h;
    } else {
        p.content_type = amqp_cstring_bytes("application/octet-stream");
    }
    return amqp_basic_publish(c, 1, amqp_cstring_bytes(X), amqp_cstring_bytes(key), MANDATORY, 0,
                              &p, body);
}

static atomic_size_t done1, done2, done3;
static atomic_int go;

static amqp_bytes_t make_body(size_t n)
{
    char *b = malloc(n);
    memset(b, 'x', n);
    return (amqp_bytes_t){n, b};
}

static void *stage1(void *arg)
{
    amqp_connection_state_t c = arg;
    confirms cf = {calloc(N + 2, 1), 1, 1, 0};
    amqp_bytes_t body = make_body(EV);
    while (!atomic_load(&go))
        usleep(100);
    double t0 = now_s();
    while (cf.low <= N) {
        int can = cf.next <= N && cf.next - cf.low < WINDOW;
        if (PUB_BATCH && cf.next != cf.low)
            can = can && ((cf.next - 1) % PUB_BATCH) != 0; /* batch boundary: drain first */
        if (can && RATE > 0 && now_s() < t0 + (double)(cf.next - 1) / RATE) {
            if (cf.next == cf.low) { /* nothing in flight: sleep until due */
                double d = t0 + (double)(cf.next - 1) / RATE - now_s();
                if (d > 0)
                    usleep((useconds_t)(d * 1e6));
                continue;
            }
            can = 0;
        }
        if (can) {
            if (publish(c, "event", cf.next, body, "users.user_registered")) {
                fprintf(stderr, "bx: publish\n");
                exit(1);
            }
            cf.next++;
            continue;
        }
        if (amqp_frames_enqueued(c) || amqp_data_in_buffer(c))
            read_confirm(c, &cf, 0);
        else {
            int ms = 200;
            if (RATE > 0 && cf.next <= N) {
                double d = t0 + (double)(cf.next - 1) / RATE - now_s();
                ms = d <= 0 ? 0 : (int)(d * 1000) + 1;
                if (ms > 200)
                    ms = 200;
            }
            struct pollfd pf = {amqp_get_sockfd(c), POLLIN, 0};
            if (poll(&pf, 1, ms) > 0)
                read_confirm(c, &cf, 0);
        }
        atomic_store(&done1, cf.acked);
    }
    atomic_store(&done1, cf.acked);
    return NULL;
}

/* consume on cin: returns 1 with *tag set if a delivery was read, 0 if none (timeout) */
static int get_delivery(amqp_connection_state_t cin, uint64_t *tag, int ms)
{
    amqp_envelope_t env;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    amqp_maybe_release_buffers(cin);
    amqp_rpc_reply_t r = amqp_consume_message(cin, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        *tag = env.delivery_tag;
        amqp_destroy_envelope(&env);
        return 1;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t f;
        amqp_simple_wait_frame(cin, &f);
        return 0;
    }
    fprintf(stderr, "bx: consume failed %d\n", r.reply_type);
    exit(1);
}

static void start_consume(amqp_connection_state_t c, const char *q, int prefetch)
{
    amqp_basic_qos(c, 1, 0, (uint16_t)prefetch, 0);
    die_reply(amqp_get_rpc_reply(c), "qos");
    amqp_basic_consume(c, 1, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    die_reply(amqp_get_rpc_reply(c), "consume");
}

typedef struct s2arg {
    amqp_connection_state_t cin, cout;
} s2arg;

/* stage 2, batch mode: take what is there (up to S2_BATCH_MAX), [delay], ack multiple, then
 * publish the batch's sent (drain: wait all confirms before the next batch). */
static void *stage2(void *arg)
{
    s2arg *a = arg;
    confirms cf = {calloc(N + 2, 1), 1, 1, 0};
    amqp_bytes_t body = make_body(SENT);
    size_t consumed = 0, pending = 0;
    while (!atomic_load(&go))
        usleep(100);
    while (consumed < N || pending > 0 || cf.low < cf.next) {
        int progress = 0;
        /* 1. deliveries (what is there, up to a batch) */
        if (consumed < N && pending < WINDOW && (!S2_DRAIN || cf.low == cf.next)) {
            uint64_t tag, last = 0;
            int got = 0;
            while (consumed < N && got < S2_BATCH_MAX && pending < WINDOW &&
                   get_delivery(a->cin, &tag, 0)) {
                if (!ACK_MULTI)
                    amqp_basic_ack(a->cin, 1, tag, 0);
                last = tag;
                got++;
                consumed++;
                pending++;
                if (!ACK_MULTI && !S2_DRAIN && !S2_ACK_AFTER_PUB)
                    break; /* raw chain: one delivery, then publish it */
            }
            progress += got;
            if (got && (S2_DELAY_US || S2_MSG_US))
                usleep((useconds_t)(S2_DELAY_US + S2_MSG_US * got));
            if (got && ACK_MULTI && !S2_ACK_AFTER_PUB)
                amqp_basic_ack(a->cin, 1, last, 1);
            if (got && S2_ACK_AFTER_PUB) {
                while (pending > 0) {
                    publish(a->cout, "sent", cf.next++, body, "notifications.notification_sent");
                    pending--;
                }
                while (cf.low < cf.next)
                    read_confirm(a->cout, &cf, -1);
                if (ACK_MULTI)
                    amqp_basic_ack(a->cin, 1, last, 1);
                atomic_store(&done2, cf.acked);
                continue;
            }
        }
        /* 2. publishes */
        while (pending > 0 && cf.next - cf.low < WINDOW) {
            publish(a->cout, "sent", cf.next++, body, "notifications.notification_sent");
            pending--;
            progress++;
        }
        /* 3. confirms */
        if (S2_DRAIN) {
            while (cf.low < cf.next)
                read_confirm(a->cout, &cf, -1);
        } else {
            while (cf.low < cf.next &&
                   (amqp_frames_enqueued(a->cout) || amqp_data_in_buffer(a->cout)))
                progress += read_confirm(a->cout, &cf, 0);
        }
        atomic_store(&done2, cf.acked);
        if (!progress) {
            struct pollfd pf[2] = {{amqp_get_sockfd(a->cin), POLLIN, 0},
                                   {amqp_get_sockfd(a->cout), POLLIN, 0}};
            int nf = 0;
            struct pollfd use[2];
            if (consumed < N && pending < WINDOW)
                use[nf++] = pf[0];
            if (cf.low < cf.next)
                use[nf++] = pf[1];
            if (nf == 0)
                continue;
            if (poll(use, nf, 50) > 0)
                for (int k = 0; k < nf; k++)
                    if (use[k].revents && use[k].fd == pf[1].fd)
                        read_confirm(a->cout, &cf, 0);
        }
    }
    atomic_store(&done2, cf.acked);
    return NULL;
}

static void *stage3(void *arg)
{
    amqp_connection_state_t c = arg;
    size_t consumed = 0;
    while (!atomic_load(&go))
        usleep(100);
    while (consumed < N) {
        uint64_t tag, last = 0;
        int got = 0;
        while (consumed < N && get_delivery(c, &tag, got == 0 ? 200 : 0)) {
            got++;
            consumed++;
            last = tag;
            if (!ACK_MULTI3)
                amqp_basic_ack(c, 1, tag, 0);
            if (got >= 256)
                break;
        }
        if (got && ACK_MULTI3)
            amqp_basic_ack(c, 1, last, 1);
        atomic_store(&done3, consumed);
    }
    return NULL;
}

static void declare(amqp_connection_state_t c)
{
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(X),
                          amqp_cstring_bytes(DIRECT ? "direct" : "topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    die_reply(amqp_get_rpc_reply(c), "exchange.declare");
    amqp_table_entry_t e[2];
    int ne = 0;
    if (QV2) {
        e[ne].key = amqp_cstring_bytes("x-queue-version");
        e[ne].value.kind = AMQP_FIELD_KIND_I32;
        e[ne++].value.value.i32 = 2;
    }
    if (LAZY) {
        e[ne].key = amqp_cstring_bytes("x-queue-mode");
        e[ne].value.kind = AMQP_FIELD_KIND_UTF8;
        e[ne++].value.value.bytes = amqp_cstring_bytes("lazy");
    }
    amqp_table_t args = {ne, e};
    const char *qs[2] = {QIN, QOUT}, *ks[2] = {"event", "sent"};
    for (int i = 0; i < 2; i++) {
        amqp_queue_declare(c, 1, amqp_cstring_bytes(qs[i]), 0, 1, 0, 0, args);
        die_reply(amqp_get_rpc_reply(c), "queue.declare");
        amqp_queue_bind(c, 1, amqp_cstring_bytes(qs[i]), amqp_cstring_bytes(X),
                        amqp_cstring_bytes(ks[i]), amqp_empty_table);
        die_reply(amqp_get_rpc_reply(c), "queue.bind");
    }
}

static void undeclare(amqp_connection_state_t c)
{
    amqp_queue_delete(c, 1, amqp_cstring_bytes(QIN), 0, 0);
    amqp_get_rpc_reply(c);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(QOUT), 0, 0);
    amqp_get_rpc_reply(c);
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(X), 0);
    amqp_get_rpc_reply(c);
}

int main(int argc, char **argv)
{
    const char *label = "run";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
#define OPT(name, var, conv)                                                                       \
    if (!strcmp(o, name)) {                                                                        \
        var = conv(v);                                                                             \
        i++;                                                                                       \
        continue;                                                                                  \
    }
#define FLAG(name, var)                                                                            \
    if (!strcmp(o, name)) {                                                                        \
        var = 1;                                                                                   \
        continue;                                                                                  \
    }
        OPT("--port", port, atoi);
        OPT("--n", N, atol);
        OPT("--ev", EV, atol);
        OPT("--sent", SENT, atol);
        OPT("--window", WINDOW, atol);
        OPT("--prefetch", PREFETCH, atoi);
        OPT("--prefetch3", PREFETCH3, atoi);
        OPT("--pub-batch", PUB_BATCH, atoi);
        OPT("--s2-delay-us", S2_DELAY_US, atoi);
        OPT("--s2-batch", S2_BATCH_MAX, atoi);
        OPT("--s2-msg-us", S2_MSG_US, atoi);
        OPT("--rate", RATE, atof);
        OPT("--beam", beam, atoi);
        if (!strcmp(o, "--label")) {
            label = v;
            i++;
            continue;
        }
        FLAG("--ack-multi", ACK_MULTI);
        FLAG("--ack-multi3", ACK_MULTI3);
        FLAG("--mandatory", MANDATORY);
        FLAG("--hprops", HPROPS);
        FLAG("--no-s3", NO_S3);
        FLAG("--s2-drain", S2_DRAIN);
        FLAG("--s2-ack-after-pub", S2_ACK_AFTER_PUB);
        FLAG("--direct", DIRECT);
        FLAG("--transient", TRANSIENT);
        FLAG("--qv2", QV2);
        FLAG("--lazy", LAZY);
        fprintf(stderr, "bx: unknown %s\n", o);
        return 2;
    }
    snprintf(X, sizeof X, "bx-%d", (int)getpid());
    snprintf(QIN, sizeof QIN, "bx-%d.events", (int)getpid());
    snprintf(QOUT, sizeof QOUT, "bx-%d.sent", (int)getpid());
    amqp_connection_state_t adm = conn_open("bx admin");
    declare(adm);
    amqp_connection_state_t c1 = conn_open("bx 1 publish events");
    amqp_confirm_select(c1, 1);
    die_reply(amqp_get_rpc_reply(c1), "confirm");
    amqp_connection_state_t c2in = conn_open("bx 2 consume events");
    start_consume(c2in, QIN, PREFETCH);
    amqp_connection_state_t c2out = conn_open("bx 2 publish sent");
    amqp_confirm_select(c2out, 1);
    die_reply(amqp_get_rpc_reply(c2out), "confirm");
    amqp_connection_state_t c3 = NULL;
    if (!NO_S3) {
        c3 = conn_open("bx 3 consume sent");
        start_consume(c3, QOUT, PREFETCH3);
    }
    s2arg a2 = {c2in, c2out};
    pthread_t t1, t2, t3;
    pthread_create(&t1, NULL, stage1, c1);
    pthread_create(&t2, NULL, stage2, &a2);
    if (c3)
        pthread_create(&t3, NULL, stage3, c3);
    usleep(200000);
    long long b0 = cpu_ticks(beam);
    double w0 = now_s();
    clock_t me0 = clock();
    atomic_store(&go, 1);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    if (c3)
        pthread_join(t3, NULL);
    double w1 = now_s();
    long long b1 = cpu_ticks(beam);
    clock_t me1 = clock();
    double tick = (double)sysconf(_SC_CLK_TCK);
    double bus = (double)(b1 - b0) / tick * 1e6 / (double)N;
    printf("%-28s n=%zu  %.2f s  %.0f ev/s  broker %.0f us/ev  bx %.0f us/ev\n", label, N, w1 - w0,
           (double)N / (w1 - w0), bus, (double)(me1 - me0) / CLOCKS_PER_SEC * 1e6 / (double)N);
    fflush(stdout);
    undeclare(adm);
    return 0;
}
