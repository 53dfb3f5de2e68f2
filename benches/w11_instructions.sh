#!/usr/bin/env bash
#! Instructions of W11's hop (benches/run.sh, docs/sharding.md "Cost"), counted by valgrind's
#! callgrind in single-user backends, so changes to sql/plproxy/setup.sql can be compared by a
#! figure that does not move with the machine's load (pgbench through the proxy moves ±15 % and
#! more on a shared 2-core machine).
#!   proxy [N] [BODY]  instructions per call in the PROXY's backend: a single-user backend of the
#!                     proxy cluster runs PREPARE s(int) AS BODY (default: W11's one-event
#!                     es.append_events of a stream taken from bench_w11) and N lines EXECUTE
#!                     s(<random n>); per call = (that − the same with 40 calls) / N. The
#!                     partitions run in a normal server (their work is other processes, not
#!                     counted). Pass BODY 'SELECT (SELECT id FROM bench_w11 WHERE n = $1)' for
#!                     the floor the call is measured against. ES_W11I_WIRE=off counts the
#!                     PL/Proxy twin's path instead of the relay's own wire (es.proxy_wire).
#!   part FORM [N]     instructions per statement on partition 0 (single-user): FORM direct (the
#!                     direct side's prepared append), select (the statement PL/Proxy sends for
#!                     es.append_events: parsed and planned per call), target (TARGET's
#!                     "select r::int8 from es.append_events(...) r"), or any SQL with @ID@ for a
#!                     stream id of the partition.
#!   served SIDE [N]   instructions per append in partition 0's backend of a RUNNING server (the
#!                     partitions' postmaster under callgrind, each backend counted apart): SIDE
#!                     wire (through the proxy, the relay's prepared statement: es.proxy_wire on),
#!                     twin (through the proxy, PL/Proxy's statement: es.proxy_wire off) or direct
#!                     (pgbench -M prepared straight to w_p0); per append = (that with N + 40
#!                     appends to streams of partition 0 − that with 40) / N. The protocol's own
#!                     work is counted, which the single-user forms above leave out.
#!   setup             makes both clusters: partitions w_p0..w_p3 (20,000 streams of one event) and
#!                     the proxy w_proxy (scripts/shard.sh with this tree's sql/plproxy/setup.sql)
#!   reshard           runs this tree's sql/plproxy/setup.sql again in the proxy
#!   stop              stops both clusters
#! env:  PG_BIN (the installed build's), ES_W11I_DIR (default /tmp/es-w11i: clusters A and B),
#!       ES_W11I_PORT (default 28860: the partitions; +1 the proxy)
#! needs: valgrind, PL/Proxy installed in PG_BIN's PostgreSQL, the extension installed (release)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PG_BIN:?PG_BIN must name the installed build\'s bin directory}
export PG_BIN=$BIN PATH=$BIN:$PATH ES_MALLOC_PERTURB=0
dir=${ES_W11I_DIR:-/tmp/es-w11i}
PA=${ES_W11I_PORT:-28860}
PB=$((PA + 1))
A=$dir/parts B=$dir/proxy
EV='{"type":"ItemAdded","sku":"A-1","qty":1}'
STREAMS=20000
cl() { local d=$1 p=$2; shift 2; ES_CLUSTER_DIR=$d ES_PORT=$p bash "$here/scripts/cluster.sh" "$@"; }
clb() { ES_PRELOAD=0 cl "$B" "$PB" "$@"; }
use() { eval "export $(ES_CLUSTER_DIR=$1 ES_PORT=$2 bash "$here/scripts/cluster.sh" env)"; }
# count DATADIR DB FILE [server options]: callgrind's total for a single-user backend running FILE
count() {
  local d=$1 db=$2 f=$3; shift 3
  runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$BIN/postgres" --single -D "$d/data" "$@" -c synchronous_commit=off "$db" <"$f" 2>&1 >"$dir/single.out" |
    tee "$dir/single.err" | awk '/Collected/ { print $4 }'
}
mkdir -p "$dir"
chown postgres "$dir"; chmod 755 "$dir"   # the single-user backends (user postgres) write callgrind.out there
case ${1:-} in
setup)
  cl "$A" "$PA" start >/dev/null
  clb start >/dev/null
  use "$A" "$PA"
  cs=()
  for i in 0 1 2 3; do
    psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS w_p$i WITH (FORCE)" -c "CREATE DATABASE w_p$i"
    psql -X -qAt -v ON_ERROR_STOP=1 -d "w_p$i" -c "CREATE EXTENSION event_store" -c "SET es.tracing = off" \
      -c "CREATE TABLE bench_w11 (n int PRIMARY KEY, id uuid NOT NULL)" \
      -c "INSERT INTO bench_w11 SELECT row_number() OVER (ORDER BY g), id
          FROM (SELECT g, lpad(to_hex(g::bigint), 32, '0')::uuid AS id FROM generate_series(1, $STREAMS) g) s
          WHERE es.stream_hash(id) & 3 = $i" \
      -c "SELECT count(es.append_events(id, 0, ARRAY['$EV']::jsonb[])) FROM bench_w11" -c "VACUUM ANALYZE" >/dev/null
    cs+=(--partition "host=$PGHOST port=$PA dbname=w_p$i application_name=es_proxy options='-c synchronous_commit=off -c es.tracing=off'")
  done
  use "$B" "$PB"
  psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS w_proxy WITH (FORCE)" -c "CREATE DATABASE w_proxy"
  bash "$here/scripts/shard.sh" --proxy-db "host=$PGHOST port=$PB dbname=w_proxy" "${cs[@]}"
  psql -X -qAt -v ON_ERROR_STOP=1 -d w_proxy -c "CREATE TABLE bench_w11 (n int PRIMARY KEY, id uuid NOT NULL)" \
    -c "INSERT INTO bench_w11 SELECT g, lpad(to_hex(g::bigint), 32, '0')::uuid FROM generate_series(1, $STREAMS) g" \
    -c "VACUUM ANALYZE bench_w11" >/dev/null
  clb stop >/dev/null ;;
reshard)
  clb start >/dev/null
  use "$B" "$PB"
  psql -X -q -v ON_ERROR_STOP=1 -d w_proxy -c "SET client_min_messages = warning" -f "$here/sql/plproxy/setup.sql" >/dev/null
  clb stop >/dev/null ;;
proxy)
  n=${2:-2000}
  body=${3:-"SELECT es.append_events((SELECT id FROM bench_w11 WHERE n = \$1), NULL, ARRAY['$EV']::jsonb[])"}
  clb stop >/dev/null 2>&1 || true
  cl "$A" "$PA" start >/dev/null
  line="EXECUTE s((random() * $((STREAMS - 1)))::int + 1);"
  # The setting is SET in the script itself: the single-user backend is the one that counts, and
  # an ALTER DATABASE … SET of the proxy database was not seen to reach it.
  { echo "SET es.proxy_wire = ${ES_W11I_WIRE:-on}; SELECT setseed(0.5); PREPARE s(int) AS $body;"; for ((k = 0; k < 40; k++)); do echo "$line"; done; } >"$dir/base.sql"
  { cat "$dir/base.sql"; for ((k = 0; k < n; k++)); do echo "$line"; done; } >"$dir/loop.sql"
  chmod 644 "$dir"/*.sql
  b=$(count "$B" w_proxy "$dir/base.sql")
  l=$(count "$B" w_proxy "$dir/loop.sql")
  ! grep -m3 ERROR "$dir/single.out" "$dir/single.err" || exit 1
  echo "proxy backend, per call: $(((l - b) / n))  (es.proxy_wire = ${ES_W11I_WIRE:-on}; $body)" ;;
part)
  form=${2:?part needs a FORM}
  n=${3:-2000}
  cl "$A" "$PA" start >/dev/null
  use "$A" "$PA"
  mapfile -t ids < <(psql -X -qAt -d w_p0 -c "SELECT id FROM bench_w11 ORDER BY n")
  cl "$A" "$PA" stop >/dev/null
  cnt=${#ids[@]}
  evarr='{"'$(sed 's/"/\\"/g' <<<"$EV")'"}'
  line() {
    local id=${ids[$((RANDOM % cnt))]}
    case $form in
      direct) echo "EXECUTE d($((RANDOM % cnt + 1)));" ;;
      target) echo "select r::int8 from es.append_events('$id'::uuid, NULL::int8, '$evarr'::_jsonb, NULL::text) r;" ;;
      select) echo "select es.append_events('$id'::uuid, NULL::int8, '$evarr'::_jsonb, NULL::text);" ;;
      *) echo "${form//@ID@/$id}" ;;
    esac
  }
  { echo "SET es.tracing = off; PREPARE d(int) AS SELECT es.append_events((SELECT id FROM bench_w11 WHERE n = \$1), NULL, ARRAY['$EV']::jsonb[]);"
    for ((k = 0; k < 40; k++)); do line; done; } >"$dir/pbase.sql"
  { cat "$dir/pbase.sql"; for ((k = 0; k < n; k++)); do line; done; } >"$dir/ploop.sql"
  chmod 644 "$dir"/*.sql
  b=$(count "$A" w_p0 "$dir/pbase.sql" -c shared_preload_libraries=event_store)
  l=$(count "$A" w_p0 "$dir/ploop.sql" -c shared_preload_libraries=event_store)
  ! grep -m3 ERROR "$dir/single.out" "$dir/single.err" || exit 1
  echo "partition 0, per statement ($form): $(((l - b) / n))" ;;
served)
  side=${2:?served needs a SIDE: wire, twin or direct}
  n=${3:-400}
  # served_run K: the total of w_p0's backend for K appends (the largest file that appended)
  served_run() {
    local k=$1 f t best=0
    cl "$A" "$PA" stop >/dev/null 2>&1 || true
    rm -rf "$dir/served"; mkdir -p "$dir/served"; chown postgres "$dir/served"
    runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$dir/served/cg.%p" \
      "$BIN/postgres" -D "$A/data" -c shared_preload_libraries=event_store >"$dir/served/postmaster.log" 2>&1 &
    local pm=$!
    for ((t = 0; t < 120; t++)); do pg_isready -q -h "$A/run" -p "$PA" && break; sleep 1; done
    use "$A" "$PA"
    if [ "$side" = direct ]; then
      { echo '\set n random(1, 4000)'
        echo "SELECT es.append_events((SELECT id FROM bench_w11 WHERE n = :n), NULL, ARRAY['$EV']::jsonb[]);"; } >"$dir/served/direct.sql"
      pgbench -n -M prepared -c1 -t "$k" -f "$dir/served/direct.sql" w_p0 >/dev/null
    else
      local ids
      ids=$(psql -X -qAt -d w_p0 -c "SELECT string_agg(quote_literal(id), ',') FROM (SELECT id FROM bench_w11 ORDER BY n LIMIT $k) s")
      clb start >/dev/null
      use "$B" "$PB"
      psql -X -qAt -v ON_ERROR_STOP=1 -d w_proxy -c "SET es.proxy_wire = $([ "$side" = wire ] && echo on || echo off)" \
        -c "SELECT count(es.append_events(id, NULL, ARRAY['$EV']::jsonb[])) FROM unnest(ARRAY[$ids]::uuid[]) id" >/dev/null
      clb stop >/dev/null
    fi
    runuser -u postgres -- "$BIN/pg_ctl" -D "$A/data" stop -m fast -w >/dev/null
    wait "$pm" || true
    for f in "$dir"/served/cg.*; do
      grep -q append_events "$f" || continue
      t=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
      [ "${t:-0}" -gt "$best" ] && best=$t
    done
    echo "$best"
  }
  b=$(served_run 40)
  l=$(served_run $((n + 40)))
  echo "partition 0's backend, per append ($side, running server): $(((l - b) / n))" ;;
stop)
  cl "$A" "$PA" stop || true
  clb stop || true ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^#! \{0,1\}//'; exit 2 ;;
esac
