import { readFileSync } from 'node:fs';
import { init, parse } from '@guanmingchiu/sqlparser-ts';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BlobChange } from '../../src/contract.js';
import {
  CHUNK_STAGE_COLUMNS, STAGE_COLUMNS, applyDeletes, assembleChunkedContent, blobTableDdl, bookkeepingDdl,
  chunkStageValues, createChunkStageTable, createMigrationsTable, createStageTable, deleteUsedChunks,
  dropStageTables, insertStagedChunks, markIncompleteContent, markMissingParents, markStale, migrationLock,
  recordMigration, renderMigration, selectAppliedMigrations, selectConsistentAsOf,
  selectConsistentAsOfWithPartitions, selectExistingPaths, selectStoredOffsets, splitBatches, stageMismatch, stageValues,
  targetTable, targetTableName, upsertFromStage, upsertOffsets, upsertWatermarks, type SqlServerStatement,
  parkHeldBack, parkRows, releaseParked, holdMissingParents, promoteHeld, dropResolvedHeld, selectHeldParents, selectHeldChildren,
} from '../../consumers/sqlserver/dialect.js';
import { compareVersions } from '../../src/apply/reduce.js';
import { reduceLatest } from '../../src/apply/sink/batch.js';

/**
 * The SQL Server target statements, checked without a server: every statement is parsed by sqlparser-rs (mssql
 * dialect, through @guanmingchiu/sqlparser-ts), and the parsed tree is used to check that values are parameters.
 *
 * What the parser cannot read, and is therefore rewritten before parsing and asserted textually instead:
 * - `MERGE <target> WITH (HOLDLOCK) AS t` (it expects USING after the target name): the hint is removed;
 * - `SET [content].WRITE(x, NULL, 0)` (the large-value append): parsed as `SET [content] = x`.
 * It reads the rest: MERGE … WHEN MATCHED AND … / NOT MATCHED BY TARGET, DECLARE/WHILE/BEGIN…END, OPENJSON … WITH,
 * COLLATE, DROP TABLE IF EXISTS, table hints in subqueries, EXEC with named arguments, IF … EXEC(N'…').
 */

const SENTINEL = "x'); DROP TABLE--";
const ROOT = new URL('../../', import.meta.url);
const BOOKKEEPING = readFileSync(new URL('schema/target-sqlserver/001_bookkeeping.sql', ROOT), 'utf8');
const BLOB_TABLE = readFileSync(new URL('schema/target-sqlserver/blob-table.sql', ROOT), 'utf8');
const OBSERVED_VERSIONS = readFileSync(new URL('schema/target-sqlserver/002_observed_versions.sql', ROOT), 'utf8');
const HELD_CHILDREN = readFileSync(new URL('schema/target-sqlserver/003_held_children.sql', ROOT), 'utf8');

const HOLDLOCK_ON_MERGE = /(MERGE \S+) WITH \(HOLDLOCK\)/g;
const WRITE_APPEND = /SET (\[\w+\])\.WRITE\(([^,]+), NULL, 0\)/g;

function parseMssql(text: string): unknown[] {
  return parse(text.replace(HOLDLOCK_ON_MERGE, '$1').replace(WRITE_APPEND, 'SET $1 = $2'), 'mssql');
}

function* nodes(value: unknown): Generator<Record<string, unknown>> {
  if (Array.isArray(value)) for (const v of value) yield* nodes(v);
  else if (value !== null && typeof value === 'object') {
    yield value as Record<string, unknown>;
    for (const v of Object.values(value)) yield* nodes(v);
  }
}

function stringLiterals(ast: unknown): string[] {
  const out: string[] = [];
  for (const n of nodes(ast)) {
    for (const kind of ['SingleQuotedString', 'NationalStringLiteral']) if (typeof n[kind] === 'string') out.push(n[kind] as string);
  }
  return out;
}

/** `@name`s the statement uses that are not its own variables (DECLARE) or a procedure's argument names. */
function parameterNames(ast: unknown, text: string, procedureArgs: readonly string[] = []): string[] {
  const declared = new Set([...text.matchAll(/DECLARE (@\w+)/g)].map((m) => m[1]));
  const names = new Set<string>();
  for (const n of nodes(ast)) {
    const v = n.value;
    if (typeof v === 'string' && /^@[A-Za-z_]\w*$/.test(v) && !declared.has(v) && !procedureArgs.includes(v)) names.add(v.slice(1));
  }
  return [...names].sort();
}

/** Parses, and checks that parameters and values match one to one and that no value is a literal of the text. */
function checkStatement(stmt: SqlServerStatement, procedureArgs: readonly string[] = []): unknown[] {
  const ast = parseMssql(stmt.text);
  expect(ast.length).toBeGreaterThan(0);
  expect(parameterNames(ast, stmt.text, procedureArgs)).toEqual(Object.keys(stmt.values).sort());
  const literals = stringLiterals(ast);
  for (const { value } of Object.values(stmt.values)) if (typeof value === 'string') expect(literals).not.toContain(value);
  return ast;
}

const t = targetTable('hw', 'ReferralAttachment');

function change(overrides: Partial<BlobChange> = {}): BlobChange {
  return {
    table: 'ReferralAttachment', tenant: 'gwent', key: 'k1', name: 'a.txt', pathLocator: '/1/2/', parentPathLocator: '/1/',
    isDirectory: false, size: 3, attributes: { creationTime: 5n, lastWriteTime: 6n }, modifiedOn: 100n, observed: 100n, businessUnit: 'bu',
    content: { kind: 'inline', bytes: Buffer.from('abc') }, contentSha256: Buffer.alloc(32, 1), runId: 'run-1',
    window: { start: 0n, end: 200n }, ...overrides,
  };
}

beforeAll(async () => {
  await init();
});

describe('every statement parses as T-SQL', () => {
  const superseded = [{ change: change({ content: { kind: 'chunked', chunkCount: 2, chunkSize: 4, totalSize: 8 } }) }];
  const statements: [string, SqlServerStatement][] = [
    ['createMigrationsTable', createMigrationsTable('hw')],
    ['selectAppliedMigrations', selectAppliedMigrations('hw')],
    ['recordMigration', recordMigration('hw', '001_bookkeeping.sql', 'ab'.repeat(32))],
    ['createStageTable', createStageTable()],
    ['createChunkStageTable', createChunkStageTable()],
    ['dropStageTables', dropStageTables()],
    ['insertStagedChunks', insertStagedChunks('hw')],
    ['markStale', markStale(t)],
    ['assembleChunkedContent', assembleChunkedContent(t)],
    ['markIncompleteContent', markIncompleteContent()],
    ['markMissingParents', markMissingParents(t)],
    ['upsertFromStage', upsertFromStage(t)],
    ['deleteUsedChunks', deleteUsedChunks(t, superseded)],
    ['applyDeletes', applyDeletes(t, [{ table: t.logical, tenant: 'gwent', key: 'k', modifiedOn: 5n, observed: 6n }])],
    ['parkRows', parkRows(t, [{ tenant: 'gwent', key: 'k', modifiedOn: null, observed: 6n, reason: 'missing-parent' }])],
    ['parkHeldBack', parkHeldBack(t)],
    ['releaseParked', releaseParked(t, [{ tenant: 'gwent', key: 'k' }])],
    ['holdMissingParents', holdMissingParents(t)],
    ['promoteHeld batch', promoteHeld(t, 'batch')],
    ['promoteHeld all', promoteHeld(t, 'all')],
    ['dropResolvedHeld', dropResolvedHeld(t, [{ tenant: 'gwent', key: 'k' }])],
    ['selectHeldParents', selectHeldParents(t)],
    ['selectHeldChildren', selectHeldChildren(t, 'gwent', '/1/')],
    ['upsertWatermarks', upsertWatermarks('hw', 'g', [{ table: 'T', tenant: '', scope: '*', topic: 'tp', partition: 0, watermark: 9n }])],
    ['upsertOffsets', upsertOffsets('hw', 'g', [{ topic: 'tp', partition: 0, nextOffset: 10n }])],
    ['selectStoredOffsets', selectStoredOffsets('hw', 'g', ['tp'])],
    ['selectExistingPaths', selectExistingPaths(t, 'gwent', ['/1/'])],
    ['selectConsistentAsOf', selectConsistentAsOf('hw', 'g')],
    ['selectConsistentAsOfWithPartitions', selectConsistentAsOfWithPartitions('hw', 'g', new Map([['tp', 6]]))],
  ];
  it.each(statements)('%s', (_name, stmt) => {
    checkStatement(stmt);
  });

  it('migrationLock (sp_getapplock takes its arguments by name)', () => {
    checkStatement(migrationLock('hw'), ['@Resource', '@LockMode', '@LockOwner', '@LockTimeout']);
  });

  it('the bookkeeping migrations, batch by batch', () => {
    const batches = bookkeepingDdl(BOOKKEEPING, 'hw');
    expect(batches.length).toBe(5);
    for (const b of batches) checkStatement(b);
    const observed = bookkeepingDdl(OBSERVED_VERSIONS, 'hw');
    expect(observed.length).toBe(3);
    for (const b of observed) checkStatement(b);
    const held = bookkeepingDdl(HELD_CHILDREN, 'hw');
    expect(held.length).toBe(2);
    for (const b of held) checkStatement(b);
  });

  it('the blob table, batch by batch', () => {
    const batches = blobTableDdl(BLOB_TABLE, t);
    expect(batches.length).toBe(4);
    for (const b of batches) checkStatement(b);
  });
});

describe('migrations', () => {
  it('renders placeholders as bracket-quoted identifiers, also inside N literals', () => {
    const [schema] = bookkeepingDdl(BOOKKEEPING, 'hw');
    expect(schema!.text.endsWith("\nIF SCHEMA_ID(PARSENAME(N'[hw]', 1)) IS NULL EXEC(N'CREATE SCHEMA [hw]');")).toBe(true);
    const [table] = blobTableDdl(BLOB_TABLE, t);
    expect(table!.text).toContain("IF OBJECT_ID(N'[hw].[referralattachment]', N'U') IS NULL\nCREATE TABLE [hw].[referralattachment] (");
  });

  it('refuses malicious identifiers, unknown placeholders and placeholders without a value', () => {
    expect(() => renderMigration('{{schema}}', { schema: "hw]'; DROP TABLE x--" })).toThrow(/invalid identifier/);
    expect(() => renderMigration('{{index_path}}', { schema: 'hw' })).toThrow(/unknown placeholder/);
    expect(() => renderMigration('{{table}}', { schema: 'hw' })).toThrow(/no value/);
    expect(() => targetTable("hw]; DROP TABLE x--", 'T')).toThrow(/invalid target schema/);
  });

  it('splits scripts on GO lines and drops comment-only batches', () => {
    expect(splitBatches('-- c\nSELECT 1;\nGO\n\n-- only a comment\ngo\nSELECT 2\n  GO  \n')).toEqual(['-- c\nSELECT 1;', 'SELECT 2']);
    expect(splitBatches('SELECT GOAL FROM t')).toEqual(['SELECT GOAL FROM t']);
  });

  it('keys text with a binary collation and keeps clustered keys within 900 bytes', () => {
    expect(BOOKKEEPING).toMatch(/\[key\]\s+nvarchar\(450\) COLLATE Latin1_General_100_BIN2 NOT NULL/);
    expect(BOOKKEEPING).toMatch(/PRIMARY KEY NONCLUSTERED \(table_name, tenant, \[key\]\)/);
    expect(BLOB_TABLE).toMatch(/PRIMARY KEY NONCLUSTERED \(tenant, \[key\]\)/);
    expect(BLOB_TABLE).toMatch(/content\s+varbinary\(max\)/);
    // NULL where the source's ModifiedOn is NULL (contract v2); the observation stamp beside it.
    expect(BLOB_TABLE).toMatch(/modified_on_ticks\s+bigint\s+NULL/);
    expect(BLOB_TABLE).toMatch(/observed_ticks\s+bigint\s+NULL/);
  });

  it('stages every target column with the type and length of blob-table.sql', () => {
    for (const c of STAGE_COLUMNS.filter((s) => s.name !== 'content_kind' && s.name !== 'chunk_count')) {
      const type = `${c.type.toLowerCase()}${c.length === undefined ? '' : `\\(${c.length}\\)`}`;
      expect(BLOB_TABLE, c.name).toMatch(new RegExp(`^\\s*\\[?${c.name}\\]?\\s+${type}[\\s,]`, 'm'));
    }
  });

  it('names target tables by the PostgreSQL rule, within 128 characters', () => {
    expect(targetTableName('ReferralAttachment')).toBe('referralattachment');
    expect(targetTableName('client.attachment-v2')).toBe('client_attachment_v2');
    expect(targetTableName('2020')).toBe('t_2020');
    expect(targetTableName('hw_offsets')).toBe('t_hw_offsets');
    expect(targetTableName('x'.repeat(200))).toMatch(/^x{119}_[0-9a-f]{8}$/);
  });
});

describe('staging', () => {
  it('creates the session tables afresh, with binary collation on compared text', () => {
    const { text } = createStageTable();
    expect(text).toMatch(/^DROP TABLE IF EXISTS #hw_stage;\nCREATE TABLE #hw_stage \(/);
    expect(text).toContain('[key] nvarchar(450) COLLATE Latin1_General_100_BIN2 NULL');
    expect(text).toContain('[content] varbinary(max) NULL');
    expect(text).toContain('[status] varchar(16) NULL');
    expect(createChunkStageTable().text).toContain('[bytes] varbinary(max) NULL');
  });

  it('orders bulk values as the columns, content only when inline', () => {
    const values = stageValues({ change: change(), sourcePartition: 3, sourceOffset: 42n });
    expect(values).toHaveLength(STAGE_COLUMNS.length);
    const byName = Object.fromEntries(STAGE_COLUMNS.map((c, i) => [c.name, values[i]]));
    expect(byName).toMatchObject({ tenant: 'gwent', key: 'k1', content_kind: 'inline', modified_on_ticks: 100n, size: 3n, source_partition: 3, source_offset: 42n, chunk_count: null });
    expect(byName.content).toEqual(Buffer.from('abc'));
    const chunked = stageValues({ change: change({ content: { kind: 'chunked', chunkCount: 4, chunkSize: 10, totalSize: 40 } }) });
    expect(chunked[STAGE_COLUMNS.findIndex((c) => c.name === 'content')]).toBeNull();
    expect(chunked[STAGE_COLUMNS.findIndex((c) => c.name === 'chunk_count')]).toBe(4);
    expect(chunkStageValues({ table: 'T', key: 'k', contentSha256: Buffer.alloc(32), count: 2, index: 1, bytes: Buffer.from('x') })).toHaveLength(CHUNK_STAGE_COLUMNS.length);
  });

  it('names a value too long for its column instead of truncating it', () => {
    expect(stageMismatch(STAGE_COLUMNS, stageValues({ change: change() }))).toBeNull();
    expect(stageMismatch(STAGE_COLUMNS, stageValues({ change: change({ key: 'k'.repeat(451) }) }))).toMatch(/^key is 451 long/);
    expect(stageMismatch(STAGE_COLUMNS, stageValues({ change: change({ contentSha256: Buffer.alloc(33) }) }))).toMatch(/^content_sha256/);
  });

  it('keeps the latest version per (tenant, key); a ModifiedOn tie goes to the later observation, not the hash', () => {
    const older = { change: change({ modifiedOn: 1n, observed: 2n }) };
    const earlierObserved = { change: change({ modifiedOn: 2n, observed: 3n, contentSha256: Buffer.alloc(32, 9) }) };
    const tieWinner = { change: change({ modifiedOn: 2n, observed: 4n, contentSha256: Buffer.alloc(32, 0) }) };
    const otherTenant = { change: change({ tenant: 'cardiff', modifiedOn: 1n }) };
    const { latest, superseded } = reduceLatest([older, tieWinner, earlierObserved, otherTenant]);
    expect(latest).toEqual([tieWinner, otherTenant]);
    expect(superseded).toEqual([older, earlierObserved]);
    expect(compareVersions({ modifiedOn: 1n, observed: 1n, contentSha256: null }, { modifiedOn: 1n, observed: 1n, contentSha256: Buffer.alloc(1) })).toBeLessThan(0);
  });

  it('keeps every version of a key that can still win, when its ModifiedOn moved backwards across a delete', () => {
    const beforeDelete = { change: change({ modifiedOn: 9n, observed: 3n }) };
    const restored = { change: change({ modifiedOn: 5n, observed: 8n }) };
    const { latest, superseded } = reduceLatest([beforeDelete, restored]);
    expect(latest).toEqual([restored, beforeDelete]);
    expect(superseded).toEqual([]);
  });
});

describe('the upsert', () => {
  const { text, values } = upsertFromStage(t);

  it('is one MERGE WITH (HOLDLOCK) on (tenant, key)', () => {
    expect(text).toMatch(/^MERGE \[hw\]\.\[referralattachment\] WITH \(HOLDLOCK\) AS t\nUSING \(/);
    expect(text).toContain('ON t.[tenant] = s.[tenant] AND t.[key] = s.[key]');
    const [merge] = parseMssql(text) as [Record<string, unknown>];
    expect(Object.keys(merge)).toEqual(['Merge']);
  });

  it('updates only when strictly newer by (ModifiedOn, observation), the hash only on a full tie, and inserts what is missing', () => {
    const m = (a: string) => `ISNULL(${a}.[modified_on_ticks], CONVERT(bigint, -9223372036854775808))`;
    const o = (a: string) => `ISNULL(${a}.[observed_ticks], ${m(a)})`;
    expect(text).toContain(
      `WHEN MATCHED AND ((${m('t')} < ${m('s')} OR (${m('t')} = ${m('s')} AND ${o('t')} < ${o('s')})) OR (${m('t')} = ${m('s')} AND ${o('t')} = ${o('s')} AND ISNULL(t.[content_sha256], 0x) < ISNULL(s.[content_sha256], 0x))) THEN`,
    );
    expect(text).toContain('WHEN NOT MATCHED BY TARGET THEN');
    expect(text).toContain('[applied_at] = SYSUTCDATETIME()');
    expect(text).toMatch(/SELECT @@ROWCOUNT AS applied;$/);
  });

  it('takes only unclassified rows and refuses rows at or before a tombstone', () => {
    expect(text).toContain('WHERE x.[status] IS NULL AND NOT EXISTS (SELECT 1 FROM [hw].[hw_tombstones] AS d');
    expect(text).toContain('d.[table_name] = @table AND d.[tenant] = x.[tenant] AND d.[key] = x.[key] AND ISNULL(d.[observed_ticks], ISNULL(d.[modified_on_ticks], CONVERT(bigint, -9223372036854775808))) >= x.[observed_ticks]');
    // One row per key reaches the MERGE: the greatest version not covered by a tombstone.
    expect(text).toContain('ROW_NUMBER() OVER (PARTITION BY x.[tenant], x.[key] ORDER BY');
    expect(text).toContain('WHERE r.rn = 1');
    expect(values.table).toEqual({ type: 'NVarChar', value: 'ReferralAttachment' });
  });

  it('never updates tenant or key and writes every target column', () => {
    expect(text).not.toMatch(/\[tenant\] = s\.\[tenant\],/);
    expect(text).not.toMatch(/UPDATE SET .*\[key\] = s\.\[key\]/);
    expect(text).toContain('INSERT ([tenant], [key], [name], [path_locator], [parent_path_locator], [is_directory], [size], [content], [content_sha256], [modified_on_ticks]');
  });
});

describe('classification', () => {
  it('marks rows stale against the target version and tombstones', () => {
    const { text } = markStale(t);
    expect(text).toContain("UPDATE s SET [status] = 'stale'");
    expect(text).toContain('AND NOT ((ISNULL(t.[modified_on_ticks]');
    expect(text).toContain('[hw].[hw_tombstones]');
  });

  it('holds back children whose parent is neither in the target (same tenant) nor placed by the batch, to a fixpoint', () => {
    const { text } = markMissingParents(t);
    expect(text).toContain('WHILE @marked > 0');
    expect(text).toContain('NOT EXISTS (SELECT 1 FROM [hw].[referralattachment] AS t WHERE t.[tenant] = s.[tenant] AND t.[path_locator] = s.[parent_path_locator])');
    expect(text).toContain('NOT EXISTS (SELECT 1 FROM #hw_stage AS p WHERE p.[status] IS NULL AND p.[tenant] = s.[tenant] AND p.[path_locator] = s.[parent_path_locator])');
    expect(text).toMatch(/SELECT s\.\[key\] FROM #hw_stage AS s WHERE s\.\[status\] = 'missing-parent';$/);
  });

  it('assembles chunked content in the database, in index order, and checks its SHA-256', () => {
    const { text } = assembleChunkedContent(t);
    expect(text).toContain('WHILE @idx < @chunks');
    expect(text).toContain('UPDATE s SET [content].WRITE(h.[bytes], NULL, 0)');
    expect(text).toContain('h.[idx] = @idx');
    expect(text).toContain('SET @idx = @idx + 1;');
    expect(text).toContain("HASHBYTES('SHA2_256', s.[content]) <> s.[content_sha256]");
    expect(text).toContain('h.[table_name] = @table AND h.[key] = s.[key] AND h.[content_sha256] = s.[content_sha256] AND h.[chunk_count] = s.[chunk_count]');
    expect(markIncompleteContent().text).toContain("s.[content_kind] = 'chunked' AND s.[content] IS NULL");
  });

  it('stages chunks once, whoever else inserts them', () => {
    const { text } = insertStagedChunks('hw');
    expect(text).toContain('INSERT INTO [hw].[hw_chunks]');
    expect(text).toContain('WITH (UPDLOCK, HOLDLOCK)');
    expect(text).toContain('WHERE c.rn = 1');
  });

  it('releases used chunks (held rows carry their assembled content) but never those of rows whose content is incomplete', () => {
    const superseded = [{ change: change({ key: SENTINEL, content: { kind: 'chunked', chunkCount: 2, chunkSize: 4, totalSize: 8 } }) }];
    const { text, values } = deleteUsedChunks(t, superseded);
    expect(text).toContain("EXCEPT\n  SELECT s.[key], s.[content_sha256], s.[chunk_count] FROM #hw_stage AS s WHERE s.[content_kind] = 'chunked' AND s.[status] = 'incomplete'");
    expect(text).toContain('CONVERT(varbinary(32), x.[sha], 2)');
    expect(JSON.parse(String(values.superseded!.value))).toEqual([{ key: SENTINEL, sha: '01'.repeat(32), count: 2 }]);
  });
});

describe('deletes, watermarks and offsets', () => {
  it('deletes the versions observed at or before the delete, and remembers the latest delete in hw_tombstones', () => {
    const big = 2n ** 62n + 1n;
    const { text, values } = applyDeletes(t, [{ table: t.logical, tenant: 'gwent', key: 'k', modifiedOn: null, observed: big }]);
    expect(text).toContain('WHERE ISNULL(t.[observed_ticks], ISNULL(t.[modified_on_ticks], CONVERT(bigint, -9223372036854775808))) <= d.[observed_ticks];');
    expect(text).toContain('MERGE [hw].[hw_tombstones] WITH (HOLDLOCK) AS tb');
    expect(text).toContain('WHEN MATCHED AND ISNULL(tb.[observed_ticks], ISNULL(tb.[modified_on_ticks], CONVERT(bigint, -9223372036854775808))) < d.[observed_ticks] THEN');
    expect(text).toContain('ORDER BY x.[observed_ticks] DESC');
    expect(text).toMatch(/SELECT @deleted AS deleted;$/);
    // Ticks travel as JSON strings: exact beyond 2^53.
    expect(JSON.parse(String(values.deletes!.value))).toEqual([{ tenant: 'gwent', key: 'k', modifiedOn: null, observed: big.toString() }]);
  });

  it('moves watermarks forward only, one per partition and scope', () => {
    const marks = [
      { table: 'T', tenant: '', scope: '*', topic: 'tp', partition: 0, watermark: 5n },
      { table: 'T', tenant: '', scope: '*', topic: 'tp', partition: 0, watermark: 9n },
      { table: 'T', tenant: '', scope: '*', topic: 'tp', partition: 1, watermark: 3n },
    ];
    const { text, values } = upsertWatermarks('hw', 'g', marks);
    expect(text).toContain('MERGE [hw].[hw_watermarks] WITH (HOLDLOCK) AS w');
    expect(text).toContain('WHEN MATCHED AND w.[watermark_ticks] < m.[ticks] THEN');
    expect(JSON.parse(String(values.marks!.value)).map((m: { ticks: string }) => m.ticks)).toEqual(['9', '3']);
  });

  it('stores offsets with a MERGE into hw_offsets, the last per partition', () => {
    const { text, values } = upsertOffsets('hw', 'g', [
      { topic: 'tp', partition: 0, nextOffset: 10n },
      { topic: 'tp', partition: 0, nextOffset: 12n },
    ]);
    expect(text).toContain('MERGE [hw].[hw_offsets] WITH (HOLDLOCK) AS o');
    expect(text).toContain('ON o.[group_id] = @groupId AND o.[topic] = x.[topic] AND o.[partition] = x.[partition]');
    expect(text).toContain('WHEN MATCHED THEN\n  UPDATE SET [next_offset] = x.[next_offset]');
    expect(JSON.parse(String(values.offsets!.value))).toEqual([{ topic: 'tp', partition: 0, next: '12' }]);
  });

  it('reads JSON text in the binary collation, so it compares with BIN2 columns without a conflict', () => {
    expect(upsertOffsets('hw', 'g', []).text).toContain('j.[topic] COLLATE Latin1_General_100_BIN2 AS [topic]');
    expect(selectStoredOffsets('hw', 'g', ['tp']).text).toContain('SELECT j.[value] COLLATE Latin1_General_100_BIN2 FROM OPENJSON(@topics) AS j');
  });
});

describe('reads', () => {
  it('reads stored offsets of a group for some topics, bigint as text', () => {
    const { text } = selectStoredOffsets('hw', 'g', ['tp']);
    expect(text).toContain('CONVERT(varchar(20), o.[next_offset]) AS next_offset');
    expect(text).toContain('WHERE o.[group_id] = @groupId');
  });

  it('computes consistent_as_of as the minimum watermark, NULL while a known partition lacks a marker', () => {
    const { text } = selectConsistentAsOf('hw', 'g');
    expect(text).toContain('UNION SELECT [topic], [partition] FROM [hw].[hw_offsets] WHERE [group_id] = @groupId');
    expect(text).toContain('MIN(CASE WHEN k.[partitions] IS NOT NULL AND p.marked >= k.[partitions] THEN 1 ELSE 0 END) AS complete');
    expect(text).toContain('CASE WHEN pt.complete = 1 THEN CONVERT(varchar(20),');
    // A row still parked (waiting for its parent, or dead-lettered) holds consistent_as_of below its ModifiedOn.
    expect(text).toContain('SELECT [table_name], MIN([modified_on_ticks]) - 1 AS below FROM [hw].[hw_parked] GROUP BY [table_name]');
    expect(text).toContain('CASE WHEN pk.below IS NOT NULL AND pk.below < pt.watermark THEN pk.below ELSE pt.watermark END');
    const withCounts = selectConsistentAsOfWithPartitions('hw', 'g', new Map([['tp', 6]]));
    expect(JSON.parse(String(withCounts.values.known!.value))).toEqual([{ topic: 'tp', partitions: 6 }]);
  });
});

describe('values never enter the text', () => {
  it('keeps tenants, keys, group ids, topics and paths in parameters only', () => {
    const stmts = [
      applyDeletes(t, [{ table: t.logical, tenant: SENTINEL, key: SENTINEL, modifiedOn: 1n, observed: 2n }]),
      upsertWatermarks('hw', SENTINEL, [{ table: SENTINEL, tenant: SENTINEL, scope: SENTINEL, topic: SENTINEL, partition: 0, watermark: 1n }]),
      upsertOffsets('hw', SENTINEL, [{ topic: SENTINEL, partition: 0, nextOffset: 1n }]),
      selectStoredOffsets('hw', SENTINEL, [SENTINEL]),
      selectExistingPaths(t, SENTINEL, [SENTINEL]),
      selectConsistentAsOf('hw', SENTINEL),
      recordMigration('hw', SENTINEL, SENTINEL),
    ];
    for (const stmt of stmts) {
      expect(stmt.text).not.toContain('DROP TABLE');
      checkStatement(stmt);
    }
    expect(JSON.stringify(stmts[0]!.values)).toContain('DROP TABLE--');
    expect(stmts[2]!.values.groupId).toEqual({ type: 'NVarChar', value: SENTINEL });
    expect(stmts[4]!.values.tenant).toEqual({ type: 'NVarChar', value: SENTINEL });
    for (const stmt of [parkRows(t, [{ tenant: SENTINEL, key: SENTINEL, modifiedOn: 1n, observed: 2n, reason: SENTINEL }]), releaseParked(t, [{ tenant: SENTINEL, key: SENTINEL }])]) {
      expect(stmt.text).not.toContain('DROP TABLE');
      checkStatement(stmt);
      expect(JSON.stringify(stmt.values)).toContain('DROP TABLE--');
    }
  });
});
