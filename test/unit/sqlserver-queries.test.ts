import { init, parse } from '@guanmingchiu/sqlparser-ts';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  byKeysQuery, byPathLocatorsQuery, clockQuery, contentSliceQuery, datetime2Text, memberKeysQuery, contentHashesQuery, nullModifiedOnPageQuery, countNullModifiedOnQuery, countWindowQuery, serverTimeZoneQuery, keyStatesQuery, maxdopHint,
  missingParentsQuery, oldestOpenTransactionQuery, pageQuery, referencedParentsQuery, type SqlServerStatement,
} from '../../connectors/sqlserver/queries.js';
import { mssqlConfig, toSourceRow } from '../../connectors/sqlserver/source.js';
import type { PageRequest, SourceTableSpec } from '../../src/poll/source/connector.js';
import { ticksFromIso } from '../../src/time/ticks.js';

/**
 * The SQL Server source statements, checked without a server: every statement is parsed by sqlparser-rs (mssql
 * dialect, through @guanmingchiu/sqlparser-ts), and the parsed tree is used to check that values are parameters.
 *
 * What the parser cannot read, and is therefore stripped before parsing and asserted textually instead:
 * - a trailing `OPTION (MAXDOP n)` query hint (sqlparser-rs stops at OPTION).
 * It does read table hints (`WITH (READCOMMITTEDLOCK)`), `TOP (@n)`, `.ToString()`, OPENJSON, TRY_CONVERT and
 * CONVERT with a style. (It fails on `hierarchyid::Parse(alias.[col])` inside a subquery, so the builders use the
 * equivalent `CAST(… AS hierarchyid)`.)
 */

const SENTINEL = "x'); DROP TABLE--";

const spec: SourceTableSpec = {
  blob: { schema: 'dbo', table: 'ReferralAttachment' },
  metadata: { schema: 'dbo', table: 'cw_referralattachmentBase', joinColumn: 'stream_id' },
  keyColumn: 'stream_id',
  modifiedOnColumn: 'ModifiedOn',
  columns: {
    name: 'name', content: 'file_stream', isDirectory: 'is_directory', pathLocator: 'path_locator',
    parentPathLocator: 'parent_path_locator', creationTime: 'creation_time', lastWriteTime: 'last_write_time',
  },
  businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'dbo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
  inlineContentMaxBytes: 65_536,
  maxdop: 2,
};

const window = { start: ticksFromIso('2024-01-01T00:00:00Z'), end: ticksFromIso('2024-01-02T00:00:00.0000001Z') };
const after = { modifiedOn: ticksFromIso('2024-01-01T12:00:00.1234567Z'), key: '0b0f2c9e-4a51-4c1e-9a56-8f1d2a3b4c5d' };

function page(overrides: Partial<PageRequest> = {}): PageRequest {
  return { step: 'roots', window, after, limit: 500, businessUnit: 'bu-1', excludedKeys: ['7f8d53ec-b98c-f011-b86b-005056a2dd37'], ...overrides };
}

const MAXDOP = /\n?OPTION \(MAXDOP (\d+)\)\s*$/;

/** Parses with the mssql dialect after removing what the parser cannot read (asserted separately). */
function parseMssql(text: string): unknown[] {
  return parse(text.replace(MAXDOP, ''), 'mssql');
}

/** Every node of a parsed tree, depth first. */
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

function parameterNames(ast: unknown): Set<string> {
  const names = new Set<string>();
  for (const n of nodes(ast)) {
    const v = n.value;
    if (typeof v === 'string' && /^@[A-Za-z_]\w*$/.test(v)) names.add(v.slice(1));
  }
  return names;
}

/** Parses, and checks that parameters and values match one to one and no value is a literal of the statement. */
function checkStatement(stmt: SqlServerStatement): unknown[] {
  const ast = parseMssql(stmt.text);
  expect(ast.length).toBeGreaterThan(0);
  expect([...parameterNames(ast)].sort()).toEqual(Object.keys(stmt.values).sort());
  const literals = stringLiterals(ast);
  for (const { value } of Object.values(stmt.values)) {
    if (typeof value === 'string') expect(literals).not.toContain(value);
  }
  return ast;
}

beforeAll(async () => {
  await init();
});

describe('SQL Server source statements parse as T-SQL', () => {
  const statements: [string, SqlServerStatement][] = [
    ['roots page', pageQuery(spec, page())],
    ['children page', pageQuery(spec, page({ step: 'children' }))],
    ['first page (no position, no scope)', pageQuery(spec, page({ after: null, businessUnit: null, excludedKeys: [] }))],
    ['missing parents', missingParentsQuery(spec, { parents: ['/1/', '/1/2/'], after, limit: 100, excludedKeys: ['k'] })],
    ['missing parents, first page', missingParentsQuery(spec, { parents: ['/1/'], after: null, limit: 100, excludedKeys: [] })],
    ['referenced parents', referencedParentsQuery(spec, { window, businessUnit: 'bu-1', excludedKeys: ['k'] })],
    ['referenced parents, no scope', referencedParentsQuery({ ...spec, maxdop: null }, { window, businessUnit: null, excludedKeys: [] })],
    ['by keys', byKeysQuery(spec, ['a', 'b'])],
    ['by path locators', byPathLocatorsQuery(spec, ['/1/', '/1/2/'])],
    ['content slice', contentSliceQuery(spec, 'k', 1_048_576, 65_536)],
    ['member keys', memberKeysQuery(spec, { keys: ['a'], businessUnit: 'bu-1', excludedKeys: ['k'] })],
    ['content hashes', contentHashesQuery(spec, ['a'])],
    ['NULL ModifiedOn page', nullModifiedOnPageQuery(spec, { after: after.key, limit: 10, businessUnit: 'bu-1', excludedKeys: ['k'] })],
    ['NULL ModifiedOn count', countNullModifiedOnQuery(spec, { businessUnit: null, excludedKeys: [] })],
    ['window count (progress total)', countWindowQuery({ ...spec, maxdop: 2 }, { window, businessUnit: 'bu-1', excludedKeys: ['k'] })],
    ['key states (late-arrival sweep)', keyStatesQuery(spec, { after: after.key, limit: 1000, maxBytes: 1 << 28, businessUnit: 'bu-1', excludedKeys: ['k'] })],
    ['key states, first range', keyStatesQuery(spec, { after: null, limit: 1000, maxBytes: 0, businessUnit: null, excludedKeys: [] })],
    ['key states with MAXDOP', keyStatesQuery({ ...spec, maxdop: 2 }, { after: null, limit: 10, maxBytes: 0, businessUnit: null, excludedKeys: [] })],
    ['clock', clockQuery()],
    ['oldest open transaction, time zone known', oldestOpenTransactionQuery('GMT Standard Time')],
    ['oldest open transaction, time zone unknown', oldestOpenTransactionQuery(null)],
  ];
  it.each(statements)('%s', (_name, stmt) => {
    checkStatement(stmt);
  });

  it('server time zone (its only variables are declared in the batch)', () => {
    const stmt = serverTimeZoneQuery();
    expect(Object.keys(stmt.values)).toEqual([]);
    expect([...parameterNames(parseMssql(stmt.text))].sort()).toEqual(['z', 'zone']);
    expect(stmt.text).toContain('DECLARE @zone nvarchar(128) = NULL;');
  });
});

describe('page reads', () => {
  it('page in (ModifiedOn, key) keyset order with TOP (@limit), never OFFSET', () => {
    const stmt = pageQuery(spec, page());
    expect(stmt.text).toMatch(/ORDER BY m\.\[ModifiedOn\], m\.\[stream_id\]/);
    expect(stmt.text).toContain(
      '(m.[ModifiedOn] > CONVERT(datetime2(7), @afterTs, 126) OR (m.[ModifiedOn] = CONVERT(datetime2(7), @afterTs, 126) AND m.[stream_id] > @afterKey))',
    );
    expect(stmt.text).not.toMatch(/\bOFFSET\b|\bFETCH\b/i);
    const [query] = parseMssql(stmt.text) as [{ Query: { body: { Select: { top: { quantity: { Expr: { Identifier: { value: string } } } } } } } }];
    expect(query.Query.body.Select.top.quantity.Expr.Identifier.value).toBe('@limit');
    expect(stmt.values.limit).toEqual({ type: 'Int', value: 500 });
  });

  it('reads the window (start, end] as exact datetime2(7) text', () => {
    const stmt = pageQuery(spec, page());
    expect(stmt.text).toContain('m.[ModifiedOn] > CONVERT(datetime2(7), @windowStart, 126)');
    expect(stmt.text).toContain('m.[ModifiedOn] <= CONVERT(datetime2(7), @windowEnd, 126)');
    expect(stmt.values.windowStart).toEqual({ type: 'VarChar', value: '2024-01-01T00:00:00.0000000' });
    expect(stmt.values.windowEnd).toEqual({ type: 'VarChar', value: '2024-01-02T00:00:00.0000001' });
    expect(stmt.values.afterTs).toEqual({ type: 'VarChar', value: '2024-01-01T12:00:00.1234567' });
  });

  it('leaves out the keyset predicate on the first page', () => {
    const stmt = pageQuery(spec, page({ after: null }));
    expect(stmt.text).not.toContain('@afterTs');
    expect(stmt.values).not.toHaveProperty('afterKey');
  });

  it('splits roots and children on parent_path_locator', () => {
    expect(pageQuery(spec, page()).text).toContain('b.[parent_path_locator] IS NULL');
    expect(pageQuery(spec, page({ step: 'children' })).text).toContain('b.[parent_path_locator] IS NOT NULL');
  });

  it('reads the blob and metadata tables WITH (READCOMMITTEDLOCK)', () => {
    const stmt = pageQuery(spec, page());
    const hinted = [...nodes(parseMssql(stmt.text))].filter((n) => Array.isArray(n.with_hints) && JSON.stringify(n.with_hints).includes('READCOMMITTEDLOCK'));
    expect(hinted).toHaveLength(2);
    expect(stmt.text).toContain('[dbo].[ReferralAttachment] AS b WITH (READCOMMITTEDLOCK)');
  });

  it('selects keys as lower-case text, hierarchyids as text, timestamps as exact UTC text', () => {
    const text = pageQuery(spec, page()).text;
    expect(text).toContain('LOWER(CONVERT(varchar(36), b.[stream_id])) AS [key]');
    expect(text).toContain('b.[path_locator].ToString() AS [path_locator]');
    expect(text).toContain('b.[parent_path_locator].ToString() AS [parent_path_locator]');
    expect(text).toContain('CONVERT(varchar(27), CONVERT(datetime2(7), m.[ModifiedOn]), 126) AS [modified_on]');
    expect(text).toContain("CONVERT(varchar(27), CONVERT(datetime2(7), SWITCHOFFSET(b.[creation_time], '+00:00')), 126) AS [creation_time]");
  });

  it('inlines content only up to @inlineMax and always reports the length', () => {
    const stmt = pageQuery(spec, page());
    expect(stmt.text).toContain('DATALENGTH(b.[file_stream]) AS [content_length]');
    expect(stmt.text).toContain('CASE WHEN DATALENGTH(b.[file_stream]) <= @inlineMax THEN b.[file_stream] END AS [content]');
    expect(stmt.values.inlineMax).toEqual({ type: 'BigInt', value: 65_536 });
  });

  it('scopes to a business unit and to the BU table, and excludes keys, all through parameters', () => {
    const stmt = pageQuery(spec, page());
    expect(stmt.text).toContain('m.[OwningBusinessUnit] = @scopeBusinessUnit');
    expect(stmt.text).toContain('EXISTS (SELECT 1 FROM [dbo].[LA_BU] AS m_bu WHERE m_bu.[BusinessUnitId] = m.[OwningBusinessUnit])');
    expect(stmt.text).toContain('NOT EXISTS (SELECT 1 FROM OPENJSON(@scopeExcluded) AS b_x WHERE TRY_CONVERT(uniqueidentifier, b_x.[value]) = b.[stream_id])');
    expect(stmt.values.scopeExcluded).toEqual({ type: 'NVarChar', value: '["7f8d53ec-b98c-f011-b86b-005056a2dd37"]' });
  });

  it('without a BU mapping, has no BU condition and selects NULL as the BU', () => {
    const { businessUnit: _bu, ...unscoped } = spec;
    const stmt = pageQuery(unscoped, page());
    expect(stmt.text).not.toContain('OwningBusinessUnit');
    expect(stmt.text).toContain('CAST(NULL AS nvarchar(100)) AS [business_unit]');
    checkStatement(stmt);
  });

  it('selects NULL for time columns the table does not have', () => {
    const stmt = pageQuery({ ...spec, columns: { ...spec.columns, creationTime: null, lastWriteTime: null } }, page());
    expect(stmt.text).toContain('CAST(NULL AS varchar(27)) AS [creation_time]');
    expect(stmt.text).toContain('CAST(NULL AS varchar(27)) AS [last_write_time]');
    checkStatement(stmt);
  });
});

describe('MAXDOP', () => {
  it('ends window reads with OPTION (MAXDOP n) when configured', () => {
    expect(pageQuery(spec, page()).text).toMatch(/\nOPTION \(MAXDOP 2\)$/);
    expect(missingParentsQuery(spec, { parents: ['/1/'], after, limit: 10, excludedKeys: [] }).text).toMatch(/\nOPTION \(MAXDOP 2\)$/);
    expect(referencedParentsQuery(spec, { window, businessUnit: null, excludedKeys: [] }).text).toMatch(/\nOPTION \(MAXDOP 2\)$/);
  });

  it('has no hint when not configured', () => {
    const stmt = pageQuery({ ...spec, maxdop: null }, page());
    expect(stmt.text).not.toContain('MAXDOP');
    expect(stmt.text).not.toContain('OPTION');
  });

  it('accepts only an integer from 0 to 64 (it is inlined: hints take no parameters)', () => {
    expect(maxdopHint(0)).toBe('\nOPTION (MAXDOP 0)');
    for (const bad of [-1, 65, 1.5, Number.NaN]) expect(() => maxdopHint(bad)).toThrow(/invalid maxdop/);
  });
});

describe('missing parents', () => {
  const stmt = missingParentsQuery(spec, { parents: ['/1/', '/1/2/'], after, limit: 100, excludedKeys: ['k'] });
  const listing = referencedParentsQuery(spec, { window, businessUnit: 'bu-1', excludedKeys: ['k'] });

  it('lists the distinct parent paths of the window children once, as hierarchyid text', () => {
    expect(listing.text).toMatch(/^SELECT DISTINCT b\.\[parent_path_locator\]\.ToString\(\) AS \[parent_path_locator\]\nFROM \[dbo\]\.\[ReferralAttachment\] AS b WITH \(READCOMMITTEDLOCK\)/);
    expect(listing.text).toContain('m.[ModifiedOn] > CONVERT(datetime2(7), @windowStart, 126)');
    expect(listing.text).toContain('m.[ModifiedOn] <= CONVERT(datetime2(7), @windowEnd, 126)');
    expect(listing.text).toContain('b.[parent_path_locator] IS NOT NULL');
    expect(listing.text).not.toMatch(/ORDER BY|TOP/);
  });

  it('scopes the listed children to the BU and excludes keys on both sides', () => {
    expect(listing.text).toContain('m.[OwningBusinessUnit] = @childBusinessUnit');
    expect(listing.text).toContain('@childExcluded');
    expect(stmt.text).not.toMatch(/\[OwningBusinessUnit\] = @/);
    expect(stmt.text).toContain('@parentExcluded');
  });

  it('pages the rows at the listed paths, parsed back to hierarchyid, in their own keyset order', () => {
    expect(stmt.text).toContain("WHERE b.[path_locator] IN (SELECT CAST(pl.[path] AS hierarchyid) FROM OPENJSON(@parents) WITH ([path] nvarchar(4000) '$') AS pl)");
    expect(stmt.values.parents).toEqual({ type: 'NVarChar', value: JSON.stringify(['/1/', '/1/2/']) });
    expect(stmt.text).toContain('m.[ModifiedOn] IS NOT NULL');
    expect(stmt.text).toContain('m.[stream_id] > @afterKey');
    expect(stmt.text).toMatch(/ORDER BY m\.\[ModifiedOn\], m\.\[stream_id\]/);
  });

  it('bounds neither the parents by the window nor reads the children again', () => {
    expect(stmt.text).not.toContain('@windowStart');
    expect(stmt.text).not.toContain('@windowEnd');
    expect(stmt.text).not.toContain('parent_path_locator] IS NOT NULL');
  });
});

describe('lookups', () => {
  it('reads rows by key through a JSON list of GUIDs', () => {
    const stmt = byKeysQuery(spec, ['a', SENTINEL]);
    expect(stmt.text).toContain('WHERE b.[stream_id] IN (SELECT TRY_CONVERT(uniqueidentifier, k.[value]) FROM OPENJSON(@keys) AS k)');
    expect(stmt.values.keys).toEqual({ type: 'NVarChar', value: JSON.stringify(['a', SENTINEL]) });
  });

  it('reads rows by path locator, parsed back to hierarchyid by the server', () => {
    const stmt = byPathLocatorsQuery(spec, ['/1/2/']);
    expect(stmt.text).toContain("WHERE b.[path_locator] IN (SELECT CAST(pl.[path] AS hierarchyid) FROM OPENJSON(@paths) WITH ([path] nvarchar(4000) '$') AS pl)");
  });

  it('slices content on the server (1-based SUBSTRING)', () => {
    const stmt = contentSliceQuery(spec, 'k', 1_048_576, 65_536);
    expect(stmt.text).toContain('SUBSTRING(b.[file_stream], @offset + 1, @length) AS [slice]');
    expect(stmt.values.offset).toEqual({ type: 'BigInt', value: 1_048_576 });
    expect(stmt.values.length).toEqual({ type: 'Int', value: 65_536 });
    expect(stmt.text).not.toContain('[metadata]');
  });

  it('checks membership of the replicated set as the windows read it: metadata joined, BU mapped, scope, exclusions', () => {
    const stmt = memberKeysQuery(spec, { keys: ['a'], businessUnit: 'bu-1', excludedKeys: ['k'] });
    expect(stmt.text).toContain('INNER JOIN [dbo].[cw_referralattachmentBase] AS m');
    expect(stmt.text).toContain('LOWER(CONVERT(varchar(36), b.[stream_id])) AS [key]');
    expect(stmt.text).toContain('[LA_BU]');
    expect(stmt.text).toContain('m.[OwningBusinessUnit] = @scopeBusinessUnit');
    expect(stmt.text).toContain('NOT EXISTS (SELECT 1 FROM OPENJSON(@scopeExcluded)');
  });

  it('hashes contents in the server, and reads late arrivals as datetime2(7) without NULL ModifiedOn', () => {
    expect(contentHashesQuery(spec, ['a']).text).toContain("HASHBYTES('SHA2_256', b.[file_stream]) AS [sha256]");
    const late = keyStatesQuery(spec, { after: null, limit: 5, maxBytes: 100, businessUnit: null, excludedKeys: [] }).text;
    // A legacy datetime column converts to the same text as in the page query, so no row is flagged late for ever.
    expect(late).toContain('CONVERT(varchar(27), CONVERT(datetime2(7), m.[ModifiedOn]), 126) AS [modified_on]');
    expect(late).toContain("HASHBYTES('SHA2_256', b.[file_stream]) AS [sha256]");
    expect(late).toContain('WHERE r.[upto] - r.[len] <= @maxBytes');
    expect(late).toContain('m.[ModifiedOn] IS NOT NULL');
    expect(nullModifiedOnPageQuery(spec, { after: null, limit: 5, businessUnit: null, excludedKeys: [] }).text).toContain('m.[ModifiedOn] IS NULL');
  });
});

describe('clock and open transactions', () => {
  it('reads the server clock in UTC as exact text', () => {
    expect(clockQuery().text).toBe('SELECT CONVERT(varchar(27), SYSUTCDATETIME(), 126) AS [now_utc]');
  });

  it('reads the oldest user transaction in or touching this database, written yet or not', () => {
    const { text } = oldestOpenTransactionQuery(null);
    expect(text).toContain('sys.dm_tran_active_transactions AS a');
    expect(text).toContain('INNER JOIN sys.dm_tran_session_transactions AS st ON st.transaction_id = a.transaction_id');
    expect(text).toContain('s.database_id = DB_ID()');
    expect(text).toContain('d.database_id = DB_ID()');
    expect(text).toContain('st.session_id <> @@SPID');
    expect(text).not.toContain('database_transaction_begin_time IS NOT NULL');
  });

  it('converts local begin times with the server time zone (DST-proof), or with the current offset and an hour to spare', () => {
    const known = oldestOpenTransactionQuery('GMT Standard Time');
    expect(known.text).toContain("(CONVERT(datetime2(7), MIN(a.transaction_begin_time)) AT TIME ZONE @zone) AT TIME ZONE 'UTC'");
    expect(known.values.zone).toEqual({ type: 'NVarChar', value: 'GMT Standard Time' });
    const unknown = oldestOpenTransactionQuery(null);
    expect(unknown.text).toContain('DATEADD(MINUTE, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()) - 60, CONVERT(datetime2(7), MIN(a.transaction_begin_time)))');
    expect(serverTimeZoneQuery().text).toContain('CURRENT_TIMEZONE_ID()');
  });
});

describe('values never enter the text', () => {
  it('keeps an excluded key, a BU id and a position key in parameters only', () => {
    const stmts = [
      pageQuery(spec, page({ businessUnit: SENTINEL, excludedKeys: [SENTINEL], after: { modifiedOn: after.modifiedOn, key: SENTINEL } })),
      missingParentsQuery(spec, { parents: [SENTINEL], after: { modifiedOn: after.modifiedOn, key: SENTINEL }, limit: 5, excludedKeys: [SENTINEL] }),
      referencedParentsQuery(spec, { window, businessUnit: SENTINEL, excludedKeys: [SENTINEL] }),
      byKeysQuery(spec, [SENTINEL]),
      byPathLocatorsQuery(spec, [SENTINEL]),
      contentSliceQuery(spec, SENTINEL, 0, 1),
      memberKeysQuery(spec, { keys: [SENTINEL], businessUnit: null, excludedKeys: [] }),
      contentHashesQuery(spec, [SENTINEL]),
    ];
    for (const stmt of stmts) {
      expect(stmt.text).not.toContain('DROP TABLE');
      expect(JSON.stringify(stmt.values)).toContain('DROP TABLE--');
      checkStatement(stmt);
    }
    const p = stmts[0]!;
    expect(p.values.scopeBusinessUnit).toEqual({ type: 'NVarChar', value: SENTINEL });
    expect(p.values.afterKey).toEqual({ type: 'NVarChar', value: SENTINEL });
    expect(p.values.scopeExcluded).toEqual({ type: 'NVarChar', value: JSON.stringify([SENTINEL]) });
  });
});

describe('identifiers', () => {
  it('quotes every configured identifier in brackets', () => {
    const text = pageQuery(spec, page()).text;
    expect(text).toContain('FROM [dbo].[ReferralAttachment] AS b');
    expect(text).toContain('INNER JOIN [dbo].[cw_referralattachmentBase] AS m');
  });

  it.each([
    ['table', { ...spec, blob: { schema: 'dbo', table: 'T]; DROP TABLE x; --' } }],
    ['schema', { ...spec, metadata: { ...spec.metadata, schema: 'dbo].[x' } }],
    ['column', { ...spec, modifiedOnColumn: 'ModifiedOn] > 0 OR 1=1 --' }],
    ['BU table', { ...spec, businessUnit: { column: 'bu', mapTable: { schema: 'dbo', table: "LA_BU'", idColumn: 'id' } } }],
  ] as [string, SourceTableSpec][])('rejects a malicious %s name', (_what, bad) => {
    expect(() => pageQuery(bad, page())).toThrow(/invalid identifier/);
  });
});

describe('timestamps round-trip exactly', () => {
  it('prints ticks as datetime2(7) text that parses back to the same ticks', () => {
    for (const iso of ['2024-02-29T23:59:59.9999999Z', '1900-01-01T00:00:00Z', '2024-01-01T00:00:00.0000001Z']) {
      const ticks = ticksFromIso(iso);
      expect(datetime2Text(ticks)).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}$/);
      expect(ticksFromIso(datetime2Text(ticks))).toBe(ticks);
    }
  });
});

describe('row mapping', () => {
  it('maps a row, with ticks from datetime2 text and bigint lengths from strings', () => {
    const row = toSourceRow({
      key: 'abc', name: 'a.txt', path_locator: '/1/2/', parent_path_locator: '/1/', is_directory: false,
      content_length: '3', content: Buffer.from('abc'), modified_on: '2024-01-01T12:00:00.1234567',
      business_unit: 'bu', creation_time: '2023-12-31T23:00:00.0000001', last_write_time: null,
    });
    expect(row.modifiedOn).toBe(ticksFromIso('2024-01-01T12:00:00.1234567Z'));
    expect(row.contentLength).toBe(3);
    expect(row.attributes).toEqual({ creationTime: ticksFromIso('2023-12-31T23:00:00.0000001Z'), lastWriteTime: null });
  });

  it('maps a directory without content', () => {
    const row = toSourceRow({
      key: 'd', name: 'dir', path_locator: '/1/', parent_path_locator: null, is_directory: true, content_length: null,
      content: null, modified_on: '2024-01-01T00:00:00', business_unit: null, creation_time: null, last_write_time: null,
    });
    expect(row).toMatchObject({ isDirectory: true, contentLength: null, content: null, parentPathLocator: null });
  });
});

describe('connection strings', () => {
  it('reads ADO-style strings and mssql:// URLs', () => {
    expect(mssqlConfig('Server=db,1444;Database=src;User Id=sa;Password=p;Encrypt=false')).toMatchObject({ server: 'db', port: 1444, database: 'src', user: 'sa', password: 'p' });
    expect(mssqlConfig('mssql://sa:p%40ss@db:1433/src?encrypt=false&trustServerCertificate=true')).toEqual({
      server: 'db', port: 1433, user: 'sa', password: 'p@ss', database: 'src', options: { encrypt: false, trustServerCertificate: true },
    });
  });

  it('never repeats a broken URL (it holds a password) in its error', () => {
    expect(() => mssqlConfig('mssql://sa:secret@[bad')).toThrow(/not a valid one/);
    try {
      mssqlConfig('mssql://sa:secret@[bad');
    } catch (err) {
      expect(String(err)).not.toContain('secret');
    }
  });
});

describe('the window count behind the progress total (issue 10, item 8)', () => {
  it('bounds the window on the keyset column, values as parameters, no OFFSET, no ORDER BY', () => {
    const stmt = countWindowQuery(spec, { window, businessUnit: null, excludedKeys: [] });
    expect(stmt.text).toMatch(/^SELECT COUNT_BIG\(\*\)/);
    expect(stmt.text).not.toMatch(/OFFSET|ORDER BY/);
    expect(stmt.text).toContain('> CONVERT(datetime2(7), @windowStart, 126)');
    expect(stmt.text).toContain('<= CONVERT(datetime2(7), @windowEnd, 126)');
  });
});
