import sql from 'mssql';
import type { BlobChunk } from '../../src/contract.js';
import { classifyMssqlRowError, mssqlRun, mssqlTransaction, type MssqlOn } from '../../src/db/sqlserver.js';
import { HighwaterError, classifyDbError, coerceError } from '../../src/errors.js';
import type { ErrorRole, StageInput, StatementResult, TargetEngine, TargetSession } from '../../src/apply/sink/dialect.js';
import {
  CHUNK_STAGE_COLUMNS,
  CHUNK_STAGE_TABLE,
  STAGE_COLUMNS,
  STAGE_TABLE,
  chunkStageValues,
  createChunkStageTable,
  insertStagedChunks,
  stageMismatch,
  stageValues,
  type SqlQuery,
  type StageColumn,
  type StageValue,
} from './dialect.js';

/**
 * What only SQL Server does in the apply sequence: rows and chunks reach session #tables by TDS bulk load, and
 * row-value errors are constraint errors. Pool and transactions are the one SQL Server executor's
 * (src/db/sqlserver.ts).
 */

export class SqlServerEngine implements TargetEngine<SqlQuery> {
  readonly name = 'SQL Server';
  readonly kind = 'sqlserver' as const;

  constructor(private readonly pool: sql.ConnectionPool) {}

  async query(context: string, stmt: SqlQuery): Promise<StatementResult> {
    try {
      return await resultOf(this.pool, stmt);
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
  }

  transaction<T>(context: string, role: ErrorRole, work: (session: TargetSession<SqlQuery>) => Promise<T>): Promise<T> {
    const classify = role === 'apply' ? classifyMssqlRowError : classifyDbError;
    return mssqlTransaction(this.pool, { context, classify }, (tx) => work(session(tx)));
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

function session(tx: sql.Transaction): TargetSession<SqlQuery> {
  return {
    run: (stmt) => resultOf(tx, stmt),
    loadStage: (rows: readonly StageInput[]) =>
      bulkLoad(tx, STAGE_TABLE, STAGE_COLUMNS, rows, stageValues, (r) => `row ${JSON.stringify(r.change.key)} of ${r.change.table}`),
    loadChunks: async (schema: string, chunks: readonly BlobChunk[]) => {
      await mssqlRun(tx, createChunkStageTable());
      await bulkLoad(
        tx,
        CHUNK_STAGE_TABLE,
        CHUNK_STAGE_COLUMNS,
        chunks,
        chunkStageValues,
        (c) => `chunk ${c.index} of ${JSON.stringify(c.key)}`,
      );
      await mssqlRun(tx, insertStagedChunks(schema));
    },
  };
}

/** The last result set (where T-SQL statements report their counts with SELECT @@ROWCOUNT AS …). */
async function resultOf(on: MssqlOn, stmt: SqlQuery): Promise<StatementResult> {
  const rows = (await mssqlRun(on, stmt)).at(-1) ?? [];
  return { rows, rowCount: rows.length };
}

/** The driver type of a bulk column (lengths exactly as declared, or the server refuses the load). */
function bulkType(c: StageColumn): sql.ISqlType {
  const length = c.length === 'max' ? sql.MAX : c.length;
  switch (c.type) {
    case 'NVarChar':
      return sql.NVarChar(length);
    case 'VarChar':
      return sql.VarChar(length);
    case 'VarBinary':
      return sql.VarBinary(length);
    case 'BigInt':
      return sql.BigInt();
    case 'Int':
      return sql.Int();
    default:
      return sql.Bit();
  }
}

/**
 * Bulk-loads items into a session #table (TDS bulk copy, no parameters, no per-row statements). Each item's values
 * are built and checked against the column lengths first, so an item that cannot fit (a fractional size, a key too
 * long) is a constraint error naming it, which the apply loop dead-letters, rather than a driver failure.
 */
async function bulkLoad<T>(
  tx: sql.Transaction,
  tableName: string,
  columns: readonly StageColumn[],
  items: readonly T[],
  toValues: (item: T) => StageValue[],
  describe: (item: T) => string,
): Promise<void> {
  const table = new sql.Table(tableName);
  table.create = false;
  for (const c of columns) table.columns.add(c.name, bulkType(c), { nullable: true });
  for (const item of items) {
    let values: StageValue[];
    try {
      values = toValues(item);
    } catch (thrown) {
      throw new HighwaterError('DB_CONSTRAINT', `${describe(item)} cannot be staged: ${coerceError(thrown).message}`, { cause: thrown });
    }
    const mismatch = stageMismatch(columns, values);
    if (mismatch !== null) throw new HighwaterError('DB_CONSTRAINT', `${describe(item)} cannot be staged: ${mismatch}`);
    // bigint values are accepted by the driver (tedious) though mssql's row type does not list them.
    table.rows.add(...(values as Parameters<typeof table.rows.add>));
  }
  await new sql.Request(tx).bulk(table);
}
