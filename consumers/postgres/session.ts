import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { BlobChunk } from '../../src/contract.js';
import { classifyPgRowError, pgQuery, pgRun, pgTransaction } from '../../src/db/postgres.js';
import { HighwaterError, classifyDbError, coerceError } from '../../src/errors.js';
import type { ErrorRole, StageInput, StatementResult, TargetEngine, TargetSession } from '../../src/apply/sink/dialect.js';
import { CopyBinaryEncoder } from './copy-binary.js';
import { STAGE_COLUMNS, copyIntoStage, stageChunks, stageValues, type SqlQuery } from './dialect.js';

/**
 * What only PostgreSQL does in the apply sequence: rows reach the staging table by binary COPY (pg-copy-streams),
 * chunks by multi-row INSERTs, and data exceptions of a row are constraint errors. Pool and transactions are the
 * one PostgreSQL executor's (src/db/postgres.ts).
 */

/**
 * A batch's statements touch thousands of rows, not millions: their plans pass jit_above_cost as soon as the
 * planner knows the staging table's size, and compiling them (tens of milliseconds each) would cost more than it
 * saves. Off for the transaction only; the session's other work keeps the server's setting.
 */
const BEGIN_WITHOUT_JIT = 'BEGIN; SET LOCAL jit = off';

/** Bytes buffered in the COPY stream before `write()` asks to wait for 'drain'. */
const COPY_HIGH_WATER_MARK = 4 << 20;

export class PostgresEngine implements TargetEngine<SqlQuery> {
  readonly name = 'PostgreSQL';
  readonly kind = 'postgres' as const;

  /**
   * `onIdleError` is told when an idle pooled connection fails (server restart, network): the pool drops that
   * client and the next statement connects anew, so it is for logging only; without it such errors are ignored.
   */
  constructor(
    private readonly pool: pg.Pool,
    onIdleError?: (error: HighwaterError) => void,
  ) {
    pool.on('error', (thrown) =>
      safeCall(() => onIdleError?.(classifyDbError(thrown, 'an idle PostgreSQL connection failed; the pool replaces it'))),
    );
  }

  async query(context: string, stmt: SqlQuery): Promise<StatementResult> {
    return resultOf(await pgQuery(this.pool, context, stmt));
  }

  transaction<T>(context: string, role: ErrorRole, work: (session: TargetSession<SqlQuery>) => Promise<T>): Promise<T> {
    const classify = role === 'apply' ? classifyPgRowError : classifyDbError;
    return pgTransaction(this.pool, { context, classify, begin: BEGIN_WITHOUT_JIT }, (client) => work(session(client)));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

function session(client: pg.PoolClient): TargetSession<SqlQuery> {
  return {
    run: async (stmt) => resultOf(await pgRun(client, stmt)),
    loadStage: (rows) => copyIntoStageTable(client, rows),
    loadChunks: async (schema, chunks: readonly BlobChunk[]) => {
      for (const stmt of stageChunks(schema, chunks)) await pgRun(client, stmt);
    },
  };
}

function resultOf(result: pg.QueryResult): StatementResult {
  return { rows: result.rows, rowCount: result.rowCount ?? 0 };
}

/** Streams the rows into the staging table as binary COPY; `pipeline` waits for 'drain' whenever the socket is full. */
async function copyIntoStageTable(client: pg.PoolClient, rows: readonly StageInput[]): Promise<void> {
  const stream = client.query(copyFrom(copyIntoStage().text, { highWaterMark: COPY_HIGH_WATER_MARK }));
  await pipeline(copyChunks(rows), stream);
}

/** ~1 MiB chunks of binary COPY data; a row whose values do not fit their columns is a constraint error. */
function* copyChunks(rows: readonly StageInput[]): Generator<Buffer> {
  const encoder = new CopyBinaryEncoder(STAGE_COLUMNS);
  for (const row of rows) {
    try {
      encoder.row(stageValues(row));
    } catch (thrown) {
      const reason = coerceError(thrown).message;
      throw new HighwaterError(
        'DB_CONSTRAINT',
        `row ${JSON.stringify(row.change.key)} of ${row.change.table} cannot be staged: ${reason}`,
        { cause: thrown },
      );
    }
    yield* encoder.take();
  }
  encoder.finish();
  yield* encoder.take();
}

function safeCall(fn: () => void): void {
  try {
    fn();
  } catch {
    // An observer's failure must not become an uncaught exception in the pool's event handler.
  }
}
