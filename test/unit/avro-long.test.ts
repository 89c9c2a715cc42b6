/**
 * src/events/schemas.ts bigintLong: the long read without avsc's per-value Buffer must decode exactly what avsc's own
 * bigint long (unpackingBigintLong) decodes — the same bigints, the same errors — for seeded change events whose ticks
 * range over small, 2^49-adjacent, 2^53-adjacent and 64-bit extreme values, for raw varints of every length
 * (non-canonical, cut short, followed by trailing bytes), and through the resolver of a historic schema.
 */
import { readFileSync } from 'node:fs';
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { changeToAvro } from '../../src/events/mapping.js';
import { bigintLong, historicSchemas, schemaDirectory, schemaOf, unpackingBigintLong } from '../../src/events/schemas.js';
import type { BlobChange } from '../../src/contract.js';
import { seeded as rng } from '../support/seeded.js';

const blobChangeJson = JSON.parse(readFileSync(`${schemaDirectory()}BlobChange.avsc`, 'utf8')) as avro.Schema;
const slow = avro.Type.forSchema(blobChangeJson, { registry: { long: unpackingBigintLong } });
const fast = schemaOf('BlobChange').type;
const slowLong = avro.Type.forSchema('long', { registry: { long: unpackingBigintLong } });
const fastLong = avro.Type.forSchema('long', { registry: { long: bigintLong } });

function settle(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function generator(seed: number) {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const ticks = (): bigint => {
    const bases = [0n, 1n, 2n ** 48n, 2n ** 49n, 2n ** 53n, 2n ** 56n, 2n ** 62n, 2n ** 63n - 1n, 17_637_000_000_000_001n, 638_000_000_000_000_001n];
    const v = bases[int(bases.length)]! + BigInt(int(2000)) - 1000n;
    const clamped = v > 2n ** 63n - 1n ? 2n ** 63n - 1n : v;
    return int(3) === 0 ? -clamped - (int(2) === 0 ? 1n : 0n) : clamped;
  };
  const maybe = (): bigint | null => (int(4) === 0 ? null : ticks());
  const change = (): BlobChange => {
    const bytes = Buffer.alloc(int(50), 3);
    return {
      table: 't', tenant: '', key: `k${int(1e6)}`, name: null, pathLocator: '/1/', parentPathLocator: null, isDirectory: false, size: bytes.length,
      attributes: { creationTime: maybe(), lastWriteTime: maybe(), lastAccessTime: maybe(), isReadonly: null, isHidden: null, isSystem: null, isArchive: null },
      modifiedOn: maybe(), observed: ticks(), businessUnit: null, content: { kind: 'inline', bytes }, contentSha256: Buffer.alloc(32, 1), runId: 'r',
      window: { start: ticks(), end: ticks() },
    };
  };
  /** Bytes of a varint: canonical of a random 64-bit value, padded with 0x80 continuation, random bytes, or 8 to 11 bytes. */
  const varint = (): Buffer => {
    const kind = int(4);
    if (kind === 3) {
      const length = 8 + int(4);
      return Buffer.from(Array.from({ length }, (_, i) => (i < length - 1 ? 0x80 | int(128) : int(128))));
    }
    if (kind === 0) return slowLong.toBuffer(ticks());
    if (kind === 1) {
      const canonical = slowLong.toBuffer(ticks());
      const padded = Buffer.concat([canonical.subarray(0, -1), Buffer.from([canonical.at(-1)! | 0x80]), Buffer.alloc(int(4), 0x80), Buffer.from([0])]);
      return padded;
    }
    return Buffer.from(Array.from({ length: 1 + int(12) }, () => int(256)));
  };
  return { change, varint, int };
}

describe('bigintLong', () => {
  it('decodes change events exactly as avsc does through its Buffer, for 2,000 seeded events', () => {
    const g = generator(1);
    for (let i = 0; i < 2000; i++) {
      const body = slow.toBuffer(changeToAvro(g.change()));
      expect(fast.toBuffer(fast.fromBuffer(body)).equals(body), `event ${i}`).toBe(true);
      expect(fast.fromBuffer(body), `event ${i}`).toEqual(slow.fromBuffer(body));
    }
  });

  it('reads raw varints of every length, non-canonical, cut short or followed by more, as avsc does', () => {
    const g = generator(2);
    let fastPath = 0;
    for (let i = 0; i < 5000; i++) {
      const v = g.varint();
      const bytes = g.int(4) === 0 ? v.subarray(0, g.int(v.length)) : g.int(4) === 0 ? Buffer.concat([v, Buffer.from([g.int(256)])]) : v;
      expect(settle(() => fastLong.fromBuffer(bytes)), `varint ${bytes.toString('hex')}`).toEqual(settle(() => slowLong.fromBuffer(bytes)));
      if (bytes.length > 0 && bytes.length <= 7) fastPath++;
    }
    expect(fastPath).toBeGreaterThan(1000);
  });

  it('resolves events of the historic schema as before', () => {
    const g = generator(3);
    for (const h of historicSchemas().filter((x) => x.name === 'BlobChange')) {
      const slowResolver = slow.createResolver(avro.Type.forSchema(JSON.parse(readFileSync(`${schemaDirectory()}history/${h.file}`, 'utf8')) as avro.Schema, { registry: { long: unpackingBigintLong } }));
      for (let i = 0; i < 500; i++) {
        // v1: ModifiedOn required (a long and its text), no observation stamp.
        const { observed_ticks: _, ...c } = changeToAvro(g.change());
        const body = h.type.toBuffer({ ...c, modified_on_ticks: c.modified_on_ticks ?? 0n, modified_on: c.modified_on ?? '1970-01-01T00:00:00.0000000Z' });
        expect(fast.fromBuffer(body, h.resolver)).toEqual(slow.fromBuffer(body, slowResolver));
      }
    }
  });
});
