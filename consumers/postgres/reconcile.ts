import type pg from 'pg';
import type { PgParams } from '../../src/sql/statement.js';
import { qualified, quotePg } from '../../src/sql/ident.js';
import type { ContentScope, Digest, TargetSideQueries, TargetTableRef } from '../../src/ops/reconcile/side/contract.js';
import {
  contentHash,
  digestSelect,
  sideQueries,
  where,
  type Rows,
  type RowsOf,
  type Statement,
} from '../../src/ops/reconcile/side/postgres.js';

/**
 * Reconciliation of a PostgreSQL target: one tenant's rows of the target table as the derived table of row
 * versions that src/ops/reconcile/side/postgres.ts compares.
 */

function targetRows(t: TargetTableRef, tenant: string): RowsOf {
  return (content: ContentScope, p: PgParams, extra: (key: string) => string[]): Rows => {
    const key = 't.key';
    const sha = contentHash('t.content', key, content, p);
    const conditions = [`t.tenant = ${p.add(tenant)}`, ...extra(key)];
    return {
      key,
      body: `SELECT t.key, t.business_unit, t.modified_on_ticks AS ticks, ${sha} AS sha\n  FROM ${qualified(quotePg, t.schema, t.table)} AS t${where(conditions)}`,
    };
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

export const postgresTargetQueries: TargetSideQueries<Statement> = (t, tenant) =>
  sideQueries(`PostgreSQL target ${t.schema}.${t.table}`, targetRows(t, tenant), parentMissing(t));

/** The Digest of one tenant's rows of a target table. */
export async function targetDigest(pool: pg.Pool, schema: string, table: string, tenant: string): Promise<Digest> {
  const text = `${digestSelect('key', 'modified_on_ticks::text', 'content')} FROM ${quotePg(schema)}.${quotePg(table)} WHERE tenant = $1`;
  const { rows } = await pool.query<{ rows: number; checksum: string }>(text, [tenant]);
  return rows[0]!;
}
