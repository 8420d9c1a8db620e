#!/usr/bin/env bash
# check_output.sh PROGRAM EXPECT_FILE [ARGS...]
# Runs PROGRAM and checks its standard output against EXPECT_FILE: every non-empty line of
# EXPECT_FILE that does not start with '#' is an extended regular expression that must
# match a line of the output, in order (other output lines may come in between). The
# program must also exit 0. Used by the tutorial tests so that the chapters cannot rot.
set -u
prog=$1; expect=$2; shift 2
out=$(mktemp); trap 'rm -f "$out"' EXIT
"$prog" "$@" >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 0 ]; then
  echo "check_output: $prog exited with $rc" >&2
  exit 1
fi
line=0
while IFS= read -r pattern || [ -n "$pattern" ]; do
  case "$pattern" in ''|'#'*) continue ;; esac
  found=$(tail -n +$((line + 1)) "$out" | grep -n -E -m1 -- "$pattern" | cut -d: -f1)
  if [ -z "$found" ]; then
    echo "check_output: no line after output line $line matches: $pattern" >&2
    exit 1
  fi
  line=$((line + found))
done <"$expect"
echo "check_output: all expectations of $(basename "$(dirname "$expect")") met"
