/* amqp.c — see amqp.h. One connection, its channel numbers, and error mapping. */
#include "herald/amqp.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "herald/backoff.h"
#include "herald/clock.h"

#define HD_AMQP_DEFAULT_HEARTBEAT_S     30
#define HD_AMQP_DEFAULT_CONNECT_MS      10000
#define HD_AMQP_DEFAULT_RPC_MS          30000
#define HD_AMQP_DEFAULT_BACKOFF_BASE_MS 100
#define HD_AMQP_DEFAULT_BACKOFF_CAP_MS  10000
#define HD_AMQP_MAIN_CHANNEL            1
/* librabbitmq asks for 2047 channels by default (AMQP_DEFAULT_MAX_CHANNELS) and RabbitMQ
 * allows 2047: a bitmap of that many numbers is 256 bytes. */
#define HD_AMQP_MAX_CHANNELS AMQP_DEFAULT_MAX_CHANNELS

struct hd_amqp {
    amqp_connection_state_t conn;       /* NULL only after a failed reconnect */
    hd_amqp_url url;                    /* the node in use (or last tried): urls[cur] */
    char redacted[600];                 /* that URL without its password, for messages */
    hd_amqp_url urls[HD_AMQP_URLS_MAX]; /* every node of the setting, in its order */
    char redacted_urls[HD_AMQP_URLS_MAX][600];
    int nurls;
    int cur;
    hd_amqp_options opts; /* defaults filled in; strings point to the copies below */
    char *connection_name;
    char *ca_cert_path;
    int open; /* 0 once a socket error or connection.close was seen */
    unsigned generation;
    int last_reply_code;
    int channel_max;
    unsigned char used[(HD_AMQP_MAX_CHANNELS + 1 + 7) / 8]; /* channel numbers in use */
};

/* ---- URLs ----------------------------------------------------------------------------- */

static void redact_one(const char *url, char *out, size_t cap)
{
    /* userinfo runs from "://" to the LAST '@' of the whole URL, not the last one before the
     * first '/': a password may hold an unescaped '/' ("amqp://u:pa/ss@h/"), and cutting at
     * that '/' would print the password's tail. When the last '@' is in fact in the vhost
     * ("amqp://u:p@h/v@x"), the host is masked too: hiding too much is the safe mistake.
     * The password follows the first ':' of the userinfo; a userinfo without ':' is a user
     * name alone and is kept. */
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    const char *at = strrchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL) {
        snprintf(out, cap, "%s", url);
        return;
    }
    snprintf(out, cap, "%.*s***%s", (int)(colon + 1 - url), url, at);
}

static int copy_field(char *dst, size_t cap, const char *src, const char *what,
                      const char *redacted, hd_error *err)
{
    size_t n = strlen(src);
    if (n >= cap)
        return hd_error_set(err, HD_EURL, "AMQP URL '%s': %s longer than %zu bytes", redacted, what,
                            cap - 1);
    memcpy(dst, src, n + 1);
    return 0;
}

int hd_amqp_url_parse(const char *url, hd_amqp_url *out, hd_error *err)
{
    char redacted[600];
    if (url == NULL || out == NULL)
        return hd_error_set(err, HD_EURL, "AMQP URL is missing (NULL)");
    hd_amqp_url_redact(url, redacted, sizeof redacted);
    memset(out, 0, sizeof *out);

    /* amqp_parse_url cuts its argument into pieces in place and points into it, so it gets a
     * private copy that lives until the pieces are copied out. */
    char *copy = strdup(url);
    if (copy == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    struct amqp_connection_info ci;
    int rc = 0;
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        /* Not even the redacted URL: the redactor relies on the URL's structure, and a URL
         * that does not parse has none it can trust (an unescaped '/', '@' or '#' in the
         * password is the usual cause). A parse error repeats on every attempt, so whatever
         * it shows ends up in the logs many times. */
        rc = hd_error_set(err, HD_EURL,
                          "malformed AMQP URL (not shown: it may hold a password): expected "
                          "amqp[s]://user:password@host:port/vhost, with '/', '@', ':', '#' "
                          "and '%%' percent-encoded in the user and password (%%2F %%40 %%3A "
                          "%%23 %%25)");
        goto done;
    }
    if (ci.port <= 0 || ci.port > 65535) {
        rc = hd_error_set(err, HD_EURL, "AMQP URL '%s': port %d out of range", redacted, ci.port);
        goto done;
    }
    if ((rc = copy_field(out->user, sizeof out->user, ci.user, "user", redacted, err)) < 0 ||
        (rc = copy_field(out->password, sizeof out->password, ci.password, "password", redacted,
                         err)) < 0 ||
        (rc = copy_field(out->host, sizeof out->host, ci.host, "host", redacted, err)) < 0 ||
        (rc = copy_field(out->vhost, sizeof out->vhost, ci.vhost, "vhost", redacted, err)) < 0)
        goto done;
    /* "amqp://[]/" gets an empty host from amqp_parse_url (found by
     * tests/fuzz/fuzz_amqp_url.c): refuse it here rather than fail at connect time. */
    if (out->host[0] == '\0') {
        rc = hd_error_set(err, HD_EURL, "AMQP URL '%s': empty host", redacted);
        goto done;
    }
    /* "amqp://host/" is read as vhost "" by the AMQP URI spec, but nobody has a vhost named
     * "": everyone who writes it means the default vhost "/". */
    if (out->vhost[0] == '\0')
        strcpy(out->vhost, "/");
    out->port = ci.port;
    out->tls = ci.ssl != 0;
done:
    free(copy);
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

/* Where the URL after the one starting at s begins: just after a ',' that is followed (blanks
 * allowed) by "amqp://" or "amqps://". NULL when s holds the last one. Only there: a comma
 * elsewhere may be part of a password, and cutting a password in two would print half of it.
 * *item_end is set to the comma. */
static const char *next_url(const char *s, const char **item_end)
{
    for (const char *c = strchr(s, ','); c != NULL; c = strchr(c + 1, ',')) {
        const char *t = c + 1;
        while (*t == ' ' || *t == '\t')
            t++;
        if (strncmp(t, "amqp://", 7) == 0 || strncmp(t, "amqps://", 8) == 0) {
            *item_end = c;
            return t;
        }
    }
    *item_end = s + strlen(s);
    return NULL;
}

void hd_amqp_url_redact(const char *url, char *out, size_t cap)
{
    if (cap == 0)
        return;
    if (url == NULL) {
        snprintf(out, cap, "(null)");
        return;
    }
    const char *end;
    const char *next = next_url(url, &end);
    if (next == NULL) {
        redact_one(url, out, cap); /* one URL: exactly as always */
        return;
    }
    /* A list: each URL on its own, joined with ','. A URL of a list without '@' has no
     * password to hide, unless the setting is not the list it looks like: "amqp://u:12,
     * amqp://pw@h/" is ONE URL whose password "12,amqp://pw" a cut at the comma would print.
     * So such an item is shown only if it parses as a URL (host and numeric port) and no '@'
     * follows it anywhere in the setting; otherwise it is masked whole. */
    size_t used = 0;
    out[0] = '\0';
    for (const char *item = url; item != NULL; item = next) {
        next = next_url(item, &end);
        while (*item == ' ' || *item == '\t')
            item++;
        char *one = strndup(item, (size_t)(end - item));
        char red[600];
        if (one == NULL) {
            snprintf(red, sizeof red, "***");
        } else if (strchr(one, '@') == NULL) {
            hd_amqp_url u;
            if (strchr(end, '@') == NULL && hd_amqp_url_parse(one, &u, NULL) == 0)
                snprintf(red, sizeof red, "%s", one);
            else
                snprintf(red, sizeof red, "%s***",
                         strncmp(one, "amqps", 5) == 0 ? "amqps://" : "amqp://");
        } else {
            redact_one(one, red, sizeof red);
        }
        free(one);
        int n = snprintf(out + used, cap - used, "%s%s", item == url ? "" : ",", red);
        if (n < 0 || (size_t)n >= cap - used)
            return; /* truncated, terminated by snprintf */
        used += (size_t)n;
    }
}

int hd_amqp_url_list_parse(const char *urls, hd_amqp_url *out, int cap, hd_error *err)
{
    if (urls == NULL)
        return hd_error_set(err, HD_EURL, "AMQP URL is missing (NULL)");
    int n = 0;
    const char *end;
    for (const char *item = urls, *next; item != NULL; item = next) {
        next = next_url(item, &end);
        while (*item == ' ' || *item == '\t')
            item++;
        while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (n == cap)
            return hd_error_set(err, HD_EURL, "AMQP URL list: more than %d URLs", cap);
        char *one = strndup(item, (size_t)(end - item));
        if (one == NULL)
            return hd_error_set(err, HD_ENOMEM, NULL);
        hd_error e1;
        int rc = hd_amqp_url_parse(one, &out[n], &e1);
        free(one);
        if (rc < 0) {
            if (next == NULL && n == 0) /* one URL: its error as it is */
                return hd_error_set(err, rc, "%s", e1.text);
            return hd_error_set(err, rc, "AMQP URL list, URL %d: %s", n + 1, e1.text);
        }
        n++;
    }
    return n;
}

/* ---- error mapping -------------------------------------------------------------------- */

/* Status codes after which the socket is unusable. */
static int status_is_fatal(int status)
{
    switch (status) {
    case AMQP_STATUS_CONNECTION_CLOSED:
    case AMQP_STATUS_SOCKET_ERROR:
    case AMQP_STATUS_SOCKET_CLOSED:
    case AMQP_STATUS_HEARTBEAT_TIMEOUT:
    case AMQP_STATUS_BAD_AMQP_DATA:
    case AMQP_STATUS_UNKNOWN_CLASS:
    case AMQP_STATUS_UNKNOWN_METHOD:
    case AMQP_STATUS_TCP_ERROR:
    case AMQP_STATUS_SSL_ERROR:
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
    case AMQP_STATUS_TIMER_FAILURE:
        return 1;
    default:
        return 0;
    }
}

int hd_amqp_reply_error(amqp_rpc_reply_t r, const char *context, int *closed, hd_error *err)
{
    int dummy;
    if (closed == NULL)
        closed = &dummy;
    *closed = 0;
    if (context == NULL)
        context = "AMQP";

    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return HD_OK;
    case AMQP_RESPONSE_NONE:
        /* librabbitmq's way of saying "you asked for a reply where there was no RPC". */
        return hd_error_set(err, HD_EAMQP, "%s: no RPC reply (missing reply type)", context);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        if (r.library_error == AMQP_STATUS_TIMEOUT) {
            /* The reply may still arrive later and would be taken for the reply of the next
             * RPC: the only safe thing after an RPC timeout is a new connection. */
            *closed = 2;
            return hd_error_set(err, HD_ETIMEOUT, "%s: no reply from the broker in time", context);
        }
        if (status_is_fatal(r.library_error)) {
            *closed = 2;
            return hd_error_set(err, HD_ECLOSED, "%s: %s", context,
                                amqp_error_string2(r.library_error));
        }
        return hd_error_set(err, HD_EAMQP, "%s: %s", context, amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && r.reply.decoded != NULL) {
            const amqp_channel_close_t *m = r.reply.decoded;
            *closed = 1;
            return hd_error_set(err, HD_EAMQP, "%s: %u %.*s", context, (unsigned)m->reply_code,
                                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        }
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD && r.reply.decoded != NULL) {
            const amqp_connection_close_t *m = r.reply.decoded;
            *closed = 2;
            return hd_error_set(err, HD_ECLOSED, "%s: connection closed by the broker: %u %.*s",
                                context, (unsigned)m->reply_code, (int)m->reply_text.len,
                                (const char *)m->reply_text.bytes);
        }
        return hd_error_set(err, HD_EAMQP, "%s: unexpected method 0x%08x from the broker", context,
                            (unsigned)r.reply.id);
    }
    return hd_error_set(err, HD_EAMQP, "%s: unknown reply type %d", context, (int)r.reply_type);
}

static int reply_code_of(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.decoded == NULL)
        return 0;
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ((const amqp_channel_close_t *)r.reply.decoded)->reply_code;
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        return ((const amqp_connection_close_t *)r.reply.decoded)->reply_code;
    return 0;
}

/* ---- channel numbers ------------------------------------------------------------------ */

static int chan_used(const hd_amqp *a, amqp_channel_t ch)
{
    return (a->used[ch / 8] >> (ch % 8)) & 1;
}

static void chan_set(hd_amqp *a, amqp_channel_t ch, int on)
{
    if (on)
        a->used[ch / 8] |= (unsigned char)(1u << (ch % 8));
    else
        a->used[ch / 8] &= (unsigned char)~(1u << (ch % 8));
}

/* The broker closed ch: acknowledge it, or the channel number stays blocked on its side.
 * A failure to send means the socket is gone; the caller sees that on its next call. */
static void send_channel_close_ok(hd_amqp *a, amqp_channel_t ch)
{
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(a->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
        a->open = 0;
}

static void send_connection_close_ok(hd_amqp *a)
{
    amqp_connection_close_ok_t ok = {0};
    (void)amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
}

int hd_amqp_channel_open(hd_amqp *a, amqp_channel_t *out, hd_error *err)
{
    if (!a->open)
        return hd_error_set(err, HD_ECLOSED, "open channel: connection to %s is closed",
                            a->redacted);
    amqp_channel_t ch = 0;
    for (int c = HD_AMQP_MAIN_CHANNEL + 1; c <= a->channel_max; c++) {
        if (!chan_used(a, (amqp_channel_t)c)) {
            ch = (amqp_channel_t)c;
            break;
        }
    }
    if (ch == 0)
        return hd_error_set(err, HD_ERANGE, "open channel: all %d channels are in use",
                            a->channel_max);
    /* Mark it before the RPC so that a close-on-failure path frees a number we own. */
    chan_set(a, ch, 1);
    amqp_channel_open(a->conn, ch);
    int rc = hd_amqp_check_reply_on(a, ch, amqp_get_rpc_reply(a->conn), "channel.open", err);
    if (rc < 0) {
        chan_set(a, ch, 0);
        return rc;
    }
    *out = ch;
    return 0;
}

void hd_amqp_channel_close(hd_amqp *a, amqp_channel_t ch)
{
    if (a == NULL || ch == HD_AMQP_MAIN_CHANNEL || ch > a->channel_max || !chan_used(a, ch))
        return;
    chan_set(a, ch, 0);
    if (a->open && a->conn != NULL) {
        amqp_rpc_reply_t r = amqp_channel_close(a->conn, ch, AMQP_REPLY_SUCCESS);
        /* A failure here means the connection is going away; note it, nothing else to do. */
        int closed = 0;
        if (hd_amqp_reply_error(r, "channel.close", &closed, NULL) < 0 && closed == 2)
            a->open = 0;
    }
}

/* ---- replies on a live connection ----------------------------------------------------- */

int hd_amqp_check_reply_on(hd_amqp *a, amqp_channel_t ch, amqp_rpc_reply_t r, const char *context,
                           hd_error *err)
{
    int closed = 0;
    int rc = hd_amqp_reply_error(r, context, &closed, err);
    if (rc == HD_OK)
        return HD_OK;
    int code = reply_code_of(r);
    if (code != 0)
        a->last_reply_code = code;

    if (closed == 2) {
        if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && a->open)
            send_connection_close_ok(a);
        a->open = 0;
    } else if (closed == 1 && a->open) {
        send_channel_close_ok(a, ch);
        if (ch == HD_AMQP_MAIN_CHANNEL) {
            /* Reopen at once: the main channel is shared by every synchronous caller, and
             * one refused declaration must not break the next caller's work. */
            if (a->open) {
                amqp_channel_open(a->conn, HD_AMQP_MAIN_CHANNEL);
                int c2 = 0;
                if (hd_amqp_reply_error(amqp_get_rpc_reply(a->conn), "reopen channel 1", &c2,
                                        NULL) < 0)
                    a->open = 0;
            }
        } else if (ch <= a->channel_max) {
            chan_set(a, ch, 0);
        }
    }
    return rc;
}

int hd_amqp_check_reply(hd_amqp *a, amqp_rpc_reply_t r, const char *context, hd_error *err)
{
    return hd_amqp_check_reply_on(a, HD_AMQP_MAIN_CHANNEL, r, context, err);
}

int hd_amqp_check_status(hd_amqp *a, int status, const char *context, hd_error *err)
{
    if (status == AMQP_STATUS_OK)
        return HD_OK;
    if (context == NULL)
        context = "AMQP";
    if (status == AMQP_STATUS_TIMEOUT)
        return hd_error_set(err, HD_ETIMEOUT, "%s: timed out", context);
    if (status_is_fatal(status)) {
        a->open = 0;
        return hd_error_set(err, HD_ECLOSED, "%s: %s", context, amqp_error_string2(status));
    }
    return hd_error_set(err, HD_EAMQP, "%s: %s", context, amqp_error_string2(status));
}

int hd_amqp_handle_close(hd_amqp *a, amqp_channel_t ch, const amqp_method_t *m, const char *context,
                         hd_error *err)
{
    if (m->id != AMQP_CHANNEL_CLOSE_METHOD && m->id != AMQP_CONNECTION_CLOSE_METHOD)
        return HD_OK;
    /* Dress the method up as the reply of an RPC so that one function explains both. */
    amqp_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
    r.reply = *m;
    return hd_amqp_check_reply_on(a, ch, r, context, err);
}

int hd_amqp_last_reply_code(const hd_amqp *a)
{
    return a->last_reply_code;
}

void hd_amqp_mark_broken(hd_amqp *a)
{
    a->open = 0;
}

/* ---- connecting ----------------------------------------------------------------------- */

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* One attempt: socket, handshake, login, channel 1. On success a->conn is the new live
 * connection; on failure a->conn is untouched (NULL) and nothing leaks. */
static int connect_once(hd_amqp *a, hd_error *err)
{
    const hd_amqp_url *u = &a->url;
    int rc = 0;
    amqp_connection_state_t conn = amqp_new_connection();
    if (conn == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);

    amqp_socket_t *sock = u->tls ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        rc = hd_error_set(err, HD_ENOMEM, "connect %s: cannot create %s socket", a->redacted,
                          u->tls ? "TLS" : "TCP");
        goto fail;
    }
    if (u->tls) {
        amqp_ssl_socket_set_verify_peer(sock, a->opts.tls_insecure ? 0 : 1);
        amqp_ssl_socket_set_verify_hostname(sock, a->opts.tls_insecure ? 0 : 1);
        if (a->ca_cert_path != NULL &&
            amqp_ssl_socket_set_cacert(sock, a->ca_cert_path) != AMQP_STATUS_OK) {
            rc = hd_error_set(err, HD_ECONNECT, "connect %s: cannot load CA file %s", a->redacted,
                              a->ca_cert_path);
            goto fail;
        }
    }

    struct timeval connect_tv = ms_to_tv(a->opts.connect_timeout_ms);
    int status = amqp_socket_open_noblock(sock, u->host, u->port, &connect_tv);
    if (status != AMQP_STATUS_OK) {
        rc = hd_error_set(err, HD_ECONNECT, "connect %s:%d: %s", u->host, u->port,
                          amqp_error_string2(status));
        goto fail;
    }
    (void)amqp_set_handshake_timeout(conn, &connect_tv);
    if (a->opts.rpc_timeout_ms > 0) {
        struct timeval rpc_tv = ms_to_tv(a->opts.rpc_timeout_ms);
        (void)amqp_set_rpc_timeout(conn, &rpc_tv);
    }

    /* connection_name shows in `rabbitmqctl list_connections client_properties` and the
     * management UI, which is how an operator finds out which program owns a connection.
     * librabbitmq merges this table with its own (product, version, capabilities). */
    /* consumer_cancel_notify asks the broker to send basic.cancel when a consumer's queue
     * is deleted; without it a consumer waits forever on a queue that no longer exists. */
    amqp_table_entry_t capability = {
        .key = amqp_cstring_bytes("consumer_cancel_notify"),
        .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1},
    };
    amqp_table_entry_t prop[2] = {
        {.key = amqp_cstring_bytes("connection_name"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8,
                   .value.bytes = amqp_cstring_bytes(a->connection_name)}},
        {.key = amqp_cstring_bytes("capabilities"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE,
                   .value.table = {.num_entries = 1, .entries = &capability}}},
    };
    amqp_table_t props = {.num_entries = 2, .entries = prop};
    int heartbeat = a->opts.heartbeat_s < 0 ? 0 : a->opts.heartbeat_s;
    amqp_rpc_reply_t r =
        amqp_login_with_properties(conn, u->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat, &props,
                                   AMQP_SASL_METHOD_PLAIN, u->user, u->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[HD_ERROR_TEXT_MAX];
        hd_error tmp;
        hd_amqp_reply_error(r, "login", NULL, &tmp);
        snprintf(why, sizeof why, "%s", tmp.text);
        int code = reply_code_of(r);
        /* 403 ACCESS_REFUSED: user or password; 530 NOT_ALLOWED: no access to the vhost.
         * Both are configuration errors: reconnecting will not fix them. */
        if (code == AMQP_ACCESS_REFUSED || code == AMQP_NOT_ALLOWED)
            rc = hd_error_set(err, HD_EAUTH, "%s as user '%s' on vhost '%s': %s", a->redacted,
                              u->user, u->vhost, why);
        else
            rc = hd_error_set(err, HD_ECONNECT, "%s: %s", a->redacted, why);
        a->last_reply_code = code;
        goto fail;
    }

    amqp_channel_open(conn, HD_AMQP_MAIN_CHANNEL);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        hd_error tmp;
        hd_amqp_reply_error(r, "open channel 1", NULL, &tmp);
        rc = hd_error_set(err, HD_ECONNECT, "%s: %s", a->redacted, tmp.text);
        goto fail;
    }

    a->conn = conn;
    a->open = 1;
    a->generation++;
    a->channel_max = amqp_get_channel_max(conn);
    if (a->channel_max <= 0 || a->channel_max > HD_AMQP_MAX_CHANNELS)
        a->channel_max = HD_AMQP_MAX_CHANNELS;
    memset(a->used, 0, sizeof a->used);
    chan_set(a, HD_AMQP_MAIN_CHANNEL, 1);
    return 0;

fail:
    /* amqp_destroy_connection also closes the socket. */
    amqp_destroy_connection(conn);
    return rc;
}

/* Make URL i of the list the one connect_once uses (and hd_amqp_url_text shows). */
static void select_url(hd_amqp *a, int i)
{
    a->cur = i;
    a->url = a->urls[i];
    memcpy(a->redacted, a->redacted_urls[i], sizeof a->redacted);
}

/* Failures no other node and no retry can fix: the same credentials and vhost are used for
 * every node of a list. */
static int connect_permanent(int rc)
{
    return rc == HD_EAUTH || rc == HD_EURL || rc == HD_ENOMEM;
}

/* hd_amqp_open: each URL once, in order, until one answers. */
static int connect_first(hd_amqp *a, hd_error *err)
{
    hd_error last;
    int rc = HD_ECONNECT;
    for (int i = 0; i < a->nurls; i++) {
        select_url(a, i);
        rc = connect_once(a, &last);
        if (rc == 0)
            return 0;
        if (connect_permanent(rc))
            break;
    }
    if (a->nurls == 1 || connect_permanent(rc))
        return hd_error_set(err, rc, "%s", last.text);
    return hd_error_set(err, rc, "none of the %d brokers of the list answered; the last: %s",
                        a->nurls, last.text);
}

static void opts_fill(hd_amqp_options *o, const hd_amqp_options *in)
{
    if (in != NULL)
        *o = *in;
    else
        memset(o, 0, sizeof *o);
    if (o->heartbeat_s == 0)
        o->heartbeat_s = HD_AMQP_DEFAULT_HEARTBEAT_S;
    if (o->connect_timeout_ms <= 0)
        o->connect_timeout_ms = HD_AMQP_DEFAULT_CONNECT_MS;
    if (o->rpc_timeout_ms == 0)
        o->rpc_timeout_ms = HD_AMQP_DEFAULT_RPC_MS;
    if (o->reconnect_base_ms <= 0)
        o->reconnect_base_ms = HD_AMQP_DEFAULT_BACKOFF_BASE_MS;
    if (o->reconnect_cap_ms <= 0)
        o->reconnect_cap_ms = HD_AMQP_DEFAULT_BACKOFF_CAP_MS;
    if (o->reconnect_cap_ms < o->reconnect_base_ms)
        o->reconnect_cap_ms = o->reconnect_base_ms;
}

static void hd_amqp_free(hd_amqp *a)
{
    free(a->connection_name);
    free(a->ca_cert_path);
    free(a);
}

int hd_amqp_open(const char *url, const hd_amqp_options *opts, hd_amqp **out, hd_error *err)
{
    *out = NULL;
    hd_amqp *a = calloc(1, sizeof *a);
    if (a == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_amqp_url_list_parse(url, a->urls, HD_AMQP_URLS_MAX, err);
    if (rc < 0)
        goto fail;
    a->nurls = rc;
    rc = 0;
    {
        /* Each URL's redacted text, for messages naming the node in use. */
        const char *end;
        int i = 0;
        for (const char *item = url, *next; item != NULL && i < a->nurls; item = next, i++) {
            next = next_url(item, &end);
            while (*item == ' ' || *item == '\t')
                item++;
            while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            char *one = strndup(item, (size_t)(end - item));
            if (one == NULL) {
                rc = hd_error_set(err, HD_ENOMEM, NULL);
                goto fail;
            }
            hd_amqp_url_redact(one, a->redacted_urls[i], sizeof a->redacted_urls[i]);
            free(one);
        }
    }
    select_url(a, 0);
    opts_fill(&a->opts, opts);
    a->connection_name = strdup(a->opts.connection_name ? a->opts.connection_name : "herald");
    a->ca_cert_path = a->opts.ca_cert_path ? strdup(a->opts.ca_cert_path) : NULL;
    if (a->connection_name == NULL || (a->opts.ca_cert_path && a->ca_cert_path == NULL)) {
        rc = hd_error_set(err, HD_ENOMEM, NULL);
        goto fail;
    }
    /* The caller's strings are not kept: point the copy of the options at our copies. */
    a->opts.connection_name = a->connection_name;
    a->opts.ca_cert_path = a->ca_cert_path;

    if ((rc = connect_first(a, err)) < 0)
        goto fail;
    *out = a;
    return 0;
fail:
    hd_amqp_free(a);
    return rc;
}

/* Close the current connection: politely when it still works, bluntly when not. */
static void drop_connection(hd_amqp *a)
{
    if (a->conn == NULL)
        return;
    if (a->open) {
        /* connection.close closes every channel with it; channel 1 first is only courtesy
         * and would cost a round trip, so it is skipped. */
        (void)amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
    a->open = 0;
}

void hd_amqp_close(hd_amqp *a)
{
    if (a == NULL)
        return;
    if (a->conn != NULL && a->open)
        (void)amqp_channel_close(a->conn, HD_AMQP_MAIN_CHANNEL, AMQP_REPLY_SUCCESS);
    drop_connection(a);
    hd_amqp_free(a);
}

int hd_amqp_reconnect(hd_amqp *a, const hd_stop *stop, hd_error *err)
{
    drop_connection(a);
    /* Full jitter (see backoff.h): after a broker restart every client reconnects at once;
     * random delays spread them out instead of hammering the broker in step. */
    hd_backoff b;
    (void)hd_backoff_init(&b, a->opts.reconnect_base_ms, a->opts.reconnect_cap_ms,
                          (uint64_t)hd_clock_ns() ^ (uint64_t)(uintptr_t)a);
    /* With a list of nodes: start with the one after the node that failed (it is most
     * likely down), go round the list, and back off only after a whole round failed. */
    unsigned n = (unsigned)a->nurls;
    unsigned first = ((unsigned)a->cur + 1) % n;
    for (unsigned attempt = 0;; attempt++) {
        if (hd_stop_requested(stop))
            return hd_error_set(err, HD_EINTR, "reconnect to %s: stopped", a->redacted);
        select_url(a, (int)((first + attempt) % n));
        hd_error last;
        int rc = connect_once(a, &last);
        if (rc == 0)
            return 0;
        if (connect_permanent(rc))
            return hd_error_set(err, rc, "%s", last.text);
        if ((attempt + 1) % n != 0)
            continue;
        /* The backoff ends at once on a stop: a broker down for minutes must not keep a
         * stopping process waiting for its next attempt. */
        if (hd_stop_wait_ms(stop, hd_backoff_delay(&b, attempt / n)))
            return hd_error_set(err, HD_EINTR, "reconnect to %s: stopped", a->redacted);
    }
}

/* ---- accessors ------------------------------------------------------------------------ */

int hd_amqp_is_open(const hd_amqp *a)
{
    return a != NULL && a->open && a->conn != NULL;
}

unsigned hd_amqp_generation(const hd_amqp *a)
{
    return a->generation;
}

amqp_connection_state_t hd_amqp_state(hd_amqp *a)
{
    return a->conn;
}

amqp_channel_t hd_amqp_channel(hd_amqp *a)
{
    (void)a;
    return HD_AMQP_MAIN_CHANNEL;
}

const char *hd_amqp_url_text(const hd_amqp *a)
{
    return a->redacted;
}

int hd_amqp_url_index(const hd_amqp *a)
{
    return a->cur;
}

int hd_amqp_url_count(const hd_amqp *a)
{
    return a->nurls;
}
