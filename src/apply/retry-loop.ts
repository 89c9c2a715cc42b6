import { HEADERS, type BlobChange } from '../contract.js';
import { backfillTopic } from '../config/load.js';
import type { TargetConfig } from '../config/schema.js';
import type { EventCodec } from '../events/codec.js';
import { backfillToAvro } from '../events/mapping.js';
import { decodeRecord, expandDeletedBefore, type InRecord } from '../events/records.js';
import { coerceError } from '../errors.js';
import type { ManualConsumer, PartitionBatch } from '../kafka/consumer.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { backoffDelay } from '../retry.js';
import type { ApplyResult, TargetWriter } from './sink/writer.js';
import type { TopicBinding } from './loop.js';
import { TargetPositions } from './positions.js';
import { deadLetterRecord, retryRecord } from './side-records.js';

/**
 * Rows waiting for their content (chunks not all staged when the row came) and, from before children were held in
 * the target, children waiting for their parent. A record on `<topic>.retry` is tried when its not-before time has
 * come: the writer applies it, or holds it in the target when its parent is still missing (HeldResolver takes over
 * from there); if its content is still incomplete it goes back to the retry topic with the next attempt number and
 * a longer delay, and goes to the dead-letter topic after `maxAttempts`. Nothing is dropped, and the retry topic's
 * offsets are stored in the target with each outcome, like the main topic's.
 */

export interface RetryLoopDeps {
  readonly groupId: string;
  readonly bindings: readonly TopicBinding[];
  readonly writer: TargetWriter;
  readonly codec: EventCodec;
  readonly publisher: Publisher;
  readonly logger: Logger;
  readonly policy: TargetConfig['retry'];
  readonly requestedBy: string;
  readonly now?: () => number;
  /** Called for every back-fill request sent, for the metrics. */
  readonly onBackfillRequested?: (table: string) => void;
  /** Rows applied through the retry topic, for the same metrics as the main loop. */
  readonly onApplied?: (info: { table: string; partition: number; result: ApplyResult; deadLettered: number; retried: number; duplicates: number; seconds: number }) => void;
}

type Outcome = 'applied' | 'requeued' | 'dead-lettered';

export class RetryLoop {
  private readonly byRetryTopic: Map<string, TopicBinding>;
  private readonly positions: TargetPositions;
  private readonly waiting = new Set<string>();
  private consumer: ManualConsumer | undefined;

  constructor(private readonly deps: RetryLoopDeps) {
    this.byRetryTopic = new Map(deps.bindings.map((b) => [b.retryTopic, b]));
    this.positions = new TargetPositions(deps.writer, deps.groupId, deps.logger);
  }

  attach(consumer: ManualConsumer): void {
    this.consumer = consumer;
  }

  forgetPositions(): void {
    this.positions.forget();
  }

  async handle(batch: PartitionBatch): Promise<void> {
    const binding = this.byRetryTopic.get(batch.topic)!;
    const id = `${batch.topic}\u0000${batch.partition}`;
    if (this.waiting.has(id)) return;
    const aligned = await this.positions.align(batch, this.consumer!);
    if (aligned.kind === 'seeked-back') return;
    if (aligned.heldUpTo !== null) batch.resolve(aligned.heldUpTo);
    for (const record of aligned.records) {
      if (!batch.isCurrent()) return;
      const due = Date.parse(record.headers[HEADERS.notBefore] ?? '') || 0;
      const now = this.now();
      if (due > now) return this.waitFor(batch, id, record.offset, due - now);
      const outcome = await this.retryOne(binding, record);
      this.deps.logger.debug({ key: record.key?.toString(), outcome }, 'retried a child');
      batch.resolve(record.offset);
      if (batch.isCurrent()) await this.consumer!.commit(batch.topic, batch.partition, record.offset + 1n, (err) => this.deps.logger.warn({ err, partition: batch.partition }, 'the Kafka commit (lag monitoring only) failed; the target holds the offsets'));
      this.positions.advance(batch.topic, batch.partition, record.offset + 1n);
      await batch.heartbeat();
    }
  }

  /** Not due yet: rewind to this record, pause the partition and resume it when the record is due. */
  private waitFor(batch: PartitionBatch, id: string, offset: bigint, delayMs: number): void {
    this.consumer!.seek(batch.topic, batch.partition, offset);
    const resume = batch.pause();
    this.waiting.add(id);
    setTimeout(() => {
      this.waiting.delete(id);
      resume();
    }, Math.min(delayMs, this.deps.policy.maxDelayMs)).unref();
  }

  private async retryOne(binding: TopicBinding, record: InRecord): Promise<Outcome> {
    const offsets = [{ topic: record.topic, partition: record.partition, nextOffset: record.offset + 1n }];
    let change: BlobChange;
    try {
      const event = await decodeRecord(this.deps.codec, record);
      if (event.type !== 'change') return this.deadLetter(binding, record, `unexpected ${event.type} record on a retry topic`, offsets, 'poison');
      change = event.change;
    } catch (err) {
      return this.deadLetter(binding, record, coerceError(err).message, offsets, 'poison');
    }
    const attempt = Number(record.headers[HEADERS.attempt] ?? '1');
    // A child whose parent is still missing is held by the writer in the target (hw_held) and promoted when the
    // parent comes: it is done here. Only content that is still incomplete is requeued. Offsets are stored only
    // after the outcome is known: a row that is still not applicable is requeued first.
    const deletes = expandDeletedBefore(change).flatMap((e) => (e.type === 'delete' ? [e.deletion] : []));
    const result = await this.deps.writer.apply({ groupId: this.deps.groupId, table: binding.table, rows: [{ change }], deletes, chunks: [], watermarks: [], offsets: [] });
    if (result.missingParent.length === 0 && result.incompleteContent.length === 0) {
      await this.storeOffsets(binding, offsets);
      this.deps.onApplied?.({ table: binding.table, partition: record.partition, result, deadLettered: 0, retried: 0, duplicates: result.skippedStale, seconds: 0 });
      return 'applied';
    }
    return this.requeue(binding, record, change, attempt, offsets);
  }

  private async requeue(binding: TopicBinding, record: InRecord, change: BlobChange, attempt: number, offsets: { topic: string; partition: number; nextOffset: bigint }[]): Promise<Outcome> {
    const { maxAttempts, backfillAfterAttempts } = this.deps.policy;
    if (attempt >= maxAttempts) {
      return this.deadLetter(binding, record, `the content (chunks) of ${change.key} did not arrive after ${attempt} attempts`, offsets, 'missing-parent');
    }
    if (attempt === backfillAfterAttempts) await this.requestBackfill(change, attempt);
    const delay = backoffDelay({ attempts: maxAttempts, initialDelayMs: this.deps.policy.initialDelayMs, maxDelayMs: this.deps.policy.maxDelayMs, jitter: 0.1 }, attempt + 1);
    await this.deps.publisher.send(binding.retryTopic, [retryRecord(record, attempt + 1, this.now() + delay)]);
    await this.storeOffsets(binding, offsets);
    return 'requeued';
  }

  private async requestBackfill(change: BlobChange, attempt: number): Promise<void> {
    const value = await this.deps.codec.encode('BackfillRequest', backfillToAvro({
      table: change.table, tenant: change.tenant, parentPathLocator: null, keys: [change.key],
      requestedBy: this.deps.requestedBy, reason: `row ${change.key} still waits for its content after ${attempt} attempts`,
    }));
    await this.deps.publisher.send(backfillTopic(), [{ key: change.table, value, headers: { [HEADERS.table]: change.table, [HEADERS.tenant]: change.tenant } }]);
    this.deps.onBackfillRequested?.(change.table);
    this.deps.logger.info({ table: change.table, key: change.key }, 'asked the poller side to back-fill a row whose content is incomplete');
  }

  private async deadLetter(binding: TopicBinding, record: InRecord, reason: string, offsets: { topic: string; partition: number; nextOffset: bigint }[], kind: 'poison' | 'missing-parent'): Promise<Outcome> {
    await this.deps.publisher.send(binding.dlqTopic, [deadLetterRecord(record, reason, kind)]);
    this.deps.logger.warn({ key: record.key?.toString(), reason }, 'record sent to the dead-letter topic');
    await this.storeOffsets(binding, offsets);
    return 'dead-lettered';
  }

  private storeOffsets(binding: TopicBinding, offsets: { topic: string; partition: number; nextOffset: bigint }[]): Promise<unknown> {
    return this.deps.writer.apply({ groupId: this.deps.groupId, table: binding.table, rows: [], deletes: [], chunks: [], watermarks: [], offsets });
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }
}
