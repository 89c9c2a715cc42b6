/**
 * The registry's two writes per new row, alone: pending registrations in reads of `read` rows, then the
 * acknowledged versions in sends of `send` rows, as a 100k-row first load makes them. Prints the time of each
 * and how many updates were HOT, for the table as migrated and for any fillfactor given. Run under the heavy lock:
 *   npx tsx test/bench/registry-writes.ts [rows] [fillfactor...]
 */
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import { ControlStore, type PublishedRow } from '../../src/control/store.js';

const URL = process.env.HW_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function once(rows: number, fillfactor: number | null): Promise<void> {
  const db = `hw_regwrites_${process.pid}_${fillfactor ?? 'default'}`;
  const admin = new pg.Client({ connectionString: URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${db}`);
  await admin.query(`CREATE DATABASE ${db}`);
  const pool = new pg.Pool({ connectionString: URL.replace(/\/[^/]*$/, `/${db}`), max: 4 });
  try {
    const store = new ControlStore(pool, 'hwc');
    await store.migrate();
    if (fillfactor !== null) await pool.query(`ALTER TABLE hwc.published SET (fillfactor = ${fillfactor})`);
    const runId = await store.createRun({ kind: 'poll' });
    const keys = Array.from({ length: rows }, () => randomUUID());
    const path = (i: number) => `/${i % 97}/${Math.floor(i / 97) % 89}/${i}/`;
    let t = performance.now();
    for (let i = 0; i < rows; i += 8000) {
      await store.registerPending('T', runId, keys.slice(i, i + 8000).map((key, j) => ({ key, modifiedOn: BigInt(1_000_000 + i + j), pathLocator: path(i + j) })));
    }
    const pendingMs = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < rows; i += 1000) {
      const batch: PublishedRow[] = keys.slice(i, i + 1000).map((key, j) => ({
        key, modifiedOn: BigInt(1_000_000 + i + j), observed: BigInt(2_000_000 + i + j), digest: createHash('sha256').update(key).digest(),
        contentSha256: createHash('sha256').update(`c${key}`).digest(), pathLocator: path(i + j), chunkCount: null,
      }));
      await store.recordPublished('T', runId, batch);
    }
    const recordMs = performance.now() - t;
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the backends' statistics reach the view when they idle
    const { rows: st } = await pool.query(`SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('hwc.published') AS heap, pg_indexes_size('hwc.published') AS idx FROM pg_stat_user_tables WHERE relid = 'hwc.published'::regclass`);
    console.log(JSON.stringify({ fillfactor, rows, pendingMs: Math.round(pendingMs), recordMs: Math.round(recordMs), ...st[0] }));
  } finally {
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${db}`);
    await admin.end();
  }
}

const [rowsArg, ...factors] = process.argv.slice(2);
const rows = Number(rowsArg ?? 100_000);
for (let rep = 0; rep < 2; rep++) {
  for (const f of [null, ...factors.map(Number)]) await once(rows, f);
}
