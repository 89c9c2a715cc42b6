import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { HighwaterError, coerceError } from '../errors.js';
import { SCHEMA_NAMES, avroTypeOptions, historicSchemas, loadSchemas, schemaOf, type SchemaName } from './schemas.js';

/**
 * Event value encodings. Both carry Avro binary bodies; they differ in how a reader finds the writer's schema:
 * - single-object (Avro spec): 0xC3 0x01, then the 8-byte CRC-64-AVRO fingerprint of the schema, then the body;
 *   the schemas are the files in schema/avro, so no registry is needed.
 * - registry (Confluent wire format): 0x00, then the 4-byte big-endian schema id, then the body; subjects use the
 *   record-name strategy (`io.highwater.events.BlobChange`), because one topic carries several record types.
 * A decoder accepts both, so a consumer keeps working while producers switch encoding.
 */

export type EncodingKind = 'single-object' | 'registry';

export interface Decoded {
  readonly schema: SchemaName;
  readonly record: unknown;
}

export interface EventCodec {
  readonly encoding: EncodingKind;
  encode(schema: SchemaName, record: unknown): Promise<Buffer>;
  decode(buf: Buffer): Promise<Decoded>;
}

const SINGLE_OBJECT_MAGIC = Buffer.from([0xc3, 0x01]);
const NAMESPACE = 'io.highwater.events';

/** Bytes before the Avro body in a single-object value: the magic and the schema's 8-byte fingerprint. */
const SINGLE_OBJECT_HEADER_BYTES = 10;
/** Values up to this size are written into `scratch` and copied out once; larger ones (chunks) the plain way. */
const SCRATCH_BYTES = 64 * 1024;
let scratch: Buffer | undefined;

/**
 * The single-object encoding of `record`. Small values (every change event) are encoded behind their header in a
 * reused buffer and copied out once: avsc's toBuffer allocates a zero-filled buffer per value and the concatenation
 * another, for every row the poller publishes. Same bytes either way.
 */
export function encodeSingleObject(schema: SchemaName, record: unknown): Buffer {
  const s = schemaOf(schema);
  scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES);
  const end = s.type.encode(record, scratch, SINGLE_OBJECT_HEADER_BYTES);
  if (end < 0) return Buffer.concat([SINGLE_OBJECT_MAGIC, s.fingerprint, s.type.toBuffer(record)]);
  const out = Buffer.allocUnsafe(end);
  SINGLE_OBJECT_MAGIC.copy(out, 0);
  s.fingerprint.copy(out, 2);
  scratch.copy(out, SINGLE_OBJECT_HEADER_BYTES, SINGLE_OBJECT_HEADER_BYTES, end);
  return out;
}

export function decodeSingleObject(buf: Buffer): Decoded {
  const fingerprint = buf.subarray(2, 10);
  for (const s of loadSchemas().values()) {
    if (s.fingerprint.equals(fingerprint)) return { schema: s.name, record: decodeBody(s.name, buf.subarray(10)) };
  }
  for (const h of historicSchemas()) {
    if (h.fingerprint.equals(fingerprint)) return { schema: h.name, record: decodeBody(h.name, buf.subarray(10), h.resolver) };
  }
  throw new HighwaterError('DECODE_FAILED', `unknown schema fingerprint ${fingerprint.toString('hex')}`);
}

function decodeBody(schema: SchemaName, body: Buffer, resolver?: avro.Resolver): unknown {
  try {
    return schemaOf(schema).type.fromBuffer(body, resolver);
  } catch (err) {
    throw new HighwaterError('DECODE_FAILED', `value does not match schema ${schema}: ${coerceError(err).message}`, { cause: err });
  }
}

export function isSingleObject(buf: Buffer): boolean {
  return buf.length >= 10 && buf[0] === 0xc3 && buf[1] === 0x01;
}

export function isConfluentWire(buf: Buffer): boolean {
  return buf.length >= 5 && buf[0] === 0x00;
}

/** Single-object codec; decodes registry-encoded values too when a registry is given. */
export class SingleObjectCodec implements EventCodec {
  readonly encoding = 'single-object' as const;

  constructor(private readonly registry?: RegistryCodec) {}

  async encode(schema: SchemaName, record: unknown): Promise<Buffer> {
    return encodeSingleObject(schema, record);
  }

  async decode(buf: Buffer): Promise<Decoded> {
    if (isSingleObject(buf)) return decodeSingleObject(buf);
    if (isConfluentWire(buf) && this.registry) return this.registry.decode(buf);
    throw new HighwaterError('DECODE_FAILED', describeUnknownFraming(buf));
  }
}

function describeUnknownFraming(buf: Buffer): string {
  if (isConfluentWire(buf)) return 'value is in Confluent wire format but no schema registry is configured';
  return `value is neither Avro single-object nor Confluent framed (first bytes ${buf.subarray(0, 4).toString('hex') || 'none'})`;
}

/** Confluent wire format through a Confluent-compatible schema registry. */
export class RegistryCodec implements EventCodec {
  readonly encoding = 'registry' as const;
  private readonly ids = new Map<SchemaName, Promise<number>>();
  private readonly client: SchemaRegistry;

  constructor(private readonly registryUrl: string) {
    this.client = new SchemaRegistry({ host: registryUrl }, { [SchemaType.AVRO]: avroTypeOptions() });
  }

  async encode(schema: SchemaName, record: unknown): Promise<Buffer> {
    const id = await this.idOf(schema);
    return this.client.encode(id, record);
  }

  async decode(buf: Buffer): Promise<Decoded> {
    if (isSingleObject(buf)) return decodeSingleObject(buf);
    if (!isConfluentWire(buf)) throw new HighwaterError('DECODE_FAILED', describeUnknownFraming(buf));
    const id = buf.readInt32BE(1);
    const schema = await this.schemaNameOf(id);
    try {
      return { schema, record: await this.client.decode(buf) };
    } catch (err) {
      throw new HighwaterError('DECODE_FAILED', `value does not match registry schema ${id}: ${coerceError(err).message}`, { cause: err });
    }
  }

  /** Registers every schema up front, so a misconfigured registry fails at start-up, not mid-run. */
  async registerAll(): Promise<void> {
    await Promise.all(SCHEMA_NAMES.map((n) => this.idOf(n)));
  }

  private idOf(schema: SchemaName): Promise<number> {
    let id = this.ids.get(schema);
    if (!id) {
      id = this.register(schema);
      id.catch(() => this.ids.delete(schema));
      this.ids.set(schema, id);
    }
    return id;
  }

  /**
   * Registers through the Confluent REST endpoint itself rather than the client's register(), which also rewrites
   * the subject's compatibility setting — an operator's decision, and one Apicurio refuses to have overwritten.
   * Registering an identical schema again returns its existing id.
   */
  private async register(schema: SchemaName): Promise<number> {
    const url = `${this.registryUrl.replace(/\/$/, '')}/subjects/${encodeURIComponent(`${NAMESPACE}.${schema}`)}/versions`;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
        body: JSON.stringify({ schema: JSON.stringify(schemaOf(schema).json) }),
      });
    } catch (err) {
      throw new HighwaterError('KAFKA_UNAVAILABLE', `cannot reach the schema registry to register ${schema}: ${coerceError(err).message}`, { cause: err });
    }
    const body = (await response.json().catch(() => ({}))) as { id?: number; message?: string };
    if (!response.ok || typeof body.id !== 'number') {
      const code = response.status >= 500 ? 'KAFKA_UNAVAILABLE' : 'KAFKA_REJECTED';
      throw new HighwaterError(code, `the schema registry refused ${schema} (HTTP ${response.status}): ${body.message ?? 'no message'}`);
    }
    return body.id;
  }

  private async schemaNameOf(id: number): Promise<SchemaName> {
    let fullName: string | undefined;
    try {
      const s = (await this.client.getSchema(id)) as { name?: string };
      fullName = s.name;
    } catch (err) {
      throw new HighwaterError('DECODE_FAILED', `unknown registry schema id ${id}: ${coerceError(err).message}`, { cause: err });
    }
    const short = fullName?.replace(`${NAMESPACE}.`, '') as SchemaName | undefined;
    if (!short || !SCHEMA_NAMES.includes(short)) throw new HighwaterError('DECODE_FAILED', `registry schema ${id} (${fullName}) is not a highwater event`);
    return short;
  }
}

export function createCodec(encoding: { kind: EncodingKind; registryUrl?: string | undefined }): EventCodec {
  const registry = encoding.registryUrl ? new RegistryCodec(encoding.registryUrl) : undefined;
  if (encoding.kind === 'registry') {
    if (!registry) throw new HighwaterError('CONFIG_INVALID', 'encoding.registryUrl is required for the registry encoding');
    return registry;
  }
  return new SingleObjectCodec(registry);
}
