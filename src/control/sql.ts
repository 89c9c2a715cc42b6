import { STEPS, type Position, type Ticks, type Window } from '../contract.js';
import { HighwaterError } from '../errors.js';
import { assertIdentifier, quotePg } from '../sql/ident.js';
import type { PgStatement } from '../sql/statement.js';

/**
 * The control store's vocabulary and its SQL: pure builders returning { text, values } (the schema validated and
 * quoted, every value a parameter, ticks as decimal strings). store.ts executes them; unit tests read them.
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

/** The PostgreSQL statement type (src/sql/statement.ts), under the name the control store's tests use. */
export type Query = PgStatement;

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
  /** SHA-256 of the published columns (src/poll/build.ts rowDigest); null before contract v2. */
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
  /** Seconds until the lease expires, by the database's clock (0 when it has); null when nobody holds it. */
  readonly leaseSecondsLeft: number | null;
  /** The latest run that worked on this table and scope, whatever its outcome. */
  readonly lastRunId: string | null;
  readonly lastRunStatus: RunStatus | null;
  readonly lastRunTableStatus: TableStatus | null;
  readonly lastRunStartedAt: Date | null;
  readonly lastRunError: string | null;
  /** What the latest run found that a window alone would not show (null before any run). */
  readonly lastRunFindings: RunFindings | null;
}

/** Per table and run: what operators must see beside the counts (issue 10, item 6). */
export interface RunFindings {
  /** Rows the late-arrival sweep found beyond the safety buffer and republished. */
  readonly lateArrivals: number;
  /** Rows the poller could not publish (too large, unreadable), recorded in row_failures. */
  readonly rowsRefused: number;
  /** In-scope rows whose ModifiedOn is NULL (null when the run did not count them). */
  readonly nullModifiedOn: number | null;
  /** Why the window ends earlier than sourceNow − buffer, when it does. */
  readonly endClampedBy: EndClamp | null;
  readonly windowEnd: Ticks;
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

/** Each registered, acknowledged, not deleted key at one of the paths, with its path (a path may have several). */
function selectPublishedPathLocators(schema: string, table: string, pathLocators: readonly string[]): Query {
  return {
    text: `SELECT path_locator, key FROM ${t(schema, 'published')}
      WHERE table_name = $1 AND path_locator = ANY($2::text[]) AND NOT deleted AND acked`,
    values: [table, [...pathLocators]],
  };
}

/**
 * Statistics of the registry's lookup columns (see ControlStore.refreshRegistryStatistics). Not one of `controlSql`:
 * it names a table without FROM/INTO/UPDATE, and runs outside any transaction.
 */
export function analyzeRegistry(schema: string): Query {
  return { text: `ANALYZE ${t(schema, 'published')} (table_name, key, path_locator, deleted, acked)`, values: [] };
}

const MIN_TICKS = '(-9223372036854775808)::bigint';

/**
 * Every upsert of the registry takes its row locks in key order (ORDER BY r.key): the poller's pipeline registers
 * the next read's keys as pending while the last send's versions are recorded, and two statements locking
 * overlapping keys in different orders deadlock (a 100k-row tree poll failed with "deadlock detected").
 */

/**
 * Batch upsert of acknowledged versions with unnest arrays, one statement for the whole batch. A key's registered
 * version only moves forward in the contract's order (ModifiedOn, NULL first, then observation); a pending entry
 * (first version in flight) or a deleted one is always replaced. The rows must have distinct keys (`latestPerKey`).
 * Returns the rows it wrote (key and path), so the store can tell its watchers (ControlStore.watchRegistry).
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
      ORDER BY r.key
      ON CONFLICT (table_name, key) DO UPDATE SET modified_on_ticks = EXCLUDED.modified_on_ticks,
        observed_ticks = EXCLUDED.observed_ticks, content_sha256 = EXCLUDED.content_sha256, row_digest = EXCLUDED.row_digest,
        path_locator = EXCLUDED.path_locator, chunk_count = EXCLUDED.chunk_count, deleted = false, acked = true,
        max_sent_modified_on_ticks = GREATEST(p.max_sent_modified_on_ticks, EXCLUDED.modified_on_ticks),
        run_id = EXCLUDED.run_id, published_at = clock_timestamp()
      WHERE NOT p.acked OR p.deleted
        OR (coalesce(p.modified_on_ticks, ${MIN_TICKS}), coalesce(p.observed_ticks, p.modified_on_ticks, ${MIN_TICKS}))
           < (coalesce(EXCLUDED.modified_on_ticks, ${MIN_TICKS}), EXCLUDED.observed_ticks)
      RETURNING p.key, p.path_locator`,
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
      ORDER BY r.key
      ON CONFLICT (table_name, key) DO UPDATE SET
        max_sent_modified_on_ticks = GREATEST(p.max_sent_modified_on_ticks, EXCLUDED.max_sent_modified_on_ticks),
        acked = p.acked AND NOT p.deleted, deleted = false`,
    values: [table, runId, rows.map((r) => r.key), rows.map((r) => ticksOrNull(r.modifiedOn)), rows.map((r) => r.pathLocator)],
  };
}

/**
 * The keys of a read about to be sent for the first time, in one row (see migration 005): what registerPending
 * would write as one pending entry per key. Returns the row's id, which clearPendingSends deletes once the keys are
 * recorded.
 */
function insertPendingSend(schema: string, table: string, runId: string, rows: readonly PendingRow[]): Query {
  return {
    text: `INSERT INTO ${t(schema, 'pending_sends')} (table_name, run_id, keys, modified_on_ticks, path_locators)
      VALUES ($1, $2, $3::text[], $4::bigint[], $5::text[]) RETURNING id`,
    values: [table, runId, rows.map((r) => r.key), rows.map((r) => ticksOrNull(r.modifiedOn)), rows.map((r) => r.pathLocator)],
  };
}

function deletePendingSends(schema: string, table: string, ids: readonly string[]): Query {
  return { text: `DELETE FROM ${t(schema, 'pending_sends')} WHERE table_name = $1 AND id = ANY($2::bigint[])`, values: [table, [...ids]] };
}

/**
 * Every pending send left of a table (a poller stopped between a send and the checkpoint that recorded it), in one
 * statement: deleted, and each of its keys registered as registerPending would have registered it, one send after
 * the other in order: a new entry takes the first send's ModifiedOn, path and run; every entry's greatest sent
 * ModifiedOn is raised to the greatest sent (one row per key, as ON CONFLICT requires). Acknowledged versions stay.
 */
function replayPendingSends(schema: string, table: string): Query {
  return {
    text: `WITH gone AS (
        DELETE FROM ${t(schema, 'pending_sends')} WHERE table_name = $1 RETURNING id, run_id, keys, modified_on_ticks, path_locators
      ), k AS (
        SELECT r.key,
          (array_agg(r.modified_on_ticks ORDER BY gone.id))[1] AS modified_on_ticks,
          (array_agg(r.path_locator ORDER BY gone.id))[1] AS path_locator,
          (array_agg(gone.run_id ORDER BY gone.id))[1] AS run_id,
          max(r.modified_on_ticks) AS max_sent_modified_on_ticks
        FROM gone CROSS JOIN LATERAL unnest(gone.keys, gone.modified_on_ticks, gone.path_locators) AS r(key, modified_on_ticks, path_locator)
        GROUP BY r.key
      )
      INSERT INTO ${t(schema, 'published')} AS p
        (table_name, key, modified_on_ticks, path_locator, deleted, acked, max_sent_modified_on_ticks, run_id)
      SELECT $1, k.key, k.modified_on_ticks, k.path_locator, false, false, k.max_sent_modified_on_ticks, k.run_id
      FROM k
      ORDER BY k.key
      ON CONFLICT (table_name, key) DO UPDATE SET
        max_sent_modified_on_ticks = GREATEST(p.max_sent_modified_on_ticks, EXCLUDED.max_sent_modified_on_ticks),
        acked = p.acked AND NOT p.deleted, deleted = false`,
    values: [table],
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
        greatest(0, date_part('epoch', w.lease_expires_at - clock_timestamp()))::float8 AS lease_seconds_left,
        lr.run_id AS last_run_id, lr.run_status, lr.table_status, lr.started_at AS last_run_started_at, lr.error AS last_run_error,
        lr.rows_failed, lr.rows_null_modified_on, lr.end_clamped_by, lr.window_end_ticks,
        (SELECT coalesce(sum(b.rows), 0) FROM ${t(schema, 'run_batches')} b
          WHERE b.run_id = lr.run_id AND b.table_name = w.table_name AND b.scope = w.scope AND b.step = 'late-arrivals') AS late_arrivals
      FROM ${t(schema, 'watermarks')} w
      LEFT JOIN LATERAL (
        SELECT rt.run_id, r.status AS run_status, rt.status AS table_status, rt.started_at, coalesce(rt.error, r.error) AS error,
          rt.rows_failed, rt.rows_null_modified_on, rt.end_clamped_by, rt.window_end_ticks
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
  upsertPublished, registerPending, insertPendingSend, deletePendingSends, replayPendingSends, selectRegisteredKeysAfter, selectSweepCursor, upsertSweepCursor, markDeleted,
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

