import type { BlobChange, BlobChunk, Ticks } from '../../contract.js';

/**
 * What the apply loop needs from a target database. One implementation per engine in consumers/<engine>/, each
 * with the same file names: dialect.ts (pure SQL builders returning { text, values }) and writer.ts (executes).
 * The loop reduces, orders and decides; the writer only makes one batch durable, atomically with its offsets.
 */

/** Where a partition stands in the target: the next offset to consume. */
export interface StoredOffset {
  readonly topic: string;
  readonly partition: number;
  readonly nextOffset: bigint;
}

/**
 * A row to upsert: the latest version of its key in the batch. Inline content is in `change.content.bytes`;
 * chunked content (`change.content.kind === 'chunked'`) is put together by the writer: from the batch's own chunks
 * when they are all in the batch (in memory, verified, staged as inline content; chunks.ts), otherwise inside the
 * database from the chunks staged in hw_chunks under `change.contentSha256` — so a blob is never in the service's
 * memory beyond the chunks one batch holds anyway.
 */
export interface RowToApply {
  readonly change: BlobChange;
}

export interface DeleteToApply {
  readonly table: string;
  readonly tenant: string;
  readonly key: string;
  /** The last ModifiedOn the poller published for the key (for people); the delete's version is `observed`. */
  readonly modifiedOn: Ticks | null;
  /** Removes every version observed at or before it. */
  readonly observed: Ticks;
}

/** A row the loop sent to the retry topic: the target does not hold it until it is resolved. */
export interface ParkedRow {
  readonly tenant: string;
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly observed: Ticks;
  /** missing-parent, incomplete, or why else it waits. */
  readonly reason: string;
}

export interface WatermarkToRecord {
  readonly table: string;
  readonly tenant: string;
  readonly scope: string;
  readonly topic: string;
  readonly partition: number;
  readonly watermark: Ticks;
}

export interface ApplyBatch {
  readonly groupId: string;
  readonly table: string;
  readonly rows: readonly RowToApply[];
  readonly deletes: readonly DeleteToApply[];
  readonly watermarks: readonly WatermarkToRecord[];
  /**
   * Chunks of large blobs. Those of a row of this batch that are all here make its content in memory and are never
   * staged; the others are staged in the target (same transaction) until their row arrives.
   */
  readonly chunks: readonly BlobChunk[];
  /**
   * Versions of this batch's records that lost to another version in the batch (the loop's reduction): never
   * written, so their chunks are not staged, and chunks of theirs staged by earlier batches are released.
   */
  readonly superseded?: readonly BlobChange[];
  /** Offsets to store with the data, in the same transaction. */
  readonly offsets: readonly StoredOffset[];
  /**
   * Rows of this batch's records that went to the retry topic instead: remembered (same transaction) until the
   * target holds them, so consistent_as_of stays below them. Rows the writer itself holds back are remembered too.
   */
  readonly parked?: readonly ParkedRow[];
  /**
   * Called inside the transaction, after the writes and before COMMIT, with their result. The loop publishes the
   * rows that could not be written (missing parent, incomplete content) to the retry topic here, so the offsets
   * that cover them are never durable before they are safe elsewhere. If it throws, the transaction rolls back.
   */
  readonly beforeCommit?: (result: ApplyResult) => Promise<void>;
}

export interface ApplyResult {
  /** Rows written (inserted or updated). */
  readonly applied: number;
  /** Rows not written because the target already held a newer or equal version (or a newer delete). */
  readonly skippedStale: number;
  readonly deleted: number;
  /**
   * Keys of rows whose parent is neither in the target nor in this batch and that the writer did not keep: the loop
   * routes them to the retry topic. Writers that hold such rows in the target (hw_held) report them in `held`.
   */
  readonly missingParent: readonly string[];
  /** Keys of rows whose parent is missing, held in the target (same transaction) until it arrives. */
  readonly held: readonly string[];
  /** Held rows written by this batch because their parent is now in the target (promoted from holding). */
  readonly promoted: number;
  /** Keys of chunked rows whose chunks are not all staged; they were not written (treated like missing parents). */
  readonly incompleteContent: readonly string[];
}

export interface TargetWriter {
  readonly kind: 'postgres' | 'sqlserver';
  /** The largest content this target stores in one value; larger rows are dead-lettered, never retried for ever. */
  readonly maxContentBytes: number;
  /** Creates the target tables (numbered migrations in schema/target-<engine>/) if they are missing. */
  migrate(): Promise<void>;
  /** Offsets stored in the target for this group, to resume from. */
  storedOffsets(groupId: string, topics: readonly string[]): Promise<StoredOffset[]>;
  /**
   * Applies one batch in one transaction: upserts and deletes guarded by the contract's version order
   * (src/events/version.ts, so every replica converges), parked rows, watermarks, offsets.
   * Rows whose parent is missing are left out and reported, so the loop can route them to the retry topic.
   */
  apply(batch: ApplyBatch): Promise<ApplyResult>;
  /**
   * Promotes every held child of `table` whose parent is now in the target (a sweep: a parent written by another
   * consumer's concurrent transaction is not seen by the batch that holds its child). Returns how many left holding.
   */
  promoteHeld(table: string): Promise<number>;
  /** The parents that held children of `table` wait for and that are not held themselves (the tops of the chains). */
  heldParents(table: string): Promise<HeldParent[]>;
  /** The held children of one parent, as changes (for the dead-letter topic). */
  heldChildren(table: string, tenant: string, parentPathLocator: string): Promise<BlobChange[]>;
  /** Whether rows with these parent path locators exist in the target (for retried children). */
  existingPaths(table: string, tenant: string, pathLocators: readonly string[]): Promise<Set<string>>;
  /** consistent_as_of per table: the minimum watermark over the partitions of its topic. */
  consistentAsOf(groupId: string): Promise<{ table: string; scope: string; watermark: Ticks | null }[]>;
  /** As consistentAsOf, but null for a table unless every partition of its topics (counts from the broker) has a marker. */
  consistentAsOfForPartitions(groupId: string, partitionsByTopic: ReadonlyMap<string, number>): Promise<{ table: string; scope: string; watermark: Ticks | null }[]>;
  /**
   * Rewrites where the group stands on `topics`, in one transaction: 'earliest' deletes the stored offsets (the
   * consumer then starts at the log start), a map stores those next offsets instead. The group's watermarks of
   * those topics are deleted too: the replay brings them back, and until then consistent_as_of claims nothing.
   */
  resetStoredOffsets(groupId: string, topics: readonly string[], to: OffsetsTo): Promise<void>;
  /** Whether the target schema exists at all (a rebuild goes only into one that does not). */
  schemaExists(): Promise<boolean>;
  /**
   * Swaps a rebuilt schema in, in one transaction: this writer's schema becomes `retiredSchema` (when it exists),
   * `rebuiltSchema` becomes this writer's schema, and the offsets and watermarks the rebuild stored under
   * `fromGroupId` are relabelled `toGroupId`, so the configured group continues from where the rebuild stopped.
   */
  swapInRebuild(swap: SchemaSwap): Promise<void>;
  close(): Promise<void>;
}

/** A parent that held children wait for. */
export interface HeldParent {
  readonly tenant: string;
  readonly parentPathLocator: string;
  /** How many held children wait for it directly. */
  readonly children: number;
}

/** Where resetStoredOffsets puts a group: at the log start, or at the given next offset per topic and partition. */
export type OffsetsTo = 'earliest' | ReadonlyMap<string, ReadonlyMap<number, bigint>>;

export interface SchemaSwap {
  readonly rebuiltSchema: string;
  readonly retiredSchema: string;
  readonly fromGroupId: string;
  readonly toGroupId: string;
}
