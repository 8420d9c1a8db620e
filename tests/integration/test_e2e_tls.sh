#!/usr/bin/env bash
# integration.e2e_tls — the registration flow of integration.e2e once with every connection
# to a server over verified TLS, as issue 11's production setup runs it:
#
#   test_e2e_tls.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
#   broker    HD_AMQP_URL=$HD_AMQPS_URL (amqps://) with HD_AMQP_CA_FILE
#   database  each service on its own PostgreSQL database with HD_DATABASE_CA_FILE
#             (sslmode=verify-full + sslrootcert)
#   SMTP      HD_SMTP_URL=$HD_SMTP_TLS_URL with HD_SMTP_TLS=required and HD_SMTP_CA_FILE
#
# register -> verification mail -> verify -> welcome mail -> history, then proof from the
# servers' side: every connection of the services to RabbitMQ says ssl=true
# (rabbitmqctl list_connections), every session of theirs in pg_stat_ssl says ssl, and the
# sink marks both mails X-Envelope-TLS: yes. Needs HD_AMQPS_URL, HD_PG_URL, HD_SMTP_TLS_URL,
# HD_TLS_CA_FILE (scripts/servers.sh); a missing one is a FAILURE.
set -uo pipefail

SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
pass=0
failed=0
T_START=$SECONDS
ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
step() { printf '\n== %s  (t=%ds)\n' "$*" $((SECONDS - T_START)); }
fatal() { bad "$*"; svc_dump_logs 60; finish; }
finish() {
  printf '\ne2e_tls: %d checks passed, %d failed, %d s\n' "$pass" "$failed" $((SECONDS - T_START))
  [ "$failed" -eq 0 ] && [ "$pass" -gt 0 ] && exit 0
  exit 1
}

for v in HD_AMQPS_URL HD_PG_URL HD_SMTP_TLS_URL HD_SMTP_MAILDIR HD_TLS_CA_FILE HD_SERVERS_CTL; do
  if [ -z "${!v:-}" ]; then
    echo "FAIL: $v is not set: start the servers (scripts/servers.sh up; . \$HD_SERVERS_DIR/env)"
    exit 1
  fi
done
for tool in curl psql python3; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is not installed"; exit 1; }
done

# shellcheck source=scripts/lib/services.sh
. "$SRC/scripts/lib/services.sh"
svc_init "$BUILD" "$SRC" || { echo "FAIL: cannot prepare the services"; exit 1; }
RUN=e2etls-$$-$RANDOM
DB_USERS=e2e_tls_users_$$
DB_NOTIF=e2e_tls_notif_$$
pg() { psql "$HD_PG_URL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
cleanup() {
  svc_cleanup
  pg -c "DROP DATABASE IF EXISTS $DB_USERS WITH (FORCE)" -c "DROP DATABASE IF EXISTS $DB_NOTIF WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 143' TERM INT
TMP=$SVC_DIR
PASSWORD='correct horse battery staple'
pg -c "CREATE DATABASE $DB_USERS" -c "CREATE DATABASE $DB_NOTIF" || { echo "FAIL: cannot create the databases"; exit 1; }
db_url() { echo "${HD_PG_URL%/*}/$1"; }   # plain URLs: HD_DATABASE_CA_FILE adds the TLS

call() {
  local method=$1 url=$2 body=${3:--}
  shift 3 2>/dev/null || shift $#
  local args=(-s -m 10 -o "$TMP/body" -X "$method" "$url")
  [ "$body" != "-" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$@" -w '%{http_code}')
}
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$TMP/body" 2>/dev/null; }

TLS_ENV=(
  "HD_AMQP_URL=$HD_AMQPS_URL" "HD_AMQP_CA_FILE=$HD_TLS_CA_FILE"
  "HD_DATABASE_CA_FILE=$HD_TLS_CA_FILE"
)

step "start herald-notifications and herald-users, every connection over TLS"
svc_start notifications "${TLS_ENV[@]}" "HD_DATABASE_URL=$(db_url "$DB_NOTIF")" \
  "HD_SMTP_URL=$HD_SMTP_TLS_URL" HD_SMTP_TLS=required "HD_SMTP_CA_FILE=$HD_TLS_CA_FILE" \
  HD_SMTP_TIMEOUT_MS=5000 || fatal "herald-notifications did not start"
svc_start users "${TLS_ENV[@]}" "HD_DATABASE_URL=$(db_url "$DB_USERS")" ||
  fatal "herald-users did not start"
ok
check "notifications verified STARTTLS at start-up" \
  grep -q '"message":"SMTP: STARTTLS verified"' "$(svc_log notifications)"

step "register -> verification mail -> verify -> welcome mail"
ADA=$RUN-ada@example.com
call POST "$(svc_url users)/users" "{\"email\":\"$ADA\",\"password\":\"$PASSWORD\",\"name\":\"E2E\"}" \
  -H "X-Correlation-Id: $RUN-register"
[ "$STATUS" = 201 ] || fatal "POST /users: expected 201, got $STATUS: $(head -c 300 "$TMP/body")"
ok
ADA_ID=$(jget "d['id']")
MAIL=$(svc_mail_wait "$ADA" "Confirm your e-mail address" 1 30) ||
  fatal "no verification mail for $ADA within 30 s"
ok
check "the verification mail crossed STARTTLS (the sink says so)" grep -q "^X-Envelope-TLS: yes" "$MAIL"
LINK=$(svc_mail_link "$MAIL")
TOKEN=${LINK##*token=}
call POST "$(svc_url users)/users/verify" "{\"token\":\"$TOKEN\"}" -H "X-Correlation-Id: $RUN-verify"
[ "$STATUS" = 200 ] || fatal "POST /users/verify: expected 200, got $STATUS: $(head -c 300 "$TMP/body")"
ok
WELCOME=$(svc_mail_wait "$ADA" "Welcome to herald" 1 30) || fatal "no welcome mail for $ADA within 30 s"
ok
check "the welcome mail crossed STARTTLS (the sink says so)" grep -q "^X-Envelope-TLS: yes" "$WELCOME"
call GET "$(svc_url notifications)/notifications/history/$ADA_ID" - -H "$(svc_notif_auth)"
check "history: welcome then email_verification, both sent (got $STATUS $(jget "[(i['type'], i['status']) for i in d['items']]"))" \
  test "$(jget "[(i['type'], i['status']) for i in d['items']]")" = "[('welcome', 'sent'), ('email_verification', 'sent')]"

step "the servers' side: TLS on every connection"
# RabbitMQ: the harness's broker is this test's own, so every connection is one of the
# services' (users: relay; notifications: consumer, relay, stats).
CONNS=$("$HD_SERVERS_CTL" rabbitmqctl --quiet list_connections --no-table-headers port ssl ssl_protocol 2>/dev/null)
echo "$CONNS" | sed 's/^/  /'
check "the services hold AMQP connections (got $(grep -c . <<<"$CONNS"))" test "$(grep -c . <<<"$CONNS")" -ge 3
check "every one of them is TLS" bash -c '! grep -qvE "^[0-9]+[[:space:]]+true[[:space:]]" <<<"$1"' _ "$CONNS"
SESS=$(pg -c "SELECT a.datname, s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.datname IN ('$DB_USERS', '$DB_NOTIF')")
echo "$SESS" | sed 's/^/  /'
check "both databases have sessions" test "$(cut -d'|' -f1 <<<"$SESS" | sort -u | wc -l)" = 2
check "every session is TLS" bash -c '! grep -q "|f|" <<<"$1"' _ "$SESS"

step "SIGTERM"
check "herald-users exits 0 on SIGTERM" svc_stop users
check "herald-notifications exits 0 on SIGTERM" svc_stop notifications

[ "$failed" -eq 0 ] || svc_dump_logs 60
finish
