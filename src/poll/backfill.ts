import type { SourceRow, Ticks, Window } from '../contract.js';
import { tenantOf, topicFor } from '../config/load.js';
import type { Config, TableConfig } from '../config/schema.js';
import type { ControlStore, PublishedEntry } from '../control/store.js';
import type { EventCodec } from '../events/codec.js';
import { backfillFromAvro, type BackfillRequest } from '../events/mapping.js';
import { inlineLimit, tombstoneRecord, type InRecord } from '../events/records.js';
import { coerceError, HighwaterError, isRetriable } from '../errors.js';
import type { ManualConsumer, PartitionBatch } from '../kafka/consumer.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from '../retry.js';
import type { SourceConnector } from './source/connector.js';
import { scopeOf } from './poller.js';
import { movedBackwards, withDeleteNamed, type ObservedRow } from './build.js';
import { monotonicMs, RecentIds } from './elapsed.js';
import { RowPublisher, type PublishOutcome, type PublishedRow } from './publish-rows.js';
import { hierarchyDepth } from './window.js';

/**
 * The poller side of missing parents. Consumers ask, on `highwater.backfill-requests`, for rows their children
 * wait for; this service reads each requested row from the source (by path locator and/or key), publishes its
 * current version to the table topic like a poll would (run id `backfill-<run uuid>`, window `[ModifiedOn,
 * ModifiedOn]`), registers it, and records a `backfill` run with one `backfill` batch in the control store.
 *
 * A request is only a request: one that cannot be decoded, names a table this poller does not publish, or asks
 * for a row the source no longer has is logged and skipped — the child still has its retries and, after the last,
 * the dead-letter topic. A request that fails for a transient reason (source, control store or Kafka unavailable
 * after retries) is not skipped: the partition pauses and the request is served again later. Kafka offsets are
 * committed after the rows are acknowledged, so a crash repeats a back-fill, never loses one.
 */

export interface BackfillDeps {
  readonly config: Config;
  readonly store: ControlStore;
  readonly publisher: Publisher;
  readonly codec: EventCodec;
  readonly logger: Logger;
  /** The connector of a table's source; the caller owns its lifecycle. */
  readonly sourceFor: (table: TableConfig) => Promise<SourceConnector>;
  readonly retry?: RetryPolicy;
  /** How long a partition pauses after a request failed for a transient reason. Default 30 s. */
  readonly pauseAfterFailureMs?: number;
  /** Identical requests within this time are served once (children of one parent ask together). Default 10 s. */
  readonly dedupeWindowMs?: number;
  /** A monotonic clock in milliseconds (default performance.now): the dedupe window is elapsed time. */
  readonly now?: () => number;
}

export type BackfillOutcome =
  | { readonly kind: 'published'; readonly runId: string; readonly rows: number; readonly failed: number }
  | { readonly kind: 'not-found'; readonly runId: string }
  | { readonly kind: 'skipped'; readonly reason: string };

/** Where a table's back-filled rows go, and the publisher that reads their content from its source. */
interface TableTarget {
  readonly table: string;
  readonly topic: string;
  readonly tenant: string;
  readonly scope: string;
  readonly rows: RowPublisher;
}

/** A request that failed for a reason that may pass: do not commit it, serve it again later. */
export class ServeLater extends Error {
  override readonly name = 'ServeLater';
}

export class BackfillService {
  private readonly log: Logger;
  private readonly recent: RecentIds;
  private readonly pausedPartitions = new Set<number>();
  private consumer: ManualConsumer | undefined;

  constructor(private readonly deps: BackfillDeps) {
    this.log = deps.logger;
    this.recent = new RecentIds(deps.dedupeWindowMs ?? 10_000, deps.now ?? monotonicMs);
  }

  attach(consumer: ManualConsumer): void {
    this.consumer = consumer;
  }

  async handle(batch: PartitionBatch): Promise<void> {
    if (this.pausedPartitions.has(batch.partition)) return;
    for (const record of batch.records) {
      if (!batch.isCurrent()) return;
      try {
        await this.serveRecord(record);
      } catch (err) {
        if (!(err instanceof ServeLater)) throw err;
        this.pauseAt(batch, record.offset);
        return;
      }
      batch.resolve(record.offset);
      if (batch.isCurrent()) await this.consumer!.commit(batch.topic, batch.partition, record.offset + 1n);
      await batch.heartbeat();
    }
  }

  /** Decodes and serves one record of the request topic; never throws for a bad request, only ServeLater. */
  async serveRecord(record: InRecord): Promise<BackfillOutcome> {
    const decoded = await this.decode(record);
    if (!decoded.ok) return this.skip(decoded.reason, { offset: record.offset });
    return this.serve(decoded.request);
  }

  /** Serves one decoded request. Throws ServeLater when a transient failure outlasted the retries. */
  async serve(request: BackfillRequest): Promise<BackfillOutcome> {
    const table = this.deps.config.tables.find((t) => t.name === request.table && tenantOf(this.deps.config, t) === request.tenant);
    // Several pollers (tenants) may share the request topic: a request for a table that is not ours is normal.
    if (!table) return this.skip(`no table ${JSON.stringify(request.table)} of tenant ${JSON.stringify(request.tenant)} is published by this poller`, {}, 'debug');
    if (!table.enabled) return this.skip(`table ${table.name} is disabled`, {}, 'info');
    if (request.parentPathLocator === null && request.keys.length === 0) return this.skip('the request names neither a path locator nor keys', { table: table.name });
    const id = requestId(request);
    if (this.recent.has(id)) return this.skip('the same request was served moments ago', { table: table.name, parent: request.parentPathLocator }, 'debug');
    try {
      const outcome = await this.serveTable(table, request);
      this.recent.add(id);
      return outcome;
    } catch (err) {
      if (err instanceof ServeLater) throw err;
      return this.skip(`the back-fill failed: ${coerceError(err).message}`, { table: table.name, parent: request.parentPathLocator });
    }
  }

  private async decode(record: InRecord): Promise<{ ok: true; request: BackfillRequest } | { ok: false; reason: string }> {
    if (record.value === null) return { ok: false, reason: 'empty request' };
    try {
      const decoded = await this.deps.codec.decode(record.value);
      if (decoded.schema !== 'BackfillRequest') return { ok: false, reason: `a ${decoded.schema} record does not belong on the request topic` };
      return { ok: true, request: backfillFromAvro(decoded.record as Parameters<typeof backfillFromAvro>[0]) };
    } catch (err) {
      return { ok: false, reason: `undecodable request: ${coerceError(err).message}` };
    }
  }

  private skip(reason: string, fields: Record<string, unknown>, level: 'debug' | 'info' | 'warn' = 'warn'): BackfillOutcome {
    this.log[level]({ ...fields, reason }, 'back-fill request skipped');
    return { kind: 'skipped', reason };
  }

  private async serveTable(table: TableConfig, request: BackfillRequest): Promise<BackfillOutcome> {
    const log = this.log.child({ table: table.name, parent: request.parentPathLocator, keys: request.keys });
    const runId = await this.transient('recording the back-fill run', () => this.deps.store.createRun({
      kind: 'backfill', requestedBy: request.requestedBy,
      options: { tables: [table.name], tenant: request.tenant, parentPathLocator: request.parentPathLocator, keys: [...request.keys], reason: request.reason },
    }));
    try {
      const rows = await this.readRows(table, request);
      if (rows.length === 0) {
        const reason = `${describe(request)} not found at the source (deleted, or excluded); nothing to back-fill`;
        log.warn({ runId }, reason);
        await this.deps.store.finishRun(runId, 'failed', reason);
        return { kind: 'not-found', runId };
      }
      const outcome = await this.publish(table, runId, rows);
      log.info({ runId, published: outcome.published.length, failed: outcome.failed.length }, 'back-filled rows for a consumer');
      return { kind: 'published', runId, rows: outcome.published.length, failed: outcome.failed.length };
    } catch (err) {
      const error = coerceError(err);
      log.error({ runId, err: error }, 'back-fill failed');
      await this.deps.store.finishRun(runId, 'failed', error.message).catch((e: unknown) => log.warn({ err: e }, 'could not record the failed back-fill'));
      throw err;
    }
  }

  /**
   * The requested rows (by path locator and by key), without excluded keys (compared case-insensitively, as the
   * poller does), parents before children. Each read is an observation, serialised with the poller's.
   */
  private async readRows(table: TableConfig, request: BackfillRequest): Promise<ObservedRow[]> {
    const source = await this.deps.sourceFor(table);
    const observe = (read: () => Promise<SourceRow[]>) => this.deps.store.observe(table.name, read);
    const byPath = request.parentPathLocator === null ? [] : observed(await this.transient('reading the parent from the source', () => observe(() => source.readByPathLocators([request.parentPathLocator!]))));
    const byKey = request.keys.length === 0 ? [] : observed(await this.transient('reading rows by key from the source', () => observe(() => source.readByKeys(request.keys))));
    const excluded = new Set([...this.deps.config.excludedKeys, ...table.excludedKeys].map((k) => k.toLowerCase()));
    const unique = new Map<string, ObservedRow>();
    for (const r of [...byPath, ...byKey]) if (!excluded.has(r.row.key.toLowerCase())) unique.set(r.row.key, r);
    return [...unique.values()].sort((a, b) => hierarchyDepth(a.row.pathLocator) - hierarchyDepth(b.row.pathLocator));
  }

  /** Publishes the rows, registers them, and records the run's table and its one `backfill` batch. */
  private async publish(table: TableConfig, runId: string, observed: readonly ObservedRow[]): Promise<PublishOutcome> {
    const startedAt = new Date();
    const t = await this.targetOf(table);
    const window = spanOf(observed);
    await this.transient('recording the back-fill table', () => this.deps.store.startTable(runId, { table: table.name, scope: t.scope, tenant: t.tenant, window, endClampedBy: null, oldestTxVisible: null }));
    const registered = await this.transient('reading the registry', () => this.deps.store.lookupPublished(table.name, observed.map((r) => r.row.key)));
    // As a poll does: a row back after a delete names it, and a row whose ModifiedOn moved backwards is deleted first.
    const rows = observed.map((r) => withDeleteNamed(r, registered.get(r.row.key)));
    await this.deleteMovedBackwards(t, runId, rows.filter((r) => movedBackwards(r.row, registered.get(r.row.key))), registered);
    await this.transient('registering keys before the send', () => this.deps.store.registerPending(table.name, runId, rows.map((r) => ({ key: r.row.key, modifiedOn: r.row.modifiedOn, pathLocator: r.row.pathLocator }))));
    const outcome: PublishOutcome = { published: [], failed: [] };
    for (const row of rows) {
      const ctx = { table: table.name, tenant: t.tenant, runId: `backfill-${runId}`, window: spanOf([row]) };
      const one = await this.transient('publishing a back-filled row', () => t.rows.publish({ topic: t.topic, rows: [row], ctx }));
      outcome.published.push(...one.published);
      outcome.failed.push(...one.failed);
    }
    await this.transient('registering back-filled rows', () => this.deps.store.recordPublished(table.name, runId, outcome.published));
    await this.retireSupersededChunks(t, outcome.published, registered);
    await this.record(table.name, t.scope, runId, rows.at(-1)!.row, outcome, startedAt);
    return outcome;
  }

  /** Tombstones observed just before the rows (their `deletedBefore`), recorded in the deletion log. */
  private async deleteMovedBackwards(t: TableTarget, runId: string, rows: readonly ObservedRow[], registered: ReadonlyMap<string, PublishedEntry>): Promise<void> {
    if (rows.length === 0) return;
    this.log.warn({ table: t.table, keys: rows.map((r) => r.row.key).slice(0, 20) }, 'ModifiedOn moved backwards at the source (a restore?); the back-fill deletes the key in targets and publishes it again');
    const deletions = rows.map((r) => ({ table: t.table, tenant: t.tenant, key: r.row.key, modifiedOn: registered.get(r.row.key)?.modifiedOn ?? null, observed: r.deletedBefore!, runId: `backfill-${runId}` }));
    await this.transient('publishing tombstones', () => this.deps.publisher.send(t.topic, deletions.map(tombstoneRecord)));
    await this.transient('recording deletions', () => this.deps.store.recordDeletions(t.table, runId, deletions.map((d) => ({ key: d.key, modifiedOn: d.modifiedOn, observed: d.observed }))));
  }

  private async targetOf(table: TableConfig): Promise<TableTarget> {
    const cfg = this.deps.config;
    const settings = { inlineLimit: inlineLimit(cfg.kafka.maxMessageBytes), maxBlobBytes: cfg.poll.maxBlobBytes };
    const rows = new RowPublisher(this.deps.publisher, this.deps.codec, await this.deps.sourceFor(table), settings);
    return { table: table.name, topic: topicFor(cfg, table), tenant: tenantOf(cfg, table), scope: scopeOf(table), rows };
  }

  /** As a poll does: chunks of the version the registry held become tombstones when a new content replaces it. */
  private async retireSupersededChunks(t: TableTarget, published: readonly PublishedRow[], registered: ReadonlyMap<string, PublishedEntry>): Promise<void> {
    for (const row of published) {
      const old = registered.get(row.key);
      if (!old?.chunkCount || !old.contentSha256 || (row.contentSha256 && old.contentSha256.equals(row.contentSha256))) continue;
      const [sha, count] = [old.contentSha256, old.chunkCount];
      await this.transient('retiring superseded chunks', () => t.rows.retireChunks(t.topic, t.table, t.tenant, row.key, sha, count));
    }
  }

  private async record(table: string, scope: string, runId: string, last: SourceRow, outcome: PublishOutcome, startedAt: Date): Promise<void> {
    for (const f of outcome.failed) await this.deps.store.recordRowFailure(runId, table, f.key, f.modifiedOn, f.reason);
    await this.transient('recording the back-fill batch', () => this.deps.store.recordBatch({
      runId, table, scope, step: 'backfill', batchNo: 1, rows: outcome.published.length, bytes: outcome.published.reduce((n, r) => n + r.bytes, 0),
      skipped: 0, failed: outcome.failed.length, lastPosition: last.modifiedOn === null ? null : { modifiedOn: last.modifiedOn, key: last.key }, startedAt, status: 'completed',
    }));
    const error = outcome.failed.length > 0 ? outcome.failed.map((f) => `${f.key}: ${f.reason}`).join('; ') : null;
    const status = error === null ? 'completed' : 'failed';
    await this.deps.store.finishTable(runId, table, scope, { status, error });
    await this.deps.store.finishRun(runId, status, error);
  }

  /** Retries what may pass; when it still fails, turns it into ServeLater so the request is not committed. */
  private async transient<T>(what: string, task: () => Promise<T>): Promise<T> {
    try {
      return await withRetry(task, this.deps.retry ?? DEFAULT_RETRY, {
        onRetry: ({ attempt, delayMs, error }) => this.log.warn({ attempt, delayMs, err: error }, `${what} failed; retrying`),
      });
    } catch (err) {
      if (isRetriable(err)) throw new ServeLater(`${what}: ${coerceError(err).message}`, { cause: err });
      throw err instanceof HighwaterError ? err : new HighwaterError('INTERNAL', `${what}: ${coerceError(err).message}`, { cause: err });
    }
  }

  /** Rewinds to the request that could not be served and pauses its partition for a while. */
  private pauseAt(batch: PartitionBatch, offset: bigint): void {
    const pauseMs = this.deps.pauseAfterFailureMs ?? 30_000;
    this.log.warn({ partition: batch.partition, offset, pauseMs }, 'a back-fill request failed for a transient reason; it is served again after a pause');
    this.consumer!.seek(batch.topic, batch.partition, offset);
    const resume = batch.pause();
    this.pausedPartitions.add(batch.partition);
    setTimeout(() => {
      this.pausedPartitions.delete(batch.partition);
      resume();
    }, pauseMs).unref();
  }
}

function requestId(r: BackfillRequest): string {
  return JSON.stringify([r.table, r.tenant, r.parentPathLocator, [...r.keys].sort()]);
}

function describe(r: BackfillRequest): string {
  const parts = [r.parentPathLocator === null ? null : `parent ${r.parentPathLocator}`, r.keys.length === 0 ? null : `keys ${r.keys.join(', ')}`];
  return parts.filter((p) => p !== null).join(' and ');
}

function observed(read: { value: SourceRow[]; observed: Ticks }): ObservedRow[] {
  return read.value.map((row) => ({ row, observed: read.observed }));
}

/**
 * The window a back-fill records: the span of its rows' ModifiedOn (the observation stands in for a NULL one).
 * Informational only: a back-fill advances no high-watermark.
 */
function spanOf(rows: readonly ObservedRow[]): Window {
  const times = rows.map((r) => r.row.modifiedOn ?? r.observed);
  return { start: times.reduce((a, b) => (b < a ? b : a)), end: times.reduce((a, b) => (b > a ? b : a)) };
}
