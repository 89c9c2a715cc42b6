import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import type { CopyColumn, CopyValue } from '../../../consumers/postgres/copy-binary.js';
import { blobTableDdl, targetTable } from '../../../consumers/postgres/dialect.js';
import { quotePg } from '../../../src/sql/ident.js';
import type { BenchRow } from '../rows.js';
import { BUSINESS_UNITS } from '../env/source.js';

/** Tables with highwater's target shape (schema/target-postgres/blob-table.sql) for the baselines to write into. */

export const TARGET_COLUMNS: readonly CopyColumn[] = [
  { name: 'tenant', type: 'text' }, { name: 'key', type: 'text' }, { name: 'name', type: 'text' },
  { name: 'path_locator', type: 'text' }, { name: 'parent_path_locator', type: 'text' }, { name: 'is_directory', type: 'bool' },
  { name: 'size', type: 'int8' }, { name: 'content', type: 'bytea' }, { name: 'content_sha256', type: 'bytea' },
  { name: 'modified_on_ticks', type: 'int8' }, { name: 'business_unit', type: 'text' },
];

/**
 * Creates `<schema>.<table>` exactly as highwater's migration does; `withKey: false` drops the primary key, for a
 * table that holds every version of a key (W3).
 */
export async function createTargetShapedTable(pool: pg.Pool, repoDir: string, schema: string, logical: string, withKey = true): Promise<string> {
  const file = await readFile(join(repoDir, 'schema/target-postgres/blob-table.sql'), 'utf8');
  const t = targetTable(schema, logical);
  await pool.query(`CREATE SCHEMA IF NOT EXISTS ${quotePg(schema)}`);
  await pool.query(blobTableDdl(file, t).text);
  const qualified = `${quotePg(schema)}.${quotePg(t.table)}`;
  if (!withKey) await pool.query(`ALTER TABLE ${qualified} DROP CONSTRAINT ${quotePg(`${t.table}_pkey`)}`);
  return qualified;
}

/** The target row of a source row: the values highwater would write, in TARGET_COLUMNS order. */
export function targetValues(row: BenchRow, index: number, baseUs: number): CopyValue[] {
  const sha = row.content === null ? null : createHash('sha256').update(row.content).digest();
  return [
    '', row.key, row.name, row.path, row.parent, row.isDirectory, row.content?.length ?? null, row.content, sha,
    BigInt(baseUs + row.modifiedOffsetUs) * 10n, BUSINESS_UNITS[index % BUSINESS_UNITS.length]!,
  ];
}
