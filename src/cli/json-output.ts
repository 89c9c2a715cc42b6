import { isoFromTicks } from '../time/ticks.js';

/**
 * The one JSON document a command prints with --json. Times use one format: ISO 8601 in UTC with 7 fractional
 * digits, the resolution of the source's ticks (datetime2(7)); the store's own timestamps (JS Dates, milliseconds)
 * are padded to the same width, so a script parses every time in a document the same way.
 *
 * Points in source time are bigint ticks in memory (src/time/ticks.ts); they are recognised by field name, because
 * other bigints (Kafka offsets, lag) are counts and stay decimal strings.
 */
export const TICK_FIELDS: ReadonlySet<string> = new Set([
  'highWater', 'start', 'end', 'watermark', 'modifiedOn', 'observed', 'maxSentModifiedOn', 'windowStart', 'windowEnd', 'sourceNow', 'lastModifiedOn',
]);

export function isoFromDate(date: Date): string {
  return `${date.toISOString().slice(0, -1)}0000Z`;
}

export function jsonDocument(value: unknown): string {
  return JSON.stringify(value, function replacer(this: Record<string, unknown>, key: string, v: unknown) {
    // JSON.stringify has already called Date#toJSON on `v`; the holder still has the Date itself.
    const original = this[key];
    if (original instanceof Date) return Number.isNaN(original.getTime()) ? null : isoFromDate(original);
    if (typeof v === 'bigint') return TICK_FIELDS.has(key) ? isoFromTicks(v) : v.toString();
    return v;
  }, 2);
}
