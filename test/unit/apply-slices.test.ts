import { describe, expect, it } from 'vitest';
import { slicedPerPartition } from '../../src/apply/loop.js';
import type { InRecord } from '../../src/events/records.js';
import { seeded } from '../support/seeded.js';

function record(partition: number, offset: number): InRecord {
  return { topic: 't', partition, offset: BigInt(offset), key: null, value: null, headers: {} };
}

const perPartition = (slice: readonly InRecord[]) => {
  const n = new Map<number, number>();
  for (const r of slice) n.set(r.partition, (n.get(r.partition) ?? 0) + 1);
  return n;
};

describe('slices of the records applied together', () => {
  it('slices one partition into runs of at most `size`, in order', () => {
    const records = Array.from({ length: 11 }, (_, i) => record(0, i));
    const offsets = (size: number) => slicedPerPartition(records, size).map((s) => s.map((r) => Number(r.offset)));
    expect(offsets(4)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]);
    expect(offsets(11)).toEqual([records.map((_, i) => i)]);
    expect(offsets(100)).toEqual([records.map((_, i) => i)]);
    expect(slicedPerPartition([], 5)).toEqual([]);
  });

  it('keeps every record once in order, at most `size` of any partition a slice, and cuts only where one more would exceed it', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rand = seeded(seed);
      const partitions = 1 + Math.floor(rand() * 6);
      const size = 1 + Math.floor(rand() * 8);
      const records = Array.from({ length: Math.floor(rand() * 120) }, (_, i) => record(Math.floor(rand() * partitions), i));
      const slices = slicedPerPartition(records, size);
      expect(slices.flat(), `seed ${seed}`).toEqual(records);
      for (const [i, slice] of slices.entries()) {
        expect(slice.length, `seed ${seed}`).toBeGreaterThan(0);
        expect(Math.max(...perPartition(slice).values()), `seed ${seed}`).toBeLessThanOrEqual(size);
        const next = slices[i + 1]?.[0];
        if (next !== undefined) expect(perPartition(slice).get(next.partition), `seed ${seed}: slice ${i} ended early`).toBe(size);
      }
    }
  });

  it('gives six partitions of 5,000 records each one slice, not six', () => {
    const records = Array.from({ length: 30_000 }, (_, i) => record(i % 6, Math.floor(i / 6)));
    expect(slicedPerPartition(records, 5000).map((s) => s.length)).toEqual([30_000]);
  });
});
