import { describe, expect, it } from 'vitest';
import { mbPerSecond, median, percentile, perSecond, ratio } from '../bench/stats.js';

describe('bench statistics', () => {
  it('takes the median of odd and even counts, and NaN of nothing', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('interpolates percentiles between closest ranks', () => {
    const values = Array.from({ length: 101 }, (_, i) => i);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile([10, 20], 25)).toBe(12.5);
    expect(percentile([7], 99)).toBe(7);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });

  it('turns counts and milliseconds into rates', () => {
    expect(perSecond(500, 250)).toBe(2000);
    expect(mbPerSecond(3_000_000, 1500)).toBe(2);
    expect(perSecond(1, 0)).toBeNaN();
  });

  it('gives NaN for a ratio with a missing or zero side', () => {
    expect(ratio(1, 4)).toBe(0.25);
    expect(ratio(undefined, 4)).toBeNaN();
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(Number.NaN, 2)).toBeNaN();
  });
});

describe('cpu profile summary', async () => {
  const { categoryOf, summarizeProfile } = await import('../bench/profile-summary.js');
  const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });

  it('puts frames into categories', () => {
    expect(categoryOf('(idle)', '')).toBe('idle (waiting on I/O)');
    expect(categoryOf('(garbage collector)', '')).toBe('garbage collector');
    expect(categoryOf('decode', 'file:///w/node_modules/kafkajs/src/protocol/decoder.js')).toBe('kafkajs');
    expect(categoryOf('x', 'file:///w/node_modules/pg-protocol/dist/parser.js')).toBe('pg driver');
    expect(categoryOf('poll', 'file:///w/hw/src/poller/table-poll.ts')).toBe('highwater src/poller/table-poll.ts');
    expect(categoryOf('write', 'file:///w/hw/consumers/postgres/writer.ts')).toBe('highwater consumers/postgres/writer.ts');
    expect(categoryOf('emit', 'node:events')).toBe('node internals (loader, buffers, streams)');
    expect(categoryOf('writev', '')).toBe('native built-ins (socket writes, buffer copies)');
  });

  it('adds self time per category and function, largest first', () => {
    const profile = {
      nodes: [{ id: 1, callFrame: frame('(idle)', '') }, { id: 2, callFrame: frame('decode', 'file:///n/node_modules/kafkajs/a.js') }, { id: 3, callFrame: frame('(root)', '') }],
      samples: [1, 2, 2, 1, 1],
      timeDeltas: [1000, 2000, 2000, 1000, 4000],
    };
    const s = summarizeProfile(profile);
    expect(s.totalMs).toBe(10);
    expect(s.categories[0]).toEqual({ name: 'idle (waiting on I/O)', ms: 6, share: 0.6 });
    expect(s.categories[1]).toMatchObject({ name: 'kafkajs', ms: 4 });
    expect(s.functions[1]!.name).toBe('decode a.js:1');
  });
});
