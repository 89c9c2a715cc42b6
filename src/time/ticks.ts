import type { Ticks } from '../contract.js';

/**
 * Lossless conversions between database timestamps and ticks (100 ns since the Unix epoch, UTC).
 * Everything here is integer arithmetic on bigint and strings: a JS `Date` holds milliseconds only and would
 * silently drop the last four digits of a SQL Server `datetime2(7)`.
 */

export const TICKS_PER_MICROSECOND = 10n;
export const TICKS_PER_MILLISECOND = 10_000n;
export const TICKS_PER_SECOND = 10_000_000n;
export const TICKS_PER_MINUTE = 60n * TICKS_PER_SECOND;

// YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH[:MM]] — the shapes PostgreSQL and SQL Server print.
const ISO = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/;

/** Parses an ISO-8601 timestamp with up to 9 fractional digits; digits past the 7th must be zero (sub-tick). */
export function ticksFromIso(text: string): Ticks {
  const m = ISO.exec(text.trim());
  if (!m) throw new RangeError(`not a timestamp: ${JSON.stringify(text)}`);
  const [, y, mo, d, h, mi, s, frac = '', zone = 'Z'] = m;
  const wholeSeconds = BigInt(utcMillis(+y!, +mo! - 1, +d!, +h!, +mi!, +s!)) / 1000n;
  if (frac.length > 7 && /[1-9]/.test(frac.slice(7))) {
    throw new RangeError(`timestamp finer than 100 ns: ${JSON.stringify(text)}`);
  }
  const fraction = BigInt(frac.slice(0, 7).padEnd(7, '0'));
  return wholeSeconds * TICKS_PER_SECOND + fraction - zoneOffsetTicks(zone);
}

/** Date.UTC maps years 0–99 to 1900–1999; SQL Server's sentinel 0001-01-01 must stay in year 1. */
function utcMillis(year: number, month: number, day: number, hour: number, minute: number, second: number): number {
  const d = new Date(Date.UTC(2000, month, day, hour, minute, second));
  d.setUTCFullYear(year);
  return d.getTime();
}

function zoneOffsetTicks(zone: string): Ticks {
  if (zone === 'Z') return 0n;
  const sign = zone.startsWith('-') ? -1n : 1n;
  const digits = zone.slice(1).replace(':', '');
  const hours = BigInt(digits.slice(0, 2));
  const minutes = BigInt(digits.slice(2, 4) || '0');
  return sign * (hours * 60n + minutes) * TICKS_PER_MINUTE;
}

/** Formats ticks as `YYYY-MM-DDTHH:MM:SS.fffffffZ` (7 fractional digits: exact for every tick value). */
export function isoFromTicks(ticks: Ticks, fractionDigits: 6 | 7 = 7): string {
  const seconds = floorDiv(ticks, TICKS_PER_SECOND);
  const fraction = ticks - seconds * TICKS_PER_SECOND;
  if (fractionDigits === 6 && fraction % TICKS_PER_MICROSECOND !== 0n) {
    throw new RangeError(`ticks ${ticks} are finer than a microsecond`);
  }
  const digits = fraction.toString().padStart(7, '0').slice(0, fractionDigits);
  return `${wholeSecondsIso(seconds)}.${digits}Z`;
}

/** The last whole second formatted (`YYYY-MM-DDTHH:MM:SS`): rows of a page share their seconds more often than not. */
let lastSeconds: bigint | undefined;
let lastSecondsIso = '';

/** Whole seconds since the epoch as `YYYY-MM-DDTHH:MM:SS` (a Date of whole seconds: nothing below a second is lost). */
function wholeSecondsIso(seconds: bigint): string {
  if (seconds !== lastSeconds) {
    lastSecondsIso = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
    lastSeconds = seconds;
  }
  return lastSecondsIso;
}

/** Rounds ticks down to a whole microsecond, for databases (PostgreSQL) that cannot hold finer values. */
export function floorToMicrosecond(ticks: Ticks): Ticks {
  return floorDiv(ticks, TICKS_PER_MICROSECOND) * TICKS_PER_MICROSECOND;
}

/** Minutes (fractions allowed, e.g. a 0.5-minute buffer in tests) → ticks, to the millisecond. */
export function ticksFromMinutes(minutes: number): Ticks {
  return BigInt(Math.round(minutes * 60_000)) * TICKS_PER_MILLISECOND;
}

/** Milliseconds since the epoch → ticks: for host-clock values (lease expiry, metrics), never for ModifiedOn. */
export function ticksFromMillis(millis: number): Ticks {
  return BigInt(Math.trunc(millis)) * TICKS_PER_MILLISECOND;
}

/** Ticks → milliseconds (truncating): for display and ages only. */
export function millisFromTicks(ticks: Ticks): number {
  return Number(floorDiv(ticks, TICKS_PER_MILLISECOND));
}

export function maxTicks(a: Ticks, b: Ticks): Ticks {
  return a > b ? a : b;
}

export function minTicks(a: Ticks, b: Ticks): Ticks {
  return a < b ? a : b;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && (a < 0n) !== (b < 0n) ? q - 1n : q;
}
