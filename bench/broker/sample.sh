#!/bin/bash
# sample.sh OUT [INTERVAL_MS] — sample the private test broker (scripts/servers.sh, env of
# $HD_SERVERS_DIR) every INTERVAL_MS (default 300) into OUT until OUT.stop exists: the node's
# reductions per process class (queue processes by queue name, channel/reader/writer processes
# by connection), the beam's utime/stime and its read/write syscalls (/proc/PID/io).
# Then: reductions.py OUT N (per event), timeline.py OUT PATTERN... (per sample).
# Needs erlc/escript (the broker's Erlang). The sampler is a hidden node that loads bxs.beam
# into the broker: use it on a private test broker only.
set -eu
out=$1 ms=${2:-300}
here=$(cd "$(dirname "$0")" && pwd)
dir=${HD_SERVERS_DIR:?export HD_SERVERS_DIR (your private servers)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
erlc -o "$work" "$here/bxs.erl"
cp "$here/sampler.escript" "$work/"
export ERL_EPMD_PORT=${HD_EPMD_PORT:?export HD_EPMD_PORT} ERL_EPMD_ADDRESS=127.0.0.1
rm -f "$out" "$out.stop"
escript "$work/sampler.escript" herald@localhost "$(cat "$dir/rabbitmq/home/.erlang.cookie")" \
  "$(cat "$dir/rabbitmq/rabbit.pid")" "$out" "$ms" "$out.stop"
