import type sql from 'mssql';
import { SqlTargetWriter, type SqlTargetOptions } from '../../src/apply/sink/sql-writer.js';
import { sqlServerDialect, type SqlQuery } from './dialect.js';
import { SqlServerEngine } from './session.js';

/** The SQL Server target: the one apply sequence (src/apply/sink/sql-writer.ts) over this folder's dialect and session. */

export type SqlServerWriterOptions = SqlTargetOptions;

export class SqlServerWriter extends SqlTargetWriter<SqlQuery> {
  /** The writer owns `pool` from now on: `close()` closes it. */
  constructor(pool: sql.ConnectionPool, options: SqlServerWriterOptions) {
    super(sqlServerDialect, new SqlServerEngine(pool), options);
  }
}
