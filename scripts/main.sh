#!/usr/bin/env bash
#! The main job: installs what the build needs, builds and installs event_store (release),
#! starts a throwaway PostgreSQL 15 cluster under target/ with the library preloaded, and runs
#! examples/walkthrough.sql, which makes a database of its own (es_walkthrough_scratch) and works
#! there. Then it shows tracing in that database: it starts a local OTLP/HTTP receiver
#! (tests/client's otlp_receiver, which decodes the official protobuf), points es.otlp_endpoint
#! at it (ALTER SYSTEM + reload), runs one es.deposit (that reaches a snapshot version) as a child
#! of a client span (SET es.traceparent) and prints that deposit's span tree as the receiver got
#! it. The server is left running; the last lines say how to connect and how to stop it. Safe to
#! run again: it reuses the cluster and redoes the walkthrough.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mode=--release
[ "${ES_DEBUG_BUILD:-0}" = 1 ] && mode=
bash scripts/install.sh $mode
export ES_CLUSTER_DIR=${ES_CLUSTER_DIR:-$here/target/es-cluster} ES_PORT=${ES_PORT:-28815}
bash scripts/cluster.sh start
eval "$(bash scripts/cluster.sh env)"
export PGHOST PGPORT PGUSER
psql=("${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -q)
# The walkthrough makes its own database (es_walkthrough_scratch, dropped and created anew at its
# start) and leaves the one it is started from alone; the tracing demo below uses it too.
demo_db=es_walkthrough_scratch
echo
echo "== walkthrough: examples/walkthrough.sql =="
"${psql[@]}" -d postgres -f examples/walkthrough.sql 2>&1

echo
echo "== tracing: one es.deposit, exported over OTLP/HTTP by the background worker =="
cargo build -q --manifest-path tests/client/Cargo.toml --bin otlp_receiver
receiver=$here/tests/client/target/debug/otlp_receiver
spans=$here/target/otlp-demo-spans.jsonl
rm -f "$spans"
"$receiver" --out "$spans" >"$here/target/otlp-demo-receiver.out" &
receiver_pid=$!
trap 'kill $receiver_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$here/target/otlp-demo-receiver.out" 2>/dev/null && break; sleep 0.1; done
endpoint="http://$(sed -n 's/^listening on //p' "$here/target/otlp-demo-receiver.out")/v1/traces"
"${psql[@]}" -d "$demo_db" -c "ALTER SYSTEM SET es.otlp_endpoint = '$endpoint'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1   # the worker applies the reload before its next batch
trace=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
parent=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
account=$("${psql[@]}" -d "$demo_db" -tAc "SELECT es.open_account('Tracing Demo', 10000)")
echo "SET es.snapshot_interval = 2; SET es.traceparent = '00-$trace-$parent-01';  SELECT es.deposit('$account', 2500, 'salary');"
"${psql[@]}" -d "$demo_db" -c "SET es.snapshot_interval = 2" -c "SET es.traceparent = '00-$trace-$parent-01'" \
  -c "SELECT es.deposit('$account', 2500, 'salary') AS new_version"
for _ in $(seq 100); do "$receiver" --print-tree "$spans" "$trace" 3 >/dev/null && break; sleep 0.2; done
"$receiver" --print-tree "$spans" "$trace" 3 || echo "(the spans did not arrive; see SELECT * FROM es.tracing_stats())"
"${psql[@]}" -d "$demo_db" -c "SELECT status, spans_recorded, spans_exported, spans_dropped, export_failures, last_export_at FROM es.tracing_stats()"
# the receiver stops with this script: point the server back at the default endpoint
"${psql[@]}" -d "$demo_db" -c "ALTER SYSTEM RESET es.otlp_endpoint" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "event_store is running. Connect with:"
echo "  psql -h $PGHOST -p $PGPORT -U postgres $demo_db"
echo "Stop the server with:"
echo "  ES_CLUSTER_DIR=$ES_CLUSTER_DIR bash $here/scripts/cluster.sh stop"
