import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PollerListener } from '../poller/observer.js';
import type { ApplyResult } from '../target/writer.js';
import { millisFromTicks } from '../time/ticks.js';

/**
 * Every Prometheus series highwater exposes, declared once. Components never touch prom-client: they emit their
 * typed events, and the adapters below (`pollerListener`, `onApplied`) turn them into series.
 */

export class Metrics {
  readonly registry = new Registry();

  readonly rowsPublished = this.counter('highwater_rows_published_total', 'Rows published to Kafka by the poller.', ['table']);
  readonly bytesPublished = this.counter('highwater_bytes_published_total', 'Content bytes published by the poller.', ['table']);
  readonly batchesPublished = this.counter('highwater_batches_published_total', 'Batches published and acknowledged.', ['table', 'step']);
  readonly rowsSkipped = this.counter('highwater_rows_skipped_unchanged_total', 'Rows not republished because the registry holds that version.', ['table']);
  readonly tableFailures = this.counter('highwater_poll_failures_total', 'Table polls that failed (recorded against their run).', ['table']);
  readonly highWater = this.gauge('highwater_high_watermark_seconds', 'High-watermark of a table (seconds since the epoch).', ['table', 'scope']);
  readonly highWaterAdvancedAt = this.gauge('highwater_high_watermark_advanced_at_seconds', 'When the high-watermark last advanced (host clock; for age alerts).', ['table', 'scope']);

  readonly rowsApplied = this.counter('highwater_rows_applied_total', 'Rows written to a target.', ['table']);
  readonly rowsStale = this.counter('highwater_rows_skipped_stale_total', 'Rows not written because the target held a newer or equal version.', ['table']);
  readonly rowsDeleted = this.counter('highwater_rows_deleted_total', 'Rows deleted from a target by tombstones.', ['table']);
  readonly duplicates = this.counter('highwater_duplicates_total', 'Events that turned out to be duplicates or superseded (harmless, counted).', ['table']);
  readonly retries = this.counter('highwater_retries_total', 'Records sent to the retry topic (missing parent or incomplete content).', ['table']);
  readonly deadLetters = this.counter('highwater_dead_letters_total', 'Records sent to the dead-letter topic.', ['table']);
  readonly backfillRequests = this.counter('highwater_backfill_requests_total', 'Back-fill requests sent to the poller side.', ['table']);
  readonly applyBatches = this.histogram('highwater_apply_batch_seconds', 'Time to apply one batch to a target.', ['table']);
  readonly lag = this.gauge('highwater_consumer_lag_records', 'Records between the consumer position and the end of the partition.', ['group', 'topic', 'partition']);
  readonly consistentAsOf = this.gauge('highwater_consistent_as_of_seconds', 'A target table is complete up to this time (from watermark markers).', ['target', 'table', 'scope']);
  readonly leaseHeld = this.gauge('highwater_lease_held', '1 while some poller holds the lease of a table and scope.', ['table', 'scope']);
  readonly runState = this.gauge('highwater_last_run_failed', '1 when the last run of a table failed.', ['table', 'scope']);

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'highwater_' });
  }

  /** Poller events → series. */
  pollerListener(): PollerListener {
    return {
      batchPublished: (b) => {
        this.rowsPublished.inc({ table: b.table }, b.rows);
        this.bytesPublished.inc({ table: b.table }, b.bytes);
        this.rowsSkipped.inc({ table: b.table }, b.skipped);
        this.batchesPublished.inc({ table: b.table, step: b.step });
      },
      windowCompleted: (w) => {
        this.highWater.set({ table: w.table, scope: w.scope }, millisFromTicks(w.windowEnd) / 1000);
        this.highWaterAdvancedAt.set({ table: w.table, scope: w.scope }, Date.now() / 1000);
        this.runState.set({ table: w.table, scope: w.scope }, 0);
      },
      tableFailed: (f) => {
        this.tableFailures.inc({ table: f.table });
        this.runState.set({ table: f.table, scope: f.scope }, 1);
      },
    };
  }

  /** Apply-loop outcomes → series. */
  onApplied(info: { table: string; result: ApplyResult; deadLettered: number; retried: number; duplicates: number; seconds?: number }): void {
    const table = { table: info.table };
    // Rows promoted from holding (their parent came in this batch) are written by this batch too.
    this.rowsApplied.inc(table, info.result.applied + info.result.promoted);
    this.rowsStale.inc(table, info.result.skippedStale);
    this.rowsDeleted.inc(table, info.result.deleted);
    this.deadLetters.inc(table, info.deadLettered);
    this.retries.inc(table, info.retried);
    this.duplicates.inc(table, info.duplicates);
    if (info.seconds !== undefined) this.applyBatches.observe(table, info.seconds);
  }

  private counter<L extends string>(name: string, help: string, labelNames: L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(name: string, help: string, labelNames: L[]): Histogram<L> {
    return new Histogram({ name, help, labelNames, registers: [this.registry], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] });
  }
}
