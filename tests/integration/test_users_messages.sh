#!/usr/bin/env bash
# integration.users_messages — the messages feature of herald-users over HTTP, with the real
# broker: POST /messages -> outbox -> in-process relay -> exchange "messages" -> queue
# users.messages -> consumer -> inbox + messages table -> GET /messages.
#
#   test_users_messages.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Needs HD_AMQP_URL and HD_PG_URL (scripts/servers.sh): a missing server is a FAILURE. In order:
#   1. SQLite: a message goes the whole way and is read back (by id, in the list, by sender);
#   2. hostile input: 400 / 401 / 413 / 415 / 422 with problem+json, nothing stored;
#   3. keyset pages of one sender, in send order, no repeats;
#   4. a duplicate delivery (the relay republishes the same event): still one row;
#   5. the running server against docs/openapi/messages.yaml;
#   6. PostgreSQL: the same flow on HD_PG_URL (the SQL is proven on both stores).
set -uo pipefail

SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
BIN=$BUILD/herald-users
OPENAPI=$SRC/docs/openapi/messages.yaml
TMP=$(mktemp -d "${TMPDIR:-/tmp}/herald-users-messages-XXXXXX")
ADMIN=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
RUN=$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n') # senders unique to this run (PG persists)
PID=

cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

# ok, bad, check, step, need_env; call, expect, jget, header (scripts/lib/http_test.sh)
# shellcheck source=scripts/lib/http_test.sh
. "$SRC/scripts/lib/http_test.sh"

need_env HD_AMQP_URL HD_PG_URL
[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }

auth=(-H "Authorization: Bearer $ADMIN")
# start_server DATABASE_URL
start_server() {
  : >"$TMP/server.log"
  (cd "$TMP" && exec env HD_USERS_LISTEN=127.0.0.1:0 HD_DATABASE_URL="$1" \
     HD_AMQP_URL="$HD_AMQP_URL" HD_USERS_ADMIN_TOKEN="$ADMIN" HD_USERS_RATE_CLIENT=1000/s \
     HD_LOG_LEVEL=debug "$BIN" 2>>"$TMP/server.log") &
  PID=$!
  local port= i
  for i in $(seq 1 150); do
    port=$(grep -o '"message":"listening".*"port":"[0-9]*"' "$TMP/server.log" | grep -o '[0-9]*"$' | tr -d '"')
    [ -n "$port" ] && grep -q '"messages consumer: running"' "$TMP/server.log" && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ] || ! grep -q '"messages consumer: running"' "$TMP/server.log"; then
    echo "FAIL: herald-users did not start with its messages consumer:"; cat "$TMP/server.log"; exit 1
  fi
  BASE=http://127.0.0.1:$port
}
stop_server() {
  kill -TERM "$PID"; wait "$PID"; STOP_RC=$?; PID=
  check "exit status 0 after SIGTERM (got $STOP_RC)" test "$STOP_RC" = 0
}
# wait_for PATH: poll GET PATH until 200 (10 s)
wait_for() {
  local i
  for i in $(seq 1 100); do
    call GET "$1" - "${auth[@]}"
    [ "$STATUS" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# the whole way, once: send, wait until delivered, read back
flow() {
  local sender="ada-$RUN-$1"
  call POST /messages "{\"content\":\"Grüße — hello\",\"sender\":\"$sender\",\"metadata\":{\"priority\":\"high\",\"n\":[1,2]}}" "${auth[@]}" -H 'X-Correlation-Id: msg-test-cid-1'
  expect 202
  ID=$(jget "d['id']")
  check "Location is /messages/{id}" test "$(header Location)" = "/messages/$ID"
  check "status accepted" test "$(jget "d['status']")" = accepted
  check "message $ID delivered and stored within 10 s" wait_for "/messages/$ID"
  check "content read back" test "$(jget "d['content']")" = "Grüße — hello"
  check "sender read back" test "$(jget "d['sender']")" = "$sender"
  check "metadata read back" test "$(jget "json.dumps(d['metadata'], sort_keys=True)")" = '{"n": [1, 2], "priority": "high"}'
  check "correlation id carried by the event" test "$(jget "d['correlation_id']")" = msg-test-cid-1
  call GET "/messages?sender=$sender" - "${auth[@]}"
  expect 200
  check "GET ?sender= finds it" test "$(jget "len(d['items'])") $(jget "d['items'][0]['id']")" = "1 $ID"
}

# ---- 1. SQLite ------------------------------------------------------------------------------
step "SQLite: POST -> outbox -> relay -> queue -> inbox -> GET"
DB="$TMP/users.db"
start_server "sqlite://$DB"
flow sqlite

# ---- 2. hostile input --------------------------------------------------------------------------
step "hostile input"
call POST /messages '{"content":"x","sender":"a"}'
expect 401 problem
call POST /messages '{"content":"x","sender":"a"}' -H 'Authorization: Bearer wrong-token-wrong-token-wrong-token'
expect 401 problem
call GET /messages
expect 401 problem
call GET "/messages/$ID"
expect 401 problem
call POST /messages '{"content":"x",' "${auth[@]}"
expect 400 problem
call POST /messages '[1,2]' "${auth[@]}"
expect 400 problem
printf '{"content":"\xff\xfe","sender":"a"}' >"$TMP/bad-utf8.json"
call POST /messages "@$TMP/bad-utf8.json" "${auth[@]}"
expect 400 problem
call POST /messages - "${auth[@]}" -H 'Content-Type: text/plain' --data-binary '{"content":"x","sender":"a"}'
expect 415 problem
head -c 20000 /dev/zero | tr '\0' 'x' | sed 's/^/{"content":"/; s/$/","sender":"a"}/' >"$TMP/big.json"
call POST /messages "@$TMP/big.json" "${auth[@]}"
expect 413 problem
python3 -c "import json; print(json.dumps({'content':'x'*4097,'sender':'a'}))" >"$TMP/long.json"
call POST /messages "@$TMP/long.json" "${auth[@]}"
expect 422 problem
check "422 names content" test "$(jget "[e['field'] for e in d['errors']]")" = "['content']"
call POST /messages '{"content":"x","sender":"a\u0000b"}' "${auth[@]}"
expect 400 problem # jansson refuses a NUL in a string (and messages_send would: unit test)
call POST /messages '{"content":"","sender":"a\u0001b","metadata":[1],"extra":1}' "${auth[@]}"
expect 422 problem
check "422 lists every invalid field" test "$(jget "sorted(e['field'] for e in d['errors'])")" = "['(body)', 'content', 'metadata', 'sender']"
call POST /messages '{"content":"x","sender":"a","metadata":"text"}' "${auth[@]}"
expect 422 problem
call POST /messages '{"content":1,"sender":null}' "${auth[@]}"
expect 422 problem
python3 -c "
import json
m = {}; c = m
for i in range(9): c['n'] = {}; c = c['n']
print(json.dumps({'content':'x','sender':'a','metadata':m}))" >"$TMP/deep.json"
call POST /messages "@$TMP/deep.json" "${auth[@]}"
expect 422 problem
call GET '/messages?limit=0' - "${auth[@]}"
expect 400 problem
call GET '/messages?limit=101' - "${auth[@]}"
expect 400 problem
call GET '/messages?cursor=bm90LWEtY3Vyc29y' - "${auth[@]}"
expect 400 problem
call GET '/messages?sender=%FF' - "${auth[@]}"
expect 400 problem
call GET '/messages?sender=a%01' - "${auth[@]}"
expect 400 problem
call GET /messages/not-a-uuid - "${auth[@]}"
expect 404 problem
call GET /messages/00000000-0000-4000-8000-000000000000 - "${auth[@]}"
expect 404 problem
check "nothing hostile was stored (1 message)" test "$(sqlite3 "$DB" 'SELECT COUNT(*) FROM messages')" = 1
check "nothing hostile reached the outbox (1 row)" test "$(sqlite3 "$DB" "SELECT COUNT(*) FROM hd_outbox WHERE type = 'messages.message_sent'")" = 1

# ---- 3. pages -----------------------------------------------------------------------------------
step "keyset pages of one sender"
sender="pager-$RUN"
sent=()
for i in 1 2 3 4 5; do
  call POST /messages "{\"content\":\"m$i\",\"sender\":\"$sender\"}" "${auth[@]}"
  expect 202
  sent+=("$(jget "d['id']")")
done
check "the last one delivered" wait_for "/messages/${sent[4]}"
got=() cursor= pages=0
while :; do
  call GET "/messages?sender=$sender&limit=2${cursor:+&cursor=$cursor}" - "${auth[@]}"
  expect 200
  pages=$((pages + 1))
  for id in $(jget "' '.join(i['id'] for i in d['items'])"); do got+=("$id"); done
  cursor=$(jget "d['next_cursor'] or ''")
  [ -z "$cursor" ] && break
  [ $pages -gt 5 ] && break
done
check "3 pages of 2, 2, 1" test "$pages" = 3
check "every message once, in send order" test "${got[*]}" = "${sent[*]}"
call GET '/messages?limit=100' - "${auth[@]}"
check "the full list holds all 6" test "$(jget "len(d['items'])")" = 6

# ---- 4. a duplicate delivery ------------------------------------------------------------------------
step "the relay publishes the same event again: one row, one inbox entry"
sqlite3 "$DB" "UPDATE hd_outbox SET dispatched_at = NULL, next_attempt_at = 0, claimed_by = NULL, claimed_until = 0 WHERE event_id = '$ID'"
republished=0
for i in $(seq 1 100); do
  [ "$(sqlite3 "$DB" "SELECT dispatched_at IS NOT NULL FROM hd_outbox WHERE event_id = '$ID'")" = 1 ] && { republished=1; break; }
  sleep 0.1
done
check "the event was published a second time" test "$republished" = 1
sleep 1 # the consumer's turn
check "still one row for $ID" test "$(sqlite3 "$DB" "SELECT COUNT(*) FROM messages WHERE id = '$ID'")" = 1
check "one inbox entry for $ID" test "$(sqlite3 "$DB" "SELECT COUNT(*) FROM hd_inbox WHERE message_id = '$ID'")" = 1

# ---- 5. OpenAPI -------------------------------------------------------------------------------------
step "the server against docs/openapi/messages.yaml"
if python3 "$SRC/scripts/lib/openapi_check.py" "$OPENAPI" "$BASE" "$ADMIN" --methods get,post \
  --unauthenticated all >"$TMP/openapi.log" 2>&1
then ok; else bad "server does not match the OpenAPI document"; fi
cat "$TMP/openapi.log"
stop_server

# ---- 6. PostgreSQL ----------------------------------------------------------------------------------
step "PostgreSQL: the same flow"
start_server "$HD_PG_URL"
flow pg
stop_server

printf '\n%d checks passed, %d failed\n' "$pass" "$failed"
[ "$failed" = 0 ]
