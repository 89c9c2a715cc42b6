import type { Position, SourceRow, Ticks, Window } from '../../contract.js';

/**
 * What the poller needs from a source database. Implemented once (SqlSource, sql-source.ts) over one dialect per
 * engine in connectors/<engine>/, each with the same file names: queries.ts (pure builders returning
 * { text, values }) and source.ts (the engine's dialect, executor and connector class).
 * Every comparison of keys and timestamps happens in the source database, in its own ordering.
 */

/** The window steps that page the source directly (missing parents page a set of paths, see `readMissingParentsPage`). */
export type PageStep = 'roots' | 'children';

export interface ScopeFilter {
  /** Business unit id to restrict to, or null for all. */
  readonly businessUnit: string | null;
  /** Keys never read (the table's list plus the global list). */
  readonly excludedKeys: readonly string[];
}

export interface PageRequest extends ScopeFilter {
  readonly step: PageStep;
  /** Rows with `window.start < ModifiedOn <= window.end`. */
  readonly window: Window;
  /** Rows strictly after this position in (ModifiedOn, key) order; null starts at the window start. */
  readonly after: Position | null;
  readonly limit: number;
}

export interface WindowCountRequest extends ScopeFilter {
  readonly window: Window;
}

/** The children of this window in scope, whose parents the missing-parents step reads (see `readReferencedParents`). */
export type ReferencedParentsRequest = WindowCountRequest;

export interface MissingParentsRequest {
  /**
   * Path locators (text, as rows carry them) of the parents to page: those the window's children in scope reference
   * (`readReferencedParents`), listed once per step rather than found again by every page.
   */
  readonly parents: readonly string[];
  /** Keys never read (a parent is read whatever its BU: the scope applies to the children, in the listing). */
  readonly excludedKeys: readonly string[];
  /** Keyset position over the parents' own (ModifiedOn, key). */
  readonly after: Position | null;
  readonly limit: number;
}

export interface KeyVersionsRequest extends ScopeFilter {
  /** Keys strictly after this one in the source's own key order; null starts at the first key. */
  readonly after: string | null;
  readonly limit: number;
}

/** Rows with a NULL ModifiedOn, in scope, in the source's key order after a key (they belong to no window). */
export type NullModifiedOnRequest = KeyVersionsRequest;

export interface KeyStatesRequest extends KeyVersionsRequest {
  /** Content hashed per call at most (the first row always is): the range ends before the row that would pass it. */
  readonly maxBytes: number;
}

/** A row as the windows would read it but without its content, and the SHA-256 of that content, from the database. */
export interface KeyState {
  readonly row: SourceRow;
  readonly contentSha256: Buffer | null;
}

export interface KeyStates {
  readonly states: KeyState[];
  /** True when the range reached the last key in scope: the next range starts from the first again. */
  readonly endOfKeys: boolean;
}

export interface MembershipRequest extends ScopeFilter {
  readonly keys: readonly string[];
}



export type OldestOpenTransaction =
  /** `caveat`: transactions whose start the database does not show (prepared ones), reported with every window. */
  | { readonly visible: true; readonly start: Ticks | null; readonly caveat?: string }
  | { readonly visible: false; readonly reason: string };

export interface SourceConnector {
  readonly kind: 'postgres' | 'sqlserver';
  /** The source database's clock (UTC ticks): window ends are computed from it, never from the host's clock. */
  clock(): Promise<Ticks>;
  /** Start of the oldest open write transaction, when the database shows it to this login. */
  oldestOpenTransaction(): Promise<OldestOpenTransaction>;
  /** One keyset page of a window step, ordered by (ModifiedOn, key). Content is inline up to the inline limit. */
  readPage(request: PageRequest): Promise<SourceRow[]>;
  /** The distinct parent path locators (text) of the window's children in scope, in no particular order. */
  readReferencedParents(request: ReferencedParentsRequest): Promise<string[]>;
  /**
   * One keyset page of the rows at the given parent paths, ordered by their own (ModifiedOn, key), whatever their
   * BU, not excluded, and with a ModifiedOn (a NULL one has no keyset position: the children's ancestor lookup
   * publishes such a parent).
   */
  readMissingParentsPage(request: MissingParentsRequest): Promise<SourceRow[]>;
  /** Rows by key (back-fill requests), with the same shape as a page. */
  readByKeys(keys: readonly string[]): Promise<SourceRow[]>;
  /** Rows by their own path locator (parents of a child). */
  readByPathLocators(pathLocators: readonly string[]): Promise<SourceRow[]>;
  /** A slice of one row's content, for blobs above the inline limit; null when the row is gone. */
  readContentSlice(key: string, offset: number, length: number): Promise<Buffer | null>;
  /** The whole content of several rows in one round trip (rows small enough for one record); absent when gone. */
  readContents(keys: readonly string[]): Promise<Map<string, Buffer | null>>;
  /**
   * Rows with a ModifiedOn, in scope, in the source's key order after a key, without their content but with its
   * hash computed by the database, cut at `maxBytes` of content: the late-arrival sweep compares these with the
   * registry to find what no window will read (late commits, restores, changes that kept their ModifiedOn).
   */
  readKeyStates(request: KeyStatesRequest): Promise<KeyStates>;
  /** One page of the rows whose ModifiedOn is NULL, in scope, in key order (the `nulls` step). */
  readNullModifiedOnPage(request: NullModifiedOnRequest): Promise<SourceRow[]>;
  /** How many rows in scope the window's roots and children steps read (the progress bar's total). */
  countWindow(request: WindowCountRequest): Promise<number>;
  /** How many rows in scope have a NULL ModifiedOn (reported per run). */
  countNullModifiedOn(scope: ScopeFilter): Promise<number>;
  /**
   * Which of these keys are in the replicated set: the blob row joined to its metadata row (and to the BU map when
   * there is one), in scope, not excluded — the same set the window queries read (the delete sweep).
   */
  memberKeys(request: MembershipRequest): Promise<Set<string>>;
  /** SHA-256 of the content of these rows, computed by the database (null for NULL content; absent when gone). */
  contentHashes(keys: readonly string[]): Promise<Map<string, Buffer | null>>;
  close(): Promise<void>;
}

/** Settings a connector is built with, derived from the table and database configuration. */
export interface SourceTableSpec {
  readonly blob: { readonly schema: string; readonly table: string };
  readonly metadata: { readonly schema: string; readonly table: string; readonly joinColumn: string };
  readonly keyColumn: string;
  readonly modifiedOnColumn: string;
  readonly columns: {
    readonly name: string;
    readonly content: string;
    readonly isDirectory: string;
    readonly pathLocator: string;
    readonly parentPathLocator: string;
    readonly creationTime: string | null;
    readonly lastWriteTime: string | null;
  };
  readonly businessUnit?: {
    readonly column: string;
    readonly mapTable?: { readonly schema: string; readonly table: string; readonly idColumn: string } | undefined;
  } | undefined;
  /** Content longer than this is not read in the page query (contentLength is set, content is null). */
  readonly inlineContentMaxBytes: number;
  /** SQL Server only: OPTION (MAXDOP n). */
  readonly maxdop: number | null;
}

/**
 * The result of one key-states range: the range reached the end of the keys when its page (before the byte budget
 * cut it) held fewer keys than asked for and every one of them came back. Pure.
 */
export function keyStates(states: KeyState[], pageRows: number, limit: number): KeyStates {
  return { states, endOfKeys: pageRows < limit && states.length === pageRows };
}
