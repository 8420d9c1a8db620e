#!/usr/bin/env bash
# integration.messages_demo — scripts/messages-demo.sh (what `make messages-demo` runs) against
# the real servers: it must exit 0, print each step's heading and the lines that prove the
# story (202s, the hostile 422 as problem+json, the stored messages read back, the follow and
# the replay of the stream agreeing), never the admin token in full, and leave neither its
# database nor its stream behind.
#
#   test_messages_demo.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Needs HD_AMQP_URL, HD_PG_URL and HD_SERVERS_CTL (scripts/servers.sh's env file): a missing
# one is a FAILURE.
set -uo pipefail

SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
OUT=$(mktemp "${TMPDIR:-/tmp}/herald-messages-demo-test.XXXXXX")
trap 'rm -f "$OUT"' EXIT
pass=0
failed=0
ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
# has REGEX: a line of the demo's output matches the extended regex
has() { if grep -Eq -- "$1" "$OUT"; then ok; else bad "no line matches: $1"; fi; }

for v in HD_AMQP_URL HD_PG_URL HD_SERVERS_CTL; do
  if [ -z "${!v:-}" ]; then
    echo "FAIL: $v is not set: start the servers (scripts/servers.sh up; . \$HD_SERVERS_DIR/env)"
    exit 1
  fi
done

# the usage and a missing server fail clearly, before anything is started
if "$SRC/scripts/messages-demo.sh" --help | grep -q '^usage: scripts/messages-demo.sh'; then ok; else bad "--help"; fi
msg=$(HD_PG_URL='' "$SRC/scripts/messages-demo.sh" "$BUILD" 2>&1)
rc=$?
if [ "$rc" = 1 ] && [[ $msg == *"HD_PG_URL is not set"* ]]; then ok; else bad "no HD_PG_URL: rc $rc, '$msg'"; fi
msg=$("$SRC/scripts/messages-demo.sh" /nonexistent 2>&1)
rc=$?
if [ "$rc" = 1 ] && [[ $msg == *"no /nonexistent/herald-users"* ]]; then ok; else bad "no binary: rc $rc, '$msg'"; fi

"$SRC/scripts/messages-demo.sh" "$BUILD" >"$OUT" 2>&1
rc=$?
cat "$OUT"
echo "---- checks"
if [ "$rc" = 0 ]; then ok; else bad "messages-demo.sh exited $rc"; fi

RUN=$(sed -nE 's/^== messages demo ([0-9a-f]+):.*/\1/p' "$OUT")
if [ -n "$RUN" ]; then ok; else bad "no run id in the first heading"; RUN=none; fi
has "^== herald-admin stream declare messages\.demo-$RUN --bind messages messages\.message_sent$"
has "^   stream messages\.demo-$RUN declared; bound to messages \(messages\.message_sent\)$"
has "^   listening on http://127\.0\.0\.1:[0-9]+$"
n=$(grep -cE '^   [0-9a-f-]{36} accepted  <- \{' "$OUT")
if [ "$n" = 3 ]; then ok; else bad "3 messages accepted, saw $n"; fi
has '^   HTTP 422 application/problem\+json$'
has '"field": "\(body\)"'
has '^   all 3 stored$'
has "^   [0-9a-f]{8}  ada@demo-$RUN +\"hello bob\" +metadata \{\"priority\": \"high\", \"tags\": \[\"demo\"\]\}$"
n=$(sed -n '/^== GET \/messages?sender=/,/^== GET \/messages\//p' "$OUT" | grep -cE "^   [0-9a-f]{8}  ")
if [ "$n" = 2 ]; then ok; else bad "?sender= lists ada's 2 messages, saw $n"; fi
has '^     "correlation_id": '
has "^   projection live of messages\.demo-$RUN: 3 records handled, 0 skipped, last offset 2$"
has "^   projection:live +messages\.demo-$RUN +2 "
has "^   projection rebuilt of messages\.demo-$RUN: 3 records handled, 0 skipped, last offset 2$"
has "^     messages\.message_sent/ada@demo-$RUN +2  \(last offset 2\)$"
has '^== the projections agree: live = rebuilt, 2 rows, 3 records$'
has '^== SIGTERM: herald-users exited 0'
if grep -Eq 'admin-[0-9a-f]{32}' "$OUT"; then bad "the admin token is printed in full"; else ok; fi

# cleaned up: no database, no stream of this run
left=$(psql "$HD_PG_URL" -XAtqc "SELECT count(*) FROM pg_database WHERE datname = 'herald_demo_$RUN'")
if [ "$left" = 0 ]; then ok; else bad "database herald_demo_$RUN left behind ($left)"; fi
if "$HD_SERVERS_CTL" rabbitmqctl -q list_queues name 2>/dev/null | grep -qx "messages\.demo-$RUN"; then
  bad "stream messages.demo-$RUN left behind"
else
  ok
fi

printf '\n%d checks passed, %d failed\n' "$pass" "$failed"
[ "$failed" = 0 ]
