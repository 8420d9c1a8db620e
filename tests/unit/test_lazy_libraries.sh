#!/usr/bin/env bash
# unit.lazy_libraries — the services do not link libpq nor libcurl (src/herald/dynlib.h):
# they load them on first use, so that a service on SQLite with a log sender never maps
# them nor the ~20 libraries they bring. Checks every herald-* program of the build and the
# shared libraries, with ldd (what the loader maps at start-up, dependencies of dependencies
# included):
#
#   test_lazy_libraries.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Fails when one maps libpq or libcurl, or when there is nothing to check (a build without
# the services must not pass by finding no file).
set -uo pipefail
build=${2:?usage: test_lazy_libraries.sh SOURCE_DIR BUILD_DIR}
checked=0 failed=0
for f in "$build"/herald-* "$build"/libherald.so "$build"/libherald-service.so; do
  [ -f "$f" ] && [ -x "$f" ] || continue # not herald-service.pc; the .so files are +x
  checked=$((checked + 1))
  if out=$(ldd "$f" 2>&1 | grep -E 'libpq\.so|libcurl\.so'); then
    echo "FAIL $(basename "$f") maps at start-up: $out"
    failed=$((failed + 1))
  else
    echo "ok   $(basename "$f")"
  fi
done
if [ "$checked" -eq 0 ]; then
  echo "FAIL no herald-* program nor libherald*.so in $build: nothing checked"
  exit 1
fi
[ "$failed" -eq 0 ] || exit 1
echo "lazy_libraries: $checked files, none maps libpq or libcurl"
