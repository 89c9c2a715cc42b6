import type { BlobChange, BlobChunk, ContentRef, FileAttributes, WatermarkMarker } from '../contract.js';
import { HighwaterError } from '../errors.js';
import { isoFromTicks } from '../time/ticks.js';

/** Pure conversions between the TypeScript event types and the Avro records of schema/avro. */

type Nullable<T> = T | null;

interface AvroAttributes {
  creation_time_ticks: Nullable<bigint>;
  last_write_time_ticks: Nullable<bigint>;
  last_access_time_ticks: Nullable<bigint>;
  is_readonly: Nullable<boolean>;
  is_hidden: Nullable<boolean>;
  is_system: Nullable<boolean>;
  is_archive: Nullable<boolean>;
}

export interface AvroBlobChange {
  table: string;
  tenant: string;
  key: string;
  name: Nullable<string>;
  path_locator: Nullable<string>;
  parent_path_locator: Nullable<string>;
  is_directory: boolean;
  size: Nullable<bigint>;
  attributes: AvroAttributes;
  modified_on_ticks: Nullable<bigint>;
  modified_on: Nullable<string>;
  business_unit: Nullable<string>;
  content: null | Buffer | { chunk_count: number; chunk_size: number; total_size: bigint };
  content_sha256: Nullable<Buffer>;
  run_id: string;
  window_start_ticks: bigint;
  window_end_ticks: bigint;
  /** Absent (null) in contract v1 events: their observation is their ModifiedOn. */
  observed_ticks: Nullable<bigint>;
}

export function changeToAvro(c: BlobChange): AvroBlobChange {
  return {
    table: c.table,
    tenant: c.tenant,
    key: c.key,
    name: c.name,
    path_locator: c.pathLocator,
    parent_path_locator: c.parentPathLocator,
    is_directory: c.isDirectory,
    size: c.size === null ? null : BigInt(c.size),
    attributes: attributesToAvro(c.attributes),
    modified_on_ticks: c.modifiedOn,
    modified_on: c.modifiedOn === null ? null : isoFromTicks(c.modifiedOn),
    business_unit: c.businessUnit,
    content: contentToAvro(c.content),
    content_sha256: c.contentSha256,
    run_id: c.runId,
    window_start_ticks: c.window.start,
    window_end_ticks: c.window.end,
    observed_ticks: c.observed,
  };
}

export function changeFromAvro(a: AvroBlobChange): BlobChange {
  return {
    table: a.table,
    tenant: a.tenant,
    key: a.key,
    name: a.name,
    pathLocator: a.path_locator,
    parentPathLocator: a.parent_path_locator,
    isDirectory: a.is_directory,
    size: a.size === null ? null : Number(a.size),
    attributes: attributesFromAvro(a.attributes),
    modifiedOn: a.modified_on_ticks,
    observed: observedOf(a),
    businessUnit: a.business_unit,
    content: contentFromAvro(a.content),
    contentSha256: a.content_sha256,
    runId: a.run_id,
    window: { start: a.window_start_ticks, end: a.window_end_ticks },
  };
}

/** A v1 event has no observation stamp: its ModifiedOn stands in for it (the order v1 consumers applied). */
function observedOf(a: AvroBlobChange): bigint {
  const observed = a.observed_ticks ?? a.modified_on_ticks;
  if (observed === null) throw new HighwaterError('DECODE_FAILED', 'change event has neither observed_ticks nor modified_on_ticks');
  return observed;
}

function contentToAvro(c: ContentRef): AvroBlobChange['content'] {
  switch (c.kind) {
    case 'none':
      return null;
    case 'inline':
      return c.bytes;
    case 'chunked':
      return { chunk_count: c.chunkCount, chunk_size: c.chunkSize, total_size: BigInt(c.totalSize) };
  }
}

function contentFromAvro(c: AvroBlobChange['content']): ContentRef {
  if (c === null) return { kind: 'none' };
  if (Buffer.isBuffer(c)) return { kind: 'inline', bytes: c };
  return { kind: 'chunked', chunkCount: c.chunk_count, chunkSize: c.chunk_size, totalSize: Number(c.total_size) };
}

function attributesToAvro(a: FileAttributes): AvroAttributes {
  return {
    creation_time_ticks: a.creationTime ?? null,
    last_write_time_ticks: a.lastWriteTime ?? null,
    last_access_time_ticks: a.lastAccessTime ?? null,
    is_readonly: a.isReadonly ?? null,
    is_hidden: a.isHidden ?? null,
    is_system: a.isSystem ?? null,
    is_archive: a.isArchive ?? null,
  };
}

function attributesFromAvro(a: AvroAttributes): FileAttributes {
  return {
    creationTime: a.creation_time_ticks,
    lastWriteTime: a.last_write_time_ticks,
    lastAccessTime: a.last_access_time_ticks,
    isReadonly: a.is_readonly,
    isHidden: a.is_hidden,
    isSystem: a.is_system,
    isArchive: a.is_archive,
  };
}

export interface AvroBlobChunk {
  table: string;
  key: string;
  content_sha256: Buffer;
  index: number;
  count: number;
  bytes: Buffer;
}

export function chunkToAvro(c: BlobChunk): AvroBlobChunk {
  return { table: c.table, key: c.key, content_sha256: c.contentSha256, index: c.index, count: c.count, bytes: c.bytes };
}

export function chunkFromAvro(a: AvroBlobChunk): BlobChunk {
  return { table: a.table, key: a.key, contentSha256: a.content_sha256, index: a.index, count: a.count, bytes: a.bytes };
}

export interface AvroMarker {
  table: string;
  tenant: string;
  scope: string;
  watermark_ticks: bigint;
  watermark: string;
  run_id: string;
  partition: number;
}

export function markerToAvro(m: WatermarkMarker): AvroMarker {
  return { table: m.table, tenant: m.tenant, scope: m.scope, watermark_ticks: m.watermark, watermark: isoFromTicks(m.watermark), run_id: m.runId, partition: m.partition };
}

export function markerFromAvro(a: AvroMarker): WatermarkMarker {
  return { table: a.table, tenant: a.tenant, scope: a.scope, watermark: a.watermark_ticks, runId: a.run_id, partition: a.partition };
}

export interface BackfillRequest {
  readonly table: string;
  readonly tenant: string;
  readonly parentPathLocator: string | null;
  readonly keys: readonly string[];
  readonly requestedBy: string;
  readonly reason: string;
}

export function backfillToAvro(r: BackfillRequest): Record<string, unknown> {
  return { table: r.table, tenant: r.tenant, parent_path_locator: r.parentPathLocator, keys: [...r.keys], requested_by: r.requestedBy, reason: r.reason };
}

export function backfillFromAvro(a: { table: string; tenant: string; parent_path_locator: string | null; keys: string[]; requested_by: string; reason: string }): BackfillRequest {
  return { table: a.table, tenant: a.tenant, parentPathLocator: a.parent_path_locator, keys: a.keys, requestedBy: a.requested_by, reason: a.reason };
}
