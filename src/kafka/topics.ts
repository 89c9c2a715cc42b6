import type { Admin, ConfigResourceTypes } from 'kafkajs';
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

/**
 * What is wrong with an existing topic's settings for highwater, one sentence each (empty when nothing is). Topics
 * an operator created or tuned by hand are left as they are by `init`; these are the settings that would break the
 * pipeline rather than tune it: a table topic that is not compacted loses rows a rebuild needs once retention
 * passes, and a topic that refuses highwater's largest record batch fails every poll that produces one. Pure.
 */
export function topicSettingProblems(spec: TopicSpec, actual: Readonly<Record<string, string>>, maxMessageBytes: number): string[] {
  const problems: string[] = [];
  const policy = actual['cleanup.policy'];
  if (spec.config['cleanup.policy'] === 'compact' && policy !== undefined && !policy.split(',').map((p) => p.trim()).includes('compact'))
    problems.push(`${spec.topic}: cleanup.policy is ${policy}, not compact: rows older than its retention would be deleted, and a rebuild from the topic would miss them`);
  const maxMessage = numberSetting(actual, 'max.message.bytes');
  if (maxMessage !== null && maxMessage < maxMessageBytes)
    problems.push(`${spec.topic}: max.message.bytes is ${maxMessage}, below kafka.maxMessageBytes (${maxMessageBytes}): the broker would refuse highwater's larger records`);
  const segment = numberSetting(actual, 'segment.bytes');
  if (segment !== null && segment < maxMessageBytes)
    problems.push(`${spec.topic}: segment.bytes is ${segment}, below kafka.maxMessageBytes (${maxMessageBytes}): the broker refuses a record batch larger than a segment, so polls producing one would fail`);
  return problems;
}

function numberSetting(actual: Readonly<Record<string, string>>, name: string): number | null {
  const value = actual[name];
  return value === undefined || !/^\d+$/.test(value) ? null : Number(value);
}

/** kafkajs' ConfigResourceTypes.TOPIC: its CommonJS enum is not an ESM named export (the import fails at run time). */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

/** The effective settings (explicit or the broker's defaults) of the topics that exist; absent topics are left out. */
export async function describeTopicSettings(admin: Admin, topics: readonly string[]): Promise<Map<string, Record<string, string>>> {
  return withKafkaErrors('reading topic settings', async () => {
    const existing = new Set(await admin.listTopics());
    const present = [...new Set(topics)].filter((t) => existing.has(t));
    if (present.length === 0) return new Map();
    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      resources: present.map((name) => ({ type: TOPIC_RESOURCE, name })),
    });
    return new Map(resources.map((r) => [r.resourceName, Object.fromEntries(r.configEntries.map((e) => [e.configName, e.configValue]))]));
  });
}
