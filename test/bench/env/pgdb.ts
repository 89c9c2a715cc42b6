import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { encodeCopyBinary, type CopyColumn, type CopyValue } from '../../../consumers/postgres/copy-binary.js';
import { quotePg } from '../../../src/sql/ident.js';

/** The benchmark's databases on the shared PostgreSQL server: created per run, dropped at the end. */

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export function quietPool(url: string, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => undefined);
  return pool;
}

export async function createDatabase(admin: pg.Pool, name: string): Promise<void> {
  await admin.query(`DROP DATABASE IF EXISTS ${quotePg(name)} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${quotePg(name)}`);
}

export async function dropDatabase(admin: pg.Pool, name: string): Promise<void> {
  await admin.query(`DROP DATABASE IF EXISTS ${quotePg(name)} WITH (FORCE)`);
}

/** Streams rows into `COPY <into> FROM STDIN (FORMAT binary)` on one client, in ~1 MiB chunks. */
export async function copyBinary(client: pg.ClientBase, into: string, columns: readonly CopyColumn[], rows: Iterable<readonly CopyValue[]>): Promise<void> {
  const names = columns.map((c) => quotePg(c.name)).join(', ');
  const stream = client.query(copyFrom(`COPY ${into} (${names}) FROM STDIN (FORMAT binary)`));
  await pipeline(encodeCopyBinary(columns, rows), stream);
}

/** The database server's clock, in epoch milliseconds (fractional). */
export async function dbNowMs(pool: pg.Pool | pg.ClientBase): Promise<number> {
  const { rows } = await pool.query<{ ms: string }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms');
  return Number(rows[0]!.ms);
}

/** Bytes of every relation of a schema, TOAST and indexes included. */
export async function schemaBytes(pool: pg.Pool, schema: string): Promise<number> {
  const { rows } = await pool.query<{ bytes: string | null }>(
    `SELECT sum(pg_total_relation_size(c.oid))::bigint AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')`, [schema]);
  return Number(rows[0]?.bytes ?? 0);
}
