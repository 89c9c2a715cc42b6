import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HighwaterError } from '../errors.js';

/**
 * The one migration runner, for the control store and for every target engine. Numbered SQL files (`NNN_name.sql`)
 * are applied in order, each once, inside the caller's transaction and under the engine's lock; a database that has
 * a migration this code does not know (written by a newer highwater) is refused before anything runs.
 * What differs per store (bookkeeping table, lock, how a file is rendered into statements) is a MigrationBook.
 */

export interface MigrationFile {
  readonly version: number;
  readonly name: string;
  readonly path: string;
}

/** A migration file read and hashed. */
export interface MigrationScript extends MigrationFile {
  readonly text: string;
  readonly sha256: string;
}

/** The statements of one store's bookkeeping, in its engine's statement type S. */
export interface MigrationBook<S> {
  /** What is migrated, for messages: "schema hw of the PostgreSQL target". */
  readonly what: string;
  /** Takes the lock that serialises migrating processes (held until the transaction ends). */
  lock(): S;
  /** Whether the lock statement's rows say it was granted (an engine may report a timeout that way). */
  lockGranted(rows: readonly Record<string, unknown>[]): boolean;
  /** Creates the schema and the bookkeeping table when missing. */
  prepare(): S[];
  /** The names of the applied migrations, as column `name`. */
  selectApplied(): S;
  /** The file's statements, placeholders rendered. */
  render(script: MigrationScript): S[];
  record(script: MigrationScript): S;
}

export interface MigrationResult {
  /** Versions applied by this call, in order; empty when the schema was already up to date. */
  readonly applied: readonly number[];
}

const MIGRATION_FILE = /^(\d{1,9})_([A-Za-z0-9_-]+)\.sql$/;
const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/** Picks the migration files out of a directory listing, ordered by version; templates (blob-table.sql) are not. Pure. */
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

export async function readMigrations(dir: string): Promise<MigrationScript[]> {
  const files = migrationFiles(dir, await readdir(dir));
  return Promise.all(
    files.map(async (f) => {
      const text = await readFile(f.path, 'utf8');
      return { ...f, text, sha256: createHash('sha256').update(text).digest('hex') };
    }),
  );
}

/**
 * Replaces `{{name}}` placeholders with validated, quoted identifiers (never fragments of SQL). A placeholder not in
 * `known` (when given), or without a value, is an error: a migration never runs half-rendered. Pure.
 */
export function renderPlaceholders(
  text: string,
  identifiers: Readonly<Record<string, string | undefined>>,
  quote: (name: string) => string,
  known?: readonly string[],
): string {
  return text.replace(PLACEHOLDER, (_whole, name: string) => {
    if (known !== undefined && !known.includes(name)) throw new TypeError(`unknown placeholder {{${name}}} in a migration`);
    const value = identifiers[name];
    if (value === undefined) throw new TypeError(`no value for placeholder {{${name}}} in a migration`);
    return quote(value);
  });
}

/** Applied migrations this code does not ship: the database was migrated by a newer highwater. Pure. */
export function unknownMigrations(applied: readonly string[], scripts: readonly { readonly name: string }[]): string[] {
  const known = new Set(scripts.map((s) => s.name));
  return applied.filter((name) => !known.has(name)).sort();
}

/**
 * Applies the pending scripts through `run`, which executes one statement inside the caller's transaction and
 * returns its rows. Refuses, before changing anything, a database holding migrations the code does not know.
 */
export async function runMigrations<S>(
  run: (stmt: S) => Promise<readonly Record<string, unknown>[]>,
  book: MigrationBook<S>,
  scripts: readonly MigrationScript[],
): Promise<MigrationResult> {
  if (!book.lockGranted(await run(book.lock()))) {
    throw new HighwaterError('DB_TRANSIENT', `another process has been migrating ${book.what} for 60 s; try again`);
  }
  for (const stmt of book.prepare()) await run(stmt);
  const applied = (await run(book.selectApplied())).map((r) => String(r.name));
  const newer = unknownMigrations(applied, scripts);
  if (newer.length > 0) {
    const latest = scripts.at(-1)?.name ?? 'none';
    throw new HighwaterError(
      'SCHEMA_TOO_NEW',
      `${book.what} has migration(s) ${newer.join(', ')} that this highwater does not know (its latest is ${latest}): it was migrated by a newer version`,
    );
  }
  const done = new Set(applied);
  const pending = scripts.filter((s) => !done.has(s.name));
  for (const script of pending) {
    for (const stmt of book.render(script)) await run(stmt);
    await run(book.record(script));
  }
  return { applied: pending.map((s) => s.version) };
}
