#!/usr/bin/env bash
#! Runs every test layer, in order, on a machine set up by scripts/setup.sh:
#!   1. style gates: cargo fmt --check, the rules of ARCHITECTURE.md (scripts/check_architecture.py:
#!      layers, imports, where unsafe lives, the module table; its self-test first), cargo clippy
#!      --all-targets -D warnings (the workspace: the extension, its pure core, its span model and
#!      its macros; and the client tests)
#!   2. the pure crates' #[test]s with plain cargo test (no PostgreSQL, no pgrx): the core, the
#!      macros, the span model (event_store_telemetry)
#! These run once. Then, on each supported PostgreSQL version in turn (15, then 18; the steps are
#! named "pgNN: ..."):
#!   3. cargo pgrx test: the extension's #[test]s and #[pg_test]s (throwaway server as postgres)
#!      (on 18, first clippy of the extension built with the pg18 features)
#!   4. the install of every script (scripts/install.sh), pg_regress golden files of the SQL
#!      contract (tests/pg_regress)
#!   5. client tests with several real connections: races, gap-safe reads, crash, dump/restore
#!   6. the benchmark runner in smoke mode (it must run; the bars are measured by benches/run.sh)
#!   7. the machine's installation of that version is unchanged
#! Then, across versions: a PostgreSQL 15 store through pg_upgrade to 18 (tests/upgrade, on the two
#! copies above), and the Debian package of each version built, installed with dpkg into a private
#! copy that never saw the source tree, upgraded from the released 0.1.0 package and removed
#! (tests/package; release builds).
#! Stops at the first failing layer. Ends with one line: "suites: N passed, M failed".
#!
#! Every layer of a version runs on a private copy of the machine's installation of that version,
#! target/pgNN (scripts/private_pg.sh), made anew by each run: the extension is installed there,
#! and only there, from this tree (scripts/install.sh), so a test never passes on a file an earlier
#! install left behind, and never touches a server of the machine. Every program a layer runs
#! (server, psql, pg_dump, pgbench, ...) is that copy's: PG_BIN points at it, and each server
#! layer prints the version of the server it tested.
#!
#! usage: scripts/test.sh [--pg 15|18]...   (default: every supported version, in order)
#! env: ES_PG_VERSIONS (the versions to run on, e.g. "18" or "15 18"; --pg wins),
#!      PG15_CONFIG, PG18_CONFIG (the installations to copy, scripts/pg_versions.sh),
#!      ES_PORT (port of every throwaway cluster), ES_BENCH_PORT, ES_TRACE_PORT, ES_STANDBY_PORT,
#!      ES_SUBSCRIBER_PORT, ES_PGRX_TEST_PGDATA (the pg_test data dir; "-pgNN" is appended)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=pg_versions.sh
source scripts/pg_versions.sh
versions=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) versions+=("${2:?--pg needs a version}"); shift ;;
    *) echo "test: unknown argument: $1 (usage: scripts/test.sh [--pg 15|18]...)" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck disable=SC2206  # a list of words: "18", "15 18" or "15,18"
[ ${#versions[@]} -gt 0 ] || versions=(${ES_PG_VERSIONS:-${ES_PG_SUPPORTED[*]}})
versions=(${versions[@]//,/ })
for v in "${versions[@]}"; do es_pg_config "$v" >/dev/null || exit 2; done
# The machine's installation of each version is named by pg_versions.sh; a PG_CONFIG of the
# caller's environment (another copy) must not leak into the layers.
unset PG_CONFIG PG_BIN PGRX_HOME
bash scripts/setup.sh

# The files of the extension in the machine's own installation of a version (what scripts/main.sh
# installs into): the suite must leave them exactly as it found them (a library overwritten under
# a running server crashes that server).
machine_files() {
  stat -c '%n %i %s %Y' "$("$1" --pkglibdir)"/event_store* \
    "$("$1" --sharedir)"/extension/event_store* 2>/dev/null | sort || true
}
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
declare -A copy_config copy_bin

# --- once: the crates that do not depend on the server version ---------------------------------
step "format" bash -c "cargo fmt --all --check && cargo fmt --check ${client[*]} && cargo fmt --check ${consumer[*]}"
step "architecture" bash -c "python3 scripts/check_architecture.py --self-test && python3 scripts/check_architecture.py"
step "clippy" bash -c "cargo clippy --workspace --all-targets -- -D warnings && cargo clippy --all-targets ${client[*]} -- -D warnings && CARGO_TARGET_DIR=target/bench-consumer cargo clippy --release ${consumer[*]} -- -D warnings"
step "core crates" cargo test -p event_store_core -p event_store_macros -p event_store_telemetry

# --- on each version ----------------------------------------------------------------------------
for v in "${versions[@]}"; do
  machine_config=$(es_pg_config "$v")
  machine_before=$(machine_files "$machine_config")
  eval "$(PG_CONFIG=$machine_config bash scripts/private_pg.sh "$here/target/pg$v")"
  export PG_CONFIG PG_BIN PGRX_HOME
  echo
  echo "test: pg$v: PostgreSQL $("$PG_CONFIG" --version | cut -d' ' -f2) copied to $here/target/pg$v, without event_store"
  read -r -a features <<<"$(es_pg_features "$v")"
  if [ "$v" != 15 ]; then
    # the workspace clippy above builds the default features (pg15); the code behind
    # cfg(feature = "pgNN") is linted here (PGRX_HOME of this version's copy)
    step "pg$v: clippy" cargo clippy -p event_store --all-targets "${features[@]}" -- -D warnings
  fi
  # cargo pgrx test installs into the private copy by itself; the step after it installs every
  # script through scripts/install.sh (the library moved aside, not overwritten). The lock: one
  # pgrx test server at a time on this machine (other worktrees run theirs too).
  step "pg$v: unit and pg_test" bash -c "rm -rf $pgdata-pg$v && install -d -o postgres $pgdata-pg$v &&
    flock /tmp/pgrx-test.lock cargo pgrx test pg$v ${features[*]} --runas postgres --pgdata $pgdata-pg$v"
  # a file an earlier install left behind must not survive an install
  stale="$("$PG_CONFIG" --sharedir)/extension/event_store--0.0.1.sql"
  step "pg$v: install" bash -c "touch '$stale' && ES_INSTALL_QUIET=1 bash scripts/install.sh --debug && test ! -e '$stale'"
  step "pg$v: pg_regress" bash tests/pg_regress/run.sh
  step "pg$v: client tests" bash tests/client/run.sh
  step "pg$v: benchmark smoke" bash benches/run.sh --smoke --pg "$v"
  step "pg$v: the machine's PostgreSQL $v untouched" bash -c "[ \"\$1\" = \"\$2\" ] || { echo 'the suite changed the machine installation:'; diff <(echo \"\$1\") <(echo \"\$2\"); exit 1; }" _ "$machine_before" "$(machine_files "$machine_config")"
  copy_config[$v]=$PG_CONFIG
  copy_bin[$v]=$PG_BIN
  unset PG_CONFIG PG_BIN PGRX_HOME
done

# --- across versions, and the packages ----------------------------------------------------------
# a PostgreSQL 15 store through pg_upgrade to 18, on the two copies the layers above installed into
if [ -n "${copy_config[15]:-}" ] && [ -n "${copy_config[18]:-}" ]; then
  step "pg_upgrade 15 -> 18" env PG15_CONFIG="${copy_config[15]}" PG15_BIN="${copy_bin[15]}" \
    PG18_CONFIG="${copy_config[18]}" PG18_BIN="${copy_bin[18]}" bash tests/upgrade/pg_upgrade.sh
fi
# a Debian package per version (release builds), installed with dpkg into a private copy of that
# version that never saw the source tree, upgraded from the released 0.1.0 package, removed
step "packages (${versions[*]})" bash tests/package/run.sh "${versions[@]}"
echo
echo "suites: $passed passed, 0 failed"
