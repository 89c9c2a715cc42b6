import { execFile, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigObject } from '../../src/config/load.js';
import { ControlStore } from '../../src/control/store.js';
import { createLogger } from '../../src/logger.js';
import { Metrics } from '../../src/metrics/catalog.js';
import { Runtime } from '../../src/wiring.js';
import { brokers, uniqueName } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed, type TestDatabase } from '../support/pg.js';
import { SOURCE_DDL } from '../support/source-ddl.js';

// Issue 10, items 6 and 10: what the poll summary and `status` show an operator (late arrivals, refused rows,
// NULL-ModifiedOn rows, a window held back by an idle-in-transaction session, with a metric), and `resume` waiting
// for a killed poller's lease. A real child process against the local PostgreSQL and the harness's Kafka.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

async function highwater(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function configObject(db: TestDatabase, label: string): Record<string, unknown> {
  return {
    controlStore: { database: 'db' },
    kafka: { brokers: brokers(), partitions: 1 },
    databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
    tables: [{
      name: 'T', source: 'db', topic: uniqueName(label, 'topic'), safetyBufferMinutes: 0,
      blob: { schema: 'src', table: 'blobs' }, metadata: { schema: 'src', table: 'meta', joinColumn: 'id' },
    }],
    // A 2 KiB blob is refused: bigger than the largest blob this configuration lets through.
    poll: { maxBlobBytes: 1024 },
    log: { level: 'error' },
  };
}

async function setUp(label: string): Promise<{ db: TestDatabase; file: string; config: Record<string, unknown> }> {
  const db = await createTestDatabase(label);
  dropWhenPassed(db);
  await db.pool().query(SOURCE_DDL);
  const file = join(await mkdtemp(join(tmpdir(), 'hw-findings-')), 'highwater.yaml');
  const config = configObject(db, label);
  await writeFile(file, stringify(config));
  const init = await highwater(['--config', file, 'init']);
  expect(init.code, init.stderr).toBe(0);
  return { db, file, config };
}

async function addRow(db: TestDatabase, row: { id: string; path: string; modifiedOn: string | null; bytes: number }): Promise<void> {
  await db.pool().query(`INSERT INTO src.blobs (stream_id, file_stream, name, path_locator) VALUES ($1, $2, $3, $4)`, [row.id, Buffer.alloc(row.bytes, 7), `f-${row.id.slice(0, 4)}`, row.path]);
  await db.pool().query(`INSERT INTO src.meta (id, "ModifiedOn") VALUES ($1, $2::timestamptz)`, [row.id, row.modifiedOn]);
}

const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();

describe('late arrivals and clamps where operators look (issue 10, item 6)', () => {
  it('the poll summary and status show refused, NULL-ModifiedOn and late rows, and an idle transaction that holds every window back (also as a metric)', async () => {
    const { db, file, config } = await setUp('findings');
    await addRow(db, { id: '00000000-0000-0000-0000-000000000001', path: '/1/', modifiedOn: ago(60), bytes: 10 });
    await addRow(db, { id: '00000000-0000-0000-0000-000000000002', path: '/2/', modifiedOn: ago(59), bytes: 2048 });
    await addRow(db, { id: '00000000-0000-0000-0000-000000000003', path: '/3/', modifiedOn: null, bytes: 10 });

    const first = await highwater(['--config', file, 'poll']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/T \[\*\]: window .* published \d+, unchanged \d+, tombstones 0; late arrivals 0, refused 1!, NULL ModifiedOn 1!/);

    // Committed "late": stamped two hours ago, after the window that covered that time closed.
    await addRow(db, { id: '00000000-0000-0000-0000-000000000004', path: '/4/', modifiedOn: ago(120), bytes: 10 });
    const second = await highwater(['--config', file, 'poll']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/late arrivals [1-9]\d*!/);

    const status = await highwater(['--config', file, 'status']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/last run: late arrivals [1-9]\d*!, refused \d+!?, NULL ModifiedOn 1!/);
    expect(status.stdout).toMatch(/sources:\n {2}db: no open transaction/);

    // An idle-in-transaction session on the source database: every window must end before it began.
    const idle = new pg.Client({ connectionString: db.url });
    await idle.connect();
    try {
      await idle.query('BEGIN');
      await idle.query('SELECT txid_current()');
      await new Promise((r) => setTimeout(r, 1500));
      const held = await highwater(['--config', file, 'poll']);
      expect(held.code, held.stderr).toBe(0);
      expect(held.stdout).toMatch(/window end held back \d+s by an open transaction \d+s old at the source/);

      const frozen = await highwater(['--config', file, 'status']);
      expect(frozen.stdout).toMatch(/db: oldest open transaction began .* HOLDS BACK the windows of T/);
      expect(frozen.stdout).toMatch(/last run: .*; window end .* held back by an open transaction/);
      const json = await highwater(['--config', file, '--json', 'status']);
      const doc = JSON.parse(json.stdout) as { sources: { database: string; holdsBack: string[]; oldestOpenTransaction: { ageSeconds: number } }[] };
      expect(doc.sources[0]).toMatchObject({ database: 'db', holdsBack: ['T'] });
      expect(doc.sources[0]!.oldestOpenTransaction.ageSeconds).toBeGreaterThanOrEqual(1);

      // The metric a long-running poller exposes: the same poller, in process, with the metrics catalogue listening.
      const metrics = new Metrics({ processMetrics: false });
      const rt = new Runtime(parseConfigObject(config, 'test'), createLogger({ level: 'silent' }));
      try {
        const summary = await (await rt.poller({ listeners: [metrics.pollerListener()] })).run({ requestedBy: 'test' });
        expect(summary.status).toBe('completed');
      } finally {
        await rt.close();
      }
      const text = await metrics.registry.metrics();
      expect(Number(/^highwater_window_held_back_seconds\{table="T",scope="\*"\} (\S+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(Number(/^highwater_oldest_open_transaction_age_seconds\{table="T",scope="\*"\} (\S+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
    } finally {
      await idle.query('ROLLBACK').catch(() => undefined);
      await idle.end();
    }
  });
});

describe('resume waits for a killed poller\'s lease (issue 10, item 10)', () => {
  it('--no-wait fails at once naming the holder; without it, a countdown on stderr, then the run completes', async () => {
    const { db, file } = await setUp('resume wait');
    await addRow(db, { id: '00000000-0000-0000-0000-000000000001', path: '/1/', modifiedOn: ago(10), bytes: 10 });
    // What a poller killed mid-run leaves: a run that never finished and a lease that is live for a few seconds more.
    const store = new ControlStore(db.pool(), 'highwater_control');
    const runId = await store.createRun({ kind: 'poll', requestedBy: 'test', options: { tables: ['T'] } });
    const lease = await store.acquireLease('T', '*', '', 'killed-host:4242:deadbeef', 5);
    expect(lease.acquired).toBe(true);

    const noWait = await highwater(['--config', file, 'resume', runId, '--no-wait']);
    expect(noWait.code).toBe(1);
    expect(noWait.stderr).toMatch(/the run's tables are leased \(--no-wait given\): T \[\*\] by killed-host:4242:deadbeef for \d+ s more/);

    const resumed = await highwater(['--config', file, '--json', 'resume', runId]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/waiting for the lease of T \[\*\] \(held by killed-host:4242:deadbeef, a poller that may have died\) to expire: \d+ s left/);
    expect(resumed.stderr).toContain('the leases expired; resuming');
    expect(JSON.parse(resumed.stdout)).toMatchObject({ runId, status: 'completed' });
  });

  it('a holder that keeps renewing its lease is alive: resume says so instead of waiting for ever', async () => {
    const { db, file } = await setUp('resume alive');
    const store = new ControlStore(db.pool(), 'highwater_control');
    const runId = await store.createRun({ kind: 'poll', requestedBy: 'test', options: { tables: ['T'] } });
    await store.acquireLease('T', '*', '', 'live-host:1:cafe', 4);
    const renewing = setInterval(() => void store.renewLease('T', '*', 'live-host:1:cafe', 4).catch(() => undefined), 500);
    try {
      const child = spawn(process.execPath, [BIN, '--config', file, 'resume', runId], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code).toBe(1);
      expect(stderr).toMatch(/another poller is alive and renewing its lease .*: T \[\*\] by live-host:1:cafe/);
    } finally {
      clearInterval(renewing);
    }
  });
});
