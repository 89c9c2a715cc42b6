import type pg from 'pg';
import type { HighwaterError } from '../../src/errors.js';
import { SqlTargetWriter, type SqlTargetOptions } from '../../src/apply/sink/sql-writer.js';
import { postgresDialect, type SqlQuery } from './dialect.js';
import { PostgresEngine } from './session.js';

/** The PostgreSQL target: the one apply sequence (src/apply/sink/sql-writer.ts) over this folder's dialect and session. */

export interface PostgresWriterOptions extends SqlTargetOptions {
  /** Told when an idle pooled connection fails (logging only; see PostgresEngine). */
  readonly onIdleError?: (error: HighwaterError) => void;
}

export class PostgresWriter extends SqlTargetWriter<SqlQuery> {
  /** The writer owns `pool` from now on: `close()` ends it. */
  constructor(pool: pg.Pool, options: PostgresWriterOptions) {
    super(postgresDialect, new PostgresEngine(pool, options.onIdleError), options);
  }
}
