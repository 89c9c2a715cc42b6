import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readMigrations, runMigrations } from '../../db/migrate.js';
import { HighwaterError } from '../../errors.js';
import { assertIdentifier } from '../../sql/ident.js';
import { assertOneTable, configured, isEmptyBatch, mapTargetTables, reduceLatest } from './batch.js';
import { planChunks } from './chunks.js';
import type { BlobChange } from '../../contract.js';
import type { ConsistentAsOf, StageInput, StatementResult, TargetDialect, TargetEngine, TargetSession, TargetTable } from './dialect.js';
import { changeFromHeldRow } from './held.js';
import { StatisticsPolicy } from '../../db/statistics.js';
import type { ApplyBatch, ApplyResult, HeldParent, OffsetsTo, RowToApply, SchemaSwap, StoredOffset, TargetWriter } from './writer.js';

/**
 * The apply sequence, written once for every target engine. Each batch is one transaction:
 *
 *   write lock → complete chunked rows whose chunks are all in the batch (in memory, chunks.ts) → stage the other
 *   chunks → park rows routed to the retry topic → deletes and tombstones (first: a change that
 *   follows a delete must meet its tombstone) → stage the latest versions (bulk) → classify (stale, incomplete
 *   content, missing parent) → hold children whose parent is missing (hw_held) and park what is held back → one
 *   guarded set-based upsert (a plain insert into a table known empty) → promote held children whose parent the
 *   batch wrote → release used chunks → drop resolved held rows and release resolved parked rows → watermarks →
 *   offsets → the loop's beforeCommit → COMMIT.
 *
 * What is said differs per engine (TargetDialect, pure builders); how it is run differs too (TargetEngine: pool,
 * transaction, bulk load, error classification). Neither knows the sequence.
 */

export interface SqlTargetOptions {
  /** Schema of the target tables and of the bookkeeping tables (hw_offsets, hw_watermarks, …). */
  readonly schema: string;
  /** Configured tables; each gets a target table named by the dialect's rule. */
  readonly tables: readonly { readonly name: string }[];
  /** Directory holding NNN_*.sql and blob-table.sql. Default: schema/target-<engine> of this repository. */
  readonly migrationsDir?: string;
}

const NOTHING_APPLIED: ApplyResult = {
  applied: 0,
  skippedStale: 0,
  deleted: 0,
  missingParent: [],
  incompleteContent: [],
  held: [],
  promoted: 0,
};
type KeyPair = { tenant: string; key: string };
interface RowsResult extends Pick<ApplyResult, 'applied' | 'missingParent' | 'incompleteContent' | 'held'> {
  /** Held rows taken out of holding (their parent is now in the target), and how many of them were written. */
  readonly promoted: readonly KeyPair[];
  readonly promotedWritten: number;
}
/**
 * Staged rows from which a hierarchical batch's staging table is analyzed first (where the dialect asks for it): a
 * bad plan costs little below it, and the analyze (a few milliseconds at 5,000 rows) would be most of a small batch.
 */
const ANALYZE_STAGE_MIN_ROWS = 500;

const NO_ROWS: RowsResult = { applied: 0, missingParent: [], incompleteContent: [], held: [], promoted: [], promotedWritten: 0 };

export class SqlTargetWriter<S> implements TargetWriter {
  readonly kind: 'postgres' | 'sqlserver';
  readonly maxContentBytes: number;
  readonly #dialect: TargetDialect<S>;
  readonly #engine: TargetEngine<S>;
  readonly #schema: string;
  readonly #tables: ReadonlyMap<string, TargetTable>;
  readonly #migrationsDir: string | undefined;
  /**
   * Per target table, whether batches try the insert fast path: true while the table was empty when this writer
   * first wrote to it and no insert has met an existing key since (then the guarded upsert, for good).
   */
  readonly #fastInsert = new Map<string, boolean>();
  readonly #statistics = new StatisticsPolicy();
  #closed = false;

  /** The writer owns the engine (and its pool) from now on: `close()` closes it. */
  constructor(dialect: TargetDialect<S>, engine: TargetEngine<S>, options: SqlTargetOptions) {
    this.#dialect = dialect;
    this.#engine = engine;
    this.kind = engine.kind;
    this.maxContentBytes = dialect.maxContentBytes;
    const what = `${engine.name} target`;
    this.#schema = configured(what, () => assertIdentifier(options.schema, 'target schema'));
    this.#tables = configured(what, () => mapTargetTables(this.#schema, options.tables, (s, n) => dialect.targetTable(s, n)));
    this.#migrationsDir = options.migrationsDir;
  }

  /** The target table of a configured table name. */
  tableFor(name: string): TargetTable {
    const t = this.#tables.get(name);
    if (t === undefined)
      throw new HighwaterError('CONFIG_INVALID', `table ${JSON.stringify(name)} is not configured for this ${this.#engine.name} target`);
    return t;
  }

  async migrate(): Promise<void> {
    const dir = this.#migrationsDir ?? defaultMigrationsDir(this.kind);
    const scripts = await readMigrations(dir);
    const blobTable = await readFile(join(dir, 'blob-table.sql'), 'utf8');
    await this.#transaction(`migrate the ${this.#engine.name} target`, 'bookkeeping', async (session) => {
      await runMigrations(async (stmt) => (await session.run(stmt)).rows, this.#dialect.migrations(this.#schema), scripts);
      for (const t of this.#tables.values()) await runAll(session, this.#dialect.blobTableDdl(blobTable, t));
    });
  }

  async storedOffsets(groupId: string, topics: readonly string[]): Promise<StoredOffset[]> {
    if (topics.length === 0) return [];
    const { rows } = await this.#query('read stored offsets', this.#dialect.selectStoredOffsets(this.#schema, groupId, topics));
    return rows.map((r) => ({ topic: String(r.topic), partition: Number(r.partition), nextOffset: BigInt(String(r.next_offset)) }));
  }

  async apply(batch: ApplyBatch): Promise<ApplyResult> {
    const t = this.tableFor(batch.table);
    assertOneTable(batch);
    if (isEmptyBatch(batch)) return NOTHING_APPLIED;
    const result = await this.#transaction(`apply a batch of ${batch.table}`, 'apply', async (session) => {
      const applied = await this.#applyIn(session, t, batch);
      await batch.beforeCommit?.(applied);
      return applied;
    });
    await this.#refreshStatistics(t, result.applied + result.promoted + result.held.length + result.incompleteContent.length);
    return result;
  }

  /** Analyzes the target table and its holding tables once this writer has grown them enough, after the commit. */
  async #refreshStatistics(t: TargetTable, written: number): Promise<void> {
    const analyze = this.#dialect.analyzeTables;
    if (analyze !== null) await this.#statistics.analyzeIfDue(t.table, written, () => this.#query(`analyze ${t.table}`, analyze(t)));
  }

  async promoteHeld(table: string): Promise<number> {
    const t = this.tableFor(table);
    const d = this.#dialect;
    return this.#transaction(`promote held children of ${table}`, 'apply', async (session) => {
      await session.run(d.tableWriteLock(t, false));
      const promoted = keyPairsOf(await session.run(d.promoteHeld(t, 'all')));
      if (promoted.length > 0) await session.run(d.releaseParked(t, promoted));
      return promoted.length;
    });
  }

  async heldParents(table: string): Promise<HeldParent[]> {
    const { rows } = await this.#query(`read held children of ${table}`, this.#dialect.selectHeldParents(this.tableFor(table)));
    return rows.map((r) => ({ tenant: String(r.tenant), parentPathLocator: String(r.parent_path_locator), children: Number(r.children) }));
  }

  async heldChildren(table: string, tenant: string, parentPathLocator: string): Promise<BlobChange[]> {
    const stmt = this.#dialect.selectHeldChildren(this.tableFor(table), tenant, parentPathLocator);
    const { rows } = await this.#query(`read held children of ${table}`, stmt);
    return rows.map((r) => changeFromHeldRow(table, r));
  }

  async existingPaths(table: string, tenant: string, pathLocators: readonly string[]): Promise<Set<string>> {
    if (pathLocators.length === 0) return new Set();
    const { rows } = await this.#query(
      `read paths of ${table}`,
      this.#dialect.selectExistingPaths(this.tableFor(table), tenant, pathLocators),
    );
    return new Set(rows.map((r) => String(r.path_locator)));
  }

  /**
   * Minimum watermark per table and scope over the partitions with a marker; null when a partition this group has
   * stored an offset for has no marker of that scope yet. Use `consistentAsOfForPartitions` when the partition
   * counts are known: a partition never consumed is invisible here.
   */
  async consistentAsOf(groupId: string): Promise<ConsistentAsOf[]> {
    return this.#consistent(this.#dialect.selectConsistentAsOf(this.#schema, groupId));
  }

  /** As consistentAsOf, null unless every partition of the table's topics (counts from the broker) has a marker. */
  async consistentAsOfForPartitions(groupId: string, partitionsByTopic: ReadonlyMap<string, number>): Promise<ConsistentAsOf[]> {
    return this.#consistent(this.#dialect.selectConsistentAsOfWithPartitions(this.#schema, groupId, partitionsByTopic));
  }

  async resetStoredOffsets(groupId: string, topics: readonly string[], to: OffsetsTo): Promise<void> {
    if (topics.length === 0) return;
    const offsets =
      to === 'earliest'
        ? []
        : topics.flatMap((topic) =>
            [...(to.get(topic) ?? new Map<number, bigint>())].map(([partition, nextOffset]) => ({ topic, partition, nextOffset })),
          );
    const d = this.#dialect;
    await this.#transaction(`reset the offsets of group ${groupId}`, 'bookkeeping', async (session) => {
      await session.run(d.deleteStoredOffsets(this.#schema, groupId, topics));
      await session.run(d.deleteWatermarks(this.#schema, groupId, topics));
      if (offsets.length > 0) await session.run(d.upsertOffsets(this.#schema, groupId, offsets));
    });
  }

  async schemaExists(): Promise<boolean> {
    return present(await this.#query(`look for schema ${this.#schema}`, this.#dialect.selectSchemaExists(this.#schema)));
  }

  /** Swaps the rebuilt schema in, in one transaction: readers see the old schema or the rebuilt one, never a mix. */
  async swapInRebuild(swap: SchemaSwap): Promise<void> {
    const rebuilt = assertIdentifier(swap.rebuiltSchema, 'rebuilt schema');
    const retired = assertIdentifier(swap.retiredSchema, 'retired schema');
    const d = this.#dialect;
    await this.#transaction(`swap schema ${rebuilt} in as ${this.#schema}`, 'bookkeeping', async (session) => {
      const live = present(await session.run(d.selectSchemaExists(this.#schema)));
      await runAll(session, d.swapSchemas(this.#schema, rebuilt, retired, live));
      await runAll(session, d.deleteGroupBookkeeping(this.#schema, swap.toGroupId));
      await runAll(session, d.relabelGroup(this.#schema, swap.fromGroupId, swap.toGroupId));
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#engine.close();
  }

  async #applyIn(session: TargetSession<S>, t: TargetTable, batch: ApplyBatch): Promise<ApplyResult> {
    const d = this.#dialect;
    await session.run(d.tableWriteLock(t, batch.deletes.length > 0));
    const plan = planChunks(batch.rows, batch.chunks, batch.superseded);
    if (plan.chunks.length > 0) await session.loadChunks(this.#schema, plan.chunks);
    if (batch.parked?.length) await session.run(d.parkRows(t, batch.parked));
    // Deletes first: a change of the batch that follows a delete (a ModifiedOn set back) must meet its tombstone,
    // not the version the delete removes.
    const deleted = batch.deletes.length > 0 ? countOf(await session.run(d.applyDeletes(t, batch.deletes)), 'deleted') : 0;
    const rows = plan.rows.length > 0 || plan.released.length > 0 ? await this.#applyRows(session, t, plan.rows, plan.released) : NO_ROWS;
    if (d.dropStageTables) await session.run(d.dropStageTables());
    const touched = [...batch.rows.map((r) => r.change), ...batch.deletes];
    // A held child that the target now holds at its version or newer, or that a delete covers, waits no more.
    if (touched.length > 0) await session.run(d.dropResolvedHeld(t, touched));
    const resolved = [...touched, ...rows.promoted];
    if (resolved.length > 0) await session.run(d.releaseParked(t, resolved));
    if (batch.watermarks.length > 0) await session.run(d.upsertWatermarks(this.#schema, batch.groupId, batch.watermarks));
    if (batch.offsets.length > 0) await session.run(d.upsertOffsets(this.#schema, batch.groupId, batch.offsets));
    const skippedStale = batch.rows.length - rows.applied - rows.missingParent.length - rows.incompleteContent.length - rows.held.length;
    return {
      applied: rows.applied,
      missingParent: rows.missingParent,
      incompleteContent: rows.incompleteContent,
      held: rows.held,
      skippedStale: Math.max(0, skippedStale),
      deleted,
      promoted: rows.promotedWritten,
    };
  }

  /**
   * `released`: chunked versions whose content this batch does not need from hw_chunks (completed in memory, or
   * superseded in the batch); copies of their chunks an earlier batch staged are deleted with the used ones.
   */
  async #applyRows(
    session: TargetSession<S>,
    t: TargetTable,
    rows: readonly StageInput[],
    released: readonly RowToApply[],
  ): Promise<RowsResult> {
    const d = this.#dialect;
    if (rows.length === 0) {
      // Every version of the batch lost (to a delete): only chunks to release; deleteUsedChunks reads the staging table.
      await session.run(d.createStageTable());
      await this.#releaseChunks(session, t, released);
      return NO_ROWS;
    }
    const { latest, superseded } = reduceLatest(rows);
    const chunked = rows.some((r) => r.change.content.kind === 'chunked' && r.assembled === undefined);
    // Only a row with a parent can miss it: without one in the batch the statement would mark nothing.
    const hierarchy = latest.some((r) => r.change.parentPathLocator !== null);
    await session.run(d.createStageTable());
    await session.loadStage(latest);
    if (d.analyzeStage && hierarchy && latest.length >= ANALYZE_STAGE_MIN_ROWS) await session.run(d.analyzeStage);
    if (d.markStale) await session.run(d.markStale(t));
    if (chunked) await session.run(d.assembleChunkedContent(t));
    const incompleteContent = chunked ? keysOf(await session.run(d.markIncompleteContent(t))) : [];
    // Children whose parent is missing are held in the target (hw_held) and parked, so consistent_as_of stays below
    // them; after the upsert, held children whose parent this batch wrote are promoted in one set-based step.
    const held = hierarchy ? keysOf(await session.run(d.markMissingParents(t))) : [];
    if (held.length > 0) await session.run(d.holdMissingParents(t));
    if (incompleteContent.length + held.length > 0) await session.run(d.parkHeldBack(t));
    const applied = await this.#upsert(session, t);
    const moved = await session.run(d.promoteHeld(t, 'batch'));
    const promoted = keyPairsOf(moved);
    if (chunked) await session.run(d.deleteUsedChunks(t, [...superseded, ...released]));
    else if (released.length > 0) await this.#releaseChunks(session, t, released);
    return { applied, missingParent: [], incompleteContent, held, promoted, promotedWritten: Number(moved.rows[0]?.written ?? 0) };
  }

  /**
   * Deletes staged chunks of versions that no longer need them, when nothing of this batch goes through the SQL
   * assembly: deleteUsedChunks with an empty staging table (created for it where the batch staged no rows).
   */
  async #releaseChunks(session: TargetSession<S>, t: TargetTable, released: readonly RowToApply[]): Promise<void> {
    await session.run(this.#dialect.deleteUsedChunks(t, released));
  }

  /**
   * The staged rows into the target: a plain insert while the table is known to hold none of their keys (a first
   * load, a rebuild into a fresh schema), under a savepoint; the guarded upsert otherwise, or when the insert meets
   * a key the target holds after all (another consumer, a replay). Returns the rows written.
   */
  async #upsert(session: TargetSession<S>, t: TargetTable): Promise<number> {
    const d = this.#dialect;
    const fast = d.fastInsert;
    if (fast !== null) {
      if (!this.#fastInsert.has(t.table)) this.#fastInsert.set(t.table, present(await session.run(fast.selectTargetEmpty(t)), 'empty'));
      if (this.#fastInsert.get(t.table) === true) {
        await session.run(fast.savepoint);
        try {
          const inserted = countOf(await session.run(fast.insertFromStage(t)), 'applied');
          await session.run(fast.releaseSavepoint);
          return inserted;
        } catch (thrown) {
          if (!fast.isUniqueViolation(thrown)) throw thrown;
          await session.run(fast.rollbackToSavepoint);
          this.#fastInsert.set(t.table, false);
        }
      }
    }
    return countOf(await session.run(d.upsertFromStage(t)), 'applied');
  }

  async #consistent(stmt: S): Promise<ConsistentAsOf[]> {
    const { rows } = await this.#query('read consistent_as_of', stmt);
    return rows.map((r) => ({
      table: String(r.table_name),
      scope: String(r.scope),
      watermark: r.watermark === null ? null : BigInt(String(r.watermark)),
    }));
  }

  async #query(context: string, stmt: S): Promise<StatementResult> {
    this.#assertOpen();
    return this.#engine.query(context, stmt);
  }

  async #transaction<T>(context: string, role: 'apply' | 'bookkeeping', work: (session: TargetSession<S>) => Promise<T>): Promise<T> {
    this.#assertOpen();
    return this.#engine.transaction(context, role, work);
  }

  #assertOpen(): void {
    if (this.#closed) throw new HighwaterError('INTERNAL', `the ${this.#engine.name} writer is closed`);
  }
}

async function runAll<S>(session: TargetSession<S>, statements: readonly S[]): Promise<void> {
  for (const stmt of statements) await session.run(stmt);
}

/** A count a statement reports as a one-row column (T-SQL's SELECT @@ROWCOUNT AS …), or else the driver's row count. */
function countOf(result: StatementResult, column: string): number {
  const reported = result.rows[0]?.[column];
  return reported === undefined ? result.rowCount : Number(reported ?? 0);
}

function keysOf(result: StatementResult): string[] {
  return result.rows.map((r) => String(r.key));
}

function keyPairsOf(result: StatementResult): KeyPair[] {
  return result.rows.map((r) => ({ tenant: String(r.tenant), key: String(r.key) }));
}

/** A boolean column (`present` by default): PostgreSQL answers a boolean, SQL Server 1 or 0. */
function present(result: StatementResult, column = 'present'): boolean {
  return Number(result.rows[0]?.[column] ?? 0) === 1;
}

/** schema/target-<engine> beside src when run from source, or two levels further up when run from dist/. */
function defaultMigrationsDir(kind: 'postgres' | 'sqlserver'): string {
  const candidates = [`../../../schema/target-${kind}/`, `../../../../schema/target-${kind}/`].map((p) =>
    fileURLToPath(new URL(p, import.meta.url)),
  );
  return candidates.find((dir) => existsSync(dir)) ?? candidates[0]!;
}
