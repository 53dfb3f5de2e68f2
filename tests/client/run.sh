#!/usr/bin/env bash
#! Runs the client-side test suite (tests/client) against a throwaway PostgreSQL cluster of the
#! version in $PG_BIN (default: the machine's 15; scripts/test.sh runs it on 15 and on 18).
#! It starts (or reuses) the cluster with ../../scripts/cluster.sh, points the tests at it through
#! ES_TEST_PGHOST/ES_TEST_PGPORT, runs `cargo test` single-threaded (the crash test restarts the
#! whole cluster, so no two tests may overlap), stops the cluster on exit and exits with cargo's
#! status. The extension must already be installed (scripts/install.sh).
#!
#! usage: tests/client/run.sh [extra cargo test arguments, e.g. a test name filter]
#! Every cluster runs with MALLOC_PERTURB_ (scripts/cluster.sh), and the suite fails when a server
#! log shows a process terminated by a signal that no test sent.
#!
#! env:   ES_CLUSTER_DIR (default: <repo>/target/es-cluster-client), ES_PORT (default: 28816),
#!        ES_TRACE_PORT (the tracing tests' own cluster, default: 28819),
#!        ES_PRELOAD (default: 1; read_all and the crash test need it),
#!        ES_CLIENT_CRATE (1: also run crates/event_store_client's tests, the default without
#!        arguments; 0: never)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export ES_CLUSTER_DIR=${ES_CLUSTER_DIR:-$repo/target/es-cluster-client}
export ES_PORT=${ES_PORT:-28816}
export ES_PRELOAD=${ES_PRELOAD:-1}
# the tracing tests restart their own cluster (tests/client/src/otlp.rs) on this port
export ES_TEST_TRACE_PORT=${ES_TRACE_PORT:-28819}
cluster="$repo/scripts/cluster.sh"
# the processes the tests kill on purpose (see kill_9), which the crash check does not count
# (one file per cluster: two runs on two clusters must not erase each other's list)
mkdir -p "$ES_CLUSTER_DIR"
export ES_KILLED_PIDS=$ES_CLUSTER_DIR/killed-pids
: >"$ES_KILLED_PIDS"
tracing_dir=$repo/target/es-cluster-tracing
main_from=$(bash "$cluster" log-size)
tracing_from=$(ES_CLUSTER_DIR=$tracing_dir bash "$cluster" log-size)

trap 'bash "$cluster" stop' EXIT
bash "$cluster" start

# `cluster.sh env` prints PGHOST=<socket dir> PGPORT=<port> PGUSER=postgres
for kv in $(bash "$cluster" env); do
  case "$kv" in
    PGHOST=*) export ES_TEST_PGHOST=${kv#PGHOST=} ;;
    PGPORT=*) export ES_TEST_PGPORT=${kv#PGPORT=} ;;
  esac
done

# which server the tests run on (scripts/test.sh runs them on 15 and on 18)
echo "client tests: $("${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -X -qAt -h "$ES_TEST_PGHOST" -p "$ES_TEST_PGPORT" -U postgres -d postgres -c 'SELECT version()')"

status=0
cargo test --manifest-path "$repo/tests/client/Cargo.toml" "$@" -- --test-threads=1 || status=$?
[ "$status" -eq 0 ] || exit "$status"

# The typed Rust client (crates/event_store_client, a member of the root workspace): its tests
# create their own databases on this cluster (ES_TEST_PGHOST/ES_TEST_PGPORT) and need the library
# preloaded (read_all). They run on a full run (no arguments), or when ES_CLIENT_CRATE=1 (e.g.
# `ES_CLIENT_CRATE=1 tests/client/run.sh --test race_one_stream`); ES_CLIENT_CRATE=0 skips them.
client_crate=${ES_CLIENT_CRATE:-}
[ -n "$client_crate" ] || { [ $# -eq 0 ] && client_crate=1 || client_crate=0; }
if [ "$client_crate" = 1 ]; then
  [ "$ES_PRELOAD" = 1 ] || echo "run.sh: event_store_client's tests need ES_PRELOAD=1 (es.read_all)" >&2
  (cd "$repo" && cargo test -p event_store_client) || status=$?
  [ "$status" -eq 0 ] || exit "$status"
  # The crate as it would be published: packaged with the core it depends on (cargo verifies the
  # client against the packaged core), so a missing file or version is found before a release.
  (cd "$repo" && cargo package -p event_store_core -p event_store_client --allow-dirty --quiet) || status=$?
  [ "$status" -eq 0 ] || exit "$status"
fi

# Second pass: the same cluster restarted without shared_preload_libraries.
if [ "$ES_PRELOAD" = 1 ] && [ $# -eq 0 ]; then
  ES_PRELOAD=0 bash "$cluster" restart
  cargo test --manifest-path "$repo/tests/client/Cargo.toml" \
    --test without_preload --test managed -- --ignored --test-threads=1 || status=$?
  ES_PRELOAD=1 bash "$cluster" restart >/dev/null
fi
# A backend killed by a signal nobody sent (a segfault, an abort) fails the suite even when
# every assertion held: the postmaster restarted the cluster under the tests.
bash "$cluster" check-log "$main_from" || status=1
ES_CLUSTER_DIR=$tracing_dir bash "$cluster" check-log "$tracing_from" || status=1
exit "$status"
