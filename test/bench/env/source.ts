import type pg from 'pg';
import type { CopyColumn } from '../../../consumers/postgres/copy-binary.js';
import { quotePg } from '../../../src/sql/ident.js';
import type { BenchRow } from '../rows.js';
import { copyBinary } from './pgdb.js';

/**
 * The source side: FileTable-shaped blob tables with their metadata tables and a BU table, as the users have them
 * (and as the demo builds them), one schema per workload. Rows are loaded with binary COPY; loading is not timed.
 */

export const BU_TABLE = 'LA_BU';
export const BUSINESS_UNITS = ['7f0a6c2e-1d1b-4a35-9b7e-1b0c6d9a0001', '7f0a6c2e-1d1b-4a35-9b7e-1b0c6d9a0002'] as const;

export interface SourceTable {
  readonly schema: string;
  readonly blob: string;
  readonly meta: string;
}

export function sourceTable(schema: string, name: string): SourceTable {
  return { schema, blob: name, meta: `${name}_meta` };
}

export function qualified(schema: string, table: string): string {
  return `${quotePg(schema)}.${quotePg(table)}`;
}

export async function createSourceSchema(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`CREATE SCHEMA ${quotePg(schema)}`);
  await pool.query(`CREATE TABLE ${qualified(schema, BU_TABLE)} ("BusinessUnitId" uuid PRIMARY KEY, name text NOT NULL)`);
  for (const [i, id] of BUSINESS_UNITS.entries()) await pool.query(`INSERT INTO ${qualified(schema, BU_TABLE)} VALUES ($1, $2)`, [id, `BU ${i + 1}`]);
}

export async function createSourceTable(pool: pg.Pool, t: SourceTable): Promise<void> {
  const blob = qualified(t.schema, t.blob);
  const meta = qualified(t.schema, t.meta);
  await pool.query(`CREATE TABLE ${blob} (
    stream_id uuid PRIMARY KEY, file_stream bytea, name text NOT NULL, path_locator text NOT NULL UNIQUE, parent_path_locator text,
    is_directory boolean NOT NULL DEFAULT false, creation_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_write_time timestamptz NOT NULL DEFAULT clock_timestamp())`);
  await pool.query(`ALTER TABLE ${blob} ALTER COLUMN file_stream SET STORAGE EXTERNAL`);
  await pool.query(`CREATE INDEX ON ${blob} (parent_path_locator)`);
  await pool.query(`CREATE TABLE ${meta} (id uuid PRIMARY KEY, "ModifiedOn" timestamptz NOT NULL, "OwningBusinessUnit" uuid NOT NULL)`);
  await pool.query(`CREATE INDEX ON ${meta} ("ModifiedOn", id)`);
}

const STAGE_COLUMNS: readonly CopyColumn[] = [
  { name: 'k', type: 'text' }, { name: 'content', type: 'bytea' }, { name: 'name', type: 'text' }, { name: 'path', type: 'text' },
  { name: 'parent', type: 'text' }, { name: 'dir', type: 'bool' }, { name: 'us', type: 'int8' }, { name: 'bu', type: 'text' },
];

/** Loads rows in one transaction; ModifiedOn = `baseUs` + the row's offset, in microseconds since 1970. */
export async function loadRows(pool: pg.Pool, t: SourceTable, rows: readonly BenchRow[], baseUs: number): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`CREATE TEMP TABLE bench_stage (k text, content bytea, name text, path text, parent text, dir boolean, us bigint, bu text) ON COMMIT DROP`);
    await copyBinary(client, 'bench_stage', STAGE_COLUMNS, rows.map((r, i) => [r.key, r.content, r.name, r.path, r.parent, r.isDirectory, BigInt(baseUs + r.modifiedOffsetUs), BUSINESS_UNITS[i % BUSINESS_UNITS.length]!]));
    await client.query(`INSERT INTO ${qualified(t.schema, t.blob)} (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory)
      SELECT k::uuid, content, name, path, parent, dir FROM bench_stage`);
    await client.query(`INSERT INTO ${qualified(t.schema, t.meta)} (id, "ModifiedOn", "OwningBusinessUnit")
      SELECT k::uuid, timestamptz 'epoch' + us * interval '1 microsecond', bu::uuid FROM bench_stage`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  await pool.query(`ANALYZE ${qualified(t.schema, t.blob)}`);
  await pool.query(`ANALYZE ${qualified(t.schema, t.meta)}`);
}

/** Microseconds since 1970 of the database clock, minus `agoSeconds`. */
export async function baseUs(pool: pg.Pool, agoSeconds: number): Promise<number> {
  const { rows } = await pool.query<{ us: string }>(`SELECT (extract(epoch FROM clock_timestamp() - make_interval(secs => $1)) * 1e6)::bigint AS us`, [agoSeconds]);
  return Number(rows[0]!.us);
}
