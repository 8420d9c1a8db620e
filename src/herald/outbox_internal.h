/* herald/outbox_internal.h — for outbox.c and its tests only.
 *
 * Applications include outbox.h. The speed of the claim and of the retention purges depends
 * on the index each reads (outbox.c: CLAIM_SQL, OUTBOX_STEP_PURGE); a test reads the plan
 * SQLite makes of each (EXPLAIN QUERY PLAN), so their text is reachable here.
 */
#ifndef HERALD_OUTBOX_INTERNAL_H
#define HERALD_OUTBOX_INTERNAL_H

typedef enum hd_outbox_stmt {
    HD_OUTBOX_SQL_CLAIM,           /* $1 relay id, $2 lease end (ms), $3 now (ms), $4 limit */
    HD_OUTBOX_SQL_PURGE,           /* $1 dispatched before (ms) */
    HD_OUTBOX_SQL_PURGE_SENSITIVE, /* $1 dispatched before (ms) */
    HD_OUTBOX_SQL_PURGE_BATCH,     /* $1 dispatched before (ms), $2 limit */
} hd_outbox_stmt;

/* The statement for SQLite (pg 0) or PostgreSQL (pg 1): static text (borrowed, never freed),
 * NULL for an unknown one. */
const char *hd_outbox_sql(hd_outbox_stmt which, int pg);

#endif
