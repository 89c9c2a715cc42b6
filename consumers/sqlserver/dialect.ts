import { renderPlaceholders, type MigrationBook } from '../../src/db/migrate.js';
import { assertIdentifier, qualified, quoteMssql } from '../../src/sql/ident.js';
import type { SqlServerParam, SqlServerStatement, SqlServerType } from '../../src/sql/statement.js';
import { lastOffsets, latestWatermarks, sqlTableName, stageRowValues, type StageValue } from '../../src/apply/sink/batch.js';
import type { StageInput, TargetDialect, TargetTable } from '../../src/apply/sink/dialect.js';
import { MAX_CONTENT_BYTES } from '../../src/apply/sink/limits.js';
import type { DeleteToApply, ParkedRow, RowToApply, StoredOffset, WatermarkToRecord } from '../../src/apply/sink/writer.js';

/**
 * SQL Server target dialect: pure builders returning `{ text, values }` with named `@parameters`. Values always
 * travel as parameters (small sets as one JSON parameter read with OPENJSON) or in the bulk-load stream;
 * identifiers are validated and quoted by quoteMssql. The one apply sequence (src/apply/sink/sql-writer.ts) runs them,
 * through `sqlServerDialect` at the end of this file, in one transaction per batch, with the bulk loads of
 * session.ts (chunks: createChunkStageTable → bulk → insertStagedChunks; rows: createStageTable → bulk).
 *
 * Children whose parent is not in the target yet are held in hw_held (whole, in the batch's transaction) and
 * promoted set-based once the parent is written; only content that is incomplete goes to the retry topic.
 *
 * A staged row ends with `status` NULL (to write), 'stale', 'incomplete' or 'missing-parent'. Versions follow the
 * contract (src/events/version.ts): changes compare as `(ModifiedOn, observation, content hash)` with a NULL
 * ModifiedOn first; a tombstone covers every version observed at or before it. Rows and tombstones written before
 * contract v2 have no observation: their ModifiedOn stands in.
 *
 * Statements without values create the session's temporary tables: the writer sends those as plain batches,
 * because a #table created inside sp_executesql (how mssql sends parameterised text) is dropped when it returns.
 */

export type { SqlServerParam, SqlServerStatement, SqlServerType };

/** The statement type under the name the PostgreSQL dialect uses, so both folders read alike. */
export type SqlQuery = SqlServerStatement;

export type { StageInput, TargetTable };

export type StageStatus = 'stale' | 'incomplete' | 'missing-parent';

const nvarchar = (value: string | null): SqlServerParam => ({ type: 'NVarChar', value });
const json = (value: unknown): SqlServerParam => ({ type: 'NVarChar', value: JSON.stringify(value) });
const BIN2 = 'Latin1_General_100_BIN2';

/** A column read from a JSON parameter: name, T-SQL type, JSON path, and whether it is text compared exactly. */
type JsonColumn = readonly [name: string, type: string, path: string, exact?: 'exact'];

/**
 * The rows of a JSON array parameter as a derived-table body. Text columns that meet BIN2 columns get the BIN2
 * collation here: OPENJSON's columns carry the database's default collation, and comparing (or UNIONing) two
 * columns of different collations is an error in SQL Server.
 */
function jsonRows(param: string, columns: readonly JsonColumn[]): string {
  const select = columns.map(([name, , , exact]) => `j.[${name}]${exact ? ` COLLATE ${BIN2}` : ''} AS [${name}]`);
  const schema = columns.map(([name, type, path]) => `[${name}] ${type} '${path}'`);
  return `SELECT ${select.join(', ')}\n  FROM OPENJSON(@${param}) WITH (${schema.join(', ')}) AS j`;
}

/** A JSON array of strings as an IN list, in the binary collation. */
function jsonStrings(param: string): string {
  return `SELECT j.[value] COLLATE ${BIN2} FROM OPENJSON(@${param}) AS j`;
}

// ---------------------------------------------------------------------------------------------------- names

/** SQL Server identifiers hold 128 characters. */
export const MSSQL_MAX_IDENTIFIER = 128;

/**
 * The SQL name of a configured table (`name` may hold `.`, `-` and upper case), by the PostgreSQL dialect's rule:
 * lower-cased, every character other than a-z, 0-9 and `_` turned into `_`, prefixed with `t_` when it would not
 * start with a letter or `_` or would start with `hw_`, and cut to 119 characters plus `_` and 8 hex digits of its
 * SHA-256 when longer. Different names can map to one table (`a.b`, `a_b`); the writer refuses that.
 */
export function targetTableName(name: string): string {
  return sqlTableName(name, MSSQL_MAX_IDENTIFIER);
}

export function targetTable(schema: string, logical: string): TargetTable {
  return { logical, schema: assertIdentifier(schema, 'target schema'), table: targetTableName(logical) };
}

const bookkeeping = (schema: string, table: string): string => qualified(quoteMssql, schema, table);
const target = (t: TargetTable): string => qualified(quoteMssql, t.schema, t.table);

// ---------------------------------------------------------------------------------------------------- migrations

export type MigrationPlaceholder = 'schema' | 'table';

/**
 * Replaces `{{schema}}` and `{{table}}` with validated, bracket-quoted identifiers. A quoted identifier holds no
 * quote of either kind, so it may also stand inside an N'…' literal (OBJECT_ID, EXEC). An unknown placeholder, or
 * one without a value, is an error: a migration never runs half-rendered.
 */
export function renderMigration(text: string, identifiers: Partial<Record<MigrationPlaceholder, string>>): string {
  return renderPlaceholders(text, identifiers, quoteMssql, ['schema', 'table']);
}

/** A script's batches, split on `GO` lines as sqlcmd does; empty batches (comments only) are dropped. */
export function splitBatches(script: string): string[] {
  return script
    .split(/^[ \t]*GO[ \t]*;?[ \t]*$/im)
    .map((b) => b.trim())
    .filter((b) => b.split('\n').some((line) => line.trim() !== '' && !line.trim().startsWith('--')));
}

/** A numbered bookkeeping migration (schema/target-sqlserver/NNN_*.sql), as batches for the target schema. */
export function bookkeepingDdl(fileText: string, schema: string): SqlQuery[] {
  return splitBatches(renderMigration(fileText, { schema })).map((text) => ({ text, values: {} }));
}

/** schema/target-sqlserver/blob-table.sql for one configured table, as batches. */
export function blobTableDdl(fileText: string, t: TargetTable): SqlQuery[] {
  return splitBatches(renderMigration(fileText, { schema: t.schema, table: t.table })).map((text) => ({ text, values: {} }));
}

/**
 * Serialises migrations of one schema across processes: an application lock owned by the transaction. sp_getapplock
 * reports a timeout through its return code, so the lock's mode is read back: anything but 'Exclusive' means the
 * lock was not granted.
 */
export function migrationLock(schema: string): SqlQuery {
  return {
    text: `EXEC sp_getapplock @Resource = @resource, @LockMode = 'Exclusive', @LockOwner = 'Transaction', @LockTimeout = 60000;
SELECT APPLOCK_MODE(N'public', @resource, N'Transaction') AS lock_mode;`,
    values: { resource: nvarchar(`highwater:target-sqlserver:${schema}`) },
  };
}

export function createMigrationsTable(schema: string): SqlQuery {
  const s = quoteMssql(schema);
  return {
    text: `IF SCHEMA_ID(PARSENAME(N'${s}', 1)) IS NULL EXEC(N'CREATE SCHEMA ${s}');
IF OBJECT_ID(N'${s}.[hw_migrations]', N'U') IS NULL
CREATE TABLE ${s}.[hw_migrations] (
  name        nvarchar(200) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
  sha256      char(64)      NOT NULL,
  applied_at  datetime2(7)  NOT NULL DEFAULT SYSUTCDATETIME()
);`,
    values: {},
  };
}

export function selectAppliedMigrations(schema: string): SqlQuery {
  return { text: `SELECT name FROM ${bookkeeping(schema, 'hw_migrations')}`, values: {} };
}

export function recordMigration(schema: string, name: string, sha256: string): SqlQuery {
  return {
    text: `INSERT INTO ${bookkeeping(schema, 'hw_migrations')} (name, sha256) VALUES (@name, @sha256)`,
    values: { name: nvarchar(name), sha256: { type: 'VarChar', value: sha256 } },
  };
}

// ---------------------------------------------------------------------------------------------------- staging

export const STAGE_TABLE = '#hw_stage';
export const CHUNK_STAGE_TABLE = '#hw_chunk_stage';

/** A bulk-loaded column: its driver type, length (characters or bytes), and whether it compares exactly (BIN2). */
export interface StageColumn {
  readonly name: string;
  readonly type: 'NVarChar' | 'VarChar' | 'VarBinary' | 'BigInt' | 'Int' | 'Bit';
  readonly length?: number | 'max';
  readonly exact?: boolean;
}

/** The staging table's bulk columns, in bulk order. Lengths match the target table (blob-table.sql). */
export const STAGE_COLUMNS: readonly StageColumn[] = [
  { name: 'tenant', type: 'NVarChar', length: 100, exact: true },
  { name: 'key', type: 'NVarChar', length: 450, exact: true },
  { name: 'name', type: 'NVarChar', length: 4000 },
  { name: 'path_locator', type: 'NVarChar', length: 850, exact: true },
  { name: 'parent_path_locator', type: 'NVarChar', length: 850, exact: true },
  { name: 'is_directory', type: 'Bit' },
  { name: 'size', type: 'BigInt' },
  { name: 'content', type: 'VarBinary', length: 'max' },
  { name: 'content_kind', type: 'VarChar', length: 8 },
  { name: 'content_sha256', type: 'VarBinary', length: 32 },
  { name: 'chunk_count', type: 'Int' },
  { name: 'modified_on_ticks', type: 'BigInt' },
  { name: 'observed_ticks', type: 'BigInt' },
  { name: 'business_unit', type: 'NVarChar', length: 100 },
  { name: 'creation_time_ticks', type: 'BigInt' },
  { name: 'last_write_time_ticks', type: 'BigInt' },
  { name: 'last_access_time_ticks', type: 'BigInt' },
  { name: 'is_readonly', type: 'Bit' },
  { name: 'is_hidden', type: 'Bit' },
  { name: 'is_system', type: 'Bit' },
  { name: 'is_archive', type: 'Bit' },
  { name: 'run_id', type: 'NVarChar', length: 100 },
  { name: 'source_partition', type: 'Int' },
  { name: 'source_offset', type: 'BigInt' },
];

/** The chunk staging table's bulk columns, in bulk order. */
export const CHUNK_STAGE_COLUMNS: readonly StageColumn[] = [
  { name: 'table_name', type: 'NVarChar', length: 100, exact: true },
  { name: 'key', type: 'NVarChar', length: 450, exact: true },
  { name: 'content_sha256', type: 'VarBinary', length: 32 },
  { name: 'chunk_count', type: 'Int' },
  { name: 'idx', type: 'Int' },
  { name: 'bytes', type: 'VarBinary', length: 'max' },
];

/** Staging-only columns: how the content travels. Every other bulk column is a column of the target table. */
const STAGE_ONLY = new Set(['content_kind', 'chunk_count']);
const TARGET_COLUMNS = STAGE_COLUMNS.map((c) => c.name).filter((n) => !STAGE_ONLY.has(n));
const col = (name: string): string => quoteMssql(name);

function columnDdl(c: StageColumn): string {
  const length = c.length === undefined ? '' : `(${c.length})`;
  const collation = c.exact ? ` COLLATE ${BIN2}` : '';
  return `${col(c.name)} ${c.type.toLowerCase()}${length}${collation} NULL`;
}

function createTempTable(name: string, columns: readonly StageColumn[], extra: readonly string[] = []): SqlQuery {
  const defs = [...columns.map(columnDdl), ...extra].map((d) => `  ${d}`).join(',\n');
  return { text: `DROP TABLE IF EXISTS ${name};\nCREATE TABLE ${name} (\n${defs}\n);`, values: {} };
}

/**
 * The session's staging table, created afresh for each batch (a pooled session may still hold the previous one)
 * and dropped before COMMIT by dropStageTables, so tempdb does not keep a batch of blobs.
 */
export function createStageTable(): SqlQuery {
  return createTempTable(STAGE_TABLE, STAGE_COLUMNS, ['[status] varchar(16) NULL']);
}

export function createChunkStageTable(): SqlQuery {
  return createTempTable(CHUNK_STAGE_TABLE, CHUNK_STAGE_COLUMNS);
}

export function dropStageTables(): SqlQuery {
  return { text: `DROP TABLE IF EXISTS ${STAGE_TABLE};\nDROP TABLE IF EXISTS ${CHUNK_STAGE_TABLE};`, values: {} };
}

export type { StageValue };

/** One row's bulk values, in STAGE_COLUMNS order (the order both engines stage, src/apply/sink/batch.ts). */
export function stageValues(row: StageInput): StageValue[] {
  return stageRowValues(row, (bytes) => BigInt(bytes));
}

/** One chunk's bulk values, in CHUNK_STAGE_COLUMNS order. */
export function chunkStageValues(chunk: { table: string; key: string; contentSha256: Buffer; count: number; index: number; bytes: Buffer }): StageValue[] {
  return [chunk.table, chunk.key, chunk.contentSha256, chunk.count, chunk.index, chunk.bytes];
}

/**
 * Why a row's values do not fit their bulk columns, or null when they do. Checked before the bulk load so the
 * error names the row and column (the driver only says that validation failed), and a text too long is refused
 * rather than truncated. nvarchar lengths count UTF-16 code units, as JS string lengths do.
 */
export function stageMismatch(columns: readonly StageColumn[], values: readonly StageValue[]): string | null {
  for (const [i, c] of columns.entries()) {
    const v = values[i] ?? null;
    if (v === null || typeof c.length !== 'number') continue;
    const size = typeof v === 'string' ? v.length : Buffer.isBuffer(v) ? v.length : 0;
    if (size > c.length) return `${c.name} is ${size} long, more than the ${c.length} its column holds`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------- chunks

/**
 * Chunks bulk-loaded into #hw_chunk_stage move to hw_chunks unless already there (replays resend them). The
 * UPDLOCK, HOLDLOCK probe makes two consumers inserting the same chunk wait for each other instead of one failing
 * on the primary key.
 */
export function insertStagedChunks(schema: string): SqlQuery {
  const chunks = bookkeeping(schema, 'hw_chunks');
  const keyCols = ['table_name', 'key', 'content_sha256', 'chunk_count', 'idx'];
  const same = keyCols.map((c) => `h.${col(c)} = c.${col(c)}`).join(' AND ');
  const cols = CHUNK_STAGE_COLUMNS.map((c) => col(c.name)).join(', ');
  return {
    text: `INSERT INTO ${chunks} (${cols})
SELECT ${CHUNK_STAGE_COLUMNS.map((c) => `c.${col(c.name)}`).join(', ')}
FROM (
  SELECT x.*, ROW_NUMBER() OVER (PARTITION BY ${keyCols.map((c) => `x.${col(c)}`).join(', ')} ORDER BY (SELECT NULL)) AS rn
  FROM ${CHUNK_STAGE_TABLE} AS x
) AS c
WHERE c.rn = 1
  AND NOT EXISTS (SELECT 1 FROM ${chunks} AS h WITH (UPDLOCK, HOLDLOCK) WHERE ${same});`,
    values: {},
  };
}

// ---------------------------------------------------------------------------------------------------- classification

const MIN_TICKS = 'CONVERT(bigint, -9223372036854775808)';
const sha = (alias: string): string => `ISNULL(${alias}.[content_sha256], 0x)`;
const modifiedOnOf = (alias: string): string => `ISNULL(${alias}.[modified_on_ticks], ${MIN_TICKS})`;

/** When a stored row or tombstone was observed; before contract v2 none was recorded and ModifiedOn stands in. */
const observedOf = (alias: string): string => `ISNULL(${alias}.[observed_ticks], ${modifiedOnOf(alias)})`;

/** (ModifiedOn, observation) of `a` strictly before that of `b`; NULL ModifiedOn first. */
function observedBefore(a: string, b: string): string {
  return `(${modifiedOnOf(a)} < ${modifiedOnOf(b)} OR (${modifiedOnOf(a)} = ${modifiedOnOf(b)} AND ${observedOf(a)} < ${observedOf(b)}))`;
}

/** Version of `a` strictly older than version of `b` (src/events/version.ts; the hash breaks a full tie only). */
function olderThan(a: string, b: string): string {
  const same = `${modifiedOnOf(a)} = ${modifiedOnOf(b)} AND ${observedOf(a)} = ${observedOf(b)}`;
  return `(${observedBefore(a, b)} OR (${same} AND ${sha(a)} < ${sha(b)}))`;
}

/** The greatest version first, for ROW_NUMBER() over a key's staged rows. */
const newestFirst = (alias: string): string => `${modifiedOnOf(alias)} DESC, ${observedOf(alias)} DESC, ${sha(alias)} DESC`;

/** A tombstone of this table/tenant/key observed at or after the staged row `s`: the delete covers it. */
function tombstoneBlocks(schema: string, s: string): string {
  return `EXISTS (SELECT 1 FROM ${bookkeeping(schema, 'hw_tombstones')} AS d
    WHERE d.[table_name] = @table AND d.[tenant] = ${s}.[tenant] AND d.[key] = ${s}.[key] AND ${observedOf('d')} >= ${s}.[observed_ticks])`;
}

/** Rows the target already holds at an equal or newer version, or that a newer (or equal) delete covers. */
export function markStale(t: TargetTable): SqlQuery {
  return {
    text: `UPDATE s SET [status] = 'stale'
FROM ${STAGE_TABLE} AS s
WHERE s.[status] IS NULL AND (
  EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = s.[tenant] AND t.[key] = s.[key] AND NOT ${olderThan('t', 's')})
  OR ${tombstoneBlocks(t.schema, 's')});`,
    values: { table: nvarchar(t.logical) },
  };
}

/**
 * Puts chunked content together in the database: rows whose chunks are all staged start as 0x and get chunk
 * `idx` appended with `.WRITE(bytes, NULL, 0)` (an append that does not copy what is already there), chunk by
 * chunk in index order; a result whose SHA-256 is not the row's hash is set back to NULL (incomplete).
 */
export function assembleChunkedContent(t: TargetTable): SqlQuery {
  const chunks = bookkeeping(t.schema, 'hw_chunks');
  const ofRow = `h.[table_name] = @table AND h.[key] = s.[key] AND h.[content_sha256] = s.[content_sha256] AND h.[chunk_count] = s.[chunk_count]`;
  const pending = `s.[status] IS NULL AND s.[content_kind] = 'chunked'`;
  return {
    text: `UPDATE s SET [content] = 0x
FROM ${STAGE_TABLE} AS s
WHERE ${pending}
  AND (SELECT COUNT(*) FROM ${chunks} AS h WHERE ${ofRow} AND h.[idx] >= 0 AND h.[idx] < s.[chunk_count]) = s.[chunk_count];
DECLARE @idx int = 0;
DECLARE @chunks int = ISNULL((SELECT MAX(s.[chunk_count]) FROM ${STAGE_TABLE} AS s WHERE ${pending} AND s.[content] IS NOT NULL), 0);
WHILE @idx < @chunks
BEGIN
  UPDATE s SET [content].WRITE(h.[bytes], NULL, 0)
  FROM ${STAGE_TABLE} AS s INNER JOIN ${chunks} AS h ON ${ofRow} AND h.[idx] = @idx
  WHERE ${pending} AND s.[content] IS NOT NULL;
  SET @idx = @idx + 1;
END;
UPDATE s SET [content] = NULL
FROM ${STAGE_TABLE} AS s
WHERE ${pending} AND s.[content] IS NOT NULL AND HASHBYTES('SHA2_256', s.[content]) <> s.[content_sha256];`,
    values: { table: nvarchar(t.logical) },
  };
}

/** Chunked rows whose content could not be assembled; returns their keys. */
export function markIncompleteContent(): SqlQuery {
  return {
    text: `UPDATE s SET [status] = 'incomplete'
FROM ${STAGE_TABLE} AS s
WHERE s.[status] IS NULL AND s.[content_kind] = 'chunked' AND s.[content] IS NULL;
SELECT s.[key] FROM ${STAGE_TABLE} AS s WHERE s.[status] = 'incomplete';`,
    values: {},
  };
}

/**
 * Rows whose parent is neither in the target (same tenant) nor placed by this batch; returns their keys. A staged
 * row places its children only while it will be written itself (status NULL), so marking is repeated until
 * nothing changes: a chain hanging from a missing parent is held back whole. A loop rather than a recursive CTE:
 * T-SQL recursion has no UNION (only UNION ALL), so a path that names itself as parent would recurse until
 * MAXRECURSION fails the batch; each pass of the loop marks at least one row or ends it.
 */
export function markMissingParents(t: TargetTable): SqlQuery {
  return {
    text: `DECLARE @marked int = 1;
WHILE @marked > 0
BEGIN
  UPDATE s SET [status] = 'missing-parent'
  FROM ${STAGE_TABLE} AS s
  WHERE s.[status] IS NULL AND s.[parent_path_locator] IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = s.[tenant] AND t.[path_locator] = s.[parent_path_locator])
    AND NOT EXISTS (SELECT 1 FROM ${STAGE_TABLE} AS p WHERE p.[status] IS NULL AND p.[tenant] = s.[tenant] AND p.[path_locator] = s.[parent_path_locator]);
  SET @marked = @@ROWCOUNT;
END;
SELECT s.[key] FROM ${STAGE_TABLE} AS s WHERE s.[status] = 'missing-parent';`,
    values: {},
  };
}

// ---------------------------------------------------------------------------------------------------- writes

/**
 * The guarded upsert: rows still unclassified, with no tombstone at or after their version, inserted, or updated
 * only when strictly newer than the target's version. HOLDLOCK makes the MERGE's match and insert one serializable
 * step, so two consumers cannot both insert one key. Returns `applied`, the rows written.
 */
export function upsertFromStage(t: TargetTable): SqlQuery {
  const updatable = TARGET_COLUMNS.filter((c) => c !== 'tenant' && c !== 'key');
  const updates = [...updatable.map((c) => `${col(c)} = s.${col(c)}`), '[applied_at] = SYSUTCDATETIME()'];
  // Of a key's staged rows not covered by a tombstone, the greatest version (a key is staged more than once only
  // when its ModifiedOn moved backwards across a delete): a MERGE may meet each key once.
  const source = `SELECT ${TARGET_COLUMNS.map((c) => `r.${col(c)}`).join(', ')}
  FROM (
    SELECT x.*, ROW_NUMBER() OVER (PARTITION BY x.[tenant], x.[key] ORDER BY ${newestFirst('x')}) AS rn
    FROM ${STAGE_TABLE} AS x
    WHERE x.[status] IS NULL AND NOT ${tombstoneBlocks(t.schema, 'x')}
  ) AS r
  WHERE r.rn = 1`;
  return {
    text: `MERGE ${target(t)} WITH (HOLDLOCK) AS t
USING (
  ${source}
) AS s
ON t.[tenant] = s.[tenant] AND t.[key] = s.[key]
WHEN MATCHED AND ${olderThan('t', 's')} THEN
  UPDATE SET ${updates.join(', ')}
WHEN NOT MATCHED BY TARGET THEN
  INSERT (${TARGET_COLUMNS.map(col).join(', ')})
  VALUES (${TARGET_COLUMNS.map((c) => `s.${col(c)}`).join(', ')});
SELECT @@ROWCOUNT AS applied;`,
    values: { table: nvarchar(t.logical) },
  };
}

/**
 * Releases staged chunks once used: those of rows written, held (hw_held keeps the assembled content) or found
 * stale, and of versions superseded inside the batch (given as JSON, hashes in hex) — but never a set still needed
 * by a row whose content is incomplete in this batch.
 */
export function deleteUsedChunks(t: TargetTable, superseded: readonly RowToApply[]): SqlQuery {
  const chunked = superseded.flatMap((r) => {
    const c = r.change;
    return c.content.kind === 'chunked' && c.contentSha256 !== null ? [{ key: c.key, sha: c.contentSha256.toString('hex'), count: c.content.chunkCount }] : [];
  });
  const stage = (condition: string): string =>
    `SELECT s.[key], s.[content_sha256], s.[chunk_count] FROM ${STAGE_TABLE} AS s WHERE s.[content_kind] = 'chunked' AND ${condition}`;
  return {
    text: `DELETE h FROM ${bookkeeping(t.schema, 'hw_chunks')} AS h
INNER JOIN (
  ${stage("(s.[status] IS NULL OR s.[status] IN ('stale', 'missing-parent'))")}
  UNION
  SELECT x.[key], CONVERT(varbinary(32), x.[sha], 2), x.[count] FROM (
    ${jsonRows('superseded', [['key', 'nvarchar(450)', '$.key', 'exact'], ['sha', 'varchar(64)', '$.sha'], ['count', 'int', '$.count']])}
  ) AS x
  EXCEPT
  ${stage("s.[status] = 'incomplete'")}
) AS u ON h.[table_name] = @table AND h.[key] = u.[key] AND h.[content_sha256] = u.[content_sha256] AND h.[chunk_count] = u.[chunk_count];`,
    values: { table: nvarchar(t.logical), superseded: json(chunked) },
  };
}

/** The deletes of a batch as a derived table: the latest observed delete per (tenant, key). Ticks travel as text. */
function deletesSource(): string {
  const rows = jsonRows('deletes', [
    ['tenant', 'nvarchar(100)', '$.tenant', 'exact'], ['key', 'nvarchar(450)', '$.key', 'exact'],
    ['modified_on_ticks', 'bigint', '$.modifiedOn'], ['observed_ticks', 'bigint', '$.observed'],
  ]);
  return `SELECT y.[tenant], y.[key], y.[modified_on_ticks], y.[observed_ticks] FROM (
    SELECT x.*, ROW_NUMBER() OVER (PARTITION BY x.[tenant], x.[key] ORDER BY x.[observed_ticks] DESC) AS rn
    FROM (${rows}) AS x
  ) AS y WHERE y.rn = 1`;
}

/**
 * Guarded deletes: the target row goes when it was observed at or before the delete, whatever its ModifiedOn, and
 * the deletion is remembered in hw_tombstones (the latest observed delete per key) so an older version replayed
 * later cannot resurrect it. Returns `deleted`, the target rows deleted.
 */
export function applyDeletes(t: TargetTable, deletes: readonly DeleteToApply[]): SqlQuery {
  const tombstones = bookkeeping(t.schema, 'hw_tombstones');
  return {
    text: `DECLARE @deleted int;
DELETE t FROM ${target(t)} AS t
INNER JOIN (
  ${deletesSource()}
) AS d ON t.[tenant] = d.[tenant] AND t.[key] = d.[key]
WHERE ${observedOf('t')} <= d.[observed_ticks];
SET @deleted = @@ROWCOUNT;
MERGE ${tombstones} WITH (HOLDLOCK) AS tb
USING (
  ${deletesSource()}
) AS d
ON tb.[table_name] = @table AND tb.[tenant] = d.[tenant] AND tb.[key] = d.[key]
WHEN MATCHED AND ${observedOf('tb')} < d.[observed_ticks] THEN
  UPDATE SET [modified_on_ticks] = d.[modified_on_ticks], [observed_ticks] = d.[observed_ticks], [deleted_at] = SYSUTCDATETIME()
WHEN NOT MATCHED BY TARGET THEN
  INSERT ([table_name], [tenant], [key], [modified_on_ticks], [observed_ticks]) VALUES (@table, d.[tenant], d.[key], d.[modified_on_ticks], d.[observed_ticks]);
SELECT @deleted AS deleted;`,
    values: {
      table: nvarchar(t.logical),
      deletes: json(deletes.map((d) => ({ tenant: d.tenant, key: d.key, modifiedOn: d.modifiedOn?.toString() ?? null, observed: d.observed.toString() }))),
    },
  };
}

// ---------------------------------------------------------------------------------------------------- held children

const held = (schema: string): string => bookkeeping(schema, 'hw_held');

/**
 * Staged rows whose parent is missing (markMissingParents) are held in hw_held, whole, instead of leaving the
 * transaction: the greatest version per key; a held version is replaced only by a newer one.
 */
export function holdMissingParents(t: TargetTable): SqlQuery {
  const updatable = TARGET_COLUMNS.filter((c) => c !== 'tenant' && c !== 'key');
  const source = `SELECT ${TARGET_COLUMNS.map((c) => `r.${col(c)}`).join(', ')}
  FROM (
    SELECT x.*, ROW_NUMBER() OVER (PARTITION BY x.[tenant], x.[key] ORDER BY ${newestFirst('x')}) AS rn
    FROM ${STAGE_TABLE} AS x WHERE x.[status] = 'missing-parent'
  ) AS r
  WHERE r.rn = 1`;
  return {
    text: `MERGE ${held(t.schema)} WITH (HOLDLOCK) AS h
USING (
  ${source}
) AS s
ON h.[table_name] = @table AND h.[tenant] = s.[tenant] AND h.[key] = s.[key]
WHEN MATCHED AND ${olderThan('h', 's')} THEN
  UPDATE SET ${[...updatable.map((c) => `${col(c)} = s.${col(c)}`), '[held_at] = SYSUTCDATETIME()'].join(', ')}
WHEN NOT MATCHED BY TARGET THEN
  INSERT ([table_name], ${TARGET_COLUMNS.map(col).join(', ')})
  VALUES (@table, ${TARGET_COLUMNS.map((c) => `s.${col(c)}`).join(', ')});`,
    values: { table: nvarchar(t.logical) },
  };
}

/**
 * Promotes every held child whose parent is now in the target — and, to a fixpoint, the held children of those —
 * with the guarded MERGE: a held version never overwrites a newer one, and one a tombstone covers is not written.
 * Promoted rows leave hw_held. `scope` 'batch' looks only at children of the rows this batch staged (the parents
 * that may just have arrived); 'all' at every held child of the table (a sweep, for parents written by another
 * consumer's concurrent transaction). A loop over a table variable, as in markMissingParents (T-SQL recursion has
 * no UNION). Returns tenant, key of the rows taken out of hw_held, and `written`.
 */
export function promoteHeld(t: TargetTable, scope: 'batch' | 'all'): SqlQuery {
  const h = held(t.schema);
  const ready = `DECLARE @ready TABLE ([tenant] nvarchar(100) COLLATE ${BIN2} NOT NULL, [key] nvarchar(450) COLLATE ${BIN2} NOT NULL, [path_locator] nvarchar(850) COLLATE ${BIN2} NULL, PRIMARY KEY ([tenant], [key]));`;
  const fromBatch = scope === 'batch'
    ? `\n  AND EXISTS (SELECT 1 FROM ${STAGE_TABLE} AS s WHERE s.[status] IS NULL AND s.[tenant] = h.[tenant] AND s.[path_locator] = h.[parent_path_locator])`
    : '';
  const updatable = TARGET_COLUMNS.filter((c) => c !== 'tenant' && c !== 'key');
  const updates = [...updatable.map((c) => `${col(c)} = s.${col(c)}`), '[applied_at] = SYSUTCDATETIME()'];
  const sameKey = `h.[table_name] = @table AND h.[tenant] = r.[tenant] AND h.[key] = r.[key]`;
  return {
    text: `${ready}
DECLARE @written int;
INSERT INTO @ready ([tenant], [key], [path_locator])
SELECT h.[tenant], h.[key], h.[path_locator] FROM ${h} AS h
WHERE h.[table_name] = @table AND h.[parent_path_locator] IS NOT NULL${fromBatch}
  AND EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = h.[tenant] AND t.[path_locator] = h.[parent_path_locator])
  AND NOT ${tombstoneBlocks(t.schema, 'h')};
WHILE @@ROWCOUNT > 0
BEGIN
  INSERT INTO @ready ([tenant], [key], [path_locator])
  SELECT h.[tenant], h.[key], h.[path_locator] FROM ${h} AS h
  WHERE h.[table_name] = @table
    AND EXISTS (SELECT 1 FROM @ready AS p WHERE p.[tenant] = h.[tenant] AND p.[path_locator] = h.[parent_path_locator])
    AND NOT EXISTS (SELECT 1 FROM @ready AS r WHERE r.[tenant] = h.[tenant] AND r.[key] = h.[key])
    AND NOT ${tombstoneBlocks(t.schema, 'h')};
END;
MERGE ${target(t)} WITH (HOLDLOCK) AS t
USING (
  SELECT ${TARGET_COLUMNS.map((c) => `h.${col(c)}`).join(', ')}
  FROM ${h} AS h INNER JOIN @ready AS r ON ${sameKey}
) AS s
ON t.[tenant] = s.[tenant] AND t.[key] = s.[key]
WHEN MATCHED AND ${olderThan('t', 's')} THEN
  UPDATE SET ${updates.join(', ')}
WHEN NOT MATCHED BY TARGET THEN
  INSERT (${TARGET_COLUMNS.map(col).join(', ')})
  VALUES (${TARGET_COLUMNS.map((c) => `s.${col(c)}`).join(', ')});
SET @written = @@ROWCOUNT;
DELETE h FROM ${h} AS h INNER JOIN @ready AS r ON ${sameKey};
SELECT r.[tenant], r.[key], @written AS written FROM @ready AS r;`,
    values: { table: nvarchar(t.logical) },
  };
}

/**
 * Held children of these keys that are resolved otherwise: the target holds their version or a newer one, or a
 * delete observed at or after them covers them (a delete wins). Run after a batch's deletes and upserts.
 */
export function dropResolvedHeld(t: TargetTable, keys: readonly { tenant: string; key: string }[]): SqlQuery {
  return {
    text: `DELETE h FROM ${held(t.schema)} AS h
INNER JOIN (
  ${jsonRows('keys', [['tenant', 'nvarchar(100)', '$.tenant', 'exact'], ['key', 'nvarchar(450)', '$.key', 'exact']])}
) AS k ON h.[table_name] = @table AND h.[tenant] = k.[tenant] AND h.[key] = k.[key]
WHERE EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = h.[tenant] AND t.[key] = h.[key] AND NOT ${olderThan('t', 'h')})
   OR ${tombstoneBlocks(t.schema, 'h')};`,
    values: { table: nvarchar(t.logical), keys: json(keys.map((k) => ({ tenant: k.tenant, key: k.key }))) },
  };
}

/**
 * The parents held children wait for that are neither in the target nor held themselves (the top of each waiting
 * chain): what a back-fill request asks for. Columns: tenant, parent_path_locator, children (how many wait).
 */
export function selectHeldParents(t: TargetTable, limit = 1000): SqlQuery {
  const h = held(t.schema);
  return {
    text: `SELECT TOP (@limit) h.[tenant], h.[parent_path_locator], COUNT(*) AS children
FROM ${h} AS h
WHERE h.[table_name] = @table AND h.[parent_path_locator] IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = h.[tenant] AND t.[path_locator] = h.[parent_path_locator])
  AND NOT EXISTS (SELECT 1 FROM ${h} AS p WHERE p.[table_name] = h.[table_name] AND p.[tenant] = h.[tenant] AND p.[path_locator] = h.[parent_path_locator])
GROUP BY h.[tenant], h.[parent_path_locator]
ORDER BY MIN(h.[held_at]);`,
    values: { table: nvarchar(t.logical), limit: { type: 'Int', value: limit } },
  };
}

/** Held children of one parent, whole (target columns), for the dead-letter topic. */
export function selectHeldChildren(t: TargetTable, tenant: string, parentPathLocator: string): SqlQuery {
  return {
    text: `SELECT ${TARGET_COLUMNS.map((c) => `h.${col(c)}`).join(', ')} FROM ${held(t.schema)} AS h
WHERE h.[table_name] = @table AND h.[tenant] = @tenant AND h.[parent_path_locator] = @parent
ORDER BY h.[key];`,
    values: { table: nvarchar(t.logical), tenant: nvarchar(tenant), parent: nvarchar(parentPathLocator) },
  };
}

// ---------------------------------------------------------------------------------------------------- parked rows

/** Parked rows as a MERGE source; a row replaces a parked one only when newer (ModifiedOn, observation). */
function mergeParked(t: TargetTable, source: string): string {
  return `MERGE ${bookkeeping(t.schema, 'hw_parked')} WITH (HOLDLOCK) AS p
USING (
  ${source}
) AS x
ON p.[table_name] = @table AND p.[tenant] = x.[tenant] AND p.[key] = x.[key]
WHEN MATCHED AND ${observedBefore('p', 'x')} THEN
  UPDATE SET [modified_on_ticks] = x.[modified_on_ticks], [observed_ticks] = x.[observed_ticks], [reason] = x.[reason], [parked_at] = SYSUTCDATETIME()
WHEN NOT MATCHED BY TARGET THEN
  INSERT ([table_name], [tenant], [key], [modified_on_ticks], [observed_ticks], [reason])
  VALUES (@table, x.[tenant], x.[key], x.[modified_on_ticks], x.[observed_ticks], x.[reason]);`;
}

/** Rows the loop routed to the retry topic before the write: remembered until resolved (the latest version per key). */
export function parkRows(t: TargetTable, rows: readonly ParkedRow[]): SqlQuery {
  const source = jsonRows('parked', [
    ['tenant', 'nvarchar(100)', '$.tenant', 'exact'], ['key', 'nvarchar(450)', '$.key', 'exact'],
    ['modified_on_ticks', 'bigint', '$.modifiedOn'], ['observed_ticks', 'bigint', '$.observed'], ['reason', 'nvarchar(100)', '$.reason'],
  ]);
  const latest = `SELECT y.[tenant], y.[key], y.[modified_on_ticks], y.[observed_ticks], y.[reason] FROM (
    SELECT z.*, ROW_NUMBER() OVER (PARTITION BY z.[tenant], z.[key] ORDER BY z.[observed_ticks] DESC) AS rn FROM (${source}) AS z
  ) AS y WHERE y.rn = 1`;
  return {
    text: mergeParked(t, latest),
    values: {
      table: nvarchar(t.logical),
      parked: json(rows.map((r) => ({ tenant: r.tenant, key: r.key, modifiedOn: r.modifiedOn?.toString() ?? null, observed: r.observed.toString(), reason: r.reason }))),
    },
  };
}

/** The staged rows held back by this batch (missing parent, incomplete content) are parked too. */
export function parkHeldBack(t: TargetTable): SqlQuery {
  const source = `SELECT y.[tenant], y.[key], y.[modified_on_ticks], y.[observed_ticks], CONVERT(nvarchar(100), y.[status]) AS [reason] FROM (
    SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.[tenant], s.[key] ORDER BY ${newestFirst('s')}) AS rn
    FROM ${STAGE_TABLE} AS s WHERE s.[status] IN ('incomplete', 'missing-parent')
  ) AS y WHERE y.rn = 1`;
  return { text: mergeParked(t, source), values: { table: nvarchar(t.logical) } };
}

/**
 * Parked rows of these keys that are resolved now: the target holds their version or a newer one, or a delete
 * observed at or after them covers them.
 */
export function releaseParked(t: TargetTable, keys: readonly { tenant: string; key: string }[]): SqlQuery {
  return {
    text: `DELETE p FROM ${bookkeeping(t.schema, 'hw_parked')} AS p
INNER JOIN (
  ${jsonRows('keys', [['tenant', 'nvarchar(100)', '$.tenant', 'exact'], ['key', 'nvarchar(450)', '$.key', 'exact']])}
) AS k ON p.[table_name] = @table AND p.[tenant] = k.[tenant] AND p.[key] = k.[key]
WHERE EXISTS (SELECT 1 FROM ${target(t)} AS t WHERE t.[tenant] = p.[tenant] AND t.[key] = p.[key] AND NOT ${observedBefore('t', 'p')})
   OR EXISTS (SELECT 1 FROM ${bookkeeping(t.schema, 'hw_tombstones')} AS d
      WHERE d.[table_name] = p.[table_name] AND d.[tenant] = p.[tenant] AND d.[key] = p.[key] AND ${observedOf('d')} >= p.[observed_ticks]);`,
    values: { table: nvarchar(t.logical), keys: json(keys.map((k) => ({ tenant: k.tenant, key: k.key }))) },
  };
}

/** Watermarks per partition and scope, moving forward only (the greatest of the batch per partition and scope). */
export function upsertWatermarks(schema: string, groupId: string, marks: readonly WatermarkToRecord[]): SqlQuery {
  const rows = latestWatermarks(marks).map((m) => ({ table: m.table, tenant: m.tenant, scope: m.scope, topic: m.topic, partition: m.partition, ticks: m.watermark.toString() }));
  return {
    text: `MERGE ${bookkeeping(schema, 'hw_watermarks')} WITH (HOLDLOCK) AS w
USING (
  ${jsonRows('marks', [
    ['table_name', 'nvarchar(100)', '$.table', 'exact'], ['tenant', 'nvarchar(100)', '$.tenant', 'exact'], ['scope', 'nvarchar(100)', '$.scope', 'exact'],
    ['topic', 'varchar(249)', '$.topic', 'exact'], ['partition', 'int', '$.partition'], ['ticks', 'bigint', '$.ticks'],
  ])}
) AS m
ON w.[group_id] = @groupId AND w.[topic] = m.[topic] AND w.[partition] = m.[partition] AND w.[scope] = m.[scope]
WHEN MATCHED AND w.[watermark_ticks] < m.[ticks] THEN
  UPDATE SET [watermark_ticks] = m.[ticks], [table_name] = m.[table_name], [tenant] = m.[tenant], [updated_at] = SYSUTCDATETIME()
WHEN NOT MATCHED BY TARGET THEN
  INSERT ([group_id], [table_name], [tenant], [scope], [topic], [partition], [watermark_ticks])
  VALUES (@groupId, m.[table_name], m.[tenant], m.[scope], m.[topic], m.[partition], m.[ticks]);`,
    values: { groupId: nvarchar(groupId), marks: json(rows) },
  };
}

/** The next offset per partition, as given (the last of the batch per partition wins). */
export function upsertOffsets(schema: string, groupId: string, offsets: readonly StoredOffset[]): SqlQuery {
  const rows = lastOffsets(offsets).map((o) => ({ topic: o.topic, partition: o.partition, next: o.nextOffset.toString() }));
  return {
    text: `MERGE ${bookkeeping(schema, 'hw_offsets')} WITH (HOLDLOCK) AS o
USING (
  ${jsonRows('offsets', [['topic', 'varchar(249)', '$.topic', 'exact'], ['partition', 'int', '$.partition'], ['next_offset', 'bigint', '$.next']])}
) AS x
ON o.[group_id] = @groupId AND o.[topic] = x.[topic] AND o.[partition] = x.[partition]
WHEN MATCHED THEN
  UPDATE SET [next_offset] = x.[next_offset], [updated_at] = SYSUTCDATETIME()
WHEN NOT MATCHED BY TARGET THEN
  INSERT ([group_id], [topic], [partition], [next_offset]) VALUES (@groupId, x.[topic], x.[partition], x.[next_offset]);`,
    values: { groupId: nvarchar(groupId), offsets: json(rows) },
  };
}

// ---------------------------------------------------------------------------------------------------- reads

/** Columns: topic, partition, next_offset (bigint as text). */
export function selectStoredOffsets(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `SELECT o.[topic], o.[partition], CONVERT(varchar(20), o.[next_offset]) AS next_offset
FROM ${bookkeeping(schema, 'hw_offsets')} AS o
WHERE o.[group_id] = @groupId AND o.[topic] IN (${jsonStrings('topics')})
ORDER BY o.[topic], o.[partition];`,
    values: { groupId: nvarchar(groupId), topics: json(topics) },
  };
}

/** Column: path_locator. */
export function selectExistingPaths(t: TargetTable, tenant: string, pathLocators: readonly string[]): SqlQuery {
  return {
    text: `SELECT DISTINCT t.[path_locator]
FROM ${target(t)} AS t
WHERE t.[tenant] = @tenant AND t.[path_locator] IN (${jsonStrings('paths')});`,
    values: { tenant: nvarchar(tenant), paths: json(pathLocators) },
  };
}

/**
 * consistent_as_of per (table, scope): the minimum watermark over the partitions of its topics, or NULL when a
 * partition is known not to have passed a marker of that scope. Without partition counts the known partitions are
 * those with a marker or a stored offset of this group. Columns: table_name, scope, watermark (bigint as text, or NULL).
 */
export function selectConsistentAsOf(schema: string, groupId: string): SqlQuery {
  return {
    text: `WITH w AS (
  SELECT [table_name], [scope], [topic], [partition], [watermark_ticks] FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE [group_id] = @groupId
), known AS (
  SELECT p.[topic], COUNT(*) AS partitions FROM (
    SELECT [topic], [partition] FROM w
    UNION SELECT [topic], [partition] FROM ${bookkeeping(schema, 'hw_offsets')} WHERE [group_id] = @groupId
  ) AS p GROUP BY p.[topic]
)${consistentTail(schema)}`,
    values: { groupId: nvarchar(groupId) },
  };
}

/**
 * As selectConsistentAsOf, with the partition count of every topic given (from the broker's metadata): NULL when a
 * topic has fewer markers of a scope than partitions, or is not in the map.
 */
export function selectConsistentAsOfWithPartitions(schema: string, groupId: string, partitionsByTopic: ReadonlyMap<string, number>): SqlQuery {
  const known = [...partitionsByTopic].map(([topic, partitions]) => ({ topic, partitions }));
  return {
    text: `WITH w AS (
  SELECT [table_name], [scope], [topic], [partition], [watermark_ticks] FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE [group_id] = @groupId
), known AS (
  ${jsonRows('known', [['topic', 'varchar(249)', '$.topic', 'exact'], ['partitions', 'int', '$.partitions']])}
)${consistentTail(schema)}`,
    values: { groupId: nvarchar(groupId), known: json(known) },
  };
}

/**
 * The minimum over partitions, and below the ModifiedOn of every row of the table still parked (waiting in the retry
 * topic or dead-lettered there): the target does not hold it, so it cannot be complete up to that point.
 */
const consistentTail = (schema: string): string => `, per_topic AS (
  SELECT [table_name], [scope], [topic], MIN([watermark_ticks]) AS watermark, COUNT(*) AS marked FROM w GROUP BY [table_name], [scope], [topic]
), parked AS (
  SELECT [table_name], MIN([modified_on_ticks]) - 1 AS below FROM ${bookkeeping(schema, 'hw_parked')} GROUP BY [table_name]
), per_table AS (
  SELECT p.[table_name], p.[scope],
    MIN(CASE WHEN k.[partitions] IS NOT NULL AND p.marked >= k.[partitions] THEN 1 ELSE 0 END) AS complete,
    MIN(p.watermark) AS watermark
  FROM per_topic AS p LEFT JOIN known AS k ON k.[topic] = p.[topic]
  GROUP BY p.[table_name], p.[scope]
)
SELECT pt.[table_name], pt.[scope],
  CASE WHEN pt.complete = 1 THEN CONVERT(varchar(20),
    CASE WHEN pk.below IS NOT NULL AND pk.below < pt.watermark THEN pk.below ELSE pt.watermark END) END AS watermark
FROM per_table AS pt LEFT JOIN parked AS pk ON pk.[table_name] = pt.[table_name]
ORDER BY pt.[table_name], pt.[scope];`;

// ---------------------------------------------------------------------------------------------------- operations

/** Forgets where the group stands on these topics (reset-offsets to earliest; before storing new positions). */
export function deleteStoredOffsets(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `DELETE FROM ${bookkeeping(schema, 'hw_offsets')} WHERE [group_id] = @groupId AND [topic] IN (${jsonStrings('topics')});`,
    values: { groupId: nvarchar(groupId), topics: json(topics) },
  };
}

/** Forgets the group's watermarks on these topics; a replay brings them back from the markers. */
export function deleteWatermarks(schema: string, groupId: string, topics: readonly string[]): SqlQuery {
  return {
    text: `DELETE FROM ${bookkeeping(schema, 'hw_watermarks')} WHERE [group_id] = @groupId AND [topic] IN (${jsonStrings('topics')});`,
    values: { groupId: nvarchar(groupId), topics: json(topics) },
  };
}

/** Column: present (1 or 0). */
export function selectSchemaExists(schema: string): SqlQuery {
  return { text: 'SELECT CASE WHEN SCHEMA_ID(@schema) IS NULL THEN 0 ELSE 1 END AS present;', values: { schema: nvarchar(assertIdentifier(schema, 'schema')) } };
}

/** Objects ALTER SCHEMA … TRANSFER moves; indexes, keys and constraints (parent_object_id <> 0) go with their table. */
const TRANSFERABLE = `o.[parent_object_id] = 0 AND o.[is_ms_shipped] = 0 AND o.[type] IN ('U', 'V', 'P', 'FN', 'IF', 'TF', 'SO', 'SN')`;

function transferAll(from: string, to: string): string {
  return `SET @sql = NULL;
SELECT @sql = STRING_AGG(CONVERT(nvarchar(max), N'ALTER SCHEMA ' + QUOTENAME(${to}) + N' TRANSFER ' + QUOTENAME(${from}) + N'.' + QUOTENAME(o.[name])), N'; ')
FROM sys.objects AS o WHERE o.[schema_id] = SCHEMA_ID(${from}) AND ${TRANSFERABLE};
IF @sql IS NOT NULL EXEC sp_executesql @sql;`;
}

/**
 * SQL Server cannot rename a schema, so the swap moves objects instead, inside the caller's transaction: every
 * object of @live into a new schema @retired, every object of @rebuilt into @live (created when missing), then
 * @rebuilt, now empty, is dropped. DDL is transactional in SQL Server: readers see one side or the other.
 */
export function swapSchemas(live: string, rebuilt: string, retired: string): SqlQuery {
  return {
    text: `DECLARE @sql nvarchar(max);
IF SCHEMA_ID(@rebuilt) IS NULL THROW 50001, N'the rebuilt schema does not exist', 1;
IF SCHEMA_ID(@retired) IS NOT NULL THROW 50002, N'the schema for the retired tables exists already', 1;
IF SCHEMA_ID(@live) IS NOT NULL
BEGIN
  SET @sql = N'CREATE SCHEMA ' + QUOTENAME(@retired);
  EXEC sp_executesql @sql;
  ${transferAll('@live', '@retired')}
END
ELSE
BEGIN
  SET @sql = N'CREATE SCHEMA ' + QUOTENAME(@live);
  EXEC sp_executesql @sql;
END;
${transferAll('@rebuilt', '@live')}
SET @sql = N'DROP SCHEMA ' + QUOTENAME(@rebuilt);
EXEC sp_executesql @sql;`,
    values: {
      live: nvarchar(assertIdentifier(live, 'schema')),
      rebuilt: nvarchar(assertIdentifier(rebuilt, 'schema')),
      retired: nvarchar(assertIdentifier(retired, 'schema')),
    },
  };
}

/** Deletes every bookkeeping row of a group (offsets and watermarks), in two statements. */
export function deleteGroupBookkeeping(schema: string, groupId: string): SqlQuery[] {
  return ['hw_offsets', 'hw_watermarks'].map((table) => ({ text: `DELETE FROM ${bookkeeping(schema, table)} WHERE [group_id] = @groupId;`, values: { groupId: nvarchar(groupId) } }));
}

/** Gives a group's offsets and watermarks to another group id (run deleteGroupBookkeeping for `to` first). */
export function relabelGroup(schema: string, from: string, to: string): SqlQuery[] {
  return ['hw_offsets', 'hw_watermarks'].map((table) => ({
    text: `UPDATE ${bookkeeping(schema, table)} SET [group_id] = @to, [updated_at] = SYSUTCDATETIME() WHERE [group_id] = @from;`,
    values: { from: nvarchar(from), to: nvarchar(to) },
  }));
}

/**
 * Serialises deletes against upserts of one target table (see the PostgreSQL writer): an application lock owned by
 * the transaction, shared for upserting batches and exclusive for batches with deletes.
 */
export function tableWriteLock(t: TargetTable, exclusive: boolean): SqlQuery {
  return {
    text: `EXEC sp_getapplock @Resource = @resource, @LockMode = '${exclusive ? 'Exclusive' : 'Shared'}', @LockOwner = 'Transaction', @LockTimeout = 60000;`,
    values: { resource: nvarchar(`highwater:${t.schema}.${t.table}`) },
  };
}

// ---------------------------------------------------------------------------------------------------- the dialect

/** The target's bookkeeping migrations (hw_migrations: file name and SHA-256), for the one runner (src/db/migrate.ts). */
export function migrations(schema: string): MigrationBook<SqlQuery> {
  return {
    what: `schema ${schema}`,
    lock: () => migrationLock(schema),
    // sp_getapplock reports a timeout through its return code: the lock's mode, read back, says whether it was granted.
    lockGranted: (rows) => rows[0]?.lock_mode === 'Exclusive',
    prepare: () => [createMigrationsTable(schema)],
    selectApplied: () => selectAppliedMigrations(schema),
    render: (script) => bookkeepingDdl(script.text, schema),
    record: (script) => recordMigration(schema, script.name, script.sha256),
  };
}

/** The SQL Server side of the one apply sequence; the compiler checks it says everything the sequence needs. */
export const sqlServerDialect: TargetDialect<SqlQuery> = {
  maxContentBytes: MAX_CONTENT_BYTES.sqlserver,
  targetTable, migrations, blobTableDdl,
  tableWriteLock, parkRows, applyDeletes, createStageTable, markStale, assembleChunkedContent,
  // SQL Server creates and updates a temporary table's statistics itself (auto create / auto update statistics).
  analyzeStage: null, analyzeTables: null,
  markIncompleteContent: () => markIncompleteContent(),
  markMissingParents, holdMissingParents, parkHeldBack, upsertFromStage,
  // No insert fast path: a failed INSERT under XACT_ABORT dooms the whole transaction, savepoint or not.
  fastInsert: null,
  promoteHeld, dropResolvedHeld, deleteUsedChunks,
  // #hw_stage would otherwise outlive the transaction in the pooled session, holding a batch of blobs in tempdb.
  dropStageTables,
  releaseParked, upsertWatermarks, upsertOffsets,
  selectStoredOffsets, selectHeldParents: (t) => selectHeldParents(t), selectHeldChildren,
  selectExistingPaths, selectConsistentAsOf, selectConsistentAsOfWithPartitions, selectSchemaExists,
  deleteStoredOffsets, deleteWatermarks, deleteGroupBookkeeping, relabelGroup,
  // One statement that checks for the live schema itself (SQL Server cannot rename a schema; see swapSchemas).
  swapSchemas: (live, rebuilt, retired) => [swapSchemas(live, rebuilt, retired)],
};
