#!/usr/bin/env bash
#! Starts, stops and describes a throwaway PostgreSQL cluster (15 or 18: the binaries in $PG_BIN)
#! for the demo, the client tests and the benchmarks. It runs as the `postgres` user (PostgreSQL refuses root), on its own port and
#! socket directory, so it never touches the distribution's cluster on 5432.
#!
#! The postmaster runs with MALLOC_PERTURB_ in its environment (every backend inherits it): glibc
#! then fills freed and fresh malloc memory with a pattern, so a use after free in native code
#! fails loudly in the tests instead of about every second time in production.
#!
#! usage: scripts/cluster.sh start|stop|stop-immediate|restart|status|env|destroy|log-size|check-log [FROM]
#!   stop-immediate   pg_ctl stop -m immediate: every process quits at once, as in a power cut of
#!                    the server (without the OS cache loss); the next start runs crash recovery
#!   log-size         the server log's size in bytes (a suite's starting point for check-log)
#!   check-log [FROM] fails (exit 1, printing the lines) when the server log, from byte FROM on,
#!                    shows a process terminated by a signal (a crash: the postmaster restarted
#!                    every session) or a PANIC; processes a test killed on purpose (their pids
#!                    listed in $ES_KILLED_PIDS, one per line) are not counted
#! A data directory that another major version made (scripts/test.sh runs the same layers, in the
#! same directories, on 15 and then on 18) is stopped and made anew by start.
#! env:   PG_BIN (the server's binaries; default: the machine's PostgreSQL 15),
#!        ES_CLUSTER_DIR (default: target/es-cluster), ES_PORT (default: 28815),
#!        ES_PRELOAD (default: 1; 0 starts without shared_preload_libraries),
#!        ES_EXTRA_CONF (postgresql.conf lines for this start, e.g. the es.otlp_* settings; kept
#!        in conf.d-extra.conf, replaced at every start),
#!        ES_MALLOC_PERTURB (default: 165; 0 starts the server without MALLOC_PERTURB_),
#!        ES_KILLED_PIDS (default: target/killed-pids)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DIR=${ES_CLUSTER_DIR:-$here/target/es-cluster}
PORT=${ES_PORT:-28815}
PRELOAD=${ES_PRELOAD:-1}
DATA=$DIR/data
RUN=$DIR/run
LOG=$DIR/postgres.log
PERTURB=${ES_MALLOC_PERTURB:-165}
KILLED=${ES_KILLED_PIDS:-$here/target/killed-pids}

# The server runs without RUST_BACKTRACE: with it, errors that pass through pgrx carry a Rust
# backtrace in their DETAIL, which users (and golden files) should not see.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@"
  else
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@"
  fi
}

# the major version of the binaries ("postgres (PostgreSQL) 18.6" -> 18)
bin_major() { "$BIN/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/'; }

init() {
  if [ -f "$DATA/PG_VERSION" ]; then
    [ "$(cat "$DATA/PG_VERSION")" = "$(bin_major)" ] && return 0
    # a throwaway cluster of another version: its server (if any) stopped by its pid (this
    # version's pg_ctl may refuse its data directory), then the data made anew
    echo "cluster: $DATA is PostgreSQL $(cat "$DATA/PG_VERSION")'s; made anew for $(bin_major)" >&2
    if [ -f "$DATA/postmaster.pid" ]; then
      local pid
      pid=$(head -1 "$DATA/postmaster.pid")
      if kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
    fi
    rm -rf "$DATA"
  fi
  mkdir -p "$DIR" "$RUN"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR" "$RUN"
  # every parent of the data directory must be traversable by postgres
  as_pg test -x "$DIR" || { echo "cluster: $DIR is not reachable by the postgres user" >&2; exit 1; }
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
  cat >>"$DATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
max_connections = 100
shared_buffers = 512MB
fsync = off
full_page_writes = off
synchronous_commit = off
max_wal_size = 4GB
checkpoint_timeout = 30min
log_min_messages = warning
logging_collector = off
CONF
}

start() {
  init
  local conf="$DATA/conf.d-preload.conf"
  if [ "$PRELOAD" = 1 ]; then
    # the store's launcher and one worker per database with projections (or while replicas
    # are connected) take background worker slots; tests create many databases
    printf '%s\n' "shared_preload_libraries = 'event_store'" "max_worker_processes = 64" >"$conf"
  else
    : >"$conf"
  fi
  printf '%s\n' "${ES_EXTRA_CONF:-}" >"$DATA/conf.d-extra.conf"
  # the port of this start, not only initdb's: a kept cluster started with another ES_PORT
  # listens where `env` says it does
  printf '%s\n' "port = $PORT" >"$DATA/conf.d-port.conf"
  chown postgres:postgres "$conf" "$DATA/conf.d-extra.conf" "$DATA/conf.d-port.conf" 2>/dev/null || true
  grep -q "include_if_exists = 'conf.d-port.conf'" "$DATA/postgresql.conf" ||
    echo "include_if_exists = 'conf.d-port.conf'" >>"$DATA/postgresql.conf"
  grep -q "include_if_exists = 'conf.d-preload.conf'" "$DATA/postgresql.conf" ||
    echo "include_if_exists = 'conf.d-preload.conf'" >>"$DATA/postgresql.conf"
  grep -q "include_if_exists = 'conf.d-extra.conf'" "$DATA/postgresql.conf" ||
    echo "include_if_exists = 'conf.d-extra.conf'" >>"$DATA/postgresql.conf"
  local perturb=()
  [ "$PERTURB" = 0 ] || perturb=(MALLOC_PERTURB_="$PERTURB")
  if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "${perturb[@]}" "$BIN/pg_ctl" -D "$DATA" restart -m fast -w -l "$LOG" >/dev/null
  else
    as_pg "${perturb[@]}" "$BIN/pg_ctl" -D "$DATA" start -w -l "$LOG" >/dev/null
  fi
}

stop() {
  [ -f "$DATA/PG_VERSION" ] || return 0
  as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast -w >/dev/null 2>&1 || true
}

log_size() { if [ -f "$LOG" ]; then stat -c %s "$LOG"; else echo 0; fi; }

# check_log FROM: the crashes and PANICs logged since byte FROM, minus the processes killed on purpose.
check_log() {
  local from=${1:-0} found
  [ -f "$LOG" ] || return 0
  found=$(tail -c +"$((from + 1))" "$LOG" | { grep -E 'terminated by signal|PANIC:' || true; } |
    while IFS= read -r line; do
      pid=$(sed -n 's/.*(PID \([0-9]*\)) was terminated by signal 9: Killed.*/\1/p' <<<"$line")
      if [ -n "$pid" ] && [ -f "$KILLED" ] && grep -qx "$pid" "$KILLED"; then continue; fi
      echo "$line"
    done)
  if [ -n "$found" ]; then
    echo "cluster: the server log ($LOG) shows a crash:" >&2
    echo "$found" >&2
    return 1
  fi
}

case "${1:-}" in
  start|restart) start; echo "cluster: running on port $PORT (socket dir $RUN)" ;;
  stop) stop ;;
  stop-immediate) [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$DATA" stop -m immediate -w >/dev/null ;;
  status) as_pg "$BIN/pg_ctl" -D "$DATA" status ;;
  env) echo "PGHOST=$RUN PGPORT=$PORT PGUSER=postgres" ;;
  destroy) stop; rm -rf "$DIR" ;;
  log-size) log_size ;;
  check-log) check_log "${2:-0}" ;;
  *) echo "usage: $0 start|stop|stop-immediate|restart|status|env|destroy|log-size|check-log [FROM]" >&2; exit 2 ;;
esac
