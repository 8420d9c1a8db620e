/* chat/hub.c — rooms, members and listeners of one chat process (hub.h). */
#include "hub.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "herald/clock.h"
#include "herald/http.h"

#define HASH_LEN 32

/* One SSE frame, shared by every listener it was queued for (refs under the hub lock). */
typedef struct frame {
    int refs;
    size_t len;
    char data[];
} frame;

typedef struct session {
    struct session *next;
    unsigned char hash[HASH_LEN];
    size_t room;
    char name[CHAT_NAME_MAX + 1];
    int64_t last_ms; /* monotonic */
    size_t streams;  /* listeners open with this token */
} session;

struct chat_listener {
    struct chat_listener *next; /* in its room, while listed */
    chat_hub *hub;
    session *session; /* while listed */
    size_t room;
    int listed;         /* in its room's list: the hub delivers to it */
    int closed;         /* no more frames will come: send bye, then end */
    const char *reason; /* of the bye: a static string */
    int hello_sent, bye_sent;
    char ctl[96]; /* a control text being sent (hello, ping, bye), and how far */
    size_t ctl_len, ctl_off;
    frame **queue;           /* ring of hub->o.queue_len */
    size_t head, count, off; /* off: bytes of queue[head] already sent */
    int64_t next_beat_ms;
    pthread_cond_t wake;
};

typedef struct chat_room {
    char name[CHAT_ROOM_MAX + 1];
    chat_listener *listeners;
    size_t n;
} chat_room;

struct chat_hub {
    chat_hub_options o;
    pthread_mutex_t lock;
    chat_room *rooms;
    size_t n_rooms;
    session *sessions;
    size_t n_sessions, n_listeners;
    int closed;
    uint64_t delivered, dropped;
};

static void frame_put(frame *f)
{
    if (f != NULL && --f->refs == 0)
        free(f);
}

int chat_hub_new(const chat_hub_options *opts, chat_hub **out, hd_error *err)
{
    *out = NULL;
    if (opts == NULL || opts->n_rooms == 0 || opts->rooms == NULL)
        return hd_error_set(err, HD_EINVAL, "the chat needs at least one room");
    chat_hub *h = calloc(1, sizeof *h);
    if (h == NULL || (h->rooms = calloc(opts->n_rooms, sizeof *h->rooms)) == NULL) {
        free(h);
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    }
    h->o = *opts;
    h->o.rooms = NULL;
    if (h->o.max_sessions == 0)
        h->o.max_sessions = CHAT_DEFAULT_MAX_SESSIONS;
    if (h->o.max_listeners == 0)
        h->o.max_listeners = CHAT_DEFAULT_MAX_LISTENERS;
    if (h->o.streams_per_session == 0)
        h->o.streams_per_session = CHAT_DEFAULT_STREAMS_PER;
    if (h->o.queue_len == 0)
        h->o.queue_len = CHAT_DEFAULT_QUEUE;
    if (h->o.session_ttl_ms <= 0)
        h->o.session_ttl_ms = CHAT_DEFAULT_SESSION_TTL_MS;
    if (h->o.heartbeat_ms <= 0)
        h->o.heartbeat_ms = CHAT_DEFAULT_HEARTBEAT_MS;
    for (size_t i = 0; i < opts->n_rooms; i++) {
        if (!chat_room_name_valid(opts->rooms[i]) || chat_hub_has_room(h, opts->rooms[i])) {
            hd_error_set(err, HD_EINVAL, "room '%s': not [a-z0-9_-]{1,%d}, or repeated",
                         opts->rooms[i], CHAT_ROOM_MAX);
            free(h->rooms);
            free(h);
            return HD_EINVAL;
        }
        strcpy(h->rooms[i].name, opts->rooms[i]);
        h->n_rooms++;
    }
    pthread_mutex_init(&h->lock, NULL);
    *out = h;
    return 0;
}

void chat_hub_free(chat_hub *h)
{
    if (h == NULL)
        return;
    for (session *s = h->sessions, *next; s != NULL; s = next) {
        next = s->next;
        sodium_memzero(s, sizeof *s);
        free(s);
    }
    pthread_mutex_destroy(&h->lock);
    free(h->rooms);
    free(h);
}

/* The room's index, or n_rooms. */
static size_t room_index(const chat_hub *h, const char *name)
{
    size_t i = 0;
    while (name != NULL && i < h->n_rooms && strcmp(h->rooms[i].name, name) != 0)
        i++;
    return name == NULL ? h->n_rooms : i;
}

int chat_hub_has_room(const chat_hub *h, const char *room)
{
    return room_index(h, room) < h->n_rooms;
}

size_t chat_hub_room_count(const chat_hub *h)
{
    return h->n_rooms;
}

const char *chat_hub_room_name(const chat_hub *h, size_t i)
{
    return i < h->n_rooms ? h->rooms[i].name : NULL;
}

size_t chat_hub_room_listeners(chat_hub *h, size_t i)
{
    pthread_mutex_lock(&h->lock);
    size_t n = i < h->n_rooms ? h->rooms[i].n : 0;
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void token_hash(const char *token, unsigned char out[HASH_LEN])
{
    crypto_generichash(out, HASH_LEN, (const unsigned char *)token, strlen(token), NULL, 0);
}

/* The session of token in room, or NULL. Under the lock. Comparing hashes with memcmp is
 * fine: its timing tells at most how many leading bytes of a HASH match, and finding a
 * token whose hash starts the same way is what the hash makes infeasible. */
static session *find_session(chat_hub *h, size_t room, const char *token, session ***link)
{
    if (token == NULL || strlen(token) != CHAT_TOKEN_LEN)
        return NULL;
    unsigned char hash[HASH_LEN];
    token_hash(token, hash);
    int64_t now = hd_clock_ms();
    for (session **p = &h->sessions; *p != NULL; p = &(*p)->next) {
        session *s = *p;
        if (memcmp(s->hash, hash, HASH_LEN) != 0)
            continue;
        if (s->room != room || (s->streams == 0 && now - s->last_ms > h->o.session_ttl_ms))
            return NULL;
        if (link != NULL)
            *link = p;
        return s;
    }
    return NULL;
}

/* Forget sessions unused for longer than the TTL. Under the lock. */
static void sweep(chat_hub *h)
{
    int64_t now = hd_clock_ms();
    for (session **p = &h->sessions; *p != NULL;) {
        session *s = *p;
        if (s->streams == 0 && now - s->last_ms > h->o.session_ttl_ms) {
            *p = s->next;
            sodium_memzero(s, sizeof *s);
            free(s);
            h->n_sessions--;
        } else {
            p = &s->next;
        }
    }
}

int chat_hub_join(chat_hub *h, const char *room, const char *name,
                  char token_out[CHAT_TOKEN_LEN + 1], hd_error *err)
{
    size_t r = room_index(h, room);
    if (r == h->n_rooms)
        return hd_error_set(err, HD_ENOTFOUND, "no room of this name");
    int rc = chat_name_check(name, err);
    if (rc < 0)
        return rc;
    session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    unsigned char raw[CHAT_TOKEN_LEN / 2];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(token_out, CHAT_TOKEN_LEN + 1, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
    token_hash(token_out, s->hash);
    s->room = r;
    strcpy(s->name, name);
    s->last_ms = hd_clock_ms();
    pthread_mutex_lock(&h->lock);
    if (!h->closed && h->n_sessions >= h->o.max_sessions)
        sweep(h);
    if (h->closed || h->n_sessions >= h->o.max_sessions) {
        int closed = h->closed;
        pthread_mutex_unlock(&h->lock);
        free(s);
        sodium_memzero(token_out, CHAT_TOKEN_LEN + 1);
        return closed ? hd_error_set(err, HD_ESTATE, "the chat is stopping")
                      : hd_error_set(err, HD_EBUSY, "too many members (%zu)", h->o.max_sessions);
    }
    s->next = h->sessions;
    h->sessions = s;
    h->n_sessions++;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

int chat_hub_check(chat_hub *h, const char *room, const char *token,
                   char name_out[CHAT_NAME_MAX + 1], hd_error *err)
{
    size_t r = room_index(h, room);
    pthread_mutex_lock(&h->lock);
    session *s = r < h->n_rooms && !h->closed ? find_session(h, r, token, NULL) : NULL;
    if (s != NULL) {
        s->last_ms = hd_clock_ms();
        strcpy(name_out, s->name);
    }
    int closed = h->closed;
    pthread_mutex_unlock(&h->lock);
    if (s == NULL)
        return closed ? hd_error_set(err, HD_ESTATE, "the chat is stopping")
                      : hd_error_set(err, HD_EAUTH, "unknown or expired token for this room");
    return 0;
}

/* Take l out of its room's list and its session: no more frames. Under the lock. */
static void unlist(chat_hub *h, chat_listener *l, const char *reason)
{
    if (!l->listed)
        return;
    chat_room *rm = &h->rooms[l->room];
    for (chat_listener **p = &rm->listeners; *p != NULL; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    rm->n--;
    h->n_listeners--;
    if (l->session != NULL) {
        l->session->streams--;
        l->session->last_ms = hd_clock_ms();
    }
    l->session = NULL;
    l->listed = 0;
    l->closed = 1;
    if (l->reason == NULL)
        l->reason = reason;
    pthread_cond_signal(&l->wake);
}

int chat_hub_leave(chat_hub *h, const char *room, const char *token, hd_error *err)
{
    size_t r = room_index(h, room);
    session **link = NULL;
    pthread_mutex_lock(&h->lock);
    session *s = r < h->n_rooms ? find_session(h, r, token, &link) : NULL;
    if (s != NULL) {
        for (chat_listener *l = h->rooms[r].listeners, *next; l != NULL; l = next) {
            next = l->next;
            if (l->session == s)
                unlist(h, l, "left");
        }
        *link = s->next;
        h->n_sessions--;
        sodium_memzero(s, sizeof *s);
        free(s);
    }
    pthread_mutex_unlock(&h->lock);
    return s ? 0 : hd_error_set(err, HD_EAUTH, "unknown or expired token for this room");
}

int chat_hub_subscribe(chat_hub *h, const char *room, const char *token, chat_listener **out,
                       hd_error *err)
{
    *out = NULL;
    size_t r = room_index(h, room);
    chat_listener *l = calloc(1, sizeof *l);
    frame **q = calloc(h->o.queue_len, sizeof *q);
    if (l == NULL || q == NULL) {
        free(l);
        free(q);
        return hd_error_set(err, HD_ENOMEM, "out of memory");
    }
    l->hub = h;
    l->queue = q;
    l->room = r;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->wake, &ca);
    pthread_condattr_destroy(&ca);
    int rc = 0;
    pthread_mutex_lock(&h->lock);
    session *s = r < h->n_rooms && !h->closed ? find_session(h, r, token, NULL) : NULL;
    if (h->closed)
        rc = hd_error_set(err, HD_ESTATE, "the chat is stopping");
    else if (s == NULL)
        rc = hd_error_set(err, HD_EAUTH, "unknown or expired token for this room");
    else if (h->n_listeners >= h->o.max_listeners)
        rc = hd_error_set(err, HD_EBUSY, "too many listeners (%zu)", h->o.max_listeners);
    else if (s->streams >= h->o.streams_per_session)
        rc = hd_error_set(err, HD_EBUSY, "this token has %zu streams open already", s->streams);
    if (rc == 0) {
        l->session = s;
        s->streams++;
        s->last_ms = hd_clock_ms();
        l->listed = 1;
        l->next = h->rooms[r].listeners;
        h->rooms[r].listeners = l;
        h->rooms[r].n++;
        h->n_listeners++;
    }
    pthread_mutex_unlock(&h->lock);
    if (rc < 0) {
        pthread_cond_destroy(&l->wake);
        free(q);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* Set the control text to send next (hello, ping, bye). Under the lock. */
static void set_ctl(chat_listener *l, const char *text)
{
    snprintf(l->ctl, sizeof l->ctl, "%s", text);
    l->ctl_len = strlen(l->ctl);
    l->ctl_off = 0;
}

ssize_t chat_listener_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    chat_listener *l = ctx;
    chat_hub *h = l->hub;
    (void)pos;
    ssize_t n = 0;
    pthread_mutex_lock(&h->lock);
    if (!l->hello_sent) {
        /* retry: how long EventSource waits before it reconnects. The comment line makes
         * the browser see the stream open at once (onopen). */
        l->hello_sent = 1;
        l->next_beat_ms = hd_clock_ms() + h->o.heartbeat_ms;
        set_ctl(l, "retry: 2000\n: welcome\n\n");
    }
    for (;;) {
        /* Everything goes out in pieces of at most max bytes, a control text or a frame
         * begun is finished before anything else, so the stream stays well-formed. */
        if (l->ctl_off < l->ctl_len) {
            size_t take = l->ctl_len - l->ctl_off;
            if (take > max)
                take = max;
            memcpy(buf, l->ctl + l->ctl_off, take);
            l->ctl_off += take;
            n = (ssize_t)take;
            break;
        }
        if (l->count > 0) {
            while (l->count > 0 && (size_t)n < max) {
                frame *f = l->queue[l->head];
                size_t take = f->len - l->off;
                if (take > max - (size_t)n)
                    take = max - (size_t)n;
                memcpy(buf + n, f->data + l->off, take);
                n += (ssize_t)take;
                l->off += take;
                if (l->off == f->len) {
                    frame_put(f);
                    l->queue[l->head] = NULL;
                    l->head = (l->head + 1) % h->o.queue_len;
                    l->count--;
                    l->off = 0;
                }
            }
            break;
        }
        if (l->closed) {
            if (l->bye_sent) {
                n = HD_HTTP_STREAM_END;
                break;
            }
            char bye[sizeof l->ctl];
            snprintf(bye, sizeof bye, "event: bye\ndata: {\"reason\":\"%s\"}\n\n",
                     l->reason ? l->reason : "closed");
            l->bye_sent = 1;
            set_ctl(l, bye);
            continue;
        }
        int64_t now = hd_clock_ms();
        if (now >= l->next_beat_ms) {
            /* A comment line: keeps proxies and libmicrohttpd's idle timeout from closing
             * a quiet stream, and finds out that a browser went away (the write fails). */
            l->next_beat_ms = now + h->o.heartbeat_ms;
            set_ctl(l, ": ping\n\n");
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t at = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (l->next_beat_ms - now);
        ts.tv_sec = (time_t)(at / 1000);
        ts.tv_nsec = (long)(at % 1000) * 1000000;
        pthread_cond_timedwait(&l->wake, &h->lock, &ts);
    }
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* Free the queued frames; with keep_partial, a frame already partly sent stays (its rest
 * goes out before the bye: half a frame followed by another would garble the stream). */
static void drop_queue(chat_listener *l, size_t cap, int keep_partial)
{
    if (keep_partial && l->count > 0 && l->off > 0) {
        size_t last = (l->head + l->count - 1) % cap;
        while (l->count > 1) {
            frame_put(l->queue[last]);
            l->queue[last] = NULL;
            last = (last + cap - 1) % cap;
            l->count--;
        }
        return;
    }
    while (l->count > 0) {
        frame_put(l->queue[l->head]);
        l->queue[l->head] = NULL;
        l->head = (l->head + 1) % cap;
        l->count--;
    }
    l->off = 0;
}

void chat_listener_release(void *ctx)
{
    chat_listener *l = ctx;
    if (l == NULL)
        return;
    chat_hub *h = l->hub;
    pthread_mutex_lock(&h->lock);
    unlist(h, l, "gone");
    drop_queue(l, h->o.queue_len, 0);
    pthread_mutex_unlock(&h->lock);
    pthread_cond_destroy(&l->wake);
    free(l->queue);
    free(l);
}

int chat_hub_deliver(chat_hub *h, const chat_message *m)
{
    size_t r = room_index(h, m->room);
    if (r == h->n_rooms)
        return 0;
    char *json = chat_message_encode(m);
    if (json == NULL)
        return HD_ENOMEM;
    /* One frame: the id lets a browser see what it got last (Last-Event-ID on reconnect,
     * though this chat keeps no history to replay from); the JSON has no newline, so it
     * fits one data: line. */
    size_t cap = strlen(json) + CHAT_ID_LEN + 48;
    frame *f = malloc(sizeof *f + cap);
    if (f == NULL) {
        free(json);
        return HD_ENOMEM;
    }
    f->len = (size_t)snprintf(f->data, cap, "id: %s\nevent: message\ndata: %s\n\n", m->id, json);
    f->refs = 1;
    free(json);
    int queued = 0;
    pthread_mutex_lock(&h->lock);
    for (chat_listener *l = h->rooms[r].listeners, *next; l != NULL; l = next) {
        next = l->next;
        if (l->count == h->o.queue_len) {
            /* Too slow: drop it rather than buffer for it. Its queued frames go now; the
             * stream ends with a bye saying why. */
            drop_queue(l, h->o.queue_len, 1);
            unlist(h, l, "too slow");
            h->dropped++;
            continue;
        }
        f->refs++;
        l->queue[(l->head + l->count) % h->o.queue_len] = f;
        l->count++;
        h->delivered++;
        queued++;
        pthread_cond_signal(&l->wake);
    }
    frame_put(f);
    pthread_mutex_unlock(&h->lock);
    return queued;
}

void chat_hub_close(chat_hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->closed = 1;
    for (size_t r = 0; r < h->n_rooms; r++)
        while (h->rooms[r].listeners != NULL)
            unlist(h, h->rooms[r].listeners, "server stopping");
    pthread_mutex_unlock(&h->lock);
}

void chat_hub_get_stats(chat_hub *h, chat_hub_stats *out)
{
    pthread_mutex_lock(&h->lock);
    out->sessions = h->n_sessions;
    out->listeners = h->n_listeners;
    out->delivered = h->delivered;
    out->dropped = h->dropped;
    pthread_mutex_unlock(&h->lock);
}
