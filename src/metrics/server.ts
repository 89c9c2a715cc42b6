import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { coerceError, HighwaterError } from '../errors.js';
import type { Metrics } from './catalog.js';
import type { Liveness } from './liveness.js';

/**
 * /metrics (Prometheus text), /healthz (the process is alive) and /readyz (every dependency answers: each check
 * is a small function such as "Kafka describeCluster" or "SELECT 1 on the target"; 503 with the failing names).
 */

export type ReadinessCheck = () => Promise<void>;

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(metrics: Metrics, port: number, checks: Readonly<Record<string, ReadinessCheck>> = {}, liveness?: Liveness): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    void route(req.url ?? '/', metrics, checks, liveness).then(({ status, type, body }) => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? portInUse(port, err) : err));
    server.listen(port, '0.0.0.0', () => resolve());
  });
  return { port: (server.address() as AddressInfo).port, close: () => closeServer(server) };
}

function portInUse(port: number, cause: Error): HighwaterError {
  return new HighwaterError('METRICS_PORT_IN_USE', `metrics port ${port} is already in use (another highwater process on this host?)`, { cause });
}

async function route(url: string, metrics: Metrics, checks: Readonly<Record<string, ReadinessCheck>>, liveness?: Liveness): Promise<{ status: number; type: string; body: string }> {
  const path = url.split('?')[0];
  if (path === '/metrics') return { status: 200, type: metrics.registry.contentType, body: await metrics.registry.metrics() };
  if (path === '/healthz') return health(metrics, liveness);
  if (path === '/readyz') return readiness(checks);
  return { status: 404, type: 'text/plain', body: 'not found\n' };
}

function health(metrics: Metrics, liveness?: Liveness): { status: number; type: string; body: string } {
  const stale = liveness?.stale() ?? [];
  for (const loop of liveness?.names() ?? []) metrics.loopStale.set({ loop }, stale.some((s) => s.loop === loop) ? 1 : 0);
  if (stale.length === 0) return { status: 200, type: 'text/plain', body: 'ok\n' };
  const lines = stale.map((s) => `stale: ${s.loop} made no progress for ${s.silentSeconds} s (limit ${s.limitSeconds} s)`);
  return { status: 503, type: 'text/plain', body: `${lines.join('\n')}\n` };
}

async function readiness(checks: Readonly<Record<string, ReadinessCheck>>): Promise<{ status: number; type: string; body: string }> {
  const results = await Promise.all(Object.entries(checks).map(async ([name, check]) => {
    try {
      await withTimeout(check(), 5000);
      return { name, ok: true as const };
    } catch (err) {
      return { name, ok: false as const, error: coerceError(err).message };
    }
  }));
  const failing = results.filter((r) => !r.ok);
  return { status: failing.length === 0 ? 200 : 503, type: 'application/json', body: `${JSON.stringify({ ready: failing.length === 0, checks: results })}\n` };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then((v) => { clearTimeout(timer); resolve(v); }, (e: unknown) => { clearTimeout(timer); reject(e); });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
