import { describe, expect, it } from 'vitest';
import { HEADERS, type BlobChange } from '../../src/contract.js';
import { reduceBatch } from '../../src/apply/reduce.js';
import { createCodec, encodeSingleObject } from '../../src/events/codec.js';
import { changeHeaders, changeRecord, decodeRecord, expandDeletedBefore, markerRecord, tombstoneRecord, type InRecord, type OutRecord } from '../../src/events/records.js';
import { rabinFingerprint, schemaOf } from '../../src/events/schemas.js';
import { HighwaterError } from '../../src/errors.js';

const codec = createCodec({ kind: 'single-object' });

function change(overrides: Partial<BlobChange> = {}): BlobChange {
  const bytes = Buffer.from('hello');
  return {
    table: 'ReferralAttachment', tenant: 'gwent', key: '6f1c2f8e-0000-4000-8000-000000000001', name: 'a.txt',
    pathLocator: '/1/2/', parentPathLocator: '/1/', isDirectory: false, size: bytes.length,
    attributes: { creationTime: 638_000_000_000_000_001n, lastWriteTime: null, lastAccessTime: null, isReadonly: null, isHidden: true, isSystem: null, isArchive: false },
    modifiedOn: 17_637_000_000_000_001n, observed: 17_637_000_000_000_003n, businessUnit: 'bu-1',
    content: { kind: 'inline', bytes }, contentSha256: Buffer.alloc(32, 7), runId: 'run-1',
    window: { start: -22_089_888_000_000_000n, end: 17_637_000_000_000_009n },
    ...overrides,
  };
}

function incoming(out: OutRecord, offset = 0n): InRecord {
  return { topic: 't', partition: out.partition ?? 0, offset, key: Buffer.from(out.key), value: out.value, headers: out.headers };
}

describe('Avro single-object encoding', () => {
  it('uses the CRC-64-AVRO fingerprint of the Avro specification', () => {
    // Test vector from the Avro specification's test data: the schema "null".
    expect(rabinFingerprint('"null"').readBigUInt64LE()).toBe(7195948357588979594n);
  });

  it('frames values with the magic bytes and the schema fingerprint', () => {
    const buf = encodeSingleObject('WatermarkMarker', { table: 't', tenant: '', scope: '*', watermark_ticks: 1n, watermark: 'x', run_id: 'r', partition: 0 });
    expect(buf.subarray(0, 2)).toEqual(Buffer.from([0xc3, 0x01]));
    expect(buf.subarray(2, 10)).toEqual(schemaOf('WatermarkMarker').fingerprint);
  });

  it('round-trips a change with ticks beyond 2^53 and before 1970, exactly', async () => {
    const out = await changeRecord(codec, change());
    const event = await decodeRecord(codec, incoming(out));
    expect(event).toEqual({ type: 'change', change: change() });
    expect(out.headers['hw-modified-on-ticks']).toBe('17637000000000001');
    expect(out.headers['hw-modified-on']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  });

  it('puts the same headers, in the same order, on every change as the contract lists them', async () => {
    const headers = (c: BlobChange): [string, string][] => Object.entries(changeHeaders(c, codec.encoding));
    expect(headers(change())).toEqual([
      ['hw-kind', 'change'], ['hw-table', 'ReferralAttachment'], ['hw-tenant', 'gwent'], ['hw-encoding', 'single-object'],
      ['hw-modified-on', '2025-11-21T04:40:00.0000001Z'], ['hw-modified-on-ticks', '17637000000000001'], ['hw-observed-ticks', '17637000000000003'],
      ['hw-run-id', 'run-1'],
    ]);
    expect(headers(change({ modifiedOn: null, deletedBefore: 5n })).map(([k]) => k)).toEqual([
      'hw-kind', 'hw-table', 'hw-tenant', 'hw-encoding', 'hw-observed-ticks', 'hw-deleted-before-ticks', 'hw-run-id',
    ]);
    expect((await changeRecord(codec, change())).headers).toEqual(changeHeaders(change(), codec.encoding));
  });

  it('round-trips chunked and empty content', async () => {
    for (const content of [{ kind: 'chunked', chunkCount: 3, chunkSize: 1000, totalSize: 2500 } as const, { kind: 'none' } as const]) {
      const c = change({ content, size: content.kind === 'none' ? null : 2500, contentSha256: content.kind === 'none' ? null : Buffer.alloc(32, 1) });
      expect(await decodeRecord(codec, incoming(await changeRecord(codec, c)))).toEqual({ type: 'change', change: c });
    }
  });

  it('decodes tombstones from their headers and markers from their schema', async () => {
    const deletion = { table: 'T', tenant: 'x', key: 'k1', modifiedOn: 5n, observed: 8n, runId: 'r' };
    expect(await decodeRecord(codec, incoming(tombstoneRecord(deletion)))).toEqual({ type: 'delete', deletion });
    const nullModifiedOn = { ...deletion, modifiedOn: null };
    expect(await decodeRecord(codec, incoming(tombstoneRecord(nullModifiedOn)))).toEqual({ type: 'delete', deletion: nullModifiedOn });
    const marker = { table: 'T', tenant: '', scope: '*', watermark: 99n, runId: 'r', partition: 2 };
    const out = await markerRecord(codec, marker);
    expect(out.partition).toBe(2);
    expect(await decodeRecord(codec, incoming(out))).toEqual({ type: 'marker', marker });
  });

  it('treats garbage, a foreign framing, a key mismatch and a bare tombstone as poison', async () => {
    const good = await changeRecord(codec, change());
    const cases: InRecord[] = [
      { ...incoming(good), value: Buffer.from('not avro at all') },
      { ...incoming(good), value: Buffer.from([0, 0, 0, 0, 1, 2]) },
      { ...incoming(good), value: Buffer.concat([good.value!.subarray(0, 12), Buffer.from([0xff])]) },
      { ...incoming(good), key: Buffer.from('another-key') },
      { ...incoming(good), value: null, headers: {} },
    ];
    for (const c of cases) {
      await expect(decodeRecord(codec, c)).rejects.toSatisfy((e: unknown) => e instanceof HighwaterError && e.code === 'DECODE_FAILED');
    }
  });

  it('rejects inline content whose length contradicts the size field', async () => {
    const bad = await changeRecord(codec, change({ size: 99 }));
    await expect(decodeRecord(codec, incoming(bad))).rejects.toThrow(/size says 99/);
  });
});

describe('contract v2.1: a change that names the delete just before it (hw-deleted-before-ticks)', () => {
  it('carries the delete in a header, and decodes it back', async () => {
    const out = await changeRecord(codec, change({ deletedBefore: 17_637_000_000_000_002n }));
    expect(out.headers[HEADERS.deletedBeforeTicks]).toBe('17637000000000002');
    const decoded = await decodeRecord(codec, incoming(out));
    expect(decoded).toMatchObject({ type: 'change', change: { deletedBefore: 17_637_000_000_000_002n } });
    const plain = await decodeRecord(codec, incoming(await changeRecord(codec, change())));
    expect(plain.type === 'change' && 'deletedBefore' in plain.change).toBe(false);
  });

  it('refuses a named delete that is not before the change (it would delete the change itself)', async () => {
    const out = await changeRecord(codec, change());
    const bad = { ...out, headers: { ...out.headers, [HEADERS.deletedBeforeTicks]: change().observed.toString() } };
    await expect(decodeRecord(codec, incoming(bad))).rejects.toMatchObject({ code: 'DECODE_FAILED' });
  });

  // Seed 25 of the convergence test: the tombstone of a ModifiedOn set to NULL was compacted away (a later record has
  // its key) before the killed consumer got there; the NULL version alone lost to the version the target held.
  it('stands for its delete and then itself, so that a NULL ModifiedOn after a compacted-away tombstone still wins', () => {
    const held = change({ modifiedOn: 17_637_000_000_000_001n, observed: 10n });
    const restated = change({ modifiedOn: null, observed: 30n, deletedBefore: 29n, contentSha256: Buffer.alloc(32, 9) });
    const events = expandDeletedBefore(restated);
    expect(events.map((e) => e.type)).toEqual(['delete', 'change']);
    const reduced = reduceBatch([{ type: 'change', change: held }, ...events]);
    expect(reduced.deletes.map((d) => d.observed)).toEqual([29n]);
    expect(reduced.changes).toEqual([restated]);
  });
});
