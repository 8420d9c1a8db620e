#!/usr/bin/env bash
# fuzz.sh MODE SECONDS [TARGET...] — run the libFuzzer targets of build/fuzz (make build-fuzz
# builds them; tests/fuzz/README.md explains them). Default: every build/fuzz/fuzz-* program.
#   run    each target for SECONDS on a copy of its corpus, build/fuzz/corpus-<x> (kept between
#          runs, so a longer campaign resumes; the committed tests/fuzz/corpus/<x> is read
#          only). make fuzz (FUZZ_SECONDS).
#   smoke  each target for SECONDS over its committed corpus, what it finds going to a scratch
#          directory. make test (FUZZ_SMOKE_SECONDS): a crash fails CI.
# SECONDS 0 only replays the corpus.
# A finding stops its target and is written to build/fuzz/crash-<hash> (or leak-, timeout-,
# oom-); the script goes on with the other targets and exits 1 at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
seconds=${2:-}
shift 2 2>/dev/null || true
case "$mode" in run | smoke) ;; *)
  echo "usage: $0 run|smoke SECONDS [TARGET...]" >&2
  exit 2
  ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a number, not '$seconds'" >&2; exit 2; }
out=build/fuzz

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in tests/fuzz/fuzz_*.c; do
    x=$(basename "$src" .c)
    targets+=("${x#fuzz_}")
  done
fi

status=0
for x in "${targets[@]}"; do
  bin=$out/fuzz-$x
  seeds=tests/fuzz/corpus/$x
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is missing (make build-fuzz)"; status=1; continue
  fi
  if [ ! -d "$seeds" ]; then
    echo "fuzz: $seeds is missing: every target needs a seed corpus"; status=1; continue
  fi
  if [ "$mode" = run ]; then
    dirs=("$out/corpus-$x")
    mkdir -p "${dirs[0]}" && cp -n "$seeds"/* "${dirs[0]}"/ 2>/dev/null
  else
    # libFuzzer writes new inputs to its first directory: a scratch one, emptied each time.
    dirs=("$out/smoke-$x" "$seeds")
    rm -rf "${dirs[0]}" && mkdir -p "${dirs[0]}"
  fi
  log=$out/fuzz-$x.log
  start=$(date +%s)
  # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is 2 GB.
  # 0 seconds replays the corpus and stops (libFuzzer's -max_total_time=0 means no limit).
  limit=(-max_total_time="$seconds")
  [ "$seconds" -eq 0 ] && limit=(-runs=0)
  "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  if [ $rc -eq 0 ]; then
    echo "fuzz: $x ok, ${runs:-?} inputs in $(( $(date +%s) - start )) s"
  else
    status=1
    echo "fuzz: $x FAILED (exit $rc), log $log:"
    grep -E -m 20 'ERROR|SUMMARY|runtime error|^    #[0-9]+ .* in (LLVMFuzzerTestOneInput|hd_|users_|check_)|Test unit written|^artifact' "$log"
    echo "fuzz: reproduce with: $bin <the crash- file above>   (tests/fuzz/README.md)"
  fi
done
exit $status
