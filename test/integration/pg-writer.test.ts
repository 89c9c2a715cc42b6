/**
 * The PostgreSQL target writer against a real PostgreSQL: every test owns a database (hw_t_pgwriter_…), dropped
 * only when the test passed. The behaviours every sink shares (newer wins, deletes and tombstones, missing parents,
 * chunks, offsets in the transaction, poison rows) are the sink contract's (test/contract/sink.ts, run by
 * sink-postgres.test.ts); what stays here is PostgreSQL's own.
 */
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { PostgresWriter } from '../../consumers/postgres/writer.js';
import type { BlobChange, BlobChunk, Ticks } from '../../src/contract.js';
import { HighwaterError } from '../../src/errors.js';
import type { ApplyBatch, RowToApply } from '../../src/target/writer.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

const TABLE = 'Referral.Attachment';
const GROUP = 'highwater.pgwriter';
const TOPIC = 'highwater.src.Referral.Attachment';
const MiB = 1 << 20;

interface Target {
  /** For assertions; the writer has its own pool. */
  readonly sql: pg.Pool;
  readonly url: string;
  readonly writer: PostgresWriter;
}

async function freshTarget(label: string): Promise<Target> {
  const db = await createTestDatabase(`pgwriter ${label}`);
  dropWhenPassed(db);
  const writer = await writerFor(db.url, 'tgt');
  return { sql: db.pool(), url: db.url, writer };
}

/** A migrated writer on its own pool, closed when the test ends (before its database is dropped). */
async function writerFor(url: string, schema: string): Promise<PostgresWriter> {
  const writer = new PostgresWriter(new pg.Pool({ connectionString: url, max: 2 }), { schema, tables: [{ name: TABLE }] });
  onTestFinished(() => writer.close());
  await writer.migrate();
  return writer;
}

const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

function version(key: string, modifiedOn: Ticks, content: Buffer | null, over: Partial<BlobChange> = {}): RowToApply {
  return {
    change: {
      table: TABLE, tenant: '', key, name: `${key}.bin`, pathLocator: `/${key}/`, parentPathLocator: null, isDirectory: content === null,
      size: content?.length ?? null, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: 'bu1',
      content: content === null ? { kind: 'none' } : { kind: 'inline', bytes: content }, contentSha256: content === null ? null : sha256(content),
      runId: 'run-1', window: { start: 0n, end: modifiedOn }, ...over,
    },
  };
}

function chunkedVersion(key: string, modifiedOn: Ticks, content: Buffer, chunkSize: number): RowToApply {
  const chunkCount = Math.ceil(content.length / chunkSize);
  return version(key, modifiedOn, null, {
    isDirectory: false, size: content.length, contentSha256: sha256(content),
    content: { kind: 'chunked', chunkCount, chunkSize, totalSize: content.length },
  });
}

function chunksOf(key: string, content: Buffer, chunkSize: number): BlobChunk[] {
  const count = Math.ceil(content.length / chunkSize);
  return Array.from({ length: count }, (_, index) => ({
    table: TABLE, key, contentSha256: sha256(content), index, count, bytes: content.subarray(index * chunkSize, (index + 1) * chunkSize),
  }));
}

function batch(parts: Partial<ApplyBatch>): ApplyBatch {
  return { groupId: GROUP, table: TABLE, rows: [], deletes: [], watermarks: [], chunks: [], offsets: [], ...parts };
}

async function rowsOf(sql: pg.Pool, text: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  return (await sql.query(text, values)).rows;
}

async function held(sql: pg.Pool, key: string, schema = 'tgt'): Promise<{ ticks: string; sha: string | null } | undefined> {
  const rows = await rowsOf(sql, `SELECT modified_on_ticks::text AS ticks, encode(content_sha256, 'hex') AS sha FROM ${schema}.referral_attachment WHERE key = $1`, [key]);
  return rows[0] as { ticks: string; sha: string | null } | undefined;
}

async function rejection(promise: Promise<unknown>): Promise<HighwaterError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(HighwaterError);
  return error as HighwaterError;
}

describe('PostgresWriter', () => {
  it('inserts new rows: 1 MiB blobs byte-identical, ticks beyond 2^53 exact, directories without content', async () => {
    const { sql, writer } = await freshTarget('insert');
    const blobs = Array.from({ length: 6 }, () => randomBytes(MiB));
    const ticks = 2n ** 60n + 7n;
    const rows = [
      ...blobs.map((b, i) => version(`blob-${i}`, 1_000n + BigInt(i), b)),
      version('dir', 2n ** 53n + 1n, null),
      { ...version('attrs', ticks, Buffer.from('hello'), { attributes: { creationTime: 2n ** 55n + 3n, isReadonly: true, isHidden: false } }), sourcePartition: 2, sourceOffset: 2n ** 40n },
    ];

    const result = await writer.apply(batch({ rows }));

    expect(result).toEqual({ applied: 8, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [] });
    const stored = await rowsOf(sql, `SELECT key, encode(sha256(content), 'hex') AS sha, length(content) AS len, encode(content_sha256, 'hex') AS declared
      FROM tgt.referral_attachment WHERE key LIKE 'blob-%' ORDER BY key`);
    expect(stored).toEqual(blobs.map((b, i) => ({ key: `blob-${i}`, sha: sha256(b).toString('hex'), len: MiB, declared: sha256(b).toString('hex') })));
    const first = await rowsOf(sql, `SELECT content FROM tgt.referral_attachment WHERE key = 'blob-0'`);
    expect((first[0]!.content as Buffer).equals(blobs[0]!)).toBe(true);
    expect(await rowsOf(sql, `SELECT modified_on_ticks::text AS t, creation_time_ticks::text AS c, is_readonly, is_hidden, source_partition, source_offset::text AS o
      FROM tgt.referral_attachment WHERE key = 'attrs'`)).toEqual([{ t: ticks.toString(), c: (2n ** 55n + 3n).toString(), is_readonly: true, is_hidden: false, source_partition: 2, o: (2n ** 40n).toString() }]);
    expect(await rowsOf(sql, `SELECT modified_on_ticks::text AS t, content, is_directory FROM tgt.referral_attachment WHERE key = 'dir'`))
      .toEqual([{ t: '9007199254740993', content: null, is_directory: true }]);
  });

  it('breaks a ModifiedOn tie by the later observation, never by the hash, whatever the arrival order', async () => {
    const { url, sql, writer: first } = await freshTarget('tie');
    const second = await writerFor(url, 'tgt2');
    // The later state has the smaller hash, so a hash tie-break would keep the earlier one.
    const [a, b] = [Buffer.from('version x'), Buffer.from('version y')];
    const [later, earlier] = Buffer.compare(sha256(a), sha256(b)) < 0 ? [a, b] : [b, a];
    const tie = 2n ** 58n;
    const seen = (content: Buffer, observed: bigint) => version('k', tie, content, { observed });

    await first.apply(batch({ rows: [seen(earlier, tie + 1n)] }));
    const r1 = await first.apply(batch({ rows: [seen(later, tie + 2n)] }));
    await second.apply(batch({ rows: [seen(later, tie + 2n)] }));
    const r2 = await second.apply(batch({ rows: [seen(earlier, tie + 1n)] }));

    expect(r1).toMatchObject({ applied: 1, skippedStale: 0 });
    expect(r2).toMatchObject({ applied: 0, skippedStale: 1 });
    const expected = { ticks: tie.toString(), sha: sha256(later).toString('hex') };
    expect(await held(sql, 'k', 'tgt')).toEqual(expected);
    expect(await held(sql, 'k', 'tgt2')).toEqual(expected);
  });

  it('keeps the chunks of two rows with the same content apart', async () => {
    const { sql, writer } = await freshTarget('shared content');
    const blob = randomBytes(MiB + 17);
    await writer.apply(batch({ chunks: [...chunksOf('a', blob, 256 * 1024), ...chunksOf('b', blob, 256 * 1024)] }));

    expect(await writer.apply(batch({ rows: [chunkedVersion('a', 1n, blob, 256 * 1024)] }))).toMatchObject({ applied: 1 });
    expect(await writer.apply(batch({ rows: [chunkedVersion('b', 1n, blob, 256 * 1024)] }))).toMatchObject({ applied: 1, incompleteContent: [] });
    expect(await rowsOf(sql, `SELECT key, encode(sha256(content), 'hex') AS sha FROM tgt.referral_attachment ORDER BY key`))
      .toEqual(['a', 'b'].map((key) => ({ key, sha: sha256(blob).toString('hex') })));
    expect(await rowsOf(sql, 'SELECT count(*)::int AS n FROM tgt.hw_chunks')).toEqual([{ n: 0 }]);
  });

  it('reports constraint and data errors as DB_CONSTRAINT and stays usable', async () => {
    const { sql, writer } = await freshTarget('constraint');
    await sql.query(`ALTER TABLE tgt.referral_attachment ADD CONSTRAINT no_forbidden CHECK (name <> 'forbidden')`);

    const check = await rejection(writer.apply(batch({ rows: [version('x', 1n, Buffer.from('x'), { name: 'forbidden' })] })));
    expect(check.code).toBe('DB_CONSTRAINT');
    const nul = await rejection(writer.apply(batch({ rows: [version('y', 1n, Buffer.from('y'), { name: 'a\u0000b' })] })));
    expect(nul.code).toBe('DB_CONSTRAINT');
    const size = await rejection(writer.apply(batch({ rows: [version('z', 1n, Buffer.from('z'), { size: 1.5 })] })));
    expect(size.code).toBe('DB_CONSTRAINT');
    expect(size.message).toMatch(/"z".*size/);

    expect(await writer.apply(batch({ rows: [version('ok', 1n, Buffer.from('ok'))] }))).toMatchObject({ applied: 1 });
  });

  it('moves watermarks forward only and computes consistent_as_of over every partition', async () => {
    const { writer } = await freshTarget('watermarks');
    const big = 2n ** 60n;
    const mark = (partition: number, watermark: bigint, scope = '*') => ({ table: TABLE, tenant: '', scope, topic: TOPIC, partition, watermark });
    const offsets = [0, 1].map((partition) => ({ topic: TOPIC, partition, nextOffset: 1n }));

    await writer.apply(batch({ watermarks: [mark(0, big + 100n)], offsets }));
    expect(await writer.consistentAsOf(GROUP)).toEqual([{ table: TABLE, scope: '*', watermark: null }]);
    await writer.apply(batch({ watermarks: [mark(1, big + 50n), mark(0, big + 80n)] }));
    expect(await writer.consistentAsOf(GROUP)).toEqual([{ table: TABLE, scope: '*', watermark: big + 50n }]);
    await writer.apply(batch({ watermarks: [mark(1, big + 120n), mark(0, 7n, 'bu1'), mark(1, 9n, 'bu1')] }));
    expect(await writer.consistentAsOf(GROUP)).toEqual([
      { table: TABLE, scope: '*', watermark: big + 100n },
      { table: TABLE, scope: 'bu1', watermark: 7n },
    ]);
    expect(await writer.consistentAsOfForPartitions(GROUP, new Map([[TOPIC, 3]]))).toEqual([
      { table: TABLE, scope: '*', watermark: null },
      { table: TABLE, scope: 'bu1', watermark: null },
    ]);
    expect(await writer.consistentAsOfForPartitions(GROUP, new Map([[TOPIC, 2]]))).toEqual([
      { table: TABLE, scope: '*', watermark: big + 100n },
      { table: TABLE, scope: 'bu1', watermark: 7n },
    ]);
    expect(await writer.consistentAsOf('another-group')).toEqual([]);
  });

  it('survives idle connections being killed, telling the observer', async () => {
    const db = await createTestDatabase('pgwriter idle error');
    dropWhenPassed(db);
    const idleErrors: HighwaterError[] = [];
    const url = new URL(db.url);
    url.searchParams.set('application_name', 'hw-pgwriter-idle');
    const writer = new PostgresWriter(new pg.Pool({ connectionString: url.toString(), max: 2 }), {
      schema: 'tgt', tables: [{ name: TABLE }], onIdleError: (e) => idleErrors.push(e),
    });
    onTestFinished(() => writer.close());
    await writer.migrate();

    await db.pool().query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hw-pgwriter-idle' AND datname = current_database()`);
    await expect.poll(() => idleErrors.length).toBeGreaterThan(0);
    expect(idleErrors[0]!.code).toBe('DB_UNAVAILABLE');
    expect(await writer.apply(batch({ rows: [version('after', 1n, Buffer.from('x'))] }))).toMatchObject({ applied: 1 });
  });

  it('migrates idempotently, recording each numbered migration once', async () => {
    const { sql, writer } = await freshTarget('migrate');
    await writer.migrate();
    expect(await rowsOf(sql, 'SELECT name FROM tgt.hw_migrations ORDER BY name')).toEqual([{ name: '001_bookkeeping.sql' }, { name: '002_observed_versions.sql' }]);
    expect(await rowsOf(sql, `SELECT indexname FROM pg_indexes WHERE schemaname = 'tgt' AND tablename = 'referral_attachment' ORDER BY 1`))
      .toEqual([{ indexname: 'referral_attachment_path_idx' }, { indexname: 'referral_attachment_pkey' }]);
  });
});
