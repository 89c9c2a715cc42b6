import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

// The operator's first week (issue 10), as a script sees the CLI: a real child process, its exit code, its stdout
// and its stderr. Tests here need no broker or database unless they say so.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

export async function highwater(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 120_000, env: { ...process.env, ...options.env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function configFile(label: string, config: Record<string, unknown>): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), `hw-${label}-`)), 'highwater.yaml');
  await writeFile(file, stringify(config));
  return file;
}

const base = {
  controlStore: { database: 'db' },
  databases: [{ name: 'db', kind: 'postgres', connectionString: 'postgres://postgres:topsecret@127.0.0.1:1/none' }],
  tables: [{ name: 'T', source: 'db', blob: { schema: 'demo', table: 'B' }, metadata: { schema: 'demo', table: 'M', joinColumn: 'id' } }],
};

/** The demo's sample source (src/dev/demo/sample.ts) as one table of a configuration, on one database and broker. */
function sampleConfig(url: string, brokers: string[], topic: string, groupId: string): Record<string, unknown> {
  return {
    controlStore: { database: 'db' },
    kafka: { brokers, partitions: 1 },
    databases: [{ name: 'db', kind: 'postgres', connectionString: url }],
    tables: [{
      name: 'ReferralAttachment', source: 'db', topic, safetyBufferMinutes: 0,
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
    }],
    targets: [{ name: 'wh', database: 'db', schema: 'replica', groupId }],
  };
}

describe('strict configuration (issue 10, item 1)', () => {
  it('rejects a misspelled key by name with a suggestion, exit 2, before connecting anywhere', async () => {
    const file = await configFile('typo', { ...base, tables: [{ ...base.tables[0], safetyBuferMinutes: 5 }] });
    const { code, stdout, stderr } = await highwater(['--config', file, 'init']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain('tables.0.safetyBuferMinutes: unknown option "safetyBuferMinutes"; did you mean "safetyBufferMinutes"?');
  });

  it('rejects an SQL Server connection string on a postgres database at validation, without printing it', async () => {
    const file = await configFile('engine', { ...base, databases: [{ name: 'db', kind: 'postgres', connectionString: 'Server=127.0.0.1,1433;Database=x;User Id=sa;Password=Secret1!;' }] });
    const { code, stderr } = await highwater(['--config', file, 'status']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/databases\.0\.connectionString: looks like an SQL Server connection string, but the database's kind is postgres/);
    expect(stderr).not.toContain('Secret1');
  });
});

function expectOneLineAndHint(stderr: string): void {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(2);
  expect(lines[0]).toMatch(/^highwater: /);
  expect(lines[1]).toMatch(/^ {2}hint: /);
  expect(stderr).not.toMatch(/^\s+at /m);
}

describe('one clear line per failure (issue 10, item 3)', () => {
  it('--version prints the package version', async () => {
    const { code, stdout } = await highwater(['--version']);
    expect(code).toBe(0);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('no command is a usage error, exit 2', async () => {
    const { code, stdout, stderr } = await highwater([]);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain('a command is required');
  });

  it('`runs --limit abc` is a usage error naming the option, before any database is read', async () => {
    const file = await configFile('limit', base);
    const { code, stderr } = await highwater(['--config', file, 'runs', '--limit', 'abc']);
    expect(code).toBe(2);
    expect(stderr).toContain("option '--limit <n>' argument 'abc' is invalid");
    expect(stderr).not.toMatch(/relation|ECONNREFUSED/);
  });

  it('an unreachable broker is one line naming Kafka, the brokers tried and the setting, after kafka.startupTimeoutMs', async () => {
    const file = await configFile('nobroker', { ...base, kafka: { brokers: ['127.0.0.1:1'], startupTimeoutMs: 2000 } });
    const { code, stdout, stderr } = await highwater(['--config', file, 'dlq', 'list', '--table', 'T']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expectOneLineAndHint(stderr);
    expect(stderr).toContain('Kafka: no broker answered within 2 s (kafka.startupTimeoutMs); tried 127.0.0.1:1 (kafka.brokers');
  });

  it('`highwater --help | head -c 1` exits quietly when the reader goes away (no EPIPE stack)', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [BIN, 'reconcile', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the first byte is written
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(stderr).not.toContain('EPIPE');
    expect(code).toBe(0);
  });
});

describe('failures with their own hints, against real services (issue 10, item 3)', () => {
  it('authentication failure, missing database and SASL mismatch each get their own hint', async () => {
    const { brokers } = await import('../support/kafka.js');
    const { inject } = await import('vitest');
    const pgUrl = new URL(inject('pgUrl'));
    const nobody = new URL(pgUrl);
    nobody.username = 'hw_no_such_role';
    nobody.password = 'pw';
    const auth = await highwater(['--config', await configFile('auth', { ...base, databases: [{ name: 'db', kind: 'postgres', connectionString: nobody.href }] }), 'status']);
    expect(auth.code).toBe(1);
    expectOneLineAndHint(auth.stderr);
    expect(auth.stderr).toMatch(/hint: the database refused the login/);
    expect(auth.stderr).not.toContain(':pw@');

    const missingDb = new URL(pgUrl);
    missingDb.pathname = '/hw_cli_no_such_database';
    const db = await highwater(['--config', await configFile('nodb', { ...base, databases: [{ name: 'db', kind: 'postgres', connectionString: missingDb.href }] }), 'status']);
    expect(db.code).toBe(1);
    expectOneLineAndHint(db.stderr);
    expect(db.stderr).toMatch(/hint: the database named in the connection string does not exist/);

    // The test broker has a plain listener: a configured SASL login is a mismatch, reported at once.
    const sasl = await highwater(['--config', await configFile('sasl', { ...base, kafka: { brokers: brokers(), sasl: { mechanism: 'plain', username: 'u', password: 'p' } } }), 'dlq', 'list', '--table', 'T']);
    expect(sasl.code).toBe(1);
    expectOneLineAndHint(sasl.stderr);
    expect(sasl.stderr).toContain('does not take a SASL login on this listener, but kafka.sasl is set');
    expect(sasl.stderr).toMatch(/hint: the broker refused the SASL login/);
  });
});

describe('preflight, init, status and pure JSON against real services (issue 10, items 2 and 4)', () => {
  it('check reports every problem at once; init changes nothing when it fails; status before init says run init; --json stdout is one document', async () => {
    const { createTestDatabase, dropWhenPassed } = await import('../support/pg.js');
    const { brokers, uniqueName } = await import('../support/kafka.js');
    const { Kafka, logLevel } = await import('kafkajs');
    const { SOURCE_DDL } = await import('../../src/dev/demo/sample.js');
    const db = await createTestDatabase('cli preflight');
    dropWhenPassed(db);
    const pool = db.pool();
    await pool.query(SOURCE_DDL);
    // Two problems in one source: the BU table is missing, and ModifiedOn has a type the poller cannot read.
    await pool.query(`DROP TABLE demo."LA_BU"; ALTER TABLE demo."cw_referralattachmentBase" ALTER COLUMN "ModifiedOn" TYPE text`);
    const topic = uniqueName('cli preflight', 'topic');
    const file = await configFile('preflight', { ...sampleConfig(db.url, brokers(), topic, uniqueName('cli preflight', 'group')), log: { level: 'info' } });

    const check = await highwater(['--config', file, '--json', 'check']);
    expect(check.code, check.stderr).toBe(1);
    const report = JSON.parse(check.stdout) as { ok: boolean; findings: { subject: string; ok: boolean; message: string }[] };
    expect(report.ok).toBe(false);
    const table = report.findings.find((f) => f.subject === 'table ReferralAttachment')!;
    expect(table.message).toContain('table demo.LA_BU does not exist');
    expect(table.message).toContain('column demo.cw_referralattachmentBase.ModifiedOn (modifiedOnColumn) is text');
    expect(report.findings.filter((f) => f.subject !== table.subject).every((f) => f.ok)).toBe(true);

    const status = await highwater(['--config', file, 'status']);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('run highwater init');
    expect(status.stderr).not.toContain('does not exist\n'); // not the raw "relation … does not exist"

    const init = await highwater(['--config', file, 'init']);
    expect(init.code).toBe(1);
    expect(init.stderr).toContain('init changed nothing');
    expect(init.stdout).toContain('FAIL  table ReferralAttachment');
    const schemas = await pool.query(`SELECT nspname FROM pg_namespace WHERE nspname IN ('highwater_control', 'replica')`);
    expect(schemas.rows).toEqual([]);
    const admin = new Kafka({ brokers: brokers(), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      expect((await admin.listTopics()).filter((t) => t.startsWith(topic))).toEqual([]);
    } finally {
      await admin.disconnect();
    }

    // Fixed source: init passes, and every --json command prints exactly one document while the logs go to stderr.
    await pool.query(`CREATE TABLE demo."LA_BU" ("BusinessUnitId" uuid PRIMARY KEY, name text NOT NULL); ALTER TABLE demo."cw_referralattachmentBase" ALTER COLUMN "ModifiedOn" TYPE timestamptz USING "ModifiedOn"::timestamptz`);
    for (const args of [['init'], ['poll'], ['status'], ['runs']]) {
      const r = await highwater(['--config', file, '--json', '--log-level', 'info', ...args]);
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(0);
      expect(() => JSON.parse(r.stdout), `${args[0]} stdout: ${r.stdout}`).not.toThrow();
      if (args[0] === 'poll') expect(r.stderr).toContain('window planned');
      const times = r.stdout.match(/"\d{4}-\d\d-\d\dT[^"]*"/g) ?? [];
      for (const t of times) expect(t, `${args[0]}`).toMatch(/^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"$/);
      if (args[0] === 'status') expect(JSON.parse(r.stdout).tables[0].highWater).toMatch(/\.\d{7}Z$/);
    }
  }, 400_000); // nine child processes, each paying tsx start-up: on a loaded two-core machine that is minutes
});

describe('topics created by hand (init leaves existing topics as they are)', () => {
  it('check names a table topic that is not compacted and whose segments are smaller than a record batch; init refuses it', async () => {
    const { createTestDatabase, dropWhenPassed } = await import('../support/pg.js');
    const { brokers, createTopic, uniqueName } = await import('../support/kafka.js');
    const { SOURCE_DDL } = await import('../../src/dev/demo/sample.js');
    const db = await createTestDatabase('cli topic settings');
    dropWhenPassed(db);
    await db.pool().query(SOURCE_DDL);
    const topic = uniqueName('cli topic settings', 'topic');
    // As an operator might have made it: delete policy, and 4 KiB segments (the broker refuses any larger batch).
    await createTopic(topic, 1, { 'cleanup.policy': 'delete', 'segment.bytes': '4096' });
    const file = await configFile('topic-settings', sampleConfig(db.url, brokers(), topic, uniqueName('cli topic settings', 'group')));

    const check = await highwater(['--config', file, '--json', 'check']);
    expect(check.code, check.stderr).toBe(1);
    const report = JSON.parse(check.stdout) as { findings: { subject: string; ok: boolean; message: string }[] };
    const topics = report.findings.find((f) => f.subject === 'topics of ReferralAttachment')!;
    expect(topics.ok).toBe(false);
    expect(topics.message).toContain(`${topic}: cleanup.policy is delete, not compact`);
    expect(topics.message).toContain(`${topic}: segment.bytes is 4096, below kafka.maxMessageBytes (1048576)`);
    // Only the hand-made topic is wrong: its retry and dead-letter topics do not exist yet, which is fine.
    expect(topics.message).not.toContain(`${topic}.retry`);
    expect(report.findings.filter((f) => f !== topics).every((f) => f.ok), check.stdout).toBe(true);

    const init = await highwater(['--config', file, 'init']);
    expect(init.code).toBe(1);
    expect(init.stdout).toContain('FAIL  topics of ReferralAttachment');
  }, 240_000);
});

describe('the demo (issue 10, item 9)', () => {
  it('a PostgreSQL that is down is one line naming it and HIGHWATER_DEMO_PG_URL, before any broker starts', async () => {
    const { code, stdout, stderr } = await highwater(['demo'], { env: { HIGHWATER_DEMO_PG_URL: 'postgres://postgres:pw@127.0.0.1:1/postgres', HIGHWATER_KAFKA_BROKERS: '' } });
    expect(code).toBe(1);
    expect(stdout).not.toContain('Kafka');
    expectOneLineAndHint(stderr);
    expect(stderr).toContain("the demo's PostgreSQL at postgres://postgres:[redacted]@127.0.0.1:1/postgres does not answer");
    expect(stderr).toContain('HIGHWATER_DEMO_PG_URL');
  });
});
