/**
 * The SQL Server source connector and target writer against a real SQL Server.
 *
 * Runs only where one is reachable: HIGHWATER_TEST_MSSQL_URL (an mssql connection string, ADO style or
 * mssql://user:password@host:port/?encrypt=false&trustServerCertificate=true, for a login that may create databases
 * and holds VIEW SERVER STATE), or a Docker engine, on which testcontainers starts
 * mcr.microsoft.com/mssql/server:2022-latest. Otherwise the whole file is skipped and says so.
 *
 * Every test owns a database (hw_t_mssql_<test>_<hex>), dropped only when the test passed, so a failure stays
 * inspectable. A FileTable needs FILESTREAM, which a container does not have: the source is an ordinary table with
 * a FileTable's columns (stream_id, file_stream, name, path_locator/parent_path_locator as hierarchyid, …) and a
 * metadata table with ModifiedOn datetime2(7), as the users' cw_*Base tables have.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import sql from 'mssql';
import { GenericContainer, Wait, getContainerRuntimeClient, type StartedTestContainer } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { mssqlConfig, SqlServerSource } from '../../connectors/sqlserver/source.js';
import { SqlServerWriter } from '../../consumers/sqlserver/writer.js';
import type { BlobChange, BlobChunk, SourceRow, Ticks } from '../../src/contract.js';
import { HighwaterError, coerceError } from '../../src/errors.js';
import type { ScopeFilter, SourceTableSpec } from '../../src/poll/source/connector.js';
import { quoteMssql } from '../../src/sql/ident.js';
import type { ApplyBatch, RowToApply } from '../../src/apply/sink/writer.js';
import { isoFromTicks, ticksFromIso, ticksFromMillis, TICKS_PER_MINUTE } from '../../src/time/ticks.js';

const IMAGE = 'mcr.microsoft.com/mssql/server:2022-latest';
const SA_PASSWORD = `Hw-${randomBytes(12).toString('hex')}!`;

/** Where the tests can reach a SQL Server, or why they cannot. */
async function availability(): Promise<{ url: string } | { docker: true } | { skip: string }> {
  const url = process.env.HIGHWATER_TEST_MSSQL_URL;
  if (url) return { url };
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 15 s')), 15_000));
  try {
    await Promise.race([getContainerRuntimeClient(), timeout]);
    return { docker: true };
  } catch (err) {
    return { skip: `HIGHWATER_TEST_MSSQL_URL is not set and no Docker engine answers (${coerceError(err).message})` };
  }
}

const where = await availability();
const skipReason = 'skip' in where ? where.skip : null;
if (skipReason !== null) console.log(`[highwater] SKIPPED test/integration/sqlserver.test.ts: ${skipReason}.`);

let serverUrl = 'url' in where ? where.url : '';
let container: StartedTestContainer | undefined;

async function startContainer(): Promise<string> {
  container = await new GenericContainer(IMAGE)
    .withEnvironment({ ACCEPT_EULA: 'Y', MSSQL_SA_PASSWORD: SA_PASSWORD, MSSQL_PID: 'Developer' })
    .withExposedPorts(1433)
    .withWaitStrategy(Wait.forLogMessage(/SQL Server is now ready for client connections/))
    .withStartupTimeout(240_000)
    .start();
  return `mssql://sa:${encodeURIComponent(SA_PASSWORD)}@${container.getHost()}:${container.getMappedPort(1433)}/master?encrypt=false&trustServerCertificate=true`;
}

/** A pool on `database` (or the login's default), retried while a fresh container still refuses logins. */
async function connect(database?: string, max = 4): Promise<sql.ConnectionPool> {
  const config = { ...mssqlConfig(serverUrl), ...(database ? { database } : {}), pool: { max } };
  for (let attempt = 1; ; attempt++) {
    try {
      return await new sql.ConnectionPool(config).connect();
    } catch (err) {
      if (attempt >= 30) throw err;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

type Inputs = Record<string, [sql.ISqlType, unknown]>;

async function exec(pool: sql.ConnectionPool | sql.Transaction, text: string, inputs: Inputs = {}): Promise<Record<string, unknown>[]> {
  const request = pool instanceof sql.Transaction ? new sql.Request(pool) : new sql.Request(pool);
  for (const [name, [type, value]] of Object.entries(inputs)) request.input(name, type, value);
  const result = Object.keys(inputs).length === 0 ? await request.batch(text) : await request.query(text);
  return (result.recordset ?? []) as Record<string, unknown>[];
}

interface TestDb {
  readonly name: string;
  readonly pool: sql.ConnectionPool;
}

/** A fresh database named after the test; dropped when the test passed, kept (pool closed) when it failed. */
async function freshDatabase(label: string): Promise<TestDb> {
  const name = `hw_t_mssql_${label.toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 60)}_${randomBytes(4).toString('hex')}`;
  const master = await connect(undefined, 1);
  try {
    await exec(master, `CREATE DATABASE ${quoteMssql(name)}`);
  } finally {
    await master.close();
  }
  const pool = await connect(name);
  onTestFinished(async ({ task }) => {
    await pool.close();
    if (task.result?.state !== 'pass') return;
    const m = await connect(undefined, 1);
    try {
      await exec(m, `ALTER DATABASE ${quoteMssql(name)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE ${quoteMssql(name)};`);
    } finally {
      await m.close();
    }
  });
  return { name, pool };
}

// ---------------------------------------------------------------------------------------------------- source

const spec: SourceTableSpec = {
  blob: { schema: 'src', table: 'ReferralAttachment' },
  metadata: { schema: 'src', table: 'cw_referralattachmentBase', joinColumn: 'stream_id' },
  keyColumn: 'stream_id',
  modifiedOnColumn: 'ModifiedOn',
  columns: {
    name: 'name', content: 'file_stream', isDirectory: 'is_directory', pathLocator: 'path_locator',
    parentPathLocator: 'parent_path_locator', creationTime: 'creation_time', lastWriteTime: 'last_write_time',
  },
  businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'src', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
  inlineContentMaxBytes: 64 * 1024,
  maxdop: 1,
};

const SOURCE_DDL = `
CREATE SCHEMA src;
GO
CREATE TABLE src.ReferralAttachment (
  stream_id           uniqueidentifier  NOT NULL PRIMARY KEY,
  file_stream         varbinary(max)    NULL,
  name                nvarchar(255)     NOT NULL,
  path_locator        hierarchyid       NOT NULL UNIQUE,
  parent_path_locator hierarchyid       NULL,
  is_directory        bit               NOT NULL DEFAULT 0,
  creation_time       datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET(),
  last_write_time     datetimeoffset(7) NOT NULL DEFAULT SYSDATETIMEOFFSET()
);
CREATE TABLE src.cw_referralattachmentBase (
  stream_id           uniqueidentifier NOT NULL PRIMARY KEY,
  ModifiedOn          datetime2(7)     NOT NULL,
  OwningBusinessUnit  uniqueidentifier NULL
);
CREATE INDEX ix_modified ON src.cw_referralattachmentBase (ModifiedOn, stream_id);
CREATE TABLE src.LA_BU (BusinessUnitId uniqueidentifier NOT NULL PRIMARY KEY);`;

async function sourceDb(label: string): Promise<TestDb & { source: SqlServerSource }> {
  const db = await freshDatabase(label);
  for (const batch of SOURCE_DDL.split(/^GO$/m)) await exec(db.pool, batch);
  return { ...db, source: new SqlServerSource(db.pool, spec) };
}

interface SeedRow {
  key?: string;
  name?: string;
  path: string;
  parent?: string | null;
  dir?: boolean;
  content?: Buffer | null;
  modifiedOn: Ticks;
  bu?: string | null;
}

/** Inserts a blob row and its metadata row; returns the key as the connector reports it (lower case). */
async function seed(pool: sql.ConnectionPool, row: SeedRow): Promise<string> {
  const key = row.key ?? randomUUID();
  await exec(pool, `
    INSERT INTO src.ReferralAttachment (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory)
    VALUES (@key, @content, @name, CAST(@path AS hierarchyid), CAST(@parent AS hierarchyid), @dir);
    INSERT INTO src.cw_referralattachmentBase (stream_id, ModifiedOn, OwningBusinessUnit)
    VALUES (@key, CONVERT(datetime2(7), @modified, 126), @bu);`, {
    key: [sql.UniqueIdentifier(), key],
    content: [sql.VarBinary(sql.MAX), row.content === undefined ? Buffer.from(row.path) : row.content],
    name: [sql.NVarChar(255), row.name ?? row.path],
    path: [sql.VarChar(400), row.path],
    parent: [sql.VarChar(400), row.parent ?? null],
    dir: [sql.Bit(), row.dir ?? false],
    modified: [sql.VarChar(27), isoFromTicks(row.modifiedOn).slice(0, -1)],
    bu: [sql.UniqueIdentifier(), row.bu ?? null],
  });
  return key.toLowerCase();
}

const T0 = ticksFromIso('2024-03-01T10:00:00.1234567Z');
const WINDOW = { start: T0 - TICKS_PER_MINUTE, end: T0 + TICKS_PER_MINUTE };
const scope: ScopeFilter = { businessUnit: null, excludedKeys: [] };

async function allPages(source: SqlServerSource, step: 'roots' | 'children', limit: number, filter = scope, window = WINDOW): Promise<SourceRow[][]> {
  const pages: SourceRow[][] = [];
  let after: { modifiedOn: Ticks; key: string } | null = null;
  for (;;) {
    const rows = await source.readPage({ step, window, after, limit, ...filter });
    if (rows.length === 0) return pages;
    pages.push(rows);
    const last = rows[rows.length - 1]!;
    after = { modifiedOn: last.modifiedOn!, key: last.key };
  }
}

// ---------------------------------------------------------------------------------------------------- target

const TABLE = 'Referral.Attachment';
const GROUP = 'highwater.mssqlwriter';
const TOPIC = 'highwater.src.Referral.Attachment';
const MiB = 1 << 20;
const sha256 = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

async function targetDb(label: string): Promise<TestDb & { writer: SqlServerWriter }> {
  const db = await freshDatabase(label);
  const writer = await writerFor(db.name, 'tgt');
  return { ...db, writer };
}

async function writerFor(database: string, schema: string): Promise<SqlServerWriter> {
  const writer = new SqlServerWriter(await connect(database, 2), { schema, tables: [{ name: TABLE }] });
  onTestFinished(() => writer.close());
  await writer.migrate();
  return writer;
}

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

async function held(pool: sql.ConnectionPool, key: string, schema = 'tgt'): Promise<{ ticks: string; sha: string | null } | undefined> {
  const rows = await exec(pool, `SELECT CONVERT(varchar(20), modified_on_ticks) AS ticks, LOWER(CONVERT(varchar(64), content_sha256, 2)) AS sha
    FROM ${quoteMssql(schema)}.[referral_attachment] WHERE [key] = @key`, { key: [sql.NVarChar(450), key] });
  return rows[0] as { ticks: string; sha: string | null } | undefined;
}

async function count(pool: sql.ConnectionPool, table: string): Promise<number> {
  return Number((await exec(pool, `SELECT COUNT(*) AS n FROM tgt.${quoteMssql(table)}`))[0]!.n);
}

async function rejection(promise: Promise<unknown>): Promise<HighwaterError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(HighwaterError);
  return error as HighwaterError;
}

// ---------------------------------------------------------------------------------------------------- tests

describe.skipIf(skipReason !== null)('SQL Server (real server)', () => {
  beforeAll(async () => {
    if ('docker' in where) serverUrl = await startContainer();
  }, 300_000);

  afterAll(async () => {
    await container?.stop();
  });

  describe('SqlServerSource', () => {
    it('pages through equal timestamps at batch boundaries, neither skipping nor repeating, exact to 100 ns', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const stamps = [...Array(10).fill(T0), ...Array(10).fill(T0 + 1n), ...Array(5).fill(T0 + 2n)] as Ticks[];
      for (const [i, ticks] of stamps.entries()) await seed(pool, { path: `/${i + 1}/`, modifiedOn: ticks });

      const pages = await allPages(source, 'roots', 4);
      const rows = pages.flat();
      expect(pages.every((p) => p.length <= 4)).toBe(true);
      expect(new Set(rows.map((r) => r.key)).size).toBe(25);
      expect(rows.map((r) => r.modifiedOn)).toEqual(stamps);
      const serverOrder = await exec(pool, 'SELECT LOWER(CONVERT(varchar(36), stream_id)) AS k FROM src.cw_referralattachmentBase ORDER BY ModifiedOn, stream_id');
      expect(rows.map((r) => r.key)).toEqual(serverOrder.map((r) => r.k));
    });

    it('reads the window (start, end] exactly', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const window = { start: T0, end: T0 + 10n };
      const keys = new Map<Ticks, string>();
      for (const [i, ticks] of [T0, T0 + 1n, T0 + 10n, T0 + 11n].entries()) keys.set(ticks, await seed(pool, { path: `/${i + 1}/`, modifiedOn: ticks }));
      const rows = (await allPages(source, 'roots', 10, scope, window)).flat();
      expect(rows.map((r) => r.key)).toEqual([keys.get(T0 + 1n), keys.get(T0 + 10n)]);
    });

    it('splits roots and children, and finds the parents of window children outside the window', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const folder = await seed(pool, { path: '/1/', dir: true, content: null, modifiedOn: T0 - 100n * TICKS_PER_MINUTE });
      const root = await seed(pool, { path: '/2/', modifiedOn: T0 });
      const child = await seed(pool, { path: '/1/1/', parent: '/1/', modifiedOn: T0 + 5n });

      expect((await allPages(source, 'roots', 10)).flat().map((r) => r.key)).toEqual([root]);
      const children = (await allPages(source, 'children', 10)).flat();
      expect(children.map((r) => [r.key, r.pathLocator, r.parentPathLocator])).toEqual([[child, '/1/1/', '/1/']]);
      const listed = await source.readReferencedParents({ window: WINDOW, ...scope });
      expect(listed).toEqual(['/1/']);
      const parents = await source.readMissingParentsPage({ parents: listed, after: null, limit: 10, excludedKeys: scope.excludedKeys });
      expect(parents.map((r) => [r.key, r.isDirectory, r.content, r.contentLength])).toEqual([[folder, true, null, null]]);
      expect(await source.readMissingParentsPage({ parents: listed, after: { modifiedOn: parents[0]!.modifiedOn!, key: folder }, limit: 10, excludedKeys: scope.excludedKeys })).toEqual([]);
      expect((await source.readByPathLocators(['/1/'])).map((r) => r.key)).toEqual([folder]);
      expect((await source.readByKeys([child.toUpperCase(), 'not-a-guid'])).map((r) => r.key)).toEqual([child]);
    });

    it('scopes to one business unit and to the BU table, and leaves out excluded keys', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const [a, b, unlisted] = [randomUUID(), randomUUID(), randomUUID()];
      await exec(pool, 'INSERT INTO src.LA_BU VALUES (@a), (@b)', { a: [sql.UniqueIdentifier(), a], b: [sql.UniqueIdentifier(), b] });
      const inA = await seed(pool, { path: '/1/', modifiedOn: T0, bu: a });
      const inB = await seed(pool, { path: '/2/', modifiedOn: T0, bu: b });
      await seed(pool, { path: '/3/', modifiedOn: T0, bu: unlisted });
      const excluded = await seed(pool, { path: '/4/', modifiedOn: T0, bu: a });

      const keys = async (filter: ScopeFilter) => (await allPages(source, 'roots', 10, filter)).flat().map((r) => r.key).sort();
      expect(await keys(scope)).toEqual([inA, inB, excluded].sort());
      expect(await keys({ businessUnit: a.toUpperCase(), excludedKeys: [] })).toEqual([inA, excluded].sort());
      // The seeds list excluded ids in upper case; a malformed id must not exclude everything.
      expect(await keys({ businessUnit: null, excludedKeys: [excluded.toUpperCase(), 'not-a-guid'] })).toEqual([inA, inB].sort());
      const row = (await source.readByKeys([inA]))[0]!;
      expect(row.businessUnit).toBe(a.toLowerCase());
    });

    it('inlines small content, reads large content in server-side slices', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const small = randomBytes(1000);
      const large = randomBytes(300 * 1024);
      const s = await seed(pool, { path: '/1/', modifiedOn: T0, content: small });
      const l = await seed(pool, { path: '/2/', modifiedOn: T0 + 1n, content: large });

      const rows = (await allPages(source, 'roots', 10)).flat();
      expect(rows.map((r) => [r.key, r.contentLength, r.content?.equals(small) ?? null])).toEqual([[s, 1000, true], [l, large.length, null]]);
      expect((await source.readContentSlice(l, 64 * 1024, 1000))!.equals(large.subarray(64 * 1024, 65 * 1024))).toBe(true);
      expect((await source.readContentSlice(l, large.length - 10, 1000))!.equals(large.subarray(large.length - 10))).toBe(true);
      expect(await source.readContentSlice(randomUUID(), 0, 10)).toBeNull();
      expect(rows[0]!.attributes.creationTime).toBeTypeOf('bigint');
    });

    it('tells which keys are still in the replicated set: blob row, metadata row', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const kept = await seed(pool, { path: '/1/', modifiedOn: T0 });
      const gone = await seed(pool, { path: '/2/', modifiedOn: T0 });
      const unlinked = await seed(pool, { path: '/3/', modifiedOn: T0 });
      await exec(pool, 'DELETE FROM src.ReferralAttachment WHERE stream_id = @k', { k: [sql.UniqueIdentifier(), gone] });
      await exec(pool, 'DELETE FROM src.cw_referralattachmentBase WHERE stream_id = @k', { k: [sql.UniqueIdentifier(), unlinked] });
      expect(await source.memberKeys({ keys: [kept, gone, unlinked, 'not-a-guid'], ...scope })).toEqual(new Set([kept]));
    });

    it('reads the server clock and the oldest open write transaction, in UTC', async ({ task }) => {
      const { pool, source } = await sourceDb(task.name);
      const clock = await source.clock();
      expect(clock - ticksFromMillis(Date.now())).toBeLessThan(5n * TICKS_PER_MINUTE);
      expect(ticksFromMillis(Date.now()) - clock).toBeLessThan(5n * TICKS_PER_MINUTE);

      const tx = new sql.Transaction(pool);
      await tx.begin();
      try {
        await exec(tx, 'INSERT INTO src.LA_BU VALUES (NEWID())');
        const open = await source.oldestOpenTransaction();
        expect(open.visible).toBe(true);
        if (!open.visible) return;
        expect(open.start).not.toBeNull();
        expect(open.start!).toBeLessThanOrEqual(await source.clock());
        const gap = open.start! > clock ? open.start! - clock : clock - open.start!;
        expect(gap).toBeLessThan(TICKS_PER_MINUTE);
      } finally {
        await tx.rollback();
      }
    });
  });

  describe('SqlServerWriter', () => {
    it('inserts new rows: 1 MiB blobs byte-identical, ticks beyond 2^53 exact, directories without content', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      const blobs = Array.from({ length: 3 }, () => randomBytes(MiB));
      const ticks = 2n ** 60n + 7n;
      const rows = [
        ...blobs.map((b, i) => version(`blob-${i}`, 1_000n + BigInt(i), b)),
        version('dir', 2n ** 53n + 1n, null),
        { ...version('attrs', ticks, Buffer.from('hello'), { attributes: { creationTime: 2n ** 55n + 3n, isReadonly: true } }), sourcePartition: 2, sourceOffset: 2n ** 40n },
      ];
      expect(await writer.apply(batch({ rows }))).toEqual({ applied: 5, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 });
      const stored = await exec(pool, `SELECT [key], LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', content), 2)) AS sha, CONVERT(int, DATALENGTH(content)) AS len
        FROM tgt.referral_attachment WHERE [key] LIKE 'blob-%' ORDER BY [key]`);
      expect(stored).toEqual(blobs.map((b, i) => ({ key: `blob-${i}`, sha: sha256(b).toString('hex'), len: MiB })));
      expect(await exec(pool, `SELECT CONVERT(varchar(20), modified_on_ticks) AS t, CONVERT(varchar(20), creation_time_ticks) AS c, is_readonly, source_partition,
        CONVERT(varchar(20), source_offset) AS o FROM tgt.referral_attachment WHERE [key] = 'attrs'`))
        .toEqual([{ t: ticks.toString(), c: (2n ** 55n + 3n).toString(), is_readonly: true, source_partition: 2, o: (2n ** 40n).toString() }]);
      expect(await held(pool, 'dir')).toEqual({ ticks: '9007199254740993', sha: null });
    });

    // The sink contract (test/contract/sink.ts, run on SQL Server by sink-sqlserver.test.ts) covers newer-wins,
    // guarded deletes and tombstones, held children, chunk assembly, offsets in the transaction and poison rows.
    // What follows is what it does not: SQL Server's types and limits, and a few finer points of the same guards.

    it('breaks a full tie (same ModifiedOn and observation) by the greater content hash, whatever the order', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      const [x, y] = [Buffer.from('version x'), Buffer.from('version y')];
      const greater = Buffer.compare(sha256(x), sha256(y)) > 0 ? x : y;
      await writer.apply(batch({ rows: [version('tie', 40n, x)] }));
      await writer.apply(batch({ rows: [version('tie', 40n, y)] }));
      await writer.apply(batch({ rows: [version('tie', 40n, x)] }));
      expect(await held(pool, 'tie')).toEqual({ ticks: '40', sha: sha256(greater).toString('hex') });
    });

    it('keeps the newest delete in hw_tombstones: an older delete does not move it back', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      const del = (ticks: bigint) => ({ table: TABLE, tenant: '', key: 'doc', modifiedOn: ticks, observed: ticks });
      await writer.apply(batch({ rows: [version('doc', 5n, Buffer.from('v5'))] }));
      expect(await writer.apply(batch({ deletes: [del(6n)] }))).toMatchObject({ deleted: 1 });
      await writer.apply(batch({ deletes: [del(4n)] }));
      expect(await exec(pool, 'SELECT CONVERT(varchar(20), modified_on_ticks) AS t FROM tgt.hw_tombstones')).toEqual([{ t: '6' }]);
    });

    it('lists held parents per tenant, and a delete observed after a held version removes it before its parent comes', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      const heldChild = version('other-tenant', 5n, Buffer.from('t'), { parentPathLocator: '/p/', tenant: 'south' });
      expect(await writer.apply(batch({ rows: [heldChild] }))).toMatchObject({ applied: 0, held: ['other-tenant'] });
      expect(await writer.heldParents(TABLE)).toEqual([{ tenant: 'south', parentPathLocator: '/p/', children: 1 }]);
      await writer.apply(batch({ deletes: [{ table: TABLE, tenant: 'south', key: 'other-tenant', modifiedOn: 5n, observed: 6n }] }));
      expect(await count(pool, 'hw_held')).toBe(0);
      await writer.apply(batch({ rows: [version('p', 1n, null, { tenant: 'south' })] }));
      expect(await writer.existingPaths(TABLE, 'south', ['/p/', '/other-tenant/'])).toEqual(new Set(['/p/']));
    });

    it('assembles content whose last chunk is short, from chunks staged in any order', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      const blob = randomBytes(3 * MiB + 5);
      const chunks = chunksOf('big', blob, MiB);
      const done = await writer.apply(batch({ chunks: [chunks[3]!, chunks[1]!, chunks[2]!, chunks[0]!], rows: [chunkedVersion('big', 9n, blob, MiB)] }));
      expect(done).toEqual({ applied: 1, skippedStale: 0, deleted: 0, missingParent: [], incompleteContent: [], held: [], promoted: 0 });
      expect(await exec(pool, `SELECT LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', content), 2)) AS sha FROM tgt.referral_attachment WHERE [key] = 'big'`))
        .toEqual([{ sha: sha256(blob).toString('hex') }]);
      expect(await count(pool, 'hw_chunks')).toBe(0);
    });

    it('reports a key longer than nvarchar(450) as DB_CONSTRAINT and stays usable', async ({ task }) => {
      const { writer } = await targetDb(task.name);
      expect((await rejection(writer.apply(batch({ rows: [version('k'.repeat(451), 1n, Buffer.from('z'))] })))).code).toBe('DB_CONSTRAINT');
      expect(await writer.apply(batch({ rows: [version('ok', 1n, Buffer.from('ok'))] }))).toMatchObject({ applied: 1 });
    });

    it('moves watermarks forward only and computes consistent_as_of over every partition', async ({ task }) => {
      const { writer } = await targetDb(task.name);
      const big = 2n ** 60n;
      const mark = (partition: number, watermark: bigint, s = '*') => ({ table: TABLE, tenant: '', scope: s, topic: TOPIC, partition, watermark });
      const offsets = [0, 1].map((partition) => ({ topic: TOPIC, partition, nextOffset: 1n }));
      await writer.apply(batch({ watermarks: [mark(0, big + 100n)], offsets }));
      expect(await writer.consistentAsOf(GROUP)).toEqual([{ table: TABLE, scope: '*', watermark: null }]);
      await writer.apply(batch({ watermarks: [mark(1, big + 50n), mark(0, big + 80n)] }));
      expect(await writer.consistentAsOf(GROUP)).toEqual([{ table: TABLE, scope: '*', watermark: big + 50n }]);
      expect(await writer.consistentAsOfForPartitions(GROUP, new Map([[TOPIC, 3]]))).toEqual([{ table: TABLE, scope: '*', watermark: null }]);
    });

    it('migrates idempotently, recording each numbered migration once', async ({ task }) => {
      const { pool, writer } = await targetDb(task.name);
      await writer.migrate();
      expect(await exec(pool, 'SELECT name FROM tgt.hw_migrations ORDER BY name')).toEqual([{ name: '001_bookkeeping.sql' }, { name: '002_observed_versions.sql' }, { name: '003_held_children.sql' }]);
      expect(await exec(pool, `SELECT name FROM sys.indexes WHERE object_id = OBJECT_ID(N'tgt.referral_attachment') AND name = N'ix_hw_path_locator'`))
        .toEqual([{ name: 'ix_hw_path_locator' }]);
    });
  });
});
