import { randomInt } from 'node:crypto';
import type pg from 'pg';
import { mssqlRows } from '../db/sqlserver.js';
import { databaseByName, loadConfigFile, tablesForTarget, tenantOf } from '../config/load.js';
import type { Config, DatabaseConfig, TableConfig, TargetConfig } from '../config/schema.js';
import { HighwaterError, classifyDbError, coerceError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import type { ScopeFilter } from '../poll/source/connector.js';
import type { PgStatement, SqlServerStatement } from '../sql/statement.js';
import { reconcileQueries, Runtime, sourceSpec, targetTableNameFor } from '../wiring.js';
import { DEFAULT_MAX_BUCKET_ROWS, HEX_PREFIXES, reconcileTable, sampleScope, sideOf, type ContentScope, type ReconcileSide, type SideQueries } from '../ops/reconcile/reconcile.js';
import { buildReport, renderReport, reportJson, type TableReport } from '../ops/reconcile/report.js';
import { configPath, type GlobalOptions } from './context.js';
import { EXIT } from './exit-codes.js';

/**
 * `highwater reconcile`: compares every target with its sources, per table, tenant and business unit, and exits
 * 0 when they are equal, 3 when anything differs, 2 on a usage or configuration error, 1 on a failure. The report
 * goes to stdout (a table, or JSON with --json); logs go to stderr so they never mix with it.
 */

export interface ReconcileCliOptions extends GlobalOptions {
  table?: string[];
  target?: string[];
  sample?: string;
  sampleFrom?: string;
  all?: boolean;
  examples?: string;
}

function usage(message: string): HighwaterError {
  return new HighwaterError('USAGE', message);
}

/** The content scope from --sample/--sample-from/--all; every row's content when none is given. */
export function contentScopeOf(options: ReconcileCliOptions, pickStart: () => number = () => randomInt(HEX_PREFIXES.length)): ContentScope {
  if (options.all && options.sample !== undefined) throw usage('--sample and --all exclude each other');
  if (options.sampleFrom !== undefined && options.sample === undefined) throw usage('--sample-from needs --sample');
  if (options.sample === undefined) return { kind: 'all' };
  const fraction = Number(options.sample);
  if (options.sample.trim() === '' || !Number.isFinite(fraction) || fraction < 0 || fraction > 1) throw usage(`--sample takes a fraction from 0 to 1, not ${JSON.stringify(options.sample)}`);
  let start = pickStart();
  if (options.sampleFrom !== undefined) {
    start = HEX_PREFIXES.indexOf(options.sampleFrom.toLowerCase());
    if (start < 0) throw usage(`--sample-from takes two hex characters (00 to ff), not ${JSON.stringify(options.sampleFrom)}`);
  }
  return sampleScope(fraction, start);
}

export function examplesOf(options: ReconcileCliOptions): number {
  const n = Number(options.examples ?? 10);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) throw usage(`--examples takes a whole number from 0 to 10000, not ${JSON.stringify(options.examples)}`);
  return n;
}

export interface Pair {
  readonly table: TableConfig;
  readonly target: TargetConfig;
}

/** The (table, target) pairs to compare: enabled tables of the chosen targets, or exactly the tables named. */
export function pairsOf(config: Config, tableNames?: readonly string[], targetNames?: readonly string[]): Pair[] {
  const unknownTargets = (targetNames ?? []).filter((n) => !config.targets.some((t) => t.name === n));
  if (unknownTargets.length > 0) throw usage(`unknown target(s): ${unknownTargets.join(', ')}`);
  const unknownTables = (tableNames ?? []).filter((n) => !config.tables.some((t) => t.name === n));
  if (unknownTables.length > 0) throw usage(`unknown table(s): ${unknownTables.join(', ')}`);
  const targets = targetNames && targetNames.length > 0 ? config.targets.filter((t) => targetNames.includes(t.name)) : config.targets;
  const wanted = (t: TableConfig): boolean => (tableNames && tableNames.length > 0 ? tableNames.includes(t.name) : t.enabled);
  const pairs = targets.flatMap((target) => tablesForTarget(config, target).filter(wanted).map((table) => ({ table, target })));
  const unapplied = (tableNames ?? []).filter((n) => !pairs.some((p) => p.table.name === n));
  if (unapplied.length > 0) throw usage(`no chosen target applies table(s): ${unapplied.join(', ')}`);
  if (pairs.length === 0) throw usage('nothing to reconcile: configure a target and the tables it applies');
  return pairs;
}

/** One REPEATABLE READ, read-only transaction per database: every statement of a side sees the same snapshot. */
class PgSnapshot {
  #client: Promise<pg.PoolClient> | undefined;
  #queue: Promise<void> = Promise.resolve();

  constructor(private readonly pool: pg.Pool, private readonly database: string) {}

  private client(): Promise<pg.PoolClient> {
    this.#client ??= (async () => {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      } catch (err) {
        client.release(coerceError(err));
        throw err;
      }
      return client;
    })();
    return this.#client;
  }

  /** Statements run one after another: a pg client takes one query at a time. */
  readonly exec = (what: string, stmt: PgStatement): Promise<Record<string, unknown>[]> => {
    const result = this.#queue.then(async () => {
      try {
        const client = await this.client();
        return (await client.query<Record<string, unknown>>(stmt.text, stmt.values as unknown[])).rows;
      } catch (err) {
        throw classifyDbError(err, `reconcile, ${what} (database ${this.database})`);
      }
    });
    this.#queue = result.then(() => undefined, () => undefined);
    return result;
  };

  async close(): Promise<void> {
    await this.#queue;
    const pending = this.#client;
    this.#client = undefined;
    if (!pending) return;
    const client = await pending.catch(() => undefined);
    if (!client) return;
    try {
      await client.query('ROLLBACK');
      client.release();
    } catch (err) {
      client.release(coerceError(err));
    }
  }
}

class Sides {
  private readonly snapshots = new Map<string, PgSnapshot>();

  constructor(private readonly rt: Runtime) {}

  /** A side on `db`, with the statements of its engine. */
  private async side(db: DatabaseConfig, queries: { postgres: () => SideQueries<PgStatement>; sqlserver: () => SideQueries<SqlServerStatement> }): Promise<ReconcileSide> {
    if (db.kind === 'postgres') {
      let snapshot = this.snapshots.get(db.name);
      if (!snapshot) this.snapshots.set(db.name, (snapshot = new PgSnapshot(this.rt.pgPool(db), db.name)));
      return sideOf(queries.postgres(), snapshot.exec);
    }
    const pool = await this.rt.mssqlPool(db);
    return sideOf(queries.sqlserver(), async (what, stmt) => {
      try {
        return await mssqlRows(pool, stmt);
      } catch (err) {
        throw classifyDbError(err, `reconcile, ${what} (database ${db.name})`);
      }
    });
  }

  source(config: Config, table: TableConfig): Promise<ReconcileSide> {
    const spec = sourceSpec(config, table);
    const scope: ScopeFilter = { businessUnit: table.scope, excludedKeys: [...new Set([...config.excludedKeys, ...table.excludedKeys])] };
    return this.side(databaseByName(config, table.source), {
      postgres: () => reconcileQueries.postgres.source(spec, scope),
      sqlserver: () => reconcileQueries.sqlserver.source(spec, scope),
    });
  }

  target(config: Config, pair: Pair): Promise<ReconcileSide> {
    const tenant = tenantOf(config, pair.table);
    return this.side(databaseByName(config, pair.target.database), {
      postgres: () => reconcileQueries.postgres.target({ schema: pair.target.schema, table: targetTableNameFor('postgres', pair.table.name) }, tenant),
      sqlserver: () => reconcileQueries.sqlserver.target({ schema: pair.target.schema, table: targetTableNameFor('sqlserver', pair.table.name) }, tenant),
    });
  }

  /** Ends the snapshots of one pair, so the next pair sees fresh data. */
  async release(): Promise<void> {
    const open = [...this.snapshots.values()];
    this.snapshots.clear();
    await Promise.all(open.map((s) => s.close()));
  }
}

function targetName(config: Config, pair: Pair): string {
  const db = databaseByName(config, pair.target.database);
  const table = targetTableNameFor(db.kind, pair.table.name);
  return `${pair.target.schema}.${table}`;
}

async function reconcilePair(config: Config, sides: Sides, pair: Pair, content: ContentScope, examples: number, logger: Logger): Promise<TableReport> {
  const log = logger.child({ component: 'reconcile', table: pair.table.name, target: pair.target.name });
  try {
    const comparison = await reconcileTable(await sides.source(config, pair.table), await sides.target(config, pair), { content, examples, maxBucketRows: DEFAULT_MAX_BUCKET_ROWS, logger: log });
    log.info({ equal: comparison.equal, buckets: comparison.buckets }, 'table reconciled');
    const sourceDb = databaseByName(config, pair.table.source);
    const targetDb = databaseByName(config, pair.target.database);
    return {
      table: pair.table.name,
      target: pair.target.name,
      tenant: tenantOf(config, pair.table),
      source: { database: sourceDb.name, kind: sourceDb.kind },
      targetTable: { database: targetDb.name, kind: targetDb.kind, name: targetName(config, pair) },
      ...comparison,
    };
  } finally {
    await sides.release();
  }
}

export async function reconcileCommand(options: ReconcileCliOptions): Promise<number> {
  const content = contentScopeOf(options);
  const examples = examplesOf(options);
  const config = await loadConfigFile(configPath(options));
  const pairs = pairsOf(config, options.table, options.target);
  const logger = createLogger({ level: options.logLevel ?? process.env.HIGHWATER_LOG_LEVEL ?? config.log.level, destination: process.stderr });
  const rt = new Runtime(config, logger);
  const sides = new Sides(rt);
  try {
    const tables: TableReport[] = [];
    for (const pair of pairs) tables.push(await reconcilePair(config, sides, pair, content, examples, logger));
    const report = buildReport(content, examples, tables);
    process.stdout.write(`${options.json ? reportJson(report) : renderReport(report)}\n`);
    return report.equal ? EXIT.OK : EXIT.DIFFERENCE;
  } finally {
    await rt.close();
  }
}
