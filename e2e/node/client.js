// node-postgres against Sluice: run with SLUICE_PG_* in the environment.
// Prints one JSON line per step so the Go test can check each.
const { Client } = require('pg');

async function main() {
  const client = new Client({
    host: process.env.SLUICE_PG_HOST,
    port: Number(process.env.SLUICE_PG_PORT),
    database: process.env.SLUICE_PG_DB,
    user: process.env.SLUICE_PG_USER,
    password: process.env.SLUICE_PG_TOKEN,
    ssl: { rejectUnauthorized: false },
  });
  await client.connect();
  const out = (o) => console.log(JSON.stringify(o));
  // Parameterised query: the extended protocol.
  let r = await client.query('SELECT id, name FROM customers WHERE id = $1', [2]);
  out({ step: 'select', rows: r.rows.length, name: r.rows[0].name });
  // A prepared (named) statement, executed twice.
  for (const id of [3, 4]) {
    r = await client.query({ name: 'by-id', text: 'SELECT name FROM customers WHERE id = $1', values: [id] });
    out({ step: 'prepared', rows: r.rows.length });
  }
  // A denied statement over the extended protocol.
  try {
    await client.query('DELETE FROM orders WHERE amount > $1 OR true', [0]);
    out({ step: 'denied', error: null });
  } catch (e) {
    out({ step: 'denied', code: e.code, message: e.message });
  }
  // The session is still usable.
  r = await client.query('SELECT count(*)::int AS n FROM orders');
  out({ step: 'after', n: r.rows[0].n });
  await client.end();
}

main().catch((e) => { console.error(e); process.exit(1); });
