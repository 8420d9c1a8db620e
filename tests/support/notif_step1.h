/* notif_step1.h — the notifications schema's step 2 (the stored form's kind column) on a
 * database of the previous version, the same check on any store: test_notifications_app.c
 * runs it on SQLite, test_notifications.c on PostgreSQL. Each test migrates between the two
 * calls with its own assertions.
 *
 * Include after the cmocka prelude (see hd_test.h): the helpers fail the test on an error.
 * Only tests that link the notifications service (hd_svc_notifications) may call them. */
#ifndef NOTIF_STEP1_H
#define NOTIF_STEP1_H

#include "herald/store.h"

/* On s (borrowed; the notifications schema at step 1), write three rows in step 1's form: a
 * pending row holding a users.user_registered event marked "event:" (name and link, both
 * borrowed, are the event's data), a pending row holding an API request's variables as JSON,
 * and a sent row without variables. Returns the event's bytes (new: free()). */
char *notif_step1_rows(hd_store *s, const char *name, const char *link);

/* After step 2 on s: the two pending rows are claimed, the event with kind 'event' and its
 * bytes (borrowed `event`) without the mark, the request with kind 'variables', and both give
 * back name and link; the sent row keeps kind 'variables' and no text; the column refuses a
 * kind it does not know. */
void notif_step1_rows_read_back(hd_store *s, const char *event, const char *name, const char *link);

#endif
