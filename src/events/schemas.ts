import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';

/**
 * The Avro schemas of schema/avro, parsed with a `long` that decodes to bigint: ticks since 1970 exceed 2^53,
 * and avsc's default `long` would throw (or, worse, round) on them.
 */

export const SCHEMA_NAMES = ['BlobChange', 'BlobChunk', 'WatermarkMarker', 'BackfillRequest'] as const;
export type SchemaName = (typeof SCHEMA_NAMES)[number];

/** avsc's bigint long as declared: every value read through an 8-byte Buffer (avsc's unpackLongBytes). */
export const unpackingBigintLong = avro.types.LongType.__with({
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(),
  toBuffer: (n: bigint) => {
    const buf = Buffer.alloc(8);
    buf.writeBigInt64LE(BigInt(n));
    return buf;
  },
  fromJSON: (v: unknown) => BigInt(v as string | number),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a === b ? 0 : a < b ? -1 : 1),
});

/** avsc's reading position in a buffer (its Tap). */
interface Tap {
  buf: Buffer;
  pos: number;
}

/** Varint bytes read as one number (below 2^49, exact); up to FAST_LONG_BYTES in all (63 bits) on the fast path. */
const NUMBER_BYTES = 7;
const FAST_LONG_BYTES = 9;
const LOW_BITS = 49n;

/** avsc's own reading of a long: through an 8-byte Buffer. */
function unpackingRead(self: unknown, tap: Tap): unknown {
  return (unpackingBigintLong as unknown as { _read(tap: Tap): unknown })._read.call(self, tap);
}

/**
 * The bigint long, reading the usual value without avsc's per-value Buffer (allocated and zero-filled for every
 * long, eight of them in a change event): a zig-zag varint of at most nine bytes (63 bits: every tick count, size and
 * window bound) is read here, its first seven bytes as one number, the rest as a second; a ten-byte one, or one that
 * runs past the end of the buffer, is read by avsc's own path, as before. Same values, same errors
 * (test/unit/avro-long.test.ts).
 */
export const bigintLong: avro.types.LongType = Object.create(unpackingBigintLong, {
  _read: {
    value: function readLong(this: unknown, tap: Tap): unknown {
      const buf = tap.buf;
      const end = buf.length;
      let pos = tap.pos;
      if (pos >= end) return unpackingRead(this, tap);
      let b = buf[pos++]!;
      let low = b & 0x7f;
      let scale = 128;
      let read = 1;
      for (; b & 0x80 && read < NUMBER_BYTES; read++) {
        if (pos >= end) return unpackingRead(this, tap);
        b = buf[pos++]!;
        low += (b & 0x7f) * scale;
        scale *= 128;
      }
      if (!(b & 0x80)) {
        tap.pos = pos;
        return BigInt(low % 2 === 0 ? low / 2 : -(low + 1) / 2);
      }
      let high = 0;
      scale = 1;
      for (; b & 0x80; read++) {
        if (read === FAST_LONG_BYTES || pos >= end) return unpackingRead(this, tap);
        b = buf[pos++]!;
        high += (b & 0x7f) * scale;
        scale *= 128;
      }
      tap.pos = pos;
      const zigzag = (BigInt(high) << LOW_BITS) + BigInt(low);
      return low % 2 === 0 ? zigzag >> 1n : -(zigzag >> 1n) - 1n;
    },
  },
}) as avro.types.LongType;

/** Options every Avro type of highwater is built with (also handed to the schema-registry client). */
export function avroTypeOptions(): Partial<avro.ForSchemaOptions> {
  return { registry: { long: bigintLong } };
}

export interface LoadedSchema {
  readonly name: SchemaName;
  readonly json: avro.Schema;
  readonly type: avro.Type;
  /** CRC-64-AVRO fingerprint of the Parsing Canonical Form, little-endian, as single-object encoding writes it. */
  readonly fingerprint: Buffer;
}

/** A schema a producer used before the current one: decoded by resolving it against the current schema. */
export interface HistoricSchema {
  readonly name: SchemaName;
  readonly file: string;
  readonly type: avro.Type;
  readonly fingerprint: Buffer;
  /** Reads a body written with this schema as a record of the current schema. */
  readonly resolver: avro.Resolver;
}

let cache: ReadonlyMap<SchemaName, LoadedSchema> | undefined;
let history: readonly HistoricSchema[] | undefined;

export function schemaDirectory(): string {
  return fileURLToPath(new URL('../../schema/avro/', import.meta.url));
}

/** Reads and parses schema/avro once per process (on first use, not at import). */
export function loadSchemas(): ReadonlyMap<SchemaName, LoadedSchema> {
  cache ??= new Map(SCHEMA_NAMES.map((name) => [name, loadSchema(name)]));
  return cache;
}

export function schemaOf(name: SchemaName): LoadedSchema {
  return loadSchemas().get(name)!;
}

function loadSchema(name: SchemaName): LoadedSchema {
  return parseSchema(name, `${schemaDirectory()}${name}.avsc`);
}

function parseSchema(name: SchemaName, path: string): LoadedSchema {
  const json = JSON.parse(readFileSync(path, 'utf8')) as avro.Schema;
  const type = avro.Type.forSchema(json, avroTypeOptions());
  const canonical = JSON.stringify(avro.Type.forSchema(json).schema());
  return { name, json, type, fingerprint: rabinFingerprint(canonical) };
}

/**
 * Earlier versions of the schemas (schema/avro/history/<Name>.v<N>.avsc), so records written by an older producer
 * (a topic replayed for a rebuild) still decode: their body is read with the old schema and resolved into the
 * current one (new fields take their defaults).
 */
export function historicSchemas(): readonly HistoricSchema[] {
  history ??= readdirSync(`${schemaDirectory()}history/`)
    .map((file) => ({ file, match: /^([A-Za-z]+)\.v\d+\.avsc$/.exec(file) }))
    .filter((f): f is { file: string; match: RegExpExecArray } => f.match !== null && (SCHEMA_NAMES as readonly string[]).includes(f.match[1]!))
    .map(({ file, match }) => {
      const name = match[1] as SchemaName;
      const old = parseSchema(name, `${schemaDirectory()}history/${file}`);
      return { name, file, type: old.type, fingerprint: old.fingerprint, resolver: schemaOf(name).type.createResolver(old.type) };
    });
  return history;
}

// CRC-64-AVRO (Rabin) as defined by the Avro specification, for single-object encoding.
const EMPTY = 0xc15d213aa4d7a795n;
const MASK = 0xffffffffffffffffn;
let table: bigint[] | undefined;

function rabinTable(): bigint[] {
  if (table) return table;
  table = [];
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n) & MASK);
    table.push(fp & MASK);
  }
  return table;
}

export function rabinFingerprint(text: string): Buffer {
  const t = rabinTable();
  let fp = EMPTY;
  for (const byte of Buffer.from(text, 'utf8')) fp = (fp >> 8n) ^ t[Number((fp ^ BigInt(byte)) & 0xffn)]!;
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(fp & MASK);
  return out;
}
