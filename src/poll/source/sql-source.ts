import type { SourceRow, Ticks } from '../../contract.js';
import { classifyDbError } from '../../errors.js';
import type {
  KeyState,
  KeyStates,
  KeyStatesRequest,
  MembershipRequest,
  MissingParentsRequest,
  NullModifiedOnRequest,
  OldestOpenTransaction,
  PageRequest,
  ReferencedParentsRequest,
  ScopeFilter,
  SourceConnector,
  SourceTableSpec,
  WindowCountRequest,
} from './connector.js';
import { keyStates } from './connector.js';

/**
 * The source connector written once: every read is "build the engine's statement, run it, map its rows", with the
 * driver's errors classified here. What differs per engine is a dialect (its pure builders of queries.ts and the
 * mapping of its raw rows) and an executor (its driver), both in connectors/<engine>/source.ts.
 */

/** Runs one statement of the engine: the driver's error is thrown as it is (SqlSource classifies it). */
export interface SourceExecutor<S> {
  rows<R>(stmt: S): Promise<R[]>;
  close(): Promise<void>;
}

/** Runs one statement with its driver error classified under `what` (a phrase: "reading the clock"). */
export type SourceRun<S> = <R>(what: string, stmt: S) => Promise<R[]>;

/** What differs per engine: pure builders (connectors/<engine>/queries.ts) and raw-row mapping. */
export interface SourceDialect<S, R> {
  readonly kind: SourceConnector['kind'];
  /** The engine's name in error messages ("PostgreSQL"). */
  readonly engine: string;
  toSourceRow(raw: R): SourceRow;
  /** The content hash and the page size (before the byte cut) of one key-states row. */
  keyState(raw: R): { readonly contentSha256: Buffer | null; readonly pageRows: number };
  clock(run: SourceRun<S>): Promise<Ticks>;
  /** The executor is passed as well: an engine may need a driver error unclassified (SQL Server's permissions). */
  oldestOpenTransaction(run: SourceRun<S>, executor: SourceExecutor<S>): Promise<OldestOpenTransaction>;
  pageQuery(spec: SourceTableSpec, req: PageRequest): S;
  referencedParentsQuery(spec: SourceTableSpec, req: ReferencedParentsRequest): S;
  missingParentsQuery(spec: SourceTableSpec, req: MissingParentsRequest): S;
  byKeysQuery(spec: SourceTableSpec, keys: readonly string[]): S;
  byPathLocatorsQuery(spec: SourceTableSpec, pathLocators: readonly string[]): S;
  contentSliceQuery(spec: SourceTableSpec, key: string, offset: number, length: number): S;
  keyStatesQuery(spec: SourceTableSpec, req: KeyStatesRequest): S;
  nullModifiedOnPageQuery(spec: SourceTableSpec, req: NullModifiedOnRequest): S;
  countWindowQuery(spec: SourceTableSpec, req: WindowCountRequest): S;
  countNullModifiedOnQuery(spec: SourceTableSpec, scope: ScopeFilter): S;
  memberKeysQuery(spec: SourceTableSpec, req: MembershipRequest): S;
  contentsQuery(spec: SourceTableSpec, keys: readonly string[]): S;
  contentHashesQuery(spec: SourceTableSpec, keys: readonly string[]): S;
}

export class SqlSource<S, R> implements SourceConnector {
  readonly kind: SourceConnector['kind'];
  readonly #run: SourceRun<S>;

  constructor(
    private readonly dialect: SourceDialect<S, R>,
    private readonly executor: SourceExecutor<S>,
    private readonly spec: SourceTableSpec,
  ) {
    this.kind = dialect.kind;
    this.#run = async <T>(what: string, stmt: S): Promise<T[]> => {
      try {
        return await executor.rows<T>(stmt);
      } catch (err) {
        throw classifyDbError(err, `${dialect.engine} source: ${what} of ${spec.blob.schema}.${spec.blob.table}`);
      }
    };
  }

  clock(): Promise<Ticks> {
    return this.dialect.clock(this.#run);
  }

  oldestOpenTransaction(): Promise<OldestOpenTransaction> {
    return this.dialect.oldestOpenTransaction(this.#run, this.executor);
  }

  readPage(request: PageRequest): Promise<SourceRow[]> {
    return this.#rows(`reading ${request.step}`, this.dialect.pageQuery(this.spec, request));
  }

  async readReferencedParents(request: ReferencedParentsRequest): Promise<string[]> {
    const rows = await this.#run<{ parent_path_locator: string }>(
      'listing the parents of the window',
      this.dialect.referencedParentsQuery(this.spec, request),
    );
    return rows.map((r) => r.parent_path_locator);
  }

  async readMissingParentsPage(request: MissingParentsRequest): Promise<SourceRow[]> {
    if (request.parents.length === 0) return [];
    return this.#rows('reading missing parents', this.dialect.missingParentsQuery(this.spec, request));
  }

  async readByKeys(keys: readonly string[]): Promise<SourceRow[]> {
    if (keys.length === 0) return [];
    return this.#rows('reading rows by key', this.dialect.byKeysQuery(this.spec, keys));
  }

  async readByPathLocators(pathLocators: readonly string[]): Promise<SourceRow[]> {
    if (pathLocators.length === 0) return [];
    return this.#rows('reading rows by path', this.dialect.byPathLocatorsQuery(this.spec, pathLocators));
  }

  async readContentSlice(key: string, offset: number, length: number): Promise<Buffer | null> {
    const stmt = this.dialect.contentSliceQuery(this.spec, key, offset, length);
    const [row] = await this.#run<{ slice: Buffer | null }>('reading a content slice', stmt);
    return row ? row.slice : null;
  }

  async readKeyStates(request: KeyStatesRequest): Promise<KeyStates> {
    const rows = await this.#run<R>('reading key states', this.dialect.keyStatesQuery(this.spec, request));
    const states: KeyState[] = rows.map((r) => ({
      row: this.dialect.toSourceRow(r),
      contentSha256: this.dialect.keyState(r).contentSha256,
    }));
    return keyStates(states, rows[0] === undefined ? 0 : this.dialect.keyState(rows[0]).pageRows, request.limit);
  }

  readNullModifiedOnPage(request: NullModifiedOnRequest): Promise<SourceRow[]> {
    return this.#rows('reading rows with a NULL ModifiedOn', this.dialect.nullModifiedOnPageQuery(this.spec, request));
  }

  countWindow(request: WindowCountRequest): Promise<number> {
    return this.#count('counting the rows of the window', this.dialect.countWindowQuery(this.spec, request));
  }

  countNullModifiedOn(scope: ScopeFilter): Promise<number> {
    return this.#count('counting rows with a NULL ModifiedOn', this.dialect.countNullModifiedOnQuery(this.spec, scope));
  }

  async memberKeys(request: MembershipRequest): Promise<Set<string>> {
    if (request.keys.length === 0) return new Set();
    const rows = await this.#run<{ key: string }>('checking which keys are replicated', this.dialect.memberKeysQuery(this.spec, request));
    return new Set(rows.map((r) => r.key));
  }

  async readContents(keys: readonly string[]): Promise<Map<string, Buffer | null>> {
    if (keys.length === 0) return new Map();
    const rows = await this.#run<{ key: string; content: Buffer | null }>('reading contents', this.dialect.contentsQuery(this.spec, keys));
    return new Map(rows.map((r) => [r.key, r.content]));
  }

  async contentHashes(keys: readonly string[]): Promise<Map<string, Buffer | null>> {
    if (keys.length === 0) return new Map();
    const rows = await this.#run<{ key: string; sha256: Buffer | null }>(
      'hashing contents',
      this.dialect.contentHashesQuery(this.spec, keys),
    );
    return new Map(rows.map((r) => [r.key, r.sha256]));
  }

  close(): Promise<void> {
    return this.executor.close();
  }

  async #rows(what: string, stmt: S): Promise<SourceRow[]> {
    return (await this.#run<R>(what, stmt)).map((r) => this.dialect.toSourceRow(r));
  }

  /** Drivers return COUNT_BIG / count(*) as a string or a number; no row counts as zero. */
  async #count(what: string, stmt: S): Promise<number> {
    const [row] = await this.#run<{ n: string | number }>(what, stmt);
    return Number(row?.n ?? 0);
  }
}
