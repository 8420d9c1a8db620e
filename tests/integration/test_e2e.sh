#!/usr/bin/env bash
# integration.e2e — the whole registration flow across both services, as a user lives it.
#
#   test_e2e.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Needs HD_AMQP_URL, HD_SMTP_URL and HD_SMTP_MAILDIR (scripts/servers.sh): a missing server
# is a FAILURE, never a skip. herald-notifications starts first (it declares the "users"
# exchange, its queue and the bindings before it reports healthy), then herald-users with
# its in-process relay; both on SQLite files in a temp dir (scripts/lib/services.sh).
#
#   1. register -> the verification mail arrives at the sink, with the request's
#      correlation id; its link's token verifies the address (200) -> the welcome mail;
#   2. the users outbox keeps no token once the event is dispatched (sensitive rows are
#      scrubbed); the user_verified envelope relayed twice more (its outbox row set
#      undispatched with sqlite3): the inbox counts two duplicates, and there is still
#      exactly one welcome mail;
#   3. 30 registrations queue up while notifications is frozen (SIGSTOP); thawed, it takes
#      them as one window and is killed with SIGKILL after its first mails, then restarted:
#      every one of the 30 users gets its verification mail (duplicates are allowed — a mail
#      sent but not yet recorded when the process died — and reported);
#   4. GET /notifications/history/{user_id} lists both mails of step 1, sent;
#   5. the correlation id of the HTTP request is in both services' log lines for that mail;
#   6. SIGTERM: both services exit 0.
#
# The broker names are the deployed ones (exchange "users", queue "users.notifications"), and
# they stay declared afterwards, as in a deployment. Events other tests left in that queue
# are consumed too; their mails go to other addresses, which no assertion counts (every
# address here carries this run's id, and the mail helpers skip files older than the run).
set -uo pipefail

SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
N_CRASH=30
KILL_AFTER=3      # mails of step 3 delivered before the SIGKILL
LEASE_MS=3000     # notifications: a dead process's claimed sends are taken over after this
pass=0
failed=0
T_START=$SECONDS

ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { # description, then a command that must succeed
  local what=$1; shift
  if "$@"; then ok; else bad "$what"; fi
}
step() { printf '\n== %s  (t=%ds)\n' "$*" $((SECONDS - T_START)); }
fatal() { bad "$*"; svc_dump_logs 60; finish; }
finish() {
  printf '\ne2e: %d checks passed, %d failed, %d s\n' "$pass" "$failed" $((SECONDS - T_START))
  [ "$failed" -eq 0 ] && [ "$pass" -gt 0 ] && exit 0
  exit 1
}

for v in HD_AMQP_URL HD_SMTP_URL HD_SMTP_MAILDIR; do
  if [ -z "${!v:-}" ]; then
    echo "FAIL: $v is not set: start the servers (scripts/servers.sh up; . \$HD_SERVERS_DIR/env)"
    exit 1
  fi
done
for tool in curl sqlite3 python3; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is not installed"; exit 1; }
done
[ -d "$HD_SMTP_MAILDIR" ] || { echo "FAIL: HD_SMTP_MAILDIR $HD_SMTP_MAILDIR is not a directory"; exit 1; }

# shellcheck source=scripts/lib/services.sh
. "$SRC/scripts/lib/services.sh"
svc_init "$BUILD" "$SRC" || { echo "FAIL: cannot prepare the services"; exit 1; }
trap svc_cleanup EXIT
trap 'exit 143' TERM INT    # so that the EXIT trap runs: no service is left behind
TMP=$SVC_DIR
RUN=e2e-$$-$RANDOM             # in every address and correlation id: runs never meet
PASSWORD='correct horse battery staple'

# ---- helpers ---------------------------------------------------------------------------------
# call METHOD URL [JSON_BODY|-] [curl args...]: STATUS, body in $TMP/body
call() {
  local method=$1 url=$2 body=${3:--}
  shift 3 2>/dev/null || shift $#
  local args=(-s -m 10 -o "$TMP/body" -X "$method" "$url")
  [ "$body" != "-" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$@" -w '%{http_code}')
}
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$TMP/body" 2>/dev/null; }
usql() { sqlite3 -cmd '.timeout 5000' "$TMP/users.db" "$@"; }
metric() { # metric NAME: the value of one unlabelled series of notifications' /metrics
  curl -s -m 5 "$(svc_url notifications)/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}
# log_has SERVICE PYTHON_CONDITION: a line of SERVICE's JSON log for which the condition on
# the parsed line `l` holds
log_has() {
  python3 - "$(svc_log "$1")" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        l = json.loads(line)
    except ValueError:
        continue
    if eval(sys.argv[2]):
        sys.exit(0)
sys.exit(1)
PY
}
register() { # register EMAIL CORRELATION_ID
  call POST "$(svc_url users)/users" "{\"email\":\"$1\",\"password\":\"$PASSWORD\",\"name\":\"E2E\"}" \
    -H "X-Correlation-Id: $2"
}

# ---- start ---------------------------------------------------------------------------------------
step "start herald-notifications, then herald-users (relay in-process)"
t0=$(date +%s%N)
svc_start notifications HD_NOTIFY_LEASE_MS=$LEASE_MS HD_SMTP_TIMEOUT_MS=1000 ||
  fatal "herald-notifications did not start"
# One client registers 30 users at once below: raise the per-address limit (default 30/m,
# bursts of 20) that would otherwise answer 429 (integration.users_http tests the limits).
svc_start users HD_USERS_RATE_CLIENT=100/s HD_USERS_RATE_CLIENT_BURST=100 ||
  fatal "herald-users did not start"
echo "notifications $(svc_url notifications), users $(svc_url users); both healthy after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
ok

# ---- 1. register, verification mail, verify, welcome -----------------------------------------
step "1. register -> verification mail -> verify -> welcome mail"
ADA=$RUN-ada@example.com
CID=$RUN-register
register "$ADA" "$CID"
t0=$(date +%s%N)
[ "$STATUS" = 201 ] || fatal "POST /users: expected 201, got $STATUS: $(head -c 300 "$TMP/body")"
ok
ADA_ID=$(jget "d['id']")
echo "registered $ADA as $ADA_ID"
MAIL=$(svc_mail_wait "$ADA" "Confirm your e-mail address" 1 20) ||
  fatal "no verification mail for $ADA within 20 s"
echo "verification mail at the sink $(svc_mail_ms "$MAIL" "$t0") ms after the 201: $MAIL"
ok
check "verification mail carries the request's correlation id" \
  test "$(svc_mail_header "$MAIL" X-Correlation-Id)" = "$CID"
check "verification mail is addressed to $ADA" test "$(svc_mail_header "$MAIL" To)" = "$ADA"
LINK=$(svc_mail_link "$MAIL")
echo "link: $LINK"
TOKEN=${LINK##*token=}
check "the link ends in a 64-hex token (quoted-printable decoded)" \
  python3 -c "import re,sys; sys.exit(not re.fullmatch('[0-9a-f]{64}', sys.argv[1]))" "$TOKEN"

call POST "$(svc_url users)/users/verify" "{\"token\":\"$TOKEN\"}" -H "X-Correlation-Id: $RUN-verify"
t0=$(date +%s%N)
[ "$STATUS" = 200 ] || fatal "POST /users/verify: expected 200, got $STATUS: $(head -c 300 "$TMP/body")"
ok
check "verify answers the verified user" test "$(jget "d['verified']")" = True
WELCOME=$(svc_mail_wait "$ADA" "Welcome to herald" 1 20) || fatal "no welcome mail for $ADA within 20 s"
echo "welcome mail at the sink $(svc_mail_ms "$WELCOME" "$t0") ms after the 200: $WELCOME"
ok
check "welcome mail carries the verify request's correlation id" \
  test "$(svc_mail_header "$WELCOME" X-Correlation-Id)" = "$RUN-verify"
call POST "$(svc_url users)/users/verify" "{\"token\":\"$TOKEN\"}"
check "the link works once: a second verify is 410 (got $STATUS)" test "$STATUS" = 410

# ---- 2. duplicate deliveries -------------------------------------------------------------------
step "2. the same envelope relayed twice more: one mail"
row_dispatched() { [ "$(usql "SELECT dispatched_at IS NOT NULL FROM hd_outbox WHERE seq = $SEQ")" = 1 ]; }
dups_at_least() { [ "$(metric notifications_duplicates_total)" -ge "$1" ] 2>/dev/null; }
# The verification link is a secret: once dispatched, its outbox row keeps no payload.
SEQ=$(usql "SELECT seq FROM hd_outbox WHERE type = 'users.user_registered' AND aggregate_id = '$ADA_ID'")
[ -n "$SEQ" ] || fatal "no users.user_registered outbox row for $ADA_ID"
wait_for 10 row_dispatched || fatal "outbox row $SEQ was never dispatched"
check "the dispatched verification row is scrubbed: no token in the users outbox" \
  test "$(usql "SELECT COUNT(*) FROM hd_outbox WHERE payload LIKE '%$TOKEN%' OR headers LIKE '%$TOKEN%'")" = 0
# Relayed again below: the user_verified row (not sensitive, its payload is kept), as if
# the relay had died between publish and mark.
SEQ=$(usql "SELECT seq FROM hd_outbox WHERE type = 'users.user_verified' AND aggregate_id = '$ADA_ID'")
[ -n "$SEQ" ] || fatal "no users.user_verified outbox row for $ADA_ID"
wait_for 10 row_dispatched || fatal "outbox row $SEQ was never dispatched"
DUPS0=$(metric notifications_duplicates_total)
echo "outbox row seq=$SEQ (event $(usql "SELECT event_id FROM hd_outbox WHERE seq = $SEQ")), duplicates so far: $DUPS0"
for round in 1 2; do
  # As if the relay had died between publish and mark: the row is due again.
  usql "UPDATE hd_outbox SET dispatched_at = NULL, claimed_by = NULL, claimed_until = 0,
          next_attempt_at = 0 WHERE seq = $SEQ" || fatal "cannot reset outbox row $SEQ"
  if wait_for 10 row_dispatched && wait_for 10 dups_at_least $((DUPS0 + round)); then
    ok; echo "republish $round: relayed again, the inbox skipped it"
  else
    bad "republish $round: row dispatched=$(usql "SELECT dispatched_at FROM hd_outbox WHERE seq = $SEQ"), duplicates=$(metric notifications_duplicates_total)"
  fi
done
sleep 1 # a duplicate mail, if the inbox let one through, would be sent by now
n=$(svc_mail_files "$ADA" "Welcome to herald" | wc -l)
check "exactly one welcome mail for $ADA after 3 deliveries (got $n)" test "$n" = 1

# ---- 3. SIGKILL mid-stream ---------------------------------------------------------------------
step "3. $N_CRASH registrations; notifications killed (SIGKILL) after $KILL_AFTER of their mails, restarted"
# Registrations are slow (argon2id) and a mail takes milliseconds, so a kill would land
# between messages. To kill it in the middle of its work, notifications is frozen (SIGSTOP)
# while the 30 events pile up in its queue, then thawed: it takes them as one window —
# records 30 pending notifications, leased, acks, sends one by one — and dies after a few.
# What it had not sent yet must be sent by the next process once the lease runs out; what it
# had sent but not yet recorded is sent again (a duplicate, allowed and reported).
CRASH=$RUN-crash-
new_mails() { # mails the sink received since $1 (ns): cheap, by file name
  find "$HD_SMTP_MAILDIR" -maxdepth 1 -name '*.eml' -printf '%f\n' | awk -F- -v s="$1" '$1 >= s' | wc -l
}
delivered() { [ "$(svc_mail_count "$CRASH" "Confirm your e-mail address" | wc -l)" -ge "$1" ]; }
kill -STOP "$(svc_pid notifications)"
seq 1 $N_CRASH | xargs -P 3 -I{} curl -s -m 10 -o /dev/null -w '%{http_code}\n' \
  -X POST "$(svc_url users)/users" -H 'Content-Type: application/json' \
  -H "X-Correlation-Id: $RUN-crash-cid-{}" \
  --data-binary "{\"email\":\"$CRASH{}@example.com\",\"password\":\"$PASSWORD\"}" \
  >"$TMP/crash-status"
n201=$(grep -c '^201$' "$TMP/crash-status")
check "all $N_CRASH registrations answered 201 (got $n201: $(sort "$TMP/crash-status" | uniq -c | tr '\n' ' '))" \
  test "$n201" = $N_CRASH
sleep 0.5 # the relay publishes the last events
since=$(date +%s%N)
kill -CONT "$(svc_pid notifications)"
deadline=$((SECONDS + 20))
until [ "$(new_mails "$since")" -ge $KILL_AFTER ] || [ $SECONDS -ge $deadline ]; do sleep 0.005; done
svc_kill notifications
t0=$(date +%s%N)
KILLED_AT=$(svc_mail_count "$CRASH" "Confirm your e-mail address" | wc -l)
echo "SIGKILL $(( (t0 - since) / 1000000 )) ms after SIGCONT, with $KILLED_AT of the $N_CRASH mails sent"
# Not a check: on a slow machine the poll can miss the moment, and the run is still valid.
[ "$KILLED_AT" -lt $N_CRASH ] ||
  echo "note: the window was finished before the kill; this run did not crash mid-window"
svc_start notifications HD_NOTIFY_LEASE_MS=$LEASE_MS HD_SMTP_TIMEOUT_MS=1000 ||
  fatal "herald-notifications did not restart"
echo "restarted and healthy $(( ($(date +%s%N) - t0) / 1000000 )) ms after the SIGKILL"
if wait_for $((LEASE_MS / 1000 + 20)) delivered $N_CRASH; then ok; else bad "not every user got a verification mail"; fi
sleep 0.5 # a duplicate, if any, would be sent with the rest
svc_mail_count "$CRASH" "Confirm your e-mail address" >"$TMP/crash-counts"
users_mailed=$(wc -l <"$TMP/crash-counts")
mails=$(awk '{ s += $2 } END { print s + 0 }' "$TMP/crash-counts")
echo "after the crash: $users_mailed/$N_CRASH users got their verification mail, $mails mails, $((mails - users_mailed)) duplicate(s), the last $(( ($(date +%s%N) - t0) / 1000000 )) ms after the SIGKILL"
awk '$2 > 1 { print "  duplicate: " $1 " got " $2 " mails" }' "$TMP/crash-counts"
# The outcomes of a window are recorded together after its sends, and the window is acked
# after that: every message comes back (the inbox skips it), and every mail the dead process
# had sent is sent again by the next one after the lease.
echo "the restarted process: $(metric notifications_duplicates_total) redelivered message(s) skipped by the inbox, $(metric notifications_pending) notification(s) still pending"
check "every one of the $N_CRASH users got a verification mail ($users_mailed)" test "$users_mailed" = $N_CRASH

# ---- 4. history -------------------------------------------------------------------------------
step "4. GET /notifications/history/{user_id}"
call GET "$(svc_url notifications)/notifications/history/$ADA_ID" - -H "$(svc_notif_auth)"
[ "$STATUS" = 200 ] || bad "history: expected 200, got $STATUS"
jget "[(i['type'], i['status'], i['correlation_id']) for i in d['items']]"
check "history of $ADA: welcome then email_verification, both sent" \
  test "$(jget "[(i['type'], i['status']) for i in d['items']]")" = "[('welcome', 'sent'), ('email_verification', 'sent')]"
check "history keeps each request's correlation id" \
  test "$(jget "[i['correlation_id'] for i in d['items']]")" = "['$RUN-verify', '$CID']"
call GET "$(svc_url notifications)/notifications/history/$ADA_ID"
check "history without the notifications API token: 401 (got $STATUS)" test "$STATUS" = 401
CRASH1_ID=$(usql "SELECT id FROM users WHERE email = '${CRASH}1@example.com'")
call GET "$(svc_url notifications)/notifications/history/$CRASH1_ID" - -H "$(svc_notif_auth)"
check "history of a user of step 3: one verification, sent (got $(jget "[(i['type'], i['status']) for i in d['items']]"))" \
  test "$(jget "[(i['type'], i['status']) for i in d['items']]")" = "[('email_verification', 'sent')]"

# ---- 5. correlation id in the logs -----------------------------------------------------------
step "5. the request's correlation id in both services' logs"
check "users logged 'user registered' with $CID" \
  log_has users "l.get('message') == 'user registered' and l.get('correlation_id') == '$CID' and l.get('user_id') == '$ADA_ID'"
check "notifications logged 'notification sent' (email_verification) with $CID" \
  log_has notifications "l.get('message') == 'notification sent' and l.get('correlation_id') == '$CID' and l.get('type') == 'email_verification' and l.get('user_id') == '$ADA_ID'"
check "notifications logged 'notification sent' (welcome) with $RUN-verify" \
  log_has notifications "l.get('message') == 'notification sent' and l.get('correlation_id') == '$RUN-verify' and l.get('type') == 'welcome'"
check "no log line holds the password in clear" \
  bash -c '! grep -qF "$1" "$2" "$3"' _ "$PASSWORD" "$(svc_log users)" "$(svc_log notifications)"

# ---- 6. SIGTERM ------------------------------------------------------------------------------
step "6. SIGTERM"
check "the users outbox is drained" test "$(usql "SELECT COUNT(*) FROM hd_outbox WHERE dispatched_at IS NULL")" = 0
t0=$(date +%s%N)
check "herald-users exits 0 on SIGTERM" svc_stop users
check "herald-notifications exits 0 on SIGTERM" svc_stop notifications
echo "both stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

[ "$failed" -eq 0 ] || svc_dump_logs 60
finish
