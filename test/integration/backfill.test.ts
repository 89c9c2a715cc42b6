/**
 * Missing parents back-filled from the source: a child is published without its parent; the consumer's retry
 * loop asks for a back-fill on `highwater.backfill-requests`; the BackfillService (the poller side) reads the
 * parent from the source and publishes it; the child is applied after it. Every test owns its databases, topics,
 * group ids and table name (the request topic is shared by the whole run, so a service also meets other tests'
 * requests and must skip them).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { backfillTopic, dlqTopicFor, parseConfigObject, retryTopicFor, tenantOf } from '../../src/config/load.js';
import type { Config, TableConfig } from '../../src/config/schema.js';
import { HEADERS } from '../../src/contract.js';
import { SOURCE_DDL, createBusinessUnits, insertRows } from '../../src/dev/demo/sample.js';
import { backfillToAvro } from '../../src/events/mapping.js';
import { inlineLimit } from '../../src/events/records.js';
import { createLogger } from '../../src/logger.js';
import { RowPublisher } from '../../src/poll/publish-rows.js';
import { sourceDigest, targetDigest } from '../../src/ops/reconcile/digest.js';
import { Runtime, sourceSpec } from '../../src/wiring.js';
import { brokers, consumeMessages, deleteTopics, uniqueName } from '../support/kafka.js';
import { createTestDatabase, type TestDatabase } from '../support/pg.js';

const SCHEMA = 'tgt';
const CONTROL = 'hw_control';

interface Setup {
  readonly config: Config;
  readonly rt: Runtime;
  readonly table: TableConfig;
  readonly topic: string;
  readonly source: pg.Pool;
  readonly target: pg.Pool;
  readonly bu: string;
}

/** A pool of the test's own: the drop terminates its sessions (57P01) after pool.end() resolved, which is expected. */
function poolOf(db: TestDatabase): pg.Pool {
  const pool = new pg.Pool({ connectionString: db.url, max: 3 });
  pool.on('error', (err: Error & { code?: string }) => {
    if (err.code !== '57P01') console.warn(`[backfill test] idle connection to ${db.name} failed: ${err.message}`);
  });
  return pool;
}

/** Databases, topics and a runtime for one test; everything is dropped when the test passed, kept when it failed. */
async function setup(label: string, retry: { maxAttempts: number; backfillAfterAttempts: number }): Promise<Setup> {
  const source = await createTestDatabase(`backfill ${label} source`);
  const target = await createTestDatabase(`backfill ${label} target`);
  const topic = uniqueName(`backfill ${label}`, 'blobs');
  const config = parseConfigObject({
    controlStore: { database: 'target', schema: CONTROL },
    kafka: { brokers: brokers(), partitions: 1, clientId: uniqueName(`backfill ${label}`, 'client') },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: source.url, poolSize: 2 },
      { name: 'target', kind: 'postgres', connectionString: target.url, poolSize: 2 },
    ],
    tables: [{
      name: `Attach_${randomBytes(4).toString('hex')}`, source: 'source', topic, safetyBufferMinutes: 0,
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
    }],
    targets: [{ name: 'replica', database: 'target', schema: SCHEMA, groupId: uniqueName(`backfill ${label}`, 'group'), retry: { initialDelayMs: 300, maxDelayMs: 2000, ...retry } }],
  }, `backfill ${label}`);
  const rt = new Runtime(config, createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'error' }));
  const [sourcePool, targetPool] = [poolOf(source), poolOf(target)];
  const stops: (() => Promise<unknown>)[] = [];
  onTestFinished(async ({ task }) => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => console.warn(`[backfill test] cleanup failed: ${String(err)}`));
    await rt.close();
    await Promise.all([sourcePool.end(), targetPool.end()]);
    if (task.result?.state === 'pass') {
      await Promise.all([source.drop(), target.drop()]);
      await deleteTopics([topic, retryTopicFor(topic), dlqTopicFor(topic)]);
    } else {
      await Promise.all([source.close(), target.close()]);
      console.log(`[backfill test] kept databases ${source.name}, ${target.name} and topic ${topic}`);
    }
  });
  await sourcePool.query(SOURCE_DDL);
  const [bu] = await createBusinessUnits(sourcePool, 1);
  await rt.store().migrate();
  const s: Setup = { config, rt, table: config.tables[0]!, topic, source: sourcePool, target: targetPool, bu: bu! };
  const consumers = await rt.startConsumers(config.targets[0]!);
  stops.push(() => consumers.stop());
  const backfill = await rt.startBackfill({ groupId: uniqueName(`backfill ${label}`, 'service') });
  stops.push(() => backfill.stop());
  return s;
}

function sourceRow(s: Setup, path: string, parent: string | null, content: Buffer | null, minutesAgo: number) {
  return { id: randomUUID(), name: `item${path.replaceAll('/', '-')}`, path, parent, isDirectory: content === null, content, modifiedOnSql: `clock_timestamp() - interval '${minutesAgo} minutes'`, bu: s.bu };
}

/** Publishes rows exactly as the poller would, but only these: their parents stay unpublished. */
async function publishOnly(s: Setup, keys: string[]): Promise<void> {
  const source = await s.rt.source(s.table);
  const rows = await source.readByKeys(keys);
  const publisher = new RowPublisher(await s.rt.publisher(), s.rt.codec, source, { inlineLimit: inlineLimit(s.config.kafka.maxMessageBytes), maxBlobBytes: s.config.poll.maxBlobBytes });
  for (const row of rows) {
    const at = row.modifiedOn!;
    await publisher.publish({ topic: s.topic, rows: [{ row, observed: at }], ctx: { table: s.table.name, tenant: tenantOf(s.config, s.table), runId: 'crafted', window: { start: at, end: at } } });
  }
}

async function rows(pool: pg.Pool, text: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  return (await pool.query(text, values)).rows;
}

async function waitFor<T>(what: string, probe: () => Promise<T | false | null | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await probe();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Garbage and a request for a table nobody publishes: the service must skip both and go on. */
async function publishBadRequests(s: Setup): Promise<void> {
  const unknown = await s.rt.codec.encode('BackfillRequest', backfillToAvro({
    table: `Nowhere_${randomBytes(4).toString('hex')}`, tenant: '', parentPathLocator: '/1/', keys: [], requestedBy: 'test', reason: 'no such table',
  }));
  await (await s.rt.publisher()).send(backfillTopic(), [
    { key: 'garbage', value: randomBytes(40), headers: {} },
    { key: 'unknown', value: unknown, headers: {} },
  ]);
}

describe('back-fill of missing parents', () => {
  it('back-fills a chain of missing parents from the source and applies the child after them', async () => {
    const s = await setup('chain', { maxAttempts: 8, backfillAfterAttempts: 1 });
    const root = sourceRow(s, '/1/', null, null, 30);
    const folder = sourceRow(s, '/1/2/', '/1/', null, 20);
    const file = sourceRow(s, '/1/2/3/', '/1/2/', randomBytes(5000), 10);
    await insertRows(s.source, [root, folder, file]);
    await publishBadRequests(s);

    await publishOnly(s, [file.id]);
    const tenant = tenantOf(s.config, s.table);
    await waitFor('the target to equal the source', async () => {
      const [src, tgt] = await Promise.all([sourceDigest(s.source, sourceSpec(s.config, s.table)), targetDigest(s.target, SCHEMA, targetTableName(s.table.name), tenant)]);
      return src.rows === 3 && src.checksum === tgt.checksum;
    });

    const runs = (await s.rt.store().listRuns({ limit: 50 })).filter((r) => r.kind === 'backfill');
    expect(runs.map((r) => [r.options.parentPathLocator, r.status]).sort()).toEqual([['/1/', 'completed'], ['/1/2/', 'completed']]);
    for (const run of runs) {
      const detail = await s.rt.store().getRun(run.runId);
      const parent = run.options.parentPathLocator === '/1/' ? root : folder;
      expect(detail.batches).toMatchObject([{ table: s.table.name, step: 'backfill', batchNo: 1, rows: 1, status: 'completed', lastPosition: { key: parent.id } }]);
      expect(detail.tables).toMatchObject([{ table: s.table.name, status: 'completed', rowsPublished: 1 }]);
      expect(detail.tables[0]!.window.start).toBe(detail.tables[0]!.window.end);
    }
    const runOf = new Map(runs.map((r) => [r.options.parentPathLocator, r.runId]));
    expect(await rows(s.target, `SELECT path_locator, run_id FROM ${SCHEMA}.${targetTableName(s.table.name)} ORDER BY path_locator`)).toEqual([
      { path_locator: '/1/', run_id: `backfill-${runOf.get('/1/')}` },
      { path_locator: '/1/2/', run_id: `backfill-${runOf.get('/1/2/')}` },
      { path_locator: '/1/2/3/', run_id: 'crafted' },
    ]);
    expect(await rows(s.target, `SELECT key, run_id::text FROM ${CONTROL}.published WHERE table_name = $1 ORDER BY path_locator`, [s.table.name])).toEqual([
      { key: root.id, run_id: runOf.get('/1/') },
      { key: folder.id, run_id: runOf.get('/1/2/') },
    ]);
  });

  it('records a failed back-fill for a parent the source does not have, and the child reaches the dead-letter topic', async () => {
    const s = await setup('not found', { maxAttempts: 2, backfillAfterAttempts: 1 });
    const orphan = sourceRow(s, '/7/8/', '/7/', randomBytes(100), 5);
    await insertRows(s.source, [orphan]);

    await publishOnly(s, [orphan.id]);
    const dead = await consumeMessages({ topic: dlqTopicFor(s.topic), groupId: uniqueName('backfill not found', 'dlq-reader'), count: 1 });
    expect(dead[0]!.key?.toString()).toBe(orphan.id);
    expect(String(dead[0]!.headers[HEADERS.errorKind])).toBe('missing-parent');
    expect(String(dead[0]!.headers[HEADERS.error])).toMatch(/parent \/7\/ did not arrive after 2 attempts/);

    const run = await waitFor('the failed back-fill run', async () =>
      (await s.rt.store().listRuns({ limit: 50 })).find((r) => r.kind === 'backfill' && r.status !== 'running'));
    expect(run).toMatchObject({ status: 'failed', requestedBy: 'replica', options: { parentPathLocator: '/7/' } });
    expect(run.error).toMatch(/parent \/7\/ not found at the source/);
    expect(await rows(s.target, `SELECT count(*)::int AS n FROM ${SCHEMA}.${targetTableName(s.table.name)}`)).toEqual([{ n: 0 }]);
  });
});
