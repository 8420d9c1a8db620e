#!/usr/bin/env bash
# integration.users_http — the herald-users binary over HTTP, as a client sees it.
#
#   test_users_http.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Needs HD_PG_URL and HD_AMQP_URL (scripts/servers.sh): a missing server is a FAILURE, never
# a skip. In order:
#   1. the application tests (unit-users_app) against PostgreSQL: the same cases as on
#      SQLite, so the service's SQL is proven on both stores;
#   2. herald-users on a free port with a temporary SQLite file: every endpoint with curl
#      (status, problem+json, bodies), the outbox rows (sqlite3 CLI), the password nowhere
#      in clear (database files, logs, responses), JSON logs with correlation ids;
#   3. the running server against docs/openapi/users.yaml: every documented path and
#      method answers with a documented status;
#   4. a restart with a 1 s token lifetime: an expired token is refused;
#   5. the in-process relay (HD_AMQP_URL): health sees the broker, the outbox drains;
#   6. SIGTERM during a registration: the request completes, the process exits 0;
#   7. issue 9: a short admin token is refused at start; the verification page (GET shows a
#      button, does not verify; the form POST verifies); rate limits (429 + Retry-After);
#      a full hashing pool (503 + Retry-After) that an unknown reset token never waits for;
#      /health does not open a broker connection per request.
set -uo pipefail

SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
BIN=$BUILD/herald-users
APP_TESTS=$BUILD/unit-users_app
OPENAPI=$SRC/docs/openapi/users.yaml
TMP=$(mktemp -d "${TMPDIR:-/tmp}/herald-users-http-XXXXXX")
ADMIN=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') # 38 characters: 32 at least
PASSWORD='Tr0ub4dor&3-never-in-clear'
VERIFY_BASE='https://app.test/verify?token='
PID=

cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  # kept for scripts/check_secrets_in_logs.sh (HD_TEST_LOG_DIR: set by scripts/run_tests.sh)
  [ -n "${HD_TEST_LOG_DIR:-}" ] && mkdir -p "$HD_TEST_LOG_DIR" &&
    for f in "$TMP"/*.log; do [ -f "$f" ] && cp "$f" "$HD_TEST_LOG_DIR/users-http-$$-${f##*/}"; done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

# ok, bad, check, step, need_env; call, expect, jget, header (scripts/lib/http_test.sh). Every
# body is also kept in $TMP/responses, which is searched for the password at the end; a
# problem's body must carry its status.
# shellcheck source=scripts/lib/http_test.sh
. "$SRC/scripts/lib/http_test.sh"
HTTP_TEST_RESPONSES=$TMP/responses
HTTP_TEST_PROBLEM_STATUS=1

# ---- HTTP helpers ------------------------------------------------------------------------
admin() { echo "Authorization: Bearer $ADMIN"; }
sql() { sqlite3 "$TMP/users.db" "$@"; }

# ---- the server ---------------------------------------------------------------------------
# start_server [VAR=value ...]: herald-users on a free port (port 0: the kernel picks one,
# and the "listening" log line says which), working directory $TMP (so no stray .env).
# The rate limits are raised: this script is one client sending many requests; step 7
# tests them at their real size.
start_server() {
  : >"$TMP/server.log"
  (cd "$TMP" && exec env -u HD_AMQP_URL HD_USERS_LISTEN=127.0.0.1:0 \
     HD_DATABASE_URL="sqlite://$TMP/users.db" HD_USERS_ADMIN_TOKEN="$ADMIN" \
     HD_USERS_RATE_CLIENT=1000/s HD_USERS_RATE_EMAIL=1000/s \
     HD_USERS_VERIFY_BASE_URL="$VERIFY_BASE" HD_LOG_LEVEL=debug "$@" "$BIN" \
     2>>"$TMP/server.log") &
  PID=$!
  local port= i
  for i in $(seq 1 100); do
    port=$(grep -o '"message":"listening".*"port":"[0-9]*"' "$TMP/server.log" | grep -o '[0-9]*"$' | tr -d '"')
    [ -n "$port" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "FAIL: herald-users did not start:"; cat "$TMP/server.log"; exit 1
  fi
  BASE=http://127.0.0.1:$port
  cat "$TMP/server.log" >>"$TMP/all.log"
}
# stop_server: SIGTERM, then the exit status in STOP_RC
stop_server() {
  kill -TERM "$PID"
  wait "$PID"
  STOP_RC=$?
  PID=
  cat "$TMP/server.log" >>"$TMP/all.log"
}

[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }
[ -x "$APP_TESTS" ] || { echo "FAIL: $APP_TESTS not built"; exit 1; }
need_env HD_PG_URL
need_env HD_AMQP_URL
for tool in curl sqlite3 python3; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is not installed"; exit 1; }
done

# ---- 1. the application on PostgreSQL ------------------------------------------------------
step "application tests on PostgreSQL ($HD_PG_URL)"
if HD_USERS_TEST_PG_URL=$HD_PG_URL "$APP_TESTS" >"$TMP/pg.log" 2>&1; then
  ok; tail -n 2 "$TMP/pg.log"
else
  bad "unit-users_app on PostgreSQL"; cat "$TMP/pg.log"
fi

# ---- 2. every endpoint ----------------------------------------------------------------------
step "start herald-users"
start_server
echo "listening on $BASE"

step "POST /users"
t0=$(date +%s%N)
call POST /users "{\"email\":\"  Ada@Example.COM \",\"password\":\"$PASSWORD\",\"name\":\"Ada\"}" \
  -H 'X-Correlation-Id: it-register-1'
t1=$(date +%s%N)
expect 201
echo "registration took $(( (t1 - t0) / 1000000 )) ms (argon2id interactive)"
ADA=$(jget "d['id']")
check "201 body: normalised email" test "$(jget "d['email']")" = "ada@example.com"
check "201 body: not verified" test "$(jget "d['verified']")" = "False"
check "201 body: no password or hash" test "$(jget "sorted(d.keys())")" = \
  "['created_at', 'email', 'id', 'name', 'updated_at', 'verified']"
check "Location header" test "$(header Location)" = "/users/$ADA"
check "correlation id echoed" test "$(header X-Correlation-Id)" = "it-register-1"

call POST /users "{\"email\":\"ada@example.com\",\"password\":\"$PASSWORD\"}"
expect 409 problem
call POST /users "{\"email\":\"ADA@EXAMPLE.COM\",\"password\":\"$PASSWORD\"}"
expect 409 problem
call POST /users '{"email":"not-an-email","password":"short","name":42}'
expect 422 problem
check "422 lists every invalid field" test "$(jget "[e['field'] for e in d['errors']]")" = \
  "['email', 'password', 'name']"
call POST /users '{"password":"long enough password"}'
expect 422 problem
check "422 names the missing field" test "$(jget "d['errors'][0]['field']")" = "email"
call POST /users '{"email":'
expect 400 problem
call POST /users '["not", "an", "object"]'
expect 400 problem
call POST /users - -H 'Content-Type: text/plain' --data-binary 'email=a@b.c'
expect 415 problem
big=$(python3 -c "print('{\"email\":\"a@b.co\",\"password\":\"' + 'x'*20000 + '\"}')")
call POST /users "$big"
expect 413 problem
for i in 1 2 3 4 5; do
  call POST /users "{\"email\":\"user$i@example.com\",\"password\":\"$PASSWORD\",\"name\":\"User $i\"}"
  expect 201
done

step "outbox rows (sqlite3 $TMP/users.db)"
check "one users.user_registered row per user" test "$(sql "SELECT COUNT(*) FROM hd_outbox WHERE type = 'users.user_registered'")" = 6
row=$(sql "SELECT payload FROM hd_outbox WHERE aggregate_id = '$ADA'")
echo "$row" >"$TMP/body"
check "envelope type" test "$(jget "d['type']")" = "users.user_registered"
check "envelope source" test "$(jget "d['source']")" = "herald-users"
check "envelope correlation id = the request's" test "$(jget "d['correlationid']")" = "it-register-1"
check "data.user_id" test "$(jget "d['data']['user_id']")" = "$ADA"
LINK=$(jget "d['data']['verification_link']")
check "verification link from HD_USERS_VERIFY_BASE_URL + 64 hex" \
  python3 -c "import re,sys; sys.exit(not re.fullmatch(re.escape(sys.argv[1]) + '[0-9a-f]{64}', sys.argv[2]))" "$VERIFY_BASE" "$LINK"
TOKEN=${LINK#"$VERIFY_BASE"}
check "only the token's hash is stored" test "$(sql "SELECT COUNT(*) FROM user_tokens WHERE token_hash = '$TOKEN'")" = 0
check "password stored as argon2id" test "$(sql "SELECT substr(password_hash, 1, 10) FROM users WHERE id = '$ADA'")" = '$argon2id$'

step "POST /users/verify"
call POST /users/verify '{"token":"xyz"}'
expect 400 problem
call POST /users/verify '{}'
expect 422 problem
call POST /users/verify "{\"token\":\"$(printf 'a%.0s' $(seq 64))\"}"
expect 404 problem
call POST /users/verify "{\"token\":\"$TOKEN\"}" -H 'X-Correlation-Id: it-verify-1'
expect 200
check "verified" test "$(jget "d['verified']")" = "True"
call POST /users/verify "{\"token\":\"$TOKEN\"}"
expect 410 problem
check "410 says the token was used" grep -q 'already used' "$TMP/body"
check "users.user_verified in the outbox with the request's correlation id" \
  test "$(sql "SELECT COUNT(*) FROM hd_outbox WHERE type = 'users.user_verified' AND headers LIKE '%it-verify-1%'")" = 1

step "POST /users/password-reset"
call POST /users/password-reset '{"email":"nobody@example.com"}'
expect 202
unknown_body=$(cat "$TMP/body")
call POST /users/password-reset '{"email":"ADA@example.com"}'
expect 202
check "known and unknown addresses get the same answer" test "$(cat "$TMP/body")" = "$unknown_body"
call POST /users/password-reset '{"email":"nope"}'
expect 422 problem
check "one users.password_reset_requested (only for the known address)" \
  test "$(sql "SELECT COUNT(*) FROM hd_outbox WHERE type = 'users.password_reset_requested'")" = 1

RESET_LINK=$(sql "SELECT json_extract(payload, '\$.data.reset_link') FROM hd_outbox WHERE type = 'users.password_reset_requested'")
RESET=${RESET_LINK##*=}
NEWPASS="$PASSWORD-2"

step "POST /users/password-reset/confirm"
call POST /users/password-reset/confirm "{\"token\":\"$RESET\",\"password\":\"short\"}"
expect 422 problem
call POST /users/password-reset/confirm "{\"token\":\"xyz\",\"password\":\"$NEWPASS\"}"
expect 400 problem
call POST /users/password-reset/confirm "{\"token\":\"$TOKEN\",\"password\":\"$NEWPASS\"}"
expect 404 problem
call POST /users/password-reset/confirm "{\"token\":\"$RESET\",\"password\":\"$NEWPASS\"}"
expect 204
call POST /users/password-reset/confirm "{\"token\":\"$RESET\",\"password\":\"$NEWPASS\"}"
expect 410 problem

step "admin routes need the bearer token"
call GET /users
expect 401 problem
check "WWW-Authenticate" test -n "$(header WWW-Authenticate)"
call GET "/users/$ADA" - -H 'Authorization: Bearer wrong'
expect 401 problem
call DELETE "/users/$ADA"
expect 401 problem

step "GET /users/{id}, GET /users?email="
call GET "/users/$ADA" - -H "$(admin)"
expect 200
check "by id: the email" test "$(jget "d['email']")" = "ada@example.com"
call GET /users/00000000-0000-4000-8000-000000000000 - -H "$(admin)"
expect 404 problem
call GET /users/not-a-uuid - -H "$(admin)"
expect 404 problem
call GET '/users?email=Ada%40example.com' - -H "$(admin)"
expect 200
check "by email: one item" test "$(jget "[u['id'] for u in d['items']]")" = "['$ADA']"
call GET '/users?email=ghost%40example.com' - -H "$(admin)"
expect 200
check "by unknown email: no item" test "$(jget "len(d['items'])")" = 0
call GET '/users?email=bad' - -H "$(admin)"
expect 400 problem

step "GET /users?limit=&cursor= (pagination)"
ids=()
cursor=
pages=0
while :; do
  call GET "/users?limit=4${cursor:+&cursor=$cursor}" - -H "$(admin)"
  expect 200
  pages=$((pages + 1))
  while read -r id; do [ -n "$id" ] && ids+=("$id"); done < <(jget "'\n'.join(u['id'] for u in d['items'])")
  cursor=$(jget "d['next_cursor'] or ''")
  [ -z "$cursor" ] && break
  [ $pages -gt 10 ] && { bad "pagination does not end"; break; }
done
check "6 users in 2 pages of 4" test "${#ids[@]}:$pages" = "6:2"
check "no user twice" test "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" = 6
call GET '/users?limit=0' - -H "$(admin)"
expect 400 problem
call GET '/users?limit=101' - -H "$(admin)"
expect 400 problem
call GET '/users?limit=abc' - -H "$(admin)"
expect 400 problem
call GET '/users?cursor=bogus' - -H "$(admin)"
expect 400 problem

step "PATCH /users/{id}"
call PATCH "/users/$ADA" '{"name":"Ada Lovelace"}' -H "$(admin)"
expect 200
check "renamed" test "$(jget "d['name']")" = "Ada Lovelace"
call PATCH "/users/$ADA" '{"email":"eve@example.com","name":"Eve"}' -H "$(admin)"
expect 422 problem
call PATCH "/users/$ADA" '{}' -H "$(admin)"
expect 422 problem
call PATCH /users/00000000-0000-4000-8000-000000000000 '{"name":"X"}' -H "$(admin)"
expect 404 problem

step "DELETE /users/{id}"
VICTIM=${ids[5]}
call DELETE "/users/$VICTIM" - -H "$(admin)" -H 'X-Correlation-Id: it-delete-1'
expect 204
call DELETE "/users/$VICTIM" - -H "$(admin)"
expect 404 problem
call GET "/users/$VICTIM" - -H "$(admin)"
expect 404 problem
check "users.user_deleted with only the user id" \
  test "$(sql "SELECT json_extract(payload, '\$.data') FROM hd_outbox WHERE type = 'users.user_deleted'")" = "{\"user_id\":\"$VICTIM\"}"

step "GET /health, GET /metrics, 404 and 405"
call GET /health
expect 200
check "health: store ok" test "$(jget "d['checks']['store']")" = ok
call GET /metrics
expect 200
check "metrics: requests by route and status" grep -q 'http_requests_total{method="POST",route="/users",status="201"} 6' "$TMP/body"
check "metrics: latency histogram" grep -q 'http_request_duration_seconds_bucket{method="POST",route="/users",le=' "$TMP/body"
pending=$(sql "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL")
check "metrics: outbox depth = $pending pending rows" grep -q "^outbox_pending $pending\$" "$TMP/body"
check "metrics: oldest undispatched age" grep -q '^outbox_oldest_age_seconds ' "$TMP/body"
call GET /nowhere
expect 404 problem
call PUT /users '{}'
expect 405 problem

# ---- 3. the OpenAPI document ------------------------------------------------------------------
step "the server against docs/openapi/users.yaml"
if python3 "$SRC/scripts/lib/openapi_check.py" "$OPENAPI" "$BASE" "$ADMIN" >"$TMP/openapi.log" 2>&1
then ok; else bad "server does not match the OpenAPI document"; fi
cat "$TMP/openapi.log"

step "SIGTERM (idle server)"
stop_server
check "exit status 0 after SIGTERM (got $STOP_RC)" test "$STOP_RC" = 0
check "'stopped' logged" grep -q '"message":"stopped"' "$TMP/server.log"

# ---- 4. expired tokens ---------------------------------------------------------------------------
step "restart with HD_USERS_TOKEN_TTL=1s: an expired token is refused"
start_server HD_USERS_TOKEN_TTL=1s
call POST /users "{\"email\":\"late@example.com\",\"password\":\"$PASSWORD\"}"
expect 201
LATE=$(jget "d['id']")
link=$(sql "SELECT json_extract(payload, '\$.data.verification_link') FROM hd_outbox WHERE aggregate_id = '$LATE'")
sleep 1.2
call POST /users/verify "{\"token\":\"${link#"$VERIFY_BASE"}\"}"
expect 410 problem
check "410 says the token expired" grep -q 'expired' "$TMP/body"
stop_server
check "exit status 0 (got $STOP_RC)" test "$STOP_RC" = 0

# ---- 5. the in-process relay ------------------------------------------------------------------------
step "in-process relay (HD_AMQP_URL)"
# A private exchange: the default ("users") may have queues of other tests bound to it on
# a shared broker, and they must not receive these events.
start_server HD_AMQP_URL="$HD_AMQP_URL" HD_RELAY_EXCHANGE="users-http-test-$$"
call GET /health
expect 200
check "health: broker ok" test "$(jget "d['checks'].get('broker')")" = ok
call POST /users "{\"email\":\"relayed@example.com\",\"password\":\"$PASSWORD\"}"
expect 201
# The relay publishes every pending row (mandatory). With no queue bound to the exchange
# the broker returns them, and the relay records the attempt: either way each row
# has reached the real broker once it is dispatched or carries an attempt.
drained=
for i in $(seq 1 50); do
  left=$(sql "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL AND attempts = 0")
  [ "$left" = 0 ] && { drained=1; break; }
  sleep 0.2
done
check "the relay handled every outbox row (left: $left)" test -n "$drained"
call GET /metrics
check "metrics: relay published count" grep -Eq '^relay_messages\{outcome="published"\} [1-9]' "$TMP/body"
# The rows were returned (no queue is bound), so the histogram may have no observation yet:
# it is there, and its +Inf bucket counts what _count counts (docs/metrics.md).
confirm_count=$(sed -n 's/^relay_publish_confirm_seconds_count \([0-9][0-9]*\)$/\1/p' "$TMP/body")
check "metrics: relay publish-to-confirm histogram (count: $confirm_count)" test -n "$confirm_count"
check "metrics: its +Inf bucket = its count" grep -q "^relay_publish_confirm_seconds_bucket{le=\"+Inf\"} $confirm_count\$" "$TMP/body"
check "metrics: outbox parked gauge" grep -Eq '^outbox_parked [0-9]+$' "$TMP/body"
stop_server
check "exit status 0 with the relay (got $STOP_RC)" test "$STOP_RC" = 0
check "relay ran" grep -q 'relay: running' "$TMP/server.log"

# ---- 6. SIGTERM while a request runs -----------------------------------------------------------------
step "SIGTERM during a registration (argon2id moderate: ~0.5 s of work in flight)"
start_server HD_USERS_PWHASH=moderate
t0=$(date +%s%N)
curl -s -o "$TMP/inflight" -w '%{http_code}' -X POST "$BASE/users" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"inflight@example.com\",\"password\":\"$PASSWORD\"}" >"$TMP/inflight.status" &
CURL=$!
sleep 0.15
kill -TERM "$PID"
wait $CURL
t1=$(date +%s%N)
wait "$PID"; STOP_RC=$?; PID=
cat "$TMP/server.log" >>"$TMP/all.log"
check "the in-flight registration completed with 201 (got $(cat "$TMP/inflight.status"))" \
  test "$(cat "$TMP/inflight.status")" = 201
echo "registration with argon2id moderate took $(( (t1 - t0) / 1000000 )) ms"
check "exit status 0 (got $STOP_RC)" test "$STOP_RC" = 0
check "the user is stored" test "$(sql "SELECT COUNT(*) FROM users WHERE email = 'inflight@example.com'")" = 1

# ---- 7. issue 9: limits, the page, health --------------------------------------------------------------
step "a short HD_USERS_ADMIN_TOKEN is refused at start"
(cd "$TMP" && exec env -u HD_AMQP_URL HD_USERS_LISTEN=127.0.0.1:0 \
   HD_DATABASE_URL="sqlite://$TMP/users.db" HD_USERS_ADMIN_TOKEN=admin-12345678 "$BIN") \
   >"$TMP/short.log" 2>&1 &
SHORT=$!
for i in $(seq 1 50); do kill -0 $SHORT 2>/dev/null || break; sleep 0.1; done
if kill -0 $SHORT 2>/dev/null; then
  kill -KILL $SHORT; bad "herald-users started with a 14-character admin token"
else
  wait $SHORT; short_rc=$?
  check "exit status 1 with a short admin token (got $short_rc)" test "$short_rc" = 1
  check "the error names the minimum" grep -q 'at least 32' "$TMP/short.log"
  check "the error does not print the token" sh -c "! grep -q 'admin-12345678' '$TMP/short.log'"
fi

step "the verification page: GET shows a button and verifies nothing, the form POST verifies"
start_server HD_USERS_VERIFY_BASE_URL=
call POST /users "{\"email\":\"page@example.com\",\"password\":\"$PASSWORD\"}"
expect 201
PAGE_ID=$(jget "d['id']")
link=$(sql "SELECT json_extract(payload, '\$.data.verification_link') FROM hd_outbox WHERE aggregate_id = '$PAGE_ID' AND type = 'users.user_registered'")
check "the default link is this service's page (got $link)" \
  python3 -c "import re,sys; sys.exit(not re.fullmatch(r'http://127\.0\.0\.1:8081/users/verify\?token=[0-9a-f]{64}', sys.argv[1]))" "$link"
PTOKEN=${link##*=}
call GET "/users/verify?token=$PTOKEN" - -H 'Accept: text/html'
expect 200
check "the page is HTML (got '$CTYPE')" test "$CTYPE" = "text/html; charset=utf-8"
check "the page has a form that POSTs the token" \
  sh -c "grep -q '<form method=\"post\"' '$TMP/body' && grep -q 'value=\"$PTOKEN\"' '$TMP/body'"
check "the page says why (link scanners)" grep -q 'link scanner' "$TMP/body"
check "the page is not cached and sends no Referer" \
  sh -c "test '$(header Cache-Control)' = no-store && test '$(header Referrer-Policy)' = no-referrer"
check "GET did not verify" test "$(sql "SELECT verified FROM users WHERE id = '$PAGE_ID'")" = 0
check "GET wrote no users.user_verified" \
  test "$(sql "SELECT COUNT(*) FROM hd_outbox WHERE type = 'users.user_verified' AND aggregate_id = '$PAGE_ID'")" = 0
call GET "/users/verify?token=abc" - -H 'Accept: text/html'
expect 400
call GET "/users/verify?token=abc"
expect 400 problem
call POST /users/verify - -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "token=$PTOKEN"
expect 200
check "the form answer is HTML" test "$CTYPE" = "text/html; charset=utf-8"
check "the form POST verified" test "$(sql "SELECT verified FROM users WHERE id = '$PAGE_ID'")" = 1
call POST /users/verify - -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "token=$PTOKEN"
expect 410
stop_server

step "rate limits: per client address"
start_server HD_USERS_RATE_CLIENT=2/m HD_USERS_RATE_CLIENT_BURST=3
for i in 1 2 3; do
  call POST /users/password-reset "{\"email\":\"limit$i@example.com\"}"
  expect 202
done
call POST /users/password-reset '{"email":"limit4@example.com"}'
expect 429 problem
retry=$(header Retry-After)
check "429 has Retry-After in seconds (got '$retry')" sh -c "test '$retry' -ge 1 && test '$retry' -le 30"
call POST /users/verify "{\"token\":\"$PTOKEN\"}"
expect 429 problem
call GET /health
expect 200
call GET /metrics
check "metrics: refusals counted by limit" grep -q 'users_rate_limited_total{limit="client address"} 2' "$TMP/body"
stop_server

step "rate limits: per e-mail address"
start_server HD_USERS_RATE_EMAIL=1/h HD_USERS_RATE_EMAIL_BURST=2
for i in 1 2; do
  call POST /users/password-reset '{"email":"Ada@example.com"}'
  expect 202
done
call POST /users/password-reset '{"email":"ada@EXAMPLE.com"}'
expect 429 problem
check "per e-mail 429 has Retry-After (got '$(header Retry-After)')" test "$(header Retry-After)" -ge 60
call POST /users/password-reset '{"email":"someone.else@example.com"}'
expect 202
stop_server

step "a full hashing pool: 503 + Retry-After; an unknown reset token does not wait for a slot"
start_server HD_USERS_PWHASH=moderate HD_USERS_MAX_HASHING=1 HD_USERS_HASH_WAIT=1ms
: >"$TMP/burst"
burst=()
for i in 1 2 3; do
  curl -s -o /dev/null -D "$TMP/burst.h$i" -w '%{http_code}\n' -X POST "$BASE/users" \
    -H 'Content-Type: application/json' \
    --data-binary "{\"email\":\"burst$i@example.com\",\"password\":\"$PASSWORD\"}" >>"$TMP/burst" &
  burst+=($!)
done
sleep 0.1
t0=$(date +%s%N)
call POST /users/password-reset/confirm "{\"token\":\"$(printf 'b%.0s' $(seq 64))\",\"password\":\"$NEWPASS\"}"
t1=$(date +%s%N)
expect 404 problem
echo "unknown reset token answered in $(( (t1 - t0) / 1000000 )) ms while the pool was full"
wait "${burst[@]}"
check "some registrations got 503 (statuses: $(sort "$TMP/burst" | tr '\n' ' '))" grep -q 503 "$TMP/burst"
check "some registration got 201" grep -q 201 "$TMP/burst"
check "503 carries Retry-After" sh -c "grep -il '^retry-after: [0-9]' '$TMP'/burst.h* >/dev/null"
stop_server

step "/health does not open a broker connection per request"
# A fake broker that counts the TCP connections it accepts and closes each at once (so
# every connection attempt fails fast). The relay retries with a growing backoff; /health
# used to add one connection per request.
python3 - "$TMP/fakebroker" <<'PY' &
import socket, sys, threading, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)
open(sys.argv[1] + '.port', 'w').write(str(s.getsockname()[1]))
n = 0
s.settimeout(30)
end = time.time() + 30
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    n += 1
    open(sys.argv[1] + '.count', 'w').write(str(n))
    c.close()
PY
FAKE=$!
for i in $(seq 1 50); do [ -s "$TMP/fakebroker.port" ] && break; sleep 0.1; done
start_server HD_AMQP_URL="amqp://guest:guest@127.0.0.1:$(cat "$TMP/fakebroker.port")/"
sleep 0.5
before=$(cat "$TMP/fakebroker.count" 2>/dev/null || echo 0)
for i in $(seq 1 20); do call GET /health; done
expect 503
check "health: broker unreachable" test "$(jget "d['checks'].get('broker')")" = unreachable
after=$(cat "$TMP/fakebroker.count" 2>/dev/null || echo 0)
# At most one probe, plus the relay's own retries (200, 400, 800 ms ... apart).
check "20 /health requests opened at most 4 broker connections (got $((after - before)))" \
  test $((after - before)) -le 4
stop_server
kill $FAKE 2>/dev/null; wait $FAKE 2>/dev/null

# ---- the password is nowhere in clear ------------------------------------------------------------------
step "the password appears nowhere in clear"
check "not in the database files" sh -c "! cat '$TMP'/users.db* | grep -aqF -- '$PASSWORD'"
check "the domain includes no infrastructure header" sh -c \
  "! grep -E '#include *[<\"](sqlite3|libpq|amqp|rabbitmq|microhttpd|curl|sodium|herald/(store|outbox|relay|http|amqp))' '$SRC'/src/services/users/domain.[ch]"
check "not in the logs" sh -c "! grep -qF -- '$PASSWORD' '$TMP/all.log'"
check "not in any response" sh -c "! grep -qF -- '$PASSWORD' '$TMP/responses'"
check "logs are JSON lines with the correlation id" python3 - "$TMP/all.log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert lines, "no log lines"
assert any(l.get("correlation_id") == "it-register-1" and l["message"] == "user registered" for l in lines)
emails = [l["email"] for l in lines if "email" in l]
assert emails and all("***@" in e for e in emails), emails  # redacted by the logger
PY

echo
echo "users_http: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
