#!/usr/bin/env bash
#! Shards the event store by stream with PL/Proxy (docs/reference.md §11, docs/sharding.md):
#! makes a proxy database route each call of the store's API to the partition database that
#! holds its stream. Why a script: the cluster definition (one connection string per partition,
#! in hash order) and the checks that it is right must be applied the same way every time.
#!
#! What it does, in order:
#!  1. checks the partitions: their number is a power of two (PL/Proxy maps a stream to partition
#!     es.stream_hash(stream_id) & (count - 1)); each one connects and has the event_store extension
#!     (--create-extension creates it); no two are the same database; every stream a partition
#!     already holds hashes to that partition (so connection strings in the wrong order, or a
#!     different count than the data was written with, are refused before anything changes);
#!  2. in the proxy database, in one transaction: CREATE EXTENSION plproxy, the cluster as a
#!     foreign server `es_shards` (FOREIGN DATA WRAPPER plproxy, options p0 … pN-1 and any
#!     --option), a user mapping FOR PUBLIC, then sql/plproxy/setup.sql (schema es with the
#!     store's functions, routed; schema es_proxy); a cluster that exists already keeps its
#!     partition count (refused otherwise) and gets its connection strings updated in place, which
#!     PL/Proxy sessions pick up at their next call (how a moved partition is repointed);
#!  3. through the proxy, asks every partition who it is and compares with step 1.
#! Running it again with the same arguments changes nothing; it is how to repoint a partition.
#!
#! usage: scripts/shard.sh --proxy-db CONNINFO (--partition CONNSTR ... | --partitions-file FILE)
#!          [--user ROLE] [--option KEY=VALUE ...] [--grant ROLE ...] [--create-extension]
#!   --proxy-db CONNINFO   the proxy database (a libpq connection string or URI, as for psql -d);
#!                         it must not have the event_store extension. The script's role must be
#!                         a superuser there (PL/Proxy's language is untrusted); on the
#!                         partitions it must read es.streams (docs/sharding.md)
#!   --partition CONNSTR   a partition's libpq connection string, as the PROXY's server will use
#!                         it (host=… port=… dbname=…), in order p0, p1, …; repeat per partition
#!   --partitions-file F   one connection string per line, in order (blank lines and # comments skipped)
#!   --user ROLE           PL/Proxy connects to the partitions as ROLE (user mapping FOR PUBLIC);
#!                         without it each session connects as its own session user. A password,
#!                         if needed, is read from the environment variable ES_SHARD_PASSWORD (kept
#!                         out of the process list) and stored in the user mapping. The script's
#!                         own checks of step 1 connect as the role running it (libpq's PGUSER,
#!                         ~/.pgpass…), which must read es.streams; ROLE is checked in step 3.
#!   --option KEY=VALUE    a PL/Proxy cluster option (connection_lifetime, query_timeout,
#!                         keepalive_idle, keepalive_interval, keepalive_count, disable_binary)
#!   --grant ROLE          lets ROLE use the proxy: USAGE on the server and both schemas, EXECUTE on
#!                         their functions (what it may do on the partitions is the partitions' grants)
#!   --create-extension    CREATE EXTENSION IF NOT EXISTS event_store on each partition
#! exit: 0 done; 1 a check failed or a statement failed (nothing was changed in the proxy then)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SETUP_SQL=$here/sql/plproxy/setup.sql
PSQL=${PG_BIN:-/usr/lib/postgresql/15/bin}/psql
[ -x "$PSQL" ] || PSQL=psql

die() { echo "shard: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^#! \{0,1\}//'; }

PROXY_DB=
PARTS=()
USER_ROLE=
OPTIONS=()
GRANTS=()
CREATE_EXT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy-db) PROXY_DB=${2:?--proxy-db needs a connection string}; shift ;;
    --partition) PARTS+=("${2:?--partition needs a connection string}"); shift ;;
    --partitions-file)
      f=${2:?--partitions-file needs a file}; shift
      [ -f "$f" ] || die "no such file: $f"
      while IFS= read -r line || [ -n "$line" ]; do
        line=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$line")
        [ -z "$line" ] || [[ $line == \#* ]] || PARTS+=("$line")
      done <"$f" ;;
    --user) USER_ROLE=${2:?--user needs a role}; shift ;;
    --option)
      [[ ${2:-} =~ ^[a-z_]+=.+$ ]] || die "--option takes KEY=VALUE, got: ${2:-}"
      [[ ! ${2%%=*} =~ ^p[0-9]+$ ]] || die "--option ${2%%=*}: partitions are given with --partition"
      OPTIONS+=("$2"); shift ;;
    --grant) GRANTS+=("${2:?--grant needs a role}"); shift ;;
    --create-extension) CREATE_EXT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
[ -n "$PROXY_DB" ] || die "--proxy-db is required (try --help)"
N=${#PARTS[@]}
[ "$N" -ge 1 ] || die "no partitions: give --partition CONNSTR (one per partition, in order) or --partitions-file"
(( (N & (N - 1)) == 0 )) ||
  die "$N partitions: PL/Proxy maps a stream to es.stream_hash(stream_id) & (count - 1), so the count must be a power of two (1, 2, 4, 8, …)"
[ -f "$SETUP_SQL" ] || die "missing $SETUP_SQL"

# psql against a partition with its connection string, as the role running this script (libpq's
# defaults: PGUSER, ~/.pgpass…), which must be able to read es.streams; the mapped --user is
# checked in step 3, through the proxy
part_psql() {
  local cs=$1; shift
  "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -d "$cs" "$@"
}
proxy_psql() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -d "$PROXY_DB" "$@"; }

# --- 1. the partitions ------------------------------------------------------------------------------
echo "shard: checking $N partitions"
declare -A SEEN
IDS=()
mask=$((N - 1))
for ((i = 0; i < N; i++)); do
  cs=${PARTS[$i]}
  part_psql "$cs" -c "SELECT 1" >/dev/null 2>"${TMPDIR:-/tmp}/shard-err.$$" ||
    die "partition p$i ($cs): cannot connect: $(cat "${TMPDIR:-/tmp}/shard-err.$$"; rm -f "${TMPDIR:-/tmp}/shard-err.$$")"
  rm -f "${TMPDIR:-/tmp}/shard-err.$$"
  if [ "$CREATE_EXT" = 1 ]; then
    part_psql "$cs" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS event_store" >/dev/null ||
      die "partition p$i ($cs): CREATE EXTENSION event_store failed"
  fi
  ver=$(part_psql "$cs" -c "SELECT extversion FROM pg_extension WHERE extname = 'event_store'") ||
    die "partition p$i ($cs): cannot query pg_extension"
  [ -n "$ver" ] || die "partition p$i ($cs) has no event_store extension (CREATE EXTENSION event_store there, or pass --create-extension)"
  id=$(part_psql "$cs" -c "SELECT (SELECT system_identifier FROM pg_control_system()) || '/' || current_database()") ||
    die "partition p$i ($cs): cannot read its identity"
  [ -z "${SEEN[$id]:-}" ] || die "partitions ${SEEN[$id]} and p$i are the same database ($id)"
  SEEN[$id]=p$i
  IDS+=("$id")
  placed=$(part_psql "$cs" -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE es.stream_hash(stream_id) & $mask <> $i) FROM es.streams") ||
    die "partition p$i ($cs): cannot read es.streams (run the script as a role that can)"
  read -r streams misplaced <<<"$placed"
  if [ "$misplaced" != 0 ]; then
    die "partition p$i ($cs) holds $misplaced streams (of $streams) that hash to another partition with $N partitions: the connection strings are not in the order the data was written with, or the data was written with another partition count (which is fixed for the life of a cluster)"
  fi
  echo "shard:   p$i: $cs — event_store $ver, $streams streams"
done

# --- 2. the proxy -------------------------------------------------------------------------------------
has_store=$(proxy_psql -c "SELECT count(*) FROM pg_extension WHERE extname = 'event_store'") ||
  die "cannot connect to the proxy database ($PROXY_DB)"
[ "$has_store" = 0 ] ||
  die "the proxy database has the event_store extension: the proxy needs a database of its own (its schema es holds the routed functions)"
existing=$(proxy_psql -c "SELECT count(*) FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'es_shards' AND o ~ '^p[0-9]+='")
if [ "$existing" != 0 ] && [ "$existing" != "$N" ]; then
  die "the proxy's cluster es_shards has $existing partitions, not $N: the partition count and the hash are fixed for the life of a cluster (docs/sharding.md: grow by moving partition databases to new servers, not by changing the count)"
fi

# the desired server options, one "KEY<TAB>VALUE" line each, p0 … pN-1 first and in order (PL/Proxy
# requires its partition options consecutive), passed to the SQL below through the environment
opts=$(for ((i = 0; i < N; i++)); do printf 'p%d\t%s\n' "$i" "${PARTS[$i]}"; done
       for o in "${OPTIONS[@]}"; do printf '%s\t%s\n' "${o%%=*}" "${o#*=}"; done)
echo "shard: configuring the proxy database (cluster es_shards, $N partitions)"
grant_sql=
for r in "${GRANTS[@]}"; do
  r=${r//\'/\'\'}
  grant_sql+="SELECT format('GRANT USAGE ON FOREIGN SERVER es_shards TO %I', '$r') \\gexec
SELECT format('GRANT USAGE ON SCHEMA es, es_proxy TO %I', '$r') \\gexec
SELECT format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA es, es_proxy TO %I', '$r') \\gexec
SELECT format('GRANT SELECT ON es.subscriptions TO %I', '$r') \\gexec
"
done
export ES_SHARD_OPTIONS=$opts ES_SHARD_USER=$USER_ROLE ES_SHARD_PASSWORD=${ES_SHARD_PASSWORD:-}
proxy_psql -1 >/dev/null <<SQL || die "configuring the proxy database failed (nothing was changed)"
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS plproxy;
\getenv opts ES_SHARD_OPTIONS
\getenv map_user ES_SHARD_USER
\getenv map_password ES_SHARD_PASSWORD
SELECT set_config('es_shard.options', :'opts', true);
SELECT set_config('es_shard.user', :'map_user', true);
SELECT set_config('es_shard.password', :'map_password', true);
DO \$\$
DECLARE
  want text[][];       -- {{key, value}, …} in the order given
  have jsonb;
  acts text[] := '{}';
  kv text[];
  map_opts text[] := '{}';
  u text := current_setting('es_shard.user');
  pw text := current_setting('es_shard.password');
BEGIN
  SELECT array_agg(ARRAY[split_part(l, E'\t', 1), substr(l, strpos(l, E'\t') + 1)] ORDER BY n) INTO want
    FROM unnest(string_to_array(current_setting('es_shard.options'), E'\n')) WITH ORDINALITY AS t(l, n)
    WHERE l <> '';
  SELECT coalesce(jsonb_object_agg(split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), '{}')
    INTO have FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'es_shards';
  IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'es_shards') THEN
    FOREACH kv SLICE 1 IN ARRAY want LOOP
      acts := acts || format('%I %L', kv[1], kv[2]);
    END LOOP;
    EXECUTE format('CREATE SERVER es_shards FOREIGN DATA WRAPPER plproxy OPTIONS (%s)', array_to_string(acts, ', '));
  ELSE
    FOREACH kv SLICE 1 IN ARRAY want LOOP
      IF NOT have ? kv[1] THEN acts := acts || format('ADD %I %L', kv[1], kv[2]);
      ELSIF have->>kv[1] IS DISTINCT FROM kv[2] THEN acts := acts || format('SET %I %L', kv[1], kv[2]);
      END IF;
      have := have - kv[1];
    END LOOP;
    acts := acts || ARRAY(SELECT format('DROP %I', k) FROM jsonb_object_keys(have) AS k);
    IF cardinality(acts) > 0 THEN
      EXECUTE format('ALTER SERVER es_shards OPTIONS (%s)', array_to_string(acts, ', '));
    END IF;
  END IF;
  EXECUTE 'COMMENT ON SERVER es_shards IS '
    || quote_literal('The event store''s PL/Proxy cluster: partition databases p0..pN-1 in hash order (stream to partition es.stream_hash(stream_id) & (N - 1)); made by scripts/shard.sh, see docs/sharding.md.');
  -- the user mapping FOR PUBLIC: the mapped user and password, or none (each session user)
  IF u <> '' THEN map_opts := map_opts || format('user %L', u); END IF;
  IF pw <> '' THEN map_opts := map_opts || format('password %L', pw); END IF;
  DROP USER MAPPING IF EXISTS FOR PUBLIC SERVER es_shards;
  IF cardinality(map_opts) > 0 THEN
    EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER es_shards OPTIONS (%s)', array_to_string(map_opts, ', '));
  ELSE
    CREATE USER MAPPING FOR PUBLIC SERVER es_shards;
  END IF;
END \$\$;
\i $SETUP_SQL
$grant_sql
SQL

# --- 3. every partition, seen through the proxy ------------------------------------------------------
seen=$(proxy_psql -F ' ' -c "SELECT shard, identity FROM es_proxy.shard_identity(es_proxy.all_shards()) ORDER BY shard") ||
  die "the proxy cannot reach every partition (the connection strings are used by the proxy's server, from its host)"
for ((i = 0; i < N; i++)); do
  got=$(awk -v i="$i" '$1 == i { print $2 }' <<<"$seen")
  [ "$got" = "${IDS[$i]}" ] ||
    die "through the proxy, partition p$i is ${got:-unreachable}, but its connection string reached ${IDS[$i]} from here"
done
echo "shard: done: SELECT es.append_events(…) in the proxy database now runs on partition es.shard_of(stream_id) of $N"
