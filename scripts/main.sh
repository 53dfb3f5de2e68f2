#!/usr/bin/env bash
#! The main job: installs what the build needs, builds and installs event_store (release),
#! starts a throwaway PostgreSQL 15 cluster under target/ with the library preloaded, creates a
#! database, and runs examples/walkthrough.sql in it. The server is left running; the last lines
#! say how to connect and how to stop it. Safe to run again: it reuses the cluster and redoes
#! the walkthrough.
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
"${psql[@]}" -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'event_store_demo'" | grep -q 1 ||
  "${psql[@]}" -d postgres -c "CREATE DATABASE event_store_demo"
echo
echo "== walkthrough: examples/walkthrough.sql =="
"${psql[@]}" -d event_store_demo -f examples/walkthrough.sql 2>&1
echo
echo "event_store is running. Connect with:"
echo "  psql -h $PGHOST -p $PGPORT -U postgres event_store_demo"
echo "Stop the server with:"
echo "  ES_CLUSTER_DIR=$ES_CLUSTER_DIR bash $here/scripts/cluster.sh stop"
