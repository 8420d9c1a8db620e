#!/usr/bin/env bash
# plot.sh RESULTS.json [OUT.png] — draw a benchmark's rates as a bar chart: each raw broker
# limit beside the herald figure compared with it, with the min..max of the rounds as error
# bars, a mark at the target and the ratio and verdict under each group; herald's publisher
# alone (no outbox, no relay) is drawn beside the relay when the results have it. Writes
# OUT.png (default: the JSON's path with .png instead of .json). Needs gnuplot (gnuplot-nox)
# and jq or python3.
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
