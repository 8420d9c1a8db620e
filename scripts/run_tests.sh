#!/usr/bin/env bash
# run_tests.sh MODE — the test phases `make test` and `make coverage` run, with the servers
# already up (scripts/servers.sh run -- ...) and the builds already made.
#   all       the query plans of every SQL statement (scripts/plan_audit, coverage build);
#             coverage build: every label; asan build: unit tests; valgrind: unit tests;
#             fuzz build: each target for FUZZ_SMOKE_SECONDS (default 5) over its corpus;
#             then the coverage summary (no threshold); last, the secrets check
#             (scripts/check_secrets_in_logs.sh over every log the run wrote)
#   coverage  coverage build: every label, then the gcovr HTML report and the threshold
#   valgrind [BUILD_DIR]  unit tests of BUILD_DIR under valgrind (default build/coverage)
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
COVERAGE_MIN=${COVERAGE_MIN:-80}
status=0
start=$(date +%s)

phase() { printf '\n==== %s ====\n' "$*"; }

# The services' logs of this run, kept for the secrets check (hd_proc, scripts/lib/services.sh
# and the shell tests copy their logs here before removing their temp dirs).
export HD_TEST_LOG_DIR=${HD_TEST_LOG_DIR:-$PWD/build/test-logs}
rm -rf "$HD_TEST_LOG_DIR" && mkdir -p "$HD_TEST_LOG_DIR"
check_secrets() { # build dir
  phase "secrets: no password or token in any log line of this run"
  scripts/check_secrets_in_logs.sh "$HD_TEST_LOG_DIR" "$1"/Testing/Temporary/LastTest*.log \
    ${HD_SERVERS_DIR:+"$HD_SERVERS_DIR"} || status=1
}

run_suite() { # build dir
  find "$1" -name '*.gcda' -delete 2>/dev/null
  phase "test suite (unit, contract, integration, tutorial) in $1"
  ctest --test-dir "$1" --output-on-failure -j "$JOBS" || status=1
}

run_valgrind() { # build dir
  phase "valgrind: unit tests of $1"
  local n=0 bad=0
  for t in "$1"/unit-*; do
    [ -x "$t" ] || continue
    n=$((n + 1))
    # HD_TEST_VALGRIND=1: the few tests that bound a wait between threads loosen it here
    # (valgrind runs one thread at a time); their tight bounds are the ctest runs'.
    if ! HD_TEST_VALGRIND=1 valgrind -q --error-exitcode=99 --leak-check=full \
         --errors-for-leak-kinds=definite,indirect "$t" >"$t.valgrind.log" 2>&1; then
      echo "valgrind: $(basename "$t") FAILED"; cat "$t.valgrind.log"; bad=$((bad + 1))
    fi
  done
  echo "valgrind: $n unit test programs, $bad with errors"
  [ $bad -eq 0 ] || status=1
}

coverage_report() { # threshold (empty = report only)
  phase "coverage of src/herald/"
  mkdir -p build/coverage/html
  # --gcov-ignore-parse-errors: a last guard against odd gcov lines from threaded code.
  local args=(--root . --filter 'src/herald/' build/coverage --gcov-ignore-parse-errors
              --html-details build/coverage/html/index.html
              --txt build/coverage/coverage.txt --print-summary)
  [ -n "${1:-}" ] && args+=(--fail-under-line "$1")
  gcovr "${args[@]}" | tail -n 3 || status=1
  echo "coverage: HTML report at build/coverage/html/index.html, text at build/coverage/coverage.txt"
}

case "$mode" in
  all)
    # First: run_suite then clears the .gcda files that the audit's migrate program writes.
    phase "query plans: every SQL statement against production-shaped tables (scripts/plan_audit)"
    scripts/plan_audit/run.sh --quick --build-dir build/coverage --work build/plan-audit || status=1
    run_suite build/coverage
    phase "sanitizers (ASan + UBSan): unit tests"
    ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build/asan -L unit --output-on-failure -j "$JOBS" || status=1
    run_valgrind build/coverage
    phase "fuzz smoke: each target of build/fuzz for ${FUZZ_SMOKE_SECONDS:-5} s"
    scripts/fuzz.sh smoke "${FUZZ_SMOKE_SECONDS:-5}" || status=1
    coverage_report ""
    check_secrets build/coverage
    ;;
  coverage)
    run_suite build/coverage
    coverage_report "$COVERAGE_MIN"
    ;;
  valgrind)
    run_valgrind "${2:-build/coverage}"
    ;;
  *) echo "usage: $0 all|coverage|valgrind [BUILD_DIR]" >&2; exit 2 ;;
esac

phase "done in $(( $(date +%s) - start )) s: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
