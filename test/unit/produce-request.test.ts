/**
 * src/kafka/produce-request.ts and crc32c.ts: the Produce request body written in one pass must be byte for byte
 * what kafkajs' own encoder writes for the same arguments (and the same clock), for seeded generated requests of
 * many shapes; what the fast path does not take must still be encoded by kafkajs; and kafkajs' record batch decoder
 * must read back the records that went in.
 */
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { changeRecord, chunkRecord, chunkTombstone, markerRecord, tombstoneRecord } from '../../src/events/records.js';
import { SingleObjectCodec } from '../../src/events/codec.js';
import { crc32c } from '../../src/kafka/crc32c.js';
import { agreesWithKafkajs, encodable, encodeProduceRequest, installFastProduce, type ProduceArgs, type ProduceMessage } from '../../src/kafka/produce-request.js';
import { seeded as rng } from '../support/seeded.js';

const require = createRequire(import.meta.url);
const kafkajsCrc32c = require('kafkajs/src/protocol/recordBatch/crc32C') as (b: Buffer) => number;
const Long = require('kafkajs/src/utils/long') as { fromValue(v: unknown): unknown };
const Decoder = require('kafkajs/src/protocol/decoder') as new (b: Buffer) => unknown;
const decodeBatch = require('kafkajs/src/protocol/recordBatch/v0/decoder') as (d: unknown) => Promise<{
  firstSequence: number;
  producerId: string;
  producerEpoch: number;
  inTransaction: boolean;
  records: { key: Buffer | null; value: Buffer | null; headers: Record<string, Buffer | Buffer[]>; offset: string }[];
}>;
const { requests } = require('kafkajs/src/protocol/requests') as {
  requests: { Produce: { protocol: (v: { version: number }) => (args: ProduceArgs) => { request: { encode(): Promise<{ buf: Buffer; offset: number }> } } } };
};

/** The request factory kafkajs had before any install (the install replaces `protocol`, never this function). */
const kafkajsProduce = requests.Produce.protocol;

function gen(seed: number) {
  const r = rng(seed);
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const text = (): string => {
    const alphabets = ['abcdef0123456789-', 'é', 'ü€', '𝄞', ' /:.Z', '\u0000\u007f\u0080'];
    const len = pick([0, 1, 3, 36, 63, 64, 65, 200, int(400)]);
    let s = '';
    for (let i = 0; i < len; i++) s += pick(pick(alphabets).split(''));
    // Split surrogate pairs would be a different string after UTF-8; keep whole code points only.
    return s.replace(/[\ud800-\udfff]/g, (c, i: number, whole: string) => (/[\ud800-\udbff]/.test(c) && /[\udc00-\udfff]/.test(whole[i + 1] ?? '')) || (/[\udc00-\udfff]/.test(c) && /[\ud800-\udbff]/.test(whole[i - 1] ?? '')) ? c : 'x');
  };
  const bytes = (): Buffer => {
    const n = pick([0, 1, 5, 200, 1000, 16_383, 16_384, 100_000, int(5000), r() < 0.05 ? 1_100_000 : 10]);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 97) b[i] = int(256);
    return b;
  };
  const keyOrValue = (): string | Buffer | null | undefined => pick([null, undefined, 'str', 'buf', 'buf', 'str'] as const) === 'str' ? text() : pick(['buf', null, undefined] as const) === 'buf' ? bytes() : pick([null, undefined]);
  const headers = (): ProduceMessage['headers'] => {
    const kind = int(4);
    if (kind === 0) return undefined;
    if (kind === 1) return {};
    const h: Record<string, string | Buffer | (string | Buffer)[]> = {};
    const n = int(12);
    for (let i = 0; i < n; i++) {
      const k = pick(['hw-kind', 'hw-table', 'hw-é', '', `h${i}`, text()]);
      const v = int(5);
      h[k] = v === 0 ? Array.from({ length: int(4) }, () => (r() < 0.5 ? text() : bytes().subarray(0, 50))) : v === 1 ? bytes().subarray(0, 300) : text();
    }
    return h;
  };
  const message = (): ProduceMessage => ({ key: keyOrValue(), value: keyOrValue() ?? null, headers: headers() });
  const args = (): ProduceArgs => ({
    acks: pick([-1, 1, 0]),
    timeout: pick([30_000, 1, 2_147_483_647]),
    transactionalId: pick([undefined, null, undefined, 'tx-1', 'tx-é']),
    producerId: pick([undefined, -1, 0, 4242, 2 ** 40 + 7, Long.fromValue(123_456_789_012), 9_007_199_254_740_991n]),
    producerEpoch: pick([undefined, 0, 1, 32_767]),
    compression: 0,
    topicData: Array.from({ length: 1 + int(3) }, () => ({
      topic: pick(['hw.dbo.files', 'tópico', text() || 't']),
      partitions: Array.from({ length: 1 + int(4) }, (_, p) => ({
        partition: p * 3 + int(3),
        firstSequence: pick([undefined, 0, 17, 2_147_483_000]),
        messages: Array.from({ length: pick([0, 1, 2, 10, int(60)]) }, message),
      })),
    })),
  });
  return { args, r };
}

async function kafkajsBytes(args: ProduceArgs, version = 7): Promise<Buffer> {
  const e = await kafkajsProduce({ version })(args).request.encode();
  return Buffer.from(e.buf.subarray(0, e.offset));
}

const NOWS = [1_764_489_600_123, 0, 2 ** 32 - 1, 2 ** 32, 2 ** 41 + 12_345];

afterEach(() => {
  vi.restoreAllMocks();
});

describe('crc32c', () => {
  it('gives the check value of CRC-32C', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  it('equals kafkajs crc32C for seeded buffers of every length up to 300 and larger ones, and for sub-ranges', () => {
    const r = rng(7);
    for (let n = 0; n < 300; n++) {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
      expect(crc32c(b)).toBe(kafkajsCrc32c(b));
    }
    for (const n of [1023, 4096, 65_537, 1_000_003]) {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
      expect(crc32c(b)).toBe(kafkajsCrc32c(b));
      const start = Math.floor(r() * 100);
      const end = n - Math.floor(r() * 100);
      expect(crc32c(b, start, end)).toBe(kafkajsCrc32c(b.subarray(start, end)));
    }
  });
});

describe('encodeProduceRequest', () => {
  it('writes what kafkajs writes, byte for byte, for 300 seeded requests of many shapes (Produce v3 to v7)', async () => {
    for (let seed = 1; seed <= 300; seed++) {
      const { args } = gen(seed);
      const a = args();
      expect(encodable(a), `seed ${seed}`).toBe(true);
      const now = NOWS[seed % NOWS.length]!;
      vi.spyOn(Date, 'now').mockReturnValue(now);
      const version = 3 + (seed % 5);
      const expected = await kafkajsBytes(a, version);
      const actual = encodeProduceRequest(a, now);
      if (!actual.equals(expected)) {
        const at = actual.findIndex((b, i) => b !== expected[i]);
        throw new Error(`seed ${seed}: ${actual.length} vs ${expected.length} bytes, first difference at ${at}`);
      }
    }
  });

  it('writes what kafkajs writes for the records highwater publishes (changes, chunks, tombstones, markers)', async () => {
    const codec = new SingleObjectCodec();
    const sha = Buffer.alloc(32, 7);
    const change = await changeRecord(codec, {
      table: 'dbo.Files', tenant: 't-é', key: '9a2f6c1e-0000-4000-8000-000000000001', name: 'naïve.txt', pathLocator: '/1/2/', parentPathLocator: '/1/',
      isDirectory: false, size: 3, attributes: { creationTime: 1n, lastWriteTime: 2n, lastAccessTime: null, isReadonly: false, isHidden: null, isSystem: false, isArchive: true },
      modifiedOn: 638_999_999_999_999_999n, observed: 639_000_000_000_000_001n, businessUnit: 'bu', content: { kind: 'inline', bytes: Buffer.from('abc') },
      contentSha256: sha, runId: 'run-1', window: { start: 1n, end: 2n }, deletedBefore: 639_000_000_000_000_000n,
    });
    const chunk = await chunkRecord(codec, { table: 'dbo.Files', key: 'k', contentSha256: sha, index: 2, count: 3, bytes: Buffer.alloc(70_000, 1) }, 't', 1);
    const tomb = chunkTombstone({ table: 'dbo.Files', key: 'k', contentSha256: sha, index: 0 }, 't', 1);
    const del = tombstoneRecord({ table: 'dbo.Files', tenant: 't', key: 'gone', modifiedOn: null, observed: 5n, runId: 'run-1' });
    const marker = await markerRecord(codec, { table: 'dbo.Files', tenant: 't', scope: 's', partition: 0, runId: 'run-1', watermark: 3n });
    const outs = [change, chunk, tomb, del, marker];
    const messages = outs.map((o) => ({ key: o.key, value: o.value, headers: o.headers, partition: o.partition }));
    const a: ProduceArgs = { acks: -1, timeout: 30_000, producerId: Long.fromValue(99), producerEpoch: 0, topicData: [{ topic: 'hw.dbo.files', partitions: [{ partition: 1, firstSequence: 1234, messages }] }] };
    expect(encodable(a)).toBe(true);
    vi.spyOn(Date, 'now').mockReturnValue(NOWS[0]!);
    expect(encodeProduceRequest(a, NOWS[0]!).equals(await kafkajsBytes(a))).toBe(true);
  });

  it('is read back by kafkajs record batch decoder: keys, values, headers, offsets, producer fields', async () => {
    for (let seed = 1000; seed < 1060; seed++) {
      const a = gen(seed).args();
      const bytes = encodeProduceRequest(a, NOWS[0]!);
      // Walk the request: transactional id, acks, timeout, topics.
      const d = new Decoder(bytes) as { readString(): string | null; readInt16(): number; readInt32(): number; slice(n: number): unknown; forward(n: number): void };
      expect(d.readString()).toBe(a.transactionalId ?? null);
      expect(d.readInt16()).toBe(a.acks);
      expect(d.readInt32()).toBe(a.timeout);
      expect(d.readInt32()).toBe(a.topicData.length);
      for (const t of a.topicData) {
        expect(d.readString()).toBe(t.topic);
        expect(d.readInt32()).toBe(t.partitions.length);
        for (const p of t.partitions) {
          expect(d.readInt32()).toBe(p.partition);
          const size = d.readInt32();
          const batch = await decodeBatch(d.slice(size));
          d.forward(size);
          expect(batch.firstSequence).toBe(p.firstSequence ?? 0);
          expect(batch.inTransaction).toBe(!!a.transactionalId);
          expect(batch.records.map((x) => x.offset)).toEqual(p.messages.map((_, i) => String(i)));
          p.messages.forEach((m, i) => {
            const rec = batch.records[i]!;
            const same = (got: Buffer | null, v: string | Buffer | null | undefined): boolean => (v == null ? got === null : got !== null && got.equals(Buffer.from(v)));
            expect(same(rec.key, m.key), `seed ${seed} key ${i}`).toBe(true);
            expect(same(rec.value, m.value), `seed ${seed} value ${i}`).toBe(true);
            // kafkajs' decoder folds repeated header keys into arrays, in order.
            const want = new Map<string, (string | Buffer)[]>();
            for (const [k, v] of Object.entries(m.headers ?? {})) want.set(k, [...(want.get(k) ?? []), ...((Array.isArray(v) ? v : [v]) as (string | Buffer)[])]);
            // An empty array of values is no header at all.
            for (const [k, vs] of want) if (vs.length === 0) want.delete(k);
            expect(Object.keys(rec.headers)).toEqual([...want.keys()]);
            for (const [k, vs] of want) {
              const got = rec.headers[k]!;
              const gots = Array.isArray(got) ? got : [got];
              expect(gots.length, `seed ${seed} header ${k}`).toBe(vs.length);
              vs.forEach((x, j) => expect(same(gots[j]!, x), `seed ${seed} header ${k}[${j}]`).toBe(true));
            }
          });
        }
      }
    }
  });
});

describe('encodable', () => {
  const base = (m: Partial<ProduceMessage> & Record<string, unknown>): ProduceArgs => ({ acks: -1, timeout: 1, topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [{ key: 'k', value: 'v', ...m } as ProduceMessage] }] }] });

  it('leaves compression, record timestamps and values of other types to kafkajs', () => {
    expect(encodable(base({}))).toBe(true);
    expect(encodable({ ...base({}), compression: 1 })).toBe(false);
    expect(encodable(base({ timestamp: '1700000000000' }))).toBe(false);
    expect(encodable(base({ timestamp: 0 }))).toBe(false);
    expect(encodable(base({ key: 12 as unknown as string }))).toBe(false);
    expect(encodable(base({ value: { a: 1 } as unknown as string }))).toBe(false);
    expect(encodable(base({ headers: null as unknown as Record<string, string> }))).toBe(false);
    expect(encodable(base({ headers: { a: null as unknown as string } }))).toBe(false);
    expect(encodable(base({ headers: { a: ['x', 3 as unknown as string] } }))).toBe(false);
    // Inherited enumerable header names: kafkajs' Object.keys skips them, a for-in would not.
    const inherited = Object.assign(Object.create({ inherited: 'x' }) as Record<string, string>, { own: 'y' });
    expect(encodable(base({ headers: inherited }))).toBe(false);
  });
});

describe('installFastProduce', () => {
  it('agrees with kafkajs on its sample, installs once, and then encodes what kafkajs would, fast path or not', async () => {
    for (let v = 3; v <= 7; v++) expect(await agreesWithKafkajs(kafkajsProduce({ version: v }) as never)).toBe(true);
    expect(await installFastProduce()).toBe(true);
    expect(await installFastProduce()).toBe(true);
    const installed = requests.Produce.protocol;
    const now = NOWS[0]!;
    vi.spyOn(Date, 'now').mockReturnValue(now);
    const cases: ProduceArgs[] = [gen(77).args(), gen(78).args()];
    // Not on the fast path: kafkajs' own encoder still writes these.
    cases.push({ acks: -1, timeout: 5, topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [{ key: 'k', value: 'v', timestamp: '1700000000000' }, { key: 'k2', value: 'w', timestamp: '1600000000000' }] }] }] });
    for (const a of cases) {
      for (let v = 3; v <= 7; v++) {
        const ours = await installed({ version: v })(a).request.encode();
        expect(Buffer.from(ours.buf.subarray(0, ours.offset)).equals(await kafkajsBytes(a, v))).toBe(true);
      }
    }
  });
});
