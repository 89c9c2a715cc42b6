/**
 * Window maths of the poller (src/poll/window.ts): pure functions of the source clock, the source's oldest open
 * transaction and the stored high-watermark. Nothing here may depend on the poller host's clock.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ancestorPaths, hierarchyDepth, nextHighWater, planWindow, type WindowInputs } from '../../src/poll/window.js';
import { ticksFromIso, TICKS_PER_MINUTE } from '../../src/time/ticks.js';

const NOW = ticksFromIso('2026-03-01T12:00:00.1234567Z');
const BUFFER = 240n * TICKS_PER_MINUTE;
const BASELINE = ticksFromIso('1900-01-01T00:00:00Z');

function inputs(over: Partial<WindowInputs> = {}): WindowInputs {
  return { sourceNow: NOW, buffer: BUFFER, highWater: null, baseline: BASELINE, oldestOpenTransaction: null, ...over };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('planWindow', () => {
  it('starts the first run at the baseline and ends a buffer before the source clock', () => {
    expect(planWindow(inputs())).toEqual({ window: { start: BASELINE, end: NOW - BUFFER }, clampedBy: null, heldBack: null, empty: false });
  });

  it('starts a later run one buffer before the high-watermark, so consecutive windows overlap by the buffer', () => {
    const highWater = NOW - BUFFER - 30n * TICKS_PER_MINUTE;
    const planned = planWindow(inputs({ highWater }));
    expect(planned.window).toEqual({ start: highWater - BUFFER, end: NOW - BUFFER });
    expect(planned.window.end - highWater).toBe(30n * TICKS_PER_MINUTE);
    expect(planned.empty).toBe(false);
  });

  it('ignores the baseline once a high-watermark exists, even a high-watermark before the baseline', () => {
    const highWater = BASELINE - 10n;
    expect(planWindow(inputs({ highWater })).window.start).toBe(highWater - BUFFER);
  });

  it('with a zero buffer, reads exactly (highWater, sourceNow]', () => {
    const highWater = NOW - 5n;
    expect(planWindow(inputs({ buffer: 0n, highWater })).window).toEqual({ start: highWater, end: NOW });
  });

  it('clamps the end to one tick before the oldest open transaction started', () => {
    const oldest = NOW - BUFFER - 7n * TICKS_PER_MINUTE;
    const planned = planWindow(inputs({ oldestOpenTransaction: oldest }));
    expect(planned.window.end).toBe(oldest - 1n);
    expect(planned.clampedBy).toBe('oldest-open-transaction');
    expect(planned.empty).toBe(false);
    // The transaction is 4 h 7 min old; the window ends 7 min (and one tick) before sourceNow − buffer would.
    expect(planned.heldBack!.transactionAgeSeconds).toBeCloseTo(247 * 60, 6);
    expect(planned.heldBack!.heldBackSeconds).toBeCloseTo(7 * 60 + 1e-7, 6);
  });

  it('does not clamp when the oldest open transaction started after the buffered end', () => {
    const planned = planWindow(inputs({ oldestOpenTransaction: NOW - 1n }));
    expect(planned.window.end).toBe(NOW - BUFFER);
    expect(planned.clampedBy).toBeNull();
    expect(planned.heldBack).toBeNull();
  });

  it('does not clamp when the open transaction started exactly one tick after the buffered end (end is inclusive)', () => {
    const planned = planWindow(inputs({ oldestOpenTransaction: NOW - BUFFER + 1n }));
    expect(planned.window.end).toBe(NOW - BUFFER);
    expect(planned.clampedBy).toBeNull();
  });

  it('clamps when the open transaction started exactly at the buffered end', () => {
    const planned = planWindow(inputs({ oldestOpenTransaction: NOW - BUFFER }));
    expect(planned.window.end).toBe(NOW - BUFFER - 1n);
    expect(planned.clampedBy).toBe('oldest-open-transaction');
  });

  it('reports an empty window when the end does not pass the start', () => {
    const highWater = NOW;
    const planned = planWindow(inputs({ buffer: 0n, highWater }));
    expect(planned.window).toEqual({ start: NOW, end: NOW });
    expect(planned.empty).toBe(true);
  });

  it('reports an empty window when an open transaction older than the start holds the end back', () => {
    const highWater = NOW - BUFFER;
    const oldest = highWater - BUFFER - 1n;
    const planned = planWindow(inputs({ highWater, oldestOpenTransaction: oldest }));
    expect(planned.window.end).toBeLessThanOrEqual(planned.window.start);
    expect(planned.empty).toBe(true);
    expect(planned.clampedBy).toBe('oldest-open-transaction');
  });

  it('reports an empty window when the source clock is behind the high-watermark (clock moved back)', () => {
    const planned = planWindow(inputs({ buffer: 0n, highWater: NOW + TICKS_PER_MINUTE }));
    expect(planned.empty).toBe(true);
  });

  it('handles ticks beyond 2^53 and before 1970 exactly', () => {
    const now = 2n ** 60n + 3n;
    expect(planWindow(inputs({ sourceNow: now, buffer: 1n, highWater: now - 2n })).window).toEqual({ start: now - 3n, end: now - 1n });
    const pre1970 = ticksFromIso('1950-06-01T00:00:00.0000001Z');
    expect(planWindow(inputs({ sourceNow: pre1970, buffer: 0n, baseline: BASELINE })).window).toEqual({ start: BASELINE, end: pre1970 });
  });

  it('never uses the host clock: the same inputs give the same window whatever the host time', () => {
    const withHighWater = inputs({ highWater: NOW - BUFFER - 1000n, oldestOpenTransaction: NOW - BUFFER - 10n });
    const before = [planWindow(inputs()), planWindow(withHighWater)];
    vi.useFakeTimers();
    for (const hostTime of ['1999-12-31T23:59:59Z', '2026-03-01T11:00:00Z', '2090-01-01T00:00:00Z']) {
      vi.setSystemTime(new Date(hostTime));
      expect([planWindow(inputs()), planWindow(withHighWater)]).toEqual(before);
    }
  });
});

describe('nextHighWater', () => {
  it('takes the window end on the first window', () => {
    expect(nextHighWater(null, NOW)).toBe(NOW);
  });

  it('moves forward to a later window end', () => {
    expect(nextHighWater(NOW, NOW + 1n)).toBe(NOW + 1n);
  });

  it('never moves backwards (an earlier or equal end keeps the current high-watermark)', () => {
    expect(nextHighWater(NOW, NOW - 1n)).toBe(NOW);
    expect(nextHighWater(NOW, NOW)).toBe(NOW);
    expect(nextHighWater(NOW, ticksFromIso('1900-01-01T00:00:00Z'))).toBe(NOW);
  });

  it('is monotonic over any sequence of window ends', () => {
    const ends = [5n, 3n, 9n, 9n, 1n, 12n, -4n, 11n];
    let hw: bigint | null = null;
    const seen: bigint[] = [];
    for (const end of ends) {
      hw = nextHighWater(hw, end);
      seen.push(hw);
    }
    expect(seen).toEqual([5n, 5n, 9n, 9n, 9n, 12n, 12n, 12n]);
  });
});

describe('hierarchyDepth', () => {
  it.each([
    [null, 0],
    ['', 0],
    ['/', 0],
    ['/1/', 1],
    ['/1/2/', 2],
    ['/1/2/3/', 3],
    ['/12/345/6789/1/', 4],
    ['/1.5/2/', 2],
  ])('%j has depth %i', (path, depth) => {
    expect(hierarchyDepth(path)).toBe(depth);
  });

  it('sorts parents before their children', () => {
    const paths = ['/1/2/3/', '/1/', '/1/2/', '/4/5/'];
    expect([...paths].sort((a, b) => hierarchyDepth(a) - hierarchyDepth(b))).toEqual(['/1/', '/1/2/', '/4/5/', '/1/2/3/']);
  });
});

describe('ancestorPaths', () => {
  it('names the prefixes of a hierarchyid path, nearest first, and nothing for other shapes', () => {
    expect(ancestorPaths('/1/2/3/')).toEqual(['/1/2/', '/1/']);
    expect(ancestorPaths('/7/')).toEqual([]);
    expect(ancestorPaths('/1.5/2/')).toEqual(['/1.5/']);
    expect(ancestorPaths(null)).toEqual([]);
    expect(ancestorPaths('folder/file')).toEqual([]);
  });
});
