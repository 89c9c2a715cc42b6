import sql from 'mssql';
import { HighwaterError, classifyDbError } from '../errors.js';
import type { SqlServerStatement, SqlServerType } from '../sql/statement.js';

/**
 * The one SQL Server executor: the pool, running a built statement, and the transaction helper. The SQL Server
 * source, the SQL Server target and reconcile run their `{ text, values }` through these.
 */

export type { SqlServerStatement };
export type MssqlRow = Record<string, unknown>;
export type MssqlOn = sql.ConnectionPool | sql.Transaction;

/** The driver type of each parameter type the builders use; JSON lists and keys go as nvarchar(max). */
const PARAM_TYPES: Readonly<Record<SqlServerType, () => sql.ISqlType>> = {
  NVarChar: () => sql.NVarChar(sql.MAX),
  VarChar: () => sql.VarChar(sql.MAX),
  BigInt: () => sql.BigInt(),
  Int: () => sql.Int(),
  UniqueIdentifier: () => sql.UniqueIdentifier(),
  DateTime2: () => sql.DateTime2(7),
  VarBinary: () => sql.VarBinary(sql.MAX),
  Bit: () => sql.Bit(),
};

/**
 * Driver settings from a connection string: ADO style (`Server=host,1433;Database=db;User Id=…;Password=…`), parsed
 * by mssql, or a URL (`mssql://user:password@host:1433/db?encrypt=false&trustServerCertificate=true`), which
 * mssql 12 no longer parses itself.
 */
export function mssqlConfig(connectionString: string): sql.config {
  if (!/^(mssql|sqlserver):\/\//i.test(connectionString)) return sql.ConnectionPool.parseConnectionString(connectionString);
  const url = URL.canParse(connectionString) ? new URL(connectionString) : null;
  // The string holds a password: it never goes into the message.
  if (url === null) throw new HighwaterError('CONFIG_INVALID', 'the SQL Server connection string looks like a URL but is not a valid one');
  const flag = (name: string): boolean | undefined => (url.searchParams.has(name) ? url.searchParams.get(name) === 'true' : undefined);
  return {
    server: url.hostname,
    port: url.port === '' ? 1433 : Number(url.port),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database: decodeURIComponent(url.pathname.slice(1)) || undefined,
    options: { encrypt: flag('encrypt') ?? true, trustServerCertificate: flag('trustServerCertificate') ?? false },
  };
}

/** A connected pool of at most `max` connections, from an mssql connection string (ADO-style or mssql:// URL). */
export async function createMssqlPool(connectionString: string, max: number): Promise<sql.ConnectionPool> {
  const config = mssqlConfig(connectionString);
  const pool = new sql.ConnectionPool({ ...config, pool: { ...config.pool, max } });
  try {
    return await pool.connect();
  } catch (err) {
    throw classifyDbError(err, 'SQL Server: connecting');
  }
}

/**
 * Runs a built statement and returns its result sets. Statements without values go as plain batches: that is how
 * the #tables they create outlive the call (parameterised text runs inside sp_executesql, whose #tables are dropped
 * when it returns); the others go through sp_executesql with typed parameters.
 */
export async function mssqlRun<R = MssqlRow>(on: MssqlOn, stmt: SqlServerStatement): Promise<R[][]> {
  const request = on instanceof sql.Transaction ? new sql.Request(on) : new sql.Request(on);
  const entries = Object.entries(stmt.values);
  for (const [name, param] of entries) request.input(name, PARAM_TYPES[param.type](), param.value);
  const result = entries.length === 0 ? await request.batch<R>(stmt.text) : await request.query<R>(stmt.text);
  return (Array.isArray(result.recordsets) ? result.recordsets : []) as R[][];
}

/** The rows of the statement's first result set (a query). */
export async function mssqlRows<R = MssqlRow>(on: MssqlOn, stmt: SqlServerStatement): Promise<R[]> {
  return (await mssqlRun<R>(on, stmt))[0] ?? [];
}

/** As mssqlRows, with a driver error classified under `context`. */
export async function mssqlQuery<R = MssqlRow>(on: MssqlOn, context: string, stmt: SqlServerStatement): Promise<R[]> {
  try {
    return await mssqlRows<R>(on, stmt);
  } catch (thrown) {
    throw classifyDbError(thrown, context);
  }
}

export interface MssqlTransactionOptions {
  readonly context: string;
  readonly classify?: (thrown: unknown, context: string) => HighwaterError;
}

/** Runs `work` in one READ COMMITTED transaction; rolls back on failure and classifies the error once, here. */
export async function mssqlTransaction<T>(
  pool: sql.ConnectionPool,
  options: MssqlTransactionOptions,
  work: (tx: sql.Transaction) => Promise<T>,
): Promise<T> {
  const tx = new sql.Transaction(pool);
  try {
    await tx.begin(sql.ISOLATION_LEVEL.READ_COMMITTED);
  } catch (thrown) {
    throw classifyDbError(thrown, options.context);
  }
  try {
    const result = await work(tx);
    await tx.commit();
    return result;
  } catch (thrown) {
    await rollback(tx);
    throw (options.classify ?? classifyDbError)(thrown, options.context);
  }
}

/** Rolls back; a rollback that fails means the server already ended the transaction (or the connection is gone). */
async function rollback(tx: sql.Transaction): Promise<void> {
  try {
    await tx.rollback();
  } catch {
    // Nothing to undo: the original error is the one worth reporting, and the pool discards a broken connection.
  }
}

// SQL Server errors caused by a row's values (truncation, conversion, overflow, NULL, keys): the apply loop
// dead-letters such rows one by one instead of stopping.
const ROW_VALUE_ERRORS = new Set([2628, 8152, 245, 8114, 8115, 220, 232, 515, 547, 2601, 2627]);

/** Driver errors of a batch applied to a target; row-value errors are DB_CONSTRAINT (see ROW_VALUE_ERRORS). */
export function classifyMssqlRowError(thrown: unknown, context: string): HighwaterError {
  const error = classifyDbError(thrown, context);
  const number = (error.cause as { number?: unknown } | undefined)?.number;
  if (error.code === 'DB_QUERY' && typeof number === 'number' && ROW_VALUE_ERRORS.has(number)) {
    return new HighwaterError('DB_CONSTRAINT', error.message, { cause: error.cause });
  }
  return error;
}
