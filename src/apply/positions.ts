import type { InRecord } from '../events/records.js';
import type { ManualConsumer, PartitionBatch } from '../kafka/consumer.js';
import type { Logger } from '../logger.js';
import type { TargetWriter } from './sink/writer.js';

/**
 * Where each partition stands in the target: the next offset the target holds, loaded lazily from its stored
 * offsets (the log start when it holds none) and forgotten on every assignment. Both loops align every fetched
 * batch with it before applying anything.
 */

export type Alignment =
  /** The batch was fetched from after the target's position (Kafka ran ahead of a fresh or restored target): rewound. */
  | { readonly kind: 'seeked-back' }
  /** The records still to apply, and the last offset of those the target already holds (to resolve them). */
  | { readonly kind: 'records'; readonly records: readonly InRecord[]; readonly heldUpTo: bigint | null };

export class TargetPositions {
  private readonly next = new Map<string, bigint>();

  constructor(private readonly writer: TargetWriter, private readonly groupId: string, private readonly logger: Logger) {}

  forget(): void {
    this.next.clear();
  }

  /** Records the next offset after a batch or record became durable in the target. */
  advance(topic: string, partition: number, nextOffset: bigint): void {
    this.next.set(key(topic, partition), nextOffset);
  }

  /**
   * Drops records the target already holds and, when the batch was fetched from a position after the target's
   * (Kafka's committed offset ran ahead of a fresh or restored target), seeks back instead of skipping those
   * records. The fetch position decides, not the first record's offset: on a compacted topic the first record
   * after a position may lie far beyond it, because the offsets between were cleaned away — that gap holds nothing
   * to apply, and seeking back over it would only fetch the same batch again, for ever.
   */
  async align(batch: PartitionBatch, consumer: ManualConsumer): Promise<Alignment> {
    const next = await this.positionOf(batch.topic, batch.partition, consumer);
    if (batch.fetchedOffset > next) {
      this.logger.info({ topic: batch.topic, partition: batch.partition, from: batch.fetchedOffset, to: next }, 'batch fetched after the target position; seeking back');
      consumer.seek(batch.topic, batch.partition, next);
      return { kind: 'seeked-back' };
    }
    const held = batch.records.filter((r) => r.offset < next);
    return { kind: 'records', records: batch.records.filter((r) => r.offset >= next), heldUpTo: held.at(-1)?.offset ?? null };
  }

  private async positionOf(topic: string, partition: number, consumer: ManualConsumer): Promise<bigint> {
    const id = key(topic, partition);
    let next = this.next.get(id);
    if (next === undefined) {
      next = (await this.writer.storedOffsets(this.groupId, [topic])).find((o) => o.partition === partition)?.nextOffset
        ?? (await consumer.earliestOffset(topic, partition));
      this.next.set(id, next);
    }
    return next;
  }
}

function key(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
