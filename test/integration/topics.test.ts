/**
 * Topic creation against the real broker: many topics at once, used at once. kafkajs' own waitForLeaders gave up when
 * the KRaft broker's metadata lagged (UNKNOWN_TOPIC_OR_PARTITION), which failed `highwater init` with 20 tables.
 */
import { describe, expect, it } from 'vitest';
import { kafkaSchema } from '../../src/config/schema.js';
import { createKafka } from '../../src/kafka/client.js';
import { Publisher } from '../../src/kafka/publisher.js';
import { ensureTopics, tableTopicSpec } from '../../src/kafka/topics.js';
import { createLogger } from '../../src/logger.js';
import { brokers, deleteTopicsWhenPassed, uniqueName } from '../support/kafka.js';

describe('ensureTopics', () => {
  it('creates twenty topics at once and each takes a record right away; a second call creates nothing', async ({ task }) => {
    const kafkaConfig = kafkaSchema.parse({ brokers: brokers(), partitions: 3 });
    const kafka = createKafka(kafkaConfig, createLogger({ level: 'silent' }));
    const topics = Array.from({ length: 20 }, (_, i) => uniqueName(task.name, `t${i}`));
    deleteTopicsWhenPassed(topics);
    const admin = kafka.admin();
    await admin.connect();
    const publisher = new Publisher(kafka, kafkaConfig.maxMessageBytes);
    try {
      expect(await ensureTopics(admin, topics.map((t) => tableTopicSpec(t, kafkaConfig)), 1)).toEqual(topics);
      await publisher.connect();
      for (const topic of topics) await publisher.send(topic, [{ key: 'k', value: Buffer.from('v'), headers: {} }]);
      expect(await ensureTopics(admin, topics.map((t) => tableTopicSpec(t, kafkaConfig)), 1)).toEqual([]);
    } finally {
      await publisher.disconnect();
      await admin.disconnect();
    }
  });
});
