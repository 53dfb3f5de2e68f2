// event_store from Node.js with node-postgres (pg): append, catch ES001, page the global log.
// Connects with the libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE).
// Run: node tests/drivers/node/pg_example.js (after `npm ci` in tests/drivers/node)
'use strict';
const { randomUUID } = require('node:crypto');
const pg = require('pg');

// bigint (OID 20) arrives as a string by default, since it can exceed Number.MAX_SAFE_INTEGER:
// parse positions and versions as BigInt instead (BigInt parameters are sent as their digits)
pg.types.setTypeParser(20, BigInt);

const PAGE = 2n; // events per read_all call (a real reader takes hundreds)
// jsonb[]: an array of JSON texts, cast explicitly; no `name` in a query: unnamed statements,
// safe behind pgbouncer in transaction mode
const APPEND = 'SELECT es.append_events($1, $2, $3::jsonb[]) AS version';
const jsonArray = (events) => events.map((e) => JSON.stringify(e));

async function main() {
  const client = new pg.Client();
  await client.connect();
  try {
    const stream = randomUUID();
    const added = [{ type: 'ItemAdded', sku: 'A-1' }, { type: 'ItemAdded', sku: 'B-2' }];
    let { rows } = await client.query(APPEND, [stream, 0, jsonArray(added)]); // 0: a new stream
    ({ rows } = await client.query(APPEND, [stream, rows[0].version, jsonArray([{ type: 'CheckedOut' }])]));
    console.log(`appended: version ${rows[0].version}`);

    try { // a writer that still believes the stream is at version 2
      await client.query(APPEND, [stream, 2, jsonArray([{ type: 'ItemRemoved', sku: 'A-1' }])]);
    } catch (e) {
      if (e.code !== 'ES001') throw e;
      // DETAIL: "expected: 2, actual: 3" -> reload the stream, decide again, retry
      console.log(`conflict: ${e.code} ${e.detail}`);
    }

    // the global log, paged by the last global_position seen (gap-safe)
    let after = 0n, events = 0, pages = 0;
    for (;;) {
      ({ rows } = await client.query(
        'SELECT global_position, stream_id, version, event_type, data FROM es.read_all($1, $2)',
        [after, PAGE]));
      if (rows.length > 0) {
        pages += 1; events += rows.length; after = rows[rows.length - 1].global_position;
      }
      if (BigInt(rows.length) < PAGE) break;
    }
    console.log(`read: ${events} events in ${pages} pages, last position ${after}`);
  } finally {
    await client.end();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
