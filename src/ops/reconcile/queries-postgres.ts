import { PgParams, type PgStatement } from '../../sql/statement.js';
import type { ScopeFilter, SourceTableSpec } from '../../poll/source/connector.js';
import { qualified, quotePg } from '../../sql/ident.js';
import type { ContentScope, OrphanRow, RowsRequest, RowVersion, SideQueries, SummaryRequest, Cell } from './reconcile.js';
import { TOP_PREFIX_LENGTH } from './reconcile.js';

/**
 * Reconciliation statements for PostgreSQL, source and target. Pure: each builder returns `{ text, values }`;
 * identifiers pass through quotePg, values go in parameters. Every statement reads one derived table of row
 * versions `(key, business_unit, ticks, sha)` — the same rows the poller reads (joined to the metadata table, BU
 * table and exclusions applied) or the target table of one tenant — so digests, lists and orphans agree.
 *
 * Keys are the canonical text events carry (`key::text`); ticks follow the connector (`extract(epoch …) * 1e7`,
 * exact to the microsecond); content is hashed inside the database (`sha256(bytea)`), only for rows in the content
 * scope. Digests sort keys with COLLATE "C" (byte order), as SQL Server's BIN2 collation and the reference
 * `digestOf` in reconcile.ts do.
 */

export type Statement = PgStatement;

/** The target table of one configured table (its SQL name comes from the target dialect's targetTableName). */
export interface TargetTableRef {
  readonly schema: string;
  readonly table: string;
}

interface Rows {
  /** The derived table's body; columns key, business_unit, ticks (bigint), sha (text or NULL). */
  readonly body: string;
  /** The key expression inside `body`, for filters and orphans. */
  readonly key: string;
}

function contentHash(content: string, key: string, scope: ContentScope, p: PgParams): string {
  const hash = `coalesce(encode(sha256(${content}), 'hex'), '-')`;
  if (scope.kind === 'all') return hash;
  if (scope.prefixes.length === 0) return 'NULL::text';
  return `CASE WHEN left(${key}, ${TOP_PREFIX_LENGTH}) = ANY(${p.add([...scope.prefixes])}::text[]) THEN ${hash} END`;
}

function bucketFilter(key: string, prefixLength: number, prefixes: readonly string[] | null, p: PgParams): string[] {
  if (prefixes === null) return [];
  return [`left(${key}, ${p.add(prefixLength)}::int) = ANY(${p.add([...prefixes])}::text[])`];
}

function where(conditions: readonly string[]): string {
  return conditions.length === 0 ? '' : `\n  WHERE ${conditions.join('\n    AND ')}`;
}

/** Summary over a derived table: one cell per business unit and bucket. */
function summaryOver(body: string, prefixLength: number, p: PgParams): string {
  return `SELECT r.business_unit, left(r.key, ${p.add(prefixLength)}::int) AS bucket, count(*)::text AS rows, max(r.ticks)::text AS latest,
  encode(sha256(convert_to(string_agg(r.key || ':' || r.ticks::text || coalesce(':' || r.sha, ''), ',' ORDER BY r.key COLLATE "C"), 'UTF8')), 'hex') AS digest
FROM (${body}) AS r
GROUP BY 1, 2`;
}

function rowsOver(body: string): string {
  return `SELECT r.key, r.business_unit, r.ticks::text AS ticks, r.sha FROM (${body}) AS r`;
}

/** Orphans with, per business unit, their number and the first `examples` keys in byte order. */
function orphansOver(body: string, examples: number, p: PgParams): string {
  return `SELECT o.business_unit, o.key, o.total FROM (
  SELECT r.business_unit, r.key, count(*) OVER (PARTITION BY r.business_unit)::text AS total,
    row_number() OVER (PARTITION BY r.business_unit ORDER BY r.key COLLATE "C") AS rn
  FROM (${body}) AS r
) AS o
WHERE o.rn <= ${p.add(Math.max(1, examples))}
ORDER BY o.business_unit, o.key COLLATE "C"`;
}

// ---------------------------------------------------------------------------------------------------- source

/** Conditions of the poller's read: BU scope, the BU table (EXISTS, so a BU listed twice cannot double a row), exclusions. */
function scopeConditions(spec: SourceTableSpec, scope: ScopeFilter, key: string, p: PgParams): string[] {
  const conditions: string[] = [];
  const bu = spec.businessUnit;
  if (bu && scope.businessUnit !== null) conditions.push(`m.${quotePg(bu.column)}::text = ${p.add(scope.businessUnit)}`);
  if (bu?.mapTable) {
    const map = bu.mapTable;
    conditions.push(`EXISTS (SELECT 1 FROM ${qualified(quotePg, map.schema, map.table)} AS m_bu WHERE m_bu.${quotePg(map.idColumn)} = m.${quotePg(bu.column)})`);
  }
  if (scope.excludedKeys.length > 0) conditions.push(`${key} <> ALL(${p.add([...scope.excludedKeys])}::text[])`);
  return conditions;
}

function sourceRows(spec: SourceTableSpec, scope: ScopeFilter, content: ContentScope, p: PgParams, extra: (key: string) => string[]): Rows {
  const key = `b.${quotePg(spec.keyColumn)}::text`;
  const bu = spec.businessUnit ? `m.${quotePg(spec.businessUnit.column)}::text` : 'NULL::text';
  const ticks = `(extract(epoch from m.${quotePg(spec.modifiedOnColumn)}) * 10000000)::bigint`;
  const sha = contentHash(`b.${quotePg(spec.columns.content)}`, key, content, p);
  const from = `${qualified(quotePg, spec.blob.schema, spec.blob.table)} AS b
  JOIN ${qualified(quotePg, spec.metadata.schema, spec.metadata.table)} AS m ON m.${quotePg(spec.metadata.joinColumn)} = b.${quotePg(spec.keyColumn)}`;
  const conditions = [...scopeConditions(spec, scope, key, p), ...extra(key)];
  return { key, body: `SELECT ${key} AS key, ${bu} AS business_unit, ${ticks} AS ticks, ${sha} AS sha\n  FROM ${from}${where(conditions)}` };
}

export function sourceSummaryQuery(spec: SourceTableSpec, scope: ScopeFilter, req: SummaryRequest): Statement {
  const p = new PgParams();
  const rows = sourceRows(spec, scope, req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows.body, req.prefixLength, p), values: p.values };
}

export function sourceRowsQuery(spec: SourceTableSpec, scope: ScopeFilter, req: RowsRequest): Statement {
  const p = new PgParams();
  const rows = sourceRows(spec, scope, req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows.body), values: p.values };
}

/** Source rows in scope whose parent path matches no row of the blob table (any BU: a parent may lie outside the scope). */
export function sourceOrphansQuery(spec: SourceTableSpec, scope: ScopeFilter, examples: number): Statement {
  const p = new PgParams();
  const parent = `b.${quotePg(spec.columns.parentPathLocator)}`;
  const parentMissing = `NOT EXISTS (SELECT 1 FROM ${qualified(quotePg, spec.blob.schema, spec.blob.table)} AS pb WHERE pb.${quotePg(spec.columns.pathLocator)} = ${parent})`;
  const rows = sourceRows(spec, scope, { kind: 'sample', fraction: 0, prefixes: [] }, p, () => [`${parent} IS NOT NULL`, parentMissing]);
  return { text: orphansOver(rows.body, examples, p), values: p.values };
}

// ---------------------------------------------------------------------------------------------------- target

function targetRows(t: TargetTableRef, tenant: string, content: ContentScope, p: PgParams, extra: (key: string) => string[]): Rows {
  const key = 't.key';
  const sha = contentHash('t.content', key, content, p);
  const conditions = [`t.tenant = ${p.add(tenant)}`, ...extra(key)];
  return { key, body: `SELECT t.key, t.business_unit, t.modified_on_ticks AS ticks, ${sha} AS sha\n  FROM ${qualified(quotePg, t.schema, t.table)} AS t${where(conditions)}` };
}

export function targetSummaryQuery(t: TargetTableRef, tenant: string, req: SummaryRequest): Statement {
  const p = new PgParams();
  const rows = targetRows(t, tenant, req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows.body, req.prefixLength, p), values: p.values };
}

export function targetRowsQuery(t: TargetTableRef, tenant: string, req: RowsRequest): Statement {
  const p = new PgParams();
  const rows = targetRows(t, tenant, req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows.body), values: p.values };
}

/** Target rows of the tenant whose parent_path_locator matches no path_locator of the same tenant. */
export function targetOrphansQuery(t: TargetTableRef, tenant: string, examples: number): Statement {
  const p = new PgParams();
  const table = qualified(quotePg, t.schema, t.table);
  const rows = targetRows(t, tenant, { kind: 'sample', fraction: 0, prefixes: [] }, p, () => [
    't.parent_path_locator IS NOT NULL',
    `NOT EXISTS (SELECT 1 FROM ${table} AS pt WHERE pt.tenant = t.tenant AND pt.path_locator = t.parent_path_locator)`,
  ]);
  return { text: orphansOver(rows.body, examples, p), values: p.values };
}

// ---------------------------------------------------------------------------------------------------- parsing

const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

export function toCell(raw: Record<string, unknown>): Cell {
  return { businessUnit: text(raw.business_unit), bucket: String(raw.bucket), rows: Number(raw.rows), latest: raw.latest === null ? null : BigInt(String(raw.latest)), digest: String(raw.digest) };
}

export function toRow(raw: Record<string, unknown>): RowVersion {
  return { key: String(raw.key), businessUnit: text(raw.business_unit), modifiedOn: BigInt(String(raw.ticks)), contentSha256: text(raw.sha) };
}

export function toOrphan(raw: Record<string, unknown>): OrphanRow {
  return { businessUnit: text(raw.business_unit), key: String(raw.key), total: Number(raw.total) };
}

export function postgresSourceQueries(spec: SourceTableSpec, scope: ScopeFilter): SideQueries<Statement> {
  return {
    describe: `PostgreSQL source ${spec.blob.schema}.${spec.blob.table}`,
    summary: (r) => sourceSummaryQuery(spec, scope, r),
    rows: (r) => sourceRowsQuery(spec, scope, r),
    orphans: (n) => sourceOrphansQuery(spec, scope, n),
    toCell, toRow, toOrphan,
  };
}

export function postgresTargetQueries(t: TargetTableRef, tenant: string): SideQueries<Statement> {
  return {
    describe: `PostgreSQL target ${t.schema}.${t.table}`,
    summary: (r) => targetSummaryQuery(t, tenant, r),
    rows: (r) => targetRowsQuery(t, tenant, r),
    orphans: (n) => targetOrphansQuery(t, tenant, n),
    toCell, toRow, toOrphan,
  };
}
