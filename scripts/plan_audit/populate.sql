-- scripts/plan_audit/populate.sql — production-shaped data for the plan audit.
--     sqlite3 DB '.parameter set @scale 1' '.read populate.sql'     (10: a tenth of the rows)
-- Row counts are divided by @scale; time spans stay the same. NOW = 1796400000000 (ms) is fixed
-- so runs compare (statements.py uses it too). The outbox and the inbox are in the steady state
-- of their purges (a week of rows and one minute more: a purge tick deletes about a minute's
-- worth); users, tokens, messages and notifications are 30 days of history, never purged.
-- No ANALYZE: the services never run it, so the planner has no statistics.
PRAGMA foreign_keys = ON;
BEGIN;
CREATE TEMP TABLE n (i INTEGER PRIMARY KEY);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000 / @scale)
INSERT INTO n SELECT i FROM c;

-- users: 10,000 over 30 days; token rows: 3 a user (verify + 2 resets), nearly all used
INSERT INTO users SELECT printf('u%08d', i), printf('user%d@example.com', i), 'User ' || i, 'argon2id$...',
  i % 3 <> 0, 1 + i % 5, 1796400000000 - 2592000000 + i * 259200 * @scale, 1796400000000 - (i % 1000) * 1000
  FROM n WHERE i <= 10000 / @scale;
INSERT INTO user_tokens SELECT lower(hex(randomblob(32))), printf('u%08d', 1 + (i - 1) % (10000 / @scale)),
  CASE WHEN i <= 10000 / @scale THEN 'verify' ELSE 'reset' END, 1796400000000 - 2592000000 + i * 86400 * @scale,
  1796400000000 - 2592000000 + i * 86400 * @scale + 86400000, CASE WHEN i % 20 = 0 THEN NULL ELSE 1796400000000 - 1000 END
  FROM n WHERE i <= 30000 / @scale;

-- outbox: 50,000 dispatched over the last 7 days + 1 minute (10% one hot aggregate room/lobby,
-- 30% message aggregates, 60% user aggregates); sensitive ones only in the last 15 min + 1 minute
-- (older ones were purged); then 1,000 pending (10% of the hot aggregate, 2% in back-off), 50 parked.
INSERT INTO hd_outbox (event_id, aggregate_type, aggregate_id, type, version, payload, headers, created_at,
  next_attempt_at, attempts, dispatched_at, sensitive)
SELECT lower(hex(randomblob(16))),
  CASE WHEN i % 10 = 0 THEN 'room' WHEN i % 10 IN (1, 2, 3) THEN 'message' ELSE 'user' END,
  CASE WHEN i % 10 = 0 THEN 'lobby' WHEN i % 10 IN (1, 2, 3) THEN lower(hex(randomblob(16)))
       ELSE printf('u%08d', 1 + i % (10000 / @scale)) END,
  CASE WHEN i % 10 = 0 THEN 'room.posted' WHEN i % 10 IN (1, 2, 3) THEN 'message.sent'
       WHEN i % 4 = 0 THEN 'user.registered' ELSE 'user.updated' END,
  1, printf('{"specversion":"1.0","data":{"n":%d,"pad":"%s"}}', i, hex(zeroblob(100))), '{}',
  d - 50, d - 50, 1, d, i % 20 = 0 AND d > 1796400000000 - 960000
FROM (SELECT i, 1796400000000 - 604860000 + i * (604860000 / (50000 / @scale)) AS d FROM n WHERE i <= 50000 / @scale);
INSERT INTO hd_outbox (event_id, aggregate_type, aggregate_id, type, version, payload, headers, created_at,
  next_attempt_at, attempts, last_error, sensitive)
SELECT lower(hex(randomblob(16))), CASE WHEN i % 10 = 0 THEN 'room' ELSE 'user' END,
  CASE WHEN i % 10 = 0 THEN 'lobby' ELSE printf('u%08d', 1 + (i * 7) % (10000 / @scale)) END,
  'user.updated', 1, '{"pending":true}', '{}', 1796400000000 - 60000 + i * 60,
  CASE WHEN i % 50 = 0 THEN 1796400000000 + 30000 ELSE 1796400000000 - 60000 + i * 60 END,
  CASE WHEN i % 50 = 0 THEN 2 ELSE 0 END, CASE WHEN i % 50 = 0 THEN 'broker nack' END, 0
FROM n WHERE i <= 1000 / @scale;
INSERT INTO hd_outbox (event_id, aggregate_type, aggregate_id, type, version, payload, headers, created_at,
  next_attempt_at, attempts, last_error, parked_at)
SELECT lower(hex(randomblob(16))), 'user', printf('p%05d', i), 'user.deleted', 1, '{}', '{}',
  1796400000000 - 3600000, 1796400000000, 10, 'unroutable', 1796400000000 - 1000 FROM n WHERE i <= 50;

-- inbox: 100,000 ids over the last 7 days + 1 minute, 3 consumers
INSERT INTO hd_inbox SELECT CASE i % 3 WHEN 0 THEN 'notifications' WHEN 1 THEN 'users.messages' ELSE 'chat' END,
  lower(hex(randomblob(16))), 1796400000000 - 604860000 + i * (604860000 / (100000 / @scale)) FROM n;

-- messages: 100,000 over 30 days from 200 senders; s00000 sent only 5, early on
INSERT INTO messages SELECT lower(hex(randomblob(16))),
  CASE WHEN i IN (10, 20, 30, 40, 50) THEN 's00000' ELSE printf('s%05d', 1 + i % 199) END,
  'hello ' || i, '{}', NULL, 1796400000000 - 2592000000 + i * 25920 * @scale,
  1796400000000 - 2592000000 + i * 25920 * @scale + 5
  FROM n;

-- notifications: 50,000 over 30 days; the last 100 pending (60 due, 40 in back-off), 1 in 1,000
-- failed, the rest sent; u00000001 has one in 25 (2,000). Preferences: one a user.
INSERT INTO notifications (id, user_id, type, recipient, subject, status, attempts, last_error, created_at,
  updated_at, sent_at, correlation_id, cause_id, variables, due_at, claim, version, variables_kind)
SELECT lower(hex(randomblob(16))),
  CASE WHEN i % 25 = 0 THEN 'u00000001' ELSE printf('u%08d', 1 + i % (10000 / @scale)) END,
  'welcome', 'x@example.com', 'Welcome',
  CASE WHEN i > m - 100 THEN 'pending' WHEN i % 1000 = 0 THEN 'failed' ELSE 'sent' END,
  1, NULL, c, c + 100, CASE WHEN i > m - 100 OR i % 1000 = 0 THEN NULL ELSE c + 100 END,
  lower(hex(randomblob(16))), lower(hex(randomblob(16))),
  CASE WHEN i > m - 100 THEN '{"name":"x"}' END,
  CASE WHEN i > m - 40 THEN 1796400000000 + 60000 WHEN i > m - 100 THEN 1796400000000 - 1000 END,
  NULL, 1, 'variables'
FROM (SELECT i, 50000 / @scale AS m, 1796400000000 - 2592000000 + i * 51840 * @scale AS c FROM n WHERE i <= 50000 / @scale);
INSERT INTO notification_preferences SELECT printf('u%08d', i), NULL, 1, 1, 1, 1, 1796400000000, 1796400000000, 1
  FROM n WHERE i <= 10000 / @scale;

INSERT INTO hd_stream_offsets SELECT 'reader' || i, 'events', i * 1000, 1796400000000 FROM n WHERE i <= 10;
INSERT INTO stream_projection SELECT 'counts', 'type' || i, i, i FROM n WHERE i <= 100;
COMMIT;
