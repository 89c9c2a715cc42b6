/**
 * The sink contract, written once and run against every target engine (Debezium's lesson: each sink behaviour is
 * one abstract test, each engine a three-line subclass). An engine's test file supplies a SinkHarness: a fresh,
 * migrated writer in a namespace of its own, and a few probes that read the target with that engine's SQL.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { BlobChange, BlobChunk, Ticks } from '../../src/contract.js';
import { HighwaterError } from '../../src/errors.js';
import type { ApplyBatch, RowToApply, TargetWriter } from '../../src/apply/sink/writer.js';

export const TABLE = 'Referral.Attachment';
const GROUP = 'highwater.contract';
const TOPIC = 'highwater.src.Referral.Attachment';
const MiB = 1 << 20;

/** One engine's target under test: its writer (migrated, tables [TABLE]) and probes written in its SQL. */
export interface SinkUnderTest {
  readonly writer: TargetWriter;
  /** ModifiedOn ticks and declared content hash (hex) of the target row of `key` (tenant ''), if any. */
  held(key: string): Promise<{ ticks: string; sha: string | null } | undefined>;
  /** SHA-256 (hex) and length of the stored content of `key`. */
  content(key: string): Promise<{ sha: string; len: number } | undefined>;
  /** Rows in one of the target's bookkeeping tables. */
  count(table: 'hw_chunks' | 'hw_tombstones' | 'hw_watermarks' | 'hw_parked' | 'hw_held'): Promise<number>;
  /** Keys of the target table, sorted. */
  keys(): Promise<string[]>;
  /** Makes any write of the row `key` fail inside the database (a trigger raising an error). */
  refuseKey(key: string): Promise<void>;
  /** Adds a check constraint refusing rows named `name`. */
  forbidName(name: string): Promise<void>;
  /** Counts updates of target rows, and those that moved ModifiedOn back (a trigger), from now on. */
  audit(): Promise<{ updates(): Promise<number>; regressions(): Promise<number> }>;
  /** Records a migration this code does not ship, as a newer highwater would have. */
  recordForeignMigration(name: string): Promise<void>;
}

export interface SinkHarness {
  /** What the describe block says: "PostgreSQL", "SQL Server". */
  readonly engine: string;
  /** Why the engine cannot be reached here, or null to run. */
  readonly skip: string | null;
  /** A fresh target for one test; the harness closes it and drops its namespace when the test passed. */
  fresh(label: string): Promise<SinkUnderTest>;
}

const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

export function version(key: string, modifiedOn: Ticks, content: Buffer | null, over: Partial<BlobChange> = {}): RowToApply {
  return {
    change: {
      table: TABLE,
      tenant: '',
      key,
      name: `${key}.bin`,
      pathLocator: `/${key}/`,
      parentPathLocator: null,
      isDirectory: content === null,
      size: content?.length ?? null,
      attributes: {},
      modifiedOn,
      observed: modifiedOn,
      businessUnit: 'bu1',
      content: content === null ? { kind: 'none' } : { kind: 'inline', bytes: content },
      contentSha256: content === null ? null : sha256(content),
      runId: 'run-1',
      window: { start: 0n, end: modifiedOn },
      ...over,
    },
  };
}

function chunkedVersion(key: string, modifiedOn: Ticks, content: Buffer, chunkSize: number, over: Partial<BlobChange> = {}): RowToApply {
  const chunkCount = Math.ceil(content.length / chunkSize);
  return version(key, modifiedOn, null, {
    ...over,
    isDirectory: false,
    size: content.length,
    contentSha256: sha256(content),
    content: { kind: 'chunked', chunkCount, chunkSize, totalSize: content.length },
  });
}

function chunksOf(key: string, content: Buffer, chunkSize: number): BlobChunk[] {
  const count = Math.ceil(content.length / chunkSize);
  return Array.from({ length: count }, (_, index) => ({
    table: TABLE,
    key,
    contentSha256: sha256(content),
    index,
    count,
    bytes: content.subarray(index * chunkSize, (index + 1) * chunkSize),
  }));
}

export function batch(parts: Partial<ApplyBatch>): ApplyBatch {
  return { groupId: GROUP, table: TABLE, rows: [], deletes: [], watermarks: [], chunks: [], offsets: [], ...parts };
}

async function rejection(promise: Promise<unknown>): Promise<HighwaterError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HighwaterError);
  return error as HighwaterError;
}

const del = (key: string, ticks: bigint) => ({ table: TABLE, tenant: '', key, modifiedOn: ticks, observed: ticks });

export function sinkContract(harness: SinkHarness): void {
  if (harness.skip !== null) console.log(`[highwater] SKIPPED the sink contract on ${harness.engine}: ${harness.skip}.`);

  describe.skipIf(harness.skip !== null)(`sink contract: ${harness.engine}`, () => {
    it('replays idempotently: the same batch again writes nothing and changes nothing', async () => {
      const sink = await harness.fresh('replay');
      const rows = [version('a', 1n, Buffer.from('a')), version('b', 2n, Buffer.from('b')), version('dir', 3n, null)];
      expect(await sink.writer.apply(batch({ rows }))).toEqual({
        applied: 3,
        skippedStale: 0,
        deleted: 0,
        missingParent: [],
        incompleteContent: [],
        held: [],
        promoted: 0,
      });
      const audit = await sink.audit();
      expect(await sink.writer.apply(batch({ rows }))).toEqual({
        applied: 0,
        skippedStale: 3,
        deleted: 0,
        missingParent: [],
        incompleteContent: [],
        held: [],
        promoted: 0,
      });
      expect(await audit.updates()).toBe(0);
      expect(await sink.keys()).toEqual(['a', 'b', 'dir']);
    });

    it('lets a newer version overwrite and never an older or equal one (audited by a trigger)', async () => {
      const { writer, held, audit: install } = await harness.fresh('newer wins');
      const audit = await install();
      const v = (ticks: bigint) => version('doc', ticks, Buffer.from(`content at ${ticks}`));

      expect(await writer.apply(batch({ rows: [v(10n)] }))).toMatchObject({ applied: 1, skippedStale: 0 });
      expect(await writer.apply(batch({ rows: [v(5n)] }))).toMatchObject({ applied: 0, skippedStale: 1 });
      expect(await writer.apply(batch({ rows: [v(10n)] }))).toMatchObject({ applied: 0, skippedStale: 1 });
      expect(await audit.updates()).toBe(0);

      expect(await writer.apply(batch({ rows: [v(20n)] }))).toMatchObject({ applied: 1, skippedStale: 0 });
      expect(await writer.apply(batch({ rows: [v(15n), v(30n), v(25n)] }))).toMatchObject({ applied: 1, skippedStale: 2 });
      expect(await writer.apply(batch({ rows: [v(29n), v(11n)] }))).toMatchObject({ applied: 0, skippedStale: 2 });

      expect(await held('doc')).toEqual({ ticks: '30', sha: sha256(Buffer.from('content at 30')).toString('hex') });
      expect(await audit.updates()).toBe(2);
      expect(await audit.regressions()).toBe(0);
    });

    it('deletes only versions not newer than the deleted one, and a tombstone stops older replays', async () => {
      const { writer, held, count } = await harness.fresh('delete');
      await writer.apply(batch({ rows: [version('doc', 5n, Buffer.from('v5'))] }));

      expect(await writer.apply(batch({ deletes: [del('doc', 3n)] }))).toMatchObject({ deleted: 0 });
      expect(await held('doc')).toMatchObject({ ticks: '5' });
      expect(await writer.apply(batch({ deletes: [del('doc', 6n)] }))).toMatchObject({ deleted: 1 });
      expect(await held('doc')).toBeUndefined();
      expect(await count('hw_tombstones')).toBe(1);

      expect(await writer.apply(batch({ rows: [version('doc', 5n, Buffer.from('v5'))] }))).toMatchObject({ applied: 0, skippedStale: 1 });
      expect(await writer.apply(batch({ rows: [version('doc', 6n, Buffer.from('v6'))] }))).toMatchObject({ applied: 0, skippedStale: 1 });
      expect(await held('doc')).toBeUndefined();

      expect(await writer.apply(batch({ rows: [version('doc', 7n, Buffer.from('v7'))] }))).toMatchObject({ applied: 1 });
      expect(await held('doc')).toMatchObject({ ticks: '7' });
    });

    it('applies deletes before the rows of the same batch: a row that follows its delete is written', async () => {
      const { writer, held } = await harness.fresh('deletes first');
      await writer.apply(batch({ rows: [version('doc', 5n, Buffer.from('v5'))] }));
      // Deleted (observed at 6), then restored with an older ModifiedOn but observed later (7).
      const restored = version('doc', 4n, Buffer.from('restored'), { observed: 7n });
      expect(await writer.apply(batch({ deletes: [del('doc', 6n)], rows: [restored] }))).toMatchObject({ deleted: 1, applied: 1 });
      expect(await held('doc')).toEqual({ ticks: '4', sha: sha256(Buffer.from('restored')).toString('hex') });
    });

    it('holds a child whose parent is missing in the target, writes one whose parent is in the batch or the target, and promotes the held chain when the parent comes', async () => {
      const { writer, count } = await harness.fresh('missing parent');
      const under = (parent: string) => ({ parentPathLocator: `/${parent}/` });
      const first = await writer.apply(
        batch({
          rows: [
            version('p', 1n, null),
            version('c1', 2n, Buffer.from('c1'), under('p')),
            version('orphan', 3n, null, under('nowhere')),
            version('grandchild', 4n, Buffer.from('g'), under('orphan')),
            version('other-tenant', 5n, Buffer.from('t'), { ...under('p'), tenant: 'south' }),
          ],
        }),
      );
      expect(first).toMatchObject({ applied: 2, skippedStale: 0, missingParent: [], promoted: 0 });
      expect([...first.held].sort()).toEqual(['grandchild', 'orphan', 'other-tenant']);
      expect(await count('hw_held')).toBe(3);
      expect(await count('hw_parked')).toBe(3);
      expect(await writer.existingPaths(TABLE, '', ['/p/', '/c1/', '/orphan/', '/nowhere/'])).toEqual(new Set(['/p/', '/c1/']));

      // The top of the chain arrives: the whole held chain is promoted in the same transaction.
      expect(await writer.apply(batch({ rows: [version('nowhere', 1n, null)] }))).toMatchObject({ applied: 1, promoted: 2, held: [] });
      expect(await writer.existingPaths(TABLE, '', ['/orphan/', '/grandchild/'])).toEqual(new Set(['/orphan/', '/grandchild/']));
      expect(await writer.existingPaths(TABLE, 'south', ['/p/'])).toEqual(new Set());
      expect(await count('hw_held')).toBe(1);
      expect(await count('hw_parked')).toBe(1);

      // A replay after the folder and its file were deleted: the file is stale (tombstone), not waiting for a parent.
      await writer.apply(batch({ deletes: [del('p', 10n), del('c1', 10n)] }));
      expect(await writer.apply(batch({ rows: [version('c1', 2n, Buffer.from('c1'), under('p'))] }))).toMatchObject({
        applied: 0,
        skippedStale: 1,
        missingParent: [],
      });
    });

    it('assembles chunked content in the database from staged chunks, and waits for missing chunks', async () => {
      const { writer, content, count } = await harness.fresh('chunks');
      const blob = randomBytes(3 * MiB);
      const chunks = chunksOf('big', blob, MiB);

      await writer.apply(batch({ chunks: chunks.slice(0, 2) }));
      expect(await writer.apply(batch({ rows: [chunkedVersion('big', 9n, blob, MiB)] }))).toMatchObject({
        applied: 0,
        incompleteContent: ['big'],
        missingParent: [],
      });
      expect(await count('hw_chunks')).toBe(2);

      const done = await writer.apply(batch({ chunks: [chunks[2]!, chunks[0]!], rows: [chunkedVersion('big', 9n, blob, MiB)] }));
      expect(done).toEqual({ applied: 1, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 });
      expect(await content('big')).toEqual({ sha: sha256(blob).toString('hex'), len: 3 * MiB });
      expect(await count('hw_chunks')).toBe(0);

      // Replayed after it was applied, without its chunks: stale, not incomplete.
      expect(await writer.apply(batch({ rows: [chunkedVersion('big', 9n, blob, MiB)] }))).toMatchObject({
        applied: 0,
        skippedStale: 1,
        incompleteContent: [],
      });
    });

    // Regression (seen in CI: consumer.test.ts "puts a 3 MiB blob back together" when the file's batch came before
    // its folder's): a held chunked child kept its chunks in hw_chunks for ever, though hw_held keeps the content.
    it('holds a chunked child with its assembled content and releases its chunks; the parent brings it in whole', async () => {
      const { writer, content, count } = await harness.fresh('held chunks');
      const blob = randomBytes(3 * MiB);
      const child = chunkedVersion('big', 9n, blob, MiB, { parentPathLocator: '/folder/' });
      expect(await writer.apply(batch({ chunks: chunksOf('big', blob, MiB), rows: [child] }))).toMatchObject({ applied: 0, held: ['big'] });
      expect(await count('hw_held')).toBe(1);
      expect(await count('hw_chunks')).toBe(0);

      expect(await writer.apply(batch({ rows: [version('folder', 1n, null)] }))).toMatchObject({ applied: 1, promoted: 1 });
      expect(await content('big')).toEqual({ sha: sha256(blob).toString('hex'), len: 3 * MiB });
      expect(await count('hw_held')).toBe(0);
    });

    it('stores offsets in the same transaction as the rows: a failing write moves nothing', async () => {
      const { writer, keys, count, refuseKey } = await harness.fresh('offsets');
      const offset = (next: bigint) => [{ topic: TOPIC, partition: 0, nextOffset: next }];
      await writer.apply(batch({ rows: [version('a', 1n, Buffer.from('a'))], offsets: offset(10n) }));
      await refuseKey('boom');

      const failing = batch({
        rows: [version('b', 2n, Buffer.from('b')), version('boom', 3n, Buffer.from('boom'))],
        deletes: [del('a', 5n)],
        chunks: chunksOf('c', randomBytes(1000), 400),
        watermarks: [{ table: TABLE, tenant: '', scope: '*', topic: TOPIC, partition: 0, watermark: 100n }],
        offsets: offset(20n),
      });
      const error = await rejection(writer.apply(failing));
      expect(error.message).toMatch(/boom refused/);

      expect(await writer.storedOffsets(GROUP, [TOPIC])).toEqual([{ topic: TOPIC, partition: 0, nextOffset: 10n }]);
      expect(await keys()).toEqual(['a']);
      for (const table of ['hw_chunks', 'hw_watermarks', 'hw_tombstones'] as const) expect(await count(table)).toBe(0);

      await writer.apply(
        batch({
          rows: [version('b', 2n, Buffer.from('b'))],
          offsets: [...offset(20n), { topic: TOPIC, partition: 1, nextOffset: 2n ** 40n }],
        }),
      );
      expect(await writer.storedOffsets(GROUP, [TOPIC, 'other'])).toEqual([
        { topic: TOPIC, partition: 0, nextOffset: 20n },
        { topic: TOPIC, partition: 1, nextOffset: 2n ** 40n },
      ]);
      expect(await writer.storedOffsets('another-group', [TOPIC])).toEqual([]);
    });

    it('reports poison rows (constraint and data errors) as DB_CONSTRAINT and stays usable', async () => {
      const { writer, forbidName } = await harness.fresh('poison');
      await forbidName('forbidden');

      const check = await rejection(writer.apply(batch({ rows: [version('x', 1n, Buffer.from('x'), { name: 'forbidden' })] })));
      expect(check.code).toBe('DB_CONSTRAINT');
      const size = await rejection(writer.apply(batch({ rows: [version('z', 1n, Buffer.from('z'), { size: 1.5 })] })));
      expect(size.code).toBe('DB_CONSTRAINT');
      expect(size.message).toMatch(/"z"/);

      expect(await writer.apply(batch({ rows: [version('ok', 1n, Buffer.from('ok'))] }))).toMatchObject({ applied: 1 });
    });

    it('refuses a schema migrated by a newer highwater', async () => {
      const sink = await harness.fresh('newer schema');
      await sink.recordForeignMigration('999_from_the_future.sql');
      const error = await rejection(sink.writer.migrate());
      expect(error.code).toBe('SCHEMA_TOO_NEW');
      expect(error.message).toMatch(/999_from_the_future\.sql/);
    });
  });
}
