import { describe, expect, it } from 'vitest';
import { ANALYZE_GROWTH_FRACTION, ANALYZE_MIN_GROWTH, StatisticsPolicy } from '../../src/db/statistics.js';

describe('StatisticsPolicy', () => {
  it('asks for the first analyze once a table has grown by the minimum, counting batches together', () => {
    const policy = new StatisticsPolicy();
    expect(policy.wrote('t', ANALYZE_MIN_GROWTH - 1)).toBe(false);
    expect(policy.wrote('t', 1)).toBe(true);
  });

  it('asks again only after growth by a fraction of the size at the last analyze, so a load analyzes logarithmically often', () => {
    const policy = new StatisticsPolicy();
    let analyzes = 0;
    for (let written = 0; written < 1_000_000; written += 500) {
      if (policy.wrote('t', 500)) {
        analyzes += 1;
        policy.analyzed('t');
      }
    }
    // From 2,000 rows to 1,000,000 growing by half each time: about log1.5(500) + 1 analyzes, not one per batch.
    expect(analyzes).toBeGreaterThan(10);
    expect(analyzes).toBeLessThan(Math.ceil(Math.log(1_000_000 / ANALYZE_MIN_GROWTH) / Math.log(1 + ANALYZE_GROWTH_FRACTION)) + 3);
  });

  it('keeps tables apart, and an analyze of one does not reset another', () => {
    const policy = new StatisticsPolicy();
    expect(policy.wrote('a', ANALYZE_MIN_GROWTH)).toBe(true);
    policy.analyzed('a');
    expect(policy.wrote('b', ANALYZE_MIN_GROWTH - 1)).toBe(false);
    expect(policy.wrote('a', ANALYZE_MIN_GROWTH - 1)).toBe(false);
    expect(policy.wrote('b', 1)).toBe(true);
    policy.analyzed('never-written');
    expect(policy.wrote('never-written', 1)).toBe(false);
  });

  it('asks again after a failed analyze that was not recorded as done', () => {
    const policy = new StatisticsPolicy();
    expect(policy.wrote('t', ANALYZE_MIN_GROWTH)).toBe(true);
    expect(policy.wrote('t', 1)).toBe(true);
  });

  it('runs the analyze only when due, and keeps the table due when the analyze fails', async () => {
    const policy = new StatisticsPolicy();
    const runs: string[] = [];
    await policy.analyzeIfDue('t', ANALYZE_MIN_GROWTH - 1, async () => runs.push('early'));
    expect(runs).toEqual([]);
    await policy.analyzeIfDue('t', 1, () => Promise.reject(new Error('lock timeout')));
    await policy.analyzeIfDue('t', 1, async () => runs.push('retried'));
    expect(runs).toEqual(['retried']);
    await policy.analyzeIfDue('t', 1, async () => runs.push('too soon'));
    expect(runs).toEqual(['retried']);
  });
});
