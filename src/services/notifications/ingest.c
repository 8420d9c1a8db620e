/* notifications/ingest.c — step 1: what comes in becomes a recorded notification.
 *
 * A window of users events (or one, handed over alone), decoded and checked against the
 * consumed contract, recorded in one transaction: the inbox drops duplicates, the
 * preferences may skip a type, the template is rendered (a missing variable REJECTs the
 * message), and the notification is inserted pending, claimed by the window for a lease.
 * Then delivery.c sends. A request of the HTTP API takes the same path without a message:
 * recorded due at once and held by nobody, so the sweeper sends it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herald/clock.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/retry.h"
#include "herald/uow.h"

#include "internal.h"

/* Errors that a later attempt cannot fix: the message (or request) is wrong. */
static int permanent(int code)
{
    switch (code) {
    case HD_EVALIDATE:
    case HD_EMISSING:
    case HD_ETYPE:
    case HD_EUNKNOWN:
    case HD_EVERSION:
    case HD_EJSON:
    case HD_ETOOBIG:
    case HD_EUNSUPPORTED:
    case HD_EINVAL:
    case HD_ERANGE:
        return 1;
    default:
        return 0;
    }
}

/* ---- step 1: recording users events ------------------------------------------------------ */

int notif_window_init(notif_window *win, notif_worker *w, const hd_delivery *const *ds, size_t n,
                      int single)
{
    memset(win, 0, sizeof *win);
    win->w = w;
    win->n = n;
    win->single = single;
    win->hi = n;
    win->ds = ds;
    win->envs = calloc(n, sizeof *win->envs);
    win->owned = calloc(n, sizeof *win->owned);
    win->ids = calloc(n, sizeof *win->ids);
    win->fresh = calloc(n, sizeof *win->fresh);
    win->jobs = calloc(n, sizeof *win->jobs);
    win->now = hd_time_now_ms();
    win->lease_until = win->now + w->app->s.lease_ms;
    notif_new_claim(win->claim);
    return win->envs && win->owned && win->ids && win->fresh && win->jobs ? 0 : HD_ENOMEM;
}

void notif_window_release(notif_window *win)
{
    for (size_t i = 0; i < win->n; i++) {
        if (win->jobs != NULL)
            notif_job_release(&win->jobs[i]);
        if (win->owned != NULL)
            hd_envelope_free(win->owned[i]);
    }
    free(win->envs);
    free(win->owned);
    free(win->ids);
    free(win->fresh);
    free(win->jobs);
}

/* The envelope of d: the consumer's, checked against our contract, or decoded here. *owned
 * receives what must be freed. */
static int envelope_of(const notif_app *app, const hd_delivery *d, const hd_envelope **env,
                       hd_envelope **owned, hd_error *err)
{
    *owned = NULL;
    if (d->envelope != NULL) {
        *env = d->envelope;
        return hd_registry_check(app->registry, d->envelope, err);
    }
    int rc = hd_envelope_decode(app->registry, d->body, d->body_len, owned, err);
    *env = *owned;
    return rc;
}

/* The verdict for a failure of delivery i: REJECT what can never succeed, RETRY the rest.
 * In a batch every failure is RETRY without a word: the consumer then hands each delivery
 * over alone, and the culprit gets its verdict (and its log line, and its count) then. */
static hd_consume_result verdict(notif_window *win, size_t i, int rc, const char *why)
{
    notif_app *app = win->w->app;
    const hd_delivery *d = win->ds[i];
    if (!win->single)
        return HD_CONSUME_RETRY;
    hd_delivery_reason(d, "%s", why);
    if (!permanent(rc)) {
        hd_log_warn(app->lg, d->correlation_id, "message will be retried", "message_id",
                    d->message_id, "reason", why, NULL);
        return HD_CONSUME_RETRY;
    }
    notif_count(app->m.rejected,
                rc == HD_EMISSING || rc == HD_ETYPE ? "template" : "invalid_event");
    hd_log_warn(app->lg, d->correlation_id, "message rejected", "message_id", d->message_id,
                "reason", why, NULL);
    return HD_CONSUME_REJECT;
}

hd_consume_result notif_window_decode(notif_window *win)
{
    for (size_t i = 0; i < win->n; i++) {
        hd_error err;
        int rc = envelope_of(win->w->app, win->ds[i], &win->envs[i], &win->owned[i], &err);
        if (rc < 0)
            return verdict(win, i, rc, err.text);
        win->ids[i] = hd_envelope_id(win->envs[i]);
    }
    return HD_CONSUME_OK;
}

static int erase_user(notif_window *win, const hd_envelope *env, hd_error *err)
{
    const char *user_id = json_string_value(json_object_get(hd_envelope_data(env), "user_id"));
    int rc = notif_repo_erase_user(win->w->store, user_id, err);
    if (rc >= 0)
        hd_log_info(win->w->app->lg, hd_envelope_correlation_id(env), "user erased", "user_id",
                    user_id, NULL);
    return rc < 0 ? rc : 0;
}

/* Render t's template with data into j->mail, and what the row keeps to render it again
 * into *text and its form into *kind (integration.h): the event's own bytes when d
 * (borrowed) is the delivery that asked for it, else the variables' JSON text. This is the
 * only place that chooses NOTIF_STORED_EVENT, and only for a delivery. */
static int render(const notif_app *app, notification_type t, const json_t *data,
                  const hd_delivery *d, notif_job *j, char **text, notif_stored_kind *kind,
                  hd_error *err)
{
    *kind = d != NULL ? NOTIF_STORED_EVENT : NOTIF_STORED_VARIABLES;
    json_t *vars = notif_template_variables(data);
    if (vars == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_templates_render(app->templates, notification_type_name(t), vars, &j->mail, err);
    if (rc == 0 && (*text = d != NULL ? notif_stored_event(d->body, d->body_len)
                                      : json_dumps(vars, JSON_COMPACT)) == NULL)
        rc = hd_error_set(err, HD_ENOMEM, NULL);
    json_decref(vars);
    return rc;
}

/* Record one notification asked for by spec in j: pending (rendered, claimed by win until
 * its lease ends; win->claim "" = due at once, held by nobody) or skipped (prefs). d: the
 * delivery whose event asked for it (borrowed), NULL for an API request. */
static int record(notif_window *win, notification_spec *spec, const preferences *prefs,
                  const json_t *data, const hd_delivery *d, notif_job *j, hd_error *err)
{
    char *text = NULL;
    notif_stored_kind kind = NOTIF_STORED_VARIABLES;
    int allowed = preferences_allows(prefs, spec->type);
    int rc = allowed ? render(win->w->app, spec->type, data, d, j, &text, &kind, err) : 0;
    if (rc == 0 && allowed)
        spec->subject = j->mail->subject;
    if (rc == 0 && (rc = notification_new(&j->n, spec, prefs, win->now, err)) >= 0) {
        j->live = 1;
        j->to_send = rc;
        const char *claim = j->to_send && win->claim[0] ? win->claim : NULL;
        rc = notif_repo_insert(win->w->store, &j->n, text, kind, win->lease_until, claim, err);
    }
    free(text);
    return rc < 0 ? rc : 0;
}

static int notify_user(notif_window *win, const hd_delivery *d, const hd_envelope *env,
                       notification_type t, notif_job *j, hd_error *err)
{
    const json_t *data = hd_envelope_data(env);
    const char *user_id = json_string_value(json_object_get(data, "user_id"));
    const char *email = json_string_value(json_object_get(data, "email"));
    preferences prefs;
    int rc = notif_repo_prefs_find(win->w->store, user_id, &prefs, err);
    if (rc < 0)
        return rc;
    const char *cid = hd_envelope_correlation_id(env);
    notification_spec spec = {
        .user_id = user_id,
        .type = t,
        .recipient = preferences_recipient(&prefs, t, email),
        .correlation_id = cid != NULL ? cid : hd_envelope_id(env), /* it starts a flow */
        .cause_id = hd_envelope_id(env),
    };
    rc = record(win, &spec, &prefs, data, d, j, err);
    preferences_release(&prefs);
    return rc;
}

/* Step 1 for one fresh event. */
static int apply_event(notif_window *win, size_t i, hd_error *err)
{
    notification_type t;
    const hd_envelope *env = win->envs[i];
    switch (notif_intent_of(hd_envelope_type(env), &t)) {
    case NOTIF_INTENT_NOTIFY:
        return notify_user(win, win->ds[i], env, t, &win->jobs[i], err);
    case NOTIF_INTENT_ERASE:
        return erase_user(win, env, err);
    default:
        return hd_error_set(err, HD_EUNKNOWN, "event type is not one this service handles");
    }
}

/* ---- per-user order with several instances ---------------------------------------------
 *
 * The relay publishes a user's events in order, and the queue keeps it, but two instances
 * of this service take turns on the queue: event 1 of a user can be in instance A's window
 * while event 2 is in instance B's, and B may commit first (a verification mail recorded
 * after the welcome, or, worse, a notification recorded after the user's erasure, keeping
 * personal data that user_deleted was meant to remove). So every event carries the id of
 * its user's previous event (the outbox's chain, outbox.h "Ordering": "previousid"), and
 * an event is applied only once that predecessor is in the inbox, in the same transaction
 * that records the event: the inbox row and the predecessor's effect commit together, so
 * "in the inbox" means "applied". An event whose predecessor is not there yet is a GAP:
 *   - the window is recorded in SEGMENTS split at its gaps: the events before the first
 *     gap are recorded and committed, then the instance waits (polling the inbox, up to
 *     order_wait_ms, no transaction open) for the gap's predecessor, which is normally in
 *     another instance's window at that moment and committed within milliseconds; then it
 *     goes on from the gap. Waiting instead of requeueing at once: a requeue would spin.
 *     Two instances cannot wait for each other: each commits what it holds before the
 *     gap, and waits only for an EARLIER event of the queue, held after the other's own
 *     gap, which would be later still (the relay publishes a user's events in order, and
 *     a consumer receives the queue in order). A window must not wait with a transaction
 *     open, or with the events before its gap uncommitted: the other instance may be
 *     waiting for one of them;
 *   - when the wait runs out (the predecessor is in a retry tier, or held by a dead
 *     instance until its connection closes), a batch answers RETRY (the consumer hands
 *     its deliveries over one by one; those already committed are duplicates, dropped by
 *     the inbox) and a single delivery is deferred: RETRY, a delay tier,
 *     and the check again; on the retry policy's last attempt it is applied anyway, with a
 *     warning, rather than dead-lettered for the fault of another message (a predecessor
 *     that went to the DLQ must not block the user forever).
 * Known limits: a predecessor forgotten by the inbox (older than HD_INBOX_RETENTION) or
 * never delivered to this queue (published before the queue existed) costs its successor
 * the wait and the retries once. The chain follows every users event type, and this
 * service consumes them all; a consumer of a subset must not check it. */

/* 1 when event i may be applied now: no predecessor, or the predecessor earlier in the
 * segment being recorded (applied before it in this transaction) or already in the inbox
 * (committed: by another instance, or by an earlier segment of this window); 0 for a gap. */
static int predecessor_done(notif_window *win, size_t i, hd_error *err)
{
    const char *prev =
        json_string_value(hd_envelope_attribute(win->envs[i], HD_OUTBOX_PREVIOUS_ID));
    if (prev == NULL || win->no_order || win->w->app->s.order_wait_ms < 0)
        return 1;
    for (size_t j = win->lo; j < win->n; j++)
        if (strcmp(win->ids[j], prev) == 0)
            return j < i; /* later in the window: out of order within it */
    return hd_inbox_seen(win->w->store, NOTIFICATIONS_CONSUMER, prev, err);
}

/* The inbox, then every fresh event of the segment [lo, hi), in the open transaction.
 * *culprit is the index of the event that failed. A gap (see above) is HD_EBUSY with
 * win->gap set. */
static int record_events(notif_window *win, size_t *culprit, hd_error *err)
{
    *culprit = win->lo;
    win->gap = 0;
    int rc = hd_inbox_accept_many(win->w->store, NOTIFICATIONS_CONSUMER, win->ids + win->lo,
                                  win->hi - win->lo, win->fresh + win->lo, err);
    for (size_t i = win->lo; rc >= 0 && i < win->hi; i++) {
        *culprit = i;
        if (!win->fresh[i])
            continue;
        if ((rc = predecessor_done(win, i, err)) == 0) {
            win->gap = i + 1;
            return hd_error_set(
                err, HD_EBUSY, "the previous event of this user (%s) is not processed yet",
                json_string_value(hd_envelope_attribute(win->envs[i], HD_OUTBOX_PREVIOUS_ID)));
        }
        if (rc > 0)
            rc = apply_event(win, i, err);
    }
    return rc < 0 ? rc : 0;
}

static void count_recorded(const notif_window *win)
{
    const notif_metrics *m = &win->w->app->m;
    for (size_t i = win->lo; i < win->hi; i++) {
        const notif_job *j = &win->jobs[i];
        if (!win->fresh[i])
            notif_count(m->duplicates, NULL);
        else
            notif_count(m->consumed, hd_envelope_type(win->envs[i]));
        if (win->fresh[i] && j->live && j->n.status == NOTIFY_SKIPPED)
            notif_count(m->skipped, notification_type_name(j->n.type));
        else if (win->fresh[i] && !j->live)
            notif_count(m->erased, NULL);
    }
}

/* Step 1 for the segment [lo, hi) of the window (all of it, unless a gap split it): one
 * transaction, one fsync. */
hd_consume_result notif_window_record(notif_window *win)
{
    size_t culprit = 0;
    hd_error err;
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(win->w->store, win->w->app->dispatcher, &uow, &err);
    if (rc == 0) {
        if ((rc = record_events(win, &culprit, &err)) < 0)
            hd_uow_rollback(uow, NULL);
        else
            rc = hd_uow_commit(uow, &err);
    }
    if (rc < 0) {
        for (size_t i = win->lo; i < win->hi; i++)
            notif_job_release(&win->jobs[i]);
        if (win->gap)
            return HD_CONSUME_RETRY; /* record_window waits, splits or defers */
        return verdict(win, culprit, rc, err.text);
    }
    count_recorded(win);
    return HD_CONSUME_OK;
}

/* The worker's ring of deferred ids (application.h): was id deferred here lately? */
static int deferred_here(const notif_worker *w, const char *id)
{
    for (size_t k = 0; k < NOTIF_DEFERRED_MAX; k++)
        if (w->deferred[k][0] != '\0' && strcmp(w->deferred[k], id) == 0)
            return 1;
    return 0;
}

static void remember_deferred(notif_worker *w, const char *id)
{
    if (strlen(id) >= NOTIF_DEFERRED_ID_MAX)
        return;
    snprintf(w->deferred[w->deferred_next], NOTIF_DEFERRED_ID_MAX, "%s", id);
    w->deferred_next = (w->deferred_next + 1) % NOTIF_DEFERRED_MAX;
}

/* Wait (polling the inbox, no transaction open) up to order_wait_ms for the predecessor
 * of event i. 1 when it came, 0 when not. No wait at all when this worker deferred the
 * predecessor itself: it sits in a retry tier, and waiting would only hold up the window
 * (a user's later events would each wait in turn). */
static int wait_for_predecessor(notif_window *win, size_t i)
{
    notif_app *app = win->w->app;
    const char *prev =
        json_string_value(hd_envelope_attribute(win->envs[i], HD_OUTBOX_PREVIOUS_ID));
    int64_t deadline = hd_time_now_ms() + app->s.order_wait_ms;
    int seen = prev == NULL;
    if (!seen && deferred_here(win->w, prev))
        deadline = 0;
    while (!seen && hd_time_now_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
        seen = hd_inbox_seen(win->w->store, NOTIFICATIONS_CONSUMER, prev, NULL) == 1;
    }
    notif_count(app->m.order_waits, seen ? "waited" : "deferred");
    return seen;
}

/* Step 1 for the whole window, in segments split at the gaps (see "per-user order"): the
 * events before the first gap are recorded and COMMITTED (so that another instance waiting
 * for one of them sees it), then this instance waits for the gap's predecessor, then goes
 * on from the gap. When the wait runs out: a batch answers RETRY (the consumer hands the
 * deliveries over one by one; the committed ones are then duplicates, which the inbox
 * drops); a single delivery is deferred to a retry tier, or recorded without its
 * predecessor on the retry policy's last attempt. */
static hd_consume_result record_window(notif_window *win)
{
    for (;;) {
        win->now = hd_time_now_ms(); /* a wait may have eaten into the lease */
        win->lease_until = win->now + win->w->app->s.lease_ms;
        win->hi = win->n;
        hd_consume_result v = notif_window_record(win);
        if (v != HD_CONSUME_RETRY || !win->gap)
            return v;
        size_t g = win->gap - 1;
        if (g > win->lo) {
            win->hi = g; /* the part before the gap has none: record it now */
            if ((v = notif_window_record(win)) != HD_CONSUME_OK)
                return v;
        }
        win->lo = g;
        if (wait_for_predecessor(win, g))
            continue;
        if (!win->single)
            return HD_CONSUME_RETRY;
        notif_app *app = win->w->app;
        const hd_delivery *d = win->ds[g];
        const char *prev =
            json_string_value(hd_envelope_attribute(win->envs[g], HD_OUTBOX_PREVIOUS_ID));
        hd_retry_policy p;
        hd_retry_policy_default(&p);
        if (d->attempt < p.max_attempts) {
            hd_delivery_reason(d, "waiting for the previous event of this user (%s)", prev);
            remember_deferred(win->w, win->ids[g]);
            hd_log_info(app->lg, d->correlation_id,
                        "event deferred: its predecessor is not processed yet", "message_id",
                        d->message_id, "previous_id", prev, NULL);
            return HD_CONSUME_RETRY;
        }
        hd_log_warn(app->lg, d->correlation_id,
                    "order wait given up on the last attempt: recording without its predecessor",
                    "message_id", d->message_id, "previous_id", prev, NULL);
        win->no_order = 1;
    }
}

/* Decode, record (step 1), deliver (steps 2 and 3) a window of n deliveries. single: they
 * came one by one (notif_handle_delivery), not as a batch. */
static hd_consume_result handle_window(notif_worker *w, const hd_delivery *const *ds, size_t n,
                                       int single)
{
    notif_window win;
    hd_consume_result v = HD_CONSUME_RETRY;
    if (notif_window_init(&win, w, ds, n, single) == 0 &&
        (v = notif_window_decode(&win)) == HD_CONSUME_OK)
        v = record_window(&win);
    if (v == HD_CONSUME_OK)
        notif_deliver(w, win.jobs, n, win.claim, win.lease_until);
    notif_window_release(&win);
    return v;
}

hd_consume_result notif_handle_delivery(void *ctx, const hd_delivery *d)
{
    return handle_window(ctx, &d, 1, 1);
}

/* A batch that fails answers RETRY without a verdict of its own (see verdict()), even a
 * batch of one: the consumer then hands each delivery to notif_handle_delivery. */
hd_consume_result notif_handle_batch(void *ctx, const hd_delivery *const *ds, size_t n)
{
    return n > 0 ? handle_window(ctx, ds, n, 0) : HD_CONSUME_OK;
}

/* ---- a request of the HTTP API ---------------------------------------------------------- */

/* 1 when name ends in "_link" or "_url": a variable that becomes a link in the mail. */
static int is_link_variable(const char *name)
{
    size_t n = strlen(name);
    return (n >= 5 && strcmp(name + n - 5, "_link") == 0) ||
           (n >= 4 && strcmp(name + n - 4, "_url") == 0);
}

/* Every link variable of a direct request must start with a configured base URL: the API's
 * callers choose the text of a mail that comes from us, and a link of their choosing in it
 * is phishing with our name on it. The value is not echoed in the error (it may be long,
 * and it is the attacker's text). */
static int check_links(const notif_app *app, const json_t *vars, hd_error *err)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vars, key, v)
    {
        if (!is_link_variable(key))
            continue;
        const char *s = json_string_value(v);
        int ok = 0;
        for (size_t i = 0; s != NULL && !ok && i < app->n_link_bases; i++)
            ok = strncmp(s, app->link_bases[i], strlen(app->link_bases[i])) == 0;
        if (!ok)
            return hd_error_set(err, HD_EVALIDATE,
                                app->n_link_bases == 0
                                    ? "variable '%.64s' is a link, and no link base URL is "
                                      "configured (HD_NOTIFICATIONS_LINK_BASE_URL)"
                                    : "variable '%.64s' must be a link that starts with a "
                                      "configured base URL (HD_NOTIFICATIONS_LINK_BASE_URL)",
                                key);
    }
    return 0;
}

/* Check a direct request before anything is read or written. */
static int check_request(const notif_app *app, const notif_request *req, notification_type *t,
                         hd_error *err)
{
    int rc = notification_type_parse(req->type, t, err);
    if (rc < 0)
        return rc;
    if (!notification_type_direct(*t))
        return hd_error_set(err, HD_EVALIDATE,
                            "type '%s' cannot be sent directly: it is sent in answer to "
                            "the users service's events (direct requests: security_alert)",
                            notification_type_name(*t));
    if (!notify_user_id_valid(req->user_id))
        return hd_error_set(err, HD_EVALIDATE,
                            "user_id must be 1 to %d characters of A-Z a-z "
                            "0-9 . _ : -",
                            NOTIFY_USER_ID_MAX);
    if (!hd_mail_address_valid(req->recipient))
        return hd_error_set(err, HD_EVALIDATE, "recipient is not a valid e-mail address");
    if (!json_is_object(req->variables))
        return hd_error_set(err, HD_EVALIDATE, "variables must be an object");
    return check_links(app, req->variables, err);
}

/* In the open unit of work: read the preferences, render, insert. */
static int record_request(notif_worker *w, const notif_request *req, notification_type t,
                          notif_job *j, hd_error *err)
{
    preferences prefs;
    int rc = notif_repo_prefs_find(w->store, req->user_id, &prefs, err);
    if (rc < 0)
        return rc;
    notification_spec spec = {.user_id = req->user_id,
                              .type = t,
                              .recipient = req->recipient,
                              .correlation_id = req->correlation_id};
    /* Due at once and held by nobody (no claim): the sweeper sends it. */
    notif_window win = {.w = w, .now = hd_time_now_ms()};
    win.lease_until = win.now;
    rc = record(&win, &spec, &prefs, req->variables, NULL, j, err);
    preferences_release(&prefs);
    /* A template that cannot be filled is the request's fault: 422, not 400 or 500. */
    if (rc == HD_EMISSING || rc == HD_ETYPE) {
        char why[HD_ERROR_TEXT_MAX];
        snprintf(why, sizeof why, "%s", err ? err->text : "template");
        rc = hd_error_set(err, HD_EVALIDATE, "%s", why);
    }
    return rc;
}

int notif_request_send(notif_worker *w, const notif_request *req, notification *out, hd_error *err)
{
    notification_type t;
    int rc = check_request(w->app, req, &t, err);
    if (rc < 0)
        return rc;
    notif_job j;
    memset(&j, 0, sizeof j);
    hd_uow *uow = NULL;
    if ((rc = hd_uow_begin(w->store, w->app->dispatcher, &uow, err)) < 0)
        return rc;
    if ((rc = record_request(w, req, t, &j, err)) < 0)
        hd_uow_rollback(uow, NULL);
    else
        rc = hd_uow_commit(uow, err);
    if (rc < 0) {
        notif_job_release(&j);
        return rc;
    }
    notif_wrote(w, req->user_id);
    int pending = j.to_send;
    if (!pending)
        notif_count(w->app->m.skipped, notification_type_name(t));
    if (pending && w->app->on_due != NULL)
        w->app->on_due(w->app->on_due_ctx);
    *out = j.n; /* moved to the caller */
    j.live = 0;
    notif_job_release(&j);
    return pending;
}
