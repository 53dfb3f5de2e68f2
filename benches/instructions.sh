#!/usr/bin/env bash
#! Instructions per call of the installed build, counted by valgrind's callgrind in a single-user
#! backend: a W1-like loop (one-event es.append_events, NULL expected version, random of 100k
#! streams) and a W3-like loop (es.deposit on random of 10k accounts), each N calls in one
#! statement, minus the same session without the loop; and an append at an explicit expected
#! version with and without a caller-given event id (the seed client's append).
#!
#! Why: on a 2-core virtual machine the throughput of a pgbench run varies by ±15 % from run to
#! run, more than most changes cost; an instruction count is the same from run to run for the same
#! build and input, whatever else the machine does. Compare two builds by installing each
#! (`bash scripts/install.sh --release`) and running this after each.
#!
#! usage: benches/instructions.sh [N]     (default N = 20000; about a minute)
#! needs: valgrind (Debian's package); the cluster is its own (ES_CLUSTER_DIR below, port 28850)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-20000}
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
export ES_CLUSTER_DIR=$here/target/es-cluster-instructions ES_PORT=${ES_INSTRUCTIONS_PORT:-28850}
export ES_MALLOC_PERTURB=0
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cluster() { bash "$here/scripts/cluster.sh" "$@"; }
trap 'cluster stop' EXIT
cluster start >/dev/null
eval "$(cluster env)"
export PGHOST PGPORT PGUSER
# The store every measurement starts from (made once): the W1 and W3 streams.
if ! psql -X -qAt -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'es_instructions_template'" | grep -q 1; then
  psql -X -q -d postgres -c "CREATE DATABASE es_instructions_template"
  psql -X -q -d es_instructions_template <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION event_store;
SET es.tracing = off;
SELECT count(es.append_events(lpad(to_hex(n::bigint), 32, '0')::uuid, 0,
       ARRAY['{"type":"ItemAdded","sku":"A-1","qty":1}']::jsonb[])) FROM generate_series(1, 100000) n;
SELECT count(es.append_events(('e3' || lpad(to_hex(n), 30, '0'))::uuid, 0,
       ARRAY['{"type":"Opened","account_holder":"Bench","initial_balance_cents":0}']::jsonb[])) FROM generate_series(1, 10000) n;
VACUUM ANALYZE;
SQL
fi
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS es_instructions" \
  -c "CREATE DATABASE es_instructions TEMPLATE es_instructions_template"
cluster stop
so=$("$BIN/pg_config" --pkglibdir)/event_store.so
echo "instructions: event_store.so built $(date -r "$so" '+%F %T'), $n calls per loop"
# count SQL: the total instructions of a single-user backend that runs SQL (callgrind's "Collected")
count() {
  local out=$ES_CLUSTER_DIR/callgrind.out
  printf 'SET es.tracing = off; SELECT setseed(0.5); %s\n' "$1" |
    runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$BIN/postgres" --single -D "$ES_CLUSTER_DIR/data" -c shared_preload_libraries=event_store \
      -c synchronous_commit=off es_instructions 2>&1 | awk '/Collected/ { print $4 }'
}
base=$(count "SELECT 1;")
append=$(count "SELECT count(es.append_events(lpad(to_hex((1 + (random() * 99999)::int)::bigint), 32, '0')::uuid, NULL, ARRAY['{\"type\":\"ItemAdded\",\"sku\":\"A-1\",\"qty\":1}']::jsonb[])) FROM generate_series(1, $n);")
deposit=$(count "SELECT count(es.deposit(('e3' || lpad(to_hex(1 + (random() * 9999)::int), 30, '0'))::uuid, 100, 'bench')) FROM generate_series(1, $n);")
# The seed client's append: an explicit expected version (0: a new stream) and a caller-given
# event id, against the same append with the uuid under another key (same JSON work): the
# difference is what the id costs (the look-up that lets ES004 say where an id is stored; the
# id's index entry is the same in both).
exact=$(count "SELECT count(es.append_events(gen_random_uuid(), 0, ARRAY[jsonb_build_object('type', 'ItemAdded', 'ref', gen_random_uuid())])) FROM generate_series(1, $n) g;")
with_id=$(count "SELECT count(es.append_events(gen_random_uuid(), 0, ARRAY[jsonb_build_object('type', 'ItemAdded', 'event_id', gen_random_uuid())])) FROM generate_series(1, $n) g;")
echo "W1-like es.append_events: $(((append - base) / n)) instructions per call"
echo "W3-like es.deposit:       $(((deposit - base) / n)) instructions per call"
echo "new stream (expected 0), no id:   $(((exact - base) / n)) instructions per call"
echo "new stream (expected 0), with id: $(((with_id - base) / n)) instructions per call"
