/**
 * The consumers end to end, against the real Kafka of the test run and the local PostgreSQL. Every test owns its
 * databases (hw_t_consumer_…), topics and group ids; they are dropped only when the test passed. Events come from
 * the real poller, or are crafted with the Publisher to hit exact cases. An audit trigger on every target table
 * records each write, so "no regression" (I2) is checked over the whole run, not only at the end.
 *
 * Kill tests run `highwater consume` as child processes and SIGKILL them; a random choice is seeded and the seed
 * printed (replay with HIGHWATER_TEST_SEED=<seed>). A consumer killed without leaving its group keeps its
 * partitions until its 30 s session expires, so each restart after a SIGKILL waits about that long.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomInt, randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { dlqTopicFor, parseConfigObject, retryTopicFor, tenantOf, topicFor } from '../../src/config/load.js';
import { applyMode, fetchLimits, type Config, type TableConfig, type TargetConfig } from '../../src/config/schema.js';
import { HEADERS, type BlobChange, type Ticks } from '../../src/contract.js';
import { SOURCE_DDL, createBusinessUnits, insertRows } from '../../src/dev/demo/sample.js';
import { changeRecord, chunkRecord, tombstoneRecord, type OutRecord } from '../../src/events/records.js';
import { createLogger } from '../../src/logger.js';
import { sourceDigest } from '../../connectors/postgres/reconcile.js';
import { targetDigest } from '../../consumers/postgres/reconcile.js';
import type { Digest } from '../../src/ops/reconcile/side/contract.js';
import { quotePg } from '../../src/sql/ident.js';
import { Runtime, sourceSpec, type RunningConsumers } from '../../src/wiring.js';
import { ApplyLoop } from '../../src/apply/loop.js';
import type { ApplyBatch, TargetWriter } from '../../src/apply/sink/writer.js';
import { fetchDecodes } from '../../src/kafka/fetch-response.js';
import { ManualConsumer, type PartitionBatch } from '../../src/kafka/consumer.js';
import { brokers, canControlBroker, consumeMessages, deleteTopics, killBroker, uniqueName, withAdmin } from '../support/kafka.js';
import { createTestDatabase, type TestDatabase } from '../support/pg.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(REPO, 'src/cli/bin.js');
const SCHEMA = 'tgt';
const GATE_LOCK = 424242;
const MiB = 1 << 20;

// ---------------------------------------------------------------------------------------------------------------
// Per-test namespace: databases, topics, directories and processes, cleaned up in reverse order; kept on failure.

/** A test database with a pool of the test's own, which tolerates the server ending its sessions at the drop. */
interface Database {
  readonly name: string;
  readonly url: string;
  readonly pool: pg.Pool;
}

interface Scope {
  readonly label: string;
  defer(cleanup: () => Promise<unknown> | unknown): void;
  database(suffix: string): Promise<Database>;
  topics(names: readonly string[]): void;
  directory(): Promise<string>;
}

function testScope(label: string): Scope {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const databases: { db: TestDatabase; pool: pg.Pool }[] = [];
  const topics: string[] = [];
  const directories: string[] = [];
  onTestFinished(async ({ task }) => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        console.warn(`[consumer test] cleanup failed: ${String(err)}`);
      }
    }
    for (const { pool } of databases) await pool.end();
    // A test expected to fail (`it.fails`) that failed has passed.
    if ((task.result?.state === 'pass') !== (task.fails === true)) {
      for (const { db } of databases) await db.drop();
      await deleteTopics(topics).catch((err: unknown) => console.warn(`[consumer test] could not delete topics: ${String(err)}`));
      for (const dir of directories) await rm(dir, { recursive: true, force: true });
      return;
    }
    for (const { db } of databases) await db.close();
    console.log(`[consumer test] "${task.name}" failed; kept databases ${databases.map((d) => d.db.name).join(', ')}, topics ${topics.join(', ')}, logs in ${directories.join(', ')}`);
  });
  return {
    label,
    defer: (cleanup) => cleanups.push(cleanup),
    database: async (suffix) => {
      const db = await createTestDatabase(`consumer ${label} ${suffix}`);
      const pool = new pg.Pool({ connectionString: db.url, max: 4 });
      // pool.end() resolves before its sessions are gone; the drop then terminates them (57P01), which is expected.
      pool.on('error', (err: Error & { code?: string }) => {
        if (err.code !== '57P01') console.warn(`[consumer test] idle connection to ${db.name} failed: ${err.message}`);
      });
      databases.push({ db, pool });
      return { name: db.name, url: db.url, pool };
    },
    topics: (names) => topics.push(...names),
    directory: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'hw-consumer-test-'));
      directories.push(dir);
      return dir;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// A pipeline: one table, one PostgreSQL target, a source database when the real poller is used.

interface PipelineOptions {
  readonly source?: boolean;
  readonly partitions?: number;
  readonly batchMaxRecords?: number;
  readonly batchSize?: number;
  readonly maxMessageBytes?: number;
  readonly retry?: { initialDelayMs?: number; maxAttempts?: number; backfillAfterAttempts?: number; maxDelayMs?: number };
  readonly partitionsConsumedConcurrently?: number;
}

interface Pipeline {
  readonly scope: Scope;
  /** The configuration as written to a file for child processes. */
  readonly raw: Record<string, unknown>;
  readonly config: Config;
  readonly rt: Runtime;
  readonly table: TableConfig;
  readonly target: TargetConfig;
  readonly topic: string;
  readonly groupId: string;
  readonly tenant: string;
  readonly targetDb: Database;
  readonly sourceDb: Database | undefined;
  /** `tgt.<table>`, quoted. */
  readonly targetTable: string;
}

async function pipeline(scope: Scope, options: PipelineOptions = {}): Promise<Pipeline> {
  const targetDb = await scope.database('target');
  const sourceDb = options.source ? await scope.database('source') : undefined;
  const tableName = `Attach_${randomBytes(4).toString('hex')}`;
  const topic = uniqueName(scope.label, 'blobs');
  const groupId = uniqueName(scope.label, 'group');
  scope.topics([topic, retryTopicFor(topic), dlqTopicFor(topic)]);
  const raw = {
    controlStore: { database: 'target', schema: 'hw_control' },
    kafka: { brokers: brokers(), partitions: options.partitions ?? 3, clientId: uniqueName(scope.label, 'client'), maxMessageBytes: options.maxMessageBytes ?? MiB },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: (sourceDb ?? targetDb).url, poolSize: 2 },
      { name: 'target', kind: 'postgres', connectionString: targetDb.url, poolSize: 4 },
    ],
    tables: [{
      name: tableName,
      source: 'source',
      topic,
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
      safetyBufferMinutes: 0,
      batchSize: options.batchSize ?? 500,
    }],
    targets: [{
      name: 'replica', database: 'target', schema: SCHEMA, groupId, batchMaxRecords: options.batchMaxRecords ?? 5000,
      retry: { initialDelayMs: 300, maxDelayMs: 5000, maxAttempts: 8, backfillAfterAttempts: 8, ...options.retry },
      ...(options.partitionsConsumedConcurrently === undefined ? {} : { partitionsConsumedConcurrently: options.partitionsConsumedConcurrently }),
    }],
    log: { level: 'warn' },
  };
  const config = parseConfigObject(raw, `${scope.label} configuration`);
  const rt = new Runtime(config, createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'error' }));
  scope.defer(() => rt.close());
  const table = config.tables[0]!;
  return {
    scope, raw, config, rt, table, target: config.targets[0]!, topic, groupId, tenant: tenantOf(config, table), targetDb, sourceDb,
    targetTable: `${quotePg(SCHEMA)}.${quotePg(targetTableName(table.name))}`,
  };
}

/** Creates the target tables, so triggers can be installed before the first row arrives. */
async function migrateTarget(p: Pipeline): Promise<void> {
  const writer = await p.rt.writer(p.target);
  try {
    await writer.migrate();
  } finally {
    await writer.close();
  }
}

async function startConsumers(p: Pipeline, options: Parameters<Runtime['startConsumers']>[1] = {}): Promise<RunningConsumers> {
  const running = await p.rt.startConsumers(p.target, options);
  p.scope.defer(() => running.stop());
  return running;
}

async function rows(pool: pg.Pool, text: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  return (await pool.query(text, values)).rows;
}

/** The version of each child held in the target's holding table (hw_held), waiting for its parent. */
async function heldChildren(p: Pipeline): Promise<Map<string, string>> {
  const held = await rows(p.targetDb.pool, `SELECT key, modified_on_ticks::text AS t FROM ${SCHEMA}.hw_held`);
  return new Map(held.map((r) => [String(r.key), String(r.t)]));
}

/** The version each key holds in the target: `ticks` or undefined. */
async function heldVersions(p: Pipeline): Promise<Map<string, string>> {
  const held = await rows(p.targetDb.pool, `SELECT key, modified_on_ticks::text AS t FROM ${p.targetTable}`);
  return new Map(held.map((r) => [String(r.key), String(r.t)]));
}

// ---------------------------------------------------------------------------------------------------------------
// Audit (I2, I4) and the gate that holds a consumer's transaction after its COPY.

interface Audit {
  /** Updates that moved ModifiedOn backwards: must stay 0. */
  regressions(): Promise<number>;
  writes(): Promise<number>;
  /** Writes minus distinct (key, ModifiedOn) versions: a version written twice. */
  duplicates(): Promise<number>;
}

async function installAudit(p: Pipeline): Promise<Audit> {
  const pool = p.targetDb.pool;
  await pool.query(`
    CREATE TABLE ${SCHEMA}.test_audit (id bigserial PRIMARY KEY, op text NOT NULL, key text NOT NULL, old_ticks bigint, new_ticks bigint NOT NULL);
    CREATE FUNCTION ${SCHEMA}.test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO ${SCHEMA}.test_audit (op, key, old_ticks, new_ticks)
        VALUES (TG_OP, NEW.key, CASE WHEN TG_OP = 'UPDATE' THEN OLD.modified_on_ticks END, NEW.modified_on_ticks);
      RETURN NEW;
    END $$;
    CREATE TRIGGER test_audit AFTER INSERT OR UPDATE ON ${p.targetTable} FOR EACH ROW EXECUTE FUNCTION ${SCHEMA}.test_audit();`);
  const count = async (sql: string) => Number((await rows(pool, sql))[0]!.n);
  return {
    regressions: () => count(`SELECT count(*) AS n FROM ${SCHEMA}.test_audit WHERE op = 'UPDATE' AND new_ticks < old_ticks`),
    writes: () => count(`SELECT count(*) AS n FROM ${SCHEMA}.test_audit`),
    duplicates: () => count(`SELECT count(*) - count(DISTINCT (key, new_ticks)) AS n FROM ${SCHEMA}.test_audit`),
  };
}

/**
 * A statement trigger that takes a shared advisory lock before the upsert: while the test holds the lock
 * exclusively, a consumer's transaction stops after its COPY into the staging table and before its COMMIT.
 */
async function installGate(p: Pipeline): Promise<{ shut(): Promise<void>; open(): Promise<void>; waiting(): Promise<number> }> {
  const pool = p.targetDb.pool;
  await pool.query(`
    CREATE FUNCTION ${SCHEMA}.test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock_shared(${GATE_LOCK});
      RETURN NULL;
    END $$;
    CREATE TRIGGER test_gate BEFORE INSERT OR UPDATE ON ${p.targetTable} FOR EACH STATEMENT EXECUTE FUNCTION ${SCHEMA}.test_gate();`);
  const holder = new pg.Client({ connectionString: p.targetDb.url });
  await holder.connect();
  p.scope.defer(() => holder.end());
  return {
    shut: async () => void (await holder.query('SELECT pg_advisory_lock($1)', [GATE_LOCK])),
    open: async () => void (await holder.query('SELECT pg_advisory_unlock($1)', [GATE_LOCK])),
    waiting: async () => Number((await rows(pool, `SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`))[0]!.n),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Crafted events.

const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

function blob(p: Pipeline, key: string, modifiedOn: Ticks, over: Partial<BlobChange> = {}): BlobChange {
  const content = Buffer.from(`${key} at ${modifiedOn}`);
  return {
    table: p.table.name, tenant: p.tenant, key, name: `${key}.bin`, pathLocator: `/${key}/`, parentPathLocator: null, isDirectory: false,
    size: content.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null, content: { kind: 'inline', bytes: content },
    contentSha256: sha256(content), runId: 'crafted', window: { start: 0n, end: modifiedOn }, ...over,
  };
}

async function publish(p: Pipeline, records: readonly OutRecord[]): Promise<void> {
  await (await p.rt.publisher()).send(p.topic, records);
}

const changes = (p: Pipeline, list: readonly BlobChange[]): Promise<OutRecord[]> => Promise.all(list.map((c) => changeRecord(p.rt.codec, c)));
/** A tombstone observed at `observed` (which also stands for the ModifiedOn it carries). */
const deletion = (p: Pipeline, key: string, observed: Ticks): OutRecord => tombstoneRecord({ table: p.table.name, tenant: p.tenant, key, modifiedOn: observed, observed, runId: 'crafted' });

/** Records on a topic (high minus low watermark, summed over its partitions). */
async function recordsOn(topic: string): Promise<number> {
  const offsets = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  return offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// A source database with FileTable-like rows, polled by the real poller.

interface Source {
  readonly pool: pg.Pool;
  readonly bus: string[];
  nextPath: number;
}

async function createSource(p: Pipeline): Promise<Source> {
  const pool = p.sourceDb!.pool;
  await pool.query(SOURCE_DDL);
  const bus = await createBusinessUnits(pool, 3);
  await p.rt.store().migrate();
  return { pool, bus, nextPath: 1 };
}

/** Seeded generator (mulberry32): every random choice of a test comes from its printed seed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function testSeed(): number {
  const fromEnv = process.env.HIGHWATER_TEST_SEED;
  return fromEnv ? Number(fromEnv) : randomInt(2 ** 31);
}

/**
 * Adds roots, folders under them and files under the folders. Files have 100 B – 3 KB of content, one in twenty
 * 20–60 KB; a block of files shares one ModifiedOn. `at` gives the ModifiedOn expression of the n-th row.
 */
async function addTree(src: Source, rand: () => number, shape: { roots: number; folders: number; files: number }, at: (n: number) => string): Promise<number> {
  const rows: { id: string; name: string; path: string; parent: string | null; isDirectory: boolean; content: Buffer | null; modifiedOnSql: string; bu: string }[] = [];
  const bu = () => src.bus[Math.floor(rand() * src.bus.length)]!;
  const folders: string[] = [];
  for (let r = 0; r < shape.roots; r++) {
    const root = `/${src.nextPath++}/`;
    rows.push({ id: randomUUID(), name: `root-${root}`, path: root, parent: null, isDirectory: true, content: null, modifiedOnSql: at(rows.length), bu: bu() });
    for (let f = 0; f < shape.folders; f++) {
      const folder = `${root}${src.nextPath++}/`;
      folders.push(folder);
      rows.push({ id: randomUUID(), name: `folder-${folder}`, path: folder, parent: root, isDirectory: true, content: null, modifiedOnSql: at(rows.length), bu: bu() });
    }
  }
  for (let i = 0; i < shape.files; i++) {
    const parent = folders[Math.floor(rand() * folders.length)]!;
    const size = rand() < 0.05 ? 20_000 + Math.floor(rand() * 40_000) : 100 + Math.floor(rand() * 2900);
    rows.push({ id: randomUUID(), name: `file-${i}.bin`, path: `${parent}${src.nextPath++}/`, parent, isDirectory: false, content: randomBytes(size), modifiedOnSql: at(rows.length), bu: bu() });
  }
  await insertRows(src.pool, rows);
  return rows.length;
}

/** ModifiedOn within the last hour, with every seventh row on one shared instant (equal timestamps). */
function pastInstants(rand: () => number): (n: number) => string {
  const shared = new Date(Date.now() - 30 * 60_000).toISOString();
  return (n) => (n % 7 === 3 ? `timestamptz '${shared}'` : `clock_timestamp() - interval '${1 + Math.floor(rand() * 3500)} seconds'`);
}

/** New content for `updates` files and deletion of `deletes` others, stamped now. */
async function changeSource(src: Source, rand: () => number, counts: { updates: number; deletes: number }): Promise<void> {
  const files = (await rows(src.pool, `SELECT stream_id::text AS id FROM demo."ReferralAttachment" WHERE NOT is_directory ORDER BY stream_id`)).map((r) => String(r.id));
  const pick = (n: number) => {
    const chosen = new Set<string>();
    while (chosen.size < Math.min(n, files.length)) chosen.add(files[Math.floor(rand() * files.length)]!);
    for (const id of chosen) files.splice(files.indexOf(id), 1);
    return [...chosen];
  };
  const updated = pick(counts.updates);
  const deleted = pick(counts.deletes);
  await src.pool.query(`UPDATE demo."ReferralAttachment" SET file_stream = file_stream || '\\x2a'::bytea WHERE stream_id = ANY($1::uuid[])`, [updated]);
  await src.pool.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid = ANY($1::uuid[])`, [updated]);
  await src.pool.query(`DELETE FROM demo."cw_referralattachmentBase" WHERE cw_referralattachmentid = ANY($1::uuid[])`, [deleted]);
  await src.pool.query(`DELETE FROM demo."ReferralAttachment" WHERE stream_id = ANY($1::uuid[])`, [deleted]);
}

async function poll(p: Pipeline): Promise<void> {
  const summary = await (await p.rt.poller()).run({ requestedBy: 'consumer test' });
  expect(summary.status, summary.tables.map((t) => t.error ?? '').join('; ')).toBe('completed');
}

async function digests(p: Pipeline): Promise<{ source: Digest; target: Digest; equal: boolean }> {
  const [source, target] = await Promise.all([
    sourceDigest(p.sourceDb!.pool, sourceSpec(p.config, p.table)),
    targetDigest(p.targetDb.pool, SCHEMA, targetTableName(p.table.name), p.tenant),
  ]);
  return { source, target, equal: source.rows === target.rows && source.checksum === target.checksum };
}

/** Polls `probe` until it returns something truthy; on the deadline fails with what it last saw. */
async function waitFor<T>(what: string, probe: () => Promise<T | false | null | undefined>, timeoutMs = 60_000, describeState?: () => Promise<unknown>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await probe();
    if (result) return result;
    if (Date.now() > deadline) {
      const state = describeState ? ` (last seen: ${JSON.stringify(await describeState(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))})` : '';
      throw new Error(`waited ${timeoutMs} ms for ${what}${state}`);
    }
    await sleep(intervalMs);
  }
}

function waitForParity(p: Pipeline, timeoutMs = 90_000): Promise<{ source: Digest; target: Digest; equal: boolean }> {
  return waitFor('the target to equal the source', async () => {
    const d = await digests(p);
    return d.equal ? d : null;
  }, timeoutMs, () => digests(p));
}

/** Sum of the next offsets the target stores for the group on the table topic. */
async function storedProgress(p: Pipeline): Promise<number> {
  return Number((await rows(p.targetDb.pool, `SELECT coalesce(sum(next_offset), 0) AS n FROM ${SCHEMA}.hw_offsets WHERE group_id = $1 AND topic = $2`, [p.groupId, p.topic]))[0]!.n);
}

async function storedOffsets(p: Pipeline): Promise<Record<string, unknown>[]> {
  return rows(p.targetDb.pool, `SELECT topic, partition, next_offset::text AS o FROM ${SCHEMA}.hw_offsets WHERE group_id = $1 ORDER BY topic, partition`, [p.groupId]);
}

/** Offsets of the table topic only (the retry loop stores the retry topic's independently). */
async function mainOffsets(p: Pipeline): Promise<string> {
  return JSON.stringify((await storedOffsets(p)).filter((o) => o.topic === p.topic));
}

/** Whether the target stores, for every partition of the table topic, an offset at its end. */
async function caughtUp(p: Pipeline): Promise<boolean> {
  const ends = await withAdmin((admin) => admin.fetchTopicOffsets(p.topic));
  const stored = new Map((await storedOffsets(p)).filter((r) => r.topic === p.topic).map((r) => [Number(r.partition), BigInt(String(r.o))]));
  return ends.every((e) => BigInt(e.high) === BigInt(e.low) || (stored.get(e.partition) ?? -1n) >= BigInt(e.high));
}

// ---------------------------------------------------------------------------------------------------------------
// `highwater consume` as a child process.

interface ConsumerProcess {
  readonly pid: number;
  kill(signal: NodeJS.Signals): Promise<void>;
  readonly exited: Promise<void>;
}

async function writeConfigFile(p: Pipeline): Promise<{ configPath: string; dir: string }> {
  const dir = await p.scope.directory();
  const configPath = join(dir, 'highwater.yaml');
  await writeFile(configPath, JSON.stringify(p.raw, null, 2));
  return { configPath, dir };
}

function startConsumerProcess(p: Pipeline, files: { configPath: string; dir: string }, name: string): ConsumerProcess {
  const log = openSync(join(files.dir, `${name}.log`), 'a');
  const child: ChildProcess = spawn(process.execPath, [BIN, 'consume', '--config', files.configPath], {
    cwd: REPO,
    env: { ...process.env, HIGHWATER_KAFKA_BROKERS: brokers().join(','), HIGHWATER_LOG_LEVEL: process.env.HIGHWATER_TEST_CHILD_LOG_LEVEL ?? 'warn' },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  const kill = async (signal: NodeJS.Signals) => {
    if (running()) child.kill(signal);
    // A graceful stop that hangs would hang the test: after 30 s it becomes a SIGKILL.
    const timer = setTimeout(() => running() && child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  p.scope.defer(() => kill('SIGKILL'));
  return { pid: child.pid!, kill, exited };
}

// ---------------------------------------------------------------------------------------------------------------

describe('consumers against Kafka and PostgreSQL', () => {
  it('replays a topic from offset 0 into the same target without changing a byte', async () => {
    const scope = testScope('replay');
    const p = await pipeline(scope, { source: true, batchSize: 100, batchMaxRecords: 150 });
    const rand = seeded(7);
    const src = await createSource(p);
    await addTree(src, rand, { roots: 4, folders: 3, files: 300 }, pastInstants(rand));
    await poll(p);
    await changeSource(src, rand, { updates: 60, deletes: 25 });
    await addTree(src, rand, { roots: 1, folders: 2, files: 30 }, () => 'clock_timestamp()');
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);

    let consumers = await startConsumers(p);
    const first = await waitForParity(p);
    await waitFor('the consumer to reach the end of the topic', () => caughtUp(p), 30_000, () => storedOffsets(p));
    await consumers.stop();
    const writesBefore = await audit.writes();

    await p.targetDb.pool.query(`DELETE FROM ${SCHEMA}.hw_offsets WHERE group_id = $1`, [p.groupId]);
    let replayed = 0;
    consumers = await startConsumers(p, { onApplied: (info) => (replayed += info.duplicates + info.result.applied) });
    await waitFor('the replay to reach the end of the topic', () => caughtUp(p), 60_000, () => storedOffsets(p));
    const second = await digests(p);

    expect(replayed).toBeGreaterThan(300);
    expect(second.target).toEqual(first.target);
    expect(second.equal).toBe(true);
    expect(await audit.writes()).toBe(writesBefore);
    expect(await audit.regressions()).toBe(0);
    expect(await recordsOn(dlqTopicFor(p.topic))).toBe(0);
  });

  it('never lets an older version or an older delete overwrite a newer one', async () => {
    const scope = testScope('older after newer');
    const p = await pipeline(scope, { partitions: 1 });
    await migrateTarget(p);
    const audit = await installAudit(p);
    await startConsumers(p);

    await publish(p, await changes(p, [blob(p, 'doc', 2n ** 58n + 20n)]));
    await waitFor('the newer version', async () => (await heldVersions(p)).get('doc') === (2n ** 58n + 20n).toString());
    await publish(p, [
      ...(await changes(p, [blob(p, 'doc', 2n ** 58n + 10n), blob(p, 'doc', 2n ** 58n + 19n)])),
      deletion(p, 'doc', 2n ** 58n + 15n),
      ...(await changes(p, [blob(p, 'sentinel', 1n)])),
    ]);
    await waitFor('the sentinel behind the older versions', async () => (await heldVersions(p)).has('sentinel'));

    expect((await heldVersions(p)).get('doc')).toBe((2n ** 58n + 20n).toString());
    expect(await audit.regressions()).toBe(0);
    expect(await audit.writes()).toBe(2);
  });

  it('reduces several versions, and a delete and an update of one key, inside one batch', async () => {
    const scope = testScope('one batch');
    const p = await pipeline(scope, { partitions: 1 });
    await migrateTarget(p);
    const audit = await installAudit(p);
    const applied: { duplicates: number; deleted: number }[] = [];
    await startConsumers(p, { onApplied: (info) => applied.push({ duplicates: info.duplicates, deleted: info.result.deleted }) });
    await publish(p, await changes(p, [blob(p, 'gone', 1n), blob(p, 'kept', 1n)]));
    await waitFor('the first versions', async () => (await heldVersions(p)).size === 2);

    // One send to one partition: one record batch, fetched and applied as one.
    await publish(p, [
      ...(await changes(p, [blob(p, 'multi', 30n), blob(p, 'multi', 50n), blob(p, 'multi', 40n)])),
      ...(await changes(p, [blob(p, 'gone', 5n)])), deletion(p, 'gone', 6n),
      deletion(p, 'kept', 5n), ...(await changes(p, [blob(p, 'kept', 6n)])),
      ...(await changes(p, [blob(p, 'sentinel', 1n)])),
    ]);
    await waitFor('the sentinel', async () => (await heldVersions(p)).has('sentinel'));

    expect(Object.fromEntries(await heldVersions(p))).toEqual({ multi: '50', kept: '6', sentinel: '1' });
    // 'kept' was deleted and came back within the batch: the delete is applied (and remembered), then the change.
    const batch = applied.find((a) => a.deleted === 2);
    expect(batch, JSON.stringify(applied)).toMatchObject({ duplicates: 3 });
    expect(await audit.regressions()).toBe(0);
    expect(await rows(p.targetDb.pool, `SELECT key, observed_ticks::text AS t FROM ${SCHEMA}.hw_tombstones ORDER BY key`)).toEqual([{ key: 'gone', t: '6' }, { key: 'kept', t: '5' }]);
  });

  // Behaviour changed (issue 11): a child that overtakes its parent waits in the target's holding table (hw_held),
  // written with its batch, and is promoted set-based when the parent comes — it no longer goes to the retry topic.
  it('holds a child that arrived before its parent in the target, and applies it once the parent comes', async () => {
    const scope = testScope('child first');
    const p = await pipeline(scope, { partitions: 1, retry: { initialDelayMs: 300 } });
    await migrateTarget(p);
    const audit = await installAudit(p);
    await startConsumers(p);
    const parent = blob(p, 'folder', 10n, { isDirectory: true, content: { kind: 'none' }, contentSha256: null, size: null });
    const child = blob(p, 'file', 11n, { pathLocator: '/folder/file/', parentPathLocator: '/folder/' });

    await publish(p, await changes(p, [child]));
    await waitFor('the child held in the target', async () => (await heldChildren(p)).get('file') === '11');
    await sleep(1000);
    expect((await heldVersions(p)).has('file')).toBe(false);
    await publish(p, await changes(p, [parent]));
    await waitFor('the child in the target', async () => (await heldVersions(p)).get('file') === '11', 30_000);

    expect(Object.fromEntries(await heldVersions(p))).toEqual({ folder: '10', file: '11' });
    expect((await heldChildren(p)).size).toBe(0);
    expect(await recordsOn(retryTopicFor(p.topic))).toBe(0);
    expect(await recordsOn(dlqTopicFor(p.topic))).toBe(0);
    expect(await audit.regressions()).toBe(0);
  });

  it('holds the newest version of a waiting child, even when an older one came after it', async () => {
    const scope = testScope('newest child waits');
    const p = await pipeline(scope, { partitions: 1, retry: { initialDelayMs: 300 } });
    await migrateTarget(p);
    const audit = await installAudit(p);
    await startConsumers(p);
    const child = (ticks: bigint) => blob(p, 'file', ticks, { pathLocator: '/dir/file/', parentPathLocator: '/dir/' });

    await publish(p, await changes(p, [child(20n)]));
    await waitFor('the child held in the target', async () => (await heldChildren(p)).get('file') === '20');
    await publish(p, await changes(p, [child(10n)]));
    await publish(p, await changes(p, [blob(p, 'sentinel', 1n)]));
    await waitFor('the sentinel', async () => (await heldVersions(p)).has('sentinel'));
    expect((await heldChildren(p)).get('file')).toBe('20');
    await publish(p, await changes(p, [blob(p, 'dir', 5n, { isDirectory: true, content: { kind: 'none' }, contentSha256: null, size: null })]));
    await waitFor('the child in the target', async () => (await heldVersions(p)).has('file'), 30_000);

    expect((await heldVersions(p)).get('file')).toBe('20');
    expect(await recordsOn(retryTopicFor(p.topic))).toBe(0);
    expect(await audit.regressions()).toBe(0);
  });

  it('applies a large root blob whose chunks arrived after its change, through the retry topic', async () => {
    const scope = testScope('chunks late');
    const p = await pipeline(scope, { partitions: 1, retry: { initialDelayMs: 300 } });
    await migrateTarget(p);
    await startConsumers(p);
    const content = randomBytes(300_000);
    const chunkSize = 128 * 1024;
    const count = Math.ceil(content.length / chunkSize);
    const change = blob(p, 'big', 7n, {
      size: content.length, contentSha256: sha256(content), content: { kind: 'chunked', chunkCount: count, chunkSize, totalSize: content.length },
    });

    await publish(p, await changes(p, [change]));
    await waitFor('the change on the retry topic', async () => (await recordsOn(retryTopicFor(p.topic))) > 0);
    await publish(p, await Promise.all(Array.from({ length: count }, (_, index) => chunkRecord(p.rt.codec, {
      table: p.table.name, key: 'big', contentSha256: sha256(content), index, count, bytes: content.subarray(index * chunkSize, (index + 1) * chunkSize),
    }, p.tenant, 0))));
    await waitFor('the blob in the target', async () => (await heldVersions(p)).has('big'), 30_000);

    expect(await rows(p.targetDb.pool, `SELECT encode(sha256(content), 'hex') AS sha FROM ${p.targetTable}`)).toEqual([{ sha: sha256(content).toString('hex') }]);
    expect(await recordsOn(dlqTopicFor(p.topic))).toBe(0);
  });

  // Chunks of a row that are all in its batch are put together in memory: written once, as the row's content, never
  // into hw_chunks (before, every chunk went through hw_chunks first: the target stored W2's content twice).
  describe('chunked content completed in the batch', () => {
    const CHUNK = 128 * 1024;

    /** A chunked change of `content` and its chunk records (partition 0), in publish order: chunks, then the row. */
    async function chunkedRecords(p: Pipeline, key: string, modifiedOn: Ticks, content: Buffer, chunkBytes?: (index: number, bytes: Buffer) => Buffer): Promise<{ chunks: OutRecord[]; row: OutRecord }> {
      const count = Math.ceil(content.length / CHUNK);
      const chunks = await Promise.all(Array.from({ length: count }, (_, index) => {
        const bytes = content.subarray(index * CHUNK, (index + 1) * CHUNK);
        return chunkRecord(p.rt.codec, { table: p.table.name, key, contentSha256: sha256(content), index, count, bytes: chunkBytes ? chunkBytes(index, bytes) : bytes }, p.tenant, 0);
      }));
      const [row] = await changes(p, [blob(p, key, modifiedOn, {
        size: content.length, contentSha256: sha256(content), content: { kind: 'chunked', chunkCount: count, chunkSize: CHUNK, totalSize: content.length },
      })]);
      return { chunks, row: row! };
    }

    /**
     * Counts every row ever inserted into hw_chunks (a trigger: exact and in the inserting transaction). Creates the
     * target and the topics too, so that records can be published before the consumer starts.
     */
    async function countChunkInserts(p: Pipeline): Promise<() => Promise<number>> {
      await migrateTarget(p);
      await p.rt.ensureTableTopics(p.table);
      await p.targetDb.pool.query(`
        CREATE TABLE ${SCHEMA}.test_chunk_inserts (key text NOT NULL, idx integer NOT NULL);
        CREATE FUNCTION ${SCHEMA}.test_chunk_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO ${SCHEMA}.test_chunk_inserts (key, idx) VALUES (NEW.key, NEW.idx);
          RETURN NEW;
        END $$;
        CREATE TRIGGER test_chunk_inserts AFTER INSERT ON ${SCHEMA}.hw_chunks FOR EACH ROW EXECUTE FUNCTION ${SCHEMA}.test_chunk_inserts();`);
      return async () => Number((await rows(p.targetDb.pool, `SELECT count(*) AS n FROM ${SCHEMA}.test_chunk_inserts`))[0]!.n);
    }

    const contentOf = async (p: Pipeline, key: string): Promise<Buffer | undefined> =>
      (await rows(p.targetDb.pool, `SELECT content FROM ${p.targetTable} WHERE key = $1`, [key]))[0]?.content as Buffer | undefined;

    it('writes a row whose chunks are all in its batch byte-exact, without ever inserting a chunk into hw_chunks', async () => {
      const scope = testScope('chunks in batch');
      const p = await pipeline(scope, { partitions: 1 });
      const inserts = await countChunkInserts(p);
      const content = randomBytes(300_000);
      const big = await chunkedRecords(p, 'big', 7n, content);
      // Published before the consumer starts: its first fetch holds the three chunks and the row.
      await publish(p, [...big.chunks, big.row]);
      await startConsumers(p);
      await waitFor('the blob in the target', async () => (await heldVersions(p)).has('big'), 30_000);

      expect((await contentOf(p, 'big'))!.equals(content)).toBe(true);
      expect(await inserts()).toBe(0);
      expect(await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${SCHEMA}.hw_chunks`)).toEqual([{ n: 0 }]);
      expect(await recordsOn(retryTopicFor(p.topic))).toBe(0);
    });

    it('still assembles a row whose chunks came in an earlier batch (in hw_chunks), next to one completed in its batch', async () => {
      const scope = testScope('chunks across batches');
      const p = await pipeline(scope, { partitions: 1, batchMaxRecords: 5 });
      const inserts = await countChunkInserts(p);
      const a = randomBytes(300_000);
      const b = randomBytes(300_000);
      const ra = await chunkedRecords(p, 'a', 7n, a);
      const rb = await chunkedRecords(p, 'b', 8n, b);
      // Batches: [a0 a1 a2 A b0] [b1 b2 B]: `a` is completed in its batch, `b` is split over two.
      await publish(p, [...ra.chunks, ra.row, ...rb.chunks, rb.row]);
      await startConsumers(p);
      await waitFor('both blobs in the target', async () => (await heldVersions(p)).size === 2, 30_000);

      expect((await contentOf(p, 'a'))!.equals(a)).toBe(true);
      expect((await contentOf(p, 'b'))!.equals(b)).toBe(true);
      // Only b's chunks went through hw_chunks, and they are gone once used.
      expect(await rows(p.targetDb.pool, `SELECT key, count(*)::int AS n FROM ${SCHEMA}.test_chunk_inserts GROUP BY key`)).toEqual([{ key: 'b', n: 3 }]);
      expect(await inserts()).toBe(3);
      expect(await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${SCHEMA}.hw_chunks`)).toEqual([{ n: 0 }]);
    });

    it('does not write a row whose chunks, all in its batch, do not make its content: it waits as incomplete', async () => {
      const scope = testScope('chunks corrupt');
      const p = await pipeline(scope, { partitions: 1, retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
      await countChunkInserts(p);
      const content = randomBytes(300_000);
      // Chunk 1 arrives with one byte flipped: same key, hash and index, wrong bytes.
      const bad = await chunkedRecords(p, 'bad', 7n, content, (index, bytes) => {
        if (index !== 1) return bytes;
        const copy = Buffer.from(bytes);
        copy[100] = copy[100]! ^ 0xff;
        return copy;
      });
      const [sentinel] = await changes(p, [blob(p, 'sentinel', 8n)]);
      await publish(p, [...bad.chunks, bad.row, sentinel!]);
      await startConsumers(p);
      await waitFor('the batch applied', async () => (await heldVersions(p)).has('sentinel'), 30_000);

      expect((await heldVersions(p)).has('bad')).toBe(false);
      expect(await recordsOn(retryTopicFor(p.topic))).toBe(1);
      expect(await rows(p.targetDb.pool, `SELECT key, reason FROM ${SCHEMA}.hw_parked`)).toEqual([{ key: 'bad', reason: 'incomplete' }]);
      // As before: the chunks stay staged (the SQL assembly found the hash wrong), waiting for a good copy.
      expect(await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${SCHEMA}.hw_chunks WHERE key = 'bad'`)).toEqual([{ n: 3 }]);
    });

    it('leaves no chunk of a version superseded in the same batch behind', async () => {
      const scope = testScope('chunks superseded');
      const p = await pipeline(scope, { partitions: 1 });
      const inserts = await countChunkInserts(p);
      const older = randomBytes(300_000);
      const newer = randomBytes(300_000);
      const v1 = await chunkedRecords(p, 'k', 7n, older);
      const v2 = await chunkedRecords(p, 'k', 9n, newer);
      await publish(p, [...v1.chunks, v1.row, ...v2.chunks, v2.row]);
      await startConsumers(p);
      await waitFor('the newer version in the target', async () => (await heldVersions(p)).get('k') === '9', 30_000);

      expect((await contentOf(p, 'k'))!.equals(newer)).toBe(true);
      expect(await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${SCHEMA}.hw_chunks`)).toEqual([{ n: 0 }]);
      expect(await inserts()).toBe(0);
    });
  });

  // The retry loop's upsert of a key and the main loop's delete of the same key run in two concurrent transactions;
  // without the writers' table lock (shared for upserts, exclusive with deletes) neither would see the other's
  // uncommitted row or tombstone, and the deleted row would come back (I3).
  it('keeps a row deleted while its retried version was being written', async () => {
    const scope = testScope('delete during retry');
    const p = await pipeline(scope, { partitions: 1, retry: { initialDelayMs: 300 } });
    await migrateTarget(p);
    const audit = await installAudit(p);
    // A row trigger that holds the insert of `file` only: the retry loop's upsert stops after its tombstone check.
    await p.targetDb.pool.query(`
      CREATE FUNCTION ${SCHEMA}.test_key_gate() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock_shared(${GATE_LOCK});
        RETURN NEW;
      END $$;
      CREATE TRIGGER test_key_gate BEFORE INSERT ON ${p.targetTable} FOR EACH ROW WHEN (NEW.key = 'file') EXECUTE FUNCTION ${SCHEMA}.test_key_gate();`);
    const holder = new pg.Client({ connectionString: p.targetDb.url });
    await holder.connect();
    scope.defer(() => holder.end());
    await holder.query('SELECT pg_advisory_lock($1)', [GATE_LOCK]);
    await startConsumers(p);

    // The retry loop serves rows whose content is incomplete (children wait in hw_held instead): `file` comes
    // before its chunks, goes to the retry topic, and is retried once they are staged.
    const content = randomBytes(200_000);
    const chunkSize = 128 * 1024;
    const count = Math.ceil(content.length / chunkSize);
    await publish(p, await changes(p, [blob(p, 'folder', 10n, { isDirectory: true, content: { kind: 'none' }, contentSha256: null, size: null })]));
    await publish(p, await changes(p, [blob(p, 'file', 11n, {
      pathLocator: '/folder/file/', parentPathLocator: '/folder/',
      size: content.length, contentSha256: sha256(content), content: { kind: 'chunked', chunkCount: count, chunkSize, totalSize: content.length },
    })]));
    await waitFor('the row on the retry topic', async () => (await recordsOn(retryTopicFor(p.topic))) > 0);
    await publish(p, await Promise.all(Array.from({ length: count }, (_, index) => chunkRecord(p.rt.codec, {
      table: p.table.name, key: 'file', contentSha256: sha256(content), index, count, bytes: content.subarray(index * chunkSize, (index + 1) * chunkSize),
    }, p.tenant, 0))));
    await waitFor('the retried row held in its upsert', async () => Number((await rows(p.targetDb.pool, `SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`))[0]!.n) > 0, 30_000);
    // Meanwhile the row is deleted at the source: its tombstone is applied by the main loop and committed.
    await publish(p, [deletion(p, 'file', 11n), ...(await changes(p, [blob(p, 'sentinel', 1n)]))]);
    // The tombstone is either committed already, or its transaction waits for the held upsert (a serialised writer).
    const lockWaiters = async () => Number((await rows(p.targetDb.pool, `SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock'`))[0]!.n);
    await waitFor('the tombstone applied or waiting', async () => (await heldVersions(p)).has('sentinel') || (await lockWaiters()) >= 2);
    await holder.query('SELECT pg_advisory_unlock($1)', [GATE_LOCK]);
    await waitFor('the sentinel behind the tombstone', async () => (await heldVersions(p)).has('sentinel'));
    await waitFor('the retry topic to drain', async () => {
      const ends = await withAdmin((admin) => admin.fetchTopicOffsets(retryTopicFor(p.topic)));
      const stored = (await storedOffsets(p)).find((o) => o.topic === retryTopicFor(p.topic));
      return stored !== undefined && BigInt(String(stored.o)) >= BigInt(ends[0]!.high);
    }, 30_000);

    expect(await rows(p.targetDb.pool, `SELECT key, modified_on_ticks::text AS t FROM ${SCHEMA}.hw_tombstones`)).toEqual([{ key: 'file', t: '11' }]);
    expect(Object.fromEntries(await heldVersions(p))).toEqual({ folder: '10', sentinel: '1' });
    expect(await audit.regressions()).toBe(0);
  });

  it('sends poison records to the dead-letter topic with the reason and keeps applying good ones', async () => {
    const scope = testScope('poison');
    const p = await pipeline(scope, { partitions: 1 });
    await migrateTarget(p);
    await startConsumers(p);
    const good = (i: number) => blob(p, `good-${i}`, BigInt(i + 1));
    const mismatched = { ...(await changeRecord(p.rt.codec, blob(p, 'event-key', 1n))), key: 'record-key' };

    await publish(p, [
      ...(await changes(p, [good(0), good(1)])),
      { key: 'garbage', value: Buffer.concat([Buffer.from([0x7f]), randomBytes(63)]), headers: {} },
      ...(await changes(p, [good(2)])),
      mismatched,
      { key: 'bare', value: null, headers: {} },
      ...(await changes(p, [blob(p, 'nul-name', 1n, { name: 'a\u0000b' }), good(3)])),
    ]);
    await waitFor('the first good rows', async () => (await heldVersions(p)).size >= 4);
    await publish(p, await changes(p, [good(4), good(5)]));
    await waitFor('the good rows after the poison', async () => (await heldVersions(p)).size === 6, 30_000);

    expect([...(await heldVersions(p)).keys()].sort()).toEqual(['good-0', 'good-1', 'good-2', 'good-3', 'good-4', 'good-5']);
    const dead = await consumeMessages({ topic: dlqTopicFor(p.topic), groupId: uniqueName(scope.label, 'dlq-reader'), count: 4 });
    const reasons = Object.fromEntries(dead.map((m) => [m.key?.toString() ?? '', String(m.headers[HEADERS.error])]));
    expect(reasons).toEqual({
      garbage: expect.stringMatching(/neither Avro single-object nor Confluent framed/),
      'record-key': expect.stringMatching(/record key "record-key" differs from the event key "event-key"/),
      bare: expect.stringMatching(/tombstone without hw-table and hw-observed-ticks \(or hw-modified-on-ticks\) headers/),
      'nul-name': expect.stringMatching(/invalid byte sequence for encoding "UTF8": 0x00/),
    });
    for (const m of dead) {
      expect(String(m.headers[HEADERS.originalTopic])).toBe(p.topic);
      expect(String(m.headers[HEADERS.errorKind])).toBe('poison');
    }
    expect(dead.find((m) => m.key?.toString() === 'bare')!.value).toBeNull();
  });

  it('puts a 3 MiB blob back together from 1 MiB messages', async () => {
    const scope = testScope('chunked');
    const p = await pipeline(scope, { source: true, maxMessageBytes: MiB });
    const src = await createSource(p);
    const big = randomBytes(3 * MiB);
    const folder = { id: randomUUID(), name: 'folder', path: '/1/', parent: null, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '1 minute'`, bu: src.bus[0]! };
    const bigId = randomUUID();
    await insertRows(src.pool, [
      folder,
      { ...folder, id: bigId, name: 'big.bin', path: '/1/2/', parent: '/1/', isDirectory: false, content: big },
      { ...folder, id: randomUUID(), name: 'mid.bin', path: '/1/3/', parent: '/1/', isDirectory: false, content: randomBytes(700_000) },
    ]);
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);
    await startConsumers(p);
    await waitForParity(p, 60_000);

    const shas = async (pool: pg.Pool, sql: string) => (await rows(pool, sql)).map((r) => r.sha);
    expect(await shas(p.targetDb.pool, `SELECT encode(sha256(content), 'hex') AS sha FROM ${p.targetTable} WHERE name = 'big.bin'`)).toEqual([sha256(big).toString('hex')]);
    expect(await shas(p.targetDb.pool, `SELECT encode(sha256(content), 'hex') AS sha FROM ${p.targetTable} WHERE name = 'big.bin'`))
      .toEqual(await shas(src.pool, `SELECT encode(sha256(file_stream), 'hex') AS sha FROM demo."ReferralAttachment" WHERE name = 'big.bin'`));
    expect(await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${SCHEMA}.hw_chunks`)).toEqual([{ n: 0 }]);
    // It travelled as chunks: 3 MiB over records of at most 1 MiB (less the room kept for key and headers).
    expect(await rows(p.targetDb.pool, `SELECT chunk_count FROM hw_control.published WHERE key = $1`, [bigId])).toEqual([{ chunk_count: 4 }]);
    expect(await audit.regressions()).toBe(0);
  });

  /**
   * A first load is applied completely; then the gate is shut and a second load published, so the consumer's next
   * transaction stops after its COPY.
   */
  async function heldTransaction(label: string, seed: number) {
    const scope = testScope(label);
    const p = await pipeline(scope, { source: true, batchMaxRecords: 100, batchSize: 250 });
    const rand = seeded(seed);
    const src = await createSource(p);
    await addTree(src, rand, { roots: 4, folders: 3, files: 800 }, pastInstants(rand));
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);
    const gate = await installGate(p);
    const files = await writeConfigFile(p);
    const first = startConsumerProcess(p, files, 'consumer-1');
    await waitForParity(p, 90_000);
    await gate.shut();
    await changeSource(src, rand, { updates: 150, deletes: 40 });
    await addTree(src, rand, { roots: 2, folders: 3, files: 700 }, () => 'clock_timestamp()');
    await poll(p);
    await waitFor('a transaction held after its COPY', async () => (await gate.waiting()) > 0, 60_000);
    return { p, audit, gate, files, first };
  }

  const rowCount = async (p: Pipeline) => (await rows(p.targetDb.pool, `SELECT count(*)::int AS n FROM ${p.targetTable}`))[0]!.n;

  it('loses nothing when the consumer is killed between its COPY and its COMMIT', async () => {
    const { p, audit, gate, files, first } = await heldTransaction('kill in transaction', 11);
    const held = { offsets: await mainOffsets(p), rows: await rowCount(p) };
    await first.kill('SIGKILL');
    await gate.open();
    // The killed session's transaction can never commit: its client is gone.
    await sleep(500);
    expect(await mainOffsets(p)).toBe(held.offsets);
    expect(await rowCount(p)).toBe(held.rows);

    startConsumerProcess(p, files, 'consumer-2');
    await waitForParity(p, 120_000);
    expect(await audit.regressions()).toBe(0);
    console.log(`[consumer test] killed inside a transaction at ${held.rows} rows; duplicate writes ${await audit.duplicates()}`);
  });

  it.skipIf(!canControlBroker())('loses nothing when the consumer is killed between the database commit and the Kafka commit', async () => {
    const { p, audit, gate, files, first } = await heldTransaction('kill before kafka commit', 13);
    const before = await mainOffsets(p);
    // With the broker frozen, the released transaction commits and the consumer then hangs in its Kafka commit.
    await killBroker('SIGSTOP');
    let committedInDatabase: boolean;
    try {
      await gate.open();
      committedInDatabase = await waitFor('the database commit', async () => (await mainOffsets(p)) !== before, 20_000).then(() => true, () => false);
      await first.kill('SIGKILL');
    } finally {
      await killBroker('SIGCONT');
    }
    expect(committedInDatabase).toBe(true);

    startConsumerProcess(p, files, 'consumer-2');
    await waitForParity(p, 120_000);
    expect(await audit.regressions()).toBe(0);
    console.log(`[consumer test] killed after the database commit, before the Kafka commit; duplicate writes ${await audit.duplicates()}`);
  });

  it('loses nothing when the consumer is killed at random points of a load', async () => {
    const seed = testSeed();
    console.log(`[consumer test] random kills with seed ${seed} (HIGHWATER_TEST_SEED=${seed} replays them)`);
    const rand = seeded(seed);
    const scope = testScope('random kills');
    const p = await pipeline(scope, { source: true, batchMaxRecords: 100, batchSize: 250 });
    const src = await createSource(p);
    await addTree(src, rand, { roots: 5, folders: 4, files: 1200 }, pastInstants(rand));
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);
    const files = await writeConfigFile(p);

    const kills: number[] = [];
    for (let round = 0; round < 2; round++) {
      const child = startConsumerProcess(p, files, `consumer-${round + 1}`);
      const from = await storedProgress(p);
      const total = await recordsOn(p.topic);
      const killAt = from + 1 + Math.floor(rand() * 0.8 * Math.max(1, total - from));
      await waitFor(`progress to offset sum ${killAt}`, async () => (await storedProgress(p)) >= killAt, 90_000, () => storedOffsets(p), 50);
      await child.kill('SIGKILL');
      kills.push(await storedProgress(p));
      if (round === 0) {
        await changeSource(src, rand, { updates: 200, deletes: 50 });
        await addTree(src, rand, { roots: 2, folders: 3, files: 600 }, () => 'clock_timestamp()');
        await poll(p);
      }
    }
    startConsumerProcess(p, files, 'consumer-3');
    await waitForParity(p, 120_000);

    expect(await audit.regressions()).toBe(0);
    console.log(`[consumer test] seed ${seed}: killed at stored offset sums ${kills.join(', ')}; writes ${await audit.writes()}, duplicate writes ${await audit.duplicates()}`);
  });

  it('shares a load between two consumer processes, one stopped and restarted midway', async () => {
    const scope = testScope('two instances');
    const p = await pipeline(scope, { source: true, batchMaxRecords: 100, batchSize: 250 });
    const rand = seeded(17);
    const src = await createSource(p);
    await addTree(src, rand, { roots: 5, folders: 4, files: 1500 }, pastInstants(rand));
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);
    const files = await writeConfigFile(p);

    const a = startConsumerProcess(p, files, 'consumer-a');
    startConsumerProcess(p, files, 'consumer-b');
    await waitFor('some progress', async () => (await storedProgress(p)) > 200, 60_000);
    await a.kill('SIGTERM');
    await changeSource(src, rand, { updates: 150, deletes: 40 });
    await addTree(src, rand, { roots: 1, folders: 3, files: 600 }, () => 'clock_timestamp()');
    await poll(p);
    startConsumerProcess(p, files, 'consumer-a2');
    await waitForParity(p, 120_000);

    expect(await audit.regressions()).toBe(0);
    console.log(`[consumer test] two instances: writes ${await audit.writes()}, duplicate writes ${await audit.duplicates()}`);
  });
});

describe('several partitions applied at once', () => {
  /**
   * The real writer, except that the first `parties` transactions that write rows wait for one another just before
   * COMMIT: all of them have run every statement without seeing the others' rows. With fewer batches in flight at
   * once than `parties`, the first ones wait for ever (the test times out).
   */
  function rendezvousBeforeCommit(writer: TargetWriter, parties: number): TargetWriter {
    let arrived = 0;
    let release: () => void = () => undefined;
    const all = new Promise<void>((resolve) => (release = resolve));
    const apply = (batch: ApplyBatch) => {
      if (batch.rows.length === 0 || arrived >= parties) return writer.apply(batch);
      return writer.apply({
        ...batch,
        beforeCommit: async (result) => {
          if (++arrived === parties) release();
          await all;
          await batch.beforeCommit?.(result);
        },
      });
    };
    return new Proxy(writer, {
      get: (target, prop) => {
        if (prop === 'apply') return apply;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  it('promotes a child one partition held while a concurrent batch of another wrote its parent, without the resolver', async () => {
    const scope = testScope('overlap promote');
    const p = await pipeline(scope, { partitions: 3 });
    await p.rt.ensureTableTopics(p.table);
    const writer = await p.rt.writer(p.target);
    scope.defer(() => writer.close());
    await writer.migrate();
    const parent = blob(p, 'folder', 10n, { isDirectory: true, content: { kind: 'none' }, contentSha256: null, size: null });
    const child = blob(p, 'file', 11n, { pathLocator: '/folder/file/', parentPathLocator: '/folder/' });
    const [parentRecord, childRecord] = await changes(p, [parent, child]);
    await publish(p, [{ ...parentRecord!, partition: 0 }, { ...childRecord!, partition: 1 }]);

    // The apply loop alone: no HeldResolver, whose rounds promote across the table too.
    const logger = createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'error' });
    const binding = { table: p.table.name, topic: p.topic, retryTopic: retryTopicFor(p.topic), dlqTopic: dlqTopicFor(p.topic) };
    const loop = new ApplyLoop({
      groupId: p.groupId, bindings: [binding], writer: rendezvousBeforeCommit(writer, 2), codec: p.rt.codec, publisher: await p.rt.publisher(), logger,
      batchMaxRecords: 100, retryDelayMs: 300,
    });
    const consumer = new ManualConsumer(p.rt.kafka, {
      groupId: p.groupId, topics: [p.topic], partitionsConsumedConcurrently: 3,
      positionOf: async (topic, partition) => (await writer.storedOffsets(p.groupId, [topic])).find((o) => o.partition === partition)?.nextOffset ?? null,
      onAssigned: () => loop.forgetPositions(),
    });
    loop.attach(consumer);
    scope.defer(() => consumer.stop());
    const decodedBefore = { ...fetchDecodes };
    await consumer.start((batch) => loop.handle(batch));
    expect(consumer.fastDecoder).toBe(true);

    await waitFor('both batches applied', () => caughtUp(p), 60_000, () => storedOffsets(p));
    // The records came through the one-pass Fetch decoder (src/kafka/fetch-response.ts), none through kafkajs' own.
    expect(fetchDecodes.fast).toBeGreaterThan(decodedBefore.fast);
    expect(fetchDecodes.kafkajs).toBe(decodedBefore.kafkajs);
    await waitFor('the child in the target', async () => (await heldVersions(p)).get('file') === '11', 30_000, async () => ({ held: Object.fromEntries(await heldChildren(p)) }));
    expect(Object.fromEntries(await heldVersions(p))).toEqual({ folder: '10', file: '11' });
    expect((await heldChildren(p)).size).toBe(0);
  });

  /**
   * The real writer, recording what each transaction that wrote rows covered: its partitions and how many children
   * it held (their parent in neither the transaction nor the target).
   */
  function recordingWriter(writer: TargetWriter): { writer: TargetWriter; writes: { partitions: number[]; rows: number; held: number }[] } {
    const writes: { partitions: number[]; rows: number; held: number }[] = [];
    const apply = async (batch: ApplyBatch) => {
      const result = await writer.apply(batch);
      if (batch.rows.length > 0) writes.push({ partitions: batch.offsets.map((o) => o.partition), rows: batch.rows.length, held: result.held.length });
      return result;
    };
    const proxy = new Proxy(writer, {
      get: (target, prop) => {
        if (prop === 'apply') return apply;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    return { writer: proxy, writes };
  }

  const fetchCases = [
    { title: 'applies a fetch\'s partitions in one transaction: no child held', together: true, files: 400, kafkajsTotal: false },
    { title: 'applies each partition in a transaction of its own: children held', together: false, files: 400, kafkajsTotal: false },
    // Over 10 MiB of content: kafkajs' own limit for a whole fetch would bring one or two of the six partitions.
    { title: 'applies a fetch of more than 10 MiB together: no child held', together: true, files: 4000, kafkajsTotal: false },
    { title: 'holds children when a fetch of more than 10 MiB is cut at kafkajs\' 10 MiB', together: true, files: 4000, kafkajsTotal: true },
  ];
  for (const c of fetchCases) {
    it(`${c.title} when the poller sent parents and children to six different partitions (${c.files} files)`, async () => {
      const scope = testScope(`fetch ${c.together ? 'together' : 'apart'} ${c.files}${c.kafkajsTotal ? ' cut' : ''}`);
      const p = await pipeline(scope, { source: true, partitions: 6, batchSize: 500 });
      const rand = seeded(41);
      const src = await createSource(p);
      const rowCount = await addTree(src, rand, { roots: 3, folders: 6, files: c.files }, pastInstants(rand));
      await poll(p);
      const writer = await p.rt.writer(p.target);
      scope.defer(() => writer.close());
      await writer.migrate();
      const recording = recordingWriter(writer);

      // The apply loop alone (no HeldResolver), as the wiring builds it for each mode.
      const mode = applyMode(c.together ? undefined : 1);
      const limits = fetchLimits({ ...p.target, partitionsConsumedConcurrently: c.together ? undefined : 1 });
      const logger = createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'error' });
      const binding = { table: p.table.name, topic: p.topic, retryTopic: retryTopicFor(p.topic), dlqTopic: dlqTopicFor(p.topic) };
      const loop = new ApplyLoop({
        groupId: p.groupId, bindings: [binding], writer: recording.writer, codec: p.rt.codec, publisher: await p.rt.publisher(), logger,
        batchMaxRecords: 5000, retryDelayMs: 300, applyFetchTogether: mode.together,
      });
      const consumer = new ManualConsumer(p.rt.kafka, {
        groupId: p.groupId, topics: [p.topic], partitionsConsumedConcurrently: mode.kafkaConcurrency,
        maxBytesPerPartition: limits.maxBytesPerPartition, ...(c.kafkajsTotal || limits.maxBytes === undefined ? {} : { maxBytes: limits.maxBytes }),
        positionOf: async (topic, partition) => (await writer.storedOffsets(p.groupId, [topic])).find((o) => o.partition === partition)?.nextOffset ?? null,
        onAssigned: () => loop.forgetPositions(),
      });
      loop.attach(consumer);
      scope.defer(() => consumer.stop());
      await consumer.start((batch) => loop.handle(batch));
      await waitFor('every partition applied', () => caughtUp(p), 90_000, () => storedOffsets(p));

      const held = recording.writes.reduce((n, w) => n + w.held, 0);
      const written = recording.writes.reduce((n, w) => n + w.rows, 0);
      const writes = JSON.stringify(recording.writes.map((w) => ({ ...w, partitions: w.partitions.join(',') })));
      expect(written).toBeGreaterThanOrEqual(rowCount);
      if (c.together && !c.kafkajsTotal) {
        // Everything was in the topic before the consumer started: one fetch brings every partition.
        expect(held, writes).toBe(0);
        expect(recording.writes.some((w) => w.partitions.length === 6), writes).toBe(true);
      } else {
        // The contrasts that show the test can fail: one partition at a time, or a fetch cut after a partition or
        // two, holds the children whose parents are in the partitions not applied yet.
        expect(held, writes).toBeGreaterThan(0);
        if (!c.together) expect(recording.writes.every((w) => w.partitions.length === 1), writes).toBe(true);
      }
    });
  }

  it('applies a tree with updates and deletes over six partitions, three at once and in several slices, into what the source holds', async () => {
    const scope = testScope('concurrent tree');
    const p = await pipeline(scope, { source: true, partitions: 6, batchSize: 100, batchMaxRecords: 40, partitionsConsumedConcurrently: 3 });
    const rand = seeded(31);
    const src = await createSource(p);
    await addTree(src, rand, { roots: 4, folders: 5, files: 600 }, pastInstants(rand));
    await poll(p);
    await changeSource(src, rand, { updates: 120, deletes: 60 });
    await addTree(src, rand, { roots: 2, folders: 3, files: 150 }, () => 'clock_timestamp()');
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);

    await startConsumers(p);
    await waitForParity(p);
    await waitFor('the consumer to reach the end of the topic', () => caughtUp(p), 30_000, () => storedOffsets(p));

    expect(await audit.regressions()).toBe(0);
    expect(await audit.duplicates()).toBe(0);
    expect((await heldChildren(p)).size).toBe(0);
    expect(await recordsOn(dlqTopicFor(p.topic))).toBe(0);
  });

  it('loses and duplicates nothing when members join and leave during concurrent batches', async () => {
    const scope = testScope('concurrent rebalance');
    const p = await pipeline(scope, { source: true, partitions: 6, batchSize: 250, batchMaxRecords: 50, partitionsConsumedConcurrently: 3 });
    const rand = seeded(37);
    const src = await createSource(p);
    await addTree(src, rand, { roots: 5, folders: 4, files: 1500 }, pastInstants(rand));
    await poll(p);
    await migrateTarget(p);
    const audit = await installAudit(p);

    const a = await p.rt.startConsumers(p.target);
    scope.defer(() => a.stop());
    await waitFor('some progress', async () => (await storedProgress(p)) > 150, 60_000);
    // A second member: the group rebalances while the first applies three partitions.
    const b = await p.rt.startConsumers(p.target);
    scope.defer(() => b.stop());
    await changeSource(src, rand, { updates: 150, deletes: 40 });
    await poll(p);
    await waitFor('more progress', async () => (await storedProgress(p)) > 600, 60_000);
    // The first leaves mid-load: its partitions move to the second.
    await a.stop();
    await waitForParity(p, 120_000);
    await waitFor('the consumer to reach the end of the topic', () => caughtUp(p), 30_000, () => storedOffsets(p));

    expect(await audit.regressions()).toBe(0);
    expect(await audit.duplicates()).toBe(0);
    expect(await recordsOn(dlqTopicFor(p.topic))).toBe(0);
  });

  it('rolls back a batch in flight whose consumer stops before its COMMIT: no rows, no offsets', async () => {
    const scope = testScope('no longer current');
    const p = await pipeline(scope, { partitions: 1 });
    await p.rt.ensureTableTopics(p.table);
    const writer = await p.rt.writer(p.target);
    scope.defer(() => writer.close());
    await writer.migrate();
    await publish(p, await changes(p, [blob(p, 'a', 10n), blob(p, 'b', 11n)]));

    // The real writer; its first transaction with rows stops just before COMMIT until the test lets it go on.
    let inTransaction: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (inTransaction = resolve));
    let goOn: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (goOn = resolve));
    let gated = false;
    const gate = new Proxy(writer, {
      get: (target, prop) => {
        if (prop === 'apply') {
          return (batch: ApplyBatch) => {
            if (gated || batch.rows.length === 0) return writer.apply(batch);
            gated = true;
            return writer.apply({ ...batch, beforeCommit: async (result) => {
              inTransaction();
              await released;
              await batch.beforeCommit?.(result);
            } });
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const logger = createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'error' });
    const binding = { table: p.table.name, topic: p.topic, retryTopic: retryTopicFor(p.topic), dlqTopic: dlqTopicFor(p.topic) };
    const loop = new ApplyLoop({ groupId: p.groupId, bindings: [binding], writer: gate, codec: p.rt.codec, publisher: await p.rt.publisher(), logger, batchMaxRecords: 100, retryDelayMs: 300 });
    const consumer = new ManualConsumer(p.rt.kafka, {
      groupId: p.groupId, topics: [p.topic],
      positionOf: async (topic, partition) => (await writer.storedOffsets(p.groupId, [topic])).find((o) => o.partition === partition)?.nextOffset ?? null,
      onAssigned: () => loop.forgetPositions(),
    });
    loop.attach(consumer);
    let current: PartitionBatch | undefined;
    await consumer.start((batch) => {
      current = batch;
      return loop.handle(batch);
    });
    await reached;
    const stopped = consumer.stop();
    await waitFor('the batch to be no longer current', async () => current !== undefined && !current.isCurrent(), 30_000);
    goOn();
    await stopped;

    expect((await heldVersions(p)).size).toBe(0);
    expect(await storedOffsets(p)).toEqual([]);
  });
});
