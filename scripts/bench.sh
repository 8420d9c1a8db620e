#!/usr/bin/env bash
# bench.sh BUILD_DIR — what `make bench` runs once the servers are up: every bench-*
# program of the (release) build, each printing progress and its figures and writing
# machine-readable results under BUILD_DIR/bench/. With the three-node cluster up
# (HD_CLUSTER_URL_1 in the env: `make bench` starts it), bench-relay_inbox runs again on the
# cluster, classic then quorum queue, and the cluster figures are printed (bench_cluster).
# Last, bench/summary.py prints one table of every figure of issue 14 with its target and
# verdict and writes BUILD_DIR/bench/summary.{json,md,png}.
#
# A bench that fails (an event lost, a phase failed: its exit status 1) does not stop the
# others; the summary shows its figures as "not run" (or FAILED), and bench.sh exits 1. A
# missed target is a verdict in the tables, not an error: exit 0.
set -euo pipefail
build=${1:-build/release}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build/bench"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
failed=() # the benches that failed, by name
cmds=()   # every command run, for the summary's record
# bench-limits measures the machine, not herald: `make limits` runs it (docs/limits.md).
benches=$(find "$build" -maxdepth 1 -type f -executable -name 'bench-*' ! -name bench-limits | sort)
if [ -z "$benches" ]; then
  echo "bench: no benchmark programs in $build/ (bench/*.c) yet" >&2
  exit 1
fi
for b in $benches; do
  printf '\n================ %s ================\n' "$(basename "$b")"
  out="$build/bench/$(basename "$b").json"
  rm -f "$out" "${out%.json}.png" # no figures of an earlier run in this run's summary
  cmds+=("$b --out $out")
  "$b" --out "$out" || { echo "bench: $(basename "$b") FAILED" >&2; failed+=("$(basename "$b")"); }
  # A PNG bar chart next to the JSON, when gnuplot is there (make deps installs it).
  if [ -s "$out" ] && command -v gnuplot >/dev/null; then
    "$here/../bench/plot.sh" "$out" && echo "bench: plot ${out%.json}.png"
  fi
done

# ---- the cluster (issue 10) ------------------------------------------------------------------
# bench-relay_inbox on node 1 of the cluster, twice: a classic queue (on node 1 only), then a
# quorum queue (leader on node 1, replicated to nodes 2 and 3: a confirm waits for a majority).
# Each run measures raw publish/consume and herald's relay and consumer + inbox on the same
# queue in the same run (the ratios); quorum / classic of the same phase across the two runs
# is the cost of replication.
bench_cluster() {
  local b=$build/bench-relay_inbox rounds=${HD_BENCH_CLUSTER_ROUNDS:-3} qt
  [ -x "$b" ] || { echo "bench: no $b" >&2; return 1; }
  rm -f "$build/bench/cluster-relay_inbox-"{classic,quorum}.json "$build/bench/cluster.json"
  for qt in classic quorum; do
    printf '\n================ bench-relay_inbox on the cluster, %s queue ================\n' "$qt"
    cmds+=("$b --amqp-url \$HD_CLUSTER_URL_1 --queue-type $qt --rounds $rounds --no-tls${HD_BENCH_CLUSTER_COUNT:+ --count $HD_BENCH_CLUSTER_COUNT} --out $build/bench/cluster-relay_inbox-$qt.json")
    "$b" --amqp-url "$HD_CLUSTER_URL_1" --queue-type "$qt" --rounds "$rounds" --no-tls \
      ${HD_BENCH_CLUSTER_COUNT:+--count "$HD_BENCH_CLUSTER_COUNT"} \
      --out "$build/bench/cluster-relay_inbox-$qt.json" || return 1
  done
  python3 - "$build/bench/cluster-relay_inbox-classic.json" "$build/bench/cluster-relay_inbox-quorum.json" \
    "$build/bench/cluster.json" <<'PY'
import json, sys
c, q = (json.load(open(p)) for p in sys.argv[1:3])
def rate(r, k):
    p = r["phases"].get(k) or {}
    return p.get("rate_per_s")  # the median of the rounds
def ratio(a, b):
    return a / b if a and b else None
out = {"benchmark": "cluster", "date": q.get("date"), "broker": q.get("broker"),
       "nodes": 3, "rounds": q.get("rounds_done"), "ratios": {}, "rates": {}}
print("\n  cluster of 3 nodes, RabbitMQ %s: medians of %s rounds, msg/s" %
      ((q.get("broker") or {}).get("version", "?"), q.get("rounds_done")))
print("  %-28s %12s %12s %14s" % ("phase", "classic", "quorum", "quorum/classic"))
for k in ("raw_publish", "relay", "raw_consume", "consumer_inbox"):
    a, b = rate(c, k), rate(q, k)
    out["rates"][k] = {"classic": a, "quorum": b, "quorum_vs_classic": ratio(b, a)}
    r = ratio(b, a)
    print("  %-28s %12s %12s %14s" % (k, "%.0f" % a if a else "-", "%.0f" % b if b else "-",
                                       "%.1f%%" % (100 * r) if r else "-"))
for name, h, raw in (("relay / raw publish", "relay", "raw_publish"),
                     ("consumer + inbox / raw consume", "consumer_inbox", "raw_consume")):
    for label, r in (("classic", c), ("quorum", q)):
        v = ratio(rate(r, h), rate(r, raw))
        out["ratios"]["%s_vs_%s_%s" % (h, raw, label)] = v
        print("  %-40s %-8s %s" % (name, label, "%.1f%%" % (100 * v) if v else "-"))
json.dump(out, open(sys.argv[3], "w"), indent=2)
print("  results: %s" % sys.argv[3])
PY
}
if [ -n "${HD_CLUSTER_URL_1:-}" ]; then
  bench_cluster || { echo "bench: the cluster benchmark FAILED" >&2; failed+=(cluster); }
else
  echo "bench: no cluster in the environment (HD_CLUSTER_URL_1): the cluster figures are skipped; make bench starts it" >&2
fi

# ---- the summary: every figure of issue 14, its target and verdict (bench/summary.py) -------
printf '\n================ summary ================\n'
sargs=(--dir "$build/bench" --started "$started" --load "$load"
       --command "make bench   # = scripts/servers.sh run --cluster -- scripts/bench.sh $build")
for c in "${cmds[@]}"; do sargs+=(--command "$c"); done
python3 "$here/../bench/summary.py" "${sargs[@]}" || { echo "bench: the summary FAILED" >&2; failed+=(summary); }
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: FAILED: ${failed[*]} (an event lost or a phase failed; see above)" >&2
  exit 1
fi
