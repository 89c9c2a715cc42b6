/**
 * Dead letters through the CLI: poison published to a real table topic is dead-lettered by the running consumers,
 * `dlq list` shows it with its reason, and `dlq replay` puts it back on the table topic, where it is tried again.
 * The test owns its database, topics and group ids; they are dropped only when it passed.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { main } from '../../src/cli/main.js';
import { parseConfigObject } from '../../src/config/load.js';
import { HEADERS, type BlobChange } from '../../src/contract.js';
import { changeRecord } from '../../src/events/records.js';
import { createLogger } from '../../src/logger.js';
import { Runtime, type RunningConsumers } from '../../src/wiring.js';
import { brokers, deleteTopicsWhenPassed, uniqueName } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

const TABLE = 'ReferralAttachment';
const SCHEMA = 'replica';
const TARGET_TABLE = `${SCHEMA}.${targetTableName(TABLE)}`;

interface DeadLetterView {
  at: string;
  key: string;
  errorKind: string;
  reason: string;
  originalTopic: string;
  originalPartition: number;
  originalOffset: string;
  failedAt: string;
}

function change(name: string, content: Buffer): BlobChange {
  const key = randomUUID();
  const modifiedOn = BigInt(Date.now()) * 10_000n;
  return {
    table: TABLE, tenant: '', key, name, pathLocator: `/${key}/`, parentPathLocator: null, isDirectory: false,
    size: content.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null,
    content: { kind: 'inline', bytes: content }, contentSha256: createHash('sha256').update(content).digest(),
    runId: 'dlq-test', window: { start: 0n, end: modifiedOn },
  };
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * pg's Pool.end() resolves before its sockets have closed; the database drop (WITH FORCE) that follows a passed test
 * would then kill connections that no longer have an error listener. Wait until ours are gone.
 */
async function untilOtherConnectionsClose(pool: pg.Pool, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const sql = 'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()';
  while ((await pool.query<{ n: number }>(sql)).rows[0]!.n > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

describe('dlq list and dlq replay', () => {
  it('lists poison with its reason, and a replayed dead letter is tried again once the cause is fixed', async () => {
    const db = await createTestDatabase('dlq');
    dropWhenPassed(db);
    const topic = uniqueName('dlq', 'referrals');
    deleteTopicsWhenPassed([topic, `${topic}.retry`, `${topic}.dlq`]);
    const raw = {
      controlStore: { database: 'target', schema: 'highwater_control' },
      kafka: { brokers: brokers(), partitions: 3, clientId: uniqueName('dlq', 'client') },
      // The table needs a source to be valid configuration; this test publishes by hand and never polls it.
      databases: [{ name: 'target', kind: 'postgres', connectionString: db.url }],
      tables: [{ name: TABLE, source: 'target', topic, blob: { table: 'unused' }, metadata: { table: 'unused', joinColumn: 'id' } }],
      targets: [{ name: 'warehouse', database: 'target', schema: SCHEMA, groupId: uniqueName('dlq', 'group') }],
      log: { level: 'error' },
    };
    const configFile = join(await mkdtemp(join(tmpdir(), 'hw-dlq-')), 'highwater.json');
    await writeFile(configFile, JSON.stringify(raw));
    const config = parseConfigObject(raw, configFile);
    const rt = new Runtime(config, createLogger({ level: 'error' }));
    const sql = db.pool();

    const cli = async (args: string[]): Promise<{ code: number; stdout: string }> => {
      const out: string[] = [];
      const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
        out.push(String(chunk));
        return true;
      });
      try {
        const code = await main(['node', 'highwater', '--config', configFile, '--log-level', 'error', ...args]);
        return { code, stdout: out.join('') };
      } finally {
        spy.mockRestore();
      }
    };
    const list = async (): Promise<{ total: number; deadLetters: DeadLetterView[] }> => {
      const { code, stdout } = await cli(['dlq', 'list', '--table', TABLE, '--json']);
      expect(code).toBe(0);
      return JSON.parse(stdout) as { total: number; deadLetters: DeadLetterView[] };
    };
    const held = async (key: string): Promise<boolean> => (await sql.query(`SELECT 1 FROM ${TARGET_TABLE} WHERE key = $1`, [key])).rowCount === 1;

    let consumers: RunningConsumers | undefined;
    try {
      expect(await list()).toEqual({ topic: `${topic}.dlq`, total: 0, deadLetters: [] });
      consumers = await rt.startConsumers(config.targets[0]!);
      // The target refuses rows named poison.bin: a constraint error, which the consumer dead-letters.
      await sql.query(`ALTER TABLE ${TARGET_TABLE} ADD CONSTRAINT no_poison CHECK (name <> 'poison.bin')`);
      const good = change('good.bin', Buffer.from('fine'));
      const refused = change('poison.bin', Buffer.from('refused by the target'));
      const publisher = await rt.publisher();
      await publisher.send(topic, [
        await changeRecord(rt.codec, good),
        await changeRecord(rt.codec, refused),
        { key: 'garbage', value: Buffer.from('not an avro value'), headers: { [HEADERS.kind]: 'change', [HEADERS.table]: TABLE } },
      ]);

      const first = await eventually('two dead letters', async () => {
        const l = await list();
        return l.total === 2 ? l : undefined;
      });
      expect(await held(good.key)).toBe(true);
      const byKey = new Map(first.deadLetters.map((d) => [d.key, d]));
      const constraint = byKey.get(refused.key)!;
      expect(constraint).toMatchObject({ errorKind: 'poison', originalTopic: topic });
      expect(constraint.reason).toContain('no_poison');
      expect(constraint.at).toMatch(/^\d+:\d+$/);
      expect(Date.parse(constraint.failedAt)).not.toBeNaN();
      const garbage = byKey.get('garbage')!;
      expect(garbage).toMatchObject({ errorKind: 'poison', originalTopic: topic });
      expect(garbage.reason).toMatch(/neither Avro single-object nor Confluent/);
      expect(await held(refused.key)).toBe(false);

      // Replay one dead letter after fixing its cause: it is applied this time.
      await sql.query(`ALTER TABLE ${TARGET_TABLE} DROP CONSTRAINT no_poison`);
      const replay = await cli(['dlq', 'replay', '--table', TABLE, '--offset', constraint.at, '--json']);
      expect(replay.code).toBe(0);
      expect(JSON.parse(replay.stdout)).toMatchObject({ to: topic, replayed: 1, deadLetters: [constraint.at] });
      await eventually('the replayed row in the target', async () => ((await held(refused.key)) ? true : undefined));

      // Replaying everything tries the garbage again: still poison, so it is dead-lettered once more.
      const all = await cli(['dlq', 'replay', '--table', TABLE]);
      expect(all.code).toBe(0);
      expect(all.stdout).toContain('replayed 2 dead letter(s)');
      const again = await eventually('the garbage dead-lettered again', async () => {
        const l = await list();
        return l.total === 3 ? l : undefined;
      });
      const garbageLetters = again.deadLetters.filter((d) => d.key === 'garbage');
      expect(garbageLetters).toHaveLength(2);
      expect(garbageLetters.every((d) => d.originalTopic === topic)).toBe(true);
      // The row applied on the first replay is unchanged by the second (same version: nothing to write).
      expect(await held(refused.key)).toBe(true);
      expect((await cli(['dlq', 'replay', '--table', TABLE, '--offset', '999999'])).code).toBe(2);
    } finally {
      await consumers?.stop();
      await rt.close();
      await untilOtherConnectionsClose(sql);
    }
  });
});
