#!/usr/bin/env bash
# bench.sh BUILD_DIR — what `make bench` runs once the servers are up: every bench-*
# program of the (release) build, each printing progress and its figures and writing
# machine-readable results under BUILD_DIR/bench/.
set -euo pipefail
build=${1:-build/release}
mkdir -p "$build/bench"
# bench-limits measures the machine, not herald: `make limits` runs it (docs/limits.md).
benches=$(find "$build" -maxdepth 1 -type f -executable -name 'bench-*' ! -name bench-limits | sort)
if [ -z "$benches" ]; then
  echo "bench: no benchmark programs in $build/ (bench/*.c) yet" >&2
  exit 1
fi
for b in $benches; do
  printf '\n================ %s ================\n' "$(basename "$b")"
  out="$build/bench/$(basename "$b").json"
  "$b" --out "$out"
  # A PNG bar chart next to the JSON, when gnuplot is there (make deps installs it).
  if command -v gnuplot >/dev/null; then
    "$(dirname "$0")/../bench/plot.sh" "$out" && echo "bench: plot ${out%.json}.png"
  fi
done
