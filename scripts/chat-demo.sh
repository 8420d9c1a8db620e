#!/usr/bin/env bash
# chat-demo.sh BUILD_DIR [--serve] — what `make chat-demo` runs once the servers are up.
#
# Two herald-chat processes on one Redis pub/sub bus (HD_REDIS_URL, from scripts/servers.sh):
# ann joins 'general' on the first, ben on the second, both listen to the room's event stream
# with curl, each says something, and the two streams are printed: each shows both messages,
# which crossed the bus. Then a clean stop (SIGTERM ends the streams with 'event: bye').
# With --serve the processes stay up for a browser (http://127.0.0.1:8090/ and :8091/) until
# Ctrl-C. The same story in C, with what pub/sub loses, is tutorial chapter 20.
set -uo pipefail

BUILD=${1:-build/dev}
SERVE=${2:-}
P1=${HD_CHAT_DEMO_PORT1:-8090}
P2=${HD_CHAT_DEMO_PORT2:-8091}
if [ -z "${HD_REDIS_URL:-}" ]; then
  echo "chat-demo: HD_REDIS_URL is not set. Run it as 'make chat-demo', or:" >&2
  echo "      scripts/servers.sh run -- scripts/chat-demo.sh $BUILD" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "chat-demo: curl is not installed (make deps)" >&2; exit 1; }
[ -x "$BUILD/herald-chat" ] || { echo "chat-demo: no $BUILD/herald-chat (make build)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/herald-chat-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

start() { # name port
  HD_CHAT_BUS=redis HD_CHAT_INSTANCE=$1 HD_CHAT_LISTEN=127.0.0.1:$2 \
    "$BUILD/herald-chat" >"$TMP/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "chat-demo: $1 did not start:" >&2
  cat "$TMP/$1.log" >&2
  exit 1
}
join() { # port name -> token
  curl -sf -X POST -H 'Content-Type: application/json' -d "{\"name\":\"$2\"}" \
    "http://127.0.0.1:$1/rooms/general/join" | sed -E 's/.*"token":"([0-9a-f]+)".*/\1/'
}
say() { # port token text
  curl -sf -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $2" \
    -d "{\"text\":\"$3\"}" "http://127.0.0.1:$1/rooms/general/messages" >/dev/null
}

start one "$P1"
start two "$P2"
echo "== two chat processes on one Redis bus: one on :$P1, two on :$P2"
ANN=$(join "$P1" ann)
BEN=$(join "$P2" ben)
echo "== ann joined on one, ben on two (tokens of ${#ANN} hex characters); both listen"
curl -sN "http://127.0.0.1:$P1/rooms/general/events?token=$ANN" >"$TMP/ann.sse" &
pids+=($!)
curl -sN "http://127.0.0.1:$P2/rooms/general/events?token=$BEN" >"$TMP/ben.sse" &
pids+=($!)
sleep 0.5
say "$P1" "$ANN" "hello from ann, on one"
say "$P2" "$BEN" "hi ann, ben here, on two"
sleep 1
for who in ann ben; do
  echo "== $who's event stream:"
  grep -E '^(event|data):' "$TMP/$who.sse" | sed 's/^/   /'
done
if [ "$SERVE" = "--serve" ]; then
  echo "== open http://127.0.0.1:$P1/ and http://127.0.0.1:$P2/ in a browser; Ctrl-C stops"
  wait "${pids[0]}"
fi
kill "${pids[0]}" "${pids[1]}"
wait "${pids[0]}" "${pids[1]}"
echo "== SIGTERM: both exited; the streams ended with:"
grep -A1 '^event: bye' "$TMP/ann.sse" | sed 's/^/   /'
