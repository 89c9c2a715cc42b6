import type { Position, SourceRow, Step, Ticks, Window } from '../contract.js';
import type { ControlStore, PublishedEntry, RegistryPath } from '../control/store.js';
import type { EventCodec } from '../events/codec.js';
import { markerRecord, tombstoneRecord } from '../events/records.js';
import { HighwaterError } from '../errors.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { withRetry, type RetryPolicy } from '../retry.js';
import type { KeyState, ScopeFilter, SourceConnector } from './source/connector.js';
import { isoFromTicks } from '../time/ticks.js';
import { compareModifiedOn } from '../events/version.js';
import { inlineContentSha256, isUnchanged, movedBackwards, rowDigest, withDeleteNamed, type ObservedRow, type Registered } from './build.js';
import { RenewalTimer } from './elapsed.js';
import { StageTimes } from './stages.js';
import type { PollerObserver } from './observer.js';
import { RowPublisher, type PublishedRow, type PublishOutcome, type PublishSettings } from './publish-rows.js';
import { ancestorPaths, hierarchyDepth, planWindow, type HeldBack } from './window.js';
import { PublishedPaths } from './published-paths.js';

/**
 * One table and scope inside a run: plan (or, on resume, reload) the window, run the steps page by page with a
 * checkpoint after every acknowledged batch, replicate the rows with a NULL ModifiedOn, sweep for deletes and late
 * arrivals, then advance the high-watermark and publish the markers. The lease is renewed between batches; losing
 * it stops the work before anything else is published.
 *
 * Every read of source rows is an observation (ControlStore.observe): serialised per table with every other reader
 * and stamped, so the events carry the order in which the source states were seen (src/events/version.ts).
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
  /** Source keys checked per poll by the late-arrival sweep, and NULL-ModifiedOn rows read per poll (0 turns both off). */
  readonly lateSweepKeys: number;
  /** Content the late-arrival sweep has the source database hash per poll, at most (the first row always). */
  readonly verifySweepBytes: number;
  readonly leaseSeconds: number;
  readonly owner: string;
  /** Count the window's rows at the source before reading it (for a progress bar's total). */
  readonly countWindow?: boolean;
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
  /** In-scope rows whose ModifiedOn is NULL (replicated by the `nulls` step, reported here). */
  readonly nullModifiedOn: number;
  /** An open transaction pulled the window end back (null when it did not, or on resume). */
  readonly heldBack: HeldBack | null;
  readonly highWater: Ticks;
}

/** Every step a checkpoint can name, in the order they run; a resumed run skips the steps before its checkpoint. */
const STEP_ORDER = ['roots', 'missing-parents', 'children', 'nulls', 'deletes', 'late-arrivals'] as const;
type PollStep = (typeof STEP_ORDER)[number];
const PAGE_STEPS: readonly Step[] = ['roots', 'missing-parents', 'children'];
const MAX_HIERARCHY_DEPTH = 64;

/** One page of source rows and the observation that read it. */
interface Page {
  readonly value: SourceRow[];
  readonly observed: Ticks;
}

/** A page ready to send: its rows in send order, what the registry held for its keys, and the rows it skipped. */
interface PreparedPage {
  readonly ordered: ObservedRow[];
  readonly registered: ReadonlyMap<string, PublishedEntry>;
  readonly skipped: number;
}

/**
 * Rows read per source query, in pages of batchSize: as many pages as keep the content read with them near
 * READ_BYTES (at most READ_PAGES pages, at least one), judged by the rows just read. Small rows are read several
 * pages at a time, in one query and one observation; rows with large inline content one page at a time. Each page
 * is still checkpointed on its own. Pure.
 */
export function readLimit(rows: readonly SourceRow[], batchSize: number): number {
  const bytes = rows.reduce((n, r) => n + (r.content?.length ?? 0) + ROW_OVERHEAD_BYTES, 0);
  const perPage = (bytes / Math.max(rows.length, 1)) * batchSize;
  return batchSize * Math.max(1, Math.min(READ_PAGES, Math.floor(READ_BYTES / Math.max(perPage, 1))));
}

const READ_PAGES = 8;
const READ_BYTES = 4 * 1024 * 1024;
/** What a row holds besides its inline content (key, names, path locators, times), about. */
const ROW_OVERHEAD_BYTES = 256;

/** Consecutive pages of `size` rows (the last one shorter). Pure. */
export function pagesOf<T>(rows: readonly T[], size: number): T[][] {
  const pages: T[][] = [];
  for (let i = 0; i < rows.length; i += size) pages.push(rows.slice(i, i + size));
  return pages;
}

/** The keyset position after a row of a window step (such rows have a ModifiedOn, so it is never NULL). */
function positionOf(row: SourceRow): Position {
  return { modifiedOn: row.modifiedOn!, key: row.key };
}

/** Pages merged into one send at most, and the content read with them (inline) that they may hold together. */
const PAGES_PER_SEND = 8;
const SEND_BYTES = 8 * 1024 * 1024;

interface PageAt {
  readonly step: Step;
  readonly batchNo: number;
  readonly position: Position;
  readonly startedAt: Date;
}

/**
 * The state of runStep's pipeline: the pages prepared and not sent yet, the send in flight, the chain of
 * checkpoints, and the rows of every page queued or sent but not checkpointed (the registry does not hold them as
 * acknowledged yet, so the next page's preparation consults them too). A key is in one of those pages at most:
 * runStep waits for a checkpoint rather than send a key again.
 */
export class SendPipeline {
  queued: { at: PageAt; prepared: PreparedPage }[] = [];
  /** The send in flight (or the last one), and the checkpoints up to it. */
  sent: Promise<unknown> = Promise.resolve();
  checkpointed: Promise<void> = Promise.resolve();
  /** The checkpoints before the last send's. */
  older: Promise<void> = Promise.resolve();
  idle = true;
  private readonly batches = new Map<number, readonly ObservedRow[]>();
  /** The row of each key queued or sent and not checkpointed yet (one at most per key). */
  private readonly rows = new Map<string, SourceRow>();
  private readonly paths = new Set<string>();
  /** Sets that collect every key queued while they are watched (see watch). */
  private readonly watchers = new Set<Set<string>>();
  /** The pending send of each read (ControlStore.registerPendingSend), by the batch number of the read's last page. */
  private readonly pendingSends = new Map<number, string>();

  /** A read's pending send, to clear once the page numbered `lastBatchNo` (the read's last) is checkpointed. */
  pendingSend(lastBatchNo: number, id: string): void {
    this.pendingSends.set(lastBatchNo, id);
  }

  /** The pending sends of the reads whose last page is among `batchNos` (checkpointed now), forgotten here. */
  takePendingSends(batchNos: readonly number[]): string[] {
    const ids: string[] = [];
    for (const n of batchNos) {
      const id = this.pendingSends.get(n);
      if (id === undefined) continue;
      ids.push(id);
      this.pendingSends.delete(n);
    }
    return ids;
  }

  queue(at: PageAt, prepared: PreparedPage): void {
    this.queued.push({ at, prepared });
    this.batches.set(at.batchNo, prepared.ordered);
    for (const { row } of prepared.ordered) {
      this.rows.set(row.key, row);
      if (row.pathLocator !== null) this.paths.add(row.pathLocator);
      for (const keys of this.watchers) keys.add(row.key);
    }
  }

  /** From now until unwatch, `keys` collects the key of every row queued. Returns `keys`. */
  watch(keys: Set<string>): Set<string> {
    this.watchers.add(keys);
    return keys;
  }

  unwatch(keys: Set<string>): void {
    this.watchers.delete(keys);
  }

  /** Content bytes the queued pages hold (read with the page; what is fetched at send time is not held yet). */
  get queuedBytes(): number {
    return this.queued.reduce((n, q) => n + q.prepared.ordered.reduce((m, r) => m + (r.row.content?.length ?? 0), 0), 0);
  }

  take(): { at: PageAt; prepared: PreparedPage }[] {
    const pages = this.queued;
    this.queued = [];
    return pages;
  }

  /** A send started: its checkpoints run after its acknowledgement and after every earlier checkpoint. */
  started(sending: Promise<PublishOutcome>, checkpoint: (outcome: PublishOutcome) => Promise<void>): void {
    this.idle = false;
    const previous = this.checkpointed;
    this.sent = sending.finally(() => {
      this.idle = true;
    });
    this.checkpointed = this.sent.then(async () => {
      await previous; // batch rows in batch order, and none after a failed one
      await checkpoint(await sending);
    });
    this.older = previous;
    this.sent.catch(() => undefined);
    this.checkpointed.catch(() => undefined);
  }

  release(batchNo: number): void {
    for (const { row } of this.batches.get(batchNo) ?? []) {
      this.rows.delete(row.key);
      if (row.pathLocator !== null) this.paths.delete(row.pathLocator);
    }
    this.batches.delete(batchNo);
  }

  /** The rows of `rows` whose key is queued or sent and not checkpointed yet. */
  inFlight(rows: readonly SourceRow[]): SourceRow[] {
    return this.rows.size === 0 ? [] : rows.filter((r) => this.rows.has(r.key));
  }

  /** The version of `key` queued or sent and not checkpointed yet. */
  rowOf(key: string): SourceRow | undefined {
    return this.rows.get(key);
  }

  get pathLocators(): ReadonlySet<string> {
    return this.paths;
  }
}

/** The part of a send's outcome that concerns these rows (keys are distinct across the pages of one send). Pure. */
export function outcomeOf(outcome: PublishOutcome, rows: readonly ObservedRow[]): PublishOutcome {
  const keys = new Set(rows.map((r) => r.row.key));
  return { published: outcome.published.filter((r) => keys.has(r.key)), failed: outcome.failed.filter((f) => keys.has(f.key)) };
}

/**
 * Whether a page's row is exactly the version of its key that an earlier page queued or sent and did not checkpoint
 * yet (an ancestor sent ahead of its own page), so this page may skip it instead of waiting for that checkpoint:
 * same ModifiedOn and same digest, with the content of both known without reading it again (inline or none), and a
 * registry that holds no version sent later (`registered`, read while that version is in flight: its pending
 * registration is in it), so that the acknowledged version replaces the registry's entry at that checkpoint. That
 * checkpoint precedes this page's (they are written in batch order, none after a failed one), so this page's
 * position is never recorded before the registry holds the version; if the send fails or the poller stops before
 * then, neither page is checkpointed and both are read again. Pure apart from hashing.
 */
export function sameVersionInFlight(row: SourceRow, inFlight: SourceRow | undefined, registered: Registered | undefined): boolean {
  if (inFlight === undefined || compareModifiedOn(row.modifiedOn, inFlight.modifiedOn) !== 0 || movedBackwards(row, registered)) return false;
  const mine = inlineContentSha256(row);
  const theirs = inlineContentSha256(inFlight);
  if (mine === undefined || theirs === undefined) return false;
  return rowDigest(row, mine).equals(rowDigest(inFlight, theirs));
}

/**
 * A read and what the registry held for its keys when the read arrived (looked up ahead, while the pages before it
 * were prepared and sent), and `stale`: its keys whose entry may have changed since that lookup — in flight then,
 * or queued since (the pipeline adds those while it is watched, until the read's pages are queued).
 */
interface ReadAhead {
  readonly read: Page;
  readonly registered: ReadonlyMap<string, PublishedEntry>;
  readonly stale: Set<string>;
}

interface PageOutcome {
  readonly published: number;
  readonly skipped: number;
  readonly failed: number;
  readonly bytes: number;
}

function parentsNotIn(rows: readonly SourceRow[], known: (path: string) => boolean): string[] {
  return [...new Set(rows.map((r) => r.parentPathLocator).filter((p): p is string => p !== null && !known(p)))];
}

function byDepth(rows: ObservedRow[]): ObservedRow[] {
  return rows.sort((a, b) => hierarchyDepth(a.row.pathLocator) - hierarchyDepth(b.row.pathLocator));
}

/**
 * Whether the registry holds an acknowledged, not deleted version of the row's key at the row's ModifiedOn: the row
 * is probably unchanged (its digest decides, in preparePage), and a pending registration would change nothing in
 * that entry (registerPending keeps an acknowledged version, and the greatest ModifiedOn sent is already at least
 * this one).
 */
export function heldAtSameVersion(row: SourceRow, registered: Registered | undefined): boolean {
  return registered !== undefined && registered.acked && !registered.deleted && compareModifiedOn(row.modifiedOn, registered.modifiedOn) === 0;
}

/** A registry entry the late-arrival sweep must act on: a key never acknowledged, deleted, or at another ModifiedOn. */
function needsRepublish(modifiedOn: Ticks, registered: PublishedEntry | undefined): boolean {
  return registered === undefined || registered.deleted || !registered.acked || registered.modifiedOn !== modifiedOn;
}

/**
 * A source state no window will publish: one the registry lacks, or holds deleted or at another ModifiedOn, whose
 * ModifiedOn is before this window (a late commit, a restore); or one the registry holds at its ModifiedOn but with
 * another digest (changed while ModifiedOn stayed), up to this window's end. Rows of this window the registry lacks
 * are this window's own (refused ones included), not unseen.
 */
function unseenByWindows(state: KeyState, registered: PublishedEntry | undefined, window: Window): boolean {
  const modifiedOn = state.row.modifiedOn!;
  if (needsRepublish(modifiedOn, registered)) return modifiedOn <= window.start;
  return modifiedOn <= window.end && !isUnchanged(state.row, rowDigest(state.row, state.contentSha256), registered);
}

export class TablePoll {
  private readonly rows: RowPublisher;
  private readonly log: Logger;
  private readonly renewal: RenewalTimer;
  private heldBack: HeldBack | null = null;
  private counts = { published: 0, skipped: 0, failed: 0, tombstones: 0, lateArrivals: 0, nullModifiedOn: 0 };
  private readonly stages = new StageTimes();
  /**
   * Paths known published (acknowledged, not deleted in the registry), learned from this run's checkpoints and the
   * registry's answers, kept true by the store's notices (see PublishedPaths): the ancestor search asks the
   * registry only about the others.
   */
  private readonly publishedPaths = new PublishedPaths();

  constructor(private readonly job: TableJob, private readonly deps: TablePollDeps) {
    this.rows = new RowPublisher(deps.publisher, deps.codec, deps.source, deps.publish, this.stages);
    this.renewal = new RenewalTimer((job.leaseSeconds * 1000) / 3);
    this.log = deps.logger.child({ table: job.table, scope: job.scope, runId: job.runId });
  }

  async run(resume: boolean): Promise<TableOutcome> {
    const lease = await this.deps.store.acquireLease(this.job.table, this.job.scope, this.job.tenant, this.job.owner, this.job.leaseSeconds);
    if (!lease.acquired) {
      throw new HighwaterError('LEASE_HELD', `table ${this.job.table} (scope ${this.job.scope}) is leased by ${lease.holder} until ${lease.expiresAt?.toISOString()}`);
    }
    const unwatch = this.deps.store.watchRegistry(this.job.table, this.publishedPaths);
    try {
      // Keys a stopped poller may have sent without recording them: registered as pending before anything reads
      // the registry (the delete sweep must walk them).
      await this.deps.store.replayPendingSends(this.job.table);
      return await this.runLeased(resume, lease.highWater);
    } finally {
      unwatch();
      this.publishedPaths.clear();
      await this.deps.store.releaseLease(this.job.table, this.job.scope, this.job.owner).catch((err: unknown) => this.log.warn({ err }, 'could not release the lease; it expires by itself'));
    }
  }

  private async runLeased(resume: boolean, highWater: Ticks | null): Promise<TableOutcome> {
    const window = await this.windowFor(resume, highWater);
    const checkpoint = resume ? await this.deps.store.lastCompletedBatch(this.job.runId, this.job.table, this.job.scope) : null;
    this.log.info({ windowStart: isoFromTicks(window.start), windowEnd: isoFromTicks(window.end), resumeFrom: checkpoint?.step }, 'window planned');
    const rowsInWindow = this.job.countWindow && checkpoint === null && window.end > window.start ? await this.countRows(window) : null;
    this.deps.observer.safe('windowPlanned', { table: this.job.table, scope: this.job.scope, window, heldBack: this.heldBack, rowsInWindow });
    const done = (step: PollStep): boolean => checkpoint !== null && STEP_ORDER.indexOf(step) < STEP_ORDER.indexOf(checkpoint.step as PollStep);
    const completed = (step: PollStep): boolean => checkpoint !== null && STEP_ORDER.indexOf(checkpoint.step as PollStep) >= STEP_ORDER.indexOf(step);
    for (const step of PAGE_STEPS) {
      if (done(step)) continue;
      const from = checkpoint?.step === step ? checkpoint : null;
      await this.runStep(step, window, from ? { batchNo: from.batchNo, position: from.lastPosition } : null);
    }
    if (!completed('nulls')) await this.replicateNullModifiedOn(window);
    if (!completed('deletes')) await this.sweepDeletes();
    if (!completed('late-arrivals')) await this.sweepLateArrivals(window);
    const advanced = await this.deps.store.advanceHighWater(this.job.table, this.job.scope, this.job.owner, window.end, this.job.runId);
    if (!advanced) throw new HighwaterError('LEASE_HELD', `lost the lease on ${this.job.table} before advancing its high-watermark; nothing was advanced`);
    await this.publishMarkers(window.end);
    this.deps.observer.safe('windowCompleted', { table: this.job.table, scope: this.job.scope, windowEnd: window.end });
    if (this.stages.enabled) this.log.info({ stages: this.stages.summary() }, 'poll stage times');
    return { window, ...this.counts, heldBack: this.heldBack, highWater: window.end };
  }

  /**
   * The rows the window's steps will read, for a progress bar's total. Best effort: a count that fails costs the bar
   * its total, never the poll. A resumed run is not counted (part of its window is done; the total would lie).
   */
  private async countRows(window: Window): Promise<number | null> {
    try {
      return await this.deps.source.countWindow({ ...this.scopeFilter, window });
    } catch (err) {
      this.log.warn({ err }, 'could not count the rows of the window; progress shows no total');
      return null;
    }
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
    this.heldBack = planned.heldBack;
    if (planned.heldBack) this.log.warn({ ...planned.heldBack }, 'an open transaction at the source holds the window end back (an idle-in-transaction session freezes every high-watermark)');
    if (!oldest.visible) this.log.info({ reason: oldest.reason }, 'open transactions not visible: the safety buffer alone protects late commits');
    else if (oldest.caveat) this.log.warn({ caveat: oldest.caveat }, 'open transactions only partly visible');
    const window = planned.empty ? { start: planned.window.start, end: planned.window.start } : planned.window;
    const row = await this.deps.store.startTable(this.job.runId, {
      table: this.job.table, scope: this.job.scope, tenant: this.job.tenant, window, endClampedBy: planned.clampedBy, oldestTxVisible: oldest.visible,
    });
    return row.window;
  }

  /**
   * The pages of one step, keyset after keyset, as a pipeline: while one send is in flight to Kafka, the next pages
   * are read and prepared (registry lookups, ancestors, pending registration), and the checkpoint of the last send
   * is written. The pages prepared meanwhile go out together in the next send (at most PAGES_PER_SEND pages and
   * SEND_BYTES of content read with them), so a slow broker gets fewer, larger requests. Sends stay one at a time
   * in page order, and each page's checkpoint (registry versions, then its batch row) is written in batch order,
   * only after Kafka acknowledged it: a checkpoint never covers a record that was not acknowledged, and a crash
   * resumes after the last one, republishing what follows it.
   */
  private async runStep(step: Step, window: Window, from: { batchNo: number; position: Position | null } | null): Promise<void> {
    if (window.end <= window.start) return;
    this.throwIfStopping();
    // The parents the window's children reference, listed once for the whole step (a resumed step lists them
    // again and goes on from its checkpoint's position): each page reads the next of them in keyset order.
    const parents = step === 'missing-parents' ? await this.stages.time('read: referenced parents', () => this.source((s) => s.readReferencedParents({ ...this.scopeFilter, window }))) : [];
    if (step === 'missing-parents' && parents.length === 0) return;
    const pipe = new SendPipeline();
    let batchNo = from?.batchNo ?? 0;
    let limit = this.job.batchSize;
    const readAhead = (after: Position | null, rows: number): Promise<ReadAhead> => {
      const ahead = this.readPage(step, window, parents, after, rows).then((read) => this.lookupAhead(pipe, read));
      ahead.catch(() => undefined); // awaited later; a failure surfaces there, not as an unhandled rejection
      return ahead;
    };
    let next: Promise<ReadAhead> | null = readAhead(from?.position ?? null, limit);
    try {
      while (next !== null) {
        const ahead: ReadAhead = await this.awaitRead(pipe, window, next);
        const { read, registered: registeredAtRead, stale } = ahead;
        try {
          if (read.value.length === 0) break;
          const more = read.value.length >= limit;
          limit = readLimit(read.value, this.job.batchSize);
          next = more ? readAhead(positionOf(read.value.at(-1)!), limit) : null;
          // The registry once per read rather than once per page: what it held for every key of the read, looked up
          // as the read arrived (lookupAhead), then every key that may be sent registered as pending, here, in read
          // order and before any page of the read is sent (registerPending keeps acknowledged versions as they are;
          // the lookup before it is what each page would have seen before its own registration; a key held at the
          // same version is registered by preparePage only if it changed). An entry that may have changed since
          // the lookup — a key in flight then (its checkpoint registers it), or one queued since (an ancestor of an
          // earlier page, a page of the read before) — is looked up again with its page.
          const pendingAtRead = await this.registerPendingAtRead(pipe, read.value, registeredAtRead, stale, batchNo);
          for (const rows of pagesOf(read.value, this.job.batchSize)) {
            if (pipe.idle && pipe.queued.length > 0) await this.flush(pipe, window, next);
            const startedAt = new Date();
            batchNo++;
            const page = rows.map((row) => ({ row, observed: read.observed }));
            // A key still in flight (an ancestor sent ahead of its own page): the same version is skipped (see
            // sameVersionInFlight); another version is compared with the registry once that page is checkpointed, as
            // without the pipeline, instead of publishing the key twice.
            const busy = pipe.inFlight(rows);
            let prepared: PreparedPage;
            if (busy.length === 0 && !rows.some((r) => stale.has(r.key))) {
              prepared = await this.preparePage(page, pipe.pathLocators, { registered: registeredAtRead, skipped: 0, pending: pendingAtRead });
            } else if (busy.length === 0) {
              prepared = await this.preparePage(page, pipe.pathLocators, { registered: await this.lookup(rows.map((r) => r.key)), skipped: 0, pending: pendingAtRead });
            } else {
              const registered = await this.lookup(rows.map((r) => r.key));
              const sent = new Set(busy.filter((r) => sameVersionInFlight(r, pipe.rowOf(r.key), registered.get(r.key))).map((r) => r.key));
              if (sent.size === busy.length) {
                prepared = await this.preparePage(page.filter((r) => !sent.has(r.row.key)), pipe.pathLocators, { registered, skipped: sent.size, pending: pendingAtRead });
              } else {
                await this.stages.time('stall: key in flight', async () => {
                  await this.flush(pipe, window, next);
                  await pipe.checkpointed;
                });
                prepared = await this.preparePage(page, pipe.pathLocators, { registered: await this.lookup(rows.map((r) => r.key)), skipped: 0, pending: pendingAtRead });
              }
            }
            pipe.queue({ step, batchNo, position: positionOf(rows.at(-1)!), startedAt }, prepared);
            const full = pipe.queued.length >= PAGES_PER_SEND || pipe.queuedBytes >= SEND_BYTES;
            if (pipe.idle || full) await this.flush(pipe, window, next);
          }
        } finally {
          pipe.unwatch(stale);
        }
      }
      await this.flush(pipe, window, next);
      await pipe.checkpointed;
    } catch (err) {
      // Let the acknowledged pages before the failure write their checkpoints, and the read in progress end.
      await Promise.allSettled([pipe.checkpointed, next]);
      throw err;
    }
  }

  /**
   * Waits for a read, sending the queued pages as soon as the send in flight is acknowledged rather than after the
   * read: a read slowed by a busy source must not leave Kafka idle.
   */
  private async awaitRead<T>(pipe: SendPipeline, window: Window, next: Promise<T>): Promise<T> {
    for (;;) {
      if (pipe.idle && pipe.queued.length > 0) await this.flush(pipe, window, next);
      if (pipe.queued.length === 0) return this.stages.time('wait: read', () => next);
      const readFirst = await this.stages.time('wait: read', () => Promise.race([next.then(() => true, () => true), pipe.sent.then(() => false, () => false)]));
      if (readFirst) return next;
    }
  }

  /**
   * Sends the queued pages together once the previous send is acknowledged, and chains their checkpoints, in
   * batch order, after this send's acknowledgement and the previous checkpoints.
   */
  private async flush(pipe: SendPipeline, window: Window, next: Promise<unknown> | null): Promise<void> {
    if (pipe.queued.length === 0) return;
    await this.stages.time('flush: wait send', () => pipe.sent);
    await this.stopIfAborted(pipe.checkpointed, next);
    await this.renewLeaseIfDue();
    await this.stages.time('flush: wait older checkpoints', () => pipe.older); // at most one checkpoint outstanding besides this send's: memory stays bounded
    const pages = pipe.take();
    const sending = this.sendPage(pages.flatMap((p) => p.prepared.ordered), window);
    pipe.started(sending, async (outcome) => {
      // Kafka acknowledged every record of the send: the registry records all its versions in one statement, then
      // each page's batch row records its position, in batch order.
      await this.recordPublished(outcome.published, (written) => this.learnDirectories(written, pages.flatMap((p) => p.prepared.ordered)));
      for (const p of pages) {
        await this.checkpointPage(p.at, p.prepared, outcomeOf(outcome, p.prepared.ordered), true);
        pipe.release(p.at.batchNo);
      }
      // Refused rows did not reach Kafka; their keys get the pending entries registerPending gave them before
      // pending sends existed. Then every key of a read whose last page this was is in the registry, and its
      // pending send goes.
      if (outcome.failed.length > 0) {
        const refused = new Set(outcome.failed.map((f) => f.key));
        await this.registerPending(pages.flatMap((p) => p.prepared.ordered).map((r) => r.row).filter((row) => refused.has(row.key)));
      }
      const cleared = pipe.takePendingSends(pages.map((p) => p.at.batchNo));
      if (cleared.length > 0) await this.stages.time('checkpoint: clear pending sends', () => this.deps.store.clearPendingSends(this.job.table, cleared));
    });
  }

  /** Between pages: on a shutdown signal, the pages already sent are checkpointed and the step stops. */
  private async stopIfAborted(checkpointed: Promise<void>, next: Promise<unknown> | null): Promise<void> {
    if (!this.deps.signal?.aborted) return;
    await checkpointed;
    await next?.catch(() => undefined);
    this.throwIfStopping();
  }

  /** After Kafka acknowledged a page: the registry records its versions, then a batch row records the position. */
  private async checkpointPage(at: { step: Step; batchNo: number; position: Position; startedAt: Date }, prepared: PreparedPage, sent: PublishOutcome, recorded = false): Promise<void> {
    const outcome = await this.registerSent(prepared, sent, recorded);
    await this.stages.time('checkpoint: batch row', () => this.recordBatch(at.step, at.batchNo, outcome, at.position, at.startedAt));
    this.deps.observer.safe('batchPublished', { table: this.job.table, step: at.step, batchNo: at.batchNo, rows: outcome.published, bytes: outcome.bytes, skipped: outcome.skipped });
  }

  private get scopeFilter(): ScopeFilter {
    return { businessUnit: this.job.businessUnit, excludedKeys: this.job.excludedKeys };
  }

  /** One read of a step: `parents` are the paths the missing-parents step pages (see runStep). */
  private readPage(step: Step, window: Window, parents: readonly string[], after: Position | null, limit: number): Promise<Page> {
    if (step === 'missing-parents') {
      const request = { parents, excludedKeys: this.job.excludedKeys, after, limit };
      return this.stages.time('read: observation', () => this.observe((s) => this.stages.time('read: parents query', () => s.readMissingParentsPage(request))));
    }
    return this.stages.time('read: observation', () => this.observe((s) => this.stages.time('read: query', () => s.readPage({ ...this.scopeFilter, window, after, limit, step }))));
  }

  /** Publishes the observed rows whose state the registry does not hold yet (see preparePage), in one go. */
  private async publishPage(page: readonly ObservedRow[], window: Window): Promise<PageOutcome> {
    const prepared = await this.preparePage(page, new Set());
    return this.registerSent(prepared, await this.sendPage(prepared.ordered, window));
  }

  /**
   * Picks the rows to publish, parents first, each after the unpublished ancestors it needs, and registers their
   * keys as pending (before the send). A row whose ModifiedOn moved backwards is deleted first (a tombstone), so
   * targets take it as a new life of the key. `inFlightPaths`: the rows of earlier pages queued or sent but not
   * checkpointed yet, which count as published ancestors (they are sent before this page). `known`: the registry's
   * entries for the page's keys when the caller already read them, rows it already counted as skipped, and the rows
   * it already registered as pending (the others, the ancestors found here, are registered: an ancestor read by
   * its path may be a newer version of a key the read holds, and its ModifiedOn must be counted as sent).
   */
  private async preparePage(
    page: readonly ObservedRow[],
    inFlightPaths: ReadonlySet<string>,
    known?: { registered: ReadonlyMap<string, PublishedEntry>; skipped: number; pending: ReadonlySet<SourceRow> },
  ): Promise<PreparedPage> {
    const registered = known?.registered ?? (await this.lookup(page.map((r) => r.row.key)));
    const digests = await this.digestsToCompare(page, registered);
    const fresh = page.filter((r) => !isUnchanged(r.row, digests.get(r.row.key), registered.get(r.row.key))).map((r) => withDeleteNamed(r, registered.get(r.row.key)));
    const ancestors = await this.stages.time('prepare: ancestors', () => this.unpublishedAncestors(fresh.map((r) => r.row), inFlightPaths));
    const ordered = ancestors.length > 0 || fresh.some((r) => r.row.parentPathLocator !== null) ? byDepth([...ancestors, ...fresh]) : fresh;
    await this.deleteBeforeRepublishing(fresh.filter((r) => movedBackwards(r.row, registered.get(r.row.key))), registered);
    await this.registerPending(ordered.map((r) => r.row).filter((row) => !known?.pending.has(row)));
    return { ordered, registered, skipped: (known?.skipped ?? 0) + page.length - fresh.length };
  }

  /** Registers acknowledged versions in the registry; `onWritten` is told which rows were written (see ControlStore). */
  private async recordPublished(rows: readonly PublishedRow[], onWritten?: (written: readonly RegistryPath[]) => void): Promise<void> {
    await this.stages.time('checkpoint: record published', () => this.deps.store.recordPublished(this.job.table, this.job.runId, rows, onWritten));
  }

  /**
   * The directories among `sent` that a checkpoint just wrote to the registry at the path they were sent with are
   * published there: later pages need not ask the registry about them. Only directories (only they have children),
   * so the bounded set covers more of a large load.
   */
  private learnDirectories(written: readonly RegistryPath[], sent: readonly ObservedRow[]): void {
    const directories = new Map<string, string>();
    for (const { row } of sent) if (row.isDirectory && row.pathLocator !== null) directories.set(row.key, row.pathLocator);
    if (directories.size === 0) return;
    for (const { key, pathLocator } of written) {
      if (pathLocator !== null && directories.get(key) === pathLocator) this.publishedPaths.add(key, pathLocator);
    }
  }

  /**
   * Registers the keys of a read that may be sent before any page of it is sent: the keys the registry did not hold
   * when the read arrived (and that nothing queued since) in one pending send (ControlStore.registerPendingSend:
   * one row, not one per key), cleared when the read's last page is checkpointed; the others as pending entries
   * (registerPending), since their entries change (a greater ModifiedOn sent, a deleted key coming back). Not the
   * rows the registry held acknowledged at the same ModifiedOn (probably unchanged, see heldAtSameVersion): on a
   * tree, the folders the missing-parents step published come again with the children, and registering them was
   * most of the step's registry writes for nothing (for such a key registerPending changes nothing). preparePage
   * registers those of them that turn out to have changed, before their page is queued. Returns the rows
   * registered here.
   */
  private async registerPendingAtRead(pipe: SendPipeline, rows: readonly SourceRow[], registered: ReadonlyMap<string, PublishedEntry>, stale: ReadonlySet<string>, batchNo: number): Promise<Set<SourceRow>> {
    const isNew = (row: SourceRow): boolean => !registered.has(row.key) && !stale.has(row.key);
    const toSend = rows.filter((row) => stale.has(row.key) || !heldAtSameVersion(row, registered.get(row.key)));
    await this.registerPending(toSend.filter((row) => !isNew(row)));
    const fresh = toSend.filter(isNew);
    if (fresh.length > 0) {
      const id = await this.stages.time('prepare: register pending send', () => this.deps.store.registerPendingSend(this.job.table, this.job.runId, fresh.map((row) => ({ key: row.key, modifiedOn: row.modifiedOn, pathLocator: row.pathLocator }))));
      if (id !== null) pipe.pendingSend(batchNo + pagesOf(rows, this.job.batchSize).length, id);
    }
    return new Set(toSend);
  }

  /** Registers the keys of rows about to be sent (see ControlStore.registerPending), before their first send. */
  private async registerPending(rows: readonly SourceRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.stages.time('prepare: register pending', () => this.deps.store.registerPending(this.job.table, this.job.runId, rows.map((row) => ({ key: row.key, modifiedOn: row.modifiedOn, pathLocator: row.pathLocator }))));
  }

  /**
   * What the registry holds for the keys of a read, looked up as soon as the read arrives, while the pages before it
   * are still prepared and sent (off the pipeline's critical path). The keys in flight now, and every key queued
   * from now until the read's pages are queued (the pipeline watches them into `stale`), are looked up again with
   * their page: their entries may change in between (a checkpoint, a pending registration, a delete before
   * republishing). Nothing is registered here: pending registration stays in read order, in runStep.
   */
  private async lookupAhead(pipe: SendPipeline, read: Page): Promise<ReadAhead> {
    const stale = pipe.watch(new Set(pipe.inFlight(read.value).map((r) => r.key)));
    try {
      const registered = read.value.length === 0 ? new Map<string, PublishedEntry>() : await this.stages.time('read ahead: lookup', () => this.deps.store.lookupPublished(this.job.table, read.value.map((r) => r.key)));
      return { read, registered, stale };
    } catch (err) {
      pipe.unwatch(stale);
      throw err;
    }
  }

  /** What the registry holds for these keys. */
  private lookup(keys: readonly string[]): Promise<Map<string, PublishedEntry>> {
    return this.stages.time('prepare: lookup', () => this.deps.store.lookupPublished(this.job.table, keys));
  }

  /** Sends the rows of prepared pages, in order; resolves when Kafka acknowledged every record of them. */
  private sendPage(rows: readonly ObservedRow[], window: Window): Promise<PublishOutcome> {
    const ctx = { table: this.job.table, tenant: this.job.tenant, runId: this.job.runId, window };
    return this.rows.publish({ topic: this.job.topic, rows, ctx });
  }

  /** Registers the acknowledged versions (unless `recorded` already) and the refused rows of a sent page, and counts them. */
  private async registerSent(prepared: PreparedPage, outcome: PublishOutcome, recorded = false): Promise<PageOutcome> {
    if (!recorded) await this.recordPublished(outcome.published);
    await this.retireSupersededChunks(outcome.published, prepared.registered);
    for (const f of outcome.failed) await this.deps.store.recordRowFailure(this.job.runId, this.job.table, f.key, f.modifiedOn, f.reason);
    if (outcome.failed.length > 0) this.log.warn({ failed: outcome.failed }, 'rows refused; recorded against the run');
    this.counts.published += outcome.published.length;
    this.counts.skipped += prepared.skipped;
    this.counts.failed += outcome.failed.length;
    return { published: outcome.published.length, skipped: prepared.skipped, failed: outcome.failed.length, bytes: outcome.published.reduce((n, r) => n + r.bytes, 0) };
  }

  /**
   * The digest of every row that may be unchanged (the registry holds an acknowledged version with its ModifiedOn).
   * Content that did not travel inline is hashed by the source database, so a change to a large blob that kept its
   * ModifiedOn is never mistaken for no change.
   */
  private async digestsToCompare(page: readonly ObservedRow[], registered: ReadonlyMap<string, PublishedEntry>): Promise<Map<string, Buffer>> {
    const candidates = page.map((r) => r.row).filter((row) => {
      const held = registered.get(row.key);
      return held !== undefined && held.acked && !held.deleted && held.modifiedOn === row.modifiedOn;
    });
    const unknown = candidates.filter((row) => inlineContentSha256(row) === undefined).map((row) => row.key);
    const hashed = unknown.length > 0 ? await this.source((s) => s.contentHashes(unknown)) : new Map<string, Buffer | null>();
    const digests = new Map<string, Buffer>();
    for (const row of candidates) {
      const inline = inlineContentSha256(row);
      const sha = inline !== undefined ? inline : hashed.get(row.key);
      if (sha !== undefined) digests.set(row.key, rowDigest(row, sha));
    }
    return digests;
  }

  /**
   * Parents — and their parents, up to the root — that rows of this page reference but that are neither in the page
   * nor published: read from the source and published first, whatever their ModifiedOn, so a child never reaches
   * the topic before its ancestors (the missing-parents step covers direct parents; this covers every level).
   */
  private async unpublishedAncestors(rows: readonly SourceRow[], inFlightPaths: ReadonlySet<string>): Promise<ObservedRow[]> {
    if (!rows.some((r) => r.parentPathLocator !== null)) return [];
    const excluded = new Set(this.job.excludedKeys.map((k) => k.toLowerCase()));
    // The paths of this page and of the pages in flight, without copying the latter (thousands of paths) per page.
    const seen = new Set<string | null>(rows.map((r) => r.pathLocator));
    const known = (p: string): boolean => seen.has(p) || inFlightPaths.has(p);
    // The registry's answer for a path this run knows published (PublishedPaths) is known: it is asked the rest only.
    const unknown = (paths: readonly string[]): string[] => paths.filter((p) => !this.publishedPaths.has(p));
    const found: ObservedRow[] = [];
    // The first lookup also asks for every ancestor the parents' paths name by their form (a hierarchyid path's
    // prefixes), so a deep chain of unpublished ancestors takes one round instead of one per level; the loop still
    // follows the parent columns for whatever that guess missed.
    const direct = parentsNotIn(rows, known);
    let wanted = unknown([...new Set([...direct, ...direct.flatMap(ancestorPaths)])].filter((p) => !known(p)));
    for (let depth = 0; wanted.length > 0 && depth < MAX_HIERARCHY_DEPTH; depth++) {
      const atPaths = await this.stages.time('prepare: ancestors lookup', () => this.deps.store.publishedAtPaths(this.job.table, wanted, (rows) => {
        for (const r of rows) this.publishedPaths.add(r.key, r.pathLocator);
      }));
      const published = new Set(atPaths.map((r) => r.pathLocator));
      const missing = wanted.filter((p) => !published.has(p));
      if (missing.length === 0) break;
      const read = await this.observe((s) => s.readByPathLocators(missing));
      const parents = read.value.filter((r) => !excluded.has(r.key.toLowerCase()));
      for (const p of parents) seen.add(p.pathLocator);
      found.push(...parents.map((row) => ({ row, observed: read.observed })));
      wanted = unknown(parentsNotIn(parents, known));
    }
    return found;
  }

  /**
   * Rows whose ModifiedOn moved backwards: a tombstone observed just before the row (so it covers every version sent
   * so far, and the row, observed after it, outlives it), then the row is published as usual, naming that delete
   * (`deletedBefore`). Compaction keeps only the row of the two, so a reader that gets there late learns of the
   * delete from the row itself.
   */
  private async deleteBeforeRepublishing(rows: readonly ObservedRow[], registered: ReadonlyMap<string, PublishedEntry>): Promise<void> {
    if (rows.length === 0) return;
    this.log.warn({ keys: rows.map((r) => r.row.key).slice(0, 20), count: rows.length }, 'ModifiedOn moved backwards at the source (a restore?); the key is deleted in targets and published again');
    await this.publishTombstones(rows.map((r) => ({ key: r.row.key, observed: r.deletedBefore! })), registered);
  }

  /** Tombstones (and tombstones for the chunks of the versions they delete), then the deletion log. */
  private async publishTombstones(gone: readonly { key: string; observed: Ticks }[], registered: ReadonlyMap<string, PublishedEntry>): Promise<void> {
    this.publishedPaths.deleted(gone.map((g) => g.key)); // before the tombstones leave (the store tells it again)
    const deletions = gone.map(({ key, observed }) => ({
      table: this.job.table, tenant: this.job.tenant, key, modifiedOn: registered.get(key)?.modifiedOn ?? null, observed, runId: this.job.runId,
    }));
    await this.deps.publisher.send(this.job.topic, deletions.map(tombstoneRecord));
    for (const { key } of gone) {
      const old = registered.get(key);
      if (old?.chunkCount && old.contentSha256) await this.rows.retireChunks(this.job.topic, this.job.table, this.job.tenant, key, old.contentSha256, old.chunkCount);
    }
    await this.deps.store.recordDeletions(this.job.table, this.job.runId, deletions.map((d) => ({ key: d.key, modifiedOn: d.modifiedOn, observed: d.observed })));
    this.counts.tombstones += gone.length;
  }

  private async retireSupersededChunks(published: readonly { key: string; contentSha256: Buffer | null }[], registered: ReadonlyMap<string, PublishedEntry>): Promise<void> {
    for (const row of published) {
      const old = registered.get(row.key);
      if (!old?.chunkCount || !old.contentSha256 || (row.contentSha256 && old.contentSha256.equals(row.contentSha256))) continue;
      await this.rows.retireChunks(this.job.topic, this.job.table, this.job.tenant, row.key, old.contentSha256, old.chunkCount);
    }
  }

  /**
   * Rows whose ModifiedOn is NULL belong to no window: they are counted (recorded on the run, so they are visible)
   * and replicated by this step, which walks them in key order from a cursor kept across runs, at most
   * `lateSweepKeys` per poll; the registry skips the unchanged ones.
   */
  private async replicateNullModifiedOn(window: Window): Promise<void> {
    if (this.job.lateSweepKeys === 0) return;
    const startedAt = new Date();
    const count = await this.source((s) => s.countNullModifiedOn(this.scopeFilter));
    this.counts.nullModifiedOn = count;
    await this.deps.store.recordNullModifiedOn(this.job.runId, this.job.table, this.job.scope, count);
    if (count === 0) return;
    this.log.warn({ rows: count }, 'rows with a NULL ModifiedOn: no window can read them; they are replicated by the nulls step, a few per poll');
    const cursor = await this.deps.store.sweepCursor(this.job.table, 'nulls');
    const page = await this.observe((s) => s.readNullModifiedOnPage({ ...this.scopeFilter, after: cursor, limit: this.job.lateSweepKeys }));
    await this.deps.store.setSweepCursor(this.job.table, page.value.length < this.job.lateSweepKeys ? null : page.value.at(-1)!.key, 'nulls');
    const outcome = await this.publishPage(page.value.map((row) => ({ row, observed: page.observed })), window);
    await this.recordBatch('nulls', 1, outcome, null, startedAt);
  }

  /**
   * Walks registered keys range by range (a cursor that persists across runs), asks the source which are still in
   * the replicated set — the blob row joined to its metadata row and BU, in scope, not excluded: the set the windows
   * read — and publishes a tombstone for each one that is not, stamped with that observation.
   */
  private async sweepDeletes(): Promise<void> {
    if (this.job.deleteSweepKeys === 0) return;
    const startedAt = new Date();
    const cursor = await this.deps.store.sweepCursor(this.job.table);
    const keys = await this.deps.store.registeredKeysAfter(this.job.table, cursor, this.job.deleteSweepKeys);
    await this.deps.store.setSweepCursor(this.job.table, keys.length < this.job.deleteSweepKeys ? null : keys.at(-1)!);
    if (keys.length === 0) return;
    const members = await this.observe((s) => s.memberKeys({ ...this.scopeFilter, keys }));
    const gone = keys.filter((k) => !members.value.has(k));
    if (gone.length === 0) return;
    const registered = await this.deps.store.lookupPublished(this.job.table, gone);
    await this.publishTombstones(gone.map((key) => ({ key, observed: members.observed })), registered);
    await this.recordBatch('deletes', 1, { published: gone.length, bytes: 0, skipped: 0, failed: 0 }, null, startedAt);
    this.log.info({ deleted: gone.length }, 'rows gone from the replicated set published as tombstones');
  }

  /**
   * What no window will read: a row committed later than the safety buffer allows (its ModifiedOn is at or before a
   * window that already closed), a row restored with its original ModifiedOn after its delete was published, and a
   * row whose content, name or place changed while its ModifiedOn did not, after the overlap passed it. This sweep
   * walks the source's keys range by range (a cursor kept across runs, at most `lateSweepKeys` keys and
   * `verifySweepBytes` of content hashed by the database per poll), compares each with the registry — never
   * acknowledged, deleted, another ModifiedOn, or another digest — reports what differs loudly and publishes it:
   * such a change is detected and repaired, never silently lost.
   */
  private async sweepLateArrivals(window: Window): Promise<void> {
    if (this.job.lateSweepKeys === 0) return;
    const startedAt = new Date();
    const cursor = await this.deps.store.sweepCursor(this.job.table, 'late-arrivals');
    const range = await this.source((s) => s.readKeyStates({ ...this.scopeFilter, after: cursor, limit: this.job.lateSweepKeys, maxBytes: this.job.verifySweepBytes }));
    const states = range.states;
    await this.deps.store.setSweepCursor(this.job.table, range.endOfKeys ? null : states.at(-1)!.row.key, 'late-arrivals');
    const registered = await this.deps.store.lookupPublished(this.job.table, states.map((st) => st.row.key));
    const unseen = states.filter((st) => st.row.modifiedOn! > this.job.baselineTicks && unseenByWindows(st, registered.get(st.row.key), window));
    if (unseen.length === 0) return;
    const late = unseen.filter((st) => needsRepublish(st.row.modifiedOn!, registered.get(st.row.key)));
    this.log.warn({ keys: unseen.map((st) => st.row.key).slice(0, 20), late: late.length, unsignalled: unseen.length - late.length },
      'changes the windows could not see were found by the sweep and republished: late commits or restores (consider a larger safetyBufferMinutes), or changes that left ModifiedOn as it was');
    const rows = await this.observe((s) => s.readByKeys(unseen.map((st) => st.row.key)));
    const outcome = await this.publishPage(rows.value.map((row) => ({ row, observed: rows.observed })), window);
    await this.recordBatch('late-arrivals', 1, outcome, null, startedAt);
    this.counts.lateArrivals += outcome.published;
  }

  private async recordBatch(step: PollStep, batchNo: number, outcome: PageOutcome, lastPosition: Position | null, startedAt: Date): Promise<void> {
    await this.deps.store.recordBatch({
      runId: this.job.runId, table: this.job.table, scope: this.job.scope, step, batchNo,
      rows: outcome.published, bytes: outcome.bytes, skipped: outcome.skipped, failed: outcome.failed, lastPosition, startedAt, status: 'completed',
    });
  }

  private async publishMarkers(watermark: Ticks): Promise<void> {
    const partitions = await this.deps.publisher.partitionsOf(this.job.topic);
    const records = await Promise.all(Array.from({ length: partitions }, (_, partition) =>
      markerRecord(this.deps.codec, { table: this.job.table, tenant: this.job.tenant, scope: this.job.scope, watermark, runId: this.job.runId, partition })));
    await this.deps.publisher.send(this.job.topic, records);
  }

  private async renewLeaseIfDue(): Promise<void> {
    if (!this.renewal.due()) return;
    const renewed = await this.deps.store.renewLease(this.job.table, this.job.scope, this.job.owner, this.job.leaseSeconds);
    if (!renewed) throw new HighwaterError('LEASE_HELD', `lost the lease on ${this.job.table} (scope ${this.job.scope}); stopping before publishing more`);
    this.renewal.renewed();
  }

  private throwIfStopping(): void {
    if (this.deps.signal?.aborted) throw new HighwaterError('STOPPED', `stopped by a shutdown signal between batches; resume run ${this.job.runId} to continue`);
  }

  /** One observation of the source (serialised and stamped by the control store), retried like any source call. */
  private observe<T>(read: (s: SourceConnector) => Promise<T>): Promise<{ value: T; observed: Ticks }> {
    return this.source((s) => this.deps.store.observe(this.job.table, () => read(s)));
  }

  /** Source calls are retried with backoff when the failure is retriable (connection lost, deadlock…). */
  private source<T>(call: (s: SourceConnector) => Promise<T>): Promise<T> {
    return withRetry(() => call(this.deps.source), this.deps.retry, {
      onRetry: ({ attempt, delayMs, error }) => this.log.warn({ attempt, delayMs, err: error }, 'source call failed; retrying'),
      ...(this.deps.signal ? { signal: this.deps.signal } : {}),
    });
  }
}
