/**
 * The eleven defects an outside review proved against the real services (issue 8), each replayed as the history
 * that exposed it, on the real pipeline: PostgreSQL source, the real poller, the real Kafka broker, the real
 * consumers, a PostgreSQL target. Each of these failed before its fix. The seeded convergence test generates
 * histories of the same kinds at random; these pin the named cases down.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { dlqTopicFor, tenantOf } from '../../src/config/load.js';
import { HEADERS, type BlobChange, type Ticks } from '../../src/contract.js';
import { changeRecord, markerRecord } from '../../src/events/records.js';
import { createLogger } from '../../src/logger.js';
import { BackfillService } from '../../src/poll/backfill.js';
import { TICKS_PER_MINUTE, TICKS_PER_SECOND } from '../../src/time/ticks.js';
import { consumeMessages, readTopic, uniqueName } from '../support/kafka.js';
import { pipeline, sha256Hex, type Pipeline } from '../support/pipeline.js';

const KiB = 1024;

/** Content whose SHA-256 sorts below `than`'s: a hash tie-break would keep the older content. */
function contentHashingBelow(than: Buffer, size = 64): Buffer {
  for (;;) {
    const candidate = randomBytes(size);
    if (sha256Hex(candidate) < sha256Hex(than)) return candidate;
  }
}

async function converge(p: Pipeline): Promise<void> {
  await p.poll();
  await p.consume();
  await p.drain();
}

async function expectTargetEqualsSource(p: Pipeline): Promise<void> {
  expect(Object.fromEntries(await p.targetRows())).toEqual(Object.fromEntries(await p.sourceRows()));
}

async function setContent(p: Pipeline, id: string, content: Buffer): Promise<void> {
  await p.src.query('UPDATE src.blobs SET file_stream = $2 WHERE stream_id = $1', [id, content]);
}

describe('issue 8: no missed change, on the real pipeline', () => {
  it('1: a content change that keeps its ModifiedOn wins over the state read before it, even with a smaller hash', async ({ task }) => {
    // A 1-minute buffer and a row 90 s old: the next poll's window still covers it (the overlap).
    const p = await pipeline(task.name, { safetyBufferMinutes: 1 });
    const before = randomBytes(64);
    const [id] = await p.insert([{ path: '/1/', content: before, modifiedOnSql: "clock_timestamp() - interval '90 seconds'" }]);
    await converge(p);
    await setContent(p, id!, contentHashingBelow(before));
    await converge(p);
    await expectTargetEqualsSource(p);
  });

  it('1b: a change that kept its ModifiedOn after the overlap passed it is found by the sweep, a byte budget at a time', async ({ task }) => {
    // verifySweepBytes 1: each poll hashes one row's content, so three changed rows take three polls.
    const p = await pipeline(task.name, { poll: { verifySweepBytes: 1 } });
    const ids = await p.insert([1, 2, 3].map((i) => ({ path: `/${i}/`, content: randomBytes(32), modifiedOnSql: "clock_timestamp() - interval '10 minutes'" })));
    await converge(p);
    for (const id of ids) await setContent(p, id, randomBytes(32));
    await p.src.query('UPDATE src.blobs SET name = $2 WHERE stream_id = $1', [ids[0], 'renamed']);
    for (let poll = 0; poll < 4; poll++) await p.poll();
    await p.drain();
    await expectTargetEqualsSource(p);
    expect((await p.tgt.query(`SELECT name FROM ${p.targetTable} WHERE key = $1`, [ids[0]])).rows).toEqual([{ name: 'renamed' }]);
  });

  it('2: the same change on a blob not read inline is published, not counted as unchanged', async ({ task }) => {
    // inlineContentMaxBytes 1 KiB: 4 KiB content is fetched apart (fetch-inline); 70 KiB goes as chunks of 48 KiB.
    const p = await pipeline(task.name, { safetyBufferMinutes: 1, inlineContentMaxBytes: KiB, maxMessageBytes: 64 * KiB });
    const ids = await p.insert([
      { path: '/1/', content: randomBytes(4 * KiB), modifiedOnSql: "clock_timestamp() - interval '90 seconds'" },
      { path: '/2/', content: randomBytes(70 * KiB), modifiedOnSql: "clock_timestamp() - interval '90 seconds'" },
    ]);
    await converge(p);
    await setContent(p, ids[0]!, randomBytes(4 * KiB));
    await setContent(p, ids[1]!, randomBytes(70 * KiB));
    const run = await p.poll();
    expect(run.tables[0]?.outcome).toMatchObject({ published: 2, skipped: 0 });
    await p.drain();
    await expectTargetEqualsSource(p);
  });

  it('3: a delete after a crash between the acknowledged send and the registry write still removes the row', async ({ task }) => {
    const p = await pipeline(task.name);
    const [id] = await p.insert([{ path: '/1/', content: randomBytes(32), modifiedOnSql: "clock_timestamp() - interval '10 minutes'" }]);
    await converge(p);
    await p.src.query(`UPDATE src.meta SET "ModifiedOn" = clock_timestamp() - interval '5 minutes' WHERE id = $1`, [id]);
    await setContent(p, id!, randomBytes(32));
    // The poller dies right after Kafka acknowledged v2, before the registry learnt of it.
    const store = p.rt.store();
    const record = store.recordPublished.bind(store);
    store.recordPublished = async () => {
      store.recordPublished = record;
      throw new Error('simulated crash: the process died before the registry write');
    };
    expect((await p.poll()).status).toBe('failed');
    await p.drain();
    expect((await p.targetRows()).get(id!)?.ticks).toBe((await p.sourceRows()).get(id!)?.ticks);
    await p.src.query('DELETE FROM src.meta WHERE id = $1', [id]);
    await p.src.query('DELETE FROM src.blobs WHERE stream_id = $1', [id]);
    await converge(p);
    expect(await p.targetRows()).toEqual(new Map());
  });

  it('3b: a new key whose first send was acknowledged before a crash, and never recorded, is still deleted', async ({ task }) => {
    // A first send registers its keys as one pending send, not as registry entries: the next lease holder must turn
    // it into pending entries, or the delete sweep never walks the key and the row stays in targets forever.
    const p = await pipeline(task.name);
    const store = p.rt.store();
    const record = store.recordPublished.bind(store);
    store.recordPublished = async () => {
      store.recordPublished = record;
      throw new Error('simulated crash: the process died before the registry write');
    };
    const [id] = await p.insert([{ path: '/1/', content: randomBytes(32), modifiedOnSql: "clock_timestamp() - interval '10 minutes'" }]);
    expect((await p.poll()).status).toBe('failed');
    await p.consume();
    await p.drain();
    expect((await p.targetRows()).has(id!)).toBe(true);
    await p.src.query('DELETE FROM src.meta WHERE id = $1', [id]);
    await p.src.query('DELETE FROM src.blobs WHERE stream_id = $1', [id]);
    await converge(p);
    expect(await p.targetRows()).toEqual(new Map());
  });

  it('4: a row that leaves the replicated set with its blob row still there is removed: metadata row deleted, BU unmapped', async ({ task }) => {
    const p = await pipeline(task.name);
    const [unlinked, unmapped, kept] = await p.insert([
      { path: '/1/', content: randomBytes(8) },
      { path: '/2/', content: randomBytes(8), bu: p.bus[1] },
      { path: '/3/', content: randomBytes(8) },
    ]);
    await converge(p);
    await p.src.query('DELETE FROM src.meta WHERE id = $1', [unlinked]);
    await p.src.query('DELETE FROM src.bu_map WHERE id = $1', [p.bus[1]]);
    await converge(p);
    expect([...(await p.targetRows()).keys()]).toEqual([kept]);
    expect(unmapped).toBeDefined();
  });

  it('5: a deleted row restored with its original ModifiedOn and content comes back', async ({ task }) => {
    const p = await pipeline(task.name);
    const content = randomBytes(16);
    const spec = { path: '/1/', content, modifiedOnSql: "timestamptz '2026-01-02 03:04:05.123456+00'" };
    const [id] = await p.insert([spec]);
    await converge(p);
    await p.src.query('DELETE FROM src.meta WHERE id = $1', [id]);
    await p.src.query('DELETE FROM src.blobs WHERE stream_id = $1', [id]);
    await converge(p);
    expect((await p.targetRows()).size).toBe(0);
    await p.insert([{ ...spec, id: id! }]);
    await converge(p);
    await expectTargetEqualsSource(p);
    expect((await p.targetRows()).size).toBe(1);
  });

  it('5b: a row restored from an older backup in place (its ModifiedOn set back, no delete seen) replaces the newer one, with no update to an older version', async ({ task }) => {
    const p = await pipeline(task.name);
    const old = randomBytes(16);
    const [id] = await p.insert([{ path: '/1/', content: old, modifiedOnSql: "timestamptz '2026-01-02 03:04:05.123456+00'" }]);
    await converge(p);
    await p.tgt.query(AUDIT_TRIGGER(p.targetTable));
    await p.src.query(`UPDATE src.meta SET "ModifiedOn" = timestamptz '2026-02-02 03:04:05.123456+00' WHERE id = $1`, [id]);
    await setContent(p, id!, randomBytes(16));
    await converge(p);
    await p.src.query(`UPDATE src.meta SET "ModifiedOn" = timestamptz '2026-01-02 03:04:05.123456+00' WHERE id = $1`, [id]);
    await setContent(p, id!, old);
    await converge(p);
    await expectTargetEqualsSource(p);
    expect((await p.tgt.query('SELECT count(*)::int AS n FROM regressions')).rows).toEqual([{ n: 0 }]);
  });

  // Convergence seed 25: a content change that set ModifiedOn to NULL is published as a tombstone and then the row.
  // Both have the row's key, so compaction may keep only the row; a consumer that was down then never saw the delete,
  // and the NULL version lost to the version it held. Contract v2.1: the row names the delete (hw-deleted-before-ticks).
  it('5c: a ModifiedOn set to NULL reaches a consumer that was down while compaction removed the tombstone before it', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1, topicConfig: COMPACT_AT_ONCE });
    const [id, other] = await p.insert([{ path: '/1/', content: randomBytes(64) }, { path: '/2/', content: randomBytes(64) }]);
    await converge(p);
    await (await p.consume()).stop();
    await p.src.query('UPDATE src.meta SET "ModifiedOn" = NULL WHERE id = $1', [id]);
    await setContent(p, id!, randomBytes(64));
    await p.poll();
    await compactAwayTombstonesOf(p, id!, other!);
    const restarted = await p.rt.startConsumers(p.target);
    try {
      await p.drain(90_000);
      await expectTargetEqualsSource(p);
      expect((await p.targetRows()).get(id!)?.ticks).toBeNull();
    } finally {
      await restarted.stop();
    }
  });

  it('5d: a row deleted and restored with an older ModifiedOn reaches a consumer that was down while compaction removed the tombstone', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1, topicConfig: COMPACT_AT_ONCE });
    const restored = { path: '/1/', content: randomBytes(64), modifiedOnSql: "timestamptz '2026-01-02 03:04:05.123456+00'" };
    const [id] = await p.insert([{ ...restored, modifiedOnSql: "timestamptz '2026-03-02 03:04:05.123456+00'" }]);
    const [other] = await p.insert([{ path: '/2/', content: randomBytes(64) }]);
    await converge(p);
    await (await p.consume()).stop();
    await p.src.query('DELETE FROM src.meta WHERE id = $1', [id]);
    await p.src.query('DELETE FROM src.blobs WHERE stream_id = $1', [id]);
    await p.poll();
    await p.insert([{ ...restored, id: id! }]);
    await p.poll();
    await compactAwayTombstonesOf(p, id!, other!);
    const restarted = await p.rt.startConsumers(p.target);
    try {
      await p.drain(90_000);
      await expectTargetEqualsSource(p);
    } finally {
      await restarted.stop();
    }
  });

  it('6, 7: rows with a NULL ModifiedOn are replicated and reported, and polls keep going (no BigInt(null))', async ({ task }) => {
    const p = await pipeline(task.name);
    const [folder] = await p.insert([{ path: '/1/', modifiedOnSql: null }]);
    await p.insert([
      { path: '/1/2/', parent: '/1/', content: randomBytes(10) },
      { path: '/3/', content: randomBytes(10), modifiedOnSql: null },
    ]);
    for (let i = 0; i < 2; i++) {
      const run = await p.poll();
      expect(run.status).toBe('completed');
      expect(run.tables[0]?.outcome?.nullModifiedOn).toBe(2);
    }
    const { rows } = await p.tgt.query(`SELECT rows_null_modified_on::int AS n FROM hw_control.run_tables ORDER BY started_at DESC LIMIT 1`);
    expect(rows).toEqual([{ n: 2 }]);
    expect((await p.rt.store().watermark(p.table.name, '*'))?.highWater).not.toBeNull();
    await p.consume();
    await p.drain();
    await expectTargetEqualsSource(p);
    expect((await p.targetRows()).get(folder!)).toEqual({ ticks: null, sha: null });
  });

  it('8: a transaction that reads for longer than the buffer and then writes is clamped before, so its rows arrive in a window', async ({ task }) => {
    const p = await pipeline(task.name);
    await converge(p);
    const late = new pg.Client({ connectionString: (p.config.databases[0]!.connectionString)! });
    await late.connect();
    try {
      await late.query('BEGIN');
      await late.query('SELECT count(*) FROM src.meta');
      const { rows } = await late.query<{ started: string }>(`SELECT (extract(epoch from now()) * 10000000)::bigint::text AS started`);
      await sleep(300);
      // It has only read so far, so it has no xid; the window must still end before it began.
      const run = await p.poll();
      expect(run.tables[0]!.outcome!.window.end).toBeLessThan(BigInt(rows[0]!.started));
      const id = randomUUID();
      await late.query('INSERT INTO src.blobs (stream_id, file_stream, name, path_locator) VALUES ($1, $2, $3, $4)', [id, randomBytes(8), 'late', '/late/']);
      await late.query(`INSERT INTO src.meta (id, "ModifiedOn", bu) VALUES ($1, now(), $2)`, [id, p.bus[0]]);
      await late.query('COMMIT');
      const next = await p.poll();
      expect(next.tables[0]?.outcome).toMatchObject({ published: 1, lateArrivals: 0 });
      await p.drain();
      expect((await p.targetRows()).has(id)).toBe(true);
    } finally {
      await late.end();
    }
  });

  it('9: a fresh target replays a topic compaction has cleaned, with no seek-back loop', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1, topicConfig: COMPACT_AT_ONCE });
    const ids = await p.insert([{ path: '/1/', content: randomBytes(200) }, { path: '/2/', content: randomBytes(200) }]);
    for (let version = 0; version < 12; version++) {
      await p.src.query(`UPDATE src.meta SET "ModifiedOn" = clock_timestamp() WHERE id = ANY($1::uuid[])`, [ids]);
      for (const id of ids) await setContent(p, id, randomBytes(200));
      await p.poll();
    }
    await waitForCompaction(p.topic, 120_000);
    await p.consume();
    await p.drain(90_000);
    await expectTargetEqualsSource(p);
  });

  it('10: consistent_as_of stays below a child held in the target until it is applied', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1, retry: { initialDelayMs: 300, maxDelayMs: 600, maxAttempts: 50, backfillAfterAttempts: 40 } });
    const running = await p.consume();
    const publisher = await p.rt.publisher();
    const t0 = 17_000_000_000_000_000n;
    const child = crafted(p, 'child', t0, '/p/c/', '/p/');
    await publisher.send(p.topic, [await changeRecord(p.rt.codec, child), await marker(p, t0 + TICKS_PER_MINUTE)]);
    await p.drain();
    const parked = await running.writer.consistentAsOf(running.groupId);
    expect(parked).toEqual([{ table: p.table.name, scope: '*', watermark: t0 - 1n }]);
    await publisher.send(p.topic, [await changeRecord(p.rt.codec, crafted(p, 'parent', t0 - TICKS_PER_SECOND, '/p/', null))]);
    await eventually(async () => expect((await p.targetRows()).has('child')).toBe(true));
    await eventually(async () => expect(await running.writer.consistentAsOf(running.groupId)).toEqual([{ table: p.table.name, scope: '*', watermark: t0 + TICKS_PER_MINUTE }]));
  });

  // Fault matrix C2 (three consumers joining and leaving): one consumer held a child while another's concurrent
  // transaction wrote its parent; neither saw the other's rows, and nothing promoted the child afterwards, since its
  // parent was no longer missing. The parent is written here straight into the target, as that other commit did.
  it('10b: a child held while another consumer\'s transaction wrote its parent is promoted, not held for ever', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1, retry: { initialDelayMs: 300, maxDelayMs: 600, maxAttempts: 50, backfillAfterAttempts: 40 } });
    await p.consume();
    const publisher = await p.rt.publisher();
    const t0 = 17_000_000_000_000_000n;
    await publisher.send(p.topic, [await changeRecord(p.rt.codec, crafted(p, 'child', t0, '/p/c/', '/p/'))]);
    await p.drain();
    expect((await p.targetRows()).has('child')).toBe(false);
    await p.tgt.query(`INSERT INTO ${p.targetTable} (tenant, key, name, path_locator, is_directory, modified_on_ticks, observed_ticks) VALUES ($1, 'parent', 'parent', '/p/', true, $2, $2)`, [tenantOf(p.config, p.table), (t0 - TICKS_PER_SECOND).toString()]);
    await eventually(async () => expect((await p.targetRows()).has('child')).toBe(true));
  });

  it('11: content larger than the target stores goes to the dead-letter topic, and the partition keeps flowing', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1 });
    await p.consume();
    const publisher = await p.rt.publisher();
    const t0 = 17_000_000_000_000_000n;
    const huge = { ...crafted(p, 'huge', t0, '/huge/', null), size: 1100 * 1024 * 1024, content: { kind: 'chunked' as const, chunkCount: 1100, chunkSize: 1 << 20, totalSize: 1100 * 1024 * 1024 } };
    await publisher.send(p.topic, [await changeRecord(p.rt.codec, huge), await changeRecord(p.rt.codec, crafted(p, 'after', t0, '/after/', null))]);
    await p.drain();
    expect([...(await p.targetRows()).keys()]).toEqual(['after']);
    const [dead] = await consumeMessages({ topic: dlqTopicFor(p.topic), groupId: uniqueName(task.name, 'dlq-reader'), count: 1 });
    expect(dead?.key?.toString()).toBe('huge');
    expect(String(dead?.headers[HEADERS.error])).toMatch(/larger than a postgres target stores in one value/);
  });
});

/** I2: every UPDATE of the target table to an older ModifiedOn is recorded (a delete and re-insert is not one). */
const AUDIT_TRIGGER = (table: string): string => `
CREATE TABLE regressions (key text, old_ticks bigint, new_ticks bigint);
CREATE FUNCTION audit_regression() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(NEW.modified_on_ticks, -9223372036854775808) < coalesce(OLD.modified_on_ticks, -9223372036854775808) THEN
    INSERT INTO regressions VALUES (NEW.key, OLD.modified_on_ticks, NEW.modified_on_ticks);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_regression BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION audit_regression();`;

describe('issue 8: the smaller ones', () => {
  it('the back-fill compares excluded keys case-insensitively, as the poller does', async ({ task }) => {
    const id = randomUUID();
    const p = await pipeline(task.name, { excludedKeys: [id.toUpperCase()] });
    await p.insert([{ id, path: '/1/', content: randomBytes(8) }, { path: '/2/', content: randomBytes(8) }]);
    await p.poll();
    expect(await registered(p)).toHaveLength(1);
    const service = new BackfillService({
      config: p.config, store: p.rt.store(), publisher: await p.rt.publisher(), codec: p.rt.codec, logger: createLogger({ level: 'silent' }),
      sourceFor: (t) => p.rt.source(t),
    });
    const outcome = await service.serve({ table: p.table.name, tenant: tenantOf(p.config, p.table), parentPathLocator: null, keys: [id], requestedBy: 'test', reason: 'test' });
    expect(outcome.kind).toBe('not-found');
    expect(await registered(p)).not.toContain(id);
  });

  it('a row back-filled after its ModifiedOn moved backwards replaces the newer version in the target, as a poll would', async ({ task }) => {
    const p = await pipeline(task.name, { partitions: 1 });
    const [id] = await p.insert([{ path: '/1/', content: randomBytes(16), modifiedOnSql: "timestamptz '2026-03-02 03:04:05.123456+00'" }]);
    await converge(p);
    await p.src.query(`UPDATE src.meta SET "ModifiedOn" = timestamptz '2026-01-02 03:04:05.123456+00' WHERE id = $1`, [id]);
    await setContent(p, id!, randomBytes(16));
    const service = new BackfillService({
      config: p.config, store: p.rt.store(), publisher: await p.rt.publisher(), codec: p.rt.codec, logger: createLogger({ level: 'silent' }),
      sourceFor: (t) => p.rt.source(t),
    });
    const outcome = await service.serve({ table: p.table.name, tenant: tenantOf(p.config, p.table), parentPathLocator: null, keys: [id!], requestedBy: 'test', reason: 'test' });
    expect(outcome.kind).not.toBe('not-found');
    await p.drain();
    await expectTargetEqualsSource(p);
  });
});

async function registered(p: Pipeline): Promise<string[]> {
  return (await p.tgt.query<{ key: string }>('SELECT key FROM hw_control.published WHERE table_name = $1', [p.table.name])).rows.map((r) => r.key);
}

function crafted(p: Pipeline, key: string, modifiedOn: Ticks, path: string, parent: string | null): BlobChange {
  const content = Buffer.from(`${key}@${modifiedOn}`);
  return {
    table: p.table.name, tenant: tenantOf(p.config, p.table), key, name: key, pathLocator: path, parentPathLocator: parent, isDirectory: false,
    size: content.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null, content: { kind: 'inline', bytes: content },
    contentSha256: createHash('sha256').update(content).digest(), runId: 'crafted', window: { start: 0n, end: modifiedOn },
  };
}

async function marker(p: Pipeline, watermark: Ticks) {
  return markerRecord(p.rt.codec, { table: p.table.name, tenant: tenantOf(p.config, p.table), scope: '*', watermark, runId: 'crafted', partition: 0 });
}

async function eventually(check: () => Promise<void>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

/** A table topic that compaction cleans within seconds: tiny segments, no lag, tombstones kept for 100 ms. */
const COMPACT_AT_ONCE = {
  'cleanup.policy': 'compact', 'segment.ms': '100', 'segment.bytes': '4096', 'min.cleanable.dirty.ratio': '0.01',
  'min.compaction.lag.ms': '0', 'delete.retention.ms': '100', 'max.compaction.lag.ms': '1000',
};

/** Waits until offsets are missing from the topic's log (compaction ran), by reading it whole. */
async function waitForCompaction(topic: string, timeoutMs: number): Promise<void> {
  await waitUntilCompacted(topic, () => true, timeoutMs);
}

type TopicRecords = Awaited<ReturnType<typeof readTopic>>;

/** Waits until compaction removed offsets from the topic's log and the records left satisfy `done`. */
async function waitUntilCompacted(topic: string, done: (records: TopicRecords) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const records = await readTopic(topic);
    const offsets = records.map((m) => BigInt(m.offset));
    const span = offsets.length === 0 ? 0n : offsets.at(-1)! + 1n;
    if (span > BigInt(offsets.length) && done(records)) return;
    await sleep(2000);
  }
  throw new Error(`compaction did not clean ${topic} as expected within ${timeoutMs} ms`);
}

/** Closes the segments (new versions of `other`) and waits until compaction left only values for `id`'s key. */
async function compactAwayTombstonesOf(p: Pipeline, id: string, other: string): Promise<void> {
  await rollSegments(p, other);
  await waitUntilCompacted(p.topic, (records) => {
    const ofRow = records.filter((m) => m.key?.toString() === id);
    return ofRow.length > 0 && ofRow.every((m) => m.value !== null);
  }, 120_000);
}

/** New versions of another row, polled one by one, so the segment holding the records under test is closed. */
async function rollSegments(p: Pipeline, id: string): Promise<void> {
  for (let version = 0; version < 6; version++) {
    await p.src.query('UPDATE src.meta SET "ModifiedOn" = clock_timestamp() WHERE id = $1', [id]);
    await setContent(p, id, randomBytes(1500));
    await p.poll();
    await sleep(150);
  }
}
