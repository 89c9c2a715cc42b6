import { backfillTopic, dlqTopicFor, loadConfigFile, retryTopicFor, topicFor } from '../../../src/config/load.js';
import { sideTopicSpec, tableTopicSpec, type TopicSpec } from '../../../src/kafka/topics.js';
import type { BenchContext } from '../context.js';
import type { HwSetup } from './highwater.js';
import { waitForLeaders } from './kafka-raw.js';

/**
 * A bench-side workaround for a product bug, used only after `highwater init` failed: `ensureTopics`
 * (src/kafka/topics.ts) creates topics with kafkajs' `waitForLeaders: true`, which retries only
 * LEADER_NOT_AVAILABLE; a KRaft broker whose metadata cache has not caught up yet answers
 * UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this topic-partition") and init fails. Here the same
 * topics, with the product's own specs, are created without that wait, and their metadata is awaited with retries;
 * init then finds them and leaves them as they are.
 */
export async function precreateTopics(ctx: BenchContext, setup: HwSetup): Promise<void> {
  const config = await loadConfigFile(setup.configFile);
  const specs: TopicSpec[] = [sideTopicSpec(backfillTopic(), config.kafka, 1)];
  for (const t of config.tables) {
    const topic = topicFor(config, t);
    specs.push(tableTopicSpec(topic, config.kafka), sideTopicSpec(retryTopicFor(topic), config.kafka), sideTopicSpec(dlqTopicFor(topic), config.kafka));
  }
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = specs.filter((s) => !existing.has(s.topic));
    if (missing.length > 0) {
      await admin.createTopics({
        waitForLeaders: false,
        topics: missing.map((s) => ({ topic: s.topic, numPartitions: s.partitions, replicationFactor: config.kafka.replicationFactor, configEntries: Object.entries(s.config).map(([name, value]) => ({ name, value })) })),
      });
    }
    await waitForLeaders(admin, specs.map((s) => s.topic));
  } finally {
    await admin.disconnect();
  }
}
