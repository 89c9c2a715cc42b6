/**
 * The vocabulary of highwater, in one place.
 *
 * - **ticks**: a point in time as a `bigint` count of 100 ns intervals since 1970-01-01T00:00:00Z. SQL Server's
 *   `datetime2(7)` has exactly this resolution and PostgreSQL's microseconds are a multiple of it, so `ModifiedOn`
 *   travels from source to target without ever passing through a JS `Date` (milliseconds).
 * - **window**: the `(start, end]` range of `ModifiedOn` one poll reads for a table and scope. `end` comes from the
 *   source database's clock minus the safety buffer, clamped to the oldest open write transaction; `start` is the
 *   previous high-watermark minus the buffer, so consecutive windows overlap by the buffer.
 * - **position**: a keyset cursor `(modifiedOn, key)`; a page returns rows strictly after it. Keys are compared by the
 *   source database, never in JS, because SQL Server orders `uniqueidentifier` differently from PostgreSQL.
 * - **step**: one pass inside a window: `roots` (no parent), `missing-parents` (parents referenced by the window's
 *   children that are neither in the window nor already published), `children`.
 * - **batch**: one page of one step, published and acknowledged by Kafka before its checkpoint is written.
 * - **run**: one invocation of the poller over some tables; resumable by run id from its last completed batch.
 * - **high-watermark**: per table and scope, the window end of the last fully acknowledged window.
 * - **lease**: per table and scope, who may poll it until when; an expired lease may be taken over.
 * - **marker**: a watermark event sent to every partition after the high-watermark advances; a consumer that has
 *   passed the marker on every partition holds everything up to that point (`consistent_as_of`).
 * - **observation**: one read of the source. Each gets a stamp (`observed`, ticks) that is strictly increasing per
 *   table across every reader of that table, and reads of a table are serialised, so a later stamp always saw a
 *   state at least as new. Of two states with the same ModifiedOn, the later observed is the newer; a delete is
 *   an observation too (the row was gone).
 * - **version**: `(modifiedOn, observed)` of a change — ModifiedOn first (NULL before every value), the observation
 *   stamp on a tie; a delete removes every version observed at or before it. See src/events/version.ts.
 * - **registry**: the control store's record of the last published version (ModifiedOn, observation, a digest of
 *   the published columns) per key, used to skip unchanged re-reads in the overlap, find missing parents and detect
 *   deletes. A key is registered as pending before its first send, so a crash before the acknowledgement still
 *   leaves it where the delete sweep looks.
 * - **tombstone**: a Kafka record with the row's key and a null value: the row was deleted at the source.
 * - **dead letter**: a record the consumer could not apply, re-published to `<topic>.dlq` with the reason.
 */

/** 100 ns intervals since the Unix epoch (UTC). */
export type Ticks = bigint;

/** The steps of a window, in the order they run. */
export const STEPS = ['roots', 'missing-parents', 'children'] as const;
export type Step = (typeof STEPS)[number];

/** Keyset cursor: rows strictly after `(modifiedOn, key)` in the source's own ordering. */
export interface Position {
  readonly modifiedOn: Ticks;
  readonly key: string;
}

/** The window one poll reads, `(start, end]`, in ticks. */
export interface Window {
  readonly start: Ticks;
  readonly end: Ticks;
}

/** FileTable-style attributes that travel with a row; every field is optional because not every source has them. */
export interface FileAttributes {
  readonly creationTime?: Ticks | null;
  readonly lastWriteTime?: Ticks | null;
  readonly lastAccessTime?: Ticks | null;
  readonly isReadonly?: boolean | null;
  readonly isHidden?: boolean | null;
  readonly isSystem?: boolean | null;
  readonly isArchive?: boolean | null;
}

/** One row as a source connector reads it. `content` is null when it is not inline (large, or a directory). */
export interface SourceRow {
  readonly key: string;
  readonly name: string | null;
  readonly pathLocator: string | null;
  readonly parentPathLocator: string | null;
  readonly isDirectory: boolean;
  readonly contentLength: number | null;
  readonly content: Buffer | null;
  /** NULL ModifiedOn at the source is null here: such rows are replicated (found by their own step) and reported. */
  readonly modifiedOn: Ticks | null;
  readonly businessUnit: string | null;
  readonly attributes: FileAttributes;
}

/** Where the content of a change event is: inline bytes, chunks published before it, or none (directory/null). */
export type ContentRef =
  | { readonly kind: 'inline'; readonly bytes: Buffer }
  | { readonly kind: 'chunked'; readonly chunkCount: number; readonly chunkSize: number; readonly totalSize: number }
  | { readonly kind: 'none' };

/** The value of a row event on a table topic (schema `BlobChange`). */
export interface BlobChange {
  readonly table: string;
  readonly tenant: string;
  readonly key: string;
  readonly name: string | null;
  readonly pathLocator: string | null;
  readonly parentPathLocator: string | null;
  readonly isDirectory: boolean;
  readonly size: number | null;
  readonly attributes: FileAttributes;
  /** null when the source row has no ModifiedOn; such a version sorts before every ModifiedOn. */
  readonly modifiedOn: Ticks | null;
  /** When this state was read (see "observation"): breaks ModifiedOn ties by recency, never by an arbitrary value. */
  readonly observed: Ticks;
  readonly businessUnit: string | null;
  readonly content: ContentRef;
  /** SHA-256 of the whole content, or null when there is none. */
  readonly contentSha256: Buffer | null;
  readonly runId: string;
  readonly window: Window;
  /**
   * Contract v2.1 (header `hw-deleted-before-ticks`): the poller deleted the key, observed at these ticks, just before
   * this state — a ModifiedOn that moved backwards (a restore, a value set to NULL). Apply that delete first: its own
   * tombstone shares this record's key, so compaction may have removed it before a lagging reader got there.
   */
  readonly deletedBefore?: Ticks;
}

/** One slice of a large blob (schema `BlobChunk`), keyed `chunk/<row key>/<sha256>/<index>` in the row's partition. */
export interface BlobChunk {
  readonly table: string;
  readonly key: string;
  readonly contentSha256: Buffer;
  readonly index: number;
  readonly count: number;
  readonly bytes: Buffer;
}

/** A watermark marker (schema `WatermarkMarker`): everything of `table`/`scope` up to `watermark` precedes it. */
export interface WatermarkMarker {
  readonly table: string;
  readonly tenant: string;
  readonly scope: string;
  readonly watermark: Ticks;
  readonly runId: string;
  readonly partition: number;
}

/**
 * What a tombstone carries in its headers: when the row was seen gone (`observed`), which removes every version
 * observed at or before it, and the last ModifiedOn the poller had published for it (for people; null when unknown
 * or NULL at the source).
 */
export interface Deletion {
  readonly table: string;
  readonly tenant: string;
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly observed: Ticks;
  readonly runId: string;
}

/** Every record a consumer can meet on a table topic, once decoded. */
export type TopicEvent =
  | { readonly type: 'change'; readonly change: BlobChange }
  | { readonly type: 'chunk'; readonly chunk: BlobChunk }
  | { readonly type: 'marker'; readonly marker: WatermarkMarker }
  | { readonly type: 'delete'; readonly deletion: Deletion };

/** Header names on every record highwater publishes. */
export const HEADERS = {
  kind: 'hw-kind',
  table: 'hw-table',
  tenant: 'hw-tenant',
  modifiedOn: 'hw-modified-on',
  modifiedOnTicks: 'hw-modified-on-ticks',
  observedTicks: 'hw-observed-ticks',
  deletedBeforeTicks: 'hw-deleted-before-ticks',
  runId: 'hw-run-id',
  encoding: 'hw-encoding',
  error: 'hw-error',
  errorKind: 'hw-error-kind',
  originalTopic: 'hw-original-topic',
  originalPartition: 'hw-original-partition',
  originalOffset: 'hw-original-offset',
  failedAt: 'hw-failed-at',
  attempt: 'hw-attempt',
  notBefore: 'hw-not-before',
} as const;

/** Values of the `hw-kind` header. */
export type RecordKind = 'change' | 'chunk' | 'marker' | 'delete';

/** Key prefixes that can never collide with a row key (row keys are validated not to start with a NUL). */
export const MARKER_KEY_PREFIX = '\u0000marker/';
export const CHUNK_KEY_PREFIX = '\u0000chunk/';
