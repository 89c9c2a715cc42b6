import pg from 'pg';
import type { SourceRow } from '../../src/contract.js';
import type {
  KeyStates, KeyStatesRequest, MembershipRequest, MissingParentsRequest, NullModifiedOnRequest, OldestOpenTransaction, PageRequest,
  ScopeFilter, SourceConnector, SourceTableSpec, WindowCountRequest,
} from '../../src/poll/source/connector.js';
import { keyStates } from '../../src/poll/source/connector.js';
import { isoFromTicks, minTicks } from '../../src/time/ticks.js';
import { classifyDbError } from '../../src/errors.js';
import * as q from './queries.js';
import { createPgPool } from '../../src/db/postgres.js';

/** A PostgreSQL source table. Executes the builders of queries.ts; classifies every driver error once, here. */

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

export class PostgresSource implements SourceConnector {
  readonly kind = 'postgres' as const;

  constructor(private readonly pool: pg.Pool, private readonly spec: SourceTableSpec, private readonly ownsPool = false) {}

  private async run<R extends pg.QueryResultRow>(what: string, stmt: q.Statement): Promise<R[]> {
    try {
      const result = await this.pool.query<R>(stmt.text, stmt.values as unknown[]);
      return result.rows;
    } catch (err) {
      throw classifyDbError(err, `PostgreSQL source: ${what} of ${this.spec.blob.schema}.${this.spec.blob.table}`);
    }
  }

  async clock(): Promise<bigint> {
    const [row] = await this.run<{ now_ticks: string }>('reading the clock', q.clockQuery());
    return BigInt(row!.now_ticks);
  }

  async oldestOpenTransaction(): Promise<OldestOpenTransaction> {
    type Row = { oldest_ticks: string | null; oldest_prepared_ticks: string | null; prepared: number; visible: boolean | null };
    const [row] = await this.run<Row>('reading open transactions', q.oldestOpenTransactionQuery());
    if (!row?.visible) return { visible: false, reason: 'the login is neither superuser nor a member of pg_read_all_stats' };
    const open = row.oldest_ticks === null ? null : BigInt(row.oldest_ticks);
    if (row.oldest_prepared_ticks === null) return { visible: true, start: open };
    const prepared = BigInt(row.oldest_prepared_ticks);
    const caveat = `${row.prepared} prepared transaction(s), the oldest prepared at ${isoFromTicks(prepared)}: PostgreSQL does not record when they began, so rows they commit may be stamped earlier than the window end; the late-arrival sweep finds those`;
    return { visible: true, start: open === null ? prepared : minTicks(open, prepared), caveat };
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

  async readKeyStates(request: KeyStatesRequest): Promise<KeyStates> {
    const rows = await this.run<RawRow & { content_sha256: Buffer | null; page_rows: number }>('reading key states', q.keyStatesQuery(this.spec, request));
    return keyStates(rows.map((r) => ({ row: toSourceRow(r), contentSha256: r.content_sha256 })), rows[0]?.page_rows ?? 0, request.limit);
  }

  async readNullModifiedOnPage(request: NullModifiedOnRequest): Promise<SourceRow[]> {
    return (await this.run<RawRow>('reading rows with a NULL ModifiedOn', q.nullModifiedOnPageQuery(this.spec, request))).map(toSourceRow);
  }

  async countWindow(request: WindowCountRequest): Promise<number> {
    const [row] = await this.run<{ n: string }>('counting the rows of the window', q.countWindowQuery(this.spec, request));
    return Number(row?.n ?? 0);
  }

  async countNullModifiedOn(scope: ScopeFilter): Promise<number> {
    const [row] = await this.run<{ n: string }>('counting rows with a NULL ModifiedOn', q.countNullModifiedOnQuery(this.spec, scope));
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
    if (this.ownsPool) await this.pool.end();
  }
}
