import type { Admin } from '../kafka/client.js';
import { groupIdFor, tablesForTarget, topicFor } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { coerceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ControlStore } from '../control/store.js';
import { millisFromTicks } from '../time/ticks.js';
import { Metrics } from './catalog.js';
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
}

export interface Observability {
  readonly metrics: Metrics;
  readonly port: number | null;
  stop(): Promise<void>;
}

export async function startObservability(config: Config, logger: Logger, deps: ObservedDependencies, sampleEveryMs = 15_000): Promise<Observability> {
  const metrics = new Metrics();
  if (config.metrics.port === null) return { metrics, port: null, stop: async () => undefined };
  const checks: Record<string, ReadinessCheck> = { kafka: async () => void (await (await deps.kafkaAdmin()).describeCluster()), ...deps.databases };
  const server: MetricsServer = await startMetricsServer(metrics, config.metrics.port, checks);
  const sample = () => sampleGauges(config, metrics, deps).catch((err: unknown) => logger.warn({ err: coerceError(err) }, 'metrics sample failed'));
  void sample();
  const timer = setInterval(sample, sampleEveryMs);
  timer.unref();
  logger.info({ port: server.port }, 'metrics on /metrics, health on /healthz and /readyz');
  return {
    metrics,
    port: server.port,
    stop: async () => {
      clearInterval(timer);
      await server.close();
    },
  };
}

async function sampleGauges(config: Config, metrics: Metrics, deps: ObservedDependencies): Promise<void> {
  const admin = await deps.kafkaAdmin();
  for (const target of config.targets) await sampleLag(metrics, admin, groupIdFor(target), tablesForTarget(config, target).map((t) => topicFor(config, t)));
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
