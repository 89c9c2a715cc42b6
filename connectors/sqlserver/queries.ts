import { maxdopHint } from '../../src/sql/fragments.js';
import type { SqlServerParam, SqlServerStatement, SqlServerType } from '../../src/sql/statement.js';
import type { Position, Ticks, Window } from '../../src/contract.js';
import type { KeyStatesRequest, KeyVersionsRequest, MembershipRequest, MissingParentsRequest, NullModifiedOnRequest, PageRequest, ReferencedParentsRequest, ScopeFilter, SourceTableSpec, WindowCountRequest } from '../../src/poll/source/connector.js';
import { quoteMssql } from '../../src/sql/ident.js';
import { isoFromTicks } from '../../src/time/ticks.js';

/**
 * SQL Server source statements. Pure: each builder returns `{ text, values }` with named `@parameters`, typed for
 * mssql's `request.input(name, type, value)`. Identifiers come from configuration and pass through quoteMssql only.
 *
 * Timestamps never pass through a JS Date (milliseconds): `datetime2(7)` leaves the server as ISO text
 * (`CONVERT(varchar(27), x, 126)`, exact to 100 ns) and comes back as the same text converted with style 126.
 * `ModifiedOn` is read as `CONVERT(datetime2(7), col)` and compared to datetime2(7) parameters, so a legacy
 * `datetime` column is converted the same way in the select list as in the comparisons (datetime's 1/300 s steps
 * become .0033333, not .003) and the keyset can never re-read the row it stopped at.
 *
 * The key column is assumed to be a `uniqueidentifier` (a FileTable's `stream_id`): keys leave as lower-case
 * canonical text, and key lists come back as JSON arrays converted with TRY_CONVERT(uniqueidentifier, …).
 * The keyset order is `(m.ModifiedOn, m.joinColumn)` — the same as PostgreSQL's, served by an index on the metadata
 * table — and the cursor key is compared by the server in the column's own ordering (uniqueidentifier sorts by its
 * last byte group first), never in JS.
 */

export type { SqlServerParam, SqlServerStatement, SqlServerType };

/** The statement type under the name the PostgreSQL connector uses, so both folders read alike. */
export type Statement = SqlServerStatement;

class Params {
  readonly values: Record<string, SqlServerParam> = {};

  add(name: string, type: SqlServerType, value: unknown): string {
    if (name in this.values) throw new TypeError(`parameter @${name} added twice`);
    this.values[name] = { type, value };
    return `@${name}`;
  }
}

/** Ticks as the text `CONVERT(datetime2(7), …, 126)` reads: 7 fractional digits, no zone designator (UTC implied). */
export function datetime2Text(ticks: Ticks): string {
  return isoFromTicks(ticks).slice(0, -1);
}

/** A datetime2(7) bound, sent as varchar so no driver ever rounds it to milliseconds. */
function tsParam(p: Params, name: string, ticks: Ticks): string {
  return `CONVERT(datetime2(7), ${p.add(name, 'VarChar', datetime2Text(ticks))}, 126)`;
}

/** Exact UTC text of a datetime2(7) expression. */
function isoText(expr: string): string {
  return `CONVERT(varchar(27), ${expr}, 126)`;
}

/** The canonical text of a uniqueidentifier key, the form keys take in events (lower case, like PostgreSQL's uuid). */
function keyText(expr: string): string {
  return `LOWER(CONVERT(varchar(36), ${expr}))`;
}

/** A JSON array of keys as a set of uniqueidentifiers; a value that is not a GUID becomes NULL and matches nothing. */
function keySet(p: Params, name: string, keys: readonly string[], alias: string): string {
  return `SELECT TRY_CONVERT(uniqueidentifier, ${alias}.[value]) FROM OPENJSON(${p.add(name, 'NVarChar', JSON.stringify(keys))}) AS ${alias}`;
}

interface Names {
  blob: string;
  meta: string;
  key: string;
  join: string;
  mod: string;
  parent: string;
  path: string;
}

function names(spec: SourceTableSpec, b = 'b', m = 'm'): Names {
  return {
    blob: `${quoteMssql(spec.blob.schema)}.${quoteMssql(spec.blob.table)}`,
    meta: `${quoteMssql(spec.metadata.schema)}.${quoteMssql(spec.metadata.table)}`,
    key: `${b}.${quoteMssql(spec.keyColumn)}`,
    join: `${m}.${quoteMssql(spec.metadata.joinColumn)}`,
    mod: `${m}.${quoteMssql(spec.modifiedOnColumn)}`,
    parent: `${b}.${quoteMssql(spec.columns.parentPathLocator)}`,
    path: `${b}.${quoteMssql(spec.columns.pathLocator)}`,
  };
}

/** An optional FileTable time (datetimeoffset) as exact UTC text; SWITCHOFFSET also accepts datetime2 (taken as UTC). */
function utcTimeText(column: string | null, b: string): string {
  if (column === null) return 'CAST(NULL AS varchar(27))';
  return isoText(`CONVERT(datetime2(7), SWITCHOFFSET(${b}.${quoteMssql(column)}, '+00:00'))`);
}

function selectList(spec: SourceTableSpec, p: Params, b = 'b', m = 'm'): string {
  const c = spec.columns;
  const col = (name: string) => `${b}.${quoteMssql(name)}`;
  const inline = p.add('inlineMax', 'BigInt', spec.inlineContentMaxBytes);
  const bu = spec.businessUnit ? `LOWER(CONVERT(nvarchar(100), ${m}.${quoteMssql(spec.businessUnit.column)}))` : 'CAST(NULL AS nvarchar(100))';
  return [
    `${keyText(col(spec.keyColumn))} AS [key]`,
    `${col(c.name)} AS [name]`,
    `${col(c.pathLocator)}.ToString() AS [path_locator]`,
    `${col(c.parentPathLocator)}.ToString() AS [parent_path_locator]`,
    `CONVERT(bit, ISNULL(${col(c.isDirectory)}, 0)) AS [is_directory]`,
    `DATALENGTH(${col(c.content)}) AS [content_length]`,
    // Only small content travels with the page; a large blob is read later in slices (readContentSlice).
    `CASE WHEN DATALENGTH(${col(c.content)}) <= ${inline} THEN ${col(c.content)} END AS [content]`,
    `${isoText(`CONVERT(datetime2(7), ${m}.${quoteMssql(spec.modifiedOnColumn)})`)} AS [modified_on]`,
    `${bu} AS [business_unit]`,
    `${utcTimeText(c.creationTime, b)} AS [creation_time]`,
    `${utcTimeText(c.lastWriteTime, b)} AS [last_write_time]`,
  ].join(',\n  ');
}

/**
 * READCOMMITTEDLOCK: under read-committed snapshot a reader sees the last committed version and does not wait for
 * a writer in flight; the locking read waits for it, so a row whose transaction commits while we read is seen.
 */
function fromClause(n: Names, spec: SourceTableSpec, b = 'b', m = 'm'): string {
  return `${n.blob} AS ${b} WITH (READCOMMITTEDLOCK)\n  INNER JOIN ${n.meta} AS ${m} WITH (READCOMMITTEDLOCK) ON ${m}.${quoteMssql(spec.metadata.joinColumn)} = ${b}.${quoteMssql(spec.keyColumn)}`;
}

function windowConditions(n: Names, window: Window, p: Params, prefix = 'window'): string[] {
  return [`${n.mod} > ${tsParam(p, `${prefix}Start`, window.start)}`, `${n.mod} <= ${tsParam(p, `${prefix}End`, window.end)}`];
}

/** Strictly after `(modifiedOn, key)`. The key goes as nvarchar so the server converts it to the column's type. */
function keysetCondition(n: Names, after: Position | null, p: Params): string[] {
  if (!after) return [];
  const ts = tsParam(p, 'afterTs', after.modifiedOn);
  const key = p.add('afterKey', 'NVarChar', after.key);
  return [`(${n.mod} > ${ts} OR (${n.mod} = ${ts} AND ${n.join} > ${key}))`];
}

/**
 * Business unit and exclusions. The BU table is tested with EXISTS rather than joined, so a BU listed twice there
 * cannot duplicate a row. Exclusions use NOT EXISTS because NOT IN over a set holding a NULL (an excluded key that
 * is not a GUID) would exclude every row.
 */
function scopeConditions(spec: SourceTableSpec, scope: ScopeFilter, p: Params, prefix: string, b = 'b', m = 'm'): string[] {
  const conditions: string[] = [];
  const bu = spec.businessUnit;
  if (bu && scope.businessUnit !== null) {
    conditions.push(`${m}.${quoteMssql(bu.column)} = ${p.add(`${prefix}BusinessUnit`, 'NVarChar', scope.businessUnit)}`);
  }
  if (bu?.mapTable) {
    const map = bu.mapTable;
    conditions.push(`EXISTS (SELECT 1 FROM ${quoteMssql(map.schema)}.${quoteMssql(map.table)} AS ${m}_bu WHERE ${m}_bu.${quoteMssql(map.idColumn)} = ${m}.${quoteMssql(bu.column)})`);
  }
  if (scope.excludedKeys.length > 0) {
    const excluded = p.add(`${prefix}Excluded`, 'NVarChar', JSON.stringify(scope.excludedKeys));
    conditions.push(`NOT EXISTS (SELECT 1 FROM OPENJSON(${excluded}) AS ${b}_x WHERE TRY_CONVERT(uniqueidentifier, ${b}_x.[value]) = ${b}.${quoteMssql(spec.keyColumn)})`);
  }
  return conditions;
}

export { maxdopHint };

function windowRead(select: string, from: string, where: string[], n: Names, top: string, spec: SourceTableSpec): string {
  return `SELECT TOP (${top}) ${select}\nFROM ${from}\nWHERE ${where.join('\n  AND ')}\nORDER BY ${n.mod}, ${n.join}${maxdopHint(spec.maxdop)}`;
}

/** One keyset page of the roots or children of a window, `(start, end]`, ordered by (ModifiedOn, key). */
export function pageQuery(spec: SourceTableSpec, req: PageRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const select = selectList(spec, p);
  const where = [
    ...windowConditions(n, req.window, p),
    `${n.parent} IS ${req.step === 'roots' ? '' : 'NOT '}NULL`,
    ...keysetCondition(n, req.after, p),
    ...scopeConditions(spec, req, p, 'scope'),
  ];
  const top = p.add('limit', 'Int', req.limit);
  return { text: windowRead(select, fromClause(n, spec), where, n, top, spec), values: p.values };
}

/**
 * The distinct parent path locators (hierarchyid text) of the window's children in scope: the parents the
 * missing-parents step pages, listed once per step instead of found again by every page. The BU scope applies to
 * the children (a child in scope needs its parent whatever the parent's BU); exclusions apply to both.
 */
export function referencedParentsQuery(spec: SourceTableSpec, req: ReferencedParentsRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const where = [...windowConditions(n, req.window, p), `${n.parent} IS NOT NULL`, ...scopeConditions(spec, req, p, 'child')];
  const text = `SELECT DISTINCT ${n.parent}.ToString() AS [parent_path_locator]\nFROM ${fromClause(n, spec)}\nWHERE ${where.join('\n  AND ')}${maxdopHint(spec.maxdop)}`;
  return { text, values: p.values };
}

/**
 * One keyset page of the parents at the listed paths (referencedParentsQuery), in the parents' own (ModifiedOn,
 * key) order and with no window bound on their ModifiedOn; exclusions apply to them, the BU scope does not. The
 * paths travel as a JSON list of hierarchyid text, parsed back by the server as byPathLocatorsQuery's are.
 */
export function missingParentsQuery(spec: SourceTableSpec, req: MissingParentsRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const select = selectList(spec, p);
  const paths = p.add('parents', 'NVarChar', JSON.stringify(req.parents));
  // A parent with a NULL ModifiedOn has no keyset position: the children's ancestor lookup publishes it instead.
  const where = [
    `${n.path} IN (SELECT CAST(pl.[path] AS hierarchyid) FROM OPENJSON(${paths}) WITH ([path] nvarchar(4000) '$') AS pl)`,
    `${n.mod} IS NOT NULL`,
    ...keysetCondition(n, req.after, p),
    ...scopeConditions(spec, { businessUnit: null, excludedKeys: req.excludedKeys }, p, 'parent'),
  ];
  const top = p.add('limit', 'Int', req.limit);
  return { text: windowRead(select, fromClause(n, spec), where, n, top, spec), values: p.values };
}

/** Rows by key (back-fill requests), any window and scope. */
export function byKeysQuery(spec: SourceTableSpec, keys: readonly string[]): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const select = selectList(spec, p);
  const text = `SELECT ${select}\nFROM ${fromClause(n, spec)}\nWHERE ${n.key} IN (${keySet(p, 'keys', keys, 'k')})`;
  return { text, values: p.values };
}

/**
 * Rows by their own path locator, given as hierarchyid text (`/1/2/`). CAST to hierarchyid is hierarchyid::Parse,
 * which takes nvarchar(4000), hence the typed OPENJSON column.
 */
export function byPathLocatorsQuery(spec: SourceTableSpec, pathLocators: readonly string[]): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const select = selectList(spec, p);
  const paths = p.add('paths', 'NVarChar', JSON.stringify(pathLocators));
  const text = `SELECT ${select}\nFROM ${fromClause(n, spec)}\nWHERE ${n.path} IN (SELECT CAST(pl.[path] AS hierarchyid) FROM OPENJSON(${paths}) WITH ([path] nvarchar(4000) '$') AS pl)`;
  return { text, values: p.values };
}

/**
 * A slice of one row's content: SUBSTRING on varbinary(max) is evaluated by the server, so only `length` bytes
 * cross the wire whatever the blob's size. No row means the row is gone; a NULL slice means it has no content.
 */
export function contentSliceQuery(spec: SourceTableSpec, key: string, offset: number, length: number): SqlServerStatement {
  const p = new Params();
  const content = `b.${quoteMssql(spec.columns.content)}`;
  const from = `${quoteMssql(spec.blob.schema)}.${quoteMssql(spec.blob.table)} AS b WITH (READCOMMITTEDLOCK)`;
  const start = p.add('offset', 'BigInt', offset);
  const len = p.add('length', 'Int', length);
  const k = p.add('key', 'NVarChar', key);
  const text = `SELECT SUBSTRING(${content}, ${start} + 1, ${len}) AS [slice]\nFROM ${from}\nWHERE b.${quoteMssql(spec.keyColumn)} = TRY_CONVERT(uniqueidentifier, ${k})`;
  return { text, values: p.values };
}

/** Keys in the server's uniqueidentifier order after a key, in scope, with `where` and the given select list. */
function keyOrderedRead(spec: SourceTableSpec, req: KeyVersionsRequest, select: string, where: readonly string[], p: Params): string {
  const n = names(spec);
  const all = [...where, ...(req.after === null ? [] : [`${n.key} > ${p.add('afterKey', 'NVarChar', req.after)}`]), ...scopeConditions(spec, req, p, 'scope')];
  const top = p.add('limit', 'Int', req.limit);
  return `SELECT TOP (${top}) ${select}\nFROM ${fromClause(n, spec)}\nWHERE ${all.join('\n  AND ')}\nORDER BY ${n.key}${maxdopHint(spec.maxdop)}`;
}

/**
 * One range of the late-arrival sweep: rows with a ModifiedOn, in key order after a key, in scope, as a page reads
 * them (ModifiedOn through CONVERT(datetime2(7), …) like the page query, so a legacy datetime column reads the same)
 * but without content, and `sha256` computed by the server. The range is the first `limit` keys, cut before the row
 * whose content would take the hashed bytes past `maxBytes` (the first row is always hashed).
 */
export function keyStatesQuery(spec: SourceTableSpec, req: KeyStatesRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const content = `b.${quoteMssql(spec.columns.content)}`;
  const page = keyOrderedRead(spec, req, `${n.key} AS [k], ISNULL(DATALENGTH(${content}), 0) AS [len]`, [`${n.mod} IS NOT NULL`], p).replace(/\nOPTION \(MAXDOP \d+\)$/, '');
  const select = selectList({ ...spec, inlineContentMaxBytes: -1 }, p);
  const budget = p.add('maxBytes', 'BigInt', req.maxBytes);
  const text = `WITH [page] AS (
${page}
), [ranged] AS (
  SELECT [k], [len], SUM([len]) OVER (ORDER BY [k] ROWS UNBOUNDED PRECEDING) AS [upto] FROM [page]
)
SELECT ${select},
  HASHBYTES('SHA2_256', ${content}) AS [sha256], (SELECT COUNT(*) FROM [page]) AS [page_rows]
FROM ${fromClause(n, spec)}
  INNER JOIN [ranged] AS r ON r.[k] = ${n.key}
WHERE r.[upto] - r.[len] <= ${budget}
ORDER BY ${n.key}${maxdopHint(spec.maxdop)}`;
  return { text, values: p.values };
}

/** One page of the in-scope rows whose ModifiedOn is NULL, in key order after a key. */
export function nullModifiedOnPageQuery(spec: SourceTableSpec, req: NullModifiedOnRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  return { text: keyOrderedRead(spec, req, selectList(spec, p), [`${n.mod} IS NULL`], p), values: p.values };
}

/** The rows the window's steps will read, for the progress bar's total: a range of the (ModifiedOn, key) index, no content. */
export function countWindowQuery(spec: SourceTableSpec, req: WindowCountRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const where = [...windowConditions(n, req.window, p), ...scopeConditions(spec, req, p, 'scope')];
  return { text: `SELECT COUNT_BIG(*) AS [n]\nFROM ${fromClause(n, spec)}\nWHERE ${where.join('\n  AND ')}${maxdopHint(spec.maxdop)}`, values: p.values };
}

export function countNullModifiedOnQuery(spec: SourceTableSpec, scope: ScopeFilter): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const where = [`${n.mod} IS NULL`, ...scopeConditions(spec, scope, p, 'scope')];
  return { text: `SELECT COUNT_BIG(*) AS [n]\nFROM ${fromClause(n, spec)}\nWHERE ${where.join('\n  AND ')}${maxdopHint(spec.maxdop)}`, values: p.values };
}

/** Which of the keys are in the replicated set: blob ⋈ metadata (⋈ BU map), in scope, not excluded. */
export function memberKeysQuery(spec: SourceTableSpec, req: MembershipRequest): SqlServerStatement {
  const p = new Params();
  const n = names(spec);
  const where = [`${n.key} IN (${keySet(p, 'keys', req.keys, 'k')})`, ...scopeConditions(spec, req, p, 'scope')];
  return { text: `SELECT ${keyText(n.key)} AS [key]\nFROM ${fromClause(n, spec)}\nWHERE ${where.join('\n  AND ')}`, values: p.values };
}

/** The whole content of several rows, by key (rows small enough for one record each). */
export function contentsQuery(spec: SourceTableSpec, keys: readonly string[]): SqlServerStatement {
  const p = new Params();
  const key = `b.${quoteMssql(spec.keyColumn)}`;
  const from = `${quoteMssql(spec.blob.schema)}.${quoteMssql(spec.blob.table)} AS b WITH (READCOMMITTEDLOCK)`;
  const text = `SELECT ${keyText(key)} AS [key], b.${quoteMssql(spec.columns.content)} AS [content]\nFROM ${from}\nWHERE ${key} IN (${keySet(p, 'keys', keys, 'k')})`;
  return { text, values: p.values };
}

/** SHA-256 of each row's content, computed by the server (HASHBYTES takes varbinary(max) from SQL Server 2016). */
export function contentHashesQuery(spec: SourceTableSpec, keys: readonly string[]): SqlServerStatement {
  const p = new Params();
  const key = `b.${quoteMssql(spec.keyColumn)}`;
  const from = `${quoteMssql(spec.blob.schema)}.${quoteMssql(spec.blob.table)} AS b WITH (READCOMMITTEDLOCK)`;
  const text = `SELECT ${keyText(key)} AS [key], HASHBYTES('SHA2_256', b.${quoteMssql(spec.columns.content)}) AS [sha256]\nFROM ${from}\nWHERE ${key} IN (${keySet(p, 'keys', keys, 'k')})`;
  return { text, values: p.values };
}

/** The server's UTC clock, exact to 100 ns. */
export function clockQuery(): SqlServerStatement {
  return { text: `SELECT ${isoText('SYSUTCDATETIME()')} AS [now_utc]`, values: {} };
}

/** How long before a DST change's hour the clamp moves when the server's time zone is unknown (see below). */
export const UNKNOWN_ZONE_MARGIN_MINUTES = 60;

/**
 * Start of the oldest open user transaction (other than ours) that is in this database or has touched it, whether
 * or not it has written yet — one that only read so far may still write rows stamped before the window end. As UTC:
 * `transaction_begin_time` is the server's LOCAL time (datetime).
 * - With the server's time zone known (`zone`, from CURRENT_TIMEZONE_ID(), SQL Server 2022 and Azure SQL), the local
 *   time is converted with AT TIME ZONE, which applies the offset in force at that moment: a DST change between the
 *   transaction's start and now does not move it. In the repeated hour after a fall-back change AT TIME ZONE takes
 *   the offset before the change, the earlier of the two instants, which is the conservative one.
 * - Without it, the current offset is applied and the result moved UNKNOWN_ZONE_MARGIN_MINUTES earlier, so a DST
 *   change since the transaction began cannot place it after its true start.
 * Either way it is then moved 4 ms earlier, because datetime rounds to 1/300 s. The DMVs need VIEW SERVER STATE;
 * without it the server raises an error, which the connector reports as not visible.
 */
export function oldestOpenTransactionQuery(zone: string | null): SqlServerStatement {
  const p = new Params();
  const begin = 'CONVERT(datetime2(7), MIN(a.transaction_begin_time))';
  const utc = zone === null
    ? `DATEADD(MINUTE, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()) - ${UNKNOWN_ZONE_MARGIN_MINUTES}, ${begin})`
    : `CONVERT(datetime2(7), (${begin} AT TIME ZONE ${p.add('zone', 'NVarChar', zone)}) AT TIME ZONE 'UTC')`;
  const text = `SELECT ${isoText(`DATEADD(MILLISECOND, -4, ${utc})`)} AS [oldest_utc]
FROM sys.dm_tran_active_transactions AS a
  INNER JOIN sys.dm_tran_session_transactions AS st ON st.transaction_id = a.transaction_id
  INNER JOIN sys.dm_exec_sessions AS s ON s.session_id = st.session_id
WHERE st.session_id <> @@SPID
  AND st.is_user_transaction = 1
  AND a.transaction_type IN (1, 4)
  AND (s.database_id = DB_ID()
    OR EXISTS (SELECT 1 FROM sys.dm_tran_database_transactions AS d WHERE d.transaction_id = a.transaction_id AND d.database_id = DB_ID()))`;
  return { text, values: p.values };
}

/**
 * The server's Windows time zone name, where SQL Server can say it (2022 and Azure SQL); a NULL elsewhere. The
 * function does not exist on older servers, so it is called through sp_executesql only when the version has it.
 */
export function serverTimeZoneQuery(): SqlServerStatement {
  return {
    text: `DECLARE @zone nvarchar(128) = NULL;
IF CONVERT(int, SERVERPROPERTY('ProductMajorVersion')) >= 16 OR CONVERT(int, SERVERPROPERTY('EngineEdition')) IN (5, 8)
  EXEC sp_executesql N'SELECT @z = CURRENT_TIMEZONE_ID()', N'@z nvarchar(128) OUTPUT', @z = @zone OUTPUT;
SELECT @zone AS [zone];`,
    values: {},
  };
}
