/**
 * A whole pipeline in one test, in this process: a FileTable-like PostgreSQL source (ModifiedOn nullable, as in the
 * users' CRM metadata tables), the real poller, the real Kafka broker of the test run, the real consumers and a
 * PostgreSQL target whose database also holds the control store. Every pipeline owns its databases, topics and
 * group ids (kept when the test fails) and is closed when the test ends.
 *
 * Helpers speak the source's language (rows, BUs, ModifiedOn as SQL), so a test reads as a history of the source.
 */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { onTestFinished } from 'vitest';
import { dlqTopicFor, parseConfigObject, retryTopicFor } from '../../src/config/load.js';
import type { Config, TableConfig, TargetConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import type { RunSummary } from '../../src/poll/poller.js';
import { quotePg } from '../../src/sql/ident.js';
import { sqlTableName } from '../../src/apply/sink/batch.js';
import { Runtime, type RunningConsumers } from '../../src/wiring.js';
import { brokers, deleteTopics, uniqueName, withAdmin } from './kafka.js';
import { createTestDatabase, type TestDatabase } from './pg.js';
import { SOURCE_DDL } from './source-ddl.js';

export { SOURCE_DDL };

export interface PipelineOptions {
  readonly partitions?: number;
  readonly batchSize?: number;
  readonly safetyBufferMinutes?: number;
  readonly maxMessageBytes?: number;
  readonly inlineContentMaxBytes?: number;
  readonly excludedKeys?: readonly string[];
  /** Extra topic settings, applied by creating the table topic before the pipeline does. */
  readonly topicConfig?: Readonly<Record<string, string>>;
  readonly retry?: Partial<TargetConfig['retry']>;
  readonly poll?: Record<string, unknown>;
}

export interface SourceRowSpec {
  readonly id?: string;
  readonly path: string;
  readonly parent?: string | null;
  readonly content?: Buffer | null;
  readonly directory?: boolean;
  /** SQL for ModifiedOn (our own expressions, never values), or null for NULL. Default clock_timestamp(). */
  readonly modifiedOnSql?: string | null;
  readonly bu?: string;
}

export interface Pipeline {
  readonly config: Config;
  /** The configuration as written (JSON is YAML), for tests that start the CLI in a child process. */
  readonly raw: Record<string, unknown>;
  readonly rt: Runtime;
  readonly table: TableConfig;
  readonly target: TargetConfig;
  readonly topic: string;
  readonly src: pg.Pool;
  readonly tgt: pg.Pool;
  readonly bus: readonly string[];
  /** `tgt.<table>` quoted. */
  readonly targetTable: string;
  /** Inserts rows (blob + metadata rows) in one transaction; returns their ids. */
  insert(rows: readonly SourceRowSpec[]): Promise<string[]>;
  /** One poll run in this process. */
  poll(): Promise<RunSummary>;
  /** Starts the consumers (once); they stop when the test ends. */
  consume(): Promise<RunningConsumers>;
  /** Waits until the target holds everything on the table topic (its stored offsets reach the topic's end). */
  drain(timeoutMs?: number): Promise<void>;
  /** Key → { modifiedOn ticks (text or null), sha256 hex of content (or null) } in the target. */
  targetRows(): Promise<Map<string, { ticks: string | null; sha: string | null }>>;
  /** The same for the replicated source set (blob ⋈ meta ⋈ BU map, not excluded), for comparisons. */
  sourceRows(): Promise<Map<string, { ticks: string | null; sha: string | null }>>;
}

export const sha256Hex = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

export async function pipeline(label: string, options: PipelineOptions = {}): Promise<Pipeline> {
  const scope = ownedResources(label);
  const source = await scope.database('src');
  const target = await scope.database('tgt');
  const src = source.pool();
  await src.query(SOURCE_DDL);
  const bus = [randomUUID(), randomUUID()];
  for (const id of bus) await src.query('INSERT INTO src.bu_map (id) VALUES ($1)', [id]);
  const topic = uniqueName(label, 'blobs');
  const groupId = uniqueName(label, 'group');
  scope.topics([topic, retryTopicFor(topic), dlqTopicFor(topic)]);
  if (options.topicConfig) await createTopic(topic, options.partitions ?? 3, options.topicConfig);
  const raw = rawConfig(options, { source: source.url, target: target.url, topic, groupId, clientId: uniqueName(label, 'client') });
  const config = parseConfigObject(raw, `${label} configuration`);
  const rt = new Runtime(config, createLogger({ level: process.env.HIGHWATER_TEST_LOG_LEVEL ?? 'silent' }));
  scope.defer(() => rt.close());
  const table = config.tables[0]!;
  const tgt = target.pool();
  const targetTable = `${quotePg('tgt')}.${quotePg(sqlTableName(table.name, 54))}`;
  let consumers: RunningConsumers | undefined;
  const replicated = (where: string) => `SELECT b.stream_id::text AS key, (extract(epoch from m."ModifiedOn") * 10000000)::bigint::text AS ticks,
      encode(sha256(b.file_stream), 'hex') AS sha
    FROM src.blobs b JOIN src.meta m ON m.id = b.stream_id JOIN src.bu_map u ON u.id = m.bu ${where}`;
  return {
    config, raw, rt, table, target: config.targets[0]!, topic, src, tgt, bus, targetTable,
    insert: (rows) => insertRows(src, rows, bus),
    poll: async () => {
      await rt.store().migrate();
      return (await rt.poller()).run({ requestedBy: 'test' });
    },
    consume: async () => {
      if (!consumers) {
        const running = await rt.startConsumers(config.targets[0]!);
        consumers = running;
        scope.defer(() => running.stop());
      }
      return consumers;
    },
    drain: (timeoutMs = 60_000) => drainTopic(tgt, groupId, topic, timeoutMs),
    targetRows: async () => asMap((await tgt.query(`SELECT key, modified_on_ticks::text AS ticks, encode(sha256(content), 'hex') AS sha FROM ${targetTable}`)).rows),
    sourceRows: async () => {
      const excluded = (options.excludedKeys ?? []).map((k) => k.toLowerCase());
      return asMap((await src.query(replicated('WHERE NOT (lower(b.stream_id::text) = ANY($1::text[]))'), [excluded])).rows);
    },
  };
}

function rawConfig(options: PipelineOptions, names: { source: string; target: string; topic: string; groupId: string; clientId: string }): Record<string, unknown> {
  return {
    controlStore: { database: 'target', schema: 'hw_control' },
    kafka: { brokers: brokers(), partitions: options.partitions ?? 3, clientId: names.clientId, maxMessageBytes: options.maxMessageBytes ?? 1 << 20 },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: names.source, poolSize: 3 },
      { name: 'target', kind: 'postgres', connectionString: names.target, poolSize: 4 },
    ],
    tables: [{
      name: 'Attachments',
      source: 'source',
      topic: names.topic,
      blob: { schema: 'src', table: 'blobs' },
      metadata: { schema: 'src', table: 'meta', joinColumn: 'id' },
      businessUnit: { column: 'bu', mapTable: { schema: 'src', table: 'bu_map', idColumn: 'id' } },
      safetyBufferMinutes: options.safetyBufferMinutes ?? 0,
      batchSize: options.batchSize ?? 50,
      excludedKeys: [...(options.excludedKeys ?? [])],
    }],
    targets: [{
      name: 'replica', database: 'target', schema: 'tgt', groupId: names.groupId,
      retry: { initialDelayMs: 200, maxDelayMs: 2000, maxAttempts: 6, backfillAfterAttempts: 2, ...options.retry },
    }],
    poll: { leaseSeconds: 60, inlineContentMaxBytes: options.inlineContentMaxBytes ?? 65_536, ...options.poll },
    log: { level: 'warn' },
  };
}

async function insertRows(src: pg.Pool, rows: readonly SourceRowSpec[], bus: readonly string[]): Promise<string[]> {
  const client = await src.connect();
  const ids: string[] = [];
  try {
    await client.query('BEGIN');
    for (const r of rows) {
      const id = r.id ?? randomUUID();
      ids.push(id);
      await client.query(
        'INSERT INTO src.blobs (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory) VALUES ($1, $2, $3, $4, $5, $6)',
        [id, r.content ?? null, `${r.path}name`, r.path, r.parent ?? null, r.directory ?? r.content === undefined],
      );
      const modifiedOn = r.modifiedOnSql === undefined ? 'clock_timestamp()' : r.modifiedOnSql ?? 'NULL';
      await client.query(`INSERT INTO src.meta (id, "ModifiedOn", bu) VALUES ($1, ${modifiedOn}, $2)`, [id, r.bu ?? bus[0]]);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
  return ids;
}

function asMap(rows: { key: string; ticks: string | null; sha: string | null }[]): Map<string, { ticks: string | null; sha: string | null }> {
  return new Map(rows.map((r) => [r.key, { ticks: r.ticks, sha: r.sha }]));
}

/** Waits until the group's offsets stored in the target reach the end of every partition of the topic. */
export async function drainTopic(tgt: pg.Pool, groupId: string, topic: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let behind = '';
  while (Date.now() < deadline) {
    const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
    const stored = await storedOffsets(tgt, groupId, topic);
    const lagging = ends.filter((e) => BigInt(e.high) > BigInt(e.low) && (stored.get(e.partition) ?? -1n) < BigInt(e.high));
    if (lagging.length === 0) return;
    behind = lagging.map((e) => `p${e.partition}: ${stored.get(e.partition) ?? 'none'}/${e.high}`).join(', ');
    await sleep(200);
  }
  throw new Error(`the target did not catch up with ${topic} within ${timeoutMs} ms (${behind})`);
}

async function storedOffsets(tgt: pg.Pool, groupId: string, topic: string): Promise<Map<number, bigint>> {
  try {
    const { rows } = await tgt.query<{ partition: number; next: string }>('SELECT partition, next_offset::text AS next FROM tgt.hw_offsets WHERE group_id = $1 AND topic = $2', [groupId, topic]);
    return new Map(rows.map((r) => [r.partition, BigInt(r.next)]));
  } catch {
    // Not migrated yet: nothing stored.
    return new Map();
  }
}

async function createTopic(topic: string, partitions: number, config: Readonly<Record<string, string>>): Promise<void> {
  await withAdmin((admin) => admin.createTopics({
    waitForLeaders: true,
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries: Object.entries(config).map(([name, value]) => ({ name, value })) }],
  }));
}

/** Databases, topics and clean-ups owned by one test; dropped in reverse order only when the test passed. */
function ownedResources(label: string) {
  const cleanups: (() => Promise<unknown>)[] = [];
  const databases: TestDatabase[] = [];
  const topics: string[] = [];
  onTestFinished(async ({ task }) => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => console.warn(`[pipeline] clean-up failed: ${String(err)}`));
    if (task.result?.state !== 'pass') {
      for (const db of databases) await db.close();
      console.log(`[pipeline] "${task.name}" failed; kept databases ${databases.map((d) => d.name).join(', ')} and topics ${topics.join(', ')}`);
      return;
    }
    for (const db of databases) await db.drop();
    await deleteTopics(topics).catch(() => undefined);
  });
  return {
    defer: (cleanup: () => Promise<unknown>) => cleanups.push(cleanup),
    topics: (names: readonly string[]) => topics.push(...names),
    database: async (suffix: string) => {
      const db = await createTestDatabase(`${label} ${suffix}`);
      databases.push(db);
      return db;
    },
  };
}
