import { assertOneTable, configured, isEmptyBatch, mapTargetTables } from '../../src/target/batch.js';
import { MAX_CONTENT_BYTES } from '../../src/target/limits.js';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Ticks } from '../../src/contract.js';
import { HighwaterError, classifyDbError, coerceError } from '../../src/errors.js';
import { assertIdentifier } from '../../src/sql/ident.js';
import type { BlobChange } from '../../src/contract.js';
import type { ApplyBatch, ApplyResult, HeldParent, OffsetsTo, SchemaSwap, StoredOffset, TargetWriter } from '../../src/target/writer.js';
import { changeFromHeldRow } from '../../src/target/held.js';
import { CopyBinaryEncoder } from './copy-binary.js';
import {
  MIGRATION_FILE, STAGE_COLUMNS, applyDeletes, assembleChunkedContent, blobTableDdl, bookkeepingDdl, copyIntoStage,
  createMigrationsTable, createStageTable, deleteUsedChunks, dropResolvedHeld, holdMissingParents, markIncompleteContent, markMissingParents,
  insertFromStage, promoteHeld, selectHeldChildren, selectHeldParents, selectTargetEmpty,
  migrationLock, parkHeldBack, parkRows, recordMigration, reduceLatest, releaseParked, selectAppliedMigrations, selectConsistentAsOf,
  selectConsistentAsOfWithPartitions, selectExistingPaths, selectStoredOffsets, stageChunks, stageValues, targetTable,
  upsertFromStage, upsertOffsets, upsertWatermarks, type SqlQuery, type StageInput, type TargetTable,
  deleteGroupBookkeeping, deleteStoredOffsets, deleteWatermarks, relabelGroup, renameSchema, selectSchemaExists,
  tableWriteLock,
} from './dialect.js';

/**
 * The PostgreSQL target: each batch in one transaction — binary COPY into a temporary staging table, chunks into
 * hw_chunks, classification (stale, incomplete content, missing parent), one guarded set-based upsert, guarded
 * deletes with tombstones, watermarks and offsets — then COMMIT. The SQL is in dialect.ts; this module runs it.
 */

export interface PostgresWriterOptions {
  /** Schema of the target tables and of the bookkeeping tables (hw_offsets, hw_watermarks, …). */
  readonly schema: string;
  /** Configured tables; each gets a target table named by `targetTableName(name)`. */
  readonly tables: readonly { readonly name: string }[];
  /** Directory holding NNN_*.sql and blob-table.sql. Default: schema/target-postgres of this repository. */
  readonly migrationsDir?: string;
  /**
   * Told when an idle pooled connection fails (server restart, network): the pool drops that client and the next
   * statement connects anew, so this is for logging only. Without it such errors are ignored, never thrown.
   */
  readonly onIdleError?: (error: HighwaterError) => void;
}

export interface ConsistentAsOf {
  readonly table: string;
  readonly scope: string;
  readonly watermark: Ticks | null;
}

const UNIQUE_VIOLATION = '23505';

/** Bytes buffered in the COPY stream before `write()` asks to wait for 'drain'. */
const COPY_HIGH_WATER_MARK = 4 << 20;
const NOTHING_APPLIED: ApplyResult = { applied: 0, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 };
const NO_ROWS: RowsOutcome = { applied: 0, missingParent: [], incompleteContent: [], held: [], promoted: [], promotedWritten: 0 };

type Client = pg.PoolClient;

interface RowsOutcome extends Pick<ApplyResult, 'applied' | 'missingParent' | 'incompleteContent' | 'held'> {
  /** Held rows taken out of holding (their parent is now in the target), and how many of them were written. */
  readonly promoted: readonly { tenant: string; key: string }[];
  readonly promotedWritten: number;
}

export class PostgresWriter implements TargetWriter {
  readonly kind = 'postgres' as const;
  readonly maxContentBytes = MAX_CONTENT_BYTES.postgres;
  readonly #pool: pg.Pool;
  readonly #schema: string;
  readonly #tables: ReadonlyMap<string, TargetTable>;
  readonly #migrationsDir: string | undefined;
  /**
   * Per target table, whether batches try the insert fast path: true while the table was empty when this writer
   * first wrote to it and no insert has met an existing key since (then the guarded upsert, for good).
   */
  readonly #fastInsert = new Map<string, boolean>();
  #closed = false;

  /** The writer owns `pool` from now on: `close()` ends it. */
  constructor(pool: pg.Pool, options: PostgresWriterOptions) {
    this.#pool = pool;
    this.#schema = configured('PostgreSQL target', () => assertIdentifier(options.schema, 'target schema'));
    this.#tables = configured('PostgreSQL target', () => mapTargetTables(this.#schema, options.tables, targetTable));
    this.#migrationsDir = options.migrationsDir;
    const observe = options.onIdleError;
    pool.on('error', (thrown) => safeCall(() => observe?.(classifyDbError(thrown, 'an idle PostgreSQL connection failed; the pool replaces it'))));
  }

  /** The target table of a configured table name. */
  tableFor(name: string): TargetTable {
    const t = this.#tables.get(name);
    if (t === undefined) throw new HighwaterError('CONFIG_INVALID', `table ${JSON.stringify(name)} is not configured for this PostgreSQL target`);
    return t;
  }

  async migrate(): Promise<void> {
    const dir = this.#migrationsDir ?? defaultMigrationsDir();
    const files = (await readdir(dir)).filter((f) => MIGRATION_FILE.test(f)).sort();
    const migrations = await Promise.all(files.map(async (name) => ({ name, text: await readFile(join(dir, name), 'utf8') })));
    const blobTable = await readFile(join(dir, 'blob-table.sql'), 'utf8');
    await this.#transaction('migrate the PostgreSQL target', classifyDbError, async (client) => {
      await run(client, migrationLock(this.#schema));
      await run(client, createMigrationsTable(this.#schema));
      const applied = new Set((await run(client, selectAppliedMigrations(this.#schema))).rows.map((r) => String(r.name)));
      for (const m of migrations.filter((x) => !applied.has(x.name))) {
        await run(client, bookkeepingDdl(m.text, this.#schema));
        await run(client, recordMigration(this.#schema, m.name, createHash('sha256').update(m.text).digest('hex')));
      }
      for (const t of this.#tables.values()) await run(client, blobTableDdl(blobTable, t));
    });
  }

  async storedOffsets(groupId: string, topics: readonly string[]): Promise<StoredOffset[]> {
    if (topics.length === 0) return [];
    const result = await this.#query('read stored offsets', selectStoredOffsets(this.#schema, groupId, topics));
    return result.rows.map((r) => ({ topic: String(r.topic), partition: Number(r.partition), nextOffset: BigInt(String(r.next_offset)) }));
  }

  async apply(batch: ApplyBatch): Promise<ApplyResult> {
    const t = this.tableFor(batch.table);
    assertOneTable(batch);
    if (isEmptyBatch(batch)) return NOTHING_APPLIED;
    return this.#transaction(`apply a batch of ${batch.table}`, classifyApplyError, async (client) => {
      const result = await this.#applyIn(client, t, batch);
      await batch.beforeCommit?.(result);
      return result;
    });
  }

  async promoteHeld(table: string): Promise<number> {
    const t = this.tableFor(table);
    return this.#transaction(`promote held children of ${table}`, classifyApplyError, async (client) => {
      await run(client, tableWriteLock(t, false));
      const promoted = (await run(client, promoteHeld(t, 'all'))).rows.map((r) => ({ tenant: String(r.tenant), key: String(r.key) }));
      if (promoted.length > 0) await run(client, releaseParked(t, promoted));
      return promoted.length;
    });
  }

  async heldParents(table: string): Promise<HeldParent[]> {
    const result = await this.#query(`read held children of ${table}`, selectHeldParents(this.tableFor(table)));
    return result.rows.map((r) => ({ tenant: String(r.tenant), parentPathLocator: String(r.parent_path_locator), children: Number(r.children) }));
  }

  async heldChildren(table: string, tenant: string, parentPathLocator: string): Promise<BlobChange[]> {
    const result = await this.#query(`read held children of ${table}`, selectHeldChildren(this.tableFor(table), tenant, parentPathLocator));
    return result.rows.map((r) => changeFromHeldRow(table, r));
  }

  async existingPaths(table: string, tenant: string, pathLocators: readonly string[]): Promise<Set<string>> {
    if (pathLocators.length === 0) return new Set();
    const result = await this.#query(`read paths of ${table}`, selectExistingPaths(this.tableFor(table), tenant, pathLocators));
    return new Set(result.rows.map((r) => String(r.path_locator)));
  }

  /**
   * Minimum watermark per table and scope over the partitions with a marker; null when a partition this group has
   * stored an offset for has no marker of that scope yet. Use `consistentAsOfForPartitions` when the partition
   * counts are known: a partition never consumed is invisible here.
   */
  async consistentAsOf(groupId: string): Promise<ConsistentAsOf[]> {
    return this.#consistent(selectConsistentAsOf(this.#schema, groupId));
  }

  /** As consistentAsOf, null unless every partition of the table's topics (counts from the broker) has a marker. */
  async consistentAsOfForPartitions(groupId: string, partitionsByTopic: ReadonlyMap<string, number>): Promise<ConsistentAsOf[]> {
    return this.#consistent(selectConsistentAsOfWithPartitions(this.#schema, groupId, partitionsByTopic));
  }

  async resetStoredOffsets(groupId: string, topics: readonly string[], to: OffsetsTo): Promise<void> {
    if (topics.length === 0) return;
    const offsets = to === 'earliest' ? [] : topics.flatMap((topic) => [...(to.get(topic) ?? new Map<number, bigint>())].map(([partition, nextOffset]) => ({ topic, partition, nextOffset })));
    await this.#transaction(`reset the offsets of group ${groupId}`, classifyDbError, async (client) => {
      await run(client, deleteStoredOffsets(this.#schema, groupId, topics));
      await run(client, deleteWatermarks(this.#schema, groupId, topics));
      if (offsets.length > 0) await run(client, upsertOffsets(this.#schema, groupId, offsets));
    });
  }

  async schemaExists(): Promise<boolean> {
    const result = await this.#query(`look for schema ${this.#schema}`, selectSchemaExists(this.#schema));
    return result.rows[0]?.present === true;
  }

  /** ALTER SCHEMA … RENAME twice in one transaction: readers see the old schema or the rebuilt one, never a mix. */
  async swapInRebuild(swap: SchemaSwap): Promise<void> {
    const rebuilt = assertIdentifier(swap.rebuiltSchema, 'rebuilt schema');
    const retired = assertIdentifier(swap.retiredSchema, 'retired schema');
    await this.#transaction(`swap schema ${rebuilt} in as ${this.#schema}`, classifyDbError, async (client) => {
      const live = (await run(client, selectSchemaExists(this.#schema))).rows[0]?.present === true;
      if (live) await run(client, renameSchema(this.#schema, retired));
      await run(client, renameSchema(rebuilt, this.#schema));
      for (const q of deleteGroupBookkeeping(this.#schema, swap.toGroupId)) await run(client, q);
      for (const q of relabelGroup(this.#schema, swap.fromGroupId, swap.toGroupId)) await run(client, q);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  async #applyIn(client: Client, t: TargetTable, batch: ApplyBatch): Promise<ApplyResult> {
    await run(client, tableWriteLock(t, batch.deletes.length > 0));
    for (const q of stageChunks(this.#schema, batch.chunks)) await run(client, q);
    if (batch.parked?.length) await run(client, parkRows(t, batch.parked));
    // Deletes first: a change of the batch that follows a delete (a ModifiedOn set back) must meet its tombstone,
    // not the version the delete removes.
    const deleted = batch.deletes.length > 0 ? (await run(client, applyDeletes(t, batch.deletes))).rowCount ?? 0 : 0;
    const rows = batch.rows.length > 0 ? await this.#applyRows(client, t, batch.rows) : NO_ROWS;
    const touched = [...batch.rows.map((r) => r.change), ...batch.deletes];
    // A held child that the target now holds at its version or newer, or that a delete covers, waits no more.
    if (touched.length > 0) await run(client, dropResolvedHeld(t, touched));
    const resolved = [...touched, ...rows.promoted];
    if (resolved.length > 0) await run(client, releaseParked(t, resolved));
    if (batch.watermarks.length > 0) await run(client, upsertWatermarks(this.#schema, batch.groupId, batch.watermarks));
    if (batch.offsets.length > 0) await run(client, upsertOffsets(this.#schema, batch.groupId, batch.offsets));
    const skippedStale = batch.rows.length - rows.applied - rows.missingParent.length - rows.incompleteContent.length - rows.held.length;
    return { applied: rows.applied, missingParent: rows.missingParent, incompleteContent: rows.incompleteContent, held: rows.held, skippedStale: Math.max(0, skippedStale), deleted, promoted: rows.promotedWritten };
  }

  /**
   * Stages, classifies and upserts the batch's rows. Children whose parent is missing are held in hw_held (and
   * parked, so consistent_as_of stays below them); after the upsert, held children whose parent this batch wrote
   * are promoted in one set-based step.
   */
  async #applyRows(client: Client, t: TargetTable, rows: readonly StageInput[]): Promise<RowsOutcome> {
    const { latest, superseded } = reduceLatest(rows);
    const chunked = rows.some((r) => r.change.content.kind === 'chunked');
    await run(client, createStageTable());
    await copyIntoStageTable(client, latest);
    if (chunked) await run(client, assembleChunkedContent(t));
    const incompleteContent = chunked ? keysOf(await run(client, markIncompleteContent(t))) : [];
    const hierarchy = latest.some((r) => r.change.parentPathLocator !== null);
    const held = hierarchy ? keysOf(await run(client, markMissingParents(t))) : [];
    if (held.length > 0) await run(client, holdMissingParents(t));
    if (incompleteContent.length + held.length > 0) await run(client, parkHeldBack(t));
    const applied = await this.#upsert(client, t);
    const moved = (await run(client, promoteHeld(t, 'batch'))).rows;
    const promoted = moved.map((r) => ({ tenant: String(r.tenant), key: String(r.key) }));
    if (chunked) await run(client, deleteUsedChunks(t, superseded));
    return { applied, missingParent: [], incompleteContent, held, promoted, promotedWritten: Number(moved[0]?.written ?? 0) };
  }

  /**
   * The staged rows into the target: a plain insert while the table is known to hold none of their keys (a first
   * load, a rebuild into a fresh schema), under a savepoint; the guarded upsert otherwise, or when the insert meets
   * a key the target holds after all (another consumer, a replay). Returns the rows written.
   */
  async #upsert(client: Client, t: TargetTable): Promise<number> {
    if (!this.#fastInsert.has(t.table)) this.#fastInsert.set(t.table, (await run(client, selectTargetEmpty(t))).rows[0]?.empty === true);
    if (this.#fastInsert.get(t.table) === true) {
      await client.query('SAVEPOINT hw_fast_insert');
      try {
        const inserted = (await run(client, insertFromStage(t))).rowCount ?? 0;
        await client.query('RELEASE SAVEPOINT hw_fast_insert');
        return inserted;
      } catch (thrown) {
        if ((thrown as { code?: unknown }).code !== UNIQUE_VIOLATION) throw thrown;
        await client.query('ROLLBACK TO SAVEPOINT hw_fast_insert');
        this.#fastInsert.set(t.table, false);
      }
    }
    return (await run(client, upsertFromStage(t))).rowCount ?? 0;
  }

  async #consistent(query: SqlQuery): Promise<ConsistentAsOf[]> {
    const result = await this.#query('read consistent_as_of', query);
    return result.rows.map((r) => ({ table: String(r.table_name), scope: String(r.scope), watermark: r.watermark === null ? null : BigInt(String(r.watermark)) }));
  }

  async #query(context: string, query: SqlQuery): Promise<pg.QueryResult> {
    this.#assertOpen();
    try {
      return await this.#pool.query(query.text, [...query.values]);
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
  }

  async #transaction<T>(context: string, classify: (thrown: unknown, context: string) => HighwaterError, work: (client: Client) => Promise<T>): Promise<T> {
    this.#assertOpen();
    let client: Client;
    try {
      client = await this.#pool.connect();
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (thrown) {
      await rollback(client);
      throw classify(thrown, context);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new HighwaterError('INTERNAL', 'the PostgreSQL writer is closed');
  }
}

/** Runs a built statement; statements without values go as simple queries, so a migration may hold several. */
async function run(client: Client, query: SqlQuery): Promise<pg.QueryResult> {
  return query.values.length === 0 ? client.query(query.text) : client.query(query.text, [...query.values]);
}

/** Streams the rows into the staging table as binary COPY; `pipeline` waits for 'drain' whenever the socket is full. */
async function copyIntoStageTable(client: Client, rows: readonly StageInput[]): Promise<void> {
  const stream = client.query(copyFrom(copyIntoStage().text, { highWaterMark: COPY_HIGH_WATER_MARK }));
  await pipeline(copyChunks(rows), stream);
}

/** ~1 MiB chunks of binary COPY data; a row whose values do not fit their columns is a constraint error. */
function* copyChunks(rows: readonly StageInput[]): Generator<Buffer> {
  const encoder = new CopyBinaryEncoder(STAGE_COLUMNS);
  for (const row of rows) {
    try {
      encoder.row(stageValues(row));
    } catch (thrown) {
      const reason = coerceError(thrown).message;
      throw new HighwaterError('DB_CONSTRAINT', `row ${JSON.stringify(row.change.key)} of ${row.change.table} cannot be staged: ${reason}`, { cause: thrown });
    }
    yield* encoder.take();
  }
  encoder.finish();
  yield* encoder.take();
}

/** Rolls back and returns the client; a client that cannot roll back is destroyed instead of going back to the pool. */
async function rollback(client: Client): Promise<void> {
  try {
    await client.query('ROLLBACK');
    client.release();
  } catch (thrown) {
    client.release(coerceError(thrown));
  }
}

/**
 * Driver errors of one batch. Data exceptions (SQLSTATE class 22: bad encoding, NUL in text, out of range) come
 * from a row's values, like integrity errors (class 23), so both are DB_CONSTRAINT: the loop dead-letters the
 * batch's rows one by one instead of stopping.
 */
export function classifyApplyError(thrown: unknown, context: string): HighwaterError {
  const error = classifyDbError(thrown, context);
  const sqlState = (error.cause as { code?: unknown } | undefined)?.code;
  if (error.code === 'DB_QUERY' && typeof sqlState === 'string' && sqlState.startsWith('22')) {
    return new HighwaterError('DB_CONSTRAINT', error.message, { cause: error.cause });
  }
  return error;
}

function safeCall(fn: () => void): void {
  try {
    fn();
  } catch {
    // An observer's failure must not become an uncaught exception in the pool's event handler.
  }
}

function keysOf(result: pg.QueryResult): string[] {
  return result.rows.map((r) => String(r.key));
}

/** schema/target-postgres beside src when run from source, or two levels further up when run from dist/. */
function defaultMigrationsDir(): string {
  const candidates = ['../../schema/target-postgres/', '../../../schema/target-postgres/'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  return candidates.find((dir) => existsSync(dir)) ?? candidates[0]!;
}
