import sql from 'mssql';
import type { SourceRow, Ticks } from '../../src/contract.js';
import type {
  KeyStates, KeyStatesRequest, MembershipRequest, MissingParentsRequest, NullModifiedOnRequest, OldestOpenTransaction, PageRequest,
  ScopeFilter, SourceConnector, SourceTableSpec, WindowCountRequest,
} from '../../src/poll/source/connector.js';
import { keyStates } from '../../src/poll/source/connector.js';
import { HighwaterError, classifyDbError, coerceError } from '../../src/errors.js';
import { ticksFromIso } from '../../src/time/ticks.js';
import * as q from './queries.js';
import { createMssqlPool, mssqlConfig, mssqlRows } from '../../src/db/sqlserver.js';

/** A SQL Server source table. Executes the builders of queries.ts; classifies every driver error once, here. */

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

export class SqlServerSource implements SourceConnector {
  readonly kind = 'sqlserver' as const;
  /** The server's time zone name, read once: null when the server cannot say it. */
  #zone: Promise<string | null> | undefined;

  constructor(private readonly pool: sql.ConnectionPool, private readonly spec: SourceTableSpec, private readonly ownsPool = false) {}

  private async run<R>(what: string, stmt: q.SqlServerStatement): Promise<R[]> {
    try {
      return await mssqlRows<R>(this.pool, stmt);
    } catch (err) {
      throw classifyDbError(err, `SQL Server source: ${what} of ${this.spec.blob.schema}.${this.spec.blob.table}`);
    }
  }

  async clock(): Promise<Ticks> {
    const [row] = await this.run<{ now_utc: string }>('reading the clock', q.clockQuery());
    return ticksFromIso(row!.now_utc);
  }

  async oldestOpenTransaction(): Promise<OldestOpenTransaction> {
    try {
      const zone = await this.serverTimeZone();
      const [row] = await mssqlRows<{ oldest_utc: string | null }>(this.pool, q.oldestOpenTransactionQuery(zone));
      const start = row?.oldest_utc ? ticksFromIso(row.oldest_utc) : null;
      if (zone !== null || start === null) return { visible: true, start };
      const caveat = `the server's time zone is unknown (CURRENT_TIMEZONE_ID() needs SQL Server 2022 or Azure SQL): open transactions are taken to have begun ${q.UNKNOWN_ZONE_MARGIN_MINUTES} minutes earlier than their local begin time says, in case a DST change lies between`;
      return { visible: true, start, caveat };
    } catch (err) {
      if (permissionDenied(err)) return { visible: false, reason: 'the login lacks VIEW SERVER STATE, which sys.dm_tran_active_transactions requires' };
      throw classifyDbError(err, 'SQL Server source: reading open transactions');
    }
  }

  async readPage(request: PageRequest): Promise<SourceRow[]> {
    return (await this.run<RawRow>(`reading ${request.step}`, q.pageQuery(this.spec, request))).map(toSourceRow);
  }

  async readMissingParentsPage(request: MissingParentsRequest): Promise<SourceRow[]> {
    return (await this.run<RawRow>('reading missing parents', q.missingParentsQuery(this.spec, request))).map(toSourceRow);
  }

  async readByKeys(keys: readonly string[]): Promise<SourceRow[]> {
    if (keys.length === 0) return [];
    return (await this.run<RawRow>('reading rows by key', q.byKeysQuery(this.spec, keys))).map(toSourceRow);
  }

  async readByPathLocators(pathLocators: readonly string[]): Promise<SourceRow[]> {
    if (pathLocators.length === 0) return [];
    return (await this.run<RawRow>('reading rows by path', q.byPathLocatorsQuery(this.spec, pathLocators))).map(toSourceRow);
  }

  async readContentSlice(key: string, offset: number, length: number): Promise<Buffer | null> {
    const [row] = await this.run<{ slice: Buffer | null }>('reading a content slice', q.contentSliceQuery(this.spec, key, offset, length));
    return row ? row.slice : null;
  }

  private serverTimeZone(): Promise<string | null> {
    this.#zone ??= this.run<{ zone: string | null }>('reading the time zone', q.serverTimeZoneQuery()).then(([row]) => row?.zone ?? null);
    this.#zone.catch(() => (this.#zone = undefined));
    return this.#zone;
  }

  async readKeyStates(request: KeyStatesRequest): Promise<KeyStates> {
    const rows = await this.run<RawRow & { sha256: Buffer | null; page_rows: number }>('reading key states', q.keyStatesQuery(this.spec, request));
    return keyStates(rows.map((r) => ({ row: toSourceRow(r), contentSha256: r.sha256 })), Number(rows[0]?.page_rows ?? 0), request.limit);
  }

  async readNullModifiedOnPage(request: NullModifiedOnRequest): Promise<SourceRow[]> {
    return (await this.run<RawRow>('reading rows with a NULL ModifiedOn', q.nullModifiedOnPageQuery(this.spec, request))).map(toSourceRow);
  }

  async countWindow(request: WindowCountRequest): Promise<number> {
    const [row] = await this.run<{ n: string | number }>('counting the rows of the window', q.countWindowQuery(this.spec, request));
    return Number(row?.n ?? 0);
  }

  async countNullModifiedOn(scope: ScopeFilter): Promise<number> {
    const [row] = await this.run<{ n: string | number }>('counting rows with a NULL ModifiedOn', q.countNullModifiedOnQuery(this.spec, scope));
    return Number(row?.n ?? 0);
  }

  async memberKeys(request: MembershipRequest): Promise<Set<string>> {
    if (request.keys.length === 0) return new Set();
    const rows = await this.run<{ key: string }>('checking which keys are replicated', q.memberKeysQuery(this.spec, request));
    return new Set(rows.map((r) => r.key));
  }

  async readContents(keys: readonly string[]): Promise<Map<string, Buffer | null>> {
    if (keys.length === 0) return new Map();
    const rows = await this.run<{ key: string; content: Buffer | null }>('reading contents', q.contentsQuery(this.spec, keys));
    return new Map(rows.map((r) => [r.key, r.content]));
  }

  async contentHashes(keys: readonly string[]): Promise<Map<string, Buffer | null>> {
    if (keys.length === 0) return new Map();
    const rows = await this.run<{ key: string; sha256: Buffer | null }>('hashing contents', q.contentHashesQuery(this.spec, keys));
    return new Map(rows.map((r) => [r.key, r.sha256]));
  }

  async close(): Promise<void> {
    if (this.ownsPool) await this.pool.close();
  }
}
