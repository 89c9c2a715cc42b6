import type { Admin } from 'kafkajs';
import type { KafkaConfig } from '../config/schema.js';
import { HighwaterError } from '../errors.js';
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
      'min.insync.replicas': minInsyncReplicas(kafka),
      'max.message.bytes': String(kafka.maxMessageBytes),
    },
  };
}

export function sideTopicSpec(topic: string, kafka: KafkaConfig, partitions = kafka.partitions): TopicSpec {
  return { topic, partitions, config: { ...SIDE_TOPIC_CONFIG, 'min.insync.replicas': minInsyncReplicas(kafka), 'max.message.bytes': String(kafka.maxMessageBytes) } };
}

/**
 * Two in-sync replicas whenever there are at least two: with acks=all, an acknowledged record is then on two
 * brokers, and the death of the leader cannot take it away. A retry or dead-letter record matters as much as a
 * table record (it is the only copy of a row waiting for its parent), so every topic gets it, not only table topics.
 */
function minInsyncReplicas(kafka: KafkaConfig): string {
  return String(Math.min(2, kafka.replicationFactor));
}

/** How long ensureTopics waits for every partition of the topics it created to have a leader. */
const LEADERS_TIMEOUT_MS = 60_000;

/**
 * Creates the topics that do not exist yet; existing topics are left as they are (an operator may have tuned them).
 * Resolves once every partition of every topic has a leader, so producing right away succeeds. kafkajs' own
 * `waitForLeaders` gives up when a KRaft broker whose metadata lags answers UNKNOWN_TOPIC_OR_PARTITION for a
 * topic it has just created; this waits through that (and through another process creating the same topic).
 */
export async function ensureTopics(admin: Admin, specs: readonly TopicSpec[], replicationFactor: number): Promise<string[]> {
  const missing = await withKafkaErrors('listing topics', async () => {
    const existing = new Set(await admin.listTopics());
    return specs.filter((s) => !existing.has(s.topic));
  });
  if (missing.length === 0) return [];
  await withKafkaErrors('creating topics', () => admin.createTopics({
    waitForLeaders: false,
    topics: missing.map((s) => ({
      topic: s.topic,
      numPartitions: s.partitions,
      replicationFactor,
      configEntries: Object.entries(s.config).map(([name, value]) => ({ name, value })),
    })),
  }).catch((err: unknown) => {
    const failure = creationFailure(err);
    if (failure !== undefined) throw failure;
    return false;
  }));
  await waitForLeaders(admin, missing.map((s) => s.topic), LEADERS_TIMEOUT_MS);
  return missing.map((s) => s.topic);
}

/**
 * kafkajs reports the broker's refusals of a CreateTopics request as one error saying only "Topic creation errors",
 * the reasons inside it. This names every refused topic with the broker's reason, retriable only when every reason
 * is. A topic another process created meanwhile (TOPIC_ALREADY_EXISTS) is no failure: it is there, and its leaders
 * are waited for with the others.
 */
function creationFailure(err: unknown): unknown {
  const inner = (err as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(inner)) return err;
  const refused = (inner as { topic?: string; type?: string; message?: string; retriable?: boolean }[]).filter((e) => e.type !== 'TOPIC_ALREADY_EXISTS');
  if (refused.length === 0) return undefined;
  return Object.assign(new Error(refused.map((e) => `${e.topic ?? 'a topic'}: ${e.message ?? String(e)}`).join('; '), { cause: err }), {
    retriable: refused.every((e) => e.retriable === true),
  });
}

/** Polls the cluster's metadata until every partition of the topics has a leader, or fails after `timeoutMs`. */
async function waitForLeaders(admin: Admin, topics: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no metadata yet';
  for (let delay = 100; Date.now() < deadline; delay = Math.min(delay * 2, 2000)) {
    try {
      const { topics: meta } = await withKafkaErrors('waiting for the leaders of new topics', () => admin.fetchTopicMetadata({ topics: [...topics] }));
      const pending = meta.filter((t) => t.partitions.length === 0 || t.partitions.some((p) => p.leader < 0));
      if (meta.length === topics.length && pending.length === 0) return;
      last = `no leader yet for ${pending.map((t) => t.name).join(', ') || 'some topics'}`;
    } catch (err) {
      // UNKNOWN_TOPIC_OR_PARTITION and LEADER_NOT_AVAILABLE (both retriable) while the controller's decision reaches
      // the broker's metadata cache. Anything else (refused authorisation, a rejected request) surfaces at once.
      if (!(err instanceof HighwaterError) || !err.retriable) throw err;
      last = err.message;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  throw new HighwaterError('KAFKA_UNAVAILABLE', `creating topics: ${topics.join(', ')} have no leaders after ${timeoutMs} ms (${last})`);
}

/** Partition count of a topic, from the cluster's metadata. */
export async function partitionCount(admin: Admin, topic: string): Promise<number> {
  return withKafkaErrors(`reading metadata of ${topic}`, async () => {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    return meta.topics[0]?.partitions.length ?? 0;
  });
}
