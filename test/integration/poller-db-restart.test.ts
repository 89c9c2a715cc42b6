/**
 * Regression (found by the fault matrix, R5 with the database stopped for 5 s): `highwater poll --every` exited when
 * a poll could not create its run because the control store's database was shutting down, so a database restart
 * stopped replication until someone restarted the poller. It now logs the failed poll and tries again at the next
 * interval. The database is a private cluster the test stops and starts, never the shared server.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { SOURCE_DDL, createBusinessUnits } from '../../src/dev/demo/sample.js';
import { brokers, uniqueName } from '../support/kafka.js';
import { startPgCluster } from '../support/pg-cluster.js';

const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

async function completedRuns(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM hw_control.runs WHERE status = 'completed'`);
    return rows[0]!.n;
  } catch {
    return -1;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function until(what: string, probe: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

describe('poll --every across a database restart', () => {
  it('keeps running while its database is down and polls again once it is back', async () => {
    const cluster = await startPgCluster();
    onTestFinished(() => cluster.destroy());
    const setup = new pg.Pool({ connectionString: cluster.url() });
    setup.on('error', () => undefined);
    await setup.query(SOURCE_DDL);
    await createBusinessUnits(setup, 1);
    await setup.end();
    const dir = await mkdtemp(join(tmpdir(), 'hw-poller-restart-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const config = join(dir, 'highwater.yaml');
    await writeFile(config, JSON.stringify({
      controlStore: { database: 'db', schema: 'hw_control' },
      kafka: { brokers: brokers(), partitions: 1, clientId: uniqueName('poller restart', 'client') },
      databases: [{ name: 'db', kind: 'postgres', connectionString: cluster.url() }],
      tables: [{ name: 'RestartTable', source: 'db', topic: uniqueName('poller restart', 'topic'), safetyBufferMinutes: 0,
        blob: { schema: 'demo', table: 'ReferralAttachment' }, metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' } }],
      poll: { intervalSeconds: 1, leaseSeconds: 10 },
      log: { level: 'warn' },
    }));
    let output = '';
    const child = spawn(process.execPath, [BIN, '--config', config, 'poll', '--every'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    onTestFinished(async () => {
      child.kill('SIGKILL');
      await exited;
    });

    await until('two completed polls', async () => (await completedRuns(cluster.url())) >= 2, 120_000);
    await cluster.stop();
    await sleep(4000);
    await cluster.start();
    const before = await completedRuns(cluster.url());
    await until('a poll after the restart', async () => child.exitCode !== null || (await completedRuns(cluster.url())) > before, 120_000);
    expect(child.exitCode, output.slice(-3000)).toBeNull();
  });
});
