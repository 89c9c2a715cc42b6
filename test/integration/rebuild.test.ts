/**
 * Rebuilding a target, end to end: a PostgreSQL source with sample data (src/dev/demo/sample.ts), the poller publishing
 * to a real Kafka, consumers applying to a PostgreSQL target — then `reset-offsets` and `rebuild` run through the
 * CLI's main(). Every test owns its databases, topics and group ids; they are dropped only when it passed.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { main } from '../../src/cli/main.js';
import { backfillTopic, parseConfigObject, tenantOf } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { applyDelta, buildSample, createBusinessUnits, insertRows, SOURCE_DDL, type SampleShape } from '../../src/dev/demo/sample.js';
import { createLogger } from '../../src/logger.js';
import type { Poller } from '../../src/poll/poller.js';
import { sourceDigest } from '../../connectors/postgres/reconcile.js';
import { targetDigest } from '../../consumers/postgres/reconcile.js';
import type { Digest } from '../../src/ops/reconcile/side/contract.js';
import { quotePg } from '../../src/sql/ident.js';
import { Runtime, sourceSpec, type RunningConsumers } from '../../src/wiring.js';
import { brokers, deleteTopicsWhenPassed, uniqueName, withAdmin } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed, type TestDatabase } from '../support/pg.js';

const TABLE = 'ReferralAttachment';
const TARGET = 'warehouse';
const SCHEMA = 'replica';
const SHAPE: SampleShape = { roots: 4, foldersPerRoot: 3, files: 240, largeFiles: 1 };

interface Pipeline {
  readonly config: Config;
  readonly configFile: string;
  readonly rt: Runtime;
  readonly source: TestDatabase;
  readonly target: TestDatabase;
  readonly topic: string;
  readonly groupId: string;
  readonly bus: string[];
}

async function pipeline(name: string): Promise<Pipeline> {
  const source = await createTestDatabase(`${name} src`);
  dropWhenPassed(source);
  const target = await createTestDatabase(`${name} tgt`);
  dropWhenPassed(target);
  const topic = uniqueName(name, 'referrals');
  const groupId = uniqueName(name, 'group');
  deleteTopicsWhenPassed([topic, `${topic}.retry`, `${topic}.dlq`]);
  const raw = {
    controlStore: { database: 'target', schema: 'highwater_control' },
    kafka: { brokers: brokers(), partitions: 3, clientId: uniqueName(name, 'client') },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: source.url, tenant: 'gwent' },
      { name: 'target', kind: 'postgres', connectionString: target.url },
    ],
    tables: [{
      name: TABLE, source: 'source', topic,
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
      safetyBufferMinutes: 0,
      batchSize: 100,
    }],
    targets: [{ name: TARGET, database: 'target', schema: SCHEMA, groupId, retry: { initialDelayMs: 300, maxDelayMs: 2000, maxAttempts: 8, backfillAfterAttempts: 2 } }],
    log: { level: 'error' },
  };
  const configFile = join(await mkdtemp(join(tmpdir(), 'hw-rebuild-')), 'highwater.json');
  await writeFile(configFile, JSON.stringify(raw));
  const config = parseConfigObject(raw, configFile);
  const rt = new Runtime(config, createLogger({ level: 'error' }));
  await source.pool().query(SOURCE_DDL);
  const bus = await createBusinessUnits(source.pool(), 3);
  await insertRows(source.pool(), buildSample(SHAPE, bus));
  await rt.store().migrate();
  return { config, configFile, rt, source, target, topic, groupId, bus };
}

/** Runs the CLI in this process; stdout is captured, and the signal handlers a command installs are removed after. */
async function cli(p: Pipeline, args: string[]): Promise<{ code: number; stdout: string }> {
  const out: string[] = [];
  const signals = { SIGINT: process.listeners('SIGINT'), SIGTERM: process.listeners('SIGTERM') };
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    const code = await main(['node', 'highwater', '--config', p.configFile, '--log-level', 'error', ...args]);
    return { code, stdout: out.join('') };
  } finally {
    spy.mockRestore();
    for (const name of ['SIGINT', 'SIGTERM'] as const) {
      for (const l of process.listeners(name)) if (!signals[name].includes(l)) process.removeListener(name, l);
    }
  }
}

async function pollOnce(poller: Poller): Promise<void> {
  const summary = await poller.run({ requestedBy: 'test' });
  expect(summary.status, summary.tables.map((t) => `${t.table}: ${t.error ?? 'ok'}`).join('; ')).toBe('completed');
}

async function digests(p: Pipeline, schema: string): Promise<{ source: Digest; target: Digest }> {
  const table = p.config.tables[0]!;
  const [source, target] = await Promise.all([
    sourceDigest(p.source.pool(), sourceSpec(p.config, table)),
    targetDigest(p.target.pool(), schema, targetTableName(TABLE), tenantOf(p.config, table)),
  ]);
  return { source, target };
}

async function waitForParity(p: Pipeline, schema: string, timeoutMs = 90_000): Promise<Digest> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const d = await digests(p, schema);
    if (d.source.rows === d.target.rows && d.source.checksum === d.target.checksum) return d.target;
    if (Date.now() > deadline) expect(d.target, `schema ${schema} never matched the source`).toEqual(d.source);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Waits until the group's offsets stored in the live schema reach the end of every non-empty partition of the topic. */
async function waitUntilApplied(p: Pipeline, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stored = new Map((await storedOffsets(p.target.pool(), SCHEMA, p.groupId)).filter((o) => o.topic === p.topic).map((o) => [o.partition, BigInt(o.next)]));
    const behind = (await topicEnds(p.topic)).filter((e) => BigInt(e.high) > BigInt(e.low) && (stored.get(e.partition) ?? -1n) < BigInt(e.high));
    if (behind.length === 0) return;
    if (Date.now() > deadline) throw new Error(`the consumers did not apply ${p.topic} to its end: ${behind.map((e) => `p${e.partition} at ${stored.get(e.partition) ?? 'none'} of ${e.high}`).join(', ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function sourceKeys(pool: pg.Pool): Promise<Set<string>> {
  return new Set((await pool.query<{ k: string }>('SELECT stream_id::text AS k FROM demo."ReferralAttachment"')).rows.map((r) => r.k));
}

async function keysIn(pool: pg.Pool, schema: string, keys: readonly string[]): Promise<string[]> {
  const { rows } = await pool.query<{ key: string }>(`SELECT key FROM ${quotePg(schema)}.${quotePg(targetTableName(TABLE))} WHERE key = ANY($1::text[])`, [[...keys]]);
  return rows.map((r) => r.key);
}

async function storedOffsets(pool: pg.Pool, schema: string, groupId: string): Promise<{ topic: string; partition: number; next: string }[]> {
  const { rows } = await pool.query<{ topic: string; partition: number; next: string }>(
    `SELECT topic, partition, next_offset::text AS next FROM ${quotePg(schema)}.hw_offsets WHERE group_id = $1 ORDER BY topic, partition`, [groupId]);
  return rows;
}

async function kafkaCommitted(groupId: string, topic: string): Promise<Map<number, string>> {
  return withAdmin(async (admin) => {
    const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map((entry?.partitions ?? []).map((x) => [x.partition, x.offset]));
  });
}

async function topicEnds(topic: string): Promise<{ partition: number; low: string; high: string }[]> {
  return (await withAdmin((admin) => admin.fetchTopicOffsets(topic))).sort((a, b) => a.partition - b.partition);
}

/** Records ever published to the back-fill request topic (integration test files run one at a time). */
async function backfillRequests(): Promise<bigint> {
  const offsets = await withAdmin((admin) => admin.fetchTopicOffsets(backfillTopic()));
  return offsets.reduce((sum, o) => sum + BigInt(o.high), 0n);
}

/** Rows ever inserted into a schema's hw_held (statistics, flushed within a second or so). */
async function heldInserts(pool: pg.Pool, schema: string): Promise<number> {
  return insertsInto(pool, schema, 'hw_held');
}

async function targetInserts(pool: pg.Pool, schema: string): Promise<number> {
  return insertsInto(pool, schema, targetTableName(TABLE));
}

/** Rows inserted into a table, as the cumulative statistics tell (flushed by each session a little later). */
async function insertsInto(pool: pg.Pool, schema: string, table: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(`SELECT coalesce(sum(n_tup_ins), 0)::text AS n FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2`, [schema, table]);
  return Number(rows[0]!.n);
}

/** New content and ModifiedOn for some files (applyDelta adds a fixed folder, so it runs once per source). */
async function touchFiles(pool: pg.Pool, count: number): Promise<void> {
  const picked = `SELECT stream_id FROM demo."ReferralAttachment" WHERE NOT is_directory ORDER BY stream_id DESC LIMIT ${Number(count)}`;
  await pool.query(`UPDATE demo."ReferralAttachment" SET file_stream = convert_to(clock_timestamp()::text, 'UTF8') WHERE stream_id IN (${picked})`);
  await pool.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid IN (${picked})`);
}

/** Polls and applies the sample (consumers running), then a delta with deletes; returns the deleted keys. */
async function replicateWithDeletes(p: Pipeline, poller: Poller): Promise<string[]> {
  await pollOnce(poller);
  await waitForParity(p, SCHEMA);
  const before = await sourceKeys(p.source.pool());
  await applyDelta(p.source.pool(), { updates: 15, inserts: 6, deletes: 12 }, p.bus);
  await pollOnce(poller);
  await waitForParity(p, SCHEMA);
  // Parity is reached with the rows; the markers the poll published after them may still be on their way. Callers
  // compare stored offsets before and after a refused command, so everything must be applied first.
  await waitUntilApplied(p);
  const after = await sourceKeys(p.source.pool());
  const deleted = [...before].filter((k) => !after.has(k));
  expect(deleted).toHaveLength(12);
  return deleted;
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

describe('reset-offsets', () => {
  it('refuses while the consumers run, then replays from the log start into an emptied target without resurrecting deletes', async () => {
    const p = await pipeline('reset offsets');
    let consumers: RunningConsumers | undefined;
    try {
      consumers = await p.rt.startConsumers(p.config.targets[0]!);
      const poller = await p.rt.poller();
      const deleted = await replicateWithDeletes(p, poller);
      const mainTopicRows = async () => (await storedOffsets(p.target.pool(), SCHEMA, p.groupId)).filter((o) => o.topic === p.topic);
      const beforeRefusal = await mainTopicRows();
      expect(beforeRefusal).toHaveLength(3);

      const refused = await cli(p, ['reset-offsets', '--target', TARGET, '--to', 'earliest']);
      expect(refused.code).toBe(1);
      expect(await mainTopicRows()).toEqual(beforeRefusal);

      await consumers.stop();
      consumers = undefined;
      const beforeReset = await storedOffsets(p.target.pool(), SCHEMA, p.groupId);
      await p.target.pool().query(`TRUNCATE ${SCHEMA}.${targetTableName(TABLE)}`);
      const reset = await cli(p, ['reset-offsets', '--target', TARGET, '--to', 'earliest', '--json']);
      expect(reset.code).toBe(0);
      const report = JSON.parse(reset.stdout) as { to: string; topics: { topic: string; partitions: { partition: number; nextOffset: string }[] }[]; retryTopicsKept: string[] };
      expect(report.to).toBe('earliest');
      expect(report.retryTopicsKept).toEqual([`${p.topic}.retry`]);
      const ends = await topicEnds(p.topic);
      expect(report.topics).toEqual([{ topic: p.topic, partitions: ends.map((e) => ({ partition: e.partition, nextOffset: e.low })) }]);
      const afterReset = await storedOffsets(p.target.pool(), SCHEMA, p.groupId);
      expect(afterReset.filter((o) => o.topic === p.topic)).toEqual([]);
      // The retry topic keeps its position.
      expect(afterReset).toEqual(beforeReset.filter((o) => o.topic !== p.topic));
      expect(Object.fromEntries(await kafkaCommitted(p.groupId, p.topic))).toEqual(Object.fromEntries(ends.map((e) => [e.partition, e.low])));

      consumers = await p.rt.startConsumers(p.config.targets[0]!);
      await waitForParity(p, SCHEMA);
      expect(await keysIn(p.target.pool(), SCHEMA, deleted)).toEqual([]);
      await consumers.stop();
      consumers = undefined;

      // A time after the last record: every partition starts at its end, in the target and in Kafka.
      const later = new Date(Date.now() + 3600_000).toISOString();
      expect((await cli(p, ['reset-offsets', '--target', TARGET, '--to', later, '--table', TABLE])).code).toBe(0);
      const highs = (await topicEnds(p.topic)).map((e) => ({ topic: p.topic, partition: e.partition, next: e.high }));
      expect((await storedOffsets(p.target.pool(), SCHEMA, p.groupId)).filter((o) => o.topic === p.topic)).toEqual(highs);
      expect(Object.fromEntries(await kafkaCommitted(p.groupId, p.topic))).toEqual(Object.fromEntries(highs.map((h) => [h.partition, h.next])));
    } finally {
      await consumers?.stop();
      await p.rt.close();
      await untilOtherConnectionsClose(p.target.pool());
      await untilOtherConnectionsClose(p.source.pool());
    }
  });
});

describe('rebuild', () => {
  it('replays into a fresh schema equal to the source, and --swap puts it in place of the live schema', async () => {
    const p = await pipeline('rebuild');
    let consumers: RunningConsumers | undefined;
    try {
      consumers = await p.rt.startConsumers(p.config.targets[0]!);
      const poller = await p.rt.poller();
      const deleted = await replicateWithDeletes(p, poller);
      const expected = (await digests(p, SCHEMA)).source;

      // While the live consumers run: a copy, compared with the source; the live schema is left alone.
      const requestsBefore = await backfillRequests();
      const copy = await cli(p, ['rebuild', '--target', TARGET, '--into', 'replica_copy', '--timeout', '120', '--json']);
      expect(copy.code).toBe(0);
      // The replay fetches children and their parents from different partitions; applied together (the default),
      // each parent is in the same transaction as its children or an earlier one: no child waited in the target
      // (hw_held), and not one back-fill request went out. The statistics are flushed per session, the target's
      // inserts with hw_held's: once the former show, the latter are there to read. (Children held one partition
      // at a time are covered by consumer.test.ts, "children held", and defects 10/10b.)
      await expect.poll(() => targetInserts(p.target.pool(), 'replica_copy'), { timeout: 15_000 }).toBeGreaterThan(0);
      expect(await heldInserts(p.target.pool(), 'replica_copy')).toBe(0);
      expect(await backfillRequests()).toBe(requestsBefore);
      expect((await p.target.pool().query<{ n: number }>('SELECT count(*)::int AS n FROM replica_copy.hw_held')).rows[0]!.n).toBe(0);
      const copied = JSON.parse(copy.stdout) as { outcome: string; swapped: boolean; schema: string; groupId: string };
      expect(copied).toMatchObject({ outcome: 'caught-up', swapped: false, schema: 'replica_copy' });
      expect(copied.groupId).toBe(`${p.groupId}.rebuild.replica_copy`);
      expect((await digests(p, 'replica_copy')).target).toEqual(expected);
      expect(await keysIn(p.target.pool(), 'replica_copy', deleted)).toEqual([]);

      // Swapping while the live consumers run is refused, and the rebuilt copy stays.
      const refused = await cli(p, ['rebuild', '--target', TARGET, '--into', 'replica_refused', '--swap', '--timeout', '120']);
      expect(refused.code).toBe(1);
      expect((await digests(p, 'replica_refused')).target).toEqual(expected);

      await consumers.stop();
      consumers = undefined;
      const swapStarted = new Date();
      const swap = await cli(p, ['rebuild', '--target', TARGET, '--swap', '--timeout', '120', '--json']);
      expect(swap.code).toBe(0);
      const swapped = JSON.parse(swap.stdout) as { outcome: string; swapped: boolean; schema: string; rebuiltSchema: string; retiredSchema: string; groupId: string };
      expect(swapped).toMatchObject({ outcome: 'caught-up', swapped: true, schema: SCHEMA, groupId: p.groupId });
      expect(swapped.rebuiltSchema).toMatch(/^replica_rebuild_\d{14}$/);
      expect(swapped.retiredSchema).toMatch(/^replica_old_\d{14}$/);

      const schemas = (await p.target.pool().query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE 'replica%'`)).rows.map((r) => r.n).sort();
      expect(schemas).toEqual(['replica', 'replica_copy', swapped.retiredSchema, 'replica_refused'].sort());
      expect((await digests(p, SCHEMA)).target).toEqual(expected);
      expect((await digests(p, swapped.retiredSchema)).target).toEqual(expected);
      expect(await keysIn(p.target.pool(), SCHEMA, deleted)).toEqual([]);
      // Every row of the live schema was written by the rebuild, none by the earlier consumers.
      const { rows: [written] } = await p.target.pool().query<{ first: Date }>(`SELECT min(applied_at) AS first FROM ${SCHEMA}.${targetTableName(TABLE)}`);
      expect(written!.first.getTime()).toBeGreaterThanOrEqual(swapStarted.getTime());
      // The configured group owns the rebuild's positions, in the target and in Kafka.
      const { rows: groups } = await p.target.pool().query<{ g: string }>(`SELECT DISTINCT group_id AS g FROM ${SCHEMA}.hw_offsets`);
      expect(groups.map((g) => g.g)).toEqual([p.groupId]);
      const stored = (await storedOffsets(p.target.pool(), SCHEMA, p.groupId)).filter((o) => o.topic === p.topic);
      expect(stored.map((o) => o.next)).toEqual((await topicEnds(p.topic)).map((e) => e.high));
      expect(Object.fromEntries(await kafkaCommitted(p.groupId, p.topic))).toEqual(Object.fromEntries(stored.map((o) => [o.partition, o.next])));

      // `consume` continues from there: a new delta reaches the swapped-in schema.
      consumers = await p.rt.startConsumers(p.config.targets[0]!);
      await touchFiles(p.source.pool(), 5);
      await pollOnce(poller);
      await waitForParity(p, SCHEMA);
    } finally {
      await consumers?.stop();
      await p.rt.close();
      await untilOtherConnectionsClose(p.target.pool());
      await untilOtherConnectionsClose(p.source.pool());
    }
  });

  it('rebuild, then `rebuild --into <that schema> --swap` continues it: nothing is replayed twice and no schema is left behind (issue 10, item 10)', async () => {
    const p = await pipeline('rebuild continue');
    let consumers: RunningConsumers | undefined;
    try {
      consumers = await p.rt.startConsumers(p.config.targets[0]!);
      const poller = await p.rt.poller();
      await pollOnce(poller);
      await waitForParity(p, SCHEMA);

      // The documented side-by-side flow, step 1: a copy while the live consumers run.
      const first = await cli(p, ['rebuild', '--target', TARGET, '--timeout', '120', '--json']);
      expect(first.code).toBe(0);
      const copy = JSON.parse(first.stdout) as { schema: string; groupId: string; continued: boolean };
      expect(copy.schema).toMatch(/^replica_rebuild_\d{14}$/);
      expect(copy.continued).toBe(false);

      // Changes published while the copy waits; then step 2, consumers stopped: continue that copy and swap it in.
      await touchFiles(p.source.pool(), 3);
      await pollOnce(poller);
      await waitForParity(p, SCHEMA);
      await consumers.stop();
      consumers = undefined;
      const secondStarted = new Date();
      const second = await cli(p, ['rebuild', '--target', TARGET, '--into', copy.schema, '--swap', '--timeout', '120', '--json']);
      expect(second.code).toBe(0);
      const swapped = JSON.parse(second.stdout) as { swapped: boolean; continued: boolean; rebuiltSchema: string; retiredSchema: string; rebuildGroupId: string };
      expect(swapped).toMatchObject({ swapped: true, continued: true, rebuiltSchema: copy.schema, rebuildGroupId: copy.groupId });

      // Only the three changed files were written by the second run; the rest was not replayed again.
      const { rows: [again] } = await p.target.pool().query<{ n: number }>(`SELECT count(*)::int AS n FROM ${SCHEMA}.${targetTableName(TABLE)} WHERE applied_at >= $1`, [secondStarted]);
      expect(again!.n).toBe(3);
      expect((await digests(p, SCHEMA)).target).toEqual((await digests(p, SCHEMA)).source);
      // No orphan: the live schema (the former copy) and the retired one, nothing else.
      const schemas = (await p.target.pool().query<{ n: string }>(`SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE 'replica%'`)).rows.map((r) => r.n).sort();
      expect(schemas).toEqual([SCHEMA, swapped.retiredSchema].sort());
    } finally {
      await consumers?.stop();
      await p.rt.close();
      await untilOtherConnectionsClose(p.target.pool());
      await untilOtherConnectionsClose(p.source.pool());
    }
  });
});
