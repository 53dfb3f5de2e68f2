#!/usr/bin/env bash
#! Runs every test layer, in order, on a machine set up by scripts/setup.sh:
#!   1. style gates: cargo fmt --check, cargo clippy --all-targets -D warnings (the workspace: the
#!      extension, its pure core and its macros; and the client tests)
#!   2. the pure crates' #[test]s with plain cargo test (no PostgreSQL, no pgrx), then cargo pgrx
#!      test: the extension's #[test]s and #[pg_test]s (throwaway server as postgres)
#!   3. pg_regress golden files of the SQL contract (tests/pg_regress)
#!   4. client tests with several real connections: races, gap-safe reads, crash, dump/restore
#!   5. the benchmark runner in smoke mode (it must run; the bars are measured by benches/run.sh)
#! Stops at the first failing layer. Ends with one line: "suites: N passed, M failed".
#!
#! Every layer runs on a private copy of the machine's PostgreSQL under target/pg15
#! (scripts/private_pg.sh), made anew by each run: the extension is installed there, and only
#! there, from this tree (scripts/install.sh), so a test never passes on a file an earlier
#! install left behind, and never touches a server of the machine.
#! env: PG_CONFIG (the PostgreSQL installation to copy; default: the machine's PostgreSQL 15),
#!      ES_PORT (port of every throwaway cluster), ES_BENCH_PORT, ES_TRACE_PORT,
#!      ES_PGRX_TEST_PGDATA (the pg_test data dir)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
# The machine's own installation (what scripts/main.sh installs into): the suite must leave it
# exactly as it found it (a library overwritten under a running server crashes that server).
machine_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
machine_files() {
  stat -c '%n %i %s %Y' "$("$machine_config" --pkglibdir)"/event_store* \
    "$("$machine_config" --sharedir)"/extension/event_store* 2>/dev/null | sort || true
}
machine_before=$(machine_files)
eval "$(bash scripts/private_pg.sh "$here/target/pg15")"
export PG_CONFIG PG_BIN PGRX_HOME
echo "test: PostgreSQL $("$PG_CONFIG" --version | cut -d' ' -f2) copied to $here/target/pg15, without event_store"
passed=0
step() {
  local name=$1; shift
  echo
  echo "=== $name"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "=== $name: FAILED"
    echo "suites: $passed passed, 1 failed"
    exit 1
  fi
}
client=(--manifest-path tests/client/Cargo.toml)
consumer=(--manifest-path benches/consumer/Cargo.toml)
pgdata=${ES_PGRX_TEST_PGDATA:-/tmp/event_store-pgrx-test}
step "format" bash -c "cargo fmt --all --check && cargo fmt --check ${client[*]} && cargo fmt --check ${consumer[*]}"
step "clippy" bash -c "cargo clippy --workspace --all-targets -- -D warnings && cargo clippy --all-targets ${client[*]} -- -D warnings && CARGO_TARGET_DIR=target/bench-consumer cargo clippy --release ${consumer[*]} -- -D warnings"
step "core crates" cargo test -p event_store_core -p event_store_macros
# cargo pgrx test installs into the private copy by itself; the step after it installs every
# script through scripts/install.sh (the library moved aside, not overwritten)
step "unit and pg_test" bash -c "rm -rf $pgdata && install -d -o postgres $pgdata && cargo pgrx test pg15 --runas postgres --pgdata $pgdata"
# a file an earlier install left behind must not survive an install
stale="$("$PG_CONFIG" --sharedir)/extension/event_store--0.0.1.sql"
step "install" bash -c "touch '$stale' && ES_INSTALL_QUIET=1 bash scripts/install.sh --debug && test ! -e '$stale'"
step "pg_regress" bash tests/pg_regress/run.sh
step "client tests" bash tests/client/run.sh
step "benchmark smoke" bash benches/run.sh --smoke
step "the machine's PostgreSQL untouched" bash -c "[ \"\$1\" = \"\$2\" ] || { echo 'the suite changed the machine installation:'; diff <(echo \"\$1\") <(echo \"\$2\"); exit 1; }" _ "$machine_before" "$(machine_files)"
echo
echo "suites: $passed passed, 0 failed"
