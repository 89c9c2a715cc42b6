import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';

/**
 * The body of a Fetch response (version 11) decoded in one pass, into exactly what kafkajs' own decoder
 * (protocol/requests/fetch/v11/response.js, v4/decodeMessages.js, recordBatch/v0/decoder.js, record/v0/decoder.js,
 * header/v0/decoder.js) returns for the same bytes — but for header values, which come as UTF-8 strings rather than
 * Buffers (kafkajs' IHeaders allows both; withStringHeaders gives kafkajs' own result the same form).
 *
 * Why: kafkajs decodes every record through a new Decoder over its own slice, every 64-bit varint through Long
 * (BigInt) objects, every offset and timestamp through Long and back to a string, and builds each record's headers
 * object by spreading the one before it once per header (a new object per header). For a consumer reading small
 * records that is a second of CPU per 100k records, and as much again in garbage collection.
 *
 * Only the common case is decoded here: record batches of magic 2 without compression, varints and offsets well
 * inside JavaScript's safe integers, every length inside the bytes it claims. Anything else (a compressed batch, a
 * legacy message set, a value that does not fit, bytes that are cut or malformed other than a trailing partial
 * batch) throws Unsupported, and the whole response is left to kafkajs' decoder, so what the consumer sees never
 * depends on which of the two decoded it. installFastFetch puts this behind kafkajs' request lookup after checking
 * that both agree on a sample.
 */

const require = createRequire(import.meta.url);

/** Thrown for anything this decoder leaves to kafkajs. */
export class Unsupported extends Error {}

const MAGIC = 2;
/** kafkajs' RECORD_BATCH_OVERHEAD: a record batch is read only while at least this many bytes are left. */
const RECORD_BATCH_OVERHEAD = 49;
/** Where the magic byte sits in a message set or record batch (kafkajs' MAGIC_OFFSET). */
const MAGIC_OFFSET = 16;
const COMPRESSION_MASK = 0x07;
const TIMESTAMP_TYPE_FLAG_MASK = 0x08;
const TRANSACTIONAL_FLAG_MASK = 0x10;
const CONTROL_FLAG_MASK = 0x20;
/** kafkajs' TimestampTypes. */
const CREATE_TIME = 0;
const LOG_APPEND_TIME = 1;

export interface BatchContext {
  readonly firstOffset: string;
  readonly firstTimestamp: string;
  readonly partitionLeaderEpoch: number;
  readonly inTransaction: boolean;
  readonly isControlBatch: boolean;
  readonly lastOffsetDelta: number;
  readonly producerId: string;
  readonly producerEpoch: number;
  readonly firstSequence: number;
  readonly maxTimestamp: string;
  readonly timestampType: number;
  readonly magicByte: number;
}

export interface FetchedRecord {
  magicByte: number;
  attributes: number;
  timestamp: string;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, unknown>;
  isControlRecord: boolean;
  batchContext: BatchContext;
}

export interface FetchPartition {
  partition: number;
  errorCode: number;
  highWatermark: string;
  lastStableOffset: string;
  lastStartOffset: string;
  abortedTransactions: { producerId: string; firstOffset: string }[];
  preferredReadReplica: number;
  messages: FetchedRecord[];
}

export interface FetchResponse {
  throttleTime: number;
  clientSideThrottleTime: number;
  errorCode: number;
  sessionId: number;
  responses: { topicName: string | null; partitions: FetchPartition[] }[];
}

/** A bounded reader over [offset, end) of a buffer; reading past `end` throws Unsupported. */
class Reader {
  constructor(readonly buf: Buffer, public offset: number, readonly end: number) {}

  need(n: number): void {
    if (n < 0 || this.offset + n > this.end) throw new Unsupported('read past the end');
  }

  int8(): number {
    this.need(1);
    return this.buf.readInt8(this.offset++);
  }

  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  int64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  /** An int64 as kafkajs gives it (`readInt64().toString()`). */
  int64Text(): string {
    return this.int64().toString();
  }

  /**
   * A zig-zag varint of at most four bytes (below 2^28, where kafkajs' 32-bit arithmetic and this agree); longer
   * ones are left to kafkajs.
   */
  varint(): number {
    let result = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      this.need(1);
      const b = this.buf[this.offset++]!;
      result |= (b & 0x7f) << shift;
      if (b < 0x80) return (result >>> 1) ^ -(result & 1);
    }
    throw new Unsupported('varint of more than four bytes');
  }

  /** A zig-zag varlong of at most seven bytes (below 2^49: exact as a number); longer ones are left to kafkajs. */
  varlong(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      this.need(1);
      const b = this.buf[this.offset++]!;
      result += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return result % 2 === 0 ? result / 2 : -(result + 1) / 2;
    }
    throw new Unsupported('varlong of more than seven bytes');
  }

  /** Bytes behind a varint length; -1 is null (kafkajs' readVarIntBytes). Slices share the response's memory, as kafkajs' do. */
  varintBytes(): Buffer | null {
    const n = this.varint();
    if (n === -1) return null;
    this.need(n);
    const out = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  varintString(): string | null {
    const n = this.varint();
    if (n === -1) return null;
    this.need(n);
    const out = this.buf.toString('utf8', this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  /** kafkajs' readString: an int16 length, -1 for null. */
  string(): string | null {
    const n = this.int16();
    if (n === -1) return null;
    this.need(n);
    const out = this.buf.toString('utf8', this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  /** kafkajs' readArray length: -1 is an empty array. */
  arrayLength(): number {
    const n = this.int32();
    if (n < -1) throw new Unsupported('negative array length');
    return n === -1 ? 0 : n;
  }
}

/** A safe integer of an int64, or Unsupported (offsets and timestamps are far below 2^53 in practice). */
function safe(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new Unsupported('int64 outside safe integers');
  return Number(v);
}

/** Decodes a Fetch v11 response body as kafkajs' v11 decode does; throws Unsupported for what it leaves to kafkajs. */
export function decodeFetchV11(raw: Buffer): FetchResponse {
  const r = new Reader(raw, 0, raw.length);
  const clientSideThrottleTime = r.int32();
  const errorCode = r.int16();
  const sessionId = r.int32();
  const topics = r.arrayLength();
  const responses: FetchResponse['responses'] = new Array(topics);
  for (let t = 0; t < topics; t++) {
    const topicName = r.string();
    const count = r.arrayLength();
    const partitions: FetchPartition[] = new Array(count);
    for (let p = 0; p < count; p++) partitions[p] = decodePartition(r);
    responses[t] = { topicName, partitions };
  }
  return { throttleTime: 0, clientSideThrottleTime, errorCode, sessionId, responses };
}

function decodePartition(r: Reader): FetchPartition {
  const partition = r.int32();
  const errorCode = r.int16();
  const highWatermark = r.int64Text();
  const lastStableOffset = r.int64Text();
  const lastStartOffset = r.int64Text();
  const aborted = r.arrayLength();
  const abortedTransactions: FetchPartition['abortedTransactions'] = new Array(aborted);
  for (let i = 0; i < aborted; i++) abortedTransactions[i] = { producerId: r.int64Text(), firstOffset: r.int64Text() };
  const preferredReadReplica = r.int32();
  return { partition, errorCode, highWatermark, lastStableOffset, lastStartOffset, abortedTransactions, preferredReadReplica, messages: decodeMessages(r) };
}

/** kafkajs' decodeMessages for record batches of magic 2: every batch's records; a trailing partial batch ends it. */
function decodeMessages(r: Reader): FetchedRecord[] {
  const size = r.int32();
  if (size <= 0) return [];
  // kafkajs returns [] without reading past a set it cannot read whole, and reads on from there: left to it.
  r.need(size);
  if (size <= MAGIC_OFFSET) throw new Unsupported('message set too short for a magic byte');
  const set = new Reader(r.buf, r.offset, r.offset + size);
  r.offset += size;
  if (r.buf.readInt8(set.offset + MAGIC_OFFSET) !== MAGIC) throw new Unsupported('legacy message set');
  const records: FetchedRecord[] = [];
  while (set.end - set.offset >= RECORD_BATCH_OVERHEAD) {
    const firstOffsetBig = set.int64();
    const length = set.int32();
    // A batch cut by the fetch's size limit: kafkajs stops at it (KafkaJSPartialMessageError).
    if (length < 0) throw new Unsupported('negative batch length');
    if (set.end - set.offset < length) break;
    const batch = new Reader(set.buf, set.offset, set.offset + length);
    set.offset += length;
    decodeBatch(batch, firstOffsetBig, records);
  }
  return records;
}

function decodeBatch(b: Reader, firstOffsetBig: bigint, into: FetchedRecord[]): void {
  const partitionLeaderEpoch = b.int32();
  const magicByte = b.int8();
  b.int32(); // CRC: kafkajs does not check it either
  const attributes = b.int16();
  const lastOffsetDelta = b.int32();
  const firstTimestampBig = b.int64();
  const maxTimestamp = b.int64Text();
  const producerId = b.int64Text();
  const producerEpoch = b.int16();
  const firstSequence = b.int32();
  if ((attributes & COMPRESSION_MASK) !== 0) throw new Unsupported('compressed batch');
  const firstOffset = firstOffsetBig.toString();
  const firstTimestamp = firstTimestampBig.toString();
  const timestampType = (attributes & TIMESTAMP_TYPE_FLAG_MASK) > 0 ? LOG_APPEND_TIME : CREATE_TIME;
  const batchContext: BatchContext = {
    firstOffset,
    firstTimestamp,
    partitionLeaderEpoch,
    inTransaction: (attributes & TRANSACTIONAL_FLAG_MASK) > 0,
    isControlBatch: (attributes & CONTROL_FLAG_MASK) > 0,
    lastOffsetDelta,
    producerId,
    producerEpoch,
    firstSequence,
    maxTimestamp,
    timestampType,
    magicByte,
  };
  const base = safe(firstOffsetBig);
  const baseTime = safe(firstTimestampBig);
  // kafkajs: a LOG_APPEND_TIME batch's records all carry its max timestamp (a string, so always truthy).
  const appendTime = timestampType === LOG_APPEND_TIME;
  const count = b.arrayLength();
  for (let i = 0; i < count; i++) {
    const length = b.varint();
    if (length < 0) throw new Unsupported('record of negative length');
    b.need(length);
    const rec = new Reader(b.buf, b.offset, b.offset + length);
    b.offset += length;
    into.push(decodeRecord(rec, batchContext, base, baseTime, appendTime));
  }
}

function decodeRecord(r: Reader, batchContext: BatchContext, base: number, baseTime: number, appendTime: boolean): FetchedRecord {
  const attributes = r.int8();
  const timestampDelta = r.varlong();
  const time = baseTime + timestampDelta;
  if (!Number.isSafeInteger(time)) throw new Unsupported('timestamp outside safe integers');
  const offsetDelta = r.varint();
  const offset = base + offsetDelta;
  if (!Number.isSafeInteger(offset)) throw new Unsupported('offset outside safe integers');
  const key = r.varintBytes();
  const value = r.varintBytes();
  const headers = decodeHeaders(r);
  return {
    magicByte: batchContext.magicByte,
    attributes,
    timestamp: appendTime ? batchContext.maxTimestamp : String(time),
    offset: String(offset),
    key,
    value,
    headers,
    isControlRecord: batchContext.isControlBatch,
    batchContext,
  };
}

/**
 * kafkajs' headers object: a repeated key becomes an array of its values in order. Its reduce reads `obj[key]`
 * through the prototype too (a key like `toString` finds Object.prototype's function); a plain object and the same
 * test give the same result. `__proto__`, which kafkajs' spread defines as an own property, is left to kafkajs.
 */
function decodeHeaders(r: Reader): Record<string, unknown> {
  const count = r.varint();
  const headers: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) {
    const key = String(r.varintString());
    const value = r.varintString();
    if (key === '__proto__') throw new Unsupported('header named __proto__');
    const held = headers[key];
    headers[key] = held === undefined ? value : Array.isArray(held) ? held.concat([value]) : [held, value];
  }
  return headers;
}

/** A record batch for encodeFetchV11Response, in the arguments of kafkajs' own RecordBatch encoder. */
export interface SampleBatch {
  readonly firstOffset: bigint;
  readonly firstTimestamp: number;
  readonly maxTimestamp?: number;
  readonly compression?: number;
  readonly transactional?: boolean;
  readonly producerId?: bigint;
  /** Attribute bits OR-ed into the encoded batch (kafkajs' encoder cannot set the control or timestamp-type bits). */
  readonly extraAttributes?: number;
  readonly records: readonly { offsetDelta: number; timestampDelta: number; key: Buffer | string | null; value: Buffer | string | null; headers?: Record<string, unknown> }[];
}

export interface SamplePartition {
  readonly partition: number;
  readonly highWatermark: bigint;
  readonly abortedTransactions?: readonly { producerId: bigint; firstOffset: bigint }[];
  readonly batches: readonly SampleBatch[];
  /**
   * Bytes cut from the end of the record set (a partial trailing batch, as a fetch's size limit leaves); not cut
   * when less than a batch header would be left (a broker sends at least one whole batch).
   */
  readonly cut?: number;
}

interface KafkaEncoderLike {
  buffer: Buffer;
  writeInt16(v: number): KafkaEncoderLike;
  writeInt32(v: number): KafkaEncoderLike;
  writeInt64(v: unknown): KafkaEncoderLike;
  writeString(v: string): KafkaEncoderLike;
  writeBuffer(v: Buffer): KafkaEncoderLike;
}

/**
 * A Fetch v11 response body (after the correlation id) holding the given record batches, encoded with kafkajs' own
 * record and record-batch encoders: the sample installFastFetch checks, and the generator of the differential test.
 */
export async function encodeFetchV11Response(topics: readonly { topic: string; partitions: readonly SamplePartition[] }[]): Promise<Buffer> {
  const Encoder = require('kafkajs/src/protocol/encoder') as new () => KafkaEncoderLike;
  const Long = require('kafkajs/src/utils/long') as { fromValue(v: unknown): unknown };
  const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0') as { RecordBatch: (args: Record<string, unknown>) => Promise<KafkaEncoderLike> };
  const Record = require('kafkajs/src/protocol/recordBatch/record/v0') as (args: Record<string, unknown>) => KafkaEncoderLike;
  const out = new Encoder().writeInt32(0).writeInt16(0).writeInt32(0).writeInt32(topics.length);
  for (const t of topics) {
    out.writeString(t.topic).writeInt32(t.partitions.length);
    for (const p of t.partitions) {
      out.writeInt32(p.partition).writeInt16(0).writeInt64(Long.fromValue(p.highWatermark)).writeInt64(Long.fromValue(p.highWatermark)).writeInt64(Long.fromValue(0n));
      const aborted = p.abortedTransactions;
      if (aborted === undefined) out.writeInt32(-1);
      else {
        out.writeInt32(aborted.length);
        for (const a of aborted) out.writeInt64(Long.fromValue(a.producerId)).writeInt64(Long.fromValue(a.firstOffset));
      }
      out.writeInt32(-1);
      const sets: Buffer[] = [];
      for (const b of p.batches) {
        const records = b.records.map((r) => Record({ offsetDelta: r.offsetDelta, timestampDelta: r.timestampDelta, key: r.key, value: r.value, headers: r.headers ?? {} }));
        const encoded = Buffer.from((await RecordBatch({
          compression: b.compression ?? 0,
          firstOffset: Long.fromValue(b.firstOffset),
          firstTimestamp: b.firstTimestamp,
          maxTimestamp: b.maxTimestamp ?? b.firstTimestamp,
          lastOffsetDelta: b.records.at(-1)?.offsetDelta ?? 0,
          transactional: b.transactional ?? false,
          producerId: Long.fromValue(b.producerId ?? -1n),
          records,
        })).buffer);
        // Attributes sit behind firstOffset(8) length(4) leaderEpoch(4) magic(1) crc(4); the CRC is not checked.
        if (b.extraAttributes) encoded.writeInt16BE(encoded.readInt16BE(21) | b.extraAttributes, 21);
        sets.push(encoded);
      }
      const set = Buffer.concat(sets);
      const kept = set.length - (p.cut ?? 0) > RECORD_BATCH_OVERHEAD ? set.subarray(0, set.length - (p.cut ?? 0)) : set;
      out.writeInt32(kept.length).writeBuffer(kept);
    }
  }
  return Buffer.from(out.buffer);
}

/** The sample installFastFetch decodes both ways: headers (one repeated), null key and value, a control batch, a cut tail. */
export function sampleFetchResponse(): Promise<Buffer> {
  const records = [
    { offsetDelta: 0, timestampDelta: 0, key: 'k-é', value: Buffer.from([0xc3, 1, 2]), headers: { 'hw-kind': 'change', multi: ['a', Buffer.from('b')] } },
    { offsetDelta: 1, timestampDelta: 7, key: null, value: null },
    { offsetDelta: 3, timestampDelta: -2, key: Buffer.from('bin'), value: 'x'.repeat(300), headers: { e: '' } },
  ];
  return encodeFetchV11Response([
    {
      topic: 'hw.sample',
      partitions: [
        { partition: 0, highWatermark: 42n, batches: [{ firstOffset: 5n, firstTimestamp: 1_700_000_000_000, records }, { firstOffset: 9n, firstTimestamp: 1_700_000_000_100, records: records.slice(0, 1) }], cut: 20 },
        { partition: 3, highWatermark: 7n, abortedTransactions: [{ producerId: 12n, firstOffset: 2n }], batches: [{ firstOffset: 2n, firstTimestamp: 1_700_000_000_000, transactional: true, producerId: 12n, extraAttributes: CONTROL_FLAG_MASK, records: records.slice(1, 2) }] },
        { partition: 4, highWatermark: 0n, batches: [] },
      ],
    },
  ]);
}

/** kafkajs' Fetch v11 response module (decode and parse). */
interface FetchResponseModule {
  decode: (raw: Buffer) => Promise<unknown>;
  parse: (data: unknown) => Promise<unknown>;
}

interface FetchDefinition {
  versions: string[];
  protocol: (v: { version: number }) => FetchFactory;
}
type FetchFactory = (args: unknown) => { request: unknown; response: FetchResponseModule; requestTimeout?: number };

const FAST_VERSION = 11;
const INSTALLED = Symbol.for('highwater.fastFetch');

/**
 * Decodes with decodeFetchV11, or with kafkajs' `original` for whatever it leaves to kafkajs — and for anything it
 * throws besides (a defect here must cost speed, not the consumer).
 */
export function decodeWithFallback(original: FetchResponseModule['decode']): FetchResponseModule['decode'] {
  return async (raw) => {
    let decoded: FetchResponse;
    try {
      decoded = decodeFetchV11(raw);
    } catch {
      fetchDecodes.kafkajs++;
      return withStringHeaders(await original(raw));
    }
    fetchDecodes.fast++;
    return decoded;
  };
}

/**
 * kafkajs' decoded response with every header value a UTF-8 string, as decodeFetchV11 gives them (a repeated
 * header's array element by element; anything not a Buffer as it is), so that a consumer sees the same whichever
 * decoder ran. In place; returns its argument.
 */
export function withStringHeaders<T>(decoded: T): T {
  const text = (v: unknown): unknown => (Buffer.isBuffer(v) ? v.toString('utf8') : v);
  for (const topic of (decoded as Partial<FetchResponse>).responses ?? []) {
    for (const partition of topic.partitions ?? []) {
      for (const message of partition.messages ?? []) {
        const headers = message.headers ?? {};
        for (const key of Object.keys(headers)) {
          const v = headers[key];
          headers[key] = Array.isArray(v) ? v.map(text) : text(v);
        }
      }
    }
  }
  return decoded;
}

/** Fetch responses of this process decoded by each of the two decoders (for tests and diagnosis). */
export const fetchDecodes = { fast: 0, kafkajs: 0 };

/**
 * Makes kafkajs decode Fetch responses of version 11 with decodeFetchV11 (falling back to its own decoder for what
 * that leaves to it); requests, errors and everything after decoding stay kafkajs'. Done once per process, only if
 * both decoders agree on `sample` (a response with batches, headers, a control batch and a partial tail); returns
 * whether the fast decoder is in place.
 */
export async function installFastFetch(): Promise<boolean> {
  const requests = (require('kafkajs/src/protocol/requests') as { requests: Record<string, unknown> }).requests;
  const def = requests['Fetch'] as (FetchDefinition & { [INSTALLED]?: Promise<boolean> }) | undefined;
  if (!def || typeof def.protocol !== 'function' || !def.versions.includes(String(FAST_VERSION))) return false;
  const already = def[INSTALLED];
  if (already) return already;
  const original = def.protocol;
  const check = (async () => {
    const theirs = (require('kafkajs/src/protocol/requests/fetch/v11/response') as FetchResponseModule).decode;
    const sample = await sampleFetchResponse();
    if (!isDeepStrictEqual(decodeFetchV11(sample), withStringHeaders(await theirs(sample)))) return false;
    def.protocol = ({ version }) => {
      const factory = original({ version });
      if (version !== FAST_VERSION || typeof factory !== 'function') return factory;
      return (args) => {
        const built = factory(args);
        return { ...built, response: { ...built.response, decode: decodeWithFallback(built.response.decode.bind(built.response)) } };
      };
    };
    return true;
  })().catch(() => false);
  def[INSTALLED] = check;
  return check;
}
