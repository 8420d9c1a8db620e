/* herald/outbox_internal.h — for outbox.c and its tests only.
 *
 * Applications include outbox.h. The claim is one statement whose speed depends on the index
 * its per-aggregate probe reads (outbox.c, CLAIM_SQL); a test reads the plan SQLite makes of
 * it (EXPLAIN QUERY PLAN), so the text is reachable here.
 */
#ifndef HERALD_OUTBOX_INTERNAL_H
#define HERALD_OUTBOX_INTERNAL_H

/* The claim's statement for SQLite (pg 0) or PostgreSQL (pg 1): static text (borrowed, never
 * freed). Parameters: $1 relay id, $2 lease end (ms), $3 now (ms), $4 limit. */
const char *hd_outbox_claim_sql(int pg);

#endif
