import type { Admin, Consumer, EachBatchPayload, IHeaders, Kafka } from 'kafkajs';
import type { InRecord } from '../events/records.js';
import { coerceError } from '../errors.js';
import { withRetry } from '../retry.js';
import { withKafkaErrors } from './client.js';
import { installFastFetch } from './fetch-response.js';

/**
 * A consumer that never lets kafkajs commit on its own: offsets are committed by the apply loop after the data
 * they cover is durable in the target. Partitions are positioned from the target's stored offsets on every
 * assignment (`positionOf`), so a fresh target replays from the start and a restored one resumes where it is.
 */

export interface PartitionBatch {
  readonly topic: string;
  readonly partition: number;
  /**
   * The offset this batch was fetched from: the consumer's position. Records start at or after it; a gap between
   * the two is offsets that no longer exist (compaction, transaction markers), never records skipped.
   */
  readonly fetchedOffset: bigint;
  readonly records: readonly InRecord[];
  /** The partition's high watermark when fetched: the offset after the last record in the log (unknown: undefined). */
  readonly highWatermark?: bigint;
  /** False once the partition was revoked from this member: the batch must not be committed. */
  isCurrent(): boolean;
  /** Marks everything up to `offset` as processed, so the next fetch starts after it. */
  resolve(offset: bigint): void;
  heartbeat(): Promise<void>;
  /** Pauses this partition; the returned function resumes it. */
  pause(): () => void;
}

export interface ManualConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  /** Next offset for a partition as stored in the target, or null to start from the earliest. */
  readonly positionOf: (topic: string, partition: number) => Promise<bigint | null>;
  readonly sessionTimeoutMs?: number;
  readonly maxBytesPerPartition?: number;
  /** Most bytes of one fetch as a whole (kafkajs' default, 10 MiB, when unset). */
  readonly maxBytes?: number;
  /**
   * Partition batches handled at once (kafkajs' partitionsConsumedConcurrently; default 1). kafkajs never hands out
   * two batches of one partition at once: a fetch's batches all finish before the next fetch.
   */
  readonly partitionsConsumedConcurrently?: number;
  readonly onAssigned?: (assignment: Record<string, number[]>) => void;
  /**
   * Told when the assigned partitions could not be positioned from the target (after retries). They are paused
   * then, rather than consumed from wherever Kafka's group offset is; the next assignment positions them again.
   */
  readonly onPositionFailed?: (error: Error) => void;
  /** Told when kafkajs gave up on an unreachable cluster and the consumer is started again after a pause. */
  readonly onRestart?: (error: Error, delayMs: number) => void;
}

/**
 * kafkajs errors that mean "the cluster cannot be reached right now", found anywhere in the cause chain. kafkajs
 * marks some of them non-retriable (a group coordinator not found after its retries, while a broker restarts) and
 * then stops the consumer for good; for highwater they are an outage to wait out, as the poller does.
 */
const UNREACHABLE = new Set([
  'KafkaJSGroupCoordinatorNotFound', 'KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound', 'KafkaJSMetadataNotLoaded', 'KafkaJSNumberOfRetriesExceeded',
]);

/** Whether a crash came from the cluster being unreachable rather than from the handler's own failure. Pure. */
export function clusterUnreachable(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 10; e = (e as Error & { cause?: unknown }).cause, depth++) {
    if (UNREACHABLE.has(e.name)) return true;
  }
  return false;
}

/** Pause before starting a consumer again after kafkajs gave up on an unreachable cluster. */
const RESTART_DELAY_MS = 5000;

/**
 * A record's headers as one string per name (the first of a repeated one). The one-pass Fetch decoder already gives
 * strings; kafkajs' own gives Buffers. A header whose value is null (the protocol allows it) is left out rather than
 * failing the whole batch. A plain loop: this runs for every header of every record consumed.
 */
export function headersToStrings(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (headers === undefined) return out;
  for (const k in headers) {
    if (!Object.prototype.hasOwnProperty.call(headers, k)) continue;
    const v: unknown = headers[k];
    const first: unknown = Array.isArray(v) ? v[0] : v;
    if (typeof first === 'string') out[k] = first;
    else if (Buffer.isBuffer(first)) out[k] = first.toString('utf8');
  }
  return out;
}

export class ManualConsumer {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  /** Partitions paused because they could not be positioned from the target. */
  private readonly pausedUnpositioned: { topic: string; partitions: number[] }[] = [];
  private settleFailure: (err: Error) => void = () => undefined;
  private runConfig: Parameters<Consumer['run']>[0];
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** Whether Fetch responses are decoded by the one-pass decoder (src/kafka/fetch-response.ts), known after start. */
  fastDecoder = false;
  /**
   * Resolves with the error when kafkajs has stopped this consumer for good (a crash it does not restart from: a
   * non-retriable error of the handler). Until then it stays pending. Without it a process would live on consuming
   * nothing, and lag would grow with no one told.
   */
  readonly failed: Promise<Error> = new Promise((resolve) => {
    this.settleFailure = resolve;
  });

  constructor(kafka: Kafka, private readonly options: ManualConsumerOptions) {
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      // A third of the session (kafkajs' 3 s default at most), so a short session still gets three heartbeats.
      heartbeatInterval: Math.min(3000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3)),
      maxBytesPerPartition: options.maxBytesPerPartition ?? 8 * 1024 * 1024,
      ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }),
      allowAutoTopicCreation: false,
    });
    this.admin = kafka.admin();
  }

  async start(handler: (batch: PartitionBatch) => Promise<void>): Promise<void> {
    // kafkajs' own decoder stays in use if the one-pass decoder cannot be installed (src/kafka/fetch-response.ts).
    this.fastDecoder = await installFastFetch().catch(() => false);
    await withKafkaErrors(`starting consumer group ${this.options.groupId}`, async () => {
      await this.consumer.connect();
      await this.admin.connect();
      for (const topic of this.options.topics) await this.consumer.subscribe({ topic, fromBeginning: true });
    });
    this.consumer.on(this.consumer.events.CRASH, (event) => {
      if (event.payload.restart || this.stopping) return;
      const error = coerceError(event.payload.error);
      if (clusterUnreachable(error)) this.restartLater(error);
      else this.settleFailure(error);
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, (event) => {
      const assignment = event.payload.memberAssignment as Record<string, number[]>;
      this.options.onAssigned?.(assignment);
      // Positions come from the target database, which may be restarting right now (a rebalance often follows a
      // database fault): retried; if it stays down, the partitions stay paused (consuming them unpositioned could
      // skip records) and the consumer fails visibly (`failed`) rather than an unhandled rejection ending the
      // process mid-rebalance.
      withRetry(() => this.positionPartitions(assignment)).catch((thrown: unknown) => {
        this.positioningFailed(assignment, thrown);
        this.settleFailure(coerceError(thrown));
      });
    });
    this.runConfig = {
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently ?? 1,
      eachBatch: async (payload) => {
        if (!payload.isRunning() || payload.isStale()) return;
        await handler(this.toPartitionBatch(payload));
      },
    };
    await this.consumer.run(this.runConfig);
  }

  /**
   * kafkajs stopped this consumer (and disconnected it) because the cluster was unreachable for longer than its
   * retries: start it again after a pause, and again while the cluster stays away. Offsets live in the target, so
   * a restarted member simply rejoins and is positioned from there. Errors of the handler are not retried here.
   */
  private restartLater(error: Error): void {
    this.options.onRestart?.(error, RESTART_DELAY_MS);
    this.restartTimer = setTimeout(() => void this.rerun(), RESTART_DELAY_MS);
  }

  private async rerun(): Promise<void> {
    if (this.stopping) return;
    try {
      await this.consumer.connect();
      await this.consumer.run(this.runConfig);
    } catch (thrown) {
      const error = coerceError(thrown);
      if (clusterUnreachable(error) || (thrown as { retriable?: boolean }).retriable === true) this.restartLater(error);
      else this.settleFailure(error);
    }
  }

  /**
   * Commits to Kafka (for lag monitoring) what the target already holds. Best effort: the offsets that count are
   * in the target, committed with the rows. A failure here (the member was removed from the group while its batch
   * was being applied, the coordinator moved) must not stop the consumer; it is reported to `onFailure` and the
   * partition's next owner commits again. Without `onFailure` (the back-fill service, whose positions are these
   * commits) the error is thrown.
   */
  async commit(topic: string, partition: number, nextOffset: bigint, onFailure?: (err: Error) => void): Promise<void> {
    try {
      await withKafkaErrors('committing offsets', () => this.consumer.commitOffsets([{ topic, partition, offset: nextOffset.toString() }]));
    } catch (err) {
      if (onFailure === undefined) throw err;
      onFailure(coerceError(err));
    }
  }

  /** The earliest offset still in the log: where a partition with no stored offset starts. */
  async earliestOffset(topic: string, partition: number): Promise<bigint> {
    const offsets = await withKafkaErrors(`reading offsets of ${topic}`, () => this.admin.fetchTopicOffsets(topic));
    return BigInt(offsets.find((p) => p.partition === partition)?.low ?? '0');
  }

  seek(topic: string, partition: number, offset: bigint): void {
    this.consumer.seek({ topic, partition, offset: offset.toString() });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    await Promise.allSettled([this.consumer.disconnect(), this.admin.disconnect()]);
  }

  private positioningFailed(assignment: Record<string, number[]>, thrown: unknown): void {
    const unpositioned = Object.entries(assignment).map(([topic, partitions]) => ({ topic, partitions }));
    this.pausedUnpositioned.push(...unpositioned);
    this.consumer.pause(unpositioned);
    try {
      this.options.onPositionFailed?.(coerceError(thrown));
    } catch {
      // An observer's failure must not become an unhandled rejection: the partitions are paused either way.
    }
  }

  private async positionPartitions(assignment: Record<string, number[]>): Promise<void> {
    for (const [topic, partitions] of Object.entries(assignment)) {
      const earliest = await withKafkaErrors(`reading offsets of ${topic}`, () => this.admin.fetchTopicOffsets(topic));
      for (const partition of partitions) {
        const stored = await this.options.positionOf(topic, partition);
        const low = earliest.find((p) => p.partition === partition)?.low ?? '0';
        this.consumer.seek({ topic, partition, offset: (stored ?? BigInt(low)).toString() });
      }
    }
    // Partitions a failed positioning paused earlier are safe to read again now (only those: the loops pause too).
    if (this.pausedUnpositioned.length > 0) this.consumer.resume(this.pausedUnpositioned.splice(0));
  }

  private toPartitionBatch(payload: EachBatchPayload): PartitionBatch {
    const { batch } = payload;
    return {
      topic: batch.topic,
      partition: batch.partition,
      // kafkajs keeps the requested offset on its Batch (not in its typings).
      fetchedOffset: BigInt((batch as unknown as { fetchedOffset: string }).fetchedOffset),
      highWatermark: BigInt(batch.highWatermark),
      records: batch.messages.map((m) => ({
        topic: batch.topic,
        partition: batch.partition,
        offset: BigInt(m.offset),
        key: m.key,
        value: m.value,
        headers: headersToStrings(m.headers),
        timestamp: Number(m.timestamp),
      })),
      isCurrent: () => payload.isRunning() && !payload.isStale(),
      resolve: (offset) => payload.resolveOffset(offset.toString()),
      heartbeat: () => payload.heartbeat(),
      pause: () => payload.pause(),
    };
  }
}
