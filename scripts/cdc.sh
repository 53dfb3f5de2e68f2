#!/usr/bin/env bash
#! Change data capture of the event log (docs/reference.md §11, docs/replicas.md "Change data capture"): streams every
#! committed event of es.events as wal2json JSON lines, whole transactions in commit order,
#! through a logical replication slot that it creates on first use. Why a script: it is the
#! recipe of docs/replicas.md verbatim (tests/client/tests/doc_snippets.rs checks that the page shows
#! these lines) and tests/client/tests/cdc.rs runs it, so the documented commands are the tested
#! ones.
#!
#! Stop it with Ctrl-C (SIGINT). Run it again to resume: the slot sends everything after the
#! position the last run confirmed (pg_recvlogical confirms what it has written every
#! --status-interval seconds, 10 by default), so a restart may repeat the last transactions:
#! consumers skip an event_id they already have.
#!
#! usage: scripts/cdc.sh DBNAME [more pg_recvlogical options, e.g. --status-interval=1]
#! env:   libpq's PGHOST, PGPORT, PGUSER (a role with REPLICATION, or a superuser), PGPASSWORD…;
#!        ES_CDC_SLOT (default es_cdc), ES_CDC_OUT (default -, standard output; a file is appended
#!        to, and reopened on SIGHUP), PG_BIN (default /usr/lib/postgresql/15/bin)
#! needs: wal_level = logical and wal2json in output_plugin_libraries (see docs/replicas.md)
set -euo pipefail
export PATH="${PG_BIN:-/usr/lib/postgresql/15/bin}:$PATH"
DB=${1:?usage: scripts/cdc.sh DBNAME [more pg_recvlogical options]}
shift
SLOT=${ES_CDC_SLOT:-es_cdc}
OUT=${ES_CDC_OUT:--}

# snippet-start
pg_recvlogical -d "$DB" --slot "$SLOT" --create-slot --if-not-exists -P wal2json
exec pg_recvlogical -d "$DB" --slot "$SLOT" --start -f "$OUT" \
  -o format-version=2 -o add-tables=es.events -o include-xids=1 -o include-lsn=1 "$@"
# snippet-end
