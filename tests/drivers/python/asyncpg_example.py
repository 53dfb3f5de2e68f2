"""event_store from Python with asyncpg: append, catch ES001, page the global log.

Connects with the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
Run: target/venv/bin/python tests/drivers/python/asyncpg_example.py
"""
import asyncio
import json
import uuid

import asyncpg

PAGE = 2  # events per read_all call (a real reader takes hundreds)
APPEND = "SELECT es.append_events($1, $2, $3)"


async def main():
    # statement_cache_size=0: no named prepared statements, safe behind pgbouncer (transaction mode)
    conn = await asyncpg.connect(statement_cache_size=0)
    try:
        # jsonb (and the elements of jsonb[]) as Python objects, encoded with json
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        stream = uuid.uuid4()
        added = [{"type": "ItemAdded", "sku": "A-1"}, {"type": "ItemAdded", "sku": "B-2"}]
        version = await conn.fetchval(APPEND, stream, 0, added)  # 0: a new stream
        version = await conn.fetchval(APPEND, stream, version, [{"type": "CheckedOut"}])
        print(f"appended: version {version}")

        try:  # a writer that still believes the stream is at version 2
            await conn.fetchval(APPEND, stream, 2, [{"type": "ItemRemoved", "sku": "A-1"}])
        except asyncpg.PostgresError as e:  # ES001 has no class of its own: UnknownPostgresError
            if e.sqlstate != "ES001":
                raise
            # DETAIL: "expected: 2, actual: 3" -> reload the stream, decide again, retry
            print(f"conflict: {e.sqlstate} {e.detail}")

        # the global log, paged by the last global_position seen (gap-safe)
        after, events, pages = 0, 0, 0
        while True:
            rows = await conn.fetch(
                "SELECT global_position, stream_id, version, event_type, data"
                " FROM es.read_all($1, $2)",
                after,
                PAGE,
            )
            if rows:
                pages, events, after = pages + 1, events + len(rows), rows[-1]["global_position"]
            if len(rows) < PAGE:
                break
        print(f"read: {events} events in {pages} pages, last position {after}")
    finally:
        await conn.close()


asyncio.run(main())
