import { createRequire } from 'node:module';
import { crc32c } from './crc32c.js';

/**
 * The body of a Produce request (versions 3 to 7: one layout, record batches of magic 2) encoded in one buffer, byte
 * for byte what kafkajs' own encoder (protocol/requests/produce/v3/request.js, recordBatch/v0, record/v0,
 * header/v0) writes for the same arguments.
 *
 * Why: kafkajs encodes every record and every header with its own Encoder, each a zero-filled 512-byte Buffer,
 * builds varints through temporary arrays and Buffers, 64-bit varints with Long objects, copies each record twice
 * more into the batch and computes CRC-32C a byte at a time — most of the poller's CPU time per row that is not
 * waiting. Here sizes are computed first, the request is written once into one buffer, and the CRC is slice-by-8.
 *
 * Only the common case is encoded here: no compression, no record timestamps, keys and values null, strings or
 * Buffers, header values strings or Buffers (or arrays of them). Anything else is left to kafkajs (see
 * `encodable`), so the wire format never depends on which of the two encoded a request. installFastProduce puts
 * this behind kafkajs' request lookup and checks, before it does, that both encoders agree on a sample.
 */

const require = createRequire(import.meta.url);

interface KafkaLong {
  getHighBits(): number;
  getLowBits(): number;
}
interface LongStatic {
  fromValue(v: unknown): KafkaLong;
}
/** kafkajs' Encoder, of which only the shape that the request framing reads (buf, offset) is used. */
interface KafkaEncoder {
  buf: Buffer;
  offset: number;
}
type EncoderClass = new (initialSize?: number) => KafkaEncoder;

const Long = require('kafkajs/src/utils/long') as LongStatic;
const Encoder = require('kafkajs/src/protocol/encoder') as EncoderClass;

export type HeaderValue = string | Buffer;

export interface ProduceMessage {
  readonly key?: string | Buffer | null;
  readonly value: string | Buffer | null;
  readonly headers?: Readonly<Record<string, HeaderValue | readonly HeaderValue[]>>;
  readonly timestamp?: unknown;
  readonly partition?: number;
}

export interface ProducePartitionData {
  readonly partition: number;
  readonly firstSequence?: number;
  readonly messages: readonly ProduceMessage[];
}

export interface ProduceTopicData {
  readonly topic: string;
  readonly partitions: readonly ProducePartitionData[];
}

/** The arguments kafkajs' broker passes to a Produce request. */
export interface ProduceArgs {
  readonly acks: number;
  readonly timeout: number;
  readonly transactionalId?: string | null;
  readonly producerId?: unknown;
  readonly producerEpoch?: number;
  readonly compression?: number;
  readonly topicData: readonly ProduceTopicData[];
}

const NONE = 0;
const TRANSACTIONAL = 16;
const MAGIC = 2;

function isBytes(v: unknown): v is string | Buffer {
  return typeof v === 'string' || Buffer.isBuffer(v);
}

/** Whether these arguments take the fast path; otherwise kafkajs encodes them (and reports what it rejects). */
export function encodable(args: ProduceArgs): boolean {
  if ((args.compression ?? NONE) !== NONE) return false;
  if (args.transactionalId != null && typeof args.transactionalId !== 'string') return false;
  if (!Array.isArray(args.topicData)) return false;
  for (const t of args.topicData) {
    if (typeof t.topic !== 'string' || !Array.isArray(t.partitions)) return false;
    for (const p of t.partitions) {
      if (!Array.isArray(p.messages)) return false;
      for (const m of p.messages) {
        if (m.timestamp != null) return false;
        if (m.key != null && !isBytes(m.key)) return false;
        if (m.value != null && !isBytes(m.value)) return false;
        const headers = m.headers;
        if (headers === undefined) continue;
        if (headers === null || typeof headers !== 'object') return false;
        // for-in must list what Object.keys (kafkajs' Record) lists: no inherited enumerable keys.
        for (const k in headers) {
          if (!Object.prototype.hasOwnProperty.call(headers, k)) return false;
          const v = headers[k];
          if (Array.isArray(v)) {
            for (const x of v as readonly unknown[]) if (!isBytes(x)) return false;
          } else if (!isBytes(v)) return false;
        }
      }
    }
  }
  return true;
}

/** Bytes of a zig-zag varint as kafkajs writes it (Encoder.writeVarInt: 32-bit zig-zag, then LEB128). */
function sizeOfVarInt(n: number): number {
  let v = (n << 1) ^ (n >> 31);
  let bytes = 1;
  while ((v & 0xffffff80) !== 0) {
    bytes++;
    v >>>= 7;
  }
  return bytes;
}

function writeVarInt(buf: Buffer, offset: number, n: number): number {
  let v = (n << 1) ^ (n >> 31);
  while ((v & 0xffffff80) !== 0) {
    buf[offset++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[offset++] = v & 0x7f;
  return offset;
}

/** UTF-8 length of a string; ASCII (most keys and header values) without a call into the runtime. */
function utf8Length(s: string): number {
  const n = s.length;
  if (n > 64) return Buffer.byteLength(s, 'utf8');
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s, 'utf8');
  return n;
}

function byteLengthOf(v: string | Buffer): number {
  return typeof v === 'string' ? utf8Length(v) : v.length;
}

/** Writes bytes known to be `length` long; short ASCII strings by hand, the rest through Buffer. */
function writeRaw(buf: Buffer, offset: number, v: string | Buffer, length: number): number {
  if (typeof v !== 'string') {
    buf.set(v, offset);
  } else if (length === v.length && length <= 64) {
    for (let i = 0; i < length; i++) buf[offset + i] = v.charCodeAt(i);
  } else {
    buf.write(v, offset, length, 'utf8');
  }
  return offset + length;
}

/**
 * Lengths found by the sizing pass and read back by the writing pass, in message order: per record its body size,
 * key length, value length (-1 for null) and header count, then per header its key and value lengths. One growing
 * array for the process instead of objects per record and header.
 */
let lengths = new Int32Array(1 << 16);

function ensureLengths(n: number): void {
  if (n <= lengths.length) return;
  let size = lengths.length;
  while (size < n) size *= 2;
  const next = new Int32Array(size);
  next.set(lengths);
  lengths = next;
}

/**
 * Sizes one record into `lengths` from `at` and returns the index after it. Headers in for-in order, which
 * `encodable` made Object.keys order (kafkajs' Record flattens Object.keys(headers), arrays into one header each).
 */
function sizeRecord(m: ProduceMessage, offsetDelta: number, at: number): number {
  const headers = m.headers;
  let headerCount = 0;
  if (headers !== undefined) {
    for (const k in headers) {
      const v = headers[k]!;
      headerCount += Array.isArray(v) ? v.length : 1;
    }
  }
  ensureLengths(at + 4 + 2 * headerCount + 2);
  const key = m.key;
  const value = m.value;
  const keyLength = key == null ? -1 : byteLengthOf(key);
  const valueLength = value == null ? -1 : byteLengthOf(value);
  let size =
    1 + // attributes
    1 + // timestamp delta: always 0 here (no record timestamps), one varint byte
    sizeOfVarInt(offsetDelta) +
    (keyLength < 0 ? 1 : sizeOfVarInt(keyLength) + keyLength) +
    (valueLength < 0 ? 1 : sizeOfVarInt(valueLength) + valueLength) +
    sizeOfVarInt(headerCount);
  lengths[at + 1] = keyLength;
  lengths[at + 2] = valueLength;
  lengths[at + 3] = headerCount;
  let i = at + 4;
  if (headers !== undefined) {
    for (const k in headers) {
      const v = headers[k]!;
      const kl = utf8Length(k);
      if (Array.isArray(v)) {
        for (const x of v as readonly HeaderValue[]) {
          const vl = byteLengthOf(x);
          lengths[i++] = kl;
          lengths[i++] = vl;
          size += sizeOfVarInt(kl) + kl + sizeOfVarInt(vl) + vl;
        }
      } else {
        const vl = byteLengthOf(v as HeaderValue);
        lengths[i++] = kl;
        lengths[i++] = vl;
        size += sizeOfVarInt(kl) + kl + sizeOfVarInt(vl) + vl;
      }
    }
  }
  lengths[at] = size;
  return i;
}

/** Writes one record sized by sizeRecord at `at`; returns the buffer offset after it. */
function writeRecord(buf: Buffer, o: number, m: ProduceMessage, offsetDelta: number, at: number): number {
  o = writeVarInt(buf, o, lengths[at]!);
  buf[o++] = 0; // attributes
  buf[o++] = 0; // timestamp delta (varlong 0)
  o = writeVarInt(buf, o, offsetDelta);
  const keyLength = lengths[at + 1]!;
  o = writeVarInt(buf, o, keyLength);
  if (keyLength >= 0) o = writeRaw(buf, o, m.key!, keyLength);
  const valueLength = lengths[at + 2]!;
  o = writeVarInt(buf, o, valueLength);
  if (valueLength >= 0) o = writeRaw(buf, o, m.value!, valueLength);
  o = writeVarInt(buf, o, lengths[at + 3]!);
  const headers = m.headers;
  if (headers === undefined) return o;
  let i = at + 4;
  for (const k in headers) {
    const v = headers[k]!;
    if (Array.isArray(v)) {
      for (const x of v as readonly HeaderValue[]) {
        o = writeVarInt(buf, o, lengths[i]!);
        o = writeRaw(buf, o, k, lengths[i++]!);
        o = writeVarInt(buf, o, lengths[i]!);
        o = writeRaw(buf, o, x, lengths[i++]!);
      }
    } else {
      o = writeVarInt(buf, o, lengths[i]!);
      o = writeRaw(buf, o, k, lengths[i++]!);
      o = writeVarInt(buf, o, lengths[i]!);
      o = writeRaw(buf, o, v as HeaderValue, lengths[i++]!);
    }
  }
  return o;
}

/** Bytes from the batch's first field (base offset) to its end. */
const BATCH_HEADER_BYTES = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;

/**
 * The Produce request body for `args` (which `encodable` accepted), with `now` the timestamp kafkajs would take
 * from Date.now() for the batches of records that carry none. Pure apart from a reused scratch array.
 */
export function encodeProduceRequest(args: ProduceArgs, now: number): Buffer {
  const transactionalId = args.transactionalId ?? null;
  const transactionalLength = transactionalId === null ? -1 : Buffer.byteLength(transactionalId, 'utf8');
  let total = 2 + Math.max(transactionalLength, 0) + 2 + 4 + 4;
  // Sizing pass: every record's lengths into `lengths`, every partition's batch size into `batchSizes`.
  const batchSizes: number[] = [];
  let at = 0;
  for (const t of args.topicData) {
    total += 2 + Buffer.byteLength(t.topic, 'utf8') + 4;
    for (const p of t.partitions) {
      let batchSize = BATCH_HEADER_BYTES;
      const messages = p.messages;
      for (let i = 0; i < messages.length; i++) {
        const next = sizeRecord(messages[i]!, i, at);
        const body = lengths[at]!;
        batchSize += sizeOfVarInt(body) + body;
        at = next;
      }
      batchSizes.push(batchSize);
      total += 4 + 4 + batchSize;
    }
  }

  const buf = Buffer.allocUnsafe(total);
  let o = 0;
  o = buf.writeInt16BE(transactionalLength, o);
  if (transactionalId !== null) o += buf.write(transactionalId, o, transactionalLength, 'utf8');
  o = buf.writeInt16BE(args.acks, o);
  o = buf.writeInt32BE(args.timeout, o);
  o = buf.writeInt32BE(args.topicData.length, o);
  const producerId = Long.fromValue(args.producerId ?? -1);
  const attributes = NONE | (transactionalId ? TRANSACTIONAL : 0);
  const nowHigh = Math.floor(now / 0x100000000) | 0;
  const nowLow = now >>> 0;
  let batch = 0;
  at = 0;
  for (const t of args.topicData) {
    const topicLength = Buffer.byteLength(t.topic, 'utf8');
    o = buf.writeInt16BE(topicLength, o);
    o += buf.write(t.topic, o, topicLength, 'utf8');
    o = buf.writeInt32BE(t.partitions.length, o);
    for (const p of t.partitions) {
      const batchSize = batchSizes[batch++]!;
      const messages = p.messages;
      o = buf.writeInt32BE(p.partition, o);
      o = buf.writeInt32BE(batchSize, o); // the record set: one batch
      o = buf.writeInt32BE(0, o); // base offset (int64 0)
      o = buf.writeInt32BE(0, o);
      o = buf.writeInt32BE(batchSize - 12, o); // batch length: what follows this field
      o = buf.writeInt32BE(0, o); // partition leader epoch
      o = buf.writeInt8(MAGIC, o);
      const crcAt = o;
      o += 4;
      const bodyStart = o;
      o = buf.writeInt16BE(attributes, o);
      o = buf.writeInt32BE(messages.length - 1, o); // last offset delta
      o = buf.writeInt32BE(nowHigh, o); // first timestamp
      o = buf.writeInt32BE(nowLow | 0, o);
      o = buf.writeInt32BE(nowHigh, o); // max timestamp
      o = buf.writeInt32BE(nowLow | 0, o);
      o = buf.writeInt32BE(producerId.getHighBits(), o);
      o = buf.writeInt32BE(producerId.getLowBits(), o);
      o = buf.writeInt16BE(args.producerEpoch ?? 0, o);
      o = buf.writeInt32BE(p.firstSequence ?? 0, o);
      o = buf.writeInt32BE(messages.length, o);
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i]!;
        o = writeRecord(buf, o, m, i, at);
        at += 4 + 2 * lengths[at + 3]!;
      }
      buf.writeUInt32BE(crc32c(buf, bodyStart, o), crcAt);
    }
  }
  if (o !== total) throw new Error(`produce request encoder: wrote ${o} bytes, computed ${total}`);
  return buf;
}

/** A kafkajs Encoder holding `bytes`, for the request framing (protocol/request.js), which reads buf and offset. */
export function asKafkaEncoder(bytes: Buffer): KafkaEncoder {
  const e = new Encoder(1);
  e.buf = bytes;
  e.offset = bytes.length;
  return e;
}

/** kafkajs' Produce request definition (protocol/requests/produce/index.js), the object its broker looks versions up in. */
interface ProduceDefinition {
  versions: string[];
  protocol: (v: { version: number }) => ProduceFactory;
}
type ProduceFactory = (args: ProduceArgs) => { request: { encode: () => Promise<unknown>; apiVersion: number }; response: unknown };

const FAST_MIN_VERSION = 3;
const FAST_MAX_VERSION = 7;
const INSTALLED = Symbol.for('highwater.fastProduce');

/** The sample installFastProduce encodes both ways before it trusts this encoder. */
export function sampleProduceArgs(): ProduceArgs {
  return {
    acks: -1,
    timeout: 30_000,
    producerId: 4242,
    producerEpoch: 3,
    compression: NONE,
    topicData: [
      {
        topic: 'hw.sample',
        partitions: [
          {
            partition: 2,
            firstSequence: 17,
            messages: [
              { key: 'k-é', value: Buffer.from([0xc3, 1, 2, 3]), headers: { 'hw-kind': 'change', multi: ['a', Buffer.from('b')] } },
              { key: null, value: null, headers: {} },
              { key: Buffer.from('bin'), value: 'x'.repeat(300) },
            ],
          },
        ],
      },
    ],
  };
}

/** Offset of the first batch's first timestamp in a request body of sampleProduceArgs (no transactional id). */
function sampleTimestampOffset(args: ProduceArgs): number {
  const topic = args.topicData[0]!.topic;
  return 2 + 2 + 4 + 4 + (2 + Buffer.byteLength(topic) + 4) + (4 + 4) + (8 + 4 + 4 + 1 + 4) + 2 + 4;
}

/**
 * Whether this encoder writes exactly kafkajs' bytes for the sample (with kafkajs' own timestamp). A kafkajs that
 * changed its encoding keeps its own encoder. Not pure: runs kafkajs' encoder.
 */
export async function agreesWithKafkajs(factory: ProduceFactory): Promise<boolean> {
  const args = sampleProduceArgs();
  const theirs = (await factory(args).request.encode()) as KafkaEncoder;
  const expected = theirs.buf.subarray(0, theirs.offset);
  const at = sampleTimestampOffset(args);
  if (expected.length < at + 8) return false;
  const now = Number(expected.readBigInt64BE(at));
  return encodeProduceRequest(args, now).equals(expected);
}

/**
 * Makes kafkajs' brokers encode Produce requests (versions 3 to 7) with encodeProduceRequest when `encodable`
 * accepts their arguments; responses, retries, sequence numbers and everything else stay kafkajs'. Done once per
 * process, only if both encoders agree on a sample; returns whether the fast encoder is in place.
 */
export async function installFastProduce(): Promise<boolean> {
  const requests = (require('kafkajs/src/protocol/requests') as { requests: Record<string, unknown> }).requests;
  const def = requests['Produce'] as (ProduceDefinition & { [INSTALLED]?: Promise<boolean> }) | undefined;
  if (!def || typeof def.protocol !== 'function') return false;
  const already = def[INSTALLED];
  if (already) return already;
  const original = def.protocol;
  const check = (async () => {
    for (let v = FAST_MIN_VERSION; v <= FAST_MAX_VERSION; v++) {
      if (!def.versions.includes(String(v))) return false;
      if (!(await agreesWithKafkajs(original({ version: v })))) return false;
    }
    def.protocol = ({ version }) => {
      const factory = original({ version });
      if (version < FAST_MIN_VERSION || version > FAST_MAX_VERSION) return factory;
      return (args) => {
        const built = factory(args);
        if (encodable(args)) built.request.encode = async () => asKafkaEncoder(encodeProduceRequest(args, Date.now()));
        return built;
      };
    };
    return true;
  })().catch(() => false);
  def[INSTALLED] = check;
  return check;
}
