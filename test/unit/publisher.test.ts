/**
 * groupBySize (src/kafka/publisher.ts): a send is cut, in order, into groups that stay under max.message.bytes,
 * because kafkajs puts everything of one send for a partition into one record batch.
 */
import { describe, expect, it } from 'vitest';
import type { OutRecord } from '../../src/events/records.js';
import { groupBySize, recordSize } from '../../src/kafka/publisher.js';

function rec(key: string, valueBytes: number | null, headers: Record<string, string> = {}): OutRecord {
  return { key, value: valueBytes === null ? null : Buffer.alloc(valueBytes, 1), headers };
}

const keysOf = (groups: OutRecord[][]): string[][] => groups.map((g) => g.map((r) => r.key));

describe('recordSize', () => {
  it('counts key, value and header bytes (UTF-8) plus a fixed overhead', () => {
    const base = recordSize(rec('', null));
    expect(base).toBeGreaterThan(0);
    expect(recordSize(rec('abc', 10)) - base).toBe(13);
    expect(recordSize(rec('é', null)) - base).toBe(2);
    expect(recordSize(rec('', null, { 'hw-kind': 'change', 'hw-é': 'ü' })) - base).toBe(7 + 6 + 5 + 2);
  });
});

describe('groupBySize', () => {
  const overhead = recordSize(rec('', null));

  it('returns no group for no records', () => {
    expect(groupBySize([], 1000)).toEqual([]);
  });

  it('keeps small records in one group', () => {
    const records = ['a', 'b', 'c'].map((k) => rec(k, 10));
    expect(keysOf(groupBySize(records, 10_000))).toEqual([['a', 'b', 'c']]);
  });

  it('cuts in order so that every group stays within the limit', () => {
    const records = Array.from({ length: 10 }, (_, i) => rec(`k${i}`, 100 + i * 37));
    const max = 600;
    const groups = groupBySize(records, max);
    expect(groups.flat()).toEqual(records);
    for (const g of groups) expect(g.reduce((n, r) => n + recordSize(r), 0)).toBeLessThanOrEqual(max);
    for (let i = 1; i < groups.length; i++) {
      const previous = groups[i - 1]!.reduce((n, r) => n + recordSize(r), 0);
      expect(previous + recordSize(groups[i]![0]!)).toBeGreaterThan(max);
    }
  });

  it('fills a group up to exactly the limit', () => {
    const size = recordSize(rec('a', 100));
    const records = ['a', 'b', 'c'].map((k) => rec(k, 100));
    expect(keysOf(groupBySize(records, 2 * size))).toEqual([['a', 'b'], ['c']]);
    expect(keysOf(groupBySize(records, 2 * size - 1))).toEqual([['a'], ['b'], ['c']]);
  });

  it('sends a record larger than the limit alone, never dropping it', () => {
    const records = [rec('s1', 10), rec('big', 5000), rec('s2', 10), rec('s3', 10)];
    expect(keysOf(groupBySize(records, 1000))).toEqual([['s1'], ['big'], ['s2', 's3']]);
  });

  it('keeps the order of records across groups (chunks before their row event)', () => {
    const records = [rec('\u0000chunk/k/0', 700), rec('\u0000chunk/k/1', 700), rec('k', 50), rec('j', 50)];
    const groups = groupBySize(records, 1000);
    expect(groups.length).toBeGreaterThan(1);
    expect(groups.flat().map((r) => r.key)).toEqual(['\u0000chunk/k/0', '\u0000chunk/k/1', 'k', 'j']);
    expect(keysOf(groups)).toEqual([['\u0000chunk/k/0'], ['\u0000chunk/k/1', 'k'], ['j']]);
    expect(overhead).toBeLessThan(100);
  });

  it('counts tombstones (null values) by key and headers only', () => {
    const records = Array.from({ length: 4 }, (_, i) => rec(`t${i}`, null, { 'hw-kind': 'delete' }));
    const one = recordSize(records[0]!);
    expect(keysOf(groupBySize(records, one * 2))).toEqual([['t0', 't1'], ['t2', 't3']]);
  });
});
