#!/usr/bin/env bash
#! The main job: installs what the build needs (scripts/prerequisites.sh), builds and installs
#! event_store (release) into the machine's PostgreSQL 15 (or $PG_CONFIG's), starts a throwaway
#! cluster of it under target/ with the library preloaded, and runs examples/walkthrough.sql,
#! which makes a database of its own (es_walkthrough_scratch) and works there (the tracing demo
#! below uses it too). It starts a local OTLP/HTTP receiver (tests/client's otlp_receiver, which
#! decodes the official protobuf) before the server and starts the server with es.otlp_endpoint
#! pointing at it, so every span from the first one on (the walkthrough's too) is exported there,
#! with no failed export. Then it shows tracing: one es.deposit (that reaches a snapshot version)
#! as a child of a client span (SET es.traceparent) and that deposit's span tree as the receiver
#! got it. The receiver stops with the script: the server is then left running with export off
#! (es.otlp_endpoint = ''); the last lines say how to connect, how to stop it and how to point it
#! at a collector. Safe to run again: it reuses the cluster and redoes the walkthrough.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mode=--release
[ "${ES_DEBUG_BUILD:-0}" = 1 ] && mode=--debug
bash scripts/prerequisites.sh
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config} bash scripts/install.sh $mode
export ES_CLUSTER_DIR=${ES_CLUSTER_DIR:-$here/target/es-cluster} ES_PORT=${ES_PORT:-28815}

# The receiver first: the server's export worker sends its first batch to it (with the default
# endpoint and no collector there, the walkthrough's spans would be failed exports).
cargo build -q --manifest-path tests/client/Cargo.toml --bin otlp_receiver
receiver=$here/tests/client/target/debug/otlp_receiver
spans=$here/target/otlp-demo-spans.jsonl
mkdir -p "$here/target"
rm -f "$spans" "$here/target/otlp-demo-receiver.out"
"$receiver" --out "$spans" >"$here/target/otlp-demo-receiver.out" &
receiver_pid=$!
trap 'kill $receiver_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$here/target/otlp-demo-receiver.out" 2>/dev/null && break; sleep 0.1; done
endpoint="http://$(sed -n 's/^listening on //p' "$here/target/otlp-demo-receiver.out")/v1/traces"

ES_EXTRA_CONF="es.otlp_endpoint = '$endpoint'" bash scripts/cluster.sh start
eval "$(bash scripts/cluster.sh env)"
export PGHOST PGPORT PGUSER
psql=("${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -q)
# An earlier run left export off with ALTER SYSTEM, which overrides the start's setting: undo it.
"${psql[@]}" -d postgres -c "ALTER SYSTEM RESET es.otlp_endpoint" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1   # the worker applies the reload before its next batch
# The walkthrough makes its own database (es_walkthrough_scratch, dropped and created anew at its
# start) and leaves the one it is started from alone; the tracing demo below uses it too.
demo_db=es_walkthrough_scratch
echo
echo "== walkthrough: examples/walkthrough.sql =="
"${psql[@]}" -d postgres -f examples/walkthrough.sql 2>&1

echo
echo "== tracing: one es.deposit, exported over OTLP/HTTP by the background worker =="
trace=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
parent=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
account=$("${psql[@]}" -d "$demo_db" -tAc "SELECT es.open_account('Tracing Demo', 10000)")
echo "SET es.snapshot_interval = 2; SET es.traceparent = '00-$trace-$parent-01';  SELECT es.deposit('$account', 2500, 'salary');"
"${psql[@]}" -d "$demo_db" -c "SET es.snapshot_interval = 2" -c "SET es.traceparent = '00-$trace-$parent-01'" \
  -c "SELECT es.deposit('$account', 2500, 'salary') AS new_version"
for _ in $(seq 100); do "$receiver" --print-tree "$spans" "$trace" 3 >/dev/null && break; sleep 0.2; done
"$receiver" --print-tree "$spans" "$trace" 3 || echo "(the spans did not arrive; see SELECT * FROM es.tracing_stats())"
"${psql[@]}" -d "$demo_db" -c "SELECT status, spans_recorded, spans_exported, spans_dropped, export_failures, batches_rejected, last_export_at FROM es.tracing_stats()"
# the receiver stops with this script: export off, so the server left running counts no failures
"${psql[@]}" -d "$demo_db" -c "ALTER SYSTEM SET es.otlp_endpoint = ''" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "event_store is running. Connect with:"
echo "  psql -h $PGHOST -p $PGPORT -U postgres $demo_db"
echo "Stop the server with:"
echo "  ES_CLUSTER_DIR=$ES_CLUSTER_DIR bash $here/scripts/cluster.sh stop"
echo "The demo's OTLP receiver has stopped, so span export is off (es.otlp_endpoint = ''); to"
echo "export to a collector: ALTER SYSTEM SET es.otlp_endpoint = 'http://<collector>:4318/v1/traces'; SELECT pg_reload_conf();"
