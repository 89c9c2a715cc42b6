import type { Admin } from 'kafkajs';
import type { KafkaConfig } from '../config/schema.js';
import { withKafkaErrors } from './client.js';

/**
 * Topic settings. Table topics are compacted: compaction keeps the latest record of every key for ever, which is
 * exactly what a rebuild needs (every row's latest version, every live chunk, the latest marker per partition),
 * while superseded versions are cleaned up. Tombstones stay for `delete.retention.ms` (7 days), long enough for a
 * lagging consumer to see a delete; after that a rebuild never sees the row at all, so nothing is resurrected.
 * Retry and dead-letter topics are ordinary (delete policy) with long retention: every record matters there.
 */

export const TABLE_TOPIC_CONFIG = {
  'cleanup.policy': 'compact',
  'delete.retention.ms': String(7 * 24 * 3600 * 1000),
  // Keep at least a day of full history before compaction, so consumers and subscribers can read every version.
  'min.compaction.lag.ms': String(24 * 3600 * 1000),
  'min.insync.replicas': '1',
};

export const SIDE_TOPIC_CONFIG = {
  'cleanup.policy': 'delete',
  'retention.ms': String(30 * 24 * 3600 * 1000),
};

export interface TopicSpec {
  readonly topic: string;
  readonly partitions: number;
  readonly config: Readonly<Record<string, string>>;
}

export function tableTopicSpec(topic: string, kafka: KafkaConfig): TopicSpec {
  return {
    topic,
    partitions: kafka.partitions,
    config: {
      ...TABLE_TOPIC_CONFIG,
      'min.insync.replicas': String(Math.min(2, kafka.replicationFactor)),
      'max.message.bytes': String(kafka.maxMessageBytes),
    },
  };
}

export function sideTopicSpec(topic: string, kafka: KafkaConfig, partitions = kafka.partitions): TopicSpec {
  return { topic, partitions, config: { ...SIDE_TOPIC_CONFIG, 'max.message.bytes': String(kafka.maxMessageBytes) } };
}

/** Creates the topics that do not exist yet; existing topics are left as they are (an operator may have tuned them). */
export async function ensureTopics(admin: Admin, specs: readonly TopicSpec[], replicationFactor: number): Promise<string[]> {
  return withKafkaErrors('creating topics', async () => {
    const existing = new Set(await admin.listTopics());
    const missing = specs.filter((s) => !existing.has(s.topic));
    if (missing.length === 0) return [];
    await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((s) => ({
        topic: s.topic,
        numPartitions: s.partitions,
        replicationFactor,
        configEntries: Object.entries(s.config).map(([name, value]) => ({ name, value })),
      })),
    });
    return missing.map((s) => s.topic);
  });
}

/** Partition count of a topic, from the cluster's metadata. */
export async function partitionCount(admin: Admin, topic: string): Promise<number> {
  return withKafkaErrors(`reading metadata of ${topic}`, async () => {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    return meta.topics[0]?.partitions.length ?? 0;
  });
}
