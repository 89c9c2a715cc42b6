/**
 * The control store against a real PostgreSQL: every test creates its own database (dropped only when it passed),
 * migrates a schema with a mixed-case name (so quoting is exercised) and checks one behaviour the poller relies on.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ControlStore, type PublishedRow, type TableStart } from '../../src/control/store.js';
import { HighwaterError } from '../../src/errors.js';
import { PublishedPaths } from '../../src/poll/published-paths.js';
import { createTestDatabase, dropWhenPassed, type TestDatabase } from '../support/pg.js';

const SCHEMA = 'Hw_Control';
/** Bigger than 2^53: a Number would round it. */
const BIG_TICKS = 638000000000000001n;

async function controlStore(testName: string): Promise<{ db: TestDatabase; store: ControlStore }> {
  const db = await createTestDatabase(`control ${testName}`);
  dropWhenPassed(db);
  const store = new ControlStore(db.pool(), SCHEMA);
  await store.migrate();
  return { db, store };
}

/** A second process: its own pool and store on the same database, closed when the test ends. */
async function withOtherProcess<T>(db: TestDatabase, work: (store: ControlStore) => Promise<T>, max = 10): Promise<T> {
  const pool = new pg.Pool({ connectionString: db.url, max });
  // pool.end() resolves before its sessions are gone; the test's DROP DATABASE … WITH (FORCE) then terminates them
  // (57P01): without a listener that error is uncaught and fails the run after every test passed.
  pool.on('error', (err: Error & { code?: string }) => {
    if (err.code !== '57P01') console.warn(`[control-store test] idle connection to ${db.name} failed: ${err.message}`);
  });
  try {
    return await work(new ControlStore(pool, SCHEMA));
  } finally {
    await pool.end();
  }
}

function tableStart(overrides: Partial<TableStart> = {}): TableStart {
  return {
    table: 'ReferralAttachment', scope: '*', tenant: 'gwent',
    window: { start: 637000000000000000n, end: BIG_TICKS }, endClampedBy: null, oldestTxVisible: true,
    ...overrides,
  };
}

/** A version observed when it was modified (unless `observed` is given), with a digest of its own. */
function published(key: string, modifiedOn: bigint, extra: Partial<PublishedRow> = {}): PublishedRow {
  const digest = Buffer.alloc(32, `${key}@${modifiedOn}`);
  return { key, modifiedOn, observed: modifiedOn, digest, contentSha256: Buffer.alloc(32, key.length), pathLocator: `/${key}/`, chunkCount: null, ...extra };
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(HighwaterError);
  expect((error as HighwaterError).code).toBe(code);
}

describe('control store', () => {
  it('migrates once: a second migration, or two at the same time, change nothing', async ({ task }) => {
    const db = await createTestDatabase(`control ${task.name}`);
    dropWhenPassed(db);
    const concurrent = await withOtherProcess(db, async (other) =>
      Promise.all([new ControlStore(db.pool(), SCHEMA).migrate(), other.migrate()]));
    expect(concurrent.map((r) => r.applied).sort()).toEqual([[], [1, 2, 3, 4, 5]]);

    const again = await new ControlStore(db.pool(), SCHEMA).migrate();
    expect(again.applied).toEqual([]);
    const tables = await db.pool().query<{ table_name: string }>(
      'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [SCHEMA]);
    expect(tables.rows.map((r) => r.table_name)).toEqual([
      'deletion_log', 'observations', 'pending_sends', 'published', 'row_failures', 'run_batches', 'run_tables', 'runs', 'schema_migrations', 'sweep_cursors', 'watermarks',
    ]);
    const versions = await db.pool().query(`SELECT version, name FROM "${SCHEMA}".schema_migrations ORDER BY version`);
    expect(versions.rows).toEqual([{ version: 1, name: '001_init.sql' }, { version: 2, name: '002_late_arrival_sweep.sql' },
      { version: 3, name: '003_observations.sql' }, { version: 4, name: '004_registry_fillfactor.sql' },
      { version: 5, name: '005_pending_sends.sql' }]);
    const { rows: options } = await db.pool().query(`SELECT reloptions FROM pg_class WHERE oid = '"${SCHEMA}".published'::regclass`);
    expect(options[0].reloptions).toEqual(['fillfactor=70']);
  });

  it('refuses a schema migrated by a newer highwater, changing nothing', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    await db.pool().query(`INSERT INTO "${SCHEMA}".schema_migrations (version, name) VALUES (999, '999_from_the_future.sql')`);
    const error = await store.migrate().then(() => null, (e: unknown) => e);
    expect(error).toBeInstanceOf(HighwaterError);
    expect((error as HighwaterError).code).toBe('SCHEMA_TOO_NEW');
    expect((error as HighwaterError).message).toMatch(/999_from_the_future\.sql.*005_pending_sends\.sql/);
  });

  it('gives a lease to exactly one of several pollers asking at once', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    const owners = Array.from({ length: 8 }, (_, i) => `poller-${i}`);
    const results = await withOtherProcess(db, (other) =>
      Promise.all(owners.map((owner, i) => (i % 2 === 0 ? store : other).acquireLease('ClientAttachment', '*', 'gwent', owner, 60))));

    const winners = results.filter((r) => r.acquired);
    expect(winners).toHaveLength(1);
    const holder = winners[0]!.holder;
    expect(owners).toContain(holder);
    for (const loser of results.filter((r) => !r.acquired)) {
      expect(loser.holder).toBe(holder);
      expect(loser.expiresAt).toBeInstanceOf(Date);
    }
    // The holder may take it again (a restart of the same owner); nobody else may.
    expect((await store.acquireLease('ClientAttachment', '*', 'gwent', holder!, 60)).acquired).toBe(true);
    expect((await store.acquireLease('ClientAttachment', '*', 'gwent', 'someone-else', 60)).acquired).toBe(false);
    // Another scope of the same table is a different lease.
    expect((await store.acquireLease('ClientAttachment', 'bu-1', 'gwent', 'someone-else', 60)).acquired).toBe(true);
  });

  it('lets an expired lease be taken over; the old owner can then neither renew nor advance', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll', requestedBy: 'test' });
    expect((await store.acquireLease('T', '*', '', 'old', 60)).acquired).toBe(true);
    expect(await store.renewLease('T', '*', 'old', 60)).toBe(true);

    // Expire it by the database's clock.
    await db.pool().query(`UPDATE "${SCHEMA}".watermarks SET lease_expires_at = clock_timestamp() - interval '1 second'`);
    const taken = await store.acquireLease('T', '*', '', 'new', 60);
    expect(taken).toMatchObject({ acquired: true, holder: 'new', highWater: null });

    expect(await store.renewLease('T', '*', 'old', 60)).toBe(false);
    expect(await store.advanceHighWater('T', '*', 'old', 100n, runId)).toBe(false);
    expect(await store.releaseLease('T', '*', 'old')).toBe(false);
    expect((await store.acquireLease('T', '*', '', 'old', 60)).acquired).toBe(false);
    expect(await store.advanceHighWater('T', '*', 'new', 100n, runId)).toBe(true);
    expect((await store.watermark('T', '*'))?.leaseOwner).toBe('new');

    // A short lease also expires by itself.
    expect(await store.releaseLease('T', '*', 'new')).toBe(true);
    expect((await store.acquireLease('T', '*', '', 'brief', 0.2)).acquired).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await store.renewLease('T', '*', 'brief', 60)).toBe(false);
    expect(await store.acquireLease('T', '*', '', 'next', 60)).toMatchObject({ acquired: true, highWater: 100n });
  });

  it('moves the high-watermark only forward and only for the lease holder', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    await store.acquireLease('T', '*', 't1', 'me', 60);
    expect(await store.advanceHighWater('T', '*', 'me', BIG_TICKS, runId)).toBe(true);
    const first = await store.watermark('T', '*');
    expect(first).toMatchObject({ highWater: BIG_TICKS, lastRunId: runId, tenant: 't1' });

    expect(await store.advanceHighWater('T', '*', 'me', BIG_TICKS - 1n, runId)).toBe(true);
    expect((await store.watermark('T', '*'))?.highWater).toBe(BIG_TICKS);
    expect((await store.watermark('T', '*'))?.lastAdvancedAt).toEqual(first?.lastAdvancedAt);

    expect(await store.advanceHighWater('T', '*', 'intruder', BIG_TICKS + 10n, runId)).toBe(false);
    expect(await store.advanceHighWater('Other', '*', 'me', BIG_TICKS + 10n, runId)).toBe(false);
    expect((await store.watermark('T', '*'))?.highWater).toBe(BIG_TICKS);

    expect(await store.advanceHighWater('T', '*', 'me', BIG_TICKS + 1n, runId)).toBe(true);
    await store.releaseLease('T', '*', 'me');
    expect(await store.advanceHighWater('T', '*', 'me', BIG_TICKS + 2n, runId)).toBe(false);
    expect(await store.acquireLease('T', '*', 't1', 'me-again', 60)).toMatchObject({ acquired: true, highWater: BIG_TICKS + 1n });
    expect(await store.watermarks()).toEqual([expect.objectContaining({ table: 'T', scope: '*', highWater: BIG_TICKS + 1n, leaseOwner: 'me-again' })]);
  });

  it('records batches with their counts and finds the most advanced completed one across steps', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll', requestedBy: 'test', options: { tables: ['T'], big: BIG_TICKS } });
    await store.startTable(runId, tableStart({ table: 'T' }));
    expect(await store.lastCompletedBatch(runId, 'T', '*')).toBeNull();

    const batch = { runId, table: 'T', scope: '*', bytes: 10, skipped: 1, startedAt: new Date(), status: 'completed' as const };
    const at = (n: bigint, key: string) => ({ modifiedOn: n, key });
    // Alphabetically 'roots' > 'missing-parents' > 'children'; the step order must win, not the name.
    expect(await store.recordBatch({ ...batch, step: 'roots', batchNo: 1, rows: 5, lastPosition: at(1n, 'r1') })).toBe(true);
    expect(await store.recordBatch({ ...batch, step: 'roots', batchNo: 2, rows: 5, lastPosition: at(2n, 'r2') })).toBe(true);
    expect(await store.lastCompletedBatch(runId, 'T', '*')).toEqual({ step: 'roots', batchNo: 2, lastPosition: at(2n, 'r2') });
    await store.recordBatch({ ...batch, step: 'missing-parents', batchNo: 1, rows: 2, lastPosition: at(BIG_TICKS, 'p"1,{x}') });
    expect(await store.lastCompletedBatch(runId, 'T', '*')).toEqual({ step: 'missing-parents', batchNo: 1, lastPosition: at(BIG_TICKS, 'p"1,{x}') });
    await store.recordBatch({ ...batch, step: 'children', batchNo: 1, rows: 3, lastPosition: at(5n, 'c1') });
    await store.recordBatch({ ...batch, step: 'children', batchNo: 2, rows: 3, lastPosition: at(6n, 'c2') });
    // A failed batch is not a checkpoint and its counts are not added.
    await store.recordBatch({ ...batch, step: 'children', batchNo: 3, rows: 99, lastPosition: null, status: 'failed', error: 'broker gone' });
    expect(await store.lastCompletedBatch(runId, 'T', '*')).toEqual({ step: 'children', batchNo: 2, lastPosition: at(6n, 'c2') });
    // Recording a completed batch again (a retried call) changes nothing.
    expect(await store.recordBatch({ ...batch, step: 'children', batchNo: 2, rows: 3, lastPosition: at(6n, 'c2') })).toBe(false);

    let table = await store.getTable(runId, 'T', '*');
    expect(table).toMatchObject({ rowsPublished: 18, bytesPublished: 50, rowsSkippedUnchanged: 5, tombstones: 0, rowsFailed: 0 });

    // The failed batch redone: replaced and counted once.
    expect(await store.recordBatch({ ...batch, step: 'children', batchNo: 3, rows: 4, failed: 1, lastPosition: at(7n, 'c3') })).toBe(true);
    await store.recordBatch({ ...batch, step: 'deletes', batchNo: 1, rows: 2, bytes: 0, skipped: 0, lastPosition: null });
    expect(await store.lastCompletedBatch(runId, 'T', '*')).toEqual({ step: 'deletes', batchNo: 1, lastPosition: null });
    table = await store.getTable(runId, 'T', '*');
    expect(table).toMatchObject({ rowsPublished: 22, bytesPublished: 60, rowsSkippedUnchanged: 6, tombstones: 2, rowsFailed: 1 });

    const run = await store.getRun(runId);
    expect(run.options).toEqual({ tables: ['T'], big: BIG_TICKS.toString() });
    expect(run.batches.map((b) => `${b.step}#${b.batchNo}:${b.status}`)).toEqual([
      'roots#1:completed', 'roots#2:completed', 'missing-parents#1:completed',
      'children#1:completed', 'children#2:completed', 'children#3:completed', 'deletes#1:completed',
    ]);
    expect(run.batches[2]?.lastPosition).toEqual(at(BIG_TICKS, 'p"1,{x}'));

    // A batch of a table the run never started is refused.
    await expectCode(store.recordBatch({ ...batch, table: 'Unstarted', step: 'roots', batchNo: 1, rows: 1, lastPosition: null }), 'DB_CONSTRAINT');
  });

  it('keeps the original window when a run resumes a table', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const original = { start: 100n, end: BIG_TICKS };
    const first = await store.startTable(runId, tableStart({ window: original, endClampedBy: 'oldest-open-transaction', oldestTxVisible: true }));
    expect(first).toMatchObject({ resumed: false, window: original, status: 'running', endClampedBy: 'oldest-open-transaction', oldestTxVisible: true });
    expect(await store.finishTable(runId, first.table, '*', { status: 'failed', error: 'source went away' })).toBe(true);
    expect(await store.getTable(runId, first.table, '*')).toMatchObject({ status: 'failed', error: 'source went away' });

    const resumed = await store.startTable(runId, tableStart({ window: { start: 500n, end: BIG_TICKS + 1000n }, endClampedBy: null, oldestTxVisible: false }));
    expect(resumed).toMatchObject({ resumed: true, window: original, status: 'running', error: null, finishedAt: null, endClampedBy: 'oldest-open-transaction' });

    // A table that completed stays completed, so the resuming poller can skip it.
    await store.finishTable(runId, first.table, '*', { status: 'completed' });
    expect(await store.startTable(runId, tableStart())).toMatchObject({ resumed: true, status: 'completed', window: original });

    expect(await store.getTable(runId, 'Nope', '*')).toBeNull();
    expect(await store.finishTable(runId, 'Nope', '*', { status: 'failed', error: 'lease held' })).toBe(false);
  });

  it('runs: created, finished, listed, read back, and unknown ids refused', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const a = await store.createRun({ kind: 'poll', requestedBy: 'cron' });
    const b = await store.createRun({ kind: 'backfill', requestedBy: 'consumer', options: { keys: ['k1'] } });
    await store.startTable(a, tableStart());
    await store.recordBatch({ runId: a, table: tableStart().table, scope: '*', step: 'roots', batchNo: 1, rows: 3, bytes: 30, skipped: 0, lastPosition: { modifiedOn: 1n, key: 'k' }, startedAt: new Date(), status: 'completed' });
    await store.finishRun(a, 'completed');
    await store.finishRun(b, 'failed', 'it broke');

    const runA = await store.getRun(a);
    expect(runA).toMatchObject({ runId: a, kind: 'poll', status: 'completed', requestedBy: 'cron', pid: process.pid, error: null });
    expect(runA.finishedAt).toBeInstanceOf(Date);
    expect(runA.tables).toHaveLength(1);
    expect(runA.batches).toHaveLength(1);

    const all = await store.listRuns({ limit: 10 });
    expect(all.map((r) => r.runId)).toEqual([b, a]);
    expect(all[1]).toMatchObject({ tableCount: 1, rowsPublished: 3, bytesPublished: 30 });
    expect((await store.listRuns({ limit: 10, status: 'failed' })).map((r) => [r.runId, r.error])).toEqual([[b, 'it broke']]);
    expect(await store.listRuns({ limit: 1 })).toHaveLength(1);

    await expectCode(store.getRun('00000000-0000-4000-8000-000000000000'), 'RUN_NOT_FOUND');
    await expectCode(store.getRun('not-a-uuid'), 'RUN_NOT_FOUND');
    await expectCode(store.finishRun('00000000-0000-4000-8000-000000000000', 'failed'), 'RUN_NOT_FOUND');
  });

  it('resets a run: batches, tables and failures gone, running again from a fresh window', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    await store.startTable(runId, tableStart({ window: { start: 1n, end: 2n } }));
    await store.recordBatch({ runId, table: tableStart().table, scope: '*', step: 'roots', batchNo: 1, rows: 1, bytes: 1, skipped: 0, lastPosition: { modifiedOn: 2n, key: 'a' }, startedAt: new Date(), status: 'completed' });
    await store.recordRowFailure(runId, tableStart().table, 'big', BIG_TICKS, 'BLOB_TOO_LARGE');
    await store.finishRun(runId, 'failed', 'boom');

    await store.resetRun(runId);
    const run = await store.getRun(runId);
    expect(run).toMatchObject({ status: 'running', error: null, finishedAt: null, tables: [], batches: [] });
    expect(await store.lastCompletedBatch(runId, tableStart().table, '*')).toBeNull();
    expect(await store.rowFailures(runId)).toEqual([]);
    expect(await store.startTable(runId, tableStart({ window: { start: 5n, end: 9n } }))).toMatchObject({ resumed: false, window: { start: 5n, end: 9n } });

    await expectCode(store.resetRun('00000000-0000-4000-8000-000000000000'), 'RUN_NOT_FOUND');
  });

  // Regression (the committed full-size bench, a 100k-row tree): the poller's pipeline registers the next read's keys
  // as pending while the last send's versions are recorded; the two statements locked overlapping keys in their
  // input order, and the poll failed with "deadlock detected". They lock in key order now.
  it('registry: pending registration and recording of overlapping keys in opposite orders, at once, never deadlock', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const keys = Array.from({ length: 3000 }, (_, i) => `key-${String(i).padStart(5, '0')}`);
    await store.recordPublished('T', runId, keys.map((k) => published(k, 1n)));
    const reversed = [...keys].reverse();
    for (let round = 2n; round < 8n; round++) {
      // Each side updates every row (a newer version; a greater sent ModifiedOn), so each takes every row lock.
      await Promise.all([
        store.registerPending('T', runId, keys.map((key) => ({ key, modifiedOn: round * 10n, pathLocator: `/${key}/` }))),
        store.recordPublished('T', runId, reversed.map((k) => published(k, round))),
        store.registerPending('T', runId, reversed.map((key) => ({ key, modifiedOn: round * 10n + 1n, pathLocator: `/${key}/` }))),
      ]);
    }
    const found = await store.lookupPublished('T', [keys[0]!, keys.at(-1)!]);
    expect(found.get(keys[0]!)?.modifiedOn).toBe(7n);
  });

  // A first send's keys are registered as one pending send rather than one entry each (migration 005); a poller
  // stopped before recording them leaves the pending send, and the next lease holder replays it: the registry must
  // then hold exactly what registerPending would have written, so the delete sweep walks those keys.
  it('registry: replaying pending sends registers their keys as registerPending does; cleared ones are not replayed', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const entry = (key: string, modifiedOn: bigint) => ({ key, modifiedOn, pathLocator: `/${key}/` });
    for (const table of ['viaSends', 'viaPending']) {
      await store.recordPublished(table, runId, [published('acked', 5n), published('gone', 4n)]);
      await store.recordDeletions(table, runId, [{ key: 'gone', modifiedOn: 4n, observed: 40n }]);
    }
    const batches = [[entry('new', 3n), entry('acked', 7n)], [entry('gone', 6n), entry('new', 9n)]];
    for (const rows of batches) await store.registerPendingSend('viaSends', runId, rows);
    const cleared = await store.registerPendingSend('viaSends', runId, [entry('cleared', 1n)]);
    await store.clearPendingSends('viaSends', [cleared!]);
    await store.registerPendingSend('Other', runId, [entry('elsewhere', 1n)]);
    for (const rows of batches) await store.registerPending('viaPending', runId, rows);

    expect(await store.lookupPublished('viaSends', ['new'])).toEqual(new Map()); // not in the registry before the replay
    expect(await store.replayPendingSends('viaSends')).toBe(3);
    expect(await store.replayPendingSends('viaSends')).toBe(0);
    const keys = ['new', 'acked', 'gone', 'cleared'];
    const viaSends = await store.lookupPublished('viaSends', keys);
    expect(viaSends).toEqual(await store.lookupPublished('viaPending', keys));
    expect(viaSends.get('new')).toMatchObject({ acked: false, deleted: false, maxSentModifiedOn: 9n });
    expect(viaSends.get('acked')).toMatchObject({ acked: true, modifiedOn: 5n, maxSentModifiedOn: 7n });
    expect(viaSends.get('gone')).toMatchObject({ acked: false, deleted: false });
    expect(await store.registeredKeysAfter('viaSends', null, 10)).toEqual(['acked', 'gone', 'new']);
    expect(await store.replayPendingSends('Other')).toBe(1);
  });

  // Regression (the full-size 100k-row tree poll): with autovacuum off, or before its first pass, the registry had
  // no statistics and a page's `= ANY(...)` lookups of hundreds of keys or paths were planned as matching every row.
  it('registry: analyzed by the poller as it grows, not on every registration', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const estimate = async (): Promise<number> => {
      const { rows } = await db.pool().query(`SELECT reltuples::int AS n FROM pg_class WHERE oid = '"Hw_Control".published'::regclass`);
      return Number(rows[0].n);
    };
    const pending = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => ({ key: `k${from + i}`, modifiedOn: 1n, pathLocator: `/${from + i}/` }));
    expect(await estimate()).toBe(-1);
    await store.registerPending('T', runId, pending(0, 1500));
    expect(await estimate()).toBe(-1);
    await store.registerPending('T', runId, pending(1500, 1000));
    expect(await estimate()).toBe(2500);
    await store.registerPending('T', runId, pending(2500, 500));
    expect(await estimate()).toBe(2500);
  });

  it('registry: records and looks up versions exactly, never moving a key backwards', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    // Keys that need escaping inside a PostgreSQL array literal, and one that spells NULL.
    const awkward = ['k"quote', 'a,b', 'back\\slash', '{brace}', 'NULL', 'ünï cødé', ' padded '];
    const rows = [
      published('k1', BIG_TICKS, { chunkCount: 3 }),
      published('k2', 5n, { contentSha256: null, pathLocator: null }),
      ...awkward.map((k, i) => published(k, BigInt(i + 1))),
    ];
    expect(await store.recordPublished('T', runId, rows)).toBe(rows.length);

    const found = await store.lookupPublished('T', ['k1', 'k2', 'missing', ...awkward]);
    expect([...found.keys()].sort()).toEqual(['k1', 'k2', ...awkward].sort());
    expect(found.get('k1')).toEqual({
      modifiedOn: BIG_TICKS, observed: BIG_TICKS, contentSha256: Buffer.alloc(32, 2), digest: rows[0]!.digest, pathLocator: '/k1/', chunkCount: 3,
      deleted: false, acked: true, maxSentModifiedOn: BIG_TICKS,
    });
    expect(found.get('k2')).toMatchObject({ modifiedOn: 5n, contentSha256: null, pathLocator: null, chunkCount: null, deleted: false, acked: true });
    expect(found.get('NULL')?.modifiedOn).toBe(5n);
    expect(await store.lookupPublished('Other', ['k1'])).toEqual(new Map());
    expect(await store.lookupPublished('T', [])).toEqual(new Map());

    // Older ModifiedOn, even observed later: ignored. The same observation again: ignored. The same ModifiedOn
    // observed later (content changed, ModifiedOn did not): taken. Newer: taken.
    expect(await store.recordPublished('T', runId, [published('k1', BIG_TICKS - 1n, { chunkCount: null, observed: BIG_TICKS + 9n })])).toBe(0);
    expect(await store.recordPublished('T', runId, [published('k1', BIG_TICKS, { chunkCount: 3 })])).toBe(0);
    expect((await store.lookupPublished('T', ['k1'])).get('k1')).toMatchObject({ modifiedOn: BIG_TICKS, chunkCount: 3 });
    expect(await store.recordPublished('T', runId, [published('k2', 5n, { contentSha256: Buffer.alloc(32, 9), observed: 4n })])).toBe(0);
    expect(await store.recordPublished('T', runId, [published('k2', 5n, { contentSha256: Buffer.alloc(32, 9), observed: 6n })])).toBe(1);
    expect((await store.lookupPublished('T', ['k2'])).get('k2')).toMatchObject({ observed: 6n, contentSha256: Buffer.alloc(32, 9) });
    expect(await store.recordPublished('T', runId, [published('k1', BIG_TICKS + 1n, { pathLocator: '/moved/' })])).toBe(1);
    expect((await store.lookupPublished('T', ['k1'])).get('k1')).toMatchObject({ modifiedOn: BIG_TICKS + 1n, pathLocator: '/moved/', chunkCount: null });

    // The same key twice in one batch: the later version wins, whatever the order.
    expect(await store.recordPublished('T', runId, [published('dup', 9n), published('dup', 7n), published('dup', 8n)])).toBe(1);
    expect((await store.lookupPublished('T', ['dup'])).get('dup')?.modifiedOn).toBe(9n);

    expect(await store.publishedPathLocators('T', ['/moved/', '/k1/', '/a,b/', '/nowhere/'])).toEqual(new Set(['/moved/', '/a,b/']));
    expect(await store.publishedPathLocators('T', [])).toEqual(new Set());
  });

  it('deletions mark the registry and the log once; the sweep walks keys with a cursor', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const keys = ['a', 'b', 'c', 'd', 'e'];
    await store.recordPublished('T', runId, keys.map((k) => published(k, BIG_TICKS)));
    await store.recordPublished('U', runId, [published('a', 1n)]);

    expect(await store.sweepCursor('T')).toBeNull();
    const firstRange = await store.registeredKeysAfter('T', null, 2);
    expect(firstRange).toEqual(['a', 'b']);
    await store.setSweepCursor('T', firstRange.at(-1)!);
    expect(await store.sweepCursor('T')).toBe('b');
    expect(await store.registeredKeysAfter('T', 'b', 2)).toEqual(['c', 'd']);

    const gone = BIG_TICKS + 5n;
    expect(await store.recordDeletions('T', runId, [{ key: 'c', modifiedOn: BIG_TICKS, observed: gone }, { key: 'zz', modifiedOn: 1n, observed: gone }])).toEqual(['c']);
    // Repeated: nothing new is logged.
    expect(await store.recordDeletions('T', runId, [{ key: 'c', modifiedOn: BIG_TICKS, observed: gone + 1n }])).toEqual([]);
    // A delete observed before the registered version was observed is not a deletion of the row we published.
    expect(await store.recordDeletions('T', runId, [{ key: 'd', modifiedOn: BIG_TICKS, observed: BIG_TICKS - 1n }])).toEqual([]);
    expect((await store.lookupPublished('T', ['c'])).get('c')).toMatchObject({ deleted: true, modifiedOn: BIG_TICKS, observed: gone, maxSentModifiedOn: null });
    expect(await store.registeredKeysAfter('T', 'b', 2)).toEqual(['d', 'e']);
    expect(await store.publishedPathLocators('T', ['/c/', '/d/'])).toEqual(new Set(['/d/']));
    expect((await store.lookupPublished('U', ['a'])).get('a')?.deleted).toBe(false);
    const log = await db.pool().query(`SELECT table_name, key, modified_on_ticks, observed_ticks, run_id FROM "${SCHEMA}".deletion_log`);
    expect(log.rows).toEqual([{ table_name: 'T', key: 'c', modified_on_ticks: BIG_TICKS.toString(), observed_ticks: gone.toString(), run_id: runId }]);

    // The row comes back (a restore: its old ModifiedOn, observed after the delete): registered again.
    expect(await store.recordPublished('T', runId, [published('c', BIG_TICKS, { observed: gone + 2n })])).toBe(1);
    expect((await store.lookupPublished('T', ['c'])).get('c')).toMatchObject({ deleted: false, modifiedOn: BIG_TICKS, maxSentModifiedOn: BIG_TICKS });

    await store.setSweepCursor('T', null);
    expect(await store.sweepCursor('T')).toBeNull();
  });

  // The poller's PublishedPaths answers "is this path published?" without asking the registry. It stays true only if
  // the store tells its watchers of every write that can take a key off its path: random registrations, versions
  // (old and new, moved or not, refused as older), deletions and restores, then after each step every path the set
  // holds must be one the registry itself calls published.
  it('registry watchers: a PublishedPaths fed by the store never holds a path the registry does not call published', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    const paths = new PublishedPaths(100);
    const stop = store.watchRegistry('T', paths);
    const other = new PublishedPaths(40);
    const stopOther = store.watchRegistry('U', other);
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const KEYS = 40;
    const PATHS = 80;
    const key = () => `k${rand(KEYS)}`;
    const path = () => `/${rand(PATHS)}/`;
    // As the poller does, only some written rows are learned (its directories): a move of any other key is known
    // to the set only from the store's notice.
    const learned = (k: string): boolean => Number(k.slice(1)) % 2 === 0;
    let observed = 100n;
    let checked = 0;
    const op = async (): Promise<void> => {
      observed += 1n;
      const kind = rand(5);
      if (kind === 0) {
        await store.registerPending('T', runId, [{ key: key(), modifiedOn: BigInt(rand(50)), pathLocator: path() }]);
      } else if (kind === 1 || kind === 2) {
        // versions of random keys at random paths, some older than registered (the store refuses those)
        const rows = Array.from({ length: 1 + rand(3) }, () => published(key(), BigInt(rand(50)), { observed, pathLocator: path() }));
        await store.recordPublished('T', runId, rows, (written) => {
          for (const w of written) if (w.pathLocator !== null && learned(w.key)) paths.add(w.key, w.pathLocator);
        });
      } else if (kind === 3) {
        await store.recordDeletions('T', runId, [{ key: key(), modifiedOn: null, observed }]);
      } else {
        await store.publishedAtPaths('T', Array.from({ length: PATHS }, (_, i) => `/${i}/`), (found) => {
          for (const f of found) paths.add(f.key, f.pathLocator);
        });
      }
    };
    for (let step = 0; step < 400; step++) {
      // Two at once, as a checkpoint, a lookup and a delete of other work of the same process may be.
      await Promise.all([op(), op()]);
      // A write to another table tells nothing to this table's watcher.
      if (step % 10 === 0) await store.recordDeletions('U', runId, [{ key: key(), modifiedOn: null, observed }]);
      const all = Array.from({ length: PATHS }, (_, i) => `/${i}/`);
      const registry = await store.publishedPathLocators('T', all);
      for (const p of all) {
        if ((paths as unknown as { byPath: Map<string, string> }).byPath.has(p)) {
          checked++;
          expect(registry.has(p), `step ${step}: ${p} held as published`).toBe(true);
        }
      }
    }
    expect(checked).toBeGreaterThan(300); // the set held paths most of the time: the check was not vacuous
    stop();
    stopOther();
    // Once unwatched, nothing is told: a deletion leaves the (now stale) set as it was.
    const [held] = [...(paths as unknown as { byPath: Map<string, string> }).byPath.entries()];
    if (held) {
      await store.recordDeletions('T', runId, [{ key: held[1], modifiedOn: null, observed: observed + 1000n }]);
      expect(paths.has(held[0])).toBe(true);
    }
  });

  it('observations: stamped in order, never overlapping across processes, and a failed read leaves nothing held', async ({ task }) => {
    const { db, store } = await controlStore(task.name);
    const first = await store.observe('T', async () => 'a');
    expect(first.value).toBe('a');
    // A read that fails: its error comes out as it is, the lock and the connection are given back.
    const failure = new HighwaterError('DB_UNAVAILABLE', 'the read failed');
    await expect(store.observe('T', () => Promise.reject(failure))).rejects.toBe(failure);
    const second = await store.observe('T', async () => 'b');
    expect(second.observed).toBeGreaterThan(first.observed);
    // Another process observing the same table waits for this observation to end before it reads.
    const events: string[] = [];
    let release!: () => void;
    let started!: () => void;
    const reading = new Promise<void>((resolve) => { started = resolve; });
    const mine = store.observe('T', async () => {
      events.push('mine starts');
      started();
      await new Promise<void>((resolve) => { release = resolve; });
      events.push('mine ends');
    });
    await reading;
    const theirs = await withOtherProcess(db, async (other) => {
      const observing = other.observe('T', async () => { events.push('theirs reads'); });
      // Another table is not held by it.
      await other.observe('U', async () => undefined);
      release();
      return observing;
    });
    const ours = await mine;
    expect(events).toEqual(['mine starts', 'mine ends', 'theirs reads']);
    expect(theirs.observed).toBeGreaterThan(ours.observed);
    expect(ours.observed).toBeGreaterThan(second.observed);
    const { rows } = await db.pool().query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`);
    expect(rows[0]?.n).toBe(0);
  });

  it('records row failures and reports status per table and scope', async ({ task }) => {
    const { store } = await controlStore(task.name);
    const runId = await store.createRun({ kind: 'poll' });
    await store.recordRowFailure(runId, 'T', 'huge', BIG_TICKS, 'BLOB_TOO_LARGE: 3 GB');
    await store.recordRowFailure(runId, 'T', 'odd', null, 'unreadable');
    expect(await store.rowFailures(runId)).toEqual([
      expect.objectContaining({ runId, table: 'T', key: 'huge', modifiedOn: BIG_TICKS, reason: 'BLOB_TOO_LARGE: 3 GB' }),
      expect.objectContaining({ key: 'odd', modifiedOn: null }),
    ]);

    await store.acquireLease('T', '*', 'gwent', 'me', 60);
    await store.acquireLease('T', 'bu-1', 'gwent', 'me', 60);
    await store.startTable(runId, tableStart({ table: 'T' }));
    await store.advanceHighWater('T', '*', 'me', BIG_TICKS, runId);
    await store.finishTable(runId, 'T', '*', { status: 'completed' });
    await store.releaseLease('T', '*', 'me');

    const status = await store.status();
    expect(status).toEqual([
      expect.objectContaining({ table: 'T', scope: '*', highWater: BIG_TICKS, leaseOwner: null, leaseActive: false, lastRunId: runId, lastRunStatus: 'running', lastRunTableStatus: 'completed', advancedByRunId: runId }),
      expect.objectContaining({ table: 'T', scope: 'bu-1', highWater: null, leaseOwner: 'me', leaseActive: true, lastRunId: null, lastRunStatus: null }),
    ]);
  });
});
