/* notifications/internal.h — what the files of the application layer share.
 *
 * application.h is the layer as api.c and runtime.c see it. Behind it, one file per job:
 *
 *   application.c  the app: settings, lifecycle, workers, migrations
 *   metrics.c      the service's metric families, and counting
 *   ingest.c       step 1: a users event (or a window of them), or an API request, becomes
 *                  a recorded notification: inbox, preferences, rendering, the pending row
 *   delivery.c     steps 2 and 3: send, record the outcome; and the sweeper
 *   queries.c      the API's reads (one notification, a history page) and preferences
 *
 * This header is what those files need from each other: the app's insides, the job that
 * carries a notification through the steps, the window of deliveries of step 1. The unit
 * tests include it too, to stop a window between the steps (a crash, a lost lease).
 * Nothing outside the application layer includes it.
 */
#ifndef NOTIFICATIONS_INTERNAL_H
#define NOTIFICATIONS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "herald/delivery.h"
#include "herald/dispatcher.h"
#include "herald/envelope.h"
#include "herald/metrics.h"
#include "herald/template.h"

#include "application.h"
#include "integration.h"
#include "repository.h"

/* ---- reads that may be stale (queries.c) --------------------------------------------------- */

/* After a commit of w's for user_id (borrowed): read-your-writes (replica.h). Does nothing
 * without w->reads; a failure only keeps the user's reads on the primary a little longer. */
void notif_wrote(notif_worker *w, const char *user_id);

/* ---- the app (application.c) ------------------------------------------------------------ */

/* Read-only once shared between threads: they read it without a lock (application.h). */
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
    char *link_bases_text;                        /* a copy of s.link_base_urls, as given */
    char *link_bases_buf;                         /* a copy of s.link_base_urls, split in place */
    const char *link_bases[NOTIF_LINK_BASES_MAX]; /* into link_bases_buf */
    size_t n_link_bases;
};

/* ---- metrics.c -------------------------------------------------------------------------- */

/* Count one under label (NULL for none) in c (borrowed; NULL: metrics are off). */
void notif_count(hd_counter *c, const char *label);

/* ---- one notification on its way (delivery.c) ---------------------------------------------
 * A job carries a notification from "recorded" to "outcome recorded": the aggregate, the
 * rendered mail, and what happened to it. The consumer and the sweeper both use it. */
typedef struct notif_job {
    notification n;
    int live;           /* n holds a notification (release it) */
    hd_rendered *mail;  /* owned; NULL when not rendered */
    char *render_error; /* owned; why mail is NULL, for a claimed row (rare: kept off the
                           struct, which a window holds hundreds of) */
    int to_send;        /* pending: send it now */
    int outcome;        /* an attempt was made (or refused): write it */
    int release;        /* not attempted (the lease ran short): hand the row back */
    int64_t due;        /* the next attempt, when still pending */
} notif_job;

/* Release what j holds and zero it (a zeroed job is empty: releasing it does nothing). */
void notif_job_release(notif_job *j);

/* A claim token unique to this call into out: the lease belongs to whoever holds it. */
void notif_new_claim(char out[NOTIF_CLAIM_MAX]);

/* Steps 2 and 3 for the n jobs (borrowed) claimed with claim until lease_until: send each
 * job that waits for it (only in the first half of the lease; the rest are handed back for
 * the sweeper), then record every outcome in one transaction. Failures are logged; rows
 * whose outcome could not be recorded stay pending under claim and are sent again after
 * the lease. */
void notif_deliver(notif_worker *w, notif_job *jobs, size_t n, const char *claim,
                   int64_t lease_until);

/* ---- step 1 (ingest.c) ------------------------------------------------------------------ */

/* One window of deliveries on its way through the three steps. The arrays are parallel,
 * n long, and live on the heap (a window holds up to a prefetch of messages). */
typedef struct notif_window {
    notif_worker *w;
    size_t n;
    int single; /* handed over alone: failures get a verdict of their own */
    const hd_delivery *const *ds;
    const hd_envelope **envs; /* decoded envelopes (borrowed from ds or owned below) */
    hd_envelope **owned;      /* the ones decoded here */
    const char **ids;         /* the envelopes' ids, for the inbox */
    unsigned char *fresh;     /* 1 = new, 0 = duplicate */
    notif_job *jobs;
    char claim[NOTIF_CLAIM_MAX];
    int64_t now;
    int64_t lease_until;
    size_t lo, hi; /* the segment being recorded (ingest.c: a gap splits a window) */
    size_t gap;    /* 1 + the index of an event whose predecessor is not processed yet (0: none) */
    int no_order;  /* 1: apply without the order check (the wait was given up) */
} notif_window;

/* Set win up for the n deliveries ds (borrowed, must outlive win) handled by w: claim and
 * lease taken now. single: they were handed over one by one, so failures get a verdict of
 * their own. Returns 0 or HD_ENOMEM; release win with notif_window_release either way. */
int notif_window_init(notif_window *win, notif_worker *w, const hd_delivery *const *ds, size_t n,
                      int single);

/* Decode (or check) every delivery's envelope. OK, or the verdict for the first failure. */
hd_consume_result notif_window_decode(notif_window *win);

/* Step 1 for the whole window in one transaction: the inbox, then a pending notification
 * (or a skipped one, or an erasure) for every fresh event. OK, or the verdict. */
hd_consume_result notif_window_record(notif_window *win);

void notif_window_release(notif_window *win);

#endif /* NOTIFICATIONS_INTERNAL_H */
