import { createHash } from 'node:crypto';
import { init, parse } from '@guanmingchiu/sqlparser-ts';
import { beforeAll, describe, expect, it } from 'vitest';
import { contentScopeOf, examplesOf, pairsOf } from '../../src/cli/commands-reconcile.js';
import { parseConfigObject } from '../../src/config/load.js';
import { HighwaterError } from '../../src/errors.js';
import * as pgSource from '../../connectors/postgres/reconcile.js';
import * as msSource from '../../connectors/sqlserver/reconcile.js';
import * as pgTarget from '../../consumers/postgres/reconcile.js';
import * as msTarget from '../../consumers/sqlserver/reconcile.js';
import type * as pgSide from '../../src/ops/reconcile/side/postgres.js';
import type * as msSide from '../../src/ops/reconcile/side/sqlserver.js';
import {
  HEX_PREFIXES, MAX_PREFIX_LENGTH, cellsOf, contentChecked, diffRows, differingBuckets, digestOf, lineOf, planBuckets,
  reconcileTable, sampleScope, scopeChecksum, type Cell, type ContentScope, type OrphanRow, type ReconcileSide, type RowVersion,
} from '../../src/ops/reconcile/reconcile.js';
import { buildReport, renderReport, reportJson, type TableReport } from '../../src/ops/reconcile/report.js';
import type { ScopeFilter, SourceTableSpec } from '../../src/poll/source/connector.js';

/** Each engine's reconciliation builders, both sides (they live in the engine folders). */
const pgq = { ...pgSource, ...pgTarget };
const msq = { ...msSource, ...msTarget };

/** The pure parts of `highwater reconcile`: sampling, bucket planning, row diffs, the comparison, reports, SQL. */

const BU_A = '1c2f0000-0000-0000-0000-00000000000a';
const BU_B = '1c2f0000-0000-0000-0000-00000000000b';
const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

function row(key: string, ticks: number, content: string | null = key, bu: string | null = BU_A): RowVersion {
  return { key, businessUnit: bu, modifiedOn: BigInt(ticks), contentSha256: content === null ? '-' : sha(content) };
}

/** Keys spread over buckets: `<2 hex>` + a suffix, GUID-shaped. */
function key(prefix: string, n: number): string {
  return `${prefix}${n.toString(16).padStart(6, '0')}-0000-4000-8000-000000000000`;
}

describe('content sample', () => {
  it('is a contiguous range of two-hex-character key prefixes', () => {
    const quarter = sampleScope(0.25, 0);
    expect(quarter.kind === 'sample' && quarter.prefixes).toEqual(HEX_PREFIXES.slice(0, 64));
    const wrapped = sampleScope(0.1, 250);
    expect(wrapped.kind === 'sample' && wrapped.prefixes).toEqual([...HEX_PREFIXES.slice(250), ...HEX_PREFIXES.slice(0, 20)]);
  });

  it('rounds up to whole buckets: 0 checks no content, any fraction above it at least one bucket', () => {
    expect(sampleScope(0)).toMatchObject({ prefixes: [] });
    expect(sampleScope(0.0001, 7)).toMatchObject({ prefixes: ['07'] });
    expect(sampleScope(1)).toMatchObject({ prefixes: HEX_PREFIXES });
  });

  it('refuses fractions outside 0..1 and starts outside the 256 buckets', () => {
    for (const f of [-0.1, 1.5, Number.NaN]) expect(() => sampleScope(f)).toThrow(RangeError);
    expect(() => sampleScope(0.5, 256)).toThrow(RangeError);
  });

  it('checks the content of a key when its first two characters are in the range', () => {
    const scope = sampleScope(2 / 256, 0x3f);
    expect(contentChecked(scope, '3fabc')).toBe(true);
    expect(contentChecked(scope, '40abc')).toBe(true);
    expect(contentChecked(scope, '41abc')).toBe(false);
    expect(contentChecked({ kind: 'all' }, 'anything')).toBe(true);
  });
});

describe('digests', () => {
  it('hash the lines of a cell in byte order of the key: key:ticks[:sha256]', () => {
    const a = row('b1', 5, 'x');
    const b = { ...row('a2', -7), contentSha256: null };
    expect(lineOf(a)).toBe(`b1:5:${sha('x')}`);
    expect(lineOf(b)).toBe('a2:-7');
    expect(digestOf([a, b])).toBe(sha(`a2:-7,b1:5:${sha('x')}`));
    expect(digestOf([b, a])).toBe(digestOf([a, b]));
  });

  it('group rows into cells per business unit and bucket', () => {
    const cells = cellsOf([row('aa1', 1), row('aa2', 9), row('ab1', 3), row('aa3', 4, 'y', BU_B)], 2);
    expect(cells.map((c) => [c.businessUnit, c.bucket, c.rows, c.latest])).toEqual([[BU_A, 'aa', 2, 9n], [BU_A, 'ab', 1, 3n], [BU_B, 'aa', 1, 4n]]);
  });
});

describe('bucket comparison and planning', () => {
  const cell = (bucket: string, rows: number, digest = 'd', bu: string | null = BU_A): Cell => ({ businessUnit: bu, bucket, rows, latest: 1n, digest });

  it('finds buckets whose cells differ in count, digest or business units, in key order', () => {
    const source = [cell('00', 1), cell('01', 2), cell('02', 2, 'x'), cell('03', 1), cell('04', 1, 'd', BU_B), cell('06', 1)];
    const target = [cell('00', 1), cell('01', 3), cell('02', 2, 'y'), cell('04', 1, 'd', BU_A), cell('05', 4), cell('06', 1)];
    expect(differingBuckets(source, target)).toEqual([
      { bucket: '01', sourceRows: 2, targetRows: 3 },
      { bucket: '02', sourceRows: 2, targetRows: 2 },
      { bucket: '03', sourceRows: 1, targetRows: 0 },
      { bucket: '04', sourceRows: 1, targetRows: 1 },
      { bucket: '05', sourceRows: 0, targetRows: 4 },
    ]);
    expect(differingBuckets(source, source)).toEqual([]);
  });

  it('pulls consecutive buckets together up to the row limit and cuts larger ones finer', () => {
    const d = (bucket: string, s: number, t: number) => ({ bucket, sourceRows: s, targetRows: t });
    expect(planBuckets([d('00', 3, 3), d('01', 2, 1), d('02', 50, 60), d('03', 1, 0), d('04', 5, 5)], 2, 10)).toEqual([
      { kind: 'pull', buckets: ['00', '01'], rows: 9 },
      { kind: 'drill', bucket: '02', rows: 110 },
      { kind: 'pull', buckets: ['03'], rows: 1 },
      { kind: 'pull', buckets: ['04'], rows: 10 },
    ]);
  });

  it('never cuts past the first GUID group, nor a bucket of short keys', () => {
    const big = { bucket: 'abcdef01', sourceRows: 500, targetRows: 0 };
    expect(planBuckets([big], MAX_PREFIX_LENGTH, 10)).toEqual([{ kind: 'pull', buckets: ['abcdef01'], rows: 500 }]);
    expect(planBuckets([{ bucket: 'a', sourceRows: 50, targetRows: 0 }], 2, 10)).toEqual([{ kind: 'pull', buckets: ['a'], rows: 50 }]);
  });
});

describe('row diffs', () => {
  it('names missing, extra and differing keys with the reasons, in key order', () => {
    const source = [row('k3', 3), row('k1', 1), row('k2', 2), row('k4', 4, 'old'), row('k5', 5), row('k6', 6)];
    const target = [row('k1', 1), row('k2', 1), row('k4', 4, 'new'), row('k5', 5, 'k5', BU_B), row('k7', 7), row('k6', 6)];
    const diff = diffRows(source, target);
    expect(diff.missing.map((r) => r.key)).toEqual(['k3']);
    expect(diff.extra.map((r) => r.key)).toEqual(['k7']);
    expect(diff.differing.map((d) => [d.key, d.reasons])).toEqual([['k2', ['modifiedOn']], ['k4', ['content']], ['k5', ['businessUnit']]]);
  });

  it('compares content only where both sides hashed it', () => {
    const unchecked = { ...row('k1', 1, 'a'), contentSha256: null };
    expect(diffRows([unchecked], [row('k1', 1, 'b')]).differing).toEqual([]);
    expect(diffRows([row('k1', 1, null)], [row('k1', 1, '')]).differing.map((d) => d.reasons)).toEqual([['content']]);
  });
});

/** A side held in memory, answering as the databases do (the reference digests of reconcile.ts). */
function memorySide(rows: readonly RowVersion[], orphans: readonly OrphanRow[] = []): ReconcileSide & { pulls: number } {
  const view = (content: ContentScope) => (r: RowVersion): RowVersion => (contentChecked(content, r.key) ? r : { ...r, contentSha256: null });
  const side = {
    pulls: 0,
    summarize: async (req: { prefixLength: number; within: readonly string[] | null; content: ContentScope }) => {
      const mine = rows.filter((r) => req.within === null || req.within.includes(r.key.slice(0, req.prefixLength - 1)));
      return cellsOf(mine.map(view(req.content)), req.prefixLength);
    },
    rows: async (req: { prefixLength: number; buckets: readonly string[]; content: ContentScope }) => {
      side.pulls += 1;
      return rows.filter((r) => req.buckets.includes(r.key.slice(0, req.prefixLength))).map(view(req.content));
    },
    orphans: async () => [...orphans],
  };
  return side;
}

describe('reconcileTable', () => {
  const base = Array.from({ length: 400 }, (_, i) => row(key(HEX_PREFIXES[(i * 7) % 256]!, i), 1000 + i, `c${i}`, i % 3 === 0 ? BU_B : BU_A));
  const options = { content: { kind: 'all' } as ContentScope, examples: 10, maxBucketRows: 100_000 };

  it('reports equal sides per business unit without pulling a row', async () => {
    const target = memorySide(base);
    const result = await reconcileTable(memorySide(base), target, options);
    expect(result.equal).toBe(true);
    expect(target.pulls).toBe(0);
    expect(result.scopes.map((s) => [s.businessUnit, s.source.rows, s.target.rows, s.checksum.status])).toEqual([[BU_A, 266, 266, 'equal'], [BU_B, 134, 134, 'equal']]);
    expect(result.scopes[0]!.source.latestModifiedOn).toBe(result.scopes[0]!.target.latestModifiedOn);
  });

  it('finds each kind of difference and attributes it to its business unit', async () => {
    const [missing, changed, older, moved] = [base[10]!, base[20]!, base[30]!, base[40]!];
    const extra = row(key('ee', 999), 5, 'extra', BU_B);
    const target = [
      ...base.filter((r) => ![missing, changed, older, moved].includes(r)),
      { ...changed, contentSha256: sha('changed') },
      { ...older, modifiedOn: older.modifiedOn - 1n },
      { ...moved, businessUnit: moved.businessUnit === BU_A ? BU_B : BU_A },
      extra,
    ];
    const orphan: OrphanRow = { businessUnit: BU_A, key: base[50]!.key, total: 1 };
    const result = await reconcileTable(memorySide(base), memorySide(target, [orphan]), options);
    expect(result.equal).toBe(false);
    const a = result.scopes.find((s) => s.businessUnit === missing.businessUnit)!;
    expect(a.missing).toEqual({ count: 1, examples: [missing.key] });
    const b = result.scopes.find((s) => s.businessUnit === BU_B)!;
    expect(b.extra).toEqual({ count: 1, examples: [extra.key] });
    const differing = result.scopes.flatMap((s) => s.differing.examples.map((d) => [d.key, d.reasons]));
    expect(differing.sort()).toEqual([[changed.key, ['content']], [older.key, ['modifiedOn']], [moved.key, ['businessUnit']]].sort());
    expect(result.scopes.find((s) => s.businessUnit === BU_A)!.orphans.target).toEqual({ count: 1, examples: [orphan.key] });
    expect(result.buckets.differing).toBe(5);
  });

  it('finds the same when buckets are cut finer than they are pulled', async () => {
    const target = base.filter((_, i) => i % 17 !== 0).map((r, i) => (i % 23 === 0 ? { ...r, modifiedOn: r.modifiedOn + 1n } : r));
    const coarse = await reconcileTable(memorySide(base), memorySide(target), options);
    const fine = await reconcileTable(memorySide(base), memorySide(target), { ...options, maxBucketRows: 1 });
    expect(fine.buckets.drilled).toBeGreaterThan(0);
    const summary = (r: typeof fine) => r.scopes.map((s) => [s.businessUnit, s.missing.count, s.extra.count, s.differing.count, s.missing.examples]);
    expect(summary(fine)).toEqual(summary(coarse));
    expect(coarse.scopes.reduce((n, s) => n + s.missing.count, 0)).toBe(Math.ceil(400 / 17));
  });

  it('checks content in the sample only, but keys and ModifiedOn everywhere', async () => {
    const inside = base.find((r) => r.key.startsWith('00'))!;
    const outside = base.find((r) => r.key.startsWith('80'))!;
    const older = base.find((r) => r.key.startsWith('90'))!;
    const target = base.map((r) => (r === inside || r === outside ? { ...r, contentSha256: sha('changed') } : r === older ? { ...r, modifiedOn: 1n } : r));
    const result = await reconcileTable(memorySide(base), memorySide(target), { ...options, content: sampleScope(16 / 256, 0) });
    const differing = result.scopes.flatMap((s) => s.differing.examples.map((d) => d.key));
    expect(differing.sort()).toEqual([inside.key, older.key].sort());
  });

  it('keeps at most N examples but counts every difference', async () => {
    const result = await reconcileTable(memorySide(base), memorySide([]), { ...options, examples: 3 });
    const a = result.scopes.find((s) => s.businessUnit === BU_A)!;
    expect(a.missing.count).toBe(266);
    expect(a.missing.examples).toHaveLength(3);
    expect(a.missing.examples).toEqual([...a.missing.examples].sort());
    expect(a.checksum).toMatchObject({ status: 'different', target: null });
  });

  it('reports orphans of the source without calling the sides different', async () => {
    const orphans: OrphanRow[] = [{ businessUnit: BU_A, key: base[1]!.key, total: 1 }];
    const result = await reconcileTable(memorySide(base, orphans), memorySide(base), options);
    expect(result.equal).toBe(true);
    expect(result.scopes.find((s) => s.businessUnit === BU_A)!.orphans.source.count).toBe(1);
  });
});

describe('per business unit checksum', () => {
  it('covers the cells of the content scope only, in bucket order', () => {
    const cells: Cell[] = [
      { businessUnit: BU_A, bucket: '01', rows: 2, latest: 1n, digest: 'x' },
      { businessUnit: BU_A, bucket: '00', rows: 1, latest: 1n, digest: 'y' },
    ];
    expect(scopeChecksum(cells, { kind: 'all' })).toEqual({ digest: sha('00:1:y\n01:2:x'), buckets: 2 });
    expect(scopeChecksum(cells, sampleScope(1 / 256, 1))).toEqual({ digest: sha('01:2:x'), buckets: 1 });
    expect(scopeChecksum(cells, sampleScope(0))).toEqual({ digest: null, buckets: 0 });
  });
});

describe('reports', () => {
  async function tableReport(): Promise<TableReport> {
    const target = [...[row(key('00', 1), 1), row(key('01', 2), 2)].slice(1), row(key('02', 3), 3)];
    const comparison = await reconcileTable(memorySide([row(key('00', 1), 1), row(key('01', 2), 2)]), memorySide(target), { content: { kind: 'all' }, examples: 10, maxBucketRows: 1000 });
    return { table: 'ReferralAttachment', target: 'warehouse', tenant: 'gwent', source: { database: 'src', kind: 'sqlserver' }, targetTable: { database: 'tgt', kind: 'postgres', name: 'replica.referralattachment' }, ...comparison };
  }

  it('renders a table a person can read, with example keys', async () => {
    const text = renderReport(buildReport(sampleScope(0.25, 0x40), 10, [await tableReport()]));
    expect(text).toContain('content of keys 40..7f (64 of 256 key prefixes)');
    expect(text).toContain('ReferralAttachment → warehouse (tenant gwent; source src, target tgt replica.referralattachment): DIFFERENT');
    expect(text).toMatch(/business unit +rows src\/tgt +latest ModifiedOn src +latest ModifiedOn tgt +checksum +missing +extra +differing +orphans src\/tgt +result/);
    expect(text).toMatch(new RegExp(`${BU_A} +2/2 +1970-01-01T00:00:00.0000002Z +1970-01-01T00:00:00.0000003Z +different +1 +1 +0 +0/0 +DIFFERENT`));
    expect(text).toContain(`missing in the target: 1\n      ${key('00', 1)}`);
    expect(text).toContain(`only in the target: 1\n      ${key('02', 3)}`);
    expect(text.trimEnd().endsWith('result: DIFFERENT (exit code 3)')).toBe(true);
  });

  it('prints JSON with ticks as strings', async () => {
    const json = JSON.parse(reportJson(buildReport({ kind: 'all' }, 10, [await tableReport()]))) as { equal: boolean; content: { mode: string }; tables: { scopes: { source: { latestModifiedOnTicks: unknown } }[] }[] };
    expect(json.equal).toBe(false);
    expect(json.content.mode).toBe('all');
    expect(json.tables[0]!.scopes[0]!.source.latestModifiedOnTicks).toBe('2');
  });

  it('says "same" for an equal latest ModifiedOn and EQUAL for equal sides', async () => {
    const comparison = await reconcileTable(memorySide([row(key('00', 1), 1)]), memorySide([row(key('00', 1), 1)]), { content: { kind: 'all' }, examples: 10, maxBucketRows: 10 });
    const text = renderReport(buildReport({ kind: 'all' }, 10, [{ ...(await tableReport()), ...comparison }]));
    expect(text).toMatch(/1970-01-01T00:00:00.0000001Z +same +equal/);
    expect(text.trimEnd().endsWith('result: EQUAL')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------- SQL

const SENTINEL = "x'); DROP TABLE t;--";
const spec: SourceTableSpec = {
  blob: { schema: 'dbo', table: 'ReferralAttachment' },
  metadata: { schema: 'dbo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
  keyColumn: 'stream_id',
  modifiedOnColumn: 'ModifiedOn',
  columns: {
    name: 'name', content: 'file_stream', isDirectory: 'is_directory', pathLocator: 'path_locator',
    parentPathLocator: 'parent_path_locator', creationTime: 'creation_time', lastWriteTime: 'last_write_time',
  },
  businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'dbo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
  inlineContentMaxBytes: 65_536,
  maxdop: 4,
};
const scope: ScopeFilter = { businessUnit: SENTINEL, excludedKeys: [SENTINEL] };
const sample = sampleScope(0.5, 0);
const targetRef = { schema: 'replica', table: 'referralattachment' };

beforeAll(async () => {
  await init();
});

/** Every node of a parsed tree, depth first. */
function* nodes(value: unknown): Generator<Record<string, unknown>> {
  if (Array.isArray(value)) for (const v of value) yield* nodes(v);
  else if (value !== null && typeof value === 'object') {
    yield value as Record<string, unknown>;
    for (const v of Object.values(value)) yield* nodes(v);
  }
}

function stringLiterals(ast: unknown): string[] {
  return [...nodes(ast)].flatMap((n) => ['SingleQuotedString', 'NationalStringLiteral'].filter((k) => typeof n[k] === 'string').map((k) => n[k] as string));
}

describe('PostgreSQL statements', () => {
  const statements: [string, pgSide.Statement][] = [
    ['source summary', pgq.sourceSummaryQuery(spec, scope, { prefixLength: 2, within: null, content: { kind: 'all' } })],
    ['source summary of sub-buckets, sampled', pgq.sourceSummaryQuery(spec, scope, { prefixLength: 3, within: [SENTINEL], content: sample })],
    ['source rows', pgq.sourceRowsQuery(spec, scope, { prefixLength: 2, buckets: [SENTINEL], content: sample })],
    ['source orphans', pgq.sourceOrphansQuery(spec, scope, 10)],
    ['target summary', pgq.targetSummaryQuery(targetRef, SENTINEL, { prefixLength: 3, within: ['ab'], content: sample })],
    ['target rows', pgq.targetRowsQuery(targetRef, SENTINEL, { prefixLength: 2, buckets: ['ab'], content: { kind: 'all' } })],
    ['target orphans', pgq.targetOrphansQuery(targetRef, SENTINEL, 10)],
  ];

  it.each(statements)('%s parses, numbers its parameters 1..n and holds no value', (_name, stmt) => {
    const ast = parse(stmt.text, 'postgresql');
    const used = new Set([...stmt.text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
    expect([...used].sort((a, b) => a - b)).toEqual(stmt.values.map((_, i) => i + 1));
    expect(stmt.text).not.toContain('DROP TABLE');
    expect(stringLiterals(ast)).not.toContain(SENTINEL);
  });

  it('quotes identifiers, joins the metadata table and applies the poller scope', () => {
    const { text, values } = pgq.sourceSummaryQuery(spec, scope, { prefixLength: 2, within: null, content: { kind: 'all' } });
    expect(text).toContain('FROM "dbo"."ReferralAttachment" AS b\n  JOIN "dbo"."cw_referralattachmentBase" AS m ON m."cw_referralattachmentid" = b."stream_id"');
    expect(text).toContain('(extract(epoch from m."ModifiedOn") * 10000000)::bigint AS ticks');
    expect(text).toContain('m."OwningBusinessUnit"::text = $1');
    expect(text).toContain('EXISTS (SELECT 1 FROM "dbo"."LA_BU" AS m_bu WHERE m_bu."BusinessUnitId" = m."OwningBusinessUnit")');
    expect(text).toContain('b."stream_id"::text <> ALL($2::text[])');
    expect(text).toContain(`string_agg(r.key || ':' || r.ticks::text || coalesce(':' || r.sha, ''), ',' ORDER BY r.key COLLATE "C")`);
    expect(values).toEqual([SENTINEL, [SENTINEL], 2]);
  });

  it('hashes content inside the database, only for sampled keys', () => {
    const all = pgq.targetRowsQuery(targetRef, 'gwent', { prefixLength: 2, buckets: ['ab'], content: { kind: 'all' } });
    expect(all.text).toContain(`coalesce(encode(sha256(t.content), 'hex'), '-') AS sha`);
    const some = pgq.targetRowsQuery(targetRef, 'gwent', { prefixLength: 2, buckets: ['ab'], content: sample });
    expect(some.text).toContain(`CASE WHEN left(t.key, 2) = ANY($1::text[]) THEN coalesce(encode(sha256(t.content), 'hex'), '-') END AS sha`);
    expect(some.values[0]).toEqual(HEX_PREFIXES.slice(0, 128));
    expect(pgq.targetRowsQuery(targetRef, 'gwent', { prefixLength: 2, buckets: ['ab'], content: sampleScope(0) }).text).toContain('NULL::text AS sha');
  });

  it('filters buckets and tenant through parameters', () => {
    const { text, values } = pgq.targetSummaryQuery(targetRef, 'gwent', { prefixLength: 3, within: ['ab'], content: { kind: 'all' } });
    expect(text).toContain('FROM "replica"."referralattachment" AS t');
    expect(text).toContain('t.tenant = $1');
    expect(text).toContain('left(t.key, $2::int) = ANY($3::text[])');
    expect(text).toContain('left(r.key, $4::int) AS bucket');
    expect(values).toEqual(['gwent', 2, ['ab'], 3]);
  });

  it('finds orphans by an anti-join on the parent path, per tenant in the target', () => {
    expect(pgq.targetOrphansQuery(targetRef, 'gwent', 5).text).toContain('NOT EXISTS (SELECT 1 FROM "replica"."referralattachment" AS pt WHERE pt.tenant = t.tenant AND pt.path_locator = t.parent_path_locator)');
    expect(pgq.sourceOrphansQuery(spec, scope, 5).text).toContain('NOT EXISTS (SELECT 1 FROM "dbo"."ReferralAttachment" AS pb WHERE pb."path_locator" = b."parent_path_locator")');
    expect(pgq.sourceOrphansQuery(spec, scope, 0).values.at(-1)).toBe(1);
  });

  it('refuses identifiers that are not plain names', () => {
    expect(() => pgq.sourceSummaryQuery({ ...spec, keyColumn: 'id"; --' }, scope, { prefixLength: 2, within: null, content: { kind: 'all' } })).toThrow(TypeError);
    expect(() => pgq.targetRowsQuery({ schema: 'a b', table: 't' }, 'x', { prefixLength: 2, buckets: [], content: { kind: 'all' } })).toThrow(TypeError);
  });
});

describe('SQL Server statements', () => {
  const MAXDOP = /\n?OPTION \(MAXDOP (\d+)\)\s*$/;
  const statements: [string, msSide.Statement][] = [
    ['source summary', msq.sourceSummaryQuery(spec, scope, { prefixLength: 2, within: null, content: { kind: 'all' } })],
    ['source summary of sub-buckets, sampled', msq.sourceSummaryQuery(spec, scope, { prefixLength: 3, within: [SENTINEL], content: sample })],
    ['source rows', msq.sourceRowsQuery(spec, scope, { prefixLength: 2, buckets: [SENTINEL], content: sample })],
    ['source orphans', msq.sourceOrphansQuery(spec, scope, 10)],
    ['source summary without BU mapping', msq.sourceSummaryQuery({ ...spec, businessUnit: undefined, maxdop: null }, { businessUnit: null, excludedKeys: [] }, { prefixLength: 2, within: null, content: sampleScope(0) })],
    ['target summary', msq.targetSummaryQuery(targetRef, SENTINEL, { prefixLength: 3, within: ['ab'], content: sample })],
    ['target rows', msq.targetRowsQuery(targetRef, SENTINEL, { prefixLength: 2, buckets: ['ab'], content: { kind: 'all' } })],
    ['target orphans', msq.targetOrphansQuery(targetRef, SENTINEL, 10)],
  ];

  it.each(statements)('%s parses as T-SQL; its parameters are exactly its values; no value is a literal', (_name, stmt) => {
    const ast = parse(stmt.text.replace(MAXDOP, ''), 'mssql');
    const used = new Set([...nodes(ast)].map((n) => n.value).filter((v): v is string => typeof v === 'string' && /^@\w+$/.test(v)).map((v) => v.slice(1)));
    expect([...used].sort()).toEqual(Object.keys(stmt.values).sort());
    const literals = stringLiterals(ast);
    for (const { value } of Object.values(stmt.values)) if (typeof value === 'string') expect(literals).not.toContain(value);
    expect(stmt.text).not.toContain('DROP TABLE');
  });

  it('digests with HASHBYTES over STRING_AGG in BIN2 order, ticks computed exactly from datetime2(7)', () => {
    const { text } = msq.sourceSummaryQuery(spec, scope, { prefixLength: 2, within: null, content: { kind: 'all' } });
    expect(text).toContain("HASHBYTES('SHA2_256', STRING_AGG(r.[line], ',') WITHIN GROUP (ORDER BY r.[sort_key] COLLATE Latin1_General_100_BIN2))");
    expect(text).toContain("DATEDIFF_BIG(MICROSECOND, CONVERT(datetime2(7), '1970-01-01T00:00:00', 126), d.[modified_on]) * 10 + DATEPART(NANOSECOND, d.[modified_on]) / 100 % 10");
    expect(text).toContain("ISNULL(LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', b.[file_stream]), 2)), '-') AS [sha]");
    expect(text).toContain('CONVERT(varchar(27), MAX(r.[modified_on]), 126) AS [latest]');
    expect(text).toContain('LOWER(CONVERT(varchar(36), b.[stream_id])) AS [key]');
    expect(text).toMatch(/\nOPTION \(MAXDOP 4\)$/);
    expect(text).not.toContain('READCOMMITTEDLOCK');
  });

  it('passes scope, buckets, sample and tenant as typed parameters', () => {
    const source = msq.sourceRowsQuery(spec, scope, { prefixLength: 2, buckets: ['ab'], content: sample });
    expect(source.values).toEqual({
      scopeBusinessUnit: { type: 'NVarChar', value: SENTINEL },
      excluded: { type: 'NVarChar', value: JSON.stringify([SENTINEL]) },
      sample: { type: 'NVarChar', value: JSON.stringify(HEX_PREFIXES.slice(0, 128)) },
      filterLength: { type: 'Int', value: 2 },
      buckets: { type: 'NVarChar', value: '["ab"]' },
    });
    expect(source.text).toContain('CONVERT(varchar(27), d.[modified_on], 126) AS [modified_on]');
    const target = msq.targetSummaryQuery(targetRef, 'gwent', { prefixLength: 2, within: null, content: { kind: 'all' } });
    expect(target.text).toContain('FROM [replica].[referralattachment] AS t\n  WHERE t.[tenant] = @tenant');
    expect(target.text).toContain('CONVERT(varchar(20), MAX(r.[ticks])) AS [latest]');
    expect(target.values).toEqual({ tenant: { type: 'NVarChar', value: 'gwent' }, prefixLength: { type: 'Int', value: 2 } });
  });

  it('parses source latest values and ModifiedOn as exact text, target ones as ticks', () => {
    const source = msq.sqlServerSourceQueries(spec, scope);
    expect(source.toCell({ business_unit: null, bucket: 'ab', rows: '3', latest: '2024-01-01T00:00:00.1234567', digest: 'd' })).toEqual({ businessUnit: null, bucket: 'ab', rows: 3, latest: 17040672001234567n, digest: 'd' });
    expect(source.toRow({ key: 'k', business_unit: 'bu', modified_on: '1970-01-01T00:00:00.0000001', sha: null })).toEqual({ key: 'k', businessUnit: 'bu', modifiedOn: 1n, contentSha256: null });
    const target = msq.sqlServerTargetQueries(targetRef, 'gwent');
    expect(target.toRow({ key: 'k', business_unit: null, modified_on: '-5', sha: '-' })).toEqual({ key: 'k', businessUnit: null, modifiedOn: -5n, contentSha256: '-' });
  });
});

// ---------------------------------------------------------------------------------------------------- CLI options

describe('reconcile options', () => {
  const usage = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err instanceof HighwaterError && err.code === 'USAGE' && err.exitCode === 2;
    }
    return false;
  };

  it('reads --sample, --sample-from and --all; every row by default', () => {
    expect(contentScopeOf({})).toEqual({ kind: 'all' });
    expect(contentScopeOf({ all: true })).toEqual({ kind: 'all' });
    expect(contentScopeOf({ sample: '0.5', sampleFrom: 'C0' })).toEqual(sampleScope(0.5, 0xc0));
    expect(contentScopeOf({ sample: '0.25' }, () => 3)).toEqual(sampleScope(0.25, 3));
    for (const bad of [{ sample: '1.5' }, { sample: 'x' }, { sample: '' }, { sample: '0.5', all: true }, { sampleFrom: '00' }, { sample: '0.1', sampleFrom: 'zz' }]) {
      expect(usage(() => contentScopeOf(bad))).toBe(true);
    }
    expect(examplesOf({})).toBe(10);
    expect(usage(() => examplesOf({ examples: '-1' }))).toBe(true);
  });

  it('pairs tables with the targets that apply them; unknown names are usage errors', () => {
    const config = parseConfigObject({
      controlStore: { database: 'pg' },
      databases: [{ name: 'pg', kind: 'postgres' }, { name: 'ms', kind: 'sqlserver' }],
      tables: [
        { name: 'A', source: 'ms', blob: { table: 'A' }, metadata: { table: 'AM', joinColumn: 'id' } },
        { name: 'B', source: 'ms', blob: { table: 'B' }, metadata: { table: 'BM', joinColumn: 'id' }, enabled: false },
      ],
      targets: [{ name: 'one', database: 'pg' }, { name: 'two', database: 'ms', tables: ['B'] }],
    }, 'test');
    const names = (pairs: ReturnType<typeof pairsOf>) => pairs.map((p) => `${p.table.name}→${p.target.name}`);
    expect(names(pairsOf(config))).toEqual(['A→one']);
    expect(names(pairsOf(config, ['B']))).toEqual(['B→one', 'B→two']);
    expect(names(pairsOf(config, ['B'], ['two']))).toEqual(['B→two']);
    expect(usage(() => pairsOf(config, ['C']))).toBe(true);
    expect(usage(() => pairsOf(config, undefined, ['three']))).toBe(true);
    expect(usage(() => pairsOf(config, ['A'], ['two']))).toBe(true);
    expect(usage(() => pairsOf(config, undefined, ['two']))).toBe(true);
  });
});
