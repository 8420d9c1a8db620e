# scripts/lib/http_test.sh — pass/fail counting and curl helpers for the shell tests that drive
# a herald service over HTTP (tests/integration/test_users_http.sh, test_users_messages.sh).
#
# Sourced (never run), after TMP is set (a private directory):
#
#   . "$SRC/scripts/lib/http_test.sh"
#   step "the users"                             # a heading
#   need_env HD_AMQP_URL                         # unset: FAIL and exit 1 (never a skip)
#   BASE=http://127.0.0.1:$port                  # the server, before the first call
#   call POST /users '{"email":...}' -H "$(admin)"   # STATUS, CTYPE; body in $TMP/body
#   expect 201                                   # or: expect 400 problem
#   check "an id" test -n "$(jget "d['id']")"    # counts pass / failed
#   ...; printf '%d passed, %d failed\n' "$pass" "$failed"
#
# Settings (before the calls): HTTP_TEST_RESPONSES=FILE appends every body to FILE (searched
# for secrets afterwards); HTTP_TEST_PROBLEM_STATUS=1 makes `expect N problem` also check the
# problem body's "status".

pass=0
failed=0

ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { # description, then a command that must succeed
  local what=$1; shift
  if "$@"; then ok; else bad "$what"; fi
}
step() { printf '\n== %s\n' "$*"; }

need_env() { # VAR...: each must be set (the servers' env file)
  local v
  for v in "$@"; do
    if [ -z "${!v:-}" ]; then
      echo "FAIL: $v is not set: start the servers (scripts/servers.sh up; . \$HD_SERVERS_DIR/env)"
      exit 1
    fi
  done
}

# call METHOD PATH [JSON_BODY|-] [curl args...]: sets STATUS and CTYPE, body in $TMP/body,
# headers in $TMP/headers.
call() {
  local method=$1 path=$2 body=${3:--}
  shift 3 2>/dev/null || shift $#
  local args=(-s -o "$TMP/body" -D "$TMP/headers" -X "$method" "$BASE$path")
  [ "$body" != "-" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$@" -w '%{http_code}')
  CTYPE=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^[Cc]ontent-[Tt]ype: //p' | tail -n 1)
  if [ -n "${HTTP_TEST_RESPONSES:-}" ]; then
    cat "$TMP/body" >>"$HTTP_TEST_RESPONSES"
    echo >>"$HTTP_TEST_RESPONSES"
  fi
}
# expect STATUS [problem]: the last call's status (and problem+json content type)
expect() {
  local want=$1 kind=${2:-}
  if [ "$STATUS" != "$want" ]; then
    bad "expected $want, got $STATUS: $(head -c 300 "$TMP/body")"
    return
  fi
  ok
  if [ "$kind" = problem ]; then
    check "status $want has content type application/problem+json (got '$CTYPE')" \
      test "$CTYPE" = "application/problem+json"
    if [ -n "${HTTP_TEST_PROBLEM_STATUS:-}" ]; then
      check "problem body has status $want" test "$(jget "d['status']")" = "$want"
    fi
  fi
}
# jget PYTHON_EXPR: evaluate over the last JSON body, bound to d
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$TMP/body" 2>/dev/null; }
# header NAME: the last call's header NAME (case-insensitive), without its CR
header() { tr -d '\r' <"$TMP/headers" | sed -n "s/^$1: //Ip" | tail -n 1; }
