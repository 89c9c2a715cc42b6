import { describe, expect, it } from 'vitest';
import { mergeByProduction } from '../../src/apply/loop.js';
import type { InRecord } from '../../src/events/records.js';
import { seeded } from '../support/seeded.js';

function record(partition: number, offset: number, timestamp?: number): InRecord {
  return { topic: 't', partition, offset: BigInt(offset), key: null, value: null, headers: {}, ...(timestamp === undefined ? {} : { timestamp }) };
}

/** Partitions of records with offsets that have gaps (compaction) and timestamps that never go back within a partition. */
function partitions(rand: () => number, timed: boolean): InRecord[][] {
  const count = 1 + Math.floor(rand() * 7);
  return Array.from({ length: count }, (_, p) => {
    let offset = Math.floor(rand() * 5);
    let time = 1_000 + Math.floor(rand() * 50);
    return Array.from({ length: Math.floor(rand() * 40) }, () => {
      offset += 1 + Math.floor(rand() * 3);
      time += Math.floor(rand() * 4); // equal timestamps too
      return record(p, offset, timed ? time : undefined);
    });
  });
}

describe('merging the partitions of one fetch in the order they were produced', () => {
  for (const timed of [true, false]) {
    it(`keeps every record once and each partition's order, so any prefix holds a prefix of each partition (${timed ? 'timestamps' : 'no timestamps'})`, () => {
      for (let seed = 1; seed <= 300; seed++) {
        const parts = partitions(seeded(seed), timed);
        const merged = mergeByProduction(parts);
        expect(merged.length, `seed ${seed}`).toBe(parts.reduce((n, p) => n + p.length, 0));
        expect(new Set(merged).size, `seed ${seed}`).toBe(merged.length);
        for (const [p, part] of parts.entries()) expect(merged.filter((r) => r.partition === p), `seed ${seed}`).toEqual(part);
      }
    });
  }

  it('takes records in timestamp order across partitions when every record has one', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const merged = mergeByProduction(partitions(seeded(seed), true));
      for (let i = 1; i < merged.length; i++) expect(merged[i]!.timestamp!, `seed ${seed} at ${i}`).toBeGreaterThanOrEqual(merged[i - 1]!.timestamp!);
    }
  });

  it('puts a parent sent to a later partition before the child that refers to it, whatever the partitions are numbered', () => {
    // The poller sent the folder (partition 4, time 10) before its file (partition 0, time 11).
    const merged = mergeByProduction([[record(0, 7, 11)], [], [record(2, 3, 12)], [], [record(4, 0, 10)]]);
    expect(merged.map((r) => r.partition)).toEqual([4, 0, 2]);
  });

  it('without timestamps, interleaves partitions by how far along their batch each is', () => {
    const merged = mergeByProduction([
      [record(0, 0), record(0, 1), record(0, 2), record(0, 3)],
      [record(1, 0), record(1, 1)],
    ]);
    expect(merged.map((r) => `${r.partition}:${r.offset}`)).toEqual(['0:0', '1:0', '0:1', '0:2', '1:1', '0:3']);
  });
});
