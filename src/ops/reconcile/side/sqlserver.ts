import type { SqlServerParam, SqlServerStatement, SqlServerType } from '../../../sql/statement.js';
import type { Cell, ContentScope, OrphanRow, RowsRequest, RowVersion, SideQueries, SummaryRequest } from './contract.js';
import { TOP_PREFIX_LENGTH } from './contract.js';

/**
 * Reconciliation statements for SQL Server (2017 or later: STRING_AGG; HASHBYTES over varbinary(max) needs 2016),
 * the part both sides share. Pure: each builder returns `{ text, values }` with named `@parameters` typed for mssql;
 * lists travel as one JSON parameter read with OPENJSON, compared in the BIN2 collation. Every statement reads one
 * derived table of row versions, which each side's engine folder builds (connectors/sqlserver/reconcile.ts,
 * consumers/sqlserver/reconcile.ts), as the PostgreSQL builders do.
 *
 * Digests need ticks inside the server; a side computes them exactly (the source from datetime2(7)). Should that
 * ever disagree with the text rows carry, the buckets concerned are pulled and compared row by row — slower, never
 * wrong. Content hashes come from `HASHBYTES('SHA2_256', content)` as lower-case hex, `-` for NULL content.
 */

export type { SqlServerParam, SqlServerStatement, SqlServerType };

export type Statement = SqlServerStatement;

export const BIN2 = 'Latin1_General_100_BIN2';

export class Params {
  readonly values: Record<string, SqlServerParam> = {};

  add(name: string, type: SqlServerType, value: unknown): string {
    if (name in this.values) throw new TypeError(`parameter @${name} added twice`);
    this.values[name] = { type, value };
    return `@${name}`;
  }
}

/**
 * A derived table of row versions: columns [key], [business_unit], [sort_key] (sorted in BIN2, byte order for ASCII),
 * [modified_on] (datetime2(7), source) or [ticks] (bigint, target), [sha].
 */
export interface Rows {
  readonly body: string;
  /** Ticks as varchar text, over the alias `d` of the derived table. */
  readonly ticksText: string;
  /** A row's ModifiedOn as the text its parser reads, over the alias `d`: ISO (source) or ticks (target). */
  readonly modifiedOnText: string;
  /** The latest ModifiedOn of a group as text, over the alias `r`: ISO (source) or ticks (target). */
  readonly latestText: string;
  /** The version column the summary carries from `d` to `r`: [modified_on] (source) or [ticks] (target). */
  readonly version: string;
  readonly hint: string;
}

/** A side's derived table, its parameters added to `p`; `extra` adds conditions on the key expression. */
export type RowsOf = (content: ContentScope, p: Params, extra: (key: string) => string[]) => Rows;

/** No content hashed: orphans need keys only. */
const NO_CONTENT: ContentScope = { kind: 'sample', fraction: 0, prefixes: [] };

/** A JSON array of strings as an IN list, in the binary collation. */
function jsonStrings(p: Params, name: string, values: readonly string[]): string {
  return `SELECT j.[value] COLLATE ${BIN2} FROM OPENJSON(${p.add(name, 'NVarChar', JSON.stringify(values))}) AS j`;
}

function sha256Hex(content: string): string {
  return `ISNULL(LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', ${content}), 2)), '-')`;
}

export function contentHash(content: string, key: string, scope: ContentScope, p: Params): string {
  if (scope.kind === 'all') return sha256Hex(content);
  if (scope.prefixes.length === 0) return 'CAST(NULL AS varchar(64))';
  return `CASE WHEN LEFT(${key}, ${TOP_PREFIX_LENGTH}) IN (${jsonStrings(p, 'sample', scope.prefixes)}) THEN ${sha256Hex(content)} END`;
}

function bucketFilter(key: string, prefixLength: number, prefixes: readonly string[] | null, p: Params): string[] {
  if (prefixes === null) return [];
  return [`LEFT(${key}, ${p.add('filterLength', 'Int', prefixLength)}) IN (${jsonStrings(p, 'buckets', prefixes)})`];
}

export function where(conditions: readonly string[]): string {
  return conditions.length === 0 ? '' : `\n  WHERE ${conditions.join('\n    AND ')}`;
}

function summaryOver(rows: Rows, prefixLength: number, p: Params): string {
  const length = p.add('prefixLength', 'Int', prefixLength);
  return `SELECT r.[business_unit], r.[bucket], COUNT_BIG(*) AS [rows], ${rows.latestText} AS [latest],
  LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', STRING_AGG(r.[line], ',') WITHIN GROUP (ORDER BY r.[sort_key] COLLATE ${BIN2})), 2)) AS [digest]
FROM (
  SELECT d.[business_unit], d.[sort_key], d.${rows.version}, LEFT(d.[key], ${length}) AS [bucket],
    CONVERT(varchar(max), d.[key] + ':' + ${rows.ticksText} + ISNULL(':' + d.[sha], '')) AS [line]
  FROM (${rows.body}) AS d
) AS r
GROUP BY r.[business_unit], r.[bucket]${rows.hint}`;
}

function rowsOver(rows: Rows): string {
  return `SELECT d.[key], d.[business_unit], ${rows.modifiedOnText} AS [modified_on], d.[sha]\nFROM (${rows.body}) AS d${rows.hint}`;
}

function orphansOver(rows: Rows, examples: number, p: Params): string {
  return `SELECT o.[business_unit], o.[key], o.[total] FROM (
  SELECT d.[business_unit], d.[key], COUNT_BIG(*) OVER (PARTITION BY d.[business_unit]) AS [total],
    ROW_NUMBER() OVER (PARTITION BY d.[business_unit] ORDER BY d.[sort_key] COLLATE ${BIN2}) AS [rn]
  FROM (${rows.body}) AS d
) AS o
WHERE o.[rn] <= ${p.add('examples', 'Int', Math.max(1, examples))}
ORDER BY o.[business_unit], o.[key]${rows.hint}`;
}

export function summaryQuery(rowsOf: RowsOf, req: SummaryRequest): Statement {
  const p = new Params();
  const rows = rowsOf(req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows, req.prefixLength, p), values: p.values };
}

export function rowsQuery(rowsOf: RowsOf, req: RowsRequest): Statement {
  const p = new Params();
  const rows = rowsOf(req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows), values: p.values };
}

/** Rows of the side whose parent is missing: `parentMissing` are the side's conditions for that. */
export function orphansQuery(rowsOf: RowsOf, parentMissing: readonly string[], examples: number): Statement {
  const p = new Params();
  const rows = rowsOf(NO_CONTENT, p, () => [...parentMissing]);
  return { text: orphansOver(rows, examples, p), values: p.values };
}

// ---------------------------------------------------------------------------------------------------- parsing

const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

function cellParser(latest: (text: string) => bigint): (raw: Record<string, unknown>) => Cell {
  return (raw) => ({
    businessUnit: text(raw.business_unit),
    bucket: String(raw.bucket),
    rows: Number(raw.rows),
    latest: raw.latest === null || raw.latest === undefined ? null : latest(String(raw.latest)),
    digest: String(raw.digest),
  });
}

function rowParser(ticks: (text: string) => bigint): (raw: Record<string, unknown>) => RowVersion {
  return (raw) => ({ key: String(raw.key), businessUnit: text(raw.business_unit), modifiedOn: ticks(String(raw.modified_on)), contentSha256: text(raw.sha) });
}

export function toOrphan(raw: Record<string, unknown>): OrphanRow {
  return { businessUnit: text(raw.business_unit), key: String(raw.key), total: Number(raw.total) };
}

/** A side's queries over its derived table; `ticksOf` reads the side's ModifiedOn text (ISO or ticks). */
export function sideQueries(describe: string, rowsOf: RowsOf, parentMissing: readonly string[], ticksOf: (text: string) => bigint): SideQueries<Statement> {
  return {
    describe,
    summary: (r) => summaryQuery(rowsOf, r),
    rows: (r) => rowsQuery(rowsOf, r),
    orphans: (n) => orphansQuery(rowsOf, parentMissing, n),
    toCell: cellParser(ticksOf),
    toRow: rowParser(ticksOf),
    toOrphan,
  };
}
