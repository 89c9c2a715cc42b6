import type { Admin, Kafka, Producer } from 'kafkajs';
import type { OutRecord } from '../events/records.js';
import { createIdempotentProducer, partitionForKey, withKafkaErrors } from './client.js';
import { installFastProduce } from './produce-request.js';
import { partitionCount } from './topics.js';

/**
 * Sends records and resolves only when every one is acknowledged by all in-sync replicas. A broker rejects a
 * record batch (per partition) larger than the topic's max.message.bytes, and kafkajs puts everything of one send
 * for a partition into one batch — so sends are cut into groups that stay under that size.
 */

const PER_RECORD_OVERHEAD = 96;

export function recordSize(r: OutRecord): number {
  let size = Buffer.byteLength(r.key) + (r.value?.length ?? 0) + PER_RECORD_OVERHEAD;
  for (const [k, v] of Object.entries(r.headers)) size += Buffer.byteLength(k) + Buffer.byteLength(v);
  return size;
}

/** Splits records, in order, into groups whose total size stays under `maxBytes` (a record larger than that goes alone). Pure. */
export function groupBySize(records: readonly OutRecord[], maxBytes: number): OutRecord[][] {
  const groups: OutRecord[][] = [];
  let current: OutRecord[] = [];
  let size = 0;
  for (const r of records) {
    const s = recordSize(r);
    if (current.length > 0 && size + s > maxBytes) {
      groups.push(current);
      current = [];
      size = 0;
    }
    current.push(r);
    size += s;
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
    // Whatever goes wrong there (a kafkajs whose internals moved), kafkajs' own encoder stays in use.
    this.fastEncoder = await installFastProduce().catch(() => false);
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
    for (const group of groupBySize(records, this.maxBatchBytes)) {
      await withKafkaErrors(`publishing to ${topic}`, () =>
        this.producer.send({
          topic,
          acks: -1,
          messages: group.map((r) => ({ key: r.key, value: r.value, headers: r.headers, partition: r.partition ?? (partitions > 0 ? partitionForKey(topic, r.key, partitions) : undefined) })),
        }),
      );
    }
  }

  async disconnect(): Promise<void> {
    if (!this.connected) return;
    this.connected = false;
    await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
  }
}
