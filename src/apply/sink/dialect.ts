import type { BlobChunk, Ticks } from '../../contract.js';
import type { MigrationBook } from '../../db/migrate.js';
import type { AssembledContent } from './chunks.js';
import type { DeleteToApply, ParkedRow, RowToApply, StoredOffset, WatermarkToRecord } from './writer.js';

/**
 * What a target engine says, and how it runs it. The apply sequence exists once (sql-writer.ts); an engine
 * supplies a TargetDialect (pure builders returning its statement type S, consumers/<engine>/dialect.ts) and a
 * TargetEngine (its pool, transactions, bulk load and error classification, consumers/<engine>/session.ts).
 * A third engine implements these two and nothing else.
 */

/** A configured table as it lives in the target: its logical name (used in bookkeeping rows) and its SQL name. */
export interface TargetTable {
  readonly logical: string;
  readonly schema: string;
  readonly table: string;
}

/** Rows may carry where they were read from; the writer stores it in source_partition/source_offset when present. */
export interface StageInput extends RowToApply {
  readonly sourcePartition?: number;
  readonly sourceOffset?: bigint;
  /**
   * A chunked row's content, completed and verified from the batch's own chunks (chunks.ts): staged as inline
   * content, so the engine's SQL assembly leaves it alone.
   */
  readonly assembled?: AssembledContent;
}

/** A key held back in the staging table, and why. */
export type HeldBack = 'incomplete' | 'missing-parent';

export interface TargetDialect<S> {
  /** The largest content this engine stores in one value (src/apply/sink/limits.ts). */
  readonly maxContentBytes: number;
  targetTable(schema: string, logical: string): TargetTable;

  // migrations: the bookkeeping tables (numbered files) and one blob table per configured table
  migrations(schema: string): MigrationBook<S>;
  blobTableDdl(fileText: string, t: TargetTable): S[];

  // the apply sequence, in the order the writer runs it
  /** Shared for upserting batches, exclusive for batches with deletes (see the PostgreSQL dialect). */
  tableWriteLock(t: TargetTable, exclusive: boolean): S;
  parkRows(t: TargetTable, rows: readonly ParkedRow[]): S;
  /** Guarded deletes and their tombstones; reports the rows deleted (column `deleted`, or the row count). */
  applyDeletes(t: TargetTable, deletes: readonly DeleteToApply[]): S;
  createStageTable(): S;
  /**
   * Gives the planner statistics of the loaded staging table, where the engine does not make them by itself (a
   * PostgreSQL temporary table is never analyzed by autovacuum); null where it does. Run for large hierarchical
   * batches only: without statistics a large batch's parent checks are planned for a handful of rows.
   */
  readonly analyzeStage: S | null;
  /**
   * Statistics of a target table and its holding tables (hw_held, hw_parked), run outside any transaction when the
   * writer has grown them enough (StatisticsPolicy); null where the engine keeps statistics up to date itself.
   */
  readonly analyzeTables: ((t: TargetTable) => S) | null;
  /** Marks stale staged rows up front, where the engine classifies that way; null where staleness is inline. */
  readonly markStale: ((t: TargetTable) => S) | null;
  assembleChunkedContent(t: TargetTable): S;
  /** Returns the keys (column `key`) of chunked rows whose content could not be assembled. */
  markIncompleteContent(t: TargetTable): S;
  /** Returns the keys (column `key`) of rows whose parent is neither in the target nor placed by the batch. */
  markMissingParents(t: TargetTable): S;
  /** Copies the staged rows marked missing-parent into hw_held (a newer held version replaces an older one only). */
  holdMissingParents(t: TargetTable): S;
  parkHeldBack(t: TargetTable): S;
  /** Reports the rows written (column `applied`, or the row count). */
  upsertFromStage(t: TargetTable): S;
  /**
   * A plain insert of the staged rows for a table known to hold none of their keys (first load, rebuild into a
   * fresh schema), tried under a savepoint; null where the engine always takes the guarded upsert.
   */
  readonly fastInsert: FastInsert<S> | null;
  /**
   * Moves held children whose parent is now in the target into it (recursively, down a held chain), guarded like
   * the upsert; 'batch' looks only below the parents this batch staged, 'all' at every held child. Columns: tenant, key.
   */
  promoteHeld(t: TargetTable, scope: 'batch' | 'all'): S;
  /** Drops held children that the target now holds at their version or newer, or that a delete covers. */
  dropResolvedHeld(t: TargetTable, keys: readonly { tenant: string; key: string }[]): S;
  deleteUsedChunks(t: TargetTable, superseded: readonly RowToApply[]): S;
  /** Drops the session's staging tables before COMMIT; null where they go at COMMIT by themselves. */
  readonly dropStageTables: (() => S) | null;
  releaseParked(t: TargetTable, keys: readonly { tenant: string; key: string }[]): S;
  upsertWatermarks(schema: string, groupId: string, marks: readonly WatermarkToRecord[]): S;
  upsertOffsets(schema: string, groupId: string, offsets: readonly StoredOffset[]): S;

  // reads
  /** Columns: topic, partition, next_offset. */
  selectStoredOffsets(schema: string, groupId: string, topics: readonly string[]): S;
  /** The parents held children wait for that are not held themselves. Columns: tenant, parent_path_locator, children. */
  selectHeldParents(t: TargetTable): S;
  /** The held children of one parent, as hw_held rows (target column names). */
  selectHeldChildren(t: TargetTable, tenant: string, parentPathLocator: string): S;
  /** Column: path_locator. */
  selectExistingPaths(t: TargetTable, tenant: string, pathLocators: readonly string[]): S;
  /** Columns: table_name, scope, watermark. */
  selectConsistentAsOf(schema: string, groupId: string): S;
  selectConsistentAsOfWithPartitions(schema: string, groupId: string, partitionsByTopic: ReadonlyMap<string, number>): S;
  /** Column: present (true or 1 when it exists). */
  selectSchemaExists(schema: string): S;

  // operations
  deleteStoredOffsets(schema: string, groupId: string, topics: readonly string[]): S;
  deleteWatermarks(schema: string, groupId: string, topics: readonly string[]): S;
  deleteGroupBookkeeping(schema: string, groupId: string): S[];
  relabelGroup(schema: string, from: string, to: string): S[];
  /** Puts `rebuilt` in the place of `live` (which moves to `retired` when it exists), inside the caller's transaction. */
  swapSchemas(live: string, rebuilt: string, retired: string, liveExists: boolean): S[];
}

/** The statements of the insert fast path, and how the engine reports that an insert met an existing key. */
export interface FastInsert<S> {
  /** Column: empty (true or 1 when the target table holds no row). */
  selectTargetEmpty(t: TargetTable): S;
  /** Inserts the latest staged version per key that is neither held back nor covered by a tombstone. */
  insertFromStage(t: TargetTable): S;
  readonly savepoint: S;
  readonly rollbackToSavepoint: S;
  readonly releaseSavepoint: S;
  isUniqueViolation(thrown: unknown): boolean;
}

/** A statement's outcome as the writer reads it: the rows of its last result set, and the driver's row count. */
export interface StatementResult {
  readonly rows: readonly Record<string, unknown>[];
  readonly rowCount: number;
}

/** One transaction of a target: runs statements, and loads rows and chunks the engine's bulk way. */
export interface TargetSession<S> {
  run(stmt: S): Promise<StatementResult>;
  /** Loads the rows into the staging table createStageTable made (binary COPY, TDS bulk load, …). */
  loadStage(rows: readonly StageInput[]): Promise<void>;
  /** Stores chunks of large blobs in hw_chunks, unless already there. */
  loadChunks(schema: string, chunks: readonly BlobChunk[]): Promise<void>;
}

/** How a transaction's errors are classified: `apply` makes row-value errors DB_CONSTRAINT (dead-lettered). */
export type ErrorRole = 'apply' | 'bookkeeping';

export interface TargetEngine<S> {
  /** The engine's name in messages: "PostgreSQL", "SQL Server". */
  readonly name: string;
  readonly kind: 'postgres' | 'sqlserver';
  query(context: string, stmt: S): Promise<StatementResult>;
  transaction<T>(context: string, role: ErrorRole, work: (session: TargetSession<S>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** consistent_as_of of one table and scope. */
export interface ConsistentAsOf {
  readonly table: string;
  readonly scope: string;
  readonly watermark: Ticks | null;
}
