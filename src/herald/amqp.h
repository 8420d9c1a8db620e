/* herald/amqp.h — one connection to RabbitMQ, and the one place AMQP errors are explained.
 *
 * librabbitmq (rabbitmq-c) speaks AMQP 0-9-1 faithfully but leaves three jobs to every
 * program: parsing the URL, turning an amqp_rpc_reply_t into something a person can read,
 * and noticing that a channel or the whole connection has been closed by the broker. This
 * module does those three jobs once, so that topology, publisher and consumer code can check
 * every reply in one line:
 *
 *     hd_amqp *a = NULL;
 *     hd_error err;
 *     if (hd_amqp_open(getenv("HD_AMQP_URL"), NULL, &a, &err) < 0) {
 *         fprintf(stderr, "%s\n", err.text);           // "connect 127.0.0.1:5672: ..."
 *         return 1;
 *     }
 *     amqp_queue_declare(hd_amqp_state(a), hd_amqp_channel(a), ...);
 *     if (hd_amqp_check_reply(a, amqp_get_rpc_reply(hd_amqp_state(a)), "declare q", &err) < 0)
 *         ...                                          // err.text has the broker's reply_text
 *     hd_amqp_close(a);
 *
 * Channels. Channel 1 is opened by hd_amqp_open and is the connection's "main" channel, used
 * for synchronous work (declarations, basic.get). When the broker closes it (a declaration
 * with different arguments, a passive declare of a missing queue...), hd_amqp_check_reply
 * answers channel.close-ok and opens channel 1 again, so one refused declaration never costs
 * the connection. Modules with state on their own channel (a publisher in confirm mode, a
 * consumer with a prefetch) get a fresh channel number with hd_amqp_channel_open and reopen
 * it themselves when it is closed.
 *
 * Reading frames. librabbitmq has one input stream per connection. Synchronous RPCs keep
 * frames that belong to other channels for later, but amqp_simple_wait_frame hands out the
 * next frame of ANY channel. So a connection has at most one asynchronous reader: one
 * publisher (reading confirms) or one consumer (reading deliveries), plus any number of
 * synchronous callers. Give publishers and consumers separate hd_amqp connections — RabbitMQ
 * recommends that anyway, because flow control blocks a publishing connection.
 *
 * Several nodes (a RabbitMQ cluster). Wherever a URL is taken (hd_amqp_open, so HD_AMQP_URL
 * and every setting that ends up there), a comma-separated LIST of AMQP URLs may be given:
 *
 *     amqp://app:pw@10.0.0.1:5672/,amqp://app:pw@10.0.0.2:5672/,amqp://app:pw@10.0.0.3:5672/
 *
 * one full URL per node (not one URL with several hosts: each node may differ in port, TLS
 * or even user). The list is cut only at a ',' followed by "amqp://" or "amqps://" (blanks
 * around the commas are ignored), so a comma inside a password stays part of it (percent-
 * encoding it, %2C, is still the clearer way). hd_amqp_open tries the URLs in order and takes
 * the first that answers; hd_amqp_reconnect starts with the URL AFTER the one in use (the
 * node that just failed is the least likely to answer), goes round the list and backs off only
 * after a whole round failed. A wrong password (HD_EAUTH) or vhost ends the attempts at once:
 * every node of a cluster shares its users. hd_amqp_url_text names the node in use.
 * What a node loss means for messages is the publisher's and consumer's business: a confirm
 * that never came is resent after the reconnect (publisher.h), unacked deliveries come back
 * redelivered (consumer.h). See docs/modules/amqp.md, "Failover".
 *
 * Broken connections. A socket error, a heartbeat timeout or a connection.close from the
 * broker marks the connection broken: hd_amqp_is_open() turns 0 and every later call fails
 * with HD_ECLOSED until hd_amqp_reconnect() succeeds. Each successful (re)connect increments
 * hd_amqp_generation(); a module that opened its own channel compares generations to know that
 * its channel is gone.
 *
 * Threads: an hd_amqp is used by one thread at a time (librabbitmq connections are not
 * thread-safe). Heartbeats are only sent while the program is inside a librabbitmq call; a
 * program that sits idle longer than twice the heartbeat is disconnected by the broker and
 * finds out (HD_ECLOSED) on its next call.
 */
#ifndef HERALD_AMQP_H
#define HERALD_AMQP_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "herald/error.h"
#include "herald/stop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_amqp hd_amqp;

/* A key/value pair of strings: message headers, binding arguments. Both strings borrowed. */
typedef struct hd_amqp_kv {
    const char *key;
    const char *value;
} hd_amqp_kv;

/* Options of hd_amqp_open. A zeroed struct (or NULL) means "the defaults" given below; every
 * string is copied, so the struct may live on the caller's stack. */
typedef struct hd_amqp_options {
    int heartbeat_s;             /* 0 = 30 s; negative = no heartbeats */
    int connect_timeout_ms;      /* TCP connect + AMQP handshake; 0 = 10000 */
    int rpc_timeout_ms;          /* each synchronous RPC; 0 = 30000; negative = wait forever */
    const char *connection_name; /* shown in the management UI; NULL = "herald" */
    const char *ca_cert_path;    /* amqps:// only: PEM file of trusted CAs; NULL = system's */
    int tls_insecure;            /* amqps:// only: 1 = do not verify the peer (tests only) */
    int reconnect_base_ms;       /* first reconnect delay; 0 = 100 */
    int reconnect_cap_ms;        /* longest reconnect delay; 0 = 10000 */

    /* amqps:// only: a client certificate and its private key (PEM files) for a broker that
     * asks for one; both or neither. */
    const char *client_cert_path;
    const char *client_key_path;
} hd_amqp_options;
/* amqps:// verifies the server's certificate chain AND host name (see herald/amqp_tls.h for
 * the socket and its error messages; hd_amqp_tls_settings reads the HD_AMQP_*_FILE
 * settings into these options). */

/* ---- URLs ----------------------------------------------------------------------------- */

/* The most URLs a list may hold (a cluster has 3, 5 or 7 nodes). */
#define HD_AMQP_URLS_MAX 8

/* An AMQP URL taken apart: amqp[s]://user:password@host:port/vhost. Plain value, nothing to
 * free. Percent-escapes are decoded ("%2f" is "/"). Missing parts take RabbitMQ's defaults:
 * guest/guest, localhost, 5672 (5671 for amqps), vhost "/". An empty path ("amqp://h/") also
 * means vhost "/", as in pika and most clients: the default vhost is what people mean. */
typedef struct hd_amqp_url {
    char user[128];
    char password[128];
    char host[256];
    int port;
    char vhost[256];
    int tls; /* 1 for amqps:// */
} hd_amqp_url;

/* Parse url into *out. Returns 0, or HD_EURL (NULL, wrong scheme, bad port, a path with more
 * than one segment, a part too long) with the reason in err. The URL in err->text is
 * redacted: a password never reaches a log through an error message. */
int hd_amqp_url_parse(const char *url, hd_amqp_url *out, hd_error *err);

/* Parse a comma-separated list of URLs (see "Several nodes" above; one URL is a list of one)
 * into out[0..cap-1]. Returns how many (>= 1), or HD_EURL with the first bad URL's reason,
 * naming its position ("AMQP URL list, URL 2: ..."; a single URL's error is unchanged), and
 * HD_EURL when there are more than cap. */
int hd_amqp_url_list_parse(const char *urls, hd_amqp_url *out, int cap, hd_error *err);

/* Copy url into out (cap bytes, always NUL-terminated) with the password replaced by "***",
 * for logs and error messages. A list is redacted URL by URL ("amqp://u:***@a/,amqp://u:***@b/");
 * a piece of a list that has no '@' and does not parse as a URL is masked whole, in case it
 * is half of a password cut at a comma. */
void hd_amqp_url_redact(const char *url, char *out, size_t cap);

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Connect to url (one URL or a list: the first node that answers), log in, and open
 * channel 1. opts may be NULL. On success *out is a new
 * connection (free with hd_amqp_close) and 0 is returned. On failure *out is NULL and:
 *   HD_EURL      the URL does not parse
 *   HD_ECONNECT  TCP/TLS connect or the AMQP handshake failed (server down, wrong port, a
 *                plain AMQP port asked for amqps://)
 *   HD_EAUTH     the broker refused the user name or password (403 ACCESS_REFUSED), or the
 *                vhost (530 NOT_ALLOWED); or, for amqps://, its certificate did not verify
 *                (not trusted by the CA file, expired, not for this host name: amqp_tls.h)
 *   HD_ECONFIG   amqps:// with a CA or client certificate file that cannot be loaded
 *   HD_ENOMEM
 * with the host, port and the broker's text in err (for a list where no node answered:
 * "none of the 3 brokers of the list answered; the last: connect 127.0.0.1:5703: ..."). */
int hd_amqp_open(const char *url, const hd_amqp_options *opts, hd_amqp **out, hd_error *err);

/* Close cleanly (channel.close, connection.close, wait for close-ok) and free everything.
 * Safe on a broken connection (only frees) and on NULL. Channels opened by other modules are
 * closed with the connection: free publishers/consumers first, then close. */
void hd_amqp_close(hd_amqp *a);

/* Drop the current connection (without a clean close if it is broken) and connect again to
 * the same URL (a list: the next node first, round the list) with the same options, retrying with
 * capped exponential backoff and full jitter until it succeeds or stop (borrowed; NULL: retry
 * forever) is requested; a stop ends a backoff sleep at once. Returns 0 (connected; channel 1 open;
 * generation incremented), HD_EINTR when stopped, or HD_EURL/HD_EAUTH/HD_ECONFIG at once — retrying
 * a wrong password or an untrusted certificate never helps. */
int hd_amqp_reconnect(hd_amqp *a, const hd_stop *stop, hd_error *err);

/* 1 while the connection is usable, 0 once it is known to be broken. */
int hd_amqp_is_open(const hd_amqp *a);

/* Counts successful connects of this hd_amqp: 1 after hd_amqp_open, +1 per reconnect. */
unsigned hd_amqp_generation(const hd_amqp *a);

/* The librabbitmq connection, for calls this module does not wrap. Borrowed: valid until the
 * next hd_amqp_reconnect or hd_amqp_close — fetch it again after a reconnect. */
amqp_connection_state_t hd_amqp_state(hd_amqp *a);

/* The main channel (always 1), open whenever the connection is. */
amqp_channel_t hd_amqp_channel(hd_amqp *a);

/* The redacted URL of the node in use ("amqp://guest:***@127.0.0.1:5672/"): with a list,
 * the one URL of it this connection reached (after a failed reconnect: the last one tried).
 * Borrowed, and its text changes with a reconnect: copy it to keep it. */
const char *hd_amqp_url_text(const hd_amqp *a);

/* Which URL of the list is in use (0-based; always 0 for a single URL), and how many there
 * are. A test maps the index to the node it kills (HD_CLUSTER_NODE_<index+1>). */
int hd_amqp_url_index(const hd_amqp *a);
int hd_amqp_url_count(const hd_amqp *a);

/* ---- extra channels ------------------------------------------------------------------- */

/* Open a channel with a number not in use on this connection (2, 3, ...) into *out. The
 * caller owns the channel and releases it with hd_amqp_channel_close. Returns 0,
 * HD_ECLOSED (broken connection), HD_ERANGE (every channel number in use), or the error of
 * the channel.open RPC. */
int hd_amqp_channel_open(hd_amqp *a, amqp_channel_t *out, hd_error *err);

/* Close channel ch (channel.close RPC if the connection is open) and free its number. Safe
 * to call for a channel the broker already closed. Never closes channel 1. */
void hd_amqp_channel_close(hd_amqp *a, amqp_channel_t ch);

/* ---- errors --------------------------------------------------------------------------- */

/* Turn the reply of a synchronous call on the main channel into a herald error:
 *   AMQP_RESPONSE_NORMAL                    -> 0
 *   server channel.close (404, 406, 405...) -> HD_EAMQP, "<context>: 406 PRECONDITION_FAILED -
 *                                              inequivalent arg 'durable'..."; close-ok is
 *                                              sent and channel 1 reopened
 *   server connection.close (320, 501...)   -> HD_ECLOSED with the broker's text; broken
 *   library: timeout                        -> HD_ETIMEOUT
 *   library: socket/connection/heartbeat    -> HD_ECLOSED; broken
 *   anything else                           -> HD_EAMQP with librabbitmq's message
 * context names the operation for the message ("declare queue 'orders'"). */
int hd_amqp_check_reply(hd_amqp *a, amqp_rpc_reply_t r, const char *context, hd_error *err);

/* The same for a reply on one of the caller's own channels: a channel.close is answered with
 * close-ok and the channel number freed (not reopened: the owner knows what state to
 * restore). */
int hd_amqp_check_reply_on(hd_amqp *a, amqp_channel_t ch, amqp_rpc_reply_t r, const char *context,
                           hd_error *err);

/* For functions that return a librabbitmq status (amqp_basic_publish,
 * amqp_simple_wait_frame...): 0 for AMQP_STATUS_OK, HD_ETIMEOUT for AMQP_STATUS_TIMEOUT,
 * HD_ECLOSED (and broken) for socket, connection and heartbeat failures, HD_EAMQP
 * otherwise, with amqp_error_string2's text. */
int hd_amqp_check_status(hd_amqp *a, int status, const char *context, hd_error *err);

/* Handle a channel.close or connection.close METHOD that an asynchronous reader (publisher,
 * consumer) received with amqp_simple_wait_frame on channel ch: send the close-ok, free the
 * channel number or mark the connection broken, and return HD_EAMQP (channel) or HD_ECLOSED
 * (connection) with the broker's code and text. Returns 0 for any other method. */
int hd_amqp_handle_close(hd_amqp *a, amqp_channel_t ch, const amqp_method_t *m, const char *context,
                         hd_error *err);

/* The AMQP reply code of the last server-initiated close seen by the functions above (404
 * NOT_FOUND, 406 PRECONDITION_FAILED, 320 CONNECTION_FORCED...), 0 if none yet. Lets a
 * caller tell "queue does not exist" from other refusals without parsing text. */
int hd_amqp_last_reply_code(const hd_amqp *a);

/* Mark the connection broken (e.g. a confirm never came and the caller gives up on it).
 * The next hd_amqp_reconnect starts afresh. */
void hd_amqp_mark_broken(hd_amqp *a);

/* The mapping of hd_amqp_check_reply as a pure function, without a connection (nothing is
 * sent, nothing reopened): for tests and for callers of raw librabbitmq. *closed (may be
 * NULL) is set to 0 (nothing closed), 1 (the channel was closed) or 2 (the connection is
 * gone). */
int hd_amqp_reply_error(amqp_rpc_reply_t r, const char *context, int *closed, hd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* HERALD_AMQP_H */
