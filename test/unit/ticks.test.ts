/**
 * Ticks (100 ns since the Unix epoch, bigint) to and from ISO-8601 text, without ever passing through a JS Date's
 * milliseconds: datetime2(7) fractions, zone offsets, year 0001, dates before 1970 and values beyond 2^53.
 */
import { describe, expect, it } from 'vitest';
import {
  floorToMicrosecond, isoFromTicks, millisFromTicks, ticksFromIso, ticksFromMillis, ticksFromMinutes,
  TICKS_PER_MINUTE, TICKS_PER_SECOND,
} from '../../src/time/ticks.js';

/** Expected ticks computed independently: whole seconds from Date.UTC, the fraction added as an integer. */
function expected(year: number, month: number, day: number, h: number, mi: number, s: number, fraction7: bigint): bigint {
  const d = new Date(Date.UTC(2000, month - 1, day, h, mi, s));
  d.setUTCFullYear(year);
  return (BigInt(d.getTime()) / 1000n) * TICKS_PER_SECOND + fraction7;
}

describe('ticksFromIso', () => {
  it('reads 7-digit fractions exactly', () => {
    expect(ticksFromIso('2024-01-01T12:00:00.1234567Z')).toBe(expected(2024, 1, 1, 12, 0, 0, 1_234_567n));
    expect(ticksFromIso('2024-01-01T12:00:00.0000001Z') - ticksFromIso('2024-01-01T12:00:00Z')).toBe(1n);
    expect(ticksFromIso('2024-01-01T12:00:00.9999999Z') - ticksFromIso('2024-01-01T12:00:00Z')).toBe(9_999_999n);
  });

  it('pads shorter fractions (milliseconds, microseconds) on the right', () => {
    const base = ticksFromIso('2024-01-01T00:00:00Z');
    expect(ticksFromIso('2024-01-01T00:00:00.5Z') - base).toBe(5_000_000n);
    expect(ticksFromIso('2024-01-01T00:00:00.123Z') - base).toBe(1_230_000n);
    expect(ticksFromIso('2024-01-01T00:00:00.123456Z') - base).toBe(1_234_560n);
  });

  it('accepts 8 and 9 fractional digits when the digits past the 7th are zero', () => {
    expect(ticksFromIso('2024-01-01T00:00:00.12345670Z')).toBe(ticksFromIso('2024-01-01T00:00:00.1234567Z'));
    expect(ticksFromIso('2024-01-01T00:00:00.123456700Z')).toBe(ticksFromIso('2024-01-01T00:00:00.1234567Z'));
  });

  it('rejects digits finer than 100 ns rather than rounding them away', () => {
    expect(() => ticksFromIso('2024-01-01T00:00:00.12345678Z')).toThrow(/finer than 100 ns/);
    expect(() => ticksFromIso('2024-01-01T00:00:00.000000001Z')).toThrow(/finer than 100 ns/);
    expect(() => ticksFromIso('2024-01-01T00:00:00.123456709Z')).toThrow(RangeError);
  });

  it('applies zone offsets in every shape PostgreSQL and SQL Server print', () => {
    const utc = ticksFromIso('2024-06-01T10:00:00.1234567Z');
    expect(ticksFromIso('2024-06-01T12:00:00.1234567+02:00')).toBe(utc);
    expect(ticksFromIso('2024-06-01T12:00:00.1234567+0200')).toBe(utc);
    expect(ticksFromIso('2024-06-01T12:00:00.1234567+02')).toBe(utc);
    expect(ticksFromIso('2024-06-01T04:30:00.1234567-05:30')).toBe(utc);
    expect(ticksFromIso('2024-06-01 10:00:00.1234567+00')).toBe(utc);
    expect(ticksFromIso('2024-06-01 10:00:00.1234567')).toBe(utc);
    expect(ticksFromIso('  2024-06-01T10:00:00.1234567Z  ')).toBe(utc);
  });

  it('crosses a date boundary through an offset', () => {
    expect(ticksFromIso('2024-01-01T00:30:00+01:00')).toBe(ticksFromIso('2023-12-31T23:30:00Z'));
  });

  it('keeps year 0001 in year 1 (Date.UTC would map it to 1901)', () => {
    const ticks = ticksFromIso('0001-01-01T00:00:00Z');
    expect(ticks).toBe(-62_135_596_800n * TICKS_PER_SECOND);
    expect(ticksFromIso('0001-01-01T00:00:00.0000001Z') - ticks).toBe(1n);
  });

  it('reads dates before 1970 as negative ticks, with the fraction still added forward', () => {
    expect(ticksFromIso('1969-12-31T23:59:59.9999999Z')).toBe(-1n);
    expect(ticksFromIso('1969-12-31T23:59:59Z')).toBe(-TICKS_PER_SECOND);
    expect(ticksFromIso('1900-01-01T00:00:00Z')).toBe(-2_208_988_800n * TICKS_PER_SECOND);
  });

  it('reads values beyond 2^53 exactly', () => {
    const ticks = ticksFromIso('2026-01-01T12:00:00.1234567Z');
    expect(ticks > 2n ** 53n).toBe(true);
    expect(ticks).toBe(expected(2026, 1, 1, 12, 0, 0, 1_234_567n));
    expect(ticks % 10n).toBe(7n);
    expect(ticksFromIso('9999-12-31T23:59:59.9999999Z')).toBe(expected(9999, 12, 31, 23, 59, 59, 9_999_999n));
  });

  it.each(['', 'now', '2024-01-01', '2024-01-01T00:00', '2024/01/01 00:00:00', '2024-01-01T00:00:00.Z', '2024-01-01T00:00:00.1234567 UTC'])(
    'rejects %j',
    (text) => {
      expect(() => ticksFromIso(text)).toThrow(RangeError);
    },
  );
});

describe('isoFromTicks', () => {
  it('always prints 7 fractional digits and Z', () => {
    expect(isoFromTicks(0n)).toBe('1970-01-01T00:00:00.0000000Z');
    expect(isoFromTicks(1n)).toBe('1970-01-01T00:00:00.0000001Z');
  });

  it('prints negative ticks with the fraction counted forward from the whole second below', () => {
    expect(isoFromTicks(-1n)).toBe('1969-12-31T23:59:59.9999999Z');
    expect(isoFromTicks(-TICKS_PER_SECOND)).toBe('1969-12-31T23:59:59.0000000Z');
    expect(isoFromTicks(-TICKS_PER_SECOND - 1n)).toBe('1969-12-31T23:59:58.9999999Z');
  });

  it('prints 6 digits only for whole microseconds and refuses to drop a tick', () => {
    expect(isoFromTicks(ticksFromIso('2024-01-01T00:00:00.123456Z'), 6)).toBe('2024-01-01T00:00:00.123456Z');
    expect(() => isoFromTicks(ticksFromIso('2024-01-01T00:00:00.1234567Z'), 6)).toThrow(/finer than a microsecond/);
    expect(isoFromTicks(-10n, 6)).toBe('1969-12-31T23:59:59.999999Z');
  });

  it('formats each value on its own, whichever second the value before it had', () => {
    // The whole second is remembered from one call to the next: repeats, changes and returns must all be exact.
    const seconds = [5n, 5n, 6n, 5n, -1n, -1n, 0n].map((s) => s * TICKS_PER_SECOND + 42n);
    expect(seconds.map((t) => isoFromTicks(t))).toEqual([
      '1970-01-01T00:00:05.0000042Z', '1970-01-01T00:00:05.0000042Z', '1970-01-01T00:00:06.0000042Z', '1970-01-01T00:00:05.0000042Z',
      '1969-12-31T23:59:59.0000042Z', '1969-12-31T23:59:59.0000042Z', '1970-01-01T00:00:00.0000042Z',
    ]);
  });
});

describe('round trips', () => {
  it.each([
    '2024-01-01T12:00:00.1234567Z',
    '2024-02-29T23:59:59.9999999Z',
    '2026-01-01T00:00:00.0000001Z',
    '1970-01-01T00:00:00.0000000Z',
    '1969-07-20T20:17:40.0000001Z',
    '1900-01-01T00:00:00.0000000Z',
    '1753-01-01T00:00:00.0000000Z',
    '0001-01-01T00:00:00.0000000Z',
    '0001-01-01T00:00:00.0000001Z',
    '0099-12-31T23:59:59.9999999Z',
    '9999-12-31T23:59:59.9999999Z',
  ])('%s', (text) => {
    expect(isoFromTicks(ticksFromIso(text))).toBe(text);
  });

  it('ticks → text → ticks for values around 2^53 and beyond, and before 1970', () => {
    const values = [2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 17_672_472_001_234_567n, 2n ** 57n + 12_345n, -1n, -(2n ** 53n) - 7n, -621_355_968_000_000_000n];
    for (const ticks of values) expect(ticksFromIso(isoFromTicks(ticks))).toBe(ticks);
  });

  it('an offset form reads back to the same ticks as its UTC rendering', () => {
    const ticks = ticksFromIso('2024-03-31T01:59:59.9999999-07:00');
    expect(isoFromTicks(ticks)).toBe('2024-03-31T08:59:59.9999999Z');
    expect(ticksFromIso(isoFromTicks(ticks))).toBe(ticks);
  });
});

describe('helpers', () => {
  it('floors to a whole microsecond, also below zero', () => {
    expect(floorToMicrosecond(1_234_567n)).toBe(1_234_560n);
    expect(floorToMicrosecond(1_234_560n)).toBe(1_234_560n);
    expect(floorToMicrosecond(-1n)).toBe(-10n);
  });

  it('converts minutes and milliseconds', () => {
    expect(ticksFromMinutes(240)).toBe(240n * TICKS_PER_MINUTE);
    expect(ticksFromMinutes(0)).toBe(0n);
    expect(ticksFromMillis(1_700_000_000_123)).toBe(17_000_000_001_230_000n);
    expect(millisFromTicks(17_000_000_001_239_999n)).toBe(1_700_000_000_123);
    expect(millisFromTicks(-1n)).toBe(-1);
  });
});
