"""scripts/plan_audit/statements.py — what the plan audit knows about herald's SQL: the path
each statement runs on, the values it is planned and timed with, and which tables grow.

Every SQL literal extract_sql.py finds in src/ must be either skipped by a NOT_PLANNED rule
or picked out by exactly one STATEMENTS entry; any other is reported "unlabelled" and fails
the run, so a new statement is labelled before it ships. An entry that picks out nothing is
"stale" and fails the run too (its statement changed or went).

Labels: hot      a request, message, event or per-record path of a running service
        periodic a timer: relay purge, sweeper, metrics scrape, readiness probe
        admin    herald-admin, an operator's command, a migration (once)
        test     only tests call it
A hot or periodic statement fails the run when its plan (no ANALYZE, as the services run)
has a SCAN of a GROWING table, unless through a BACKLOG_INDEXES index or an `allow`ed plan
line, or a TEMP B-TREE; or when it does more than STEPS_PER_ROW virtual-machine steps per
row it returns or changes (plus one), unless its `allow` has a (STEPS, why) entry."""

NOW = 1796400000000  # populate.sql's now (2026-12-04): fixed, so the runs compare
MIN, DAY = 60000, 86400000
LABELS = ('hot', 'periodic', 'admin', 'test')
GATED = ('hot', 'periodic')

# Tables whose rows grow with history or traffic: a scan of one costs more every week.
GROWING = {
    'hd_outbox': 'an event a row, kept HD_RELAY_RETENTION (a week) after dispatch',
    'hd_inbox': 'a consumed message a row, kept HD_INBOX_RETENTION (a week)',
    'users': 'a user a row',
    'user_tokens': 'a verification or reset a row, never deleted while the user lives',
    'messages': 'a chat message a row, never purged',
    'notifications': 'a notification a row, never purged',
    'notification_preferences': 'a user a row',
}
# Tables bounded by configuration, not traffic.
BOUNDED = {
    'hd_schema_migrations': 'a schema step a row',
    'hd_stream_offsets': 'a stream reader a row',
    'stream_projection': 'a (projection, event type) a row',
    'sqlite_sequence': 'a table a row',
}
# Partial indexes that hold the backlog, not the history: a scan of one is as long as the
# work waiting, which the relay or sweeper is there to keep short.
BACKLOG_INDEXES = {
    'hd_outbox_pending': 'rows not dispatched nor parked',
    'hd_outbox_parked': 'parked rows, until an operator redrives them',
    'notifications_due': "notifications still 'pending'",
}

# The work gate: SQLite virtual-machine steps per row returned or changed, plus one (so a
# lookup that finds nothing is not divided by zero). A statement that reaches its rows through
# an index does a few dozen steps a row, whatever the table's size; one that walks an index range
# and filters most of it away does steps in proportion to the rows it skips, which grow with
# history (GET /messages?sender= before 4422eb9: 11,677 at --quick, 116,677 at full size).
# 1,000 is 9x the largest case without a STEPS allow (the sweeper's claim, 112) and 12x under
# that old statement at --quick (README).
STEPS_PER_ROW = 1000
# An `allow` piece that is not a plan line: the statement's work grows with a backlog, which
# the relay or sweeper keeps short, not with history. The reason is required, as for a plan.
STEPS = 'steps/row'

# Tables whose migration is a static array in its file (no function to call): migrate.c is
# given the CREATE TABLE literal extracted from that file, so nothing is copied by hand.
SCHEMA_FROM_SOURCE = [('stream_projection', 'src/services/admin/stream.c')]

# (regex on one statement, why it is not planned). First match wins.
NOT_PLANNED = [
    (r'^(CREATE|ALTER|DROP)\b', 'schema (DDL): runs once, nothing to plan'),
    (r'^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b', 'transaction control'),
    (r'^PRAGMA\b', 'pragma'),
    (r'\bpg_\w+\(|FOR UPDATE|^(LISTEN|UNLISTEN|NOTIFY)\b', 'PostgreSQL only'),
    (r'^(INSERT|UPDATE|DELETE|LISTEN)$', 'a keyword alone: an HTTP method, a command tag, a prefix'),
    (r'^[^A-Z]', "prose after a ';' in a message"),
]


class Q(str):
    """A parameter value read from the audit database (a one-value SELECT) before the run:
    real keys, whatever the scale."""


def case(name, *params, tail=''):
    """One way a statement is run: its parameters ($1, $2, ...) and, for SQL the code
    completes at run time, the text appended to the literal."""
    return {'name': name, 'params': list(params), 'tail': tail}


def S(file, match, label, what, cases=None, allow=()):
    """An entry: `match` picks the statement out of the file's literals (a piece of its
    text, whitespace collapsed); `allow` lists (plan line piece or STEPS, why) accepted on a
    gated path."""
    assert label in LABELS, label
    assert all(piece and why for piece, why in allow), f'{match}: an allow entry needs a reason'
    return {'file': file, 'match': match, 'label': label, 'what': what,
            'cases': cases or [case('')], 'allow': list(allow)}


PENDING = 'SELECT seq FROM hd_outbox WHERE dispatched_at IS NULL AND parked_at IS NULL ORDER BY seq'


def seq_in(k, first):
    """update_seqs (outbox.c) appends " seq IN ($2, ..., $k+1)" to its literal."""
    tail = ' seq IN (' + ', '.join(f'${i + 2}' for i in range(k)) + ')'
    seqs = [Q(f'{PENDING} LIMIT 1 OFFSET {i}') for i in range(k)]
    return case(f'IN list of {k}', first, *seqs, tail=tail)


OB, IB, ST = 'src/herald/outbox.c', 'src/herald/inbox.c', 'src/herald/store.c'
NR, UR, UM = ('src/services/notifications/repository.c', 'src/services/users/repository.c',
              'src/services/users/messages.c')
USER_COLS = 'updated_at FROM users'  # the end of users/repository.c's column list
N_PENDING = "SELECT id FROM notifications WHERE status = 'pending' LIMIT 1"

STATEMENTS = [
    # ---- outbox
    S(OB, 'SELECT event_id FROM hd_outbox WHERE aggregate_type = $1', 'hot',
      'append: the aggregate chain (previous event)',
      [case('user aggregate', 'user', 'u00000042'), case('hot aggregate', 'room', 'lobby')]),
    S(OB, 'INSERT INTO hd_outbox', 'hot', 'append',
      [case('for a claim', 'e-new-1', 'user', 'u00000042', 'user.updated', 1, '{}', '{}', NOW, 0,
            None, 0),
       case('handed', 'e-new-2', 'user', 'u00000043', 'user.updated', 1, '{}', '{}', NOW, 0,
            'relay-1/handed-1', NOW + 30000)]),
    S(OB, 'SELECT 1 FROM hd_outbox INDEXED BY hd_outbox_pending_aggregate', 'hot',
      'append: is anything of the aggregate pending (before handing a row, SQLite)',
      [case('user aggregate', 'user', 'u00000042'), case('hot aggregate', 'room', 'lobby')]),
    S(OB, 'SET claimed_by = $1, claimed_until = $2 WHERE seq IN', 'hot', 'relay claim (SQLite)',
      [case('limit 500', 'relay-1', NOW + 30000, NOW, 500)]),
    S(OB, 'INDEXED BY hd_outbox_pending WHERE seq > $1', 'hot',
      'relay take handed rows (SQLite): the pending rows after the last seq taken',
      [case('limit 500, the last 50 rows', Q('SELECT MAX(seq) - 50 FROM hd_outbox'),
            'relay-1/handed-1', NOW + 15000, 500)],
      allow=[(STEPS, 'walks the pending rows after the last seq taken: the rows handed since '
                     'the last take and those waiting for a claim, a backlog the relay keeps '
                     'short, not the history')]),
    S(OB, 'UPDATE hd_outbox SET claimed_until = 0, claimed_by = NULL WHERE claimed_by = $1',
      'admin', 'relay stop: give the handed rows back (once per hd_relay_run)',
      [case('', 'relay-1/handed-1')]),
    S(OB, 'SELECT COALESCE(MAX(seq), 0) FROM hd_outbox', 'admin',
      'relay start: the last seq before offering a token (once per hd_relay_run)'),
    S(OB, 'UPDATE hd_outbox SET dispatched_at = $1', 'hot', 'relay mark_dispatched',
      [seq_in(1, NOW), seq_in(8, NOW), seq_in(64, NOW)]),
    S(OB, 'UPDATE hd_outbox SET claimed_until = $1, claimed_by = NULL', 'hot', 'relay release',
      [seq_in(1, 0), seq_in(64, 0)]),
    S(OB, 'UPDATE hd_outbox SET attempts = attempts + 1', 'hot', 'relay mark_failed',
      [case('', Q(f'{PENDING} LIMIT 1'), 'nack', NOW + 1000, 10, NOW)]),
    S(OB, 'SELECT 1 FROM hd_outbox WHERE dispatched_at IS NULL', 'hot', 'relay has_due (idle poll)',
      [case('', NOW)]),
    S(OB, 'DELETE FROM hd_outbox WHERE dispatched_at IS NOT NULL', 'periodic',
      'relay purge (every 60 s)', [case('retention 7 d', NOW - 7 * DAY)]),
    S(OB, 'DELETE FROM hd_outbox WHERE sensitive <> 0', 'periodic',
      'relay purge of sensitive rows (every 60 s)', [case('retention 15 min', NOW - 15 * MIN)]),
    S(OB, 'SELECT (SELECT COUNT(*) FROM hd_outbox', 'periodic',
      'outbox depth: metrics scrape, relay progress, drain',
      allow=[(STEPS, 'counts the pending and parked rows (the backlog indexes) into one row')]),
    S(OB, 'DELETE FROM hd_outbox WHERE seq IN', 'admin', 'herald-admin retention batch',
      [case('last batch', NOW - 7 * DAY, 500), case('backlog', NOW - DAY, 500)]),
    S(OB, 'AND ($2 = 0 OR seq = $2)', 'admin', 'herald-admin outbox redrive',
      [case('one', NOW, Q('SELECT MIN(seq) FROM hd_outbox WHERE parked_at IS NOT NULL')),
       case('all', NOW, 0)]),
    S(OB, 'SELECT type, COUNT(CASE', 'admin', 'herald-admin outbox status', [case('', NOW)]),
    S(OB, 'FROM hd_outbox WHERE parked_at IS NOT NULL AND type = COALESCE', 'admin',
      'herald-admin outbox parked', [case('any type', None, 100), case('a type', 'user.deleted', 100)]),
    S(OB, 'WHERE parked_at IS NOT NULL AND type = $2', 'admin', 'herald-admin redrive a type',
      [case('', NOW, 'user.deleted')]),
    # ---- inbox
    S(IB, 'INSERT INTO hd_inbox', 'hot', 'inbox accept', [case('', 'notifications', 'new-id', NOW)]),
    S(IB, 'SELECT 1 FROM hd_inbox', 'hot', 'inbox seen', [case('', 'notifications', 'x')]),
    S(IB, 'DELETE FROM hd_inbox WHERE received_at < $1', 'periodic', 'notifications sweeper inbox purge',
      [case('retention 7 d', NOW - 7 * DAY)]),
    S(IB, 'DELETE FROM hd_inbox WHERE (consumer, message_id) IN', 'admin',
      'herald-admin retention batch', [case('batch 500', NOW - 7 * DAY, 500)]),
    S(IB, 'SELECT consumer, COUNT(*)', 'admin', 'herald-admin inbox status (a known slow plan: README)'),
    # ---- store, stream (bounded tables)
    S(ST, 'SELECT COALESCE(MAX(version), 0)', 'admin', 'migrations (startup)', [case('', 'outbox')]),
    S(ST, 'SELECT 1 FROM hd_schema_migrations', 'admin', 'migrations (startup)', [case('', 'outbox', 1)]),
    S(ST, 'INSERT INTO hd_schema_migrations', 'admin', 'migrations (startup)', [case('', 'zz', 1, 'now')]),
    S('src/herald/stream.c', 'SELECT last_offset FROM hd_stream_offsets', 'hot', 'stream reader start',
      [case('', 'reader1', 'events')]),
    S('src/herald/stream.c', 'INSERT INTO hd_stream_offsets', 'hot', 'stream reader: each record',
      [case('', 'reader1', 'events', 999999, NOW)]),
    S('src/herald/stream.c', 'DELETE FROM hd_stream_offsets', 'admin', 'stream reader reset',
      [case('', 'reader1', 'events')]),
    S('src/services/admin/stream.c', 'INSERT INTO stream_projection', 'hot',
      'herald-admin stream projection: each record', [case('', 'counts', 'type1', 5)]),
    S('src/services/admin/stream.c', 'SELECT key, events, last_offset', 'admin', 'herald-admin stream show',
      [case('', 'counts')]),
    S('src/services/admin/stream.c', 'DELETE FROM stream_projection', 'admin', 'herald-admin stream reset',
      [case('', 'counts')]),
    S('src/services/admin/stream.c', 'FROM hd_stream_offsets ORDER BY', 'admin', 'herald-admin stream offsets'),
    # ---- notifications
    S(NR, "UPDATE notifications SET variables_kind = 'event'", 'admin',
      'schema step 2 data fix (once; a documented full scan)'),
    S(NR, 'version FROM notification_preferences WHERE user_id = $1', 'hot', 'preferences of a user (each event)',
      [case('', 'u00000042')]),
    S(NR, 'INSERT INTO notification_preferences', 'hot', 'preferences created',
      [case('', 'u-new', None, 1, 1, 1, 1, NOW, 1, NOW)]),
    S(NR, 'UPDATE notification_preferences', 'hot', 'preferences changed',
      [case('', 'u00000042', None, 1, 1, 1, 1, NOW, 2, 1)]),
    S(NR, 'INSERT INTO notifications', 'hot', 'notification created',
      [case('', 'n-new', 'u00000042', 'welcome', 'x@e', 's', 'pending', 0, None, NOW, NOW, None,
            'c', 'k', '{}', NOW, None, 1, 'variables')]),
    S(NR, 'UPDATE notifications SET status = $2', 'hot', 'notification sent or failed',
      [case('', Q(N_PENDING), 'sent', 1, None, NOW, NOW, None, 0, 2, '')]),
    S(NR, 'UPDATE notifications SET claim = $1', 'periodic', 'sweeper claim of due notifications',
      [case('limit 100', 'claim-x', NOW + MIN, NOW, 100)]),
    S(NR, 'FROM notifications WHERE id = $1', 'hot', 'GET a notification', [case('', Q(N_PENDING))]),
    S(NR, 'FROM notifications WHERE user_id = $1 ORDER BY', 'hot', 'a user\'s history, page 1',
      [case('heavy user', 'u00000001', 21), case('normal user', 'u00000042', 21)]),
    S(NR, 'FROM notifications WHERE user_id = $1 AND (created_at <', 'hot', 'a user\'s history, page N',
      [case('heavy user', 'u00000001',
            Q("SELECT created_at FROM notifications WHERE user_id = 'u00000001' ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 100"),
            Q("SELECT id FROM notifications WHERE user_id = 'u00000001' ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 100"), 21)]),
    S(NR, 'DELETE FROM notification_preferences', 'hot', 'user deleted: preferences', [case('', 'u00000042')]),
    S(NR, 'DELETE FROM notifications WHERE user_id', 'hot', 'user deleted: notifications',
      [case('normal user', 'u00000042'), case('heavy user', 'u00000001')]),
    S(NR, "SELECT COUNT(*) FROM notifications WHERE status = 'pending'", 'periodic',
      'pending count (metrics, readiness)',
      allow=[(STEPS, 'counts the pending rows (notifications_due) into one row')]),
    S('src/services/notifications/api.c', 'SELECT 1', 'periodic', 'readiness probe'),
    S('src/services/users/application.c', 'SELECT 1', 'periodic', 'readiness probe'),
    # ---- users: messages
    S(UM, 'INSERT INTO messages', 'hot', 'message received',
      [case('', 'm-new', 's00001', 'hi', '{}', None, NOW, NOW)]),
    S(UM, 'FROM messages WHERE id = $1', 'hot', 'GET a message', [case('', 'nope')]),
    S(UM, 'FROM messages WHERE sender = $4', 'hot', 'GET /messages?sender=',
      [case('rare sender, p1', -1, '', 21, 's00000'), case('unknown sender', -1, '', 21, 'nobody'),
       case('busy sender, p1', -1, '', 21, 's00001')]),
    S(UM, 'FROM messages WHERE (sent_at > $1', 'hot', 'GET /messages',
      [case('p1', -1, '', 21),
       case('mid cursor', Q('SELECT sent_at FROM messages ORDER BY sent_at, id LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM messages)'),
            Q('SELECT id FROM messages ORDER BY sent_at, id LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM messages)'), 21)]),
    S(UM, 'SELECT COUNT(*) FROM messages', 'test', 'messages_count (tests, no caller in src)'),
    # ---- users: accounts and tokens
    S(UR, 'INSERT INTO users', 'hot', 'register',
      [case('', 'u-new', 'new@example.com', 'n', 'h', 0, 1, NOW, NOW)]),
    S(UR, 'SELECT version FROM users WHERE id', 'hot', 'version of a user', [case('', 'u00000042')]),
    S(UR, 'UPDATE users SET', 'hot', 'user updated', [case('', 'n', 'h', 1, NOW, 3, 'u00000042', 3)]),
    S(UR, 'DELETE FROM users', 'hot', 'user deleted (cascades to user_tokens)', [case('', 'u00000042', 3)]),
    S(UR, f'{USER_COLS} WHERE id = $1', 'hot', 'GET a user', [case('', 'u00000042')]),
    S(UR, f'{USER_COLS} WHERE email = $1', 'hot', 'login, GET /users?email=',
      [case('', 'user42@example.com')]),
    S(UR, f'{USER_COLS} ORDER BY created_at, id LIMIT $1', 'hot', 'GET /users, page 1 (admin token)',
      [case('', 21)],
      allow=[('SCAN users USING INDEX users_created',
              'walks users_created in the ORDER BY order and stops after LIMIT rows')]),
    S(UR, f'{USER_COLS} WHERE created_at > $1', 'hot', 'GET /users, page N (admin token)',
      [case('page 2', Q('SELECT created_at FROM users ORDER BY created_at, id LIMIT 1 OFFSET 20'),
            Q('SELECT id FROM users ORDER BY created_at, id LIMIT 1 OFFSET 20'), 21),
       case('last pages', Q('SELECT created_at FROM users ORDER BY created_at, id LIMIT 1 OFFSET (SELECT COUNT(*) * 9 / 10 FROM users)'),
            Q('SELECT id FROM users ORDER BY created_at, id LIMIT 1 OFFSET (SELECT COUNT(*) * 9 / 10 FROM users)'), 21)]),
    S(UR, 'INSERT INTO user_tokens', 'hot', 'token issued',
      [case('', 'th-new', 'u00000042', 'reset', NOW, NOW + DAY)]),
    S(UR, 'FROM user_tokens WHERE token_hash = $1', 'hot', 'token looked up',
      [case('', Q('SELECT token_hash FROM user_tokens WHERE used_at IS NULL LIMIT 1'))]),
    S(UR, 'WHERE token_hash = $2 AND used_at IS NULL', 'hot', 'token used',
      [case('', NOW, Q('SELECT token_hash FROM user_tokens WHERE used_at IS NULL LIMIT 1'))]),
    S(UR, 'WHERE user_id = $2 AND purpose = $3', 'hot', 'a user\'s tokens used (password reset)',
      [case('', NOW, 'u00000042', 'reset')]),
]
