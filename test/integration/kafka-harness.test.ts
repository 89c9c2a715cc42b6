/**
 * Proves, against the real broker of the test run, the kafkajs behaviour the rest of highwater builds on: topic
 * administration, the idempotent producer, consumer groups and their committed offsets, large records, and a
 * broker restart that keeps its data.
 */
import { createHash, randomBytes } from 'node:crypto';
import { ConfigResourceTypes, logLevel, type Consumer, type Message, type Producer } from 'kafkajs';
import { describe, expect, it, vi } from 'vitest';
import { classifyKafkaError } from '../../src/errors.js';
import {
  DEFAULT_PARTITIONER,
  canControlBroker,
  consumeMessages,
  createTopic,
  deleteTopicsWhenPassed,
  kafkaClient,
  killBroker,
  startBroker,
  stopBroker,
  uniqueName,
  withAdmin,
} from '../support/kafka.js';

const ONE_MB = 1_000_000;

/** The producer settings highwater uses: no duplicates on retry, and a record is only acknowledged once durable. */
function idempotentProducer(options: { quiet?: boolean } = {}): Producer {
  const client = kafkaClient('highwater-test-producer', options.quiet === true ? { logLevel: logLevel.NOTHING } : {});
  return client.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: DEFAULT_PARTITIONER });
}

async function withProducer<T>(fn: (producer: Producer) => Promise<T>, options: { quiet?: boolean } = {}): Promise<T> {
  const producer = idempotentProducer(options);
  await producer.connect();
  try {
    return await fn(producer);
  } finally {
    await producer.disconnect();
  }
}

/** `count` messages spread round-robin over `partitions` partitions, each value naming its own index. */
function numberedMessages(count: number, partitions: number, prefix = 'v'): Message[] {
  return Array.from({ length: count }, (_, i) => ({ key: `k${i}`, value: `${prefix}${i}`, partition: i % partitions }));
}

function valuesOf(messages: readonly { value: Buffer | null }[]): string[] {
  return messages.map((m) => m.value?.toString('utf8') ?? '<null>');
}

describe('kafkajs against the test broker', () => {
  it('creates, lists and describes topics', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 3, { 'cleanup.policy': 'compact', 'max.message.bytes': '2097152' });

    await withAdmin(async (admin) => {
      expect(await admin.listTopics()).toContain(topic);
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
      const partitions = metadata.topics[0]!.partitions;
      expect(partitions.map((p) => p.partitionId).sort()).toEqual([0, 1, 2]);
      expect(partitions.every((p) => p.leader === 1)).toBe(true);
      const described = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['cleanup.policy', 'max.message.bytes'] }],
      });
      const entries = Object.fromEntries(described.resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
      expect(entries).toEqual({ 'cleanup.policy': 'compact', 'max.message.bytes': '2097152' });
    });
  });

  it('does not create topics on demand', async ({ task }) => {
    const topic = uniqueName(task.name, 'missing');
    // The errors are the expected outcome here, so kafkajs need not log them.
    const quiet = { retry: { retries: 1, initialRetryTime: 100 }, logLevel: logLevel.NOTHING };
    const producer = kafkaClient('highwater-test-producer', quiet).producer({ createPartitioner: DEFAULT_PARTITIONER });
    await producer.connect();
    try {
      await expect(producer.send({ topic, messages: [{ value: 'x' }] })).rejects.toThrow(/does not host this topic-partition|UNKNOWN_TOPIC|retries/i);
    } finally {
      await producer.disconnect();
    }
    await withAdmin(async (admin) => expect(await admin.listTopics()).not.toContain(topic));
  });

  it('an idempotent producer writes to every partition and a group consumes every message once', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 3);
    const sent = numberedMessages(300, 3);

    await withProducer(async (producer) => {
      // Several requests, so the producer's sequence numbers advance across batches, not only within one.
      for (let start = 0; start < sent.length; start += 100) {
        const metadata = await producer.send({ topic, acks: -1, messages: sent.slice(start, start + 100) });
        expect(metadata.map((m) => m.partition).sort()).toEqual([0, 1, 2]);
        expect(metadata.every((m) => m.errorCode === 0)).toBe(true);
      }
    });

    const received = await consumeMessages({ topic, groupId: uniqueName(task.name, 'group'), count: sent.length });
    expect(valuesOf(received).sort()).toEqual(sent.map((m) => String(m.value)).sort());
    for (const message of received) {
      const index = Number(message.value!.toString('utf8').slice(1));
      expect(message.partition).toBe(index % 3);
    }
    // No duplicates and no gaps: each partition holds exactly offsets 0..99.
    for (const partition of [0, 1, 2]) {
      const offsets = received.filter((m) => m.partition === partition).map((m) => Number(m.offset)).sort((a, b) => a - b);
      expect(offsets).toEqual(Array.from({ length: 100 }, (_, i) => i));
    }
  });

  it('two consumers in one group split the partitions between them', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    const groupId = uniqueName(task.name, 'group');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 3);
    const assignments = new Map<string, number[]>();
    const consumedBy: { member: string; partition: number; value: string }[] = [];
    const consumers: Consumer[] = [];

    const startMember = async (member: string): Promise<void> => {
      // Short fetch waits let an idle member notice a rebalance quickly instead of after the default 5 s.
      const consumer = kafkaClient(member).consumer({ groupId, maxWaitTimeInMs: 250, heartbeatInterval: 500, sessionTimeout: 10_000 });
      consumers.push(consumer);
      consumer.on(consumer.events.GROUP_JOIN, (event) => {
        assignments.set(member, [...(event.payload.memberAssignment[topic] ?? [])].sort());
      });
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ partition, message }) => {
          consumedBy.push({ member, partition, value: message.value?.toString('utf8') ?? '' });
        },
      });
    };

    try {
      await startMember('a');
      await vi.waitFor(() => expect(assignments.get('a')).toEqual([0, 1, 2]), { timeout: 30_000, interval: 100 });
      await startMember('b');
      await vi.waitFor(
        () => {
          const a = assignments.get('a') ?? [];
          const b = assignments.get('b') ?? [];
          expect(a.length).toBeGreaterThan(0);
          expect(b.length).toBeGreaterThan(0);
          expect([...a, ...b].sort()).toEqual([0, 1, 2]);
        },
        { timeout: 30_000, interval: 100 },
      );

      const sent = numberedMessages(30, 3);
      await withProducer((producer) => producer.send({ topic, acks: -1, messages: sent }));
      await vi.waitFor(() => expect(consumedBy).toHaveLength(sent.length), { timeout: 30_000, interval: 100 });

      expect(consumedBy.map((c) => c.value).sort()).toEqual(sent.map((m) => String(m.value)).sort());
      for (const { member, partition } of consumedBy) expect(assignments.get(member)).toContain(partition);
      expect(new Set(consumedBy.map((c) => c.member))).toEqual(new Set(['a', 'b']));
    } finally {
      await Promise.all(consumers.map((c) => c.disconnect()));
    }
  });

  it('committed offsets can be read with admin.fetchOffsets', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    const groupId = uniqueName(task.name, 'group');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 3);
    // 4 records to partition 0, 3 to partition 1, 2 to partition 2.
    const sent: Message[] = [0, 0, 0, 0, 1, 1, 1, 2, 2].map((partition, i) => ({ value: `v${i}`, partition }));
    await withProducer((producer) => producer.send({ topic, acks: -1, messages: sent }));

    await consumeMessages({ topic, groupId, count: sent.length });

    const committed = await withAdmin((admin) => admin.fetchOffsets({ groupId, topics: [topic] }));
    const byPartition = Object.fromEntries(committed[0]!.partitions.map((p) => [p.partition, p.offset]));
    // The committed offset is the next one to read, i.e. the partition's end.
    expect(byPartition).toEqual({ 0: '4', 1: '3', 2: '2' });
    const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
    expect(Object.fromEntries(ends.map((p) => [p.partition, p.high]))).toEqual(byPartition);
  });

  it('a record of about 1 MB passes when the topic allows it', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 1, { 'max.message.bytes': String(2 * ONE_MB) });
    // Random bytes do not compress, so the record really is this large on the wire and on disk.
    const value = randomBytes(ONE_MB);

    await withProducer((producer) => producer.send({ topic, acks: -1, messages: [{ key: 'big', value }] }));
    const [received] = await consumeMessages({ topic, groupId: uniqueName(task.name, 'group'), count: 1 });

    expect(received!.value!.length).toBe(ONE_MB);
    expect(sha256(received!.value!)).toBe(sha256(value));
  });

  it('a record larger than the topic allows is rejected, and classified as not retriable', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 1, { 'max.message.bytes': String(ONE_MB / 2) });

    const error = await withProducer(
      (producer) => producer.send({ topic, acks: -1, messages: [{ value: randomBytes(ONE_MB) }] }).then(
        () => undefined,
        (thrown: unknown) => thrown,
      ),
      { quiet: true },
    );

    expect(error).toMatchObject({ name: 'KafkaJSProtocolError', type: 'MESSAGE_TOO_LARGE', retriable: false });
    const classified = classifyKafkaError(error, 'send');
    expect(classified.code).toBe('KAFKA_REJECTED');
    expect(classified.retriable).toBe(false);
  });

  it.skipIf(!canControlBroker())('the broker keeps its data across a stop, a crash and restarts, and a connected producer carries on', async ({ task }) => {
    const topic = uniqueName(task.name, 'topic');
    deleteTopicsWhenPassed([topic]);
    await createTopic(topic, 3);

    await withProducer(async (producer) => {
      await producer.send({ topic, acks: -1, messages: numberedMessages(30, 3, 'before-') });
      await stopBroker();
      await startBroker();
      // The same producer (same producer id) reconnects by itself and its sequence numbers still line up.
      await producer.send({ topic, acks: -1, messages: numberedMessages(30, 3, 'after-stop-') });
    });

    await killBroker('SIGKILL');
    await startBroker();
    await withProducer((producer) => producer.send({ topic, acks: -1, messages: numberedMessages(30, 3, 'after-crash-') }));

    const received = await consumeMessages({ topic, groupId: uniqueName(task.name, 'group'), count: 90 });
    const values = valuesOf(received);
    expect(new Set(values).size).toBe(90);
    expect(values.filter((v) => v.startsWith('before-'))).toHaveLength(30);
    expect(values.filter((v) => v.startsWith('after-stop-'))).toHaveLength(30);
    expect(values.filter((v) => v.startsWith('after-crash-'))).toHaveLength(30);
  });
});

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
