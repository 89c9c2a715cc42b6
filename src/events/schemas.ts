import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';

/**
 * The Avro schemas of schema/avro, parsed with a `long` that decodes to bigint: ticks since 1970 exceed 2^53,
 * and avsc's default `long` would throw (or, worse, round) on them.
 */

export const SCHEMA_NAMES = ['BlobChange', 'BlobChunk', 'WatermarkMarker', 'BackfillRequest'] as const;
export type SchemaName = (typeof SCHEMA_NAMES)[number];

export const bigintLong = avro.types.LongType.__with({
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

let cache: ReadonlyMap<SchemaName, LoadedSchema> | undefined;

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
  const json = JSON.parse(readFileSync(`${schemaDirectory()}${name}.avsc`, 'utf8')) as avro.Schema;
  const type = avro.Type.forSchema(json, avroTypeOptions());
  const canonical = JSON.stringify(avro.Type.forSchema(json).schema());
  return { name, json, type, fingerprint: rabinFingerprint(canonical) };
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
