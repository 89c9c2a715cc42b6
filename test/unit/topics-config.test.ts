import { describe, expect, it } from 'vitest';
import { kafkaSchema } from '../../src/config/schema.js';
import { sideTopicSpec, tableTopicSpec } from '../../src/kafka/topics.js';

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
