import { maxdopHint } from '../../src/sql/fragments.js';
import type { ScopeFilter, SourceTableSpec } from '../../src/poll/source/connector.js';
import { qualified, quoteMssql } from '../../src/sql/ident.js';
import { ticksFromIso } from '../../src/time/ticks.js';
import type { ContentScope, RowsRequest, SourceSideQueries, SummaryRequest } from '../../src/ops/reconcile/side/contract.js';
import { contentHash, orphansQuery, rowsQuery, sideQueries, summaryQuery, where, type Params, type Rows, type RowsOf, type Statement } from '../../src/ops/reconcile/side/sqlserver.js';

/**
 * Reconciliation of a SQL Server source: the rows the poller reads as the derived table of row versions that
 * src/ops/reconcile/side/sqlserver.ts compares.
 *
 * The source is read without READCOMMITTEDLOCK: under read-committed snapshot each statement then sees one
 * committed state of the table, which is what a comparison wants (the poller, which must wait for writers in
 * flight, reads with the hint). Keys are the connector's canonical text (`LOWER(CONVERT(varchar(36), key))`).
 * ModifiedOn leaves as the connector's exact text (`CONVERT(varchar(27), CONVERT(datetime2(7), col), 126)`) in row
 * lists and latest values; digests compute ticks exactly from datetime2(7):
 * `DATEDIFF_BIG(MICROSECOND, 1970-01-01, x) * 10 + DATEPART(NANOSECOND, x) / 100 % 10`.
 */

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

function sourceRows(spec: SourceTableSpec, scope: ScopeFilter): RowsOf {
  return (content: ContentScope, p: Params, extra: (key: string) => string[]): Rows => {
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
      modifiedOnText: ISO_TEXT('d.[modified_on]'),
      latestText: ISO_TEXT('MAX(r.[modified_on])'),
      version: '[modified_on]',
      hint: maxdopHint(spec.maxdop),
    };
  };
}

/** Rows whose parent path matches no row of the blob table (any BU). */
function parentMissing(spec: SourceTableSpec): string[] {
  const parent = `b.${quoteMssql(spec.columns.parentPathLocator)}`;
  return [
    `${parent} IS NOT NULL`,
    `NOT EXISTS (SELECT 1 FROM ${qualified(quoteMssql, spec.blob.schema, spec.blob.table)} AS pb WHERE pb.${quoteMssql(spec.columns.pathLocator)} = ${parent})`,
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

export const sqlServerSourceQueries: SourceSideQueries<Statement> = (spec, scope) =>
  sideQueries(`SQL Server source ${spec.blob.schema}.${spec.blob.table}`, sourceRows(spec, scope), parentMissing(spec), ticksFromIso);
