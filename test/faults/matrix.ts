/**
 * The scenarios of the whole fault matrix (`npm run test:faults`) beyond the fast subset. Each names the
 * RELIABILITY.md scenario it drives; the durations of network faults are 5 s, 30 s and 120 s.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.js';
import { SMALL_LOAD, type Pipeline } from './harness.js';
import {
  brokerKill, pgTerminate, proxyFault, sigstopRebalance, sourceProxy, targetDrop, targetProxy, timedFault,
  type Injection, type ScenarioDef,
} from './scenarios.js';

const SESSION_MS = 6000;

/** Kills a service with SIGKILL at `times` seeded load steps and restarts it at once. */
function killAndRestart(role: 'poller' | 'consumer', times: number): ScenarioDef['inject'] {
  return (_env, rand) => {
    const at = new Set(Array.from({ length: times }, () => Math.floor(rand() * 8)));
    return {
      atStep: async (offset, p) => {
        if (!at.has(offset)) return;
        const service = role === 'poller' ? p.poller : p.consumers[Math.floor(rand() * p.consumers.length)]!;
        // A random moment inside the step, so the kill lands in a send, a COPY or a commit rather than between them.
        await sleep(Math.floor(rand() * 400));
        await service.restart();
      },
      healed: async () => undefined,
      notes: () => `${role} SIGKILLed and restarted at load offsets ${[...at].sort((a, b) => a - b).join(',')}`,
    };
  };
}

const brokerStop: ScenarioDef = {
  id: 'R3-stop', title: 'broker stopped gracefully during the load, started after 5 s', boundMs: 120_000,
  inject: (env) => timedFault(() => env.broker!.stop(), () => env.broker!.start(), 5000, 'broker stopped for 5 s'),
};

/** A private cluster holds source and target, so the database itself can be stopped, killed and started. */
function privateCluster(fault: 'stop' | 'kill', downMs: number): ScenarioDef {
  let cluster: PgCluster | undefined;
  return {
    id: `R5-pg-${fault}`, title: `PostgreSQL (source, target, control store) ${fault === 'stop' ? 'stopped (fast)' : 'SIGKILLed'} for ${downMs / 1000} s`, boundMs: 150_000,
    prepare: async () => {
      cluster = await startPgCluster();
      const c = cluster;
      return { options: { pgServerUrl: c.url() }, close: () => c.destroy() };
    },
    inject: () => timedFault(async () => (fault === 'stop' ? cluster!.stop() : cluster!.kill()), () => cluster!.start(), downMs, `cluster ${fault} for ${downMs / 1000} s`),
  };
}

function network(id: string, where: 'target' | 'source', kind: 'drop' | 'reset' | 'delay' | 'slow', durationMs: number): ScenarioDef {
  const mode = kind === 'delay' ? { kind, latencyMs: 400 } as const : kind === 'slow' ? { kind, bytesPerSecond: 20_000 } as const : { kind } as const;
  const link = where === 'target' ? 'consumer→target database' : 'poller→source database';
  return {
    id, title: `${kind} ${link} for ${durationMs / 1000} s`, boundMs: 120_000 + durationMs,
    prepare: where === 'target' ? targetProxy() : sourceProxy(),
    inject: proxyFault(mode, durationMs, link),
  };
}

/** Consumers join (a new instance) and leave (SIGTERM) every step or two of the load. */
const churn: ScenarioDef = {
  id: 'R15-churn', title: 'consumers join and leave every few seconds during the load', boundMs: 120_000,
  pipeline: { consumers: 2, sessionTimeoutMs: SESSION_MS },
  load: { ...SMALL_LOAD, steps: 20 },
  inject: (_env, rand): Injection => {
    let joins = 0;
    let leaves = 0;
    return {
      atStep: async (_offset, p: Pipeline) => {
        const live = p.consumers.filter((c) => c.running());
        if (live.length <= 1 || (live.length < 4 && rand() < 0.5)) {
          p.addConsumer();
          joins += 1;
        } else {
          await live[Math.floor(rand() * live.length)]!.stop('SIGTERM');
          leaves += 1;
        }
      },
      healed: async () => undefined,
      notes: () => `${joins} joins, ${leaves} leaves`,
    };
  },
};

/** libfaketime, where the Debian package `faketime` put it. */
export function libfaketime(): string | undefined {
  const candidates = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'];
  return candidates.find((c) => existsSync(c));
}

/** The poller's host clock shifted by `offset` (libfaketime syntax, e.g. `+5m`, `-1h`) against the database's. */
function skew(id: string, offset: string, what: string): ScenarioDef {
  return {
    id, title: `poller host clock ${what}`, boundMs: 120_000,
    pipeline: { pollerEnv: { LD_PRELOAD: libfaketime() ?? '', FAKETIME: offset, FAKETIME_DONT_RESET: '1' } },
    inject: () => ({ atStep: async () => undefined, healed: async () => undefined, notes: () => `FAKETIME=${offset}` }),
  };
}

/**
 * A DST change on the poller host: its time zone has DST and its clock starts 20 s before the spring change of
 * Europe/London (01:00 GMT becomes 02:00 BST), so the change happens while it polls. Its clock is also months
 * away from the database's, which the window bounds must not notice.
 */
function dstChange(): ScenarioDef {
  return {
    id: 'R13-dst', title: 'poller host crosses a DST change (Europe/London, 2026-03-29 01:00 GMT → 02:00 BST)', boundMs: 120_000,
    pipeline: { pollerEnv: { LD_PRELOAD: libfaketime() ?? '', FAKETIME: '@2026-03-29 00:59:40', TZ: 'Europe/London', FAKETIME_DONT_RESET: '1' } },
    inject: () => ({ atStep: async () => undefined, healed: async () => undefined, notes: () => 'poller clock from 2026-03-29 00:59:40 Europe/London' }),
  };
}

export interface MatrixEntry {
  readonly def: ScenarioDef;
  readonly repetitions: number;
  /** Why it cannot run here (a missing tool); printed in the table instead of a result. */
  readonly unavailable?: string;
}

/** RELIABILITY.md scenarios that are source-side shapes rather than faults, and the tests that check them. */
export const COVERED_ELSEWHERE: readonly { id: string; by: string }[] = [
  { id: 'R8 poison', by: 'test/integration/dlq.test.ts, consumer.test.ts (I6: dead letters with reasons, good rows flow)' },
  { id: 'R9 replay', by: 'test/integration/consumer.test.ts "replays a topic from offset 0", rebuild.test.ts' },
  { id: 'R10 older after newer', by: 'test/integration/consumer.test.ts, the convergence harness (wip/conv)' },
  { id: 'R11 equal ModifiedOn, poller killed', by: 'test/integration/poller.test.ts, defects.test.ts' },
  { id: 'R12 late commits', by: 'test/integration/poller.test.ts (within and beyond the buffer)' },
  { id: 'R14 same-millisecond versions', by: 'test/integration/consumer.test.ts, unit version-convergence.test.ts' },
  { id: 'R16 blob larger than a message', by: 'test/integration/consumer.test.ts (chunks), poller.test.ts (refusal)' },
  { id: 'R17 deletes, compaction, rebuild', by: 'test/integration/rebuild.test.ts; deletes also run in every matrix load' },
];

export function matrix(full: { long: boolean }): MatrixEntry[] {
  const faketime = libfaketime() === undefined ? 'faketime is not installed (Debian: apt-get install -y faketime)' : undefined;
  const durations = full.long ? [5000, 30_000, 120_000] : [5000];
  const entries: MatrixEntry[] = [
    { def: { id: 'R1-consumer-kill', title: 'consumer SIGKILLed at three random moments, restarted at once', boundMs: 120_000, pipeline: { sessionTimeoutMs: SESSION_MS }, inject: killAndRestart('consumer', 3) }, repetitions: 2 },
    { def: { id: 'R2-poller-kill', title: 'poller SIGKILLed at three random moments, restarted at once', boundMs: 120_000, inject: killAndRestart('poller', 3) }, repetitions: 2 },
    { def: brokerKill, repetitions: 2 },
    { def: brokerStop, repetitions: 1 },
    { def: sigstopRebalance, repetitions: 2 },
    { def: pgTerminate, repetitions: 2 },
    { def: privateCluster('stop', 5000), repetitions: 1 },
    { def: privateCluster('kill', 5000), repetitions: 1 },
    { def: { ...pgTerminate, id: 'R6-source-terminate', title: 'pg_terminate_backend of the poller sessions, three times', inject: (e, r, p) => onlyPoller(pgTerminate.inject(e, r, p)) }, repetitions: 1 },
    { def: network('R6-source-reset', 'source', 'reset', 5000), repetitions: 1 },
    { def: targetDrop, repetitions: 1 },
    ...durations.filter((d) => d > 5000).map((d) => ({ def: network(`R7-drop-db-${d / 1000}s`, 'target', 'drop', d), repetitions: 1 })),
    ...durations.map((d) => ({ def: network(`R7-drop-src-${d / 1000}s`, 'source', 'drop', d), repetitions: 1 })),
    { def: network('R7-reset-db', 'target', 'reset', 5000), repetitions: 1 },
    { def: network('R7-delay-db', 'target', 'delay', 10_000), repetitions: 1 },
    { def: network('R7-slow-db', 'target', 'slow', 10_000), repetitions: 1 },
    { def: skew('R13-skew+5m', '+5m', '5 min ahead'), repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) },
    { def: skew('R13-skew-5m', '-5m', '5 min behind'), repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) },
    { def: skew('R13-skew+1h', '+1h', '1 h ahead'), repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) },
    { def: skew('R13-skew-1h', '-1h', '1 h behind'), repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) },
    { def: dstChange(), repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) },
    { def: churn, repetitions: 1 },
  ];
  const only = process.env.HIGHWATER_FAULTS_ONLY;
  return only ? entries.filter((e) => new RegExp(only).test(e.def.id)) : entries;
}

/** Restricts a pg_terminate injection to the poller's sessions. */
function onlyPoller(injection: Injection): Injection {
  return {
    ...injection,
    atStep: (offset, p) => injection.atStep(offset, { ...p, terminateServiceSessions: () => p.terminateServiceSessions('poller') }),
  };
}

/** Whether the `faketime` binary is there, for the message at the start of the matrix. */
export function faketimeStatus(): string {
  try {
    execFileSync('faketime', ['--version'], { stdio: 'ignore' });
    return 'faketime available';
  } catch {
    return 'faketime missing: the clock-skew scenarios (R13) are skipped; install it with `apt-get install -y faketime`';
  }
}
