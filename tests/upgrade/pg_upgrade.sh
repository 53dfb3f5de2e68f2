#!/usr/bin/env bash
#! A major-version upgrade that keeps the events (issue 20, item 5): fills a PostgreSQL 15 cluster
#! with every kind of state the store keeps (tests/upgrade/fill.sql), runs `pg_upgrade` to
#! PostgreSQL 18 with the 18 build of the same extension version installed, and shows that
#! everything is intact and working afterwards.
#!
#! Why: pg_upgrade moves the data files as they are and recreates the schema from a binary-upgrade
#! dump; nothing of the store is re-run, so what it keeps in sequences, shared memory, OIDs and
#! its background worker must survive the new server on its own. What it checks, in order:
#!   - pg_upgrade --check, then the real run (--copy: the old cluster stays a valid rollback; the
#!     test proves it by starting it again at the end), both servers with the library preloaded
#!     during pg_upgrade as in production (its worker must not get in the way)
#!   - the fingerprint (tests/upgrade/fingerprint.sql: every row of every table of the store and of
#!     the test's read models, the sequences, the views, es.state / history / read_all / load_events
#!     of every stream, the extension version) equal before and after, and after a no-op
#!     `ALTER EXTENSION event_store UPDATE`
#!   - the subscription resumes at its checkpoint (es.poll returns exactly what it returned before
#!     the upgrade, then the new events), its lease held by the same consumer
#!   - appends continue above every stored position, versions continue, optimistic concurrency
#!     (ES001), unique event ids (ES004), the account rules (ES101), the cart's rules (CT001) and
#!     its upcaster work; es.read_all after the old end returns exactly the new events
#!   - the projection worker resumes: new events projected once, old ones not again; a paused
#!     projection stays paused; the account projections equal es.account_state
#!   - the servers pg_upgrade starts (binary-upgrade mode) run no event_store background worker
#!   - pg_amcheck (heap and B-tree, heapallindexed, rootdescend) clean on every database, and no
#!     crash in either server's log nor in pg_upgrade's (scripts/cluster.sh check-log)
#!
#! usage: bash tests/upgrade/pg_upgrade.sh
#! env: PG15_CONFIG/PG15_BIN, PG18_CONFIG/PG18_BIN: private installations with the extension
#!      installed (test.sh's target/pg15 and target/pg18); unset: this script makes its own copies
#!      under target/pg-upgrade/ (scripts/private_pg.sh) and installs the debug build into them
#!      (18 built in CARGO_TARGET_DIR target/pg18-build). Nothing outside target/ is written.
#!      ES_UPGRADE_PORT (default 28970; uses it and the next three), ES_UPGRADE_STRICT (default 0;
#!      1: fail, instead of stripping it, when the old cluster carries the column option pg_attver
#!      that some patched PostgreSQL 15 builds stamp and PostgreSQL 18 refuses)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
# shellcheck source=../../scripts/pg_versions.sh
source "$here/scripts/pg_versions.sh"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
t0=$SECONDS
work=$here/target/pg-upgrade
port_old=${ES_UPGRADE_PORT:-28970}
port_new=$((port_old + 1))
strict=${ES_UPGRADE_STRICT:-0}
sql=$here/tests/upgrade

step() { echo; echo "--- $*"; }
ok() { echo "  ok: $*"; }
fail() { echo "pg_upgrade test: FAILED: $*" >&2; exit 1; }
# the servers and pg_upgrade run as postgres (PostgreSQL refuses root), as scripts/cluster.sh runs them
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@"
  else
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@"
  fi
}

# --- the two installations ------------------------------------------------------------------------
# install_copy MAJOR: a private copy of the machine's installation with this tree's build installed;
# prints the copy's pg_config.
install_copy() {
  local major=$1 dest=$work/pg$1 env_line
  env_line=$(PG_CONFIG=$(PG15_CONFIG='' PG18_CONFIG='' es_pg_config "$major") bash scripts/private_pg.sh "$dest")
  (
    eval "$env_line"
    if [ "$major" = 15 ]; then
      PG_CONFIG=$PG_CONFIG PGRX_HOME=$PGRX_HOME bash scripts/install.sh >&2
    else
      PG_CONFIG=$PG_CONFIG PGRX_HOME=$PGRX_HOME CARGO_TARGET_DIR=${CARGO_TARGET_DIR_PG18:-$here/target/pg18-build} \
        bash scripts/install.sh >&2
    fi
    echo "$PG_CONFIG"
  )
}
mkdir -p "$work"
step "installations"
for major in 15 18; do
  var=PG${major}_CONFIG
  if [ -z "${!var:-}" ]; then
    echo "  no $var: installing this tree into a private copy of PostgreSQL $major under $work"
    printf -v "$var" '%s' "$(install_copy "$major" | tail -1)"
  fi
done
cfg15=$PG15_CONFIG
cfg18=$PG18_CONFIG
bin15=${PG15_BIN:-$("$cfg15" --bindir)}
bin18=${PG18_BIN:-$("$cfg18" --bindir)}
[ "$(es_pg_major "$cfg15")" = 15 ] || fail "$cfg15 is not PostgreSQL 15"
[ "$(es_pg_major "$cfg18")" = 18 ] || fail "$cfg18 is not PostgreSQL 18"
for cfg in "$cfg15" "$cfg18"; do
  [ -f "$("$cfg" --pkglibdir)/event_store.so" ] || fail "event_store is not installed in $(dirname "$cfg")"
done
ctl_version() { sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$1" --sharedir)/extension/event_store.control"; }
version=$(ctl_version "$cfg15")
[ -n "$version" ] && [ "$version" = "$(ctl_version "$cfg18")" ] ||
  fail "the 15 and 18 installations hold different versions of event_store ($version, $(ctl_version "$cfg18"))"
ok "event_store $version installed for PostgreSQL $("$cfg15" --version | cut -d' ' -f2) ($bin15) and $("$cfg18" --version | cut -d' ' -f2) ($bin18)"

# --- clusters ---------------------------------------------------------------------------------------
old_dir=$work/old
new_dir=$work/new
old() { PG_BIN=$bin15 ES_CLUSTER_DIR=$old_dir ES_PORT=$port_old bash scripts/cluster.sh "$@"; }
new() { PG_BIN=$bin18 ES_CLUSTER_DIR=$new_dir ES_PORT=$port_new bash scripts/cluster.sh "$@"; }
cleanup() {
  local rc=$?
  old stop >/dev/null 2>&1 || true
  new stop >/dev/null 2>&1 || true
  if [ "${ES_UPGRADE_KEEP:-0}" != 1 ]; then rm -rf "$old_dir" "$new_dir" "$work/run"; fi
  exit "$rc"
}
trap cleanup EXIT
rm -rf "$old_dir" "$new_dir" "$work/run"
# psql_at BIN DIR PORT DB ARGS...: psql of BIN on a cluster (unaligned, tuples only, stops at an error)
psql_at() {
  local bin=$1 dir=$2 port=$3 db=$4
  shift 4
  "$bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir/run" -p "$port" -U postgres -d "$db" "$@"
}
q15() { psql_at "$bin15" "$old_dir" "$port_old" shop "$@"; }
q18() { psql_at "$bin18" "$new_dir" "$port_new" shop "$@"; }
# expect_equal WHAT ACTUAL EXPECTED
expect_equal() {
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
  ok "$1"
}
# expect_sqlstate WHAT CODE SQL: the statement must fail with that SQLSTATE (on the new cluster)
expect_sqlstate() {
  local out
  if out=$(q18 -v VERBOSITY=sqlstate -c "$3" 2>&1); then fail "$1: succeeded, expected SQLSTATE $2"; fi
  grep -q "ERROR:  $2" <<<"$out" || fail "$1: expected SQLSTATE $2, got: $out"
  ok "$1 ($2)"
}

step "PostgreSQL 15: fill a store (tests/upgrade/fill.sql)"
old start >/dev/null
psql_at "$bin15" "$old_dir" "$port_old" postgres -c "CREATE DATABASE shop"
# a second database without the extension: pg_upgrade moves it too
psql_at "$bin15" "$old_dir" "$port_old" postgres -c "CREATE DATABASE plain"
q15 -f "$sql/fill.sql" >"$work/fill.out" || { cat "$work/fill.out"; fail "fill.sql"; }
grep -q '^model|t$' "$work/fill.out" || { cat "$work/fill.out"; fail "the projection did not catch up before the upgrade"; }
q15 -f "$sql/fingerprint.sql" >"$work/before.txt"
max_before=$(q15 -c "SELECT max(global_position) FROM es.events")
events_before=$(q15 -c "SELECT count(*) FROM es.events")
model_before=$(q15 -c "SELECT count(*) FROM public.model")
poll_sql() { echo "SELECT coalesce(string_agg(global_position::text, ',' ORDER BY global_position), '') FROM es.poll('mailer', $1, 100000, 'worker-a')"; }
poll0_before=$(q15 -c "$(poll_sql 0)")
poll1_before=$(q15 -c "$(poll_sql 1)")
[ "$model_before" = "$events_before" ] || fail "the model holds $model_before rows for $events_before events before the upgrade"
[ -n "$poll0_before" ] && [ -n "$poll1_before" ] || fail "the subscription has nothing after its checkpoints"
ok "$events_before events (positions up to $max_before) in $(q15 -c "SELECT count(*) FROM es.streams") streams," \
  "$(q15 -c "SELECT count(*) FROM es.snapshots") snapshots, $(q15 -c "SELECT count(*) FROM es.subscription_config") subscriptions," \
  "$(q15 -c "SELECT count(*) FROM es.projection_config") projections; fingerprint of $(wc -l <"$work/before.txt") lines"
old stop

step "PostgreSQL 18: a new cluster (initdb as scripts/cluster.sh does, data checksums as the old one)"
# PostgreSQL 18's initdb turns data checksums on by default; pg_upgrade needs them as the old
# cluster has them (scripts/cluster.sh's 15 cluster: off).
old_checksums=$(as_pg "$bin15/pg_controldata" "$old_dir/data" | sed -n 's/^Data page checksum version: *//p')
checksum_opt=--no-data-checksums
[ "$old_checksums" = 0 ] || checksum_opt=--data-checksums
mkdir -p "$new_dir/run" "$work/run"
[ "$(id -u)" != 0 ] || chown postgres:postgres "$new_dir" "$new_dir/run" "$work/run"
as_pg "$bin18/initdb" -D "$new_dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 $checksum_opt \
  >"$new_dir/initdb.log"
# the settings scripts/cluster.sh gives a cluster it creates (its start adds the preload include)
sed -n '/^port = /,/^logging_collector/p' "$old_dir/data/postgresql.conf" | sed "s/^port = .*/port = $port_new/;
  s|^unix_socket_directories = .*|unix_socket_directories = '$new_dir/run'|" >>"$new_dir/data/postgresql.conf"
# the include lines and the preload file, as scripts/cluster.sh start writes them: the preload is
# in both clusters' configuration while pg_upgrade runs their servers
cp -p "$old_dir/data/conf.d-preload.conf" "$old_dir/data/conf.d-extra.conf" "$new_dir/data/"
printf '%s\n' "include_if_exists = 'conf.d-preload.conf'" "include_if_exists = 'conf.d-extra.conf'" \
  >>"$new_dir/data/postgresql.conf"
grep -q "shared_preload_libraries = 'event_store'" "$new_dir/data/conf.d-preload.conf" || fail "no preload in the new cluster"
ok "initdb $checksum_opt; shared_preload_libraries = 'event_store' in both clusters"

# run_upgrade ARGS...: pg_upgrade as postgres, from a directory it may write (its socket and the
# delete script), on ports of this test; output in $work/pg_upgrade*.out
run_upgrade() {
  # the servers pg_upgrade starts log at debug1 (what background workers they start; pg_upgrade
  # keeps their log, --retain); the next scripts/cluster.sh start puts ES_EXTRA_CONF back
  local d
  for d in "$old_dir" "$new_dir"; do
    echo "log_min_messages = debug1" >"$d/data/conf.d-extra.conf"
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$d/data/conf.d-extra.conf"
  done
  (cd "$work/run" && as_pg "$bin18/pg_upgrade" --old-bindir "$bin15" --new-bindir "$bin18" \
    --old-datadir "$old_dir/data" --new-datadir "$new_dir/data" --old-port $((port_old + 2)) \
    --new-port $((port_old + 3)) --username postgres --socketdir "$work/run" --copy --retain "$@")
}

step "attribute options the new server does not know (an environment issue, not the store's)"
# Debian's 15.20 stamps pg_attver on every column; a server that refuses the option cannot take
# the schema pg_upgrade dumps, and pg_upgrade --check does not notice (tests/upgrade/strip_pg_attver.sql)
ES_PRELOAD=0 new start >/dev/null
if q_new=$(psql_at "$bin18" "$new_dir" "$port_new" postgres \
  -c "CREATE TEMP TABLE probe (a int); ALTER TABLE probe ALTER COLUMN a SET (pg_attver = 1)" 2>&1); then
  attver_known=1
else
  grep -q 'unrecognized parameter "pg_attver"' <<<"$q_new" || fail "probing the new server: $q_new"
  attver_known=0
fi
new stop
# strip_attver: (old server running) the options off every database's user columns, when needed;
# again after any DDL on the old cluster, which stamps the columns it touches anew
strip_attver() {
  [ "$attver_known" = 0 ] || return 0
  for db in $(q15 -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
    psql_at "$bin15" "$old_dir" "$port_old" "$db" -f "$sql/strip_pg_attver.sql"
  done
}
old start >/dev/null
stamped=$(q15 -c "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                   WHERE a.attoptions::text LIKE '%pg_attver=%' AND c.relnamespace <> 'pg_catalog'::regnamespace")
if [ "$attver_known" = 0 ] && [ "$stamped" != 0 ]; then
  echo "  ENVIRONMENT ISSUE: PostgreSQL $("$cfg15" --version | cut -d' ' -f2) stamps pg_attver on every column" \
    "($stamped outside pg_catalog in shop), PostgreSQL $("$cfg18" --version | cut -d' ' -f2) refuses the option"
  [ "$strict" = 1 ] && fail "the new server refuses pg_attver (ES_UPGRADE_STRICT=1)"
  strip_attver
  ok "tests/upgrade/strip_pg_attver.sql in every database of the old cluster"
else
  attver_known=1
  ok "none (the new server knows pg_attver, or the old cluster has none)"
fi
old stop

step "pg_upgrade --check"
# (the store keeps no reg* column pg_upgrade refuses: its registry names functions by text)
run_upgrade --check >"$work/pg_upgrade-check.out" 2>&1 || { cat "$work/pg_upgrade-check.out"; fail "pg_upgrade --check"; }
ok "clusters are compatible"

step "pg_upgrade --copy"
rm -rf "$new_dir/data/pg_upgrade_output.d"
run_upgrade >"$work/pg_upgrade.out" 2>&1 || {
  cat "$work/pg_upgrade.out"
  find "$new_dir/data/pg_upgrade_output.d" -name '*.log' -exec tail -n 30 {} + 2>/dev/null
  fail "pg_upgrade"
}
ok "pg_upgrade: $(grep -c " ok$" "$work/pg_upgrade.out") steps ok, $(grep -m1 -o "Upgrade Complete" "$work/pg_upgrade.out" || echo "finished")"
# the servers pg_upgrade ran (old and new, with the preload) must not have crashed
upgrade_logs=$(find "$new_dir/data/pg_upgrade_output.d" -name '*.log')
if found=$(grep -hE 'terminated by signal|PANIC:' $upgrade_logs); then
  echo "$found" >&2
  fail "a server pg_upgrade ran crashed"
fi
ok "no crash or PANIC in pg_upgrade's logs"
# binary-upgrade mode: the store starts no background worker (no projection runs, no connection
# to a database while pg_upgrade dumps the old cluster's schema)
if found=$(grep -hE 'starting background worker process "event_store' $upgrade_logs); then
  echo "$found" >&2
  fail "event_store background workers ran in the servers pg_upgrade started"
fi
grep -q 'registering background worker' $upgrade_logs || fail "pg_upgrade's servers did not log at debug1"
ok "no event_store background worker in the servers pg_upgrade ran (their debug1 log lists" \
  "$(grep -ho 'starting background worker process "[^"]*"' $upgrade_logs | sort -u | cut -d'"' -f2 | paste -sd, -))"

step "PostgreSQL 18: the store after the upgrade"
new start >/dev/null
expect_equal "server version" "$(q18 -c "SHOW server_version_num" | cut -c1-2)" 18
expect_equal "library preloaded" "$(q18 -c "SHOW shared_preload_libraries")" event_store
expect_equal "every database came along" \
  "$(q18 -c "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")" "plain,postgres,shop,template0,template1"
q18 -f "$sql/fingerprint.sql" >"$work/after.txt"
diff -u "$work/before.txt" "$work/after.txt" >"$work/fingerprint.diff" || {
  head -60 "$work/fingerprint.diff"
  fail "the fingerprint differs after the upgrade ($work/fingerprint.diff)"
}
ok "fingerprint equal: $(grep -c '^event ' "$work/after.txt") events, $(grep -c '^stream ' "$work/after.txt") streams," \
  "$(grep -c '^snapshot ' "$work/after.txt") snapshots, checkpoints, leases, parked events, projections, read models," \
  "sequences, states, es.read_all, extension $(q18 -c "SELECT extversion FROM pg_extension WHERE extname = 'event_store'")"
update_out=$(q18 -c "ALTER EXTENSION event_store UPDATE" 2>&1)
q18 -f "$sql/fingerprint.sql" >"$work/after-update.txt"
diff -q "$work/before.txt" "$work/after-update.txt" >/dev/null || fail "ALTER EXTENSION event_store UPDATE changed the store"
ok "ALTER EXTENSION event_store UPDATE is a no-op (${update_out:-no output})"
expect_equal "the database's worker on 18 (es.worker_status)" "$(q18 -c "SELECT state FROM es.worker_status()" | grep -cE '^(running|idle)')" 1

step "the subscription resumes at its checkpoints"
expect_equal "partition 0 polls exactly what it polled before" "$(q18 -c "$(poll_sql 0)")" "$poll0_before"
expect_equal "partition 1 polls exactly what it polled before" "$(q18 -c "$(poll_sql 1)")" "$poll1_before"
expect_sqlstate "the lease of worker-a is still held" ES201 "SELECT count(*) FROM es.poll('mailer', 0, 10, 'worker-b')"

step "appends continue above every stored position"
fx() { q18 -c "SELECT id FROM public.fixture WHERE name = '$1'"; }
g1=$(fx generic1)
v1=$(q18 -c "SELECT es.stream_version('$g1')")
expect_equal "expected_version append continues the stream" \
  "$(q18 -c "SELECT es.append_events('$g1', $v1, ARRAY['{\"type\": \"AfterUpgrade\", \"n\": 1}']::jsonb[])")" $((v1 + 1))
expect_sqlstate "a stale expected_version" ES001 "SELECT es.append_events('$g1', $v1, ARRAY['{\"type\": \"Lost\"}']::jsonb[])"
expect_equal "a new stream starts at version 1" \
  "$(q18 -c "SELECT es.append_events('20000000-0000-0000-0000-000000000001', 0, ARRAY['{\"type\": \"Created\"}', '{\"type\": \"Noted\"}']::jsonb[])")" 2
old_id=$(q18 -c "SELECT event_id FROM es.events ORDER BY global_position LIMIT 1")
expect_sqlstate "an event id stored before the upgrade stays unique" ES004 \
  "SELECT es.append_events(gen_random_uuid(), NULL, ARRAY['{\"type\": \"Copy\", \"event_id\": \"$old_id\"}']::jsonb[])"
a1=$(fx account1)
balance=$(q18 -c "SELECT es.account_state('$a1')->>'balance_cents'")
q18 -c "SELECT es.deposit('$a1', 700, 'after the upgrade')" >/dev/null
expect_equal "a deposit moves the balance" "$(q18 -c "SELECT es.account_state('$a1')->>'balance_cents'")" $((balance + 700))
expect_sqlstate "the account's rules hold" ES101 "SELECT es.withdraw('$a1', 100000000, 'too much')"
c1=$(fx cart1)
q18 -c "SELECT es.append_events('$c1', NULL, ARRAY['{\"type\": \"ItemAdded\", \"sku\": \"fig\", \"qty\": 3, \"unit_price_cents\": 10}']::jsonb[])" >/dev/null
expect_equal "the cart's fold and upcaster (a v1 ItemAdded) run on 18" \
  "$(q18 -c "SELECT es.state('$c1')->'items'->'fig'->>'quantity'")" 3
expect_equal "the cart's kept state equals its replay" \
  "$(q18 -c "SELECT (SELECT state FROM es.streams WHERE stream_id = '$c1') = es.replay('cart', data ORDER BY version) FROM es.events WHERE stream_id = '$c1'")" t
expect_sqlstate "the cart's rules hold (a checked-out cart)" CT001 \
  "SELECT es.append_events('$(fx cart2)', NULL, ARRAY['{\"type\": \"ItemAdded\", \"sku\": \"x\", \"quantity\": 1, \"unit_price_cents\": 1}']::jsonb[])"
new_events=$(q18 -c "SELECT count(*) FROM es.events WHERE global_position > $max_before")
expect_equal "every new event is above the old end ($max_before)" \
  "$(q18 -c "SELECT count(*) FROM es.events")" "$((events_before + new_events))"
expect_equal "5 events appended after the upgrade" "$new_events" 5
expect_equal "es.read_all after the old end returns exactly the new events" \
  "$(q18 -c "SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM es.read_all($max_before, 1000)")" \
  "$(q18 -c "SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM es.events WHERE global_position > $max_before")"

step "the subscription delivers the new events after the old ones"
for p in 0 1; do
  before=$([ $p = 0 ] && echo "$poll0_before" || echo "$poll1_before")
  fresh=$(q18 -c "SELECT coalesce(string_agg(global_position::text, ',' ORDER BY global_position), '')
                    FROM es.events WHERE global_position > $max_before AND es.stream_hash(stream_id) % 2 = $p")
  expect_equal "partition $p: the old backlog, then the new events" "$(q18 -c "$(poll_sql $p)")" "$before${fresh:+,$fresh}"
  last=$(q18 -c "SELECT max(global_position) FROM es.poll('mailer', $p, 100000, 'worker-a')")
  expect_equal "partition $p: ack moves the checkpoint" "$(q18 -c "SELECT es.ack('mailer', $p, $last, 'worker-a')")" "$last"
done

step "the projection worker resumes"
end=$(q18 -c "SELECT max(global_position) FROM es.events")
expect_equal "es.wait_for_projection('model') of the new end" "$(q18 -c "SELECT es.wait_for_projection('model', $end, 60000)")" t
expect_equal "the old rows of the model are untouched" \
  "$(q18 -c "SELECT 'model ' || to_jsonb(m)::text FROM public.model m WHERE seq <= $model_before ORDER BY seq" | md5sum)" \
  "$(grep '^model ' "$work/before.txt" | md5sum)"
expect_equal "each event projected once, in order" \
  "$(q18 -c "SELECT count(*) = count(DISTINCT global_position) AND array_agg(global_position ORDER BY seq) = array_agg(global_position ORDER BY global_position) FROM public.model")" t
expect_equal "the model holds every event" "$(q18 -c "SELECT count(*) FROM public.model")" "$((events_before + new_events))"
for name in account_balances account_transactions; do
  expect_equal "es.wait_for_projection('$name')" "$(q18 -c "SELECT es.wait_for_projection('$name', $end, 60000)")" t
done
expect_equal "es.account_balances equals es.account_state" \
  "$(q18 -c "SELECT count(*) FROM es.account_balances b WHERE b.balance_cents <> (es.account_state(b.account_id)->>'balance_cents')::bigint OR b.version <> es.stream_version(b.account_id)")" 0
expect_equal "the paused projection did not move" \
  "$(q18 -c "SELECT state || ' ' || (SELECT count(*) FROM public.paused_model) FROM es.projections WHERE name = 'paused'")" "paused 0"
expect_equal "the parked event can be replayed" "$(q18 -c "SELECT es.replay_parked('flaky') > 0")" t

step "amcheck and the server logs"
"$bin18/pg_amcheck" -h "$new_dir/run" -p "$port_new" -U postgres --all --install-missing --heapallindexed --rootdescend \
  >"$work/amcheck.out" 2>&1 || { cat "$work/amcheck.out"; fail "pg_amcheck"; }
ok "pg_amcheck --all --heapallindexed --rootdescend: clean ($(q18 -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'es'::regnamespace AND relkind IN ('r', 'i')") relations of schema es)"
new check-log 0
ok "no crash in the PostgreSQL 18 server log"
new stop

step "rollback: the old cluster still starts (pg_upgrade --copy left it intact)"
old start >/dev/null
q15 -f "$sql/fingerprint.sql" >"$work/rollback.txt"
diff -q "$work/before.txt" "$work/rollback.txt" >/dev/null || fail "the old cluster differs from its fingerprint"
ok "the PostgreSQL 15 cluster starts with its fingerprint unchanged"
old check-log 0
ok "no crash in the PostgreSQL 15 server log"
old stop

echo
echo "pg_upgrade test: ok ($((SECONDS - t0)) s)"
