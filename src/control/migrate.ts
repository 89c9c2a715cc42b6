import type { MigrationBook } from '../db/migrate.js';
import { renderPlaceholders } from '../db/migrate.js';
import { quotePg } from '../sql/ident.js';
import type { Query } from './sql.js';

/**
 * The control store's bookkeeping for the one migration runner (src/db/migrate.ts): schema/control/NNN_*.sql,
 * recorded by version in `schema_migrations`, under a transaction-scoped advisory lock keyed by the schema.
 */

const TABLE = 'schema_migrations';

/** Replaces `{{name}}` placeholders with quoted identifiers; a placeholder without a value is an error. Pure. */
export function renderMigration(sql: string, identifiers: Readonly<Record<string, string>>): string {
  return renderPlaceholders(sql, identifiers, quotePg);
}

export function controlMigrations(schema: string): MigrationBook<Query> {
  const bookkeeping = `${quotePg(schema)}.${quotePg(TABLE)}`;
  return {
    what: `control store schema ${schema}`,
    lock: () => ({ text: 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', values: [`highwater.migrate:${schema}.${TABLE}`] }),
    lockGranted: () => true,
    prepare: () => [
      { text: `CREATE SCHEMA IF NOT EXISTS ${quotePg(schema)}`, values: [] },
      {
        text: `CREATE TABLE IF NOT EXISTS ${bookkeeping} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
        values: [],
      },
    ],
    selectApplied: () => ({ text: `SELECT name FROM ${bookkeeping} ORDER BY version`, values: [] }),
    render: (script) => [{ text: renderMigration(script.text, { schema }), values: [] }],
    record: (script) => ({ text: `INSERT INTO ${bookkeeping} (version, name) VALUES ($1, $2)`, values: [script.version, script.name] }),
  };
}
