import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { Metrics } from '../../src/metrics/catalog.js';
import { startMetricsServer } from '../../src/metrics/server.js';
import { kafkaClient } from '../support/kafka.js';

const SERIES = [
  'highwater_rows_published_total', 'highwater_bytes_published_total', 'highwater_batches_published_total',
  'highwater_rows_skipped_unchanged_total', 'highwater_rows_applied_total', 'highwater_rows_skipped_stale_total',
  'highwater_retries_total', 'highwater_dead_letters_total', 'highwater_backfill_requests_total',
  'highwater_consumer_lag_records', 'highwater_high_watermark_seconds', 'highwater_high_watermark_advanced_at_seconds',
  'highwater_lease_held', 'highwater_last_run_failed', 'highwater_apply_batch_seconds', 'highwater_process_cpu_user_seconds_total',
];

describe('metrics and health endpoint', () => {
  it('exposes every listed series, fed by the poller and apply events', async () => {
    const metrics = new Metrics();
    const listener = metrics.pollerListener();
    listener.batchPublished?.({ table: 'T', step: 'roots', batchNo: 1, rows: 10, bytes: 2048, skipped: 3 });
    listener.windowCompleted?.({ table: 'T', scope: '*', windowEnd: 17_637_000_000_000_000n });
    metrics.onApplied({ table: 'T', target: 'wh', result: { applied: 9, skippedStale: 1, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 }, deadLettered: 2, retried: 1, duplicates: 1, seconds: 0.2 });
    metrics.lag.set({ group: 'g', topic: 't', partition: '0' }, 5);
    metrics.leaseHeld.set({ table: 'T', scope: '*' }, 1);
    metrics.backfillRequests.inc({ table: 'T', target: 'wh' });
    const server = await startMetricsServer(metrics, 0);
    try {
      const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      for (const name of SERIES) expect(text, name).toContain(name);
      expect(text).toMatch(/highwater_rows_published_total\{table="T"\} 10/);
      expect(text).toMatch(/highwater_dead_letters_total\{table="T",target="wh"\} 2/);
      expect(text).toMatch(/highwater_high_watermark_seconds\{table="T",scope="\*"\} 1763700000/);
      expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('/healthz answers 503 naming a loop that made no progress within its limit', async () => {
    const { Liveness } = await import('../../src/metrics/liveness.js');
    let now = 0;
    const liveness = new Liveness(() => now);
    liveness.expect('poller', 60_000);
    const metrics = new Metrics({ processMetrics: false });
    const server = await startMetricsServer(metrics, 0, {}, liveness);
    try {
      expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
      now = 61_000;
      const stuck = await fetch(`http://127.0.0.1:${server.port}/healthz`);
      expect(stuck.status).toBe(503);
      expect(await stuck.text()).toContain('stale: poller made no progress for 61 s (limit 60 s)');
      expect(await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text()).toMatch(/highwater_loop_stale\{loop="poller"\} 1/);
    } finally {
      await server.close();
    }
  });

  it('is ready only when Kafka and the databases answer', async () => {
    const admin = kafkaClient('hw-readyz').admin();
    await admin.connect();
    const pool = new pg.Pool({ connectionString: inject('pgUrl'), max: 1 });
    const good = { kafka: async () => void (await admin.describeCluster()), target: async () => void (await pool.query('SELECT 1')) };
    const server = await startMetricsServer(new Metrics({ processMetrics: false }), 0, good);
    const bad = await startMetricsServer(new Metrics({ processMetrics: false }), 0, { ...good, source: async () => void (await new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/x', connectionTimeoutMillis: 500 }).query('SELECT 1')) });
    try {
      const ok = await fetch(`http://127.0.0.1:${server.port}/readyz`);
      expect(ok.status).toBe(200);
      const failing = await fetch(`http://127.0.0.1:${bad.port}/readyz`);
      expect(failing.status).toBe(503);
      const body = (await failing.json()) as { checks: { name: string; ok: boolean }[] };
      expect(body.checks.find((c) => c.name === 'source')?.ok).toBe(false);
      expect(body.checks.find((c) => c.name === 'kafka')?.ok).toBe(true);
    } finally {
      await Promise.all([server.close(), bad.close(), admin.disconnect(), pool.end()]);
    }
  });
});

describe('metrics of a running consumer', () => {
  it('serves applied rows, lag and readiness from a real `highwater consume` process', async () => {
    const { spawn } = await import('node:child_process');
    const { mkdtemp, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { stringify } = await import('yaml');
    const { createTestDatabase, dropWhenPassed } = await import('../support/pg.js');
    const { brokers, uniqueName } = await import('../support/kafka.js');
    const { buildSample, createBusinessUnits, insertRows, SOURCE_DDL } = await import('../../src/dev/demo/sample.js');
    const { freePort } = await import('../../src/dev/kafka/ports.js');

    const db = await createTestDatabase('metrics consume');
    dropWhenPassed(db);
    const pool = db.pool();
    await pool.query(SOURCE_DDL);
    await insertRows(pool, buildSample({ roots: 2, foldersPerRoot: 2, files: 200, largeFiles: 0 }, await createBusinessUnits(pool, 1)));
    const port = await freePort();
    const topic = uniqueName('metrics consume', 'topic');
    const groupId = uniqueName('metrics consume', 'group');
    const file = join(await mkdtemp(join(tmpdir(), 'hw-metrics-')), 'highwater.yaml');
    await writeFile(file, stringify({
      controlStore: { database: 'db' },
      kafka: { brokers: brokers(), partitions: 2 },
      databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
      tables: [{ name: 'ReferralAttachment', source: 'db', topic, safetyBufferMinutes: 0, blob: { schema: 'demo', table: 'ReferralAttachment' }, metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' } }],
      targets: [{ name: 'wh', database: 'db', schema: 'replica', groupId }],
      metrics: { port },
      log: { level: 'warn' },
    }));
    const bin = new URL('../../src/cli/bin.js', import.meta.url).pathname;
    const runCli = (args: string[]) => spawn(process.execPath, [bin, '--config', file, ...args], { stdio: 'ignore' });
    const poll = runCli(['poll']);
    expect(await new Promise((r) => poll.on('exit', r))).toBe(0);
    const consume = runCli(['consume']);
    try {
      const deadline = Date.now() + 90_000;
      let text = '';
      while (Date.now() < deadline) {
        text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => '');
        if (/highwater_rows_applied_total\{table="ReferralAttachment",target="wh"\} 206\b/.test(text) && /highwater_consumer_lag_records\{[^}]*\} 0/.test(text) && /highwater_consistent_as_of_seconds\{/.test(text)) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(text).toMatch(/highwater_rows_applied_total\{table="ReferralAttachment",target="wh"\} 206\b/);
      expect(text).toMatch(/highwater_apply_batch_seconds_count\{table="ReferralAttachment",target="wh"\} [1-9]/);
      // Issue 10: consistent_as_of is set from the markers the target applied; the retry group's lag is sampled;
      // build_info names the role.
      expect(text).toMatch(/highwater_consistent_as_of_seconds\{target="wh",table="ReferralAttachment",scope="\*"\} 1\d{9}/);
      expect(text).toMatch(new RegExp(`highwater_consumer_lag_records\\{group="${groupId}\\.retry",topic="${topic}\\.retry",partition="0"\\} 0`));
      expect(text).toMatch(/highwater_build_info\{version="\d+\.\d+\.\d+",node="v\d+[^"]*",role="consume"\} 1/);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      // A second role on the same host and port fails at once, naming the port and the ways to pick another.
      const second = spawn(process.execPath, [bin, '--config', file, 'poll', '--every'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      second.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      expect(await new Promise((r) => second.on('exit', r))).toBe(2);
      expect(stderr).toContain(`metrics port ${port} is already in use`);
      expect(stderr).toContain('--metrics-port');
    } finally {
      consume.kill('SIGTERM');
      expect(await new Promise((r) => consume.on('exit', r))).toBe(0);
    }
  });
});
