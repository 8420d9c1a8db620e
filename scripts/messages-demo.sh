#!/usr/bin/env bash
# messages-demo.sh BUILD_DIR — what `make messages-demo` runs once the servers are up.
#
# The messages API of herald-users (docs/services/messages.md) and the RabbitMQ stream beside
# its queue (herald-admin stream, docs/services/admin.md; tutorial chapter 21):
#   1. a database of its own on HD_PG_URL and a stream bound to the exchange "messages";
#   2. herald-users on that database with HD_AMQP_URL and an admin token made for the run;
#   3. POST /messages (one with metadata, one hostile: its 4xx problem+json), then, once the
#      consumer stored them (polled), GET /messages, ?sender= and /messages/{id};
#   4. herald-admin stream follow into a projection, the stored offsets, stream replay from
#      offset 0 into a fresh projection, and the two compared.
# Everything is named after the run (database, stream, senders): two runs never collide. On
# exit the service is stopped, the database dropped and the stream deleted (HD_SERVERS_CTL).
# tests/integration/test_messages_demo.sh runs it and checks its output.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: scripts/messages-demo.sh [BUILD_DIR]     (default build/dev)

The messages API (POST/GET /messages of herald-users) and a RabbitMQ stream of the same
events read into projections (herald-admin stream declare|follow|offsets|replay|show).
Needs HD_AMQP_URL and HD_PG_URL: run it as 'make messages-demo', or
  scripts/servers.sh run -- scripts/messages-demo.sh build/dev
EOF
}
case ${1:-} in -h | --help) usage; exit 0 ;; esac
BUILD=${1:-build/dev}

die() { echo "messages-demo: $*" >&2; exit 1; }
for v in HD_AMQP_URL HD_PG_URL; do
  [ -n "${!v:-}" ] || die "$v is not set. Run it as 'make messages-demo', or:
      scripts/servers.sh run -- scripts/messages-demo.sh $BUILD"
done
for tool in curl python3 psql; do
  command -v $tool >/dev/null || die "$tool is not installed (make deps)"
done
for b in herald-users herald-admin; do
  [ -x "$BUILD/$b" ] || die "no $BUILD/$b (make build)"
done
BIN=$(cd "$BUILD" && pwd)
psql "$HD_PG_URL" -XAtqc 'SELECT 1' >/dev/null 2>&1 ||
  die "PostgreSQL at HD_PG_URL does not answer (scripts/servers.sh up?)"

RUN=$(date +%H%M%S)$(od -An -tx1 -N3 /dev/urandom | tr -d ' \n')
DB=herald_demo_$RUN
STREAM=messages.demo-$RUN
TOKEN=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') # never printed in full
base=${HD_PG_URL%%\?*}
DB_URL=${base%/*}/$DB${HD_PG_URL#"$base"}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/herald-messages-demo.XXXXXX")
PID='' DB_MADE='' STREAM_MADE=''

cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  if [ -n "$STREAM_MADE" ]; then
    if [ -n "${HD_SERVERS_CTL:-}" ]; then
      "$HD_SERVERS_CTL" rabbitmqctl -q delete_queue "$STREAM" >/dev/null 2>&1 ||
        echo "messages-demo: could not delete stream $STREAM" >&2
    else
      echo "messages-demo: stream $STREAM left on the broker (delete it: rabbitmqctl delete_queue $STREAM)" >&2
    fi
  fi
  [ -n "$DB_MADE" ] && psql "$HD_PG_URL" -XAtqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT # so that the EXIT trap runs

admin() { HD_DATABASE_URL=$DB_URL "$BIN/herald-admin" "$@" 2>>"$TMP/admin.log"; }
indent() { sed 's/^/   /'; }
fail() {
  echo "messages-demo: $*" >&2
  for f in users.log admin.log; do
    [ -s "$TMP/$f" ] && { echo "--- $f (last 20 lines)" >&2; tail -n 20 "$TMP/$f" >&2; }
  done
  exit 1
}
# call METHOD PATH [BODY]: STATUS and CTYPE set, the body in $TMP/body
call() {
  local args=(-s -m 10 -o "$TMP/body" -D "$TMP/headers" -X "$1" "$BASE$2"
              -H "Authorization: Bearer $TOKEN")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  STATUS=$(curl "${args[@]}" -w '%{http_code}')
  CTYPE=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^[Cc]ontent-[Tt]ype: //p' | tail -n 1)
}
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$TMP/body"; }
# the items of a list, one line each
items() {
  jget "'\n'.join('%s  %-22s %-34s metadata %s' % (i['id'][:8], i['sender'], json.dumps(i['content']),
        json.dumps(i['metadata'], sort_keys=True)) for i in d['items'])"
}

# The broker without its credentials: a password never reaches a terminal or a log.
BROKER=$(printf '%s' "$HD_AMQP_URL" | sed -E 's#//[^/]*@#//#g')
echo "== messages demo $RUN: broker $BROKER, binaries from $BUILD"
psql "$HD_PG_URL" -XAtqc "CREATE DATABASE $DB" >/dev/null || fail "cannot create database $DB"
DB_MADE=1
echo "   database $DB (dropped at the end), admin token ${TOKEN:0:10}... (made for this run)"

echo "== herald-admin stream declare $STREAM --bind messages messages.message_sent"
admin stream declare "$STREAM" --bind messages messages.message_sent --max-age 1h | indent
[ "${PIPESTATUS[0]}" = 0 ] || fail "stream declare failed"
STREAM_MADE=1

echo "== start herald-users (PostgreSQL, HD_AMQP_URL: in-process relay + messages consumer)"
(cd "$TMP" && exec env HD_USERS_LISTEN=127.0.0.1:0 HD_DATABASE_URL="$DB_URL" \
   HD_AMQP_URL="$HD_AMQP_URL" HD_USERS_ADMIN_TOKEN="$TOKEN" "$BIN/herald-users" 2>>"$TMP/users.log") &
PID=$!
port=
for _ in $(seq 200); do
  kill -0 "$PID" 2>/dev/null || fail "herald-users exited while starting"
  [ -z "$port" ] && port=$(grep -o '"message":"listening".*"port":"\?[0-9]*' "$TMP/users.log" |
                             head -n 1 | grep -o '[0-9]*$')
  [ -n "$port" ] && grep -q '"messages consumer: running"' "$TMP/users.log" && break
  sleep 0.1
done
grep -q '"messages consumer: running"' "$TMP/users.log" || fail "herald-users did not start within 20 s"
BASE=http://127.0.0.1:$port
echo "   listening on $BASE"

ADA=ada@demo-$RUN BOB=bob@demo-$RUN
ids=()
send() { # BODY
  call POST /messages "$1"
  [ "$STATUS" = 202 ] || fail "POST /messages: expected 202, got $STATUS: $(cat "$TMP/body")"
  # one python3 less per message (its start is slow on a busy machine): the id by sed
  ids+=("$(sed -E 's/.*"id" *: *"([^"]+)".*/\1/' "$TMP/body")")
  echo "   ${ids[-1]} $(sed -E 's/.*"status" *: *"([^"]+)".*/\1/' "$TMP/body")  <- $1"
}
echo "== POST /messages: three messages, one with metadata (each 202 Accepted: in the outbox)"
send "{\"sender\":\"$ADA\",\"content\":\"hello bob\",\"metadata\":{\"priority\":\"high\",\"tags\":[\"demo\"]}}"
send "{\"sender\":\"$BOB\",\"content\":\"hi ada\"}"
send "{\"sender\":\"$ADA\",\"content\":\"shall we read the log?\"}"

echo "== POST /messages, hostile: empty content, a control character, metadata not an object, an extra member"
call POST /messages '{"sender":"eve\u0001","content":"","metadata":"x","admin":true}'
echo "   HTTP $STATUS $CTYPE"
python3 -m json.tool --indent 2 "$TMP/body" | indent
case $STATUS in 4??) ;; *) fail "the hostile message got $STATUS, not a 4xx" ;; esac
[ "$CTYPE" = application/problem+json ] || fail "the hostile message's reply is $CTYPE, not problem+json"

echo "== wait until the consumer stored them (outbox -> relay -> exchange messages -> queue users.messages -> consumer)"
for id in "${ids[@]}"; do
  for _ in $(seq 150); do
    call GET "/messages/$id"
    [ "$STATUS" = 200 ] && break
    sleep 0.1
  done
  [ "$STATUS" = 200 ] || fail "message $id not stored within 15 s"
done
echo "   all ${#ids[@]} stored"

echo "== GET /messages"
call GET /messages
[ "$STATUS" = 200 ] || fail "GET /messages: $STATUS"
items | indent
echo "== GET /messages?sender=$ADA"
call GET "/messages?sender=$ADA"
[ "$STATUS" = 200 ] || fail "GET /messages?sender=: $STATUS"
items | indent
echo "== GET /messages/${ids[0]}"
call GET "/messages/${ids[0]}"
[ "$STATUS" = 200 ] || fail "GET /messages/{id}: $STATUS"
python3 -m json.tool --indent 2 "$TMP/body" | indent

echo "== herald-admin stream follow $STREAM --projection live --until-idle 1500"
admin stream follow "$STREAM" --projection live --until-idle 1500 >"$TMP/follow.txt" ||
  fail "stream follow failed"
indent <"$TMP/follow.txt"
echo "== herald-admin stream offsets"
admin stream offsets | indent
echo "== herald-admin stream replay $STREAM --from-offset 0 --projection rebuilt --idle 1500"
admin stream replay "$STREAM" --from-offset 0 --projection rebuilt --idle 1500 >"$TMP/replay.txt" ||
  fail "stream replay failed"
indent <"$TMP/replay.txt"

# Only this run's senders count: another run's messages reach every stream bound to the
# exchange, and may arrive between the two readings.
admin --json stream show --projection live >"$TMP/live.json" || fail "stream show live failed"
admin --json stream show --projection rebuilt >"$TMP/rebuilt.json" || fail "stream show rebuilt failed"
python3 - "$TMP/live.json" "$TMP/rebuilt.json" "-$RUN" <<'PY' || fail "the projections differ"
import json, sys
def rows(path):
    return sorted((r['key'], r['events'], r['last_offset']) for r in json.load(open(path))['rows']
                  if r['key'].endswith(sys.argv[3]))
live, rebuilt = rows(sys.argv[1]), rows(sys.argv[2])
n = sum(r[1] for r in live)
if live != rebuilt or n != 3:
    print('   live:    %s\n   rebuilt: %s' % (live, rebuilt))
    sys.exit(1)
print('== the projections agree: live = rebuilt, %d rows, %d records' % (len(live), n))
PY

kill -TERM "$PID"
wait "$PID"
rc=$?
PID=
[ "$rc" = 0 ] || fail "herald-users exited with $rc after SIGTERM"
echo "== SIGTERM: herald-users exited 0; database and stream are removed on exit"
