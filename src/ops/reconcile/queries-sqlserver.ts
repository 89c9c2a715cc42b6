import type { SqlServerParam, SqlServerStatement, SqlServerType } from '../../sql/statement.js';
import { maxdopHint } from '../../sql/fragments.js';
import type { ScopeFilter, SourceTableSpec } from '../../poll/source/connector.js';
import { qualified, quoteMssql } from '../../sql/ident.js';
import { ticksFromIso } from '../../time/ticks.js';
import type { Cell, ContentScope, OrphanRow, RowsRequest, RowVersion, SideQueries, SummaryRequest } from './reconcile.js';
import { TOP_PREFIX_LENGTH } from './reconcile.js';

/**
 * Reconciliation statements for SQL Server (2017 or later: STRING_AGG; HASHBYTES over varbinary(max) needs 2016),
 * source and target. Pure: each builder returns `{ text, values }` with named `@parameters` typed for mssql; lists
 * travel as one JSON parameter read with OPENJSON, compared in the BIN2 collation; identifiers pass through
 * quoteMssql. Every statement reads one derived table of row versions, as the PostgreSQL builders do.
 *
 * The source is read without READCOMMITTEDLOCK: under read-committed snapshot each statement then sees one
 * committed state of the table, which is what a comparison wants (the poller, which must wait for writers in
 * flight, reads with the hint). Keys are the connector's canonical text (`LOWER(CONVERT(varchar(36), key))`).
 * ModifiedOn leaves as the connector's exact text (`CONVERT(varchar(27), CONVERT(datetime2(7), col), 126)`) in row
 * lists and latest values; digests need ticks inside the server and compute them exactly from datetime2(7):
 * `DATEDIFF_BIG(MICROSECOND, 1970-01-01, x) * 10 + DATEPART(NANOSECOND, x) / 100 % 10`. Should that ever disagree
 * with the text, the buckets concerned are pulled and compared row by row — slower, never wrong.
 * Content hashes come from `HASHBYTES('SHA2_256', content)` as lower-case hex, `-` for NULL content.
 */

export type { SqlServerParam, SqlServerStatement, SqlServerType };

export type Statement = SqlServerStatement;

export interface TargetTableRef {
  readonly schema: string;
  readonly table: string;
}

const BIN2 = 'Latin1_General_100_BIN2';

class Params {
  readonly values: Record<string, SqlServerParam> = {};

  add(name: string, type: SqlServerType, value: unknown): string {
    if (name in this.values) throw new TypeError(`parameter @${name} added twice`);
    this.values[name] = { type, value };
    return `@${name}`;
  }
}

/** A JSON array of strings as an IN list, in the binary collation. */
function jsonStrings(p: Params, name: string, values: readonly string[]): string {
  return `SELECT j.[value] COLLATE ${BIN2} FROM OPENJSON(${p.add(name, 'NVarChar', JSON.stringify(values))}) AS j`;
}

function sha256Hex(content: string): string {
  return `ISNULL(LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', ${content}), 2)), '-')`;
}

function contentHash(content: string, key: string, scope: ContentScope, p: Params): string {
  if (scope.kind === 'all') return sha256Hex(content);
  if (scope.prefixes.length === 0) return 'CAST(NULL AS varchar(64))';
  return `CASE WHEN LEFT(${key}, ${TOP_PREFIX_LENGTH}) IN (${jsonStrings(p, 'sample', scope.prefixes)}) THEN ${sha256Hex(content)} END`;
}

function bucketFilter(key: string, prefixLength: number, prefixes: readonly string[] | null, p: Params): string[] {
  if (prefixes === null) return [];
  return [`LEFT(${key}, ${p.add('filterLength', 'Int', prefixLength)}) IN (${jsonStrings(p, 'buckets', prefixes)})`];
}

function where(conditions: readonly string[]): string {
  return conditions.length === 0 ? '' : `\n  WHERE ${conditions.join('\n    AND ')}`;
}

/**
 * A derived table of row versions: columns [key], [business_unit], [sort_key] (sorted in BIN2, byte order for ASCII),
 * [modified_on] (datetime2(7), source) or [ticks] (bigint, target), [sha].
 */
interface Rows {
  readonly body: string;
  /** Ticks as varchar text, over the alias `d` of the derived table. */
  readonly ticksText: string;
  /** The latest ModifiedOn of a group as text, over the alias `r`: ISO (source) or ticks (target). */
  readonly latestText: string;
  /** The version column the summary carries from `d` to `r`: [modified_on] (source) or [ticks] (target). */
  readonly version: string;
  readonly hint: string;
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

function rowsOver(rows: Rows, modifiedOn: string): string {
  return `SELECT d.[key], d.[business_unit], ${modifiedOn} AS [modified_on], d.[sha]\nFROM (${rows.body}) AS d${rows.hint}`;
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

// ---------------------------------------------------------------------------------------------------- source

/** The poller's conditions: BU scope, the BU table (EXISTS), exclusions (NOT EXISTS: a non-GUID excluded key is NULL). */
function scopeConditions(spec: SourceTableSpec, scope: ScopeFilter, p: Params): string[] {
  const conditions: string[] = [];
  const bu = spec.businessUnit;
  if (bu && scope.businessUnit !== null) conditions.push(`m.${quoteMssql(bu.column)} = ${p.add('scopeBusinessUnit', 'NVarChar', scope.businessUnit)}`);
  if (bu?.mapTable) {
    const map = bu.mapTable;
    conditions.push(`EXISTS (SELECT 1 FROM ${qualified(quoteMssql, map.schema, map.table)} AS m_bu WHERE m_bu.${quoteMssql(map.idColumn)} = m.${quoteMssql(bu.column)})`);
  }
  if (scope.excludedKeys.length > 0) {
    const excluded = p.add('excluded', 'NVarChar', JSON.stringify(scope.excludedKeys));
    conditions.push(`NOT EXISTS (SELECT 1 FROM OPENJSON(${excluded}) AS b_x WHERE TRY_CONVERT(uniqueidentifier, b_x.[value]) = b.${quoteMssql(spec.keyColumn)})`);
  }
  return conditions;
}

const SOURCE_TICKS = (x: string): string =>
  `CONVERT(varchar(20), DATEDIFF_BIG(MICROSECOND, CONVERT(datetime2(7), '1970-01-01T00:00:00', 126), ${x}) * 10 + DATEPART(NANOSECOND, ${x}) / 100 % 10)`;
const ISO_TEXT = (x: string): string => `CONVERT(varchar(27), ${x}, 126)`;

function sourceRows(spec: SourceTableSpec, scope: ScopeFilter, content: ContentScope, p: Params, extra: (key: string) => string[]): Rows {
  const key = `LOWER(CONVERT(varchar(36), b.${quoteMssql(spec.keyColumn)}))`;
  const bu = spec.businessUnit ? `LOWER(CONVERT(nvarchar(100), m.${quoteMssql(spec.businessUnit.column)}))` : 'CAST(NULL AS nvarchar(100))';
  const sha = contentHash(`b.${quoteMssql(spec.columns.content)}`, key, content, p);
  const from = `${qualified(quoteMssql, spec.blob.schema, spec.blob.table)} AS b
  INNER JOIN ${qualified(quoteMssql, spec.metadata.schema, spec.metadata.table)} AS m ON m.${quoteMssql(spec.metadata.joinColumn)} = b.${quoteMssql(spec.keyColumn)}`;
  const conditions = [...scopeConditions(spec, scope, p), ...extra(key)];
  const select = `SELECT ${key} AS [key], ${bu} AS [business_unit], ${key} AS [sort_key], CONVERT(datetime2(7), m.${quoteMssql(spec.modifiedOnColumn)}) AS [modified_on], ${sha} AS [sha]`;
  return {
    body: `${select}\n  FROM ${from}${where(conditions)}`,
    ticksText: SOURCE_TICKS('d.[modified_on]'),
    latestText: ISO_TEXT('MAX(r.[modified_on])'),
    version: '[modified_on]',
    hint: maxdopHint(spec.maxdop),
  };
}

export function sourceSummaryQuery(spec: SourceTableSpec, scope: ScopeFilter, req: SummaryRequest): SqlServerStatement {
  const p = new Params();
  const rows = sourceRows(spec, scope, req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows, req.prefixLength, p), values: p.values };
}

export function sourceRowsQuery(spec: SourceTableSpec, scope: ScopeFilter, req: RowsRequest): SqlServerStatement {
  const p = new Params();
  const rows = sourceRows(spec, scope, req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows, ISO_TEXT('d.[modified_on]')), values: p.values };
}

/** Source rows in scope whose parent path matches no row of the blob table (any BU). */
export function sourceOrphansQuery(spec: SourceTableSpec, scope: ScopeFilter, examples: number): SqlServerStatement {
  const p = new Params();
  const parent = `b.${quoteMssql(spec.columns.parentPathLocator)}`;
  const parentMissing = `NOT EXISTS (SELECT 1 FROM ${qualified(quoteMssql, spec.blob.schema, spec.blob.table)} AS pb WHERE pb.${quoteMssql(spec.columns.pathLocator)} = ${parent})`;
  const rows = sourceRows(spec, scope, { kind: 'sample', fraction: 0, prefixes: [] }, p, () => [`${parent} IS NOT NULL`, parentMissing]);
  return { text: orphansOver(rows, examples, p), values: p.values };
}

// ---------------------------------------------------------------------------------------------------- target

function targetRows(t: TargetTableRef, tenant: string, content: ContentScope, p: Params, extra: (key: string) => string[]): Rows {
  const key = 't.[key]';
  const sha = contentHash('t.[content]', key, content, p);
  const conditions = [`t.[tenant] = ${p.add('tenant', 'NVarChar', tenant)}`, ...extra(key)];
  const select = `SELECT t.[key], t.[business_unit], t.[key] AS [sort_key], t.[modified_on_ticks] AS [ticks], ${sha} AS [sha]`;
  return {
    body: `${select}\n  FROM ${qualified(quoteMssql, t.schema, t.table)} AS t${where(conditions)}`,
    ticksText: 'CONVERT(varchar(20), d.[ticks])',
    latestText: 'CONVERT(varchar(20), MAX(r.[ticks]))',
    version: '[ticks]',
    hint: '',
  };
}

export function targetSummaryQuery(t: TargetTableRef, tenant: string, req: SummaryRequest): SqlServerStatement {
  const p = new Params();
  const rows = targetRows(t, tenant, req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows, req.prefixLength, p), values: p.values };
}

export function targetRowsQuery(t: TargetTableRef, tenant: string, req: RowsRequest): SqlServerStatement {
  const p = new Params();
  const rows = targetRows(t, tenant, req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows, 'CONVERT(varchar(20), d.[ticks])'), values: p.values };
}

/** Target rows of the tenant whose parent_path_locator matches no path_locator of the same tenant. */
export function targetOrphansQuery(t: TargetTableRef, tenant: string, examples: number): SqlServerStatement {
  const p = new Params();
  const table = qualified(quoteMssql, t.schema, t.table);
  const rows = targetRows(t, tenant, { kind: 'sample', fraction: 0, prefixes: [] }, p, () => [
    't.[parent_path_locator] IS NOT NULL',
    `NOT EXISTS (SELECT 1 FROM ${table} AS pt WHERE pt.[tenant] = t.[tenant] AND pt.[path_locator] = t.[parent_path_locator])`,
  ]);
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

export function sqlServerSourceQueries(spec: SourceTableSpec, scope: ScopeFilter): SideQueries<SqlServerStatement> {
  return {
    describe: `SQL Server source ${spec.blob.schema}.${spec.blob.table}`,
    summary: (r) => sourceSummaryQuery(spec, scope, r),
    rows: (r) => sourceRowsQuery(spec, scope, r),
    orphans: (n) => sourceOrphansQuery(spec, scope, n),
    toCell: cellParser(ticksFromIso),
    toRow: rowParser(ticksFromIso),
    toOrphan,
  };
}

export function sqlServerTargetQueries(t: TargetTableRef, tenant: string): SideQueries<SqlServerStatement> {
  return {
    describe: `SQL Server target ${t.schema}.${t.table}`,
    summary: (r) => targetSummaryQuery(t, tenant, r),
    rows: (r) => targetRowsQuery(t, tenant, r),
    orphans: (n) => targetOrphansQuery(t, tenant, n),
    toCell: cellParser((s) => BigInt(s)),
    toRow: rowParser((s) => BigInt(s)),
    toOrphan,
  };
}
