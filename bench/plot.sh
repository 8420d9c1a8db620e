#!/usr/bin/env bash
# plot.sh RESULTS.json [OUT.png] — draw a benchmark's rates as a bar chart: each raw broker
# limit beside the herald figure compared with it, with the min..max of the rounds as error
# bars, a mark at the target and the ratio and verdict under each group; herald's publisher
# alone (no outbox, no relay) is drawn beside the relay when the results have it. Writes
# OUT.png (default: the JSON's path with .png instead of .json). Needs gnuplot (gnuplot-nox)
# and jq or python3.
#
# The end-to-end benchmark's results (bench-e2e_notifications, "benchmark":
# "e2e_notifications") get two panels instead: the rates (raw publish, raw consume, end to
# end, and the CPU ceiling) with the target, and the latency percentiles at the offered load
# with the p99 target.
#
#   build/release/bench-relay_inbox --out build/release/bench/relay_inbox.json
#   bench/plot.sh build/release/bench/relay_inbox.json     # -> .../relay_inbox.png
set -euo pipefail

die() { printf 'plot: %s\n' "$*" >&2; exit 1; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: plot.sh RESULTS.json [OUT.png]"; fi
json=$1
[ -r "$json" ] || die "cannot read $json"
out=${2:-${json%.json}.png}
command -v gnuplot >/dev/null || die "gnuplot is not installed (apt-get install gnuplot-nox)"

# ---- bench-e2e_notifications ---------------------------------------------------------------
# Lines, tab-separated: "T" title; "R" label value (a rate); "L" label value (a latency, ms);
# "V" rate target, p99 target, the rate's verdict, the latency's verdict, the ratio text.
e2e_jq() {
  jq -r '
    def n(x): if x == null then "NaN" else x end;
    def pct(x): if x == null then "-" else ((x * 1000 | round) / 10 | tostring) + "%" end;
    def verdict(t): if t.pass == null then "n/a" elif t.pass then "PASS" else "MISS" end;
    "T\therald bench e2e_notifications: \(.parameters.count) events, then \(.parameters.latency_rate_per_s)/s for \(.parameters.latency_seconds) s; \(.host.nproc) CPUs, RabbitMQ \(.broker.version), \(.date)",
    "R\traw publish\t\(n(.phases.raw_publish.rate_per_s))",
    "R\traw consume\t\(n(.phases.raw_consume.rate_per_s))",
    "R\tend to end\t\(n(.phases.e2e.rate_per_s))",
    "R\tCPU ceiling, \(.host.nproc) CPUs\t\(n(.phases.e2e.cpu_ceiling_per_s))",
    (.latency.ms.sent // {}) as $l
      | ("L\tp50\t\(n($l.p50))", "L\tp90\t\(n($l.p90))", "L\tp95\t\(n($l.p95))",
         "L\tp99\t\(n($l.p99))", "L\tmax\t\(n($l.max))"),
    "V\t\(.targets.notifications_per_s.target)\t\(.targets.latency_p99_ms.target)\t\(verdict(.targets.notifications_per_s))\t\(verdict(.targets.latency_p99_ms))\t\(pct(.ratios.e2e_vs_raw_consume.value)) of raw consume"
  ' "$1"
}
e2e_py() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def n(x):  # as jq prints numbers: 1000, not 1000.0
    return "NaN" if x is None else ("%d" % x if float(x).is_integer() else repr(x))
def pct(x):
    return "-" if x is None else ("%.1f" % (100 * x)).rstrip("0").rstrip(".") + "%"
def verdict(t):
    t = t or {}
    return "n/a" if t.get("pass") is None else ("PASS" if t["pass"] else "MISS")
p, h, ph = d.get("parameters", {}), d.get("host", {}), d.get("phases", {})
def rate(k, f="rate_per_s"):
    return n((ph.get(k) or {}).get(f))
print("T\therald bench e2e_notifications: %s events, then %s/s for %s s; %s CPUs, RabbitMQ %s, %s" % (
    p.get("count"), n(p.get("latency_rate_per_s")), n(p.get("latency_seconds")), h.get("nproc"),
    d.get("broker", {}).get("version"), d.get("date")))
print("R\traw publish\t" + rate("raw_publish"))
print("R\traw consume\t" + rate("raw_consume"))
print("R\tend to end\t" + rate("e2e"))
print("R\tCPU ceiling, %s CPUs\t%s" % (h.get("nproc"), rate("e2e", "cpu_ceiling_per_s")))
lat = ((d.get("latency") or {}).get("ms") or {}).get("sent") or {}
for k in ("p50", "p90", "p95", "p99", "max"):
    print("L\t%s\t%s" % (k, n(lat.get(k))))
t = d.get("targets", {})
print("V\t%s\t%s\t%s\t%s\t%s of raw consume" % (
    n((t.get("notifications_per_s") or {}).get("target")), n((t.get("latency_p99_ms") or {}).get("target")),
    verdict(t.get("notifications_per_s")), verdict(t.get("latency_p99_ms")),
    pct((d.get("ratios", {}).get("e2e_vs_raw_consume") or {}).get("value"))))
PY
}

plot_e2e() {
  local rows
  if command -v jq >/dev/null; then
    rows=$(e2e_jq "$json") || die "$json is not a benchmark result"
  elif [ -x /usr/bin/python3 ]; then
    rows=$(e2e_py "$json") || die "$json is not a benchmark result"
  else
    die "need jq or python3 to read $json"
  fi
  local title rate_target p99_target rate_verdict lat_verdict ratio
  title=$(printf '%s\n' "$rows" | awk -F'\t' '$1 == "T" { print $2 }')
  rates=$(mktemp) lats=$(mktemp) # globals: the EXIT trap runs after this function returns
  trap 'rm -f "$rates" "$lats"' EXIT
  printf '%s\n' "$rows" | awk -F'\t' -v OFS='\t' '$1 == "R" { print $2, $3 }' >"$rates"
  printf '%s\n' "$rows" | awk -F'\t' -v OFS='\t' '$1 == "L" { print $2, $3 }' >"$lats"
  IFS=$'\t' read -r _ rate_target p99_target rate_verdict lat_verdict ratio \
    < <(printf '%s\n' "$rows" | awk -F'\t' '$1 == "V"')
  gnuplot <<GP
set terminal pngcairo size 1100,560 font "sans,10" noenhanced
set output "$out"
set datafile separator "\t"
set datafile missing "NaN"
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set offsets 0, 0, graph 0.08, 0
set multiplot layout 1,2 title "$title"
set title "notifications per second: $rate_verdict (target $rate_target); $ratio"
set yrange [0:*]
set xrange [-0.6:3.6]
set ylabel "per second"
set key top right
plot "$rates" using 0:2:(\$0 == 2 ? 0x2b7bba : (\$0 == 3 ? 0xbdbdbd : 0x8c8c8c)):xtic(1) \
       with boxes lc rgb variable notitle, \
     "" using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.8 notitle, \
     $rate_target with lines dashtype 2 lw 2 lc rgb "#d62728" title "target (end to end)"
set title "latency at the offered load, commit -> mail sent: p99 $lat_verdict (target $p99_target ms)"
set xrange [-0.6:4.6]
set logscale y
set yrange [0.5:*]
set ylabel "ms (log scale)"
set key top left
plot "$lats" using 0:2:xtic(1) with boxes lc rgb "#2b7bba" notitle, \
     "" using 0:2:(sprintf("%.1f", \$2)) with labels offset 0,0.8 notitle, \
     $p99_target with lines dashtype 2 lw 2 lc rgb "#d62728" title "target (p99)"
unset multiplot
GP
  printf 'plot: %s\n' "$out"
}

bench_name() {
  if command -v jq >/dev/null; then
    jq -r '.benchmark // ""' "$1"
  elif [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("benchmark") or "")' "$1"
  fi
}
if [ "$(bench_name "$json" 2>/dev/null)" = "e2e_notifications" ]; then
  plot_e2e
  exit 0
fi

# A first line with the title, then one line per group of bars, tab-separated:
#   label  verdict  raw  raw_min  raw_max  herald  herald_min  herald_max  target  extra  min  max
# extra is herald's publisher alone in the relay's group, NaN (no bar) elsewhere. Phases that
# did not run read as 0.
extract_jq() {
  jq -r '
    def r(p): (.phases[p] // {}) as $x
      | [($x.rate_per_s // 0), ($x.min_rate_per_s // 0), ($x.max_rate_per_s // 0)];
    def none: ["NaN", "NaN", "NaN"];
    def pct(x): if x == null then "-" else ((x * 1000 | round) / 10 | tostring) + "%" end;
    def verdict(k): (.ratios[k] // {}) as $v
      | "\(pct($v.value)) of raw, target \(pct($v.target))"
        + (if $v.pass == null then "" elif $v.pass then ": PASS" else ": MISS" end);
    "herald bench \(.benchmark): \(.parameters.count) messages x \(.parameters.rounds // 1) rounds, \(.host.nproc) CPUs, RabbitMQ \(.broker.version), \(.date)",
    ([ "relay vs raw publish", verdict("relay_vs_raw_publish") ] + r("raw_publish")
       + r("relay") + [ .ratios.relay_vs_raw_publish.target // 0 ]
       + (if .phases.publisher then r("publisher") else none end) | @tsv),
    ([ "consumer + inbox vs raw consume", verdict("consumer_inbox_vs_raw_consume") ]
       + r("raw_consume") + r("consumer_inbox")
       + [ .ratios.consumer_inbox_vs_raw_consume.target // 0 ] + none | @tsv)
  ' "$1"
}
extract_py() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def r(p):
    x = d.get("phases", {}).get(p) or {}
    return [x.get("rate_per_s") or 0, x.get("min_rate_per_s") or 0, x.get("max_rate_per_s") or 0]
def pct(x):  # as jq's: one decimal, none when it is 0 ("80%", "67.4%")
    return "-" if x is None else ("%.1f" % (100 * x)).rstrip("0").rstrip(".") + "%"
def verdict(k):
    v = d.get("ratios", {}).get(k) or {}
    s = "%s of raw, target %s" % (pct(v.get("value")), pct(v.get("target")))
    if v.get("pass") is not None:
        s += ": PASS" if v["pass"] else ": MISS"
    return s
p, h = d.get("parameters", {}), d.get("host", {})
print("herald bench %s: %s messages x %s rounds, %s CPUs, RabbitMQ %s, %s" % (
    d.get("benchmark"), p.get("count"), p.get("rounds", 1), h.get("nproc"),
    d.get("broker", {}).get("version"), d.get("date")))
for label, raw, herald, key, extra in (
        ("relay vs raw publish", "raw_publish", "relay", "relay_vs_raw_publish", "publisher"),
        ("consumer + inbox vs raw consume", "raw_consume", "consumer_inbox",
         "consumer_inbox_vs_raw_consume", None)):
    target = (d.get("ratios", {}).get(key) or {}).get("target") or 0
    more = r(extra) if extra and d.get("phases", {}).get(extra) else ["NaN"] * 3
    print("\t".join([label, verdict(key)]
                    + [str(v) for v in r(raw) + r(herald) + [target] + more]))
PY
}

if command -v jq >/dev/null; then
  rows=$(extract_jq "$json") || die "$json is not a benchmark result"
elif [ -x /usr/bin/python3 ]; then
  rows=$(extract_py "$json") || die "$json is not a benchmark result"
else
  die "need jq or python3 to read $json"
fi
title=$(printf '%s\n' "$rows" | head -n 1)
data=$(mktemp)
trap 'rm -f "$data"' EXIT
printf '%s\n' "$rows" | tail -n +2 >"$data"

# The two-line labels under each pair and the target marks are built here: gnuplot does not
# turn "\n" read from a data file into a line break. A target mark is a dashed line across
# the pair at target x raw rate: the herald bar must reach it.
tics="" marks="" i=0
while IFS=$'\t' read -r label verdict raw _ _ _ _ _ target _; do
  # Labels under the axis rather than tick labels: gnuplot treats a tick label as a format
  # string, and "%" in it cuts the text short.
  tics+="${tics:+, }\"\" $i"
  marks+="set label \"$label\\n$verdict\" at $i,graph -0.035 center front"$'\n'
  t=$(awk -v r="$raw" -v t="$target" 'BEGIN { printf "%.1f", r * t }')
  marks+="set arrow from $i-0.32,$t to $i+0.32,$t nohead dashtype 2 lw 2 lc rgb \"#d62728\" front"$'\n'
  marks+="set label \"target\" at $i+0.33,$t left tc rgb \"#d62728\" front"$'\n'
  i=$((i + 1))
done <"$data"

extra=""
if awk -F'\t' 'NR == 1 && $10 != "NaN" { found = 1 } END { exit !found }' "$data"; then
  extra=', "" using 10:11:12 title "herald publisher alone (no outbox)" lc rgb "#9ecae1"'
fi

gnuplot <<GP
set terminal pngcairo size 900,560 font "sans,10" noenhanced
set output "$out"
set title "$title"
set datafile separator "\t"
set style data histograms
set style histogram errorbars gap 2 lw 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set xrange [-0.6:$i-0.4]
set xtics ($tics) nomirror
set ylabel "messages per second (median of the rounds; bars: min..max)"
set yrange [0:*]
set grid ytics
set key outside top center horizontal
set bmargin 4
$marks
plot "$data" using 3:4:5 title "raw broker limit (librabbitmq)" lc rgb "#8c8c8c", \
     "" using 6:7:8 title "herald" lc rgb "#2b7bba"$extra
GP
printf 'plot: %s\n' "$out"
