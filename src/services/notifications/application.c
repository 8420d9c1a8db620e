/* notifications/application.c — the use cases (see application.h for the flow and why). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/dispatcher.h"
#include "herald/inbox.h"
#include "herald/outbox.h"
#include "herald/uow.h"

#include "application.h"
#include "integration.h"
#include "repository.h"

struct notif_app {
    notif_settings s; /* strings point into the copies below */
    char *mail_from;
    char *source;
    const char *msgid_domain; /* into mail_from: the part after '@' */
    const hd_templates *templates;
    hd_logger *lg;
    notif_metrics m;
    hd_registry *registry;
    hd_dispatcher *dispatcher;
    notif_translator *translator;
    void (*on_due)(void *ctx);
    void *on_due_ctx;
};

/* ---- metrics ----------------------------------------------------------------------------- */

int notif_metrics_register(hd_metrics *m, notif_metrics *out)
{
    static const double send_buckets[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                          0.1,    0.5,    1,     5,     10,   30};
    memset(out, 0, sizeof *out);
    out->consumed =
        hd_metrics_counter(m, "notifications_consumed_total",
                           "Users events accepted (new, not duplicates).", "event_type", NULL);
    out->duplicates =
        hd_metrics_counter(m, "notifications_duplicates_total",
                           "Deliveries skipped by the inbox (already processed).", NULL);
    out->rejected =
        hd_metrics_counter(m, "notifications_rejected_total",
                           "Messages refused to the dead-letter queue.", "reason", NULL);
    out->sent =
        hd_metrics_counter(m, "notifications_sent_total", "Notifications sent.", "type", NULL);
    out->failed =
        hd_metrics_counter(m, "notifications_failed_total",
                           "Notifications failed for good (attempts exhausted).", "type", NULL);
    out->skipped = hd_metrics_counter(m, "notifications_skipped_total",
                                      "Notifications not sent because of the user's preferences.",
                                      "type", NULL);
    out->retries = hd_metrics_counter(m, "notifications_retries_total",
                                      "Failed send attempts that will be retried.", "type", NULL);
    out->erased = hd_metrics_counter(m, "notifications_users_erased_total",
                                     "Users whose data was erased (users.user_deleted).", NULL);
    out->send_seconds = hd_metrics_histogram(
        m, "notifications_send_duration_seconds", "Time to hand one mail to the sender.",
        send_buckets, sizeof send_buckets / sizeof send_buckets[0], "sender", NULL);
    int ok = out->consumed && out->duplicates && out->rejected && out->sent && out->failed &&
             out->skipped && out->retries && out->erased && out->send_seconds;
    return ok ? 0 : HD_ENOMEM;
}

/* Count one under label (NULL for none); metrics are optional. */
static void count(hd_counter *c, const char *label)
{
    if (c != NULL)
        hd_counter_inc(c, label ? (const char *const[]){label} : NULL, 1);
}

/* ---- the app ----------------------------------------------------------------------------- */

/* Fill the defaults and check the settings. */
static int app_settings(notif_settings *s, hd_error *err)
{
    if (s->mail_from == NULL || !hd_mail_address_valid(s->mail_from))
        return hd_error_set(err, HD_EINVAL, "mail_from must be an e-mail address");
    if (s->max_attempts == 0)
        s->max_attempts = NOTIF_MAX_ATTEMPTS_DEFAULT;
    if (s->backoff_base_ms == 0)
        s->backoff_base_ms = NOTIF_BACKOFF_BASE_DEFAULT;
    if (s->backoff_base_ms < 0) /* "no delay", for tests */
        s->backoff_base_ms = 0;
    if (s->backoff_cap_ms == 0)
        s->backoff_cap_ms = NOTIF_BACKOFF_CAP_DEFAULT;
    if (s->lease_ms == 0)
        s->lease_ms = NOTIF_LEASE_DEFAULT;
    if (s->max_attempts < 1 || s->backoff_cap_ms < 0 || s->lease_ms < 100)
        return hd_error_set(err, HD_EINVAL,
                            "max_attempts >= 1, backoff_cap_ms >= 0 and lease_ms >= 100 needed");
    return 0;
}

static int log_preferences(void *handler, hd_uow *uow, const hd_event *ev, hd_error *err)
{
    (void)uow;
    (void)err;
    notif_app *app = handler;
    hd_log_json(app->lg, HD_LOG_INFO, NULL, "preferences updated",
                json_deep_copy(hd_event_payload(ev)));
    return 0;
}

int notif_app_new(const notif_settings *s, const hd_templates *templates, hd_logger *lg,
                  const notif_metrics *metrics, notif_app **out, hd_error *err)
{
    *out = NULL;
    if (s == NULL || templates == NULL)
        return hd_error_set(err, HD_EINVAL, "notif_app_new: settings and templates are required");
    notif_app *app = calloc(1, sizeof *app);
    if (app == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    app->s = *s;
    int rc = app_settings(&app->s, err);
    if (rc < 0) {
        free(app);
        return rc;
    }
    app->templates = templates;
    app->lg = lg;
    if (metrics != NULL)
        app->m = *metrics;
    app->mail_from = strdup(s->mail_from);
    app->source = strdup(s->source ? s->source : NOTIFICATIONS_SOURCE_DEFAULT);
    app->registry = notif_consumed_registry();
    app->dispatcher = hd_dispatcher_new();
    if (app->mail_from == NULL || app->source == NULL || app->registry == NULL ||
        app->dispatcher == NULL ||
        (app->translator = notif_translator_new(app->dispatcher, app->source)) == NULL ||
        hd_dispatcher_register(app->dispatcher, PREFERENCES_UPDATED, log_preferences, app) < 0) {
        notif_app_free(app);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    app->s.mail_from = app->mail_from;
    app->s.source = app->source;
    app->msgid_domain = strchr(app->mail_from, '@') + 1;
    *out = app;
    return 0;
}

void notif_app_free(notif_app *app)
{
    if (app == NULL)
        return;
    hd_dispatcher_free(app->dispatcher);
    notif_translator_free(app->translator);
    hd_registry_free(app->registry);
    free(app->mail_from);
    free(app->source);
    free(app);
}

void notif_app_on_due(notif_app *app, void (*fn)(void *ctx), void *ctx)
{
    app->on_due = fn;
    app->on_due_ctx = ctx;
}

const hd_registry *notif_app_registry(const notif_app *app)
{
    return app->registry;
}

const notif_settings *notif_app_settings(const notif_app *app)
{
    return &app->s;
}

int notif_app_migrate(hd_store *store, hd_error *err)
{
    int rc = hd_inbox_migrate(store, err);
    if (rc >= 0)
        rc = hd_outbox_migrate(store, err);
    if (rc >= 0)
        rc = notif_repo_migrate(store, err);
    return rc < 0 ? rc : 0;
}

void notif_worker_init(notif_worker *w, notif_app *app, hd_store *store, hd_sender *sender)
{
    w->app = app;
    w->store = store;
    w->sender = sender;
    hd_backoff_init(&w->backoff, app->s.backoff_base_ms, app->s.backoff_cap_ms,
                    (uint64_t)hd_clock_ns() ^ (uint64_t)(uintptr_t)w);
}

/* ---- one notification on its way ----------------------------------------------------------
 * A job carries a notification from "recorded" to "outcome recorded": the aggregate, the
 * rendered mail, and what happened to it. The consumer and the sweeper both use it. */
typedef struct job {
    notification n;
    int live;           /* n holds a notification (release it) */
    hd_rendered *mail;  /* owned; NULL when not rendered */
    char *render_error; /* owned; why mail is NULL, for a claimed row (rare: kept off the
                           struct, which a window holds hundreds of) */
    int to_send;        /* pending: send it now */
    int outcome;        /* an attempt was made (or refused): write it */
    int release;        /* not attempted (the lease ran short): hand the row back */
    int64_t due;        /* the next attempt, when still pending */
} job;

static void job_release(job *j)
{
    if (j->live)
        notification_release(&j->n);
    hd_rendered_free(j->mail);
    free(j->render_error);
    memset(j, 0, sizeof *j);
}

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

/* The correlation id a mail may carry as a header: printable ASCII without spaces, or none
 * (an id from outside must not make the mail itself invalid). */
static const char *mail_safe_id(const char *id)
{
    if (id == NULL || strlen(id) > HD_MAIL_ID_MAX)
        return NULL;
    for (const char *p = id; *p; p++)
        if (*p <= ' ' || *p > '~')
            return NULL;
    return id;
}

/* A claim token unique to this call: the lease belongs to whoever holds it. */
static void new_claim(char out[NOTIF_CLAIM_MAX])
{
    char id[HD_UUID_LEN + 1];
    hd_uuid_v4(id);
    snprintf(out, NOTIF_CLAIM_MAX, "%s", id);
}

/* ---- step 2: one attempt ---------------------------------------------------------------- */

static void log_outcome(notif_worker *w, const notification *n, int rc, const char *reason)
{
    notif_app *app = w->app;
    hd_log_level level = HD_LOG_INFO;
    const char *msg = "notification sent";
    if (rc < 0) {
        level = n->status == NOTIFY_FAILED ? HD_LOG_ERROR : HD_LOG_WARN;
        msg = n->status == NOTIFY_FAILED ? "notification failed" : "send failed, will retry";
    } else if (strcmp(hd_sender_name(w->sender), "log") == 0) {
        level = HD_LOG_DEBUG; /* the log sender already wrote the mail's line */
    }
    if (!hd_logger_enabled(app->lg, level))
        return;
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:i}", "notification_id", notification_id(n),
                          "user_id", n->user_id, "type", notification_type_name(n->type),
                          "recipient_email", n->recipient, "attempts", n->attempts);
    if (f != NULL && rc < 0)
        json_object_set_new(f, "error", json_string(reason));
    hd_log_json(app->lg, level, n->correlation_id, msg, f);
}

/* Send j's mail through w's sender and record the outcome on the aggregate. */
static void attempt(notif_worker *w, job *j)
{
    notif_app *app = w->app;
    notification *n = &j->n;
    char msgid[HD_UUID_LEN + 260];
    snprintf(msgid, sizeof msgid, "<%s@%s>", notification_id(n), app->msgid_domain);
    hd_error err;
    hd_error_clear(&err);
    int rc = HD_EINVAL;
    if (j->mail == NULL) {
        hd_error_set(&err, HD_EINVAL, "cannot render: %s",
                     j->render_error ? j->render_error : "out of memory");
    } else {
        hd_mail m = {.from = app->mail_from,
                     .to = n->recipient,
                     .subject = j->mail->subject,
                     .html = j->mail->html,
                     .text = j->mail->text,
                     .message_id = msgid,
                     .correlation_id = mail_safe_id(n->correlation_id)};
        int64_t t0 = hd_clock_ns();
        rc = hd_sender_send(w->sender, &m, &err);
        if (app->m.send_seconds != NULL)
            hd_histogram_observe(app->m.send_seconds,
                                 (const char *const[]){hd_sender_name(w->sender)},
                                 (double)(hd_clock_ns() - t0) / 1e9);
    }
    int64_t now = hd_time_now_ms();
    hd_error dom;
    int final = 0;
    if (rc == 0)
        notification_record_sent(n, now, &dom);
    else
        final = notification_record_failure(n, err.text, app->s.max_attempts, rc == HD_EINVAL, now,
                                            &dom);
    if (rc < 0 && final == 0)
        j->due = now + hd_backoff_delay(&w->backoff, (unsigned)(n->attempts - 1));
    j->outcome = 1;
    log_outcome(w, n, rc, err.text);
}

/* Step 2 for every job that waits for it. A send starts only in the first half of the
 * lease: with the lease more than twice the longest send, the row is still ours when the
 * outcome is written. Jobs past that point are handed back for the sweeper. */
static void attempt_all(notif_worker *w, job *jobs, size_t n, int64_t lease_until)
{
    int64_t last_start = lease_until - w->app->s.lease_ms / 2;
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].to_send)
            continue;
        if (hd_time_now_ms() > last_start)
            jobs[i].release = 1;
        else
            attempt(w, &jobs[i]);
    }
}

/* ---- step 3: the outcomes, in one transaction ------------------------------------------- */

/* Write job j's row; track its aggregate so its events reach the outbox at commit. */
static int save_job(notif_worker *w, hd_uow *uow, job *j, const char *claim, hd_error *err)
{
    int64_t due = j->release ? hd_time_now_ms() : j->due;
    int rc = notif_repo_save_outcome(hd_uow_store(uow), &j->n, due, claim, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        /* Our lease ran out and another sender took the row (or the user was erased): its
         * outcome is theirs to record. */
        hd_aggregate_discard_events(&j->n.base);
        j->outcome = 0;
        hd_log_warn(w->app->lg, j->n.correlation_id, "notification taken over by another sender",
                    "notification_id", notification_id(&j->n), NULL);
        return 0;
    }
    return hd_uow_track(uow, &j->n.base);
}

static void count_outcomes(notif_worker *w, const job *jobs, size_t n)
{
    const notif_metrics *m = &w->app->m;
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].outcome)
            continue;
        const char *type = notification_type_name(jobs[i].n.type);
        if (jobs[i].n.status == NOTIFY_SENT)
            count(m->sent, type);
        else if (jobs[i].n.status == NOTIFY_FAILED)
            count(m->failed, type);
        else
            count(m->retries, type);
    }
}

static void save_outcomes(notif_worker *w, job *jobs, size_t n, const char *claim)
{
    hd_error err;
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(w->store, w->app->dispatcher, &uow, &err);
    for (size_t i = 0; rc >= 0 && i < n; i++)
        if (jobs[i].outcome || jobs[i].release)
            rc = save_job(w, uow, &jobs[i], claim, &err);
    if (uow != NULL && rc < 0)
        hd_uow_rollback(uow, NULL);
    else if (uow != NULL)
        rc = hd_uow_commit(uow, &err);
    if (rc < 0) {
        /* The rows stay pending under our claim: the sweeper sends them again after the
         * lease. Mails already sent go out twice: at-least-once (application.h). */
        hd_log_error(w->app->lg, NULL, "cannot record the outcome of sends", "error", err.text,
                     NULL);
        return;
    }
    count_outcomes(w, jobs, n);
}

/* Steps 2 and 3 for jobs claimed with claim until lease_until. */
static void deliver(notif_worker *w, job *jobs, size_t n, const char *claim, int64_t lease_until)
{
    size_t todo = 0;
    for (size_t i = 0; i < n; i++)
        todo += jobs[i].to_send != 0;
    if (todo == 0)
        return;
    attempt_all(w, jobs, n, lease_until);
    save_outcomes(w, jobs, n, claim);
}

/* ---- step 1: recording users events ------------------------------------------------------ */

/* One window of deliveries on its way through the three steps. The arrays are parallel,
 * n long, and live on the heap (a window holds up to a prefetch of messages). */
typedef struct window {
    notif_worker *w;
    size_t n;
    int single; /* handed over alone: failures get a verdict of their own */
    const hd_delivery *const *ds;
    const hd_envelope **envs; /* decoded envelopes (borrowed from ds or owned below) */
    hd_envelope **owned;      /* the ones decoded here */
    const char **ids;         /* the envelopes' ids, for the inbox */
    unsigned char *fresh;     /* 1 = new, 0 = duplicate */
    job *jobs;
    char claim[NOTIF_CLAIM_MAX];
    int64_t now;
    int64_t lease_until;
} window;

static int window_init(window *win, notif_worker *w, const hd_delivery *const *ds, size_t n,
                       int single)
{
    memset(win, 0, sizeof *win);
    win->w = w;
    win->n = n;
    win->single = single;
    win->ds = ds;
    win->envs = calloc(n, sizeof *win->envs);
    win->owned = calloc(n, sizeof *win->owned);
    win->ids = calloc(n, sizeof *win->ids);
    win->fresh = calloc(n, sizeof *win->fresh);
    win->jobs = calloc(n, sizeof *win->jobs);
    win->now = hd_time_now_ms();
    win->lease_until = win->now + w->app->s.lease_ms;
    new_claim(win->claim);
    return win->envs && win->owned && win->ids && win->fresh && win->jobs ? 0 : HD_ENOMEM;
}

static void window_release(window *win)
{
    for (size_t i = 0; i < win->n; i++) {
        if (win->jobs != NULL)
            job_release(&win->jobs[i]);
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
static hd_consume_result verdict(window *win, size_t i, int rc, const char *why)
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
    count(app->m.rejected, rc == HD_EMISSING || rc == HD_ETYPE ? "template" : "invalid_event");
    hd_log_warn(app->lg, d->correlation_id, "message rejected", "message_id", d->message_id,
                "reason", why, NULL);
    return HD_CONSUME_REJECT;
}

static hd_consume_result decode_window(window *win)
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

static int erase_user(window *win, const hd_envelope *env, hd_error *err)
{
    const char *user_id = json_string_value(json_object_get(hd_envelope_data(env), "user_id"));
    int rc = notif_repo_erase_user(win->w->store, user_id, err);
    if (rc >= 0)
        hd_log_info(win->w->app->lg, hd_envelope_correlation_id(env), "user erased", "user_id",
                    user_id, NULL);
    return rc < 0 ? rc : 0;
}

/* Render t's template with data into j->mail, and the variables' JSON text into *text. */
static int render(const notif_app *app, notification_type t, const json_t *data, job *j,
                  char **text, hd_error *err)
{
    json_t *vars = notif_template_variables(data);
    if (vars == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    int rc = hd_templates_render(app->templates, notification_type_name(t), vars, &j->mail, err);
    if (rc == 0 && (*text = json_dumps(vars, JSON_COMPACT)) == NULL)
        rc = hd_error_set(err, HD_ENOMEM, NULL);
    json_decref(vars);
    return rc;
}

/* Record one notification asked for by spec in j: pending (rendered, claimed by win until
 * its lease ends; win->claim "" = due at once, held by nobody) or skipped (prefs). */
static int record(window *win, notification_spec *spec, const preferences *prefs,
                  const json_t *data, job *j, hd_error *err)
{
    char *text = NULL;
    int allowed = preferences_allows(prefs, spec->type);
    int rc = allowed ? render(win->w->app, spec->type, data, j, &text, err) : 0;
    if (rc == 0 && allowed)
        spec->subject = j->mail->subject;
    if (rc == 0 && (rc = notification_new(&j->n, spec, prefs, win->now, err)) >= 0) {
        j->live = 1;
        j->to_send = rc;
        const char *claim = j->to_send && win->claim[0] ? win->claim : NULL;
        rc = notif_repo_insert(win->w->store, &j->n, text, win->lease_until, claim, err);
    }
    free(text);
    return rc < 0 ? rc : 0;
}

static int notify_user(window *win, const hd_envelope *env, notification_type t, job *j,
                       hd_error *err)
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
    rc = record(win, &spec, &prefs, data, j, err);
    preferences_release(&prefs);
    return rc;
}

/* Step 1 for one fresh event. */
static int apply_event(window *win, size_t i, hd_error *err)
{
    notification_type t;
    const hd_envelope *env = win->envs[i];
    switch (notif_intent_of(hd_envelope_type(env), &t)) {
    case NOTIF_INTENT_NOTIFY:
        return notify_user(win, env, t, &win->jobs[i], err);
    case NOTIF_INTENT_ERASE:
        return erase_user(win, env, err);
    default:
        return hd_error_set(err, HD_EUNKNOWN, "event type is not one this service handles");
    }
}

/* The inbox, then every fresh event, in the open transaction. *culprit is the index of the
 * event that failed. */
static int record_events(window *win, size_t *culprit, hd_error *err)
{
    *culprit = 0;
    int rc = hd_inbox_accept_many(win->w->store, NOTIFICATIONS_CONSUMER, win->ids, win->n,
                                  win->fresh, err);
    for (size_t i = 0; rc >= 0 && i < win->n; i++) {
        *culprit = i;
        if (win->fresh[i])
            rc = apply_event(win, i, err);
    }
    return rc < 0 ? rc : 0;
}

static void count_recorded(const window *win)
{
    const notif_metrics *m = &win->w->app->m;
    for (size_t i = 0; i < win->n; i++) {
        const job *j = &win->jobs[i];
        if (!win->fresh[i])
            count(m->duplicates, NULL);
        else
            count(m->consumed, hd_envelope_type(win->envs[i]));
        if (win->fresh[i] && j->live && j->n.status == NOTIFY_SKIPPED)
            count(m->skipped, notification_type_name(j->n.type));
        else if (win->fresh[i] && !j->live)
            count(m->erased, NULL);
    }
}

/* Step 1 for the whole window: one transaction, one fsync. */
static hd_consume_result record_window(window *win)
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
        for (size_t i = 0; i < win->n; i++)
            job_release(&win->jobs[i]);
        return verdict(win, culprit, rc, err.text);
    }
    count_recorded(win);
    return HD_CONSUME_OK;
}

/* Decode, record (step 1), deliver (steps 2 and 3) a window of n deliveries. single: they
 * came one by one (notif_handle_delivery), not as a batch. */
static hd_consume_result handle_window(notif_worker *w, const hd_delivery *const *ds, size_t n,
                                       int single)
{
    window win;
    hd_consume_result v = HD_CONSUME_RETRY;
    if (window_init(&win, w, ds, n, single) == 0 && (v = decode_window(&win)) == HD_CONSUME_OK &&
        (v = record_window(&win)) == HD_CONSUME_OK)
        deliver(w, win.jobs, n, win.claim, win.lease_until);
    window_release(&win);
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

/* ---- the sweeper ------------------------------------------------------------------------- */

/* Turn a claimed row into a job: move the notification, render the stored variables. */
static void job_from_claimed(notif_worker *w, notif_claimed *c, job *j)
{
    j->n = c->n;
    memset(&c->n, 0, sizeof c->n); /* moved: the row list no longer owns it */
    j->live = 1;
    j->to_send = 1;
    hd_error err;
    json_t *vars = c->variables ? json_loads(c->variables, 0, NULL) : NULL;
    if (vars == NULL)
        j->render_error = strdup("no stored variables");
    else if (hd_templates_render(w->app->templates, notification_type_name(j->n.type), vars,
                                 &j->mail, &err) < 0)
        j->render_error = strdup(err.text);
    json_decref(vars);
}

int notif_sweep(notif_worker *w, int64_t now_ms, size_t limit, hd_error *err)
{
    char claim[NOTIF_CLAIM_MAX];
    new_claim(claim);
    int64_t now = now_ms > 0 ? now_ms : hd_time_now_ms();
    int64_t lease_until = now + w->app->s.lease_ms;
    notif_claimed *rows = NULL;
    size_t n = 0;
    int rc = notif_repo_claim_due(w->store, now, lease_until, claim, limit, &rows, &n, err);
    if (rc <= 0)
        return rc;
    job *jobs = calloc(n, sizeof *jobs);
    if (jobs == NULL) {
        notif_claimed_free(rows, n);
        return hd_error_set(err, HD_ENOMEM, NULL); /* the rows come back after the lease */
    }
    for (size_t i = 0; i < n; i++)
        job_from_claimed(w, &rows[i], &jobs[i]);
    notif_claimed_free(rows, n);
    deliver(w, jobs, n, claim, lease_until);
    for (size_t i = 0; i < n; i++)
        job_release(&jobs[i]);
    free(jobs);
    return (int)n;
}

/* ---- the HTTP API's use cases ------------------------------------------------------------ */

/* Check a direct request before anything is read or written. */
static int check_request(const notif_request *req, notification_type *t, hd_error *err)
{
    int rc = notification_type_parse(req->type, t, err);
    if (rc < 0)
        return rc;
    if (!notify_user_id_valid(req->user_id))
        return hd_error_set(err, HD_EVALIDATE,
                            "user_id must be 1 to %d characters of A-Z a-z "
                            "0-9 . _ : -",
                            NOTIFY_USER_ID_MAX);
    if (!hd_mail_address_valid(req->recipient))
        return hd_error_set(err, HD_EVALIDATE, "recipient is not a valid e-mail address");
    if (!json_is_object(req->variables))
        return hd_error_set(err, HD_EVALIDATE, "variables must be an object");
    return 0;
}

/* In the open unit of work: read the preferences, render, insert. */
static int record_request(notif_worker *w, const notif_request *req, notification_type t, job *j,
                          hd_error *err)
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
    window win = {.w = w, .now = hd_time_now_ms()};
    win.lease_until = win.now;
    rc = record(&win, &spec, &prefs, req->variables, j, err);
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
    int rc = check_request(req, &t, err);
    if (rc < 0)
        return rc;
    job j;
    memset(&j, 0, sizeof j);
    hd_uow *uow = NULL;
    if ((rc = hd_uow_begin(w->store, w->app->dispatcher, &uow, err)) < 0)
        return rc;
    if ((rc = record_request(w, req, t, &j, err)) < 0)
        hd_uow_rollback(uow, NULL);
    else
        rc = hd_uow_commit(uow, err);
    if (rc < 0) {
        job_release(&j);
        return rc;
    }
    int pending = j.to_send;
    if (!pending)
        count(w->app->m.skipped, notification_type_name(t));
    if (pending && w->app->on_due != NULL)
        w->app->on_due(w->app->on_due_ctx);
    *out = j.n; /* moved to the caller */
    j.live = 0;
    job_release(&j);
    return pending;
}

int notif_prefs_get(notif_worker *w, const char *user_id, preferences *out, hd_error *err)
{
    return notif_repo_prefs_find(w->store, user_id, out, err);
}

/* Create (create = 1) or change the preferences of user_id, in one unit of work. Returns 1
 * when they were created now, 0 when they existed. */
static int prefs_write(notif_worker *w, const char *user_id, const preferences_change *c,
                       int create, preferences *out, hd_error *err)
{
    hd_uow *uow = NULL;
    int rc = hd_uow_begin(w->store, w->app->dispatcher, &uow, err);
    if (rc < 0)
        return rc;
    int stored = rc = notif_repo_prefs_find(w->store, user_id, out, err);
    if (rc >= 0 && create && stored)
        rc = hd_error_set(err, HD_EEXIST, "preferences of this user already exist");
    int64_t expected = rc >= 0 ? hd_aggregate_version(&out->base) : 0;
    if (rc >= 0 && (rc = preferences_apply(out, c, hd_time_now_ms(), err)) == 1 &&
        (rc = notif_repo_prefs_save(w->store, out, stored ? expected : 0, err)) == 0)
        rc = hd_uow_track(uow, &out->base);
    if (rc < 0) {
        hd_uow_rollback(uow, NULL);
        if (stored >= 0)
            preferences_release(out);
        return rc;
    }
    if ((rc = hd_uow_commit(uow, err)) < 0) {
        preferences_release(out);
        return rc;
    }
    return !stored;
}

int notif_prefs_create(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err)
{
    int rc = prefs_write(w, user_id, change, 1, out, err);
    return rc < 0 ? rc : 0;
}

int notif_prefs_update(notif_worker *w, const char *user_id, const preferences_change *change,
                       preferences *out, hd_error *err)
{
    return prefs_write(w, user_id, change, 0, out, err);
}

int notif_get(notif_worker *w, const char *id, notification *out, hd_error *err)
{
    if (!hd_uuid_valid(id))
        return hd_error_set(err, HD_ENOTFOUND, "no notification with this id");
    return notif_repo_get(w->store, id, out, err);
}

/* "<created_at ms>.<notification id>": where the next page starts. Opaque to clients. */
static int cursor_parse(const char *cursor, int64_t *ms, const char **id, hd_error *err)
{
    char *end = NULL;
    long long v = strtoll(cursor, &end, 10);
    if (end == cursor || *end != '.' || v < 0 || cursor[0] == '-' || !hd_uuid_valid(end + 1))
        return hd_error_set(err, HD_EVALIDATE, "cursor is not one this service handed out");
    *ms = v;
    *id = end + 1;
    return 0;
}

int notif_history(notif_worker *w, const char *user_id, size_t limit, const char *cursor,
                  notification **list, size_t *n, char next_cursor[NOTIF_CURSOR_MAX + 1],
                  hd_error *err)
{
    next_cursor[0] = '\0';
    if (!notify_user_id_valid(user_id))
        return hd_error_set(err, HD_EVALIDATE, "user_id is not a valid user id");
    if (limit < 1 || limit > NOTIF_HISTORY_LIMIT_MAX)
        return hd_error_set(err, HD_EVALIDATE, "limit must be 1 to %d", NOTIF_HISTORY_LIMIT_MAX);
    int64_t before_ms = 0;
    const char *before_id = NULL;
    int rc = cursor != NULL && cursor[0] ? cursor_parse(cursor, &before_ms, &before_id, err) : 0;
    if (rc < 0)
        return rc;
    /* One row more than asked tells whether a next page exists, without a COUNT. */
    rc = notif_repo_history(w->store, user_id, before_ms, before_id, limit + 1, list, n, err);
    if (rc < 0)
        return rc;
    if (*n > limit) {
        notification *last = &(*list)[limit - 1];
        snprintf(next_cursor, NOTIF_CURSOR_MAX + 1, "%lld.%s", (long long)last->created_at_ms,
                 notification_id(last));
        notification_release(&(*list)[limit]);
        *n = limit;
    }
    return (int)*n;
}

void notif_history_free(notification *list, size_t n)
{
    notif_repo_list_free(list, n);
}
