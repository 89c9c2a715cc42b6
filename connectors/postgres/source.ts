import type pg from 'pg';
import type { SourceRow, Ticks } from '../../src/contract.js';
import type { OldestOpenTransaction, SourceTableSpec } from '../../src/poll/source/connector.js';
import { SqlSource, type SourceDialect, type SourceExecutor, type SourceRun } from '../../src/poll/source/sql-source.js';
import { isoFromTicks, minTicks } from '../../src/time/ticks.js';
import * as q from './queries.js';
import { createPgPool } from '../../src/db/postgres.js';

/** A PostgreSQL source table: the builders of queries.ts and the mapping of their rows, run by the one SqlSource. */

interface RawRow {
  key: string;
  name: string | null;
  path_locator: string | null;
  parent_path_locator: string | null;
  is_directory: boolean;
  content_length: number | string | null;
  content: Buffer | null;
  modified_on_ticks: string | null;
  business_unit: string | null;
  creation_time_ticks: string | null;
  last_write_time_ticks: string | null;
}

/** A key-states row: a page row without content, plus the hash and the page size before the byte cut. */
type KeyStateRow = RawRow & { content_sha256?: Buffer | null; page_rows?: number };

export function toSourceRow(r: RawRow): SourceRow {
  return {
    key: r.key,
    name: r.name,
    pathLocator: r.path_locator,
    parentPathLocator: r.parent_path_locator,
    isDirectory: r.is_directory,
    contentLength: r.content_length === null ? null : Number(r.content_length),
    content: r.content,
    modifiedOn: r.modified_on_ticks === null ? null : BigInt(r.modified_on_ticks),
    businessUnit: r.business_unit,
    attributes: {
      creationTime: r.creation_time_ticks === null ? null : BigInt(r.creation_time_ticks),
      lastWriteTime: r.last_write_time_ticks === null ? null : BigInt(r.last_write_time_ticks),
    },
  };
}

/** A pool whose sessions compare timestamps in UTC, whatever the server's default time zone. */
export { createPgPool };

async function clock(run: SourceRun<q.Statement>): Promise<Ticks> {
  const [row] = await run<{ now_ticks: string }>('reading the clock', q.clockQuery());
  return BigInt(row!.now_ticks);
}

async function oldestOpenTransaction(run: SourceRun<q.Statement>): Promise<OldestOpenTransaction> {
  type Row = { oldest_ticks: string | null; oldest_prepared_ticks: string | null; prepared: number; visible: boolean | null };
  const [row] = await run<Row>('reading open transactions', q.oldestOpenTransactionQuery());
  if (!row?.visible) return { visible: false, reason: 'the login is neither superuser nor a member of pg_read_all_stats' };
  const open = row.oldest_ticks === null ? null : BigInt(row.oldest_ticks);
  if (row.oldest_prepared_ticks === null) return { visible: true, start: open };
  const prepared = BigInt(row.oldest_prepared_ticks);
  const caveat = `${row.prepared} prepared transaction(s), the oldest prepared at ${isoFromTicks(prepared)}: PostgreSQL does not record when they began, so rows they commit may be stamped earlier than the window end; the late-arrival sweep finds those`;
  return { visible: true, start: open === null ? prepared : minTicks(open, prepared), caveat };
}

export const postgresSourceDialect: SourceDialect<q.Statement, KeyStateRow> = {
  ...q,
  kind: 'postgres',
  engine: 'PostgreSQL',
  toSourceRow,
  keyState: (r) => ({ contentSha256: r.content_sha256 ?? null, pageRows: r.page_rows ?? 0 }),
  clock,
  oldestOpenTransaction,
};

/** Every statement goes with its values as parameters (extended protocol), as the builders expect. */
function pgExecutor(pool: pg.Pool, ownsPool: boolean): SourceExecutor<q.Statement> {
  return {
    rows: async <R>(stmt: q.Statement) => (await pool.query(stmt.text, stmt.values as unknown[])).rows as R[],
    close: async () => {
      if (ownsPool) await pool.end();
    },
  };
}

export class PostgresSource extends SqlSource<q.Statement, KeyStateRow> {
  constructor(pool: pg.Pool, spec: SourceTableSpec, ownsPool = false) {
    super(postgresSourceDialect, pgExecutor(pool, ownsPool), spec);
  }
}
