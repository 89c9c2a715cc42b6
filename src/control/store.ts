import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { readMigrations, runMigrations, type MigrationResult } from '../db/migrate.js';
import { StatisticsPolicy } from '../db/statistics.js';
import { pgQuery, pgRollback, pgRun, pgTransaction } from '../db/postgres.js';
import type { Position, Ticks } from '../contract.js';
import { classifyDbError, HighwaterError } from '../errors.js';
import { assertIdentifier } from '../sql/ident.js';
import { controlMigrations } from './migrate.js';
import {
  analyzeRegistry, controlSql, latestPerKey,
  type BatchRecordInput, type BatchStatus, type BatchStep, type CompletedBatch, type DeletedKey, type EndClamp, type LeaseResult, type NewRun, type PendingRow, type PublishedEntry, type PublishedRow, type Query, type RowFailure, type RunBatchRecord, type RunDetail, type RunKind, type RunRecord, type RunStatus, type RunSummary, type RunTableRecord, type Sweep, type TableStart, type TableStatus, type TableStatusRecord, type WatermarkRecord,
} from './sql.js';

/**
 * The control store: the poller's durable state in a PostgreSQL schema (runs, per-table progress, batches,
 * high-watermarks and leases, the published-state registry, deletions, row failures, sweep cursors).
 *
 * The SQL is built by the pure functions of `controlSql` (sql.ts); `ControlStore` only executes them through the
 * one PostgreSQL executor (src/db/postgres.ts), which classifies driver errors once.
 * Everything that is a point in the source's time is ticks (bigint); times of the store's own bookkeeping
 * (run start, lease expiry) come from the database's clock, never from a host's.
 */

export * from './sql.js';

const { insertRun, finishRun, selectRun, selectRuns, selectRunTables, selectRunBatches, insertRunTable, reopenRunTable, selectRunTable, finishRunTable, insertBatch, selectLastCompletedBatch, resetRun, acquireLease, renewLease, releaseLease, advanceHighWater, selectWatermark, selectWatermarks, selectPublished, selectPublishedPathLocators, upsertPublished, registerPending, insertPendingSend, deletePendingSends, replayPendingSends, selectRegisteredKeysAfter, selectSweepCursor, upsertSweepCursor, markDeleted, setNullModifiedOn, lockObservations, nextObservation, insertRowFailure, selectRowFailures, selectStatus } = controlSql;
// ---------------------------------------------------------------------------------------------------------------
// Row mapping (pg returns bigint as string, read back with BigInt; never through Number for ticks)

type Row = Record<string, unknown>;

const str = (v: unknown): string => String(v);
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const bigOrNull = (v: unknown): Ticks | null => (v === null || v === undefined ? null : BigInt(v as string));
const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const dateOrNull = (v: unknown): Date | null => (v instanceof Date ? v : null);
const boolOrNull = (v: unknown): boolean | null => (typeof v === 'boolean' ? v : null);

function position(modifiedOn: unknown, key: unknown): Position | null {
  const ticksValue = bigOrNull(modifiedOn);
  return ticksValue === null || key === null || key === undefined ? null : { modifiedOn: ticksValue, key: String(key) };
}

function toRun(r: Row): RunRecord {
  return {
    runId: str(r.run_id), kind: str(r.kind), status: r.status as RunStatus, requestedBy: strOrNull(r.requested_by),
    host: strOrNull(r.host), pid: numOrNull(r.pid), startedAt: r.started_at as Date, finishedAt: dateOrNull(r.finished_at),
    error: strOrNull(r.error), options: (r.options ?? {}) as Record<string, unknown>,
  };
}

function toRunTable(r: Row): RunTableRecord {
  return {
    runId: str(r.run_id), table: str(r.table_name), scope: str(r.scope), tenant: str(r.tenant),
    window: { start: BigInt(r.window_start_ticks as string), end: BigInt(r.window_end_ticks as string) },
    endClampedBy: (r.end_clamped_by ?? null) as EndClamp | null, oldestTxVisible: boolOrNull(r.oldest_tx_visible),
    status: r.status as TableStatus, rowsPublished: num(r.rows_published), bytesPublished: num(r.bytes_published),
    rowsSkippedUnchanged: num(r.rows_skipped_unchanged), rowsFailed: num(r.rows_failed), tombstones: num(r.tombstones),
    rowsNullModifiedOn: numOrNull(r.rows_null_modified_on),
    startedAt: r.started_at as Date, finishedAt: dateOrNull(r.finished_at), error: strOrNull(r.error),
  };
}

function toBatch(r: Row): RunBatchRecord {
  return {
    runId: str(r.run_id), table: str(r.table_name), scope: str(r.scope), step: r.step as BatchStep, batchNo: num(r.batch_no),
    rows: num(r.rows), bytes: num(r.bytes), skipped: num(r.rows_skipped), failed: num(r.rows_failed),
    lastPosition: position(r.last_modified_on_ticks, r.last_key), startedAt: r.started_at as Date,
    finishedAt: r.finished_at as Date, status: r.status as BatchStatus, error: strOrNull(r.error),
  };
}

function toWatermark(r: Row): WatermarkRecord {
  return {
    table: str(r.table_name), scope: str(r.scope), tenant: str(r.tenant), highWater: bigOrNull(r.high_water_ticks),
    lastRunId: strOrNull(r.last_run_id), lastAdvancedAt: dateOrNull(r.last_advanced_at),
    leaseOwner: strOrNull(r.lease_owner), leaseExpiresAt: dateOrNull(r.lease_expires_at),
  };
}

function toStatus(r: Row): TableStatusRecord {
  return {
    table: str(r.table_name), scope: str(r.scope), tenant: str(r.tenant), highWater: bigOrNull(r.high_water_ticks),
    lastAdvancedAt: dateOrNull(r.last_advanced_at), advancedByRunId: strOrNull(r.advanced_by_run_id),
    leaseOwner: strOrNull(r.lease_owner), leaseExpiresAt: dateOrNull(r.lease_expires_at), leaseActive: r.lease_active === true,
    leaseSecondsLeft: numOrNull(r.lease_seconds_left),
    lastRunId: strOrNull(r.last_run_id), lastRunStatus: (r.run_status ?? null) as RunStatus | null,
    lastRunTableStatus: (r.table_status ?? null) as TableStatus | null, lastRunStartedAt: dateOrNull(r.last_run_started_at),
    lastRunError: strOrNull(r.last_run_error),
    lastRunFindings: r.last_run_id === null || r.last_run_id === undefined ? null : {
      lateArrivals: num(r.late_arrivals), rowsRefused: num(r.rows_failed), nullModifiedOn: numOrNull(r.rows_null_modified_on),
      endClampedBy: (r.end_clamped_by ?? null) as EndClamp | null, windowEnd: BigInt(r.window_end_ticks as string),
    },
  };
}

/** A registry entry's key and path, as written or read. */
export interface RegistryPath {
  readonly key: string;
  readonly pathLocator: string | null;
}

/** A registry entry found at a path. */
export interface PathOfKey extends RegistryPath {
  readonly pathLocator: string;
}

/** Told of registry writes of a table (ControlStore.watchRegistry); called synchronously, must not throw. */
export interface RegistryWatcher {
  written(rows: readonly RegistryPath[]): void;
  deleted(keys: readonly string[]): void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertRunId(runId: string): void {
  if (!UUID.test(runId)) throw new HighwaterError('RUN_NOT_FOUND', `no run ${JSON.stringify(runId)}: a run id is a UUID`);
}

function assertLeaseSeconds(leaseSeconds: number): void {
  if (!Number.isFinite(leaseSeconds) || leaseSeconds <= 0) {
    throw new HighwaterError('INTERNAL', `lease duration must be a positive number of seconds, not ${leaseSeconds}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The store: executes the builders, classifies driver errors once.

export interface ControlStoreOptions {
  /** Directory of the numbered control-store migrations; default schema/control of this repository. */
  readonly migrationsDir?: string;
}

const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../schema/control/', import.meta.url));

export class ControlStore {
  readonly schema: string;
  /** The observation of each table in progress in this process (see observe). */
  private readonly observing = new Map<string, Promise<void>>();
  private readonly migrationsDir: string;
  /** Per table, who is told of registry writes (watchRegistry). */
  private readonly watchers = new Map<string, Set<RegistryWatcher>>();
  /** Per table, how many registry notices were told (a table without watchers counts too). */
  private readonly changes = new Map<string, number>();
  /** Growth of the registry (`published`) since this process last analyzed it. */
  private readonly statistics = new StatisticsPolicy();

  constructor(private readonly pool: pg.Pool, schema: string, options: ControlStoreOptions = {}) {
    this.schema = assertIdentifier(schema, 'control store schema');
    this.migrationsDir = options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR;
  }

  /** Creates or upgrades the control store schema; safe to run from several processes at once. */
  async migrate(): Promise<MigrationResult> {
    const scripts = await readMigrations(this.migrationsDir);
    return pgTransaction(this.pool, { context: `migrating schema ${this.schema} from ${this.migrationsDir}` }, (client) =>
      runMigrations(async (stmt: Query) => (await pgRun(client, stmt)).rows, controlMigrations(this.schema), scripts));
  }

  // --- runs ---

  async createRun(run: NewRun): Promise<string> {
    const q = insertRun(this.schema, { ...run, host: run.host ?? hostname(), pid: run.pid ?? process.pid });
    const { rows } = await this.exec(q, 'creating a run');
    return str(rows[0]?.run_id);
  }

  async finishRun(runId: string, status: RunStatus, error?: string | null): Promise<void> {
    assertRunId(runId);
    const { rowCount } = await this.exec(finishRun(this.schema, runId, status, error ?? null), `finishing run ${runId}`);
    if (!rowCount) throw runNotFound(runId);
  }

  /** The run with its tables and batches, read in one snapshot. */
  async getRun(runId: string): Promise<RunDetail> {
    assertRunId(runId);
    return this.transaction('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', `reading run ${runId}`, async (client) => {
      const context = `reading run ${runId}`;
      const run = (await this.exec(selectRun(this.schema, runId), context, client)).rows[0];
      if (!run) throw runNotFound(runId);
      const tables = await this.exec(selectRunTables(this.schema, runId), context, client);
      const batches = await this.exec(selectRunBatches(this.schema, runId), context, client);
      return { ...toRun(run), tables: tables.rows.map(toRunTable), batches: batches.rows.map(toBatch) };
    });
  }

  /** Latest runs first. */
  async listRuns(filter: { limit: number; status?: RunStatus }): Promise<RunSummary[]> {
    const { rows } = await this.exec(selectRuns(this.schema, filter), 'listing runs');
    return rows.map((r) => ({ ...toRun(r), tableCount: num(r.table_count), rowsPublished: num(r.rows_published), bytesPublished: num(r.bytes_published) }));
  }

  /** Forgets the run's batches, tables and row failures and marks it running, so it restarts from a fresh window. */
  async resetRun(runId: string): Promise<void> {
    assertRunId(runId);
    const { rowCount } = await this.exec(resetRun(this.schema, runId), `resetting run ${runId}`);
    if (!rowCount) throw runNotFound(runId);
  }

  // --- run tables and batches ---

  /**
   * Starts (or, on resume, reopens) a table of a run. The first call fixes the window; later calls for the same
   * run, table and scope return the stored row with its original window and `resumed: true`. A table that
   * already completed in this run keeps its status, so the caller can skip it.
   */
  async startTable(runId: string, start: TableStart): Promise<RunTableRecord & { resumed: boolean }> {
    const context = `starting table ${start.table} (${start.scope}) of run ${runId}`;
    const inserted = await this.exec(insertRunTable(this.schema, runId, start), context);
    if (inserted.rows[0]) return { ...toRunTable(inserted.rows[0]), resumed: false };
    const reopened = await this.exec(reopenRunTable(this.schema, runId, start.table, start.scope), context);
    if (!reopened.rows[0]) throw new HighwaterError('INTERNAL', `${context}: the row vanished while it was reopened (a concurrent reset?)`);
    return { ...toRunTable(reopened.rows[0]), resumed: true };
  }

  async getTable(runId: string, table: string, scope: string): Promise<RunTableRecord | null> {
    const { rows } = await this.exec(selectRunTable(this.schema, runId, table, scope), `reading table ${table} of run ${runId}`);
    return rows[0] ? toRunTable(rows[0]) : null;
  }

  /**
   * Sets the outcome of a table of a run; false when the run has no such table (it failed before startTable,
   * e.g. because another poller held the lease), in which case nothing is written.
   */
  async finishTable(runId: string, table: string, scope: string, outcome: { status: TableStatus; error?: string | null }): Promise<boolean> {
    const q = finishRunTable(this.schema, runId, table, scope, outcome.status, outcome.error ?? null);
    const { rowCount } = await this.exec(q, `finishing table ${table} of run ${runId}`);
    return (rowCount ?? 0) > 0;
  }

  /**
   * Records a batch and adds its counts to the table's row, atomically. Returns false when that batch was
   * already recorded as completed (a repeated call), in which case nothing changes.
   */
  async recordBatch(batch: BatchRecordInput): Promise<boolean> {
    const { rows } = await this.exec(insertBatch(this.schema, batch), `recording batch ${batch.step}#${batch.batchNo} of ${batch.table} in run ${batch.runId}`);
    return num(rows[0]?.recorded) > 0;
  }

  /** The most advanced completed batch (by step order, then batch number), or null when none completed. */
  async lastCompletedBatch(runId: string, table: string, scope: string): Promise<CompletedBatch | null> {
    const { rows } = await this.exec(selectLastCompletedBatch(this.schema, runId, table, scope), `reading progress of ${table} in run ${runId}`);
    const r = rows[0];
    return r ? { step: r.step as BatchStep, batchNo: num(r.batch_no), lastPosition: position(r.last_modified_on_ticks, r.last_key) } : null;
  }

  // --- leases and high-watermarks ---

  /** Atomically takes the lease of a table and scope when free, expired (database clock) or already ours. */
  async acquireLease(table: string, scope: string, tenant: string, owner: string, leaseSeconds: number): Promise<LeaseResult> {
    assertLeaseSeconds(leaseSeconds);
    const context = `acquiring the lease of ${table} (${scope})`;
    const taken = await this.exec(acquireLease(this.schema, table, scope, tenant, owner, leaseSeconds), context);
    const row = taken.rows[0];
    if (row) return { acquired: true, holder: owner, expiresAt: dateOrNull(row.lease_expires_at), highWater: bigOrNull(row.high_water_ticks) };
    const current = (await this.exec(selectWatermark(this.schema, table, scope), context)).rows[0];
    const w = current ? toWatermark(current) : null;
    return { acquired: false, holder: w?.leaseOwner ?? null, expiresAt: w?.leaseExpiresAt ?? null, highWater: w?.highWater ?? null };
  }

  /** Extends our unexpired lease; false when it expired or another owner holds it (call acquireLease to retake it). */
  async renewLease(table: string, scope: string, owner: string, leaseSeconds: number): Promise<boolean> {
    assertLeaseSeconds(leaseSeconds);
    const { rowCount } = await this.exec(renewLease(this.schema, table, scope, owner, leaseSeconds), `renewing the lease of ${table} (${scope})`);
    return (rowCount ?? 0) > 0;
  }

  /** Gives the lease up if `owner` holds it; false when it did not. */
  async releaseLease(table: string, scope: string, owner: string): Promise<boolean> {
    const { rowCount } = await this.exec(releaseLease(this.schema, table, scope, owner), `releasing the lease of ${table} (${scope})`);
    return (rowCount ?? 0) > 0;
  }

  /**
   * Moves the high-watermark to `ticks` if that is forward; true when `owner` holds an unexpired lease (the
   * watermark is then at least `ticks`), false when the lease was lost and nothing changed.
   */
  async advanceHighWater(table: string, scope: string, owner: string, ticksValue: Ticks, runId: string): Promise<boolean> {
    const { rowCount } = await this.exec(advanceHighWater(this.schema, table, scope, owner, ticksValue, runId), `advancing the high-watermark of ${table} (${scope})`);
    return (rowCount ?? 0) > 0;
  }

  async watermark(table: string, scope: string): Promise<WatermarkRecord | null> {
    const { rows } = await this.exec(selectWatermark(this.schema, table, scope), `reading the high-watermark of ${table} (${scope})`);
    return rows[0] ? toWatermark(rows[0]) : null;
  }

  async watermarks(): Promise<WatermarkRecord[]> {
    const { rows } = await this.exec(selectWatermarks(this.schema), 'listing high-watermarks');
    return rows.map(toWatermark);
  }

  // --- the published-state registry ---

  async lookupPublished(table: string, keys: readonly string[]): Promise<Map<string, PublishedEntry>> {
    const found = new Map<string, PublishedEntry>();
    if (keys.length === 0) return found;
    const { rows } = await this.exec(selectPublished(this.schema, table, keys), `looking up published versions of ${table}`);
    for (const r of rows) {
      found.set(str(r.key), {
        modifiedOn: bigOrNull(r.modified_on_ticks), observed: bigOrNull(r.observed_ticks),
        contentSha256: (r.content_sha256 ?? null) as Buffer | null, digest: (r.row_digest ?? null) as Buffer | null,
        pathLocator: strOrNull(r.path_locator), chunkCount: numOrNull(r.chunk_count), deleted: r.deleted === true,
        acked: r.acked !== false, maxSentModifiedOn: bigOrNull(r.max_sent_modified_on_ticks),
      });
    }
    return found;
  }

  /** Those of `pathLocators` that belong to a registered, acknowledged, not deleted row. */
  async publishedPathLocators(table: string, pathLocators: readonly string[]): Promise<Set<string>> {
    return new Set((await this.publishedAtPaths(table, pathLocators)).map((r) => r.pathLocator));
  }

  /**
   * The registered, acknowledged, not deleted keys at these paths, with their paths. `onFound` runs with them as
   * soon as they are read, unless this store told of a registry change of the table meanwhile (the answer may be
   * older than that change); a watcher of the table may record them (see watchRegistry).
   */
  async publishedAtPaths(table: string, pathLocators: readonly string[], onFound?: (rows: readonly PathOfKey[]) => void): Promise<PathOfKey[]> {
    if (pathLocators.length === 0) return [];
    const before = this.registryChanges(table);
    const { rows } = await this.exec(selectPublishedPathLocators(this.schema, table, pathLocators), `looking up published parents of ${table}`);
    const found = rows.map((r) => ({ key: str(r.key), pathLocator: str(r.path_locator) }));
    // A change told meanwhile may have come after the lookup's snapshot, and its notice before this answer: then
    // the answer may be stale, and nothing is learned from it.
    if (this.registryChanges(table) === before) onFound?.(found);
    return found;
  }

  /**
   * Registers acknowledged versions (one statement); a key's version never moves backwards. Returns rows written.
   * The table's watchers learn which rows were written (watchRegistry), then `onWritten` runs with them, at once,
   * unless another change of the table was told while this statement ran (it may have overtaken this one).
   */
  async recordPublished(table: string, runId: string, rows: readonly PublishedRow[], onWritten?: (written: readonly RegistryPath[]) => void): Promise<number> {
    if (rows.length === 0) return 0;
    const before = this.registryChanges(table);
    const { rows: written } = await this.exec(upsertPublished(this.schema, table, runId, latestPerKey(rows)), `registering published rows of ${table}`);
    const paths = written.map((r) => ({ key: str(r.key), pathLocator: strOrNull(r.path_locator) }));
    // Another change told while this one ran may have overtaken it (a delete of the same key): onWritten only when none was.
    const alone = this.registryChanges(table) === before;
    this.tell(table, (w) => w.written(paths));
    if (alone) onWritten?.(paths);
    return paths.length;
  }

  /**
   * Tells `watcher` of every change this store makes to the registry entries of `table` that can make a key stop
   * being published at its path: acknowledged versions written (with their path: a key may move), and keys
   * deleted (before the statement and after it). Pending registrations are not told: they keep an acknowledged
   * row acknowledged. Returns the function that stops watching. Changes made by other processes are not seen.
   */
  private tell(table: string, notice: (w: RegistryWatcher) => void): void {
    this.changes.set(table, this.registryChanges(table) + 1);
    for (const w of this.watchers.get(table) ?? []) notice(w);
  }

  /** Notices told so far for `table` (see publishedAtPaths and recordPublished). */
  private registryChanges(table: string): number {
    return this.changes.get(table) ?? 0;
  }

  watchRegistry(table: string, watcher: RegistryWatcher): () => void {
    const set = this.watchers.get(table) ?? new Set<RegistryWatcher>();
    set.add(watcher);
    this.watchers.set(table, set);
    return () => {
      set.delete(watcher);
      if (set.size === 0 && this.watchers.get(table) === set) this.watchers.delete(table);
    };
  }

  /** Registers keys about to be sent (see PendingRow), before the send. */
  async registerPending(table: string, runId: string, rows: readonly PendingRow[]): Promise<void> {
    if (rows.length === 0) return;
    const unique = [...new Map(rows.map((r) => [r.key, r])).values()];
    await this.exec(registerPending(this.schema, table, runId, unique), `registering keys of ${table} before their send`);
    await this.refreshRegistryStatistics(unique.length);
  }

  /**
   * Registers keys about to be sent for the first time — keys the registry does not hold — in one row rather than
   * one pending entry each (migration 005): the delete sweep learns of them through replayPendingSends if the
   * poller stops before they are recorded. Returns the id to give clearPendingSends once every one of them is
   * recorded by recordPublished. Keys the registry holds must go through registerPending (their entries change).
   */
  async registerPendingSend(table: string, runId: string, rows: readonly PendingRow[]): Promise<string | null> {
    if (rows.length === 0) return null;
    const { rows: inserted } = await this.exec(insertPendingSend(this.schema, table, runId, rows), `registering keys of ${table} before their first send`);
    await this.refreshRegistryStatistics(rows.length);
    return String(inserted[0]!.id);
  }

  /** Forgets pending sends whose keys are all recorded in the registry now. */
  async clearPendingSends(table: string, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.exec(deletePendingSends(this.schema, table, ids), `clearing the pending sends of ${table}`);
  }

  /**
   * Turns the pending sends a stopped poller left for `table` into pending registry entries (as registerPending
   * would have written them) and deletes them, atomically. Run by whoever takes a lease of the table, before it
   * reads or sweeps anything. Returns the keys registered.
   */
  async replayPendingSends(table: string): Promise<number> {
    const { rowCount } = await this.exec(replayPendingSends(this.schema, table), `registering the pending sends left of ${table}`);
    return rowCount ?? 0;
  }

  /**
   * Analyzes the registry once this process has grown it enough (StatisticsPolicy). Without statistics the
   * page's lookups (`key = ANY(…)`, `path_locator = ANY(…)` of hundreds of values) were planned as matching every
   * row: a scan of the whole registry per page, 75 ms a page at 100k rows. Best effort (StatisticsPolicy.analyzeIfDue).
   */
  private async refreshRegistryStatistics(written: number): Promise<void> {
    await this.statistics.analyzeIfDue('published', written, () => this.exec(analyzeRegistry(this.schema), 'analyzing the registry'));
  }

  /**
   * One observation of a table's source (see contract.ts): `read` runs while this table's observation row is
   * locked, so observations of a table never overlap, and the stamp taken after it is greater than every earlier
   * one. Call it once per attempt (inside a retry, never around one): the lock is held for the whole read.
   */
  async observe<T>(table: string, read: () => Promise<T>): Promise<{ value: T; observed: Ticks }> {
    // One observation per table at a time in this process: waiters queue here rather than each holding a
    // connection while they wait for the row lock.
    const previous = this.observing.get(table) ?? Promise.resolve();
    const turn = previous.then(() => this.observeNow(table, read));
    const settled = turn.then(() => undefined, () => undefined);
    this.observing.set(table, settled);
    void settled.then(() => {
      if (this.observing.get(table) === settled) this.observing.delete(table);
    });
    return turn;
  }

  /**
   * BEGIN goes out with the lock, and COMMIT with the stamp: node-pg sends a queued statement as soon as the one
   * before it completes, so the observation waits for the database four times but for this process's event loop
   * twice (under load, each turn of a busy loop cost more than the statement). The read starts only once BEGIN and
   * the lock both succeeded. A stamp that fails leaves the transaction aborted, and the COMMIT queued behind it ends
   * it as a rollback; the stamp is returned only when the COMMIT succeeded too.
   */
  private async observeNow<T>(table: string, read: () => Promise<T>): Promise<{ value: T; observed: Ticks }> {
    const context = `observing the source of ${table}`;
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
    try {
      const begun = client.query('BEGIN');
      begun.catch(() => undefined); // awaited below, after the lock queued behind it
      const locked = this.exec(lockObservations(this.schema, table), `locking the observations of ${table}`, client);
      await begun;
      await locked;
      const value = await read();
      const stamped = this.exec(nextObservation(this.schema, table), `stamping an observation of ${table}`, client);
      stamped.catch(() => undefined); // awaited below, with the COMMIT queued behind it
      const committed = client.query('COMMIT');
      committed.catch(() => undefined);
      const { rows } = await stamped;
      await committed;
      client.release();
      return { value, observed: BigInt(rows[0]!.observed as string) };
    } catch (thrown) {
      await pgRollback(client);
      throw classifyDbError(thrown, context);
    }
  }

  async recordNullModifiedOn(runId: string, table: string, scope: string, count: number): Promise<void> {
    await this.exec(setNullModifiedOn(this.schema, runId, table, scope, count), `recording NULL ModifiedOn rows of ${table}`);
  }

  /**
   * Registered, not deleted keys strictly after `afterKey` (null: from the start), at most `limit`, in byte order
   * of the key (COLLATE "C"), for the delete sweep.
   */
  async registeredKeysAfter(table: string, afterKey: string | null, limit: number): Promise<string[]> {
    const { rows } = await this.exec(selectRegisteredKeysAfter(this.schema, table, afterKey, limit), `reading registered keys of ${table}`);
    return rows.map((r) => str(r.key));
  }

  async sweepCursor(table: string, sweep: Sweep = 'deletes'): Promise<string | null> {
    const { rows } = await this.exec(selectSweepCursor(this.schema, table, sweep), `reading the ${sweep} sweep cursor of ${table}`);
    return rows[0] ? strOrNull(rows[0].last_key) : null;
  }

  async setSweepCursor(table: string, key: string | null, sweep: Sweep = 'deletes'): Promise<void> {
    await this.exec(upsertSweepCursor(this.schema, table, key, sweep), `saving the ${sweep} sweep cursor of ${table}`);
  }

  /** Marks keys deleted in the registry and logs them, atomically; returns the keys newly recorded as deleted. */
  async recordDeletions(table: string, runId: string, rows: readonly DeletedKey[]): Promise<string[]> {
    if (rows.length === 0) return [];
    const keys = rows.map((r) => r.key);
    const tell = (): void => this.tell(table, (w) => w.deleted(keys));
    tell();
    try {
      const { rows: logged } = await this.exec(markDeleted(this.schema, table, runId, latestPerKey(rows)), `recording deletions of ${table}`);
      return logged.map((r) => str(r.key));
    } finally {
      tell(); // a watcher may have learned a key between the two (a lookup or a checkpoint that ended meanwhile)
    }
  }

  async recordRowFailure(runId: string, table: string, key: string, modifiedOn: Ticks | null, reason: string): Promise<void> {
    await this.exec(insertRowFailure(this.schema, runId, table, key, modifiedOn, reason), `recording a failed row of ${table} in run ${runId}`);
  }

  async rowFailures(runId: string): Promise<RowFailure[]> {
    const { rows } = await this.exec(selectRowFailures(this.schema, runId), `reading failed rows of run ${runId}`);
    return rows.map((r) => ({
      id: num(r.id), runId: str(r.run_id), table: str(r.table_name), key: str(r.key),
      modifiedOn: bigOrNull(r.modified_on_ticks), reason: str(r.reason), recordedAt: r.recorded_at as Date,
    }));
  }

  // --- status ---

  /** Per table and scope: high-watermark, lease, and the latest run that worked on it. */
  async status(): Promise<TableStatusRecord[]> {
    const { rows } = await this.exec(selectStatus(this.schema), 'reading the control store status');
    return rows.map(toStatus);
  }

  // --- execution ---

  private async exec(q: Query, context: string, on: pg.ClientBase | pg.Pool = this.pool): Promise<pg.QueryResult<Row>> {
    return pgQuery<Row>(on, context, q);
  }

  private async transaction<T>(begin: string, context: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return pgTransaction(this.pool, { context, begin }, work);
  }
}

function runNotFound(runId: string): HighwaterError {
  return new HighwaterError('RUN_NOT_FOUND', `no run ${runId} in the control store`);
}
