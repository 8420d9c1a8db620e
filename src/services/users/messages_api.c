/* users/messages_api.c — the HTTP routes of the messages feature; see messages_api.h. */
#include "messages_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct messages_http {
    messages_app *app;
    char *admin_token;
    hd_logger *logger;
};

json_t *messages_http_json(const message_view *v)
{
    char sent[HD_TIME_LEN + 1], received[HD_TIME_LEN + 1];
    hd_time_format(v->sent_at_ms, sent);
    hd_time_format(v->received_at_ms, received);
    json_t *metadata = json_loads(v->metadata, 0, NULL);
    return json_pack("{s:s, s:s, s:s, s:o, s:s?, s:s, s:s}", "id", v->id, "sender", v->sender,
                     "content", v->content, "metadata", metadata ? metadata : json_object(),
                     "correlation_id", *v->correlation_id ? v->correlation_id : NULL, "sent_at",
                     sent, "received_at", received);
}

static void add_field_error(json_t *errors, const char *field, const char *detail)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "detail", detail));
}

/* A required string member: 1 with *out and *len set, else 0 with an entry in errors. */
static int member_string(json_t *in, const char *name, const char **out, size_t *len,
                         json_t *errors)
{
    json_t *v = json_object_get(in, name);
    if (v == NULL || json_is_null(v)) {
        add_field_error(errors, name, "is required");
        return 0;
    }
    if (!json_is_string(v)) {
        add_field_error(errors, name, "must be a string");
        return 0;
    }
    *out = json_string_value(v);
    *len = json_string_length(v); /* the real length: the string may hold a NUL */
    return 1;
}

/* POST /messages {content, sender, metadata?} */
static void post_message(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    messages_http *h = ctx;
    if (hd_http_require_bearer(req, resp, h->admin_token) < 0)
        return;
    json_t *in = NULL;
    hd_error err;
    if (hd_http_request_json(req, &in, &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text); /* 400, 415 */
        return;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        hd_http_reply_problem(resp, 400, NULL, "the body must be a JSON object");
        return;
    }
    json_t *errors = json_array();
    const char *sender = NULL, *content = NULL;
    size_t sender_len = 0, content_len = 0;
    if (member_string(in, "sender", &sender, &sender_len, errors) &&
        message_sender_check(sender, sender_len, &err) < 0)
        add_field_error(errors, "sender", err.text);
    if (member_string(in, "content", &content, &content_len, errors) &&
        message_content_check(content, content_len, &err) < 0)
        add_field_error(errors, "content", err.text);
    json_t *metadata = json_object_get(in, "metadata");
    if (json_is_null(metadata))
        metadata = NULL;
    if (metadata != NULL && message_metadata_check(metadata, &err) < 0)
        add_field_error(errors, "metadata", err.text);
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v)
    {
        if (strcmp(k, "sender") != 0 && strcmp(k, "content") != 0 && strcmp(k, "metadata") != 0)
            add_field_error(errors, "(body)", "unknown member: only sender, content, metadata");
    }
    size_t n = json_array_size(errors);
    if (n > 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "%zu field%s invalid", n, n == 1 ? " is" : "s are");
        hd_http_reply_problem_json(resp, 422,
                                   json_pack("{s:s, s:s, s:o}", "title", "Invalid fields", "detail",
                                             detail, "errors", errors));
        json_decref(in);
        return;
    }
    json_decref(errors);
    const char *cid = hd_http_request_correlation_id(req);
    char id[HD_UUID_LEN + 1];
    int64_t sent_at = 0;
    int rc = messages_send(h->app, cid, sender, sender_len, content, content_len, metadata, id,
                           &sent_at, &err);
    json_decref(in);
    if (rc == HD_EVALIDATE) {
        hd_http_reply_problem(resp, 422, NULL, err.text);
        return;
    }
    if (rc < 0) {
        hd_http_reply_error(resp, rc, err.text); /* 5xx: details logged, not sent */
        return;
    }
    hd_log_info(h->logger, cid, "message accepted", "message_id", id, NULL);
    char location[16 + HD_UUID_LEN], sent[HD_TIME_LEN + 1];
    snprintf(location, sizeof location, "/messages/%s", id);
    hd_time_format(sent_at, sent);
    hd_http_response_set_header(resp, "Location", location);
    hd_http_reply_json(
        resp, 202, json_pack("{s:s, s:s, s:s}", "id", id, "status", "accepted", "sent_at", sent));
}

/* GET /messages?limit=&cursor=&sender= */
static void get_messages(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    messages_http *h = ctx;
    if (hd_http_require_bearer(req, resp, h->admin_token) < 0)
        return;
    hd_error err;
    int64_t limit;
    if (hd_http_request_query_int(req, "limit", MESSAGES_PAGE_DEFAULT, 1, MESSAGES_PAGE_MAX, &limit,
                                  &err) < 0) {
        hd_http_reply_error(resp, err.code, err.text);
        return;
    }
    const char *sender = hd_http_request_query(req, "sender");
    if (sender != NULL && message_sender_check(sender, strlen(sender), &err) < 0) {
        hd_http_reply_problemf(resp, 400, NULL, "query parameter 'sender': %s", err.text);
        return;
    }
    messages_page page;
    int rc = messages_list(h->app, sender, hd_http_request_query(req, "cursor"), (size_t)limit,
                           &page, &err);
    if (rc == HD_EINVAL) {
        hd_http_reply_problem(resp, 400, NULL,
                              "query parameter 'cursor': not a cursor from this API");
    } else if (rc < 0) {
        hd_http_reply_error(resp, rc, err.text);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < page.count; i++)
            json_array_append_new(arr, messages_http_json(&page.items[i]));
        hd_http_reply_json(
            resp, 200,
            json_pack("{s:o, s:o}", "items", arr, "next_cursor",
                      *page.next_cursor ? json_string(page.next_cursor) : json_null()));
    }
    messages_page_release(&page);
}

/* GET /messages/{id} */
static void get_message(hd_http_request *req, hd_http_response *resp, void *ctx)
{
    messages_http *h = ctx;
    if (hd_http_require_bearer(req, resp, h->admin_token) < 0)
        return;
    hd_error err;
    message_view *v = malloc(sizeof *v); /* 8 KiB: not on a server thread's stack */
    if (v == NULL) {
        hd_http_reply_error(resp, HD_ENOMEM, NULL);
        return;
    }
    int rc = messages_get(h->app, hd_http_request_param(req, "id"), v, &err);
    if (rc < 0)
        hd_http_reply_error(resp, rc, err.text); /* HD_ENOTFOUND: 404 */
    else
        hd_http_reply_json(resp, 200, messages_http_json(v));
    free(v);
}

int messages_http_new(hd_http_server *srv, messages_app *app, const char *admin_token,
                      hd_logger *logger, messages_http **out, hd_error *err)
{
    if (srv == NULL || app == NULL || out == NULL)
        return hd_error_set(err, HD_EINVAL, "messages_http_new: NULL argument");
    messages_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return hd_error_set(err, HD_ENOMEM, NULL);
    h->app = app;
    h->logger = logger;
    h->admin_token = strdup(admin_token ? admin_token : "");
    if (h->admin_token == NULL) {
        free(h);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    const struct {
        const char *method, *pattern;
        hd_http_handler fn;
    } routes[] = {
        {"POST", "/messages", post_message},
        {"GET", "/messages", get_messages},
        {"GET", "/messages/{id}", get_message},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = hd_http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, h);
        if (rc < 0) {
            messages_http_free(h);
            return hd_error_set(err, rc, "cannot route %s %s", routes[i].method, routes[i].pattern);
        }
    }
    *out = h;
    return 0;
}

void messages_http_free(messages_http *h)
{
    if (h == NULL)
        return;
    free(h->admin_token);
    free(h);
}
