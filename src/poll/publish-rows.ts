import { createHash } from 'node:crypto';
import type { BlobChange, SourceRow, Ticks } from '../contract.js';
import type { EventCodec } from '../events/codec.js';
import { changeRecord, chunkRecord, chunkTombstone, type OutRecord } from '../events/records.js';
import type { PublishedRow as RegisteredRow } from '../control/sql.js';
import type { Publisher } from '../kafka/publisher.js';
import type { SourceConnector } from './source/connector.js';
import { StageTimes } from './stages.js';
import { changeFromRow, planContent, rowDigest, sha256, type EventContext, type ObservedRow } from './build.js';

/**
 * Publishes the rows of one page, in order: large contents as chunks (in their row's partition, so the chunks precede
 * the row's event; the last chunk goes out with the row's change), the other change events per group of about
 * FLUSH_BYTES, and resolves when Kafka acknowledged all of them.
 * Memory stays bounded by one slice per large blob: content is read from the source slice by slice.
 */

export interface RowsToPublish {
  readonly topic: string;
  readonly rows: readonly ObservedRow[];
  readonly ctx: EventContext;
}

export interface PublishSettings {
  readonly inlineLimit: number;
  readonly maxBlobBytes: number;
}

/** What the registry records of a published row (digest: rowDigest, compared with the next observation), and its size. */
export interface PublishedRow extends RegisteredRow {
  readonly bytes: number;
}

export interface RowFailure {
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly reason: string;
}

export interface PublishOutcome {
  readonly published: PublishedRow[];
  readonly failed: RowFailure[];
}

export class RowPublisher {
  constructor(
    private readonly publisher: Publisher,
    private readonly codec: EventCodec,
    private readonly source: SourceConnector,
    private readonly settings: PublishSettings,
    private readonly stages: StageTimes = new StageTimes(false),
  ) {}

  /**
   * Publishes the rows in order, a group of about FLUSH_BYTES of content at a time: the contents a group needs that
   * the page did not carry are read in one round trip, its records are built and sent, and the next group starts.
   * Memory stays near one group whatever the page size; every record is acknowledged when this resolves.
   */
  async publish(batch: RowsToPublish): Promise<PublishOutcome> {
    const outcome: PublishOutcome = { published: [], failed: [] };
    for (const group of groupsOfBytes(batch.rows, FLUSH_BYTES)) {
      const contents = await this.fetchInlineContents(group);
      let records: OutRecord[] = [];
      for (const row of group) {
        const result = await this.prepare(batch.topic, row, batch.ctx, contents);
        if ('reason' in result) {
          outcome.failed.push(result);
          continue;
        }
        records.push(...(result.lastChunk ? [result.lastChunk] : []), await this.stages.time('send: encode', () => changeRecord(this.codec, result.change)));
        outcome.published.push(result.row);
        // A chunked row goes out at once, its last chunk and its change in one send (after the rows before it, in
        // order): a consumer then finds the row right behind its chunks, usually in the same fetch, and completes
        // its content in memory instead of staging the chunks in the target until a group's changes follow.
        if (result.lastChunk) {
          await this.stages.time('send: kafka', () => this.publisher.send(batch.topic, records));
          records = [];
        }
      }
      if (records.length > 0) await this.stages.time('send: kafka', () => this.publisher.send(batch.topic, records));
    }
    return outcome;
  }

  /** Content small enough for one record that the page query left out (above inlineContentMaxBytes), in one read. */
  private async fetchInlineContents(rows: readonly ObservedRow[]): Promise<ReadonlyMap<string, Buffer | null>> {
    const keys = rows.filter((r) => planContent(r.row, this.settings.inlineLimit, this.settings.maxBlobBytes) === 'fetch-inline').map((r) => r.row.key);
    return keys.length === 0 ? new Map() : this.source.readContents(keys);
  }

  /** Tombstones for the chunks of a superseded or deleted version, so compaction can drop them. */
  async retireChunks(topic: string, table: string, tenant: string, key: string, contentSha256: Buffer, chunkCount: number): Promise<void> {
    const partition = await this.publisher.partitionOfKey(topic, key);
    const records = Array.from({ length: chunkCount }, (_, index) => chunkTombstone({ table, key, contentSha256, index }, tenant, partition));
    await this.publisher.send(topic, records);
  }

  private async prepare(topic: string, observed: ObservedRow, ctx: EventContext, contents: ReadonlyMap<string, Buffer | null>): Promise<Prepared | RowFailure> {
    const row = observed.row;
    const plan = planContent(row, this.settings.inlineLimit, this.settings.maxBlobBytes);
    switch (plan) {
      case 'none':
        return this.ready(observed, ctx, { kind: 'none' }, null, null);
      case 'inline':
        return this.ready(observed, ctx, { kind: 'inline', bytes: row.content! }, sha256(row.content!), null);
      case 'fetch-inline': {
        const bytes = contents.get(row.key) ?? null;
        if (bytes === null || bytes.length !== row.contentLength) return vanished(row);
        return this.ready(observed, ctx, { kind: 'inline', bytes }, sha256(bytes), null);
      }
      case 'chunked':
        return this.publishChunks(topic, observed, ctx);
      case 'too-large':
        return { key: row.key, modifiedOn: row.modifiedOn, reason: `content of ${row.contentLength} bytes exceeds poll.maxBlobBytes (${this.settings.maxBlobBytes})` };
    }
  }

  private ready(observed: ObservedRow, ctx: EventContext, content: BlobChange['content'], hash: Buffer | null, chunkCount: number | null): { change: BlobChange; row: PublishedRow } {
    const row = observed.row;
    const change = changeFromRow(observed, ctx, content, hash);
    const bytes = content.kind === 'inline' ? content.bytes.length : (row.contentLength ?? 0);
    return {
      change,
      row: { key: row.key, modifiedOn: row.modifiedOn, observed: observed.observed, digest: rowDigest(row, hash), contentSha256: hash, pathLocator: row.pathLocator, chunkCount, bytes },
    };
  }

  /**
   * Two passes: the source hashes the content (chunk keys are content-addressed; only the digest crosses the wire,
   * where reading it slice by slice to hash it here moved every byte twice), then the chunks are read slice by slice
   * and sent, hashed again on the way. If the content changed in between, the row has a newer ModifiedOn and a later
   * window publishes it, so this version is reported as failed rather than published half-old, half-new.
   */
  private async publishChunks(topic: string, observed: ObservedRow, ctx: EventContext): Promise<Prepared | RowFailure> {
    const row = observed.row;
    const size = row.contentLength!;
    const chunkSize = this.settings.inlineLimit;
    const count = Math.ceil(size / chunkSize);
    const first = (await this.source.contentHashes([row.key])).get(row.key) ?? null;
    if (first === null) return vanished(row);
    const partition = await this.publisher.partitionOfKey(topic, row.key);
    const second = createHash('sha256');
    let last: OutRecord | undefined;
    for (let index = 0; index < count; index++) {
      const bytes = await this.source.readContentSlice(row.key, index * chunkSize, chunkSize);
      if (bytes === null) return vanished(row);
      // A slice shorter than the page's length promised: the content was replaced by a shorter one since the page
      // was read, perhaps before it was hashed too, so the two hashes could agree on bytes that are not `size` long.
      if (bytes.length !== Math.min(chunkSize, size - index * chunkSize)) return changedWhileRead(row);
      second.update(bytes);
      const record = await chunkRecord(this.codec, { table: ctx.table, key: row.key, contentSha256: first, index, count, bytes }, ctx.tenant, partition);
      // The last chunk is sent by the caller, together with the row's change (publish).
      if (index < count - 1) await this.publisher.send(topic, [record]);
      else last = record;
    }
    if (!second.digest().equals(first)) return changedWhileRead(row);
    return { ...this.ready(observed, ctx, { kind: 'chunked', chunkCount: count, chunkSize, totalSize: size }, first, count), lastChunk: last! };
  }
}

/** A row ready to publish: its change, what the registry records, and for chunked content its last chunk, not sent yet. */
interface Prepared {
  readonly change: BlobChange;
  readonly row: PublishedRow;
  readonly lastChunk?: OutRecord;
}

/** Content sent per group of a page, about: the group ends after the row that reaches it. */
const FLUSH_BYTES = 16 * 1024 * 1024;

/** Consecutive groups whose content adds up to about `bytes` each (a row larger than that makes a group alone). Pure. */
export function groupsOfBytes<T extends { readonly row: SourceRow }>(rows: readonly T[], bytes: number): T[][] {
  const groups: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const r of rows) {
    current.push(r);
    size += r.row.contentLength ?? 0;
    if (size >= bytes) {
      groups.push(current);
      current = [];
      size = 0;
    }
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

function changedWhileRead(row: SourceRow): RowFailure {
  return { key: row.key, modifiedOn: row.modifiedOn, reason: 'content changed while it was being read; the newer version is published by a later window' };
}

function vanished(row: SourceRow): RowFailure {
  return { key: row.key, modifiedOn: row.modifiedOn, reason: 'row disappeared or changed while its content was read; a later window or the delete sweep handles it' };
}
