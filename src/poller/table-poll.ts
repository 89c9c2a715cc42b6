import type { Position, SourceRow, Step, Ticks, Window } from '../contract.js';
import type { ControlStore } from '../control/store.js';
import type { EventCodec } from '../events/codec.js';
import { markerRecord, tombstoneRecord } from '../events/records.js';
import { HighwaterError } from '../errors.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { withRetry, type RetryPolicy } from '../retry.js';
import type { SourceConnector } from '../source/connector.js';
import { isoFromTicks } from '../time/ticks.js';
import { isUnchanged, sha256 } from './build.js';
import type { PollerObserver } from './observer.js';
import { RowPublisher, type PublishSettings } from './publish-rows.js';
import { hierarchyDepth, planWindow } from './window.js';

/**
 * One table and scope inside a run: plan (or, on resume, reload) the window, run the steps page by page with a
 * checkpoint after every acknowledged batch, sweep for deletes, then advance the high-watermark and publish the
 * markers. The lease is renewed between batches; losing it stops the work before anything else is published.
 */

export interface TableJob {
  readonly runId: string;
  readonly table: string;
  readonly tenant: string;
  readonly scope: string;
  readonly businessUnit: string | null;
  readonly topic: string;
  readonly excludedKeys: readonly string[];
  readonly batchSize: number;
  readonly bufferTicks: Ticks;
  readonly baselineTicks: Ticks;
  readonly useOldestOpenTransaction: boolean;
  readonly deleteSweepKeys: number;
  /** Source keys checked per poll by the late-arrival sweep (0 turns it off). */
  readonly lateSweepKeys: number;
  readonly leaseSeconds: number;
  readonly owner: string;
}

export interface TablePollDeps {
  readonly store: ControlStore;
  readonly publisher: Publisher;
  readonly codec: EventCodec;
  readonly source: SourceConnector;
  readonly logger: Logger;
  readonly observer: PollerObserver;
  readonly publish: PublishSettings;
  readonly retry: RetryPolicy;
  readonly signal?: AbortSignal | undefined;
}

export interface TableOutcome {
  readonly window: Window;
  readonly published: number;
  readonly skipped: number;
  readonly failed: number;
  readonly tombstones: number;
  /** Rows found by the late-arrival sweep: committed later than the safety buffer covers, republished now. */
  readonly lateArrivals: number;
  readonly highWater: Ticks;
}

const PAGE_STEPS: readonly Step[] = ['roots', 'missing-parents', 'children'];
const MAX_HIERARCHY_DEPTH = 64;

function parentsNotIn(rows: readonly SourceRow[], known: ReadonlySet<string | null>): string[] {
  return [...new Set(rows.map((r) => r.parentPathLocator).filter((p): p is string => p !== null && !known.has(p)))];
}

function isNewerThanRegistered(modifiedOn: Ticks, registered: { modifiedOn: Ticks } | undefined): boolean {
  return registered === undefined || registered.modifiedOn < modifiedOn;
}

function byDepth(rows: SourceRow[]): SourceRow[] {
  return rows.sort((a, b) => hierarchyDepth(a.pathLocator) - hierarchyDepth(b.pathLocator));
}
const STEP_ORDER: readonly string[] = [...PAGE_STEPS, 'deletes', 'late-arrivals'];

export class TablePoll {
  private readonly rows: RowPublisher;
  private readonly log: Logger;
  private lastRenewal = Date.now();
  private counts = { published: 0, skipped: 0, failed: 0, tombstones: 0, lateArrivals: 0 };

  constructor(private readonly job: TableJob, private readonly deps: TablePollDeps) {
    this.rows = new RowPublisher(deps.publisher, deps.codec, deps.source, deps.publish);
    this.log = deps.logger.child({ table: job.table, scope: job.scope, runId: job.runId });
  }

  async run(resume: boolean): Promise<TableOutcome> {
    const lease = await this.deps.store.acquireLease(this.job.table, this.job.scope, this.job.tenant, this.job.owner, this.job.leaseSeconds);
    if (!lease.acquired) {
      throw new HighwaterError('LEASE_HELD', `table ${this.job.table} (scope ${this.job.scope}) is leased by ${lease.holder} until ${lease.expiresAt?.toISOString()}`);
    }
    try {
      return await this.runLeased(resume, lease.highWater);
    } finally {
      await this.deps.store.releaseLease(this.job.table, this.job.scope, this.job.owner).catch((err: unknown) => this.log.warn({ err }, 'could not release the lease; it expires by itself'));
    }
  }

  private async runLeased(resume: boolean, highWater: Ticks | null): Promise<TableOutcome> {
    const window = await this.windowFor(resume, highWater);
    const checkpoint = resume ? await this.deps.store.lastCompletedBatch(this.job.runId, this.job.table, this.job.scope) : null;
    this.log.info({ windowStart: isoFromTicks(window.start), windowEnd: isoFromTicks(window.end), resumeFrom: checkpoint?.step }, 'window planned');
    for (const step of PAGE_STEPS) {
      if (checkpoint && STEP_ORDER.indexOf(step) < STEP_ORDER.indexOf(checkpoint.step)) continue;
      const from = checkpoint?.step === step ? checkpoint : null;
      await this.runStep(step, window, from ? { batchNo: from.batchNo, position: from.lastPosition } : null);
    }
    const sweptAlready = (sweep: string) => checkpoint !== null && STEP_ORDER.indexOf(checkpoint.step) >= STEP_ORDER.indexOf(sweep);
    if (!sweptAlready('deletes')) await this.sweepDeletes();
    if (!sweptAlready('late-arrivals')) await this.sweepLateArrivals(window);
    const advanced = await this.deps.store.advanceHighWater(this.job.table, this.job.scope, this.job.owner, window.end, this.job.runId);
    if (!advanced) throw new HighwaterError('LEASE_HELD', `lost the lease on ${this.job.table} before advancing its high-watermark; nothing was advanced`);
    await this.publishMarkers(window.end);
    this.deps.observer.safe('windowCompleted', { table: this.job.table, scope: this.job.scope, windowEnd: window.end });
    return { window, ...this.counts, highWater: window.end };
  }

  /** The window of this run: planned now from the source's clock, or the one a resumed run started with. */
  private async windowFor(resume: boolean, highWater: Ticks | null): Promise<Window> {
    if (resume) {
      const existing = await this.deps.store.getTable(this.job.runId, this.job.table, this.job.scope);
      if (existing) return existing.window;
    }
    const [sourceNow, oldest] = await Promise.all([
      this.source((s) => s.clock()),
      this.job.useOldestOpenTransaction ? this.source((s) => s.oldestOpenTransaction()) : Promise.resolve({ visible: false as const, reason: 'turned off in the configuration' }),
    ]);
    const planned = planWindow({
      sourceNow,
      buffer: this.job.bufferTicks,
      highWater,
      baseline: this.job.baselineTicks,
      oldestOpenTransaction: oldest.visible ? oldest.start : null,
    });
    if (!oldest.visible) this.log.info({ reason: oldest.reason }, 'open transactions not visible: the safety buffer alone protects late commits');
    const window = planned.empty ? { start: planned.window.start, end: planned.window.start } : planned.window;
    const row = await this.deps.store.startTable(this.job.runId, {
      table: this.job.table, scope: this.job.scope, tenant: this.job.tenant, window, endClampedBy: planned.clampedBy, oldestTxVisible: oldest.visible,
    });
    return row.window;
  }

  private async runStep(step: Step, window: Window, from: { batchNo: number; position: Position | null } | null): Promise<void> {
    let position = from?.position ?? null;
    let batchNo = from?.batchNo ?? 0;
    if (window.end <= window.start) return;
    for (;;) {
      this.throwIfStopping();
      const startedAt = new Date();
      const page = await this.readPage(step, window, position);
      if (page.length === 0) return;
      batchNo++;
      const outcome = await this.publishPage(step, page, window);
      position = { modifiedOn: page.at(-1)!.modifiedOn, key: page.at(-1)!.key };
      await this.deps.store.recordBatch({
        runId: this.job.runId, table: this.job.table, scope: this.job.scope, step, batchNo,
        rows: outcome.published, bytes: outcome.bytes, skipped: outcome.skipped, failed: outcome.failed, lastPosition: position, startedAt, status: 'completed',
      });
      this.deps.observer.safe('batchPublished', { table: this.job.table, step, batchNo, rows: outcome.published, bytes: outcome.bytes, skipped: outcome.skipped });
      await this.renewLeaseIfDue();
      if (page.length < this.job.batchSize) return;
    }
  }

  private readPage(step: Step, window: Window, after: Position | null): Promise<SourceRow[]> {
    const scope = { businessUnit: this.job.businessUnit, excludedKeys: this.job.excludedKeys };
    if (step === 'missing-parents') return this.source((s) => s.readMissingParentsPage({ ...scope, window, after, limit: this.job.batchSize }));
    return this.source((s) => s.readPage({ ...scope, step, window, after, limit: this.job.batchSize }));
  }

  /** Skips versions the registry already holds, publishes the rest (parents first), records them in the registry. */
  private async publishPage(step: Step | 'late-arrivals', page: SourceRow[], window: Window): Promise<{ published: number; skipped: number; failed: number; bytes: number }> {
    const registered = await this.deps.store.lookupPublished(this.job.table, page.map((r) => r.key));
    const fresh = page.filter((r) => !isUnchanged(r, r.content ? sha256(r.content) : null, registered.get(r.key)));
    const ancestors = await this.unpublishedAncestors(fresh);
    const ordered = step === 'missing-parents' || ancestors.length > 0 ? byDepth([...ancestors, ...fresh]) : fresh;
    const ctx = { table: this.job.table, tenant: this.job.tenant, runId: this.job.runId, window };
    const outcome = await this.rows.publish({ topic: this.job.topic, rows: ordered, ctx });
    await this.deps.store.recordPublished(this.job.table, this.job.runId, outcome.published);
    await this.retireSupersededChunks(outcome.published, registered);
    for (const f of outcome.failed) await this.deps.store.recordRowFailure(this.job.runId, this.job.table, f.key, f.modifiedOn, f.reason);
    if (outcome.failed.length > 0) this.log.warn({ failed: outcome.failed }, 'rows refused; recorded against the run');
    const skipped = page.length - fresh.length;
    this.counts.published += outcome.published.length;
    this.counts.skipped += skipped;
    this.counts.failed += outcome.failed.length;
    return { published: outcome.published.length, skipped, failed: outcome.failed.length, bytes: outcome.published.reduce((n, r) => n + r.bytes, 0) };
  }

  /**
   * Parents — and their parents, up to the root — that rows of this page reference but that are neither in the page
   * nor published: read from the source and published first, whatever their ModifiedOn, so a child never reaches
   * the topic before its ancestors (the missing-parents step covers direct parents; this covers every level).
   */
  private async unpublishedAncestors(rows: readonly SourceRow[]): Promise<SourceRow[]> {
    const excluded = new Set(this.job.excludedKeys.map((k) => k.toLowerCase()));
    const known = new Set(rows.map((r) => r.pathLocator));
    const found: SourceRow[] = [];
    let wanted = parentsNotIn(rows, known);
    for (let depth = 0; wanted.length > 0 && depth < MAX_HIERARCHY_DEPTH; depth++) {
      const published = await this.deps.store.publishedPathLocators(this.job.table, wanted);
      const missing = wanted.filter((p) => !published.has(p));
      if (missing.length === 0) break;
      const parents = (await this.source((s) => s.readByPathLocators(missing))).filter((r) => !excluded.has(r.key.toLowerCase()));
      for (const p of parents) known.add(p.pathLocator);
      found.push(...parents);
      wanted = parentsNotIn(parents, known);
    }
    return found;
  }

  private async retireSupersededChunks(published: readonly { key: string; contentSha256: Buffer | null }[], registered: Map<string, { contentSha256: Buffer | null; chunkCount: number | null }>): Promise<void> {
    for (const row of published) {
      const old = registered.get(row.key);
      if (!old?.chunkCount || !old.contentSha256 || (row.contentSha256 && old.contentSha256.equals(row.contentSha256))) continue;
      await this.rows.retireChunks(this.job.topic, this.job.table, this.job.tenant, row.key, old.contentSha256, old.chunkCount);
    }
  }

  /**
   * Walks registered keys range by range (a cursor that persists across runs), asks the source which still exist,
   * and publishes a tombstone — carrying the last published version — for each one that does not.
   */
  private async sweepDeletes(): Promise<void> {
    if (this.job.deleteSweepKeys === 0) return;
    const startedAt = new Date();
    const cursor = await this.deps.store.sweepCursor(this.job.table);
    const keys = await this.deps.store.registeredKeysAfter(this.job.table, cursor, this.job.deleteSweepKeys);
    await this.deps.store.setSweepCursor(this.job.table, keys.length < this.job.deleteSweepKeys ? null : keys.at(-1)!);
    if (keys.length === 0) return;
    const existing = await this.source((s) => s.existingKeys(keys));
    const gone = keys.filter((k) => !existing.has(k));
    if (gone.length === 0) return;
    const registered = await this.deps.store.lookupPublished(this.job.table, gone);
    const deletions = gone.map((key) => ({ table: this.job.table, tenant: this.job.tenant, key, modifiedOn: registered.get(key)!.modifiedOn, runId: this.job.runId }));
    await this.deps.publisher.send(this.job.topic, deletions.map(tombstoneRecord));
    for (const key of gone) {
      const old = registered.get(key)!;
      if (old.chunkCount && old.contentSha256) await this.rows.retireChunks(this.job.topic, this.job.table, this.job.tenant, key, old.contentSha256, old.chunkCount);
    }
    await this.deps.store.recordDeletions(this.job.table, this.job.runId, deletions.map((d) => ({ key: d.key, modifiedOn: d.modifiedOn })));
    await this.deps.store.recordBatch({
      runId: this.job.runId, table: this.job.table, scope: this.job.scope, step: 'deletes', batchNo: 1,
      rows: gone.length, bytes: 0, skipped: 0, lastPosition: null, startedAt, status: 'completed',
    });
    this.counts.tombstones += gone.length;
    this.log.info({ deleted: gone.length }, 'deleted rows published as tombstones');
  }

  /**
   * A row committed later than the safety buffer allows carries a ModifiedOn at or before this window's start, so
   * no window will ever read it. This sweep walks the source's keys range by range (a cursor kept across runs),
   * finds versions newer than the registry holds that are older than the window, reports them loudly and publishes
   * them — so such a row is detected and repaired, never silently lost.
   */
  private async sweepLateArrivals(window: Window): Promise<void> {
    if (this.job.lateSweepKeys === 0) return;
    const startedAt = new Date();
    const cursor = await this.deps.store.sweepCursor(this.job.table, 'late-arrivals');
    const scope = { businessUnit: this.job.businessUnit, excludedKeys: this.job.excludedKeys };
    const versions = await this.source((s) => s.readKeyVersions({ ...scope, after: cursor, limit: this.job.lateSweepKeys }));
    await this.deps.store.setSweepCursor(this.job.table, versions.length < this.job.lateSweepKeys ? null : versions.at(-1)!.key, 'late-arrivals');
    const registered = await this.deps.store.lookupPublished(this.job.table, versions.map((v) => v.key));
    const late = versions.filter((v) => v.modifiedOn > this.job.baselineTicks && v.modifiedOn <= window.start && isNewerThanRegistered(v.modifiedOn, registered.get(v.key)));
    if (late.length === 0) return;
    this.log.warn({ keys: late.map((v) => v.key).slice(0, 20), count: late.length }, 'rows committed later than the safety buffer allows were found by the sweep and republished; consider a larger safetyBufferMinutes');
    const rows = await this.source((s) => s.readByKeys(late.map((v) => v.key)));
    const outcome = await this.publishPage('late-arrivals', rows, window);
    await this.deps.store.recordBatch({
      runId: this.job.runId, table: this.job.table, scope: this.job.scope, step: 'late-arrivals', batchNo: 1,
      rows: outcome.published, bytes: outcome.bytes, skipped: outcome.skipped, failed: outcome.failed, lastPosition: null, startedAt, status: 'completed',
    });
    this.counts.lateArrivals += outcome.published;
  }

  private async publishMarkers(watermark: Ticks): Promise<void> {
    const partitions = await this.deps.publisher.partitionsOf(this.job.topic);
    const records = await Promise.all(Array.from({ length: partitions }, (_, partition) =>
      markerRecord(this.deps.codec, { table: this.job.table, tenant: this.job.tenant, scope: this.job.scope, watermark, runId: this.job.runId, partition })));
    await this.deps.publisher.send(this.job.topic, records);
  }

  private async renewLeaseIfDue(): Promise<void> {
    if (Date.now() - this.lastRenewal < (this.job.leaseSeconds * 1000) / 3) return;
    const renewed = await this.deps.store.renewLease(this.job.table, this.job.scope, this.job.owner, this.job.leaseSeconds);
    if (!renewed) throw new HighwaterError('LEASE_HELD', `lost the lease on ${this.job.table} (scope ${this.job.scope}); stopping before publishing more`);
    this.lastRenewal = Date.now();
  }

  private throwIfStopping(): void {
    if (this.deps.signal?.aborted) throw new HighwaterError('STOPPED', `stopped by a shutdown signal between batches; resume run ${this.job.runId} to continue`);
  }

  /** Source calls are retried with backoff when the failure is retriable (connection lost, deadlock…). */
  private source<T>(call: (s: SourceConnector) => Promise<T>): Promise<T> {
    return withRetry(() => call(this.deps.source), this.deps.retry, {
      onRetry: ({ attempt, delayMs, error }) => this.log.warn({ attempt, delayMs, err: error }, 'source call failed; retrying'),
      ...(this.deps.signal ? { signal: this.deps.signal } : {}),
    });
  }
}
