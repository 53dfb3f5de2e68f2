"""Prepared statements of psycopg 3 and asyncpg behind pgbouncer in transaction mode.

Not a docs snippet: tests/client/tests/pgbouncer.rs runs it against its own pgbouncer (1.18, no
prepared-statement tracking, default_pool_size = 2), one case per run, and checks the line it
prints: "<case>: ok", or "<case>: <SQLSTATE> <message>" when the second execution failed.

The dance: client A runs a statement (on server connection S1, the only one so far); client X
then opens a transaction, which takes S1, the connection released last; A's next execution runs
on a new server connection S2, where a statement A prepared on S1 does not exist.
Usage: python pooler_prepared.py psycopg-default|psycopg-unprepared|asyncpg-default|asyncpg-uncached
"""
import asyncio
import sys
import uuid

import asyncpg
import psycopg

STREAM = uuid.uuid4()


def psycopg_case(case, **settings):
    query = "SELECT es.stream_version(%s)"
    with psycopg.connect(autocommit=True, **settings) as a, psycopg.connect(autocommit=True) as x:
        for _ in range(8):  # psycopg prepares a query once it ran prepare_threshold (5) times
            a.execute(query, (STREAM,)).fetchone()
        with x.transaction():
            x.execute("SELECT 1")  # X holds S1
            try:
                a.execute(query, (STREAM,)).fetchone()
                print(f"{case}: ok")
            except psycopg.Error as e:
                print(f"{case}: {e.sqlstate} {e.diag.message_primary}")


async def asyncpg_case(case, **settings):
    query = "SELECT es.stream_version($1)"
    a = await asyncpg.connect(**settings)
    x = await asyncpg.connect(statement_cache_size=0)
    try:
        await a.fetchval(query, STREAM)
        tx = x.transaction()
        await tx.start()
        await x.fetchval("SELECT 1")  # X holds S1
        try:
            await a.fetchval(query, STREAM)
            print(f"{case}: ok")
        except asyncpg.PostgresError as e:
            print(f"{case}: {e.sqlstate} {e.message}")
        await tx.rollback()
    finally:
        await a.close()
        await x.close()


case = sys.argv[1]
if case == "psycopg-default":
    psycopg_case(case)
elif case == "psycopg-unprepared":
    psycopg_case(case, prepare_threshold=None)
elif case == "asyncpg-default":
    asyncio.run(asyncpg_case(case))
elif case == "asyncpg-uncached":
    asyncio.run(asyncpg_case(case, statement_cache_size=0))
else:
    sys.exit(f"unknown case {case!r}")
