#!/usr/bin/env bash
# scripts/plan_audit/run.sh — SQLite query plans of every SQL statement in src/, against
# production-shaped tables (README.md beside this file).
#   run.sh [--build-dir DIR] [--work DIR] [--quick]
# Exit 0: no hot or periodic statement scans a growing table, sorts in a temp B-tree or does
# over STEPS_PER_ROW VM steps a row (statements.py), and every statement is labelled;
# 1: findings (printed); 2: bad usage, or the audit could not run.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<EOF
usage: scripts/plan_audit/run.sh [--build-dir DIR] [--work DIR] [--quick]
  --build-dir DIR  a CMake build with the static libraries and compile_commands.json
                   (default: $repo/build/dev)
  --work DIR       where the databases, plans.txt and summary.txt go (default: a new mktemp -d)
  --quick          a tenth of the rows and 3 timing runs instead of 5 (well under a minute)
Exit 0 clean, 1 findings, 2 bad usage or the audit could not run.
EOF
}
die() { echo "run.sh: $*" >&2; exit 2; }

build=$repo/build/dev work='' scale=1 runs=5
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) [ $# -ge 2 ] || { usage >&2; exit 2; }; build=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || { usage >&2; exit 2; }; work=$2; shift 2 ;;
    --quick) scale=10 runs=3; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

for tool in cc python3 sqlite3; do
  command -v "$tool" >/dev/null || die "$tool not found (needs a C compiler, python3, the sqlite3 CLI)"
done
[ -d "$build" ] || die "no build directory $build: run make build first (or pass --build-dir)"
build=$(cd "$build" && pwd)
# The libraries link migrate.c; compile_commands.json gives each file its own flags; the
# link lines give the system libraries those libraries need.
for f in libherald.a libherald-service.a libhd_svc_users.a libhd_svc_notifications.a \
         compile_commands.json CMakeFiles/herald-users.dir/link.txt \
         CMakeFiles/herald-notifications.dir/link.txt; do
  [ -f "$build/$f" ] || die "$build has no $f: run make build first (or pass --build-dir)"
done
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/plan_audit.XXXXXX") || die "mktemp failed"
else
  mkdir -p "$work" || die "cannot create $work"
fi
work=$(cd "$work" && pwd)
start=$(date +%s)
echo "plan audit: repo $repo, build $build, work $work, rows 1/$scale"

# 1. Every SQL literal of src/, as the preprocessor expands it.
python3 "$here/extract_sql.py" "$repo" "$build" "$work/sql.tsv" || die "SQL extraction failed"

# 2. migrate: migrate.c with fresh objects of the files whose migrations make the schema (so
# the schema is the tree's, as the extracted SQL is, even when the build is older than the
# tree), then the build's libraries for everything else.
rm -rf "$work/obj" || die "cannot remove $work/obj"
mkdir "$work/obj" || die "cannot create $work/obj"
for f in herald/outbox herald/inbox herald/stream herald/store services/users/repository \
         services/users/messages services/notifications/repository; do
  python3 "$here/extract_sql.py" --compile "$build" "$repo/src/$f.c" "$repo/src/$f.c" \
    "$work/obj/${f//\//_}.o" || die "compiling src/$f.c failed"
done
python3 "$here/extract_sql.py" --compile "$build" "$repo/src/services/users/messages.c" \
  "$here/migrate.c" "$work/obj/migrate.o" || die "compiling migrate.c failed"
syslibs=$(tr ' ' '\n' <"$build/CMakeFiles/herald-users.dir/link.txt" \
            | cat - <(tr ' ' '\n' <"$build/CMakeFiles/herald-notifications.dir/link.txt") \
            | grep -E '\.so(\.[0-9]+)*$|^-l|^--coverage$|^-fsanitize=' | sort -u)
# --coverage and -fsanitize= come with the coverage and asan builds' libraries: their objects
# call into libgcov or the sanitizers' runtimes.
# shellcheck disable=SC2086  # one library a word
cc -o "$work/migrate" "$work"/obj/*.o "$build/libhd_svc_users.a" "$build/libhd_svc_notifications.a" \
  "$build/libherald-service.a" "$build/libherald.a" $syslibs -lpthread || die "linking migrate failed"

# 3. The schema, then the data (a copy, so the schema stays for inspection), then a copy
# after ANALYZE to see which plans statistics would change.
rm -f "$work"/schema.db* "$work"/audit.db* "$work"/analyzed.db*
out=$(python3 "$here/audit.py" schema "$work/sql.tsv" "$work/migrate" "$work/schema.db") \
  || die "migrations failed"
export PLAN_AUDIT_LIBSQLITE=${out#libsqlite3 }
cp "$work/schema.db" "$work/audit.db" || die "cp failed"
sqlite3 "$work/audit.db" ".parameter set @scale $scale" ".read $here/populate.sql" \
  || die "populate.sql failed"
sqlite3 "$work/audit.db" 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null || die "checkpoint failed"
cp "$work/audit.db" "$work/analyzed.db" || die "cp failed"
sqlite3 "$work/analyzed.db" ANALYZE || die "ANALYZE failed"
echo "plan audit: data ready after $(($(date +%s) - start)) s"

# 4. Plans and timings; the table goes to summary.txt too.
python3 "$here/audit.py" plans "$work/sql.tsv" "$work/audit.db" "$work/analyzed.db" "$work" "$runs" \
  | tee "$work/summary.txt"
rc=${PIPESTATUS[0]}
echo "plan audit: $(($(date +%s) - start)) s; work dir $work ($(du -sh "$work" | cut -f1), remove it when done)"
case $rc in
  0 | 1) exit "$rc" ;;
  *) die "audit.py failed ($rc)" ;;
esac
