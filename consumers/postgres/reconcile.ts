import type { PgParams } from '../../src/sql/statement.js';
import { qualified, quotePg } from '../../src/sql/ident.js';
import type { ContentScope, RowsRequest, SummaryRequest, TargetSideQueries, TargetTableRef } from '../../src/ops/reconcile/side/contract.js';
import { contentHash, orphansQuery, rowsQuery, sideQueries, summaryQuery, where, type Rows, type RowsOf, type Statement } from '../../src/ops/reconcile/side/postgres.js';

/**
 * Reconciliation of a PostgreSQL target: one tenant's rows of the target table as the derived table of row
 * versions that src/ops/reconcile/side/postgres.ts compares.
 */

function targetRows(t: TargetTableRef, tenant: string): RowsOf {
  return (content: ContentScope, p: PgParams, extra: (key: string) => string[]): Rows => {
    const key = 't.key';
    const sha = contentHash('t.content', key, content, p);
    const conditions = [`t.tenant = ${p.add(tenant)}`, ...extra(key)];
    return { key, body: `SELECT t.key, t.business_unit, t.modified_on_ticks AS ticks, ${sha} AS sha\n  FROM ${qualified(quotePg, t.schema, t.table)} AS t${where(conditions)}` };
  };
}

/** Rows of the tenant whose parent_path_locator matches no path_locator of the same tenant. */
function parentMissing(t: TargetTableRef): string[] {
  const table = qualified(quotePg, t.schema, t.table);
  return [
    't.parent_path_locator IS NOT NULL',
    `NOT EXISTS (SELECT 1 FROM ${table} AS pt WHERE pt.tenant = t.tenant AND pt.path_locator = t.parent_path_locator)`,
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

export const postgresTargetQueries: TargetSideQueries<Statement> = (t, tenant) =>
  sideQueries(`PostgreSQL target ${t.schema}.${t.table}`, targetRows(t, tenant), parentMissing(t));
