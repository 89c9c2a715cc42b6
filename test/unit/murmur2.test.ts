/**
 * src/kafka/murmur2.ts partitions records itself; it must agree with kafkajs' DefaultPartitioner (Java's murmur2)
 * on every key, or a row's records would change partition (and order) with the client.
 */
import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { murmur2, partitionForKey } from '../../src/kafka/murmur2.js';

const kafkajs = Partitioners.DefaultPartitioner();

function theirs(key: string, partitions: number): number {
  const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));
  return kafkajs({ topic: 't', partitionMetadata, message: { key, value: null } });
}

/** A deterministic generator, so a failure names a key that reproduces it. */
function* keys(count: number): Generator<string> {
  let x = 12345;
  const next = (): number => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const alphabet = 'abcdefABCDEF0123456789-/{}_ éüß漢字😀';
  for (let i = 0; i < count; i++) {
    const length = next() % 41;
    let key = '';
    for (let j = 0; j < length; j++) key += [...alphabet][next() % [...alphabet].length];
    yield key;
  }
}

describe('murmur2 partitioning', () => {
  it("matches Java's murmur2 on Kafka's own test vectors", () => {
    // org.apache.kafka.common.utils.UtilsTest#testMurmur2
    const cases: [string, number][] = [['21', -973932308], ['foobar', -790332482], ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829], ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971], ['abc', 479470107]];
    for (const [key, hash] of cases) expect(murmur2(Buffer.from(key, 'utf8')), key).toBe(hash);
  });

  it.each([1, 3, 6, 7, 64])('gives every key the partition kafkajs gives it (%i partitions)', (partitions) => {
    for (const key of keys(2000)) expect(partitionForKey(key, partitions), JSON.stringify(key)).toBe(theirs(key, partitions));
  });

  it('gives GUID keys, upper and lower case, the partition kafkajs gives them', () => {
    for (const key of ['6F9619FF-8B86-D011-B42D-00C04FC964FF', '6f9619ff-8b86-d011-b42d-00c04fc964ff', '']) {
      expect(partitionForKey(key, 6)).toBe(theirs(key, 6));
    }
  });
});
