#!/usr/bin/env bash
# demo.sh BUILD_DIR — what `make demo` runs once the servers are up (scripts/servers.sh run).
# Until the users and notifications services exist, the demo is the tutorial: every
# chapter in learning order, each printing what it does step by step.
set -euo pipefail
build=${1:-build/dev}
chapters=$(find "$build" -maxdepth 1 -type f -executable -name 'tutorial-[0-9]*' | sort)
if [ -z "$chapters" ]; then
  echo "demo: no tutorial chapters built in $build" >&2
  exit 1
fi
n=0
for ch in $chapters; do
  n=$((n + 1))
  printf '\n================ %s ================\n' "$(basename "$ch" | sed 's/^tutorial-//')"
  "$ch"
done
printf '\ndemo: %d chapters ran. Their pages are in docs/tutorial/.\n' "$n"
