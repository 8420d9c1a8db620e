#!/usr/bin/env bash
# Install the Debian packages herald needs, and only those that are missing.
# Quick no-op when everything is present (one dpkg-query call).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  librabbitmq-dev rabbitmq-server
  libjansson-dev libcmocka-dev
  # jsonr.c: yajl's streaming lexer builds jansson trees (herald's events, decoded)
  libyajl-dev
  libsqlite3-dev sqlite3
  # libpq-dev and libcurl4-openssl-dev also install the runtime packages libpq5 and libcurl4,
  # whose libpq.so.5 and libcurl.so.4 herald loads on first use (src/herald/dynlib.h)
  libpq-dev postgresql
  libmicrohttpd-dev libcurl4-openssl-dev libsodium-dev uuid-dev
  python3 python3-aiosmtpd python3-yaml
  gcovr valgrind curl gnuplot-nox
  # make topology: dot renders docs/topology.svg from herald-admin topology --dot
  graphviz
  # scripts/servers.sh: the throwaway CA and server certificates of the TLS listeners
  openssl
  # the Redis pub/sub bus (src/herald/bus_redis.c: hiredis 0.14) and its server (servers.sh)
  redis-server libhiredis-dev
  # the fuzz preset: clang, and the runtimes of -fsanitize=fuzzer,address,undefined (Debian 12
  # ships libFuzzer for clang 14 in libclang-rt-14-dev, which clang does not depend on)
  clang libclang-rt-14-dev
  # integration.chat_browser: the chat page in a headless browser, driven over WebDriver
  chromium chromium-driver
  # bench-http: the HTTP load generator (closed loop, keep-alive, latency percentiles)
  wrk
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: must run as root to install packages (or install them yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's postinst scripts try to start services; without systemd they must not.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# apt and dpkg talk a lot; keep it in a log and show it only when something fails.
log=${TMPDIR:-/tmp}/herald-deps.log
start=$(date +%s)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
     >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "deps: apt-get failed (full log: $log)" >&2
  exit 1
fi
echo "deps: done in $(( $(date +%s) - start )) s (log: $log)"
