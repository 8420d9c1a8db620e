#!/usr/bin/env bash
# check_secrets_in_logs.sh [--list FILE] [PATH...] — no password or token in any log line.
#
# Scans every log a test run wrote: the services' logs the integration tests and tutorials
# keep in HD_TEST_LOG_DIR (scripts/run_tests.sh sets it; hd_proc and scripts/lib/services.sh
# copy each log there before removing their temp dirs), ctest's
# <build>/Testing/Temporary/LastTest*.log, and the test servers' logs under HD_SERVERS_DIR
# (the SMTP sink's maildir is not a log: mails carry links by design). PATHs (files or
# directories) replace those defaults.
#
# Looks for:
#   1. every secret of tests/test_secrets.txt (literal, or "re:" regex), in every line;
#   2. the password of HD_AMQP_URL, HD_PG_URL and HD_REDIS_URL, as "user:password@" (a bare
#      "guest" would match every user name), in every line;
#   3. generic shapes in JSON log lines (lines with "level":"): token=<16+ hex>, a
#      "..._link":"http..." member, "Bearer <credential>" — a token made at run time
#      (verification, reset) cannot be listed, but it cannot hide either. Other lines are a
#      test's own output (a tutorial prints the link it follows): they are checked for 1 and 2.
# Prints each hit (file:line, the secret's name, the line with the secret masked, cut to 300
# bytes: the report lands in a CI log too) and exits 1 when
# there is one, 2 on bad usage or when there was nothing to scan, 0 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
LIST=tests/test_secrets.txt
if [ "${1:-}" = --list ]; then LIST=$2; shift 2; fi
[ -r "$LIST" ] || { echo "check_secrets_in_logs: cannot read $LIST" >&2; exit 2; }

paths=("$@")
if [ ${#paths[@]} -eq 0 ]; then
  [ -n "${HD_TEST_LOG_DIR:-}" ] && paths+=("$HD_TEST_LOG_DIR")
  for b in build/coverage build/dev build/asan; do
    for f in "$b"/Testing/Temporary/LastTest*.log; do [ -f "$f" ] && paths+=("$f"); done
  done
  [ -n "${HD_SERVERS_DIR:-}" ] && paths+=("$HD_SERVERS_DIR")
fi

# The files: *.log under directories (not the maildir, not database files), files as given.
files=()
for p in "${paths[@]}"; do
  if [ -d "$p" ]; then
    while IFS= read -r -d '' f; do files+=("$f"); done < <(
      find "$p" \( -name maildir -o -name mnesia -o -name data \) -prune -o \
        -type f \( -name '*.log' -o -name '*.log.[0-9]*' \) -print0 2>/dev/null)
  elif [ -f "$p" ]; then
    files+=("$p")
  else
    echo "check_secrets_in_logs: $p: no such file or directory (skipped)" >&2
  fi
done
if [ ${#files[@]} -eq 0 ]; then
  echo "check_secrets_in_logs: no log to scan (paths: ${paths[*]:-none})" >&2
  exit 2
fi

hits=0
# report NAME FIXED|REGEX PATTERN, with grep -Hn lines ("file:line:text") on stdin. The hit is
# shown with the secret masked: this report lands in a CI log too.
report() {
  local name=$1 kind=$2 pat=$3 line
  while IFS= read -r line; do
    hits=$((hits + 1))
    if [ "$kind" = FIXED ]; then
      line=${line//"$pat"/***}
    else
      line=$(printf '%s' "$line" | sed -E "s#$pat#***#g" 2>/dev/null || echo "${line%%:*}: (line not shown)")
    fi
    printf 'SECRET (%s) in %s\n' "$name" "${line:0:300}"
  done
}

# 1. the list. A listed literal that no longer occurs anywhere in the sources is stale.
nlist=0
while IFS= read -r s || [ -n "$s" ]; do
  case "$s" in '' | '#'*) continue ;; esac
  nlist=$((nlist + 1))
  if [ "${s#re:}" != "$s" ]; then
    re=${s#re:}
    report "listed pattern ${re:0:20}" REGEX "$re" < <(grep -HnE -- "$re" "${files[@]}" 2>/dev/null)
  else
    grep -rqF --exclude="${LIST##*/}" -- "$s" tests scripts tutorial bench 2>/dev/null ||
      echo "check_secrets_in_logs: note: '${s:0:6}...' of $LIST is used nowhere any more" >&2
    report "listed secret ${s:0:3}***" FIXED "$s" < <(grep -HnF -- "$s" "${files[@]}" 2>/dev/null)
  fi
done <"$LIST"

# 2. the servers' passwords, as they would appear in a URL.
for v in HD_AMQP_URL HD_PG_URL HD_REDIS_URL; do
  url=${!v:-}
  auth=${url#*://}
  [ "$auth" != "$url" ] || continue
  auth=${auth%@*}
  [ "$auth" != "${url#*://}" ] || continue # no '@': no userinfo
  case "$auth" in *:*) ;; *) continue ;; esac
  pass=${auth#*:}
  [ -n "$pass" ] && [ "$pass" != '***' ] || continue
  report "password of $v" FIXED ":$pass@" < <(grep -HnF -- ":$pass@" "${files[@]}" 2>/dev/null)
done

# 3. generic shapes, in JSON log lines.
generic='token=[0-9a-fA-F]{16,}|_link"[[:space:]]*:[[:space:]]*"https?:|[Bb]earer [A-Za-z0-9._~+/=-]{8,}'
report "token or link in a log line" REGEX "$generic" < <(grep -HnE -- '"level":"' "${files[@]}" 2>/dev/null |
  grep -E -- "$generic")

echo "check_secrets_in_logs: ${#files[@]} log files, $nlist listed secrets + server passwords + generic shapes: $hits hits"
[ $hits -eq 0 ]
