import { PgParams, type PgStatement } from '../../../sql/statement.js';
import type { Cell, ContentScope, OrphanRow, RowsRequest, RowVersion, SideQueries, SummaryRequest } from './contract.js';
import { TOP_PREFIX_LENGTH } from './contract.js';

/**
 * Reconciliation statements for PostgreSQL, the part both sides share. Pure: each builder returns `{ text, values }`;
 * values go in parameters. Every statement reads one derived table of row versions `(key, business_unit, ticks,
 * sha)`, which each side's engine folder builds — the rows the poller reads (connectors/postgres/reconcile.ts) or
 * the target table of one tenant (consumers/postgres/reconcile.ts) — so digests, lists and orphans agree.
 *
 * Keys are the canonical text events carry (`key::text`); ticks follow the connector (`extract(epoch …) * 1e7`,
 * exact to the microsecond); content is hashed inside the database (`sha256(bytea)`), only for rows in the content
 * scope. Digests sort keys with COLLATE "C" (byte order), as SQL Server's BIN2 collation and the reference
 * `digestOf` in reconcile.ts do.
 */

export type Statement = PgStatement;

export interface Rows {
  /** The derived table's body; columns key, business_unit, ticks (bigint), sha (text or NULL). */
  readonly body: string;
  /** The key expression inside `body`, for filters and orphans. */
  readonly key: string;
}

/** A side's derived table, its parameters added to `p`; `extra` adds conditions on the key expression. */
export type RowsOf = (content: ContentScope, p: PgParams, extra: (key: string) => string[]) => Rows;

/** No content hashed: orphans need keys only. */
const NO_CONTENT: ContentScope = { kind: 'sample', fraction: 0, prefixes: [] };

export function contentHash(content: string, key: string, scope: ContentScope, p: PgParams): string {
  const hash = `coalesce(encode(sha256(${content}), 'hex'), '-')`;
  if (scope.kind === 'all') return hash;
  if (scope.prefixes.length === 0) return 'NULL::text';
  return `CASE WHEN left(${key}, ${TOP_PREFIX_LENGTH}) = ANY(${p.add([...scope.prefixes])}::text[]) THEN ${hash} END`;
}

function bucketFilter(key: string, prefixLength: number, prefixes: readonly string[] | null, p: PgParams): string[] {
  if (prefixes === null) return [];
  return [`left(${key}, ${p.add(prefixLength)}::int) = ANY(${p.add([...prefixes])}::text[])`];
}

export function where(conditions: readonly string[]): string {
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

export function summaryQuery(rowsOf: RowsOf, req: SummaryRequest): Statement {
  const p = new PgParams();
  const rows = rowsOf(req.content, p, (key) => bucketFilter(key, req.prefixLength - 1, req.within, p));
  return { text: summaryOver(rows.body, req.prefixLength, p), values: p.values };
}

export function rowsQuery(rowsOf: RowsOf, req: RowsRequest): Statement {
  const p = new PgParams();
  const rows = rowsOf(req.content, p, (key) => bucketFilter(key, req.prefixLength, req.buckets, p));
  return { text: rowsOver(rows.body), values: p.values };
}

/** Rows of the side whose parent is missing: `parentMissing` are the side's conditions for that. */
export function orphansQuery(rowsOf: RowsOf, parentMissing: readonly string[], examples: number): Statement {
  const p = new PgParams();
  const rows = rowsOf(NO_CONTENT, p, () => [...parentMissing]);
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

/** A side's queries over its derived table. */
export function sideQueries(describe: string, rowsOf: RowsOf, parentMissing: readonly string[]): SideQueries<Statement> {
  return {
    describe,
    summary: (r) => summaryQuery(rowsOf, r),
    rows: (r) => rowsQuery(rowsOf, r),
    orphans: (n) => orphansQuery(rowsOf, parentMissing, n),
    toCell, toRow, toOrphan,
  };
}
