import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Config, TableConfig } from '../config/schema.js';
import { topicFor, tenantOf } from '../config/load.js';
import type { ControlStore } from '../control/store.js';
import type { EventCodec } from '../events/codec.js';
import { inlineLimit } from '../events/records.js';
import { coerceError, HighwaterError } from '../errors.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { DEFAULT_RETRY, type RetryPolicy } from '../retry.js';
import type { SourceConnector } from './source/connector.js';
import { ticksFromIso, ticksFromMinutes } from '../time/ticks.js';
import type { PollerObserver } from './observer.js';
import { TablePoll, type TableJob, type TableOutcome } from './table-poll.js';

/**
 * A poll run over the enabled tables: one run header in the control store, one TablePoll per table and scope.
 * A table that fails is recorded as failed with its error and the others go on; the run is failed if any did.
 */

export interface PollerDeps {
  readonly config: Config;
  readonly store: ControlStore;
  readonly publisher: Publisher;
  readonly codec: EventCodec;
  readonly logger: Logger;
  readonly observer: PollerObserver;
  /** Returns the connector for a table's source; the caller owns its lifecycle. */
  readonly sourceFor: (table: TableConfig) => SourceConnector;
  /** Creates the table's topics (and their retry and dead-letter topics) if missing. */
  readonly ensureTopics: (table: TableConfig) => Promise<void>;
  readonly retry?: RetryPolicy;
  readonly signal?: AbortSignal;
  /** Count each window's rows before reading it, for a progress bar's total (one more source query per table). */
  readonly countWindows?: boolean;
}

export interface RunSummary {
  readonly runId: string;
  /** `abandoned`: a shutdown signal stopped it between batches; it resumes from its last completed batch. */
  readonly status: 'completed' | 'failed' | 'abandoned';
  readonly tables: readonly { table: string; scope: string; outcome?: TableOutcome; error?: string; stopped?: boolean }[];
}

export function scopeOf(table: TableConfig): string {
  return table.scope ?? '*';
}

export class Poller {
  private readonly owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;

  constructor(private readonly deps: PollerDeps) {}

  /** Starts a new run over the enabled tables (or the named ones). */
  async run(options: { tables?: readonly string[]; requestedBy?: string } = {}): Promise<RunSummary> {
    const tables = this.selectTables(options.tables);
    const runId = await this.deps.store.createRun({ kind: 'poll', requestedBy: options.requestedBy ?? 'cli', options: { tables: tables.map((t) => t.name) } });
    return this.execute(runId, tables, false);
  }

  /** Continues a failed or interrupted run from the last completed batch of each table. */
  async resume(runId: string): Promise<RunSummary> {
    const run = await this.deps.store.getRun(runId);
    const names = (run.options as { tables?: string[] } | null)?.tables;
    return this.execute(runId, this.selectTables(names), true);
  }

  private selectTables(names: readonly string[] | undefined): TableConfig[] {
    const enabled = this.deps.config.tables.filter((t) => t.enabled);
    if (!names) return enabled;
    const unknown = names.filter((n) => !this.deps.config.tables.some((t) => t.name === n));
    if (unknown.length > 0) throw new HighwaterError('USAGE', `unknown table(s): ${unknown.join(', ')}`);
    return this.deps.config.tables.filter((t) => names.includes(t.name));
  }

  private async execute(runId: string, tables: readonly TableConfig[], resume: boolean): Promise<RunSummary> {
    const results: RunSummary['tables'][number][] = [];
    for (const table of tables) {
      if (this.deps.signal?.aborted) {
        results.push({ table: table.name, scope: scopeOf(table), stopped: true, error: 'not started: shutting down' });
        continue;
      }
      results.push(await this.pollOne(runId, table, resume));
    }
    const failed = results.filter((r) => r.error && !r.stopped);
    const stopped = results.some((r) => r.stopped) || this.deps.signal?.aborted === true;
    const status = failed.length > 0 ? 'failed' : stopped && results.some((r) => !r.outcome) ? 'abandoned' : 'completed';
    await this.deps.store.finishRun(runId, status, failed.length > 0 ? failed.map((f) => `${f.table}: ${f.error}`).join('; ') : undefined);
    return { runId, status, tables: results };
  }

  private async pollOne(runId: string, table: TableConfig, resume: boolean): Promise<RunSummary['tables'][number]> {
    const scope = scopeOf(table);
    const log = this.deps.logger.child({ runId, table: table.name, scope });
    try {
      if (resume) {
        const done = await this.deps.store.getTable(runId, table.name, scope);
        if (done?.status === 'completed') return { table: table.name, scope };
      }
      await this.deps.ensureTopics(table);
      const outcome = await new TablePoll(this.jobFor(runId, table), {
        store: this.deps.store,
        publisher: this.deps.publisher,
        codec: this.deps.codec,
        source: this.deps.sourceFor(table),
        logger: this.deps.logger,
        observer: this.deps.observer,
        publish: { inlineLimit: inlineLimit(this.deps.config.kafka.maxMessageBytes), maxBlobBytes: this.deps.config.poll.maxBlobBytes },
        retry: this.deps.retry ?? DEFAULT_RETRY,
        signal: this.deps.signal,
      }).run(resume);
      await this.deps.store.finishTable(runId, table.name, scope, { status: 'completed' });
      log.info({ published: outcome.published, skipped: outcome.skipped, failed: outcome.failed, tombstones: outcome.tombstones, lateArrivals: outcome.lateArrivals }, 'table polled');
      return { table: table.name, scope, outcome };
    } catch (thrown) {
      const error = coerceError(thrown);
      if (error instanceof HighwaterError && error.code === 'STOPPED') {
        log.info('stopped between batches by a shutdown signal; nothing in flight was lost');
        await this.deps.store.finishTable(runId, table.name, scope, { status: 'abandoned', error: error.message }).catch((err: unknown) => log.error({ err }, 'could not record the stop'));
        return { table: table.name, scope, error: error.message, stopped: true };
      }
      log.error({ err: error }, 'table poll failed; resume the run to continue from its last completed batch');
      this.deps.observer.safe('tableFailed', { table: table.name, scope, error });
      await this.deps.store.finishTable(runId, table.name, scope, { status: 'failed', error: error.message }).catch((err: unknown) => log.error({ err }, 'could not record the failure'));
      return { table: table.name, scope, error: error.message };
    }
  }

  private jobFor(runId: string, table: TableConfig): TableJob {
    const cfg = this.deps.config;
    const source = cfg.databases.find((d) => d.name === table.source)!;
    return {
      runId,
      table: table.name,
      tenant: tenantOf(cfg, table),
      scope: scopeOf(table),
      businessUnit: table.scope,
      topic: topicFor(cfg, table),
      excludedKeys: [...new Set([...cfg.excludedKeys, ...table.excludedKeys])],
      batchSize: table.batchSize,
      bufferTicks: ticksFromMinutes(table.safetyBufferMinutes),
      baselineTicks: ticksFromIso(table.initialBaseline),
      useOldestOpenTransaction: source.oldestOpenTransaction === 'auto',
      deleteSweepKeys: cfg.poll.deleteSweepKeys,
      lateSweepKeys: cfg.poll.lateSweepKeys,
      verifySweepBytes: cfg.poll.verifySweepBytes,
      leaseSeconds: cfg.poll.leaseSeconds,
      owner: this.owner,
      countWindow: this.deps.countWindows === true,
    };
  }
}
