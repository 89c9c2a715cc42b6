/**
 * The control store's SQL builders are pure: the schema is quoted, every value travels as a parameter (a sentinel
 * value never appears in the SQL text), and ticks are decimal strings, so no bigint passes through a Number.
 */
import { describe, expect, it } from 'vitest';
import { renderMigration } from '../../src/control/migrate.js';
import { migrationFiles } from '../../src/db/migrate.js';
import { analyzeRegistry, BATCH_STEPS, controlSql as sql, latestPerKey, type Query } from '../../src/control/store.js';

const SCHEMA = 'Hw_Control';
const QUOTED = '"Hw_Control"';
const SENTINEL = "x'); DROP TABLE runs; --";
const TICKS = 638000000000000001n;
const RUN = '4f9a0c0e-9a57-4c55-9d1b-2a1d1c6b7e01';

/** Every builder, called with the sentinel wherever a caller-supplied string goes and TICKS wherever ticks go. */
function everyQuery(): Record<string, Query> {
  const start = { table: SENTINEL, scope: SENTINEL, tenant: SENTINEL, window: { start: TICKS, end: TICKS }, endClampedBy: null, oldestTxVisible: true };
  const batch = {
    runId: RUN, table: SENTINEL, scope: SENTINEL, step: 'children' as const, batchNo: 3, rows: 10, bytes: 100, skipped: 1,
    lastPosition: { modifiedOn: TICKS, key: SENTINEL }, startedAt: new Date(0), status: 'failed' as const, error: SENTINEL,
  };
  const row = { key: SENTINEL, modifiedOn: TICKS, observed: TICKS, digest: Buffer.alloc(32), contentSha256: Buffer.from('ab', 'hex'), pathLocator: SENTINEL, chunkCount: 2 };
  return {
    insertRun: sql.insertRun(SCHEMA, { kind: 'poll', requestedBy: SENTINEL, host: SENTINEL, pid: 1, options: { s: SENTINEL, t: TICKS } }),
    finishRun: sql.finishRun(SCHEMA, RUN, 'failed', SENTINEL),
    selectRun: sql.selectRun(SCHEMA, RUN),
    selectRuns: sql.selectRuns(SCHEMA, { limit: 5, status: 'failed' }),
    selectRunTables: sql.selectRunTables(SCHEMA, RUN),
    selectRunBatches: sql.selectRunBatches(SCHEMA, RUN),
    insertRunTable: sql.insertRunTable(SCHEMA, RUN, start),
    reopenRunTable: sql.reopenRunTable(SCHEMA, RUN, SENTINEL, SENTINEL),
    selectRunTable: sql.selectRunTable(SCHEMA, RUN, SENTINEL, SENTINEL),
    finishRunTable: sql.finishRunTable(SCHEMA, RUN, SENTINEL, SENTINEL, 'failed', SENTINEL),
    insertBatch: sql.insertBatch(SCHEMA, batch),
    selectLastCompletedBatch: sql.selectLastCompletedBatch(SCHEMA, RUN, SENTINEL, SENTINEL),
    resetRun: sql.resetRun(SCHEMA, RUN),
    acquireLease: sql.acquireLease(SCHEMA, SENTINEL, SENTINEL, SENTINEL, SENTINEL, 60),
    renewLease: sql.renewLease(SCHEMA, SENTINEL, SENTINEL, SENTINEL, 60),
    releaseLease: sql.releaseLease(SCHEMA, SENTINEL, SENTINEL, SENTINEL),
    advanceHighWater: sql.advanceHighWater(SCHEMA, SENTINEL, SENTINEL, SENTINEL, TICKS, RUN),
    selectWatermark: sql.selectWatermark(SCHEMA, SENTINEL, SENTINEL),
    selectWatermarks: sql.selectWatermarks(SCHEMA),
    selectPublished: sql.selectPublished(SCHEMA, SENTINEL, [SENTINEL]),
    selectPublishedPathLocators: sql.selectPublishedPathLocators(SCHEMA, SENTINEL, [SENTINEL]),
    upsertPublished: sql.upsertPublished(SCHEMA, SENTINEL, RUN, [row]),
    selectRegisteredKeysAfter: sql.selectRegisteredKeysAfter(SCHEMA, SENTINEL, SENTINEL, 10),
    selectSweepCursor: sql.selectSweepCursor(SCHEMA, SENTINEL, 'deletes'),
    upsertSweepCursor: sql.upsertSweepCursor(SCHEMA, SENTINEL, SENTINEL, 'late-arrivals'),
    registerPending: sql.registerPending(SCHEMA, SENTINEL, RUN, [{ key: SENTINEL, modifiedOn: TICKS, pathLocator: SENTINEL }]),
    insertPendingSend: sql.insertPendingSend(SCHEMA, SENTINEL, RUN, [{ key: SENTINEL, modifiedOn: TICKS, pathLocator: SENTINEL }]),
    deletePendingSends: sql.deletePendingSends(SCHEMA, SENTINEL, ['1']),
    replayPendingSends: sql.replayPendingSends(SCHEMA, SENTINEL),
    markDeleted: sql.markDeleted(SCHEMA, SENTINEL, RUN, [{ key: SENTINEL, modifiedOn: TICKS, observed: TICKS }]),
    setNullModifiedOn: sql.setNullModifiedOn(SCHEMA, RUN, SENTINEL, SENTINEL, 3),
    lockObservations: sql.lockObservations(SCHEMA, SENTINEL),
    nextObservation: sql.nextObservation(SCHEMA, SENTINEL),
    insertRowFailure: sql.insertRowFailure(SCHEMA, RUN, SENTINEL, SENTINEL, TICKS, SENTINEL),
    selectRowFailures: sql.selectRowFailures(SCHEMA, RUN),
    selectStatus: sql.selectStatus(SCHEMA),
  };
}

/** Values flattened one level (array parameters hold the batch columns). */
const flat = (q: Query): unknown[] => q.values.flatMap((v) => (Array.isArray(v) ? v : [v]));

describe('control store SQL builders', () => {
  it('cover every builder', () => {
    expect(Object.keys(everyQuery()).sort()).toEqual(Object.keys(sql).sort());
  });

  it('analyzes the registry of the quoted schema, on its lookup columns, with no values', () => {
    const q = analyzeRegistry(SCHEMA);
    expect(q.text).toBe(`ANALYZE ${QUOTED}.published (table_name, key, path_locator, deleted, acked)`);
    expect(q.values).toEqual([]);
  });

  it.each(Object.entries(everyQuery()))('%s qualifies every table with the quoted schema', (_name, q) => {
    const refs = [...q.text.matchAll(/\b(?:FROM|INTO|UPDATE|JOIN)\s+([^\s(),]+)/g)].map((m) => m[1]!);
    // Left out: unnest(...), LATERAL sub-queries, `DO UPDATE SET`, and the statement's own CTE names (lower-case words).
    const tables = refs.filter((r) => !['unnest', 'LATERAL', 'SET'].includes(r) && !/^[a-z]+$/.test(r));
    expect(tables.length).toBeGreaterThan(0);
    for (const table of tables) expect(table.startsWith(`${QUOTED}.`), table).toBe(true);
  });

  it.each(Object.entries(everyQuery()))('%s keeps values out of the SQL text', (_name, q) => {
    expect(q.text).not.toContain('DROP');
    expect(q.text).not.toContain(RUN);
    expect(q.text).not.toContain(TICKS.toString());
    const placeholders = new Set([...q.text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
    expect(placeholders.size).toBe(q.values.length);
    expect(Math.max(0, ...placeholders)).toBe(q.values.length);
  });

  it.each(Object.entries(everyQuery()))('%s passes ticks as decimal strings, never as bigint or number', (_name, q) => {
    for (const v of flat(q)) expect(typeof v).not.toBe('bigint');
    expect(flat(q)).not.toContain(Number(TICKS));
  });

  it('puts the caller values in the parameters', () => {
    const q = everyQuery();
    for (const name of ['finishRun', 'insertRunTable', 'finishRunTable', 'insertBatch', 'acquireLease', 'advanceHighWater', 'upsertPublished', 'registerPending', 'insertPendingSend', 'deletePendingSends', 'replayPendingSends', 'markDeleted', 'insertRowFailure', 'upsertSweepCursor', 'lockObservations', 'nextObservation', 'setNullModifiedOn']) {
      expect(flat(q[name]!), name).toContain(SENTINEL);
    }
    expect(flat(q.insertRunTable!)).toContain(TICKS.toString());
    expect(flat(q.insertBatch!)).toContain(TICKS.toString());
    expect(flat(q.advanceHighWater!)).toContain(TICKS.toString());
    expect(flat(q.upsertPublished!)).toContain(TICKS.toString());
    expect(flat(q.insertPendingSend!)).toContain(TICKS.toString());
    expect(flat(q.markDeleted!)).toContain(TICKS.toString());
    expect(flat(q.insertRowFailure!)).toContain(TICKS.toString());
    expect(JSON.parse(q.insertRun!.values[4] as string)).toEqual({ s: SENTINEL, t: TICKS.toString() });
  });

  it('sends the batch of a registry upsert as one array per column', () => {
    const q = sql.upsertPublished(SCHEMA, 'T', RUN, [
      { key: 'a', modifiedOn: null, observed: 7n, digest: Buffer.alloc(1), contentSha256: null, pathLocator: null, chunkCount: null },
      { key: 'b', modifiedOn: TICKS, observed: TICKS, digest: Buffer.alloc(3), contentSha256: Buffer.alloc(2), pathLocator: '/1/', chunkCount: 4 },
    ]);
    expect(q.text).toContain('unnest(');
    expect(q.values.slice(2)).toEqual([
      ['a', 'b'], [null, TICKS.toString()], ['7', TICKS.toString()], [null, Buffer.alloc(2)], [Buffer.alloc(1), Buffer.alloc(3)], [null, '/1/'], [null, 4],
    ]);
  });

  it('orders steps for resumption by the step order, passed as a parameter', () => {
    expect(BATCH_STEPS.slice(0, 6)).toEqual(['roots', 'missing-parents', 'children', 'nulls', 'deletes', 'late-arrivals']);
    const q = sql.selectLastCompletedBatch(SCHEMA, RUN, 'T', '*');
    expect(q.values).toContainEqual([...BATCH_STEPS]);
    expect(q.text).toMatch(/ORDER BY array_position\(\$4::text\[\], step\) DESC, batch_no DESC/);
  });

  it('reads the sweep from the start without a key condition', () => {
    const q = sql.selectRegisteredKeysAfter(SCHEMA, 'T', null, 10);
    expect(q.values).toEqual(['T', 10]);
    expect(q.text).not.toContain('$3');
  });

  it('refuses a schema that is not a plain identifier', () => {
    expect(() => sql.selectStatus('bad"schema')).toThrow(/invalid/);
    expect(() => sql.selectRun('x; DROP', RUN)).toThrow(/invalid/);
  });
});

describe('latestPerKey', () => {
  it('keeps the latest observed row of each key, the later one on a tie', () => {
    const rows = [
      { key: 'a', observed: 2n, n: 1 },
      { key: 'b', observed: 1n, n: 2 },
      { key: 'a', observed: 1n, n: 3 },
      { key: 'b', observed: 1n, n: 4 },
    ];
    expect(latestPerKey(rows).map((r) => r.n)).toEqual([1, 4]);
  });
});

describe('migration files', () => {
  it('orders numbered files and ignores templates', () => {
    const files = migrationFiles('/m', ['010_more.sql', 'blob-table.sql', '002_two.sql', '001_init.sql', 'README.md']);
    expect(files.map((f) => [f.version, f.name, f.path])).toEqual([
      [1, '001_init.sql', '/m/001_init.sql'], [2, '002_two.sql', '/m/002_two.sql'], [10, '010_more.sql', '/m/010_more.sql'],
    ]);
  });

  it('refuses two files with one version', () => {
    expect(() => migrationFiles('/m', ['001_a.sql', '01_b.sql'])).toThrow(/share version 1/);
  });

  it('renders placeholders as quoted identifiers and refuses unknown ones', () => {
    expect(renderMigration('CREATE TABLE {{schema}}.{{table}} ();', { schema: 'hw', table: 'ReferralAttachment' }))
      .toBe('CREATE TABLE "hw"."ReferralAttachment" ();');
    expect(() => renderMigration('SELECT {{nope}}', { schema: 'hw' })).toThrow(/\{\{nope\}\}/);
    expect(() => renderMigration('{{schema}}', { schema: 'a"b' })).toThrow(/invalid/);
  });
});
