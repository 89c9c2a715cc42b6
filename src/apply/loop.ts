import type { BlobChange, Deletion, WatermarkMarker } from '../contract.js';
import { HEADERS } from '../contract.js';
import type { EventCodec } from '../events/codec.js';
import { decodeRecord, expandDeletedBefore, type InRecord, type OutRecord } from '../events/records.js';
import { coerceError, HighwaterError } from '../errors.js';
import type { ManualConsumer, PartitionBatch } from '../kafka/consumer.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { withRetry, DEFAULT_RETRY, type RetryPolicy } from '../retry.js';
import type { ApplyResult, ParkedRow, TargetWriter, WatermarkToRecord } from './sink/writer.js';
import { TargetPositions } from './positions.js';
import { reduceBatch, type BatchEvent, type ReducedBatch } from './reduce.js';
import { deadLetterRecord, retryRecord } from './side-records.js';

/**
 * The apply loop, shared by every target: per partition batch — decode (poison to the dead-letter topic first),
 * reduce to the latest version per key, then hand it to the writer, which stores rows and offsets in one
 * transaction. Children whose parent is in neither the batch nor the target are held by the writer in the target
 * itself (hw_held, same transaction) and promoted set-based when the parent arrives; no Kafka round trip per child
 * (HeldResolver asks for back-fills of parents that never come). Kafka's own
 * offsets are committed only after that, for lag monitoring. Everything published to a side topic is
 * acknowledged before the offsets that cover its source record are stored, so a crash can duplicate, never lose.
 */

export interface TopicBinding {
  readonly table: string;
  readonly topic: string;
  readonly retryTopic: string;
  readonly dlqTopic: string;
}

export interface ApplyLoopDeps {
  readonly groupId: string;
  readonly bindings: readonly TopicBinding[];
  readonly writer: TargetWriter;
  readonly codec: EventCodec;
  readonly publisher: Publisher;
  readonly logger: Logger;
  readonly batchMaxRecords: number;
  readonly retryDelayMs: number;
  readonly dbRetry?: RetryPolicy;
  /**
   * Apply the batches of one fetch together: per table, one transaction over all its partitions' records (merged in
   * the order they were produced), instead of one transaction per partition. A child whose parent the poller sent
   * to another partition of the same fetch is then written with it, not held. The consumer must hand out a
   * fetch's batches at once (partitionsConsumedConcurrently at least the partitions assigned).
   */
  readonly applyFetchTogether?: boolean;
  readonly onApplied?: (info: { table: string; partition: number; result: ApplyResult; deadLettered: number; retried: number; duplicates: number; seconds: number }) => void;
}

/** The longest a partition's trailing chunks wait for their row before they are staged anyway (holdTrailingChunks). */
export const CHUNK_HOLD_MS = 1000;
/** Trailing chunks adding up to more than this are staged at once: with their row they might not fit one fetch. */
export const CHUNK_HOLD_BYTES = 4 << 20;
/** How long a partition whose fetched records are all held back is paused before it is fetched again. */
const CHUNK_HOLD_PAUSE_MS = 50;

/** A record of a chunk (not a chunk's tombstone). */
function isChunk(r: InRecord): boolean {
  return r.value !== null && r.headers[HEADERS.kind] === 'chunk';
}

/**
 * How many records at the end of a fetched batch to leave for the next fetch: the run of chunk records that ends
 * it, whose row (published right behind its chunks) is not fetched yet. Applied now, those chunks would be staged
 * in the target and their row assembled there; left unresolved they are fetched again with their row, and the
 * writer completes the content in memory. Bounded: a run is held only while it is at most CHUNK_HOLD_BYTES; at the
 * end of the log (`atEnd`: the row is not in Kafka yet) the same run (same first offset) is held for at most
 * CHUNK_HOLD_MS; before the end (the fetch stopped at its size limit) only once, since a fetch that again stops
 * right after the run would not bring the row either. Then it is applied as before. `held` is the run held last
 * time for this partition, and is updated. Pure but for `now`.
 */
export function trailingChunksToHold(records: readonly InRecord[], atEnd: boolean, held: { from: bigint; since: number } | undefined, now: number): { count: number; held: { from: bigint; since: number } | undefined } {
  let count = 0;
  let bytes = 0;
  for (let i = records.length - 1; i >= 0 && isChunk(records[i]!); i--) {
    count++;
    bytes += records[i]!.value!.length;
  }
  if (count === 0 || bytes > CHUNK_HOLD_BYTES) return { count: 0, held: undefined };
  const from = records[records.length - count]!.offset;
  if (held === undefined || held.from !== from) return { count, held: { from, since: now } };
  if (atEnd && now - held.since < CHUNK_HOLD_MS) return { count, held };
  return { count: 0, held: undefined };
}

export class ApplyLoop {
  private readonly positions: TargetPositions;
  private readonly byTopic: Map<string, TopicBinding>;
  private consumer: ManualConsumer | undefined;
  /** Per table, the writes in flight now (see `overlapping`). */
  private readonly inFlight = new Map<string, { writes: number; overlapped: boolean; held: boolean }>();
  /** Per partition, the trailing chunks held back last (trailingChunksToHold). */
  private readonly heldChunks = new Map<string, { from: bigint; since: number }>();
  /** The fetch being gathered (applyFetchTogether): its batches so far, and when the group is durable. */
  private gathering: { batches: PartitionBatch[]; done: Promise<void> } | undefined;

  constructor(private readonly deps: ApplyLoopDeps) {
    this.byTopic = new Map(deps.bindings.map((b) => [b.topic, b]));
    this.positions = new TargetPositions(deps.writer, deps.groupId, deps.logger);
  }

  attach(consumer: ManualConsumer): void {
    this.consumer = consumer;
  }

  forgetPositions(): void {
    this.positions.forget();
    this.heldChunks.clear();
  }

  /**
   * Applies one fetched partition batch. With applyFetchTogether, the batches kafkajs hands out together (one fetch)
   * are gathered first — they all arrive before the event loop turns, kafkajs starting their handlers in one go —
   * and applied as one group; each call resolves when its group is durable.
   */
  handle(batch: PartitionBatch): Promise<void> {
    if (this.deps.applyFetchTogether !== true) return this.applyGroup([batch]);
    if (this.gathering === undefined) {
      const batches: PartitionBatch[] = [];
      const done = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        this.gathering = undefined;
        return this.applyGroup(batches);
      });
      this.gathering = { batches, done };
    }
    this.gathering.batches.push(batch);
    return this.gathering.done;
  }

  /** Aligns each batch with the target, then applies each table's records, all its partitions in the same slices. */
  private async applyGroup(batches: readonly PartitionBatch[]): Promise<void> {
    const parts: { binding: TopicBinding; batch: PartitionBatch; records: readonly InRecord[] }[] = [];
    for (const batch of batches) {
      const binding = this.byTopic.get(batch.topic);
      if (!binding) throw new HighwaterError('INTERNAL', `no table is bound to topic ${batch.topic}`);
      const aligned = await this.positions.align(batch, this.consumer!);
      if (aligned.kind === 'seeked-back') continue;
      if (aligned.heldUpTo !== null) batch.resolve(aligned.heldUpTo);
      const records = this.holdTrailingChunks(batch, aligned.records);
      if (records.length > 0) parts.push({ binding, batch, records });
    }
    for (const binding of new Set(parts.map((p) => p.binding))) {
      const own = parts.filter((p) => p.binding === binding);
      await this.applyTable(binding, new Map(own.map((p) => [p.batch.partition, p.batch])), mergeByProduction(own.map((p) => p.records)));
    }
  }

  /**
   * Applies records of one table (of the partitions in `batches`, each partition's in its order) slice by slice.
   * The next slice is decoded and reduced while the current one's transaction runs (decoding yields to the event
   * loop, so the transaction's statements are still sent as soon as their answers come). Preparing has no side
   * effect: the dead letters, the write, the offsets and the commits stay in slice order, below.
   */
  private async applyTable(binding: TopicBinding, batches: ReadonlyMap<number, PartitionBatch>, records: readonly InRecord[]): Promise<void> {
    const slices = slicedPerPartition(records, this.deps.batchMaxRecords);
    const ahead = (i: number): Promise<PreparedSlice> | undefined => {
      if (i >= slices.length) return undefined;
      const prepared = this.prepare(slices[i]!);
      // Left behind when this batch stops early (revoked, a failed write): its rejection is nobody's to handle.
      prepared.catch(() => undefined);
      return prepared;
    };
    let next = ahead(0);
    for (let i = 0; i < slices.length; i++) {
      const partitions = partitionsOf(slices[i]!, batches);
      if (!partitions.every((p) => p.batch.isCurrent())) return;
      const prepared = await next!;
      next = ahead(i + 1);
      if (!(await this.applySlice(binding, partitions, prepared))) return;
      await partitions[0]!.batch.heartbeat();
    }
  }

  /**
   * The records to apply now: all but the trailing chunks trailingChunksToHold leaves for the next fetch (left
   * unresolved, they are fetched again). When nothing is left at the end of the log, the partition pauses briefly
   * instead of fetching the same records again at once.
   */
  private holdTrailingChunks(batch: PartitionBatch, records: readonly InRecord[]): readonly InRecord[] {
    const id = `${batch.topic}\u0000${batch.partition}`;
    const last = records.at(-1);
    const atEnd = batch.highWatermark === undefined || last === undefined || last.offset + 1n >= batch.highWatermark;
    const { count, held } = trailingChunksToHold(records, atEnd, this.heldChunks.get(id), Date.now());
    if (held === undefined) this.heldChunks.delete(id);
    else this.heldChunks.set(id, held);
    if (count === 0) return records;
    if (count === records.length && atEnd) {
      const resume = batch.pause();
      setTimeout(resume, CHUNK_HOLD_PAUSE_MS).unref();
    }
    return records.slice(0, records.length - count);
  }

  /**
   * Runs one write of `table`, counting the writes of the table in flight in this process (partitions applied
   * concurrently). Two overlapping transactions do not see each other's rows: a child one of them held may have its
   * parent written by the other, and neither promotes it. So when the writes of a stretch in which two of them
   * overlapped have all ended, and one of them held children, the table's held children are promoted once — as the
   * HeldResolver does for other consumer instances, without waiting for its next round.
   */
  private async overlapping(table: string, write: () => Promise<ApplyResult>): Promise<ApplyResult> {
    let stretch = this.inFlight.get(table);
    if (stretch === undefined) this.inFlight.set(table, (stretch = { writes: 0, overlapped: false, held: false }));
    stretch.writes++;
    if (stretch.writes > 1) stretch.overlapped = true;
    try {
      const result = await write();
      if (result.held.length > 0) stretch.held = true;
      return result;
    } finally {
      stretch.writes--;
      if (stretch.writes === 0) {
        this.inFlight.delete(table);
        if (stretch.overlapped && stretch.held) await this.promoteAfterOverlap(table);
      }
    }
  }

  private async promoteAfterOverlap(table: string): Promise<void> {
    try {
      const promoted = await this.deps.writer.promoteHeld(table);
      if (promoted > 0) this.deps.logger.debug({ table, promoted }, 'promoted children held while their parent was written by a concurrent batch');
    } catch (err) {
      // The HeldResolver promotes across the table every round: it takes over.
      this.deps.logger.warn({ err: coerceError(err), table }, 'could not promote held children after concurrent batches; the held-children resolver will');
    }
  }

  /** Decodes and reduces a slice: pure (nothing is sent or written), so it can run ahead of the slice before it. */
  private async prepare(records: readonly InRecord[]): Promise<PreparedSlice> {
    const decoded = await this.decodeAll(records);
    return { records, ...decoded, reduced: reduceBatch(decoded.events) };
  }

  /**
   * Writes one slice (records of one table, from one or more partitions) with the offsets of every partition in it,
   * in one transaction; then resolves and commits each partition. False when a partition of the slice was taken
   * from this member during the transaction (rolled back: whoever holds it now applies it).
   */
  private async applySlice(binding: TopicBinding, partitions: readonly SlicePartition[], prepared: PreparedSlice): Promise<boolean> {
    const { poison, recordOf, reduced } = prepared;
    await this.deadLetter(binding, poison);
    const fitting = await this.refuseTooLarge(binding, reduced.changes, recordOf);
    const parked = fitting.parked;
    const started = performance.now();
    // Rows the writer could not write or hold (their chunks not all staged yet) go to the retry topic inside the
    // transaction, before COMMIT: the offsets that cover them never become durable before they are safe.
    let retriedLate = 0;
    const routeLate = async (r: ApplyResult) => {
      // The last moment to back out: a partition this member no longer holds (a new assignment positioned it, or
      // the consumer is stopping) commits neither its rows nor its offsets; whoever holds it now applies them.
      const taken = partitions.find((p) => !p.batch.isCurrent());
      if (taken !== undefined) throw new NoLongerCurrent(taken.batch);
      const late = new Set([...r.missingParent, ...r.incompleteContent]);
      retriedLate = late.size;
      if (late.size > 0) await this.sendToRetry(binding, fitting.keep.filter((c) => late.has(c.key)).map((c) => recordOf.get(c)!), 1);
    };
    let result: ApplyResult;
    try {
      result = await this.overlapping(binding.table, () => this.write(binding, partitions, prepared, { rows: fitting.keep, parked }, routeLate));
    } catch (err) {
      if (!(err instanceof NoLongerCurrent)) throw err;
      this.deps.logger.info({ topic: binding.topic, partitions: partitions.map((p) => ({ partition: p.batch.partition, nextOffset: p.nextOffset })) }, 'a partition was taken from this member during its batch: rolled back');
      return false;
    }
    for (const { batch, nextOffset } of partitions) {
      batch.resolve(nextOffset - 1n);
      if (batch.isCurrent()) await this.consumer!.commit(batch.topic, batch.partition, nextOffset, (err) => this.deps.logger.warn({ err, partition: batch.partition }, 'the Kafka commit (lag monitoring only) failed; the target holds the offsets'));
      this.positions.advance(batch.topic, batch.partition, nextOffset);
    }
    this.deps.onApplied?.({ table: binding.table, partition: partitions[0]!.batch.partition, result, deadLettered: poison.length + fitting.parked.length, retried: retriedLate, duplicates: reduced.superseded + result.skippedStale, seconds: (performance.now() - started) / 1000 });
    return true;
  }

  /** Decoded events, the poison among the records, and the record each change came from (for the retry topic). */
  private async decodeAll(records: readonly InRecord[]): Promise<{ events: BatchEvent[]; poison: { record: InRecord; error: Error }[]; recordOf: Map<BlobChange, InRecord>; markers: PartitionMarker[] }> {
    const events: BatchEvent[] = [];
    const markers = new Map<string, PartitionMarker>();
    const poison: { record: InRecord; error: Error }[] = [];
    const recordOf = new Map<BlobChange, InRecord>();
    let sinceYield = 0;
    for (const record of records) {
      // Decoding is CPU work on the one thread: let the answers of a running transaction through now and then.
      if (++sinceYield === DECODE_YIELD_EVERY) {
        sinceYield = 0;
        await yieldToEventLoop();
      }
      try {
        const e = await decodeRecord(this.deps.codec, record);
        if (e.type === 'change') {
          recordOf.set(e.change, record);
          events.push(...expandDeletedBefore(e.change));
        } else if (e.type !== 'chunk-tombstone') events.push(e);
        // The latest marker per partition and scope: each partition's watermark is its own (records of a partition
        // come in its order).
        if (e.type === 'marker') markers.set(`${record.partition}\u0000${e.marker.table}\u0000${e.marker.scope}`, { partition: record.partition, marker: e.marker });
      } catch (err) {
        poison.push({ record, error: coerceError(err) });
      }
    }
    return { events, poison, recordOf, markers: [...markers.values()] };
  }

  private async deadLetter(binding: TopicBinding, poison: readonly { record: InRecord; error: Error }[]): Promise<void> {
    if (poison.length === 0) return;
    for (const p of poison) this.deps.logger.warn({ topic: p.record.topic, partition: p.record.partition, offset: p.record.offset, err: p.error }, 'poison record sent to the dead-letter topic');
    await this.deps.publisher.send(binding.dlqTopic, poison.map((p) => deadLetterRecord(p.record, p.error.message, 'poison')));
  }

  /**
   * Content larger than the target can store in one value goes to the dead-letter topic with the reason rather than
   * into a transaction that fails (and would be retried for ever). It stays parked, so consistent_as_of does not
   * claim it; the poller's poll.maxBlobBytes is meant to stop such rows at the source.
   */
  private async refuseTooLarge(binding: TopicBinding, changes: BlobChange[], recordOf: ReadonlyMap<BlobChange, InRecord>): Promise<{ keep: BlobChange[]; parked: ParkedRow[] }> {
    const limit = this.deps.writer.maxContentBytes;
    const tooLarge = changes.filter((c) => (c.size ?? 0) > limit);
    if (tooLarge.length === 0) return { keep: changes, parked: [] };
    const reason = (c: BlobChange) => `content of ${c.size} bytes is larger than a ${this.deps.writer.kind} target stores in one value (${limit} bytes); lower poll.maxBlobBytes to refuse such rows at the source`;
    await this.deadLetter(binding, tooLarge.map((c) => ({ record: recordOf.get(c)!, error: new HighwaterError('DB_CONSTRAINT', reason(c)) })));
    return { keep: changes.filter((c) => !tooLarge.includes(c)), parked: tooLarge.map((c) => parkedRow(c, 'too-large')) };
  }

  private async sendToRetry(binding: TopicBinding, records: readonly InRecord[], attempt: number): Promise<void> {
    if (records.length === 0) return;
    const notBefore = Date.now() + this.deps.retryDelayMs;
    await this.deps.publisher.send(binding.retryTopic, records.map((r) => retryRecord(r, attempt, notBefore)));
  }

  private async write(binding: TopicBinding, partitions: readonly SlicePartition[], prepared: PreparedSlice, kept: { rows: BlobChange[]; parked: ParkedRow[] }, beforeCommit: (r: ApplyResult) => Promise<void>): Promise<ApplyResult> {
    const { reduced, records } = prepared;
    const watermarks: WatermarkToRecord[] = prepared.markers.map(({ partition, marker: m }) => ({ table: m.table, tenant: m.tenant, scope: m.scope, topic: binding.topic, partition, watermark: m.watermark }));
    const applyBatch = {
      groupId: this.deps.groupId,
      table: binding.table,
      rows: kept.rows.map((change) => ({ change })),
      deletes: reduced.deletes,
      parked: kept.parked,
      chunks: reduced.chunks,
      superseded: reduced.dropped,
      watermarks,
      offsets: partitions.map(({ batch, nextOffset }) => ({ topic: batch.topic, partition: batch.partition, nextOffset })),
      beforeCommit,
    };
    try {
      return await withRetry(() => this.deps.writer.apply(applyBatch), this.deps.dbRetry ?? DEFAULT_RETRY, {
        onRetry: ({ attempt, delayMs, error }) => this.deps.logger.warn({ attempt, delayMs, err: error }, 'target write failed; retrying'),
      });
    } catch (err) {
      if (!(err instanceof HighwaterError) || err.code !== 'DB_CONSTRAINT') throw err;
      return this.isolatePoisonRows(binding, applyBatch, records);
    }
  }

  /**
   * A constraint violation fails the whole transaction; find the rows that cause it one at a time, dead-letter
   * them with the database's message, then store the batch without them.
   */
  private async isolatePoisonRows(binding: TopicBinding, applyBatch: Parameters<TargetWriter['apply']>[0], records: readonly InRecord[]): Promise<ApplyResult> {
    const good: typeof applyBatch.rows[number][] = [];
    const bad: { record: InRecord; error: Error }[] = [];
    for (const row of applyBatch.rows) {
      try {
        await this.deps.writer.apply({ ...applyBatch, rows: [row], deletes: [], chunks: applyBatch.chunks, watermarks: [], offsets: [], beforeCommit: undefined });
        good.push(row);
      } catch (err) {
        const record = [...records].reverse().find((r) => r.key?.toString() === row.change.key);
        if (record) bad.push({ record, error: coerceError(err) });
      }
    }
    await this.deadLetter(binding, bad);
    const parked = [...(applyBatch.parked ?? []), ...applyBatch.rows.filter((r) => !good.includes(r)).map((r) => parkedRow(r.change, 'dead-lettered'))];
    return this.deps.writer.apply({ ...applyBatch, rows: good, parked });
  }
}

/** Thrown before COMMIT when the batch's partition is no longer this member's: the transaction rolls back. */
class NoLongerCurrent extends HighwaterError {
  constructor(batch: PartitionBatch) {
    super('STOPPED', `partition ${batch.partition} of ${batch.topic} is no longer assigned to this member`);
  }
}

/** Records decoded between two yields to the event loop (a few milliseconds of decoding). */
const DECODE_YIELD_EVERY = 256;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface PreparedSlice {
  readonly records: readonly InRecord[];
  readonly markers: readonly PartitionMarker[];
  readonly poison: { record: InRecord; error: Error }[];
  readonly recordOf: Map<BlobChange, InRecord>;
  readonly reduced: ReducedBatch;
}

/** A watermark marker and the partition it was read from. */
interface PartitionMarker {
  readonly partition: number;
  readonly marker: WatermarkMarker;
}

/** A partition with records in a slice, and the offset after its last record there. */
interface SlicePartition {
  readonly batch: PartitionBatch;
  readonly nextOffset: bigint;
}

/** The partitions a slice holds records of, each with the offset after its last record in the slice. */
function partitionsOf(slice: readonly InRecord[], batches: ReadonlyMap<number, PartitionBatch>): SlicePartition[] {
  const next = new Map<number, bigint>();
  for (const r of slice) next.set(r.partition, r.offset + 1n);
  return [...next].map(([partition, nextOffset]) => ({ batch: batches.get(partition)!, nextOffset }));
}

/**
 * The records of several partitions (each in its order) as one sequence in the order they were produced, as near
 * as the records tell: a merge that keeps each partition's order and takes next the partition whose next record
 * was produced first (its Kafka timestamp; without timestamps, the one furthest behind in its batch). Parents the
 * poller sent before their children, to whichever partitions, then come before them, and any prefix of the result
 * holds a prefix of each partition. Pure.
 */
export function mergeByProduction(parts: readonly (readonly InRecord[])[]): InRecord[] {
  if (parts.length === 1) return [...parts[0]!];
  const timed = parts.every((p) => p.every((r) => r.timestamp !== undefined));
  const at = (p: number, i: number): number => (timed ? parts[p]![i]!.timestamp! : i / parts[p]!.length);
  const heads = parts.map(() => 0);
  const out: InRecord[] = [];
  for (;;) {
    let best = -1;
    for (let p = 0; p < parts.length; p++) {
      if (heads[p]! < parts[p]!.length && (best < 0 || at(p, heads[p]!) < at(best, heads[best]!))) best = p;
    }
    if (best < 0) return out;
    out.push(parts[best]![heads[best]!++]!);
  }
}

/**
 * The records in slices, in order, each with at most `size` records of any one partition: one partition's records
 * are sliced as before, and a fetch applied together gets slices as large as each partition's would be. Slicing the
 * merged records by their total instead would cut the reduction of a key's versions (W3, an update storm: a slice
 * spread over every partition holds fewer versions of more keys, and writes more rows). Pure.
 */
export function slicedPerPartition(records: readonly InRecord[], size: number): (readonly InRecord[])[] {
  const out: (readonly InRecord[])[] = [];
  let start = 0;
  let counts = new Map<number, number>();
  for (let i = 0; i < records.length; i++) {
    const n = (counts.get(records[i]!.partition) ?? 0) + 1;
    if (n > size) {
      out.push(records.slice(start, i));
      start = i;
      counts = new Map([[records[i]!.partition, 1]]);
    } else counts.set(records[i]!.partition, n);
  }
  if (start < records.length) out.push(records.slice(start));
  return out;
}


function parkedRow(c: BlobChange, reason: string): ParkedRow {
  return { tenant: c.tenant, key: c.key, modifiedOn: c.modifiedOn, observed: c.observed, reason };
}


export type { Deletion, OutRecord };
export { HEADERS };
