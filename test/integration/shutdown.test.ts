import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildSample, createBusinessUnits, insertRows, SOURCE_DDL } from '../../src/dev/demo/sample.js';
import { sourceDigest, targetDigest } from '../../src/ops/reconcile/digest.js';
import { parseConfigObject } from '../../src/config/load.js';
import { sourceSpec } from '../../src/wiring.js';
import { brokers, uniqueName } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

// Graceful shutdown, tested by sending the signal to real processes in the middle of a load.
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

function start(args: string[]): { child: ChildProcess; exit: Promise<number | null>; output: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += String(d)));
  child.stderr!.on('data', (d) => (output += String(d)));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exit, output: () => output };
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function count(pool: pg.Pool, sql: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(sql);
  return Number(rows[0]?.n ?? 0);
}

async function setup(label: string) {
  const db = await createTestDatabase(label);
  dropWhenPassed(db);
  const pool = db.pool();
  await pool.query(SOURCE_DDL);
  const bus = await createBusinessUnits(pool, 2);
  await insertRows(pool, buildSample({ roots: 5, foldersPerRoot: 4, files: 3000, largeFiles: 0 }, bus));
  const raw = {
    controlStore: { database: 'db' },
    kafka: { brokers: brokers(), partitions: 3 },
    databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
    tables: [{ name: 'ReferralAttachment', source: 'db', topic: uniqueName(label, 'topic'), batchSize: 100, safetyBufferMinutes: 0, blob: { schema: 'demo', table: 'ReferralAttachment' }, metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' } }],
    targets: [{ name: 'wh', database: 'db', schema: 'replica', groupId: uniqueName(label, 'group'), batchMaxRecords: 200 }],
    log: { level: 'info' },
  };
  const file = join(await mkdtemp(join(tmpdir(), 'hw-shutdown-')), 'highwater.yaml');
  await writeFile(file, stringify(raw));
  return { pool, file, config: parseConfigObject(raw, label) };
}

describe('graceful shutdown', () => {
  it('SIGTERM during a poll: exits 0 after the batch in flight, releases the lease, and the run resumes to completion', async () => {
    const { pool, file } = await setup('sigterm poll');
    const poll = start(['--config', file, 'poll']);
    await waitFor('two published batches', async () => (await count(pool, `SELECT count(*) AS n FROM highwater_control.run_batches`).catch(() => 0)) >= 2);
    poll.child.kill('SIGTERM');
    expect(await poll.exit, poll.output()).toBe(0);

    const { rows: [run] } = await pool.query<{ run_id: string; status: string }>(`SELECT run_id, status FROM highwater_control.runs`);
    expect(run!.status).toBe('abandoned');
    expect(await count(pool, `SELECT count(*) AS n FROM highwater_control.watermarks WHERE lease_owner IS NOT NULL`)).toBe(0);

    const resume = start(['--config', file, 'resume', run!.run_id]);
    expect(await resume.exit, resume.output()).toBe(0);
    expect(await count(pool, `SELECT count(*) AS n FROM highwater_control.published`)).toBe(await count(pool, `SELECT count(*) AS n FROM demo."ReferralAttachment"`));
  });

  it('SIGTERM during a consume: exits 0, commits only what is durable, and a restart completes the target', async () => {
    const { pool, file, config } = await setup('sigterm consume');
    const poll = start(['--config', file, 'poll']);
    expect(await poll.exit, poll.output()).toBe(0);

    const first = start(['--config', file, 'consume']);
    await waitFor('some rows applied', async () => (await count(pool, `SELECT count(*) AS n FROM replica.referralattachment`).catch(() => 0)) > 0, 120_000);
    first.child.kill('SIGTERM');
    expect(await first.exit, first.output()).toBe(0);
    // Offsets never run ahead of the rows: every stored offset is covered by applied rows (same transaction).
    const applied = await count(pool, `SELECT count(*) AS n FROM replica.referralattachment`);
    expect(applied).toBeGreaterThan(0);

    const second = start(['--config', file, 'consume']);
    const table = config.tables[0]!;
    try {
      await waitFor('the target to equal the source', async () => {
        const [s, t] = await Promise.all([sourceDigest(pool, sourceSpec(config, table)), targetDigest(pool, 'replica', 'referralattachment', '')]);
        return s.rows === t.rows && s.checksum === t.checksum;
      }, 120_000);
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exit, second.output()).toBe(0);
    }
  });
});
