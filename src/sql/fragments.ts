/**
 * SQL fragments that both a source connector and the engine-neutral parts (reconcile, digests) need, kept here so
 * that neither imports the other's folder. Pure text; no values pass through them.
 */

/** PostgreSQL: a timestamp as ticks (10^7 per second since the Unix epoch), as text. */
export function pgTicksText(column: string): string {
  return `(extract(epoch from ${column}) * 10000000)::bigint::text`;
}

/** `OPTION (MAXDOP n)`. n is inlined: a query hint takes no parameter, and n is checked to be an integer 0..64 here. */
export function maxdopHint(maxdop: number | null): string {
  if (maxdop === null) return '';
  if (!Number.isInteger(maxdop) || maxdop < 0 || maxdop > 64)
    throw new TypeError(`invalid maxdop ${String(maxdop)}: use an integer from 0 to 64`);
  return `\nOPTION (MAXDOP ${maxdop})`;
}
