import { CHUNK_KEY_PREFIX, HEADERS, MARKER_KEY_PREFIX, type BlobChange, type BlobChunk, type Deletion, type RecordKind, type TopicEvent, type WatermarkMarker } from '../contract.js';
import { HighwaterError } from '../errors.js';
import { isoFromTicks } from '../time/ticks.js';
import type { EventCodec } from './codec.js';
import { changeFromAvro, changeToAvro, chunkFromAvro, chunkToAvro, markerFromAvro, markerToAvro, type AvroBlobChange, type AvroBlobChunk, type AvroMarker } from './mapping.js';
import { invalidChangeReason } from './validate.js';

/** Kafka records of a table topic, built from and decoded into the contract's events. Pure apart from the codec. */

export interface OutRecord {
  readonly key: string;
  readonly value: Buffer | null;
  readonly headers: Readonly<Record<string, string>>;
  /** Set for records whose partition is chosen, not hashed: chunks (their row's partition) and markers. */
  readonly partition?: number;
}

export interface InRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: bigint;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: Readonly<Record<string, string>>;
  /** The record's Kafka timestamp (ms), when known: orders records of different partitions by when they were produced. */
  readonly timestamp?: number;
}

/** Space kept free in a record for the key, headers and Avro framing around inline content. */
export const RECORD_OVERHEAD_BYTES = 16 * 1024;

/** Largest content sent inline, and the chunk size, for a given max.message.bytes. */
export function inlineLimit(maxMessageBytes: number): number {
  return maxMessageBytes - RECORD_OVERHEAD_BYTES;
}

function baseHeaders(kind: RecordKind, table: string, tenant: string, codec: EventCodec): Record<string, string> {
  return { [HEADERS.kind]: kind, [HEADERS.table]: table, [HEADERS.tenant]: tenant, [HEADERS.encoding]: codec.encoding };
}

export async function changeRecord(codec: EventCodec, change: BlobChange): Promise<OutRecord> {
  return { key: change.key, value: await codec.encode('BlobChange', changeToAvro(change)), headers: changeHeaders(change, codec.encoding) };
}

/**
 * The headers of a change, in the order the spreads of baseHeaders and modifiedOnHeaders give them, built by plain
 * assignments: one change record per source row, and the spreads of small computed-key objects were most of
 * changeRecord's time. Pure.
 */
export function changeHeaders(change: BlobChange, encoding: EventCodec['encoding']): Record<string, string> {
  const headers: Record<string, string> = {};
  headers[HEADERS.kind] = 'change';
  headers[HEADERS.table] = change.table;
  headers[HEADERS.tenant] = change.tenant;
  headers[HEADERS.encoding] = encoding;
  if (change.modifiedOn !== null) {
    headers[HEADERS.modifiedOn] = isoFromTicks(change.modifiedOn);
    headers[HEADERS.modifiedOnTicks] = change.modifiedOn.toString();
  }
  headers[HEADERS.observedTicks] = change.observed.toString();
  if (change.deletedBefore !== undefined) headers[HEADERS.deletedBeforeTicks] = change.deletedBefore.toString();
  headers[HEADERS.runId] = change.runId;
  return headers;
}

export function chunkKey(chunk: Pick<BlobChunk, 'key' | 'contentSha256' | 'index'>): string {
  return `${CHUNK_KEY_PREFIX}${chunk.key}/${chunk.contentSha256.toString('hex')}/${chunk.index}`;
}

export async function chunkRecord(codec: EventCodec, chunk: BlobChunk, tenant: string, partition: number): Promise<OutRecord> {
  return {
    key: chunkKey(chunk),
    value: await codec.encode('BlobChunk', chunkToAvro(chunk)),
    headers: baseHeaders('chunk', chunk.table, tenant, codec),
    partition,
  };
}

export function chunkTombstone(chunk: Pick<BlobChunk, 'key' | 'contentSha256' | 'index' | 'table'>, tenant: string, partition: number): OutRecord {
  return { key: chunkKey(chunk), value: null, headers: { [HEADERS.kind]: 'chunk', [HEADERS.table]: chunk.table, [HEADERS.tenant]: tenant }, partition };
}

export async function markerRecord(codec: EventCodec, marker: WatermarkMarker): Promise<OutRecord> {
  return {
    key: `${MARKER_KEY_PREFIX}${marker.scope}/${marker.partition}`,
    value: await codec.encode('WatermarkMarker', markerToAvro(marker)),
    headers: { ...baseHeaders('marker', marker.table, marker.tenant, codec), [HEADERS.runId]: marker.runId },
    partition: marker.partition,
  };
}

/** ModifiedOn headers, left out when the source row has no ModifiedOn. */
function modifiedOnHeaders(modifiedOn: bigint | null): Record<string, string> {
  if (modifiedOn === null) return {};
  return { [HEADERS.modifiedOn]: isoFromTicks(modifiedOn), [HEADERS.modifiedOnTicks]: modifiedOn.toString() };
}

export function tombstoneRecord(deletion: Deletion): OutRecord {
  return {
    key: deletion.key,
    value: null,
    headers: {
      [HEADERS.kind]: 'delete',
      [HEADERS.table]: deletion.table,
      [HEADERS.tenant]: deletion.tenant,
      ...modifiedOnHeaders(deletion.modifiedOn),
      [HEADERS.observedTicks]: deletion.observed.toString(),
      [HEADERS.runId]: deletion.runId,
    },
  };
}

/** Decodes one record of a table topic; throws DECODE_FAILED (the record is poison) when it cannot. */
export async function decodeRecord(codec: EventCodec, rec: InRecord): Promise<TopicEvent | { type: 'chunk-tombstone' }> {
  const keyText = rec.key?.toString('utf8') ?? '';
  if (rec.value === null) return decodeNullValue(rec, keyText);
  const decoded = await codec.decode(rec.value);
  switch (decoded.schema) {
    case 'BlobChange': {
      const change = changeFromAvro(decoded.record as AvroBlobChange);
      if (change.key !== keyText) throw new HighwaterError('DECODE_FAILED', `record key ${JSON.stringify(keyText)} differs from the event key ${JSON.stringify(change.key)}`);
      const reason = invalidChangeReason(change);
      if (reason) throw new HighwaterError('DECODE_FAILED', `invalid change event: ${reason}`);
      return { type: 'change', change: withDeletedBefore(change, rec) };
    }
    case 'BlobChunk':
      return { type: 'chunk', chunk: chunkFromAvro(decoded.record as AvroBlobChunk) };
    case 'WatermarkMarker':
      return { type: 'marker', marker: markerFromAvro(decoded.record as AvroMarker) };
    default:
      throw new HighwaterError('DECODE_FAILED', `schema ${decoded.schema} does not belong on a table topic`);
  }
}

const TICKS_TEXT = /^-?\d{1,19}$/;

/** The delete a change says came just before it (contract v2.1); it must be older than the change itself. */
function withDeletedBefore(change: BlobChange, rec: InRecord): BlobChange {
  const deletedBefore = ticksHeader(rec, HEADERS.deletedBeforeTicks);
  if (deletedBefore === null) return change;
  if (deletedBefore >= change.observed) {
    throw new HighwaterError('DECODE_FAILED', `${HEADERS.deletedBeforeTicks} ${deletedBefore} is not before the change's observation ${change.observed} (key ${JSON.stringify(change.key)})`);
  }
  return { ...change, deletedBefore };
}

/**
 * The events one decoded record stands for: a change that carries the delete observed just before it (contract v2.1)
 * is that delete, then the change — exactly what the poller published, even after compaction removed the tombstone.
 */
export function expandDeletedBefore(change: BlobChange): TopicEvent[] {
  if (change.deletedBefore === undefined) return [{ type: 'change', change }];
  const deletion: Deletion = { table: change.table, tenant: change.tenant, key: change.key, modifiedOn: null, observed: change.deletedBefore, runId: change.runId };
  return [{ type: 'delete', deletion }, { type: 'change', change }];
}

/**
 * A tombstone's version is in its headers: `hw-observed-ticks` (contract v2) or, in a v1 tombstone, only
 * `hw-modified-on-ticks`, which then stands for the observation too.
 */
function decodeNullValue(rec: InRecord, keyText: string): TopicEvent | { type: 'chunk-tombstone' } {
  if (keyText.startsWith(CHUNK_KEY_PREFIX) || keyText.startsWith(MARKER_KEY_PREFIX)) return { type: 'chunk-tombstone' };
  const modifiedOn = ticksHeader(rec, HEADERS.modifiedOnTicks);
  const observed = ticksHeader(rec, HEADERS.observedTicks) ?? modifiedOn;
  const table = rec.headers[HEADERS.table];
  if (!keyText || !table || observed === null) {
    throw new HighwaterError('DECODE_FAILED', `tombstone without ${HEADERS.table} and ${HEADERS.observedTicks} (or ${HEADERS.modifiedOnTicks}) headers (key ${JSON.stringify(keyText)})`);
  }
  return {
    type: 'delete',
    deletion: { table, tenant: rec.headers[HEADERS.tenant] ?? '', key: keyText, modifiedOn, observed, runId: rec.headers[HEADERS.runId] ?? '' },
  };
}

function ticksHeader(rec: InRecord, name: string): bigint | null {
  const text = rec.headers[name];
  if (text === undefined) return null;
  if (!TICKS_TEXT.test(text)) throw new HighwaterError('DECODE_FAILED', `header ${name} is not a tick count: ${JSON.stringify(text.slice(0, 40))}`);
  return BigInt(text);
}
