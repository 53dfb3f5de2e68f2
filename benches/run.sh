#!/usr/bin/env bash
#! Benchmark suite of event_store (docs/reference.md §8): runs each workload against the store and against its
#! "raw" baseline (plain INSERTs into a copy of es.events with client-made versions and no checks),
#! alternated in one run on one throwaway cluster, and prints store/raw ratios against the bars of docs/reference.md §8.
#! Why: the bars are ratios measured in one run, so the machine's speed cancels out.
#!
#! usage: benches/run.sh [--pg 15|18] [--smoke] [--secs N] [--reps N] [--only W1,W2] [--store-sql FILE]
#!                        [--instructions]
#!   --pg V        the PostgreSQL major version to run on (or ES_PG_VERSION=V): its binaries are
#!                 $PG_BIN when that is set (scripts/test.sh: its copy of V; it must be V), else the
#!                 machine's installation of V (scripts/pg_versions.sh); default: $PG_BIN, or 15
#!   --smoke       ~2 s runs, one repetition: proves the suite runs; never fails on a missed bar
#!   --secs N      seconds per pgbench run (default 10; docs/reference.md §8 asks for >= 8)
#!   --reps N      repetitions of the alternated sequence (default 3); each figure is the median
#!   --only LIST   run only these workloads (comma-separated ids, e.g. W1)
#!   --store-sql F build the store from SQL file F instead of CREATE EXTENSION event_store, without
#!                 preload (e.g. benches/reference/plpgsql_store.sql, to calibrate the machine)
#!   --instructions run benches/instructions.sh first (a few minutes). Either way the table's
#!                 column "instr" shows the instruction ratio (raw/store, oriented like the
#!                 pgbench ratio) of W1, W1h, W2, W3, W15, W15l and W16 from target/bench-instructions.txt,
#!                 when that file counted the event_store.so installed now
#!   W17 (a store of ES_BENCH_W17_EVENTS events, default 100M) runs only when --only names it,
#!                 never with --smoke
#! exit: 0 ok; 1 error (setup failed, pgbench failed transactions or aborted clients);
#!       3 a bar was missed (full mode only; --smoke reports MISS but exits 0)
#!
#! Adding a workload: write setup_<id> (once, after the database exists; optional) and
#! measure_<id> base|store (prints one number: the metric of that side, for the current run; a run
#! that appends to es.events passes its events per transaction to pgbench_tps for the store check),
#! then add one `register` line below. The loop, the medians, the table and the file need no change.
#! A workload with an absolute bar (W10: milliseconds, no baseline) registers a FIGURE function
#! (the table's figure; only measure_<id> store runs), and one measurement may feed several rows
#! (ids <id>:<suffix>, e.g. W10:p99). `note TEXT` adds a line under the table.
set -euo pipefail
shopt -s inherit_errexit        # failures inside $(measure_...) abort the run too

here=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$here/benches
OUT=$here/target/bench                 # generated pgbench scripts and per-run pgbench logs
RESULTS=$here/target/bench-results.txt
PG_VERSION=${ES_PG_VERSION:-}
DB=es_bench
CLIENTS=8
THREADS=2
SECS=10
REPS=5
SMOKE=0
ONLY=
STORE_SQL=
INSTRUCTIONS=

die() { echo "bench: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) PG_VERSION=${2:?--pg needs a version}; shift ;;
    --smoke) SMOKE=1; SECS=2; REPS=1 ;;
    --secs) SECS=${2:?--secs needs a value}; shift ;;
    --reps) REPS=${2:?--reps needs a value}; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --store-sql) STORE_SQL=$(realpath "${2:?--store-sql needs a file}"); shift ;;
    --instructions) INSTRUCTIONS=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^#! \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
[[ $SECS =~ ^[1-9][0-9]*$ && $REPS =~ ^[1-9][0-9]*$ ]] || die "--secs and --reps take positive integers"
[ -z "$STORE_SQL" ] || [ -f "$STORE_SQL" ] || die "no such file: $STORE_SQL"
[ "$SMOKE" = 0 ] || [[ ",${ONLY^^}," != *",W17,"* ]] || die "W17 does not run in --smoke mode"
# shellcheck source=../scripts/pg_versions.sh
source "$here/scripts/pg_versions.sh"
if [ -n "${PG_BIN:-}" ]; then
  BIN=$PG_BIN
elif [ -n "$PG_VERSION" ]; then
  BIN=$(dirname "$(es_pg_config "$PG_VERSION")") || die "no PostgreSQL $PG_VERSION"
else
  BIN=/usr/lib/postgresql/15/bin
fi
# the cluster, psql and pgbench are all of that version (a PG_BIN of another version is an error)
export PG_BIN=$BIN PATH=$BIN:$PATH
major=$(es_pg_major "$BIN/pg_config")
[ -z "$PG_VERSION" ] || [ "$major" = "$PG_VERSION" ] || die "--pg $PG_VERSION, but PG_BIN ($BIN) is PostgreSQL $major"

# --- instruction counts (benches/instructions.sh): their ratios go beside pgbench's ------------------
INSTR_FILE=$here/target/bench-instructions.txt
if [ -n "$INSTRUCTIONS" ]; then
  echo "bench: counting instructions first (benches/instructions.sh)"
  bash "$BENCH/instructions.sh" || die "benches/instructions.sh failed"
fi
# instr_ratio ID: the instruction ratio of workload ID from INSTR_FILE, or - when the file is
# missing, counted another build, or has no such workload
instr_ratio() {
  local so
  so=$("$BIN/pg_config" --pkglibdir)/event_store.so
  if [ -f "$INSTR_FILE" ] && [ -f "$so" ] && [ -z "$STORE_SQL" ] &&
     grep -qx "so_md5 $(md5sum <"$so" | cut -d' ' -f1)" "$INSTR_FILE"; then
    awk -v id="$1" '$1 == id { for (i = 2; i < NF; i++) if ($i == "ratio") { print $(i + 1); found = 1 } }
                    END { if (!found) print "-" }' "$INSTR_FILE"
  else
    echo -
  fi
}

# --- cluster ----------------------------------------------------------------------------------------
export ES_CLUSTER_DIR=$here/target/es-cluster-bench ES_PORT=${ES_BENCH_PORT:-28817}
if [ -n "$STORE_SQL" ]; then export ES_PRELOAD=${ES_PRELOAD:-0}; else export ES_PRELOAD=${ES_PRELOAD:-1}; fi
cluster() { bash "$here/scripts/cluster.sh" "$@"; }
# MALLOC_PERTURB_ (scripts/cluster.sh) costs the server time: measurements run without it, the
# smoke run (a test suite) with it
[ "$SMOKE" = 1 ] || export ES_MALLOC_PERTURB=${ES_MALLOC_PERTURB:-0}
LOG_FROM=$(cluster log-size)
mkdir -p "$OUT/logs"
rm -f "$OUT"/logs/*.log
trap 'cluster stop || true' EXIT
cluster start >/dev/null || die "the cluster did not start (log: $ES_CLUSTER_DIR/postgres.log)"
# shellcheck disable=SC2046
export $(cluster env)                   # PGHOST PGPORT PGUSER for psql and pgbench
unset PGDATABASE PGOPTIONS
echo "bench: $(psql -X -qAt -d postgres -c 'SELECT version()')"
sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
val() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }

# --- measuring helpers ------------------------------------------------------------------------------
# pgbench_tps NAME SCRIPT [EVENTS]: one pgbench run of SCRIPT; prints its tps. Fails (exit 1) when
# pgbench fails, reports failed transactions or aborted clients, or processes no transaction.
# EVENTS: how many es.events rows each transaction appends; the run's total is added to the count
# that check_store compares with es.events at the end (so the store cannot skip work unnoticed).
# PGB_DB / PGB_COUNT: run against another database (W7's) and count its events apart.
# PGB_TXNS: run that many transactions per client (pgbench -t) instead of SECS seconds.
pgbench_tps() {
  local name=$1 script=$2 events=${3:-0} log rc=0 failed tps done
  log=$OUT/logs/$name.rep$REP.log
  val "CHECKPOINT" >/dev/null
  # W1-W5 measure the store's own work, so their sessions run with tracing off; W6 measures
  # tracing's cost (it sets PGBENCH_OPTIONS itself).
  PGOPTIONS="-c synchronous_commit=off ${PGBENCH_OPTIONS:--c es.tracing=off}" "$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$THREADS" \
    $([ -n "${PGB_TXNS:-}" ] && echo "-t $PGB_TXNS" || echo "-T $SECS") -f "$script" "${PGB_DB:-$DB}" >"$log" 2>&1 || rc=$?
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")
  if [ "$rc" != 0 ] || [ "${failed:-0}" != 0 ] || grep -qiE 'aborted|incomplete' "$log" ||
     [ -z "$tps" ] || ! awk -v t="$tps" 'BEGIN { exit !(t > 0) }'; then
    { echo "bench: error: pgbench $name (rep $REP) failed: exit $rc, failed transactions ${failed:-?}"
      echo "----- $log"; grep -v '^progress' "$log" | tail -25; } >&2
    exit 1
  fi
  done=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  [ "$events" = 0 ] || echo $((${done:-0} * events)) >>"$OUT/${PGB_COUNT:-store-events}.count"
  echo "$tps"
}

# check_store: after the runs, es.events must hold exactly the events the setup and the store runs
# appended, with gapless versions 1..N per stream, es.streams agreeing, and every index complete
# (amcheck heapallindexed). A benchmark of a store that drops work would otherwise look fast.
check_store() {
  local want got bad
  want=$(( STORE_EVENTS_SETUP + $({ cat "$OUT/store-events.count" 2>/dev/null || true; } | paste -sd+ | sed 's/^$/0/') ))
  got=$(val "SELECT count(*) FROM es.events")
  [ "$got" = "$want" ] || die "store check: es.events holds $got events, the setup and the store runs appended $want"
  bad=$(val "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, min(version) AS lo, max(version) AS hi
                                   FROM es.events GROUP BY stream_id) e
             FULL JOIN es.streams s USING (stream_id)
             WHERE e.lo IS DISTINCT FROM 1 OR e.hi IS DISTINCT FROM e.n OR s.version IS DISTINCT FROM e.hi")
  [ "$bad" = 0 ] || die "store check: $bad streams with gaps in their versions or an es.streams row that disagrees"
  val "CREATE EXTENSION IF NOT EXISTS amcheck" >/dev/null
  val "SELECT count(bt_index_check(i.indexrelid, true)) FROM pg_index i
       JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
       WHERE i.indrelid = 'es.events'::regclass AND a.amname = 'btree'" >/dev/null ||
    die "store check: amcheck found an es.events index that misses rows or is corrupt"
  STORE_CHECK="$got events, versions gapless, es.streams consistent, btree indexes hold every row (amcheck)"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- workload registry ------------------------------------------------------------------------------
# register ID UNIT EVENTS_PER_TXN CMP BAR DESCRIPTION [FIGURE]
#   UNIT: what measure_<id> prints (tps, s, ...); EVENTS_PER_TXN: > 0 adds events/s columns (tps x it);
#   the ratio is always store / base, and PASS means `ratio CMP BAR` (CMP is >= or <=).
#   FIGURE (a function): an absolute bar: only `measure_<id> store` runs, the table's figure is what
#   FIGURE prints (e.g. a percentile over every sample of every repetition), PASS means
#   `figure CMP BAR`. An ID <id>:<suffix> is another row of workload <id>'s measurement (no run of
#   its own; selected with --only <id>).
declare -a WORKLOADS=()
declare -A W_UNIT W_EPT W_CMP W_BAR W_DESC W_FIG RUNS
register() {
  local id=$1
  # ids compared in capitals both sides: `--only W4n,W15l` (or w4N) selects W4n and W15l
  local base=${id%%:*}
  if [ -n "$ONLY" ] && [[ ",${ONLY^^}," != *",${base^^},"* ]]; then return 0; fi
  WORKLOADS+=("$id"); W_UNIT[$id]=$2; W_EPT[$id]=$3; W_CMP[$id]=$4; W_BAR[$id]=$5; W_DESC[$id]=$6
  W_FIG[$id]=${7:-}
}

# note TEXT: a line printed under the table (measure_* runs in a $(...) subshell, hence a file)
note() { echo "$*" >>"$OUT/notes.txt"; }
rm -f "$OUT/notes.txt"

W1_STREAMS=100000
W1_EVENT='{"type":"ItemAdded","sku":"A-1","qty":1}'

# W1: one-event append (expected_version NULL) to a random one of 100k existing streams.
W1_SETUP_DONE=
setup_w1() {
  # once per run, whichever workload needs the W1 streams first (W6-W10 use them too)
  [ -z "$W1_SETUP_DONE" ] || return 0
  W1_SETUP_DONE=1
  # pre-create the 100k streams (one event each) in both stores, so W1 appends to existing streams;
  # the store side in batches of 10k calls, like many clients would, not one giant transaction
  local from
  for ((from = 1; from <= W1_STREAMS; from += 10000)); do
    val "SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
                 ARRAY['$W1_EVENT']::jsonb[]))
         FROM generate_series($from, least($from + 9999, $W1_STREAMS)) AS n" >/dev/null
  done
  val "INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at)
       SELECT lpad(to_hex(n::bigint), 32, '0')::uuid, 1, gen_random_uuid(), 'ItemAdded', '$W1_EVENT', now(), now()
       FROM generate_series(1, $W1_STREAMS) AS n" >/dev/null
}
measure_w1() {
  case $1 in
    base) pgbench_tps w1_raw "$BENCH/w1_raw.sql" ;;
    store) pgbench_tps w1_append "$BENCH/w1_append.sql" 1 ;;
  esac
}

# copy_of_streams TABLE: TABLE, a copy of es.streams with its storage parameters and rows
# (benches/copy_of_streams.sql)
copy_of_streams() { sql -v tbl="$1" -f "$BENCH/copy_of_streams.sql" >/dev/null; }

# W1h: W1's append against the hand-written append that also keeps a stream head, as the store
# keeps es.streams.version current (docs/reference.md §1): one statement that updates the
# stream's row in bench.raw_streams (a copy of es.streams made after W1's setup, with its
# storage parameters) and inserts the event at the version that returns. No expected-version
# check, no event-id check, no gap-safe position: still less than the store does. W1's raw
# INSERT keeps no head at all; W1h is the like-for-like append.
setup_w1h() {
  setup_w1
  copy_of_streams bench.raw_streams
  cat >"$OUT/w1h_raw.sql" <<SQL
-- W1h (raw): W1's INSERT at the version a stream head in bench.raw_streams (a copy of es.streams) gives, the head updated in the same statement. Generated by benches/run.sh.
\set n random(1, $W1_STREAMS)
WITH head AS (UPDATE bench.raw_streams SET version = version + 1, updated_at = now()
               WHERE stream_id = lpad(to_hex(:n::bigint), 32, '0')::uuid RETURNING stream_id, version)
INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at)
SELECT stream_id, version, gen_random_uuid(), 'ItemAdded', '$W1_EVENT', now(), now() FROM head;
SQL
}
measure_w1h() {
  case $1 in
    base) pgbench_tps w1h_raw "$OUT/w1h_raw.sql" ;;
    store) pgbench_tps w1_append "$BENCH/w1_append.sql" 1 ;;
  esac
}

# W2: 100-event append to a new stream (expected_version 0). Both scripts are generated from one list
# of 100 JSON objects, so the event text is the same on both sides.
W2_EVENTS=100
setup_w2() {
  local i ev arr= vals= sep=
  for ((i = 1; i <= W2_EVENTS; i++)); do
    ev="{\"type\":\"ItemAdded\",\"sku\":\"A-$i\",\"qty\":$i,\"price_cents\":$((i * 125))}"
    arr+="$sep"$'\n'"  '$ev'"
    vals+="$sep"$'\n'"  ($i, 'ItemAdded', '$ev'::jsonb)"
    sep=,
  done
  cat >"$OUT/w2_append.sql" <<SQL
-- W2 (store): one es.append_events of $W2_EVENTS events to a new stream (gen_random_uuid(), expected_version 0). Generated by benches/run.sh.
SELECT es.append_events(gen_random_uuid(), 0, ARRAY[$arr
]::jsonb[]);
SQL
  cat >"$OUT/w2_raw.sql" <<SQL
-- W2 (raw baseline): one plain INSERT of $W2_EVENTS rows (the same events, versions 1..$W2_EVENTS, one new random stream id) into bench.raw_events. Generated by benches/run.sh.
WITH s AS MATERIALIZED (SELECT gen_random_uuid() AS id)
INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at)
SELECT s.id, e.version, gen_random_uuid(), e.event_type, e.data, now(), now()
FROM s, (VALUES$vals
) AS e(version, event_type, data);
SQL
}
measure_w2() {
  case $1 in
    base) pgbench_tps w2_raw "$OUT/w2_raw.sql" ;;
    store) pgbench_tps w2_append "$OUT/w2_append.sql" "$W2_EVENTS" ;;
  esac
}

# W6: W1 with tracing on (es.trace_sample_ratio 1.0, every span exported live to a local OTLP
# receiver) against W1 with es.tracing = off in the same run. The receiver answers without
# decoding (--discard): it stands in for a collector on another machine, so its CPU does not
# compete with the server's. After the runs, report_w6_memory exports one million spans (20k in
# --smoke) and prints the worker's resident memory before and after.
W6_RX_PID=
setup_w6() {
  [[ " ${WORKLOADS[*]} " == *" W1 "* ]] || setup_w1
  # an optimized receiver for the measurement (its CPU shares the machine); smoke mode only
  # proves the workload runs, so it takes the debug build the client tests already made
  local rxdir=$here/tests/client profile=release
  [ "$SMOKE" = 1 ] && profile=debug
  cargo build -q --manifest-path "$rxdir/Cargo.toml" --bin otlp_receiver \
    $([ "$profile" = release ] && echo --release) || die "cannot build the OTLP receiver"
  "$rxdir/target/$profile/otlp_receiver" --discard >"$OUT/w6-receiver.out" 2>&1 &
  W6_RX_PID=$!
  trap 'kill $W6_RX_PID 2>/dev/null; val "ALTER SYSTEM RESET es.otlp_endpoint" >/dev/null 2>&1; val "SELECT pg_reload_conf()" >/dev/null 2>&1; cluster stop || true' EXIT
  local i
  for ((i = 0; i < 50; i++)); do grep -q listening "$OUT/w6-receiver.out" 2>/dev/null && break; sleep 0.1; done
  W6_ENDPOINT="http://$(sed -n 's/^listening on //p' "$OUT/w6-receiver.out")/v1/traces"
  val "ALTER SYSTEM SET es.otlp_endpoint = '$W6_ENDPOINT'" >/dev/null
  val "SELECT pg_reload_conf()" >/dev/null
}
measure_w6() {
  case $1 in
    base) PGBENCH_OPTIONS='-c es.tracing=off' pgbench_tps w6_tracing_off "$BENCH/w1_append.sql" 1 ;;
    store) PGBENCH_OPTIONS='-c es.tracing=on -c es.trace_sample_ratio=1' pgbench_tps w6_tracing_on "$BENCH/w1_append.sql" 1 ;;
  esac
}
# report_w6_memory: VmRSS of the export worker before and after it exported N more spans; the
# spans are made in chunks of half the buffer, each only once less than half is waiting, so none
# is dropped (and the half-full wake-up keeps the worker busy).
report_w6_memory() {
  local n=1000000 pid rss0 rss1 hwm exp0 exp1 t0 t1
  [ "$SMOKE" = 1 ] && n=20000
  pid=$(val "SELECT worker_pid FROM es.tracing_stats()")
  [ -n "$pid" ] || { W6_MEMORY="worker not running"; return 0; }
  rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  exp0=$(val "SELECT spans_exported FROM es.tracing_stats()")
  t0=$(date +%s.%N)
  val "DO \$\$ DECLARE made bigint := 0; half int := (SELECT buffer_size / 2 FROM es.tracing_stats());
       BEGIN
         WHILE made < $n LOOP
           PERFORM count(es.stream_version(gen_random_uuid())) FROM generate_series(1, least(half, $n - made));
           made := made + least(half, $n - made);
           WHILE (SELECT spans_queued FROM es.tracing_stats()) >= half LOOP PERFORM pg_sleep(0.001); END LOOP;
         END LOOP;
       END \$\$" >/dev/null
  local i
  for ((i = 0; i < 600; i++)); do
    exp1=$(val "SELECT spans_exported FROM es.tracing_stats()")
    [ $((exp1 - exp0)) -ge "$n" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  rss1=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
  W6_MEMORY="export worker (pid $pid) VmRSS $rss0 kB before, $rss1 kB after exporting $((exp1 - exp0)) spans (peak VmHWM $hwm kB) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; spans_dropped (buffer full) so far: $(val "SELECT spans_dropped FROM es.tracing_stats()")"
}

# pgbench_rate NAME SCRIPT: like pgbench_tps, with one client (one fold at a time, as a psql user
# would run it); prints transactions per second.
pgbench_rate() {
  local saved_c=$CLIENTS saved_j=$THREADS rate
  CLIENTS=1 THREADS=1
  rate=$(pgbench_tps "$@")
  CLIENTS=$saved_c THREADS=$saved_j
  echo "$rate"
}

# append_account ID EVENTS INTERVAL: an account stream of EVENTS events (Opened, then deposits of
# 2 cents and withdrawals of 1 cent alternating), appended through es.append_events in batches of
# 10k (so the account rules check every event) with es.snapshot_interval = INTERVAL.
append_account() {
  local id=$1 events=$2 interval=$3 from=2 to
  val "SELECT es.append_events('$id', 0, ARRAY['{\"type\":\"Opened\",\"account_holder\":\"Bench\",\"initial_balance_cents\":0}']::jsonb[])" >/dev/null
  while [ "$from" -le "$events" ]; do
    to=$((from + 9999 < events ? from + 9999 : events))
    val "SET es.snapshot_interval = $interval;
         SELECT es.append_events('$id', NULL, array_agg(CASE WHEN g % 2 = 0
           THEN '{\"type\":\"Deposited\",\"amount_cents\":2,\"description\":\"in\"}'::jsonb
           ELSE '{\"type\":\"Withdrawn\",\"amount_cents\":1,\"description\":\"out\"}'::jsonb END ORDER BY g))
         FROM generate_series($from, $to) g" >/dev/null
    from=$((to + 1))
  done
}

# W3: es.deposit (rules, snapshot + tail, append, automatic snapshot) on a random one of 10k accounts.
W3_ACCOUNTS=10000
setup_w3() {
  val "SELECT count(es.append_events(('e3' || lpad(to_hex(n), 30, '0'))::uuid, 0, ARRAY[
         '{\"type\":\"Opened\",\"account_holder\":\"Bench\",\"initial_balance_cents\":0}']::jsonb[]))
       FROM generate_series(1, $W3_ACCOUNTS) n" >/dev/null
  cat >"$OUT/w3_deposit.sql" <<SQL
-- W3 (store): es.deposit of 100 cents to a random one of $W3_ACCOUNTS accounts. Generated by benches/run.sh.
\set n random(1, $W3_ACCOUNTS)
SELECT es.deposit(('e3' || lpad(to_hex(:n::bigint), 30, '0'))::uuid, 100, 'bench');
SQL
  cat >"$OUT/w3_raw.sql" <<SQL
-- W3 (raw baseline): one single-row INSERT of the same Deposited event for a random one of the same accounts, client-made version, no checks. Generated by benches/run.sh.
\set n random(1, $W3_ACCOUNTS)
\set v random(2, 4611686018427387903)
INSERT INTO bench.raw_events (stream_id, version, event_id, event_type, data, occurred_at, recorded_at)
VALUES (('e3' || lpad(to_hex(:n::bigint), 30, '0'))::uuid, :v, gen_random_uuid(), 'Deposited',
        '{"type":"Deposited","amount_cents":100,"description":"bench"}', now(), now());
SQL
}
measure_w3() {
  case $1 in
    base) pgbench_tps w3_raw "$OUT/w3_raw.sql" ;;
    store) pgbench_tps w3_deposit "$OUT/w3_deposit.sql" 1 ;;
  esac
}

# W4 and W4n: full replays of one account of W4_EVENTS events (Opened, then +2/-1 alternating),
# no snapshots, each against the pure-SQL fold (one scan summing the signed amounts, the cheapest
# SQL that gets the balance) over the same rows. Unit: seconds per fold (1 / one client's rate).
#   W4  (docs/reference.md §8, as an auditor writes it in psql): the SQL aggregate
#       `SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1`
#       over all W4_EVENTS events, against the SQL fold over all of them.
#   W4n (the native fold): es.account_state at the version before the last (the current state is
#       kept in the stream row, so asking for it would replay nothing), against the SQL fold over
#       the same W4_EVENTS - 1 events.
W4_EVENTS=1000000
if [ "$SMOKE" = 1 ]; then W4_EVENTS=100000; fi
W4_ID=e4000000-0000-0000-0000-000000000001
W4_FOLD="sum(CASE data->>'type'
                       WHEN 'Opened' THEN (data->>'initial_balance_cents')::bigint
                       WHEN 'Deposited' THEN (data->>'amount_cents')::bigint
                       WHEN 'Withdrawn' THEN -(data->>'amount_cents')::bigint
                       ELSE 0 END)"
W4_SETUP_DONE=
setup_w4_account() {
  [ -z "$W4_SETUP_DONE" ] || return 0
  W4_SETUP_DONE=1
  append_account "$W4_ID" "$W4_EVENTS" 10000
  # the snapshots of the setup are dropped: W4 and W4n measure a full replay
  val "DELETE FROM es.snapshots WHERE stream_id = '$W4_ID'" >/dev/null
}
setup_w4() {
  setup_w4_account
  cat >"$OUT/w4_replay.sql" <<SQL
-- W4 (store): the SQL aggregate es.account_replay over the $W4_EVENTS events of one account, ordered by version (docs/reference.md §8). Generated by benches/run.sh.
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '$W4_ID';
SQL
  cat >"$OUT/w4_sql_fold.sql" <<SQL
-- W4 (baseline): the pure-SQL fold over the same $W4_EVENTS events. Generated by benches/run.sh.
SELECT count(*), $W4_FOLD
FROM es.events WHERE stream_id = '$W4_ID';
SQL
  # the two must agree before they are timed
  local a b
  a=$(val "SELECT es.account_replay(data ORDER BY version) ->> 'balance_cents' FROM es.events WHERE stream_id = '$W4_ID'")
  b=$(val "SELECT $W4_FOLD FROM es.events WHERE stream_id = '$W4_ID'")
  [ -n "$a" ] && [ "$a" = "$b" ] || die "W4: es.account_replay says $a cents, the SQL fold $b"
}
measure_w4() {
  case $1 in
    base) pgbench_rate w4_sql_fold "$OUT/w4_sql_fold.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
    store) pgbench_rate w4_replay "$OUT/w4_replay.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
  esac
}
setup_w4n() {
  setup_w4_account
  cat >"$OUT/w4n_state.sql" <<SQL
-- W4n (store): es.account_state of a $W4_EVENTS-event account without snapshots, at version $((W4_EVENTS - 1)) (a full replay). Generated by benches/run.sh.
SELECT es.account_state('$W4_ID', at_version => $((W4_EVENTS - 1)));
SQL
  cat >"$OUT/w4n_sql_fold.sql" <<SQL
-- W4n (baseline): the pure-SQL fold over the same $((W4_EVENTS - 1)) events. Generated by benches/run.sh.
SELECT count(*), $W4_FOLD
FROM es.events WHERE stream_id = '$W4_ID' AND version <= $((W4_EVENTS - 1));
SQL
  local a b
  a=$(val "SELECT es.account_state('$W4_ID', at_version => $((W4_EVENTS - 1)))->>'balance_cents'")
  b=$(val "SELECT $W4_FOLD FROM es.events WHERE stream_id = '$W4_ID' AND version <= $((W4_EVENTS - 1))")
  [ -n "$a" ] && [ "$a" = "$b" ] || die "W4n: es.account_state says $a cents, the SQL fold $b"
}
measure_w4n() {
  case $1 in
    base) pgbench_rate w4n_sql_fold "$OUT/w4n_sql_fold.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
    store) pgbench_rate w4n_state "$OUT/w4n_state.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
  esac
}

# W5: the current state of a W5_EVENTS-event account with automatic snapshots on (interval 100):
# es.account_state at the version before the last (newest snapshot + a tail of 49; the current
# state would come from the stream row) against a full replay with the aggregate.
# Unit: states per second (one client); the ratio is how many times faster the snapshot path is.
W5_EVENTS=100050
if [ "$SMOKE" = 1 ]; then W5_EVENTS=20050; fi
W5_ID=e5000000-0000-0000-0000-000000000001
setup_w5() {
  append_account "$W5_ID" "$W5_EVENTS" 100
  cat >"$OUT/w5_state.sql" <<SQL
-- W5 (store): es.account_state of a $W5_EVENTS-event account with snapshots every 100 events, at version $((W5_EVENTS - 1)). Generated by benches/run.sh.
SELECT es.account_state('$W5_ID', at_version => $((W5_EVENTS - 1)));
SQL
  cat >"$OUT/w5_full_replay.sql" <<SQL
-- W5 (baseline): a full replay of the same account to the same version with the aggregate. Generated by benches/run.sh.
SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '$W5_ID' AND version <= $((W5_EVENTS - 1));
SQL
  local a b
  a=$(val "SELECT es.account_state('$W5_ID', at_version => $((W5_EVENTS - 1)))")
  b=$(val "SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '$W5_ID' AND version <= $((W5_EVENTS - 1))")
  [ "$a" = "$b" ] || die "W5: es.account_state says $a, the full replay $b"
}
measure_w5() {
  case $1 in
    base) pgbench_rate w5_full_replay "$OUT/w5_full_replay.sql" ;;
    store) pgbench_rate w5_state "$OUT/w5_state.sql" ;;
  esac
}

# bulk_load DB PREFIX STREAMS: appends STREAMS streams of 100 events each (ids PREFIX || n in hex,
# 32 hex digits in all, n = 1..STREAMS) to DB's store through es.append_events, 1,000 streams
# (100k events) per statement, each statement its own transaction, with BULK_LOADERS sessions at
# once (default 2, one per core of the reference machine), each taking every BULK_LOADERS-th batch.
# The store's own append path, so every event gets what any append gives it (the checks, a drawn
# global position, es.streams rows); W7's and W17's stores are made with it.
BULK_LOADERS=${ES_BENCH_BULK_LOADERS:-2}
bulk_load() {
  local db=$1 prefix=$2 streams=$3 batch=1000 w pids=() from
  for ((w = 0; w < BULK_LOADERS; w++)); do
    (
      for ((from = 1 + w * batch; from <= streams; from += BULK_LOADERS * batch)); do
        echo "SELECT count(es.append_events(('$prefix' || lpad(to_hex(n), $((32 - ${#prefix})), '0'))::uuid, 0,
                 (SELECT array_agg(jsonb_build_object('type', 'ItemAdded', 'sku', 'B-' || g, 'qty', g)) FROM generate_series(1, 100) g)))
               FROM generate_series($from, least($from + $batch - 1, $streams)) AS n;"
      done | PGOPTIONS="-c synchronous_commit=off -c es.tracing=off" psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null
    ) &
    pids+=($!)
  done
  for w in "${pids[@]}"; do wait "$w" || die "bulk_load: a loader of $db failed"; done
}

# W7: W1 on a store that already holds W7_EVENTS events (a second database, es_bench_w7: the same
# 100k W1 streams plus the bulk in other streams, appended through es.append_events in batches of
# 100 events and vacuumed) against W1 on the W1 database (100k events) in the same run: what a
# big, old log costs an append (deeper B-trees, a larger working set of index pages).
# ES_BENCH_W7_EVENTS (environment) overrides the size, e.g. where the disk cannot hold 10M events
# twice (W7:archived copies the store)
W7_EVENTS=${ES_BENCH_W7_EVENTS:-10000000}
if [ "$SMOKE" = 1 ]; then W7_EVENTS=200000; fi
W7_DB=${DB}_w7
setup_w7() {
  [[ " ${WORKLOADS[*]} " == *" W1 "* || " ${WORKLOADS[*]} " == *" W6 "* ]] || setup_w1
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $W7_DB WITH (FORCE)" -c "CREATE DATABASE $W7_DB"
  local d7=(psql -X -qAt -v ON_ERROR_STOP=1 -d "$W7_DB") from bulk=$((W7_EVENTS - W1_STREAMS))
  "${d7[@]}" -c "CREATE EXTENSION event_store" >/dev/null
  for ((from = 1; from <= W1_STREAMS; from += 10000)); do
    "${d7[@]}" -c "SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
                     ARRAY['$W1_EVENT']::jsonb[]))
                   FROM generate_series($from, least($from + 9999, $W1_STREAMS)) AS n" >/dev/null
  done
  # the bulk: streams of 100 events, 1,000 streams (100k events) per statement
  bulk_load "$W7_DB" e7 $((bulk / 100))
  "${d7[@]}" -c "VACUUM ANALYZE" >/dev/null
  W7_SETUP_EVENTS=$("${d7[@]}" -c "SELECT count(*) FROM es.events")
  rm -f "$OUT/w7-events.count"
  [[ " ${WORKLOADS[*]} " != *" W7:archived "* ]] || setup_w7_archived
}
measure_w7() {
  local tps
  case $1 in
    base)
      tps=$(pgbench_tps w7_small "$BENCH/w1_append.sql" 1)
      [[ " ${WORKLOADS[*]} " != *" W7:archived "* ]] || echo "$tps" >>"$OUT/w7-base.tps"
      echo "$tps" ;;
    store)
      tps=$(PGB_DB=$W7_DB PGB_COUNT=w7-events pgbench_tps w7_big "$BENCH/w1_append.sql" 1)
      if [[ " ${WORKLOADS[*]} " == *" W7:archived "* ]]; then
        PGB_DB=$W7A_DB PGB_COUNT=w7a-events pgbench_tps w7_archived "$BENCH/w1_append.sql" 1 >>"$OUT/w7a.tps"
      fi
      echo "$tps" ;;
  esac
}
# check_w7: the big store holds what its setup and its runs appended, versions gapless.
check_w7() {
  local want got bad d7=(psql -X -qAt -v ON_ERROR_STOP=1 -d "$W7_DB")
  want=$(( W7_SETUP_EVENTS + $({ cat "$OUT/w7-events.count" 2>/dev/null || true; } | paste -sd+ | sed 's/^$/0/') ))
  got=$("${d7[@]}" -c "SELECT count(*) FROM es.events")
  [ "$got" = "$want" ] || die "W7 store check: $W7_DB holds $got events, its setup and runs appended $want"
  bad=$("${d7[@]}" -c "SELECT count(*) FROM es.streams s JOIN (SELECT stream_id, count(*) n, max(version) hi FROM es.events GROUP BY 1) e
                      USING (stream_id) WHERE e.n <> e.hi OR s.version <> e.hi")
  [ "$bad" = 0 ] || die "W7 store check: $bad streams of $W7_DB with gaps or a disagreeing es.streams row"
  STORE_CHECK+="; W7's store: $got events, versions gapless"
}

# --- W8-W10: subscriptions (docs/reference.md §9) and projections (§10) -----------------------------------------
# The consumers are benches/consumer (es_consumer): one transaction per batch, `SELECT * FROM
# es.poll(sub, 0, 500)` (every column of every event reaches the client), es.ack of the last
# position, COMMIT; its sessions run with synchronous_commit=off and es.tracing=off like pgbench's.
CONSUMER_TARGET=$here/target/bench-consumer
CONSUMER=$CONSUMER_TARGET/release/es_consumer
CONSUMER_BUILT=
build_consumer() {
  [ -z "$CONSUMER_BUILT" ] || return 0
  echo "bench: building benches/consumer (release)"
  cargo build -q --release --manifest-path "$BENCH/consumer/Cargo.toml" --target-dir "$CONSUMER_TARGET" ||
    die "cannot build benches/consumer"
  CONSUMER_BUILT=1
}
# drop_subscription NAME: drops it when it exists
drop_subscription() {
  val "SELECT es.drop_subscription(name) FROM es.subscription_config WHERE name = '$1'" >/dev/null
}

# W8: one consumer drains a subscription from position 0 (the W1 streams, then a backlog of
# W8_BACKLOG events in streams of 100, appended 1,000 streams per statement) for SECS seconds or
# until it reaches the end of the log, 500 events per transaction, against the
# append rate of W1 (8 writers, one-event es.append_events) in the same repetition: the ratio is
# consumer events/s / W1 events/s (docs/reference.md §8: >= 3, a consumer keeps up with the writers). Every
# repetition drains the same first events with a new subscription; the consumer's checkpoint is
# checked against the number of events it got.
W8_BATCH=500
W8_BACKLOG=3000000
if [ "$SMOKE" = 1 ]; then W8_BACKLOG=200000; fi
setup_w8() {
  setup_w1
  build_consumer
  local from batch=1000
  for ((from = 1; from <= W8_BACKLOG / 100; from += batch)); do
    val "SELECT count(es.append_events(('e8' || lpad(to_hex(n), 30, '0'))::uuid, 0,
           (SELECT array_agg(jsonb_build_object('type', 'ItemAdded', 'sku', 'B-' || g, 'qty', g)) FROM generate_series(1, 100) g)))
         FROM generate_series($from, least($from + $batch - 1, $W8_BACKLOG / 100)) AS n" >/dev/null
  done
}
measure_w8() {
  case $1 in
    base) pgbench_tps w8_w1 "$BENCH/w1_append.sql" 1 ;;
    store)
      local out rate n secs caught cp got
      drop_subscription w8
      val "SELECT es.create_subscription('w8', start_after => 0)" >/dev/null
      out=$("$CONSUMER" drain --db "$DB" --sub w8 --batch "$W8_BATCH" --secs "$SECS") || die "W8: the consumer failed"
      read -r rate n secs caught _ <<<"$out"
      cp=$(val "SELECT checkpoint FROM es.subscription_partitions WHERE subscription = 'w8' AND partition = 0")
      got=$(val "SELECT count(*) FROM es.events WHERE global_position <= $cp")
      [ "$got" = "$n" ] || die "W8: the consumer got $n events, its checkpoint $cp covers $got"
      drop_subscription w8
      [ "$caught" = 0 ] || note "W8 rep $REP: the consumer drained the whole log ($n events) in $secs s, before the $SECS s were up: its figure is over $secs s"
      echo "$rate"
      ;;
  esac
}

# W9: W1 (8 pgbench clients) while a subscription consumer (es_consumer follow: poll + ack of 500,
# es.wait(sub, 0, 1000) when caught up) and the two account projections (es.enable_account_projections,
# run by the extension's background worker) follow the log, against W1 alone in the same
# repetition (docs/reference.md §8: >= 0.85). The base side runs with the projections paused and no consumer.
# Before the store side the projections are resumed and caught up, and the subscription is
# created afresh at the head (start_after => NULL); right after it, the lag of each (events and
# seconds behind, the distance of its checkpoint to the log's head) and the time to catch up are
# noted. W1's events are not account events: the projections skip them (their handlers run for
# Opened/Deposited/Withdrawn/Frozen/Closed only) but their worker still follows the log.
# W9_FOLLOWERS=consumer or =projections runs one kind of follower only, to tell their costs apart.
W9_PROJECTIONS="account_balances account_transactions"
# W9_FOLLOWERS (environment): which followers run in the store side, to tell their costs apart
# (e.g. W9_FOLLOWERS=consumer); the bar is for both
W9_FOLLOWERS=${W9_FOLLOWERS:-consumer projections}
# W9_LINGER_MS (environment, default 20): after a batch that was not full the consumer waits this
# long before its next poll (like a Kafka consumer's fetch.max.wait, and the projection worker's
# 20 ms between rounds): it keeps up with fewer, larger batches. 0 polls again at once.
W9_LINGER_MS=${W9_LINGER_MS:-20}
setup_w9() {
  setup_w1
  build_consumer
  local p
  val "SELECT es.enable_account_projections()" >/dev/null
  # W9 measures following the log, not a rebuild: the projections start at the head of the log
  # as the setups left it (es.ack of their subscriptions), so the account events of the W3-W5
  # setups (a million in a full run) are not projected
  for p in $W9_PROJECTIONS; do
    val "SELECT es.pause_projection('$p')" >/dev/null
    val "SELECT es.ack('$p', 0, (SELECT coalesce(max(global_position), 0) FROM es.events))" >/dev/null
  done
}
measure_w9() {
  case $1 in
    base) pgbench_tps w9_alone "$BENCH/w1_append.sql" 1 ;;
    store) w9_with_followers ;;
  esac
}
# w9_distance: each follower's checkpoint distance to the log's head (cheap: taken right when the
# load stops). w9_lag: what es.subscriptions / es.projections say (events and seconds behind).
w9_distance() {
  val "SELECT string_agg(format('%s %s', subscription, h.head - checkpoint), ', ' ORDER BY subscription)
       FROM es.subscription_partitions, (SELECT coalesce(max(global_position), 0) AS head FROM es.events) h
       WHERE subscription IN ('w9', 'account_balances', 'account_transactions')"
}
w9_lag() {
  # the views' plans are costed high enough for JIT, which would take longer than the query
  # (~N: an estimate, past 10,000 events after the checkpoint)
  PGOPTIONS="-c jit=off" val "SELECT string_agg(format('%s %s%s events/%s s', name,
                                CASE WHEN events_behind_is_estimate THEN '~' ELSE '' END, events_behind,
                                round(seconds_behind::numeric, 3)), ', ' ORDER BY name)
       FROM (SELECT name, events_behind, events_behind_is_estimate, seconds_behind
               FROM es.subscriptions WHERE name = 'w9'
             UNION ALL SELECT name, events_behind, events_behind_is_estimate, seconds_behind
               FROM es.projections) f"
}
w9_with_followers() {
  local head p stop=$OUT/w9.stop pid= tps dist_end lag_end t0 t1 lag_after consumer=
  local events batches waits age_med age_max projections=
  [[ " $W9_FOLLOWERS " != *" projections "* ]] || projections=$W9_PROJECTIONS
  head=$(val "SELECT coalesce(max(global_position), 0) FROM es.events")
  # the workloads measured since the last repetition appended account events (W3's deposits: up
  # to a million in a full run); W9 measures following the log, not a catch-up over those, so
  # each repetition starts its projections at the head, as the setup did
  for p in $projections; do
    val "SELECT es.ack('$p', 0, $head)" >/dev/null
    val "SELECT es.resume_projection('$p')" >/dev/null
    [ "$(val "SELECT es.wait_for_projection('$p', $head, 300000)")" = t ] ||
      die "W9: projection $p did not catch up with position $head within 300 s"
  done
  drop_subscription w9
  val "SELECT es.create_subscription('w9', start_after => NULL)" >/dev/null
  if [[ " $W9_FOLLOWERS " == *" consumer "* ]]; then
    rm -f "$stop"
    "$CONSUMER" follow --db "$DB" --sub w9 --batch 500 --linger-ms "$W9_LINGER_MS" --stop-file "$stop" --max-secs $((SECS + 600)) \
      >"$OUT/w9-consumer.rep$REP.out" 2>&1 &
    pid=$!
    # this runs in a $(...) subshell: stop the consumer however it ends
    trap "touch '$stop'; kill $pid 2>/dev/null || true" EXIT
  fi
  tps=$(pgbench_tps w9_with_followers "$BENCH/w1_append.sql" 1)
  dist_end=$(w9_distance)
  head=$(val "SELECT coalesce(max(global_position), 0) FROM es.events")
  lag_end=$(w9_lag)
  # caught up: the consumer's checkpoint and both projections' reach the head of the load's end
  t0=$(date +%s.%N)
  for p in $projections; do
    [ "$(val "SELECT es.wait_for_projection('$p', $head, 300000)")" = t ] ||
      die "W9: projection $p did not catch up with position $head within 300 s"
  done
  if [ -n "$pid" ]; then
    local i
    for ((i = 0; i < 3000; i++)); do
      [ "$(val "SELECT checkpoint >= $head FROM es.subscription_partitions WHERE subscription = 'w9'")" = t ] && break
      sleep 0.1
    done
    [ "$i" -lt 3000 ] || die "W9: the consumer did not catch up with position $head within 300 s"
  fi
  t1=$(date +%s.%N)
  if [ -n "$pid" ]; then
    touch "$stop"
    wait "$pid" || die "W9: the consumer failed: $(cat "$OUT/w9-consumer.rep$REP.out")"
    trap - EXIT
    read -r events _ batches waits age_med age_max <"$OUT/w9-consumer.rep$REP.out"
    consumer=" Consumer: $events events in $batches batches, found the log empty $waits times, oldest event of a batch $age_med ms old (median), $age_max ms (max)."
  fi
  lag_after=$(w9_lag)
  for p in $projections; do val "SELECT es.pause_projection('$p')" >/dev/null; done
  drop_subscription w9
  note "W9 rep $REP (followers: $W9_FOLLOWERS): when W1 stopped, head - checkpoint: $dist_end; behind (views): $lag_end;" \
    "all at the head $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s later, then: $lag_after.$consumer"
  echo "$tps"
}

# W10: delivery latency under W1 load: while pgbench runs W1 (8 clients, SECS seconds), es_consumer
# latency runs a waiter (a waiting poll, es.poll('w10', 0, …, wait_ms => 1000), then ack; with
# ES_CONSUMER_WAITING_POLL=0 the older es.wait + BEGIN + poll) and a probe that appends one
# {"type":"Probe"} event to a stream of its own every 10-50 ms (random); the subscription w10
# takes event type Probe only, so the waiter sleeps through W1's events (a commit wakes it only
# when it appended a Probe, or ended below a Probe still unreadable). A sample: from the moment the probe sent its COMMIT to the moment the waiter's poll
# returned the event, on one monotonic clock (an upper bound: it includes the COMMIT's own round
# trip). The table's figures are the median and p99 over every sample of every repetition.
W10_SAMPLES=$OUT/w10-samples.txt
setup_w10() {
  setup_w1
  build_consumer
  rm -f "$W10_SAMPLES"
}
measure_w10() {
  local pid out secs median p99 n rtt max wake load
  drop_subscription w10
  val "SELECT es.create_subscription('w10', start_after => NULL, event_types => ARRAY['Probe'])" >/dev/null
  pgbench_tps w10_load "$BENCH/w1_append.sql" 1 >"$OUT/w10-load.tps" &
  pid=$!
  sleep 0.5                          # pgbench's CHECKPOINT and connections
  secs=$(awk -v s="$SECS" 'BEGIN { print (s > 2 ? s - 1.5 : s / 2) }')
  out=$("$CONSUMER" latency --db "$DB" --sub w10 --secs "$secs" --samples-out "$W10_SAMPLES") ||
    { kill "$pid" 2>/dev/null || true; die "W10: the latency probe failed"; }
  wait "$pid" || die "W10: the W1 load failed"
  load=$(awk '{ printf "%.0f", $1 }' "$OUT/w10-load.tps")
  read -r median p99 n rtt max wake <<<"$out"
  echo "$n" >>"$OUT/store-events.count"          # the probe's events, for the store check
  drop_subscription w10
  note "W10 rep $REP: $n samples, median $median ms, p99 $p99 ms, max $max ms (commit -> wake-up: median $wake ms, the sample itself with the waiting poll; COMMIT round trip median $rtt ms); W1 load $load tps"
  echo "$median"
}
# percentile_ms P: the P-th percentile (nearest rank) of every W10 sample so far
percentile_ms() {
  sort -g "$W10_SAMPLES" | awk -v p="$1" '{ a[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit } r = int(p / 100 * NR); if (r < p / 100 * NR) r++; if (r < 1) r = 1; print a[r] }'
}
figure_w10() { percentile_ms 50; }
figure_w10_p99() { percentile_ms 99; }

# --- W11: sharding by stream with PL/Proxy (docs/reference.md §11, docs/sharding.md) ------------
# One-event appends (W1's event, expected_version NULL) through a proxy database to W11_SHARDS
# partition databases, set up by scripts/shard.sh on this cluster, against the same appends sent
# by the clients straight to the partition that holds each stream (client-side routing), in the
# same repetition. Store side: one pgbench, CLIENTS clients, on the proxy, a random one of the
# W11_STREAMS streams. Base side: W11_SHARDS pgbench at once, CLIENTS / W11_SHARDS clients each,
# each on one partition and its own streams; the figure is their summed tps. Both sides pick the
# stream id from a table (bench_w11: n -> id; the proxy's lists every stream, each partition's
# its own), so both pay the same lookup. The partitions' connection strings carry the sessions'
# settings (synchronous_commit=off, es.tracing=off), so the proxy's sessions on them match
# pgbench's. Everything runs on this one machine: the ratio is what the hop costs in CPU here,
# not what N machines give (docs/benchmarks.md has the estimate). After the runs,
# report_w11_costs measures where the hop's cost goes (notes under the table). Bar (docs/reference.md
# §8): ≥ 0.5; on the 2-core reference machine the proxy's backends, 4 × CLIENTS partition backends
# and pgbench share the cores, and the runs in docs/benchmarks.md give 0.46-0.51.
W11_SHARDS=4
W11_STREAMS=100000
W11_COST_SECS=5
if [ "$SMOKE" = 1 ]; then W11_STREAMS=10000; W11_COST_SECS=1; fi
W11_PROXY=${DB}_proxy
W11_PARTS=()
for ((i = 0; i < W11_SHARDS; i++)); do W11_PARTS+=("${DB}_p$i"); done
w11_sql() { local db=$1; shift; psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" "$@"; }
setup_w11() {
  local i db n cs=() opts="options='-c synchronous_commit=off -c es.tracing=off'"
  for db in "$W11_PROXY" "${W11_PARTS[@]}"; do
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
      -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  done
  for ((i = 0; i < W11_SHARDS; i++)); do
    # the partition's streams: the W1 ids that hash to it, one event each, numbered 1..n
    w11_sql "${W11_PARTS[$i]}" -c "CREATE EXTENSION event_store" -c "SET es.tracing = off" \
      -c "CREATE TABLE bench_w11 (n int PRIMARY KEY, id uuid NOT NULL)" \
      -c "INSERT INTO bench_w11 SELECT row_number() OVER (ORDER BY g), id
          FROM (SELECT g, lpad(to_hex(g::bigint), 32, '0')::uuid AS id FROM generate_series(1, $W11_STREAMS) g) s
          WHERE es.stream_hash(id) & $((W11_SHARDS - 1)) = $i" \
      -c "SELECT count(es.append_events(id, 0, ARRAY['$W1_EVENT']::jsonb[])) FROM bench_w11" \
      -c "VACUUM ANALYZE" >/dev/null
    n=$(w11_sql "${W11_PARTS[$i]}" -c "SELECT count(*) FROM bench_w11")
    cat >"$OUT/w11_direct_p$i.sql" <<SQL
-- W11 (base): one-event es.append_events, NULL expected version, sent straight to partition $i, a random one of its $n streams. Generated by benches/run.sh.
\set n random(1, $n)
SELECT es.append_events((SELECT id FROM bench_w11 WHERE n = :n), NULL, ARRAY['$W1_EVENT']::jsonb[]);
SQL
    cs+=(--partition "host=$PGHOST port=$PGPORT dbname=${W11_PARTS[$i]} application_name=es_proxy $opts")
  done
  bash "$here/scripts/shard.sh" --proxy-db "dbname=$W11_PROXY" "${cs[@]}" >"$OUT/w11-shard.out" 2>&1 ||
    die "W11: scripts/shard.sh failed: $(cat "$OUT/w11-shard.out")"
  w11_sql "$W11_PROXY" -c "CREATE TABLE bench_w11 (n int PRIMARY KEY, id uuid NOT NULL)" \
    -c "INSERT INTO bench_w11 SELECT g, lpad(to_hex(g::bigint), 32, '0')::uuid FROM generate_series(1, $W11_STREAMS) g" \
    -c "VACUUM ANALYZE bench_w11" >/dev/null
  cat >"$OUT/w11_proxy.sql" <<SQL
-- W11 (store): the same append through the PL/Proxy proxy database ($W11_SHARDS partitions), a random one of all $W11_STREAMS streams. Generated by benches/run.sh.
\set n random(1, $W11_STREAMS)
SELECT es.append_events((SELECT id FROM bench_w11 WHERE n = :n), NULL, ARRAY['$W1_EVENT']::jsonb[]);
SQL
  rm -f "$OUT/w11-events.count"
}
# w11_direct: the base side, W11_SHARDS pgbench at once; prints the sum of their tps
w11_direct() {
  local i pids=() per=$((CLIENTS / W11_SHARDS))
  for ((i = 0; i < W11_SHARDS; i++)); do
    (CLIENTS=$per THREADS=1 PGB_DB=${W11_PARTS[$i]} PGB_COUNT=w11-events \
      pgbench_tps "w11_direct_p$i" "$OUT/w11_direct_p$i.sql" 1 >"$OUT/w11-direct-p$i.tps") &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || die "W11: a direct pgbench failed"; done
  cat "$OUT"/w11-direct-p*.tps | awk '{ t += $1 } END { printf "%.6f\n", t }'
}
measure_w11() {
  case $1 in
    base) w11_direct ;;
    store) PGB_DB=$W11_PROXY PGB_COUNT=w11-events pgbench_tps w11_proxy "$OUT/w11_proxy.sql" 1 ;;
  esac
}
# w11_pgbench NAME DB SCRIPT MODE CLIENTS EVENTS: a W11_COST_SECS pgbench run (protocol MODE);
# prints its tps; EVENTS appended per transaction are added to the W11 count
w11_pgbench() {
  local log=$OUT/logs/$1.log rc=0 tps failed done
  PGOPTIONS="-c synchronous_commit=off -c es.tracing=off" "$BIN/pgbench" -n -M "$4" -c "$5" \
    -j "$(( $5 < THREADS ? $5 : THREADS ))" -T "$W11_COST_SECS" -f "$3" "$2" >"$log" 2>&1 || rc=$?
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")
  [ "$rc" = 0 ] && [ "${failed:-0}" = 0 ] && [ -n "$tps" ] && ! grep -qiE 'aborted|incomplete' "$log" ||
    die "W11: pgbench $1 failed (exit $rc): $(grep -v '^progress' "$log" | tail -15)"
  done=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  [ "$6" = 0 ] || echo $((${done:-0} * $6)) >>"$OUT/w11-events.count"
  echo "$tps"
}
# w11_ticks PID...: their CPU time so far (utime + stime, clock ticks; one read of every
# /proc/PID/stat, so sampling stays quick on a busy machine)
w11_ticks() {
  [ $# -gt 0 ] || { echo 0; return 0; }
  (cd /proc && cat "${@/%//stat}" 2>/dev/null || true) | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
w11_machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# w11_cpu proxy|direct: under a CLIENTS-client load, CPU microseconds per append of the proxy's
# backends, the partitions' backends (those serving the proxy, or pgbench directly) and pgbench,
# and of the whole machine, sampled from /proc over W11_COST_SECS seconds in the middle of the
# run; the appends in the window are pgbench's rate (tps) times the window. Prints
# "proxy partitions pgbench machine appends/s".
w11_cpu() {
  local side=$1 i bg=() front=() back=() f0 b0 p0 f1 b1 p1 m0 m1 t0 t1 tps parts secs=$W11_COST_SECS
  parts=$(printf "'%s'," "${W11_PARTS[@]}"); parts=${parts%,}
  if [ "$side" = proxy ]; then
    PGOPTIONS="-c synchronous_commit=off -c es.tracing=off" \
      "$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$THREADS" -T $((secs + 4)) -f "$OUT/w11_proxy.sql" "$W11_PROXY" \
      >"$OUT/logs/w11_cpu_proxy.log" 2>&1 &
    bg+=($!)
  else
    for ((i = 0; i < W11_SHARDS; i++)); do
      PGOPTIONS="-c synchronous_commit=off -c es.tracing=off" \
        "$BIN/pgbench" -n -M prepared -c $((CLIENTS / W11_SHARDS)) -j 1 -T $((secs + 4)) -f "$OUT/w11_direct_p$i.sql" \
        "${W11_PARTS[$i]}" >"$OUT/logs/w11_cpu_direct_p$i.log" 2>&1 &
      bg+=($!)
    done
  fi
  sleep 1.5
  # the proxy's backends serving pgbench, and the partitions' backends doing the appends
  if [ "$side" = proxy ]; then
    mapfile -t front < <(val "SELECT pid FROM pg_stat_activity WHERE datname = '$W11_PROXY' AND application_name = 'pgbench'")
    mapfile -t back < <(val "SELECT pid FROM pg_stat_activity WHERE datname IN ($parts) AND application_name = 'es_proxy' AND state <> 'idle'
                             UNION SELECT pid FROM pg_stat_activity WHERE datname IN ($parts) AND application_name = 'es_proxy'
                               AND backend_start > now() - interval '3 seconds'")
  else
    mapfile -t back < <(val "SELECT pid FROM pg_stat_activity WHERE datname IN ($parts) AND application_name = 'pgbench'")
  fi
  t0=$(date +%s.%N); m0=$(w11_machine_ticks)
  f0=$(w11_ticks "${front[@]}"); b0=$(w11_ticks "${back[@]}"); p0=$(w11_ticks "${bg[@]}")
  sleep "$secs"
  t1=$(date +%s.%N); m1=$(w11_machine_ticks)
  f1=$(w11_ticks "${front[@]}"); b1=$(w11_ticks "${back[@]}"); p1=$(w11_ticks "${bg[@]}")
  [ "$(cd /proc && ls -d "${bg[@]}" 2>/dev/null | wc -l || true)" = "${#bg[@]}" ] ||
    die "W11: the CPU-sampling pgbench ($side) ended before the sample did"
  for i in "${bg[@]}"; do wait "$i" || die "W11: the CPU-sampling pgbench ($side) failed: $(tail -3 "$OUT"/logs/w11_cpu_"$side"*.log)"; done
  # every append of these runs is counted for the check: the processed transactions
  tps=0
  for i in "$OUT"/logs/w11_cpu_"$side"*.log; do
    sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$i" >>"$OUT/w11-events.count"
    tps=$(awk -v a="$tps" -v b="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$i")" 'BEGIN { print a + b }')
  done
  awk -v f0="$f0" -v b0="$b0" -v p0="$p0" -v f1="$f1" -v b1="$b1" -v p1="$p1" -v m0="$m0" -v m1="$m1" \
      -v t0="$t0" -v t1="$t1" -v tps="$tps" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    u = 1e6 / hz / (tps * (t1 - t0))
    printf "%.0f %.0f %.0f %.0f %.0f\n", (f1 - f0) * u, (b1 - b0) * u, (p1 - p0) * u, (m1 - m0) * u, tps }'
}
report_w11_costs() {
  local d_app d_stmt d_unnamed p_app d_read p_read d_one out
  local -a cp cd
  cat >"$OUT/w11_read_p0.sql" <<SQL
-- W11 costs: es.stream_version of a random stream of partition 0, straight to it. Generated by benches/run.sh.
\set n random(1, $(w11_sql "${W11_PARTS[0]}" -c "SELECT count(*) FROM bench_w11"))
SELECT es.stream_version((SELECT id FROM bench_w11 WHERE n = :n));
SQL
  cat >"$OUT/w11_read_proxy.sql" <<SQL
-- W11 costs: es.stream_version of a random stream, through the proxy. Generated by benches/run.sh.
\set n random(1, $W11_STREAMS)
SELECT es.stream_version((SELECT id FROM bench_w11 WHERE n = :n));
SQL
  printf '%s\n' '-- W11 costs: the bare client round trip. Generated by benches/run.sh.' 'SELECT 1;' >"$OUT/w11_select1.sql"
  cat >"$OUT/w11_plproxy_stmt.sql" <<SQL
-- W11 costs: the statement PL/Proxy sends a partition for es.append_events (one stream of partition 0). Generated by benches/run.sh.
select es.append_events('$(w11_sql "${W11_PARTS[0]}" -c "SELECT id FROM bench_w11 WHERE n = 1")'::uuid, NULL::int8, '{"$(sed 's/"/\\"/g' <<<"$W1_EVENT")"}'::_jsonb, NULL::text);
SQL
  # one client: the latency of one call, in microseconds (1e6 / tps)
  d_app=$(w11_pgbench w11_lat_direct "${W11_PARTS[0]}" "$OUT/w11_direct_p0.sql" prepared 1 1)
  d_stmt=$(w11_pgbench w11_lat_stmt_prepared "${W11_PARTS[0]}" "$OUT/w11_plproxy_stmt.sql" prepared 1 1)
  d_unnamed=$(w11_pgbench w11_lat_stmt_unnamed "${W11_PARTS[0]}" "$OUT/w11_plproxy_stmt.sql" extended 1 1)
  p_app=$(w11_pgbench w11_lat_proxy "$W11_PROXY" "$OUT/w11_proxy.sql" prepared 1 1)
  d_read=$(w11_pgbench w11_lat_read_direct "${W11_PARTS[0]}" "$OUT/w11_read_p0.sql" prepared 1 0)
  p_read=$(w11_pgbench w11_lat_read_proxy "$W11_PROXY" "$OUT/w11_read_proxy.sql" prepared 1 0)
  d_one=$(w11_pgbench w11_lat_select1 "${W11_PARTS[0]}" "$OUT/w11_select1.sql" prepared 1 0)
  note "$(awk -v a="$d_app" -v t="$d_stmt" -v u="$d_unnamed" -v p="$p_app" -v r="$d_read" -v q="$p_read" -v o="$d_one" 'BEGIN {
    printf "W11 latency, 1 client (us per call): append direct %.0f, through the proxy %.0f (the hop: +%.0f); ", 1e6/a, 1e6/p, 1e6/p - 1e6/a
    printf "es.stream_version direct %.0f, through the proxy %.0f (+%.0f); SELECT 1 round trip %.0f; ", 1e6/r, 1e6/q, 1e6/q - 1e6/r, 1e6/o
    printf "PL/Proxy'"'"'s statement for it on a partition, prepared %.0f, as PL/Proxy sends it (unnamed: parsed and planned per call) %.0f (+%.0f)", 1e6/t, 1e6/u, 1e6/u - 1e6/t }')"
  # CLIENTS clients: CPU per append on each side
  out=$(w11_cpu proxy); read -r -a cp <<<"$out"
  out=$(w11_cpu direct); read -r -a cd <<<"$out"
  note "W11 CPU per append, $CLIENTS clients (us): through the proxy: proxy backends ${cp[0]}, partition backends ${cp[1]}, pgbench ${cp[2]}, whole machine ${cp[3]} (${cp[4]} appends/s); direct: partition backends ${cd[1]}, pgbench ${cd[2]}, whole machine ${cd[3]} (${cd[4]} appends/s)"
}
# check_w11: the partitions hold what the setup and every W11 run appended, each stream on the
# partition its hash names, versions gapless
check_w11() {
  local i want got=0 bad=0
  want=$((W11_STREAMS + $({ cat "$OUT/w11-events.count" 2>/dev/null || true; } | paste -sd+ | sed 's/^$/0/') ))
  for ((i = 0; i < W11_SHARDS; i++)); do
    got=$((got + $(w11_sql "${W11_PARTS[$i]}" -c "SELECT count(*) FROM es.events")))
    bad=$((bad + $(w11_sql "${W11_PARTS[$i]}" -c "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, max(version) AS hi
             FROM es.events GROUP BY stream_id) e FULL JOIN es.streams s USING (stream_id)
           WHERE e.hi IS DISTINCT FROM e.n OR s.version IS DISTINCT FROM e.hi
              OR es.stream_hash(stream_id) & $((W11_SHARDS - 1)) <> $i")))
  done
  [ "$got" = "$want" ] || die "W11 store check: the partitions hold $got events, the setup and the runs appended $want"
  [ "$bad" = 0 ] || die "W11 store check: $bad streams on the wrong partition, with gaps, or with a disagreeing es.streams row"
  STORE_CHECK+="; W11's $W11_SHARDS partitions: $got events, each stream on its hash's partition, versions gapless"
}

# --- W12-W13: aggregates for any domain (docs/accounts-and-aggregates.md) -----------------------

# W12: one-event es.append_events (NULL expected version, the type named) to a random one of 10k
# shopping carts, a declared aggregate type whose check and evolve are PL/pgSQL
# (benches/w12_cart.sql: the cart of examples/cart.sql without its limit of 20 items, so a random
# workload is never refused), against the raw single-row INSERT of W1 (w1_raw.sql) in the same
# repetition. Every append runs the check (reads the state, validates the event) and the evolve
# (builds the new state with jsonb functions) and keeps the state in the stream row; after the
# runs every cart's kept state must equal its replay (check_w12).
W12_CARTS=10000
setup_w12() {
  # the raw baseline is W1's: its table holds what it holds in W1's runs
  setup_w1
  sql -f "$BENCH/w12_cart.sql" >/dev/null
  val "SELECT count(es.append_events(('c0' || lpad(to_hex(n), 30, '0'))::uuid, 0,
         ARRAY['{\"type\":\"CartOpened\",\"customer\":\"bench\"}']::jsonb[], 'cart'))
       FROM generate_series(1, $W12_CARTS) n" >/dev/null
  # the check is real: it refuses what a cart refuses, and the refused event is not stored
  sql <<'SQL' || die "W12: the cart's check did not refuse an invalid event"
DO $$
DECLARE
    cart uuid := ('c0' || lpad(to_hex(1), 30, '0'))::uuid;
    bad jsonb[] := ARRAY['{"type":"ItemAdded","sku":"","quantity":1,"unit_price_cents":250}',
                         '{"type":"ItemAdded","sku":"S-1","quantity":0,"unit_price_cents":250}',
                         '{"type":"ItemRemoved","sku":"S-404"}', '{"type":"CheckedOut"}',
                         '{"type":"CartOpened"}', '{"type":"Shipped"}'];
    codes text[] := ARRAY['CT002', 'CT002', 'CT003', 'CT004', 'CT001', 'CT006'];
BEGIN
    FOR i IN 1 .. array_length(bad, 1) LOOP
        BEGIN
            PERFORM es.append_events(cart, NULL, ARRAY[bad[i]], 'cart');
            RAISE EXCEPTION 'W12: the cart accepted %', bad[i];
        EXCEPTION WHEN OTHERS THEN
            IF SQLSTATE <> codes[i] THEN
                RAISE EXCEPTION 'W12: % was refused with %, not %: %', bad[i], SQLSTATE, codes[i], SQLERRM;
            END IF;
        END;
    END LOOP;
    IF es.stream_version(cart) <> 1 THEN
        RAISE EXCEPTION 'W12: a refused event was stored';
    END IF;
END $$;
SQL
  cat >"$OUT/w12_append.sql" <<SQL
-- W12 (store): one ItemAdded (one of 5 skus, 1-3 items) appended with es.append_events, expected_version NULL, type named, to a random one of $W12_CARTS carts (PL/pgSQL check + evolve). Generated by benches/run.sh.
\set n random(1, $W12_CARTS)
\set s random(1, 5)
\set q random(1, 3)
SELECT es.append_events(('c0' || lpad(to_hex(:n::bigint), 30, '0'))::uuid, NULL,
  ARRAY[jsonb_build_object('type', 'ItemAdded', 'sku', 'S-' || :s::int, 'quantity', :q::int, 'unit_price_cents', 250)], 'cart');
SQL
}
measure_w12() {
  case $1 in
    base) pgbench_tps w12_raw "$BENCH/w1_raw.sql" ;;
    store) pgbench_tps w12_cart "$OUT/w12_append.sql" 1 ;;
  esac
}
# check_w12: every cart's kept state (es.streams.state, of the type's current revision) equals
# the replay of its events with the same evolve, and its item count the sum of the quantities
# appended: the store really ran evolve on every append.
check_w12() {
  local bad
  bad=$(val "SELECT count(*) FROM es.streams s
             WHERE s.stream_type = 'cart'
               AND (s.state_revision IS DISTINCT FROM (SELECT revision FROM es.aggregates WHERE stream_type = 'cart')
                    OR s.state IS DISTINCT FROM (SELECT es.replay('cart', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)
                    OR (s.state->>'item_count')::bigint IS DISTINCT FROM
                       (SELECT coalesce(sum((data->>'quantity')::bigint), 0) FROM es.events e
                        WHERE e.stream_id = s.stream_id AND data->>'type' = 'ItemAdded'))")
  [ "$bad" = 0 ] || die "W12 store check: $bad carts whose kept state differs from the replay of their events"
  STORE_CHECK+="; W12's $W12_CARTS carts: kept state = es.replay of their events"
}

# W13: es.state of a stream of W13_EVENTS events of a declared type whose evolve is LANGUAGE sql
# (bench.counter_evolve) as a full replay (no kept state, no snapshot: the events were appended
# while the type was not declared yet, then es.define_aggregate(..., snapshot_every => 0)),
# against the hand-written fold over the same rows: CREATE AGGREGATE bench.fold with the same
# function as SFUNC, `SELECT bench.fold(data ORDER BY version) FROM es.events WHERE stream_id =`.
# Unit: seconds per fold (one client, W13_FOLDS folds per run: pgbench -t); ratio = store /
# baseline, bar <= 1.5 (the store may take at most 1.5 times the SQL aggregate's time).
W13_EVENTS=1000000
if [ "$SMOKE" = 1 ]; then W13_EVENTS=20000; fi
# folds per run (pgbench -t, one client): a fold of a million events takes seconds
W13_FOLDS=3
W13_ID=e1300000-0000-0000-0000-000000000001
W13_INITIAL='{"n": 0, "events": 0, "last": null}'
setup_w13() {
  local from to t0 t1
  sql <<SQL
CREATE FUNCTION bench.counter_evolve(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS \$\$ SELECT jsonb_build_object('n', (state->>'n')::bigint + (event->>'by')::bigint,
                                 'events', (state->>'events')::bigint + 1,
                                 'last', event->'type') \$\$;
CREATE AGGREGATE bench.fold(jsonb) (SFUNC = bench.counter_evolve, STYPE = jsonb, INITCOND = '$W13_INITIAL');
SQL
  # the stream names type counter, not declared yet: a generic stream, no state kept, no snapshots
  # one session, one transaction per call of 1,000 events
  t0=$(date +%s.%N)
  for ((from = 1; from <= W13_EVENTS; from += 1000)); do
    to=$((from + 999 < W13_EVENTS ? from + 999 : W13_EVENTS))
    echo "SELECT es.append_events('$W13_ID', NULL,
            array_agg(jsonb_build_object('type', 'Incremented', 'by', g % 7 + 1) ORDER BY g), 'counter')
          FROM generate_series($from, $to) g;"
  done | sql -o /dev/null
  t1=$(date +%s.%N)
  val "SELECT es.define_aggregate('counter', 'bench.counter_evolve(jsonb,jsonb)', '$W13_INITIAL', snapshot_every => 0)" >/dev/null
  note "$(awk -v a="$t0" -v b="$t1" -v n="$W13_EVENTS" 'BEGIN { printf "W13 setup: %d events appended in %.1f s (%.0f events/s, 1,000 per es.append_events)", n, b - a, n / (b - a) }')"
  # a full replay: no kept state, no snapshot
  [ "$(val "SELECT (SELECT count(*) FROM es.snapshots WHERE stream_id = '$W13_ID')
                  + (SELECT count(*) FROM es.streams WHERE stream_id = '$W13_ID' AND (state IS NOT NULL OR state_revision IS NOT NULL))")" = 0 ] ||
    die "W13: the stream keeps a state or snapshots: es.state would not replay it all"
  cat >"$OUT/w13_state.sql" <<SQL
-- W13 (store): es.state of a $W13_EVENTS-event stream of type counter (LANGUAGE sql evolve) without kept state or snapshots: a full replay. Generated by benches/run.sh.
SELECT es.state('$W13_ID');
SQL
  cat >"$OUT/w13_sql_fold.sql" <<SQL
-- W13 (baseline): the same evolve as a plain SQL aggregate over the same rows. Generated by benches/run.sh.
SELECT bench.fold(data ORDER BY version) FROM es.events WHERE stream_id = '$W13_ID';
SQL
  local a b
  a=$(val "SELECT es.state('$W13_ID')")
  b=$(val "SELECT bench.fold(data ORDER BY version) FROM es.events WHERE stream_id = '$W13_ID'")
  [ "$a" = "$b" ] || die "W13: es.state says $a, the SQL aggregate $b"
  [ "$(val "SELECT (es.state('$W13_ID')->>'events')::bigint")" = "$W13_EVENTS" ] || die "W13: es.state did not fold $W13_EVENTS events"
}
measure_w13() {
  case $1 in
    base) PGB_TXNS=$W13_FOLDS pgbench_rate w13_sql_fold "$OUT/w13_sql_fold.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
    store) PGB_TXNS=$W13_FOLDS pgbench_rate w13_state "$OUT/w13_state.sql" | awk '{ printf "%.4f\n", 1 / $1 }' ;;
  esac
}

# --- W14 and W7:archived: retention and archiving (docs/lifecycle.md) -------------
# W14: W1 while the database worker removes expired events at its default pace (es.retention_batch_size
# 1000 events every es.retention_naptime 1 s), against W1 with the policy paused, both on a database
# of their own (es_bench_w14: the 100k W1 streams with W14_PER_STREAM events each, a policy on the
# generic streams keeping each stream's newest event). Every W1 append makes one more event expired,
# so the worker has work during every store run; the note says how many it removed. Base and store
# alternate like every workload's, so both see the same growing, thinning table.
W14_PER_STREAM=3
W14_DB=${DB}_w14
w14() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$W14_DB" "$@"; }
setup_w14() {
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $W14_DB WITH (FORCE)" -c "CREATE DATABASE $W14_DB"
  w14 -c "CREATE EXTENSION event_store" >/dev/null
  local from
  for ((from = 1; from <= W1_STREAMS; from += 10000)); do
    w14 -c "SET es.tracing = off" -c "SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
                 (SELECT array_agg('$W1_EVENT'::jsonb) FROM generate_series(1, $W14_PER_STREAM))))
         FROM generate_series($from, least($from + 9999, $W1_STREAMS)) AS n" >/dev/null
  done
  w14 -c "VACUUM ANALYZE" >/dev/null
  w14 -c "BEGIN" -c "SELECT es.set_retention('', max_count => 1)" -c "SELECT es.pause_retention('')" -c "COMMIT" >/dev/null
  rm -f "$OUT/w14-events.count"
}
measure_w14() {
  local before after i tps
  case $1 in
    base)
      w14 -c "SELECT es.pause_retention('')" >/dev/null
      PGB_DB=$W14_DB PGB_COUNT=w14-events pgbench_tps w14_paused "$BENCH/w1_append.sql" 1 ;;
    store)
      before=$(w14 -c "SELECT events_removed FROM es.retention_policies WHERE stream_type = ''")
      w14 -c "SELECT es.resume_retention('')" >/dev/null
      # the worker starts (launcher) and removes its first batch before the run starts
      for ((i = 0; i < 300; i++)); do
        [ "$(w14 -c "SELECT events_removed FROM es.retention_policies WHERE stream_type = ''")" -gt "$before" ] && break
        sleep 0.1
      done
      [ "$i" -lt 300 ] || die "W14: the worker removed nothing within 30 s"
      before=$(w14 -c "SELECT events_removed FROM es.retention_policies WHERE stream_type = ''")
      tps=$(PGB_DB=$W14_DB PGB_COUNT=w14-events pgbench_tps w14_retention "$BENCH/w1_append.sql" 1)
      after=$(w14 -c "SELECT events_removed FROM es.retention_policies WHERE stream_type = ''")
      w14 -c "SELECT es.pause_retention('')" >/dev/null
      note "W14 rep $REP: the worker removed $((after - before)) events during the $SECS s store run ($(awk -v n=$((after - before)) -v s="$SECS" 'BEGIN { printf "%.0f", n / s }')/s)"
      echo "$tps" ;;
  esac
}
# check_w14: every event the setup and the runs appended is live or was removed by an audited
# retention batch, and each stream's live events are a contiguous run ending at its head.
check_w14() {
  local appended removed audited live bad
  appended=$(( W1_STREAMS * W14_PER_STREAM + $({ cat "$OUT/w14-events.count" 2>/dev/null || true; } | paste -sd+ | sed 's/^$/0/') ))
  removed=$(w14 -c "SELECT events_removed FROM es.retention_policies WHERE stream_type = ''")
  audited=$(w14 -c "SELECT coalesce(sum((detail ->> 'events_removed')::bigint), 0) FROM es.data_audit WHERE action = 'retention'")
  live=$(w14 -c "SELECT count(*) FROM es.events")
  [ "$removed" = "$audited" ] || die "W14 check: es.retention_policies says $removed removed, the audit $audited"
  [ $((live + removed)) = "$appended" ] || die "W14 check: $live live + $removed removed events, $appended appended"
  bad=$(w14 -c "SELECT count(*) FROM (SELECT stream_id, count(*) n, min(version) lo, max(version) hi FROM es.events GROUP BY 1) e
                JOIN es.streams s USING (stream_id) WHERE e.hi <> s.version OR e.hi - e.lo + 1 <> e.n")
  [ "$bad" = 0 ] || die "W14 check: $bad streams whose live events are not a contiguous run up to their head"
  STORE_CHECK+="; W14's store: $appended events appended, $removed removed by $(w14 -c "SELECT count(*) FROM es.data_audit WHERE action = 'retention'") audited batches, $live live, each stream a contiguous run up to its head"
}

# W15 and W16: reads against the same query written by hand on a copy of es.events
# (bench.read_events: `LIKE es.events INCLUDING ALL`, the same columns and indexes, filled with
# every row of es.events once all the setups are done, positions included), every column of every
# row sent to pgbench. Unit tps; ratio = store tps / raw tps (docs/reference.md §8: >= 1.0).
#   W15: es.load_events of a random one of W15_STREAMS streams of 20 events (ids 'f15' || n in
#        hex) vs SELECT * FROM bench.read_events WHERE stream_id = $1 ORDER BY version.
#   W16: es.read_all(<after>, 1000), after random in 0 .. the copy's last position - 1000, vs
#        SELECT * FROM bench.read_events WHERE global_position > $1 ORDER BY global_position LIMIT 1000.
#   W15l: W15's es.load_events vs the raw query that also honours the stream's life, as the
#        store's read does (a deleted stream reads as empty): SELECT * FROM bench.read_events
#        WHERE stream_id = $1 AND NOT EXISTS (SELECT FROM bench.read_streams s WHERE
#        s.stream_id = $1 AND s.deleted IS NOT NULL) ORDER BY version, bench.read_streams being
#        a copy of es.streams. W15's raw query skips that probe; W15l is the like-for-like read.
# Both sides are checked to return the same rows (same text) before they are timed.
W15_STREAMS=10000
if [ "$SMOKE" = 1 ]; then W15_STREAMS=2000; fi
W15_SID="('f15' || lpad(to_hex(:n::bigint), 29, '0'))::uuid"
READ_COPY=
# w15_streams PSQL...: appends the W15 streams (20 events each, 1,000 streams per statement)
w15_streams() {
  local from
  for ((from = 1; from <= W15_STREAMS; from += 1000)); do
    "$@" -c "SET es.tracing = off" -c "SELECT count(es.append_events(('f15' || lpad(to_hex(n), 29, '0'))::uuid, 0,
                 (SELECT array_agg(jsonb_build_object('type', 'ItemAdded', 'sku', 'R-' || g, 'qty', g, 'price_cents', 125 * g) ORDER BY g)
                  FROM generate_series(1, 20) g)))
             FROM generate_series($from, least($from + 999, $W15_STREAMS)) AS n" >/dev/null
  done
}
W15_SETUP_DONE=
setup_w15_streams() {
  [ -z "$W15_SETUP_DONE" ] || return 0
  W15_SETUP_DONE=1
  w15_streams psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB"
  cat >"$OUT/w15_load.sql" <<SQL
-- W15 (store): es.load_events of a random one of $W15_STREAMS streams of 20 events. Generated by benches/run.sh.
\set n random(1, $W15_STREAMS)
SELECT * FROM es.load_events($W15_SID);
SQL
}
setup_w15() { setup_w15_streams; READ_COPY=1; }
setup_w15l() { setup_w15_streams; READ_COPY=1; }
setup_w16() { READ_COPY=1; }
# make_read_copy: bench.read_events, a copy of every row of es.events; the raw scripts; the checks
make_read_copy() {
  local max sid after a b
  echo "bench: copying es.events into bench.read_events (the raw side of W15 and W16)"
  sql -c "CREATE TABLE bench.read_events (LIKE es.events INCLUDING ALL)" \
      -c "INSERT INTO bench.read_events SELECT * FROM es.events ORDER BY global_position" >/dev/null
  max=$(val "SELECT max(global_position) - 1000 FROM bench.read_events")
  cat >"$OUT/w15_raw.sql" <<SQL
-- W15 (raw): the same stream read by hand from bench.read_events (a copy of es.events). Generated by benches/run.sh.
\set n random(1, $W15_STREAMS)
SELECT * FROM bench.read_events WHERE stream_id = $W15_SID ORDER BY version;
SQL
  copy_of_streams bench.read_streams
  cat >"$OUT/w15l_raw.sql" <<SQL
-- W15l (raw): W15's raw read that also honours the stream's life through bench.read_streams (a copy of es.streams). Generated by benches/run.sh.
\set n random(1, $W15_STREAMS)
SELECT * FROM bench.read_events WHERE stream_id = $W15_SID
   AND NOT EXISTS (SELECT FROM bench.read_streams s WHERE s.stream_id = $W15_SID AND s.deleted IS NOT NULL)
 ORDER BY version;
SQL
  cat >"$OUT/w16_read_all.sql" <<SQL
-- W16 (store): es.read_all of a page of 1,000 after a random position. Generated by benches/run.sh.
\set a random(0, $max)
SELECT * FROM es.read_all(:a, 1000);
SQL
  cat >"$OUT/w16_raw.sql" <<SQL
-- W16 (raw): the same page read by hand from bench.read_events (a copy of es.events). Generated by benches/run.sh.
\set a random(0, $max)
SELECT * FROM bench.read_events WHERE global_position > :a ORDER BY global_position LIMIT 1000;
SQL
  if [ -n "$W15_SETUP_DONE" ]; then
    for sid in 1 $((W15_STREAMS / 2)) "$W15_STREAMS"; do
      sid="('f15' || lpad(to_hex($sid), 29, '0'))::uuid"
      a=$(val "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY t.version)) FROM es.load_events($sid) t")
      b=$(val "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY t.version)) FROM bench.read_events t WHERE stream_id = $sid")
      [ "$a" = "$b" ] && [ "${a%% *}" = 20 ] || die "W15: es.load_events gives $a, the raw query $b"
    done
  fi
  for after in 0 $((max / 2)) "$max"; do
    a=$(val "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY t.global_position)) FROM es.read_all($after, 1000) t")
    b=$(val "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY t.global_position))
             FROM (SELECT * FROM bench.read_events WHERE global_position > $after ORDER BY global_position LIMIT 1000) t")
    [ "$a" = "$b" ] && [ "${a%% *}" = 1000 ] || die "W16: es.read_all($after, 1000) gives $a, the raw query $b"
  done
}
measure_w15() {
  case $1 in
    base) pgbench_tps w15_raw "$OUT/w15_raw.sql" ;;
    store) pgbench_tps w15_load "$OUT/w15_load.sql" ;;
  esac
}
measure_w15l() {
  case $1 in
    base) pgbench_tps w15l_raw "$OUT/w15l_raw.sql" ;;
    store) pgbench_tps w15_load "$OUT/w15_load.sql" ;;
  esac
}
measure_w16() {
  case $1 in
    base) pgbench_tps w16_raw "$OUT/w16_raw.sql" ;;
    store) pgbench_tps w16_read_all "$OUT/w16_read_all.sql" ;;
  esac
}

# W17 (opt-in: `--only W17`; never in --smoke nor in the default run): W1 and W15 on a store
# holding W17_EVENTS events (a database of its own, es_bench_w17: the 100k W1 streams, the W15
# streams, and the rest in streams of 100 events loaded by bulk_load, i.e. through
# es.append_events, then VACUUM ANALYZE) against W1 and W15 on the small store (the main database)
# in the same repetition: is the store flat as the log grows? The row W17 is W1's ratio, W17:W15
# the ratio of W15's medians. The setup notes how long the load took and the database's size.
W17_EVENTS=${ES_BENCH_W17_EVENTS:-100000000}
W17_DB=${DB}_w17
setup_w17() {
  [ "$SMOKE" = 0 ] || die "W17 does not run in --smoke mode"
  setup_w1
  setup_w15_streams
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $W17_DB WITH (FORCE)" -c "CREATE DATABASE $W17_DB"
  local d=(psql -X -qAt -v ON_ERROR_STOP=1 -d "$W17_DB") from t0 t1 t2 bulk size
  bulk=$(( (W17_EVENTS - W1_STREAMS - 20 * W15_STREAMS) / 100 ))
  [ "$bulk" -ge 0 ] || die "W17: ES_BENCH_W17_EVENTS=$W17_EVENTS is less than the W1 and W15 streams' events"
  "${d[@]}" -c "CREATE EXTENSION event_store" >/dev/null
  t0=$(date +%s.%N)
  for ((from = 1; from <= W1_STREAMS; from += 10000)); do
    "${d[@]}" -c "SET es.tracing = off" -c "SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
                     ARRAY['$W1_EVENT']::jsonb[]))
                   FROM generate_series($from, least($from + 9999, $W1_STREAMS)) AS n" >/dev/null
  done
  w15_streams "${d[@]}"
  bulk_load "$W17_DB" e17 "$bulk"
  t1=$(date +%s.%N)
  "${d[@]}" -c "VACUUM ANALYZE" >/dev/null
  t2=$(date +%s.%N)
  W17_SETUP_EVENTS=$("${d[@]}" -c "SELECT count(*) FROM es.events")
  size=$("${d[@]}" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
  note "W17 setup: $W17_SETUP_EVENTS events loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s" \
       "($(awk -v a="$t0" -v b="$t1" -v n="$W17_SETUP_EVENTS" 'BEGIN { printf "%.0f", n / (b - a) }') events/s, $BULK_LOADERS loaders)," \
       "VACUUM ANALYZE $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.0f", b - a }') s; database $W17_DB: $size"
  rm -f "$OUT/w17-events.count" "$OUT/w17-w15-base.tps" "$OUT/w17-w15-store.tps"
}
measure_w17() {
  local tps
  case $1 in
    base)
      tps=$(pgbench_tps w17_small_w1 "$BENCH/w1_append.sql" 1)
      pgbench_tps w17_small_w15 "$OUT/w15_load.sql" >>"$OUT/w17-w15-base.tps"
      echo "$tps" ;;
    store)
      tps=$(PGB_DB=$W17_DB PGB_COUNT=w17-events pgbench_tps w17_big_w1 "$BENCH/w1_append.sql" 1)
      PGB_DB=$W17_DB pgbench_tps w17_big_w15 "$OUT/w15_load.sql" >>"$OUT/w17-w15-store.tps"
      echo "$tps" ;;
  esac
}
figure_w17_w15() {
  local a b
  a=$(median <"$OUT/w17-w15-store.tps")
  b=$(median <"$OUT/w17-w15-base.tps")
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", a / b }'
}
# check_w17: the big store holds what its setup and its runs appended, versions gapless.
check_w17() {
  local want got bad d=(psql -X -qAt -v ON_ERROR_STOP=1 -d "$W17_DB")
  want=$(( W17_SETUP_EVENTS + $({ cat "$OUT/w17-events.count" 2>/dev/null || true; } | paste -sd+ | sed 's/^$/0/') ))
  got=$("${d[@]}" -c "SELECT count(*) FROM es.events")
  [ "$got" = "$want" ] || die "W17 store check: $W17_DB holds $got events, its setup and runs appended $want"
  bad=$("${d[@]}" -c "SELECT count(*) FROM es.streams s JOIN (SELECT stream_id, count(*) n, max(version) hi FROM es.events GROUP BY 1) e
                     USING (stream_id) WHERE e.n <> e.hi OR s.version <> e.hi")
  [ "$bad" = 0 ] || die "W17 store check: $bad streams of $W17_DB with gaps or a disagreeing es.streams row"
  STORE_CHECK+="; W17's store: $got events, versions gapless"
}

# W7:archived: W1 on a copy of W7's store (es_bench_w7a, made from it after its setup) whose oldest
# 90 % of events were moved to es.events_archive by es.archive (in chunks of 1M, then VACUUM
# ANALYZE), against W7's base (W1 on the 100k store) in the same repetition: what reading through
# an archive costs an append (nothing: appends never read it). Measured by measure_w7 right after
# W7's own store run; the row's figure is the ratio of the medians.
W7A_DB=${DB}_w7a
setup_w7_archived() {
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $W7A_DB WITH (FORCE)" -c "CREATE DATABASE $W7A_DB TEMPLATE $W7_DB"
  local d=(psql -X -qAt -v ON_ERROR_STOP=1 -d "$W7A_DB") total goal moved=0 n
  total=$("${d[@]}" -c "SELECT count(*) FROM es.events")
  goal=$((total * 9 / 10))
  while [ "$moved" -lt "$goal" ]; do
    n=$("${d[@]}" -c "SELECT es.archive('infinity', least(1000000, $goal - $moved))")
    [ "$n" -gt 0 ] || die "W7:archived: es.archive moved nothing with $moved of $goal moved"
    moved=$((moved + n))
  done
  "${d[@]}" -c "VACUUM ANALYZE" >/dev/null
  W7A_LIVE=$("${d[@]}" -c "SELECT count(*) FROM es.events")
  W7A_ARCHIVED=$("${d[@]}" -c "SELECT count(*) FROM es.events_archive")
  note "W7:archived: $W7A_ARCHIVED of $((W7A_LIVE + W7A_ARCHIVED)) events archived, $W7A_LIVE live"
  rm -f "$OUT/w7a.tps" "$OUT/w7-base.tps"
}
figure_w7_archived() {
  local a b
  a=$(median <"$OUT/w7a.tps")
  b=$(median <"$OUT/w7-base.tps")
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", a / b }'
}

register W1 tps 0 '>=' 0.95 "append 1 event, random of 100k streams"
register W1h tps 0 '>=' 1.0 "W1 / raw INSERT + stream head UPDATE"
register W2 tps "$W2_EVENTS" '>=' 0.95 "append 100 events to a new stream"
register W3 tps 0 '>=' 0.85 "es.deposit, random of 10k accounts"
register W4 s 0 '<=' 1.0 "es.account_replay aggregate / SQL fold"
register W4n s 0 '<=' 1.5 "account_state (native fold) / SQL fold"
register W5 st/s 0 '>=' 50 "account_state w/ snapshots vs full replay"
register W6 tps 0 '>=' 0.90 "W1 tracing on (exported) / tracing off"
register W7 tps 0 '>=' 0.80 "W1 with ${W7_EVENTS} events stored / 100k"
register W7:archived ratio 0 '>=' 0.80 "W1, ${W7_EVENTS} ev, 90% archived / 100k" figure_w7_archived
register W8 ev/s 0 '>=' 3 "poll+ack 500/txn, 1 consumer / W1 ev/s"
register W9 tps 0 '>=' 0.85 "W1 + consumer + 2 projections / W1"
register W10 ms 0 '<=' 2 "commit -> event polled, median" figure_w10
register W10:p99 ms 0 '<=' 10 "commit -> event polled, p99" figure_w10_p99
register W11 tps 0 '>=' 0.5 "append 1 event via PL/Proxy / direct"
register W12 tps 0 '>=' 0.60 "append 1 event to a PL/pgSQL cart / raw"
register W13 s 0 '<=' 1.5 "es.state replay, ${W13_EVENTS} ev / SQL agg"
register W14 tps 0 '>=' 0.85 "W1 + retention worker removing / W1 alone"
register W15 tps 0 '>=' 1.0 "load_events, 20-event stream / raw SELECT"
register W15l tps 0 '>=' 1.0 "load_events / raw SELECT + life probe"
register W16 tps 0 '>=' 1.0 "es.read_all page of 1000 / raw SELECT"
# W17 only when --only names it (a load of 100M events takes hours and tens of GB)
if [[ ",${ONLY^^}," == *",W17,"* ]]; then
  register W17 tps 0 '>=' 0.80 "W1 with ${W17_EVENTS} ev stored / small"
  register W17:W15 ratio 0 '>=' 0.80 "W15 with ${W17_EVENTS} ev stored / small" figure_w17_w15
fi
[ ${#WORKLOADS[@]} -gt 0 ] || die "--only $ONLY selects no workload"

# --- database ---------------------------------------------------------------------------------------
echo "bench: creating database $DB (cluster on port $ES_PORT, preload=$ES_PRELOAD)"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
if [ -n "$STORE_SQL" ]; then
  sql -f "$STORE_SQL" || die "$STORE_SQL failed"
  STORE_NAME="SQL file ${STORE_SQL#"$here"/} (no preload)"
else
  sql -c "CREATE EXTENSION event_store" ||
    die "CREATE EXTENSION event_store failed (is it installed? bash scripts/install.sh --release)"
  STORE_NAME="event_store $(val "SELECT extversion FROM pg_extension WHERE extname = 'event_store'")"
  so=$("$BIN/pg_config" --pkglibdir)/event_store.so
  [ -f "$so" ] && STORE_NAME+=" (event_store.so built $(date -r "$so" '+%F %T'), $(du -k "$so" | cut -f1) KiB)"
fi
# the raw baseline: same columns, indexes, defaults and constraints as es.events, its own sequence
sql <<'SQL'
CREATE SCHEMA bench;
CREATE SEQUENCE bench.raw_seq AS bigint;
CREATE TABLE bench.raw_events (LIKE es.events INCLUDING ALL);
ALTER TABLE bench.raw_events ALTER COLUMN global_position SET DEFAULT nextval('bench.raw_seq');
ALTER SEQUENCE bench.raw_seq OWNED BY bench.raw_events.global_position;
SQL
for id in "${WORKLOADS[@]}"; do
  if declare -F "setup_${id,,}" >/dev/null; then
    echo "bench: setup $id"
    "setup_${id,,}"
  fi
done
[ -z "$READ_COPY" ] || make_read_copy
val "VACUUM ANALYZE" >/dev/null
STORE_EVENTS_SETUP=$(val "SELECT count(*) FROM es.events")
rm -f "$OUT/store-events.count"

# --- runs: every repetition runs both sides of each workload, alternated ---------------------------
# Odd repetitions run base then store, even ones store then base: the tables grow and the machine's
# speed drifts during a run, and a fixed order would hand all of that drift to one side.
mode=full; [ "$SMOKE" = 1 ] && mode=smoke
echo "bench: $mode mode, $REPS repetition(s) of ${WORKLOADS[*]}, $SECS s per run, $CLIENTS clients, $THREADS threads"
runlog=()
for ((REP = 1; REP <= REPS; REP++)); do
  sides=(base store); ((REP % 2 == 0)) && sides=(store base)
  for id in "${WORKLOADS[@]}"; do
    [[ $id != *:* ]] || continue                      # a second row of another workload's runs
    first=
    run_sides=("${sides[@]}"); [ -z "${W_FIG[$id]}" ] || run_sides=(store)   # absolute bar: no base
    for side in "${run_sides[@]}"; do
      v=$("measure_${id,,}" "$side")
      RUNS[$id.$side]+="$v "
      line=$(printf 'rep %d/%d  %-3s %-5s %12.6g %s' "$REP" "$REPS" "$id" "$side" "$v" "${W_UNIT[$id]}")
      if [ -n "$first" ]; then
        if [ "$side" = store ]; then s=$v b=$first; else s=$first b=$v; fi
        line+=$(awk -v s="$s" -v b="$b" 'BEGIN { printf "   ratio %.3f", s / b }')
      fi
      first=$v
      echo "  $line"
      runlog+=("$line")
    done
  done
done

echo "bench: checking the store"
check_store
cluster check-log "$LOG_FROM" || die "a server process crashed during the runs"
[[ " ${WORKLOADS[*]} " != *" W7 "* ]] || check_w7
[[ " ${WORKLOADS[*]} " != *" W17 "* ]] || check_w17
[[ " ${WORKLOADS[*]} " != *" W14 "* ]] || check_w14
[[ " ${WORKLOADS[*]} " != *" W12 "* ]] || check_w12
W6_MEMORY=
if [[ " ${WORKLOADS[*]} " == *" W6 "* ]]; then
  echo "bench: W6 worker memory"
  report_w6_memory
fi
if [[ " ${WORKLOADS[*]} " == *" W11 "* ]]; then
  echo "bench: W11 per-call costs"
  report_w11_costs
  check_w11
  cluster check-log "$LOG_FROM" || die "a server process crashed during the W11 cost runs"
fi

# --- replay memory: a backend's peak private memory while it folds one long stream ----------------
# peak_anon SQL: runs SQL in a new session and samples the backend's RssAnon (private memory,
# without the shared buffers it touches) every 10 ms; prints the peak in kB.
peak_anon() {
  local pid= peak=0 v bg tries=0
  PGAPPNAME=es_bench_peak psql -X -qAt -d "$DB" -c "SELECT pg_sleep(0.5)" -c "$1" >/dev/null &
  bg=$!
  while [ -z "$pid" ] && [ $tries -lt 200 ]; do
    pid=$(val "SELECT pid FROM pg_stat_activity WHERE application_name = 'es_bench_peak'")
    tries=$((tries + 1))
  done
  [ -n "$pid" ] || die "peak_anon: the session did not show up"
  while kill -0 "$bg" 2>/dev/null; do
    v=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$v" ] && [ "$v" -gt "$peak" ]; then peak=$v; fi
    sleep 0.01
  done
  wait "$bg" || die "peak_anon: the query failed: $1"
  echo "$peak"
}
MEMORY=()
if [[ " ${WORKLOADS[*]} " == *" W4 "* || " ${WORKLOADS[*]} " == *" W4n "* ]]; then
  echo "bench: measuring the backend's peak memory during replays of the W4 account"
  m_small=$(peak_anon "SELECT es.account_state('$W4_ID', at_version => 10000)")
  m_full=$(peak_anon "SELECT es.account_state('$W4_ID', at_version => $((W4_EVENTS - 1)))")
  m_agg=$(peak_anon "SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '$W4_ID'")
  MEMORY+=("es.account_state over 10,000 events: $m_small kB; over $((W4_EVENTS - 1)) events: $m_full kB")
  MEMORY+=("es.account_replay(data ORDER BY version) over $W4_EVENTS events: $m_agg kB (its sort spills past work_mem)")
fi

# --- table ------------------------------------------------------------------------------------------
agg="median of $REPS"; [ "$REPS" = 1 ] && agg="single run"
report=$RESULTS.tmp
missed=0
{
  echo "event_store benchmark (docs/reference.md §8), $mode mode, $(date '+%F %T %Z')"
  echo "store: $STORE_NAME; $(val 'SHOW server_version' | cut -d' ' -f1), $(nproc) cores"
  echo "pgbench -n -M prepared -c $CLIENTS -j $THREADS -T $SECS, synchronous_commit=off;" \
       "base and store alternated, $REPS repetition(s); figures: $agg; ratio = store / base;" \
       "W1-W5 and W8-W10 sessions run with es.tracing=off (W6 measures tracing)"
  if [ -f "$INSTR_FILE" ] && [ "$(instr_ratio W1)" != - ]; then
    echo "instr: instructions per call, raw/store (benches/instructions.sh, $(sed -n '1s/^# benches\/instructions.sh, //p' "$INSTR_FILE"))"
  else
    echo "instr: - (no target/bench-instructions.txt for this build: run with --instructions)"
  fi
  es_gucs=$(val "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name LIKE 'es.%'")
  [ -z "$es_gucs" ] || echo "settings: $es_gucs"
  echo "store check after the runs: $STORE_CHECK"
  echo
  idw=3
  for id in "${WORKLOADS[@]}"; do ((${#id} <= idw)) || idw=${#id}; done
  printf '%-*s %-40s %-4s %11s %11s %11s %11s %7s %8s  %-6s %s\n' "$idw" \
    id workload unit store events/s base "base ev/s" ratio bar result instr
  for id in "${WORKLOADS[@]}"; do
    ept=${W_EPT[$id]}
    if [ -n "${W_FIG[$id]}" ]; then
      # absolute bar: the figure itself is compared with the bar
      s=$("${W_FIG[$id]}")
      b=-
      read -r ratio ok < <(awk -v s="$s" -v c="${W_CMP[$id]}" -v bar="${W_BAR[$id]}" 'BEGIN {
        ok = (c == ">=") ? (s >= bar) : (s <= bar); printf "- %d\n", ok }')
    else
      s=$(tr ' ' '\n' <<<"${RUNS[$id.store]}" | grep . | median)
      b=$(tr ' ' '\n' <<<"${RUNS[$id.base]}" | grep . | median)
      read -r ratio ok < <(awk -v s="$s" -v b="$b" -v c="${W_CMP[$id]}" -v bar="${W_BAR[$id]}" 'BEGIN {
        r = s / b; ok = (c == ">=") ? (r >= bar) : (r <= bar); printf "%.3f %d\n", r, ok }')
    fi
    result=PASS; [ "$ok" = 1 ] || { result=MISS; missed=1; }
    if [ "$ept" -gt 0 ]; then
      se=$(awk -v v="$s" -v e="$ept" 'BEGIN { printf "%.1f", v * e }')
      be=$(awk -v v="$b" -v e="$ept" 'BEGIN { printf "%.1f", v * e }')
    else
      se=-; be=-
    fi
    [ "$b" = - ] || b=$(printf '%.6g' "$b")
    printf '%-*s %-40s %-4s %11.6g %11s %11s %11s %7s %8s  %-6s %s\n' "$idw" "$id" "${W_DESC[$id]}" \
      "${W_UNIT[$id]}" "$s" "$se" "$b" "$be" "$ratio" "${W_CMP[$id]} ${W_BAR[$id]}" "$result" "$(instr_ratio "$id")"
  done
  if [ -s "$OUT/notes.txt" ]; then
    echo
    echo "notes:"
    sed 's/^/  /' "$OUT/notes.txt"
  fi
  if [ ${#MEMORY[@]} -gt 0 ]; then
    echo
    echo "backend peak private memory (RssAnon, sampled every 10 ms) while folding one account:"
    printf '  %s\n' "${MEMORY[@]}"
  fi
  echo
  [ -z "$W6_MEMORY" ] || { echo "W6 memory: $W6_MEMORY"; echo; }
  echo "runs (in order; ratio = the store run / the base run of the same repetition):"
  printf '  %s\n' "${runlog[@]}"
} >"$report"
echo
cat "$report"
mv "$report" "$RESULTS"
echo "bench: results written to ${RESULTS#"$here"/}"
# the chart of the figures against their bars (benches/chart.py, python3's standard library only);
# a picture, never a reason to fail the run
python3 "$BENCH/chart.py" "$RESULTS" -o "$here/target/bench-chart.svg" 2>&1 | sed 's/^/bench: /' ||
  echo "bench: no chart drawn (benches/chart.py failed); the results above are complete"

if [ "$missed" = 1 ]; then
  if [ "$SMOKE" = 1 ]; then
    echo "bench: smoke mode: a bar was missed (short runs are noisy); not a failure"
  else
    echo "bench: a bar was missed"
    exit 3
  fi
fi
