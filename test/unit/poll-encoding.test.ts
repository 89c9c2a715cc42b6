/**
 * The poller's per-row CPU path written for speed must give exactly what the plain forms gave: hierarchyDepth
 * (counted, not split), encodeSingleObject (encoded behind its header in a reused buffer), rowDigest (hashed from the
 * string). Seeded, so a failure replays; the plain forms are written out here as the reference.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { BlobChange, SourceRow } from '../../src/contract.js';
import { decodeSingleObject, encodeSingleObject } from '../../src/events/codec.js';
import { hierarchyDepth } from '../../src/events/hierarchy.js';
import { changeToAvro, chunkToAvro } from '../../src/events/mapping.js';
import { schemaOf } from '../../src/events/schemas.js';
import { rowDigest } from '../../src/poll/build.js';
import { seeded as rng } from '../support/seeded.js';

function tools(seed: number) {
  const r = rng(seed);
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const text = (alphabet: string, max: number): string => Array.from({ length: int(max) }, () => pick([...alphabet])).join('');
  const maybe = <T>(v: T): T | null => (r() < 0.2 ? null : v);
  const ticks = (): bigint => BigInt(int(2 ** 31)) * BigInt(int(2 ** 31)) + BigInt(int(1000));
  const row = (): SourceRow => {
    const content = r() < 0.3 ? null : Buffer.from(text('abcé€\u0000', pick([0, 5, 200, 3000])));
    const odd = '"\\\n\t\u2028\u0001é/ ';
    return {
      key: text('0123456789abcdef-', 40),
      name: maybe(text(r() < 0.3 ? odd : 'abc é.txt/', 30)),
      pathLocator: maybe(text('/0123456789.', 20)),
      parentPathLocator: maybe(text('/0123456789.', 20)),
      isDirectory: r() < 0.2,
      contentLength: content === null ? maybe(int(100)) : content.length,
      content,
      modifiedOn: maybe(ticks()),
      businessUnit: r() < 0.05 ? (undefined as unknown as null) : maybe(text(r() < 0.3 ? odd : 'BUxé', 8)),
      attributes: r() < 0.3 ? {} : { creationTime: maybe(ticks()), lastWriteTime: maybe(ticks()), lastAccessTime: r() < 0.5 ? undefined : maybe(ticks()), isReadonly: maybe(r() < 0.5), isHidden: r() < 0.5 ? undefined : maybe(r() < 0.5), isSystem: maybe(false), isArchive: maybe(true) },
    };
  };
  const change = (): BlobChange => {
    const src = row();
    const big = r() < 0.1;
    const bytes = big ? Buffer.alloc(pick([65_000, 70_000, 300_000]), 7) : (src.content ?? Buffer.alloc(0));
    return {
      table: 'dbo.Files', tenant: text('tü', 5), key: src.key, name: src.name, pathLocator: src.pathLocator, parentPathLocator: src.parentPathLocator,
      isDirectory: src.isDirectory, size: bytes.length, attributes: src.attributes, modifiedOn: src.modifiedOn, observed: ticks(), businessUnit: src.businessUnit,
      content: r() < 0.2 ? { kind: 'none' } : r() < 0.2 ? { kind: 'chunked', chunkCount: 3, chunkSize: 1000, totalSize: 2500 } : { kind: 'inline', bytes },
      contentSha256: r() < 0.2 ? null : createHash('sha256').update(bytes).digest(), runId: 'run-' + text('0123456789', 10), window: { start: ticks(), end: ticks() },
      ...(r() < 0.2 ? { deletedBefore: ticks() } : {}),
    };
  };
  return { r, int, pick, text, row, change };
}

describe('hierarchyDepth', () => {
  const plain = (p: string | null): number => (p ? p.split('/').filter(Boolean).length : 0);

  it('counts the non-empty parts of 5000 seeded paths of any shape as split/filter does', () => {
    const { text } = tools(11);
    for (let i = 0; i < 5000; i++) {
      const p = text('//1234.é', 25);
      expect(hierarchyDepth(p), JSON.stringify(p)).toBe(plain(p));
    }
    for (const p of [null, '', '/', '//', 'a', '/a', 'a/', '/1/2/3/', '//1//2//', '/1/-2.5/3/']) expect(hierarchyDepth(p)).toBe(plain(p));
  });
});

describe('encodeSingleObject', () => {
  const plain = (schema: 'BlobChange' | 'BlobChunk', record: unknown): Buffer => {
    const s = schemaOf(schema);
    return Buffer.concat([Buffer.from([0xc3, 0x01]), s.fingerprint, s.type.toBuffer(record)]);
  };

  it('writes the bytes of magic + fingerprint + toBuffer for 500 seeded changes, small and larger than its scratch buffer', () => {
    const { change } = tools(12);
    const kept: [Buffer, Buffer][] = [];
    for (let i = 0; i < 500; i++) {
      const avro = changeToAvro(change());
      const got = encodeSingleObject('BlobChange', avro);
      const want = plain('BlobChange', avro);
      expect(got.equals(want), `change ${i}`).toBe(true);
      kept.push([got, want]);
    }
    // Each value is its own copy: later encodings did not overwrite earlier ones.
    for (const [got, want] of kept) expect(got.equals(want)).toBe(true);
    expect(decodeSingleObject(kept[0]![0]).schema).toBe('BlobChange');
  });

  it('writes chunk values (scratch-sized and larger) as before', () => {
    for (const n of [0, 1, 65_000, 65_536 - 60, 65_536, 1_000_000]) {
      const avro = chunkToAvro({ table: 't', key: 'k', contentSha256: Buffer.alloc(32, 1), index: 1, count: 2, bytes: Buffer.alloc(n, 3) });
      expect(encodeSingleObject('BlobChunk', avro).equals(plain('BlobChunk', avro)), `chunk of ${n}`).toBe(true);
    }
  });
});

describe('rowDigest', () => {
  it('is SHA-256 of the same canonical JSON as before for 2000 seeded rows', () => {
    const { row, r } = tools(13);
    for (let i = 0; i < 2000; i++) {
      const x = row();
      const sha = r() < 0.3 ? null : createHash('sha256').update(String(i)).digest();
      const a = x.attributes;
      const canonical = JSON.stringify([
        x.name, x.pathLocator, x.parentPathLocator, x.isDirectory, x.contentLength, sha?.toString('hex') ?? null, x.businessUnit,
        [a.creationTime, a.lastWriteTime, a.lastAccessTime].map((t) => t?.toString() ?? null),
        [a.isReadonly, a.isHidden, a.isSystem, a.isArchive].map((f) => f ?? null),
      ]);
      expect(rowDigest(x, sha).equals(createHash('sha256').update(Buffer.from(canonical, 'utf8')).digest())).toBe(true);
    }
  });
});
