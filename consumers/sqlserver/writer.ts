import { assertOneTable, configured, isEmptyBatch, mapTargetTables } from '../../src/target/batch.js';
import { MAX_CONTENT_BYTES } from '../../src/target/limits.js';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sql from 'mssql';
import type { Ticks } from '../../src/contract.js';
import { HighwaterError, classifyDbError, coerceError } from '../../src/errors.js';
import { assertIdentifier } from '../../src/sql/ident.js';
import type { BlobChange } from '../../src/contract.js';
import type { ApplyBatch, ApplyResult, HeldParent, OffsetsTo, SchemaSwap, StoredOffset, TargetWriter } from '../../src/target/writer.js';
import { changeFromHeldRow } from '../../src/target/held.js';
import {
  CHUNK_STAGE_COLUMNS, CHUNK_STAGE_TABLE, MIGRATION_FILE, STAGE_COLUMNS, STAGE_TABLE, applyDeletes, assembleChunkedContent,
  blobTableDdl, bookkeepingDdl, chunkStageValues, createChunkStageTable, createMigrationsTable, createStageTable,
  deleteUsedChunks, dropResolvedHeld, dropStageTables, holdMissingParents, insertStagedChunks, promoteHeld, selectHeldChildren,
  selectHeldParents, markIncompleteContent, markMissingParents, markStale,
  migrationLock, parkHeldBack, parkRows, recordMigration, reduceLatest, releaseParked, selectAppliedMigrations, selectConsistentAsOf,
  selectConsistentAsOfWithPartitions, selectExistingPaths, selectStoredOffsets, stageMismatch, stageValues, targetTable,
  upsertFromStage, upsertOffsets, upsertWatermarks,
  type SqlQuery, type SqlServerType, type StageColumn, type StageInput, type StageValue, type TargetTable,
  deleteGroupBookkeeping, deleteStoredOffsets, deleteWatermarks, relabelGroup, selectSchemaExists, swapSchemas,
  tableWriteLock,
} from './dialect.js';

/**
 * The SQL Server target: each batch in one transaction — bulk load (TDS bulk copy) into the session's #hw_stage,
 * chunks into hw_chunks, classification (stale, incomplete content, missing parent), one guarded MERGE … WITH
 * (HOLDLOCK), guarded deletes with tombstones, watermarks and offsets — then COMMIT. The SQL is in dialect.ts; this
 * module runs it.
 */

export interface SqlServerWriterOptions {
  /** Schema of the target tables and of the bookkeeping tables (hw_offsets, hw_watermarks, …). */
  readonly schema: string;
  /** Configured tables; each gets a target table named by `targetTableName(name)`. */
  readonly tables: readonly { readonly name: string }[];
  /** Directory holding NNN_*.sql and blob-table.sql. Default: schema/target-sqlserver of this repository. */
  readonly migrationsDir?: string;
}

export interface ConsistentAsOf {
  readonly table: string;
  readonly scope: string;
  readonly watermark: Ticks | null;
}

const NOTHING_APPLIED: ApplyResult = { applied: 0, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 };
const NO_ROWS: RowsOutcome = { applied: 0, missingParent: [], incompleteContent: [], held: [], promoted: [], promotedWritten: 0 };

interface RowsOutcome extends Pick<ApplyResult, 'applied' | 'missingParent' | 'incompleteContent' | 'held'> {
  /** Held rows taken out of holding (their parent is now in the target), and how many of them were written. */
  readonly promoted: readonly { tenant: string; key: string }[];
  readonly promotedWritten: number;
}

type On = sql.ConnectionPool | sql.Transaction;

export class SqlServerWriter implements TargetWriter {
  readonly kind = 'sqlserver' as const;
  readonly maxContentBytes = MAX_CONTENT_BYTES.sqlserver;
  readonly #pool: sql.ConnectionPool;
  readonly #schema: string;
  readonly #tables: ReadonlyMap<string, TargetTable>;
  readonly #migrationsDir: string | undefined;
  #closed = false;

  /** The writer owns `pool` from now on: `close()` closes it. */
  constructor(pool: sql.ConnectionPool, options: SqlServerWriterOptions) {
    this.#pool = pool;
    this.#schema = configured('SQL Server target', () => assertIdentifier(options.schema, 'target schema'));
    this.#tables = configured('SQL Server target', () => mapTargetTables(this.#schema, options.tables, targetTable));
    this.#migrationsDir = options.migrationsDir;
  }

  /** The target table of a configured table name. */
  tableFor(name: string): TargetTable {
    const t = this.#tables.get(name);
    if (t === undefined) throw new HighwaterError('CONFIG_INVALID', `table ${JSON.stringify(name)} is not configured for this SQL Server target`);
    return t;
  }

  async migrate(): Promise<void> {
    const dir = this.#migrationsDir ?? defaultMigrationsDir();
    const files = (await readdir(dir)).filter((f) => MIGRATION_FILE.test(f)).sort();
    const migrations = await Promise.all(files.map(async (name) => ({ name, text: await readFile(join(dir, name), 'utf8') })));
    const blobTable = await readFile(join(dir, 'blob-table.sql'), 'utf8');
    await this.#transaction('migrate the SQL Server target', classifyDbError, async (tx) => {
      await this.#lockMigrations(tx);
      await run(tx, createMigrationsTable(this.#schema));
      const applied = new Set((await run(tx, selectAppliedMigrations(this.#schema))).map((r) => String(r.name)));
      for (const m of migrations.filter((x) => !applied.has(x.name))) {
        for (const batch of bookkeepingDdl(m.text, this.#schema)) await run(tx, batch);
        await run(tx, recordMigration(this.#schema, m.name, createHash('sha256').update(m.text).digest('hex')));
      }
      for (const t of this.#tables.values()) for (const batch of blobTableDdl(blobTable, t)) await run(tx, batch);
    });
  }

  async storedOffsets(groupId: string, topics: readonly string[]): Promise<StoredOffset[]> {
    if (topics.length === 0) return [];
    const rows = await this.#query('read stored offsets', selectStoredOffsets(this.#schema, groupId, topics));
    return rows.map((r) => ({ topic: String(r.topic), partition: Number(r.partition), nextOffset: BigInt(String(r.next_offset)) }));
  }

  async apply(batch: ApplyBatch): Promise<ApplyResult> {
    const t = this.tableFor(batch.table);
    assertOneTable(batch);
    if (isEmptyBatch(batch)) return NOTHING_APPLIED;
    return this.#transaction(`apply a batch of ${batch.table}`, classifyApplyError, async (tx) => {
      const result = await this.#applyIn(tx, t, batch);
      await batch.beforeCommit?.(result);
      return result;
    });
  }

  async promoteHeld(table: string): Promise<number> {
    const t = this.tableFor(table);
    return this.#transaction(`promote held children of ${table}`, classifyApplyError, async (tx) => {
      await run(tx, tableWriteLock(t, false));
      const promoted = keyPairs(await run(tx, promoteHeld(t, 'all')));
      if (promoted.length > 0) await run(tx, releaseParked(t, promoted));
      return promoted.length;
    });
  }

  async heldParents(table: string): Promise<HeldParent[]> {
    const rows = await this.#query(`read held children of ${table}`, selectHeldParents(this.tableFor(table)));
    return rows.map((r) => ({ tenant: String(r.tenant), parentPathLocator: String(r.parent_path_locator), children: Number(r.children) }));
  }

  async heldChildren(table: string, tenant: string, parentPathLocator: string): Promise<BlobChange[]> {
    const rows = await this.#query(`read held children of ${table}`, selectHeldChildren(this.tableFor(table), tenant, parentPathLocator));
    return rows.map((r) => changeFromHeldRow(table, r));
  }

  async existingPaths(table: string, tenant: string, pathLocators: readonly string[]): Promise<Set<string>> {
    if (pathLocators.length === 0) return new Set();
    const rows = await this.#query(`read paths of ${table}`, selectExistingPaths(this.tableFor(table), tenant, pathLocators));
    return new Set(rows.map((r) => String(r.path_locator)));
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
    await this.#transaction(`reset the offsets of group ${groupId}`, classifyDbError, async (tx) => {
      await run(tx, deleteStoredOffsets(this.#schema, groupId, topics));
      await run(tx, deleteWatermarks(this.#schema, groupId, topics));
      if (offsets.length > 0) await run(tx, upsertOffsets(this.#schema, groupId, offsets));
    });
  }

  async schemaExists(): Promise<boolean> {
    const [row] = await this.#query(`look for schema ${this.#schema}`, selectSchemaExists(this.#schema));
    return Number(row?.present ?? 0) === 1;
  }

  /** Moves the objects between schemas (SQL Server cannot rename one) in one transaction; see swapSchemas. */
  async swapInRebuild(swap: SchemaSwap): Promise<void> {
    await this.#transaction(`swap schema ${swap.rebuiltSchema} in as ${this.#schema}`, classifyDbError, async (tx) => {
      await run(tx, swapSchemas(this.#schema, swap.rebuiltSchema, swap.retiredSchema));
      for (const q of deleteGroupBookkeeping(this.#schema, swap.toGroupId)) await run(tx, q);
      for (const q of relabelGroup(this.#schema, swap.fromGroupId, swap.toGroupId)) await run(tx, q);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
  }

  async #applyIn(tx: sql.Transaction, t: TargetTable, batch: ApplyBatch): Promise<ApplyResult> {
    await run(tx, tableWriteLock(t, batch.deletes.length > 0));
    if (batch.chunks.length > 0) await this.#stageChunks(tx, batch);
    if (batch.parked?.length) await run(tx, parkRows(t, batch.parked));
    // Deletes first: a change of the batch that follows a delete (a ModifiedOn set back) must meet its tombstone,
    // not the version the delete removes.
    const deleted = batch.deletes.length > 0 ? Number((await run(tx, applyDeletes(t, batch.deletes)))[0]?.deleted ?? 0) : 0;
    const rows = batch.rows.length > 0 ? await this.#applyRows(tx, t, batch.rows) : NO_ROWS;
    await run(tx, dropStageTables());
    const touched = [...batch.rows.map((r) => r.change), ...batch.deletes];
    // A held child that the target now holds at its version or newer, or that a delete covers, waits no more.
    if (touched.length > 0) await run(tx, dropResolvedHeld(t, touched));
    const resolved = [...touched, ...rows.promoted];
    if (resolved.length > 0) await run(tx, releaseParked(t, resolved));
    if (batch.watermarks.length > 0) await run(tx, upsertWatermarks(this.#schema, batch.groupId, batch.watermarks));
    if (batch.offsets.length > 0) await run(tx, upsertOffsets(this.#schema, batch.groupId, batch.offsets));
    const skippedStale = batch.rows.length - rows.applied - rows.missingParent.length - rows.incompleteContent.length - rows.held.length;
    return { applied: rows.applied, missingParent: rows.missingParent, incompleteContent: rows.incompleteContent, held: rows.held, skippedStale: Math.max(0, skippedStale), deleted, promoted: rows.promotedWritten };
  }

  async #stageChunks(tx: sql.Transaction, batch: ApplyBatch): Promise<void> {
    await run(tx, createChunkStageTable());
    await bulkLoad(tx, CHUNK_STAGE_TABLE, CHUNK_STAGE_COLUMNS, batch.chunks, chunkStageValues, (c) => `chunk ${c.index} of ${JSON.stringify(c.key)}`);
    await run(tx, insertStagedChunks(this.#schema));
  }

  /**
   * Stages, classifies and upserts the batch's rows. Children whose parent is missing are held in hw_held (and
   * parked, so consistent_as_of stays below them); after the upsert, held children whose parent this batch wrote
   * are promoted in one set-based step.
   */
  async #applyRows(tx: sql.Transaction, t: TargetTable, rows: readonly StageInput[]): Promise<RowsOutcome> {
    const { latest, superseded } = reduceLatest(rows);
    const chunked = rows.some((r) => r.change.content.kind === 'chunked');
    await run(tx, createStageTable());
    await bulkLoad(tx, STAGE_TABLE, STAGE_COLUMNS, latest, stageValues, (r) => `row ${JSON.stringify(r.change.key)} of ${r.change.table}`);
    await run(tx, markStale(t));
    if (chunked) await run(tx, assembleChunkedContent(t));
    const incompleteContent = chunked ? keysOf(await run(tx, markIncompleteContent())) : [];
    const held = keysOf(await run(tx, markMissingParents(t)));
    if (held.length > 0) await run(tx, holdMissingParents(t));
    if (incompleteContent.length + held.length > 0) await run(tx, parkHeldBack(t));
    const applied = Number((await run(tx, upsertFromStage(t)))[0]?.applied ?? 0);
    const moved = await run(tx, promoteHeld(t, 'batch'));
    const promoted = keyPairs(moved);
    if (chunked) await run(tx, deleteUsedChunks(t, superseded));
    return { applied, missingParent: [], incompleteContent, held, promoted, promotedWritten: Number(moved[0]?.written ?? 0) };
  }

  async #lockMigrations(tx: sql.Transaction): Promise<void> {
    const [row] = await run(tx, migrationLock(this.#schema));
    if (row?.lock_mode !== 'Exclusive') {
      throw new HighwaterError('DB_TRANSIENT', `another process has been migrating schema ${this.#schema} for 60 s; try again`);
    }
  }

  async #consistent(query: SqlQuery): Promise<ConsistentAsOf[]> {
    const rows = await this.#query('read consistent_as_of', query);
    return rows.map((r) => ({ table: String(r.table_name), scope: String(r.scope), watermark: r.watermark === null ? null : BigInt(String(r.watermark)) }));
  }

  async #query(context: string, query: SqlQuery): Promise<Row[]> {
    this.#assertOpen();
    try {
      return await run(this.#pool, query);
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
  }

  async #transaction<T>(context: string, classify: (thrown: unknown, context: string) => HighwaterError, work: (tx: sql.Transaction) => Promise<T>): Promise<T> {
    this.#assertOpen();
    const tx = new sql.Transaction(this.#pool);
    try {
      await tx.begin(sql.ISOLATION_LEVEL.READ_COMMITTED);
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
    try {
      const result = await work(tx);
      await tx.commit();
      return result;
    } catch (thrown) {
      await rollback(tx);
      throw classify(thrown, context);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new HighwaterError('INTERNAL', 'the SQL Server writer is closed');
  }
}

type Row = Record<string, unknown>;

const PARAM_TYPES: Readonly<Record<SqlServerType, () => sql.ISqlType>> = {
  NVarChar: () => sql.NVarChar(sql.MAX),
  VarChar: () => sql.VarChar(sql.MAX),
  BigInt: () => sql.BigInt(),
  Int: () => sql.Int(),
  UniqueIdentifier: () => sql.UniqueIdentifier(),
  DateTime2: () => sql.DateTime2(7),
  VarBinary: () => sql.VarBinary(sql.MAX),
  Bit: () => sql.Bit(),
};

/**
 * Runs a built statement and returns its last result set. Statements without values go as plain batches: that is
 * how the #tables they create outlive the call (parameterised text runs inside sp_executesql, whose #tables are
 * dropped when it returns); the others go through sp_executesql with typed parameters.
 */
async function run(on: On, query: SqlQuery): Promise<Row[]> {
  const request = on instanceof sql.Transaction ? new sql.Request(on) : new sql.Request(on);
  const entries = Object.entries(query.values);
  for (const [name, param] of entries) request.input(name, PARAM_TYPES[param.type](), param.value);
  const result = entries.length === 0 ? await request.batch<Row>(query.text) : await request.query<Row>(query.text);
  const sets = (Array.isArray(result.recordsets) ? result.recordsets : []) as Row[][];
  return sets.at(-1) ?? [];
}

/** The driver type of a bulk column (lengths exactly as declared, or the server refuses the load). */
function bulkType(c: StageColumn): sql.ISqlType {
  const length = c.length === 'max' ? sql.MAX : c.length;
  switch (c.type) {
    case 'NVarChar': return sql.NVarChar(length);
    case 'VarChar': return sql.VarChar(length);
    case 'VarBinary': return sql.VarBinary(length);
    case 'BigInt': return sql.BigInt();
    case 'Int': return sql.Int();
    default: return sql.Bit();
  }
}

/**
 * Bulk-loads items into a session #table (TDS bulk copy, no parameters, no per-row statements). Each item's values
 * are built and checked against the column lengths first, so an item that cannot fit (a fractional size, a key too
 * long) is a constraint error naming it, which the apply loop dead-letters, rather than a driver failure.
 */
async function bulkLoad<T>(tx: sql.Transaction, tableName: string, columns: readonly StageColumn[], items: readonly T[], toValues: (item: T) => StageValue[], describe: (item: T) => string): Promise<void> {
  const table = new sql.Table(tableName);
  table.create = false;
  for (const c of columns) table.columns.add(c.name, bulkType(c), { nullable: true });
  for (const item of items) {
    let values: StageValue[];
    try {
      values = toValues(item);
    } catch (thrown) {
      throw new HighwaterError('DB_CONSTRAINT', `${describe(item)} cannot be staged: ${coerceError(thrown).message}`, { cause: thrown });
    }
    const mismatch = stageMismatch(columns, values);
    if (mismatch !== null) throw new HighwaterError('DB_CONSTRAINT', `${describe(item)} cannot be staged: ${mismatch}`);
    // bigint values are accepted by the driver (tedious) though mssql's row type does not list them.
    table.rows.add(...(values as Parameters<typeof table.rows.add>));
  }
  await new sql.Request(tx).bulk(table);
}

/** Rolls back; a rollback that fails means the server already ended the transaction (or the connection is gone). */
async function rollback(tx: sql.Transaction): Promise<void> {
  try {
    await tx.rollback();
  } catch {
    // Nothing to undo: the original error is the one worth reporting, and the pool discards a broken connection.
  }
}

// SQL Server errors caused by a row's values (truncation, conversion, overflow, NULL, keys): the loop dead-letters
// such rows one by one instead of stopping.
const ROW_VALUE_ERRORS = new Set([2628, 8152, 245, 8114, 8115, 220, 232, 515, 547, 2601, 2627]);

/** Driver errors of one batch; row-value errors are DB_CONSTRAINT (see ROW_VALUE_ERRORS). */
export function classifyApplyError(thrown: unknown, context: string): HighwaterError {
  const error = classifyDbError(thrown, context);
  const number = (error.cause as { number?: unknown } | undefined)?.number;
  if (error.code === 'DB_QUERY' && typeof number === 'number' && ROW_VALUE_ERRORS.has(number)) {
    return new HighwaterError('DB_CONSTRAINT', error.message, { cause: error.cause });
  }
  return error;
}

function keysOf(rows: readonly Row[]): string[] {
  return rows.map((r) => String(r.key));
}

function keyPairs(rows: readonly Row[]): { tenant: string; key: string }[] {
  return rows.map((r) => ({ tenant: String(r.tenant), key: String(r.key) }));
}

/** schema/target-sqlserver beside src when run from source, or two levels further up when run from dist/. */
function defaultMigrationsDir(): string {
  const candidates = ['../../schema/target-sqlserver/', '../../../schema/target-sqlserver/'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  return candidates.find((dir) => existsSync(dir)) ?? candidates[0]!;
}
