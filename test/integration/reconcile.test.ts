import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { createPgPool } from '../../connectors/postgres/source.js';
import { PostgresWriter } from '../../consumers/postgres/writer.js';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { main } from '../../src/cli/main.js';
import { parseConfigObject } from '../../src/config/load.js';
import { buildSample, createBusinessUnits, insertRows, SOURCE_DDL } from '../../src/dev/demo/sample.js';
import { postgresSourceQueries } from '../../connectors/postgres/reconcile.js';
import { postgresTargetQueries } from '../../consumers/postgres/reconcile.js';
import type { Statement } from '../../src/ops/reconcile/side/postgres.js';
import { cellsOf, HEX_PREFIXES, reconcileTable, sideOf, type Cell, type ContentScope, type ReconcileSide } from '../../src/ops/reconcile/reconcile.js';
import { sourceSpec } from '../../src/wiring.js';
import { createTestDatabase, dropWhenPassed, type TestDatabase } from '../support/pg.js';

/**
 * `highwater reconcile` against the local PostgreSQL: a source built from the demo's sample data, a target made by
 * PostgresWriter.migrate() and filled with the source's rows by plain SQL (what the pipeline would have written),
 * then one difference of each kind, each of which the report must name exactly — and exit code 3; 0 when equal.
 */

const TENANT = 'gwent';
const SCHEMA = 'replica';
const TABLE = 'ReferralAttachment';

interface Fixture {
  readonly source: TestDatabase;
  readonly target: TestDatabase;
  readonly config: Record<string, unknown>;
  readonly file: string;
  readonly bus: string[];
}

async function fixture(name: string): Promise<Fixture> {
  const source = await createTestDatabase(`${name} source`);
  dropWhenPassed(source);
  const target = await createTestDatabase(`${name} target`);
  dropWhenPassed(target);
  await source.pool().query(SOURCE_DDL);
  const bus = await createBusinessUnits(source.pool(), 2);
  await insertRows(source.pool(), buildSample({ roots: 3, foldersPerRoot: 2, files: 60, largeFiles: 1 }, bus));
  const writer = new PostgresWriter(createPgPool(target.url, 2), { schema: SCHEMA, tables: [{ name: TABLE }] });
  await writer.migrate();
  await writer.close();
  await copyRows(source.pool(), target.pool());
  const config = {
    controlStore: { database: 'target', schema: 'highwater_control' },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: source.url, tenant: TENANT },
      { name: 'target', kind: 'postgres', connectionString: target.url },
    ],
    tables: [{
      name: TABLE,
      source: 'source',
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
    }],
    targets: [{ name: 'warehouse', database: 'target', schema: SCHEMA }],
    log: { level: 'error' },
  };
  const file = join(await mkdtemp(join(tmpdir(), 'hw-reconcile-')), 'highwater.yaml');
  await writeFile(file, JSON.stringify(config));
  return { source, target, config, file, bus };
}

const SOURCE_ROWS = `SELECT b.stream_id::text AS key, b.name, b.path_locator, b.parent_path_locator, b.is_directory, b.file_stream,
  (extract(epoch from m."ModifiedOn") * 10000000)::bigint::text AS ticks, m."OwningBusinessUnit"::text AS bu
  FROM demo."ReferralAttachment" b JOIN demo."cw_referralattachmentBase" m ON m.cw_referralattachmentid = b.stream_id`;

/** What the consumer would have written for these source rows (all of them, or the given keys). */
async function copyRows(source: pg.Pool, target: pg.Pool, keys?: string[]): Promise<void> {
  const { rows } = await source.query<{ key: string; name: string; path_locator: string; parent_path_locator: string | null; is_directory: boolean; file_stream: Buffer | null; ticks: string; bu: string }>(
    keys ? `${SOURCE_ROWS} WHERE b.stream_id::text = ANY($1::text[])` : SOURCE_ROWS, keys ? [keys] : []);
  for (const r of rows) {
    await target.query(
      `INSERT INTO ${SCHEMA}.${targetTableName(TABLE)} (tenant, key, name, path_locator, parent_path_locator, is_directory, size, content, content_sha256, modified_on_ticks, business_unit)
       VALUES ($1, $2, $3, $4, $5, $6, octet_length($7::bytea), $7::bytea, sha256($7::bytea), $8::bigint, $9)`,
      [TENANT, r.key, r.name, r.path_locator, r.parent_path_locator, r.is_directory, r.file_stream, r.ticks, r.bu]);
  }
}

async function reconcile(file: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const chunks: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
  try {
    const code = await main(['node', 'highwater', '--config', file, 'reconcile', ...args]);
    return { code, out: chunks.join('') };
  } finally {
    spy.mockRestore();
  }
}

interface JsonScope {
  businessUnit: string | null;
  source: { rows: number; latestModifiedOnTicks: string | null };
  target: { rows: number; latestModifiedOnTicks: string | null };
  checksum: { status: string };
  missing: { count: number; examples: string[] };
  extra: { count: number; examples: string[] };
  differing: { count: number; examples: { key: string; reasons: string[] }[] };
  orphans: { source: { count: number; examples: string[] }; target: { count: number; examples: string[] } };
  equal: boolean;
}
interface JsonReport { equal: boolean; tables: { table: string; target: string; tenant: string; equal: boolean; scopes: JsonScope[] }[] }

async function reconcileJson(file: string, ...args: string[]): Promise<{ code: number; report: JsonReport }> {
  const { code, out } = await reconcile(file, '--json', ...args);
  return { code, report: JSON.parse(out) as JsonReport };
}

function all(report: JsonReport): { missing: string[]; extra: string[]; differing: [string, string[]][]; sourceOrphans: string[]; targetOrphans: string[]; counts: Record<string, number> } {
  const scopes = report.tables.flatMap((t) => t.scopes);
  const keys = (pick: (s: JsonScope) => string[]) => scopes.flatMap(pick).sort();
  const count = (pick: (s: JsonScope) => number) => scopes.reduce((n, s) => n + pick(s), 0);
  return {
    missing: keys((s) => s.missing.examples),
    extra: keys((s) => s.extra.examples),
    differing: scopes.flatMap((s) => s.differing.examples.map((d): [string, string[]] => [d.key, d.reasons])).sort(),
    sourceOrphans: keys((s) => s.orphans.source.examples),
    targetOrphans: keys((s) => s.orphans.target.examples),
    counts: {
      missing: count((s) => s.missing.count), extra: count((s) => s.extra.count), differing: count((s) => s.differing.count),
      sourceOrphans: count((s) => s.orphans.source.count), targetOrphans: count((s) => s.orphans.target.count),
    },
  };
}

/** Files of the source, latest ModifiedOn first. */
async function files(source: pg.Pool): Promise<{ key: string; path: string; ticks: bigint; bu: string }[]> {
  const { rows } = await source.query<{ key: string; path_locator: string; ticks: string; bu: string }>(`${SOURCE_ROWS} WHERE NOT b.is_directory ORDER BY ticks DESC, key`);
  return rows.map((r) => ({ key: r.key, path: r.path_locator, ticks: BigInt(r.ticks), bu: r.bu }));
}

const target = `${SCHEMA}.${targetTableName(TABLE)}`;

describe('highwater reconcile (PostgreSQL source and target)', () => {
  it('exits 0 when equal, and names exactly each kind of difference with exit code 3', async () => {
    const f = await fixture('reconcile kinds');
    const equal = await reconcileJson(f.file);
    expect(equal.code).toBe(0);
    expect(equal.report.equal).toBe(true);
    const scopes = equal.report.tables[0]!.scopes;
    expect(scopes.map((s) => s.businessUnit).sort()).toEqual([...f.bus].sort());
    expect(scopes.reduce((n, s) => n + s.source.rows, 0)).toBe(3 + 6 + 60);
    for (const s of scopes) {
      expect(s.target).toEqual(s.source);
      expect(s.checksum.status).toBe('equal');
    }

    const [latest, changed, missing, orphaned] = await files(f.source.pool());
    const extra = randomUUID();
    const sourceOrphan = randomUUID();
    const t = f.target.pool();
    await t.query(`DELETE FROM ${target} WHERE key = $1`, [missing!.key]);
    await t.query(`INSERT INTO ${target} (tenant, key, name, path_locator, is_directory, modified_on_ticks, business_unit) VALUES ($1, $2, 'extra', '/extra/', true, 1, $3)`, [TENANT, extra, f.bus[0]]);
    await t.query(`UPDATE ${target} SET content = 'changed'::bytea, content_sha256 = sha256('changed'::bytea) WHERE key = $1`, [changed!.key]);
    await t.query(`UPDATE ${target} SET modified_on_ticks = modified_on_ticks - 10000000 WHERE key = $1`, [latest!.key]);
    await t.query(`UPDATE ${target} SET parent_path_locator = '/nowhere/' WHERE key = $1`, [orphaned!.key]);
    // A child whose parent is gone at the source too: an orphan on both sides, replicated faithfully.
    await insertRows(f.source.pool(), [{ id: sourceOrphan, name: 'lost', path: '/404/1/', parent: '/404/', isDirectory: false, content: Buffer.from('lost'), modifiedOnSql: "timestamptz '2020-01-01 00:00:00+00'", bu: f.bus[1]! }]);
    await copyRows(f.source.pool(), t, [sourceOrphan]);

    const found = await reconcileJson(f.file);
    expect(found.code).toBe(3);
    expect(found.report.equal).toBe(false);
    const seen = all(found.report);
    expect(seen.missing).toEqual([missing!.key]);
    expect(seen.extra).toEqual([extra]);
    expect(seen.differing).toEqual([[changed!.key, ['content']], [latest!.key, ['modifiedOn']]].sort());
    expect(seen.sourceOrphans).toEqual([sourceOrphan]);
    expect(seen.targetOrphans).toEqual([orphaned!.key, sourceOrphan].sort());
    expect(seen.counts).toEqual({ missing: 1, extra: 1, differing: 2, sourceOrphans: 1, targetOrphans: 2 });
    const latestScope = found.report.tables[0]!.scopes.find((s) => s.businessUnit === latest!.bu)!;
    expect(BigInt(latestScope.target.latestModifiedOnTicks!)).toBeLessThan(BigInt(latestScope.source.latestModifiedOnTicks!));
    expect(latestScope.checksum.status).toBe('different');

    // A sample of no content still compares every key and ModifiedOn; the changed content goes unseen.
    const none = await reconcileJson(f.file, '--sample', '0');
    expect(none.code).toBe(3);
    expect(all(none.report).differing).toEqual([[latest!.key, ['modifiedOn']]]);
    expect(none.report.tables[0]!.scopes.every((s) => s.checksum.status === 'not-checked')).toBe(true);
    // A key range holding only the changed row's prefix finds it.
    const one = await reconcileJson(f.file, '--sample', '0.001', '--sample-from', changed!.key.slice(0, 2));
    expect(all(one.report).differing).toContainEqual([changed!.key, ['content']]);

    const text = await reconcile(f.file, '--examples', '5');
    expect(text.code).toBe(3);
    for (const key of [missing!.key, extra, changed!.key, latest!.key, orphaned!.key]) expect(text.out).toContain(key);
    expect(text.out).toMatch(/result: DIFFERENT/);
  });

  it('cuts large differing buckets finer and finds the same; its digests match the reference', async () => {
    const f = await fixture('reconcile drill');
    const t = f.target.pool();
    await t.query(`DELETE FROM ${target} WHERE key IN (SELECT key FROM ${target} WHERE NOT is_directory ORDER BY key LIMIT 7)`);
    await t.query(`UPDATE ${target} SET modified_on_ticks = modified_on_ticks + 1 WHERE key IN (SELECT key FROM ${target} WHERE NOT is_directory ORDER BY key DESC LIMIT 3)`);
    const config = parseConfigObject(f.config, 'test');
    const table = config.tables[0]!;
    const run = (pool: pg.Pool) => async (_what: string, stmt: Statement) => (await pool.query<Record<string, unknown>>(stmt.text, stmt.values as unknown[])).rows;
    const source: ReconcileSide = sideOf(postgresSourceQueries(sourceSpec(config, table), { businessUnit: null, excludedKeys: [] }), run(f.source.pool()));
    const targetSide: ReconcileSide = sideOf(postgresTargetQueries({ schema: SCHEMA, table: targetTableName(TABLE) }, TENANT), run(t));
    const content: ContentScope = { kind: 'all' };

    const coarse = await reconcileTable(source, targetSide, { content, examples: 100, maxBucketRows: 1_000_000 });
    const fine = await reconcileTable(source, targetSide, { content, examples: 100, maxBucketRows: 1 });
    expect(fine.buckets.drilled).toBeGreaterThan(0);
    expect(coarse.buckets.drilled).toBe(0);
    const summary = (c: typeof fine) => c.scopes.map((s) => [s.businessUnit, s.missing, s.extra, s.differing.count, s.differing.examples.map((d) => d.key)]);
    expect(summary(fine)).toEqual(summary(coarse));
    expect(coarse.scopes.reduce((n, s) => n + s.missing.count, 0)).toBe(7);
    expect(coarse.scopes.reduce((n, s) => n + s.differing.count, 0)).toBe(3);

    // The databases' digests are the reference digestOf over the same row versions, on both sides.
    for (const side of [source, targetSide]) {
      for (const scope of [content, { kind: 'sample', fraction: 0.5, prefixes: HEX_PREFIXES.slice(0, 128) } as const]) {
        const rows = await side.rows({ prefixLength: 2, buckets: HEX_PREFIXES, content: scope });
        const order = (cells: Cell[]) => [...cells].sort((a, b) => `${a.businessUnit}${a.bucket}`.localeCompare(`${b.businessUnit}${b.bucket}`));
        expect(order(await side.summarize({ prefixLength: 2, within: null, content: scope }))).toEqual(order(cellsOf(rows, 2)));
      }
    }
  });

  it('exits 2 on usage errors and 1 when a table cannot be read', async () => {
    const f = await fixture('reconcile errors');
    expect((await reconcile(f.file, '--table', 'nope')).code).toBe(2);
    expect((await reconcile(f.file, '--target', 'nope')).code).toBe(2);
    expect((await reconcile(f.file, '--sample', '2')).code).toBe(2);
    expect((await reconcile(f.file, '--sample', '0.5', '--all')).code).toBe(2);
    const missingSchema = join(await mkdtemp(join(tmpdir(), 'hw-reconcile-')), 'highwater.yaml');
    await writeFile(missingSchema, JSON.stringify({ ...f.config, targets: [{ name: 'warehouse', database: 'target', schema: 'not_there' }] }));
    expect((await reconcile(missingSchema)).code).toBe(1);
  });
});
