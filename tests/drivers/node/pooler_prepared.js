// Prepared statements of node-postgres behind pgbouncer in transaction mode.
// Not a docs snippet: tests/client/tests/pgbouncer.rs runs it against its own pgbouncer (1.18,
// default_pool_size = 2), one case per run, and checks the line it prints: "<case>: ok", or
// "<case>: <SQLSTATE> <message>" when the second execution failed. Client A runs a query (on
// server connection S1); client X opens a transaction, which takes S1; A's next execution runs on
// a new server connection S2, where a statement A prepared on S1 does not exist.
// Usage: node pooler_prepared.js named|unnamed
'use strict';
const { randomUUID } = require('node:crypto');
const pg = require('pg');

async function main(mode) {
  const text = 'SELECT es.stream_version($1)';
  const query = mode === 'named'
    ? { name: 'stream_version', text, values: [randomUUID()] } // a named prepared statement
    : { text, values: [randomUUID()] }; // unnamed: parse, bind and execute in one round trip
  const a = new pg.Client();
  const x = new pg.Client();
  await a.connect();
  await x.connect();
  try {
    await a.query(query);
    await x.query('BEGIN');
    await x.query('SELECT 1'); // X holds S1
    try {
      await a.query(query);
      console.log(`${mode}: ok`);
    } catch (e) {
      console.log(`${mode}: ${e.code} ${e.message}`);
    }
    await x.query('ROLLBACK');
  } finally {
    await a.end();
    await x.end();
  }
}

const mode = process.argv[2];
if (mode !== 'named' && mode !== 'unnamed') throw new Error(`unknown case ${mode}`);
main(mode).catch((e) => { console.error(e); process.exit(1); });
