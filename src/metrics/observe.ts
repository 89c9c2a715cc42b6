import type { Admin } from '../kafka/client.js';
import { groupIdFor, retryTopicFor, tablesForTarget, topicFor } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { coerceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ControlStore } from '../control/store.js';
import { millisFromTicks } from '../time/ticks.js';
import { Metrics } from './catalog.js';
import { Liveness } from './liveness.js';
import type { MetricsRole } from './port.js';
import { startMetricsServer, type MetricsServer, type ReadinessCheck } from './server.js';

/**
 * What a long-running process exposes: the metrics server, readiness checks on every dependency it uses, and a
 * sampler that refreshes the gauges nobody emits events for (consumer lag, leases, high-watermarks, last runs).
 * A failed sample is logged and retried next time; it never stops the process.
 */

export interface ObservedDependencies {
  readonly kafkaAdmin: () => Promise<Admin>;
  readonly store?: ControlStore;
  /** name → a check that throws when that database does not answer. */
  readonly databases: Readonly<Record<string, ReadinessCheck>>;
  /** Per target: the watermark each table is complete up to (for highwater_consistent_as_of_seconds). */
  readonly consistentAsOf?: (target: Config['targets'][number]) => Promise<readonly { table: string; scope: string; watermark: bigint | null }[]>;
}

export interface ObserveOptions {
  /** The port to serve on (0: any free port); null serves nothing but still counts. */
  readonly port: number | null;
  readonly role: MetricsRole;
  readonly version: string;
  readonly sampleEveryMs?: number;
}

export interface Observability {
  readonly metrics: Metrics;
  readonly liveness: Liveness;
  readonly port: number | null;
  stop(): Promise<void>;
}

export async function startObservability(config: Config, logger: Logger, deps: ObservedDependencies, options: ObserveOptions): Promise<Observability> {
  const metrics = new Metrics();
  const liveness = new Liveness();
  metrics.buildInfo.set({ version: options.version, node: process.version, role: options.role }, 1);
  if (options.port === null) return { metrics, liveness, port: null, stop: async () => undefined };
  const sampleEveryMs = options.sampleEveryMs ?? 15_000;
  const checks: Record<string, ReadinessCheck> = { kafka: async () => void (await (await deps.kafkaAdmin()).describeCluster()), ...deps.databases };
  const server: MetricsServer = await startMetricsServer(metrics, options.port, checks, liveness);
  const sample = () => sampleGauges(config, metrics, deps).catch((err: unknown) => logger.warn({ err: coerceError(err) }, 'metrics sample failed'));
  void sample();
  const timer = setInterval(sample, sampleEveryMs);
  timer.unref();
  logger.info({ port: server.port, role: options.role }, 'metrics on /metrics, health on /healthz and /readyz');
  return {
    metrics,
    liveness,
    port: server.port,
    stop: async () => {
      clearInterval(timer);
      await server.close();
    },
  };
}

async function sampleGauges(config: Config, metrics: Metrics, deps: ObservedDependencies): Promise<void> {
  const admin = await deps.kafkaAdmin();
  for (const target of config.targets) {
    const topics = tablesForTarget(config, target).map((t) => topicFor(config, t));
    await sampleLag(metrics, admin, groupIdFor(target), topics);
    // The retry consumer has a group of its own (see Runtime.startConsumers); its lag is records waiting for a parent.
    await sampleLag(metrics, admin, `${groupIdFor(target)}.retry`, topics.map(retryTopicFor));
    if (deps.consistentAsOf) {
      for (const c of await deps.consistentAsOf(target)) {
        if (c.watermark !== null) metrics.consistentAsOf.set({ target: target.name, table: c.table, scope: c.scope }, millisFromTicks(c.watermark) / 1000);
      }
    }
  }
  if (!deps.store) return;
  for (const t of await deps.store.status()) {
    const labels = { table: t.table, scope: t.scope };
    metrics.leaseHeld.set(labels, t.leaseActive ? 1 : 0);
    if (t.highWater !== null) metrics.highWater.set(labels, millisFromTicks(t.highWater) / 1000);
    if (t.lastAdvancedAt) metrics.highWaterAdvancedAt.set(labels, t.lastAdvancedAt.getTime() / 1000);
    if (t.lastRunStatus) metrics.runState.set(labels, t.lastRunStatus === 'failed' ? 1 : 0);
  }
}

/** Lag per partition: the end of the log minus the group's committed offset (committed after the target's commit). */
async function sampleLag(metrics: Metrics, admin: Admin, groupId: string, topics: readonly string[]): Promise<void> {
  const committed = await admin.fetchOffsets({ groupId, topics: [...topics] });
  for (const topic of topics) {
    const ends = await admin.fetchTopicOffsets(topic);
    const mine = committed.find((c) => c.topic === topic)?.partitions ?? [];
    for (const end of ends) {
      const at = mine.find((p) => p.partition === end.partition)?.offset ?? '-1';
      const position = at === '-1' ? BigInt(end.low) : BigInt(at);
      metrics.lag.set({ group: groupId, topic, partition: String(end.partition) }, Number(BigInt(end.high) - position));
    }
  }
}
