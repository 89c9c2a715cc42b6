import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { main } from '../../src/cli/main.js';
import { createCodec } from '../../src/events/codec.js';
import { decodeRecord } from '../../src/events/records.js';
import { buildSample, createBusinessUnits, insertRows, SOURCE_DDL } from '../../src/dev/demo/sample.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';
import { brokers, consumeMessages, uniqueName } from '../support/kafka.js';

// `highwater backfill --keys`: an operator republishes chosen rows, whatever their window.
describe('highwater backfill', () => {
  it('republishes exactly the chosen rows and records a backfill run', async () => {
    const db = await createTestDatabase('backfill command');
    dropWhenPassed(db);
    const pool = db.pool();
    await pool.query(SOURCE_DDL);
    const bus = await createBusinessUnits(pool, 2);
    const rows = buildSample({ roots: 2, foldersPerRoot: 1, files: 6, largeFiles: 0 }, bus);
    await insertRows(pool, rows);
    const topic = uniqueName('backfill command', 'topic');
    const file = join(await mkdtemp(join(tmpdir(), 'hw-backfill-')), 'highwater.yaml');
    await writeFile(file, stringify({
      controlStore: { database: 'db' },
      kafka: { brokers: brokers(), partitions: 1 },
      databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
      tables: [{ name: 'ReferralAttachment', source: 'db', topic, blob: { schema: 'demo', table: 'ReferralAttachment' }, metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' } }],
      log: { level: 'error' },
    }));
    const chosen = rows.filter((r) => !r.isDirectory).slice(0, 2).map((r) => r.id);

    const code = await main(['node', 'highwater', '--config', file, '--json', 'backfill', '--table', 'ReferralAttachment', '--keys', ...chosen]);

    expect(code).toBe(0);
    const messages = await consumeMessages({ topic, groupId: uniqueName('backfill command', 'group'), count: 2 });
    const codec = createCodec({ kind: 'single-object' });
    const keys = await Promise.all(messages.map(async (m) => {
      const e = await decodeRecord(codec, { topic, partition: m.partition, offset: BigInt(m.offset), key: m.key, value: m.value, headers: Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, String(v)])) });
      return e.type === 'change' ? e.change.key : e.type;
    }));
    expect(keys.sort()).toEqual([...chosen].sort());
    const { rows: runs } = await pool.query(`SELECT kind, status FROM highwater_control.runs`);
    expect(runs).toEqual([{ kind: 'backfill', status: 'completed' }]);
  });

  it('exits 2 for an unknown table', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hw-backfill-'));
    const file = join(dir, 'highwater.yaml');
    await writeFile(file, stringify({ controlStore: { database: 'db' }, databases: [{ name: 'db', kind: 'postgres', connectionString: 'postgres://postgres@127.0.0.1/postgres' }] }));
    expect(await main(['node', 'highwater', '--config', file, 'backfill', '--table', 'Nope', '--keys', 'k'])).toBe(2);
  });
});
