import { createHash } from 'node:crypto';
import type { BlobChunk } from '../../src/contract.js';
import { renderPlaceholders, type MigrationBook } from '../../src/db/migrate.js';
import { assertIdentifier, qualified, quotePg } from '../../src/sql/ident.js';
import type { PgStatement } from '../../src/sql/statement.js';
import { lastOffsets, latestWatermarks, sqlTableName, stageRowValues } from '../../src/apply/sink/batch.js';
import type { StageInput, TargetDialect, TargetTable } from '../../src/apply/sink/dialect.js';
import { MAX_CONTENT_BYTES } from '../../src/apply/sink/limits.js';
import type { DeleteToApply, ParkedRow, RowToApply, StoredOffset, WatermarkToRecord } from '../../src/apply/sink/writer.js';
import type { CopyColumn, CopyValue } from './copy-binary.js';

/**
 * PostgreSQL target dialect: pure builders returning `{ text, values }`. Values always travel as parameters (or in
 * the binary COPY stream); identifiers are validated and quoted by quotePg. The one apply sequence
 * (src/apply/sink/sql-writer.ts) runs them, through `postgresDialect` at the end of this file, in one transaction per
 * batch, with the binary COPY of session.ts.
 *
 * Children whose parent is not in the target yet are held in hw_held (whole, in the batch's transaction) and
 * promoted set-based once the parent is written; only content that is incomplete goes to the retry topic.
 *
 * A staged row ends with `status` 'incomplete' (chunked content not all staged), 'missing-parent', or NULL: then
 * the upsert writes it unless it is stale (the target holds a newer or equal version, or a tombstone covers it).
 * Staleness is only looked up for rows about to be held back, so a stale row is skipped rather than retried, at no
 * cost to the rows that are written. Versions follow the contract (src/events/version.ts): changes compare as
 * `(ModifiedOn, observation, content hash)` with a NULL ModifiedOn first; a tombstone covers every version observed
 * at or before it. Rows and tombstones written before contract v2 have no observation: their ModifiedOn stands in.
 */

/** The engine's one statement type (src/sql/statement.ts), under the name both dialects use. */
export type SqlQuery = PgStatement;
export type { StageInput, TargetTable };

export type StageStatus = 'incomplete' | 'missing-parent';

// ---------------------------------------------------------------------------------------------------- names

/** PostgreSQL truncates identifiers longer than 63 bytes; table names leave room for the `_path_idx` suffix. */
export const PG_MAX_IDENTIFIER = 63;
const PATH_INDEX_SUFFIX = '_path_idx';
const MAX_TABLE_NAME = PG_MAX_IDENTIFIER - PATH_INDEX_SUFFIX.length;
/** Names the bookkeeping tables use; a configured table mapping onto one gets a `t_` prefix. */

/**
 * The SQL name of a configured table (`name` may hold `.`, `-` and upper case): lower-cased, every character other
 * than a-z, 0-9 and `_` turned into `_`, prefixed with `t_` when it would not start with a letter or `_` or would
 * start with `hw_`, and cut to 54 characters plus `_` and 8 hex digits of its SHA-256 when longer. Deterministic;
 * different names can map to one table (`a.b`, `a_b`), which the writer refuses at construction.
 */
export function targetTableName(name: string): string {
  return sqlTableName(name, MAX_TABLE_NAME);
}

export function pathIndexName(table: string): string {
  return assertIdentifier(`${table}${PATH_INDEX_SUFFIX}`, 'index name');
}

export function targetTable(schema: string, logical: string): TargetTable {
  return { logical, schema: assertIdentifier(schema, 'target schema'), table: targetTableName(logical) };
}

const bookkeeping = (schema: string, table: string): string => qualified(quotePg, schema, table);
const target = (t: TargetTable): string => qualified(quotePg, t.schema, t.table);

// ---------------------------------------------------------------------------------------------------- migrations

export type MigrationPlaceholder = 'schema' | 'table' | 'index_path';

/**
 * Replaces `{{schema}}`, `{{table}}` and `{{index_path}}` with validated, quoted identifiers. An unknown
 * placeholder, or one without a value, is an error: a migration never runs half-rendered.
 */
export function renderMigration(text: string, identifiers: Partial<Record<MigrationPlaceholder, string>>): string {
  return renderPlaceholders(text, identifiers, quotePg, ['schema', 'table', 'index_path']);
}

/** A numbered bookkeeping migration (schema/target-postgres/NNN_*.sql) for the target schema. */
export function bookkeepingDdl(fileText: string, schema: string): SqlQuery {
  return { text: renderMigration(fileText, { schema }), values: [] };
}

/** schema/target-postgres/blob-table.sql for one configured table. */
export function blobTableDdl(fileText: string, t: TargetTable): SqlQuery {
  return { text: renderMigration(fileText, { schema: t.schema, table: t.table, index_path: pathIndexName(t.table) }), values: [] };
}

/** Serialises migrations of one schema across processes: an advisory lock held until the transaction ends. */
export function migrationLock(schema: string): SqlQuery {
  const key = createHash('sha256').update(`highwater:target-postgres:${schema}`, 'utf8').digest().readBigInt64BE(0);
  return { text: 'SELECT pg_advisory_xact_lock($1::bigint)', values: [key.toString()] };
}

export function createMigrationsTable(schema: string): SqlQuery {
  return {
    text: `CREATE SCHEMA IF NOT EXISTS ${quotePg(schema)};
CREATE TABLE IF NOT EXISTS ${bookkeeping(schema, 'hw_migrations')} (
  name        text        PRIMARY KEY,
  sha256      text        NOT NULL,
  applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)`,
    values: [],
  };
}

export function selectAppliedMigrations(schema: string): SqlQuery {
  return { text: `SELECT name FROM ${bookkeeping(schema, 'hw_migrations')}`, values: [] };
}

export function recordMigration(schema: string, name: string, sha256: string): SqlQuery {
  return { text: `INSERT INTO ${bookkeeping(schema, 'hw_migrations')} (name, sha256) VALUES ($1, $2)`, values: [name, sha256] };
}

// ---------------------------------------------------------------------------------------------------- staging

export const STAGE_TABLE = 'pg_temp.hw_stage';

/** The staging table's COPY columns, in COPY order. */
export const STAGE_COLUMNS: readonly CopyColumn[] = [
  { name: 'tenant', type: 'text' },
  { name: 'key', type: 'text' },
  { name: 'name', type: 'text' },
  { name: 'path_locator', type: 'text' },
  { name: 'parent_path_locator', type: 'text' },
  { name: 'is_directory', type: 'bool' },
  { name: 'size', type: 'int8' },
  { name: 'content', type: 'bytea' },
  { name: 'content_kind', type: 'text' },
  { name: 'content_sha256', type: 'bytea' },
  { name: 'chunk_count', type: 'int4' },
  { name: 'modified_on_ticks', type: 'int8' },
  { name: 'observed_ticks', type: 'int8' },
  { name: 'business_unit', type: 'text' },
  { name: 'creation_time_ticks', type: 'int8' },
  { name: 'last_write_time_ticks', type: 'int8' },
  { name: 'last_access_time_ticks', type: 'int8' },
  { name: 'is_readonly', type: 'bool' },
  { name: 'is_hidden', type: 'bool' },
  { name: 'is_system', type: 'bool' },
  { name: 'is_archive', type: 'bool' },
  { name: 'run_id', type: 'text' },
  { name: 'source_partition', type: 'int4' },
  { name: 'source_offset', type: 'int8' },
];

/** Staging-only columns: how the content travels. Every other COPY column is a column of the target table. */
const STAGE_ONLY = new Set(['content_kind', 'chunk_count']);
const TARGET_COLUMNS = STAGE_COLUMNS.map((c) => c.name).filter((n) => !STAGE_ONLY.has(n));
const SQL_TYPE: Record<CopyColumn['type'], string> = { bool: 'boolean', int2: 'smallint', int4: 'integer', int8: 'bigint', text: 'text', bytea: 'bytea' };

/**
 * A temporary table per session, emptied at the end of every transaction (ON COMMIT DELETE ROWS, and a rollback
 * takes its rows with it), so pooled sessions never share staging and each batch starts from an empty table.
 * Created by the first batch of a session, not by every batch: a table created and dropped per transaction wrote
 * and deleted its catalog rows (pg_class, pg_attribute, pg_type, its TOAST table) every time, 1-2 ms per batch.
 */
export function createStageTable(): SqlQuery {
  const columns = STAGE_COLUMNS.map((c) => `  ${c.name} ${SQL_TYPE[c.type]}`).join(',\n');
  return { text: `CREATE TEMP TABLE IF NOT EXISTS hw_stage (\n${columns},\n  status text\n) ON COMMIT DELETE ROWS`, values: [] };
}

/**
 * Statistics of the columns the hierarchy statements join and filter on. Without them `status IS NULL` and the
 * parent joins are estimated at a few rows, and "is my parent placed by this batch" became a nested loop over
 * every placed row for each staged row (a 5,000-row batch of a tree: a second per batch).
 */
export const ANALYZE_STAGE: SqlQuery = { text: `ANALYZE ${STAGE_TABLE} (tenant, key, path_locator, parent_path_locator, status)`, values: [] };

/**
 * Statistics of the columns the apply statements join on, for the target table and its holding tables. One
 * statement outside a transaction: PostgreSQL analyzes each table in a transaction of its own, so two consumers
 * analyzing at once wait for each other table by table and never deadlock.
 */
export function analyzeTables(t: TargetTable): SqlQuery {
  return {
    text: `ANALYZE ${target(t)} (tenant, key, path_locator, parent_path_locator), ${bookkeeping(t.schema, 'hw_held')} (table_name, tenant, key, path_locator, parent_path_locator), ${bookkeeping(t.schema, 'hw_parked')} (table_name, tenant, key)`,
    values: [],
  };
}

/** The COPY statement for pg-copy-streams' `from()`; the stream carries the values (see copy-binary.ts). */
export function copyIntoStage(): SqlQuery {
  return { text: `COPY ${STAGE_TABLE} (${STAGE_COLUMNS.map((c) => c.name).join(', ')}) FROM STDIN (FORMAT binary)`, values: [] };
}

/** One row's COPY values, in STAGE_COLUMNS order (the order both engines stage, src/apply/sink/batch.ts). */
export function stageValues(row: StageInput): CopyValue[] {
  return stageRowValues(row);
}

// ---------------------------------------------------------------------------------------------------- chunks

/** Content-addressed chunks, in multi-row inserts of at most `maxBytes` (bytes go as binary parameters). */
export function stageChunks(schema: string, chunks: readonly BlobChunk[], maxBytes = 16 << 20, maxRows = 1000): SqlQuery[] {
  const queries: SqlQuery[] = [];
  let group: BlobChunk[] = [];
  let bytes = 0;
  for (const chunk of chunks) {
    if (group.length > 0 && (bytes + chunk.bytes.length > maxBytes || group.length >= maxRows)) {
      queries.push(insertChunks(schema, group));
      group = [];
      bytes = 0;
    }
    group.push(chunk);
    bytes += chunk.bytes.length;
  }
  if (group.length > 0) queries.push(insertChunks(schema, group));
  return queries;
}

function insertChunks(schema: string, chunks: readonly BlobChunk[]): SqlQuery {
  const values: unknown[] = [];
  const tuples = chunks.map((c) => {
    const n = values.push(c.table, c.key, c.contentSha256, c.count, c.index, c.bytes);
    return `($${n - 5}, $${n - 4}, $${n - 3}, $${n - 2}, $${n - 1}, $${n})`;
  });
  return {
    text: `INSERT INTO ${bookkeeping(schema, 'hw_chunks')} (table_name, key, content_sha256, chunk_count, idx, bytes)
VALUES ${tuples.join(', ')}
ON CONFLICT DO NOTHING`,
    values,
  };
}

// ---------------------------------------------------------------------------------------------------- classification

const MIN_TICKS = '(-9223372036854775808)::bigint';

/** When a stored row or tombstone was observed; before contract v2 none was recorded and ModifiedOn stands in. */
export const OBSERVED_OF = (alias: string): string => `coalesce(${alias}.observed_ticks, ${alias}.modified_on_ticks)`;

/** A change's version as a row value: ModifiedOn (NULL first), observation, content hash (src/events/version.ts). */
export const VERSION_OF = (alias: string): string =>
  `(coalesce(${alias}.modified_on_ticks, ${MIN_TICKS}), coalesce(${OBSERVED_OF(alias)}, ${MIN_TICKS}), coalesce(${alias}.content_sha256, '\\x'::bytea))`;

/** A tombstone of this table ($1), tenant and key observed at or after the staged row: the delete covers it. */
const TOMBSTONED = (schema: string): string => `EXISTS (SELECT 1 FROM ${bookkeeping(schema, 'hw_tombstones')} d
    WHERE d.table_name = $1 AND d.tenant = s.tenant AND d.key = s.key AND ${OBSERVED_OF('d')} >= s.observed_ticks)`;

/**
 * The staged row `s` will not be written: the target holds its version or a newer one, or a delete covers it. Only
 * evaluated for rows about to be held back, so that a stale row is counted as stale, not sent to the retry topic.
 */
const STALE = (t: TargetTable): string => `(EXISTS (SELECT 1 FROM ${target(t)} t
    WHERE t.tenant = s.tenant AND t.key = s.key AND ${VERSION_OF('t')} >= ${VERSION_OF('s')})
  OR ${TOMBSTONED(t.schema)})`;

/**
 * Puts chunked content together in the database: `string_agg(bytes ORDER BY idx)` over the row's staged chunks,
 * kept only when every chunk is there and the SHA-256 of the result is the row's hash. Stale rows are left alone.
 */
export function assembleChunkedContent(t: TargetTable): SqlQuery {
  return {
    text: `UPDATE ${STAGE_TABLE} s SET content = (
  SELECT a.bytes FROM (
    SELECT string_agg(c.bytes, ''::bytea ORDER BY c.idx) AS bytes, count(*) AS n
    FROM ${bookkeeping(t.schema, 'hw_chunks')} c
    WHERE c.table_name = $1 AND c.key = s.key AND c.content_sha256 = s.content_sha256
      AND c.chunk_count = s.chunk_count AND c.idx >= 0 AND c.idx < s.chunk_count
  ) a
  WHERE a.n = s.chunk_count AND sha256(a.bytes) = s.content_sha256)
WHERE s.status IS NULL AND s.content_kind = 'chunked' AND NOT ${STALE(t)}`,
    values: [t.logical],
  };
}

/** Chunked rows, not stale, whose content could not be assembled; returns their keys. */
export function markIncompleteContent(t: TargetTable): SqlQuery {
  return {
    text: `UPDATE ${STAGE_TABLE} s SET status = 'incomplete'
WHERE s.status IS NULL AND s.content_kind = 'chunked' AND s.content IS NULL AND NOT ${STALE(t)}
RETURNING s.key`,
    values: [t.logical],
  };
}

/** A jsonb set of (tenant, path) pairs, `{tenant: {path: true}}`, built once from `source`'s rows (non-NULL paths). */
const PATH_SET = (source: string, tenant: string, path: string): string => `SELECT coalesce(jsonb_object_agg(g.tenant, g.paths), '{}'::jsonb)
  FROM (SELECT ${tenant} AS tenant, jsonb_object_agg(${path}, true) AS paths FROM ${source} GROUP BY ${tenant}) g`;

/** Whether the set (a one-row CTE `name` of PATH_SET) holds `tenant`'s `path`: a key lookup, whatever the plan. */
const IN_SET = (name: string, tenant: string, path: string): string =>
  `coalesce(((SELECT ${name}.by_tenant FROM ${name}) -> ${tenant}) ? ${path}, false)`;

/**
 * Rows, not stale, whose parent is neither in the target (same tenant) nor placed by this batch; returns their
 * keys. A row of the batch places its children when it is not held back and no tombstone covers it: rooted, or its
 * parent is in the target, or its parent is placed — followed recursively, so a chain hanging from a missing parent
 * is held back whole.
 *
 * The same answer as asking each staged row the three questions (parent placed? parent in the target? stale?), in
 * an order that leaves the lookups in the target to the few rows that need them:
 *
 * - `placers`: only staged rows that are some unclassified row's parent can place anything (folders with children
 *   in the batch, not the files under them); only they are looked up in hw_tombstones.
 * - `outside_found`: the parents that no placer stages, each looked up once in the target's path index (not once
 *   per child).
 * - `placed`: placers hanging from the root, from a parent found outside, or from a placed placer.
 * - `unplaced` (MATERIALIZED, so nothing below runs before this cut): unclassified rows whose parent is neither
 *   placed nor found outside. Usually none; only these are asked the rest.
 * - `late`: a placer not placed whose own path is in the target places its children after all (and theirs).
 * - `missing`: the rest, unless stale (the target row and tombstone probes run for these rows only).
 *
 * "Is it in the set" is a lookup in a jsonb object built once per set (tenant → path → true), not an anti-join: the
 * staging table and the CTEs have no statistics worth the name, and in a rebuild (a large analyzed target, most
 * parents still to come) an anti-join was planned as a nested loop over every placed row per staged row, 4.5M rows
 * read for a 4,000-row batch. As a scalar subquery (an InitPlan, run once) the set stays a filter of the scan it
 * tests, never a join. The statement before this one probed the target's primary key, hw_tombstones and the path
 * index for every staged row before its cheap check (31 ms for a 5,000-row batch of a tree, whose parents were all
 * placed).
 */
export function markMissingParents(t: TargetTable): SqlQuery {
  const inTarget = (alias: string, path: string): string =>
    `EXISTS (SELECT 1 FROM ${target(t)} t WHERE t.tenant = ${alias}.tenant AND t.path_locator = ${path})`;
  return {
    text: `WITH RECURSIVE parents (by_tenant) AS (
  ${PATH_SET(`${STAGE_TABLE} c WHERE c.status IS NULL AND c.parent_path_locator IS NOT NULL`, 'c.tenant', 'c.parent_path_locator')}
), placers AS MATERIALIZED (
  SELECT s.tenant, s.path_locator, s.parent_path_locator FROM ${STAGE_TABLE} s
  WHERE s.status IS NULL AND s.path_locator IS NOT NULL AND ${IN_SET('parents', 's.tenant', 's.path_locator')}
    AND NOT ${TOMBSTONED(t.schema)}
), placer_paths (by_tenant) AS (
  ${PATH_SET('placers p', 'p.tenant', 'p.path_locator')}
), outside_found AS MATERIALIZED (
  SELECT o.tenant, o.path FROM (
    SELECT DISTINCT s.tenant, s.parent_path_locator AS path FROM ${STAGE_TABLE} s
    WHERE s.status IS NULL AND s.parent_path_locator IS NOT NULL AND NOT ${IN_SET('placer_paths', 's.tenant', 's.parent_path_locator')}
  ) o
  WHERE ${inTarget('o', 'o.path')}
), found_paths (by_tenant) AS (
  ${PATH_SET('outside_found f', 'f.tenant', 'f.path')}
), placed (tenant, path_locator) AS (
  SELECT p.tenant, p.path_locator FROM placers p
  WHERE p.parent_path_locator IS NULL OR ${IN_SET('found_paths', 'p.tenant', 'p.parent_path_locator')}
  UNION
  SELECT p.tenant, p.path_locator FROM placers p
  JOIN placed q ON q.tenant = p.tenant AND q.path_locator = p.parent_path_locator
), placed_paths (by_tenant) AS (
  ${PATH_SET('placed p', 'p.tenant', 'p.path_locator')}
), unplaced AS MATERIALIZED (
  SELECT s.ctid AS id, s.tenant, s.key, s.parent_path_locator, s.modified_on_ticks, s.observed_ticks, s.content_sha256
  FROM ${STAGE_TABLE} s
  WHERE s.status IS NULL AND s.parent_path_locator IS NOT NULL
    AND NOT ${IN_SET('placed_paths', 's.tenant', 's.parent_path_locator')}
    AND NOT ${IN_SET('found_paths', 's.tenant', 's.parent_path_locator')}
), late_found AS MATERIALIZED (
  SELECT o.tenant, o.path FROM (
    SELECT DISTINCT u.tenant, u.parent_path_locator AS path FROM unplaced u
    WHERE ${IN_SET('placer_paths', 'u.tenant', 'u.parent_path_locator')}
  ) o
  WHERE ${inTarget('o', 'o.path')}
), late (tenant, path_locator) AS (
  SELECT f.tenant, f.path FROM late_found f
  UNION
  SELECT p.tenant, p.path_locator FROM placers p
  JOIN late q ON q.tenant = p.tenant AND q.path_locator = p.parent_path_locator
), late_paths (by_tenant) AS (
  ${PATH_SET('late l', 'l.tenant', 'l.path_locator')}
), missing AS MATERIALIZED (
  SELECT s.id FROM unplaced s
  WHERE NOT ${IN_SET('late_paths', 's.tenant', 's.parent_path_locator')}
    AND NOT ${STALE(t)}
)
UPDATE ${STAGE_TABLE} s SET status = 'missing-parent'
FROM missing m
WHERE s.ctid = m.id
RETURNING s.key`,
    values: [t.logical],
  };
}

// ---------------------------------------------------------------------------------------------------- writes

/** The greatest version first: the order DISTINCT ON keeps the first row of, per key. */
const NEWEST_FIRST = (alias: string): string =>
  `coalesce(${alias}.modified_on_ticks, ${MIN_TICKS}) DESC, ${alias}.observed_ticks DESC, coalesce(${alias}.content_sha256, '\\x'::bytea) DESC`;

/**
 * The guarded upsert: of a key's staged rows still unclassified and not covered by a tombstone, the greatest version
 * (a key can be staged more than once when its ModifiedOn moved backwards across a delete: the tombstones decide
 * which can still win), inserted or updated only when strictly newer than the target's version. The row count is
 * the number of rows written.
 */
export function upsertFromStage(t: TargetTable): SqlQuery {
  const columns = TARGET_COLUMNS.join(', ');
  const updates = [...TARGET_COLUMNS.filter((c) => c !== 'tenant' && c !== 'key').map((c) => `${c} = excluded.${c}`), 'applied_at = clock_timestamp()'];
  return {
    text: `INSERT INTO ${target(t)} AS t (${columns})
SELECT DISTINCT ON (s.tenant, s.key) ${TARGET_COLUMNS.map((c) => `s.${c}`).join(', ')}
FROM ${STAGE_TABLE} s
WHERE s.status IS NULL AND NOT ${TOMBSTONED(t.schema)}
ORDER BY s.tenant, s.key, ${NEWEST_FIRST('s')}
ON CONFLICT (tenant, key) DO UPDATE SET ${updates.join(', ')}
WHERE ${VERSION_OF('t')} < ${VERSION_OF('excluded')}`,
    values: [t.logical],
  };
}

/**
 * The upsert's fast path for a target that holds none of the batch's keys (a first load, a rebuild into a fresh
 * schema): the same rows as upsertFromStage, inserted without conflict handling. Where the target holds a key after
 * all, the insert fails with a unique violation (23505) and the writer rolls back to a savepoint and runs the
 * guarded upsert instead, so the result is always the guarded upsert's.
 */
export function insertFromStage(t: TargetTable): SqlQuery {
  return {
    text: `INSERT INTO ${target(t)} (${TARGET_COLUMNS.join(', ')})
SELECT DISTINCT ON (s.tenant, s.key) ${TARGET_COLUMNS.map((c) => `s.${c}`).join(', ')}
FROM ${STAGE_TABLE} s
WHERE s.status IS NULL AND NOT ${TOMBSTONED(t.schema)}
ORDER BY s.tenant, s.key, ${NEWEST_FIRST('s')}`,
    values: [t.logical],
  };
}

/** Whether the target table holds no row at all (the writer then tries the insert fast path). Column: empty. */
export function selectTargetEmpty(t: TargetTable): SqlQuery {
  return { text: `SELECT NOT EXISTS (SELECT 1 FROM ${target(t)}) AS empty`, values: [] };
}

/**
 * Releases staged chunks once used: those of rows written, held (hw_held keeps the assembled content) or found
 * stale, and of versions superseded inside the batch — but never a set still needed by a row whose content is
 * incomplete in this batch.
 */
export function deleteUsedChunks(t: TargetTable, superseded: readonly RowToApply[]): SqlQuery {
  const chunked = superseded.filter((r) => r.change.content.kind === 'chunked' && r.change.contentSha256 !== null);
  const stage = (condition: string): string =>
    `SELECT key, content_sha256, chunk_count FROM ${STAGE_TABLE} WHERE content_kind = 'chunked' AND ${condition}`;
  return {
    text: `DELETE FROM ${bookkeeping(t.schema, 'hw_chunks')} c
USING (
  (${stage("(status IS NULL OR status = 'missing-parent')")}
   UNION SELECT * FROM unnest($2::text[], $3::bytea[], $4::integer[]))
  EXCEPT ${stage("status = 'incomplete'")}
) u
WHERE c.table_name = $1 AND c.key = u.key AND c.content_sha256 = u.content_sha256 AND c.chunk_count = u.chunk_count`,
    values: [
      t.logical,
      chunked.map((r) => r.change.key),
      chunked.map((r) => r.change.contentSha256),
      chunked.map((r) => (r.change.content.kind === 'chunked' ? r.change.content.chunkCount : 0)),
    ],
  };
}

/**
 * Guarded deletes: the target row goes when it was observed at or before the delete, whatever its ModifiedOn, and
 * the deletion is remembered in hw_tombstones (the latest observed delete per key) so an older version replayed
 * later cannot resurrect it. The row count is the number of target rows deleted.
 */
export function applyDeletes(t: TargetTable, deletes: readonly DeleteToApply[]): SqlQuery {
  const tombstones = bookkeeping(t.schema, 'hw_tombstones');
  return {
    text: `WITH d AS (
  SELECT DISTINCT ON (tenant, key) tenant, key, modified_on_ticks, observed_ticks
  FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS x (tenant, key, modified_on_ticks, observed_ticks)
  ORDER BY tenant, key, observed_ticks DESC
), remembered AS (
  INSERT INTO ${tombstones} AS tb (table_name, tenant, key, modified_on_ticks, observed_ticks)
  SELECT $1::text, d.tenant, d.key, d.modified_on_ticks, d.observed_ticks FROM d
  ON CONFLICT (table_name, tenant, key) DO UPDATE
    SET modified_on_ticks = excluded.modified_on_ticks, observed_ticks = excluded.observed_ticks, deleted_at = clock_timestamp()
    WHERE ${OBSERVED_OF('tb')} < excluded.observed_ticks
)
DELETE FROM ${target(t)} t USING d
WHERE t.tenant = d.tenant AND t.key = d.key AND ${OBSERVED_OF('t')} <= d.observed_ticks`,
    values: [
      t.logical, deletes.map((d) => d.tenant), deletes.map((d) => d.key),
      deletes.map((d) => d.modifiedOn?.toString() ?? null), deletes.map((d) => d.observed.toString()),
    ],
  };
}

// ---------------------------------------------------------------------------------------------------- held children

const held = (schema: string): string => bookkeeping(schema, 'hw_held');

/** A tombstone of this table ($1) observed at or after the row `alias` (hw_held or a target-shaped row). */
const TOMBSTONED_AS = (schema: string, alias: string): string => `EXISTS (SELECT 1 FROM ${bookkeeping(schema, 'hw_tombstones')} d
    WHERE d.table_name = $1 AND d.tenant = ${alias}.tenant AND d.key = ${alias}.key AND ${OBSERVED_OF('d')} >= ${alias}.observed_ticks)`;

/**
 * TOMBSTONED_AS for a row `alias` of hw_held or hw_parked joined to the keys `k` (unnest) on tenant and key: the
 * tombstone is looked up by `k`'s key, so the condition belongs to the join, evaluated for joined rows only.
 */
const TOMBSTONED_BY_KEY = (schema: string, alias: string): string => `EXISTS (SELECT 1 FROM ${bookkeeping(schema, 'hw_tombstones')} d
    WHERE d.table_name = $1 AND d.tenant = k.tenant AND d.key = k.key AND ${OBSERVED_OF('d')} >= ${alias}.observed_ticks)`;

/** The target row columns other than the key, set from `excluded` on conflict. */
const UPDATED_FROM_EXCLUDED = (stamp: string): string =>
  [...TARGET_COLUMNS.filter((c) => c !== 'tenant' && c !== 'key').map((c) => `${c} = excluded.${c}`), `${stamp} = clock_timestamp()`].join(', ');

/**
 * Staged rows whose parent is missing (markMissingParents) are held in hw_held, whole, instead of leaving the
 * transaction: the greatest version per key; a held version is replaced only by a newer one.
 */
export function holdMissingParents(t: TargetTable): SqlQuery {
  return {
    text: `INSERT INTO ${held(t.schema)} AS h (table_name, ${TARGET_COLUMNS.join(', ')})
SELECT DISTINCT ON (s.tenant, s.key) $1::text, ${TARGET_COLUMNS.map((c) => `s.${c}`).join(', ')}
FROM ${STAGE_TABLE} s
WHERE s.status = 'missing-parent'
ORDER BY s.tenant, s.key, ${NEWEST_FIRST('s')}
ON CONFLICT (table_name, tenant, key) DO UPDATE SET ${UPDATED_FROM_EXCLUDED('held_at')}
WHERE ${VERSION_OF('h')} < ${VERSION_OF('excluded')}`,
    values: [t.logical],
  };
}

/**
 * Promotes, in one statement, every held child whose parent is now in the target — and, recursively, the held
 * children of those — with the guarded upsert: a held version never overwrites a newer one, and one a tombstone
 * covers is not written. Promoted rows leave hw_held. `scope` 'batch' looks only at children of the rows staged by
 * this batch (the parents that may just have arrived); 'all' looks at every held child of the table (a sweep, for
 * parents written by another consumer's concurrent transaction). Columns: tenant, key of the rows taken out of
 * hw_held, and `written`, how many of them were written.
 */
export function promoteHeld(t: TargetTable, scope: 'batch' | 'all'): SqlQuery {
  const h = held(t.schema);
  const parentWritten = `EXISTS (SELECT 1 FROM ${target(t)} t WHERE t.tenant = h.tenant AND t.path_locator = h.parent_path_locator)`;
  const base = scope === 'batch'
    ? `SELECT h.tenant, h.key, h.path_locator
  FROM (SELECT DISTINCT s.tenant, s.path_locator FROM ${STAGE_TABLE} s WHERE s.status IS NULL AND s.path_locator IS NOT NULL) p
  JOIN ${h} h ON h.table_name = $1 AND h.tenant = p.tenant AND h.parent_path_locator = p.path_locator
  WHERE ${parentWritten} AND NOT ${TOMBSTONED_AS(t.schema, 'h')}`
    : `SELECT h.tenant, h.key, h.path_locator FROM ${h} h
  WHERE h.table_name = $1 AND h.parent_path_locator IS NOT NULL AND ${parentWritten} AND NOT ${TOMBSTONED_AS(t.schema, 'h')}`;
  return {
    text: `WITH RECURSIVE ready (tenant, key, path_locator) AS (
  ${base}
  UNION
  SELECT h.tenant, h.key, h.path_locator FROM ${h} h
  JOIN ready r ON h.table_name = $1 AND h.tenant = r.tenant AND h.parent_path_locator = r.path_locator
  WHERE r.path_locator IS NOT NULL AND NOT ${TOMBSTONED_AS(t.schema, 'h')}
), moved AS (
  DELETE FROM ${h} h USING (SELECT DISTINCT tenant, key FROM ready) r
  WHERE h.table_name = $1 AND h.tenant = r.tenant AND h.key = r.key
  RETURNING h.*
), written AS (
  INSERT INTO ${target(t)} AS t (${TARGET_COLUMNS.join(', ')})
  SELECT ${TARGET_COLUMNS.map((c) => `m.${c}`).join(', ')} FROM moved m
  ON CONFLICT (tenant, key) DO UPDATE SET ${UPDATED_FROM_EXCLUDED('applied_at')}
  WHERE ${VERSION_OF('t')} < ${VERSION_OF('excluded')}
  RETURNING 1
)
SELECT m.tenant, m.key, (SELECT count(*) FROM written)::int AS written FROM moved m`,
    values: [t.logical],
  };
}

/**
 * Held children of these keys that are resolved otherwise: the target holds their version or a newer one, or a
 * delete observed at or after them covers them (a delete wins). Run after a batch's deletes and upserts. Keyed by
 * `k`, as releaseParked: a condition of the join, not of the scan of hw_held.
 */
export function dropResolvedHeld(t: TargetTable, keys: readonly { tenant: string; key: string }[]): SqlQuery {
  return {
    text: `DELETE FROM ${held(t.schema)} h
USING unnest($2::text[], $3::text[]) AS k (tenant, key)
WHERE h.table_name = $1 AND h.tenant = k.tenant AND h.key = k.key
  AND (EXISTS (SELECT 1 FROM ${target(t)} t WHERE t.tenant = k.tenant AND t.key = k.key AND ${VERSION_OF('t')} >= ${VERSION_OF('h')})
    OR ${TOMBSTONED_BY_KEY(t.schema, 'h')})`,
    values: [t.logical, keys.map((k) => k.tenant), keys.map((k) => k.key)],
  };
}

/**
 * The parents held children wait for that are neither in the target nor held themselves (the top of each waiting
 * chain): what a back-fill request asks for. Columns: tenant, parent_path_locator, children (how many wait).
 */
export function selectHeldParents(t: TargetTable, limit = 1000): SqlQuery {
  const h = held(t.schema);
  return {
    text: `SELECT h.tenant, h.parent_path_locator, count(*)::int AS children
FROM ${h} h
WHERE h.table_name = $1 AND h.parent_path_locator IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ${target(t)} t WHERE t.tenant = h.tenant AND t.path_locator = h.parent_path_locator)
  AND NOT EXISTS (SELECT 1 FROM ${h} p WHERE p.table_name = h.table_name AND p.tenant = h.tenant AND p.path_locator = h.parent_path_locator)
GROUP BY h.tenant, h.parent_path_locator
ORDER BY min(h.held_at)
LIMIT $2`,
    values: [t.logical, limit],
  };
}

/** Held children of one parent, whole (target columns), for the dead-letter topic. */
export function selectHeldChildren(t: TargetTable, tenant: string, parentPathLocator: string): SqlQuery {
  return {
    text: `SELECT ${TARGET_COLUMNS.map((c) => `h.${c}`).join(', ')} FROM ${held(t.schema)} h
WHERE h.table_name = $1 AND h.tenant = $2 AND h.parent_path_locator = $3 ORDER BY h.key`,
    values: [t.logical, tenant, parentPathLocator],
  };
}

// ---------------------------------------------------------------------------------------------------- parked rows

/** Rows the loop routed to the retry topic before the write: remembered until resolved (the latest version per key). */
export function parkRows(t: TargetTable, rows: readonly ParkedRow[]): SqlQuery {
  return {
    text: `INSERT INTO ${bookkeeping(t.schema, 'hw_parked')} AS p (table_name, tenant, key, modified_on_ticks, observed_ticks, reason)
SELECT DISTINCT ON (x.tenant, x.key) $1::text, x.tenant, x.key, x.modified_on_ticks, x.observed_ticks, x.reason
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) AS x (tenant, key, modified_on_ticks, observed_ticks, reason)
ORDER BY x.tenant, x.key, x.observed_ticks DESC
${PARK_CONFLICT}`,
    values: [
      t.logical, rows.map((r) => r.tenant), rows.map((r) => r.key), rows.map((r) => r.modifiedOn?.toString() ?? null),
      rows.map((r) => r.observed.toString()), rows.map((r) => r.reason),
    ],
  };
}

/** The staged rows held back by this batch (missing parent, incomplete content) are parked too. */
export function parkHeldBack(t: TargetTable): SqlQuery {
  return {
    text: `INSERT INTO ${bookkeeping(t.schema, 'hw_parked')} AS p (table_name, tenant, key, modified_on_ticks, observed_ticks, reason)
SELECT DISTINCT ON (s.tenant, s.key) $1::text, s.tenant, s.key, s.modified_on_ticks, s.observed_ticks, s.status FROM ${STAGE_TABLE} s
WHERE s.status IN ('incomplete', 'missing-parent')
ORDER BY s.tenant, s.key, ${NEWEST_FIRST('s')}
${PARK_CONFLICT}`,
    values: [t.logical],
  };
}

const PARK_CONFLICT = `ON CONFLICT (table_name, tenant, key) DO UPDATE
  SET modified_on_ticks = excluded.modified_on_ticks, observed_ticks = excluded.observed_ticks, reason = excluded.reason
  WHERE (coalesce(p.modified_on_ticks, ${MIN_TICKS}), p.observed_ticks) < (coalesce(excluded.modified_on_ticks, ${MIN_TICKS}), excluded.observed_ticks)`;

/**
 * Parked rows of these keys that are resolved now: the target holds their version or a newer one, or a delete
 * observed at or after them covers them. The lookups are keyed by `k` (equal to `p`'s key by the join), so they are
 * a condition of the join, run for the parked rows of these keys only: keyed by `p` alone they were a filter of the
 * scan of hw_parked, and a batch touching one key probed the target for every parked row of the table (200 ms per
 * batch at 30k parked rows in the W1-tree benchmark).
 */
export function releaseParked(t: TargetTable, keys: readonly { tenant: string; key: string }[]): SqlQuery {
  return {
    text: `DELETE FROM ${bookkeeping(t.schema, 'hw_parked')} p
USING unnest($2::text[], $3::text[]) AS k (tenant, key)
WHERE p.table_name = $1 AND p.tenant = k.tenant AND p.key = k.key
  AND (EXISTS (SELECT 1 FROM ${target(t)} t WHERE t.tenant = k.tenant AND t.key = k.key
         AND (coalesce(t.modified_on_ticks, ${MIN_TICKS}), ${OBSERVED_OF('t')}) >= (coalesce(p.modified_on_ticks, ${MIN_TICKS}), p.observed_ticks))
    OR ${TOMBSTONED_BY_KEY(t.schema, 'p')})`,
    values: [t.logical, keys.map((k) => k.tenant), keys.map((k) => k.key)],
  };
}

/** Watermarks per partition and scope, moving forward only (the greatest of the batch per partition and scope). */
export function upsertWatermarks(schema: string, groupId: string, marks: readonly WatermarkToRecord[]): SqlQuery {
  const rows = latestWatermarks(marks);
  return {
    text: `INSERT INTO ${bookkeeping(schema, 'hw_watermarks')} AS w (group_id, table_name, tenant, scope, topic, partition, watermark_ticks)
SELECT $1::text, m.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::bigint[]) AS m
ON CONFLICT (group_id, topic, partition, scope) DO UPDATE
  SET watermark_ticks = excluded.watermark_ticks, table_name = excluded.table_name, tenant = excluded.tenant, updated_at = clock_timestamp()
  WHERE w.watermark_ticks < excluded.watermark_ticks`,
    values: [
      groupId,
      rows.map((m) => m.table),
      rows.map((m) => m.tenant),
      rows.map((m) => m.scope),
      rows.map((m) => m.topic),
      rows.map((m) => m.partition),
      rows.map((m) => m.watermark.toString()),
    ],
  };
}

/** The next offset per partition, as given (the last of the batch per partition wins). */
export function upsertOffsets(schema: string, groupId: string, offsets: readonly StoredOffset[]): SqlQuery {
  const rows = lastOffsets(offsets);
  return {
    text: `INSERT INTO ${bookkeeping(schema, 'hw_offsets')} AS o (group_id, topic, partition, next_offset)
SELECT $1::text, x.* FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS x
ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = clock_timestamp()`,
    values: [groupId, rows.map((o) => o.topic), rows.map((o) => o.partition), rows.map((o) => o.nextOffset.toString())],
  };
}

// ---------------------------------------------------------------------------------------------------- reads

/** Columns: topic, partition, next_offset (bigint as text). */
export function selectStoredOffsets(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `SELECT topic, partition, next_offset::text AS next_offset FROM ${bookkeeping(schema, 'hw_offsets')}
WHERE group_id = $1 AND topic = ANY($2::text[]) ORDER BY topic, partition`,
    values: [groupId, [...topics]],
  };
}

/** Column: path_locator. */
export function selectExistingPaths(t: TargetTable, tenant: string, pathLocators: readonly string[]): SqlQuery {
  return {
    text: `SELECT DISTINCT path_locator FROM ${target(t)} WHERE tenant = $1 AND path_locator = ANY($2::text[])`,
    values: [tenant, [...pathLocators]],
  };
}

/**
 * consistent_as_of per (table, scope): the minimum watermark over the partitions of its topics, or NULL when a
 * partition is known not to have passed a marker of that scope. Without partition counts the known partitions are
 * those with a marker or a stored offset of this group: a partition the group has consumed from but that has no
 * marker yet makes the table's value NULL. Columns: table_name, scope, watermark (bigint as text, or NULL).
 */
export function selectConsistentAsOf(schema: string, groupId: string): SqlQuery {
  return {
    text: `WITH w AS (
  SELECT table_name, scope, topic, partition, watermark_ticks FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE group_id = $1
), known AS (
  SELECT topic, count(*) AS partitions FROM (
    SELECT topic, partition FROM w
    UNION SELECT topic, partition FROM ${bookkeeping(schema, 'hw_offsets')} WHERE group_id = $1
  ) p GROUP BY topic
)
${consistentTail(schema)}`,
    values: [groupId],
  };
}

/**
 * As selectConsistentAsOf, with the partition count of every topic given (from the broker's metadata): NULL when a
 * topic has fewer markers of a scope than partitions, or is not in the map.
 */
export function selectConsistentAsOfWithPartitions(schema: string, groupId: string, partitionsByTopic: ReadonlyMap<string, number>): SqlQuery {
  return {
    text: `WITH w AS (
  SELECT table_name, scope, topic, partition, watermark_ticks FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE group_id = $1
), known AS (
  SELECT * FROM unnest($2::text[], $3::integer[]) AS k (topic, partitions)
)
${consistentTail(schema)}`,
    values: [groupId, [...partitionsByTopic.keys()], [...partitionsByTopic.values()]],
  };
}

/**
 * The minimum over partitions, and below the ModifiedOn of every row of the table still parked (waiting in the retry
 * topic or dead-lettered there): the target does not hold it, so it cannot be complete up to that point.
 */
const consistentTail = (schema: string): string => `, per_topic AS (
  SELECT table_name, scope, topic, min(watermark_ticks) AS watermark, count(*) AS marked FROM w GROUP BY table_name, scope, topic
), parked AS (
  SELECT table_name, min(modified_on_ticks) - 1 AS below FROM ${bookkeeping(schema, 'hw_parked')} GROUP BY table_name
)
SELECT p.table_name, p.scope,
  CASE WHEN bool_and(k.partitions IS NOT NULL AND p.marked >= k.partitions)
    THEN least(min(p.watermark), min(pk.below))::text END AS watermark
FROM per_topic p LEFT JOIN known k ON k.topic = p.topic LEFT JOIN parked pk ON pk.table_name = p.table_name
GROUP BY p.table_name, p.scope
ORDER BY p.table_name, p.scope`;

// ---------------------------------------------------------------------------------------------------- operations

/** Forgets where the group stands on these topics (reset-offsets to earliest; before storing new positions). */
export function deleteStoredOffsets(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `DELETE FROM ${bookkeeping(schema, 'hw_offsets')} WHERE group_id = $1 AND topic = ANY($2::text[])`,
    values: [groupId, [...topics]],
  };
}

/** Forgets the group's watermarks on these topics; a replay brings them back from the markers. */
export function deleteWatermarks(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `DELETE FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE group_id = $1 AND topic = ANY($2::text[])`,
    values: [groupId, [...topics]],
  };
}

/** Column: present (boolean). */
export function selectSchemaExists(schema: string): SqlQuery {
  return { text: 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS present', values: [assertIdentifier(schema, 'schema')] };
}

/** Renames a schema; its tables, indexes and bookkeeping move with it. Transactional, like all PostgreSQL DDL. */
export function renameSchema(from: string, to: string): SqlQuery {
  return { text: `ALTER SCHEMA ${quotePg(from)} RENAME TO ${quotePg(to)}`, values: [] };
}

/** Deletes every bookkeeping row of a group (offsets and watermarks), in two statements. */
export function deleteGroupBookkeeping(schema: string, groupId: string): SqlQuery[] {
  return ['hw_offsets', 'hw_watermarks'].map((table) => ({ text: `DELETE FROM ${bookkeeping(schema, table)} WHERE group_id = $1`, values: [groupId] }));
}

/** Gives a group's offsets and watermarks to another group id (run deleteGroupBookkeeping for `to` first). */
export function relabelGroup(schema: string, from: string, to: string): SqlQuery[] {
  return ['hw_offsets', 'hw_watermarks'].map((table) => ({
    text: `UPDATE ${bookkeeping(schema, table)} SET group_id = $2, updated_at = clock_timestamp() WHERE group_id = $1`,
    values: [from, to],
  }));
}

/**
 * Serialises deletes against upserts of one target table: upserting batches take the lock shared, batches with
 * deletes take it exclusive. Without it a delete and a concurrent upsert of the same key (the retry loop and the
 * main loop run side by side) each miss the other's uncommitted row or tombstone, and a deleted row comes back.
 */
export function tableWriteLock(t: TargetTable, exclusive: boolean): SqlQuery {
  return { text: `SELECT ${exclusive ? 'pg_advisory_xact_lock' : 'pg_advisory_xact_lock_shared'}(hashtext($1))`, values: [`highwater:${t.schema}.${t.table}`] };
}

// ---------------------------------------------------------------------------------------------------- the dialect

/** Renames `live` to `retired` (when it exists) and `rebuilt` to `live`: transactional, like all PostgreSQL DDL. */
export function swapSchemas(live: string, rebuilt: string, retired: string, liveExists: boolean): SqlQuery[] {
  return [...(liveExists ? [renameSchema(live, retired)] : []), renameSchema(rebuilt, live)];
}

/** The target's bookkeeping migrations (hw_migrations: file name and SHA-256), for the one runner (src/db/migrate.ts). */
export function migrations(schema: string): MigrationBook<SqlQuery> {
  return {
    what: `schema ${schema}`,
    lock: () => migrationLock(schema),
    lockGranted: () => true,
    prepare: () => [createMigrationsTable(schema)],
    selectApplied: () => selectAppliedMigrations(schema),
    render: (script) => [bookkeepingDdl(script.text, schema)],
    record: (script) => recordMigration(schema, script.name, script.sha256),
  };
}

/** The PostgreSQL side of the one apply sequence; the compiler checks it says everything the sequence needs. */
/** SQLSTATE of a unique violation: the fast path's insert met a key the target holds after all. */
const UNIQUE_VIOLATION = '23505';

export const postgresDialect: TargetDialect<SqlQuery> = {
  maxContentBytes: MAX_CONTENT_BYTES.postgres,
  targetTable, migrations, blobTableDdl: (text, t) => [blobTableDdl(text, t)],
  tableWriteLock, parkRows, applyDeletes, createStageTable,
  analyzeStage: ANALYZE_STAGE, analyzeTables,
  // Staleness is looked up inline, only for the rows about to be held back (see STALE).
  markStale: null,
  assembleChunkedContent, markIncompleteContent, markMissingParents, holdMissingParents, parkHeldBack, upsertFromStage,
  fastInsert: {
    selectTargetEmpty, insertFromStage,
    savepoint: { text: 'SAVEPOINT hw_fast_insert', values: [] },
    rollbackToSavepoint: { text: 'ROLLBACK TO SAVEPOINT hw_fast_insert', values: [] },
    releaseSavepoint: { text: 'RELEASE SAVEPOINT hw_fast_insert', values: [] },
    isUniqueViolation: (thrown) => (thrown as { code?: unknown } | null)?.code === UNIQUE_VIOLATION,
  },
  promoteHeld, dropResolvedHeld, deleteUsedChunks,
  // The staging table is emptied at every COMMIT or ROLLBACK (ON COMMIT DELETE ROWS).
  dropStageTables: null,
  releaseParked, upsertWatermarks, upsertOffsets,
  selectStoredOffsets, selectHeldParents: (t) => selectHeldParents(t), selectHeldChildren, selectExistingPaths, selectConsistentAsOf, selectConsistentAsOfWithPartitions, selectSchemaExists,
  deleteStoredOffsets, deleteWatermarks, deleteGroupBookkeeping, relabelGroup, swapSchemas,
};
