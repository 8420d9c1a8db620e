#!/usr/bin/env bash
# integration.install — the Release build compiles, and herald installs as a library a student can use from another
# project: headers under include/herald/, libherald.a and libherald.so, herald.pc, and CMake
# package files. Builds a clean release copy of the library, installs it into a temporary
# prefix, then builds tests/install/consumer with pkg-config and with find_package(herald)
# and runs both.
set -euo pipefail
src=${1:?source dir}
work=$(mktemp -d "${TMPDIR:-/tmp}/herald-install-XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

# The whole tree is built, tests included: it is also the check that the Release (-O2)
# build compiles, which `make bench` uses and whose warnings differ from -O0's.
echo "[1] configure + build the release tree in $work/build"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
if ! cmake --build "$work/build" -j 2 >"$work/build.log" 2>&1; then
  grep -E "error|warning" "$work/build.log" | head -20
  echo "release build failed"; exit 1
fi
echo "[2] install into $prefix"
cmake --install "$work/build" >/dev/null
for f in include/herald/herald.h include/herald/error.h lib/libherald.a lib/libherald.so \
         lib/pkgconfig/herald.pc lib/cmake/herald/heraldConfig.cmake; do
  [ -e "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
echo "    headers, static + shared library, herald.pc and CMake package present"

echo "[3] build the consumer with pkg-config (shared library)"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$src/tests/install/consumer/main.c" \
   $(pkg-config --cflags --libs herald)
out=$(LD_LIBRARY_PATH=$prefix/lib "$work/consumer-pc")
echo "$out"
grep -q 'uuid valid: 1' <<<"$out"
grep -q 'error name: HD_EJSON (malformed JSON)' <<<"$out"

echo "[4] build the consumer with CMake find_package(herald) (static library)"
cmake -S "$src/tests/install/consumer" -B "$work/consumer-build" \
      -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer-build" >/dev/null
out=$("$work/consumer-build/consumer")
echo "$out"
grep -q 'uuid valid: 1' <<<"$out"
if ldd "$work/consumer-build/consumer" | grep -q libherald; then
  echo "expected the CMake build to link the static library"; exit 1
fi
echo "install: OK"
