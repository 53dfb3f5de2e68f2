"""event_store from Python with psycopg 3: append, catch ES001, page the global log.

Connects with the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
Run: target/venv/bin/python tests/drivers/python/psycopg_example.py
"""
import uuid

import psycopg
from psycopg.types.json import Jsonb

PAGE = 2  # events per read_all call (a real reader takes hundreds)
APPEND = "SELECT es.append_events(%s, %s, %s)"

# autocommit: each call is its own transaction; prepare_threshold=None: no server-side
# prepared statements, so the same code runs behind pgbouncer in transaction mode
with psycopg.connect(autocommit=True, prepare_threshold=None) as conn:
    stream = uuid.uuid4()
    # jsonb[]: a list of Jsonb(...) wrappers (a list of plain dicts cannot be adapted)
    added = [Jsonb({"type": "ItemAdded", "sku": "A-1"}), Jsonb({"type": "ItemAdded", "sku": "B-2"})]
    version = conn.execute(APPEND, (stream, 0, added)).fetchone()[0]  # 0: a new stream
    version = conn.execute(APPEND, (stream, version, [Jsonb({"type": "CheckedOut"})])).fetchone()[0]
    print(f"appended: version {version}")

    try:  # a writer that still believes the stream is at version 2
        conn.execute(APPEND, (stream, 2, [Jsonb({"type": "ItemRemoved", "sku": "A-1"})]))
    except psycopg.Error as e:
        if e.sqlstate != "ES001":
            raise
        # DETAIL: "expected: 2, actual: 3" -> reload the stream, decide again, retry
        print(f"conflict: {e.sqlstate} {e.diag.message_detail}")

    # the global log, paged by the last global_position seen (gap-safe)
    after, events, pages = 0, 0, 0
    while True:
        rows = conn.execute(
            "SELECT global_position, stream_id, version, event_type, data"
            " FROM es.read_all(%s, %s)",
            (after, PAGE),
        ).fetchall()
        if rows:
            pages, events, after = pages + 1, events + len(rows), rows[-1][0]
        if len(rows) < PAGE:
            break
    print(f"read: {events} events in {pages} pages, last position {after}")
