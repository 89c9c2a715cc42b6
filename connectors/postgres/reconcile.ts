import type { PgParams } from '../../src/sql/statement.js';
import type { ScopeFilter, SourceTableSpec } from '../../src/poll/source/connector.js';
import { qualified, quotePg } from '../../src/sql/ident.js';
import type { ContentScope, RowsRequest, SourceSideQueries, SummaryRequest } from '../../src/ops/reconcile/side/contract.js';
import { contentHash, orphansQuery, rowsQuery, sideQueries, summaryQuery, where, type Rows, type RowsOf, type Statement } from '../../src/ops/reconcile/side/postgres.js';

/**
 * Reconciliation of a PostgreSQL source: the rows the poller reads (joined to the metadata table, BU table and
 * exclusions applied) as the derived table of row versions that src/ops/reconcile/side/postgres.ts compares.
 */

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

function sourceRows(spec: SourceTableSpec, scope: ScopeFilter): RowsOf {
  return (content: ContentScope, p: PgParams, extra: (key: string) => string[]): Rows => {
    const key = `b.${quotePg(spec.keyColumn)}::text`;
    const bu = spec.businessUnit ? `m.${quotePg(spec.businessUnit.column)}::text` : 'NULL::text';
    const ticks = `(extract(epoch from m.${quotePg(spec.modifiedOnColumn)}) * 10000000)::bigint`;
    const sha = contentHash(`b.${quotePg(spec.columns.content)}`, key, content, p);
    const from = `${qualified(quotePg, spec.blob.schema, spec.blob.table)} AS b
  JOIN ${qualified(quotePg, spec.metadata.schema, spec.metadata.table)} AS m ON m.${quotePg(spec.metadata.joinColumn)} = b.${quotePg(spec.keyColumn)}`;
    const conditions = [...scopeConditions(spec, scope, key, p), ...extra(key)];
    return { key, body: `SELECT ${key} AS key, ${bu} AS business_unit, ${ticks} AS ticks, ${sha} AS sha\n  FROM ${from}${where(conditions)}` };
  };
}

/** Rows whose parent path matches no row of the blob table (any BU: a parent may lie outside the scope). */
function parentMissing(spec: SourceTableSpec): string[] {
  const parent = `b.${quotePg(spec.columns.parentPathLocator)}`;
  return [
    `${parent} IS NOT NULL`,
    `NOT EXISTS (SELECT 1 FROM ${qualified(quotePg, spec.blob.schema, spec.blob.table)} AS pb WHERE pb.${quotePg(spec.columns.pathLocator)} = ${parent})`,
  ];
}

export function sourceSummaryQuery(spec: SourceTableSpec, scope: ScopeFilter, req: SummaryRequest): Statement {
  return summaryQuery(sourceRows(spec, scope), req);
}

export function sourceRowsQuery(spec: SourceTableSpec, scope: ScopeFilter, req: RowsRequest): Statement {
  return rowsQuery(sourceRows(spec, scope), req);
}

export function sourceOrphansQuery(spec: SourceTableSpec, scope: ScopeFilter, examples: number): Statement {
  return orphansQuery(sourceRows(spec, scope), parentMissing(spec), examples);
}

export const postgresSourceQueries: SourceSideQueries<Statement> = (spec, scope) =>
  sideQueries(`PostgreSQL source ${spec.blob.schema}.${spec.blob.table}`, sourceRows(spec, scope), parentMissing(spec));
