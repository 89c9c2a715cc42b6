import { describe, expect, it } from 'vitest';
import { kafkaSchema } from '../../src/config/schema.js';
import { sideTopicSpec, tableTopicSpec, topicSettingProblems } from '../../src/kafka/topics.js';

describe('topic settings for a replicated cluster', () => {
  // Regression (fault matrix, three-broker cluster): retry and dead-letter topics took the broker's
  // min.insync.replicas (1 by default), so acks=all could be satisfied by a lone leader whose death loses a
  // missing-parent retry or a dead letter that the producer was told was stored.
  it('asks two in-sync replicas of every topic once the replication factor allows it', () => {
    const kafka = kafkaSchema.parse({ replicationFactor: 3 });
    expect(tableTopicSpec('t', kafka).config['min.insync.replicas']).toBe('2');
    expect(sideTopicSpec('t.retry', kafka).config['min.insync.replicas']).toBe('2');
    expect(sideTopicSpec('t.dlq', kafka).config['min.insync.replicas']).toBe('2');
  });

  it('asks one on a single broker, where two could never be met', () => {
    const kafka = kafkaSchema.parse({ replicationFactor: 1 });
    expect(sideTopicSpec('t.retry', kafka).config['min.insync.replicas']).toBe('1');
  });
});

describe('topicSettingProblems (preflight of topics that exist already)', () => {
  const kafka = kafkaSchema.parse({ maxMessageBytes: 1_048_576 });
  const table = tableTopicSpec('hw.files', kafka);
  const retry = sideTopicSpec('hw.files.retry', kafka);
  const healthy = { 'cleanup.policy': 'compact', 'max.message.bytes': '1048588', 'segment.bytes': '1073741824' };

  it('finds nothing wrong with the settings init would create, or with an operator who raised them', () => {
    expect(topicSettingProblems(table, healthy, kafka.maxMessageBytes)).toEqual([]);
    expect(topicSettingProblems(table, { ...healthy, 'cleanup.policy': 'compact,delete' }, kafka.maxMessageBytes)).toEqual([]);
    expect(topicSettingProblems(retry, { ...healthy, 'cleanup.policy': 'delete' }, kafka.maxMessageBytes)).toEqual([]);
  });

  it('names a table topic that is not compacted (a rebuild would miss rows past retention)', () => {
    expect(topicSettingProblems(table, { ...healthy, 'cleanup.policy': 'delete' }, kafka.maxMessageBytes)).toEqual([
      'hw.files: cleanup.policy is delete, not compact: rows older than its retention would be deleted, and a rebuild from the topic would miss them',
    ]);
  });

  it('names segments and record limits smaller than the largest batch highwater produces, on any topic', () => {
    const problems = topicSettingProblems(retry, { ...healthy, 'segment.bytes': '4096', 'max.message.bytes': '65536' }, kafka.maxMessageBytes);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^hw\.files\.retry: max\.message\.bytes is 65536, below kafka\.maxMessageBytes \(1048576\)/);
    expect(problems[1]).toMatch(/^hw\.files\.retry: segment\.bytes is 4096, below kafka\.maxMessageBytes \(1048576\)/);
  });
});
