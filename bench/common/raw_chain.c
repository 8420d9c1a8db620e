/* raw_chain.c — see raw_chain.h. */
#define _GNU_SOURCE /* ppoll: the paced publisher waits below a millisecond */
#include "raw_chain.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <amqp.h>

#include "herald/amqp.h"
#include "herald/clock.h"
#include "progress.h"
#include "raw_broker.h"

/* One stage: consumes from in_queue (when set), publishes to out_key (when set). */
typedef struct stage {
    const bench_chain_spec *spec;
    const char *name;
    const char *in_queue; /* NULL: stage 1 */
    const char *out_key;  /* NULL: stage 3 */
    size_t out_bytes;
    hd_amqp *cin, *cout;
    amqp_channel_t chin, chout;
    bench_confirms conf;
    int conf_ready;
    uint64_t next;  /* delivery tag of the next publish */
    size_t pending; /* consumed, not yet published (stage 2) */
    size_t consumed;
    atomic_size_t done; /* what the stage finished: consumed (stage 3), confirmed (others) */
    int rc;
    hd_error err;
} stage;

typedef struct chain {
    stage st[3];
    atomic_int ready; /* stages set up */
    atomic_int go;    /* the clock runs: start */
    atomic_int abort; /* a stage failed (or a thread did not start): every stage stops */
    int64_t start_ns; /* hd_clock_ns() when the clock started (written before go) */
} chain;

typedef struct stage_arg {
    chain *c;
    int i;
} stage_arg;

static int stage_open(stage *s)
{
    hd_amqp_options ao = {.connection_name = s->name};
    int rc;
    if (s->in_queue != NULL) {
        if ((rc = hd_amqp_open(s->spec->url, &ao, &s->cin, &s->err)) < 0 ||
            (rc = hd_amqp_channel_open(s->cin, &s->chin, &s->err)) < 0)
            return rc;
        amqp_connection_state_t st = hd_amqp_state(s->cin);
        amqp_basic_qos(st, s->chin, 0, (uint16_t)s->spec->prefetch, 0);
        if ((rc = hd_amqp_check_reply_on(s->cin, s->chin, amqp_get_rpc_reply(st), "basic.qos",
                                         &s->err)) < 0) {
            s->chin = 0;
            return rc;
        }
        amqp_basic_consume(st, s->chin, amqp_cstring_bytes(s->in_queue), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        if ((rc = hd_amqp_check_reply_on(s->cin, s->chin, amqp_get_rpc_reply(st), "basic.consume",
                                         &s->err)) < 0) {
            s->chin = 0;
            return rc;
        }
    }
    if (s->out_key != NULL) {
        if (bench_confirms_init(&s->conf, s->spec->n) < 0)
            return hd_error_set(&s->err, HD_ENOMEM, "raw chain");
        s->conf_ready = 1;
        if ((rc = hd_amqp_open(s->spec->url, &ao, &s->cout, &s->err)) < 0 ||
            (rc = hd_amqp_channel_open(s->cout, &s->chout, &s->err)) < 0)
            return rc;
        amqp_connection_state_t st = hd_amqp_state(s->cout);
        amqp_confirm_select(st, s->chout);
        if ((rc = hd_amqp_check_reply_on(s->cout, s->chout, amqp_get_rpc_reply(st),
                                         "confirm.select", &s->err)) < 0) {
            s->chout = 0;
            return rc;
        }
    }
    s->next = 1;
    return 0;
}

/* One frame from the publishing connection, if a whole one is there (no wait). */
static int read_confirm(stage *s)
{
    amqp_connection_state_t st = hd_amqp_state(s->cout);
    amqp_frame_t f;
    struct timeval now = {0, 0};
    int status = amqp_simple_wait_frame_noblock(st, &f, &now);
    if (status == AMQP_STATUS_TIMEOUT)
        return 0;
    int rc = hd_amqp_check_status(s->cout, status, "raw chain: confirms", &s->err);
    if (rc < 0)
        return rc;
    if (f.frame_type == AMQP_FRAME_METHOD && f.channel == s->chout) {
        amqp_method_t *m = &f.payload.method;
        if (m->id == AMQP_BASIC_ACK_METHOD) {
            const amqp_basic_ack_t *a = m->decoded;
            bench_confirm_settle(&s->conf, a->delivery_tag, a->multiple, 1, s->next);
        } else if (m->id == AMQP_BASIC_NACK_METHOD) {
            const amqp_basic_nack_t *a = m->decoded;
            bench_confirm_settle(&s->conf, a->delivery_tag, a->multiple, 0, s->next);
        } else if (m->id == AMQP_BASIC_RETURN_METHOD) {
            return hd_error_set(&s->err, HD_EINVAL,
                                "raw chain: the broker returned a message: nothing is bound to "
                                "%s with key %s",
                                s->spec->exchange, s->out_key);
        } else if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
            rc = hd_amqp_handle_close(s->cout, s->chout, m, "raw chain", &s->err);
            s->chout = 0;
            return rc;
        }
    } else if (f.frame_type == AMQP_FRAME_METHOD &&
               f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
        return hd_amqp_handle_close(s->cout, f.channel, &f.payload.method, "raw chain", &s->err);
    }
    amqp_maybe_release_buffers(st);
    atomic_store(&s->done, (size_t)(s->conf.acked + s->conf.nacked));
    return 1;
}

/* One delivery from the consuming connection, if a whole one is there (no wait): acked at
 * once, one basic.ack each (the plain consumer loop of bench_raw_consume). */
static int read_delivery(stage *s)
{
    amqp_connection_state_t st = hd_amqp_state(s->cin);
    amqp_envelope_t env;
    struct timeval now = {0, 0};
    amqp_maybe_release_buffers(st);
    amqp_rpc_reply_t r = amqp_consume_message(st, &env, &now, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        if (s->out_key != NULL && s->spec->delivered_ns != NULL && s->consumed < s->spec->n)
            s->spec->delivered_ns[s->consumed] = hd_clock_ns(); /* stage 2: event k */
        int status = amqp_basic_ack(st, s->chin, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        int rc = hd_amqp_check_status(s->cin, status, "raw chain: basic.ack", &s->err);
        if (rc < 0)
            return rc;
        s->consumed++;
        if (s->out_key != NULL)
            s->pending++;
        else
            atomic_store(&s->done, s->consumed);
        return 1;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t f;
        int status = amqp_simple_wait_frame(st, &f);
        int rc = hd_amqp_check_status(s->cin, status, "raw chain: consume", &s->err);
        if (rc < 0)
            return rc;
        if (f.frame_type == AMQP_FRAME_METHOD &&
            (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
             f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
            s->chin = 0;
            return hd_amqp_handle_close(s->cin, f.channel, &f.payload.method, "raw chain", &s->err);
        }
        return 1;
    }
    return hd_amqp_reply_error(r, "raw chain: consume", NULL, &s->err);
}

static int stage_loop(chain *c, stage *s)
{
    const bench_chain_spec *sp = s->spec;
    size_t n = sp->n;
    char *body = malloc(s->out_bytes ? s->out_bytes : 1);
    if (body == NULL)
        return hd_error_set(&s->err, HD_ENOMEM, "raw chain");
    memset(body, 'x', s->out_bytes);
    amqp_bytes_t bytes = {.len = s->out_bytes, .bytes = body};
    const char *type = s->in_queue == NULL ? sp->event_type : sp->sent_type;
    bench_props bp;
    bench_props_init(&bp, sp->shape, type != NULL ? type : s->out_key);
    uint64_t salt = (uint64_t)hd_clock_ns();
    amqp_connection_state_t in = s->cin ? hd_amqp_state(s->cin) : NULL;
    amqp_connection_state_t out = s->cout ? hd_amqp_state(s->cout) : NULL;
    int64_t last_progress = hd_clock_ms();
    int rc = 0;
    while ((in != NULL && s->consumed < n) || (out != NULL && s->conf.low <= n)) {
        if (atomic_load(&c->abort)) {
            rc = hd_error_set(&s->err, HD_EINTR, "raw chain: another stage failed");
            break;
        }
        /* Paced: stage 1 publishes event k (tag k + 1) at start + k / rate, not before. */
        int64_t wait_ns = 0;
        if (out != NULL && in == NULL && sp->rate > 0 && s->next <= n) {
            int64_t due = c->start_ns + (int64_t)((double)(s->next - 1) * 1e9 / sp->rate);
            wait_ns = due - hd_clock_ns();
            if (wait_ns < 0)
                wait_ns = 0;
        }
        if (out != NULL && s->next <= n && s->next - s->conf.low < sp->window &&
            (in == NULL || s->pending > 0) && wait_ns == 0) {
            if (in == NULL && sp->published_ns != NULL)
                sp->published_ns[s->next - 1] = hd_clock_ns();
            bench_props_next(&bp, salt, s->next);
            int status = amqp_basic_publish(out, s->chout, amqp_cstring_bytes(sp->exchange),
                                            amqp_cstring_bytes(s->out_key), bp.mandatory, 0,
                                            &bp.props, bytes);
            if ((rc = hd_amqp_check_status(s->cout, status, "raw chain: publish", &s->err)) < 0)
                break;
            s->next++;
            if (in != NULL)
                s->pending--;
            continue;
        }
        /* Take no more deliveries than one window ahead of the publishes (a service does
         * not either: its prefetch bounds what it holds). */
        int want_in = in != NULL && s->consumed < n && (out == NULL || s->pending < sp->window);
        int want_out = out != NULL && s->next > s->conf.low;
        int got = 0;
        if (want_out && (amqp_frames_enqueued(out) || amqp_data_in_buffer(out)))
            got = rc = read_confirm(s);
        else if (want_in && (amqp_frames_enqueued(in) || amqp_data_in_buffer(in)))
            got = rc = read_delivery(s);
        else {
            struct pollfd fds[2];
            int nf = 0, iin = -1, iout = -1;
            if (want_in) {
                fds[nf] = (struct pollfd){.fd = amqp_get_sockfd(in), .events = POLLIN};
                iin = nf++;
            }
            if (want_out) {
                fds[nf] = (struct pollfd){.fd = amqp_get_sockfd(out), .events = POLLIN};
                iout = nf++;
            }
            if (nf == 0 && wait_ns == 0) { /* cannot happen: nothing to send, read or wait for */
                rc = hd_error_set(&s->err, HD_ESTATE, "raw chain: %s has nothing to wait for",
                                  s->name);
                break;
            }
            /* Up to 200 ms, or until the next paced publish is due (ppoll: below 1 ms). */
            if (wait_ns == 0 || wait_ns > 200000000)
                wait_ns = 200000000;
            struct timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
            int pr = ppoll(fds, (nfds_t)nf, &ts, NULL);
            if (pr > 0 && iout >= 0 && fds[iout].revents)
                got = rc = read_confirm(s);
            if (rc >= 0 && pr > 0 && iin >= 0 && fds[iin].revents) {
                int g = rc = read_delivery(s);
                got = got > 0 ? got : g;
            }
        }
        if (rc < 0)
            break;
        if (got > 0)
            last_progress = hd_clock_ms();
        else if (hd_clock_ms() - last_progress > BENCH_STALL_MS) {
            rc = hd_error_set(
                &s->err, HD_ETIMEOUT,
                "raw chain: %s: nothing for %d s (consumed %zu, confirmed %" PRIu64 " of %zu)",
                s->name, BENCH_STALL_MS / 1000, s->consumed, s->conf.acked + s->conf.nacked, n);
            break;
        }
    }
    if (rc >= 0 && out != NULL && s->conf.nacked > 0)
        rc = hd_error_set(&s->err, HD_ENACKED, "raw chain: %s: the broker nacked %" PRIu64, s->name,
                          s->conf.nacked);
    free(body);
    return rc < 0 ? rc : 0;
}

static void *stage_main(void *p)
{
    stage_arg *a = p;
    chain *c = a->c;
    stage *s = &c->st[a->i];
    s->rc = stage_open(s);
    if (s->rc < 0)
        atomic_store(&c->abort, 1);
    atomic_fetch_add(&c->ready, 1);
    /* Every stage starts together, once the clock runs (setup is not timed). */
    while (!atomic_load(&c->go) && !atomic_load(&c->abort))
        hd_sleep_ms(1);
    if (s->rc == 0 && !atomic_load(&c->abort))
        s->rc = stage_loop(c, s);
    if (s->rc < 0)
        atomic_store(&c->abort, 1);
    return NULL;
}

static void stage_close(stage *s)
{
    if (s->cin != NULL && s->chin != 0)
        hd_amqp_channel_close(s->cin, s->chin);
    if (s->cout != NULL && s->chout != 0)
        hd_amqp_channel_close(s->cout, s->chout);
    hd_amqp_close(s->cin);
    hd_amqp_close(s->cout);
    if (s->conf_ready)
        bench_confirms_free(&s->conf);
}

int bench_raw_chain(const bench_chain_spec *spec, bench_span *out, hd_error *err)
{
    chain *c = calloc(1, sizeof *c);
    if (c == NULL)
        return hd_error_set(err, HD_ENOMEM, "raw chain");
    static const char *const names[3] = {"bench raw chain 1 (publish events)",
                                         "bench raw chain 2 (consume, publish sent)",
                                         "bench raw chain 3 (consume sent)"};
    for (int i = 0; i < 3; i++) {
        stage *s = &c->st[i];
        s->spec = spec;
        s->name = names[i];
        s->in_queue = i == 0 ? NULL : i == 1 ? spec->queue_in : spec->queue_out;
        s->out_key = i == 0 ? "event" : i == 1 ? "sent" : NULL;
        s->out_bytes = i == 0 ? spec->event_bytes : spec->sent_bytes;
        hd_error_clear(&s->err);
    }
    pthread_t th[3];
    stage_arg args[3];
    int started = 0, rc = 0;
    for (int i = 0; i < 3; i++) {
        args[i] = (stage_arg){.c = c, .i = i};
        if (pthread_create(&th[i], NULL, stage_main, &args[i]) != 0) {
            atomic_store(&c->abort, 1);
            rc = hd_error_set(err, HD_ENOMEM, "raw chain: cannot start a thread");
            break;
        }
        started++;
    }
    bench_progress pr;
    bench_progress_start(&pr, "raw chain (events -> sent, consumed)", spec->n);
    while (atomic_load(&c->ready) < started && !atomic_load(&c->abort))
        hd_sleep_ms(1);
    if (!atomic_load(&c->abort)) {
        bench_span_begin(out);
        c->start_ns = hd_clock_ns(); /* before go: the stages read it after they see go */
        atomic_store(&c->go, 1);
        while (atomic_load(&c->st[2].done) < spec->n && !atomic_load(&c->abort)) {
            char extra[96];
            snprintf(extra, sizeof extra, "events confirmed %zu, sent confirmed %zu",
                     atomic_load(&c->st[0].done), atomic_load(&c->st[1].done));
            bench_progress_tick(&pr, atomic_load(&c->st[2].done), extra);
            hd_sleep_ms(5);
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc == 0 && !atomic_load(&c->abort))
        bench_span_end(out, atomic_load(&c->st[2].done));
    /* The first real failure (a stage that only saw the abort is not the cause). */
    for (int i = 0; i < started && rc == 0; i++)
        if (c->st[i].rc < 0 && c->st[i].rc != HD_EINTR) {
            rc = c->st[i].rc;
            if (err != NULL)
                *err = c->st[i].err;
        }
    if (rc == 0 && atomic_load(&c->abort))
        rc = hd_error_set(err, HD_EINTR, "raw chain: aborted");
    if (rc == 0)
        bench_progress_done(&pr, out);
    for (int i = 0; i < 3; i++)
        stage_close(&c->st[i]);
    free(c);
    return rc;
}
