#!/usr/bin/env bash
#! Runs the pg_regress golden files of the SQL contract (tests/pg_regress/sql/*.sql against
#! tests/pg_regress/expected/*.out) on a throwaway cluster with the library preloaded.
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
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_REGRESS=$(dirname "$($BIN/pg_config --pgxs)")/../test/regress/pg_regress
db=event_store_regress
out=$repo/target/pg_regress
rm -rf "$out" && mkdir -p "$out"
"$BIN/psql" -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
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
  cp "$out"/results/*.out "$here/expected/"
  echo "pg_regress: expected output updated from this run"
  exit 0
fi
[ $status -eq 0 ] || { [ -f "$out/regression.diffs" ] && head -200 "$out/regression.diffs"; }
# a backend that crashed fails the suite even if every golden file matched
bash "$repo/scripts/cluster.sh" check-log "$log_from" || status=1
exit $status
