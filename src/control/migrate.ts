import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { classifyDbError, coerceError, HighwaterError } from '../errors.js';
import { quotePg } from '../sql/ident.js';

/**
 * Numbered SQL migrations (`NNN_name.sql`) for a PostgreSQL schema, applied in order, each once.
 * Used for the control store (schema/control) and for PostgreSQL targets (schema/target-postgres).
 * Files whose names do not start with a number (templates such as blob-table.sql) are not migrations and are ignored.
 */

export interface MigrationFile {
  readonly version: number;
  readonly name: string;
  readonly path: string;
}

export interface MigrationResult {
  /** Versions applied by this call, in order; empty when the schema was already up to date. */
  readonly applied: readonly number[];
}

const MIGRATION_FILE = /^(\d{1,9})_([A-Za-z0-9_-]+)\.sql$/;
const PLACEHOLDER = /\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}/g;

/** Picks the migration files out of a directory listing, ordered by version. Pure. */
export function migrationFiles(dir: string, names: readonly string[]): MigrationFile[] {
  const files = names.flatMap((name) => {
    const m = MIGRATION_FILE.exec(name);
    return m ? [{ version: Number(m[1]), name, path: join(dir, name) }] : [];
  });
  files.sort((a, b) => a.version - b.version);
  files.forEach((f, i) => {
    const previous = files[i - 1];
    if (previous && previous.version === f.version) {
      throw new HighwaterError('INTERNAL', `two migrations share version ${f.version} in ${dir}: ${previous.name} and ${f.name}`);
    }
  });
  return files;
}

/**
 * Replaces `{{name}}` placeholders with quoted identifiers. Every value is an identifier (validated and quoted by
 * quotePg), never a fragment of SQL; a placeholder without a value is an error rather than SQL sent as is. Pure.
 */
export function renderMigration(sql: string, identifiers: Readonly<Record<string, string>>): string {
  return sql.replace(PLACEHOLDER, (whole, key: string) => {
    const value = identifiers[key];
    if (value === undefined) throw new HighwaterError('INTERNAL', `migration placeholder ${whole} has no value`);
    return quotePg(value);
  });
}

/**
 * Applies the pending migrations of `dir` to `schema`, in one transaction, under a transaction-scoped advisory
 * lock keyed by the schema and bookkeeping table, so processes migrating at the same time wait for each other
 * and each file runs exactly once. Creates the schema and the bookkeeping table when they are missing.
 *
 * `{{schema}}` is always the quoted `schema`; `placeholders` adds more identifier placeholders (e.g. `{{table}}`).
 * The client must not be inside a transaction; it is left outside one.
 */
export async function applyMigrations(
  client: pg.ClientBase,
  dir: string,
  schema: string,
  table = 'schema_migrations',
  placeholders: Readonly<Record<string, string>> = {},
): Promise<MigrationResult> {
  const identifiers = { ...placeholders, schema };
  const bookkeeping = `${quotePg(schema)}.${quotePg(table)}`;
  const files = migrationFiles(dir, await readdir(dir));
  const texts = await Promise.all(files.map(async (f) => renderMigration(await readFile(f.path, 'utf8'), identifiers)));
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`highwater.migrate:${schema}.${table}`]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quotePg(schema)}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${bookkeeping} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    );
    const done = await client.query<{ version: number }>(`SELECT version FROM ${bookkeeping}`);
    const applied = new Set(done.rows.map((r) => r.version));
    const pending = files.flatMap((f, i) => (applied.has(f.version) ? [] : [{ ...f, text: texts[i] ?? '' }]));
    for (const file of pending) {
      await client.query(file.text);
      await client.query(`INSERT INTO ${bookkeeping} (version, name) VALUES ($1, $2)`, [file.version, file.name]);
    }
    await client.query('COMMIT');
    return { applied: pending.map((f) => f.version) };
  } catch (thrown) {
    await rollbackQuietly(client, thrown);
    throw classifyDbError(thrown, `migrating schema ${schema} from ${dir}`);
  }
}

/** Rolls back after a failure; a failing rollback is attached to the original error rather than replacing it. */
export async function rollbackQuietly(client: pg.ClientBase, original: unknown): Promise<void> {
  try {
    await client.query('ROLLBACK');
  } catch (rollbackError) {
    // The original error is the one worth reporting; keep the rollback failure next to it.
    if (original instanceof Error) Object.assign(original, { rollbackError: coerceError(rollbackError) });
  }
}
