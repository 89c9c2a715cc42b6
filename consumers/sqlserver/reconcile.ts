import { qualified, quoteMssql } from '../../src/sql/ident.js';
import type { ContentScope, RowsRequest, SummaryRequest, TargetSideQueries, TargetTableRef } from '../../src/ops/reconcile/side/contract.js';
import { contentHash, orphansQuery, rowsQuery, sideQueries, summaryQuery, where, type Params, type Rows, type RowsOf, type Statement } from '../../src/ops/reconcile/side/sqlserver.js';

/**
 * Reconciliation of a SQL Server target: one tenant's rows of the target table as the derived table of row
 * versions that src/ops/reconcile/side/sqlserver.ts compares. Ticks are stored, so they travel as text as they are.
 */

const TICKS_TEXT = 'CONVERT(varchar(20), d.[ticks])';

function targetRows(t: TargetTableRef, tenant: string): RowsOf {
  return (content: ContentScope, p: Params, extra: (key: string) => string[]): Rows => {
    const key = 't.[key]';
    const sha = contentHash('t.[content]', key, content, p);
    const conditions = [`t.[tenant] = ${p.add('tenant', 'NVarChar', tenant)}`, ...extra(key)];
    const select = `SELECT t.[key], t.[business_unit], t.[key] AS [sort_key], t.[modified_on_ticks] AS [ticks], ${sha} AS [sha]`;
    return {
      body: `${select}\n  FROM ${qualified(quoteMssql, t.schema, t.table)} AS t${where(conditions)}`,
      ticksText: TICKS_TEXT,
      modifiedOnText: TICKS_TEXT,
      latestText: 'CONVERT(varchar(20), MAX(r.[ticks]))',
      version: '[ticks]',
      hint: '',
    };
  };
}

/** Rows of the tenant whose parent_path_locator matches no path_locator of the same tenant. */
function parentMissing(t: TargetTableRef): string[] {
  const table = qualified(quoteMssql, t.schema, t.table);
  return [
    't.[parent_path_locator] IS NOT NULL',
    `NOT EXISTS (SELECT 1 FROM ${table} AS pt WHERE pt.[tenant] = t.[tenant] AND pt.[path_locator] = t.[parent_path_locator])`,
  ];
}

export function targetSummaryQuery(t: TargetTableRef, tenant: string, req: SummaryRequest): Statement {
  return summaryQuery(targetRows(t, tenant), req);
}

export function targetRowsQuery(t: TargetTableRef, tenant: string, req: RowsRequest): Statement {
  return rowsQuery(targetRows(t, tenant), req);
}

export function targetOrphansQuery(t: TargetTableRef, tenant: string, examples: number): Statement {
  return orphansQuery(targetRows(t, tenant), parentMissing(t), examples);
}

export const sqlServerTargetQueries: TargetSideQueries<Statement> = (t, tenant) =>
  sideQueries(`SQL Server target ${t.schema}.${t.table}`, targetRows(t, tenant), parentMissing(t), (s) => BigInt(s));
