import { pgTicksText } from '../../src/sql/fragments.js';
import { PgParams, type PgStatement } from '../../src/sql/statement.js';
import type { Position, Ticks, Window } from '../../src/contract.js';
import type { KeyStatesRequest, KeyVersionsRequest, MembershipRequest, MissingParentsRequest, NullModifiedOnRequest, PageRequest, ReferencedParentsRequest, ScopeFilter, SourceTableSpec, WindowCountRequest } from '../../src/poll/source/connector.js';
import { quotePg } from '../../src/sql/ident.js';
import { isoFromTicks } from '../../src/time/ticks.js';

/**
 * PostgreSQL source statements. Pure: each builder returns `{ text, values }`. Timestamps leave the database as
 * exact tick counts (`extract(epoch …)` is numeric, exact to the microsecond) and come back as ISO text cast to
 * timestamptz; sessions run with TimeZone=UTC so `timestamp without time zone` columns compare as UTC.
 * Keyset order is `(m.ModifiedOn, m.joinColumn)`, which an index on the metadata table serves directly.
 */

export type Statement = PgStatement;

export const ticksExpr = pgTicksText;

/** PostgreSQL holds microseconds: a tick bound is rendered with 6 digits, rounded down (bounds come from PG anyway). */
function tsParam(p: PgParams, ticks: Ticks): string {
  return `${p.add(isoFromTicks(ticks - (((ticks % 10n) + 10n) % 10n), 6))}::timestamptz`;
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

function names(spec: SourceTableSpec, blobAlias = 'b', metaAlias = 'm'): Names {
  return {
    blob: `${quotePg(spec.blob.schema)}.${quotePg(spec.blob.table)}`,
    meta: `${quotePg(spec.metadata.schema)}.${quotePg(spec.metadata.table)}`,
    key: `${blobAlias}.${quotePg(spec.keyColumn)}`,
    join: `${metaAlias}.${quotePg(spec.metadata.joinColumn)}`,
    mod: `${metaAlias}.${quotePg(spec.modifiedOnColumn)}`,
    parent: `${blobAlias}.${quotePg(spec.columns.parentPathLocator)}`,
    path: `${blobAlias}.${quotePg(spec.columns.pathLocator)}`,
  };
}

function selectList(spec: SourceTableSpec, p: PgParams, b = 'b', m = 'm'): string {
  const c = spec.columns;
  const col = (name: string) => `${b}.${quotePg(name)}`;
  const inline = p.add(spec.inlineContentMaxBytes);
  const optionalTicks = (name: string | null) => (name ? ticksExpr(col(name)) : 'NULL::text');
  const bu = spec.businessUnit ? `${m}.${quotePg(spec.businessUnit.column)}::text` : 'NULL::text';
  return [
    `${col(spec.keyColumn)}::text AS key`,
    `${col(c.name)}::text AS name`,
    `${col(c.pathLocator)}::text AS path_locator`,
    `${col(c.parentPathLocator)}::text AS parent_path_locator`,
    `coalesce(${col(c.isDirectory)}, false) AS is_directory`,
    `octet_length(${col(c.content)}) AS content_length`,
    `CASE WHEN octet_length(${col(c.content)}) <= ${inline} THEN ${col(c.content)} END AS content`,
    `${ticksExpr(`${m}.${quotePg(spec.modifiedOnColumn)}`)} AS modified_on_ticks`,
    `${bu} AS business_unit`,
    `${optionalTicks(c.creationTime)} AS creation_time_ticks`,
    `${optionalTicks(c.lastWriteTime)} AS last_write_time_ticks`,
  ].join(',\n  ');
}

function fromClause(spec: SourceTableSpec, n: Names, b = 'b', m = 'm'): string {
  let from = `${n.blob} AS ${b}\n  JOIN ${n.meta} AS ${m} ON ${m}.${quotePg(spec.metadata.joinColumn)} = ${b}.${quotePg(spec.keyColumn)}`;
  const map = spec.businessUnit?.mapTable;
  if (map && spec.businessUnit) {
    from += `\n  JOIN ${quotePg(map.schema)}.${quotePg(map.table)} AS bu_${m} ON bu_${m}.${quotePg(map.idColumn)} = ${m}.${quotePg(spec.businessUnit.column)}`;
  }
  return from;
}

function scopeConditions(spec: SourceTableSpec, scope: ScopeFilter, p: PgParams, b = 'b', m = 'm'): string[] {
  const conditions: string[] = [];
  if (scope.businessUnit !== null && spec.businessUnit) {
    // GUID text is compared case-insensitively, as SQL Server compares uniqueidentifier values.
    conditions.push(`lower(${m}.${quotePg(spec.businessUnit.column)}::text) = lower(${p.add(scope.businessUnit)})`);
  }
  if (scope.excludedKeys.length > 0) {
    conditions.push(`lower(${b}.${quotePg(spec.keyColumn)}::text) <> ALL(${p.add(scope.excludedKeys.map((k) => k.toLowerCase()))}::text[])`);
  }
  return conditions;
}

function windowConditions(n: Names, window: Window, p: PgParams): string[] {
  return [`${n.mod} > ${tsParam(p, window.start)}`, `${n.mod} <= ${tsParam(p, window.end)}`];
}

function keysetCondition(n: Names, after: Position | null, p: PgParams): string[] {
  if (!after) return [];
  return [`(${n.mod}, ${n.join}) > (${tsParam(p, after.modifiedOn)}, ${p.add(after.key)})`];
}

/** One keyset page of the roots or children of a window. */
export function pageQuery(spec: SourceTableSpec, req: PageRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const select = selectList(spec, p);
  const where = [
    ...windowConditions(n, req.window, p),
    `${n.parent} IS ${req.step === 'roots' ? '' : 'NOT '}NULL`,
    ...keysetCondition(n, req.after, p),
    ...scopeConditions(spec, req, p),
  ];
  const text = `SELECT ${select}\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}\nORDER BY ${n.mod}, ${n.join}\nLIMIT ${p.add(req.limit)}`;
  return { text, values: p.values };
}

/**
 * The distinct parent path locators of the window's children in scope: the parents the missing-parents step pages,
 * listed once per step. The scope (BU) applies to the children, not the parents: a child in scope needs its parent
 * whatever the parent's BU. One range scan of the window, instead of one per page of parents (a semi-join over
 * every child of the window in each page cost about 0.5 s a page at 100k rows).
 */
export function referencedParentsQuery(spec: SourceTableSpec, req: ReferencedParentsRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const where = [...windowConditions(n, req.window, p), `${n.parent} IS NOT NULL`, ...scopeConditions(spec, req, p)];
  return { text: `SELECT DISTINCT ${n.parent}::text AS parent_path_locator\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}`, values: p.values };
}

/**
 * One keyset page of the parents at the listed paths (referencedParentsQuery), in the parents' own (ModifiedOn, key)
 * order and with no window bound on their ModifiedOn; exclusions apply to them, the BU scope does not (it applied to
 * the children). Parents whose ModifiedOn is NULL are left to the ancestor lookup of the children step (they have
 * no keyset position). The paths compare as text, as byPathLocatorsQuery's do.
 */
export function missingParentsQuery(spec: SourceTableSpec, req: MissingParentsRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const select = selectList(spec, p);
  const where = [
    `${n.path}::text = ANY(${p.add([...req.parents])}::text[])`,
    `${n.mod} IS NOT NULL`,
    ...keysetCondition(n, req.after, p),
    ...scopeConditions(spec, { businessUnit: null, excludedKeys: req.excludedKeys }, p),
  ];
  const text = `SELECT ${select}\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}\nORDER BY ${n.mod}, ${n.join}\nLIMIT ${p.add(req.limit)}`;
  return { text, values: p.values };
}

/**
 * `key = ANY($n)` with an untyped array parameter: PostgreSQL types it as an array of the key column's own type, so
 * the primary key's index serves the lookup (a `key::text = ANY(…)` would scan the whole table).
 */
function keyIn(n: Names, p: PgParams, keys: readonly string[]): string {
  return `${n.key} = ANY(${p.add([...keys])})`;
}

export function byKeysQuery(spec: SourceTableSpec, keys: readonly string[]): Statement {
  const p = new PgParams();
  const n = names(spec);
  const select = selectList(spec, p);
  return { text: `SELECT ${select}\nFROM ${fromClause(spec, n)}\nWHERE ${keyIn(n, p, keys)}`, values: p.values };
}

export function byPathLocatorsQuery(spec: SourceTableSpec, paths: readonly string[]): Statement {
  const p = new PgParams();
  const n = names(spec);
  const select = selectList(spec, p);
  return { text: `SELECT ${select}\nFROM ${fromClause(spec, n)}\nWHERE ${n.path}::text = ANY(${p.add([...paths])}::text[])`, values: p.values };
}

/** A slice of content (`substring` on bytea reads only the TOAST chunks it needs when the column is EXTERNAL). */
export function contentSliceQuery(spec: SourceTableSpec, key: string, offset: number, length: number): Statement {
  const col = quotePg(spec.columns.content);
  return {
    text: `SELECT substring(${col} FROM $1 FOR $2) AS slice FROM ${quotePg(spec.blob.schema)}.${quotePg(spec.blob.table)} WHERE ${quotePg(spec.keyColumn)} = $3`,
    values: [offset + 1, length, key],
  };
}

/**
 * One range of the late-arrival sweep: rows with a ModifiedOn, in key order after a key, in scope, as a page reads
 * them but without content, and `content_sha256` computed by PostgreSQL. The range is the first `limit` keys, cut
 * before the row whose content would take the hashed bytes past `maxBytes` (the first row is always hashed).
 */
export function keyStatesQuery(spec: SourceTableSpec, req: KeyStatesRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const content = `b.${quotePg(spec.columns.content)}`;
  const where = [`${n.mod} IS NOT NULL`, ...(req.after === null ? [] : [`${n.key} > ${p.add(req.after)}`]), ...scopeConditions(spec, req, p)];
  const page = `SELECT ${n.key} AS k, coalesce(octet_length(${content}), 0)::bigint AS len FROM ${fromClause(spec, n)}
    WHERE ${where.join(' AND ')} ORDER BY ${n.key} LIMIT ${p.add(req.limit)}`;
  const ranged = 'SELECT k, len, sum(len) OVER (ORDER BY k ROWS UNBOUNDED PRECEDING) AS upto FROM page';
  const select = selectList({ ...spec, inlineContentMaxBytes: -1 }, p);
  const text = `WITH page AS (${page}), ranged AS (${ranged})
SELECT ${select},\n  sha256(${content}) AS content_sha256, (SELECT count(*) FROM page)::int AS page_rows
FROM ${fromClause(spec, n)}
  JOIN ranged r ON r.k = ${n.key}
WHERE r.upto - r.len <= ${p.add(req.maxBytes)}
ORDER BY ${n.key}`;
  return { text, values: p.values };
}

/** One page of the in-scope rows whose ModifiedOn is NULL, in key order after a key. */
export function nullModifiedOnPageQuery(spec: SourceTableSpec, req: NullModifiedOnRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const select = selectList(spec, p);
  const where = [`${n.mod} IS NULL`, ...(req.after === null ? [] : [`${n.key} > ${p.add(req.after)}`]), ...scopeConditions(spec, req, p)];
  const text = `SELECT ${select}\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}\nORDER BY ${n.key}\nLIMIT ${p.add(req.limit)}`;
  return { text, values: p.values };
}

/**
 * How many rows the window's steps will read (roots and children; missing parents come on top): the progress
 * bar's total. The same window and scope conditions as a page, without content or ORDER BY, so it is one range
 * scan of the metadata index on (ModifiedOn, key) and no blob is read.
 */
export function countWindowQuery(spec: SourceTableSpec, req: WindowCountRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const where = [...windowConditions(n, req.window, p), ...scopeConditions(spec, req, p)];
  return { text: `SELECT count(*)::bigint::text AS n\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}`, values: p.values };
}

export function countNullModifiedOnQuery(spec: SourceTableSpec, scope: ScopeFilter): Statement {
  const p = new PgParams();
  const n = names(spec);
  const where = [`${n.mod} IS NULL`, ...scopeConditions(spec, scope, p)];
  return { text: `SELECT count(*)::bigint::text AS n\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}`, values: p.values };
}

/** Which of the keys are in the replicated set: blob ⋈ metadata (⋈ BU map), in scope, not excluded. */
export function memberKeysQuery(spec: SourceTableSpec, req: MembershipRequest): Statement {
  const p = new PgParams();
  const n = names(spec);
  const where = [keyIn(n, p, req.keys), ...scopeConditions(spec, req, p)];
  return { text: `SELECT ${n.key}::text AS key\nFROM ${fromClause(spec, n)}\nWHERE ${where.join('\n  AND ')}`, values: p.values };
}

/** The whole content of several rows, by key (rows small enough for one record each). */
export function contentsQuery(spec: SourceTableSpec, keys: readonly string[]): Statement {
  const p = new PgParams();
  const n = names(spec);
  return { text: `SELECT ${n.key}::text AS key, b.${quotePg(spec.columns.content)} AS content\nFROM ${n.blob} AS b\nWHERE ${keyIn(n, p, keys)}`, values: p.values };
}

/** SHA-256 of each row's content, computed by PostgreSQL (only the digest crosses the wire). */
export function contentHashesQuery(spec: SourceTableSpec, keys: readonly string[]): Statement {
  const p = new PgParams();
  const n = names(spec);
  const text = `SELECT ${n.key}::text AS key, sha256(b.${quotePg(spec.columns.content)}) AS sha256\nFROM ${n.blob} AS b\nWHERE ${keyIn(n, p, keys)}`;
  return { text, values: p.values };
}

export function clockQuery(): Statement {
  return { text: `SELECT ${ticksExpr('clock_timestamp()')} AS now_ticks`, values: [] };
}

/**
 * Start of the oldest open transaction of a client session in this database (other than ours), whether or not it
 * has written yet: `now()` stamps rows with the transaction's start, so a transaction that reads for an hour and
 * then writes commits rows stamped an hour ago (a write xid appears only at the first write, so `backend_xid IS
 * NOT NULL` would miss it). Prepared (2PC) transactions are not sessions: their start is not recorded anywhere, so
 * the oldest prepare time is returned beside it for the poller to clamp to and report. Other sessions' xact_start is
 * visible only to superusers and members of pg_read_all_stats; `visible` says whether we are one.
 */
export function oldestOpenTransactionQuery(): Statement {
  return {
    text: `SELECT
  (SELECT ${ticksExpr('min(a.xact_start)')} FROM pg_stat_activity a
    WHERE a.xact_start IS NOT NULL AND a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND a.backend_type = 'client backend') AS oldest_ticks,
  (SELECT ${ticksExpr('min(x.prepared)')} FROM pg_prepared_xacts x WHERE x.database = current_database()) AS oldest_prepared_ticks,
  (SELECT count(*)::int FROM pg_prepared_xacts x WHERE x.database = current_database()) AS prepared,
  (SELECT r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') FROM pg_roles r WHERE r.rolname = current_user) AS visible`,
    values: [],
  };
}
