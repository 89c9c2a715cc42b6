import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { STEPS, type Position, type Ticks, type Window } from '../contract.js';
import { classifyDbError, HighwaterError } from '../errors.js';
import { assertIdentifier, quotePg } from '../sql/ident.js';
import { applyMigrations, rollbackQuietly, type MigrationResult } from './migrate.js';

/**
 * The control store: the poller's durable state in a PostgreSQL schema (runs, per-table progress, batches,
 * high-watermarks and leases, the published-state registry, deletions, row failures, sweep cursors).
 *
 * The SQL is built by the pure functions of `controlSql` (schema quoted, every value a parameter, ticks sent as
 * decimal strings and read back with BigInt); `ControlStore` only executes them and classifies driver errors once.
 * Everything that is a point in the source's time is ticks (bigint); times of the store's own bookkeeping
 * (run start, lease expiry) come from the database's clock, never from a host's.
 */

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary

/** Scope of a table poll covering every business unit. */
export const ALL_SCOPES = '*';

/** Steps recorded as batches, in the order they run; `lastCompletedBatch` picks the latest by this order. */
export const BATCH_STEPS = [...STEPS, 'nulls', 'deletes', 'late-arrivals', 'backfill'] as const;
export type BatchStep = (typeof BATCH_STEPS)[number];

export type RunKind = 'poll' | 'backfill' | 'rebuild' | 'reconcile' | 'demo';
export type RunStatus = 'running' | 'completed' | 'failed' | 'abandoned';
export type TableStatus = 'running' | 'completed' | 'failed' | 'skipped' | 'abandoned';
export type BatchStatus = 'completed' | 'failed';
/** Why a window end is earlier than `sourceNow − buffer`. */
export type EndClamp = 'oldest-open-transaction';

export interface Query {
  readonly text: string;
  readonly values: readonly unknown[];
}

export interface NewRun {
  readonly kind: RunKind;
  readonly requestedBy?: string | null;
  readonly options?: Readonly<Record<string, unknown>>;
  /** Defaults to this host's name and process id. */
  readonly host?: string;
  readonly pid?: number;
}

export interface RunRecord {
  readonly runId: string;
  readonly kind: string;
  readonly status: RunStatus;
  readonly requestedBy: string | null;
  readonly host: string | null;
  readonly pid: number | null;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
  readonly error: string | null;
  readonly options: Record<string, unknown>;
}

export interface RunSummary extends RunRecord {
  readonly tableCount: number;
  readonly rowsPublished: number;
  readonly bytesPublished: number;
}

export interface TableStart {
  readonly table: string;
  readonly scope: string;
  readonly tenant: string;
  readonly window: Window;
  readonly endClampedBy: EndClamp | null;
  /** Whether the source showed this login its open transactions (null when not asked). */
  readonly oldestTxVisible: boolean | null;
}

export interface RunTableRecord {
  readonly runId: string;
  readonly table: string;
  readonly scope: string;
  readonly tenant: string;
  readonly window: Window;
  readonly endClampedBy: EndClamp | null;
  readonly oldestTxVisible: boolean | null;
  readonly status: TableStatus;
  readonly rowsPublished: number;
  readonly bytesPublished: number;
  readonly rowsSkippedUnchanged: number;
  readonly rowsFailed: number;
  readonly tombstones: number;
  /** In-scope source rows with a NULL ModifiedOn seen by this run (null when not counted). */
  readonly rowsNullModifiedOn: number | null;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
  readonly error: string | null;
}

export interface BatchRecordInput {
  readonly runId: string;
  readonly table: string;
  readonly scope: string;
  readonly step: BatchStep;
  readonly batchNo: number;
  /** Rows published (tombstones in the `deletes` step). */
  readonly rows: number;
  readonly bytes: number;
  /** Rows read but not published because the registry already held that version. */
  readonly skipped: number;
  /** Rows refused (recorded with recordRowFailure); default 0. */
  readonly failed?: number;
  /** Position of the last row of the batch: where a resumed run continues. */
  readonly lastPosition: Position | null;
  readonly startedAt: Date;
  readonly status: BatchStatus;
  readonly error?: string | null;
}

export interface RunBatchRecord {
  readonly runId: string;
  readonly table: string;
  readonly scope: string;
  readonly step: BatchStep;
  readonly batchNo: number;
  readonly rows: number;
  readonly bytes: number;
  readonly skipped: number;
  readonly failed: number;
  readonly lastPosition: Position | null;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly status: BatchStatus;
  readonly error: string | null;
}

export interface RunDetail extends RunRecord {
  readonly tables: readonly RunTableRecord[];
  readonly batches: readonly RunBatchRecord[];
}

export interface CompletedBatch {
  readonly step: BatchStep;
  readonly batchNo: number;
  readonly lastPosition: Position | null;
}

export interface LeaseResult {
  readonly acquired: boolean;
  /** The owner now holding the lease (this owner when acquired), or null when nobody does. */
  readonly holder: string | null;
  readonly expiresAt: Date | null;
  readonly highWater: Ticks | null;
}

export interface WatermarkRecord {
  readonly table: string;
  readonly scope: string;
  readonly tenant: string;
  readonly highWater: Ticks | null;
  readonly lastRunId: string | null;
  readonly lastAdvancedAt: Date | null;
  readonly leaseOwner: string | null;
  readonly leaseExpiresAt: Date | null;
}

/** What the registry holds for a key: its last acknowledged version, or a first version still in flight. */
export interface PublishedEntry {
  readonly modifiedOn: Ticks | null;
  /** The observation of the registered version, or of the delete once deleted; null before contract v2. */
  readonly observed: Ticks | null;
  readonly contentSha256: Buffer | null;
  /** SHA-256 of the published columns (src/poller/build.ts rowDigest); null before contract v2. */
  readonly digest: Buffer | null;
  readonly pathLocator: string | null;
  readonly chunkCount: number | null;
  readonly deleted: boolean;
  /** False while the key's first version (or its first after a delete) is in flight. */
  readonly acked: boolean;
  /** The greatest ModifiedOn ever sent for the key since its last delete. */
  readonly maxSentModifiedOn: Ticks | null;
}

export interface PublishedRow {
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly observed: Ticks;
  readonly digest: Buffer;
  readonly contentSha256: Buffer | null;
  readonly pathLocator: string | null;
  readonly chunkCount: number | null;
}

/** A key about to be sent: registered first, so the delete sweep checks it whatever happens after the send. */
export interface PendingRow {
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly pathLocator: string | null;
}

/** A registered key the sweep found gone from the replicated set, and when it was seen gone. */
export interface DeletedKey {
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly observed: Ticks;
}

export interface RowFailure {
  readonly id: number;
  readonly runId: string;
  readonly table: string;
  readonly key: string;
  readonly modifiedOn: Ticks | null;
  readonly reason: string;
  readonly recordedAt: Date;
}

export interface TableStatusRecord {
  readonly table: string;
  readonly scope: string;
  readonly tenant: string;
  readonly highWater: Ticks | null;
  readonly lastAdvancedAt: Date | null;
  /** The run that last advanced the high-watermark. */
  readonly advancedByRunId: string | null;
  readonly leaseOwner: string | null;
  readonly leaseExpiresAt: Date | null;
  /** Whether the lease is unexpired by the database's clock. */
  readonly leaseActive: boolean;
  /** The latest run that worked on this table and scope, whatever its outcome. */
  readonly lastRunId: string | null;
  readonly lastRunStatus: RunStatus | null;
  readonly lastRunTableStatus: TableStatus | null;
  readonly lastRunStartedAt: Date | null;
  readonly lastRunError: string | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Pure SQL builders: each returns { text, values }; the schema is validated and quoted, values are parameters.

const ticks = (t: Ticks): string => t.toString();
const ticksOrNull = (t: Ticks | null | undefined): string | null => (t === null || t === undefined ? null : t.toString());
const t = (schema: string, table: string): string => `${quotePg(schema)}.${table}`;

function jsonText(value: unknown): string {
  return JSON.stringify(value ?? {}, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

function insertRun(schema: string, run: NewRun & { host: string; pid: number }): Query {
  return {
    text: `INSERT INTO ${t(schema, 'runs')} (kind, requested_by, host, pid, options) VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING run_id`,
    values: [run.kind, run.requestedBy ?? null, run.host, run.pid, jsonText(run.options)],
  };
}

function finishRun(schema: string, runId: string, status: RunStatus, error: string | null): Query {
  return {
    text: `UPDATE ${t(schema, 'runs')} SET status = $2::text, error = $3::text, finished_at = CASE WHEN $2::text = 'running' THEN NULL ELSE clock_timestamp() END WHERE run_id = $1 RETURNING run_id`,
    values: [runId, status, error],
  };
}

function selectRun(schema: string, runId: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'runs')} WHERE run_id = $1`, values: [runId] };
}

function selectRuns(schema: string, filter: { limit: number; status?: RunStatus | undefined }): Query {
  const where = filter.status === undefined ? '' : 'WHERE r.status = $2';
  return {
    text: `SELECT r.*, s.table_count, s.rows_published, s.bytes_published FROM ${t(schema, 'runs')} r
      CROSS JOIN LATERAL (SELECT count(*) AS table_count, coalesce(sum(rows_published), 0) AS rows_published,
        coalesce(sum(bytes_published), 0) AS bytes_published FROM ${t(schema, 'run_tables')} WHERE run_id = r.run_id) s
      ${where} ORDER BY r.started_at DESC, r.run_id LIMIT $1`,
    values: filter.status === undefined ? [filter.limit] : [filter.limit, filter.status],
  };
}

function selectRunTables(schema: string, runId: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'run_tables')} WHERE run_id = $1 ORDER BY started_at, table_name, scope`, values: [runId] };
}

function selectRunBatches(schema: string, runId: string): Query {
  return {
    text: `SELECT * FROM ${t(schema, 'run_batches')} WHERE run_id = $1
      ORDER BY table_name, scope, array_position($2::text[], step), batch_no`,
    values: [runId, [...BATCH_STEPS]],
  };
}

function insertRunTable(schema: string, runId: string, s: TableStart): Query {
  return {
    text: `INSERT INTO ${t(schema, 'run_tables')}
      (run_id, table_name, scope, tenant, window_start_ticks, window_end_ticks, end_clamped_by, oldest_tx_visible)
      VALUES ($1, $2, $3, $4, $5::bigint, $6::bigint, $7, $8)
      ON CONFLICT (run_id, table_name, scope) DO NOTHING RETURNING *`,
    values: [runId, s.table, s.scope, s.tenant, ticks(s.window.start), ticks(s.window.end), s.endClampedBy, s.oldestTxVisible],
  };
}

/** Reopens an existing table row on resume; its window is kept. A table that completed stays completed. */
function reopenRunTable(schema: string, runId: string, table: string, scope: string): Query {
  return {
    text: `UPDATE ${t(schema, 'run_tables')} SET
        status = CASE WHEN status = 'completed' THEN status ELSE 'running' END,
        finished_at = CASE WHEN status = 'completed' THEN finished_at ELSE NULL END,
        error = CASE WHEN status = 'completed' THEN error ELSE NULL END
      WHERE run_id = $1 AND table_name = $2 AND scope = $3 RETURNING *`,
    values: [runId, table, scope],
  };
}

function selectRunTable(schema: string, runId: string, table: string, scope: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'run_tables')} WHERE run_id = $1 AND table_name = $2 AND scope = $3`, values: [runId, table, scope] };
}

function finishRunTable(schema: string, runId: string, table: string, scope: string, status: TableStatus, error: string | null): Query {
  return {
    text: `UPDATE ${t(schema, 'run_tables')} SET status = $4::text, error = $5::text,
        finished_at = CASE WHEN $4::text = 'running' THEN NULL ELSE clock_timestamp() END
      WHERE run_id = $1 AND table_name = $2 AND scope = $3 RETURNING run_id`,
    values: [runId, table, scope, status, error],
  };
}

/**
 * Records a batch and adds its counts to its run_tables row, in one statement (so one transaction). A batch
 * number already recorded as completed is left alone and counted once: recording it again (a retried call
 * whose first answer was lost) changes nothing. A failed batch is replaced when the batch is redone.
 * Counts of failed batches are not added: they were not acknowledged.
 */
function insertBatch(schema: string, b: BatchRecordInput): Query {
  return {
    text: `WITH b AS (
        INSERT INTO ${t(schema, 'run_batches')} AS x (run_id, table_name, scope, step, batch_no, rows, bytes, rows_skipped,
          rows_failed, last_modified_on_ticks, last_key, started_at, status, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7::bigint, $8, $9, $10::bigint, $11, $12, $13, $14)
        ON CONFLICT (run_id, table_name, scope, step, batch_no) DO UPDATE SET rows = EXCLUDED.rows, bytes = EXCLUDED.bytes,
          rows_skipped = EXCLUDED.rows_skipped, rows_failed = EXCLUDED.rows_failed,
          last_modified_on_ticks = EXCLUDED.last_modified_on_ticks, last_key = EXCLUDED.last_key,
          started_at = EXCLUDED.started_at, finished_at = clock_timestamp(), status = EXCLUDED.status, error = EXCLUDED.error
        WHERE x.status <> 'completed'
        RETURNING x.run_id, x.table_name, x.scope, x.step, x.rows, x.bytes, x.rows_skipped, x.rows_failed, x.status
      ), counted AS (
        UPDATE ${t(schema, 'run_tables')} r SET
          rows_published = r.rows_published + CASE WHEN b.step = 'deletes' THEN 0 ELSE b.rows END,
          tombstones = r.tombstones + CASE WHEN b.step = 'deletes' THEN b.rows ELSE 0 END,
          bytes_published = r.bytes_published + b.bytes,
          rows_skipped_unchanged = r.rows_skipped_unchanged + b.rows_skipped,
          rows_failed = r.rows_failed + b.rows_failed
        FROM b WHERE r.run_id = b.run_id AND r.table_name = b.table_name AND r.scope = b.scope AND b.status = 'completed'
        RETURNING 1
      )
      SELECT (SELECT count(*) FROM b)::int AS recorded, (SELECT count(*) FROM counted)::int AS counted`,
    values: [
      b.runId, b.table, b.scope, b.step, b.batchNo, b.rows, String(b.bytes), b.skipped, b.failed ?? 0,
      ticksOrNull(b.lastPosition?.modifiedOn), b.lastPosition?.key ?? null, b.startedAt, b.status, b.error ?? null,
    ],
  };
}

function selectLastCompletedBatch(schema: string, runId: string, table: string, scope: string): Query {
  return {
    text: `SELECT step, batch_no, last_modified_on_ticks, last_key FROM ${t(schema, 'run_batches')}
      WHERE run_id = $1 AND table_name = $2 AND scope = $3 AND status = 'completed'
      ORDER BY array_position($4::text[], step) DESC, batch_no DESC LIMIT 1`,
    values: [runId, table, scope, [...BATCH_STEPS]],
  };
}

/** Forgets a run's progress (batches, tables, row failures) and marks it running again, in one statement. */
function resetRun(schema: string, runId: string): Query {
  return {
    text: `WITH batches AS (DELETE FROM ${t(schema, 'run_batches')} WHERE run_id = $1),
        tables AS (DELETE FROM ${t(schema, 'run_tables')} WHERE run_id = $1),
        failures AS (DELETE FROM ${t(schema, 'row_failures')} WHERE run_id = $1)
      UPDATE ${t(schema, 'runs')} SET status = 'running', finished_at = NULL, error = NULL WHERE run_id = $1 RETURNING run_id`,
    values: [runId],
  };
}

const leaseInterval = (param: string): string => `clock_timestamp() + ${param}::double precision * interval '1 second'`;

/** Takes the lease when it is free, expired (by the database clock) or already ours; returns the row only then. */
function acquireLease(schema: string, table: string, scope: string, tenant: string, owner: string, leaseSeconds: number): Query {
  return {
    text: `INSERT INTO ${t(schema, 'watermarks')} AS w (table_name, scope, tenant, lease_owner, lease_expires_at)
      VALUES ($1, $2, $3, $4, ${leaseInterval('$5')})
      ON CONFLICT (table_name, scope) DO UPDATE SET tenant = EXCLUDED.tenant, lease_owner = EXCLUDED.lease_owner,
        lease_expires_at = EXCLUDED.lease_expires_at
      WHERE w.lease_owner IS NULL OR w.lease_expires_at < clock_timestamp() OR w.lease_owner = EXCLUDED.lease_owner
      RETURNING lease_owner, lease_expires_at, high_water_ticks`,
    values: [table, scope, tenant, owner, leaseSeconds],
  };
}

function renewLease(schema: string, table: string, scope: string, owner: string, leaseSeconds: number): Query {
  return {
    text: `UPDATE ${t(schema, 'watermarks')} SET lease_expires_at = ${leaseInterval('$4')}
      WHERE table_name = $1 AND scope = $2 AND lease_owner = $3 AND lease_expires_at >= clock_timestamp() RETURNING lease_expires_at`,
    values: [table, scope, owner, leaseSeconds],
  };
}

function releaseLease(schema: string, table: string, scope: string, owner: string): Query {
  return {
    text: `UPDATE ${t(schema, 'watermarks')} SET lease_owner = NULL, lease_expires_at = NULL
      WHERE table_name = $1 AND scope = $2 AND lease_owner = $3 RETURNING table_name`,
    values: [table, scope, owner],
  };
}

/** Moves the high-watermark forward only (GREATEST), and only for the holder of an unexpired lease. */
function advanceHighWater(schema: string, table: string, scope: string, owner: string, to: Ticks, runId: string): Query {
  return {
    text: `UPDATE ${t(schema, 'watermarks')} SET
        last_advanced_at = CASE WHEN high_water_ticks IS NULL OR high_water_ticks < $4::bigint THEN clock_timestamp() ELSE last_advanced_at END,
        high_water_ticks = GREATEST(high_water_ticks, $4::bigint),
        last_run_id = $5
      WHERE table_name = $1 AND scope = $2 AND lease_owner = $3 AND lease_expires_at >= clock_timestamp()
      RETURNING high_water_ticks`,
    values: [table, scope, owner, ticks(to), runId],
  };
}

function selectWatermark(schema: string, table: string, scope: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'watermarks')} WHERE table_name = $1 AND scope = $2`, values: [table, scope] };
}

function selectWatermarks(schema: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'watermarks')} ORDER BY table_name, scope`, values: [] };
}

function selectPublished(schema: string, table: string, keys: readonly string[]): Query {
  return {
    text: `SELECT key, modified_on_ticks, observed_ticks, content_sha256, row_digest, path_locator, chunk_count, deleted, acked,
        max_sent_modified_on_ticks
      FROM ${t(schema, 'published')}
      WHERE table_name = $1 AND key = ANY($2::text[])`,
    values: [table, [...keys]],
  };
}

function selectPublishedPathLocators(schema: string, table: string, pathLocators: readonly string[]): Query {
  return {
    text: `SELECT DISTINCT path_locator FROM ${t(schema, 'published')}
      WHERE table_name = $1 AND path_locator = ANY($2::text[]) AND NOT deleted AND acked`,
    values: [table, [...pathLocators]],
  };
}

const MIN_TICKS = '(-9223372036854775808)::bigint';

/**
 * Batch upsert of acknowledged versions with unnest arrays, one statement for the whole batch. A key's registered
 * version only moves forward in the contract's order (ModifiedOn, NULL first, then observation); a pending entry
 * (first version in flight) or a deleted one is always replaced. The rows must have distinct keys (`latestPerKey`).
 */
function upsertPublished(schema: string, table: string, runId: string, rows: readonly PublishedRow[]): Query {
  return {
    text: `INSERT INTO ${t(schema, 'published')} AS p
        (table_name, key, modified_on_ticks, observed_ticks, content_sha256, row_digest, path_locator, chunk_count, deleted, acked,
         max_sent_modified_on_ticks, run_id)
      SELECT $1, r.key, r.modified_on_ticks, r.observed_ticks, r.content_sha256, r.row_digest, r.path_locator, r.chunk_count, false, true,
        r.modified_on_ticks, $2
      FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bytea[], $7::bytea[], $8::text[], $9::int[])
        AS r(key, modified_on_ticks, observed_ticks, content_sha256, row_digest, path_locator, chunk_count)
      ON CONFLICT (table_name, key) DO UPDATE SET modified_on_ticks = EXCLUDED.modified_on_ticks,
        observed_ticks = EXCLUDED.observed_ticks, content_sha256 = EXCLUDED.content_sha256, row_digest = EXCLUDED.row_digest,
        path_locator = EXCLUDED.path_locator, chunk_count = EXCLUDED.chunk_count, deleted = false, acked = true,
        max_sent_modified_on_ticks = GREATEST(p.max_sent_modified_on_ticks, EXCLUDED.modified_on_ticks),
        run_id = EXCLUDED.run_id, published_at = clock_timestamp()
      WHERE NOT p.acked OR p.deleted
        OR (coalesce(p.modified_on_ticks, ${MIN_TICKS}), coalesce(p.observed_ticks, p.modified_on_ticks, ${MIN_TICKS}))
           < (coalesce(EXCLUDED.modified_on_ticks, ${MIN_TICKS}), EXCLUDED.observed_ticks)`,
    values: [
      table, runId,
      rows.map((r) => r.key), rows.map((r) => ticksOrNull(r.modifiedOn)), rows.map((r) => ticks(r.observed)),
      rows.map((r) => r.contentSha256), rows.map((r) => r.digest), rows.map((r) => r.pathLocator), rows.map((r) => r.chunkCount),
    ],
  };
}

/**
 * Registers keys before they are sent: a new key (or one deleted before) becomes a pending entry the delete sweep
 * walks; every key's greatest sent ModifiedOn is raised. Versions already acknowledged are kept as they are.
 */
function registerPending(schema: string, table: string, runId: string, rows: readonly PendingRow[]): Query {
  return {
    text: `INSERT INTO ${t(schema, 'published')} AS p
        (table_name, key, modified_on_ticks, path_locator, deleted, acked, max_sent_modified_on_ticks, run_id)
      SELECT $1, r.key, r.modified_on_ticks, r.path_locator, false, false, r.modified_on_ticks, $2
      FROM unnest($3::text[], $4::bigint[], $5::text[]) AS r(key, modified_on_ticks, path_locator)
      ON CONFLICT (table_name, key) DO UPDATE SET
        max_sent_modified_on_ticks = GREATEST(p.max_sent_modified_on_ticks, EXCLUDED.max_sent_modified_on_ticks),
        acked = p.acked AND NOT p.deleted, deleted = false`,
    values: [table, runId, rows.map((r) => r.key), rows.map((r) => ticksOrNull(r.modifiedOn)), rows.map((r) => r.pathLocator)],
  };
}

function selectRegisteredKeysAfter(schema: string, table: string, afterKey: string | null, limit: number): Query {
  const after = afterKey === null ? '' : 'AND key > $3';
  return {
    text: `SELECT key FROM ${t(schema, 'published')}
      WHERE table_name = $1 AND NOT deleted ${after} ORDER BY key LIMIT $2`,
    values: afterKey === null ? [table, limit] : [table, limit, afterKey],
  };
}

/** The sweeps that walk a table key range by range across runs, each with its own cursor. */
export type Sweep = 'deletes' | 'late-arrivals' | 'nulls';

function selectSweepCursor(schema: string, table: string, sweep: Sweep): Query {
  return { text: `SELECT last_key FROM ${t(schema, 'sweep_cursors')} WHERE table_name = $1 AND sweep = $2`, values: [table, sweep] };
}

function upsertSweepCursor(schema: string, table: string, key: string | null, sweep: Sweep): Query {
  return {
    text: `INSERT INTO ${t(schema, 'sweep_cursors')} (table_name, sweep, last_key) VALUES ($1, $3, $2)
      ON CONFLICT (table_name, sweep) DO UPDATE SET last_key = EXCLUDED.last_key, updated_at = clock_timestamp()`,
    values: [table, key, sweep],
  };
}

/**
 * Marks registered keys deleted and logs each deletion, in one statement (so one transaction). A key is marked
 * only when it is not deleted yet and was registered at or before the delete's observation (as a delete covers
 * versions, src/events/version.ts), so repeating the call logs nothing twice. The greatest sent ModifiedOn starts afresh: what comes back later is a new life of the key.
 */
function markDeleted(schema: string, table: string, runId: string, rows: readonly DeletedKey[]): Query {
  return {
    text: `WITH d AS (
        UPDATE ${t(schema, 'published')} p SET deleted = true, acked = true, run_id = $2, published_at = clock_timestamp(),
          observed_ticks = r.observed_ticks, max_sent_modified_on_ticks = NULL
        FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS r(key, modified_on_ticks, observed_ticks)
        WHERE p.table_name = $1 AND p.key = r.key AND NOT p.deleted
          AND coalesce(p.observed_ticks, p.modified_on_ticks, ${MIN_TICKS}) <= r.observed_ticks
        RETURNING p.key, p.modified_on_ticks, r.observed_ticks
      )
      INSERT INTO ${t(schema, 'deletion_log')} (table_name, key, modified_on_ticks, observed_ticks, run_id)
      SELECT $1, d.key, d.modified_on_ticks, d.observed_ticks, $2 FROM d RETURNING key`,
    values: [table, runId, rows.map((r) => r.key), rows.map((r) => ticksOrNull(r.modifiedOn)), rows.map((r) => ticks(r.observed))],
  };
}

/** The in-scope rows with a NULL ModifiedOn that a run counted, on its run_tables row. */
function setNullModifiedOn(schema: string, runId: string, table: string, scope: string, count: number): Query {
  return {
    text: `UPDATE ${t(schema, 'run_tables')} SET rows_null_modified_on = $4 WHERE run_id = $1 AND table_name = $2 AND scope = $3 RETURNING run_id`,
    values: [runId, table, scope, count],
  };
}

/**
 * Observations of a table are serialised on its row here: the first statement of an observation locks it (creating
 * it when missing) for the rest of the control-store transaction, during which the source is read.
 */
function lockObservations(schema: string, table: string): Query {
  return {
    text: `INSERT INTO ${t(schema, 'observations')} AS o (table_name) VALUES ($1)
      ON CONFLICT (table_name) DO UPDATE SET table_name = EXCLUDED.table_name RETURNING last_observed_ticks`,
    values: [table],
  };
}

/** The next observation stamp: the clock in ticks, or one more than the last stamp when the clock is behind it. */
function nextObservation(schema: string, table: string): Query {
  return {
    text: `UPDATE ${t(schema, 'observations')} SET updated_at = clock_timestamp(),
        last_observed_ticks = GREATEST((extract(epoch from clock_timestamp()) * 10000000)::bigint, last_observed_ticks + 1)
      WHERE table_name = $1 RETURNING last_observed_ticks::text AS observed`,
    values: [table],
  };
}

function insertRowFailure(schema: string, runId: string, table: string, key: string, modifiedOn: Ticks | null, reason: string): Query {
  return {
    text: `INSERT INTO ${t(schema, 'row_failures')} (run_id, table_name, key, modified_on_ticks, reason) VALUES ($1, $2, $3, $4::bigint, $5)`,
    values: [runId, table, key, ticksOrNull(modifiedOn), reason],
  };
}

function selectRowFailures(schema: string, runId: string): Query {
  return { text: `SELECT * FROM ${t(schema, 'row_failures')} WHERE run_id = $1 ORDER BY id`, values: [runId] };
}

function selectStatus(schema: string): Query {
  return {
    text: `SELECT w.table_name, w.scope, w.tenant, w.high_water_ticks, w.last_advanced_at, w.last_run_id AS advanced_by_run_id,
        w.lease_owner, w.lease_expires_at, coalesce(w.lease_expires_at >= clock_timestamp(), false) AS lease_active,
        lr.run_id AS last_run_id, lr.run_status, lr.table_status, lr.started_at AS last_run_started_at, lr.error AS last_run_error
      FROM ${t(schema, 'watermarks')} w
      LEFT JOIN LATERAL (
        SELECT rt.run_id, r.status AS run_status, rt.status AS table_status, rt.started_at, coalesce(rt.error, r.error) AS error
        FROM ${t(schema, 'run_tables')} rt JOIN ${t(schema, 'runs')} r ON r.run_id = rt.run_id
        WHERE rt.table_name = w.table_name AND rt.scope = w.scope
        ORDER BY rt.started_at DESC LIMIT 1
      ) lr ON true
      ORDER BY w.table_name, w.scope`,
    values: [],
  };
}

/** Every SQL builder of the control store; pure, so unit tests can check quoting and parameters without a database. */
export const controlSql = {
  insertRun, finishRun, selectRun, selectRuns, selectRunTables, selectRunBatches, insertRunTable, reopenRunTable,
  selectRunTable, finishRunTable, insertBatch, selectLastCompletedBatch, resetRun, acquireLease, renewLease,
  releaseLease, advanceHighWater, selectWatermark, selectWatermarks, selectPublished, selectPublishedPathLocators,
  upsertPublished, registerPending, selectRegisteredKeysAfter, selectSweepCursor, upsertSweepCursor, markDeleted,
  setNullModifiedOn, lockObservations, nextObservation, insertRowFailure, selectRowFailures, selectStatus,
} as const;

/** Keeps the latest observed row of each key (the later row on equal observations), in first-seen key order. Pure. */
export function latestPerKey<R extends { readonly key: string; readonly observed: Ticks }>(rows: readonly R[]): R[] {
  const latest = new Map<string, R>();
  for (const row of rows) {
    const seen = latest.get(row.key);
    if (!seen || row.observed >= seen.observed) latest.set(row.key, row);
  }
  return [...latest.values()];
}

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
    lastRunId: strOrNull(r.last_run_id), lastRunStatus: (r.run_status ?? null) as RunStatus | null,
    lastRunTableStatus: (r.table_status ?? null) as TableStatus | null, lastRunStartedAt: dateOrNull(r.last_run_started_at),
    lastRunError: strOrNull(r.last_run_error),
  };
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

  constructor(private readonly pool: pg.Pool, schema: string, options: ControlStoreOptions = {}) {
    this.schema = assertIdentifier(schema, 'control store schema');
    this.migrationsDir = options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR;
  }

  /** Creates or upgrades the control store schema; safe to run from several processes at once. */
  async migrate(): Promise<MigrationResult> {
    const client = await this.connect('connecting to migrate the control store');
    try {
      return await applyMigrations(client, this.migrationsDir, this.schema);
    } finally {
      client.release();
    }
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

  /** Those of `pathLocators` that belong to a registered, not deleted row. */
  async publishedPathLocators(table: string, pathLocators: readonly string[]): Promise<Set<string>> {
    if (pathLocators.length === 0) return new Set();
    const { rows } = await this.exec(selectPublishedPathLocators(this.schema, table, pathLocators), `looking up published parents of ${table}`);
    return new Set(rows.map((r) => str(r.path_locator)));
  }

  /** Registers acknowledged versions (one statement); a key's version never moves backwards. Returns rows written. */
  async recordPublished(table: string, runId: string, rows: readonly PublishedRow[]): Promise<number> {
    if (rows.length === 0) return 0;
    const { rowCount } = await this.exec(upsertPublished(this.schema, table, runId, latestPerKey(rows)), `registering published rows of ${table}`);
    return rowCount ?? 0;
  }

  /** Registers keys about to be sent (see PendingRow), before the send. */
  async registerPending(table: string, runId: string, rows: readonly PendingRow[]): Promise<void> {
    if (rows.length === 0) return;
    const unique = [...new Map(rows.map((r) => [r.key, r])).values()];
    await this.exec(registerPending(this.schema, table, runId, unique), `registering keys of ${table} before their send`);
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

  private async observeNow<T>(table: string, read: () => Promise<T>): Promise<{ value: T; observed: Ticks }> {
    return this.transaction('BEGIN', `observing the source of ${table}`, async (client) => {
      await this.exec(lockObservations(this.schema, table), `locking the observations of ${table}`, client);
      const value = await read();
      const { rows } = await this.exec(nextObservation(this.schema, table), `stamping an observation of ${table}`, client);
      return { value, observed: BigInt(rows[0]!.observed as string) };
    });
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
    const { rows: logged } = await this.exec(markDeleted(this.schema, table, runId, latestPerKey(rows)), `recording deletions of ${table}`);
    return logged.map((r) => str(r.key));
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

  private async exec(q: Query, context: string, client: pg.ClientBase | pg.Pool = this.pool): Promise<pg.QueryResult<Row>> {
    try {
      return await client.query<Row>(q.text, [...q.values]);
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
  }

  private async connect(context: string): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (thrown) {
      throw classifyDbError(thrown, context);
    }
  }

  private async transaction<T>(begin: string, context: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.connect(context);
    try {
      await client.query(begin);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (thrown) {
      await rollbackQuietly(client, thrown);
      throw classifyDbError(thrown, context);
    } finally {
      client.release();
    }
  }
}

function runNotFound(runId: string): HighwaterError {
  return new HighwaterError('RUN_NOT_FOUND', `no run ${runId} in the control store`);
}
