import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { BlobChange, BlobChunk } from '../../src/contract.js';
import type { RowToApply } from '../../src/apply/sink/writer.js';
import {
  STAGE_COLUMNS, applyDeletes, blobTableDdl, bookkeepingDdl, copyIntoStage, createStageTable,
  deleteUsedChunks, markIncompleteContent, markMissingParents, migrationLock, pathIndexName, renderMigration,
  selectConsistentAsOfWithPartitions, selectStoredOffsets, stageChunks, stageValues, targetTable, targetTableName,
  upsertFromStage, upsertOffsets, upsertWatermarks, VERSION_OF, parkRows, releaseParked,
} from '../../consumers/postgres/dialect.js';
import { compareVersions } from '../../src/apply/reduce.js';
import { reduceLatest } from '../../src/apply/sink/batch.js';

const T = targetTable('tgt', 'Referral.Attachment');
const HOSTILE = `x'); DROP TABLE tgt.hw_offsets; --`;

function row(key: string, modifiedOn: bigint, sha: string | null, over: Partial<BlobChange> = {}): RowToApply {
  return {
    change: {
      table: 'Referral.Attachment', tenant: 'north', key, name: `${key}.pdf`, pathLocator: `/${key}/`, parentPathLocator: null,
      isDirectory: false, size: 3, attributes: { creationTime: 1n, isHidden: true }, modifiedOn, observed: modifiedOn, businessUnit: 'bu1',
      content: { kind: 'inline', bytes: Buffer.from('abc') }, contentSha256: sha === null ? null : Buffer.from(sha, 'hex'),
      runId: 'run-1', window: { start: 0n, end: 10n }, ...over,
    },
  };
}

describe('target table names', () => {
  it('maps configured names to valid identifiers deterministically', () => {
    expect(targetTableName('Referral.Attachment')).toBe('referral_attachment');
    expect(targetTableName('client-attachment.v2')).toBe('client_attachment_v2');
    expect(targetTableName('2020_docs')).toBe('t_2020_docs');
    expect(targetTableName('hw_offsets')).toBe('t_hw_offsets');
    expect(targetTableName('Referral.Attachment')).toBe(targetTableName('Referral.Attachment'));
  });

  it('keeps long names within PostgreSQL 63-byte identifiers, index name included, and apart by a hash', () => {
    const a = targetTableName(`${'a'.repeat(90)}.one`);
    const b = targetTableName(`${'a'.repeat(90)}.two`);
    expect(a).not.toBe(b);
    expect(a.length).toBeLessThanOrEqual(54);
    expect(pathIndexName(a).length).toBeLessThanOrEqual(63);
    expect(a).toMatch(/^a+_[0-9a-f]{8}$/);
  });
});

describe('migrations', () => {
  it('renders placeholders as validated, quoted identifiers', () => {
    expect(renderMigration('CREATE TABLE {{schema}}.{{table}} ({{ index_path }})', { schema: 's', table: 't', index_path: 'i' }))
      .toBe('CREATE TABLE "s"."t" ("i")');
    expect(() => renderMigration('{{schema}}', { schema: 'a"b' })).toThrow(/invalid identifier/);
    expect(() => renderMigration('{{owner}}', { schema: 's' })).toThrow(/unknown placeholder/);
    expect(() => renderMigration('{{table}}', { schema: 's' })).toThrow(/no value/);
  });

  it('renders the shipped bookkeeping and blob-table files completely', () => {
    const dir = new URL('../../schema/target-postgres/', import.meta.url);
    const bookkeeping = bookkeepingDdl(readFileSync(new URL('001_bookkeeping.sql', dir), 'utf8'), 'tgt');
    expect(bookkeeping.text).not.toMatch(/\{\{/);
    expect(bookkeeping.text).toContain('CREATE TABLE IF NOT EXISTS "tgt".hw_offsets');
    const blob = blobTableDdl(readFileSync(new URL('blob-table.sql', dir), 'utf8'), T);
    expect(blob.text).toContain('CREATE TABLE IF NOT EXISTS "tgt"."referral_attachment"');
    expect(blob.text).toContain('CREATE INDEX IF NOT EXISTS "referral_attachment_path_idx" ON "tgt"."referral_attachment"');
    expect(blob.values).toEqual([]);
  });

  it('locks per schema with a stable advisory key', () => {
    expect(migrationLock('tgt')).toEqual(migrationLock('tgt'));
    expect(migrationLock('tgt').values).not.toEqual(migrationLock('other').values);
    expect(String(migrationLock('tgt').values[0])).toMatch(/^-?\d+$/);
  });
});

describe('staging', () => {
  it('declares the staging table with the COPY columns, a status, and drops it at commit', () => {
    const ddl = createStageTable().text;
    expect(ddl).toMatch(/^CREATE TEMP TABLE IF NOT EXISTS hw_stage/);
    expect(ddl).toMatch(/ON COMMIT DELETE ROWS$/);
    for (const c of ['content_kind text', 'content_sha256 bytea', 'chunk_count integer', 'modified_on_ticks bigint', 'source_partition integer', 'source_offset bigint', 'status text']) {
      expect(ddl).toContain(c);
    }
    expect(copyIntoStage().text).toBe(`COPY pg_temp.hw_stage (${STAGE_COLUMNS.map((c) => c.name).join(', ')}) FROM STDIN (FORMAT binary)`);
  });

  it('lays a row out in COPY column order, with source position when the row carries it', () => {
    const values = stageValues({ ...row('k', 2n ** 60n, 'aa'), sourcePartition: 3, sourceOffset: 99n });
    const byName = Object.fromEntries(STAGE_COLUMNS.map((c, i) => [c.name, values[i]]));
    expect(values).toHaveLength(STAGE_COLUMNS.length);
    expect(byName).toMatchObject({
      tenant: 'north', key: 'k', size: 3, content_kind: 'inline', chunk_count: null, modified_on_ticks: 2n ** 60n,
      creation_time_ticks: 1n, last_write_time_ticks: null, is_hidden: true, is_readonly: null, source_partition: 3, source_offset: 99n,
    });
    expect(byName.content).toEqual(Buffer.from('abc'));
  });

  it('stages chunked rows without content and with their chunk count', () => {
    const chunked = row('k', 1n, 'aa', { content: { kind: 'chunked', chunkCount: 3, chunkSize: 10, totalSize: 25 }, size: 25 });
    const byName = Object.fromEntries(STAGE_COLUMNS.map((c, i) => [c.name, stageValues(chunked)[i]]));
    expect(byName).toMatchObject({ content: null, content_kind: 'chunked', chunk_count: 3, source_partition: null });
  });
});

describe('versions', () => {
  it('orders by ModifiedOn (NULL first), then observation, the hash only on a full tie', () => {
    const v = (m: bigint | null, observed: bigint, sha: string | null) => ({ modifiedOn: m, observed, contentSha256: sha === null ? null : Buffer.from(sha, 'hex') });
    expect(compareVersions(v(2n, 1n, '00'), v(1n, 9n, 'ff'))).toBe(1);
    expect(compareVersions(v(null, 9n, 'ff'), v(1n, 1n, '00'))).toBe(-1);
    expect(compareVersions(v(1n, 5n, '0a'), v(1n, 4n, '0b'))).toBe(1);
    expect(compareVersions(v(1n, 4n, '0a'), v(1n, 4n, '0b'))).toBe(-1);
    expect(compareVersions(v(1n, 4n, null), v(1n, 4n, '00'))).toBe(-1);
    expect(compareVersions(v(1n, 4n, 'ab'), v(1n, 4n, 'ab'))).toBe(0);
  });

  it('reduces a batch to the greatest version per tenant and key, whatever the order', () => {
    const rows = [row('a', 1n, 'ff'), row('a', 2n, '00'), row('b', 5n, '01'), row('a', 2n, '10'), row('b', 5n, '01')];
    for (const ordered of [rows, [...rows].reverse()]) {
      const { latest, superseded } = reduceLatest(ordered);
      expect(latest.map((r) => [r.change.key, r.change.modifiedOn, r.change.contentSha256?.toString('hex')])).toEqual(
        expect.arrayContaining([['a', 2n, '10'], ['b', 5n, '01']]),
      );
      expect(latest).toHaveLength(2);
      expect(superseded).toHaveLength(3);
    }
    const tenants = reduceLatest([row('a', 1n, null), row('a', 1n, null, { tenant: 'south' })]);
    expect(tenants.latest).toHaveLength(2);
  });
});

describe('statements', () => {
  it('guards the upsert by tombstone observation and by (ModifiedOn, observation, hash), newer strictly wins', () => {
    const q = upsertFromStage(T);
    expect(q.text).toContain('INSERT INTO "tgt"."referral_attachment" AS t');
    expect(q.text).toContain('FROM pg_temp.hw_stage s');
    expect(q.text).toContain('coalesce(d.observed_ticks, d.modified_on_ticks) >= s.observed_ticks');
    expect(q.text).toContain('ON CONFLICT (tenant, key) DO UPDATE SET');
    expect(q.text).toContain(`WHERE ${VERSION_OF('t')} < ${VERSION_OF('excluded')}`);
    expect(VERSION_OF('t')).toBe(`(coalesce(t.modified_on_ticks, (-9223372036854775808)::bigint), coalesce(coalesce(t.observed_ticks, t.modified_on_ticks), (-9223372036854775808)::bigint), coalesce(t.content_sha256, '\\x'::bytea))`);
    expect(q.text).not.toMatch(/content_kind|chunk_count|status =/);
    expect(q.values).toEqual(['Referral.Attachment']);
  });

  it('holds back missing parents and incomplete content only when not stale', () => {
    const missing = markMissingParents(T);
    expect(missing.text).toMatch(/^WITH RECURSIVE parents/);
    // The target's path index is probed once per distinct parent that the batch does not place, not per row.
    expect(missing.text).toContain('t.tenant = o.tenant AND t.path_locator = o.path');
    expect(missing.text).not.toContain('t.path_locator = s.parent_path_locator');
    // The probes of the target's rows and of hw_tombstones (stale) run after the cut of the rows still unplaced.
    expect(missing.text.indexOf('unplaced AS MATERIALIZED')).toBeLessThan(missing.text.indexOf(`>= ${VERSION_OF('s')}`));
    expect(missing.text).toContain('RETURNING s.key');
    expect(missing.values).toEqual(['Referral.Attachment']);
    for (const q of [missing, markIncompleteContent(T)]) {
      expect(q.text).toContain(`>= ${VERSION_OF('s')}`);
      expect(q.text).toContain('coalesce(d.observed_ticks, d.modified_on_ticks) >= s.observed_ticks');
    }
  });

  it('puts every value in parameters, never in the text', () => {
    const chunk: BlobChunk = { table: 'Referral.Attachment', key: HOSTILE, contentSha256: Buffer.alloc(32), index: 0, count: 1, bytes: Buffer.from('x') };
    const statements = [
      applyDeletes(T, [{ table: 'Referral.Attachment', tenant: HOSTILE, key: HOSTILE, modifiedOn: 2n ** 60n + 1n, observed: 2n ** 60n + 2n }]),
      parkRows(T, [{ tenant: HOSTILE, key: HOSTILE, modifiedOn: null, observed: 5n, reason: HOSTILE }]),
      releaseParked(T, [{ tenant: HOSTILE, key: HOSTILE }]),
      upsertOffsets('tgt', HOSTILE, [{ topic: HOSTILE, partition: 0, nextOffset: 1n }]),
      upsertWatermarks('tgt', HOSTILE, [{ table: HOSTILE, tenant: HOSTILE, scope: HOSTILE, topic: HOSTILE, partition: 1, watermark: 5n }]),
      selectStoredOffsets('tgt', HOSTILE, [HOSTILE]),
      deleteUsedChunks(T, [row(HOSTILE, 1n, 'aa', { content: { kind: 'chunked', chunkCount: 2, chunkSize: 1, totalSize: 2 } })]),
      ...stageChunks('tgt', [chunk]),
    ];
    for (const q of statements) {
      expect(q.text).not.toContain('DROP');
      expect(JSON.stringify(q.values, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))).toContain('DROP');
    }
  });

  it('sends ticks and offsets as exact decimal strings', () => {
    const q = applyDeletes(T, [{ table: 'Referral.Attachment', tenant: '', key: 'k', modifiedOn: 2n ** 53n + 1n, observed: 2n ** 53n + 3n }]);
    expect(q.values[3]).toEqual(['9007199254740993']);
    expect(q.values[4]).toEqual(['9007199254740995']);
    expect(upsertOffsets('tgt', 'g', [{ topic: 't', partition: 0, nextOffset: 2n ** 62n }]).values[3]).toEqual(['4611686018427387904']);
  });

  it('keeps the greatest watermark and the last offset per partition of a batch', () => {
    const mark = (partition: number, watermark: bigint, scope = '*') => ({ table: 'T', tenant: '', scope, topic: 'top', partition, watermark });
    const w = upsertWatermarks('tgt', 'g', [mark(0, 5n), mark(0, 9n), mark(0, 7n), mark(1, 3n), mark(0, 1n, 'bu1')]);
    expect(w.values[5]).toEqual([0, 1, 0]);
    expect(w.values[6]).toEqual(['9', '3', '1']);
    expect(w.text).toContain('WHERE w.watermark_ticks < excluded.watermark_ticks');
    const o = upsertOffsets('tgt', 'g', [{ topic: 'a', partition: 0, nextOffset: 5n }, { topic: 'a', partition: 0, nextOffset: 8n }]);
    expect(o.values.slice(1)).toEqual([['a'], [0], ['8']]);
  });

  it('splits chunk staging by bytes and rows', () => {
    const chunk = (index: number): BlobChunk => ({ table: 'T', key: 'k', contentSha256: Buffer.alloc(32), index, count: 5, bytes: Buffer.alloc(400) });
    const qs = stageChunks('tgt', [0, 1, 2, 3, 4].map(chunk), 1000);
    expect(qs.map((q) => q.values.length / 6)).toEqual([2, 2, 1]);
    expect(qs[0]!.text).toContain('ON CONFLICT DO NOTHING');
    expect(qs[0]!.text).toContain('($7, $8, $9, $10, $11, $12)');
    expect(stageChunks('tgt', [])).toEqual([]);
  });

  it('passes partition counts for consistent_as_of as parallel arrays', () => {
    const q = selectConsistentAsOfWithPartitions('tgt', 'g', new Map([['a', 3], ['b', 1]]));
    expect(q.values).toEqual(['g', ['a', 'b'], [3, 1]]);
    expect(q.text).toContain('p.marked >= k.partitions');
  });
});
