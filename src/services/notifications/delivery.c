/* notifications/delivery.c — steps 2 and 3: send each mail, outside any transaction, then
 * record the outcomes in one; and the sweeper, which does the same for what is due
 * (application.h tells why in that order). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/uow.h"

#include "internal.h"

/* ---- one notification on its way ---------------------------------------------------------- */

void notif_job_release(notif_job *j)
{
    if (j->live)
        notification_release(&j->n);
    hd_rendered_free(j->mail);
    free(j->render_error);
    memset(j, 0, sizeof *j);
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
void notif_new_claim(char out[NOTIF_CLAIM_MAX])
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
    /* Typed fields (hd_log_fields): a line a notification, without a JSON object built. */
    const hd_log_field f[] = {
        {.key = "notification_id", .s = notification_id(n)},
        {.key = "user_id", .s = n->user_id},
        {.key = "type", .s = notification_type_name(n->type)},
        {.key = "recipient_email", .s = n->recipient},
        {.key = "attempts", .kind = HD_LOG_INT, .i = n->attempts},
        {.key = rc < 0 ? "error" : NULL, .s = reason}, /* a NULL key is left out */
    };
    hd_log_fields(app->lg, level, n->correlation_id, msg, f, sizeof f / sizeof f[0]);
}

/* Send j's mail through w's sender and record the outcome on the aggregate. */
static void attempt(notif_worker *w, notif_job *j)
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
static void attempt_all(notif_worker *w, notif_job *jobs, size_t n, int64_t lease_until)
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

/* Write notif_job j's row; track its aggregate so its events reach the outbox at commit. */
static int save_job(notif_worker *w, hd_uow *uow, notif_job *j, const char *claim, hd_error *err)
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

static void count_outcomes(notif_worker *w, const notif_job *jobs, size_t n)
{
    const notif_metrics *m = &w->app->m;
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].outcome)
            continue;
        const char *type = notification_type_name(jobs[i].n.type);
        if (jobs[i].n.status == NOTIFY_SENT)
            notif_count(m->sent, type);
        else if (jobs[i].n.status == NOTIFY_FAILED)
            notif_count(m->failed, type);
        else
            notif_count(m->retries, type);
    }
}

static void save_outcomes(notif_worker *w, notif_job *jobs, size_t n, const char *claim)
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
void notif_deliver(notif_worker *w, notif_job *jobs, size_t n, const char *claim,
                   int64_t lease_until)
{
    size_t todo = 0;
    for (size_t i = 0; i < n; i++)
        todo += jobs[i].to_send != 0;
    if (todo == 0)
        return;
    attempt_all(w, jobs, n, lease_until);
    save_outcomes(w, jobs, n, claim);
}

/* ---- the sweeper ------------------------------------------------------------------------- */

/* Turn a claimed row into a job: move the notification, render the stored variables. */
static void job_from_claimed(notif_worker *w, notif_claimed *c, notif_job *j)
{
    j->n = c->n;
    memset(&c->n, 0, sizeof c->n); /* moved: the row list no longer owns it */
    j->live = 1;
    j->to_send = 1;
    hd_error err;
    json_t *vars = notif_stored_variables(w->app->registry, c->kind, c->variables, &err);
    if (vars == NULL)
        j->render_error = strdup(err.text);
    else if (hd_templates_render(w->app->templates, notification_type_name(j->n.type), vars,
                                 &j->mail, &err) < 0)
        j->render_error = strdup(err.text);
    json_decref(vars);
}

int notif_sweep(notif_worker *w, int64_t now_ms, size_t limit, hd_error *err)
{
    char claim[NOTIF_CLAIM_MAX];
    notif_new_claim(claim);
    int64_t now = now_ms > 0 ? now_ms : hd_time_now_ms();
    int64_t lease_until = now + w->app->s.lease_ms;
    notif_claimed *rows = NULL;
    size_t n = 0;
    int rc = notif_repo_claim_due(w->store, now, lease_until, claim, limit, &rows, &n, err);
    if (rc <= 0)
        return rc;
    notif_job *jobs = calloc(n, sizeof *jobs);
    if (jobs == NULL) {
        notif_claimed_free(rows, n);
        return hd_error_set(err, HD_ENOMEM, NULL); /* the rows come back after the lease */
    }
    for (size_t i = 0; i < n; i++)
        job_from_claimed(w, &rows[i], &jobs[i]);
    notif_claimed_free(rows, n);
    notif_deliver(w, jobs, n, claim, lease_until);
    for (size_t i = 0; i < n; i++)
        notif_job_release(&jobs[i]);
    free(jobs);
    return (int)n;
}
