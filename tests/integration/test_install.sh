#!/usr/bin/env bash
# integration.install — the Release build compiles, and herald installs as two libraries a
# student can use from another project: headers under include/herald/; libherald (the
# patterns) and libherald-service (HTTP, metrics, settings, templates, senders), each static
# and shared; herald.pc and herald-service.pc; CMake package files. Builds a clean release
# copy, installs it into a temporary prefix, then builds
#   tests/install/consumer  (only herald: the outbox) with pkg-config and find_package(herald),
#                           and checks it links neither libmicrohttpd nor libcurl;
#   tests/install/service   (herald-service) the same two ways;
# and runs them.
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
for f in include/herald/herald.h include/herald/service.h include/herald/error.h \
         include/herald/http.h lib/libherald.a lib/libherald.so \
         lib/libherald-service.a lib/libherald-service.so \
         lib/pkgconfig/herald.pc lib/pkgconfig/herald-service.pc \
         lib/cmake/herald/heraldConfig.cmake; do
  [ -e "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
echo "    headers, static + shared libraries, herald.pc, herald-service.pc and CMake package present"

# herald's pkg-config closure must not name herald-service's dependencies, and the shared
# library must not need them.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
if pkg-config --print-requires --print-requires-private herald | grep -Eq 'microhttpd|curl'; then
  echo "herald.pc requires libmicrohttpd or libcurl"; exit 1
fi
pkg-config --print-requires herald-service | grep -q '^herald' ||
  { echo "herald-service.pc does not require herald"; exit 1; }
no_service_deps() { # $1: what, $2: binary
  if ldd "$2" | grep -Eq 'libmicrohttpd|libcurl|libherald-service'; then
    ldd "$2"; echo "$1 pulls in herald-service's dependencies"; exit 1
  fi
}
no_service_deps libherald.so "$prefix/lib/libherald.so"

echo "[3] build the herald-only consumer with pkg-config (shared library)"
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$src/tests/install/consumer/main.c" \
   $(pkg-config --cflags --libs herald)
out=$(LD_LIBRARY_PATH=$prefix/lib "$work/consumer-pc")
echo "$out"
grep -q 'uuid valid: 1' <<<"$out"
grep -q 'error name: HD_EJSON (malformed JSON)' <<<"$out"
grep -q 'outbox pending: 1' <<<"$out"
LD_LIBRARY_PATH=$prefix/lib no_service_deps consumer-pc "$work/consumer-pc"
echo "    links neither libmicrohttpd nor libcurl"

echo "[4] build the herald-only consumer with CMake find_package(herald) (static library)"
cmake -S "$src/tests/install/consumer" -B "$work/consumer-build" \
      -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer-build" -- VERBOSE=1 >"$work/consumer-build.log"
out=$("$work/consumer-build/consumer")
echo "$out"
grep -q 'uuid valid: 1' <<<"$out"
grep -q 'outbox pending: 1' <<<"$out"
if ldd "$work/consumer-build/consumer" | grep -q libherald; then
  echo "expected the CMake build to link the static library"; exit 1
fi
link_line=$(grep -E -- '-o consumer( |$)' "$work/consumer-build.log")
[ -n "$link_line" ] || { echo "no link line in the consumer's build log"; exit 1; }
if grep -Eq 'microhttpd|curl|herald-service' <<<"$link_line"; then
  echo "$link_line"
  echo "the herald-only consumer's link line names herald-service or its dependencies"; exit 1
fi
no_service_deps consumer "$work/consumer-build/consumer"
echo "    links neither libmicrohttpd nor libcurl"

echo "[5] build the herald-service consumer with pkg-config (shared) and find_package (static)"
cc -std=c11 -Wall -Wextra -Werror -o "$work/service-pc" "$src/tests/install/service/main.c" \
   $(pkg-config --cflags --libs herald-service)
out=$(LD_LIBRARY_PATH=$prefix/lib "$work/service-pc")
echo "$out"
grep -q 'subject: Welcome, Ada' <<<"$out"
grep -q 'uuid valid: 1' <<<"$out"
cmake -S "$src/tests/install/service" -B "$work/service-build" \
      -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/service-build" >/dev/null
out=$("$work/service-build/service")
grep -q 'subject: Welcome, Ada' <<<"$out"
grep -q 'uuid valid: 1' <<<"$out"
echo "    both builds run"
echo "install: OK"
