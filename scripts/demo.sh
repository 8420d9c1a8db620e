#!/usr/bin/env bash
# demo.sh BUILD_DIR — what `make demo` runs once the servers are up (scripts/servers.sh run).
#
# One registration, end to end, for a person to watch: herald-notifications and herald-users
# start on SQLite files in a temp dir (scripts/lib/services.sh), a user registers with curl,
# the verification mail arrives at the SMTP sink and is printed, its link verifies the
# address, the welcome mail follows; then the notification history, the log lines of both
# services that share the request's correlation id, and a clean stop. docs/demo.md shows
# the output; the same flow in C is tutorial chapter 14, and tests/integration/test_e2e.sh
# checks it (with duplicates and a crash) on every `make test`.
set -uo pipefail

BUILD=${1:-build/dev}
SRC=$(cd "$(dirname "$0")/.." && pwd)
EMAIL=ada@example.com
PASSWORD='correct horse battery staple'
CID=demo-$(date +%H%M%S)     # the correlation ids of the demo's two requests start with it

for v in HD_AMQP_URL HD_SMTP_URL HD_SMTP_MAILDIR; do
  if [ -z "${!v:-}" ]; then
    echo "demo: $v is not set. Run it as 'make demo', or start the servers first:" >&2
    echo "      scripts/servers.sh run -- scripts/demo.sh $BUILD" >&2
    exit 1
  fi
done
for tool in curl python3; do
  command -v $tool >/dev/null || { echo "demo: $tool is not installed (make deps)" >&2; exit 1; }
done

. "$SRC/scripts/lib/services.sh"
svc_init "$BUILD" "$SRC" || exit 1
trap svc_cleanup EXIT
trap 'exit 143' TERM INT    # so that the EXIT trap runs: no service is left behind

BOLD='' PLAIN=''
if [ -t 1 ]; then BOLD=$(printf '\033[1m') PLAIN=$(printf '\033[0m'); fi
n=0
step() { n=$((n + 1)); printf '\n%s[%d] %s%s\n' "$BOLD" "$n" "$1" "$PLAIN"; [ $# -lt 2 ] || printf '    %s\n' "$2"; }
indent() { sed 's/^/    /'; }
fail() {
  echo "demo: $*" >&2
  svc_dump_logs 30
  exit 1
}
pretty() { python3 -m json.tool --indent 2 2>/dev/null || cat; }
# show_request METHOD PATH BODY CORRELATION_ID: print the curl command, run it, print the
# reply's status line, its interesting headers and its body; the body is left in $SVC_DIR/body,
# the time the request was sent (ns) in T_SENT.
show_request() {
  local method=$1 url=$2 body=$3 cid=$4
  printf "    \$ curl -i -X %s %s \\\\\n" "$method" "$url"
  printf "           -H 'Content-Type: application/json' -H 'X-Correlation-Id: %s' \\\\\n" "$cid"
  printf "           -d '%s'\n" "$body"
  T_SENT=$(date +%s%N)
  STATUS=$(curl -s -m 10 -o "$SVC_DIR/body" -D "$SVC_DIR/headers" -X "$method" "$url" \
             -H 'Content-Type: application/json' -H "X-Correlation-Id: $cid" \
             --data-binary "$body" -w '%{http_code}')
  tr -d '\r' <"$SVC_DIR/headers" | grep -E '^HTTP/|^Location:|^X-Correlation-Id:' | indent
  pretty <"$SVC_DIR/body" | indent
}
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$SVC_DIR/body" "$1"; }

printf '%sherald demo: one registration, end to end%s\n' "$BOLD" "$PLAIN"
echo "broker $(printf "%s" "$HD_AMQP_URL" | sed -E "s%//[^/]*@%//%g"), mail sink $HD_SMTP_URL (maildir $HD_SMTP_MAILDIR)"
echo "binaries from $BUILD; databases and logs in $SVC_DIR (removed at the end)"

# ---------------------------------------------------------------------------------------------
step "Start herald-notifications." \
     "It declares the topic exchange 'users', its queue 'users.notifications' and one binding per event it consumes, then consumes."
svc_start notifications || fail "herald-notifications did not start"
echo "    healthy at $(svc_url notifications)  (SQLite $SVC_DIR/notifications.db, templates $SRC/templates)"

step "Start herald-users." \
     "HD_AMQP_URL is set, so its outbox relay runs in-process: every commit that wrote an event wakes it."
svc_start users || fail "herald-users did not start"
echo "    healthy at $(svc_url users)  (SQLite $SVC_DIR/users.db)"

# ---------------------------------------------------------------------------------------------
step "Register a user." \
     "One transaction writes the user, the hashed verification token and the users.user_registered event (the outbox)."
show_request POST "$(svc_url users)/users" \
  "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"name\":\"Ada\"}" "$CID-register"
[ "$STATUS" = 201 ] || fail "expected 201 Created, got $STATUS"
USER_ID=$(json_field id)

step "Wait for the verification mail at the SMTP sink." \
     "outbox -> relay -> exchange 'users' -> queue -> consumer + inbox -> template -> SMTP"
MAIL=$(svc_mail_wait "$EMAIL" "Confirm your e-mail address" 1 20) ||
  fail "no verification mail for $EMAIL within 20 s"
echo "    arrived $(svc_mail_ms "$MAIL" "$T_SENT") ms after the request was sent: $MAIL"
echo "    ------------------------------------------------------------------------"
svc_mail_show "$MAIL" | indent
echo "    ------------------------------------------------------------------------"

step "Take the link out of the mail." \
     "Quoted-printable decoded; a web page at that address would POST its token to /users/verify."
LINK=$(svc_mail_link "$MAIL") || fail "no link in the verification mail"
TOKEN=${LINK##*token=}
echo "    $LINK"
echo "    token: $TOKEN"

step "Verify the address with the token." \
     "The token is single use: its hash is marked used, the user verified, users.user_verified goes to the outbox."
show_request POST "$(svc_url users)/users/verify" "{\"token\":\"$TOKEN\"}" "$CID-verify"
[ "$STATUS" = 200 ] || fail "expected 200 OK, got $STATUS"

step "Wait for the welcome mail." "The same path as the first mail, for the event users.user_verified."
WELCOME=$(svc_mail_wait "$EMAIL" "Welcome to herald" 1 20) || fail "no welcome mail for $EMAIL within 20 s"
echo "    arrived $(svc_mail_ms "$WELCOME" "$T_SENT") ms after the request was sent: $WELCOME"
echo "    ------------------------------------------------------------------------"
svc_mail_show "$WELCOME" | indent
echo "    ------------------------------------------------------------------------"

# ---------------------------------------------------------------------------------------------
step "The notification history of the user." \
     "\$ curl -H 'Authorization: Bearer \$HD_NOTIFICATIONS_API_TOKEN' $(svc_url notifications)/notifications/history/$USER_ID"
curl -s -m 10 -H "$(svc_notif_auth)" "$(svc_url notifications)/notifications/history/$USER_ID" | pretty | indent

step "The log lines of both services with the demo's correlation ids ($CID-*)." \
     "The id of the HTTP request travels in the event (correlationid) to the consumer, the mail header and the history."
for s in users notifications; do
  echo "    $s:"
  grep -F "\"correlation_id\":\"$CID-" "$(svc_log "$s")" | indent
done

step "The notifications service's own outbox." \
     "It emits notifications.notification_sent for every mail, through its own outbox and relay. They are announcements (published without the mandatory flag): nothing subscribes in this demo, so the broker drops them, and each row is marked dispatched once the broker confirmed it."
python3 - "$SVC_DIR/notifications.db" <<'PY' | indent
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=5)
rows = db.execute("SELECT type, attempts, dispatched_at IS NOT NULL, substr(coalesce(last_error, '-'), 1, 70)"
                  " FROM hd_outbox ORDER BY seq").fetchall()
print("%-34s %-8s %-10s %s" % ("type", "attempts", "dispatched", "last_error"))
for t, a, d, e in rows:
    print("%-34s %-8d %-10s %s" % (t, a, "yes" if d else "no", e))
PY

# ---------------------------------------------------------------------------------------------
step "Stop both services with SIGTERM." \
     "Each finishes what it is doing (requests, the window of messages in hand, the relay's batch) and exits 0."
svc_stop users || fail "herald-users did not exit 0"
echo "    herald-users exited with status $SVC_RC"
svc_stop notifications || fail "herald-notifications did not exit 0"
echo "    herald-notifications exited with status $SVC_RC"

cat <<EOF

Done. The same flow as a C program: tutorial/14-registration-flow (docs/tutorial/14-registration-flow.md).
'make tutorial' runs every chapter; 'make test' also runs tests/integration/test_e2e.sh, which
adds duplicate deliveries and a notifications service killed mid-stream to this flow.
EOF
