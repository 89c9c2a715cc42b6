import pg from 'pg';
import { HighwaterError, classifyDbError, coerceError } from '../errors.js';
import type { PgStatement } from '../sql/statement.js';

/**
 * The one PostgreSQL executor: the pool, running a built statement, and the transaction helpers. The control
 * store, the PostgreSQL source and the PostgreSQL target all run their `{ text, values }` through these.
 */

export type { PgStatement };
export type PgRow = Record<string, unknown>;
export type PgOn = pg.ClientBase | pg.Pool;

/**
 * A pool whose sessions read and write timestamps in UTC.
 *
 * Every client gets an 'error' listener for its whole life. pg reports a session the server ended while the client
 * was checked out between two statements (pg_terminate_backend, a restart, a reset connection) on the client, not
 * on the pool, and an unheard 'error' event kills the process. Nothing is lost by listening: the statement in
 * flight, or the next one, fails with the connection error, which the caller classifies and retries, and the pool
 * discards the broken client when it is released.
 */
export function createPgPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, options: '-c TimeZone=UTC' });
  pool.on('connect', (client) => client.on('error', ignoreReportedElsewhere));
  return pool;
}

/** The error reaches the code using the client through its failed statement; see {@link createPgPool}. */
function ignoreReportedElsewhere(): void {}

/** Runs a built statement; statements without values go as simple queries, so a migration may hold several. */
export async function pgRun<R extends pg.QueryResultRow = PgRow>(on: PgOn, stmt: PgStatement): Promise<pg.QueryResult<R>> {
  return stmt.values.length === 0 ? on.query<R>(stmt.text) : on.query<R>(stmt.text, [...stmt.values]);
}

/** As pgRun, with a driver error classified under `context`. */
export async function pgQuery<R extends pg.QueryResultRow = PgRow>(
  on: PgOn,
  context: string,
  stmt: PgStatement,
): Promise<pg.QueryResult<R>> {
  try {
    return await pgRun<R>(on, stmt);
  } catch (thrown) {
    throw classifyDbError(thrown, context);
  }
}

export interface PgTransactionOptions {
  /** What the work is, for error messages. */
  readonly context: string;
  /** The statement that opens it; default `BEGIN` (read committed). */
  readonly begin?: string;
  /** How an error of the work is classified; default classifyDbError. */
  readonly classify?: (thrown: unknown, context: string) => HighwaterError;
}

/**
 * Runs `work` on one pooled client inside BEGIN … COMMIT. On failure it rolls back and returns the client; a client
 * that cannot roll back is destroyed instead of going back to the pool. The error is classified once, here.
 */
export async function pgTransaction<T>(
  pool: pg.Pool,
  options: PgTransactionOptions,
  work: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const classify = options.classify ?? classifyDbError;
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (thrown) {
    throw classifyDbError(thrown, options.context);
  }
  try {
    await client.query(options.begin ?? 'BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (thrown) {
    await pgRollback(client);
    throw classify(thrown, options.context);
  }
}

/** ROLLBACK, then the client goes back to its pool (discarded when the ROLLBACK fails). */
export async function pgRollback(client: pg.PoolClient): Promise<void> {
  try {
    await client.query('ROLLBACK');
    client.release();
  } catch (thrown) {
    client.release(coerceError(thrown));
  }
}

/**
 * One REPEATABLE READ, read-only transaction held open across many statements: every statement sees the same
 * snapshot. It opens at the first statement and ends at close() with a ROLLBACK (it wrote nothing). Statements run
 * one after another, as a pg client takes one query at a time. pgTransaction is for work that fits one callback;
 * this is for a reader that issues statements as it goes (reconcile's sides). `context` names a statement in errors.
 */
export class PgSnapshot {
  #client: Promise<pg.PoolClient> | undefined;
  #queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly pool: pg.Pool,
    private readonly context: (what: string) => string,
  ) {}

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

  readonly exec = (what: string, stmt: PgStatement): Promise<PgRow[]> => {
    const result = this.#queue.then(async () => {
      try {
        const client = await this.client();
        return (await client.query<PgRow>(stmt.text, stmt.values as unknown[])).rows;
      } catch (err) {
        throw classifyDbError(err, this.context(what));
      }
    });
    this.#queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  };

  async close(): Promise<void> {
    await this.#queue;
    const pending = this.#client;
    this.#client = undefined;
    if (!pending) return;
    const client = await pending.catch(() => undefined);
    if (client) await pgRollback(client);
  }
}

/**
 * Driver errors of a batch applied to a target. Data exceptions (SQLSTATE class 22: bad encoding, NUL in text, out
 * of range) come from a row's values, like integrity errors (class 23), so both are DB_CONSTRAINT: the apply loop
 * dead-letters the batch's rows one by one instead of stopping.
 */
export function classifyPgRowError(thrown: unknown, context: string): HighwaterError {
  const error = classifyDbError(thrown, context);
  const sqlState = (error.cause as { code?: unknown } | undefined)?.code;
  if (error.code === 'DB_QUERY' && typeof sqlState === 'string' && sqlState.startsWith('22')) {
    return new HighwaterError('DB_CONSTRAINT', error.message, { cause: error.cause });
  }
  return error;
}
