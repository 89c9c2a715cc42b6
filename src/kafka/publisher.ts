import type { Admin, Kafka, Producer } from 'kafkajs';
import type { OutRecord } from '../events/records.js';
import { createIdempotentProducer, partitionForKey, withKafkaErrors } from './client.js';
import { installFastProduce } from './produce-request.js';
import { partitionCount } from './topics.js';

/**
 * Sends records and resolves only when every one is acknowledged by all in-sync replicas. A broker rejects a
 * record batch (per partition) larger than the topic's max.message.bytes, and kafkajs puts everything of one send
 * for a partition into one batch — so sends are cut into groups in which each partition's records stay under that
 * size (and the whole send under MAX_SEND_BYTES).
 */

const PER_RECORD_OVERHEAD = 96;

/**
 * Largest send (one Produce request per broker) when its records spread over partitions: a group used to stop at
 * max.message.bytes in total, a sixth of what six partitions take in one request, so six times the round trips.
 */
export const MAX_SEND_BYTES = 16 * 1024 * 1024;

export function recordSize(r: OutRecord): number {
  let size = utf8Length(r.key) + (r.value?.length ?? 0) + PER_RECORD_OVERHEAD;
  const headers = r.headers;
  for (const k in headers) size += utf8Length(k) + utf8Length(headers[k]!);
  return size;
}

/** UTF-8 length of a string; short ASCII ones (keys, header names and values) counted here. Pure. */
function utf8Length(s: string): number {
  const n = s.length;
  if (n > 64) return Buffer.byteLength(s, 'utf8');
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s, 'utf8');
  return n;
}

/**
 * Splits records, in order, into groups in which the records of each partition (`partitionOf`; without it, all
 * records count as one partition) total at most `maxBytes`, and all records at most `maxTotalBytes`. A record
 * larger than that goes alone. Pure.
 */
export function groupBySize<T extends OutRecord>(records: readonly T[], maxBytes: number, partitionOf?: (r: T) => number | undefined, maxTotalBytes = maxBytes): T[][] {
  const groups: T[][] = [];
  let current: T[] = [];
  let total = 0;
  const perPartition = new Map<number | undefined, number>();
  for (const r of records) {
    const s = recordSize(r);
    const p = partitionOf?.(r);
    const inPartition = perPartition.get(p) ?? 0;
    if (current.length > 0 && (s > maxBytes || inPartition + s > maxBytes || total + s > maxTotalBytes)) {
      groups.push(current);
      current = [];
      total = 0;
      perPartition.clear();
    }
    current.push(r);
    total += s;
    perPartition.set(p, (perPartition.get(p) ?? 0) + s);
    if (s > maxBytes) {
      // Too large for any batch: alone, so that the broker's refusal fails only its own send.
      groups.push(current);
      current = [];
      total = 0;
      perPartition.clear();
    }
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

export class Publisher {
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly partitions = new Map<string, number>();
  private connected = false;
  /** Whether Produce requests go out through produce-request.ts rather than kafkajs' per-record encoders. */
  fastEncoder = false;
  /** The end of the last queued send (see send). */
  private queue: Promise<void> = Promise.resolve();

  constructor(kafka: Kafka, private readonly maxBatchBytes: number) {
    this.producer = createIdempotentProducer(kafka);
    this.admin = kafka.admin();
  }

  async connect(): Promise<void> {
    if (this.connected) return;
    // Produce requests encoded in one pass (produce-request.ts), process-wide, once kafkajs' own encoder agreed on a sample.
    this.fastEncoder = await installFastProduce();
    await withKafkaErrors('connecting the producer', async () => {
      await this.producer.connect();
      await this.admin.connect();
    });
    this.connected = true;
  }

  /** Partition count of a topic (cached: highwater never changes it while running). */
  async partitionsOf(topic: string): Promise<number> {
    let n = this.partitions.get(topic);
    if (n === undefined) {
      n = await partitionCount(this.admin, topic);
      this.partitions.set(topic, n);
    }
    return n;
  }

  async partitionOfKey(topic: string, key: string): Promise<number> {
    return partitionForKey(topic, key, await this.partitionsOf(topic));
  }

  /**
   * Sends all records in order and waits for every acknowledgement. Calls are queued and run one at a time, in
   * call order, whoever makes them (the poller's pipelined pages, the back-fill service): kafkajs' idempotent
   * producer assigns sequence numbers per send, and concurrent sends can reach the broker out of sequence
   * (OUT_OF_ORDER_SEQUENCE_NUMBER, tulios/kafkajs#598).
   */
  send(topic: string, records: readonly OutRecord[]): Promise<void> {
    const turn = this.queue.then(() => this.sendNow(topic, records));
    this.queue = turn.then(() => undefined, () => undefined);
    return turn;
  }

  /**
   * Every record goes out with its partition chosen here (src/kafka/murmur2.ts, the same function as the client's
   * default partitioner, with the cached partition count that chunks and markers use too): kafkajs' partitioner
   * hashed each key with 64-bit Long objects, a twentieth of the poll's CPU time on small rows. (A topic whose
   * metadata lists no partitions is left to kafkajs, which reports it.)
   */
  private async sendNow(topic: string, records: readonly OutRecord[]): Promise<void> {
    const partitions = await this.partitionsOf(topic);
    const messages = records.map((r) => ({ key: r.key, value: r.value, headers: r.headers, partition: r.partition ?? (partitions > 0 ? partitionForKey(topic, r.key, partitions) : undefined) }));
    for (const group of groupBySize(messages, this.maxBatchBytes, (m) => m.partition, Math.max(this.maxBatchBytes, MAX_SEND_BYTES))) {
      await withKafkaErrors(`publishing to ${topic}`, () => this.producer.send({ topic, acks: -1, messages: group }));
    }
  }

  async disconnect(): Promise<void> {
    if (!this.connected) return;
    this.connected = false;
    await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
  }
}
