/* notifications/application.c — the app: settings, lifecycle, workers, migrations.
 *
 * application.h explains the flow and why; internal.h lists where each step lives.
 */
#include <stdlib.h>
#include <string.h>

#include "herald/clock.h"
#include "herald/dispatcher.h"
#include "herald/inbox.h"
#include "herald/outbox.h"

#include "internal.h"

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
    if (s->order_wait_ms == 0)
        s->order_wait_ms = NOTIF_ORDER_WAIT_DEFAULT;
    if (s->max_attempts < 1 || s->backoff_cap_ms < 0 || s->lease_ms < 100)
        return hd_error_set(err, HD_EINVAL,
                            "max_attempts >= 1, backoff_cap_ms >= 0 and lease_ms >= 100 needed");
    return 0;
}

/* 1 when s is an absolute http(s) URL with a host and then a '/': a prefix without the
 * slash ("https://app.example.com") would also admit "https://app.example.com.evil.test". */
static int link_base_valid(const char *s)
{
    const char *host = strncmp(s, "https://", 8) == 0  ? s + 8
                       : strncmp(s, "http://", 7) == 0 ? s + 7
                                                       : NULL;
    if (host == NULL || *host == '/' || strchr(host, '/') == NULL)
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

/* Split list into bases (up to NOTIF_LINK_BASES_MAX, trimmed, empty items skipped), which
 * point into *buf: a new copy of list, split in place (free it, also on failure). */
static int split_link_bases(const char *list, char **buf, const char **bases, size_t *n,
                            hd_error *err)
{
    *buf = NULL;
    *n = 0;
    if (list == NULL || *list == '\0')
        return 0;
    if ((*buf = strdup(list)) == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    char *save = NULL;
    for (char *item = strtok_r(*buf, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        size_t len = strlen(item);
        while (len > 0 && item[len - 1] == ' ')
            item[--len] = '\0';
        if (len == 0)
            continue;
        if (!link_base_valid(item))
            return hd_error_set(err, HD_EINVAL,
                                "link base URL '%.200s' is not http(s)://host/... (a path, "
                                "at least '/', must follow the host)",
                                item);
        if (*n == NOTIF_LINK_BASES_MAX)
            return hd_error_set(err, HD_EINVAL, "more than %d link base URLs",
                                NOTIF_LINK_BASES_MAX);
        bases[(*n)++] = item;
    }
    return 0;
}

int notif_link_bases_check(const char *list, hd_error *err)
{
    char *buf = NULL;
    const char *bases[NOTIF_LINK_BASES_MAX];
    size_t n = 0;
    int rc = split_link_bases(list, &buf, bases, &n, err);
    free(buf);
    return rc;
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
    if ((rc = split_link_bases(s->link_base_urls, &app->link_bases_buf, app->link_bases,
                               &app->n_link_bases, err)) < 0) {
        notif_app_free(app);
        return rc;
    }
    /* The settings keep the text as given (the buffer above is split in place). */
    if (s->link_base_urls != NULL && (app->link_bases_text = strdup(s->link_base_urls)) == NULL) {
        notif_app_free(app);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    app->s.link_base_urls = app->link_bases_text;
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
    free(app->link_bases_buf);
    free(app->link_bases_text);
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
    w->reads = NULL;
    w->wrote_lsn = w->min_lsn = 0;
    memset(w->deferred, 0, sizeof w->deferred);
    w->deferred_next = 0;
    hd_backoff_init(&w->backoff, app->s.backoff_base_ms, app->s.backoff_cap_ms,
                    (uint64_t)hd_clock_ns() ^ (uint64_t)(uintptr_t)w);
}
