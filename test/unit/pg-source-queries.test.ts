/**
 * The PostgreSQL source statements (connectors/postgres/queries.ts), checked without a server: each statement is
 * parsed by sqlparser-rs (PostgreSQL dialect, through @guanmingchiu/sqlparser-ts), identifiers from configuration
 * are quoted, window bounds, positions, limits, BU ids and excluded keys travel as parameters (a sentinel value
 * never appears in the SQL text), and pages are keyset pages in (ModifiedOn, key) order, never OFFSET.
 */
import { init, parse } from '@guanmingchiu/sqlparser-ts';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  byKeysQuery, byPathLocatorsQuery, clockQuery, contentHashesQuery, contentSliceQuery, countNullModifiedOnQuery, countWindowQuery, keyStatesQuery, memberKeysQuery, missingParentsQuery, nullModifiedOnPageQuery,
  oldestOpenTransactionQuery, pageQuery, referencedParentsQuery, type Statement,
} from '../../connectors/postgres/queries.js';
import { toSourceRow } from '../../connectors/postgres/source.js';
import { keyStates } from '../../src/poll/source/connector.js';
import type { MissingParentsRequest, PageRequest, ReferencedParentsRequest, SourceTableSpec } from '../../src/poll/source/connector.js';
import { ticksFromIso } from '../../src/time/ticks.js';

const SENTINEL = "x'); DROP TABLE demo; --";
const BU_SENTINEL = "bu' OR '1'='1";
const KEY_SENTINEL = "k'); DELETE FROM demo; --";

const spec: SourceTableSpec = {
  blob: { schema: 'Demo', table: 'ReferralAttachment' },
  metadata: { schema: 'Demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
  keyColumn: 'stream_id',
  modifiedOnColumn: 'ModifiedOn',
  columns: {
    name: 'name', content: 'file_stream', isDirectory: 'is_directory', pathLocator: 'path_locator',
    parentPathLocator: 'parent_path_locator', creationTime: 'creation_time', lastWriteTime: 'last_write_time',
  },
  businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'Demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
  inlineContentMaxBytes: 65_536,
  maxdop: null,
};

const window = { start: ticksFromIso('2024-01-01T00:00:00Z'), end: ticksFromIso('2024-01-02T00:00:00.0000019Z') };
const after = { modifiedOn: ticksFromIso('2024-01-01T12:00:00.1234567Z'), key: KEY_SENTINEL };

function page(over: Partial<PageRequest> = {}): PageRequest {
  return { step: 'roots', window, after, limit: 500, businessUnit: BU_SENTINEL, excludedKeys: [SENTINEL, 'plain-key'], ...over };
}

const PATH_SENTINEL = "/1/'); DROP TABLE demo; --/";

function parents(over: Partial<MissingParentsRequest> = {}): MissingParentsRequest {
  return { parents: ['/1/', PATH_SENTINEL], after, limit: 250, excludedKeys: [SENTINEL], ...over };
}

function referenced(over: Partial<ReferencedParentsRequest> = {}): ReferencedParentsRequest {
  return { window, businessUnit: BU_SENTINEL, excludedKeys: [SENTINEL], ...over };
}

/** The position of `$n` for a value, so tests can find which placeholder carries it. */
function placeholderOf(stmt: Statement, value: unknown): string {
  const i = stmt.values.findIndex((v) => JSON.stringify(v) === JSON.stringify(value));
  expect(i, `value ${JSON.stringify(value)} among the parameters`).toBeGreaterThanOrEqual(0);
  return `$${i + 1}`;
}

/** Every `$n` of the text, and the check that they are exactly $1..$values.length. */
function checkPlaceholders(stmt: Statement): void {
  const used = new Set([...stmt.text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
  expect([...used].sort((a, b) => a - b)).toEqual(stmt.values.map((_v, i) => i + 1));
}

function checkNoValueInText(stmt: Statement): void {
  for (const v of stmt.values.flat()) {
    if (typeof v === 'string' && v.length > 3) expect(stmt.text).not.toContain(v);
  }
  for (const s of [SENTINEL, BU_SENTINEL, KEY_SENTINEL, 'DROP', 'DELETE']) expect(stmt.text).not.toContain(s);
}

beforeAll(async () => {
  await init();
});

describe('PostgreSQL source statements parse as PostgreSQL and carry every value as a parameter', () => {
  const statements: [string, Statement][] = [
    ['roots page', pageQuery(spec, page())],
    ['children page', pageQuery(spec, page({ step: 'children' }))],
    ['first page (no position, no scope, no exclusions)', pageQuery(spec, page({ after: null, businessUnit: null, excludedKeys: [] }))],
    ['missing parents', missingParentsQuery(spec, parents())],
    ['missing parents, first page, no exclusions', missingParentsQuery(spec, parents({ after: null, excludedKeys: [] }))],
    ['referenced parents', referencedParentsQuery(spec, referenced())],
    ['referenced parents, no scope', referencedParentsQuery(spec, referenced({ businessUnit: null, excludedKeys: [] }))],
    ['by keys', byKeysQuery(spec, [SENTINEL, 'b'])],
    ['by path locators', byPathLocatorsQuery(spec, [SENTINEL, '/1/2/'])],
    ['content slice', contentSliceQuery(spec, SENTINEL, 1_048_576, 65_536)],
    ['member keys', memberKeysQuery(spec, { keys: [SENTINEL], businessUnit: SENTINEL, excludedKeys: [SENTINEL] })],
    ['content hashes', contentHashesQuery(spec, [SENTINEL])],
    ['NULL ModifiedOn page', nullModifiedOnPageQuery(spec, { after: SENTINEL, limit: 10, businessUnit: SENTINEL, excludedKeys: [SENTINEL] })],
    ['key states (late-arrival sweep)', keyStatesQuery(spec, { after: SENTINEL, limit: 10, maxBytes: 1 << 20, businessUnit: SENTINEL, excludedKeys: [SENTINEL] })],
    ['key states, first range', keyStatesQuery(spec, { after: null, limit: 10, maxBytes: 0, businessUnit: null, excludedKeys: [] })],
    ['NULL ModifiedOn count', countNullModifiedOnQuery(spec, { businessUnit: SENTINEL, excludedKeys: [SENTINEL] })],
    ['window count (progress total)', countWindowQuery(spec, { window: page().window, businessUnit: SENTINEL, excludedKeys: [SENTINEL] })],
    ['clock', clockQuery()],
    ['oldest open transaction', oldestOpenTransactionQuery()],
  ];
  it.each(statements)('%s', (_name, stmt) => {
    expect(parse(stmt.text, 'postgresql').length).toBe(1);
    checkPlaceholders(stmt);
    checkNoValueInText(stmt);
  });
});

describe('pageQuery', () => {
  it('adds the keyset predicate (ModifiedOn, join key) > (position) only when a position is given', () => {
    const withPosition = pageQuery(spec, page());
    const ts = placeholderOf(withPosition, '2024-01-01T12:00:00.123456Z');
    const key = placeholderOf(withPosition, KEY_SENTINEL);
    expect(withPosition.text).toContain(`(m."ModifiedOn", m."cw_referralattachmentid") > (${ts}::timestamptz, ${key})`);

    const first = pageQuery(spec, page({ after: null }));
    expect(first.text).not.toMatch(/\(m\."ModifiedOn", m\."cw_referralattachmentid"\) >/);
    expect(first.values).not.toContain(KEY_SENTINEL);
    expect(first.values).toHaveLength(withPosition.values.length - 2);
  });

  it('orders by (ModifiedOn, key) and limits with a parameter; never OFFSET', () => {
    const stmt = pageQuery(spec, page({ limit: 777 }));
    expect(stmt.text).toMatch(/\nORDER BY m\."ModifiedOn", m\."cw_referralattachmentid"\nLIMIT \$\d+$/);
    const limit = placeholderOf(stmt, 777);
    expect(stmt.text.endsWith(`LIMIT ${limit}`)).toBe(true);
    expect(stmt.text).not.toMatch(/\bOFFSET\b|\bFETCH\b/i);
    expect(stmt.text).not.toContain('777');
  });

  it('reads the window (start, end] through timestamptz parameters, rounded down to microseconds', () => {
    const stmt = pageQuery(spec, page());
    const start = placeholderOf(stmt, '2024-01-01T00:00:00.000000Z');
    const end = placeholderOf(stmt, '2024-01-02T00:00:00.000001Z');
    expect(stmt.text).toContain(`m."ModifiedOn" > ${start}::timestamptz`);
    expect(stmt.text).toContain(`m."ModifiedOn" <= ${end}::timestamptz`);
    expect(stmt.text).not.toContain('2024-');
  });

  it('rounds negative (pre-1970) bounds down, not towards zero', () => {
    const stmt = pageQuery(spec, page({ window: { start: -15n, end: 5n }, after: null }));
    placeholderOf(stmt, '1969-12-31T23:59:59.999998Z');
    placeholderOf(stmt, '1970-01-01T00:00:00.000000Z');
  });

  it('filters roots by a NULL parent and children by a non-NULL parent', () => {
    const roots = pageQuery(spec, page({ step: 'roots' })).text;
    const children = pageQuery(spec, page({ step: 'children' })).text;
    expect(roots).toContain('b."parent_path_locator" IS NULL');
    expect(roots).not.toContain('IS NOT NULL');
    expect(children).toContain('b."parent_path_locator" IS NOT NULL');
  });

  it('scopes to one BU and leaves out excluded keys through parameters', () => {
    const stmt = pageQuery(spec, page());
    // GUID text compares case-insensitively on both sides, as SQL Server compares uniqueidentifier values.
    expect(stmt.text).toContain(`lower(m."OwningBusinessUnit"::text) = lower(${placeholderOf(stmt, BU_SENTINEL)})`);
    expect(stmt.text).toContain(`lower(b."stream_id"::text) <> ALL(${placeholderOf(stmt, [SENTINEL.toLowerCase(), 'plain-key'])}::text[])`);
  });

  it('has no BU or exclusion condition when the scope is all BUs and nothing is excluded', () => {
    const stmt = pageQuery(spec, page({ businessUnit: null, excludedKeys: [] }));
    expect(stmt.text).not.toMatch(/"OwningBusinessUnit"::text\) =/);
    expect(stmt.text).not.toContain('<> ALL');
  });

  it('joins the BU map table only when one is configured', () => {
    expect(pageQuery(spec, page()).text).toContain('JOIN "Demo"."LA_BU" AS bu_m ON bu_m."BusinessUnitId" = m."OwningBusinessUnit"');
    const noMap = pageQuery({ ...spec, businessUnit: { column: 'OwningBusinessUnit' } }, page());
    expect(noMap.text).not.toContain('LA_BU');
    const noBu = pageQuery({ ...spec, businessUnit: undefined }, page());
    expect(noBu.text).toContain('NULL::text AS business_unit');
    expect(noBu.text).not.toContain('OwningBusinessUnit');
    expect(noBu.values).not.toContain(BU_SENTINEL);
  });

  it('quotes every configured identifier and joins the metadata table on the key', () => {
    const text = pageQuery(spec, page()).text;
    expect(text).toContain('FROM "Demo"."ReferralAttachment" AS b');
    expect(text).toContain('JOIN "Demo"."cw_referralattachmentBase" AS m ON m."cw_referralattachmentid" = b."stream_id"');
    for (const column of ['name', 'file_stream', 'is_directory', 'path_locator', 'parent_path_locator', 'creation_time', 'last_write_time']) {
      expect(text).toContain(`b."${column}"`);
      expect(text).not.toMatch(new RegExp(`b\\.${column}\\b`));
    }
  });

  it('reads ModifiedOn and the file times as exact tick text, and inlines content only up to a parameter', () => {
    const stmt = pageQuery(spec, page());
    expect(stmt.text).toContain('(extract(epoch from m."ModifiedOn") * 10000000)::bigint::text AS modified_on_ticks');
    expect(stmt.text).toContain(`CASE WHEN octet_length(b."file_stream") <= ${placeholderOf(stmt, 65_536)} THEN b."file_stream" END AS content`);
    const noTimes = pageQuery({ ...spec, columns: { ...spec.columns, creationTime: null, lastWriteTime: null } }, page()).text;
    expect(noTimes).toContain('NULL::text AS creation_time_ticks');
    expect(noTimes).toContain('NULL::text AS last_write_time_ticks');
  });

  it('refuses an identifier that is not a plain SQL identifier instead of pasting it', () => {
    expect(() => pageQuery({ ...spec, keyColumn: 'stream_id"; DROP TABLE x; --' }, page())).toThrow(/invalid identifier/);
    expect(() => pageQuery({ ...spec, blob: { schema: 'demo', table: 'a b' } }, page())).toThrow(/invalid identifier/);
  });
});

describe('referencedParentsQuery', () => {
  it('lists the distinct parent paths of the window\'s children, as text, in one range of the window', () => {
    const stmt = referencedParentsQuery(spec, referenced());
    const start = placeholderOf(stmt, '2024-01-01T00:00:00.000000Z');
    const end = placeholderOf(stmt, '2024-01-02T00:00:00.000001Z');
    expect(stmt.text).toMatch(/^SELECT DISTINCT b\."parent_path_locator"::text AS parent_path_locator\nFROM "Demo"\."ReferralAttachment" AS b\n/);
    expect(stmt.text).toContain('JOIN "Demo"."cw_referralattachmentBase" AS m ON m."cw_referralattachmentid" = b."stream_id"');
    expect(stmt.text).toContain(`m."ModifiedOn" > ${start}::timestamptz`);
    expect(stmt.text).toContain(`m."ModifiedOn" <= ${end}::timestamptz`);
    expect(stmt.text).toContain('b."parent_path_locator" IS NOT NULL');
    expect(stmt.text).not.toMatch(/ORDER BY|LIMIT/);
  });

  it('scopes the children: BU and exclusions', () => {
    const stmt = referencedParentsQuery(spec, referenced());
    expect(stmt.text).toContain(`lower(m."OwningBusinessUnit"::text) = lower(${placeholderOf(stmt, BU_SENTINEL)})`);
    expect(stmt.text).toContain(`lower(b."stream_id"::text) <> ALL(${placeholderOf(stmt, [SENTINEL.toLowerCase()])}::text[])`);
    const all = referencedParentsQuery(spec, referenced({ businessUnit: null, excludedKeys: [] }));
    expect(all.text).not.toContain('OwningBusinessUnit"::text');
    expect(all.text).not.toContain('<> ALL');
  });
});

describe('missingParentsQuery', () => {
  it('reads the rows at the listed parent paths (one array parameter), with no window bound on them', () => {
    const stmt = missingParentsQuery(spec, parents());
    expect(stmt.text).toContain(`WHERE b."path_locator"::text = ANY(${placeholderOf(stmt, ['/1/', PATH_SENTINEL])}::text[])`);
    expect(stmt.text).toContain('m."ModifiedOn" IS NOT NULL');
    expect(stmt.text).not.toMatch(/"ModifiedOn" <=? \$/);
    // No sub-query over the window's children: they were listed once, by referencedParentsQuery.
    expect(stmt.text).not.toContain('parent_path_locator" IS NOT NULL');
    expect(stmt.text).not.toMatch(/\bAS c\b/);
  });

  it('never applies a BU scope to the parents, and never returns an excluded one', () => {
    const stmt = missingParentsQuery(spec, parents());
    expect(stmt.text).not.toContain('OwningBusinessUnit"::text) = lower(');
    expect(stmt.text).toContain(`\n  AND lower(b."stream_id"::text) <> ALL(${placeholderOf(stmt, [SENTINEL.toLowerCase()])}::text[])`);
  });

  it('pages the parents by their own (ModifiedOn, key), with the keyset predicate only after a position', () => {
    const stmt = missingParentsQuery(spec, parents({ limit: 42 }));
    expect(stmt.text).toContain(`(m."ModifiedOn", m."cw_referralattachmentid") > (${placeholderOf(stmt, '2024-01-01T12:00:00.123456Z')}::timestamptz, ${placeholderOf(stmt, KEY_SENTINEL)})`);
    expect(stmt.text).toMatch(/\nORDER BY m\."ModifiedOn", m\."cw_referralattachmentid"\nLIMIT \$\d+$/);
    expect(stmt.text.endsWith(`LIMIT ${placeholderOf(stmt, 42)}`)).toBe(true);
    const first = missingParentsQuery(spec, parents({ after: null }));
    expect(first.text).not.toMatch(/\) > \(/);
  });
});

describe('other statements', () => {
  it('reads a content slice with a 1-based offset', () => {
    const stmt = contentSliceQuery(spec, 'k', 1_048_576, 65_536);
    expect(stmt.text).toBe('SELECT substring("file_stream" FROM $1 FOR $2) AS slice FROM "Demo"."ReferralAttachment" WHERE "stream_id" = $3');
    expect(stmt.values).toEqual([1_048_577, 65_536, 'k']);
  });

  it('reads the clock and open transactions from the database itself', () => {
    expect(clockQuery().text).toContain('clock_timestamp()');
    expect(clockQuery().values).toEqual([]);
    const oldest = oldestOpenTransactionQuery().text;
    expect(oldest).toContain('min(a.xact_start)');
    // Every open transaction counts, written or not: now() stamps rows with the transaction's start.
    expect(oldest).toContain('a.xact_start IS NOT NULL');
    expect(oldest).not.toContain('backend_xid');
    expect(oldest).toContain('pg_prepared_xacts');
    expect(oldest).toContain('a.datname = current_database()');
    expect(oldest).toContain('a.pid <> pg_backend_pid()');
  });

  it('looks keys up with one array parameter typed by the key column, so the primary key serves it', () => {
    const members = memberKeysQuery(spec, { keys: ['a', 'b'], businessUnit: null, excludedKeys: [] });
    expect(members.values).toEqual([['a', 'b']]);
    expect(members.text).toContain('b."stream_id" = ANY($1)');
    expect(byKeysQuery(spec, ['a']).text).toMatch(/WHERE b\."stream_id" = ANY\(\$2\)$/);
    expect(contentHashesQuery(spec, ['a']).text).toContain('sha256(b."file_stream")');
    for (const q of [members, byKeysQuery(spec, ['a']), contentHashesQuery(spec, ['a']), contentSliceQuery(spec, 'a', 0, 1)]) expect(q.text).not.toContain('::text =');
  });

  it('checks membership of the replicated set, as the windows read it: metadata joined, BU mapped, scope, exclusions', () => {
    const q = memberKeysQuery(spec, { keys: ['a'], businessUnit: 'bu-1', excludedKeys: ['x'] }).text;
    expect(q).toContain('JOIN "Demo"."cw_referralattachmentBase" AS m');
    expect(q).toContain('JOIN "Demo"."LA_BU" AS bu_m');
    expect(q).toContain('lower(m."OwningBusinessUnit"::text) = lower(');
    expect(q).toContain('<> ALL(');
  });

  it('reads late arrivals without NULL ModifiedOn, and the NULL ones on their own page', () => {
    const states = keyStatesQuery(spec, { after: null, limit: 5, maxBytes: 1000, businessUnit: null, excludedKeys: [] });
    expect(states.text).toContain('IS NOT NULL');
    // Content is hashed in the database, never sent, and only within the byte budget (the first row always).
    expect(states.text).toContain('sha256(b."file_stream") AS content_sha256');
    expect(states.text).toContain('WHERE r.upto - r.len <= $');
    expect(states.text).toMatch(/octet_length\(b\."file_stream"\) <= \$\d+ THEN/);
    expect(states.values).toContain(-1);
    expect(states.values).toContain(1000);
    expect(nullModifiedOnPageQuery(spec, { after: null, limit: 5, businessUnit: null, excludedKeys: [] }).text).toMatch(/WHERE m\."ModifiedOn" IS NULL[\s\S]*ORDER BY b\."stream_id"/);
  });
});

describe('toSourceRow', () => {
  it('reads ticks and lengths from text without losing precision', () => {
    const row = toSourceRow({
      key: 'k', name: 'n', path_locator: '/1/2/', parent_path_locator: '/1/', is_directory: false, content_length: '3', content: Buffer.from('abc'),
      modified_on_ticks: '17672472001234567', business_unit: 'bu', creation_time_ticks: '-1', last_write_time_ticks: null,
    });
    expect(row).toMatchObject({ key: 'k', contentLength: 3, modifiedOn: 17_672_472_001_234_567n, attributes: { creationTime: -1n, lastWriteTime: null } });
    expect(toSourceRow({ ...rawRow(), modified_on_ticks: null }).modifiedOn).toBeNull();
  });
});

function rawRow(): Parameters<typeof toSourceRow>[0] {
  return {
    key: 'k', name: 'n', path_locator: '/1/', parent_path_locator: null, is_directory: false, content_length: null, content: null,
    modified_on_ticks: '1', business_unit: null, creation_time_ticks: null, last_write_time_ticks: null,
  };
}

describe('keyStates', () => {
  it('ends the walk only when the page was short and the byte budget cut nothing', () => {
    const state = (key: string) => ({ row: { key } as never, contentSha256: null });
    expect(keyStates([state('a'), state('b')], 2, 10).endOfKeys).toBe(true);
    expect(keyStates([state('a')], 2, 10).endOfKeys).toBe(false);
    expect(keyStates([state('a'), state('b')], 10, 10).endOfKeys).toBe(false);
    expect(keyStates([], 0, 10).endOfKeys).toBe(true);
  });
});

describe('the window count behind the progress total (issue 10, item 8)', () => {
  it('is one range on (ModifiedOn) with the bounds as parameters: no OFFSET, no ORDER BY, no content read', () => {
    const stmt = countWindowQuery(spec, { window: page().window, businessUnit: null, excludedKeys: [] });
    expect(stmt.text).toMatch(/^SELECT count\(\*\)/);
    expect(stmt.text).not.toMatch(/OFFSET|ORDER BY|file_stream|content/i);
    expect(stmt.text).toMatch(/> \$1::timestamptz\s+AND .* <= \$2::timestamptz/);
    expect(stmt.values).toHaveLength(2);
  });
});
