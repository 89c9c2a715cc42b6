import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The CLI as a script sees it: a real child process, its exit code and its output.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

async function highwater(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('highwater CLI', () => {
  it('prints help listing every subcommand and the exit codes', async () => {
    const { code, stdout } = await highwater(['--help']);
    expect(code).toBe(0);
    for (const cmd of ['init', 'poll', 'consume', 'run', 'status', 'runs', 'resume', 'reset', 'demo']) expect(stdout).toContain(cmd);
    expect(stdout).toMatch(/Exit codes:[\s\S]*2 +usage or configuration error/);
  });

  it('exits 2 for an unknown command', async () => {
    expect((await highwater(['frobnicate'])).code).toBe(2);
  });

  it('exits 2 and names each bad field for a wrong configuration', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hw-cli-'));
    const file = join(dir, 'bad.yaml');
    await writeFile(file, [
      'controlStore: { database: ctl }',
      'databases:',
      '  - { name: ctl, kind: postgres, connectionString: "postgres://u:topsecret@127.0.0.1/x" }',
      'tables:',
      '  - name: T',
      '    source: nowhere',
      '    batchSize: -1',
      '    blob: { table: B }',
      '    metadata: { table: M, joinColumn: id }',
    ].join('\n'));
    const { code, stderr } = await highwater(['--config', file, 'status']);
    expect(code).toBe(2);
    expect(stderr).toContain('tables.0.source');
    expect(stderr).toContain('tables.0.batchSize');
    expect(stderr).not.toContain('topsecret');
  });

  it('exits 2 when the configuration file is missing', async () => {
    const { code, stderr } = await highwater(['--config', '/nonexistent/highwater.yaml', 'poll']);
    expect(code).toBe(2);
    expect(stderr).toContain('cannot read the file');
  });
});

describe('highwater CLI against real services', () => {
  it('init, status and runs: normal paths exit 0, an unknown run id exits 2', async () => {
    const { createTestDatabase, dropWhenPassed } = await import('../support/pg.js');
    const { brokers, uniqueName } = await import('../support/kafka.js');
    const { stringify } = await import('yaml');
    const db = await createTestDatabase('cli status');
    dropWhenPassed(db);
    await db.pool().query(`CREATE SCHEMA demo; CREATE TABLE demo.blob (stream_id uuid PRIMARY KEY, file_stream bytea, name text, path_locator text, parent_path_locator text, is_directory boolean, creation_time timestamptz, last_write_time timestamptz);
      CREATE TABLE demo.meta (id uuid PRIMARY KEY, "ModifiedOn" timestamptz NOT NULL)`);
    const dir = await mkdtemp(join(tmpdir(), 'hw-cli-'));
    const file = join(dir, 'highwater.yaml');
    await writeFile(file, stringify({
      controlStore: { database: 'db' },
      kafka: { brokers: brokers(), partitions: 1 },
      databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
      tables: [{ name: 'Blobs', source: 'db', topic: uniqueName('cli status', 'topic'), blob: { schema: 'demo', table: 'blob' }, metadata: { schema: 'demo', table: 'meta', joinColumn: 'id' } }],
      targets: [{ name: 'wh', database: 'db', schema: 'replica', groupId: uniqueName('cli status', 'group') }],
      log: { level: 'error' },
    }));
    const init = await highwater(['--config', file, '--json', 'init']);
    expect(init.code, init.stderr).toBe(0);
    expect(JSON.parse(init.stdout).targets).toEqual(['wh']);

    const poll = await highwater(['--config', file, '--json', 'poll']);
    expect(poll.code, poll.stderr).toBe(0);
    const { runId } = JSON.parse(poll.stdout) as { runId: string };

    const status = await highwater(['--config', file, '--json', 'status']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).tables).toEqual([expect.objectContaining({ table: 'Blobs', scope: '*', lastRunId: runId, lastRunStatus: 'completed' })]);

    const runs = await highwater(['--config', file, '--json', 'runs']);
    expect(runs.code).toBe(0);
    expect(JSON.parse(runs.stdout)).toEqual([expect.objectContaining({ runId, status: 'completed', kind: 'poll' })]);
    const one = await highwater(['--config', file, '--json', 'runs', runId]);
    expect(JSON.parse(one.stdout).tables).toEqual([expect.objectContaining({ table: 'Blobs', status: 'completed' })]);

    const unknown = await highwater(['--config', file, 'runs', '00000000-0000-4000-8000-000000000000']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/not found|no run/i);
    const resumeUnknown = await highwater(['--config', file, 'resume', 'not-a-run']);
    expect(resumeUnknown.code).toBe(2);
  });
});

describe('highwater run and reset', () => {
  it('`run` polls and applies in one process until SIGTERM; `reset` + `resume` republishes a run from its window start', async () => {
    const { spawn } = await import('node:child_process');
    const { createTestDatabase, dropWhenPassed } = await import('../support/pg.js');
    const { brokers, uniqueName } = await import('../support/kafka.js');
    const { stringify } = await import('yaml');
    const { buildSample, createBusinessUnits, insertRows, SOURCE_DDL } = await import('../../src/dev/demo/sample.js');
    const db = await createTestDatabase('cli run');
    dropWhenPassed(db);
    const pool = db.pool();
    await pool.query(SOURCE_DDL);
    await insertRows(pool, buildSample({ roots: 2, foldersPerRoot: 2, files: 50, largeFiles: 0 }, await createBusinessUnits(pool, 1)));
    const file = join(await mkdtemp(join(tmpdir(), 'hw-cli-')), 'highwater.yaml');
    await writeFile(file, stringify({
      controlStore: { database: 'db' },
      kafka: { brokers: brokers(), partitions: 1 },
      databases: [{ name: 'db', kind: 'postgres', connectionString: db.url }],
      tables: [{ name: 'ReferralAttachment', source: 'db', topic: uniqueName('cli run', 'topic'), safetyBufferMinutes: 0, blob: { schema: 'demo', table: 'ReferralAttachment' }, metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' } }],
      targets: [{ name: 'wh', database: 'db', schema: 'replica', groupId: uniqueName('cli run', 'group') }],
      poll: { intervalSeconds: 1 },
      log: { level: 'error' },
    }));
    const count = async (sql: string) => Number((await pool.query<{ n: string }>(sql)).rows[0]!.n);

    const run = spawn(process.execPath, [BIN, '--config', file, 'run'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => run.on('exit', resolve));
    try {
      const deadline = Date.now() + 90_000;
      while ((await count('SELECT count(*) AS n FROM replica.referralattachment').catch(() => 0)) < 56 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      expect(await count('SELECT count(*) AS n FROM replica.referralattachment')).toBe(56);
    } finally {
      run.kill('SIGTERM');
    }
    expect(await exited).toBe(0);

    const { rows: [first] } = await pool.query<{ run_id: string; rows: string }>(`SELECT run_id, rows_published::text AS rows FROM highwater_control.run_tables ORDER BY started_at LIMIT 1`);
    expect(Number(first!.rows)).toBe(56);
    const reset = await highwater(['--config', file, 'reset', first!.run_id]);
    expect(reset.code, reset.stderr).toBe(0);
    expect(await count(`SELECT count(*) AS n FROM highwater_control.run_batches WHERE run_id = '${first!.run_id}'`)).toBe(0);
    // Reset forgets the run's progress and window; resume plans a window again from the table's high-watermark
    // (for a failed run that is the window it had), runs it to completion, and the target keeps what it holds.
    const resume = await highwater(['--config', file, '--json', 'resume', first!.run_id]);
    expect(resume.code, resume.stderr).toBe(0);
    expect(JSON.parse(resume.stdout).status).toBe('completed');
    expect(await count(`SELECT count(*) AS n FROM highwater_control.run_tables WHERE run_id = '${first!.run_id}' AND status = 'completed'`)).toBe(1);
    expect(await count('SELECT count(*) AS n FROM replica.referralattachment')).toBe(56);
  });
});
