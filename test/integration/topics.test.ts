/**
 * Topic creation against the real broker: many topics at once, used at once. kafkajs' own waitForLeaders gave up when
 * the KRaft broker's metadata lagged (UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition"),
 * which failed `highwater init` with 20 tables. On this broker the first batch of 20 topics usually passed and the
 * batches after it failed, so the test creates several batches in a row on one admin client.
 */
import { describe, expect, it } from 'vitest';
import { kafkaSchema } from '../../src/config/schema.js';
import { HighwaterError } from '../../src/errors.js';
import { createKafka } from '../../src/kafka/client.js';
import { Publisher } from '../../src/kafka/publisher.js';
import { ensureTopics, tableTopicSpec } from '../../src/kafka/topics.js';
import { createLogger } from '../../src/logger.js';
import { brokers, deleteTopicsWhenPassed, uniqueName } from '../support/kafka.js';

const BATCHES = 5;
const TOPICS_PER_BATCH = 20;

describe('ensureTopics', () => {
  it('creates twenty topics at once, five times back to back, and each takes a record; a second call creates nothing', async ({ task }) => {
    const kafkaConfig = kafkaSchema.parse({ brokers: brokers(), partitions: 3 });
    const kafka = createKafka(kafkaConfig, createLogger({ level: 'silent' }));
    const batches = Array.from({ length: BATCHES }, (_, b) => Array.from({ length: TOPICS_PER_BATCH }, (_, i) => uniqueName(task.name, `b${b}t${i}`)));
    deleteTopicsWhenPassed(batches.flat());
    const admin = kafka.admin();
    await admin.connect();
    const publisher = new Publisher(kafka, kafkaConfig.maxMessageBytes);
    try {
      // Back to back, as init creates the topics of one table after another.
      for (const topics of batches) expect(await ensureTopics(admin, topics.map((t) => tableTopicSpec(t, kafkaConfig)), 1)).toEqual(topics);
      await publisher.connect();
      for (const topic of batches.flat()) await publisher.send(topic, [{ key: 'k', value: Buffer.from('v'), headers: {} }]);
      expect(await ensureTopics(admin, batches.flat().map((t) => tableTopicSpec(t, kafkaConfig)), 1)).toEqual([]);
    } finally {
      await publisher.disconnect();
      await admin.disconnect();
    }
  });

  it("surfaces a topic the broker refuses with the broker's reason, not retriable", async ({ task }) => {
    const kafkaConfig = kafkaSchema.parse({ brokers: brokers(), partitions: 1 });
    const kafka = createKafka(kafkaConfig, createLogger({ level: 'silent' }));
    const topic = uniqueName(task.name, 'rf3');
    const admin = kafka.admin();
    await admin.connect();
    try {
      // One broker cannot hold three replicas.
      const failure = await ensureTopics(admin, [tableTopicSpec(topic, kafkaConfig)], 3).then(() => null, (err: unknown) => err);
      expect(failure).toBeInstanceOf(HighwaterError);
      expect((failure as HighwaterError).retriable).toBe(false);
      expect((failure as HighwaterError).message).toContain(`creating topics: ${topic}: Replication-factor is invalid`);
      expect(await admin.listTopics()).not.toContain(topic);
    } finally {
      await admin.disconnect();
    }
  });
});
