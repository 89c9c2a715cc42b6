import { Kafka, logLevel, type Admin, type Message, type Producer } from 'kafkajs';

/**
 * Plain kafkajs for the baselines (B2, B3). The product reaches Kafka only through src/kafka/; the benchmark's
 * baselines are not product code and use the client directly, as a team without highwater would.
 */

export function rawKafka(brokers: readonly string[], clientId: string): Kafka {
  return new Kafka({ clientId, brokers: [...brokers], logLevel: logLevel.NOTHING });
}

/**
 * Creates a topic and waits until every partition has a leader. Not with kafkajs' `waitForLeaders`: that retries
 * only LEADER_NOT_AVAILABLE, and a KRaft broker whose metadata cache lags answers UNKNOWN_TOPIC_OR_PARTITION.
 */
export async function createTopic(admin: Admin, topic: string, partitions: number): Promise<void> {
  await admin.createTopics({
    waitForLeaders: false,
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries: [{ name: 'max.message.bytes', value: String(8 * 1024 * 1024) }] }],
  });
  await waitForLeaders(admin, [topic]);
}

export async function waitForLeaders(admin: Admin, topics: readonly string[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const meta = await admin.fetchTopicMetadata({ topics: [...topics] });
      if (meta.topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`topics without leaders after ${timeoutMs / 1000} s: ${topics.join(', ')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const BATCH_BYTES = 1 << 20;
const BATCH_MESSAGES = 1000;

/** Cuts messages into batches of about 1 MiB or 1000 messages, the size a kafkajs user would send at once. */
export function batches(messages: readonly Message[]): Message[][] {
  const out: Message[][] = [];
  let current: Message[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = (m.value as Buffer | null)?.length ?? 0;
    if (current.length > 0 && (bytes + size > BATCH_BYTES || current.length >= BATCH_MESSAGES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** Produces every message with acks=all, one batch at a time; resolves with the elapsed ms. */
export async function produceAll(producer: Producer, topic: string, messages: readonly Message[]): Promise<number> {
  const started = performance.now();
  for (const batch of batches(messages)) await producer.send({ topic, acks: -1, messages: batch });
  return performance.now() - started;
}

/**
 * Consumes `count` messages from the start of `topic` in a new group, doing nothing with them. Timed from the
 * moment the group is joined (kafkajs' GROUP_JOIN event) to the last batch, so the first fetch counts; the join
 * itself is a fixed cost, reported apart as `joinMs`.
 */
export async function consumeAll(kafka: Kafka, topic: string, groupId: string, count: number, timeoutMs: number): Promise<{ ms: number; joinMs: number; seen: number; window: { startMs: number; endMs: number } }> {
  const consumer = kafka.consumer({ groupId, maxBytes: 16 * 1024 * 1024, maxBytesPerPartition: 8 * 1024 * 1024 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let seen = 0;
    const started = performance.now();
    let first = Number.NaN;
    let last = Number.NaN;
    // The same instants on the wall clock, for the CPU split (systems/cpu-split.ts).
    const window = { startMs: Number.NaN, endMs: Number.NaN };
    consumer.on(consumer.events.GROUP_JOIN, () => {
      first = performance.now();
      window.startMs = Date.now();
    });
    const done = new Promise<void>((resolve) => {
      void consumer.run({
        eachBatch: async ({ batch }) => {
          if (Number.isNaN(first)) {
            first = performance.now();
            window.startMs = Date.now();
          }
          seen += batch.messages.length;
          last = performance.now();
          window.endMs = Date.now();
          if (seen >= count) resolve();
        },
      });
    });
    await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs))]);
    return { ms: last - first, joinMs: first - started, seen, window };
  } finally {
    await consumer.disconnect();
  }
}
