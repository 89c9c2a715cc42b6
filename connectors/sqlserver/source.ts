import type sql from 'mssql';
import type { SourceRow, Ticks } from '../../src/contract.js';
import type { OldestOpenTransaction, SourceTableSpec } from '../../src/poll/source/connector.js';
import { SqlSource, type SourceDialect, type SourceExecutor, type SourceRun } from '../../src/poll/source/sql-source.js';
import { classifyDbError, coerceError } from '../../src/errors.js';
import { ticksFromIso } from '../../src/time/ticks.js';
import * as q from './queries.js';
import { createMssqlPool, mssqlConfig, mssqlRows } from '../../src/db/sqlserver.js';

/**
 * A SQL Server source table: the builders of queries.ts and the mapping of their rows, run by the one SqlSource.
 * What only SQL Server needs: open transactions' begin times are local, so the server's time zone is read once.
 */

interface RawRow {
  key: string;
  name: string | null;
  path_locator: string | null;
  parent_path_locator: string | null;
  is_directory: boolean;
  /** DATALENGTH of varbinary(max) is bigint, which the driver returns as a string. */
  content_length: number | string | null;
  content: Buffer | null;
  modified_on: string | null;
  business_unit: string | null;
  creation_time: string | null;
  last_write_time: string | null;
}

/** A key-states row: a page row without content, plus the hash and the page size before the byte cut. */
type KeyStateRow = RawRow & { sha256?: Buffer | null; page_rows?: number | string };

function ticksOrNull(text: string | null): Ticks | null {
  return text === null ? null : ticksFromIso(text);
}

export function toSourceRow(r: RawRow): SourceRow {
  return {
    key: r.key,
    name: r.name,
    pathLocator: r.path_locator,
    parentPathLocator: r.parent_path_locator,
    isDirectory: r.is_directory,
    contentLength: r.content_length === null ? null : Number(r.content_length),
    content: r.content,
    modifiedOn: ticksOrNull(r.modified_on),
    businessUnit: r.business_unit,
    attributes: {
      creationTime: ticksOrNull(r.creation_time),
      lastWriteTime: ticksOrNull(r.last_write_time),
    },
  };
}

export { mssqlConfig, createMssqlPool };

// 297: "The user does not have permission to perform this action"; 300: "VIEW SERVER STATE permission was denied".
const PERMISSION_DENIED = new Set([297, 300]);

function permissionDenied(err: unknown): boolean {
  const n = (coerceError(err) as Error & { number?: unknown }).number;
  return typeof n === 'number' && PERMISSION_DENIED.has(n);
}

async function clock(run: SourceRun<q.Statement>): Promise<Ticks> {
  const [row] = await run<{ now_utc: string }>('reading the clock', q.clockQuery());
  return ticksFromIso(row!.now_utc);
}

/** One per source: it remembers the server's time zone name once read (null when the server cannot say it). */
export function sqlServerSourceDialect(): SourceDialect<q.Statement, KeyStateRow> {
  let zone: Promise<string | null> | undefined;
  const serverTimeZone = (run: SourceRun<q.Statement>): Promise<string | null> => {
    zone ??= run<{ zone: string | null }>('reading the time zone', q.serverTimeZoneQuery()).then(([row]) => row?.zone ?? null);
    zone.catch(() => (zone = undefined));
    return zone;
  };
  const oldestOpenTransaction = async (
    run: SourceRun<q.Statement>,
    executor: SourceExecutor<q.Statement>,
  ): Promise<OldestOpenTransaction> => {
    try {
      const known = await serverTimeZone(run);
      const [row] = await executor.rows<{ oldest_utc: string | null }>(q.oldestOpenTransactionQuery(known));
      const start = row?.oldest_utc ? ticksFromIso(row.oldest_utc) : null;
      if (known !== null || start === null) return { visible: true, start };
      const caveat = `the server's time zone is unknown (CURRENT_TIMEZONE_ID() needs SQL Server 2022 or Azure SQL): open transactions are taken to have begun ${q.UNKNOWN_ZONE_MARGIN_MINUTES} minutes earlier than their local begin time says, in case a DST change lies between`;
      return { visible: true, start, caveat };
    } catch (err) {
      if (permissionDenied(err))
        return { visible: false, reason: 'the login lacks VIEW SERVER STATE, which sys.dm_tran_active_transactions requires' };
      throw classifyDbError(err, 'SQL Server source: reading open transactions');
    }
  };
  return {
    ...q,
    kind: 'sqlserver',
    engine: 'SQL Server',
    toSourceRow,
    keyState: (r) => ({ contentSha256: r.sha256 ?? null, pageRows: Number(r.page_rows ?? 0) }),
    clock,
    oldestOpenTransaction,
  };
}

function mssqlExecutor(pool: sql.ConnectionPool, ownsPool: boolean): SourceExecutor<q.Statement> {
  return {
    rows: <R>(stmt: q.Statement) => mssqlRows<R>(pool, stmt),
    close: async () => {
      if (ownsPool) await pool.close();
    },
  };
}

export class SqlServerSource extends SqlSource<q.Statement, KeyStateRow> {
  constructor(pool: sql.ConnectionPool, spec: SourceTableSpec, ownsPool = false) {
    super(sqlServerSourceDialect(), mssqlExecutor(pool, ownsPool), spec);
  }
}
