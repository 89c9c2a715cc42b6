import type { Config } from '../config/schema.js';
import type { Env } from '../config/load.js';
import { HighwaterError } from '../errors.js';

/**
 * Which port a process serves metrics on. `poll --every` and `consume` on one host with one configuration must not
 * collide, so each role has its own default port; a flag or an environment variable picks another for one process.
 * Order: --metrics-port, HIGHWATER_METRICS_PORT, metrics.port (every role), metrics.ports.<role> when enabled.
 */

export type MetricsRole = 'poll' | 'consume' | 'run';

export function metricsPortFor(role: MetricsRole, config: Config, flag: number | undefined, env: Env): number | null {
  if (flag !== undefined) return flag;
  const fromEnv = env.HIGHWATER_METRICS_PORT;
  if (fromEnv !== undefined && fromEnv !== '') return parsePort(fromEnv, 'HIGHWATER_METRICS_PORT');
  if (config.metrics.port !== null) return config.metrics.port;
  return config.metrics.enabled ? config.metrics.ports[role] : null;
}

export function parsePort(text: string, source: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n > 65535) throw new HighwaterError('USAGE', `${source} must be a port number from 0 to 65535 (0: any free port), not ${JSON.stringify(text)}`);
  return n;
}
