import { randomUUID } from 'node:crypto';
import { coerceError, HighwaterError } from '../errors.js';
import type { InRecord } from '../events/records.js';
import type { Logger } from '../logger.js';
import { withKafkaErrors, type Admin, type Kafka } from './client.js';
import { headersToStrings } from './consumer.js';

/** Reading whole topics for operators (dead letters) and the ends of their partitions (lag, rebuild progress). */

export interface PartitionEnds {
  readonly partition: number;
  readonly low: bigint;
  readonly high: bigint;
}

/** First and next-to-be-written offset of every partition of these topics. */
export async function topicEnds(admin: Admin, topics: readonly string[]): Promise<Map<string, PartitionEnds[]>> {
  const out = new Map<string, PartitionEnds[]>();
  for (const topic of topics) {
    const offsets = await withKafkaErrors(`reading the offsets of ${topic}`, () => admin.fetchTopicOffsets(topic));
    out.set(
      topic,
      offsets.map((o) => ({ partition: o.partition, low: BigInt(o.low), high: BigInt(o.high) })).sort((a, b) => a.partition - b.partition),
    );
  }
  return out;
}

/**
 * Every record of a topic from the start of its log to its end as of now, in (partition, offset) order. kafkajs
 * needs a group to consume, so a throwaway one reads without ever committing and is deleted afterwards.
 */
export async function readWholeTopic(kafka: Kafka, topic: string, logger: Logger, timeoutMs = 60_000): Promise<InRecord[]> {
  const admin = kafka.admin();
  await withKafkaErrors('connecting the admin client', () => admin.connect());
  try {
    // A dead-letter topic is created with its table topic; before that nothing can have been dead-lettered.
    if (!(await withKafkaErrors('listing topics', () => admin.listTopics())).includes(topic)) return [];
    const ends = (await topicEnds(admin, [topic])).get(topic) ?? [];
    const pending = new Map(ends.filter((e) => e.high > e.low).map((e) => [e.partition, e.high]));
    if (pending.size === 0) return [];
    const groupId = `highwater-reader-${randomUUID()}`;
    try {
      return await consumeUntil(kafka, topic, groupId, pending, timeoutMs);
    } finally {
      await admin
        .deleteGroups([groupId])
        .catch((err: unknown) =>
          logger.debug({ err: coerceError(err), groupId }, 'could not delete the throwaway reader group; Kafka expires it'),
        );
    }
  } finally {
    await admin.disconnect();
  }
}

async function consumeUntil(
  kafka: Kafka,
  topic: string,
  groupId: string,
  pending: Map<number, bigint>,
  timeoutMs: number,
): Promise<InRecord[]> {
  const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false });
  const records: InRecord[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await withKafkaErrors(`reading ${topic}`, async () => {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
    });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new HighwaterError(
              'KAFKA_UNAVAILABLE',
              `read ${records.length} records of ${topic} but not to its end within ${timeoutMs / 1000} s`,
            ),
          ),
        timeoutMs,
      );
      consumer.on(consumer.events.CRASH, (event) => reject(coerceError(event.payload.error)));
      consumer
        .run({
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            const end = pending.get(batch.partition);
            for (const m of batch.messages) {
              const offset = BigInt(m.offset);
              if (end === undefined || offset >= end) continue;
              records.push({ topic, partition: batch.partition, offset, key: m.key, value: m.value, headers: headersToStrings(m.headers) });
              if (offset + 1n >= end) pending.delete(batch.partition);
            }
            if (end !== undefined && BigInt(batch.lastOffset()) + 1n >= end) pending.delete(batch.partition);
            if (pending.size === 0) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return records.sort((a, b) => a.partition - b.partition || (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
}
