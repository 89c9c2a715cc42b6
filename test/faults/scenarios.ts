/**
 * Fault scenarios: each builds a pipeline of real processes, runs a seeded load, injects its fault at a seeded step
 * of the load, removes it, and judges the outcome by I1–I5 (I4 counted). Used by the fast subset in `npm test`
 * (test/integration/faults-fast.test.ts) and by the whole matrix (`npm run test:faults`).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startFaultProxy, type FaultMode, type FaultProxy } from '../support/fault-proxy.js';
import {
  SMALL_LOAD, awaitConvergence, runLoad, seeded, startPipeline, unexpectedExits, verdict, viaPort,
  type LoadShape, type Pipeline, type PipelineOptions, type ScenarioResult,
} from './harness.js';

/** What a scenario may act on: the PostgreSQL server its databases go on, the brokers, and control of the broker. */
export interface FaultEnv {
  readonly pgServerUrl: string;
  readonly brokers: readonly string[];
  /** Null when the brokers are not ours to stop. */
  readonly broker: BrokerControl | null;
  readonly replicationFactor?: number;
}

export interface BrokerControl {
  /** SIGKILL; resolves once the broker has exited. */
  kill(): Promise<void>;
  /** Graceful stop. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it answers. */
  start(): Promise<void>;
}

/** The fault of one repetition: `atStep` fires during the load, `healed` resolves once the fault is gone. */
export interface Injection {
  atStep(step: number, p: Pipeline): Promise<void>;
  healed(): Promise<void>;
  notes(): string;
}

export interface ScenarioDef {
  readonly id: string;
  readonly title: string;
  /** I5: convergence must come within this long after the fault and the load ended. */
  readonly boundMs: number;
  readonly load?: LoadShape;
  readonly pipeline?: Partial<Omit<PipelineOptions, 'label' | 'pgServerUrl' | 'brokers'>>;
  /** Resources set up before the pipeline (proxies), given the chance to shape its options. */
  prepare?(env: FaultEnv): Promise<{ options: Partial<PipelineOptions>; close(passed?: boolean): Promise<void>; proxy?: FaultProxy }>;
  inject(env: FaultEnv, rand: () => number, prepared: { proxy?: FaultProxy }): Injection;
  /**
   * Checks, once the pipeline converged, that the fault really happened as the scenario says (e.g. the poller's
   * clock was skewed): a scenario whose fault did not take effect tested nothing. Returns a problem, or null.
   */
  verify?(p: Pipeline): Promise<{ problem: string | null; notes: string }>;
}

export interface RepetitionResult {
  readonly pass: boolean;
  readonly why: string;
  readonly duplicates: number;
  readonly recoveryMs: number;
  readonly notes: string;
}

/** One repetition of a scenario with its own seed: pipeline, load, fault, convergence, verdict. */
export async function runRepetition(env: FaultEnv, def: ScenarioDef, seed: number): Promise<RepetitionResult> {
  const rand = seeded(seed);
  const prepared = def.prepare ? await def.prepare(env) : { options: {}, close: async () => undefined };
  const p = await startPipeline({
    label: def.id, pgServerUrl: env.pgServerUrl, brokers: env.brokers,
    ...(env.replicationFactor ? { replicationFactor: env.replicationFactor } : {}),
    ...def.pipeline, ...prepared.options,
  }).catch(async (err: unknown) => {
    // A pipeline that did not start must not leave the prepared proxy or private broker running; keep its evidence.
    await prepared.close(false);
    throw err;
  });
  let passed = false;
  try {
    const injection = def.inject(env, rand, prepared);
    const faultStep = 2 + Math.floor(rand() * Math.max(1, (def.load ?? SMALL_LOAD).steps - 5));
    // I6: a poison record sits in the topic through the fault; it must be dead-lettered and must not stall the rest.
    const poisonKey = `poison-${seed}`;
    await p.publishPoison(poisonKey);
    await runLoad(p, rand, def.load ?? SMALL_LOAD, async (step) => {
      if (step >= faultStep) await injection.atStep(step - faultStep, p);
    });
    await injection.healed();
    const outcome = await awaitConvergence(p, def.boundMs);
    const judged = verdict(outcome);
    const verified = def.verify ? await def.verify(p) : { problem: null, notes: '' };
    const poison = await checkPoison(p, poisonKey);
    const exits = unexpectedExits(p);
    passed = judged.pass && verified.problem === null && poison === null;
    const why = [judged.pass ? '' : judged.why, verified.problem ?? '', poison ?? ''].filter((w) => w !== '').join('\n');
    const notes = [`fault at step ${faultStep}`, injection.notes(), verified.notes, ...exits].filter((n) => n !== '').join('; ');
    return { pass: passed, why: passed ? 'ok' : `${why}\n  logs and databases kept: ${p.logDir}, ${p.sourceDatabase}, ${p.targetDatabase}`, duplicates: outcome.report.i4?.duplicates ?? 0, recoveryMs: outcome.recoveryMs, notes };
  } finally {
    await p.close(passed);
    await prepared.close(passed);
  }
}

/**
 * I6: the poison record published before the fault is on the dead-letter topic with a reason, and no other record
 * is (a good record dead-lettered by a transient fault would be a loss the target's diff alone cannot explain).
 */
async function checkPoison(p: Pipeline, poisonKey: string): Promise<string | null> {
  const letters = await p.deadLetters();
  const poison = letters.filter((d) => d.key === poisonKey);
  const others = letters.filter((d) => d.key !== poisonKey);
  const problems: string[] = [];
  if (poison.length === 0) problems.push(`I6: the poison record ${poisonKey} is not on the dead-letter topic`);
  else if (poison.some((d) => (d.reason ?? '') === '')) problems.push(`I6: the poison record ${poisonKey} was dead-lettered without a reason`);
  if (others.length > 0) problems.push(`I6: ${others.length} other records dead-lettered: ${others.slice(0, 5).map((d) => `${d.key} (${d.errorKind}: ${d.reason})`).join('; ')}`);
  return problems.length === 0 ? null : problems.join('\n');
}

/** Runs `repetitions` of a scenario with seeds derived from `seed`, printing each, and sums them up. */
export async function runScenario(env: FaultEnv, def: ScenarioDef, seed: number, repetitions: number, log: (line: string) => void = console.log): Promise<ScenarioResult & { failures: string[] }> {
  let passed = 0;
  let duplicates = 0;
  let recoveryMs = 0;
  const failures: string[] = [];
  const notes: string[] = [];
  for (let r = 0; r < repetitions; r++) {
    const repSeed = (seed + r * 7919) >>> 0;
    log(`[faults] ${def.id} (${def.title}) repetition ${r + 1}/${repetitions}, seed ${repSeed}`);
    const result = await runRepetition(env, def, repSeed).catch((err: unknown) => ({ pass: false, why: `harness error: ${String(err)}`, duplicates: 0, recoveryMs: def.boundMs, notes: '' }));
    log(`[faults] ${def.id} repetition ${r + 1}: ${result.pass ? 'pass' : 'FAIL'}, duplicates ${result.duplicates}, recovered in ${(result.recoveryMs / 1000).toFixed(1)} s; ${result.notes}`);
    if (!result.pass) log(`[faults] ${def.id} repetition ${r + 1} failed: ${result.why}`);
    if (result.pass) passed += 1;
    else failures.push(`${def.id} seed ${repSeed}: ${result.why}`);
    duplicates += result.duplicates;
    recoveryMs = Math.max(recoveryMs, result.recoveryMs);
    if (result.notes !== '') notes.push(result.notes);
  }
  return { scenario: `${def.id} ${def.title}`, repetitions, passed, duplicates, recoveryMs, boundMs: def.boundMs, seed, notes: notes[0] ?? '', failures };
}

// ---------------------------------------------------------------------------------------------------------------
// Building blocks for injections

/** A fault that starts at a step and lasts `durationMs` in the background; `healed` waits for its end. */
export function timedFault(start: (p: Pipeline) => Promise<void>, end: (p: Pipeline) => Promise<void>, durationMs: number, describe: string): Injection {
  let running: Promise<void> | undefined;
  return {
    atStep: async (offset, p) => {
      if (offset !== 0 || running) return;
      running = (async () => {
        await start(p);
        await sleep(durationMs);
        await end(p);
      })();
    },
    healed: async () => {
      await running;
    },
    notes: () => describe,
  };
}

/** A proxy in front of the PostgreSQL server, used by the consumers for their target. */
export function targetProxy(): ScenarioDef['prepare'] {
  return async (env) => {
    const proxy = await startFaultProxy({ upstreamPort: Number(new URL(env.pgServerUrl).port || 5432), name: 'target database' });
    return { options: { consumerTargetUrl: (url: string) => viaPort(url, proxy.port) }, close: () => proxy.close(), proxy };
  };
}

/** A proxy in front of the PostgreSQL server, used by the poller for its source. */
export function sourceProxy(): ScenarioDef['prepare'] {
  return async (env) => {
    const proxy = await startFaultProxy({ upstreamPort: Number(new URL(env.pgServerUrl).port || 5432), name: 'source database' });
    return { options: { pollerSourceUrl: (url: string) => viaPort(url, proxy.port) }, close: () => proxy.close(), proxy };
  };
}

export function proxyFault(mode: FaultMode, durationMs: number, where: string): ScenarioDef['inject'] {
  return (_env, _rand, prepared) => {
    const proxy = prepared.proxy!;
    return timedFault(async () => void proxy.fault(mode), async () => proxy.heal(), durationMs, `${mode.kind} ${where} for ${durationMs / 1000} s`);
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The fast subset

const SESSION_MS = 6000;

export const brokerKill: ScenarioDef = {
  id: 'R3-kill', title: 'broker SIGKILL during the load, restart after 3 s', boundMs: 120_000,
  inject: (env) => timedFault(() => env.broker!.kill(), () => env.broker!.start(), 3000, 'broker killed for 3 s'),
};

export const targetDrop: ScenarioDef = {
  id: 'R7-drop-db', title: 'consumer ↔ target database dropped for 5 s', boundMs: 90_000,
  prepare: targetProxy(),
  inject: proxyFault({ kind: 'drop' }, 5000, 'consumer→target'),
};

export const pgTerminate: ScenarioDef = {
  id: 'R5-terminate', title: 'pg_terminate_backend of every service session, three times', boundMs: 90_000,
  inject: (_env, rand) => {
    const at = new Set([0, 1 + Math.floor(rand() * 3), 4 + Math.floor(rand() * 3)]);
    let ended = 0;
    return {
      atStep: async (offset, p) => {
        if (at.has(offset)) ended += await p.terminateServiceSessions('all');
      },
      healed: async () => undefined,
      notes: () => `${ended} sessions terminated at load offsets ${[...at].join(',')}`,
    };
  },
};

export const sigstopRebalance: ScenarioDef = {
  id: 'R4-sigstop', title: `SIGSTOP one of two consumers past its ${SESSION_MS / 1000} s session, SIGCONT later`, boundMs: 90_000,
  pipeline: { consumers: 2, sessionTimeoutMs: SESSION_MS },
  inject: (_env, rand) => {
    const victim = rand() < 0.5 ? 0 : 1;
    const frozenMs = SESSION_MS + 5000;
    return timedFault(async (p) => p.consumers[victim]!.signal('SIGSTOP'), async (p) => p.consumers[victim]!.signal('SIGCONT'), frozenMs,
      `consumer-${victim + 1} stopped for ${frozenMs / 1000} s`);
  },
};

export const FAST_SUBSET: readonly ScenarioDef[] = [brokerKill, targetDrop, pgTerminate, sigstopRebalance];
