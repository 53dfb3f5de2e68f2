#!/usr/bin/env bash
#! Instructions per call of the installed build, counted by valgrind's callgrind in a single-user
#! backend, for BOTH sides of the runner's ratios (benches/run.sh, docs/reference.md §8):
#!   W1   one-event es.append_events (NULL expected version, random of 100k streams)
#!        vs the raw single-row INSERT into bench.raw_events (W1's w1_raw.sql)
#!   W1h  W1's append vs the hand-written append that also keeps a stream head as the store
#!        does: one statement updating the stream's row of bench.raw_streams (a copy of
#!        es.streams) and inserting the event at the version it returns
#!   W2   es.append_events of 100 events to a new stream vs one INSERT of the same 100 rows
#!        (per event: the call's count / 100)
#!   W3   es.deposit on a random one of 10k accounts vs the raw INSERT of the same Deposited event
#!   W15  es.load_events of a random one of 5,000 20-event streams vs
#!        SELECT * FROM bench.raw_events WHERE stream_id = $1 ORDER BY version
#!   W15l W15's es.load_events vs W15's raw query with the probe of the stream's life that the
#!        store's read makes (a copy of es.streams: AND NOT EXISTS (... s.deleted IS NOT NULL))
#!   W16  es.read_all(<random after>, 1000) vs
#!        SELECT * FROM bench.raw_events WHERE global_position > $1 ORDER BY global_position LIMIT 1000
#! and, for continuity with the figures of docs/benchmarks.md, the older one-statement loops:
#!   loops  N one-event appends / N deposits in ONE statement (`SELECT count(f(...)) FROM
#!          generate_series(1, N)`), and an append to a new stream at expected version 0 without
#!          and with a caller-given event id.
#! bench.raw_events is `LIKE es.events INCLUDING ALL` (same columns, indexes, defaults), filled with
#! a copy of es.events's rows (same positions), as run.sh's raw table.
#!
#! How a paired workload is counted: like pgbench -M prepared, each side is a prepared statement
#! (PREPARE once, then N lines `EXECUTE s(<random parameters>)`, each its own transaction, as
#! each pgbench transaction is), so both sides pay the same statement, transaction and commit
#! overhead and the ratio is the one a client sees, minus the network. Per call = (the session
#! with the N EXECUTEs − the same session without them) / N. A single-user backend prints every
#! row it returns with a printf per column, far dearer than sending it to a client, so the read
#! sides return one row: `SELECT sum(length(t::text)) FROM (<the read>) t`. The whole-row
#! reference keeps the planner from pruning any column of the raw query, and t::text runs every
#! column's output function, as the protocol's text format does for pgbench; both sides' sums
#! are checked to be equal (same rows, same text) before counting. Both sides read through a
#! subquery (`(SELECT * FROM es.read_all(...)) t` as `(SELECT * FROM bench.raw_events ...) t`),
#! so `t` is an anonymous record on both: a function's row `t` would be of the named type
#! es.events, whose text output looks the row type up once per row (about 300 instructions),
#! which neither pgbench's `SELECT *` nor the raw side pays. The write sides print what
#! they return (the store's new version, nothing for an INSERT), as pgbench receives it.
#! The ratio printed is oriented as the runner's: raw/store (≥ 1.0: the store is cheaper).
#!
#! Why: on a 2-core virtual machine the throughput of a pgbench run varies by ±15 % from run to
#! run, more than most changes cost; an instruction count is the same from run to run for the same
#! build and input, whatever else the machine does. Compare two builds by installing each
#! (`bash scripts/install.sh --release`) and running this after each.
#!
#! usage: benches/instructions.sh [--only W1,W15,loops | --all] [N]   (default N = 20000: the
#!   paired workloads W1, W1h, W2, W3, W15, W15l, W16, 3-5 minutes of CPU; --all adds the older loops)
#!   N calls per loop, N/2 for W1 and W3, N/100 for W2 (N events), N/20 for W15, N/1000 for
#!   W16 (at least 10 each).
#! env:   PG_BIN (default: the machine's PostgreSQL 15), ES_INSTRUCTIONS_PORT (default 28850);
#!        the cluster is target/es-cluster-instructions of this tree.
#! out:   the table on stdout and in target/bench-instructions.txt (with the md5 of the
#!        event_store.so it counted: benches/run.sh shows its ratios beside pgbench's when the
#!        installed library is the same).
#! needs: valgrind (Debian's package)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=20000
only=
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=${2:?--only needs a list}; shift ;;
    --all) only=W1,W1h,W2,W3,W15,W15l,W16,loops ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^#! \{0,1\}//'; exit 0 ;;
    *) [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "instructions: unknown argument: $1" >&2; exit 2; }; n=$1 ;;
  esac
  shift
done
# Without --only: every paired workload; the older loops only when asked for (`--only loops`
# or `--all`), as they double the run's time.
want() {
  if [ -z "$only" ]; then [ "${1^^}" != LOOPS ]; else [[ ",${only^^}," == *",${1^^},"* ]]; fi
}
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
export PG_BIN=$BIN
export ES_CLUSTER_DIR=$here/target/es-cluster-instructions ES_PORT=${ES_INSTRUCTIONS_PORT:-28850}
export ES_MALLOC_PERTURB=0
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
so=$("$BIN/pg_config" --pkglibdir)/event_store.so
[ -f "$so" ] || { echo "instructions: no event_store.so in $("$BIN/pg_config" --pkglibdir) (bash scripts/install.sh --release)" >&2; exit 1; }
cluster() { bash "$here/scripts/cluster.sh" "$@"; }
trap 'cluster stop >/dev/null 2>&1 || true' EXIT
cluster start >/dev/null
eval "$(cluster env)"
export PGHOST PGPORT PGUSER
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

# The store every measurement starts from, made once per installed schema (the template's name
# carries the install script's checksum, so a build that changes the SQL objects gets a new one):
# the W1 streams (100k, one event each), the W3 accounts (10k), the W15 streams (5,000 of 20
# events), and bench.raw_events holding a copy of every row.
W15_STREAMS=5000
schema_sum=$(cat "$("$BIN/pg_config" --sharedir)"/extension/event_store--*.sql | md5sum | cut -c1-10)
tpl=es_instructions_tpl_$schema_sum
if ! q -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$tpl'" | grep -q 1; then
  for old in $(q -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'es\_instructions\_t%'"); do
    q -d postgres -c "DROP DATABASE $old" >/dev/null
  done
  echo "instructions: making the store $tpl (once per installed schema)"
  q -d postgres -c "CREATE DATABASE $tpl" >/dev/null
  q -d "$tpl" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION event_store;
SET es.tracing = off;
SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
       ARRAY['{"type":"ItemAdded","sku":"A-1","qty":1}']::jsonb[])) FROM generate_series(1, 100000) n;
SELECT count(es.append_events(('e3' || lpad(to_hex(n), 30, '0'))::uuid, 0,
       ARRAY['{"type":"Opened","account_holder":"Bench","initial_balance_cents":0}']::jsonb[])) FROM generate_series(1, 10000) n;
SELECT count(es.append_events(('f5' || lpad(to_hex(n), 30, '0'))::uuid, 0,
       (SELECT array_agg(jsonb_build_object('type', 'ItemAdded', 'sku', 'R-' || g, 'qty', g, 'price_cents', 125 * g) ORDER BY g)
        FROM generate_series(1, 20) g)))
FROM generate_series(1, $W15_STREAMS) n;
CREATE SCHEMA bench;
CREATE SEQUENCE bench.raw_seq AS bigint;
CREATE TABLE bench.raw_events (LIKE es.events INCLUDING ALL);
ALTER TABLE bench.raw_events ALTER COLUMN global_position SET DEFAULT nextval('bench.raw_seq');
ALTER SEQUENCE bench.raw_seq OWNED BY bench.raw_events.global_position;
INSERT INTO bench.raw_events SELECT * FROM es.events ORDER BY global_position;
SELECT setval('bench.raw_seq', (SELECT max(global_position) FROM es.events));
VACUUM ANALYZE;
SQL
fi
db=es_instructions
q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db TEMPLATE $tpl" >/dev/null
# bench.raw_streams: a copy of es.streams with its storage parameters (W15l's life probe, W1h's
# stream head)
q -d $db -v tbl=bench.raw_streams -f "$here/benches/copy_of_streams.sql" >/dev/null
W16_MAX_AFTER=$(( $(q -d $db -c "SELECT max(global_position) FROM es.events") - 1000 ))

# The read workloads' statements (both sides return one row: see the header).
W15_STORE="SELECT sum(length(t::text)) FROM (SELECT * FROM es.load_events(\$1)) t"
W15_RAW="SELECT sum(length(t::text)) FROM (SELECT * FROM bench.raw_events WHERE stream_id = \$1 ORDER BY version) t"
# W15l: the raw query that also honours the stream's life as es.load_events does (a deleted
# stream reads as empty), through a copy of es.streams: one probe of its key per call
W15L_RAW="SELECT sum(length(t::text)) FROM (SELECT * FROM bench.raw_events WHERE stream_id = \$1 AND NOT EXISTS (SELECT FROM bench.raw_streams s WHERE s.stream_id = \$1 AND s.deleted IS NOT NULL) ORDER BY version) t"
W16_STORE="SELECT sum(length(t::text)) FROM (SELECT * FROM es.read_all(\$1, 1000)) t"
W16_RAW="SELECT sum(length(t::text)) FROM (SELECT * FROM bench.raw_events WHERE global_position > \$1 ORDER BY global_position LIMIT 1000) t"
W15_ARG="('f5' || lpad(to_hex(1 + (random() * $((W15_STREAMS - 1)))::int), 30, '0'))::uuid"
W16_ARG="(random() * $W16_MAX_AFTER)::bigint"
# the two sides of each read must return the same rows: checked on a few parameters first
for id in 1 77 $W15_STREAMS; do
  s="('f5' || lpad(to_hex($id), 30, '0'))::uuid"
  a=$(q -d $db -c "PREPARE s(uuid) AS $W15_STORE" -c "EXECUTE s($s)")
  b=$(q -d $db -c "PREPARE r(uuid) AS $W15_RAW" -c "EXECUTE r($s)")
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "instructions: W15: es.load_events gives $a characters, the raw query $b" >&2; exit 1; }
  b=$(q -d $db -c "PREPARE r(uuid) AS $W15L_RAW" -c "EXECUTE r($s)")
  [ "$a" = "$b" ] || { echo "instructions: W15l: es.load_events gives $a characters, the raw query $b" >&2; exit 1; }
done
for after in 0 12345 $W16_MAX_AFTER; do
  a=$(q -d $db -c "PREPARE s(bigint) AS $W16_STORE" -c "EXECUTE s($after)")
  b=$(q -d $db -c "PREPARE r(bigint) AS $W16_RAW" -c "EXECUTE r($after)")
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "instructions: W16: es.read_all gives $a characters, the raw query $b" >&2; exit 1; }
done
cluster stop >/dev/null

echo "instructions: event_store.so built $(date -r "$so" '+%F %T'), N = $n"
# count FILE: the total instructions of a single-user backend that runs the lines of FILE
# (callgrind's "Collected")
count() {
  local out=$ES_CLUSTER_DIR/callgrind.out
  runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN/postgres" --single -D "$ES_CLUSTER_DIR/data" -c shared_preload_libraries=event_store \
    -c synchronous_commit=off $db <"$1" 2>&1 >/dev/null | awk '/Collected/ { print $4 }'
}
work=$ES_CLUSTER_DIR/instructions-sql
mkdir -p "$work"
chmod 755 "$work"
# per_call CALLS PREAMBLE EXEC: instructions per EXECUTE line: the session PREAMBLE + CALLS
# lines EXEC, minus the session PREAMBLE alone (PREAMBLE: one line; it sets the seed, so both
# sides of a workload draw the same parameters)
per_call() {
  local calls=$1 pre=$2 exec=$3 base loop
  printf 'SET es.tracing = off; SELECT setseed(0.5); %s\n' "$pre" >"$work/base.sql"
  { cat "$work/base.sql"; L=$exec awk -v n="$calls" 'BEGIN { for (i = 0; i < n; i++) print ENVIRON["L"] }'; } >"$work/loop.sql"
  base=$(count "$work/base.sql")
  loop=$(count "$work/loop.sql")
  [ -n "$base" ] && [ -n "$loop" ] || { echo "instructions: valgrind counted nothing (see $work/*.sql)" >&2; exit 1; }
  echo $(((loop - base) / calls))
}
# one-statement loops (the older lines): instructions per call of SQL run N times in one statement
per_loop() {
  local base loop
  printf 'SET es.tracing = off; SELECT setseed(0.5); SELECT 1;\n' >"$work/base.sql"
  printf 'SET es.tracing = off; SELECT setseed(0.5); %s\n' "$1" >"$work/loop.sql"
  base=$(count "$work/base.sql")
  loop=$(count "$work/loop.sql")
  echo $(((loop - base) / n))
}

results=()
# calls D: N / D calls, at least 10
calls() { local c=$((n / $1)); echo $((c < 10 ? 10 : c)); }
# pair ID UNIT DIVISOR CALLS DESCRIPTION STORE_PREPARE STORE_EXEC RAW_PREPARE RAW_EXEC
pair() {
  local id=$1 unit=$2 div=$3 calls=$4 desc=$5 s r line
  want "$id" || return 0
  s=$(($(per_call "$calls" "$6" "$7") / div))
  r=$(($(per_call "$calls" "$8" "$9") / div))
  line=$(awk -v id="$id" -v u="$unit" -v s="$s" -v r="$r" -v d="$desc" \
    'BEGIN { printf "%-4s store %9d  raw %9d  ratio %6.3f  instructions per %s; %s", id, s, r, r / s, u, d }')
  echo "$line"
  results+=("$line")
}

W1_EVENT='{"type":"ItemAdded","sku":"A-1","qty":1}'
W1_ID="lpad(to_hex(\$1::bigint), 32, '0')::uuid"
W3_ID="('e3' || lpad(to_hex(\$1::bigint), 30, '0'))::uuid"
w2_arr= w2_vals= sep=
for ((i = 1; i <= 100; i++)); do
  ev="{\"type\":\"ItemAdded\",\"sku\":\"A-$i\",\"qty\":$i,\"price_cents\":$((i * 125))}"
  w2_arr+="$sep'$ev'"
  w2_vals+="$sep($i, 'ItemAdded', '$ev'::jsonb)"
  sep=,
done

# reads first, while es.events and its copy hold the same rows
pair W15 call 1 $(calls 20) "es.load_events(<20-event stream>) vs SELECT * ... WHERE stream_id = \$1 ORDER BY version" \
  "PREPARE s(uuid) AS $W15_STORE;" "EXECUTE s($W15_ARG);" \
  "PREPARE r(uuid) AS $W15_RAW;" "EXECUTE r($W15_ARG);"
pair W15l call 1 $(calls 20) "es.load_events(<20-event stream>) vs the raw query that also reads the stream's life" \
  "PREPARE s(uuid) AS $W15_STORE;" "EXECUTE s($W15_ARG);" \
  "PREPARE r(uuid) AS $W15L_RAW;" "EXECUTE r($W15_ARG);"
pair W16 call 1 $(calls 1000) "es.read_all(<after>, 1000) vs SELECT * ... WHERE global_position > \$1 ORDER BY global_position LIMIT 1000" \
  "PREPARE s(bigint) AS $W16_STORE;" "EXECUTE s($W16_ARG);" \
  "PREPARE r(bigint) AS $W16_RAW;" "EXECUTE r($W16_ARG);"
pair W1 call 1 "$(calls 2)" "one-event es.append_events (NULL expected version) vs single-row INSERT" \
  "PREPARE s(int) AS SELECT es.append_events($W1_ID, NULL, ARRAY['$W1_EVENT']::jsonb[]);" \
  "EXECUTE s(1 + (random() * 99999)::int);" \
  "PREPARE r(int, bigint) AS INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at) VALUES ($W1_ID, \$2, gen_random_uuid(), 'ItemAdded', '$W1_EVENT', now(), now());" \
  "EXECUTE r(1 + (random() * 99999)::int, 2 + (random() * 4611686018427387000)::bigint);"
pair W1h call 1 "$(calls 2)" "one-event es.append_events (NULL expected version) vs the INSERT at the version a stream head's UPDATE returns, one statement" \
  "PREPARE s(int) AS SELECT es.append_events($W1_ID, NULL, ARRAY['$W1_EVENT']::jsonb[]);" \
  "EXECUTE s(1 + (random() * 99999)::int);" \
  "PREPARE r(int) AS WITH head AS (UPDATE bench.raw_streams SET version = version + 1, updated_at = now() WHERE stream_id = $W1_ID RETURNING stream_id, version) INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at) SELECT stream_id, version, gen_random_uuid(), 'ItemAdded', '$W1_EVENT', now(), now() FROM head;" \
  "EXECUTE r(1 + (random() * 99999)::int);"
pair W2 event 100 $(calls 100) "es.append_events(<new stream>, 0, 100 events) vs one INSERT of the 100 rows" \
  "PREPARE s AS SELECT es.append_events(gen_random_uuid(), 0, ARRAY[$w2_arr]::jsonb[]);" "EXECUTE s;" \
  "PREPARE r AS WITH s AS MATERIALIZED (SELECT gen_random_uuid() AS id) INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at) SELECT s.id, e.version, gen_random_uuid(), e.event_type, e.data, now(), now() FROM s, (VALUES $w2_vals) AS e(version, event_type, data);" "EXECUTE r;"
pair W3 call 1 "$(calls 2)" "es.deposit vs single-row INSERT of the Deposited event" \
  "PREPARE s(int) AS SELECT es.deposit($W3_ID, 100, 'bench');" \
  "EXECUTE s(1 + (random() * 9999)::int);" \
  "PREPARE r(int, bigint) AS INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at) VALUES ($W3_ID, \$2, gen_random_uuid(), 'Deposited', '{\"type\":\"Deposited\",\"amount_cents\":100,\"description\":\"bench\"}', now(), now());" \
  "EXECUTE r(1 + (random() * 9999)::int, 2 + (random() * 4611686018427387000)::bigint);"

if want loops; then
  append=$(per_loop "SELECT count(es.append_events(lpad(to_hex((1 + (random() * 99999)::int)::bigint), 32, '0')::uuid, NULL, ARRAY['$W1_EVENT']::jsonb[])) FROM generate_series(1, $n);")
  deposit=$(per_loop "SELECT count(es.deposit(('e3' || lpad(to_hex(1 + (random() * 9999)::int), 30, '0'))::uuid, 100, 'bench')) FROM generate_series(1, $n);")
  # The seed client's append: an explicit expected version (0: a new stream) and a caller-given
  # event id, against the same append with the uuid under another key (same JSON work): the
  # difference is what the id costs (the look-up that lets ES004 say where an id is stored; the
  # id's index entry is the same in both).
  exact=$(per_loop "SELECT count(es.append_events(gen_random_uuid(), 0, ARRAY[jsonb_build_object('type', 'ItemAdded', 'ref', gen_random_uuid())])) FROM generate_series(1, $n) g;")
  with_id=$(per_loop "SELECT count(es.append_events(gen_random_uuid(), 0, ARRAY[jsonb_build_object('type', 'ItemAdded', 'event_id', gen_random_uuid())])) FROM generate_series(1, $n) g;")
  results+=("loop W1-like es.append_events in one statement: $append instructions per call"
            "loop W3-like es.deposit in one statement:       $deposit instructions per call"
            "loop new stream (expected 0), no id:   $exact instructions per call"
            "loop new stream (expected 0), with id: $with_id instructions per call")
  printf '%s\n' "${results[@]: -4}"
fi

mkdir -p "$here/target"
{
  echo "# benches/instructions.sh, $(date '+%F %T'), N = $n"
  echo "so_md5 $(md5sum <"$so" | cut -d' ' -f1)"
  printf '%s\n' "${results[@]}"
} >"$here/target/bench-instructions.txt"
echo "instructions: written to target/bench-instructions.txt"
