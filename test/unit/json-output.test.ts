import { describe, expect, it } from 'vitest';
import { isoFromDate, jsonDocument } from '../../src/cli/json-output.js';
import { ticksFromIso } from '../../src/time/ticks.js';

describe('--json documents', () => {
  it('writes every time in one format: ISO 8601, UTC, 7 fractional digits', () => {
    const doc = JSON.parse(jsonDocument({
      highWater: ticksFromIso('2026-11-29T18:50:34.1954887Z'),
      window: { start: ticksFromIso('1900-01-01T00:00:00Z'), end: 17959782341954880n },
      startedAt: new Date('2026-11-29T18:50:33.923Z'),
      consistentAsOf: [{ watermark: null }],
    })) as Record<string, unknown>;
    expect(doc).toEqual({
      highWater: '2026-11-29T18:50:34.1954887Z',
      window: { start: '1900-01-01T00:00:00.0000000Z', end: '2026-11-29T18:50:34.1954880Z' },
      startedAt: '2026-11-29T18:50:33.9230000Z',
      consistentAsOf: [{ watermark: null }],
    });
    const times = JSON.stringify(doc).match(/"\d{4}-[^"]*"/g)!;
    for (const t of times) expect(t).toMatch(/^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"$/);
  });

  it('keeps bigints that are not points in time (offsets, lag) as decimal strings', () => {
    expect(JSON.parse(jsonDocument({ nextOffset: 42n, lag: 0n }))).toEqual({ nextOffset: '42', lag: '0' });
  });

  it('pads a Date to the width of ticks', () => {
    expect(isoFromDate(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)))).toBe('2026-01-02T03:04:05.0060000Z');
  });
});
