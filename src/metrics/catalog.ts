import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PollerListener } from '../poll/observer.js';
import type { ApplyResult } from '../apply/sink/writer.js';
import { millisFromTicks } from '../time/ticks.js';

/**
 * Every Prometheus series highwater exposes, declared once. Components never touch prom-client: they emit their
 * typed events, and the adapters below (`pollerListener`, `onApplied`) turn them into series.
 */

// prom-client's default process and Node.js series, prefixed highwater_ by collectDefaultMetrics.
const PROCESS_METRIC = /^highwater_(process_|nodejs_)/;

export class Metrics {
  readonly registry = new Registry();

  readonly rowsPublished = this.counter('highwater_rows_published_total', 'Rows published to Kafka by the poller.', ['table']);
  readonly bytesPublished = this.counter('highwater_bytes_published_total', 'Content bytes published by the poller.', ['table']);
  readonly batchesPublished = this.counter('highwater_batches_published_total', 'Batches published and acknowledged.', ['table', 'step']);
  readonly rowsSkipped = this.counter('highwater_rows_skipped_unchanged_total', 'Rows not republished because the registry holds that version.', ['table']);
  readonly tableFailures = this.counter('highwater_poll_failures_total', 'Table polls that failed (recorded against their run).', ['table']);
  readonly highWater = this.gauge('highwater_high_watermark_seconds', 'High-watermark of a table (seconds since the epoch).', ['table', 'scope']);
  readonly highWaterAdvancedAt = this.gauge('highwater_high_watermark_advanced_at_seconds', 'When the high-watermark last advanced (host clock; for age alerts).', ['table', 'scope']);

  readonly openTransactionAge = this.gauge('highwater_oldest_open_transaction_age_seconds', 'Age of the source\'s oldest open transaction when the table\'s last window was planned, when it held that window back (0 otherwise). An idle-in-transaction session shows here: it freezes every high-watermark on its database.', ['table', 'scope']);
  readonly windowHeldBack = this.gauge('highwater_window_held_back_seconds', 'How far an open transaction pulled the end of the table\'s last window back from sourceNow − buffer (0 when it did not).', ['table', 'scope']);

  readonly pollRuns = this.histogram('highwater_poll_seconds', 'Duration of one poll run over every enabled table (poll, poll --every, run).', ['outcome'], [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600]);
  readonly lastPollFinishedAt = this.gauge('highwater_last_poll_finished_at_seconds', 'When the last poll run finished (host clock; for "poller stopped" alerts).', []);

  // Apply side: every series carries the target, so two targets fed by one table are told apart.
  readonly rowsApplied = this.counter('highwater_rows_applied_total', 'Rows written to a target.', ['table', 'target']);
  readonly rowsStale = this.counter('highwater_rows_skipped_stale_total', 'Rows not written because the target held a newer or equal version.', ['table', 'target']);
  readonly rowsDeleted = this.counter('highwater_rows_deleted_total', 'Rows deleted from a target by tombstones.', ['table', 'target']);
  readonly duplicates = this.counter('highwater_duplicates_total', 'Events that turned out to be duplicates or superseded (harmless, counted).', ['table', 'target']);
  readonly retries = this.counter('highwater_retries_total', 'Records sent to the retry topic (missing parent or incomplete content).', ['table', 'target']);
  readonly deadLetters = this.counter('highwater_dead_letters_total', 'Records sent to the dead-letter topic.', ['table', 'target']);
  readonly backfillRequests = this.counter('highwater_backfill_requests_total', 'Back-fill requests sent to the poller side.', ['table', 'target']);
  readonly applyBatches = this.histogram('highwater_apply_batch_seconds', 'Time to apply one batch to a target.', ['table', 'target']);
  readonly lag = this.gauge('highwater_consumer_lag_records', 'Records between the consumer position and the end of the partition (table topics and their retry topics; the retry group is <groupId>.retry).', ['group', 'topic', 'partition']);
  readonly consistentAsOf = this.gauge('highwater_consistent_as_of_seconds', 'A target table is complete up to this time (from watermark markers).', ['target', 'table', 'scope']);
  readonly leaseHeld = this.gauge('highwater_lease_held', '1 while some poller holds the lease of a table and scope.', ['table', 'scope']);
  readonly runState = this.gauge('highwater_last_run_failed', '1 when the last run of a table failed.', ['table', 'scope']);
  readonly buildInfo = this.gauge('highwater_build_info', 'Always 1; the labels say which highwater and Node.js run, and in which role.', ['version', 'node', 'role']);
  readonly loopStale = this.gauge('highwater_loop_stale', '1 while a loop has not made progress within its limit (then /healthz answers 503).', ['loop']);

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'highwater_' });
  }

  /** Poller events → series. */
  pollerListener(): PollerListener {
    return {
      windowPlanned: (w) => {
        const labels = { table: w.table, scope: w.scope };
        this.openTransactionAge.set(labels, w.heldBack?.transactionAgeSeconds ?? 0);
        this.windowHeldBack.set(labels, w.heldBack?.heldBackSeconds ?? 0);
      },
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
  onApplied(info: { table: string; target?: string; result: ApplyResult; deadLettered: number; retried: number; duplicates: number; seconds?: number }): void {
    const table = { table: info.table, target: info.target ?? '' };
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

  private histogram<L extends string>(name: string, help: string, labelNames: L[], buckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]): Histogram<L> {
    return new Histogram({ name, help, labelNames, registers: [this.registry], buckets });
  }

  /** Every series this catalogue declares (without prom-client's process metrics), for docs and dashboards. */
  declared(): { name: string; type: string; help: string; labels: string[] }[] {
    return this.registry.getMetricsAsArray()
      .filter((m) => !PROCESS_METRIC.test(m.name))
      .map((m) => {
        const meta = m as unknown as { name: string; help: string; labelNames?: string[]; type?: string };
        return { name: meta.name, type: String(meta.type ?? ''), help: meta.help, labels: [...(meta.labelNames ?? [])] };
      });
  }
}
