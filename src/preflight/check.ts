import type pg from 'pg';
import { mssqlRows, type MssqlOn } from '../db/sqlserver.js';
import { databaseByName, databaseUrlEnvName, tablesForTarget } from '../config/load.js';
import type { Config, DatabaseConfig } from '../config/schema.js';
import { classifyDbError, coerceError, HighwaterError } from '../errors.js';
import { quotePg } from '../sql/ident.js';
import type { Runtime } from '../wiring.js';
import { columnProblems, nameKey, tableKey, tablesOf, type Catalogue, type Engine, type TableRef } from './columns.js';

/**
 * The preflight (`highwater check`, and the first step of `init`): connects to every database and to the broker,
 * checks that every configured table and column exists with a usable type, and reports every problem at once.
 * It changes nothing. Each database gets at most DATABASE_TIMEOUT_MS, Kafka at most kafka.startupTimeoutMs.
 */

export const DATABASE_TIMEOUT_MS = 15_000;

export interface Finding {
  /** What was checked: `database <name>`, `kafka`, `table <name>`, `topics of <table>`, `target <name>`, `control store`. */
  readonly subject: string;
  readonly ok: boolean;
  readonly message: string;
}

export interface PreflightReport {
  readonly ok: boolean;
  readonly problems: number;
  readonly findings: readonly Finding[];
}

export async function preflight(rt: Runtime, config: Config): Promise<PreflightReport> {
  const [databases, kafka] = await Promise.all([checkDatabases(rt, config), checkKafka(rt, config)]);
  const reachable = new Set(databases.filter((f) => f.ok).map((f) => f.subject.replace(/^database /, '')));
  const enabled = config.tables.filter((t) => t.enabled);
  const tables = await Promise.all(enabled.map((t) => checkTable(rt, config, t, reachable)));
  const topics = kafka.ok ? await Promise.all(enabled.map((t) => checkTopics(rt, t))) : [];
  const findings = [...databases, kafka, ...tables, ...topics, ...checkTargets(config, reachable), await controlStoreFinding(rt, config, reachable)];
  const problems = findings.filter((f) => !f.ok).length;
  return { ok: problems === 0, problems, findings };
}

export function renderPreflight(report: PreflightReport): string {
  const lines = report.findings.map((f) => `  ${f.ok ? 'ok  ' : 'FAIL'}  ${f.subject}: ${f.message}`);
  lines.push(report.ok ? 'preflight passed: nothing is missing' : `preflight found ${report.problems} problem${report.problems === 1 ? '' : 's'}`);
  return lines.join('\n');
}

async function checkDatabases(rt: Runtime, config: Config): Promise<Finding[]> {
  return Promise.all(config.databases.map(async (db): Promise<Finding> => {
    const subject = `database ${db.name}`;
    if (!db.connectionString) return { subject, ok: false, message: `no connection string: set databases[].connectionString or ${databaseUrlEnvName(db.name)}` };
    try {
      await withTimeout(ping(rt, db), DATABASE_TIMEOUT_MS, `no answer within ${DATABASE_TIMEOUT_MS / 1000} s`);
      return { subject, ok: true, message: `${db.kind} answers` };
    } catch (err) {
      const e = classifyDbError(err, db.kind);
      return { subject, ok: false, message: `${e.message} (${e.hint})` };
    }
  }));
}

async function ping(rt: Runtime, db: DatabaseConfig): Promise<void> {
  if (db.kind === 'postgres') await rt.pgPool(db).query('SELECT 1');
  else await (await rt.mssqlPool(db)).request().query('SELECT 1');
}

async function checkKafka(rt: Runtime, config: Config): Promise<Finding> {
  try {
    await rt.kafkaReady();
    return { subject: 'kafka', ok: true, message: `a broker answered (${config.kafka.brokers.join(', ')})` };
  } catch (err) {
    const e = err instanceof HighwaterError ? err : new HighwaterError('KAFKA_UNAVAILABLE', coerceError(err).message);
    return { subject: 'kafka', ok: false, message: e.message };
  }
}

/** The settings of a table's topics that exist already (init leaves existing topics as they are). */
async function checkTopics(rt: Runtime, table: Config['tables'][number]): Promise<Finding> {
  const subject = `topics of ${table.name}`;
  try {
    const problems = await rt.topicProblems(table);
    if (problems.length === 0) return { subject, ok: true, message: 'absent (init creates them) or with usable settings' };
    return { subject, ok: false, message: problems.join('; ') };
  } catch (err) {
    return { subject, ok: false, message: `could not read the topic settings: ${coerceError(err).message}` };
  }
}

async function checkTable(rt: Runtime, config: Config, table: Config['tables'][number], reachable: ReadonlySet<string>): Promise<Finding> {
  const subject = `table ${table.name}`;
  const db = databaseByName(config, table.source);
  if (!reachable.has(db.name)) return { subject, ok: false, message: `not checked: its source database ${db.name} does not answer` };
  try {
    const catalogue = await withTimeout(readCatalogue(rt, db, tablesOf(table)), DATABASE_TIMEOUT_MS, `the catalogue query took over ${DATABASE_TIMEOUT_MS / 1000} s`);
    const problems = columnProblems(table, db.kind, catalogue, db.name);
    if (problems.length === 0) return { subject, ok: true, message: `source tables and columns exist with usable types in ${db.name}` };
    return { subject, ok: false, message: problems.join('; ') };
  } catch (err) {
    return { subject, ok: false, message: classifyDbError(err, `reading the catalogue of ${db.name}`).message };
  }
}

function checkTargets(config: Config, reachable: ReadonlySet<string>): Finding[] {
  return config.targets.map((t) => {
    const subject = `target ${t.name}`;
    if (!reachable.has(t.database)) return { subject, ok: false, message: `its database ${t.database} does not answer` };
    const tables = tablesForTarget(config, t).map((x) => x.name);
    return { subject, ok: true, message: `database ${t.database} answers; schema ${t.schema}; tables ${tables.join(', ') || 'none'}` };
  });
}

async function controlStoreFinding(rt: Runtime, config: Config, reachable: ReadonlySet<string>): Promise<Finding> {
  const subject = 'control store';
  const { database, schema } = config.controlStore;
  if (!reachable.has(database)) return { subject, ok: false, message: `its database ${database} does not answer` };
  try {
    const initialised = await controlStoreInitialised(rt, config);
    return { subject, ok: true, message: initialised ? `schema ${schema} in ${database} is initialised` : `schema ${schema} in ${database} does not exist yet; init creates it` };
  } catch (err) {
    return { subject, ok: false, message: classifyDbError(err, 'reading the control store').message };
  }
}

/** Whether `init` has created the control store (its migrations table exists). */
export async function controlStoreInitialised(rt: Runtime, config: Config): Promise<boolean> {
  const db = databaseByName(config, config.controlStore.database);
  const name = `${quotePg(config.controlStore.schema)}.${quotePg('schema_migrations')}`;
  const { rows } = await rt.pgPool(db).query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [name]);
  return rows[0]?.present === true;
}

/** Fails with "run highwater init" when the control store does not exist yet (status, runs, resume, reset). */
export async function requireInitialised(rt: Runtime, config: Config): Promise<void> {
  let initialised: boolean;
  try {
    initialised = await controlStoreInitialised(rt, config);
  } catch (err) {
    throw classifyDbError(err, `reading the control store in database ${config.controlStore.database}`);
  }
  if (!initialised) throw new HighwaterError('NOT_INITIALISED', `the control store (schema ${config.controlStore.schema} in database ${config.controlStore.database}) does not exist yet: run highwater init`);
}

async function readCatalogue(rt: Runtime, db: DatabaseConfig, refs: readonly TableRef[]): Promise<Catalogue> {
  const rows = db.kind === 'postgres' ? await pgColumns(rt.pgPool(db), refs) : await mssqlColumns(await rt.mssqlPool(db), refs);
  const engine: Engine = db.kind;
  const catalogue = new Map<string, Map<string, string>>();
  for (const r of rows) {
    const key = tableKey(engine, { schema: r.schema, table: r.table });
    const columns = catalogue.get(key) ?? new Map<string, string>();
    columns.set(nameKey(engine, r.column), r.type.toLowerCase());
    catalogue.set(key, columns);
  }
  return catalogue;
}

interface ColumnRow {
  schema: string;
  table: string;
  column: string;
  type: string;
}

async function pgColumns(pool: pg.Pool, refs: readonly TableRef[]): Promise<ColumnRow[]> {
  const { rows } = await pool.query<ColumnRow>(
    `SELECT table_schema AS schema, table_name AS table, column_name AS column, data_type AS type
       FROM information_schema.columns
      WHERE (table_schema, table_name) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [refs.map((r) => r.schema), refs.map((r) => r.table)],
  );
  return rows;
}

async function mssqlColumns(pool: MssqlOn, refs: readonly TableRef[]): Promise<ColumnRow[]> {
  const conditions = refs.map((_, i) => `(TABLE_SCHEMA = @s${i} AND TABLE_NAME = @t${i})`);
  const values = Object.fromEntries(
    refs.flatMap((r, i) => [
      [`s${i}`, { type: 'NVarChar' as const, value: r.schema }],
      [`t${i}`, { type: 'NVarChar' as const, value: r.table }],
    ]),
  );
  return mssqlRows<ColumnRow>(pool, {
    text: `SELECT TABLE_SCHEMA AS [schema], TABLE_NAME AS [table], COLUMN_NAME AS [column], DATA_TYPE AS [type] FROM INFORMATION_SCHEMA.COLUMNS WHERE ${conditions.join(' OR ')}`,
    values,
  });
}

async function withTimeout<T>(task: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(message), { code: 'ETIMEDOUT' })), ms);
  });
  try {
    return await Promise.race([task, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
