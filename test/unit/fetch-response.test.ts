/**
 * src/kafka/fetch-response.ts: a Fetch v11 response decoded in one pass must be exactly what kafkajs' own decoder
 * returns for the same bytes, header values as UTF-8 strings (withStringHeaders), for seeded generated responses of many shapes (headers repeated, named like
 * Object.prototype's members, null keys and values, control batches, transactions and aborted ones, log-append
 * time, partial trailing batches, gaps in offsets); what the fast path leaves to kafkajs (compressed batches,
 * offsets past 2^53, a legacy message set) must still come out as kafkajs decodes it, through the fallback.
 */
import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decodeFetchV11, decodeWithFallback, encodeFetchV11Response, installFastFetch, Unsupported, withStringHeaders, type SampleBatch, type SamplePartition } from '../../src/kafka/fetch-response.js';
import { seeded as rng } from '../support/seeded.js';

const require = createRequire(import.meta.url);
const kafkajsOwnDecode = (require('kafkajs/src/protocol/requests/fetch/v11/response') as { decode: (b: Buffer) => Promise<unknown> }).decode;
/** kafkajs' result in the form the fast decoder gives it: header values as UTF-8 strings. */
const kafkajsDecode = async (b: Buffer): Promise<unknown> => withStringHeaders(await kafkajsOwnDecode(b));
const { requests } = require('kafkajs/src/protocol/requests') as {
  requests: { Fetch: { protocol: (v: { version: number }) => (args: unknown) => { response: { decode: (b: Buffer) => Promise<unknown> } } } };
};

const GZIP = 1;
const CONTROL = 0x20;
const LOG_APPEND_TIME = 0x08;
const HEADER_KEYS = ['hw-kind', 'hw-table', 'hw-observed-ticks', 'toString', 'constructor', 'é-ü', '', 'multi'];

function generator(seed: number) {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const keyOrValue = (): Buffer | string | null => {
    const k = int(6);
    if (k === 0) return null;
    if (k === 1) return Buffer.alloc(0);
    if (k === 2) return `k-${int(1e6)}-é`;
    return bytes(int(k === 5 ? 400 : 40));
  };
  const headers = (): Record<string, unknown> | undefined => {
    if (int(4) === 0) return undefined;
    const h: Record<string, unknown> = {};
    for (let i = int(6); i > 0; i--) {
      const key = pick(HEADER_KEYS);
      const value = () => (int(3) === 0 ? bytes(int(20)) : `v${int(1000)}`);
      h[key] = int(4) === 0 ? [value(), value(), value()].slice(0, 1 + int(3)) : value();
    }
    return h;
  };
  const batch = (firstOffset: bigint, options: { compressed: boolean; huge: boolean }): SampleBatch => {
    let delta = 0;
    const records = Array.from({ length: int(12) }, () => {
      const offsetDelta = delta;
      delta += 1 + (int(4) === 0 ? int(50) : 0);
      return { offsetDelta, timestampDelta: int(5) === 0 ? -int(1e6) : int(3) === 0 ? int(2 ** 40) : int(2000), key: keyOrValue(), value: keyOrValue(), headers: headers() };
    });
    const flags = int(6);
    return {
      firstOffset: options.huge ? 2n ** 60n + firstOffset : firstOffset,
      firstTimestamp: 1_600_000_000_000 + int(1e11),
      maxTimestamp: 1_700_000_000_000 + int(1e6),
      compression: options.compressed ? GZIP : 0,
      transactional: flags === 1 || flags === 2,
      producerId: flags === 1 || flags === 2 ? BigInt(int(1000)) : -1n,
      extraAttributes: (flags === 2 ? CONTROL : 0) | (flags === 3 ? LOG_APPEND_TIME : 0),
      records,
    };
  };
  const partition = (p: number, options: { compressed: boolean; huge: boolean }): SamplePartition => {
    let offset = BigInt(int(1e9));
    const batches = Array.from({ length: int(5) }, () => {
      const b = batch(offset, { compressed: options.compressed && int(2) === 0, huge: options.huge });
      offset += BigInt(b.records.length + int(30));
      return b;
    });
    return {
      partition: p,
      highWatermark: offset,
      ...(int(3) === 0 ? { abortedTransactions: Array.from({ length: int(3) }, () => ({ producerId: BigInt(int(1000)), firstOffset: BigInt(int(1e9)) })) } : {}),
      batches,
      ...(int(3) === 0 ? { cut: 1 + int(120) } : {}),
    };
  };
  return {
    response: (options: { compressed: boolean; huge: boolean }) =>
      encodeFetchV11Response(Array.from({ length: 1 + int(2) }, (_, t) => ({ topic: `hw.t${t}`, partitions: Array.from({ length: int(5) }, (_, p) => partition(p, options)) }))),
  };
}

/**
 * Node's deep strict equality (what installFastFetch checks with). Not vitest's toStrictEqual: it compares two
 * objects' `constructor` properties by identity, and a header named `constructor` makes that an own array.
 */
function sameAs(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}

/** kafkajs' result, or the error it throws (by name and message). */
async function settle(decode: () => Promise<unknown>): Promise<unknown> {
  try {
    return { ok: await decode() };
  } catch (err) {
    return { error: (err as Error).name, message: (err as Error).message };
  }
}

describe('decodeFetchV11', () => {
  it('returns exactly what kafkajs decodes, on 300 seeded responses, all on the fast path', async () => {
    for (let seed = 1; seed <= 300; seed++) {
      const raw = await generator(seed).response({ compressed: false, huge: false });
      const theirs = await kafkajsDecode(raw);
      let ours: unknown;
      try {
        ours = decodeFetchV11(raw);
      } catch (err) {
        throw new Error(`seed ${seed}: the fast path refused a plain response: ${(err as Error).message}`);
      }
      expect(sameAs(ours, theirs), `seed ${seed}`).toBe(true);
    }
  });

  it('leaves compressed batches and offsets past 2^53 to kafkajs, whose result the fallback returns with string header values', async () => {
    let refused = 0;
    for (let seed = 1000; seed < 1100; seed++) {
      const raw = await generator(seed).response({ compressed: seed % 2 === 0, huge: seed % 2 === 1 });
      if ((() => { try { decodeFetchV11(raw); return false; } catch (err) { return err instanceof Unsupported; } })()) refused++;
      expect(sameAs(await settle(() => decodeWithFallback(kafkajsOwnDecode)(raw)), await settle(() => kafkajsDecode(raw))), `seed ${seed}`).toBe(true);
    }
    expect(refused).toBeGreaterThan(50);
  });

  it('leaves a legacy message set and cut or malformed bytes to kafkajs', async () => {
    const raw = await generator(7).response({ compressed: false, huge: false });
    const variants: Buffer[] = [];
    for (let cut = 1; cut < raw.length; cut += Math.max(1, Math.floor(raw.length / 97))) variants.push(raw.subarray(0, raw.length - cut));
    for (let at = 0; at < raw.length; at += Math.max(1, Math.floor(raw.length / 61))) {
      const flipped = Buffer.from(raw);
      flipped[at] = flipped[at]! ^ 0xff;
      variants.push(flipped);
    }
    for (const v of variants) {
      expect(sameAs(await settle(() => decodeWithFallback(kafkajsOwnDecode)(v)), await settle(() => kafkajsDecode(v)))).toBe(true);
    }
  });
});

describe('withStringHeaders', () => {
  it("turns kafkajs' Buffer header values into UTF-8 strings, a repeated header's element by element, and leaves the rest", () => {
    const proto = Object.prototype.toString;
    const decoded: { responses: { topicName: string; partitions: { messages: { key: Buffer | null; value: Buffer | null; headers: Record<string, unknown> }[] }[] }[] } = {
      responses: [{ topicName: 't', partitions: [{ messages: [
        { key: Buffer.from('k'), value: Buffer.from('v'), headers: { a: Buffer.from('é-ü'), multi: [Buffer.from('1'), Buffer.from('2')], nul: null, toString: [proto, Buffer.from('x')] } },
        { key: null, value: null, headers: {} },
      ] }] }],
    };
    expect(withStringHeaders(decoded)).toBe(decoded);
    const [first, second] = decoded.responses[0]!.partitions[0]!.messages;
    expect(first!.headers).toEqual({ a: 'é-ü', multi: ['1', '2'], nul: null, toString: [proto, 'x'] });
    // Keys and values of the records stay Buffers: only headers change form.
    expect(Buffer.isBuffer(first!.key) && Buffer.isBuffer(first!.value)).toBe(true);
    expect(second!.headers).toEqual({});
  });

  it('gives the fast decoder header values as strings, never Buffers', async () => {
    const raw = await generator(11).response({ compressed: false, huge: false });
    const values = (decodeFetchV11(raw) as { responses: { partitions: { messages: { headers: Record<string, unknown> }[] }[] }[] }).responses
      .flatMap((t) => t.partitions.flatMap((p) => p.messages.flatMap((m) => Object.values(m.headers).flat())));
    expect(values.length).toBeGreaterThan(0);
    expect(values.some((v) => Buffer.isBuffer(v))).toBe(false);
    expect(values.some((v) => typeof v === 'string')).toBe(true);
  });
});

describe('installFastFetch', () => {
  it('agrees with kafkajs on its sample, installs once, and kafkajs then decodes Fetch v11 with it', async () => {
    expect(await installFastFetch()).toBe(true);
    expect(await installFastFetch()).toBe(true);
    const raw = await generator(5).response({ compressed: false, huge: false });
    const decode = requests.Fetch.protocol({ version: 11 })({ topics: [], maxWaitTime: 100 }).response.decode;
    expect(decode).not.toBe(kafkajsOwnDecode);
    expect(sameAs(await decode(raw), await kafkajsDecode(raw))).toBe(true);
    // Other versions keep kafkajs' own response decoder.
    expect(requests.Fetch.protocol({ version: 10 })({ topics: [], maxWaitTime: 100 }).response.decode).toBe(require('kafkajs/src/protocol/requests/fetch/v10/response').decode);
  });
});
